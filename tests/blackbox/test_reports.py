"""The Reports API (GET /api/v1/tenants/{tenant}/reports/<name>): every
report's numbers checked exactly against a small fixture computed by hand,
CSV equal to JSON, the filters, week and month periods, the roles, tenant
isolation and bad parameters.  One server for the module.

The fixture is inserted with psql as the superuser, with triggers off
(session_replication_role = replica): no rule events, so the rules engine
never touches the SLA rows written here.  All times are UTC; the range is
two ISO weeks, Monday 2024-03-04 to Sunday 2024-03-17, and the retention
report's next period is 2024-03-18 to 2024-03-31.

Business seconds (ticket_sla.*_secs) are on a Monday-Friday 09:00-18:00
calendar, worked out by hand next to each ticket below.

The reports read rolled-up days where they are clean and compute the
others live (0010_report_rollups.sql).  The module holds the rollup step's
lock, so the server's own step never runs and each test knows which path
it reads: the hand-checked tests read the rollups (built once the fixture
is in), test_rollups_match_live compares both paths over many variants,
with and without a change since the rollups were built."""

import csv
import datetime
import io
import json
import os
import subprocess
import types

import pytest

from conftest import PGBIN, ApiClient, api_login, cli_agent, cli_tenant, expect, psql

A = "rep-a"
B = "rep-b"
FROM, TO = "2024-03-04", "2024-03-17"

COLUMNS = {
    "volume": ["period", "created", "solved", "backlog"],
    "response-times": ["period", "tickets", "first_response_count", "first_response_median",
                       "first_response_p90", "resolution_count", "resolution_median",
                       "resolution_p90"],
    "sla": ["period", "tickets", "with_policy", "breached", "attainment",
            "first_response_breaches", "next_response_breaches", "resolution_breaches"],
    "csat": ["kind", "id", "name", "ratings", "average", "satisfied_share", "offered",
             "answered", "response_rate"],
    "agents": ["agent", "name", "handled", "first_response_median", "resolution_median",
               "csat_ratings", "csat_average", "compensations", "compensation"],
    "compensation": ["month", "reason", "currency", "count", "amount", "pending"],
    "retention": ["segment", "customers", "returned", "silent", "return_rate"],
    "channels": ["period", "channel", "created", "solved"],
    "problems": ["kind", "id", "name", "status", "tickets"],
}
REPORTS = list(COLUMNS)


# ---------------------------------------------------------------------------
# the fixture
# ---------------------------------------------------------------------------

def lit(v):
    """A SQL literal of a test value (None, int, str, list of str)."""
    if v is None:
        return "NULL"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "ARRAY[" + ", ".join(lit(x) for x in v) + "]::text[]" if v else "'{}'::text[]"
    return "'" + str(v).replace("'", "''") + "'"


def ts(s):
    return None if s is None else s + "+00"


class Fixture:
    def __init__(self, db):
        self.db = db
        self.numbers = {}

    def one(self, sql):
        out = psql(self.db, "SET session_replication_role = replica; " + sql).strip()
        return int(out) if out.isdigit() else out

    def customer(self, tenant, name, kind="external"):
        return self.one(f"INSERT INTO customers (tenant_id, name, kind) VALUES"
                        f" ({tenant}, {lit(name)}, {lit(kind)}) RETURNING id")

    def ticket(self, tenant, created, channel, customer, status, priority="normal",
               assignee=None, team=None, tags=(), first_response=None, solved=None,
               problem=None):
        n = self.numbers[tenant] = self.numbers.get(tenant, 0) + 1
        return self.one(
            "INSERT INTO tickets (tenant_id, number, subject, status, priority, channel,"
            " customer_id, assignee_id, team_id, tags, created_at, updated_at,"
            " first_response_at, solved_at, problem_id) VALUES"
            f" ({tenant}, {n}, 'ticket {n}', {lit(status)}, {lit(priority)}, {lit(channel)},"
            f" {customer}, {lit(assignee)}, {lit(team)}, {lit(list(tags))}, {lit(ts(created))},"
            f" {lit(ts(created))}, {lit(ts(first_response))}, {lit(ts(solved))}, {lit(problem)})"
            " RETURNING id")

    def sla(self, tenant, ticket, breached=(), first_response_secs=None, resolution_secs=None):
        self.one("INSERT INTO ticket_sla (tenant_id, ticket_id, policy, state, breached,"
                 " first_response_secs, resolution_secs) VALUES"
                 f" ({tenant}, {ticket}, 'standard', '{{}}', {lit(list(breached))},"
                 f" {lit(first_response_secs)}, {lit(resolution_secs)})")

    def survey(self, tenant, ticket, agent, created, answered=None, rating=None, customer=None):
        sid = self.one(
            "INSERT INTO surveys (tenant_id, ticket_id, agent_id, nonce, created_at, expires_at,"
            f" answered_at) VALUES ({tenant}, {ticket}, {lit(agent)},"
            f" uuid_send(gen_random_uuid()), {lit(ts(created))},"
            f" {lit(ts(created))}::timestamptz + interval '7 days', {lit(ts(answered))})"
            " RETURNING id")
        if rating is not None:
            self.one("INSERT INTO feedback (tenant_id, survey_id, ticket_id, customer_id,"
                     " agent_id, rating, created_at) VALUES"
                     f" ({tenant}, {sid}, {ticket}, {customer}, {lit(agent)}, {rating},"
                     f" {lit(ts(answered))})")
        return sid

    def compensation(self, tenant, ticket, customer, kind, amount, currency, reason, agent,
                     status, created, description=None):
        decided = lit(ts(created)) if status in ("approved", "rejected") else "NULL"
        self.one("INSERT INTO compensations (tenant_id, ticket_id, customer_id, kind, amount,"
                 " currency, description, reason, issued_by_agent, status, decided_at,"
                 f" created_at) VALUES ({tenant}, {lit(ticket)}, {customer}, {lit(kind)},"
                 f" {lit(amount) if amount is None else amount}, {lit(currency)},"
                 f" {lit(description)}, {lit(reason)}, {agent}, {lit(status)}, {decided},"
                 f" {lit(ts(created))})")


