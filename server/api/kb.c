/* kb.c - placeholder until the routes land. */
#include "api.h"

int sb_api_kb_routes_add(sb_router_t *r, sb_api_t *api)
{
    return 0;
}
