/*
 * Unit tests for common.c and pool.c: error names, sb_buf_t, arenas.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "pool.h"

static void test_errors(void **state)
{
    assert_string_equal(sb_err_name(SB_EINVAL), "EINVAL");
    assert_string_equal(sb_strerror(SB_EUNAVAILABLE), "service unavailable");
    assert_string_equal(sb_strerror(0), "success");
    assert_string_equal(sb_strerror(-99999), "unknown error");
    assert_true(SB_AGAIN < 0 && SB_DECLINED < 0 && SB_AGAIN != SB_DECLINED);
}

static void test_buf(void **state)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "hello");
    sb_buf_printf(&b, " %d %s", 42, "world");
    assert_string_equal(b.data, "hello 42 world");
    assert_int_equal(b.len, 14);

    /* Longer than printf's stack buffer. */
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sb_buf_reset(&b);
    sb_buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[1000], ']');

    size_t len;
    char *s = sb_buf_steal(&b, &len);
    assert_int_equal(len, 1001);
    assert_null(b.data);
    free(s);
    sb_buf_free(&b);
}

static int cleanups_run;
static void count_cleanup(void *data)
{
    cleanups_run += *(int *)data;
}

static void test_pool(void **state)
{
    sb_pool_t *p = sb_pool_new();
    int one = 1, ten = 10;

    for (int round = 0; round < 3; round++) {
        char *a = sb_pool_strdup(p, "abc");
        void *big = sb_pool_alloc(p, 100000); /* a block of its own */
        memset(big, 0xab, 100000);
        for (int i = 0; i < 1000; i++)
            assert_non_null(sb_pool_alloc(p, 24));
        assert_string_equal(a, "abc");
        assert_int_equal((uintptr_t)sb_pool_alloc(p, 3) % 16, 0);
        char *z = sb_pool_calloc(p, 64);
        for (int i = 0; i < 64; i++)
            assert_int_equal(z[i], 0);
        sb_pool_cleanup_add(p, count_cleanup, &one);
        sb_pool_cleanup_add(p, count_cleanup, &ten);
        sb_pool_reset(p);
    }
    assert_int_equal(cleanups_run, 33);
    sb_pool_cleanup_add(p, count_cleanup, &one);
    sb_pool_free(p);
    assert_int_equal(cleanups_run, 34);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
