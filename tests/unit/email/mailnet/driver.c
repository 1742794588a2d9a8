/*
 * driver.c - a command-line driver of plugins/email/mailnet.c for the
 * black-box tests (tests/blackbox/test_email_mailnet.py), which run it
 * against real peers (Dovecot, smtp-sink).  Not a meson test by itself.
 *
 *   mailnet_driver send --url URL --from A --to B [--to C] [--user U
 *       --password P] [--starttls N] [--timeout-ms N] [--close-after-ms N] FILE
 *     prints "result N DETAIL"
 *   mailnet_driver poll --url URL --user U --password P --after AFTER
 *       --state FILE [--max N] [--fail-at UID] [--close-at UID] [--save DIR]
 *       [--close-after-ms N]
 *     prints "message UID LEN" per message, then "done RC V LAST" and,
 *     when there is one, "error TEXT"; the state file holds "V LAST"
 *
 * Both end by closing the mailnet and the loop; the exit code is 0 unless
 * the arguments were wrong (2) or something was left open on the loop (3).
 */
#include <switchboard/plugin.h>

#include "mailnet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRIVER_MAX_RCPTS 16

typedef struct driver {
    uv_loop_t loop;
    sb_mailnet_t *net;
    uv_timer_t timer; /* sb_imap_stored later, or --close-after-ms */
    int timer_open;
    /* options */
    const char *mode, *url, *from, *user, *password, *after, *state, *save, *file;
    const char *rcpts[DRIVER_MAX_RCPTS + 1];
    int nrcpts, starttls;
    long timeout_ms, close_after_ms;
    unsigned max;
    uint32_t fail_at, close_at;
    /* a poll's message waiting for its answer */
    sb_imap_poll_t *poll;
    int stored_rc;
} driver_t;

static void driver_timer_closed(uv_handle_t *h)
{
    (void)h;
}

/* Ends the run: nothing may be left on the loop afterwards. */
static void driver_end(driver_t *d)
{
    sb_mailnet_close(d->net);
    d->net = NULL;
    if (d->timer_open) {
        d->timer_open = 0;
        uv_close((uv_handle_t *)&d->timer, driver_timer_closed);
    }
}

/* ======================== send ======================== */

static void driver_sent(int result, const char *detail, void *data)
{
    driver_t *d = data;
    printf("result %d %s\n", result, detail ? detail : "");
    fflush(stdout);
    driver_end(d);
}

static void driver_close_now(uv_timer_t *t)
{
    driver_t *d = t->data;
    sb_mailnet_close(d->net);
}

static char *driver_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
            }
            buf = bigger;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int driver_send(driver_t *d)
{
    size_t len = 0;
    char *msg = driver_read_file(d->file, &len);
    if (msg == NULL) {
        fprintf(stderr, "could not read \"%s\": %s\n", d->file, strerror(errno));
        return 2;
    }
    sb_relay_t relay = {d->url, d->user, d->password, d->starttls, d->timeout_ms};
    int rc = sb_relay_send(d->net, &relay, d->from, d->rcpts, msg, len, driver_sent, d);
    free(msg); /* copied by sb_relay_send */
    if (rc != 0) {
        printf("refused %d\n", rc);
        driver_end(d);
        return 0;
    }
    if (d->close_after_ms > 0) {
        uv_timer_start(&d->timer, driver_close_now, (uint64_t)d->close_after_ms, 0);
    }
    return 0;
}

/* ======================== poll ======================== */

static void driver_answer(uv_timer_t *t)
{
    driver_t *d = t->data;
    sb_imap_poll_t *poll = d->poll;
    d->poll = NULL;
    sb_imap_stored(poll, d->stored_rc);
}

static void driver_save(const driver_t *d, uint32_t uid, const char *raw, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%u.eml", d->save, (unsigned)uid);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(raw, 1, len, f) != len)
        fprintf(stderr, "could not write \"%s\"\n", path);
    if (f)
        fclose(f);
}

static void driver_message(sb_imap_poll_t *poll, uint32_t uid, const char *raw, size_t len,
                           void *data)
{
    driver_t *d = data;
    printf("message %u %zu\n", (unsigned)uid, len);
    fflush(stdout);
    if (d->save)
        driver_save(d, uid, raw, len);
    if (d->close_at && uid == d->close_at) {
        driver_end(d); /* done runs with SB_ECLOSED; poll is gone */
        return;
    }
    /* Answer from the loop, as an owner storing to a database would. */
    d->poll = poll;
    d->stored_rc = d->fail_at && uid == d->fail_at ? SB_EIO : 0;
    uv_timer_start(&d->timer, driver_answer, 0, 0);
}

