/*
 * ingest.c - the inbound pipeline's transaction.  It runs as the server's
 * tenant role with the tenant set from the message's slug, so row-level
 * security holds for channel traffic as for API calls.
 */
#include "ingest.h"
#include "common.h"
#include "log.h"

#include <glib.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INGEST_ATTEMPTS 3
#define INGEST_MAX_ATTACHMENT (25u << 20) /* bytes of a file stored here, not of a reference */
#define INGEST_MAX_FILE_ID 2000

typedef struct {
    sb_db_t *db;
    sb_ingest_done_cb done;
    void *data;
    int attempts;
    /* [0] the tenant; [1..14] the message ($1..$14); [15] the attachments, or NULL */
    const char *params[16];
    char channel_id[24];
    char hint[24];
    char quote_at[24];
    char *refs; /* the references as a JSON array, or NULL */
    sb_buf_t store;
    sb_buf_t files; /* the attachments' JSON */
} ingest_t;

static const char sql_tenant[] =
    "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
    " WHERE slug = $1), ''), true), set_config('switchboard.agent_id', '', true),"
    " set_config('switchboard.api_key_id', '', true)";

/* $1 channel, $2 external id, $3 identity kind, $4 identity value, $5 name,
 * $6 thread key, $7 subject, $8 text, $9 html, $10 channel instance (or
 * NULL), $11 the external ids it answers (a JSON array, or NULL), $12 a
 * ticket number it names (or NULL), $13 sent by a machine, $14 where its
 * quoted history starts (characters, or NULL).  The statement is a no-op
 * when the tenant was not found (sb_tenant() is NULL).
 *
 * The ticket: the one holding the first message it answers if that is
 * the sender's (whoever knows a Message-ID must not write into another
 * customer's ticket; a machine's bounce or auto-reply joins any), followed
 * through a merge, else the one it names if that is the sender's, else
 * the open one of its thread; a closed one is joined only by machine mail.
 * Machine mail never opens a ticket: with none to join it is kept (and
 * searchable) on a new ticket that is closed from the start, tagged
 * auto-submitted, which no view of open work shows. */
