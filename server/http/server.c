/*
 * server.c - HTTP/1.1 connections on libuv: accepting, parsing with
 * http-parser, one request at a time per connection (pipelined requests
 * wait, unparsed, so answers leave in order), limits, timeouts, responses
 * and lingering close.  Routing is router.c's; what a route does is the
 * caller's.
 */
#include "http.h"
#include "internal.h"
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <glib.h>
#include <http_parser.h>
#include <sodium.h>
#include <wslay/wslay.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_CONNECTIONS_DEFAULT 20000
#define HTTP_LINGER_MS 2000
#define HTTP_READ_BUF (64 * 1024)

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MAX_MESSAGE (64 * 1024)
#define WS_MAX_QUEUED (1024 * 1024)
#define WS_PING_MS 30000

typedef struct http_conn http_conn_t;

/* How bytes leave and arrive: a TCP socket, or memory for tests. */
typedef struct http_transport {
    /* Writes c->out; calls conn_write_done() from a later loop iteration. */
    void (*write)(http_conn_t *c);
    /* Writes a small static buffer without completion (100 Continue). */
    void (*write_raw)(http_conn_t *c, const char *data, size_t len);
    void (*read_start)(http_conn_t *c);
    void (*read_stop)(http_conn_t *c);
    /* Half-closes, discards input for a while, then closes. */
    void (*linger)(http_conn_t *c);
    /* Closes the handles; conn_handle_closed() runs once per handle. */
    void (*close)(http_conn_t *c);
} http_transport_t;

typedef enum {
    CONN_READING,
    CONN_HANDLING,
    CONN_WRITING,
    CONN_LINGERING,
    CONN_WEBSOCKET,
    CONN_CLOSING,
} conn_state_t;

typedef struct {
    uint32_t name, value; /* offsets into conn->hdr */
} hdr_off_t;

struct sb_http_req {
    http_conn_t *conn;
    sb_pool_t *pool;
    const char *method;
    const char *path;
    const char *query; /* raw, NULL when absent */
    int nheaders;
    const char *hnames[HTTP_MAX_HEADERS];
    const char *hvalues[HTTP_MAX_HEADERS];
    json_t *json;
    sb_route_match_t match;
    char id[72];
    sb_log_ctx_t log;
    sb_buf_t res_headers;
    int responded;
    int status;
    int keep_alive;
    int is_head;
    uint64_t start_ns;
    size_t res_bytes;
};

struct http_conn {
    sb_http_server_t *srv;
    const http_transport_t *tp;
    http_conn_t *prev, *next;
    conn_state_t state;
    http_parser parser;
    uv_timer_t timer;
    int open_handles;

    /* The message being parsed. */
    sb_buf_t hdr; /* url, then NUL-separated names and values */
    uint32_t url_len;
    int url_done;
    int nh;
    int last_was_value;
    hdr_off_t offs[HTTP_MAX_HEADERS];
    sb_buf_t body;
    int started, headers_done, complete;
    int err_status; /* set by a parser callback that refused */
    uint64_t msg_start_ms;

    sb_buf_t pending; /* bytes received after a complete request */
    sb_buf_t out;     /* the response being written */
    int close_after;

    sb_http_req_t req;

    /* After an upgrade to WebSocket. */
    struct sb_ws *ws;

    /* TCP transport */
    uv_tcp_t tcp;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    /* loopback transport */
    sb_http_loopback_t *lb;
};

struct sb_http_server {
    uv_loop_t *loop;
    sb_router_t *router;
    sb_http_options_t opts;
    uv_tcp_t listener;
    int listening;
    http_conn_t *conns;
    size_t nconns;
    int draining;
    sb_http_drained_cb drained_cb;
    void *drained_data;
    uint32_t id_prefix;
    uint64_t id_counter;
    size_t max_connections;
    uint64_t refused_logged_ms;
    char date[64];
    time_t date_at;
    char readbuf[HTTP_READ_BUF];
};

struct sb_http_loopback {
    http_conn_t *conn;
    sb_buf_t output;
    sb_buf_t inbox; /* fed while the server was not reading */
    uv_timer_t done_timer;
    uv_timer_t in_timer;
    int reading;
    int closed;
    int open_timers; /* freed when both have closed */
};

static http_parser_settings parser_settings;
static const http_transport_t tcp_transport;
static void conn_feed(http_conn_t *c, const char *data, size_t len);
static void conn_fail(http_conn_t *c, int status);
static void conn_close(http_conn_t *c);
static void conn_arm_timer(http_conn_t *c);
static void req_send(sb_http_req_t *req);
static void ws_feed(http_conn_t *c, const char *data, size_t len);
static void ws_opened(http_conn_t *c);
static void ws_conn_closed(http_conn_t *c);

/* ======================== statuses ======================== */

const char *sb_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

static const char *http_status_code(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 413:
        return "payload_too_large";
    case 415:
        return "unsupported_media_type";
    case 431:
        return "header_too_large";
    case 501:
        return "not_implemented";
    case 503:
        return "unavailable";
    case 505:
        return "http_version_not_supported";
    }
    return "internal";
}

/* ======================== small helpers ======================== */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

char *sb_http_pct_decode(sb_pool_t *pool, const char *s, size_t len, int plus_is_space)
{
    char *out = sb_pool_alloc(pool, len + 1);
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len) {
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out[o++] = (char)(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out[o++] = (plus_is_space && s[i] == '+') ? ' ' : s[i];
    }
    out[o] = '\0';
    return out;
}

static int request_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.' && ch != ':')
            return 0;
    }
    return n > 0 && n <= 64;
}

static const char *server_date(sb_http_server_t *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof(srv->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_at = now;
    }
    return srv->date;
}

/* ======================== parser callbacks ======================== */

