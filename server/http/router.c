/*
 * router.c - matching request paths against route patterns with {param}
 * segments.  Routes are tried in the order they were added; a linear scan
 * is fast enough for the few hundred routes a server has.
 */
#include "http.h"
#include "internal.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define ROUTER_MAX_SEGMENTS 16

typedef struct {
    char *text; /* literal text, or the parameter name */
    int is_param;
} route_seg_t;

typedef struct {
    char *method;
    char *pattern;
    unsigned flags;
    sb_http_handler_cb cb;
    void *data;
    int nsegs;
    route_seg_t segs[ROUTER_MAX_SEGMENTS];
} route_t;

struct sb_router {
    route_t *routes;
    size_t n, cap;
};

sb_router_t *sb_router_new(void)
{
    return sb_xcalloc(1, sizeof(sb_router_t));
}

void sb_router_free(sb_router_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        route_t *rt = &r->routes[i];
        for (int s = 0; s < rt->nsegs; s++)
            free(rt->segs[s].text);
        free(rt->method);
        free(rt->pattern);
    }
    free(r->routes);
    free(r);
}

int sb_router_add(sb_router_t *r, const char *method, const char *pattern, unsigned flags,
                  sb_http_handler_cb cb, void *data)
{
    route_t rt;
    const char *p = pattern;

    if (pattern[0] != '/')
        return SB_EINVAL;
    memset(&rt, 0, sizeof(rt));
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (rt.nsegs == ROUTER_MAX_SEGMENTS)
            goto fail;
        route_seg_t *seg = &rt.segs[rt.nsegs++];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            seg->is_param = 1;
            seg->text = sb_xstrndup(p + 1, len - 2);
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len))
                goto fail;
            seg->text = sb_xstrndup(p, len);
        }
        p += len;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->routes = sb_xrealloc(r->routes, r->cap * sizeof(route_t));
    }
    rt.method = sb_xstrdup(method);
    rt.pattern = sb_xstrdup(pattern);
    rt.flags = flags;
    rt.cb = cb;
    rt.data = data;
    r->routes[r->n++] = rt;
    return 0;
fail:
    for (int s = 0; s < rt.nsegs; s++)
        free(rt.segs[s].text);
    return SB_EINVAL;
}

size_t sb_router_count(const sb_router_t *r)
{
    return r->n;
}

const char *sb_router_pattern(const sb_router_t *r, size_t i)
{
    return i < r->n ? r->routes[i].pattern : NULL;
}

const char *sb_router_method(const sb_router_t *r, size_t i)
{
    return i < r->n ? r->routes[i].method : NULL;
}

unsigned sb_router_flags(const sb_router_t *r, size_t i)
{
    return i < r->n ? r->routes[i].flags : 0;
}

/* Matches one route against the split path; fills params on success. */
static int router_match_route(const route_t *rt, int nsegs, const char **segs, const size_t *lens,
                              sb_pool_t *pool, sb_route_match_t *m)
{
    int np = 0;

    if (rt->nsegs != nsegs)
        return 0;
    for (int i = 0; i < nsegs; i++) {
        const route_seg_t *s = &rt->segs[i];
        if (s->is_param) {
            if (lens[i] == 0)
                return 0;
            continue;
        }
        if (strlen(s->text) != lens[i] || memcmp(s->text, segs[i], lens[i]) != 0)
            return 0;
    }
    if (m == NULL)
        return 1;
    for (int i = 0; i < nsegs && np < (int)SB_ARRAY_SIZE(m->params); i++) {
        if (!rt->segs[i].is_param)
            continue;
        m->params[np].name = rt->segs[i].text;
        m->params[np].value = sb_http_pct_decode(pool, segs[i], lens[i], 0);
        np++;
    }
    m->nparams = np;
    return 1;
}

static int router_method_ok(const route_t *rt, const char *method)
{
    if (strcmp(rt->method, method) == 0)
        return 1;
    return strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
}

static void router_allow_add(sb_route_match_t *m, const char *method)
{
    size_t n = strlen(m->allow);
    size_t k = strlen(method);

    /* Skip methods already listed. */
    for (const char *p = m->allow; (p = strstr(p, method)) != NULL; p += k)
        if ((p == m->allow || p[-1] == ' ') && (p[k] == ',' || p[k] == '\0'))
            return;
    if (n + k + 3 >= sizeof(m->allow))
        return;
    if (n)
        strcat(m->allow, ", ");
    strcat(m->allow, method);
}

int sb_router_match(const sb_router_t *r, int start, const char *method, const char *path,
                    sb_pool_t *pool, sb_route_match_t *m)
{
    const char *segs[ROUTER_MAX_SEGMENTS];
    size_t lens[ROUTER_MAX_SEGMENTS];
    int nsegs = 0;
    const char *p = path;

    memset(m, 0, sizeof(*m));
    m->index = -1;
    if (*p != '/')
        return SB_ENOENT;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (nsegs == ROUTER_MAX_SEGMENTS)
            return SB_ENOENT;
        segs[nsegs] = p;
        lens[nsegs++] = len;
        p += len;
    }

    for (size_t i = (size_t)(start < 0 ? 0 : start); i < r->n; i++) {
        const route_t *rt = &r->routes[i];
        if (!router_match_route(rt, nsegs, segs, lens, NULL, NULL))
            continue;
        if (!router_method_ok(rt, method)) {
            router_allow_add(m, rt->method);
            if (strcmp(rt->method, "GET") == 0)
                router_allow_add(m, "HEAD");
            continue;
        }
        router_match_route(rt, nsegs, segs, lens, pool, m);
        m->index = (int)i;
        m->flags = rt->flags;
        m->cb = rt->cb;
        m->data = rt->data;
        m->allow[0] = '\0';
        return 0;
    }
    return SB_ENOENT;
}
