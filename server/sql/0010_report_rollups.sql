-- Report rollups: the reports' numbers per tenant, day and the dimensions
-- they filter on, and the same per calendar month, kept so that a year of
-- a large tenant is read from a dozen months' rows and the days at its
-- ends instead of aggregated from a million tickets on each request.
--
-- Exact, not approximate: a report reads the rolled-up days that are clean
-- and computes every other day of its range live from the tickets, with the
-- same function that builds the rollups (sb_report_facts_live).  A day is
-- computed live when it is outside the tenant's built range (the last days,
-- which change all the time, and anything not yet built) or marked dirty:
-- triggers mark the days a change touches (the day a ticket was created,
-- the day it was solved, before and after the change, and the days of its
-- surveys and feedback) when those days may be built.  A background step
-- (sb_report_rollup, run by the workers) rebuilds dirty days and extends
-- the built range.  Writers never update a shared row: a change appends at
-- most a dirty mark, so creating tickets contends on nothing.
--
-- Days are UTC dates.  The built range ends the day before yesterday; the
-- triggers mark changes to days up to yesterday, so a transaction would
-- have to stay open for a whole day to slip a change past the step that
-- builds a day (it would then be rebuilt at the next change of that day).
-- Yesterday and today are always computed live.

-- ======================== tables ========================

-- One row per tenant, day and combination of the report filters: the
-- ticket measures of tickets created that day (created ... linked, fr,
-- rs) and solved that day (solved, solved_ended, solved_fr, solved_rs),
-- and the CSAT measures of feedback and surveys created that day.  agent_id
-- is the ticket's assignee for ticket measures and the credited agent
-- (feedback.agent_id, surveys.agent_id) for CSAT ones, as the reports'
-- agent filter reads them.  The times are business seconds when the
-- ticket has an SLA row, wall-clock seconds otherwise (see reports.c).
CREATE TABLE report_facts (
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    day           date NOT NULL,
    channel       text NOT NULL,
    team_id       bigint,
    agent_id      bigint,
    priority      text NOT NULL,
    internal      boolean NOT NULL,
    created       integer NOT NULL,
    created_ended integer NOT NULL,  -- of those, solved or closed when created (never open)
    solved        integer NOT NULL,
    solved_ended  integer NOT NULL,  -- of those, solved or closed now and solved after creation
    with_policy   integer NOT NULL,
    breached      integer NOT NULL,
    fr_breaches   integer NOT NULL,
    nr_breaches   integer NOT NULL,
    rs_breaches   integer NOT NULL,
    tagged        integer NOT NULL,
    linked        integer NOT NULL,
    fr            float8[],          -- first response times of the tickets created
    rs            float8[],          -- resolution times of the tickets created
    solved_fr     float8[],          -- the same of the tickets solved
    solved_rs     float8[],
    ratings       integer NOT NULL,
    rating_sum    integer NOT NULL,
    satisfied     integer NOT NULL,  -- ratings of 4 and 5
    offered       integer NOT NULL,  -- surveys created
    answered      integer NOT NULL   -- of those, answered
);
CREATE INDEX report_facts_day ON report_facts (tenant_id, day);

-- Tags and problems of the tickets created on a day, per combination of
-- the filters: exactly one of tag and problem_id is set.
CREATE TABLE report_tag_facts (
    tenant_id  bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    day        date NOT NULL,
    channel    text NOT NULL,
    team_id    bigint,
    agent_id   bigint,
    priority   text NOT NULL,
    internal   boolean NOT NULL,
    tag        text,
    problem_id bigint,
    tickets    integer NOT NULL
);
CREATE INDEX report_tag_facts_day ON report_tag_facts (tenant_id, day);

-- The same rows summed per calendar month (day is the month's first day),
-- for ranges that cover whole months: a year is then a dozen months and
-- the days at its ends.  A month is in report_months once its rows are
-- complete: every day of it built; a dirty day keeps the month from being
-- read until the step has rebuilt both.
CREATE TABLE report_month_facts (LIKE report_facts);
CREATE INDEX report_month_facts_day ON report_month_facts (tenant_id, day);
CREATE TABLE report_month_tag_facts (LIKE report_tag_facts);
CREATE INDEX report_month_tag_facts_day ON report_month_tag_facts (tenant_id, day);
CREATE TABLE report_months (
    tenant_id bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    month     date NOT NULL,
    PRIMARY KEY (tenant_id, month)
);

-- The days of a tenant that are built: from built_from to built_through,
-- both included (empty when built_from is after built_through).
CREATE TABLE report_rollup_state (
    tenant_id     bigint PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    built_from    date NOT NULL,
    built_through date NOT NULL
);

-- Days whose rollup a change made stale.  Not unique: a writer appends
-- without waiting on another's mark (duplicates are harmless, and the
-- step removes them all).
CREATE TABLE report_dirty (
    tenant_id bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    day       date NOT NULL
);
CREATE INDEX report_dirty_day ON report_dirty (tenant_id, day);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['report_facts', 'report_tag_facts', 'report_month_facts',
                             'report_month_tag_facts', 'report_months', 'report_rollup_state',
                             'report_dirty']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())', t);
        EXECUTE format('GRANT SELECT ON %I TO switchboard_app', t);
    END LOOP;
