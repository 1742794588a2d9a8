/*
 * sandbox.h - one tenant's rules in a Lua 5.4 state of their own: only
 * safe libraries, a memory cap (its own allocator) and an instruction
 * budget per call of user code (a count hook that stops the coroutine
 * the code runs in, which no pcall inside it can catch).
 *
 * The sandbox turns an event (the JSON snapshot the database builds) into
 * data: the SLA state the ticket should have and the actions the handlers
 * recorded.  It does no I/O; the caller applies the result.  Not
 * thread-safe: one sandbox per thread at a time.
 */
#ifndef SB_RULES_SANDBOX_H
#define SB_RULES_SANDBOX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_sandbox sb_sandbox_t;

typedef struct sb_sandbox_limits {
    size_t memory;         /* bytes the state may hold (0: 8 MiB) */
    uint64_t instructions; /* per call of user code (0: 5,000,000) */
} sb_sandbox_limits_t;

/* A new sandbox with the prelude loaded.  The caller frees it. */
int sb_sandbox_new(const sb_sandbox_limits_t *limits, sb_sandbox_t **out);
void sb_sandbox_free(sb_sandbox_t *sb);

/*
 * Compiles and runs one script (its top level declares calendars, SLA
 * policies, templates and handlers).  name is the script's name ("sla");
 * messages call it "sla.lua".  Returns 0, or SB_EINVAL with *err set to a
 * new {"message": "...", "line": N} (line absent when unknown).
 */
int sb_sandbox_load(sb_sandbox_t *sb, const char *name, const char *source, size_t len,
                    json_t **err);

/* Checks what spans scripts (calendars that SLA policies name).  As load. */
int sb_sandbox_finish(sb_sandbox_t *sb, json_t **err);

/*
 * Runs one event: ev is its snapshot (borrowed).  Returns a new
 * {"sla": {...} | null (absent when unchanged), "stale": bool,
 *  "actions": [...], "errors": [{"script", "line", "message", "kind"}]}
 * where kind is "error", "budget" or "memory".  Never fails: what went
 * wrong is in errors.
 */
json_t *sb_sandbox_run(sb_sandbox_t *sb, json_t *ev);

/*
 * Lists act.<name> uses in source that name no action: a new array of
 * {"line": N, "name": "..."}.
 */
json_t *sb_sandbox_lint(sb_sandbox_t *sb, const char *source);

/*
 * What the loaded scripts declared: {"calendars", "slas", "templates",
 * "handlers"}, lists of names ("sla.breached (2)" for handlers), sorted
 * except the SLA policies (in the order they are tried).
 */
json_t *sb_sandbox_summary(sb_sandbox_t *sb);

/* Bytes the state holds now. */
size_t sb_sandbox_memory(const sb_sandbox_t *sb);

#endif
