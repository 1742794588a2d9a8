-- tests/bench/reports: a year of one tenant's help-desk history, made as the
-- superuser while the server is stopped, one set-based INSERT ... SELECT per
-- table.  Every attribute is a function of the row's number (hashint8), so
-- the same settings make the same data on every run.  Plausible shapes for
-- the reports to scan, not a fixture for tests: see tests/bench/README.md.
-- Variables: tenant_id, slug, tickets, customers, agents, problems,
-- compensations.  Each step is announced by "\echo bench-step NAME" and
-- timed by \timing (the script pairs the two).
\set ON_ERROR_STOP 1
-- Without this the triggers would queue a rule event per ticket and one
-- per message for the rules engine; it also skips the foreign-key triggers,
-- so the rows below are consistent by construction (and checked at the end).
SET session_replication_role = replica;
SET synchronous_commit = off;
SET work_mem = '256MB';

-- u(i, salt): a uniform number in [0, 1) from a row number and a salt.
CREATE FUNCTION pg_temp.u(i bigint, salt integer) RETURNS float8
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (hashint8(i * 64 + salt) & 2147483647)::float8 / 2147483648 $$;
-- Raises p_msg unless p_ok.
CREATE FUNCTION pg_temp.bench_check(p_ok boolean, p_msg text) RETURNS void
    LANGUAGE plpgsql
    AS $$ BEGIN IF NOT coalesce(p_ok, false) THEN RAISE EXCEPTION '%', p_msg; END IF; END $$;
-- The year ends now; the data starts 365 days ago.
SELECT now() AS t_end \gset

\timing on

-- ======================== people ========================

\echo bench-step agents
INSERT INTO agents (email, name)
SELECT 'agent' || k || '@' || :'slug' || '.example', 'Agent ' || k || ' of ' || :'slug'
FROM generate_series(1, :agents) k ORDER BY k;
-- The ids of one INSERT into an idle database are consecutive; the steps
-- below map a row's index to its id by adding the first one.
SELECT min(id) AS agent0, max(id) - min(id) + 1 AS span, count(*) AS n FROM agents
WHERE email LIKE 'agent%@' || :'slug' || '.example' \gset
SELECT pg_temp.bench_check(:span = :agents AND :n = :agents, 'agent ids are not consecutive') \g /dev/null

\echo bench-step memberships
INSERT INTO memberships (tenant_id, agent_id, role)
SELECT :tenant_id, :agent0 + k - 1, CASE WHEN k <= 2 THEN 'supervisor' ELSE 'agent' END
FROM generate_series(1, :agents) k;

\echo bench-step teams
INSERT INTO teams (tenant_id, name)
SELECT :tenant_id, n FROM unnest(ARRAY['Billing', 'Technical', 'Sales', 'Logistics', 'Accounts'])
    WITH ORDINALITY x(n, k) ORDER BY k;
SELECT min(id) AS team0, max(id) - min(id) + 1 AS span FROM teams WHERE tenant_id = :tenant_id \gset
SELECT pg_temp.bench_check(:span = 5, 'team ids are not consecutive') \g /dev/null

-- Agent k (1-based) works in team (k - 1) % 5.
\echo bench-step team_members
INSERT INTO team_members (tenant_id, team_id, agent_id)
SELECT :tenant_id, :team0 + (k - 1) % 5, :agent0 + k - 1 FROM generate_series(1, :agents) k;

