/*
 * customers.c - a tenant's customers (external buyers and internal
 * colleagues), their identities on each channel, merging two records of
 * one person, and the organizations they belong to.
 */
#include "api.h"
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"

static const char *const customer_kinds[] = {"external", "internal", NULL};
static const char *const identity_kinds[] = {"email",    "phone",     "chat",      "telegram",
                                             "whatsapp", "messenger", "instagram", "sms",
                                             "other",    NULL};

/* Every customer operation answers the same mistakes the same way. */
static sb_api_op_t *cust_op(sb_http_req_t *req, int status, const char *sql1, const char *sql2,
                            int nparams)
{
    sb_api_op_t *op = sb_api_op_new(req, status, sql1, nparams);
    if (sql2)
        sb_api_op_then(op, sql2, nparams);
    op->conflict = "that identity or name belongs to another record already";
    op->bad_ref_field = "organization";
    op->bad_ref_message = "field \"organization\" does not name an organization";
    return op;
}

/* An optional integer member as text in buf, or NULL. */
static const char *cust_int(json_t *body, const char *name, char *buf, size_t len)
{
    json_t *v = json_object_get(body, name);
    if (!json_is_integer(v))
        return NULL;
    snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
}

#define SQL_CUSTOMER_DETAIL                                                                    \
    "SELECT sb_customer_json(c) || jsonb_build_object("                                        \
    " 'merged_into', c.merged_into, 'tickets', coalesce((SELECT jsonb_agg(jsonb_build_object(" \
    "  'number', t.number, 'subject', t.subject, 'status', t.status) ORDER BY t.number DESC)"  \
    "  FROM tickets t WHERE t.tenant_id = c.tenant_id AND t.customer_id = c.id), '[]'))"       \
    " FROM customers c WHERE c.tenant_id = sb_tenant()"

/* ======================== customers ======================== */

