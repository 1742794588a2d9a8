-- The compensation ledger: goodwill given to a customer when the business
-- failed them (a discount, a credit, a refund, a gift, a bonus), who gave it
-- (an agent or a rule) and whether it waited for a supervisor's approval.
-- Authority limits per role and currency, and a monthly budget per currency,
-- decide that here, where the data is; the API validates input and passes
-- documents through.  Not a payment system: nothing here moves money.

-- ======================== tables ========================

CREATE TABLE compensations (
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id       bigint,
    customer_id     bigint NOT NULL,
    kind            text NOT NULL
                    CHECK (kind IN ('discount', 'credit', 'refund', 'gift', 'bonus')),
    amount          numeric(12,2) CHECK (amount > 0),
    currency        text CHECK (currency ~ '^[A-Z]{3}$'),
    description     text CHECK (length(description) BETWEEN 1 AND 2000),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 100),
    -- Agents are platform-wide and leave tenants: the issuer and the
    -- decider are recorded as they were, without a foreign key.
    issued_by_agent bigint,
    issued_by_rule  text CHECK (length(issued_by_rule) BETWEEN 1 AND 200),
    status          text NOT NULL
                    CHECK (status IN ('issued', 'pending_approval', 'approved', 'rejected')),
    decided_by      bigint,
    decided_at      timestamptz,
    decision_note   text CHECK (length(decision_note) BETWEEN 1 AND 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- A deleted ticket leaves its compensations in the ledger.
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets ON DELETE SET NULL (ticket_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers,
    -- Named "<table>_<column>_check..." so that the API names the field.
    CONSTRAINT compensations_currency_check_amount CHECK ((amount IS NULL) = (currency IS NULL)),
    CONSTRAINT compensations_description_check_required
        CHECK (amount IS NOT NULL OR description IS NOT NULL),
    CONSTRAINT compensations_issued_by_check
        CHECK ((issued_by_agent IS NULL) <> (issued_by_rule IS NULL)),
    CONSTRAINT compensations_status_check_decided
        CHECK ((status IN ('approved', 'rejected')) = (decided_at IS NOT NULL))
);
CREATE INDEX compensations_ticket ON compensations (tenant_id, ticket_id, id)
    WHERE ticket_id IS NOT NULL;
CREATE INDEX compensations_customer ON compensations (tenant_id, customer_id, id);
CREATE INDEX compensations_status ON compensations (tenant_id, status, id);
CREATE INDEX compensations_month ON compensations (tenant_id, created_at);
-- What the budget check sums: the month's granted amounts in one currency.
CREATE INDEX compensations_granted ON compensations (tenant_id, currency, created_at)
    WHERE status IN ('issued', 'approved') AND amount IS NOT NULL;

-- How much one role may grant on its own, per currency.  No row: an agent
-- may grant nothing (every monetary compensation waits for approval), a
-- supervisor or an admin anything.
CREATE TABLE compensation_authority (
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    max_amount  numeric(12,2) NOT NULL CHECK (max_amount >= 0),
    PRIMARY KEY (tenant_id, role, currency)
);

-- What a tenant grants per calendar month (UTC) and currency, approvals
-- aside.  No row: no limit.
CREATE TABLE compensation_budgets (
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    monthly_amount  numeric(12,2) NOT NULL CHECK (monthly_amount >= 0),
    PRIMARY KEY (tenant_id, currency)
);

-- ======================== isolation ========================

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['compensations', 'compensation_authority', 'compensation_budgets']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())'
                       ' WITH CHECK (tenant_id = sb_tenant())', t);
    END LOOP;
END
$$;

-- The ledger is append-only but for the decision on a pending entry.
GRANT SELECT, INSERT ON compensations TO switchboard_app;
GRANT UPDATE (status, decided_by, decided_at, decision_note) ON compensations TO switchboard_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON compensation_authority, compensation_budgets
    TO switchboard_app;

-- ======================== documents ========================

