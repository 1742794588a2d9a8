"""Accounts through the REST API and the operator CLI: sessions, /me,
tenants, agents and memberships. One server for the module."""

import datetime
import types

import pytest

from conftest import (API_PASSWORD, ApiClient, api_login, cli_agent, cli_platform_admin,
                      cli_tenant, db_unchanged, expect, psql, rand_suffix, sb_cli)

T = "accts"


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db)
    cli_tenant(db, T, "Accounts Inc")
    cli_tenant(db, "other-co", "Other Co")
    cli_agent(db, "boss@accts.example", T, "admin", name="Boss")
    cli_agent(db, "sup@accts.example", T, "supervisor")
    cli_agent(db, "worker@accts.example", T, "agent", name="Worker")
    cli_agent(db, "outsider@other.example", "other-co", "agent", name="Outsider")
    cli_agent(db, "far@other.example", "other-co", "agent", name="Far")
    cli_platform_admin(db, "root@platform.example", name="Root")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.boss = api_login(srv, "boss@accts.example")
    e.sup = api_login(srv, "sup@accts.example")
    e.worker = api_login(srv, "worker@accts.example")
    e.root = api_login(srv, "root@platform.example")
    e.far_id = int(psql(db, "SELECT id FROM agents WHERE email = 'far@other.example'"))
    return e


# ---------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------

def test_login_answers_token_and_agent(env):
    r = ApiClient(env.srv).post("sessions", {"email": "worker@accts.example",
                                             "password": API_PASSWORD})
    doc = expect(r, 201)
    assert isinstance(doc["token"], str) and len(doc["token"]) >= 20
    exp = datetime.datetime.fromisoformat(doc["expires_at"])
    assert exp > datetime.datetime.now(datetime.timezone.utc)
    agent = doc["agent"]
    assert agent["email"] == "worker@accts.example" and agent["name"] == "Worker"
    assert agent["platform_admin"] is False
    assert isinstance(agent["id"], int)
    assert doc["token"] != env.worker.token


def test_login_email_is_case_insensitive(env):
    c = api_login(env.srv, "Worker@ACCTS.example")
    assert c.id == env.worker.id


def test_wrong_password_and_unknown_email_are_401(env):
    anon = ApiClient(env.srv)
    expect(anon.post("sessions", {"email": "sup@accts.example", "password": "wrong password"}),
           401, code="invalid_credentials")
    expect(anon.post("sessions", {"email": "nobody@accts.example", "password": API_PASSWORD}),
           401, code="invalid_credentials")


def test_logout_ends_the_token(env):
    c = api_login(env.srv, "sup@accts.example")
    expect(c.get("me"), 200)
    r = c.delete("sessions/current")
    expect(r, 204)
    assert r.body == b""
    expect(c.get("me"), 401, code="unauthorized")
    expect(c.get(f"tenants/{T}/tickets"), 401, code="unauthorized")
    expect(c.delete("sessions/current"), 401, code="unauthorized")
    # the other sessions of the same agent are unaffected
    expect(env.sup.get("me"), 200)


def test_missing_or_bad_token_is_401(env):
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer " + env.worker.token + "x"}):
        r = ApiClient(env.srv).get("me", headers=headers)
        expect(r, 401, code="unauthorized")


def test_cli_passwd_ends_sessions(env):
    email = f"pw-{rand_suffix(5)}@accts.example"
    cli_agent(env.db, email, T, "agent")
    c = api_login(env.srv, email)
    expect(c.get("me"), 200)
    sb_cli(env.db, "agent", "passwd", email, input="brand new password\n")
    expect(c.get("me"), 401, code="unauthorized")
    expect(ApiClient(env.srv).post("sessions", {"email": email, "password": API_PASSWORD}),
           401, code="invalid_credentials")
    c2 = api_login(env.srv, email, "brand new password")
    expect(c2.get("me"), 200)


def test_cli_rejects_short_password_and_bad_role(env):
    before = psql(env.db, "SELECT count(*) FROM agents")
    sb_cli(env.db, "agent", "add", "short@accts.example", "--name", "Short", "--tenant", T,
           "--role", "agent", input="short\n", expect_rc=1)
    cp = sb_cli(env.db, "agent", "add", "role@accts.example", "--name", "Role", "--tenant", T,
                "--role", "overlord", input="long enough password\n", expect_rc=None)
    assert cp.returncode in (1, 2), (cp.returncode, cp.stderr)
    assert psql(env.db, "SELECT count(*) FROM agents") == before


