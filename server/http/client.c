/*
 * client.c - libcurl multi on the libuv loop.
 *
 * libcurl says which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to wake it (CURLMOPT_TIMERFUNCTION); we watch them with uv_poll and
 * wake it with one uv_timer, and collect finished transfers after each
 * action.  Every address a transfer connects to passes the opensocket
 * callback first, which is where non-public addresses are refused (after
 * DNS, so a public name that resolves to 127.0.0.1 is refused too).
 */
#include "http/client.h"
#include "common.h"
#include "log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

struct sb_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    sb_http_client_options_t opts;
    size_t pending;
    int closing;
    int handles_open; /* the timer and the socket polls */
    struct transfer *transfers;
    struct socket_ctx *sockets;
};

typedef struct transfer {
    struct transfer *next, *prev;
    sb_http_client_t *c;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    sb_buf_t response;
    int refused;
    char error[CURL_ERROR_SIZE];
    sb_http_client_cb cb;
    void *data;
} transfer_t;

typedef struct socket_ctx {
    uv_poll_t poll; /* first: the handle's address is the context's */
    struct socket_ctx *next, *prev;
    sb_http_client_t *c;
    curl_socket_t fd;
} socket_ctx_t;

/* ======================== addresses ======================== */

static int addr_is_public_v4(uint32_t a)
{
    uint8_t b0 = a >> 24, b1 = (a >> 16) & 0xff;
    if (b0 == 0 || b0 == 10 || b0 == 127 || b0 >= 224)
        return 0; /* this network, private, loopback, multicast and reserved */
    if ((b0 == 169 && b1 == 254) || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) ||
        (b0 == 100 && (b1 & 0xc0) == 64))
        return 0; /* link-local, private, carrier-grade NAT */
    return 1;
}

static int addr_is_public(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return addr_is_public_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family != AF_INET6)
        return 0;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        uint32_t v4;
        memcpy(&v4, a->s6_addr + 12, 4);
        return addr_is_public_v4(ntohl(v4));
    }
    if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LINKLOCAL(a) ||
        IN6_IS_ADDR_MULTICAST(a) || (a->s6_addr[0] & 0xfe) == 0xfc)
        return 0; /* unique local fc00::/7 too */
    return 1;
}

static curl_socket_t client_opensocket(void *clientp, curlsocktype purpose,
                                       struct curl_sockaddr *address)
{
    transfer_t *t = clientp;
    if (!t->c->opts.allow_private && !addr_is_public(&address->addr)) {
        t->refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype, address->protocol);
}

/* ======================== transfers ======================== */

static size_t client_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    transfer_t *t = userdata;
    size_t n = size * nmemb;
    size_t room =
        t->c->opts.max_response > t->response.len ? t->c->opts.max_response - t->response.len : 0;
    sb_buf_append(&t->response, ptr, n < room ? n : room);
    return n; /* the rest is read and dropped */
}

static void transfer_free(transfer_t *t)
{
    curl_slist_free_all(t->headers);
    curl_easy_cleanup(t->easy);
    free(t->body);
    sb_buf_free(&t->response);
    free(t);
}

/*
 * The response's Retry-After in seconds, or -1: libcurl reads both forms
 * (seconds, and an HTTP date it turns into seconds from now); 0 and
 * absent are alike.
 */
static long client_retry_after(CURL *easy)
{
    curl_off_t s = 0;
    if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &s) != CURLE_OK || s <= 0)
        return -1;
    return s < LONG_MAX ? (long)s : LONG_MAX;
}

static void transfer_finish(transfer_t *t, CURLcode result)
{
    sb_http_client_res_t res = {0};
    int rc = 0;

    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res.status);
    sb_buf_append(&t->response, "", 1);
    res.body = t->response.data;
    res.len = t->response.len - 1;
    res.retry_after = client_retry_after(t->easy);
    if (t->c->closing) {
        rc = SB_ECLOSED;
        res.error = "the client closed";
    } else if (t->refused) {
        rc = SB_EINVAL;
        res.error = "the address is not public";
    } else if (result == CURLE_UNSUPPORTED_PROTOCOL || result == CURLE_URL_MALFORMAT) {
        rc = SB_EINVAL;
        res.error = t->error[0] ? t->error : curl_easy_strerror(result);
    } else if (result != CURLE_OK) {
        rc = SB_EUNAVAILABLE;
        res.error = t->error[0] ? t->error : curl_easy_strerror(result);
    }
    t->c->pending--;
    if (t->prev)
        t->prev->next = t->next;
    else
        t->c->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->cb(rc, &res, t->data);
    transfer_free(t);
}

