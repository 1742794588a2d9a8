/*
 * chat - live chat on the tenant's website.  Serves the widget
 * (/chat/{tenant}/widget.js), a demo page (/chat/{tenant}/) and the
 * visitors' WebSocket (/chat/{tenant}/ws).  A visitor's message is
 * acknowledged only after the host has committed it; agents' replies reach
 * the visitor from the event stream, in whichever worker the visitor is
 * connected to, and a visitor who was away gets what they missed from the
 * thread's history when they come back.  The protocol is in README.md.
 */
#include <switchboard/plugin.h>

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_CLIENT_ID_MAX 64
#define CHAT_TEXT_MAX 10000
#define CHAT_VISITOR_LEN 24 /* hex of 12 random bytes */

extern const char chat_widget_js[];
extern const size_t chat_widget_js_len;
extern const char chat_demo_html[];
extern const size_t chat_demo_html_len;

typedef struct visitor {
    struct visitor *prev, *next;
    sb_ws_t *ws; /* NULL once closed */
    int refs;    /* the connection, plus each ingest or history in flight */
    char tenant[64];
    char id[CHAT_VISITOR_LEN + 1];
    char name[128];
    long long last;     /* the last message id the visitor has been sent */
    int fetching;       /* a history fetch is in flight */
    uint64_t typing_at; /* when the last typing notice went to the agents */
    int refetch;        /* another event arrived meanwhile */
} visitor_t;

typedef struct {
    visitor_t *v;
    char client_id[CHAT_CLIENT_ID_MAX + 1];
} pending_t;

static const sb_host_api_t *api;
static sb_plugin_ctx_t *chat_ctx;
static unsigned char chat_key[32];
static visitor_t *visitors;

/* ======================== visitors ======================== */

static void visitor_unref(visitor_t *v)
{
    if (--v->refs > 0)
        return;
    free(v);
}

/* Sends one JSON document to the visitor (ignored once closed). */
static void visitor_send(visitor_t *v, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text && v->ws)
        api->ws_send(v->ws, text, strlen(text));
    free(text);
}

/* token = visitor id "." base64url(HMAC-SHA256(tenant ":" visitor id)) */
static void chat_token(const char *tenant, const char *visitor, char *out, size_t len)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char msg[160];
    char b64[64];

    snprintf(msg, sizeof(msg), "%s:%s", tenant, visitor);
    crypto_auth_hmacsha256(mac, (const unsigned char *)msg, strlen(msg), chat_key);
    sodium_bin2base64(b64, sizeof(b64), mac, sizeof(mac), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, len, "%s.%s", visitor, b64);
}

