-- tests/bench/rules: the pgbench reference's starting point, made while
-- the server is stopped.  Set "b" is queued, and bench_replay gives each
-- of its events the outcome the server computed for the same event of set
-- "a" (same type, same ticket shape k), so pgbench applies exactly what
-- the server applied.  The timers table is emptied, as it was when set "a"
-- started (each ticket.created adds four SLA timers), and the tables are
-- vacuumed, as they were then.  Variable: tickets.
\set ON_ERROR_STOP 1
BEGIN;
TRUNCATE timers;
INSERT INTO rule_events (tenant_id, type, ticket_id, message_id, changes, data, depth)
SELECT tenant_id, type, ticket_id, message_id, changes, data, depth FROM bench_held
WHERE set = 'b' ORDER BY id;
CREATE TABLE bench_replay AS
SELECT b.id AS event_id, a.result - 'event' - 'ticket' - 'tenant_id' AS outcome
FROM (SELECT e.id, e.type, (t.custom_fields->>'bench')::integer AS k
      FROM rule_events e JOIN tickets t ON t.tenant_id = e.tenant_id AND t.id = e.ticket_id
      WHERE e.processed_at IS NULL) b
JOIN (SELECT e.type, (t.custom_fields->>'bench')::integer AS k, e.result
      FROM rule_events e JOIN tickets t ON t.tenant_id = e.tenant_id AND t.id = e.ticket_id
      WHERE e.processed_at IS NOT NULL AND t.number <= :tickets) a USING (type, k);
ALTER TABLE bench_replay ADD PRIMARY KEY (event_id);
GRANT SELECT ON bench_replay TO switchboard_app;
COMMIT;
VACUUM ANALYZE rule_events;
VACUUM ANALYZE timers;
VACUUM ANALYZE ticket_sla;
VACUUM ANALYZE bench_replay;
SELECT 'bench-replay ' || (SELECT count(*) FROM bench_replay) || ' '
       || (SELECT count(*) FROM rule_events WHERE processed_at IS NULL);
