"""Customer feedback: survey links that work once, expire, cannot be forged
or pointed at another tenant; the page and its form; ratings by a reply
on the ticket's channel; feedback.received and the default rules.
"""

import base64
import json
import re
import time
import urllib.parse

from conftest import (api_login, cli_agent, cli_tenant, expect, psql, rand_suffix,
                      wait_until)
from test_plugins import hook
from test_rules import put_rule, setup_tenant, ticket


def solved_ticket(agt, slug, email=None):
    email = email or f"c-{rand_suffix(6)}@example.com"
    t = expect(agt.post(f"tenants/{slug}/tickets",
                        {"subject": "Broken <b>printer</b>", "customer": {"email": email},
                         "message": {"text": "it does not print"}}), 201)
    expect(agt.patch(f"tenants/{slug}/tickets/{t['number']}", {"status": "solved"}), 200)
    return t["number"]


def link_path(url):
    return urllib.parse.urlsplit(url).path


def survey(srv, url, body=None, form=None, method=None):
    path = link_path(url)
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        return srv.request("POST", path, body=data,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    if body is not None:
        return srv.request("POST", path, body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
    return srv.request(method or "GET", path)


def test_survey_link_works_once(database, start_server):
    srv = start_server(database, env={"SWITCHBOARD_PUBLIC_URL": "https://help.example.com/"})
    slug, adm, agt = setup_tenant(database, srv)
    n = solved_ticket(agt, slug)
    doc = expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)
    assert doc["url"].startswith("https://help.example.com/survey/") and doc["expires_at"]
    # asking again gives the same open link
    assert expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)["url"] == doc["url"]
    status, headers, body = survey(srv, doc["url"])
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "How did we do?" in page and f"#{n}" in page
    assert "Broken &lt;b&gt;printer&lt;/b&gt;" in page and "<b>printer" not in page
    status, _, body = survey(srv, doc["url"], {"rating": 5, "comment": "Quick and kind"})
    assert status == 201, body
    assert json.loads(body) == {"rating": 5, "comment": "Quick and kind"}
    status, _, body = survey(srv, doc["url"], {"rating": 1})
    assert status == 409 and json.loads(body)["error"]["code"] == "conflict"
    assert survey(srv, doc["url"])[0] == 409
    rows = psql(database, "SELECT f.rating || ':' || f.comment FROM feedback f JOIN tenants t"
                          f" ON t.id = f.tenant_id WHERE t.slug = '{slug}'").split()
    assert rows == ["5:Quick", "and", "kind"] or rows == ["5:Quick and kind"]
    got = expect(agt.get(f"tenants/{slug}/feedback", ticket=n), 200)["items"]
    assert [(f["ticket"], f["rating"], f["comment"]) for f in got] == [(n, 5, "Quick and kind")]
    # once answered, asking again opens a new survey
    again = expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)["url"]
    assert again != doc["url"]


def test_survey_form_bad_input_and_roles(database, start_server):
    srv = start_server(database)
    slug, adm, agt = setup_tenant(database, srv)
    cli_agent(database, f"view@{slug}.example", slug, "viewer")
    vw = api_login(srv, f"view@{slug}.example")
    n = solved_ticket(agt, slug)
    url = expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)["url"]
    for bad in ({"rating": 0}, {"rating": 6}, {"rating": "5"}, {"rating": 3, "extra": 1},
                {"comment": "no rating"}, {"rating": 3, "comment": "x" * 5001}):
        status, _, body = survey(srv, url, bad)
        assert status == 422, (bad, body)
    status, _, body = survey(srv, url, form={"rating": "9"})
    assert status == 422 and b"rating from 1 to 5" in body
    status, _, _ = srv.request("POST", link_path(url), body=b"rating=3",
                               headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = srv.request("POST", link_path(url), body=b"{not json",
                               headers={"Content-Type": "application/json"})
    assert status == 400
    assert psql(database, "SELECT count(*) FROM feedback").strip() == "0"
    status, headers, body = survey(srv, url, form={"rating": "4", "comment": "Ça marche, merci"})
    assert status == 200 and b"Thank you" in body
    assert psql(database, "SELECT rating || '|' || comment FROM feedback").strip() == \
        "4|Ça marche, merci"
    # only a solved ticket has a survey; viewers cannot ask for one
    t = expect(agt.post(f"tenants/{slug}/tickets", {"subject": "open", "customer": {
        "email": "o@example.com"}, "message": {"text": "x"}}), 201)
    expect(agt.post(f"tenants/{slug}/tickets/{t['number']}/survey"), 409, code="conflict")
    expect(agt.post(f"tenants/{slug}/tickets/999999/survey"), 404)
    expect(vw.post(f"tenants/{slug}/tickets/{n}/survey"), 403)
    expect(agt.get(f"tenants/{slug}/feedback", ticket="x"), 422, field="ticket")


def test_expired_and_forged_links_are_refused(database, start_server):
    srv = start_server(database, env={"SWITCHBOARD_SURVEY_VALID_FOR": "2"})
    slug, adm, agt = setup_tenant(database, srv)
    other, oadm, oagt = setup_tenant(database, srv)
    n = solved_ticket(agt, slug)
    url = expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)["url"]
    token = link_path(url).rsplit("/", 1)[1]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    # the same link pointed at the other tenant (its id in the first 8 bytes)
    other_id = int(psql(database, f"SELECT id FROM tenants WHERE slug = '{other}'"))
    moved = other_id.to_bytes(8, "big") + bytes(raw[8:])
    forged = [
        base64.urlsafe_b64encode(moved).decode().rstrip("="),
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        token[:20],
        "x" * 75,
        "",
    ]
    for f in forged:
        for method in ("GET", "POST"):
            status, _, _ = (survey(srv, "/survey/" + f, {"rating": 5}) if method == "POST"
                            else survey(srv, "/survey/" + f))
            assert status == 404, (f, method, status)
    # an agent of another tenant cannot get a link to this ticket
    expect(oagt.post(f"tenants/{slug}/tickets/{n}/survey"), 404)
    time.sleep(3)
    assert survey(srv, url)[0] == 410
    status, _, body = survey(srv, url, {"rating": 5})
    assert status == 410 and json.loads(body)["error"]["code"] == "expired"
    assert psql(database, "SELECT count(*) FROM feedback").strip() == "0"