CREATE FUNCTION sb_compensation_json(c compensations) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', c.id,
        'ticket', (SELECT t.number FROM tickets t
                   WHERE t.tenant_id = c.tenant_id AND t.id = c.ticket_id),
        'customer_id', c.customer_id, 'kind', c.kind, 'amount', c.amount,
        'currency', c.currency, 'description', c.description, 'reason', c.reason,
        'issued_by', CASE WHEN c.issued_by_rule IS NOT NULL
                          THEN jsonb_build_object('kind', 'rule', 'name', c.issued_by_rule)
                          ELSE jsonb_build_object('kind', 'agent', 'id', c.issued_by_agent) END,
        'status', c.status, 'decided_by', c.decided_by, 'decided_at', c.decided_at,
        'decision_note', c.decision_note, 'created_at', c.created_at)
    $$;

-- The tenant's policy as the API shows it: only what is set; defaults apply
-- to the rest.
CREATE FUNCTION sb_compensation_policy_json() RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'authority', coalesce((SELECT jsonb_object_agg(x.role, x.limits)
                               FROM (SELECT a.role, jsonb_object_agg(a.currency, a.max_amount)
                                            AS limits
                                     FROM compensation_authority a
                                     WHERE a.tenant_id = sb_tenant() GROUP BY a.role) x),
                              '{}'),
        'monthly_budget', coalesce((SELECT jsonb_object_agg(b.currency, b.monthly_amount)
                                    FROM compensation_budgets b
                                    WHERE b.tenant_id = sb_tenant()), '{}'))
    $$;

-- ======================== checks ========================

-- Raises 22023 naming p_field unless p_amount fits numeric(12,2) exactly:
-- more than zero (or at least zero with p_zero_ok), at most two decimals.
CREATE FUNCTION sb_compensation_amount_check(p_amount numeric, p_field text, p_zero_ok boolean)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    IF p_amount IS NULL OR p_amount = 'NaN'::numeric THEN
        RAISE EXCEPTION '% must be a number', p_field USING ERRCODE = '22023', COLUMN = p_field;
    END IF;
    IF p_amount < 0 OR (p_amount = 0 AND NOT p_zero_ok) THEN
        RAISE EXCEPTION '% must be %', p_field,
            CASE WHEN p_zero_ok THEN 'zero or more' ELSE 'more than zero' END
            USING ERRCODE = '22023', COLUMN = p_field;
    END IF;
    IF p_amount >= 10000000000 THEN
        RAISE EXCEPTION '% must be less than 10000000000', p_field
            USING ERRCODE = '22023', COLUMN = p_field;
    END IF;
    IF p_amount <> round(p_amount, 2) THEN
        RAISE EXCEPTION '% must have at most two decimal places', p_field
            USING ERRCODE = '22023', COLUMN = p_field;
    END IF;
END
$$;

-- Serializes what reads and then grows one tenant's granted total in one
-- currency, so that two issuers cannot both fit in the same remainder.  The
-- lock is the transaction's; its first key is this ledger's namespace
-- ('comp'), apart from every one-key advisory lock.
CREATE FUNCTION sb_compensation_lock(p_tenant bigint, p_currency text) RETURNS void
    LANGUAGE sql VOLATILE
    AS $$ SELECT pg_advisory_xact_lock(1668246896, hashtext(p_tenant::text || ':' || p_currency)) $$;

-- ======================== issuing ========================

