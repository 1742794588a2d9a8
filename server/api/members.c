/*
 * members.c - a tenant's people: its agents (memberships and roles),
 * teams and team members.  Admins manage agents; supervisors manage
 * teams; everyone in the tenant may read.
 */
#include "api.h"
#include "auth.h"
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"

static const char *const member_roles[] = {"admin", "supervisor", "agent", "viewer", NULL};

/* ======================== agents ======================== */

#define SQL_AGENT_JSON(a, m)                                                      \
    "json_build_object('id', " a ".id, 'name', " a ".name, 'email', " a ".email," \
    " 'role', " m ".role, 'active', " a ".active)"

static const char agents_list_sql[] =
    "SELECT json_build_object('items', coalesce(json_agg(" SQL_AGENT_JSON(
        "a", "m") " ORDER BY a.id), '[]'), 'next_cursor', NULL)"
                  " FROM memberships m JOIN agents a ON a.id = m.agent_id WHERE "
                  "m.tenant_id = sb_tenant()";

static int agents_list(sb_http_req_t *req, void *data)
{
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, sb_api_op_new(req, 200, agents_list_sql, 0));
}

typedef struct {
    const char *params[4];
    char hash[SB_AUTH_PWHASH_LEN];
} agent_add_t;

static void agent_added(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;

    if (status == 0 && strcmp(PQgetvalue(res[0], 0, 0), "0") == 0) {
        sb_api_respond_invalid(call->req, "password",
                               "field \"password\" is required for a new agent");
        return;
    }
    if (status == SB_EDB && strcmp(sb_api_sqlstate(res, n), "23505") == 0) {
        sb_http_respond_error(call->req, 409, "conflict", "the agent is already a member");
        return;
    }
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, 201, res[1]);
}

static void agent_add_tx(sb_api_call_t *call)
{
    /* $1 email, $2 name, $3 role, $4 password hash (NULL: existing agents only) */
    static const char sql_add[] =
        "WITH found AS (SELECT id FROM agents WHERE lower(email) = lower($1)),"
        " ins AS (INSERT INTO agents (email, name, password_hash)"
        "  SELECT $1::text, coalesce($2::text, $1::text), $4::text"
        "  WHERE NOT EXISTS (SELECT 1 FROM found) AND $4::text IS NOT NULL RETURNING id),"
        " ag AS (SELECT id FROM found UNION ALL SELECT id FROM ins),"
        " mem AS (INSERT INTO memberships (tenant_id, agent_id, role)"
        "  SELECT sb_tenant(), id, $3::text FROM ag)"
        " SELECT count(*) FROM ag";
    static const char sql_out[] = "SELECT " SQL_AGENT_JSON(
        "a", "m") " FROM memberships m JOIN agents a ON a.id = m.agent_id"
                  " WHERE m.tenant_id = sb_tenant() AND lower(a.email) = lower($1)";
    agent_add_t *a = call->data;
    sb_db_stmt_t s[2] = {{sql_add, 4, a->params}, {sql_out, 1, a->params}};
    if (sb_api_tx(call, s, 2, agent_added) != 0)
        sb_api_respond_unavailable(call->req);
}

static void agent_hashed(int ok, const char *out, void *data)
{
    sb_api_call_t *call = data;
    agent_add_t *a = call->data;
    if (!ok) {
        sb_api_respond_unavailable(call->req);
        return;
    }
    snprintf(a->hash, sizeof(a->hash), "%s", out);
    a->params[3] = a->hash;
    agent_add_tx(call);
}

static void agent_add_run(sb_api_call_t *call)
{
    json_t *body = sb_http_req_json(call->req);
    const char *password = json_string_value(json_object_get(body, "password"));

    if (password == NULL) {
        agent_add_tx(call);
        return;
    }
    if (sb_auth_password_hash_async(call->api->loop, password, agent_hashed, call) != 0)
        sb_api_respond_unavailable(call->req);
}

