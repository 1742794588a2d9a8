/*
 * mailnet.c - the email channel's client side: SMTP relay delivery and
 * IMAP polling, as libcurl easy transfers driven by one multi handle on
 * the worker's libuv loop.  Not a MIME parser (mime.c) and not the
 * SMTP/LMTP listener (smtpd.c).
 *
 * An IMAP poll is a chain of small transfers on one easy handle, so that
 * libcurl keeps the logged-in connection between them.  libcurl's own
 * SELECT does not report UIDVALIDITY, so the poll asks with a custom
 * SELECT first.  Known limits, both libcurl's: a message is fetched with
 * BODY[] (the URL form, the only one that reads literals safely), which
 * sets \Seen, so the poll takes \Seen back when the account keeps flags;
 * and libcurl says LOGOUT/QUIT on cached connections synchronously when
 * the multi handle is cleaned up in sb_mailnet_close.  A message expunged
 * by someone else between the listing and its fetch is skipped: its UID
 * is never used again.
 */
#include <switchboard/plugin.h>

#include "mailnet.h"

#include <curl/curl.h>
#include <glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAILNET_CONNECT_TIMEOUT_MS 15000L
#define MAILNET_DEFAULT_TIMEOUT_MS 60000L
#define MAILNET_DEFAULT_MAX 100u
/* A larger message stops the poll with an error instead of exhausting memory. */
#define MAILNET_MAX_OUTPUT ((size_t)64 << 20)
#define MAILNET_MAX_REPLY 512

/* A broken invariant (the owner's misuse) aborts, as the host's sb_assert does. */
#define MAILNET_ASSERT(e)                                                                \
    do {                                                                                 \
        if (!(e)) {                                                                      \
            fprintf(stderr, "mailnet: assertion \"%s\" failed at %s:%d\n", #e, __FILE__, \
                    __LINE__);                                                           \
            abort();                                                                     \
        }                                                                                \
    } while (0)

typedef struct mailnet_job mailnet_job_t;

/*
 * What relays and polls share: one easy handle, and the links of n's list
 * of jobs, which is how sb_mailnet_close finds what to cancel.
 */
struct mailnet_job {
    mailnet_job_t *next, *prev;
    sb_mailnet_t *n;
    CURL *easy;
    int in_multi;
    GString *reply;   /* the server's last response line */
    GString *refusal; /* its last refusal (4xx/5xx, NO, BAD, BYE) */
    char error[CURL_ERROR_SIZE];
    /* The transfer ended and was removed from the multi handle. */
    void (*finish)(mailnet_job_t *j, CURLcode rc);
    /* sb_mailnet_close: call back with the shutdown result and free. */
    void (*cancel)(mailnet_job_t *j);
};

typedef struct mailnet_sock {
    uv_poll_t poll; /* first: a handle's address is its context's */
    struct mailnet_sock *next, *prev;
    sb_mailnet_t *n;
    curl_socket_t fd;
} mailnet_sock_t;

struct sb_mailnet {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    int handles_open; /* the timer and the socket polls */
    int closing;
    mailnet_job_t *jobs;
    mailnet_sock_t *socks;
};

/* ======================== jobs ======================== */

/*
 * Whether a response line refuses: an SMTP 4xx or 5xx, an IMAP NO, BAD or
 * BYE.  libcurl may say QUIT or LOGOUT after a failure, so the reply that
 * explains it is kept apart from the last line.
 */
static int mailnet_line_refuses(const char *s)
{
    if ((s[0] == '4' || s[0] == '5') && g_ascii_isdigit(s[1]) && g_ascii_isdigit(s[2]))
        return 1;
    const char *sp = strchr(s, ' ');
    if (sp == NULL)
        return 0;
    sp++;
    return g_ascii_strncasecmp(sp, "NO ", 3) == 0 || g_ascii_strncasecmp(sp, "BAD ", 4) == 0 ||
           (s[0] == '*' && g_ascii_strncasecmp(sp, "BYE ", 4) == 0 && !strstr(sp, "Logging out"));
}

static size_t mailnet_header_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    mailnet_job_t *j = userdata;
    size_t len = size * nmemb;
    size_t keep = len;

    while (keep > 0 && (ptr[keep - 1] == '\r' || ptr[keep - 1] == '\n'))
        keep--;
    if (keep == 0)
        return len;
    if (keep > MAILNET_MAX_REPLY)
        keep = MAILNET_MAX_REPLY;
    g_string_truncate(j->reply, 0);
    g_string_append_len(j->reply, ptr, (gssize)keep);
    if (mailnet_line_refuses(j->reply->str))
        g_string_assign(j->refusal, j->reply->str);
    return len;
}

