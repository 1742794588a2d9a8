/*
 * api.h - the server's own HTTP routes: health, readiness, metrics and
 * (when enabled for tests) debug routes.  The REST API of the domain
 * registers here too as it grows.  Worker loop thread only.
 */
#ifndef SB_API_H
#define SB_API_H

#include "config.h"
#include "db/db.h"
#include "http/http.h"

/* What route handlers reach: borrowed, valid for the worker's life. */
typedef struct sb_api {
    sb_db_t *db;
    const sb_config_t *cfg;
    sb_router_t *router;
} sb_api_t;

/* Registers every route on r.  Returns 0 or the router's error. */
int sb_api_routes_add(sb_router_t *r, sb_api_t *api);

/* Registers /healthz, /readyz and /metrics. */
int sb_api_health_routes_add(sb_router_t *r, sb_api_t *api);

/* Registers /debug/... (test hooks, only when cfg->debug_routes). */
int sb_api_debug_routes_add(sb_router_t *r, sb_api_t *api);

/*
 * Answers a failed database call: 503 with Retry-After when the database
 * is unavailable, 500 (logged) otherwise.
 */
void sb_api_respond_db_error(sb_http_req_t *req, int status, PGresult *const *res, int n);

#endif