static int hdr_append(http_conn_t *c, const char *at, size_t len)
{
    if (c->hdr.len + len + 1 > c->srv->opts.max_header_size) {
        c->err_status = 431;
        return -1;
    }
    sb_buf_append(&c->hdr, at, len);
    return 0;
}

static int hdr_terminate(http_conn_t *c)
{
    return hdr_append(c, "", 1);
}

static int on_message_begin(http_parser *p)
{
    http_conn_t *c = p->data;

    sb_buf_reset(&c->hdr);
    sb_buf_reset(&c->body);
    c->url_len = 0;
    c->url_done = 0;
    c->nh = 0;
    c->last_was_value = 0;
    c->started = 1;
    c->headers_done = 0;
    c->complete = 0;
    c->msg_start_ms = uv_now(c->srv->loop);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    c->url_len += (uint32_t)len;
    return hdr_append(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    if (!c->url_done) {
        c->url_done = 1;
        if (hdr_terminate(c))
            return -1;
    }
    if (c->nh == 0 || c->last_was_value) {
        if (c->nh > 0 && hdr_terminate(c))
            return -1;
        if (c->nh == HTTP_MAX_HEADERS) {
            c->err_status = 431;
            return -1;
        }
        c->offs[c->nh].name = (uint32_t)c->hdr.len;
        c->offs[c->nh].value = 0;
        c->nh++;
        c->last_was_value = 0;
    }
    return hdr_append(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    if (!c->last_was_value) {
        if (hdr_terminate(c))
            return -1;
        c->offs[c->nh - 1].value = (uint32_t)c->hdr.len;
        c->last_was_value = 1;
    }
    return hdr_append(c, at, len);
}

static int on_headers_complete(http_parser *p)
{
    http_conn_t *c = p->data;
    sb_http_server_t *srv = c->srv;

    if (!c->url_done) {
        c->url_done = 1;
        if (hdr_terminate(c))
            return -1;
    }
    if (c->nh > 0) {
        if (!c->last_was_value) {
            /* A header without a value: give it an empty one. */
            if (hdr_terminate(c))
                return -1;
            c->offs[c->nh - 1].value = (uint32_t)c->hdr.len;
        }
        if (hdr_terminate(c))
            return -1;
    }
    c->headers_done = 1;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > srv->opts.max_body_size) {
        c->err_status = 413;
        return -1;
    }
    for (int i = 0; i < c->nh; i++) {
        const char *name = c->hdr.data + c->offs[i].name;
        const char *value = c->hdr.data + c->offs[i].value;
        if (strcasecmp(name, "expect") == 0) {
            if (strcasecmp(value, "100-continue") != 0) {
                c->err_status = 417;
                return -1;
            }
            if (p->http_minor >= 1)
                c->tp->write_raw(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    if (c->body.len + len > c->srv->opts.max_body_size) {
        c->err_status = 413;
        return -1;
    }
    sb_buf_append(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn_t *c = p->data;
    c->complete = 1;
    http_parser_pause(p, 1);
    return 0;
}

static http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ======================== requests ======================== */

static void req_reset(sb_http_req_t *req)
{
    json_decref(req->json);
    req->json = NULL;
    sb_pool_reset(req->pool);
    sb_buf_reset(&req->res_headers);
    req->method = "-";
    req->path = "-";
    req->query = NULL;
    req->nheaders = 0;
    req->responded = 0;
    req->status = 0;
    req->keep_alive = 0;
    req->is_head = 0;
    req->res_bytes = 0;
    req->id[0] = '\0';
    memset(&req->match, 0, sizeof(req->match));
    req->match.index = -1;
    req->log.request_id = req->id;
    req->log.tenant = NULL;
    req->log.plugin = NULL;
}

static void req_assign_id(sb_http_req_t *req)
{
    sb_http_server_t *srv = req->conn->srv;
    const char *given = sb_http_req_header(req, "x-request-id");

    if (given && request_id_valid(given)) {
        snprintf(req->id, sizeof(req->id), "%s", given);
        return;
    }
    snprintf(req->id, sizeof(req->id), "%08x%08x", srv->id_prefix,
             (unsigned)(++srv->id_counter & 0xffffffffu));
}

const char *sb_http_req_method(const sb_http_req_t *req)
{
    return req->method;
}
const char *sb_http_req_path(const sb_http_req_t *req)
{
    return req->path;
}
const char *sb_http_req_raw_query(const sb_http_req_t *req)
{
    return req->query;
}
int sb_http_req_responded(const sb_http_req_t *req)
{
    return req->responded;
}
const char *sb_http_req_id(const sb_http_req_t *req)
{
    return req->id;
}
const sb_log_ctx_t *sb_http_req_log(const sb_http_req_t *req)
{
    return &req->log;
}
sb_pool_t *sb_http_req_pool(sb_http_req_t *req)
{
    return req->pool;
}
json_t *sb_http_req_json(const sb_http_req_t *req)
{
    return req->json;
}

const char *sb_http_req_peer(sb_http_req_t *req)
{
    http_conn_t *c = req->conn;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char name[64];

    if (c->lb != NULL || c->tp != &tcp_transport)
        return "-";
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return "-";
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof(name));
    else
        uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof(name));
    return sb_pool_strdup(req->pool, name);
}

const char *sb_http_req_header(const sb_http_req_t *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->hnames[i], name) == 0)
            return req->hvalues[i];
    return NULL;
}

const char *sb_http_req_param(const sb_http_req_t *req, const char *name)
{
    for (int i = 0; i < req->match.nparams; i++)
        if (strcmp(req->match.params[i].name, name) == 0)
            return req->match.params[i].value;
    return NULL;
}

const char *sb_http_req_query(sb_http_req_t *req, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = req->query;

    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *key = sb_http_pct_decode(req->pool, p, klen, 1);
        if (strlen(key) == nlen && memcmp(key, name, nlen) == 0) {
            if (!eq)
                return "";
            return sb_http_pct_decode(req->pool, eq + 1, len - klen - 1, 1);
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

const char *sb_http_req_query_name(sb_http_req_t *req, size_t i)
{
    const char *p = req->query;

    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (i-- == 0)
            return sb_http_pct_decode(req->pool, p, eq ? (size_t)(eq - p) : len, 1);
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

const char *sb_http_req_body(const sb_http_req_t *req, size_t *len)
{
    http_conn_t *c = req->conn;
    if (len)
        *len = c->body.len;
    return c->body.data ? c->body.data : "";
}

void sb_http_res_header(sb_http_req_t *req, const char *name, const char *value)
{
    sb_buf_printf(&req->res_headers, "%s: %s\r\n", name, value);
}

void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body,
                     size_t len)
{
    http_conn_t *c = req->conn;
    sb_http_server_t *srv = c->srv;
    sb_buf_t *o = &c->out;
    int no_body = req->is_head || status == 204 || status == 304;

    sb_assert(!req->responded);
    req->responded = 1;
    req->status = status;
    if (srv->draining)
        req->keep_alive = 0;

    sb_buf_reset(o);
    sb_buf_printf(o, "HTTP/1.1 %d %s\r\nServer: switchboard\r\nDate: %s\r\n", status,
                  sb_http_status_text(status), server_date(srv));
    if (content_type && status != 204 && status != 304)
        sb_buf_printf(o, "Content-Type: %s\r\n", content_type);
    if (status != 204 && status != 304 && status != 101)
        sb_buf_printf(o, "Content-Length: %zu\r\n", len);
    if (req->id[0])
        sb_buf_printf(o, "X-Request-Id: %s\r\n", req->id);
    if (!req->keep_alive)
        sb_buf_puts(o, "Connection: close\r\n");
    else if (status == 101)
        ; /* the handler set Connection: Upgrade */
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        sb_buf_puts(o, "Connection: keep-alive\r\n");
    sb_buf_append(o, req->res_headers.data, req->res_headers.len);
    sb_buf_puts(o, "\r\n");
    if (!no_body)
        sb_buf_append(o, body, len);
    req->res_bytes = no_body ? 0 : len;
    c->close_after = !req->keep_alive;
    req_send(req);
}

void sb_http_respond_json(sb_http_req_t *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(body);
    if (text == NULL) {
        /* Only an allocation failure or an invalid json_t gets here. */
        sb_log(SB_LOG_ERR, &req->log, "could not serialize response body");
        sb_http_respond(req, 500, "application/json",
                        "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}", 57);
        return;
    }
    sb_http_respond(req, status, "application/json", text, strlen(text));
    free(text);
}

void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (status == 503)
        sb_http_res_header(req, "Retry-After", "5");
    json_t *err = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    if (err == NULL) /* msg was not UTF-8 */
        err = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
                        sb_http_status_text(status));
    sb_http_respond_json(req, status, err);
}

/* ======================== dispatch ======================== */

static int req_error_status(int rc)
{
    switch (rc) {
    case SB_EUNAVAILABLE:
    case SB_ETIMEDOUT:
        return 503;
    case SB_EINVAL:
    case SB_ESYNTAX:
        return 400;
    case SB_ENOENT:
        return 404;
    case SB_ETOOBIG:
        return 413;
    }
    return 500;
}

static int req_is_json(const char *ctype)
{
    if (ctype == NULL)
        return 0;
    while (*ctype == ' ')
        ctype++;
    size_t n = strcspn(ctype, "; ");
    return (n == 16 && strncasecmp(ctype, "application/json", 16) == 0);
}

/* Parses the body of a JSON route; answers and returns -1 when it cannot. */
static int req_parse_json(sb_http_req_t *req)
{
    http_conn_t *c = req->conn;
    json_error_t jerr;

    /* No body at all, or an empty one that claims no type: nothing to parse. */
    if (c->body.len == 0 && (!(c->parser.flags & (F_CHUNKED | F_CONTENTLENGTH)) ||
                             sb_http_req_header(req, "content-type") == NULL))
        return 0;
    if (!req_is_json(sb_http_req_header(req, "content-type"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type",
                              "request body must be application/json");
        return -1;
    }
    req->json =
        json_loadb(c->body.data ? c->body.data : "", c->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (req->json == NULL) {
        sb_http_respond_error(req, 400, "bad_request", "invalid JSON at line %d, column %d: %s",
                              jerr.line, jerr.column, jerr.text);
        return -1;
    }
    return 0;
}

static void req_run(sb_http_req_t *req)
{
    http_conn_t *c = req->conn;
    sb_http_server_t *srv = c->srv;
    sb_route_match_t *m = &req->match;
    int start = 0;

    for (;;) {
        if (sb_router_match(srv->router, start, req->method, req->path, req->pool, m) != 0) {
            if (m->allow[0]) {
                sb_http_res_header(req, "Allow", m->allow);
                sb_http_respond_error(req, 405, "method_not_allowed",
                                      "method %s is not allowed here", req->method);
            } else {
                sb_http_respond_error(req, 404, "not_found", "no such resource");
            }
            return;
        }
        if ((m->flags & SB_ROUTE_JSON) && req->json == NULL && req_parse_json(req) != 0)
            return;
        int rc = m->cb(req, m->data);
        if (rc == SB_DECLINED && !req->responded) {
            start = m->index + 1;
            continue;
        }
        if (rc < 0 && !req->responded) {
            int status = req_error_status(rc);
            if (status == 500)
                sb_log(SB_LOG_ERR, &req->log, "handler for \"%s\" failed: %s",
                       sb_router_pattern(srv->router, (size_t)m->index), sb_strerror(rc));
            sb_http_respond_error(req, status, http_status_code(status), "%s",
                                  status == 500 ? "internal error" : sb_strerror(rc));
        }
        return;
    }
}

static void conn_dispatch(http_conn_t *c)
{
    sb_http_req_t *req = &c->req;
    struct http_parser_url u;

    c->state = CONN_HANDLING;
    uv_timer_stop(&c->timer);
    c->tp->read_stop(c);

    req_reset(req);
    req->start_ns = sb_now_ns();
    req->method = http_method_str(c->parser.method);
    req->is_head = c->parser.method == HTTP_HEAD;
    req->keep_alive = http_should_keep_alive(&c->parser) && !c->srv->draining && !c->parser.upgrade;
    req->nheaders = c->nh;
    for (int i = 0; i < c->nh; i++) {
        req->hnames[i] = c->hdr.data + c->offs[i].name;
        req->hvalues[i] = c->hdr.data + c->offs[i].value;
    }
    req_assign_id(req);
    if (c->body.data == NULL)
        sb_buf_append(&c->body, "", 0);

    const char *url = c->hdr.data;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, c->url_len, c->parser.method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        req->keep_alive = 0;
        sb_http_respond_error(req, 400, "bad_request", "malformed request target");
        return;
    }
    req->path =
        sb_pool_strndup(req->pool, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    if (u.field_set & (1 << UF_QUERY))
        req->query = sb_pool_strndup(req->pool, url + u.field_data[UF_QUERY].off,
                                     u.field_data[UF_QUERY].len);
    req_run(req);
}

static void req_send(sb_http_req_t *req)
{
    http_conn_t *c = req->conn;
    sb_http_server_t *srv = c->srv;
    uint64_t dur = sb_now_ns() - req->start_ns;

    if (srv->opts.on_complete)
        srv->opts.on_complete(req, req->match.index, req->status, dur, srv->opts.on_complete_data);
    if (sb_log_enabled(SB_LOG_INFO))
        sb_log(SB_LOG_INFO, &req->log, "request \"%s %s\" status %d, %zu bytes, %.3f ms",
               req->method, req->path, req->status, req->res_bytes, (double)dur / 1e6);
    c->state = CONN_WRITING;
    conn_arm_timer(c);
    c->tp->write(c);
}

/* ======================== connection life ======================== */

static void conn_next(http_conn_t *c)
{
    c->state = CONN_READING;
    c->started = 0;
    c->headers_done = 0;
    c->complete = 0;
    c->err_status = 0;
    http_parser_pause(&c->parser, 0);
    if (c->pending.len > 0) {
        sb_buf_t data = c->pending;
        sb_buf_init(&c->pending);
        conn_feed(c, data.data, data.len);
        sb_buf_free(&data);
        /* Only part of the next request was buffered: read the rest. */
        if (c->state == CONN_READING)
            c->tp->read_start(c);
        return;
    }
    if (c->srv->draining) {
        conn_close(c);
        return;
    }
    c->tp->read_start(c);
    conn_arm_timer(c);
}

/* The transport finished writing c->out (status < 0: it failed). */
static void conn_write_done(http_conn_t *c, int status)
{
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->ws && c->state == CONN_WRITING) {
        /* The 101 is out: from here on the bytes are WebSocket frames. */
        c->state = CONN_WEBSOCKET;
        /* A WebSocket may idle for hours: keep nothing of its request. */
        json_decref(c->req.json);
        c->req.json = NULL;
        sb_pool_free(c->req.pool);
        c->req.pool = NULL;
        c->req.nheaders = 0;
        c->req.match.nparams = 0;
        sb_buf_free(&c->hdr);
        sb_buf_free(&c->body);
        sb_buf_free(&c->out);
        sb_buf_free(&c->req.res_headers);
        ws_opened(c);
        c->tp->read_start(c);
        if (c->pending.len) {
            sb_buf_t data = c->pending;
            sb_buf_init(&c->pending);
            ws_feed(c, data.data, data.len);
            sb_buf_free(&data);
        }
        return;
    }
    req_reset(&c->req);
    if (c->close_after) {
        c->state = CONN_LINGERING;
        conn_arm_timer(c);
        c->tp->linger(c);
        return;
    }
    conn_next(c);
}

static void conn_feed(http_conn_t *c, const char *data, size_t len)
{
    if (c->state == CONN_WEBSOCKET) {
        ws_feed(c, data, len);
        return;
    }
    if (c->state != CONN_READING) {
        sb_buf_append(&c->pending, data, len);
        return;
    }
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

    if (e == HPE_PAUSED && c->complete) {
        if (n < len)
            sb_buf_append(&c->pending, data + n, len - n);
        conn_dispatch(c);
        return;
    }
    if (e != HPE_OK) {
        conn_fail(c, c->err_status ? c->err_status : 400);
        return;
    }
    if (n != len) {
        conn_fail(c, 400);
        return;
    }
    conn_arm_timer(c);
}

/* Answers a request that could not be read, then closes. */
static void conn_fail(http_conn_t *c, int status)
{
    sb_http_req_t *req = &c->req;

    c->state = CONN_HANDLING;
    uv_timer_stop(&c->timer);
    c->tp->read_stop(c);
    req_reset(req);
    req->start_ns = sb_now_ns();
    req->keep_alive = 0;
    snprintf(req->id, sizeof(req->id), "%08x%08x", c->srv->id_prefix,
             (unsigned)(++c->srv->id_counter & 0xffffffffu));
    switch (status) {
    case 413:
        sb_http_respond_error(req, 413, "payload_too_large",
                              "request body is larger than %zu bytes", c->srv->opts.max_body_size);
        break;
    case 431:
        sb_http_respond_error(req, 431, "header_too_large",
                              "request line and headers are larger than %zu bytes",
                              c->srv->opts.max_header_size);
        break;
    case 408:
        sb_http_respond_error(req, 408, "request_timeout", "request not received in time");
        break;
    case 417:
        sb_http_respond_error(req, 417, "expectation_failed", "unsupported expectation");
        break;
    default:
        sb_http_respond_error(req, 400, "bad_request", "malformed request: %s",
                              http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
        break;
    }
}

static void ws_idle(http_conn_t *c);

static void conn_timer_cb(uv_timer_t *t)
{
    http_conn_t *c = SB_CONTAINER_OF(t, http_conn_t, timer);

    if (c->state == CONN_READING && c->started) {
        conn_fail(c, 408);
        return;
    }
    if (c->state == CONN_WEBSOCKET && c->ws) {
        ws_idle(c);
        return;
    }
    conn_close(c);
}

/* Arms the timer that fits the connection's state. */
static void conn_arm_timer(http_conn_t *c)
{
    sb_http_options_t *o = &c->srv->opts;
    uint64_t now = uv_now(c->srv->loop), deadline;

    switch (c->state) {
    case CONN_READING:
        if (!c->started)
            deadline = now + o->idle_timeout_ms;
        else if (!c->headers_done)
            deadline = c->msg_start_ms + o->header_timeout_ms;
        else
            deadline = c->msg_start_ms + o->read_timeout_ms;
        break;
    case CONN_WRITING:
        deadline = now + o->idle_timeout_ms;
        break;
    case CONN_LINGERING:
        deadline = now + HTTP_LINGER_MS;
        break;
    default:
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, conn_timer_cb, deadline > now ? deadline - now : 0, 0);
}

static void conn_handle_closed(uv_handle_t *h)
{
    http_conn_t *c = h->data;
    sb_http_server_t *srv = c->srv;

    if (--c->open_handles > 0)
        return;
    ws_conn_closed(c);
    json_decref(c->req.json);
    sb_pool_free(c->req.pool);
    sb_buf_free(&c->req.res_headers);
    sb_buf_free(&c->hdr);
    sb_buf_free(&c->body);
    sb_buf_free(&c->pending);
    sb_buf_free(&c->out);
    if (c->lb)
        c->lb->conn = NULL;
    free(c);
    if (srv->draining && srv->nconns == 0 && srv->drained_cb) {
        sb_http_drained_cb cb = srv->drained_cb;
        srv->drained_cb = NULL;
        cb(srv, srv->drained_data);
    }
}

static void conn_close(http_conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->srv->nconns--;
    uv_timer_stop(&c->timer);
    c->tp->close(c);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static http_conn_t *conn_new(sb_http_server_t *srv, const http_transport_t *tp)
{
    http_conn_t *c = sb_xcalloc(1, sizeof(*c));

    c->srv = srv;
    c->tp = tp;
    c->state = CONN_READING;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    sb_buf_init(&c->hdr);
    sb_buf_init(&c->body);
    sb_buf_init(&c->pending);
    sb_buf_init(&c->out);
    c->req.conn = c;
    c->req.pool = sb_pool_new();
    sb_buf_init(&c->req.res_headers);
    req_reset(&c->req);

    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    return c;
}

/* ======================== TCP transport ======================== */

static void tcp_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    http_conn_t *c = h->data;
    /* One buffer per server: each read is consumed before the next. */
    buf->base = c->srv->readbuf;
    buf->len = sizeof(c->srv->readbuf);
}

static void tcp_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    http_conn_t *c = s->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or error: nothing can be answered on a half-read request. */
        conn_close(c);
        return;
    }
    if (c->state == CONN_LINGERING)
        return;
    if (c->state == CONN_WEBSOCKET) {
        ws_feed(c, buf->base, (size_t)nread);
        return;
    }
    conn_feed(c, buf->base, (size_t)nread);
}

static void tcp_read_start(http_conn_t *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, tcp_alloc_cb, tcp_read_cb);
}

