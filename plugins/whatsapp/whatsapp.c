/*
 * whatsapp - the WhatsApp Cloud API channel.  A channel instance (type
 * "whatsapp") is one business phone number: Meta calls its webhook
 * /hooks/{tenant}/{id} with a GET to verify it (hub.challenge) and POSTs
 * notifications signed with the app secret (X-Hub-Signature-256): customers'
 * messages become tickets, and statuses (sent, delivered, read, failed)
 * land on our outbound messages.  Replies go to the Graph API's
 * /{phone_number_id}/messages.  Media stay on Meta's servers (the media
 * id is recorded) until an agent downloads one (fetch_file).
 */
#include "social.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WA_API_BASE "https://graph.facebook.com/v19.0"

static const sb_host_api_t *api;

/* ======================== webhook ======================== */

/* The text of one media message: its caption, or what it is. */
static const char *wa_media_text(json_t *media, const char *type, char *buf, size_t len)
{
    const char *caption = json_string_value(json_object_get(media, "caption"));
    const char *name = json_string_value(json_object_get(media, "filename"));
    if (caption && caption[0])
        return caption;
    sb_social_printf(buf, len, "(%s%s%s)", type, name ? " " : "", name ? name : "");
    return buf;
}

/* The text of a message that is not media. */
static const char *wa_other_text(json_t *msg, const char *type, char *buf, size_t len)
{
    json_t *loc = json_object_get(msg, "location");
    const char *t = json_string_value(json_object_get(json_object_get(msg, "text"), "body"));
    if (t == NULL)
        t = json_string_value(json_object_get(json_object_get(msg, "button"), "text"));
    if (t == NULL)
        t = json_string_value(json_object_get(
            json_object_get(json_object_get(msg, "interactive"), "button_reply"), "title"));
    if (t == NULL)
        t = json_string_value(json_object_get(
            json_object_get(json_object_get(msg, "interactive"), "list_reply"), "title"));
    if (t && t[0])
        return t;
    if (loc)
        sb_social_location_text(loc, buf, len);
    else if (t)
        snprintf(buf, len, "(an empty message)");
    else
        sb_social_printf(buf, len, "(a %s message)", type);
    return buf;
}

/* One customer message of a notification. */
static void wa_message(sb_social_batch_t *b, const sb_channel_t *ch, json_t *msg, json_t *contacts)
{
    static const char *const media_types[] = {"image",   "document", "audio", "video",
                                              "sticker", "voice",    NULL};
    const char *from = json_string_value(json_object_get(msg, "from"));
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *type = json_string_value(json_object_get(msg, "type"));
    const char *group = json_string_value(json_object_get(msg, "group_id"));
    const char *name = NULL;
    char text[256], thread[160];
    sb_attachment_t file = {0};
    json_t *media = NULL;
    size_t i;

    if (from == NULL || id == NULL)
        return;
    if (type == NULL)
        type = "unknown";
    for (i = 0; i < json_array_size(contacts); i++) {
        json_t *c = json_array_get(contacts, i);
        if (json_equal(json_object_get(c, "wa_id"), json_object_get(msg, "from")))
            name = json_string_value(json_object_get(json_object_get(c, "profile"), "name"));
    }
    for (i = 0; media_types[i] && !media; i++)
        if (strcmp(type, media_types[i]) == 0)
            media = json_object_get(msg, type);
    /* A group's messages share one ticket; replies go to the group. */
    snprintf(thread, sizeof(thread), "%s%s", group ? "group:" : "", group ? group : from);
    sb_inbound_t m = {
        .tenant = ch->tenant,
        .channel = "whatsapp",
        .channel_id = ch->id,
        .external_id = id,
        .identity_kind = "whatsapp",
        .identity_value = from,
        .sender_name = name,
        .thread_key = thread,
        .text = media ? wa_media_text(media, type, text, sizeof(text))
                      : wa_other_text(msg, type, text, sizeof(text)),
    };
    if (media && json_string_value(json_object_get(media, "id"))) {
        file.file_id = json_string_value(json_object_get(media, "id"));
        file.content_type = json_string_value(json_object_get(media, "mime_type"));
        file.filename = json_string_value(json_object_get(media, "filename"));
        if (file.filename == NULL)
            file.filename = type;
        m.attachments = &file;
        m.nattachments = 1;
    }
    sb_social_batch_ingest(b, &m);
}

/* One status of one of our messages. */
static void wa_status(sb_social_batch_t *b, const sb_channel_t *ch, json_t *st)
{
    const char *id = json_string_value(json_object_get(st, "id"));
    const char *status = json_string_value(json_object_get(st, "status"));
    json_t *err = json_array_get(json_object_get(st, "errors"), 0);
    const char *detail = json_string_value(json_object_get(err, "message"));

    if (detail == NULL)
        detail = json_string_value(json_object_get(err, "title"));
    if (id == NULL || status == NULL)
        return;
    if (strcmp(status, "sent") && strcmp(status, "delivered") && strcmp(status, "read") &&
        strcmp(status, "failed"))
        return; /* "deleted", "warning" and future ones: nothing of ours to change */
    sb_social_batch_status(b, ch, id, status, detail);
}

