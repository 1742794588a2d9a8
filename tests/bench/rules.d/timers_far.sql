-- tests/bench/rules: the timers that must not fire, made while the server
-- is stopped: :timers tenant-level timers (ticket_id NULL) named
-- bench.n<i>, due 30 days ahead (spread over a day).  Variables:
-- tenant_id, timers.
\set ON_ERROR_STOP 1
TRUNCATE timers;
INSERT INTO timers (tenant_id, name, due_at)
SELECT :tenant_id, 'bench.n' || i, now() + interval '30 days' + (i % 86400) * interval '1 second'
FROM generate_series(1, :timers) i;
VACUUM ANALYZE timers;
