/*
 * loader.c - finding, checking and loading channel plugins, and the host
 * function table they are given.  Loading happens once, in the master;
 * the routes a plugin declares there are added to every worker's router
 * after fork, and start/stop run in each worker.  Not for ingest's SQL
 * (ingest.c).
 */
#include "plugin/host.h"
#include "common.h"
#include "http/client.h"
#include "ingest.h"
#include "log.h"
#include "plugin/internal.h"
#include "pool.h"
#include "secrets.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <jansson.h>
#include <sodium.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLUGINS_MAX 64

typedef struct plugin_route {
    struct plugin_route *next;
    sb_plugin_ctx_t *ctx;
    char *method, *pattern;
    sb_plugin_http_cb cb;
    void *data;
} plugin_route_t;

struct sb_plugin_timer {
    uv_timer_t handle;
    sb_plugin_ctx_t *ctx;
    sb_plugin_timer_cb cb;
    void *data;
};

struct sb_plugin_ctx {
    char *name;
    void *dl;
    const sb_plugin_t *desc;
    sb_log_ctx_t log;
    plugin_route_t *routes;
    int initialising;
    int started;
    sb_buf_t kept; /* copies of the settings handed out: they outlive reloads */
    sb_plugin_event_cb on_event;
    void *event_data;
};

static struct {
    const sb_config_t *cfg;
    sb_plugin_ctx_t *plugins[PLUGINS_MAX];
    size_t n;
    uv_loop_t *loop;
    sb_db_t *db;
    sb_http_client_t *client; /* the plugins' outbound HTTP, per worker */
    int worker_index;
} host;

/*
 * s as valid UTF-8: a copy, with invalid bytes replaced, for text that is
 * only shown (a delivery error).  The caller frees with g_free.
 */
static char *loader_utf8_valid(const char *s)
{
    return g_utf8_validate(s, -1, NULL) ? g_strdup(s) : g_utf8_make_valid(s, -1);
}

/* A plugin built for ABI minor `minor` or later: it knows that minor's structs. */
static int loader_abi_minor_ge(const sb_plugin_ctx_t *p, int minor)
{
    return p->desc->abi_minor >= minor;
}

/* ======================== host functions ======================== */

static void host_log(sb_plugin_ctx_t *p, sb_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_log_va(level, &p->log, NULL, NULL, fmt, ap);
    va_end(ap);
}

/*
 * The ABI promises settings "for the process's life", but a reload replaces
 * the configuration they live in: hand out copies the plugin keeps.
 */
static const char *host_config_get(sb_plugin_ctx_t *p, const char *key)
{
    const char *v = sb_config_plugin_get(host.cfg, p->name, key);
    if (v == NULL)
        return NULL;
    char *copy = sb_xstrdup(v);
    sb_buf_append(&p->kept, &copy, sizeof(copy));
    return copy;
}

static int host_http_route(sb_plugin_ctx_t *p, const char *method, const char *pattern,
                           sb_plugin_http_cb cb, void *data)
{
    if (!p->initialising || pattern == NULL || pattern[0] != '/' || method == NULL)
        return SB_EINVAL;
    plugin_route_t *r = sb_xcalloc(1, sizeof(*r));
    r->ctx = p;
    r->method = sb_xstrdup(method);
    r->pattern = sb_xstrdup(pattern);
    r->cb = cb;
    r->data = data;
    r->next = p->routes;
    p->routes = r;
    return 0;
}

static uv_loop_t *host_loop(sb_plugin_ctx_t *p)
{
    return host.loop;
}

static void host_timer_fire(uv_timer_t *h)
{
    sb_plugin_timer_t *t = h->data;
    t->cb(t->ctx, t->data);
}

static int host_timer_start(sb_plugin_ctx_t *p, uint64_t after_ms, uint64_t repeat_ms,
                            sb_plugin_timer_cb cb, void *data, sb_plugin_timer_t **out)
{
    if (host.loop == NULL || cb == NULL)
        return SB_EINVAL;
    sb_plugin_timer_t *t = sb_xcalloc(1, sizeof(*t));
    t->ctx = p;
    t->cb = cb;
    t->data = data;
    uv_timer_init(host.loop, &t->handle);
    t->handle.data = t;
    uv_timer_start(&t->handle, host_timer_fire, after_ms, repeat_ms);
    if (out)
        *out = t;
    return 0;
}

static void host_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void host_timer_stop(sb_plugin_ctx_t *p, sb_plugin_timer_t *t)
{
    if (t == NULL)
        return;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, host_timer_closed);
}

typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_ingest_cb cb;
    void *data;
} host_ingest_t;

static void host_ingest_done(int status, const sb_ingest_result_t *r, void *data)
{
    host_ingest_t *hi = data;
    hi->cb(hi->ctx, status, r, hi->data);
    free(hi);
}

/*
 * A plugin built before ABI 1.3 passes shorter structs: copy what it has
 * into the host's layout (zeroing the rest), attachments included, whose
 * stride before 1.2 is the old size.  A 1.0 message ends at html: reading
 * on would take whatever follows it for attachments.  *files is the
 * caller's to free.
 */
