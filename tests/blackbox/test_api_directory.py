"""Teams, organizations, customers (identities, merge) and the OpenAPI
document. One server for the module."""

import re
import types

import pytest

from conftest import (api_login, cli_agent, cli_platform_admin, cli_tenant,
                      db_unchanged, expect, rand_suffix)

T = "dir"


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db)
    cli_tenant(db, T, "Directory Ltd")
    cli_agent(db, "adm@dir.example", T, "admin")
    cli_agent(db, "sup@dir.example", T, "supervisor")
    cli_agent(db, "agt@dir.example", T, "agent")
    cli_agent(db, "vw@dir.example", T, "viewer")
    cli_platform_admin(db, "root@dir.example")
    cli_agent(db, "root@dir.example", T, "admin")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.adm = api_login(srv, "adm@dir.example")
    e.sup = api_login(srv, "sup@dir.example")
    e.agt = api_login(srv, "agt@dir.example")
    e.vw = api_login(srv, "vw@dir.example")
    e.root = api_login(srv, "root@dir.example")
    return e


def path(p):
    return f"tenants/{T}/{p}"


def new_customer(client, **body):
    body.setdefault("name", f"Customer {rand_suffix(6)}")
    return expect(client.post(path("customers"), body), 201)


# ---------------------------------------------------------------------------
# teams
# ---------------------------------------------------------------------------

def test_teams(env):
    name = f"Billing {rand_suffix(4)}"
    r = env.sup.post(path("teams"), {"name": name})
    team = expect(r, 201)
    assert team["name"] == name and team["members"] == [] and isinstance(team["id"], int)
    tid = team["id"]
    expect(env.sup.post(path(f"teams/{tid}/members"), {"agent": env.agt.id}), 204)
    expect(env.sup.post(path(f"teams/{tid}/members"), {"agent": env.sup.id}), 204)
    teams = {t["id"]: t for t in expect(env.vw.get(path("teams")), 200)["items"]}
    assert sorted(teams[tid]["members"]) == sorted([env.agt.id, env.sup.id])
    assert teams[tid]["name"] == name
    r = env.sup.delete(path(f"teams/{tid}/members/{env.agt.id}"))
    expect(r, 204)
    teams = {t["id"]: t for t in expect(env.agt.get(path("teams")), 200)["items"]}
    assert teams[tid]["members"] == [env.sup.id]
    # admins manage teams too
    expect(env.adm.post(path(f"teams/{tid}/members"), {"agent": env.vw.id}), 204)


def test_duplicate_team_is_409(env):
    name = f"Dup {rand_suffix(4)}"
    expect(env.sup.post(path("teams"), {"name": name}), 201)
    with db_unchanged(env.db, "duplicate team"):
        expect(env.sup.post(path("teams"), {"name": name}), 409)


def test_team_membership_errors(env):
    tid = expect(env.sup.post(path("teams"), {"name": f"Errs {rand_suffix(4)}"}), 201)["id"]
    with db_unchanged(env.db, "team membership errors"):
        # not a member of the tenant
        expect(env.sup.post(path(f"teams/{tid}/members"), {"agent": 987654321}), (404, 422))
        # no such team
        expect(env.sup.post(path("teams/987654321/members"), {"agent": env.agt.id}), 404)
        # not in the team
        expect(env.sup.delete(path(f"teams/{tid}/members/{env.agt.id}")), 404)


def test_agents_and_viewers_do_not_manage_teams(env):
    tid = expect(env.sup.post(path("teams"), {"name": f"Locked {rand_suffix(4)}"}), 201)["id"]
    expect(env.sup.post(path(f"teams/{tid}/members"), {"agent": env.sup.id}), 204)
    with db_unchanged(env.db, "agents managing teams"):
        for who in (env.agt, env.vw):
            expect(who.post(path("teams"), {"name": "Nope"}), 403)
            expect(who.post(path(f"teams/{tid}/members"), {"agent": who.id}), 403)
            expect(who.delete(path(f"teams/{tid}/members/{env.sup.id}")), 403)


# ---------------------------------------------------------------------------
# organizations
# ---------------------------------------------------------------------------

