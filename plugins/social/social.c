/*
 * social.c - the pieces the social and SMS plugins share (see social.h).
 * Crypto is libsodium's (HMAC-SHA256, constant-time comparison) and GLib's
 * (HMAC-SHA1, which libsodium lacks; base64; URI escaping).  No platform's
 * payload is parsed here: each plugin reads its own.
 */
#include "social.h"

#include <glib.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================== verifying senders ======================== */

int sb_social_token_equal(const char *expected, const char *given)
{
    unsigned char a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];

    if (expected == NULL || given == NULL || expected[0] == '\0')
        return 0;
    /* Hashing first makes the comparison independent of the lengths too. */
    crypto_generichash(a, sizeof(a), (const unsigned char *)expected, strlen(expected), NULL, 0);
    crypto_generichash(b, sizeof(b), (const unsigned char *)given, strlen(given), NULL, 0);
    return sodium_memcmp(a, b, sizeof(a)) == 0;
}

int sb_social_meta_verify(const char *secret, const void *body, size_t len, const char *header)
{
    unsigned char want[crypto_auth_hmacsha256_BYTES], got[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    size_t n = 0;
    const char *end;

    if (secret == NULL || secret[0] == '\0' || header == NULL || strncmp(header, "sha256=", 7) != 0)
        return SB_EINVAL;
    if (sodium_hex2bin(got, sizeof(got), header + 7, strlen(header + 7), NULL, &n, &end) != 0 ||
        n != sizeof(got) || *end != '\0')
        return SB_EINVAL;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, body, len);
    crypto_auth_hmacsha256_final(&st, want);
    return sodium_memcmp(want, got, sizeof(want)) == 0 ? 0 : SB_EINVAL;
}

static int social_pair_cmp(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    int c = strcmp(x[0], y[0]);
    return c ? c : strcmp(x[1], y[1]);
}

int sb_social_twilio_verify(const char *token, const char *url, const char *body, size_t len,
                            const char *header)
{
    sb_social_form_t form;
    int rc = SB_EINVAL;

    if (token == NULL || token[0] == '\0' || url == NULL || header == NULL ||
        sb_social_form_parse(body, len, &form) != 0)
        return SB_EINVAL;
    const char **pairs = g_new(const char *, form.n * 2 + 1);
    for (size_t i = 0; i < form.n; i++) {
        pairs[2 * i] = form.names[i];
        pairs[2 * i + 1] = form.values[i];
    }
    qsort(pairs, form.n, 2 * sizeof(char *), social_pair_cmp);
    GHmac *h = g_hmac_new(G_CHECKSUM_SHA1, (const guchar *)token, strlen(token));
    g_hmac_update(h, (const guchar *)url, -1);
    for (size_t i = 0; i < 2 * form.n; i++)
        g_hmac_update(h, (const guchar *)pairs[i], -1);
    guint8 digest[20];
    gsize dlen = sizeof(digest);
    g_hmac_get_digest(h, digest, &dlen);
    g_hmac_unref(h);
    gchar *want = g_base64_encode(digest, dlen);
    if (strlen(want) == strlen(header) && sodium_memcmp(want, header, strlen(want)) == 0)
        rc = 0;
    g_free(want);
    g_free(pairs);
    sb_social_form_free(&form);
    return rc;
}

/* ======================== form bodies ======================== */

/* One percent-encoded form field, '+' being a space; NULL when malformed. */
static char *social_form_decode(const char *s, size_t len)
{
    char *plus = g_strndup(s, len);
    for (char *c = plus; *c; c++)
        if (*c == '+')
            *c = ' ';
    char *out = g_uri_unescape_string(plus, NULL);
    g_free(plus);
    return out;
}

int sb_social_form_parse(const char *body, size_t len, sb_social_form_t *form)
{
    memset(form, 0, sizeof(*form));
    if (body == NULL || strlen(body) != len)
        return SB_EINVAL;
    gchar **parts = g_strsplit(body, "&", -1);
    size_t n = g_strv_length(parts);
    form->names = g_new0(char *, n + 1);
    form->values = g_new0(char *, n + 1);
    for (size_t i = 0; i < n; i++) {
        if (parts[i][0] == '\0')
            continue;
        const char *eq = strchr(parts[i], '=');
        size_t nlen = eq ? (size_t)(eq - parts[i]) : strlen(parts[i]);
        char *name = social_form_decode(parts[i], nlen);
        char *value = social_form_decode(eq ? eq + 1 : "", eq ? strlen(eq + 1) : 0);
        if (name == NULL || value == NULL) {
            g_free(name);
            g_free(value);
            g_strfreev(parts);
            sb_social_form_free(form);
            return SB_EINVAL;
        }
        form->names[form->n] = name;
        form->values[form->n++] = value;
    }
    g_strfreev(parts);
    return 0;
}

