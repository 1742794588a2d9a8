/*
 * http.h - HTTP/1.1 on libuv: the server (connections, keep-alive,
 * pipelining, limits and timeouts), the router and the request/response
 * API that handlers use.  Parsing is http-parser's; bodies of JSON routes
 * are parsed with jansson before the handler runs.
 * Everything here runs on one worker's loop thread.
 */
#ifndef SB_HTTP_H
#define SB_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "log.h"
#include "pool.h"

typedef struct sb_http_server sb_http_server_t;
typedef struct sb_http_req sb_http_req_t;
typedef struct sb_router sb_router_t;

/*
 * A route handler.  It returns 0 when it has responded or will respond
 * later (exactly once, with one of the sb_http_respond* calls, from the
 * loop thread); SB_DECLINED to let the next matching route try; or a
 * negative SB_E* code without responding, which the server answers
 * (SB_EUNAVAILABLE and SB_ETIMEDOUT 503, SB_EINVAL 400, SB_ENOENT 404,
 * SB_ETOOBIG 413, anything else 500).
 */
typedef int (*sb_http_handler_cb)(sb_http_req_t *req, void *data);

/* ======================== router ======================== */

/* The route takes a JSON body: 415 unless Content-Type is JSON, 400 if invalid. */
#define SB_ROUTE_JSON 0x1u
/* The route is not part of the REST API's OpenAPI document (plugins, tests). */
#define SB_ROUTE_UNDOCUMENTED 0x2u

/* Creates an empty router.  The caller frees it with sb_router_free. */
sb_router_t *sb_router_new(void);
void sb_router_free(sb_router_t *r);

/*
 * Adds a route.  pattern is a path whose segments may be parameters
 * ("/api/v1/tenants/{tenant}/tickets/{number}").  method is an upper-case
 * method name; a GET route also answers HEAD.  Copies method and pattern.
 * Returns 0, or SB_EINVAL for a malformed pattern.
 */
int sb_router_add(sb_router_t *r, const char *method, const char *pattern, unsigned flags,
                  sb_http_handler_cb cb, void *data);

/* Number of routes, and the pattern of route i (for metrics labels). */
size_t sb_router_count(const sb_router_t *r);
const char *sb_router_pattern(const sb_router_t *r, size_t i);
const char *sb_router_method(const sb_router_t *r, size_t i);
unsigned sb_router_flags(const sb_router_t *r, size_t i);

/* The result of matching a path: the route, its parameters, and for 405 the
 * methods the path does allow. */
typedef struct sb_route_match {
    int index; /* route index, or -1 */
    unsigned flags;
    sb_http_handler_cb cb;
    void *data;
    int nparams;
    struct {
        const char *name;
        const char *value;
    } params[8];
    char allow[64]; /* "GET, HEAD, POST" when the path exists */
} sb_route_match_t;

/*
 * Finds the first route at or after index start that matches method and
 * path.  Parameter values are percent-decoded into pool.  Returns 0 with m
 * filled, or SB_ENOENT (m->allow is then non-empty if the path matched
 * under other methods).
 */
int sb_router_match(const sb_router_t *r, int start, const char *method, const char *path,
                    sb_pool_t *pool, sb_route_match_t *m);

/* ======================== server ======================== */

typedef struct sb_http_options {
    size_t max_header_size; /* request line + headers; over it: 431 */
    size_t max_body_size;   /* over it: 413 */
    uint64_t header_timeout_ms;
    uint64_t read_timeout_ms;
    uint64_t idle_timeout_ms;
    /* Connections open at once (0: 20000); never more than the open-file
     * limit allows. */
    size_t max_connections;
    /* Called once per answered request, after the response is queued. */
    void (*on_complete)(sb_http_req_t *req, int route_index, int status, uint64_t duration_ns,
                        void *data);
    void *on_complete_data;
} sb_http_options_t;

typedef void (*sb_http_drained_cb)(sb_http_server_t *srv, void *data);

/*
 * Creates a server on loop with the router r (borrowed: it must outlive the
 * server) and options (copied).  The caller frees it with sb_http_server_free
 * once it has drained.
 */
sb_http_server_t *sb_http_server_new(uv_loop_t *loop, sb_router_t *r,
                                     const sb_http_options_t *opts);

/*
 * Binds addr with SO_REUSEPORT (so every worker binds the same address)
 * and starts accepting.  Returns 0 or SB_EIO; the reason is logged here.
 */
int sb_http_server_listen(sb_http_server_t *srv, const struct sockaddr *addr);

/*
 * Stops accepting, closes idle connections and lets requests in flight
 * finish; their responses carry Connection: close.  cb runs once when no
 * connection is left (possibly before this returns).
 */
void sb_http_server_drain(sb_http_server_t *srv, sb_http_drained_cb cb, void *data);

/* Closes every connection now, answered or not (the drain deadline passed). */
void sb_http_server_abort(sb_http_server_t *srv);

