"""Process model: master + workers, signals, graceful shutdown, respawning."""

import os
import signal
import socket
import threading
import time

from conftest import children_of, group_members, pid_alive, psql, wait_until


def wait_sleep_running(database, timeout=20):
    """Wait until PostgreSQL is running a pg_sleep for the server."""
    sql = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
           "AND query ILIKE '%pg_sleep%' AND pid <> pg_backend_pid()")
    wait_until(lambda: int(psql(database, sql).strip() or 0) > 0, timeout, interval=0.05,
               message="the server's pg_sleep to be running in PostgreSQL")


def connection_refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


def wait_workers(srv, n, timeout=20):
    return wait_until(lambda: (lambda c: c if len(c) == n else None)(children_of(srv.pid)),
                      timeout, message=f"{n} worker processes under master {srv.pid} "
                                       f"(have {children_of(srv.pid)})")


def test_graceful_shutdown_finishes_in_flight_request(database, start_server):
    srv = start_server(database, workers=1, env={"SWITCHBOARD_SHUTDOWN_TIMEOUT": "10"})
    result = {}

    def slow():
        try:
            result["r"] = srv.request("GET", "/debug/sleep?seconds=2", timeout=60)
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    t = threading.Thread(target=slow)
    t.start()
    wait_sleep_running(database)
    time.sleep(0.2)
    srv.send_signal(signal.SIGTERM)

    wait_until(lambda: connection_refused(srv.port), 30, interval=0.1,
               message="new connections to be refused after SIGTERM")
    t.join(60)
    assert not t.is_alive()
    assert "e" not in result, f"in-flight request failed during shutdown: {result.get('e')!r}"
    status, headers, body = result["r"]
    assert status == 200, body
    try:
        code = srv.proc.wait(timeout=30)
    except Exception:  # noqa: BLE001
        code = None
    assert code == 0, f"exit code {code}; log:\n{srv.log_text()[-3000:]}"
    assert not group_members(srv.pid), "workers outlived the master"


def test_sigterm_idle_server_exits_zero_with_all_workers(database, start_server):
    srv = start_server(database, workers=2)
    workers = wait_workers(srv, 2)
    assert srv.stop(signal.SIGTERM, timeout=30) == 0
    wait_until(lambda: not any(pid_alive(p) for p in workers), 10,
               message="workers to exit after SIGTERM")
    assert connection_refused(srv.port)


def test_shutdown_timeout_bounds_shutdown(database, start_server):
    srv = start_server(database, workers=1, env={"SWITCHBOARD_SHUTDOWN_TIMEOUT": "1"})
    result = {}

    def slow():
        try:
            result["r"] = srv.request("GET", "/debug/sleep?seconds=60", timeout=90)
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_sleep_running(database)
    srv.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(timeout=30)
        exited = True
    except Exception:  # noqa: BLE001
        exited = False
    assert exited, "with SHUTDOWN_TIMEOUT=1 the server was still running 30 s after SIGTERM"
    assert not group_members(srv.pid), "workers outlived the master"
    t.join(30)


def test_killed_worker_is_replaced(database, start_server):
    srv = start_server(database, workers=2)
    workers = wait_workers(srv, 2)
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)

    def replaced():
        c = children_of(srv.pid)
        return c if len(c) == 2 and victim not in c else None
    new = wait_until(replaced, 20, message=f"a replacement for killed worker {victim} "
                                           f"(children now {children_of(srv.pid)})")
    assert workers[1] in new
    assert srv.alive()
    for _ in range(10):
        assert srv.request("GET", "/healthz")[0] == 200
    # zombies are reaped
    wait_until(lambda: victim not in children_of(srv.pid, include_zombies=True), 10,
               message=f"killed worker {victim} to be reaped")


def test_worker_count_follows_setting(database, start_server):
    srv = start_server(database, workers=3)
    wait_workers(srv, 3)


def test_sighup_reload_keeps_serving(database, start_server):
    srv = start_server(database, workers=2)
    wait_workers(srv, 2)
    pid = srv.pid
    srv.send_signal(signal.SIGHUP)
    time.sleep(1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert srv.alive(), f"server died after SIGHUP; log:\n{srv.log_text()[-3000:]}"
        status, _, body = srv.request("GET", "/healthz", timeout=30)
        assert status == 200, body
        time.sleep(0.1)
    assert srv.pid == pid and srv.alive()
    wait_workers(srv, 2)
    # a second SIGHUP is fine too
    srv.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert srv.alive()
    ok = wait_until(lambda: srv.request("GET", "/healthz", timeout=30)[0] == 200, 20,
                    message="/healthz 200 after the second SIGHUP")
    assert ok


def test_sigint_stops_gracefully(database, start_server):
    srv = start_server(database, workers=2)
    workers = wait_workers(srv, 2)
    assert srv.stop(signal.SIGINT, timeout=30) == 0
    wait_until(lambda: not any(pid_alive(p) for p in workers), 10,
               message="workers to exit after SIGINT")


def test_sighup_rereads_config_file(database, start_server, tmp_path):
    conf = tmp_path / "switchboard.lua"
    conf.write_text("max_body_size = 100\n")
    srv = start_server(database, workers=1, args=["--config", str(conf)])
    body = b"[" + b"1," * 200 + b"1]"  # 403 bytes
    hdr = {"Content-Type": "application/json"}
    status, _, resp = srv.request("POST", "/debug/echo", body=body, headers=hdr)
    assert status == 413, resp
    conf.write_text("max_body_size = 100000\n")
    pid = srv.pid
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: srv.request("POST", "/debug/echo", body=body, headers=hdr)[0] == 200,
               20, interval=0.2, message="the reloaded max_body_size to take effect")
    assert srv.pid == pid and srv.alive()
