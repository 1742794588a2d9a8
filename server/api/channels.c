/*
 * channels.c - a tenant's channel instances (admins only): each has a type
 * (the name of a loaded plugin, which validates its settings), a name,
 * settings, and secrets that are sealed before they reach the database and
 * are never returned, only named.
 */
#include "api.h"
#include "common.h"
#include "plugin/host.h"
#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANT "/api/v1/tenants/{tenant}"

static void chan_sealed_free(void *data)
{
    sb_buf_free(data);
}

/* A channel operation; op->data is the buffer the sealed secrets go in. */
static sb_api_op_t *chan_op(sb_http_req_t *req, int status, const char *sql, int nparams)
{
    sb_api_op_t *op = sb_api_op_new(req, status, sql, nparams);
    sb_buf_t *sealed = sb_pool_calloc(sb_http_req_pool(req), sizeof(*sealed));
    sb_pool_cleanup_add(sb_http_req_pool(req), chan_sealed_free, sealed);
    op->data = sealed;
    op->conflict = "a channel with this name, or one with one of these email addresses, exists";
    return op;
}

/*
 * Has the type's plugin check the settings (when type is given) and seals
 * the secrets, filling the statement's parameters.  Answers and returns
 * SB_EINVAL on refusal; SB_EIO without a key to seal with.
 */
static int chan_prepare(sb_http_req_t *req, sb_api_op_t *op, const char *type, json_t *settings,
                        json_t *secrets, const char **settings_text, const char **secrets_param,
                        const char **names_param)
{
    sb_pool_t *pool = sb_http_req_pool(req);
    char field[96] = "settings", message[256] = "";

    *settings_text = NULL;
    *secrets_param = NULL;
    *names_param = NULL;
    if (settings) {
        char *text = json_dumps(settings, JSON_COMPACT | JSON_SORT_KEYS);
        *settings_text = sb_pool_strdup(pool, text ? text : "{}");
        free(text);
    }
    if (type) {
        int rc = sb_plugins_validate(type, *settings_text ? *settings_text : "{}", field,
                                     sizeof(field), message, sizeof(message));
        if (rc == SB_ENOENT) {
            sb_api_respond_invalid(req, "type", "no channel plugin named \"%s\" is loaded", type);
            return SB_EINVAL;
        }
        if (rc != 0) {
            sb_api_respond_invalid(req, field, "%s", message[0] ? message : "invalid settings");
            return SB_EINVAL;
        }
    }
    if (secrets) {
        const char *key;
        json_t *v;
        sb_buf_t names;
        sb_buf_init(&names);
        sb_buf_puts(&names, "[");
        json_object_foreach(secrets, key, v)
        {
            if (!json_is_string(v) || json_string_length(v) > 4096 || strlen(key) > 64) {
                sb_buf_free(&names);
                sb_api_respond_invalid(req, "secrets",
                                       "secrets must map names (at most 64 bytes) to strings "
                                       "(at most 4096 bytes)");
                return SB_EINVAL;
            }
            json_t *k = json_string(key);
            char *kt = json_dumps(k, JSON_ENCODE_ANY);
            sb_buf_printf(&names, "%s%s", names.len > 1 ? "," : "", kt);
            free(kt);
            json_decref(k);
        }
        sb_buf_puts(&names, "]");
        *names_param = sb_pool_strdup(pool, names.data);
        sb_buf_free(&names);
        char *plain = json_dumps(secrets, JSON_COMPACT);
        int rc = sb_secrets_seal(plain, strlen(plain), op->data);
        /* The clear text never outlives this function. */
        memset(plain, 0, strlen(plain));
        free(plain);
        if (rc != 0)
            return SB_EIO;
        *secrets_param = ((sb_buf_t *)op->data)->data;
    }
    return 0;
}

