/*
 * sandbox.c - a tenant's Lua state: allocator with a cap, count hook with
 * a budget, the prelude, JSON in and out, and running user code in
 * coroutines so that an exhausted budget stops it for good.
 *
 * Why coroutines: an error raised from the hook could be caught by a
 * pcall in the script, which could then loop on.  The hook instead yields
 * (Lua 5.4 lets count hooks yield), which unwinds through every pcall up
 * to our lua_resume; the coroutine is then dropped, never resumed.
 */
#include "rules/sandbox.h"
#include "common.h"
#include "rules/calendar.h"
#include "rules/rules.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SANDBOX_HOOK_EVERY 1000
#define SANDBOX_JSON_DEPTH 32

struct sb_sandbox {
    lua_State *L;
    size_t used, limit;
    uint64_t budget, spent;
    int exceeded;
    int prelude_ref; /* the prelude's table R */
    int env_ref;     /* the scripts' environment */
};

/* ======================== memory and time ======================== */

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sb_sandbox_t *sb = ud;
    size_t old = ptr ? osize : 0;

    if (nsize == 0) {
        free(ptr);
        sb->used -= old;
        return NULL;
    }
    if (nsize > old && sb->used - old + nsize > sb->limit)
        return NULL; /* Lua collects garbage and tries once more, then raises */
    void *p = realloc(ptr, nsize);
    if (p)
        sb->used = sb->used - old + nsize;
    return p;
}

static sb_sandbox_t *sandbox_of(lua_State *L)
{
    return *(sb_sandbox_t **)lua_getextraspace(L);
}

static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
    sb_sandbox_t *sb = sandbox_of(L);
    sb->spent += SANDBOX_HOOK_EVERY;
    if (sb->spent > sb->budget) {
        sb->exceeded = 1;
        lua_yield(L, 0);
    }
}

/* ======================== calendar functions for the prelude ======================== */

static const char *const CAL_MT = "sb.calendar";

static int cal_gc(lua_State *L)
{
    sb_calendar_t **c = luaL_checkudata(L, 1, CAL_MT);
    sb_calendar_free(*c);
    *c = NULL;
    return 0;
}

static sb_calendar_t *cal_opt(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    return *(sb_calendar_t **)luaL_checkudata(L, idx, CAL_MT);
}

/* cal_new(tz, {{weekday, "09:00", "18:00"}, ...}, {"2026-12-25", ...}) -> cal | nil, err */
static int cal_new(lua_State *L)
{
    const char *tz = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    sb_calendar_t **c = lua_newuserdatauv(L, sizeof(*c), 0);
    *c = NULL;
    luaL_setmetatable(L, CAL_MT);
    if (sb_calendar_new(tz, c) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "unknown time zone \"%s\"", tz);
        return 2;
    }
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        int open, close;
        lua_geti(L, 2, i);
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        lua_geti(L, -3, 3);
        int wd = (int)lua_tointeger(L, -3);
        const char *a = lua_tostring(L, -2), *b = lua_tostring(L, -1);
        if (!a || !b || sb_clock_parse(a, &open) != 0 || sb_clock_parse(b, &close) != 0 ||
            sb_calendar_add_hours(*c, wd, open, close) != 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "invalid hours %s-%s (write {\"09:00\", \"18:00\"})", a ? a : "?",
                            b ? b : "?");
            return 2;
        }
        lua_pop(L, 4);
    }
    n = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= n; i++) {
        int y, m, d;
        lua_geti(L, 3, i);
        const char *s = lua_tostring(L, -1);
        if (!s || sb_date_parse(s, &y, &m, &d) != 0 || sb_calendar_add_holiday(*c, y, m, d) != 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "invalid holiday \"%s\" (write \"2026-12-25\")", s ? s : "?");
            return 2;
        }
        lua_pop(L, 1);
    }
    if (!sb_calendar_has_hours(*c)) {
        lua_pushnil(L);
        lua_pushstring(L, "no working hours");
        return 2;
    }
    return 1;
}

static int cal_add(lua_State *L)
{
    sb_calendar_t *c = cal_opt(L, 1);
    int64_t out;
    if (sb_calendar_add(c, (int64_t)luaL_checknumber(L, 2), (int64_t)luaL_checknumber(L, 3),
                        &out) != 0)
        return luaL_error(L, "the calendar has no business time to count");
    lua_pushinteger(L, out);
    return 1;
}

