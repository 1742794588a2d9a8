/*
 * outbox.h - the dispatcher of the outbound pipeline, one per worker: it
 * claims due outbox rows (across workers and instances, with FOR UPDATE
 * SKIP LOCKED and a lease), hands each to its channel plugin's send(), and
 * records sent / retry with backoff / failed.  Worker loop thread.
 */
#ifndef SB_OUTBOX_H
#define SB_OUTBOX_H

#include <uv.h>

#include "db/db.h"

/* The NOTIFY channel that says "a reply is waiting". */
#define SB_OUTBOX_CHANNEL "switchboard_outbox"

/* Starts polling (every second, and at once when woken).  Borrows both. */
int sb_outbox_start(uv_loop_t *loop, sb_db_t *db);

/* Claims due rows now (a NOTIFY arrived). */
void sb_outbox_wake(void);

/* Stops claiming; sends in flight finish or are claimed again later. */
void sb_outbox_stop(void);

#endif