static void host_inbound_upgrade(const sb_plugin_ctx_t *p, const sb_inbound_t *msg, sb_inbound_t *m,
                                 sb_attachment_t **files)
{
    const size_t old_stride = offsetof(sb_attachment_t, file_id);

    memset(m, 0, sizeof(*m));
    *files = NULL;
    if (loader_abi_minor_ge(p, 2)) {
        memcpy(m, msg, offsetof(sb_inbound_t, channel_id) + sizeof(m->channel_id));
        return;
    }
    memcpy(m, msg,
           loader_abi_minor_ge(p, 1) ? offsetof(sb_inbound_t, channel_id)
                                     : offsetof(sb_inbound_t, attachments));
    if (m->nattachments == 0 || msg->attachments == NULL)
        return;
    *files = sb_xcalloc(m->nattachments, sizeof(sb_attachment_t));
    for (size_t i = 0; i < m->nattachments; i++)
        memcpy(&(*files)[i], (const char *)msg->attachments + i * old_stride, old_stride);
    m->attachments = *files;
}

static int host_ingest(sb_plugin_ctx_t *p, const sb_inbound_t *msg, sb_ingest_cb done, void *data)
{
    sb_inbound_t m;
    sb_attachment_t *files = NULL;

    if (done == NULL || msg == NULL)
        return SB_EINVAL;
    if (host.db == NULL)
        return SB_EUNAVAILABLE; /* before start or while stopping: worth a retry */
    if (loader_abi_minor_ge(p, 3))
        m = *msg;
    else
        host_inbound_upgrade(p, msg, &m, &files);
    host_ingest_t *hi = sb_xmalloc(sizeof(*hi));
    hi->ctx = p;
    hi->cb = done;
    hi->data = data;
    int rc = sb_ingest(host.db, &m, host_ingest_done, hi); /* copies m */
    free(files);
    if (rc != 0)
        free(hi);
    return rc;
}

static const char *host_req_method(sb_http_req_t *req)
{
    return sb_http_req_method(req);
}

static const char *host_req_param(sb_http_req_t *req, const char *name)
{
    return sb_http_req_param(req, name);
}

static const char *host_req_header(sb_http_req_t *req, const char *name)
{
    return sb_http_req_header(req, name);
}

static int host_ws_accept(sb_plugin_ctx_t *p, sb_http_req_t *req, const sb_ws_callbacks_t *cbs,
                          void *data, sb_ws_t **out)
{
    return sb_ws_accept(req, cbs, data, out);
}

static int host_events_subscribe(sb_plugin_ctx_t *p, sb_plugin_event_cb cb, void *data)
{
    if (host.loop == NULL)
        return SB_EINVAL;
    p->on_event = cb;
    p->event_data = data;
    return 0;
}

typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_plugin_json_cb cb;
    void *data;
    char after[24];
} host_thread_t;

static void host_thread_done(int status, PGresult *const *res, int n, void *data)
{
    host_thread_t *t = data;
    if (status == 0 && strcmp(PQgetvalue(res[0], 0, 0), "t") != 0)
        status = SB_ENOENT;
    if (status == SB_EDB)
        status = SB_EINVAL;
    t->cb(t->ctx, status, status == 0 ? PQgetvalue(res[1], 0, 0) : NULL, t->data);
    free(t);
}

static int host_thread_messages(sb_plugin_ctx_t *p, const char *tenant, const char *channel,
                                const char *thread_key, int64_t after, sb_plugin_json_cb cb,
                                void *data)
{
    static const char sql_tenant[] =
        "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
        " WHERE slug = $1), ''), true) <> ''";
    static const char sql_list[] = "SELECT sb_thread_messages($1, $2, $3::bigint)";
    if (host.db == NULL || tenant == NULL || channel == NULL || thread_key == NULL || cb == NULL)
        return SB_EINVAL;
    host_thread_t *t = sb_xcalloc(1, sizeof(*t));
    t->ctx = p;
    t->cb = cb;
    t->data = data;
    snprintf(t->after, sizeof(t->after), "%lld", (long long)after);
    const char *p1[1] = {tenant};
    const char *p2[3] = {channel, thread_key, t->after};
    sb_db_stmt_t s[2] = {{sql_tenant, 1, p1}, {sql_list, 3, p2}};
    if (sb_db_query(host.db, s, 2, host_thread_done, t) != 0) {
        free(t);
        return SB_EUNAVAILABLE;
    }
    return 0;
}

static int host_secret_key(sb_plugin_ctx_t *p, unsigned char out[32])
{
    char purpose[96];
    snprintf(purpose, sizeof(purpose), "plugin:%s", p->name);
    return sb_secrets_derive(purpose, out);
}

static void host_typing_sent(int status, PGresult *const *res, int n, void *data)
{
}

static int host_typing(sb_plugin_ctx_t *p, const char *tenant, const char *channel,
                       const char *thread_key)
{
    static const char sql_tenant[] =
        "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
        " WHERE slug = $1), ''), true)";
    static const char sql_notify[] =
        "SELECT pg_notify('switchboard_events', json_build_object('tenant_id', sb_tenant(),"
        " 'tenant', $1::text, 'type', 'typing', 'from', 'customer', 'channel', $2::text,"
        " 'thread_key', $3::text, 'ticket', (SELECT max(k.number) FROM tickets k"
        "  WHERE k.tenant_id = sb_tenant() AND k.channel = $2 AND k.thread_key = $3),"
        " 'at', now())::text) WHERE sb_tenant() IS NOT NULL";
    const char *params[3] = {tenant, channel, thread_key};
    sb_db_stmt_t s[2] = {{sql_tenant, 1, params}, {sql_notify, 3, params}};
    if (host.db == NULL || tenant == NULL || channel == NULL || thread_key == NULL)
        return SB_EINVAL;
    return sb_db_query(host.db, s, 2, host_typing_sent, NULL);
}

