/*
 * call.c - what every authenticated API handler goes through: the bearer
 * token, the tenant and the caller's role in it, transactions that run
 * under row-level security, and validation of JSON input.
 */
#include "api.h"
#include "auth.h"
#include "common.h"
#include "log.h"
#include "rules/calendar.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const role_names[] = {"", "viewer", "agent", "supervisor", "admin"};

sb_role_t sb_api_role_parse(const char *s)
{
    for (size_t i = 1; s && i < SB_ARRAY_SIZE(role_names); i++)
        if (strcmp(s, role_names[i]) == 0)
            return (sb_role_t)i;
    return SB_ROLE_NONE;
}

const char *sb_api_role_name(sb_role_t role)
{
    return role_names[role];
}

/* ======================== authentication ======================== */

typedef struct {
    sb_api_call_t *call;
    sb_role_t min_role;
    int want_tenant;
    const char *slug;
} begin_t;

static void call_unauthorized(sb_http_req_t *req)
{
    sb_http_res_header(req, "WWW-Authenticate", "Bearer");
    sb_http_respond_error(req, 401, "unauthorized", "a valid bearer token is required");
}

static void call_auth_done(int status, PGresult *const *res, int n, void *data)
{
    begin_t *b = data;
    sb_api_call_t *call = b->call;
    sb_http_req_t *req = call->req;

    if (status != 0) {
        sb_api_respond_db_error(req, status, res, n);
        return;
    }
    const PGresult *r = res[1];
    if (PQntuples(r) != 1) {
        call_unauthorized(req);
        return;
    }
    snprintf(call->agent_id, sizeof(call->agent_id), "%s", PQgetvalue(r, 0, 0));
    call->agent_name = sb_pool_strdup(sb_http_req_pool(req), PQgetvalue(r, 0, 1));
    call->agent_email = sb_pool_strdup(sb_http_req_pool(req), PQgetvalue(r, 0, 2));
    call->platform_admin = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
    if (b->want_tenant) {
        if (PQgetisnull(r, 0, 4) || PQgetisnull(r, 0, 5)) {
            sb_http_respond_error(req, 404, "not_found", "no such tenant");
            return;
        }
        snprintf(call->tenant_id, sizeof(call->tenant_id), "%s", PQgetvalue(r, 0, 4));
        call->role = sb_api_role_parse(PQgetvalue(r, 0, 5));
        if (call->role < b->min_role) {
            sb_http_respond_error(req, 403, "forbidden", "the %s role may not do this",
                                  sb_api_role_name(call->role));
            return;
        }
    }
    call->next(call);
}

/* An API key acts in its own tenant only, with the role it was given. */
static void call_key_done(int status, PGresult *const *res, int n, void *data)
{
    begin_t *b = data;
    sb_api_call_t *call = b->call;
    const char *slug = b->slug;

    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (PQntuples(r) != 1 || slug == NULL) {
        call_unauthorized(call->req);
        return;
    }
    if (strcmp(PQgetvalue(r, 0, 3), slug) != 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such tenant");
        return;
    }
    snprintf(call->tenant_id, sizeof(call->tenant_id), "%s", PQgetvalue(r, 0, 0));
    snprintf(call->api_key_id, sizeof(call->api_key_id), "%s", PQgetvalue(r, 0, 1));
    call->role = sb_api_role_parse(PQgetvalue(r, 0, 2));
    call->agent_name = "";
    call->agent_email = "";
    if (call->role < b->min_role) {
        sb_http_respond_error(call->req, 403, "forbidden", "the %s role may not do this",
                              sb_api_role_name(call->role));
        return;
    }
    call->next(call);
}

static const char *call_bearer(sb_http_req_t *req)
{
    const char *h = sb_http_req_header(req, "authorization");
    /* Browsers cannot set headers on a WebSocket: the stream takes the
     * token from the query string instead. */
    if (h == NULL && strcmp(sb_http_req_path(req), "/api/v1/stream") == 0)
        return sb_http_req_query(req, "access_token");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h && strlen(h) < 256 ? h : NULL;
}