def test_cli_duplicate_tenant_fails(env):
    before = psql(env.db, "SELECT count(*) FROM tenants")
    sb_cli(env.db, "tenant", "add", T, "--name", "Again", expect_rc=1)
    assert psql(env.db, "SELECT count(*) FROM tenants") == before
    sb_cli(env.db, "tenant", "add", expect_rc=2)


def test_cli_existing_agent_gets_membership(env):
    # for an existing agent no password is read: stdin is empty here
    sb_cli(env.db, "agent", "add", "outsider@other.example", "--tenant", T, "--role", "viewer",
           input="")
    c = api_login(env.srv, "outsider@other.example")
    roles = {t["slug"]: t["role"] for t in expect(c.get("me"), 200)["tenants"]}
    assert roles == {"other-co": "agent", T: "viewer"}
    # the membership's role is updated by a second add
    sb_cli(env.db, "agent", "add", "outsider@other.example", "--tenant", T, "--role", "agent",
           input="")
    roles = {t["slug"]: t["role"] for t in expect(c.get("me"), 200)["tenants"]}
    assert roles[T] == "agent"
    # put it back as it was for the other tests
    sb_cli(env.db, "agent", "add", "outsider@other.example", "--tenant", T, "--role", "viewer",
           input="")


# ---------------------------------------------------------------------------
# me and tenants
# ---------------------------------------------------------------------------

def test_me(env):
    me = expect(env.boss.get("me"), 200)
    assert me["id"] == env.boss.id
    assert me["email"] == "boss@accts.example" and me["name"] == "Boss"
    assert me["platform_admin"] is False
    assert me["tenants"] == [{"slug": T, "name": "Accounts Inc", "role": "admin"}]
    root = expect(env.root.get("me"), 200)
    assert root["platform_admin"] is True and root["email"] == "root@platform.example"


def test_tenants_list(env):
    doc = expect(env.worker.get("tenants"), 200)
    assert doc == {"items": [{"slug": T, "name": "Accounts Inc", "role": "agent"}],
                   "next_cursor": None}


def test_platform_admin_creates_tenant(env):
    slug = "new-" + rand_suffix(6)
    r = env.root.post("tenants", {"slug": slug, "name": "Brand New"})
    doc = expect(r, 201)
    assert doc["slug"] == slug and doc["name"] == "Brand New"
    assert psql(env.db, f"SELECT name FROM tenants WHERE slug = '{slug}'").strip() == "Brand New"
    with db_unchanged(env.db, "duplicate tenant"):
        expect(env.root.post("tenants", {"slug": slug, "name": "Again"}), 409)
        expect(env.root.post("tenants", {"slug": T, "name": "Again"}), 409)
    # the CLI can add members to it
    cli_agent(env.db, "worker@accts.example", slug, "agent")
    slugs = {t["slug"] for t in expect(env.worker.get("tenants"), 200)["items"]}
    assert slugs == {T, slug}


def test_only_platform_admin_creates_tenants(env):
    with db_unchanged(env.db, "tenant creation by non-admins"):
        expect(env.boss.post("tenants", {"slug": "boss-made", "name": "Boss made"}), 403)
        expect(env.worker.post("tenants", {"slug": "worker-made", "name": "W"}), 403)
        expect(ApiClient(env.srv).post("tenants", {"slug": "anon-made", "name": "A"}), 401)


@pytest.mark.parametrize("slug", ["Bad Slug", "UPPER", "-leading", "", "x" * 64, "sl/ash",
                                  "ünï"])
def test_bad_tenant_slug_is_422(env, slug):
    with db_unchanged(env.db, f"bad slug {slug!r}"):
        expect(env.root.post("tenants", {"slug": slug, "name": "Bad"}), 422, field="slug")


# ---------------------------------------------------------------------------
# agents and memberships
# ---------------------------------------------------------------------------

def test_agents_list(env):
    doc = expect(env.worker.get(f"tenants/{T}/agents"), 200)
    by_email = {a["email"]: a for a in doc["items"]}
    assert by_email["boss@accts.example"]["role"] == "admin"
    assert by_email["sup@accts.example"]["role"] == "supervisor"
    assert by_email["worker@accts.example"]["role"] == "agent"
    assert by_email["worker@accts.example"]["id"] == env.worker.id
    assert by_email["worker@accts.example"]["name"] == "Worker"
    assert "root@platform.example" not in by_email
    for a in doc["items"]:
        assert "password" not in a and "password_hash" not in a, a


