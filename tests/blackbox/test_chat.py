"""The live chat plugin: the visitor protocol over /chat/{tenant}/ws."""

import json
import time

import pytest

from conftest import psql, run_cli, wait_until
from test_outbox import login
from wsclient import WsClient, WsClosed


def make_tenant(database):
    env = {"SWITCHBOARD_DATABASE_URL": database}
    assert run_cli(["migrate"], env_extra=env).returncode == 0
    assert run_cli(["tenant", "add", "acme", "--name", "Acme"], env_extra=env).returncode == 0


def visitor(srv, token=None, since=None, tenant="acme"):
    q = []
    if token:
        q.append(f"token={token}")
    if since is not None:
        q.append(f"since={since}")
    w = WsClient(srv.port, f"/chat/{tenant}/ws" + ("?" + "&".join(q) if q else ""))
    assert w.status == 101, w.head
    welcome = w.recv_json()
    assert welcome["type"] == "welcome" and welcome["token"] and welcome["visitor"], welcome
    return w, welcome


def say(w, text, cid):
    w.send_text(json.dumps({"type": "message", "client_id": cid, "text": text}))
    while True:
        m = w.recv_json()
        if m["type"] in ("ack", "error") and m.get("client_id") == cid:
            return m


def agent_reply(srv, token, number, text, kind="reply"):
    status, _, body = srv.request(
        "POST", f"/api/v1/tenants/acme/tickets/{number}/messages",
        body=json.dumps({"kind": kind, "text": text}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 201, body


def next_agent_message(w, timeout=10):
    while True:
        m = w.recv_json(timeout=timeout)
        if m["type"] == "message" and m["from"] == "agent":
            return m


@pytest.fixture
def chat(database, start_server):
    make_tenant(database)
    srv = start_server(database, workers=2)
    return srv, login(srv, database), database


def test_visitor_message_ack_after_commit_and_agent_reply_pushed(chat):
    srv, token, db = chat
    w, welcome = visitor(srv)
    ack = say(w, "Hello, is anyone there?", "c1")
    assert ack["type"] == "ack" and ack["ticket"] == 1, ack
    out = psql(db, "SELECT channel || '|' || thread_key FROM tickets WHERE number = 1")
    assert out.strip() == f"chat|{welcome['visitor']}"
    # the same client_id again (a retry) is acknowledged, not stored twice
    assert say(w, "Hello, is anyone there?", "c1")["type"] == "ack"
    assert psql(db, "SELECT count(*) FROM messages").strip() == "1"

    agent_reply(srv, token, 1, "internal: check the order", kind="note")
    agent_reply(srv, token, 1, "Hi! How can I help?")
    m = next_agent_message(w)
    assert m["text"] == "Hi! How can I help?" and m["id"] > 0
    w.close()


def test_returning_visitor_gets_missed_replies(chat):
    srv, token, _ = chat
    w, welcome = visitor(srv)
    assert say(w, "first", "a")["type"] == "ack"
    agent_reply(srv, token, 1, "seen live")
    seen = next_agent_message(w)
    w.close()
    time.sleep(0.2)
    agent_reply(srv, token, 1, "missed one")
    agent_reply(srv, token, 1, "missed two")
    agent_reply(srv, token, 1, "never shown: a note", kind="note")
    w2, welcome2 = visitor(srv, token=welcome["token"], since=seen["id"])
    assert welcome2["visitor"] == welcome["visitor"]
    got = [next_agent_message(w2)["text"], next_agent_message(w2)["text"]]
    assert got == ["missed one", "missed two"]
    # the thread continues on the same ticket
    assert say(w2, "thanks", "b")["ticket"] == 1
    w2.close()


def test_forged_or_foreign_token_starts_a_new_visitor(chat):
    srv, _, _ = chat
    w, welcome = visitor(srv)
    w.close()
    forged = welcome["visitor"] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    w2, welcome2 = visitor(srv, token=forged)
    assert welcome2["visitor"] != welcome["visitor"]
    w2.close()


def test_bad_messages_are_refused_and_nothing_stored(chat):
    srv, _, db = chat
    w, _ = visitor(srv)
    w.send_text("not json")
    assert w.recv_json()["type"] == "error"
    assert say(w, "", "x")["retry"] is False
    assert say(w, "y" * 20000, "big")["retry"] is False
    w.send_text(json.dumps({"type": "message", "text": "no client id"}))
    assert w.recv_json()["type"] == "error"
    w.send_text(json.dumps({"type": "typing"}))
    assert psql(db, "SELECT count(*) FROM messages").strip() == "0"
    w.send_frame(0x2, b"binary")
    with pytest.raises(WsClosed) as e:
        while True:
            w.recv_json()
    assert e.value.code == 1003


def test_unknown_tenant(chat):
    srv, _, _ = chat
    w, _ = visitor(srv, tenant="nosuch")
    with pytest.raises(WsClosed) as e:
        while True:
            m = w.recv_json()
            assert m["type"] != "ack"
    assert e.value.code == 4404


def test_database_down_gives_retryable_error_then_delivery(pg_cluster_factory, start_server):
    cluster = pg_cluster_factory()
    make_tenant(cluster.url)
    srv = start_server(cluster.url)
    w, _ = visitor(srv)
    cluster.stop()
    wait_until(lambda: srv.request("GET", "/readyz")[0] == 503, 30, message="readyz 503")
    err = say(w, "sent while the database is down", "d1")
    assert err["type"] == "error" and err["retry"] is True, err
    cluster.start()
    wait_until(lambda: srv.request("GET", "/readyz")[0] == 200, 60, message="readyz 200")
    # the widget retries with the same client_id
    ack = say(w, "sent while the database is down", "d1")
    assert ack["type"] == "ack", ack
    assert psql(cluster.url, "SELECT count(*) FROM messages").strip() == "1"


def test_widget_and_demo_page_are_served(chat):
    srv, _, _ = chat
    status, headers, body = srv.request("GET", "/chat/acme/widget.js")
    assert status == 200 and headers["content-type"].startswith("application/javascript")
    assert b"WebSocket" in body
    status, headers, body = srv.request("GET", "/chat/acme/")
    assert status == 200 and b'<script src="widget.js"' in body
    status, _, _ = srv.request("GET", "/chat/acme/ws")
    assert status == 426


def test_typing_both_ways(chat):
    srv, token, _ = chat
    from wsclient import WsClient as _Ws
    stream = _Ws(srv.port, "/api/v1/stream", {"Authorization": f"Bearer {token}"})
    assert stream.status == 101
    w, welcome = visitor(srv)
    assert say(w, "hello", "t1")["type"] == "ack"
    while stream.recv_json()["type"] != "ticket.created":
        pass
    # visitor -> agents' stream
    w.send_text(json.dumps({"type": "typing"}))
    ev = stream.recv_json()
    assert ev["type"] == "typing" and ev["from"] == "customer" and ev["ticket"] == 1, ev
    assert ev["thread_key"] == welcome["visitor"]
    # agent -> visitor
    status, _, body = srv.request("POST", "/api/v1/tenants/acme/tickets/1/typing",
                                  headers={"Authorization": f"Bearer {token}"})
    assert status == 204, body
    while True:
        m = w.recv_json()
        if m["type"] == "typing":
            break
    status, _, _ = srv.request("POST", "/api/v1/tenants/acme/tickets/99/typing",
                               headers={"Authorization": f"Bearer {token}"})
    assert status == 404
    stream.close()
    w.close()