def test_organizations(env):
    name = f"Globex {rand_suffix(4)}"
    org = expect(env.agt.post(path("organizations"), {"name": name}), 201)
    assert org["name"] == name and isinstance(org["id"], int)
    items = expect(env.vw.get(path("organizations")), 200)["items"]
    assert {"id": org["id"], "name": name} in [{"id": o["id"], "name": o["name"]} for o in items]
    with db_unchanged(env.db, "viewer creating an organization"):
        expect(env.vw.post(path("organizations"), {"name": "Viewer org"}), 403)


# ---------------------------------------------------------------------------
# customers
# ---------------------------------------------------------------------------

def test_create_and_get_customer(env):
    org = expect(env.agt.post(path("organizations"), {"name": f"Initech {rand_suffix(4)}"}), 201)
    email = f"peter-{rand_suffix(5)}@initech.example"
    c = new_customer(env.agt, name="Peter Gibbons", kind="internal", tier="gold",
                     language="en-US", organization=org["id"],
                     identities=[{"kind": "email", "value": email},
                                 {"kind": "phone", "value": "+15550100"}])
    assert c["name"] == "Peter Gibbons" and c["kind"] == "internal"
    assert c["tier"] == "gold" and c["language"] == "en-US"
    assert c["organization_id"] == org["id"]
    assert c["email"] == email
    idents = sorted((i["kind"], i["value"]) for i in c["identities"])
    assert idents == [("email", email), ("phone", "+15550100")]
    got = expect(env.vw.get(path(f"customers/{c['id']}")), 200)
    assert got["id"] == c["id"] and got["name"] == "Peter Gibbons"
    assert sorted((i["kind"], i["value"]) for i in got["identities"]) == idents
    # the list finds it by name and by identity (README: q searches both)
    for q in ("Gibbons", email):
        found = expect(env.vw.get(path("customers"), q=q), 200)["items"]
        assert c["id"] in [x["id"] for x in found], (q, found)
    # a ticket from that email lands on this customer
    t = expect(env.agt.post(path("tickets"), {"subject": "TPS report",
                                              "customer": {"email": email},
                                              "message": {"text": "cover sheet"}}), 201)
    assert t["customer"]["id"] == c["id"]


def test_customer_defaults(env):
    c = new_customer(env.agt)
    assert c["kind"] == "external"
    assert c["identities"] == []
    expect(env.agt.get(path("customers/987654321")), 404)


def test_patch_customer(env):
    org = expect(env.agt.post(path("organizations"), {"name": f"Hooli {rand_suffix(4)}"}), 201)
    c = new_customer(env.agt, name="Gavin")
    d = expect(env.agt.patch(path(f"customers/{c['id']}"),
                             {"name": "Gavin Belson", "kind": "internal", "tier": "platinum",
                              "language": "en", "organization": org["id"]}), 200)
    assert d["name"] == "Gavin Belson" and d["kind"] == "internal"
    assert d["tier"] == "platinum" and d["language"] == "en"
    assert d["organization_id"] == org["id"]
    d = expect(env.agt.patch(path(f"customers/{c['id']}"), {"organization": None}), 200)
    assert d["organization_id"] is None and d["name"] == "Gavin Belson"
    got = expect(env.agt.get(path(f"customers/{c['id']}")), 200)
    assert got["tier"] == "platinum" and got["organization_id"] is None
    with db_unchanged(env.db, "viewer patching a customer"):
        expect(env.vw.patch(path(f"customers/{c['id']}"), {"name": "x"}), 403)


def test_customer_identities(env):
    c1 = new_customer(env.agt)
    c2 = new_customer(env.agt)
    value = f"tg_{rand_suffix(6)}"
    r = env.agt.post(path(f"customers/{c1['id']}/identities"), {"kind": "telegram",
                                                               "value": value})
    ident = expect(r, 201)
    assert ident["kind"] == "telegram" and ident["value"] == value
    got = expect(env.agt.get(path(f"customers/{c1['id']}")), 200)
    assert ("telegram", value) in [(i["kind"], i["value"]) for i in got["identities"]]
    with db_unchanged(env.db, "identity owned by another customer"):
        expect(env.agt.post(path(f"customers/{c2['id']}/identities"),
                            {"kind": "telegram", "value": value}), 409)
        expect(env.agt.post(path(f"customers/{c1['id']}/identities"),
                            {"kind": "telegram", "value": value}), (200, 201, 409))
        expect(env.vw.post(path(f"customers/{c1['id']}/identities"),
                           {"kind": "sms", "value": "+1999"}), 403)
    # a ticket from that identity lands on c1
    t = expect(env.agt.post(path("tickets"), {
        "subject": "via telegram", "customer": {"identity": {"kind": "telegram", "value": value}},
        "message": {"text": "hello"}}), 201)
    assert t["customer"]["id"] == c1["id"]


