/*
 * dispatch.c - benchmark, not a test: what running one rule event through
 * a tenant's sandbox costs (sb_sandbox_run) with the built-in default
 * scripts, against the same events in a sandbox with no scripts (the fixed
 * cost: entering the sandbox, JSON in and out, the SLA step with no
 * policies).  One core, no database, no I/O.  Run by tests/bench/rules,
 * which parses the "bench-" lines; the rest is for people.
 *
 *   bench_rules_dispatch [EVENTS]      (200000)
 */
#include "common.h"
#include "rules/rules.h"
#include "rules/sandbox.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Tuesday 2026-03-10 11:00 in Europe/Riga: inside the default calendar's office hours. */
#define BENCH_NOW 1773133200
#define BENCH_BLOCK 1000 /* events per block; the two sandboxes alternate blocks */

/* ======================== the events ======================== */

typedef struct {
    const char *name;
    json_t *ev;
} bench_kind_t;

static json_t *bench_customer(int gold)
{
    return json_pack("{s:I, s:s, s:s, s:o, s:s, s:o, s:[{s:s, s:s}]}", "id",
                     (json_int_t)(gold ? 7 : 8), "name", gold ? "Ada Gold" : "Bob Plain", "kind",
                     "external", "tier", gold ? json_string("gold") : json_null(), "language", "en",
                     "organization", gold ? json_string("Acme") : json_null(), "identities", "kind",
                     "email", "value", gold ? "ada@acme.example" : "bob@example.com");
}

/* A ticket as sb_rule_ticket_json builds it. */
static json_t *bench_ticket(int number, const char *status, int assigned, json_int_t created)
{
    json_t *assignee = assigned ? json_pack("{s:I, s:s, s:s}", "id", (json_int_t)3, "name",
                                            "Agent Smith", "email", "agent@bench.example")
                                : json_null();
    return json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:[s], s:{}, s:i, s:o, s:n, s:n, s:I, s:I, "
                     "s:n, s:n}",
                     "id", (json_int_t)(100 + number), "number", (json_int_t)number, "subject",
                     "Printer broken after the update", "status", status, "priority", "normal",
                     "channel", "email", "tags", "billing", "custom", "escalation_level", 0,
                     "assignee", assignee, "team", "problem", "created_at", created, "updated_at",
                     (json_int_t)(BENCH_NOW - 5), "first_response_at", "solved_at");
}

static json_t *bench_message(const char *direction, const char *author, const char *text)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "id", (json_int_t)5000, "direction",
                     direction, "text", text, "channel", "email", "author", author, "at",
                     (json_int_t)(BENCH_NOW - 2));
}

/* The SLA state the prelude keeps (R.sla_step), as ticket_sla.state holds it. */
static json_t *bench_sla(const char *policy, json_int_t started, json_t *first_met,
                         json_t *paused_since)
{
    json_t *state = json_pack("{s:I, s:i, s:{}, s:{}}", "started", started, "paused_biz", 0,
                              "breached", "warned");
    if (first_met)
        json_object_set_new(state, "first_response_met", first_met);
    if (paused_since)
        json_object_set_new(state, "paused_since", paused_since);
    return json_pack("{s:s, s:o}", "policy", policy, "state", state);
}

/* A snapshot as sb_rule_event_snapshot builds it. */
static json_t *bench_event(const char *type, json_t *ticket, json_t *customer, json_t *message,
                           json_t *changes, json_t *data, json_t *sla)
{
    static json_int_t id = 1;
    return json_pack("{s:I, s:I, s:s, s:s, s:i, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:n, s:o}", "id",
                     id++, "tenant_id", (json_int_t)1, "tenant", "bench", "type", type, "depth", 0,
                     "changes", changes ? changes : json_null(), "data",
                     data ? data : json_object(), "at", (json_int_t)(BENCH_NOW - 1), "now",
                     (json_int_t)BENCH_NOW, "ticket", ticket, "customer", customer, "message",
                     message ? message : json_null(), "agent", "sla", sla ? sla : json_null());
}