static void mailnet_job_init(mailnet_job_t *j, sb_mailnet_t *n, long timeout_ms)
{
    long timeout = timeout_ms > 0 ? timeout_ms : MAILNET_DEFAULT_TIMEOUT_MS;

    j->n = n;
    j->reply = g_string_new(NULL);
    j->refusal = g_string_new(NULL);
    j->easy = curl_easy_init();
    if (j->easy == NULL)
        abort(); /* only out of memory: as the host's allocator, the worker restarts */
    CURL *e = j->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->error);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, mailnet_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, MAILNET_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout); /* a poll's: per step */
    /* Also bounds the wait for each reply, and for LOGOUT/QUIT. */
    curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, (timeout + 999) / 1000);

    j->next = n->jobs;
    if (n->jobs)
        n->jobs->prev = j;
    n->jobs = j;
}

/* Leaves n's list; the job is no longer cancelled by sb_mailnet_close. */
static void mailnet_job_unlink(mailnet_job_t *j)
{
    sb_mailnet_t *n = j->n;
    if (j->prev)
        j->prev->next = j->next;
    else if (n->jobs == j)
        n->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

static void mailnet_job_clean(mailnet_job_t *j)
{
    curl_easy_cleanup(j->easy);
    g_string_free(j->reply, TRUE);
    g_string_free(j->refusal, TRUE);
}

static int mailnet_job_start(mailnet_job_t *j)
{
    j->error[0] = '\0';
    g_string_truncate(j->reply, 0);
    g_string_truncate(j->refusal, 0);
    if (curl_multi_add_handle(j->n->multi, j->easy) != CURLM_OK)
        return SB_ENOMEM;
    j->in_multi = 1;
    return 0;
}

/* The server's refusal, else its last line, without an IMAP tag; or "". */
static const char *mailnet_job_said(const mailnet_job_t *j)
{
    const char *s = j->refusal->len ? j->refusal->str : j->reply->str;
    const char *sp = strchr(s, ' ');
    if (sp && s[0] != '*' && !g_ascii_isdigit(s[0]))
        return sp + 1; /* "A003 NO ..." (SMTP replies start with their code) */
    return s;
}

/* Why a transfer failed, for a log: libcurl's words and the server's. Freed by the caller. */
static char *mailnet_job_describe(const mailnet_job_t *j, CURLcode rc)
{
    const char *what = j->error[0] ? j->error : curl_easy_strerror(rc);
    const char *said = mailnet_job_said(j);
    if (*said)
        return g_strdup_printf("%s (the server said \"%s\")", what, said);
    return g_strdup(what);
}

/* ======================== libcurl on the loop ======================== */

static void mailnet_free(sb_mailnet_t *n)
{
    g_free(n);
    curl_global_cleanup();
}

static void mailnet_handle_closed(uv_handle_t *h)
{
    sb_mailnet_t *n = h->data;
    if (h->type == UV_POLL)
        g_free(h); /* the mailnet_sock_t */
    if (--n->handles_open == 0 && n->closing)
        mailnet_free(n);
}

/* Hands finished transfers to their jobs; stops if a callback closed n. */
static void mailnet_collect(sb_mailnet_t *n)
{
    CURLMsg *msg;
    int left;
    while (!n->closing && (msg = curl_multi_info_read(n->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        mailnet_job_t *j = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&j);
        curl_multi_remove_handle(n->multi, easy);
        j->in_multi = 0;
        j->finish(j, rc);
    }
}

static void mailnet_poll_cb(uv_poll_t *p, int status, int events)
{
    mailnet_sock_t *s = (mailnet_sock_t *)p;
    sb_mailnet_t *n = s->n;
    int flags = 0, running;
    if (status < 0)
        flags |= CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(n->multi, s->fd, flags, &running);
    mailnet_collect(n);
}

static void mailnet_sock_forget(mailnet_sock_t *s)
{
    sb_mailnet_t *n = s->n;
    if (s->prev)
        s->prev->next = s->next;
    else
        n->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, mailnet_handle_closed);
}

static mailnet_sock_t *mailnet_sock_new(sb_mailnet_t *n, curl_socket_t fd)
{
    mailnet_sock_t *s = g_new0(mailnet_sock_t, 1);
    if (uv_poll_init_socket(n->loop, &s->poll, fd) != 0) {
        g_free(s);
        return NULL;
    }
    s->n = n;
    s->fd = fd;
    s->poll.data = n;
    s->next = n->socks;
    if (n->socks)
        n->socks->prev = s;
    n->socks = s;
    n->handles_open++;
    curl_multi_assign(n->multi, fd, s);
    return s;
}

/* CURLMOPT_SOCKETFUNCTION: libcurl says what to watch on fd. */
static int mailnet_socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    sb_mailnet_t *n = userp;
    mailnet_sock_t *s = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s == NULL)
            return 0;
        mailnet_sock_forget(s);
        /* During curl_multi_cleanup the socket's entry is already gone. */
        if (!n->closing)
            curl_multi_assign(n->multi, fd, NULL);
        return 0;
    }
    if (s == NULL && (s = mailnet_sock_new(n, fd)) == NULL)
        return -1;
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, mailnet_poll_cb);
    return 0;
}

