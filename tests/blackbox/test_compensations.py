"""The compensation ledger: issuing within and over an agent's authority,
approval and rejection by supervisors, the monthly budget (also under
concurrent requests), totals, list filters, the policy, tenant isolation and
bad input (422 and nothing stored). One server (two workers) for the module.

Budgets are per tenant, currency and month, so each test that needs one uses
its own currency; each test sets the whole policy it relies on."""

import datetime
import threading
import types

import pytest

from conftest import (API_TABLES, ApiClient, api_login, cli_agent, cli_tenant, db_fingerprint,
                      expect, psql, rand_suffix)

T = "comp"
OTHER = "comp-other"
COMP_TABLES = API_TABLES + ("compensations", "compensation_authority", "compensation_budgets")


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db, workers=2)
    cli_tenant(db, T, "Compensating Ltd")
    cli_tenant(db, OTHER, "Other Ltd")
    cli_agent(db, "adm@comp.example", T, "admin")
    cli_agent(db, "sup@comp.example", T, "supervisor")
    cli_agent(db, "agt@comp.example", T, "agent")
    cli_agent(db, "vw@comp.example", T, "viewer")
    cli_agent(db, "adm@other.example", OTHER, "admin")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.adm = api_login(srv, "adm@comp.example")
    e.sup = api_login(srv, "sup@comp.example")
    e.agt = api_login(srv, "agt@comp.example")
    e.vw = api_login(srv, "vw@comp.example")
    e.oth = api_login(srv, "adm@other.example")
    return e


def path(p="", tenant=T):
    return f"tenants/{tenant}/compensations{p}"


def new_ticket(client, tenant=T):
    """A fresh ticket (and customer): (number, customer id)."""
    t = expect(client.post(f"tenants/{tenant}/tickets", {
        "subject": f"Late parcel {rand_suffix(4)}",
        "customer": {"email": f"c-{rand_suffix(8)}@example.com"},
        "message": {"text": "where is it?"}}), 201)
    return t["number"], t["customer"]["id"]


def set_policy(client, policy):
    return expect(client.request("PUT", path("/policy"), policy), 200)


def issue(client, status=201, **body):
    body.setdefault("kind", "credit")
    body.setdefault("reason", "sla_breach")
    return expect(client.post(path(), body), status)


class unchanged:
    """with unchanged(db, what): fails if any API or compensation table changed."""

    def __init__(self, db, what):
        self.db, self.what = db, what

    def __enter__(self):
        self.before = db_fingerprint(self.db, COMP_TABLES)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            after = db_fingerprint(self.db, COMP_TABLES)
            changed = [t for t in after if after[t] != self.before.get(t)]
            assert not changed, f"{self.what}: tables changed: {changed}"
        return False


def today():
    return datetime.datetime.now(datetime.timezone.utc).date()


# ---------------------------------------------------------------------------
# authority and approval
# ---------------------------------------------------------------------------

def test_agent_within_limit_is_issued(env):
    set_policy(env.adm, {"authority": {"agent": {"EUR": 20}}})
    number, customer = new_ticket(env.agt)
    c = issue(env.agt, ticket=number, amount=15.5, currency="EUR",
              description="for the late parcel")
    assert c["status"] == "issued"
    assert c["ticket"] == number and c["customer_id"] == customer
    assert c["kind"] == "credit" and c["amount"] == 15.5 and c["currency"] == "EUR"
    assert c["reason"] == "sla_breach" and c["description"] == "for the late parcel"
    assert c["issued_by"] == {"kind": "agent", "id": env.agt.id}
    assert c["decided_by"] is None and c["decided_at"] is None
    assert isinstance(c["id"], int) and c["created_at"]
    # exactly at the limit is within it
    assert issue(env.agt, ticket=number, amount=20, currency="EUR")["status"] == "issued"
    assert expect(env.vw.get(path(), ticket=number), 200)["items"][-1] == c
    # audited on the ticket
    events = expect(env.vw.get(f"tenants/{T}/tickets/{number}/events"), 200)["items"]
    assert "compensation.issued" in [ev["action"] for ev in events]
    row = psql(env.db, "SELECT actor_kind, actor_id FROM events WHERE action ="
                       f" 'compensation.issued' AND after->>'id' = '{c['id']}'").strip()
    assert row == f"agent|{env.agt.id}"