/* ---- ABI 1.2 ---- */

typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_fetch_cb cb;
    void *data;
} host_fetch_t;

static void host_fetch_done(int rc, const sb_http_client_res_t *res, void *data)
{
    host_fetch_t *f = data;
    sb_fetch_res_t r = {res->status, res->body, res->len, res->retry_after, res->error};
    f->cb(f->ctx, rc, &r, f->data);
    free(f);
}

static int host_fetch(sb_plugin_ctx_t *p, const sb_fetch_req_t *req, sb_fetch_cb cb, void *data)
{
    if (host.client == NULL || req == NULL || cb == NULL || req->url == NULL)
        return SB_EINVAL;
    /* Plain http only where private addresses are allowed (see loader_settings_https). */
    if (!(host.cfg && host.cfg->channels_allow_private) &&
        strncasecmp(req->url, "https://", 8) != 0)
        return SB_EINVAL;
    sb_http_client_req_t r = {req->method, req->url, req->headers,
                              req->body,   req->len, req->timeout_ms};
    host_fetch_t *f = sb_xmalloc(sizeof(*f));
    f->ctx = p;
    f->cb = cb;
    f->data = data;
    int rc = sb_http_client_request(host.client, &r, host_fetch_done, f);
    if (rc != 0)
        free(f);
    return rc;
}

static const char *host_channel_secret(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *name)
{
    if (ch == NULL || name == NULL)
        return NULL;
    return sb_instance_secret(sb_instance_of(ch), name);
}

/* One send() in flight: what the outbox gave, and what the plugin reported. */
typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_plugins_sent_cb done;
    void *data;
    sb_outbound_t msg;
    sb_instance_t *inst;
    char *platform_id;
    int retry_after_s;
} loader_send_t;

static void host_send_report(sb_plugin_ctx_t *p, void *send_data, const char *platform_id,
                             int retry_after_s)
{
    loader_send_t *ls = send_data;
    if (ls == NULL)
        return;
    /* An id is a key: one that is not UTF-8 cannot be stored, and is not repaired. */
    if (platform_id && strlen(platform_id) <= 500 && g_utf8_validate(platform_id, -1, NULL)) {
        free(ls->platform_id);
        ls->platform_id = sb_xstrdup(platform_id);
    } else if (platform_id) {
        sb_log(SB_LOG_WARNING, &p->log, "a platform's message id is not UTF-8 or too long");
    }
    ls->retry_after_s = retry_after_s > 0 ? retry_after_s : 0;
}

typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_status_cb cb;
    void *data;
} host_status_t;

static void host_status_done(int status, PGresult *const *res, int n, void *data)
{
    host_status_t *st = data;
    if (status == SB_EDB)
        sb_log(SB_LOG_ERR, &st->ctx->log, "could not record a message status");
    st->cb(st->ctx, status == 0 ? 0 : SB_EUNAVAILABLE, st->data);
    free(st);
}

static int host_message_status(sb_plugin_ctx_t *p, const sb_channel_t *ch, const char *platform_id,
                               const char *status, const char *detail, sb_status_cb done,
                               void *data)
{
    static const char sql_tenant[] =
        "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
        " WHERE slug = $1), ''), true)";
    static const char sql_status[] = "SELECT sb_message_status($1, $2::bigint, $3, $4, $5)";
    static const char *const known[] = {"sent", "delivered", "read", "failed"};
    char id[24];
    int ok = 0;

    for (size_t i = 0; status && i < SB_ARRAY_SIZE(known); i++)
        ok |= strcmp(status, known[i]) == 0;
    if (!ok || ch == NULL || platform_id == NULL || done == NULL || strlen(platform_id) > 500)
        return SB_EINVAL;
    if (host.db == NULL)
        return SB_EUNAVAILABLE;
    snprintf(id, sizeof(id), "%lld", (long long)ch->id);
    if (!g_utf8_validate(platform_id, -1, NULL))
        return SB_EINVAL;
    char *why = detail ? loader_utf8_valid(detail) : NULL; /* only shown: repaired */
    const char *p1[1] = {ch->tenant};
    const char *p2[5] = {ch->type, id, platform_id, status, why};
    sb_db_stmt_t s[2] = {{sql_tenant, 1, p1}, {sql_status, 5, p2}};
    host_status_t *st = sb_xmalloc(sizeof(*st));
    st->ctx = p;
    st->cb = done;
    st->data = data;
    int rc = sb_db_query(host.db, s, 2, host_status_done, st); /* copies the parameters */
    g_free(why);
    if (rc != 0) {
        free(st);
        return SB_EUNAVAILABLE;
    }
    return 0;
}

