"""The email channel's SMTP/LMTP listener (plugins/email/smtpd.c) on the wire.

Each test starts tests/unit/email/smtpd/smtpd_driver, a stand-alone server
around the listener that stores every message as <dir>/<n>.eml and answers
recipients by name: "unknown..." is refused at RCPT (550), "defer..." is
deferred at RCPT (451); after DATA "fail..." gets 451, "bad..." gets 554 and
"slow..." gets its result 300 ms late.  The fixture stops the driver with
SIGTERM and requires exit code 0, so a leak found by LeakSanitizer (or any
sanitizer report) fails the test.
"""

import email
import email.policy
import os
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import SANITIZER_MARKERS, SWITCHBOARD_BIN, tail, wait_until

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(SWITCHBOARD_BIN)))
DRIVER = os.path.join(BUILD, "tests", "unit", "email", "smtpd", "smtpd_driver")
SWAKS = "/usr/bin/swaks"

pytestmark = pytest.mark.skipif(not os.access(DRIVER, os.X_OK),
                                reason=f"smtpd driver not built ({DRIVER})")


class Driver:
    def __init__(self, proc, port, dir, errpath):
        self.proc = proc
        self.port = port
        self.dir = dir
        self.errpath = errpath

    def stderr(self):
        with open(self.errpath, errors="replace") as f:
            return f.read()

    def files(self):
        return sorted((f for f in os.listdir(self.dir) if f.endswith(".eml")),
                      key=lambda f: int(f.split(".")[0]))

    def message(self, n):
        with open(os.path.join(self.dir, f"{n}.eml"), "rb") as f:
            return f.read()

    def stop(self):
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return None
        return self.proc.returncode


@pytest.fixture
def smtpd():
    """Factory: smtpd(*args) -> a running Driver with its own message dir."""
    started = []
    tmp = tempfile.TemporaryDirectory(prefix="sb-smtpd-")

    def start(*args, listen="127.0.0.1:0"):
        d = os.path.join(tmp.name, str(len(started)))
        os.mkdir(d)
        errpath = os.path.join(tmp.name, f"{len(started)}.stderr")
        env = dict(os.environ, G_SLICE="always-malloc")
        with open(errpath, "wb") as err:
            proc = subprocess.Popen([DRIVER, "--listen", listen, "--dir", d]
                                    + [str(a) for a in args],
                                    stdout=subprocess.PIPE, stderr=err, env=env)
        drv = Driver(proc, None, d, errpath)
        started.append(drv)
        line = proc.stdout.readline().decode()
        if not line.startswith("port "):
            proc.wait(timeout=10)
            pytest.fail(f"driver did not start (exit {proc.returncode}):\n{drv.stderr()}")
        drv.port = int(line.split()[1])
        return drv

    yield start
    problems = []
    for drv in started:
        code = drv.stop()
        drv.proc.stdout.close()
        text = drv.stderr()
        found = [m for m in SANITIZER_MARKERS if m in text]
        if code != 0 or found:
            problems.append(f"driver pid {drv.proc.pid} exited with {code} {found}:\n"
                            f"{tail(text, 200)}")
    tmp.cleanup()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


class Wire:
    """A raw SMTP client: send bytes, read whole (multi-line) replies."""

    def __init__(self, port, timeout=10, family=socket.AF_INET, host="127.0.0.1"):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def reply(self):
        """(code, [text lines]) of the next reply."""
        lines = []
        while True:
            line = self._line()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True once the server closed the connection (unread bytes ignored)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, socket.timeout):
            return False


def greeted(port, verb="EHLO", **kw):
    w = Wire(port, **kw)
    code, text = w.reply()
    assert code == 220, text
    code, text = w.cmd(f"{verb} client.test")
    assert code == 250, text
    return w


def assert_reply(got, code, enhanced=None):
    assert got[0] == code, got
    if enhanced:
        assert got[1][-1].startswith(enhanced + " "), got


def send_raw_message(w, body, rcpts=("user@example.com",), sender="sender@example.com"):
    """MAIL, RCPT, DATA and the already-stuffed body + terminator; the final reply."""
    assert_reply(w.cmd(f"MAIL FROM:<{sender}>"), 250, "2.1.0")
    for r in rcpts:
        assert_reply(w.cmd(f"RCPT TO:<{r}>"), 250, "2.1.5")
    assert_reply(w.cmd("DATA"), 354)
    w.send(body + b".\r\n")
    return w.reply()


