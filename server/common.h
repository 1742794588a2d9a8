/*
 * common.h - what every concern of the server shares: the error
 * convention, allocation that never returns NULL, assertions and a
 * growable byte buffer.  Nothing here knows about HTTP, PostgreSQL or Lua.
 */
#ifndef SB_COMMON_H
#define SB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* The result codes (SB_OK, SB_AGAIN, SB_DECLINED, SB_E*) are public. */
#include <switchboard/plugin.h>

/* Returns a static message for an SB_* code (or "unknown error"). */
const char *sb_strerror(int err);

/* Returns the static name of an SB_* code ("EINVAL"), or "UNKNOWN". */
const char *sb_err_name(int err);

/*
 * Allocation that aborts on out-of-memory: the worker dies and the master
 * starts another.  Callers never check for NULL.
 */
void *sb_xmalloc(size_t size);
void *sb_xcalloc(size_t n, size_t size);
void *sb_xrealloc(void *ptr, size_t size);
char *sb_xstrdup(const char *s);
char *sb_xstrndup(const char *s, size_t n);
/* Returns a freshly malloc'd formatted string; the caller frees it. */
char *sb_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A broken invariant is a programmer error: abort with the expression,
 * file and line.  Bad input is never asserted; it is answered.
 */
#define sb_assert(expr) ((expr) ? (void)0 : sb_assert_fail(#expr, __FILE__, __LINE__))
void sb_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#define SB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SB_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/*
 * A growable byte buffer.  Owns its memory; sb_buf_free releases it.
 * data is always NUL-terminated after any append (not counted in len).
 */
typedef struct sb_buf {
    char *data;
    size_t len;
    size_t cap;
} sb_buf_t;

void sb_buf_init(sb_buf_t *b);
void sb_buf_free(sb_buf_t *b);
void sb_buf_reset(sb_buf_t *b);
void sb_buf_append(sb_buf_t *b, const void *data, size_t len);
void sb_buf_puts(sb_buf_t *b, const char *s);
void sb_buf_printf(sb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Takes the buffer's memory away from it (the caller frees it). */
char *sb_buf_steal(sb_buf_t *b, size_t *len);

/* Monotonic milliseconds, for durations only. */
uint64_t sb_now_ms(void);
/* Monotonic nanoseconds. */
uint64_t sb_now_ns(void);

#endif
