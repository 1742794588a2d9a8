/*
 * telegram - the Telegram Bot API channel.  A channel instance (type
 * "telegram") is one bot: its webhook /hooks/{tenant}/{id} is registered
 * with setWebhook and the instance's secret_token, which Telegram sends
 * back in X-Telegram-Bot-Api-Secret-Token.  Messages (private, group,
 * forum topic, channel posts, edits, button presses) become tickets, one
 * per chat (per topic in forums); replies go out with sendMessage.  Files
 * stay on Telegram's servers (file_id recorded) until an agent downloads
 * one: getFile, then the file.
 */
#include "social.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TG_API_BASE "https://api.telegram.org"

static const sb_host_api_t *api;

/* ======================== webhook ======================== */

/* A file of a message (largest photo size, document, voice...), or 0. */
static int tg_file(json_t *msg, sb_attachment_t *file, const char **what)
{
    static const struct {
        const char *key, *name, *type;
    } kinds[] = {
        {"document", "document", NULL},
        {"voice", "voice.ogg", "audio/ogg"},
        {"audio", "audio", NULL},
        {"video", "video.mp4", "video/mp4"},
        {"video_note", "video_note.mp4", "video/mp4"},
        {"animation", "animation.mp4", "video/mp4"},
        {"sticker", "sticker.webp", "image/webp"},
    };
    json_t *photo = json_object_get(msg, "photo");
    json_t *f = NULL;

    if (json_array_size(photo) > 0) {
        f = json_array_get(photo, json_array_size(photo) - 1); /* sizes grow; keep the largest */
        file->filename = "photo.jpg";
        file->content_type = "image/jpeg";
        *what = "photo";
    }
    for (size_t i = 0; f == NULL && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        f = json_object_get(msg, kinds[i].key);
        file->filename = kinds[i].name;
        file->content_type = kinds[i].type;
        *what = kinds[i].key;
    }
    if (!json_is_object(f) || json_string_value(json_object_get(f, "file_id")) == NULL)
        return 0;
    file->file_id = json_string_value(json_object_get(f, "file_id"));
    file->size = (size_t)json_integer_value(json_object_get(f, "file_size"));
    if (json_string_value(json_object_get(f, "file_name")))
        file->filename = json_string_value(json_object_get(f, "file_name"));
    if (json_string_value(json_object_get(f, "mime_type")))
        file->content_type = json_string_value(json_object_get(f, "mime_type"));
    return 1;
}

/* What a message says: its text or caption, or what it carries. */
static const char *tg_text(json_t *msg, int has_file, const char *what, char *buf, size_t len)
{
    const char *t = json_string_value(json_object_get(msg, "text"));
    json_t *loc = json_object_get(msg, "location");

    if (t == NULL)
        t = json_string_value(json_object_get(msg, "caption"));
    if (t && t[0])
        return t;
    if (has_file)
        sb_social_printf(buf, len, "(%s)", what);
    else if (loc)
        sb_social_location_text(loc, buf, len);
    else
        snprintf(buf, len, "(a message Switchboard cannot show)");
    return buf;
}

/* The sender's display name: first and last name, else username. */
static const char *tg_name(json_t *from, char *buf, size_t len)
{
    const char *first = json_string_value(json_object_get(from, "first_name"));
    const char *last = json_string_value(json_object_get(from, "last_name"));
    const char *user = json_string_value(json_object_get(from, "username"));
    const char *title = json_string_value(json_object_get(from, "title"));

    if (first)
        sb_social_printf(buf, len, "%s%s%s", first, last ? " " : "", last ? last : "");
    else if (user || title)
        sb_social_printf(buf, len, "%s", user ? user : title);
    else
        return NULL;
    return buf;
}

/*
 * One message-like object: message, edited_message, channel_post...
 * text_override (a button's data) replaces its text; ext_override its id.
 */
