"""Tenant isolation of the REST API and of the database itself.

Tenants A and B; an agent of A only, an agent of B only, an agent of both,
a viewer of A, and an admin of each. One server and one database for the
module; everything is set up once."""

import json
import types

import pytest

from conftest import (ApiClient, api_login, cli_agent, cli_tenant, db_tenant_id, db_unchanged,
                      expect, psql)

A, B = "iso-a", "iso-b"
SHARED_WORD = "zebrafish"           # in tickets of both tenants
SHARED_EMAIL = "shared.customer@example.com"   # a customer of both tenants
N_A, N_B = 3, 8                     # tickets created in each tenant


def own_word(slug):
    """A word only the tickets of tenant `slug` contain."""
    return "only" + slug.replace("-", "") + "word"


def _ticket(c, slug, i, word=SHARED_WORD, email=None):
    body = {"subject": f"{slug} ticket {i} about the {word}",
            "customer": {"email": email or f"cust{i}@{slug}.example", "name": f"Cust {i}"},
            "message": {"text": f"message {i} of {slug}: the {word} escaped, "
                                f"{own_word(slug)}"},
            "tags": [slug]}
    return expect(c.post(f"tenants/{slug}/tickets", body), 201)


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db)
    cli_tenant(db, A, "Tenant A")
    cli_tenant(db, B, "Tenant B")
    cli_agent(db, "admin-a@iso.example", A, "admin")
    cli_agent(db, "admin-b@iso.example", B, "admin")
    cli_agent(db, "only-a@iso.example", A, "agent")
    cli_agent(db, "only-b@iso.example", B, "agent")
    cli_agent(db, "both@iso.example", A, "agent")
    cli_agent(db, "both@iso.example", B, "supervisor")
    cli_agent(db, "viewer-a@iso.example", A, "viewer")

    e = types.SimpleNamespace(db=db, srv=srv)
    e.admin_a = api_login(srv, "admin-a@iso.example")
    e.admin_b = api_login(srv, "admin-b@iso.example")
    e.only_a = api_login(srv, "only-a@iso.example")
    e.only_b = api_login(srv, "only-b@iso.example")
    e.both = api_login(srv, "both@iso.example")
    e.viewer_a = api_login(srv, "viewer-a@iso.example")

    # tickets: B has more of them, so B's highest number does not exist in A
    e.tickets_a = [_ticket(e.only_a, A, i) for i in range(1, N_A + 1)]
    e.tickets_b = [_ticket(e.only_b, B, i) for i in range(1, N_B + 1)]
    e.shared_a = _ticket(e.only_a, A, 99, email=SHARED_EMAIL)
    e.shared_b = _ticket(e.only_b, B, 99, email=SHARED_EMAIL)
    e.foreign_number = max(t["number"] for t in e.tickets_b + [e.shared_b])
    assert e.foreign_number > max(t["number"] for t in e.tickets_a + [e.shared_a])

    # one of each other kind of object in each tenant
    e.team_a = expect(e.admin_a.post(f"tenants/{A}/teams", {"name": "Team A"}), 201)
    e.team_b = expect(e.admin_b.post(f"tenants/{B}/teams", {"name": "Team B"}), 201)
    e.org_a = expect(e.admin_a.post(f"tenants/{A}/organizations", {"name": "Org A"}), 201)
    e.org_b = expect(e.admin_b.post(f"tenants/{B}/organizations", {"name": "Org B"}), 201)
    e.cust_a = expect(e.admin_a.post(f"tenants/{A}/customers", {
        "name": "Customer of A", "identities": [{"kind": "phone", "value": "+100000001"}]}), 201)
    e.cust_b = expect(e.admin_b.post(f"tenants/{B}/customers", {
        "name": "Customer of B", "identities": [{"kind": "phone", "value": "+100000002"}]}), 201)
    e.cust_b2 = expect(e.admin_b.post(f"tenants/{B}/customers", {"name": "Second of B"}), 201)
    expect(e.admin_b.post(f"tenants/{B}/teams/{e.team_b['id']}/members",
                          {"agent": e.only_b.id}), 204)
    return e


