/*
 * webhooks.h - delivery of the webhooks rules ask for (act.notify with a
 * webhook URL), one dispatcher per worker: it claims due deliveries
 * (SKIP LOCKED, with a lease), POSTs each body signed with the tenant's
 * webhook key, and records sent / retry with backoff / failed.  Delivery
 * is at least once; X-Switchboard-Delivery lets receivers drop repeats.
 * Worker loop thread.
 */
#ifndef SB_WEBHOOKS_H
#define SB_WEBHOOKS_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "db/db.h"

/* The NOTIFY channel that says "a webhook is waiting". */
#define SB_WEBHOOKS_CHANNEL "switchboard_webhooks"

/* Starts polling (every second, and at once when woken).  Borrows all three. */
int sb_webhooks_start(uv_loop_t *loop, sb_db_t *db, const sb_config_t *cfg);

/* Claims due deliveries now (a NOTIFY arrived). */
void sb_webhooks_wake(void);

/* Stops; deliveries in flight are abandoned and claimed again when their lease ends. */
void sb_webhooks_stop(void);

/*
 * The tenant's webhook signing key as 64 hex digits (receivers check
 * X-Switchboard-Signature: sha256=HMAC-SHA256(key, body) with it).
 * Returns 0, or SB_EIO without an installation key.
 */
int sb_webhooks_key_hex(const char *tenant_slug, char out[65]);

#endif
