/*
 * smtpd.c - the email channel's inbound SMTP (RFC 5321) and LMTP (RFC 2033)
 * server on a libuv loop: the command grammar, the DATA phase with dot
 * unstuffing and a size cap, pipelining, and the per-connection limits.
 * It decides nothing about mail: recipients and messages go to the owner's
 * callbacks (smtpd.h), and the reply to DATA waits for the owner's results.
 * Not here: TLS, AUTH, MIME (mime.c) and outbound delivery (mailnet.c).
 */
#include <switchboard/plugin.h>

#include "smtpd.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

/* RFC 5321 4.5.3.1.4: a command line is at most 512 bytes, CRLF included. */
#define SMTPD_LINE_MAX 512
#define SMTPD_READ_SIZE 65536
/* Replies a client leaves unread; past this it is not reading at all. */
#define SMTPD_WRITE_QUEUE_MAX (1024 * 1024)
#define SMTPD_DEFAULT_MAX_SIZE ((size_t)25 * 1024 * 1024)
#define SMTPD_DEFAULT_MAX_RCPTS 100
#define SMTPD_DEFAULT_MAX_CLIENTS 200
#define SMTPD_DEFAULT_TIMEOUT_MS 300000
/* Protocol errors (500, 501, 503, 555) a session may make before it is
 * closed: a client that only sends garbage holds a slot for nothing. */
#define SMTPD_MAX_ERRORS 20

/* A broken invariant is the owner's bug (a result given twice): abort. */
#define SMTPD_ASSERT(e) ((e) ? (void)0 : smtpd_assert_fail(#e, __FILE__, __LINE__))

typedef struct smtpd_conn smtpd_conn_t;

struct sb_smtpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    char *hostname;
    int lmtp;
    int port;
    size_t max_size;
    unsigned max_rcpts;
    unsigned max_clients;
    unsigned timeout_ms;
    sb_smtpd_rcpt_cb rcpt;
    sb_smtpd_message_cb message;
    void *data;
    /* The listener handle plus every connection not yet freed. */
    int refs;
    unsigned nclients; /* connections holding a max_clients slot */
    uint64_t next_id;
    smtpd_conn_t *conns;
    /* Shared by all connections: libuv fills it and calls on_read at once. */
    char rbuf[SMTPD_READ_SIZE];
};

struct smtpd_conn {
    sb_smtpd_t *srv;
    smtpd_conn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    /* One per open handle, plus one while a transaction waits for results. */
    int refs;
    unsigned writes;         /* uv_write requests not yet completed */
    unsigned errors;         /* protocol errors so far */
    unsigned counted : 1;    /* holds a max_clients slot */
    unsigned closing : 1;    /* uv_close called */
    unsigned quitting : 1;   /* no more input: close once the replies are out */
    unsigned reading : 1;    /* uv_read_start in effect */
    unsigned in_process : 1; /* conn_process is on the stack */
    unsigned greeted : 1;    /* HELO, EHLO or LHLO done */
    unsigned discarding : 1; /* inside an overlong command line */
    unsigned has_from : 1;
    unsigned in_data : 1;
    unsigned data_bol : 1;  /* next byte starts a line (the last one ended in CRLF) */
    unsigned data_cr : 1;   /* the last byte of data seen was CR */
    unsigned data_over : 1; /* over max_size: the rest is discarded */
    GByteArray *in;
    size_t in_pos; /* bytes of in already consumed */
    GString *out;  /* replies of this round, written at once */
    char *from;
    GPtrArray *rcpts;
    GByteArray *data;
    sb_smtpd_tx_t *tx;
};

struct sb_smtpd_tx {
    smtpd_conn_t *conn; /* holds a reference: valid even once closed */
    char *from;
    char **rcpts;
    size_t nrcpts;
    GByteArray *raw;
    int *rc;
    unsigned char *got;
    size_t ngot;
    size_t nreplied; /* LMTP: recipients answered, in order */
    char id[48];
};

typedef struct smtpd_write {
    uv_write_t req;
    char buf[];
} smtpd_write_t;

static void smtpd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "smtpd: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