def simple_message(subject="hello", body="Hello there.\r\n"):
    return (f"From: sender@example.com\r\nTo: user@example.com\r\nSubject: {subject}\r\n"
            f"\r\n{body}").encode()


# ---------------------------------------------------------------------------
# real clients: swaks and smtplib
# ---------------------------------------------------------------------------

def swaks(port, *args):
    if not os.access(SWAKS, os.X_OK):
        pytest.skip("swaks is not installed")
    cp = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(port),
                         "--from", "sender@example.com", "--helo", "client.test"]
                        + list(args), capture_output=True, text=True, timeout=60)
    return cp


def test_swaks_plain_message(smtpd):
    drv = smtpd()
    cp = swaks(drv.port, "--to", "user@example.com", "--header", "Subject: plain swaks",
               "--body", "A plain body line.")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "250 2.0.0 Ok: queued as" in cp.stdout
    assert drv.files() == ["1.eml"]
    msg = drv.message(1)
    assert b"Subject: plain swaks\r\n" in msg
    assert b"A plain body line." in msg
    assert msg.endswith(b"\r\n") and not msg.endswith(b".\r\n")


def test_swaks_attachment(smtpd, tmp_path):
    drv = smtpd()
    payload = os.urandom(200_000)
    att = tmp_path / "blob.bin"
    att.write_bytes(payload)
    cp = swaks(drv.port, "--to", "user@example.com", "--attach", str(att),
               "--body", "see attached")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    msg = email.message_from_bytes(drv.message(1), policy=email.policy.default)
    parts = [p for p in msg.walk() if p.get_content_type() == "application/octet-stream"]
    assert len(parts) == 1, msg
    assert parts[0].get_payload(decode=True) == payload


def test_swaks_pipeline(smtpd):
    drv = smtpd()
    cp = swaks(drv.port, "--pipeline", "--to", "user@example.com,other@example.com",
               "--body", "pipelined")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "250 2.0.0 Ok: queued as" in cp.stdout
    assert b"pipelined" in drv.message(1)


def test_smtplib_ehlo_extensions(smtpd):
    drv = smtpd("--max-size", 123456)
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        code, _ = s.ehlo("client.test")
        assert code == 250
        assert s.esmtp_features["size"] == "123456"
        for ext in ("8bitmime", "pipelining", "enhancedstatuscodes"):
            assert s.has_extn(ext), s.esmtp_features
        assert s.noop()[0] == 250
        assert s.verify("someone@example.com")[0] == 252
        assert s.docmd("HELP")[0] == 214
        assert s.helo("again.test")[0] == 250
        s.sendmail("sender@example.com", ["user@example.com"], simple_message())
    assert drv.files() == ["1.eml"]


def test_many_messages_on_one_connection(smtpd):
    drv = smtpd()
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        for i in range(60):
            s.sendmail("sender@example.com", ["user@example.com"],
                       simple_message(subject=f"number {i}"))
    assert len(drv.files()) == 60
    for i in range(60):
        assert f"Subject: number {i}\r\n".encode() in drv.message(i + 1)


# ---------------------------------------------------------------------------
# LMTP
# ---------------------------------------------------------------------------

def test_lmtp_replies_per_recipient_in_order(smtpd):
    drv = smtpd("--lmtp")
    s = smtplib.LMTP("127.0.0.1", drv.port, timeout=10)
    try:
        assert s.ehlo("client.test")[0] == 250  # smtplib.LMTP sends LHLO
        assert s.has_extn("pipelining") and s.has_extn("enhancedstatuscodes")
        assert s.mail("sender@example.com")[0] == 250
        assert s.rcpt("slow@example.com")[0] == 250
        assert s.rcpt("ok@example.com")[0] == 250
        code, text = s.rcpt("defer@example.com")
        assert (code, text[:5]) == (451, b"4.3.0")
        assert s.rcpt("fail@example.com")[0] == 250
        assert s.rcpt("bad@example.com")[0] == 250
        t0 = time.monotonic()
        replies = [s.data(simple_message())]
        replies += [s.getreply() for _ in range(3)]
        elapsed = time.monotonic() - t0
        codes = [r[0] for r in replies]
        assert codes == [250, 250, 451, 554], replies
        for (code, text), who in zip(replies, ("slow", "ok", "fail", "bad")):
            assert f"<{who}@example.com>".encode() in text, replies
        assert replies[3][1].startswith(b"5.6.0")
        assert replies[2][1].startswith(b"4.3.0")
        assert elapsed >= 0.25  # the slow recipient's reply came first, after 300 ms
        assert s.noop()[0] == 250
    finally:
        s.close()
    assert drv.files() == ["1.eml"]