-- Records a compensation within the tenant of the transaction (RLS
-- applies: SECURITY INVOKER) and returns its document.  p_ticket is the
-- ticket's internal id, whose customer is compensated; without a ticket,
-- p_customer.  The issuer is the rule p_rule, or else the transaction's
-- agent with its role in the tenant.  The status is 'pending_approval' when
-- an agent goes over its role's authority, or when the amount would take
-- the month's granted total in its currency past the budget; 'issued'
-- otherwise.  Bad input raises 22023 naming the parameter (COLUMN); an
-- issuer that is neither a rule nor an agent of the tenant raises 42501.
-- Must run in READ COMMITTED: the budget sum reads what committed before
-- the lock was granted.
CREATE FUNCTION sb_compensation_issue(p_ticket bigint, p_customer bigint, p_kind text,
                                      p_amount numeric, p_currency text, p_description text,
                                      p_reason text, p_rule text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    AS $$
DECLARE
    v_tenant   bigint := sb_tenant();
    v_agent    bigint;
    v_role     text;
    v_customer bigint;
    v_merged   bigint;
    v_number   bigint;
    v_limit    numeric;
    v_budget   numeric;
    v_granted  numeric;
    v_month    timestamptz;
    v_status   text := 'issued';
    v_action   text;
    v_doc      jsonb;
    c          compensations;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'compensations are issued within a tenant' USING ERRCODE = '42501';
    END IF;

    -- What was given, and why.
    IF p_kind IS NULL OR p_kind NOT IN ('discount', 'credit', 'refund', 'gift', 'bonus') THEN
        RAISE EXCEPTION 'kind must be one of: discount, credit, refund, gift, bonus'
            USING ERRCODE = '22023', COLUMN = 'kind';
    END IF;
    IF p_reason IS NULL OR length(p_reason) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'reason is required, at most 100 characters'
            USING ERRCODE = '22023', COLUMN = 'reason';
    END IF;
    IF p_description IS NOT NULL AND length(p_description) NOT BETWEEN 1 AND 2000 THEN
        RAISE EXCEPTION 'description must be 1 to 2000 characters'
            USING ERRCODE = '22023', COLUMN = 'description';
    END IF;
    IF p_amount IS NOT NULL THEN
        PERFORM sb_compensation_amount_check(p_amount, 'amount', false);
        IF p_currency IS NULL THEN
            RAISE EXCEPTION 'currency is required with an amount'
                USING ERRCODE = '22023', COLUMN = 'currency';
        END IF;
    ELSE
        IF p_currency IS NOT NULL THEN
            RAISE EXCEPTION 'currency is only for a compensation with an amount'
                USING ERRCODE = '22023', COLUMN = 'currency';
        END IF;
        IF p_description IS NULL THEN
            RAISE EXCEPTION 'description is required for a compensation without an amount'
                USING ERRCODE = '22023', COLUMN = 'description';
        END IF;
    END IF;
    IF p_currency IS NOT NULL AND p_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'currency must be an ISO 4217 code of three upper-case letters'
            USING ERRCODE = '22023', COLUMN = 'currency';
    END IF;

    -- Who gives it.
    IF p_rule IS NOT NULL THEN
        IF length(p_rule) NOT BETWEEN 1 AND 200 THEN
            RAISE EXCEPTION 'rule must be 1 to 200 characters'
                USING ERRCODE = '22023', COLUMN = 'rule';
        END IF;
    ELSE
        v_agent := sb_agent();
        SELECT m.role INTO v_role FROM memberships m
        WHERE m.tenant_id = v_tenant AND m.agent_id = v_agent;
        IF v_agent IS NULL OR v_role IS NULL OR v_role = 'viewer' THEN
            RAISE EXCEPTION 'compensations are issued by an agent of the tenant or by a rule'
                USING ERRCODE = '42501';
        END IF;
    END IF;

    -- To whom.
    IF p_ticket IS NOT NULL THEN
        SELECT t.customer_id, t.number INTO v_customer, v_number FROM tickets t
        WHERE t.tenant_id = v_tenant AND t.id = p_ticket;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ticket does not name a ticket' USING ERRCODE = '22023', COLUMN = 'ticket';
        END IF;
        IF p_customer IS NOT NULL AND p_customer <> v_customer THEN
            RAISE EXCEPTION 'customer is not the customer of the ticket'
                USING ERRCODE = '22023', COLUMN = 'customer';
        END IF;
    ELSIF p_customer IS NOT NULL THEN
        SELECT cu.id, cu.merged_into INTO v_customer, v_merged FROM customers cu
        WHERE cu.tenant_id = v_tenant AND cu.id = p_customer;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'customer does not name a customer'
                USING ERRCODE = '22023', COLUMN = 'customer';
        END IF;
        IF v_merged IS NOT NULL THEN
            RAISE EXCEPTION 'customer was merged into customer %', v_merged
                USING ERRCODE = '22023', COLUMN = 'customer';
        END IF;
    ELSE
        RAISE EXCEPTION 'a ticket or a customer is required'
            USING ERRCODE = '22023', COLUMN = 'ticket';
    END IF;

    -- Within the issuer's authority?  Rules have none of their own: only
    -- the budget bounds them.
    IF p_amount IS NOT NULL AND p_rule IS NULL THEN
        SELECT a.max_amount INTO v_limit FROM compensation_authority a
        WHERE a.tenant_id = v_tenant AND a.role = v_role AND a.currency = p_currency;
        IF NOT FOUND THEN
            v_limit := CASE WHEN v_role = 'agent' THEN 0 END;
        END IF;
        IF v_limit IS NOT NULL AND p_amount > v_limit THEN
            v_status := 'pending_approval';
        END IF;
    END IF;

    -- Within the month's budget?  Sum under the lock: each statement of a
    -- READ COMMITTED function sees what committed before it started.
    IF p_amount IS NOT NULL AND v_status = 'issued' THEN
        PERFORM sb_compensation_lock(v_tenant, p_currency);
        SELECT b.monthly_amount INTO v_budget FROM compensation_budgets b
        WHERE b.tenant_id = v_tenant AND b.currency = p_currency;
        IF v_budget IS NOT NULL THEN
            v_month := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            SELECT coalesce(sum(x.amount), 0) INTO v_granted FROM compensations x
            WHERE x.tenant_id = v_tenant AND x.currency = p_currency
              AND x.status IN ('issued', 'approved') AND x.amount IS NOT NULL
              AND x.created_at >= v_month AND x.created_at < v_month + interval '1 month';
            IF v_granted + p_amount > v_budget THEN
                v_status := 'pending_approval';
            END IF;
        END IF;
    END IF;

    INSERT INTO compensations (tenant_id, ticket_id, customer_id, kind, amount, currency,
                               description, reason, issued_by_agent, issued_by_rule, status)
    VALUES (v_tenant, p_ticket, v_customer, p_kind, p_amount, p_currency, p_description,
            p_reason, v_agent, p_rule, v_status)
    RETURNING * INTO c;

    v_doc := sb_compensation_json(c);
    v_action := CASE v_status WHEN 'issued' THEN 'compensation.issued'
                              ELSE 'compensation.requested' END;
    IF p_rule IS NOT NULL THEN
        INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)
        VALUES (v_tenant, p_ticket, 'system', NULL, v_action,
                v_doc || jsonb_build_object('rule', p_rule));
    ELSE
        INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, after)
        VALUES (v_tenant, p_ticket, sb_actor_kind(), sb_actor_id(), v_action, v_doc);
    END IF;
    PERFORM sb_notify_event(v_action, v_number, NULL, jsonb_build_object('compensation', c.id));
    RETURN v_doc;
