/*
 * common.c - error names, aborting allocation, assertions and sb_buf_t.
 */
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *sb_strerror(int err)
{
    switch (err) {
#define XX(name, val, msg) \
    case SB_##name:        \
        return msg;
        SB_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "success";
    }
    return "unknown error";
}

const char *sb_err_name(int err)
{
    switch (err) {
#define XX(name, val, msg) \
    case SB_##name:        \
        return #name;
        SB_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "OK";
    }
    return "UNKNOWN";
}

static void common_oom(size_t size) __attribute__((noreturn));

static void common_oom(size_t size)
{
    /* No allocation from here on: write straight to stderr and abort. */
    fprintf(stderr, "FATAL:  out of memory allocating %zu bytes\n", size);
    abort();
}

void *sb_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        common_oom(size);
    return p;
}

void *sb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        common_oom(n * size);
    return p;
}

void *sb_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        common_oom(size);
    return p;
}

char *sb_xstrdup(const char *s)
{
    return sb_xstrndup(s, strlen(s));
}

char *sb_xstrndup(const char *s, size_t n)
{
    char *p = sb_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *sb_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        common_oom(strlen(fmt));
    return s;
}

void sb_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "PANIC:  assertion failed: %s, file \"%s\", line %d\n", expr, file, line);
    abort();
}

/* ======================== sb_buf_t ======================== */

void sb_buf_init(sb_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void sb_buf_free(sb_buf_t *b)
{
    free(b->data);
    sb_buf_init(b);
}

void sb_buf_reset(sb_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static void buf_reserve(sb_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = sb_xrealloc(b->data, cap);
    b->cap = cap;
}

void sb_buf_append(sb_buf_t *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void sb_buf_puts(sb_buf_t *b, const char *s)
{
    sb_buf_append(b, s, strlen(s));
}

void sb_buf_printf(sb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        sb_buf_append(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *sb_buf_steal(sb_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    if (p == NULL)
        p = sb_xstrdup("");
    sb_buf_init(b);
    return p;
}

uint64_t sb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sb_now_ms(void)
{
    return sb_now_ns() / 1000000u;
}