def test_agent_over_limit_waits_for_a_supervisor(env):
    set_policy(env.adm, {"authority": {"agent": {"EUR": 20}}})
    number, _ = new_ticket(env.agt)
    c = issue(env.agt, ticket=number, amount=25, currency="EUR")
    assert c["status"] == "pending_approval"
    cid = c["id"]
    assert psql(env.db, "SELECT count(*) FROM events WHERE action = 'compensation.requested'"
                        f" AND after->>'id' = '{cid}'").strip() == "1"
    with unchanged(env.db, "approval by those who may not"):
        expect(env.agt.post(path(f"/{cid}/approve"), {}), 403, "forbidden")
        expect(env.vw.request("POST", path(f"/{cid}/approve")), 403, "forbidden")
        expect(env.agt.request("POST", path(f"/{cid}/reject")), 403, "forbidden")
    d = expect(env.sup.post(path(f"/{cid}/approve"), {"note": "long-time customer"}), 200)
    assert d["status"] == "approved" and d["decided_by"] == env.sup.id
    assert d["decided_at"] and d["decision_note"] == "long-time customer"
    assert d["amount"] == 25 and d["issued_by"] == {"kind": "agent", "id": env.agt.id}
    with unchanged(env.db, "deciding twice"):
        r = env.sup.request("POST", path(f"/{cid}/approve"))
        expect(r, 409, "conflict")
        expect(env.adm.request("POST", path(f"/{cid}/reject")), 409, "conflict")
    events = expect(env.vw.get(f"tenants/{T}/tickets/{number}/events"), 200)["items"]
    actions = [ev["action"] for ev in events]
    assert "compensation.requested" in actions and "compensation.approved" in actions


def test_reject(env):
    set_policy(env.adm, {})
    number, _ = new_ticket(env.agt)
    c = issue(env.agt, ticket=number, kind="refund", amount=5, currency="EUR")
    assert c["status"] == "pending_approval"
    d = expect(env.adm.post(path(f"/{c['id']}/reject"), {"note": "already refunded"}), 200)
    assert d["status"] == "rejected" and d["decided_by"] == env.adm.id
    with unchanged(env.db, "approving a rejected compensation"):
        expect(env.sup.request("POST", path(f"/{c['id']}/approve")), 409, "conflict")
        expect(env.sup.request("POST", path(f"/{c['id']}/reject")), 409, "conflict")
    with unchanged(env.db, "unknown compensations"):
        expect(env.sup.request("POST", path("/987654321/approve")), 404)
        expect(env.sup.request("POST", path("/987654321/reject")), 404)
        expect(env.sup.request("POST", path("/nope/approve")), 404)


def test_default_policy(env):
    """Nothing set: an agent grants no money on its own, supervisors and admins
    anything; things without an amount are within everyone's authority."""
    set_policy(env.adm, {})
    number, customer = new_ticket(env.agt)
    assert issue(env.agt, ticket=number, amount=0.01, currency="EUR")["status"] == \
        "pending_approval"
    gift = issue(env.agt, customer=customer, kind="gift", description="a branded mug")
    assert gift["status"] == "issued" and gift["amount"] is None and gift["currency"] is None
    assert gift["ticket"] is None and gift["customer_id"] == customer
    assert issue(env.sup, ticket=number, amount=5000, currency="EUR")["status"] == "issued"
    assert issue(env.adm, ticket=number, amount=9000, currency="EUR")["status"] == "issued"
    # the ticket's customer, named too, is fine
    c = issue(env.adm, ticket=number, customer=customer, kind="bonus", description="points")
    assert c["customer_id"] == customer and c["ticket"] == number


