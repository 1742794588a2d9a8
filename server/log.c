/*
 * log.c - formatting and writing log lines.  Not for access-log policy
 * (the HTTP server decides what a request line says).
 */
#include "log.h"
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static sb_log_level_t log_min_level = SB_LOG_INFO;

static const char *const log_level_names[] = {
    "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "FATAL",
};

void sb_log_set_level(sb_log_level_t level)
{
    log_min_level = level;
}

sb_log_level_t sb_log_get_level(void)
{
    return log_min_level;
}

int sb_log_level_parse(const char *s, sb_log_level_t *out)
{
    static const char *const names[] = {"debug", "info", "notice", "warning", "error"};
    for (size_t i = 0; i < SB_ARRAY_SIZE(names); i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (sb_log_level_t)i;
            return 0;
        }
    }
    return SB_EINVAL;
}

int sb_log_enabled(sb_log_level_t level)
{
    return level >= log_min_level;
}

static void log_timestamp(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03d UTC", (int)(tv.tv_usec / 1000));
}

void sb_log_va(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *detail, const char *hint,
               const char *fmt, va_list ap)
{
    char line[4096];
    char ts[64];
    size_t n;
    int k;

    if (!sb_log_enabled(level))
        return;
    log_timestamp(ts, sizeof(ts));
    k = snprintf(line, sizeof(line), "%s [%d] %s:  ", ts, (int)getpid(), log_level_names[level]);
    n = k > 0 ? (size_t)k : 0;
    k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (k > 0)
        n += (size_t)k;
    if (n >= sizeof(line))
        n = sizeof(line) - 1;

#define LOG_FIELD(label, val)                                   \
    if ((val) != NULL && n < sizeof(line)) {                    \
        k = snprintf(line + n, sizeof(line) - n, label, (val)); \
        if (k > 0)                                              \
            n += (size_t)k;                                     \
        if (n >= sizeof(line))                                  \
            n = sizeof(line) - 1;                               \
    }
    LOG_FIELD("  DETAIL: %s", detail)
    LOG_FIELD("  HINT: %s", hint)
    if (ctx) {
        LOG_FIELD("  plugin=%s", ctx->plugin)
        LOG_FIELD("  tenant=%s", ctx->tenant)
        LOG_FIELD("  request_id=%s", ctx->request_id)
    }
#undef LOG_FIELD

    /* Newlines inside a value would split the event over several lines. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void sb_log(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_log_va(level, ctx, NULL, NULL, fmt, ap);
    va_end(ap);
}

void sb_log_ex(sb_log_level_t level, const sb_log_ctx_t *ctx, const char *detail, const char *hint,
               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_log_va(level, ctx, detail, hint, fmt, ap);
    va_end(ap);
}
