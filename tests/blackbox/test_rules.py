"""Lua rules: versioned scripts per tenant, the sandbox, SLA on business
hours, escalation and compensation acting once, timers across restarts,
and the authors' tools (rules check / test / replay) on the default
scripts.
"""

import datetime
import json
import os
import time
import zoneinfo

import pytest

from conftest import (REPO, ApiClient, api_login, cli_agent, cli_tenant, expect, psql,
                      rand_suffix, run_cli, wait_until)

SCRIPTS = os.path.join(REPO, "scripts")
DEFAULTS = sorted(os.path.join(SCRIPTS, f) for f in os.listdir(SCRIPTS) if f.endswith(".lua"))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "rules")


def put_rule(client, tenant, name, source, comment=None):
    body = {"source": source}
    if comment:
        body["comment"] = comment
    return client.request("PUT", f"tenants/{tenant}/rules/{name}", body)


def setup_tenant(db, srv, slug=None):
    slug = slug or "r" + rand_suffix(8)
    cli_tenant(db, slug)
    cli_agent(db, f"admin@{slug}.example", slug, "admin")
    cli_agent(db, f"agent@{slug}.example", slug, "agent")
    return slug, api_login(srv, f"admin@{slug}.example"), api_login(srv, f"agent@{slug}.example")


def new_ticket(client, slug, email=None, tier=None, subject="Help"):
    email = email or f"c-{rand_suffix(6)}@example.com"
    if tier:
        expect(client.post(f"tenants/{slug}/customers",
                           {"name": "Gold Customer", "tier": tier,
                            "identities": [{"kind": "email", "value": email}]}), 201)
    return expect(client.post(f"tenants/{slug}/tickets",
                              {"subject": subject, "customer": {"email": email},
                               "message": {"text": "it does not work"}}), 201)


def ticket(client, slug, number):
    return expect(client.get(f"tenants/{slug}/tickets/{number}"), 200)


def ticket_events(client, slug, number):
    doc = expect(client.get(f"tenants/{slug}/tickets/{number}/events"), 200)
    return doc["items"] if isinstance(doc, dict) else doc


def ts(iso):
    return datetime.datetime.fromisoformat(iso).timestamp()


def rules_settled(db):
    return psql(db, "SELECT count(*) FROM rule_events WHERE processed_at IS NULL").strip() == "0"


@pytest.fixture
def rsrv(database, start_server):
    return start_server(database, workers=2)


# ---------------------------------------------------------------------------
# scripts: defaults, upload, validation, history, rollback, hot reload
# ---------------------------------------------------------------------------

