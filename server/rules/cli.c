/*
 * cli.c - tools for rule authors: "rules check" (compile and load in the
 * sandbox, report errors and unknown actions with their lines), "rules
 * test" (run events from JSON fixtures and print what the handlers did)
 * and "rules replay" (run a candidate over a tenant's past events, read
 * only, beside the active scripts, and compare).
 *
 * Replay is a simulation per ticket: its recorded events in order, with
 * the timers each side's scripts would have set (SLA warnings and
 * breaches, named timers) firing in between at their due times.  Both
 * sides start from the SLA state the ticket had when the window opened.
 */
#include "common.h"
#include "log.h"
#include "rules/rules.h"
#include "rules/sandbox.h"

#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char **names, **sources, **paths;
    int n;
} scripts_t;

static void scripts_free(scripts_t *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->sources[i]);
        free(s->paths[i]);
    }
    free(s->names);
    free(s->sources);
    free(s->paths);
    memset(s, 0, sizeof(*s));
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    sb_buf_t b;
    char chunk[8192];
    size_t n;

    if (f == NULL) {
        sb_log(SB_LOG_ERR, NULL, "could not open file \"%s\": %m", path);
        return NULL;
    }
    sb_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sb_buf_append(&b, chunk, n);
    fclose(f);
    sb_buf_append(&b, "", 1);
    return sb_buf_steal(&b, len);
}

/* "scripts/sla.lua" is the script "sla". */
static char *script_name(const char *path)
{
    char *copy = sb_xstrdup(path);
    char *base = sb_xstrdup(basename(copy));
    free(copy);
    size_t len = strlen(base);
    if (len > 4 && strcmp(base + len - 4, ".lua") == 0)
        base[len - 4] = '\0';
    return base;
}

/* Adds (or replaces, by name) a script. */
static void scripts_put(scripts_t *s, char *name, char *source, const char *path)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) {
            free(s->names[i]);
            free(s->sources[i]);
            free(s->paths[i]);
            s->names[i] = name;
            s->sources[i] = source;
            s->paths[i] = sb_xstrdup(path);
            return;
        }
    s->names = realloc(s->names, sizeof(char *) * (size_t)(s->n + 1));
    s->sources = realloc(s->sources, sizeof(char *) * (size_t)(s->n + 1));
    s->paths = realloc(s->paths, sizeof(char *) * (size_t)(s->n + 1));
    if (!s->names || !s->sources || !s->paths)
        abort();
    s->names[s->n] = name;
    s->sources[s->n] = source;
    s->paths[s->n] = sb_xstrdup(path);
    s->n++;
}

static int scripts_read(scripts_t *s, const char *path)
{
    size_t len;
    char *src = read_file(path, &len);
    if (src == NULL)
        return SB_EINVAL;
    scripts_put(s, script_name(path), src, path);
    return 0;
}

