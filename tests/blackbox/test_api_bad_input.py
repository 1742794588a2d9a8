"""Bad input to every writing endpoint of the REST API: malformed JSON (400),
a body that is not JSON (415), a body over the limit (413), and wrong types,
missing or unknown fields, bad enums and over-long values (422 naming the
field). After each rejected request the database must be exactly as before
(every tenant table, agents, tenants and sessions are fingerprinted with psql).

One server (with a small body limit) and one database for the module."""

import json
import types

import pytest

from conftest import (API_PASSWORD, API_TABLES, ApiClient, api_login, cli_agent,
                      cli_platform_admin, cli_tenant, db_fingerprint, expect, field_matches)

T = "badin"
MAX_BODY = 8 * 1024
TABLES = API_TABLES + ("sessions",)
ROOT = "root@badin.example"


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db, env={"SWITCHBOARD_MAX_BODY_SIZE": str(MAX_BODY)})
    cli_tenant(db, T, "Bad Input")
    cli_platform_admin(db, ROOT)
    cli_agent(db, ROOT, T, "admin")
    cli_agent(db, "member@badin.example", T, "agent")
    cli_agent(db, "member2@badin.example", T, "agent")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.root = api_login(srv, ROOT)
    e.anon = ApiClient(srv)
    member = api_login(srv, "member@badin.example")
    e.member_id = member.id
    expect(member.delete("sessions/current"), 204)
    e.member2_id = api_login(srv, "member2@badin.example").id
    r = e.root

    def ticket(subject, email):
        return expect(r.post(f"tenants/{T}/tickets", {
            "subject": subject, "customer": {"email": email},
            "message": {"text": f"{subject} text"}}), 201)["number"]

    e.open_n = ticket("open ticket", "one@example.com")
    expect(r.patch(f"tenants/{T}/tickets/{e.open_n}", {"status": "open"}), 200)
    e.closed_n = ticket("closed ticket", "two@example.com")
    expect(r.patch(f"tenants/{T}/tickets/{e.closed_n}", {"status": "closed"}), 200)
    e.target_n = ticket("merge target", "three@example.com")
    e.team = expect(r.post(f"tenants/{T}/teams", {"name": "Existing team"}), 201)["id"]
    e.org = expect(r.post(f"tenants/{T}/organizations", {"name": "Existing org"}), 201)["id"]
    e.cust = expect(r.post(f"tenants/{T}/customers", {
        "name": "Customer one", "identities": [{"kind": "phone", "value": "+10001"}]}), 201)["id"]
    e.cust2 = expect(r.post(f"tenants/{T}/customers", {
        "name": "Customer two", "identities": [{"kind": "email", "value": "taken@example.com"}]}),
        201)["id"]
    # the baseline every rejected request is compared with
    e.fp = db_fingerprint(db, TABLES)
    return e


# endpoint -> (method, path, a valid body, as anonymous?)
ENDPOINTS = {
    "session-create": ("POST", lambda e: "sessions",
                       lambda e: {"email": ROOT, "password": API_PASSWORD}, True),
    "tenant-create": ("POST", lambda e: "tenants",
                      lambda e: {"slug": "fresh-tenant", "name": "Fresh"}, False),
    "ticket-create": ("POST", lambda e: f"tenants/{T}/tickets",
                      lambda e: {"subject": "fresh", "customer": {"email": "fresh@example.com"},
                                 "message": {"text": "fresh"}}, False),
    "ticket-update": ("PATCH", lambda e: f"tenants/{T}/tickets/{e.open_n}",
                      lambda e: {"priority": "high"}, False),
    "message-create": ("POST", lambda e: f"tenants/{T}/tickets/{e.open_n}/messages",
                       lambda e: {"kind": "note", "text": "fresh"}, False),
    "ticket-merge": ("POST", lambda e: f"tenants/{T}/tickets/{e.open_n}/merge",
                     lambda e: {"into": e.target_n}, False),
    "agent-create": ("POST", lambda e: f"tenants/{T}/agents",
                     lambda e: {"email": "fresh@badin.example", "name": "Fresh", "role": "agent",
                                "password": "long enough password"}, False),
    "agent-update": ("PATCH", lambda e: f"tenants/{T}/agents/{e.member_id}",
                     lambda e: {"role": "supervisor"}, False),
    "team-create": ("POST", lambda e: f"tenants/{T}/teams",
                    lambda e: {"name": "Fresh team"}, False),
    "team-member-add": ("POST", lambda e: f"tenants/{T}/teams/{e.team}/members",
                        lambda e: {"agent": e.member_id}, False),
    "organization-create": ("POST", lambda e: f"tenants/{T}/organizations",
                            lambda e: {"name": "Fresh org"}, False),
    "customer-create": ("POST", lambda e: f"tenants/{T}/customers",
                        lambda e: {"name": "Fresh customer"}, False),
    "customer-update": ("PATCH", lambda e: f"tenants/{T}/customers/{e.cust}",
                        lambda e: {"name": "Renamed"}, False),
    "identity-add": ("POST", lambda e: f"tenants/{T}/customers/{e.cust}/identities",
                     lambda e: {"kind": "email", "value": "fresh-ident@example.com"}, False),
    "customer-merge": ("POST", lambda e: f"tenants/{T}/customers/{e.cust}/merge",
                       lambda e: {"into": e.cust2}, False),
}

