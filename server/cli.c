/*
 * cli.c - "switchboard tenant add", "agent add", "agent passwd" and
 * "admin add".  Each command is one transaction; a failure changes
 * nothing.  Messages go to stderr in the server's log style.
 */
#include "cli.h"
#include "auth.h"
#include "common.h"
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    const char *tenant;
    const char *role;
    const char *positional[2];
    int npositional;
} cli_args_t;

static int cli_parse(int argc, char **argv, cli_args_t *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char **slot = NULL;
        if (strcmp(argv[i], "--name") == 0)
            slot = &a->name;
        else if (strcmp(argv[i], "--tenant") == 0)
            slot = &a->tenant;
        else if (strcmp(argv[i], "--role") == 0)
            slot = &a->role;
        if (slot) {
            if (++i == argc) {
                fprintf(stderr, "switchboard: option \"%s\" needs a value\n", argv[i - 1]);
                return SB_EINVAL;
            }
            *slot = argv[i];
            continue;
        }
        if (argv[i][0] == '-' || a->npositional == 2) {
            fprintf(stderr, "switchboard: unrecognized argument \"%s\"\n", argv[i]);
            return SB_EINVAL;
        }
        a->positional[a->npositional++] = argv[i];
    }
    return 0;
}

/* Reads one line from stdin as the password; NULL (reported) if empty. */
static char *cli_read_password(void)
{
    static char buf[1100];

    if (isatty(STDIN_FILENO))
        fprintf(stderr, "password: ");
    if (fgets(buf, sizeof(buf), stdin) == NULL)
        buf[0] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (strlen(buf) < 8 || strlen(buf) > 1024) {
        sb_log(SB_LOG_ERR, NULL,
               "the password (read from standard input) must be 8 to 1024 characters");
        return NULL;
    }
    return buf;
}

static PGconn *cli_connect(const sb_config_t *cfg)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {cfg->database_url, "switchboard-cli", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
        msg[strcspn(msg, "\n")] = '\0';
        sb_log(SB_LOG_ERR, NULL, "could not connect to database: %s", msg);
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/*
 * Runs one statement; returns its result (caller clears) or NULL after
 * logging the error.  Unique violations get a message of their own.
 */
static PGresult *cli_exec(PGconn *pg, const char *sql, int n, const char *const *params,
                          const char *what)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (state && strcmp(state, "23505") == 0)
        sb_log(SB_LOG_ERR, NULL, "could not %s: it exists already", what);
    else if (state && strcmp(state, "23514") == 0)
        sb_log(SB_LOG_ERR, NULL, "could not %s: a value is out of range (%s)", what, msg);
    else
        sb_log(SB_LOG_ERR, NULL, "could not %s: %s", what, msg ? msg : PQerrorMessage(pg));
    PQclear(r);
    return NULL;
}

/* Runs sql and reports whether it succeeded; the result is discarded. */
static int cli_do(PGconn *pg, const char *sql, int n, const char *const *params, const char *what)
{
    PGresult *r = cli_exec(pg, sql, n, params, what);
    if (r == NULL)
        return SB_EDB;
    PQclear(r);
    return 0;
}

/* ======================== commands ======================== */

static int cli_tenant_add(PGconn *pg, const cli_args_t *a)
{
    const char *p[2] = {a->positional[0], a->name ? a->name : a->positional[0]};
    if (a->npositional != 1) {
        fprintf(stderr, "usage: switchboard tenant add SLUG --name NAME\n");
        return 2;
    }
    if (cli_do(pg, "INSERT INTO tenants (slug, name) VALUES ($1, $2)", 2, p, "add tenant") != 0)
        return 1;
    printf("added tenant %s\n", a->positional[0]);
    return 0;
}

/* Finds the agent by email: 1 found (id in out), 0 not, <0 error. */
static int cli_agent_find(PGconn *pg, const char *email, char *out, size_t len)
{
    const char *p[1] = {email};
    PGresult *r =
        cli_exec(pg, "SELECT id FROM agents WHERE lower(email) = lower($1)", 1, p, "look up agent");
    if (r == NULL)
        return SB_EDB;
    int found = PQntuples(r) == 1;
    if (found)
        snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return found;
}

