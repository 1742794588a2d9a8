-- Statuses that arrive before their message's id: a platform may report
-- "sent" for a reply before sb_outbox_result has committed the id it
-- answered with (WhatsApp often does).  Such a status is kept here and
-- applied when the id is recorded, instead of being acknowledged and lost;
-- what is never claimed (a message sent by other software on the same
-- number) is dropped after a day.  The status lookup now names the
-- channel type too, so that it uses messages_external.

CREATE TABLE message_status_early (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id  bigint NOT NULL,
    external_id text NOT NULL CHECK (length(external_id) <= 500),
    status      text NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    detail      text CHECK (length(detail) <= 500),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel_id, external_id, status)
);
CREATE INDEX message_status_early_age ON message_status_early (tenant_id, received_at);
ALTER TABLE message_status_early ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON message_status_early USING (tenant_id = sb_tenant());
GRANT SELECT, INSERT, DELETE ON message_status_early TO switchboard_app;

-- How far a delivery has come: statuses only move forward (a late
-- "delivered" does not undo "read"); "failed" wins over anything but "read".
CREATE FUNCTION sb_delivery_rank(p_status text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE p_status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'failed' THEN 3
                         WHEN 'read' THEN 4 ELSE 0 END
    $$;

-- Moves message p_message of tenant p_tenant forward to p_status; true when it changed.
CREATE FUNCTION sb_delivery_advance(p_tenant bigint, p_message bigint, p_status text,
                                    p_detail text)
    RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    WITH m AS (
        UPDATE messages m SET delivery_status = p_status,
            delivery_error = CASE WHEN p_status = 'failed' THEN left(p_detail, 500) END
        WHERE m.tenant_id = p_tenant AND m.id = p_message
          AND sb_delivery_rank(p_status) > sb_delivery_rank(m.delivery_status)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM m)
    $$;
GRANT EXECUTE ON FUNCTION sb_delivery_advance(bigint, bigint, text, text) TO switchboard_app;

-- One lock per (tenant, platform id) taken by both sides, so that a status
-- and the recording of its id never miss each other: whichever commits
-- second sees the first.  'stat' keeps it apart from other advisory locks.
CREATE FUNCTION sb_delivery_lock(p_tenant bigint, p_external text) RETURNS void
    LANGUAGE sql VOLATILE
    AS $$ SELECT pg_advisory_xact_lock(1937006964, hashtext(p_tenant::text || ':' || p_external)) $$;
GRANT EXECUTE ON FUNCTION sb_delivery_lock(bigint, text) TO switchboard_app;

-- A status a platform reported for one of our outbound messages, found by
-- the channel type, the instance and the platform's id (messages_external).
-- Returns the number of messages changed (0 or 1); a status for an id not
-- recorded yet is kept for sb_outbox_result and counts 0.
DROP FUNCTION sb_message_status(bigint, text, text, text);
CREATE FUNCTION sb_message_status(p_type text, p_channel bigint, p_external text, p_status text,
                                  p_detail text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    v_id bigint;
    v_ticket bigint;
BEGIN
    IF sb_tenant() IS NULL THEN
        RETURN 0; -- no such tenant
    END IF;
    PERFORM sb_delivery_lock(sb_tenant(), p_external);
    -- A statement after the lock: it sees an id committed while we waited.
    SELECT m.id, t.number INTO v_id, v_ticket
    FROM messages m JOIN tickets t ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id
    WHERE m.tenant_id = sb_tenant() AND m.channel = p_type
      AND coalesce(m.channel_id, 0) = p_channel AND m.external_id = p_external
      AND m.direction = 'outbound';
    IF v_id IS NULL THEN
        DELETE FROM message_status_early
        WHERE tenant_id = sb_tenant() AND received_at < now() - interval '1 day';
        INSERT INTO message_status_early (tenant_id, channel_id, external_id, status, detail)
        VALUES (sb_tenant(), p_channel, p_external, p_status, left(p_detail, 500))
        ON CONFLICT DO NOTHING;
        RETURN 0;
    END IF;
    IF NOT sb_delivery_advance(sb_tenant(), v_id, p_status, p_detail) THEN
        RETURN 0;
    END IF;
    PERFORM sb_notify_event('message.status', v_ticket, v_id,
                            jsonb_build_object('channel', p_type, 'status', p_status));
    RETURN 1;
END
$$;
GRANT EXECUTE ON FUNCTION sb_message_status(text, bigint, text, text, text) TO switchboard_app;

-- As in 0011, and then the statuses that came before the id are applied.
CREATE OR REPLACE FUNCTION sb_outbox_result(p_tenant bigint, p_id bigint, p_result text,
                                            p_detail text, p_max_attempts integer,
                                            p_external text, p_retry_after integer)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
DECLARE
    v_message bigint;
    v_channel bigint;
    v_external text;
    e record;
BEGIN
    IF p_external IS NOT NULL THEN
        PERFORM sb_delivery_lock(p_tenant, p_external);
    END IF;
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
    RETURNING m.id, coalesce(m.channel_id, 0), m.external_id INTO v_message, v_channel, v_external;
    IF v_message IS NULL OR p_external IS NULL OR v_external IS DISTINCT FROM p_external THEN
        RETURN;
    END IF;
    FOR e IN DELETE FROM message_status_early
             WHERE tenant_id = p_tenant AND channel_id = v_channel AND external_id = p_external
             RETURNING status, detail LOOP
        PERFORM sb_delivery_advance(p_tenant, v_message, e.status, e.detail);
    END LOOP;
END
$$;
