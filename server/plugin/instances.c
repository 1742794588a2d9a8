/*
 * instances.c - the per-worker cache of tenants' channel instances (the
 * channels table), for the webhooks and sends that name one.  A webhook
 * burst looks its channel up once every few seconds, not per request, and
 * so does a stream of requests for an id that does not exist; a change
 * anywhere empties the cache (NOTIFY), and entries expire anyway.
 * Secrets stay sealed until a plugin asks for one.  Not for the channels
 * API (api/channels.c), which reads and writes the table itself.
 */
#include "plugin/internal.h"
#include "common.h"
#include "log.h"
#include "secrets.h"

#include <glib.h>
#include <jansson.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INSTANCE_TTL_MS 5000
#define INSTANCE_MISSES_MAX 10000 /* unknown ids remembered; more empty the table */

struct sb_instance {
    sb_channel_t pub;
    int refs;
    int cached; /* still in the table */
    uint64_t loaded_ms;
    char *key;             /* "tenant/id" */
    char *strings;         /* tenant, type, name, settings, state, one block */
    unsigned char *sealed; /* the secrets as stored, or NULL */
    size_t sealed_len;
    json_t *secrets; /* opened on first use */
};

typedef struct {
    sb_instance_cb cb;
    void *data;
    char *key;
    char tenant[64];
    char id[24];
} instance_load_t;

static GHashTable *instances;
/*
 * "tenant/id" of instances that do not exist (or are inactive) -> when that
 * was learnt (ms): anyone can call /hooks/{tenant}/{id}, and an unknown id
 * should not cost a database round trip each time.
 */
static GHashTable *misses;

/* ======================== references ======================== */

const sb_channel_t *sb_instance_channel(const sb_instance_t *inst)
{
    return &inst->pub;
}

sb_instance_t *sb_instance_of(const sb_channel_t *ch)
{
    return (sb_instance_t *)(void *)((char *)ch - offsetof(sb_instance_t, pub));
}

void sb_instance_release(sb_instance_t *inst)
{
    if (inst == NULL || --inst->refs > 0)
        return;
    if (inst->sealed)
        sodium_memzero(inst->sealed, inst->sealed_len);
    free(inst->sealed);
    json_decref(inst->secrets);
    free(inst->strings);
    free(inst->key);
    free(inst);
}

/* The table's reference goes when the entry leaves it. */
static void instance_uncache(gpointer p)
{
    sb_instance_t *inst = p;
    inst->cached = 0;
    sb_instance_release(inst);
}

void sb_instances_flush(void)
{
    if (instances)
        g_hash_table_remove_all(instances);
    if (misses)
        g_hash_table_remove_all(misses);
}

/* Remembers that key names no active instance, for as long as a hit is trusted. */
static void instance_miss_add(const char *key)
{
    if (misses == NULL)
        misses = g_hash_table_new_full(g_str_hash, g_str_equal, free, g_free);
    if (g_hash_table_size(misses) >= INSTANCE_MISSES_MAX)
        g_hash_table_remove_all(misses);
    uint64_t *at = g_new(uint64_t, 1);
    *at = sb_now_ms();
    g_hash_table_replace(misses, sb_xstrdup(key), at);
}

/* Whether key is a miss learnt less than INSTANCE_TTL_MS ago. */
static int instance_miss_fresh(const char *key)
{
    const uint64_t *at = misses ? g_hash_table_lookup(misses, key) : NULL;
    if (at && sb_now_ms() - *at < INSTANCE_TTL_MS)
        return 1;
    if (at)
        g_hash_table_remove(misses, key);
    return 0;
}

const char *sb_instance_secret(sb_instance_t *inst, const char *name)
{
    if (inst->secrets == NULL && inst->sealed) {
        sb_buf_t plain;
        sb_buf_init(&plain);
        if (sb_secrets_open(inst->sealed, inst->sealed_len, &plain) == 0)
            inst->secrets = json_loadb(plain.data, plain.len, 0, NULL);
        else
            sb_log(SB_LOG_ERR, NULL, "could not open the secrets of channel %s", inst->key);
        sodium_memzero(plain.data, plain.len);
        sb_buf_free(&plain);
    }
    return json_string_value(json_object_get(inst->secrets, name));
}

/* ======================== loading ======================== */

/* An instance from row i (type, name, settings, secrets, state). */
static sb_instance_t *instance_from_row(const PGresult *r, int i, const char *tenant,
                                        const char *key)
{
    sb_instance_t *inst = sb_xcalloc(1, sizeof(*inst));
    const char *src[5] = {tenant, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                          PQgetvalue(r, i, 4)};
    size_t offs[5];
    sb_buf_t b;

    sb_buf_init(&b);
    for (int k = 0; k < 5; k++) {
        offs[k] = b.len;
        sb_buf_append(&b, src[k], strlen(src[k]) + 1);
    }
    inst->strings = sb_buf_steal(&b, NULL);
    inst->pub.tenant = inst->strings + offs[0];
    inst->pub.type = inst->strings + offs[1];
    inst->pub.name = inst->strings + offs[2];
    inst->pub.settings = inst->strings + offs[3];
    inst->pub.state = inst->strings + offs[4];
    inst->pub.id = atoll(strchr(key, '/') + 1);
    inst->key = sb_xstrdup(key);
    inst->refs = 1;
    inst->loaded_ms = sb_now_ms();
    if (!PQgetisnull(r, i, 3)) {
        size_t n;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 3), &n);
        if (raw) {
            inst->sealed = sb_xmalloc(n ? n : 1);
            memcpy(inst->sealed, raw, n);
            inst->sealed_len = n;
            PQfreemem(raw);
        }
    }
    return inst;
}

