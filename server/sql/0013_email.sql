-- Email: threading by Message-ID, machine-sent mail, quoted history, and
-- what a channel plugin keeps between polls (an IMAP mailbox's UIDs).

-- A message a machine sent (auto-reply, bounce, list mail): it joins the
-- ticket it answers but never opens one and never gets an automatic answer.
ALTER TABLE messages ADD COLUMN auto_submitted boolean NOT NULL DEFAULT false;
-- Where the quoted history of an inbound text starts (characters into
-- body_text), for display; NULL when it has none.  The text is kept whole.
ALTER TABLE messages ADD COLUMN quote_at integer CHECK (quote_at >= 0);

-- A plugin's own state for a channel instance (JSON), kept apart from the
-- admin's settings: saving it changes nothing an admin sees and wakes nobody.
ALTER TABLE channels ADD COLUMN state jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(state) = 'object' AND octet_length(state::text) <= 65536);

CREATE OR REPLACE FUNCTION sb_message_json(m messages) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'direction', m.direction, 'text', m.body_text, 'html', m.body_html,
        'channel', m.channel, 'channel_id', m.channel_id, 'delivery_status', m.delivery_status,
        'delivery_error', m.delivery_error, 'external_id', m.external_id,
        'auto_submitted', m.auto_submitted, 'quote_at', m.quote_at,
        'attachments', coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id,
                                    'filename', a.filename, 'content_type', a.content_type,
                                    'size', a.size, 'file_id', a.file_id) ORDER BY a.id)
                                 FROM attachments a
                                 WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id), '[]'),
        'author', CASE WHEN m.author_agent_id IS NOT NULL
                       THEN jsonb_build_object('kind', 'agent', 'id', m.author_agent_id)
                       WHEN m.author_customer_id IS NOT NULL
                       THEN jsonb_build_object('kind', 'customer', 'id', m.author_customer_id)
                  END,
        'created_at', m.created_at)
    $$;

-- An email channel's endpoints are its addresses: what the MTA delivers to.
CREATE OR REPLACE FUNCTION sb_channel_json(c channels) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'type', c.type, 'name', c.name, 'settings', c.settings,
        'secrets', to_jsonb(c.secret_names), 'active', c.active,
        'created_at', c.created_at, 'updated_at', c.updated_at,
        'endpoints', CASE c.type
            WHEN 'chat' THEN jsonb_build_object(
                'widget', '/chat/' || t.slug || '/widget.js',
                'demo_page', '/chat/' || t.slug || '/',
                'websocket', '/chat/' || t.slug || '/ws')
            WHEN 'example' THEN jsonb_build_object('webhook', '/hooks/' || t.slug || '/example')
            WHEN 'email' THEN jsonb_build_object('addresses',
                CASE jsonb_typeof(c.settings -> 'address')
                    WHEN 'array' THEN c.settings -> 'address'
                    WHEN 'string' THEN jsonb_build_array(c.settings -> 'address')
                    ELSE '[]' END)
            ELSE jsonb_build_object('webhook', '/hooks/' || t.slug || '/' || c.id)
        END)
    FROM tenants t WHERE t.id = c.tenant_id
    $$;