static void tcp_read_stop(http_conn_t *c)
{
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void tcp_write_cb(uv_write_t *w, int status)
{
    http_conn_t *c = w->data;
    conn_write_done(c, status < 0 ? SB_EIO : 0);
}

static void tcp_write(http_conn_t *c)
{
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, tcp_write_cb) != 0)
        conn_close(c);
}

static void tcp_raw_write_cb(uv_write_t *w, int status)
{
    free(w);
}

static void tcp_write_raw(http_conn_t *c, const char *data, size_t len)
{
    uv_write_t *w = sb_xmalloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, tcp_raw_write_cb) != 0)
        free(w);
}

static void tcp_shutdown_cb(uv_shutdown_t *r, int status)
{
    http_conn_t *c = r->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Keep reading (and discarding) so that unread request bytes do not
     * turn our close into a reset that destroys the response in flight. */
    tcp_read_start(c);
}

static void tcp_linger(http_conn_t *c)
{
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, tcp_shutdown_cb) != 0)
        conn_close(c);
}

static void tcp_close(http_conn_t *c)
{
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static const http_transport_t tcp_transport = {
    tcp_write, tcp_write_raw, tcp_read_start, tcp_read_stop, tcp_linger, tcp_close,
};

static void server_on_connection(uv_stream_t *listener, int status)
{
    sb_http_server_t *srv = listener->data;

    if (status < 0) {
        sb_log(SB_LOG_WARNING, NULL, "could not accept connection: %s", uv_strerror(status));
        return;
    }
    http_conn_t *c = conn_new(srv, &tcp_transport);
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->open_handles++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (srv->nconns > srv->max_connections || srv->draining) {
        /* Over the limit: refuse at once, and say so (at most once a minute). */
        uint64_t now = uv_now(srv->loop);
        if (!srv->draining && now - srv->refused_logged_ms > 60000) {
            sb_log(SB_LOG_WARNING, NULL,
                   "refusing connections: %zu open, the limit is %zu (max_connections, and the "
                   "open-file limit)",
                   srv->nconns - 1, srv->max_connections);
            srv->refused_logged_ms = now;
        }
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    tcp_read_start(c);
    conn_arm_timer(c);
}

/* ======================== server ======================== */

sb_http_server_t *sb_http_server_new(uv_loop_t *loop, sb_router_t *r, const sb_http_options_t *opts)
{
    sb_http_server_t *srv = sb_xcalloc(1, sizeof(*srv));

    srv->loop = loop;
    srv->router = r;
    srv->opts = *opts;
    if (srv->opts.max_header_size == 0)
        srv->opts.max_header_size = 16384;
    /* Never more than the open-file limit allows, with room for the
     * database connections, the listener and the loop's own. */
    struct rlimit rl;
    srv->max_connections =
        opts->max_connections ? opts->max_connections : HTTP_MAX_CONNECTIONS_DEFAULT;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 128 &&
        srv->max_connections > rl.rlim_cur - 128)
        srv->max_connections = rl.rlim_cur - 128;
    if (uv_random(NULL, NULL, &srv->id_prefix, sizeof(srv->id_prefix), 0, NULL) != 0)
        srv->id_prefix = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    return srv;
}

int sb_http_server_listen(sb_http_server_t *srv, const struct sockaddr *addr)
{
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t alen =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    char name[64] = "?";
    int port = 0;

    if (addr->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)addr, name, sizeof(name));
        port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    } else {
        uv_ip4_name((const struct sockaddr_in *)addr, name, sizeof(name));
        port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    }
    if (fd < 0)
        goto fail;
    /* libuv 1.44 cannot set SO_REUSEPORT itself, so the socket is made here. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, addr, alen) != 0)
        goto fail;
    uv_tcp_init(srv->loop, &srv->listener);
    srv->listener.data = srv;
    int rc = uv_tcp_open(&srv->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 511, server_on_connection);
    if (rc != 0) {
        sb_log(SB_LOG_ERR, NULL, "could not listen on %s:%d: %s", name, port, uv_strerror(rc));
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return SB_EIO;
    }
    srv->listening = 1;
    return 0;
fail:
    sb_log(SB_LOG_ERR, NULL, "could not bind %s:%d: %s", name, port, strerror(errno));
    if (fd >= 0)
        close(fd);
    return SB_EIO;
}

void sb_http_server_drain(sb_http_server_t *srv, sb_http_drained_cb cb, void *data)
{
    srv->draining = 1;
    srv->drained_cb = cb;
    srv->drained_data = data;
    if (srv->listening) {
        srv->listening = 0;
        uv_close((uv_handle_t *)&srv->listener, NULL);
    }
    /* Idle keep-alive connections have nothing in flight: close them now;
     * WebSockets are told the server is going away. */
    http_conn_t *c = srv->conns;
    while (c) {
        http_conn_t *next = c->next;
        if (c->state == CONN_WEBSOCKET && c->ws) {
            sb_ws_close(c->ws, 1001, "server shutting down");
            c = next;
            continue;
        }
        if (c->state == CONN_READING && !c->started && c->pending.len == 0)
            conn_close(c);
        c = next;
    }
    if (srv->nconns == 0 && srv->drained_cb) {
        srv->drained_cb = NULL;
        cb(srv, data);
    }
}

