/*
 * sms - SMS (and MMS, and WhatsApp through Twilio) with a Twilio-compatible
 * provider.  A channel instance (type "sms") is one sending number: its
 * webhook /hooks/{tenant}/{id} takes Twilio's form-encoded messages and
 * status callbacks, verified by X-Twilio-Signature (HMAC-SHA1 over the
 * public URL and the sorted parameters, keyed with auth_token; the URL is
 * the server's public_url plus the path and query, so public_url must
 * be what Twilio calls).  Replies go to the Messages resource.  Media stay on the
 * provider (their URLs are recorded) until an agent downloads one.
 */
#include "social.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMS_API_BASE "https://api.twilio.com"
#define SMS_MAX_MEDIA 10

static const sb_host_api_t *api;

/* ======================== webhook ======================== */

/* Twilio's statuses that we record; queued, sending, accepted... are not news. */
static const char *sms_status_word(const char *s)
{
    if (strcmp(s, "sent") == 0 || strcmp(s, "delivered") == 0 || strcmp(s, "read") == 0 ||
        strcmp(s, "failed") == 0)
        return s;
    return strcmp(s, "undelivered") == 0 ? "failed" : NULL;
}

/* A status callback for one of our messages. */
static void sms_status(sb_social_batch_t *b, const sb_channel_t *ch, const sb_social_form_t *f)
{
    const char *sid = sb_social_form_get(f, "MessageSid");
    const char *word = sms_status_word(sb_social_form_get(f, "MessageStatus"));
    const char *code = sb_social_form_get(f, "ErrorCode");
    char detail[64];

    if (sid == NULL || word == NULL)
        return;
    sb_social_printf(detail, sizeof(detail), "error %s", code ? code : "unknown");
    sb_social_batch_status(b, ch, sid, word, strcmp(word, "failed") == 0 ? detail : NULL);
}

/* A message from a person: SMS, MMS (media URLs) or WhatsApp via Twilio. */
static void sms_message(sb_social_batch_t *b, const sb_channel_t *ch, const sb_social_form_t *f)
{
    const char *from = sb_social_form_get(f, "From");
    const char *sid = sb_social_form_get(f, "MessageSid");
    const char *text = sb_social_form_get(f, "Body");
    sb_attachment_t att[SMS_MAX_MEDIA];
    size_t n = 0;
    char key[48];

    if (from == NULL || sid == NULL)
        return;
    int whatsapp = strncmp(from, "whatsapp:", 9) == 0;
    long nmedia = strtol(
        sb_social_form_get(f, "NumMedia") ? sb_social_form_get(f, "NumMedia") : "0", NULL, 10);
    /* NumMedia is the sender's word: the loop is bounded by what we keep. */
    for (long i = 0; i < nmedia && i < SMS_MAX_MEDIA; i++) {
        snprintf(key, sizeof(key), "MediaUrl%ld", i);
        const char *url = sb_social_form_get(f, key);
        snprintf(key, sizeof(key), "MediaContentType%ld", i);
        if (url == NULL)
            continue;
        memset(&att[n], 0, sizeof(att[n]));
        att[n].file_id = url;
        att[n].content_type = sb_social_form_get(f, key);
        att[n].filename = "media";
        n++;
    }
    sb_inbound_t m = {
        .tenant = ch->tenant,
        .channel = "sms",
        .channel_id = ch->id,
        .external_id = sid,
        /* A WhatsApp number is the WhatsApp Cloud API's wa_id: digits only. */
        .identity_kind = whatsapp ? "whatsapp" : "phone",
        .identity_value = whatsapp ? from + 9 + (from[9] == '+') : from,
        .thread_key = from, /* replies go back to the same address, prefix included */
        .text = text && text[0] ? text
                : n             ? "(media)"
                                : "(an empty message)",
        .attachments = n ? att : NULL,
        .nattachments = n,
    };
    sb_social_batch_ingest(b, &m);
}