def test_policy_roundtrip_and_roles(env):
    policy = {"authority": {"agent": {"EUR": 20, "USD": 25.5},
                            "supervisor": {"NOK": 200}, "admin": {"NOK": 0}},
              "monthly_budget": {"EUR": 1000, "SEK": 0}}
    got = set_policy(env.adm, policy)
    assert got == policy
    assert expect(env.sup.get(path("/policy")), 200) == policy
    with unchanged(env.db, "policy by those who may not"):
        expect(env.agt.get(path("/policy")), 403)
        expect(env.vw.get(path("/policy")), 403)
        expect(env.sup.request("PUT", path("/policy"), {}), 403)
    # a supervisor over its own limit waits too; an admin limited to 0 as well
    number, _ = new_ticket(env.agt)
    assert issue(env.sup, ticket=number, amount=201, currency="NOK")["status"] == \
        "pending_approval"
    assert issue(env.sup, ticket=number, amount=200, currency="NOK")["status"] == "issued"
    assert issue(env.adm, ticket=number, amount=1, currency="NOK")["status"] == \
        "pending_approval"
    # a budget of zero: every amount waits
    assert issue(env.sup, ticket=number, amount=1, currency="SEK")["status"] == \
        "pending_approval"
    # the whole policy is replaced
    assert set_policy(env.adm, {"monthly_budget": {"EUR": 5}}) == \
        {"authority": {}, "monthly_budget": {"EUR": 5}}
    assert set_policy(env.adm, {}) == {"authority": {}, "monthly_budget": {}}
    assert psql(env.db, "SELECT count(*) > 0 FROM events WHERE action ="
                        " 'compensation.policy_changed'").strip() == "t"


# ---------------------------------------------------------------------------
# the monthly budget
# ---------------------------------------------------------------------------

def test_monthly_budget(env):
    set_policy(env.adm, {"monthly_budget": {"USD": 100}})
    number, _ = new_ticket(env.adm)
    a = issue(env.adm, ticket=number, amount=60, currency="USD")
    assert a["status"] == "issued"
    b = issue(env.adm, ticket=number, amount=60, currency="USD")
    assert b["status"] == "pending_approval"
    # what is left still fits, to the cent
    assert issue(env.adm, ticket=number, amount=40, currency="USD")["status"] == "issued"
    assert issue(env.adm, ticket=number, amount=0.01, currency="USD")["status"] == \
        "pending_approval"
    # other currencies and non-monetary ones are outside this budget
    assert issue(env.adm, ticket=number, amount=500, currency="CAD")["status"] == "issued"
    assert issue(env.adm, ticket=number, kind="gift", description="flowers")["status"] == "issued"
    # approving goes past the budget on purpose; what follows still waits
    assert expect(env.sup.request("POST", path(f"/{b['id']}/approve")), 200)["status"] == "approved"
    assert issue(env.adm, ticket=number, amount=1, currency="USD")["status"] == "pending_approval"
    granted = psql(env.db, "SELECT sum(amount) FROM compensations WHERE currency = 'USD'"
                           " AND status IN ('issued', 'approved')").strip()
    assert float(granted) == 160


def test_budget_holds_under_concurrency(env):
    set_policy(env.adm, {"monthly_budget": {"GBP": 100}})
    number, _ = new_ticket(env.adm)
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        client = ApiClient(env.srv, env.adm.token, env.adm.agent)
        barrier.wait(timeout=30)
        r = client.post(path(), {"ticket": number, "kind": "credit", "amount": 10,
                                 "currency": "GBP", "reason": "sla_breach"})
        results[i] = r

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = [expect(r, 201)["status"] for r in results]
    assert statuses.count("issued") == 10, statuses
    assert statuses.count("pending_approval") == 10, statuses
    granted = psql(env.db, "SELECT sum(amount) FROM compensations WHERE currency = 'GBP'"
                           " AND status = 'issued'").strip()
    assert float(granted) == 100


# ---------------------------------------------------------------------------
# totals and the list
# ---------------------------------------------------------------------------