static const char *script_path(const scripts_t *s, const char *name)
{
    for (int i = 0; name && i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return s->paths[i];
    return name ? name : "rules";
}

static void print_load_error(const scripts_t *s, const char *name, json_t *err)
{
    json_int_t line = json_integer_value(json_object_get(err, "line"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    /* Lua's messages already lead with "name.lua:LINE:"; say the path instead. */
    const char *rest = msg ? strstr(msg, ": ") : NULL;
    if (line > 0 && rest && strncmp(msg, name ? name : "", name ? strlen(name) : 0) == 0)
        msg = rest + 2;
    if (line > 0)
        fprintf(stderr, "%s:%lld: %s\n", script_path(s, name), (long long)line, msg ? msg : "?");
    else
        fprintf(stderr, "%s: %s\n", script_path(s, name), msg ? msg : "?");
}

/* Loads every script into a new sandbox; reports and returns SB_EINVAL on the first failure. */
static int scripts_sandbox(const sb_config_t *cfg, scripts_t *s, sb_sandbox_t **out)
{
    sb_sandbox_limits_t lim = {cfg->rules_memory_limit, (uint64_t)cfg->rules_instruction_limit};
    sb_sandbox_t *sb;
    json_t *err = NULL;

    if (sb_sandbox_new(&lim, &sb) != 0) {
        sb_log(SB_LOG_ERR, NULL, "rules_memory_limit is too small for the rules");
        return SB_EINVAL;
    }
    for (int i = 0; i < s->n; i++) {
        if (sb_sandbox_load(sb, s->names[i], s->sources[i], strlen(s->sources[i]), &err) != 0) {
            print_load_error(s, s->names[i], err);
            json_decref(err);
            sb_sandbox_free(sb);
            return SB_EINVAL;
        }
    }
    if (sb_sandbox_finish(sb, &err) != 0) {
        print_load_error(s, NULL, err);
        json_decref(err);
        sb_sandbox_free(sb);
        return SB_EINVAL;
    }
    *out = sb;
    return 0;
}

/* ======================== check ======================== */

static void print_names(const char *label, json_t *list)
{
    size_t i;
    json_t *v;
    printf("  %-14s", label);
    if (json_array_size(list) == 0)
        printf(" -");
    json_array_foreach(list, i, v) printf("%s%s", i ? ", " : " ", json_string_value(v));
    printf("\n");
}

/* Reports act.<name> uses that name no action, before anything runs. */
static int scripts_lint(const sb_config_t *cfg, const scripts_t *s)
{
    sb_sandbox_limits_t lim = {cfg->rules_memory_limit, (uint64_t)cfg->rules_instruction_limit};
    sb_sandbox_t *sb;
    int bad = 0;

    if (sb_sandbox_new(&lim, &sb) != 0)
        return 0; /* scripts_sandbox reports it */
    for (int i = 0; i < s->n; i++) {
        json_t *found = sb_sandbox_lint(sb, s->sources[i]);
        size_t k;
        json_t *f;
        json_array_foreach(found, k, f)
        {
            fprintf(stderr, "%s:%lld: unknown action act.%s\n", s->paths[i],
                    (long long)json_integer_value(json_object_get(f, "line")),
                    json_string_value(json_object_get(f, "name")));
            bad = 1;
        }
        json_decref(found);
    }
    sb_sandbox_free(sb);
    return bad;
}

static void print_summary(sb_sandbox_t *sb, int n)
{
    json_t *sum = sb_sandbox_summary(sb);

    printf("%d script%s ok (%zu KiB in the sandbox)\n", n, n == 1 ? "" : "s",
           sb_sandbox_memory(sb) / 1024);
    print_names("calendars:", json_object_get(sum, "calendars"));
    print_names("SLA policies:", json_object_get(sum, "slas"));
    print_names("templates:", json_object_get(sum, "templates"));
    print_names("handlers:", json_object_get(sum, "handlers"));
    json_decref(sum);
}

static int rules_check(const sb_config_t *cfg, int argc, char **argv)
{
    scripts_t s = {0};
    sb_sandbox_t *sb = NULL;

    if (argc < 1) {
        fprintf(stderr, "usage: switchboard rules check FILE...\n");
        return 2;
    }
    for (int i = 0; i < argc; i++)
        if (scripts_read(&s, argv[i]) != 0) {
            scripts_free(&s);
            return 2;
        }
    int bad = scripts_lint(cfg, &s);
    if (scripts_sandbox(cfg, &s, &sb) != 0)
        bad = 1;
    else if (!bad)
        print_summary(sb, s.n);
    sb_sandbox_free(sb);
    scripts_free(&s);
    return bad;
}

/* ======================== test ======================== */

/* Fills what a fixture leaves out, so short fixtures work. */
static json_t *fixture_event(json_t *in, json_int_t now, json_t *sla)
{
    json_t *ev = json_deep_copy(in);
    json_t *ticket = json_pack(
        "{s:I, s:I, s:s, s:s, s:s, s:s, s:[], s:{}, s:i, s:I, s:I}", "id", (json_int_t)1, "number",
        (json_int_t)1, "subject", "Test ticket", "status", "open", "priority", "normal", "channel",
        "api", "tags", "custom", "escalation_level", 0, "created_at", now, "updated_at", now);
    json_t *customer = json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)1, "name",
                                 "Test Customer", "kind", "external", "language", "en");

    if (!json_is_object(ev)) {
        json_decref(ev);
        ev = json_object();
    }
    json_object_update(ticket, json_object_get(ev, "ticket"));
    json_object_update(customer, json_object_get(ev, "customer"));
    json_object_set_new(ev, "ticket", ticket);
    json_object_set_new(ev, "customer", customer);
    if (!json_object_get(ev, "now"))
        json_object_set_new(ev, "now", json_integer(now));
    if (!json_object_get(ev, "tenant"))
        json_object_set_new(ev, "tenant", json_string("test"));
    if (!json_object_get(ev, "data"))
        json_object_set_new(ev, "data", json_object());
    if (!json_object_get(ev, "sla") && sla)
        json_object_set(ev, "sla", sla);
    json_object_del(ev, "expect");
    json_object_del(ev, "expect_sla");
    return ev;
}

/* True when every member of want is in got with the same value. */
static int json_subset(json_t *want, json_t *got)
{
    const char *k;
    json_t *v;
    if (json_is_number(want) && json_is_number(got))
        return json_number_value(want) == json_number_value(got);
    if (!json_is_object(want))
        return json_equal(want, got);
    json_object_foreach(want, k, v) if (!json_subset(v, json_object_get(got, k))) return 0;
    return 1;
}

/* Checks "expect": the actions, in order, each matching its expected subset. */
static int fixture_expect(json_t *expect, json_t *actions, char *why, size_t whylen)
{
    if (expect == NULL)
        return 1;
    if (json_array_size(expect) != json_array_size(actions)) {
        snprintf(why, whylen, "expected %zu action(s), got %zu", json_array_size(expect),
                 json_array_size(actions));
        return 0;
    }
    for (size_t i = 0; i < json_array_size(expect); i++) {
        json_t *w = json_array_get(expect, i);
        if (json_is_string(w))
            w = json_pack("{s:O}", "type", w);
        else
            json_incref(w);
        int ok = json_subset(w, json_array_get(actions, i));
        json_decref(w);
        if (!ok) {
            snprintf(why, whylen, "action %zu does not match its expectation", i + 1);
            return 0;
        }
    }
    return 1;
}

static int sla_expect(json_t *want, json_t *got)
{
    const char *k;
    json_t *v;
    if (!json_is_object(want))
        return 0;
    json_object_foreach(want, k, v)
    {
        json_t *g = json_object_get(got, k);
        if (json_is_null(v) ? g != NULL && !json_is_null(g) : !json_subset(v, g))
            return 0;
    }
    return 1;
}

/* Runs one fixture file: an event, a list of them, or {"events": [...]}. */
static int fixture_run(sb_sandbox_t *sb, const char *path, int *failed)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    json_t *sla = NULL;
    json_int_t now = (json_int_t)time(NULL);

    if (doc == NULL) {
        fprintf(stderr, "%s:%d: invalid JSON: %s\n", path, jerr.line, jerr.text);
        return SB_EINVAL;
    }
    json_t *list = json_is_array(doc) ? json_incref(doc)
                   : json_is_array(json_object_get(doc, "events"))
                       ? json_incref(json_object_get(doc, "events"))
                       : json_pack("[O]", doc);
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *in = json_array_get(list, i);
        json_t *ev = fixture_event(in, now, sla);
        json_t *out = sb_sandbox_run(sb, ev);
        char why[200] = "";
        json_t *doc_sla = json_object_get(out, "sla");
        if (doc_sla && json_is_object(doc_sla)) {
            json_decref(sla);
            sla = json_pack("{s:O, s:O}", "policy", json_object_get(doc_sla, "policy"), "state",
                            json_object_get(doc_sla, "state"));
        }
        int ok = fixture_expect(json_object_get(in, "expect"), json_object_get(out, "actions"), why,
                                sizeof(why));
        json_t *line =
            json_pack("{s:s, s:I, s:O, s:O, s:O}", "fixture", path, "event", (json_int_t)i + 1,
                      "type", json_object_get(ev, "type"), "actions",
                      json_object_get(out, "actions"), "errors", json_object_get(out, "errors"));
        if (doc_sla && json_is_object(doc_sla)) {
            json_t *brief = json_deep_copy(doc_sla);
            json_object_del(brief, "state");
            json_object_del(brief, "timers");
            json_object_set_new(line, "sla", brief);
        }
        /* "expect_sla": members the SLA document must have (null: no such member). */
        json_t *want_sla = json_object_get(in, "expect_sla");
        if (ok && want_sla && !sla_expect(want_sla, json_object_get(line, "sla"))) {
            snprintf(why, sizeof(why), "the SLA does not match expect_sla");
            ok = 0;
        }
        if (!ok) {
            json_object_set_new(line, "fail", json_string(why));
            (*failed)++;
        }
        char *text = json_dumps(line, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", text);
        free(text);
        json_decref(line);
        json_decref(out);
        json_decref(ev);
    }
    json_decref(sla);
    json_decref(list);
    json_decref(doc);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A fixture argument: a .json file, or a directory of them (sorted). */
static int fixtures_run(sb_sandbox_t *sb, const char *path, int *failed)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return fixture_run(sb, path, failed);
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            names = realloc(names, sizeof(char *) * (n + 1));
            if (names == NULL)
                abort();
            names[n++] = sb_xstrdup(e->d_name);
        }
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(char *), name_cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", path, names[i]);
        if (rc == 0)
            rc = fixture_run(sb, full, failed);
        free(names[i]);
    }
    free(names);
    return rc;
}