static void mailnet_timer_cb(uv_timer_t *t)
{
    sb_mailnet_t *n = t->data;
    int running;
    curl_multi_socket_action(n->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    mailnet_collect(n);
}

/*
 * CURLMOPT_TIMERFUNCTION.  Even a 0 ms timeout goes through the loop, so
 * that no transfer finishes (and calls back) inside the call that added it.
 */
static int mailnet_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    sb_mailnet_t *n = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&n->timer);
    else
        uv_timer_start(&n->timer, mailnet_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

int sb_mailnet_open(uv_loop_t *loop, sb_mailnet_t **out)
{
    if (loop == NULL || out == NULL)
        return SB_EINVAL;
    /* Reference-counted by libcurl; balanced in mailnet_free. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return SB_ENOMEM;
    sb_mailnet_t *n = g_new0(sb_mailnet_t, 1);
    n->loop = loop;
    n->multi = curl_multi_init();
    if (n->multi == NULL) {
        mailnet_free(n);
        return SB_ENOMEM;
    }
    curl_multi_setopt(n->multi, CURLMOPT_SOCKETFUNCTION, mailnet_socket_fn);
    curl_multi_setopt(n->multi, CURLMOPT_SOCKETDATA, n);
    curl_multi_setopt(n->multi, CURLMOPT_TIMERFUNCTION, mailnet_timer_fn);
    curl_multi_setopt(n->multi, CURLMOPT_TIMERDATA, n);
    uv_timer_init(loop, &n->timer);
    n->timer.data = n;
    n->handles_open = 1;
    *out = n;
    return 0;
}

/* Ends a transfer's TCP connection; other sockets (a resolver's) are left alone. */
static void mailnet_sock_shut(curl_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
        shutdown(fd, SHUT_RDWR);
}

void sb_mailnet_close(sb_mailnet_t *n)
{
    if (n == NULL || n->closing)
        return;
    n->closing = 1;
    /*
     * libcurl (7.88) waits, blocking, for the server's reply when an SMTP
     * or IMAP transfer is removed in the middle of a command (up to the
     * transfer's timeout, if the server never answers).  With the
     * transfers' connections shut down first, that wait ends at once.
     */
    for (mailnet_sock_t *s = n->socks; s; s = s->next)
        mailnet_sock_shut(s->fd);
    /* Each cancel unlinks its job; callbacks cannot add jobs any more. */
    while (n->jobs) {
        mailnet_job_t *j = n->jobs;
        if (j->in_multi) {
            curl_multi_remove_handle(n->multi, j->easy);
            j->in_multi = 0;
        }
        j->cancel(j);
    }
    curl_multi_cleanup(n->multi);
    n->multi = NULL;
    /* Sockets of cached connections that libcurl did not report removed. */
    while (n->socks)
        mailnet_sock_forget(n->socks);
    uv_timer_stop(&n->timer);
    uv_close((uv_handle_t *)&n->timer, mailnet_handle_closed);
}

/* ======================== SMTP relay ======================== */

typedef struct relay {
    mailnet_job_t job; /* first */
    struct curl_slist *rcpts;
    char *from;
    char *msg;
    size_t len, off;
    sb_relay_cb cb;
    void *data;
} relay_t;

static size_t relay_read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    relay_t *r = userdata;
    size_t room = size * nitems;
    size_t n = r->len - r->off < room ? r->len - r->off : room;
    if (n > 0)
        memcpy(buf, r->msg + r->off, n);
    r->off += n;
    return n;
}

static void relay_free(relay_t *r)
{
    mailnet_job_clean(&r->job);
    curl_slist_free_all(r->rcpts);
    g_free(r->from);
    g_free(r->msg);
    g_free(r);
}

/*
 * SB_SENT, SB_RETRY or SB_FAILED.  The reply code decides when the relay
 * answered 4xx or 5xx; otherwise the relay could not be reached or spoke
 * nonsense, which may pass, except for a URL that can never work.
 */
static int relay_classify(CURLcode rc, long code)
{
    if (rc == CURLE_OK)
        return SB_SENT;
    if (code >= 500 && code <= 599)
        return SB_FAILED;
    if (code >= 400 && code <= 499)
        return SB_RETRY;
    if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT)
        return SB_FAILED;
    return SB_RETRY;
}

static void relay_finish(mailnet_job_t *j, CURLcode rc)
{
    relay_t *r = (relay_t *)j;
    long code = 0;
    char *detail;

    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    int result = relay_classify(rc, code);
    if (rc == CURLE_OK && j->reply->len)
        detail = g_strdup(j->reply->str);
    else if (rc != CURLE_OK && code >= 400 && j->refusal->len)
        detail = g_strdup(j->refusal->str);
    else
        detail = mailnet_job_describe(j, rc);
    mailnet_job_unlink(j);
    r->cb(result, detail, r->data);
    g_free(detail);
    relay_free(r);
}

static void relay_cancel(mailnet_job_t *j)
{
    relay_t *r = (relay_t *)j;
    mailnet_job_unlink(j);
    r->cb(SB_RETRY, "shutting down", r->data);
    relay_free(r);
}

