-- The outbound pipeline: a reply commits with its outbox row; dispatchers
-- in every worker claim due rows (FOR UPDATE SKIP LOCKED), hand them to the
-- channel plugin and record the result.  A claim is a lease: a worker that
-- dies mid-send leaves the row to be claimed again when the lease ends.

CREATE TABLE outbox (
    tenant_id        bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    message_id       bigint NOT NULL,
    channel          text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES messages ON DELETE CASCADE
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox USING (tenant_id = sb_tenant())
    WITH CHECK (tenant_id = sb_tenant());
GRANT SELECT, INSERT ON outbox TO switchboard_app;

-- Claims up to p_limit due rows of the given channels for p_lease_seconds,
-- across tenants (the dispatcher serves them all), with what a plugin
-- needs to deliver each.
CREATE FUNCTION sb_outbox_claim(p_channels text[], p_limit integer, p_lease_seconds integer)
    RETURNS TABLE (tenant_id bigint, outbox_id bigint, attempts integer, channel text,
                   tenant text, ticket bigint, message_id bigint, thread_key text,
                   identity_kind text, identity_value text, body_text text, body_html text)
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
           i.kind, i.value, m.body_text, m.body_html
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

-- Records a delivery result: 'sent', 'retry' (again after a backoff that
-- doubles per attempt, up to p_max_attempts) or 'failed'.
CREATE FUNCTION sb_outbox_result(p_tenant bigint, p_id bigint, p_result text, p_detail text,
                                 p_max_attempts integer)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    WITH o AS (
        UPDATE outbox SET
            status = CASE WHEN p_result = 'sent' THEN 'sent'
                          WHEN p_result = 'retry' AND attempts < p_max_attempts THEN 'pending'
                          ELSE 'failed' END,
            next_attempt_at = now() + make_interval(secs => least(3600, 2 ^ least(attempts, 12))),
            last_error = CASE WHEN p_result = 'sent' THEN NULL ELSE left(p_detail, 500) END,
            sent_at = CASE WHEN p_result = 'sent' THEN now() END
        WHERE tenant_id = p_tenant AND id = p_id AND status = 'pending'
        RETURNING tenant_id, message_id, status)
    UPDATE messages m SET delivery_status = CASE o.status WHEN 'sent' THEN 'sent'
                                                          WHEN 'failed' THEN 'failed'
                                                          ELSE 'pending' END
    FROM o WHERE m.tenant_id = o.tenant_id AND m.id = o.message_id
    $$;

REVOKE ALL ON FUNCTION sb_outbox_claim(text[], integer, integer),
    sb_outbox_result(bigint, bigint, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_outbox_claim(text[], integer, integer),
    sb_outbox_result(bigint, bigint, text, text, integer) TO switchboard_app;

-- Live events for the agents' stream: one NOTIFY per change, delivered on
-- commit to every worker, which forwards it to the agents of that tenant.
-- Returns true, so that statements can call it in a WHERE clause.
CREATE FUNCTION sb_notify_event(p_type text, p_ticket bigint, p_message bigint,
                                p_extra jsonb DEFAULT '{}')
    RETURNS boolean
    LANGUAGE sql VOLATILE
    AS $$
    SELECT true FROM pg_notify('switchboard_events', (jsonb_build_object(
        'tenant_id', sb_tenant(), 'tenant', (SELECT slug FROM tenants WHERE id = sb_tenant()),
        'type', p_type, 'ticket', p_ticket, 'message', p_message, 'at', now()) || p_extra)::text)
    $$;
GRANT EXECUTE ON FUNCTION sb_notify_event(text, bigint, bigint, jsonb) TO switchboard_app;

-- What a channel plugin may show the customer of a thread: no internal notes.
CREATE FUNCTION sb_thread_messages(p_channel text, p_thread text, p_after bigint)
    RETURNS json
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(json_agg(json_build_object('id', m.id, 'direction', m.direction,
        'text', m.body_text, 'at', m.created_at) ORDER BY m.id), '[]')
    FROM tickets t JOIN messages m ON m.tenant_id = t.tenant_id AND m.ticket_id = t.id
    WHERE t.tenant_id = sb_tenant() AND t.channel = p_channel AND t.thread_key = p_thread
      AND m.id > p_after AND m.direction <> 'note'
    $$;
GRANT EXECUTE ON FUNCTION sb_thread_messages(text, text, bigint) TO switchboard_app;
