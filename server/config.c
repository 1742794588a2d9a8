/*
 * config.c - parsing and validating configuration.  The file is Lua
 * (a restricted chunk run with an empty environment, so a config file can
 * compute values but cannot touch the system); every value, from the
 * file or the environment, goes through the same validator.
 */
#include "config.h"
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#ifndef SB_BUILD_ROOT
#define SB_BUILD_ROOT ""
#endif
#ifndef SB_SOURCE_ROOT
#define SB_SOURCE_ROOT ""
#endif
#ifndef SB_INSTALL_PLUGINS_DIR
#define SB_INSTALL_PLUGINS_DIR "/usr/local/lib/switchboard/plugins"
#endif
#ifndef SB_INSTALL_SCRIPTS_DIR
#define SB_INSTALL_SCRIPTS_DIR "/usr/local/share/switchboard/scripts"
#endif

typedef enum {
    CFG_STRING,
    CFG_LISTEN,
    CFG_INT,
    CFG_SIZE,
    CFG_SECONDS,
    CFG_BOOL,
    CFG_LOGLEVEL,
} config_type_t;

typedef struct {
    const char *key; /* file key; env is SWITCHBOARD_<KEY> */
    config_type_t type;
    size_t offset;
    long min, max; /* CFG_INT bounds */
} config_key_t;

#define OFF(m) offsetof(sb_config_t, m)
static const config_key_t config_keys[] = {
    {"database_url", CFG_STRING, OFF(database_url), 0, 0},
    {"listen", CFG_LISTEN, OFF(listen), 0, 0},
    {"workers", CFG_INT, OFF(workers), 1, 128},
    {"log_level", CFG_LOGLEVEL, OFF(log_level), 0, 0},
    {"data_dir", CFG_STRING, OFF(data_dir), 0, 0},
    {"plugins_dir", CFG_STRING, OFF(plugins_dir), 0, 0},
    {"plugins", CFG_STRING, OFF(plugins), 0, 0},
    {"plugins_required", CFG_STRING, OFF(plugins_required), 0, 0},
    {"scripts_dir", CFG_STRING, OFF(scripts_dir), 0, 0},
    {"max_body_size", CFG_SIZE, OFF(max_body_size), 0, 0},
    {"header_timeout", CFG_SECONDS, OFF(header_timeout_ms), 0, 0},
    {"read_timeout", CFG_SECONDS, OFF(read_timeout_ms), 0, 0},
    {"idle_timeout", CFG_SECONDS, OFF(idle_timeout_ms), 0, 0},
    {"shutdown_timeout", CFG_SECONDS, OFF(shutdown_timeout_ms), 0, 0},
    {"db_pool_size", CFG_INT, OFF(db_pool_size), 1, 64},
    {"max_connections", CFG_INT, OFF(max_connections), 16, 1000000},
    {"debug_routes", CFG_BOOL, OFF(debug_routes), 0, 0},
    {"public_url", CFG_STRING, OFF(public_url), 0, 0},
    {"survey_valid_for", CFG_SECONDS, OFF(survey_valid_ms), 0, 0},
    {"webhook_allow_private", CFG_BOOL, OFF(webhook_allow_private), 0, 0},
    {"channels_allow_private", CFG_BOOL, OFF(channels_allow_private), 0, 0},
    {"rules_memory_limit", CFG_SIZE, OFF(rules_memory_limit), 0, 0},
    {"rules_instruction_limit", CFG_INT, OFF(rules_instruction_limit), 10000, 1000000000},
};
#undef OFF

/* ======================== value parsers ======================== */

int sb_config_parse_size(const char *s, size_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
        {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30},
    };
    char *end;

    if (!isdigit((unsigned char)*s))
        return SB_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return SB_EINVAL;
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < SB_ARRAY_SIZE(units); i++) {
        if (strcasecmp(end, units[i].suffix) != 0)
            continue;
        if (v > (SIZE_MAX >> units[i].shift))
            return SB_EINVAL;
        *out = (size_t)(v << units[i].shift);
        return 0;
    }
    return SB_EINVAL;
}