static void tg_message(sb_social_batch_t *b, const sb_channel_t *ch, json_t *msg, json_t *from,
                       int edited, const char *text_override, const char *ext_override)
{
    json_t *chat = json_object_get(msg, "chat");
    json_int_t chat_id = json_integer_value(json_object_get(chat, "id"));
    json_int_t msg_id = json_integer_value(json_object_get(msg, "message_id"));
    json_t *topic = json_object_get(msg, "message_thread_id");
    char thread[64], ext[96], who[32], name[200], body[200];
    char edited_text[4010]; /* "(edited) " and up to 4000 bytes of the text */
    sb_attachment_t file = {0};
    const char *what = "file";

    if (!json_is_integer(json_object_get(chat, "id")))
        return;
    if (!json_is_object(from))
        from = json_object_get(msg, "sender_chat");
    if (!json_is_object(from))
        from = chat;
    int has_file = tg_file(msg, &file, &what);
    /* Forum topics are separate conversations: one ticket each. */
    if (json_is_integer(topic) && json_is_true(json_object_get(msg, "is_topic_message")))
        snprintf(thread, sizeof(thread), "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT, chat_id,
                 json_integer_value(topic));
    else
        snprintf(thread, sizeof(thread), "%" JSON_INTEGER_FORMAT, chat_id);
    /* An edit is a new version of the message: stored once per edit. */
    if (ext_override)
        snprintf(ext, sizeof(ext), "%s", ext_override);
    else if (edited)
        snprintf(ext, sizeof(ext),
                 "%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT, chat_id,
                 msg_id, json_integer_value(json_object_get(msg, "edit_date")));
    else
        snprintf(ext, sizeof(ext), "%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT, chat_id,
                 msg_id);
    snprintf(who, sizeof(who), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(from, "id")));
    const char *text =
        text_override ? text_override : tg_text(msg, has_file, what, body, sizeof(body));
    if (edited) {
        sb_social_printf(edited_text, sizeof(edited_text), "(edited) %s", text);
        text = edited_text;
    }
    sb_inbound_t m = {
        .tenant = ch->tenant,
        .channel = "telegram",
        .channel_id = ch->id,
        .external_id = ext,
        .identity_kind = "telegram",
        .identity_value = who,
        .sender_name = tg_name(from, name, sizeof(name)),
        .thread_key = thread,
        .subject = json_string_value(json_object_get(chat, "title")),
        .text = text,
        .attachments = has_file && !text_override ? &file : NULL,
        .nattachments = has_file && !text_override ? 1 : 0,
    };
    sb_social_batch_ingest(b, &m);
}

/* One update: at most one of its members carries something to store. */
static void tg_update(sb_social_batch_t *b, const sb_channel_t *ch, json_t *u)
{
    static const struct {
        const char *key;
        int edited;
    } kinds[] = {{"message", 0},
                 {"edited_message", 1},
                 {"channel_post", 0},
                 {"edited_channel_post", 1},
                 {"business_message", 0}};
    json_t *cb = json_object_get(u, "callback_query");

    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        json_t *msg = json_object_get(u, kinds[i].key);
        if (json_is_object(msg)) {
            tg_message(b, ch, msg, json_object_get(msg, "from"), kinds[i].edited, NULL, NULL);
            return;
        }
    }
    /* A button pressed under one of our messages: what it says is the reply. */
    const char *data = json_string_value(json_object_get(cb, "data"));
    const char *id = json_string_value(json_object_get(cb, "id"));
    if (json_is_object(json_object_get(cb, "message")) && data && id) {
        char ext[96];
        snprintf(ext, sizeof(ext), "callback:%s", id);
        tg_message(b, ch, json_object_get(cb, "message"), json_object_get(cb, "from"), 0, data,
                   ext);
    }
}

