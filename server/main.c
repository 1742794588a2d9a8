/*
 * main.c - the switchboard command line: serve, migrate, --help,
 * --version.  Reads the configuration once and hands the validated struct
 * to the command; exit codes are 0 (done), 1 (failed) and 2 (usage or
 * configuration error).
 */
#include "auth.h"
#include "cli.h"
#include "rules/rules.h"
#include "common.h"
#include "config.h"
#include "db/db.h"
#include "log.h"
#include "process.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SB_VERSION
#define SB_VERSION "0.0.0"
#endif

static void main_usage(FILE *out)
{
    fprintf(
        out,
        "Switchboard %s: a customer-service server.\n"
        "\n"
        "Usage: switchboard [--config FILE] COMMAND\n"
        "\n"
        "Commands:\n"
        "  serve                         run the server (master and workers) in the foreground\n"
        "  migrate                       apply pending database migrations, then exit\n"
        "  tenant add SLUG --name NAME   add a tenant (client company)\n"
        "  agent add EMAIL --name NAME [--tenant SLUG --role ROLE]\n"
        "                                add an agent (password on stdin), or add an existing\n"
        "                                agent to another tenant; ROLE: admin, supervisor,\n"
        "                                agent (default) or viewer\n"
        "  agent passwd EMAIL            set an agent's password (from stdin)\n"
        "  admin add EMAIL [--name NAME] make an agent a platform administrator (creating\n"
        "                                it, password on stdin, if needed)\n"
        "  rules check FILE...           compile rule scripts in the sandbox; report errors\n"
        "                                and unknown actions with their lines\n"
        "  rules test FILE... FIXTURES   run the events in JSON fixtures (files or a\n"
        "                                directory) through the scripts (*.lua); print\n"
        "                                the actions and check any expectations\n"
        "  rules replay --tenant SLUG FILE --since DATE\n"
        "                                run a candidate script over a tenant's past events\n"
        "                                (read-only) and compare it with the active one\n"
        "\n"
        "Options:\n"
        "  -c, --config FILE  read configuration from FILE (Lua: key = value)\n"
        "  -h, --help         show this help, then exit\n"
        "  -V, --version      show the version, then exit\n"
        "\n"
        "Configuration keys (file key / environment variable, which wins):\n"
        "  database_url      SWITCHBOARD_DATABASE_URL      libpq conninfo or URI\n"
        "  listen            SWITCHBOARD_LISTEN            host:port (127.0.0.1:8080)\n"
        "  workers           SWITCHBOARD_WORKERS           worker processes (cores)\n"
        "  log_level         SWITCHBOARD_LOG_LEVEL         debug|info|notice|warning|error (info)\n"
        "  data_dir          SWITCHBOARD_DATA_DIR          data directory (var)\n"
        "  plugins_dir       SWITCHBOARD_PLUGINS_DIR       where plugins are loaded from\n"
        "  plugins           SWITCHBOARD_PLUGINS           plugins to load, comma-separated (all)\n"
        "  scripts_dir       SWITCHBOARD_SCRIPTS_DIR       reserved (default rules are built in)\n"
        "  max_body_size     SWITCHBOARD_MAX_BODY_SIZE     request body limit (10MiB)\n"
        "  header_timeout    SWITCHBOARD_HEADER_TIMEOUT    seconds to receive headers (10)\n"
        "  read_timeout      SWITCHBOARD_READ_TIMEOUT      seconds to receive a request (30)\n"
        "  idle_timeout      SWITCHBOARD_IDLE_TIMEOUT      keep-alive idle seconds (60)\n"
        "  shutdown_timeout  SWITCHBOARD_SHUTDOWN_TIMEOUT  seconds to finish requests on stop "
        "(10)\n"
        "  db_pool_size      SWITCHBOARD_DB_POOL_SIZE      connections per worker (4)\n"
        "  max_connections   SWITCHBOARD_MAX_CONNECTIONS   client connections per worker (20000)\n"
        "  debug_routes      SWITCHBOARD_DEBUG_ROUTES      enable /debug/* test routes (false)\n"
        "  public_url        SWITCHBOARD_PUBLIC_URL        how customers reach this server, for\n"
        "                    links in messages (http://<listen>)\n"
        "  survey_valid_for  SWITCHBOARD_SURVEY_VALID_FOR  seconds a survey link works (1209600)\n"
        "  webhook_allow_private   SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE\n"
        "                    let rules' webhooks reach loopback and private networks (false)\n"
        "  channels_allow_private  SWITCHBOARD_CHANNELS_ALLOW_PRIVATE\n"
        "                    let channel plugins' API calls reach them too (false)\n"
        "  rules_memory_limit      SWITCHBOARD_RULES_MEMORY_LIMIT\n"
        "                    memory of a tenant's rules (8MiB)\n"
        "  rules_instruction_limit SWITCHBOARD_RULES_INSTRUCTION_LIMIT\n"
        "                    Lua instructions per handler call (5000000)\n"
        "\n"
        "Signals to serve: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration.\n",
        SB_VERSION);
}