int sb_config_parse_seconds(const char *s, uint64_t *out_ms)
{
    char *end;

    if (!isdigit((unsigned char)*s) && *s != '.')
        return SB_EINVAL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || v < 0 || v > 86400.0 * 365)
        return SB_EINVAL;
    *out_ms = (uint64_t)(v * 1000.0 + 0.5);
    return 0;
}

int sb_config_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < SB_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return SB_EINVAL;
}

int sb_config_parse_listen(const char *s, struct sockaddr_storage *out)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    char *end;

    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host))
        return SB_EINVAL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 1 || port > 65535)
        return SB_EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';

    memset(out, 0, sizeof(*out));
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']')
            return SB_EINVAL;
        host[n - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) ? SB_EINVAL : 0;
    }
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) ? SB_EINVAL : 0;
}

/* ======================== applying one value ======================== */

static int config_set(sb_config_t *cfg, const config_key_t *k, const char *val, const char *source,
                      char *err, size_t errlen)
{
    void *field = (char *)cfg + k->offset;
    const char *problem = NULL;
    char range[96];

    switch (k->type) {
    case CFG_STRING:
        free(*(char **)field);
        *(char **)field = sb_xstrdup(val);
        return 0;
    case CFG_LISTEN:
        if (sb_config_parse_listen(val, &cfg->listen_addr) != 0) {
            problem = "must be host:port with a numeric IPv4 address, [IPv6] address or localhost, "
                      "and a port from 1 to 65535";
            break;
        }
        free(cfg->listen);
        cfg->listen = sb_xstrdup(val);
        return 0;
    case CFG_INT: {
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (*val == '\0' || *end != '\0' || errno || v < k->min || v > k->max) {
            snprintf(range, sizeof(range), "must be an integer from %ld to %ld", k->min, k->max);
            problem = range;
            break;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case CFG_SIZE:
        if (sb_config_parse_size(val, (size_t *)field) != 0)
            problem = "must be a size in bytes, optionally with a unit (KiB, MiB, GiB)";
        break;
    case CFG_SECONDS:
        if (sb_config_parse_seconds(val, (uint64_t *)field) != 0)
            problem = "must be a non-negative number of seconds";
        break;
    case CFG_BOOL:
        if (sb_config_parse_bool(val, (int *)field) != 0)
            problem = "must be a boolean (true/false, on/off, 1/0)";
        break;
    case CFG_LOGLEVEL:
        if (sb_log_level_parse(val, (sb_log_level_t *)field) != 0)
            problem = "must be one of debug, info, notice, warning, error";
        break;
    }
    if (problem == NULL)
        return 0;
    snprintf(err, errlen, "invalid value for configuration key \"%s\" (%s): \"%s\": %s", k->key,
             source, val, problem);
    return SB_EINVAL;
}

static const config_key_t *config_key_find(const char *name)
{
    for (size_t i = 0; i < SB_ARRAY_SIZE(config_keys); i++)
        if (strcmp(config_keys[i].key, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* ======================== defaults ======================== */

/* True when this binary runs from the meson build tree. */
static int config_in_build_tree(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n <= 0 || SB_BUILD_ROOT[0] == '\0')
        return 0;
    exe[n] = '\0';
    return strncmp(exe, SB_BUILD_ROOT "/", strlen(SB_BUILD_ROOT) + 1) == 0;
}

static void config_defaults(sb_config_t *cfg)
{
    int in_tree = config_in_build_tree();

    memset(cfg, 0, sizeof(*cfg));
    cfg->database_url = sb_xstrdup("");
    cfg->listen = sb_xstrdup("127.0.0.1:8080");
    sb_config_parse_listen(cfg->listen, &cfg->listen_addr);
    cfg->workers = (int)uv_available_parallelism();
    if (cfg->workers > 128)
        cfg->workers = 128;
    cfg->log_level = SB_LOG_INFO;
    cfg->data_dir = sb_xstrdup("var");
    cfg->plugins_dir = sb_xstrdup(in_tree ? SB_BUILD_ROOT "/plugins" : SB_INSTALL_PLUGINS_DIR);
    cfg->plugins = NULL;
    cfg->scripts_dir = sb_xstrdup(in_tree ? SB_SOURCE_ROOT "/scripts" : SB_INSTALL_SCRIPTS_DIR);
    cfg->max_body_size = 10u << 20;
    cfg->rules_memory_limit = 8u << 20;
    cfg->survey_valid_ms = 14 * 86400 * 1000ULL;
    cfg->rules_instruction_limit = 5000000;
    cfg->header_timeout_ms = 10000;
    cfg->read_timeout_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    cfg->shutdown_timeout_ms = 10000;
    cfg->db_pool_size = 4;
    cfg->max_connections = 20000;
    cfg->debug_routes = 0;
}

/* ======================== the Lua file ======================== */

static void config_setting_add(sb_config_t *cfg, const char *section, const char *key,
                               const char *value)
{
    cfg->settings = sb_xrealloc(cfg->settings, (cfg->nsettings + 1) * sizeof(*cfg->settings));
    cfg->settings[cfg->nsettings].section = sb_xstrdup(section);
    cfg->settings[cfg->nsettings].key = sb_xstrdup(key);
    cfg->settings[cfg->nsettings].value = sb_xstrdup(value);
    cfg->nsettings++;
}

/* A plugin's table (at the top of the stack): string keys, scalar values. */
static int config_load_section(lua_State *L, sb_config_t *cfg, const char *section,
                               const char *file, char *err, size_t errlen)
{
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING ||
            (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)) {
            snprintf(err, errlen,
                     "invalid settings for plugin \"%s\" in \"%s\": keys must be names and values "
                     "strings, numbers or booleans",
                     section, file);
            lua_pop(L, 2);
            return SB_EINVAL;
        }
        const char *v =
            vt == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false") : lua_tostring(L, -1);
        config_setting_add(cfg, section, lua_tostring(L, -2), v);
        lua_pop(L, 1);
    }
    return 0;
}

static int config_load_file(sb_config_t *cfg, const char *file, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    int rc = 0;

    if (L == NULL) {
        snprintf(err, errlen, "could not create a Lua state to read \"%s\"", file);
        return SB_ENOMEM;
    }
    /* string and math only: a config file computes values, it does no I/O. */
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    lua_settop(L, 0);

    if (luaL_loadfilex(L, file, "t") != LUA_OK) {
        snprintf(err, errlen, "could not read configuration file: %s", lua_tostring(L, -1));
        rc = SB_EINVAL;
        goto done;
    }
    /* The chunk's _ENV: a fresh table that only sees string and math. */
    lua_newtable(L);
    lua_getglobal(L, "string");
    lua_setfield(L, -2, "string");
    lua_getglobal(L, "math");
    lua_setfield(L, -2, "math");
    lua_pushvalue(L, -1);
    lua_setupvalue(L, 1, 1);
    lua_insert(L, 1); /* the env table stays at index 1 */
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "could not load configuration file: %s", lua_tostring(L, -1));
        rc = SB_EINVAL;
        goto done;
    }

    char source[PATH_MAX + 16];
    snprintf(source, sizeof(source), "in \"%s\"", file);
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, 1) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(err, errlen, "configuration file \"%s\": keys must be names", file);
            rc = SB_EINVAL;
            break;
        }
        const char *name = lua_tostring(L, -2);
        if (strcmp(name, "string") == 0 || strcmp(name, "math") == 0) {
            lua_pop(L, 1);
            continue;
        }
        if (lua_type(L, -1) == LUA_TTABLE && config_key_find(name) == NULL) {
            rc = config_load_section(L, cfg, name, file, err, errlen);
            lua_pop(L, 1);
            continue;
        }
        const config_key_t *k = config_key_find(name);
        if (k == NULL) {
            snprintf(err, errlen, "unrecognized configuration key \"%s\" in \"%s\"", name, file);
            rc = SB_EINVAL;
            break;
        }
        const char *val;
        switch (lua_type(L, -1)) {
        case LUA_TBOOLEAN:
            val = lua_toboolean(L, -1) ? "true" : "false";
            break;
        case LUA_TSTRING:
        case LUA_TNUMBER:
            val = lua_tostring(L, -1); /* converts the copy in place */
            break;
        default:
            snprintf(err, errlen,
                     "invalid value for configuration key \"%s\" (%s): must be a string, number or "
                     "boolean",
                     name, source);
            rc = SB_EINVAL;
            continue;
        }
        rc = config_set(cfg, k, val, source, err, errlen);
        lua_pop(L, 1);
    }