static const char sql_ingest[] =
    "WITH dup AS (SELECT m.id, t.number FROM messages m JOIN tickets t"
    "  ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id"
    "  WHERE m.tenant_id = sb_tenant() AND m.channel = $1 AND m.external_id = $2"
    "   AND coalesce(m.channel_id, 0) = coalesce($10::bigint, 0)),"
    " ident AS (SELECT customer_id FROM customer_identities"
    "  WHERE tenant_id = sb_tenant() AND kind = $3 AND value = $4),"
    " go AS (SELECT sb_tenant() IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dup) AS ok),"
    " refs AS (SELECT r.id, r.n FROM json_array_elements_text($11::json) WITH ORDINALITY AS r(id, "
    "n)"
    "  WHERE $11::json IS NOT NULL),"
    " ref_t AS (SELECT coalesce(t.merged_into, t.id) AS id FROM refs"
    "  JOIN messages m ON m.tenant_id = sb_tenant() AND m.channel = $1"
    "   AND coalesce(m.channel_id, 0) = coalesce($10::bigint, 0) AND m.external_id = refs.id"
    "  JOIN tickets t ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id"
    "  WHERE $13::boolean OR t.customer_id = (SELECT customer_id FROM ident)"
    "  ORDER BY refs.n LIMIT 1),"
    " hint_t AS (SELECT coalesce(t.merged_into, t.id) AS id FROM tickets t"
    "  WHERE t.tenant_id = sb_tenant() AND $12::bigint IS NOT NULL AND t.number = $12::bigint"
    "   AND t.customer_id = (SELECT customer_id FROM ident)),"
    " key_t AS (SELECT t.id FROM tickets t"
    "  WHERE t.tenant_id = sb_tenant() AND $6::text IS NOT NULL"
    "   AND t.channel = $1 AND t.thread_key = $6 AND t.status <> 'closed'"
    "   AND coalesce(t.channel_id, 0) = coalesce($10::bigint, 0)"
    "   AND t.merged_into IS NULL ORDER BY t.id DESC LIMIT 1),"
    " open_t AS (SELECT t.id, t.number FROM tickets t"
    "  WHERE t.tenant_id = sb_tenant() AND (SELECT ok FROM go)"
    "   AND t.id = coalesce((SELECT id FROM ref_t), (SELECT id FROM hint_t), (SELECT id FROM "
    "key_t))"
    "   AND (t.status <> 'closed' OR $13::boolean) AND t.merged_into IS NULL FOR UPDATE),"
    " new_c AS (INSERT INTO customers (tenant_id, name)"
    "  SELECT sb_tenant(), coalesce($5, '') WHERE (SELECT ok FROM go)"
    "   AND NOT EXISTS (SELECT 1 FROM ident)"
    "   AND NOT ($13::boolean AND EXISTS (SELECT 1 FROM open_t)) RETURNING id),"
    " new_i AS (INSERT INTO customer_identities (tenant_id, customer_id, kind, value)"
    "  SELECT sb_tenant(), id, $3, $4 FROM new_c RETURNING customer_id),"
    " cust AS (SELECT coalesce((SELECT customer_id FROM ident),"
    "  (SELECT customer_id FROM new_i)) AS id WHERE (SELECT ok FROM go)),"
    " num AS (INSERT INTO ticket_counters (tenant_id, last_number)"
    "  SELECT sb_tenant(), 1 WHERE (SELECT ok FROM go) AND NOT EXISTS (SELECT 1 FROM open_t)"
    "  ON CONFLICT (tenant_id) DO UPDATE SET last_number = ticket_counters.last_number + 1"
    "  RETURNING last_number),"
    " new_t AS (INSERT INTO tickets (tenant_id, number, subject, channel, thread_key, customer_id,"
    "   channel_id, status, tags)"
    "  SELECT sb_tenant(), num.last_number,"
    "   coalesce(nullif($7, ''), nullif(left(regexp_replace($8, '\\s+', ' ', 'g'), 80), ''),"
    "    '(no subject)'), $1, $6, cust.id, $10::bigint,"
    "   CASE WHEN $13::boolean THEN 'closed' ELSE 'new' END,"
    "   CASE WHEN $13::boolean THEN '{auto-submitted}'::text[] ELSE '{}' END"
    "  FROM num, cust RETURNING id, number),"
    " tk AS (SELECT id, number FROM open_t UNION ALL SELECT id, number FROM new_t),"
    " upd AS (UPDATE tickets t SET updated_at = now(), version = t.version + 1,"
    "   status = CASE WHEN t.status IN ('solved', 'pending') AND NOT $13::boolean"
    "    AND sb_survey_reply_rating(t.id, $8) IS NULL THEN 'open' ELSE t.status END"
    "  FROM open_t WHERE t.tenant_id = sb_tenant() AND t.id = open_t.id),"
    " m AS (INSERT INTO messages (tenant_id, ticket_id, direction, author_customer_id,"
    "   body_text, body_html, channel, external_id, channel_id, auto_submitted, quote_at)"
    "  SELECT sb_tenant(), tk.id, 'inbound', cust.id, $8, $9, $1, $2, $10::bigint, $13::boolean,"
    "   $14::integer FROM tk, cust"
    "  RETURNING id, ticket_id),"
    " e AS (INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)"
    "  SELECT sb_tenant(), m.ticket_id, 'customer', cust.id,"
    "   CASE WHEN EXISTS (SELECT 1 FROM new_t) THEN 'ticket.created' ELSE 'message.added' END,"
    "   jsonb_build_object('message_id', m.id, 'channel', $1, 'direction', 'inbound',"
    "    'auto_submitted', $13::boolean)"
    "  FROM m, cust),"
    " n AS (SELECT sb_notify_event(CASE WHEN EXISTS (SELECT 1 FROM new_t)"
    "   THEN 'ticket.created' ELSE 'message.created' END, tk.number, m.id,"
    "   jsonb_build_object('channel', $1::text, 'direction', 'inbound', 'thread_key', $6::text,"
    "    'auto_submitted', $13::boolean))"
    "  FROM m, tk)"
    " SELECT sb_tenant() IS NOT NULL,"
    "  coalesce((SELECT number FROM dup), (SELECT number FROM tk)),"
    "  coalesce((SELECT id FROM dup), (SELECT id FROM m)),"
    "  EXISTS (SELECT 1 FROM dup), (SELECT count(*) FROM n),"
    "  set_config('switchboard.message_id', coalesce((SELECT id FROM m)::text, ''), true)";

