/*
 * config.h - the server's validated configuration.  Reads a Lua config
 * file (globals are keys) and SWITCHBOARD_* environment variables, which
 * win.  Runtime code receives a filled sb_config_t and never parses
 * anything itself.  Runs in the master (and in CLI commands).
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "log.h"

typedef struct sb_config {
    char *config_file;  /* NULL when none was given */
    char *database_url; /* libpq conninfo or URI; "" = libpq defaults */
    char *listen;       /* "host:port" as given */
    struct sockaddr_storage listen_addr;
    int workers;
    sb_log_level_t log_level;
    char *data_dir;
    char *plugins_dir;
    char *plugins;          /* comma-separated names, or NULL = all */
    char *plugins_required; /* comma-separated: failing to load these stops the server */
    char *scripts_dir;
    size_t max_body_size;
    uint64_t header_timeout_ms;
    uint64_t read_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t shutdown_timeout_ms;
    int db_pool_size;
    int max_connections;
    int debug_routes;
    char *public_url;            /* how customers reach this server ("https://help.example.com") */
    uint64_t survey_valid_ms;    /* how long a survey link stays valid */
    int webhook_allow_private;   /* webhooks may reach non-public addresses */
    int channels_allow_private;  /* channel plugins' API calls may reach non-public addresses */
    size_t rules_memory_limit;   /* per tenant's Lua state */
    int rules_instruction_limit; /* per handler call */
    /* Plugin settings from the file: <plugin> = { <key> = <value> }. */
    struct sb_config_setting {
        char *section, *key, *value;
    } * settings;
    size_t nsettings;
} sb_config_t;

/*
 * Loads defaults, then the Lua file (when file is not NULL), then the
 * environment.  Returns 0, or SB_EINVAL with a message naming the key and
 * the problem in err (never logged here: the caller prints it and exits 2).
 * On success cfg owns its strings; release them with sb_config_free.
 */
int sb_config_load(sb_config_t *cfg, const char *file, char *err, size_t errlen);

/* Releases what sb_config_load allocated.  Safe on a zeroed struct. */
void sb_config_free(sb_config_t *cfg);

/*
 * A plugin's setting: SWITCHBOARD_<PLUGIN>_<KEY> from the environment, else
 * the file's <plugin> = { <key> = ... } table, else NULL.  Borrowed from cfg
 * (or the environment).
 */
const char *sb_config_plugin_get(const sb_config_t *cfg, const char *plugin, const char *key);

/* True when name is in the comma-separated list (NULL: false). */
int sb_config_list_has(const char *list, const char *name);

/* Deep copy of src into dst (dst owns the copy). */
void sb_config_copy(sb_config_t *dst, const sb_config_t *src);

/*
 * Value parsers shared with the tests: each returns 0 or SB_EINVAL.
 * sb_config_parse_size accepts bytes with an optional suffix
 * (K, KB, KiB, M, MB, MiB, G, GB, GiB; all binary multiples).
 */
int sb_config_parse_size(const char *s, size_t *out);
int sb_config_parse_seconds(const char *s, uint64_t *out_ms);
int sb_config_parse_listen(const char *s, struct sockaddr_storage *out);
int sb_config_parse_bool(const char *s, int *out);

#endif