def test_totals(env):
    set_policy(env.adm, {"authority": {"agent": {"CHF": 50}}})
    reason = f"lost_{rand_suffix(6)}"
    number, _ = new_ticket(env.agt)
    issue(env.agt, ticket=number, amount=10, currency="CHF", reason=reason)
    issue(env.agt, ticket=number, amount=15.25, currency="CHF", reason=reason)
    pending = issue(env.agt, ticket=number, amount=60, currency="CHF", reason=reason)
    rejected = issue(env.agt, ticket=number, amount=70, currency="CHF", reason=reason)
    expect(env.sup.request("POST", path(f"/{rejected['id']}/reject")), 200)
    issue(env.agt, ticket=number, kind="gift", description="a voucher", reason=reason)
    day = today().isoformat()
    month = today().strftime("%Y-%m")

    tot = expect(env.vw.get(path("/totals"), **{"from": day, "to": day, "group": "month"}), 200)
    assert set(tot) >= {"by_month", "by_reason", "by_agent"}
    by_reason = [x for x in tot["by_reason"] if x["reason"] == reason]
    assert {(x["currency"], x["amount"], x["count"]) for x in by_reason} == \
        {("CHF", 25.25, 2), (None, None, 1)}
    chf = [x for x in tot["by_month"] if x["currency"] == "CHF"]
    assert len(chf) == 1 and chf[0]["month"] == month and chf[0]["amount"] == 25.25
    mine = [x for x in tot["by_agent"] if x["agent"] == env.agt.id and x["currency"] == "CHF"]
    assert mine == [{"agent": env.agt.id, "currency": "CHF", "amount": 25.25, "count": 2}]

    # approving counts it
    expect(env.sup.request("POST", path(f"/{pending['id']}/approve")), 200)
    tot = expect(env.vw.get(path("/totals")), 200)
    by_reason = [x for x in tot["by_reason"] if x["reason"] == reason and x["currency"] == "CHF"]
    assert by_reason[0]["amount"] == 85.25 and by_reason[0]["count"] == 3

    # a period without any
    empty = expect(env.vw.get(path("/totals"), **{"from": "2001-01-01", "to": "2001-12-31"}), 200)
    assert empty["by_month"] == [] and empty["by_reason"] == [] and empty["by_agent"] == []
    for q, field in (({"from": "yesterday"}, "from"), ({"to": "2026-02-30"}, "to"),
                     ({"group": "week"}, "group"), ({"from": "2026-1-01"}, "from")):
        expect(env.vw.get(path("/totals"), **q), 422, "invalid_field", field)


def test_list_filters_and_pages(env):
    set_policy(env.adm, {})
    n1, cust1 = new_ticket(env.agt)
    n2, cust2 = new_ticket(env.agt)
    a = issue(env.agt, ticket=n1, amount=1, currency="EUR")            # pending
    b = issue(env.sup, ticket=n1, amount=2, currency="EUR")            # issued
    c = issue(env.agt, ticket=n2, kind="gift", description="socks")    # issued
    d = issue(env.agt, customer=cust2, kind="bonus", description="miles")

    def ids(**q):
        return [x["id"] for x in expect(env.vw.get(path(), **q), 200)["items"]]

    assert ids(ticket=n1) == [b["id"], a["id"]]          # newest first
    assert ids(ticket=n2) == [c["id"]]
    assert ids(customer=cust2) == [d["id"], c["id"]]
    assert ids(customer=cust1, status="pending_approval") == [a["id"]]
    assert ids(customer=cust1, status="issued") == [b["id"]]
    day = today().isoformat()
    assert ids(customer=cust2, **{"from": day, "to": day}) == [d["id"], c["id"]]
    assert ids(customer=cust2, **{"from": "2001-01-01", "to": "2001-01-31"}) == []
    assert ids(ticket=987654321) == []

    # keyset pages
    page = expect(env.vw.get(path(), ticket=n1, limit=1), 200)
    assert [x["id"] for x in page["items"]] == [b["id"]] and page["next_cursor"]
    page2 = expect(env.vw.get(path(), ticket=n1, limit=1, cursor=page["next_cursor"]), 200)
    assert [x["id"] for x in page2["items"]] == [a["id"]] and page2["next_cursor"] is None
    full = expect(env.vw.get(path()), 200)
    assert len(full["items"]) <= 50

    for q, field in (({"ticket": "abc"}, "ticket"), ({"customer": "-1"}, "customer"),
                     ({"customer": "0"}, "customer"),
                     ({"status": "paid"}, "status"), ({"limit": "0"}, "limit"),
                     ({"limit": "201"}, "limit"), ({"limit": "x"}, "limit"),
                     ({"from": "2026-13-01"}, "from"), ({"to": "today"}, "to"),
                     ({"cursor": "@@not-a-cursor@@"}, "cursor"),
                     ({"cursor": "Zm9v"}, "cursor")):
        expect(env.vw.get(path(), **q), 422, "invalid_field", field)


# ---------------------------------------------------------------------------
# isolation and access
# ---------------------------------------------------------------------------