/* An address for MAIL FROM or RCPT TO: nothing that could end the command. */
static int relay_address_ok(const char *a)
{
    return a != NULL && strpbrk(a, "\r\n<>") == NULL;
}

static int relay_check(const sb_mailnet_t *n, const sb_relay_t *r, const char *from,
                       const char *const *rcpts)
{
    if (n == NULL || n->closing || r == NULL || r->url == NULL || rcpts == NULL || rcpts[0] == NULL)
        return SB_EINVAL;
    if (g_ascii_strncasecmp(r->url, "smtp://", 7) != 0 &&
        g_ascii_strncasecmp(r->url, "smtps://", 8) != 0)
        return SB_EINVAL;
    if (!relay_address_ok(from))
        return SB_EINVAL;
    for (const char *const *a = rcpts; *a; a++)
        if (!relay_address_ok(*a) || **a == '\0')
            return SB_EINVAL;
    return 0;
}

int sb_relay_send(sb_mailnet_t *n, const sb_relay_t *r, const char *from, const char *const *rcpts,
                  const char *msg, size_t len, sb_relay_cb cb, void *data)
{
    if (cb == NULL || (msg == NULL && len > 0) || relay_check(n, r, from, rcpts) != 0)
        return SB_EINVAL;
    relay_t *t = g_new0(relay_t, 1);
    mailnet_job_init(&t->job, n, r->timeout_ms);
    t->job.finish = relay_finish;
    t->job.cancel = relay_cancel;
    t->cb = cb;
    t->data = data;
    t->msg = g_memdup2(msg ? msg : "", len);
    t->len = len;
    t->from = g_strdup_printf("<%s>", from);
    for (const char *const *a = rcpts; *a; a++) {
        char *rcpt = g_strdup_printf("<%s>", *a);
        t->rcpts = curl_slist_append(t->rcpts, rcpt);
        g_free(rcpt);
    }

    CURL *e = t->job.easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, t->from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, t->rcpts);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, relay_read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, t);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    if (r->username) {
        curl_easy_setopt(e, CURLOPT_USERNAME, r->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, r->password ? r->password : "");
    }
    if (g_ascii_strncasecmp(r->url, "smtp://", 7) == 0 && r->starttls > 0)
        curl_easy_setopt(e, CURLOPT_USE_SSL,
                         (long)(r->starttls >= 2 ? CURLUSESSL_ALL : CURLUSESSL_TRY));
    int rc = mailnet_job_start(&t->job);
    if (rc != 0) {
        mailnet_job_unlink(&t->job);
        relay_free(t);
    }
    return rc;
}

/* ======================== IMAP ======================== */

typedef enum imap_after {
    IMAP_AFTER_SEEN,
    IMAP_AFTER_NONE,
    IMAP_AFTER_DELETE,
    IMAP_AFTER_MOVE,
} imap_after_t;

/* Where a poll is; each step but STORED is one transfer. */
typedef enum imap_step {
    IMAP_SELECT,  /* learn the mailbox's UIDVALIDITY */
    IMAP_LIST,    /* UIDs above last_uid, with their flags */
    IMAP_FETCH,   /* the current message */
    IMAP_STORED,  /* waiting for sb_imap_stored */
    IMAP_UNSEEN,  /* take back the \Seen that fetching set */
    IMAP_SEEN,    /* after "seen" */
    IMAP_DELETED, /* after "delete", or a copy in place of MOVE */
    IMAP_UID_EXPUNGE,
    IMAP_EXPUNGE, /* servers without UIDPLUS */
    IMAP_MOVE,
    IMAP_CREATE, /* MOVE said TRYCREATE */
    IMAP_COPY,   /* servers without MOVE */
} imap_step_t;

typedef struct imap_msg {
    uint32_t uid;
    int seen;     /* \Seen before the poll fetched it */
    guint64 size; /* RFC822.SIZE, 0 when the server did not say */
} imap_msg_t;

struct sb_imap_poll {
    mailnet_job_t job; /* first */
    char *box_url;     /* "imap://host:port/<escaped mailbox>" */
    char *root_url;    /* "imap://host:port/" */
    char *box;         /* the mailbox, an IMAP quoted string */
    char *move_to;     /* quoted too */
    imap_after_t after;
    uint32_t uidvalidity, last_uid;
    unsigned max;
    imap_step_t step;
    GString *out; /* the step's output: untagged lines, or a message */
    GArray *msgs; /* imap_msg_t, ascending */
    guint cur;    /* index in msgs */
    int not_stored;
    int created;
    sb_imap_message_cb on_message;
    sb_imap_done_cb done;
    void *data;
};

static void poll_fetch(sb_imap_poll_t *p);
static void poll_after(sb_imap_poll_t *p);

static void poll_free(sb_imap_poll_t *p)
{
    mailnet_job_clean(&p->job);
    g_free(p->box_url);
    g_free(p->root_url);
    g_free(p->box);
    g_free(p->move_to);
    g_string_free(p->out, TRUE);
    g_array_free(p->msgs, TRUE);
    g_free(p);
}

