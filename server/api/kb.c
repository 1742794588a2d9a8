/*
 * kb.c - the knowledge base: a tenant's articles of frequent questions.
 * Members read them all (drafts too), supervisors and admins write them
 * and confirm they are still right, admins set how long that holds.  The
 * published ones are public, without a login, at /kb/{tenant}/articles.
 * Search, ranking and the JSON documents live in server/sql/0008_kb.sql.
 */
#include "api.h"
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"
#define ARTICLES TENANT "/kb/articles"
#define PUBLIC "/kb/{tenant}/articles"

#define KB_Q_MAX 200       /* characters of a search */
#define KB_REVIEW_MAX 3650 /* days */

static const char *const kb_statuses[] = {"draft", "published", NULL};

/* ======================== input ======================== */

/*
 * The characters of s when it is valid UTF-8 (as jansson checks it), or -1.
 * Query strings arrive percent-decoded and unchecked, and PostgreSQL would
 * refuse a bad byte with an error the reader did not cause.
 */
static long kb_utf8_chars(const char *s)
{
    json_t *j = json_string(s);
    long chars = 0;

    if (j == NULL)
        return -1;
    json_decref(j);
    for (; *s; s++)
        chars += ((unsigned char)*s & 0xc0) != 0x80;
    return chars;
}

/*
 * A language tag in its usual spelling ("pt-br" -> "pt-BR", "zh_hant" ->
 * "zh-Hant"): a primary subtag of 2 or 3 letters, then subtags of 1 to 8
 * letters or digits.  Returns a copy in pool, or NULL when s is not one.
 */
static const char *kb_language(sb_pool_t *pool, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len < 2 || len > 35)
        return NULL;
    char *out = sb_pool_strdup(pool, s);
    for (size_t start = 0, i = 0; start <= len; start = ++i) {
        int alpha = 1;
        while (i < len && out[i] != '-' && out[i] != '_') {
            if (!isalnum((unsigned char)out[i]))
                return NULL;
            alpha = alpha && isalpha((unsigned char)out[i]);
            i++;
        }
        size_t n = i - start;
        if (start == 0 ? (n < 2 || n > 3 || !alpha) : (n < 1 || n > 8))
            return NULL;
        /* Regions upper-case ("BR"), scripts title-case ("Hant"), the rest lower. */
        for (size_t k = start; k < i; k++) {
            int upper = start > 0 && alpha && (n == 2 || (n == 4 && k == start));
            out[k] =
                (char)(upper ? toupper((unsigned char)out[k]) : tolower((unsigned char)out[k]));
        }
        if (i < len)
            out[i] = '-';
    }
    return out;
}

/* A text query parameter of at most max characters; 422 otherwise. */
static int kb_text_param(sb_http_req_t *req, const char *name, long max, const char **out)
{
    const char *v = sb_http_req_query(req, name);
    *out = NULL;
    if (v == NULL || v[0] == '\0')
        return 0;
    long chars = kb_utf8_chars(v);
    if (chars < 0 || chars > max) {
        sb_api_respond_invalid(
            req, name, "parameter \"%s\" must be UTF-8 of at most %ld characters", name, max);
        return SB_EINVAL;
    }
    *out = v;
    return 0;
}

/* ?limit= from 1 to max (def when absent), as text in buf; 422 otherwise. */
static int kb_limit_param(sb_http_req_t *req, long def, long max, char *buf, size_t size)
{
    const char *v = sb_http_req_query(req, "limit");
    char *end;
    long lim = v ? strtol(v, &end, 10) : def;

    if (v && (*v == '\0' || *end != '\0' || lim < 1 || lim > max)) {
        sb_api_respond_invalid(req, "limit", "parameter \"limit\" must be from 1 to %ld", max);
        return SB_EINVAL;
    }
    snprintf(buf, size, "%ld", lim);
    return 0;
}

/* A language filter (?language= or ?lang=), normalized; 422 when malformed. */
static int kb_language_param(sb_http_req_t *req, const char *name, const char **out)
{
    const char *v = sb_http_req_query(req, name);
    *out = NULL;
    if (v == NULL || v[0] == '\0')
        return 0;
    *out = kb_language(sb_http_req_pool(req), v);
    if (*out == NULL) {
        sb_api_respond_invalid(req, name,
                               "parameter \"%s\" must be a language tag such as en or pt-BR", name);
        return SB_EINVAL;
    }
    return 0;
}