const char *sb_social_form_get(const sb_social_form_t *form, const char *name)
{
    for (size_t i = 0; i < form->n; i++)
        if (strcmp(form->names[i], name) == 0)
            return form->values[i];
    return NULL;
}

void sb_social_form_free(sb_social_form_t *form)
{
    g_strfreev(form->names);
    g_strfreev(form->values);
    memset(form, 0, sizeof(*form));
}

char *sb_social_form_encode(const char *const *pairs, size_t npairs)
{
    GString *s = g_string_new(NULL);

    for (size_t i = 0; i < npairs; i++) {
        if (pairs[2 * i + 1] == NULL)
            continue;
        if (s->len)
            g_string_append_c(s, '&');
        g_string_append_uri_escaped(s, pairs[2 * i], NULL, FALSE);
        g_string_append_c(s, '=');
        g_string_append_uri_escaped(s, pairs[2 * i + 1], NULL, FALSE);
    }
    char *out = strdup(s->str);
    g_string_free(s, TRUE);
    return out;
}

/* ======================== acknowledging a webhook ======================== */

struct sb_social_batch {
    const sb_host_api_t *api;
    sb_plugin_ctx_t *ctx;
    sb_http_req_t *req;
    char *ok_type, *ok_body;
    int pending; /* pieces in flight, plus one until batch_end */
    int failed;  /* a piece could not be stored: the platform must retry */
    int gone;    /* the tenant does not exist */
};

void sb_social_respond(const sb_host_api_t *api, sb_http_req_t *req, int status, const char *text)
{
    if (status == 503)
        api->res_header(req, "Retry-After", "5");
    api->respond(req, status, "text/plain", text, strlen(text));
}

sb_social_batch_t *sb_social_batch_new(const sb_host_api_t *api, sb_plugin_ctx_t *p,
                                       sb_http_req_t *req, const char *ok_type, const char *ok_body)
{
    sb_social_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        abort(); /* as the host's allocator: the worker restarts */
    b->api = api;
    b->ctx = p;
    b->req = req;
    b->ok_type = strdup(ok_type);
    b->ok_body = strdup(ok_body);
    b->pending = 1;
    return b;
}

static void social_batch_piece_done(sb_social_batch_t *b)
{
    if (--b->pending > 0)
        return;
    if (b->gone)
        sb_social_respond(b->api, b->req, 404, "no such tenant\n");
    else if (b->failed)
        sb_social_respond(b->api, b->req, 503, "not stored; retry\n");
    else
        b->api->respond(b->req, 200, b->ok_type, b->ok_body, strlen(b->ok_body));
    free(b->ok_type);
    free(b->ok_body);
    free(b);
}

/* A piece's outcome: what a redelivery could fix makes the batch fail. */
static void social_batch_note(sb_social_batch_t *b, int status)
{
    if (status == SB_ENOENT)
        b->gone = 1;
    else if (status == SB_EINVAL)
        b->api->log(b->ctx, SB_LOG_WARNING, "a webhook carried a message that cannot be stored");
    else if (status != 0)
        b->failed = 1;
}

static void social_batch_ingested(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r,
                                  void *data)
{
    sb_social_batch_t *b = data;
    social_batch_note(b, status);
    social_batch_piece_done(b);
}

void sb_social_batch_ingest(sb_social_batch_t *b, const sb_inbound_t *m)
{
    int rc = b->api->ingest(b->ctx, m, social_batch_ingested, b);
    if (rc != 0) {
        social_batch_note(b, rc);
        return;
    }
    b->pending++;
}

static void social_batch_status_done(sb_plugin_ctx_t *p, int status, void *data)
{
    sb_social_batch_t *b = data;
    social_batch_note(b, status);
    social_batch_piece_done(b);
}

