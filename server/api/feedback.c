/*
 * feedback.c - customer surveys: the link an agent asks for on a solved
 * ticket (the same kind the rules' act.survey sends), the page behind it
 * (no login: the signed token is the key) and the answer it records, once;
 * and the tenant's ratings for its people.
 *
 * A forged or unknown link is 404, an expired one 410, an answered one
 * 409.  The page is plain HTML with a form; the same URL takes JSON.
 */
#include "api.h"
#include "common.h"
#include "log.h"
#include "survey.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TENANT "/api/v1/tenants/{tenant}"

/* ======================== the agent's side ======================== */

typedef struct {
    char nonce[33];
    char expires[24];
    const char *params[3];
} survey_new_t;

static void survey_link_done(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    const PGresult *r = res[0];
    if (PQntuples(r) == 0) {
        sb_http_respond_error(call->req, 404, "not_found", "no such ticket");
        return;
    }
    if (PQgetisnull(r, 0, 0)) {
        sb_http_respond_error(call->req, 409, "conflict",
                              "a survey is offered on a solved ticket; this one is not solved");
        return;
    }
    sb_survey_ref_t ref = {.tenant_id = atoll(call->tenant_id),
                           .expires = atoll(PQgetvalue(r, 0, 1))};
    char token[SB_SURVEY_TOKEN_MAX];
    if (sb_survey_nonce_from_hex(PQgetvalue(r, 0, 0), ref.nonce) != 0 ||
        sb_survey_token(&ref, token) != 0) {
        sb_api_respond_unavailable(call->req);
        return;
    }
    char *url = sb_survey_url(call->api->cfg, token);
    sb_http_respond_json(call->req, 200,
                         json_pack("{s:s, s:s}", "url", url, "expires_at", PQgetvalue(r, 0, 2)));
    free(url);
}

/*
 * The link of the ticket's open survey, or of a new one: asking twice
 * gives the same link until it is answered or expires.
 */
static void survey_link_next(sb_api_call_t *call)
{
    static const char sql[] =
        "WITH t AS (SELECT * FROM tickets WHERE tenant_id = sb_tenant() AND number = $1::bigint),"
        " old AS (SELECT s.* FROM surveys s, t WHERE s.tenant_id = t.tenant_id"
        "  AND s.ticket_id = t.id AND s.answered_at IS NULL AND s.expires_at > now()"
        "  AND t.status IN ('solved', 'closed') ORDER BY s.id DESC LIMIT 1),"
        " new AS (INSERT INTO surveys (tenant_id, ticket_id, agent_id, nonce, expires_at)"
        "  SELECT t.tenant_id, t.id, t.assignee_id, decode($2, 'hex'), to_timestamp($3::bigint)"
        "  FROM t WHERE t.status IN ('solved', 'closed') AND NOT EXISTS (SELECT 1 FROM old)"
        "  RETURNING *),"
        " s AS (SELECT nonce, expires_at FROM old UNION ALL SELECT nonce, expires_at FROM new)"
        " SELECT encode(s.nonce, 'hex'), extract(epoch FROM s.expires_at)::bigint,"
        "  to_char(s.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM t LEFT JOIN s ON true";
    survey_new_t *sn = call->data;
    sb_db_stmt_t s = {sql, 3, sn->params};
    if (sb_api_tx(call, &s, 1, survey_link_done) != 0)
        sb_api_respond_unavailable(call->req);
}

static int survey_link(sb_http_req_t *req, void *data)
{
    sb_api_t *api = data;
    const char *number = sb_api_path_id(req, "number");
    unsigned char nonce[SB_SURVEY_NONCE_LEN];

    if (number == NULL)
        return SB_ENOENT;
    survey_new_t *sn = sb_pool_calloc(sb_http_req_pool(req), sizeof(*sn));
    sb_survey_nonce(nonce);
    sb_survey_nonce_hex(nonce, sn->nonce);
    snprintf(sn->expires, sizeof(sn->expires), "%lld",
             (long long)time(NULL) + (long long)(api->cfg->survey_valid_ms / 1000));
    sn->params[0] = number;
    sn->params[1] = sn->nonce;
    sn->params[2] = sn->expires;
    return sb_api_begin(req, api, sb_http_req_param(req, "tenant"), SB_ROLE_AGENT, survey_link_next,
                        sn);
}