static const char *host_req_public_url(sb_plugin_ctx_t *p, sb_http_req_t *req)
{
    const char *base = host.cfg ? host.cfg->public_url : NULL;
    if (base == NULL || req == NULL)
        return NULL;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    /* Twilio signs the whole URL it called, query string included. */
    const char *query = sb_http_req_raw_query(req);
    char *url = sb_xasprintf("%.*s%s%s%s", (int)n, base, sb_http_req_path(req), query ? "?" : "",
                             query ? query : "");
    char *copy = sb_pool_strdup(sb_http_req_pool(req), url);
    free(url);
    return copy;
}

typedef struct {
    sb_plugin_ctx_t *ctx;
    sb_channels_cb cb;
    void *data;
} host_list_t;

static void host_channels_listed(int status, sb_instance_t *const *list, size_t n, void *data)
{
    host_list_t *hl = data;
    const sb_channel_t **chs = sb_xcalloc(n + 1, sizeof(*chs));

    for (size_t i = 0; i < n; i++)
        chs[i] = sb_instance_channel(list[i]);
    hl->cb(hl->ctx, status, chs, n, hl->data);
    free(chs);
    free(hl);
}

static int host_channels_list(sb_plugin_ctx_t *p, sb_channels_cb cb, void *data)
{
    if (cb == NULL)
        return SB_EINVAL;
    host_list_t *hl = sb_xmalloc(sizeof(*hl));
    hl->ctx = p;
    hl->cb = cb;
    hl->data = data;
    int rc = sb_instances_of_type(host.db, p->name, host_channels_listed, hl);
    if (rc != 0)
        free(hl);
    return rc;
}

static void host_state_saved(int status, PGresult *const *res, int n, void *data)
{
    host_status_t *st = data;
    if (status == SB_EDB)
        sb_log(SB_LOG_ERR, &st->ctx->log, "could not save a channel's state");
    if (status == 0 && strcmp(PQgetvalue(res[0], 0, 0), "t") != 0)
        status = SB_ENOENT;
    st->cb(st->ctx, status == 0 || status == SB_ENOENT ? status : SB_EUNAVAILABLE, st->data);
    free(st);
}

static int host_channel_state_save(sb_plugin_ctx_t *p, const char *tenant, int64_t id,
                                   const char *state_json, sb_status_cb done, void *data)
{
    static const char sql[] = "SELECT sb_channel_state_save($1, $2::bigint, $3::jsonb)";
    char idtext[24];

    if (tenant == NULL || state_json == NULL || done == NULL || strlen(state_json) > 65536)
        return SB_EINVAL;
    json_t *check = json_loads(state_json, 0, NULL);
    int is_object = json_is_object(check);
    json_decref(check);
    if (!is_object)
        return SB_EINVAL;
    if (host.db == NULL)
        return SB_EUNAVAILABLE;
    snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
    const char *params[3] = {tenant, idtext, state_json};
    sb_db_stmt_t s = {sql, 3, params};
    host_status_t *st = sb_xmalloc(sizeof(*st));
    st->ctx = p;
    st->cb = done;
    st->data = data;
    if (sb_db_query(host.db, &s, 1, host_state_saved, st) != 0) {
        free(st);
        return SB_EUNAVAILABLE;
    }
    return 0;
}

static void host_worker_info(sb_plugin_ctx_t *p, int *index, int *count)
{
    int n = host.cfg && host.cfg->workers > 0 ? host.cfg->workers : 1;
    if (count)
        *count = n;
    if (index)
        *index = host.worker_index % n;
}

static const sb_host_api_t host_api = {
    .abi_major = SB_PLUGIN_ABI_MAJOR,
    .abi_minor = SB_PLUGIN_ABI_MINOR,
    .size = sizeof(sb_host_api_t),
    .log = host_log,
    .config_get = host_config_get,
    .http_route = host_http_route,
    .loop = host_loop,
    .timer_start = host_timer_start,
    .timer_stop = host_timer_stop,
    .ingest = host_ingest,
    .req_method = host_req_method,
    .req_param = host_req_param,
    .req_query = sb_http_req_query,
    .req_header = host_req_header,
    .req_body = (const char *(*)(sb_http_req_t *, size_t *))sb_http_req_body,
    .res_header = sb_http_res_header,
    .respond = sb_http_respond,
    .ws_accept = host_ws_accept,
    .ws_send = sb_ws_send,
    .ws_close = sb_ws_close,
    .events_subscribe = host_events_subscribe,
    .thread_messages = host_thread_messages,
    .secret_key = host_secret_key,
    .typing = host_typing,
    .fetch = host_fetch,
    .channel_secret = host_channel_secret,
    .send_report = host_send_report,
    .message_status = host_message_status,
    .req_public_url = host_req_public_url,
    .channels_list = host_channels_list,
    .channel_state_save = host_channel_state_save,
    .worker_info = host_worker_info,
};

/* ======================== loading ======================== */

/*
 * Refuses files anyone else could have written: a plugin runs with the
 * server's privileges.
 */