void sb_social_batch_status(sb_social_batch_t *b, const sb_channel_t *ch, const char *platform_id,
                            const char *status, const char *detail)
{
    int rc = b->api->message_status(b->ctx, ch, platform_id, status, detail,
                                    social_batch_status_done, b);
    if (rc != 0) {
        social_batch_note(b, rc);
        return;
    }
    b->pending++;
}

void sb_social_batch_end(sb_social_batch_t *b)
{
    social_batch_piece_done(b);
}

void sb_social_meta_challenge(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                              sb_http_req_t *req)
{
    const char *mode = api->req_query(req, "hub.mode");
    const char *token = api->req_query(req, "hub.verify_token");
    const char *challenge = api->req_query(req, "hub.challenge");

    if (mode == NULL || token == NULL || challenge == NULL || strcmp(mode, "subscribe") != 0) {
        sb_social_respond(api, req, 400,
                          "need hub.mode=subscribe, hub.verify_token and hub.challenge\n");
        return;
    }
    if (!sb_social_token_equal(api->channel_secret(p, ch, "verify_token"), token)) {
        sb_social_respond(api, req, 401, "wrong verify token\n");
        return;
    }
    api->respond(req, 200, "text/plain", challenge, strlen(challenge));
}

const char *sb_social_post_body(const sb_host_api_t *api, sb_http_req_t *req, size_t *len)
{
    if (strcmp(api->req_method(req), "POST") != 0) {
        sb_social_respond(api, req, 400, "the platform posts to this webhook\n");
        return NULL;
    }
    const char *body = api->req_body(req, len);
    if (*len > SB_SOCIAL_MAX_BODY) {
        sb_social_respond(api, req, 413, "body too large\n");
        return NULL;
    }
    return body;
}

json_t *sb_social_meta_body(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                            sb_http_req_t *req)
{
    size_t len;
    const char *body = sb_social_post_body(api, req, &len);

    if (body == NULL)
        return NULL;
    if (sb_social_meta_verify(api->channel_secret(p, ch, "app_secret"), body, len,
                              api->req_header(req, "x-hub-signature-256")) != 0) {
        sb_social_respond(api, req, 401, "bad signature\n");
        return NULL;
    }
    json_t *doc = json_loadb(body, len, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        sb_social_respond(api, req, 400, "not a JSON object\n");
        return NULL;
    }
    return doc;
}

int sb_social_init(const sb_host_api_t **api, sb_plugin_ctx_t *p, const sb_host_api_t *host,
                   const char *name)
{
    *api = host;
    if (host->abi_minor < 2 || host->size < sizeof(sb_host_api_t)) {
        host->log(p, SB_LOG_ERR, "the %s channel needs a server with plugin ABI 1.2", name);
        return SB_EINVAL;
    }
    return 0;
}

/* ======================== settings ======================== */

int sb_social_validate(const char *json, const char *const *keys, char *field, size_t field_len,
                       char *message, size_t message_len)
{
    json_t *s = json_loads(json, 0, NULL);
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(s, key, v)
    {
        int known = 0;
        for (size_t i = 0; keys[i]; i++)
            known |= strcmp(keys[i], key) == 0;
        snprintf(field, field_len, "settings.%s", key);
        if (!known) {
            snprintf(message, message_len, "unknown setting");
            rc = SB_EINVAL;
        } else if (!json_is_string(v) || json_string_length(v) > 200) {
            snprintf(message, message_len, "must be a string of at most 200 bytes");
            rc = SB_EINVAL;
        } else if (strcmp(key, "api_base") == 0 &&
                   strncmp(json_string_value(v), "https://", 8) != 0 &&
                   strncmp(json_string_value(v), "http://", 7) != 0) {
            snprintf(message, message_len, "must be an http:// or https:// URL");
            rc = SB_EINVAL;
        }
        if (rc != 0)
            break;
    }
    json_decref(s);
    return rc;
}

int sb_social_validate_id(const char *json, const char *key, int required, char *field,
                          size_t field_len, char *message, size_t message_len)
{
    json_t *s = json_loads(json, 0, NULL);
    const char *v = json_string_value(json_object_get(s, key));
    int rc = 0;

    snprintf(field, field_len, "settings.%s", key);
    if (v == NULL && required) {
        snprintf(message, message_len, "is required: only its events are taken");
        rc = SB_EINVAL;
    } else if (v && (v[0] == '\0' || strlen(v) >= SB_SOCIAL_ID_LEN ||
                     strspn(v, "0123456789") != strlen(v))) {
        snprintf(message, message_len, "must be the platform's numeric id (at most %d digits)",
                 SB_SOCIAL_ID_LEN - 1);
        rc = SB_EINVAL;
    }
    json_decref(s);
    return rc;
}