def test_lmtp_refuses_ehlo_and_helo(smtpd):
    drv = smtpd("--lmtp")
    with Wire(drv.port) as w:
        code, text = w.reply()
        assert code == 220 and "LMTP" in text[0]
        assert w.cmd("EHLO client.test")[0] == 500
        assert w.cmd("HELO client.test")[0] == 500
        assert_reply(w.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")
        assert w.cmd("LHLO client.test")[0] == 250
        assert w.cmd("MAIL FROM:<a@example.com>")[0] == 250


def test_smtp_refuses_lhlo(smtpd):
    drv = smtpd()
    with Wire(drv.port) as w:
        assert w.reply()[0] == 220
        assert_reply(w.cmd("LHLO client.test"), 500, "5.5.2")


# ---------------------------------------------------------------------------
# recipients and results
# ---------------------------------------------------------------------------

def test_unknown_recipient_550(smtpd):
    drv = smtpd()
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("sender@example.com")
        code, text = s.rcpt("unknown-person@example.com")
        assert code == 550 and text.startswith(b"5.1.1"), text


def test_defer_recipient_451(smtpd):
    drv = smtpd()
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("sender@example.com")
        code, text = s.rcpt("defer-me@example.com")
        assert code == 451 and text.startswith(b"4.3.0"), text
        assert s.docmd("DATA")[0] in (503, 554)


def test_failed_results_after_data(smtpd):
    drv = smtpd()
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        s.ehlo("client.test")
        for rcpts, want in ((["fail@example.com"], (451, b"4.3.0")),
                            (["ok@example.com", "fail@example.com"], (451, b"4.3.0")),
                            (["bad@example.com"], (554, b"5.6.0")),
                            # A temporary failure wins over a permanent one:
                            # the retry gives the failed recipient its copy.
                            (["bad@example.com", "fail@example.com"], (451, b"4.3.0")),
                            (["ok@example.com", "slow@example.com"], (250, b"2.0.0"))):
            assert s.mail("sender@example.com")[0] == 250
            for r in rcpts:
                assert s.rcpt(r)[0] == 250
            code, text = s.data(simple_message())
            assert (code, text[:5]) == want, (rcpts, code, text)
    assert len(drv.files()) == 5


def test_too_many_recipients_452(smtpd):
    drv = smtpd("--max-rcpts", 3)
    with greeted(drv.port) as w:
        assert w.cmd("MAIL FROM:<s@example.com>")[0] == 250
        for i in range(3):
            assert w.cmd(f"RCPT TO:<r{i}@example.com>")[0] == 250
        assert_reply(w.cmd("RCPT TO:<r3@example.com>"), 452, "4.5.3")
        assert_reply(w.cmd("DATA"), 354)
        w.send(simple_message() + b".\r\n")
        assert_reply(w.reply(), 250, "2.0.0")


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def test_size_limit_at_mail_and_in_data(smtpd):
    drv = smtpd("--max-size", 2000)
    with greeted(drv.port) as w:
        assert_reply(w.cmd("MAIL FROM:<s@example.com> SIZE=5000"), 552, "5.3.4")
        assert_reply(w.cmd("MAIL FROM:<s@example.com> SIZE=1500 BODY=8BITMIME"), 250)
        assert_reply(w.cmd("RSET"), 250, "2.0.0")
        big = simple_message(body=("z" * 76 + "\r\n") * 200)
        assert_reply(send_raw_message(w, big), 552, "5.3.4")
        assert_reply(w.cmd("RSET"), 250)
        assert_reply(send_raw_message(w, simple_message(subject="small")), 250, "2.0.0")
    assert drv.files() == ["1.eml"]
    assert b"Subject: small" in drv.message(1)


def test_size_limit_exactly(smtpd):
    msg = simple_message(body="q" * 500 + "\r\n")
    drv = smtpd("--max-size", len(msg))
    with greeted(drv.port) as w:
        assert_reply(send_raw_message(w, msg), 250)
        assert_reply(send_raw_message(w, msg + b"!\r\n"), 552, "5.3.4")
    assert drv.message(1) == msg


def test_line_too_long_500_and_session_goes_on(smtpd):
    drv = smtpd()
    with greeted(drv.port) as w:
        assert_reply(w.cmd("NOOP " + "x" * 1000), 500, "5.5.2")
        # over the limit in pieces, as a slow client would send it
        w.send("MAIL FROM:<" + "a" * 600)
        time.sleep(0.1)
        w.send("b" * 600)
        time.sleep(0.1)
        w.send("@example.com>\r\nNOOP\r\n")
        assert_reply(w.reply(), 500, "5.5.2")
        assert_reply(w.reply(), 250)
        assert_reply(send_raw_message(w, simple_message()), 250)


def test_too_many_protocol_errors_close_the_session(smtpd):
    """20 protocol errors and the client is let go (421), as postfix's
    smtpd_hard_error_limit does: garbage must not hold a slot for ever."""
    drv = smtpd()
    with greeted(drv.port) as w:
        for _ in range(19):
            assert_reply(w.cmd("BOGUS"), 500, "5.5.2")
        code, text = w.cmd("BOGUS")
        assert code == 500
        assert_reply(w.reply(), 421, "4.7.0")
        assert w.closed()
    # A session that recovers before the limit goes on.
    with greeted(drv.port) as w:
        for _ in range(10):
            assert_reply(w.cmd("BOGUS"), 500, "5.5.2")
        assert_reply(send_raw_message(w, simple_message()), 250)


def test_commands_out_of_order_503(smtpd):
    drv = smtpd()
    with Wire(drv.port) as w:
        assert w.reply()[0] == 220
        assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 503, "5.5.1")
        assert_reply(w.cmd("RCPT TO:<r@example.com>"), 503, "5.5.1")
        assert_reply(w.cmd("DATA"), 503, "5.5.1")
        assert w.cmd("ehlo client.test")[0] == 250
        assert_reply(w.cmd("RCPT TO:<r@example.com>"), 503, "5.5.1")
        assert_reply(w.cmd("DATA"), 503, "5.5.1")
        assert_reply(w.cmd("mail from: <s@example.com>"), 250)
        assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 503, "5.5.1")
        code, text = w.cmd("DATA")
        assert code in (503, 554) and text[-1].startswith("5.5.1"), text
        assert_reply(w.cmd("BOGUS command"), 500, "5.5.2")
        assert_reply(w.cmd("MAIL FROM:<s@example.com> FANCY=yes"), 503)  # still nested
        assert_reply(w.cmd("RSET"), 250)
        assert_reply(w.cmd("MAIL FROM:<s@example.com> FANCY=yes"), 555, "5.5.4")
        assert_reply(w.cmd("MAIL FROM:<>"), 250)  # a bounce
        assert_reply(w.cmd("rcpt to:<r@example.com>"), 250, "2.1.5")
        assert_reply(w.cmd("QUIT"), 221, "2.0.0")
        assert w.closed()


