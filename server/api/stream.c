/*
 * stream.c - GET /api/v1/stream, the agents' live events over a
 * WebSocket.  Each worker LISTENs once; every event NOTIFYed by any worker
 * or instance reaches the subscribers of this worker whose agent belongs
 * to the event's tenant, and no one else.  A subscriber that cannot keep
 * up is closed (1008) instead of being buffered without limit.
 */
#include "api.h"
#include "common.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MAX_TENANTS 64

typedef struct stream_sub {
    struct stream_sub *prev, *next;
    sb_ws_t *ws;
    int ntenants;
    long long tenants[STREAM_MAX_TENANTS];
} stream_sub_t;

static stream_sub_t *stream_subs;
static size_t stream_count;

static void stream_on_text(sb_ws_t *ws, const char *text, size_t len, void *data)
{
    /* The stream is one-way; a client's text is ignored. */
}

static void stream_on_close(sb_ws_t *ws, int code, void *data)
{
    stream_sub_t *s = data;
    if (s->prev)
        s->prev->next = s->next;
    else
        stream_subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    stream_count--;
    free(s);
}

static const sb_ws_callbacks_t stream_callbacks = {stream_on_text, stream_on_close};

static void stream_tenants_read(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;

    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    stream_sub_t *s = sb_xcalloc(1, sizeof(*s));
    for (int i = 0; i < PQntuples(res[0]) && s->ntenants < STREAM_MAX_TENANTS; i++)
        s->tenants[s->ntenants++] = atoll(PQgetvalue(res[0], i, 0));
    int rc = sb_ws_accept(call->req, &stream_callbacks, s, &s->ws);
    if (rc != 0) {
        free(s);
        if (rc == SB_EUNAVAILABLE)
            sb_http_respond_error(call->req, 503, "unavailable", "the server is shutting down");
        else {
            sb_http_res_header(call->req, "Upgrade", "websocket");
            sb_http_respond_error(call->req, 426, "upgrade_required",
                                  "this endpoint needs a WebSocket upgrade (version 13)");
        }
        return;
    }
    s->next = stream_subs;
    if (stream_subs)
        stream_subs->prev = s;
    stream_subs = s;
    stream_count++;
}

static void stream_next(sb_api_call_t *call)
{
    static const char sql[] = "SELECT tenant_id FROM memberships WHERE agent_id = sb_agent()"
                              " ORDER BY tenant_id";
    sb_db_stmt_t s = {sql, 0, NULL};
    if (sb_api_tx(call, &s, 1, stream_tenants_read) != 0)
        sb_api_respond_unavailable(call->req);
}

static int stream_open(sb_http_req_t *req, void *data)
{
    return sb_api_begin(req, data, NULL, SB_ROLE_NONE, stream_next, NULL);
}

void sb_api_stream_event(const char *payload)
{
    json_error_t err;
    json_t *doc = json_loads(payload, 0, &err);
    json_int_t tenant = json_integer_value(json_object_get(doc, "tenant_id"));

    json_decref(doc);
    if (tenant <= 0)
        return;
    size_t len = strlen(payload);
    stream_sub_t *s = stream_subs;
    while (s) {
        /* Sending may close (and free) this subscriber: step first. */
        stream_sub_t *next = s->next;
        for (int i = 0; i < s->ntenants; i++) {
            if (s->tenants[i] == tenant) {
                sb_ws_send(s->ws, payload, len);
                break;
            }
        }
        s = next;
    }
}

size_t sb_api_stream_subscribers(void)
{
    return stream_count;
}

int sb_api_stream_routes_add(sb_router_t *r, sb_api_t *api)
{
    return sb_router_add(r, "GET", "/api/v1/stream", 0, stream_open, api);
}
