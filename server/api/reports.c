/*
 * reports.c - the reports of a tenant's desk over a range of days: volume,
 * response times, SLA attainment, CSAT, agent scorecards, compensation,
 * retention, channels and problems, as JSON or as CSV.  Each report is one
 * read-only query run as the caller under row-level security: the database
 * makes the numbers and the documents (from the rollups it keeps, see
 * 0010_report_rollups.sql), this file checks the parameters and picks the
 * form of the answer.
 */

/*
 * ======================== definitions ========================
 *
 * GET /api/v1/tenants/{tenant}/reports/<name>, for viewers, supervisors and
 * admins.  Agents get 403: their role works tickets, and reports show the
 * colleagues' scorecards (sb_api_begin lets the viewer role and above in,
 * report_run then refuses exactly the agent role, API keys included).
 *
 * Parameters (anything else, a repeated one or a bad value: 422 naming it):
 *   from, to       dates YYYY-MM-DD, both days included, in UTC.  to defaults
 *                  to today, from to 29 days before to (the last 30 days).
 *                  to before from, or more than 1096 days (three years): 422.
 *   group          day (default), week (ISO, from Monday) or month: the
 *                  periods of time series.  Reports that are not time series
 *                  ignore it and answer "group": null (compensation: "month").
 *   channel        tickets.channel.
 *   team, agent    ids: the ticket's team and assignee (for csat the agent
 *                  the feedback credits, for compensation the issuing agent).
 *   priority       low, normal, high or urgent.
 *   customer_kind  internal or external: the kind of the ticket's customer
 *                  (of the compensated customer for compensation).
 *   format         json (default) or csv; without it, CSV when the Accept
 *                  header names text/csv (q above 0) before any JSON type.
 * The filters apply to the tickets a report counts; feedback, surveys and
 * compensations are filtered through their ticket (those without one drop
 * out when channel, team or priority is set).
 *
 * The answer: {"report", "from", "to", "group", "filters": {channel, team,
 * agent, priority, customer_kind} (null when not set), "rows": [...],
 * "totals": {...}}.  As CSV: the rows only, a header line of the columns
 * below, one line per row, CRLF, RFC 4180 quoting, NULL as the empty field,
 * and each field exactly the JSON value's text (sb_report_csv in
 * 0009_reports.sql, replaced in 0010); an object (agents' compensation) is
 * its JSON text.  A text value that a spreadsheet would run as a formula
 * (it starts with =, +, -, @, a tab or a carriage return: a tag, a reason,
 * a name anyone could have typed) gets a leading apostrophe.
 * Time series have a row for every period that meets the range (zero
 * counts included); a period is labelled by its first calendar day and
 * counts only what falls inside the range.  Durations are seconds;
 * medians and p90 are percentile_cont (interpolated); ratios have four
 * decimals, averages two; null when there is nothing to divide.
 *
 * volume (series): per period, created = tickets created in it; solved =
 *   tickets whose solved_at is in it; backlog = tickets open at the end of
 *   the period (the end of the range for the last one), where open means
 *   created before that instant and either in a status other than solved
 *   or closed, or solved (solved_at) at or after it.  A ticket closed
 *   without a solved_at was never open.  Totals: created, solved, backlog
 *   at the end of the range.
 * response-times (series): per period of creation, tickets; and for first
 *   response and for resolution the count of tickets that have the time,
 *   its median and p90.  The time is the business seconds on the SLA
 *   calendar (ticket_sla.first_response_secs / resolution_secs, filled when
 *   met); a ticket without an SLA row falls back to wall-clock seconds from
 *   created_at to first_response_at / solved_at.  Totals: the same over
 *   the range.
 * sla (series): per period of creation, tickets; with_policy = tickets with
 *   an SLA row; breached = those with any target in ticket_sla.breached;
 *   attainment = 1 - breached / with_policy; breaches per target
 *   (first_response, next_response, resolution).  Totals: the same.
 * csat: a row per agent (feedback.agent_id, surveys.agent_id) and per team
 *   (the ticket's team): ratings = feedback given in the range, average,
 *   satisfied_share = share of ratings 4 and 5; offered = surveys created in
 *   the range, answered = those of them answered, response_rate =
 *   answered / offered.  Totals: everything in the range, with or without
 *   an agent or team.
 * agents: a scorecard per agent who is a member of the tenant (not a
 *   viewer; with team, a member of that team) or had activity: handled =
 *   tickets assigned to it solved in the range; medians of their first
 *   response and resolution seconds (as response-times); csat_ratings and
 *   csat_average of the feedback crediting it in the range; compensations
 *   = issued and approved compensations it issued in the range, and
 *   compensation = their amounts per currency ({"EUR": 12.5}).  Totals:
 *   handled, CSAT and compensation over everyone (medians over everyone
 *   are response-times').
 * compensation: per month (UTC), reason and currency of the compensations
 *   created in the range: count and amount of the issued and approved ones,
 *   pending = those waiting for approval (rejected ones are left out;
 *   currency and amount are null for compensations without an amount).
 *   Totals: count, pending, amount per currency.
 * retention: the customers with a ticket created in the range (segment
 *   "all"); those who rated 2 or less in it ("low_rating"); those with a
 *   ticket created in it whose SLA was breached ("sla_breach"); the union of
 *   the last two ("low_rating_or_sla_breach").  For each: returned = those
 *   who created a ticket (any channel) in the next period of equal length
 *   (totals next_from, next_to), silent = the others, return_rate.  A next
 *   period that has not ended yet counts what exists so far.  The filters
 *   choose the range's tickets (and the rated ones); a return is any ticket.
 * channels (series): per period and channel, created and solved (as
 *   volume), every channel seen in the range in every period.  Totals:
 *   created, solved.
 * problems: of the tickets created in the range, the 20 tags on most
 *   tickets (kind "tag", a ticket's tags are a set) and the 20 problems
 *   most tickets are linked to (kind "problem": problem id, title, status);
 *   ties by name.  Totals: tickets, tagged, linked.
 *
 * Speed (the goal: each report under a second on a tenant of 1,000,000
 * tickets): the time series, CSAT, the scorecards and the problems read
 * the rollups of 0010_report_rollups.sql through sb_report_facts: a row
 * per day and combination of the filters, with the times as arrays, so a
 * year is a few hundred thousand small rows whatever the ticket count.
 * Days that are not rolled up or that changed since (marked by triggers)
 * are computed live by the same function that builds the rollups, in the
 * same snapshot, so the numbers are exact either way (test_reports.py
 * compares both paths).  Retention goes customer by customer, an index
 * probe of each one's tickets by time; compensation reads its own small
 * table.  The transaction plans for the actual parameters, in UTC, with
 * room to sort in memory (sql_setup).
 */