def test_idle_timeout_421(smtpd):
    drv = smtpd("--timeout-ms", 400)
    with greeted(drv.port) as w:
        t0 = time.monotonic()
        code, text = w.reply()
        assert code == 421 and text[-1].startswith("4.4.2"), text
        assert time.monotonic() - t0 >= 0.3
        assert w.closed()


def test_max_clients_421(smtpd):
    drv = smtpd("--max-clients", 2)
    a = greeted(drv.port)
    b = greeted(drv.port)
    with Wire(drv.port) as c:
        code, text = c.reply()
        assert code == 421 and text[-1].startswith("4.3.2"), text
        assert c.closed()
    assert a.cmd("NOOP")[0] == 250
    a.close()

    def third_gets_in():
        with Wire(drv.port) as d:
            return d.reply()[0] == 220
    wait_until(third_gets_in, 5, message="a free slot after a client left")
    b.close()


def test_client_that_never_reads_is_dropped(smtpd):
    """Replies a client never reads are not queued without bound."""
    drv = smtpd()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", drv.port))
    chunk = b"EHLO client.test\r\n" * 4000
    sent = 0
    dropped = False
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        dropped = True
    finally:
        sock.close()
    assert dropped, f"still connected after {sent} bytes of commands"
    with greeted(drv.port) as w:
        assert_reply(w.cmd("NOOP"), 250)