done:
    lua_close(L);
    return rc;
}

/* ======================== entry points ======================== */

static int config_load_env(sb_config_t *cfg, char *err, size_t errlen)
{
    char env[64];

    for (size_t i = 0; i < SB_ARRAY_SIZE(config_keys); i++) {
        const config_key_t *k = &config_keys[i];
        size_t n = (size_t)snprintf(env, sizeof(env), "SWITCHBOARD_%s", k->key);
        for (size_t j = 12; j < n; j++)
            env[j] = (char)toupper((unsigned char)env[j]);
        const char *val = getenv(env);
        if (val == NULL)
            continue;
        int rc = config_set(cfg, k, val, env, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int sb_config_load(sb_config_t *cfg, const char *file, char *err, size_t errlen)
{
    int rc;

    config_defaults(cfg);
    if (file != NULL) {
        cfg->config_file = sb_xstrdup(file);
        rc = config_load_file(cfg, file, err, errlen);
        if (rc != 0)
            goto fail;
    }
    rc = config_load_env(cfg, err, errlen);
    if (rc != 0)
        goto fail;
    if (cfg->plugins != NULL && cfg->plugins[0] == '\0') {
        free(cfg->plugins);
        cfg->plugins = NULL;
    }
    return 0;
fail:
    sb_config_free(cfg);
    return rc;
}

static char *config_dup_opt(const char *s)
{
    return s ? sb_xstrdup(s) : NULL;
}

const char *sb_config_plugin_get(const sb_config_t *cfg, const char *plugin, const char *key)
{
    char env[160];
    size_t n = (size_t)snprintf(env, sizeof(env), "SWITCHBOARD_%s_%s", plugin, key);
    for (size_t i = 0; i < n && i < sizeof(env); i++)
        env[i] = (char)(isalnum((unsigned char)env[i]) ? toupper((unsigned char)env[i]) : '_');
    const char *v = getenv(env);
    if (v)
        return v;
    for (size_t i = 0; i < cfg->nsettings; i++)
        if (strcmp(cfg->settings[i].section, plugin) == 0 && strcmp(cfg->settings[i].key, key) == 0)
            return cfg->settings[i].value;
    return NULL;
}

int sb_config_list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p += len;
    }
    return 0;
}

void sb_config_copy(sb_config_t *dst, const sb_config_t *src)
{
    *dst = *src;
    dst->config_file = config_dup_opt(src->config_file);
    dst->database_url = config_dup_opt(src->database_url);
    dst->listen = config_dup_opt(src->listen);
    dst->data_dir = config_dup_opt(src->data_dir);
    dst->plugins_dir = config_dup_opt(src->plugins_dir);
    dst->plugins = config_dup_opt(src->plugins);
    dst->scripts_dir = config_dup_opt(src->scripts_dir);
    dst->public_url = config_dup_opt(src->public_url);
    dst->plugins_required = config_dup_opt(src->plugins_required);
    dst->settings = NULL;
    dst->nsettings = 0;
    for (size_t i = 0; i < src->nsettings; i++)
        config_setting_add(dst, src->settings[i].section, src->settings[i].key,
                           src->settings[i].value);
}

void sb_config_free(sb_config_t *cfg)
{
    free(cfg->config_file);
    free(cfg->database_url);
    free(cfg->listen);
    free(cfg->data_dir);
    free(cfg->plugins_dir);
    free(cfg->plugins);
    free(cfg->scripts_dir);
    free(cfg->public_url);
    free(cfg->plugins_required);
    for (size_t i = 0; i < cfg->nsettings; i++) {
        free(cfg->settings[i].section);
        free(cfg->settings[i].key);
        free(cfg->settings[i].value);
    }
    free(cfg->settings);
    memset(cfg, 0, sizeof(*cfg));
}
