/*
 * A plugin whose channel webhook answers the request and then returns an
 * error anyway: the host must not answer a second time.
 *
 *   POST /hooks/{tenant}/{id} of a "answers_then_fails" instance: 200 "answered"
 */
#include <switchboard/plugin.h>

static const sb_host_api_t *api;

static int atf_webhook(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req)
{
    api->respond(req, 200, "text/plain", "answered\n", 9);
    return SB_EIO;
}

static int atf_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    api = host;
    return 0;
}

SB_PLUGIN_DEFINE(.name = "answers_then_fails", .version = "1.0", .init = atf_init,
                 .webhook = atf_webhook)
