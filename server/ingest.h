/*
 * ingest.h - storing what a channel received: one transaction that
 * dedupes by (channel, external id), finds or creates the customer by
 * identity, appends to the open ticket of the thread or opens one, inserts
 * the message, appends the audit event and NOTIFYs.  Worker loop thread.
 */
#ifndef SB_INGEST_H
#define SB_INGEST_H

#include <switchboard/plugin.h>

#include "db/db.h"

/* status and r as sb_ingest_cb in switchboard/plugin.h (r NULL on failure). */
typedef void (*sb_ingest_done_cb)(int status, const sb_ingest_result_t *r, void *data);

/* The NOTIFY channel that carries ticket and message events. */
#define SB_EVENTS_CHANNEL "switchboard_events"

/*
 * Copies msg and stores it.  Returns 0 and calls done once after commit
 * (or failure); or SB_EINVAL (a key or the text is missing, too long or not
 * UTF-8) or SB_EUNAVAILABLE, and never calls done.  Optional fields are
 * repaired and cut rather than refused, and files that cannot be stored
 * left out (see ingest in switchboard/plugin.h).
 */
int sb_ingest(sb_db_t *db, const sb_inbound_t *msg, sb_ingest_done_cb done, void *data);

#endif
