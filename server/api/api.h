/*
 * api.h - the server's own HTTP routes: health, readiness, metrics and
 * (when enabled for tests) debug routes.  The REST API of the domain
 * registers here too as it grows.  Worker loop thread only.
 */
#ifndef SB_API_H
#define SB_API_H

#include "config.h"
#include "db/db.h"
#include "http/http.h"

/* What route handlers reach: borrowed, valid for the worker's life. */
typedef struct sb_api {
    uv_loop_t *loop;
    sb_db_t *db;
    const sb_config_t *cfg;
    sb_router_t *router;
} sb_api_t;

/* ======================== authenticated calls ======================== */

/* A member's role in a tenant, ordered by what it may do. */
typedef enum sb_role {
    SB_ROLE_NONE = 0,
    SB_ROLE_VIEWER,     /* the client company's auditor: reads only */
    SB_ROLE_AGENT,      /* works tickets */
    SB_ROLE_SUPERVISOR, /* also reassigns anyone's, manages teams */
    SB_ROLE_ADMIN,      /* also manages agents, memberships, channels, rules */
} sb_role_t;

typedef struct sb_api_call sb_api_call_t;
typedef void (*sb_api_next_cb)(sb_api_call_t *call);

/* One authenticated API request.  Lives in the request's pool. */
struct sb_api_call {
    sb_http_req_t *req;
    sb_api_t *api;
    char token_hash[72];
    char agent_id[24];
    const char *agent_name;
    const char *agent_email;
    int platform_admin;
    char tenant_id[24];  /* "" outside a tenant */
    char api_key_id[24]; /* the integration\'s key, or "" for an agent */
    sb_role_t role;
    sb_api_next_cb next;
    void *data;   /* the handler's own state */
    int attempts; /* for handlers that retry a conflict */
};

/* Parses "admin", "supervisor", "agent" or "viewer"; SB_ROLE_NONE otherwise. */
sb_role_t sb_api_role_parse(const char *s);
const char *sb_api_role_name(sb_role_t role);

/*
 * Authenticates the bearer token (401 when missing or invalid): an agent's
 * session token, or a tenant's API key ("sbk_...", tenant routes only).  With a
 * tenant slug, also finds the tenant and the caller's role in it: 404 when
 * the caller is not a member (a foreign tenant's existence does not leak),
 * 403 when the role is below min_role.  Then calls next.  Returns 0, or an
 * SB_E* code for the server to answer (next is then never called).
 */
int sb_api_begin(sb_http_req_t *req, sb_api_t *api, const char *tenant, sb_role_t min_role,
                 sb_api_next_cb next, void *data);

/*
 * Runs stmts in one transaction as the call's agent, within its tenant:
 * row-level security sees only that tenant's rows.  cb gets the results of
 * stmts only and call as data.  Returns 0 or SB_EUNAVAILABLE/SB_EBUSY
 * (cb not called).
 */
int sb_api_tx(sb_api_call_t *call, const sb_db_stmt_t *stmts, int n, sb_db_exec_cb cb);

/*
 * A numeric id from the path (1 to 18 digits), or NULL: a path whose id is
 * not a number names nothing, so the caller answers 404.  Borrowed.
 */
const char *sb_api_path_id(sb_http_req_t *req, const char *name);

/*
 * Optional query parameters, checked: *out is the value (borrowed) or NULL
 * when absent.  On a bad value responds 422 naming the parameter and
 * returns SB_EINVAL.  An id is a positive integer of at most 18 digits; a
 * date is a calendar day YYYY-MM-DD (year 1 to 9999), and ymd (when not
 * NULL) receives its year, month and day.
 */
int sb_api_query_id(sb_http_req_t *req, const char *name, const char **out);
int sb_api_query_date(sb_http_req_t *req, const char *name, const char **out, int ymd[3]);

/* Responds 503 (with Retry-After): the database could not take the request. */
void sb_api_respond_unavailable(sb_http_req_t *req);

/*
 * A tenant operation of one or two statements (sharing params), answered
 * from the last statement's first column: status 200 or 201 with that
 * document, or 204 when it is true (404 otherwise).  SQLSTATEs that mean a
 * client mistake are answered as the op says; anything else as
 * sb_api_respond_db_error.  Lives in the request's pool.
 */