END
$$;

-- ======================== live ========================

-- The UTC day of a time.
CREATE FUNCTION sb_report_day(at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT (at AT TIME ZONE 'UTC')::date $$;

-- Each of the days once, with the instants it starts and ends.
CREATE FUNCTION sb_report_day_ranges(p_days date[])
    RETURNS TABLE (day date, lo timestamptz, hi timestamptz)
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT x.day, x.day::timestamp AT TIME ZONE 'UTC', (x.day + 1)::timestamp AT TIME ZONE 'UTC'
    FROM (SELECT DISTINCT unnest(p_days) AS day) x
    $$;

-- A ticket's SLA row (sla is its ticket id, NULL without one) and its
-- times to first response and to resolution: business seconds from the SLA
-- row (NULL until met), wall-clock seconds without one (a time stamped
-- before the ticket counts 0).  The SLA row is one index probe (LIMIT 1,
-- on a primary key, keeps the planner from turning the probes of many
-- tickets back into a join that hashes every SLA row of the tenant).
CREATE FUNCTION sb_report_times(p_tenant bigint, p_ticket bigint, p_created timestamptz,
                                p_first_response timestamptz, p_solved timestamptz)
    RETURNS TABLE (sla bigint, breached text[], fr float8, rs float8)
    LANGUAGE sql STABLE
    AS $$
    SELECT s.ticket_id, s.breached,
           CASE WHEN s.ticket_id IS NULL
                THEN extract(epoch FROM p_first_response
                             - least(p_created, p_first_response))::float8
                ELSE s.first_response_secs::float8 END,
           CASE WHEN s.ticket_id IS NULL
                THEN extract(epoch FROM p_solved - least(p_created, p_solved))::float8
                ELSE s.resolution_secs::float8 END
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (SELECT s.* FROM ticket_sla s WHERE s.tenant_id = p_tenant
                       AND s.ticket_id = p_ticket LIMIT 1) s ON true
    $$;

-- A tenant's rollup rows of the given days, computed from the tickets, SLA
-- rows, surveys and feedback as they are now.  Runs as the caller: the
-- reports call it under row-level security (p_tenant is then the caller's
-- tenant), the step as the owner.  Each day is its own index range, and
-- each ticket's SLA row (each survey's ticket) one index probe: the planner
-- cannot know how few days it is given, and would otherwise hash every SLA
-- row (every ticket) of the tenant for a few thousand tickets.
CREATE FUNCTION sb_report_facts_live(p_tenant bigint, p_days date[]) RETURNS SETOF report_facts
    LANGUAGE sql STABLE
    AS $$
    WITH d AS MATERIALIZED (SELECT * FROM sb_report_day_ranges(p_days)),
    ic AS MATERIALIZED (SELECT c.id FROM customers c WHERE c.tenant_id = p_tenant
                        AND c.kind = 'internal'),
    tc AS (SELECT d.day, t.*, x.sla, x.breached AS sla_breached, x.fr, x.rs
           FROM d JOIN tickets t ON t.tenant_id = p_tenant
                AND t.created_at >= d.lo AND t.created_at < d.hi
           CROSS JOIN LATERAL sb_report_times(p_tenant, t.id, t.created_at,
                                              t.first_response_at, t.solved_at) x),
    ts AS (SELECT d.day, t.channel, t.team_id, t.assignee_id, t.priority, t.customer_id,
                  t.status, t.created_at, t.solved_at, x.fr, x.rs
           FROM d JOIN tickets t ON t.tenant_id = p_tenant
                AND t.solved_at >= d.lo AND t.solved_at < d.hi
           CROSS JOIN LATERAL sb_report_times(p_tenant, t.id, t.created_at,
                                              t.first_response_at, t.solved_at) x),
    fd AS MATERIALIZED (SELECT d.day, f.ticket_id, f.agent_id, f.rating FROM d
                        JOIN feedback f ON f.tenant_id = p_tenant
                        AND f.created_at >= d.lo AND f.created_at < d.hi),
    vd AS MATERIALIZED (SELECT d.day, v.ticket_id, v.agent_id, v.answered_at FROM d
                        JOIN surveys v ON v.tenant_id = p_tenant
                        AND v.created_at >= d.lo AND v.created_at < d.hi),
    x AS (
        SELECT tc.day, tc.channel, tc.team_id, tc.assignee_id AS agent_id, tc.priority,
               tc.customer_id, 1 AS created,
               (tc.status IN ('solved', 'closed')
                AND (tc.solved_at IS NULL OR tc.solved_at <= tc.created_at))::int AS created_ended,
               0 AS solved, 0 AS solved_ended,
               (tc.sla IS NOT NULL)::int AS with_policy,
               coalesce(cardinality(tc.sla_breached) > 0, false)::int AS breached,
               coalesce('first_response' = ANY (tc.sla_breached), false)::int AS fr_b,
               coalesce('next_response' = ANY (tc.sla_breached), false)::int AS nr_b,
               coalesce('resolution' = ANY (tc.sla_breached), false)::int AS rs_b,
               (cardinality(tc.tags) > 0)::int AS tagged, (tc.problem_id IS NOT NULL)::int AS linked,
               tc.fr, tc.rs, NULL::float8 AS sfr, NULL::float8 AS srs,
               NULL::int AS rating, 0 AS offered, 0 AS answered
        FROM tc
        UNION ALL
        SELECT ts.day, ts.channel, ts.team_id, ts.assignee_id, ts.priority, ts.customer_id, 0, 0,
               1, (ts.status IN ('solved', 'closed') AND ts.solved_at > ts.created_at)::int,
               0, 0, 0, 0, 0, 0, 0, NULL, NULL, ts.fr, ts.rs, NULL, 0, 0
        FROM ts
        UNION ALL
        SELECT f.day, t.channel, t.team_id, f.agent_id, t.priority, t.customer_id, 0, 0, 0, 0,
               0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, f.rating, 0, 0
        FROM fd f CROSS JOIN LATERAL (SELECT t.* FROM tickets t WHERE t.tenant_id = p_tenant
                                      AND t.id = f.ticket_id LIMIT 1) t
        UNION ALL
        SELECT v.day, t.channel, t.team_id, v.agent_id, t.priority, t.customer_id, 0, 0, 0, 0,
               0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 1,
               (v.answered_at IS NOT NULL)::int
        FROM vd v CROSS JOIN LATERAL (SELECT t.* FROM tickets t WHERE t.tenant_id = p_tenant
                                      AND t.id = v.ticket_id LIMIT 1) t)
    SELECT p_tenant, x.day, x.channel, x.team_id, x.agent_id, x.priority,
           x.customer_id IN (SELECT ic.id FROM ic) AS internal,
           sum(x.created)::int, sum(x.created_ended)::int, sum(x.solved)::int,
           sum(x.solved_ended)::int, sum(x.with_policy)::int, sum(x.breached)::int,
           sum(x.fr_b)::int, sum(x.nr_b)::int, sum(x.rs_b)::int, sum(x.tagged)::int,
           sum(x.linked)::int,
           array_agg(x.fr) FILTER (WHERE x.fr IS NOT NULL),
           array_agg(x.rs) FILTER (WHERE x.rs IS NOT NULL),
           array_agg(x.sfr) FILTER (WHERE x.sfr IS NOT NULL),
           array_agg(x.srs) FILTER (WHERE x.srs IS NOT NULL),
           count(x.rating)::int, coalesce(sum(x.rating), 0)::int,
           count(*) FILTER (WHERE x.rating >= 4)::int, sum(x.offered)::int, sum(x.answered)::int
    FROM x
    GROUP BY x.day, x.channel, x.team_id, x.agent_id, x.priority,
             x.customer_id IN (SELECT ic.id FROM ic)
    $$;