static void poll_finish(sb_imap_poll_t *p, int rc, const char *error)
{
    mailnet_job_unlink(&p->job);
    p->done(rc, p->uidvalidity, p->last_uid, error, p->data);
    poll_free(p);
}

static void poll_cancel(mailnet_job_t *j)
{
    poll_finish((sb_imap_poll_t *)j, SB_ECLOSED, "shutting down");
}

static imap_msg_t *poll_current(sb_imap_poll_t *p)
{
    return &g_array_index(p->msgs, imap_msg_t, p->cur);
}

/* The owner could not store the current message: it is fetched again next time. */
static void poll_not_stored(sb_imap_poll_t *p)
{
    char *error =
        g_strdup_printf("message UID %" G_GUINT32_FORMAT " was not stored", poll_current(p)->uid);
    mailnet_job_unlink(&p->job);
    p->done(SB_EUNAVAILABLE, p->uidvalidity, p->last_uid, error, p->data);
    g_free(error);
    poll_free(p);
}

/* A transfer failed: the server is unreachable or refused; stop with why. */
static void poll_fail(sb_imap_poll_t *p, int rc, CURLcode crc, const char *doing)
{
    char *why = mailnet_job_describe(&p->job, crc);
    char *error = g_strdup_printf("%s: %s", doing, why);
    g_free(why);
    mailnet_job_unlink(&p->job);
    p->done(rc, p->uidvalidity, p->last_uid, error, p->data);
    g_free(error);
    poll_free(p);
}

/*
 * Starts one step: a custom command (fmt) on url, or with fmt NULL the
 * plain transfer url names (a message fetch).
 */
G_GNUC_PRINTF(4, 5)
static void poll_command(sb_imap_poll_t *p, imap_step_t step, const char *url, const char *fmt, ...)
{
    char *cmd = NULL;
    if (p->job.n->closing) {
        poll_finish(p, SB_ECLOSED, "shutting down");
        return;
    }
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        cmd = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    p->step = step;
    g_string_truncate(p->out, 0);
    curl_easy_setopt(p->job.easy, CURLOPT_URL, url);
    curl_easy_setopt(p->job.easy, CURLOPT_CUSTOMREQUEST, cmd); /* copied */
    g_free(cmd);
    if (mailnet_job_start(&p->job) != 0)
        poll_finish(p, SB_EIO, "could not start an IMAP transfer");
}

static size_t poll_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sb_imap_poll_t *p = userdata;
    size_t len = size * nmemb;
    if (p->out->len + len > MAILNET_MAX_OUTPUT)
        return 0; /* fails the transfer with CURLE_WRITE_ERROR */
    g_string_append_len(p->out, ptr, (gssize)len);
    return len;
}

/* ---------- parsing the untagged responses ---------- */

/* The UIDVALIDITY in "* OK [UIDVALIDITY n] ..." among the SELECT's lines, or 0. */
static uint32_t imap_parse_uidvalidity(const char *out)
{
    static const char key[] = "* OK [UIDVALIDITY ";
    for (const char *line = out; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (g_ascii_strncasecmp(line, key, sizeof(key) - 1) != 0)
            continue;
        char *end;
        guint64 v = g_ascii_strtoull(line + sizeof(key) - 1, &end, 10);
        if (*end == ']' && v > 0 && v <= UINT32_MAX)
            return (uint32_t)v;
    }
    return 0;
}

static int imap_flags_have(const char *s, const char *end, const char *flag)
{
    size_t len = strlen(flag);
    while (s < end) {
        while (s < end && *s == ' ')
            s++;
        const char *t = s;
        while (t < end && *t != ' ')
            t++;
        if ((size_t)(t - s) == len && g_ascii_strncasecmp(s, flag, len) == 0)
            return 1;
        s = t;
    }
    return 0;
}

/* Skips one FETCH item value: an atom, number or parenthesised list. */
static const char *imap_skip_value(const char *s)
{
    int depth = 0;
    for (; *s && *s != '\r' && *s != '\n'; s++) {
        if (*s == '(')
            depth++;
        else if (*s == ')' && depth-- == 0)
            return s;
        else if (*s == ' ' && depth == 0)
            return s;
    }
    return s;
}

