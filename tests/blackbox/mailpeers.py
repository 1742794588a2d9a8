"""Real mail peers on loopback for black-box tests: a throwaway Dovecot
(IMAP) and postfix's smtp-sink (SMTP), each on a free 127.0.0.1 port.

    from mailpeers import Dovecot, SmtpSink

    with Dovecot(tmp_path) as imap:
        imap.deliver(b"From: a@example.org\\r\\n\\r\\nhi\\r\\n")
        imap.url          # "imap://127.0.0.1:<port>/INBOX"
        imap.uids()       # [1]

    with SmtpSink(tmp_path, soft="RCPT") as smtp:   # 4xx to every RCPT
        smtp.url, smtp.messages()

Nothing under /etc/dovecot or /etc/postfix is read: Dovecot runs with a
config file written here (-c), which includes nothing.  Processes are
stopped by their PID (and their own process group); only the standard
library is used.
"""

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DOVECOT = "/usr/sbin/dovecot"
SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, timeout, log=None):
    """Wait until 127.0.0.1:port accepts; fail early if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}" + _log_tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(1):  # a greeting: the service is really up
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} did not listen on port {port} within {timeout}s"
                       + _log_tail(log))


def _log_tail(path, n=30):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "\n" + "".join(f.readlines()[-n:])


def _stop(proc, timeout=10):
    """Stop a process we started (TERM, then KILL), and its process group."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Children (Dovecot's imap, auth...) were started in the group we made.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _traversable_by(path, uid, gid):
    """Whether every directory down to path can be entered by uid/gid."""
    if uid == os.geteuid():
        return True
    path = os.path.abspath(path)
    while True:
        st = os.stat(path)
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _unprivileged():
    """(uid, gid, user name) the mail processes run as: nobody when root
    (Dovecot refuses UID 0 for mail), otherwise ourselves."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def _private_dir(tmpdir, prefix, uid, gid):
    """A fresh directory under tmpdir, or under the system's temporary
    directory when the unprivileged user cannot reach tmpdir (pytest's
    /tmp/pytest-of-root is 0700).  Returns (path, owned): owned means it
    is not under tmpdir and is removed on cleanup."""
    tmpdir = str(tmpdir)
    os.makedirs(tmpdir, exist_ok=True)
    base, owned = tmpdir, False
    if not _traversable_by(tmpdir, uid, gid):
        base, owned = tempfile.gettempdir(), True
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o755)
    return path, owned


class Dovecot:
    """A throwaway Dovecot serving IMAP (no TLS, plaintext LOGIN allowed) for
    one user on 127.0.0.1:<port>, mail in <dir>/home/Maildir.

    Stop and start again keep the Maildir and the port, and with them
    the mailboxes' UIDVALIDITY."""

    def __init__(self, tmpdir, user="support", password="secret", port=None):
        self.user = user
        self.password = password
        self.port = port or free_port()
        self.uid, self.gid, self.mail_user = _unprivileged()
        self.dir, self._owned = _private_dir(tmpdir, "dovecot-", self.uid, self.gid)
        self._tmpdir = str(tmpdir)
        self.home = os.path.join(self.dir, "home")
        self.maildir = os.path.join(self.home, "Maildir")
        self.log = os.path.join(self.dir, "dovecot.log")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.proc = None
        self._seq = 0
        os.makedirs(self.home)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.maildir, sub))
        self._chown_tree(self.home)
        self._write_config()

    @property
    def url(self):
        return f"imap://127.0.0.1:{self.port}/INBOX"

    def url_for(self, mailbox):
        from urllib.parse import quote
        return f"imap://127.0.0.1:{self.port}/{quote(mailbox, safe='')}"

    def _write_config(self):
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            f.write(f"{self.user}:{{PLAIN}}{self.password}:{self.uid}:{self.gid}::{self.home}::\n")
        os.chmod(passwd, 0o644)
        if os.geteuid() == 0:
            internal, login = "dovecot", "dovenull"
        else:
            internal = login = self.mail_user
        conf = f"""# Written by tests/blackbox/mailpeers.py; includes nothing from /etc/dovecot.
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    def _chown_tree(self, top):
        if os.geteuid() != 0:
            return
        for root, dirs, files in os.walk(top):
            os.chown(root, self.uid, self.gid)
            for name in files:
                os.chown(os.path.join(root, name), self.uid, self.gid)

    def start(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(os.path.join(self.dir, "dovecot.out"), "ab") as out:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        try:
            _wait_port(self.port, self.proc, timeout, self.log)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        _stop(self.proc)
        self.proc = None
        # The master removes its pid file on exit; a new one refuses to start while it is there.
        pidfile = os.path.join(self.dir, "run", "master.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)

    def cleanup(self):
        self.stop()
        if self._owned:
            try:
                shutil.copy(self.log, os.path.join(self._tmpdir, f"dovecot-{self.port}.log"))
            except OSError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- mail -------------------------------------------------------------

    def folder_path(self, folder="INBOX"):
        """The Maildir++ directory of folder (created with its cur/new/tmp)."""
        if folder.upper() == "INBOX":
            return self.maildir
        path = os.path.join(self.maildir, "." + folder)
        if not os.path.isdir(path):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            open(os.path.join(path, "maildirfolder"), "w").close()
            self._chown_tree(path)
        return path

    def deliver(self, raw, folder="INBOX", flags=None):
        """Deliver raw (bytes) as a new message: written under tmp/ and
        renamed into new/, as a Maildir delivery agent does.  With flags
        (Maildir letters, e.g. "S" for \\Seen) it goes to cur/ instead."""
        path = self.folder_path(folder)
        self._seq += 1
        now = time.time()
        name = (f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{self._seq}."
                f"{socket.gethostname().replace('/', '_').replace(':', '_')}")
        tmp = os.path.join(path, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if os.geteuid() == 0:
            os.chown(tmp, self.uid, self.gid)
        if flags is None:
            os.rename(tmp, os.path.join(path, "new", name))
        else:
            os.rename(tmp, os.path.join(path, "cur", f"{name}:2,{''.join(sorted(flags))}"))
        return name

    def forget_uids(self, folder="INBOX"):
        """Make the folder's UIDVALIDITY change: remove its uidlist and
        indexes (Dovecot stopped meanwhile).  The Maildir's
        dovecot-uidvalidity stays, so the new value is a new one."""
        running = self.proc is not None and self.proc.poll() is None
        self.stop()
        path = self.folder_path(folder)
        for name in os.listdir(path):
            if name == "dovecot-uidlist" or name.startswith("dovecot.index"):
                os.unlink(os.path.join(path, name))
        if running:
            self.start()

    # -- inspection through IMAP --------------------------------------------

    def imap(self):
        """A logged-in imaplib client (the caller logs out)."""
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        c.login(self.user, self.password)
        return c

    def _select(self, c, folder):
        typ, data = c.select(_imap_quote(folder), readonly=True)
        if typ != "OK":
            raise RuntimeError(f"could not select {folder!r}: {data!r}")

    def uids(self, folder="INBOX"):
        """The folder's UIDs, ascending."""
        c = self.imap()
        try:
            self._select(c, folder)
            typ, data = c.uid("SEARCH", None, "ALL")
            return sorted(int(x) for x in data[0].split())
        finally:
            c.logout()

    def flags(self, folder="INBOX"):
        """{uid: set of flags} for the folder's messages, without \\Recent
        (which belongs to whichever session saw the message first)."""
        c = self.imap()
        try:
            self._select(c, folder)
            typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
            out = {}
            for item in data:
                if not item:
                    continue
                text = item.decode() if isinstance(item, bytes) else item[0].decode()
                uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
                flags = text.split("FLAGS (", 1)[1].split(")", 1)[0].split()
                out[uid] = set(flags) - {"\\Recent"}
            return out
        finally:
            c.logout()

    def messages(self, folder="INBOX"):
        """{uid: raw bytes}, read without setting \\Seen."""
        c = self.imap()
        try:
            self._select(c, folder)
            typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            out = {}
            for item in data:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    uid = int(head.split("UID ", 1)[1].split()[0])
                    out[uid] = item[1]
            return out
        finally:
            c.logout()

    def uidvalidity(self, folder="INBOX"):
        c = self.imap()
        try:
            typ, data = c.status(_imap_quote(folder), "(UIDVALIDITY)")
            return int(data[0].decode().split("UIDVALIDITY ", 1)[1].split(")")[0])
        finally:
            c.logout()

    def folders(self):
        c = self.imap()
        try:
            typ, data = c.list()
            return [line.decode().rsplit(" ", 1)[1].strip('"') for line in data if line]
        finally:
            c.logout()


