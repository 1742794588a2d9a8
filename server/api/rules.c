/*
 * rules.c - a tenant's Lua rule scripts: read, upload (a new version,
 * only once it compiles and loads with the tenant's other scripts in a
 * sandbox like the workers'), history and rollback (admins); and agents'
 * availability, whose "away" hands their open tickets to the rules.
 */
#include "api.h"
#include "common.h"
#include "rules/rules.h"
#include "webhooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"

/* A script name from the path, or NULL (names nothing: 404). */
static const char *rule_name(sb_http_req_t *req)
{
    const char *n = sb_http_req_param(req, "name");
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 64 || n[0] < 'a' || n[0] > 'z')
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
            return NULL;
    return n;
}

static int rules_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(json_build_object('name', s.name,"
        " 'version', s.version, 'comment', s.comment, 'created_at', s.created_at) ORDER BY s.name),"
        " '[]'), 'next_cursor', NULL)"
        " FROM (SELECT DISTINCT ON (name) * FROM rule_scripts WHERE tenant_id = sb_tenant()"
        "  ORDER BY name, version DESC) s";
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, sb_api_op_new(req, 200, sql, 0));
}

static int rule_get(sb_http_req_t *req, void *data)
{
    static const char sql[] = "SELECT sb_rule_script_json(s) FROM rule_scripts s"
                              " WHERE s.tenant_id = sb_tenant() AND s.name = $1"
                              " ORDER BY s.version DESC LIMIT 1";
    const char *name = rule_name(req);
    if (name == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    op->params[0] = name;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

static int rule_versions(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(sb_rule_script_json(s) - 'source'"
        " ORDER BY s.version DESC), '[]'), 'next_cursor', NULL)"
        " FROM rule_scripts s WHERE s.tenant_id = sb_tenant() AND s.name = $1"
        " HAVING count(*) > 0";
    const char *name = rule_name(req);
    if (name == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    op->params[0] = name;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

static int rule_version(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT sb_rule_script_json(s) FROM rule_scripts s"
        " WHERE s.tenant_id = sb_tenant() AND s.name = $1 AND s.version = $2::integer";
    const char *name = rule_name(req);
    const char *version = sb_api_path_id(req, "version");
    if (name == NULL || version == NULL || strlen(version) > 9)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 2);
    op->params[0] = name;
    op->params[1] = version;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

/* ======================== new versions ======================== */

typedef struct {
    const char *name;
    const char *source; /* NULL: a rollback, to version */
    const char *comment;
    char version[16];
} rule_put_t;

static void rule_respond_invalid(sb_http_req_t *req, const char *name, json_t *err)
{
    json_t *e = json_pack("{s:s, s:O}", "code", "script_invalid", "message",
                          json_object_get(err, "message"));
    json_t *line = json_object_get(err, "line");
    const char *script = json_string_value(json_object_get(err, "script"));
    if (line)
        json_object_set(e, "line", line);
    json_object_set_new(e, "script", json_string(script ? script : name));
    sb_http_respond_json(req, 422, json_pack("{s:o}", "error", e));
}

static void rule_stored(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status == SB_EDB && strcmp(sb_api_sqlstate(res, n), "23505") == 0) {
        sb_http_respond_error(call->req, 409, "conflict",
                              "the script changed meanwhile; fetch it and try again");
        return;
    }
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, 200, res[n - 1]);
}

static void rule_store(sb_api_call_t *call)
{
    static const char sql[] =
        "WITH v AS (INSERT INTO rule_scripts AS s (tenant_id, name, version, source,"
        "  author_agent_id, comment)"
        " SELECT sb_tenant(), $1, coalesce(max(version), 0) + 1, $2, sb_agent(), $3"
        " FROM rule_scripts WHERE tenant_id = sb_tenant() AND name = $1 RETURNING s.*),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'rules.updated',"
        "   jsonb_build_object('name', v.name, 'version', v.version, 'comment', v.comment) FROM v)"
        " SELECT sb_rule_script_json(v) FROM v";
    rule_put_t *p = call->data;
    const char *params[3] = {p->name, p->source, p->comment};
    sb_db_stmt_t s = {sql, 3, params};
    if (sb_api_tx(call, &s, 1, rule_stored) != 0)
        sb_api_respond_unavailable(call->req);
}

/* The tenant's other active scripts (and, for a rollback, the old source) arrived. */
static void rule_candidates(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    rule_put_t *p = call->data;
    sb_pool_t *pool = sb_http_req_pool(call->req);

    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (p->source == NULL) {
        if (PQntuples(res[1]) == 0) {
            sb_api_respond_invalid(call->req, "version", "script \"%s\" has no version %s", p->name,
                                   p->version);
            return;
        }
        p->source = sb_pool_strdup(pool, PQgetvalue(res[1], 0, 0));
        char comment[48];
        snprintf(comment, sizeof(comment), "rollback to version %s", p->version);
        p->comment = sb_pool_strdup(pool, comment);
    }
    int rows = PQntuples(r);
    const char **names = sb_pool_alloc(pool, sizeof(char *) * (size_t)(rows + 1));
    const char **sources = sb_pool_alloc(pool, sizeof(char *) * (size_t)(rows + 1));
    int k = 0, placed = 0;
    /* In name order, as workers load them. */
    for (int i = 0; i < rows; i++) {
        if (!placed && strcmp(p->name, PQgetvalue(r, i, 0)) < 0) {
            names[k] = p->name;
            sources[k++] = p->source;
            placed = 1;
        }
        names[k] = PQgetvalue(r, i, 0);
        sources[k++] = PQgetvalue(r, i, 1);
    }
    if (!placed) {
        names[k] = p->name;
        sources[k++] = p->source;
    }
    json_t *err = NULL;
    if (sb_rules_validate(call->api->cfg, names, sources, k, &err) != 0) {
        rule_respond_invalid(call->req, p->name, err);
        json_decref(err);
        return;
    }
    rule_store(call);
}

static void rule_put_next(sb_api_call_t *call)
{
    static const char sql_others[] =
        "SELECT name, source FROM sb_rule_scripts_active(sb_tenant()) WHERE name <> $1"
        " ORDER BY name";
    static const char sql_old[] = "SELECT source FROM rule_scripts WHERE tenant_id = sb_tenant()"
                                  " AND name = $1 AND version = $2::integer";
    rule_put_t *p = call->data;
    const char *params[2] = {p->name, p->version};
    sb_db_stmt_t s[2] = {{sql_others, 1, params}, {sql_old, 2, params}};
    if (sb_api_tx(call, s, p->source ? 1 : 2, rule_candidates) != 0)
        sb_api_respond_unavailable(call->req);
}

static int rule_put(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"source", SB_FIELD_STRING, 1, 262144, NULL},
        {"comment", SB_FIELD_STRING, 0, 500, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *name = rule_name(req);

    if (name == NULL) {
        sb_api_respond_invalid(req, "name",
                               "a script name is a lower-case word of letters, digits and _");
        return 0;
    }
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    rule_put_t *p = sb_pool_calloc(sb_http_req_pool(req), sizeof(*p));
    p->name = name;
    p->source = json_string_value(json_object_get(body, "source"));
    p->comment = json_string_value(json_object_get(body, "comment"));
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_ADMIN, rule_put_next,
                        p);
}

static int rule_rollback(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"version", SB_FIELD_INT, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *name = rule_name(req);

    if (name == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    json_int_t v = json_integer_value(json_object_get(body, "version"));
    if (v < 1 || v > 1000000000) {
        sb_api_respond_invalid(req, "version", "field \"version\" must be a version number");
        return 0;
    }
    rule_put_t *p = sb_pool_calloc(sb_http_req_pool(req), sizeof(*p));
    p->name = name;
    snprintf(p->version, sizeof(p->version), "%lld", (long long)v);
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_ADMIN, rule_put_next,
                        p);
}

/* ======================== availability ======================== */

/*
 * An agent marks itself (or a supervisor marks an agent) away or back.
 * Going away raises agent.away once per open ticket the agent holds, so
 * rules can hand each over.
 */
static int agent_away(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH m AS (UPDATE memberships SET away = $2::boolean"
        "  WHERE tenant_id = sb_tenant() AND agent_id = $1::bigint"
        "  AND ($1::bigint = sb_agent() OR EXISTS (SELECT 1 FROM memberships x"
        "   WHERE x.tenant_id = sb_tenant() AND x.agent_id = sb_agent()"
        "   AND x.role IN ('supervisor', 'admin')))"
        "  RETURNING agent_id, away, (SELECT away FROM memberships o WHERE o.tenant_id ="
        "   sb_tenant() AND o.agent_id = $1::bigint) AS was),"
        " ev AS (INSERT INTO rule_events (tenant_id, type, ticket_id, agent_id)"
        "  SELECT sb_tenant(), 'agent.away', t.id, m.agent_id FROM m JOIN tickets t"
        "   ON t.tenant_id = sb_tenant() AND t.assignee_id = m.agent_id"
        "  WHERE m.away AND NOT m.was AND t.status IN ('new', 'open', 'pending', 'on_hold')"
        "  RETURNING 1),"
        " n AS (SELECT pg_notify('switchboard_rule_events', '') FROM ev LIMIT 1),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'agent.availability',"
        "   jsonb_build_object('agent', m.agent_id, 'away', m.away) FROM m)"
        " SELECT json_build_object('agent', m.agent_id, 'away', m.away,"
        "  'handed_over', (SELECT count(*) FROM ev)) FROM m WHERE (SELECT count(*) FROM n) >= 0";
    static const sb_api_field_t fields[] = {
        {"away", SB_FIELD_BOOL, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 2);
    op->params[0] = id;
    op->params[1] = json_is_true(json_object_get(body, "away")) ? "true" : "false";
    return sb_api_op_begin(req, data, SB_ROLE_AGENT, op);
}

/* ======================== notifications ======================== */

/* The caller's notifications from rules, newest first (?unread=true: only those). */
static int notifications_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(json_build_object('id', n.id,"
        " 'ticket', (SELECT t.number FROM tickets t WHERE t.tenant_id = n.tenant_id"
        "   AND t.id = n.ticket_id), 'text', n.text, 'rule', n.rule,"
        " 'created_at', n.created_at, 'read_at', n.read_at) ORDER BY n.id DESC), '[]'),"
        " 'next_cursor', NULL)"
        " FROM (SELECT * FROM notifications WHERE tenant_id = sb_tenant() AND agent_id = sb_agent()"
        "  AND (NOT $1::boolean OR read_at IS NULL) ORDER BY id DESC LIMIT 200) n";
    const char *unread = sb_http_req_query(req, "unread");
    if (unread && strcmp(unread, "true") != 0 && strcmp(unread, "false") != 0) {
        sb_api_respond_invalid(req, "unread", "parameter \"unread\" must be true or false");
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    op->params[0] = unread && strcmp(unread, "true") == 0 ? "true" : "false";
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

/* Marks the caller's notifications read: {"ids": [...]}, or all of them without ids. */
static int notifications_read(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH u AS (UPDATE notifications SET read_at = now()"
        " WHERE tenant_id = sb_tenant() AND agent_id = sb_agent() AND read_at IS NULL"
        " AND ($1::jsonb IS NULL"
        "  OR id IN (SELECT x::bigint FROM jsonb_array_elements_text($1::jsonb) x))"
        " RETURNING 1) SELECT json_build_object('read', count(*)) FROM u";
    static const sb_api_field_t no_other_fields[] = {{NULL, 0, 0, 0, NULL}};
    json_t *body = sb_http_req_json(req);
    json_t *ids = json_object_get(body, "ids");
    json_t *rest = json_is_object(body) ? json_deep_copy(body) : json_incref(body);
    size_t i;
    json_t *v;

    json_object_del(rest, "ids");
    int rc = sb_api_check(req, rest, NULL, no_other_fields);
    json_decref(rest);
    if (rc != 0)
        return 0;
    int ok = ids == NULL || (json_is_array(ids) && json_array_size(ids) <= 1000);
    json_array_foreach(ids, i, v) ok = ok && json_is_integer(v) && json_integer_value(v) > 0;
    if (!ok) {
        sb_api_respond_invalid(req, "ids", "field \"ids\" must be a list of notification ids");
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    if (ids) {
        char *text = json_dumps(ids, JSON_COMPACT);
        op->params[0] = sb_pool_strdup(sb_http_req_pool(req), text);
        free(text);
    }
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

/* ======================== webhook key ======================== */

static void webhook_key_next(sb_api_call_t *call)
{
    char hex[65];
    if (sb_webhooks_key_hex(sb_http_req_param(call->req, "tenant"), hex) != 0) {
        sb_api_respond_unavailable(call->req);
        return;
    }
    sb_http_respond_json(call->req, 200,
                         json_pack("{s:s, s:s, s:s}", "algorithm", "HMAC-SHA256", "header",
                                   "X-Switchboard-Signature", "key", hex));
}

/* The key receivers of the tenant's webhooks check signatures with (admins). */
static int webhook_key(sb_http_req_t *req, void *data)
{
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_ADMIN,
                        webhook_key_next, NULL);
}

int sb_api_rule_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TENANT "/rules", 0, rules_list, api);
    rc |= sb_router_add(r, "GET", TENANT "/rules/{name}", 0, rule_get, api);
    rc |= sb_router_add(r, "PUT", TENANT "/rules/{name}", SB_ROUTE_JSON, rule_put, api);
    rc |= sb_router_add(r, "GET", TENANT "/rules/{name}/versions", 0, rule_versions, api);
    rc |= sb_router_add(r, "GET", TENANT "/rules/{name}/versions/{version}", 0, rule_version, api);
    rc |= sb_router_add(r, "POST", TENANT "/rules/{name}/rollback", SB_ROUTE_JSON, rule_rollback,
                        api);
    rc |= sb_router_add(r, "PUT", TENANT "/agents/{id}/away", SB_ROUTE_JSON, agent_away, api);
    rc |= sb_router_add(r, "GET", TENANT "/webhooks/key", 0, webhook_key, api);
    rc |= sb_router_add(r, "GET", TENANT "/notifications", 0, notifications_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/notifications/read", SB_ROUTE_JSON, notifications_read,
                        api);
    return rc ? SB_EINVAL : 0;
}