static int feedback_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(json_build_object('id', f.id,"
        " 'ticket', t.number, 'customer_id', f.customer_id, 'agent', f.agent_id,"
        " 'rating', f.rating, 'comment', f.comment, 'created_at', f.created_at)"
        " ORDER BY f.id DESC), '[]'), 'next_cursor', NULL)"
        " FROM (SELECT * FROM feedback WHERE tenant_id = sb_tenant()"
        "  AND ($1::bigint IS NULL OR ticket_id = (SELECT id FROM tickets"
        "   WHERE tenant_id = sb_tenant() AND number = $1::bigint))"
        "  AND ($2::bigint IS NULL OR agent_id = $2::bigint)"
        "  ORDER BY id DESC LIMIT 200) f"
        " JOIN tickets t ON t.tenant_id = f.tenant_id AND t.id = f.ticket_id";
    static const char *const names[] = {"ticket", "agent"};
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 2);

    for (int i = 0; i < 2; i++)
        if (sb_api_query_id(req, names[i], &op->params[i]) != 0)
            return 0;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

/* ======================== the customer's side ======================== */

static const char page_head[] =
    "<!doctype html><html><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<title>How did we do?</title><style>"
    "body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}.r{display:flex;gap:.5rem;margin:1rem 0}"
    ".r label{flex:1;text-align:center;border:1px solid #aaa;border-radius:.4rem;padding:.6rem 0;"
    "cursor:pointer}.r input{display:block;margin:0 auto .3rem}textarea{width:100%;min-height:6rem}"
    "button{margin-top:1rem;padding:.6rem 1.4rem;font-size:1rem}</style></head><body>";

static void page(sb_http_req_t *req, int status, const char *title, const char *text)
{
    char *t = g_markup_escape_text(title, -1), *x = g_markup_escape_text(text, -1);
    GString *g = g_string_new(page_head);
    g_string_append_printf(g, "<h1>%s</h1><p>%s</p></body></html>", t, x);
    sb_http_respond(req, status, "text/html; charset=utf-8", g->str, g->len);
    g_string_free(g, TRUE);
    g_free(t);
    g_free(x);
}

static void page_form(sb_http_req_t *req, const char *tenant, const char *subject,
                      const char *number)
{
    char *tn = g_markup_escape_text(tenant, -1), *sj = g_markup_escape_text(subject, -1);
    GString *g = g_string_new(page_head);
    g_string_append_printf(g,
                           "<h1>How did we do?</h1><p>%s, ticket #%s: <em>%s</em></p>"
                           "<form method=\"post\"><div class=\"r\">",
                           tn, number, sj);
    for (int i = 1; i <= 5; i++)
        g_string_append_printf(g,
                               "<label><input type=\"radio\" name=\"rating\" value=\"%d\""
                               " required>%d</label>",
                               i, i);
    g_string_append(g, "</div><p>1 is poor, 5 is excellent.</p>"
                       "<label for=\"c\">Anything to add? (optional)</label>"
                       "<textarea id=\"c\" name=\"comment\" maxlength=\"5000\"></textarea>"
                       "<button type=\"submit\">Send</button></form></body></html>");
    sb_http_respond(req, 200, "text/html; charset=utf-8", g->str, g->len);
    g_string_free(g, TRUE);
    g_free(tn);
    g_free(sj);
}

typedef struct {
    sb_http_req_t *req;
    int html; /* answer with pages (a browser's form), not JSON */
    char tenant[24];
    char nonce[33];
    char rating[4];
    const char *comment; /* in the request's pool */
} survey_req_t;

static void survey_refuse(survey_req_t *sr, int status)
{
    static const struct {
        int status;
        const char *code, *title, *text;
    } why[] = {
        {404, "not_found", "Link not found", "This survey link is not valid."},
        {409, "conflict", "Already answered", "This survey has already been answered. Thank you!"},
        {410, "expired", "Link expired", "This survey link has expired."},
    };
    for (size_t i = 0; i < SB_ARRAY_SIZE(why); i++) {
        if (why[i].status != status)
            continue;
        if (sr->html)
            page(sr->req, status, why[i].title, why[i].text);
        else
            sb_http_respond_error(sr->req, status, why[i].code, "%s", why[i].text);
        return;
    }
}

/* Checks the token; answers and returns SB_EINVAL when it does not name a live survey. */
static int survey_token(sb_http_req_t *req, survey_req_t *sr)
{
    sb_survey_ref_t ref;
    sr->req = req;
    if (sb_survey_verify(sb_http_req_param(req, "token"), &ref) != 0) {
        survey_refuse(sr, 404);
        return SB_EINVAL;
    }
    if (ref.expires <= (int64_t)time(NULL)) {
        survey_refuse(sr, 410);
        return SB_EINVAL;
    }
    snprintf(sr->tenant, sizeof(sr->tenant), "%lld", (long long)ref.tenant_id);
    sb_survey_nonce_hex(ref.nonce, sr->nonce);
    return 0;
}

static void survey_shown(int status, PGresult *const *res, int n, void *data)
{
    survey_req_t *sr = data;
    if (status != 0) {
        if (status == SB_EUNAVAILABLE)
            page(sr->req, 503, "Please try again", "The survey is unavailable for a moment.");
        else
            sb_api_respond_db_error(sr->req, status, res, n);
        return;
    }
    const PGresult *r = res[1];
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) {
        survey_refuse(sr, 404);
        return;
    }
    json_t *st = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    const char *state = json_string_value(json_object_get(st, "state"));
    if (state && strcmp(state, "open") == 0) {
        char number[24];
        snprintf(number, sizeof(number), "%lld",
                 (long long)json_integer_value(json_object_get(st, "ticket")));
        const char *tenant = json_string_value(json_object_get(st, "tenant"));
        const char *subject = json_string_value(json_object_get(st, "subject"));
        page_form(sr->req, tenant ? tenant : "", subject ? subject : "", number);
    } else
        survey_refuse(sr, state && strcmp(state, "answered") == 0 ? 409 : 410);
    json_decref(st);
}

