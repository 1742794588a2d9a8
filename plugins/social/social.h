/*
 * social.h - what the social and SMS channel plugins (telegram, whatsapp,
 * messenger, sms) share, linked into each as a static library: checking
 * a webhook's sender (Meta's X-Hub-Signature-256, Twilio's
 * X-Twilio-Signature, a shared token), acknowledging a webhook that
 * carried several messages and statuses only after all of them committed,
 * reading settings, and calling a platform's send API with the result
 * mapped onto SB_SENT / SB_RETRY / SB_FAILED.  Not a plugin itself.
 */
#ifndef SB_SOCIAL_H
#define SB_SOCIAL_H

#include <switchboard/plugin.h>

#include <jansson.h>
#include <stddef.h>

/* Webhook bodies larger than this are refused (413): platforms send far less. */
#define SB_SOCIAL_MAX_BODY (1u << 20)

/* ======================== verifying senders ======================== */

/*
 * Checks header ("sha256=<hex>", X-Hub-Signature-256) against the
 * HMAC-SHA256 of body keyed with secret, in constant time.  0 or SB_EINVAL.
 */
int sb_social_meta_verify(const char *secret, const void *body, size_t len, const char *header);

/*
 * Checks header (X-Twilio-Signature) against base64(HMAC-SHA1(url followed
 * by each form parameter's name and value, sorted by name)) keyed with
 * token, in constant time.  0 or SB_EINVAL.
 */
int sb_social_twilio_verify(const char *token, const char *url, const char *body, size_t len,
                            const char *header);

/* Whether two tokens are equal, in time that depends on neither.  1 or 0. */
int sb_social_token_equal(const char *expected, const char *given);

/* ======================== form bodies ======================== */

/* application/x-www-form-urlencoded, decoded; NULL-terminated name/value pairs. */
typedef struct sb_social_form {
    char **names, **values;
    size_t n;
} sb_social_form_t;

/* Decodes body into form.  0, or SB_EINVAL for a badly encoded body. */
int sb_social_form_parse(const char *body, size_t len, sb_social_form_t *form);

/* The first value of name, or NULL.  Borrowed from form. */
const char *sb_social_form_get(const sb_social_form_t *form, const char *name);

void sb_social_form_free(sb_social_form_t *form);

/* name=value pairs percent-encoded and joined with & (NULL values skipped).  Caller frees. */
char *sb_social_form_encode(const char *const *pairs, size_t npairs);

/* ======================== acknowledging a webhook ======================== */

/*
 * One webhook's work: the ingests and status updates it started.  The
 * response goes once every one has finished: 200 when all committed (or
 * were refused as unstorable, which a retry would not change), else 503
 * with Retry-After so the platform redelivers (what committed is then a
 * duplicate and stored once).
 */
typedef struct sb_social_batch sb_social_batch_t;

/* A batch answering req; ok_type/ok_body are the 200's (copied). */
sb_social_batch_t *sb_social_batch_new(const sb_host_api_t *api, sb_plugin_ctx_t *p,
                                       sb_http_req_t *req, const char *ok_type,
                                       const char *ok_body);

/* Stores m (see api->ingest) as part of the batch. */
void sb_social_batch_ingest(sb_social_batch_t *b, const sb_inbound_t *m);

/* Records a platform's status for an outbound message as part of the batch. */
void sb_social_batch_status(sb_social_batch_t *b, const sb_channel_t *ch, const char *platform_id,
                            const char *status, const char *detail);

/* Nothing more will be added: answer when the last piece finishes. */
void sb_social_batch_end(sb_social_batch_t *b);

/*
 * The body of a webhook POST (len set), or NULL once answered: 400 for
 * another method, 413 past SB_SOCIAL_MAX_BODY.  Borrowed from req.
 */
const char *sb_social_post_body(const sb_host_api_t *api, sb_http_req_t *req, size_t *len);

/*
 * Meta's webhook verification (GET ?hub.mode=subscribe&hub.verify_token=
 * &hub.challenge=): echoes the challenge when the token is the channel's
 * secret verify_token, else answers 401 (400 when a parameter is missing).
 */
void sb_social_meta_challenge(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                              sb_http_req_t *req);

/*
 * A Meta POST: checks the size (413), the signature with the channel's
 * secret app_secret (401) and the JSON (400), answering when one fails.
 * Returns the document (the caller's reference), or NULL once answered.
 */
json_t *sb_social_meta_body(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                            sb_http_req_t *req);

/* Answers req with a plain-text error. */
void sb_social_respond(const sb_host_api_t *api, sb_http_req_t *req, int status, const char *text);

/*
 * The common part of the plugins' init: keeps host in *api, and refuses
 * (SB_EINVAL, logged) a server older than ABI 1.2.
 */
