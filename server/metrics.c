/*
 * metrics.c - the shared counter region and its Prometheus rendering.
 * Writers are single (one worker per slot), so plain stores suffice;
 * readers may see a slightly stale sum, which Prometheus tolerates.
 */
#include "metrics.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const int metrics_statuses[] = {
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405,
    408, 409, 410, 413, 415, 417, 422, 429, 431, 500, 501, 503,
};
#define NSTATUS (SB_ARRAY_SIZE(metrics_statuses) + 1) /* last: other */

static const double metrics_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
#define NBUCKETS (SB_ARRAY_SIZE(metrics_buckets) + 1) /* last: +Inf */
#define NROUTES (SB_METRICS_ROUTES + 1)               /* last: unmatched */

typedef struct {
    uint64_t requests[NROUTES][NSTATUS];
    uint64_t buckets[NROUTES][NBUCKETS];
    uint64_t sum_ns[NROUTES];
    int32_t db_busy, db_idle, db_waiting;
} metrics_slot_t;

typedef struct {
    time_t started;
    uint8_t used[SB_METRICS_SLOTS]; /* 1: a live worker writes it */
    uint8_t ever[SB_METRICS_SLOTS]; /* 1: it holds counts to report */
} metrics_head_t;

static metrics_head_t *metrics_head;
static metrics_slot_t *metrics_slots;
static metrics_slot_t *metrics_mine;

int sb_metrics_init(void)
{
    size_t head = (sizeof(metrics_head_t) + 4095) & ~(size_t)4095;
    size_t len = head + SB_METRICS_SLOTS * sizeof(metrics_slot_t);
    /* Pages are only touched (and only count) for slots in use. */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return SB_ENOMEM;
    metrics_head = p;
    metrics_slots = (metrics_slot_t *)((char *)p + head);
    metrics_head->started = time(NULL);
    return 0;
}

int sb_metrics_slot_claim(void)
{
    if (metrics_head == NULL)
        return -1;
    for (int i = 0; i < SB_METRICS_SLOTS; i++) {
        if (!metrics_head->used[i]) {
            metrics_head->used[i] = 1;
            metrics_head->ever[i] = 1;
            return i;
        }
    }
    return -1;
}

void sb_metrics_slot_release(int slot)
{
    if (metrics_head == NULL || slot < 0 || slot >= SB_METRICS_SLOTS)
        return;
    metrics_slot_t *s = &metrics_slots[slot];
    s->db_busy = s->db_idle = s->db_waiting = 0;
    metrics_head->used[slot] = 0;
}

void sb_metrics_attach(int slot)
{
    if (metrics_head && slot >= 0 && slot < SB_METRICS_SLOTS)
        metrics_mine = &metrics_slots[slot];
}

