/*
 * api.c - route registration and what all API handlers share.
 */
#include "api.h"
#include "common.h"
#include "log.h"

int sb_api_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = sb_api_health_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_session_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_ticket_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_member_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_customer_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_openapi_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_stream_routes_add(r, api);
    if (rc == 0 && api->cfg->debug_routes)
        rc = sb_api_debug_routes_add(r, api);
    return rc;
}

void sb_api_respond_db_error(sb_http_req_t *req, int status, PGresult *const *res, int n)
{
    if (status == SB_EUNAVAILABLE || status == SB_ETIMEDOUT || status == SB_ECLOSED ||
        status == SB_EBUSY) {
        sb_http_respond_error(req, 503, "unavailable", "the database is unavailable; retry later");
        return;
    }
    for (int i = 0; i < n; i++) {
        if (res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR) {
            sb_log_ex(SB_LOG_ERR, sb_http_req_log(req),
                      PQresultErrorField(res[i], PG_DIAG_MESSAGE_DETAIL), NULL, "query failed: %s",
                      PQresultErrorField(res[i], PG_DIAG_MESSAGE_PRIMARY));
            break;
        }
    }
    sb_http_respond_error(req, 500, "internal", "internal error");
}