static int cal_between(lua_State *L)
{
    sb_calendar_t *c = cal_opt(L, 1);
    lua_pushinteger(L, sb_calendar_between(c, (int64_t)luaL_checknumber(L, 2),
                                           (int64_t)luaL_checknumber(L, 3)));
    return 1;
}

static int lua_duration(lua_State *L)
{
    int64_t secs;
    if (sb_duration_parse(luaL_checkstring(L, 1), &secs) != 0)
        return 0;
    lua_pushinteger(L, secs);
    return 1;
}

/* ======================== JSON ======================== */

static void push_json(lua_State *L, json_t *v, int depth)
{
    luaL_checkstack(L, 4, "JSON too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *m;
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, k, m)
        {
            if (json_is_null(m) || depth >= SANDBOX_JSON_DEPTH)
                continue;
            push_json(L, m, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *m;
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, m)
        {
            if (json_is_null(m) || depth >= SANDBOX_JSON_DEPTH)
                continue;
            push_json(L, m, depth + 1);
            lua_seti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    default:
        lua_pushnil(L);
    }
}

/* Length of the sequence 1..n when t (at idx) is exactly that, else -1. */
static lua_Integer table_sequence_len(lua_State *L, int idx)
{
    lua_Integer n = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return -1;
        }
        n++;
        if (lua_tointeger(L, -1) > max)
            max = lua_tointeger(L, -1);
    }
    return max == n ? n : -1;
}

/*
 * The value at idx as JSON (a new reference; NULL for what JSON cannot
 * hold).  Empty tables become arrays.  Plain reads only: a metatable (a
 * read-only view) is seen through its __index when it has one.
 */
static json_t *to_json(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        return isfinite(lua_tonumber(L, idx)) ? json_real(lua_tonumber(L, idx)) : NULL;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return json_stringn(s, len); /* NULL when not UTF-8 */
    }
    case LUA_TTABLE:
        break;
    default:
        return NULL;
    }
    if (depth >= SANDBOX_JSON_DEPTH || !lua_checkstack(L, 4))
        return NULL;
    lua_Integer n = table_sequence_len(L, idx);
    if (n >= 0) {
        json_t *a = json_array();
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, idx, i);
            json_t *m = to_json(L, -1, depth + 1);
            json_array_append_new(a, m ? m : json_null());
            lua_pop(L, 1);
        }
        return a;
    }
    json_t *o = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        char kbuf[32];
        const char *k = NULL;
        if (lua_type(L, -2) == LUA_TSTRING)
            k = lua_tostring(L, -2);
        else if (lua_isinteger(L, -2)) {
            snprintf(kbuf, sizeof(kbuf), "%lld", (long long)lua_tointeger(L, -2));
            k = kbuf;
        }
        json_t *m = k ? to_json(L, -1, depth + 1) : NULL;
        if (m)
            json_object_set_new(o, k, m);
        lua_pop(L, 1);
    }
    return o;
}

/* ======================== running user code ======================== */

/* The position "script.lua:12: " at the front of a Lua message, if any. */
static int message_line(const char *msg)
{
    const char *colon = msg ? strchr(msg, ':') : NULL;
    if (!colon)
        return 0;
    char *end;
    long line = strtol(colon + 1, &end, 10);
    return end != colon + 1 && *end == ':' && line > 0 ? (int)line : 0;
}

static json_t *error_json(const char *script, int line, const char *message, const char *kind)
{
    json_t *e = json_pack("{s:s, s:s}", "message", message ? message : "?", "kind", kind);
    if (script)
        json_object_set_new(e, "script", json_string(script));
    if (line > 0)
        json_object_set_new(e, "line", json_integer(line));
    return e;
}

/* Where a stopped coroutine stood: "sla.lua" and its line. */
static int coroutine_where(lua_State *co, char *src, size_t srclen)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
            snprintf(src, srclen, "%s", ar.short_src);
            return ar.currentline;
        }
    }
    src[0] = '\0';
    return 0;
}