static int loader_file_safe(const char *path, const char *name)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        sb_log(SB_LOG_ERR, NULL, "could not load plugin \"%s\": could not stat \"%s\": %s", name,
               path, strerror(errno));
        return SB_EINVAL;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
        (st.st_uid != 0 && st.st_uid != geteuid())) {
        sb_log_ex(SB_LOG_ERR, NULL, NULL,
                  "A plugin must be a regular file owned by root or the server's user and "
                  "writable by no one else.",
                  "could not load plugin \"%s\": unsafe file \"%s\"", name, path);
        return SB_EINVAL;
    }
    return 0;
}

/* Opens path and checks the descriptor; 0 with *dl and *desc, or SB_EINVAL. */
static int loader_open(const char *path, const char *name, void **dl, const sb_plugin_t **desc)
{
    if (loader_file_safe(path, name) != 0)
        return SB_EINVAL;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        sb_log(SB_LOG_ERR, NULL, "could not load plugin \"%s\": %s", name, dlerror());
        return SB_EINVAL;
    }
    const sb_plugin_t *(*entry)(void);
    *(void **)&entry = dlsym(h, SB_PLUGIN_ENTRY);
    if (entry == NULL) {
        sb_log_ex(SB_LOG_ERR, NULL, NULL, "Plugins define it with SB_PLUGIN_DEFINE.",
                  "could not load plugin \"%s\": missing entry symbol \"%s\"", name,
                  SB_PLUGIN_ENTRY);
        dlclose(h);
        return SB_EINVAL;
    }
    const sb_plugin_t *d = entry();
    if (d == NULL || d->abi_major != SB_PLUGIN_ABI_MAJOR || d->abi_minor > SB_PLUGIN_ABI_MINOR ||
        d->size < offsetof(sb_plugin_t, send)) {
        char detail[128];
        snprintf(detail, sizeof(detail), "Server has ABI %d.%d, plugin was built for %d.%d.",
                 SB_PLUGIN_ABI_MAJOR, SB_PLUGIN_ABI_MINOR, d ? d->abi_major : 0,
                 d ? d->abi_minor : 0);
        sb_log_ex(SB_LOG_ERR, NULL, detail, "Rebuild the plugin against this server's headers.",
                  "could not load plugin \"%s\": ABI mismatch", name);
        dlclose(h);
        return SB_EINVAL;
    }
    if (d->name == NULL || d->init == NULL) {
        sb_log(SB_LOG_ERR, NULL, "could not load plugin \"%s\": its descriptor has no name or init",
               name);
        dlclose(h);
        return SB_EINVAL;
    }
    *dl = h;
    *desc = d;
    return 0;
}

int sb_plugin_check_file(const char *path, const char *name)
{
    void *dl;
    const sb_plugin_t *d;
    int rc = loader_open(path, name, &dl, &d);
    if (rc == 0)
        dlclose(dl);
    return rc;
}

static void loader_ctx_free(sb_plugin_ctx_t *p)
{
    for (size_t i = 0; i < p->kept.len / sizeof(char *); i++)
        free(((char **)(void *)p->kept.data)[i]);
    sb_buf_free(&p->kept);
    while (p->routes) {
        plugin_route_t *r = p->routes;
        p->routes = r->next;
        free(r->method);
        free(r->pattern);
        free(r);
    }
    if (p->dl)
        dlclose(p->dl);
    free(p->name);
    free(p);
}

/* Loads and initialises one plugin; 0 or SB_EINVAL (logged). */
static int loader_load_one(const char *dir, const char *name)
{
    char path[PATH_MAX];
    void *dl;
    const sb_plugin_t *d;

    if (host.n == PLUGINS_MAX) {
        sb_log(SB_LOG_ERR, NULL, "could not load plugin \"%s\": too many plugins", name);
        return SB_EINVAL;
    }
    /* Installed plugins sit in the directory; in the build tree each has
     * its own folder (plugins/<name>/<name>.so). */
    snprintf(path, sizeof(path), "%s/%s.so", dir, name);
    if (access(path, F_OK) != 0)
        snprintf(path, sizeof(path), "%s/%s/%s.so", dir, name, name);
    if (loader_open(path, name, &dl, &d) != 0)
        return SB_EINVAL;
    sb_plugin_ctx_t *p = sb_xcalloc(1, sizeof(*p));
    p->name = sb_xstrdup(d->name);
    p->dl = dl;
    p->desc = d;
    p->log.plugin = p->name;
    p->initialising = 1;
    int rc = d->init(p, &host_api);
    p->initialising = 0;
    if (rc != 0) {
        sb_log(SB_LOG_ERR, NULL, "could not initialise plugin \"%s\": %s", name, sb_strerror(rc));
        loader_ctx_free(p);
        return SB_EINVAL;
    }
    host.plugins[host.n++] = p;
    sb_log(SB_LOG_INFO, NULL, "loaded plugin \"%s\" %s", p->name, d->version ? d->version : "");
    return 0;
}

