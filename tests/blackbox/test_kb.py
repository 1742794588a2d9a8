"""The knowledge base: articles written by supervisors and admins and read
by every member; the public, login-free pages of published articles; full-
text search in each article's own language (Russian, Arabic and English
stemming); views and helpfulness counted; review reminders; isolation
between tenants; bad input answered 4xx with nothing stored.
"""

import types

import pytest

from conftest import (API_TABLES, ApiClient, api_login, cli_agent, cli_tenant, db_fingerprint,
                      expect, psql, rand_suffix)

KB_TABLES = API_TABLES + ("kb_articles", "kb_settings")

RU_BODY = "Счёт не приходит на почту"
AR_BODY = "لا أستطيع تسجيل الدخول إلى حسابي"
EN_BODY = "If you forgot your password, we emailed you a link to reset it."


def setup_tenant(db, srv, slug=None):
    """A tenant with one member of each role, logged in."""
    slug = slug or "kb" + rand_suffix(8)
    cli_tenant(db, slug)
    t = types.SimpleNamespace(slug=slug)
    for role in ("admin", "supervisor", "agent", "viewer"):
        cli_agent(db, f"{role}@{slug}.example", slug, role)
        setattr(t, role, api_login(srv, f"{role}@{slug}.example"))
    t.anon = ApiClient(srv)
    return t


def arts(t):
    return f"tenants/{t.slug}/kb/articles"


def pub(t, rest=""):
    return f"/kb/{t.slug}/articles{rest}"


def create(t, client=None, **fields):
    body = {"title": "An article", "language": "en"}
    body.update(fields)
    return expect((client or t.supervisor).post(arts(t), body), 201)


def events(db, action):
    return psql(db, f"SELECT count(*) FROM events WHERE action = '{action}'").strip()


class kb_unchanged:
    """with kb_unchanged(db, "what"): ... -- fails if an API or KB table changed."""

    def __init__(self, db, what=""):
        self.db, self.what = db, what

    def __enter__(self):
        self.before = db_fingerprint(self.db, KB_TABLES)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            after = db_fingerprint(self.db, KB_TABLES)
            changed = {k: (self.before[k], after[k]) for k in after if self.before[k] != after[k]}
            assert not changed, f"{self.what}: the database changed: {changed}"
        return False


def ids(doc):
    return [i["id"] for i in doc["items"]]


@pytest.fixture
def kb(database, start_server):
    srv = start_server(database)
    return types.SimpleNamespace(db=database, srv=srv, t=setup_tenant(database, srv))


# ---------------------------------------------------------------------------
# members: write, read, roles, audit
# ---------------------------------------------------------------------------