static void driver_polled(int rc, uint32_t uidvalidity, uint32_t last_uid, const char *error,
                          void *data)
{
    driver_t *d = data;
    printf("done %d %u %u\n", rc, (unsigned)uidvalidity, (unsigned)last_uid);
    if (error)
        printf("error %s\n", error);
    fflush(stdout);
    FILE *f = fopen(d->state, "w");
    if (f) {
        fprintf(f, "%u %u\n", (unsigned)uidvalidity, (unsigned)last_uid);
        fclose(f);
    }
    d->poll = NULL;
    driver_end(d);
}

static int driver_poll(driver_t *d)
{
    unsigned v = 0, last = 0;
    FILE *f = fopen(d->state, "r");
    if (f) {
        if (fscanf(f, "%u %u", &v, &last) != 2)
            v = last = 0;
        fclose(f);
    }
    sb_imap_account_t acct = {d->url, d->user, d->password, d->after, d->timeout_ms};
    int rc = sb_imap_poll(d->net, &acct, v, last, d->max, driver_message, driver_polled, d);
    if (rc != 0) {
        printf("refused %d\n", rc);
        driver_end(d);
        return 0;
    }
    if (d->close_after_ms > 0)
        uv_timer_start(&d->timer, driver_close_now, (uint64_t)d->close_after_ms, 0);
    return 0;
}

/* ======================== main ======================== */

static int driver_usage(void)
{
    fprintf(stderr, "usage: mailnet_driver send|poll --url URL ... (see driver.c)\n");
    return 2;
}

static int driver_args(driver_t *d, int argc, char **argv)
{
    if (argc < 2)
        return -1;
    d->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strncmp(a, "--", 2) != 0) {
            d->file = a;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--url") == 0)
            d->url = v;
        else if (strcmp(a, "--from") == 0)
            d->from = v;
        else if (strcmp(a, "--to") == 0 && d->nrcpts < DRIVER_MAX_RCPTS)
            d->rcpts[d->nrcpts++] = v;
        else if (strcmp(a, "--user") == 0)
            d->user = v;
        else if (strcmp(a, "--password") == 0)
            d->password = v;
        else if (strcmp(a, "--after") == 0)
            d->after = v;
        else if (strcmp(a, "--state") == 0)
            d->state = v;
        else if (strcmp(a, "--save") == 0)
            d->save = v;
        else if (strcmp(a, "--starttls") == 0)
            d->starttls = atoi(v);
        else if (strcmp(a, "--timeout-ms") == 0)
            d->timeout_ms = atol(v);
        else if (strcmp(a, "--close-after-ms") == 0)
            d->close_after_ms = atol(v);
        else if (strcmp(a, "--max") == 0)
            d->max = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--fail-at") == 0)
            d->fail_at = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--close-at") == 0)
            d->close_at = (uint32_t)strtoul(v, NULL, 10);
        else
            return -1;
    }
    if (d->url == NULL)
        return -1;
    if (strcmp(d->mode, "send") == 0)
        return d->from && d->file ? 0 : -1;
    if (strcmp(d->mode, "poll") == 0)
        return d->state ? 0 : -1;
    return -1;
}

int main(int argc, char **argv)
{
    static driver_t d;
    if (driver_args(&d, argc, argv) != 0)
        return driver_usage();
    uv_loop_init(&d.loop);
    if (sb_mailnet_open(&d.loop, &d.net) != 0) {
        fprintf(stderr, "could not open the mailnet\n");
        return 1;
    }
    uv_timer_init(&d.loop, &d.timer);
    d.timer.data = &d;
    d.timer_open = 1;
    int rc = strcmp(d.mode, "send") == 0 ? driver_send(&d) : driver_poll(&d);
    if (rc != 0)
        driver_end(&d);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    /* A callback that never ran leaves the mailnet open: close it now. */
    driver_end(&d);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d.loop) != 0) {
        fprintf(stderr, "handles left open on the loop\n");
        return 3;
    }
    return rc;
}
