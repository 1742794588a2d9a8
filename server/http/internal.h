/*
 * http/internal.h - helpers shared inside the HTTP concern only.
 */
#ifndef SB_HTTP_INTERNAL_H
#define SB_HTTP_INTERNAL_H

#include <stddef.h>
#include "pool.h"

/*
 * Percent-decodes s[0..len) into a NUL-terminated copy in pool; with
 * plus_is_space, '+' becomes ' ' (query strings).  Malformed escapes are
 * kept as they are.
 */
char *sb_http_pct_decode(sb_pool_t *pool, const char *s, size_t len, int plus_is_space);

#endif