/*
 * Resumes co (function and nargs arguments pushed on it) under the
 * budget.  Returns NULL with the results left on co, or a new error
 * object (script is the fallback name for messages without one).
 */
static json_t *sandbox_resume(sb_sandbox_t *sb, lua_State *co, int nargs, int *nres,
                              const char *script)
{
    char src[128];
    char msg[512];

    sb->spent = 0;
    sb->exceeded = 0;
    lua_sethook(co, sandbox_hook, LUA_MASKCOUNT, SANDBOX_HOOK_EVERY);
    int st = lua_resume(co, sb->L, nargs, nres);
    lua_sethook(co, NULL, 0, 0);
    if (st == LUA_OK)
        return NULL;
    if (st == LUA_YIELD) {
        int line = coroutine_where(co, src, sizeof(src));
        if (sb->exceeded)
            snprintf(msg, sizeof(msg), "%s:%d: instruction budget exceeded (%llu instructions)",
                     src[0] ? src : script, line, (unsigned long long)sb->budget);
        else
            snprintf(msg, sizeof(msg), "%s:%d: a handler may not yield", src[0] ? src : script,
                     line);
        return error_json(script, line, msg, sb->exceeded ? "budget" : "error");
    }
    if (st == LUA_ERRMEM) {
        int line = coroutine_where(co, src, sizeof(src));
        snprintf(msg, sizeof(msg), "%s:%d: memory limit exceeded (%zu bytes)",
                 src[0] ? src : script, line, sb->limit);
        lua_gc(sb->L, LUA_GCCOLLECT);
        return error_json(script, line, msg, "memory");
    }
    const char *m = lua_tostring(co, -1);
    snprintf(msg, sizeof(msg), "%s", m ? m : "error object is not a string");
    return error_json(script, message_line(msg), msg, "error");
}

/* Pushes the prelude's R[name] on L. */
static void push_prelude(sb_sandbox_t *sb, lua_State *L, const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, sb->prelude_ref);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

/* ======================== lifecycle ======================== */

static int sandbox_open(lua_State *L)
{
    sb_sandbox_t *sb = lua_touserdata(L, 1);
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},
        {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},
        {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_OSLIBNAME, luaopen_os},
        {LUA_DBLIBNAME, luaopen_debug},
        {NULL, NULL},
    };
    static const luaL_Reg cfuncs[] = {
        {"cal_new", cal_new},       {"cal_add", cal_add}, {"cal_between", cal_between},
        {"duration", lua_duration}, {NULL, NULL},
    };

    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    luaL_newmetatable(L, CAL_MT);
    lua_pushcfunction(L, cal_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    if (luaL_loadbufferx(L, sb_rules_prelude, sb_rules_prelude_len, "=prelude", "t") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, cfuncs);
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    sb->prelude_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "user_env");
    lua_call(L, 0, 1);
    sb->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int sb_sandbox_new(const sb_sandbox_limits_t *limits, sb_sandbox_t **out)
{
    sb_sandbox_t *sb = sb_xcalloc(1, sizeof(*sb));
    sb->limit = limits && limits->memory ? limits->memory : (size_t)8 << 20;
    sb->budget = limits && limits->instructions ? limits->instructions : 5000000;
    sb->L = lua_newstate(sandbox_alloc, sb);
    if (sb->L == NULL) {
        free(sb);
        return SB_ENOMEM;
    }
    *(sb_sandbox_t **)lua_getextraspace(sb->L) = sb;
    lua_pushcfunction(sb->L, sandbox_open);
    lua_pushlightuserdata(sb->L, sb);
    if (lua_pcall(sb->L, 1, 0, 0) != LUA_OK) {
        /* Only a cap too small for the prelude gets here. */
        sb_sandbox_free(sb);
        return SB_ENOMEM;
    }
    *out = sb;
    return 0;
}

void sb_sandbox_free(sb_sandbox_t *sb)
{
    if (sb == NULL)
        return;
    lua_close(sb->L);
    free(sb);
}

size_t sb_sandbox_memory(const sb_sandbox_t *sb)
{
    return sb->used;
}

/* ======================== loading ======================== */

typedef struct {
    const char *name, *source;
    size_t len;
    json_t *err;
} load_ctx_t;

