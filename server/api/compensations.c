/*
 * compensations.c - the compensation ledger's routes: goodwill issued to a
 * customer, the approval or rejection of what went over an authority limit
 * or the monthly budget, totals, and the tenant's policy.  The decisions
 * (limits, budget, status) are made in SQL (0006_compensations.sql); this
 * file checks the shape of input and maps the database's answers to HTTP.
 */
#include "api.h"
#include "common.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPENSATIONS "/api/v1/tenants/{tenant}/compensations"

static const char *const comp_kinds[] = {"discount", "credit", "refund", "gift", "bonus", NULL};
static const char *const comp_statuses[] = {"issued", "pending_approval", "approved", "rejected",
                                            NULL};
static const char *const comp_roles[] = {"agent", "supervisor", "admin", NULL};

/* ======================== operations ======================== */

/* One statement in a tenant transaction, answered from its first column. */
typedef struct {
    int status; /* 200 or 201 */
    const char *sql;
    int nparams;
    const char *params[8];
    char buf[4][40];   /* room for numbers the handler formats */
    const char *bad22; /* class 22 the SQL does not name: 422 naming this */
} comp_op_t;

static comp_op_t *comp_op_new(sb_http_req_t *req, int status, const char *sql, int nparams)
{
    comp_op_t *op = sb_pool_calloc(sb_http_req_pool(req), sizeof(*op));
    op->status = status;
    op->sql = sql;
    op->nparams = nparams;
    return op;
}

static const PGresult *comp_failed(PGresult *const *res, int n)
{
    for (int i = 0; res && i < n; i++)
        if (res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR)
            return res[i];
    return NULL;
}

/*
 * The SQL functions raise 22023 naming the parameter (COLUMN) for bad
 * input, 42501 for a caller who may not do this and 55000 for a decision
 * on a compensation that is not pending.
 */
static void comp_done(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    comp_op_t *op = call->data;
    const PGresult *err = status == SB_EDB ? comp_failed(res, n) : NULL;

    if (err) {
        const char *st = PQresultErrorField(err, PG_DIAG_SQLSTATE);
        const char *col = PQresultErrorField(err, PG_DIAG_COLUMN_NAME);
        const char *msg = PQresultErrorField(err, PG_DIAG_MESSAGE_PRIMARY);
        const char *src = PQresultErrorField(err, PG_DIAG_SOURCE_FUNCTION);
        st = st ? st : "";
        msg = msg ? msg : "the request cannot be done";
        if (strcmp(st, "22023") == 0 && col) {
            sb_api_respond_invalid(call->req, col, "%s", msg);
            return;
        }
        if (strncmp(st, "22", 2) == 0 && op->bad22) {
            sb_api_respond_invalid(call->req, op->bad22, "parameter \"%s\" is not valid",
                                   op->bad22);
            return;
        }
        /* Only the functions' own RAISE: a missing GRANT stays a 500. */
        int raised = src && strcmp(src, "exec_stmt_raise") == 0;
        if (raised && strcmp(st, "42501") == 0) {
            sb_http_respond_error(call->req, 403, "forbidden", "%s", msg);
            return;
        }
        if (raised && strcmp(st, "55000") == 0) {
            sb_http_respond_error(call->req, 409, "conflict", "%s", msg);
            return;
        }
    }
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    sb_api_respond_row(call->req, op->status, res[n - 1]);
}

static void comp_run(sb_api_call_t *call)
{
    comp_op_t *op = call->data;
    sb_db_stmt_t s = {op->sql, op->nparams, op->params};
    if (sb_api_tx(call, &s, 1, comp_done) != 0)
        sb_api_respond_unavailable(call->req);
}

static int comp_begin(sb_http_req_t *req, void *api, sb_role_t role, comp_op_t *op)
{
    return sb_api_begin(req, api, sb_http_req_param(req, "tenant"), role, comp_run, op);
}

/* ======================== input ======================== */

static int comp_currency_ok(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return 0;
    return s[3] == '\0';
}

