"""Load generator of tests/bench/chat: thousands of chat visitors and one
agents' stream in one asyncio process (standard library only).

The WebSocket client side (RFC 6455) is written here on asyncio's
transports and protocols, one small object per connection and no task per
connection, so that 10,000 idle visitors cost little: the handshake, masked
frames out, unmasked (possibly fragmented) frames in, pong for ping, close.

Phases, in order (progress on stderr):
  1. the agent's stream (GET /api/v1/stream with the bearer token);
  2. the worker's VmRSS, then N visitors opened in batches (each batch
     waits for every welcome or failure), then an idle pause and VmRSS
     again;
  3. S of the open visitors send messages for D seconds, each one every
     I seconds (staggered), waiting for the ack of one before the next;
  4. the stream events of each sender's ticket are matched to its acked
     messages in order (one visitor = one ticket, one committed message =
     one inbound event), giving the send -> stream latency.
Results go to --out as "key value" lines for the shell script.
"""

import argparse
import asyncio
import base64
import collections
import json
import math
import os
import resource
import struct
import sys
import time

# ======================== the WebSocket client ========================


class WsError(Exception):
    """A connection that did not become a usable WebSocket: .reason says why."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def mask_payload(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame(opcode, payload):
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return hdr + key + mask_payload(payload, key)


def quiet_future():
    """A future whose exception may go unread (a connection given up on)."""
    f = asyncio.get_running_loop().create_future()
    f.add_done_callback(lambda f: f.cancelled() or f.exception())
    return f


class Ws(asyncio.Protocol):
    """One client WebSocket.  on_text(ws, str) for each text message,
    on_closed(ws) once when the connection is gone (ws.close_code is the
    server's close code, 1006 when there was none)."""

    def __init__(self, host, port, path, headers=None, on_text=None, on_closed=None):
        self.request = "".join(
            [f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
             "Sec-WebSocket-Version: 13\r\n"]
            + [f"{k}: {v}\r\n" for k, v in (headers or {}).items()] + ["\r\n"]).encode()
        self.on_text = on_text
        self.on_closed = on_closed
        self.tr = None
        self.buf = bytearray()
        self.upgraded = False
        self.status = None
        self.frags = None
        self.closed = False
        self.close_sent = False
        self.close_code = None
        self.protocol_error = None
        self.upgrade = quiet_future()

    # -- asyncio.Protocol --

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.request)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._fail("oversized response head")
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            try:
                self.status = int(head.split(" ", 2)[1])
            except (IndexError, ValueError):
                self._fail("malformed response")
                return
            if self.status != 101:
                self._fail(f"HTTP {self.status} instead of 101")
                return
            self.upgraded = True
            if not self.upgrade.done():
                self.upgrade.set_result(True)
        self._frames()

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        if self.close_code is None:
            self.close_code = 1006
        if not self.upgrade.done():
            self.upgrade.set_exception(WsError(
                "connection closed before the 101" if self.status is None
                else f"HTTP {self.status} instead of 101"))
        if self.on_closed:
            self.on_closed(self)

    # -- frames --

    def _fail(self, why):
        if not self.upgrade.done():
            self.upgrade.set_exception(WsError(why))
        else:
            self.protocol_error = why
        self.tr.close()

    def _frames(self):
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7F, 2
            if b1 & 0x80:
                self._fail("masked frame from the server")
                return
            if n == 126:
                if len(buf) < 4:
                    return
                n, off = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, off = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < off + n:
                return
            payload = bytes(buf[off:off + n])
            del buf[:off + n]
            fin, op = b0 & 0x80, b0 & 0x0F
            if op == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if not self.close_sent:
                    self.close_sent = True
                    self.tr.write(frame(0x8, payload[:2]))
                self.tr.close()
                return
            if op == 0x9:
                self.tr.write(frame(0xA, payload))
                continue
            if op == 0xA:
                continue
            if op in (0x1, 0x2):
                self.frags = [op, payload]
            elif op == 0x0 and self.frags is not None:
                self.frags.append(payload)
            else:
                self._fail(f"unexpected opcode {op}")
                return
            if fin:
                kind, data = self.frags[0], b"".join(self.frags[1:])
                self.frags = None
                if kind == 0x1 and self.on_text:
                    self.on_text(self, data.decode("utf-8", "replace"))

    # -- sending --

    def send_text(self, text):
        if not self.closed and not self.close_sent:
            self.tr.write(frame(0x1, text.encode()))

    def send_close(self, code=1000):
        if not self.closed and not self.close_sent:
            self.close_sent = True
            self.tr.write(frame(0x8, struct.pack("!H", code)))