-- The same for tags and problems.
CREATE FUNCTION sb_report_tag_facts_live(p_tenant bigint, p_days date[])
    RETURNS SETOF report_tag_facts
    LANGUAGE sql STABLE
    AS $$
    WITH d AS MATERIALIZED (SELECT * FROM sb_report_day_ranges(p_days)),
    ic AS MATERIALIZED (SELECT c.id FROM customers c WHERE c.tenant_id = p_tenant
                        AND c.kind = 'internal'),
    t AS (SELECT d.day, t.channel, t.team_id, t.assignee_id, t.priority,
                 t.customer_id IN (SELECT ic.id FROM ic) AS internal, t.tags, t.problem_id
          FROM d JOIN tickets t ON t.tenant_id = p_tenant
               AND t.created_at >= d.lo AND t.created_at < d.hi
          WHERE cardinality(t.tags) > 0 OR t.problem_id IS NOT NULL)
    SELECT p_tenant, t.day, t.channel, t.team_id, t.assignee_id, t.priority, t.internal,
           g.tag, NULL::bigint, count(*)::int
    FROM t CROSS JOIN LATERAL (SELECT DISTINCT u.tag FROM unnest(t.tags) u(tag)) g
    GROUP BY t.day, t.channel, t.team_id, t.assignee_id, t.priority, t.internal, g.tag
    UNION ALL
    SELECT p_tenant, t.day, t.channel, t.team_id, t.assignee_id, t.priority, t.internal,
           NULL, t.problem_id, count(*)::int
    FROM t WHERE t.problem_id IS NOT NULL
    GROUP BY t.day, t.channel, t.team_id, t.assignee_id, t.priority, t.internal, t.problem_id
    $$;