const char *sb_social_setting(const sb_channel_t *ch, const char *key, char *buf, size_t len)
{
    json_t *s = json_loads(ch->settings ? ch->settings : "{}", 0, NULL);
    const char *v = json_string_value(json_object_get(s, key));
    const char *out = NULL;

    if (v && v[0] && strlen(v) < len) {
        memcpy(buf, v, strlen(v) + 1);
        out = buf;
    }
    json_decref(s);
    return out;
}

const char *sb_social_printf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n < len)
        return buf;
    size_t end = strlen(buf);
    const char *last = g_utf8_find_prev_char(buf, buf + end);
    if (last && g_utf8_get_char_validated(last, (gssize)(buf + end - last)) == (gunichar)-2)
        buf[last - buf] = '\0'; /* the last character lost its tail */
    return buf;
}

const char *sb_social_location_text(json_t *loc, char *buf, size_t len)
{
    snprintf(buf, len, "(location %.6f, %.6f)", json_number_value(json_object_get(loc, "latitude")),
             json_number_value(json_object_get(loc, "longitude")));
    return buf;
}

/* ======================== calling a platform ======================== */

const char *sb_social_id_copy(const char *id, char *buf, size_t len)
{
    if (id == NULL || strlen(id) >= len)
        return NULL;
    memcpy(buf, id, strlen(id) + 1);
    return buf;
}

typedef struct {
    const sb_host_api_t *api;
    sb_social_id_fn id_of;
    sb_send_cb done;
    void *send_data;
} social_send_t;

/* Retry-After seconds as the host takes them: positive, at most a day, as int. */
static int social_retry_seconds(long s)
{
    return s <= 0 ? 0 : s > 86400 ? 86400 : (int)s;
}

/* Whether a Graph API error (4xx) says to try again: rate limits and transient errors. */
static int social_meta_transient(json_t *error)
{
    static const json_int_t codes[] = {2, 4, 17, 32, 613, 80007, 130429, 131056};
    json_int_t code = json_integer_value(json_object_get(error, "code"));

    if (json_is_true(json_object_get(error, "is_transient")))
        return 1;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (json_is_integer(json_object_get(error, "code")) && code == codes[i])
            return 1;
    return 0;
}

int sb_social_send_result(long status, const char *body, size_t len, long retry_after, int *retry_s)
{
    *retry_s = 0;
    if (status >= 200 && status < 300)
        return SB_SENT;
    json_t *doc = body ? json_loadb(body, len, 0, NULL) : NULL;
    int retry = status == 429 || status >= 500 ||
                (status >= 400 && social_meta_transient(json_object_get(doc, "error")));
    if (retry) {
        /* Telegram says how long in its body (parameters.retry_after), not a header. */
        json_t *tg = json_object_get(json_object_get(doc, "parameters"), "retry_after");
        *retry_s = social_retry_seconds(retry_after > 0       ? retry_after
                                        : json_is_integer(tg) ? (long)json_integer_value(tg)
                                                              : 0);
    }
    json_decref(doc);
    return retry ? SB_RETRY : SB_FAILED;
}

static void social_sent(sb_plugin_ctx_t *p, int rc, const sb_fetch_res_t *res, void *data)
{
    social_send_t *s = data;
    char detail[256], id[256];
    int result, retry_s = 0;

    if (rc != 0) {
        snprintf(detail, sizeof(detail), "could not reach the platform: %s",
                 res->error ? res->error : "no answer");
        result = rc == SB_EINVAL ? SB_FAILED : SB_RETRY;
    } else if (res->status >= 200 && res->status < 300) {
        json_t *answer = json_loadb(res->body, res->len, 0, NULL);
        const char *pid = s->id_of && answer ? s->id_of(answer, id, sizeof(id)) : NULL;
        s->api->send_report(p, s->send_data, pid, 0);
        json_decref(answer);
        s->done(p, SB_SENT, NULL, s->send_data);
        free(s);
        return;
    } else {
        result =
            sb_social_send_result(res->status, res->body, res->len, res->retry_after, &retry_s);
        sb_social_printf(detail, sizeof(detail), "the platform answered %ld: %s", res->status,
                         res->body ? res->body : "");
    }
    if (result == SB_RETRY)
        s->api->send_report(p, s->send_data, NULL, retry_s);
    s->done(p, result, detail, s->send_data);
    free(s);
}