async def ws_connect(host, port, path, headers=None, on_text=None, on_closed=None):
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(
        lambda: Ws(host, port, path, headers, on_text, on_closed), host, port)
    await ws.upgrade
    return ws


# ======================== the benchmark ========================


def log(msg):
    print(f"chat.d/load: {msg}", file=sys.stderr, flush=True)


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = math.ceil(p / 100.0 * len(sorted_values)) - 1     # nearest rank
    return sorted_values[min(len(sorted_values) - 1, max(0, i))]


class Bench:
    def __init__(self, a):
        self.a = a
        self.loop = asyncio.get_running_loop()
        self.visitors = []          # open Ws objects, in opening order
        self.open_fail = collections.Counter()
        self.unexpected_close = collections.Counter()   # close codes before the end
        self.ending = False
        self.stream = None
        self.stream_events = collections.defaultdict(list)  # ticket -> [arrival time]
        self.stream_types = collections.Counter()
        self.stream_bad = 0
        self.errors = collections.Counter()

    # -- the agent's stream --

    def on_stream_text(self, ws, text):
        now = self.loop.time()
        try:
            ev = json.loads(text)
        except ValueError:
            self.stream_bad += 1
            return
        self.stream_types[ev.get("type")] += 1
        if ev.get("direction") == "inbound" and isinstance(ev.get("ticket"), int):
            self.stream_events[ev["ticket"]].append(now)

    def on_stream_closed(self, ws):
        if not self.ending:
            self.errors[f"agent stream closed (code {ws.close_code})"] += 1

    # -- visitors --

    def on_visitor_text(self, ws, text):
        try:
            m = json.loads(text)
        except ValueError:
            self.errors["visitor frame that is not JSON"] += 1
            return
        t = m.get("type")
        if t == "welcome":
            if not ws.welcome.done():
                ws.welcome.set_result(m)
        elif t in ("ack", "error"):
            p = ws.pending
            if p is not None and m.get("client_id") == p[0] and not p[1].done():
                p[1].set_result(m)
            else:
                self.errors[f"{t} for an unknown client_id"] += 1
        elif t not in ("message", "typing"):
            self.errors[f"visitor frame of type {t!r}"] += 1

    def on_visitor_closed(self, ws):
        if not ws.welcome.done():
            ws.welcome.set_exception(WsError(f"closed before the welcome (code {ws.close_code})"))
        if ws.counted and not self.ending:
            self.unexpected_close[ws.close_code] += 1
        p = ws.pending
        if p is not None and not p[1].done():
            p[1].set_exception(WsError(f"closed with {ws.close_code} while waiting for the ack"))

    async def open_visitor(self, i):
        ws = None

        def make():
            nonlocal ws
            ws = Ws(self.a.host, self.a.port, self.a.path, None, self.on_visitor_text,
                    self.on_visitor_closed)
            ws.welcome = quiet_future()
            ws.pending = None
            ws.counted = False
            ws.idx = i
            return ws

        try:
            await asyncio.wait_for(self._open(make), self.a.open_timeout)
        except asyncio.TimeoutError:
            self.open_fail["timed out (connect, 101 or welcome)"] += 1
            if ws is not None and ws.tr is not None:
                ws.tr.abort()
            return
        except WsError as e:
            self.open_fail[e.reason] += 1
            return
        except OSError as e:
            self.open_fail[f"connect: {e.strerror or e}"] += 1
            return
        ws.counted = True
        ws.ticket = None
        ws.acked = []      # (send time, ack time) of each committed message
        ws.desync = False
        self.visitors.append(ws)

    async def _open(self, make):
        _, ws = await self.loop.create_connection(make, self.a.host, self.a.port)
        await ws.upgrade
        await ws.welcome

    # -- senders --

    async def sender(self, ws, first, end):
        a = self.a
        k = 0
        t = first
        while t < end:
            now = self.loop.time()
            if t > now:
                await asyncio.sleep(t - now)
            if ws.closed:
                self.errors["sender's connection closed before its turn"] += 1
                return
            cid = f"v{ws.idx}-{k}"
            k += 1
            fut = self.loop.create_future()
            ws.pending = (cid, fut)
            sent = self.loop.time()
            ws.send_text(json.dumps({"type": "message", "client_id": cid,
                                     "text": f"Bench message {k} from visitor {ws.idx}"}))
            self.sent += 1
            try:
                m = await asyncio.wait_for(fut, a.ack_timeout)
            except asyncio.TimeoutError:
                self.errors[f"no ack within {a.ack_timeout:g} s (sender stopped)"] += 1
                ws.desync = True
                return
            except WsError as e:
                self.errors[e.reason] += 1
                ws.desync = True
                return
            finally:
                ws.pending = None
            acked = self.loop.time()
            if m.get("type") == "ack":
                ticket = m.get("ticket")
                if ws.ticket is None:
                    ws.ticket = ticket
                elif ticket != ws.ticket:
                    self.errors["ack with another ticket than the visitor's first"] += 1
                    ws.desync = True
                ws.acked.append((sent, acked))
                self.ack_times.append(acked)
            else:
                self.errors[f"error frame: {m.get('message')} (retry {m.get('retry')})"] += 1
            t += a.interval
            now = self.loop.time()
            while t < now and t < end:     # fell behind: skip the slots, count them
                t += a.interval
                self.missed += 1

    # -- the run --

    async def run(self):
        a = self.a
        res = {}
        # 1. the agent's stream
        try:
            self.stream = await asyncio.wait_for(
                ws_connect(a.host, a.port, "/api/v1/stream", {"Authorization": f"Bearer {a.token}"},
                           self.on_stream_text, self.on_stream_closed), 10)
        except (asyncio.TimeoutError, WsError, OSError) as e:
            log(f"the agent's stream did not open: {getattr(e, 'reason', e)}")
            return None
        await asyncio.sleep(0.5)
        # 2. visitors, and the worker's RSS around them
        res["rss_before_kib"] = vm_rss_kib(a.worker)
        t0 = self.loop.time()
        for start in range(0, a.visitors, a.batch):
            n = min(a.batch, a.visitors - start)
            await asyncio.gather(*(self.open_visitor(i) for i in range(start, start + n)))
            log(f"{len(self.visitors)} of {start + n} visitors welcomed"
                + (f"; failures: {dict(self.open_fail)}" if self.open_fail else ""))
            if a.batch_pause > 0:
                await asyncio.sleep(a.batch_pause)
        res["open_seconds"] = f"{self.loop.time() - t0:.1f}"
        res["welcomed"] = len(self.visitors)
        await asyncio.sleep(a.idle)
        res["held_after_idle"] = sum(1 for v in self.visitors if not v.closed)
        res["rss_after_kib"] = vm_rss_kib(a.worker)
        # 3. messages
        open_now = [v for v in self.visitors if not v.closed]
        nsend = min(a.senders, len(open_now))
        step = len(open_now) / nsend if nsend else 1
        senders = [open_now[int(j * step)] for j in range(nsend)]
        self.sent = 0
        self.missed = 0
        self.ack_times = []
        log(f"{nsend} senders, one message each every {a.interval:g} s, for {a.duration:g} s")
        start = self.loop.time() + 0.2
        end = start + a.duration
        if nsend:
            await asyncio.gather(*(self.sender(v, start + j * a.interval / nsend, end)
                                   for j, v in enumerate(senders)))
        done = self.loop.time()
        # 4. stream events: wait for the last ones, then match
        total_acked = sum(len(v.acked) for v in senders)
        deadline = self.loop.time() + a.settle
        while self.loop.time() < deadline:
            got = sum(min(len(v.acked), len(self.stream_events.get(v.ticket, ())))
                      for v in senders if v.ticket is not None)
            if got >= total_acked:
                break
            await asyncio.sleep(0.1)
        res["rss_loaded_kib"] = vm_rss_kib(a.worker)
        lat, ack_lat = [], []
        missing = extra = 0
        for v in senders:
            ack_lat += [(t2 - t1) * 1000 for t1, t2 in v.acked]
            if v.desync or v.ticket is None:
                continue
            evs = self.stream_events.get(v.ticket, [])
            for k, (t1, _) in enumerate(v.acked):
                if k < len(evs):
                    lat.append((evs[k] - t1) * 1000)
                else:
                    missing += 1
            extra += max(0, len(evs) - len(v.acked))
        lat.sort()
        ack_lat.sort()
        in_window = sum(1 for t in self.ack_times if start <= t < end)
        per_sec = collections.Counter(int(t - start) for t in self.ack_times if start <= t < end)
        secs = [per_sec.get(s, 0) for s in range(int(a.duration))]
        res.update({
            "senders": nsend,
            "offered_per_s": f"{nsend / a.interval:.1f}",
            "sent": self.sent,
            "acked": total_acked,
            "acked_in_window": in_window,
            "committed_per_s": f"{in_window / a.duration:.1f}",
            "committed_per_s_min": min(secs) if secs else 0,
            "committed_per_s_max": max(secs) if secs else 0,
            "send_seconds": f"{done - start:.1f}",
            "missed_slots": self.missed,
            "latency_n": len(lat),
            "latency_p50_ms": f"{percentile(lat, 50):.1f}" if lat else "-",
            "latency_p99_ms": f"{percentile(lat, 99):.1f}" if lat else "-",
            "latency_max_ms": f"{lat[-1]:.1f}" if lat else "-",
            "ack_p50_ms": f"{percentile(ack_lat, 50):.1f}" if ack_lat else "-",
            "ack_p99_ms": f"{percentile(ack_lat, 99):.1f}" if ack_lat else "-",
            "events_missing": missing,
            "events_extra": extra,
            "stream_bad_json": self.stream_bad,
            "held_at_end": sum(1 for v in self.visitors if not v.closed),
        })
        for t, n in sorted(self.stream_types.items(), key=lambda x: str(x[0])):
            res[f"stream_type {t}"] = n
        for why, n in self.open_fail.items():
            res[f"open_fail {why}"] = n
        for code, n in self.unexpected_close.items():
            res[f"closed_by_server {code}"] = n
        for why, n in self.errors.items():
            res[f"error {why}"] = n
        # the end: close frames, then wait a little for the server's
        self.ending = True
        everyone = [v for v in self.visitors if not v.closed] + [self.stream]
        for v in everyone:
            v.send_close(1000)
        deadline = self.loop.time() + 3
        while self.loop.time() < deadline and any(not v.closed for v in everyone):
            await asyncio.sleep(0.1)
        for v in everyone:
            if not v.closed:
                v.tr.abort()
        return res


async def amain(a):
    res = await Bench(a).run()
    if res is None:
        return 1
    with open(a.out, "w") as f:
        for k, v in res.items():
            f.write(f"{k}\t{v}\n")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tenant", default="bench")
    p.add_argument("--token", required=True, help="an agent's bearer token")
    p.add_argument("--worker", type=int, required=True, help="pid of the worker to measure")
    p.add_argument("--visitors", type=int, default=10000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--batch-pause", type=float, default=0.0)
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--senders", type=int, default=500)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--ack-timeout", type=float, default=10.0)
    p.add_argument("--open-timeout", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.path = f"/chat/{a.tenant}/ws"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.visitors + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < want:
        log(f"warning: open files limited to {soft}; fewer than {a.visitors} visitors can open")
    sys.exit(asyncio.run(amain(a)))


if __name__ == "__main__":
    main()
