"""Login throttling: 5 failed logins per account, or 30 per client address,
in 15 minutes lead to 429 with Retry-After. Each test has its own server
and database, so the counters start from zero and no other module is
affected."""

import pytest

from conftest import API_PASSWORD, ApiClient, cli_agent, cli_tenant, db_unchanged, expect

WINDOW = 15 * 60


def _login(srv, email, password):
    return ApiClient(srv).post("sessions", {"email": email, "password": password})


def _assert_throttled(r):
    expect(r, 429)
    ra = r.headers.get("retry-after", "")
    assert ra.isdigit(), r.headers
    assert 1 <= int(ra) <= WINDOW, r.headers
    r.error                                          # a JSON error body


@pytest.fixture
def throttle_env(database, start_server):
    srv = start_server(database)
    cli_tenant(database, "thr", "Throttle")
    cli_agent(database, "victim@thr.example", "thr", "agent")
    cli_agent(database, "bystander@thr.example", "thr", "agent")
    return database, srv


def test_account_throttled_after_five_failures(throttle_env):
    db, srv = throttle_env
    for i in range(5):
        r = _login(srv, "victim@thr.example", f"wrong password {i}")
        expect(r, 401, code="invalid_credentials")
    # now even the right password is refused, without a new session
    with db_unchanged(db, "throttled login"):
        _assert_throttled(_login(srv, "victim@thr.example", API_PASSWORD))
        _assert_throttled(_login(srv, "victim@thr.example", "wrong again"))
    # the account's email in another spelling is the same account
    _assert_throttled(_login(srv, "VICTIM@thr.example", API_PASSWORD))
    # other accounts from the same address are unaffected
    expect(_login(srv, "bystander@thr.example", API_PASSWORD), 201)


def test_address_throttled_after_thirty_failures(throttle_env):
    db, srv = throttle_env
    # 30 failures, spread over many accounts (fewer than 5 each)
    emails = [f"nobody{i}@thr.example" for i in range(28)]
    for i, email in enumerate(emails):
        expect(_login(srv, email, "whatever password"), 401, code="invalid_credentials")
    for i in range(2):
        expect(_login(srv, "bystander@thr.example", f"wrong {i}"), 401,
               code="invalid_credentials")
    # the 31st attempt from this address is refused, whatever the account
    _assert_throttled(_login(srv, "victim@thr.example", API_PASSWORD))
    _assert_throttled(_login(srv, "someone-new@thr.example", "x" * 10))
