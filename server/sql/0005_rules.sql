-- Rules: each tenant's Lua scripts (versioned), the queue of rule events
-- that changes to tickets raise, the timers that SLA and rules schedule,
-- and the SLA state of each ticket.
--
-- Events are queued by triggers in the transaction that made the change,
-- so a change and its rule event commit or vanish together.  Workers claim
-- queued events with SKIP LOCKED, run the tenant's handlers, and apply
-- their actions and mark the event done in one transaction: each event is
-- handled once, in order per ticket, across workers and instances.

-- ======================== scripts ========================

-- The active version of a script is its latest; a rollback adds a version
-- with an older source, so history only grows.
CREATE TABLE rule_scripts (
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    version         integer NOT NULL CHECK (version > 0),
    source          text NOT NULL CHECK (length(source) <= 262144),
    author_agent_id bigint,
    comment         text CHECK (length(comment) <= 500),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version)
);

-- The scripts a new tenant starts from (the server keeps these in step
-- with the defaults it was built with).
CREATE TABLE rule_defaults (
    name    text PRIMARY KEY,
    source  text NOT NULL
);

CREATE FUNCTION sb_rule_scripts_seed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    INSERT INTO rule_scripts (tenant_id, name, version, source, comment)
    SELECT NEW.id, d.name, 1, d.source, 'default' FROM rule_defaults d;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_rule_scripts AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION sb_rule_scripts_seed();

-- A new version reaches every worker of every instance.
CREATE FUNCTION sb_rule_scripts_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('switchboard_rules', NEW.tenant_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER rule_scripts_changed AFTER INSERT ON rule_scripts
    FOR EACH ROW EXECUTE FUNCTION sb_rule_scripts_changed();

CREATE FUNCTION sb_rule_script_json(s rule_scripts) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('name', s.name, 'version', s.version, 'source', s.source,
        'comment', s.comment, 'author', sb_agent_json(s.tenant_id, s.author_agent_id),
        'created_at', s.created_at)
    $$;

-- The active scripts of a tenant, for a worker loading its rules.
CREATE FUNCTION sb_rule_scripts_active(p_tenant bigint)
    RETURNS TABLE (name text, version integer, source text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT DISTINCT ON (s.name) s.name, s.version, s.source FROM rule_scripts s
    WHERE s.tenant_id = p_tenant ORDER BY s.name, s.version DESC
    $$;

-- ======================== SLA state ========================

CREATE TABLE ticket_sla (
    tenant_id   bigint NOT NULL,
    ticket_id   bigint NOT NULL,
    policy      text NOT NULL,
    state       jsonb NOT NULL,    -- the rules engine's bookkeeping (see the prelude)
    first_response_due  timestamptz,
    next_response_due   timestamptz,
    resolution_due      timestamptz,
    paused      boolean NOT NULL DEFAULT false,
    breached    text[] NOT NULL DEFAULT '{}',
    -- business time to first response and to resolution, once met (reports)
    first_response_secs integer,
    resolution_secs     integer,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, ticket_id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE CASCADE
);

ALTER TABLE tickets ADD COLUMN escalation_level integer NOT NULL DEFAULT 0
    CHECK (escalation_level BETWEEN 0 AND 100);

-- Recurring problems a ticket can be linked to.
CREATE TABLE problems (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'known_error', 'resolved')),
    root_cause  text,
    workaround  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, title)
);
ALTER TABLE tickets ADD COLUMN problem_id bigint;
ALTER TABLE tickets ADD FOREIGN KEY (tenant_id, problem_id) REFERENCES problems;

-- Agents who are away get no new work from round-robin or least-loaded.
ALTER TABLE memberships ADD COLUMN away boolean NOT NULL DEFAULT false;
ALTER TABLE teams ADD COLUMN last_assigned bigint;