def test_create_read_update_delete_and_roles(kb):
    db, t = kb.db, kb.t
    a = create(t, title="Where is my invoice?", body="# Invoices\nSee *Billing*.",
               language="pt-br", tags=["billing", "invoices", "billing"])
    assert a["title"] == "Where is my invoice?" and a["body"] == "# Invoices\nSee *Billing*."
    assert a["language"] == "pt-BR" and a["tags"] == ["billing", "invoices"]
    assert a["status"] == "draft" and a["author"]["id"] == t.supervisor.id
    assert a["url"] == f"/kb/{t.slug}/articles/{a['id']}"
    assert a["views"] == 0 and a["helpful"] == 0 and a["not_helpful"] == 0
    assert a["needs_review"] is False and a["reviewed_at"] and a["created_at"] and a["updated_at"]
    assert events(db, "kb.article_created") == "1"
    actor = psql(db, "SELECT actor_kind || ':' || actor_id FROM events"
                     " WHERE action = 'kb.article_created'").strip()
    assert actor == f"agent:{t.supervisor.id}"

    # everyone in the tenant reads, drafts included
    for c in (t.viewer, t.agent, t.supervisor, t.admin):
        assert expect(c.get(f"{arts(t)}/{a['id']}"), 200)["title"] == a["title"]
        assert a["id"] in ids(expect(c.get(arts(t)), 200))
    listed = expect(t.viewer.get(arts(t)), 200)["items"][0]
    assert "body" not in listed and listed["url"] == a["url"]

    # only supervisors and admins write
    with kb_unchanged(db, "refused writes"):
        expect(t.agent.post(arts(t), {"title": "x", "language": "en"}), 403)
        expect(t.viewer.post(arts(t), {"title": "x", "language": "en"}), 403)
        expect(t.agent.patch(f"{arts(t)}/{a['id']}", {"title": "x"}), 403)
        expect(t.agent.delete(f"{arts(t)}/{a['id']}"), 403)
        expect(t.agent.request("POST", f"{arts(t)}/{a['id']}/reviewed"), 403)
        expect(t.anon.get(arts(t)), 401)
        expect(t.anon.post(arts(t), {"title": "x", "language": "en"}), 401)

    b = expect(t.admin.patch(f"{arts(t)}/{a['id']}",
                             {"title": "Where is my invoice now?", "status": "published",
                              "tags": ["billing"]}), 200)
    assert b["title"] == "Where is my invoice now?" and b["status"] == "published"
    assert b["tags"] == ["billing"] and b["body"] == a["body"] and b["language"] == "pt-BR"
    assert b["updated_at"] > a["updated_at"] and b["author"]["id"] == t.supervisor.id
    assert events(db, "kb.article_updated") == "1"
    change = psql(db, "SELECT before::text || ' ' || after::text FROM events"
                      " WHERE action = 'kb.article_updated'")
    assert "Where is my invoice?" in change and '"status": "published"' in change
    # a patch that changes nothing writes nothing
    with kb_unchanged(db, "no-op patch"):
        assert expect(t.admin.patch(f"{arts(t)}/{a['id']}", {"status": "published"}),
                      200)["updated_at"] == b["updated_at"]
        expect(t.admin.patch(f"{arts(t)}/{a['id']}", {}), 200)

    expect(t.supervisor.delete(f"{arts(t)}/{a['id']}"), 204)
    expect(t.viewer.get(f"{arts(t)}/{a['id']}"), 404)
    expect(t.supervisor.delete(f"{arts(t)}/{a['id']}"), 404)
    expect(t.supervisor.patch(f"{arts(t)}/{a['id']}", {"title": "gone"}), 404)
    expect(t.supervisor.request("POST", f"{arts(t)}/{a['id']}/reviewed"), 404)
    expect(t.viewer.get(f"{arts(t)}/abc"), 404)
    assert events(db, "kb.article_deleted") == "1"
    assert psql(db, "SELECT count(*) FROM kb_articles").strip() == "0"


def test_settings(kb):
    db, t = kb.db, kb.t
    s = f"tenants/{t.slug}/kb/settings"
    assert expect(t.viewer.get(s), 200) == {"review_after_days": 180}
    with kb_unchanged(db, "settings refused"):
        expect(t.supervisor.request("PUT", s, {"review_after_days": 30}), 403)
        expect(t.anon.get(s), 401)
    assert expect(t.admin.request("PUT", s, {"review_after_days": 30}), 200) == \
        {"review_after_days": 30}
    assert expect(t.agent.get(s), 200) == {"review_after_days": 30}
    assert expect(t.admin.request("PUT", s, {"review_after_days": 3650}), 200) == \
        {"review_after_days": 3650}
    assert events(db, "kb.settings_updated") == "2"


# ---------------------------------------------------------------------------
# public pages
# ---------------------------------------------------------------------------