static int bench_kinds(bench_kind_t *k)
{
    json_int_t hour = 3600;
    int n = 0;

    k[n].name = "ticket.created (gold)";
    k[n++].ev = bench_event("ticket.created", bench_ticket(1, "new", 0, BENCH_NOW - 5),
                            bench_customer(1), NULL, NULL, NULL, NULL);
    k[n].name = "ticket.created (standard)";
    k[n++].ev = bench_event("ticket.created", bench_ticket(2, "new", 0, BENCH_NOW - 5),
                            bench_customer(0), NULL, NULL, NULL, NULL);
    k[n].name = "message.received";
    k[n++].ev = bench_event(
        "message.received", bench_ticket(3, "open", 1, BENCH_NOW - 3 * hour), bench_customer(0),
        bench_message("inbound", "customer", "Any news on this? It still does not print."), NULL,
        NULL,
        bench_sla("standard", BENCH_NOW - 3 * hour, json_integer(BENCH_NOW - 2 * hour), NULL));
    k[n].name = "message.sent (agent)";
    k[n++].ev = bench_event("message.sent", bench_ticket(4, "open", 1, BENCH_NOW - hour / 2),
                            bench_customer(1),
                            bench_message("outbound", "agent", "Thanks, we are looking into it."),
                            NULL, NULL, bench_sla("gold", BENCH_NOW - hour / 2, NULL, NULL));
    k[n].name = "ticket.updated (-> pending)";
    k[n++].ev = bench_event(
        "ticket.updated", bench_ticket(5, "pending", 1, BENCH_NOW - 2 * hour), bench_customer(0),
        NULL, json_pack("{s:[s,s]}", "status", "open", "pending"), NULL,
        bench_sla("standard", BENCH_NOW - 2 * hour, json_integer(BENCH_NOW - hour), NULL));
    k[n].name = "ticket.updated (-> open)";
    k[n++].ev = bench_event(
        "ticket.updated", bench_ticket(6, "open", 1, BENCH_NOW - 4 * hour), bench_customer(0), NULL,
        json_pack("{s:[s,s]}", "status", "pending", "open"), NULL,
        bench_sla("standard", BENCH_NOW - 4 * hour, json_integer(BENCH_NOW - 3 * hour),
                  json_integer(BENCH_NOW - 2 * hour)));
    /* A breach timer whose due no longer matches the state: the SLA step marks it stale. */
    k[n].name = "sla.breached (stale)";
    k[n++].ev =
        bench_event("sla.breached", bench_ticket(7, "open", 1, BENCH_NOW - 6 * hour),
                    bench_customer(1), NULL, NULL,
                    json_pack("{s:s, s:s, s:I}", "target", "first_response", "timer",
                              "sla.first_response", "due_at", (json_int_t)(BENCH_NOW - 72 * hour)),
                    bench_sla("gold", BENCH_NOW - 6 * hour, NULL, NULL));
    return n;
}

/* ======================== sandboxes ======================== */

static sb_sandbox_t *bench_sandbox(int with_defaults)
{
    sb_sandbox_t *sb;
    json_t *err = NULL;

    if (sb_sandbox_new(NULL, &sb) != 0) {
        fprintf(stderr, "bench_rules_dispatch: could not create a sandbox\n");
        exit(1);
    }
    for (const sb_rules_default_t *d = sb_rules_defaults; with_defaults && d->name; d++) {
        if (sb_sandbox_load(sb, d->name, d->source, strlen(d->source), &err) != 0) {
            char *m = json_dumps(err, JSON_COMPACT);
            fprintf(stderr, "bench_rules_dispatch: %s.lua does not load: %s\n", d->name, m);
            exit(1);
        }
    }
    if (sb_sandbox_finish(sb, &err) != 0) {
        char *m = json_dumps(err, JSON_COMPACT);
        fprintf(stderr, "bench_rules_dispatch: the rules do not finish: %s\n", m);
        exit(1);
    }
    return sb;
}

/* ======================== timing ======================== */

static uint64_t bench_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int bench_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double median, p99, mean, per_s;
} bench_stats_t;

/* Sorts ns in place. */
static bench_stats_t bench_stats(uint64_t *ns, size_t n)
{
    bench_stats_t s;
    double sum = 0;

    for (size_t i = 0; i < n; i++)
        sum += (double)ns[i];
    qsort(ns, n, sizeof(*ns), bench_cmp);
    s.median = ns[n / 2] / 1e3;
    s.p99 = ns[(size_t)((double)(n - 1) * 0.99)] / 1e3;
    s.mean = sum / (double)n / 1e3;
    s.per_s = sum > 0 ? (double)n / (sum / 1e9) : 0;
    return s;
}

static void bench_run_block(sb_sandbox_t *sb, bench_kind_t *kinds, int nkinds, size_t from,
                            size_t to, uint64_t *ns)
{
    for (size_t i = from; i < to; i++) {
        json_t *ev = kinds[i % (size_t)nkinds].ev;
        uint64_t t0 = bench_ns();
        json_t *out = sb_sandbox_run(sb, ev);
        uint64_t t1 = bench_ns();
        if (ns)
            ns[i] = t1 - t0;
        json_decref(out);
    }
}

