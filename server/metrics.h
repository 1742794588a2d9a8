/*
 * metrics.h - counters for /metrics.  The master maps one shared region
 * before forking; each worker writes only its own slot and /metrics sums
 * the slots in use, so any worker can answer for the whole server.  This
 * is the one piece of memory shared between processes, and it holds only
 * counters: no request state ever lives here.
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stdint.h>

#include "common.h"
#include "http/http.h"

/* Routes beyond this many are counted under "other". */
#define SB_METRICS_ROUTES 128
#define SB_METRICS_SLOTS 256

/* Master, before forking: maps the region.  0 or SB_ENOMEM. */
int sb_metrics_init(void);

/* Master: a free slot for a new worker, or -1. */
int sb_metrics_slot_claim(void);
/* Master: the worker of slot died; its gauges are zeroed, counters kept. */
void sb_metrics_slot_release(int slot);

/* Worker: from now on this process writes to slot. */
void sb_metrics_attach(int slot);

/* Worker: one request answered.  route -1 means no route matched. */
void sb_metrics_request(int route, int status, uint64_t duration_ns);

/* Worker: the current state of its database pool. */
void sb_metrics_db(int busy, int idle, int waiting);

/* Renders the Prometheus text exposition of all slots into out. */
void sb_metrics_render(sb_buf_t *out, const sb_router_t *router);

#endif