int sb_social_send(const sb_host_api_t *api, sb_plugin_ctx_t *p, const char *url,
                   const char *const *headers, const char *content_type, const char *body,
                   sb_social_id_fn id_of, sb_send_cb done, void *send_data)
{
    const char *lines[8];
    size_t n = 0;
    char ctype[128];

    snprintf(ctype, sizeof(ctype), "Content-Type: %s", content_type);
    lines[n++] = ctype;
    for (size_t i = 0; headers && headers[i] && n < sizeof(lines) / sizeof(lines[0]) - 1; i++)
        lines[n++] = headers[i];
    lines[n] = NULL;
    if (body == NULL)
        return SB_EINVAL;
    social_send_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->api = api;
    s->id_of = id_of;
    s->done = done;
    s->send_data = send_data;
    sb_fetch_req_t req = {"POST", url, lines, body, strlen(body), 0};
    int rc = api->fetch(p, &req, social_sent, s);
    if (rc != 0)
        free(s);
    return rc;
}

int sb_social_send_json(const sb_host_api_t *api, sb_plugin_ctx_t *p, const char *url,
                        const char *token, json_t *doc, sb_social_id_fn id_of, sb_send_cb done,
                        void *send_data)
{
    /* NULL doc (json_pack refused a string that is not UTF-8) or no memory. */
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    if (text == NULL)
        return SB_EINVAL;
    char *auth = token ? g_strdup_printf("Authorization: Bearer %s", token) : NULL;
    const char *headers[] = {auth, NULL};
    int rc = sb_social_send(api, p, url, headers, "application/json", text, id_of, done, send_data);
    g_free(auth);
    free(text);
    return rc;
}

/* ======================== files left on a platform ======================== */

typedef struct {
    const sb_host_api_t *api;
    const sb_channel_t *ch;
    char *header;
    sb_social_locate_fn locate;
    sb_file_cb done;
    void *data;
} social_file_t;

static void social_file_end(sb_plugin_ctx_t *p, social_file_t *f, int status, const void *bytes,
                            size_t len)
{
    f->done(p, status, bytes, len, f->data);
    g_free(f->header);
    free(f);
}

static int social_file_get(sb_plugin_ctx_t *p, social_file_t *f, const char *url);

static void social_file_got(sb_plugin_ctx_t *p, int rc, const sb_fetch_res_t *res, void *data)
{
    social_file_t *f = data;

    if (rc != 0 || res->status < 200 || res->status >= 300) {
        int gone = rc == 0 && (res->status == 404 || res->status == 410);
        social_file_end(p, f, gone ? SB_ENOENT : SB_EUNAVAILABLE, NULL, 0);
        return;
    }
    if (f->locate == NULL) {
        social_file_end(p, f, 0, res->body, res->len);
        return;
    }
    /* The first answer said where the bytes are: fetch them next. */
    json_t *answer = json_loadb(res->body, res->len, 0, NULL);
    char *url = answer ? f->locate(f->api, p, f->ch, answer) : NULL;
    json_decref(answer);
    f->locate = NULL;
    if (url == NULL || social_file_get(p, f, url) != 0)
        social_file_end(p, f, url ? SB_EUNAVAILABLE : SB_ENOENT, NULL, 0);
    free(url);
}

static int social_file_get(sb_plugin_ctx_t *p, social_file_t *f, const char *url)
{
    const char *headers[] = {f->header, NULL};
    sb_fetch_req_t req = {NULL, url, headers, NULL, 0, 0};
    return f->api->fetch(p, &req, social_file_got, f);
}

int sb_social_path_safe(const char *id)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:";
    return id && id[0] && id[0] != '.' && strspn(id, ok) == strlen(id);
}

int sb_social_fetch_file(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                         const char *url, const char *header, sb_social_locate_fn locate,
                         sb_file_cb done, void *data)
{
    social_file_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    f->api = api;
    f->ch = ch;
    f->header = g_strdup(header);
    f->locate = locate;
    f->done = done;
    f->data = data;
    int rc = social_file_get(p, f, url);
    if (rc != 0) {
        g_free(f->header);
        free(f);
    }
    return rc;
}