#include "api.h"
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REPORTS "/api/v1/tenants/{tenant}/reports/"

/* ======================== queries ======================== */

/*
 * Every report's statement takes the same parameters: $1 from, $2 to
 * (dates), $3 group (day, week or month; NULL or "month" for reports that
 * are not time series), $4 channel, $5 team, $6 agent, $7 priority,
 * $8 customer_kind, $9 the CSV columns, $10 CSV or not, $11 the report's
 * name.  A body answers one row: the rows (a JSON array) and the totals.
 * The pieces below are plain strings, aliased as the queries use them
 * (t tickets, s ticket_sla, f feedback, v surveys, c compensations).
 */
#define R_LO "$1::date::timestamptz"
#define R_HI "($2::date + 1)::timestamptz"

/* The periods of a time series (the first day of each), from the range's. */
#define R_PERIODS                                                             \
    "periods AS MATERIALIZED (SELECT g::date AS period FROM generate_series(" \
    "date_trunc($3, $1::date::timestamp), $2::date::timestamp, ('1 ' || $3)::interval) g)"
/* The period of a rollup row f. */
#define R_PERIOD_F "date_trunc($3, f.day::timestamp)::date"

/*
 * The rollup rows of the range that pass the filters
 * (0010_report_rollups.sql: rolled up where clean, live elsewhere; whole
 * months as one row per combination when the report's periods are months,
 * or it has none).  agent_id is the assignee for ticket measures, the
 * credited agent for CSAT ones, as the filter's definition says.  A
 * report keeps only the columns it reads (the time arrays are most of a
 * row): R_<REPORT>_FACTS, R_FACTS_OPEN "<columns>" R_FACTS_CLOSE.
 */
#define R_FACTS_WHERE                                                                        \
    " WHERE ($4::text IS NULL OR f.channel = $4) AND ($5::bigint IS NULL OR f.team_id = $5)" \
    " AND ($6::bigint IS NULL OR f.agent_id = $6) AND ($7::text IS NULL OR f.priority = $7)" \
    " AND ($8::text IS NULL OR f.internal = ($8 = 'internal'))"
#define R_FACTS_OPEN "facts AS MATERIALIZED (SELECT "
#define R_FACTS_CLOSE \
    " FROM sb_report_facts($1::date, $2::date, coalesce($3, 'month') = 'month') f" R_FACTS_WHERE ")"

/*
 * The filters on a ticket t (retention and compensation, which read the
 * tables).  Internal customers are few: hashed once, and external means
 * not among them.
 */
#define R_INTERNAL                                                     \
    "(SELECT ic.id FROM customers ic WHERE ic.tenant_id = sb_tenant()" \
    " AND ic.kind = 'internal')"
#define R_KIND_T " AND ($8::text IS NULL OR (t.customer_id IN " R_INTERNAL ") = ($8 = 'internal'))"
#define R_KIND_C " AND ($8::text IS NULL OR (c.customer_id IN " R_INTERNAL ") = ($8 = 'internal'))"
#define R_TICKET_T                                \
    " AND ($4::text IS NULL OR t.channel = $4)"   \
    " AND ($5::bigint IS NULL OR t.team_id = $5)" \
    " AND ($7::text IS NULL OR t.priority = $7)"
#define R_AGENT_T " AND ($6::bigint IS NULL OR t.assignee_id = $6)"
#define R_FILTER_T R_TICKET_T R_AGENT_T R_KIND_T
/* The agent filter on what is not a ticket. */
#define R_AGENT_F " AND ($6::bigint IS NULL OR f.agent_id = $6)"
#define R_AGENT_C " AND ($6::bigint IS NULL OR c.issued_by_agent = $6)"
#define R_AGENT_M " AND ($6::bigint IS NULL OR m.agent_id = $6)"
/*
 * Feedback f whose ticket passes every ticket filter: without filters this
 * folds away, with them the matching tickets are hashed once.
 */
#define R_FEEDBACK_TICKET_ALL                                                    \
    " AND (($4::text IS NULL AND $5::bigint IS NULL AND $6::bigint IS NULL"      \
    " AND $7::text IS NULL AND $8::text IS NULL) OR f.ticket_id IN (SELECT t.id" \
    " FROM tickets t WHERE t.tenant_id = sb_tenant()" R_FILTER_T "))"

/* The answer around a body: the document, or the rows as CSV. */
#define R_REPORT_OPEN                                                                \
    "SELECT CASE WHEN $10::boolean THEN sb_report_csv(r.rows, $9::text[])"           \
    " ELSE json_build_object('report', $11::text, 'from', $1::date, 'to', $2::date," \
    "  'group', $3::text, 'filters', json_build_object('channel', $4::text,"         \
    "  'team', $5::bigint, 'agent', $6::bigint, 'priority', $7::text,"               \
    "  'customer_kind', $8::text), 'rows', r.rows, 'totals', r.totals)::text END"    \
    " FROM ("
#define R_REPORT_CLOSE ") r(rows, totals)"

