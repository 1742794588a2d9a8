/*
 * mime.h - email messages for the email channel, with GMime 3: parsing a
 * received message into what the host stores (decoded headers, UTF-8
 * text, sanitised HTML, files, threading keys, whether it was sent by a
 * machine), and building a reply.  Pure functions: no loop, no I/O.
 */
#ifndef SB_EMAIL_MIME_H
#define SB_EMAIL_MIME_H

#include <stddef.h>
#include <stdint.h>

/* One file of a message: an attachment, an inline image, a forwarded message. */
typedef struct sb_mail_file {
    char *filename;     /* UTF-8, or NULL when the sender gave none */
    char *content_type; /* "image/png", "message/rfc822", ... */
    unsigned char *data;
    size_t size;
} sb_mail_file_t;

/*
 * A received message.  Every string is valid UTF-8 (invalid bytes
 * replaced), owned by the struct and freed by sb_mail_free.
 */
typedef struct sb_mail {
    char *from_addr;  /* the first From mailbox's address, lower-cased; NULL if none */
    char *from_name;  /* its display name, decoded; NULL if none */
    char *subject;    /* decoded (RFC 2047, raw 8-bit guessed), unfolded; NULL if none */
    char *message_id; /* "<id@host>", or NULL when the message has none */
    /*
     * The Message-IDs this message answers, each "<id@host>", most relevant
     * first: In-Reply-To's, then References' from last to first, no
     * repeats, at most 50.  For a delivery report (multipart/report) also
     * the returned message's Message-ID.  NULL-terminated; never NULL.
     */
    char **references;
    /*
     * The text: the first text/plain body part, else the HTML body as text
     * (libxml2's HTML parser), else "".  Converted from its charset, CRLF
     * made LF.  Never NULL.
     */
    char *text;
    /* Bytes of text before the quoted history ("On ... wrote:", "> " lines,
     * "-----Original Message-----"); strlen(text) when there is none. */
    size_t text_new_len;
    char *html;            /* the HTML body, sanitised (no script, style, event attributes,
                   javascript: URLs, forms, iframes); NULL when none */
    sb_mail_file_t *files; /* every non-body part, message/rfc822 ones whole */
    size_t nfiles;
    /*
     * 1 when a machine sent it: Auto-Submitted other than "no",
     * Precedence bulk/junk/list, X-Autoreply, X-Autorespond,
     * X-Auto-Response-Suppress, X-Failed-Recipients, a multipart/report,
     * a null or MAILER-DAEMON/postmaster sender, "Automatic reply:" /
     * "Out of Office" style subjects.  Such mail never opens a ticket and
     * never gets an automatic answer.
     */
    int auto_submitted;
} sb_mail_t;

/*
 * Parses raw (a message as received: headers, blank line, body; CRLF or
 * LF; an mbox "From " line first is skipped).  Never fails on malformed
 * input: what can be read is returned.  Returns 0 with *out (free with
 * sb_mail_free), or SB_ENOMEM.
 */
int sb_mail_parse(const char *raw, size_t len, sb_mail_t **out);
void sb_mail_free(sb_mail_t *m);

/*
 * Releases GMime's global state, set up by the first parse or build.  Call
 * before the library can be unloaded (a plugin's stop): what its globals
 * point to would otherwise be lost.  A later call to any function here sets
 * it up again.
 */
void sb_mail_shutdown(void);

/*
 * The ticket number a subject names with the tag format fmt, whose
 * "{number}" stands for the digits (e.g. "[#{number}]", the default when
 * fmt is NULL); 0 when there is none.  The last tag in the subject wins.
 */
int64_t sb_mail_tag_find(const char *subject, const char *fmt);

/* fmt with "{number}" replaced by number, in out (truncated to len). */
void sb_mail_tag_format(const char *fmt, int64_t number, char *out, size_t len);

/* A reply to build; strings UTF-8, borrowed. */
typedef struct sb_mail_reply {
    const char *from_addr, *from_name; /* from_name may be NULL */
    const char *to_addr, *to_name;     /* to_name may be NULL */
    const char *subject;               /* final subject, tag included */
    const char *message_id;            /* "<id@host>" */
    const char *in_reply_to;           /* "<id@host>" or NULL */
    const char *references;            /* "<a@h> <b@h>" or NULL */
    const char *text;                  /* the text part */
    const char *html;                  /* the HTML part; NULL: made from text (escaped, <br>) */
    int auto_replied;                  /* 1: written by no one, not by an agent */
} sb_mail_reply_t;

/*
 * The reply as a message ready for SMTP: Date, From, To, Subject (RFC 2047
 * where needed), Message-ID, In-Reply-To, References, Auto-Submitted ("no",
 * or "auto-replied" (RFC 3834) for auto_replied, so that no other
 * responder answers it),
 * MIME-Version, multipart/alternative of text/plain and text/html in
 * UTF-8 (quoted-printable), CRLF line ends.  Returns 0 with *out (free())
 * and *len, or SB_EINVAL (a missing address) / SB_ENOMEM.
 */
int sb_mail_build(const sb_mail_reply_t *r, char **out, size_t *len);

/* A new Message-ID "<random@domain>" in out (at least 128 bytes). */
void sb_mail_new_id(const char *domain, char *out, size_t len);

#endif
