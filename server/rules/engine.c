/*
 * engine.c - rule events and timers in a worker.
 *
 * One batch at a time: in one transaction, claim queued events (SKIP
 * LOCKED, in order per ticket), load the sandboxes of tenants not cached
 * yet, run the handlers, then apply every outcome and mark the events
 * handled, and commit.  A crash or lost connection rolls the batch back
 * and another worker claims it: nothing is applied twice.  A batch that
 * fails to apply is retried one event at a time, and an event that still
 * fails is marked failed so it cannot block the queue.
 *
 * Timers: the worker keeps the next due times (not the timers) in a heap
 * and wakes at the first; firing is a statement that moves due rows into
 * the event queue under SKIP LOCKED, so each fires once however many
 * workers woke for it.
 */
#include "common.h"
#include "log.h"
#include "rules/rules.h"
#include "rules/sandbox.h"
#include "survey.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RULES_BATCH 32
#define RULES_POLL_MS 1000
#define TIMERS_REFILL_MS 30000
#define TIMERS_HEAP_MAX 1024
#define TIMERS_FIRE_BATCH 256
/* Sandboxes kept per worker (each holds a tenant's scripts, ~150 KiB). */
#define RULES_TENANTS_CACHED 256
#define RULES_PRUNE_MS (10 * 60 * 1000)
/* Handled events are kept this long, for replay. */
#define RULES_HISTORY_DAYS "90"
/*
 * The reports' rollups (0010_report_rollups.sql) are kept up by a step
 * every few seconds, at most a week of days at a time (about a second on a
 * tenant of a million tickets a year, so a step never holds a connection
 * long); while there is a backlog (a new installation, a bulk load), the
 * next step follows at the next poll.
 */
#define ROLLUP_MS 5000
#define ROLLUP_DAYS "7"

typedef struct {
    sb_sandbox_t *sb; /* NULL when its scripts do not load */
    char *error;      /* why not */
    uint64_t used;    /* when a batch last needed it (for eviction) */
} tenant_rules_t;

static struct {
    uv_loop_t *loop;
    sb_db_t *db;
    const sb_config_t *cfg;
    int running;
    uv_timer_t poll, wake;
    uint64_t last_refill, last_prune, last_rollup;
    int rolling; /* a rollup step is in flight */
    /* the event batch */
    int busy, again, limit;
    sb_db_conn_t *conn;
    json_t *events;      /* snapshots claimed */
    GHashTable *tenants; /* tenant id (gint64*) -> tenant_rules_t* */
    /* timers */
    double heap[TIMERS_HEAP_MAX];
    size_t nheap;
    int firing, refilling, fire_again;
} re;

static void rules_process(void);
static void timers_arm(void);

static double now_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ======================== tenants' sandboxes ======================== */

static void tenant_rules_free(gpointer p)
{
    tenant_rules_t *t = p;
    sb_sandbox_free(t->sb);
    free(t->error);
    free(t);
}

static sb_sandbox_limits_t rules_limits(const sb_config_t *cfg)
{
    sb_sandbox_limits_t lim = {cfg->rules_memory_limit, (uint64_t)cfg->rules_instruction_limit};
    return lim;
}

/* Loads scripts (name, source pairs in rows of res) into a new sandbox. */
static int rules_build(const sb_config_t *cfg, const char *const *names, const char *const *sources,
                       int n, sb_sandbox_t **out, json_t **err)
{
    sb_sandbox_limits_t lim = rules_limits(cfg);
    sb_sandbox_t *sb;

    if (sb_sandbox_new(&lim, &sb) != 0) {
        *err = json_pack("{s:s}", "message", "the memory limit is too small for the rules");
        return SB_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (sb_sandbox_load(sb, names[i], sources[i], strlen(sources[i]), err) != 0) {
            json_object_set_new(*err, "script", json_string(names[i]));
            sb_sandbox_free(sb);
            return SB_EINVAL;
        }
    }
    if (sb_sandbox_finish(sb, err) != 0) {
        sb_sandbox_free(sb);
        return SB_EINVAL;
    }
    *out = sb;
    return 0;
}