#define R_VOLUME_FACTS \
    R_FACTS_OPEN "f.day, f.created, f.solved, f.created_ended, f.solved_ended" R_FACTS_CLOSE

/*
 * The backlog needs the days before the range too (the tickets still open
 * when it starts), from the tenant's first ticket on, by month where it
 * can.
 */
static const char sql_volume[] = R_REPORT_OPEN
    "WITH " R_PERIODS ","
    " first AS MATERIALIZED (SELECT least($1::date, coalesce(sb_report_first_day(), $1::date))"
    "  AS day), " R_VOLUME_FACTS ","
    " b AS (SELECT coalesce(sum(f.created - f.created_ended - f.solved_ended), 0) AS open"
    "  FROM first, sb_report_facts(first.day, $1::date - 1, true) f" R_FACTS_WHERE "),"
    " c AS (SELECT " R_PERIOD_F " AS period, sum(f.created) AS created, sum(f.solved) AS solved,"
    "  sum(f.created - f.created_ended - f.solved_ended) AS delta"
    "  FROM facts f GROUP BY 1),"
    " r AS (SELECT p.period, coalesce(c.created, 0)::bigint AS created,"
    "  coalesce(c.solved, 0)::bigint AS solved,"
    "  (b.open + sum(coalesce(c.delta, 0)) OVER (ORDER BY p.period))::bigint AS backlog"
    "  FROM periods p LEFT JOIN c ON c.period = p.period CROSS JOIN b)"
    " SELECT coalesce(json_agg(json_build_object('period', r.period, 'created', r.created,"
    "  'solved', r.solved, 'backlog', r.backlog) ORDER BY r.period), '[]'),"
    " json_build_object('created', coalesce(sum(r.created), 0)::bigint,"
    "  'solved', coalesce(sum(r.solved), 0)::bigint,"
    "  'backlog', (array_agg(r.backlog ORDER BY r.period DESC))[1])"
    " FROM r" R_REPORT_CLOSE;

/*
 * Per period (g = 0) and for the whole range (g = 1), the count, median and
 * p90 of the values of a time array of the rollup rows.  Two aggregates,
 * not grouping sets, which would sort every value once more by period.
 */
#define R_QUANTILES(col, name)                                                \
    " " name " AS (SELECT 0 AS g, " R_PERIOD_F " AS period, count(*) AS n,"   \
    "  percentile_cont('{0.5,0.9}'::float8[]) WITHIN GROUP (ORDER BY v) AS q" \
    "  FROM facts f, unnest(f." col ") v GROUP BY 2"                          \
    " UNION ALL SELECT 1, NULL, count(*),"                                    \
    "  percentile_cont('{0.5,0.9}'::float8[]) WITHIN GROUP (ORDER BY v)"      \
    "  FROM facts f, unnest(f." col ") v),"
#define R_TIMES_A                                                                  \
    "'first_response_count', coalesce(fq.n, 0), 'first_response_median', fq.q[1]," \
    " 'first_response_p90', fq.q[2], 'resolution_count', coalesce(rq.n, 0),"       \
    " 'resolution_median', rq.q[1], 'resolution_p90', rq.q[2]"

#define R_TIMES_FACTS R_FACTS_OPEN "f.day, f.created, f.fr, f.rs" R_FACTS_CLOSE

static const char sql_response_times[] = R_REPORT_OPEN
    "WITH " R_PERIODS ", " R_TIMES_FACTS ","
    " n AS (SELECT GROUPING(" R_PERIOD_F ") AS g, " R_PERIOD_F " AS period,"
    "  sum(f.created) AS tickets FROM facts f GROUP BY GROUPING SETS ((" R_PERIOD_F
    "), ()))," R_QUANTILES("fr", "fq") R_QUANTILES(
        "rs",
        "rq") " one AS (SELECT 1)"
              " SELECT coalesce(json_agg(json_build_object('period', p.period,"
              "  'tickets', coalesce(n.tickets, 0), " R_TIMES_A ") ORDER BY p.period), '[]'),"
              " (SELECT json_build_object('tickets', coalesce(n.tickets, 0), " R_TIMES_A ")"
              "  FROM one LEFT JOIN n ON n.g = 1 LEFT JOIN fq ON fq.g = 1 LEFT JOIN rq ON rq.g = 1)"
              " FROM periods p LEFT JOIN n ON n.g = 0 AND n.period = p.period"
              " LEFT JOIN fq ON fq.g = 0 AND fq.period = p.period"
              " LEFT JOIN rq ON rq.g = 0 AND rq.period = p.period" R_REPORT_CLOSE;

#define R_SLA_COLS_A                                                                      \
    "'with_policy', coalesce(a.with_policy, 0), 'breached', coalesce(a.breached, 0),"     \
    " 'attainment', CASE WHEN a.with_policy > 0"                                          \
    "  THEN round((a.with_policy - a.breached)::numeric / a.with_policy, 4)::float8 END," \
    " 'first_response_breaches', coalesce(a.fr, 0),"                                      \
    " 'next_response_breaches', coalesce(a.nr, 0),"                                       \
    " 'resolution_breaches', coalesce(a.rs, 0)"

#define R_SLA_FACTS                                                                            \
    R_FACTS_OPEN "f.day, f.created, f.with_policy, f.breached, f.fr_breaches, f.nr_breaches, " \
                 "f.rs_breaches" R_FACTS_CLOSE