int sb_api_begin(sb_http_req_t *req, sb_api_t *api, const char *tenant, sb_role_t min_role,
                 sb_api_next_cb next, void *data)
{
    static const char sql_session[] =
        "SELECT set_config('switchboard.agent_id', coalesce("
        " (SELECT s.agent_id::text FROM sessions s JOIN agents a ON a.id = s.agent_id"
        "  WHERE s.token_hash = $1::bytea AND s.expires_at > now() AND a.active), ''), true)";
    static const char sql_agent[] =
        "SELECT a.id, a.name, a.email, a.is_platform_admin, t.id, m.role"
        " FROM agents a LEFT JOIN tenants t ON t.slug = $1"
        " LEFT JOIN memberships m ON m.tenant_id = t.id AND m.agent_id = a.id"
        " WHERE a.id = sb_agent()";
    sb_pool_t *pool = sb_http_req_pool(req);
    sb_api_call_t *call = sb_pool_calloc(pool, sizeof(*call));
    begin_t *b = sb_pool_calloc(pool, sizeof(*b));
    const char *token = call_bearer(req);

    call->req = req;
    call->api = api;
    call->next = next;
    call->data = data;
    if (token == NULL) {
        call_unauthorized(req);
        return 0;
    }
    sb_auth_token_hash(token, call->token_hash);
    b->call = call;
    b->min_role = min_role;
    b->want_tenant = tenant != NULL;
    b->slug = tenant;
    if (strncmp(token, "sbk_", 4) == 0) {
        static const char sql_key[] =
            "SELECT tenant_id, key_id, role, slug FROM sb_api_key_lookup($1::bytea)";
        const char **pk = sb_pool_alloc(pool, sizeof(char *));
        pk[0] = call->token_hash;
        sb_db_stmt_t s = {sql_key, 1, pk};
        return sb_db_query(api->db, &s, 1, call_key_done, b) == 0 ? 0 : SB_EUNAVAILABLE;
    }

    const char **p1 = sb_pool_alloc(pool, sizeof(char *));
    const char **p2 = sb_pool_alloc(pool, sizeof(char *));
    p1[0] = call->token_hash;
    p2[0] = tenant;
    sb_db_stmt_t stmts[2] = {{sql_session, 1, p1}, {sql_agent, 1, p2}};
    return sb_db_query(api->db, stmts, 2, call_auth_done, b) == 0 ? 0 : SB_EUNAVAILABLE;
}

typedef struct {
    sb_db_exec_cb cb;
    sb_api_call_t *call;
} call_tx_t;

static void call_tx_done(int status, PGresult *const *res, int n, void *data)
{
    call_tx_t *tx = data;
    /* The caller sees only its own statements' results. */
    tx->cb(status, res ? res + 1 : NULL, n > 0 ? n - 1 : 0, tx->call);
}

int sb_api_tx(sb_api_call_t *call, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb)
{
    static const char sql_enter[] = "SELECT set_config('switchboard.tenant_id', $1, true),"
                                    " set_config('switchboard.agent_id', $2, true),"
                                    " set_config('switchboard.api_key_id', $3, true)";
    sb_pool_t *pool = sb_http_req_pool(call->req);
    sb_db_stmt_t *all = sb_pool_alloc(pool, sizeof(sb_db_stmt_t) * (size_t)(n + 1));
    const char **p = sb_pool_alloc(pool, 3 * sizeof(char *));
    call_tx_t *tx = sb_pool_alloc(pool, sizeof(*tx));

    p[0] = call->tenant_id;
    p[1] = call->agent_id;
    p[2] = call->api_key_id;
    all[0] = (sb_db_stmt_t){sql_enter, 3, p};
    memcpy(all + 1, stmts, sizeof(sb_db_stmt_t) * (size_t)n);
    tx->cb = cb;
    tx->call = call;
    return sb_db_query(call->api->db, all, n + 1, call_tx_done, tx) == 0 ? 0 : SB_EUNAVAILABLE;
}

const char *sb_api_path_id(sb_http_req_t *req, const char *name)
{
    const char *v = sb_http_req_param(req, name);
    size_t len = v ? strlen(v) : 0;
    if (len == 0 || len > 18)
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)v[i]))
            return NULL;
    return v;
}

int sb_api_query_id(sb_http_req_t *req, const char *name, const char **out)
{
    const char *v = sb_http_req_query(req, name);
    size_t len = v ? strlen(v) : 0;

    *out = v;
    if (v == NULL)
        return 0;
    if (len == 0 || len > 18 || strspn(v, "0123456789") != len || strspn(v, "0") == len) {
        sb_api_respond_invalid(req, name, "parameter \"%s\" must be a positive integer", name);
        return SB_EINVAL;
    }
    return 0;
}