static int rules_test(const sb_config_t *cfg, int argc, char **argv)
{
    scripts_t s = {0};
    sb_sandbox_t *sb = NULL;
    int failed = 0, nfix = 0, rc = 0;

    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);
        if (len > 4 && strcmp(argv[i] + len - 4, ".lua") == 0) {
            if (scripts_read(&s, argv[i]) != 0) {
                scripts_free(&s);
                return 2;
            }
        } else
            nfix++;
    }
    if (s.n == 0 || nfix == 0) {
        fprintf(stderr, "usage: switchboard rules test FILE.lua... FIXTURES...\n");
        scripts_free(&s);
        return 2;
    }
    if (scripts_sandbox(cfg, &s, &sb) != 0) {
        scripts_free(&s);
        return 1;
    }
    for (int i = 0; i < argc && rc == 0; i++) {
        size_t len = strlen(argv[i]);
        if (!(len > 4 && strcmp(argv[i] + len - 4, ".lua") == 0))
            rc = fixtures_run(sb, argv[i], &failed);
    }
    sb_sandbox_free(sb);
    scripts_free(&s);
    if (rc != 0)
        return 2;
    if (failed)
        fprintf(stderr, "%d expectation%s failed\n", failed, failed == 1 ? "" : "s");
    return failed ? 1 : 0;
}