static const char sql_sla[] = R_REPORT_OPEN
    "WITH " R_PERIODS ", " R_SLA_FACTS ","
    " a AS (SELECT GROUPING(" R_PERIOD_F ") AS g, " R_PERIOD_F " AS period,"
    "  sum(f.created)::bigint AS tickets, sum(f.with_policy)::bigint AS with_policy,"
    "  sum(f.breached)::bigint AS breached, sum(f.fr_breaches)::bigint AS fr,"
    "  sum(f.nr_breaches)::bigint AS nr, sum(f.rs_breaches)::bigint AS rs"
    "  FROM facts f GROUP BY GROUPING SETS ((" R_PERIOD_F "), ())),"
    " one AS (SELECT 1)"
    " SELECT coalesce(json_agg(json_build_object('period', p.period,"
    "  'tickets', coalesce(a.tickets, 0), " R_SLA_COLS_A ") ORDER BY p.period), '[]'),"
    " (SELECT json_build_object('tickets', coalesce(a.tickets, 0), " R_SLA_COLS_A ")"
    "  FROM one LEFT JOIN a ON a.g = 1)"
    " FROM periods p LEFT JOIN a ON a.g = 0 AND a.period = p.period" R_REPORT_CLOSE;

#define R_CSAT_COLS_R                                                \
    "'ratings', r.ratings, 'average', r.average,"                    \
    " 'satisfied_share', CASE WHEN r.ratings > 0"                    \
    "  THEN round(r.satisfied::numeric / r.ratings, 4)::float8 END," \
    " 'offered', r.offered, 'answered', r.answered,"                 \
    " 'response_rate', CASE WHEN r.offered > 0"                      \
    "  THEN round(r.answered::numeric / r.offered, 4)::float8 END"

/* The average of the ratings of rollup rows f, two decimals. */
#define R_CSAT_AVERAGE "round(sum(f.rating_sum)::numeric / nullif(sum(f.ratings), 0), 2)::float8"

#define R_CSAT_FACTS                                                                        \
    R_FACTS_OPEN "f.agent_id, f.team_id, f.ratings, f.rating_sum, f.satisfied, f.offered, " \
                 "f.answered" R_FACTS_CLOSE

static const char sql_csat[] = R_REPORT_OPEN
    "WITH " R_CSAT_FACTS ","
    " a AS (SELECT CASE WHEN GROUPING(f.agent_id) = 0 THEN 'agent'"
    "   WHEN GROUPING(f.team_id) = 0 THEN 'team' END AS kind,"
    "  CASE WHEN GROUPING(f.agent_id) = 0 THEN f.agent_id ELSE f.team_id END AS id,"
    "  sum(f.ratings)::bigint AS ratings, " R_CSAT_AVERAGE " AS average,"
    "  sum(f.satisfied)::bigint AS satisfied, sum(f.offered)::bigint AS offered,"
    "  sum(f.answered)::bigint AS answered"
    "  FROM facts f WHERE f.ratings > 0 OR f.offered > 0"
    "  GROUP BY GROUPING SETS ((f.agent_id), (f.team_id), ())),"
    " r AS (SELECT a.*, CASE a.kind WHEN 'agent' THEN ag.name ELSE tm.name END AS name"
    "  FROM a LEFT JOIN agents ag ON a.kind = 'agent' AND ag.id = a.id"
    "  LEFT JOIN teams tm ON a.kind = 'team' AND tm.tenant_id = sb_tenant() AND tm.id = a.id"
    "  WHERE a.kind IS NOT NULL AND a.id IS NOT NULL),"
    " one AS (SELECT 1)"
    " SELECT (SELECT coalesce(json_agg(json_build_object('kind', r.kind, 'id', r.id,"
    "  'name', r.name, " R_CSAT_COLS_R ") ORDER BY r.kind, r.name, r.id), '[]') FROM r),"
    " (SELECT json_build_object('ratings', coalesce(r.ratings, 0), 'average', r.average,"
    "  'satisfied_share', CASE WHEN r.ratings > 0"
    "   THEN round(r.satisfied::numeric / r.ratings, 4)::float8 END,"
    "  'offered', coalesce(r.offered, 0), 'answered', coalesce(r.answered, 0),"
    "  'response_rate', CASE WHEN r.offered > 0"
    "   THEN round(r.answered::numeric / r.offered, 4)::float8 END)"
    "  FROM one LEFT JOIN a r ON r.kind IS NULL)" R_REPORT_CLOSE;

/* An agent's cells (h, fm, rm, c). */
#define R_AGENT_COLS                                                      \
    "'handled', coalesce(h.handled, 0), 'first_response_median', fm.m,"   \
    " 'resolution_median', rm.m, 'csat_ratings', coalesce(h.ratings, 0)," \
    " 'csat_average', h.average, 'compensations', coalesce(c.n, 0),"      \
    " 'compensation', coalesce(c.amounts, '{}')"
/* The median of a time array of an agent's rollup rows. */
#define R_AGENT_MEDIAN(col, name)                                                          \
    " " name " AS (SELECT f.agent_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS m" \
    "  FROM facts f, unnest(f." col ") v WHERE f.agent_id IS NOT NULL GROUP BY f.agent_id),"

#define R_AGENTS_FACTS \
    R_FACTS_OPEN       \
    "f.agent_id, f.solved, f.solved_fr, f.solved_rs, f.ratings, f.rating_sum" R_FACTS_CLOSE

/*
 * The scorecards: tickets solved and CSAT from the rollups (the rows with
 * an agent), compensation from its table.
 */