def test_tenant_isolation(env):
    number, customer = new_ticket(env.oth, OTHER)
    theirs = expect(env.oth.post(path(tenant=OTHER), {
        "ticket": number, "kind": "credit", "amount": 5, "currency": "EUR",
        "reason": "sla_breach"}), 201)
    assert theirs["status"] == "issued"      # an admin with no limits set
    gift = expect(env.oth.post(path(tenant=OTHER), {
        "customer": customer, "kind": "gift", "description": "hat", "reason": "x"}), 201)
    with unchanged(env.db, "reaching into another tenant"):
        expect(env.adm.request("POST", path(f"/{theirs['id']}/approve")), 404)
        expect(env.adm.request("POST", path(f"/{gift['id']}/reject")), 404)
        listed = expect(env.adm.get(path(), limit=200), 200)["items"]
        assert theirs["id"] not in [x["id"] for x in listed]
        # their customer and ticket number do not exist here
        expect(env.adm.post(path(), {"customer": customer, "kind": "gift",
                                     "description": "x", "reason": "x"}),
               422, "invalid_field", "customer")
        # and the other way round: not a member there
        expect(env.adm.get(path(tenant=OTHER)), 404)
        expect(env.oth.get(path()), 404)
        expect(env.oth.get(path("/totals")), 404)
    assert [x["id"] for x in expect(env.oth.get(path(tenant=OTHER)), 200)["items"]] == \
        [gift["id"], theirs["id"]]


def test_viewers_and_integrations_cannot_issue(env):
    set_policy(env.adm, {})
    number, _ = new_ticket(env.agt)
    body = {"ticket": number, "kind": "gift", "description": "pen", "reason": "sla_breach"}
    key = expect(env.adm.post(f"tenants/{T}/api_keys", {"name": f"int-{rand_suffix(4)}",
                                                         "role": "admin"}), 201)["key"]
    with unchanged(env.db, "issuing without the right"):
        expect(env.vw.post(path(), body), 403, "forbidden")
        expect(ApiClient(env.srv).post(path(), body), 401)
        # an integration is neither an agent nor a rule
        expect(ApiClient(env.srv, key).post(path(), body), 403, "forbidden")
    # it may read, and not decide either
    expect(ApiClient(env.srv, key).get(path()), 200)
    pending = issue(env.agt, ticket=number, amount=3, currency="EUR")
    assert pending["status"] == "pending_approval"
    with unchanged(env.db, "an integration deciding"):
        expect(ApiClient(env.srv, key).request("POST", path(f"/{pending['id']}/approve")), 403,
               "forbidden")


def test_merged_customer_is_refused(env):
    _, gone = new_ticket(env.agt)
    _, kept = new_ticket(env.agt)
    expect(env.agt.post(f"tenants/{T}/customers/{gone}/merge", {"into": kept}), 200)
    with unchanged(env.db, "compensating a merged customer"):
        expect(env.agt.post(path(), {"customer": gone, "kind": "gift", "description": "tea",
                                     "reason": "late"}), 422, "invalid_field", "customer")
    assert issue(env.agt, customer=kept, kind="gift", description="tea")["status"] == "issued"


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

