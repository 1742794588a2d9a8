/*
 * A plugin as built against ABI 1.0: its descriptor ends before
 * validate_settings and the message it hands the host ends at html.  What
 * follows the message in its memory looks like a list of attachments: a
 * host that read past html would store them.
 *
 *   POST /hooks/{tenant}/older?id=ID  body: the text; stored without files
 */
#include <switchboard/plugin.h>

#include <stddef.h>
#include <string.h>

/* The 1.0 layout, as a plugin compiled then would have it. */
typedef struct {
    const char *tenant, *channel, *external_id, *identity_kind, *identity_value, *sender_name,
        *thread_key, *subject, *text, *html;
} old_inbound_t;

/* The message and, right after it, what is not part of it. */
typedef struct {
    old_inbound_t m;
    const void *not_attachments;
    size_t not_nattachments;
} old_frame_t;

typedef struct {
    const char *filename, *content_type;
    const void *data;
    size_t size;
} old_attachment_t;

static const sb_host_api_t *api;

static void older_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    api->respond(data, status == 0 ? 200 : 503, "text/plain", "done\n", 5);
}

static int older_hook(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    static const old_attachment_t stray = {"stray.txt", "text/plain", "not mine", 8};
    size_t len;
    const char *text = api->req_body(req, &len);
    old_frame_t f = {{api->req_param(req, "tenant"), "abi_1_0", api->req_query(req, "id"), "other",
                      "older-sender", NULL, "older-thread", NULL, text, NULL},
                     &stray,
                     1};
    int rc = api->ingest(p, (const sb_inbound_t *)(const void *)&f.m, older_stored, req);
    if (rc != 0)
        api->respond(req, 400, "text/plain", "refused\n", 8);
    return 0;
}

static int older_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    return api->http_route(p, "POST", "/hooks/{tenant}/older", older_hook, NULL);
}

SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void);
SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void)
{
    /* Stamped 1.0 with the 1.0 size: the descriptor ends before validate_settings. */
    static const sb_plugin_t d = {.abi_major = 1,
                                  .abi_minor = 0,
                                  .size = (uint32_t)offsetof(sb_plugin_t, validate_settings),
                                  .name = "abi_1_0",
                                  .version = "1.0",
                                  .init = older_init};
    return &d;
}