def _imap_quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SmtpSink:
    """postfix's smtp-sink on 127.0.0.1:<port>, saving each message it
    accepts to a file.  soft / hard name SMTP commands ("RCPT", "DATA",
    "MAIL", ".") that it answers with soft_reply (4xx) / hard_reply (5xx)."""

    def __init__(self, tmpdir, soft=None, hard=None, soft_reply=None, hard_reply=None,
                 port=None):
        self.port = port or free_port()
        self.uid, self.gid, self.user = _unprivileged()
        self.dir, self._owned = _private_dir(tmpdir, "smtp-sink-", self.uid, self.gid)
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.spool)
        if os.geteuid() == 0:
            os.chown(self.spool, self.uid, self.gid)
        self.args = [SMTP_SINK]
        if os.geteuid() == 0:
            self.args += ["-u", self.user]  # required when started as root
        if soft:
            self.args += ["-r", soft]
        if hard:
            self.args += ["-f", hard]
        if soft_reply:
            self.args += ["-b", soft_reply]
        if hard_reply:
            self.args += ["-B", hard_reply]
        self.args += ["-d", os.path.join(self.spool, "m."), f"127.0.0.1:{self.port}", "16"]
        self.proc = None

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def start(self, timeout=20):
        out = open(os.path.join(self.dir, "smtp-sink.out"), "ab")
        with out:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, start_new_session=True)
        try:
            _wait_port(self.port, self.proc, timeout, os.path.join(self.dir, "smtp-sink.out"))
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        _stop(self.proc)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self._owned:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def dumps(self):
        """[(envelope dict, message bytes)] in the order received.  The
        message is as smtp-sink saved it: dot-unstuffed, lines ending in
        LF (it does not keep CR)."""
        files = [os.path.join(self.spool, n) for n in os.listdir(self.spool)]
        files.sort(key=lambda p: (os.stat(p).st_mtime_ns, p))
        return [_parse_dump(open(p, "rb").read()) for p in files]

    def messages(self):
        """The received messages (bytes, LF line ends), in order."""
        return [m for _, m in self.dumps()]


def _parse_dump(data):
    """Split an smtp-sink dump into its X- records and the message."""
    lines = data.split(b"\n")
    env = {"mail": None, "rcpt": []}
    i = 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        key, _, value = lines[i].partition(b": ")
        if key == b"X-Mail-Args":
            env["mail"] = value.decode(errors="replace")
        elif key == b"X-Rcpt-Args":
            env["rcpt"].append(value.decode(errors="replace"))
        i += 1
    if i < len(lines) and lines[i].startswith(b"Received: "):
        i += 1
        while i < len(lines) and lines[i][:1] in (b"\t", b" "):
            i += 1
    body = b"\n".join(lines[i:])
    # The dump ends with an empty line after the message's last line.
    if body.endswith(b"\n\n"):
        body = body[:-1]
    return env, body