-- The caller's tenant's days from p_from to p_to that are not read from
-- the rollups: outside the built range, or dirty.
CREATE FUNCTION sb_report_live_days(p_from date, p_to date) RETURNS date[]
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(array_agg(g.day ORDER BY g.day), '{}')
    FROM (SELECT g::date AS day FROM generate_series(p_from, p_to, interval '1 day') g) g
    LEFT JOIN report_rollup_state s ON s.tenant_id = sb_tenant()
    WHERE s.tenant_id IS NULL OR g.day < s.built_from OR g.day > s.built_through
       OR EXISTS (SELECT 1 FROM report_dirty x WHERE x.tenant_id = sb_tenant() AND x.day = g.day)
    $$;

-- The caller's tenant's months that lie wholly from p_from to p_to and can
-- be read from the monthly rows: complete, and no day of theirs dirty.
CREATE FUNCTION sb_report_clean_months(p_from date, p_to date) RETURNS date[]
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(array_agg(m.month ORDER BY m.month), '{}') FROM report_months m
    JOIN report_rollup_state s ON s.tenant_id = m.tenant_id
    WHERE m.tenant_id = sb_tenant() AND m.month >= p_from
      AND (m.month + interval '1 month')::date <= p_to + 1
      AND m.month >= s.built_from AND (m.month + interval '1 month')::date <= s.built_through + 1
      AND NOT EXISTS (SELECT 1 FROM report_dirty x WHERE x.tenant_id = sb_tenant()
                      AND x.day >= m.month AND x.day < (m.month + interval '1 month')::date)
    $$;

-- The days from p_from to p_to read from the daily rows: neither live nor
-- in a month read whole (an index condition, where a filter would read
-- every day of the months only to drop it).
CREATE FUNCTION sb_report_daily_days(p_from date, p_to date, p_live date[], p_months date[])
    RETURNS date[]
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT coalesce(array_agg(g::date ORDER BY g), '{}')
    FROM generate_series(p_from, p_to, interval '1 day') g
    WHERE NOT g::date = ANY (p_live)
      AND NOT date_trunc('month', g)::date = ANY (p_months)
    $$;

-- Where the caller's tenant's days from p_from to p_to are read from:
-- live (computed), months (monthly rows, when p_months and whole months are
-- clean) and daily (the daily rows of the rest).
CREATE FUNCTION sb_report_sources(p_from date, p_to date, p_months boolean,
                                  OUT live date[], OUT months date[], OUT daily date[])
    LANGUAGE sql STABLE
    AS $$
    SELECT l.days, m.ms, sb_report_daily_days(p_from, p_to, l.days, m.ms)
    FROM (SELECT sb_report_live_days(p_from, p_to) AS days) l,
         (SELECT CASE WHEN p_months THEN sb_report_clean_months(p_from, p_to)
                      ELSE '{}' END AS ms) m
    $$;