/* ======================== replay ======================== */

typedef struct {
    sb_sandbox_t *sb;
    json_t *sla;    /* per ticket id: {"policy", "state"} */
    json_t *timers; /* per ticket id: {name: {"due", "data"}} */
    json_t *level;  /* per ticket id: escalation level reached */
    json_t *last;   /* per ticket id: the latest result's action types */
    long breaches, warnings, escalations, actions, errors;
    json_t *money; /* currency -> amount */
    long gifts;
} side_t;

static void side_account(side_t *sd, const char *tid, json_t *ev, json_t *out)
{
    size_t i;
    json_t *a;
    json_t *doc = json_object_get(out, "sla");
    json_t *types = json_array();

    if (doc && json_is_object(doc)) {
        json_object_set_new(sd->sla, tid,
                            json_pack("{s:O, s:O}", "policy", json_object_get(doc, "policy"),
                                      "state", json_object_get(doc, "state")));
        json_t *tm = json_object();
        json_t *old = json_object_get(sd->timers, tid);
        const char *k;
        json_t *v;
        /* Named timers stay; SLA timers are what the new state says. */
        json_object_foreach(old, k, v) if (strncmp(k, "sla.", 4) != 0) json_object_set(tm, k, v);
        json_array_foreach(json_object_get(doc, "timers"), i, a)
            json_object_set(tm, json_string_value(json_object_get(a, "name")), a);
        json_object_set_new(sd->timers, tid, tm);
    } else if (doc && json_is_null(doc)) {
        json_object_del(sd->sla, tid);
    }
    if (!json_is_true(json_object_get(out, "stale"))) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (type && strcmp(type, "sla.breached") == 0)
            sd->breaches++;
        if (type && strcmp(type, "sla.warning") == 0)
            sd->warnings++;
    }
    sd->errors += (long)json_array_size(json_object_get(out, "errors"));
    json_array_foreach(json_object_get(out, "actions"), i, a)
    {
        const char *t = json_string_value(json_object_get(a, "type"));
        sd->actions++;
        json_array_append_new(types, json_string(t));
        if (strcmp(t, "escalate") == 0) {
            json_int_t lv = json_integer_value(json_object_get(a, "level"));
            if (lv > json_integer_value(json_object_get(sd->level, tid))) {
                sd->escalations++;
                json_object_set_new(sd->level, tid, json_integer(lv));
            }
        } else if (strcmp(t, "compensate") == 0) {
            const char *cur = json_string_value(json_object_get(a, "currency"));
            double amount = json_number_value(json_object_get(a, "amount"));
            if (cur)
                json_object_set_new(
                    sd->money, cur,
                    json_real(json_number_value(json_object_get(sd->money, cur)) + amount));
            else
                sd->gifts++;
        } else if (strcmp(t, "schedule") == 0) {
            json_t *tm = json_object_get(sd->timers, tid);
            if (!tm) {
                tm = json_object();
                json_object_set_new(sd->timers, tid, tm);
            }
            json_object_set(tm, json_string_value(json_object_get(a, "name")), a);
        } else if (strcmp(t, "cancel") == 0) {
            json_object_del(json_object_get(sd->timers, tid),
                            json_string_value(json_object_get(a, "name")));
        }
    }
    json_object_set_new(sd->last, tid, types);
}

