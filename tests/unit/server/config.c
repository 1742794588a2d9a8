/*
 * Unit tests for config.c: value parsers, the Lua file, the environment
 * winning over the file, and errors that name the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"

static const char *const env_keys[] = {
    "SWITCHBOARD_DATABASE_URL",     "SWITCHBOARD_LISTEN",           "SWITCHBOARD_WORKERS",
    "SWITCHBOARD_LOG_LEVEL",        "SWITCHBOARD_DATA_DIR",         "SWITCHBOARD_PLUGINS_DIR",
    "SWITCHBOARD_PLUGINS",          "SWITCHBOARD_SCRIPTS_DIR",      "SWITCHBOARD_MAX_BODY_SIZE",
    "SWITCHBOARD_HEADER_TIMEOUT",   "SWITCHBOARD_READ_TIMEOUT",     "SWITCHBOARD_IDLE_TIMEOUT",
    "SWITCHBOARD_SHUTDOWN_TIMEOUT", "SWITCHBOARD_DB_POOL_SIZE",     "SWITCHBOARD_DEBUG_ROUTES",
    "SWITCHBOARD_MAX_CONNECTIONS",  "SWITCHBOARD_PLUGINS_REQUIRED",
};

static int clear_env(void **state)
{
    for (size_t i = 0; i < SB_ARRAY_SIZE(env_keys); i++)
        unsetenv(env_keys[i]);
    return 0;
}

static char *write_file(const char *text)
{
    char *path = sb_xstrdup("/tmp/sbconfXXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_parse_size(void **state)
{
    size_t v;
    assert_int_equal(sb_config_parse_size("1024", &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(sb_config_parse_size("10MiB", &v), 0);
    assert_int_equal(v, 10u << 20);
    assert_int_equal(sb_config_parse_size("2k", &v), 0);
    assert_int_equal(v, 2048);
    assert_int_equal(sb_config_parse_size("1 GiB", &v), 0);
    assert_int_equal(v, 1u << 30);
    assert_int_equal(sb_config_parse_size("", &v), SB_EINVAL);
    assert_int_equal(sb_config_parse_size("-1", &v), SB_EINVAL);
    assert_int_equal(sb_config_parse_size("10 parsecs", &v), SB_EINVAL);
    assert_int_equal(sb_config_parse_size("99999999999999999999999", &v), SB_EINVAL);
}

static void test_parse_other(void **state)
{
    uint64_t ms;
    int b;
    struct sockaddr_storage ss;

    assert_int_equal(sb_config_parse_seconds("0.5", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(sb_config_parse_seconds("10", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(sb_config_parse_seconds("ten", &ms), SB_EINVAL);
    assert_int_equal(sb_config_parse_seconds("-3", &ms), SB_EINVAL);

    assert_int_equal(sb_config_parse_bool("on", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(sb_config_parse_bool("FALSE", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(sb_config_parse_bool("maybe", &b), SB_EINVAL);

    assert_int_equal(sb_config_parse_listen("127.0.0.1:8080", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    assert_int_equal(sb_config_parse_listen("[::1]:80", &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(sb_config_parse_listen("localhost:1", &ss), 0);
    assert_int_equal(sb_config_parse_listen("nonsense", &ss), SB_EINVAL);
    assert_int_equal(sb_config_parse_listen("127.0.0.1:0", &ss), SB_EINVAL);
    assert_int_equal(sb_config_parse_listen("127.0.0.1:65536", &ss), SB_EINVAL);
    assert_int_equal(sb_config_parse_listen("example.com:80", &ss), SB_EINVAL);
    assert_int_equal(sb_config_parse_listen(":80", &ss), SB_EINVAL);
}

static void test_defaults(void **state)
{
    sb_config_t cfg;
    char err[256];

    assert_int_equal(sb_config_load(&cfg, NULL, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_true(cfg.workers >= 1);
    assert_int_equal(cfg.max_body_size, 10u << 20);
    assert_int_equal(cfg.debug_routes, 0);
    assert_null(cfg.plugins);
    sb_config_free(&cfg);
}

static void test_file_and_env(void **state)
{
    char *path = write_file("listen = \"127.0.0.1:9001\"\n"
                            "workers = 3\n"
                            "max_body_size = \"1KiB\"\n"
                            "idle_timeout = 2.5\n"
                            "debug_routes = true\n"
                            "data_dir = string.format('%s/%s', '/tmp', 'sb')\n");
    sb_config_t cfg;
    char err[256];

    assert_int_equal(sb_config_load(&cfg, path, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:9001");
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.max_body_size, 1024);
    assert_int_equal(cfg.idle_timeout_ms, 2500);
    assert_int_equal(cfg.debug_routes, 1);
    assert_string_equal(cfg.data_dir, "/tmp/sb");
    sb_config_free(&cfg);

    setenv("SWITCHBOARD_LISTEN", "127.0.0.1:9002", 1);
    setenv("SWITCHBOARD_WORKERS", "1", 1);
    assert_int_equal(sb_config_load(&cfg, path, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:9002");
    assert_int_equal(cfg.workers, 1);
    sb_config_t copy;
    sb_config_copy(&copy, &cfg);
    sb_config_free(&cfg);
    assert_string_equal(copy.listen, "127.0.0.1:9002");
    sb_config_free(&copy);
    unlink(path);
    free(path);
}

static void test_errors_name_the_key(void **state)
{
    sb_config_t cfg;
    char err[512];

    setenv("SWITCHBOARD_WORKERS", "abc", 1);
    assert_int_equal(sb_config_load(&cfg, NULL, err, sizeof(err)), SB_EINVAL);
    assert_non_null(strstr(err, "SWITCHBOARD_WORKERS"));
    assert_non_null(strstr(err, "\"workers\""));
    unsetenv("SWITCHBOARD_WORKERS");

    setenv("SWITCHBOARD_LOG_LEVEL", "chatty", 1);
    assert_int_equal(sb_config_load(&cfg, NULL, err, sizeof(err)), SB_EINVAL);
    assert_non_null(strstr(err, "log_level"));
    unsetenv("SWITCHBOARD_LOG_LEVEL");

    char *path = write_file("listen = '127.0.0.1:1'\nlisten_port = 80\n");
    assert_int_equal(sb_config_load(&cfg, path, err, sizeof(err)), SB_EINVAL);
    assert_non_null(strstr(err, "listen_port"));
    unlink(path);
    free(path);

    path = write_file("workers = = 2\n");
    assert_int_equal(sb_config_load(&cfg, path, err, sizeof(err)), SB_EINVAL);
    assert_non_null(strstr(err, ":1:")); /* the line of the syntax error */
    unlink(path);
    free(path);

    /* A config file cannot reach the system. */
    path = write_file("data_dir = io.read()\n");
    assert_int_equal(sb_config_load(&cfg, path, err, sizeof(err)), SB_EINVAL);
    unlink(path);
    free(path);

    assert_int_equal(sb_config_load(&cfg, "/nonexistent/switchboard.conf", err, sizeof(err)),
                     SB_EINVAL);
    assert_non_null(strstr(err, "/nonexistent/switchboard.conf"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_other),
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_file_and_env, clear_env),
        cmocka_unit_test_setup(test_errors_name_the_key, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
