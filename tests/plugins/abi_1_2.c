/*
 * A plugin as built against ABI 1.2: its inbound message ends at
 * channel_id and its descriptor before channels_changed.  What follows
 * the message in its memory looks like 1.3's members (a references
 * pointer that must never be followed, "sent by a machine"): the host
 * must read only the 1.2 message and store it as an ordinary one.
 *
 *   POST /hooks/{tenant}/old12?id=ID  body: the text
 */
#include <switchboard/plugin.h>

#include <stddef.h>
#include <stdint.h>

/* The 1.2 layout of sb_inbound_t, as a plugin compiled then would have it. */
typedef struct {
    const char *tenant, *channel, *external_id, *identity_kind, *identity_value, *sender_name,
        *thread_key, *subject, *text, *html;
    const sb_attachment_t *attachments;
    size_t nattachments;
    int64_t channel_id;
} old_inbound_t;

/* The message followed by what a 1.3 host would read on as its new members. */
typedef struct {
    old_inbound_t m;
    const char *const *references;
    int64_t ticket_hint;
    int auto_submitted;
    size_t quote_at;
} old_and_more_t;

static const sb_host_api_t *api;

static void old_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    api->respond(data, status == 0 ? 200 : 503, "text/plain", "done\n", 5);
}

static int old_hook(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    size_t len;
    old_and_more_t x = {
        .m = {api->req_param(req, "tenant"), "abi_1_2", api->req_query(req, "id"), "other",
              "old-sender", NULL, "old-thread", NULL, api->req_body(req, &len), NULL, NULL, 0, 0},
        .references = (const char *const *)(uintptr_t)8, /* faults if followed */
        .ticket_hint = 1,
        .auto_submitted = 1,
        .quote_at = 3,
    };
    int rc = api->ingest(p, (const sb_inbound_t *)(const void *)&x.m, old_stored, req);
    if (rc != 0)
        api->respond(req, 400, "text/plain", "refused\n", 8);
    return 0;
}

static int old_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    return api->http_route(p, "POST", "/hooks/{tenant}/old12", old_hook, NULL);
}

SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void);
SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void)
{
    /* Stamped 1.2 with the 1.2 size: the descriptor ends before channels_changed. */
    static const sb_plugin_t d = {.abi_major = 1,
                                  .abi_minor = 2,
                                  .size = (uint32_t)offsetof(sb_plugin_t, channels_changed),
                                  .name = "abi_1_2",
                                  .version = "1.2",
                                  .init = old_init};
    return &d;
}