static int agent_add(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"email", SB_FIELD_STRING, 1, 254, NULL},
        {"name", SB_FIELD_STRING, 2, 200, NULL},
        {"role", SB_FIELD_STRING, 1, 20, member_roles},
        {"password", SB_FIELD_STRING, 0, 1024, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *password = json_string_value(json_object_get(body, "password"));
    if (strchr(email, '@') == NULL) {
        sb_api_respond_invalid(req, "email", "field \"email\" must be an email address");
        return 0;
    }
    if (password && strlen(password) < 8) {
        sb_api_respond_invalid(req, "password", "field \"password\" must be at least 8 characters");
        return 0;
    }
    agent_add_t *a = sb_pool_calloc(sb_http_req_pool(req), sizeof(*a));
    a->params[0] = email;
    a->params[1] = json_string_value(json_object_get(body, "name"));
    a->params[2] = json_string_value(json_object_get(body, "role"));
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_ADMIN, agent_add_run,
                        a);
}

static const char agent_update_sql[] =
    "WITH m AS (UPDATE memberships SET role = $2 WHERE tenant_id = sb_tenant()"
    " AND agent_id = $1::bigint RETURNING *)"
    " SELECT " SQL_AGENT_JSON("a", "m") " FROM m JOIN agents a ON a.id = m.agent_id";

static int agent_update(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"role", SB_FIELD_STRING, 1, 20, member_roles},
        {NULL, 0, 0, 0, NULL},
    };
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, sb_http_req_json(req), NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 200, agent_update_sql, 2);
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(sb_http_req_json(req), "role"));
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

/* Removing a member unassigns its tickets first: nothing points at a non-member. */
static const char agent_remove_sql[] =
    "WITH u AS (UPDATE tickets SET assignee_id = NULL, version = version + 1,"
    "  updated_at = now() WHERE tenant_id = sb_tenant() AND assignee_id = $1::bigint),"
    " tm AS (DELETE FROM team_members WHERE tenant_id = sb_tenant() AND agent_id = $1::bigint),"
    " d AS (DELETE FROM memberships WHERE tenant_id = sb_tenant() AND agent_id = $1::bigint"
    "  RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM d)";

static int agent_remove(sb_http_req_t *req, void *data)
{
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 204, agent_remove_sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

/* ======================== teams ======================== */

#define SQL_TEAM_JSON(t)                                                                \
    "json_build_object('id', " t ".id, 'name', " t ".name, 'members', coalesce((SELECT" \
    " json_agg(tm.agent_id ORDER BY tm.agent_id) FROM team_members tm"                  \
    " WHERE tm.tenant_id = " t ".tenant_id AND tm.team_id = " t ".id), '[]'))"

static const char teams_list_sql[] =
    "SELECT json_build_object('items', coalesce(json_agg(" SQL_TEAM_JSON(
        "t") " ORDER BY t.id), '[]'), 'next_cursor', NULL) FROM teams t WHERE t.tenant_id "
             "= sb_tenant()";

static int teams_list(sb_http_req_t *req, void *data)
{
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, sb_api_op_new(req, 200, teams_list_sql, 0));
}

static const char team_create_sql[] =
    "WITH t AS (INSERT INTO teams (tenant_id, name) VALUES (sb_tenant(), $1) RETURNING *)"
    " SELECT json_build_object('id', t.id, 'name', t.name, 'members', '[]'::json) FROM t";

static int team_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 1, 200, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    if (sb_api_check(req, sb_http_req_json(req), NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 201, team_create_sql, 1);
    op->conflict = "a team with this name exists";
    op->params[0] = json_string_value(json_object_get(sb_http_req_json(req), "name"));
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

static const char team_member_add_sql[] =
    "WITH t AS (SELECT id FROM teams WHERE tenant_id = sb_tenant() AND id = $1::bigint),"
    " i AS (INSERT INTO team_members (tenant_id, team_id, agent_id)"
    "  SELECT sb_tenant(), t.id, $2::bigint FROM t ON CONFLICT DO NOTHING)"
    " SELECT EXISTS (SELECT 1 FROM t)";

static int team_member_add(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"agent", SB_FIELD_INT, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, sb_http_req_json(req), NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 204, team_member_add_sql, 2);
    op->bad_ref_field = "agent";
    op->bad_ref_message = "field \"agent\" does not name a member";
    op->params[0] = id;
    snprintf(op->buf[0], sizeof(op->buf[0]), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(sb_http_req_json(req), "agent")));
    op->params[1] = op->buf[0];
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

