/*
 * email - the email channel.  A channel instance (type "email") owns one or
 * more addresses (settings.address).  Mail reaches it two ways: the
 * business's MTA hands it to the SMTP/LMTP listener every worker runs
 * (the recipient address picks the tenant and channel), or a worker polls
 * the channel's IMAP mailbox.  Either way a message is acknowledged (250,
 * or marked in the mailbox) only after it has committed.  Replies go out
 * through the channel's SMTP relay with a Message-ID, In-Reply-To,
 * References and the ticket's tag, so that the customer's answer threads
 * back into the same ticket.
 */
#include <switchboard/plugin.h>

#include "mailnet.h"
#include "mime.h"
#include "smtpd.h"

#include <ctype.h>
#include <glib.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMAIL_DEFAULT_LISTEN "127.0.0.1:2525"
#define EMAIL_TAG_DEFAULT "[#{number}]"
#define EMAIL_MAX_TEXT 1000000 /* what the host stores of a text */
#define EMAIL_LIST_RETRY_MS 2000
#define EMAIL_LIST_REFRESH_MS 60000
#define EMAIL_IMAP_INTERVAL_S 60

static const sb_host_api_t *api;

/* A channel instance as the plugin keeps it between lists. */
typedef struct email_channel {
    char *tenant;
    int64_t id;
    char *key; /* "tenant/id" */
    json_t *settings;
    char *imap_password; /* copied from the sealed store, or NULL */
} email_channel_t;

/* An IMAP mailbox's progress, kept across lists (and saved as the channel's state). */
typedef struct email_mailbox {
    uint32_t uidvalidity, last_uid;
    int polling;
    int64_t due_ms;
} email_mailbox_t;

static struct {
    sb_plugin_ctx_t *ctx;
    sb_smtpd_t *smtpd, *lmtpd;
    sb_mailnet_t *net;
    GHashTable *by_address; /* lower-case address -> email_channel_t (borrowed from channels) */
    GPtrArray *channels;    /* email_channel_t */
    GHashTable *mailboxes;  /* "tenant/id" -> email_mailbox_t */
    int listed;             /* a list has arrived: RCPT can be answered */
    int listing, list_again;
    sb_plugin_timer_t *list_timer, *poll_timer;
    int worker, workers;
    int stopping;
} em;

/* ======================== settings ======================== */

/* A setting of the plugin (env SWITCHBOARD_EMAIL_<KEY> or the config file), or dflt. */
static const char *email_config(const char *key, const char *dflt)
{
    const char *v = api->config_get(em.ctx, key);
    return v && v[0] ? v : dflt;
}

static long email_config_long(const char *key, long dflt)
{
    const char *v = email_config(key, NULL);
    char *end;
    long n = v ? strtol(v, &end, 10) : dflt;
    return v && (*end != '\0' || n < 0) ? dflt : n;
}

/* Whether s looks like one mailbox address: local@domain, no spaces or brackets. */
static int email_address_ok(const char *s)
{
    const char *at = s ? strchr(s, '@') : NULL;
    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') || strlen(s) > 254)
        return 0;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= ' ' || strchr("<>()[],;:\"\\", *c))
            return 0;
    return 1;
}

static int email_refuse(char *field, size_t field_len, char *message, size_t message_len,
                        const char *f, const char *m)
{
    snprintf(field, field_len, "%s", f);
    snprintf(message, message_len, "%s", m);
    return SB_EINVAL;
}

/* An optional object member that must be a string starting with one of the schemes. */
static int email_url_ok(json_t *obj, const char *key, const char *s1, const char *s2)
{
    const char *url = json_string_value(json_object_get(obj, key));
    return url && (strncmp(url, s1, strlen(s1)) == 0 || strncmp(url, s2, strlen(s2)) == 0) &&
           strlen(url) < 2000;
}

static int email_validate_addresses(json_t *addr, char *field, size_t field_len, char *message,
                                    size_t message_len)
{
    if (json_is_string(addr))
        return email_address_ok(json_string_value(addr))
                   ? 0
                   : email_refuse(field, field_len, message, message_len, "address",
                                  "must be an email address such as support@example.com");
    if (!json_is_array(addr) || json_array_size(addr) == 0 || json_array_size(addr) > 20)
        return email_refuse(field, field_len, message, message_len, "address",
                            "must be an email address or a list of 1 to 20 of them");
    for (size_t i = 0; i < json_array_size(addr); i++)
        if (!email_address_ok(json_string_value(json_array_get(addr, i))))
            return email_refuse(field, field_len, message, message_len, "address",
                                "every entry must be an email address");
    return 0;
}