/* The visitor id of a valid token for this tenant, into id; 0 or -1. */
static int chat_token_check(const char *tenant, const char *token, char *id)
{
    char expect[128];
    const char *dot = token ? strchr(token, '.') : NULL;

    if (dot == NULL || dot - token != CHAT_VISITOR_LEN)
        return -1;
    memcpy(id, token, CHAT_VISITOR_LEN);
    id[CHAT_VISITOR_LEN] = '\0';
    for (int i = 0; i < CHAT_VISITOR_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return -1;
    chat_token(tenant, id, expect, sizeof(expect));
    if (strlen(expect) != strlen(token) || sodium_memcmp(expect, token, strlen(token)) != 0)
        return -1;
    return 0;
}

/* ======================== history ======================== */

static void visitor_fetch(visitor_t *v);

static void visitor_history(sb_plugin_ctx_t *p, int status, const char *json, void *data)
{
    visitor_t *v = data;
    v->fetching = 0;
    if (status == 0 && v->ws) {
        json_t *list = json_loads(json, 0, NULL);
        size_t i;
        json_t *m;
        json_array_foreach(list, i, m)
        {
            long long id = (long long)json_integer_value(json_object_get(m, "id"));
            if (id <= v->last)
                continue;
            v->last = id;
            const char *dir = json_string_value(json_object_get(m, "direction"));
            visitor_send(v, json_pack("{s:s,s:s,s:I,s:O,s:O}", "type", "message", "from",
                                      strcmp(dir, "outbound") == 0 ? "agent" : "visitor", "id",
                                      (json_int_t)id, "text", json_object_get(m, "text"), "at",
                                      json_object_get(m, "at")));
        }
        json_decref(list);
    } else if (status == SB_ENOENT && v->ws) {
        api->ws_close(v->ws, 4404, "no such tenant");
    }
    if (v->refetch && v->ws) {
        v->refetch = 0;
        visitor_fetch(v);
    }
    visitor_unref(v);
}

/* Sends the visitor the thread's messages after the last one sent. */
static void visitor_fetch(visitor_t *v)
{
    if (v->fetching) {
        v->refetch = 1;
        return;
    }
    v->refs++;
    v->fetching = 1;
    if (api->thread_messages(chat_ctx, v->tenant, "chat", v->id, v->last, visitor_history, v) !=
        0) {
        v->fetching = 0;
        visitor_unref(v);
    }
}

/* An agent replied somewhere: is it one of our visitors' threads? */
static void chat_event(sb_plugin_ctx_t *p, const char *json, void *data)
{
    json_t *ev = json_loads(json, 0, NULL);
    const char *channel = json_string_value(json_object_get(ev, "channel"));
    const char *dir = json_string_value(json_object_get(ev, "direction"));
    const char *thread = json_string_value(json_object_get(ev, "thread_key"));
    const char *tenant = json_string_value(json_object_get(ev, "tenant"));

    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *from = json_string_value(json_object_get(ev, "from"));
    if (type && from && thread && tenant && channel && strcmp(type, "typing") == 0 &&
        strcmp(from, "agent") == 0 && strcmp(channel, "chat") == 0) {
        for (visitor_t *v = visitors; v; v = v->next)
            if (v->ws && strcmp(v->id, thread) == 0 && strcmp(v->tenant, tenant) == 0)
                visitor_send(v, json_pack("{s:s}", "type", "typing"));
    } else if (channel && dir && thread && tenant && strcmp(channel, "chat") == 0 &&
               strcmp(dir, "outbound") == 0) {
        for (visitor_t *v = visitors; v; v = v->next)
            if (v->ws && strcmp(v->id, thread) == 0 && strcmp(v->tenant, tenant) == 0)
                visitor_fetch(v);
    }
    json_decref(ev);
}

/* ======================== visitor messages ======================== */

static void chat_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    pending_t *pm = data;
    visitor_t *v = pm->v;

    if (status == 0) {
        visitor_send(v, json_pack("{s:s,s:s,s:I}", "type", "ack", "client_id", pm->client_id,
                                  "ticket", (json_int_t)r->ticket));
        /* The visitor's own message is in the thread now: do not send it back. */
        if ((long long)r->message > v->last && !r->duplicate)
            v->last = (long long)r->message;
    } else {
        visitor_send(
            v, json_pack("{s:s,s:s,s:b,s:s}", "type", "error", "client_id", pm->client_id, "retry",
                         status == SB_EUNAVAILABLE || status == SB_EIO, "message",
                         status == SB_ENOENT ? "no such tenant" : "not stored; send it again"));
    }
    free(pm);
    visitor_unref(v);
}

static void chat_error(visitor_t *v, const char *client_id, const char *message)
{
    visitor_send(v, json_pack("{s:s,s:s?,s:b,s:s}", "type", "error", "client_id", client_id,
                              "retry", 0, "message", message));
}

static void chat_on_text(sb_ws_t *ws, const char *text, size_t len, void *data)
{
    visitor_t *v = data;
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *cid = json_string_value(json_object_get(m, "client_id"));
    const char *body = json_string_value(json_object_get(m, "text"));
    const char *name = json_string_value(json_object_get(m, "name"));

    if (type == NULL) {
        chat_error(v, NULL, "expected a JSON object with a \"type\"");
    } else if (strcmp(type, "typing") == 0) {
        /* At most one notice a second per visitor: typing sends many. */
        uint64_t now = uv_now(api->loop(chat_ctx));
        if (now - v->typing_at >= 1000) {
            v->typing_at = now;
            api->typing(chat_ctx, v->tenant, "chat", v->id);
        }
    } else if (strcmp(type, "message") != 0) {
        chat_error(v, cid, "unknown type");
    } else if (cid == NULL || strlen(cid) == 0 || strlen(cid) > CHAT_CLIENT_ID_MAX) {
        chat_error(v, NULL, "a message needs a client_id of 1 to 64 characters");
    } else if (body == NULL || body[0] == '\0' || strlen(body) > CHAT_TEXT_MAX) {
        chat_error(v, cid, "a message needs a text of 1 to 10000 bytes");
    } else {
        char ext[CHAT_VISITOR_LEN + CHAT_CLIENT_ID_MAX + 2];
        snprintf(ext, sizeof(ext), "%s:%s", v->id, cid);
        if (name && strlen(name) < sizeof(v->name))
            snprintf(v->name, sizeof(v->name), "%s", name);
        sb_inbound_t in = {
            .tenant = v->tenant,
            .channel = "chat",
            .external_id = ext,
            .identity_kind = "chat",
            .identity_value = v->id,
            .sender_name = v->name[0] ? v->name : NULL,
            .thread_key = v->id,
            .text = body,
        };
        pending_t *pm = calloc(1, sizeof(*pm));
        if (pm) {
            pm->v = v;
            snprintf(pm->client_id, sizeof(pm->client_id), "%s", cid);
            v->refs++;
            int rc = api->ingest(chat_ctx, &in, chat_stored, pm);
            if (rc != 0) {
                /* Nothing was stored: tell the widget whether to try again. */
                visitor_send(v, json_pack("{s:s,s:s,s:b,s:s}", "type", "error", "client_id", cid,
                                          "retry", rc == SB_EUNAVAILABLE, "message", "not stored"));
                free(pm);
                v->refs--;
            }
        }
    }
    json_decref(m);
}