/* "* 3 FETCH (UID 7 FLAGS (\Seen))" into m; 0 for any other line. */
static int imap_parse_fetch(const char *s, imap_msg_t *m)
{
    if (strncmp(s, "* ", 2) != 0 || !g_ascii_isdigit(s[2]))
        return 0;
    s += 2;
    while (g_ascii_isdigit(*s))
        s++;
    if (g_ascii_strncasecmp(s, " FETCH (", 8) != 0)
        return 0;
    s += 8;
    m->uid = 0;
    m->seen = 0;
    m->size = 0;
    while (*s && *s != ')' && *s != '\r' && *s != '\n') {
        if (*s == ' ') {
            s++;
        } else if (g_ascii_strncasecmp(s, "UID ", 4) == 0) {
            char *end;
            guint64 v = g_ascii_strtoull(s + 4, &end, 10);
            if (end == s + 4 || v == 0 || v > UINT32_MAX)
                return 0;
            m->uid = (uint32_t)v;
            s = end;
        } else if (g_ascii_strncasecmp(s, "RFC822.SIZE ", 12) == 0) {
            char *end;
            m->size = g_ascii_strtoull(s + 12, &end, 10);
            s = end;
        } else if (g_ascii_strncasecmp(s, "FLAGS (", 7) == 0) {
            const char *close = strchr(s + 7, ')');
            if (close == NULL)
                return 0;
            m->seen = imap_flags_have(s + 7, close, "\\Seen");
            s = close + 1;
        } else {
            s = imap_skip_value(s); /* an item's name, then its value */
            if (*s == ' ')
                s = imap_skip_value(s + 1);
        }
    }
    return m->uid != 0;
}

static gint imap_msg_cmp(gconstpointer a, gconstpointer b)
{
    uint32_t x = ((const imap_msg_t *)a)->uid, y = ((const imap_msg_t *)b)->uid;
    return x < y ? -1 : x > y;
}

/*
 * The messages above last_uid, ascending, at most max.  "n:*" always
 * includes the highest UID even when it is below n, and servers may send
 * unsolicited FETCH lines, so the list is filtered and deduplicated.
 */
static void poll_parse_list(sb_imap_poll_t *p)
{
    imap_msg_t m;
    for (const char *line = p->out->str; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (imap_parse_fetch(line, &m) && m.uid > p->last_uid)
            g_array_append_val(p->msgs, m);
    }
    g_array_sort(p->msgs, imap_msg_cmp);
    guint kept = 0;
    for (guint i = 0; i < p->msgs->len; i++) {
        imap_msg_t *a = &g_array_index(p->msgs, imap_msg_t, i);
        if (kept > 0 && g_array_index(p->msgs, imap_msg_t, kept - 1).uid == a->uid)
            continue;
        g_array_index(p->msgs, imap_msg_t, kept++) = *a;
    }
    g_array_set_size(p->msgs, kept < p->max ? kept : p->max);
}

/* ---------- the steps ---------- */

static void poll_selected(sb_imap_poll_t *p, CURLcode rc)
{
    if (rc != CURLE_OK) {
        poll_fail(p, SB_EUNAVAILABLE, rc, "could not select the mailbox");
        return;
    }
    uint32_t v = imap_parse_uidvalidity(p->out->str);
    if (v == 0) {
        poll_finish(p, SB_EIO, "the server did not say the mailbox's UIDVALIDITY");
        return;
    }
    if (v != p->uidvalidity) {
        /* Another mailbox, or the UIDs were renumbered: everything is new. */
        p->uidvalidity = v;
        p->last_uid = 0;
    }
    if (p->last_uid == UINT32_MAX) {
        poll_finish(p, 0, NULL);
        return;
    }
    poll_command(p, IMAP_LIST, p->box_url,
                 "UID FETCH %" G_GUINT32_FORMAT ":* (UID FLAGS RFC822.SIZE)", p->last_uid + 1);
}

static void poll_listed(sb_imap_poll_t *p, CURLcode rc)
{
    if (rc != CURLE_OK) {
        poll_fail(p, SB_EUNAVAILABLE, rc, "could not list the new messages");
        return;
    }
    poll_parse_list(p);
    if (p->msgs->len == 0) {
        poll_finish(p, 0, NULL);
        return;
    }
    p->cur = 0;
    poll_fetch(p);
}

static void poll_next(sb_imap_poll_t *p)
{
    if (++p->cur >= p->msgs->len) {
        poll_finish(p, 0, NULL);
        return;
    }
    poll_fetch(p);
}

static void poll_fetch(sb_imap_poll_t *p)
{
    imap_msg_t *m = poll_current(p);
    /* Too large to fetch: the owner hears of it (raw NULL) instead of the
     * mailbox stopping at it for ever. */
    if (m->size > MAILNET_MAX_OUTPUT) {
        p->step = IMAP_STORED;
        p->on_message(p, m->uid, NULL, (size_t)m->size, p->data);
        return;
    }
    char *url = g_strdup_printf("%s;UIDVALIDITY=%" G_GUINT32_FORMAT "/;UID=%" G_GUINT32_FORMAT,
                                p->box_url, p->uidvalidity, poll_current(p)->uid);
    poll_command(p, IMAP_FETCH, url, NULL);
    g_free(url);
}

static void poll_fetched(sb_imap_poll_t *p, CURLcode rc)
{
    imap_msg_t *m = poll_current(p);
    if (rc == CURLE_REMOTE_FILE_NOT_FOUND) {
        /*
         * The message was expunged since the list (or the UIDVALIDITY
         * changed, and the next poll starts over anyway): UIDs are never
         * reused, so there is nothing left to fetch under this one.
         */
        p->last_uid = m->uid;
        poll_next(p);
        return;
    }
    if (rc == CURLE_WRITE_ERROR) {
        poll_finish(p, SB_EIO, "a message is larger than 64 MiB");
        return;
    }
    if (rc != CURLE_OK) {
        poll_fail(p, SB_EUNAVAILABLE, rc, "could not fetch a message");
        return;
    }
    p->step = IMAP_STORED;
    /* The owner may call sb_imap_stored, or even close n, inside: p is not touched after. */
    p->on_message(p, m->uid, p->out->str, p->out->len, p->data);
}