/* The files of a new message ($1: a JSON array with the bytes in base64,
 * or a platform's file id for a file left there). */
static const char sql_attachments[] =
    "INSERT INTO attachments (tenant_id, message_id, filename, content_type, size, sha256, data,"
    "  file_id)"
    " SELECT sb_tenant(), current_setting('switchboard.message_id')::bigint, x.filename,"
    "  x.content_type, x.size, decode(x.sha256, 'hex'), decode(x.data, 'base64'), x.file_id"
    " FROM json_to_recordset($1::json) AS x(filename text, content_type text, size bigint,"
    "  sha256 text, data text, file_id text)"
    " WHERE current_setting('switchboard.message_id', true) <> ''";

static int ingest_send(ingest_t *in);

static void ingest_free(ingest_t *in)
{
    sb_buf_free(&in->store);
    sb_buf_free(&in->files);
    free(in->refs);
    free(in);
}

static void ingest_done(int status, PGresult *const *res, int n, void *data)
{
    ingest_t *in = data;
    sb_ingest_result_t r = {0, 0, 0};
    const char *st = "";

    for (int i = 0; res && i < n; i++)
        if (res[i] && PQresultStatus(res[i]) == PGRES_FATAL_ERROR)
            st = PQresultErrorField(res[i], PG_DIAG_SQLSTATE);
    /* Two deliveries of one message (or two first messages of one new
     * customer) raced: run again, and the second finds the first's rows. */
    if (status == SB_EDB && st && strcmp(st, "23505") == 0 && ++in->attempts < INGEST_ATTEMPTS &&
        ingest_send(in) == 0)
        return;
    if (status != 0) {
        if (status == SB_EDB)
            sb_log(SB_LOG_ERR, NULL, "could not store inbound message: SQLSTATE %s", st ? st : "");
        in->done(status == SB_EDB ? SB_EIO : status, NULL, in->data);
        ingest_free(in);
        return;
    }
    const PGresult *q = res[1];
    if (strcmp(PQgetvalue(q, 0, 0), "t") != 0) {
        in->done(SB_ENOENT, NULL, in->data);
        ingest_free(in);
        return;
    }
    r.ticket = atoll(PQgetvalue(q, 0, 1));
    r.message = atoll(PQgetvalue(q, 0, 2));
    r.duplicate = strcmp(PQgetvalue(q, 0, 3), "t") == 0;
    in->done(0, &r, in->data);
    ingest_free(in);
}

static int ingest_send(ingest_t *in)
{
    sb_db_stmt_t s[3] = {{sql_tenant, 1, in->params},
                         {sql_ingest, 14, in->params + 1},
                         {sql_attachments, 1, in->params + 15}};
    return sb_db_query(in->db, s, in->params[15] ? 3 : 2, ingest_done, in);
}

/*
 * A string cut to at most max bytes, on a character boundary (s is valid
 * UTF-8: the byte at the cut starts a character).  Returns whether it cut.
 */
static int ingest_utf8_cut(char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return 0;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    s[n] = '\0';
    return 1;
}

/*
 * An optional string as it can be stored: invalid UTF-8 replaced, cut to
 * max bytes (what says which, for the log).  NULL stays NULL; the caller
 * frees with g_free.
 */
