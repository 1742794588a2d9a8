/*
 * sessions.c - logging in and out (bearer tokens), who am I, and the
 * tenants: listing mine, creating one (platform administrators).
 * Password checks run on the thread pool; failed logins are throttled per
 * account and per client address, across workers, in the database.
 */
#include "api.h"
#include "auth.h"
#include "common.h"
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_TTL "12 hours"
#define LOGIN_WINDOW "15 minutes"
#define LOGIN_MAX_PER_ACCOUNT "5"
#define LOGIN_MAX_PER_IP "30"

typedef struct {
    sb_http_req_t *req;
    sb_api_t *api;
    const char *email;
    const char *password;
    char account_key[300];
    char ip_key[80];
    char agent_id[24];
    char token[SB_AUTH_TOKEN_LEN + 1];
    char token_hash[SB_AUTH_HASH_HEX_LEN + 1];
} login_t;

/* ======================== log in ======================== */

static void login_created(int status, PGresult *const *res, int n, void *data)
{
    login_t *l = data;

    if (status != 0) {
        sb_api_respond_db_error(l->req, status, res, n);
        return;
    }
    json_t *body = json_loads(PQgetvalue(res[2], 0, 0), 0, NULL);
    json_object_set_new(body, "token", json_string(l->token));
    sb_http_respond_json(l->req, 201, body);
}

static void login_failed_recorded(int status, PGresult *const *res, int n, void *data)
{
    login_t *l = data;

    if (status != 0) {
        sb_api_respond_db_error(l->req, status, res, n);
        return;
    }
    sb_http_respond_error(l->req, 401, "invalid_credentials", "wrong email or password");
}

static void login_verified(int ok, const char *out, void *data)
{
    static const char sql_fail[] =
        "INSERT INTO login_failures AS f (key, window_start, failures) VALUES ($1, now(), 1)"
        " ON CONFLICT (key) DO UPDATE SET"
        " failures = CASE WHEN f.window_start > now() - interval '" LOGIN_WINDOW "'"
        "            THEN f.failures + 1 ELSE 1 END,"
        " window_start = CASE WHEN f.window_start > now() - interval '" LOGIN_WINDOW "'"
        "            THEN f.window_start ELSE now() END";
    static const char sql_clear[] = "DELETE FROM login_failures WHERE key = $1";
    static const char sql_session[] =
        "INSERT INTO sessions (agent_id, token_hash, expires_at, client_ip)"
        " VALUES ($1, $2::bytea, now() + interval '" SESSION_TTL "', $3)";
    static const char sql_me[] =
        "SELECT json_build_object('expires_at', now() + interval '" SESSION_TTL "',"
        " 'agent', json_build_object('id', a.id, 'name', a.name, 'email', a.email,"
        "   'platform_admin', a.is_platform_admin)) FROM agents a WHERE a.id = $1";
    login_t *l = data;
    sb_pool_t *pool = sb_http_req_pool(l->req);
    int rc;

    if (!ok) {
        const char **pa = sb_pool_alloc(pool, sizeof(char *));
        const char **pi = sb_pool_alloc(pool, sizeof(char *));
        pa[0] = l->account_key;
        pi[0] = l->ip_key;
        sb_db_stmt_t s[2] = {{sql_fail, 1, pa}, {sql_fail, 1, pi}};
        rc = sb_db_query(l->api->db, s, 2, login_failed_recorded, l);
    } else {
        sb_auth_token_new(l->token, "sbt_");
        sb_auth_token_hash(l->token, l->token_hash);
        const char **pc = sb_pool_alloc(pool, sizeof(char *));
        const char **ps = sb_pool_alloc(pool, 3 * sizeof(char *));
        const char **pm = sb_pool_alloc(pool, sizeof(char *));
        pc[0] = l->account_key;
        ps[0] = l->agent_id;
        ps[1] = l->token_hash;
        ps[2] = sb_http_req_peer(l->req);
        pm[0] = l->agent_id;
        sb_db_stmt_t s[3] = {{sql_clear, 1, pc}, {sql_session, 3, ps}, {sql_me, 1, pm}};
        rc = sb_db_query(l->api->db, s, 3, login_created, l);
    }
    if (rc != 0)
        sb_http_respond_error(l->req, 503, "unavailable",
                              "the database is unavailable; retry later");
}