static const char team_member_remove_sql[] =
    "WITH d AS (DELETE FROM team_members WHERE tenant_id = sb_tenant()"
    " AND team_id = $1::bigint AND agent_id = $2::bigint RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM d)";

static int team_member_remove(sb_http_req_t *req, void *data)
{
    const char *id = sb_api_path_id(req, "id");
    const char *agent = sb_api_path_id(req, "agent");
    if (id == NULL || agent == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 204, team_member_remove_sql, 2);
    op->params[0] = id;
    op->params[1] = agent;
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

/* ======================== API keys ======================== */

static const char api_keys_list_sql[] =
    "SELECT json_build_object('items', coalesce(json_agg(json_build_object('id', k.id,"
    " 'name', k.name, 'role', k.role, 'created_at', k.created_at,"
    " 'revoked_at', k.revoked_at) ORDER BY k.id), '[]'), 'next_cursor', NULL)"
    " FROM api_keys k WHERE k.tenant_id = sb_tenant()";

static int api_keys_list(sb_http_req_t *req, void *data)
{
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, sb_api_op_new(req, 200, api_keys_list_sql, 0));
}

/* The key itself is shown once, in this answer; only its hash is kept. */
static const char api_key_create_sql[] =
    "WITH k AS (INSERT INTO api_keys (tenant_id, name, key_hash, role)"
    " VALUES (sb_tenant(), $1, $3::bytea, $2) RETURNING *)"
    " SELECT json_build_object('id', k.id, 'name', k.name, 'role', k.role,"
    " 'created_at', k.created_at, 'key', $4::text) FROM k";

static int api_key_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 1, 200, NULL},
        {"role", SB_FIELD_STRING, 1, 20, member_roles},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    sb_pool_t *pool = sb_http_req_pool(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 201, api_key_create_sql, 4);
    char *key = sb_pool_alloc(pool, SB_AUTH_TOKEN_LEN + 1);
    char *hash = sb_pool_alloc(pool, SB_AUTH_HASH_HEX_LEN + 1);
    sb_auth_token_new(key, "sbk_");
    sb_auth_token_hash(key, hash);
    op->params[0] = json_string_value(json_object_get(body, "name"));
    op->params[1] = json_string_value(json_object_get(body, "role"));
    op->params[2] = hash;
    op->params[3] = key;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

static const char api_key_revoke_sql[] =
    "WITH k AS (UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
    " WHERE tenant_id = sb_tenant() AND id = $1::bigint RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM k)";

static int api_key_revoke(sb_http_req_t *req, void *data)
{
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 204, api_key_revoke_sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

int sb_api_member_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TENANT "/agents", 0, agents_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/agents", SB_ROUTE_JSON, agent_add, api);
    rc |= sb_router_add(r, "PATCH", TENANT "/agents/{id}", SB_ROUTE_JSON, agent_update, api);
    rc |= sb_router_add(r, "DELETE", TENANT "/agents/{id}", 0, agent_remove, api);
    rc |= sb_router_add(r, "GET", TENANT "/api_keys", 0, api_keys_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/api_keys", SB_ROUTE_JSON, api_key_create, api);
    rc |= sb_router_add(r, "DELETE", TENANT "/api_keys/{id}", 0, api_key_revoke, api);
    rc |= sb_router_add(r, "GET", TENANT "/teams", 0, teams_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/teams", SB_ROUTE_JSON, team_create, api);
    rc |=
        sb_router_add(r, "POST", TENANT "/teams/{id}/members", SB_ROUTE_JSON, team_member_add, api);
    rc |= sb_router_add(r, "DELETE", TENANT "/teams/{id}/members/{agent}", 0, team_member_remove,
                        api);
    return rc ? SB_EINVAL : 0;
}