void sb_imap_stored(sb_imap_poll_t *p, int rc)
{
    MAILNET_ASSERT(p != NULL && p->step == IMAP_STORED); /* once per on_message */
    imap_msg_t *m = poll_current(p);
    g_string_truncate(p->out, 0); /* the message was borrowed until now */
    if (rc != 0) {
        p->not_stored = 1;
        if (!m->seen) {
            poll_command(p, IMAP_UNSEEN, p->box_url,
                         "UID STORE %" G_GUINT32_FORMAT " -FLAGS.SILENT (\\Seen)", m->uid);
            return;
        }
        poll_not_stored(p);
        return;
    }
    p->last_uid = m->uid;
    poll_after(p);
}

/* The stored message is marked or moved as the account says. */
static void poll_after(sb_imap_poll_t *p)
{
    imap_msg_t *m = poll_current(p);
    switch (p->after) {
    case IMAP_AFTER_SEEN:
        poll_command(p, IMAP_SEEN, p->box_url,
                     "UID STORE %" G_GUINT32_FORMAT " +FLAGS.SILENT (\\Seen)", m->uid);
        return;
    case IMAP_AFTER_DELETE:
        poll_command(p, IMAP_DELETED, p->box_url,
                     "UID STORE %" G_GUINT32_FORMAT " +FLAGS.SILENT (\\Deleted)", m->uid);
        return;
    case IMAP_AFTER_NONE:
    case IMAP_AFTER_MOVE:
        if (!m->seen) {
            poll_command(p, IMAP_UNSEEN, p->box_url,
                         "UID STORE %" G_GUINT32_FORMAT " -FLAGS.SILENT (\\Seen)", m->uid);
            return;
        }
        if (p->after == IMAP_AFTER_MOVE) {
            poll_command(p, IMAP_MOVE, p->box_url, "UID MOVE %" G_GUINT32_FORMAT " %s", m->uid,
                         p->move_to);
            return;
        }
        poll_next(p);
        return;
    }
}

/*
 * A marking step ended.  The message is stored and last_uid is past it,
 * so a failure here stops the poll with SB_EIO but never refetches it.
 */
static void poll_marked(sb_imap_poll_t *p, CURLcode rc)
{
    uint32_t uid = poll_current(p)->uid;
    int ok = rc == CURLE_OK;

    switch (p->step) {
    case IMAP_UNSEEN:
        if (p->not_stored) {
            poll_not_stored(p);
            return;
        }
        if (ok && p->after == IMAP_AFTER_MOVE) {
            poll_command(p, IMAP_MOVE, p->box_url, "UID MOVE %" G_GUINT32_FORMAT " %s", uid,
                         p->move_to);
            return;
        }
        break;
    case IMAP_DELETED:
        if (ok) {
            poll_command(p, IMAP_UID_EXPUNGE, p->box_url, "UID EXPUNGE %" G_GUINT32_FORMAT, uid);
            return;
        }
        break;
    case IMAP_UID_EXPUNGE:
        if (!ok) {
            /* No UIDPLUS: this also expunges others already flagged \Deleted. */
            poll_command(p, IMAP_EXPUNGE, p->box_url, "EXPUNGE");
            return;
        }
        break;
    case IMAP_MOVE:
        if (!ok && !p->created && strstr(p->job.refusal->str, "[TRYCREATE]")) {
            p->created = 1;
            poll_command(p, IMAP_CREATE, p->box_url, "CREATE %s", p->move_to);
            return;
        }
        if (!ok) {
            poll_command(p, IMAP_COPY, p->box_url, "UID COPY %" G_GUINT32_FORMAT " %s", uid,
                         p->move_to);
            return;
        }
        break;
    case IMAP_CREATE:
        if (ok) {
            poll_command(p, IMAP_MOVE, p->box_url, "UID MOVE %" G_GUINT32_FORMAT " %s", uid,
                         p->move_to);
            return;
        }
        break;
    case IMAP_COPY:
        if (ok) {
            poll_command(p, IMAP_DELETED, p->box_url,
                         "UID STORE %" G_GUINT32_FORMAT " +FLAGS.SILENT (\\Deleted)", uid);
            return;
        }
        break;
    default:
        break;
    }
    if (!ok) {
        poll_fail(p, SB_EIO, rc, "could not mark a stored message");
        return;
    }
    poll_next(p);
}

static void poll_transfer_done(mailnet_job_t *j, CURLcode rc)
{
    sb_imap_poll_t *p = (sb_imap_poll_t *)j;
    switch (p->step) {
    case IMAP_SELECT:
        poll_selected(p, rc);
        return;
    case IMAP_LIST:
        poll_listed(p, rc);
        return;
    case IMAP_FETCH:
        poll_fetched(p, rc);
        return;
    default:
        poll_marked(p, rc);
        return;
    }
}

