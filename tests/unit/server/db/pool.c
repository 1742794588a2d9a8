/*
 * Unit tests for db/pool.c against a real PostgreSQL: the cluster that
 * tests/run starts (SWITCHBOARD_TEST_DATABASE_URL).  Batches with
 * parameters, the prepared-statement cache, errors inside a pipeline,
 * transactions on a reserved connection, an unreachable server, LISTEN.
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
#include "db/db.h"

typedef struct {
    uv_loop_t loop;
    sb_db_t *db;
    int done;
    int status;
    int n;
    char values[8][64];
    char sqlstate[8][8];
    sb_db_conn_t *conn;
    char notified[64];
    int listen_up;
} fx_t;

static const char *db_url(void)
{
    return getenv("SWITCHBOARD_TEST_DATABASE_URL");
}

static fx_t *fx_new(const char *url)
{
    fx_t *f = calloc(1, sizeof(*f));
    sb_db_options_t o = {.conninfo = url, .size = 2, .acquire_timeout_ms = 3000, .max_waiting = 8};
    uv_loop_init(&f->loop);
    assert_int_equal(sb_db_new(&f->loop, &o, &f->db), 0);
    return f;
}

static void fx_closed(void *data)
{
    *(int *)data = 1;
}

static void fx_free(fx_t *f)
{
    int closed = 0;
    sb_db_close(f->db, fx_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
}

/* Polls the loop until *flag is set (at most about ten seconds). */
static void wait_for(fx_t *f, int *flag)
{
    for (int i = 0; i < 10000 && !*flag; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (!*flag)
            uv_sleep(1);
    }
    assert_true(*flag);
}

static void exec_cb(int status, PGresult *const *res, int n, void *data)
{
    fx_t *f = data;
    f->status = status;
    f->n = n;
    for (int i = 0; i < n && i < 8; i++) {
        f->values[i][0] = f->sqlstate[i][0] = '\0';
        if (res == NULL || res[i] == NULL)
            continue;
        if (PQresultStatus(res[i]) == PGRES_TUPLES_OK && PQntuples(res[i]) > 0)
            snprintf(f->values[i], sizeof(f->values[i]), "%s", PQgetvalue(res[i], 0, 0));
        const char *st = PQresultErrorField(res[i], PG_DIAG_SQLSTATE);
        if (st)
            snprintf(f->sqlstate[i], sizeof(f->sqlstate[i]), "%s", st);
    }
    f->done = 1;
}

static void run_query(fx_t *f, const sb_db_stmt_t *stmts, int n)
{
    f->done = 0;
    assert_int_equal(sb_db_query(f->db, stmts, n, exec_cb, f), 0);
    wait_for(f, &f->done);
}

static int need_db(void **state)
{
    if (db_url() == NULL) {
        fprintf(stderr, "SWITCHBOARD_TEST_DATABASE_URL is not set (run tests/run)\n");
        return -1;
    }
    return 0;
}

static void test_params_and_cache(void **state)
{
    fx_t *f = fx_new(db_url());
    const char *p1[] = {"41"};
    const char *p2[] = {"x'); DROP TABLE tenants; --"};
    const char *p3[] = {NULL};
    sb_db_stmt_t s[] = {
        {"SELECT $1::int + 1", 1, p1},
        {"SELECT length($1::text)", 1, p2},
        {"SELECT $1::int + 1", 1, p1}, /* the same text twice in a batch */
        {"SELECT coalesce($1::text, 'null')", 1, p3},
    };
    for (int round = 0; round < 3; round++) { /* later rounds hit the cache */
        run_query(f, s, 4);
        assert_int_equal(f->status, 0);
        assert_int_equal(f->n, 4);
        assert_string_equal(f->values[0], "42");
        assert_string_equal(f->values[1], "27");
        assert_string_equal(f->values[2], "42");
        assert_string_equal(f->values[3], "null");
    }
    fx_free(f);
}

static void test_error_aborts_batch(void **state)
{
    fx_t *f = fx_new(db_url());
    sb_db_stmt_t s[] = {
        {"CREATE TABLE pool_test_atomic (a int)", 0, NULL},
        {"SELECT 1/0", 0, NULL},
        {"SELECT 2", 0, NULL},
    };
    run_query(f, s, 3);
    assert_int_equal(f->status, SB_EDB);
    assert_string_equal(f->sqlstate[1], "22012");
    assert_string_equal(f->values[2], "");

    /* The batch was one transaction: the table does not exist. */
    sb_db_stmt_t check = {"SELECT to_regclass('pool_test_atomic') IS NULL", 0, NULL};
    run_query(f, &check, 1);
    assert_int_equal(f->status, 0);
    assert_string_equal(f->values[0], "t");

    /* A statement that fails to prepare is not cached as prepared. */
    sb_db_stmt_t bad = {"SELEC 1", 0, NULL};
    for (int i = 0; i < 2; i++) {
        run_query(f, &bad, 1);
        assert_int_equal(f->status, SB_EDB);
        assert_string_equal(f->sqlstate[0], "42601");
    }
    fx_free(f);
}