typedef struct sb_api_op {
    int status;
    const char *sql[2];
    int nparams[2];
    const char *params[12];
    char buf[3][32];             /* room for numbers the handler formats */
    const char *conflict;        /* 23505: 409 with this message */
    const char *bad_ref_field;   /* 23503: 422 naming this field ... */
    const char *bad_ref_message; /* ... with this message */
    const char *bad22;           /* class 22: 422 naming this parameter */
    void *data;                  /* the handler's own */
} sb_api_op_t;

sb_api_op_t *sb_api_op_new(sb_http_req_t *req, int status, const char *sql, int nparams);
/* Adds a second statement to the same transaction. */
void sb_api_op_then(sb_api_op_t *op, const char *sql, int nparams);
/* Authenticates for the tenant in the path at role, then runs op. */
int sb_api_op_begin(sb_http_req_t *req, sb_api_t *api, sb_role_t role, sb_api_op_t *op);

/*
 * sb_api_tx callbacks for the common case: answer the last statement's
 * document with 200 (or 201), or the failure as sb_api_respond_db_error.
 */
void sb_api_done_ok(int status, PGresult *const *res, int n, void *call);
void sb_api_done_created(int status, PGresult *const *res, int n, void *call);

/* Responds with the first column of the first row (a JSON document), or 404. */
void sb_api_respond_row(sb_http_req_t *req, int status, const PGresult *res);

/* The SQLSTATE of the first failed result, or "". */
const char *sb_api_sqlstate(PGresult *const *res, int n);

/* ======================== input ======================== */

typedef enum sb_field_type {
    SB_FIELD_STRING,
    SB_FIELD_INT,
    SB_FIELD_BOOL,
    SB_FIELD_STRINGS, /* an array of strings */
    SB_FIELD_OBJECT,
    SB_FIELD_ID_OR_NULL, /* an integer id, or null to clear */
} sb_field_type_t;

/* One accepted member of a JSON object; lists end with a NULL name. */
typedef struct sb_api_field {
    const char *name;
    sb_field_type_t type;
    int required;             /* 1: present and non-empty; 2: non-empty if present */
    size_t max;               /* strings: characters; arrays: items (0 = no limit) */
    const char *const *oneof; /* strings: the allowed values (NULL-terminated) */
} sb_api_field_t;

/*
 * Checks that obj is an object with only the listed members, of the right
 * types and sizes.  On failure responds 422 naming the field (prefix.name)
 * and returns SB_EINVAL.
 */
int sb_api_check(sb_http_req_t *req, json_t *obj, const char *prefix, const sb_api_field_t *fields);

/* Responds 422 {"error":{"code":"invalid_field","field":field,"message":...}}. */
void sb_api_respond_invalid(sb_http_req_t *req, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Registers the session, tenant and ticket routes. */
int sb_api_session_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_ticket_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_member_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_customer_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_openapi_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_stream_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_channel_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_rule_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_compensation_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_feedback_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_problem_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_kb_routes_add(sb_router_t *r, sb_api_t *api);
int sb_api_reports_routes_add(sb_router_t *r, sb_api_t *api);

/*
 * Forwards one event (the JSON payload of a NOTIFY on the events channel)
 * to this worker's stream subscribers of its tenant.
 */
void sb_api_stream_event(const char *payload);

/* Open stream connections in this worker. */
size_t sb_api_stream_subscribers(void);

/*
 * Builds the OpenAPI 3 document of the routes on r (debug routes left
 * out).  Returns 0 with a new reference in *out, or SB_ENOENT with the
 * pattern of a route that has no description in *missing.
 */
int sb_api_openapi_build(const sb_router_t *r, json_t **out, const char **missing);

/* Registers every route on r.  Returns 0 or the router's error. */
int sb_api_routes_add(sb_router_t *r, sb_api_t *api);

/* The tenant role the server's request transactions run as. */
#define SB_API_DB_ROLE "switchboard_app"

/* Registers /healthz, /readyz and /metrics. */
int sb_api_health_routes_add(sb_router_t *r, sb_api_t *api);

/* Registers /debug/... (test hooks, only when cfg->debug_routes). */
int sb_api_debug_routes_add(sb_router_t *r, sb_api_t *api);

/*
 * Answers a failed database call: 503 with Retry-After when the database
 * is unavailable, 500 (logged) otherwise.
 */
void sb_api_respond_db_error(sb_http_req_t *req, int status, PGresult *const *res, int n);

#endif
