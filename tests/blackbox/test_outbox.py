"""The outbound pipeline: replies to tickets of a plugin's channel go out
through the outbox, once, surviving restarts; failures retry or fail.

The example plugin "sends" by appending a line to its outbox_file.
"""

import json

from conftest import psql, run_cli, wait_until
from test_plugins import hook, migrated


def login(srv, database, email="ann@acme.example"):
    cp = run_cli(["agent", "add", email, "--name", "Ann", "--tenant", "acme", "--role", "agent"],
                 env_extra={"SWITCHBOARD_DATABASE_URL": database}, input="secret-pass\n")
    assert cp.returncode == 0, cp.stderr
    status, _, body = srv.request("POST", "/api/v1/sessions",
                                  body=json.dumps({"email": email, "password": "secret-pass"}).encode(),
                                  headers={"Content-Type": "application/json"})
    assert status == 201, body
    return json.loads(body)["token"]


def reply(srv, token, number, text, kind="reply"):
    status, _, body = srv.request(
        "POST", f"/api/v1/tenants/acme/tickets/{number}/messages",
        body=json.dumps({"kind": kind, "text": text}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 201, body
    return json.loads(body)


def lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [l for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


def test_replies_delivered_once_with_two_workers(database, start_server, tmp_path):
    migrated(database)
    out = tmp_path / "sent.txt"
    srv = start_server(database, workers=2, env={"SWITCHBOARD_EXAMPLE_OUTBOX_FILE": str(out)})
    token = login(srv, database)
    status, _, body = hook(srv, "acme", "help please", **{"from": "cust-1", "id": "in-1",
                                                          "thread": "th"})
    assert status == 200, body
    ids = [reply(srv, token, 1, f"answer {i}")["id"] for i in range(30)]
    reply(srv, token, 1, "internal only", kind="note")   # notes never leave
    wait_until(lambda: len(lines(out)) >= 30, 30, message="30 deliveries")
    got = lines(out)
    assert len(got) == 30, got
    sent_ids = sorted(int(l.split("message=")[1].split()[0]) for l in got)
    assert sent_ids == sorted(ids)
    assert all("to=other:cust-1" in l for l in got)
    wait_until(lambda: psql(database, "SELECT count(*) FROM messages WHERE delivery_status = 'sent'")
               .strip() == "30", 10, message="delivery status recorded")
    assert psql(database, "SELECT count(*) FROM outbox WHERE status <> 'sent'").strip() == "0"


def test_outbox_survives_restart(database, start_server, tmp_path):
    migrated(database)
    out = tmp_path / "sent.txt"
    srv = start_server(database, env={"SWITCHBOARD_EXAMPLE_SEND": "retry"})
    token = login(srv, database)
    hook(srv, "acme", "hello", **{"from": "c", "id": "1", "thread": "t"})
    reply(srv, token, 1, "queued while the channel cannot send")
    wait_until(lambda: int(psql(database, "SELECT coalesce(max(attempts), 0) FROM outbox")) >= 1, 20,
               message="a failed attempt")
    assert psql(database, "SELECT status FROM outbox").strip() == "pending"
    assert srv.stop() == 0
    assert lines(out) == []
    srv2 = start_server(database, env={"SWITCHBOARD_EXAMPLE_OUTBOX_FILE": str(out)})
    wait_until(lambda: len(lines(out)) == 1, 30, message="delivery after restart")
    assert "queued while the channel cannot send" in lines(out)[0]
    wait_until(lambda: psql(database, "SELECT delivery_status FROM messages"
                                      " WHERE direction = 'outbound'").strip() == "sent", 10,
               message="sent recorded")
    assert srv2.alive()


def test_permanent_failure_is_recorded(database, start_server):
    migrated(database)
    srv = start_server(database, env={"SWITCHBOARD_EXAMPLE_SEND": "fail"})
    token = login(srv, database)
    hook(srv, "acme", "hello", **{"from": "c", "id": "1", "thread": "t"})
    reply(srv, token, 1, "cannot go")
    wait_until(lambda: psql(database, "SELECT status FROM outbox").strip() == "failed", 20,
               message="failed status")
    assert psql(database, "SELECT last_error FROM outbox").strip() == "configured to fail"
    status, _, body = srv.request("GET", "/api/v1/tenants/acme/tickets/1",
                                  headers={"Authorization": f"Bearer {token}"})
    msgs = json.loads(body)["messages"]
    assert [m["delivery_status"] for m in msgs if m["direction"] == "outbound"] == ["failed"]


def test_api_tickets_have_no_outbox(database, start_server):
    migrated(database)
    srv = start_server(database)
    token = login(srv, database)
    status, _, body = srv.request(
        "POST", "/api/v1/tenants/acme/tickets",
        body=json.dumps({"subject": "s", "customer": {"email": "a@b.example"},
                         "message": {"text": "t"}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 201, body
    reply(srv, token, 1, "answer")
    assert psql(database, "SELECT count(*) FROM outbox").strip() == "0"


def test_plugin_settings_survive_a_reload(database, start_server, tmp_path):
    """Workers started by SIGHUP still see the settings plugins read at start."""
    migrated(database)
    out = tmp_path / "sent.txt"
    conf = tmp_path / "switchboard.conf"
    conf.write_text(f'example = {{ outbox_file = "{out}" }}\n')
    srv = start_server(database, args=("--config", str(conf)))
    token = login(srv, database)
    hook(srv, "acme", "hello", **{"from": "c", "id": "1", "thread": "t"})
    conf.write_text('example = { outbox_file = "/nonexistent/elsewhere" }\nlog_level = "debug"\n')
    import signal as _signal
    srv.send_signal(_signal.SIGHUP)
    wait_until(lambda: srv.log_text().count("worker started") >= 2, 20, message="new workers")
    reply(srv, token, 1, "after the reload")
    wait_until(lambda: len(lines(out)) == 1, 20, message="delivery by a new worker")
    assert "after the reload" in lines(out)[0]
