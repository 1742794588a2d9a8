"""HTTP behaviour of `switchboard serve`: routing, errors, limits, timeouts,
keep-alive, pipelining, request ids and metrics."""

import http.client
import json
import re
import socket
import time

import pytest

from conftest import RawConnection, error_code, raw_request, rand_suffix, wait_until

MAX_BODY = 1024


@pytest.fixture(scope="module")
def srv(module_database, module_start_server):
    """One server for the module's stateless tests (1 worker, 1 KiB body limit)."""
    return module_start_server(module_database, workers=1,
                               env={"SWITCHBOARD_MAX_BODY_SIZE": str(MAX_BODY)})


@pytest.fixture(scope="module")
def timeout_srv(module_database, module_start_server):
    """A server with short header/read/idle timeouts."""
    return module_start_server(module_database, workers=1, env={
        "SWITCHBOARD_HEADER_TIMEOUT": "1",
        "SWITCHBOARD_READ_TIMEOUT": "2",
        "SWITCHBOARD_IDLE_TIMEOUT": "1.5",
    })


def assert_json_error(status, headers, body, want_status, want_code):
    assert status == want_status, (status, headers, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert error_code(body) == want_code, body


# ---------------------------------------------------------------------------
# health, readiness, routing
# ---------------------------------------------------------------------------

def test_healthz_get(srv):
    status, headers, body = srv.request("GET", "/healthz")
    assert status == 200, body
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body) == {"status": "ok"}


def test_healthz_head_has_headers_but_no_body(srv):
    status, headers, body = srv.request("HEAD", "/healthz")
    assert status == 200
    assert body == b""
    assert headers.get("content-type", "").startswith("application/json"), headers
    # On the wire: a HEAD response followed by a GET response on the same
    # connection must parse cleanly (i.e. HEAD really sent no body bytes).
    with RawConnection(srv.port) as c:
        c.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r1 = c.read_response(head=True)
        r2 = c.read_response()
    assert r1.status == 200 and r1.body == b""
    assert r2.status == 200 and json.loads(r2.body) == {"status": "ok"}


def test_healthz_post_is_405_with_allow(srv):
    status, headers, body = srv.request("POST", "/healthz", body=b"{}",
                                        headers={"Content-Type": "application/json"})
    assert_json_error(status, headers, body, 405, "method_not_allowed")
    allow = [m.strip().upper() for m in headers.get("allow", "").split(",")]
    assert "GET" in allow and "HEAD" in allow, headers


def test_unknown_path_is_404_json(srv):
    status, headers, body = srv.request("GET", "/no/such/path-" + rand_suffix())
    assert_json_error(status, headers, body, 404, "not_found")


def test_head_unknown_path_is_404_without_body(srv):
    status, headers, body = srv.request("HEAD", "/no/such/path")
    assert status == 404
    assert body == b""


def test_readyz_ready(srv):
    status, headers, body = srv.request("GET", "/readyz")
    assert status == 200, body
    assert json.loads(body)["status"] == "ready"


def test_path_parameter(srv):
    for ident in ("abc", "42", "a-b_c.d"):
        status, headers, body = srv.request("GET", f"/debug/items/{ident}")
        assert status == 200, (ident, body)
        assert headers.get("content-type", "").startswith("application/json"), headers
        assert json.loads(body) == {"id": ident}


def test_path_parameter_does_not_span_segments(srv):
    status, headers, body = srv.request("GET", "/debug/items/a/b")
    assert_json_error(status, headers, body, 404, "not_found")


def test_query_string_is_not_part_of_path(srv):
    status, _, body = srv.request("GET", "/healthz?x=1")
    assert status == 200, body
    status, _, body = srv.request("GET", "/debug/items/xyz?foo=bar")
    assert status == 200, body
    assert json.loads(body) == {"id": "xyz"}


def test_debug_sleep(srv):
    status, _, body = srv.request("GET", "/debug/sleep?seconds=0.2")
    assert status == 200, body
    assert json.loads(body)["slept"] == pytest.approx(0.2)


# ---------------------------------------------------------------------------
# JSON routes
# ---------------------------------------------------------------------------

