/*
 * log.h - one line per event on stderr, in PostgreSQL's style:
 *   2026-11-23 10:00:00.000 UTC [pid] LEVEL:  message  key=value ...
 * Messages are lowercase, without a trailing period or newline; values are
 * quoted "%s".  The context object adds the request id, tenant and plugin.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdarg.h>

/* Levels (sb_log_level_t, SB_LOG_*) are shared with plugins. */
#include <switchboard/plugin.h>

/* What a log line is about.  Every member may be NULL.  Borrowed. */
typedef struct sb_log_ctx {
    const char *request_id;
    const char *tenant;
    const char *plugin;
} sb_log_ctx_t;

/* Sets the minimum level written.  Any process, any time. */
void sb_log_set_level(sb_log_level_t level);
sb_log_level_t sb_log_get_level(void);

/* Parses "debug", "info", "notice", "warning" or "error".  0 or SB_EINVAL. */
int sb_log_level_parse(const char *s, sb_log_level_t *out);

/* True when a message at this level would be written. */
int sb_log_enabled(sb_log_level_t level);

/*
 * Writes one line at level about ctx (may be NULL).  The whole line goes
 * out in one write(2), so lines from workers sharing stderr never
 * interleave.
 */
void sb_log(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As sb_log, with separate detail and hint fields (either may be NULL). */
void sb_log_ex(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *detail, const char *hint,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

void sb_log_va(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *detail, const char *hint,
               const char *fmt, va_list ap);

/* Debug logs compile out of release builds. */
#ifdef NDEBUG
#define sb_log_debug(ctx, ...) ((void)0)
#else
#define sb_log_debug(ctx, ...)                        \
    do {                                              \
        if (sb_log_enabled(SB_LOG_DEBUG))             \
            sb_log(SB_LOG_DEBUG, (ctx), __VA_ARGS__); \
    } while (0)
#endif

#endif
