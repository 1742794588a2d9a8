"""The command line: usage, configuration file and environment, errors."""

import os
import socket
import tempfile

import pytest

from conftest import free_port, run_cli


def test_help():
    cp = run_cli(["--help"])
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout + cp.stderr
    assert "serve" in out and "migrate" in out, out


def test_version():
    cp = run_cli(["--version"])
    assert cp.returncode == 0, cp.stderr
    assert (cp.stdout + cp.stderr).strip(), "no version printed"


def test_no_arguments_is_usage_error():
    cp = run_cli([])
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "serve" in cp.stdout + cp.stderr


def test_unknown_command_is_usage_error():
    cp = run_cli(["frobnicate"])
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "frobnicate" in cp.stderr, cp.stderr


def test_unknown_option_is_usage_error():
    cp = run_cli(["serve", "--no-such-option"])
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)


@pytest.mark.parametrize("key,value", [
    ("WORKERS", "abc"),
    ("WORKERS", "-3"),
    ("LISTEN", "nonsense"),
    ("LISTEN", "127.0.0.1:99999"),
    ("LOG_LEVEL", "loud"),
    ("MAX_BODY_SIZE", "lots"),
    ("MAX_BODY_SIZE", "10XiB"),
    ("HEADER_TIMEOUT", "soon"),
    ("READ_TIMEOUT", "-1"),
    ("IDLE_TIMEOUT", "x1"),
    ("SHUTDOWN_TIMEOUT", "1.2.3"),
    ("DB_POOL_SIZE", "many"),
    ("DEBUG_ROUTES", "perhaps"),
])
def test_bad_environment_value_exits_2_naming_key(module_database, key, value):
    check_bad_env("serve", module_database, key, value)


def test_migrate_checks_configuration_too(module_database):
    check_bad_env("migrate", module_database, "WORKERS", "abc")


def check_bad_env(command, database, key, value):
    env = {"SWITCHBOARD_DATABASE_URL": database,
           "SWITCHBOARD_LISTEN": f"127.0.0.1:{free_port()}",
           "SWITCHBOARD_WORKERS": "1",
           "SWITCHBOARD_" + key: value}
    cp = run_cli([command], env, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert ("SWITCHBOARD_" + key) in cp.stderr or key.lower() in cp.stderr, cp.stderr


@pytest.mark.parametrize("value", ["1024", "1KiB", "10MiB"])
def test_size_suffixes_are_accepted(database, start_server, value):
    srv = start_server(database, env={"SWITCHBOARD_MAX_BODY_SIZE": value})
    assert srv.request("GET", "/healthz")[0] == 200


def test_max_body_size_suffix_is_applied(database, start_server):
    srv = start_server(database, env={"SWITCHBOARD_MAX_BODY_SIZE": "1KiB"})
    ok = b'["' + b"a" * 1000 + b'"]'
    big = b'["' + b"a" * 1100 + b'"]'
    hdr = {"Content-Type": "application/json"}
    assert srv.request("POST", "/debug/echo", body=ok, headers=hdr)[0] == 200
    assert srv.request("POST", "/debug/echo", body=big, headers=hdr)[0] == 413


def write_config(text):
    fd, path = tempfile.mkstemp(prefix="sbconf.", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@pytest.fixture
def config_file():
    paths = []

    def make(text):
        p = write_config(text)
        paths.append(p)
        return p
    yield make
    for p in paths:
        os.unlink(p)


def test_config_file_unknown_key_exits_2(database, config_file):
    path = config_file('workers = 1\nbogus_setting_xyz = 5\n')
    for command in ("serve", "migrate"):
        cp = run_cli([command, "--config", path], {"SWITCHBOARD_DATABASE_URL": database}, timeout=30)
        assert cp.returncode == 2, (command, cp.returncode, cp.stderr)
        assert "bogus_setting_xyz" in cp.stderr, cp.stderr


def test_config_file_syntax_error_exits_2(database, config_file):
    path = config_file('workers = = 1\nlisten = "127.0.0.1:1\n')
    cp = run_cli(["serve", "--config", path], {"SWITCHBOARD_DATABASE_URL": database}, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert cp.stderr.strip()


def test_config_file_bad_value_exits_2_naming_key(database, config_file):
    path = config_file('workers = "abc"\n')
    cp = run_cli(["serve", "--config", path], {"SWITCHBOARD_DATABASE_URL": database}, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "workers" in cp.stderr.lower(), cp.stderr


def test_config_file_runtime_error_exits_2(database, config_file):
    path = config_file('error("boom from config")\n')
    cp = run_cli(["serve", "--config", path], {"SWITCHBOARD_DATABASE_URL": database}, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)


def test_missing_config_file_exits_2(database):
    cp = run_cli(["serve", "--config", "/nonexistent/switchboard.lua"],
                 {"SWITCHBOARD_DATABASE_URL": database}, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "/nonexistent/switchboard.lua" in cp.stderr, cp.stderr


def test_config_file_is_used(database, start_server, config_file):
    port = free_port()
    path = config_file(f'listen = "127.0.0.1:{port}"\nworkers = 1\n'
                       f'database_url = "{database}"\n')
    srv = start_server(None, port=port, listen_env=False, args=["--config", path])
    assert srv.request("GET", "/healthz")[0] == 200
    assert srv.request("GET", "/readyz")[0] == 200


def test_environment_wins_over_config_file(database, start_server, config_file):
    port_a, port_b = free_port(), free_port()
    while port_b == port_a:
        port_b = free_port()
    path = config_file(f'listen = "127.0.0.1:{port_a}"\nworkers = 1\n'
                       f'max_body_size = 100\n')
    srv = start_server(database, port=port_b, args=["--config", path],
                       env={"SWITCHBOARD_MAX_BODY_SIZE": "4096"})
    assert srv.port == port_b
    assert srv.request("GET", "/healthz")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port_a), timeout=5).close()
    # MAX_BODY_SIZE from the environment (4096) wins over the file's 100
    body = b'["' + b"x" * 1000 + b'"]'
    status, _, resp = srv.request("POST", "/debug/echo", body=body,
                                  headers={"Content-Type": "application/json"})
    assert status == 200, resp
