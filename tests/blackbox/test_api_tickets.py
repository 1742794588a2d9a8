"""Tickets through the REST API: create, list (filters, sorting, keyset
pagination, multilingual full-text search), detail, change (optimistic
locking, the status lifecycle, assignment rules), messages, the audit trail
and merging. One server, one tenant, agents logged in once."""

import json
import types

import pytest

from conftest import api_login, cli_agent, cli_tenant, db_unchanged, expect, psql, rand_suffix

T = "desk"
TK = f"tenants/{T}/tickets"


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    db = module_database
    srv = module_start_server(db)
    cli_tenant(db, T, "Help Desk")
    cli_tenant(db, "elsewhere", "Another tenant")
    for email, role in (("admin@desk.example", "admin"), ("super@desk.example", "supervisor"),
                        ("ann@desk.example", "agent"), ("bob@desk.example", "agent"),
                        ("vic@desk.example", "viewer")):
        cli_agent(db, email, T, role)
    cli_agent(db, "stranger@else.example", "elsewhere", "agent")
    e = types.SimpleNamespace(db=db, srv=srv)
    e.admin = api_login(srv, "admin@desk.example")
    e.sup = api_login(srv, "super@desk.example")
    e.ann = api_login(srv, "ann@desk.example")
    e.bob = api_login(srv, "bob@desk.example")
    e.viewer = api_login(srv, "vic@desk.example")
    e.stranger_id = int(psql(db, "SELECT id FROM agents WHERE email = 'stranger@else.example'"))
    e.team = expect(e.sup.post(f"tenants/{T}/teams", {"name": "Tier 2"}), 201)
    return e


def new_ticket(client, subject=None, text="Something is broken.", tag=None, email=None,
               **extra):
    body = {"subject": subject or f"Ticket {rand_suffix(6)}",
            "customer": {"email": email or f"c-{rand_suffix(8)}@example.com"},
            "message": {"text": text}}
    if tag:
        body["tags"] = [tag]
    body.update(extra)
    return expect(client.post(TK, body), 201)


