/*
 * plugin/host.h - the server's side of the plugin ABI: loading channel
 * plugins in the master (file checks, dlopen, ABI checks, init), binding
 * them to each worker (routes, start/stop), and the host function table
 * they call.  The contract itself is include/switchboard/plugin.h.
 */
#ifndef SB_PLUGIN_HOST_H
#define SB_PLUGIN_HOST_H

#include <switchboard/plugin.h>

#include "config.h"
#include "db/db.h"
#include "http/http.h"

/*
 * Master, before fork: loads the plugins named in cfg->plugins (all in
 * cfg->plugins_dir when NULL) and runs their init.  A plugin that cannot
 * be loaded or fails init is logged and left out, unless it is listed in
 * cfg->plugins_required: then this returns SB_EINVAL and the server must
 * not start.  Borrows cfg for the process's life.
 */
int sb_plugins_load(const sb_config_t *cfg);

/*
 * Worker: adds the plugins' routes to router and runs their start on
 * loop, with db for ingest().  Borrows all three until sb_plugins_stop.
 * worker_index (0 ..) is what worker_info tells plugins.
 */
int sb_plugins_start(uv_loop_t *loop, sb_router_t *router, sb_db_t *db, int worker_index);

/* Worker: a channel instance changed somewhere; forget the cached ones
 * and tell the plugins that keep lists. */
void sb_plugins_channels_changed(void);

/* Worker: runs every started plugin's stop. */
void sb_plugins_stop(void);

/* Releases the plugins (dlclose).  After stop, at process exit. */
void sb_plugins_unload(void);

/* What a plugin reported about a delivery beyond its result (send_report). */
typedef struct sb_send_report {
    const char *platform_id; /* the platform's id of the message, or NULL */
    int retry_after_s;       /* > 0: retry after this many seconds */
} sb_send_report_t;

/* result and detail as sb_send_cb; rep and detail borrowed for the call. */
typedef void (*sb_plugins_sent_cb)(int result, const char *detail, const sb_send_report_t *rep,
                                   void *data);

/*
 * Worker: hands msg to the send() of the plugin named msg->channel, with
 * the channel instance channel_id (0: none) looked up first.  Borrows msg
 * until done.  Returns 0 and calls done once (possibly before returning);
 * or SB_ENOENT (no such plugin, or it cannot send), SB_EUNAVAILABLE (the
 * instance could not be looked up) or the plugin's error, and never calls
 * done.
 */
int sb_plugins_send(const sb_outbound_t *msg, int64_t channel_id, sb_plugins_sent_cb done,
                    void *data);

/* status, bytes and len as sb_file_cb; the bytes are borrowed for the call. */
typedef void (*sb_plugins_file_cb)(int status, const void *bytes, size_t len, void *data);

/*
 * Worker: has the plugin of channel instance channel_id of tenant fetch
 * the file it recorded as file_id (an attachment without bytes).  Returns
 * 0 and calls done once (possibly before returning): with the bytes, or
 * SB_ENOENT (the platform no longer has the file), SB_DECLINED (no such
 * active instance, or its plugin cannot fetch), SB_EUNAVAILABLE; or
 * returns SB_ENOENT or SB_EUNAVAILABLE and never calls done.
 */
int sb_plugins_fetch_file(const char *tenant, int64_t channel_id, const char *file_id,
                          sb_plugins_file_cb done, void *data);

/* The NOTIFY channel that says "a channel instance changed". */
#define SB_CHANNELS_CHANNEL "switchboard_channels"

/*
 * The names of the started plugins that can send, as a PostgreSQL array
 * literal ("{chat,email}") in out.  Returns how many there are.
 */
int sb_plugins_senders(char *out, size_t len);

/*
 * Worker: checks settings for a channel of type (a plugin's name).  0;
 * SB_ENOENT when no loaded plugin has that name; SB_EINVAL with field and
 * message filled when the plugin refuses them.
 */
int sb_plugins_validate(const char *type, const char *settings_json, char *field, size_t field_len,
                        char *message, size_t message_len);

/* Worker: hands one event (a NOTIFY payload) to the plugins subscribed. */
void sb_plugins_event(const char *json);

/* Number of loaded plugins and the name of plugin i. */
size_t sb_plugins_count(void);
const char *sb_plugins_name(size_t i);

/*
 * Loads one plugin file and checks it without running it: 0, or SB_EINVAL
 * with the reason logged (missing symbol, ABI mismatch, unsafe file).  For
 * the loader and its tests.
 */
int sb_plugin_check_file(const char *path, const char *name);

#endif