static char *ingest_optional(const char *s, size_t max, const char *what)
{
    if (s == NULL)
        return NULL;
    int valid = g_utf8_validate(s, -1, NULL);
    char *v = valid ? g_strdup(s) : g_utf8_make_valid(s, -1);
    if (!valid)
        sb_log(SB_LOG_WARNING, NULL, "inbound %s is not valid UTF-8: stored with replacements",
               what);
    if (ingest_utf8_cut(v, max))
        sb_log(SB_LOG_WARNING, NULL, "inbound %s is longer than %zu bytes: stored cut", what, max);
    return v;
}

/* One file left on the platform: its id instead of its bytes (size as the platform said). */
static json_t *ingest_attachment_ref(const sb_attachment_t *a, const char *name, const char *type)
{
    /* A reference that cannot be stored is dropped; the message is kept. */
    if (strlen(a->file_id) > INGEST_MAX_FILE_ID || !g_utf8_validate(a->file_id, -1, NULL)) {
        sb_log(SB_LOG_WARNING, NULL,
               "an inbound file's id is not UTF-8 or longer than %d bytes: file not recorded",
               INGEST_MAX_FILE_ID);
        return NULL;
    }
    return json_pack("{s:s,s:s,s:I,s:n,s:n,s:s}", "filename", name, "content_type", type, "size",
                     (json_int_t)a->size, "sha256", "data", "file_id", a->file_id);
}

/* One file with its bytes: name, type, size, SHA-256 and base64 bytes. */
static json_t *ingest_attachment_data(const sb_attachment_t *a, const char *name, const char *type)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    char hex[crypto_hash_sha256_BYTES * 2 + 1];

    if ((a->size > 0 && a->data == NULL) || a->size > INGEST_MAX_ATTACHMENT) {
        sb_log(SB_LOG_WARNING, NULL,
               "an inbound file has no bytes or more than %u: file not stored",
               INGEST_MAX_ATTACHMENT);
        return NULL;
    }
    crypto_hash_sha256(hash, a->data, a->size);
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    size_t b64len = sodium_base64_ENCODED_LEN(a->size, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = sb_xmalloc(b64len);
    sodium_bin2base64(b64, b64len, a->data, a->size, sodium_base64_VARIANT_ORIGINAL);
    json_t *item = json_pack("{s:s,s:s,s:I,s:s,s:s}", "filename", name, "content_type", type,
                             "size", (json_int_t)a->size, "sha256", hex, "data", b64);
    free(b64);
    return item;
}

/*
 * The attachments as one JSON array in out.  A file that cannot be stored
 * (bytes over the limit or missing, a platform id too long) is left out
 * and logged, a bad name or type replaced: the customer's message is never
 * refused for one of its files.  Returns how many are stored.
 */
static size_t ingest_attachments(const sb_inbound_t *msg, sb_buf_t *out)
{
    json_t *list = json_array();

    for (size_t i = 0; i < msg->nattachments; i++) {
        const sb_attachment_t *a = &msg->attachments[i];
        char *name = ingest_optional(a->filename && a->filename[0] ? a->filename : "attachment",
                                     255, "file name");
        const char *type = a->content_type && strlen(a->content_type) <= 255 &&
                                   g_utf8_validate(a->content_type, -1, NULL)
                               ? a->content_type
                               : "";
        if (type[0] == '\0')
            type = "application/octet-stream";
        json_t *item = a->file_id && a->data == NULL ? ingest_attachment_ref(a, name, type)
                                                     : ingest_attachment_data(a, name, type);
        if (item)
            json_array_append_new(list, item);
        g_free(name);
    }
    size_t n = json_array_size(list);
    char *text = json_dumps(list, JSON_COMPACT);
    sb_buf_puts(out, text);
    free(text);
    json_decref(list);
    return n;
}

/* A required string: present, valid UTF-8, at most max bytes, not empty unless may_be_empty. */
static int ingest_required_ok(const char *s, size_t max, int may_be_empty)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    return n <= max && (may_be_empty || n > 0) && g_utf8_validate(s, (gssize)n, NULL);
}

#define INGEST_MAX_REFERENCES 50