def list_all(client, limit=100, **query):
    """Every item over all pages (asserting no page is over the limit)."""
    items, cursor = [], None
    for _ in range(100):
        doc = expect(client.get(TK, limit=limit, cursor=cursor, **query), 200)
        assert len(doc["items"]) <= limit, doc
        items += doc["items"]
        cursor = doc["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def numbers(client, **query):
    return [t["number"] for t in list_all(client, **query)]


# ---------------------------------------------------------------------------
# create and read
# ---------------------------------------------------------------------------

def test_create_ticket_answers_the_detail_with_etag(env):
    r = env.ann.post(TK, {
        "subject": "Printer offline",
        "customer": {"email": "sam@example.com", "name": "Sam"},
        "message": {"text": "The printer shows as offline.", "html": "<p>The printer</p>"},
        "priority": "high",
        "tags": ["printer", "hardware", "printer"],
        "custom_fields": {"floor": 3, "asset": "PR-17"}})
    t = expect(r, 201)
    assert r.headers.get("etag") == '"1"', r.headers
    assert isinstance(t["number"], int) and t["number"] >= 1
    assert t["subject"] == "Printer offline"
    assert t["status"] == "new"
    assert t["priority"] == "high"
    assert t["tags"] == ["hardware", "printer"]
    assert t["custom_fields"] == {"floor": 3, "asset": "PR-17"}
    assert t["assignee"] is None
    assert t["version"] == 1
    assert t["customer"]["email"] == "sam@example.com"
    assert t["customer"]["name"] == "Sam"
    assert isinstance(t["customer"]["id"], int)
    assert {"kind": "email", "value": "sam@example.com"} in [
        {"kind": i["kind"], "value": i["value"]} for i in t["customer"]["identities"]]
    assert len(t["messages"]) == 1
    m = t["messages"][0]
    assert m["direction"] == "inbound"
    assert m["text"] == "The printer shows as offline."
    assert m["created_at"]
    # the same customer email again is the same customer
    t2 = new_ticket(env.ann, email="sam@example.com")
    assert t2["customer"]["id"] == t["customer"]["id"]
    assert t2["number"] > t["number"]
    # and reading it back gives the same document
    r = env.viewer.get(f"{TK}/{t['number']}")
    d = expect(r, 200)
    assert r.headers.get("etag") == '"1"', r.headers
    for k in ("number", "subject", "status", "priority", "tags", "custom_fields", "version"):
        assert d[k] == t[k], k
    assert d["customer"]["id"] == t["customer"]["id"]
    assert [m["text"] for m in d["messages"]] == ["The printer shows as offline."]


def test_create_ticket_defaults(env):
    t = new_ticket(env.ann)
    assert t["priority"] == "normal"
    assert t["tags"] == []
    assert t["status"] == "new"
    assert t["assignee"] is None


def test_create_ticket_with_phone_and_identity_customers(env):
    phone = "+4479" + str(abs(hash(rand_suffix())) % 10**8).zfill(8)
    t1 = expect(env.ann.post(TK, {"subject": "By phone", "customer": {"phone": phone},
                                  "message": {"text": "call me"}}), 201)
    t2 = expect(env.ann.post(TK, {"subject": "Again by phone", "customer": {"phone": phone},
                                  "message": {"text": "call me again"}}), 201)
    assert t1["customer"]["id"] == t2["customer"]["id"]
    assert {"kind": "phone", "value": phone} in [
        {"kind": i["kind"], "value": i["value"]} for i in t1["customer"]["identities"]]
    handle = "@user_" + rand_suffix(6)
    ident = {"kind": "telegram", "value": handle}
    t3 = expect(env.ann.post(TK, {"subject": "By Telegram",
                                  "customer": {"identity": ident, "name": "Tele Gram"},
                                  "message": {"text": "hi"}}), 201)
    t4 = expect(env.ann.post(TK, {"subject": "By Telegram again", "customer": {"identity": ident},
                                  "message": {"text": "hi again"}}), 201)
    assert t3["customer"]["id"] == t4["customer"]["id"] != t1["customer"]["id"]
    assert t3["customer"]["name"] == "Tele Gram"


def test_unknown_ticket_is_404(env):
    expect(env.ann.get(f"{TK}/999999"), 404)
    expect(env.ann.get(f"{TK}/999999/events"), 404)
    with db_unchanged(env.db, "writes to an unknown ticket"):
        expect(env.ann.patch(f"{TK}/999999", {"priority": "low"}), 404)
        expect(env.ann.post(f"{TK}/999999/messages", {"kind": "note", "text": "x"}), 404)
        expect(env.ann.post(f"{TK}/999999/merge", {"into": 1}), 404)


# ---------------------------------------------------------------------------
# lists: filters and sorting
# ---------------------------------------------------------------------------

def test_list_items_have_no_messages(env):
    new_ticket(env.ann)
    doc = expect(env.viewer.get(TK), 200)
    assert doc["items"] and "next_cursor" in doc
    assert len(doc["items"]) <= 25
    for t in doc["items"]:
        assert "messages" not in t, t
        assert {"number", "subject", "status", "priority", "version"} <= set(t)


def test_list_default_limit_is_25(env):
    tag = "many-" + rand_suffix(5)
    for _ in range(27):
        new_ticket(env.ann, tag=tag)
    doc = expect(env.ann.get(TK, tag=tag), 200)
    assert len(doc["items"]) == 25 and doc["next_cursor"], len(doc["items"])
    assert len(numbers(env.ann, tag=tag)) == 27


def test_list_filters(env):
    tag = "flt-" + rand_suffix(5)
    a = new_ticket(env.ann, tag=tag, priority="urgent")
    b = new_ticket(env.ann, tag=tag, priority="low", email="filter-cust@example.com")
    c = new_ticket(env.ann, tag=tag)
    d = new_ticket(env.ann, tag=tag)
    expect(env.ann.patch(f"{TK}/{a['number']}", {"status": "open", "assignee": env.ann.id}), 200)
    expect(env.sup.patch(f"{TK}/{b['number']}", {"assignee": env.bob.id,
                                                 "team": env.team["id"]}), 200)
    expect(env.sup.patch(f"{TK}/{c['number']}", {"tags": [tag, "extra-" + tag]}), 200)

    def nums(client=env.ann, **q):
        return sorted(numbers(client, tag=tag, **q))

    assert nums() == sorted(t["number"] for t in (a, b, c, d))
    assert nums(status="open") == [a["number"]]
    assert nums(status="new") == sorted(t["number"] for t in (b, c, d))
    assert nums(priority="urgent") == [a["number"]]
    assert nums(priority="low") == [b["number"]]
    assert nums(assignee="me") == [a["number"]]
    assert nums(client=env.bob, assignee="me") == [b["number"]]
    assert nums(assignee=env.bob.id) == [b["number"]]
    assert nums(assignee=env.ann.id) == [a["number"]]
    assert nums(assignee="none") == sorted(t["number"] for t in (c, d))
    assert nums(team=env.team["id"]) == [b["number"]]
    assert nums(customer=b["customer"]["id"]) == [b["number"]]
    assert sorted(numbers(env.ann, tag="extra-" + tag)) == [c["number"]]
    assert nums(status="open", priority="low") == []


def test_list_sorting(env):
    tag = "srt-" + rand_suffix(5)
    made = [new_ticket(env.ann, tag=tag) for _ in range(4)]
    ns = [t["number"] for t in made]
    assert numbers(env.ann, tag=tag, sort="number") == ns
    assert numbers(env.ann, tag=tag, sort="-number") == ns[::-1]
    assert numbers(env.ann, tag=tag, sort="created_at") == ns
    assert numbers(env.ann, tag=tag, sort="-created_at") == ns[::-1]
    # touching the oldest makes it the most recently updated
    expect(env.ann.patch(f"{TK}/{ns[0]}", {"priority": "high"}), 200)
    want = [ns[0]] + ns[1:][::-1]
    assert numbers(env.ann, tag=tag) == want                      # the default
    assert numbers(env.ann, tag=tag, sort="-updated_at") == want
    assert numbers(env.ann, tag=tag, sort="updated_at") == want[::-1]


@pytest.mark.parametrize("query", [
    {"status": "bogus"}, {"priority": "extreme"}, {"sort": "subject"}, {"sort": "-bogus"},
    {"limit": "0"}, {"limit": "101"}, {"limit": "abc"}, {"limit": "-1"},
    {"assignee": "somebody"}, {"cursor": "not-a-cursor"}, {"cursor": "%%%"},
    {"cursor": "garbage!"}, {"cursor": "AAAA"}, {"cursor": "fHw."},
    {"team": "x"}, {"customer": "x"},
])
def test_list_rejects_bad_query(env, query):
    expect(env.ann.get(TK, **query), 422)


# ---------------------------------------------------------------------------
# keyset pagination
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sort", [None, "number", "-number", "created_at", "-created_at",
                                  "updated_at"])