static int sandbox_load_protected(lua_State *L)
{
    load_ctx_t *ctx = lua_touserdata(L, 1);
    sb_sandbox_t *sb = sandbox_of(L);
    char chunk[96];

    push_prelude(sb, L, "begin_script");
    lua_pushstring(L, ctx->name);
    lua_call(L, 1, 0);
    snprintf(chunk, sizeof(chunk), "=%s.lua", ctx->name);
    lua_State *co = lua_newthread(L);
    if (luaL_loadbufferx(co, ctx->source, ctx->len, chunk, "t") != LUA_OK) {
        const char *m = lua_tostring(co, -1);
        ctx->err = error_json(NULL, message_line(m), m ? m : "syntax error", "error");
        return 0;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, sb->env_ref);
    lua_setupvalue(co, -2, 1);
    int nres;
    ctx->err = sandbox_resume(sb, co, 0, &nres, ctx->name);
    return 0;
}

static int sandbox_err(json_t *e, json_t **err)
{
    json_object_del(e, "kind");
    json_object_del(e, "script");
    if (err)
        *err = e;
    else
        json_decref(e);
    return SB_EINVAL;
}

int sb_sandbox_load(sb_sandbox_t *sb, const char *name, const char *source, size_t len,
                    json_t **err)
{
    load_ctx_t ctx = {name, source, len, NULL};
    lua_pushcfunction(sb->L, sandbox_load_protected);
    lua_pushlightuserdata(sb->L, &ctx);
    if (lua_pcall(sb->L, 1, 0, 0) != LUA_OK) {
        const char *m = lua_tostring(sb->L, -1);
        json_t *e = error_json(NULL, 0, m ? m : "out of memory", "error");
        lua_pop(sb->L, 1);
        return sandbox_err(e, err);
    }
    lua_gc(sb->L, LUA_GCCOLLECT);
    return ctx.err ? sandbox_err(ctx.err, err) : 0;
}

int sb_sandbox_finish(sb_sandbox_t *sb, json_t **err)
{
    push_prelude(sb, sb->L, "finish");
    if (lua_pcall(sb->L, 0, 2, 0) != LUA_OK) {
        json_t *e = error_json(NULL, 0, lua_tostring(sb->L, -1), "error");
        lua_pop(sb->L, 1);
        return sandbox_err(e, err);
    }
    if (lua_isnil(sb->L, -2)) {
        lua_pop(sb->L, 2);
        return 0;
    }
    json_t *e = error_json(NULL, (int)lua_tointeger(sb->L, -1), lua_tostring(sb->L, -2), "error");
    lua_pop(sb->L, 2);
    return sandbox_err(e, err);
}

/* ======================== running events ======================== */

typedef struct {
    json_t *ev;
    json_t *result;
} run_ctx_t;

/* Runs R[fn](args...) in a new coroutine; leaves nres results on L. */
static json_t *run_in_coroutine(sb_sandbox_t *sb, lua_State *L, int nargs, int *nres,
                                const char *script)
{
    /* The function and its arguments are on top of L. */
    lua_State *co = lua_newthread(L);
    lua_insert(L, -(nargs + 2));
    lua_xmove(L, co, nargs + 1);
    json_t *e = sandbox_resume(sb, co, nargs, nres, script);
    if (e == NULL)
        lua_xmove(co, L, *nres);
    else
        *nres = 0;
    lua_remove(L, -(*nres + 1)); /* the thread */
    return e;
}

static void run_sla(sb_sandbox_t *sb, lua_State *L, int ev, int view, json_t *result, int *stale)
{
    int nres;
    push_prelude(sb, L, "sla_step");
    lua_pushvalue(L, ev);
    lua_pushvalue(L, view);
    json_t *e = run_in_coroutine(sb, L, 2, &nres, "sla");
    if (e) {
        json_array_append_new(json_object_get(result, "errors"), e);
        push_prelude(sb, L, "set_sla");
        lua_pushvalue(L, ev);
        lua_call(L, 1, 0);
        return;
    }
    /* doc (table, false = remove, nil = unchanged), stale */
    *stale = nres >= 2 && lua_toboolean(L, -nres + 1);
    lua_pop(L, nres - 1);
    if (lua_istable(L, -1)) {
        json_t *doc = to_json(L, -1, 0);
        if (doc)
            json_object_set_new(result, "sla", doc);
    } else if (lua_isboolean(L, -1)) {
        json_object_set_new(result, "sla", json_null());
    }
    push_prelude(sb, L, "set_sla");
    lua_pushvalue(L, ev);
    lua_pushvalue(L, -3);
    lua_call(L, 2, 0);
    lua_pop(L, 1);
}