static void conn_process(smtpd_conn_t *c);

/*===========================================================================
 * Lifetimes: the server and its connections are freed by reference count,
 * because handle close callbacks and late results both outlive the calls
 * that started them.
 *=========================================================================*/

static void smtpd_unref(sb_smtpd_t *s)
{
    if (--s->refs > 0)
        return;
    g_free(s->hostname);
    g_free(s);
}

static void conn_unref(smtpd_conn_t *c)
{
    sb_smtpd_t *s = c->srv;

    if (--c->refs > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g_byte_array_free(c->in, TRUE);
    g_string_free(c->out, TRUE);
    g_free(c->from);
    g_ptr_array_free(c->rcpts, TRUE);
    if (c->data)
        g_byte_array_free(c->data, TRUE);
    g_free(c);
    smtpd_unref(s);
}

static void conn_on_handle_close(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(smtpd_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->reading = 0;
    if (c->counted) {
        c->counted = 0;
        c->srv->nclients--;
    }
    g_string_truncate(c->out, 0);
    uv_close((uv_handle_t *)&c->tcp, conn_on_handle_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_handle_close);
}

static void envelope_reset(smtpd_conn_t *c)
{
    g_clear_pointer(&c->from, g_free);
    c->has_from = 0;
    g_ptr_array_set_size(c->rcpts, 0);
}

/*===========================================================================
 * Output: replies of one round are gathered in c->out and written at once,
 * which is what makes pipelined replies arrive in one segment.
 *=========================================================================*/

static void conn_reply(smtpd_conn_t *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void conn_quit(smtpd_conn_t *c);

static void conn_reply(smtpd_conn_t *c, const char *fmt, ...)
{
    va_list ap;

    if (c->closing)
        return;
    va_start(ap, fmt);
    g_string_append_vprintf(c->out, fmt, ap);
    va_end(ap);
    g_string_append(c->out, "\r\n");
    if (!c->quitting &&
        (strncmp(fmt, "500", 3) == 0 || strncmp(fmt, "501", 3) == 0 ||
         strncmp(fmt, "503", 3) == 0 || strncmp(fmt, "555", 3) == 0) &&
        ++c->errors >= SMTPD_MAX_ERRORS) {
        g_string_append(c->out, "421 4.7.0 Error: too many errors\r\n");
        conn_quit(c);
    }
}

static void conn_on_write(uv_write_t *req, int status)
{
    smtpd_conn_t *c = req->data;

    c->writes--;
    g_free(req);
    if (status < 0)
        conn_close(c);
    else if (c->quitting && c->writes == 0)
        conn_close(c);
}

static void conn_flush(smtpd_conn_t *c)
{
    smtpd_write_t *w;
    uv_buf_t buf;
    size_t len = c->out->len;

    if (c->closing)
        return;
    if (len > 0) {
        w = g_malloc(sizeof *w + len);
        memcpy(w->buf, c->out->str, len);
        g_string_truncate(c->out, 0);
        w->req.data = c;
        buf = uv_buf_init(w->buf, (unsigned)len);
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, conn_on_write) < 0) {
            g_free(w);
            conn_close(c);
            return;
        }
        c->writes++;
        /* A client that sends commands but never reads the replies. */
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > SMTPD_WRITE_QUEUE_MAX) {
            conn_close(c);
            return;
        }
    }
    if (c->quitting && c->writes == 0)
        conn_close(c);
}

/* No more input: the replies queued so far go out, then the connection closes. */
static void conn_quit(smtpd_conn_t *c)
{
    c->quitting = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uv_timer_stop(&c->timer);
}

/*===========================================================================
 * Transactions: one message handed to the owner, answered as its results
 * come in.  The connection reads nothing more until the reply is out, so
 * commands pipelined after DATA wait their turn.
 *=========================================================================*/

static void tx_free(sb_smtpd_tx_t *tx)
{
    g_free(tx->from);
    g_strfreev(tx->rcpts);
    g_byte_array_free(tx->raw, TRUE);
    g_free(tx->rc);
    g_free(tx->got);
    g_free(tx);
}