# ---------------------------------------------------------------------------
# message bytes
# ---------------------------------------------------------------------------

def test_dot_stuffing_round_trip(smtpd):
    drv = smtpd()
    sent = (b"Subject: dots\r\n\r\n..hidden line\r\n...two dots\r\n..\r\n.\tx\r\n"
            b"last . line\r\n")
    want = (b"Subject: dots\r\n\r\n.hidden line\r\n..two dots\r\n.\r\n\tx\r\n"
            b"last . line\r\n")
    with greeted(drv.port) as w:
        assert_reply(send_raw_message(w, sent), 250)
    assert drv.message(1) == want
    # smtplib stuffs for itself: what it was given arrives
    body = b"Subject: dots\r\n\r\n.one\r\n.\r\n..two\r\nend\r\n"
    with smtplib.SMTP("127.0.0.1", drv.port, timeout=10) as s:
        s.sendmail("sender@example.com", ["user@example.com"], body)
    assert drv.message(2) == body


def test_bare_lf_does_not_end_data(smtpd):
    drv = smtpd()
    sent = b"Subject: lf\r\n\r\na\n.\nb\n.\r\nc\r\n"
    with greeted(drv.port) as w:
        assert_reply(send_raw_message(w, sent), 250)
        assert_reply(w.cmd("NOOP"), 250)
    assert drv.message(1) == sent


def test_8bit_and_nul_bytes(smtpd):
    drv = smtpd()
    body = (b"Subject: =?utf-8?q?bytes?=\r\n\r\n" + bytes(range(1, 256)).replace(b"\n", b"")
            .replace(b"\r", b"") + b"\r\nnul\x00byte\r\n\x00\r\nbare\rcr\r\n\xff\xfe.\r\n")
    with greeted(drv.port) as w:
        assert_reply(w.cmd("MAIL FROM:<s@example.com> BODY=8BITMIME"), 250)
        assert_reply(w.cmd("RCPT TO:<user@example.com>"), 250)
        assert_reply(w.cmd("DATA"), 354)
        w.send(body + b".\r\n")
        assert_reply(w.reply(), 250)
        assert_reply(w.cmd("NOOP\x00junk"), 500)
        w.send(b"\xff\xfe\x80 \x00\r\n")
        assert w.reply()[0] == 500
        assert_reply(w.cmd("NOOP"), 250)
    assert drv.message(1) == body


def test_data_split_across_reads(smtpd):
    """The terminator and stuffed dots cut at every possible place."""
    drv = smtpd()
    sent = b"Subject: split\r\n\r\n..a\r\nb\r\n"
    with greeted(drv.port) as w:
        for cut in range(1, len(sent) + 3):
            assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 250)
            assert_reply(w.cmd("RCPT TO:<user@example.com>"), 250)
            assert_reply(w.cmd("DATA"), 354)
            whole = sent + b".\r\n"
            w.send(whole[:cut])
            time.sleep(0.02)
            w.send(whole[cut:])
            assert_reply(w.reply(), 250)
    for n in range(1, len(sent) + 3):
        assert drv.message(n) == b"Subject: split\r\n\r\n.a\r\nb\r\n"


# ---------------------------------------------------------------------------
# pipelining and waiting for results
# ---------------------------------------------------------------------------