/* Runs ev (a snapshot, borrowed) on one side, with its own SLA state. */
static json_t *side_run(side_t *sd, const char *tid, json_t *ev)
{
    json_t *copy = json_deep_copy(ev);
    json_t *sla = json_object_get(sd->sla, tid);
    json_t *ticket = json_object_get(copy, "ticket");
    if (sla)
        json_object_set(copy, "sla", sla);
    else if (json_object_get(sd->level, tid))
        json_object_del(copy, "sla");
    if (ticket && json_object_get(sd->level, tid))
        json_object_set(ticket, "escalation_level", json_object_get(sd->level, tid));
    json_t *out = sb_sandbox_run(sd->sb, copy);
    side_account(sd, tid, copy, out);
    json_decref(copy);
    return out;
}

/* Fires one side's timers of a ticket that are due by `until`, in due order. */
static void side_fire(side_t *sd, const char *tid, json_t *base, json_int_t until)
{
    for (int guard = 0; guard < 1000; guard++) {
        json_t *tm = json_object_get(sd->timers, tid);
        const char *k, *first = NULL;
        json_t *v;
        json_int_t due = 0;
        json_object_foreach(tm, k, v)
        {
            json_int_t d = json_integer_value(json_object_get(v, "due"));
            if (d <= until && (first == NULL || d < due)) {
                first = k;
                due = d;
            }
        }
        if (first == NULL)
            return;
        char name[80];
        snprintf(name, sizeof(name), "%s", first);
        json_t *data = json_deep_copy(json_object_get(json_object_get(tm, name), "data"));
        if (!json_is_object(data)) {
            json_decref(data);
            data = json_object();
        }
        json_object_del(tm, name);
        size_t len = strlen(name);
        char type[100];
        if (strncmp(name, "sla.", 4) == 0)
            snprintf(type, sizeof(type), "%s",
                     len > 8 && strcmp(name + len - 8, ".warning") == 0 ? "sla.warning"
                                                                        : "sla.breached");
        else
            snprintf(type, sizeof(type), "timer.%s", name);
        json_object_set_new(data, "timer", json_string(name));
        json_object_set_new(data, "due_at", json_integer(due));
        json_t *ev = json_deep_copy(base);
        json_object_set_new(ev, "type", json_string(type));
        json_object_set_new(ev, "now", json_integer(due));
        json_object_set_new(ev, "at", json_integer(due));
        json_object_set_new(ev, "data", data);
        json_object_del(ev, "message");
        json_object_del(ev, "changes");
        json_decref(side_run(sd, tid, ev));
        json_decref(ev);
    }
}