static void instance_loaded(int status, PGresult *const *res, int n, void *data)
{
    instance_load_t *ld = data;
    sb_instance_t *inst = NULL;

    if (status == 0 && PQntuples(res[1]) == 1) {
        inst = instance_from_row(res[1], 0, ld->tenant, ld->key);
        if (instances == NULL)
            instances = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, instance_uncache);
        inst->refs++; /* the table's */
        inst->cached = 1;
        g_hash_table_replace(instances, inst->key, inst);
    } else if (status == 0) {
        status = SB_ENOENT;
        instance_miss_add(ld->key);
    } else if (status == SB_EDB) {
        sb_log(SB_LOG_ERR, NULL, "could not look up channel %s", ld->key);
    }
    if (status != 0 && status != SB_ENOENT)
        status = SB_EUNAVAILABLE;
    ld->cb(status, inst, ld->data);
    free(ld->key);
    free(ld);
}

int sb_instance_get(sb_db_t *db, const char *tenant, int64_t id, sb_instance_cb cb, void *data)
{
    static const char sql_tenant[] =
        "SELECT set_config('switchboard.tenant_id', coalesce((SELECT id::text FROM tenants"
        " WHERE slug = $1), ''), true)";
    static const char sql_channel[] =
        "SELECT c.type, c.name, c.settings::text, c.secrets, c.state::text FROM channels c"
        " WHERE c.tenant_id = sb_tenant() AND c.id = $1::bigint AND c.active";
    char *key = sb_xasprintf("%s/%lld", tenant, (long long)id);
    sb_instance_t *hit = instances ? g_hash_table_lookup(instances, key) : NULL;

    if (hit && sb_now_ms() - hit->loaded_ms < INSTANCE_TTL_MS) {
        free(key);
        hit->refs++;
        cb(0, hit, data);
        return 0;
    }
    if (hit)
        g_hash_table_remove(instances, key);
    if (instance_miss_fresh(key)) {
        free(key);
        cb(SB_ENOENT, NULL, data); /* as a lookup that found nothing */
        return 0;
    }
    if (strlen(tenant) >= sizeof(((instance_load_t *)0)->tenant)) {
        free(key);
        return SB_ENOENT; /* longer than any slug */
    }
    if (db == NULL) {
        free(key);
        return SB_EUNAVAILABLE;
    }
    instance_load_t *ld = sb_xcalloc(1, sizeof(*ld));
    ld->cb = cb;
    ld->data = data;
    ld->key = key;
    snprintf(ld->tenant, sizeof(ld->tenant), "%s", tenant);
    snprintf(ld->id, sizeof(ld->id), "%lld", (long long)id);
    const char *p1[1] = {ld->tenant};
    const char *p2[1] = {ld->id};
    sb_db_stmt_t s[2] = {{sql_tenant, 1, p1}, {sql_channel, 1, p2}};
    if (sb_db_query(db, s, 2, instance_loaded, ld) != 0) {
        free(ld->key);
        free(ld);
        return SB_EUNAVAILABLE;
    }
    return 0;
}

/* ======================== every instance of a type ======================== */

typedef struct {
    sb_instances_cb cb;
    void *data;
} instance_list_t;

static void instances_listed(int status, PGresult *const *res, int n, void *data)
{
    instance_list_t *ls = data;
    int rows = status == 0 ? PQntuples(res[0]) : 0;
    sb_instance_t **list = sb_xcalloc((size_t)rows + 1, sizeof(*list));

    if (status != 0)
        sb_log(SB_LOG_ERR, NULL, "could not list channels: %s", sb_strerror(status));
    for (int i = 0; i < rows; i++) {
        char *key = sb_xasprintf("%s/%s", PQgetvalue(res[0], i, 5), PQgetvalue(res[0], i, 6));
        list[i] = instance_from_row(res[0], i, PQgetvalue(res[0], i, 5), key);
        free(key);
    }
    ls->cb(status == 0 ? 0 : SB_EUNAVAILABLE, list, (size_t)rows, ls->data);
    for (int i = 0; i < rows; i++)
        sb_instance_release(list[i]);
    free(list);
    free(ls);
}

int sb_instances_of_type(sb_db_t *db, const char *type, sb_instances_cb cb, void *data)
{
    static const char sql[] =
        "SELECT $1::text, name, settings, secrets, state, tenant, id FROM sb_channels_of_type($1)";
    const char *params[1] = {type};
    sb_db_stmt_t s = {sql, 1, params};

    if (db == NULL)
        return SB_EUNAVAILABLE;
    instance_list_t *ls = sb_xmalloc(sizeof(*ls));
    ls->cb = cb;
    ls->data = data;
    if (sb_db_query(db, &s, 1, instances_listed, ls) != 0) {
        free(ls);
        return SB_EUNAVAILABLE;
    }
    return 0;
}