size_t sb_http_server_connections(const sb_http_server_t *srv)
{
    return srv->nconns;
}

void sb_http_server_free(sb_http_server_t *srv)
{
    free(srv);
}

/* ======================== WebSocket ======================== */

struct sb_ws {
    http_conn_t *conn;
    wslay_event_context_ptr ctx;
    sb_ws_callbacks_t cbs;
    void *data;
    sb_buf_t in; /* received, not yet taken by wslay */
    size_t in_off;
    size_t in_flight; /* bytes handed to uv_write, not yet written */
    int closed_reported;
    int close_code;
    uint64_t last_rx_ms;
    int ping_sent;
};

typedef struct {
    uv_write_t w;
    sb_ws_t *ws;
    size_t len;
    char data[];
} ws_write_t;

static void ws_report_close(sb_ws_t *ws, int code)
{
    if (ws->closed_reported)
        return;
    ws->closed_reported = 1;
    if (ws->cbs.on_close)
        ws->cbs.on_close(ws, code, ws->data);
}

/* The connection's handles are gone: the last word to the owner, then free. */
static void ws_conn_closed(http_conn_t *c)
{
    sb_ws_t *ws = c->ws;
    if (ws == NULL)
        return;
    ws_report_close(ws, ws->close_code ? ws->close_code : WSLAY_CODE_ABNORMAL_CLOSURE);
    wslay_event_context_free(ws->ctx);
    sb_buf_free(&ws->in);
    free(ws);
    c->ws = NULL;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    sb_ws_t *ws = user;
    size_t avail = ws->in.len - ws->in_off;
    if (avail == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > avail)
        len = avail;
    memcpy(buf, ws->in.data + ws->in_off, len);
    ws->in_off += len;
    return (ssize_t)len;
}