/* The tags of a body as a JSON array text in the request's pool, or NULL. */
static const char *kb_tags_json(sb_http_req_t *req, json_t *body)
{
    json_t *tags = json_object_get(body, "tags");
    if (tags == NULL)
        return NULL;
    char *text = json_dumps(tags, JSON_COMPACT);
    const char *copy = sb_pool_strdup(sb_http_req_pool(req), text ? text : "[]");
    free(text);
    return copy;
}

/*
 * Checks an article's members (create: title and language required) and
 * puts them in op->params[first..first+4]: title, body, language, tags
 * (JSON), status.  Answers 422 and returns SB_EINVAL on a mistake.
 */
static int kb_article_params(sb_http_req_t *req, sb_api_op_t *op, int first, int create)
{
    const sb_api_field_t fields[] = {
        {"title", SB_FIELD_STRING, create ? 1 : 2, 300, NULL},
        {"body", SB_FIELD_STRING, 0, 200000, NULL},
        {"language", SB_FIELD_STRING, create ? 1 : 2, 35, NULL},
        {"tags", SB_FIELD_STRINGS, 0, 50, NULL},
        {"status", SB_FIELD_STRING, 0, 10, kb_statuses},
        {NULL, 0, 0, 0, NULL},
    };
    json_t *body = sb_http_req_json(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return SB_EINVAL;
    const char *title = json_string_value(json_object_get(body, "title"));
    const char *language = json_string_value(json_object_get(body, "language"));
    if (title && title[strspn(title, " \t\r\n")] == '\0') {
        sb_api_respond_invalid(req, "title", "field \"title\" must not be blank");
        return SB_EINVAL;
    }
    if (language) {
        language = kb_language(sb_http_req_pool(req), language);
        if (language == NULL) {
            sb_api_respond_invalid(req, "language",
                                   "field \"language\" must be a language tag such as en or pt-BR");
            return SB_EINVAL;
        }
    }
    op->params[first] = title;
    op->params[first + 1] = json_string_value(json_object_get(body, "body"));
    op->params[first + 2] = language;
    op->params[first + 3] = kb_tags_json(req, body);
    op->params[first + 4] = json_string_value(json_object_get(body, "status"));
    return 0;
}

/* ======================== articles (members) ======================== */

/* $2 status, $3 language (normalized), $4 tag, $5 needs_review */
#define SQL_KB_FILTERS                                                         \
    " AND ($2::text IS NULL OR a.status = $2)"                                 \
    " AND ($3::text IS NULL OR a.language = $3 OR a.language LIKE $3 || '-%')" \
    " AND ($4::text IS NULL OR $4 = ANY (a.tags))"                             \
    " AND ($5::boolean IS NULL OR sb_kb_needs_review(a.reviewed_at, a.updated_at) = $5)"

/*
 * A page of the list: limit ($7) + 1 rows are cut first, to know whether
 * a next page exists; documents (without bodies) are built for the page
 * only.  The keyset is (kv, id) in the cursor ($6), of type cast; HAVING
 * decodes the cursor even when no row is left to compare it with, so a
 * malformed one is always an error (class 22: 422).
 */
#define SQL_KB_PAGE(item, inner, cast)                                                           \
    "SELECT json_build_object("                                                                  \
    " 'items', coalesce(json_agg(" item " ORDER BY p.rn) FILTER (WHERE p.rn <= $7::int), '[]')," \
    " 'next_cursor', max(CASE WHEN p.rn = $7::int AND p.n > $7::int"                             \
    "  THEN sb_cursor_encode(p.k, p.id) END))"                                                   \
    " FROM (SELECT x.a, x.kv, x.k, x.id, count(*) OVER () AS n,"                                 \
    "   row_number() OVER (ORDER BY x.kv DESC, x.id DESC) AS rn FROM (" inner ") x) p"           \
    " HAVING $6::text IS NULL"                                                                   \
    "  OR (sb_cursor_part($6, 1)::" cast ", sb_cursor_part($6, 2)::bigint) IS NOT NULL"

/* Without a search: the most recently changed first. */
static const char kb_list_sql[] =
    SQL_KB_PAGE("sb_kb_article_json(p.a) - 'body'",
                "SELECT a, a.updated_at AS kv, a.updated_at::text AS k, a.id FROM kb_articles a"
                " WHERE a.tenant_id = sb_tenant() AND $1::text IS NULL" SQL_KB_FILTERS
                " AND ($6::text IS NULL OR (a.updated_at, a.id)"
                "  < (sb_cursor_part($6, 1)::timestamptz, sb_cursor_part($6, 2)::bigint))"
                " ORDER BY a.updated_at DESC, a.id DESC LIMIT $7::int + 1",
                "timestamptz");

/* With a search ($1): the best match first, drafts included. */
static const char kb_search_sql[] =
    SQL_KB_PAGE("(sb_kb_article_json(p.a) - 'body') || jsonb_build_object('rank', p.kv,"
                " 'snippet', sb_kb_snippet((p.a).language, (p.a).body, $1))",
                "SELECT a, h.rank AS kv, h.rank::text AS k, a.id FROM sb_kb_search($1, true) h"
                " JOIN kb_articles a ON a.tenant_id = sb_tenant() AND a.id = h.id"
                " WHERE true" SQL_KB_FILTERS " AND ($6::text IS NULL OR (h.rank, a.id)"
                "  < (sb_cursor_part($6, 1)::real, sb_cursor_part($6, 2)::bigint))"
                " ORDER BY h.rank DESC, a.id DESC LIMIT $7::int + 1",
                "real");

static int kb_articles_list(sb_http_req_t *req, void *data)
{
    sb_api_op_t *op = sb_api_op_new(req, 200, kb_list_sql, 7);
    const char *status = sb_http_req_query(req, "status");
    const char *review = sb_http_req_query(req, "needs_review");

    op->bad22 = "cursor";
    if (kb_text_param(req, "q", KB_Q_MAX, &op->params[0]) ||
        kb_language_param(req, "language", &op->params[2]) ||
        kb_text_param(req, "tag", 100, &op->params[3]) ||
        kb_text_param(req, "cursor", 200, &op->params[5]) ||
        kb_limit_param(req, 25, 100, op->buf[0], sizeof(op->buf[0])))
        return 0;
    if (status && strcmp(status, "draft") != 0 && strcmp(status, "published") != 0) {
        sb_api_respond_invalid(req, "status", "parameter \"status\" must be draft or published");
        return 0;
    }
    if (review && strcmp(review, "true") != 0 && strcmp(review, "false") != 0) {
        sb_api_respond_invalid(req, "needs_review",
                               "parameter \"needs_review\" must be true or false");
        return 0;
    }
    if (op->params[0])
        op->sql[0] = kb_search_sql;
    op->params[1] = status;
    op->params[4] = review;
    op->params[6] = op->buf[0];
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

static int kb_article_create(sb_http_req_t *req, void *data)
{
    /* $1 title, $2 body, $3 language, $4 tags, $5 status */
    static const char sql[] =
        "WITH a AS (INSERT INTO kb_articles AS a (tenant_id, title, body, language, tags, status,"
        "  author_agent_id)"
        " VALUES (sb_tenant(), $1, coalesce($2, ''), $3, coalesce(sb_kb_tags($4::jsonb), '{}'),"
        "  coalesce($5, 'draft'), sb_agent())"
        " RETURNING sb_kb_article_json(a) AS doc, a.id, a.title, a.status, a.language),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'kb.article_created',"
        "   jsonb_build_object('article', a.id, 'title', a.title, 'status', a.status,"
        "    'language', a.language) FROM a)"
        " SELECT doc FROM a";
    sb_api_op_t *op = sb_api_op_new(req, 201, sql, 5);
    if (kb_article_params(req, op, 0, 1) != 0)
        return 0;
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

static const char kb_article_get_sql[] = "SELECT sb_kb_article_json(a) FROM kb_articles a"
                                         " WHERE a.tenant_id = sb_tenant() AND a.id = $1::bigint";

static int kb_article_get(sb_http_req_t *req, void *data)
{
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, kb_article_get_sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, op);
}

/*
 * Only a change is written (and audited, with the members that changed);
 * an edit counts as a review, since updated_at moves.
 */
static int kb_article_update(sb_http_req_t *req, void *data)
{
    /* $1 id, $2 title, $3 body, $4 language, $5 tags, $6 status */
    static const char sql[] =
        "WITH o AS (SELECT * FROM kb_articles WHERE tenant_id = sb_tenant() AND id = $1::bigint"
        "  FOR UPDATE),"
        " n AS (SELECT o.id, coalesce($2, o.title) AS title, coalesce($3, o.body) AS body,"
        "  coalesce($4, o.language) AS language,"
        "  coalesce(sb_kb_tags($5::jsonb), o.tags) AS tags,"
        "  coalesce($6, o.status) AS status FROM o),"
        " u AS (UPDATE kb_articles a SET title = n.title, body = n.body,"
        "  language = n.language, tags = n.tags, status = n.status, updated_at = now()"
        "  FROM n WHERE a.tenant_id = sb_tenant() AND a.id = n.id"
        "  AND (a.title, a.body, a.language, a.tags, a.status)"
        "   IS DISTINCT FROM (n.title, n.body, n.language, n.tags, n.status)"
        "  RETURNING a.id),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, before, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'kb.article_updated',"
        "   jsonb_strip_nulls(jsonb_build_object('article', o.id,"
        "    'title', nullif(o.title, n.title), 'language', nullif(o.language, n.language),"
        "    'tags', to_jsonb(nullif(o.tags, n.tags)), 'status', nullif(o.status, n.status))),"
        "   jsonb_strip_nulls(jsonb_build_object('article', o.id,"
        "    'title', nullif(n.title, o.title), 'language', nullif(n.language, o.language),"
        "    'tags', to_jsonb(nullif(n.tags, o.tags)), 'status', nullif(n.status, o.status),"
        "    'body_changed', CASE WHEN o.body <> n.body THEN true END))"
        "  FROM o JOIN n ON n.id = o.id JOIN u ON u.id = o.id)"
        " SELECT count(*) FROM u";
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 6);
    sb_api_op_then(op, kb_article_get_sql, 1);
    op->params[0] = id;
    if (kb_article_params(req, op, 1, 0) != 0)
        return 0;
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

static int kb_article_delete(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH d AS (DELETE FROM kb_articles WHERE tenant_id = sb_tenant() AND id = $1::bigint"
        "  RETURNING id, title, status, language),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, before)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'kb.article_deleted',"
        "   jsonb_build_object('article', d.id, 'title', d.title, 'status', d.status,"
        "    'language', d.language) FROM d)"
        " SELECT EXISTS (SELECT 1 FROM d)";
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = sb_api_op_new(req, 204, sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

/*
 * Someone confirmed the article is still right: it is not due for review.
 * The body is optional: {"note": "..."} goes to the audit trail.
 */
static int kb_article_reviewed(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"note", SB_FIELD_STRING, 2, 2000, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql[] =
        "WITH u AS (UPDATE kb_articles SET reviewed_at = now()"
        "  WHERE tenant_id = sb_tenant() AND id = $1::bigint RETURNING id),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'kb.article_reviewed',"
        "   jsonb_strip_nulls(jsonb_build_object('article', u.id, 'note', $2::text)) FROM u)"
        " SELECT count(*) FROM u";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (body && sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 2);
    sb_api_op_then(op, kb_article_get_sql, 1);
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(body, "note"));
    return sb_api_op_begin(req, data, SB_ROLE_SUPERVISOR, op);
}

/* ======================== settings ======================== */

static int kb_settings_get(sb_http_req_t *req, void *data)
{
    static const char sql[] = "SELECT json_build_object('review_after_days', sb_kb_review_days())";
    return sb_api_op_begin(req, data, SB_ROLE_VIEWER, sb_api_op_new(req, 200, sql, 0));
}

static int kb_settings_put(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"review_after_days", SB_FIELD_INT, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql[] =
        "WITH o AS (SELECT sb_kb_review_days() AS days),"
        " s AS (INSERT INTO kb_settings (tenant_id, review_after_days)"
        "  VALUES (sb_tenant(), $1::integer) ON CONFLICT (tenant_id)"
        "  DO UPDATE SET review_after_days = EXCLUDED.review_after_days"
        "  RETURNING review_after_days),"
        " e AS (INSERT INTO events (tenant_id, actor_kind, actor_id, action, before, after)"
        "  SELECT sb_tenant(), sb_actor_kind(), sb_actor_id(), 'kb.settings_updated',"
        "   jsonb_build_object('review_after_days', o.days),"
        "   jsonb_build_object('review_after_days', s.review_after_days) FROM o, s)"
        " SELECT json_build_object('review_after_days', review_after_days) FROM s";
    json_t *body = sb_http_req_json(req);

    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    json_int_t days = json_integer_value(json_object_get(body, "review_after_days"));
    if (days > KB_REVIEW_MAX) {
        sb_api_respond_invalid(req, "review_after_days",
                               "field \"review_after_days\" must be from 1 to %d", KB_REVIEW_MAX);
        return 0;
    }
    sb_api_op_t *op = sb_api_op_new(req, 200, sql, 1);
    snprintf(op->buf[0], sizeof(op->buf[0]), "%" JSON_INTEGER_FORMAT, days);
    op->params[0] = op->buf[0];
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

/* ======================== public ======================== */

/*
 * Anyone may read a tenant's published articles: there is no caller, so
 * the transaction enters the tenant named by the slug (none when the slug
 * names nothing, and then every statement sees no rows) and runs as the
 * pool's role, under row-level security like any request.
 */
static const char kb_public_enter_sql[] =
    "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
    " WHERE slug = $1), ''), true), set_config('switchboard.agent_id', '', true),"
    " set_config('switchboard.api_key_id', '', true)";

typedef struct {
    sb_http_req_t *req;
    const char *slug[1];
    const char *sql;
    int nparams;
    const char *params[4];
    char buf[2][32];
    int no_content;       /* answer 204 when the statement says true */
    const char *notfound; /* the 404's message */
} kb_public_t;

static kb_public_t *kb_public_new(sb_http_req_t *req, const char *sql, int nparams)
{
    kb_public_t *p = sb_pool_calloc(sb_http_req_pool(req), sizeof(*p));
    p->req = req;
    p->sql = sql;
    p->nparams = nparams;
    p->notfound = "no such article";
    return p;
}

static void kb_public_done(int status, PGresult *const *res, int n, void *data)
{
    kb_public_t *p = data;

    if (status != 0) {
        sb_api_respond_db_error(p->req, status, res, n);
        return;
    }
    const PGresult *r = res[1];
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0) ||
        (p->no_content && strcmp(PQgetvalue(r, 0, 0), "t") != 0)) {
        sb_http_respond_error(p->req, 404, "not_found", "%s", p->notfound);
        return;
    }
    if (p->no_content) {
        sb_http_respond(p->req, 204, NULL, "", 0);
        return;
    }
    sb_http_respond(p->req, 200, "application/json", PQgetvalue(r, 0, 0),
                    (size_t)PQgetlength(r, 0, 0));
}

/* Runs p in the tenant of the path.  Returns 0 or SB_EUNAVAILABLE (not answered). */
static int kb_public_run(sb_api_t *api, kb_public_t *p)
{
    const char *slug = sb_http_req_param(p->req, "tenant");
    size_t len = slug ? strlen(slug) : 0;

    /* A slug that cannot exist names no tenant: no need to ask. */
    if (len == 0 || len > 63 ||
        slug[strspn(slug, "abcdefghijklmnopqrstuvwxyz0123456789-")] != '\0' || slug[0] == '-') {
        sb_http_respond_error(p->req, 404, "not_found", "%s", p->notfound);
        return 0;
    }
    p->slug[0] = slug;
    sb_db_stmt_t s[2] = {{kb_public_enter_sql, 1, p->slug}, {p->sql, p->nparams, p->params}};
    return sb_db_query(api->db, s, 2, kb_public_done, p) == 0 ? 0 : SB_EUNAVAILABLE;
}

/*
 * Published articles of a tenant that exists: no row (404) for one that
 * does not.  One page only (next_cursor is always null): readers refine
 * the search instead.
 */
#define SQL_KB_PUBLIC_PAGE(item, order, inner)                                                 \
    "SELECT json_build_object('items', coalesce(json_agg(" item " ORDER BY " order "), '[]')," \
    " 'next_cursor', NULL)"                                                                    \
    " FROM (" inner ") x HAVING sb_tenant() IS NOT NULL"

/* $1 q (NULL here), $2 language, $3 limit: the newest first. */
static const char kb_public_list_sql[] = SQL_KB_PUBLIC_PAGE(
    "(sb_kb_public_json(x.a) - 'body') || jsonb_build_object('snippet',"
    " left(regexp_replace(left((x.a).body, 400), '\\s+', ' ', 'g'), 200))",
    "(x.a).updated_at DESC, (x.a).id DESC",
    "SELECT a FROM kb_articles a WHERE a.tenant_id = sb_tenant() AND a.status = 'published'"
    " AND $1::text IS NULL AND ($2::text IS NULL OR a.language = $2 OR a.language LIKE $2 || '-%')"
    " ORDER BY a.updated_at DESC, a.id DESC LIMIT $3::int");

/* $1 q, $2 language, $3 limit: the best match first. */
static const char kb_public_search_sql[] =
    SQL_KB_PUBLIC_PAGE("(sb_kb_public_json(x.a) - 'body') || jsonb_build_object('rank', x.rank,"
                       " 'snippet', sb_kb_snippet((x.a).language, (x.a).body, $1))",
                       "x.rank DESC, (x.a).id DESC",
                       "SELECT a, h.rank FROM sb_kb_search($1, false) h"
                       " JOIN kb_articles a ON a.tenant_id = sb_tenant() AND a.id = h.id"
                       " WHERE a.status = 'published'"
                       " AND ($2::text IS NULL OR a.language = $2 OR a.language LIKE $2 || '-%')"
                       " ORDER BY h.rank DESC, a.id DESC LIMIT $3::int");

static int kb_public_list(sb_http_req_t *req, void *data)
{
    kb_public_t *p = kb_public_new(req, kb_public_list_sql, 3);

    if (kb_text_param(req, "q", KB_Q_MAX, &p->params[0]) ||
        kb_language_param(req, "lang", &p->params[1]) ||
        kb_limit_param(req, 10, 50, p->buf[0], sizeof(p->buf[0])))
        return 0;
    if (p->params[0])
        p->sql = kb_public_search_sql;
    p->params[2] = p->buf[0];
    p->notfound = "no such knowledge base";
    return kb_public_run(data, p);
}

/* Reading an article counts a view (a HEAD request does not). */
static int kb_public_get(sb_http_req_t *req, void *data)
{
    static const char sql_view[] =
        "UPDATE kb_articles a SET views = a.views + 1"
        " WHERE a.tenant_id = sb_tenant() AND a.id = $1::bigint AND a.status = 'published'"
        " RETURNING sb_kb_public_json(a)";
    static const char sql_head[] =
        "SELECT sb_kb_public_json(a) FROM kb_articles a"
        " WHERE a.tenant_id = sb_tenant() AND a.id = $1::bigint AND a.status = 'published'";
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL) {
        sb_http_respond_error(req, 404, "not_found", "no such article");
        return 0;
    }
    int head = strcmp(sb_http_req_method(req), "HEAD") == 0;
    kb_public_t *p = kb_public_new(req, head ? sql_head : sql_view, 1);
    p->params[0] = id;
    return kb_public_run(data, p);
}

static int kb_public_feedback(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"helpful", SB_FIELD_BOOL, 1, 0, NULL},
        {NULL, 0, 0, 0, NULL},
    };
    static const char sql[] =
        "WITH u AS (UPDATE kb_articles SET helpful = helpful + $2::integer,"
        "  not_helpful = not_helpful + 1 - $2::integer"
        "  WHERE tenant_id = sb_tenant() AND id = $1::bigint AND status = 'published'"
        "  RETURNING 1)"
        " SELECT EXISTS (SELECT 1 FROM u)";
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL) {
        sb_http_respond_error(req, 404, "not_found", "no such article");
        return 0;
    }
    if (sb_api_check(req, sb_http_req_json(req), NULL, fields) != 0)
        return 0;
    kb_public_t *p = kb_public_new(req, sql, 2);
    p->no_content = 1;
    p->params[0] = id;
    p->params[1] = json_is_true(json_object_get(sb_http_req_json(req), "helpful")) ? "1" : "0";
    return kb_public_run(data, p);
}

