/* email.c - the email channel plugin. */
#include <switchboard/plugin.h>

#include "mailnet.h"
#include "mime.h"
#include "smtpd.h"

static int email_init(sb_plugin_ctx_t *p, const sb_host_api_t *api)
{
    return 0;
}

SB_PLUGIN_DEFINE(.name = "email", .version = "1.0", .init = email_init)
