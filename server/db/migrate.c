/*
 * migrate.c - applying the numbered SQL files of server/sql, which the
 * build embeds in the binary (sql_embed.c).  Synchronous libpq: this runs
 * in the CLI and in the master before any loop exists.
 */
#include "db.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sb_migration {
    int version;
    const char *name;
    const char *sql;
} sb_migration_t;

/* Generated from the files in server/sql, in version order. */
extern const sb_migration_t sb_migrations[];
extern const int sb_migrations_count;

/* An arbitrary constant: the advisory lock every migrator takes. */
#define MIGRATE_LOCK_KEY "7262691553"

int sb_db_schema_version(void)
{
    return sb_migrations_count ? sb_migrations[sb_migrations_count - 1].version : 0;
}

/* "relation already exists, skipping" and the like are not news. */
static void migrate_notice_ignore(void *arg, const char *message)
{
}

static PGconn *migrate_connect(const char *conninfo)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {conninfo, "switchboard", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
        msg[strcspn(msg, "\n")] = '\0';
        sb_log_ex(SB_LOG_ERR, NULL, NULL,
                  "Check SWITCHBOARD_DATABASE_URL and that PostgreSQL is running.",
                  "could not connect to database: %s", msg);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, migrate_notice_ignore, NULL);
    return pg;
}

/* Runs sql; logs and returns SB_EDB on failure. */
static int migrate_exec(PGconn *pg, const char *sql, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        sb_log(SB_LOG_ERR, NULL, "could not %s: %s", what, msg);
        rc = SB_EDB;
    }
    PQclear(r);
    return rc;
}

static int migrate_read_version(PGconn *pg, int *version)
{
    PGresult *r = PQexec(pg, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    int rc = 0;

    *version = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        PQclear(r);
        r = PQexec(pg, "SELECT coalesce(max(version), 0) FROM schema_migrations");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            *version = atoi(PQgetvalue(r, 0, 0));
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        sb_log(SB_LOG_ERR, NULL, "could not read schema version: %s", msg);
        rc = SB_EDB;
    }
    PQclear(r);
    return rc;
}

static int migrate_is_applied(PGconn *pg, int version, int *applied)
{
    char v[16];
    const char *params[1] = {v};
    snprintf(v, sizeof(v), "%d", version);
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    int rc = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sb_log(SB_LOG_ERR, NULL, "could not read schema_migrations: %s", PQresultErrorMessage(r));
        rc = SB_EDB;
    } else {
        *applied = PQntuples(r) > 0;
    }
    PQclear(r);
    return rc;
}

static int migrate_apply(PGconn *pg, const sb_migration_t *m)
{
    char v[16];
    const char *params[2] = {v, m->name};
    int rc;

    snprintf(v, sizeof(v), "%d", m->version);
    if ((rc = migrate_exec(pg, "BEGIN", "begin a migration")) != 0)
        return rc;
    char what[160];
    snprintf(what, sizeof(what), "apply migration \"%s\"", m->name);
    rc = migrate_exec(pg, m->sql, what);
    if (rc == 0) {
        PGresult *r =
            PQexecParams(pg, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                         NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            sb_log(SB_LOG_ERR, NULL, "could not record migration \"%s\": %s", m->name,
                   PQresultErrorMessage(r));
            rc = SB_EDB;
        }
        PQclear(r);
    }
    if (rc == 0)
        rc = migrate_exec(pg, "COMMIT", what);
    if (rc != 0)
        migrate_exec(pg, "ROLLBACK", "roll back a failed migration");
    return rc;
}

int sb_db_migrate(const char *conninfo, int (*after)(PGconn *pg), int *applied)
{
    PGconn *pg = migrate_connect(conninfo);
    int rc;

    *applied = 0;
    if (pg == NULL)
        return SB_EUNAVAILABLE;
    rc = migrate_exec(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                      "take the migration lock");
    if (rc == 0)
        rc = migrate_exec(pg,
                          "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          " version integer PRIMARY KEY,"
                          " name text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now())",
                          "create table schema_migrations");
    int current = 0;
    if (rc == 0)
        rc = migrate_read_version(pg, &current);
    if (rc == 0 && current > sb_db_schema_version()) {
        sb_log_ex(SB_LOG_ERR, NULL, NULL,
                  "Upgrade switchboard before running it against this database.",
                  "database schema version %d is newer than this server's %d", current,
                  sb_db_schema_version());
        rc = SB_EDB;
    }
    for (int i = 0; rc == 0 && i < sb_migrations_count; i++) {
        int done = 0;
        rc = migrate_is_applied(pg, sb_migrations[i].version, &done);
        if (rc != 0 || done)
            continue;
        rc = migrate_apply(pg, &sb_migrations[i]);
        if (rc == 0) {
            printf("applied migration %s\n", sb_migrations[i].name);
            (*applied)++;
        }
    }
    if (rc == 0 && after)
        rc = after(pg);
    migrate_exec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")",
                 "release the migration lock");
    PQfinish(pg);
    return rc;
}

int sb_db_schema_read(const char *conninfo, int *version)
{
    PGconn *pg = migrate_connect(conninfo);
    if (pg == NULL)
        return SB_EUNAVAILABLE;
    int rc = migrate_read_version(pg, version);
    PQfinish(pg);
    return rc;
}