static int email_validate(sb_plugin_ctx_t *p, const char *json, char *field, size_t field_len,
                          char *message, size_t message_len)
{
    json_t *s = json_loads(json, 0, NULL);
    json_t *relay = json_object_get(s, "relay"), *imap = json_object_get(s, "imap");
    const char *tag = json_string_value(json_object_get(s, "ticket_tag"));
    const char *after = json_string_value(json_object_get(imap, "after"));
    int rc = email_validate_addresses(json_object_get(s, "address"), field, field_len, message,
                                      message_len);

    if (rc == 0 && json_object_get(s, "from") &&
        !email_address_ok(json_string_value(json_object_get(s, "from"))))
        rc = email_refuse(field, field_len, message, message_len, "from",
                          "must be an email address");
    else if (rc == 0 && json_object_get(s, "from_name") &&
             !json_is_string(json_object_get(s, "from_name")))
        rc = email_refuse(field, field_len, message, message_len, "from_name", "must be a string");
    else if (rc == 0 && json_object_get(s, "ticket_tag") &&
             (tag == NULL || strstr(tag, "{number}") == NULL || strlen(tag) > 64))
        rc = email_refuse(field, field_len, message, message_len, "ticket_tag",
                          "must be a short string containing {number}, e.g. \"[#{number}]\"");
    else if (rc == 0 && relay && !email_url_ok(relay, "url", "smtp://", "smtps://"))
        rc = email_refuse(field, field_len, message, message_len, "relay.url",
                          "must be an smtp:// or smtps:// URL");
    else if (rc == 0 && imap && !email_url_ok(imap, "url", "imap://", "imaps://"))
        rc = email_refuse(field, field_len, message, message_len, "imap.url",
                          "must be an imap:// or imaps:// URL naming the mailbox");
    else if (rc == 0 && imap && !json_is_string(json_object_get(imap, "username")))
        rc = email_refuse(field, field_len, message, message_len, "imap.username",
                          "is required with imap");
    else if (rc == 0 && after && strcmp(after, "seen") != 0 && strcmp(after, "delete") != 0 &&
             strcmp(after, "none") != 0 && strncmp(after, "move:", 5) != 0)
        rc = email_refuse(field, field_len, message, message_len, "imap.after",
                          "must be \"seen\", \"delete\", \"none\" or \"move:<mailbox>\"");
    json_decref(s);
    return rc;
}

/* ======================== the channels ======================== */

static void email_channel_free(gpointer data)
{
    email_channel_t *c = data;
    free(c->tenant);
    free(c->key);
    json_decref(c->settings);
    if (c->imap_password)
        sodium_memzero(c->imap_password, strlen(c->imap_password));
    free(c->imap_password);
    free(c);
}

static void email_address_add(const char *addr, email_channel_t *c)
{
    char *key = g_ascii_strdown(addr, -1);
    email_channel_t *other = g_hash_table_lookup(em.by_address, key);
    if (other) {
        api->log(em.ctx, SB_LOG_WARNING,
                 "address \"%s\" belongs to channel %s and channel %s: mail goes to %s", key,
                 other->key, c->key, other->key);
        g_free(key);
        return;
    }
    g_hash_table_insert(em.by_address, key, c);
}

