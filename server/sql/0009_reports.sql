-- Reports: the indexes that serve their range scans, and the CSV form of a
-- report's rows.  The reports themselves are queries in server/api/reports.c
-- (where their definitions are written down); they run as the caller, so
-- row-level security keeps each tenant's numbers to itself.

-- ======================== indexes ========================

-- Tickets created in a range (volume, response times, SLA, channels,
-- problems, retention) and solved in a range (volume, channels, the agents'
-- scorecards).  They carry the columns the reports read and filter on, so
-- a range is an index-only scan: the tenant is the index condition, not a
-- check on each row, and the table itself is not read.  The price is paid
-- on writes, by every change to a ticket (which already updates every index
-- of tickets, as updated_at is indexed).
CREATE INDEX tickets_created ON tickets (tenant_id, created_at)
    INCLUDE (id, status, solved_at, first_response_at, channel, priority, team_id, assignee_id,
             customer_id, problem_id);
CREATE INDEX tickets_solved ON tickets (tenant_id, solved_at)
    INCLUDE (id, status, created_at, first_response_at, channel, priority, team_id, assignee_id,
             customer_id)
    WHERE solved_at IS NOT NULL;
-- The tickets still open when a range starts (the backlog it starts from):
-- most tickets are solved, so this holds few.
CREATE INDEX tickets_open_created ON tickets (tenant_id, created_at)
    INCLUDE (channel, priority, team_id, assignee_id, customer_id)
    WHERE status NOT IN ('solved', 'closed');
-- A ticket's SLA times and breaches, read with it (by ranges of ticket ids).
CREATE INDEX ticket_sla_report ON ticket_sla (tenant_id, ticket_id)
    INCLUDE (first_response_secs, resolution_secs, breached);
-- The customer_kind filter hashes a tenant's internal customers once.
CREATE INDEX customers_internal ON customers (tenant_id, id) WHERE kind = 'internal';
-- Feedback, surveys and compensations by time are indexed where their
-- tables are made (0006, 0007).

-- ======================== CSV ========================

-- One field of RFC 4180: quoted when it holds a comma, a quote or a line
-- break; NULL is the empty field.
CREATE FUNCTION sb_report_csv_field(v text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN v IS NULL THEN ''
                WHEN v ~ '[",\r\n]' THEN '"' || replace(v, '"', '""') || '"'
                ELSE v END
    $$;

-- A report's rows (a JSON array of objects) as CSV: a header line of the
-- column names, then one line per row, each ended by CRLF.  Each field is
-- the row's value as JSON text gives it (->>): the same digits for numbers,
-- the unescaped text for strings, the JSON text for an object.
CREATE FUNCTION sb_report_csv(p_rows json, p_columns text[]) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT (SELECT string_agg(sb_report_csv_field(c), ',' ORDER BY i)
            FROM unnest(p_columns) WITH ORDINALITY h(c, i)) || E'\r\n'
        || coalesce((SELECT string_agg(
                        (SELECT string_agg(sb_report_csv_field(r.v ->> c), ',' ORDER BY i)
                         FROM unnest(p_columns) WITH ORDINALITY h(c, i)) || E'\r\n', ''
                        ORDER BY r.n)
                     FROM json_array_elements(coalesce(p_rows, '[]')) WITH ORDINALITY r(v, n)),
                    '')
    $$;

GRANT EXECUTE ON FUNCTION sb_report_csv_field(text), sb_report_csv(json, text[])
    TO switchboard_app;