def test_keyset_pagination(env, sort):
    tag = "page-" + rand_suffix(5)
    made = sorted(new_ticket(env.ann, tag=tag)["number"] for _ in range(7))
    seen, cursor, pages = [], None, []
    for _ in range(10):
        doc = expect(env.ann.get(TK, tag=tag, sort=sort, limit=3, cursor=cursor), 200)
        pages.append(len(doc["items"]))
        seen += [t["number"] for t in doc["items"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
    assert cursor is None, "next_cursor never became null"
    assert pages == [3, 3, 1], pages
    assert len(seen) == len(set(seen)), seen
    assert sorted(seen) == made
    if sort in ("number", "created_at", "updated_at"):
        assert seen == made
    elif sort is not None:
        assert seen == made[::-1]


def test_pagination_is_stable_under_inserts(env):
    tag = "stable-" + rand_suffix(5)
    made = [new_ticket(env.ann, tag=tag)["number"] for _ in range(5)]
    doc = expect(env.ann.get(TK, tag=tag, sort="-number", limit=2), 200)
    first = [t["number"] for t in doc["items"]]
    new_ticket(env.ann, tag=tag)       # newer than everything: must not shift the pages
    rest, cursor = [], doc["next_cursor"]
    while cursor is not None:
        doc = expect(env.ann.get(TK, tag=tag, sort="-number", limit=2, cursor=cursor), 200)
        rest += [t["number"] for t in doc["items"]]
        cursor = doc["next_cursor"]
    assert first + rest == made[::-1]


def test_invalid_cursor_is_422(env):
    expect(env.ann.get(TK, cursor="definitely not a cursor"), 422)
    expect(env.ann.get(TK, cursor="AAAA"), 422)


# ---------------------------------------------------------------------------
# multilingual full-text search
# ---------------------------------------------------------------------------

SEARCH_CASES = [
    # (language, subject, message text, a word of the subject, a word only in the message)
    ("russian", "Принтер не печатает документы", "Бухгалтерия ждёт квартальный отчёт",
     "печатает", "квартальный"),
    ("arabic", "الطابعة لا تعمل في المكتب", "نحتاج إلى طباعة الفواتير اليوم",
     "الطابعة", "الفواتير"),
    ("albanian", "Fatura e muajit është gabim", "Ju lutem kontrolloni llogarinë time sërish",
     "fatura", "llogarinë"),
    ("latvian", "Rēķins nav saņemts laikā", "Lūdzu, pārbaudiet manu kontu šodien",
     "saņemts", "pārbaudiet"),
]


@pytest.fixture(scope="module")
def search_tickets(env):
    out = {}
    for lang, subject, text, _, _ in SEARCH_CASES:
        out[lang] = new_ticket(env.ann, subject=subject, text=text)["number"]
    # a ticket with none of the words
    new_ticket(env.ann, subject="Plain English ticket", text="Nothing to see here")
    return out


@pytest.mark.parametrize("lang,subject,text,subject_word,text_word", SEARCH_CASES,
                         ids=[c[0] for c in SEARCH_CASES])
def test_full_text_search(env, search_tickets, lang, subject, text, subject_word, text_word):
    want = [search_tickets[lang]]
    assert numbers(env.viewer, q=subject_word) == want, subject_word
    assert numbers(env.viewer, q=text_word) == want, text_word
    # combined with a filter too
    assert numbers(env.viewer, q=subject_word, status="new") == want
    assert numbers(env.viewer, q=subject_word, status="solved") == []


def test_full_text_search_finds_messages_added_later(env):
    t = new_ticket(env.ann, subject="Later words", text="nothing special")
    word = "kvarkenlater" + rand_suffix(4)
    assert numbers(env.ann, q=word) == []
    expect(env.ann.post(f"{TK}/{t['number']}/messages",
                        {"kind": "note", "text": f"the {word} appeared"}), 201)
    assert numbers(env.ann, q=word) == [t["number"]]


def test_full_text_search_without_matches(env, search_tickets):
    assert numbers(env.ann, q="xylophonequartz") == []


@pytest.mark.parametrize("q", ["a & b", "!", "'", ":*", "(", "hello | x", "\\", "%", "<->",
                               "foo:*", "!!(", "a' OR '1'='1"])
def test_full_text_search_takes_any_text(env, q):
    # search words are data, never tsquery syntax or SQL
    r = env.viewer.get(TK, q=q)
    expect(r, 200)


# ---------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------

def test_concurrent_creates_get_distinct_numbers(env):
    import threading
    tag = "conc-" + rand_suffix(5)
    results, errors = [], []

    def worker(i):
        try:
            r = env.ann.post(TK, {"subject": f"concurrent {i}",
                                  "customer": {"email": f"same-{tag}@example.com"},
                                  "message": {"text": "race"}, "tags": [tag]})
            results.append(r)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    docs = [expect(r, 201) for r in results]
    nums = sorted(d["number"] for d in docs)
    assert len(set(nums)) == 12 and nums == list(range(nums[0], nums[0] + 12)), nums
    # one customer, however the first tickets of a new email raced
    assert len({d["customer"]["id"] for d in docs}) == 1
    assert sorted(numbers(env.ann, tag=tag)) == nums


# ---------------------------------------------------------------------------
# changes: fields, optimistic locking, lifecycle
# ---------------------------------------------------------------------------

def test_patch_changes_fields_and_version(env):
    t = new_ticket(env.ann, tag="before")
    n = t["number"]
    r = env.ann.patch(f"{TK}/{n}", {"priority": "urgent", "subject": "Renamed",
                                    "tags": ["z", "a", "z"], "custom_fields": {"k": "v"},
                                    "team": env.team["id"]})
    d = expect(r, 200)
    assert d["version"] == 2
    assert d["priority"] == "urgent" and d["subject"] == "Renamed"
    assert d["tags"] == ["a", "z"]
    assert d["custom_fields"] == {"k": "v"}
    assert d["team"] is not None and d["team"]["id"] == env.team["id"]
    g = env.viewer.get(f"{TK}/{n}")
    d2 = expect(g, 200)
    assert g.headers.get("etag") == '"2"'
    assert d2["subject"] == "Renamed" and d2["version"] == 2
    d3 = expect(env.ann.patch(f"{TK}/{n}", {"team": None}), 200)
    assert d3["team"] is None and d3["version"] == 3
    d4 = expect(env.ann.patch(f"{TK}/{n}", {"subject": "x" * 500}), 200)
    assert d4["subject"] == "x" * 500


def test_patch_if_match(env):
    n = new_ticket(env.ann)["number"]
    d = expect(env.ann.patch(f"{TK}/{n}", {"priority": "low"}, headers={"If-Match": '"1"'}), 200)
    assert d["version"] == 2
    with db_unchanged(env.db, "stale If-Match"):
        expect(env.bob.patch(f"{TK}/{n}", {"priority": "high"}, headers={"If-Match": '"1"'}),
               409, code="conflict")
    d = expect(env.bob.patch(f"{TK}/{n}", {"priority": "high"}, headers={"If-Match": '"2"'}), 200)
    assert d["version"] == 3 and d["priority"] == "high"


def test_status_lifecycle(env):
    n = new_ticket(env.ann)["number"]

    def to(status):
        return env.ann.patch(f"{TK}/{n}", {"status": status})

    assert expect(to("open"), 200)["status"] == "open"
    with db_unchanged(env.db, "open -> new"):
        expect(to("new"), 422, field="status")
    for s in ("pending", "on_hold", "open", "solved"):
        assert expect(to(s), 200)["status"] == s
    d = expect(env.ann.get(f"{TK}/{n}"), 200)
    assert d["solved_at"]
    assert expect(to("open"), 200)["status"] == "open"        # a solved ticket may reopen
    assert expect(to("closed"), 200)["status"] == "closed"
    with db_unchanged(env.db, "closed -> anything"):
        for s in ("new", "open", "pending", "on_hold", "solved"):
            expect(to(s), 422, field="status")


PATCH_INVALID = [
    ({"colour": "red"}, "colour"),
    ({"status": "finished"}, "status"),
    ({"status": 3}, "status"),
    ({"priority": "whenever"}, "priority"),
    ({"priority": None}, "priority"),
    ({"subject": "x" * 501}, "subject"),
    ({"subject": ""}, "subject"),
    ({"subject": 12}, "subject"),
    ({"tags": "single"}, "tags"),
    ({"tags": [1, 2]}, "tags"),
    ({"custom_fields": ["a"]}, "custom_fields"),
    ({"assignee": "stranger"}, "assignee"),     # an agent of another tenant
    ({"assignee": 987654321}, "assignee"),
    ({"assignee": "ann"}, "assignee"),
    ({"team": 987654321}, "team"),
    ({"team": "tier 2"}, "team"),
]


@pytest.mark.parametrize("body,field", PATCH_INVALID,
                         ids=[f"{f}-{i}" for i, (_, f) in enumerate(PATCH_INVALID)])
def test_patch_validation(env, body, field):
    n = new_ticket(env.ann)["number"]
    if body.get("assignee") == "stranger":
        body = {"assignee": env.stranger_id}
    with db_unchanged(env.db, f"invalid ticket change {body!r:.80}"):
        expect(env.sup.patch(f"{TK}/{n}", body), 422, field=field)


# ---------------------------------------------------------------------------
# assignment rules
# ---------------------------------------------------------------------------

def test_agent_assigns_unassigned_ticket_to_self_and_back(env):
    n = new_ticket(env.ann)["number"]
    d = expect(env.ann.patch(f"{TK}/{n}", {"assignee": env.ann.id}), 200)
    assert d["assignee"]["id"] == env.ann.id
    d = expect(env.ann.patch(f"{TK}/{n}", {"assignee": None}), 200)
    assert d["assignee"] is None


def test_agent_may_change_own_ticket(env):
    n = new_ticket(env.ann)["number"]
    expect(env.ann.patch(f"{TK}/{n}", {"assignee": env.ann.id}), 200)
    d = expect(env.ann.patch(f"{TK}/{n}", {"status": "pending", "assignee": env.ann.id}), 200)
    assert d["assignee"]["id"] == env.ann.id and d["status"] == "pending"


def test_agent_cannot_assign_to_someone_else(env):
    n = new_ticket(env.ann)["number"]
    with db_unchanged(env.db, "agent assigning to another agent"):
        expect(env.ann.patch(f"{TK}/{n}", {"assignee": env.bob.id}), 403)


def test_agent_cannot_take_or_drop_someone_elses_ticket(env):
    n = new_ticket(env.ann)["number"]
    expect(env.ann.patch(f"{TK}/{n}", {"assignee": env.ann.id}), 200)
    with db_unchanged(env.db, "agent reassigning another agent's ticket"):
        expect(env.bob.patch(f"{TK}/{n}", {"assignee": env.bob.id}), 403)
        expect(env.bob.patch(f"{TK}/{n}", {"assignee": None}), 403)
    d = expect(env.ann.get(f"{TK}/{n}"), 200)
    assert d["assignee"]["id"] == env.ann.id


def test_supervisor_reassigns_anyones_ticket(env):
    n = new_ticket(env.ann)["number"]
    expect(env.ann.patch(f"{TK}/{n}", {"assignee": env.ann.id}), 200)
    d = expect(env.sup.patch(f"{TK}/{n}", {"assignee": env.bob.id}), 200)
    assert d["assignee"]["id"] == env.bob.id
    d = expect(env.sup.patch(f"{TK}/{n}", {"assignee": None}), 200)
    assert d["assignee"] is None
    d = expect(env.admin.patch(f"{TK}/{n}", {"assignee": env.sup.id}), 200)
    assert d["assignee"]["id"] == env.sup.id


def test_viewer_cannot_change_tickets(env):
    n = new_ticket(env.ann)["number"]
    with db_unchanged(env.db, "viewer writes"):
        expect(env.viewer.post(TK, {"subject": "v", "customer": {"email": "v@example.com"},
                                    "message": {"text": "v"}}), 403)
        expect(env.viewer.patch(f"{TK}/{n}", {"priority": "low"}), 403)
        expect(env.viewer.post(f"{TK}/{n}/messages", {"kind": "note", "text": "v"}), 403)
        expect(env.viewer.post(f"{TK}/{n}/merge", {"into": 1}), 403)


# ---------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------

def test_reply_opens_ticket_and_sets_first_response(env):
    t = new_ticket(env.ann, text="Help please")
    n = t["number"]
    assert t["first_response_at"] is None
    m = expect(env.ann.post(f"{TK}/{n}/messages",
                            {"kind": "reply", "text": "We are on it.",
                             "html": "<p>We are on it.</p>"}), 201)
    assert m["direction"] == "outbound" and m["text"] == "We are on it."
    assert m["created_at"]
    d = expect(env.ann.get(f"{TK}/{n}"), 200)
    assert d["status"] == "open"
    assert d["first_response_at"]
    assert [(x["direction"], x["text"]) for x in d["messages"]] == [
        ("inbound", "Help please"), ("outbound", "We are on it.")]
    first = d["first_response_at"]
    expect(env.bob.post(f"{TK}/{n}/messages", {"kind": "reply", "text": "Second reply"}), 201)
    d = expect(env.ann.get(f"{TK}/{n}"), 200)
    assert d["first_response_at"] == first
    assert len(d["messages"]) == 3


def test_note_changes_neither_status_nor_first_response(env):
    n = new_ticket(env.ann)["number"]
    m = expect(env.ann.post(f"{TK}/{n}/messages", {"kind": "note", "text": "internal"}), 201)
    assert m["direction"] == "note" and m["text"] == "internal"
    d = expect(env.ann.get(f"{TK}/{n}"), 200)
    assert d["status"] == "new" and d["first_response_at"] is None
    assert [x["direction"] for x in d["messages"]] == ["inbound", "note"]


# ---------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------

def test_events_record_the_history(env):
    n = new_ticket(env.ann)["number"]
    expect(env.ann.patch(f"{TK}/{n}", {"status": "open", "priority": "high"}), 200)
    expect(env.ann.post(f"{TK}/{n}/messages", {"kind": "note", "text": "noted"}), 201)
    doc = expect(env.viewer.get(f"{TK}/{n}/events"), 200)
    assert doc["next_cursor"] is None
    items = doc["items"]
    assert [e["action"] for e in items] == ["ticket.created", "ticket.updated",
                                            "message.added"], items
    for e in items:
        assert "before" in e and "after" in e and e["created_at"], e
    upd = items[1]
    assert upd["before"]["status"] == "new" and upd["after"]["status"] == "open", upd
    assert upd["before"]["priority"] == "normal" and upd["after"]["priority"] == "high", upd
    assert items[0]["before"] is None


def test_rejected_change_leaves_no_event(env):
    n = new_ticket(env.ann)["number"]
    expect(env.ann.patch(f"{TK}/{n}", {"status": "new2"}), 422, field="status")
    items = expect(env.ann.get(f"{TK}/{n}/events"), 200)["items"]
    assert [e["action"] for e in items] == ["ticket.created"]


# ---------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------

def test_merge_moves_messages_and_closes_source(env):
    src = new_ticket(env.ann, text="source message one")
    dst = new_ticket(env.ann, text="target message")
    s, d = src["number"], dst["number"]
    expect(env.ann.post(f"{TK}/{s}/messages", {"kind": "reply", "text": "source reply"}), 201)
    r = env.ann.post(f"{TK}/{s}/merge", {"into": d})
    doc = expect(r, 200)
    assert doc["number"] == d
    texts = [m["text"] for m in doc["messages"]]
    assert set(texts) == {"source message one", "source reply", "target message"}, texts
    source = expect(env.ann.get(f"{TK}/{s}"), 200)
    assert source["status"] == "closed"
    assert source["merged_into"] == d
    assert not {m["text"] for m in source["messages"]} & {"source message one", "source reply"}
    target = expect(env.ann.get(f"{TK}/{d}"), 200)
    assert sorted(m["text"] for m in target["messages"]) == sorted(texts)
    assert target["status"] != "closed"
    # a closed (merged) ticket cannot be reopened
    expect(env.ann.patch(f"{TK}/{s}", {"status": "open"}), 422, field="status")


def test_merge_validation(env):
    n = new_ticket(env.ann)["number"]
    with db_unchanged(env.db, "invalid merges"):
        expect(env.ann.post(f"{TK}/{n}/merge", {"into": 987654}), (404, 422))
        expect(env.ann.post(f"{TK}/{n}/merge", {"into": n}), (409, 422))
        expect(env.ann.post(f"{TK}/{n}/merge", {"into": "one"}), 422, field="into")
        expect(env.ann.post(f"{TK}/{n}/merge", {}), 422, field="into")
        expect(env.ann.post(f"{TK}/{n}/merge", {"into": 1, "x": 1}), 422, field="x")