def test_customer_list_search_and_pagination(env):
    word = "Zorblatt" + rand_suffix(4)
    made = {new_customer(env.agt, name=f"{word} {i}")["id"] for i in range(5)}
    new_customer(env.agt, name="Somebody Else")
    ids, cursor, pages = [], None, 0
    for _ in range(10):
        doc = expect(env.vw.get(path("customers"), q=word, limit=2, cursor=cursor), 200)
        assert len(doc["items"]) <= 2
        pages += 1
        ids += [c["id"] for c in doc["items"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert len(ids) == len(set(ids)) and set(ids) == made, (ids, made)
    assert pages >= 3
    # the unfiltered list contains them too
    all_ids, cursor = set(), None
    for _ in range(50):
        doc = expect(env.vw.get(path("customers"), limit=100, cursor=cursor), 200)
        all_ids |= {c["id"] for c in doc["items"]}
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert made <= all_ids


@pytest.mark.parametrize("query", [
    {"cursor": "garbage!"}, {"cursor": "not-a-cursor"}, {"cursor": "AAAA"}, {"cursor": "%%%"},
    {"limit": "0"}, {"limit": "101"}, {"limit": "many"},
])
def test_customer_list_rejects_bad_query(env, query):
    expect(env.vw.get(path("customers"), **query), 422)


def test_customer_merge(env):
    email = f"dup-{rand_suffix(5)}@example.com"
    loser = new_customer(env.agt, name="Dup One", identities=[{"kind": "email", "value": email}])
    keeper = new_customer(env.agt, name="Dup Two",
                          identities=[{"kind": "phone", "value": "+4930" + rand_suffix(6)}])
    t = expect(env.agt.post(path("tickets"), {"subject": "from the duplicate",
                                              "customer": {"email": email},
                                              "message": {"text": "hi"}}), 201)
    assert t["customer"]["id"] == loser["id"]
    r = env.agt.post(path(f"customers/{loser['id']}/merge"), {"into": keeper["id"]})
    doc = expect(r, 200)
    assert doc["id"] == keeper["id"]
    assert ("email", email) in [(i["kind"], i["value"]) for i in doc["identities"]]
    got = expect(env.agt.get(path(f"customers/{keeper['id']}")), 200)
    assert ("email", email) in [(i["kind"], i["value"]) for i in got["identities"]]
    ticket = expect(env.agt.get(path(f"tickets/{t['number']}")), 200)
    assert ticket["customer"]["id"] == keeper["id"]
    nums = [x["number"] for x in
            expect(env.agt.get(path("tickets"), customer=keeper["id"]), 200)["items"]]
    assert t["number"] in nums
    # the email now leads to the survivor
    t2 = expect(env.agt.post(path("tickets"), {"subject": "after merge",
                                               "customer": {"email": email},
                                               "message": {"text": "again"}}), 201)
    assert t2["customer"]["id"] == keeper["id"]


def test_customer_merge_errors(env):
    c = new_customer(env.agt)
    other = new_customer(env.agt)
    with db_unchanged(env.db, "bad customer merges"):
        expect(env.agt.post(path(f"customers/{c['id']}/merge"), {"into": c["id"]}), (409, 422))
        expect(env.agt.post(path(f"customers/{c['id']}/merge"), {"into": 987654321}),
               (404, 422))
        expect(env.agt.post(path("customers/987654321/merge"), {"into": c["id"]}), 404)
        expect(env.vw.post(path(f"customers/{c['id']}/merge"), {"into": other["id"]}), 403)


# ---------------------------------------------------------------------------
# the OpenAPI document
# ---------------------------------------------------------------------------

KEY_ROUTES = [
    ("post", "/api/v1/sessions"), ("delete", "/api/v1/sessions/current"), ("get", "/api/v1/me"),
    ("get", "/api/v1/tenants"), ("post", "/api/v1/tenants"),
    ("get", "/api/v1/tenants/{}/tickets"), ("post", "/api/v1/tenants/{}/tickets"),
    ("get", "/api/v1/tenants/{}/tickets/{}"), ("patch", "/api/v1/tenants/{}/tickets/{}"),
    ("post", "/api/v1/tenants/{}/tickets/{}/messages"),
    ("get", "/api/v1/tenants/{}/tickets/{}/events"),
    ("post", "/api/v1/tenants/{}/tickets/{}/merge"),
    ("get", "/api/v1/tenants/{}/agents"), ("post", "/api/v1/tenants/{}/agents"),
    ("patch", "/api/v1/tenants/{}/agents/{}"), ("delete", "/api/v1/tenants/{}/agents/{}"),
    ("get", "/api/v1/tenants/{}/teams"), ("post", "/api/v1/tenants/{}/teams"),
    ("post", "/api/v1/tenants/{}/teams/{}/members"),
    ("delete", "/api/v1/tenants/{}/teams/{}/members/{}"),
    ("get", "/api/v1/tenants/{}/organizations"), ("post", "/api/v1/tenants/{}/organizations"),
    ("get", "/api/v1/tenants/{}/customers"), ("post", "/api/v1/tenants/{}/customers"),
    ("get", "/api/v1/tenants/{}/customers/{}"), ("patch", "/api/v1/tenants/{}/customers/{}"),
    ("post", "/api/v1/tenants/{}/customers/{}/identities"),
    ("post", "/api/v1/tenants/{}/customers/{}/merge"),
    ("get", "/api/v1/openapi.json"),
]

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _template(p):
    return re.sub(r"\{[^}/]*\}", "{}", p)


@pytest.fixture(scope="module")
def openapi(env):
    r = env.root.get("/api/v1/openapi.json")
    doc = expect(r, 200)
    assert r.headers.get("content-type", "").startswith("application/json")
    return doc


def test_openapi_document(openapi):
    assert isinstance(openapi.get("openapi"), str) and openapi["openapi"].startswith("3."), \
        openapi.get("openapi")
    assert isinstance(openapi.get("info"), dict) and openapi["info"].get("title")
    assert isinstance(openapi.get("paths"), dict) and openapi["paths"]
    listed = {(m, _template(p)) for p, ops in openapi["paths"].items() for m in ops
              if m in HTTP_METHODS}
    missing = [r for r in KEY_ROUTES if r not in listed]
    assert not missing, f"routes missing from the OpenAPI document: {missing}"
    for p, ops in openapi["paths"].items():
        for m, op in ops.items():
            if m in HTTP_METHODS:
                assert isinstance(op.get("responses"), dict) and op["responses"], (m, p)


def _concrete(env, p, fixtures):
    """Fill the path parameters of `p` with real values of the tenant."""
    segs = p.split("/")
    out = []
    for i, s in enumerate(segs):
        m = re.fullmatch(r"\{([^}]*)\}", s)
        if not m:
            out.append(s)
            continue
        name, prev = m.group(1), segs[i - 1] if i else ""
        if prev == "tenants" or name in ("tenant", "slug", "t"):
            out.append(T)
        elif (prev == "tickets" or name == "number") and "/attachments/" in p:
            out.append(str(fixtures["hook_ticket"]))
        elif prev == "tickets" or name == "number":
            out.append(str(fixtures["ticket"]))
        elif prev == "attachments":
            out.append(str(fixtures["attachment"]))
        elif prev == "customers":
            out.append(str(fixtures["customer"]))
        elif prev == "teams":
            out.append(str(fixtures["team"]))
        elif prev in ("agents", "members") or name == "agent":
            out.append(str(fixtures["agent"]))
        elif prev == "channels":
            out.append(str(fixtures["channel"]))
        elif prev == "articles":
            out.append(str(fixtures["kb_article"]))
        elif prev == "problems":
            out.append(str(fixtures["problem"]))
        elif prev == "survey":
            out.append(fixtures["survey"])
        elif prev == "rules":
            out.append("sla")        # every tenant starts with the default scripts
        elif prev == "versions":
            out.append("1")
        else:
            out.append("987654321")
    return "/".join(out)


def test_every_documented_route_is_routed(env, openapi):
    fixtures = {
        "ticket": expect(env.agt.post(path("tickets"), {
            "subject": "openapi probe", "customer": {"email": "probe@example.com"},
            "message": {"text": "probe"}}), 201)["number"],
        "customer": new_customer(env.agt)["id"],
        "team": expect(env.sup.post(path("teams"), {"name": f"Probe {rand_suffix(4)}"}),
                       201)["id"],
        "agent": env.agt.id,
        "channel": expect(env.root.post(path("channels"), {
            "type": "example", "name": f"Probe {rand_suffix(4)}"}), 201)["id"],
    }
    fixtures["kb_article"] = expect(env.root.post(path("kb/articles"), {
        "title": "Probe", "language": "en", "status": "published"}), 201)["id"]
    fixtures["problem"] = expect(env.agt.post(path("problems"), {
        "title": f"Probe {rand_suffix(4)}"}), 201)["id"]
    solved = expect(env.agt.post(path("tickets"), {
        "subject": "survey probe", "customer": {"email": "probe@example.com"},
        "message": {"text": "probe"}}), 201)["number"]
    expect(env.agt.patch(path(f"tickets/{solved}"), {"status": "solved"}), 200)
    fixtures["survey"] = expect(env.agt.post(path(f"tickets/{solved}/survey")),
                                200)["url"].rsplit("/", 1)[1]
    # An attachment arrives only through a channel: the example webhook.
    status, _, body = env.srv.request(
        "POST", f"/hooks/{T}/example?from=probe&id={rand_suffix(8)}&filename=probe.bin",
        body=b"\x00probe", headers={"Content-Type": "application/octet-stream"})
    assert status == 200, body
    fixtures["hook_ticket"] = int(body.split()[1])
    detail = expect(env.root.get(path(f"tickets/{fixtures['hook_ticket']}")), 200)
    fixtures["attachment"] = detail["messages"][-1]["attachments"][0]["id"]
    problems = []
    for p, ops in openapi["paths"].items():
        methods = {m.upper() for m in ops if m in HTTP_METHODS}
        url = _concrete(env, p, fixtures)
        # a method the path does not have: the router knows the path (405), not 404
        other = next(m for m in ("PUT", "TRACE", "OPTIONS", "PATCH", "POST", "DELETE")
                     if m not in methods)
        r = env.root.request(other, url)
        if r.status != 405:
            problems.append(f"{other} {url}: {r.status} (want 405) {r.body[:120]!r}")
        else:
            allow = {a.strip().upper() for a in r.headers.get("allow", "").split(",")}
            if not methods <= allow:
                problems.append(f"{other} {url}: Allow {allow} lacks {methods - allow}")
        for m in sorted(methods):
            if m == "GET":
                r = env.root.request("GET", url)
                if ("get", _template(p)) in KEY_ROUTES or p in ("/healthz", "/readyz"):
                    if r.status != 200:
                        problems.append(f"GET {url}: {r.status} {r.body[:200]!r}")
                elif r.status in (404, 405) or r.status >= 500:
                    # e.g. a WebSocket endpoint may refuse a plain GET, but not like this
                    problems.append(f"GET {url}: {r.status} {r.body[:200]!r}")
            elif m in ("POST", "PATCH"):
                # an unknown field: rejected by validation, never a routing answer
                with db_unchanged(env.db, f"{m} {url} with an unknown field"):
                    r = env.root.request(m, url, {"no_such_field_xyz": True})
                if r.status in (404, 405) or r.status >= 500 or r.status < 400:
                    problems.append(f"{m} {url} (unknown field): {r.status} {r.body[:200]!r}")
            elif m == "DELETE" and url.endswith("/sessions/current"):
                c = api_login(env.srv, "agt@dir.example")
                r = c.request("DELETE", url)
                if r.status != 204:
                    problems.append(f"DELETE {url}: {r.status} {r.body[:200]!r}")
    assert not problems, "\n".join(problems)