def test_new_tenant_starts_from_the_default_scripts(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    items = expect(adm.get(f"tenants/{slug}/rules"), 200)["items"]
    assert sorted(i["name"] for i in items) == ["autoack", "compensation", "escalation", "feedback",
                                                "routing", "sla"]
    sla = expect(adm.get(f"tenants/{slug}/rules/sla"), 200)
    with open(os.path.join(SCRIPTS, "sla.lua"), encoding="utf-8") as f:
        assert sla["source"] == f.read()
    assert sla["version"] == 1
    # the default SLA applies to a new ticket: due times on business hours
    t = new_ticket(agt, slug)
    got = wait_until(lambda: ticket(agt, slug, t["number"])["sla"], 20, message="SLA computed")
    assert got["policy"] == "standard" and got["first_response_due"] and got["resolution_due"]
    # rules are for admins
    expect(agt.get(f"tenants/{slug}/rules"), 403)
    expect(put_rule(agt, slug, "sla", "-- mine"), 403)
    expect(adm.get(f"tenants/{slug}/rules/nosuch"), 404)
    expect(adm.get(f"tenants/{slug}/rules/Bad-Name"), 404)


def test_upload_history_rollback_and_reload_in_every_worker(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    v1 = 'on("ticket.created", function(ev, act) act.tag("v1") end)\n'
    v2 = 'on("ticket.created", function(ev, act) act.tag("v2") end)\n'
    d1 = expect(put_rule(adm, slug, "tagging", v1, "first"), 200)
    assert d1["version"] == 1 and d1["source"] == v1 and d1["comment"] == "first"
    d2 = expect(put_rule(adm, slug, "tagging", v2), 200)
    assert d2["version"] == 2
    # two workers: every new ticket sees version 2 at once, whichever handles it
    nums = [new_ticket(agt, slug)["number"] for _ in range(8)]
    for n in nums:
        wait_until(lambda: "v2" in ticket(agt, slug, n)["tags"], 20, message=f"#{n} tagged v2")
        assert "v1" not in ticket(agt, slug, n)["tags"]
    hist = expect(adm.get(f"tenants/{slug}/rules/tagging/versions"), 200)["items"]
    assert [h["version"] for h in hist] == [2, 1] and "source" not in hist[0]
    assert expect(adm.get(f"tenants/{slug}/rules/tagging/versions/1"), 200)["source"] == v1
    expect(adm.get(f"tenants/{slug}/rules/tagging/versions/9"), 404)
    d3 = expect(adm.post(f"tenants/{slug}/rules/tagging/rollback", {"version": 1}), 200)
    assert d3["version"] == 3 and d3["source"] == v1 and "rollback" in d3["comment"]
    n = new_ticket(agt, slug)["number"]
    wait_until(lambda: "v1" in ticket(agt, slug, n)["tags"], 20, message="tagged v1 after rollback")
    expect(adm.post(f"tenants/{slug}/rules/tagging/rollback", {"version": 42}), 422,
           field="version")
    expect(adm.post(f"tenants/{slug}/rules/tagging/rollback", {"version": "x"}), 422)


def test_invalid_upload_is_rejected_and_the_old_script_keeps_working(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    good = 'on("ticket.created", function(ev, act) act.tag("good") end)\n'
    expect(put_rule(adm, slug, "tagging", good), 200)
    cases = [
        ('on("ticket.created", function(ev, act)\n  act.tag("x"\nend)\n', 3),  # syntax
        ('local x = 1\nerror("deliberate")\n', 2),                              # runtime at load
        ('on("ticket.creatd", function() end)\n', 1),                           # unknown event
        ('sla "x" { first_response = "soon" }\n', 1),                           # bad duration
        ('sla "y" { first_response = "1h", calendar = "nowhere" }\n', 1),       # unknown calendar
        ('calendar "c" { tz = "Mars/Olympus", hours = { mon = {"09:00", "17:00"} } }\n', 1),
        ('while true do end\n', 1),                                             # budget at load
        ('local t = {}\nfor i = 1, 1e9 do t[i] = ("x"):rep(4096) .. i end\n', 2),  # memory at load
        ('os.execute("touch /tmp/pwned")\n', 1),
    ]
    for source, line in cases:
        r = put_rule(adm, slug, "tagging", source)
        err = expect(r, 422, code="script_invalid")["error"]
        assert err["line"] == line, (source, err)
        assert err["script"] == "tagging" and err["message"], err
    assert not os.path.exists("/tmp/pwned")
    # a script that breaks another (a duplicate SLA name) is refused too
    expect(put_rule(adm, slug, "extra", 'sla "gold" { first_response = "1h" }\n'), 422,
           code="script_invalid")
    # bad requests
    expect(adm.request("PUT", f"tenants/{slug}/rules/tagging", {"source": 5}), 422, field="source")
    expect(adm.request("PUT", f"tenants/{slug}/rules/tagging", {}), 422, field="source")
    expect(adm.request("PUT", f"tenants/{slug}/rules/Bad%20Name", {"source": ""}), (404, 422))
    cur = expect(adm.get(f"tenants/{slug}/rules/tagging"), 200)
    assert cur["version"] == 1 and cur["source"] == good
    n = new_ticket(agt, slug)["number"]
    wait_until(lambda: "good" in ticket(agt, slug, n)["tags"], 20, message="old script acts")


# ---------------------------------------------------------------------------
# the sandbox
# ---------------------------------------------------------------------------

HOSTILE = r'''
on("ticket.created", function(ev, act)        -- an infinite loop that hides in pcall
  while true do pcall(function() while true do end end) end
end)
on("ticket.created", function(ev, act)        -- a memory bomb
  local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
end)
on("ticket.created", function(ev, act)        -- a huge string
  local s = string.rep("x", 1 << 40)
end)
on("ticket.created", function(ev, act)        --
  os.execute("touch /tmp/pwned-by-rules")
end)
on("ticket.created", function(ev, act)        --
  io.open("/etc/passwd")
end)
on("ticket.created", function(ev, act)        -- bytecode
  assert(load("\27LuaT\0\25\147\r\n\26\n\4\8\8"))
end)
on("ticket.created", function(ev, act)        -- writing to the snapshot
  ev.ticket.priority = "urgent"
end)
on("ticket.created", function(ev, act)        -- an action that does not exist
  act.launch_missiles()
end)
on("ticket.created", function(ev, act)
  act.tag("survived")
end)
'''


def test_hostile_handlers_are_stopped_and_everything_else_carries_on(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    other, oadm, oagt = setup_tenant(database, rsrv)
    expect(put_rule(adm, slug, "hostile", HOSTILE), 200)
    expect(put_rule(oadm, other, "plain", 'on("ticket.created", function(ev, act) '
                                          'act.tag("plain") end)\n'), 200)
    t = new_ticket(agt, slug)
    o = new_ticket(oagt, other)
    wait_until(lambda: "survived" in ticket(agt, slug, t["number"])["tags"], 60,
               message="the good handler acted")
    wait_until(lambda: "plain" in ticket(oagt, other, o["number"])["tags"], 30,
               message="the other tenant's rules acted")
    errors = wait_until(lambda: [e for e in ticket_events(agt, slug, t["number"])
                                 if e["action"] == "rule.error"] or None, 20,
                        message="errors recorded")
    lines = sorted(e["after"]["line"] for e in errors)
    assert lines == [3, 6, 9, 12, 15, 18, 21, 24], errors
    kinds = {e["after"]["line"]: e["after"].get("kind") for e in errors}
    assert kinds[3] == "budget" and kinds[6] == "memory"
    assert all(e["after"]["script"] == "hostile" for e in errors)
    msgs = {e["after"]["line"]: e["after"]["message"] for e in errors}
    assert "instruction budget" in msgs[3] and "memory limit" in msgs[6]
    assert "binary" in msgs[18] and "read-only" in msgs[21] and "launch_missiles" in msgs[24]
    assert ticket(agt, slug, t["number"])["priority"] == "normal"
    assert not os.path.exists("/tmp/pwned-by-rules")
    # the server is unharmed and logged each failure with the script and line
    expect(ApiClient(rsrv).get("/healthz"), 200)
    log = rsrv.log_text()
    assert "hostile.lua:3: instruction budget exceeded" in log
    # and it keeps serving the tenant
    t2 = new_ticket(agt, slug)
    wait_until(lambda: "survived" in ticket(agt, slug, t2["number"])["tags"], 60,
               message="second ticket")


# ---------------------------------------------------------------------------
# SLA
# ---------------------------------------------------------------------------

RIGA = zoneinfo.ZoneInfo("Europe/Riga")


def test_gold_sla_on_business_hours_across_weekend_and_holiday(database, rsrv):
    """Hours only on Mondays 10:00-11:00 in Riga, and the next Monday a
    holiday: a 1h first-response target must land on the Monday after it,
    whatever day the test runs."""
    slug, adm, agt = setup_tenant(database, rsrv)
    today = datetime.datetime.now(RIGA).date()
    nxt = today + datetime.timedelta(days=(7 - today.weekday()) % 7 or 7)
    holidays = [nxt.isoformat()] + ([today.isoformat()] if today.weekday() == 0 else [])
    source = f'''
calendar "mondays" {{ tz = "Europe/Riga", hours = {{ mon = {{"10:00", "11:00"}} }},
                      holidays = {{ {", ".join(json.dumps(h) for h in holidays)} }} }}
sla "gold" {{ match = function(t) return t.customer.tier == "gold" end,
             first_response = "1h", next_response = "30m", resolution = "2h",
             calendar = "mondays", pause_when = {{ "pending", "on_hold" }}, warn_before = "15m" }}
sla "standard" {{ first_response = "1d", calendar = "mondays" }}
'''
    expect(put_rule(adm, slug, "sla", source), 200)
    t = new_ticket(agt, slug, tier="gold")
    sla = wait_until(lambda: ticket(agt, slug, t["number"])["sla"], 20, message="SLA computed")
    assert sla["policy"] == "gold"
    first = nxt + datetime.timedelta(days=7)
    want_first = datetime.datetime(first.year, first.month, first.day, 11, 0, tzinfo=RIGA)
    second = nxt + datetime.timedelta(days=14)
    want_res = datetime.datetime(second.year, second.month, second.day, 11, 0, tzinfo=RIGA)
    assert ts(sla["first_response_due"]) == want_first.timestamp(), sla
    assert ts(sla["resolution_due"]) == want_res.timestamp(), sla
    assert sla["next_response_due"] is None and sla["paused"] is False
    # a standard customer gets the other policy (24 business hours = 24 Mondays)
    s = new_ticket(agt, slug)
    ssla = wait_until(lambda: ticket(agt, slug, s["number"])["sla"], 20, message="standard SLA")
    assert ssla["policy"] == "standard"
    assert ts(ssla["first_response_due"]) > want_res.timestamp()
    # timers wait for both targets and their warnings
    tid = psql(database, f"SELECT id FROM tickets WHERE number = {t['number']}"
                         f" AND tenant_id = (SELECT id FROM tenants WHERE slug = '{slug}')").strip()
    names = psql(database, f"SELECT string_agg(name, ',' ORDER BY name) FROM timers"
                           f" WHERE ticket_id = {tid}").strip()
    assert names == ("sla.first_response,sla.first_response.warning,"
                     "sla.resolution,sla.resolution.warning")


def test_pending_pauses_the_clock(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    expect(put_rule(adm, slug, "sla", 'sla "all" { first_response = "1h", resolution = "1d",'
                                      ' pause_when = { "pending" } }\n'), 200)
    t = new_ticket(agt, slug)
    n = t["number"]
    sla = wait_until(lambda: ticket(agt, slug, n)["sla"], 20, message="SLA computed")
    due0 = ts(sla["first_response_due"])
    assert abs(due0 - ts(t["created_at"]) - 3600) <= 1
    expect(agt.patch(f"tenants/{slug}/tickets/{n}", {"status": "pending"}), 200)
    wait_until(lambda: ticket(agt, slug, n)["sla"]["paused"], 20, message="paused")
    tid = psql(database, f"SELECT t.id FROM tickets t JOIN tenants x ON x.id = t.tenant_id"
                         f" WHERE x.slug = '{slug}' AND t.number = {n}").strip()
    # while paused, nothing can breach
    assert psql(database, f"SELECT count(*) FROM timers WHERE ticket_id = {tid}"
                          f" AND name LIKE 'sla.%'").strip() == "0"
    time.sleep(3)
    expect(agt.patch(f"tenants/{slug}/tickets/{n}", {"status": "open"}), 200)
    after = wait_until(lambda: (lambda s: s if not s["paused"] else None)(
        ticket(agt, slug, n)["sla"]), 20, message="resumed")
    moved = ts(after["first_response_due"]) - due0
    assert 3 <= moved <= 30, (due0, after)
    # the first reply meets the target: no first-response due any more
    expect(agt.post(f"tenants/{slug}/tickets/{n}/messages", {"kind": "reply", "text": "on it"}),
           201)
    wait_until(lambda: ticket(agt, slug, n)["sla"]["first_response_due"] is None, 20,
               message="first response met")
    # a customer's answer starts the next-response clock only when the policy has one
    assert ticket(agt, slug, n)["sla"]["resolution_due"]


def comp_rows(db, slug):
    return psql(db, "SELECT c.status || ':' || c.amount || ':' || c.issued_by_rule FROM"
                    " compensations c JOIN tenants t ON t.id = c.tenant_id"
                    f" WHERE t.slug = '{slug}' ORDER BY c.id").split()


def test_breach_escalates_and_compensates_once_with_two_workers(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    expect(adm.post(f"tenants/{slug}/teams", {"name": "supervisors"}), 201)
    cli_agent(database, f"sup@{slug}.example", slug, "supervisor")
    sup = api_login(rsrv, f"sup@{slug}.example")
    # a budget that takes one credit of 10 EUR, not two
    expect(adm.request("PUT", f"tenants/{slug}/compensations/policy",
                       {"authority": {}, "monthly_budget": {"EUR": 15}}), 200)
    sla = ('sla "gold" { match = function(t) return t.customer.tier == "gold" end,'
           ' first_response = "3s", resolution = "1h", warn_before = "1s" }\n')
    expect(put_rule(adm, slug, "sla", sla), 200)
    a = new_ticket(agt, slug, tier="gold")
    b = new_ticket(agt, slug, tier="gold")
    for t in (a, b):
        wait_until(lambda: ticket(agt, slug, t["number"])["escalation_level"] == 1, 30,
                   message=f"#{t['number']} escalated")
    time.sleep(3)   # any duplicate firing would have happened by now
    wait_until(lambda: rules_settled(database), 20, message="queue drained")
    for t in (a, b):
        doc = ticket(agt, slug, t["number"])
        assert doc["escalation_level"] == 1 and doc["priority"] == "high"
        assert doc["sla"]["breached"] == ["first_response"]
        evs = ticket_events(agt, slug, t["number"])
        assert [e["action"] for e in evs].count("ticket.escalated") == 1, evs
        assert [e["action"] for e in evs].count("rule.compensate") == 1, evs
    # one credit issued, the second past the budget waits for approval
    assert comp_rows(database, slug) == ["issued:10.00:compensation",
                                         "pending_approval:10.00:compensation"]
    # the warning and the breach notified the supervisor (once per ticket each)
    n = int(psql(database, "SELECT count(*) FROM notifications x JOIN tenants t"
                           f" ON t.id = x.tenant_id WHERE t.slug = '{slug}'"
                           f" AND x.agent_id = {sup.id}"))
    assert n == 4, n
    mine = expect(sup.get(f"tenants/{slug}/notifications", unread="true"), 200)["items"]
    assert len(mine) == 4 and {m["ticket"] for m in mine} == {a["number"], b["number"]}
    assert any("breached its first_response target" in m["text"] for m in mine)
    assert expect(sup.post(f"tenants/{slug}/notifications/read", {"ids": [mine[0]["id"]]}),
                  200) == {"read": 1}
    assert len(expect(sup.get(f"tenants/{slug}/notifications", unread="true"), 200)["items"]) == 3
    assert expect(sup.post(f"tenants/{slug}/notifications/read", {}), 200) == {"read": 3}
    assert expect(sup.get(f"tenants/{slug}/notifications", unread="true"), 200)["items"] == []
    assert len(expect(sup.get(f"tenants/{slug}/notifications"), 200)["items"]) == 4
    expect(sup.post(f"tenants/{slug}/notifications/read", {"ids": ["x"]}), 422, field="ids")
    expect(sup.post(f"tenants/{slug}/notifications/read", {"other": 1}), 422)
    expect(sup.get(f"tenants/{slug}/notifications", unread="maybe"), 422, field="unread")
    # another agent sees none of them
    assert expect(agt.get(f"tenants/{slug}/notifications"), 200)["items"] == []
    # the escalation script's own timer is pending for level 2
    assert psql(database, "SELECT count(*) FROM timers x JOIN tenants t ON t.id = x.tenant_id"
                          f" WHERE t.slug = '{slug}' AND x.name = 'escalate'").strip() == "2"


def test_timer_due_during_a_restart_fires_after_it(database, start_server):
    srv = start_server(database)
    slug, adm, agt = setup_tenant(database, srv)
    expect(put_rule(adm, slug, "ping", '''
on("ticket.created", function(ev, act) act.schedule { name = "ping", after = "3s" } end)
on("timer.ping", function(ev, act) act.tag("pinged") end)
'''), 200)
    n = new_ticket(agt, slug)["number"]
    wait_until(lambda: psql(database, "SELECT count(*) FROM timers WHERE name = 'ping'").strip()
               == "1", 20, message="timer scheduled")
    assert srv.stop() == 0
    time.sleep(4)
    srv2 = start_server(database)
    agt2 = api_login(srv2, f"agent@{slug}.example")
    wait_until(lambda: "pinged" in ticket(agt2, slug, n)["tags"], 30, message="fired after start")
    assert psql(database, "SELECT count(*) FROM timers WHERE name = 'ping'").strip() == "0"
    evs = ticket_events(agt2, slug, n)
    assert [e["action"] for e in evs].count("rule.tag") == 1


def test_agent_away_hands_tickets_over(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    team = expect(adm.post(f"tenants/{slug}/teams", {"name": "desk"}), 201)
    cli_agent(database, f"bob@{slug}.example", slug, "agent")
    bob = api_login(rsrv, f"bob@{slug}.example")
    for who in (agt, bob):
        expect(adm.post(f"tenants/{slug}/teams/{team['id']}/members", {"agent": who.id}), 204)
    n = new_ticket(agt, slug)["number"]
    expect(agt.patch(f"tenants/{slug}/tickets/{n}", {"assignee": agt.id, "team": team["id"]}), 200)
    r = expect(agt.request("PUT", f"tenants/{slug}/agents/{agt.id}/away", {"away": True}), 200)
    assert r["away"] is True and r["handed_over"] == 1
    wait_until(lambda: (ticket(agt, slug, n)["assignee"] or {}).get("id") == bob.id, 20,
               message="handed over to bob")
    # an agent may not mark someone else away
    expect(agt.request("PUT", f"tenants/{slug}/agents/{bob.id}/away", {"away": True}), 404)
    expect(agt.request("PUT", f"tenants/{slug}/agents/{agt.id}/away", {"away": "yes"}), 422)


# ---------------------------------------------------------------------------
# tools for rule authors
# ---------------------------------------------------------------------------

def test_rules_check_on_the_defaults_and_on_mistakes(tmp_path):
    cp = run_cli(["rules", "check"] + DEFAULTS)
    assert cp.returncode == 0, cp.stderr
    assert "6 scripts ok" in cp.stdout and "gold, urgent, standard" in cp.stdout
    bad = tmp_path / "bad.lua"
    bad.write_text('on("ticket.created", function(ev, act)\n'
                   '  act.set_prioity("high")\n'
                   'end)\n'
                   'local x = = 1\n')
    cp = run_cli(["rules", "check", str(bad)])
    assert cp.returncode == 1
    assert f"{bad}:2: unknown action act.set_prioity" in cp.stderr, cp.stderr
    assert f"{bad}:4:" in cp.stderr, cp.stderr


def test_rules_test_runs_fixtures_against_the_defaults(tmp_path):
    cp = run_cli(["rules", "test"] + DEFAULTS + [FIXTURES])
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = [json.loads(l) for l in cp.stdout.splitlines()]
    breach = [l for l in lines if l["type"] == "sla.breached" and l["actions"]][0]
    assert [a["type"] for a in breach["actions"]] == ["compensate", "escalate", "schedule"]
    assert not any("fail" in l for l in lines)
    created = [l for l in lines if l["type"] == "ticket.created"][0]
    assert created["sla"]["policy"] == "gold"
    # a wrong expectation fails the run
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"type": "sla.breached", "customer": {"tier": "gold"},
                                 "data": {"target": "first_response", "due_at": 0},
                                 "expect": ["escalate"]}))
    cp = run_cli(["rules", "test"] + DEFAULTS + [str(wrong)])
    assert cp.returncode == 1 and "expectation" in cp.stderr


def test_rules_replay_compares_a_candidate_with_the_active_scripts(database, rsrv, tmp_path):
    slug, adm, agt = setup_tenant(database, rsrv)
    for _ in range(3):
        new_ticket(agt, slug, tier="gold")
    n = new_ticket(agt, slug)["number"]
    expect(agt.post(f"tenants/{slug}/tickets/{n}/messages", {"kind": "reply", "text": "hi"}), 201)
    wait_until(lambda: rules_settled(database), 30, message="history recorded")
    candidate = tmp_path / "sla.lua"
    candidate.write_text('sla "gold" { match = function(t) return t.customer.tier == "gold" end,'
                         ' first_response = "1s", resolution = "1d" }\n'
                         'sla "standard" { first_response = "1d" }\n')
    time.sleep(2)
    before = psql(database, "SELECT count(*), max(id) FROM rule_events")
    cp = run_cli(["rules", "replay", "--tenant", slug, str(candidate), "--since", "2000-01-01"],
                 env_extra={"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode == 0, cp.stdout + cp.stderr
    out = cp.stdout
    rows = {l[:22].strip(): l[22:].split() for l in out.splitlines() if l[:22].strip()}
    assert rows["SLA breaches"][:2] == ["0", "3"], out
    assert rows["escalations"][:2] == ["0", "3"], out
    assert "30.00 EUR" in out and "replayed" in out
    # read-only: nothing was written
    assert psql(database, "SELECT count(*), max(id) FROM rule_events") == before
    cp = run_cli(["rules", "replay", "--tenant", "nosuch", str(candidate), "--since", "2000-01-01"],
                 env_extra={"SWITCHBOARD_DATABASE_URL": database})
    assert cp.returncode != 0 and "nosuch" in cp.stderr


# ---------------------------------------------------------------------------
# webhooks from act.notify
# ---------------------------------------------------------------------------

class Receiver:
    """A local HTTP receiver that answers 503 to the first `fail` posts."""

    def __init__(self, fail=0):
        import http.server
        import threading
        self.posts = []
        self.fail = fail
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts.append((dict(self.headers), body))
                if len(outer.posts) <= outer.fail:
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_notify_webhook_is_signed_retried_and_delivered_once(database, start_server):
    import hashlib
    import hmac
    srv = start_server(database, workers=2, env={"SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE": "1"})
    rcv = Receiver(fail=1)
    try:
        slug, adm, agt = setup_tenant(database, srv)
        expect(put_rule(adm, slug, "hooks", 'on("ticket.created", function(ev, act)\n'
                        f'  act.notify {{ webhook = "{rcv.url}", text = "new ticket" }}\n'
                        'end)\n'), 200)
        n = new_ticket(agt, slug)["number"]
        wait_until(lambda: len(rcv.posts) >= 2, 30, message="a retry after the 503")
        time.sleep(2)
        assert len(rcv.posts) == 2, rcv.posts
        key = expect(adm.get(f"tenants/{slug}/webhooks/key"), 200)["key"]
        expect(agt.get(f"tenants/{slug}/webhooks/key"), 403)
        for headers, body in rcv.posts:
            doc = json.loads(body)
            assert doc == {"ticket": n, "text": "new ticket", "rule": "hooks", "tenant": slug}
            want = hmac.new(bytes.fromhex(key), body, hashlib.sha256).hexdigest()
            assert headers["X-Switchboard-Signature"] == "sha256=" + want
        assert rcv.posts[0][0]["X-Switchboard-Delivery"] == rcv.posts[1][0]["X-Switchboard-Delivery"]
        assert psql(database, "SELECT status || ':' || attempts FROM webhook_deliveries").strip() \
            == "sent:2"
    finally:
        rcv.close()


def test_webhooks_may_not_reach_private_addresses_by_default(database, start_server):
    srv = start_server(database)
    rcv = Receiver()
    try:
        slug, adm, agt = setup_tenant(database, srv)
        expect(put_rule(adm, slug, "hooks", 'on("ticket.created", function(ev, act)\n'
                        f'  act.notify {{ webhook = "{rcv.url}" }}\n'
                        'end)\n'), 200)
        new_ticket(agt, slug)
        got = wait_until(lambda: psql(database, "SELECT status || ':' || last_error"
                                                " FROM webhook_deliveries").strip()
                         .startswith("failed") and psql(database, "SELECT last_error FROM"
                                                                  " webhook_deliveries"), 30,
                         message="delivery refused")
        assert "not public" in got
        assert rcv.posts == []
    finally:
        rcv.close()


# ---------------------------------------------------------------------------
# every action, applied
# ---------------------------------------------------------------------------

ACTIONS = r'''
template "ack" { text = "Hello {{customer.name}}, ticket #{{ticket.number}} is ours.",
                 html = "<p>Hello {{customer.name}}</p>" }
on("ticket.created", function(ev, act)
  if ev.ticket.subject ~= "all actions" then return end
  act.set_priority("urgent")
  act.tag { "a", "b", "c" }
  act.untag("b")
  act.assign { team = "desk", strategy = "round_robin" }
  act.reply { template = "ack" }
  act.note("internal: " .. ev.customer.name)
  act.link_problem("Printer driver 4.2")
  act.link_identity { kind = "phone", value = "+371 2000 0000" }
  act.schedule { name = "later", after = "1h" }
  act.schedule { name = "gone", after = "1h" }
  act.cancel("gone")
  act.set_status("pending")
  act.assign { team = "no such team" }
end)
'''


def test_every_action_applies(database, rsrv):
    slug, adm, agt = setup_tenant(database, rsrv)
    team = expect(adm.post(f"tenants/{slug}/teams", {"name": "desk"}), 201)
    cli_agent(database, f"bob@{slug}.example", slug, "agent")
    bob = api_login(rsrv, f"bob@{slug}.example")
    for who in (agt, bob):
        expect(adm.post(f"tenants/{slug}/teams/{team['id']}/members", {"agent": who.id}), 204)
    # the phone belongs to another customer, who is merged into this one
    other = expect(agt.post(f"tenants/{slug}/customers",
                            {"name": "Same Person", "identities": [
                                {"kind": "phone", "value": "+371 2000 0000"}]}), 201)
    expect(put_rule(adm, slug, "actions", ACTIONS), 200)
    t1 = new_ticket(agt, slug, subject="all actions")
    n = t1["number"]
    doc = wait_until(lambda: (lambda d: d if d["status"] == "pending" else None)(
        ticket(agt, slug, n)), 30, message="actions applied")
    assert doc["priority"] == "urgent"
    assert doc["tags"] == ["a", "c"]
    assert doc["team"]["name"] == "desk" and doc["assignee"]["id"] in (agt.id, bob.id)
    assert doc["problem"]["title"] == "Printer driver 4.2"
    msgs = doc["messages"]
    reply = [m for m in msgs if m["direction"] == "outbound"][0]
    name = doc["customer"]["name"]
    assert reply["text"] == f"Hello {name}, ticket #{n} is ours."
    assert reply["html"] == f"<p>Hello {name}</p>" and reply["author"] is None
    assert [m["text"] for m in msgs if m["direction"] == "note"] == [f"internal: {name}"]
    # an automatic reply is not the first response
    assert doc["first_response_at"] is None
    idents = {(i["kind"], i["value"]) for i in doc["customer"]["identities"]}
    assert ("phone", "+371 2000 0000") in idents
    merged = expect(agt.get(f"tenants/{slug}/customers/{other['id']}"), 200)
    assert merged["merged_into"] == doc["customer"]["id"]
    tid = psql(database, f"SELECT t.id FROM tickets t JOIN tenants x ON x.id = t.tenant_id"
                         f" WHERE x.slug = '{slug}' AND t.number = {n}").strip()
    assert psql(database, f"SELECT string_agg(name, ',' ORDER BY name) FROM timers"
                          f" WHERE ticket_id = {tid} AND name NOT LIKE 'sla.%'").strip() == "later"
    # what could not apply is recorded, the rest applied
    evs = ticket_events(agt, slug, n)
    failed = [e for e in evs if e["action"] == "rule.action_failed"]
    assert len(failed) == 1 and "no such team" in failed[0]["after"]["message"]
    assert {"rule.set_priority", "rule.tag", "rule.untag", "rule.assign", "rule.reply",
            "rule.note", "rule.link_problem", "rule.link_identity",
            "rule.set_status"} <= {e["action"] for e in evs}
    # round robin: the next ticket goes to the other member
    n2 = new_ticket(agt, slug, subject="all actions")["number"]
    d2 = wait_until(lambda: (lambda d: d if d["status"] == "pending" else None)(
        ticket(agt, slug, n2)), 30, message="second ticket")
    assert {d2["assignee"]["id"], doc["assignee"]["id"]} == {agt.id, bob.id}