static void tx_reply_one(smtpd_conn_t *c, sb_smtpd_tx_t *tx, size_t i)
{
    const char *rcpt = tx->rcpts[i];

    switch (tx->rc[i]) {
    case 0:
        conn_reply(c, "250 2.0.0 <%s> Ok: queued as %s", rcpt, tx->id);
        break;
    case SB_EINVAL:
        conn_reply(c, "554 5.6.0 <%s> Error: message content rejected", rcpt);
        break;
    case SB_ENOENT:
        conn_reply(c, "550 5.1.1 <%s> Error: recipient unknown", rcpt);
        break;
    default:
        conn_reply(c, "451 4.3.0 <%s> Error: temporary failure, try again later", rcpt);
        break;
    }
}

/*
 * SMTP: one reply for the message.  A recipient that failed for now makes
 * it 451 whatever the others did: the client then sends again, the
 * recipients that stored it see a duplicate, and the one that failed gets
 * its copy.  A 5xx (the first permanent failure) only when no failure was
 * temporary, which a retry would not change.
 */
static void tx_reply_all(smtpd_conn_t *c, sb_smtpd_tx_t *tx)
{
    size_t permanent = tx->nrcpts;

    for (size_t i = 0; i < tx->nrcpts; i++) {
        if (tx->rc[i] == 0)
            continue;
        if (tx->rc[i] != SB_EINVAL && tx->rc[i] != SB_ENOENT) {
            conn_reply(c, "451 4.3.0 Error: temporary failure, try again later");
            return;
        }
        if (permanent == tx->nrcpts)
            permanent = i;
    }
    if (permanent == tx->nrcpts)
        conn_reply(c, "250 2.0.0 Ok: queued as %s", tx->id);
    else if (tx->rc[permanent] == SB_EINVAL)
        conn_reply(c, "554 5.6.0 Error: message content rejected");
    else
        conn_reply(c, "550 5.1.1 <%s> Error: recipient unknown", tx->rcpts[permanent]);
}

void sb_smtpd_result(sb_smtpd_tx_t *tx, size_t i, int rc)
{
    smtpd_conn_t *c = tx->conn;
    int live = !c->closing;

    SMTPD_ASSERT(i < tx->nrcpts && !tx->got[i]);
    tx->got[i] = 1;
    tx->rc[i] = rc;
    tx->ngot++;
    if (live && c->srv->lmtp) {
        /* Later recipients' results wait until the earlier ones are in. */
        for (; tx->nreplied < tx->nrcpts && tx->got[tx->nreplied]; tx->nreplied++)
            tx_reply_one(c, tx, tx->nreplied);
    }
    if (tx->ngot < tx->nrcpts) {
        if (live && !c->in_process)
            conn_flush(c);
        return;
    }
    if (live && !c->srv->lmtp)
        tx_reply_all(c, tx);
    c->tx = NULL;
    tx_free(tx);
    /* From inside the message callback conn_process simply goes on. */
    if (live && !c->in_process)
        conn_process(c);
    conn_unref(c);
}

static void tx_start(smtpd_conn_t *c)
{
    sb_smtpd_t *s = c->srv;
    sb_smtpd_tx_t *tx = g_new0(sb_smtpd_tx_t, 1);
    const char *raw;

    tx->conn = c;
    tx->from = c->from ? c->from : g_strdup("");
    c->from = NULL;
    c->has_from = 0;
    tx->nrcpts = c->rcpts->len;
    g_ptr_array_add(c->rcpts, NULL);
    tx->rcpts = (char **)g_ptr_array_free(c->rcpts, FALSE);
    c->rcpts = g_ptr_array_new_with_free_func(g_free);
    tx->raw = c->data;
    c->data = NULL;
    tx->rc = g_new0(int, tx->nrcpts);
    tx->got = g_new0(unsigned char, tx->nrcpts);
    snprintf(tx->id, sizeof tx->id, "%012" PRIX64 "%05X%04X", (uint64_t)g_get_real_time(),
             (unsigned)getpid() & 0xfffff, (unsigned)(s->next_id++ & 0xffff));
    c->tx = tx;
    c->refs++;
    raw = tx->raw->len > 0 ? (const char *)tx->raw->data : "";
    s->message(tx, tx->from, (const char *const *)tx->rcpts, tx->nrcpts, raw, tx->raw->len,
               s->data);
}

