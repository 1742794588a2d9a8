-- tests/bench/rules: queues one set of the held rule events ("a" or "b")
-- in one transaction, oldest first, and wakes the workers as the
-- triggers would.  Prints "bench-t0 EPOCH", taken just before the commit
-- that makes them visible.  Variable: set.
\set ON_ERROR_STOP 1
BEGIN;
INSERT INTO rule_events (tenant_id, type, ticket_id, message_id, changes, data, depth)
SELECT tenant_id, type, ticket_id, message_id, changes, data, depth FROM bench_held
WHERE set = :'set' ORDER BY id;
SELECT pg_notify('switchboard_rule_events', '') \g /dev/null
SELECT 'bench-t0 ' || extract(epoch FROM clock_timestamp());
COMMIT;
