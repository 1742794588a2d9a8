/*
 * switchboard/plugin.h - the only header a Switchboard channel plugin
 * includes, and the whole contract between the server and its plugins:
 * the result codes, the descriptor a plugin exports, and the table of host
 * functions the server hands it.  Nothing from the server's own sources is
 * reachable through it.
 *
 * Lifecycle (as in nginx and Kamailio):
 *   init   in the master, once, before the workers fork: read settings,
 *          declare HTTP routes.  No loop exists yet.
 *   start  in each worker, after fork: the loop exists; start timers.
 *   stop   in each worker at shutdown.
 *
 * Rules that hold for every call:
 *   - Every host call takes the plugin's own sb_plugin_ctx_t, which tags its
 *     logs and lets the host release what it registered.
 *   - What the host passes in is borrowed until the callback returns; what a
 *     plugin passes to the host is copied before the call returns.
 *   - A call that takes a callback and returns an error never calls it.
 *   - Plugins never talk to PostgreSQL: they hand messages to ingest() and
 *     are handed replies through send().
 */
#ifndef SWITCHBOARD_PLUGIN_H
#define SWITCHBOARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/*
 * ABI version.  A host refuses a plugin built for another major version,
 * or for a minor version newer than its own.  Within a major, members are
 * only ever appended to sb_host_api_t; a plugin that needs a late member
 * checks api->size first.
 */
#define SB_PLUGIN_ABI_MAJOR 1
#define SB_PLUGIN_ABI_MINOR 3

/*
 * Result codes.  Every call returns 0 or one of these (all negative).
 * SB_AGAIN: not done yet (a callback follows) or retry later.
 * SB_DECLINED: not mine, let the next handler try.
 */
#define SB_ERRNO_MAP(XX)                           \
    XX(AGAIN, -1, "operation in progress")         \
    XX(DECLINED, -2, "declined")                   \
    XX(EINVAL, -22, "invalid argument")            \
    XX(ENOMEM, -12, "out of memory")               \
    XX(ENOENT, -2002, "not found")                 \
    XX(ERANGE, -34, "value out of range")          \
    XX(EIO, -5, "input/output error")              \
    XX(ETIMEDOUT, -110, "timed out")               \
    XX(EUNAVAILABLE, -2001, "service unavailable") \
    XX(EDB, -2003, "database error")               \
    XX(ECLOSED, -2004, "closed")                   \
    XX(EBUSY, -16, "busy")                         \
    XX(ETOOBIG, -27, "too large")                  \
    XX(ESYNTAX, -2005, "syntax error")

enum {
    SB_OK = 0,
#define XX(name, val, msg) SB_##name = (val),
    SB_ERRNO_MAP(XX)
#undef XX
};

/* Log levels, for the host's log() and the server's own lines. */
typedef enum sb_log_level {
    SB_LOG_DEBUG = 0,
    SB_LOG_INFO,
    SB_LOG_NOTICE,
    SB_LOG_WARNING,
    SB_LOG_ERR,
    SB_LOG_FATAL,
} sb_log_level_t;

typedef struct sb_plugin_ctx sb_plugin_ctx_t; /* one per loaded plugin, opaque */
typedef struct sb_http_req sb_http_req_t;     /* one HTTP request, opaque */
typedef struct sb_plugin_timer sb_plugin_timer_t;
typedef struct sb_ws sb_ws_t; /* one WebSocket connection, opaque */

/* A WebSocket's events, on the worker's loop.  After on_close the handle is gone. */
typedef struct sb_ws_callbacks {
    /* A complete text message (valid UTF-8, at most 64 KiB).  Borrowed. */
    void (*on_text)(sb_ws_t *ws, const char *text, size_t len, void *data);
    /* The connection ended; code is the close code (1006 when it dropped). */
    void (*on_close)(sb_ws_t *ws, int code, void *data);
} sb_ws_callbacks_t;