static void email_list_adopt(const sb_channel_t *const *chs, size_t n)
{
    if (em.by_address)
        g_hash_table_destroy(em.by_address);
    if (em.channels)
        g_ptr_array_free(em.channels, TRUE);
    em.by_address = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    em.channels = g_ptr_array_new_with_free_func(email_channel_free);
    for (size_t i = 0; i < n; i++) {
        email_channel_t *c = calloc(1, sizeof(*c));
        const char *pw = api->channel_secret(em.ctx, chs[i], "imap_password");
        c->tenant = strdup(chs[i]->tenant);
        c->id = chs[i]->id;
        c->key = g_strdup_printf("%s/%lld", c->tenant, (long long)c->id);
        c->settings = json_loads(chs[i]->settings, 0, NULL);
        c->imap_password = pw ? strdup(pw) : NULL;
        g_ptr_array_add(em.channels, c);
        json_t *addr = json_object_get(c->settings, "address");
        if (json_is_string(addr))
            email_address_add(json_string_value(addr), c);
        for (size_t k = 0; k < json_array_size(addr); k++)
            email_address_add(json_string_value(json_array_get(addr, k)), c);
        /* A mailbox seen for the first time starts where its saved state says. */
        if (!g_hash_table_contains(em.mailboxes, c->key)) {
            json_t *st = json_loads(chs[i]->state ? chs[i]->state : "{}", 0, NULL);
            json_t *imap = json_object_get(st, "imap");
            email_mailbox_t *mb = calloc(1, sizeof(*mb));
            mb->uidvalidity = (uint32_t)json_integer_value(json_object_get(imap, "uidvalidity"));
            mb->last_uid = (uint32_t)json_integer_value(json_object_get(imap, "last_uid"));
            g_hash_table_insert(em.mailboxes, g_strdup(c->key), mb);
            json_decref(st);
        }
    }
}

static void email_list(void);

static void email_list_tick(sb_plugin_ctx_t *p, void *data)
{
    api->timer_stop(p, em.list_timer); /* a one-shot timer is released by its stop */
    em.list_timer = NULL;
    email_list();
}

static void email_list_schedule(uint64_t after_ms)
{
    if (em.stopping || em.list_timer)
        return;
    api->timer_start(em.ctx, after_ms, 0, email_list_tick, NULL, &em.list_timer);
}

static void email_listed(sb_plugin_ctx_t *p, int status, const sb_channel_t *const *chs, size_t n,
                         void *data)
{
    em.listing = 0;
    if (em.stopping)
        return;
    api->log(p, SB_LOG_DEBUG, "email channels listed: %zu (status %d)", n, status);
    if (status == 0) {
        email_list_adopt(chs, n);
        em.listed = 1;
    }
    if (em.list_again) {
        em.list_again = 0;
        email_list();
        return;
    }
    email_list_schedule(status == 0 ? EMAIL_LIST_REFRESH_MS : EMAIL_LIST_RETRY_MS);
}

/* Reads the channels again (one list at a time; a change meanwhile asks for another). */
static void email_list(void)
{
    if (em.stopping)
        return;
    if (em.listing) {
        em.list_again = 1;
        return;
    }
    if (api->channels_list(em.ctx, email_listed, NULL) == 0)
        em.listing = 1;
    else
        email_list_schedule(EMAIL_LIST_RETRY_MS);
}

static void email_channels_changed(sb_plugin_ctx_t *p)
{
    if (em.list_timer) {
        api->timer_stop(em.ctx, em.list_timer);
        em.list_timer = NULL;
    }
    email_list();
}

/* The channel that owns addr: exactly, or without a "+detail" in its local part. */
static email_channel_t *email_channel_for(const char *addr)
{
    if (em.by_address == NULL)
        return NULL;
    char *key = g_ascii_strdown(addr, -1);
    email_channel_t *c = g_hash_table_lookup(em.by_address, key);
    char *plus = strchr(key, '+'), *at = strchr(key, '@');
    if (c == NULL && plus && at && plus < at) {
        memmove(plus, at, strlen(at) + 1);
        c = g_hash_table_lookup(em.by_address, key);
    }
    g_free(key);
    return c;
}

/* ======================== storing a message ======================== */

/* One parsed message on its way into one channel. */
typedef struct {
    sb_mail_t *mail;
    char external_id[100];
    char *text; /* mail->text, or a stand-in, cut to what the host stores */
    sb_attachment_t *files;
} email_msg_t;

static void email_msg_free(email_msg_t *em_msg)
{
    sb_mail_free(em_msg->mail);
    g_free(em_msg->text);
    free(em_msg->files);
    free(em_msg);
}

/*
 * raw parsed, with the key it is stored under: its Message-ID, or for mail
 * without one a hash of its bytes (a retried delivery of the same bytes is
 * then stored once).  NULL when out of memory.
 */