static int tg_webhook(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req)
{
    size_t len;

    const char *body = sb_social_post_body(api, req, &len);
    if (body == NULL)
        return 0;
    if (!sb_social_token_equal(api->channel_secret(p, ch, "secret_token"),
                               api->req_header(req, "x-telegram-bot-api-secret-token"))) {
        sb_social_respond(api, req, 401, "bad secret token\n");
        return 0;
    }
    json_t *u = json_loadb(body, len, 0, NULL);
    if (!json_is_object(u)) {
        json_decref(u);
        sb_social_respond(api, req, 400, "not a JSON object\n");
        return 0;
    }
    sb_social_batch_t *b = sb_social_batch_new(api, p, req, "text/plain", "ok\n");
    tg_update(b, ch, u);
    sb_social_batch_end(b);
    json_decref(u);
    return 0;
}

/* ======================== sending ======================== */

static const char *tg_sent_id(json_t *answer, char *buf, size_t len)
{
    json_t *r = json_object_get(answer, "result");
    json_t *id = json_object_get(r, "message_id");
    json_t *chat = json_object_get(json_object_get(r, "chat"), "id");
    if (!json_is_integer(id) || !json_is_integer(chat))
        return NULL;
    snprintf(buf, len, "%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT, json_integer_value(chat),
             json_integer_value(id));
    return buf;
}

static int tg_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    char base[256], url[4500];
    const sb_channel_t *ch = m->instance;
    const char *token = ch ? api->channel_secret(p, ch, "bot_token") : NULL;

    if (ch == NULL || m->thread_key == NULL || token == NULL) {
        done(p, SB_FAILED, "the ticket's Telegram channel has no bot_token", data);
        return 0;
    }
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    snprintf(url, sizeof(url), "%s/bot%s/sendMessage", api_base ? api_base : TG_API_BASE, token);
    /* thread_key is "chat" or "chat/topic". */
    json_t *body = json_pack("{s:I,s:s}", "chat_id", (json_int_t)strtoll(m->thread_key, NULL, 10),
                             "text", m->text ? m->text : "");
    const char *slash = strchr(m->thread_key, '/');
    if (slash)
        json_object_set_new(body, "message_thread_id", json_integer(strtoll(slash + 1, NULL, 10)));
    return sb_social_send_json(api, p, url, NULL, body, tg_sent_id, done, data);
}

/* ======================== files ======================== */

/* getFile answered the file's path: its bytes are under /file/bot<token>/. */
static char *tg_file_url(const sb_host_api_t *a, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                         json_t *answer)
{
    const char *path =
        json_string_value(json_object_get(json_object_get(answer, "result"), "file_path"));
    const char *token = a->channel_secret(p, ch, "bot_token");
    char base[256], *url = NULL;

    if (path == NULL || token == NULL || strstr(path, "..") != NULL)
        return NULL;
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    if (asprintf(&url, "%s/file/bot%s/%s", api_base ? api_base : TG_API_BASE, token, path) < 0)
        return NULL;
    return url;
}

static int tg_fetch_file(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *file_id,
                         sb_file_cb done, void *data)
{
    const char *token = api->channel_secret(p, ch, "bot_token");
    const char *pair[] = {"file_id", file_id};
    char base[256], *url = NULL;

    if (token == NULL)
        return SB_ENOENT;
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    char *query = sb_social_form_encode(pair, 1);
    int n = asprintf(&url, "%s/bot%s/getFile?%s", api_base ? api_base : TG_API_BASE, token, query);
    free(query);
    if (n < 0)
        return SB_ENOMEM;
    int rc = sb_social_fetch_file(api, p, ch, url, NULL, tg_file_url, done, data);
    free(url);
    return rc;
}

/* ======================== setup ======================== */

static int tg_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                       char *message, size_t message_len)
{
    static const char *const keys[] = {"api_base", NULL};
    return sb_social_validate(json, keys, field, field_len, message, message_len);
}

static int tg_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    return sb_social_init(&api, p, host, "telegram");
}

SB_PLUGIN_DEFINE(.name = "telegram", .version = "1.0", .init = tg_init, .send = tg_send,
                 .validate_settings = tg_validate, .webhook = tg_webhook,
                 .fetch_file = tg_fetch_file)
