/*
 * A plugin built for another ABI major version: the server must refuse
 * it before running any of its code.
 */
#include <switchboard/plugin.h>

#include <stdlib.h>

static int bad_abi_init(sb_plugin_ctx_t *p, const sb_host_api_t *api)
{
    abort(); /* never reached: the host refuses the descriptor first */
}

SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void);
SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void)
{
    static const sb_plugin_t d = {.abi_major = SB_PLUGIN_ABI_MAJOR + 1,
                                  .abi_minor = 0,
                                  .size = sizeof(sb_plugin_t),
                                  .name = "bad_abi",
                                  .version = "1.0",
                                  .init = bad_abi_init};
    return &d;
}
