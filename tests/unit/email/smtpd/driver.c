/*
 * driver.c - a stand-alone SMTP/LMTP server around plugins/email/smtpd.c
 * for tests/blackbox/test_email_smtpd.py: it stores each message as
 * DIR/<n>.eml and answers recipients by their names ("unknown", "defer",
 * "fail", "bad", "slow" prefixes).  Not a meson test: pytest starts it.
 * SIGTERM closes the server and ends the loop, so LeakSanitizer can check.
 */
#include <switchboard/plugin.h>

#include "smtpd.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

typedef struct driver {
    uv_loop_t *loop;
    sb_smtpd_t *smtpd;
    uv_signal_t sigterm;
    const char *dir;
    unsigned counter;
} driver_t;

/* A result given 300 ms late, to exercise waiting and LMTP ordering. */
typedef struct slow_result {
    uv_timer_t timer;
    sb_smtpd_tx_t *tx;
    size_t i;
} slow_result_t;

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int driver_rcpt(const char *addr, void *data)
{
    if (has_prefix(addr, "unknown"))
        return SB_ENOENT;
    if (has_prefix(addr, "defer"))
        return SB_EUNAVAILABLE;
    return 0;
}

static void slow_on_close(uv_handle_t *h)
{
    g_free(h->data);
}

static void slow_on_timer(uv_timer_t *t)
{
    slow_result_t *r = t->data;

    sb_smtpd_result(r->tx, r->i, 0);
    uv_close((uv_handle_t *)&r->timer, slow_on_close);
}

static int driver_store(driver_t *d, const char *raw, size_t len)
{
    char *path = g_strdup_printf("%s/%u.eml", d->dir, ++d->counter);
    GError *err = NULL;
    int rc = 0;

    if (!g_file_set_contents(path, raw, (gssize)len, &err)) {
        fprintf(stderr, "driver: could not write \"%s\": %s\n", path, err->message);
        g_error_free(err);
        rc = SB_EIO;
    }
    g_free(path);
    return rc;
}

static void driver_message(sb_smtpd_tx_t *tx, const char *from, const char *const *rcpts,
                           size_t nrcpts, const char *raw, size_t len, void *data)
{
    driver_t *d = data;
    int stored = d->dir ? driver_store(d, raw, len) : 0;

    fprintf(stderr, "driver: message from \"%s\", %zu recipients, %zu bytes\n", from, nrcpts, len);
    for (size_t i = 0; i < nrcpts; i++) {
        if (has_prefix(rcpts[i], "slow")) {
            slow_result_t *r = g_new0(slow_result_t, 1);
            r->tx = tx;
            r->i = i;
            uv_timer_init(d->loop, &r->timer);
            r->timer.data = r;
            uv_timer_start(&r->timer, slow_on_timer, 300, 0);
        } else if (has_prefix(rcpts[i], "fail")) {
            sb_smtpd_result(tx, i, SB_EUNAVAILABLE);
        } else if (has_prefix(rcpts[i], "bad")) {
            sb_smtpd_result(tx, i, SB_EINVAL);
        } else {
            sb_smtpd_result(tx, i, stored);
        }
    }
}

static void driver_on_signal_close(uv_handle_t *h)
{
}

static void driver_on_sigterm(uv_signal_t *sig, int signum)
{
    driver_t *d = sig->data;

    sb_smtpd_close(d->smtpd);
    d->smtpd = NULL;
    uv_close((uv_handle_t *)&d->sigterm, driver_on_signal_close);
}

static unsigned opt_unsigned(const char *arg)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);

    if (!*arg || *end) {
        fprintf(stderr, "driver: bad number \"%s\"\n", arg);
        exit(2);
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},      {"lmtp", no_argument, NULL, 'L'},
        {"max-size", required_argument, NULL, 's'},    {"max-rcpts", required_argument, NULL, 'r'},
        {"max-clients", required_argument, NULL, 'c'}, {"timeout-ms", required_argument, NULL, 't'},
        {"dir", required_argument, NULL, 'd'},         {NULL, 0, NULL, 0},
    };
    sb_smtpd_config_t cfg = {.listen = "127.0.0.1:0", .hostname = "smtpd.test"};
    driver_t d = {0};
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            cfg.listen = optarg;
            break;
        case 'L':
            cfg.lmtp = 1;
            break;
        case 's':
            cfg.max_size = opt_unsigned(optarg);
            break;
        case 'r':
            cfg.max_rcpts = opt_unsigned(optarg);
            break;
        case 'c':
            cfg.max_clients = opt_unsigned(optarg);
            break;
        case 't':
            cfg.timeout_ms = opt_unsigned(optarg);
            break;
        case 'd':
            d.dir = optarg;
            break;
        default:
            return 2;
        }
    }
    d.loop = uv_default_loop();
    cfg.rcpt = driver_rcpt;
    cfg.message = driver_message;
    cfg.data = &d;
    rc = sb_smtpd_listen(d.loop, &cfg, &d.smtpd);
    if (rc < 0) {
        fprintf(stderr, "driver: could not listen on \"%s\": %d\n", cfg.listen, rc);
        return 1;
    }
    uv_signal_init(d.loop, &d.sigterm);
    d.sigterm.data = &d;
    uv_signal_start(&d.sigterm, driver_on_sigterm, SIGTERM);
    printf("port %d\n", sb_smtpd_port(d.smtpd));
    fflush(stdout);
    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(d.loop);
    if (rc < 0) {
        fprintf(stderr, "driver: loop not empty at exit: %s\n", uv_strerror(rc));
        return 1;
    }
    return 0;
}
