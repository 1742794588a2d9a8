/*
 * outbox.c - claiming outbox rows and recording what the plugins did with
 * them.  Delivery is at least once: a worker that dies between a plugin's
 * send and the recorded result leaves the row to be claimed again when
 * its lease ends; plugins receive the message id to deduplicate on.
 */
#include "outbox.h"
#include "common.h"
#include "log.h"
#include "plugin/host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOX_BATCH "16"
#define OUTBOX_LEASE_SECONDS "60"
#define OUTBOX_MAX_ATTEMPTS "8"
#define OUTBOX_POLL_MS 1000

static struct {
    uv_loop_t *loop;
    sb_db_t *db;
    uv_timer_t timer;
    int running;
    int claiming;
    int again;
    char channels[512];
} ob;

typedef struct {
    char tenant_id[24], outbox_id[24];
    char *strings; /* the row's text, one block */
    sb_outbound_t msg;
} outbox_job_t;

static void outbox_claim(void);

static void outbox_recorded(int status, PGresult *const *res, int n, void *data)
{
    if (status != 0 && status != SB_ECLOSED)
        sb_log(SB_LOG_WARNING, NULL, "could not record a delivery result: %s", sb_strerror(status));
}

static void outbox_sent(int result, const char *detail, const sb_send_report_t *rep, void *data)
{
    static const char sql[] =
        "SELECT sb_outbox_result($1::bigint, $2::bigint, $3, $4, " OUTBOX_MAX_ATTEMPTS
        ", $5, $6::integer)";
    outbox_job_t *job = data;
    const char *word = result == SB_SENT ? "sent" : result == SB_RETRY ? "retry" : "failed";
    char retry_after[16];
    snprintf(retry_after, sizeof(retry_after), "%d", rep ? rep->retry_after_s : 0);
    const char *params[6] = {
        job->tenant_id, job->outbox_id, word, detail, rep ? rep->platform_id : NULL, retry_after};
    sb_db_stmt_t s = {sql, 6, params};

    if (result != SB_SENT)
        sb_log(SB_LOG_NOTICE, NULL, "delivery of message %lld on \"%s\": %s%s%s",
               (long long)job->msg.message, job->msg.channel, word, detail ? ": " : "",
               detail ? detail : "");
    /* If the database is gone the lease runs out and the row is tried again. */
    if (ob.db && sb_db_query(ob.db, &s, 1, outbox_recorded, NULL) != 0)
        sb_log(SB_LOG_WARNING, NULL, "could not record a delivery result: database unavailable");
    free(job->strings);
    free(job);
}

static void outbox_dispatch_row(const PGresult *r, int i)
{
    outbox_job_t *job = sb_xcalloc(1, sizeof(*job));
    sb_buf_t b;
    size_t offs[10];
    static const int cols[10] = {3, 4, 7, 8, 9, 10, 11, 13, 14, 15};

    snprintf(job->tenant_id, sizeof(job->tenant_id), "%s", PQgetvalue(r, i, 0));
    snprintf(job->outbox_id, sizeof(job->outbox_id), "%s", PQgetvalue(r, i, 1));
    sb_buf_init(&b);
    for (int k = 0; k < 10; k++) {
        offs[k] = b.len;
        sb_buf_append(&b, PQgetvalue(r, i, cols[k]), (size_t)PQgetlength(r, i, cols[k]) + 1);
    }
    job->strings = sb_buf_steal(&b, NULL);
#define COL(k) (PQgetisnull(r, i, cols[k]) ? NULL : job->strings + offs[k])
    job->msg.channel = COL(0);
    job->msg.tenant = COL(1);
    job->msg.thread_key = COL(2);
    job->msg.identity_kind = COL(3);
    job->msg.identity_value = COL(4);
    job->msg.text = COL(5);
    job->msg.html = COL(6);
    job->msg.subject = COL(7);
    job->msg.in_reply_to = COL(8);
    job->msg.references = COL(9);
    job->msg.auto_generated = strcmp(PQgetvalue(r, i, 16), "t") == 0;
#undef COL
    job->msg.ticket = atoll(PQgetvalue(r, i, 5));
    job->msg.message = atoll(PQgetvalue(r, i, 6));

    /* Column 12: the channel instance the ticket came through, if any. */
    int64_t channel_id = PQgetisnull(r, i, 12) ? 0 : atoll(PQgetvalue(r, i, 12));
    int rc = sb_plugins_send(&job->msg, channel_id, outbox_sent, job);
    if (rc != 0)
        outbox_sent(rc == SB_ENOENT ? SB_FAILED : SB_RETRY,
                    rc == SB_ENOENT ? "the channel's plugin cannot send" : sb_strerror(rc), NULL,
                    job);
}

static void outbox_claimed(int status, PGresult *const *res, int n, void *data)
{
    ob.claiming = 0;
    if (status != 0 || !ob.running)
        return;
    const PGresult *r = res[0];
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++)
        outbox_dispatch_row(r, i);
    /* A full batch: there may be more waiting. */
    if (rows == atoi(OUTBOX_BATCH) || ob.again) {
        ob.again = 0;
        outbox_claim();
    }
}

static void outbox_claim(void)
{
    static const char sql[] =
        "SELECT * FROM sb_outbox_claim($1::text[], " OUTBOX_BATCH ", " OUTBOX_LEASE_SECONDS ")";
    const char *params[1] = {ob.channels};
    sb_db_stmt_t s = {sql, 1, params};

    if (!ob.running || ob.db == NULL)
        return;
    if (ob.claiming) {
        ob.again = 1;
        return;
    }
    if (sb_db_query(ob.db, &s, 1, outbox_claimed, NULL) == 0)
        ob.claiming = 1;
}

static void outbox_tick(uv_timer_t *t)
{
    outbox_claim();
}

int sb_outbox_start(uv_loop_t *loop, sb_db_t *db)
{
    if (sb_plugins_senders(ob.channels, sizeof(ob.channels)) == 0)
        return 0; /* nothing can send: nothing to claim */
    ob.loop = loop;
    ob.db = db;
    ob.running = 1;
    uv_timer_init(loop, &ob.timer);
    uv_timer_start(&ob.timer, outbox_tick, 100, OUTBOX_POLL_MS);
    return 0;
}

void sb_outbox_wake(void)
{
    outbox_claim();
}

void sb_outbox_stop(void)
{
    if (!ob.running)
        return;
    ob.running = 0;
    uv_timer_stop(&ob.timer);
    uv_close((uv_handle_t *)&ob.timer, NULL);
    ob.db = NULL;
}