def test_echo_json(srv):
    doc = {"a": [1, 2, {"b": None}], "s": "héllo", "t": True}
    status, headers, body = srv.request("POST", "/debug/echo", body=json.dumps(doc).encode(),
                                        headers={"Content-Type": "application/json"})
    assert status == 200, body
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body) == {"echo": doc}


def test_echo_accepts_charset_parameter(srv):
    status, _, body = srv.request("POST", "/debug/echo", body=b'{"x":1}',
                                  headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, body
    assert json.loads(body) == {"echo": {"x": 1}}


def test_echo_non_json_content_type_is_415(srv):
    status, headers, body = srv.request("POST", "/debug/echo", body=b'{"x":1}',
                                        headers={"Content-Type": "text/plain"})
    assert_json_error(status, headers, body, 415, "unsupported_media_type")


def test_echo_missing_content_type_is_415(srv):
    status, headers, body = srv.request("POST", "/debug/echo", body=b'{"x":1}')
    assert_json_error(status, headers, body, 415, "unsupported_media_type")


@pytest.mark.parametrize("payload", [b"{not json", b'{"a":1', b"", b"\xff\xfe"])
def test_echo_invalid_json_is_400(srv, payload):
    status, headers, body = srv.request("POST", "/debug/echo", body=payload,
                                        headers={"Content-Type": "application/json"})
    assert_json_error(status, headers, body, 400, "bad_request")


def test_echo_get_is_405(srv):
    status, headers, body = srv.request("GET", "/debug/echo")
    assert_json_error(status, headers, body, 405, "method_not_allowed")
    assert "POST" in headers.get("allow", "").upper(), headers


# ---------------------------------------------------------------------------
# request ids
# ---------------------------------------------------------------------------

def test_request_id_is_echoed_and_logged(srv):
    rid = "abc-123-" + rand_suffix()
    status, headers, _ = srv.request("GET", "/healthz", headers={"X-Request-Id": rid})
    assert status == 200
    assert headers.get("x-request-id") == rid, headers
    wait_until(lambda: rid in srv.log_text(), 10, message=f"request id {rid} in the server log")


def test_request_id_is_generated(srv):
    status, headers, _ = srv.request("GET", "/healthz")
    assert status == 200
    rid = headers.get("x-request-id", "")
    assert re.fullmatch(r"[\x21-\x7e]{4,200}", rid), headers
    status, headers2, _ = srv.request("GET", "/healthz")
    assert headers2.get("x-request-id") and headers2["x-request-id"] != rid, (rid, headers2)
    wait_until(lambda: rid in srv.log_text(), 10, message=f"generated id {rid} in the log")


def test_insane_request_id_is_replaced(srv):
    bad = 'x"<script>' * 60  # 600 characters with quotes and angle brackets
    status, headers, _ = srv.request("GET", "/healthz", headers={"X-Request-Id": bad})
    assert status == 200
    rid = headers.get("x-request-id", "")
    assert rid and rid != bad and "<" not in rid and '"' not in rid, headers


def test_error_responses_carry_request_id(srv):
    status, headers, _ = srv.request("GET", "/nope", headers={"X-Request-Id": "err-42"})
    assert status == 404
    assert headers.get("x-request-id") == "err-42", headers


# ---------------------------------------------------------------------------
# connections: keep-alive, pipelining, close
# ---------------------------------------------------------------------------

def test_keep_alive_reuses_connection(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        local = None
        for i, path in enumerate(["/healthz", "/debug/items/1", "/readyz", "/nope", "/healthz"]):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == (404 if path == "/nope" else 200), (path, body)
            assert resp.getheader("connection", "").lower() != "close", resp.getheaders()
            name = conn.sock.getsockname()
            if local is None:
                local = name
            assert name == local, "client had to reconnect: the server closed the connection"
        # a POST with a body on the same connection, then another GET
        conn.request("POST", "/debug/echo", body=b"[1,2]", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == {"echo": [1, 2]}
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        assert conn.sock.getsockname() == local
    finally:
        conn.close()


def test_pipelining_in_order(srv):
    reqs = (b"GET /debug/items/1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /debug/items/2 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 7\r\n\r\n{\"n\":5}"
            b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /debug/items/3 HTTP/1.1\r\nHost: t\r\n\r\n")
    with RawConnection(srv.port) as c:
        c.send(reqs)
        rs = [c.read_response() for _ in range(6)]
    assert [r.status for r in rs] == [200, 200, 200, 200, 404, 200], rs
    assert rs[0].json() == {"id": "1"}
    assert rs[1].json() == {"id": "2"}
    assert rs[2].json() == {"status": "ok"}
    assert rs[3].json() == {"echo": {"n": 5}}
    assert error_code(rs[4].body) == "not_found"
    assert rs[5].json() == {"id": "3"}


def test_pipelining_slow_request_first_keeps_order(srv):
    with RawConnection(srv.port) as c:
        c.send(b"GET /debug/sleep?seconds=0.5 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /debug/items/2 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert r1.status == 200 and r1.json()["slept"] == pytest.approx(0.5), r1
    assert r2.status == 200 and r2.json() == {"id": "2"}, r2
    assert r3.status == 200 and r3.json() == {"status": "ok"}, r3


def test_pipelining_split_across_writes(srv):
    data = (b"GET /debug/items/a HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /debug/items/b HTTP/1.1\r\nHost: t\r\n\r\n")
    with RawConnection(srv.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.005)
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.json() == {"id": "a"} and r2.json() == {"id": "b"}


def test_pipelined_request_split_after_first(srv):
    # one write carries request 1 and the start of request 2; the rest of
    # request 2 follows a little later (as TCP may deliver it)
    r1 = b"GET /debug/items/first HTTP/1.1\r\nHost: t\r\n\r\n"
    r2 = b"GET /debug/items/second HTTP/1.1\r\nHost: t\r\n\r\n"
    with RawConnection(srv.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(r1 + r2[:10])
        time.sleep(0.2)
        c.send(r2[10:])
        a = c.read_response(timeout=8)
        b = c.read_response(timeout=8)
    assert a.status == 200 and a.json() == {"id": "first"}, a
    assert b.status == 200 and b.json() == {"id": "second"}, b


def test_connection_close_is_honoured(srv):
    with RawConnection(srv.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert c.read_until_closed(timeout=10) == b""


def test_http10_closes_after_response(srv):
    with RawConnection(srv.port) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body) == {"status": "ok"}
        assert c.read_until_closed(timeout=10) == b""


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def test_body_over_limit_by_content_length_is_413(srv):
    body = b'["' + b"x" * 1996 + b'"]'
    head = (b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    r = raw_request(srv.port, head + body)
    assert r.status == 413, r
    assert error_code(r.body) == "payload_too_large"


def test_body_over_limit_declared_only_is_413(srv):
    # the server must not wait for a body it will refuse anyway
    head = (b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n")
    r = raw_request(srv.port, head, timeout=15)
    assert r.status == 413, r
    assert error_code(r.body) == "payload_too_large"


def chunked(parts):
    out = b""
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


def test_chunked_body_within_limit(srv):
    doc = {"chunked": True, "list": list(range(20))}
    raw = json.dumps(doc).encode()
    parts = [raw[:10], raw[10:25], raw[25:]]
    req = (b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked(parts))
    with RawConnection(srv.port) as c:
        c.send(req)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"echo": doc}
        # the connection stays usable after a chunked request
        c.send(b"GET /debug/items/after HTTP/1.1\r\nHost: t\r\n\r\n")
        r2 = c.read_response()
        assert r2.status == 200 and r2.json() == {"id": "after"}


def test_chunked_body_over_limit_is_413(srv):
    parts = [b'["' + b"y" * 798, b"z" * 800, b"w" * 800 + b'"]']
    req = (b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked(parts))
    r = raw_request(srv.port, req)
    assert r.status == 413, r
    assert error_code(r.body) == "payload_too_large"


def test_body_at_limit_is_accepted(srv):
    body = b'["' + b"q" * (MAX_BODY - 4) + b'"]'
    assert len(body) == MAX_BODY
    status, _, resp = srv.request("POST", "/debug/echo", body=body,
                                  headers={"Content-Type": "application/json"})
    assert status == 200, resp
    assert json.loads(resp) == {"echo": ["q" * (MAX_BODY - 4)]}


def test_expect_100_continue(srv):
    with RawConnection(srv.port) as c:
        c.send(b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: 8\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response(timeout=15)
        assert interim.status == 100, interim
        c.send(b'{"c":10}')
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"echo": {"c": 10}}


def test_expect_100_continue_over_limit_gets_413_not_100(srv):
    with RawConnection(srv.port) as c:
        c.send(b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response(timeout=15)
        assert r.status == 413, r


def test_huge_header_is_431(srv):
    req = (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    with RawConnection(srv.port) as c:
        c.send(req)
        r = c.read_response()
    assert r.status == 431, r
    assert error_code(r.body) == "header_too_large"


def test_many_headers_over_16k_is_431(srv):
    hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(200))
    with RawConnection(srv.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + hdrs + b"\r\n")
        r = c.read_response()
    assert r.status == 431, r
    assert error_code(r.body) == "header_too_large"


def test_moderate_headers_are_fine(srv):
    hdrs = {f"X-H{i}": "c" * 100 for i in range(50)}  # ~5.5 KiB
    status, _, body = srv.request("GET", "/healthz", headers=hdrs)
    assert status == 200, body


# ---------------------------------------------------------------------------
# malformed requests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/9.x\r\nHost: t\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost t\r\n\r\n",
    b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
    b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
], ids=["garbage", "ctl-in-method", "bad-version", "header-no-colon",
        "bad-content-length", "bad-chunk-size", "cl-and-te", "two-content-lengths"])
def test_malformed_request_is_400_then_closed(srv, raw):
    with RawConnection(srv.port) as c:
        c.send(raw)
        r = c.read_response(timeout=15)
        assert r.status == 400, r
        assert error_code(r.body) == "bad_request"
        # anything after the 400 is the close, never a second response
        assert c.read_until_closed(timeout=15) == b""
    # the server is still fine
    assert srv.request("GET", "/healthz")[0] == 200


def test_abrupt_disconnects_do_not_hurt(srv):
    for data in (b"", b"GET /heal", b"POST /debug/echo HTTP/1.1\r\nHost: t\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\""):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        if data:
            s.sendall(data)
        s.close()
    # a client that goes away while a slow request is running
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /debug/sleep?seconds=0.3 HTTP/1.1\r\nHost: t\r\n\r\n")
    s.close()
    time.sleep(0.6)
    assert srv.request("GET", "/healthz")[0] == 200
    assert srv.alive()


# ---------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------

def test_incomplete_header_gets_408_then_close(timeout_srv):
    with RawConnection(timeout_srv.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response(timeout=20)
        assert r.status == 408, r
        assert error_code(r.body) == "request_timeout"
        assert c.read_until_closed(timeout=15) == b""


def test_slowly_dribbled_header_still_times_out(timeout_srv):
    # Bytes keep arriving but the header never completes: the header timeout
    # covers the whole header, not the gap between bytes. The server must end
    # the connection (a 408 first is expected; it may be lost to a TCP reset
    # because we keep sending, so only its shape is checked when it arrives).
    with RawConnection(timeout_srv.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(b"GET /healthz HTTP/1.1\r\n")
        deadline = time.monotonic() + 20
        got = b""
        ended = False
        c.sock.settimeout(0.3)
        i = 0
        while time.monotonic() < deadline and not ended:
            try:
                c.sock.sendall(b"X-%d: y\r\n" % i)
                i += 1
            except OSError:
                ended = True
            try:
                chunk = c.sock.recv(65536)
                if not chunk:
                    ended = True
                got += chunk
            except socket.timeout:
                pass
            except OSError:
                ended = True
        assert ended, f"server kept a never-ending header open for 20 s ({i} lines sent)"
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:200]


def test_incomplete_body_gets_408(timeout_srv):
    with RawConnection(timeout_srv.port) as c:
        c.send(b"POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n{\"a\":")
        r = c.read_response(timeout=20)
        assert r.status == 408, r
        assert error_code(r.body) == "request_timeout"
        assert c.read_until_closed(timeout=15) == b""


def test_idle_keepalive_connection_is_closed_silently(timeout_srv):
    with RawConnection(timeout_srv.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        # now idle: the server closes without a response
        assert c.read_until_closed(timeout=20) == b""


def test_fresh_silent_connection_is_closed(timeout_srv):
    with RawConnection(timeout_srv.port) as c:
        data = c.read_until_closed(timeout=20)
    # a silent new connection is just closed (a 408 would also be acceptable)
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_requests_within_timeouts_are_served(timeout_srv):
    conn = http.client.HTTPConnection("127.0.0.1", timeout_srv.port, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            time.sleep(0.3)  # well inside the 1.5 s idle timeout
        # a slow DB request longer than the header timeout is not cut short
        conn.request("GET", "/debug/sleep?seconds=1.5")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    samples = []
    types = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"unparseable metrics line {line!r}"
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples, types


def find(samples, name, **labels):
    return [v for n, l, v in samples
            if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]


def test_metrics(srv):
    for _ in range(3):
        assert srv.request("GET", "/healthz")[0] == 200
    assert srv.request("GET", "/no-such-thing")[0] == 404
    status, headers, body = srv.request("GET", "/metrics")
    assert status == 200
    ctype = headers.get("content-type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    samples, types = parse_metrics(body.decode())

    hz = find(samples, "switchboard_http_requests_total", route="/healthz", method="GET", status="200")
    assert hz and hz[0] >= 3, [s for s in samples if s[0] == "switchboard_http_requests_total"]
    assert types.get("switchboard_http_requests_total") == "counter", types

    assert types.get("switchboard_http_request_duration_seconds") == "histogram", types
    assert find(samples, "switchboard_http_request_duration_seconds_bucket", le="+Inf"), \
        "no +Inf bucket"
    assert find(samples, "switchboard_http_request_duration_seconds_sum")
    counts = find(samples, "switchboard_http_request_duration_seconds_count")
    assert counts and sum(counts) >= 3

    assert find(samples, "switchboard_db_connections", state="busy"), "db busy gauge"
    assert find(samples, "switchboard_db_connections", state="idle"), "db idle gauge"
    assert find(samples, "switchboard_db_waiting"), "db waiting gauge"
    up = find(samples, "switchboard_uptime_seconds")
    assert up and up[0] >= 0


def test_metrics_count_increases(srv):
    def items_samples():
        _, _, body = srv.request("GET", "/metrics")
        samples, _ = parse_metrics(body.decode())
        return [(l, v) for n, l, v in samples
                if n == "switchboard_http_requests_total"
                and l.get("route", "").startswith("/debug/items")
                and l.get("method") == "GET" and l.get("status") == "200"]
    before = sum(v for _, v in items_samples())
    for i in range(4):
        assert srv.request("GET", f"/debug/items/m{i}")[0] == 200
    after_samples = items_samples()
    after = sum(v for _, v in after_samples)
    assert after - before == 4, (before, after_samples)
    # the route label is the route pattern, not the raw path (bounded cardinality)
    routes = {l["route"] for l, _ in after_samples}
    assert not any(r.endswith(("/m0", "/m1", "/m2", "/m3")) for r in routes), routes


# ---------------------------------------------------------------------------
# debug routes switched off
# ---------------------------------------------------------------------------

def test_debug_routes_off_by_setting(module_database, start_server):
    s = start_server(module_database, migrate=False, env={"SWITCHBOARD_DEBUG_ROUTES": "0"})
    for path in ("/debug/items/1", "/debug/sleep?seconds=0"):
        status, headers, body = s.request("GET", path)
        assert_json_error(status, headers, body, 404, "not_found")
    status, _, _ = s.request("POST", "/debug/echo", body=b"{}",
                             headers={"Content-Type": "application/json"})
    assert status == 404
    assert s.request("GET", "/healthz")[0] == 200