def test_bad_input_is_422_and_stores_nothing(env):
    set_policy(env.adm, {})
    number, customer = new_ticket(env.agt)
    _, other_customer = new_ticket(env.agt)
    ok = {"ticket": number, "kind": "credit", "amount": 10, "currency": "EUR",
          "reason": "sla_breach"}

    def without(*keys):
        return {k: v for k, v in ok.items() if k not in keys}

    cases = [
        ({}, "kind"),
        (without("kind"), "kind"),
        (dict(ok, kind="cash"), "kind"),
        (dict(ok, kind=3), "kind"),
        (without("reason"), "reason"),
        (dict(ok, reason=""), "reason"),
        (dict(ok, reason="r" * 101), "reason"),
        (dict(ok, amount=0), "amount"),
        (dict(ok, amount=-5), "amount"),
        (dict(ok, amount="10"), "amount"),
        (dict(ok, amount=True), "amount"),
        (dict(ok, amount=10.005), "amount"),
        (dict(ok, amount=1e-9), "amount"),
        (dict(ok, amount=10 ** 10), "amount"),
        (dict(ok, amount=1e300), "amount"),
        (dict(ok, amount=2 ** 62), "amount"),
        (dict(ok, amount=[1]), "amount"),
        (dict(ok, currency="eur"), "currency"),
        (dict(ok, currency="EURO"), "currency"),
        (dict(ok, currency="E1R"), "currency"),
        (dict(ok, currency=""), "currency"),
        (dict(ok, currency=None), "currency"),
        (without("currency"), "currency"),
        (dict(without("amount"), description="x"), "currency"),
        (without("amount", "currency"), "description"),
        (dict(ok, description=""), "description"),
        (dict(ok, description="d" * 2001), "description"),
        (without("ticket"), "ticket"),
        (dict(ok, ticket=987654321), "ticket"),
        (dict(ok, ticket=0), "ticket"),
        (dict(ok, ticket="1"), "ticket"),
        (dict(ok, ticket=2 ** 63 - 1), "ticket"),
        (dict(without("ticket"), customer=987654321), "customer"),
        (dict(without("ticket"), customer=-1), "customer"),
        (dict(ok, customer=other_customer), "customer"),
        (dict(ok, issued_by_rule="sneaky"), "issued_by_rule"),
        (dict(ok, status="approved"), "status"),
    ]
    with unchanged(env.db, "bad compensations"):
        for body, field in cases:
            r = env.agt.post(path(), body)
            expect(r, 422, "invalid_field", field)
        expect(env.agt.post(path(), [ok]), 422, "invalid_field")
        expect(env.agt.post(path(), "text"), 400)
        expect(env.agt.request("POST", path(), body=b"{", content_type="application/json"), 400)
        expect(env.agt.request("POST", path(), body=b"kind=credit",
                               content_type="application/x-www-form-urlencoded"), 415)
        expect(env.agt.request("POST", path(), body=b'{"kind":"credit","kind":"gift"}',
                               content_type="application/json"), 400)
    # decisions
    c = expect(env.agt.post(path(), dict(ok)), 201)
    assert c["status"] == "pending_approval"
    with unchanged(env.db, "bad decisions"):
        for note in (3, "", "n" * 2001, None):
            expect(env.sup.post(path(f"/{c['id']}/approve"), {"note": note}), 422,
                   "invalid_field", "note")
        expect(env.sup.post(path(f"/{c['id']}/approve"), {"nope": 1}), 422, "invalid_field",
               "nope")
        expect(env.sup.post(path(f"/{c['id']}/reject"), [1]), 422, "invalid_field")


def test_bad_policy_is_422_and_stores_nothing(env):
    set_policy(env.adm, {"authority": {"agent": {"EUR": 20}}, "monthly_budget": {"EUR": 100}})
    cases = [
        ({"authority": {"viewer": {"EUR": 1}}}, "authority.viewer"),
        ({"authority": {"agent": {"eur": 1}}}, "authority.agent.eur"),
        ({"authority": {"agent": {"EUR": -1}}}, "authority.agent.EUR"),
        ({"authority": {"agent": {"EUR": "1"}}}, "authority.agent.EUR"),
        ({"authority": {"agent": {"EUR": None}}}, "authority.agent.EUR"),
        ({"authority": {"agent": {"EUR": 1.001}}}, "authority.agent.EUR"),
        ({"authority": {"agent": {"EUR": 1e10}}}, "authority.agent.EUR"),
        ({"authority": {"agent": [1]}}, "authority.agent"),
        ({"authority": {"agent": 5}}, "authority.agent"),
        ({"authority": []}, "authority"),
        ({"authority": None}, "authority"),
        ({"monthly_budget": {"EURO": 1}}, "monthly_budget.EURO"),
        ({"monthly_budget": {"EUR": -0.01}}, "monthly_budget.EUR"),
        ({"monthly_budget": {"EUR": True}}, "monthly_budget.EUR"),
        ({"monthly_budget": 100}, "monthly_budget"),
        ({"budget": {"EUR": 1}}, "budget"),
    ]
    with unchanged(env.db, "bad policies"):
        for body, field in cases:
            expect(env.adm.request("PUT", path("/policy"), body), 422, "invalid_field", field)
        expect(env.adm.request("PUT", path("/policy"), [1]), 422, "invalid_field")
        expect(env.adm.request("PUT", path("/policy"), body=b"{", content_type="application/json"),
               400)
    assert expect(env.adm.get(path("/policy")), 200) == \
        {"authority": {"agent": {"EUR": 20}}, "monthly_budget": {"EUR": 100}}
