-- Social and SMS channels: messages and tickets remember the channel
-- instance they came through (so dedupe, threading and replies are per
-- instance: two bots of one tenant are two channels), outbound messages
-- keep the platform's id for the status updates that name it, files may
-- stay on the platform (a file id, fetched on demand), and the outbox
-- honours a platform's Retry-After.

ALTER TABLE tickets ADD COLUMN channel_id bigint;
ALTER TABLE messages ADD COLUMN channel_id bigint;
ALTER TABLE messages ADD COLUMN delivery_error text CHECK (length(delivery_error) <= 500);

-- Dedupe by (channel, instance, external id): the platforms' ids are only
-- unique per account.
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_channel_external_id_key;
CREATE UNIQUE INDEX messages_external ON messages (tenant_id, channel, coalesce(channel_id, 0),
                                                   external_id);

ALTER TABLE attachments ADD COLUMN file_id text CHECK (length(file_id) <= 2000);
ALTER TABLE attachments ALTER COLUMN sha256 DROP NOT NULL;
ALTER TABLE attachments DROP CONSTRAINT attachments_check;
ALTER TABLE attachments ADD CONSTRAINT attachments_stored_once
    CHECK ((data IS NULL) <> (path IS NULL) OR (data IS NULL AND path IS NULL AND file_id IS NOT NULL));

ALTER TABLE customer_identities DROP CONSTRAINT customer_identities_kind_check;
ALTER TABLE customer_identities ADD CONSTRAINT customer_identities_kind_check
    CHECK (kind IN ('email', 'phone', 'chat', 'telegram', 'whatsapp', 'messenger', 'instagram',
                    'sms', 'other'));

CREATE OR REPLACE FUNCTION sb_message_json(m messages) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'direction', m.direction, 'text', m.body_text, 'html', m.body_html,
        'channel', m.channel, 'channel_id', m.channel_id, 'delivery_status', m.delivery_status,
        'delivery_error', m.delivery_error,
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

-- The webhook a channel's platform calls is exactly /hooks/{tenant}/{id}.
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
            ELSE jsonb_build_object('webhook', '/hooks/' || t.slug || '/' || c.id)
        END)
    FROM tenants t WHERE t.id = c.tenant_id
    $$;

-- The claim now also says which channel instance the ticket came through.
DROP FUNCTION sb_outbox_claim(text[], integer, integer);
CREATE FUNCTION sb_outbox_claim(p_channels text[], p_limit integer, p_lease_seconds integer)
    RETURNS TABLE (tenant_id bigint, outbox_id bigint, attempts integer, channel text,
                   tenant text, ticket bigint, message_id bigint, thread_key text,
                   identity_kind text, identity_value text, body_text text, body_html text,
                   channel_id bigint)
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
           i.kind, i.value, m.body_text, m.body_html, t.channel_id
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

-- A delivery result, as before, plus what the platform said: its id of the
-- message (kept as the message's external id, for status updates) and a
-- Retry-After (seconds, replacing the backoff when given).
DROP FUNCTION sb_outbox_result(bigint, bigint, text, text, integer);
CREATE FUNCTION sb_outbox_result(p_tenant bigint, p_id bigint, p_result text, p_detail text,
                                 p_max_attempts integer, p_external text, p_retry_after integer)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH o AS (
        UPDATE outbox SET
            status = CASE WHEN p_result = 'sent' THEN 'sent'
                          WHEN p_result = 'retry' AND attempts < p_max_attempts THEN 'pending'
                          ELSE 'failed' END,
            next_attempt_at = now() + make_interval(secs => CASE
                WHEN p_retry_after > 0 THEN least(86400, p_retry_after)
                ELSE least(3600, 2 ^ least(attempts, 12)) END),
            last_error = CASE WHEN p_result = 'sent' THEN NULL ELSE left(p_detail, 500) END,
            sent_at = CASE WHEN p_result = 'sent' THEN now() END
        WHERE tenant_id = p_tenant AND id = p_id AND status = 'pending'
        RETURNING tenant_id, message_id, status, last_error)
    UPDATE messages m SET delivery_status = CASE o.status WHEN 'sent' THEN 'sent'
                                                          WHEN 'failed' THEN 'failed'
                                                          ELSE 'pending' END,
        delivery_error = o.last_error,
        -- An id the instance already used (an inbound message's) is not
        -- taken twice: the status updates would not know which one they name.
        external_id = CASE WHEN p_external IS NULL OR EXISTS (
                SELECT 1 FROM messages x JOIN tickets t ON t.tenant_id = m.tenant_id
                    AND t.id = m.ticket_id
                WHERE x.tenant_id = m.tenant_id AND x.channel = m.channel
                  AND coalesce(x.channel_id, 0) = coalesce(t.channel_id, 0)
                  AND x.external_id = p_external AND x.id <> m.id)
            THEN m.external_id ELSE p_external END,
        channel_id = coalesce(m.channel_id, (SELECT t.channel_id FROM tickets t
                                             WHERE t.tenant_id = m.tenant_id AND t.id = m.ticket_id))
    FROM o WHERE m.tenant_id = o.tenant_id AND m.id = o.message_id
    $$;

REVOKE ALL ON FUNCTION sb_outbox_claim(text[], integer, integer),
    sb_outbox_result(bigint, bigint, text, text, integer, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_outbox_claim(text[], integer, integer),
    sb_outbox_result(bigint, bigint, text, text, integer, text, integer) TO switchboard_app;

-- A status a platform reported for one of our outbound messages, found by
-- its instance and the platform's id.  Statuses only move forward (a late
-- "delivered" does not undo "read"); "failed" wins over anything but "read".
-- Returns the number of messages changed (0 or 1).
CREATE FUNCTION sb_message_status(p_channel bigint, p_external text, p_status text,
                                  p_detail text)
    RETURNS integer
    LANGUAGE sql VOLATILE
    AS $$
    WITH ord(status, n) AS (VALUES ('pending', 0), ('sent', 1), ('delivered', 2), ('failed', 3),
                                    ('read', 4)),
    m AS (
        UPDATE messages m SET delivery_status = p_status,
            delivery_error = CASE WHEN p_status = 'failed' THEN left(p_detail, 500) END
        WHERE m.tenant_id = sb_tenant() AND m.channel_id = p_channel
          AND m.external_id = p_external AND m.direction = 'outbound'
          AND (SELECT n FROM ord WHERE status = p_status)
              > coalesce((SELECT n FROM ord WHERE status = m.delivery_status), 0)
        RETURNING m.id, m.ticket_id, m.channel)
    SELECT count(*)::integer FROM m, tickets t
    WHERE t.tenant_id = sb_tenant() AND t.id = m.ticket_id
      AND sb_notify_event('message.status', t.number, m.id,
                          jsonb_build_object('channel', m.channel, 'status', p_status))
    $$;
GRANT EXECUTE ON FUNCTION sb_message_status(bigint, text, text, text) TO switchboard_app;