static void acquired(sb_db_conn_t *conn, int status, void *data)
{
    fx_t *f = data;
    f->status = status;
    f->conn = conn;
    f->done = 1;
}

static void conn_exec(fx_t *f, const sb_db_stmt_t *s, int n)
{
    f->done = 0;
    assert_int_equal(sb_db_exec(f->conn, s, n, exec_cb, f), 0);
    wait_for(f, &f->done);
}

static void test_transaction_rolled_back_on_release(void **state)
{
    fx_t *f = fx_new(db_url());
    sb_db_stmt_t setup[] = {{"CREATE TABLE IF NOT EXISTS pool_test_tx (a int)", 0, NULL},
                            {"TRUNCATE pool_test_tx", 0, NULL}};
    run_query(f, setup, 2);
    assert_int_equal(f->status, 0);

    f->done = 0;
    assert_int_equal(sb_db_acquire(f->db, acquired, f), 0);
    wait_for(f, &f->done);
    assert_int_equal(f->status, 0);
    sb_db_stmt_t begin[] = {{"BEGIN", 0, NULL}, {"INSERT INTO pool_test_tx VALUES (1)", 0, NULL}};
    conn_exec(f, begin, 2);
    assert_int_equal(f->status, 0);
    sb_db_stmt_t count = {"SELECT count(*) FROM pool_test_tx", 0, NULL};
    conn_exec(f, &count, 1);
    assert_string_equal(f->values[0], "1");
    /* Released without COMMIT: the pool rolls the transaction back. */
    sb_db_release(f->conn);

    for (int i = 0; i < 3; i++) {
        run_query(f, &count, 1);
        assert_int_equal(f->status, 0);
        assert_string_equal(f->values[0], "0");
    }
    sb_db_stmt_t drop = {"DROP TABLE pool_test_tx", 0, NULL};
    run_query(f, &drop, 1);
    fx_free(f);
}

static void test_unreachable(void **state)
{
    fx_t *f = fx_new("postgresql:///postgres?host=/nonexistent-switchboard");
    sb_db_stmt_t s = {"SELECT 1", 0, NULL};
    sb_db_stats_t st;

    /* Connection attempts fail at once for a missing socket. */
    for (int i = 0; i < 100 && sb_db_available(f->db); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(sb_db_available(f->db));
    assert_int_equal(sb_db_query(f->db, &s, 1, exec_cb, f), SB_EUNAVAILABLE);
    sb_db_stats(f->db, &st);
    assert_int_equal(st.busy + st.idle, 0);
    fx_free(f);
}

static void on_notify(const char *channel, const char *payload, void *data)
{
    fx_t *f = data;
    snprintf(f->notified, sizeof(f->notified), "%s:%s", channel, payload);
}

static void on_listen_state(int up, void *data)
{
    fx_t *f = data;
    f->listen_up = up;
}

static void test_listen(void **state)
{
    fx_t *f = fx_new(db_url());
    const char *channels[] = {"sb_test_events"};
    assert_int_equal(sb_db_listen_start(f->db, channels, 1, on_notify, on_listen_state, f), 0);
    assert_int_equal(sb_db_listen_start(f->db, channels, 1, on_notify, on_listen_state, f),
                     SB_EBUSY);
    wait_for(f, &f->listen_up);
    /*
     * The listener has its own connection: the pool's may still be on a
     * retry after a first attempt that failed on a loaded machine, when a
     * query is refused (SB_EUNAVAILABLE) rather than queued.
     */
    for (int i = 0; i < 10000 && !sb_db_available(f->db); i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_true(sb_db_available(f->db));

    const char *p[] = {"hello"};
    sb_db_stmt_t s = {"SELECT pg_notify('sb_test_events', $1)", 1, p};
    run_query(f, &s, 1);
    assert_int_equal(f->status, 0);
    for (int i = 0; i < 5000 && f->notified[0] == '\0'; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_string_equal(f->notified, "sb_test_events:hello");
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_and_cache),
        cmocka_unit_test(test_error_aborts_batch),
        cmocka_unit_test(test_transaction_rolled_back_on_release),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_listen),
    };
    return cmocka_run_group_tests(tests, need_db, NULL);
}
