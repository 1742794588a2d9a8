"""The email channel's client side (plugins/email/mailnet.c) against real
peers: relay delivery to postfix's smtp-sink, IMAP polling of a throwaway
Dovecot.  Driven through tests/unit/email/mailnet/driver.c, which is
built next to the server (<build>/tests/unit/email/mailnet/mailnet_driver).

The IMAP tests hold the poller to its promise: every message is handed
over once per UIDVALIDITY, in UID order, and none is skipped, across
owner failures, restarts and UIDVALIDITY changes.
"""

import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import SWITCHBOARD_BIN, sanitizer_reports, tail
from mailpeers import DOVECOT, SMTP_SINK, Dovecot, SmtpSink, free_port

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(SWITCHBOARD_BIN)))
DRIVER = os.path.join(BUILD, "tests", "unit", "email", "mailnet", "mailnet_driver")

pytestmark = pytest.mark.skipif(not os.path.exists(DRIVER),
                                reason=f"mailnet driver not built ({DRIVER})")

needs_dovecot = pytest.mark.skipif(not os.path.exists(DOVECOT), reason="no dovecot")
needs_sink = pytest.mark.skipif(not os.path.exists(SMTP_SINK), reason="no smtp-sink")

SB_EUNAVAILABLE = -2001
SB_ECLOSED = -2004


def run_driver(args, timeout=120):
    """Run the driver; it must exit 0 with no sanitizer report."""
    cmd = [DRIVER] + [str(a) for a in args]
    cp = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = cp.stdout.decode(errors="replace")
    err = cp.stderr.decode(errors="replace")
    assert not sanitizer_reports(err), f"sanitizer report from {cmd!r}:\n{tail(err, 200)}"
    assert cp.returncode == 0, f"{cmd!r} exited {cp.returncode}:\n{out}\n{tail(err)}"
    return out


def message(i, extra=b""):
    return (b"From: Customer %d <customer%d@example.org>\r\n"
            b"To: support@example.com\r\n"
            b"Subject: question %d\r\n"
            b"Message-ID: <q%d@example.org>\r\n"
            b"\r\n"
            b"Hello, this is message %d.\r\n" % (i, i, i, i, i)) + extra


# ---------------------------------------------------------------------------
# SMTP relay
# ---------------------------------------------------------------------------

def send(tmp_path, url, msg, rcpts=("agent@example.net",), extra=()):
    path = tmp_path / "outgoing.eml"
    path.write_bytes(msg)
    args = ["send", "--url", url, "--from", "support@example.com"]
    for r in rcpts:
        args += ["--to", r]
    out = run_driver(args + list(extra) + [path])
    line = out.strip().splitlines()[-1]
    assert line.startswith(("result ", "refused ")), out
    word, code, *detail = line.split(" ", 2)
    return word, int(code), (detail[0] if detail else "")


@needs_sink
def test_relay_delivers_the_message_unchanged(tmp_path):
    body = (message(1) + b".a line that starts with a dot\r\n"
            b"..and one with two\r\n.\r\nthe end\r\n")
    with SmtpSink(tmp_path) as sink:
        word, result, detail = send(tmp_path, sink.url, body,
                                    rcpts=("a@example.net", "b@example.net"))
        assert (word, result) == ("result", 0), detail
        assert detail.startswith("250"), detail
        dumps = sink.dumps()
    assert len(dumps) == 1
    env, got = dumps[0]
    # smtp-sink saves lines with LF only; dot-stuffing is undone on its side.
    assert got == body.replace(b"\r\n", b"\n")
    assert env["mail"].startswith("<support@example.com>")
    assert [r.split()[0] for r in env["rcpt"]] == ["<a@example.net>", "<b@example.net>"]


@needs_sink
def test_relay_soft_reject_is_retried_with_the_servers_words(tmp_path):
    with SmtpSink(tmp_path, soft="RCPT", soft_reply="451 4.3.0 mailbox busy, try later") as sink:
        word, result, detail = send(tmp_path, sink.url, message(1))
        assert sink.messages() == []
    assert result == 1
    assert "451" in detail and "mailbox busy, try later" in detail