static int replay_query(PGconn *pg, const char *sql, int n, const char *const *p, PGresult **out)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        sb_log_ex(SB_LOG_ERR, NULL, PQresultErrorMessage(r), NULL, "replay query failed");
        PQclear(r);
        return SB_EDB;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

static void print_money(json_t *money, long gifts)
{
    const char *k;
    json_t *v;
    char buf[256] = "";
    size_t off = 0;
    json_object_foreach(money, k, v) off +=
        (size_t)snprintf(buf + off, off < sizeof(buf) ? sizeof(buf) - off : 0, "%s%.2f %s",
                         off ? ", " : "", json_number_value(v), k);
    if (gifts)
        snprintf(buf + off, off < sizeof(buf) ? sizeof(buf) - off : 0, "%s%ld other",
                 off ? ", " : "", gifts);
    printf("%-24s", buf[0] ? buf : "none");
}

typedef struct {
    const char *tenant, *since, *until;
    scripts_t candidate;
} replay_args_t;

static int replay_parse(int argc, char **argv, replay_args_t *a)
{
    for (int i = 0; i < argc; i++) {
        const char **slot = NULL;
        if (strcmp(argv[i], "--tenant") == 0)
            slot = &a->tenant;
        else if (strcmp(argv[i], "--since") == 0)
            slot = &a->since;
        else if (strcmp(argv[i], "--until") == 0)
            slot = &a->until;
        if (slot) {
            if (++i == argc) {
                fprintf(stderr, "switchboard: option \"%s\" needs a value\n", argv[i - 1]);
                return SB_EINVAL;
            }
            *slot = argv[i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "switchboard: unrecognized argument \"%s\"\n", argv[i]);
            return SB_EINVAL;
        } else if (scripts_read(&a->candidate, argv[i]) != 0)
            return SB_EINVAL;
    }
    if (!a->tenant || !a->since || a->candidate.n == 0) {
        fprintf(stderr, "usage: switchboard rules replay --tenant SLUG FILE... --since DATE "
                        "[--until DATE]\n");
        return SB_EINVAL;
    }
    return 0;
}