static email_msg_t *email_msg_new(const char *raw, size_t len)
{
    email_msg_t *m = calloc(1, sizeof(*m));
    unsigned char hash[crypto_generichash_BYTES];
    char hex[crypto_generichash_BYTES * 2 + 1];

    if (m == NULL || sb_mail_parse(raw, len, &m->mail) != 0) {
        free(m);
        return NULL;
    }
    if (m->mail->message_id && strlen(m->mail->message_id) < sizeof(m->external_id)) {
        snprintf(m->external_id, sizeof(m->external_id), "%s", m->mail->message_id);
    } else {
        crypto_generichash(hash, sizeof(hash), (const unsigned char *)raw, len, NULL, 0);
        sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
        snprintf(m->external_id, sizeof(m->external_id), "<%.64s@hash.switchboard.invalid>", hex);
    }
    size_t n = strlen(m->mail->text);
    if (n == 0 && m->mail->nfiles == 0)
        m->text = g_strdup("(empty message)");
    else
        m->text = g_strndup(m->mail->text, n > EMAIL_MAX_TEXT ? EMAIL_MAX_TEXT : n);
    /* Cut on a character boundary: the host refuses broken UTF-8. */
    if (n > EMAIL_MAX_TEXT) {
        const char *end = NULL;
        g_utf8_validate(m->text, -1, &end);
        m->text[end - m->text] = '\0';
    }
    m->files = calloc(m->mail->nfiles + 1, sizeof(sb_attachment_t));
    for (size_t i = 0; i < m->mail->nfiles; i++) {
        m->files[i].filename = m->mail->files[i].filename;
        m->files[i].content_type = m->mail->files[i].content_type;
        m->files[i].data = m->mail->files[i].data;
        m->files[i].size = m->mail->files[i].size;
    }
    return m;
}

/* Whether s can key a customer's email identity: present, UTF-8, at most 320 bytes. */
static int email_sender_ok(const char *s)
{
    return s && s[0] && strlen(s) <= 320 && g_utf8_validate(s, -1, NULL);
}

/* The message as the host stores it for channel c (borrowing from m). */
static void email_inbound(const email_msg_t *m, const email_channel_t *c, const char *envelope_from,
                          sb_inbound_t *in)
{
    const sb_mail_t *mail = m->mail;
    const char *tag = json_string_value(json_object_get(c->settings, "ticket_tag"));
    const char *from = mail->from_addr;

    /* A sender the host could not key a customer by would refuse the whole message. */
    if (!email_sender_ok(from))
        from = email_sender_ok(envelope_from) ? envelope_from : "unknown@invalid";
    memset(in, 0, sizeof(*in));
    in->tenant = c->tenant;
    in->channel = "email";
    in->channel_id = c->id;
    in->external_id = m->external_id;
    in->identity_kind = "email";
    in->identity_value = from;
    in->sender_name = mail->from_name;
    in->subject = mail->subject;
    in->text = m->text;
    in->html = mail->html;
    in->attachments = m->files;
    in->nattachments = mail->nfiles;
    in->references = (const char *const *)mail->references;
    in->ticket_hint = mail->subject ? sb_mail_tag_find(mail->subject, tag) : 0;
    in->auto_submitted = mail->auto_submitted;
    in->quote_at = mail->text_new_len < strlen(m->text) ? mail->text_new_len : 0;
}

/* ======================== SMTP and LMTP ======================== */

static int email_rcpt(const char *addr, void *data)
{
    if (!em.listed)
        return SB_EUNAVAILABLE; /* the channels are not known yet: the MTA retries */
    return email_channel_for(addr) ? 0 : SB_ENOENT;
}

/*
 * One ingest in flight: the message for one channel, which answers every
 * recipient of the message that the channel owns (one copy is stored
 * however many of its addresses were named).
 */
typedef struct {
    sb_smtpd_tx_t *tx;
    size_t *rcpts;
    size_t n;
} email_rcpt_t;

static void email_answer(email_rcpt_t *er, int rc)
{
    for (size_t k = 0; k < er->n; k++)
        sb_smtpd_result(er->tx, er->rcpts[k], rc);
    free(er->rcpts);
    free(er);
}

/* What an ingest's status means to the sending MTA. */
static int email_smtp_rc(int status)
{
    if (status == 0 || status == SB_EINVAL || status == SB_ENOENT)
        return status;
    return SB_EUNAVAILABLE;
}

static void email_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r, void *data)
{
    email_answer(data, email_smtp_rc(status));
}