/* ---------- accounts ---------- */

/* s as an IMAP quoted string, or NULL if it cannot be one (CR, LF, NUL). */
static char *imap_quote(const char *s)
{
    if (s == NULL || *s == '\0' || strpbrk(s, "\r\n"))
        return NULL;
    GString *q = g_string_new("\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            g_string_append_c(q, '\\');
        g_string_append_c(q, *s);
    }
    g_string_append_c(q, '"');
    return g_string_free(q, FALSE);
}

static int poll_set_after(sb_imap_poll_t *p, const char *after)
{
    if (after == NULL || *after == '\0' || strcmp(after, "seen") == 0)
        p->after = IMAP_AFTER_SEEN;
    else if (strcmp(after, "none") == 0)
        p->after = IMAP_AFTER_NONE;
    else if (strcmp(after, "delete") == 0)
        p->after = IMAP_AFTER_DELETE;
    else if (strncmp(after, "move:", 5) == 0 && (p->move_to = imap_quote(after + 5)) != NULL)
        p->after = IMAP_AFTER_MOVE;
    else
        return SB_EINVAL;
    return 0;
}

/*
 * Splits the account's URL into the server's root URL and the mailbox
 * ("INBOX" when the path is empty).  URL parameters (";UID=...") and
 * queries are not the account's to give.
 */
static int poll_set_url(sb_imap_poll_t *p, const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *path = NULL, *root = NULL, *box = NULL, *escaped = NULL;
    int rc = SB_EINVAL;

    if (u == NULL)
        return SB_ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "imap") != 0 && strcmp(scheme, "imaps") != 0) ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || strchr(path, ';') ||
        curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
        curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
        curl_url_set(u, CURLUPART_PATH, "/", 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &root, 0) != CURLUE_OK)
        goto out;
    const char *raw = path[0] == '/' ? path + 1 : path;
    size_t len = strlen(raw);
    if (len > 0 && raw[len - 1] == '/')
        len--;
    int boxlen = 0;
    box = curl_easy_unescape(p->job.easy, raw, (int)len, &boxlen);
    if (box == NULL || memchr(box, '\0', (size_t)boxlen))
        goto out;
    const char *name = *box ? box : "INBOX";
    escaped = curl_easy_escape(p->job.easy, name, 0);
    p->box = imap_quote(name);
    if (escaped == NULL || p->box == NULL)
        goto out;
    p->root_url = g_strdup(root);
    p->box_url = g_strconcat(root, escaped, NULL);
    rc = 0;
out:
    curl_free(escaped);
    curl_free(box);
    curl_free(root);
    curl_free(path);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

static int poll_setup(sb_imap_poll_t *p, const sb_imap_account_t *acct)
{
    int rc = poll_set_after(p, acct->after);
    if (rc == 0)
        rc = poll_set_url(p, acct->url);
    if (rc != 0)
        return rc;
    CURL *e = p->job.easy;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "imap,imaps");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, poll_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
    if (acct->username) {
        curl_easy_setopt(e, CURLOPT_USERNAME, acct->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, acct->password ? acct->password : "");
    }
    if (g_ascii_strncasecmp(acct->url, "imap://", 7) == 0)
        curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    return 0;
}

int sb_imap_poll(sb_mailnet_t *n, const sb_imap_account_t *acct, uint32_t uidvalidity,
                 uint32_t last_uid, unsigned max, sb_imap_message_cb on_message,
                 sb_imap_done_cb done, void *data)
{
    if (n == NULL || n->closing || acct == NULL || acct->url == NULL || on_message == NULL ||
        done == NULL)
        return SB_EINVAL;
    sb_imap_poll_t *p = g_new0(sb_imap_poll_t, 1);
    mailnet_job_init(&p->job, n, acct->timeout_ms);
    p->job.finish = poll_transfer_done;
    p->job.cancel = poll_cancel;
    p->out = g_string_new(NULL);
    p->msgs = g_array_new(FALSE, FALSE, sizeof(imap_msg_t));
    p->uidvalidity = uidvalidity;
    p->last_uid = last_uid;
    p->max = max ? max : MAILNET_DEFAULT_MAX;
    p->on_message = on_message;
    p->done = done;
    p->data = data;
    int rc = poll_setup(p, acct);
    if (rc == 0) {
        p->step = IMAP_SELECT;
        curl_easy_setopt(p->job.easy, CURLOPT_URL, p->root_url);
        char *cmd = g_strdup_printf("SELECT %s", p->box);
        curl_easy_setopt(p->job.easy, CURLOPT_CUSTOMREQUEST, cmd);
        g_free(cmd);
        rc = mailnet_job_start(&p->job);
    }
    if (rc != 0) {
        mailnet_job_unlink(&p->job);
        poll_free(p);
    }
    return rc;
}