@needs_sink
def test_relay_hard_reject_fails_with_the_servers_words(tmp_path):
    with SmtpSink(tmp_path, hard="DATA", hard_reply="554 5.7.1 we do not want it") as sink:
        word, result, detail = send(tmp_path, sink.url, message(1))
        assert sink.messages() == []
    assert result == 2
    assert "554" in detail and "we do not want it" in detail


def test_relay_closed_port_is_retried(tmp_path):
    word, result, detail = send(tmp_path, f"smtp://127.0.0.1:{free_port()}", message(1))
    assert (word, result) == ("result", 1)
    assert detail


def test_relay_refuses_other_schemes(tmp_path):
    for url in ("http://127.0.0.1:25", "imap://127.0.0.1:25/INBOX"):
        word, code, _ = send(tmp_path, url, message(1))
        assert (word, code) == ("refused", -22)


class SilentServer:
    """Accepts connections on 127.0.0.1 and never says a word."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while not self.stopping.is_set():
            try:
                self.conns.append(self.srv.accept()[0])
            except OSError:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.srv.close()


def test_relay_close_cancels_a_pending_send(tmp_path):
    """Closing the mailnet ends a send to a relay that never speaks with a
    retry, at once (the send's own timeout is 60 s), and frees everything."""
    with SilentServer() as srv:
        started = time.monotonic()
        word, result, detail = send(tmp_path, f"smtp://127.0.0.1:{srv.port}", message(1),
                                    extra=("--close-after-ms", "300"))
        assert time.monotonic() - started < 30
    assert (word, result, detail) == ("result", 1, "shutting down")


# ---------------------------------------------------------------------------
# IMAP
# ---------------------------------------------------------------------------

@pytest.fixture
def dovecot(tmp_path):
    if not os.path.exists(DOVECOT):
        pytest.skip("no dovecot")
    with Dovecot(tmp_path) as d:
        yield d


class Poller:
    """Polls one account through the driver, keeping the state file."""

    def __init__(self, tmp_path, dovecot, after="seen", url=None, password=None):
        self.dovecot = dovecot
        self.after = after
        self.url = url or dovecot.url
        self.password = password or dovecot.password
        self.state = tmp_path / f"state-{after.replace(':', '_')}"
        self.save = tmp_path / f"saved-{after.replace(':', '_')}"
        self.save.mkdir(exist_ok=True)
        self.stored = []  # UIDs the owner accepted, over all polls

    def poll(self, *extra, fail_at=None):
        args = ["poll", "--url", self.url, "--user", self.dovecot.user,
                "--password", self.password, "--after", self.after,
                "--state", self.state, "--save", self.save]
        if fail_at is not None:
            args += ["--fail-at", fail_at]
        out = run_driver(args + list(extra))
        res = {"uids": [], "lens": [], "error": None}
        for line in out.splitlines():
            word, _, rest = line.partition(" ")
            if word == "message":
                uid, n = rest.split()
                res["uids"].append(int(uid))
                res["lens"].append(int(n))
            elif word == "done":
                rc, v, last = (int(x) for x in rest.split())
                res.update(rc=rc, uidvalidity=v, last_uid=last)
            elif word == "error":
                res["error"] = rest
        assert "rc" in res, out
        for uid in res["uids"]:
            if uid != fail_at and not (res["rc"] == SB_ECLOSED and uid == res["uids"][-1]):
                self.stored.append((res["uidvalidity"], uid))
        return res

    def saved(self, uid):
        return (self.save / f"{uid}.eml").read_bytes()

    def state_file(self):
        v, last = self.state.read_text().split()
        return int(v), int(last)


@needs_dovecot
def test_poll_fetches_each_message_once_in_uid_order(tmp_path, dovecot):
    for i in range(1, 6):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot)
    r = p.poll()
    v = dovecot.uidvalidity()
    assert r["rc"] == 0 and r["error"] is None
    assert r["uids"] == [1, 2, 3, 4, 5]
    assert (r["uidvalidity"], r["last_uid"]) == (v, 5) == p.state_file()
    for i in range(1, 6):
        assert p.saved(i) == message(i)  # byte for byte
    assert r["lens"] == [len(message(i)) for i in range(1, 6)]

    r = p.poll()
    assert (r["rc"], r["uids"], r["last_uid"]) == (0, [], 5)

    dovecot.deliver(message(6))
    dovecot.deliver(message(7))
    r = p.poll()
    assert (r["rc"], r["uids"], r["last_uid"]) == (0, [6, 7], 7)
    assert p.saved(7) == message(7)
    assert sorted(p.stored) == [(v, uid) for uid in range(1, 8)]