/* The recipients from first on that channel c owns, marked handled. */
static email_rcpt_t *email_rcpts_of(sb_smtpd_tx_t *tx, email_channel_t *const *chans, size_t n,
                                    size_t first, char *handled)
{
    email_rcpt_t *er = calloc(1, sizeof(*er));
    er->tx = tx;
    er->rcpts = calloc(n, sizeof(*er->rcpts));
    for (size_t j = first; j < n; j++) {
        if (!handled[j] && chans[j] == chans[first]) {
            er->rcpts[er->n++] = j;
            handled[j] = 1;
        }
    }
    return er;
}

static void email_message(sb_smtpd_tx_t *tx, const char *from, const char *const *rcpts,
                          size_t nrcpts, const char *raw, size_t len, void *data)
{
    email_msg_t *m = email_msg_new(raw, len);
    email_channel_t **chans = calloc(nrcpts + 1, sizeof(*chans));
    char *handled = calloc(nrcpts + 1, 1);
    sb_inbound_t in;

    for (size_t i = 0; i < nrcpts; i++)
        chans[i] = m ? email_channel_for(rcpts[i]) : NULL;
    for (size_t i = 0; i < nrcpts; i++) {
        if (handled[i])
            continue;
        if (chans[i] == NULL) {
            handled[i] = 1;
            sb_smtpd_result(tx, i, m ? SB_ENOENT : SB_EUNAVAILABLE);
            continue;
        }
        email_rcpt_t *er = email_rcpts_of(tx, chans, nrcpts, i, handled);
        email_inbound(m, chans[i], from, &in);
        int rc = api->ingest(em.ctx, &in, email_stored, er); /* copies in */
        if (rc == SB_EINVAL)
            api->log(em.ctx, SB_LOG_WARNING, "mail %s for %s cannot be stored", m->external_id,
                     rcpts[i]);
        if (rc != 0)
            email_answer(er, email_smtp_rc(rc));
    }
    free(chans);
    free(handled);
    if (m)
        email_msg_free(m);
}

static int email_listen_one(const char *addr, int lmtp, sb_smtpd_t **out)
{
    sb_smtpd_config_t cfg = {
        .listen = addr,
        .lmtp = lmtp,
        .hostname = email_config("hostname", NULL),
        .max_size = (size_t)email_config_long("max_size", 25L << 20),
        .max_rcpts = (unsigned)email_config_long("max_recipients", 100),
        .max_clients = (unsigned)email_config_long("max_clients", 200),
        .timeout_ms = (unsigned)email_config_long("timeout", 300) * 1000u,
        .rcpt = email_rcpt,
        .message = email_message,
    };
    int rc = sb_smtpd_listen(api->loop(em.ctx), &cfg, out);
    if (rc != 0)
        api->log(em.ctx, SB_LOG_ERR, "could not listen for %s on \"%s\": %s",
                 lmtp ? "LMTP" : "SMTP", addr, rc == SB_EINVAL ? "bad address" : "bind failed");
    return rc;
}

/*
 * SWITCHBOARD_SMTP_LISTEN (else the setting listen, else 127.0.0.1:2525)
 * speaks SMTP, or LMTP with protocol = lmtp; lmtp_listen adds an LMTP
 * address beside it.  "off" turns a listener off.
 */
static int email_listen(void)
{
    const char *env = getenv("SWITCHBOARD_SMTP_LISTEN");
    const char *addr = env && env[0] ? env : email_config("listen", EMAIL_DEFAULT_LISTEN);
    const char *proto = email_config("protocol", "smtp");
    const char *lmtp = email_config("lmtp_listen", NULL);

    if (strcmp(addr, "off") != 0 &&
        email_listen_one(addr, strcmp(proto, "lmtp") == 0, &em.smtpd) != 0)
        return SB_EIO;
    if (lmtp && strcmp(lmtp, "off") != 0 && email_listen_one(lmtp, 1, &em.lmtpd) != 0)
        return SB_EIO;
    return 0;
}

/* ======================== IMAP ======================== */

/*
 * One poll of one channel's mailbox.  It lives until the poll has ended
 * and no message of it is still being stored: a stop ends the poll while
 * an ingest may be in flight, and the poll must not be answered then.
 */
typedef struct {
    char *key;
    char *tenant;
    int64_t id;
    json_t *settings;
    sb_imap_poll_t *poll;
    int storing; /* a message is being stored */
    int ended;   /* done has run: poll is gone */
} email_poll_t;

static void email_poll_free(email_poll_t *ep)
{
    free(ep->key);
    free(ep->tenant);
    json_decref(ep->settings);
    free(ep);
}

