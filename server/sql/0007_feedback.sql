-- Customer feedback: a survey offered when a ticket is solved (a link with
-- a signed token, or a question on the ticket's channel), answered once
-- with a rating from 1 to 5 and an optional comment.  The rating is kept
-- against the ticket, its customer and the agent who solved it, and raises
-- the feedback.received rule event.

CREATE TABLE surveys (
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id    bigint NOT NULL,
    agent_id     bigint,                 -- who solved the ticket (its assignee then)
    nonce        bytea NOT NULL UNIQUE,  -- what the link's signed token names
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    answered_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE CASCADE
);
CREATE INDEX surveys_ticket ON surveys (tenant_id, ticket_id);
CREATE INDEX surveys_created ON surveys (tenant_id, created_at);

CREATE TABLE feedback (
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    survey_id    bigint NOT NULL,
    ticket_id    bigint NOT NULL,
    customer_id  bigint NOT NULL,
    agent_id     bigint,
    rating       smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment      text CHECK (length(comment) <= 5000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, survey_id),
    FOREIGN KEY (tenant_id, survey_id) REFERENCES surveys ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers
);
CREATE INDEX feedback_ticket ON feedback (tenant_id, ticket_id);
CREATE INDEX feedback_created ON feedback (tenant_id, created_at);
CREATE INDEX feedback_agent ON feedback (tenant_id, agent_id, created_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['surveys', 'feedback']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())'
                       ' WITH CHECK (tenant_id = sb_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO switchboard_app', t);
    END LOOP;
END
$$;

-- ======================== surveys ========================

-- Offers a survey on a ticket (a = {"nonce": hex, "expires": unix seconds,
-- "text"?, "html"?}): the survey row, and when there is text, the message
-- that carries the link to the customer on the ticket's channel.
CREATE FUNCTION sb_survey_offer(p_ticket bigint, a jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    t tickets;
    sid bigint;
    msg bigint;
BEGIN
    SELECT * INTO t FROM tickets WHERE tenant_id = sb_tenant() AND id = p_ticket;
    INSERT INTO surveys (tenant_id, ticket_id, agent_id, nonce, expires_at)
    VALUES (t.tenant_id, t.id, t.assignee_id, decode(a->>'nonce', 'hex'),
            to_timestamp((a->>'expires')::double precision))
    RETURNING id INTO sid;
    IF coalesce(a->>'text', '') <> '' THEN
        msg := sb_ticket_system_message(t, 'reply', a->>'text', a->>'html');
    END IF;
    RETURN jsonb_build_object('survey', sid, 'message_id', msg);
END
$$;

-- A customer's message that is only a digit from 1 to 5, on a ticket with
-- an open survey, answers it (the channel-native survey).
CREATE FUNCTION sb_survey_reply_rating(p_ticket bigint, p_text text) RETURNS integer
    LANGUAGE sql STABLE
    AS $$
    SELECT btrim(p_text)::integer FROM surveys s
    WHERE btrim(p_text) ~ '^[1-5]$' AND s.tenant_id = sb_tenant() AND s.ticket_id = p_ticket
      AND s.answered_at IS NULL AND s.expires_at > now()
    LIMIT 1
    $$;

-- Records an answer.  Returns 'ok', or why not: 'unknown', 'answered',
-- 'expired'.  Runs in the survey's tenant (RLS applies).
CREATE FUNCTION sb_survey_answer(p_nonce bytea, p_rating integer, p_comment text, p_via text)
    RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    s surveys;
    t tickets;
BEGIN
    SELECT * INTO s FROM surveys WHERE tenant_id = sb_tenant() AND nonce = p_nonce FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'unknown';
    ELSIF s.answered_at IS NOT NULL THEN
        RETURN 'answered';
    ELSIF s.expires_at <= now() THEN
        RETURN 'expired';
    END IF;
    SELECT * INTO t FROM tickets WHERE tenant_id = s.tenant_id AND id = s.ticket_id;
    INSERT INTO feedback (tenant_id, survey_id, ticket_id, customer_id, agent_id, rating, comment)
    VALUES (s.tenant_id, s.id, s.ticket_id, t.customer_id, s.agent_id, p_rating,
            nullif(btrim(p_comment), ''));
    UPDATE surveys SET answered_at = now() WHERE tenant_id = s.tenant_id AND id = s.id;
    INSERT INTO rule_events (tenant_id, type, ticket_id, agent_id, data)
    VALUES (s.tenant_id, 'feedback.received', s.ticket_id, s.agent_id,
            jsonb_build_object('rating', p_rating, 'comment', nullif(btrim(p_comment), ''),
                               'via', p_via));
    PERFORM pg_notify('switchboard_rule_events', '');
    INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)
    VALUES (s.tenant_id, s.ticket_id, 'customer', t.customer_id, 'feedback.received',
            jsonb_build_object('rating', p_rating, 'via', p_via));
    PERFORM sb_notify_event('feedback.received', t.number, NULL,
                            jsonb_build_object('rating', p_rating));
    RETURN 'ok';
END
$$;

-- What the survey page shows: the state, and which ticket it is about.
CREATE FUNCTION sb_survey_state(p_nonce bytea) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'state', CASE WHEN s.answered_at IS NOT NULL THEN 'answered'
                      WHEN s.expires_at <= now() THEN 'expired' ELSE 'open' END,
        'ticket', t.number, 'subject', t.subject,
        'tenant', (SELECT name FROM tenants WHERE id = s.tenant_id))
    FROM surveys s JOIN tickets t ON t.tenant_id = s.tenant_id AND t.id = s.ticket_id
    WHERE s.tenant_id = sb_tenant() AND s.nonce = p_nonce
    $$;

CREATE FUNCTION sb_messages_survey_reply() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    rating integer;
BEGIN
    IF NEW.direction <> 'inbound' THEN
        RETURN NULL;
    END IF;
    rating := sb_survey_reply_rating(NEW.ticket_id, NEW.body_text);
    IF rating IS NOT NULL THEN
        PERFORM sb_survey_answer((SELECT nonce FROM surveys WHERE tenant_id = NEW.tenant_id
                                  AND ticket_id = NEW.ticket_id AND answered_at IS NULL
                                  AND expires_at > now() ORDER BY id DESC LIMIT 1),
                                 rating, NULL, NEW.channel);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_survey_reply AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION sb_messages_survey_reply();

GRANT EXECUTE ON FUNCTION sb_survey_offer(bigint, jsonb), sb_survey_reply_rating(bigint, text),
    sb_survey_answer(bytea, integer, text, text), sb_survey_state(bytea) TO switchboard_app;
