"""The email channel end to end: mail handed to the server's SMTP/LMTP
listener (by swaks, Python's smtplib and a real postfix) becomes tickets
and messages, threads by Message-ID and ticket tag, never opens tickets
for machine mail, and agents' replies leave through the channel's relay
(a catcher on loopback) with the headers a mail client threads by.
"""

import email
import email.policy
import os
import pathlib
import shutil
import smtplib
import socket
import socketserver
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import api_login, cli_agent, cli_tenant, expect, free_port, psql, run_cli, wait_until

T = "mail"
ADDRESS = "support@acme.example"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


# ---------------------------------------------------------------------------
# a relay that keeps what it is given
# ---------------------------------------------------------------------------

class Catcher:
    """An SMTP server on loopback that stores every message (and can be
    told to refuse the next ones to a recipient with a given reply)."""

    def __init__(self):
        self.messages = []
        # (recipient, reply to DATA's end), used up one per message to that recipient
        self.refuse = []
        self.lock = threading.Lock()
        catcher = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                self.reply("220 catcher ESMTP")
                rcpts, sender = [], None
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    verb = line.decode("latin-1").strip().split(" ")[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-catcher\r\n250 8BITMIME")
                    elif verb == "MAIL":
                        sender, rcpts = line.decode("latin-1").strip(), []
                        self.reply("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        rcpts.append(line.decode("latin-1").strip())
                        self.reply("250 2.1.5 Ok")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        data = bytearray()
                        while True:
                            chunk = self.rfile.readline(1 << 20)
                            if not chunk or chunk == b".\r\n":
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        with catcher.lock:
                            answer = catcher.refused(rcpts)
                            if answer is None:
                                catcher.messages.append((sender, rcpts, bytes(data)))
                        self.reply(answer or "250 2.0.0 Ok: queued")
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 Bye")
                        return
                    else:
                        self.reply("250 Ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def refused(self, rcpts):
        """The reply to use up for a message to rcpts, or None (accepted)."""
        for i, (who, answer) in enumerate(self.refuse):
            if any(who in r for r in rcpts):
                del self.refuse[i]
                return answer
        return None

    def parsed(self):
        with self.lock:
            return [email.message_from_bytes(m[2], policy=email.policy.default)
                    for m in self.messages]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# one server for the module
# ---------------------------------------------------------------------------

class Env:
    pass


def start(database, start_server, catcher, **extra):
    smtp = free_port()
    env = {"SWITCHBOARD_SMTP_LISTEN": f"127.0.0.1:{smtp}",
           "SWITCHBOARD_EMAIL_LMTP_LISTEN": f"127.0.0.1:{free_port()}"}
    env.update(extra)
    srv = start_server(database, env=env)
    srv.smtp_port = smtp
    srv.lmtp_port = int(env["SWITCHBOARD_EMAIL_LMTP_LISTEN"].rsplit(":", 1)[1])
    return srv


def new_channel(e, addresses=None, **settings):
    body = {"type": "email", "name": f"mail {len(e.channels)}",
            "settings": dict({"address": addresses or ADDRESS,
                              "relay": {"url": f"smtp://127.0.0.1:{e.catcher.port}",
                                        "starttls": "none"}}, **settings)}
    ch = expect(e.adm.post(f"tenants/{T}/channels", body), 201)
    e.channels.append(ch)
    return ch


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    e = Env()
    e.db = module_database
    e.catcher = Catcher()
    e.srv = start(e.db, module_start_server, e.catcher)
    cli_tenant(e.db, T, "Acme Mail")
    cli_agent(e.db, "adm@mail.example", T, "admin")
    e.adm = api_login(e.srv, "adm@mail.example")
    e.channels = []
    e.channel = new_channel(e)
    wait_until(lambda: smtp_rcpt_ok(e.srv.smtp_port, ADDRESS), 20,
               message="the listener knows the channel's address")
    yield e
    e.catcher.close()


def smtp_rcpt_ok(port, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("test.example")
        s.mail("probe@test.example")
        code, _ = s.rcpt(rcpt)
        s.rset()
        return code == 250


def swaks(port, *args, ok=True, quiet=True):
    cp = subprocess.run([SWAKS, "--server", f"127.0.0.1:{port}"] + (["--silent", "1"] if quiet else [])
                        + list(args),
                        capture_output=True, text=True, timeout=60)
    if ok:
        assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp


def rows(db, sql):
    out = psql(db, sql).strip()
    return [line.split("|") for line in out.splitlines()] if out else []


def one(db, sql):
    r = rows(db, sql)
    return r[0][0] if r else None


def msg_ticket(db, external_id):
    return one(db, f"SELECT t.number FROM messages m JOIN tickets t ON t.tenant_id = m.tenant_id"
                   f" AND t.id = m.ticket_id WHERE m.external_id = '{external_id}'")


def sendmail(port, raw, rcpts=(ADDRESS,), sender="customer@example.org"):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        return s.sendmail(sender, list(rcpts), raw)


def mail(subject, body, msgid, sender="Alice Customer <alice@example.org>", headers=""):
    return (f"From: {sender}\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n{headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            ).encode()


# ---------------------------------------------------------------------------
# receiving
# ---------------------------------------------------------------------------

def test_swaks_plain_message_becomes_a_ticket(env):
    swaks(env.srv.smtp_port, "--to", ADDRESS, "--from", "bob@example.org",
          "--header", "Subject: Printer on fire", "--header", "Message-Id: <plain-1@example.org>",
          "--body", "It is really burning.")
    number = msg_ticket(env.db, "<plain-1@example.org>")
    assert number
    t = expect(env.adm.get(f"tenants/{T}/tickets/{number}"), 200)
    assert t["subject"] == "Printer on fire" and t["channel"] == "email"
    text = one(env.db, "SELECT body_text FROM messages WHERE external_id = '<plain-1@example.org>'")
    assert "It is really burning." in text
    assert rows(env.db, "SELECT i.kind, i.value FROM customer_identities i JOIN tickets t"
                        " ON t.customer_id = i.customer_id AND t.tenant_id = i.tenant_id"
                        f" WHERE t.number = {number}") == [["email", "bob@example.org"]]


def test_swaks_attachment_is_stored_with_name_type_size_hash(env, tmp_path):
    blob = bytes(range(256)) * 40
    path = tmp_path / "report.bin"
    path.write_bytes(blob)
    swaks(env.srv.smtp_port, "--to", ADDRESS, "--from", "carol@example.org",
          "--header", "Subject: logs attached", "--header", "Message-Id: <att-1@example.org>",
          "--body", "see attachment", "--attach-type", "application/octet-stream",
          "--attach-name", "report.bin", "--attach", f"@{path}")
    r = rows(env.db, "SELECT a.filename, a.content_type, a.size, encode(a.sha256, 'hex')"
                     " FROM attachments a JOIN messages m ON m.tenant_id = a.tenant_id"
                     " AND m.id = a.message_id WHERE m.external_id = '<att-1@example.org>'")
    import hashlib
    assert r == [["report.bin", "application/octet-stream", str(len(blob)),
                  hashlib.sha256(blob).hexdigest()]]


def test_swaks_pipelined_session(env):
    cp = swaks(env.srv.smtp_port, "--pipeline", "--to", ADDRESS, "--from", "dave@example.org",
               "--header", "Subject: pipelined", "--header", "Message-Id: <pipe-1@example.org>",
               "--body", "sent with PIPELINING", quiet=False)
    assert "PIPELINING" in cp.stdout
    assert msg_ticket(env.db, "<pipe-1@example.org>")


def test_unknown_recipient_is_refused_with_550(env):
    cp = swaks(env.srv.smtp_port, "--to", "nobody@acme.example", "--from", "x@example.org",
               ok=False, quiet=False)
    assert cp.returncode != 0 and "550 5.1.1" in cp.stdout


def test_plus_detail_reaches_the_channel(env):
    sendmail(env.srv.smtp_port, mail("plus", "plus addressing", "<plus-1@example.org>"),
             rcpts=["support+billing@acme.example"])
    assert msg_ticket(env.db, "<plus-1@example.org>")


def test_same_message_id_twice_stores_one_message(env):
    raw = mail("twice", "delivered twice", "<dup-1@example.org>")
    sendmail(env.srv.smtp_port, raw)
    sendmail(env.srv.smtp_port, raw)
    assert one(env.db, "SELECT count(*) FROM messages WHERE external_id = '<dup-1@example.org>'") == "1"


def test_mail_without_message_id_is_stored_once_per_copy(env):
    raw = (b"From: nomsgid@example.org\r\nTo: support@acme.example\r\nSubject: no id\r\n\r\n"
           b"no message id here\r\n")
    sendmail(env.srv.smtp_port, raw)
    sendmail(env.srv.smtp_port, raw)
    assert one(env.db, "SELECT count(*) FROM messages WHERE body_text LIKE 'no message id here%'") \
        == "1"


def test_lmtp_answers_per_recipient(env):
    second = new_channel(env, addresses=["help@beta.example"])
    wait_until(lambda: lmtp_rcpt_ok(env.srv.lmtp_port, "help@beta.example"), 20)
    raw = mail("two channels", "to both", "<lmtp-1@example.org>")
    # smtplib's sendmail reads one reply after DATA; LMTP sends one per recipient.
    with smtplib.LMTP("127.0.0.1", env.srv.lmtp_port, timeout=30) as s:
        s.ehlo("test.example")
        s.mail("x@example.org")
        assert s.rcpt(ADDRESS)[0] == 250 and s.rcpt("help@beta.example")[0] == 250
        first = s.data(raw)
        then = s.getreply()
    assert first[0] == 250 and ADDRESS.encode() in first[1]
    assert then[0] == 250 and b"help@beta.example" in then[1]
    assert rows(env.db, "SELECT channel_id FROM messages WHERE external_id = '<lmtp-1@example.org>'"
                        " ORDER BY channel_id") == [[str(env.channel["id"])], [str(second["id"])]]


def lmtp_rcpt_ok(port, rcpt):
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("test.example")
        s.mail("probe@test.example")
        code, _ = s.rcpt(rcpt)
        s.rset()
        return code == 250


# ---------------------------------------------------------------------------
# threading, machine mail, replies
# ---------------------------------------------------------------------------

def replies_to(e, addr, n, timeout=30):
    def got():
        found = [m for m in e.catcher.parsed() if addr in str(m["To"])]
        return found if len(found) >= n else None
    return wait_until(got, timeout, message=f"{n} replies to {addr}")


def test_reply_threads_both_ways_and_auto_ack(env):
    cust = "Erin Example <erin@example.org>"
    sendmail(env.srv.smtp_port, mail("Cannot log in", "Hello,\nI cannot log in.", "<th-1@example.org>",
                                     sender=cust), sender="erin@example.org")
    number = msg_ticket(env.db, "<th-1@example.org>")
    # The automatic acknowledgement names the ticket and threads under the mail.
    ack = replies_to(env, "erin@example.org", 1)[0]
    assert f"#{number}" in ack["Subject"] and f"#{number}" in ack.get_body(("plain",)).get_content()
    assert ack["In-Reply-To"] == "<th-1@example.org>"
    assert ack["From"].addresses[0].addr_spec == ADDRESS
    assert ack["Auto-Submitted"] == "auto-replied"      # RFC 3834: no responder answers it
    # An agent's reply: multipart/alternative with the threading headers.
    expect(env.adm.post(f"tenants/{T}/tickets/{number}/messages",
                        {"kind": "reply", "text": "Please reset your password."}), 201)
    reply = replies_to(env, "erin@example.org", 2)[1]
    assert reply.get_content_type() == "multipart/alternative"
    assert "Please reset your password." in reply.get_body(("plain",)).get_content()
    assert "Please reset your password." in reply.get_body(("html",)).get_content()
    assert reply["Subject"] == f"Re: Cannot log in [#{number}]"
    assert reply["Auto-Submitted"] == "no"
    assert reply["In-Reply-To"] == "<th-1@example.org>"
    assert "<th-1@example.org>" in reply["References"]
    mid = reply["Message-ID"]
    wait_until(lambda: one(env.db, f"SELECT delivery_status FROM messages WHERE external_id = '{mid}'")
               == "sent", 20, message="the reply's delivery is recorded with its Message-ID")
    # The customer's client answers with In-Reply-To: same ticket, no new ack.
    sendmail(env.srv.smtp_port,
             mail(f"Re: Cannot log in [#{number}]", "Thanks, that worked.\n\nOn Monday you wrote:\n"
                  "> Please reset your password.", "<th-2@example.org>", sender=cust,
                  headers=f"In-Reply-To: {mid}\r\nReferences: <th-1@example.org> {mid}\r\n"),
             sender="erin@example.org")
    assert msg_ticket(env.db, "<th-2@example.org>") == number
    q = one(env.db, "SELECT quote_at FROM messages WHERE external_id = '<th-2@example.org>'")
    assert q and int(q) > 0
    # A reply that kept only the subject's tag threads too.
    sendmail(env.srv.smtp_port, mail(f"another thing [#{number}]", "one more question",
                                     "<th-3@example.org>", sender=cust), sender="erin@example.org")
    assert msg_ticket(env.db, "<th-3@example.org>") == number
    time.sleep(2)
    assert len(replies_to(env, "erin@example.org", 2)) == 2   # no second acknowledgement


def test_message_id_of_someone_elses_ticket_opens_a_new_ticket(env):
    sendmail(env.srv.smtp_port, mail("private", "my account", "<priv-1@example.org>",
                                     sender="kim@example.org"), sender="kim@example.org")
    number = msg_ticket(env.db, "<priv-1@example.org>")
    # Someone who saw Kim's Message-ID answers it: not into Kim's ticket.
    sendmail(env.srv.smtp_port, mail("Re: private", "let me in", "<priv-2@example.org>",
                                     sender="lee@example.org",
                                     headers="In-Reply-To: <priv-1@example.org>\r\n"),
             sender="lee@example.org")
    assert msg_ticket(env.db, "<priv-2@example.org>") != number
    # A bounce of it (machine mail) does join, without reopening anything.
    sendmail(env.srv.smtp_port, mail("Undelivered Mail Returned to Sender", "bounced",
                                     "<priv-3@example.org>", sender="MAILER-DAEMON@mx.example.org",
                                     headers="Auto-Submitted: auto-replied\r\n"
                                             "In-Reply-To: <priv-1@example.org>\r\n"),
             sender="")
    assert msg_ticket(env.db, "<priv-3@example.org>") == number


def test_human_mail_with_a_bounce_like_subject_opens_a_ticket(env):
    sendmail(env.srv.smtp_port, mail("Delivery failure: my parcel never came", "where is it?",
                                     "<parcel-1@example.org>", sender="mo@example.org"),
             sender="mo@example.org")
    number = msg_ticket(env.db, "<parcel-1@example.org>")
    assert rows(env.db, f"SELECT status, tags FROM tickets WHERE number = {number}") == \
        [["new", "{}"]]
    replies_to(env, "mo@example.org", 1)


def test_one_copy_per_channel_however_many_of_its_addresses(env):
    rcpts = [ADDRESS] + [f"support+{i}@acme.example" for i in range(30)]
    with smtplib.LMTP("127.0.0.1", env.srv.lmtp_port, timeout=30) as s:
        s.ehlo("test.example")
        s.mail("nat@example.org")
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        replies = [s.data(mail("many", "named many times", "<many-1@example.org>",
                               sender="nat@example.org"))]
        replies += [s.getreply() for _ in rcpts[1:]]
    assert [r[0] for r in replies] == [250] * len(rcpts)
    assert one(env.db, "SELECT count(*) FROM messages WHERE external_id = '<many-1@example.org>'") \
        == "1"


def test_unkeyable_sender_falls_back_to_the_envelope(env):
    long_from = "x" * 400 + "@example.org"
    sendmail(env.srv.smtp_port, mail("long from", "sender too long", "<long-1@example.org>",
                                     sender=long_from), sender="real@example.org")
    number = msg_ticket(env.db, "<long-1@example.org>")
    assert rows(env.db, "SELECT i.value FROM customer_identities i JOIN tickets t"
                        " ON t.customer_id = i.customer_id AND t.tenant_id = i.tenant_id"
                        f" WHERE t.number = {number}") == [["real@example.org"]]


def test_an_address_belongs_to_one_channel_of_all_tenants(env):
    cli_tenant(env.db, "other", "Other Ltd")
    cli_agent(env.db, "adm@other.example", "other", "admin")
    adm2 = api_login(env.srv, "adm@other.example")
    r = adm2.post("tenants/other/channels", {"type": "email", "name": "steal",
                                               "settings": {"address": ["SUPPORT@acme.example"]}})
    assert r.status == 409, r.body
    ok = expect(adm2.post("tenants/other/channels", {"type": "email", "name": "own",
                                                      "settings": {"address": "help@other.example"}}),
                201)
    # Nor by changing a channel's settings later.
    r = adm2.request("PATCH", f"tenants/other/channels/{ok['id']}",
                     {"type": "email", "settings": {"address": [ADDRESS]}})
    assert r.status == 409, r.body
    # Mail to acme's address still reaches acme.
    sendmail(env.srv.smtp_port, mail("still mine", "to acme", "<own-addr-1@example.org>"))
    assert one(env.db, "SELECT t.slug FROM messages m JOIN tenants t ON t.id = m.tenant_id"
                       " WHERE m.external_id = '<own-addr-1@example.org>'") == T


def test_tag_of_someone_elses_ticket_opens_a_new_ticket(env):
    sendmail(env.srv.smtp_port, mail("mine", "first", "<own-1@example.org>",
                                     sender="frank@example.org"), sender="frank@example.org")
    number = msg_ticket(env.db, "<own-1@example.org>")
    sendmail(env.srv.smtp_port, mail(f"hijack [#{number}]", "not yours", "<own-2@example.org>",
                                     sender="mallory@example.org"), sender="mallory@example.org")
    assert msg_ticket(env.db, "<own-2@example.org>") != number


def test_out_of_office_reply_joins_the_ticket_without_opening_one(env):
    sendmail(env.srv.smtp_port, mail("Order 77", "where is my order?", "<ooo-1@example.org>",
                                     sender="gina@example.org"), sender="gina@example.org")
    number = msg_ticket(env.db, "<ooo-1@example.org>")
    acks = replies_to(env, "gina@example.org", 1)
    ack_id = acks[0]["Message-ID"]
    tickets = one(env.db, "SELECT count(*) FROM tickets")
    # Gina's out-of-office answers our acknowledgement.
    sendmail(env.srv.smtp_port,
             mail("Automatic reply: Order 77", "I am away until Monday.", "<ooo-2@example.org>",
                  sender="gina@example.org",
                  headers=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {ack_id}\r\n"),
             sender="gina@example.org")
    assert msg_ticket(env.db, "<ooo-2@example.org>") == number
    assert one(env.db, "SELECT auto_submitted FROM messages WHERE external_id = '<ooo-2@example.org>'") == "t"
    assert one(env.db, "SELECT count(*) FROM tickets") == tickets
    # An out-of-office answering nothing we know is kept on a closed ticket,
    # and never acknowledged.
    sendmail(env.srv.smtp_port,
             mail("Out of Office", "I am away.", "<ooo-3@example.org>", sender="henry@example.org",
                  headers="X-Autoreply: yes\r\nPrecedence: auto_reply\r\n"),
             sender="henry@example.org")
    n3 = msg_ticket(env.db, "<ooo-3@example.org>")
    assert rows(env.db, f"SELECT status, tags FROM tickets WHERE number = {n3}") == \
        [["closed", "{auto-submitted}"]]
    time.sleep(3)
    assert [m for m in env.catcher.parsed() if "henry@" in str(m["To"])] == []
    assert len([m for m in env.catcher.parsed() if "gina@" in str(m["To"])]) == 1


def test_relay_refusals_retry_then_fail(env):
    sendmail(env.srv.smtp_port, mail("relay", "relay test", "<rl-1@example.org>",
                                     sender="ivan@example.org"), sender="ivan@example.org")
    number = msg_ticket(env.db, "<rl-1@example.org>")
    replies_to(env, "ivan@example.org", 1)
    with env.catcher.lock:
        env.catcher.refuse += [("ivan@", "451 4.3.0 try later"), ("ivan@", "554 5.7.1 refused")]
    m = expect(env.adm.post(f"tenants/{T}/tickets/{number}/messages",
                            {"kind": "reply", "text": "will be refused"}), 201)
    wait_until(lambda: one(env.db, f"SELECT delivery_status FROM messages WHERE id = {m['id']}")
               == "failed", 60, message="a 5xx after a 4xx fails the reply")
    err = one(env.db, f"SELECT delivery_error FROM messages WHERE id = {m['id']}")
    assert "554" in err or "refused" in err


# ---------------------------------------------------------------------------
# nothing lost
# ---------------------------------------------------------------------------

def test_database_down_means_451_then_stored_once(pg_cluster_factory, start_server):
    cluster = pg_cluster_factory()
    assert run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": cluster.url}).returncode == 0
    cli_tenant(cluster.url, T, "Acme Mail")
    cli_agent(cluster.url, "adm@mail.example", T, "admin")
    catcher = Catcher()
    try:
        srv = start(cluster.url, start_server, catcher)
        e = Env()
        e.db, e.srv, e.adm, e.catcher, e.channels = cluster.url, srv, \
            api_login(srv, "adm@mail.example"), catcher, []
        new_channel(e)
        wait_until(lambda: smtp_rcpt_ok(srv.smtp_port, ADDRESS), 20)
        raw = mail("while down", "database is down", "<down-1@example.org>")
        cluster.stop()
        with pytest.raises(smtplib.SMTPDataError) as exc:
            sendmail(srv.smtp_port, raw)
        assert exc.value.smtp_code == 451
        cluster.start()
        wait_until(lambda: try_send(srv.smtp_port, raw), 30, message="accepted once it is back")
        sendmail(srv.smtp_port, raw)
        assert one(cluster.url, "SELECT count(*) FROM messages"
                                " WHERE external_id = '<down-1@example.org>'") == "1"
    finally:
        catcher.close()


def try_send(port, raw):
    try:
        sendmail(port, raw)
        return True
    except smtplib.SMTPException:
        return False


# ---------------------------------------------------------------------------
# a real MTA: postfix hands mail to the LMTP listener
# ---------------------------------------------------------------------------

POSTFIX = "/usr/sbin/postfix"

# Postfix's services, none chrooted, with smtpd on a loopback port of the test's.
POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
tlsmgr     unix - - n 1000? 1 tlsmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp       unix - - n - - smtp
relay      unix - - n - - smtp
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
lmtp       unix - - n - - lmtp
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A throwaway postfix on loopback whose only destination, acme.example,
    is the server's LMTP listener; it retries deferred mail every second
    or two.  Stopped with `postfix stop` (its master's PID file)."""

    def __init__(self, lmtp_port):
        # Its daemons run as user postfix: pytest's tmp_path (0700) is out of their reach.
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="sbpostfix."))
        os.chmod(self.base, 0o755)
        conf, queue, data = self.base / "etc", self.base / "spool", self.base / "lib"
        for d in (conf, queue, data):
            d.mkdir(parents=True)
        shutil.chown(data, "postfix", "postfix")
        self.port = free_port()
        (conf / "master.cf").write_text(POSTFIX_MASTER.format(port=self.port))
        (conf / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
myhostname = mta.test.example
mydomain = test.example
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
relay_domains = acme.example
transport_maps = inline:{{ acme.example=lmtp:inet:127.0.0.1:{lmtp_port} }}
smtpd_relay_restrictions = permit_mynetworks, reject
mynetworks = 127.0.0.0/8
maillog_file = {self.base}/maillog
maillog_file_prefixes = {self.base}
smtputf8_enable = no
lmtp_destination_concurrency_limit = 4
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        self.cmd = ["postfix", "-c", str(conf)]

    def __enter__(self):
        cp = subprocess.run(self.cmd + ["start"], capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            self.__exit__()
            raise AssertionError(f"postfix did not start: {cp.stdout}{cp.stderr}")
        wait_until(lambda: port_open(self.port), 30, message="postfix listens")
        return self

    def __exit__(self, *exc):
        subprocess.run(self.cmd + ["stop"], capture_output=True, timeout=60)
        pid = self.base / "spool" / "pid" / "master.pid"
        deadline = time.time() + 15
        while pid.exists() and time.time() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self):
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.skipif(not os.path.exists(POSTFIX), reason="postfix is not installed")
def test_postfix_delivers_over_lmtp(env):
    with Postfix(env.srv.lmtp_port) as pf:
        for i in range(3):
            sendmail(pf.port, mail(f"via postfix {i}", f"relayed by postfix {i}",
                                   f"<pf-{i}@example.org>", sender="jane@example.org"),
                     sender="jane@example.org")
        for i in range(3):
            wait_until(lambda i=i: msg_ticket(env.db, f"<pf-{i}@example.org>"), 60,
                       message=f"postfix delivered message {i}")
        assert "status=sent" in pf.log() and "lmtp" in pf.log()


@pytest.mark.skipif(not os.path.exists(POSTFIX), reason="postfix is not installed")
def test_postfix_keeps_mail_while_the_database_is_down(pg_cluster_factory, start_server):
    """451 while PostgreSQL is down: postfix keeps the mail in its queue and
    delivers it once the database is back, and it is stored once."""
    cluster = pg_cluster_factory()
    assert run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": cluster.url}).returncode == 0
    cli_tenant(cluster.url, T, "Acme Mail")
    cli_agent(cluster.url, "adm@mail.example", T, "admin")
    catcher = Catcher()
    try:
        srv = start(cluster.url, start_server, catcher)
        e = Env()
        e.db, e.srv, e.adm, e.catcher, e.channels = cluster.url, srv, \
            api_login(srv, "adm@mail.example"), catcher, []
        new_channel(e)
        wait_until(lambda: lmtp_rcpt_ok(srv.lmtp_port, ADDRESS), 20)
        with Postfix(srv.lmtp_port) as pf:
            cluster.stop()
            sendmail(pf.port, mail("queued", "kept by postfix", "<pfq-1@example.org>",
                                   sender="quinn@example.org"), sender="quinn@example.org")
            wait_until(lambda: "status=deferred" in pf.log(), 60,
                       message="postfix deferred the mail (451)")
            assert "4.3.0" in pf.log()
            cluster.start()
            wait_until(lambda: "status=sent" in pf.log(), 90,
                       message="postfix delivered the mail once the database was back")
        assert one(cluster.url, "SELECT count(*) FROM messages"
                                " WHERE external_id = '<pfq-1@example.org>'") == "1"
    finally:
        catcher.close()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# the corpus: real-world mail through the listener into the database
# ---------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus_dir():
    """../shared/corpus/email: SWITCHBOARD_TEST_CORPUS (the corpus folder)
    when set, else next to the checkout, else the workspace's."""
    for top in (os.environ.get("SWITCHBOARD_TEST_CORPUS"),
                os.path.join(ROOT, "..", "shared", "corpus"), "/work/shared/corpus"):
        if top and os.path.isfile(os.path.join(top, "email", "EXPECTED.tsv")):
            return os.path.join(top, "email")
    return None


CORPUS = corpus_dir()


def expected():
    with open(os.path.join(CORPUS, "EXPECTED.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:] if line.strip()]


def squash(s):
    return " ".join((s or "").replace("\\n", " ").split())


@pytest.mark.skipif(CORPUS is None, reason="no email corpus")
def test_corpus_through_the_listener(env):
    # The corpus holds two pairs of messages that share a Message-ID: the
    # second of each goes to another channel, where it is not a duplicate.
    chans = [new_channel(env, addresses=[f"corpus{i}@acme.example"]) for i in (1, 2)]
    for i in (1, 2):
        wait_until(lambda i=i: smtp_rcpt_ok(env.srv.smtp_port, f"corpus{i}@acme.example"), 20)
    seen = set()
    for exp in expected():
        with open(os.path.join(CORPUS, exp["file"]), "rb") as f:
            raw = f.read()
        mid = exp["message_id"]
        to = "corpus2@acme.example" if mid and mid in seen else "corpus1@acme.example"
        seen.add(mid)
        # Every message is acknowledged, none refused, none crashes the server.
        assert sendmail(env.srv.smtp_port, raw, rcpts=[to], sender="") == {}, exp["file"]
    got = rows(env.db,
        "SELECT m.external_id, translate(t.subject, E'\\n\\r|', '   '),"
        " coalesce((SELECT i.value FROM customer_identities i"
        "  WHERE i.tenant_id = t.tenant_id AND i.customer_id = t.customer_id AND i.kind = 'email'"
        "  ORDER BY i.id LIMIT 1), ''),"
        " (SELECT count(*) FROM attachments a WHERE a.tenant_id = m.tenant_id"
        "  AND a.message_id = m.id), m.auto_submitted, t.status"
        " FROM messages m JOIN tickets t ON t.tenant_id = m.tenant_id AND t.id = m.ticket_id"
        f" WHERE m.channel_id IN ({chans[0]['id']}, {chans[1]['id']}) AND m.direction = 'inbound'")
    # Each message opened its own ticket (none answers another): one row each.
    assert len(got) == len(expected()), [r[:3] for r in got]
    for exp in expected():
        name, mid = exp["file"], exp["message_id"]
        # Mail without a Message-ID is stored under a hash of its bytes.
        found = [r for r in got if r[0] == mid] if mid else \
            [r for r in got if r[0].endswith("@hash.switchboard.invalid>")]
        assert found, f"{name}: no message stored under {mid}"
        match = [r for r in found
                 if (not exp["subject_utf8"] or squash(r[1]) == squash(exp["subject_utf8"]))
                 and (exp["from_addr"] in ("", "(none)") or r[2] == exp["from_addr"].lower())
                 and int(r[3]) == int(exp["n_attachments"])]
        assert match, f"{name}: expected {exp}, stored {found}"
    # The machine mail among them opened nothing: kept on closed tickets.
    assert all(r[5] == "closed" for r in got if r[4] == "t")
    # Russian and Arabic words are found by the tickets search.
    subjects = {}
    for word, file in (("поживаешь", "27-"), ("Вопрос", "23-"), ("عميلنا", "42-")):
        items = expect(env.adm.get(f"tenants/{T}/tickets", q=word), 200)["items"] + \
            expect(env.adm.get(f"tenants/{T}/tickets", q=word, status="closed"), 200)["items"]
        subjects[file] = [t["subject"] for t in items]
    for exp in expected():
        for prefix, found in subjects.items():
            if exp["file"].startswith(prefix):
                assert any(squash(s) == squash(exp["subject_utf8"]) for s in found), \
                    (prefix, found)


# ---------------------------------------------------------------------------
# IMAP: a real Dovecot, across restarts of both sides
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/usr/sbin/dovecot"), reason="dovecot is not installed")
def test_imap_fetches_each_message_once_across_restarts(database, start_server, tmp_path):
    from mailpeers import Dovecot

    datadir = tempfile.mkdtemp(prefix="sbdata.")     # the same sealing key after a restart
    env = {"SWITCHBOARD_DATA_DIR": datadir, "SWITCHBOARD_EMAIL_IMAP_INTERVAL": "1",
           "SWITCHBOARD_SMTP_LISTEN": f"127.0.0.1:{free_port()}"}

    def stored():
        return rows(database, "SELECT external_id, count(*) FROM messages"
                              " WHERE direction = 'inbound' GROUP BY 1 ORDER BY 1")

    def want(n):
        return [[f"<imap-{i}@example.org>", "1"] for i in sorted(range(1, n + 1), key=str)]

    try:
        with Dovecot(tmp_path, user="support", password="imap-secret") as dc:
            srv = start_server(database, env=env)
            cli_tenant(database, T, "Acme Mail")
            cli_agent(database, "adm@mail.example", T, "admin")
            adm = api_login(srv, "adm@mail.example")
            ch = expect(adm.post(f"tenants/{T}/channels", {
                "type": "email", "name": "imap",
                "settings": {"address": "imap@acme.example",
                             "imap": {"url": dc.url, "username": "support", "after": "seen"}},
                "secrets": {"imap_password": "imap-secret"}}), 201)
            for i in (1, 2, 3):
                dc.deliver(mail(f"imap {i}", f"fetched {i}", f"<imap-{i}@example.org>"))
            wait_until(lambda: stored() == want(3), 30, message="three messages fetched")
            wait_until(lambda: '"last_uid": 3' in psql(
                database, f"SELECT state FROM channels WHERE id = {ch['id']}"), 10,
                message="the mailbox's position saved")
            # Switchboard restarts; mail arrives meanwhile.
            srv.stop()
            for i in (4, 5):
                dc.deliver(mail(f"imap {i}", f"fetched {i}", f"<imap-{i}@example.org>"))
            srv = start_server(database, env=env, migrate=False)
            wait_until(lambda: stored() == want(5), 30, message="the two new ones fetched")
            # Dovecot restarts; mail arrives while it is down and after.
            dc.stop()
            dc.deliver(mail("imap 6", "fetched 6", "<imap-6@example.org>"))
            time.sleep(2)
            dc.start()
            dc.deliver(mail("imap 7", "fetched 7", "<imap-7@example.org>"))
            wait_until(lambda: stored() == want(7), 40, message="every message fetched")
            assert len(dc.uids()) == 7
            assert all("\\Seen" in f for f in dc.flags().values())
            assert "fetched again" not in srv.log_text()
            # A message too large to fetch does not stop the mailbox: a note
            # of it is stored, and the next message comes in after it.
            line = b"y" * 78 + b"\r\n"
            dc.deliver(mail("huge", "see below", "<imap-huge@example.org>") + line * (870 << 10))
            dc.deliver(mail("imap 8", "fetched 8", "<imap-8@example.org>"))
            wait_until(lambda: ["<imap-8@example.org>", "1"] in stored(), 60,
                       message="the message after the huge one fetched")
            assert one(database, "SELECT count(*) FROM messages WHERE body_text LIKE"
                                 " 'The mailbox of this channel holds a message of %'") == "1"
            assert one(database, "SELECT count(*) FROM messages"
                                 " WHERE external_id = '<imap-huge@example.org>'") == "0"
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.mark.skipif(not os.path.exists("/usr/sbin/dovecot"), reason="dovecot is not installed")
def test_imap_channels_are_shared_out_among_workers(database, start_server, tmp_path):
    """Two workers, two channels reading one mailbox: each channel is
    polled by one worker only, so each stores every message once and no
    worker fetches what another already stored."""
    from mailpeers import Dovecot

    with Dovecot(tmp_path, user="support", password="imap-secret") as dc:
        srv = start_server(database, workers=2, env={
            "SWITCHBOARD_EMAIL_IMAP_INTERVAL": "1",
            "SWITCHBOARD_SMTP_LISTEN": f"127.0.0.1:{free_port()}"})
        cli_tenant(database, T, "Acme Mail")
        cli_agent(database, "adm@mail.example", T, "admin")
        adm = api_login(srv, "adm@mail.example")
        chans = [expect(adm.post(f"tenants/{T}/channels", {
            "type": "email", "name": f"imap {i}",
            "settings": {"address": f"imap{i}@acme.example",
                         "imap": {"url": dc.url, "username": "support", "after": "none"}},
            "secrets": {"imap_password": "imap-secret"}}), 201) for i in (1, 2)]
        for i in range(1, 6):
            dc.deliver(mail(f"shared {i}", f"shared {i}", f"<shared-{i}@example.org>"))

        def per_channel():
            return rows(database, "SELECT channel_id, count(*), count(DISTINCT external_id)"
                                  " FROM messages WHERE direction = 'inbound' GROUP BY 1 ORDER BY 1")
        want = [[str(c["id"]), "5", "5"] for c in chans]
        wait_until(lambda: per_channel() == want, 40, message="both channels fetched all five")
        time.sleep(3)    # a few more polls of each
        assert per_channel() == want
        assert "fetched again" not in srv.log_text()