static int customers_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object("
        " 'items', coalesce(json_agg(sb_customer_json(p.c) ORDER BY p.id DESC)"
        "   FILTER (WHERE p.rn <= $2::int), '[]'),"
        " 'next_cursor', max(CASE WHEN p.rn = $2::int AND p.n > $2::int"
        "   THEN sb_cursor_encode(p.id::text, p.id) END))"
        " FROM (SELECT x.c, x.id, row_number() OVER (ORDER BY x.id DESC) AS rn,"
        "   count(*) OVER () AS n"
        "  FROM (SELECT c, c.id FROM customers c WHERE c.tenant_id = sb_tenant()"
        "   AND c.merged_into IS NULL"
        "   AND ($1::text IS NULL OR strpos(lower(c.name), lower($1)) > 0"
        "    OR EXISTS (SELECT 1 FROM customer_identities i WHERE i.tenant_id = c.tenant_id"
        "     AND i.customer_id = c.id AND strpos(lower(i.value), lower($1)) > 0))"
        "   AND ($3::text IS NULL OR c.id < sb_cursor_part($3, 2)::bigint)"
        "   ORDER BY c.id DESC LIMIT $2::int + 1) x) p";
    sb_api_op_t *op = cust_op(req, 200, sql, NULL, 3);
    op->bad22 = "cursor";
    const char *limit = sb_http_req_query(req, "limit");
    char *end;
    long lim = limit ? strtol(limit, &end, 10) : 25;

    if (limit && (*limit == '\0' || *end != '\0' || lim < 1 || lim > 100)) {
        sb_api_respond_invalid(req, "limit", "parameter \"limit\" must be from 1 to 100");
        return 0;
    }
    snprintf(op->buf[0], sizeof(op->buf[0]), "%ld", lim);
    op->params[0] = sb_http_req_query(req, "q");
    op->params[1] = op->buf[0];
    op->params[2] = sb_http_req_query(req, "cursor");
    if ((op->params[0] && strlen(op->params[0]) > 200) ||
        (op->params[2] && strlen(op->params[2]) > 200)) {
        sb_api_respond_invalid(req, "q", "parameter is longer than 200 characters");
        return 0;
    }
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

static const sb_api_field_t identity_fields[] = {
    {"kind", SB_FIELD_STRING, 1, 20, identity_kinds},
    {"value", SB_FIELD_STRING, 1, 320, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int customer_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 1, 200, NULL},
        {"kind", SB_FIELD_STRING, 0, 10, customer_kinds},
        {"tier", SB_FIELD_STRING, 0, 50, NULL},
        {"language", SB_FIELD_STRING, 0, 35, NULL},
        {"organization", SB_FIELD_INT, 0, 0, NULL},
        {"identities", SB_FIELD_OBJECT, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql_add[] =
        "WITH c AS (INSERT INTO customers (tenant_id, name, kind, tier, language, organization_id)"
        "  VALUES (sb_tenant(), $1, coalesce($2, 'external'), $3, $4, $5::bigint) RETURNING *),"
        " i AS (INSERT INTO customer_identities (tenant_id, customer_id, kind, value)"
        "  SELECT c.tenant_id, c.id, x->>'kind', x->>'value'"
        "  FROM c, jsonb_array_elements($6::jsonb) x)"
        " SELECT set_config('switchboard.customer_id', c.id::text, true) FROM c";
    static const char sql_out[] =
        SQL_CUSTOMER_DETAIL " AND c.id = current_setting('switchboard.customer_id')::bigint";
    json_t *body = sb_http_req_json(req);
    json_t *ids;
    char field[48];
    size_t i;
    json_t *item;

    /* identities is an array of objects: checked item by item below. */
    ids = body ? json_object_get(body, "identities") : NULL;
    if (ids) {
        json_incref(ids);
        json_object_del(body, "identities");
    }
    int rc = sb_api_check(req, body, NULL, fields);
    if (ids) {
        json_object_set_new(body, "identities", ids);
    }
    if (rc != 0)
        return 0;
    if (ids && (!json_is_array(ids) || json_array_size(ids) > 20)) {
        sb_api_respond_invalid(req, "identities",
                               "field \"identities\" must be an array of at most 20 objects");
        return 0;
    }
    json_array_foreach(ids, i, item)
    {
        snprintf(field, sizeof(field), "identities[%zu]", i);
        if (sb_api_check(req, item, field, identity_fields) != 0)
            return 0;
    }
    sb_api_op_t *op = cust_op(req, 201, sql_add, sql_out, 6);
    op->nparams[1] = 0;
    op->params[0] = json_string_value(json_object_get(body, "name"));
    op->params[1] = json_string_value(json_object_get(body, "kind"));
    op->params[2] = json_string_value(json_object_get(body, "tier"));
    op->params[3] = json_string_value(json_object_get(body, "language"));
    op->params[4] = cust_int(body, "organization", op->buf[0], sizeof(op->buf[0]));
    char *text = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
    op->params[5] = sb_pool_strdup(sb_http_req_pool(req), text ? text : "[]");
    free(text);
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

static int customer_get(sb_http_req_t *req, void *data)
{
    static const char sql[] = SQL_CUSTOMER_DETAIL " AND c.id = $1::bigint";
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = cust_op(req, 200, sql, NULL, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

/*
 * GET .../customers/{id}/timeline: every message of every ticket of the
 * customer, whatever the channel, newest page first (?limit=, ?before= a
 * message id from next_cursor), each page oldest first.  Linking
 * identities or merging customers is what puts channels together here.
 */
static int customer_timeline(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('customer', c.id, 'items', coalesce(p.items, '[]'),"
        " 'next_cursor', CASE WHEN p.n = $2::int THEN p.oldest::text END)"
        " FROM customers c LEFT JOIN LATERAL (SELECT json_agg(x.j ORDER BY x.id) AS items,"
        "   count(*) AS n, min(x.id) AS oldest"
        "  FROM (SELECT m.id, sb_message_json(m) || jsonb_build_object('ticket', t.number,"
        "    'subject', t.subject, 'ticket_channel', t.channel) AS j"
        "   FROM tickets t JOIN messages m ON m.tenant_id = t.tenant_id AND m.ticket_id = t.id"
        "   WHERE t.tenant_id = c.tenant_id AND t.customer_id = c.id"
        "    AND ($3::bigint IS NULL OR m.id < $3::bigint)"
        "   ORDER BY m.id DESC LIMIT $2::int) x) p ON true"
        " WHERE c.tenant_id = sb_tenant() AND c.id = $1::bigint";
    const char *id = sb_api_path_id(req, "id");
    const char *limit = sb_http_req_query(req, "limit");
    const char *before;
    char *end;
    long lim = limit ? strtol(limit, &end, 10) : 100;

    if (id == NULL)
        return SB_ENOENT;
    if (limit && (*limit == '\0' || *end != '\0' || lim < 1 || lim > 500)) {
        sb_api_respond_invalid(req, "limit", "parameter \"limit\" must be from 1 to 500");
        return 0;
    }
    if (sb_api_query_id(req, "before", &before) != 0)
        return 0;
    sb_api_op_t *op = cust_op(req, 200, sql, NULL, 3);
    snprintf(op->buf[0], sizeof(op->buf[0]), "%ld", lim);
    op->params[0] = id;
    op->params[1] = op->buf[0];
    op->params[2] = before;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

static int customer_update(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 0, 200, NULL},
        {"kind", SB_FIELD_STRING, 0, 10, customer_kinds},
        {"tier", SB_FIELD_STRING, 0, 50, NULL},
        {"language", SB_FIELD_STRING, 0, 35, NULL},
        {"organization", SB_FIELD_ID_OR_NULL, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql_upd[] =
        "UPDATE customers SET name = coalesce($2, name), kind = coalesce($3, kind),"
        " tier = coalesce($4, tier), language = coalesce($5, language),"
        " organization_id = CASE WHEN $6::boolean THEN $7::bigint ELSE organization_id END,"
        " updated_at = now()"
        " WHERE tenant_id = sb_tenant() AND id = $1::bigint";
    static const char sql_out[] = SQL_CUSTOMER_DETAIL " AND c.id = $1::bigint";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = cust_op(req, 200, sql_upd, sql_out, 7);
    op->nparams[1] = 1;
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(body, "name"));
    op->params[2] = json_string_value(json_object_get(body, "kind"));
    op->params[3] = json_string_value(json_object_get(body, "tier"));
    op->params[4] = json_string_value(json_object_get(body, "language"));
    op->params[5] = json_object_get(body, "organization") ? "true" : "false";
    op->params[6] = cust_int(body, "organization", op->buf[0], sizeof(op->buf[0]));
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

static int identity_add(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH i AS (INSERT INTO customer_identities (tenant_id, customer_id, kind, value)"
        "  SELECT tenant_id, id, $2, $3 FROM customers"
        "  WHERE tenant_id = sb_tenant() AND id = $1::bigint AND merged_into IS NULL RETURNING *)"
        " SELECT json_build_object('id', i.id, 'kind', i.kind, 'value', i.value,"
        "  'customer', i.customer_id) FROM i";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, identity_fields) != 0)
        return 0;
    sb_api_op_t *op = cust_op(req, 201, sql, NULL, 3);
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(body, "kind"));
    op->params[2] = json_string_value(json_object_get(body, "value"));
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

static int customer_merge(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"into", SB_FIELD_INT, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    /* Lock both in id order; move tickets, messages and identities; keep
     * the merged record (pointing at the survivor) for the audit trail. */
    static const char sql_merge[] =
        "WITH locked AS (SELECT id FROM customers WHERE tenant_id = sb_tenant()"
        "  AND id IN ($1::bigint, $2::bigint) AND merged_into IS NULL ORDER BY id FOR UPDATE),"
        " ok AS (SELECT count(*) = 2 AS found FROM locked),"
        " t AS (UPDATE tickets SET customer_id = $2::bigint, updated_at = now(),"
        "   version = version + 1"
        "  WHERE tenant_id = sb_tenant() AND customer_id = $1::bigint AND (SELECT found FROM ok)"
        "  RETURNING id),"
        " m AS (UPDATE messages SET author_customer_id = $2::bigint"
        "  WHERE tenant_id = sb_tenant() AND author_customer_id = $1::bigint"
        "   AND (SELECT found FROM ok)),"
        " i AS (UPDATE customer_identities SET customer_id = $2::bigint"
        "  WHERE tenant_id = sb_tenant() AND customer_id = $1::bigint AND (SELECT found FROM ok)),"
        " c AS (UPDATE customers SET merged_into = $2::bigint, updated_at = now()"
        "  WHERE tenant_id = sb_tenant() AND id = $1::bigint AND (SELECT found FROM ok)),"
        " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), t.id, sb_actor_kind(), sb_actor_id(), 'customer.merged',"
        "   jsonb_build_object('from', $1::bigint, 'into', $2::bigint) FROM t)"
        " SELECT (SELECT found FROM ok)";
    static const char sql_out[] =
        SQL_CUSTOMER_DETAIL " AND c.id = $2::bigint"
                            " AND (SELECT count(*) FROM customers x WHERE x.tenant_id = sb_tenant()"
                            "  AND x.id = $1::bigint AND x.merged_into = $2::bigint) = 1";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = cust_op(req, 200, sql_merge, sql_out, 2);
    op->params[0] = id;
    op->params[1] = cust_int(body, "into", op->buf[0], sizeof(op->buf[0]));
    if (strcmp(op->params[0], op->params[1]) == 0) {
        sb_api_respond_invalid(req, "into", "a customer cannot be merged into itself");
        return 0;
    }
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

/* ======================== organizations ======================== */

static int organizations_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(json_build_object('id', o.id,"
        " 'name', o.name) ORDER BY o.name), '[]'), 'next_cursor', NULL)"
        " FROM organizations o WHERE o.tenant_id = sb_tenant()";
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, cust_op(req, 200, sql, NULL, 0));
}

static int organization_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 1, 200, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql[] =
        "WITH o AS (INSERT INTO organizations (tenant_id, name) VALUES (sb_tenant(), $1)"
        " RETURNING *) SELECT json_build_object('id', o.id, 'name', o.name) FROM o";
    json_t *body = sb_http_req_json(req);
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = cust_op(req, 201, sql, NULL, 1);
    op->params[0] = json_string_value(json_object_get(body, "name"));
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

int sb_api_customer_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TENANT "/customers", 0, customers_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/customers", SB_ROUTE_JSON, customer_create, api);
    rc |= sb_router_add(r, "GET", TENANT "/customers/{id}", 0, customer_get, api);
    rc |= sb_router_add(r, "GET", TENANT "/customers/{id}/timeline", 0, customer_timeline, api);
    rc |= sb_router_add(r, "PATCH", TENANT "/customers/{id}", SB_ROUTE_JSON, customer_update, api);
    rc |= sb_router_add(r, "POST", TENANT "/customers/{id}/identities", SB_ROUTE_JSON, identity_add,
                        api);
    rc |= sb_router_add(r, "POST", TENANT "/customers/{id}/merge", SB_ROUTE_JSON, customer_merge,
                        api);
    rc |= sb_router_add(r, "GET", TENANT "/organizations", 0, organizations_list, api);
    rc |=
        sb_router_add(r, "POST", TENANT "/organizations", SB_ROUTE_JSON, organization_create, api);
    return rc ? SB_EINVAL : 0;
}
