/*
 * mailnet.h - the email channel's client side, with libcurl's multi
 * interface on a libuv loop: sending through a tenant's SMTP relay, and
 * fetching a mailbox over IMAP without fetching a message twice or
 * skipping one.  Never blocks the loop.
 */
#ifndef SB_EMAIL_MAILNET_H
#define SB_EMAIL_MAILNET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_mailnet sb_mailnet_t;

/* One libcurl multi handle on loop.  Returns 0 with *out, or SB_ENOMEM. */
int sb_mailnet_open(uv_loop_t *loop, sb_mailnet_t **out);
/* Cancels every transfer (their callbacks run with SB_ECLOSED) and frees n. */
/*
 * A relay's callback gets SB_RETRY with "shutting down" (its result is not
 * an error code).  n is freed once its handles have closed, so the loop can
 * end.  libcurl says LOGOUT/QUIT on its cached connections, and waits
 * for the reply, before this returns.  Callbacks may call this.
 */
void sb_mailnet_close(sb_mailnet_t *n);

/* ======================== SMTP relay ======================== */

typedef struct sb_relay {
    const char *url;      /* "smtp://host:587", "smtps://host:465" */
    const char *username; /* NULL: no AUTH */
    const char *password;
    int starttls;    /* 0 none, 1 when offered, 2 required (smtp:// only) */
    long timeout_ms; /* 0: 60 s */
} sb_relay_t;

/*
 * result: 0 sent (SB_SENT), 1 retry later (SB_RETRY: cannot connect,
 * timeout, 4xx), 2 failed for good (SB_FAILED: 5xx); detail says what the
 * relay said (borrowed for the call).
 */
typedef void (*sb_relay_cb)(int result, const char *detail, void *data);

/*
 * Sends msg (a whole message, CRLF) from the envelope sender to the
 * NULL-terminated rcpts.  Copies everything.  Returns 0 and calls cb once,
 * after returning; or SB_EINVAL and never calls it.
 */
int sb_relay_send(sb_mailnet_t *n, const sb_relay_t *r, const char *from, const char *const *rcpts,
                  const char *msg, size_t len, sb_relay_cb cb, void *data);

/* ======================== IMAP ======================== */

typedef struct sb_imap_account {
    const char *url; /* "imap://host:143/INBOX", "imaps://host/Support" */
    const char *username;
    const char *password;
    /* After a message is stored: "seen" (\Seen, the default), "delete"
     * (\Deleted and EXPUNGE), "move:<mailbox>" or "none". */
    const char *after;
    long timeout_ms; /* 0: 60 s */
} sb_imap_account_t;

typedef struct sb_imap_poll sb_imap_poll_t;

/*
 * A fetched message (raw, borrowed until sb_imap_stored); or, with raw
 * NULL, one larger than 64 MiB that was not fetched (len is its size): the
 * owner may store a note of it in its place, and sb_imap_stored(0) goes on
 * past it (it stays in the mailbox, marked as the account says).  The owner
 * stores it and calls sb_imap_stored(poll, rc) once: 0 (committed: mark it
 * as the account says, go on) or an error (stop this poll; the message is
 * fetched again next time).
 */
typedef void (*sb_imap_message_cb)(sb_imap_poll_t *poll, uint32_t uid, const char *raw, size_t len,
                                   void *data);

/*
 * The poll ended.  rc 0, or SB_EUNAVAILABLE / SB_EIO / SB_ECLOSED with
 * error saying why.  uidvalidity and last_uid are what to pass next time:
 * every message up to last_uid of that UIDVALIDITY has been stored.
 */
typedef void (*sb_imap_done_cb)(int rc, uint32_t uidvalidity, uint32_t last_uid, const char *error,
                                void *data);

/*
 * Fetches, in UID order, the messages of the account's mailbox with a UID
 * above last_uid (all of them when the mailbox's UIDVALIDITY is not
 * uidvalidity, e.g. 0 the first time), at most max (0: 100) per poll.
 * Copies acct.  Returns 0 and calls done once, after returning (on_message
 * before it, one message at a time); or SB_EINVAL and calls neither.
 */
int sb_imap_poll(sb_mailnet_t *n, const sb_imap_account_t *acct, uint32_t uidvalidity,
                 uint32_t last_uid, unsigned max, sb_imap_message_cb on_message,
                 sb_imap_done_cb done, void *data);

/*
 * The owner's answer to on_message (see sb_imap_message_cb).  done may run
 * before this returns, when nothing is left to ask the server.  Once done
 * has run (sb_mailnet_close runs it with SB_ECLOSED, even while a message
 * waits for this call), poll and the message are gone: do not call this.
 */
void sb_imap_stored(sb_imap_poll_t *poll, int rc);

#endif