static const char sql_agents[] = R_REPORT_OPEN
    "WITH " R_AGENTS_FACTS ","
    " h AS (SELECT f.agent_id, sum(f.solved)::bigint AS handled,"
    "  sum(f.ratings)::bigint AS ratings, " R_CSAT_AVERAGE " AS average"
    "  FROM facts f WHERE f.agent_id IS NOT NULL GROUP BY f.agent_id)," R_AGENT_MEDIAN("solved_fr",
                                                                                       "fm")
        R_AGENT_MEDIAN(
            "solved_rs",
            "rm") " c1 AS (SELECT GROUPING(c.issued_by_agent) AS g, c.issued_by_agent AS agent_id,"
                  "  c.currency, count(*) AS n, sum(c.amount) AS amount"
                  "  FROM compensations c LEFT JOIN tickets t ON t.tenant_id = c.tenant_id"
                  "   AND t.id = c.ticket_id"
                  "  WHERE c.tenant_id = sb_tenant() AND c.status IN ('issued', 'approved')"
                  "  AND c.issued_by_agent IS NOT NULL"
                  "  AND c.created_at >= " R_LO
                  " AND c.created_at < " R_HI R_TICKET_T R_AGENT_C R_KIND_C
                  "  GROUP BY GROUPING SETS ((c.issued_by_agent, c.currency), (c.currency))),"
                  " c AS (SELECT c1.g, c1.agent_id, sum(c1.n)::bigint AS n,"
                  "  jsonb_object_agg(c1.currency, c1.amount) FILTER (WHERE c1.currency IS NOT "
                  "NULL)"
                  "   AS amounts FROM c1 GROUP BY c1.g, c1.agent_id),"
                  " ids AS (SELECT h.agent_id FROM h WHERE h.handled > 0 OR h.ratings > 0"
                  "  UNION SELECT c.agent_id FROM c WHERE c.g = 0"
                  "  UNION SELECT m.agent_id FROM memberships m WHERE m.tenant_id = sb_tenant()"
                  "   AND m.role <> 'viewer'" R_AGENT_M " AND ($5::bigint IS NULL OR m.agent_id IN"
                  "    (SELECT tm.agent_id FROM team_members tm WHERE tm.tenant_id = sb_tenant()"
                  "     AND tm.team_id = $5)))"
                  " SELECT (SELECT coalesce(json_agg(json_build_object('agent', i.agent_id, "
                  "'name', ag.name,"
                  "  " R_AGENT_COLS ") ORDER BY ag.name, i.agent_id), '[]')"
                  "  FROM ids i LEFT JOIN agents ag ON ag.id = i.agent_id"
                  "  LEFT JOIN h ON h.agent_id = i.agent_id LEFT JOIN fm ON fm.agent_id = "
                  "i.agent_id"
                  "  LEFT JOIN rm ON rm.agent_id = i.agent_id"
                  "  LEFT JOIN c ON c.g = 0 AND c.agent_id = i.agent_id WHERE i.agent_id IS NOT "
                  "NULL),"
                  " (SELECT json_build_object('handled', coalesce(sum(f.solved), 0)::bigint,"
                  "  'csat_ratings', coalesce(sum(f.ratings), 0)::bigint, "
                  "'csat_average', " R_CSAT_AVERAGE ","
                  "  'compensations', coalesce((SELECT c.n FROM c WHERE c.g = 1), 0),"
                  "  'compensation', coalesce((SELECT c.amounts FROM c WHERE c.g = 1), '{}'))"
                  "  FROM facts f WHERE f.agent_id IS NOT NULL)" R_REPORT_CLOSE;

static const char sql_compensation[] = R_REPORT_OPEN
    "WITH x AS (SELECT to_char(c.created_at, 'YYYY-MM') AS month, c.reason,"
    "  c.currency, c.status IN ('issued', 'approved') AS granted, c.amount"
    "  FROM compensations c LEFT JOIN tickets t ON t.tenant_id = c.tenant_id"
    "   AND t.id = c.ticket_id"
    "  WHERE c.tenant_id = sb_tenant() AND c.status <> 'rejected'"
    "  AND c.created_at >= " R_LO " AND c.created_at < " R_HI R_TICKET_T R_AGENT_C R_KIND_C "),"
    " r AS (SELECT x.month, x.reason, x.currency, count(*) FILTER (WHERE x.granted) AS n,"
    "  CASE WHEN x.currency IS NOT NULL"
    "   THEN coalesce(sum(x.amount) FILTER (WHERE x.granted), 0) END AS amount,"
    "  count(*) FILTER (WHERE NOT x.granted) AS pending"
    "  FROM x GROUP BY x.month, x.reason, x.currency)"
    " SELECT coalesce(json_agg(json_build_object('month', r.month, 'reason', r.reason,"
    "  'currency', r.currency, 'count', r.n, 'amount', r.amount, 'pending', r.pending)"
    "  ORDER BY r.month, r.reason, r.currency NULLS FIRST), '[]'),"
    " json_build_object('count', coalesce(sum(r.n), 0)::bigint,"
    "  'pending', coalesce(sum(r.pending), 0)::bigint,"
    "  'amount', coalesce((SELECT jsonb_object_agg(y.currency, y.amount) FROM"
    "   (SELECT r2.currency, sum(r2.amount) AS amount FROM r r2"
    "    WHERE r2.currency IS NOT NULL AND r2.n > 0 GROUP BY r2.currency) y), '{}'))"
    " FROM r" R_REPORT_CLOSE;

#define R_NEXT_HI "($2::date + 1 + ($2::date - $1::date + 1))::timestamptz"
#define R_RETURN_COLS_R                                                             \
    "'customers', r.customers, 'returned', r.returned,"                             \
    " 'silent', r.customers - r.returned, 'return_rate', CASE WHEN r.customers > 0" \
    "  THEN round(r.returned::numeric / r.customers, 4)::float8 END"
/* Customer k has a ticket created from <lo> to <hi> that passes <filter>. */
#define R_WROTE(lo, hi, filter)                                       \
    "EXISTS (SELECT 1 FROM tickets t WHERE t.tenant_id = sb_tenant()" \
    " AND t.customer_id = k.id AND t.created_at >= " lo " AND t.created_at < " hi filter ")"

/*
 * Customer by customer (a tenant has far fewer customers than tickets):
 * whether it wrote in the range, and in the next period, each an index
 * probe of its own tickets by time.  The low ratings and the breached SLAs
 * are few, read through their own indexes.
 */
