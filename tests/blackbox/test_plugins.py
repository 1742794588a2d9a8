"""Plugins and the inbound pipeline, through the example webhook plugin.

The example plugin (plugins/example) is loaded from the build tree by
default; the plugins that must be refused are built in
<build>/tests/plugins.
"""

import os
import urllib.parse

import pytest

from conftest import SWITCHBOARD_BIN, psql, run_cli, wait_until

BUILD = os.path.dirname(os.path.dirname(SWITCHBOARD_BIN))
TEST_PLUGINS = os.path.join(BUILD, "tests", "plugins")


def hook(srv, tenant, text, **query):
    path = f"/hooks/{tenant}/example?" + urllib.parse.urlencode(query)
    status, headers, body = srv.request("POST", path, body=text.encode(),
                                        headers={"Content-Type": "text/plain"})
    return status, headers, body.decode()


def counts(url):
    out = psql(url, "SELECT (SELECT count(*) FROM tickets) || ',' || (SELECT count(*) FROM messages)"
                    " || ',' || (SELECT count(*) FROM customers)")
    return tuple(int(x) for x in out.strip().split(","))


def migrated(url):
    cp = run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": url})
    assert cp.returncode == 0, cp.stderr
    cp = run_cli(["tenant", "add", "acme", "--name", "Acme"],
                 env_extra={"SWITCHBOARD_DATABASE_URL": url})
    assert cp.returncode == 0, cp.stderr


def test_example_plugin_loaded_and_ingests(database, start_server):
    migrated(database)
    srv = start_server(database)
    assert 'loaded plugin "example"' in srv.log_text()

    status, _, body = hook(srv, "acme", "Hello, my order is late", **{"from": "u1", "id": "m1",
                                                                     "thread": "t1", "name": "Uno"})
    assert status == 200 and body.startswith("stored 1"), body
    # the same thread appends to the same ticket; another thread opens one
    status, _, body = hook(srv, "acme", "Any news?", **{"from": "u1", "id": "m2", "thread": "t1"})
    assert status == 200 and body.startswith("stored 1"), body
    status, _, body = hook(srv, "acme", "Other question", **{"from": "u1", "id": "m3",
                                                            "thread": "t2"})
    assert status == 200 and body.startswith("stored 2"), body
    assert counts(database) == (2, 3, 1)

    out = psql(database, "SELECT subject || '|' || channel || '|' || thread_key FROM tickets"
                         " WHERE number = 1")
    assert out.strip() == "Hello, my order is late|example|t1"
    out = psql(database, "SELECT name FROM customers")
    assert out.strip() == "Uno"
    out = psql(database, "SELECT string_agg(action, ',' ORDER BY id) FROM events")
    assert out.strip() == "ticket.created,message.added,ticket.created"


def test_redelivery_stores_one_message(database, start_server):
    migrated(database)
    srv = start_server(database)
    for _ in range(3):
        status, _, body = hook(srv, "acme", "once", **{"from": "u9", "id": "same-id"})
        assert status == 200, body
    assert body.startswith("duplicate 1"), body
    assert counts(database) == (1, 1, 1)


def test_unknown_tenant_and_bad_input_store_nothing(database, start_server):
    migrated(database)
    srv = start_server(database)
    status, _, body = hook(srv, "nosuch", "x", **{"from": "u", "id": "1"})
    assert status == 404, body
    status, _, body = hook(srv, "acme", "x", **{"from": "u"})
    assert status == 400, body
    status, _, body = hook(srv, "acme", "x", **{"from": "u" * 400, "id": "2"})
    assert status == 400, body
    assert counts(database) == (0, 0, 0)


def test_bad_shown_fields_are_repaired_not_refused(database, start_server):
    """A name or file name that is too long or not UTF-8 is cut on a
    character boundary or repaired, and the message stored; a text that is
    not UTF-8 is refused (400), not retried forever (503)."""
    migrated(database)
    srv = start_server(database)
    status, _, body = hook(srv, "acme", "hi", **{"from": "u1", "id": "n1", "name": "é" * 150})
    assert status == 200, body
    status, _, body = srv.request("POST", "/hooks/acme/example?from=u2&id=n2&name=ab%FFcd",
                                  body=b"hi", headers={"Content-Type": "text/plain"})
    assert status == 200, body
    assert psql(database, "SELECT string_agg(name, ',' ORDER BY id) FROM customers").strip() \
        == "é" * 100 + ",ab\ufffdcd"
    status, _, body = srv.request("POST", "/hooks/acme/example?from=u3&id=f1&filename="
                                  + urllib.parse.quote("ü" * 200), body=b"\x89PNG",
                                  headers={"Content-Type": "image/png"})
    assert status == 200, body
    assert psql(database, "SELECT filename FROM attachments").strip() == "ü" * 127
    status, _, body = srv.request("POST", "/hooks/acme/example?from=u4&id=b1", body=b"bad \xff",
                                  headers={"Content-Type": "text/plain"})
    assert status == 400, body
    assert counts(database) == (3, 3, 3)