-- One in ten is internal (the company's own staff); some are gold or
-- silver.  created_at moves to the first ticket at the end.
\echo bench-step customers
INSERT INTO customers (tenant_id, name, kind, tier, language, created_at, updated_at)
SELECT :tenant_id, 'Customer ' || k,
       CASE WHEN pg_temp.u(k, 1) < 0.1 THEN 'internal' ELSE 'external' END,
       CASE WHEN pg_temp.u(k, 2) < 0.08 THEN 'gold' WHEN pg_temp.u(k, 2) < 0.3 THEN 'silver' END,
       (ARRAY['en', 'en', 'en', 'de', 'fr', 'es'])[1 + floor(pg_temp.u(k, 3) * 6)::integer],
       c, c
FROM (SELECT k, :'t_end'::timestamptz - interval '730 days' * pg_temp.u(k, 4) AS c
      FROM generate_series(1, :customers) k) x
ORDER BY k;
SELECT min(id) AS cust0, max(id) - min(id) + 1 AS span FROM customers WHERE tenant_id = :tenant_id \gset
SELECT pg_temp.bench_check(:span = :customers, 'customer ids are not consecutive') \g /dev/null

\echo bench-step customer_identities
INSERT INTO customer_identities (tenant_id, customer_id, kind, value, created_at)
SELECT :tenant_id, :cust0 + k - 1, 'email', 'c' || k || '@customers.' || :'slug' || '.example',
       :'t_end'::timestamptz - interval '730 days' * pg_temp.u(k, 4)
FROM generate_series(1, :customers) k;

\echo bench-step problems
INSERT INTO problems (tenant_id, title, status, root_cause, created_at)
SELECT :tenant_id,
       'P' || k || ': ' || (ARRAY['Login fails after password reset', 'Invoices show the wrong VAT',
           'Parcel tracking stuck', 'App crashes on start', 'Refund not received',
           'Chat widget does not load', 'Double charge on card', 'Export times out'])
           [1 + (k - 1) % 8],
       CASE WHEN pg_temp.u(k, 5) < 0.5 THEN 'resolved' WHEN pg_temp.u(k, 5) < 0.7 THEN 'known_error'
            ELSE 'open' END,
       CASE WHEN pg_temp.u(k, 5) < 0.7 THEN 'Found in the post-mortem' END,
       :'t_end'::timestamptz - interval '365 days' * pg_temp.u(k, 6)
FROM generate_series(1, :problems) k ORDER BY k;
SELECT coalesce(min(id), 0) AS problem0, count(*) AS n FROM problems WHERE tenant_id = :tenant_id \gset
SELECT pg_temp.bench_check(:n = :problems, 'problems missing') \g /dev/null

-- ======================== tickets ========================

-- Numbers grow with created_at, as they do when tickets arrive: the rows
-- lie in the heap in time order.  The rate grows over the year (density
-- proportional to f^0.15).  Status: 72% solved, 8% closed, 9% open, 6%
-- pending, 2% on hold, 3% new (no assignee, no response).  The assignee
-- is a member of the ticket's team (5% have no team: any agent).
\echo bench-step tickets
INSERT INTO tickets (tenant_id, number, subject, status, priority, channel, customer_id,
                     assignee_id, team_id, tags, created_at, updated_at, first_response_at,
                     solved_at, problem_id)
SELECT :tenant_id, i, subject, status, priority, channel, :cust0 + cust, assignee, team, tags,
       created, coalesce(solved, responded, created), responded, solved, problem
FROM (
    SELECT *,
           CASE WHEN status IN ('solved', 'closed') THEN
               least(:'t_end'::timestamptz, coalesce(responded, created)
                     + interval '1 second' * 1200 * exp(5.5 * pg_temp.u(i, 23)))
           END AS solved
    FROM (
        SELECT *,
               CASE WHEN status <> 'new' AND pg_temp.u(i, 21) < 0.95 THEN
                   least(:'t_end'::timestamptz, created + interval '1 second'
                         * CASE channel WHEN 'chat' THEN 20 WHEN 'email' THEN 900 ELSE 120 END
                         * exp(3.5 * pg_temp.u(i, 22)))
               END AS responded,
               CASE WHEN status = 'new' THEN NULL
                    WHEN team IS NULL THEN :agent0 + floor(pg_temp.u(i, 16) * :agents)::bigint
                    WHEN (:agents - (team - :team0) + 4) / 5 = 0 THEN NULL
                    ELSE :agent0 + (team - :team0)
                         + 5 * floor(pg_temp.u(i, 16) * ((:agents - (team - :team0) + 4) / 5))::bigint
               END AS assignee
        FROM (
            SELECT i,
                   :'t_end'::timestamptz - interval '365 days'
                       + interval '365 days' * power(i::float8 / :tickets, 0.87) AS created,
                   CASE WHEN pg_temp.u(i, 11) < 0.45 THEN 'email' WHEN pg_temp.u(i, 11) < 0.75 THEN 'chat'
                        WHEN pg_temp.u(i, 11) < 0.90 THEN 'whatsapp' ELSE 'telegram' END AS channel,
                   CASE WHEN pg_temp.u(i, 12) < 0.72 THEN 'solved' WHEN pg_temp.u(i, 12) < 0.80 THEN 'closed'
                        WHEN pg_temp.u(i, 12) < 0.89 THEN 'open' WHEN pg_temp.u(i, 12) < 0.95 THEN 'pending'
                        WHEN pg_temp.u(i, 12) < 0.97 THEN 'on_hold' ELSE 'new' END AS status,
                   CASE WHEN pg_temp.u(i, 13) < 0.20 THEN 'low' WHEN pg_temp.u(i, 13) < 0.75 THEN 'normal'
                        WHEN pg_temp.u(i, 13) < 0.93 THEN 'high' ELSE 'urgent' END AS priority,
                   CASE WHEN pg_temp.u(i, 15) >= 0.05
                        THEN :team0 + floor(pg_temp.u(i, 14) * 5)::bigint END AS team,
                   -- A few customers write often, most rarely.
                   floor(:customers * power(pg_temp.u(i, 17), 1.6))::bigint AS cust,
                   CASE WHEN :problems > 0 AND pg_temp.u(i, 18) < 0.02
                        THEN :problem0 + floor(:problems * power(pg_temp.u(i, 19), 2))::bigint
                   END AS problem,
                   (ARRAY['Cannot log in', 'Where is my order?', 'Invoice is wrong', 'Refund request',
                          'App crashes on start', 'Change my address', 'Cancel my subscription',
                          'Password reset does not arrive', 'Charged twice', 'Parcel arrived damaged',
                          'How do I export my data?', 'Upgrade my plan', 'Delivery is late',
                          'Question about VAT', 'Account locked', 'Feature request: dark mode'])
                       [1 + floor(pg_temp.u(i, 24) * 16)::integer] AS subject,
                   array_remove(ARRAY[
                       CASE WHEN pg_temp.u(i, 30) < 0.15 THEN 'billing' END,
                       CASE WHEN pg_temp.u(i, 31) < 0.12 THEN 'shipping' END,
                       CASE WHEN pg_temp.u(i, 32) < 0.10 THEN 'login' END,
                       CASE WHEN pg_temp.u(i, 33) < 0.08 THEN 'bug' END,
                       CASE WHEN pg_temp.u(i, 34) < 0.06 THEN 'refund' END,
                       CASE WHEN pg_temp.u(i, 35) < 0.05 THEN 'vip' END,
                       CASE WHEN pg_temp.u(i, 36) < 0.04 THEN 'feature-request' END,
                       CASE WHEN pg_temp.u(i, 37) < 0.03 THEN 'outage' END,
                       CASE WHEN pg_temp.u(i, 38) < 0.03 THEN 'cancellation' END,
                       CASE WHEN pg_temp.u(i, 39) < 0.02 THEN 'legal' END], NULL) AS tags
            FROM generate_series(1, :tickets) i
        ) a
    ) b
) c;
SELECT count(*) AS n FROM tickets WHERE tenant_id = :tenant_id \gset
SELECT pg_temp.bench_check(:n = :tickets, 'tickets missing') \g /dev/null
-- The steps below read the tickets back: give the planner their shape.
ANALYZE tickets, customers;

\echo bench-step ticket_counters
INSERT INTO ticket_counters (tenant_id, last_number) VALUES (:tenant_id, :tickets)
ON CONFLICT (tenant_id) DO UPDATE SET last_number = EXCLUDED.last_number;

-- The customer's message that opened the ticket, and the agent's first
-- reply when there was one.
\echo bench-step messages
INSERT INTO messages (tenant_id, ticket_id, direction, author_agent_id, author_customer_id,
                      body_text, channel, delivery_status, created_at)
SELECT tenant_id, id, d, CASE WHEN d = 'outbound' THEN assignee_id END,
       CASE WHEN d = 'inbound' THEN customer_id END,
       CASE WHEN d = 'inbound' THEN
           (ARRAY['Hello, it does not work since yesterday. Can you help?',
                  'I ordered last week and nothing has arrived yet.',
                  'The invoice shows an amount I did not agree to.',
                  'Please cancel my account and confirm by mail.',
                  'I get an error message when I try to sign in.',
                  'Could you tell me how to change my delivery address?'])
               [1 + floor(pg_temp.u(number, 25) * 6)::integer]
       ELSE
           (ARRAY['Thanks for reaching out, we are looking into it.',
                  'Sorry about that: I have fixed it on our side, please try again.',
                  'I have forwarded this to the right team; you will hear from us today.',
                  'Could you send us your order number, please?'])
               [1 + floor(pg_temp.u(number, 26) * 4)::integer]
       END,
       channel, CASE WHEN d = 'outbound' THEN 'delivered' END,
       CASE WHEN d = 'inbound' THEN created_at ELSE first_response_at END
FROM tickets t,
     LATERAL (VALUES ('inbound'), ('outbound')) x(d)
WHERE t.tenant_id = :tenant_id AND (d = 'inbound' OR t.first_response_at IS NOT NULL)
;

-- 90% of tickets fell under a policy (by the customer's tier, then the
-- priority); 5% of those breached.  Business seconds are a share of the
-- wall-clock time (nights and weekends do not count).
\echo bench-step ticket_sla
INSERT INTO ticket_sla (tenant_id, ticket_id, policy, state, first_response_due, resolution_due,
                        breached, first_response_secs, resolution_secs, updated_at)
SELECT tenant_id, id, policy, '{}', created_at + fr * interval '1 second',
       created_at + res * interval '1 second',
       CASE WHEN b < 0.03 THEN '{first_response}'::text[] WHEN b < 0.045 THEN '{resolution}'
            WHEN b < 0.05 THEN '{first_response,resolution}' ELSE '{}' END,
       round(extract(epoch FROM first_response_at - created_at) * 0.45)::integer,
       round(extract(epoch FROM solved_at - created_at) * 0.35)::integer,
       updated_at
FROM (
    SELECT t.*, pg_temp.u(t.number, 40) AS b,
           CASE WHEN c.tier = 'gold' THEN 'gold' WHEN t.priority = 'urgent' THEN 'urgent'
                ELSE 'standard' END AS policy,
           CASE WHEN c.tier = 'gold' THEN 3600 WHEN t.priority = 'urgent' THEN 1800 ELSE 14400 END AS fr,
           CASE WHEN c.tier = 'gold' THEN 86400 WHEN t.priority = 'urgent' THEN 28800 ELSE 259200 END AS res
    FROM tickets t JOIN customers c ON c.tenant_id = t.tenant_id AND c.id = t.customer_id
    WHERE t.tenant_id = :tenant_id AND pg_temp.u(t.number, 41) < 0.9
) x;

-- ======================== feedback, compensations ========================

-- A survey for 30% of the solved tickets; half of them answered.
\echo bench-step surveys
INSERT INTO surveys (tenant_id, ticket_id, agent_id, nonce, created_at, expires_at, answered_at)
SELECT tenant_id, id, assignee_id, decode(md5(tenant_id || ':' || id), 'hex'), solved_at,
       solved_at + interval '7 days',
       CASE WHEN pg_temp.u(number, 51) < 0.5 THEN
           least(:'t_end'::timestamptz,
                 solved_at + interval '1 second' * (300 + 172800 * power(pg_temp.u(number, 52), 3)))
       END
FROM tickets
WHERE tenant_id = :tenant_id AND solved_at IS NOT NULL AND pg_temp.u(number, 50) < 0.3;

-- Ratings skewed high: 55% 5, 25% 4, 9% 3, 5% 2, 6% 1; a comment on one in five.
\echo bench-step feedback
INSERT INTO feedback (tenant_id, survey_id, ticket_id, customer_id, agent_id, rating, comment,
                      created_at)
SELECT s.tenant_id, s.id, s.ticket_id, t.customer_id, s.agent_id,
       CASE WHEN pg_temp.u(t.number, 53) < 0.55 THEN 5 WHEN pg_temp.u(t.number, 53) < 0.80 THEN 4
            WHEN pg_temp.u(t.number, 53) < 0.89 THEN 3 WHEN pg_temp.u(t.number, 53) < 0.94 THEN 2
            ELSE 1 END,
       CASE WHEN pg_temp.u(t.number, 54) < 0.2 THEN
           (ARRAY['Quick and friendly, thanks!', 'Took too long.', 'Solved my problem.',
                  'I had to explain it three times.'])[1 + floor(pg_temp.u(t.number, 55) * 4)::integer]
       END,
       s.answered_at
FROM surveys s JOIN tickets t ON t.tenant_id = s.tenant_id AND t.id = s.ticket_id
WHERE s.tenant_id = :tenant_id AND s.answered_at IS NOT NULL;

-- Goodwill on a random share of the tickets, by the assignee (or by the
-- SLA rule when there is none); most issued, some waiting or decided.
\echo bench-step compensations
INSERT INTO compensations (tenant_id, ticket_id, customer_id, kind, amount, currency, reason,
                           issued_by_agent, issued_by_rule, status, decided_by, decided_at,
                           created_at)
SELECT tenant_id, id, customer_id,
       (ARRAY['discount', 'credit', 'refund', 'gift', 'bonus'])[1 + floor(pg_temp.u(number, 61) * 5)::integer],
       round((5 + 95 * power(pg_temp.u(number, 62), 2))::numeric, 2),
       CASE WHEN pg_temp.u(number, 64) < 0.7 THEN 'EUR' ELSE 'USD' END,
       (ARRAY['late response', 'sla breach', 'outage', 'goodwill', 'damaged item'])
           [1 + floor(pg_temp.u(number, 65) * 5)::integer],
       assignee_id, CASE WHEN assignee_id IS NULL THEN 'sla_breach' END,
       st, CASE WHEN st IN ('approved', 'rejected') THEN :agent0 END,
       CASE WHEN st IN ('approved', 'rejected') THEN least(:'t_end'::timestamptz, c + interval '1 day') END,
       c
FROM (
    SELECT t.*, least(:'t_end'::timestamptz, coalesce(t.first_response_at, t.created_at) + interval '1 hour') AS c,
           CASE WHEN pg_temp.u(t.number, 63) < 0.80 THEN 'issued'
                WHEN pg_temp.u(t.number, 63) < 0.88 THEN 'pending_approval'
                WHEN pg_temp.u(t.number, 63) < 0.97 THEN 'approved' ELSE 'rejected' END AS st
    FROM tickets t
    WHERE t.tenant_id = :tenant_id AND pg_temp.u(t.number, 60) < :compensations::float8 / :tickets
) x;

-- ======================== finishing ========================

-- A customer exists from their first ticket at the latest.
\echo bench-step customers_since
UPDATE customers c SET created_at = f.first, updated_at = f.first
FROM (SELECT customer_id, min(created_at) AS first FROM tickets
      WHERE tenant_id = :tenant_id GROUP BY customer_id) f
WHERE c.tenant_id = :tenant_id AND c.id = f.customer_id AND c.created_at > f.first;

\timing off
-- The foreign keys the skipped triggers would have checked, on what was made.
SELECT pg_temp.bench_check(NOT EXISTS (
           SELECT FROM tickets t LEFT JOIN customers c ON c.tenant_id = t.tenant_id AND c.id = t.customer_id
           LEFT JOIN memberships m ON m.tenant_id = t.tenant_id AND m.agent_id = t.assignee_id
           LEFT JOIN teams tm ON tm.tenant_id = t.tenant_id AND tm.id = t.team_id
           LEFT JOIN problems p ON p.tenant_id = t.tenant_id AND p.id = t.problem_id
           WHERE t.tenant_id = :tenant_id
             AND (c.id IS NULL OR (t.assignee_id IS NOT NULL AND m.agent_id IS NULL)
                  OR (t.team_id IS NOT NULL AND tm.id IS NULL)
                  OR (t.problem_id IS NOT NULL AND p.id IS NULL))),
       'a ticket refers to a missing customer, member, team or problem') \g /dev/null
\pset fieldsep ' '
SELECT 'bench-rows' AS tag, :tenant_id AS tenant,
       (SELECT count(*) FROM tickets WHERE tenant_id = :tenant_id) AS tickets,
       (SELECT count(*) FROM messages WHERE tenant_id = :tenant_id) AS messages,
       (SELECT count(*) FROM ticket_sla WHERE tenant_id = :tenant_id) AS sla,
       (SELECT count(*) FROM surveys WHERE tenant_id = :tenant_id) AS surveys,
       (SELECT count(*) FROM feedback WHERE tenant_id = :tenant_id) AS feedback,
       (SELECT count(*) FROM compensations WHERE tenant_id = :tenant_id) AS compensations,
       (SELECT count(*) FROM tickets WHERE tenant_id = :tenant_id AND problem_id IS NOT NULL) AS linked,
       (SELECT count(*) FROM customers WHERE tenant_id = :tenant_id) AS customers;