END
$$;

-- ======================== decisions ========================

-- Approves (p_approve) or rejects a pending compensation as the
-- transaction's agent, who must be a supervisor or an admin of the tenant
-- (42501 otherwise).  Returns its document; NULL when the tenant has no
-- such compensation; raises 55000 when it is not pending.  An approval may
-- take the month past the budget: that is what approving means.
CREATE FUNCTION sb_compensation_decide(p_id bigint, p_approve boolean, p_note text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    AS $$
DECLARE
    v_tenant bigint := sb_tenant();
    v_agent  bigint := sb_agent();
    v_role   text;
    v_number bigint;
    v_action text := CASE WHEN p_approve THEN 'compensation.approved'
                          ELSE 'compensation.rejected' END;
    v_doc    jsonb;
    c        compensations;
BEGIN
    IF p_note IS NOT NULL AND length(p_note) NOT BETWEEN 1 AND 2000 THEN
        RAISE EXCEPTION 'note must be 1 to 2000 characters' USING ERRCODE = '22023', COLUMN = 'note';
    END IF;
    SELECT m.role INTO v_role FROM memberships m
    WHERE m.tenant_id = v_tenant AND m.agent_id = v_agent;
    IF v_tenant IS NULL OR v_agent IS NULL OR v_role IS NULL
       OR v_role NOT IN ('supervisor', 'admin') THEN
        RAISE EXCEPTION 'compensations are approved or rejected by an agent who is a supervisor or an admin of the tenant'
            USING ERRCODE = '42501';
    END IF;
    SELECT * INTO c FROM compensations x WHERE x.tenant_id = v_tenant AND x.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF c.status <> 'pending_approval' THEN
        RAISE EXCEPTION 'compensation % is %, not pending approval', p_id, c.status
            USING ERRCODE = '55000';
    END IF;
    -- An approval grows the month's total: in step with issuers' sums.
    IF p_approve AND c.amount IS NOT NULL THEN
        PERFORM sb_compensation_lock(v_tenant, c.currency);
    END IF;
    UPDATE compensations x SET status = CASE WHEN p_approve THEN 'approved' ELSE 'rejected' END,
        decided_by = v_agent, decided_at = now(), decision_note = p_note
    WHERE x.tenant_id = v_tenant AND x.id = p_id
    RETURNING * INTO c;
    v_doc := sb_compensation_json(c);
    INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, before, after)
    VALUES (v_tenant, c.ticket_id, sb_actor_kind(), sb_actor_id(), v_action,
            jsonb_build_object('status', 'pending_approval'), v_doc);
    SELECT t.number INTO v_number FROM tickets t WHERE t.tenant_id = v_tenant AND t.id = c.ticket_id;
    PERFORM sb_notify_event(v_action, v_number, NULL, jsonb_build_object('compensation', c.id));
    RETURN v_doc;