# generic defects: (id, how to make the request from a valid body, statuses)
GENERIC = {
    "malformed-json": (lambda b: ("raw", b'{"a": 1,, }', "application/json"), (400,)),
    "truncated-json": (lambda b: ("raw", json.dumps(b).encode()[:-1], "application/json"), (400,)),
    "invalid-utf8": (lambda b: ("raw", b'{"name": "\xff\xfe"}', "application/json"), (400, 422)),
    "empty-body": (lambda b: ("raw", b"", "application/json"), (400, 422)),
    "text-plain": (lambda b: ("raw", json.dumps(b).encode(), "text/plain"), (415,)),
    "form-encoded": (lambda b: ("raw", b"a=1&b=2", "application/x-www-form-urlencoded"), (415,)),
    "no-content-type": (lambda b: ("raw", json.dumps(b).encode(), None), (415,)),
    "too-large": (lambda b: ("json", dict(b, padding="x" * (MAX_BODY + 1000))), (413,)),
    "unknown-field": (lambda b: ("json", dict(b, unexpected_field=1)), (422,)),
    "array-body": (lambda b: ("json", [b]), (400, 422)),
    "null-body": (lambda b: ("json", None), (400, 422)),
    "string-body": (lambda b: ("json", "hello"), (400, 422)),
}

L = "x"


def S(n):
    return L * n