static void ws_flush(sb_ws_t *ws);

static void ws_write_cb(uv_write_t *w, int status)
{
    ws_write_t *ww = SB_CONTAINER_OF(w, ws_write_t, w);
    sb_ws_t *ws = ww->ws;
    ws->in_flight -= ww->len;
    free(ww);
    if (status < 0 || ws->conn->state == CONN_CLOSING) {
        if (ws->conn->state != CONN_CLOSING)
            conn_close(ws->conn);
        return;
    }
    ws_flush(ws);
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
    sb_ws_t *ws = user;
    http_conn_t *c = ws->conn;

    /* Let the kernel drain before queueing more: bounded memory per socket. */
    if (ws->in_flight > 64 * 1024 || c->state == CONN_CLOSING) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (c->lb) {
        sb_buf_append(&c->lb->output, data, len);
        return (ssize_t)len;
    }
    ws_write_t *ww = sb_xmalloc(sizeof(*ww) + len);
    ww->ws = ws;
    ww->len = len;
    memcpy(ww->data, data, len);
    uv_buf_t b = uv_buf_init(ww->data, (unsigned)len);
    if (uv_write(&ww->w, (uv_stream_t *)&c->tcp, &b, 1, ws_write_cb) != 0) {
        free(ww);
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ws->in_flight += len;
    return (ssize_t)len;
}

static void ws_fail(sb_ws_t *ws, int code, const char *reason)
{
    ws->close_code = code;
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, strlen(reason));
    wslay_event_shutdown_read(ws->ctx);
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    sb_ws_t *ws = user;

    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        ws->close_code = arg->status_code ? arg->status_code : WSLAY_CODE_NO_STATUS_RCVD;
        return;
    }
    if (arg->opcode == WSLAY_BINARY_FRAME) {
        sb_log(SB_LOG_INFO, &ws->conn->req.log, "websocket closed: binary frame refused");
        ws_fail(ws, WSLAY_CODE_UNSUPPORTED_DATA, "text frames only");
        return;
    }
    if (arg->opcode != WSLAY_TEXT_FRAME || ws->closed_reported)
        return;
    if (!g_utf8_validate((const char *)arg->msg, (gssize)arg->msg_length, NULL)) {
        sb_log(SB_LOG_INFO, &ws->conn->req.log, "websocket closed: invalid UTF-8");
        ws_fail(ws, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8");
        return;
    }
    if (ws->cbs.on_text)
        ws->cbs.on_text(ws, (const char *)arg->msg, arg->msg_length, ws->data);
}

