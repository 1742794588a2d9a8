/*
 * Unit tests for http/server.c through in-memory connections: the bytes a
 * client sends are fed in, and what the server writes is read back, with
 * a real loop but no socket.  Each test closes its loop and asserts that
 * nothing was left open.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "http/http.h"

typedef struct {
    uv_loop_t loop;
    sb_router_t *router;
    sb_http_server_t *srv;
    sb_http_loopback_t *lb;
    int completed;
    int last_route;
    uv_timer_t later;
    sb_http_req_t *pending;
} fixture_t;

/* ======================== handlers ======================== */

static int h_hello(sb_http_req_t *req, void *data)
{
    sb_http_respond(req, 200, "text/plain", "hi", 2);
    return 0;
}

static int h_item(sb_http_req_t *req, void *data)
{
    const char *q = sb_http_req_query(req, "q");
    sb_http_respond_json(req, 200,
                         json_pack("{s:s,s:s?}", "id", sb_http_req_param(req, "id"), "q", q));
    return 0;
}

static int h_echo(sb_http_req_t *req, void *data)
{
    sb_http_respond_json(req, 200, json_pack("{s:O?}", "echo", sb_http_req_json(req)));
    return 0;
}

static void later_cb(uv_timer_t *t)
{
    fixture_t *f = t->data;
    sb_http_respond(f->pending, 200, "text/plain", "late", 4);
    f->pending = NULL;
}

/* Answers from a later loop iteration, as a database query would. */
static int h_async(sb_http_req_t *req, void *data)
{
    fixture_t *f = data;
    f->pending = req;
    uv_timer_start(&f->later, later_cb, 5, 0);
    return 0;
}

static int h_decline(sb_http_req_t *req, void *data)
{
    return SB_DECLINED;
}

static int h_unavailable(sb_http_req_t *req, void *data)
{
    return SB_EUNAVAILABLE;
}

static void on_complete(sb_http_req_t *req, int route, int status, uint64_t ns, void *data)
{
    fixture_t *f = data;
    f->completed++;
    f->last_route = route;
}

/* ======================== fixture ======================== */

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    sb_http_options_t o = {
        .max_header_size = 16384,
        .max_body_size = 1024,
        .header_timeout_ms = 50,
        .read_timeout_ms = 100,
        .idle_timeout_ms = 10000,
        .on_complete = on_complete,
    };

    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->later);
    f->later.data = f;
    o.on_complete_data = f;
    f->router = sb_router_new();
    sb_router_add(f->router, "GET", "/hello", 0, h_hello, f);
    sb_router_add(f->router, "GET", "/items/{id}", 0, h_item, f);
    sb_router_add(f->router, "POST", "/echo", SB_ROUTE_JSON, h_echo, f);
    sb_router_add(f->router, "GET", "/async", 0, h_async, f);
    sb_router_add(f->router, "GET", "/maybe", 0, h_decline, f);
    sb_router_add(f->router, "GET", "/maybe", 0, h_hello, f);
    sb_router_add(f->router, "GET", "/down", 0, h_unavailable, f);
    f->srv = sb_http_server_new(&f->loop, f->router, &o);
    f->lb = sb_http_loopback_new(f->srv);
    *state = f;
    return 0;
}