static const sb_api_field_t chan_create_fields[] = {
    {"type", SB_FIELD_STRING, 1, 32, NULL},
    {"name", SB_FIELD_STRING, 1, 200, NULL},
    {"settings", SB_FIELD_OBJECT, 0, 0, NULL},
    {"secrets", SB_FIELD_OBJECT, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int channel_create(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "WITH c AS (INSERT INTO channels (tenant_id, type, name, settings, secrets, secret_names)"
        " VALUES (sb_tenant(), $1, $2, coalesce($3::jsonb, '{}'), $4::bytea,"
        "  coalesce(ARRAY(SELECT jsonb_array_elements_text($5::jsonb) ORDER BY 1), '{}'))"
        " RETURNING *)"
        /* Plugins that list channels (an SMTP listener) learn of it on commit. */
        " SELECT sb_channel_json(c) FROM c, (SELECT pg_notify('switchboard_channels', '')) n";
    json_t *body = sb_http_req_json(req);

    if (sb_api_check(req, body, NULL, chan_create_fields) != 0)
        return 0;
    sb_api_op_t *op = chan_op(req, 201, sql, 5);
    op->params[0] = json_string_value(json_object_get(body, "type"));
    op->params[1] = json_string_value(json_object_get(body, "name"));
    int rc = chan_prepare(req, op, op->params[0], json_object_get(body, "settings"),
                          json_object_get(body, "secrets"), &op->params[2], &op->params[3],
                          &op->params[4]);
    if (rc == SB_EINVAL)
        return 0;
    if (rc != 0)
        return rc;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

static int channel_update(sb_http_req_t *req, void *data)
{
    static const sb_api_field_t fields[] = {
        {"name", SB_FIELD_STRING, 2, 200, NULL},  {"settings", SB_FIELD_OBJECT, 0, 0, NULL},
        {"secrets", SB_FIELD_OBJECT, 0, 0, NULL}, {"active", SB_FIELD_BOOL, 0, 0, NULL},
        {"type", SB_FIELD_STRING, 0, 32, NULL},   {NULL, 0, 0, 0, NULL},
    };
    /* The type cannot change; passing it (the same) lets the plugin check
     * new settings, and a different one changes nothing (no row matches). */
    static const char sql[] =
        "WITH c AS (UPDATE channels SET name = coalesce($2, name),"
        "  settings = coalesce($3::jsonb, settings),"
        "  secrets = CASE WHEN $5::jsonb IS NULL THEN secrets ELSE $4::bytea END,"
        "  secret_names = CASE WHEN $5::jsonb IS NULL THEN secret_names"
        "   ELSE ARRAY(SELECT jsonb_array_elements_text($5::jsonb) ORDER BY 1) END,"
        "  active = coalesce($6::boolean, active), updated_at = now()"
        " WHERE tenant_id = sb_tenant() AND id = $1::bigint AND type = coalesce($7, type)"
        " RETURNING *)"
        /* Workers cache instances for their webhooks: tell them on commit. */
        " SELECT sb_channel_json(c) FROM c, (SELECT pg_notify('switchboard_channels', '')) n";
    json_t *body = sb_http_req_json(req);
    const char *id = sb_api_path_id(req, "id");

    if (id == NULL)
        return SB_ENOENT;
    if (sb_api_check(req, body, NULL, fields) != 0)
        return 0;
    const char *type = json_string_value(json_object_get(body, "type"));
    if (json_object_get(body, "settings") && type == NULL) {
        sb_api_respond_invalid(req, "type",
                               "field \"type\" is required with \"settings\": the channel's "
                               "plugin checks them");
        return 0;
    }
    sb_api_op_t *op = chan_op(req, 200, sql, 7);
    op->params[0] = id;
    op->params[1] = json_string_value(json_object_get(body, "name"));
    json_t *active = json_object_get(body, "active");
    op->params[5] = active ? (json_is_true(active) ? "true" : "false") : NULL;
    op->params[6] = type;
    int rc = chan_prepare(req, op, type, json_object_get(body, "settings"),
                          json_object_get(body, "secrets"), &op->params[2], &op->params[3],
                          &op->params[4]);
    if (rc == SB_EINVAL)
        return 0;
    if (rc != 0)
        return rc;
    /* This worker forgets the instance now; the others (and this one, once
     * more, should a webhook re-cache it before commit) on the NOTIFY. */
    sb_plugins_channels_changed();
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

static int channels_list(sb_http_req_t *req, void *data)
{
    static const char sql[] =
        "SELECT json_build_object('items', coalesce(json_agg(sb_channel_json(c) ORDER BY c.id),"
        " '[]'), 'next_cursor', NULL) FROM channels c WHERE c.tenant_id = sb_tenant()";
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, chan_op(req, 200, sql, 0));
}

static int channel_get(sb_http_req_t *req, void *data)
{
    static const char sql[] = "SELECT sb_channel_json(c) FROM channels c"
                              " WHERE c.tenant_id = sb_tenant() AND c.id = $1::bigint";
    const char *id = sb_api_path_id(req, "id");
    if (id == NULL)
        return SB_ENOENT;
    sb_api_op_t *op = chan_op(req, 200, sql, 1);
    op->params[0] = id;
    return sb_api_op_begin(req, data, SB_ROLE_ADMIN, op);
}

int sb_api_channel_routes_add(sb_router_t *r, sb_api_t *api)
{
    int rc = 0;
    rc |= sb_router_add(r, "GET", TENANT "/channels", 0, channels_list, api);
    rc |= sb_router_add(r, "POST", TENANT "/channels", SB_ROUTE_JSON, channel_create, api);
    rc |= sb_router_add(r, "GET", TENANT "/channels/{id}", 0, channel_get, api);
    rc |= sb_router_add(r, "PATCH", TENANT "/channels/{id}", SB_ROUTE_JSON, channel_update, api);
    return rc ? SB_EINVAL : 0;
}