def endpoints(slug, number, team, customer, customer2, agent, into_number):
    """(method, path, body) of every tenant-scoped endpoint, each with a
    body that would succeed for a member with enough rights."""
    t = f"tenants/{slug}"
    return [
        ("GET", f"{t}/tickets", None),
        ("POST", f"{t}/tickets", {"subject": "should not exist",
                                  "customer": {"email": "intruder@example.com"},
                                  "message": {"text": "intrusion"}}),
        ("GET", f"{t}/tickets/{number}", None),
        ("PATCH", f"{t}/tickets/{number}", {"priority": "urgent"}),
        ("POST", f"{t}/tickets/{number}/messages", {"kind": "note", "text": "intrusion"}),
        ("GET", f"{t}/tickets/{number}/events", None),
        ("POST", f"{t}/tickets/{number}/merge", {"into": into_number}),
        ("GET", f"{t}/agents", None),
        ("POST", f"{t}/agents", {"email": "newcomer@iso.example", "name": "New",
                                 "role": "agent", "password": "long enough password"}),
        ("PATCH", f"{t}/agents/{agent}", {"role": "viewer"}),
        ("DELETE", f"{t}/agents/{agent}", None),
        ("GET", f"{t}/teams", None),
        ("POST", f"{t}/teams", {"name": "Intruders"}),
        ("POST", f"{t}/teams/{team}/members", {"agent": agent}),
        ("DELETE", f"{t}/teams/{team}/members/{agent}", None),
        ("GET", f"{t}/organizations", None),
        ("POST", f"{t}/organizations", {"name": "Intruder Org"}),
        ("GET", f"{t}/customers", None),
        ("POST", f"{t}/customers", {"name": "Intruder"}),
        ("GET", f"{t}/customers/{customer}", None),
        ("PATCH", f"{t}/customers/{customer}", {"name": "Renamed by intruder"}),
        ("POST", f"{t}/customers/{customer}/identities", {"kind": "email",
                                                          "value": "intruder@example.com"}),
        ("POST", f"{t}/customers/{customer}/merge", {"into": customer2}),
    ]


def _call(client, method, path, body):
    if method in ("POST", "PATCH"):
        return client.request(method, path, body)
    return client.request(method, path)


def _b_endpoints(e, slug=B):
    return endpoints(slug, e.tickets_b[0]["number"], e.team_b["id"], e.cust_b["id"],
                     e.cust_b2["id"], e.only_b.id, e.tickets_b[1]["number"])


# ---------------------------------------------------------------------------
# foreign tenants and foreign objects are 404, never 403
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("caller", ["only_a", "viewer_a", "admin_a"])
def test_every_endpoint_of_a_foreign_tenant_is_404(env, caller):
    client = getattr(env, caller)
    with db_unchanged(env.db, f"{caller} calling tenant {B}"):
        for method, path, body in _b_endpoints(env):
            r = _call(client, method, path, body)
            expect(r, 404)


def test_every_endpoint_of_an_unknown_tenant_is_404(env):
    with db_unchanged(env.db, "calls to a tenant that does not exist"):
        for method, path, body in _b_endpoints(env, slug="no-such-tenant"):
            expect(_call(env.admin_a, method, path, body), 404)


def test_tenant_list_and_me_show_only_own_tenants(env):
    items = expect(env.only_a.get("tenants"), 200)["items"]
    assert [t["slug"] for t in items] == [A]
    me = expect(env.only_b.get("me"), 200)
    assert [t["slug"] for t in me["tenants"]] == [B]
    me = expect(env.both.get("me"), 200)
    roles = {t["slug"]: t["role"] for t in me["tenants"]}
    assert roles == {A: "agent", B: "supervisor"}, me


def test_foreign_ticket_number_is_404(env):
    n = env.foreign_number
    a = env.only_a
    with db_unchanged(env.db, "foreign ticket number"):
        expect(a.get(f"tenants/{A}/tickets/{n}"), 404)
        expect(a.patch(f"tenants/{A}/tickets/{n}", {"priority": "urgent"}), 404)
        expect(a.post(f"tenants/{A}/tickets/{n}/messages", {"kind": "note", "text": "x"}), 404)
        expect(a.get(f"tenants/{A}/tickets/{n}/events"), 404)
        expect(a.post(f"tenants/{A}/tickets/{n}/merge",
                      {"into": env.tickets_a[0]["number"]}), 404)
        # merging an own ticket into one that exists only in B
        r = a.post(f"tenants/{A}/tickets/{env.tickets_a[0]['number']}/merge", {"into": n})
        expect(r, (404, 422))