static int sms_webhook(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req)
{
    size_t len;
    sb_social_form_t form;

    const char *body = sb_social_post_body(api, req, &len);
    if (body == NULL)
        return 0;
    const char *url = api->req_public_url(p, req);
    if (url == NULL)
        api->log(p, SB_LOG_WARNING, "cannot verify Twilio's signature: public_url is not set");
    if (sb_social_twilio_verify(api->channel_secret(p, ch, "auth_token"), url, body, len,
                                api->req_header(req, "x-twilio-signature")) != 0) {
        sb_social_respond(api, req, 401, "bad signature\n");
        return 0;
    }
    if (sb_social_form_parse(body, len, &form) != 0) {
        sb_social_respond(api, req, 400, "not a form body\n");
        return 0;
    }
    sb_social_batch_t *b = sb_social_batch_new(api, p, req, "text/xml", "<Response/>\n");
    /* Inbound messages carry a body or media; status callbacks a MessageStatus. */
    if (sb_social_form_get(&form, "MessageStatus") && !sb_social_form_get(&form, "Body"))
        sms_status(b, ch, &form);
    else
        sms_message(b, ch, &form);
    sb_social_batch_end(b);
    sb_social_form_free(&form);
    return 0;
}

/* ======================== sending ======================== */

static const char *sms_sent_id(json_t *answer, char *buf, size_t len)
{
    return sb_social_id_copy(json_string_value(json_object_get(answer, "sid")), buf, len);
}

/* "Authorization: Basic base64(sid:token)" into buf, or NULL without them. */
static const char *sms_basic_auth(sb_plugin_ctx_t *p, const sb_channel_t *ch, char *buf, size_t len)
{
    const char *sid = ch ? api->channel_secret(p, ch, "account_sid") : NULL;
    const char *token = ch ? api->channel_secret(p, ch, "auth_token") : NULL;

    if (sid == NULL || token == NULL || strlen(sid) + strlen(token) > 300)
        return NULL;
    char *userpass = g_strdup_printf("%s:%s", sid, token);
    gchar *basic = g_base64_encode((const guchar *)userpass, strlen(userpass));
    snprintf(buf, len, "Authorization: Basic %s", basic);
    g_free(basic);
    g_free(userpass);
    return buf;
}

static int sms_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    char base[256], number[64], from[80], url[512], auth[600];
    const sb_channel_t *ch = m->instance;
    const char *sid = ch ? api->channel_secret(p, ch, "account_sid") : NULL;

    if (sms_basic_auth(p, ch, auth, sizeof(auth)) == NULL || m->thread_key == NULL ||
        sb_social_setting(ch, "from_number", number, sizeof(number)) == NULL) {
        done(p, SB_FAILED, "the ticket's SMS channel needs from_number, account_sid, auth_token",
             data);
        return 0;
    }
    const char *api_base = sb_social_setting(ch, "api_base", base, sizeof(base));
    snprintf(url, sizeof(url), "%s/2010-04-01/Accounts/%s/Messages.json",
             api_base ? api_base : SMS_API_BASE, sid);
    /* Answer a WhatsApp conversation on WhatsApp, from the same number. */
    snprintf(from, sizeof(from), "%s%s",
             strncmp(m->thread_key, "whatsapp:", 9) == 0 ? "whatsapp:" : "", number);
    const char *pairs[] = {"To", m->thread_key, "From", from, "Body", m->text ? m->text : ""};
    char *body = sb_social_form_encode(pairs, 3);
    const char *headers[] = {auth, NULL};
    int rc = sb_social_send(api, p, url, headers, "application/x-www-form-urlencoded", body,
                            sms_sent_id, done, data);
    free(body);
    return rc;
}

/* ======================== files ======================== */

/* A media URL of the provider, fetched with the account's credentials. */
static int sms_fetch_file(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *file_id,
                          sb_file_cb done, void *data)
{
    char auth[600];
    return sb_social_fetch_file(api, p, ch, file_id, sms_basic_auth(p, ch, auth, sizeof(auth)),
                                NULL, done, data);
}

/* ======================== setup ======================== */

static int sms_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                        char *message, size_t message_len)
{
    static const char *const keys[] = {"from_number", "api_base", NULL};
    return sb_social_validate(json, keys, field, field_len, message, message_len);
}

static int sms_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    return sb_social_init(&api, p, host, "sms");
}

SB_PLUGIN_DEFINE(.name = "sms", .version = "1.0", .init = sms_init, .send = sms_send,
                 .validate_settings = sms_validate, .webhook = sms_webhook,
                 .fetch_file = sms_fetch_file)
