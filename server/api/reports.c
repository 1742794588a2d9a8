/* reports.c - placeholder until the routes land. */
#include "api.h"

int sb_api_reports_routes_add(sb_router_t *r, sb_api_t *api)
{
    return 0;
}
