"""The chat widget in a real browser: Debian's Chromium driven by
playwright-core (tests/browser/chat.mjs), against a server started here."""

import os
import shutil
import subprocess

from conftest import REPO, run_cli
from test_outbox import login

BROWSER_DIR = os.path.join(REPO, "tests", "browser")


def test_chat_widget_in_chromium(database, start_server):
    assert shutil.which("node"), "node is missing: run deploy/deps"
    assert os.path.exists("/usr/bin/chromium"), "chromium is missing: run deploy/deps"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core is missing: tests/run installs it (npm ci in tests/browser)"
    env = {"SWITCHBOARD_DATABASE_URL": database}
    assert run_cli(["migrate"], env_extra=env).returncode == 0
    assert run_cli(["tenant", "add", "acme", "--name", "Acme"], env_extra=env).returncode == 0
    srv = start_server(database, workers=2)
    token = login(srv, database)
    cp = subprocess.run(["node", os.path.join(BROWSER_DIR, "chat.mjs"), srv.url("").rstrip("/"),
                         "acme", token], capture_output=True, text=True, timeout=120,
                        cwd=BROWSER_DIR)
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    assert "browser chat test: ok" in cp.stdout