def test_public_pages_drafts_views_and_feedback(kb):
    db, t = kb.db, kb.t
    draft = create(t, title="Secret plan", body="unreleased zebrafeature details")
    pub_a = create(t, title="Opening hours", body="We answer every weekday.", status="published")

    # a draft is invisible: not listed, not found, not searchable, no feedback
    with kb_unchanged(db, "draft stays invisible"):
        r = t.anon.get(pub(t, f"/{draft['id']}"))
        expect(r, 404, code="not_found")
        assert ids(expect(t.anon.get(pub(t)), 200)) == [pub_a["id"]]
        assert expect(t.anon.get(pub(t), q="zebrafeature"), 200)["items"] == []
        expect(t.anon.post(pub(t, f"/{draft['id']}/feedback"), {"helpful": True}), 404)
    # members find it
    assert ids(expect(t.agent.get(arts(t), q="zebrafeature"), 200)) == [draft["id"]]

    doc = expect(t.anon.get(pub(t, f"/{pub_a['id']}")), 200)
    assert doc["title"] == "Opening hours" and doc["body"] == "We answer every weekday."
    assert doc["url"] == f"/kb/{t.slug}/articles/{pub_a['id']}" and doc["language"] == "en"
    for private in ("status", "author", "views", "helpful", "not_helpful", "reviewed_at"):
        assert private not in doc
    expect(t.anon.get(pub(t, f"/{pub_a['id']}")), 200)
    expect(t.anon.get(pub(t, f"/{pub_a['id']}")), 200)
    status, _, _ = kb.srv.request("HEAD", pub(t, f"/{pub_a['id']}"))
    assert status == 200
    for helpful in (True, True, False):
        r = t.anon.post(pub(t, f"/{pub_a['id']}/feedback"), {"helpful": helpful})
        assert r.status == 204, r
    got = expect(t.viewer.get(f"{arts(t)}/{pub_a['id']}"), 200)
    assert (got["views"], got["helpful"], got["not_helpful"]) == (3, 2, 1)
    # counting is not editing: the review clock and updated_at stay
    assert got["updated_at"] == pub_a["updated_at"]

    # unpublishing hides it again
    expect(t.supervisor.patch(f"{arts(t)}/{pub_a['id']}", {"status": "draft"}), 200)
    expect(t.anon.get(pub(t, f"/{pub_a['id']}")), 404)
    assert expect(t.anon.get(pub(t)), 200)["items"] == []

    # unknown tenants and malformed ids are JSON 404s
    for path in ("/kb/nosuchtenant/articles", f"/kb/nosuchtenant/articles/{pub_a['id']}",
                 "/kb/Bad_Slug!/articles", pub(t, "/abc"), pub(t, "/99999999")):
        expect(t.anon.get(path), 404, code="not_found")
    expect(t.anon.post(f"/kb/nosuchtenant/articles/{pub_a['id']}/feedback", {"helpful": True}),
           404, code="not_found")


# ---------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------

def test_search_in_each_articles_language(kb):
    t = kb.t
    ru = create(t, title="Проблемы со счётом", body=RU_BODY, language="ru", status="published")
    ar = create(t, title="تسجيل الدخول", body=AR_BODY, language="ar", status="published")
    en = create(t, title="Resetting passwords", body=EN_BODY, language="en", status="published")
    de = create(t, title="Rechnung", body="Die Rechnung kommt nicht per Post.", language="de",
                status="published")
    xx = create(t, title="Klingon", body="Qapla batlh", language="tlh", status="published")
    # a word too long to index (an inline image) is left out quietly
    logo = create(t, title="Our logo", body="![logo](data:image/png;base64," + "QUJD" * 1000 + ")",
                  status="published")

    def found(q, **kw):
        return set(ids(expect(t.anon.get(pub(t), q=q, **kw), 200)))

    # Russian: inflected forms reach the stem of "Счёт" / "почту"
    assert found("счета") == {ru["id"]}
    assert found("почты") == {ru["id"]}
    assert found("СЧЁТ") == {ru["id"]}
    # Arabic: the possessive "حسابي" (my account) and "الحساب" (the account)
    assert found("حسابي") == {ar["id"]}
    assert found("الحساب") == {ar["id"]}
    # English: stemmed, several words, and a phrase
    assert found("emails") == {en["id"]}
    assert found("reset password") == {en["id"]}
    assert found('"forgot your password"') == {en["id"]}
    assert found("password -emailed") == set()
    # German (another configuration in use) and a language without one (simple)
    assert found("Rechnungen") == {de["id"]}
    assert found("batlh") == {xx["id"]}
    assert found("logo") == {logo["id"]}
    # nothing to find, or only stop words: an empty page, never an error
    assert found("nonexistentword") == set()
    assert found("the") == set()
    assert found("!!! ???") == set()
    # stop words and over-long words are expected: no NOTICE reaches the server's log
    assert "NOTICE" not in kb.srv.log_text()
    # the language filter
    assert found("счета", lang="ru") == {ru["id"]}
    assert found("счета", lang="en") == set()
    assert found("password", lang="EN") == {en["id"]}

    page = expect(t.anon.get(pub(t), q="emails"), 200)
    assert page["next_cursor"] is None
    hit = page["items"][0]
    assert "**emailed**" in hit["snippet"] and hit["url"] == en["url"] and "body" not in hit
    assert isinstance(hit["rank"], (int, float)) and hit["rank"] > 0

    # members search the same way, drafts included
    assert set(ids(expect(t.viewer.get(arts(t), q="почты"), 200))) == {ru["id"]}
    member_hit = expect(t.viewer.get(arts(t), q="حسابي"), 200)["items"][0]
    assert member_hit["id"] == ar["id"] and member_hit["snippet"] and "status" in member_hit