def test_foreign_object_ids_are_404(env):
    a = env.admin_a      # an admin of A: rights are not the reason
    cb, tb, ab = env.cust_b["id"], env.team_b["id"], env.only_b.id
    with db_unchanged(env.db, "objects of B addressed under A"):
        expect(a.get(f"tenants/{A}/customers/{cb}"), 404)
        expect(a.patch(f"tenants/{A}/customers/{cb}", {"name": "Stolen"}), 404)
        expect(a.post(f"tenants/{A}/customers/{cb}/identities",
                      {"kind": "email", "value": "stolen@example.com"}), 404)
        expect(a.post(f"tenants/{A}/customers/{cb}/merge", {"into": env.cust_a["id"]}), 404)
        expect(a.post(f"tenants/{A}/customers/{env.cust_a['id']}/merge", {"into": cb}),
               (404, 422))
        expect(a.patch(f"tenants/{A}/agents/{ab}", {"role": "viewer"}), 404)
        expect(a.delete(f"tenants/{A}/agents/{ab}"), 404)
        expect(a.post(f"tenants/{A}/teams/{tb}/members", {"agent": env.admin_a.id}), 404)
        expect(a.delete(f"tenants/{A}/teams/{tb}/members/{ab}"), 404)
        # objects of B as values inside A
        n = env.tickets_a[0]["number"]
        expect(a.patch(f"tenants/{A}/tickets/{n}", {"assignee": ab}), 422, field="assignee")
        expect(a.patch(f"tenants/{A}/tickets/{n}", {"team": tb}), 422, field="team")
        expect(a.post(f"tenants/{A}/teams/{env.team_a['id']}/members", {"agent": ab}),
               (404, 422))
        expect(a.post(f"tenants/{A}/customers", {"name": "X", "organization": env.org_b["id"]}),
               422, field="organization")


# ---------------------------------------------------------------------------
# lists and search
# ---------------------------------------------------------------------------

def _all_numbers(client, slug, **query):
    numbers, cursor = [], None
    for _ in range(50):
        doc = expect(client.get(f"tenants/{slug}/tickets", limit=100, cursor=cursor, **query), 200)
        numbers += [t["number"] for t in doc["items"]]
        for t in doc["items"]:
            assert "messages" not in t, t
        cursor = doc["next_cursor"]
        if cursor is None:
            return numbers
    raise AssertionError("pagination did not end")


def _subjects(client, slug, **query):
    doc = expect(client.get(f"tenants/{slug}/tickets", limit=100, **query), 200)
    return [t["subject"] for t in doc["items"]]


def test_lists_show_only_own_tenant_tickets(env):
    subjects = _subjects(env.only_a, A)
    assert subjects and all(s.startswith(A + " ") for s in subjects), subjects
    numbers = _all_numbers(env.only_a, A)
    assert len(numbers) == len(set(numbers)) == len(subjects)
    assert {t["number"] for t in env.tickets_a + [env.shared_a]} <= set(numbers)
    assert env.foreign_number not in numbers
    subjects = _subjects(env.only_b, B)
    assert subjects and all(s.startswith(B + " ") for s in subjects), subjects


def test_search_shows_only_own_tenant_tickets(env):
    a = _subjects(env.only_a, A, q=SHARED_WORD)
    assert len(a) == N_A + 1 and all(s.startswith(A + " ") for s in a), a
    b = _subjects(env.only_b, B, q=SHARED_WORD)
    assert len(b) == N_B + 1 and all(s.startswith(B + " ") for s in b), b
    # a word that is only in B's messages finds nothing in A
    assert len(_subjects(env.only_b, B, q=own_word(B))) == N_B + 1
    assert _subjects(env.only_a, A, q=own_word(B)) == []
    assert _subjects(env.both, A, q=own_word(B)) == []