# specific defects: (endpoint, id, body (or callable(env, valid) -> body), status, field)
# A field of None means "status only" (409 and the like).
SPECIFIC = [
    ("session-create", "email-int", {"email": 5, "password": API_PASSWORD}, 422, "email"),
    ("session-create", "email-missing", {"password": API_PASSWORD}, 422, "email"),
    ("session-create", "password-missing", {"email": ROOT}, 422, "password"),
    ("session-create", "password-list", {"email": ROOT, "password": ["x"]}, 422, "password"),

    ("tenant-create", "slug-bad", {"slug": "Bad Slug", "name": "x"}, 422, "slug"),
    ("tenant-create", "slug-int", {"slug": 5, "name": "x"}, 422, "slug"),
    ("tenant-create", "slug-missing", {"name": "x"}, 422, "slug"),
    ("tenant-create", "slug-too-long", {"slug": S(64), "name": "x"}, 422, "slug"),
    ("tenant-create", "name-missing", {"slug": "fresh-tenant"}, 422, "name"),
    ("tenant-create", "name-empty", {"slug": "fresh-tenant", "name": ""}, 422, "name"),
    ("tenant-create", "name-too-long", {"slug": "fresh-tenant", "name": S(201)}, 422, "name"),
    ("tenant-create", "duplicate", {"slug": T, "name": "Again"}, 409, None),

    ("ticket-create", "subject-missing", lambda e, v: _without(v, "subject"), 422, "subject"),
    ("ticket-create", "subject-empty", lambda e, v: dict(v, subject=""), 422, "subject"),
    ("ticket-create", "subject-too-long", lambda e, v: dict(v, subject=S(501)), 422, "subject"),
    ("ticket-create", "subject-int", lambda e, v: dict(v, subject=7), 422, "subject"),
    ("ticket-create", "customer-missing", lambda e, v: _without(v, "customer"), 422, "customer"),
    ("ticket-create", "customer-empty", lambda e, v: dict(v, customer={}), 422, "customer"),
    ("ticket-create", "customer-string", lambda e, v: dict(v, customer="a@b.example"), 422,
     "customer"),
    ("ticket-create", "customer-email-int", lambda e, v: dict(v, customer={"email": 5}), 422,
     "customer"),
    ("ticket-create", "customer-identity-kind",
     lambda e, v: dict(v, customer={"identity": {"kind": "pigeon", "value": "x"}}), 422,
     "customer"),
    ("ticket-create", "customer-unknown-field",
     lambda e, v: dict(v, customer={"email": "a@b.example", "shoe_size": 9}), 422, "customer"),
    ("ticket-create", "customer-name-too-long",
     lambda e, v: dict(v, customer={"email": "a@b.example", "name": S(201)}), 422, "customer"),
    ("ticket-create", "message-missing", lambda e, v: _without(v, "message"), 422, "message"),
    ("ticket-create", "message-empty", lambda e, v: dict(v, message={}), 422, "message"),
    ("ticket-create", "message-string", lambda e, v: dict(v, message="hi"), 422, "message"),
    ("ticket-create", "message-text-int", lambda e, v: dict(v, message={"text": 5}), 422,
     "message"),
    ("ticket-create", "message-html-int", lambda e, v: dict(v, message={"text": "t", "html": 5}),
     422, "message"),
    ("ticket-create", "priority-enum", lambda e, v: dict(v, priority="asap"), 422, "priority"),
    ("ticket-create", "priority-int", lambda e, v: dict(v, priority=1), 422, "priority"),
    ("ticket-create", "tags-string", lambda e, v: dict(v, tags="a"), 422, "tags"),
    ("ticket-create", "tags-ints", lambda e, v: dict(v, tags=[1]), 422, "tags"),
    ("ticket-create", "custom-fields-list", lambda e, v: dict(v, custom_fields=[]), 422,
     "custom_fields"),
    ("ticket-create", "custom-fields-string", lambda e, v: dict(v, custom_fields="x"), 422,
     "custom_fields"),

    ("ticket-update", "status-enum", {"status": "reopened"}, 422, "status"),
    ("ticket-update", "status-back-to-new", {"status": "new"}, 422, "status"),
    ("ticket-update", "priority-enum", {"priority": "asap"}, 422, "priority"),
    ("ticket-update", "subject-too-long", {"subject": S(501)}, 422, "subject"),
    ("ticket-update", "subject-empty", {"subject": ""}, 422, "subject"),
    ("ticket-update", "tags-object", {"tags": {"a": 1}}, 422, "tags"),
    ("ticket-update", "assignee-string", {"assignee": "x"}, 422, "assignee"),
    ("ticket-update", "assignee-not-member", {"assignee": 987654321}, 422, "assignee"),
    ("ticket-update", "team-unknown", {"team": 987654321}, 422, "team"),
    ("ticket-update", "custom-fields-list", {"custom_fields": [1]}, 422, "custom_fields"),
    ("ticket-update", "stale-if-match", ("headers", {"If-Match": '"1"'}, {"priority": "low"}),
     409, None),
    ("ticket-update", "malformed-if-match", ("headers", {"If-Match": "soon"}, {"priority": "low"}),
     400, None),
    ("ticket-update", "closed-reopen", ("path", lambda e: f"tenants/{T}/tickets/{e.closed_n}",
                                        {"status": "open"}), 422, "status"),

    ("message-create", "kind-enum", {"kind": "email", "text": "x"}, 422, "kind"),
    ("message-create", "kind-missing", {"text": "x"}, 422, "kind"),
    ("message-create", "kind-null", {"kind": None, "text": "x"}, 422, "kind"),
    ("message-create", "text-missing", {"kind": "note"}, 422, "text"),
    ("message-create", "text-int", {"kind": "note", "text": 5}, 422, "text"),
    ("message-create", "html-int", {"kind": "note", "text": "x", "html": 5}, 422, "html"),

    ("ticket-merge", "into-missing", {}, 422, "into"),
    ("ticket-merge", "into-string", {"into": "two"}, 422, "into"),
    ("ticket-merge", "into-float", {"into": 1.5}, 422, "into"),
    ("ticket-merge", "into-null", {"into": None}, 422, "into"),

    ("agent-create", "email-missing", lambda e, v: _without(v, "email"), 422, "email"),
    ("agent-create", "email-int", lambda e, v: dict(v, email=5), 422, "email"),
    ("agent-create", "email-too-long", lambda e, v: dict(v, email=S(250) + "@x.io"), 422,
     "email"),
    ("agent-create", "role-enum", lambda e, v: dict(v, role="boss"), 422, "role"),
    ("agent-create", "role-missing", lambda e, v: _without(v, "role"), 422, "role"),
    ("agent-create", "password-missing", lambda e, v: _without(v, "password"), 422, "password"),
    ("agent-create", "password-short", lambda e, v: dict(v, password="short"), 422, "password"),
    ("agent-create", "name-too-long", lambda e, v: dict(v, name=S(201)), 422, "name"),
    ("agent-create", "already-member",
     {"email": "member@badin.example", "role": "agent"}, 409, None),

    ("agent-update", "role-enum", {"role": "boss"}, 422, "role"),
    ("agent-update", "role-missing", {}, 422, "role"),
    ("agent-update", "role-int", {"role": 1}, 422, "role"),

    ("team-create", "name-missing", {}, 422, "name"),
    ("team-create", "name-empty", {"name": ""}, 422, "name"),
    ("team-create", "name-too-long", {"name": S(201)}, 422, "name"),
    ("team-create", "name-int", {"name": 5}, 422, "name"),
    ("team-create", "duplicate", {"name": "Existing team"}, 409, None),

    ("team-member-add", "agent-missing", {}, 422, "agent"),
    ("team-member-add", "agent-string", {"agent": "x"}, 422, "agent"),
    ("team-member-add", "agent-null", {"agent": None}, 422, "agent"),

    ("organization-create", "name-missing", {}, 422, "name"),
    ("organization-create", "name-empty", {"name": ""}, 422, "name"),
    ("organization-create", "name-too-long", {"name": S(201)}, 422, "name"),
    ("organization-create", "name-int", {"name": 5}, 422, "name"),

    ("customer-create", "name-too-long", {"name": S(201)}, 422, "name"),
    ("customer-create", "name-int", {"name": 5}, 422, "name"),
    ("customer-create", "kind-enum", {"name": "x", "kind": "vip"}, 422, "kind"),
    ("customer-create", "tier-too-long", {"name": "x", "tier": S(51)}, 422, "tier"),
    ("customer-create", "language-too-long", {"name": "x", "language": S(36)}, 422, "language"),
    ("customer-create", "organization-unknown", {"name": "x", "organization": 987654321}, 422,
     "organization"),
    ("customer-create", "organization-string", {"name": "x", "organization": "Existing org"},
     422, "organization"),
    ("customer-create", "identities-string", {"name": "x", "identities": "a@b.example"}, 422,
     "identities"),
    ("customer-create", "identity-kind-enum",
     {"name": "x", "identities": [{"kind": "pigeon", "value": "x"}]}, 422, "identities"),
    ("customer-create", "identity-value-missing",
     {"name": "x", "identities": [{"kind": "email"}]}, 422, "identities"),
    ("customer-create", "identity-value-too-long",
     {"name": "x", "identities": [{"kind": "email", "value": S(321)}]}, 422, "identities"),
    ("customer-create", "identity-taken",
     {"name": "x", "identities": [{"kind": "email", "value": "taken@example.com"}]}, 409, None),

    ("customer-update", "kind-enum", {"kind": "vip"}, 422, "kind"),
    ("customer-update", "name-too-long", {"name": S(201)}, 422, "name"),
    ("customer-update", "tier-too-long", {"tier": S(51)}, 422, "tier"),
    ("customer-update", "language-too-long", {"language": S(36)}, 422, "language"),
    ("customer-update", "organization-unknown", {"organization": 987654321}, 422,
     "organization"),
    ("customer-update", "name-list", {"name": ["x"]}, 422, "name"),

    ("identity-add", "kind-enum", {"kind": "pigeon", "value": "x"}, 422, "kind"),
    ("identity-add", "kind-missing", {"value": "x"}, 422, "kind"),
    ("identity-add", "value-missing", {"kind": "email"}, 422, "value"),
    ("identity-add", "value-empty", {"kind": "email", "value": ""}, 422, "value"),
    ("identity-add", "value-too-long", {"kind": "email", "value": S(321)}, 422, "value"),
    ("identity-add", "value-int", {"kind": "email", "value": 5}, 422, "value"),
    ("identity-add", "taken", {"kind": "email", "value": "taken@example.com"}, 409, None),

    ("customer-merge", "into-missing", {}, 422, "into"),
    ("customer-merge", "into-string", {"into": "x"}, 422, "into"),
    ("customer-merge", "into-null", {"into": None}, 422, "into"),
    ("customer-merge", "into-self", lambda e, v: {"into": e.cust}, (409, 422), None),
]