/* Sends what wslay has queued; closes once both directions are done. */
static void ws_flush(sb_ws_t *ws)
{
    http_conn_t *c = ws->conn;

    if (c->state != CONN_WEBSOCKET)
        return;
    if (wslay_event_send(ws->ctx) != 0) {
        conn_close(c);
        return;
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx) && ws->in_flight == 0) {
        if (ws->close_code == 0)
            ws->close_code = wslay_event_get_status_code_received(ws->ctx);
        ws_report_close(ws, ws->close_code);
        conn_close(c);
    }
}

static void ws_feed(http_conn_t *c, const char *data, size_t len)
{
    sb_ws_t *ws = c->ws;

    ws->last_rx_ms = uv_now(c->srv->loop);
    ws->ping_sent = 0;
    sb_buf_append(&ws->in, data, len);
    int rc = wslay_event_recv(ws->ctx);
    /* Drop what wslay took; keep a partial frame for the next read. */
    if (ws->in_off == ws->in.len) {
        sb_buf_reset(&ws->in);
        if (ws->in.cap > 64 * 1024)
            sb_buf_free(&ws->in);
    } else if (ws->in_off > 0) {
        memmove(ws->in.data, ws->in.data + ws->in_off, ws->in.len - ws->in_off);
        ws->in.len -= ws->in_off;
    }
    ws->in_off = 0;
    if (rc != 0 && rc != WSLAY_ERR_WOULDBLOCK && ws->close_code == 0)
        ws->close_code = WSLAY_CODE_PROTOCOL_ERROR;
    if (c->state != CONN_CLOSING)
        ws_flush(ws);
}