def test_agent_of_both_tenants_sees_each_tenants_own_tickets(env):
    a = _subjects(env.both, A)
    b = _subjects(env.both, B)
    assert len(a) >= N_A + 1 and all(s.startswith(A + " ") for s in a), a
    assert len(b) >= N_B + 1 and all(s.startswith(B + " ") for s in b), b
    qa = _subjects(env.both, A, q=SHARED_WORD)
    qb = _subjects(env.both, B, q=SHARED_WORD)
    assert qa and all(s.startswith(A + " ") for s in qa), qa
    assert qb and all(s.startswith(B + " ") for s in qb), qb
    # the same number means a different ticket under each slug
    one_a = expect(env.both.get(f"tenants/{A}/tickets/1"), 200)
    one_b = expect(env.both.get(f"tenants/{B}/tickets/1"), 200)
    assert one_a["subject"].startswith(A + " ") and one_b["subject"].startswith(B + " ")
    assert [m["text"] for m in one_a["messages"]] == [env.tickets_a[0]["messages"][0]["text"]]
    # and each write lands in its own tenant
    ta = expect(env.both.post(f"tenants/{A}/tickets", {
        "subject": f"{A} written by both", "customer": {"email": "both-cust@example.com"},
        "message": {"text": "kiwi"}}), 201)
    tb = expect(env.both.post(f"tenants/{B}/tickets", {
        "subject": f"{B} written by both", "customer": {"email": "both-cust@example.com"},
        "message": {"text": "kiwi"}}), 201)
    assert ta["customer"]["id"] != tb["customer"]["id"]
    assert [s for s in _subjects(env.only_a, A, q="kiwi")] == [f"{A} written by both"]
    assert [s for s in _subjects(env.only_b, B, q="kiwi")] == [f"{B} written by both"]


def test_same_customer_email_is_a_different_customer_per_tenant(env):
    ca, cb = env.shared_a["customer"], env.shared_b["customer"]
    assert ca["email"] == cb["email"] == SHARED_EMAIL
    assert ca["id"] != cb["id"]
    expect(env.only_a.get(f"tenants/{A}/customers/{cb['id']}"), 404)


def test_other_lists_show_only_own_tenant_objects(env):
    a = env.only_a
    agents = expect(a.get(f"tenants/{A}/agents"), 200)["items"]
    emails = {x["email"] for x in agents}
    assert emails == {"admin-a@iso.example", "only-a@iso.example", "both@iso.example",
                      "viewer-a@iso.example"}, agents
    teams = expect(a.get(f"tenants/{A}/teams"), 200)["items"]
    assert [t["name"] for t in teams] == ["Team A"], teams
    orgs = expect(a.get(f"tenants/{A}/organizations"), 200)["items"]
    assert [o["name"] for o in orgs] == ["Org A"], orgs
    ids = set()
    cursor = None
    for _ in range(20):
        doc = expect(a.get(f"tenants/{A}/customers", limit=100, cursor=cursor), 200)
        ids |= {c["id"] for c in doc["items"]}
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert env.cust_a["id"] in ids and env.shared_a["customer"]["id"] in ids
    assert not ids & {env.cust_b["id"], env.cust_b2["id"], env.shared_b["customer"]["id"]}
    found = expect(a.get(f"tenants/{A}/customers", q="Customer"), 200)["items"]
    assert env.cust_b["id"] not in {c["id"] for c in found}


def test_filters_with_foreign_ids_leak_nothing(env):
    a = env.only_a
    for query in ({"customer": env.cust_b["id"]}, {"customer": env.shared_b["customer"]["id"]},
                  {"team": env.team_b["id"]}, {"assignee": env.only_b.id}):
        r = a.get(f"tenants/{A}/tickets", **query)
        if r.status == 200:
            assert r.json["items"] == [], (query, r)
        else:
            expect(r, (404, 422))


def test_events_show_only_own_tenant(env):
    # ticket 1 of B changes; ticket 1 of A does not
    n = 1
    assert env.tickets_a[0]["number"] == env.tickets_b[0]["number"] == n
    expect(env.only_b.patch(f"tenants/{B}/tickets/{n}", {"priority": "high"}), 200)
    items_b = expect(env.only_b.get(f"tenants/{B}/tickets/{n}/events"), 200)["items"]
    assert "ticket.updated" in [e["action"] for e in items_b], items_b
    items = expect(env.only_a.get(f"tenants/{A}/tickets/{n}/events"), 200)["items"]
    assert [e["action"] for e in items] == ["ticket.created"], items
    assert "high" not in json.dumps(items)


# ---------------------------------------------------------------------------
# the viewer
# ---------------------------------------------------------------------------

def _a_endpoints(e):
    return endpoints(A, e.tickets_a[0]["number"], e.team_a["id"], e.cust_a["id"],
                     e.shared_a["customer"]["id"], e.only_a.id, e.tickets_a[1]["number"])


