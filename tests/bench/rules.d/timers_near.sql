-- tests/bench/rules: the timers that must fire, made just before the
-- server starts: :near named bench.soon<i>, due evenly from :lead s to
-- :lead + :spread s from now, and :overdue named bench.overdue<i>, due
-- 1..:overdue minutes ago (they came due while the server was down).
-- The fired event carries the exact due time in data.due_at.
-- Variables: tenant_id, near, lead, spread, overdue.
\set ON_ERROR_STOP 1
BEGIN;
WITH b AS (SELECT clock_timestamp() AS t)
INSERT INTO timers (tenant_id, name, due_at, data)
SELECT :tenant_id, 'bench.soon' || i, d, jsonb_build_object('due_exact', extract(epoch FROM d))
FROM (SELECT i, b.t + make_interval(secs => :lead + (i - 1) * :spread::float8 / :near) AS d
      FROM generate_series(1, :near) i, b) x;
WITH b AS (SELECT clock_timestamp() AS t)
INSERT INTO timers (tenant_id, name, due_at, data)
SELECT :tenant_id, 'bench.overdue' || i, d, jsonb_build_object('due_exact', extract(epoch FROM d))
FROM (SELECT i, b.t - make_interval(mins => i) AS d FROM generate_series(1, :overdue) i, b) x;
COMMIT;