/* The message being stored has its answer: tell the poll, unless it has ended. */
static void email_imap_answer(email_poll_t *ep, int rc)
{
    ep->storing = 0;
    if (ep->ended) {
        email_poll_free(ep);
        return;
    }
    /* Mail that can never be stored is passed over, or it would block the mailbox. */
    sb_imap_stored(ep->poll, rc == SB_EINVAL ? 0 : rc); /* may end the poll and free ep */
}

static void email_imap_stored(sb_plugin_ctx_t *p, int status, const sb_ingest_result_t *r,
                              void *data)
{
    email_poll_t *ep = data;
    if (status == 0 && r && r->duplicate)
        api->log(p, SB_LOG_DEBUG, "mail of channel %s fetched again: stored before", ep->key);
    email_imap_answer(ep, status);
}

static void email_imap_message(sb_imap_poll_t *poll, uint32_t uid, const char *raw, size_t len,
                               void *data)
{
    email_poll_t *ep = data;
    email_channel_t c = {
        .tenant = ep->tenant, .id = ep->id, .key = ep->key, .settings = ep->settings};
    email_msg_t *m;
    sb_inbound_t in;
    char note[400];

    /* Too large to fetch: a note of it becomes the message, so that someone
     * looks in the mailbox (where it stays) instead of it being passed over. */
    if (raw == NULL) {
        snprintf(note, sizeof(note),
                 "From: Switchboard <mailbox@invalid>\r\nSubject: A message too large to fetch"
                 "\r\nMessage-ID: <too-large.%u.%s@mailbox.invalid>\r\n\r\nThe mailbox of "
                 "this channel holds a message of %zu bytes (IMAP UID %u), more than can be "
                 "fetched. It was left in the mailbox.\r\n",
                 uid, ep->key, len, uid);
        raw = note;
        len = strlen(note);
    }
    m = email_msg_new(raw, len);
    ep->poll = poll;
    ep->storing = 1;
    if (m == NULL) {
        email_imap_answer(ep, SB_ENOMEM);
        return;
    }
    email_inbound(m, &c, NULL, &in);
    int rc = api->ingest(em.ctx, &in, email_imap_stored, ep);
    if (rc == SB_EINVAL)
        api->log(em.ctx, SB_LOG_WARNING, "mail %s (UID %u) of channel %s cannot be stored",
                 m->external_id, uid, ep->key);
    email_msg_free(m);
    if (rc != 0)
        email_imap_answer(ep, rc);
}

static void email_state_saved(sb_plugin_ctx_t *p, int status, void *data)
{
    if (status != 0)
        api->log(p, SB_LOG_WARNING,
                 "could not save a mailbox's position: its last messages are fetched again "
                 "(and stored once)");
}

static void email_imap_done(int rc, uint32_t uidvalidity, uint32_t last_uid, const char *error,
                            void *data)
{
    email_poll_t *ep = data;
    email_mailbox_t *mb = em.mailboxes ? g_hash_table_lookup(em.mailboxes, ep->key) : NULL;

    if (rc != 0 && rc != SB_ECLOSED)
        api->log(em.ctx, SB_LOG_WARNING, "could not fetch the mailbox of channel %s: %s", ep->key,
                 error ? error : "error");
    if (mb && (mb->uidvalidity != uidvalidity || mb->last_uid != last_uid)) {
        mb->uidvalidity = uidvalidity;
        mb->last_uid = last_uid;
        char *state = g_strdup_printf("{\"imap\":{\"uidvalidity\":%u,\"last_uid\":%u}}",
                                      uidvalidity, last_uid);
        api->channel_state_save(em.ctx, ep->tenant, ep->id, state, email_state_saved, NULL);
        g_free(state);
    }
    if (mb)
        mb->polling = 0;
    ep->ended = 1;
    if (!ep->storing)
        email_poll_free(ep);
}