int sb_rules_validate(const sb_config_t *cfg, const char *const *names, const char *const *sources,
                      int n, json_t **err)
{
    sb_sandbox_t *sb;
    int rc = rules_build(cfg, names, sources, n, &sb, err);
    if (rc == 0)
        sb_sandbox_free(sb);
    return rc;
}

/* Drops the sandbox unused longest; it is rebuilt when needed again. */
static void tenant_evict(void)
{
    GHashTableIter it;
    gpointer key, value, oldest = NULL;
    uint64_t when = UINT64_MAX;

    g_hash_table_iter_init(&it, re.tenants);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        tenant_rules_t *t = value;
        if (t->used < when) {
            when = t->used;
            oldest = key;
        }
    }
    if (oldest)
        g_hash_table_remove(re.tenants, oldest);
}

static void tenant_load(gint64 id, const PGresult *r)
{
    int n = PQntuples(r);
    const char **names = sb_xcalloc((size_t)n + 1, sizeof(char *));
    const char **sources = sb_xcalloc((size_t)n + 1, sizeof(char *));
    tenant_rules_t *t = sb_xcalloc(1, sizeof(*t));
    json_t *err = NULL;

    for (int i = 0; i < n; i++) {
        names[i] = PQgetvalue(r, i, 0);
        sources[i] = PQgetvalue(r, i, 2);
    }
    if (rules_build(re.cfg, names, sources, n, &t->sb, &err) != 0) {
        const char *script = json_string_value(json_object_get(err, "script"));
        char buf[600];
        snprintf(buf, sizeof(buf), "%s.lua: %s", script ? script : "rules",
                 json_string_value(json_object_get(err, "message")));
        t->error = sb_xstrdup(buf);
        sb_log_ex(SB_LOG_WARNING, NULL, buf, NULL,
                  "rules of tenant %lld do not load; their events are recorded, not handled",
                  (long long)id);
        json_decref(err);
    }
    if (g_hash_table_size(re.tenants) >= RULES_TENANTS_CACHED)
        tenant_evict();
    gint64 *key = g_new(gint64, 1);
    *key = id;
    t->used = uv_now(re.loop);
    g_hash_table_replace(re.tenants, key, t);
    free(names);
    free(sources);
}

/* ======================== the event batch ======================== */

static void batch_end(void)
{
    if (re.conn)
        sb_db_release(re.conn);
    re.conn = NULL;
    json_decref(re.events);
    re.events = NULL;
    re.busy = 0;
    if (re.again && re.running) {
        re.again = 0;
        rules_process();
    }
}

static void batch_failed(const char *what, int status, PGresult *const *res, int n)
{
    const char *msg = "";
    for (int i = 0; i < n; i++)
        if (res && res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR) {
            msg = PQresultErrorMessage(res[i]);
            break;
        }
    if (status != SB_EUNAVAILABLE && status != SB_ECLOSED)
        sb_log_ex(SB_LOG_WARNING, NULL, msg[0] ? msg : NULL, NULL, "could not %s: %s", what,
                  sb_strerror(status));
}

static void event_marked(int status, PGresult *const *res, int n, void *data)
{
    if (status != 0)
        batch_failed("mark a rule event failed", status, res, n);
    batch_end();
}

/*
 * A lone event whose outcome cannot apply: end the aborted transaction,
 * record the failure on the event and move on.
 */
static void event_mark_failed(json_t *ev, const char *why)
{
    static const char sql_rollback[] = "ROLLBACK";
    static const char sql[] = "SELECT sb_rule_event_failed($1::bigint, $2::bigint, $3)";
    char tenant[24], id[24];
    snprintf(tenant, sizeof(tenant), "%lld",
             (long long)json_integer_value(json_object_get(ev, "tenant_id")));
    snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(ev, "id")));
    const char *p[3] = {tenant, id, why};
    sb_db_stmt_t s[2] = {{sql_rollback, 0, NULL}, {sql, 3, p}};
    sb_log(SB_LOG_WARNING, NULL, "rule event %s of tenant %s marked failed: %s", id, tenant, why);
    if (sb_db_exec(re.conn, s, 2, event_marked, NULL) != 0)
        batch_end();
}

