"""Shared fixtures and helpers for Switchboard's black-box tests.

Environment (set by tests/run, all optional here):
  SWITCHBOARD_BIN                path of the server binary
                                 (default: <repo>/build/server/switchboard)
  SWITCHBOARD_TEST_PGBIN         PostgreSQL server bin dir
                                 (default: /usr/lib/postgresql/15/bin)
  SWITCHBOARD_TEST_DATABASE_URL  libpq URI of a running throwaway cluster
                                 (superuser postgres, trust); when missing a
                                 private session cluster is started here.
  SWITCHBOARD_TEST_TIMEOUT       per-test wall-clock limit of the test body
                                 in seconds (default 180; a deadline, never
                                 an assertion on speed).

Only the standard library and pytest are used.
"""

import http.client
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SWITCHBOARD_BIN = os.environ.get("SWITCHBOARD_BIN") or os.path.join(
    REPO, "build", "server", "switchboard")
PGBIN = os.environ.get("SWITCHBOARD_TEST_PGBIN") or "/usr/lib/postgresql/15/bin"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")

IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rand_suffix(n=10):
    return "".join(random.choice(string.ascii_lowercase + string.digits)
                   for _ in range(n))


def wait_until(predicate, timeout, interval=0.1, message="condition"):
    """Poll predicate() until it returns a truthy value; return that value.

    Raises AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{extra}")
        time.sleep(interval)


def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])


def clean_env(extra=None):
    """The process environment minus every SWITCHBOARD_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def run_cli(args, env_extra=None, timeout=60, check_sanitizers=True, input=None):
    """Run `$SWITCHBOARD_BIN args...`; return subprocess.CompletedProcess (text).

    The environment has no SWITCHBOARD_* variables except those in env_extra.
    Fails the test if the process does not exit within `timeout` seconds or
    if its stderr carries a sanitizer report."""
    cmd = [SWITCHBOARD_BIN] + [str(a) for a in args]
    # own session, so that on a timeout the whole group (workers too) is killed
    proc = subprocess.Popen(cmd, env=clean_env(env_extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        pytest.fail(f"{cmd!r} did not exit within {timeout}s; stderr tail:\n{tail(err)}")
    finally:
        # nothing it started may outlive it
        if group_members(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    cp = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check_sanitizers:
        found = sanitizer_reports(cp.stderr)
        if found:
            pytest.fail(f"sanitizer report {found} in stderr of {cmd!r}:\n{tail(cp.stderr, 200)}")
    return cp


def psql(url, sql, check=True):
    """Run one SQL command through psql; return stdout (unaligned, tuples only)."""
    exe = os.path.join(PGBIN, "psql")
    if not os.path.exists(exe):
        exe = shutil.which("psql") or "/usr/bin/psql"
    cp = subprocess.run([exe, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                         "-d", url, "-c", sql],
                        capture_output=True, text=True, timeout=60,
                        stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise RuntimeError(f"psql failed ({cp.returncode}) for {sql!r}: {cp.stderr}")
    return cp.stdout


def url_with_dbname(url, dbname):
    """Return libpq connection string `url` pointing at database `dbname`."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k != "dbname"]
        out = f"{parts.scheme}://{parts.netloc}/{dbname}"
        if query:
            out += "?" + urllib.parse.urlencode(query, safe="/")
        return out
    # key=value form: a later keyword wins
    return f"{url} dbname={dbname}"


def create_database(admin_url):
    name = "sb_test_" + rand_suffix()
    psql(admin_url, f"CREATE DATABASE {name}")
    return name, url_with_dbname(admin_url, name)


def drop_database(admin_url, name):
    try:
        psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except Exception as e:  # noqa: BLE001 - cleanup must not mask test results
        print(f"warning: could not drop database {name}: {e}")


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

def _read_stat(pid):
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def _all_pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def children_of(pid, include_zombies=False):
    """PIDs whose parent is `pid` (found by scanning /proc)."""
    out = []
    for p in _all_pids():
        st = _read_stat(p)
        if st and st[1] == pid and (include_zombies or st[0] != "Z"):
            out.append(p)
    return sorted(out)


def group_members(pgid):
    """Live (non-zombie) processes in process group `pgid`."""
    out = []
    for p in _all_pids():
        st = _read_stat(p)
        if st and st[2] == pgid and st[0] != "Z":
            out.append(p)
    return sorted(out)


def pid_alive(pid):
    st = _read_stat(pid)
    return st is not None and st[0] != "Z"


# ---------------------------------------------------------------------------
# PostgreSQL clusters
# ---------------------------------------------------------------------------

class PgCluster:
    """A private PostgreSQL cluster in a temp dir, listening on a Unix socket only."""

    def __init__(self, pgbin=PGBIN):
        self.pgbin = pgbin
        self.base = tempfile.mkdtemp(prefix="sbpg.")
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.sockdir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        os.mkdir(self.sockdir, 0o755)
        if IS_ROOT:
            pw = pwd.getpwnam("postgres")
            for p in (self.base, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.running = False
        self.url = (f"postgresql:///postgres?host={self.sockdir}"
                    f"&port={self.port}&user=postgres")
        self._run([os.path.join(pgbin, "initdb"), "-D", self.data, "-A", "trust",
                   "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])

    def _run(self, args, timeout=120):
        if IS_ROOT:
            args = ["runuser", "-u", "postgres", "--"] + args
        cp = subprocess.run(args, cwd=self.base, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
        if cp.returncode != 0:
            log = ""
            try:
                with open(self.logfile, errors="replace") as f:
                    log = tail(f.read(), 30)
            except OSError:
                pass
            raise RuntimeError(f"{args!r} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n{log}")
        return cp

    def start(self):
        opts = (f"-k {self.sockdir} -c listen_addresses='' -c fsync=off "
                f"-p {self.port}")
        self._run([os.path.join(self.pgbin, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                   "-o", opts, "-w", "-t", "60", "start"])
        self.running = True

    def stop(self, mode="fast"):
        self._run([os.path.join(self.pgbin, "pg_ctl"), "-D", self.data, "-m", mode,
                   "-w", "-t", "60", "stop"])
        self.running = False

    def cleanup(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self.stop("immediate")
            except Exception as e:  # noqa: BLE001
                print(f"warning: could not stop cluster in {self.base}: {e}")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cluster_url():
    """Admin URL of the cluster that `database` creates databases on."""
    url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    if url:
        yield url
        return
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_cluster_factory():
    """Call it to get a started private PgCluster (.url, .stop(), .start())."""
    clusters = []

    def make(start=True):
        c = PgCluster()
        clusters.append(c)
        if start:
            c.start()
        return c

    yield make
    for c in clusters:
        c.cleanup()


@pytest.fixture
def database(shared_cluster_url):
    """URL of a fresh, empty database, dropped after the test."""
    name, url = create_database(shared_cluster_url)
    yield url
    drop_database(shared_cluster_url, name)


@pytest.fixture(scope="module")
def module_database(shared_cluster_url):
    name, url = create_database(shared_cluster_url)
    yield url
    drop_database(shared_cluster_url, name)


# ---------------------------------------------------------------------------
# HTTP helpers
# ---------------------------------------------------------------------------

class RawResponse:
    def __init__(self, status, reason, version, headers, body):
        self.status = status
        self.reason = reason
        self.version = version
        self.header_list = headers
        self.headers = {}
        for k, v in headers:
            k = k.lower()
            self.headers[k] = v if k not in self.headers else self.headers[k] + ", " + v
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<RawResponse {self.status} {self.headers!r} {self.body[:200]!r}>"


class RawConnection:
    """A plain TCP connection with a buffered HTTP/1.1 response reader."""

    def __init__(self, port, host="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for response bytes; have %r" % self.buf[:300])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for response bytes; have %r" % self.buf[:300])
        if not chunk:
            raise EOFError("connection closed; have %r" % self.buf[:300])
        self.buf += chunk

    def _read_line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head=False, timeout=None):
        """Read one response; `head` says it answers a HEAD request (no body)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        status_line = self._read_line(deadline).decode("latin-1")
        m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", status_line)
        if not m:
            raise AssertionError(f"bad status line {status_line!r}")
        version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
        headers = []
        while True:
            line = self._read_line(deadline).decode("latin-1")
            if line == "":
                break
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        hd = {k.lower(): v for k, v in headers}
        body = b""
        if head or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in hd.get("transfer-encoding", "").lower():
            while True:
                size_line = self._read_line(deadline).decode("latin-1")
                size = int(size_line.split(";")[0].strip(), 16)
                if size == 0:
                    # trailers
                    while self._read_line(deadline) != b"":
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
        elif "content-length" in hd:
            body = self._read_exact(int(hd["content-length"]), deadline)
        else:
            # read until close
            try:
                while True:
                    self._fill(deadline)
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return RawResponse(status, reason, version, headers, body)

    def read_until_closed(self, timeout=None):
        """Read until the peer closes; return every byte that arrived first
        (including whatever is still buffered). Raises TimeoutError if the
        connection is still open after `timeout` seconds."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._fill(deadline)
        except EOFError:
            pass
        except ConnectionResetError:
            pass
        data, self.buf = self.buf, b""
        return data


def raw_request(port, data, head=False, timeout=30):
    """Open a connection, send raw bytes, return the first RawResponse."""
    with RawConnection(port, timeout=timeout) as c:
        c.send(data)
        return c.read_response(head=head)


def error_code(body):
    """The error code of a JSON error body (asserting its shape)."""
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), doc
    assert isinstance(doc["error"].get("code"), str), doc
    assert isinstance(doc["error"].get("message"), str), doc
    return doc["error"]["code"]


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------

class ServerStartError(Exception):
    pass


class Server:
    def __init__(self, proc, port, logpath, datadir, env):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.logpath = logpath
        self.datadir = datadir
        self.env = env

    def log_text(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def alive(self):
        return self.proc.poll() is None

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request on a fresh connection: (status, headers lowercased, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {}
            for k, v in resp.getheaders():
                k = k.lower()
                hdrs[k] = v if k not in hdrs else hdrs[k] + ", " + v
            return resp.status, hdrs, data
        finally:
            conn.close()

    def get_json(self, path, **kw):
        status, headers, body = self.request("GET", path, **kw)
        return status, headers, json.loads(body) if body else None

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the master and wait; return its exit code (None if it did not exit)."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.returncode

    def kill_all(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class ServerFactory:
    """start(database_url, ...) -> Server; finish() stops everything it started."""

    def __init__(self):
        self.servers = []
        self.tmpdirs = []

    def start(self, database_url, workers=1, env=None, migrate=True, args=(),
              port=None, listen_env=True, wait=True, timeout=20):
        datadir = tempfile.mkdtemp(prefix="sbdata.")
        self.tmpdirs.append(datadir)
        if port is None:
            port = free_port()
        base = {
            "SWITCHBOARD_WORKERS": workers,
            "SWITCHBOARD_LOG_LEVEL": "debug",
            "SWITCHBOARD_DATA_DIR": datadir,
            "SWITCHBOARD_DEBUG_ROUTES": "1",
            # The email plugin's listener: a port of its own, never the
            # default 2525 that two servers would share (SO_REUSEPORT).
            "SWITCHBOARD_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
        }
        if database_url is not None:
            base["SWITCHBOARD_DATABASE_URL"] = database_url
        if listen_env:
            base["SWITCHBOARD_LISTEN"] = f"127.0.0.1:{port}"
        base.update(env or {})
        if migrate:
            cp = run_cli(["migrate"] + list(args), env_extra=base)
            if cp.returncode != 0:
                raise ServerStartError(
                    f"switchboard migrate failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        logpath = os.path.join(datadir, "server.log")
        logf = open(logpath, "wb")
        try:
            proc = subprocess.Popen([SWITCHBOARD_BIN, "serve"] + list(args),
                                    env=clean_env(base), stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            logf.close()
        srv = Server(proc, port, logpath, datadir, base)
        self.servers.append(srv)
        if wait:
            self.wait_healthy(srv, timeout)
        return srv

    @staticmethod
    def wait_ready(srv, deadline):
        """Give the database pool a moment to connect (a loaded machine is
        slow to); a server meant to run without a database never gets ready,
        and that is not an error here."""
        if "SWITCHBOARD_DATABASE_URL" not in srv.env:
            return
        end = min(deadline, time.monotonic() + 5)
        while time.monotonic() < end:
            try:
                if srv.request("GET", "/readyz", timeout=2)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)

    @staticmethod
    def wait_healthy(srv, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if srv.proc.poll() is not None:
                raise ServerStartError(
                    f"server exited with {srv.proc.returncode} before answering /healthz; "
                    f"log tail:\n{tail(srv.log_text())}")
            try:
                status, _, _ = srv.request("GET", "/healthz", timeout=2)
                if status == 200:
                    ServerFactory.wait_ready(srv, deadline)
                    return
                last = f"status {status}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.1)
        raise ServerStartError(
            f"server did not answer GET /healthz with 200 within {timeout}s "
            f"(last: {last}); log tail:\n{tail(srv.log_text())}")

    def finish(self):
        """Stop all servers; return a list of problems (sanitizer reports, leftovers)."""
        problems = []
        for srv in self.servers:
            try:
                if srv.proc.poll() is None:
                    code = srv.stop(signal.SIGTERM, timeout=15)
                    if code is None:
                        problems.append(f"server pid {srv.pid} ignored SIGTERM for 15s; killed")
                        srv.kill_all()
                # workers left behind after the master exited?
                try:
                    wait_until(lambda: not group_members(srv.pid), 5,
                               message="worker processes to exit")
                except AssertionError:
                    left = group_members(srv.pid)
                    problems.append(f"processes left in group {srv.pid} after the master "
                                    f"exited: {left}; killed")
                    srv.kill_all()
            finally:
                if srv.proc.poll() is None:
                    srv.kill_all()
            text = srv.log_text()
            found = sanitizer_reports(text)
            if found:
                problems.append(f"sanitizer report {found} in log of server pid {srv.pid}:\n"
                                f"{tail(text, 200)}")
        for d in self.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self.servers = []
        self.tmpdirs = []
        return problems


@pytest.fixture
def start_server():
    """Factory: start_server(database_url, workers=1, env=None, migrate=True,
    args=(), port=None, listen_env=True, wait=True) -> Server."""
    factory = ServerFactory()
    yield factory.start
    problems = factory.finish()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_start_server():
    factory = ServerFactory()
    yield factory.start
    problems = factory.finish()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server(database, start_server):
    """A running server (1 worker, debug routes) on a fresh migrated database."""
    return start_server(database)


# ---------------------------------------------------------------------------
# a deadline for each test body (no pytest-timeout plugin here)
# ---------------------------------------------------------------------------

TEST_TIMEOUT = float(os.environ.get("SWITCHBOARD_TEST_TIMEOUT", "180"))


class DeadlineExceeded(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    use_alarm = threading.current_thread() is threading.main_thread()
    if use_alarm:
        def on_alarm(signum, frame):
            raise DeadlineExceeded(f"test body exceeded {TEST_TIMEOUT}s")
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# REST API helpers (used by test_api_*.py)
# ---------------------------------------------------------------------------

API = "/api/v1"
API_PASSWORD = "correct-horse-battery"

# Every table whose content a rejected request must leave alone (sessions
# and login_failures are left out: logging in is how the tests get tokens).
API_TABLES = ("tenants", "agents", "memberships", "api_keys", "teams", "team_members",
              "organizations", "customers", "customer_identities", "ticket_counters",
              "tickets", "messages", "attachments", "events")


def api_url(path, **query):
    """`path` (relative ones are put under /api/v1/) plus the percent-encoded
    query made of the arguments that are not None."""
    if not path.startswith("/"):
        path = API + "/" + path
    q = [(k, str(v)) for k, v in query.items() if v is not None]
    if q:
        path += ("&" if "?" in path else "?") + urllib.parse.urlencode(
            q, quote_via=urllib.parse.quote)
    return path


class ApiResponse:
    """status, headers (lowercased keys), body (bytes); .json, .code, .field."""

    def __init__(self, method, path, status, headers, body):
        self.method = method
        self.path = path
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON: {self!r}")

    @property
    def error(self):
        doc = self.json
        assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), self
        assert isinstance(doc["error"].get("code"), str), self
        assert isinstance(doc["error"].get("message"), str), self
        return doc["error"]

    @property
    def code(self):
        return self.error["code"]

    @property
    def field(self):
        return self.error.get("field")

    def __repr__(self):
        body = self.body.decode("utf-8", errors="replace")
        if len(body) > 800:
            body = body[:800] + "..."
        return f"<{self.method} {self.path} -> {self.status} {body}>"


def field_matches(actual, expected):
    """A 422's field names `expected` itself or something inside it
    (`customer.email`, `tags[1]`, `customer/email`)."""
    if not isinstance(actual, str):
        return False
    return actual == expected or any(actual.startswith(expected + sep) for sep in ".[/")


class ApiClient:
    """Requests to one server with one bearer token (or none)."""

    _NO_BODY = object()

    def __init__(self, srv, token=None, agent=None, email=None):
        self.srv = srv
        self.token = token
        self.agent = agent          # the "agent" object of the login answer
        self.email = email

    @property
    def id(self):
        return self.agent["id"]

    def request(self, method, path, json_body=_NO_BODY, body=None, headers=None,
                content_type=None, **query):
        hdrs = {}
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        if json_body is not ApiClient._NO_BODY:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        url = api_url(path, **query)
        status, h, b = self.srv.request(method, url, body=body, headers=hdrs)
        return ApiResponse(method, url, status, h, b)

    def get(self, path, headers=None, **query):
        return self.request("GET", path, headers=headers, **query)

    def post(self, path, json_body=None, headers=None):
        return self.request("POST", path, json_body, headers=headers)

    def patch(self, path, json_body=None, headers=None):
        return self.request("PATCH", path, json_body, headers=headers)

    def delete(self, path, headers=None):
        return self.request("DELETE", path, headers=headers)


def expect(resp, status, code=None, field=None):
    """Assert the status (an int or a collection of ints), the error code and
    the 422 field; return the parsed body."""
    ok = resp.status in status if isinstance(status, (tuple, list, set)) else resp.status == status
    assert ok, f"expected {status}, got {resp!r}"
    if code is not None:
        assert resp.code == code, f"expected error code {code!r}: {resp!r}"
    if field is not None:
        assert field_matches(resp.field, field), f"expected field {field!r}: {resp!r}"
    return resp.json


def api_login(srv, email, password=API_PASSWORD):
    """Log in; return an ApiClient carrying the token."""
    c = ApiClient(srv)
    doc = expect(c.post("sessions", {"email": email, "password": password}), 201)
    return ApiClient(srv, doc["token"], doc["agent"], email)


def sb_cli(db, *args, input=None, expect_rc=0):
    """Run an operator command against database `db`; assert its exit code."""
    cp = run_cli(list(args), {"SWITCHBOARD_DATABASE_URL": db}, input=input)
    if expect_rc is not None:
        assert cp.returncode == expect_rc, (args, cp.returncode, cp.stdout, cp.stderr)
    return cp


def cli_tenant(db, slug, name=None):
    return sb_cli(db, "tenant", "add", slug, "--name", name or slug.title())


def cli_agent(db, email, tenant, role, name=None, password=API_PASSWORD):
    """Create the agent (or add a membership to an existing one)."""
    return sb_cli(db, "agent", "add", email, "--name", name or email.split("@")[0],
                  "--tenant", tenant, "--role", role, input=password + "\n")


def cli_platform_admin(db, email, name=None, password=API_PASSWORD):
    args = ["admin", "add", email] + (["--name", name] if name else [])
    return sb_cli(db, *args, input=password + "\n")


def db_tenant_id(db, slug):
    return int(psql(db, f"SELECT id FROM tenants WHERE slug = '{slug}'").strip())


def db_fingerprint(db, tables=API_TABLES):
    """{table: (row count, md5 of all rows)} read as the superuser (no RLS)."""
    parts = [f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
             f" FROM {t} x" for t in tables]
    out = psql(db, " UNION ALL ".join(parts))
    fp = {}
    for line in out.splitlines():
        if line.strip():
            name, count, digest = line.split("|")
            fp[name] = (int(count), digest)
    return fp


def db_counts(db, tables=API_TABLES):
    return {t: v[0] for t, v in db_fingerprint(db, tables).items()}


class db_unchanged:
    """with db_unchanged(db, "what"): ... -- fails if any API table changed."""

    def __init__(self, db, what=""):
        self.db = db
        self.what = what

    def __enter__(self):
        self.before = db_fingerprint(self.db)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return False
        after = db_fingerprint(self.db)
        changed = {t: (self.before.get(t), after.get(t)) for t in after
                   if self.before.get(t) != after.get(t)}
        assert not changed, f"{self.what}: the database changed: {changed}"
        return False
