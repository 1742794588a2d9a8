-- The core model: agents and their memberships in tenants, teams,
-- organizations, customers and their identities, tickets, messages,
-- attachments and the audit trail, with row-level security keyed by tenant.
--
-- Agents, platform sessions and login throttling are platform-wide (an agent
-- may work for several tenants); every other table leads its keys with
-- tenant_id and is visible only to transactions that set
-- switchboard.tenant_id.  The server runs its request transactions as
-- switchboard_app, which owns nothing, so RLS always applies to it.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchboard_app') THEN
        CREATE ROLE switchboard_app NOLOGIN;
    END IF;
    -- Whoever migrates (and so runs the server) must be able to SET ROLE.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT switchboard_app TO %I', current_user);
    END IF;
END
$$;

CREATE FUNCTION sb_tenant() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('switchboard.tenant_id', true), '')::bigint $$;

CREATE FUNCTION sb_agent() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('switchboard.agent_id', true), '')::bigint $$;

-- Who acts, for the audit trail: an agent, or an integration's API key.
CREATE FUNCTION sb_actor_kind() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT CASE WHEN nullif(current_setting('switchboard.api_key_id', true), '') IS NOT NULL
                      THEN 'api_key' ELSE 'agent' END $$;

CREATE FUNCTION sb_actor_id() RETURNS bigint
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(nullif(current_setting('switchboard.api_key_id', true), '')::bigint,
                          sb_agent()) $$;

-- ======================== platform ========================

CREATE TABLE agents (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email             text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash     text,
    active            boolean NOT NULL DEFAULT true,
    is_platform_admin boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX agents_email ON agents (lower(email));

CREATE TABLE sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    bigint NOT NULL REFERENCES agents ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    client_ip   text
);

CREATE TABLE login_failures (
    key           text PRIMARY KEY,          -- 'ip:...' or 'account:...'
    window_start  timestamptz NOT NULL,
    failures      integer NOT NULL
);

-- ======================== tenants ========================

CREATE TABLE memberships (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    agent_id    bigint NOT NULL REFERENCES agents ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id)
);
CREATE INDEX memberships_agent ON memberships (agent_id);