int sb_api_query_date(sb_http_req_t *req, const char *name, const char **out, int ymd[3])
{
    const char *v = sb_http_req_query(req, name);
    int y, m, d;

    *out = v;
    if (v == NULL)
        return 0;
    if (sb_date_parse(v, &y, &m, &d) != 0) {
        sb_api_respond_invalid(req, name, "parameter \"%s\" must be a date (YYYY-MM-DD)", name);
        return SB_EINVAL;
    }
    if (ymd) {
        ymd[0] = y;
        ymd[1] = m;
        ymd[2] = d;
    }
    return 0;
}

void sb_api_respond_unavailable(sb_http_req_t *req)
{
    sb_http_respond_error(req, 503, "unavailable", "the database is unavailable; retry later");
}

/* ======================== operations ======================== */

sb_api_op_t *sb_api_op_new(sb_http_req_t *req, int status, const char *sql, int nparams)
{
    sb_api_op_t *op = sb_pool_calloc(sb_http_req_pool(req), sizeof(*op));
    op->status = status;
    op->sql[0] = sql;
    op->nparams[0] = nparams;
    return op;
}

void sb_api_op_then(sb_api_op_t *op, const char *sql, int nparams)
{
    op->sql[1] = sql;
    op->nparams[1] = nparams;
}

static void call_op_done(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    sb_api_op_t *op = call->data;
    const char *st = sb_api_sqlstate(res, n);

    if (status == SB_EDB && op->conflict && strcmp(st, "23505") == 0) {
        sb_http_respond_error(call->req, 409, "conflict", "%s", op->conflict);
        return;
    }
    if (status == SB_EDB && op->bad_ref_field && strcmp(st, "23503") == 0) {
        sb_api_respond_invalid(call->req, op->bad_ref_field, "%s", op->bad_ref_message);
        return;
    }
    if (status == SB_EDB && op->bad22 && strncmp(st, "22", 2) == 0) {
        sb_api_respond_invalid(call->req, op->bad22, "parameter \"%s\" is not valid", op->bad22);
        return;
    }
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    const PGresult *last = res[n - 1];
    if (op->status != 204) {
        sb_api_respond_row(call->req, op->status, last);
        return;
    }
    if (PQntuples(last) == 0 || strcmp(PQgetvalue(last, 0, 0), "t") != 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such resource");
        return;
    }
    sb_http_respond(call->req, 204, NULL, "", 0);
}

static void call_op_run(sb_api_call_t *call)
{
    sb_api_op_t *op = call->data;
    sb_db_stmt_t s[2] = {{op->sql[0], op->nparams[0], op->params},
                         {op->sql[1], op->nparams[1], op->params}};
    if (sb_api_tx(call, s, op->sql[1] ? 2 : 1, call_op_done) != 0)
        sb_api_respond_unavailable(call->req);
}

int sb_api_op_begin(sb_http_req_t *req, sb_api_t *api, sb_role_t role, sb_api_op_t *op)
{
    return sb_api_begin(req, api, sb_http_req_param(req, "tenant"), role, call_op_run, op);
}

static void call_done_row(int http_status, int status, PGresult *const *res, int n,
                          sb_api_call_t *call)
{
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, http_status, res[n - 1]);
}

void sb_api_done_ok(int status, PGresult *const *res, int n, void *call)
{
    call_done_row(200, status, res, n, call);
}

void sb_api_done_created(int status, PGresult *const *res, int n, void *call)
{
    call_done_row(201, status, res, n, call);
}

void sb_api_respond_row(sb_http_req_t *req, int status, const PGresult *res)
{
    if (res == NULL || PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        sb_http_respond_error(req, 404, "not_found", "no such resource");
        return;
    }
    sb_http_respond(req, status, "application/json", PQgetvalue(res, 0, 0),
                    (size_t)PQgetlength(res, 0, 0));
}

const char *sb_api_sqlstate(PGresult *const *res, int n)
{
    for (int i = 0; res && i < n; i++) {
        if (res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR) {
            const char *st = PQresultErrorField(res[i], PG_DIAG_SQLSTATE);
            return st ? st : "";
        }
    }
    return "";
}

/* ======================== validation ======================== */

void sb_api_respond_invalid(sb_http_req_t *req, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *body = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", "invalid_field", "field", field,
                             "message", msg);
    if (body == NULL)
        body = json_pack("{s:{s:s,s:s}}", "error", "code", "invalid_field", "message", msg);
    sb_http_respond_json(req, 422, body);
}

