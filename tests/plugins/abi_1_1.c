/*
 * A plugin as built against ABI 1.1: its descriptor and the structs it
 * hands the host are the 1.1 sizes (no webhook member, attachments
 * without file_id, an inbound message without channel_id).  The host must
 * load it, never read past what it has, and store its files.
 *
 *   POST /hooks/{tenant}/old?id=ID  body: the text; stored with two files
 */
#include <switchboard/plugin.h>

#include <stddef.h>
#include <string.h>

/* The 1.1 layouts, as a plugin compiled then would have them. */
typedef struct {
    const char *filename, *content_type;
    const void *data;
    size_t size;
} old_attachment_t;

typedef struct {
    const char *tenant, *channel, *external_id, *identity_kind, *identity_value, *sender_name,
        *thread_key, *subject, *text, *html;
    const old_attachment_t *attachments;
    size_t nattachments;
} old_inbound_t;

static const sb_host_api_t *api;

static void old_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    api->respond(data, status == 0 ? 200 : 503, "text/plain", "done\n", 5);
}

static int old_hook(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data)
{
    size_t len;
    const char *text = api->req_body(req, &len);
    static const old_attachment_t files[2] = {{"a.txt", "text/plain", "first", 5},
                                              {"b.txt", "text/plain", "second!", 7}};
    old_inbound_t m = {api->req_param(req, "tenant"),
                       "abi_1_1",
                       api->req_query(req, "id"),
                       "other",
                       "old-sender",
                       NULL,
                       "old-thread",
                       NULL,
                       text,
                       NULL,
                       files,
                       2};
    int rc = api->ingest(p, (const sb_inbound_t *)(const void *)&m, old_stored, req);
    if (rc != 0)
        api->respond(req, 400, "text/plain", "refused\n", 8);
    return 0;
}

static int old_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    return api->http_route(p, "POST", "/hooks/{tenant}/old", old_hook, NULL);
}

SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void);
SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void)
{
    /* Stamped 1.1 with the 1.1 size: the descriptor ends before webhook. */
    static const sb_plugin_t d = {.abi_major = 1,
                                  .abi_minor = 1,
                                  .size = (uint32_t)offsetof(sb_plugin_t, webhook),
                                  .name = "abi_1_1",
                                  .version = "1.1",
                                  .init = old_init};
    return &d;
}
