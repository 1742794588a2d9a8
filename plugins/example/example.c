/*
 * example - the smallest useful channel: a webhook that stores what is
 * posted to it.  It shows the whole plugin ABI in use (settings, a route,
 * ingest and its acknowledgement after commit) and is what the tests
 * load; copy it to start a new channel.  Not for production traffic: it
 * has no sender verification.
 *
 *   POST /hooks/{tenant}/example?from=IDENTITY&id=MESSAGE_ID[&thread=KEY][&name=NAME]
 *   body: the message text (text/plain, UTF-8), or any other type: then the
 *   body is stored as an attachment named by &filename=
 *   -> 200 "stored N" / "duplicate N" (N: the ticket number), 400, 404, 503
 *
 * Replies are "sent" by appending a line to the file named by the setting
 * outbox_file (one line per delivery); the setting send = retry | fail
 * makes every delivery fail that way, to exercise the outbound pipeline.
 */
#include <switchboard/plugin.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const sb_host_api_t *api;
static int example_enabled = 1;
static const char *example_outbox_file;
static const char *example_send_mode;

static void example_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    sb_http_req_t *req = data;
    char body[64];

    if (status == SB_ENOENT) {
        api->respond(req, 404, "text/plain", "no such tenant\n", 15);
        return;
    }
    if (status != 0) {
        /* Not stored: the sender must retry, and will find nothing half-done. */
        api->res_header(req, "Retry-After", "5");
        api->respond(req, 503, "text/plain", "not stored; retry\n", 18);
        return;
    }
    int n = snprintf(body, sizeof(body), "%s %lld\n", r->duplicate ? "duplicate" : "stored",
                     (long long)r->ticket);
    api->respond(req, 200, "text/plain", body, (size_t)n);
}

static int example_hook(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    size_t len;
    const char *text = api->req_body(req, &len);
    const char *ctype = api->req_header(req, "content-type");
    sb_attachment_t file = {.filename = api->req_query(req, "filename"),
                            .content_type = ctype,
                            .data = text,
                            .size = len};
    int is_file = ctype && strncmp(ctype, "text/plain", 10) != 0;
    sb_inbound_t m = {
        .tenant = api->req_param(req, "tenant"),
        .channel = "example",
        .external_id = api->req_query(req, "id"),
        .identity_kind = "other",
        .identity_value = api->req_query(req, "from"),
        .sender_name = api->req_query(req, "name"),
        .thread_key = api->req_query(req, "thread"),
        .text = is_file ? "(a file)" : text,
        .attachments = is_file ? &file : NULL,
        .nattachments = is_file ? 1 : 0,
    };

    if (!example_enabled)
        return SB_DECLINED;
    if (m.external_id == NULL || m.identity_value == NULL || len == 0 ||
        (!is_file && strlen(text) != len)) {
        api->respond(req, 400, "text/plain", "need ?from=, ?id= and a text body\n", 34);
        return 0;
    }
    int rc = api->ingest(p, &m, example_stored, req);
    if (rc == SB_EINVAL) {
        api->respond(req, 400, "text/plain", "a field is too long\n", 20);
        return 0;
    }
    return rc;
}

/* A small synchronous append: fine for an example, not for a real channel. */
static int example_send(sb_plugin_ctx_t *p, const sb_outbound_t *m, sb_send_cb done, void *data)
{
    if (example_send_mode && strcmp(example_send_mode, "retry") == 0) {
        done(p, SB_RETRY, "configured to retry", data);
        return 0;
    }
    if (example_send_mode && strcmp(example_send_mode, "fail") == 0) {
        done(p, SB_FAILED, "configured to fail", data);
        return 0;
    }
    if (example_outbox_file == NULL) {
        done(p, SB_FAILED, "no outbox_file configured", data);
        return 0;
    }
    FILE *f = fopen(example_outbox_file, "a");
    if (f == NULL) {
        done(p, SB_RETRY, "could not open outbox_file", data);
        return 0;
    }
    fprintf(f, "%s ticket=%lld message=%lld to=%s:%s text=%s\n", m->tenant, (long long)m->ticket,
            (long long)m->message, m->identity_kind ? m->identity_kind : "-",
            m->identity_value ? m->identity_value : "-", m->text ? m->text : "");
    int ok = fclose(f) == 0;
    done(p, ok ? SB_SENT : SB_RETRY, ok ? NULL : "could not write outbox_file", data);
    return 0;
}

/* An example channel has one setting: "label", a string of at most 64 bytes. */
static int example_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                            char *message, size_t message_len)
{
    json_t *s = json_loads(json, 0, NULL);
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(s, key, v)
    {
        if (strcmp(key, "label") != 0) {
            snprintf(field, field_len, "settings.%s", key);
            snprintf(message, message_len, "unknown setting; the example channel takes \"label\"");
            rc = SB_EINVAL;
            break;
        }
        if (!json_is_string(v) || json_string_length(v) > 64) {
            snprintf(field, field_len, "settings.label");
            snprintf(message, message_len, "label must be a string of at most 64 bytes");
            rc = SB_EINVAL;
            break;
        }
    }
    json_decref(s);
    return rc;
}

static int example_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    const char *enabled = api->config_get(p, "enabled");
    example_enabled = enabled == NULL || strcmp(enabled, "false") != 0;
    example_outbox_file = api->config_get(p, "outbox_file");
    example_send_mode = api->config_get(p, "send");
    api->log(p, SB_LOG_INFO, "example webhook %s", example_enabled ? "enabled" : "disabled");
    return api->http_route(p, "POST", "/hooks/{tenant}/example", example_hook, NULL);
}

SB_PLUGIN_DEFINE(.name = "example", .version = "1.0", .init = example_init, .send = example_send,
                 .validate_settings = example_validate)