def test_viewer_can_read_everything(env):
    v = env.viewer_a
    for method, path, body in _a_endpoints(env):
        if method == "GET":
            expect(v.get(path), 200)
    assert len(_subjects(v, A)) >= N_A + 1
    assert len(_subjects(v, A, q=SHARED_WORD)) == N_A + 1
    expect(v.get("me"), 200)
    assert [t["role"] for t in expect(v.get("tenants"), 200)["items"]] == ["viewer"]


def test_viewer_cannot_write(env):
    v = env.viewer_a
    with db_unchanged(env.db, "viewer writes"):
        for method, path, body in _a_endpoints(env):
            if method != "GET":
                expect(_call(v, method, path, body), 403)
        expect(v.post("tenants", {"slug": "viewer-made", "name": "Nope"}), 403)


def test_agent_role_cannot_administer(env):
    a = env.only_a
    with db_unchanged(env.db, "agent doing admin work"):
        expect(a.post(f"tenants/{A}/agents", {"email": "x@iso.example", "role": "agent",
                                              "password": "long enough password"}), 403)
        expect(a.patch(f"tenants/{A}/agents/{env.viewer_a.id}", {"role": "admin"}), 403)
        expect(a.delete(f"tenants/{A}/agents/{env.viewer_a.id}"), 403)
        expect(a.post(f"tenants/{A}/teams", {"name": "Agents' own"}), 403)
        expect(a.post(f"tenants/{A}/teams/{env.team_a['id']}/members", {"agent": a.id}), 403)


def test_no_token_is_401_everywhere(env):
    anon = ApiClient(env.srv)
    bad = ApiClient(env.srv, token="sbt_not-a-real-token")
    with db_unchanged(env.db, "anonymous calls"):
        for client in (anon, bad):
            for method, path, body in _a_endpoints(env):
                expect(_call(client, method, path, body), 401, code="unauthorized")
            expect(client.get("me"), 401, code="unauthorized")
            expect(client.get("tenants"), 401, code="unauthorized")


# ---------------------------------------------------------------------------
# row-level security in the database itself
# ---------------------------------------------------------------------------

RLS_TABLES = ("tickets", "customers", "messages", "events", "customer_identities", "teams",
              "organizations")


def _counts(db, prelude, where=""):
    sel = ", ".join(f"(SELECT count(*) FROM {t}{where})" for t in RLS_TABLES)
    out = psql(db, f"{prelude} SELECT {sel}").strip().splitlines()[-1]
    return dict(zip(RLS_TABLES, map(int, out.split("|"))))


def test_app_role_without_tenant_sees_no_rows(env):
    db = env.db
    everything = _counts(db, "")
    for t in ("tickets", "customers", "messages", "events"):
        assert everything[t] > 0, everything
    as_app = _counts(db, "SET ROLE switchboard_app;")
    assert as_app == {t: 0 for t in RLS_TABLES}, as_app
    # an empty setting is no tenant either
    as_app = _counts(db, "SET ROLE switchboard_app; SET switchboard.tenant_id = '';")
    assert as_app == {t: 0 for t in RLS_TABLES}, as_app
    # and the role cannot write a row without a tenant
    tid = db_tenant_id(db, A)
    with pytest.raises(RuntimeError):
        psql(db, "SET ROLE switchboard_app; INSERT INTO organizations (tenant_id, name) "
                 f"VALUES ({tid}, 'sneaked in')")
    assert psql(db, "SELECT count(*) FROM organizations WHERE name = 'sneaked in'").strip() == "0"


def test_app_role_with_tenant_sees_only_that_tenant(env):
    db = env.db
    for slug in (A, B):
        tid = db_tenant_id(db, slug)
        own = _counts(db, "", where=f" WHERE tenant_id = {tid}")
        seen = _counts(db, f"SET ROLE switchboard_app; SET switchboard.tenant_id = '{tid}';")
        assert seen == own, (slug, seen, own)
        assert own["tickets"] > 0
        others = _counts(db, f"SET ROLE switchboard_app; SET switchboard.tenant_id = '{tid}';",
                         where=f" WHERE tenant_id <> {tid}")
        assert others == {t: 0 for t in RLS_TABLES}, others
    missing = _counts(db, "SET ROLE switchboard_app; SET switchboard.tenant_id = '987654321';")
    assert missing == {t: 0 for t in RLS_TABLES}, missing