static void email_poll_one(email_channel_t *c, email_mailbox_t *mb, int64_t now_ms)
{
    json_t *imap = json_object_get(c->settings, "imap");
    long every = (long)json_integer_value(json_object_get(imap, "interval"));
    sb_imap_account_t acct = {
        .url = json_string_value(json_object_get(imap, "url")),
        .username = json_string_value(json_object_get(imap, "username")),
        .password = c->imap_password ? c->imap_password : "",
        .after = json_string_value(json_object_get(imap, "after")),
    };

    if (every <= 0)
        every = email_config_long("imap_interval", EMAIL_IMAP_INTERVAL_S);
    mb->due_ms = now_ms + every * 1000;
    email_poll_t *ep = calloc(1, sizeof(*ep));
    ep->key = strdup(c->key);
    ep->tenant = strdup(c->tenant);
    ep->id = c->id;
    ep->settings = json_incref(c->settings);
    if (sb_imap_poll(em.net, &acct, mb->uidvalidity, mb->last_uid, 0, email_imap_message,
                     email_imap_done, ep) != 0) {
        api->log(em.ctx, SB_LOG_WARNING, "cannot fetch the mailbox of channel %s: bad settings",
                 c->key);
        email_poll_free(ep);
        return;
    }
    mb->polling = 1;
}

/* Each mailbox is polled by one worker of the server (its id modulo their number). */
static void email_poll_tick(sb_plugin_ctx_t *p, void *data)
{
    int64_t now_ms = (int64_t)(g_get_monotonic_time() / 1000);

    if (em.channels == NULL || em.net == NULL)
        return;
    for (guint i = 0; i < em.channels->len; i++) {
        email_channel_t *c = g_ptr_array_index(em.channels, i);
        email_mailbox_t *mb = g_hash_table_lookup(em.mailboxes, c->key);
        if (mb == NULL || mb->polling || mb->due_ms > now_ms ||
            json_object_get(c->settings, "imap") == NULL || c->id % em.workers != em.worker)
            continue;
        email_poll_one(c, mb, now_ms);
    }
}

/* ======================== replies ======================== */

typedef struct {
    sb_send_cb done;
    void *data;
    char message_id[160];
} email_send_t;

static void email_relayed(int result, const char *detail, void *data)
{
    email_send_t *es = data;
    if (result == SB_SENT)
        api->send_report(em.ctx, es->data, es->message_id, 0);
    es->done(em.ctx, result, detail, es->data);
    free(es);
}

/* "Re: <subject> <tag>": one "Re:", and the tag unless the subject has it. */
static char *email_reply_subject(const sb_outbound_t *msg, const char *fmt)
{
    const char *subject = msg->subject && msg->subject[0] ? msg->subject : "Your request";
    char tag[96];
    int has_re = g_ascii_strncasecmp(subject, "re:", 3) == 0;

    sb_mail_tag_format(fmt, msg->ticket, tag, sizeof(tag));
    int has_tag = sb_mail_tag_find(subject, fmt) == msg->ticket;
    return g_strdup_printf("%s%s%s%s", has_re ? "" : "Re: ", subject, has_tag ? "" : " ",
                           has_tag ? "" : tag);
}

/* The relay: the channel's, else the plugin's (setting relay). */
static void email_relay_of(json_t *settings, const sb_channel_t *ch, sb_relay_t *r)
{
    json_t *relay = json_object_get(settings, "relay");
    const char *tls = json_string_value(json_object_get(relay, "starttls"));

    memset(r, 0, sizeof(*r));
    r->url = relay ? json_string_value(json_object_get(relay, "url")) : email_config("relay", NULL);
    r->username = json_string_value(json_object_get(relay, "username"));
    r->password = r->username ? api->channel_secret(em.ctx, ch, "relay_password") : NULL;
    r->starttls = tls == NULL || strcmp(tls, "try") == 0 ? 1 : strcmp(tls, "require") == 0 ? 2 : 0;
}

static int email_send_built(const sb_outbound_t *msg, json_t *settings, const char *from,
                            email_send_t *es, sb_send_cb done, void *data)
{
    const char *fmt = json_string_value(json_object_get(settings, "ticket_tag"));
    char *subject = email_reply_subject(msg, fmt ? fmt : EMAIL_TAG_DEFAULT);
    sb_mail_reply_t reply = {
        .from_addr = from,
        .from_name = json_string_value(json_object_get(settings, "from_name")),
        .to_addr = msg->identity_value,
        .subject = subject,
        .message_id = es->message_id,
        .in_reply_to = msg->in_reply_to,
        .references = msg->references,
        .text = msg->text ? msg->text : "",
        .html = msg->html,
        .auto_replied = msg->auto_generated,
    };
    sb_relay_t relay;
    const char *rcpts[2] = {msg->identity_value, NULL};
    char *out = NULL;
    size_t len = 0;

    email_relay_of(settings, msg->instance, &relay);
    int rc = sb_mail_build(&reply, &out, &len);
    g_free(subject);
    if (rc != 0) {
        done(em.ctx, SB_FAILED, "the reply could not be composed", data);
        return 0;
    }
    if (relay.url == NULL) {
        free(out);
        done(em.ctx, SB_FAILED, "the channel has no SMTP relay (settings.relay.url)", data);
        return 0;
    }
    rc = sb_relay_send(em.net, &relay, from, rcpts, out, len, email_relayed, es);
    free(out);
    if (rc != 0)
        done(em.ctx, SB_FAILED, "the channel's relay settings are not usable", data);
    return rc == 0 ? SB_AGAIN : 0;
}