int sb_social_init(const sb_host_api_t **api, sb_plugin_ctx_t *p, const sb_host_api_t *host,
                   const char *name);

/* ======================== settings ======================== */

/*
 * Checks a channel's settings: an object whose members are among keys,
 * each a string of at most 200 bytes, api_base an http(s) URL.  As
 * validate_settings in switchboard/plugin.h.
 */
int sb_social_validate(const char *json, const char *const *keys, char *field, size_t field_len,
                       char *message, size_t message_len);

/* Room for an account id setting (a Meta phone number, Page or Instagram id) and its NUL. */
#define SB_SOCIAL_ID_LEN 64

/*
 * Checks the account id setting key of a channel's settings (json): digits
 * only, shorter than SB_SOCIAL_ID_LEN, and present when required.  As
 * validate_settings in switchboard/plugin.h.
 */
int sb_social_validate_id(const char *json, const char *key, int required, char *field,
                          size_t field_len, char *message, size_t message_len);

/* The string setting key of ch copied into buf (NULL when absent). */
const char *sb_social_setting(const sb_channel_t *ch, const char *key, char *buf, size_t len);

/*
 * snprintf into buf, cut back to the last whole UTF-8 character when the
 * output did not fit (a byte cut would make the text invalid UTF-8, which
 * the database refuses).  Returns buf.
 */
const char *sb_social_printf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "(location <lat>, <lon>)" for a location object, into buf; returns buf. */
const char *sb_social_location_text(json_t *loc, char *buf, size_t len);

/* ======================== calling a platform ======================== */

/* id copied into buf when it fits (returns buf), else NULL: for sb_social_id_fn. */
const char *sb_social_id_copy(const char *id, char *buf, size_t len);

/*
 * Finds the platform's id of a sent message in its JSON answer, into buf
 * (return buf), or returns NULL.
 */
typedef const char *(*sb_social_id_fn)(json_t *answer, char *buf, size_t len);

/*
 * What a platform's answer (status, body of len bytes, Retry-After header
 * in seconds or -1) means for a send: SB_SENT on 2xx; SB_RETRY on 429, 5xx
 * and the Graph API's rate limits and transient errors (a 4xx whose
 * error.code is 2, 4, 17, 32, 613, 80007, 130429 or 131056, or whose
 * error.is_transient is true), with *retry_s the delay to wait (the
 * header, else Telegram's parameters.retry_after; at most a day; 0: the
 * outbox's backoff); SB_FAILED on anything else (refused for good).
 */
int sb_social_send_result(long status, const char *body, size_t len, long retry_after,
                          int *retry_s);

/*
 * POSTs body (content_type) to url with the extra headers (NULL-terminated
 * "Name: value" lines, copied) and ends the send as sb_social_send_result
 * says (SB_RETRY also when there is no answer), with the platform's id from
 * id_of reported on SB_SENT and the delay on SB_RETRY.  Returns 0 (done
 * will run) or the fetch's error (done never runs).
 */
int sb_social_send(const sb_host_api_t *api, sb_plugin_ctx_t *p, const char *url,
                   const char *const *headers, const char *content_type, const char *body,
                   sb_social_id_fn id_of, sb_send_cb done, void *send_data);

/*
 * sb_social_send of a JSON document (taken: freed here) with
 * "Authorization: Bearer <token>" when token is not NULL.  SB_EINVAL (done
 * never runs) when doc is NULL, as json_pack returns for a string that is
 * not UTF-8, or cannot be encoded.
 */
int sb_social_send_json(const sb_host_api_t *api, sb_plugin_ctx_t *p, const char *url,
                        const char *token, json_t *doc, sb_social_id_fn id_of, sb_send_cb done,
                        void *send_data);

/* ======================== files left on a platform ======================== */

/*
 * Where the bytes of a file are, from the platform's JSON answer about it
 * (Telegram's getFile, a WhatsApp media id): a URL the caller frees, or NULL.
 */
typedef char *(*sb_social_locate_fn)(const sb_host_api_t *api, sb_plugin_ctx_t *p,
                                     const sb_channel_t *ch, json_t *answer);

/* Whether id can stand as one URL path segment as it is: 1 or 0. */
int sb_social_path_safe(const char *id);

/*
 * GETs url with header (one "Name: value" line, copied; may be NULL) and
 * calls done with the bytes; with locate, url answers where the bytes are
 * and that is fetched next (same header).  404 and 410 end as SB_ENOENT,
 * anything else that is not 2xx as SB_EUNAVAILABLE.  ch must outlive the
 * fetch (the host holds it until done).  Returns 0 or the fetch's error
 * (done never runs).
 */
int sb_social_fetch_file(const sb_host_api_t *api, sb_plugin_ctx_t *p, const sb_channel_t *ch,
                         const char *url, const char *header, sb_social_locate_fn locate,
                         sb_file_cb done, void *data);

#endif