static int replay_run(PGconn *pg, const sb_config_t *cfg, replay_args_t *a)
{
    static const char sql_tenant[] =
        "SELECT id, set_config('switchboard.tenant_id', id::text, true) FROM tenants"
        " WHERE slug = $1";
    static const char sql_scripts[] =
        "SELECT name, source FROM sb_rule_scripts_active(sb_tenant()) ORDER BY name";
    static const char sql_events[] =
        "SELECT snapshot::text, coalesce(ticket_id, 0),"
        " extract(epoch FROM coalesce($2::timestamptz, now()))::bigint"
        " FROM rule_events WHERE tenant_id = sb_tenant() AND processed_at IS NOT NULL"
        " AND snapshot IS NOT NULL AND created_at >= $1::timestamptz"
        " AND ($2::timestamptz IS NULL OR created_at < $2::timestamptz)"
        " AND type NOT LIKE 'sla.%' AND type NOT LIKE 'timer.%' ORDER BY ticket_id, id";
    PGresult *r = NULL;
    scripts_t active = {0}, cand = {0};
    side_t sides[2] = {{0}};
    int rc = replay_query(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL);
    const char *pt[1] = {a->tenant};

    if (rc == 0)
        rc = replay_query(pg, sql_tenant, 1, pt, &r);
    if (rc == 0 && PQntuples(r) == 0) {
        sb_log(SB_LOG_ERR, NULL, "tenant \"%s\" does not exist", a->tenant);
        rc = SB_ENOENT;
    }
    PQclear(r);
    r = NULL;
    if (rc == 0)
        rc = replay_query(pg, sql_scripts, 0, NULL, &r);
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        scripts_put(&active, sb_xstrdup(PQgetvalue(r, i, 0)), sb_xstrdup(PQgetvalue(r, i, 1)),
                    PQgetvalue(r, i, 0));
        scripts_put(&cand, sb_xstrdup(PQgetvalue(r, i, 0)), sb_xstrdup(PQgetvalue(r, i, 1)),
                    PQgetvalue(r, i, 0));
    }
    PQclear(r);
    r = NULL;
    for (int i = 0; rc == 0 && i < a->candidate.n; i++)
        scripts_put(&cand, sb_xstrdup(a->candidate.names[i]), sb_xstrdup(a->candidate.sources[i]),
                    a->candidate.paths[i]);
    if (rc == 0 && (scripts_sandbox(cfg, &active, &sides[0].sb) != 0 ||
                    scripts_sandbox(cfg, &cand, &sides[1].sb) != 0))
        rc = SB_EINVAL;
    const char *pe[2] = {a->since, a->until};
    if (rc == 0)
        rc = replay_query(pg, sql_events, 2, pe, &r);
    if (rc != 0) {
        PQclear(r);
        sb_sandbox_free(sides[0].sb);
        sb_sandbox_free(sides[1].sb);
        scripts_free(&active);
        scripts_free(&cand);
        return rc == SB_EINVAL ? 1 : 2;
    }

    for (int k = 0; k < 2; k++) {
        sides[k].sla = json_object();
        sides[k].timers = json_object();
        sides[k].level = json_object();
        sides[k].last = json_object();
        sides[k].money = json_object();
    }
    int nev = PQntuples(r), differ = 0, tickets = 0;
    json_int_t until = nev ? atoll(PQgetvalue(r, 0, 2)) : (json_int_t)time(NULL);
    json_t *base = NULL;
    char prev[24] = "";
    for (int i = 0; i <= nev; i++) {
        const char *tid = i < nev ? PQgetvalue(r, i, 1) : "";
        if (strcmp(tid, prev) != 0 && prev[0]) {
            /* The ticket's last event: what was still due fires by the window's end. */
            for (int k = 0; k < 2; k++)
                side_fire(&sides[k], prev, base, until);
        }
        if (i == nev)
            break;
        json_t *ev = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (ev == NULL)
            continue;
        if (strcmp(tid, prev) != 0) {
            tickets++;
            snprintf(prev, sizeof(prev), "%s", tid);
            /* Both sides start from the SLA state the ticket had then. */
            for (int k = 0; k < 2; k++)
                if (json_object_get(ev, "sla"))
                    json_object_set(sides[k].sla, tid, json_object_get(ev, "sla"));
        }
        json_decref(base);
        base = json_incref(ev);
        json_int_t at = json_integer_value(json_object_get(ev, "now"));
        for (int k = 0; k < 2; k++)
            side_fire(&sides[k], tid, ev, at);
        json_t *o0 = side_run(&sides[0], tid, ev), *o1 = side_run(&sides[1], tid, ev);
        json_t *t0 = json_object_get(sides[0].last, tid), *t1 = json_object_get(sides[1].last, tid);
        if (!json_equal(t0, t1)) {
            if (differ < 20) {
                char *s0 = json_dumps(t0, JSON_COMPACT), *s1 = json_dumps(t1, JSON_COMPACT);
                printf("  ticket #%lld %s: active %s, candidate %s\n",
                       (long long)json_integer_value(
                           json_object_get(json_object_get(ev, "ticket"), "number")),
                       json_string_value(json_object_get(ev, "type")), s0, s1);
                free(s0);
                free(s1);
            }
            differ++;
        }
        json_decref(o0);
        json_decref(o1);
        json_decref(ev);
    }
    json_decref(base);
    PQclear(r);

    printf("replayed %d event%s of %d ticket%s of tenant %s since %s; %d differ%s\n", nev,
           nev == 1 ? "" : "s", tickets, tickets == 1 ? "" : "s", a->tenant, a->since, differ,
           differ > 20 ? " (first 20 shown above)" : "");
    printf("%-22s %-24s %-24s\n", "", "active", "candidate");
    printf("%-22s %-24ld %-24ld\n", "SLA warnings", sides[0].warnings, sides[1].warnings);
    printf("%-22s %-24ld %-24ld\n", "SLA breaches", sides[0].breaches, sides[1].breaches);
    printf("%-22s %-24ld %-24ld\n", "escalations", sides[0].escalations, sides[1].escalations);
    printf("%-22s ", "compensation");
    print_money(sides[0].money, sides[0].gifts);
    printf(" ");
    print_money(sides[1].money, sides[1].gifts);
    printf("\n%-22s %-24ld %-24ld\n", "actions", sides[0].actions, sides[1].actions);
    printf("%-22s %-24ld %-24ld\n", "handler errors", sides[0].errors, sides[1].errors);
    for (int k = 0; k < 2; k++) {
        json_decref(sides[k].sla);
        json_decref(sides[k].timers);
        json_decref(sides[k].level);
        json_decref(sides[k].last);
        json_decref(sides[k].money);
        sb_sandbox_free(sides[k].sb);
    }
    scripts_free(&active);
    scripts_free(&cand);
    replay_query(pg, "ROLLBACK", 0, NULL, NULL);
    return 0;
}

static int rules_replay(const sb_config_t *cfg, int argc, char **argv)
{
    replay_args_t a = {0};
    if (replay_parse(argc, argv, &a) != 0) {
        scripts_free(&a.candidate);
        return 2;
    }
    static const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {cfg->database_url, "switchboard-replay", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    int rc;
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
        msg[strcspn(msg, "\n")] = '\0';
        sb_log(SB_LOG_ERR, NULL, "could not connect to the database: %s", msg);
        rc = 2;
    } else
        rc = replay_run(pg, cfg, &a);
    PQfinish(pg);
    scripts_free(&a.candidate);
    return rc;
}

int sb_rules_cli(const sb_config_t *cfg, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "check") == 0)
        return rules_check(cfg, argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "test") == 0)
        return rules_test(cfg, argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "replay") == 0)
        return rules_replay(cfg, argc - 1, argv + 1);
    fprintf(stderr, "usage: switchboard rules check|test|replay ...\n"
                    "Try \"switchboard --help\".\n");
    return 2;
}
