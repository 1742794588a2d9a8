/*
 * tickets.c - the ticket routes of a tenant: create (with the first
 * message and the customer if new), list with filters, full-text search
 * and keyset pagination, detail, update with validated status transitions
 * and optimistic locking, replies and notes, and the audit trail.
 * Each request is one transaction; the JSON documents are built by the
 * database (sb_ticket_json and friends in server/sql).
 */
#include "api.h"
#include "plugin/host.h"
#include "common.h"
#include "log.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICKETS "/api/v1/tenants/{tenant}/tickets"

static const char *const ticket_statuses[] = {"new",    "open",   "pending", "on_hold",
                                              "solved", "closed", NULL};
static const char *const ticket_priorities[] = {"low", "normal", "high", "urgent", NULL};
static const char *const identity_kinds[] = {"email",    "phone",     "chat",      "telegram",
                                             "whatsapp", "messenger", "instagram", "sms",
                                             "other",    NULL};

/* The ticket with its messages, for ticket id switchboard.ticket_id or number $1. */
#define SQL_TICKET_DETAIL(where)                                                  \
    "SELECT sb_ticket_json(t) || jsonb_build_object('messages', coalesce((SELECT" \
    " jsonb_agg(sb_message_json(m) ORDER BY m.id) FROM messages m"                \
    " WHERE m.tenant_id = t.tenant_id AND m.ticket_id = t.id), '[]')), t.version" \
    " FROM tickets t WHERE t.tenant_id = sb_tenant() AND " where

/* The ticket a previous statement of the batch recorded in switchboard.ticket_id. */
static const char sql_ticket_by_setting[] =
    SQL_TICKET_DETAIL("t.id = (SELECT current_setting('switchboard.ticket_id')::bigint)");

static void ticket_fail(sb_api_call_t *call, int status, PGresult *const *res, int n)
{
    sb_api_respond_db_error(call->req, status, res, n);
}

/* Responds the detail document of res (one row: json, version) with its ETag. */
static void ticket_respond_detail(sb_api_call_t *call, int status, const PGresult *res)
{
    if (res && PQntuples(res) == 1) {
        char etag[40];
        snprintf(etag, sizeof(etag), "\"%s\"", PQgetvalue(res, 0, 1));
        sb_http_res_header(call->req, "ETag", etag);
    }
    sb_api_respond_row(call->req, status, res);
}

/* A JSON value as text in the request's pool, or NULL when absent. */
static const char *ticket_json_param(sb_pool_t *pool, json_t *v)
{
    if (v == NULL)
        return NULL;
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *copy = sb_pool_strdup(pool, text ? text : "null");
    free(text);
    return copy;
}

/* ======================== create ======================== */

typedef struct {
    const char *params[9];
} create_t;

static void ticket_create_run(sb_api_call_t *call);

static void ticket_created(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;

    /* Two first tickets of one new customer raced for the identity: retry,
     * and the second finds the customer the first created. */
    if (status == SB_EDB && strcmp(sb_api_sqlstate(res, n), "23505") == 0 && ++call->attempts < 3) {
        ticket_create_run(call);
        return;
    }
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    ticket_respond_detail(call, 201, res[1]);
}

static void ticket_create_run(sb_api_call_t *call)
{
    static const char sql_create[] =
        "WITH ident AS (SELECT customer_id FROM customer_identities"
        "  WHERE tenant_id = sb_tenant() AND kind = $1 AND value = $2),"
        " new_c AS (INSERT INTO customers (tenant_id, name)"
        "  SELECT sb_tenant(), coalesce($3, '') WHERE NOT EXISTS (SELECT 1 FROM ident) RETURNING "
        "id),"
        " new_i AS (INSERT INTO customer_identities (tenant_id, customer_id, kind, value)"
        "  SELECT sb_tenant(), id, $1, $2 FROM new_c RETURNING customer_id),"
        " num AS (INSERT INTO ticket_counters (tenant_id, last_number) VALUES (sb_tenant(), 1)"
        "  ON CONFLICT (tenant_id) DO UPDATE SET last_number = ticket_counters.last_number + 1"
        "  RETURNING last_number),"
        " t AS (INSERT INTO tickets (tenant_id, number, subject, priority, channel, customer_id,"
        "   tags, custom_fields)"
        "  SELECT sb_tenant(), num.last_number, $4, $5, 'api',"
        "   coalesce((SELECT customer_id FROM ident), (SELECT customer_id FROM new_i)),"
        "   ARRAY(SELECT DISTINCT jsonb_array_elements_text($6::jsonb) ORDER BY 1), $7::jsonb"
        "  FROM num RETURNING *),"
        " m AS (INSERT INTO messages (tenant_id, ticket_id, direction, author_customer_id,"
        "   body_text, body_html, channel)"
        "  SELECT tenant_id, id, 'inbound', customer_id, $8, $9, 'api' FROM t RETURNING id),"
        " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
        "  SELECT tenant_id, id, sb_actor_kind(), sb_actor_id(), 'ticket.created',"
        "   jsonb_build_object('number', number, 'subject', subject, 'priority', priority,"
        "    'tags', tags) FROM t)"
        " SELECT set_config('switchboard.ticket_id', id::text, true),"
        "  sb_notify_event('ticket.created', number, NULL) FROM t";
    create_t *c = call->data;
    sb_db_stmt_t s[2] = {{sql_create, 9, c->params}, {sql_ticket_by_setting, 0, NULL}};

    if (sb_api_tx(call, s, 2, ticket_created) != 0)
        sb_api_respond_unavailable(call->req);
}