-- What the reports read: the caller's tenant's rows of the days from
-- p_from to p_to, rolled up where clean, live elsewhere; with p_months, a
-- month wholly in the range comes as one row per combination (day is then
-- the month's first day: for reports whose periods are months or longer).
-- One snapshot, so each day is read from exactly one place.
CREATE FUNCTION sb_report_facts(p_from date, p_to date, p_months boolean)
    RETURNS SETOF report_facts
    LANGUAGE sql STABLE
    AS $$
    WITH src AS MATERIALIZED (SELECT * FROM sb_report_sources(p_from, p_to, p_months))
    SELECT f.* FROM report_month_facts f, src
    WHERE f.tenant_id = sb_tenant() AND f.day = ANY (src.months)
    UNION ALL
    SELECT f.* FROM report_facts f, src WHERE f.tenant_id = sb_tenant() AND f.day = ANY (src.daily)
    UNION ALL
    SELECT l.* FROM src, sb_report_facts_live(sb_tenant(), src.live) l
    $$;

-- The same for tags and problems (whose report has no periods).
CREATE FUNCTION sb_report_tag_facts(p_from date, p_to date) RETURNS SETOF report_tag_facts
    LANGUAGE sql STABLE
    AS $$
    WITH src AS MATERIALIZED (SELECT * FROM sb_report_sources(p_from, p_to, true))
    SELECT f.* FROM report_month_tag_facts f, src
    WHERE f.tenant_id = sb_tenant() AND f.day = ANY (src.months)
    UNION ALL
    SELECT f.* FROM report_tag_facts f, src
    WHERE f.tenant_id = sb_tenant() AND f.day = ANY (src.daily)
    UNION ALL
    SELECT l.* FROM src, sb_report_tag_facts_live(sb_tenant(), src.live) l
    $$;

-- The caller's tenant's first day with a ticket (NULL without tickets).
CREATE FUNCTION sb_report_first_day() RETURNS date
    LANGUAGE sql STABLE
    AS $$
    SELECT sb_report_day(min(t.created_at)) FROM tickets t WHERE t.tenant_id = sb_tenant()
    $$;

GRANT EXECUTE ON FUNCTION sb_report_day(timestamptz), sb_report_day_ranges(date[]),
    sb_report_times(bigint, bigint, timestamptz, timestamptz, timestamptz),
    sb_report_facts_live(bigint, date[]),
    sb_report_tag_facts_live(bigint, date[]), sb_report_live_days(date, date),
    sb_report_clean_months(date, date), sb_report_daily_days(date, date, date[], date[]),
    sb_report_sources(date, date, boolean), sb_report_facts(date, date, boolean),
    sb_report_tag_facts(date, date), sb_report_first_day()
    TO switchboard_app;

-- ======================== dirty marks ========================

-- The functions the triggers run are SECURITY DEFINER (writers of every
-- role mark, whatever row-level security lets them see) but, unlike the
-- others, set no search_path: a SET clause costs every call a save and
-- restore of the configuration, which made each marked row ten times
-- slower (a bulk load of a million tickets took minutes longer).  They
-- name every table and function with its schema instead, and only the
-- server's own role and superusers run SQL here.

-- Marks the days of the given times that may be built (up to yesterday),
-- unless already marked.
CREATE FUNCTION sb_report_touch(p_tenant bigint, p_at timestamptz[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    AS $$
DECLARE
    last date := pg_catalog.timezone('UTC', pg_catalog.now())::date - 1;
    a timestamptz;
    d date;
BEGIN
    FOREACH a IN ARRAY p_at LOOP
        CONTINUE WHEN a IS NULL;
        d := pg_catalog.timezone('UTC', a)::date;
        CONTINUE WHEN d > last;
        PERFORM FROM public.report_dirty x WHERE x.tenant_id = p_tenant AND x.day = d;
        IF NOT FOUND THEN
            INSERT INTO public.report_dirty (tenant_id, day) VALUES (p_tenant, d);
        END IF;
    END LOOP;
END
$$;

-- A ticket's days: created and solved, before and after; and, when what
-- its CSAT rows are filtered by changed, the days of its surveys and
-- feedback.
CREATE FUNCTION sb_report_tickets_touch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    o public.tickets;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM public.sb_report_touch(NEW.tenant_id, ARRAY[NEW.created_at, NEW.solved_at]);
        RETURN NULL;
    END IF;
    o := OLD;
    IF TG_OP = 'DELETE' THEN
        PERFORM public.sb_report_touch(o.tenant_id, ARRAY[o.created_at, o.solved_at]);
    ELSE
        PERFORM public.sb_report_touch(NEW.tenant_id,
                                       ARRAY[o.created_at, o.solved_at, NEW.created_at,
                                             NEW.solved_at]);
    END IF;
    IF TG_OP = 'DELETE' OR o.channel IS DISTINCT FROM NEW.channel
       OR o.team_id IS DISTINCT FROM NEW.team_id OR o.priority IS DISTINCT FROM NEW.priority
       OR o.customer_id IS DISTINCT FROM NEW.customer_id THEN
        PERFORM public.sb_report_touch(o.tenant_id, ARRAY(
            SELECT v.created_at FROM public.surveys v WHERE v.tenant_id = o.tenant_id
                AND v.ticket_id = o.id
            UNION ALL SELECT f.created_at FROM public.feedback f WHERE f.tenant_id = o.tenant_id
                AND f.ticket_id = o.id));
    END IF;
    RETURN NULL;
END
$$;

-- Only changes to what the rollups hold, on tickets of days that may be
-- built, call the function: creating a ticket now, or working on one of
-- today's, never does.
CREATE TRIGGER tickets_report_insert AFTER INSERT ON tickets
    FOR EACH ROW WHEN (NEW.created_at < date_trunc('day', now(), 'UTC')
        OR NEW.solved_at < date_trunc('day', now(), 'UTC'))
    EXECUTE FUNCTION sb_report_tickets_touch();
CREATE TRIGGER tickets_report_update AFTER UPDATE ON tickets
    FOR EACH ROW WHEN ((OLD.created_at < date_trunc('day', now(), 'UTC')
        OR NEW.created_at < date_trunc('day', now(), 'UTC')
        OR OLD.solved_at < date_trunc('day', now(), 'UTC')
        OR NEW.solved_at < date_trunc('day', now(), 'UTC'))
        AND (OLD.created_at IS DISTINCT FROM NEW.created_at
        OR OLD.solved_at IS DISTINCT FROM NEW.solved_at OR OLD.status IS DISTINCT FROM NEW.status
        OR OLD.first_response_at IS DISTINCT FROM NEW.first_response_at
        OR OLD.channel IS DISTINCT FROM NEW.channel OR OLD.team_id IS DISTINCT FROM NEW.team_id
        OR OLD.assignee_id IS DISTINCT FROM NEW.assignee_id
        OR OLD.priority IS DISTINCT FROM NEW.priority
        OR OLD.customer_id IS DISTINCT FROM NEW.customer_id OR OLD.tags IS DISTINCT FROM NEW.tags
        OR OLD.problem_id IS DISTINCT FROM NEW.problem_id))
    EXECUTE FUNCTION sb_report_tickets_touch();
CREATE TRIGGER tickets_report_delete AFTER DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION sb_report_tickets_touch();

-- An SLA row's ticket's days.  Most SLA rows are made for new tickets:
-- those cost a look at the ticket and nothing more.
CREATE FUNCTION sb_report_sla_touch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    s public.ticket_sla;
    created timestamptz;
    solved timestamptz;
BEGIN
    s := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    SELECT t.created_at, t.solved_at INTO created, solved FROM public.tickets t
    WHERE t.tenant_id = s.tenant_id AND t.id = s.ticket_id;
    IF created < pg_catalog.date_trunc('day', pg_catalog.now(), 'UTC')
       OR solved < pg_catalog.date_trunc('day', pg_catalog.now(), 'UTC') THEN
        PERFORM public.sb_report_touch(s.tenant_id, ARRAY[created, solved]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER ticket_sla_report_change AFTER INSERT OR DELETE ON ticket_sla
    FOR EACH ROW EXECUTE FUNCTION sb_report_sla_touch();
CREATE TRIGGER ticket_sla_report_update AFTER UPDATE ON ticket_sla
    FOR EACH ROW WHEN (OLD.breached IS DISTINCT FROM NEW.breached
        OR OLD.first_response_secs IS DISTINCT FROM NEW.first_response_secs
        OR OLD.resolution_secs IS DISTINCT FROM NEW.resolution_secs)
    EXECUTE FUNCTION sb_report_sla_touch();

-- A survey's or feedback's own day (created_at).
CREATE FUNCTION sb_report_csat_touch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM public.sb_report_touch(OLD.tenant_id, ARRAY[OLD.created_at]);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM public.sb_report_touch(NEW.tenant_id, ARRAY[NEW.created_at]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER surveys_report_change AFTER INSERT OR UPDATE OR DELETE ON surveys
    FOR EACH ROW EXECUTE FUNCTION sb_report_csat_touch();
CREATE TRIGGER feedback_report_change AFTER INSERT OR UPDATE OR DELETE ON feedback
    FOR EACH ROW EXECUTE FUNCTION sb_report_csat_touch();

-- A customer who becomes internal or external: the days of its tickets.
CREATE FUNCTION sb_report_customer_touch() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
BEGIN
    PERFORM public.sb_report_touch(NEW.tenant_id, ARRAY(
        SELECT a FROM public.tickets t, unnest(ARRAY[t.created_at, t.solved_at]) a
        WHERE t.tenant_id = NEW.tenant_id AND t.customer_id = NEW.id
        UNION ALL SELECT f.created_at FROM public.feedback f
        JOIN public.tickets t ON t.tenant_id = f.tenant_id AND t.id = f.ticket_id
        WHERE t.tenant_id = NEW.tenant_id AND t.customer_id = NEW.id
        UNION ALL SELECT v.created_at FROM public.surveys v
        JOIN public.tickets t ON t.tenant_id = v.tenant_id AND t.id = v.ticket_id
        WHERE t.tenant_id = NEW.tenant_id AND t.customer_id = NEW.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER customers_report_kind AFTER UPDATE ON customers
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind)
    EXECUTE FUNCTION sb_report_customer_touch();

-- The marks hold whatever loaded the rows, bulk loads in replica mode
-- included: a rollup must never silently disagree with the tickets.
ALTER TABLE tickets ENABLE ALWAYS TRIGGER tickets_report_insert;
ALTER TABLE tickets ENABLE ALWAYS TRIGGER tickets_report_update;
ALTER TABLE tickets ENABLE ALWAYS TRIGGER tickets_report_delete;
ALTER TABLE ticket_sla ENABLE ALWAYS TRIGGER ticket_sla_report_change;
ALTER TABLE ticket_sla ENABLE ALWAYS TRIGGER ticket_sla_report_update;
ALTER TABLE surveys ENABLE ALWAYS TRIGGER surveys_report_change;
ALTER TABLE feedback ENABLE ALWAYS TRIGGER feedback_report_change;
ALTER TABLE customers ENABLE ALWAYS TRIGGER customers_report_kind;

-- ======================== the step ========================

-- Concatenates arrays (the monthly rows' times).
CREATE AGGREGATE sb_array_cat_agg(anycompatiblearray) (
    SFUNC = array_cat,
    STYPE = anycompatiblearray
);

-- Rebuilds one tenant's days from what is there now, then the months they
-- fall in: a month whose days are all built gets its rows (the sums of its
-- days'), the others none.
CREATE FUNCTION sb_report_rebuild(p_tenant bigint, p_days date[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    months date[] := ARRAY(SELECT DISTINCT date_trunc('month', d::timestamp)::date
                           FROM unnest(p_days) d);
BEGIN
    DELETE FROM report_facts WHERE tenant_id = p_tenant AND day = ANY (p_days);
    DELETE FROM report_tag_facts WHERE tenant_id = p_tenant AND day = ANY (p_days);
    INSERT INTO report_facts SELECT * FROM sb_report_facts_live(p_tenant, p_days);
    INSERT INTO report_tag_facts SELECT * FROM sb_report_tag_facts_live(p_tenant, p_days);
    DELETE FROM report_month_facts WHERE tenant_id = p_tenant AND day = ANY (months);
    DELETE FROM report_month_tag_facts WHERE tenant_id = p_tenant AND day = ANY (months);
    DELETE FROM report_months WHERE tenant_id = p_tenant AND month = ANY (months);
    INSERT INTO report_months
    SELECT p_tenant, m FROM unnest(months) m
    JOIN report_rollup_state s ON s.tenant_id = p_tenant
    WHERE m >= s.built_from AND (m + interval '1 month')::date <= s.built_through + 1;
    INSERT INTO report_month_facts
    SELECT f.tenant_id, m.month, f.channel, f.team_id, f.agent_id, f.priority, f.internal,
           sum(f.created), sum(f.created_ended), sum(f.solved), sum(f.solved_ended),
           sum(f.with_policy), sum(f.breached), sum(f.fr_breaches), sum(f.nr_breaches),
           sum(f.rs_breaches), sum(f.tagged), sum(f.linked), sb_array_cat_agg(f.fr),
           sb_array_cat_agg(f.rs), sb_array_cat_agg(f.solved_fr), sb_array_cat_agg(f.solved_rs),
           sum(f.ratings), sum(f.rating_sum), sum(f.satisfied), sum(f.offered), sum(f.answered)
    FROM report_months m JOIN report_facts f ON f.tenant_id = p_tenant
        AND f.day >= m.month AND f.day < (m.month + interval '1 month')::date
    WHERE m.tenant_id = p_tenant AND m.month = ANY (months)
    GROUP BY f.tenant_id, m.month, f.channel, f.team_id, f.agent_id, f.priority, f.internal;
    INSERT INTO report_month_tag_facts
    SELECT f.tenant_id, m.month, f.channel, f.team_id, f.agent_id, f.priority, f.internal,
           f.tag, f.problem_id, sum(f.tickets)
    FROM report_months m JOIN report_tag_facts f ON f.tenant_id = p_tenant
        AND f.day >= m.month AND f.day < (m.month + interval '1 month')::date
    WHERE m.tenant_id = p_tenant AND m.month = ANY (months)
    GROUP BY f.tenant_id, m.month, f.channel, f.team_id, f.agent_id, f.priority, f.internal,
             f.tag, f.problem_id;
END
$$;

-- One step of upkeep, at most p_days days' worth of work: the dirty days
-- of the built ranges first, then the built ranges extended towards the
-- day before yesterday and back to each tenant's first ticket.  Returns the number of
-- days built (0: nothing left to do, or another session holds the step).
-- Idempotent and safe to run from every worker: one runs at a time.
CREATE FUNCTION sb_report_rollup(p_days integer) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    cutoff date := sb_report_day(now()) - 2;
    budget integer := p_days;
    r record;
    days date[];
    first date;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('switchboard report rollup')) THEN
        RETURN 0;
    END IF;
    -- dirty days: those in the built range are rebuilt, the others dropped
    -- (they are built from the data as it is when their turn comes)
    FOR r IN
        SELECT x.tenant_id, array_agg(DISTINCT x.day) AS days,
               s.built_from, s.built_through
        FROM (SELECT DISTINCT d.tenant_id, d.day FROM report_dirty d
              ORDER BY d.tenant_id, d.day LIMIT p_days) x
        LEFT JOIN report_rollup_state s ON s.tenant_id = x.tenant_id
        GROUP BY x.tenant_id, s.built_from, s.built_through
    LOOP
        DELETE FROM report_dirty d WHERE d.tenant_id = r.tenant_id AND d.day = ANY (r.days);
        days := ARRAY(SELECT u FROM unnest(r.days) u
                      WHERE u BETWEEN r.built_from AND r.built_through);
        IF cardinality(days) > 0 THEN
            PERFORM sb_report_rebuild(r.tenant_id, days);
            budget := budget - cardinality(days);
        END IF;
    END LOOP;
    IF budget < p_days THEN
        RETURN p_days - budget;
    END IF;
    -- the built ranges, newest days first
    FOR r IN
        SELECT t.id, s.built_from, s.built_through FROM tenants t
        LEFT JOIN report_rollup_state s ON s.tenant_id = t.id ORDER BY t.id
    LOOP
        EXIT WHEN budget <= 0;
        SELECT sb_report_day(min(k.created_at)) INTO first FROM tickets k
        WHERE k.tenant_id = r.id;
        CONTINUE WHEN first IS NULL OR first > cutoff;
        -- from the first of its month, so that the month can be complete
        first := date_trunc('month', first::timestamp)::date;
        IF r.built_from IS NULL THEN
            -- a new range: the last day before the cutoff, then outwards
            r.built_from := cutoff + 1;
            r.built_through := cutoff;
            INSERT INTO report_rollup_state VALUES (r.id, cutoff + 1, cutoff);
        END IF;
        IF r.built_through < cutoff THEN
            days := ARRAY(SELECT g::date FROM generate_series(
                greatest(r.built_through + 1, first), least(cutoff, r.built_through + budget),
                interval '1 day') g);
            UPDATE report_rollup_state SET built_through = least(cutoff, r.built_through + budget)
            WHERE tenant_id = r.id;
            PERFORM sb_report_rebuild(r.id, days);
            budget := budget - greatest(cardinality(days), 1);
        ELSIF r.built_from > first THEN
            days := ARRAY(SELECT g::date FROM generate_series(
                greatest(first, r.built_from - budget), r.built_from - 1, interval '1 day') g);
            UPDATE report_rollup_state SET built_from = greatest(first, r.built_from - budget)
            WHERE tenant_id = r.id;
            PERFORM sb_report_rebuild(r.id, days);
            budget := budget - cardinality(days);
        END IF;
    END LOOP;
    RETURN p_days - budget;
END
$$;
GRANT EXECUTE ON FUNCTION sb_report_rollup(integer) TO switchboard_app;

-- ======================== indexes ========================

-- The retention report asks, customer by customer, whether it wrote in a
-- range: its tickets by time, with the filters' columns.
DROP INDEX tickets_customer;
CREATE INDEX tickets_customer ON tickets (tenant_id, customer_id, created_at)
    INCLUDE (channel, team_id, assignee_id, priority);
-- The tickets whose SLA was breached (few), for the retention report.
CREATE INDEX ticket_sla_breached ON ticket_sla (tenant_id, ticket_id)
    WHERE cardinality(breached) > 0;

-- ======================== CSV ========================

-- A JSON value as a CSV field's text: a string that a spreadsheet would
-- take for a formula (it starts with =, +, -, @, a tab or a carriage
-- return) gets a leading apostrophe, so opening a report never runs what a
-- customer or an agent typed (a tag, a reason, a name).  Numbers, which
-- may be negative, are left as they are.
CREATE FUNCTION sb_report_csv_value(v json) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN json_typeof(v) = 'string' AND (v #>> '{}') ~ E'^[=+\\-@\t\r]'
                THEN '''' || (v #>> '{}') ELSE v #>> '{}' END
    $$;

CREATE OR REPLACE FUNCTION sb_report_csv(p_rows json, p_columns text[]) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT (SELECT string_agg(sb_report_csv_field(c), ',' ORDER BY i)
            FROM unnest(p_columns) WITH ORDINALITY h(c, i)) || E'\r\n'
        || coalesce((SELECT string_agg(
                        (SELECT string_agg(sb_report_csv_field(sb_report_csv_value(r.v -> c)), ','
                                           ORDER BY i)
                         FROM unnest(p_columns) WITH ORDINALITY h(c, i)) || E'\r\n', ''
                        ORDER BY r.n)
                     FROM json_array_elements(coalesce(p_rows, '[]')) WITH ORDINALITY r(v, n)),
                    '')
    $$;
GRANT EXECUTE ON FUNCTION sb_report_csv_value(json) TO switchboard_app;