static const char sql_enter[] = "SELECT set_config('switchboard.tenant_id', $1, true),"
                                " set_config('switchboard.agent_id', '', true),"
                                " set_config('switchboard.api_key_id', '', true)";

static int survey_page(sb_http_req_t *req, void *data)
{
    static const char sql[] = "SELECT sb_survey_state(decode($1, 'hex'))";
    sb_api_t *api = data;
    survey_req_t *sr = sb_pool_calloc(sb_http_req_pool(req), sizeof(*sr));
    sr->html = 1;
    if (survey_token(req, sr) != 0)
        return 0;
    const char *p1[1] = {sr->tenant}, *p2[1] = {sr->nonce};
    sb_db_stmt_t s[2] = {{sql_enter, 1, p1}, {sql, 1, p2}};
    if (sb_db_query(api->db, s, 2, survey_shown, sr) != 0)
        page(req, 503, "Please try again", "The survey is unavailable for a moment.");
    return 0;
}

static void survey_recorded(int status, PGresult *const *res, int n, void *data)
{
    survey_req_t *sr = data;
    if (status != 0) {
        if (status == SB_EUNAVAILABLE && sr->html)
            page(sr->req, 503, "Please try again",
                 "Your answer was not saved; please send it again.");
        else
            sb_api_respond_db_error(sr->req, status, res, n);
        return;
    }
    const char *result = PQgetvalue(res[1], 0, 0);
    if (strcmp(result, "ok") != 0) {
        survey_refuse(sr, strcmp(result, "answered") == 0  ? 409
                          : strcmp(result, "expired") == 0 ? 410
                                                           : 404);
        return;
    }
    if (sr->html)
        page(sr->req, 200, "Thank you!", "Your answer helps us do better.");
    else
        sb_http_respond_json(sr->req, 201,
                             json_pack("{s:i, s:s?}", "rating", atoi(sr->rating), "comment",
                                       sr->comment && sr->comment[0] ? sr->comment : NULL));
}

