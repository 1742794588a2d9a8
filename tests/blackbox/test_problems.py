"""Recurring problems: records of a shared root cause, tickets linked to
them by agents and by rules."""

from conftest import api_login, cli_agent, expect, wait_until
from test_rules import new_ticket, put_rule, setup_tenant, ticket


def test_problems_and_ticket_links(database, start_server):
    srv = start_server(database)
    slug, adm, agt = setup_tenant(database, srv)
    other, oadm, oagt = setup_tenant(database, srv)
    cli_agent(database, f"view@{slug}.example", slug, "viewer")
    vw = api_login(srv, f"view@{slug}.example")
    p = expect(agt.post(f"tenants/{slug}/problems", {"title": "Printer driver 4.2",
                                                     "root_cause": "a bad update"}), 201)
    assert p["status"] == "open" and p["tickets"] == 0
    expect(agt.post(f"tenants/{slug}/problems", {"title": "Printer driver 4.2"}), 409)
    expect(agt.post(f"tenants/{slug}/problems", {"title": ""}), 422, field="title")
    expect(agt.post(f"tenants/{slug}/problems", {"status": "open"}), 422, field="title")
    expect(agt.post(f"tenants/{slug}/problems", {"title": "x", "status": "fixed"}), 422,
           field="status")
    expect(vw.post(f"tenants/{slug}/problems", {"title": "viewer"}), 403)
    n = new_ticket(agt, slug)["number"]
    t = expect(agt.request("PUT", f"tenants/{slug}/tickets/{n}/problem", {"problem": p["id"]}),
               200)
    assert t["problem"] == {"id": p["id"], "title": "Printer driver 4.2"}
    # a rule links another ticket by title
    expect(put_rule(adm, slug, "problems", 'on("ticket.created", function(ev, act)\n'
                    '  if ev.ticket.subject:find("print") then act.link_problem("Printer driver 4.2")'
                    ' end\nend)\n'), 200)
    n2 = new_ticket(agt, slug, subject="cannot print")["number"]
    wait_until(lambda: (ticket(agt, slug, n2)["problem"] or {}).get("id") == p["id"], 20,
               message="linked by the rule")
    got = expect(vw.get(f"tenants/{slug}/problems/{p['id']}"), 200)
    assert got["tickets"] == 2 and got["ticket_numbers"] == sorted([n, n2])
    upd = expect(agt.patch(f"tenants/{slug}/problems/{p['id']}",
                           {"status": "known_error", "workaround": "roll back to 4.1"}), 200)
    assert upd["status"] == "known_error" and upd["workaround"] == "roll back to 4.1"
    assert upd["root_cause"] == "a bad update"
    lst = expect(vw.get(f"tenants/{slug}/problems", status="known_error"), 200)["items"]
    assert [x["id"] for x in lst] == [p["id"]]
    expect(vw.get(f"tenants/{slug}/problems", status="bogus"), 422, field="status")
    # unlink; unknown problem; other tenant sees nothing
    t = expect(agt.request("PUT", f"tenants/{slug}/tickets/{n}/problem", {"problem": None}), 200)
    assert t["problem"] is None
    expect(agt.request("PUT", f"tenants/{slug}/tickets/{n}/problem", {"problem": 999999}), 422,
           field="problem")
    expect(agt.request("PUT", f"tenants/{slug}/tickets/{n}/problem", {}), 422, field="problem")
    expect(oagt.get(f"tenants/{other}/problems/{p['id']}"), 404)
    expect(oagt.get(f"tenants/{slug}/problems/{p['id']}"), 404)
    assert expect(oagt.get(f"tenants/{other}/problems"), 200)["items"] == []