class RollupSession:
    """A psql session that holds the rollup step's advisory lock (the
    server's step then finds it taken and does nothing) and runs the step
    itself when told to."""

    def __init__(self, db):
        self.p = subprocess.Popen([os.path.join(PGBIN, "psql"), "-X", "-q", "-A", "-t",
                                   "-v", "ON_ERROR_STOP=1", "-d", db],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.run("SELECT pg_advisory_lock(hashtext('switchboard report rollup'))")

    def run(self, sql):
        self.p.stdin.write(sql + ";\n\\echo --done--\n")
        self.p.stdin.flush()
        lines = []
        while True:
            line = self.p.stdout.readline()
            assert line, "the psql session ended"
            if line.strip() == "--done--":
                return lines
            lines.append(line.strip())

    def build(self):
        """Runs the step until nothing is left to build."""
        for _ in range(1000):
            if self.run("SELECT sb_report_rollup(400)") == ["0"]:
                return
        raise AssertionError("the rollup step never finished")

    def forget(self):
        """Drops every rollup: every day is read live."""
        self.run("DELETE FROM report_rollup_state; DELETE FROM report_facts;"
                 " DELETE FROM report_tag_facts; DELETE FROM report_month_facts;"
                 " DELETE FROM report_month_tag_facts; DELETE FROM report_months;"
                 " DELETE FROM report_dirty")

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    rollups = RollupSession(db)
    try:
        yield from env_setup(db, module_start_server, rollups)
    finally:
        rollups.close()


def env_setup(db, module_start_server, rollups):
    srv = module_start_server(db)
    cli_tenant(db, A, "Reports A")
    cli_tenant(db, B, "Reports B")
    cli_agent(db, "adm@rep-a.example", A, "admin", name="Ann Admin")
    cli_agent(db, "sup@rep-a.example", A, "supervisor", name="Sam Supervisor")
    cli_agent(db, "vw@rep-a.example", A, "viewer", name="Vic Viewer")
    cli_agent(db, "ag1@rep-a.example", A, "agent", name="Ada Agent")
    # A comma in a name: CSV has to quote it.
    cli_agent(db, "ag2@rep-a.example", A, "agent", name="Doe, Jane")
    cli_agent(db, "vw@rep-b.example", B, "viewer", name="Bob Viewer")
    cli_agent(db, "ag@rep-b.example", B, "agent", name="Ben Agent")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.adm = api_login(srv, "adm@rep-a.example")
    e.sup = api_login(srv, "sup@rep-a.example")
    e.vw = api_login(srv, "vw@rep-a.example")
    e.ag1 = api_login(srv, "ag1@rep-a.example")
    e.ag2 = api_login(srv, "ag2@rep-a.example")
    e.vwb = api_login(srv, "vw@rep-b.example")
    e.agb = api_login(srv, "ag@rep-b.example")
    f = Fixture(db)
    ta = int(psql(db, f"SELECT id FROM tenants WHERE slug = '{A}'"))
    tb = int(psql(db, f"SELECT id FROM tenants WHERE slug = '{B}'"))
    ag1, ag2 = e.ag1.id, e.ag2.id

    # ---- tenant A ----
    e.team = team = f.one(f"INSERT INTO teams (tenant_id, name) VALUES ({ta}, 'Billing')"
                          " RETURNING id")
    f.one(f"INSERT INTO team_members (tenant_id, team_id, agent_id) VALUES ({ta}, {team}, {ag1})")
    ext1 = f.customer(ta, "Ext One")
    ext2 = f.customer(ta, "Ext Two")
    ext3 = f.customer(ta, "Ext Three")
    intl = f.customer(ta, "Int Staff", "internal")
    p1 = f.one(f"INSERT INTO problems (tenant_id, title, status) VALUES"
               f" ({ta}, 'Login outage', 'open') RETURNING id")
    p2 = f.one(f"INSERT INTO problems (tenant_id, title, status) VALUES"
               f" ({ta}, 'Slow invoices', 'known_error') RETURNING id")
    e.p1, e.p2 = p1, p2

    # T1 Mon 03-04 09:00, answered 09:30, solved Tue 10:00.  Business:
    # first response 30 min = 1800; resolution Mon 09-18 (9 h) + Tue
    # 09-10 (1 h) = 10 h = 36000.
    t1 = f.ticket(ta, "2024-03-04 09:00", "email", ext1, "solved", "high", ag1, team,
                  ["billing", "refund"], "2024-03-04 09:30", "2024-03-05 10:00", p1)
    f.sla(ta, t1, [], 1800, 36000)
    # T2, the business-hours case: created Friday 03-08 17:00, answered
    # Monday 03-11 10:00 (wall clock 65 h = 234000 s), solved Monday 12:00.
    # Business: first response Fri 17-18 (1 h) + Mon 09-10 (1 h) = 7200;
    # resolution Fri 17-18 (1 h) + Mon 09-12 (3 h) = 14400.
    t2 = f.ticket(ta, "2024-03-08 17:00", "chat", ext2, "solved", "normal", ag2, None,
                  ["billing"], "2024-03-11 10:00", "2024-03-11 12:00")
    f.sla(ta, t2, [], 7200, 14400)
    # T3, the SLA breach: internal customer, created Tue 03-05 10:00,
    # answered 16:00 (6 business hours = 21600 over a 4 h target), closed
    # with solved_at Tue 03-12 10:00: Tue 8 h + Wed, Thu, Fri, Mon 9 h each
    # + Tue 1 h = 45 h = 162000.
    t3 = f.ticket(ta, "2024-03-05 10:00", "email", intl, "closed", "urgent", ag1, team,
                  ["outage"], "2024-03-05 16:00", "2024-03-12 10:00", p1)
    f.sla(ta, t3, ["first_response"], 21600, 162000)
    # T4: no SLA row, wall clock: first response 20 min = 1200, resolution
    # 3 h = 10800.
    t4 = f.ticket(ta, "2024-03-12 08:00", "chat", ext1, "solved", "normal", ag2, None,
                  ["refund"], "2024-03-12 08:20", "2024-03-12 11:00")
    # T5: open, never answered, two targets breached, no times yet.
    t5 = f.ticket(ta, "2024-03-13 12:00", "email", ext3, "open", "low", ag1, team, [],
                  None, None, p2)
    f.sla(ta, t5, ["first_response", "resolution"])
    # T6: pending, no SLA row, answered after 10 min; a tag with a comma and
    # quotes (CSV quoting).
    t6 = f.ticket(ta, "2024-03-15 14:00", "chat", ext2, "pending", "normal", None, None,
                  ["billing", 'vip, "gold"'], "2024-03-15 14:10")
    # T7: open since before the range (backlog at the start).
    f.ticket(ta, "2024-02-20 10:00", "email", ext1, "open", "normal", ag1)
    # T8: created Sunday 02-25, answered the same day (before business hours
    # start: 0 business seconds), solved Wed 03-06 12:00: seven business
    # days of 9 h + Wed 09-12 = 66 h = 237600, resolution breached.  Open at
    # the start, solved in the range.
    t8 = f.ticket(ta, "2024-02-25 10:00", "email", ext3, "solved", "normal", ag2, None, [],
                  "2024-02-25 11:00", "2024-03-06 12:00")
    f.sla(ta, t8, ["resolution"], 0, 237600)
    # T9 solved before the range; T10 closed without ever being solved: in
    # no backlog.
    t9 = f.ticket(ta, "2024-02-01 10:00", "email", ext2, "solved", "normal", ag2, None, [],
                  "2024-02-01 11:00", "2024-02-02 10:00")
    f.ticket(ta, "2024-02-10 10:00", "email", ext2, "closed", "normal")
    # The next period: Ext One comes back at its first instant, Int Staff
    # later; Ext Two only after it ends.
    f.ticket(ta, "2024-03-18 00:00", "email", ext1, "new")
    f.ticket(ta, "2024-03-25 10:00", "chat", intl, "new")
    f.ticket(ta, "2024-04-05 10:00", "chat", ext2, "new")

    # Surveys and ratings.
    f.survey(ta, t1, ag1, "2024-03-05 10:00", "2024-03-05 12:00", 5, ext1)
    f.survey(ta, t2, ag2, "2024-03-11 12:00", "2024-03-11 13:00", 2, ext2)
    f.survey(ta, t3, ag1, "2024-03-12 10:00")
    f.survey(ta, t4, ag2, "2024-03-12 11:00", "2024-03-12 12:00", 4, ext1)
    f.survey(ta, t8, ag2, "2024-03-06 12:00", "2024-03-06 13:00", 1, ext3)
    f.survey(ta, t9, ag2, "2024-02-02 10:00", "2024-02-02 11:00", 3, ext2)  # before

    # Compensations.
    f.compensation(ta, t1, ext1, "credit", "10.00", "EUR", "sla_breach", ag1, "issued",
                   "2024-03-05 12:00")
    f.compensation(ta, t3, intl, "refund", "25.50", "EUR", "outage", ag1, "approved",
                   "2024-03-06 09:00")
    f.compensation(ta, t2, ext2, "credit", "5.00", "USD", "sla_breach", ag2,
                   "pending_approval", "2024-03-11 14:00")
    f.compensation(ta, t4, ext1, "gift", None, None, "goodwill", ag2, "issued",
                   "2024-03-12 12:00", description="a mug")
    f.compensation(ta, t5, ext3, "credit", "7.00", "EUR", "sla_breach", ag1, "rejected",
                   "2024-03-13 13:00")
    f.compensation(ta, None, ext2, "credit", "100.00", "EUR", "goodwill", ag1, "issued",
                   "2024-02-15 10:00")  # before the range, no ticket

    # ---- tenant B: numbers that would show if they leaked into A's ----
    agb = e.agb.id
    bc1 = f.customer(tb, "B One")
    bc2 = f.customer(tb, "B Two", "internal")
    bp = f.one(f"INSERT INTO problems (tenant_id, title) VALUES ({tb}, 'B problem') RETURNING id")
    b1 = f.ticket(tb, "2024-03-05 09:00", "sms", bc1, "solved", "high", agb, None, ["leak"],
                  "2024-03-05 09:05", "2024-03-06 09:00", bp)
    f.sla(tb, b1, ["first_response"], 300, 86400)
    b2 = f.ticket(tb, "2024-03-07 09:00", "email", bc2, "open", "normal", agb, None,
                  ["billing"], None, None, bp)
    f.ticket(tb, "2024-03-10 09:00", "chat", bc1, "new")
    f.ticket(tb, "2024-03-20 09:00", "email", bc2, "new")
    f.survey(tb, b1, agb, "2024-03-06 10:00", "2024-03-06 11:00", 1, bc1)
    f.survey(tb, b2, agb, "2024-03-08 10:00")
    f.compensation(tb, b1, bc1, "refund", "999.00", "EUR", "sla_breach", agb, "issued",
                   "2024-03-06 12:00")
    e.ids = dict(ext1=ext1, ext2=ext2, ext3=ext3, intl=intl, ag1=ag1, ag2=ag2)
    e.ta = ta
    e.rollups = rollups
    rollups.build()
    built = rollups.run(f"SELECT built_from <= '2024-03-01' AND built_through >= '2024-04-30'"
                        f" FROM report_rollup_state WHERE tenant_id = {ta}")
    assert built == ["t"], built
    # March 2024 is complete: ranges that cover it read its monthly rows.
    months = rollups.run(f"SELECT count(*) FROM report_months WHERE tenant_id = {ta}"
                         f" AND month = '2024-03-01'")
    assert months == ["1"], months
    yield e


def get(client, name, tenant=A, headers=None, **query):
    query.setdefault("from", FROM)
    query.setdefault("to", TO)
    query = {k: v for k, v in query.items() if v is not None}
    return client.get(f"tenants/{tenant}/reports/{name}", headers=headers, **query)


def report(client, name, tenant=A, **query):
    doc = expect(get(client, name, tenant, **query), 200)
    assert doc["report"] == name
    assert [list(r) for r in doc["rows"]] == [COLUMNS[name]] * len(doc["rows"])
    return doc


def by(rows, key):
    return {r[key]: r for r in rows}


def days(first, last):
    d0 = datetime.date.fromisoformat(first)
    d1 = datetime.date.fromisoformat(last)
    return [(d0 + datetime.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


# ---------------------------------------------------------------------------
# each report's numbers
# ---------------------------------------------------------------------------

def test_volume_by_day(env):
    doc = report(env.vw, "volume")
    assert doc["from"] == FROM and doc["to"] == TO and doc["group"] == "day"
    assert doc["filters"] == {"channel": None, "team": None, "agent": None, "priority": None,
                              "customer_kind": None}
    created = {"2024-03-04": 1, "2024-03-05": 1, "2024-03-08": 1, "2024-03-12": 1,
               "2024-03-13": 1, "2024-03-15": 1}
    solved = {"2024-03-05": 1, "2024-03-06": 1, "2024-03-11": 1, "2024-03-12": 2}
    # Open at the start: T7 and T8.  Then +T1 -T1(05) +T3 -T8(06) +T2(08)
    # -T2(11) +T4 -T3 -T4(12) +T5(13) +T6(15).
    backlog = [3, 3, 2, 2, 3, 3, 3, 2, 1, 2, 2, 3, 3, 3]
    assert doc["rows"] == [{"period": d, "created": created.get(d, 0),
                            "solved": solved.get(d, 0), "backlog": b}
                           for d, b in zip(days(FROM, TO), backlog)]
    assert doc["totals"] == {"created": 6, "solved": 5, "backlog": 3}


def test_volume_by_week_and_month(env):
    doc = report(env.vw, "volume", group="week")
    assert doc["group"] == "week"
    assert doc["rows"] == [
        {"period": "2024-03-04", "created": 3, "solved": 2, "backlog": 3},
        {"period": "2024-03-11", "created": 3, "solved": 3, "backlog": 3},
    ]
    # A range across months: February is cut to the range (from 02-20).
    doc = report(env.vw, "volume", group="month", **{"from": "2024-02-20"})
    assert doc["group"] == "month"
    assert doc["rows"] == [
        {"period": "2024-02-01", "created": 2, "solved": 0, "backlog": 2},
        {"period": "2024-03-01", "created": 6, "solved": 5, "backlog": 3},
    ]
    assert doc["totals"] == {"created": 8, "solved": 5, "backlog": 3}
    # Weeks start on Monday, whatever day the range starts.
    doc = report(env.vw, "volume", group="week", **{"from": "2024-03-06", "to": "2024-03-12"})
    assert [r["period"] for r in doc["rows"]] == ["2024-03-04", "2024-03-11"]
    assert [r["created"] for r in doc["rows"]] == [1, 1]   # T2; T4
    assert [r["solved"] for r in doc["rows"]] == [1, 3]    # T8; T2, T3, T4


def test_response_times(env):
    doc = report(env.vw, "response-times")
    rows = by(doc["rows"], "period")
    assert len(rows) == 14
    empty = {"tickets": 0, "first_response_count": 0, "first_response_median": None,
             "first_response_p90": None, "resolution_count": 0, "resolution_median": None,
             "resolution_p90": None}
    assert rows["2024-03-06"] == dict(period="2024-03-06", **empty)

    def one(day, fr, res):
        return {"period": day, "tickets": 1,
                "first_response_count": 0 if fr is None else 1,
                "first_response_median": fr, "first_response_p90": fr,
                "resolution_count": 0 if res is None else 1,
                "resolution_median": res, "resolution_p90": res}

    assert rows["2024-03-04"] == one("2024-03-04", 1800, 36000)
    assert rows["2024-03-05"] == one("2024-03-05", 21600, 162000)
    # The business-hours case, not the 234000 s of wall clock.
    assert rows["2024-03-08"] == one("2024-03-08", 7200, 14400)
    # No SLA row: wall clock.
    assert rows["2024-03-12"] == one("2024-03-12", 1200, 10800)
    # An SLA row without times yet counts no time (no fall back).
    assert rows["2024-03-13"] == one("2024-03-13", None, None)
    assert rows["2024-03-15"] == one("2024-03-15", 600, None)
    # First responses 600 1200 1800 7200 21600: median 1800, p90 at
    # position 3.6 = 7200 + 0.6 * 14400.  Resolutions 10800 14400 36000
    # 162000: median (14400 + 36000) / 2, p90 at 2.7 = 36000 + 0.7 * 126000.
    t = doc["totals"]
    assert t["tickets"] == 6
    assert t["first_response_count"] == 5 and t["resolution_count"] == 4
    assert t["first_response_median"] == 1800
    assert t["first_response_p90"] == pytest.approx(15840)
    assert t["resolution_median"] == 25200
    assert t["resolution_p90"] == pytest.approx(124200)

    week = report(env.vw, "response-times", group="week")["rows"]
    assert [r["period"] for r in week] == ["2024-03-04", "2024-03-11"]
    # Week 1: T1, T3, T2: 1800 7200 21600 and 14400 36000 162000.
    assert week[0]["tickets"] == 3
    assert week[0]["first_response_median"] == 7200
    assert week[0]["first_response_p90"] == pytest.approx(7200 + 0.8 * 14400)
    assert week[0]["resolution_median"] == 36000
    assert week[0]["resolution_p90"] == pytest.approx(36000 + 0.8 * 126000)
    # Week 2: T4, T5, T6: 600 1200, and 10800 alone.
    assert week[1]["tickets"] == 3
    assert week[1]["first_response_count"] == 2 and week[1]["first_response_median"] == 900
    assert week[1]["resolution_count"] == 1 and week[1]["resolution_median"] == 10800


def test_sla(env):
    doc = report(env.vw, "sla")
    rows = by(doc["rows"], "period")
    zero = {"tickets": 0, "with_policy": 0, "breached": 0, "attainment": None,
            "first_response_breaches": 0, "next_response_breaches": 0, "resolution_breaches": 0}
    assert rows["2024-03-07"] == dict(period="2024-03-07", **zero)
    assert rows["2024-03-04"] == dict(zero, period="2024-03-04", tickets=1, with_policy=1,
                                      attainment=1)
    assert rows["2024-03-05"] == dict(zero, period="2024-03-05", tickets=1, with_policy=1,
                                      breached=1, attainment=0, first_response_breaches=1)
    # T4 has no SLA: no attainment to speak of.
    assert rows["2024-03-12"] == dict(zero, period="2024-03-12", tickets=1)
    assert rows["2024-03-13"] == dict(zero, period="2024-03-13", tickets=1, with_policy=1,
                                      breached=1, attainment=0, first_response_breaches=1,
                                      resolution_breaches=1)
    # T8's breach belongs to February, when it was created.
    assert doc["totals"] == {"tickets": 6, "with_policy": 4, "breached": 2, "attainment": 0.5,
                             "first_response_breaches": 2, "next_response_breaches": 0,
                             "resolution_breaches": 1}
    week = report(env.vw, "sla", group="week")["rows"]
    assert [(r["tickets"], r["with_policy"], r["breached"], r["attainment"]) for r in week] == \
        [(3, 3, 1, 0.6667), (3, 1, 1, 0)]


def test_csat(env):
    doc = report(env.vw, "csat")
    assert doc["group"] is None
    ag1, ag2 = env.ids["ag1"], env.ids["ag2"]
    assert doc["rows"] == [
        # Ada: T1 rated 5; surveys on T1 and T3, one answered.
        {"kind": "agent", "id": ag1, "name": "Ada Agent", "ratings": 1, "average": 5,
         "satisfied_share": 1, "offered": 2, "answered": 1, "response_rate": 0.5},
        # Jane: 2, 4 and 1 (T8's rating falls in the range); all answered.
        {"kind": "agent", "id": ag2, "name": "Doe, Jane", "ratings": 3, "average": 2.33,
         "satisfied_share": 0.3333, "offered": 3, "answered": 3, "response_rate": 1},
        {"kind": "team", "id": env.team, "name": "Billing", "ratings": 1, "average": 5,
         "satisfied_share": 1, "offered": 2, "answered": 1, "response_rate": 0.5},
    ]
    assert doc["totals"] == {"ratings": 4, "average": 3, "satisfied_share": 0.5, "offered": 5,
                             "answered": 4, "response_rate": 0.8}


def test_agents(env):
    doc = report(env.vw, "agents")
    rows = by(doc["rows"], "name")
    ag1, ag2 = env.ids["ag1"], env.ids["ag2"]
    # Members who are not viewers, with or without activity.
    assert sorted(rows) == ["Ada Agent", "Ann Admin", "Doe, Jane", "Sam Supervisor"]
    assert [r["name"] for r in doc["rows"]] == sorted(rows)
    # Ada solved T1 and T3: first responses 1800 and 21600, resolutions
    # 36000 and 162000; rated 5; issued 10.00 and 25.50 EUR (not the
    # rejected 7.00, nor February's 100.00).
    assert rows["Ada Agent"] == {
        "agent": ag1, "name": "Ada Agent", "handled": 2, "first_response_median": 11700,
        "resolution_median": 99000, "csat_ratings": 1, "csat_average": 5, "compensations": 2,
        "compensation": {"EUR": 35.5}}
    # Jane solved T2, T4 and T8: 7200, 1200 (wall clock), 0 and 14400,
    # 10800, 237600; rated 2, 4, 1; gave a mug (the 5.00 USD is pending).
    assert rows["Doe, Jane"] == {
        "agent": ag2, "name": "Doe, Jane", "handled": 3, "first_response_median": 1200,
        "resolution_median": 14400, "csat_ratings": 3, "csat_average": 2.33,
        "compensations": 1, "compensation": {}}
    assert rows["Ann Admin"]["handled"] == 0 and rows["Ann Admin"]["compensation"] == {}
    assert rows["Ann Admin"]["first_response_median"] is None
    # Medians over everyone are the response-times report's.
    assert doc["totals"] == {"handled": 5, "csat_ratings": 4, "csat_average": 3,
                             "compensations": 3, "compensation": {"EUR": 35.5}}


def test_compensation(env):
    doc = report(env.vw, "compensation")
    assert doc["group"] == "month"
    assert doc["rows"] == [
        {"month": "2024-03", "reason": "goodwill", "currency": None, "count": 1,
         "amount": None, "pending": 0},
        {"month": "2024-03", "reason": "outage", "currency": "EUR", "count": 1,
         "amount": 25.5, "pending": 0},
        {"month": "2024-03", "reason": "sla_breach", "currency": "EUR", "count": 1,
         "amount": 10, "pending": 0},
        {"month": "2024-03", "reason": "sla_breach", "currency": "USD", "count": 0,
         "amount": 0, "pending": 1},
    ]
    assert doc["totals"] == {"count": 3, "pending": 1, "amount": {"EUR": 35.5}}
    # Over two months, February's goodwill is its own row.
    doc = report(env.vw, "compensation", **{"from": "2024-02-01"})
    assert doc["rows"][0] == {"month": "2024-02", "reason": "goodwill", "currency": "EUR",
                              "count": 1, "amount": 100, "pending": 0}
    assert len(doc["rows"]) == 5
    assert doc["totals"] == {"count": 4, "pending": 1, "amount": {"EUR": 135.5}}


def test_retention(env):
    doc = report(env.vw, "retention")
    assert doc["rows"] == [
        # Ext One, Int Staff, Ext Two, Ext Three; One and Int come back.
        {"segment": "all", "customers": 4, "returned": 2, "silent": 2, "return_rate": 0.5},
        # Ext Two rated 2, Ext Three rated 1: neither came back.
        {"segment": "low_rating", "customers": 2, "returned": 0, "silent": 2,
         "return_rate": 0},
        # Int Staff (T3) and Ext Three (T5).
        {"segment": "sla_breach", "customers": 2, "returned": 1, "silent": 1,
         "return_rate": 0.5},
        {"segment": "low_rating_or_sla_breach", "customers": 3, "returned": 1, "silent": 2,
         "return_rate": 0.3333},
    ]
    assert doc["totals"] == {"customers": 4, "returned": 2, "silent": 2, "return_rate": 0.5,
                             "next_from": "2024-03-18", "next_to": "2024-03-31"}
    # A shorter range has a shorter next period: one day, 03-18 only.
    doc = report(env.vw, "retention", **{"from": "2024-03-17", "to": "2024-03-17"})
    assert doc["totals"]["next_from"] == doc["totals"]["next_to"] == "2024-03-18"
    assert doc["rows"][0]["customers"] == 0


def test_channels(env):
    doc = report(env.vw, "channels")
    assert len(doc["rows"]) == 28
    assert [(r["period"], r["channel"]) for r in doc["rows"][:4]] == [
        ("2024-03-04", "chat"), ("2024-03-04", "email"),
        ("2024-03-05", "chat"), ("2024-03-05", "email")]
    nonzero = {(r["period"], r["channel"]): (r["created"], r["solved"])
               for r in doc["rows"] if r["created"] or r["solved"]}
    assert nonzero == {
        ("2024-03-04", "email"): (1, 0), ("2024-03-05", "email"): (1, 1),
        ("2024-03-06", "email"): (0, 1), ("2024-03-08", "chat"): (1, 0),
        ("2024-03-11", "chat"): (0, 1), ("2024-03-12", "chat"): (1, 1),
        ("2024-03-12", "email"): (0, 1), ("2024-03-13", "email"): (1, 0),
        ("2024-03-15", "chat"): (1, 0)}
    assert doc["totals"] == {"created": 6, "solved": 5}
    doc = report(env.vw, "channels", group="month")
    assert doc["rows"] == [
        {"period": "2024-03-01", "channel": "chat", "created": 3, "solved": 2},
        {"period": "2024-03-01", "channel": "email", "created": 3, "solved": 3}]


def test_problems(env):
    doc = report(env.vw, "problems")
    assert doc["rows"] == [
        {"kind": "tag", "id": None, "name": "billing", "status": None, "tickets": 3},
        {"kind": "tag", "id": None, "name": "refund", "status": None, "tickets": 2},
        {"kind": "tag", "id": None, "name": "outage", "status": None, "tickets": 1},
        {"kind": "tag", "id": None, "name": 'vip, "gold"', "status": None, "tickets": 1},
        {"kind": "problem", "id": env.p1, "name": "Login outage", "status": "open",
         "tickets": 2},
        {"kind": "problem", "id": env.p2, "name": "Slow invoices", "status": "known_error",
         "tickets": 1},
    ]
    assert doc["totals"] == {"tickets": 6, "tagged": 5, "linked": 3}


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------

def json_text_rows(resp):
    """The rows with numbers kept as their JSON text."""
    return json.loads(resp.body, parse_float=str, parse_int=str)["rows"]


def csv_cell(value):
    """What the CSV must hold for a JSON value whose numbers are text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value  # an object: compared after parsing the cell


def check_csv(env, name, resp_csv, resp_json):
    assert resp_csv.status == 200, resp_csv
    assert resp_csv.headers["content-type"] == "text/csv; charset=utf-8"
    body = resp_csv.body.decode("utf-8")
    assert body.endswith("\r\n")
    lines = list(csv.reader(io.StringIO(body, newline="")))
    assert lines[0] == COLUMNS[name]
    rows = json_text_rows(resp_json)
    assert len(lines) - 1 == len(rows)
    for line, row in zip(lines[1:], rows):
        assert len(line) == len(COLUMNS[name])
        for col, cell in zip(COLUMNS[name], line):
            want = csv_cell(row[col])
            if isinstance(want, dict):
                assert json.loads(cell, parse_float=str, parse_int=str) == want, (col, cell)
            else:
                assert cell == want, (name, col, cell, row)
    return lines


@pytest.mark.parametrize("name", REPORTS)
def test_csv_equals_json(env, name):
    j = get(env.vw, name, **{"from": "2024-02-20"})
    assert j.status == 200 and j.headers["content-type"] == "application/json"
    lines = check_csv(env, name, get(env.vw, name, format="csv", **{"from": "2024-02-20"}), j)
    assert len(lines) > 1
    # Asked for by the Accept header, and with filters.
    q = {"from": "2024-02-20", "channel": "email", "group": "week"}
    check_csv(env, name, get(env.vw, name, headers={"Accept": "text/csv"}, **q),
              get(env.vw, name, **q))


def test_csv_quoting(env):
    body = get(env.vw, "problems", format="csv").body.decode()
    assert 'tag,,"vip, ""gold""",,1\r\n' in body
    body = get(env.vw, "csat", format="csv").body.decode()
    assert f'agent,{env.ids["ag2"]},"Doe, Jane",3,2.33,0.3333,3,3,1\r\n' in body
    # An object is its JSON text, quoted.
    body = get(env.vw, "agents", format="csv").body.decode()
    assert '"{""EUR"": 35.50}"' in body


def test_csv_formulas(env):
    """A name a spreadsheet would run as a formula is quoted as text."""
    cli_tenant(env.db, "rep-c", "Reports C")
    cli_agent(env.db, "vw@rep-c.example", "rep-c", "viewer", name="Cy Viewer")
    cli_agent(env.db, "f1@rep-c.example", "rep-c", "agent", name="=HYPERLINK(\"x\")")
    cli_agent(env.db, "f2@rep-c.example", "rep-c", "agent", name="-2+3")
    vw = api_login(env.srv, "vw@rep-c.example")
    doc = report(vw, "agents", tenant="rep-c")
    assert sorted(r["name"] for r in doc["rows"]) == ["-2+3", '=HYPERLINK("x")']
    body = get(vw, "agents", tenant="rep-c", format="csv").body.decode()
    assert '"\'=HYPERLINK(""x"")",0,' in body
    assert ",'-2+3,0," in body
    assert "\r\n=" not in body and ",=" not in body and ",-" not in body


def test_format_negotiation(env):
    assert get(env.vw, "volume", headers={"Accept": "text/csv"}).headers["content-type"] == \
        "text/csv; charset=utf-8"
    r = get(env.vw, "volume", headers={"Accept": "application/json, text/csv"})
    assert r.headers["content-type"] == "application/json"
    r = get(env.vw, "volume", headers={"Accept": "text/csv"}, format="json")
    assert r.headers["content-type"] == "application/json"
    r = get(env.vw, "volume", headers={"Accept": "text/csv; q=0, */*"})
    assert r.headers["content-type"] == "application/json"
    r = get(env.vw, "volume", headers={"Accept": "text/html, text/csv;q=0.9, */*;q=0.1"})
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert "volume_2024-03-04_2024-03-17.csv" in r.headers["content-disposition"]


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

def test_filter_channel(env):
    doc = report(env.vw, "volume", channel="chat", group="month")
    assert doc["filters"]["channel"] == "chat"
    # T2, T4, T6 created; T2, T4 solved; nothing of chat open at the start.
    assert doc["rows"] == [{"period": "2024-03-01", "created": 3, "solved": 2, "backlog": 1}]
    doc = report(env.vw, "channels", channel="chat", group="month")
    assert [r["channel"] for r in doc["rows"]] == ["chat"]
    doc = report(env.vw, "volume", channel="fax")
    assert doc["totals"] == {"created": 0, "solved": 0, "backlog": 0}


def test_filter_customer_kind(env):
    doc = report(env.vw, "volume", customer_kind="internal", group="month")
    assert doc["filters"]["customer_kind"] == "internal"
    assert doc["rows"] == [{"period": "2024-03-01", "created": 1, "solved": 1, "backlog": 0}]
    doc = report(env.vw, "volume", customer_kind="external", group="month")
    assert doc["rows"] == [{"period": "2024-03-01", "created": 5, "solved": 4, "backlog": 3}]
    doc = report(env.vw, "compensation", customer_kind="internal")
    assert [(r["reason"], r["amount"]) for r in doc["rows"]] == [("outage", 25.5)]
    doc = report(env.vw, "retention", customer_kind="internal")
    assert doc["rows"][0] == {"segment": "all", "customers": 1, "returned": 1, "silent": 0,
                              "return_rate": 1}


def test_filter_team_and_priority(env):
    doc = report(env.vw, "sla", team=env.team, group="month")
    assert doc["filters"]["team"] == env.team
    # T1, T3, T5.
    assert doc["totals"]["tickets"] == 3 and doc["totals"]["with_policy"] == 3
    assert doc["totals"]["breached"] == 2 and doc["totals"]["attainment"] == 0.3333
    doc = report(env.vw, "problems", priority="urgent")
    assert doc["rows"] == [
        {"kind": "tag", "id": None, "name": "outage", "status": None, "tickets": 1},
        {"kind": "problem", "id": env.p1, "name": "Login outage", "status": "open",
         "tickets": 1}]
    doc = report(env.vw, "response-times", channel="email", priority="high", group="month")
    assert doc["totals"]["tickets"] == 1 and doc["totals"]["first_response_median"] == 1800
    doc = report(env.vw, "agents", team=env.team)
    # Members of the team (Ada), and whoever handled the team's tickets.
    assert [r["name"] for r in doc["rows"]] == ["Ada Agent"]
    assert doc["rows"][0]["handled"] == 2


def test_filter_agent(env):
    ag2 = env.ids["ag2"]
    doc = report(env.vw, "agents", agent=ag2)
    assert doc["filters"]["agent"] == ag2
    assert [r["agent"] for r in doc["rows"]] == [ag2]
    assert doc["totals"]["handled"] == 3 and doc["totals"]["csat_ratings"] == 3
    doc = report(env.vw, "csat", agent=ag2)
    assert [(r["kind"], r["id"]) for r in doc["rows"]] == [("agent", ag2)]
    assert doc["totals"]["ratings"] == 3
    doc = report(env.vw, "volume", agent=ag2, group="month")
    # T2, T4 created; T8, T2, T4 solved; T8 open at the start.
    assert doc["rows"] == [{"period": "2024-03-01", "created": 2, "solved": 3, "backlog": 0}]
    doc = report(env.vw, "compensation", agent=ag2)
    assert [(r["reason"], r["count"], r["pending"]) for r in doc["rows"]] == \
        [("goodwill", 1, 0), ("sla_breach", 0, 1)]


# ---------------------------------------------------------------------------
# who may read, and isolation
# ---------------------------------------------------------------------------

def test_roles(env):
    for client in (env.vw, env.sup, env.adm):
        for name in REPORTS:
            expect(get(client, name), 200)
    for name in REPORTS:
        expect(get(env.ag1, name), 403, "forbidden")
    expect(get(env.ag2, "volume", format="csv"), 403, "forbidden")
    expect(get(ApiClient(env.srv), "volume"), 401)
    # API keys act with their role too.
    key = expect(env.adm.post(f"tenants/{A}/api_keys", {"name": "bi", "role": "viewer"}), 201)
    expect(get(ApiClient(env.srv, key["key"]), "volume"), 200)
    key = expect(env.adm.post(f"tenants/{A}/api_keys", {"name": "bot", "role": "agent"}), 201)
    expect(get(ApiClient(env.srv, key["key"]), "volume"), 403, "forbidden")


def test_tenant_isolation(env):
    for name in REPORTS:
        expect(get(env.vw, name, tenant=B), 404, "not_found")
        expect(get(env.vwb, name, tenant=A), 404, "not_found")
    # B's own numbers, and none of A's.
    doc = report(env.vwb, "volume", tenant=B, group="month")
    assert doc["rows"] == [{"period": "2024-03-01", "created": 3, "solved": 1, "backlog": 2}]
    doc = report(env.vwb, "compensation", tenant=B)
    assert doc["totals"] == {"count": 1, "pending": 0, "amount": {"EUR": 999}}
    doc = report(env.vwb, "csat", tenant=B)
    assert doc["totals"]["ratings"] == 1 and doc["totals"]["offered"] == 2
    # Nothing of B's in A's reports (exact numbers above; and its names).
    for name in REPORTS:
        body = get(env.vw, name, **{"from": "2024-02-01", "to": "2024-03-31"}).body
        for word in (b"leak", b"sms", b"B problem", b"Ben Agent", b"999"):
            assert word not in body, (name, word)


# ---------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------

def test_defaults(env):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    doc = expect(env.vw.get(f"tenants/{A}/reports/volume"), 200)
    # The day may turn between the two clocks; either is right.
    ok = {today, today + datetime.timedelta(days=1)}
    assert datetime.date.fromisoformat(doc["to"]) in ok
    to = datetime.date.fromisoformat(doc["to"])
    assert doc["from"] == (to - datetime.timedelta(days=29)).isoformat()
    assert doc["group"] == "day" and len(doc["rows"]) == 30
    # Only "from": to is today.
    start = (today - datetime.timedelta(days=100)).isoformat()
    doc = expect(env.vw.get(f"tenants/{A}/reports/sla", **{"from": start}), 200)
    assert datetime.date.fromisoformat(doc["to"]) in ok
    # Reports that are not time series say so.
    for name in ("csat", "agents", "retention", "problems"):
        assert report(env.vw, name, group="week")["group"] is None


BAD = [
    ({"from": "2024-13-01"}, "from"),
    ({"from": "2024-02-30"}, "from"),
    ({"from": "2023-02-29"}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2024-3-1"}, "to"),
    ({"to": ""}, "to"),
    ({"from": "2024-03-10", "to": "2024-03-09"}, "to"),
    ({"from": "2021-03-17", "to": "2024-03-17"}, "from"),   # 1097 days
    ({"group": "year"}, "group"),
    ({"group": ""}, "group"),
    ({"team": "billing"}, "team"),
    ({"team": "0"}, "team"),
    ({"agent": "-1"}, "agent"),
    ({"agent": "1234567890123456789"}, "agent"),
    ({"priority": "critical"}, "priority"),
    ({"customer_kind": "vip"}, "customer_kind"),
    ({"channel": ""}, "channel"),
    ({"channel": "x" * 65}, "channel"),
    ({"channel": "a\nb"}, "channel"),
    ({"format": "xml"}, "format"),
]


@pytest.mark.parametrize("query,field", BAD, ids=[f for _, f in BAD])
def test_bad_parameters(env, query, field):
    for name in ("volume", "agents"):
        expect(get(env.vw, name, **query), 422, "invalid_field", field)


def test_range_limits(env):
    # Three years (1096 days) is the longest range; one day the shortest.
    doc = report(env.vw, "volume", group="month", **{"from": "2021-03-17", "to": "2024-03-16"})
    assert len(doc["rows"]) == 37
    doc = report(env.vw, "volume", **{"from": "2024-03-05", "to": "2024-03-05"})
    assert doc["rows"] == [{"period": "2024-03-05", "created": 1, "solved": 1, "backlog": 3}]
    # The default "from" stops at the first day there is.
    doc = expect(env.vw.get(f"tenants/{A}/reports/volume", to="0001-01-05"), 200)
    assert doc["from"] == "0001-01-01" and len(doc["rows"]) == 5


def test_unknown_and_repeated_parameters(env):
    # Refused so that a typo ("grup=week") is not silently ignored.
    expect(get(env.vw, "volume", grup="week"), 422, "invalid_field", "grup")
    expect(env.vw.get(f"tenants/{A}/reports/volume?from=2024-03-01&from=2024-03-02"),
           422, "invalid_field", "from")


def test_unknown_report(env):
    expect(get(env.vw, "revenue"), 404)
    expect(get(env.vw, "Volume"), 404)


# ---------------------------------------------------------------------------
# rollups: the same numbers as live, before and after a change
# ---------------------------------------------------------------------------

def variants(env):
    """Every report over ranges that start before, inside and after the
    fixture's days, by each grouping and filter."""
    ranges = [(FROM, TO), ("2024-03-09", "2024-03-21"), ("2024-02-20", "2024-04-05")]
    filters = [{}, {"channel": "chat"}, {"channel": "email"}, {"team": env.team},
               {"agent": env.ids["ag1"]}, {"agent": env.ids["ag2"]}, {"priority": "high"},
               {"customer_kind": "internal"}, {"customer_kind": "external"},
               {"channel": "email", "priority": "normal", "customer_kind": "external"}]
    for name in REPORTS:
        for lo, hi in ranges:
            for group in ("day", "week", "month"):
                for f in filters:
                    yield (name, lo, hi, group, tuple(sorted(f.items())))


def read_all(env):
    out = {}
    for v in variants(env):
        name, lo, hi, group, f = v
        doc = expect(get(env.sup, name, **{"from": lo, "to": hi, "group": group}, **dict(f)), 200)
        out[v] = doc
    return out


def diff(a, b):
    return [k for k in a if a[k] != b[k]]


def test_rollups_match_live(env):
    rollups = env.rollups
    built = read_all(env)
    rollups.forget()
    live = read_all(env)
    bad = diff(built, live)
    open("/tmp/rolldiff.json", "w").write(json.dumps([built[bad[0]], live[bad[0]]]) if bad else "")
    assert bad == [], bad[:3]
    rollups.build()

    # Changes to days that are rolled up: a ticket reprioritised, moved to
    # another channel and reopened, its SLA breached, a survey answered.  In
    # replica mode, as a bulk load would (the marks are made all the same),
    # so that no rule reacts and the restore below restores exactly.
    t = lambda n: f"(SELECT id FROM tickets WHERE tenant_id = {env.ta} AND number = {n})"
    change = (f"SET session_replication_role = replica; UPDATE tickets SET priority = 'urgent', channel = 'sms', status = 'open',"
              f" tags = tags || '{{moved}}'::text[] WHERE id = {t(1)};"
              f" UPDATE ticket_sla SET breached = '{{resolution}}' WHERE ticket_id = {t(2)};"
              f" UPDATE surveys SET answered_at = created_at + interval '1 hour'"
              f" WHERE tenant_id = {env.ta} AND answered_at IS NULL")
    saved = psql(env.db, f"SELECT row_to_json(t) FROM tickets t WHERE id = {t(1)}").strip()
    saved_sla = psql(env.db, f"SELECT breached FROM ticket_sla WHERE ticket_id = {t(2)}").strip()
    saved_surveys = psql(env.db, f"SELECT string_agg(id::text, ',') FROM surveys"
                                 f" WHERE tenant_id = {env.ta} AND answered_at IS NULL").strip()
    psql(env.db, change)
    try:
        assert int(psql(env.db, "SELECT count(*) FROM report_dirty")) > 0
        dirty = read_all(env)
        assert diff(dirty, built) != []
        rollups.forget()
        live = read_all(env)
        assert diff(dirty, live) == []
        rollups.build()
        assert int(psql(env.db, "SELECT count(*) FROM report_dirty")) == 0
        assert diff(read_all(env), live) == []
    finally:
        old = json.loads(saved)
        psql(env.db, f"SET session_replication_role = replica;"
                     f" UPDATE tickets SET priority = {lit(old['priority'])},"
                     f" channel = {lit(old['channel'])}, status = {lit(old['status'])},"
                     f" tags = {lit(old['tags'])} WHERE id = {t(1)};"
                     f" UPDATE ticket_sla SET breached = {lit(saved_sla)}::text[]"
                     f" WHERE ticket_id = {t(2)}")
        if saved_surveys:
            psql(env.db, f"SET session_replication_role = replica;"
                         f" UPDATE surveys SET answered_at = NULL WHERE tenant_id = {env.ta}"
                         f" AND id IN ({saved_surveys})")
        rollups.build()
    after = read_all(env)
    bad = diff(after, built)
    assert bad == [], bad[:5]