/* The 101 has been written: start the ping timer. */
static void ws_opened(http_conn_t *c)
{
    c->ws->last_rx_ms = uv_now(c->srv->loop);
    uv_timer_start(&c->timer, conn_timer_cb, WS_PING_MS, 0);
    ws_flush(c->ws);
}

/* The timer of a WebSocket: ping a quiet peer, drop one that never answers. */
static void ws_idle(http_conn_t *c)
{
    sb_ws_t *ws = c->ws;
    uint64_t now = uv_now(c->srv->loop);

    if (ws->ping_sent && now - ws->last_rx_ms >= 2 * WS_PING_MS) {
        ws->close_code = WSLAY_CODE_GOING_AWAY;
        conn_close(c);
        return;
    }
    if (now - ws->last_rx_ms >= WS_PING_MS && !ws->ping_sent) {
        struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"", 0};
        wslay_event_queue_msg(ws->ctx, &ping);
        ws->ping_sent = 1;
        ws_flush(ws);
    }
    if (c->state != CONN_CLOSING)
        uv_timer_start(&c->timer, conn_timer_cb, WS_PING_MS, 0);
}

int sb_ws_accept(sb_http_req_t *req, const sb_ws_callbacks_t *cbs, void *data, sb_ws_t **out)
{
    http_conn_t *c = req->conn;
    const char *key = sb_http_req_header(req, "sec-websocket-key");
    const char *version = sb_http_req_header(req, "sec-websocket-version");
    const char *upgrade = sb_http_req_header(req, "upgrade");
    struct wslay_event_callbacks wcb = {ws_recv_cb, ws_send_cb, NULL, NULL, NULL, NULL, ws_msg_cb};
    unsigned char digest[20];
    gsize dlen = sizeof(digest);
    char accept[64];

    if (c->srv->draining)
        return SB_EUNAVAILABLE;
    if (!c->parser.upgrade || key == NULL || strlen(key) > 64 || upgrade == NULL ||
        strcasecmp(upgrade, "websocket") != 0 || version == NULL || strcmp(version, "13") != 0 ||
        c->parser.method != HTTP_GET)
        return SB_EINVAL;

    GChecksum *sha1 = g_checksum_new(G_CHECKSUM_SHA1);
    g_checksum_update(sha1, (const guchar *)key, (gssize)strlen(key));
    g_checksum_update(sha1, (const guchar *)WS_GUID, (gssize)strlen(WS_GUID));
    g_checksum_get_digest(sha1, digest, &dlen);
    g_checksum_free(sha1);
    sodium_bin2base64(accept, sizeof(accept), digest, dlen, sodium_base64_VARIANT_ORIGINAL);

    sb_ws_t *ws = sb_xcalloc(1, sizeof(*ws));
    ws->conn = c;
    ws->cbs = *cbs;
    ws->data = data;
    sb_buf_init(&ws->in);
    if (wslay_event_context_server_init(&ws->ctx, &wcb, ws) != 0) {
        free(ws);
        return SB_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, WS_MAX_MESSAGE);

    /* The 101 answer goes out through the normal response path. */
    sb_http_res_header(req, "Upgrade", "websocket");
    sb_http_res_header(req, "Connection", "Upgrade");
    sb_http_res_header(req, "Sec-WebSocket-Accept", accept);
    c->ws = ws;
    req->keep_alive = 1;
    sb_http_respond(req, 101, NULL, "", 0);
    if (out)
        *out = ws;
    return 0;
}