CREATE TABLE api_keys (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_hash    bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE teams (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE team_members (
    tenant_id   bigint NOT NULL,
    team_id     bigint NOT NULL,
    agent_id    bigint NOT NULL,
    PRIMARY KEY (tenant_id, team_id, agent_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES memberships ON DELETE CASCADE
);

CREATE TABLE organizations (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE customers (
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    kind            text NOT NULL DEFAULT 'external' CHECK (kind IN ('external', 'internal')),
    tier            text CHECK (length(tier) <= 50),
    language        text CHECK (length(language) <= 35),
    organization_id bigint,
    merged_into     bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, organization_id) REFERENCES organizations,
    FOREIGN KEY (tenant_id, merged_into) REFERENCES customers
);

CREATE TABLE customer_identities (
    tenant_id   bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('email', 'phone', 'chat', 'telegram', 'whatsapp',
                                              'messenger', 'sms', 'other')),
    value       text NOT NULL CHECK (length(value) BETWEEN 1 AND 320),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, value),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers ON DELETE CASCADE
);
CREATE INDEX customer_identities_customer ON customer_identities (tenant_id, customer_id);

CREATE TABLE ticket_counters (
    tenant_id   bigint PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    last_number bigint NOT NULL
);

CREATE TABLE tickets (
    tenant_id         bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id                bigint GENERATED ALWAYS AS IDENTITY,
    number            bigint NOT NULL,
    subject           text NOT NULL CHECK (length(subject) BETWEEN 1 AND 500),
    status            text NOT NULL DEFAULT 'new'
                      CHECK (status IN ('new', 'open', 'pending', 'on_hold', 'solved', 'closed')),
    priority          text NOT NULL DEFAULT 'normal'
                      CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    channel           text NOT NULL DEFAULT 'api',
    thread_key        text,             -- a channel's conversation (chat visitor, mail thread)
    customer_id       bigint NOT NULL,
    assignee_id       bigint,
    team_id           bigint,
    tags              text[] NOT NULL DEFAULT '{}',
    custom_fields     jsonb NOT NULL DEFAULT '{}',
    merged_into       bigint,
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    first_response_at timestamptz,
    solved_at         timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers,
    FOREIGN KEY (tenant_id, assignee_id) REFERENCES memberships (tenant_id, agent_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams
);
CREATE INDEX tickets_list ON tickets (tenant_id, updated_at DESC, id DESC);
CREATE INDEX tickets_customer ON tickets (tenant_id, customer_id);
CREATE INDEX tickets_thread ON tickets (tenant_id, channel, thread_key) WHERE thread_key IS NOT NULL;
CREATE INDEX tickets_assignee ON tickets (tenant_id, assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tickets_tags ON tickets USING gin (tags);
CREATE INDEX tickets_subject_fts ON tickets USING gin (to_tsvector('simple', subject));

CREATE TABLE messages (
    tenant_id          bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id                 bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id          bigint NOT NULL,
    direction          text NOT NULL CHECK (direction IN ('inbound', 'outbound', 'note')),
    author_agent_id    bigint,
    author_customer_id bigint,
    body_text          text NOT NULL CHECK (length(body_text) <= 1000000),
    body_html          text,
    channel            text NOT NULL DEFAULT 'api',
    external_id        text,
    delivery_status    text CHECK (delivery_status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel, external_id),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, author_customer_id) REFERENCES customers
);
CREATE INDEX messages_ticket ON messages (tenant_id, ticket_id, id);
CREATE INDEX messages_fts ON messages USING gin (to_tsvector('simple', body_text));

CREATE TABLE attachments (
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    message_id    bigint NOT NULL,
    filename      text NOT NULL CHECK (length(filename) <= 255),
    content_type  text NOT NULL CHECK (length(content_type) <= 255),
    size          bigint NOT NULL CHECK (size >= 0),
    sha256        bytea NOT NULL,
    data          bytea,          -- small files live here
    path          text,           -- large ones under the data dir
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, message_id) REFERENCES messages ON DELETE CASCADE,
    CHECK ((data IS NULL) <> (path IS NULL))
);

CREATE TABLE events (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id   bigint,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('agent', 'customer', 'system', 'api_key')),
    actor_id    bigint,
    action      text NOT NULL,
    before      jsonb,
    after       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_ticket ON events (tenant_id, ticket_id, id);

-- ======================== isolation ========================

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'teams', 'team_members', 'organizations', 'customers',
                             'customer_identities', 'ticket_counters', 'tickets', 'messages',
                             'attachments', 'events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())'
                       ' WITH CHECK (tenant_id = sb_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO switchboard_app', t);
    END LOOP;
END
$$;

-- Memberships are seen within the tenant, and an agent sees its own in
-- every tenant (to list them).
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = sb_tenant() OR agent_id = sb_agent())
    WITH CHECK (tenant_id = sb_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON memberships TO switchboard_app;

-- Append-only: the server may add audit events, never change them.
REVOKE UPDATE, DELETE ON events FROM switchboard_app;

GRANT SELECT, INSERT ON tenants TO switchboard_app;
GRANT SELECT, INSERT, UPDATE ON agents TO switchboard_app;
GRANT SELECT, INSERT, DELETE ON sessions TO switchboard_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_failures TO switchboard_app;
GRANT SELECT ON schema_migrations TO switchboard_app;

-- ======================== JSON shapes ========================
-- The API's documents are built where the data is; the server passes them
-- through.  These run as the caller, so RLS applies inside them too.

CREATE FUNCTION sb_customer_json(c customers) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'name', c.name, 'kind', c.kind, 'tier', c.tier, 'language', c.language,
        'organization_id', c.organization_id,
        'email', (SELECT i.value FROM customer_identities i
                  WHERE i.tenant_id = c.tenant_id AND i.customer_id = c.id AND i.kind = 'email'
                  ORDER BY i.id LIMIT 1),
        'identities', coalesce((SELECT jsonb_agg(jsonb_build_object('id', i.id, 'kind', i.kind, 'value', i.value)
                                                 ORDER BY i.id)
                                FROM customer_identities i
                                WHERE i.tenant_id = c.tenant_id AND i.customer_id = c.id), '[]'),
        'created_at', c.created_at)
    $$;