def _without(d, key):
    d = dict(d)
    d.pop(key)
    return d


def _diff(env):
    """Compare with the baseline; move the baseline on (so one failure is
    reported once)."""
    after = db_fingerprint(env.db, TABLES)
    before, env.fp = env.fp, after
    return {t: (before.get(t), after.get(t)) for t in after if before.get(t) != after.get(t)}


def _client(env, anonymous):
    return env.anon if anonymous else env.root


def _check(env, r, status, field, what):
    changed = _diff(env)
    problems = []
    statuses = status if isinstance(status, tuple) else (status,)
    if r.status not in statuses:
        problems.append(f"expected {status}, got {r!r}")
    else:
        err = r.error          # asserts the error shape
        if field is not None and not field_matches(err.get("field"), field):
            problems.append(f"expected field {field!r}, got {r!r}")
    if changed:
        problems.append(f"the database changed: {changed}")
    assert not problems, f"{what}: " + "; ".join(problems)


@pytest.mark.parametrize("defect", list(GENERIC))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_generic_bad_input(env, endpoint, defect):
    method, path_fn, valid_fn, anonymous = ENDPOINTS[endpoint]
    make, statuses = GENERIC[defect]
    spec = make(valid_fn(env))
    client = _client(env, anonymous)
    if spec[0] == "raw":
        _, body, ctype = spec
        headers = {"Content-Type": ctype} if ctype else {}
        r = client.request(method, path_fn(env), body=body, headers=headers)
    else:
        r = client.request(method, path_fn(env), spec[1])
    field = "unexpected_field" if defect == "unknown-field" else None
    _check(env, r, statuses if len(statuses) > 1 else statuses[0], field,
           f"{endpoint} with {defect}")


