/*
 * debug.c - routes that exist only for the test suite and benchmarks
 * (debug_routes = true): a request held in the database for a while, a
 * JSON echo, a path parameter.  Never enabled in production.
 */
#include "api.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>

static void debug_sleep_done(int status, PGresult *const *res, int n, void *data)
{
    sb_http_req_t *req = data;

    if (status != 0) {
        sb_api_respond_db_error(req, status, res, n);
        return;
    }
    sb_http_respond_json(req, 200, json_pack("{s:f}", "slept", atof(PQgetvalue(res[0], 0, 0))));
}

/* GET /debug/sleep?seconds=N: holds a pool connection in pg_sleep(N). */
static int debug_sleep(sb_http_req_t *req, void *data)
{
    sb_api_t *api = data;
    const char *secs = sb_http_req_query(req, "seconds");
    char *end;

    double v = secs ? strtod(secs, &end) : 0;
    if (secs && (*end != '\0' || v < 0 || v > 60)) {
        sb_http_respond_error(req, 400, "bad_request", "seconds must be a number from 0 to 60");
        return 0;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%.3f", v);
    const char *params[1] = {buf};
    sb_db_stmt_t stmt = {"SELECT $1::float8 FROM pg_sleep($1::float8)", 1, params};
    return sb_db_query(api->db, &stmt, 1, debug_sleep_done, req) == 0 ? 0 : SB_EUNAVAILABLE;
}

/* POST /debug/echo: a JSON route; answers {"echo": body}. */
static int debug_echo(sb_http_req_t *req, void *data)
{
    json_t *body = sb_http_req_json(req);
    sb_http_respond_json(req, 200, json_pack("{s:O?}", "echo", body));
    return 0;
}

/* GET /debug/items/{id}: a path parameter. */
static int debug_item(sb_http_req_t *req, void *data)
{
    json_t *doc = json_pack("{s:s}", "id", sb_http_req_param(req, "id"));
    if (doc == NULL) {
        sb_http_respond_error(req, 400, "bad_request", "id must be UTF-8");
        return 0;
    }
    sb_http_respond_json(req, 200, doc);
    return 0;
}

int sb_api_debug_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = sb_router_add(r, "GET", "/debug/sleep", 0, debug_sleep, api);
    if (rc == 0)
        rc = sb_router_add(r, "POST", "/debug/echo", SB_ROUTE_JSON, debug_echo, api);
    if (rc == 0)
        rc = sb_router_add(r, "GET", "/debug/items/{id}", 0, debug_item, api);
    return rc;
}