/*===========================================================================
 * DATA: lines until CRLF "." CRLF, dot-unstuffed, kept up to max_size.
 *
 * Only CRLF ends a line here.  A bare LF is kept as message content and
 * never starts a line, so "\n.\n" or "\n.\r\n" do not end the data: a relay
 * in front of us that passes them through as content would otherwise let a
 * sender smuggle a second message (SMTP smuggling, 2023).  Sloppy clients
 * that send bare LF only therefore time out; every real client sends CRLF.
 *=========================================================================*/

static void data_append(smtpd_conn_t *c, const guint8 *p, size_t n)
{
    if (c->data_over)
        return;
    if (c->data->len + n > c->srv->max_size) {
        /* Not buffered beyond the limit: the rest is read and dropped. */
        c->data_over = 1;
        g_byte_array_set_size(c->data, 0);
        return;
    }
    g_byte_array_append(c->data, p, (guint)n);
}

/* Consumes data from c->in; 1 once the terminating line was read. */
static int data_consume(smtpd_conn_t *c)
{
    while (c->in_pos < c->in->len) {
        const guint8 *p = c->in->data + c->in_pos;
        size_t avail = c->in->len - c->in_pos;
        const guint8 *lf;
        size_t n;

        if (c->data_bol && p[0] == '.') {
            if (avail >= 3 && p[1] == '\r' && p[2] == '\n') {
                c->in_pos += 3;
                return 1;
            }
            if (avail == 1 || (avail == 2 && p[1] == '\r'))
                return 0; /* maybe the end: wait for more */
            c->in_pos++;  /* a stuffed dot */
            c->data_bol = 0;
            c->data_cr = 0;
            continue;
        }
        lf = memchr(p, '\n', avail);
        n = lf ? (size_t)(lf - p) + 1 : avail;
        if (lf) {
            c->data_bol = n >= 2 ? p[n - 2] == '\r' : c->data_cr;
            c->data_cr = 0;
        } else {
            c->data_bol = 0;
            c->data_cr = p[n - 1] == '\r';
        }
        data_append(c, p, n);
        c->in_pos += n;
    }
    return 0;
}

static void data_end(smtpd_conn_t *c)
{
    c->in_data = 0;
    if (c->data_over) {
        conn_reply(c, "552 5.3.4 Error: message exceeds fixed maximum message size");
        g_clear_pointer(&c->data, g_byte_array_unref);
        envelope_reset(c);
        return;
    }
    tx_start(c);
}

/*===========================================================================
 * Commands.  Each handler gets the arguments after the verb, NUL-free and
 * without the line end, and queues exactly one reply.
 *=========================================================================*/

typedef void (*smtpd_cmd_fn)(smtpd_conn_t *c, char *arg);

static int addr_valid(const char *addr)
{
    for (const unsigned char *p = (const unsigned char *)addr; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    }
    return 1;
}

/*
 * Parses "FROM:<addr> params" (kw "FROM:") in place: *addr without the
 * brackets or a source route, *params the rest.  Tolerates a space after
 * the colon and an address without brackets.  Returns 0 or SB_ESYNTAX.
 */
static int path_parse(char *arg, const char *kw, char **addr, char **params)
{
    size_t kwlen = strlen(kw);
    char *p, *q;
    int quoted = 0;

    if (g_ascii_strncasecmp(arg, kw, kwlen) != 0)
        return SB_ESYNTAX;
    p = arg + kwlen;
    while (*p == ' ')
        p++;
    if (*p != '<') {
        /* A bare address, as some scripts send it. */
        q = p + strcspn(p, " ");
        if (q == p)
            return SB_ESYNTAX;
    } else {
        for (q = ++p; *q && (quoted || *q != '>'); q++) {
            if (*q == '\\' && q[1])
                q++;
            else if (*q == '"')
                quoted = !quoted;
        }
        if (*q != '>')
            return SB_ESYNTAX;
        *q++ = '\0';
        if (*q && *q != ' ')
            return SB_ESYNTAX;
    }
    if (*q)
        *q++ = '\0';
    /* RFC 5321 4.1.1.3: a source route is accepted and ignored. */
    if (*p == '@') {
        char *colon = strchr(p, ':');
        if (!colon)
            return SB_ESYNTAX;
        p = colon + 1;
    }
    if (!addr_valid(p))
        return SB_ESYNTAX;
    while (*q == ' ')
        q++;
    *addr = p;
    *params = q;
    return 0;
}

