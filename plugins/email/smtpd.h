/*
 * smtpd.h - the email channel's SMTP and LMTP listener on a libuv loop.
 * Speaks EHLO/HELO (LHLO for LMTP), MAIL, RCPT, DATA, RSET, NOOP, QUIT,
 * VRFY (252) with SIZE, 8BITMIME, PIPELINING and ENHANCEDSTATUSCODES.  It
 * answers 250 to DATA only once the owner says the message is committed:
 * the owner decides what a recipient is and what a message becomes.
 */
#ifndef SB_EMAIL_SMTPD_H
#define SB_EMAIL_SMTPD_H

#include <stddef.h>
#include <uv.h>

typedef struct sb_smtpd sb_smtpd_t;
typedef struct sb_smtpd_tx sb_smtpd_tx_t; /* one received message */

/*
 * RCPT: 0 accepts addr (the address without <>, as sent); SB_ENOENT
 * refuses it (550 5.1.1); SB_EUNAVAILABLE defers it (451 4.3.0).  Must
 * not block.
 */
typedef int (*sb_smtpd_rcpt_cb)(const char *addr, void *data);

/*
 * A complete message for the accepted recipients: from is the reverse
 * path without <> ("" for a bounce); raw the message as received, dot
 * unstuffed, borrowed until the last sb_smtpd_result.  The owner calls
 * sb_smtpd_result once for each recipient, now or later.
 */
typedef void (*sb_smtpd_message_cb)(sb_smtpd_tx_t *tx, const char *from, const char *const *rcpts,
                                    size_t nrcpts, const char *raw, size_t len, void *data);

typedef struct sb_smtpd_config {
    const char *listen;   /* "127.0.0.1:2525", "[::1]:24" */
    int lmtp;             /* 1: LMTP (LHLO, one reply per recipient after DATA) */
    const char *hostname; /* in the greeting and EHLO reply; NULL: gethostname */
    size_t max_size;      /* bytes of a message; 0: 25 MiB.  Over it: 552 5.3.4 */
    unsigned max_rcpts;   /* per message; 0: 100.  Over it: 452 4.5.3 */
    unsigned max_clients; /* connections at once; 0: 200.  Over it: 421 4.3.2 */
    unsigned timeout_ms;  /* idle time per command or data chunk; 0: 300 s.  Then 421 4.4.2 */
    sb_smtpd_rcpt_cb rcpt;
    sb_smtpd_message_cb message;
    void *data;
} sb_smtpd_config_t;

/*
 * Listens on cfg->listen (SO_REUSEPORT, so every worker may listen on one
 * address).  Borrows cfg's callbacks and data until sb_smtpd_close; copies
 * the rest.  Returns 0 with *out; SB_EINVAL for a bad address, SB_EIO when
 * the address cannot be bound (logged by the caller).
 */
int sb_smtpd_listen(uv_loop_t *loop, const sb_smtpd_config_t *cfg, sb_smtpd_t **out);

/* The port actually bound (for ":0"). */
int sb_smtpd_port(const sb_smtpd_t *s);

/*
 * The result for recipient i of tx: 0 stored (250 2.0.0), SB_EUNAVAILABLE
 * or any other code not below (451 4.3.0, retry later), SB_EINVAL (554
 * 5.6.0, never storable), SB_ENOENT (550 5.1.1).  SMTP answers once all
 * results are in: 250 when all are 0, else the first failure; LMTP
 * answers each.  tx is freed after the last result, whether or not the
 * client is still connected.
 */
void sb_smtpd_result(sb_smtpd_tx_t *tx, size_t i, int rc);

/* Stops listening and closes every connection (transactions waiting for
 * results stay valid until their last result).  Frees s. */
void sb_smtpd_close(sb_smtpd_t *s);

#endif
