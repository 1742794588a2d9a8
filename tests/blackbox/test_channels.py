"""Channel instances: plugin-validated settings, sealed write-only secrets."""

import json

import pytest

from conftest import psql, run_cli


@pytest.fixture
def env(database, start_server):
    e = {"SWITCHBOARD_DATABASE_URL": database}
    assert run_cli(["migrate"], env_extra=e).returncode == 0
    for slug in ("acme", "beta"):
        assert run_cli(["tenant", "add", slug, "--name", slug], env_extra=e).returncode == 0
    for email, role in (("admin@acme.example", "admin"), ("agent@acme.example", "agent")):
        cp = run_cli(["agent", "add", email, "--name", email, "--tenant", "acme", "--role", role],
                     env_extra=e, input="secret-pass\n")
        assert cp.returncode == 0
    srv = start_server(database)
    tokens = {}
    for email in ("admin@acme.example", "agent@acme.example"):
        status, _, body = srv.request("POST", "/api/v1/sessions", body=json.dumps(
            {"email": email, "password": "secret-pass"}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 201
        tokens[email.split("@")[0]] = json.loads(body)["token"]
    return srv, tokens, database


def call(srv, token, method, path, body=None):
    status, _, raw = srv.request(method, path, body=json.dumps(body).encode() if body is not None
                                 else None, headers={"Content-Type": "application/json",
                                                     "Authorization": f"Bearer {token}"})
    return status, json.loads(raw) if raw else None


SECRET = "sk_live_do-not-leak-4242"


def test_create_list_update_with_sealed_secrets(env):
    srv, tok, db = env
    status, ch = call(srv, tok["admin"], "POST", "/api/v1/tenants/acme/channels",
                      {"type": "chat", "name": "Website", "settings": {"title": "Help"},
                       "secrets": {"api_key": SECRET}})
    assert status == 201, ch
    assert ch["type"] == "chat" and ch["settings"] == {"title": "Help"}
    assert ch["secrets"] == ["api_key"]
    assert ch["endpoints"]["widget"] == "/chat/acme/widget.js"
    assert SECRET not in json.dumps(ch)
    # sealed at rest, never in the log
    raw = psql(db, "SELECT encode(secrets, 'escape') FROM channels")
    assert SECRET not in raw and len(raw.strip()) > len(SECRET)
    assert SECRET not in srv.log_text()

    status, lst = call(srv, tok["admin"], "GET", "/api/v1/tenants/acme/channels")
    assert status == 200 and [c["name"] for c in lst["items"]] == ["Website"]
    assert SECRET not in json.dumps(lst)

    status, ch2 = call(srv, tok["admin"], "PATCH", f"/api/v1/tenants/acme/channels/{ch['id']}",
                       {"secrets": {"token": "x", "api_key": "y"}, "active": False})
    assert status == 200, ch2
    assert ch2["secrets"] == ["api_key", "token"] and ch2["active"] is False
    status, got = call(srv, tok["admin"], "GET", f"/api/v1/tenants/acme/channels/{ch['id']}")
    assert status == 200 and got["secrets"] == ["api_key", "token"]


@pytest.mark.parametrize("body,field", [
    ({"type": "chat", "name": "W", "settings": {"colour": "red"}}, "settings.colour"),
    ({"type": "example", "name": "W", "settings": {"label": 5}}, "settings.label"),
    ({"type": "telepathy", "name": "W"}, "type"),
    ({"type": "chat", "name": "W", "secrets": {"k": 1}}, "secrets"),
    ({"type": "chat", "name": ""}, "name"),
    ({"type": "chat", "name": "W", "extra": 1}, "extra"),
])
def test_bad_channels_are_refused_and_nothing_stored(env, body, field):
    srv, tok, db = env
    status, err = call(srv, tok["admin"], "POST", "/api/v1/tenants/acme/channels", body)
    assert status == 422, err
    assert err["error"]["field"] == field, err
    assert psql(db, "SELECT count(*) FROM channels").strip() == "0"


def test_settings_change_is_checked_by_the_plugin(env):
    srv, tok, _ = env
    status, ch = call(srv, tok["admin"], "POST", "/api/v1/tenants/acme/channels",
                      {"type": "example", "name": "Hook"})
    assert status == 201, ch
    path = f"/api/v1/tenants/acme/channels/{ch['id']}"
    status, err = call(srv, tok["admin"], "PATCH", path, {"settings": {"label": "x"}})
    assert status == 422 and err["error"]["field"] == "type"
    status, err = call(srv, tok["admin"], "PATCH", path, {"type": "example",
                                                          "settings": {"nope": 1}})
    assert status == 422 and err["error"]["field"] == "settings.nope"
    status, ok = call(srv, tok["admin"], "PATCH", path, {"type": "example",
                                                         "settings": {"label": "ops"}})
    assert status == 200 and ok["settings"] == {"label": "ops"}


def test_duplicates_roles_and_tenants(env):
    srv, tok, _ = env
    body = {"type": "chat", "name": "Site"}
    assert call(srv, tok["admin"], "POST", "/api/v1/tenants/acme/channels", body)[0] == 201
    assert call(srv, tok["admin"], "POST", "/api/v1/tenants/acme/channels", body)[0] == 409
    assert call(srv, tok["agent"], "POST", "/api/v1/tenants/acme/channels", body)[0] == 403
    assert call(srv, tok["agent"], "GET", "/api/v1/tenants/acme/channels")[0] == 403
    assert call(srv, tok["admin"], "GET", "/api/v1/tenants/beta/channels")[0] == 404
    assert call(srv, tok["admin"], "GET", "/api/v1/tenants/acme/channels/999")[0] == 404