/* A ticket or message event: a JSON object (tenant, type, ticket, message,
 * channel, direction, thread_key, at).  Borrowed. */
typedef void (*sb_plugin_event_cb)(sb_plugin_ctx_t *p, const char *json, void *data);
/* status 0 with a JSON document (borrowed), or an SB_E* code and NULL. */
typedef void (*sb_plugin_json_cb)(sb_plugin_ctx_t *p, int status, const char *json, void *data);

/* ======================== inbound ======================== */

/*
 * A file that came with a message: bytes up to 25 MiB, or (1.2) a file_id
 * of at most 2000 bytes, whatever the size.  One the host cannot store is
 * left out (logged) and the message stored without it.
 */
typedef struct sb_attachment {
    const char *filename;     /* as the sender named it (UTF-8), or NULL */
    const char *content_type; /* e.g. "image/png"; NULL: application/octet-stream */
    const void *data;
    size_t size;
    /*
     * ABI 1.2: a file left on the platform (a Telegram file_id, a WhatsApp
     * media id, a URL): data is NULL and size is what the platform said (0
     * when it did not); the bytes are fetched on demand, not at ingest.
     */
    const char *file_id;
} sb_attachment_t;

/*
 * A message a channel received, normalised.  Strings are UTF-8; NULL where
 * optional.  The host copies everything before ingest() returns.
 */
typedef struct sb_inbound {
    const char *tenant;         /* tenant slug */
    const char *channel;        /* channel name, e.g. "chat" */
    const char *external_id;    /* the sender's id of this message: the dedupe key */
    const char *identity_kind;  /* "email", "phone", "chat", "telegram", ... */
    const char *identity_value; /* the sender on that channel */
    const char *sender_name;    /* optional */
    const char *thread_key;     /* messages with one key share a ticket until it closes */
    const char *subject;        /* optional: the new ticket's subject */
    const char *text;           /* the body as plain text */
    const char *html;           /* optional */
    /* ABI 1.1: files that came with the message (copied like the rest). */
    const struct sb_attachment *attachments;
    size_t nattachments;
    /*
     * ABI 1.2: the channel instance (sb_channel_t.id) the message came
     * through, or 0.  With it, dedupe and threading are per instance: two
     * bots of one tenant may both see message 5 of chat 42.
     */
    int64_t channel_id;

    /* ---- ABI 1.3 (email) ---- */

    /*
     * The external ids of messages this one answers (an email's
     * In-Reply-To and References), most relevant first, NULL-terminated;
     * or NULL.  The first that names a message of this channel instance
     * (inbound, or one of our replies by the id send_report gave) on a
     * ticket of this sender (of anyone's, for machine-sent mail) picks the
     * ticket, before ticket_hint and thread_key.
     */
    const char *const *references;
    /* A ticket number the sender named (an email subject's tag), or 0.
     * Honoured only when that ticket's customer is this sender. */
    int64_t ticket_hint;
    /*
     * 1: sent by a machine (an auto-reply, a bounce, list mail).  Stored on
     * the ticket it answers, even a closed one, without reopening it; it
     * never opens a ticket (with none to join it is kept on a new ticket
     * that is closed from the start, tagged auto-submitted) and never gets
     * an automatic answer.
     */
    int auto_submitted;
    /* Bytes of text before its quoted history (0: none); shown folded. */
    size_t quote_at;
} sb_inbound_t;

/* What ingest() committed (valid until the callback returns). */
typedef struct sb_ingest_result {
    int64_t ticket;  /* the ticket's number in its tenant */
    int64_t message; /* the message's id */
    int duplicate;   /* 1: stored before; acknowledge again, store nothing */
} sb_ingest_result_t;

/*
 * status 0: committed (or a duplicate): acknowledge the sender.
 * SB_EUNAVAILABLE: not stored, retry later (tell the sender to retry).
 * SB_EINVAL / SB_ENOENT: not storable (bad message, unknown tenant).
 */
