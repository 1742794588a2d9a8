/*
 * pool.c - the per-worker connection pool.  Each connection is a small
 * state machine (down -> connecting -> ready <-> busy) driven by uv_poll on
 * libpq's socket.  Ready connections stay in pipeline mode: a batch of
 * statements is sent with one Sync and its results are collected as they
 * arrive.  Not for migrations (migrate.c) and not for SQL of the domain.
 */
#include "db.h"
#include "common.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define DB_PREPARED_MAX 256
#define DB_BACKOFF_MIN_MS 100
#define DB_BACKOFF_MAX_MS 5000

typedef enum {
    CONN_DOWN, /* waiting for the reconnect timer */
    CONN_CONNECTING,
    CONN_SETUP, /* SET ROLE in flight */
    CONN_READY,
    CONN_BUSY, /* a batch is in flight */
    CONN_CLOSED,
} conn_state_t;

typedef enum { CMD_PREPARE, CMD_QUERY, CMD_RESET } cmd_kind_t;

/*
 * Prepared statements are dropped and made again this often: a plan made
 * when a table was small is otherwise kept until something invalidates it,
 * and a parameterless statement never gets a custom plan.
 */
#define DB_REPREPARE_MS 30000

typedef struct {
    cmd_kind_t kind;
    int stmt;    /* index into the batch */
    int prep_id; /* PREPARE: the cache entry it fills */
} cmd_t;

typedef struct {
    char *sql;
    int id; /* the statement is named sb<id> */
} prepared_t;

typedef struct db_waiter db_waiter_t;

struct sb_db_conn {
    sb_db_t *db;
    PGconn *pg;
    uv_poll_t *poll;
    int fd;
    int poll_events;
    uv_timer_t timer;
    conn_state_t state;
    int reserved;
    int failures;
    int is_listen;
    int listen_up;
    int rolling_back;

    /* The batch in flight. */
    sb_db_exec_cb cb;
    void *cb_data;
    cmd_t *cmds;
    int ncmds, cur, got;
    PGresult **results;
    int nresults;
    int failed;

    /* Prepared statements of this session. */
    prepared_t *prepared;
    int nprepared;
    int next_prep_id;
    uint64_t prepared_since; /* ms: when the cache was last emptied */
};

struct db_waiter {
    db_waiter_t *next;
    sb_db_t *db;
    sb_db_acquire_cb cb;
    void *data;
    uv_timer_t timer;
};

struct sb_db {
    uv_loop_t *loop;
    char *conninfo;
    char *role;
    sb_db_options_t opts;
    sb_db_conn_t *conns;
    int nconns;
    db_waiter_t *waiters, *waiters_tail;
    int nwaiting;
    int closing;
    int open_handles;
    void (*close_cb)(void *);
    void *close_data;
    int down_logged; /* an outage is logged once, and its end */

    sb_db_conn_t *listen;
    char **channels;
    int nchannels;
    sb_db_notify_cb on_notify;
    sb_db_listen_state_cb on_state;
    void *listen_data;
};

static void conn_connect(sb_db_conn_t *c);
static void conn_broken(sb_db_conn_t *c, const char *why);
static void conn_poll_cb(uv_poll_t *p, int status, int events);
static void db_serve_waiters(sb_db_t *db);
static void db_fail_waiters(sb_db_t *db, int status);
static void db_handle_release(sb_db_t *db);

/* ======================== helpers ======================== */

int sb_db_result_is_unavailable(const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (st == NULL)
        return res == NULL;
    /* 08: connection exception; 57P: operator intervention (shutdown,
     * crash recovery); 53: insufficient resources (too many connections). */
    return strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0 || strncmp(st, "53", 2) == 0;
}

static int db_up_count(const sb_db_t *db)
{
    int n = 0;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == CONN_READY || db->conns[i].state == CONN_BUSY)
            n++;
    return n;
}

int sb_db_available(const sb_db_t *db)
{
    return db_up_count(db) > 0;
}

void sb_db_stats(const sb_db_t *db, sb_db_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < db->nconns; i++) {
        const sb_db_conn_t *c = &db->conns[i];
        switch (c->state) {
        case CONN_READY:
        case CONN_BUSY:
            if (c->reserved)
                out->busy++;
            else
                out->idle++;
            break;
        case CONN_CONNECTING:
            out->connecting++;
            break;
        default:
            out->down++;
            break;
        }
    }
    out->waiting = db->nwaiting;
}