/* Number of open connections and of requests being handled. */
size_t sb_http_server_connections(const sb_http_server_t *srv);

/* Frees a drained server.  Its handles must have closed (run the loop). */
void sb_http_server_free(sb_http_server_t *srv);

/* ======================== requests ======================== */

const char *sb_http_req_method(const sb_http_req_t *req);
const char *sb_http_req_path(const sb_http_req_t *req);
/* Case-insensitive header lookup; NULL when absent.  Borrowed. */
const char *sb_http_req_header(const sb_http_req_t *req, const char *name);
/* A path parameter of the matched route; NULL when absent.  Borrowed. */
const char *sb_http_req_param(const sb_http_req_t *req, const char *name);
/* A query-string parameter, percent-decoded; NULL when absent.  Borrowed. */
const char *sb_http_req_query(sb_http_req_t *req, const char *name);
/* The query string as received (after '?', not decoded); NULL when absent.  Borrowed. */
const char *sb_http_req_raw_query(const sb_http_req_t *req);
/*
 * The name of the i-th query-string parameter (from 0), percent-decoded, or
 * NULL past the last one: for handlers that refuse parameters they do not
 * know or that are repeated.  Borrowed.
 */
const char *sb_http_req_query_name(sb_http_req_t *req, size_t i);
/* The body (NUL-terminated, len excludes it).  Borrowed. */
const char *sb_http_req_body(const sb_http_req_t *req, size_t *len);
/* The parsed body of a JSON route (NULL when there was none).  Borrowed. */
json_t *sb_http_req_json(const sb_http_req_t *req);
const char *sb_http_req_id(const sb_http_req_t *req);
/* The client's address as text ("127.0.0.1"), or "-" for in-memory ones. */
const char *sb_http_req_peer(sb_http_req_t *req);
const sb_log_ctx_t *sb_http_req_log(const sb_http_req_t *req);
/* The request's pool: memory valid until the response has been written. */
sb_pool_t *sb_http_req_pool(sb_http_req_t *req);

/* Adds a response header.  Copies name and value. */
void sb_http_res_header(sb_http_req_t *req, const char *name, const char *value);

/*
 * Whether req has been answered (a respond call, or a WebSocket
 * handshake): for code that answers what a handler did not.
 */
int sb_http_req_responded(const sb_http_req_t *req);

/* Responds.  Copies the body.  Call exactly once per request. */
void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body,
                     size_t len);

/* Responds with a JSON document.  Takes the caller's reference to body. */
void sb_http_respond_json(sb_http_req_t *req, int status, json_t *body);

/*
 * Responds {"error":{"code":code,"message":...}}.  A 503 also carries
 * Retry-After.
 */
void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The reason phrase for a status ("Not Found"). */
const char *sb_http_status_text(int status);

/* ======================== WebSocket ======================== */

/* sb_ws_t and sb_ws_callbacks_t are shared with plugins (switchboard/plugin.h). */

/*
 * In a handler: completes the WebSocket handshake of req (answering 101).
 * Binary frames are refused with 1003, invalid UTF-8 with 1007, messages
 * over 64 KiB with 1009; a quiet peer is pinged and dropped if it never
 * answers.  Returns 0 (the request is answered), or SB_EINVAL when req is
 * not a valid upgrade / SB_EUNAVAILABLE while draining (req is not
 * answered: the handler answers it).
 */
int sb_ws_accept(sb_http_req_t *req, const sb_ws_callbacks_t *cbs, void *data, sb_ws_t **out);

/*
 * Queues a text message (copied).  A peer with more than 1 MiB waiting is
 * closed with 1008 and SB_ETOOBIG returned: memory never grows without
 * bound.  SB_ECLOSED once closing.
 */
int sb_ws_send(sb_ws_t *ws, const char *text, size_t len);

/* Starts the closing handshake with code and reason. */
void sb_ws_close(sb_ws_t *ws, int code, const char *reason);

/* Bytes waiting to be sent. */
size_t sb_ws_queued(const sb_ws_t *ws);

/* ======================== in-memory connections ======================== */

/*
 * A connection without a socket, for tests: bytes fed in are parsed and
 * dispatched exactly as from a TCP client; responses accumulate in output.
 */
typedef struct sb_http_loopback sb_http_loopback_t;

sb_http_loopback_t *sb_http_loopback_new(sb_http_server_t *srv);
void sb_http_loopback_feed(sb_http_loopback_t *lb, const char *data, size_t len);
/* Everything written so far (NUL-terminated).  Borrowed. */
const char *sb_http_loopback_output(sb_http_loopback_t *lb, size_t *len);
/* True once the server has closed the connection. */
int sb_http_loopback_closed(const sb_http_loopback_t *lb);
/* Closes (if needed) and frees; run the loop afterwards to release handles. */
void sb_http_loopback_free(sb_http_loopback_t *lb);

#endif
