"""The agents' live stream (/api/v1/stream) and WebSocket limits."""

import json
import socket
import time

import pytest

from conftest import run_cli
from test_plugins import hook
from wsclient import WsClient, WsClosed


def setup_tenants(database):
    env = {"SWITCHBOARD_DATABASE_URL": database}
    assert run_cli(["migrate"], env_extra=env).returncode == 0
    for slug in ("acme", "beta"):
        assert run_cli(["tenant", "add", slug, "--name", slug], env_extra=env).returncode == 0
    for email, tenant in (("a@acme.example", "acme"), ("b@beta.example", "beta")):
        cp = run_cli(["agent", "add", email, "--name", email, "--tenant", tenant, "--role", "agent"],
                     env_extra=env, input="secret-pass\n")
        assert cp.returncode == 0, cp.stderr


def login(srv, email):
    status, _, body = srv.request("POST", "/api/v1/sessions",
                                  body=json.dumps({"email": email, "password": "secret-pass"}).encode(),
                                  headers={"Content-Type": "application/json"})
    assert status == 201, body
    return json.loads(body)["token"]


def create_ticket(srv, token, tenant, subject):
    status, _, body = srv.request(
        "POST", f"/api/v1/tenants/{tenant}/tickets",
        body=json.dumps({"subject": subject, "customer": {"email": "c@x.example"},
                         "message": {"text": subject}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 201, body
    return json.loads(body)


@pytest.fixture
def two_tenants(database, start_server):
    setup_tenants(database)
    srv = start_server(database, workers=2)
    return srv, login(srv, "a@acme.example"), login(srv, "b@beta.example")


def test_stream_carries_only_own_tenant_events(two_tenants):
    srv, ta, tb = two_tenants
    wa = WsClient(srv.port, "/api/v1/stream", {"Authorization": f"Bearer {ta}"})
    wb = WsClient(srv.port, f"/api/v1/stream?access_token={tb}")
    assert wa.status == 101 and wb.status == 101, (wa.head, wb.head)
    time.sleep(0.3)   # both subscriptions are in place
    for i in range(3):
        create_ticket(srv, ta, "acme", f"acme ticket {i}")
    hook(srv, "beta", "from the beta webhook", **{"from": "v", "id": "m1"})
    got_a = [wa.recv_json() for _ in range(3)]
    assert {e["type"] for e in got_a} == {"ticket.created"}
    assert {e["tenant"] for e in got_a} == {"acme"}
    assert sorted(e["ticket"] for e in got_a) == [1, 2, 3]
    got_b = wb.recv_json()
    assert got_b["tenant"] == "beta" and got_b["type"] == "ticket.created", got_b
    # nothing of acme ever reaches beta's agent
    with pytest.raises(socket.timeout):
        wb.recv(timeout=1.0)
    # a reply is an event too
    status, _, body = srv.request(
        "POST", "/api/v1/tenants/acme/tickets/1/messages",
        body=json.dumps({"kind": "note", "text": "internal"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ta}"})
    assert status == 201, body
    ev = wa.recv_json()
    assert ev["type"] == "message.created" and ev["ticket"] == 1
    wa.close()
    wb.close()


def test_stream_needs_a_token(two_tenants):
    srv, ta, _ = two_tenants
    w = WsClient(srv.port, "/api/v1/stream")
    assert w.status == 401
    w = WsClient(srv.port, "/api/v1/stream?access_token=sbt_forged")
    assert w.status == 401
    # without an upgrade the endpoint says so
    status, _, body = srv.request("GET", "/api/v1/stream", headers={"Authorization": f"Bearer {ta}"})
    assert status == 426, body


@pytest.mark.parametrize("frame,code", [
    ((0x1, b"\xff\xfe not utf-8"), 1007),
    ((0x2, b"binary"), 1003),
    ((0x1, b"x" * 70000), 1009),
])
def test_bad_frames_close_with_the_right_code(two_tenants, frame, code):
    srv, ta, _ = two_tenants
    w = WsClient(srv.port, "/api/v1/stream", {"Authorization": f"Bearer {ta}"})
    assert w.status == 101
    w.send_frame(*frame)
    with pytest.raises(WsClosed) as e:
        w.recv(timeout=10)
    assert e.value.code == code
    w.close()
    # the server is unaffected
    assert srv.request("GET", "/healthz")[0] == 200


def test_shutdown_closes_streams_with_going_away(database, start_server):
    setup_tenants(database)
    srv = start_server(database)
    token = login(srv, "a@acme.example")
    w = WsClient(srv.port, "/api/v1/stream", {"Authorization": f"Bearer {token}"})
    assert w.status == 101
    time.sleep(0.2)
    srv.send_signal(__import__("signal").SIGTERM)
    with pytest.raises(WsClosed) as e:
        w.recv(timeout=15)
    assert e.value.code in (1001, 1006)
    assert srv.proc.wait(timeout=15) == 0