def test_low_rating_fires_feedback_received_and_the_default_rule_acts(database, start_server):
    srv = start_server(database, workers=2)
    slug, adm, agt = setup_tenant(database, srv)
    cli_agent(database, f"sup@{slug}.example", slug, "supervisor")
    sup = api_login(srv, f"sup@{slug}.example")
    n = solved_ticket(agt, slug)
    url = expect(agt.post(f"tenants/{slug}/tickets/{n}/survey"), 200)["url"]
    assert survey(srv, url, {"rating": 1, "comment": "slow"})[0] == 201
    wait_until(lambda: psql(database, "SELECT count(*) FROM rule_events WHERE type ="
                                      " 'feedback.received' AND processed_at IS NOT NULL")
               .strip() == "1", 30, message="feedback.received handled")
    rows = psql(database, "SELECT c.kind || ':' || c.reason || ':' || c.status || ':'"
                          " || c.issued_by_rule FROM compensations c").strip()
    assert rows == "gift:low_rating:issued:compensation"
    notes = expect(sup.get(f"tenants/{slug}/notifications"), 200)["items"]
    assert any(f"#{n} was rated 1" in x["text"] for x in notes), notes
    evs = expect(agt.get(f"tenants/{slug}/tickets/{n}/events"), 200)["items"]
    assert "feedback.received" in [e["action"] for e in evs]


def test_default_rule_offers_a_survey_on_the_channel_and_a_digit_answers_it(database,
                                                                           start_server, tmp_path):
    from test_plugins import migrated
    migrated(database)
    out = tmp_path / "sent.txt"
    srv = start_server(database, env={"SWITCHBOARD_EXAMPLE_OUTBOX_FILE": str(out),
                                      "SWITCHBOARD_PUBLIC_URL": "https://help.acme.example"})
    cli_agent(database, "ann@acme.example", "acme", "agent")
    ann = api_login(srv, "ann@acme.example")
    status, _, body = hook(srv, "acme", "my parcel is late", **{"from": "cust-9", "id": "in-1",
                                                               "thread": "th-9"})
    assert status == 200, body
    n = int(body.split()[1])
    expect(ann.patch(f"tenants/acme/tickets/{n}", {"status": "solved"}), 200)
    sent = wait_until(lambda: [l for l in (out.read_text().splitlines() if out.exists() else [])
                               if "/survey/" in l], 30, message="survey sent on the channel")
    url = re.search(r"https://help\.acme\.example/survey/[A-Za-z0-9_-]+", sent[0]).group(0)
    # the customer answers by replying "4" on the channel: recorded, not reopened
    status, _, body = hook(srv, "acme", " 4 ", **{"from": "cust-9", "id": "in-2", "thread": "th-9"})
    assert status == 200, body
    wait_until(lambda: psql(database, "SELECT rating FROM feedback").strip() == "4", 20,
               message="rating recorded")
    assert ticket(ann, "acme", n)["status"] == "solved"
    # the link is now used up
    assert survey(srv, url, {"rating": 5})[0] == 409
    # any other reply reopens the ticket as before
    hook(srv, "acme", "one more question", **{"from": "cust-9", "id": "in-3", "thread": "th-9"})
    assert ticket(ann, "acme", n)["status"] == "open"
