/*
 * health.c - /healthz (the process answers), /readyz (the database is
 * reachable and migrated) and /metrics (Prometheus text format).
 */
#include "api.h"
#include "common.h"
#include "metrics.h"

#include <stdlib.h>

static int health_healthz(sb_http_req_t *req, void *data)
{
    sb_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
    return 0;
}

static void health_ready_done(int status, PGresult *const *res, int n, void *data)
{
    sb_http_req_t *req = data;

    if (status != 0) {
        if (status == SB_EDB) {
            /* No schema_migrations table: reachable but never migrated. */
            sb_http_respond_error(req, 503, "unavailable", "the database is not migrated");
            return;
        }
        sb_api_respond_db_error(req, status, res, n);
        return;
    }
    int version = atoi(PQgetvalue(res[0], 0, 0));
    if (version != sb_db_schema_version()) {
        sb_http_respond_error(req, 503, "unavailable",
                              "the database schema is at version %d; this server needs %d", version,
                              sb_db_schema_version());
        return;
    }
    sb_http_respond_json(req, 200,
                         json_pack("{s:s,s:i}", "status", "ready", "schema_version", version));
}

static int health_readyz(sb_http_req_t *req, void *data)
{
    sb_api_t *api = data;
    static const sb_db_stmt_t stmt = {
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        0,
        NULL,
    };
    return sb_db_query(api->db, &stmt, 1, health_ready_done, req) == 0 ? 0 : SB_EUNAVAILABLE;
}

static int health_metrics(sb_http_req_t *req, void *data)
{
    sb_api_t *api = data;
    sb_db_stats_t st;
    sb_buf_t out;

    sb_db_stats(api->db, &st);
    sb_metrics_db(st.busy, st.idle, st.waiting);
    sb_buf_init(&out);
    sb_metrics_render(&out, api->router);
    sb_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data ? out.data : "",
                    out.len);
    sb_buf_free(&out);
    return 0;
}

int sb_api_health_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = sb_router_add(r, "GET", "/healthz", 0, health_healthz, api);
    if (rc == 0)
        rc = sb_router_add(r, "GET", "/readyz", 0, health_readyz, api);
    if (rc == 0)
        rc = sb_router_add(r, "GET", "/metrics", 0, health_metrics, api);
    return rc;
}