static int cli_agent_create(PGconn *pg, const char *email, const char *name, int admin, char *id,
                            size_t len)
{
    char hash[SB_AUTH_PWHASH_LEN];
    char *password = cli_read_password();

    if (password == NULL)
        return SB_EINVAL;
    if (strchr(email, '@') == NULL) {
        sb_log(SB_LOG_ERR, NULL, "\"%s\" is not an email address", email);
        return SB_EINVAL;
    }
    if (sb_auth_password_hash(password, hash) != 0)
        return SB_ENOMEM;
    const char *p[4] = {email, name, hash, admin ? "true" : "false"};
    PGresult *r = cli_exec(pg,
                           "INSERT INTO agents (email, name, password_hash, is_platform_admin)"
                           " VALUES ($1, $2, $3, $4) RETURNING id",
                           4, p, "add agent");
    if (r == NULL)
        return SB_EDB;
    snprintf(id, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int cli_agent_add(PGconn *pg, const cli_args_t *a)
{
    static const char *const roles[] = {"admin", "supervisor", "agent", "viewer"};
    const char *role = a->role ? a->role : "agent";
    char id[24];
    int ok_role = 0;

    if (a->npositional != 1 || (a->role && !a->tenant)) {
        fprintf(stderr, "usage: switchboard agent add EMAIL --name NAME [--tenant SLUG --role ROLE]"
                        " < password\n");
        return 2;
    }
    for (size_t i = 0; i < SB_ARRAY_SIZE(roles); i++)
        ok_role |= strcmp(role, roles[i]) == 0;
    if (!ok_role) {
        sb_log(SB_LOG_ERR, NULL, "role must be admin, supervisor, agent or viewer, not \"%s\"",
               role);
        return 2;
    }
    const char *email = a->positional[0];
    int found = cli_agent_find(pg, email, id, sizeof(id));
    if (found < 0)
        return 1;
    if (!found) {
        if (cli_agent_create(pg, email, a->name ? a->name : email, 0, id, sizeof(id)) != 0)
            return 1;
        printf("added agent %s\n", email);
    }
    if (a->tenant == NULL)
        return 0;
    const char *p[3] = {a->tenant, id, role};
    PGresult *r = cli_exec(pg,
                           "INSERT INTO memberships (tenant_id, agent_id, role)"
                           " SELECT id, $2, $3 FROM tenants WHERE slug = $1"
                           " ON CONFLICT (tenant_id, agent_id) DO UPDATE SET role = EXCLUDED.role",
                           3, p, "add membership");
    if (r == NULL)
        return 1;
    int rows = atoi(PQcmdTuples(r));
    PQclear(r);
    if (rows == 0) {
        sb_log(SB_LOG_ERR, NULL, "tenant \"%s\" does not exist", a->tenant);
        return 1;
    }
    printf("%s is %s of tenant %s\n", email, role, a->tenant);
    return 0;
}

static int cli_agent_passwd(PGconn *pg, const cli_args_t *a)
{
    char hash[SB_AUTH_PWHASH_LEN];

    if (a->npositional != 1) {
        fprintf(stderr, "usage: switchboard agent passwd EMAIL < password\n");
        return 2;
    }
    char *password = cli_read_password();
    if (password == NULL || sb_auth_password_hash(password, hash) != 0)
        return 1;
    const char *p[2] = {a->positional[0], hash};
    PGresult *r =
        cli_exec(pg, "UPDATE agents SET password_hash = $2 WHERE lower(email) = lower($1)", 2, p,
                 "set password");
    if (r == NULL)
        return 1;
    int rows = atoi(PQcmdTuples(r));
    PQclear(r);
    if (rows == 0) {
        sb_log(SB_LOG_ERR, NULL, "agent \"%s\" does not exist", a->positional[0]);
        return 1;
    }
    /* A new password ends the sessions opened with the old one. */
    const char *q[1] = {a->positional[0]};
    cli_do(pg,
           "DELETE FROM sessions WHERE agent_id = (SELECT id FROM agents"
           " WHERE lower(email) = lower($1))",
           1, q, "end sessions");
    printf("password of %s changed\n", a->positional[0]);
    return 0;
}

static int cli_admin_add(PGconn *pg, const cli_args_t *a)
{
    char id[24];

    if (a->npositional != 1) {
        fprintf(stderr, "usage: switchboard admin add EMAIL [--name NAME] [< password]\n");
        return 2;
    }
    const char *email = a->positional[0];
    int found = cli_agent_find(pg, email, id, sizeof(id));
    if (found < 0)
        return 1;
    if (!found)
        return cli_agent_create(pg, email, a->name ? a->name : email, 1, id, sizeof(id)) == 0
                   ? (printf("added platform administrator %s\n", email), 0)
                   : 1;
    const char *p[1] = {id};
    if (cli_do(pg, "UPDATE agents SET is_platform_admin = true WHERE id = $1", 1, p,
               "make platform administrator") != 0)
        return 1;
    printf("%s is a platform administrator\n", email);
    return 0;
}

int sb_cli_run(const sb_config_t *cfg, const char *command, int argc, char **argv)
{
    cli_args_t a;
    int (*fn)(PGconn *, const cli_args_t *) = NULL;
    const char *verb = argc > 0 ? argv[0] : "";

    if (strcmp(command, "tenant") == 0 && strcmp(verb, "add") == 0)
        fn = cli_tenant_add;
    else if (strcmp(command, "agent") == 0 && strcmp(verb, "add") == 0)
        fn = cli_agent_add;
    else if (strcmp(command, "agent") == 0 && strcmp(verb, "passwd") == 0)
        fn = cli_agent_passwd;
    else if (strcmp(command, "admin") == 0 && strcmp(verb, "add") == 0)
        fn = cli_admin_add;
    if (fn == NULL) {
        fprintf(stderr, "switchboard: unknown command \"%s %s\"\nTry \"switchboard --help\".\n",
                command, verb);
        return 2;
    }
    if (cli_parse(argc - 1, argv + 1, &a) != 0)
        return 2;
    PGconn *pg = cli_connect(cfg);
    if (pg == NULL)
        return 1;
    int rc = 1;
    PGresult *r = PQexec(pg, "BEGIN");
    PQclear(r);
    rc = fn(pg, &a);
    r = PQexec(pg, rc == 0 ? "COMMIT" : "ROLLBACK");
    if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK) {
        sb_log(SB_LOG_ERR, NULL, "could not commit: %s", PQresultErrorMessage(r));
        rc = 1;
    }
    PQclear(r);
    PQfinish(pg);
    return rc;
}