CREATE FUNCTION sb_agent_json(p_tenant bigint, p_agent bigint) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('id', a.id, 'name', a.name, 'email', a.email)
    FROM agents a WHERE a.id = p_agent
    $$;

CREATE FUNCTION sb_ticket_json(t tickets) RETURNS jsonb
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
        'first_response_at', t.first_response_at, 'solved_at', t.solved_at)
    $$;

CREATE FUNCTION sb_message_json(m messages) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'direction', m.direction, 'text', m.body_text, 'html', m.body_html,
        'channel', m.channel, 'delivery_status', m.delivery_status,
        'attachments', coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id,
                                    'filename', a.filename, 'content_type', a.content_type,
                                    'size', a.size) ORDER BY a.id)
                                 FROM attachments a
                                 WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id), '[]'),
        'author', CASE WHEN m.author_agent_id IS NOT NULL
                       THEN jsonb_build_object('kind', 'agent', 'id', m.author_agent_id)
                       WHEN m.author_customer_id IS NOT NULL
                       THEN jsonb_build_object('kind', 'customer', 'id', m.author_customer_id)
                  END,
        'created_at', m.created_at)
    $$;

-- An integration presents an API key: the key's hash finds its tenant and
-- role, across tenants, without opening api_keys to the server's role.
CREATE FUNCTION sb_api_key_lookup(p_hash bytea)
    RETURNS TABLE (tenant_id bigint, key_id bigint, role text, slug text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    SELECT k.tenant_id, k.id, k.role, t.slug FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
    WHERE k.key_hash = p_hash AND k.revoked_at IS NULL
    $$;
REVOKE ALL ON FUNCTION sb_api_key_lookup(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sb_api_key_lookup(bytea) TO switchboard_app;

GRANT EXECUTE ON FUNCTION sb_tenant(), sb_agent(), sb_actor_kind(), sb_actor_id(),
    sb_customer_json(customers),
    sb_agent_json(bigint, bigint), sb_ticket_json(tickets), sb_message_json(messages)
    TO switchboard_app;

-- ======================== helpers for the API ========================

-- Keyset cursors are opaque to clients: "key|id" in URL-safe base64.
CREATE FUNCTION sb_cursor_encode(k text, id bigint) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT translate(encode(convert_to(k || '|' || id::text, 'UTF8'), 'base64'),
                           '+/=' || chr(10), '-_.') $$;

CREATE FUNCTION sb_cursor_part(cursor text, n integer) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT split_part(convert_from(decode(translate(cursor, '-_.', '+/='), 'base64'), 'UTF8'),
                            '|', n) $$;

-- The ticket lifecycle: which status may follow which.
CREATE FUNCTION sb_status_transition_ok(old text, new text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT old = new OR CASE old
        WHEN 'new'     THEN new IN ('open', 'pending', 'on_hold', 'solved', 'closed')
        WHEN 'open'    THEN new IN ('pending', 'on_hold', 'solved', 'closed')
        WHEN 'pending' THEN new IN ('open', 'on_hold', 'solved', 'closed')
        WHEN 'on_hold' THEN new IN ('open', 'pending', 'solved', 'closed')
        WHEN 'solved'  THEN new IN ('open', 'closed')
        ELSE false END $$;

GRANT EXECUTE ON FUNCTION sb_cursor_encode(text, bigint), sb_cursor_part(text, integer),
    sb_status_transition_ok(text, text) TO switchboard_app;
