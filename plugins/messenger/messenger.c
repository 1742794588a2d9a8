/*
 * messenger - Facebook Messenger and Instagram messaging, which Meta
 * delivers the same way.  A channel instance (type "messenger") is one
 * Page (and the Instagram account linked to it): Meta verifies its webhook
 * /hooks/{tenant}/{id} with a GET (hub.challenge) and POSTs events signed
 * with the app secret (X-Hub-Signature-256).  Messages and postbacks
 * become tickets (identity kind "messenger" or "instagram"); delivery
 * receipts land on our outbound messages; replies go to the Send API.
 */
#include "social.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_API_BASE "https://graph.facebook.com/v19.0"

static const sb_host_api_t *api;

/* ======================== webhook ======================== */

/* A message (or postback) from a person; kind is "messenger" or "instagram". */
static void ms_message(sb_social_batch_t *b, const sb_channel_t *ch, json_t *ev, const char *kind)
{
    const char *sender = json_string_value(json_object_get(json_object_get(ev, "sender"), "id"));
    json_t *msg = json_object_get(ev, "message");
    json_t *postback = json_object_get(ev, "postback");
    json_t *files = json_object_get(msg, "attachments");
    char ext[200], text[200], thread[200];
    sb_attachment_t att[8];
    size_t natt = 0;

    if (sender == NULL || json_is_true(json_object_get(msg, "is_echo")))
        return; /* our own replies come back as echoes */
    const char *mid = json_string_value(json_object_get(msg ? msg : postback, "mid"));
    const char *t = json_string_value(json_object_get(msg, "text"));
    if (postback) {
        /* A postback has no id of its own before 2023: sender and time name it. */
        t = json_string_value(json_object_get(postback, "title"));
        if (t == NULL)
            t = json_string_value(json_object_get(postback, "payload"));
        if (mid == NULL) {
            snprintf(ext, sizeof(ext), "postback:%s:%" JSON_INTEGER_FORMAT, sender,
                     json_integer_value(json_object_get(ev, "timestamp")));
            mid = ext;
        }
    }
    if (mid == NULL)
        return;
    for (size_t i = 0; i < json_array_size(files) && natt < sizeof(att) / sizeof(att[0]); i++) {
        json_t *f = json_array_get(files, i);
        const char *url = json_string_value(json_object_get(json_object_get(f, "payload"), "url"));
        if (url == NULL)
            continue;
        memset(&att[natt], 0, sizeof(att[natt]));
        att[natt].filename = json_string_value(json_object_get(f, "type"));
        att[natt].file_id = url;
        natt++;
    }
    if (t == NULL || t[0] == '\0') {
        sb_social_printf(text, sizeof(text), "(%s)",
                         natt ? att[0].filename ? att[0].filename : "attachment"
                              : "an empty message");
        t = text;
    }
    /* Replies need to know which API the person is on: the kind leads the key. */
    snprintf(thread, sizeof(thread), "%s:%s", kind, sender);
    sb_inbound_t m = {
        .tenant = ch->tenant,
        .channel = "messenger",
        .channel_id = ch->id,
        .external_id = mid,
        .identity_kind = kind,
        .identity_value = sender,
        .thread_key = thread,
        .text = t,
        .attachments = natt ? att : NULL,
        .nattachments = natt,
    };
    sb_social_batch_ingest(b, &m);
}

/* One messaging event: a message, postback, or receipt of ours. */
static void ms_event(sb_social_batch_t *b, const sb_channel_t *ch, json_t *ev, const char *kind)
{
    json_t *mids = json_object_get(json_object_get(ev, "delivery"), "mids");

    if (json_is_object(json_object_get(ev, "message")) ||
        json_is_object(json_object_get(ev, "postback"))) {
        ms_message(b, ch, ev, kind);
        return;
    }
    for (size_t i = 0; i < json_array_size(mids); i++) {
        const char *mid = json_string_value(json_array_get(mids, i));
        if (mid)
            sb_social_batch_status(b, ch, mid, "delivered", NULL);
    }
    /* "read" names a time (watermark), not messages: nothing to map. */
}

