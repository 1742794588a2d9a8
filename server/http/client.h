/*
 * client.h - outbound HTTP for a worker: libcurl's multi interface driven
 * by the worker's libuv loop (uv_poll per socket, one uv_timer), so no
 * request ever blocks the loop.  Used for webhooks and, through the plugin
 * host, for platforms' send APIs.  Loop thread only.
 *
 * Requests to loopback, private, link-local and other non-public
 * addresses are refused unless allow_private is set: URLs come from
 * tenants, and must not reach into the installation's own network.
 */
#ifndef SB_HTTP_CLIENT_H
#define SB_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_http_client sb_http_client_t;

typedef struct sb_http_client_options {
    int allow_private;   /* let requests reach non-public addresses */
    size_t max_response; /* bytes of response body kept (0: 1 MiB) */
    uint64_t timeout_ms; /* default per request (0: 30 s) */
} sb_http_client_options_t;

typedef struct sb_http_client_req {
    const char *method;         /* "POST"; NULL means GET */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const void *body;
    size_t len;
    uint64_t timeout_ms; /* 0: the client's default */
} sb_http_client_req_t;

typedef struct sb_http_client_res {
    long status;      /* HTTP status, 0 when none was received */
    const char *body; /* the response body (NUL-terminated), up to max_response */
    size_t len;
    long retry_after;  /* seconds from a Retry-After header, or -1 */
    const char *error; /* what went wrong, when rc != 0 */
} sb_http_client_res_t;

/*
 * rc is 0 when a response arrived (whatever its status); SB_EUNAVAILABLE
 * when the peer could not be reached or answered too slowly (worth a
 * retry); SB_EINVAL when the request can never work (a refused address, a
 * bad URL); SB_ECLOSED when the client closed first.  res and everything
 * in it are borrowed for the callback's duration.
 */
typedef void (*sb_http_client_cb)(int rc, const sb_http_client_res_t *res, void *data);

/* Creates a client on loop.  The caller closes it with sb_http_client_close. */
int sb_http_client_new(uv_loop_t *loop, const sb_http_client_options_t *opts,
                       sb_http_client_t **out);

/*
 * Starts a request; the request is copied.  Returns 0 and calls cb exactly
 * once, after this returns; or SB_EINVAL (not an http(s) URL) and never
 * calls cb.
 */
int sb_http_client_request(sb_http_client_t *c, const sb_http_client_req_t *req,
                           sb_http_client_cb cb, void *data);

/* Requests in flight. */
size_t sb_http_client_pending(const sb_http_client_t *c);

/*
 * Cancels what is in flight (callbacks run with SB_ECLOSED) and frees the
 * client once its handles have closed.
 */
void sb_http_client_close(sb_http_client_t *c);

#endif