static void batch_applied(int status, PGresult *const *res, int n, void *data)
{
    size_t count = json_array_size(re.events);

    if (status == 0) {
        re.limit = RULES_BATCH;
        if (count == RULES_BATCH)
            re.again = 1;
        batch_end();
        return;
    }
    batch_failed("apply rule actions", status, res, n);
    if (status == SB_EDB && count > 1) {
        re.limit = 1; /* find the event that fails */
        re.again = 1;
    } else if (status == SB_EDB && count == 1) {
        char why[300];
        const char *m = res && res[0] ? PQresultErrorField(res[0], PG_DIAG_MESSAGE_PRIMARY) : NULL;
        snprintf(why, sizeof(why), "%s", m ? m : "the actions could not be applied");
        re.limit = RULES_BATCH;
        re.again = 1;
        event_mark_failed(json_array_get(re.events, 0), why);
        return;
    }
    batch_end();
}

static void log_errors(json_t *ev, json_t *errors)
{
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        json_t *ticket = json_object_get(ev, "ticket");
        sb_log_ex(SB_LOG_WARNING, NULL, json_string_value(json_object_get(e, "message")), NULL,
                  "rule %s of tenant \"%s\" failed on %s of ticket %lld",
                  json_string_value(json_object_get(e, "script"))
                      ? json_string_value(json_object_get(e, "script"))
                      : "script",
                  json_string_value(json_object_get(ev, "tenant")),
                  json_string_value(json_object_get(ev, "type")),
                  (long long)json_integer_value(json_object_get(ticket, "number")));
    }
}

/*
 * Survey actions get their link here, from the host: a fresh nonce and a
 * token signed with a key the scripts never see.  A survey that cannot be
 * signed is dropped and reported.
 */
static void outcome_surveys(json_t *out, json_int_t tenant_id)
{
    json_t *actions = json_object_get(out, "actions");
    for (size_t i = 0; i < json_array_size(actions); i++) {
        json_t *a = json_array_get(actions, i);
        const char *type = json_string_value(json_object_get(a, "type"));
        if (type == NULL || strcmp(type, "survey") != 0)
            continue;
        sb_survey_ref_t ref = {.tenant_id = tenant_id};
        char token[SB_SURVEY_TOKEN_MAX], nonce[33];
        json_int_t valid = json_integer_value(json_object_get(a, "expires_in"));
        sb_survey_nonce(ref.nonce);
        ref.expires = (int64_t)now_epoch() +
                      (valid > 0 ? valid : (json_int_t)(re.cfg->survey_valid_ms / 1000));
        if (sb_survey_token(&ref, token) != 0) {
            json_array_append_new(json_object_get(out, "errors"),
                                  json_pack("{s:s, s:s}", "message",
                                            "no installation key to sign the survey link with",
                                            "kind", "error"));
            json_array_remove(actions, i--);
            continue;
        }
        sb_survey_nonce_hex(ref.nonce, nonce);
        char *link = sb_survey_url(re.cfg, token);
        json_t *url = json_string(link);
        free(link);
        const char *text = json_string_value(json_object_get(a, "text"));
        if (text) {
            GString *g = g_string_new(text);
            g_string_replace(g, "@@SURVEY_URL@@", json_string_value(url), 0);
            json_object_set_new(a, "text", json_string(g->str));
            g_string_free(g, TRUE);
        }
        json_object_set_new(a, "nonce", json_string(nonce));
        json_object_set_new(a, "expires", json_integer(ref.expires));
        json_object_set_new(a, "url", url);
    }
}

/* The outcome of one event, as sb_rules_apply takes it. */
static json_t *event_outcome(json_t *ev)
{
    gint64 tenant = (gint64)json_integer_value(json_object_get(ev, "tenant_id"));
    tenant_rules_t *t = g_hash_table_lookup(re.tenants, &tenant);
    json_t *ticket = json_object_get(ev, "ticket");
    json_t *out;

    if (t)
        t->used = uv_now(re.loop);
    if (t && t->sb)
        out = sb_sandbox_run(t->sb, ev);
    else
        out = json_pack("{s:[], s:[{s:s, s:s}]}", "actions", "errors", "message",
                        t && t->error ? t->error : "the tenant's rules did not load", "kind",
                        "error");
    outcome_surveys(out, json_integer_value(json_object_get(ev, "tenant_id")));
    log_errors(ev, json_object_get(out, "errors"));
    json_object_set(out, "tenant_id", json_object_get(ev, "tenant_id"));
    json_object_set(out, "event", json_object_get(ev, "id"));
    json_object_set(out, "type", json_object_get(ev, "type"));
    json_object_set(out, "depth", json_object_get(ev, "depth"));
    if (ticket)
        json_object_set(out, "ticket", json_object_get(ticket, "id"));
    return out;
}