static int ms_webhook(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req)
{
    if (strcmp(api->req_method(req), "GET") == 0) {
        sb_social_meta_challenge(api, p, ch, req);
        return 0;
    }
    json_t *doc = sb_social_meta_body(api, p, ch, req);
    if (doc == NULL)
        return 0;
    const char *object = json_string_value(json_object_get(doc, "object"));
    const char *kind = object && strcmp(object, "instagram") == 0 ? "instagram" : "messenger";
    /* An app's Pages share one webhook: take only this channel's account's entries. */
    char own[SB_SOCIAL_ID_LEN];
    const char *account = sb_social_setting(
        ch, strcmp(kind, "instagram") == 0 ? "instagram_id" : "page_id", own, sizeof(own));
    if (account == NULL)
        api->log(p, SB_LOG_WARNING,
                 "Messenger channel %lld has no settings.%s: its %s events "
                 "are ignored",
                 (long long)ch->id, strcmp(kind, "instagram") == 0 ? "instagram_id" : "page_id",
                 kind);
    sb_social_batch_t *b = sb_social_batch_new(api, p, req, "text/plain", "EVENT_RECEIVED\n");
    json_t *entries = json_object_get(doc, "entry");
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(entries, i), "id"));
        if (account == NULL || id == NULL || strcmp(id, account) != 0)
            continue;
        json_t *events = json_object_get(json_array_get(entries, i), "messaging");
        for (size_t k = 0; k < json_array_size(events); k++)
            ms_event(b, ch, json_array_get(events, k), kind);
    }
    sb_social_batch_end(b);
    json_decref(doc);
    return 0;
}

/* ======================== sending ======================== */

static const char *ms_sent_id(json_t *answer, char *buf, size_t len)
{
    return sb_social_id_copy(json_string_value(json_object_get(answer, "message_id")), buf, len);
}

static int ms_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    char base[256], page[SB_SOCIAL_ID_LEN], url[512];
    const sb_channel_t *ch = m->instance;
    const char *token = ch ? api->channel_secret(p, ch, "page_access_token") : NULL;
    const char *colon = m->thread_key ? strchr(m->thread_key, ':') : NULL;

    if (ch == NULL || colon == NULL || token == NULL) {
        done(p, SB_FAILED, "the ticket's Messenger channel has no page_access_token", data);
        return 0;
    }
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    const char *page_id = sb_social_setting(ch, "page_id", page, sizeof(page));
    snprintf(url, sizeof(url), "%s/%s/messages", api_base ? api_base : MS_API_BASE,
             page_id ? page_id : "me");
    /* Outside the 24-hour window only tagged messages pass; an agent's reply is a response. */
    json_t *body =
        json_pack("{s:{s:s},s:s,s:{s:s}}", "recipient", "id", colon + 1, "messaging_type",
                  "RESPONSE", "message", "text", m->text ? m->text : "");
    return sb_social_send_json(api, p, url, token, body, ms_sent_id, done, data);
}

/* ======================== files ======================== */

/* Meta's attachment URLs are fetched as they are (they carry their own token). */
static int ms_fetch_file(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *file_id,
                         sb_file_cb done, void *data)
{
    return sb_social_fetch_file(api, p, ch, file_id, NULL, NULL, done, data);
}

/* ======================== setup ======================== */

static int ms_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                       char *message, size_t message_len)
{
    static const char *const keys[] = {"page_id", "instagram_id", "api_base", NULL};
    int rc = sb_social_validate(json, keys, field, field_len, message, message_len);
    if (rc == 0)
        rc = sb_social_validate_id(json, "page_id", 1, field, field_len, message, message_len);
    return rc ? rc
              : sb_social_validate_id(json, "instagram_id", 0, field, field_len, message,
                                      message_len);
}

static int ms_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    return sb_social_init(&api, p, host, "messenger");
}

SB_PLUGIN_DEFINE(.name = "messenger", .version = "1.0", .init = ms_init, .send = ms_send,
                 .validate_settings = ms_validate, .webhook = ms_webhook,
                 .fetch_file = ms_fetch_file)