typedef void (*sb_ingest_cb)(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r,
                             void *data);

/* ======================== channel instances ======================== */

/*
 * ABI 1.2: one of a tenant's channels (the channels API), as the host
 * hands it to webhook(), send() and (1.3) a channels_list callback.
 * Borrowed: valid until the response to the webhook's request is sent,
 * until send()'s done has run, or until the callback returns.  Its secrets
 * are read one by one with api->channel_secret.
 */
typedef struct sb_channel {
    const char *tenant;   /* the tenant's slug */
    int64_t id;           /* the channel's id: /hooks/{tenant}/{id} */
    const char *type;     /* the plugin's name */
    const char *name;     /* the admin's name for it */
    const char *settings; /* a JSON object that validate_settings accepted */
    /* ABI 1.3: what the plugin last saved with channel_state_save ("{}"). */
    const char *state;
} sb_channel_t;

/* ======================== outbound ======================== */

typedef struct sb_outbound {
    const char *tenant;
    const char *channel;
    const char *identity_kind;
    const char *identity_value; /* the recipient */
    const char *thread_key;
    int64_t ticket;
    int64_t message;
    const char *text;
    const char *html;
    /*
     * ABI 1.2: the channel instance the ticket came in through, or NULL for
     * tickets of a plugin-wide channel.  Plugins built for 1.1 never see it.
     */
    const sb_channel_t *instance;

    /* ---- ABI 1.3 (email) ---- */
    /* The ticket's subject. */
    const char *subject;
    /* The external id of the ticket's last inbound message before this, or NULL. */
    const char *in_reply_to;
    /* The ticket's last external ids, oldest first, space-separated, or NULL. */
    const char *references;
    /* 1: no agent wrote it (a rule's reply, a survey). */
    int auto_generated;
} sb_outbound_t;

enum { SB_SENT = 0, SB_RETRY = 1, SB_FAILED = 2 };

/* result is SB_SENT, SB_RETRY or SB_FAILED; detail (may be NULL) is recorded. */
typedef void (*sb_send_cb)(sb_plugin_ctx_t *p, int result, const char *detail, void *data);

/* ======================== outbound HTTP (ABI 1.2) ======================== */

/* A request for api->fetch; copied before fetch returns. */
typedef struct sb_fetch_req {
    const char *method;         /* "POST"; NULL means GET */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const void *body;
    size_t len;
    uint64_t timeout_ms; /* 0: 30 s */
} sb_fetch_req_t;

/* What came back; borrowed for the callback's duration. */
typedef struct sb_fetch_res {
    long status;      /* HTTP status, 0 when none was received */
    const char *body; /* NUL-terminated, at most 1 MiB */
    size_t len;
    long retry_after;  /* seconds from a Retry-After header, or -1 */
    const char *error; /* what went wrong, when rc != 0 */
} sb_fetch_res_t;

/*
 * rc 0: a response arrived, whatever its status; SB_EUNAVAILABLE: the peer
 * could not be reached in time (worth a retry); SB_EINVAL: the request can
 * never work (a refused address); SB_ECLOSED: the worker is stopping.
 */
typedef void (*sb_fetch_cb)(sb_plugin_ctx_t *p, int rc, const sb_fetch_res_t *res, void *data);

/* status 0: committed; SB_EUNAVAILABLE: not stored, make the sender retry. */
typedef void (*sb_status_cb)(sb_plugin_ctx_t *p, int status, void *data);

/*
 * status 0 with a file's bytes (borrowed for the call); or SB_ENOENT (the
 * platform no longer has it), SB_EUNAVAILABLE (try again later), SB_EIO.
 */
typedef void (*sb_file_cb)(sb_plugin_ctx_t *p, int status, const void *bytes, size_t len,
                           void *data);

/*
 * ABI 1.3: the active channel instances of the plugin's type, of every
 * tenant (status 0), borrowed until the callback returns; or status
 * SB_EUNAVAILABLE and n 0.
 */