static void batch_run(void)
{
    static const char sql_apply[] = "SELECT sb_rules_apply($1::jsonb)";
    static const char sql_commit[] = "COMMIT";
    json_t *all = json_array();
    size_t i;
    json_t *ev;

    json_array_foreach(re.events, i, ev) json_array_append_new(all, event_outcome(ev));
    char *text = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    const char *p[1] = {text};
    sb_db_stmt_t s[2] = {{sql_apply, 1, p}, {sql_commit, 0, NULL}};
    int rc = sb_db_exec(re.conn, s, 2, batch_applied, NULL);
    free(text);
    if (rc != 0)
        batch_end();
}

static void batch_scripts(int status, PGresult *const *res, int n, void *data)
{
    gint64 *ids = data;
    if (status != 0) {
        batch_failed("load rule scripts", status, res, n);
        free(ids);
        batch_end();
        return;
    }
    for (int i = 0; i < n; i++)
        tenant_load(ids[i], res[i]);
    free(ids);
    batch_run();
}

/* Fetches the scripts of the batch's tenants that are not cached. */
static void batch_load_tenants(void)
{
    static const char sql[] = "SELECT name, version, source FROM sb_rule_scripts_active($1::bigint)"
                              " ORDER BY name";
    size_t count = json_array_size(re.events), k = 0;
    gint64 *ids = sb_xcalloc(count, sizeof(gint64));
    char(*bufs)[24] = sb_xcalloc(count, 24);
    const char **params = sb_xcalloc(count, sizeof(char *));
    sb_db_stmt_t *s = sb_xcalloc(count, sizeof(sb_db_stmt_t));

    for (size_t i = 0; i < count; i++) {
        gint64 id =
            (gint64)json_integer_value(json_object_get(json_array_get(re.events, i), "tenant_id"));
        int seen = g_hash_table_contains(re.tenants, &id);
        for (size_t j = 0; j < k && !seen; j++)
            seen = ids[j] == id;
        if (seen)
            continue;
        ids[k] = id;
        snprintf(bufs[k], 24, "%lld", (long long)id);
        params[k] = bufs[k];
        s[k] = (sb_db_stmt_t){sql, 1, &params[k]};
        k++;
    }
    if (k == 0) {
        free(ids);
        batch_run();
    } else if (sb_db_exec(re.conn, s, (int)k, batch_scripts, ids) != 0) {
        free(ids);
        batch_end();
    }
    free(bufs);
    free(params);
    free(s);
}

static void batch_claimed(int status, PGresult *const *res, int n, void *data)
{
    if (status != 0) {
        batch_failed("claim rule events", status, res, n);
        batch_end();
        return;
    }
    const PGresult *r = res[1];
    re.events = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *ev = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (ev)
            json_array_append_new(re.events, ev);
    }
    if (json_array_size(re.events) == 0) {
        batch_end();
        return;
    }
    batch_load_tenants();
}

static void batch_acquired(sb_db_conn_t *conn, int status, void *data)
{
    static const char sql_begin[] = "BEGIN";
    static const char sql_claim[] = "SELECT sb_rule_events_claim($1::integer)";
    char limit[16];

    if (status != 0) {
        re.busy = 0;
        return;
    }
    re.conn = conn;
    if (!re.running) {
        batch_end();
        return;
    }
    snprintf(limit, sizeof(limit), "%d", re.limit);
    const char *p[1] = {limit};
    sb_db_stmt_t s[2] = {{sql_begin, 0, NULL}, {sql_claim, 1, p}};
    if (sb_db_exec(conn, s, 2, batch_claimed, NULL) != 0)
        batch_end();
}

static void rules_process(void)
{
    if (!re.running)
        return;
    if (re.busy) {
        re.again = 1;
        return;
    }
    re.busy = 1;
    if (sb_db_acquire(re.db, batch_acquired, NULL) != 0)
        re.busy = 0;
}

/* ======================== timers ======================== */