def test_database_down_means_retry_then_stored_once(pg_cluster_factory, start_server):
    cluster = pg_cluster_factory()
    migrated(cluster.url)
    srv = start_server(cluster.url)
    cluster.stop()
    wait_until(lambda: srv.request("GET", "/readyz")[0] == 503, 30, message="readyz 503")
    status, headers, body = hook(srv, "acme", "while down", **{"from": "u", "id": "x1"})
    assert status == 503, body
    assert "retry-after" in headers
    cluster.start()
    wait_until(lambda: srv.request("GET", "/readyz")[0] == 200, 60, message="readyz 200")
    # the sender retries: stored once
    status, _, body = hook(srv, "acme", "while down", **{"from": "u", "id": "x1"})
    assert status == 200 and body.startswith("stored 1"), body
    status, _, body = hook(srv, "acme", "while down", **{"from": "u", "id": "x1"})
    assert body.startswith("duplicate 1"), body
    assert counts(cluster.url) == (1, 1, 1)


def test_tenant_isolation_of_ingest(database, start_server):
    migrated(database)
    cp = run_cli(["tenant", "add", "beta", "--name", "Beta"],
                 env_extra={"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode == 0
    srv = start_server(database)
    # one sender and one message id in two tenants: two separate records
    for tenant in ("acme", "beta"):
        status, _, body = hook(srv, tenant, "hi", **{"from": "same", "id": "same"})
        assert status == 200 and body.startswith("stored 1"), body
    assert counts(database) == (2, 2, 2)


@pytest.mark.parametrize("plugin,message", [
    ("bad_abi", 'could not load plugin "bad_abi": ABI mismatch'),
    ("no_entry", 'could not load plugin "no_entry": missing entry symbol "sb_plugin_entry"'),
    ("failing_init", 'could not initialise plugin "failing_init"'),
])
def test_refused_plugins_leave_the_server_running(database, start_server, plugin, message):
    srv = start_server(database, env={"SWITCHBOARD_PLUGINS_DIR": TEST_PLUGINS,
                                      "SWITCHBOARD_PLUGINS": plugin})
    log = srv.log_text()
    assert message in log, log
    if plugin == "bad_abi":
        assert "Server has ABI 1.3, plugin was built for 2.0." in log
    assert srv.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize("plugin", ["bad_abi", "failing_init", "no_entry", "absent"])
def test_required_plugin_that_fails_stops_the_server(database, plugin):
    cp = run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode == 0
    cp = run_cli(["serve"], env_extra={
        "SWITCHBOARD_DATABASE_URL": database,
        "SWITCHBOARD_LISTEN": "127.0.0.1:1",   # never reached: it stops before listening
        "SWITCHBOARD_PLUGINS_DIR": TEST_PLUGINS,
        "SWITCHBOARD_PLUGINS": plugin,
        "SWITCHBOARD_PLUGINS_REQUIRED": plugin,
    }, timeout=30)
    assert cp.returncode == 1, cp.stderr
    assert f'required plugin "{plugin}" is not available' in cp.stderr


def test_plugin_settings_from_file_and_environment(database, start_server, tmp_path):
    migrated(database)
    conf = tmp_path / "switchboard.conf"
    conf.write_text('example = { enabled = false }\n')
    srv = start_server(database, args=("--config", str(conf)))
    assert "example webhook disabled" in srv.log_text()
    status, _, _ = hook(srv, "acme", "x", **{"from": "u", "id": "1"})
    assert status == 404   # the disabled plugin declines; nothing else answers
    srv2 = start_server(database, args=("--config", str(conf)),
                        env={"SWITCHBOARD_EXAMPLE_ENABLED": "true"})
    assert "example webhook enabled" in srv2.log_text()


def test_attachment_stored_and_downloaded(database, start_server):
    migrated(database)
    srv = start_server(database)
    png = bytes(range(256)) * 40
    status, _, body = srv.request(
        "POST", "/hooks/acme/example?from=u1&id=f1&filename=" + urllib.parse.quote('scan "1".png'),
        body=png, headers={"Content-Type": "image/png"})
    assert status == 200 and body.decode().startswith("stored 1"), body
    out = psql(database, "SELECT filename || '|' || content_type || '|' || size || '|' ||"
                         " encode(sha256, 'hex') FROM attachments")
    import hashlib
    assert out.strip() == f'scan "1".png|image/png|{len(png)}|{hashlib.sha256(png).hexdigest()}'
    # through the API: listed on the message, downloadable as a file
    import json as _json
    cp = run_cli(["agent", "add", "v@acme.example", "--name", "V", "--tenant", "acme",
                  "--role", "viewer"], env_extra={"SWITCHBOARD_DATABASE_URL": database},
                 input="secret-pass\n")
    assert cp.returncode == 0
    status, _, raw = srv.request("POST", "/api/v1/sessions", body=_json.dumps(
        {"email": "v@acme.example", "password": "secret-pass"}).encode(),
        headers={"Content-Type": "application/json"})
    token = _json.loads(raw)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    status, _, raw = srv.request("GET", "/api/v1/tenants/acme/tickets/1", headers=auth)
    att = _json.loads(raw)["messages"][0]["attachments"]
    assert [(a["filename"], a["size"]) for a in att] == [('scan "1".png', len(png))]
    status, headers, data = srv.request(
        "GET", f"/api/v1/tenants/acme/tickets/1/attachments/{att[0]['id']}", headers=auth)
    assert status == 200 and data == png
    assert headers["content-disposition"] == 'attachment; filename="scan _1_.png"'
    assert headers["x-content-type-options"] == "nosniff"
    status, _, _ = srv.request("GET", "/api/v1/tenants/acme/tickets/2/attachments/1", headers=auth)
    assert status == 404
    # a redelivery stores no second copy
    status, _, body = srv.request("POST", "/hooks/acme/example?from=u1&id=f1&filename=x",
                                  body=png, headers={"Content-Type": "image/png"})
    assert body.decode().startswith("duplicate 1")
    assert psql(database, "SELECT count(*) FROM attachments").strip() == "1"


def old_plugin_posted(database, start_server, name, route, text):
    """A server with only the test plugin name, which has stored text posted to its route."""
    migrated(database)
    srv = start_server(database, env={"SWITCHBOARD_PLUGINS_DIR": TEST_PLUGINS,
                                      "SWITCHBOARD_PLUGINS": name})
    assert f'loaded plugin "{name}"' in srv.log_text()
    status, _, body = srv.request("POST", f"/hooks/acme/{route}?id=o1", body=text,
                                  headers={"Content-Type": "text/plain"})
    assert status == 200, body
    return srv


def test_plugin_built_for_abi_1_1_still_works(database, start_server):
    """A 1.1 plugin's shorter structs are read as 1.1 (no webhook, attachments
    without file_id, no channel_id) and what it ingests is stored whole."""
    srv = old_plugin_posted(database, start_server, "abi_1_1", "old", b"from an old plugin")
    out = psql(database, "SELECT string_agg(filename || ':' || size || ':' ||"
                         " convert_from(data, 'UTF8') || ':' || (file_id IS NULL), ',' ORDER BY id)"
                         " FROM attachments")
    assert out.strip() == "a.txt:5:first:true,b.txt:7:second!:true"
    assert psql(database, "SELECT count(*) FROM messages WHERE channel_id IS NULL"
                          " AND channel = 'abi_1_1'").strip() == "1"
    # An instance of its type has no webhook: the host never reads past its descriptor.
    psql(database, "INSERT INTO channels (tenant_id, type, name) SELECT id, 'abi_1_1', 'old'"
                   " FROM tenants WHERE slug = 'acme'")
    cid = psql(database, "SELECT id FROM channels WHERE name = 'old'").strip()
    status, _, _ = srv.request("POST", f"/hooks/acme/{cid}", body=b"x")
    assert status == 404


def test_plugin_built_for_abi_1_2_has_no_threading_members_read(database, start_server):
    """A 1.2 message ends at channel_id: what follows it (shaped like 1.3's
    references, ticket number, machine-sent flag) is never read, and the
    message opens an ordinary ticket."""
    old_plugin_posted(database, start_server, "abi_1_2", "old12", b"from a 1.2 plugin")
    assert psql(database, "SELECT m.body_text, m.auto_submitted, m.quote_at IS NULL, t.status"
                          " FROM messages m JOIN tickets t ON t.id = m.ticket_id"
                          " WHERE m.channel = 'abi_1_2'").strip() == \
        "from a 1.2 plugin|f|t|new"


def test_plugin_built_for_abi_1_0_has_no_attachments_read(database, start_server):
    """A 1.0 message ends at html: what lies after it in the plugin's memory
    (here, something shaped like an attachment list) is never read."""
    old_plugin_posted(database, start_server, "abi_1_0", "older", b"from a 1.0 plugin")
    assert psql(database, "SELECT body_text FROM messages WHERE channel = 'abi_1_0'").strip() \
        == "from a 1.0 plugin"
    assert psql(database, "SELECT count(*) FROM attachments").strip() == "0"


def test_webhook_that_answers_then_fails_is_answered_once(database, start_server):
    """A plugin's webhook that responds and then returns an error: the
    host does not answer again (which aborted the worker)."""
    migrated(database)
    srv = start_server(database, env={"SWITCHBOARD_PLUGINS_DIR": TEST_PLUGINS,
                                      "SWITCHBOARD_PLUGINS": "answers_then_fails"})
    psql(database, "INSERT INTO channels (tenant_id, type, name) SELECT id, 'answers_then_fails',"
                   " 'atf' FROM tenants WHERE slug = 'acme'")
    cid = psql(database, "SELECT id FROM channels WHERE name = 'atf'").strip()
    for _ in range(2):
        status, _, body = srv.request("POST", f"/hooks/acme/{cid}", body=b"x")
        assert (status, body) == (200, b"answered\n")
    assert "assert" not in srv.log_text().lower()
