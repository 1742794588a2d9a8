/*
 * pool.c - a bump allocator over a list of blocks.  Large allocations
 * get a block of their own so a big body does not waste a standard block.
 */
#include "pool.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define POOL_BLOCK 4096
#define POOL_ALIGN 16

typedef struct pool_block {
    struct pool_block *next;
    size_t used, size;
    _Alignas(POOL_ALIGN) char data[];
} pool_block_t;

typedef struct pool_cleanup {
    struct pool_cleanup *next;
    sb_pool_cleanup_cb fn;
    void *data;
} pool_cleanup_t;

struct sb_pool {
    pool_block_t *blocks; /* first is the current block */
    pool_block_t *first;  /* kept across resets */
    pool_cleanup_t *cleanups;
};

static pool_block_t *pool_block_new(size_t size)
{
    pool_block_t *b = sb_xmalloc(sizeof(*b) + size);
    b->next = NULL;
    b->used = 0;
    b->size = size;
    return b;
}

sb_pool_t *sb_pool_new(void)
{
    sb_pool_t *p = sb_xmalloc(sizeof(*p));
    p->first = pool_block_new(POOL_BLOCK);
    p->blocks = p->first;
    p->cleanups = NULL;
    return p;
}

static void pool_run_cleanups(sb_pool_t *p)
{
    while (p->cleanups) {
        pool_cleanup_t *c = p->cleanups;
        p->cleanups = c->next;
        c->fn(c->data);
    }
}

void sb_pool_reset(sb_pool_t *p)
{
    pool_run_cleanups(p);
    pool_block_t *b = p->blocks;
    while (b) {
        pool_block_t *next = b->next;
        if (b != p->first)
            free(b);
        b = next;
    }
    p->first->next = NULL;
    p->first->used = 0;
    p->blocks = p->first;
}

void sb_pool_free(sb_pool_t *p)
{
    if (p == NULL)
        return;
    sb_pool_reset(p);
    free(p->first);
    free(p);
}

void *sb_pool_alloc(sb_pool_t *p, size_t size)
{
    size = (size + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
    pool_block_t *b = p->blocks;
    if (b->size - b->used >= size) {
        void *r = b->data + b->used;
        b->used += size;
        return r;
    }
    if (size > POOL_BLOCK / 4) {
        /* A block of its own, linked behind the current one. */
        pool_block_t *big = pool_block_new(size);
        big->used = size;
        big->next = b->next;
        b->next = big;
        return big->data;
    }
    pool_block_t *nb = pool_block_new(POOL_BLOCK);
    nb->next = p->blocks;
    p->blocks = nb;
    nb->used = size;
    return nb->data;
}

void *sb_pool_calloc(sb_pool_t *p, size_t size)
{
    void *r = sb_pool_alloc(p, size);
    memset(r, 0, size);
    return r;
}

char *sb_pool_strndup(sb_pool_t *p, const char *s, size_t n)
{
    char *r = sb_pool_alloc(p, n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

char *sb_pool_strdup(sb_pool_t *p, const char *s)
{
    return sb_pool_strndup(p, s, strlen(s));
}

void sb_pool_cleanup_add(sb_pool_t *p, sb_pool_cleanup_cb fn, void *data)
{
    pool_cleanup_t *c = sb_pool_alloc(p, sizeof(*c));
    c->fn = fn;
    c->data = data;
    c->next = p->cleanups;
    p->cleanups = c;
}