static const char sql_retention[] = R_REPORT_OPEN "WITH k AS MATERIALIZED (SELECT k.id, " R_WROTE(
    R_HI, R_NEXT_HI,
    "") " AS back"
        "  FROM customers k WHERE k.tenant_id = sb_tenant()"
        "  AND ($8::text IS NULL OR (k.kind = 'internal') = ($8 = 'internal'))),"
        " cur AS (SELECT k.id, k.back FROM k WHERE " R_WROTE(
            R_LO, R_HI,
            R_TICKET_T
                R_AGENT_T) "),"
                           " low AS (SELECT DISTINCT f.customer_id FROM feedback f"
                           "  WHERE f.tenant_id = sb_tenant() AND f.rating <= 2"
                           "  AND f.created_at >= " R_LO
                           " AND f.created_at < " R_HI R_FEEDBACK_TICKET_ALL "),"
                           " br AS (SELECT DISTINCT t.customer_id FROM ticket_sla s"
                           "  JOIN tickets t ON t.tenant_id = s.tenant_id AND t.id = s.ticket_id"
                           "  WHERE s.tenant_id = sb_tenant() AND cardinality(s.breached) > 0"
                           "  AND t.created_at >= " R_LO " AND t.created_at < " R_HI R_FILTER_T "),"
                           " seg AS (SELECT 1 AS ord, cur.id AS customer_id FROM cur"
                           "  UNION ALL SELECT 2, low.customer_id FROM low"
                           "  UNION ALL SELECT 3, br.customer_id FROM br"
                           "  UNION ALL SELECT 4, u.customer_id FROM (SELECT customer_id FROM low"
                           "   UNION SELECT customer_id FROM br) u),"
                           " a AS (SELECT seg.ord, count(*) AS customers, count(*) FILTER (WHERE "
                           "k.back) AS returned"
                           "  FROM seg JOIN k ON k.id = seg.customer_id GROUP BY seg.ord),"
                           " r AS (SELECT v.ord, v.segment, coalesce(a.customers, 0) AS customers,"
                           "  coalesce(a.returned, 0) AS returned FROM (VALUES (1, 'all'), (2, "
                           "'low_rating'),"
                           "   (3, 'sla_breach'), (4, 'low_rating_or_sla_breach')) v(ord, segment)"
                           "  LEFT JOIN a ON a.ord = v.ord)"
                           " SELECT json_agg(json_build_object('segment', "
                           "r.segment, " R_RETURN_COLS_R ")"
                           "  ORDER BY r.ord),"
                           " (SELECT json_build_object(" R_RETURN_COLS_R
                           ", 'next_from', $2::date + 1,"
                           "  'next_to', $2::date + ($2::date - $1::date + 1)) FROM r WHERE r.ord "
                           "= 1)"
                           " FROM r" R_REPORT_CLOSE;

#define R_CHANNELS_FACTS R_FACTS_OPEN "f.day, f.channel, f.created, f.solved" R_FACTS_CLOSE

/* Every channel with a ticket created or solved in the range, in every period. */
static const char sql_channels[] = R_REPORT_OPEN
    "WITH " R_PERIODS ", " R_CHANNELS_FACTS ","
    " c AS (SELECT " R_PERIOD_F " AS period, f.channel, sum(f.created)::bigint AS created,"
    "  sum(f.solved)::bigint AS solved FROM facts f GROUP BY 1, f.channel),"
    " ch AS (SELECT c.channel FROM c GROUP BY c.channel"
    "  HAVING sum(c.created) > 0 OR sum(c.solved) > 0),"
    " r AS (SELECT p.period, ch.channel, coalesce(c.created, 0) AS created,"
    "  coalesce(c.solved, 0) AS solved FROM periods p CROSS JOIN ch"
    "  LEFT JOIN c ON c.period = p.period AND c.channel = ch.channel)"
    " SELECT coalesce(json_agg(json_build_object('period', r.period, 'channel', r.channel,"
    "  'created', r.created, 'solved', r.solved) ORDER BY r.period, r.channel), '[]'),"
    " json_build_object('created', coalesce(sum(r.created), 0)::bigint,"
    "  'solved', coalesce(sum(r.solved), 0)::bigint)"
    " FROM r" R_REPORT_CLOSE;

#define R_PROBLEMS_FACTS R_FACTS_OPEN "f.created, f.tagged, f.linked" R_FACTS_CLOSE

static const char sql_problems[] = R_REPORT_OPEN
    "WITH " R_PROBLEMS_FACTS ","
    " x AS (SELECT f.tag, f.problem_id, sum(f.tickets) AS n"
    "  FROM sb_report_tag_facts($1::date, $2::date) f" R_FACTS_WHERE
    "  GROUP BY f.tag, f.problem_id),"
    " tg AS (SELECT x.tag, x.n FROM x WHERE x.tag IS NOT NULL ORDER BY x.n DESC, x.tag LIMIT 20),"
    " pr AS (SELECT x.problem_id, x.n FROM x WHERE x.problem_id IS NOT NULL"
    "  ORDER BY x.n DESC, x.problem_id LIMIT 20),"
    " r AS (SELECT 1 AS ord, 'tag' AS kind, NULL::bigint AS id, tg.tag AS name,"
    "  NULL::text AS status, tg.n FROM tg"
    "  UNION ALL SELECT 2, 'problem', p.id, p.title, p.status, pr.n FROM pr"
    "  JOIN problems p ON p.tenant_id = sb_tenant() AND p.id = pr.problem_id)"
    " SELECT (SELECT coalesce(json_agg(json_build_object('kind', r.kind, 'id', r.id,"
    "  'name', r.name, 'status', r.status, 'tickets', r.n)"
    "  ORDER BY r.ord, r.n DESC, r.name, r.id), '[]') FROM r),"
    " (SELECT json_build_object('tickets', coalesce(sum(f.created), 0)::bigint,"
    "  'tagged', coalesce(sum(f.tagged), 0)::bigint,"
    "  'linked', coalesce(sum(f.linked), 0)::bigint) FROM facts f)" R_REPORT_CLOSE;

typedef struct {
    const char *name;
    int series;          /* a time series: group applies */
    const char *group;   /* the fixed grouping of one that is not, or NULL */
    const char *columns; /* the CSV columns, as a text[] literal */
    const char *sql;
} report_def_t;