int sb_api_kb_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", ARTICLES, 0, kb_articles_list, api);
    rc |= sb_router_add(r, "POST", ARTICLES, SB_ROUTE_JSON, kb_article_create, api);
    rc |= sb_router_add(r, "GET", ARTICLES "/{id}", 0, kb_article_get, api);
    rc |= sb_router_add(r, "PATCH", ARTICLES "/{id}", SB_ROUTE_JSON, kb_article_update, api);
    rc |= sb_router_add(r, "DELETE", ARTICLES "/{id}", 0, kb_article_delete, api);
    rc |= sb_router_add(r, "POST", ARTICLES "/{id}/reviewed", SB_ROUTE_JSON, kb_article_reviewed,
                        api);
    rc |= sb_router_add(r, "GET", TENANT "/kb/settings", 0, kb_settings_get, api);
    rc |= sb_router_add(r, "PUT", TENANT "/kb/settings", SB_ROUTE_JSON, kb_settings_put, api);
    rc |= sb_router_add(r, "GET", PUBLIC, 0, kb_public_list, api);
    rc |= sb_router_add(r, "GET", PUBLIC "/{id}", 0, kb_public_get, api);
    rc |= sb_router_add(r, "POST", PUBLIC "/{id}/feedback", SB_ROUTE_JSON, kb_public_feedback, api);
    return rc ? SB_EINVAL : 0;
}