-- Notifications for agents, from rules (an escalation, a warning).
CREATE TABLE notifications (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    agent_id    bigint NOT NULL,
    ticket_id   bigint,
    text        text NOT NULL CHECK (length(text) <= 2000),
    rule        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notifications_agent ON notifications (tenant_id, agent_id, id);

-- Webhook calls a rule asked for, delivered by the dispatcher.
CREATE TABLE webhook_deliveries (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    body        jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Claims due webhook deliveries across tenants for p_lease seconds.
CREATE FUNCTION sb_webhooks_claim(p_limit integer, p_lease integer)
    RETURNS TABLE (tenant_id bigint, id bigint, tenant text, url text, body text, attempts integer)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH due AS (
        SELECT w.tenant_id, w.id FROM webhook_deliveries w
        WHERE w.status = 'pending' AND w.next_attempt_at <= now()
        ORDER BY w.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    c AS (
        UPDATE webhook_deliveries w SET attempts = w.attempts + 1,
            next_attempt_at = now() + make_interval(secs => p_lease)
        FROM due WHERE w.tenant_id = due.tenant_id AND w.id = due.id RETURNING w.*)
    SELECT c.tenant_id, c.id, t.slug, c.url, c.body::text, c.attempts
    FROM c JOIN tenants t ON t.id = c.tenant_id
    $$;

-- Records a delivery: 'sent', 'retry' (after a doubling backoff, or the
-- receiver's Retry-After when longer, up to p_max attempts) or 'failed'.
CREATE FUNCTION sb_webhooks_result(p_tenant bigint, p_id bigint, p_result text, p_detail text,
                                   p_retry_after integer, p_max integer)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    UPDATE webhook_deliveries SET
        status = CASE WHEN p_result = 'sent' THEN 'sent'
                      WHEN p_result = 'retry' AND attempts < p_max THEN 'pending'
                      ELSE 'failed' END,
        next_attempt_at = now() + make_interval(secs => greatest(coalesce(p_retry_after, 0),
                                                                 least(3600, 2 ^ least(attempts, 12)))),
        last_error = CASE WHEN p_result = 'sent' THEN NULL ELSE left(p_detail, 500) END
    WHERE tenant_id = p_tenant AND id = p_id AND status = 'pending'
    $$;

-- ======================== timers ========================

-- A named timer per ticket (or per tenant, ticket_id NULL): scheduling one
-- again moves it.  SLA timers are named "sla.<target>" and
-- "sla.<target>.warning".
CREATE TABLE timers (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id   bigint,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.]{0,63}$'),
    due_at      timestamptz NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE CASCADE
);
CREATE UNIQUE INDEX timers_name ON timers (tenant_id, coalesce(ticket_id, 0), name);
-- A ticket's timers, for the SLA step, cancel and ticket deletion.
CREATE INDEX timers_ticket ON timers (tenant_id, ticket_id) WHERE ticket_id IS NOT NULL;
CREATE INDEX timers_due ON timers (due_at);

-- Workers keep the next due times in memory; a sooner one wakes them.
CREATE FUNCTION sb_timers_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    first double precision;
BEGIN
    SELECT min(extract(epoch FROM due_at)) INTO first FROM new_rows;
    IF first IS NOT NULL THEN
        PERFORM pg_notify('switchboard_timers', first::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER timers_inserted AFTER INSERT ON timers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sb_timers_changed();
CREATE TRIGGER timers_updated AFTER UPDATE ON timers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sb_timers_changed();

-- ======================== rule events ========================

CREATE TABLE rule_events (
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    type         text NOT NULL CHECK (length(type) <= 80),
    ticket_id    bigint,
    message_id   bigint,
    agent_id     bigint,
    changes      jsonb,
    data         jsonb NOT NULL DEFAULT '{}',
    depth        smallint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    snapshot     jsonb,      -- the event as the handlers saw it (for replay)
    result       jsonb,      -- what they did
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX rule_events_queue ON rule_events (id) WHERE processed_at IS NULL;
CREATE INDEX rule_events_ticket_queue ON rule_events (tenant_id, ticket_id, id)
    WHERE processed_at IS NULL;
CREATE INDEX rule_events_history ON rule_events (created_at);

-- Changes made by rules raise events too (routing's assignment is a
-- ticket.assigned others may act on), up to a depth that stops loops.
CREATE FUNCTION sb_rule_event(p_tenant bigint, p_type text, p_ticket bigint, p_message bigint,
                              p_changes jsonb)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    depth integer := coalesce(nullif(current_setting('switchboard.rule_depth', true), '')::integer, 0);
BEGIN
    IF depth > 4 THEN
        INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
        VALUES (p_tenant, p_ticket, 'system', 'rule.loop_stopped',
                jsonb_build_object('event', p_type, 'depth', depth));
        RETURN;
    END IF;
    INSERT INTO rule_events (tenant_id, type, ticket_id, message_id, changes, depth)
    VALUES (p_tenant, p_type, p_ticket, p_message, p_changes, depth);
    PERFORM pg_notify('switchboard_rule_events', '');
END
$$;

CREATE FUNCTION sb_tickets_rule_events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    changes jsonb := '{}';
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM sb_rule_event(NEW.tenant_id, 'ticket.created', NEW.id, NULL, NULL);
        RETURN NULL;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        changes := changes || jsonb_build_object('status', jsonb_build_array(OLD.status, NEW.status));
    END IF;
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        changes := changes || jsonb_build_object('priority', jsonb_build_array(OLD.priority, NEW.priority));
    END IF;
    IF NEW.assignee_id IS DISTINCT FROM OLD.assignee_id THEN
        changes := changes || jsonb_build_object('assignee', jsonb_build_array(OLD.assignee_id, NEW.assignee_id));
    END IF;
    IF NEW.team_id IS DISTINCT FROM OLD.team_id THEN
        changes := changes || jsonb_build_object('team', jsonb_build_array(OLD.team_id, NEW.team_id));
    END IF;
    IF NEW.tags IS DISTINCT FROM OLD.tags THEN
        changes := changes || jsonb_build_object('tags', jsonb_build_array(to_jsonb(OLD.tags), to_jsonb(NEW.tags)));
    END IF;
    IF NEW.subject IS DISTINCT FROM OLD.subject THEN
        changes := changes || jsonb_build_object('subject', jsonb_build_array(OLD.subject, NEW.subject));
    END IF;
    IF NEW.custom_fields IS DISTINCT FROM OLD.custom_fields THEN
        changes := changes || jsonb_build_object('custom', jsonb_build_array(OLD.custom_fields, NEW.custom_fields));
    END IF;
    IF NEW.customer_id IS DISTINCT FROM OLD.customer_id THEN
        changes := changes || jsonb_build_object('customer', jsonb_build_array(OLD.customer_id, NEW.customer_id));
    END IF;
    IF NEW.escalation_level IS DISTINCT FROM OLD.escalation_level THEN
        changes := changes || jsonb_build_object('escalation_level',
                                                 jsonb_build_array(OLD.escalation_level, NEW.escalation_level));
    END IF;
    IF changes = '{}' THEN
        RETURN NULL;
    END IF;
    PERFORM sb_rule_event(NEW.tenant_id, 'ticket.updated', NEW.id, NULL, changes);
    IF changes ? 'assignee' AND NEW.assignee_id IS NOT NULL THEN
        PERFORM sb_rule_event(NEW.tenant_id, 'ticket.assigned', NEW.id, NULL, changes);
    END IF;
    IF changes ? 'status' AND NEW.status = 'solved' THEN
        PERFORM sb_rule_event(NEW.tenant_id, 'ticket.solved', NEW.id, NULL, changes);
    ELSIF changes ? 'status' AND OLD.status IN ('solved', 'closed')
          AND NEW.status NOT IN ('solved', 'closed') THEN
        PERFORM sb_rule_event(NEW.tenant_id, 'ticket.reopened', NEW.id, NULL, changes);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tickets_rule_events AFTER INSERT OR UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION sb_tickets_rule_events();

CREATE FUNCTION sb_messages_rule_events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.direction = 'note' THEN
        RETURN NULL;
    END IF;
    PERFORM sb_rule_event(NEW.tenant_id,
        CASE NEW.direction WHEN 'inbound' THEN 'message.received' ELSE 'message.sent' END,
        NEW.ticket_id, NEW.id, NULL);
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_rule_events AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION sb_messages_rule_events();

-- What a handler sees of a ticket (read-only; times as unix seconds).
CREATE FUNCTION sb_rule_ticket_json(t tickets) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'number', t.number, 'subject', t.subject, 'status', t.status,
        'priority', t.priority, 'channel', t.channel, 'tags', to_jsonb(t.tags),
        'custom', t.custom_fields, 'escalation_level', t.escalation_level,
        'assignee', (SELECT jsonb_build_object('id', a.id, 'name', a.name, 'email', a.email)
                     FROM agents a WHERE a.id = t.assignee_id),
        'team', (SELECT tm.name FROM teams tm WHERE tm.tenant_id = t.tenant_id AND tm.id = t.team_id),
        'problem', (SELECT p.title FROM problems p WHERE p.tenant_id = t.tenant_id AND p.id = t.problem_id),
        'created_at', extract(epoch FROM t.created_at)::bigint,
        'updated_at', extract(epoch FROM t.updated_at)::bigint,
        'first_response_at', extract(epoch FROM t.first_response_at)::bigint,
        'solved_at', extract(epoch FROM t.solved_at)::bigint)
    $$;

CREATE FUNCTION sb_rule_customer_json(p_tenant bigint, p_customer bigint) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('id', c.id, 'name', c.name, 'kind', c.kind,
        'tier', c.tier, 'language', c.language,
        'organization', (SELECT o.name FROM organizations o
                         WHERE o.tenant_id = c.tenant_id AND o.id = c.organization_id),
        'identities', coalesce((SELECT jsonb_agg(jsonb_build_object('kind', i.kind, 'value', i.value)
                                                 ORDER BY i.id)
                                FROM customer_identities i
                                WHERE i.tenant_id = c.tenant_id AND i.customer_id = c.id), '[]'))
    FROM customers c WHERE c.tenant_id = p_tenant AND c.id = p_customer
    $$;

-- The event as handlers see it: the ticket, its customer, the message,
-- the changes, the SLA state and the time, all as of now.
CREATE FUNCTION sb_rule_event_snapshot(e rule_events) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', e.id, 'tenant_id', e.tenant_id,
        'tenant', (SELECT slug FROM tenants WHERE id = e.tenant_id),
        'type', e.type, 'depth', e.depth, 'changes', e.changes, 'data', e.data,
        'at', extract(epoch FROM e.created_at)::bigint,
        'now', extract(epoch FROM now())::bigint,
        'ticket', (SELECT sb_rule_ticket_json(t) FROM tickets t
                   WHERE t.tenant_id = e.tenant_id AND t.id = e.ticket_id),
        'customer', (SELECT sb_rule_customer_json(t.tenant_id, t.customer_id) FROM tickets t
                     WHERE t.tenant_id = e.tenant_id AND t.id = e.ticket_id),
        'message', (SELECT jsonb_build_object('id', m.id, 'direction', m.direction,
                        'text', left(m.body_text, 20000), 'channel', m.channel,
                        'author', CASE WHEN m.author_agent_id IS NOT NULL THEN 'agent'
                                       WHEN m.author_customer_id IS NOT NULL THEN 'customer'
                                       ELSE 'system' END,
                        'at', extract(epoch FROM m.created_at)::bigint)
                    FROM messages m WHERE m.tenant_id = e.tenant_id AND m.id = e.message_id),
        'agent', (SELECT jsonb_build_object('id', a.id, 'name', a.name, 'email', a.email)
                  FROM agents a WHERE a.id = e.agent_id),
        'sla', (SELECT jsonb_build_object('policy', s.policy, 'state', s.state)
                FROM ticket_sla s WHERE s.tenant_id = e.tenant_id AND s.ticket_id = e.ticket_id))
    $$;

-- Claims up to p_limit queued events, oldest first, skipping any whose
-- ticket has an older event still queued or in another worker's hands:
-- handlers see a ticket's events in order.  The rows stay locked until
-- the caller's transaction ends.  Returns the snapshots, one per row.
CREATE FUNCTION sb_rule_events_claim(p_limit integer)
    RETURNS SETOF jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH c AS (
        SELECT e.* FROM rule_events e
        WHERE e.processed_at IS NULL
          AND (e.ticket_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM rule_events p
              WHERE p.tenant_id = e.tenant_id AND p.ticket_id = e.ticket_id
                AND p.processed_at IS NULL AND p.id < e.id))
        ORDER BY e.id LIMIT p_limit FOR UPDATE SKIP LOCKED),
    u AS (
        UPDATE rule_events r SET snapshot = sb_rule_event_snapshot(r)
        FROM c WHERE r.tenant_id = c.tenant_id AND r.id = c.id
        RETURNING r.id, r.snapshot)
    SELECT snapshot FROM u ORDER BY id
    $$;

-- Fires the due timers (each exactly once: the row goes as its event is
-- queued), at most p_limit.  Returns how many fired.
CREATE FUNCTION sb_timers_fire(p_limit integer)
    RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH due AS (
        SELECT tenant_id, id FROM timers WHERE due_at <= now()
        ORDER BY due_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    gone AS (
        DELETE FROM timers t USING due WHERE t.tenant_id = due.tenant_id AND t.id = due.id
        RETURNING t.*),
    q AS (
        INSERT INTO rule_events (tenant_id, type, ticket_id, data)
        SELECT g.tenant_id,
               CASE WHEN g.name LIKE 'sla.%.warning' THEN 'sla.warning'
                    WHEN g.name LIKE 'sla.%' THEN 'sla.breached'
                    ELSE 'timer.' || g.name END,
               g.ticket_id,
               g.data || jsonb_build_object('timer', g.name,
                                            'due_at', extract(epoch FROM g.due_at)::double precision)
        FROM gone g RETURNING 1)
    SELECT count(*)::integer FROM q
    WHERE (SELECT count(*) FROM q) = 0 OR pg_notify('switchboard_rule_events', '') IS NOT NULL
    $$;

-- An event whose outcome could not be applied (a bug, or data the rules
-- did not expect): recorded, so it neither blocks its ticket's queue nor
-- vanishes.
CREATE FUNCTION sb_rule_event_failed(p_tenant bigint, p_id bigint, p_message text)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    UPDATE rule_events SET processed_at = now(), result = jsonb_build_object('failed', p_message)
    WHERE tenant_id = p_tenant AND id = p_id;
    INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
    SELECT tenant_id, ticket_id, 'system', 'rule.failed',
           jsonb_build_object('event', type, 'message', p_message)
    FROM rule_events WHERE tenant_id = p_tenant AND id = p_id;
    $$;

-- Handled events older than p_days go (at most p_limit per call): the
-- history replay reads is bounded.
CREATE FUNCTION sb_rule_events_prune(p_days integer, p_limit integer)
    RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH old AS (
        SELECT tenant_id, id FROM rule_events
        WHERE created_at < now() - make_interval(days => p_days) AND processed_at IS NOT NULL
        LIMIT p_limit FOR UPDATE SKIP LOCKED),
    gone AS (DELETE FROM rule_events r USING old
             WHERE r.tenant_id = old.tenant_id AND r.id = old.id RETURNING 1)
    SELECT count(*)::integer FROM gone
    $$;

-- The next due times, for a worker's heap.
CREATE FUNCTION sb_timers_next(p_limit integer)
    RETURNS SETOF double precision
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT extract(epoch FROM due_at)::double precision FROM timers ORDER BY due_at LIMIT p_limit $$;

-- ======================== isolation ========================

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rule_scripts', 'ticket_sla', 'problems', 'notifications',
                             'webhook_deliveries', 'timers', 'rule_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())'
                       ' WITH CHECK (tenant_id = sb_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO switchboard_app', t);
    END LOOP;
END
$$;
REVOKE UPDATE, DELETE ON rule_scripts FROM switchboard_app;
GRANT SELECT ON rule_defaults TO switchboard_app;

REVOKE ALL ON FUNCTION sb_webhooks_claim(integer, integer),
    sb_webhooks_result(bigint, bigint, text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_webhooks_claim(integer, integer),
    sb_webhooks_result(bigint, bigint, text, text, integer, integer) TO switchboard_app;
REVOKE ALL ON FUNCTION sb_rule_events_claim(integer), sb_timers_fire(integer),
    sb_rule_event_failed(bigint, bigint, text), sb_rule_events_prune(integer, integer),
    sb_timers_next(integer), sb_rule_scripts_active(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_rule_events_claim(integer), sb_timers_fire(integer),
    sb_rule_event_failed(bigint, bigint, text), sb_rule_events_prune(integer, integer),
    sb_timers_next(integer), sb_rule_scripts_active(bigint),
    sb_rule_script_json(rule_scripts), sb_rule_ticket_json(tickets),
    sb_rule_customer_json(bigint, bigint), sb_rule_event_snapshot(rule_events),
    sb_rule_event(bigint, text, bigint, bigint, jsonb) TO switchboard_app;

-- ======================== applying what handlers decided ========================

-- Picks an agent of a team: the least loaded (fewest open tickets) or the
-- next in turn; never one who is away.  NULL when nobody is available.
CREATE FUNCTION sb_team_pick(p_team bigint, p_strategy text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    picked bigint;
    last bigint;
BEGIN
    IF p_strategy = 'round_robin' THEN
        SELECT last_assigned INTO last FROM teams
        WHERE tenant_id = sb_tenant() AND id = p_team FOR UPDATE;
        SELECT tm.agent_id INTO picked
        FROM team_members tm
        JOIN memberships m ON m.tenant_id = tm.tenant_id AND m.agent_id = tm.agent_id
        JOIN agents a ON a.id = tm.agent_id
        WHERE tm.tenant_id = sb_tenant() AND tm.team_id = p_team AND NOT m.away AND a.active
          AND m.role <> 'viewer'
        ORDER BY tm.agent_id <= coalesce(last, 0), tm.agent_id LIMIT 1;
        UPDATE teams SET last_assigned = picked WHERE tenant_id = sb_tenant() AND id = p_team;
        RETURN picked;
    END IF;
    SELECT tm.agent_id INTO picked
    FROM team_members tm
    JOIN memberships m ON m.tenant_id = tm.tenant_id AND m.agent_id = tm.agent_id
    JOIN agents a ON a.id = tm.agent_id
    WHERE tm.tenant_id = sb_tenant() AND tm.team_id = p_team AND NOT m.away AND a.active
      AND m.role <> 'viewer'
    ORDER BY (SELECT count(*) FROM tickets t
              WHERE t.tenant_id = tm.tenant_id AND t.assignee_id = tm.agent_id
                AND t.status IN ('new', 'open', 'pending', 'on_hold')), tm.agent_id
    LIMIT 1;
    RETURN picked;
END
$$;

-- Sets a ticket's team and/or assignee; a team without an agent picks one.
CREATE FUNCTION sb_rule_assign(p_ticket bigint, a jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    team bigint;
    agent bigint;
BEGIN
    IF a ? 'team' THEN
        SELECT id INTO team FROM teams WHERE tenant_id = sb_tenant() AND name = a->>'team';
        IF team IS NULL THEN
            RAISE EXCEPTION 'no team named "%"', a->>'team' USING ERRCODE = '22023';
        END IF;
    END IF;
    IF a ? 'agent' THEN
        SELECT m.agent_id INTO agent FROM memberships m JOIN agents ag ON ag.id = m.agent_id
        WHERE m.tenant_id = sb_tenant() AND m.role <> 'viewer'
          AND (lower(ag.email) = lower(a->>'agent') OR ag.id::text = a->>'agent');
        IF agent IS NULL THEN
            RAISE EXCEPTION 'no agent "%" in this tenant', a->>'agent' USING ERRCODE = '22023';
        END IF;
    ELSIF team IS NOT NULL THEN
        agent := sb_team_pick(team, coalesce(a->>'strategy', 'least_loaded'));
    END IF;
    UPDATE tickets SET team_id = coalesce(team, team_id),
        assignee_id = CASE WHEN agent IS NOT NULL OR team IS NOT NULL THEN agent ELSE assignee_id END,
        version = version + 1, updated_at = now()
    WHERE tenant_id = sb_tenant() AND id = p_ticket;
    RETURN jsonb_build_object('team_id', team, 'assignee_id', agent);
END
$$;

-- Notifies agents (by email), a team, the tenant's admins, the assignee,
-- and/or a webhook.
CREATE FUNCTION sb_rule_notify(p_ticket bigint, a jsonb, p_rule text) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    text_ text := coalesce(a->>'text', 'Ticket needs attention');
    n integer := 0;
    r record;
    num bigint := (SELECT number FROM tickets WHERE tenant_id = sb_tenant() AND id = p_ticket);
BEGIN
    FOR r IN
        SELECT DISTINCT m.agent_id FROM memberships m JOIN agents ag ON ag.id = m.agent_id
        WHERE m.tenant_id = sb_tenant() AND ag.active AND (
            (a ? 'agents' AND lower(ag.email) IN (SELECT lower(x) FROM jsonb_array_elements_text(a->'agents') x))
            OR (coalesce((a->>'admins')::boolean, false) AND m.role = 'admin')
            OR (coalesce((a->>'supervisors')::boolean, false) AND m.role = 'supervisor')
            OR (coalesce((a->>'assignee')::boolean, false) AND m.agent_id =
                (SELECT assignee_id FROM tickets WHERE tenant_id = sb_tenant() AND id = p_ticket))
            OR (a ? 'team' AND m.agent_id IN (
                SELECT tm.agent_id FROM team_members tm JOIN teams t
                    ON t.tenant_id = tm.tenant_id AND t.id = tm.team_id
                WHERE tm.tenant_id = sb_tenant() AND t.name = a->>'team')))
    LOOP
        INSERT INTO notifications (tenant_id, agent_id, ticket_id, text, rule)
        VALUES (sb_tenant(), r.agent_id, p_ticket, left(text_, 2000), p_rule);
        PERFORM sb_notify_event('notification', num, NULL,
                                jsonb_build_object('agent_id', r.agent_id, 'text', left(text_, 2000)));
        n := n + 1;
    END LOOP;
    IF a ? 'webhook' THEN
        INSERT INTO webhook_deliveries (tenant_id, url, body)
        VALUES (sb_tenant(), a->>'webhook', jsonb_build_object('ticket', num, 'text', text_,
                'rule', p_rule, 'tenant', (SELECT slug FROM tenants WHERE id = sb_tenant())));
        PERFORM pg_notify('switchboard_webhooks', '');
    END IF;
    RETURN jsonb_build_object('notified', n);
END
$$;

-- Links the ticket's customer with an identity; an identity that belongs
-- to another customer brings that customer (its identities and tickets)
-- into this one.
CREATE FUNCTION sb_rule_link_identity(p_ticket bigint, a jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    me bigint := (SELECT customer_id FROM tickets WHERE tenant_id = sb_tenant() AND id = p_ticket);
    other bigint;
BEGIN
    SELECT customer_id INTO other FROM customer_identities
    WHERE tenant_id = sb_tenant() AND kind = a->>'kind' AND value = a->>'value';
    IF other IS NULL THEN
        INSERT INTO customer_identities (tenant_id, customer_id, kind, value)
        VALUES (sb_tenant(), me, a->>'kind', a->>'value');
        RETURN jsonb_build_object('linked', true);
    END IF;
    IF other = me THEN
        RETURN jsonb_build_object('linked', false);
    END IF;
    UPDATE customer_identities SET customer_id = me WHERE tenant_id = sb_tenant() AND customer_id = other;
    UPDATE tickets SET customer_id = me WHERE tenant_id = sb_tenant() AND customer_id = other;
    UPDATE customers SET merged_into = me, updated_at = now() WHERE tenant_id = sb_tenant() AND id = other;
    INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
    VALUES (sb_tenant(), p_ticket, 'system', 'customer.merged',
            jsonb_build_object('merged', other, 'into', me));
    RETURN jsonb_build_object('linked', true, 'merged', other);
END
$$;

-- A message from the system on a ticket: a reply goes to the customer
-- through the outbox of the ticket's channel; a note stays inside.
CREATE FUNCTION sb_ticket_system_message(t tickets, p_kind text, p_text text, p_html text)
    RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    msg bigint;
    outbound boolean := p_kind = 'reply';
BEGIN
    INSERT INTO messages (tenant_id, ticket_id, direction, body_text, body_html, channel,
                          delivery_status)
    VALUES (t.tenant_id, t.id, CASE WHEN outbound THEN 'outbound' ELSE 'note' END,
            p_text, p_html, t.channel, CASE WHEN outbound AND t.channel <> 'api' THEN 'pending' END)
    RETURNING id INTO msg;
    IF outbound AND t.channel <> 'api' THEN
        INSERT INTO outbox (tenant_id, message_id, channel) VALUES (t.tenant_id, msg, t.channel);
        PERFORM pg_notify('switchboard_outbox', '');
    END IF;
    PERFORM sb_notify_event('message.created', t.number, msg, jsonb_build_object(
        'channel', t.channel, 'direction', CASE WHEN outbound THEN 'outbound' ELSE 'note' END,
        'thread_key', t.thread_key));
    RETURN msg;
END
$$;

-- One action on a ticket.  Raises on an action that cannot apply (the
-- caller records it and goes on with the others).
CREATE FUNCTION sb_rule_action(p_ticket bigint, a jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    kind text := a->>'type';
    rule text := a->>'script';
    t tickets;
    out jsonb := '{}';
BEGIN
    IF p_ticket IS NOT NULL THEN
        SELECT * INTO t FROM tickets WHERE tenant_id = sb_tenant() AND id = p_ticket FOR UPDATE;
    END IF;
    IF t.id IS NULL AND kind NOT IN ('notify') THEN
        RAISE EXCEPTION 'action "%" needs a ticket', kind USING ERRCODE = '22023';
    END IF;
    CASE kind
    WHEN 'set_priority' THEN
        UPDATE tickets SET priority = a->>'priority', version = version + 1, updated_at = now()
        WHERE tenant_id = t.tenant_id AND id = t.id AND priority <> a->>'priority';
    WHEN 'set_status' THEN
        IF NOT sb_status_transition_ok(t.status, a->>'status') THEN
            RAISE EXCEPTION 'status cannot change from "%" to "%"', t.status, a->>'status'
                USING ERRCODE = '22023';
        END IF;
        UPDATE tickets SET status = a->>'status', version = version + 1, updated_at = now(),
            solved_at = CASE a->>'status' WHEN 'solved' THEN now()
                                          WHEN 'closed' THEN solved_at END
        WHERE tenant_id = t.tenant_id AND id = t.id AND status <> a->>'status';
    WHEN 'assign' THEN
        out := sb_rule_assign(t.id, a);
    WHEN 'tag' THEN
        UPDATE tickets SET tags = ARRAY(SELECT DISTINCT x FROM unnest(tags || ARRAY(
                SELECT jsonb_array_elements_text(a->'tags'))) x ORDER BY x),
            version = version + 1, updated_at = now()
        WHERE tenant_id = t.tenant_id AND id = t.id
          AND NOT tags @> ARRAY(SELECT jsonb_array_elements_text(a->'tags'));
    WHEN 'untag' THEN
        UPDATE tickets SET tags = ARRAY(SELECT x FROM unnest(tags) x
                WHERE x NOT IN (SELECT jsonb_array_elements_text(a->'tags')) ORDER BY x),
            version = version + 1, updated_at = now()
        WHERE tenant_id = t.tenant_id AND id = t.id
          AND tags && ARRAY(SELECT jsonb_array_elements_text(a->'tags'));
    WHEN 'escalate' THEN
        -- A level already reached is not reached again: escalation is idempotent.
        IF (a->>'level')::integer <= t.escalation_level THEN
            RETURN jsonb_build_object('skipped', 'already at level ' || t.escalation_level);
        END IF;
        UPDATE tickets SET escalation_level = (a->>'level')::integer,
            priority = coalesce(a->>'priority', priority), version = version + 1, updated_at = now()
        WHERE tenant_id = t.tenant_id AND id = t.id;
        IF a ? 'team' OR a ? 'agent' THEN
            -- The level stands even when the hand-over cannot happen (no
            -- such team): escalation must not start over at every attempt.
            BEGIN
                out := sb_rule_assign(t.id, a);
            EXCEPTION WHEN OTHERS THEN
                out := jsonb_build_object('assign_failed', SQLERRM);
            END;
        END IF;
        IF a ? 'notify' THEN
            out := out || sb_rule_notify(t.id, a->'notify', rule);
        END IF;
        INSERT INTO events (tenant_id, ticket_id, actor_kind, action, before, after)
        VALUES (t.tenant_id, t.id, 'system', 'ticket.escalated',
                jsonb_build_object('level', t.escalation_level),
                jsonb_build_object('level', (a->>'level')::integer, 'rule', rule) || out);
        PERFORM sb_notify_event('ticket.escalated', t.number, NULL,
                                jsonb_build_object('level', (a->>'level')::integer));
    WHEN 'reply', 'note' THEN
        out := jsonb_build_object('message_id',
                                  sb_ticket_system_message(t, kind, a->>'text', a->>'html'));
    WHEN 'notify' THEN
        out := sb_rule_notify(t.id, a, rule);
    WHEN 'compensate' THEN
        out := sb_compensation_issue(t.id, NULL, a->>'kind', (a->>'amount')::numeric,
                                     a->>'currency', a->>'description',
                                     coalesce(a->>'reason', 'goodwill'), rule);
    WHEN 'schedule' THEN
        INSERT INTO timers (tenant_id, ticket_id, name, due_at, data)
        VALUES (t.tenant_id, t.id, a->>'name', to_timestamp((a->>'due')::double precision),
                CASE WHEN jsonb_typeof(a->'data') = 'object' THEN a->'data' ELSE '{}' END)
        ON CONFLICT (tenant_id, coalesce(ticket_id, 0), name)
        DO UPDATE SET due_at = EXCLUDED.due_at, data = EXCLUDED.data;
    WHEN 'cancel' THEN
        DELETE FROM timers WHERE tenant_id = t.tenant_id AND ticket_id = t.id AND name = a->>'name';
    WHEN 'link_problem' THEN
        INSERT INTO problems (tenant_id, title) VALUES (t.tenant_id, a->>'problem')
        ON CONFLICT (tenant_id, title) DO NOTHING;
        UPDATE tickets SET problem_id = (SELECT id FROM problems
                                         WHERE tenant_id = t.tenant_id AND title = a->>'problem'),
            version = version + 1, updated_at = now()
        WHERE tenant_id = t.tenant_id AND id = t.id;
    WHEN 'link_identity' THEN
        out := sb_rule_link_identity(t.id, a);
    WHEN 'survey' THEN
        out := sb_survey_offer(t.id, a);
    ELSE
        RAISE EXCEPTION 'unknown action "%"', kind USING ERRCODE = '22023';
    END CASE;
    IF kind NOT IN ('escalate', 'schedule', 'cancel') THEN
        INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
        VALUES (sb_tenant(), t.id, 'system', 'rule.' || kind, (a - 'type') || out);
    END IF;
    RETURN out;
END
$$;

-- The SLA state the engine computed: due times on the ticket and the
-- timers that will warn and breach.
CREATE FUNCTION sb_rule_sla_apply(p_ticket bigint, s jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF s IS NULL OR jsonb_typeof(s) = 'null' THEN
        DELETE FROM ticket_sla WHERE tenant_id = sb_tenant() AND ticket_id = p_ticket;
        DELETE FROM timers WHERE tenant_id = sb_tenant() AND ticket_id = p_ticket AND name LIKE 'sla.%';
        RETURN;
    END IF;
    INSERT INTO ticket_sla AS x (tenant_id, ticket_id, policy, state, first_response_due,
                                 next_response_due, resolution_due, paused, breached,
                                 first_response_secs, resolution_secs)
    VALUES (sb_tenant(), p_ticket, s->>'policy', s->'state',
            to_timestamp((s->>'first_response_due')::double precision),
            to_timestamp((s->>'next_response_due')::double precision),
            to_timestamp((s->>'resolution_due')::double precision),
            coalesce((s->>'paused')::boolean, false),
            ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'breached', '[]'))),
            (s->>'first_response_secs')::integer, (s->>'resolution_secs')::integer)
    ON CONFLICT (tenant_id, ticket_id) DO UPDATE SET policy = EXCLUDED.policy,
        state = EXCLUDED.state, first_response_due = EXCLUDED.first_response_due,
        next_response_due = EXCLUDED.next_response_due, resolution_due = EXCLUDED.resolution_due,
        paused = EXCLUDED.paused, breached = EXCLUDED.breached,
        first_response_secs = EXCLUDED.first_response_secs,
        resolution_secs = EXCLUDED.resolution_secs, updated_at = now();
    DELETE FROM timers WHERE tenant_id = sb_tenant() AND ticket_id = p_ticket AND name LIKE 'sla.%'
      AND name NOT IN (SELECT x->>'name' FROM jsonb_array_elements(coalesce(s->'timers', '[]')) x);
    INSERT INTO timers (tenant_id, ticket_id, name, due_at, data)
    SELECT sb_tenant(), p_ticket, x->>'name', to_timestamp((x->>'due')::double precision),
           CASE WHEN jsonb_typeof(x->'data') = 'object' THEN x->'data' ELSE '{}' END
    FROM jsonb_array_elements(coalesce(s->'timers', '[]')) x
    ON CONFLICT (tenant_id, coalesce(ticket_id, 0), name) DO UPDATE
        SET due_at = EXCLUDED.due_at, data = EXCLUDED.data
        WHERE timers.due_at IS DISTINCT FROM EXCLUDED.due_at OR timers.data IS DISTINCT FROM EXCLUDED.data;
END
$$;

-- Applies the outcome of one event's handlers and marks it handled: p
-- is {"tenant_id", "event", "ticket", "depth", "sla"?, "actions": [...],
-- "errors": [...]}.  Each action runs in its own subtransaction: one that
-- cannot apply is recorded and the others still apply.
CREATE FUNCTION sb_rules_apply_one(p jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    ticket bigint := (p->>'ticket')::bigint;
    a jsonb;
    e jsonb;
    ok boolean;
BEGIN
    PERFORM set_config('switchboard.tenant_id', p->>'tenant_id', true),
            set_config('switchboard.agent_id', '', true),
            set_config('switchboard.api_key_id', '', true),
            set_config('switchboard.rule_depth', (coalesce((p->>'depth')::integer, 0) + 1)::text, true);
    IF ticket IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tickets WHERE tenant_id = sb_tenant() AND id = ticket) THEN
        ticket := NULL;
    END IF;
    IF p ? 'sla' AND ticket IS NOT NULL THEN
        PERFORM sb_rule_sla_apply(ticket, p->'sla');
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(coalesce(p->'errors', '[]')) LOOP
        INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
        VALUES (sb_tenant(), ticket, 'system', 'rule.error', e || jsonb_build_object('event', p->>'type'));
    END LOOP;
    FOR a IN SELECT * FROM jsonb_array_elements(coalesce(p->'actions', '[]')) LOOP
        BEGIN
            PERFORM sb_rule_action(ticket, a);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO events (tenant_id, ticket_id, actor_kind, action, after)
            VALUES (sb_tenant(), ticket, 'system', 'rule.action_failed',
                    jsonb_build_object('action', a, 'message', SQLERRM));
        END;
    END LOOP;
    UPDATE rule_events SET processed_at = now(), result = p - 'tenant_id'
    WHERE tenant_id = sb_tenant() AND id = (p->>'event')::bigint;
END
$$;

CREATE FUNCTION sb_rules_apply(p jsonb) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    x jsonb;
    n integer := 0;
BEGIN
    FOR x IN SELECT * FROM jsonb_array_elements(p) LOOP
        PERFORM sb_rules_apply_one(x);
        n := n + 1;
    END LOOP;
    PERFORM set_config('switchboard.tenant_id', '', true);
    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION sb_team_pick(bigint, text), sb_rule_assign(bigint, jsonb),
    sb_rule_notify(bigint, jsonb, text), sb_rule_link_identity(bigint, jsonb),
    sb_rule_action(bigint, jsonb), sb_rule_sla_apply(bigint, jsonb),
    sb_ticket_system_message(tickets, text, text, text),
    sb_rules_apply_one(jsonb), sb_rules_apply(jsonb) TO switchboard_app;

-- ======================== what the API shows ========================

CREATE OR REPLACE FUNCTION sb_ticket_json(t tickets) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'number', t.number, 'subject', t.subject, 'status', t.status, 'priority', t.priority,
        'channel', t.channel, 'tags', to_jsonb(t.tags), 'custom_fields', t.custom_fields,
        'customer', (SELECT sb_customer_json(c) FROM customers c
                     WHERE c.tenant_id = t.tenant_id AND c.id = t.customer_id),
        'assignee', sb_agent_json(t.tenant_id, t.assignee_id),
        'team', (SELECT jsonb_build_object('id', tm.id, 'name', tm.name) FROM teams tm
                 WHERE tm.tenant_id = t.tenant_id AND tm.id = t.team_id),
        'merged_into', (SELECT m.number FROM tickets m WHERE m.tenant_id = t.tenant_id AND m.id = t.merged_into),
        'version', t.version, 'created_at', t.created_at, 'updated_at', t.updated_at,
        'first_response_at', t.first_response_at, 'solved_at', t.solved_at,
        'escalation_level', t.escalation_level,
        'problem', (SELECT jsonb_build_object('id', p.id, 'title', p.title) FROM problems p
                    WHERE p.tenant_id = t.tenant_id AND p.id = t.problem_id),
        'sla', (SELECT jsonb_build_object('policy', s.policy,
                    'first_response_due', s.first_response_due,
                    'next_response_due', s.next_response_due,
                    'resolution_due', s.resolution_due,
                    'paused', s.paused, 'breached', to_jsonb(s.breached))
                FROM ticket_sla s WHERE s.tenant_id = t.tenant_id AND s.ticket_id = t.id))
    $$;