static const report_def_t report_defs[] = {
    {"volume", 1, NULL, "{period,created,solved,backlog}", sql_volume},
    {"response-times", 1, NULL,
     "{period,tickets,first_response_count,first_response_median,first_response_p90,"
     "resolution_count,resolution_median,resolution_p90}",
     sql_response_times},
    {"sla", 1, NULL,
     "{period,tickets,with_policy,breached,attainment,first_response_breaches,"
     "next_response_breaches,resolution_breaches}",
     sql_sla},
    {"csat", 0, NULL,
     "{kind,id,name,ratings,average,satisfied_share,offered,answered,response_rate}", sql_csat},
    {"agents", 0, NULL,
     "{agent,name,handled,first_response_median,resolution_median,csat_ratings,csat_average,"
     "compensations,compensation}",
     sql_agents},
    {"compensation", 0, "month", "{month,reason,currency,count,amount,pending}", sql_compensation},
    {"retention", 0, NULL, "{segment,customers,returned,silent,return_rate}", sql_retention},
    {"channels", 1, NULL, "{period,channel,created,solved}", sql_channels},
    {"problems", 0, NULL, "{kind,id,name,status,tickets}", sql_problems},
};

/*
 * The report's transaction: planned for the actual parameters (a generic
 * plan would not know which filters are off), without JIT compilation
 * (its second or so of compiling is paid on every request and gains
 * nothing on queries this size), with room to sort a large
 * range in memory, index ranges costed as the cached reads they are (the
 * default makes the planner read every row of every tenant instead, checking
 * row-level security on each), and UTC days.
 */
static const char sql_setup[] = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
                                " set_config('work_mem', '128MB', true),"
                                " set_config('jit', 'off', true),"
                                " set_config('random_page_cost', '1.1', true),"
                                " set_config('TimeZone', 'UTC', true)";

/* ======================== parameters ======================== */

/* The longest range, in days: three years. */
#define REPORT_MAX_DAYS 1096

static const char *const report_params[] = {
    "from", "to", "group", "channel", "team", "agent", "priority", "customer_kind", "format", NULL,
};
static const char *const report_groups[] = {"day", "week", "month", NULL};
static const char *const report_priorities[] = {"low", "normal", "high", "urgent", NULL};
static const char *const report_kinds[] = {"internal", "external", NULL};
static const char *const report_formats[] = {"json", "csv", NULL};

typedef struct {
    const report_def_t *def;
    const char *params[11];
    char from[48], to[48];
    int csv;
} report_t;

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's). */
static long report_days(int y, int m, int d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The date of a day number, as YYYY-MM-DD in buf. */
static void report_date(long z, char *buf, size_t len)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    long d = doy - (153 * mp + 2) / 5 + 1;
    long m = mp < 10 ? mp + 3 : mp - 9;
    long y = yoe + era * 400 + (m <= 2);
    snprintf(buf, len, "%04d-%02d-%02d", (int)y, (int)m, (int)d);
}

/* A date parameter (YYYY-MM-DD, a real calendar day) as a day number. */
static int report_query_date(sb_http_req_t *req, const char *name, long *out)
{
    const char *v;
    int ymd[3];

    if (sb_api_query_date(req, name, &v, ymd) != 0)
        return SB_EINVAL;
    if (v)
        *out = report_days(ymd[0], ymd[1], ymd[2]);
    return 0;
}

/* An optional parameter that must be one of oneof. */
static int report_query_enum(sb_http_req_t *req, const char *name, const char *const *oneof,
                             const char **out)
{
    const char *v = sb_http_req_query(req, name);

    *out = v;
    if (v == NULL)
        return 0;
    for (const char *const *o = oneof; *o; o++)
        if (strcmp(*o, v) == 0)
            return 0;
    sb_buf_t allowed;
    sb_buf_init(&allowed);
    for (const char *const *o = oneof; *o; o++)
        sb_buf_printf(&allowed, "%s%s", allowed.len ? ", " : "", *o);
    sb_api_respond_invalid(req, name, "parameter \"%s\" must be one of: %s", name, allowed.data);
    sb_buf_free(&allowed);
    return SB_EINVAL;
}

/* A channel name: 1 to 64 characters, none of them a control character. */
static int report_query_channel(sb_http_req_t *req, const char **out)
{
    const char *v = sb_http_req_query(req, "channel");
    size_t len = v ? strlen(v) : 0;
    int ok = len >= 1 && len <= 64;

    *out = v;
    if (v == NULL)
        return 0;
    for (size_t i = 0; ok && i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            ok = 0;
    if (!ok) {
        sb_api_respond_invalid(req, "channel",
                               "parameter \"channel\" must be a channel name of 1 to 64 "
                               "characters");
        return SB_EINVAL;
    }
    return 0;
}

/* Unknown and repeated parameters are refused, so a typo is not a silent no-op. */
static int report_query_names(sb_http_req_t *req)
{
    const char *name;

    for (size_t i = 0; (name = sb_http_req_query_name(req, i)) != NULL; i++) {
        const char *const *p = report_params;
        if (*name == '\0') /* "a=1&&b=2" */
            continue;
        while (*p && strcmp(*p, name) != 0)
            p++;
        if (*p == NULL) {
            sb_api_respond_invalid(req, name, "unknown parameter \"%s\"", name);
            return SB_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(sb_http_req_query_name(req, j), name) == 0) {
                sb_api_respond_invalid(req, name, "parameter \"%s\" is given more than once", name);
                return SB_EINVAL;
            }
        }
    }
    return 0;
}

/* True when a media range's parameters (after the type, up to ',') say q=0. */
static int report_refused(const char *params, size_t len)
{
    for (const char *p = memchr(params, ';', len); p && p < params + len;) {
        p += strspn(p, "; \t");
        if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=')
            return strtod(p + 2, NULL) <= 0.0;
        p = memchr(p, ';', (size_t)(params + len - p));
    }
    return 0;
}

