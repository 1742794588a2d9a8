"""PostgreSQL-facing behaviour: migrations, readiness, surviving an outage."""

import json
import subprocess
import threading

from conftest import (SWITCHBOARD_BIN, clean_env, error_code, free_port, psql, run_cli,
                      sanitizer_reports, wait_until)


def test_migrate_creates_schema_migrations(database):
    cp = run_cli(["migrate"], {"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode == 0, cp.stderr
    n = int(psql(database, "SELECT count(*) FROM schema_migrations").strip())
    assert n >= 1


def test_migrate_is_idempotent(database):
    env = {"SWITCHBOARD_DATABASE_URL": database}
    cp1 = run_cli(["migrate"], env)
    assert cp1.returncode == 0, cp1.stderr
    before = psql(database, "SELECT * FROM schema_migrations ORDER BY 1")
    tables_before = psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                                   "('pg_catalog','information_schema')")
    cp2 = run_cli(["migrate"], env)
    assert cp2.returncode == 0, cp2.stderr
    after = psql(database, "SELECT * FROM schema_migrations ORDER BY 1")
    assert before == after, "second migrate changed schema_migrations"
    assert tables_before == psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                                           "('pg_catalog','information_schema')")


def test_concurrent_migrate_runs_are_safe(database):
    env = clean_env({"SWITCHBOARD_DATABASE_URL": database})
    procs = [subprocess.Popen([SWITCHBOARD_BIN, "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for _ in range(3)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((p.returncode, err))
    for code, err in results:
        assert not sanitizer_reports(err), err
        assert code == 0, f"concurrent migrate failed ({code}): {err}"
    cp = run_cli(["migrate"], {"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode == 0, cp.stderr


def test_serve_refuses_unmigrated_database(database):
    port = free_port()
    cp = run_cli(["serve"], {"SWITCHBOARD_DATABASE_URL": database,
                             "SWITCHBOARD_LISTEN": f"127.0.0.1:{port}",
                             "SWITCHBOARD_WORKERS": "1"}, timeout=30)
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert "migrate" in cp.stderr, cp.stderr


def test_readyz_and_sleep_survive_database_outage(pg_cluster_factory, start_server):
    cluster = pg_cluster_factory()
    srv = start_server(cluster.url, workers=1)
    pid = srv.pid

    status, headers, body = srv.request("GET", "/readyz")
    assert status == 200, body
    assert srv.request("GET", "/debug/sleep?seconds=0")[0] == 200

    cluster.stop("fast")

    def readyz_503():
        st, hd, bd = srv.request("GET", "/readyz", timeout=30)
        return (st, hd, bd) if st == 503 else None
    status, headers, body = wait_until(readyz_503, 30, interval=0.3,
                                       message="/readyz to answer 503 with the database down")
    assert "retry-after" in headers, headers
    assert headers["retry-after"].strip().isdigit(), headers
    assert error_code(body) == "unavailable"

    status, headers, body = srv.request("GET", "/debug/sleep?seconds=0", timeout=30)
    assert status == 503, body
    assert headers.get("retry-after", "").strip().isdigit(), headers
    assert error_code(body) == "unavailable"

    # health is about the process, not the database
    assert srv.request("GET", "/healthz")[0] == 200

    cluster.start()

    def readyz_200():
        return srv.request("GET", "/readyz", timeout=30)[0] == 200
    wait_until(readyz_200, 60, interval=0.5,
               message="/readyz to answer 200 after the database came back")
    assert srv.alive() and srv.pid == pid
    status, _, body = srv.request("GET", "/debug/sleep?seconds=0", timeout=30)
    assert status == 200, body
    assert json.loads(body)["slept"] == 0


def test_many_concurrent_db_requests_with_small_pool(database, start_server):
    """More concurrent DB requests than pool connections: they queue, none fails."""
    srv = start_server(database, workers=1, env={"SWITCHBOARD_DB_POOL_SIZE": "2"})
    results = []
    lock = threading.Lock()

    def one():
        try:
            st, _, bd = srv.request("GET", "/debug/sleep?seconds=0.3", timeout=60)
        except Exception as e:  # noqa: BLE001
            st, bd = None, repr(e).encode()
        with lock:
            results.append((st, bd))
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 8
    assert all(st == 200 for st, _ in results), results