static int email_send(sb_plugin_ctx_t *p, const sb_outbound_t *msg, sb_send_cb done, void *data)
{
    json_t *settings = msg->instance ? json_loads(msg->instance->settings, 0, NULL) : NULL;
    json_t *addr = json_object_get(settings, "address");
    const char *from = json_string_value(json_object_get(settings, "from"));
    const char *domain;

    if (from == NULL)
        from = json_is_array(addr) ? json_string_value(json_array_get(addr, 0))
                                   : json_string_value(addr);
    if (settings == NULL || from == NULL || em.net == NULL) {
        json_decref(settings);
        done(p, SB_FAILED, "the ticket has no email channel to answer from", data);
        return 0;
    }
    if (msg->identity_kind == NULL || strcmp(msg->identity_kind, "email") != 0 ||
        !email_address_ok(msg->identity_value)) {
        json_decref(settings);
        done(p, SB_FAILED, "the customer has no email address", data);
        return 0;
    }
    email_send_t *es = calloc(1, sizeof(*es));
    es->done = done;
    es->data = data;
    domain = strchr(from, '@') + 1;
    sb_mail_new_id(domain, es->message_id, sizeof(es->message_id));
    int rc = email_send_built(msg, settings, from, es, done, data);
    if (rc != SB_AGAIN)
        free(es);
    json_decref(settings);
    return 0;
}

/* ======================== lifecycle ======================== */

static int email_start(sb_plugin_ctx_t *p)
{
    em.stopping = 0;
    api->worker_info(p, &em.worker, &em.workers);
    if (em.workers <= 0)
        em.workers = 1;
    em.mailboxes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, free);
    if (sb_mailnet_open(api->loop(p), &em.net) != 0)
        em.net = NULL;
    if (email_listen() != 0)
        return SB_EIO;
    email_list();
    api->timer_start(p, 1000, 1000, email_poll_tick, NULL, &em.poll_timer);
    return 0;
}

static void email_stop(sb_plugin_ctx_t *p)
{
    em.stopping = 1;
    if (em.list_timer)
        api->timer_stop(p, em.list_timer);
    if (em.poll_timer)
        api->timer_stop(p, em.poll_timer);
    em.list_timer = em.poll_timer = NULL;
    if (em.smtpd)
        sb_smtpd_close(em.smtpd);
    if (em.lmtpd)
        sb_smtpd_close(em.lmtpd);
    em.smtpd = em.lmtpd = NULL;
    if (em.net)
        sb_mailnet_close(em.net); /* polls end with SB_ECLOSED, sends with a retry */
    em.net = NULL;
    if (em.by_address)
        g_hash_table_destroy(em.by_address);
    if (em.channels)
        g_ptr_array_free(em.channels, TRUE);
    if (em.mailboxes)
        g_hash_table_destroy(em.mailboxes);
    em.by_address = NULL;
    em.channels = NULL;
    em.mailboxes = NULL;
    em.listed = 0;
    sb_mail_shutdown();
}

static int email_init(sb_plugin_ctx_t *p, const sb_host_api_t *host)
{
    if (host->abi_minor < 3 || host->size < offsetof(sb_host_api_t, worker_info) + sizeof(void *))
        return SB_EINVAL; /* needs the host's channel lists */
    api = host;
    em.ctx = p;
    if (sodium_init() < 0)
        return SB_EINVAL;
    return 0;
}

SB_PLUGIN_DEFINE(.name = "email", .version = "1.0", .init = email_init, .start = email_start,
                 .stop = email_stop, .send = email_send, .validate_settings = email_validate,
                 .channels_changed = email_channels_changed)
