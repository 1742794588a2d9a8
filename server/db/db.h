/*
 * db.h - PostgreSQL for the server: a per-worker pool of non-blocking
 * libpq connections driven by uv_poll, in pipeline mode, with prepared
 * statements cached per connection and reconnection with backoff; a
 * dedicated LISTEN connection; and the schema migrations.
 * Queries take parameters only as separate values: SQL is never built
 * from user data.  Pool functions run on the owning loop thread;
 * migration functions are synchronous and meant for the master and CLI.
 */
#ifndef SB_DB_H
#define SB_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_db sb_db_t;
typedef struct sb_db_conn sb_db_conn_t;

/* One statement: SQL text with $1..$n and n text parameters (NULL = SQL NULL). */
typedef struct sb_db_stmt {
    const char *sql;
    int nparams;
    const char *const *params;
} sb_db_stmt_t;

typedef struct sb_db_options {
    const char *conninfo;        /* libpq conninfo or URI (copied) */
    int size;                    /* connections in the pool */
    uint64_t acquire_timeout_ms; /* how long a request may wait for one */
    int max_waiting;             /* requests allowed to wait at once */
    const char *role;            /* SET ROLE to this after connecting, or NULL (copied) */
} sb_db_options_t;

typedef struct sb_db_stats {
    int busy, idle, connecting, down, waiting;
} sb_db_stats_t;

/*
 * status is 0 with conn, or SB_EUNAVAILABLE (database unreachable),
 * SB_ETIMEDOUT (no connection freed in time), SB_ECLOSED (pool closing).
 */
typedef void (*sb_db_acquire_cb)(sb_db_conn_t *conn, int status, void *data);

/*
 * status is 0 when every statement succeeded; SB_EDB when one failed (its
 * result carries the error; the statements after it are aborted, and
 * nothing of the batch is committed unless it committed explicitly before);
 * SB_EUNAVAILABLE when the connection was lost or the server is shutting
 * down; SB_ECLOSED when the pool closed.  results has n entries (any may be
 * NULL after a failure) and is borrowed: valid until the callback returns.
 */
typedef void (*sb_db_exec_cb)(int status, PGresult *const *results, int n, void *data);

/*
 * Creates the pool and starts connecting.  Copies opts.  The caller owns
 * the pool and closes it with sb_db_close.  Returns 0 or SB_EINVAL.
 */
int sb_db_new(uv_loop_t *loop, const sb_db_options_t *opts, sb_db_t **out);

/*
 * Closes every connection; callbacks still pending run with SB_ECLOSED.
 * close_cb runs once all handles have closed; then the pool is freed.
 */
void sb_db_close(sb_db_t *db, void (*close_cb)(void *data), void *data);

/*
 * Reserves a connection (for a transaction that spans several round
 * trips).  Returns 0 and calls cb exactly once, possibly before returning;
 * or returns SB_EUNAVAILABLE or SB_EBUSY (too many waiting) and never
 * calls cb.  The holder must sb_db_release the connection.
 */
int sb_db_acquire(sb_db_t *db, sb_db_acquire_cb cb, void *data);

/* Returns a reserved connection; an open transaction is rolled back. */
void sb_db_release(sb_db_conn_t *conn);

/*
 * Sends n statements in one pipeline (a single implicit transaction unless
 * they contain BEGIN/COMMIT) on a reserved connection.  Parameters are
 * copied before this returns.  Returns 0 and calls cb exactly once, after
 * this returns; or returns SB_EUNAVAILABLE or SB_EBUSY and never calls cb.
 */
int sb_db_exec(sb_db_conn_t *conn, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb, void *data);

/*
 * Acquires a connection, runs the statements, releases it.  Copies the
 * statements.  Returns 0 and calls cb exactly once, after this returns; or
 * returns SB_EUNAVAILABLE or SB_EBUSY and never calls cb.
 */
int sb_db_query(sb_db_t *db, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb, void *data);

/* True while at least one connection is up. */
int sb_db_available(const sb_db_t *db);

void sb_db_stats(const sb_db_t *db, sb_db_stats_t *out);

/* True when an error result means "the database went away", not bad SQL. */
int sb_db_result_is_unavailable(const PGresult *res);

/* ======================== LISTEN ======================== */

typedef void (*sb_db_notify_cb)(const char *channel, const char *payload, void *data);
/*
 * up is 1 once the LISTENs are in place (after every reconnect: events
 * sent while it was down are lost, so the caller resynchronises) and 0
 * when the connection is lost.
 */
typedef void (*sb_db_listen_state_cb)(int up, void *data);

/*
 * Opens the pool's dedicated LISTEN connection for the given channels
 * (copied), reconnecting with backoff.  One per pool.  Returns 0, or
 * SB_EBUSY when already started.  Callbacks run on the loop thread.
 */
int sb_db_listen_start(sb_db_t *db, const char *const *channels, int n, sb_db_notify_cb on_notify,
                       sb_db_listen_state_cb on_state, void *data);

/* ======================== migrations ======================== */

/* The schema version this server needs (the highest migration it has). */
int sb_db_schema_version(void);

/*
 * Applies pending migrations, each in its own transaction, recorded in
 * schema_migrations, under an advisory lock so concurrent runs are safe;
 * then, still under the lock, calls after (when not NULL) for data that
 * follows the schema (built-in defaults).  Prints one line per migration
 * applied to stdout.  Synchronous.  Returns 0, SB_EUNAVAILABLE, SB_EDB or
 * after's error; the reason is logged here (or by after).
 */
int sb_db_migrate(const char *conninfo, int (*after)(PGconn *pg), int *applied);

/*
 * Reads the database's schema version into *version (0 when
 * unmigrated).  Synchronous.  Returns 0, SB_EUNAVAILABLE or SB_EDB.
 */
int sb_db_schema_read(const char *conninfo, int *version);

#endif