int sb_ws_send(sb_ws_t *ws, const char *text, size_t len)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};

    /* Between accept and the 101 being written, messages wait in wslay. */
    if (ws->closed_reported || ws->conn->state == CONN_CLOSING)
        return SB_ECLOSED;
    if (wslay_event_get_queued_msg_length(ws->ctx) + ws->in_flight + len > WS_MAX_QUEUED) {
        /* A consumer this far behind is cut off rather than buffered. */
        sb_log(SB_LOG_NOTICE, &ws->conn->req.log, "websocket closed: the peer reads too slowly");
        ws_fail(ws, WSLAY_CODE_POLICY_VIOLATION, "too slow");
        ws_flush(ws);
        return SB_ETOOBIG;
    }
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return SB_ECLOSED;
    ws_flush(ws);
    return 0;
}

void sb_ws_close(sb_ws_t *ws, int code, const char *reason)
{
    if (ws->closed_reported || ws->conn->state == CONN_CLOSING)
        return;
    ws->close_code = code;
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)(reason ? reason : ""),
                            reason ? strlen(reason) : 0);
    ws_flush(ws);
}

size_t sb_ws_queued(const sb_ws_t *ws)
{
    return wslay_event_get_queued_msg_length(ws->ctx) + ws->in_flight;
}

/* ======================== loopback transport ======================== */

static void lb_done_cb(uv_timer_t *t)
{
    sb_http_loopback_t *lb = t->data;
    if (lb->conn && lb->conn->state == CONN_WRITING)
        conn_write_done(lb->conn, 0);
}

static void lb_write(http_conn_t *c)
{
    sb_buf_append(&c->lb->output, c->out.data, c->out.len);
    /* Complete on a later loop iteration, as a socket write would. */
    uv_timer_start(&c->lb->done_timer, lb_done_cb, 0, 0);
}

static void lb_write_raw(http_conn_t *c, const char *data, size_t len)
{
    sb_buf_append(&c->lb->output, data, len);
}

static void lb_in_cb(uv_timer_t *t)
{
    sb_http_loopback_t *lb = t->data;
    if (lb->conn == NULL || !lb->reading || lb->inbox.len == 0)
        return;
    sb_buf_t data = lb->inbox;
    sb_buf_init(&lb->inbox);
    conn_feed(lb->conn, data.data, data.len);
    sb_buf_free(&data);
}

/* As a socket would, deliver what arrived meanwhile on a later iteration. */
static void lb_read_start(http_conn_t *c)
{
    if (c->lb == NULL)
        return;
    c->lb->reading = 1;
    if (c->lb->inbox.len)
        uv_timer_start(&c->lb->in_timer, lb_in_cb, 0, 0);
}

static void lb_read_stop(http_conn_t *c)
{
    if (c->lb)
        c->lb->reading = 0;
}

static void lb_linger(http_conn_t *c)
{
    conn_close(c);
}

static void lb_close(http_conn_t *c)
{
    if (c->lb)
        c->lb->closed = 1;
}

static const http_transport_t lb_transport = {
    lb_write, lb_write_raw, lb_read_start, lb_read_stop, lb_linger, lb_close,
};

sb_http_loopback_t *sb_http_loopback_new(sb_http_server_t *srv)
{
    sb_http_loopback_t *lb = sb_xcalloc(1, sizeof(*lb));
    sb_buf_init(&lb->output);
    sb_buf_init(&lb->inbox);
    sb_buf_append(&lb->output, "", 0);
    uv_timer_init(srv->loop, &lb->done_timer);
    lb->done_timer.data = lb;
    uv_timer_init(srv->loop, &lb->in_timer);
    lb->in_timer.data = lb;
    lb->open_timers = 2;
    lb->reading = 1;
    lb->conn = conn_new(srv, &lb_transport);
    lb->conn->lb = lb;
    conn_arm_timer(lb->conn);
    return lb;
}

void sb_http_loopback_feed(sb_http_loopback_t *lb, const char *data, size_t len)
{
    if (lb->conn == NULL || lb->conn->state == CONN_CLOSING)
        return;
    if (!lb->reading || lb->inbox.len) {
        sb_buf_append(&lb->inbox, data, len);
        return;
    }
    conn_feed(lb->conn, data, len);
}

const char *sb_http_loopback_output(sb_http_loopback_t *lb, size_t *len)
{
    if (len)
        *len = lb->output.len;
    return lb->output.data;
}

int sb_http_loopback_closed(const sb_http_loopback_t *lb)
{
    return lb->closed;
}

static void lb_timer_closed(uv_handle_t *h)
{
    sb_http_loopback_t *lb = h->data;
    if (--lb->open_timers > 0)
        return;
    sb_buf_free(&lb->output);
    sb_buf_free(&lb->inbox);
    free(lb);
}

void sb_http_loopback_free(sb_http_loopback_t *lb)
{
    if (lb->conn) {
        lb->conn->lb = NULL;
        conn_close(lb->conn);
    }
    uv_close((uv_handle_t *)&lb->done_timer, lb_timer_closed);
    uv_close((uv_handle_t *)&lb->in_timer, lb_timer_closed);
}
