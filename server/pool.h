/*
 * pool.h - arenas for transient memory.  A request or a transaction
 * allocates from one pool and frees everything at once; resources that
 * are not memory (PGresult, json_t) are attached with cleanup callbacks
 * that run, newest first, when the pool is reset or freed.
 * Not thread-safe: one pool belongs to one loop thread.
 */
#ifndef SB_POOL_H
#define SB_POOL_H

#include <stddef.h>

typedef struct sb_pool sb_pool_t;
typedef void (*sb_pool_cleanup_cb)(void *data);

/* Creates an empty pool.  The caller owns it and frees it with sb_pool_free. */
sb_pool_t *sb_pool_new(void);

/* Runs the cleanups and releases all memory, keeping the first block. */
void sb_pool_reset(sb_pool_t *pool);

/* Runs the cleanups and releases the pool itself. */
void sb_pool_free(sb_pool_t *pool);

/* Memory aligned for any type, valid until the pool is reset.  Never NULL. */
void *sb_pool_alloc(sb_pool_t *pool, size_t size);
void *sb_pool_calloc(sb_pool_t *pool, size_t size);
char *sb_pool_strndup(sb_pool_t *pool, const char *s, size_t n);
char *sb_pool_strdup(sb_pool_t *pool, const char *s);

/* Registers fn(data) to run at reset/free.  Copies nothing; data is borrowed. */
void sb_pool_cleanup_add(sb_pool_t *pool, sb_pool_cleanup_cb fn, void *data);

#endif
