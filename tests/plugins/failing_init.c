/*
 * A plugin whose init fails: the server leaves it out and carries on,
 * unless it is listed in plugins_required.
 */
#include <switchboard/plugin.h>

static int failing_init(sb_plugin_ctx_t *p, const sb_host_api_t *api)
{
    api->log(p, SB_LOG_WARNING, "refusing to start: no settings");
    return SB_EINVAL;
}

SB_PLUGIN_DEFINE(.name = "failing_init", .version = "1.0", .init = failing_init)