/*
 * An amount of money as exact text in buf ("12.50"): a JSON number that is
 * more than zero (or zero, with zero_ok), below 10^10 and with at most two
 * decimals.  Responds 422 naming field otherwise.
 */
static int comp_amount(sb_http_req_t *req, const char *field, json_t *v, int zero_ok, char *buf,
                       size_t len)
{
    long long cents;

    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i >= 0 && i < 10000000000LL) {
            cents = (long long)i * 100;
        } else {
            cents = i < 0 ? -1 : 1000000000000LL;
        }
    } else if (json_is_real(v)) {
        double d = json_real_value(v) * 100.0;
        if (!(d < 1e12))
            cents = 1000000000000LL;
        else if (d < 0)
            cents = -1;
        else if (fabs(d - nearbyint(d)) > 1e-3) {
            sb_api_respond_invalid(req, field, "field \"%s\" must have at most two decimal places",
                                   field);
            return SB_EINVAL;
        } else
            cents = llround(d);
    } else {
        sb_api_respond_invalid(req, field, "field \"%s\" must be a number", field);
        return SB_EINVAL;
    }
    if (cents < 0 || (cents == 0 && !zero_ok)) {
        sb_api_respond_invalid(req, field, "field \"%s\" must be %s", field,
                               zero_ok ? "zero or more" : "more than zero");
        return SB_EINVAL;
    }
    if (cents >= 1000000000000LL) {
        sb_api_respond_invalid(req, field, "field \"%s\" must be less than 10000000000", field);
        return SB_EINVAL;
    }
    snprintf(buf, len, "%lld.%02lld", cents / 100, cents % 100);
    return 0;
}

/* ======================== ledger ======================== */

static int comp_list(sb_http_req_t *req, void *data)
{
    /* $1 ticket number, $2 customer, $3 status, $4 from, $5 to, $6 limit, $7 cursor */
    static const char sql[] =
        "SELECT json_build_object("
        " 'items', coalesce(json_agg(sb_compensation_json(p.c) ORDER BY p.id DESC)"
        "   FILTER (WHERE p.rn <= $6::int), '[]'),"
        " 'next_cursor', max(CASE WHEN p.rn = $6::int AND p.n > $6::int"
        "   THEN sb_cursor_encode(p.id::text, p.id) END))"
        " FROM (SELECT x.c, x.id, row_number() OVER (ORDER BY x.id DESC) AS rn,"
        "   count(*) OVER () AS n"
        "  FROM (SELECT c, c.id FROM compensations c WHERE c.tenant_id = sb_tenant()"
        "   AND ($1::bigint IS NULL OR c.ticket_id = (SELECT t.id FROM tickets t"
        "    WHERE t.tenant_id = sb_tenant() AND t.number = $1::bigint))"
        "   AND ($2::bigint IS NULL OR c.customer_id = $2::bigint)"
        "   AND ($3::text IS NULL OR c.status = $3)"
        /* from and to are dates in UTC, both included */
        "   AND ($4::date IS NULL OR c.created_at >= $4::date::timestamp AT TIME ZONE 'UTC')"
        "   AND ($5::date IS NULL"
        "    OR c.created_at < ($5::date + 1)::timestamp AT TIME ZONE 'UTC')"
        "   AND ($7::text IS NULL OR c.id < sb_cursor_part($7, 2)::bigint)"
        "   ORDER BY c.id DESC LIMIT $6::int + 1) x) p";
    comp_op_t *op = comp_op_new(req, 200, sql, 7);
    const char *limit = sb_http_req_query(req, "limit");
    const char *status = sb_http_req_query(req, "status");
    char *end;
    long lim = limit ? strtol(limit, &end, 10) : 50;

    op->bad22 = "cursor";
    if (limit && (*limit == '\0' || *end != '\0' || lim < 1 || lim > 200)) {
        sb_api_respond_invalid(req, "limit", "parameter \"limit\" must be from 1 to 200");
        return 0;
    }
    if (status) {
        const char *const *s = comp_statuses;
        while (*s && strcmp(*s, status) != 0)
            s++;
        if (*s == NULL) {
            sb_api_respond_invalid(req, "status",
                                   "parameter \"status\" must be one of: issued, "
                                   "pending_approval, approved, rejected");
            return 0;
        }
    }
    if (sb_api_query_id(req, "ticket", &op->params[0]) ||
        sb_api_query_id(req, "customer", &op->params[1]) ||
        sb_api_query_date(req, "from", &op->params[3], NULL) ||
        sb_api_query_date(req, "to", &op->params[4], NULL))
        return 0;
    op->params[2] = status;
    snprintf(op->buf[0], sizeof(op->buf[0]), "%ld", lim);
    op->params[5] = op->buf[0];
    op->params[6] = sb_http_req_query(req, "cursor");
    if (op->params[6] && strlen(op->params[6]) > 200) {
        sb_api_respond_invalid(req, "cursor", "parameter \"cursor\" is not valid");
        return 0;
    }
    return comp_begin(req, data, SB_ROLE_VIEWER, op);
}