def test_pipelined_commands_in_order(smtpd):
    drv = smtpd()
    with greeted(drv.port) as w:
        w.send("MAIL FROM:<s@example.com>\r\nRCPT TO:<slow@example.com>\r\n"
               "RCPT TO:<unknown@example.com>\r\nRCPT TO:<ok@example.com>\r\nDATA\r\n")
        assert [w.reply()[0] for _ in range(5)] == [250, 250, 550, 250, 354]
        # commands pipelined after the data wait for the (late) result
        w.send(simple_message() + b".\r\nMAIL FROM:<s@example.com>\r\n"
               b"RCPT TO:<ok@example.com>\r\nDATA\r\n")
        t0 = time.monotonic()
        assert_reply(w.reply(), 250, "2.0.0")
        assert time.monotonic() - t0 >= 0.25
        assert [w.reply()[0] for _ in range(3)] == [250, 250, 354]
        w.send(simple_message(subject="second") + b".\r\nQUIT\r\n")
        assert_reply(w.reply(), 250)
        assert_reply(w.reply(), 221)
        assert w.closed()
    assert len(drv.files()) == 2


def test_client_gone_while_result_pending(smtpd):
    drv = smtpd()
    w = greeted(drv.port)
    assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 250)
    assert_reply(w.cmd("RCPT TO:<slow@example.com>"), 250)
    assert_reply(w.cmd("DATA"), 354)
    w.send(simple_message() + b".\r\nNOOP\r\n")
    w.close()
    time.sleep(0.6)
    assert drv.files() == ["1.eml"]
    with greeted(drv.port) as w2:
        assert_reply(send_raw_message(w2, simple_message()), 250)


def test_lmtp_client_gone_while_result_pending(smtpd):
    drv = smtpd("--lmtp")
    w = greeted(drv.port, verb="LHLO")
    assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 250)
    assert_reply(w.cmd("RCPT TO:<slow@example.com>"), 250)
    assert_reply(w.cmd("RCPT TO:<ok@example.com>"), 250)
    assert_reply(w.cmd("DATA"), 354)
    w.send(simple_message() + b".\r\n")
    w.close()
    time.sleep(0.6)
    assert drv.files() == ["1.eml"]


def test_stopped_while_result_pending(smtpd):
    """SIGTERM closes the server while a result is still due: no leak, exit 0."""
    drv = smtpd()
    w = greeted(drv.port)
    assert_reply(w.cmd("MAIL FROM:<s@example.com>"), 250)
    assert_reply(w.cmd("RCPT TO:<slow@example.com>"), 250)
    assert_reply(w.cmd("DATA"), 354)
    w.send(simple_message() + b".\r\n")
    time.sleep(0.1)
    assert drv.stop() == 0, drv.stderr()
    w.close()


def test_stopped_with_clients_connected(smtpd):
    drv = smtpd()
    a = greeted(drv.port)
    b = greeted(drv.port)
    assert_reply(b.cmd("MAIL FROM:<s@example.com>"), 250)
    assert_reply(b.cmd("RCPT TO:<user@example.com>"), 250)
    assert_reply(b.cmd("DATA"), 354)
    b.send(b"Subject: half\r\n\r\nsome")
    time.sleep(0.1)
    assert drv.stop() == 0, drv.stderr()
    assert a.closed() and b.closed()
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# listening
# ---------------------------------------------------------------------------

def test_two_servers_share_one_port(smtpd):
    first = smtpd()
    second = smtpd(listen=f"127.0.0.1:{first.port}")
    assert second.port == first.port
    for _ in range(6):
        with greeted(first.port) as w:
            assert_reply(send_raw_message(w, simple_message()), 250)
    assert len(first.files()) + len(second.files()) == 6


def test_ipv6_listen(smtpd):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    drv = smtpd(listen="[::1]:0")
    with greeted(drv.port, family=socket.AF_INET6, host="::1") as w:
        assert_reply(send_raw_message(w, simple_message()), 250)


@pytest.mark.parametrize("addr", ["nonsense", "127.0.0.1", "[::1]0", "127.0.0.1:99999",
                                  "::1:25", "localhost:25"])
def test_bad_listen_address(addr):
    cp = subprocess.run([DRIVER, "--listen", addr], capture_output=True, text=True,
                        timeout=30, env=dict(os.environ, G_SLICE="always-malloc"))
    assert cp.returncode == 1, cp.stderr
    assert "could not listen" in cp.stderr
    assert not [m for m in SANITIZER_MARKERS if m in cp.stderr], cp.stderr
