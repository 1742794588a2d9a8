/*
 * plugin/internal.h - what the plugin host's files share privately: the
 * per-worker cache of tenants' channel instances that webhooks and sends
 * look up.  Not an interface for other concerns (they use plugin/host.h).
 */
#ifndef SB_PLUGIN_INTERNAL_H
#define SB_PLUGIN_INTERNAL_H

#include <switchboard/plugin.h>

#include "db/db.h"

/* A channel instance as loaded from the database; pub is what plugins see. */
typedef struct sb_instance sb_instance_t;

/*
 * status 0 with inst (a reference the callee must give back with
 * sb_instance_release); SB_ENOENT when the tenant has no such active
 * channel; SB_EUNAVAILABLE when the database could not say.
 */
typedef void (*sb_instance_cb)(int status, sb_instance_t *inst, void *data);

/*
 * Finds channel id of the tenant with that slug: from the worker's cache
 * (fresh for a few seconds, and emptied when any channel changes; ids found
 * missing are remembered as long), or from the database.  Returns 0 and
 * calls cb once, possibly before returning (cache hit or known miss); or
 * SB_ENOENT (a slug no tenant can have) or SB_EUNAVAILABLE, and never calls
 * cb.  Loop thread.
 */
int sb_instance_get(sb_db_t *db, const char *tenant, int64_t id, sb_instance_cb cb, void *data);

/* The view plugins are handed; valid while the reference is held. */
const sb_channel_t *sb_instance_channel(const sb_instance_t *inst);

/* The instance holding a view that sb_instance_channel returned. */
sb_instance_t *sb_instance_of(const sb_channel_t *ch);

/*
 * The secret name, opened from the sealed store on first use, or NULL.
 * Borrowed while the reference is held.
 */
const char *sb_instance_secret(sb_instance_t *inst, const char *name);

/* Gives a reference back; the last one frees the instance. */
void sb_instance_release(sb_instance_t *inst);

/*
 * status 0 with the n instances (borrowed for the call; not cached), or
 * SB_EUNAVAILABLE with n 0.
 */
typedef void (*sb_instances_cb)(int status, sb_instance_t *const *list, size_t n, void *data);

/*
 * Every active instance of type, of every tenant, fresh from the database.
 * Returns 0 and calls cb once, after returning; or SB_EUNAVAILABLE and
 * never calls it.  Loop thread.
 */
int sb_instances_of_type(sb_db_t *db, const char *type, sb_instances_cb cb, void *data);

/* Forgets every cached instance (a channel changed somewhere). */
void sb_instances_flush(void);

#endif