def test_admin_adds_new_agent_who_can_log_in(env):
    email = f"new-{rand_suffix(5)}@accts.example"
    r = env.boss.post(f"tenants/{T}/agents", {"email": email, "name": "Newbie", "role": "agent",
                                              "password": "newbie password"})
    doc = expect(r, 201)
    assert doc["email"] == email and doc["role"] == "agent" and doc["name"] == "Newbie"
    c = api_login(env.srv, email, "newbie password")
    assert c.id == doc["id"]
    assert [t["slug"] for t in expect(c.get("tenants"), 200)["items"]] == [T]
    ids = [a["id"] for a in expect(env.boss.get(f"tenants/{T}/agents"), 200)["items"]]
    assert doc["id"] in ids


def test_admin_adds_existing_agent_without_password(env):
    email = f"ext-{rand_suffix(5)}@other.example"
    cli_agent(env.db, email, "other-co", "agent")
    doc = expect(env.boss.post(f"tenants/{T}/agents", {"email": email, "role": "viewer"}), 201)
    assert doc["role"] == "viewer" and doc["email"] == email
    c = api_login(env.srv, email)
    roles = {t["slug"]: t["role"] for t in expect(c.get("me"), 200)["tenants"]}
    assert roles == {"other-co": "agent", T: "viewer"}
    # already a member: a duplicate membership
    with db_unchanged(env.db, "duplicate membership"):
        expect(env.boss.post(f"tenants/{T}/agents", {"email": email, "role": "agent"}), 409)


def test_new_agent_needs_password(env):
    with db_unchanged(env.db, "new agent without password"):
        expect(env.boss.post(f"tenants/{T}/agents", {"email": "nopw@accts.example",
                                                     "role": "agent"}), 422, field="password")
        expect(env.boss.post(f"tenants/{T}/agents", {"email": "shortpw@accts.example",
                                                     "role": "agent", "password": "short"}),
               422, field="password")


def test_admin_changes_role(env):
    email = f"role-{rand_suffix(5)}@accts.example"
    cli_agent(env.db, email, T, "agent")
    c = api_login(env.srv, email)
    doc = expect(env.boss.patch(f"tenants/{T}/agents/{c.id}", {"role": "viewer"}), 200)
    assert doc["role"] == "viewer" and doc["id"] == c.id
    roles = {t["slug"]: t["role"] for t in expect(c.get("me"), 200)["tenants"]}
    assert roles == {T: "viewer"}
    # the new role takes effect at once
    with db_unchanged(env.db, "demoted agent writing"):
        expect(c.post(f"tenants/{T}/organizations", {"name": "Demoted org"}), 403)
    doc = expect(env.boss.patch(f"tenants/{T}/agents/{c.id}", {"role": "supervisor"}), 200)
    assert doc["role"] == "supervisor"
    expect(c.post(f"tenants/{T}/teams", {"name": f"Promoted {rand_suffix(4)}"}), 201)


def test_admin_removes_member(env):
    email = f"gone-{rand_suffix(5)}@accts.example"
    cli_agent(env.db, email, T, "agent")
    c = api_login(env.srv, email)
    expect(c.get(f"tenants/{T}/tickets"), 200)
    r = env.boss.delete(f"tenants/{T}/agents/{c.id}")
    expect(r, 204)
    # the tenant is now foreign to it: 404
    expect(c.get(f"tenants/{T}/tickets"), 404)
    assert expect(c.get("tenants"), 200)["items"] == []
    ids = [a["id"] for a in expect(env.boss.get(f"tenants/{T}/agents"), 200)["items"]]
    assert c.id not in ids
    # removing it again: no such member
    expect(env.boss.delete(f"tenants/{T}/agents/{c.id}"), 404)


def test_only_admins_manage_members(env):
    with db_unchanged(env.db, "non-admins managing members"):
        for who in (env.sup, env.worker):
            expect(who.post(f"tenants/{T}/agents", {"email": "x@accts.example", "role": "agent",
                                                    "password": "long enough password"}), 403)
            expect(who.patch(f"tenants/{T}/agents/{env.worker.id}", {"role": "admin"}), 403)
            expect(who.delete(f"tenants/{T}/agents/{env.worker.id}"), 403)


def test_member_of_another_tenant_is_not_found(env):
    with db_unchanged(env.db, "agent ids of other tenants"):
        for agent in (env.far_id, 987654321):
            expect(env.boss.patch(f"tenants/{T}/agents/{agent}", {"role": "agent"}), 404)
            expect(env.boss.delete(f"tenants/{T}/agents/{agent}"), 404)
