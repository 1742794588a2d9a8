/*
 * worker.c - one worker process: its loop, database pool, router and HTTP
 * server, and a graceful stop (stop accepting, finish requests in flight,
 * close the database) bounded by shutdown_timeout.
 */
#include "process.h"
#include "api/api.h"
#include "common.h"
#include "db/db.h"
#include "http/http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "plugin/host.h"
#include "rules/rules.h"
#include "webhooks.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
    uv_loop_t loop;
    const sb_config_t *cfg;
    sb_router_t *router;
    sb_http_server_t *http;
    sb_db_t *db;
    sb_api_t api;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t deadline;
    uv_timer_t stats;
    int stopping;
    int exit_code;
    int slot; /* this worker's metrics slot: its index among the workers */
} worker_t;

static void worker_on_complete(sb_http_req_t *req, int route, int status, uint64_t ns, void *data)
{
    sb_metrics_request(route, status, ns);
}

static void worker_stats_cb(uv_timer_t *t)
{
    worker_t *w = t->data;
    sb_db_stats_t st;
    sb_db_stats(w->db, &st);
    sb_metrics_db(st.busy, st.idle, st.waiting);
}

static void worker_notified(const char *channel, const char *payload, void *data)
{
    if (strcmp(channel, SB_OUTBOX_CHANNEL) == 0)
        sb_outbox_wake();
    else if (strcmp(channel, SB_WEBHOOKS_CHANNEL) == 0)
        sb_webhooks_wake();
    else if (strcmp(channel, SB_CHANNELS_CHANNEL) == 0)
        sb_plugins_channels_changed();
    else if (strcmp(channel, SB_EVENTS_CHANNEL) == 0) {
        sb_api_stream_event(payload);
        sb_plugins_event(payload);
    } else
        sb_rules_notified(channel, payload);
}

/* After a reconnect, notifications may have been missed: look anyway. */
static void worker_listen_state(int up, void *data)
{
    if (up) {
        sb_plugins_channels_changed();
        sb_outbox_wake();
        sb_webhooks_wake();
        sb_rules_notified(NULL, NULL);
    }
}

static void worker_close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_db_closed(void *data)
{
    worker_t *w = data;
    /* Everything else (signals, timers) goes now; the loop then ends. */
    uv_walk(&w->loop, worker_close_walk, NULL);
}

static void worker_drained(sb_http_server_t *srv, void *data)
{
    worker_t *w = data;
    sb_log_debug(NULL, "worker drained; closing the database pool");
    sb_outbox_stop();
    sb_rules_stop();
    sb_webhooks_stop();
    sb_plugins_stop();
    sb_db_close(w->db, worker_db_closed, w);
    w->db = NULL;
}

static void worker_deadline_cb(uv_timer_t *t)
{
    worker_t *w = t->data;
    sb_log(SB_LOG_WARNING, NULL, "shutdown deadline passed with %zu connections open; exiting",
           sb_http_server_connections(w->http));
    /* Handlers still hold requests: no orderly teardown is possible. */
    _exit(1);
}

static void worker_stop(worker_t *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    sb_log(SB_LOG_INFO, NULL, "worker shutting down");
    uv_timer_stop(&w->stats);
    uv_timer_start(&w->deadline, worker_deadline_cb, w->cfg->shutdown_timeout_ms, 0);
    uv_unref((uv_handle_t *)&w->deadline);
    sb_http_server_drain(w->http, worker_drained, w);
}

static void worker_signal_cb(uv_signal_t *s, int signum)
{
    worker_t *w = s->data;
    if (signum == SIGHUP)
        return; /* the master reloads by replacing workers */
    worker_stop(w);
}

static int worker_setup(worker_t *w)
{
    sb_http_options_t hopts = {
        .max_header_size = 16384,
        .max_body_size = w->cfg->max_body_size,
        .header_timeout_ms = w->cfg->header_timeout_ms,
        .read_timeout_ms = w->cfg->read_timeout_ms,
        .idle_timeout_ms = w->cfg->idle_timeout_ms,
        .max_connections = (size_t)w->cfg->max_connections,
        .on_complete = worker_on_complete,
        .on_complete_data = w,
    };
    sb_db_options_t dopts = {
        .conninfo = w->cfg->database_url,
        .size = w->cfg->db_pool_size,
        .acquire_timeout_ms = 5000,
        .max_waiting = 1024,
        .role = SB_API_DB_ROLE,
    };

    if (sb_db_new(&w->loop, &dopts, &w->db) != 0)
        return SB_EINVAL;
    w->router = sb_router_new();
    w->api.loop = &w->loop;
    w->api.db = w->db;
    w->api.cfg = w->cfg;
    w->api.router = w->router;
    if (sb_api_routes_add(w->router, &w->api) != 0) {
        sb_log(SB_LOG_ERR, NULL, "could not register routes");
        return SB_EINVAL;
    }
    sb_plugins_start(&w->loop, w->router, w->db, w->slot);
    sb_outbox_start(&w->loop, w->db);
    sb_rules_start(&w->loop, w->db, w->cfg);
    sb_webhooks_start(&w->loop, w->db, w->cfg);
    static const char *const channels[] = {
        SB_OUTBOX_CHANNEL, SB_EVENTS_CHANNEL,   SB_RULES_CHANNEL,   SB_RULE_EVENTS_CHANNEL,
        SB_TIMERS_CHANNEL, SB_WEBHOOKS_CHANNEL, SB_CHANNELS_CHANNEL};
    sb_db_listen_start(w->db, channels, SB_ARRAY_SIZE(channels), worker_notified,
                       worker_listen_state, w);
    w->http = sb_http_server_new(&w->loop, w->router, &hopts);
    return sb_http_server_listen(w->http, (const struct sockaddr *)&w->cfg->listen_addr);
}

int sb_worker_run(const sb_config_t *cfg, int metrics_slot)
{
    worker_t w = {0};

    w.cfg = cfg;
    w.slot = metrics_slot;
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid());
    sb_metrics_attach(metrics_slot);
    uv_loop_init(&w.loop);

    uv_signal_init(&w.loop, &w.sigterm);
    uv_signal_init(&w.loop, &w.sigint);
    uv_signal_init(&w.loop, &w.sighup);
    w.sigterm.data = w.sigint.data = w.sighup.data = &w;
    uv_signal_start(&w.sigterm, worker_signal_cb, SIGTERM);
    uv_signal_start(&w.sigint, worker_signal_cb, SIGINT);
    uv_signal_start(&w.sighup, worker_signal_cb, SIGHUP);
    uv_timer_init(&w.loop, &w.deadline);
    w.deadline.data = &w;
    uv_timer_init(&w.loop, &w.stats);
    w.stats.data = &w;

    if (worker_setup(&w) != 0) {
        w.exit_code = 1;
        if (w.http)
            sb_http_server_drain(w.http, worker_drained, &w);
        else if (w.db)
            worker_drained(NULL, &w);
        else
            uv_walk(&w.loop, worker_close_walk, NULL);
    } else {
        uv_timer_start(&w.stats, worker_stats_cb, 1000, 1000);
        sb_log(SB_LOG_INFO, NULL, "worker started, listening on %s", cfg->listen);
    }

    uv_run(&w.loop, UV_RUN_DEFAULT);
    if (w.http)
        sb_http_server_free(w.http);
    sb_router_free(w.router);
    if (uv_loop_close(&w.loop) != 0)
        sb_log(SB_LOG_WARNING, NULL, "worker loop closed with handles still open");
    sb_log(SB_LOG_INFO, NULL, "worker stopped");
    return w.exit_code;
}