static void login_looked_up(int status, PGresult *const *res, int n, void *data)
{
    login_t *l = data;

    if (status != 0) {
        sb_api_respond_db_error(l->req, status, res, n);
        return;
    }
    if (!PQgetisnull(res[0], 0, 0)) {
        sb_http_res_header(l->req, "Retry-After", PQgetvalue(res[0], 0, 0));
        sb_http_respond_error(l->req, 429, "too_many_attempts",
                              "too many failed logins; retry later");
        return;
    }
    const char *hash = NULL;
    if (PQntuples(res[1]) == 1) {
        snprintf(l->agent_id, sizeof(l->agent_id), "%s", PQgetvalue(res[1], 0, 0));
        if (!PQgetisnull(res[1], 0, 1))
            hash = sb_pool_strdup(sb_http_req_pool(l->req), PQgetvalue(res[1], 0, 1));
    }
    /* An unknown account is checked against a dummy hash: same cost, same answer. */
    if (sb_auth_password_verify_async(l->api->loop, hash, l->password, login_verified, l) != 0)
        sb_http_respond_error(l->req, 503, "unavailable", "try again later");
}

static int session_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"email", SB_FIELD_STRING, 1, 254, NULL},
        {"password", SB_FIELD_STRING, 1, 1024, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql_blocked[] =
        "SELECT ceil(extract(epoch FROM max(window_start + interval '" LOGIN_WINDOW
        "' - now())))::int"
        " FROM login_failures WHERE window_start > now() - interval '" LOGIN_WINDOW "'"
        " AND ((key = $1 AND failures >= " LOGIN_MAX_PER_ACCOUNT ")"
        "   OR (key = $2 AND failures >= " LOGIN_MAX_PER_IP "))";
    static const char sql_agent[] =
        "SELECT id, password_hash FROM agents WHERE lower(email) = lower($1) AND active";
    json_t *body = sb_http_req_json(req);
    sb_pool_t *pool = sb_http_req_pool(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    login_t *l = sb_pool_calloc(pool, sizeof(*l));
    l->req = req;
    l->api = data;
    l->email = json_string_value(json_object_get(body, "email"));
    l->password = json_string_value(json_object_get(body, "password"));
    snprintf(l->account_key, sizeof(l->account_key), "account:%s", l->email);
    for (char *p = l->account_key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(l->ip_key, sizeof(l->ip_key), "ip:%s", sb_http_req_peer(req));

    const char **pb = sb_pool_alloc(pool, 2 * sizeof(char *));
    const char **pa = sb_pool_alloc(pool, sizeof(char *));
    pb[0] = l->account_key;
    pb[1] = l->ip_key;
    pa[0] = l->email;
    sb_db_stmt_t s[2] = {{sql_blocked, 2, pb}, {sql_agent, 1, pa}};
    return sb_db_query(l->api->db, s, 2, login_looked_up, l) == 0 ? 0 : SB_EUNAVAILABLE;
}

/* ======================== log out, me ======================== */

static void call_no_content(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_http_respond(call->req, 204, NULL, "", 0);
}

static void session_delete_next(sb_api_call_t *call)
{
    static const char sql[] = "DELETE FROM sessions WHERE token_hash = $1::bytea";
    const char **p = sb_pool_alloc(sb_http_req_pool(call->req), sizeof(char *));
    p[0] = call->token_hash;
    sb_db_stmt_t s = {sql, 1, p};
    if (sb_api_tx(call, &s, 1, call_no_content) != 0)
        sb_api_respond_unavailable(call->req);
}

static int session_delete(sb_http_req_t *req, void *data)
{
    return sb_api_begin(req, data, NULL, SB_ROLE_NONE, session_delete_next, NULL);
}

/* The tenants the agent belongs to (all of them for a platform admin). */
#define SQL_MY_TENANTS                                                                          \
    "coalesce((SELECT json_agg(json_build_object('slug', t.slug, 'name', t.name,"               \
    "   'role', m.role) ORDER BY t.slug)"                                                       \
    " FROM tenants t LEFT JOIN memberships m ON m.tenant_id = t.id AND m.agent_id = sb_agent()" \
    " WHERE m.agent_id IS NOT NULL OR (SELECT is_platform_admin FROM agents WHERE id = "        \
    "sb_agent())"                                                                               \
    "), '[]')"

static void me_next(sb_api_call_t *call)
{
    static const char sql[] =
        "SELECT json_build_object('id', a.id, 'name', a.name, 'email', a.email,"
        " 'platform_admin', a.is_platform_admin, 'tenants', " SQL_MY_TENANTS ")"
        " FROM agents a WHERE a.id = sb_agent()";
    sb_db_stmt_t s = {sql, 0, NULL};
    if (sb_api_tx(call, &s, 1, sb_api_done_ok) != 0)
        sb_api_respond_unavailable(call->req);
}

static int me_get(sb_http_req_t *req, void *data)
{
    return sb_api_begin(req, data, NULL, SB_ROLE_NONE, me_next, NULL);
}

/* ======================== tenants ======================== */

static void tenants_list_next(sb_api_call_t *call)
{
    static const char sql[] =
        "SELECT json_build_object('items', " SQL_MY_TENANTS ", 'next_cursor', NULL)";
    sb_db_stmt_t s = {sql, 0, NULL};
    if (sb_api_tx(call, &s, 1, sb_api_done_ok) != 0)
        sb_api_respond_unavailable(call->req);
}

static int tenants_list(sb_http_req_t *req, void *data)
{
    return sb_api_begin(req, data, NULL, SB_ROLE_NONE, tenants_list_next, NULL);
}

static void tenant_created(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;

    if (status == SB_EDB && strcmp(sb_api_sqlstate(res, n), "23505") == 0) {
        sb_http_respond_error(call->req, 409, "conflict", "a tenant with this slug exists");
        return;
    }
    if (status == SB_EDB && strcmp(sb_api_sqlstate(res, n), "23514") == 0) {
        sb_api_respond_invalid(call->req, "slug",
                               "field \"slug\" must be 1 to 63 lowercase letters, digits or "
                               "hyphens, starting with a letter or digit");
        return;
    }
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, 201, res[n - 1]);
}

static void tenant_create_next(sb_api_call_t *call)
{
    static const char sql_tenant[] =
        "INSERT INTO tenants (slug, name) VALUES ($1, $2)"
        " RETURNING set_config('switchboard.tenant_id', id::text, true)";
    static const char sql_member[] = "INSERT INTO memberships (tenant_id, agent_id, role)"
                                     " VALUES (sb_tenant(), sb_agent(), 'admin')";
    static const char sql_out[] =
        "SELECT json_build_object('slug', slug, 'name', name, 'created_at', created_at)"
        " FROM tenants WHERE id = sb_tenant()";
    json_t *body = sb_http_req_json(call->req);
    const char **p = sb_pool_alloc(sb_http_req_pool(call->req), 2 * sizeof(char *));

    if (!call->platform_admin) {
        sb_http_respond_error(call->req, 403, "forbidden",
                              "only platform administrators create tenants");
        return;
    }
    p[0] = json_string_value(json_object_get(body, "slug"));
    p[1] = json_string_value(json_object_get(body, "name"));
    sb_db_stmt_t s[3] = {{sql_tenant, 2, p}, {sql_member, 0, NULL}, {sql_out, 0, NULL}};
    if (sb_api_tx(call, s, 3, tenant_created) != 0)
        sb_api_respond_unavailable(call->req);
}

static int tenant_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"slug", SB_FIELD_STRING, 1, 63, NULL},
        {"name", SB_FIELD_STRING, 1, 200, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    if (sb_api_check(req, sb_http_req_json(req), NULL, fields) != 0)
        return 0;
    return sb_api_begin(req, data, NULL, SB_ROLE_NONE, tenant_create_next, NULL);
}

int sb_api_session_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "POST", "/api/v1/sessions", SB_ROUTE_JSON, session_create, api);
    rc |= sb_router_add(r, "DELETE", "/api/v1/sessions/current", 0, session_delete, api);
    rc |= sb_router_add(r, "GET", "/api/v1/me", 0, me_get, api);
    rc |= sb_router_add(r, "GET", "/api/v1/tenants", 0, tenants_list, api);
    rc |= sb_router_add(r, "POST", "/api/v1/tenants", SB_ROUTE_JSON, tenant_create, api);
    return rc ? SB_EINVAL : 0;
}
