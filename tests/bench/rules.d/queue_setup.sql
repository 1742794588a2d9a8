-- tests/bench/rules: the tickets the queue benchmark's events are about,
-- made while the server is stopped.  2 x :tickets tickets, each with one
-- inbound message: set "a" (numbers 1..:tickets) for the server, set "b"
-- (the rest) for the pgbench reference; ticket k of each set has the same
-- customer, so the same SLA policy.  The rule events their triggers queue
-- are moved to bench_held, to be queued again all at once later.
-- Variables: tenant_id, tickets, customers.
\set ON_ERROR_STOP 1
BEGIN;
SELECT set_config('switchboard.tenant_id', :'tenant_id', true) \g /dev/null

-- Every fourth customer is gold (the "gold" SLA), the others "standard".
INSERT INTO customers (tenant_id, name, tier, language)
SELECT :tenant_id, 'Customer ' || i, CASE WHEN i % 4 = 0 THEN 'gold' END, 'en'
FROM generate_series(1, :customers) i;

INSERT INTO customer_identities (tenant_id, customer_id, kind, value)
SELECT tenant_id, id, 'email', 'cust' || id || '@example.com' FROM customers
WHERE tenant_id = :tenant_id;

WITH c AS (SELECT min(id) AS first FROM customers WHERE tenant_id = :tenant_id)
INSERT INTO tickets (tenant_id, number, subject, status, channel, customer_id, custom_fields)
SELECT :tenant_id, i, 'Printer broken after the update', 'new', 'email',
       c.first + ((i - 1) % :tickets) % :customers,
       jsonb_build_object('bench', (i - 1) % :tickets + 1)
FROM generate_series(1, 2 * :tickets) i, c ORDER BY i;

INSERT INTO ticket_counters (tenant_id, last_number) VALUES (:tenant_id, 2 * :tickets)
ON CONFLICT (tenant_id) DO UPDATE SET last_number = EXCLUDED.last_number;

INSERT INTO messages (tenant_id, ticket_id, direction, author_customer_id, body_text, channel)
SELECT tenant_id, id, 'inbound', customer_id, 'It does not print since the update. Any idea?',
       'email'
FROM tickets WHERE tenant_id = :tenant_id ORDER BY id;

CREATE TABLE bench_held AS
SELECT e.tenant_id, e.id, e.type, e.ticket_id, e.message_id, e.changes, e.data, e.depth,
       (t.custom_fields->>'bench')::integer AS k,
       CASE WHEN t.number <= :tickets THEN 'a' ELSE 'b' END AS set
FROM rule_events e JOIN tickets t ON t.tenant_id = e.tenant_id AND t.id = e.ticket_id
WHERE e.processed_at IS NULL;
DELETE FROM rule_events;
COMMIT;
VACUUM ANALYZE;
SELECT set, type, count(*) FROM bench_held GROUP BY 1, 2 ORDER BY 1, 2;