@needs_dovecot
def test_poll_stops_at_a_message_the_owner_did_not_store(tmp_path, dovecot):
    for i in range(1, 3):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot)
    assert p.poll()["uids"] == [1, 2]
    for i in range(3, 6):
        dovecot.deliver(message(i))

    r = p.poll(fail_at=4)  # the 2nd of the 3 new ones
    assert r["uids"] == [3, 4]
    assert r["rc"] == SB_EUNAVAILABLE and r["error"]
    assert r["last_uid"] == 3 == p.state_file()[1]
    flags = dovecot.flags()
    assert "\\Seen" in flags[3]
    assert "\\Seen" not in flags[4]  # fetching it did not leave it marked

    r = p.poll()
    assert (r["rc"], r["uids"], r["last_uid"]) == (0, [4, 5], 5)
    v = dovecot.uidvalidity()
    assert sorted(p.stored) == [(v, uid) for uid in range(1, 6)]  # none skipped, none twice


@needs_dovecot
def test_poll_limits_each_run_to_max(tmp_path, dovecot):
    for i in range(1, 6):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot)
    assert p.poll("--max", 2)["uids"] == [1, 2]
    assert p.poll("--max", 2)["uids"] == [3, 4]
    r = p.poll("--max", 2)
    assert (r["uids"], r["last_uid"]) == ([5], 5)


@needs_dovecot
def test_poll_continues_after_the_server_restarts(tmp_path, dovecot):
    for i in range(1, 3):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot)
    first = p.poll()
    assert first["uids"] == [1, 2]
    dovecot.stop()

    down = p.poll()  # the server is away: nothing moves
    assert down["rc"] == SB_EUNAVAILABLE and down["error"]
    assert (down["uidvalidity"], down["last_uid"]) == (first["uidvalidity"], 2)

    dovecot.deliver(message(3))
    dovecot.start()
    dovecot.deliver(message(4))
    r = p.poll()
    assert (r["rc"], r["uids"], r["uidvalidity"]) == (0, [3, 4], first["uidvalidity"])


@needs_dovecot
def test_poll_refetches_everything_when_uidvalidity_changes(tmp_path, dovecot):
    for i in range(1, 4):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot, after="none")
    first = p.poll()
    assert first["uids"] == [1, 2, 3]
    dovecot.forget_uids()
    v = dovecot.uidvalidity()
    assert v != first["uidvalidity"]

    r = p.poll()
    assert r["rc"] == 0 and r["uidvalidity"] == v
    assert len(r["uids"]) == 3 and r["uids"] == sorted(r["uids"])
    assert sorted(p.saved(u) for u in r["uids"]) == sorted(message(i) for i in range(1, 4))
    assert p.poll()["uids"] == []


@needs_dovecot
def test_after_seen_marks_messages_seen(tmp_path, dovecot):
    dovecot.deliver(message(1))
    dovecot.deliver(message(2))
    assert Poller(tmp_path, dovecot, after="seen").poll()["uids"] == [1, 2]
    assert all("\\Seen" in f for f in dovecot.flags().values())


@needs_dovecot
def test_after_none_leaves_flags_as_they_were(tmp_path, dovecot):
    dovecot.deliver(message(1))
    dovecot.deliver(message(2), flags="S")
    dovecot.deliver(message(3), flags="F")
    before = dovecot.flags()
    r = Poller(tmp_path, dovecot, after="none").poll()
    assert (r["rc"], r["uids"]) == (0, [1, 2, 3])
    after = dovecot.flags()
    assert after == before
    assert "\\Seen" not in after[1] and "\\Seen" in after[2]


@needs_dovecot
def test_after_delete_removes_messages(tmp_path, dovecot):
    for i in range(1, 4):
        dovecot.deliver(message(i))
    r = Poller(tmp_path, dovecot, after="delete").poll()
    assert (r["rc"], r["uids"], r["last_uid"]) == (0, [1, 2, 3], 3)
    assert dovecot.uids() == []