static int main_migrate(const sb_config_t *cfg)
{
    int applied = 0;
    int rc = sb_db_migrate(cfg->database_url, sb_rules_sync_defaults, &applied);

    if (rc != 0)
        return 1;
    printf("database is at schema version %d (%d migration%s applied)\n", sb_db_schema_version(),
           applied, applied == 1 ? "" : "s");
    return 0;
}

/* Refuses a database that is reachable but not at this server's schema. */
static int main_check_schema(const sb_config_t *cfg)
{
    int version = 0;
    int rc = sb_db_schema_read(cfg->database_url, &version);

    if (rc == SB_EUNAVAILABLE) {
        sb_log(SB_LOG_WARNING, NULL,
               "starting without the database; requests will get 503 until it is reachable");
        return 0;
    }
    if (rc != 0)
        return 1;
    if (version < sb_db_schema_version()) {
        sb_log_ex(SB_LOG_FATAL, NULL, NULL, "Run \"switchboard migrate\" first.",
                  "database is not migrated: schema version %d, this server needs %d", version,
                  sb_db_schema_version());
        return 1;
    }
    if (version > sb_db_schema_version()) {
        sb_log_ex(SB_LOG_FATAL, NULL, NULL,
                  "Upgrade switchboard before running it against this database.",
                  "database schema version %d is newer than this server's %d", version,
                  sb_db_schema_version());
        return 1;
    }
    return 0;
}

static int main_is_command(const char *s)
{
    static const char *const commands[] = {"serve", "migrate", "tenant", "agent", "admin", "rules"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(commands); i++)
        if (strcmp(s, commands[i]) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *config_file = NULL;
    const char *command = NULL;
    char **rest = sb_xcalloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    sb_config_t cfg;
    char err[1024];
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (command == NULL &&
            (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0)) {
            main_usage(stdout);
            rc = 0;
            goto done;
        }
        if (command == NULL && (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0)) {
            printf("switchboard %s\n", SB_VERSION);
            rc = 0;
            goto done;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (++i == argc) {
                fprintf(stderr, "switchboard: option \"%s\" needs a file name\n", a);
                goto done;
            }
            config_file = argv[i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            config_file = a + 9;
            continue;
        }
        if (command != NULL) {
            rest[nrest++] = argv[i]; /* the command's own words */
            continue;
        }
        if (a[0] == '-' || !main_is_command(a)) {
            fprintf(stderr, "switchboard: %s \"%s\"\nTry \"switchboard --help\".\n",
                    a[0] == '-' ? "unrecognized argument" : "unknown command", a);
            goto done;
        }
        command = a;
    }
    if (command == NULL) {
        main_usage(stderr);
        goto done;
    }
    if ((strcmp(command, "serve") == 0 || strcmp(command, "migrate") == 0) && nrest > 0) {
        fprintf(stderr, "switchboard: unrecognized argument \"%s\"\nTry \"switchboard --help\".\n",
                rest[0]);
        goto done;
    }

    if (sb_config_load(&cfg, config_file, err, sizeof(err)) != 0) {
        sb_log(SB_LOG_FATAL, NULL, "%s", err);
        goto done;
    }
    sb_log_set_level(cfg.log_level);
    if (sb_auth_init() != 0) {
        sb_log(SB_LOG_FATAL, NULL, "could not initialise libsodium");
        rc = 1;
    } else if (strcmp(command, "migrate") == 0) {
        rc = main_migrate(&cfg);
    } else if (strcmp(command, "serve") == 0) {
        rc = main_check_schema(&cfg) != 0 ? 1 : sb_master_run(&cfg);
    } else if (strcmp(command, "rules") == 0) {
        rc = sb_rules_cli(&cfg, nrest, rest);
    } else {
        rc = sb_cli_run(&cfg, command, nrest, rest);
    }
    sb_config_free(&cfg);
done:
    free(rest);
    return rc;
}