/* ======================== polling ======================== */

static void poll_closed(uv_handle_t *h)
{
    sb_db_t *db = h->data;
    free(h);
    db_handle_release(db);
}

static void conn_poll_stop(sb_db_conn_t *c)
{
    if (c->poll == NULL)
        return;
    uv_poll_stop(c->poll);
    c->poll->data = c->db;
    uv_close((uv_handle_t *)c->poll, poll_closed);
    c->poll = NULL;
    c->fd = -1;
    c->poll_events = 0;
}

/* Watches libpq's current socket for events, following it if it changed. */
static int conn_poll(sb_db_conn_t *c, int events)
{
    int fd = PQsocket(c->pg);

    if (fd < 0)
        return SB_EIO;
    if (c->poll && c->fd != fd)
        conn_poll_stop(c);
    if (c->poll == NULL) {
        c->poll = sb_xmalloc(sizeof(uv_poll_t));
        if (uv_poll_init(c->db->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return SB_EIO;
        }
        c->db->open_handles++;
        c->poll->data = c;
        c->fd = fd;
        c->poll_events = 0;
    }
    if (c->poll_events != events) {
        uv_poll_start(c->poll, events, conn_poll_cb);
        c->poll_events = events;
    }
    return 0;
}

/* ======================== connecting ======================== */

static void conn_timer_cb(uv_timer_t *t)
{
    conn_connect(t->data);
}

static void conn_schedule_reconnect(sb_db_conn_t *c)
{
    uint64_t delay = DB_BACKOFF_MIN_MS;
    for (int i = 1; i < c->failures && delay < DB_BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > DB_BACKOFF_MAX_MS)
        delay = DB_BACKOFF_MAX_MS;
    /* Jitter, so that workers do not reconnect in lockstep. */
    delay += (uint64_t)(rand() % 100);
    c->state = CONN_DOWN;
    uv_timer_start(&c->timer, conn_timer_cb, delay, 0);
}

static void conn_listen_send(sb_db_conn_t *c)
{
    sb_db_t *db = c->db;
    sb_buf_t sql;

    sb_buf_init(&sql);
    for (int i = 0; i < db->nchannels; i++) {
        char *id = PQescapeIdentifier(c->pg, db->channels[i], strlen(db->channels[i]));
        if (id == NULL)
            continue;
        sb_buf_printf(&sql, "LISTEN %s;", id);
        PQfreemem(id);
    }
    int ok = sql.len == 0 || PQsendQuery(c->pg, sql.data);
    sb_buf_free(&sql);
    if (!ok) {
        conn_broken(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = CONN_BUSY;
    if (PQflush(c->pg) == 1)
        conn_poll(c, UV_READABLE | UV_WRITABLE);
    else
        conn_poll(c, UV_READABLE);
}

static void conn_connected(sb_db_conn_t *c)
{
    sb_db_t *db = c->db;

    PQsetnonblocking(c->pg, 1);
    if (c->state == CONN_SETUP)
        goto enter_pipeline;
    if (db->down_logged)
        sb_log(SB_LOG_NOTICE, NULL, "database connection restored");
    db->down_logged = 0;
    c->failures = 0;
    if (c->is_listen) {
        conn_listen_send(c);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        /* Request transactions run as a role that owns nothing, so that
         * row-level security holds even for a superuser's connection.  JIT
         * compilation costs tens of milliseconds to save microseconds on
         * the short statements a request runs: off. */
        char *id = db->role ? PQescapeIdentifier(c->pg, db->role, strlen(db->role)) : NULL;
        char *sql = sb_xasprintf("SET jit = off%s%s", id ? "; SET ROLE " : "", id ? id : "");
        int ok = (id || !db->role) && PQsendQuery(c->pg, sql);
        PQfreemem(id);
        free(sql);
        if (!ok) {
            conn_broken(c, PQerrorMessage(c->pg));
            return;
        }
        c->state = CONN_SETUP;
        conn_poll(c, PQflush(c->pg) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
        return;
    }
enter_pipeline:
    if (!PQenterPipelineMode(c->pg)) {
        conn_broken(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = CONN_READY;
    conn_poll(c, UV_READABLE);
    db_serve_waiters(db);
}

/* Advances libpq's connection state machine one step. */
static void conn_connect_step(sb_db_conn_t *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (conn_poll(c, UV_READABLE) != 0)
            conn_broken(c, "no socket");
        return;
    case PGRES_POLLING_WRITING:
        if (conn_poll(c, UV_WRITABLE) != 0)
            conn_broken(c, "no socket");
        return;
    case PGRES_POLLING_OK:
        conn_connected(c);
        return;
    default:
        conn_broken(c, PQerrorMessage(c->pg));
        return;
    }
}

static void conn_connect(sb_db_conn_t *c)
{
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {c->db->conninfo, "switchboard", NULL};

    if (c->db->closing)
        return;
    c->state = CONN_CONNECTING;
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_broken(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    conn_connect_step(c);
}

/* ======================== failure ======================== */

static void conn_clear_batch(sb_db_conn_t *c)
{
    for (int i = 0; i < c->nresults; i++)
        PQclear(c->results[i]);
    free(c->results);
    free(c->cmds);
    c->results = NULL;
    c->cmds = NULL;
    c->nresults = c->ncmds = c->cur = c->got = c->failed = 0;
    c->cb = NULL;
    c->cb_data = NULL;
}

static void conn_forget_prepared(sb_db_conn_t *c)
{
    for (int i = 0; i < c->nprepared; i++)
        free(c->prepared[i].sql);
    c->nprepared = 0;
}

/*
 * The connection is gone (or never came): fail its batch, close it and
 * try again later.  A reserved connection stays down until released, so a
 * holder never continues a transaction on a fresh session.
 */
static void conn_broken(sb_db_conn_t *c, const char *why)
{
    sb_db_t *db = c->db;
    sb_db_exec_cb cb = c->cb;
    void *cb_data = c->cb_data;
    int n = c->nresults;
    int was_up = c->state == CONN_READY || c->state == CONN_BUSY;

    if (!db->closing && !db->down_logged) {
        db->down_logged = 1;
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", why ? why : "");
        msg[strcspn(msg, "\n")] = '\0';
        sb_log(SB_LOG_WARNING, NULL, "%s database: %s",
               was_up ? "lost connection to" : "could not connect to", msg);
    }
    c->failures++;
    conn_poll_stop(c);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    conn_forget_prepared(c);
    if (c->rolling_back) {
        c->rolling_back = 0;
        c->reserved = 0;
    }
    c->state = CONN_DOWN;
    if (c->is_listen && c->listen_up) {
        c->listen_up = 0;
        if (db->on_state)
            db->on_state(0, db->listen_data);
    }

    /* Leave the state consistent before calling out. */
    PGresult **res = c->results;
    c->results = NULL;
    c->nresults = 0;
    conn_clear_batch(c);
    if (!c->reserved && !db->closing)
        conn_schedule_reconnect(c);
    if (db_up_count(db) == 0)
        db_fail_waiters(db, SB_EUNAVAILABLE);
    if (cb)
        cb(db->closing ? SB_ECLOSED : SB_EUNAVAILABLE, res, n, cb_data);
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    free(res);
}

/* ======================== batches ======================== */

/* Returns the cache slot of sql, or -1. */
static int conn_prepared_find(const sb_db_conn_t *c, const char *sql)
{
    for (int i = 0; i < c->nprepared; i++)
        if (strcmp(c->prepared[i].sql, sql) == 0)
            return i;
    return -1;
}

/* Forgets a statement whose PREPARE failed. */
static void conn_prepared_drop(sb_db_conn_t *c, int id)
{
    for (int i = 0; i < c->nprepared; i++) {
        if (c->prepared[i].id != id)
            continue;
        free(c->prepared[i].sql);
        c->prepared[i] = c->prepared[--c->nprepared];
        return;
    }
}

/*
 * Sends the batch's commands; 0 or SB_EUNAVAILABLE.  A statement not yet
 * prepared is prepared in the same pipeline and cached at once, so a
 * repeat later in the batch reuses it; a failed PREPARE is dropped again.
 */
static int conn_send_batch(sb_db_conn_t *c, const sb_db_stmt_t *stmts, int n)
{
    char name[32];
    int k = 0;

    c->cmds = sb_xcalloc((size_t)n * 2 + 1, sizeof(cmd_t));
    uint64_t now = uv_now(c->db->loop);
    if (c->nprepared > 0 && now - c->prepared_since > DB_REPREPARE_MS) {
        if (!PQsendQueryParams(c->pg, "DEALLOCATE ALL", 0, NULL, NULL, NULL, NULL, 0))
            return SB_EUNAVAILABLE;
        c->cmds[k++] = (cmd_t){CMD_RESET, -1, -1};
        conn_forget_prepared(c);
    }
    if (c->nprepared == 0)
        c->prepared_since = now;
    if (c->prepared == NULL)
        c->prepared = sb_xcalloc(DB_PREPARED_MAX, sizeof(prepared_t));
    for (int i = 0; i < n; i++) {
        const sb_db_stmt_t *s = &stmts[i];
        int slot = conn_prepared_find(c, s->sql);
        int ok;

        if (slot < 0 && c->nprepared < DB_PREPARED_MAX) {
            slot = c->nprepared++;
            c->prepared[slot].sql = sb_xstrdup(s->sql);
            c->prepared[slot].id = c->next_prep_id++;
            snprintf(name, sizeof(name), "sb%d", c->prepared[slot].id);
            if (!PQsendPrepare(c->pg, name, s->sql, s->nparams, NULL))
                return SB_EUNAVAILABLE;
            c->cmds[k++] = (cmd_t){CMD_PREPARE, i, c->prepared[slot].id};
        }
        if (slot < 0) {
            ok = PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->params, NULL, NULL, 0);
        } else {
            snprintf(name, sizeof(name), "sb%d", c->prepared[slot].id);
            ok = PQsendQueryPrepared(c->pg, name, s->nparams, s->params, NULL, NULL, 0);
        }
        if (!ok)
            return SB_EUNAVAILABLE;
        c->cmds[k++] = (cmd_t){CMD_QUERY, i, -1};
    }
    if (!PQpipelineSync(c->pg))
        return SB_EUNAVAILABLE;
    c->ncmds = k;
    return 0;
}

int sb_db_exec(sb_db_conn_t *c, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb, void *data)
{
    sb_assert(c->reserved && n > 0);
    if (c->state == CONN_BUSY)
        return SB_EBUSY;
    if (c->state != CONN_READY)
        return SB_EUNAVAILABLE;

    c->results = sb_xcalloc((size_t)n, sizeof(PGresult *));
    c->nresults = n;
    if (conn_send_batch(c, stmts, n) != 0) {
        /* The callback is not ours to call: drop it before failing. */
        conn_clear_batch(c);
        conn_broken(c, PQerrorMessage(c->pg));
        return SB_EUNAVAILABLE;
    }
    c->cb = cb;
    c->cb_data = data;
    c->state = CONN_BUSY;
    int f = PQflush(c->pg);
    if (f < 0) {
        c->cb = NULL;
        conn_clear_batch(c);
        conn_broken(c, PQerrorMessage(c->pg));
        return SB_EUNAVAILABLE;
    }
    conn_poll(c, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return 0;
}

static void conn_batch_done(sb_db_conn_t *c)
{
    sb_db_exec_cb cb = c->cb;
    void *data = c->cb_data;
    PGresult **res = c->results;
    int n = c->nresults;
    int status = 0;

    if (c->failed) {
        status = SB_EDB;
        for (int i = 0; i < n; i++)
            if (res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR &&
                sb_db_result_is_unavailable(res[i]))
                status = SB_EUNAVAILABLE;
    }
    c->results = NULL;
    c->nresults = 0;
    conn_clear_batch(c);
    c->state = CONN_READY;
    if (cb)
        cb(status, res, n, data);
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    free(res);
    if (!c->reserved && c->state == CONN_READY)
        db_serve_waiters(c->db);
}

/* Takes every result that has arrived; finishes the batch at its Sync. */
static void conn_collect(sb_db_conn_t *c)
{
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            if (!c->got)
                return;
            c->cur++;
            c->got = 0;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (c->rolling_back) {
                c->rolling_back = 0;
                conn_clear_batch(c);
                c->state = CONN_READY;
                c->reserved = 0;
                db_serve_waiters(c->db);
                return;
            }
            conn_batch_done(c);
            return;
        }
        if (c->cur >= c->ncmds) {
            PQclear(r);
            continue;
        }
        cmd_t *cmd = &c->cmds[c->cur];
        int err = st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED ||
                  st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR;
        c->got = 1;
        if (err)
            c->failed = 1;
        if (cmd->kind == CMD_PREPARE && err)
            conn_prepared_drop(c, cmd->prep_id);
        if (cmd->kind == CMD_RESET) {
            PQclear(r);
        } else if (cmd->kind == CMD_PREPARE && !err) {
            PQclear(r);
        } else if (c->results && c->results[cmd->stmt] == NULL) {
            c->results[cmd->stmt] = r;
        } else {
            PQclear(r);
        }
    }
}

/* ======================== events ======================== */

static void conn_listen_drain(sb_db_conn_t *c)
{
    sb_db_t *db = c->db;
    PGnotify *n;

    while (c->state == CONN_BUSY && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            c->state = CONN_READY;
            c->listen_up = 1;
            if (db->on_state)
                db->on_state(1, db->listen_data);
            break;
        }
        if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
            sb_log(SB_LOG_ERR, NULL, "could not listen for notifications: %s",
                   PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    while ((n = PQnotifies(c->pg)) != NULL) {
        if (db->on_notify)
            db->on_notify(n->relname, n->extra, db->listen_data);
        PQfreemem(n);
    }
}

/* Reads the answer to SET ROLE; the connection is ready after it. */
static void conn_setup_collect(sb_db_conn_t *c)
{
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r == NULL) {
            conn_connected(c);
            return;
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char msg[256];
            snprintf(msg, sizeof(msg), "could not switch to role \"%s\": %s", c->db->role,
                     PQresultErrorMessage(r));
            PQclear(r);
            conn_broken(c, msg);
            return;
        }
        PQclear(r);
    }
}

static void conn_poll_cb(uv_poll_t *p, int status, int events)
{
    sb_db_conn_t *c = p->data;

    if (status < 0) {
        conn_broken(c, uv_strerror(status));
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(c->pg);
        if (f < 0) {
            conn_broken(c, PQerrorMessage(c->pg));
            return;
        }
        if (f == 0)
            conn_poll(c, UV_READABLE);
    }
    if (!(events & UV_READABLE))
        return;
    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_broken(c, PQerrorMessage(c->pg));
        return;
    }
    if (c->is_listen) {
        conn_listen_drain(c);
        return;
    }
    if (c->state == CONN_SETUP) {
        conn_setup_collect(c);
        return;
    }
    if (c->state == CONN_BUSY)
        conn_collect(c);
}

/* ======================== reservation ======================== */

static sb_db_conn_t *db_idle_conn(sb_db_t *db)
{
    for (int i = 0; i < db->nconns; i++) {
        sb_db_conn_t *c = &db->conns[i];
        if (c->state == CONN_READY && !c->reserved)
            return c;
    }
    return NULL;
}

/* True while some connection is up or still on its first attempt. */
static int db_hopeful(const sb_db_t *db)
{
    for (int i = 0; i < db->nconns; i++) {
        const sb_db_conn_t *c = &db->conns[i];
        if (c->state == CONN_READY || c->state == CONN_BUSY ||
            (c->state == CONN_CONNECTING && c->failures == 0))
            return 1;
    }
    return 0;
}

static void waiter_closed(uv_handle_t *h)
{
    db_waiter_t *w = h->data;
    sb_db_t *db = w->db;
    free(w);
    db_handle_release(db);
}

static void waiter_unlink(sb_db_t *db, db_waiter_t *w)
{
    db_waiter_t **pp = &db->waiters, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = w->next;
    if (db->waiters_tail == w)
        db->waiters_tail = prev;
    db->nwaiting--;
    uv_timer_stop(&w->timer);
    w->timer.data = w;
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_timeout_cb(uv_timer_t *t)
{
    db_waiter_t *w = t->data;
    sb_db_acquire_cb cb = w->cb;
    void *data = w->data;

    waiter_unlink(w->db, w);
    cb(NULL, SB_ETIMEDOUT, data);
}

static void db_serve_waiters(sb_db_t *db)
{
    sb_db_conn_t *c;

    while (db->waiters && (c = db_idle_conn(db)) != NULL) {
        db_waiter_t *w = db->waiters;
        sb_db_acquire_cb cb = w->cb;
        void *data = w->data;
        waiter_unlink(db, w);
        c->reserved = 1;
        cb(c, 0, data);
    }
}

static void db_fail_waiters(sb_db_t *db, int status)
{
    while (db->waiters) {
        db_waiter_t *w = db->waiters;
        sb_db_acquire_cb cb = w->cb;
        void *data = w->data;
        waiter_unlink(db, w);
        cb(NULL, status, data);
    }
}

int sb_db_acquire(sb_db_t *db, sb_db_acquire_cb cb, void *data)
{
    if (db->closing)
        return SB_EUNAVAILABLE;
    sb_db_conn_t *c = db_idle_conn(db);
    if (c != NULL) {
        c->reserved = 1;
        cb(c, 0, data);
        return 0;
    }
    if (!db_hopeful(db))
        return SB_EUNAVAILABLE;
    if (db->nwaiting >= db->opts.max_waiting)
        return SB_EBUSY;

    db_waiter_t *w = sb_xcalloc(1, sizeof(*w));
    w->db = db;
    w->cb = cb;
    w->data = data;
    uv_timer_init(db->loop, &w->timer);
    db->open_handles++;
    w->timer.data = w;
    uv_timer_start(&w->timer, waiter_timeout_cb, db->opts.acquire_timeout_ms, 0);
    if (db->waiters_tail)
        db->waiters_tail->next = w;
    else
        db->waiters = w;
    db->waiters_tail = w;
    db->nwaiting++;
    return 0;
}

void sb_db_release(sb_db_conn_t *c)
{
    sb_db_t *db = c->db;

    sb_assert(c->reserved);
    if (c->state == CONN_READY && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        /* A holder left a transaction open: roll it back before reuse. */
        static const sb_db_stmt_t rollback = {"ROLLBACK", 0, NULL};
        if (sb_db_exec(c, &rollback, 1, NULL, NULL) == 0) {
            c->rolling_back = 1;
            return;
        }
    }
    c->reserved = 0;
    if (c->state == CONN_DOWN && !db->closing) {
        conn_schedule_reconnect(c);
        return;
    }
    db_serve_waiters(db);
}

/* ======================== one-shot queries ======================== */

typedef struct {
    sb_db_exec_cb cb;
    void *data;
    int n;
    sb_db_stmt_t *stmts; /* one block with the copied text */
} db_query_t;

static void query_free(db_query_t *q)
{
    free(q->stmts);
    free(q);
}

static void query_exec_cb(int status, PGresult *const *res, int n, void *data)
{
    db_query_t *q = data;
    /* The connection is released by its acquire callback's owner: here. */
    q->cb(status, res, n, q->data);
    query_free(q);
}

static void query_acquired(sb_db_conn_t *c, int status, void *data)
{
    db_query_t *q = data;

    if (status != 0) {
        q->cb(status, NULL, 0, q->data);
        query_free(q);
        return;
    }
    int rc = sb_db_exec(c, q->stmts, q->n, query_exec_cb, q);
    /* Release now: the batch keeps the connection busy until it is done,
     * and a released busy connection is handed out only once it is ready. */
    c->reserved = 0;
    if (rc != 0) {
        if (c->state == CONN_DOWN && !c->db->closing)
            conn_schedule_reconnect(c);
        q->cb(rc, NULL, 0, q->data);
        query_free(q);
    }
}

/* Copies the statements into one block: stmts, parameter pointers, text. */
static db_query_t *query_copy(const sb_db_stmt_t *stmts, int n)
{
    db_query_t *q = sb_xcalloc(1, sizeof(*q));
    size_t nparams = 0, text = 0;

    for (int i = 0; i < n; i++) {
        text += strlen(stmts[i].sql) + 1;
        for (int j = 0; j < stmts[i].nparams; j++)
            text += stmts[i].params[j] ? strlen(stmts[i].params[j]) + 1 : 0;
        nparams += (size_t)stmts[i].nparams;
    }
    size_t head = (size_t)n * sizeof(sb_db_stmt_t) + nparams * sizeof(char *);
    char *block = sb_xmalloc(head + text);
    sb_db_stmt_t *out = (sb_db_stmt_t *)block;
    const char **pp = (const char **)(out + n);
    char *t = block + head;

    for (int i = 0; i < n; i++) {
        size_t len = strlen(stmts[i].sql) + 1;
        out[i].sql = memcpy(t, stmts[i].sql, len);
        t += len;
        out[i].nparams = stmts[i].nparams;
        out[i].params = pp;
        for (int j = 0; j < stmts[i].nparams; j++) {
            const char *v = stmts[i].params[j];
            *pp++ = v ? memcpy(t, v, strlen(v) + 1) : NULL;
            t += v ? strlen(v) + 1 : 0;
        }
    }
    q->n = n;
    q->stmts = out;
    return q;
}

int sb_db_query(sb_db_t *db, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb, void *data)
{
    db_query_t *q = query_copy(stmts, n);
    q->cb = cb;
    q->data = data;
    int rc = sb_db_acquire(db, query_acquired, q);
    if (rc != 0)
        query_free(q);
    return rc;
}

/* ======================== pool life ======================== */

static void conn_timer_closed(uv_handle_t *h)
{
    sb_db_conn_t *c = h->data;
    db_handle_release(c->db);
}

static void conn_init(sb_db_t *db, sb_db_conn_t *c)
{
    c->db = db;
    c->fd = -1;
    uv_timer_init(db->loop, &c->timer);
    c->timer.data = c;
    db->open_handles++;
}

int sb_db_new(uv_loop_t *loop, const sb_db_options_t *opts, sb_db_t **out)
{
    if (opts->size < 1)
        return SB_EINVAL;
    sb_db_t *db = sb_xcalloc(1, sizeof(*db));
    db->loop = loop;
    db->conninfo = sb_xstrdup(opts->conninfo ? opts->conninfo : "");
    db->role = opts->role ? sb_xstrdup(opts->role) : NULL;
    db->opts = *opts;
    db->opts.conninfo = db->conninfo;
    db->opts.role = db->role;
    if (db->opts.max_waiting <= 0)
        db->opts.max_waiting = 1024;
    if (db->opts.acquire_timeout_ms == 0)
        db->opts.acquire_timeout_ms = 5000;
    db->nconns = opts->size;
    db->conns = sb_xcalloc((size_t)opts->size, sizeof(sb_db_conn_t));
    for (int i = 0; i < db->nconns; i++)
        conn_init(db, &db->conns[i]);
    for (int i = 0; i < db->nconns; i++)
        conn_connect(&db->conns[i]);
    *out = db;
    return 0;
}

int sb_db_listen_start(sb_db_t *db, const char *const *channels, int n, sb_db_notify_cb on_notify,
                       sb_db_listen_state_cb on_state, void *data)
{
    if (db->listen)
        return SB_EBUSY;
    db->channels = sb_xcalloc((size_t)n + 1, sizeof(char *));
    for (int i = 0; i < n; i++)
        db->channels[i] = sb_xstrdup(channels[i]);
    db->nchannels = n;
    db->on_notify = on_notify;
    db->on_state = on_state;
    db->listen_data = data;
    db->listen = sb_xcalloc(1, sizeof(sb_db_conn_t));
    conn_init(db, db->listen);
    db->listen->is_listen = 1;
    db->listen->reserved = 1; /* never handed out by the pool */
    conn_connect(db->listen);
    return 0;
}

/* One of the pool's handles has closed; the last one frees the pool. */
static void db_handle_release(sb_db_t *db)
{
    if (--db->open_handles > 0 || !db->closing)
        return;
    for (int i = 0; i < db->nconns; i++) {
        conn_forget_prepared(&db->conns[i]);
        free(db->conns[i].prepared);
    }
    if (db->listen) {
        conn_forget_prepared(db->listen);
        free(db->listen->prepared);
        free(db->listen);
    }
    for (int i = 0; i < db->nchannels; i++)
        free(db->channels[i]);
    free(db->channels);
    void (*cb)(void *) = db->close_cb;
    void *cb_data = db->close_data;
    free(db->conns);
    free(db->conninfo);
    free(db->role);
    free(db);
    if (cb)
        cb(cb_data);
}

static void conn_close(sb_db_conn_t *c)
{
    uv_timer_stop(&c->timer);
    if (c->state != CONN_DOWN && c->state != CONN_CLOSED)
        conn_broken(c, "pool closing");
    c->state = CONN_CLOSED;
    uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
}

void sb_db_close(sb_db_t *db, void (*close_cb)(void *data), void *data)
{
    db->closing = 1;
    db->close_cb = close_cb;
    db->close_data = data;
    db_fail_waiters(db, SB_ECLOSED);
    for (int i = 0; i < db->nconns; i++)
        conn_close(&db->conns[i]);
    if (db->listen)
        conn_close(db->listen);
}