static void run_handlers(sb_sandbox_t *sb, lua_State *L, int view, int list, json_t *result)
{
    json_t *actions = json_object_get(result, "actions");
    lua_Integer n = luaL_len(L, list);

    for (lua_Integer i = 1; i <= n; i++) {
        char script[96];
        int nres;
        lua_geti(L, list, i);
        lua_getfield(L, -1, "script");
        snprintf(script, sizeof(script), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
        int h = lua_gettop(L);
        push_prelude(sb, L, "run_handler");
        lua_pushvalue(L, h);
        lua_pushvalue(L, view);
        json_t *e = run_in_coroutine(sb, L, 2, &nres, script);
        if (e) {
            json_object_set_new(e, "script", json_string(script));
            json_array_append_new(json_object_get(result, "errors"), e);
        } else if (nres >= 1) {
            json_t *a = to_json(L, -nres, 0);
            json_array_extend(actions, a);
            json_decref(a);
            lua_pop(L, nres);
        }
        lua_pop(L, 1);
        lua_gc(L, LUA_GCSTEP, 0);
    }
}

static int sandbox_run_protected(lua_State *L)
{
    run_ctx_t *ctx = lua_touserdata(L, 1);
    sb_sandbox_t *sb = sandbox_of(L);
    int stale = 0;

    push_json(L, ctx->ev, 0);
    int ev = lua_gettop(L);
    push_prelude(sb, L, "prepare");
    lua_pushvalue(L, ev);
    lua_call(L, 1, 2);
    int view = ev + 1, list = ev + 2;
    run_sla(sb, L, ev, view, ctx->result, &stale);
    json_object_set_new(ctx->result, "stale", json_boolean(stale));
    if (!stale)
        run_handlers(sb, L, view, list, ctx->result);
    lua_settop(L, 0);
    return 0;
}

json_t *sb_sandbox_run(sb_sandbox_t *sb, json_t *ev)
{
    run_ctx_t ctx = {ev, json_pack("{s:[], s:[]}", "actions", "errors")};
    lua_pushcfunction(sb->L, sandbox_run_protected);
    lua_pushlightuserdata(sb->L, &ctx);
    if (lua_pcall(sb->L, 1, 0, 0) != LUA_OK) {
        const char *m = lua_tostring(sb->L, -1);
        json_array_append_new(json_object_get(ctx.result, "errors"),
                              error_json(NULL, 0, m ? m : "memory limit exceeded", "memory"));
        lua_settop(sb->L, 0);
        lua_gc(sb->L, LUA_GCCOLLECT);
    }
    return ctx.result;
}

/* ======================== tools ======================== */

static int sandbox_call_json(lua_State *L)
{
    json_t **out = lua_touserdata(L, 1);
    lua_call(L, lua_gettop(L) - 2, 1);
    *out = to_json(L, -1, 0);
    return 0;
}

/* Calls R[fn](arg) and converts the result. */
static json_t *sandbox_tool(sb_sandbox_t *sb, const char *fn, const char *arg)
{
    json_t *out = NULL;
    lua_pushcfunction(sb->L, sandbox_call_json);
    lua_pushlightuserdata(sb->L, &out);
    push_prelude(sb, sb->L, fn);
    if (arg)
        lua_pushstring(sb->L, arg);
    if (lua_pcall(sb->L, arg ? 3 : 2, 0, 0) != LUA_OK)
        lua_pop(sb->L, 1);
    return out ? out : json_array();
}

json_t *sb_sandbox_lint(sb_sandbox_t *sb, const char *source)
{
    return sandbox_tool(sb, "lint", source);
}

json_t *sb_sandbox_summary(sb_sandbox_t *sb)
{
    return sandbox_tool(sb, "summary", NULL);
}
