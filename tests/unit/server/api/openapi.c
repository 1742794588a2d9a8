/*
 * Unit test for api/openapi.c: every route the server registers is in
 * the OpenAPI document, with its method, and nothing else is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "common.h"

static void test_every_route_is_described(void **state)
{
    sb_config_t cfg;
    sb_api_t api;
    sb_router_t *r = sb_router_new();
    json_t *doc = NULL;
    const char *missing = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.debug_routes = 1;
    memset(&api, 0, sizeof(api));
    api.cfg = &cfg;
    api.router = r;
    assert_int_equal(sb_api_routes_add(r, &api), 0);
    int rc = sb_api_openapi_build(r, &doc, &missing);
    if (rc != 0)
        fail_msg("route \"%s\" has no OpenAPI description", missing);

    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.0.3");
    json_t *paths = json_object_get(doc, "paths");
    size_t described = 0;
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        described += json_object_size(item);
    }
    size_t routes = 0;
    for (size_t i = 0; i < sb_router_count(r); i++) {
        const char *pattern = sb_router_pattern(r, i);
        if (strncmp(pattern, "/debug/", 7) == 0)
            continue;
        routes++;
        char method[16];
        snprintf(method, sizeof(method), "%s", sb_router_method(r, i));
        for (char *p = method; *p; p++)
            *p = (char)(*p | 0x20);
        json_t *op = json_object_get(json_object_get(paths, pattern), method);
        assert_non_null(op);
        assert_non_null(json_object_get(op, "summary"));
        assert_non_null(json_object_get(op, "responses"));
    }
    assert_int_equal(described, routes);
    assert_null(json_object_get(paths, "/debug/echo"));
    assert_non_null(json_object_get(paths, "/api/v1/tenants/{tenant}/tickets/{number}"));
    json_decref(doc);
    sb_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_is_described),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