static int ticket_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t identity_fields[] = {
        {"kind", SB_FIELD_STRING, 1, 20, identity_kinds},
        {"value", SB_FIELD_STRING, 1, 320, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const sb_api_field_t customer_fields[] = {
        {"email", SB_FIELD_STRING, 0, 254, NULL},
        {"phone", SB_FIELD_STRING, 0, 50, NULL},
        {"name", SB_FIELD_STRING, 0, 200, NULL},
        {"identity", SB_FIELD_OBJECT, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const sb_api_field_t message_fields[] = {
        {"text", SB_FIELD_STRING, 1, 100000, NULL},
        {"html", SB_FIELD_STRING, 0, 500000, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const sb_api_field_t fields[] = {
        {"subject", SB_FIELD_STRING, 1, 500, NULL},
        {"customer", SB_FIELD_OBJECT, 1, 0, NULL},
        {"message", SB_FIELD_OBJECT, 1, 0, NULL},
        {"priority", SB_FIELD_STRING, 0, 10, ticket_priorities},
        {"tags", SB_FIELD_STRINGS, 0, 50, NULL},
        {"custom_fields", SB_FIELD_OBJECT, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    sb_pool_t *pool = sb_http_req_pool(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    json_t *cust = json_object_get(body, "customer");
    json_t *msg = json_object_get(body, "message");
    if (sb_api_check(req, cust, "customer", customer_fields) != 0 ||
        sb_api_check(req, msg, "message", message_fields) != 0)
        return 0;
    json_t *ident = json_object_get(cust, "identity");
    if (ident && sb_api_check(req, ident, "customer.identity", identity_fields) != 0)
        return 0;

    create_t *c = sb_pool_calloc(pool, sizeof(*c));
    const char *email = json_string_value(json_object_get(cust, "email"));
    const char *phone = json_string_value(json_object_get(cust, "phone"));
    if (email && *email) {
        if (strchr(email, '@') == NULL) {
            sb_api_respond_invalid(req, "customer.email",
                                   "field \"customer.email\" must be an email address");
            return 0;
        }
        c->params[0] = "email";
        c->params[1] = email;
    } else if (phone && *phone) {
        c->params[0] = "phone";
        c->params[1] = phone;
    } else if (ident) {
        c->params[0] = json_string_value(json_object_get(ident, "kind"));
        c->params[1] = json_string_value(json_object_get(ident, "value"));
    } else {
        sb_api_respond_invalid(req, "customer",
                               "field \"customer\" needs an email, a phone or an identity");
        return 0;
    }
    c->params[2] = json_string_value(json_object_get(cust, "name"));
    c->params[3] = json_string_value(json_object_get(body, "subject"));
    c->params[4] = json_string_value(json_object_get(body, "priority"));
    if (c->params[4] == NULL)
        c->params[4] = "normal";
    c->params[5] = ticket_json_param(pool, json_object_get(body, "tags"));
    if (c->params[5] == NULL)
        c->params[5] = "[]";
    c->params[6] = ticket_json_param(pool, json_object_get(body, "custom_fields"));
    if (c->params[6] == NULL)
        c->params[6] = "{}";
    c->params[7] = json_string_value(json_object_get(msg, "text"));
    c->params[8] = json_string_value(json_object_get(msg, "html"));

    const char *tenant = sb_http_req_param(req, "tenant");
    int rc = sb_api_begin(req, data, tenant, SB_ROLE_AGENT, ticket_create_run, c);
    return rc;
}

/* ======================== list ======================== */

/* One SQL text per sort order, so each has its own keyset and index. */
/*
 * One SQL text per sort order, so each has its own keyset and index.  The
 * page (limit + 1 rows, to know whether there is a next one) is cut first;
 * the documents are built for those rows only.
 */
#define SQL_LIST(key, cast, dir, cmp)                                                            \
    "SELECT json_build_object("                                                                  \
    " 'items', coalesce(json_agg(sb_ticket_json(p.t) ORDER BY p.rn) FILTER (WHERE p.rn <= $10)," \
    "  '[]'),"                                                                                   \
    " 'next_cursor', max(CASE WHEN p.rn = $10 AND p.n > $10 THEN sb_cursor_encode(p.k, p.id) "   \
    "END))"                                                                                      \
    " FROM (SELECT x.t, x.k, x.id, count(*) OVER () AS n,"                                       \
    "   row_number() OVER (ORDER BY x.kv " dir ", x.id " dir ") AS rn"                           \
    "  FROM (SELECT t, t." key " AS kv, t." key "::text AS k, t.id"                              \
    "   FROM tickets t WHERE t.tenant_id = sb_tenant()"                                          \
    "   AND ($1::text IS NULL OR t.status = $1)"                                                 \
    "   AND ($2::text IS NULL OR t.priority = $2)"                                               \
    "   AND ($3::text IS NULL OR ($3 = 'none' AND t.assignee_id IS NULL)"                        \
    "        OR ($3 = 'me' AND t.assignee_id = sb_agent())"                                      \
    "        OR ($3 ~ '^[0-9]{1,18}$' AND t.assignee_id = $3::bigint))"                          \
    "   AND ($4::bigint IS NULL OR t.team_id = $4)"                                              \
    "   AND ($5::bigint IS NULL OR t.customer_id = $5)"                                          \
    "   AND ($6::text IS NULL OR $6 = ANY (t.tags))"                                             \
    "   AND ($7::text IS NULL OR to_tsvector('simple', t.subject) @@ plainto_tsquery('simple', " \
    "$7)"                                                                                        \
    "        OR EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = t.tenant_id"                \
    "          AND m.ticket_id = t.id"                                                           \
    "          AND to_tsvector('simple', m.body_text) @@ plainto_tsquery('simple', $7)))"        \
    "   AND ($8::text IS NULL OR (t." key ", t.id) " cmp " (sb_cursor_part($8, 1)::" cast ","    \
    "        sb_cursor_part($8, 2)::bigint))"                                                    \
    "   ORDER BY t." key " " dir ", t.id " dir " LIMIT $9) x) p"

static const struct {
    const char *name;
    const char *sql;
} ticket_sorts[] = {
    {"-updated_at", SQL_LIST("updated_at", "timestamptz", "DESC", "<")},
    {"updated_at", SQL_LIST("updated_at", "timestamptz", "ASC", ">")},
    {"-created_at", SQL_LIST("created_at", "timestamptz", "DESC", "<")},
    {"created_at", SQL_LIST("created_at", "timestamptz", "ASC", ">")},
    {"-number", SQL_LIST("number", "bigint", "DESC", "<")},
    {"number", SQL_LIST("number", "bigint", "ASC", ">")},
};

typedef struct {
    const char *sql;
    const char *params[10];
    char limit[24], limit1[24];
} list_t;

static void tickets_listed(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    const char *st = sb_api_sqlstate(res, n);

    /* Class 22 here can only come from decoding a malformed cursor. */
    if (status == SB_EDB && strncmp(st, "22", 2) == 0) {
        sb_api_respond_invalid(call->req, "cursor", "parameter \"cursor\" is not a valid cursor");
        return;
    }
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, 200, res[0]);
}

static void tickets_list_run(sb_api_call_t *call)
{
    list_t *l = call->data;
    sb_db_stmt_t s = {l->sql, 10, l->params};
    if (sb_api_tx(call, &s, 1, tickets_listed) != 0)
        sb_api_respond_unavailable(call->req);
}

/* A query parameter that must be a positive integer; 422 otherwise. */
static int list_id_param(sb_http_req_t *req, const char *name, const char **out)
{
    const char *v = sb_http_req_query(req, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    size_t len = strlen(v);
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)v[i]))
            len = 0;
    if (len == 0 || len > 18) {
        sb_api_respond_invalid(req, name, "parameter \"%s\" must be a positive integer", name);
        return SB_EINVAL;
    }
    *out = v;
    return 0;
}

static int list_enum_param(sb_http_req_t *req, const char *name, const char *const *oneof,
                           const char **out)
{
    const char *v = sb_http_req_query(req, name);
    *out = v;
    if (v == NULL)
        return 0;
    for (const char *const *o = oneof; *o; o++)
        if (strcmp(*o, v) == 0)
            return 0;
    sb_api_respond_invalid(req, name, "parameter \"%s\" has an unknown value", name);
    return SB_EINVAL;
}

static int tickets_list(sb_http_req_t *req, void *data)
{
    list_t *l = sb_pool_calloc(sb_http_req_pool(req), sizeof(*l));
    const char *sort = sb_http_req_query(req, "sort");
    const char *limit = sb_http_req_query(req, "limit");
    const char *assignee = sb_http_req_query(req, "assignee");
    long lim = 25;

    l->sql = ticket_sorts[0].sql;
    if (sort) {
        l->sql = NULL;
        for (size_t i = 0; i < SB_ARRAY_SIZE(ticket_sorts); i++)
            if (strcmp(ticket_sorts[i].name, sort) == 0)
                l->sql = ticket_sorts[i].sql;
        if (l->sql == NULL) {
            sb_api_respond_invalid(req, "sort",
                                   "parameter \"sort\" must be one of [-]updated_at, "
                                   "[-]created_at, [-]number");
            return 0;
        }
    }
    if (limit) {
        char *end;
        lim = strtol(limit, &end, 10);
        if (*limit == '\0' || *end != '\0' || lim < 1 || lim > 100) {
            sb_api_respond_invalid(req, "limit", "parameter \"limit\" must be from 1 to 100");
            return 0;
        }
    }
    if (list_enum_param(req, "status", ticket_statuses, &l->params[0]) ||
        list_enum_param(req, "priority", ticket_priorities, &l->params[1]) ||
        list_id_param(req, "team", &l->params[3]) || list_id_param(req, "customer", &l->params[4]))
        return 0;
    if (assignee && strcmp(assignee, "me") != 0 && strcmp(assignee, "none") != 0 &&
        list_id_param(req, "assignee", &l->params[2]))
        return 0;
    l->params[2] = assignee;
    l->params[5] = sb_http_req_query(req, "tag");
    l->params[6] = sb_http_req_query(req, "q");
    l->params[7] = sb_http_req_query(req, "cursor");
    for (int i = 5; i <= 7; i++) {
        if (l->params[i] && strlen(l->params[i]) > 500) {
            sb_api_respond_invalid(req,
                                   i == 5   ? "tag"
                                   : i == 6 ? "q"
                                            : "cursor",
                                   "parameter is longer than 500 characters");
            return 0;
        }
    }
    if (l->params[6] && l->params[6][0] == '\0')
        l->params[6] = NULL;
    snprintf(l->limit1, sizeof(l->limit1), "%ld", lim + 1);
    snprintf(l->limit, sizeof(l->limit), "%ld", lim);
    l->params[8] = l->limit1;
    l->params[9] = l->limit;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_VIEWER,
                        tickets_list_run, l);
}

/* ======================== detail ======================== */

static void ticket_got(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    ticket_respond_detail(call, 200, res[0]);
}

static void ticket_get_run(sb_api_call_t *call)
{
    static const char sql[] = SQL_TICKET_DETAIL("t.number = $1::bigint");
    const char **p = call->data;
    sb_db_stmt_t s = {sql, 1, p};
    if (sb_api_tx(call, &s, 1, ticket_got) != 0)
        sb_api_respond_unavailable(call->req);
}

static int ticket_get(sb_http_req_t *req, void *data)
{
    const char *number = sb_api_path_id(req, "number");
    if (number == NULL)
        return SB_ENOENT;
    const char **p = sb_pool_alloc(sb_http_req_pool(req), sizeof(char *));
    p[0] = number;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_VIEWER, ticket_get_run,
                        p);
}

/* ======================== update ======================== */

typedef struct {
    const char *params[12]; /* $1..$12 of the update below */
    char version[24];
    char assignee[24];
    char team[24];
} patch_t;

static void ticket_patched(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    patch_t *p = call->data;
    const char *st = sb_api_sqlstate(res, n);

    if (status == SB_EDB && strcmp(st, "23503") == 0) {
        sb_api_respond_invalid(
            call->req, strcmp(p->params[4], "true") == 0 ? "assignee" : "team",
            "the assignee must be a member of the tenant and the team must exist");
        return;
    }
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (PQntuples(r) == 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such resource");
        return;
    }
    if (!PQgetisnull(r, 0, 0)) {
        char etag[40];
        snprintf(etag, sizeof(etag), "\"%s\"", PQgetvalue(r, 0, 1));
        sb_http_res_header(call->req, "ETag", etag);
        sb_http_respond(call->req, 200, "application/json", PQgetvalue(r, 0, 0),
                        (size_t)PQgetlength(r, 0, 0));
        return;
    }
    /* Nothing was updated: say why, most specific first. */
    const char *old_version = PQgetvalue(r, 0, 2);
    const char *old_status = PQgetvalue(r, 0, 3);
    if (p->params[1] && strcmp(p->params[1], old_version) != 0) {
        sb_http_respond_error(call->req, 409, "conflict",
                              "the ticket has changed (version %s); reload it and retry",
                              old_version);
        return;
    }
    if (p->params[2] && strcmp(PQgetvalue(r, 0, 4), "t") != 0) {
        sb_api_respond_invalid(call->req, "status", "a %s ticket cannot become %s", old_status,
                               p->params[2]);
        return;
    }
    sb_http_respond_error(call->req, 403, "forbidden",
                          "only a supervisor may reassign a ticket assigned to someone else");
}

static void ticket_patch_run(sb_api_call_t *call)
{
    /* $1 number, $2 expected version, $3 status, $4 priority, $5 assignee set,
     * $6 assignee, $7 team set, $8 team, $9 tags, $10 subject, $11 custom fields,
     * $12 may reassign anyone. */
    static const char sql[] =
        "WITH old AS (SELECT * FROM tickets WHERE tenant_id = sb_tenant() AND number = $1::bigint"
        "  FOR UPDATE),"
        " upd AS (UPDATE tickets t SET"
        "   status = coalesce($3, t.status),"
        "   priority = coalesce($4, t.priority),"
        "   assignee_id = CASE WHEN $5::boolean THEN $6::bigint ELSE t.assignee_id END,"
        "   team_id = CASE WHEN $7::boolean THEN $8::bigint ELSE t.team_id END,"
        "   tags = CASE WHEN $9::jsonb IS NULL THEN t.tags"
        "          ELSE ARRAY(SELECT DISTINCT jsonb_array_elements_text($9::jsonb) ORDER BY 1) END,"
        "   subject = coalesce($10, t.subject),"
        "   custom_fields = CASE WHEN $11::jsonb IS NULL THEN t.custom_fields"
        "          ELSE t.custom_fields || $11::jsonb END,"
        "   solved_at = CASE WHEN $3 = 'solved' AND t.status <> 'solved' THEN now()"
        "          WHEN $3 IS NOT NULL AND $3 NOT IN ('solved', 'closed') THEN NULL"
        "          ELSE t.solved_at END,"
        "   version = t.version + 1, updated_at = now()"
        "  FROM old WHERE t.tenant_id = old.tenant_id AND t.id = old.id"
        "   AND ($2::integer IS NULL OR old.version = $2::integer)"
        "   AND sb_status_transition_ok(old.status, coalesce($3, old.status))"
        "   AND (NOT $5::boolean OR $12::boolean OR old.assignee_id IS NULL"
        "        OR old.assignee_id = sb_agent())"
        "   AND (NOT $5::boolean OR $12::boolean OR $6::bigint IS NULL OR $6::bigint = sb_agent())"
        "  RETURNING t.*),"
        " ev AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, before, "
        "after)"
        "  SELECT upd.tenant_id, upd.id, sb_actor_kind(), sb_actor_id(), 'ticket.updated',"
        "   jsonb_build_object('status', old.status, 'priority', old.priority,"
        "    'assignee_id', old.assignee_id, 'team_id', old.team_id, 'tags', old.tags,"
        "    'subject', old.subject, 'version', old.version),"
        "   jsonb_build_object('status', upd.status, 'priority', upd.priority,"
        "    'assignee_id', upd.assignee_id, 'team_id', upd.team_id, 'tags', upd.tags,"
        "    'subject', upd.subject, 'version', upd.version)"
        "  FROM upd, old)"
        " SELECT (SELECT sb_ticket_json(upd) FROM upd"
        "   WHERE sb_notify_event('ticket.updated', upd.number, NULL)),"
        "  (SELECT version FROM upd),"
        "  old.version, old.status, sb_status_transition_ok(old.status, coalesce($3, old.status))"
        " FROM old";
    patch_t *p = call->data;
    p->params[11] = call->role >= SB_ROLE_SUPERVISOR ? "true" : "false";
    sb_db_stmt_t s = {sql, 12, p->params};
    if (sb_api_tx(call, &s, 1, ticket_patched) != 0)
        sb_api_respond_unavailable(call->req);
}

/* Parses If-Match ("3", "\"3\"" or W/"3"); NULL when absent, "" when malformed. */
static const char *patch_if_match(sb_http_req_t *req, patch_t *p)
{
    const char *h = sb_http_req_header(req, "if-match");
    size_t k = 0;
    if (h == NULL)
        return NULL;
    if (strncmp(h, "W/", 2) == 0)
        h += 2;
    for (; *h; h++) {
        if (isdigit((unsigned char)*h) && k < 9)
            p->version[k++] = *h;
        else if (*h != '"' && *h != ' ')
            return "";
    }
    p->version[k] = '\0';
    return p->version;
}

static int ticket_patch(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"status", SB_FIELD_STRING, 0, 10, ticket_statuses},
        {"priority", SB_FIELD_STRING, 0, 10, ticket_priorities},
        {"assignee", SB_FIELD_ID_OR_NULL, 0, 0, NULL},
        {"team", SB_FIELD_ID_OR_NULL, 0, 0, NULL},
        {"tags", SB_FIELD_STRINGS, 0, 50, NULL},
        {"subject", SB_FIELD_STRING, 2, 500, NULL},
        {"custom_fields", SB_FIELD_OBJECT, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    sb_pool_t *pool = sb_http_req_pool(req);
    const char *number = sb_api_path_id(req, "number");

    if (number == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    patch_t *p = sb_pool_calloc(pool, sizeof(*p));
    p->params[0] = number;
    p->params[1] = patch_if_match(req, p);
    if (p->params[1] && p->params[1][0] == '\0') {
        sb_http_respond_error(req, 400, "bad_request", "If-Match must be a ticket version");
        return 0;
    }
    p->params[2] = json_string_value(json_object_get(body, "status"));
    p->params[3] = json_string_value(json_object_get(body, "priority"));
    json_t *a = json_object_get(body, "assignee");
    json_t *t = json_object_get(body, "team");
    p->params[4] = a ? "true" : "false";
    if (json_is_integer(a)) {
        snprintf(p->assignee, sizeof(p->assignee), "%" JSON_INTEGER_FORMAT, json_integer_value(a));
        p->params[5] = p->assignee;
    }
    p->params[6] = t ? "true" : "false";
    if (json_is_integer(t)) {
        snprintf(p->team, sizeof(p->team), "%" JSON_INTEGER_FORMAT, json_integer_value(t));
        p->params[7] = p->team;
    }
    p->params[8] = ticket_json_param(pool, json_object_get(body, "tags"));
    p->params[9] = json_string_value(json_object_get(body, "subject"));
    p->params[10] = ticket_json_param(pool, json_object_get(body, "custom_fields"));
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_AGENT,
                        ticket_patch_run, p);
}

/* ======================== messages, events, merge ======================== */

typedef struct {
    const char *params[5];
} msg_t;

static void call_typing_done(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    if (PQgetisnull(res[0], 0, 0)) {
        sb_http_respond_error(call->req, 404, "not_found", "no such resource");
        return;
    }
    sb_http_respond(call->req, 204, NULL, "", 0);
}

static void message_add_run(sb_api_call_t *call)
{
    /* $1 number, $2 direction, $3 text, $4 html */
    static const char sql[] =
        "WITH t AS (SELECT * FROM tickets WHERE tenant_id = sb_tenant() AND number = $1::bigint"
        "  FOR UPDATE),"
        " m AS (INSERT INTO messages (tenant_id, ticket_id, direction, author_agent_id, body_text,"
        "   body_html, channel, delivery_status)"
        "  SELECT t.tenant_id, t.id, $2, sb_agent(), $3, $4, t.channel,"
        "   CASE WHEN $2 = 'outbound' AND t.channel <> 'api' THEN 'pending' END"
        "  FROM t RETURNING *),"
        " u AS (UPDATE tickets x SET updated_at = now(), version = x.version + 1,"
        "   first_response_at = CASE WHEN $2 = 'outbound' THEN coalesce(x.first_response_at, now())"
        "                       ELSE x.first_response_at END,"
        "   status = CASE WHEN $2 = 'outbound' AND x.status = 'new' THEN 'open' ELSE x.status END"
        "  FROM t WHERE x.tenant_id = t.tenant_id AND x.id = t.id),"
        " ob AS (INSERT INTO outbox (tenant_id, message_id, channel)"
        "  SELECT m.tenant_id, m.id, m.channel FROM m"
        "  WHERE m.direction = 'outbound' AND m.channel <> 'api' RETURNING 1),"
        " nt AS (SELECT pg_notify('switchboard_outbox', '') FROM ob LIMIT 1),"
        " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
        "  SELECT m.tenant_id, m.ticket_id, sb_actor_kind(), sb_actor_id(), 'message.added',"
        "   jsonb_build_object('message_id', m.id, 'direction', m.direction) FROM m)"
        " SELECT sb_message_json(m) FROM m, t WHERE (SELECT count(*) FROM nt) >= 0"
        "  AND sb_notify_event('message.created', t.number, m.id, jsonb_build_object("
        "   'channel', m.channel, 'direction', m.direction, 'thread_key', t.thread_key))";
    msg_t *m = call->data;
    sb_db_stmt_t s = {sql, 4, m->params};
    if (sb_api_tx(call, &s, 1, sb_api_done_created) != 0)
        sb_api_respond_unavailable(call->req);
}

static int message_add(sb_http_req_t *req, void *data)
{
    static const char *const kinds[] = {"reply", "note", NULL};
    static const sb_api_field_t fields[] = {
        {"kind", SB_FIELD_STRING, 1, 10, kinds},
        {"text", SB_FIELD_STRING, 1, 100000, NULL},
        {"html", SB_FIELD_STRING, 0, 500000, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *number = sb_api_path_id(req, "number");

    if (number == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    msg_t *m = sb_pool_calloc(sb_http_req_pool(req), sizeof(*m));
    m->params[0] = number;
    m->params[1] = strcmp(json_string_value(json_object_get(body, "kind")), "reply") == 0
                       ? "outbound"
                       : "note";
    m->params[2] = json_string_value(json_object_get(body, "text"));
    m->params[3] = json_string_value(json_object_get(body, "html"));
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_AGENT, message_add_run,
                        m);
}

static void events_list_run(sb_api_call_t *call)
{
    static const char sql[] =
        "SELECT CASE WHEN t.id IS NOT NULL THEN json_build_object('items', coalesce((SELECT"
        "  json_agg(json_build_object('id', e.id, 'action', e.action,"
        "   'actor', json_build_object('kind', e.actor_kind, 'id', e.actor_id),"
        "   'before', e.before, 'after', e.after, 'created_at', e.created_at) ORDER BY e.id)"
        "  FROM events e WHERE e.tenant_id = t.tenant_id AND e.ticket_id = t.id), '[]'),"
        "  'next_cursor', NULL) END"
        " FROM (SELECT 1) one LEFT JOIN tickets t"
        "  ON t.tenant_id = sb_tenant() AND t.number = $1::bigint";
    sb_db_stmt_t s = {sql, 1, call->data};
    if (sb_api_tx(call, &s, 1, sb_api_done_ok) != 0)
        sb_api_respond_unavailable(call->req);
}

static int events_list(sb_http_req_t *req, void *data)
{
    const char *number = sb_api_path_id(req, "number");
    if (number == NULL)
        return SB_ENOENT;
    const char **p = sb_pool_alloc(sb_http_req_pool(req), sizeof(char *));
    p[0] = number;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_VIEWER,
                        events_list_run, p);
}

typedef struct {
    const char *params[2];
    char into[24];
} merge_t;

static void ticket_merged(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such ticket");
        return;
    }
    ticket_respond_detail(call, 200, res[1]);
}

static void ticket_merge_run(sb_api_call_t *call)
{
    /* Both tickets are locked in number order, so two opposite merges
     * cannot deadlock. */
    static const char sql_merge[] =
        "WITH locked AS (SELECT id, number FROM tickets WHERE tenant_id = sb_tenant()"
        "  AND number IN ($1::bigint, $2::bigint) AND merged_into IS NULL"
        "  ORDER BY number FOR UPDATE),"
        " src AS (SELECT id FROM locked WHERE number = $1::bigint),"
        " dst AS (SELECT id FROM locked WHERE number = $2::bigint),"
        " mv AS (UPDATE messages m SET ticket_id = (SELECT id FROM dst)"
        "  WHERE m.tenant_id = sb_tenant() AND m.ticket_id = (SELECT id FROM src)"
        "   AND EXISTS (SELECT 1 FROM dst)),"
        " s AS (UPDATE tickets t SET status = 'closed', merged_into = (SELECT id FROM dst),"
        "   version = t.version + 1, updated_at = now()"
        "  WHERE t.tenant_id = sb_tenant() AND t.id = (SELECT id FROM src)"
        "   AND EXISTS (SELECT 1 FROM dst) RETURNING t.id),"
        " d AS (UPDATE tickets t SET version = t.version + 1, updated_at = now()"
        "  WHERE t.tenant_id = sb_tenant() AND t.id = (SELECT id FROM dst)"
        "   AND EXISTS (SELECT 1 FROM s) RETURNING t.id),"
        " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), x.id, sb_actor_kind(), sb_actor_id(), x.action,"
        "   jsonb_build_object('from', $1::bigint, 'into', $2::bigint)"
        "  FROM (SELECT id, 'ticket.merged_away' AS action FROM s"
        "        UNION ALL SELECT id, 'ticket.merged_into' FROM d) x)"
        " SELECT EXISTS (SELECT 1 FROM s) AND $1::bigint <> $2::bigint,"
        "  set_config('switchboard.ticket_id', coalesce((SELECT id FROM d)::text, '0'), true)";
    merge_t *m = call->data;
    sb_db_stmt_t s[2] = {{sql_merge, 2, m->params}, {sql_ticket_by_setting, 0, NULL}};
    if (sb_api_tx(call, s, 2, ticket_merged) != 0)
        sb_api_respond_unavailable(call->req);
}

static int ticket_merge(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"into", SB_FIELD_INT, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *number = sb_api_path_id(req, "number");

    if (number == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    merge_t *m = sb_pool_calloc(sb_http_req_pool(req), sizeof(*m));
    snprintf(m->into, sizeof(m->into), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(body, "into")));
    if (strcmp(m->into, number) == 0) {
        sb_api_respond_invalid(req, "into", "a ticket cannot be merged into itself");
        return 0;
    }
    m->params[0] = number;
    m->params[1] = m->into;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_AGENT,
                        ticket_merge_run, m);
}

/* GET .../tickets/{number}/attachments/{id}: the file's bytes, always as a
 * download (never rendered by the browser, whatever the sender claimed). */
static void attachment_respond(sb_http_req_t *req, const char *name, const char *type,
                               const void *bytes, size_t len)
{
    char disposition[320];
    /* Quotes, backslashes and controls cannot break out of the header value. */
    size_t k = (size_t)snprintf(disposition, sizeof(disposition), "attachment; filename=\"");
    for (const char *p = name; *p && k < sizeof(disposition) - 3; p++)
        disposition[k++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '_' : *p;
    disposition[k++] = '"';
    disposition[k] = '\0';
    sb_http_res_header(req, "Content-Disposition", disposition);
    sb_http_res_header(req, "X-Content-Type-Options", "nosniff");
    int safe = strpbrk(type, "\r\n") == NULL;
    sb_http_respond(req, 200, safe ? type : "application/octet-stream", bytes, len);
}

/* What a download of a file left on the platform needs once it arrives. */
typedef struct {
    sb_http_req_t *req;
    const char *name, *type;
} attachment_fetch_t;

static void attachment_fetched(int status, const void *bytes, size_t len, void *data)
{
    attachment_fetch_t *af = data;
    if (status == SB_ENOENT)
        sb_http_respond_error(af->req, 404, "not_found", "the platform no longer has the file");
    else if (status == SB_DECLINED)
        sb_http_respond_error(af->req, 409, "not_downloaded",
                              "the file is on the channel's platform (see its file_id), and "
                              "the channel cannot fetch it");
    else if (status != 0)
        sb_http_respond_error(af->req, 502, "platform_unavailable",
                              "could not fetch the file from the channel's platform");
    else
        attachment_respond(af->req, af->name, af->type, bytes, len);
}

/*
 * A file the channel left on its platform (a file id, no bytes): the
 * channel's plugin fetches it now, on demand.  409 when it cannot.
 */
static void attachment_fetch(sb_api_call_t *call, const PGresult *r)
{
    sb_pool_t *pool = sb_http_req_pool(call->req);
    attachment_fetch_t *af = sb_pool_calloc(pool, sizeof(*af));
    af->req = call->req;
    af->name = sb_pool_strdup(pool, PQgetvalue(r, 0, 0));
    af->type = sb_pool_strdup(pool, PQgetvalue(r, 0, 1));
    int64_t channel = PQgetisnull(r, 0, 4) ? 0 : atoll(PQgetvalue(r, 0, 4));
    int rc = sb_plugins_fetch_file(sb_http_req_param(call->req, "tenant"), channel,
                                   PQgetvalue(r, 0, 3), attachment_fetched, af);
    if (rc == SB_EUNAVAILABLE)
        sb_api_respond_unavailable(call->req);
    else if (rc != 0)
        attachment_fetched(SB_DECLINED, NULL, 0, af);
}

static void attachment_got(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        ticket_fail(call, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (PQntuples(r) == 1 && PQgetisnull(r, 0, 2) && !PQgetisnull(r, 0, 3)) {
        attachment_fetch(call, r);
        return;
    }
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 2)) {
        sb_http_respond_error(call->req, 404, "not_found", "no such resource");
        return;
    }
    /* bytea arrives in its text form, "\x" and hex digits. */
    const char *hex = PQgetvalue(r, 0, 2);
    size_t hexlen = (size_t)PQgetlength(r, 0, 2);
    size_t len = 0;
    unsigned char *bytes = sb_pool_alloc(sb_http_req_pool(call->req), hexlen / 2 + 1);
    if (hexlen < 2 ||
        sodium_hex2bin(bytes, hexlen / 2 + 1, hex + 2, hexlen - 2, NULL, &len, NULL) != 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such resource");
        return;
    }
    attachment_respond(call->req, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), bytes, len);
}

static void attachment_get_run(sb_api_call_t *call)
{
    static const char sql[] =
        "SELECT a.filename, a.content_type, a.data, a.file_id, m.channel_id FROM attachments a"
        " JOIN messages m ON m.tenant_id = a.tenant_id AND m.id = a.message_id"
        " JOIN tickets t ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id"
        " WHERE a.tenant_id = sb_tenant() AND t.number = $1::bigint AND a.id = $2::bigint";
    sb_db_stmt_t s = {sql, 2, call->data};
    if (sb_api_tx(call, &s, 1, attachment_got) != 0)
        sb_api_respond_unavailable(call->req);
}

static int attachment_get(sb_http_req_t *req, void *data)
{
    const char **p = sb_pool_alloc(sb_http_req_pool(req), 2 * sizeof(char *));
    p[0] = sb_api_path_id(req, "number");
    p[1] = sb_api_path_id(req, "id");
    if (p[0] == NULL || p[1] == NULL)
        return SB_ENOENT;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_VIEWER,
                        attachment_get_run, p);
}