/* The names to load: the configured list, or every *.so in the directory. */
static char **loader_names(const sb_config_t *cfg, size_t *n)
{
    char **names = NULL;
    *n = 0;
    if (cfg->plugins) {
        const char *p = cfg->plugins;
        while (*p) {
            while (*p == ',' || *p == ' ')
                p++;
            size_t len = strcspn(p, ", ");
            if (len) {
                names = sb_xrealloc(names, (*n + 1) * sizeof(char *));
                names[(*n)++] = sb_xstrndup(p, len);
            }
            p += len;
        }
        return names;
    }
    DIR *d = opendir(cfg->plugins_dir);
    if (d == NULL)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof(sub), "%s/%s/%s.so", cfg->plugins_dir, e->d_name, e->d_name);
        if (len > 3 && strcmp(e->d_name + len - 3, ".so") == 0)
            len -= 3;
        else if (access(sub, F_OK) != 0)
            continue;
        names = sb_xrealloc(names, (*n + 1) * sizeof(char *));
        names[(*n)++] = sb_xstrndup(e->d_name, len);
    }
    closedir(d);
    return names;
}

int sb_plugins_load(const sb_config_t *cfg)
{
    size_t n;
    char **names = loader_names(cfg, &n);
    int rc = 0;

    host.cfg = cfg;
    for (size_t i = 0; i < n; i++) {
        int required = sb_config_list_has(cfg->plugins_required, names[i]);
        if (loader_load_one(cfg->plugins_dir, names[i]) != 0 && required) {
            sb_log(SB_LOG_FATAL, NULL, "required plugin \"%s\" is not available", names[i]);
            rc = SB_EINVAL;
        }
        free(names[i]);
    }
    free(names);
    /* A required plugin that was not even listed is as missing as a broken one. */
    const char *p = cfg->plugins_required;
    while (rc == 0 && p && *p) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        int found = 0;
        for (size_t i = 0; i < host.n; i++)
            found |=
                strlen(host.plugins[i]->name) == len && strncmp(host.plugins[i]->name, p, len) == 0;
        if (len && !found) {
            sb_log(SB_LOG_FATAL, NULL, "required plugin \"%.*s\" is not available", (int)len, p);
            rc = SB_EINVAL;
        }
        p += len;
    }
    return rc;
}

/* ======================== workers ======================== */

static int loader_route_cb(sb_http_req_t *req, void *data)
{
    plugin_route_t *r = data;
    return r->cb(r->ctx, req, r->data);
}

/* The started plugin named name, or NULL. */
static sb_plugin_ctx_t *loader_find(const char *name)
{
    for (size_t i = 0; i < host.n; i++)
        if (host.plugins[i]->started && strcmp(host.plugins[i]->name, name) == 0)
            return host.plugins[i];
    return NULL;
}

/* The plugin's webhook callback, read only from descriptors that have it. */
static int (*loader_webhook(const sb_plugin_ctx_t *p))(sb_plugin_ctx_t *, const sb_channel_t *,
                                                       sb_http_req_t *)
{
    if (p == NULL || !loader_abi_minor_ge(p, 2) ||
        p->desc->size < offsetof(sb_plugin_t, webhook) + sizeof(void *))
        return NULL;
    return p->desc->webhook;
}

/* ======================== channel webhooks ======================== */

/* Answers a webhook the host could not hand to a plugin. */
static void loader_hook_refuse(sb_http_req_t *req, int rc)
{
    if (rc == SB_ENOENT || rc == SB_DECLINED)
        sb_http_respond_error(req, 404, "not_found", "no such channel");
    else if (rc == SB_EINVAL)
        sb_http_respond_error(req, 400, "invalid", "the request is not valid for this channel");
    else if (rc == SB_ETOOBIG)
        sb_http_respond_error(req, 413, "payload_too_large", "request body is too large");
    else
        sb_http_respond_error(req, 503, "unavailable", "the channel cannot take messages now");
}

static void loader_hook_release(void *data)
{
    sb_instance_release(data);
}

static void loader_hook_found(int status, sb_instance_t *inst, void *data)
{
    sb_http_req_t *req = data;

    if (status != 0) {
        loader_hook_refuse(req, status);
        return;
    }
    /* The plugin may answer after this returns: the view lives as long as req. */
    sb_pool_cleanup_add(sb_http_req_pool(req), loader_hook_release, inst);
    const sb_channel_t *ch = sb_instance_channel(inst);
    sb_plugin_ctx_t *p = loader_find(ch->type);
    int (*hook)(sb_plugin_ctx_t *, const sb_channel_t *, sb_http_req_t *) = loader_webhook(p);
    int rc = hook ? hook(p, ch, req) : SB_ENOENT;
    /* A plugin that answered and then returned an error has answered. */
    if (rc != 0 && !sb_http_req_responded(req))
        loader_hook_refuse(req, rc);
}

/*
 * POST|GET /hooks/{tenant}/{id}[/]: a platform calling a channel instance.
 * A plugin's own /hooks/{tenant}/{name} routes come first; what they
 * declined, and any id that is not one, ends here as a 404 (declining
 * would make the router answer 405 for the other method's route).
 */
static int loader_hook_cb(sb_http_req_t *req, void *data)
{
    const char *id = sb_http_req_param(req, "id");
    char *end;
    long long n = id ? strtoll(id, &end, 10) : 0;

    if (id == NULL || id[0] < '1' || id[0] > '9' || *end != '\0' || n <= 0) {
        loader_hook_refuse(req, SB_ENOENT);
        return 0;
    }
    int rc = sb_instance_get(host.db, sb_http_req_param(req, "tenant"), n, loader_hook_found, req);
    if (rc != 0)
        loader_hook_refuse(req, rc);
    return 0;
}