static int check_string(sb_http_req_t *req, const char *field, json_t *v, const sb_api_field_t *f)
{
    if (!json_is_string(v)) {
        sb_api_respond_invalid(req, field, "field \"%s\" must be a string", field);
        return SB_EINVAL;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (memchr(s, '\0', len) != NULL) {
        sb_api_respond_invalid(req, field, "field \"%s\" must not contain NUL characters", field);
        return SB_EINVAL;
    }
    /* Count characters, not bytes: jansson has validated the UTF-8. */
    size_t chars = 0;
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)s[i] & 0xc0) != 0x80;
    if (f->max && chars > f->max) {
        sb_api_respond_invalid(req, field, "field \"%s\" must be at most %zu characters", field,
                               f->max);
        return SB_EINVAL;
    }
    /* required: 1 = must be present and non-empty, 2 = optional, non-empty if present */
    if (f->required && chars == 0) {
        sb_api_respond_invalid(req, field, "field \"%s\" must not be empty", field);
        return SB_EINVAL;
    }
    if (f->oneof == NULL)
        return 0;
    for (const char *const *o = f->oneof; *o; o++)
        if (strcmp(*o, s) == 0)
            return 0;
    sb_buf_t allowed;
    sb_buf_init(&allowed);
    for (const char *const *o = f->oneof; *o; o++)
        sb_buf_printf(&allowed, "%s%s", allowed.len ? ", " : "", *o);
    sb_api_respond_invalid(req, field, "field \"%s\" must be one of: %s", field, allowed.data);
    sb_buf_free(&allowed);
    return SB_EINVAL;
}

static int check_value(sb_http_req_t *req, const char *field, json_t *v, const sb_api_field_t *f)
{
    switch (f->type) {
    case SB_FIELD_STRING:
        return check_string(req, field, v, f);
    case SB_FIELD_INT:
        if (json_is_integer(v) && json_integer_value(v) > 0)
            return 0;
        sb_api_respond_invalid(req, field, "field \"%s\" must be a positive integer", field);
        return SB_EINVAL;
    case SB_FIELD_ID_OR_NULL:
        if (json_is_null(v) || (json_is_integer(v) && json_integer_value(v) > 0))
            return 0;
        sb_api_respond_invalid(req, field, "field \"%s\" must be a positive integer or null",
                               field);
        return SB_EINVAL;
    case SB_FIELD_BOOL:
        if (json_is_boolean(v))
            return 0;
        sb_api_respond_invalid(req, field, "field \"%s\" must be true or false", field);
        return SB_EINVAL;
    case SB_FIELD_OBJECT:
        if (json_is_object(v))
            return 0;
        sb_api_respond_invalid(req, field, "field \"%s\" must be an object", field);
        return SB_EINVAL;
    case SB_FIELD_STRINGS: {
        if (!json_is_array(v) || (f->max && json_array_size(v) > f->max)) {
            sb_api_respond_invalid(
                req, field, "field \"%s\" must be an array of at most %zu strings", field, f->max);
            return SB_EINVAL;
        }
        size_t i;
        json_t *item;
        sb_api_field_t each = {f->name, SB_FIELD_STRING, 1, 100, NULL};
        json_array_foreach(v, i, item)
        {
            if (check_string(req, field, item, &each) != 0)
                return SB_EINVAL;
        }
        return 0;
    }
    }
    return SB_EINVAL;
}

int sb_api_check(sb_http_req_t *req, json_t *obj, const char *prefix, const sb_api_field_t *fields)
{
    char field[128];
    const char *key;
    json_t *v;

    if (!json_is_object(obj)) {
        sb_api_respond_invalid(req, prefix ? prefix : "", "%s must be a JSON object",
                               prefix ? prefix : "the request body");
        return SB_EINVAL;
    }
    json_object_foreach(obj, key, v)
    {
        const sb_api_field_t *f = fields;
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        snprintf(field, sizeof(field), "%s%s%s", prefix ? prefix : "", prefix ? "." : "", key);
        if (f->name == NULL) {
            sb_api_respond_invalid(req, field, "unknown field \"%s\"", field);
            return SB_EINVAL;
        }
        if (check_value(req, field, v, f) != 0)
            return SB_EINVAL;
    }
    for (const sb_api_field_t *f = fields; f->name; f++) {
        if (f->required == 1 && json_object_get(obj, f->name) == NULL) {
            snprintf(field, sizeof(field), "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
                     f->name);
            sb_api_respond_invalid(req, field, "field \"%s\" is required", field);
            return SB_EINVAL;
        }
    }
    return 0;
}
