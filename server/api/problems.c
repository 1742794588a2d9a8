/*
 * problems.c - recurring problems: a record of a root cause shared by
 * tickets (status, root cause, workaround), so that it is found and fixed
 * once.  Everyone in the tenant reads; agents link tickets and record
 * problems; rules link with act.link_problem.
 */
#include "api.h"
#include "common.h"

#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"

static const char *const problem_statuses[] = {"open", "known_error", "resolved", NULL};

#define SQL_PROBLEM_JSON(p)                                                                       \
    "json_build_object('id', " p ".id, 'title', " p ".title, 'status', " p ".status,"             \
    " 'root_cause', " p ".root_cause, 'workaround', " p ".workaround, 'created_at', " p           \
    ".created_at, 'tickets', (SELECT count(*) FROM tickets t WHERE t.tenant_id = " p ".tenant_id" \
    " AND t.problem_id = " p ".id))"

static const sb_api_field_t problem_fields[] = {
    {"title", SB_FIELD_STRING, 2, 200, NULL},
    {"status", SB_FIELD_STRING, 0, 0, problem_statuses},
    {"root_cause", SB_FIELD_STRING, 0, 20000, NULL},
    {"workaround", SB_FIELD_STRING, 0, 20000, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int problems_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(" SQL_PROBLEM_JSON(
            "p") " ORDER BY p.id DESC), '[]'), 'next_cursor', NULL)"
                 " FROM problems p WHERE p.tenant_id = sb_tenant()"
                 " AND ($1::text IS NULL OR p.status = $1)";
    const char *status = sb_http_req_query(req, "status");
    int known = status == NULL;
    for (int i = 0; !known && problem_statuses[i]; i++)
        known = strcmp(status, problem_statuses[i]) == 0;
    if (!known) {
        sb_api_respond_invalid(req, "status",
                               "parameter \"status\" must be open, known_error or "
                               "resolved");
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    op->params[0] = status;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

static void problem_params(sb_api_op_t *op, json_t *body)
{
    static const char *const names[] = {"title", "status", "root_cause", "workaround"};
    for (int i = 0; i < 4; i++)
        op->params[i] = json_string_value(json_object_get(body, names[i]));
}

static int problem_create(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH p AS (INSERT INTO problems (tenant_id, title, status, root_cause, workaround)"
        " VALUES (sb_tenant(), $1, coalesce($2, 'open'), $3, $4) RETURNING *),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'problem.created',"
        "   jsonb_build_object('problem', p.id, 'title', p.title) FROM p)"
        " SELECT " SQL_PROBLEM_JSON("p") " FROM p";
    json_t *body = sb_http_req_json(req);

    if (sb_api_check(req, body, NULL, problem_fields) != 0)
        return 0;
    if (!json_object_get(body, "title")) {
        sb_api_respond_invalid(req, "title", "field \"title\" is required");
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 201, sql, 4);
    op->conflict = "a problem with this title exists";
    problem_params(op, body);
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

static int problem_get(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT " SQL_PROBLEM_JSON("p") "::jsonb || jsonb_build_object('ticket_numbers',"
                                        " (SELECT coalesce(jsonb_agg(t.number ORDER BY t.number),"
                                        " '[]') FROM tickets t WHERE t.tenant_id = p.tenant_id"
                                        " AND t.problem_id = p.id))"
                                        " FROM problems p WHERE p.tenant_id = sb_tenant()"
                                        " AND p.id = $1::bigint";
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

static int problem_update(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH p AS (UPDATE problems SET title = coalesce($1, title), status = coalesce($2, status),"
        "  root_cause = CASE WHEN $6::boolean THEN $3 ELSE root_cause END,"
        "  workaround = CASE WHEN $7::boolean THEN $4 ELSE workaround END"
        "  WHERE tenant_id = sb_tenant() AND id = $5::bigint RETURNING *),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'problem.updated',"
        "   jsonb_build_object('problem', p.id, 'status', p.status) FROM p)"
        " SELECT " SQL_PROBLEM_JSON("p") " FROM p";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, problem_fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 7);
    op->conflict = "a problem with this title exists";
    problem_params(op, body);
    op->params[4] = id;
    op->params[5] = json_object_get(body, "root_cause") ? "true" : "false";
    op->params[6] = json_object_get(body, "workaround") ? "true" : "false";
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

/* Links a ticket to a problem ({"problem": id}) or unlinks it ({"problem": null}). */
static int ticket_problem(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH t AS (UPDATE tickets t SET problem_id = $2::bigint, version = t.version + 1,"
        "  updated_at = now() WHERE t.tenant_id = sb_tenant() AND t.number = $1::bigint"
        "  RETURNING *),"
        " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), t.id, sb_actor_kind(), sb_actor_id(), 'ticket.problem',"
        "   jsonb_build_object('problem', $2::bigint) FROM t)"
        " SELECT sb_ticket_json(t) FROM t";
    static const sb_api_field_t fields[] = {
        {"problem", SB_FIELD_ID_OR_NULL, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *number = sb_api_path_id(req, "number");

    if (number == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    json_t *p = json_object_get(body, "problem");
    if (p == NULL) {
        sb_api_respond_invalid(req, "problem", "field \"problem\" is required (an id, or null)");
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 2);
    op->params[0] = number;
    if (json_is_integer(p)) {
        snprintf(op->buf[0], sizeof(op->buf[0]), "%lld", (long long)json_integer_value(p));
        op->params[1] = op->buf[0];
    }
    op->bad_ref_field = "problem";
    op->bad_ref_message = "no such problem";
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

int sb_api_problem_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TENANT "/problems", 0, problems_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/problems", SB_ROUTE_JSON, problem_create, api);
    rc |= sb_router_add(r, "GET", TENANT "/problems/{id}", 0, problem_get, api);
    rc |= sb_router_add(r, "PATCH", TENANT "/problems/{id}", SB_ROUTE_JSON, problem_update, api);
    rc |= sb_router_add(r, "PUT", TENANT "/tickets/{number}/problem", SB_ROUTE_JSON, ticket_problem,
                        api);
    return rc ? SB_EINVAL : 0;
}