/*
 * CSV when asked by ?format=csv, or, without format, when the Accept
 * header names text/csv (with a q above zero) before any JSON type.
 */
static int report_wants_csv(sb_http_req_t *req, const char *format)
{
    const char *accept = sb_http_req_header(req, "accept");

    if (format)
        return strcmp(format, "csv") == 0;
    for (const char *p = accept; p && *p;) {
        p += strspn(p, " \t,");
        size_t all = strcspn(p, ",");
        size_t n = strcspn(p, ";,");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        int refused = report_refused(p, all);
        if (!refused && n == 8 && strncasecmp(p, "text/csv", 8) == 0)
            return 1;
        if (!refused && ((n == 16 && strncasecmp(p, "application/json", 16) == 0) ||
                         (n == 13 && strncasecmp(p, "application/*", 13) == 0)))
            return 0;
        p += all;
    }
    return 0;
}

/* ======================== handler ======================== */

static void report_done(int status, PGresult *const *res, int n, void *data)
{
    sb_api_call_t *call = data;
    report_t *r = call->data;

    if (status != 0) {
        sb_api_respond_db_error(call->req, status, res, n);
        return;
    }
    const PGresult *doc = res[n - 1];
    if (PQntuples(doc) != 1 || PQgetisnull(doc, 0, 0)) {
        sb_http_respond_error(call->req, 500, "internal", "internal error");
        return;
    }
    sb_http_res_header(call->req, "Vary", "Accept");
    if (!r->csv) {
        sb_http_respond(call->req, 200, "application/json", PQgetvalue(doc, 0, 0),
                        (size_t)PQgetlength(doc, 0, 0));
        return;
    }
    char disposition[128];
    snprintf(disposition, sizeof(disposition), "attachment; filename=\"%s_%s_%s.csv\"",
             r->def->name, r->from, r->to);
    sb_http_res_header(call->req, "Content-Disposition", disposition);
    sb_http_respond(call->req, 200, "text/csv; charset=utf-8", PQgetvalue(doc, 0, 0),
                    (size_t)PQgetlength(doc, 0, 0));
}

static void report_run(sb_api_call_t *call)
{
    report_t *r = call->data;

    if (call->role == SB_ROLE_AGENT) {
        sb_http_respond_error(call->req, 403, "forbidden", "the agent role may not read reports");
        return;
    }
    sb_db_stmt_t s[2] = {{sql_setup, 0, NULL}, {r->def->sql, 11, r->params}};
    if (sb_api_tx(call, s, 2, report_done) != 0)
        sb_api_respond_unavailable(call->req);
}

static int report_get(sb_http_req_t *req, void *data)
{
    const char *path = sb_http_req_path(req);
    const char *name = strrchr(path, '/');
    const report_def_t *def = NULL;
    const char *format, *group;
    long from, to;

    for (size_t i = 0; name && i < SB_ARRAY_SIZE(report_defs); i++)
        if (strcmp(report_defs[i].name, name + 1) == 0)
            def = &report_defs[i];
    if (def == NULL)
        return SB_ENOENT;

    report_t *r = sb_pool_calloc(sb_http_req_pool(req), sizeof(*r));
    r->def = def;
    if (report_query_names(req) != 0 || report_query_enum(req, "group", report_groups, &group) ||
        report_query_channel(req, &r->params[3]) || sb_api_query_id(req, "team", &r->params[4]) ||
        sb_api_query_id(req, "agent", &r->params[5]) ||
        report_query_enum(req, "priority", report_priorities, &r->params[6]) ||
        report_query_enum(req, "customer_kind", report_kinds, &r->params[7]) ||
        report_query_enum(req, "format", report_formats, &format))
        return 0;

    int has_from = sb_http_req_query(req, "from") != NULL;
    int has_to = sb_http_req_query(req, "to") != NULL;
    if (has_to) {
        if (report_query_date(req, "to", &to) != 0)
            return 0;
    } else {
        struct tm tm;
        time_t now = time(NULL);
        gmtime_r(&now, &tm);
        to = report_days(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    }
    if (has_from) {
        if (report_query_date(req, "from", &from) != 0)
            return 0;
    } else {
        from = to - 29;
    }
    if (from < report_days(1, 1, 1))
        from = report_days(1, 1, 1);
    if (to < from) {
        const char *field = has_to ? "to" : "from";
        sb_api_respond_invalid(req, field, "parameter \"to\" must not be before \"from\"");
        return 0;
    }
    if (to - from + 1 > REPORT_MAX_DAYS) {
        const char *field = has_from ? "from" : "to";
        sb_api_respond_invalid(req, field,
                               "the range from \"from\" to \"to\" must be at most %d days "
                               "(three years)",
                               REPORT_MAX_DAYS);
        return 0;
    }
    report_date(from, r->from, sizeof(r->from));
    report_date(to, r->to, sizeof(r->to));
    r->params[0] = r->from;
    r->params[1] = r->to;
    r->params[2] = def->series ? (group ? group : "day") : def->group;
    r->params[8] = def->columns;
    r->csv = report_wants_csv(req, format);
    r->params[9] = r->csv ? "true" : "false";
    r->params[10] = def->name;
    return sb_api_begin(req, data, sb_http_req_param(req, "tenant"), SB_ROLE_VIEWER, report_run, r);
}

/* ======================== routes ======================== */

int sb_api_reports_routes_add(sb_router_t *r, sb_api_t *api)
{
    char pattern[128];
    int rc = 0;

    for (size_t i = 0; i < SB_ARRAY_SIZE(report_defs); i++) {
        snprintf(pattern, sizeof(pattern), REPORTS "%s", report_defs[i].name);
        rc |= sb_router_add(r, "GET", pattern, 0, report_get, api);
    }
    return rc ? SB_EINVAL : 0;
}
