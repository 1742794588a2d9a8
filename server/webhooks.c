/*
 * webhooks.c - claiming webhook deliveries and POSTing them through the
 * worker's HTTP client.  A receiver's 2xx is success; 429, 5xx and an
 * unreachable receiver are retried (honouring Retry-After); any other
 * answer, or an address that may not be reached, fails the delivery.
 */
#include "webhooks.h"
#include "common.h"
#include "http/client.h"
#include "log.h"
#include "secrets.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEBHOOKS_BATCH "16"
#define WEBHOOKS_LEASE_SECONDS "60"
#define WEBHOOKS_MAX_ATTEMPTS "8"
#define WEBHOOKS_POLL_MS 1000

static struct {
    sb_db_t *db;
    sb_http_client_t *http;
    uv_timer_t timer;
    int running, claiming, again;
} wh;

typedef struct {
    char tenant_id[24], id[24];
} delivery_t;

static void webhooks_claim(void);

int sb_webhooks_key_hex(const char *tenant_slug, char out[65])
{
    char purpose[128];
    unsigned char key[32];
    snprintf(purpose, sizeof(purpose), "webhook:%s", tenant_slug);
    if (sb_secrets_derive(purpose, key) != 0)
        return SB_EIO;
    sodium_bin2hex(out, 65, key, sizeof(key));
    sodium_memzero(key, sizeof(key));
    return 0;
}

static void webhooks_recorded(int status, PGresult *const *res, int n, void *data)
{
    if (status != 0 && status != SB_ECLOSED)
        sb_log(SB_LOG_WARNING, NULL, "could not record a webhook result: %s", sb_strerror(status));
}

static void webhooks_record(delivery_t *d, const char *result, const char *detail, long retry_after)
{
    static const char sql[] = "SELECT sb_webhooks_result($1::bigint, $2::bigint, $3, $4,"
                              " $5::integer, " WEBHOOKS_MAX_ATTEMPTS ")";
    char ra[24];
    snprintf(ra, sizeof(ra), "%ld", retry_after > 86400 ? 86400 : retry_after);
    const char *p[5] = {d->tenant_id, d->id, result, detail, retry_after >= 0 ? ra : NULL};
    sb_db_stmt_t s = {sql, 5, p};
    if (wh.db && sb_db_query(wh.db, &s, 1, webhooks_recorded, NULL) != 0)
        sb_log(SB_LOG_WARNING, NULL, "could not record a webhook result: database unavailable");
}

static void webhooks_done(int rc, const sb_http_client_res_t *res, void *data)
{
    delivery_t *d = data;
    char detail[300];

    if (rc == SB_ECLOSED) {
        free(d); /* the lease ends and another worker tries */
        return;
    }
    if (rc == 0 && res->status >= 200 && res->status < 300) {
        webhooks_record(d, "sent", NULL, -1);
    } else if (rc == 0) {
        snprintf(detail, sizeof(detail), "the receiver answered %ld", res->status);
        int again = res->status == 429 || res->status >= 500;
        webhooks_record(d, again ? "retry" : "failed", detail, res->retry_after);
        sb_log(SB_LOG_NOTICE, NULL, "webhook %s of tenant %s: %s", d->id, d->tenant_id, detail);
    } else {
        snprintf(detail, sizeof(detail), "%s", res->error ? res->error : sb_strerror(rc));
        webhooks_record(d, rc == SB_EINVAL ? "failed" : "retry", detail, -1);
        sb_log(SB_LOG_NOTICE, NULL, "webhook %s of tenant %s: %s", d->id, d->tenant_id, detail);
    }
    free(d);
}

static void webhooks_send(const PGresult *r, int i)
{
    const char *body = PQgetvalue(r, i, 4);
    size_t len = (size_t)PQgetlength(r, i, 4);
    char key_hex[65], sig[128], id_hdr[96];
    unsigned char key[32], mac[crypto_auth_hmacsha256_BYTES];
    char mac_hex[2 * crypto_auth_hmacsha256_BYTES + 1];
    delivery_t *d = sb_xcalloc(1, sizeof(*d));

    snprintf(d->tenant_id, sizeof(d->tenant_id), "%s", PQgetvalue(r, i, 0));
    snprintf(d->id, sizeof(d->id), "%s", PQgetvalue(r, i, 1));
    if (sb_webhooks_key_hex(PQgetvalue(r, i, 2), key_hex) != 0 ||
        sodium_hex2bin(key, sizeof(key), key_hex, 64, NULL, NULL, NULL) != 0) {
        webhooks_record(d, "retry", "no installation key to sign with", -1);
        free(d);
        return;
    }
    crypto_auth_hmacsha256(mac, (const unsigned char *)body, len, key);
    sodium_memzero(key, sizeof(key));
    sodium_bin2hex(mac_hex, sizeof(mac_hex), mac, sizeof(mac));
    snprintf(sig, sizeof(sig), "X-Switchboard-Signature: sha256=%s", mac_hex);
    snprintf(id_hdr, sizeof(id_hdr), "X-Switchboard-Delivery: %s-%s", d->tenant_id, d->id);
    const char *headers[] = {"Content-Type: application/json", sig, id_hdr, NULL};
    sb_http_client_req_t req = {
        .method = "POST",
        .url = PQgetvalue(r, i, 3),
        .headers = headers,
        .body = body,
        .len = len,
        .timeout_ms = 10000,
    };
    if (sb_http_client_request(wh.http, &req, webhooks_done, d) != 0) {
        webhooks_record(d, "failed", "not an http(s) URL", -1);
        free(d);
    }
}

static void webhooks_claimed(int status, PGresult *const *res, int n, void *data)
{
    wh.claiming = 0;
    if (status != 0 || !wh.running)
        return;
    int rows = PQntuples(res[0]);
    for (int i = 0; i < rows; i++)
        webhooks_send(res[0], i);
    if (rows == atoi(WEBHOOKS_BATCH) || wh.again) {
        wh.again = 0;
        webhooks_claim();
    }
}

static void webhooks_claim(void)
{
    static const char sql[] =
        "SELECT * FROM sb_webhooks_claim(" WEBHOOKS_BATCH ", " WEBHOOKS_LEASE_SECONDS ")";
    sb_db_stmt_t s = {sql, 0, NULL};

    if (!wh.running)
        return;
    if (wh.claiming) {
        wh.again = 1;
        return;
    }
    if (sb_db_query(wh.db, &s, 1, webhooks_claimed, NULL) == 0)
        wh.claiming = 1;
}

static void webhooks_tick(uv_timer_t *t)
{
    webhooks_claim();
}

int sb_webhooks_start(uv_loop_t *loop, sb_db_t *db, const sb_config_t *cfg)
{
    sb_http_client_options_t opts = {.allow_private = cfg->webhook_allow_private};
    if (sb_http_client_new(loop, &opts, &wh.http) != 0)
        return SB_EINVAL;
    wh.db = db;
    wh.running = 1;
    uv_timer_init(loop, &wh.timer);
    uv_timer_start(&wh.timer, webhooks_tick, 200, WEBHOOKS_POLL_MS);
    return 0;
}

void sb_webhooks_wake(void)
{
    webhooks_claim();
}

void sb_webhooks_stop(void)
{
    if (!wh.running)
        return;
    wh.running = 0;
    uv_timer_stop(&wh.timer);
    uv_close((uv_handle_t *)&wh.timer, NULL);
    sb_http_client_close(wh.http);
    wh.http = NULL;
    wh.db = NULL;
}