/* MAIL parameters (RFC 1870 SIZE, RFC 6152 BODY); 0 or a reply is queued. */
static int mail_params(smtpd_conn_t *c, char *params)
{
    char *save = NULL;

    for (char *tok = strtok_r(params, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        const char *val = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t)(eq - tok) : strlen(tok);

        if (klen == 4 && g_ascii_strncasecmp(tok, "SIZE", 4) == 0) {
            guint64 size;
            if (!g_ascii_string_to_unsigned(val, 10, 0, G_MAXUINT64, &size, NULL)) {
                conn_reply(c, "501 5.5.4 Error: bad SIZE parameter");
                return SB_ESYNTAX;
            }
            if (size > c->srv->max_size) {
                conn_reply(c, "552 5.3.4 Error: message exceeds fixed maximum message size");
                return SB_ETOOBIG;
            }
        } else if (klen == 4 && g_ascii_strncasecmp(tok, "BODY", 4) == 0) {
            if (g_ascii_strcasecmp(val, "8BITMIME") != 0 && g_ascii_strcasecmp(val, "7BIT") != 0) {
                conn_reply(c, "501 5.5.4 Error: bad BODY parameter");
                return SB_ESYNTAX;
            }
        } else {
            conn_reply(c, "555 5.5.4 Error: unsupported parameter");
            return SB_EINVAL;
        }
    }
    return 0;
}

static int conn_need_greeting(smtpd_conn_t *c)
{
    if (c->greeted)
        return 0;
    conn_reply(c, "503 5.5.1 Error: send %s first", c->srv->lmtp ? "LHLO" : "HELO/EHLO");
    return SB_EINVAL;
}

static void cmd_hello(smtpd_conn_t *c, char *arg, int extended)
{
    sb_smtpd_t *s = c->srv;

    if (!*arg) {
        conn_reply(c, "501 5.5.4 Syntax: %s hostname",
                   !extended ? "HELO"
                   : s->lmtp ? "LHLO"
                             : "EHLO");
        return;
    }
    /* RFC 5321 4.1.4: a new greeting resets the transaction. */
    envelope_reset(c);
    c->greeted = 1;
    if (!extended) {
        conn_reply(c, "250 %s", s->hostname);
        return;
    }
    conn_reply(c, "250-%s", s->hostname);
    conn_reply(c, "250-SIZE %zu", s->max_size);
    conn_reply(c, "250-8BITMIME");
    conn_reply(c, "250-PIPELINING");
    conn_reply(c, "250 ENHANCEDSTATUSCODES");
}

static void cmd_helo(smtpd_conn_t *c, char *arg)
{
    if (c->srv->lmtp) {
        conn_reply(c, "500 5.5.1 Error: use LHLO in LMTP");
        return;
    }
    cmd_hello(c, arg, 0);
}

static void cmd_ehlo(smtpd_conn_t *c, char *arg)
{
    if (c->srv->lmtp) {
        conn_reply(c, "500 5.5.1 Error: use LHLO in LMTP");
        return;
    }
    cmd_hello(c, arg, 1);
}

static void cmd_lhlo(smtpd_conn_t *c, char *arg)
{
    if (!c->srv->lmtp) {
        conn_reply(c, "500 5.5.2 Error: command not recognized");
        return;
    }
    cmd_hello(c, arg, 1);
}

