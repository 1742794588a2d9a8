-- Channel instances: a tenant's configured channels (a chat widget, a
-- mailbox, a messenger account), each of a plugin's type, with settings the
-- plugin validated and secrets sealed by the server (never stored in clear,
-- never returned: only their names are).

CREATE TABLE channels (
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    type          text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,31}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    settings      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    secrets       bytea,
    secret_names  text[] NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

ALTER TABLE channels ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON channels USING (tenant_id = sb_tenant())
    WITH CHECK (tenant_id = sb_tenant());
GRANT SELECT, INSERT, UPDATE ON channels TO switchboard_app;

-- What the API shows of a channel: settings, the names of its secrets, and
-- what to configure outside Switchboard to reach it.
CREATE FUNCTION sb_channel_json(c channels) RETURNS jsonb
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
            ELSE jsonb_build_object('webhook', '/hooks/' || t.slug || '/' || c.id || '/')
        END)
    FROM tenants t WHERE t.id = c.tenant_id
    $$;
GRANT EXECUTE ON FUNCTION sb_channel_json(channels) TO switchboard_app;