static void heap_push(double t)
{
    if (re.nheap == TIMERS_HEAP_MAX)
        return; /* the next refill sees it */
    size_t i = re.nheap++;
    while (i > 0 && re.heap[(i - 1) / 2] > t) {
        re.heap[i] = re.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    re.heap[i] = t;
}

static void heap_pop(void)
{
    double last = re.heap[--re.nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= re.nheap)
            break;
        if (c + 1 < re.nheap && re.heap[c + 1] < re.heap[c])
            c++;
        if (re.heap[c] >= last)
            break;
        re.heap[i] = re.heap[c];
        i = c;
    }
    if (re.nheap > 0)
        re.heap[i] = last;
}

static void timers_fire(void);

static void timers_refilled(int status, PGresult *const *res, int n, void *data)
{
    re.refilling = 0;
    if (status != 0 || !re.running)
        return;
    re.nheap = 0;
    for (int i = 0; i < PQntuples(res[0]); i++)
        heap_push(atof(PQgetvalue(res[0], i, 0)));
    timers_arm();
}

static void timers_refill(void)
{
    static const char sql[] = "SELECT sb_timers_next(" G_STRINGIFY(TIMERS_HEAP_MAX) ")";
    sb_db_stmt_t s = {sql, 0, NULL};
    if (re.refilling || !re.running)
        return;
    re.last_refill = uv_now(re.loop);
    if (sb_db_query(re.db, &s, 1, timers_refilled, NULL) == 0)
        re.refilling = 1;
}

static void timers_fired(int status, PGresult *const *res, int n, void *data)
{
    re.firing = 0;
    if (status != 0) {
        batch_failed("fire timers", status, res, n);
        return;
    }
    if (!re.running)
        return;
    if (atoi(PQgetvalue(res[0], 0, 0)) == TIMERS_FIRE_BATCH || re.fire_again) {
        re.fire_again = 0;
        timers_fire();
        return;
    }
    timers_refill();
}

static void timers_fire(void)
{
    static const char sql[] = "SELECT sb_timers_fire(" G_STRINGIFY(TIMERS_FIRE_BATCH) ")";
    sb_db_stmt_t s = {sql, 0, NULL};
    if (re.firing) {
        re.fire_again = 1;
        return;
    }
    if (sb_db_query(re.db, &s, 1, timers_fired, NULL) == 0)
        re.firing = 1;
}

static void timers_wake(uv_timer_t *t)
{
    double now = now_epoch();
    int due = 0;
    while (re.nheap > 0 && re.heap[0] <= now + 0.0005) {
        heap_pop();
        due = 1;
    }
    if (due)
        timers_fire();
    timers_arm();
}

static void timers_arm(void)
{
    if (!re.running)
        return;
    if (re.nheap == 0) {
        uv_timer_stop(&re.wake);
        return;
    }
    double delay = (re.heap[0] - now_epoch()) * 1000.0;
    uint64_t ms = delay <= 0 ? 0 : delay > 86400000.0 ? 86400000 : (uint64_t)ceil(delay);
    uv_timer_start(&re.wake, timers_wake, ms, 0);
}

/* ======================== the worker's side ======================== */

static void rules_pruned(int status, PGresult *const *res, int n, void *data)
{
    if (status != 0)
        batch_failed("prune the rule event history", status, res, n);
}

static void rules_rolled_up(int status, PGresult *const *res, int n, void *data)
{
    re.rolling = 0;
    if (status != 0) {
        batch_failed("update the report rollups", status, res, n);
        return;
    }
    /* Days were built: there may be more, do not wait. */
    if (n > 0 && PQntuples(res[n - 1]) == 1 && atoi(PQgetvalue(res[n - 1], 0, 0)) > 0)
        re.last_rollup = 0;
}

static void rules_rollup(void)
{
    static const char sql[] = "SELECT sb_report_rollup(" ROLLUP_DAYS ")";
    sb_db_stmt_t s = {sql, 0, NULL};

    if (re.rolling || uv_now(re.loop) - re.last_rollup < ROLLUP_MS)
        return;
    re.last_rollup = uv_now(re.loop);
    if (sb_db_query(re.db, &s, 1, rules_rolled_up, NULL) == 0)
        re.rolling = 1;
}