/* A ticket number that names nothing becomes id 0, which the function
 * refuses naming "ticket". */
static const char comp_create_sql[] =
    "SELECT sb_compensation_issue(CASE WHEN $1::bigint IS NULL THEN NULL"
    " ELSE coalesce((SELECT t.id FROM tickets t WHERE t.tenant_id = sb_tenant()"
    "  AND t.number = $1::bigint), 0) END,"
    " $2::bigint, $3, $4::numeric, $5, $6, $7, NULL)";

static int comp_create(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"ticket", SB_FIELD_INT, 0, 0, NULL},
        {"customer", SB_FIELD_INT, 0, 0, NULL},
        {"kind", SB_FIELD_STRING, 1, 20, comp_kinds},
        {"currency", SB_FIELD_STRING, 0, 3, NULL},
        {"description", SB_FIELD_STRING, 2, 2000, NULL},
        {"reason", SB_FIELD_STRING, 1, 100, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    /* amount is a number, which sb_api_check does not know: checked below. */
    json_t *rest = json_is_object(body) ? json_copy(body) : NULL;
    if (rest)
        json_object_del(rest, "amount");
    int rc = sb_api_check(req, rest ? rest : body, NULL, fields);
    json_decref(rest);
    if (rc != 0)
        return 0;

    comp_op_t *op = comp_op_new(req, 201, comp_create_sql, 7);
    json_t *amount = json_object_get(body, "amount");
    json_t *ticket = json_object_get(body, "ticket");
    json_t *customer = json_object_get(body, "customer");
    const char *currency = json_string_value(json_object_get(body, "currency"));
    const char *description = json_string_value(json_object_get(body, "description"));

    if (json_is_null(amount))
        amount = NULL;
    if (amount && comp_amount(req, "amount", amount, 0, op->buf[2], sizeof(op->buf[2])) != 0)
        return 0;
    if (ticket == NULL && customer == NULL) {
        sb_api_respond_invalid(req, "ticket", "field \"ticket\" or \"customer\" is required");
        return 0;
    }
    if (currency && !comp_currency_ok(currency)) {
        sb_api_respond_invalid(req, "currency",
                               "field \"currency\" must be an ISO 4217 code of three "
                               "upper-case letters");
        return 0;
    }
    if (amount && currency == NULL) {
        sb_api_respond_invalid(req, "currency", "field \"currency\" is required with an amount");
        return 0;
    }
    if (amount == NULL && currency) {
        sb_api_respond_invalid(req, "currency",
                               "field \"currency\" is only for a compensation with an amount");
        return 0;
    }
    if (amount == NULL && description == NULL) {
        sb_api_respond_invalid(req, "description",
                               "field \"description\" is required for a compensation without "
                               "an amount");
        return 0;
    }
    if (ticket) {
        snprintf(op->buf[0], sizeof(op->buf[0]), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(ticket));
        op->params[0] = op->buf[0];
    }
    if (customer) {
        snprintf(op->buf[1], sizeof(op->buf[1]), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(customer));
        op->params[1] = op->buf[1];
    }
    op->params[2] = json_string_value(json_object_get(body, "kind"));
    op->params[3] = amount ? op->buf[2] : NULL;
    op->params[4] = currency;
    op->params[5] = description;
    op->params[6] = json_string_value(json_object_get(body, "reason"));
    return comp_begin(req, data, SB_ROLE_AGENT, op);
}