static void loader_hook_routes_add(sb_router_t *router)
{
    static const char *const patterns[] = {"/hooks/{tenant}/{id}", "/hooks/{tenant}/{id}/"};
    static const char *const methods[] = {"POST", "GET"};

    for (size_t i = 0; i < SB_ARRAY_SIZE(patterns); i++)
        for (size_t k = 0; k < SB_ARRAY_SIZE(methods); k++)
            if (sb_router_add(router, methods[k], patterns[i], SB_ROUTE_UNDOCUMENTED,
                              loader_hook_cb, NULL) != 0)
                sb_log(SB_LOG_ERR, NULL, "could not add route \"%s %s\"", methods[k], patterns[i]);
}

/* ======================== files on platforms ======================== */

typedef struct {
    sb_plugins_file_cb done;
    void *data;
    char *file_id;
    sb_instance_t *inst;
} loader_file_t;

static void loader_file_free(loader_file_t *lf)
{
    sb_instance_release(lf->inst);
    free(lf->file_id);
    free(lf);
}

static void loader_file_fetched(sb_plugin_ctx_t *p, int status, const void *bytes, size_t len,
                                void *data)
{
    loader_file_t *lf = data;
    lf->done(status, status == 0 ? bytes : NULL, status == 0 ? len : 0, lf->data);
    loader_file_free(lf);
}

/* The plugin's fetch_file, read only from descriptors that have it. */
static int (*loader_fetcher(const sb_plugin_ctx_t *p))(sb_plugin_ctx_t *, const sb_channel_t *,
                                                       const char *, sb_file_cb, void *)
{
    if (p == NULL || !loader_abi_minor_ge(p, 2) ||
        p->desc->size < offsetof(sb_plugin_t, fetch_file) + sizeof(void *))
        return NULL;
    return p->desc->fetch_file;
}

static void loader_file_found(int status, sb_instance_t *inst, void *data)
{
    loader_file_t *lf = data;

    /* No such instance any more is "cannot fetch", not "the platform lost it". */
    if (status != 0) {
        lf->done(status == SB_ENOENT ? SB_DECLINED : status, NULL, 0, lf->data);
        loader_file_free(lf);
        return;
    }
    lf->inst = inst;
    const sb_channel_t *ch = sb_instance_channel(inst);
    sb_plugin_ctx_t *p = loader_find(ch->type);
    int (*fetch)(sb_plugin_ctx_t *, const sb_channel_t *, const char *, sb_file_cb, void *) =
        loader_fetcher(p);
    int rc = fetch ? fetch(p, ch, lf->file_id, loader_file_fetched, lf) : SB_DECLINED;
    if (rc != 0) {
        lf->done(rc == SB_EUNAVAILABLE ? rc : SB_DECLINED, NULL, 0, lf->data);
        loader_file_free(lf);
    }
}

int sb_plugins_fetch_file(const char *tenant, int64_t channel_id, const char *file_id,
                          sb_plugins_file_cb done, void *data)
{
    if (tenant == NULL || channel_id <= 0 || file_id == NULL || done == NULL)
        return SB_ENOENT;
    loader_file_t *lf = sb_xcalloc(1, sizeof(*lf));
    lf->done = done;
    lf->data = data;
    lf->file_id = sb_xstrdup(file_id);
    int rc = sb_instance_get(host.db, tenant, channel_id, loader_file_found, lf);
    if (rc != 0)
        loader_file_free(lf);
    return rc;
}

void sb_plugins_channels_changed(void)
{
    sb_instances_flush();
    for (size_t i = 0; i < host.n; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        if (p->started &&
            p->desc->size >= offsetof(sb_plugin_t, channels_changed) + sizeof(void *) &&
            p->desc->channels_changed)
            p->desc->channels_changed(p);
    }
}

int sb_plugins_start(uv_loop_t *loop, sb_router_t *router, sb_db_t *db, int worker_index)
{
    sb_http_client_options_t copts = {
        .allow_private = host.cfg ? host.cfg->channels_allow_private : 0,
        .max_response = 25u << 20, /* a platform's file, up to the attachments' limit */
    };

    host.loop = loop;
    host.db = db;
    host.worker_index = worker_index;
    if (sb_http_client_new(loop, &copts, &host.client) != 0)
        host.client = NULL;
    for (size_t i = 0; i < host.n; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        for (plugin_route_t *r = p->routes; r; r = r->next) {
            if (sb_router_add(router, r->method, r->pattern, SB_ROUTE_UNDOCUMENTED, loader_route_cb,
                              r) != 0)
                sb_log(SB_LOG_ERR, &p->log, "could not add route \"%s %s\"", r->method, r->pattern);
        }
        if (p->desc->start && p->desc->start(p) != 0) {
            sb_log(SB_LOG_ERR, &p->log, "could not start plugin \"%s\"", p->name);
            continue;
        }
        p->started = 1;
    }
    /* After the plugins' own routes, so that /hooks/{tenant}/example stays theirs. */
    loader_hook_routes_add(router);
    return 0;
}

void sb_plugins_stop(void)
{
    for (size_t i = 0; i < host.n; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        if (p->started && p->desc->stop)
            p->desc->stop(p);
        p->started = 0;
    }
    if (host.client)
        sb_http_client_close(host.client);
    host.client = NULL;
    sb_instances_flush();
    host.db = NULL;
    host.loop = NULL;
}