@needs_dovecot
def test_after_move_files_messages_away(tmp_path, dovecot):
    for i in range(1, 3):
        dovecot.deliver(message(i))
    dovecot.deliver(message(3), flags="S")
    r = Poller(tmp_path, dovecot, after="move:Done").poll()  # Done is created on demand
    assert (r["rc"], r["uids"]) == (0, [1, 2, 3])
    assert dovecot.uids() == []
    moved = dovecot.messages("Done")
    assert sorted(moved.values()) == sorted(message(i) for i in range(1, 4))
    # flags travel as they were: unread stays unread
    seen = sorted("\\Seen" in f for f in dovecot.flags("Done").values())
    assert seen == [False, False, True]


@needs_dovecot
def test_poll_a_mailbox_with_a_space_in_its_name(tmp_path, dovecot):
    dovecot.deliver(message(1), folder="Support Queue")
    dovecot.deliver(message(2), folder="Support Queue")
    p = Poller(tmp_path, dovecot, url=dovecot.url_for("Support Queue"))
    r = p.poll()
    assert (r["rc"], r["uids"]) == (0, [1, 2])
    assert p.saved(2) == message(2)
    assert dovecot.uids() == []  # INBOX untouched


@needs_dovecot
def test_poll_with_a_wrong_password_says_why(tmp_path, dovecot):
    dovecot.deliver(message(1))
    p = Poller(tmp_path, dovecot, password="not-the-password")
    r = p.poll()
    assert r["rc"] == SB_EUNAVAILABLE
    assert (r["uidvalidity"], r["last_uid"]) == (0, 0)
    assert r["uids"] == []
    assert "Authentication failed" in r["error"] or "denied" in r["error"], r["error"]


@needs_dovecot
def test_poll_of_a_missing_mailbox_says_why(tmp_path, dovecot):
    r = Poller(tmp_path, dovecot, url=dovecot.url_for("Nowhere")).poll()
    assert r["rc"] == SB_EUNAVAILABLE
    assert "Nowhere" in r["error"], r["error"]


def test_poll_of_a_closed_port(tmp_path):
    state = tmp_path / "state"
    state.write_text("7 3\n")
    out = run_driver(["poll", "--url", f"imap://127.0.0.1:{free_port()}/INBOX", "--user", "u",
                      "--password", "p", "--after", "seen", "--state", state])
    assert out.splitlines()[0] == f"done {SB_EUNAVAILABLE} 7 3", out
    assert state.read_text().split() == ["7", "3"]


def test_poll_refuses_bad_accounts(tmp_path):
    state = tmp_path / "state"
    for url, after in (("http://127.0.0.1/INBOX", "seen"), ("imap://127.0.0.1/INBOX", "archive"),
                       ("imap://127.0.0.1/INBOX", "move:"),
                       ("imap://127.0.0.1/IN%0D%0ABOX", "seen")):
        out = run_driver(["poll", "--url", url, "--user", "u", "--password", "p",
                          "--after", after, "--state", state])
        assert out.strip() == "refused -22", (url, after, out)


@needs_dovecot
def test_close_while_a_message_waits_for_the_owner(tmp_path, dovecot):
    for i in range(1, 4):
        dovecot.deliver(message(i))
    p = Poller(tmp_path, dovecot)
    r = p.poll("--close-at", 2)
    assert r["uids"] == [1, 2]
    assert (r["rc"], r["last_uid"]) == (SB_ECLOSED, 1)
    r = p.poll()
    assert (r["rc"], r["uids"]) == (0, [2, 3])


def test_close_while_polling_a_silent_server(tmp_path):
    state = tmp_path / "state"
    state.write_text("7 3\n")
    with SilentServer() as srv:
        started = time.monotonic()
        out = run_driver(["poll", "--url", f"imap://127.0.0.1:{srv.port}/INBOX", "--user", "u",
                          "--password", "p", "--after", "seen", "--state", state,
                          "--close-after-ms", "300"])
        assert time.monotonic() - started < 30
    assert out.splitlines()[0] == f"done {SB_ECLOSED} 7 3", out
