/*
 * Unit tests for http/router.c: literal and parameter segments, order,
 * HEAD for GET, and the Allow list for 405.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common.h"
#include "http/http.h"

static int h_a(sb_http_req_t *req, void *data)
{
    return 0;
}
static int h_b(sb_http_req_t *req, void *data)
{
    return 0;
}

static void test_match(void **state)
{
    sb_router_t *r = sb_router_new();
    sb_pool_t *pool = sb_pool_new();
    sb_route_match_t m;

    assert_int_equal(sb_router_add(r, "GET", "/healthz", 0, h_a, NULL), 0);
    assert_int_equal(sb_router_add(r, "GET", "/t/{tenant}/tickets/{number}", 0, h_b, NULL), 0);
    assert_int_equal(sb_router_add(r, "POST", "/t/{tenant}/tickets", SB_ROUTE_JSON, h_a, NULL), 0);
    assert_int_equal(sb_router_add(r, "GET", "/t/{tenant}/tickets/new", 0, h_a, NULL), 0);
    assert_int_equal(sb_router_add(r, "GET", "no-slash", 0, h_a, NULL), SB_EINVAL);
    assert_int_equal(sb_router_add(r, "GET", "/a/b{c}", 0, h_a, NULL), SB_EINVAL);
    assert_int_equal(sb_router_count(r), 4);
    assert_string_equal(sb_router_pattern(r, 1), "/t/{tenant}/tickets/{number}");
    assert_string_equal(sb_router_method(r, 2), "POST");

    assert_int_equal(sb_router_match(r, 0, "GET", "/healthz", pool, &m), 0);
    assert_int_equal(m.index, 0);
    assert_int_equal(sb_router_match(r, 0, "HEAD", "/healthz", pool, &m), 0);

    assert_int_equal(sb_router_match(r, 0, "GET", "/t/acme/tickets/42", pool, &m), 0);
    assert_int_equal(m.index, 1);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[0].name, "tenant");
    assert_string_equal(m.params[0].value, "acme");
    assert_string_equal(m.params[1].value, "42");

    /* Parameters are percent-decoded; earlier routes win; DECLINED goes on. */
    assert_int_equal(sb_router_match(r, 0, "GET", "/t/a%20b/tickets/new", pool, &m), 0);
    assert_int_equal(m.index, 1);
    assert_string_equal(m.params[0].value, "a b");
    assert_int_equal(sb_router_match(r, 2, "GET", "/t/x/tickets/new", pool, &m), 0);
    assert_int_equal(m.index, 3);

    assert_int_equal(sb_router_match(r, 0, "POST", "/t/x/tickets", pool, &m), 0);
    assert_int_equal(m.flags, SB_ROUTE_JSON);

    sb_pool_free(pool);
    sb_router_free(r);
}

static void test_no_match(void **state)
{
    sb_router_t *r = sb_router_new();
    sb_pool_t *pool = sb_pool_new();
    sb_route_match_t m;

    sb_router_add(r, "GET", "/items/{id}", 0, h_a, NULL);
    sb_router_add(r, "DELETE", "/items/{id}", 0, h_a, NULL);
    sb_router_add(r, "GET", "/items", 0, h_a, NULL);

    assert_int_equal(sb_router_match(r, 0, "GET", "/nothing", pool, &m), SB_ENOENT);
    assert_string_equal(m.allow, "");
    assert_int_equal(m.index, -1);
    assert_int_equal(sb_router_match(r, 0, "GET", "/items/", pool, &m), SB_ENOENT);
    assert_int_equal(sb_router_match(r, 0, "GET", "/items/1/x", pool, &m), SB_ENOENT);
    assert_int_equal(sb_router_match(r, 0, "GET", "", pool, &m), SB_ENOENT);

    assert_int_equal(sb_router_match(r, 0, "PUT", "/items/7", pool, &m), SB_ENOENT);
    assert_string_equal(m.allow, "GET, HEAD, DELETE");

    sb_pool_free(pool);
    sb_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_no_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