static void chat_on_close(sb_ws_t *ws, int code, void *data)
{
    visitor_t *v = data;
    if (v->prev)
        v->prev->next = v->next;
    else
        visitors = v->next;
    if (v->next)
        v->next->prev = v->prev;
    v->ws = NULL;
    visitor_unref(v);
}

static const sb_ws_callbacks_t chat_ws_callbacks = {chat_on_text, chat_on_close};

/* ======================== routes ======================== */

static int chat_tenant_ok(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-'))
            return 0;
    return 1;
}

static int chat_ws(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    const char *tenant = api->req_param(req, "tenant");
    const char *token = api->req_query(req, "token");
    const char *since = api->req_query(req, "since");
    char tok[128];

    if (!chat_tenant_ok(tenant))
        return SB_ENOENT;
    visitor_t *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return SB_ENOMEM;
    snprintf(v->tenant, sizeof(v->tenant), "%s", tenant);
    /* A bad or foreign token is not an error: the visitor starts afresh. */
    if (chat_token_check(tenant, token, v->id) != 0) {
        unsigned char raw[CHAT_VISITOR_LEN / 2];
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2hex(v->id, sizeof(v->id), raw, sizeof(raw));
        since = NULL;
    }
    v->last = since ? strtoll(since, NULL, 10) : 0;
    if (v->last < 0)
        v->last = 0;
    v->refs = 1;
    if (api->ws_accept(p, req, &chat_ws_callbacks, v, &v->ws) != 0) {
        free(v);
        api->res_header(req, "Upgrade", "websocket");
        api->respond(req, 426, "text/plain", "WebSocket only\n", 15);
        return 0;
    }
    v->next = visitors;
    if (visitors)
        visitors->prev = v;
    visitors = v;
    chat_token(tenant, v->id, tok, sizeof(tok));
    visitor_send(v, json_pack("{s:s,s:s,s:s}", "type", "welcome", "token", tok, "visitor", v->id));
    visitor_fetch(v);
    return 0;
}

static int chat_static(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    if (!chat_tenant_ok(api->req_param(req, "tenant")))
        return SB_ENOENT;
    api->res_header(req, "Cache-Control", "no-cache");
    if (data == chat_widget_js)
        api->respond(req, 200, "application/javascript; charset=utf-8", chat_widget_js,
                     chat_widget_js_len);
    else
        api->respond(req, 200, "text/html; charset=utf-8", chat_demo_html, chat_demo_html_len);
    return 0;
}

/* Replies reach visitors through the event stream (live) and the thread's
 * history (on return): once committed, a chat reply is delivered. */
static int chat_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    done(p, SB_SENT, NULL, data);
    return 0;
}

static int chat_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    chat_ctx = p;
    if (api->size < sizeof(sb_host_api_t) || sodium_init() < 0)
        return SB_EINVAL;
    if (api->secret_key(p, chat_key) != 0) {
        api->log(p, SB_LOG_ERR, "no secret key to sign visitor tokens with");
        return SB_EIO;
    }
    int rc = api->http_route(p, "GET", "/chat/{tenant}/ws", chat_ws, NULL);
    if (rc == 0)
        rc = api->http_route(p, "GET", "/chat/{tenant}/widget.js", chat_static,
                             (void *)chat_widget_js);
    if (rc == 0)
        rc = api->http_route(p, "GET", "/chat/{tenant}/", chat_static, NULL);
    return rc;
}

static int chat_start(sb_plugin_ctx_t *p)
{
    return api->events_subscribe(p, chat_event, NULL);
}

static void chat_stop(sb_plugin_ctx_t *p)
{
    /* The host closes the connections; on_close frees each visitor. */
}

/* Chat takes one optional setting, "title", shown by the widget's page. */
static int chat_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                         char *message, size_t message_len)
{
    json_t *s = json_loads(json, 0, NULL);
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(s, key, v)
    {
        if (strcmp(key, "title") != 0 || !json_is_string(v) || json_string_length(v) > 200) {
            snprintf(field, field_len, "settings.%s", key);
            snprintf(message, message_len,
                     "the chat channel takes \"title\", a string of at "
                     "most 200 bytes");
            rc = SB_EINVAL;
            break;
        }
    }
    json_decref(s);
    return rc;
}

SB_PLUGIN_DEFINE(.name = "chat", .version = "1.0", .init = chat_init, .start = chat_start,
                 .stop = chat_stop, .send = chat_send, .validate_settings = chat_validate)