static void drained(sb_http_server_t *srv, void *data)
{
    *(int *)data = 1;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int done = 0;

    sb_http_loopback_free(f->lb);
    sb_http_server_drain(f->srv, drained, &done);
    uv_close((uv_handle_t *)&f->later, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(done);
    assert_int_equal(sb_http_server_connections(f->srv), 0);
    sb_http_server_free(f->srv);
    sb_router_free(f->router);
    /* Nothing may be left open. */
    int open = 0;
    uv_walk(&f->loop, close_walk, &open);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void feed(fixture_t *f, const char *s)
{
    sb_http_loopback_feed(f->lb, s, strlen(s));
}

/*
 * Runs the loop until n responses were completed or the connection closed
 * (at most about two seconds).  UV_RUN_ONCE would block on the idle
 * timer after the last event, so the loop is polled instead.
 */
static const char *run_until(fixture_t *f, int n)
{
    for (int i = 0; i < 2000 && f->completed < n && !sb_http_loopback_closed(f->lb); i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (f->completed < n)
            uv_sleep(1);
    }
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    return sb_http_loopback_output(f->lb, NULL);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ======================== tests ======================== */

static void test_simple_get(void **state)
{
    fixture_t *f = *state;
    feed(f, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n");
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Length: 2\r\n"));
    assert_non_null(strstr(out, "X-Request-Id: abc-123\r\n"));
    assert_null(strstr(out, "Connection: close"));
    assert_true(strstr(out, "\r\n\r\nhi") != NULL);
    assert_false(sb_http_loopback_closed(f->lb));
    assert_int_equal(f->last_route, 0);
}

static void test_pipelined_in_order(void **state)
{
    fixture_t *f = *state;
    /* The slow request first: later answers must wait for it. */
    feed(f, "GET /async HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /items/1 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /items/2?q=a+b%21 HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *out = run_until(f, 3);
    assert_int_equal(count(out, "HTTP/1.1 200 OK"), 3);
    const char *a = strstr(out, "late");
    const char *b = strstr(out, "{\"id\":\"1\"");
    const char *c = strstr(out, "{\"id\":\"2\",\"q\":\"a b!\"}");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
}

static void test_split_across_reads(void **state)
{
    fixture_t *f = *state;
    const char *req = "GET /items/split HTTP/1.1\r\nHost: x\r\nX-Long: abcdefghijkl\r\n\r\n";
    for (size_t i = 0; req[i]; i++)
        sb_http_loopback_feed(f->lb, req + i, 1);
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "{\"id\":\"split\""));
}

static void test_pipelined_partial_then_rest(void **state)
{
    fixture_t *f = *state;
    /* The next request arrives in part while the first is being handled;
     * the rest comes after the answer. */
    feed(f, "GET /async HTTP/1.1\r\nHost: x\r\n\r\nGET /items/b HTT");
    run_until(f, 1);
    feed(f, "P/1.1\r\nHost: x\r\n\r\n");
    const char *out = run_until(f, 2);
    assert_non_null(strstr(out, "late"));
    assert_non_null(strstr(out, "{\"id\":\"b\""));
    assert_null(strstr(out, "408"));
}

static void test_head_and_404_405(void **state)
{
    fixture_t *f = *state;
    feed(f, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
            "DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *out = run_until(f, 3);
    const char *head_end = strstr(out, "\r\n\r\n");
    assert_non_null(head_end);
    assert_memory_equal(head_end + 4, "HTTP/1.1 404", 12); /* HEAD: no body */
    assert_non_null(strstr(out, "\"code\":\"not_found\""));
    assert_non_null(strstr(out, "HTTP/1.1 405 Method Not Allowed"));
    assert_non_null(strstr(out, "Allow: GET, HEAD\r\n"));
}

static void test_json_routes(void **state)
{
    fixture_t *f = *state;
    feed(f,
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\n"
         "Content-Length: 8\r\n\r\n{\"a\":[]}"
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
         "5\r\n\r\n{bad}");
    const char *out = run_until(f, 3);
    assert_non_null(strstr(out, "{\"echo\":{\"a\":[]}}"));
    assert_non_null(strstr(out, "HTTP/1.1 415"));
    assert_non_null(strstr(out, "\"code\":\"unsupported_media_type\""));
    assert_non_null(strstr(out, "HTTP/1.1 400"));
    assert_false(sb_http_loopback_closed(f->lb));
}

static void test_chunked_body(void **state)
{
    fixture_t *f = *state;
    feed(f, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n4\r\n{\"k\"\r\n4\r\n:12}\r\n0\r\n\r\n");
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "{\"echo\":{\"k\":12}}"));
}

static void test_body_too_large(void **state)
{
    fixture_t *f = *state;
    feed(f, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 5000\r\n\r\n");
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "HTTP/1.1 413"));
    assert_non_null(strstr(out, "Connection: close"));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_chunked_too_large(void **state)
{
    fixture_t *f = *state;
    char chunk[700];
    memset(chunk, 'a', sizeof(chunk));
    feed(f, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2bc\r\n");
    sb_http_loopback_feed(f->lb, chunk, sizeof(chunk));
    feed(f, "\r\n2bc\r\n");
    sb_http_loopback_feed(f->lb, chunk, sizeof(chunk));
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "HTTP/1.1 413"));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_header_too_large(void **state)
{
    fixture_t *f = *state;
    char *big = malloc(20001);
    memset(big, 'h', 20000);
    big[20000] = '\0';
    feed(f, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
    feed(f, big);
    free(big);
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "HTTP/1.1 431"));
    assert_non_null(strstr(out, "\"code\":\"header_too_large\""));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_malformed(void **state)
{
    fixture_t *f = *state;
    feed(f, "G\x01T / HTTP/1.1\r\n\r\n");
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "HTTP/1.1 400"));
    assert_non_null(strstr(out, "\"code\":\"bad_request\""));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_header_timeout(void **state)
{
    fixture_t *f = *state;
    feed(f, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    const char *out = run_until(f, 1); /* the 50 ms header timer fires */
    assert_non_null(strstr(out, "HTTP/1.1 408"));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_connection_close_and_http10(void **state)
{
    fixture_t *f = *state;
    feed(f, "GET /hello HTTP/1.0\r\n\r\n");
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "Connection: close"));
    assert_true(sb_http_loopback_closed(f->lb));
}

static void test_decline_and_errors(void **state)
{
    fixture_t *f = *state;
    feed(f, "GET /maybe HTTP/1.1\r\nHost: x\r\n\r\nGET /down HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *out = run_until(f, 2);
    assert_non_null(strstr(out, "\r\n\r\nhi"));
    assert_non_null(strstr(out, "HTTP/1.1 503"));
    assert_non_null(strstr(out, "Retry-After: "));
    assert_non_null(strstr(out, "\"code\":\"unavailable\""));
}

static void test_drain_closes_after_answer(void **state)
{
    fixture_t *f = *state;
    int done = 0;
    feed(f, "GET /async HTTP/1.1\r\nHost: x\r\n\r\n");
    sb_http_server_drain(f->srv, drained, &done);
    const char *out = run_until(f, 1);
    assert_non_null(strstr(out, "late"));
    assert_non_null(strstr(out, "Connection: close"));
    assert_true(sb_http_loopback_closed(f->lb));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_simple_get),
        T(test_pipelined_in_order),
        T(test_split_across_reads),
        T(test_pipelined_partial_then_rest),
        T(test_head_and_404_405),
        T(test_json_routes),
        T(test_chunked_body),
        T(test_body_too_large),
        T(test_chunked_too_large),
        T(test_header_too_large),
        T(test_malformed),
        T(test_header_timeout),
        T(test_connection_close_and_http10),
        T(test_decline_and_errors),
        T(test_drain_closes_after_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#undef T
}