/* POST .../tickets/{number}/typing: tells the customer's channel (the
 * chat widget) that an agent is typing.  Nothing is stored. */
static void typing_run(sb_api_call_t *call)
{
    static const char sql[] =
        "SELECT CASE WHEN t.id IS NULL THEN NULL ELSE '{}' END,"
        " pg_notify('switchboard_events', json_build_object('tenant_id', t.tenant_id,"
        "  'tenant', (SELECT slug FROM tenants WHERE id = t.tenant_id), 'type', 'typing',"
        "  'from', 'agent', 'channel', t.channel, 'thread_key', t.thread_key,"
        "  'ticket', t.number, 'at', now())::text)"
        " FROM (SELECT 1) one LEFT JOIN tickets t"
        "  ON t.tenant_id = sb_tenant() AND t.number = $1::bigint";
    sb_db_stmt_t s = {sql, 1, call->data};
    if (sb_api_tx(call, &s, 1, call_typing_done) != 0)
        sb_api_respond_unavailable(call->req);
}

static int ticket_typing(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t no_fields[] = {{NULL, 0, 0, 0, NULL}};
    const char *number = sb_api_path_id(req, "number");
    json_t *body = sb_http_req_json(req);
    if (number == NULL)
        return SB_ENOENT;
    /* No body, or an empty object: there is nothing to say but "typing". */
    if (body && sb_api_check(req, body, NULL, no_fields) != 0)
        return 0;
    const char **p = sb_pool_alloc(sb_http_req_pool(req), sizeof(char *));
    p[0] = number;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_AGENT, typing_run, p);
}

int sb_api_ticket_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TICKETS, 0, tickets_list, api);
    rc |= sb_router_add(r, "POST", TICKETS, SB_ROUTE_JSON, ticket_create, api);
    rc |= sb_router_add(r, "GET", TICKETS "/{number}", 0, ticket_get, api);
    rc |= sb_router_add(r, "PATCH", TICKETS "/{number}", SB_ROUTE_JSON, ticket_patch, api);
    rc |= sb_router_add(r, "POST", TICKETS "/{number}/messages", SB_ROUTE_JSON, message_add, api);
    rc |= sb_router_add(r, "GET", TICKETS "/{number}/events", 0, events_list, api);
    rc |= sb_router_add(r, "GET", TICKETS "/{number}/attachments/{id}", 0, attachment_get, api);
    rc |= sb_router_add(r, "POST", TICKETS "/{number}/typing", SB_ROUTE_JSON, ticket_typing, api);
    rc |= sb_router_add(r, "POST", TICKETS "/{number}/merge", SB_ROUTE_JSON, ticket_merge, api);
    return rc ? SB_EINVAL : 0;
}