@pytest.mark.parametrize("endpoint,case,body,status,field", SPECIFIC,
                         ids=[f"{c[0]}-{c[1]}" for c in SPECIFIC])
def test_specific_bad_input(env, endpoint, case, body, status, field):
    method, path_fn, valid_fn, anonymous = ENDPOINTS[endpoint]
    path, headers = path_fn(env), None
    if isinstance(body, tuple) and body[0] == "headers":
        _, headers, body = body
    elif isinstance(body, tuple) and body[0] == "path":
        _, p, body = body
        path = p(env)
    elif callable(body):
        body = body(env, valid_fn(env))
    r = _client(env, anonymous).request(method, path, body, headers=headers)
    _check(env, r, status, field, f"{endpoint} {case}")


@pytest.mark.parametrize("method,path", [
    ("PATCH", f"tenants/{T}/tickets/abc"),
    ("PATCH", f"tenants/{T}/tickets/-1"),
    ("POST", f"tenants/{T}/tickets/1.5/messages"),
    ("PATCH", f"tenants/{T}/agents/abc"),
    ("DELETE", f"tenants/{T}/agents/abc"),
    ("DELETE", f"tenants/{T}/teams/abc/members/1"),
    ("PATCH", f"tenants/{T}/customers/abc"),
    ("POST", f"tenants/{T}/customers/99999999999999999999999/merge"),
])
def test_malformed_ids(env, method, path):
    body = {"priority": "low"} if method == "PATCH" else (
        {"kind": "note", "text": "x"} if method == "POST" else None)
    if method == "DELETE":
        r = env.root.request(method, path)
    else:
        r = env.root.request(method, path, body)
    _check(env, r, (400, 404, 422), None, f"{method} {path}")


def test_valid_bodies_are_valid(env):
    """The valid bodies the defects start from do succeed (run last: it
    changes the database)."""
    for name, (method, path_fn, valid_fn, anonymous) in ENDPOINTS.items():
        r = _client(env, anonymous).request(method, path_fn(env), valid_fn(env))
        assert r.status in (200, 201, 204), (name, r)
    env.fp = db_fingerprint(env.db, TABLES)