def test_search_ranks_title_over_body(kb):
    t = kb.t
    in_body = create(t, title="General questions", body="Refunds take five days.",
                     status="published")
    in_title = create(t, title="Refunds", body="Ask us and we will help.", status="published")
    got = ids(expect(t.anon.get(pub(t), q="refund"), 200))
    assert got == [in_title["id"], in_body["id"]]


def test_lists_page_with_cursors_and_filters(kb):
    t = kb.t
    made = [create(t, title=f"Shipping question {i}", body="shipping " * (i + 1),
                   tags=["shipping"] if i % 2 else ["other"],
                   status="published" if i < 5 else "draft")["id"] for i in range(7)]
    # newest change first, three at a time
    seen, cursor = [], None
    while True:
        page = expect(t.viewer.get(arts(t), limit=3, cursor=cursor), 200)
        assert len(page["items"]) <= 3
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    # a search pages the same way, best match first
    seen, cursor = [], None
    while True:
        page = expect(t.viewer.get(arts(t), q="shipping", limit=2, cursor=cursor), 200)
        seen += ids(page)
        ranks = [i["rank"] for i in page["items"]]
        assert ranks == sorted(ranks, reverse=True)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert set(ids(expect(t.viewer.get(arts(t), status="draft"), 200))) == set(made[5:])
    assert set(ids(expect(t.viewer.get(arts(t), tag="shipping"), 200))) == set(made[1::2])
    assert ids(expect(t.viewer.get(arts(t), language="de"), 200)) == []
    assert len(ids(expect(t.viewer.get(arts(t), language="en"), 200))) == 7
    assert len(ids(expect(t.anon.get(pub(t), limit=2), 200))) == 2
    assert set(ids(expect(t.anon.get(pub(t), limit=50), 200))) == set(made[:5])


# ---------------------------------------------------------------------------
# tenants
# ---------------------------------------------------------------------------

def test_other_tenants_articles_are_never_seen(kb):
    db, srv, a = kb.db, kb.srv, kb.t
    b = setup_tenant(db, srv)
    mine = create(a, title="Our refund policy", body="Refunds within 30 days.",
                  status="published")
    theirs = create(b, title="Their refund policy", body="Refunds never. Счёт не приходит.",
                    language="ru", status="published")
    # public: searching and reading by id in the wrong tenant finds nothing
    assert ids(expect(a.anon.get(pub(a), q="refunds"), 200)) == [mine["id"]]
    assert ids(expect(a.anon.get(pub(a), q="счета"), 200)) == []
    assert ids(expect(a.anon.get(pub(a)), 200)) == [mine["id"]]
    expect(a.anon.get(pub(a, f"/{theirs['id']}")), 404)
    with kb_unchanged(db, "feedback across tenants"):
        expect(a.anon.post(pub(a, f"/{theirs['id']}/feedback"), {"helpful": False}), 404)
    # members: same, and another tenant's routes are not theirs
    assert ids(expect(a.admin.get(arts(a), q="refunds"), 200)) == [mine["id"]]
    expect(a.admin.get(f"{arts(a)}/{theirs['id']}"), 404)
    with kb_unchanged(db, "writes across tenants"):
        expect(a.admin.patch(f"{arts(a)}/{theirs['id']}", {"title": "mine now"}), 404)
        expect(a.admin.delete(f"{arts(a)}/{theirs['id']}"), 404)
        expect(a.admin.request("POST", f"{arts(a)}/{theirs['id']}/reviewed"), 404)
        expect(a.admin.get(arts(b)), 404)
        expect(a.admin.get(f"{arts(b)}/{theirs['id']}"), 404)
    assert expect(b.viewer.get(f"{arts(b)}/{theirs['id']}"), 200)["title"] == \
        "Their refund policy"
    assert ids(expect(b.anon.get(pub(b), q="refunds"), 200)) == [theirs["id"]]