/* Per kind: the median of the events of that kind (ns is in event order). */
static double bench_kind_median(const uint64_t *ns, size_t n, int kind, int nkinds)
{
    size_t m = 0;
    uint64_t *v = sb_xcalloc(n / (size_t)nkinds + 1, sizeof(*v));
    for (size_t i = (size_t)kind; i < n; i += (size_t)nkinds)
        v[m++] = ns[i];
    qsort(v, m, sizeof(*v), bench_cmp);
    double med = m ? v[m / 2] / 1e3 : 0;
    free(v);
    return med;
}

/* ======================== main ======================== */

int main(int argc, char **argv)
{
    bench_kind_t kinds[8];
    size_t n = 200000;

    if (argc > 2 || (argc == 2 && (atol(argv[1]) < 100))) {
        fprintf(stderr, "usage: bench_rules_dispatch [EVENTS >= 100]\n");
        return 2;
    }
    if (argc == 2)
        n = (size_t)atol(argv[1]);
    int nkinds = bench_kinds(kinds);
    sb_sandbox_t *rules = bench_sandbox(1), *empty = bench_sandbox(0);
    size_t loaded_rules = sb_sandbox_memory(rules), loaded_empty = sb_sandbox_memory(empty);

    /* What each kind does with the default scripts: an error means the events are wrong. */
    int bad = 0;
    printf("%-28s %-9s %-6s %s\n", "event", "sla", "stale", "actions");
    for (int k = 0; k < nkinds; k++) {
        json_t *out = sb_sandbox_run(rules, kinds[k].ev);
        json_t *sla = json_object_get(out, "sla");
        json_t *errors = json_object_get(out, "errors");
        printf("%-28s %-9s %-6s %zu\n", kinds[k].name,
               json_is_object(sla) ? json_string_value(json_object_get(sla, "policy"))
               : json_is_null(sla) ? "(removed)"
                                   : "-",
               json_is_true(json_object_get(out, "stale")) ? "yes" : "no",
               json_array_size(json_object_get(out, "actions")));
        if (json_array_size(errors) > 0) {
            char *m = json_dumps(errors, JSON_COMPACT);
            fprintf(stderr, "bench_rules_dispatch: %s: %s\n", kinds[k].name, m);
            free(m);
            bad = 1;
        }
        json_decref(out);
    }
    if (bad)
        return 1;

    /* Warm-up: caches, the allocator, Lua's string table. */
    size_t warm = n / 10 < 5000 ? n / 10 : 5000;
    bench_run_block(rules, kinds, nkinds, 0, warm, NULL);
    bench_run_block(empty, kinds, nkinds, 0, warm, NULL);

    uint64_t *ns_rules = sb_xcalloc(n, sizeof(uint64_t));
    uint64_t *ns_empty = sb_xcalloc(n, sizeof(uint64_t));
    /* Alternate blocks, so drift on the machine (frequency, neighbours) hits both alike. */
    for (size_t from = 0; from < n; from += BENCH_BLOCK) {
        size_t to = from + BENCH_BLOCK < n ? from + BENCH_BLOCK : n;
        bench_run_block(rules, kinds, nkinds, from, to, ns_rules);
        bench_run_block(empty, kinds, nkinds, from, to, ns_empty);
    }

    printf("\n%-28s %12s %12s\n", "median us per event", "defaults", "no scripts");
    for (int k = 0; k < nkinds; k++)
        printf("%-28s %12.2f %12.2f\n", kinds[k].name, bench_kind_median(ns_rules, n, k, nkinds),
               bench_kind_median(ns_empty, n, k, nkinds));

    bench_stats_t r = bench_stats(ns_rules, n), e = bench_stats(ns_empty, n);
    printf("bench-events %zu\n", n);
    printf("bench-kinds %d\n", nkinds);
    printf("bench-rules median_us %.2f p99_us %.2f mean_us %.2f events_per_s %.0f\n", r.median,
           r.p99, r.mean, r.per_s);
    printf("bench-empty median_us %.2f p99_us %.2f mean_us %.2f events_per_s %.0f\n", e.median,
           e.p99, e.mean, e.per_s);
    printf("bench-memory rules_loaded %zu rules_after %zu empty_loaded %zu empty_after %zu\n",
           loaded_rules, sb_sandbox_memory(rules), loaded_empty, sb_sandbox_memory(empty));

    free(ns_rules);
    free(ns_empty);
    for (int k = 0; k < nkinds; k++)
        json_decref(kinds[k].ev);
    sb_sandbox_free(rules);
    sb_sandbox_free(empty);
    return 0;
}
