/*
 * api.c - route registration and what all API handlers share.
 */
#include "api.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

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
    if (rc == 0)
        rc = sb_api_channel_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_rule_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_compensation_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_feedback_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_problem_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_kb_routes_add(r, api);
    if (rc == 0)
        rc = sb_api_reports_routes_add(r, api);
    if (rc == 0 && api->cfg->debug_routes)
        rc = sb_api_debug_routes_add(r, api);
    return rc;
}

/*
 * Input that slipped past the handler's checks and was refused by a
 * constraint is still the client's mistake: 422, naming the column when
 * the constraint's name tells it ("tickets_subject_check" -> "subject").
 */
static int api_respond_constraint(sb_http_req_t *req, PGresult *const *res, int n)
{
    for (int i = 0; i < n; i++) {
        if (res[i] == NULL || PQresultStatus(res[i]) != PGRES_FATAL_ERROR)
            continue;
        const char *st = PQresultErrorField(res[i], PG_DIAG_SQLSTATE);
        const char *table = PQresultErrorField(res[i], PG_DIAG_TABLE_NAME);
        const char *cons = PQresultErrorField(res[i], PG_DIAG_CONSTRAINT_NAME);
        const char *col = PQresultErrorField(res[i], PG_DIAG_COLUMN_NAME);
        char field[64] = "";
        if (st == NULL ||
            (strcmp(st, "23514") != 0 && strcmp(st, "23502") != 0 && strncmp(st, "22", 2) != 0))
            return 0;
        if (col)
            snprintf(field, sizeof(field), "%s", col);
        else if (cons && table && strncmp(cons, table, strlen(table)) == 0 &&
                 cons[strlen(table)] == '_')
            snprintf(field, sizeof(field), "%s", cons + strlen(table) + 1);
        char *suffix = strstr(field, "_check");
        if (suffix)
            *suffix = '\0';
        sb_api_respond_invalid(req, field, "field \"%s\" has a value that is not allowed", field);
        return 1;
    }
    return 0;
}

void sb_api_respond_db_error(sb_http_req_t *req, int status, PGresult *const *res, int n)
{
    if (status == SB_EUNAVAILABLE || status == SB_ETIMEDOUT || status == SB_ECLOSED ||
        status == SB_EBUSY) {
        sb_http_respond_error(req, 503, "unavailable", "the database is unavailable; retry later");
        return;
    }
    if (status == SB_EDB && res && api_respond_constraint(req, res, n))
        return;
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