static void rules_poll(uv_timer_t *t)
{
    static const char sql_prune[] = "SELECT sb_rule_events_prune(" RULES_HISTORY_DAYS ", 10000)";
    rules_process();
    if (uv_now(re.loop) - re.last_refill >= TIMERS_REFILL_MS)
        timers_refill();
    if (uv_now(re.loop) - re.last_prune >= RULES_PRUNE_MS) {
        sb_db_stmt_t s = {sql_prune, 0, NULL};
        re.last_prune = uv_now(re.loop);
        sb_db_query(re.db, &s, 1, rules_pruned, NULL);
    }
    rules_rollup();
}

int sb_rules_start(uv_loop_t *loop, sb_db_t *db, const sb_config_t *cfg)
{
    re.loop = loop;
    re.db = db;
    re.cfg = cfg;
    re.limit = RULES_BATCH;
    re.running = 1;
    re.last_prune = uv_now(loop);
    re.last_rollup = uv_now(loop);
    re.tenants = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, tenant_rules_free);
    uv_timer_init(loop, &re.poll);
    uv_timer_init(loop, &re.wake);
    uv_timer_start(&re.poll, rules_poll, 50, RULES_POLL_MS);
    timers_refill();
    return 0;
}

void sb_rules_notified(const char *channel, const char *payload)
{
    if (!re.running)
        return;
    if (channel == NULL) {
        /* Reconnected: what was missed is looked at anew. */
        g_hash_table_remove_all(re.tenants);
        rules_process();
        timers_refill();
    } else if (strcmp(channel, SB_RULES_CHANNEL) == 0) {
        gint64 id = g_ascii_strtoll(payload, NULL, 10);
        g_hash_table_remove(re.tenants, &id);
    } else if (strcmp(channel, SB_RULE_EVENTS_CHANNEL) == 0) {
        rules_process();
    } else if (strcmp(channel, SB_TIMERS_CHANNEL) == 0) {
        heap_push(g_ascii_strtod(payload, NULL));
        timers_arm();
    }
}

void sb_rules_stop(void)
{
    if (!re.running)
        return;
    re.running = 0;
    uv_timer_stop(&re.poll);
    uv_timer_stop(&re.wake);
    uv_close((uv_handle_t *)&re.poll, NULL);
    uv_close((uv_handle_t *)&re.wake, NULL);
    g_hash_table_destroy(re.tenants);
    re.tenants = NULL;
}

/* ======================== defaults ======================== */

static int sync_exec(PGconn *pg, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        sb_log_ex(SB_LOG_ERR, NULL, PQresultErrorMessage(r), NULL,
                  "could not install the default rule scripts");
    PQclear(r);
    return ok ? 0 : SB_EDB;
}

int sb_rules_sync_defaults(PGconn *pg)
{
    static const char sql_upsert[] = "INSERT INTO rule_defaults (name, source) VALUES ($1, $2)"
                                     " ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source";
    static const char sql_seed[] =
        "INSERT INTO rule_scripts (tenant_id, name, version, source, comment)"
        " SELECT t.id, d.name, 1, d.source, 'default' FROM tenants t CROSS JOIN rule_defaults d"
        " WHERE NOT EXISTS (SELECT 1 FROM rule_scripts s WHERE s.tenant_id = t.id)";
    sb_buf_t names;
    int rc = sync_exec(pg, "BEGIN", 0, NULL);

    sb_buf_init(&names);
    sb_buf_puts(&names, "{");
    for (const sb_rules_default_t *d = sb_rules_defaults; rc == 0 && d->name; d++) {
        const char *p[2] = {d->name, d->source};
        rc = sync_exec(pg, sql_upsert, 2, p);
        sb_buf_printf(&names, "%s%s", d == sb_rules_defaults ? "" : ",", d->name);
    }
    sb_buf_puts(&names, "}");
    const char *p[1] = {names.data};
    if (rc == 0)
        rc = sync_exec(pg, "DELETE FROM rule_defaults WHERE name <> ALL ($1::text[])", 1, p);
    if (rc == 0)
        rc = sync_exec(pg, sql_seed, 0, NULL);
    sb_buf_free(&names);
    sync_exec(pg, rc == 0 ? "COMMIT" : "ROLLBACK", 0, NULL);
    return rc;
}