typedef void (*sb_channels_cb)(sb_plugin_ctx_t *p, int status, const sb_channel_t *const *chs,
                               size_t n, void *data);

/* ======================== the host ======================== */

/*
 * An HTTP handler: answer with respond() now or later (once), return 0; or
 * return SB_DECLINED to let the next route try, or an SB_E* code for the
 * host to answer.
 */
typedef int (*sb_plugin_http_cb)(sb_plugin_ctx_t *p, sb_http_req_t *req, void *data);
typedef void (*sb_plugin_timer_cb)(sb_plugin_ctx_t *p, void *data);

typedef struct sb_host_api {
    uint16_t abi_major, abi_minor;
    uint32_t size; /* sizeof(sb_host_api_t) in the host */

    /* A log line tagged with the plugin's name.  Any process. */
    void (*log)(sb_plugin_ctx_t *p, sb_log_level_t level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /*
     * The plugin's setting key: SWITCHBOARD_<PLUGIN>_<KEY> from the
     * environment, else <plugin> = { <key> = ... } in the config file, else
     * NULL.  Borrowed for the process's life.
     */
    const char *(*config_get)(sb_plugin_ctx_t *p, const char *key);
    /* Declares a route (init only).  Patterns as the server's: "/hooks/{tenant}/x". */
    int (*http_route)(sb_plugin_ctx_t *p, const char *method, const char *pattern,
                      sb_plugin_http_cb cb, void *data);
    /* The worker's loop; NULL before start(). */
    uv_loop_t *(*loop)(sb_plugin_ctx_t *p);
    /* A timer on the worker's loop (start() or later); stopped with timer_stop. */
    int (*timer_start)(sb_plugin_ctx_t *p, uint64_t after_ms, uint64_t repeat_ms,
                       sb_plugin_timer_cb cb, void *data, sb_plugin_timer_t **out);
    void (*timer_stop)(sb_plugin_ctx_t *p, sb_plugin_timer_t *t);
    /*
     * Stores an inbound message in one transaction (see sb_inbound_t) and
     * calls done after commit.  Returns 0, or SB_EINVAL for a message whose
     * keys or text are missing, too long or not UTF-8 (the text may be empty
     * when files came), SB_EUNAVAILABLE when the database is down (done is
     * then never called).  Optional fields that are not UTF-8 or too long
     * (sender_name 200 bytes, subject 500, a file name 255) are repaired
     * and cut on a character boundary, not refused.
     */
    int (*ingest)(sb_plugin_ctx_t *p, const sb_inbound_t *msg, sb_ingest_cb done, void *data);

    /* Requests handed to a route: accessors borrow until the response. */
    const char *(*req_method)(sb_http_req_t *req);
    const char *(*req_param)(sb_http_req_t *req, const char *name);
    const char *(*req_query)(sb_http_req_t *req, const char *name);
    const char *(*req_header)(sb_http_req_t *req, const char *name);
    const char *(*req_body)(sb_http_req_t *req, size_t *len);
    void (*res_header)(sb_http_req_t *req, const char *name, const char *value);
    void (*respond)(sb_http_req_t *req, int status, const char *content_type, const void *body,
                    size_t len);

    /* ---- ABI 1.1 ---- */

    /*
     * In a route handler: completes the WebSocket handshake of req (101).
     * Returns 0 (req is answered), or SB_EINVAL when req is not an upgrade
     * (answer it yourself).  See sb_ws_callbacks_t for the limits.
     */
    int (*ws_accept)(sb_plugin_ctx_t *p, sb_http_req_t *req, const sb_ws_callbacks_t *cbs,
                     void *data, sb_ws_t **out);
    /* Queues a text message (copied); a peer too far behind is closed (1008). */
    int (*ws_send)(sb_ws_t *ws, const char *text, size_t len);
    void (*ws_close)(sb_ws_t *ws, int code, const char *reason);
    /* Every ticket and message event of every tenant, in this worker (start() or later). */
    int (*events_subscribe)(sb_plugin_ctx_t *p, sb_plugin_event_cb cb, void *data);
    /*
     * The messages (not internal notes) of the tickets of a thread with ids
     * above after, oldest first: a JSON array of {id, direction, text, at}.
     * Returns 0 and calls cb once; or SB_EUNAVAILABLE and never calls cb.
     */
    int (*thread_messages)(sb_plugin_ctx_t *p, const char *tenant, const char *channel,
                           const char *thread_key, int64_t after, sb_plugin_json_cb cb, void *data);
    /* A 32-byte secret of this plugin, the same in every worker and after restarts. */
    int (*secret_key)(sb_plugin_ctx_t *p, unsigned char out[32]);
    /*
     * Tells the tenant's agents (their live stream) that the customer of a
     * thread is typing.  Fire and forget: nothing is stored.
     */
    int (*typing)(sb_plugin_ctx_t *p, const char *tenant, const char *channel,
                  const char *thread_key);

    /* ---- ABI 1.2 ---- */

    /*
     * Sends an HTTP request with the worker's client (libcurl on the loop;
     * never blocks).  Non-public addresses and plain http:// are refused
     * unless the server sets channels_allow_private.  Returns 0 and calls
     * cb once, after it returns; or SB_EINVAL (not an https URL, or http
     * where it is refused; no loop yet) and never calls cb.  start() or
     * later.
     */
    int (*fetch)(sb_plugin_ctx_t *p, const sb_fetch_req_t *req, sb_fetch_cb cb, void *data);
    /*
     * The secret name of a channel instance, opened from its sealed store,
     * or NULL when it has none.  Borrowed like ch; never log it.
     */
    const char *(*channel_secret)(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *name);
    /*
     * In send(), before calling done: what the platform said beyond the
     * result.  send_data is the data send() was given.  platform_id (copied,
     * may be NULL) is the platform's id of the delivered message, which
     * later status updates name; retry_after_s (> 0) is the delay before an
     * SB_RETRY is tried again, instead of the outbox's backoff.
     */
    void (*send_report)(sb_plugin_ctx_t *p, void *send_data, const char *platform_id,
                        int retry_after_s);
    /*
     * Records a status the platform reported for one of our outbound
     * messages: status is "sent", "delivered", "read" or "failed" (detail,
     * may be NULL: why).  A message is found by its instance and
     * platform_id; a status older than the recorded one changes nothing
     * and is not an error.  A status for an id not recorded yet (it can
     * arrive before send's result has committed) is kept for a day and
     * applied when the id is recorded.  Returns 0 and calls done after
     * commit; or SB_EINVAL / SB_EUNAVAILABLE and never calls done.
     */
    int (*message_status)(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *platform_id,
                          const char *status, const char *detail, sb_status_cb done, void *data);
    /*
     * The URL the platform called to reach req: the server's public_url
     * followed by the request's path and query string (as received).
     * What Twilio signs.
     * Borrowed until the response; NULL when public_url is not set.
     */
    const char *(*req_public_url)(sb_plugin_ctx_t *p, sb_http_req_t *req);

    /* ---- ABI 1.3 ---- */

    /*
     * Lists the active channel instances of this plugin's type, of every
     * tenant: for plugins that serve all tenants at one address (an SMTP
     * listener) or poll on their own (an IMAP mailbox).  channel_secret
     * works on them inside cb.  Returns 0 and calls cb once, after
     * returning; or SB_EUNAVAILABLE and never calls it.  start() or later.
     */
    int (*channels_list)(sb_plugin_ctx_t *p, sb_channels_cb cb, void *data);
    /*
     * Saves state_json (a JSON object, at most 64 KiB) as the plugin's
     * state of channel id of tenant, handed back as sb_channel_t.state.  It
     * is not a settings change: nothing is flushed or notified.  Returns 0
     * and calls done after commit (status SB_ENOENT: no such channel); or
     * SB_EINVAL / SB_EUNAVAILABLE and never calls done.
     */
    int (*channel_state_save)(sb_plugin_ctx_t *p, const char *tenant, int64_t id,
                              const char *state_json, sb_status_cb done, void *data);
    /* This worker's index (0 .. count - 1) among the server's workers. */
    void (*worker_info)(sb_plugin_ctx_t *p, int *index, int *count);

    /* Append new members here only. */
} sb_host_api_t;

/* The descriptor a plugin exports through sb_plugin_entry(). */
typedef struct sb_plugin {
    uint16_t abi_major, abi_minor;
    uint32_t size; /* set by SB_PLUGIN_DEFINE */
    const char *name;
    const char *version;
    /* Master, before fork.  Non-zero: the plugin is not loaded. */
    int (*init)(sb_plugin_ctx_t *p, const sb_host_api_t *api);
    /* Each worker, after fork (may be NULL). */
    int (*start)(sb_plugin_ctx_t *p);
    /* Each worker, at shutdown (may be NULL). */
    void (*stop)(sb_plugin_ctx_t *p);
    /* Delivers a reply (may be NULL for inbound-only channels). */
    int (*send)(sb_plugin_ctx_t *p, const sb_outbound_t *msg, sb_send_cb done, void *data);
    /*
     * ABI 1.1.  Checks a channel instance's settings (a JSON object) when an
     * admin creates or changes one: 0, or SB_EINVAL with the offending field
     * and a message written into the buffers.  Any worker; must not block.
     * NULL: any object is accepted.
     */
    int (*validate_settings)(sb_plugin_ctx_t *p, const char *settings_json, char *field,
                             size_t field_len, char *message, size_t message_len);
    /*
     * ABI 1.2.  A request (GET or POST) to /hooks/{tenant}/{id} of an
     * active channel instance of this plugin's type; as sb_plugin_http_cb.
     * The host has found ch; the plugin verifies the sender.  NULL: such
     * channels have no webhook (404).
     */
    int (*webhook)(sb_plugin_ctx_t *p, const sb_channel_t *ch, sb_http_req_t *req);
    /*
     * ABI 1.2.  Fetches the bytes of a file this plugin recorded with a
     * file_id, when an agent downloads it.  Returns 0 and calls done once
     * (after returning); or an SB_E* code and never calls done.  NULL:
     * such files stay on the platform.
     */
    int (*fetch_file)(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *file_id,
                      sb_file_cb done, void *data);
    /*
     * ABI 1.3.  In each worker, after an admin created, changed or
     * deactivated a channel of any type: lists kept with channels_list are
     * stale.  May be NULL.
     */
    void (*channels_changed)(sb_plugin_ctx_t *p);
} sb_plugin_t;

#define SB_PLUGIN_ENTRY "sb_plugin_entry"

#if defined(__GNUC__)
#define SB_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SB_PLUGIN_EXPORT
#endif

/*
 * Defines the exported entry point: a function, not data (dlsym of data is
 * not portable), returning a descriptor stamped with the ABI this plugin is
 * compiled against.  Use once per plugin, naming the members it has:
 *   SB_PLUGIN_DEFINE(.name = "chat", .version = "1.0", .init = chat_init, .send = chat_send)
 */
#define SB_PLUGIN_DEFINE(...)                                                      \
    SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void);                     \
    SB_PLUGIN_EXPORT const sb_plugin_t *sb_plugin_entry(void)                      \
    {                                                                              \
        static const sb_plugin_t d = {SB_PLUGIN_ABI_MAJOR, SB_PLUGIN_ABI_MINOR,    \
                                      (uint32_t)sizeof(sb_plugin_t), __VA_ARGS__}; \
        return &d;                                                                 \
    }

#endif