static void client_collect(sb_http_client_t *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        transfer_t *t;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(c->multi, easy);
        transfer_finish(t, result);
    }
}

/* ======================== the loop's side ======================== */

static void client_handle_closed(uv_handle_t *h)
{
    sb_http_client_t *c = h->data;
    if (h->type == UV_POLL)
        free(h); /* the socket_ctx_t */
    if (--c->handles_open == 0 && c->closing)
        free(c);
}

static void client_poll_cb(uv_poll_t *p, int status, int events)
{
    socket_ctx_t *s = (socket_ctx_t *)p;
    sb_http_client_t *c = s->c;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    client_collect(c);
}

/* Stops watching a socket and closes its handle. */
static void socket_forget(socket_ctx_t *s)
{
    sb_http_client_t *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->sockets = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, client_handle_closed);
}

static int client_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    sb_http_client_t *c = userp;
    socket_ctx_t *s = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            socket_forget(s);
            if (!c->closing)
                curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = sb_xcalloc(1, sizeof(*s));
        s->c = c;
        s->fd = fd;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = c;
        s->next = c->sockets;
        if (c->sockets)
            c->sockets->prev = s;
        c->sockets = s;
        c->handles_open++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, client_poll_cb);
    return 0;
}

static void client_timer_cb(uv_timer_t *timer)
{
    sb_http_client_t *c = timer->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    client_collect(c);
}

static int client_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    sb_http_client_t *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, client_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ======================== interface ======================== */

int sb_http_client_new(uv_loop_t *loop, const sb_http_client_options_t *opts,
                       sb_http_client_t **out)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return SB_EINVAL;
        global_done = 1;
    }
    sb_http_client_t *c = sb_xcalloc(1, sizeof(*c));
    c->loop = loop;
    if (opts)
        c->opts = *opts;
    if (c->opts.max_response == 0)
        c->opts.max_response = 1 << 20;
    if (c->opts.timeout_ms == 0)
        c->opts.timeout_ms = 30000;
    c->multi = curl_multi_init();
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, client_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, client_timer_set);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 8L);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 1;
    *out = c;
    return 0;
}

int sb_http_client_request(sb_http_client_t *c, const sb_http_client_req_t *req,
                           sb_http_client_cb cb, void *data)
{
    if (c->closing || req->url == NULL ||
        (strncasecmp(req->url, "http://", 7) != 0 && strncasecmp(req->url, "https://", 8) != 0))
        return SB_EINVAL;
    transfer_t *t = sb_xcalloc(1, sizeof(*t));
    t->c = c;
    t->cb = cb;
    t->data = data;
    sb_buf_init(&t->response);
    t->easy = curl_easy_init();
    for (const char *const *h = req->headers; h && *h; h++)
        t->headers = curl_slist_append(t->headers, *h);
    /* curl would otherwise send "Expect: 100-continue" and wait for it. */
    t->headers = curl_slist_append(t->headers, "Expect:");

    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     (long)(req->timeout_ms ? req->timeout_ms : c->opts.timeout_ms));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "Switchboard/" SB_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, client_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, client_opensocket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    if (req->body || (req->method && strcmp(req->method, "GET") != 0)) {
        t->body = sb_xmalloc(req->len + 1);
        if (req->len)
            memcpy(t->body, req->body, req->len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->len);
    }
    if (req->method && strcmp(req->method, "GET") != 0 && strcmp(req->method, "POST") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    c->pending++;
    t->next = c->transfers;
    if (c->transfers)
        c->transfers->prev = t;
    c->transfers = t;
    curl_multi_add_handle(c->multi, e);
    return 0;
}

size_t sb_http_client_pending(const sb_http_client_t *c)
{
    return c->pending;
}

void sb_http_client_close(sb_http_client_t *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    /* Finish every transfer now: their callbacks see SB_ECLOSED. */
    while (c->transfers) {
        transfer_t *t = c->transfers;
        curl_multi_remove_handle(c->multi, t->easy);
        transfer_finish(t, CURLE_ABORTED_BY_CALLBACK);
    }
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    /* Sockets of cached connections libcurl did not report removed. */
    while (c->sockets)
        socket_forget(c->sockets);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}