static int comp_decide(sb_http_req_t *req, void *data, const char *sql)
{
    static const sb_api_field_t fields[] = {
        {"note", SB_FIELD_STRING, 2, 2000, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    /* The body is optional: no body, no note. */
    if (body && sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    comp_op_t *op = comp_op_new(req, 200, sql, 2);
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(body, "note"));
    return comp_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

static int comp_approve(sb_http_req_t *req, void *data)
{
    return comp_decide(req, data, "SELECT sb_compensation_approve($1::bigint, $2)");
}

static int comp_reject(sb_http_req_t *req, void *data)
{
    return comp_decide(req, data, "SELECT sb_compensation_reject($1::bigint, $2)");
}

/* ======================== totals ======================== */

/* What was granted (issued or approved) by month, reason, agent and rule,
 * each per currency (null for compensations without an amount). */
static int comp_totals(sb_http_req_t *req, void *data)
{
    /* $1 from, $2 to */
    static const char sql[] =
        "WITH g AS (SELECT * FROM compensations c WHERE c.tenant_id = sb_tenant()"
        "  AND c.status IN ('issued', 'approved')"
        "  AND ($1::date IS NULL OR c.created_at >= $1::date::timestamp AT TIME ZONE 'UTC')"
        "  AND ($2::date IS NULL"
        "   OR c.created_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'))"
        " SELECT jsonb_build_object("
        " 'by_month', coalesce((SELECT jsonb_agg(jsonb_build_object('month', x.k,"
        "   'currency', x.currency, 'amount', x.amount, 'count', x.n)"
        "   ORDER BY x.k, x.currency)"
        "  FROM (SELECT to_char(g.created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS k,"
        "   g.currency, sum(g.amount) AS amount, count(*) AS n"
        "   FROM g GROUP BY 1, 2) x), '[]'),"
        " 'by_reason', coalesce((SELECT jsonb_agg(jsonb_build_object('reason', x.k,"
        "   'currency', x.currency, 'amount', x.amount, 'count', x.n)"
        "   ORDER BY x.k, x.currency)"
        "  FROM (SELECT g.reason AS k, g.currency, sum(g.amount) AS amount, count(*) AS n"
        "   FROM g GROUP BY 1, 2) x), '[]'),"
        " 'by_agent', coalesce((SELECT jsonb_agg(jsonb_build_object('agent', x.k,"
        "   'currency', x.currency, 'amount', x.amount, 'count', x.n)"
        "   ORDER BY x.k, x.currency)"
        "  FROM (SELECT g.issued_by_agent AS k, g.currency, sum(g.amount) AS amount,"
        "   count(*) AS n FROM g WHERE g.issued_by_agent IS NOT NULL"
        "   GROUP BY 1, 2) x), '[]'),"
        " 'by_rule', coalesce((SELECT jsonb_agg(jsonb_build_object('rule', x.k,"
        "   'currency', x.currency, 'amount', x.amount, 'count', x.n)"
        "   ORDER BY x.k, x.currency)"
        "  FROM (SELECT g.issued_by_rule AS k, g.currency, sum(g.amount) AS amount,"
        "   count(*) AS n FROM g WHERE g.issued_by_rule IS NOT NULL"
        "   GROUP BY 1, 2) x), '[]'))";
    comp_op_t *op = comp_op_new(req, 200, sql, 2);
    const char *group = sb_http_req_query(req, "group");

    if (group && strcmp(group, "month") != 0) {
        sb_api_respond_invalid(req, "group", "parameter \"group\" must be \"month\"");
        return 0;
    }
    if (sb_api_query_date(req, "from", &op->params[0], NULL) ||
        sb_api_query_date(req, "to", &op->params[1], NULL))
        return 0;
    return comp_begin(req, data, SB_ROLE_VIEWER, op);
}

/* ======================== policy ======================== */

static int comp_policy_get(sb_http_req_t *req, void *data)
{
    return comp_begin(req, data, SB_ROLE_SUPERVISOR,
                      comp_op_new(req, 200, "SELECT sb_compensation_policy_json()", 0));
}

/* {currency: amount} under prefix; at most 200 currencies. */
static int comp_policy_amounts_check(sb_http_req_t *req, const char *prefix, json_t *obj)
{
    char field[128], buf[40];
    const char *cur;
    json_t *v;

    if (!json_is_object(obj)) {
        sb_api_respond_invalid(req, prefix,
                               "field \"%s\" must be an object of currencies and amounts", prefix);
        return SB_EINVAL;
    }
    if (json_object_size(obj) > 200) {
        sb_api_respond_invalid(req, prefix, "field \"%s\" must have at most 200 currencies",
                               prefix);
        return SB_EINVAL;
    }
    json_object_foreach(obj, cur, v)
    {
        snprintf(field, sizeof(field), "%s.%s", prefix, cur);
        if (!comp_currency_ok(cur)) {
            sb_api_respond_invalid(req, field,
                                   "field \"%s\" does not name a currency (an ISO 4217 code of "
                                   "three upper-case letters)",
                                   field);
            return SB_EINVAL;
        }
        if (comp_amount(req, field, v, 1, buf, sizeof(buf)) != 0)
            return SB_EINVAL;
    }
    return 0;
}

static int comp_policy_put(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"authority", SB_FIELD_OBJECT, 0, 0, NULL},
        {"monthly_budget", SB_FIELD_OBJECT, 0, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);
    json_t *authority, *limits, *budget;
    const char *role;
    char field[128];
    size_t len;

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    authority = json_object_get(body, "authority");
    json_object_foreach(authority, role, limits)
    {
        const char *const *r = comp_roles;
        snprintf(field, sizeof(field), "authority.%s", role);
        while (*r && strcmp(*r, role) != 0)
            r++;
        if (*r == NULL) {
            sb_api_respond_invalid(req, field,
                                   "field \"%s\" does not name a role: agent, supervisor or "
                                   "admin",
                                   field);
            return 0;
        }
        if (comp_policy_amounts_check(req, field, limits) != 0)
            return 0;
    }
    budget = json_object_get(body, "monthly_budget");
    if (budget && comp_policy_amounts_check(req, "monthly_budget", budget) != 0)
        return 0;
    /* The client's own text: PostgreSQL reads its numbers exactly, where
     * jansson's doubles would not. */
    comp_op_t *op = comp_op_new(req, 200, "SELECT sb_compensation_policy_set($1::jsonb)", 1);
    op->params[0] = sb_http_req_body(req, &len);
    return comp_begin(req, data, SB_ROLE_ADMIN, op);
}

/* ======================== routes ======================== */

int sb_api_compensation_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", COMPENSATIONS, 0, comp_list, api);
    rc |= sb_router_add(r, "POST", COMPENSATIONS, SB_ROUTE_JSON, comp_create, api);
    /* The literal paths come before {id}/..., which would take them otherwise. */
    rc |= sb_router_add(r, "GET", COMPENSATIONS "/totals", 0, comp_totals, api);
    rc |= sb_router_add(r, "GET", COMPENSATIONS "/policy", 0, comp_policy_get, api);
    rc |= sb_router_add(r, "PUT", COMPENSATIONS "/policy", SB_ROUTE_JSON, comp_policy_put, api);
    rc |= sb_router_add(r, "POST", COMPENSATIONS "/{id}/approve", SB_ROUTE_JSON, comp_approve, api);
    rc |= sb_router_add(r, "POST", COMPENSATIONS "/{id}/reject", SB_ROUTE_JSON, comp_reject, api);
    return rc ? SB_EINVAL : 0;
}