# ---------------------------------------------------------------------------
# staying current
# ---------------------------------------------------------------------------

def test_needs_review_and_reviewed(kb):
    db, t = kb.db, kb.t
    stale = create(t, title="Old pricing", body="Prices from 2019.")
    fresh = create(t, title="New pricing", body="Prices from now.")
    assert stale["needs_review"] is False
    expect(t.admin.request("PUT", f"tenants/{t.slug}/kb/settings", {"review_after_days": 1}), 200)
    psql(db, "UPDATE kb_articles SET reviewed_at = now() - interval '2 days',"
             f" updated_at = now() - interval '2 days' WHERE id = {stale['id']}")

    assert expect(t.agent.get(f"{arts(t)}/{stale['id']}"), 200)["needs_review"] is True
    assert expect(t.agent.get(f"{arts(t)}/{fresh['id']}"), 200)["needs_review"] is False
    assert ids(expect(t.agent.get(arts(t), needs_review="true"), 200)) == [stale["id"]]
    assert ids(expect(t.agent.get(arts(t), needs_review="false"), 200)) == [fresh["id"]]

    # a longer period makes it current again, without touching it
    expect(t.admin.request("PUT", f"tenants/{t.slug}/kb/settings", {"review_after_days": 3}), 200)
    assert expect(t.agent.get(f"{arts(t)}/{stale['id']}"), 200)["needs_review"] is False
    expect(t.admin.request("PUT", f"tenants/{t.slug}/kb/settings", {"review_after_days": 1}), 200)

    r = expect(t.supervisor.request("POST", f"{arts(t)}/{stale['id']}/reviewed"), 200)
    assert r["needs_review"] is False and r["reviewed_at"] > stale["reviewed_at"]
    assert r["updated_at"] < r["reviewed_at"]
    assert ids(expect(t.agent.get(arts(t), needs_review="true"), 200)) == []
    again = expect(t.admin.post(f"{arts(t)}/{stale['id']}/reviewed",
                                {"note": "prices checked with sales"}), 200)
    assert again["reviewed_at"] >= r["reviewed_at"]
    assert events(db, "kb.article_reviewed") == "2"
    assert "prices checked with sales" in psql(
        db, "SELECT after::text FROM events WHERE action = 'kb.article_reviewed'")

    # an edit counts as a review too
    psql(db, "UPDATE kb_articles SET reviewed_at = now() - interval '2 days',"
             f" updated_at = now() - interval '2 days' WHERE id = {stale['id']}")
    assert expect(t.agent.get(f"{arts(t)}/{stale['id']}"), 200)["needs_review"] is True
    e = expect(t.supervisor.patch(f"{arts(t)}/{stale['id']}", {"body": "Prices from 2025."}), 200)
    assert e["needs_review"] is False


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

BAD_CREATE = [
    ({"language": "en"}, "title"),
    ({"title": "", "language": "en"}, "title"),
    ({"title": "   ", "language": "en"}, "title"),
    ({"title": "x" * 301, "language": "en"}, "title"),
    ({"title": 5, "language": "en"}, "title"),
    ({"title": "ok"}, "language"),
    ({"title": "ok", "language": ""}, "language"),
    ({"title": "ok", "language": "e"}, "language"),
    ({"title": "ok", "language": "english!"}, "language"),
    ({"title": "ok", "language": "en--us"}, "language"),
    ({"title": "ok", "language": "12"}, "language"),
    ({"title": "ok", "language": "en-" + "x" * 40}, "language"),
    ({"title": "ok", "language": "en", "body": "b" * 200001}, "body"),
    ({"title": "ok", "language": "en", "body": None}, "body"),
    ({"title": "ok", "language": "en", "tags": "billing"}, "tags"),
    ({"title": "ok", "language": "en", "tags": [f"t{i}" for i in range(51)]}, "tags"),
    ({"title": "ok", "language": "en", "tags": ["x" * 101]}, "tags"),
    ({"title": "ok", "language": "en", "tags": [""]}, "tags"),
    ({"title": "ok", "language": "en", "tags": [1]}, "tags"),
    ({"title": "ok", "language": "en", "status": "archived"}, "status"),
    ({"title": "ok", "language": "en", "views": 100}, "views"),
    ({"title": "ok", "language": "en", "author": 1}, "author"),
]