static void cmd_mail(smtpd_conn_t *c, char *arg)
{
    char *addr, *params;

    if (conn_need_greeting(c) < 0)
        return;
    if (c->has_from) {
        conn_reply(c, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (path_parse(arg, "FROM:", &addr, &params) < 0) {
        conn_reply(c, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    if (mail_params(c, params) < 0)
        return;
    c->from = g_strdup(addr);
    c->has_from = 1;
    conn_reply(c, "250 2.1.0 Ok");
}

static void cmd_rcpt(smtpd_conn_t *c, char *arg)
{
    sb_smtpd_t *s = c->srv;
    char *addr, *params;
    int rc;

    if (conn_need_greeting(c) < 0)
        return;
    if (!c->has_from) {
        conn_reply(c, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (path_parse(arg, "TO:", &addr, &params) < 0) {
        conn_reply(c, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (!*addr) {
        conn_reply(c, "501 5.1.3 Error: bad recipient address syntax");
        return;
    }
    if (*params) {
        conn_reply(c, "555 5.5.4 Error: unsupported parameter");
        return;
    }
    if (c->rcpts->len >= s->max_rcpts) {
        conn_reply(c, "452 4.5.3 Error: too many recipients");
        return;
    }
    rc = s->rcpt(addr, s->data);
    if (rc == 0) {
        g_ptr_array_add(c->rcpts, g_strdup(addr));
        conn_reply(c, "250 2.1.5 Ok");
    } else if (rc == SB_ENOENT) {
        conn_reply(c, "550 5.1.1 <%s> Error: recipient unknown", addr);
    } else {
        conn_reply(c, "451 4.3.0 <%s> Error: temporary failure, try again later", addr);
    }
}

static void cmd_data(smtpd_conn_t *c, char *arg)
{
    if (conn_need_greeting(c) < 0)
        return;
    if (!c->has_from) {
        conn_reply(c, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (c->rcpts->len == 0) {
        conn_reply(c, "554 5.5.1 Error: no valid recipients");
        return;
    }
    if (*arg) {
        conn_reply(c, "501 5.5.4 Syntax: DATA");
        return;
    }
    c->in_data = 1;
    c->data_bol = 1;
    c->data_cr = 0;
    c->data_over = 0;
    c->data = g_byte_array_new();
    conn_reply(c, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(smtpd_conn_t *c, char *arg)
{
    envelope_reset(c);
    conn_reply(c, "250 2.0.0 Ok");
}

static void cmd_noop(smtpd_conn_t *c, char *arg)
{
    conn_reply(c, "250 2.0.0 Ok");
}

static void cmd_quit(smtpd_conn_t *c, char *arg)
{
    conn_reply(c, "221 2.0.0 Bye");
    conn_quit(c);
}

static void cmd_vrfy(smtpd_conn_t *c, char *arg)
{
    conn_reply(c, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(smtpd_conn_t *c, char *arg)
{
    conn_reply(c, "214 2.0.0 Commands: %s MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
               c->srv->lmtp ? "LHLO" : "HELO EHLO");
}

static const struct {
    const char *verb;
    smtpd_cmd_fn fn;
} smtpd_cmds[] = {
    {"HELO", cmd_helo}, {"EHLO", cmd_ehlo}, {"LHLO", cmd_lhlo}, {"MAIL", cmd_mail},
    {"RCPT", cmd_rcpt}, {"DATA", cmd_data}, {"RSET", cmd_rset}, {"NOOP", cmd_noop},
    {"QUIT", cmd_quit}, {"VRFY", cmd_vrfy}, {"HELP", cmd_help},
};

static void command_dispatch(smtpd_conn_t *c, char *line)
{
    size_t vlen = strcspn(line, " ");
    char *arg = line + vlen;

    while (*arg == ' ')
        arg++;
    for (size_t i = 0; i < G_N_ELEMENTS(smtpd_cmds); i++) {
        if (vlen == 4 && g_ascii_strncasecmp(line, smtpd_cmds[i].verb, 4) == 0) {
            smtpd_cmds[i].fn(c, arg);
            return;
        }
    }
    conn_reply(c, "500 5.5.2 Error: command not recognized");
}

/* Handles the next command line of c->in; 0 when none is complete yet. */
static int command_next(smtpd_conn_t *c)
{
    const guint8 *p = c->in->data + c->in_pos;
    size_t avail = c->in->len - c->in_pos;
    const guint8 *lf = memchr(p, '\n', avail);
    char line[SMTPD_LINE_MAX + 1];
    size_t len;

    if (!lf) {
        /* Dropped rather than kept: the reply comes with the line's end. */
        if (c->discarding || avail > SMTPD_LINE_MAX) {
            c->discarding = 1;
            c->in_pos += avail;
        }
        return 0;
    }
    len = (size_t)(lf - p) + 1;
    c->in_pos += len;
    if (c->discarding || len > SMTPD_LINE_MAX) {
        c->discarding = 0;
        conn_reply(c, "500 5.5.2 Error: line too long");
        return 1;
    }
    len--;
    if (len > 0 && p[len - 1] == '\r')
        len--;
    if (memchr(p, '\0', len)) {
        conn_reply(c, "500 5.5.2 Error: NUL byte in command");
        return 1;
    }
    memcpy(line, p, len);
    line[len] = '\0';
    command_dispatch(c, line);
    return 1;
}

/*===========================================================================
 * Connections: reading, the processing round, timers.
 *=========================================================================*/

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    smtpd_conn_t *c = h->data;

    *buf = uv_buf_init(c->srv->rbuf, sizeof c->srv->rbuf);
}

static void conn_on_timeout(uv_timer_t *t)
{
    smtpd_conn_t *c = t->data;

    conn_reply(c, "421 4.4.2 %s Error: timeout exceeded", c->srv->hostname);
    conn_quit(c);
    conn_flush(c);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    smtpd_conn_t *c = stream->data;

    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->closing || c->quitting)
        return;
    g_byte_array_append(c->in, (const guint8 *)buf->base, (guint)nread);
    conn_process(c);
}

/* Reads while no transaction waits, with the idle timer rearmed. */
static void conn_read_update(smtpd_conn_t *c)
{
    if (c->closing || c->quitting)
        return;
    if (c->tx) {
        if (c->reading)
            uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        uv_timer_stop(&c->timer);
        return;
    }
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) < 0) {
        conn_close(c);
        return;
    }
    c->reading = 1;
    uv_timer_start(&c->timer, conn_on_timeout, c->srv->timeout_ms, 0);
}

/*
 * One round: every complete command (or the data) in c->in, until a
 * transaction waits or the connection ends; then one write of the replies.
 */
static void conn_process(smtpd_conn_t *c)
{
    c->in_process = 1;
    while (!c->closing && !c->quitting && !c->tx && c->in_pos < c->in->len) {
        if (c->in_data) {
            if (!data_consume(c))
                break;
            data_end(c);
        } else if (!command_next(c)) {
            break;
        }
    }
    c->in_process = 0;
    if (c->in_pos > 0) {
        g_byte_array_remove_range(c->in, 0, (guint)c->in_pos);
        c->in_pos = 0;
    }
    conn_flush(c);
    conn_read_update(c);
}

static smtpd_conn_t *conn_new(sb_smtpd_t *s)
{
    smtpd_conn_t *c = g_new0(smtpd_conn_t, 1);

    c->srv = s;
    c->in = g_byte_array_new();
    c->out = g_string_new(NULL);
    c->rcpts = g_ptr_array_new_with_free_func(g_free);
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->refs++;
    return c;
}

static void smtpd_on_connection(uv_stream_t *listener, int status)
{
    sb_smtpd_t *s = listener->data;
    smtpd_conn_t *c;

    if (status < 0)
        return;
    c = conn_new(s);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (s->nclients >= s->max_clients) {
        conn_reply(c, "421 4.3.2 Too many connections, try again later");
        conn_quit(c);
        conn_flush(c);
        return;
    }
    c->counted = 1;
    s->nclients++;
    conn_reply(c, "220 %s %s Switchboard", s->hostname, s->lmtp ? "LMTP" : "ESMTP");
    conn_process(c);
}

/*===========================================================================
 * Listening.
 *=========================================================================*/

/* "host:port" or "[v6]:port", numeric hosts only (no DNS on the loop). */
static int smtpd_addr_parse(const char *spec, struct sockaddr_storage *ss)
{
    char host[64];
    const char *port, *end;
    guint64 num;
    int v6 = spec[0] == '[';

    if (v6) {
        end = strchr(spec, ']');
        if (!end || end[1] != ':')
            return SB_EINVAL;
        port = end + 2;
        spec++;
    } else {
        end = strchr(spec, ':');
        if (!end || strchr(end + 1, ':'))
            return SB_EINVAL;
        port = end + 1;
    }
    if ((size_t)(end - spec) >= sizeof host)
        return SB_EINVAL;
    memcpy(host, spec, (size_t)(end - spec));
    host[end - spec] = '\0';
    if (!g_ascii_string_to_unsigned(port, 10, 0, 65535, &num, NULL))
        return SB_EINVAL;
    if (v6)
        return uv_ip6_addr(host, (int)num, (struct sockaddr_in6 *)ss) == 0 ? 0 : SB_EINVAL;
    return uv_ip4_addr(host, (int)num, (struct sockaddr_in *)ss) == 0 ? 0 : SB_EINVAL;
}

/* A bound, listening socket that other workers may bind as well. */
static int smtpd_socket_open(const struct sockaddr_storage *ss, int *fd_out, int *port)
{
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return SB_EIO;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
        close(fd);
        return SB_EIO;
    }
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    *fd_out = fd;
    return 0;
}

static void smtpd_on_listener_close(uv_handle_t *h)
{
    smtpd_unref(h->data);
}

int sb_smtpd_listen(uv_loop_t *loop, const sb_smtpd_config_t *cfg, sb_smtpd_t **out)
{
    struct sockaddr_storage ss;
    sb_smtpd_t *s;
    int fd, port, rc;

    if (!loop || !cfg || !out || !cfg->listen || !cfg->rcpt || !cfg->message)
        return SB_EINVAL;
    memset(&ss, 0, sizeof ss);
    rc = smtpd_addr_parse(cfg->listen, &ss);
    if (rc < 0)
        return rc;
    rc = smtpd_socket_open(&ss, &fd, &port);
    if (rc < 0)
        return rc;
    s = g_new0(sb_smtpd_t, 1);
    s->loop = loop;
    s->hostname = g_strdup(cfg->hostname ? cfg->hostname : g_get_host_name());
    s->lmtp = cfg->lmtp != 0;
    s->port = port;
    s->max_size = cfg->max_size ? cfg->max_size : SMTPD_DEFAULT_MAX_SIZE;
    s->max_rcpts = cfg->max_rcpts ? cfg->max_rcpts : SMTPD_DEFAULT_MAX_RCPTS;
    s->max_clients = cfg->max_clients ? cfg->max_clients : SMTPD_DEFAULT_MAX_CLIENTS;
    s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : SMTPD_DEFAULT_TIMEOUT_MS;
    s->rcpt = cfg->rcpt;
    s->message = cfg->message;
    s->data = cfg->data;
    s->refs = 1;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    if (uv_tcp_open(&s->listener, fd) < 0) {
        close(fd);
        uv_close((uv_handle_t *)&s->listener, smtpd_on_listener_close);
        return SB_EIO;
    }
    if (uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, smtpd_on_connection) < 0) {
        uv_close((uv_handle_t *)&s->listener, smtpd_on_listener_close);
        return SB_EIO;
    }
    *out = s;
    return 0;
}

int sb_smtpd_port(const sb_smtpd_t *s)
{
    return s->port;
}

void sb_smtpd_close(sb_smtpd_t *s)
{
    static const char bye[] = "421 4.3.2 Service shutting down\r\n";

    if (!s)
        return;
    uv_close((uv_handle_t *)&s->listener, smtpd_on_listener_close);
    for (smtpd_conn_t *c = s->conns; c; c = c->next) {
        /* Best effort, never blocking: a client mid-command learns why. */
        if (!c->closing && !c->quitting && c->writes == 0) {
            uv_buf_t buf = uv_buf_init((char *)bye, sizeof bye - 1);
            uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
        }
        conn_close(c);
    }
}