/* One change of an entry: messages and statuses of one phone number. */
static void wa_change(sb_social_batch_t *b, const sb_channel_t *ch, json_t *value,
                      const char *phone_number_id)
{
    json_t *meta = json_object_get(value, "metadata");
    const char *number = json_string_value(json_object_get(meta, "phone_number_id"));
    json_t *contacts = json_object_get(value, "contacts");
    size_t i;

    /* An app's numbers may share one webhook: take only this channel's. */
    if (phone_number_id == NULL || number == NULL || strcmp(phone_number_id, number) != 0)
        return;
    for (i = 0; i < json_array_size(json_object_get(value, "messages")); i++)
        wa_message(b, ch, json_array_get(json_object_get(value, "messages"), i), contacts);
    for (i = 0; i < json_array_size(json_object_get(value, "statuses")); i++)
        wa_status(b, ch, json_array_get(json_object_get(value, "statuses"), i));
}

static int wa_webhook(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req)
{
    char number[SB_SOCIAL_ID_LEN];

    if (strcmp(api->req_method(req), "GET") == 0) {
        sb_social_meta_challenge(api, p, ch, req);
        return 0;
    }
    json_t *doc = sb_social_meta_body(api, p, ch, req);
    if (doc == NULL)
        return 0;
    const char *phone_number_id = sb_social_setting(ch, "phone_number_id", number, sizeof(number));
    if (phone_number_id == NULL)
        api->log(p, SB_LOG_WARNING,
                 "WhatsApp channel %lld has no settings.phone_number_id: "
                 "its notifications are ignored",
                 (long long)ch->id);
    sb_social_batch_t *b = sb_social_batch_new(api, p, req, "text/plain", "ok\n");
    json_t *entries = json_object_get(doc, "entry");
    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *changes = json_object_get(json_array_get(entries, i), "changes");
        for (size_t k = 0; k < json_array_size(changes); k++)
            wa_change(b, ch, json_object_get(json_array_get(changes, k), "value"), phone_number_id);
    }
    sb_social_batch_end(b);
    json_decref(doc);
    return 0;
}

/* ======================== sending ======================== */

static const char *wa_sent_id(json_t *answer, char *buf, size_t len)
{
    json_t *first = json_array_get(json_object_get(answer, "messages"), 0);
    return sb_social_id_copy(json_string_value(json_object_get(first, "id")), buf, len);
}

static int wa_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    char base[256], number[SB_SOCIAL_ID_LEN], url[512];
    const sb_channel_t *ch = m->instance;

    if (ch == NULL || m->thread_key == NULL) {
        done(p, SB_FAILED, "the ticket did not come through a WhatsApp channel", data);
        return 0;
    }
    const char *token = api->channel_secret(p, ch, "access_token");
    if (sb_social_setting(ch, "phone_number_id", number, sizeof(number)) == NULL || token == NULL) {
        done(p, SB_FAILED, "the channel needs settings.phone_number_id and secret access_token",
             data);
        return 0;
    }
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    snprintf(url, sizeof(url), "%s/%s/messages", api_base ? api_base : WA_API_BASE, number);
    int group = strncmp(m->thread_key, "group:", 6) == 0;
    json_t *body =
        json_pack("{s:s,s:s,s:s,s:s,s:{s:s}}", "messaging_product", "whatsapp", "recipient_type",
                  group ? "group" : "individual", "to", m->thread_key + (group ? 6 : 0), "type",
                  "text", "text", "body", m->text ? m->text : "");
    return sb_social_send_json(api, p, url, token, body, wa_sent_id, done, data);
}

/* ======================== files ======================== */

/* The media id's answer names a short-lived URL of the bytes. */
static char *wa_file_url(const sb_host_api_t *a, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                         json_t *answer)
{
    const char *url = json_string_value(json_object_get(answer, "url"));
    return url ? strdup(url) : NULL;
}

static int wa_fetch_file(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *file_id,
                         sb_file_cb done, void *data)
{
    const char *token = api->channel_secret(p, ch, "access_token");
    char base[256], url[512], auth[4200];

    if (token == NULL || !sb_social_path_safe(file_id))
        return SB_ENOENT;
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    snprintf(url, sizeof(url), "%s/%s", api_base ? api_base : WA_API_BASE, file_id);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    return sb_social_fetch_file(api, p, ch, url, auth, wa_file_url, done, data);
}

/* ======================== setup ======================== */

static int wa_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                       char *message, size_t message_len)
{
    static const char *const keys[] = {"phone_number_id", "api_base", NULL};
    int rc = sb_social_validate(json, keys, field, field_len, message, message_len);
    return rc ? rc
              : sb_social_validate_id(json, "phone_number_id", 1, field, field_len, message,
                                      message_len);
}

static int wa_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    return sb_social_init(&api, p, host, "whatsapp");
}

SB_PLUGIN_DEFINE(.name = "whatsapp", .version = "1.0", .init = wa_init, .send = wa_send,
                 .validate_settings = wa_validate, .webhook = wa_webhook,
                 .fetch_file = wa_fetch_file)