def test_bad_input_is_refused_and_nothing_is_stored(kb):
    db, t = kb.db, kb.t
    a = create(t, title="Kept", body="unchanged body", status="published")
    s = f"tenants/{t.slug}/kb/settings"
    with kb_unchanged(db, "bad input"):
        for body, field in BAD_CREATE:
            expect(t.admin.post(arts(t), body), 422, code="invalid_field", field=field)
            patch = {k: v for k, v in body.items() if k == field}
            if patch:
                expect(t.admin.patch(f"{arts(t)}/{a['id']}", patch), 422, field=field)
        expect(t.admin.post(arts(t), ["title"]), 422)
        expect(t.admin.post(arts(t), {"title": "ok", "language": "en", "body": "a\u0000b"}), 400)
        expect(t.admin.request("POST", arts(t), body=b"{not json",
                               content_type="application/json"), 400)
        expect(t.admin.request("POST", arts(t), body=b"title=x",
                               content_type="application/x-www-form-urlencoded"), 415)
        for v in (0, 3651, -1, "30", None, 1.5):
            expect(t.admin.request("PUT", s, {"review_after_days": v}), 422,
                   field="review_after_days")
        expect(t.admin.request("PUT", s, {}), 422, field="review_after_days")
        expect(t.admin.request("PUT", s, {"review_after_days": 5, "x": 1}), 422, field="x")
        expect(t.admin.post(f"{arts(t)}/{a['id']}/reviewed", {"why": "x"}), 422, field="why")
        expect(t.admin.post(f"{arts(t)}/{a['id']}/reviewed", {"note": 5}), 422, field="note")

        # list parameters: 422, never 500
        for q, field in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                         ({"limit": "ten"}, "limit"), ({"status": "gone"}, "status"),
                         ({"needs_review": "maybe"}, "needs_review"),
                         ({"language": "not a tag"}, "language"), ({"q": "x" * 201}, "q"),
                         ({"cursor": "garbage!!"}, "cursor"), ({"cursor": "Zm9vfGJhcg.."}, "cursor"),
                         ({"q": "refund", "cursor": "Zm9vfGJhcg.."}, "cursor")):
            expect(t.viewer.get(arts(t), **q), 422, field=field)
        expect(t.viewer.get(f"{arts(t)}?q=%FF%FE"), 422, field="q")

        # public parameters and feedback
        for q, field in (({"limit": 0}, "limit"), ({"limit": 51}, "limit"),
                         ({"lang": "?"}, "lang"), ({"q": "y" * 201}, "q")):
            expect(t.anon.get(pub(t), **q), 422, field=field)
        expect(t.anon.get(pub(t) + "?q=%C3%28"), 422, field="q")
        for body in ({}, {"helpful": "yes"}, {"helpful": 1}, {"helpful": True, "why": "x"}, []):
            expect(t.anon.post(pub(t, f"/{a['id']}/feedback"), body), 422)
        expect(t.anon.request("POST", pub(t, f"/{a['id']}/feedback"), body=b"helpful",
                              content_type="text/plain"), 415)
        # a read that counts is not part of this block: HEAD does not count
        status, _, _ = kb.srv.request("HEAD", pub(t, f"/{a['id']}"))
        assert status == 200

    # the limits themselves are accepted
    big = create(t, title="x" * 300, body="b" * 200000, language="zh-hant-tw",
                 tags=[f"t{i}" for i in range(50)])
    assert big["language"] == "zh-Hant-TW" and len(big["body"]) == 200000