/*
 * What says which ticket the message joins beyond its thread key (the ids
 * it answers, a ticket number it names), and what only shapes how it is
 * stored (sent by a machine, where its quoted history starts), as the
 * statement's parameters $11..$14.  An id that is not a storable key is
 * skipped: it can name no stored message.
 */
static void ingest_threading(const sb_inbound_t *msg, ingest_t *in)
{
    if (msg->references && msg->references[0]) {
        json_t *list = json_array();
        for (size_t i = 0; msg->references[i] && i < INGEST_MAX_REFERENCES; i++)
            if (ingest_required_ok(msg->references[i], 500, 0))
                json_array_append_new(list, json_string(msg->references[i]));
        if (json_array_size(list) > 0)
            in->refs = json_dumps(list, JSON_COMPACT);
        json_decref(list);
    }
    in->params[11] = in->refs;
    if (msg->ticket_hint > 0) {
        snprintf(in->hint, sizeof(in->hint), "%lld", (long long)msg->ticket_hint);
        in->params[12] = in->hint;
    }
    in->params[13] = msg->auto_submitted ? "true" : "false";
    /* A byte offset into the text as the plugin gave it; stored in characters. */
    size_t n = strlen(msg->text);
    if (msg->quote_at > 0 && msg->quote_at < n) {
        const char *at = g_utf8_find_prev_char(msg->text, msg->text + msg->quote_at + 1);
        glong chars = at ? g_utf8_pointer_to_offset(msg->text, at) : 0;
        if (chars > 0) {
            snprintf(in->quote_at, sizeof(in->quote_at), "%ld", chars);
            in->params[14] = in->quote_at;
        }
    }
}

int sb_ingest(sb_db_t *db, const sb_inbound_t *msg, sb_ingest_done_cb done, void *data)
{
    /* Keys and the text are refused when bad; what is only shown is repaired. */
    if (!ingest_required_ok(msg->tenant, 63, 0) || !ingest_required_ok(msg->channel, 64, 0) ||
        !ingest_required_ok(msg->external_id, 500, 0) ||
        !ingest_required_ok(msg->identity_kind, 20, 0) ||
        !ingest_required_ok(msg->identity_value, 320, 0) ||
        (msg->thread_key && !ingest_required_ok(msg->thread_key, 500, 0)) ||
        !ingest_required_ok(msg->text, 1000000, msg->nattachments > 0))
        return SB_EINVAL;

    char *name = ingest_optional(msg->sender_name, 200, "sender name");
    char *subject = ingest_optional(msg->subject, 500, "subject");
    char *html = ingest_optional(msg->html, 5000000, "html");
    const char *src[10] = {msg->tenant,         msg->channel, msg->external_id, msg->identity_kind,
                           msg->identity_value, name,         msg->thread_key,  subject,
                           msg->text,           html};
    size_t offs[10];

    ingest_t *in = sb_xcalloc(1, sizeof(*in));
    in->db = db;
    in->done = done;
    in->data = data;
    sb_buf_init(&in->store);
    /* One copy of every string; pointers are set once the buffer stops growing. */
    for (int i = 0; i < 10; i++) {
        offs[i] = in->store.len;
        if (src[i])
            sb_buf_append(&in->store, src[i], strlen(src[i]) + 1);
    }
    for (int i = 0; i < 10; i++)
        in->params[i] = src[i] ? in->store.data + offs[i] : NULL;
    g_free(name);
    g_free(subject);
    g_free(html);
    if (msg->channel_id > 0) {
        snprintf(in->channel_id, sizeof(in->channel_id), "%lld", (long long)msg->channel_id);
        in->params[10] = in->channel_id;
    }
    ingest_threading(msg, in);
    if (msg->nattachments > 0 && msg->attachments) {
        sb_buf_init(&in->files);
        if (ingest_attachments(msg, &in->files) > 0)
            in->params[15] = in->files.data;
    }
    int rc = ingest_send(in);
    if (rc != 0) {
        ingest_free(in);
        return SB_EUNAVAILABLE;
    }
    return 0;
}