static size_t metrics_status_index(int status)
{
    for (size_t i = 0; i < SB_ARRAY_SIZE(metrics_statuses); i++)
        if (metrics_statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

void sb_metrics_request(int route, int status, uint64_t duration_ns)
{
    metrics_slot_t *s = metrics_mine;
    if (s == NULL)
        return;
    size_t r = (route < 0 || route >= SB_METRICS_ROUTES) ? NROUTES - 1 : (size_t)route;
    double secs = (double)duration_ns / 1e9;
    size_t b = 0;
    while (b < SB_ARRAY_SIZE(metrics_buckets) && secs > metrics_buckets[b])
        b++;
    s->requests[r][metrics_status_index(status)]++;
    s->buckets[r][b]++;
    s->sum_ns[r] += duration_ns;
}

void sb_metrics_db(int busy, int idle, int waiting)
{
    if (metrics_mine == NULL)
        return;
    metrics_mine->db_busy = busy;
    metrics_mine->db_idle = idle;
    metrics_mine->db_waiting = waiting;
}

/* ======================== rendering ======================== */

static void metrics_route_labels(sb_buf_t *out, const sb_router_t *router, size_t r)
{
    if (r == NROUTES - 1 || r >= sb_router_count(router)) {
        sb_buf_puts(out, r == NROUTES - 1 ? "route=\"unmatched\",method=\"\""
                                          : "route=\"other\",method=\"\"");
        return;
    }
    /* Patterns and methods come from code, never from requests: no escaping needed. */
    sb_buf_printf(out, "route=\"%s\",method=\"%s\"", sb_router_pattern(router, r),
                  sb_router_method(router, r));
}

void sb_metrics_render(sb_buf_t *out, const sb_router_t *router)
{
    metrics_slot_t sum;
    int workers = 0, busy = 0, idle = 0, waiting = 0;

    if (metrics_head == NULL)
        return;
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < SB_METRICS_SLOTS; i++) {
        if (!metrics_head->ever[i])
            continue;
        const metrics_slot_t *s = &metrics_slots[i];
        for (size_t r = 0; r < NROUTES; r++) {
            for (size_t k = 0; k < NSTATUS; k++)
                sum.requests[r][k] += s->requests[r][k];
            for (size_t k = 0; k < NBUCKETS; k++)
                sum.buckets[r][k] += s->buckets[r][k];
            sum.sum_ns[r] += s->sum_ns[r];
        }
        if (metrics_head->used[i]) {
            workers++;
            busy += s->db_busy;
            idle += s->db_idle;
            waiting += s->db_waiting;
        }
    }

    sb_buf_puts(
        out, "# HELP switchboard_http_requests_total HTTP requests answered, by route and status.\n"
             "# TYPE switchboard_http_requests_total counter\n");
    for (size_t r = 0; r < NROUTES; r++) {
        for (size_t k = 0; k < NSTATUS; k++) {
            if (sum.requests[r][k] == 0)
                continue;
            sb_buf_puts(out, "switchboard_http_requests_total{");
            metrics_route_labels(out, router, r);
            if (k == NSTATUS - 1)
                sb_buf_printf(out, ",status=\"other\"} %llu\n",
                              (unsigned long long)sum.requests[r][k]);
            else
                sb_buf_printf(out, ",status=\"%d\"} %llu\n", metrics_statuses[k],
                              (unsigned long long)sum.requests[r][k]);
        }
    }

    sb_buf_puts(out, "# HELP switchboard_http_request_duration_seconds Time from a complete "
                     "request to its queued response.\n"
                     "# TYPE switchboard_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < NROUTES; r++) {
        uint64_t total = 0;
        for (size_t k = 0; k < NBUCKETS; k++)
            total += sum.buckets[r][k];
        if (total == 0)
            continue;
        uint64_t cum = 0;
        for (size_t k = 0; k < NBUCKETS; k++) {
            cum += sum.buckets[r][k];
            sb_buf_puts(out, "switchboard_http_request_duration_seconds_bucket{");
            metrics_route_labels(out, router, r);
            if (k == NBUCKETS - 1)
                sb_buf_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
            else
                sb_buf_printf(out, ",le=\"%g\"} %llu\n", metrics_buckets[k],
                              (unsigned long long)cum);
        }
        sb_buf_puts(out, "switchboard_http_request_duration_seconds_sum{");
        metrics_route_labels(out, router, r);
        sb_buf_printf(out, "} %.6f\n", (double)sum.sum_ns[r] / 1e9);
        sb_buf_puts(out, "switchboard_http_request_duration_seconds_count{");
        metrics_route_labels(out, router, r);
        sb_buf_printf(out, "} %llu\n", (unsigned long long)total);
    }

    sb_buf_printf(out,
                  "# HELP switchboard_db_connections Database pool connections by state.\n"
                  "# TYPE switchboard_db_connections gauge\n"
                  "switchboard_db_connections{state=\"busy\"} %d\n"
                  "switchboard_db_connections{state=\"idle\"} %d\n"
                  "# HELP switchboard_db_waiting Requests waiting for a database connection.\n"
                  "# TYPE switchboard_db_waiting gauge\n"
                  "switchboard_db_waiting %d\n"
                  "# HELP switchboard_workers Worker processes running.\n"
                  "# TYPE switchboard_workers gauge\n"
                  "switchboard_workers %d\n"
                  "# HELP switchboard_uptime_seconds Seconds since the server started.\n"
                  "# TYPE switchboard_uptime_seconds gauge\n"
                  "switchboard_uptime_seconds %lld\n",
                  busy, idle, waiting, workers, (long long)(time(NULL) - metrics_head->started));
}