-- Every active channel of one type, of every tenant: what a plugin that
-- listens for all tenants (an SMTP listener, an IMAP poller) serves.
CREATE FUNCTION sb_channels_of_type(p_type text)
    RETURNS TABLE (tenant text, id bigint, name text, settings text, secrets bytea, state text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT t.slug, c.id, c.name, c.settings::text, c.secrets, c.state::text
    FROM channels c JOIN tenants t ON t.id = c.tenant_id
    WHERE c.type = p_type AND c.active
    ORDER BY t.slug, c.id
    $$;

-- Saves a plugin's state of one channel instance.  Returns whether the
-- channel exists.
CREATE FUNCTION sb_channel_state_save(p_tenant text, p_id bigint, p_state jsonb)
    RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH u AS (
        UPDATE channels c SET state = p_state
        FROM tenants t WHERE t.slug = p_tenant AND c.tenant_id = t.id AND c.id = p_id
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
    $$;

-- The claim now also carries what a reply by email needs to thread in the
-- customer's mail client: the ticket's subject, the Message-ID it answers
-- (the ticket's latest inbound message's) and the ticket's last ids; and
-- whether no agent wrote it (a rule's reply: mail marks it auto-replied).
DROP FUNCTION sb_outbox_claim(text[], integer, integer);
CREATE FUNCTION sb_outbox_claim(p_channels text[], p_limit integer, p_lease_seconds integer)
    RETURNS TABLE (tenant_id bigint, outbox_id bigint, attempts integer, channel text,
                   tenant text, ticket bigint, message_id bigint, thread_key text,
                   identity_kind text, identity_value text, body_text text, body_html text,
                   channel_id bigint, subject text, in_reply_to text, refs text,
                   auto_generated boolean)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH due AS (
        SELECT o.tenant_id, o.id FROM outbox o
        WHERE o.status = 'pending' AND o.next_attempt_at <= now() AND o.channel = ANY (p_channels)
        ORDER BY o.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE outbox o SET attempts = o.attempts + 1,
            next_attempt_at = now() + make_interval(secs => p_lease_seconds)
        FROM due WHERE o.tenant_id = due.tenant_id AND o.id = due.id
        RETURNING o.*)
    SELECT c.tenant_id, c.id, c.attempts, c.channel, tn.slug, t.number, m.id, t.thread_key,
           i.kind, i.value, m.body_text, m.body_html, t.channel_id, t.subject,
           (SELECT x.external_id FROM messages x
            WHERE x.tenant_id = t.tenant_id AND x.ticket_id = t.id AND x.direction = 'inbound'
              AND x.external_id IS NOT NULL AND x.id < m.id
            ORDER BY x.id DESC LIMIT 1),
           (SELECT string_agg(r.external_id, ' ' ORDER BY r.id) FROM (
                SELECT x.id, x.external_id FROM messages x
                WHERE x.tenant_id = t.tenant_id AND x.ticket_id = t.id
                  AND x.external_id IS NOT NULL AND x.id < m.id
                ORDER BY x.id DESC LIMIT 20) r),
           m.author_agent_id IS NULL
    FROM claimed c
    JOIN tenants tn ON tn.id = c.tenant_id
    JOIN messages m ON m.tenant_id = c.tenant_id AND m.id = c.message_id
    JOIN tickets t ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id
    LEFT JOIN LATERAL (
        SELECT ci.kind, ci.value FROM customer_identities ci
        WHERE ci.tenant_id = t.tenant_id AND ci.customer_id = t.customer_id
        ORDER BY (ci.kind = CASE c.channel WHEN 'email' THEN 'email' ELSE ci.kind END) DESC, ci.id
        LIMIT 1) i ON true
    $$;

REVOKE ALL ON FUNCTION sb_outbox_claim(text[], integer, integer), sb_channels_of_type(text),
    sb_channel_state_save(text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_outbox_claim(text[], integer, integer), sb_channels_of_type(text),
    sb_channel_state_save(text, bigint, jsonb) TO switchboard_app;

-- Rules see whether a message was sent by a machine (ev.message.auto_submitted).
CREATE OR REPLACE FUNCTION sb_rule_event_snapshot(e rule_events) RETURNS jsonb
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
                        'auto_submitted', m.auto_submitted,
                        'at', extract(epoch FROM m.created_at)::bigint)
                    FROM messages m WHERE m.tenant_id = e.tenant_id AND m.id = e.message_id),
        'agent', (SELECT jsonb_build_object('id', a.id, 'name', a.name, 'email', a.email)
                  FROM agents a WHERE a.id = e.agent_id),
        'sla', (SELECT jsonb_build_object('policy', s.policy, 'state', s.state)
                FROM ticket_sla s WHERE s.tenant_id = e.tenant_id AND s.ticket_id = e.ticket_id))
    $$;

-- An email address belongs to one active channel of one tenant: the SMTP
-- listener serves every tenant, and a second claim would take the first
-- owner's mail.  Kept by a trigger (the table is not the tenants' to read).
CREATE TABLE channel_addresses (
    address    text PRIMARY KEY CHECK (address = lower(address)),
    tenant_id  bigint NOT NULL,
    channel_id bigint NOT NULL,
    FOREIGN KEY (tenant_id, channel_id) REFERENCES channels ON DELETE CASCADE
);
CREATE INDEX channel_addresses_channel ON channel_addresses (tenant_id, channel_id);

-- The addresses an email channel's settings claim, lower-cased.
CREATE FUNCTION sb_channel_addresses_of(p_settings jsonb) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT DISTINCT lower(a) FROM jsonb_array_elements_text(
        CASE jsonb_typeof(p_settings -> 'address')
            WHEN 'array' THEN p_settings -> 'address'
            WHEN 'string' THEN jsonb_build_array(p_settings -> 'address')
            ELSE '[]' END) AS a
    $$;

CREATE FUNCTION sb_channel_addresses_sync() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    DELETE FROM channel_addresses WHERE tenant_id = NEW.tenant_id AND channel_id = NEW.id;
    IF NEW.type = 'email' AND NEW.active THEN
        -- A unique violation here refuses the change (the API's 409).
        INSERT INTO channel_addresses (address, tenant_id, channel_id)
        SELECT a, NEW.tenant_id, NEW.id FROM sb_channel_addresses_of(NEW.settings) AS a;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER channels_addresses AFTER INSERT OR UPDATE OF settings, active ON channels
    FOR EACH ROW EXECUTE FUNCTION sb_channel_addresses_sync();

-- Channels made before: the first claim of an address keeps it.
INSERT INTO channel_addresses (address, tenant_id, channel_id)
SELECT a, c.tenant_id, c.id FROM channels c, sb_channel_addresses_of(c.settings) AS a
WHERE c.type = 'email' AND c.active ORDER BY c.created_at, c.id
ON CONFLICT (address) DO NOTHING;
