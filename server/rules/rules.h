/*
 * rules.h - each tenant's Lua rules, run by every worker: the queue of
 * rule events (claimed with SKIP LOCKED, handled once and in order per
 * ticket), the timers that fire them (a heap of the next due times,
 * claimed in the database so each fires once), and the scripts' tools
 * for their authors (rules check / test / replay).  Worker loop thread,
 * except the CLI and sb_rules_sync_defaults, which are synchronous.
 */
#ifndef SB_RULES_H
#define SB_RULES_H

#include <libpq-fe.h>
#include <stddef.h>
#include <uv.h>

#include <jansson.h>

#include "config.h"
#include "db/db.h"

/* NOTIFY channels: a tenant's scripts changed; events are queued; a timer is due sooner. */
#define SB_RULES_CHANNEL "switchboard_rules"
#define SB_RULE_EVENTS_CHANNEL "switchboard_rule_events"
#define SB_TIMERS_CHANNEL "switchboard_timers"

/* The scripts a new tenant starts from (the .lua files in scripts/, built in). */
typedef struct sb_rules_default {
    const char *name;
    const char *source;
} sb_rules_default_t;
extern const sb_rules_default_t sb_rules_defaults[]; /* ends with a NULL name */
extern const char sb_rules_prelude[];
extern const size_t sb_rules_prelude_len;

/* Starts handling rule events and timers in this worker.  Borrows all three. */
int sb_rules_start(uv_loop_t *loop, sb_db_t *db, const sb_config_t *cfg);

/* A NOTIFY on one of the channels above (or a reconnect: channel NULL). */
void sb_rules_notified(const char *channel, const char *payload);

/* Stops; events in hand are rolled back and claimed again elsewhere. */
void sb_rules_stop(void);

/*
 * Compiles and loads sources (names[i] with sources[i]) together in a
 * fresh sandbox with the configured limits, as a worker would.  Returns 0,
 * or SB_EINVAL with *err a new {"message", "line", "script"}.
 */
int sb_rules_validate(const sb_config_t *cfg, const char *const *names, const char *const *sources,
                      int n, json_t **err);

/*
 * Brings rule_defaults in line with the built-in scripts and gives them to
 * tenants that have no scripts yet.  Synchronous.  Returns 0 or SB_EDB.
 */
int sb_rules_sync_defaults(PGconn *pg);

/* "switchboard rules check|test|replay ...": returns the exit status. */
int sb_rules_cli(const sb_config_t *cfg, int argc, char **argv);

#endif