static void survey_json_free(void *doc)
{
    json_decref(doc);
}

/* Reads {"rating", "comment"} from JSON or the page's form; answers 4xx itself on error. */
static int survey_read_answer(sb_http_req_t *req, survey_req_t *sr)
{
    static const sb_api_field_t fields[] = {
        {"rating", SB_FIELD_INT, 1, 0, NULL},
        {"comment", SB_FIELD_STRING, 0, 5000, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    const char *type = sb_http_req_header(req, "content-type");
    size_t len;
    const char *body = sb_http_req_body(req, &len);
    json_int_t rating = 0;

    if (type && strncasecmp(type, "application/x-www-form-urlencoded", 33) == 0) {
        char *text = g_strndup(body ? body : "", len);
        GHashTable *form = g_uri_parse_params(text, -1, "&", G_URI_PARAMS_WWW_FORM, NULL);
        g_free(text);
        const char *r = form ? g_hash_table_lookup(form, "rating") : NULL;
        const char *c = form ? g_hash_table_lookup(form, "comment") : NULL;
        rating = r && strlen(r) == 1 ? r[0] - '0' : 0;
        if (c && g_utf8_strlen(c, -1) <= 5000 && g_utf8_validate(c, -1, NULL))
            sr->comment = sb_pool_strdup(sb_http_req_pool(req), c);
        int bad = c && sr->comment == NULL;
        if (form)
            g_hash_table_unref(form);
        sr->html = 1;
        if (bad) {
            page(req, 422, "Please check your answer", "The comment is too long.");
            return SB_EINVAL;
        }
    } else if (type && strncasecmp(type, "application/json", 16) == 0) {
        json_t *doc = json_loadb(body ? body : "", len, 0, NULL);
        if (doc == NULL) {
            sb_http_respond_error(req, 400, "bad_request", "the body is not valid JSON");
            return SB_EINVAL;
        }
        sb_pool_cleanup_add(sb_http_req_pool(req), survey_json_free, doc);
        if (sb_api_check(req, doc, NULL, fields) != 0)
            return SB_EINVAL;
        rating = json_integer_value(json_object_get(doc, "rating"));
        sr->comment = json_string_value(json_object_get(doc, "comment"));
    } else {
        sb_http_respond_error(req, 415, "unsupported_media_type",
                              "send JSON or the survey page's form");
        return SB_EINVAL;
    }
    if (rating < 1 || rating > 5) {
        if (sr->html)
            page(req, 422, "Please choose a rating", "Choose a rating from 1 to 5.");
        else
            sb_api_respond_invalid(req, "rating", "field \"rating\" must be from 1 to 5");
        return SB_EINVAL;
    }
    snprintf(sr->rating, sizeof(sr->rating), "%d", (int)rating);
    return 0;
}

static int survey_answer(sb_http_req_t *req, void *data)
{
    static const char sql[] = "SELECT sb_survey_answer(decode($1, 'hex'), $2::integer, $3, 'link')";
    sb_api_t *api = data;
    survey_req_t *sr = sb_pool_calloc(sb_http_req_pool(req), sizeof(*sr));

    sr->req = req;
    if (survey_read_answer(req, sr) != 0 || survey_token(req, sr) != 0)
        return 0;
    const char *p1[1] = {sr->tenant}, *p2[3] = {sr->nonce, sr->rating, sr->comment};
    sb_db_stmt_t s[2] = {{sql_enter, 1, p1}, {sql, 3, p2}};
    if (sb_db_query(api->db, s, 2, survey_recorded, sr) != 0)
        sb_api_respond_unavailable(req);
    return 0;
}

int sb_api_feedback_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "POST", TENANT "/tickets/{number}/survey", 0, survey_link, api);
    rc |= sb_router_add(r, "GET", TENANT "/feedback", 0, feedback_list, api);
    rc |= sb_router_add(r, "GET", "/survey/{token}", 0, survey_page, api);
    rc |= sb_router_add(r, "POST", "/survey/{token}", 0, survey_answer, api);
    return rc ? SB_EINVAL : 0;
}