void sb_plugins_unload(void)
{
    for (size_t i = 0; i < host.n; i++)
        loader_ctx_free(host.plugins[i]);
    host.n = 0;
}

/* ======================== sending ======================== */

static void loader_send_free(loader_send_t *ls)
{
    sb_instance_release(ls->inst);
    free(ls->platform_id);
    free(ls);
}

static void loader_sent(sb_plugin_ctx_t *p, int result, const char *detail, void *data)
{
    loader_send_t *ls = data;
    sb_send_report_t rep = {ls->platform_id, ls->retry_after_s};
    /* Stored as the delivery error: not UTF-8, the result would never commit. */
    char *valid = detail ? loader_utf8_valid(detail) : NULL;
    ls->done(result, valid, &rep, ls->data);
    g_free(valid);
    loader_send_free(ls);
}

static void loader_send_found(int status, sb_instance_t *inst, void *data)
{
    loader_send_t *ls = data;

    if (status != 0) {
        loader_sent(ls->ctx, status == SB_ENOENT ? SB_FAILED : SB_RETRY,
                    status == SB_ENOENT ? "the channel does not exist or is inactive"
                                        : "could not look up the channel",
                    ls);
        return;
    }
    ls->inst = inst;
    ls->msg.instance = sb_instance_channel(inst);
    if (strcmp(ls->msg.instance->type, ls->msg.channel) != 0) {
        loader_sent(ls->ctx, SB_FAILED, "the channel's type does not match the ticket's", ls);
        return;
    }
    int rc = ls->ctx->desc->send(ls->ctx, &ls->msg, loader_sent, ls);
    if (rc != 0)
        loader_sent(ls->ctx, SB_RETRY, sb_strerror(rc), ls);
}

int sb_plugins_send(const sb_outbound_t *msg, int64_t channel_id, sb_plugins_sent_cb done,
                    void *data)
{
    sb_plugin_ctx_t *p = loader_find(msg->channel);

    if (p == NULL || p->desc->send == NULL)
        return SB_ENOENT;
    loader_send_t *ls = sb_xcalloc(1, sizeof(*ls));
    ls->ctx = p;
    ls->done = done;
    ls->data = data;
    ls->msg = *msg;
    ls->msg.instance = NULL;
    if (channel_id > 0) {
        int rc = sb_instance_get(host.db, msg->tenant, channel_id, loader_send_found, ls);
        if (rc != 0)
            loader_send_free(ls);
        return rc;
    }
    int rc = p->desc->send(p, &ls->msg, loader_sent, ls);
    if (rc != 0)
        loader_send_free(ls);
    return rc;
}

int sb_plugins_senders(char *out, size_t len)
{
    size_t k = 0;
    int n = 0;

    k += (size_t)snprintf(out, len, "{");
    for (size_t i = 0; i < host.n && k < len; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        if (!p->started || p->desc->send == NULL)
            continue;
        k += (size_t)snprintf(out + k, len - k, "%s\"%s\"", n ? "," : "", p->name);
        n++;
    }
    if (k < len)
        snprintf(out + k, len - k, "}");
    return n;
}

/*
 * A channel's settings may name a plain http:// URL (a platform API's
 * base) only where private addresses are allowed too (tests, local fakes):
 * elsewhere the tokens a plugin sends would cross the network in clear.
 * 0, or SB_EINVAL with the field and message written.
 */
static int loader_settings_https(const char *settings_json, char *field, size_t field_len,
                                 char *message, size_t message_len)
{
    json_t *s = json_loads(settings_json, 0, NULL);
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(s, key, v)
    {
        if (json_is_string(v) && strncasecmp(json_string_value(v), "http://", 7) == 0) {
            snprintf(field, field_len, "settings.%s", key);
            snprintf(message, message_len,
                     "must be an https:// URL (http:// only with channels_allow_private)");
            rc = SB_EINVAL;
            break;
        }
    }
    json_decref(s);
    return rc;
}

int sb_plugins_validate(const char *type, const char *settings_json, char *field, size_t field_len,
                        char *message, size_t message_len)
{
    for (size_t i = 0; i < host.n; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        if (strcmp(p->name, type) != 0)
            continue;
        /* A 1.0 descriptor ends before validate_settings. */
        if (p->desc->size >= offsetof(sb_plugin_t, validate_settings) + sizeof(void *) &&
            p->desc->validate_settings &&
            p->desc->validate_settings(p, settings_json, field, field_len, message, message_len) !=
                0)
            return SB_EINVAL;
        if (host.cfg && host.cfg->channels_allow_private)
            return 0;
        return loader_settings_https(settings_json, field, field_len, message, message_len);
    }
    return SB_ENOENT;
}

void sb_plugins_event(const char *json)
{
    for (size_t i = 0; i < host.n; i++) {
        sb_plugin_ctx_t *p = host.plugins[i];
        if (p->started && p->on_event)
            p->on_event(p, json, p->event_data);
    }
}

size_t sb_plugins_count(void)
{
    return host.n;
}

const char *sb_plugins_name(size_t i)
{
    return i < host.n ? host.plugins[i]->name : NULL;
}