END
$$;

CREATE FUNCTION sb_compensation_approve(p_id bigint, p_note text) RETURNS jsonb
    LANGUAGE sql VOLATILE
    AS $$ SELECT sb_compensation_decide(p_id, true, p_note) $$;

CREATE FUNCTION sb_compensation_reject(p_id bigint, p_note text) RETURNS jsonb
    LANGUAGE sql VOLATILE
    AS $$ SELECT sb_compensation_decide(p_id, false, p_note) $$;

-- ======================== policy ========================

-- Replaces the tenant's whole policy with p_policy,
-- {"authority": {role: {currency: max}}, "monthly_budget": {currency: amount}}
-- (either member may be left out: nothing set), and returns it as
-- sb_compensation_policy_json does.  Bad input raises 22023 naming the
-- member ("authority.agent.EUR").  Concurrent replacements are serialized.
CREATE FUNCTION sb_compensation_policy_set(p_policy jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    AS $$
DECLARE
    v_tenant bigint := sb_tenant();
    v_before jsonb;
    v_after  jsonb;
    k        text;
    role_k   text;
    cur      text;
    v        jsonb;
    limits   jsonb;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'a policy belongs to a tenant' USING ERRCODE = '42501';
    END IF;
    IF p_policy IS NULL OR jsonb_typeof(p_policy) <> 'object' THEN
        RAISE EXCEPTION 'the policy must be an object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_policy) LOOP
        IF k NOT IN ('authority', 'monthly_budget') THEN
            RAISE EXCEPTION 'unknown field "%"', k USING ERRCODE = '22023', COLUMN = k;
        END IF;
        IF jsonb_typeof(p_policy -> k) <> 'object' THEN
            RAISE EXCEPTION '% must be an object', k USING ERRCODE = '22023', COLUMN = k;
        END IF;
    END LOOP;
    FOR role_k, limits IN SELECT * FROM jsonb_each(coalesce(p_policy -> 'authority', '{}')) LOOP
        IF role_k NOT IN ('agent', 'supervisor', 'admin') THEN
            RAISE EXCEPTION 'authority.% is not a role: agent, supervisor or admin', role_k
                USING ERRCODE = '22023', COLUMN = 'authority.' || role_k;
        END IF;
        IF jsonb_typeof(limits) <> 'object' THEN
            RAISE EXCEPTION 'authority.% must be an object of currencies', role_k
                USING ERRCODE = '22023', COLUMN = 'authority.' || role_k;
        END IF;
        FOR cur, v IN SELECT * FROM jsonb_each(limits) LOOP
            IF cur !~ '^[A-Z]{3}$' THEN
                RAISE EXCEPTION 'authority.%.% is not a currency (three upper-case letters)',
                    role_k, cur USING ERRCODE = '22023', COLUMN = 'authority.' || role_k || '.' || cur;
            END IF;
            IF jsonb_typeof(v) <> 'number' THEN
                RAISE EXCEPTION 'authority.%.% must be a number', role_k, cur
                    USING ERRCODE = '22023', COLUMN = 'authority.' || role_k || '.' || cur;
            END IF;
            PERFORM sb_compensation_amount_check(v::text::numeric,
                                                 'authority.' || role_k || '.' || cur, true);
        END LOOP;
    END LOOP;
    FOR cur, v IN SELECT * FROM jsonb_each(coalesce(p_policy -> 'monthly_budget', '{}')) LOOP
        IF cur !~ '^[A-Z]{3}$' THEN
            RAISE EXCEPTION 'monthly_budget.% is not a currency (three upper-case letters)', cur
                USING ERRCODE = '22023', COLUMN = 'monthly_budget.' || cur;
        END IF;
        IF jsonb_typeof(v) <> 'number' THEN
            RAISE EXCEPTION 'monthly_budget.% must be a number', cur
                USING ERRCODE = '22023', COLUMN = 'monthly_budget.' || cur;
        END IF;
        PERFORM sb_compensation_amount_check(v::text::numeric, 'monthly_budget.' || cur, true);
    END LOOP;

    PERFORM pg_advisory_xact_lock(1668246896, hashtext(v_tenant::text || ':policy'));
    v_before := sb_compensation_policy_json();
    DELETE FROM compensation_authority WHERE tenant_id = v_tenant;
    DELETE FROM compensation_budgets WHERE tenant_id = v_tenant;
    INSERT INTO compensation_authority (tenant_id, role, currency, max_amount)
    SELECT v_tenant, r.key, l.key, l.value::text::numeric
    FROM jsonb_each(coalesce(p_policy -> 'authority', '{}')) r, jsonb_each(r.value) l;
    INSERT INTO compensation_budgets (tenant_id, currency, monthly_amount)
    SELECT v_tenant, b.key, b.value::text::numeric
    FROM jsonb_each(coalesce(p_policy -> 'monthly_budget', '{}')) b;
    v_after := sb_compensation_policy_json();
    INSERT INTO events (tenant_id, ticket_id, actor_kind, actor_id, action, before, after)
    VALUES (v_tenant, NULL, sb_actor_kind(), sb_actor_id(), 'compensation.policy_changed',
            v_before, v_after);
    RETURN v_after;
END
$$;

GRANT EXECUTE ON FUNCTION sb_compensation_json(compensations), sb_compensation_policy_json(),
    sb_compensation_amount_check(numeric, text, boolean), sb_compensation_lock(bigint, text),
    sb_compensation_issue(bigint, bigint, text, numeric, text, text, text, text),
    sb_compensation_decide(bigint, boolean, text), sb_compensation_approve(bigint, text),
    sb_compensation_reject(bigint, text), sb_compensation_policy_set(jsonb)
    TO switchboard_app;
