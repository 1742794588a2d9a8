"""Social and SMS channels: Telegram, WhatsApp, Messenger/Instagram and
Twilio-style SMS plugins, through their channel instances' webhooks
/hooks/{tenant}/{id} (verified, idempotent, acknowledged after commit)
and their replies to a fake platform API on loopback.

The payloads are the real ones in ../shared/corpus/social/.
"""

import base64
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import threading
import time
import urllib.parse

import pytest

from conftest import (api_login, cli_agent, cli_tenant, expect, free_port, psql, rand_suffix,
                      run_cli, wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus_dir():
    """The social corpus: SWITCHBOARD_TEST_CORPUS (the corpus folder) when
    set, else the shared corpus next to the checkout, else the workspace's
    (a fresh clone made elsewhere, as CI does, still finds it)."""
    for top in (os.environ.get("SWITCHBOARD_TEST_CORPUS"),
                os.path.join(ROOT, "..", "shared", "corpus"), "/work/shared/corpus"):
        if top and os.path.isdir(os.path.join(top, "social")):
            return os.path.join(top, "social")
    return os.path.join(ROOT, "..", "shared", "corpus", "social")


CORPUS = corpus_dir()
T = "soc"

pytestmark = pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no social corpus")


def corpus(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()


def corpus_files():
    return sorted(n for n in os.listdir(CORPUS) if not n.startswith("meta-signature-vector")) \
        if os.path.isdir(CORPUS) else []


# ---------------------------------------------------------------------------
# signing as the platforms do
# ---------------------------------------------------------------------------

def meta_signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def twilio_signature(token, url, body):
    params = sorted(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    data = url + "".join(k + v for k, v in params)
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


SECRETS = {
    "telegram": {"bot_token": "123:bot-token", "secret_token": "tg-secret-token"},
    "whatsapp": {"app_secret": "wa-app-secret", "verify_token": "wa-verify",
                 "access_token": "wa-access-token"},
    "messenger": {"app_secret": "fb-app-secret", "verify_token": "fb-verify",
                  "page_access_token": "fb-page-token"},
    "sms": {"account_sid": "ACtest", "auth_token": "twilio-auth-token"},
}


def type_of(name):
    if name.startswith("telegram"):
        return "telegram"
    if name.startswith("whatsapp"):
        return "whatsapp"
    if name.startswith(("messenger", "instagram")):
        return "messenger"
    return "sms"


def signed(srv, ch, body, secrets=None, public_url=None, query=""):
    """Headers a platform would send for body to channel ch (at its webhook + query)."""
    s = secrets or SECRETS[ch["type"]]
    if ch["type"] == "telegram":
        return {"X-Telegram-Bot-Api-Secret-Token": s["secret_token"],
                "Content-Type": "application/json"}
    if ch["type"] in ("whatsapp", "messenger"):
        return {"X-Hub-Signature-256": meta_signature(s["app_secret"], body),
                "Content-Type": "application/json"}
    url = (public_url or srv.url("")).rstrip("/") + ch["endpoints"]["webhook"] + query
    return {"X-Twilio-Signature": twilio_signature(s["auth_token"], url, body),
            "Content-Type": "application/x-www-form-urlencoded"}


def post(srv, ch, body, headers):
    status, _, raw = srv.request("POST", ch["endpoints"]["webhook"], body=body, headers=headers)
    return status, raw.decode(errors="replace")


def stored(db, ch):
    """(messages, attachments, customers' identities) of the channel instance."""
    out = psql(db, f"SELECT (SELECT count(*) FROM messages WHERE channel_id = {ch['id']}) || ','"
                   f" || (SELECT count(*) FROM attachments a JOIN messages m ON m.tenant_id ="
                   f" a.tenant_id AND m.id = a.message_id WHERE m.channel_id = {ch['id']}) || ','"
                   f" || (SELECT count(*) FROM customer_identities)")
    return tuple(int(x) for x in out.strip().split(","))


def rows(db, sql):
    out = psql(db, sql).strip()
    return [line.split("|") for line in out.splitlines()] if out else []


# ---------------------------------------------------------------------------
# a fake platform API on loopback
# ---------------------------------------------------------------------------

class FakeApi:
    """Records every request; answers POSTs from a script of (status,
    headers, body) tuples (body a JSON document, or bytes sent as they
    are), then with the default, and GETs from files
    (path with query -> (status, content type, bytes))."""

    def __init__(self, default=(200, {}, {"ok": True})):
        self.requests = []
        self.script = []
        self.files = {}
        self.default = default
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with api.lock:
                    api.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                    status, headers, doc = api.script.pop(0) if api.script else api.default
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with api.lock:
                    api.requests.append((time.monotonic(), self.path, dict(self.headers), b""))
                    status, ctype, data = api.files.get(self.path, (404, "text/plain", b"no"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def fake():
    f = FakeApi()
    yield f
    f.close()


# ---------------------------------------------------------------------------
# one server for the module
# ---------------------------------------------------------------------------

class Env:
    pass


def start(database, start_server):
    port = free_port()
    return start_server(database, port=port, env={
        "SWITCHBOARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_CHANNELS_ALLOW_PRIVATE": "true",
    })


@pytest.fixture(scope="module")
def env(module_database, module_start_server):
    e = Env()
    e.db = module_database
    e.srv = start(e.db, module_start_server)
    cli_tenant(e.db, T, "Social Ltd")
    cli_agent(e.db, "adm@soc.example", T, "admin")
    e.adm = api_login(e.srv, "adm@soc.example")
    return e


# The account ids a channel's events must name (WhatsApp's number, the Page
# and its Instagram account), as in most of the corpus.
ACCOUNTS = {"whatsapp": {"phone_number_id": "1122334455667"},
            "messenger": {"page_id": "111111", "instagram_id": "1234567890"}}


def new_channel(e, type_, settings=None, secrets=None):
    body = {"type": type_, "name": f"{type_} {rand_suffix(6)}",
            "settings": {k: v for k, v in dict(ACCOUNTS.get(type_, {}), **(settings or {})).items()
                         if v is not None},     # None: leave a default out
            "secrets": secrets or SECRETS[type_]}
    ch = expect(e.adm.post(f"tenants/{T}/channels", body), 201)
    assert ch["endpoints"]["webhook"] == f"/hooks/{T}/{ch['id']}"
    assert "secret" not in json.dumps(ch["settings"]) and set(ch["secrets"]) == set(body["secrets"])
    return ch


# What each corpus payload must become: text of the message (or None when
# it carries no message of a customer), identity, thread, attachment.
EXPECTED = {
    "telegram-update-message-text.json": ("Ciao", ("telegram", "456"), "456", None),
    "telegram-update-channel-post.json": ("Ciao", ("telegram", "456"), "456", None),
    "telegram-update-callback-query.json": ("thedata", ("telegram", "222222222"), "222222222", None),
    "telegram-update-document.json": ("(document)", ("telegram", "456"), "456",
                                      ("a1b2c34d5e6f7g8h9i", "document.pdf", "application/pdf",
                                       123456)),
    "telegram-update-edited-message-reply.json": ("(edited) Editing this message",
                                                  ("telegram", "999999999"), "999999999", None),
    "telegram-update-entities-emoji.json": (None, ("telegram", "321654"), "321654", None),
    "telegram-update-location.json": ("(location 41.899977, 12.501028)", ("telegram", "12345"),
                                      "12345", None),
    "telegram-update-photo-caption.json": ("asdasdasdasdasdasd", ("telegram", "11111111"),
                                           "11111111", ("SEES", "photo.jpg", "image/jpeg", 104893)),
    "telegram-update-supergroup-message.json": ("foo", ("telegram", "123456"), "-1001234567489",
                                                None),
    "telegram-update-supergroup-topic-reply.json": ("lòklò", ("telegram", "123456"),
                                                    "-1001234567489/33", None),
    "telegram-update-voice.json": ("(voice)", ("telegram", "12345"), "12345",
                                   ("dfghjjghdjhgd", "voice.ogg", "audio/ogg", 6448)),
    "whatsapp-message-text.json": ("Body Text", ("whatsapp", "972987654321"), "972987654321", None),
    "whatsapp-message-reply-context.json": ("replied text", ("whatsapp", "972987654321"),
                                            "972987654321", None),
    "whatsapp-message-image.json": ("(image)", ("whatsapp", "972987654321"), "972987654321",
                                    ("65463453", "image", "image/jpeg", 0)),
    "whatsapp-message-document-forwarded.json": ("caption", ("whatsapp", "972987654321"),
                                                 "972987654321",
                                                 ("1234567890987654321", "filename.pdf",
                                                  "application/pdf", 0)),
    "whatsapp-group-message-text.json": ("Hello World, group message", ("whatsapp", "5678"),
                                         "group:555555555", None),
    "whatsapp-status-delivered.json": None,
    "whatsapp-status-read.json": None,
    "whatsapp-status-failed.json": None,
    "messenger-message-text.json": ("hello, world!", ("messenger", "USER_ID"), "messenger:USER_ID",
                                    None),
    "messenger-message-image-attachment.json": ("(image)", ("messenger", "USER_ID"),
                                                "messenger:USER_ID",
                                                ("IMAGE_URL", "image", "application/octet-stream",
                                                 0)),
    "messenger-postback.json": ("USER_DEFINED_PAYLOAD", ("messenger", "USER_ID"),
                                "messenger:USER_ID", None),
    "messenger-postback-with-referral.json": ("postback title", ("messenger", "5678"),
                                              "messenger:5678", None),
    "messenger-delivery.json": None,
    "instagram-message-text.json": ("Hello World", ("instagram", "5678"), "instagram:5678", None),
    "instagram-message-image-attachment.json": ("(image)", ("instagram", "5678"),
                                                "instagram:5678",
                                                ("https://image-url/foo.png", "image",
                                                 "application/octet-stream", 0)),
    "instagram-message-story-mention.json": ("(story_mention)", ("instagram", "5678"),
                                             "instagram:5678",
                                             ("https://story-url", "story_mention",
                                              "application/octet-stream", 0)),
    "twilio-inbound-sms.txt": ("Msg", ("phone", "+14133881111"), "+14133881111", None),
    "twilio-inbound-whatsapp.txt": ("Msg", ("whatsapp", "14133881111"), "whatsapp:+14133881111",
                                    None),
    "twilio-inbound-mms-2-media.txt": ("(media)", ("phone", "+14133881111"), "+14133881111",
                                       ("cat.jpg", "media", "application/octet-stream", 0)),
    "twilio-status-delivered.txt": None,
    "twilio-status-failed-21610.txt": None,
}


def test_every_corpus_payload_is_listed():
    assert sorted(EXPECTED) == corpus_files()


def tamper(body):
    """The same payload with one byte changed."""
    i = len(body) // 2
    return body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]


def corpus_account(name, body):
    """The account id settings that a Meta corpus payload names."""
    if not name.startswith(("whatsapp", "messenger", "instagram")):
        return None
    entry = json.loads(body)["entry"][0]
    if name.startswith("whatsapp"):
        return {"phone_number_id": entry["changes"][0]["value"]["metadata"]["phone_number_id"]}
    return {"page_id" if name.startswith("messenger") else "instagram_id": entry["id"]}


@pytest.mark.parametrize("name", corpus_files())
def test_corpus_payload_verified_stored_once(env, name):
    e = env
    body = corpus(name)
    ch = new_channel(e, type_of(name), settings=corpus_account(name, body))
    before = stored(e.db, ch)

    # Refused first: one byte changed (for Telegram, whose token does not
    # cover the body, one byte of the token), then the wrong secret.
    headers = signed(e.srv, ch, body)
    if ch["type"] == "telegram":
        bad = dict(headers, **{"X-Telegram-Bot-Api-Secret-Token": "tg-secret-tokem"})
        assert post(e.srv, ch, body, bad)[0] == 401
    else:
        assert post(e.srv, ch, tamper(body), headers)[0] == 401
    wrong = {k: v + "x" for k, v in SECRETS[ch["type"]].items()}
    assert post(e.srv, ch, body, signed(e.srv, ch, body, secrets=wrong))[0] == 401
    assert post(e.srv, ch, body, {"Content-Type": "application/json"})[0] == 401
    assert stored(e.db, ch) == before

    status, text = post(e.srv, ch, body, headers)
    assert status == 200, text
    after = stored(e.db, ch)
    want = EXPECTED[name]
    if want is None:       # statuses of messages we never sent: nothing to store
        assert after == before
    else:
        text_want, (kind, value), thread, att = want
        got = rows(e.db, f"SELECT m.body_text, t.thread_key, t.channel, ci.kind, ci.value"
                         f" FROM messages m JOIN tickets t ON t.tenant_id = m.tenant_id"
                         f" AND t.id = m.ticket_id JOIN customer_identities ci"
                         f" ON ci.tenant_id = m.tenant_id AND ci.customer_id = m.author_customer_id"
                         f" WHERE m.channel_id = {ch['id']} AND ci.kind = '{kind}'")
        assert len(got) == 1, got
        m_text, m_thread, m_channel, m_kind, m_value = got[0]
        assert m_channel == ch["type"] and (m_kind, m_value) == (kind, value)
        assert m_thread == thread
        if text_want is not None:
            assert m_text == text_want
        else:
            assert m_text == json.loads(body)["message"]["text"]
        if att:
            files = rows(e.db, f"SELECT a.file_id, a.filename, a.content_type, a.size,"
                               f" a.data IS NULL FROM attachments a JOIN messages m"
                               f" ON m.tenant_id = a.tenant_id AND m.id = a.message_id"
                               f" WHERE m.channel_id = {ch['id']} ORDER BY a.id")
            assert files[0] == [att[0], att[1], att[2], str(att[3]), "t"], files
        assert after[0] == before[0] + 1

    # Redelivery: acknowledged again, nothing new.
    assert post(e.srv, ch, body, headers)[0] == 200
    assert stored(e.db, ch) == after


def test_meta_signature_vector(env):
    vector = json.loads(corpus("meta-signature-vector.json"))
    body = corpus(vector["body_file"])
    assert len(body) == vector["body_length_bytes"]
    ch = new_channel(env, "whatsapp", settings=corpus_account("whatsapp", body),
                     secrets=dict(SECRETS["whatsapp"], app_secret=vector["app_secret"]))
    headers = {vector["header_name"]: vector["header_value"], "Content-Type": "application/json"}
    assert post(env.srv, ch, body, headers)[0] == 200
    got = rows(env.db, f"SELECT body_text, external_id FROM messages WHERE channel_id = {ch['id']}")
    assert got == [["Hey there! I am using PyWa.",
                    "wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4QzM4ODAxM0YA"]]


def test_bad_requests(env):
    e = env
    wa = new_channel(e, "whatsapp")
    for body in (b"{not json", b"[1,2]", b""):
        status, _ = post(e.srv, wa, body, signed(e.srv, wa, body))
        assert status == 400
    big = b'{"object":"whatsapp_business_account","pad":"' + b"x" * (1 << 20) + b'"}'
    assert post(e.srv, wa, big, signed(e.srv, wa, big))[0] == 413
    # Unknown fields are ignored.
    body = json.dumps({"object": "whatsapp_business_account", "future": {"x": 1},
                       "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                           "metadata": {"phone_number_id": "1122334455667"},
                           "messages": [{"from": "31600000001", "id": "wamid.unknown-fields",
                                         "type": "text", "text": {"body": "hi"}, "new": 1}]}}]}]}
                      ).encode()
    assert post(e.srv, wa, body, signed(e.srv, wa, body))[0] == 200
    assert stored(e.db, wa)[0] == 1
    # Channels that do not exist, or are another tenant's, or are switched off.
    status, _, raw = e.srv.request("POST", f"/hooks/{T}/999999", body=body,
                                   headers=signed(e.srv, wa, body))
    assert status == 404 and json.loads(raw)["error"]["code"] == "not_found"
    assert e.srv.request("POST", f"/hooks/nosuch/{wa['id']}", body=body,
                         headers=signed(e.srv, wa, body))[0] == 404
    expect(e.adm.patch(f"tenants/{T}/channels/{wa['id']}", {"active": False}), 200)
    assert post(e.srv, wa, body, signed(e.srv, wa, body))[0] == 404
    # The trailing-slash form of the path is the same webhook.
    tg = new_channel(e, "telegram")
    body = corpus("telegram-update-message-text.json")
    status, _, _ = e.srv.request("POST", tg["endpoints"]["webhook"] + "/", body=body,
                                 headers=signed(e.srv, tg, body))
    assert status == 200 and stored(e.db, tg)[0] == 1


def test_messages_with_unstorable_parts_are_stored(env):
    """What cannot be stored of a message (a reference's size over the
    limit for bytes we hold, a URL too long to record, an empty text) never
    costs the customer's message: it used to be acknowledged and dropped."""
    e = env
    tg = new_channel(e, "telegram")
    upd = json.loads(corpus("telegram-update-document.json"))
    upd["message"]["document"]["file_size"] = 30 << 20   # on Telegram, not here: no limit
    body = json.dumps(upd).encode()
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    assert rows(e.db, f"SELECT a.size, a.file_id FROM attachments a JOIN messages m ON"
                      f" m.tenant_id = a.tenant_id AND m.id = a.message_id"
                      f" WHERE m.channel_id = {tg['id']}") == [[str(30 << 20), "a1b2c34d5e6f7g8h9i"]]

    ms = new_channel(e, "messenger")
    ev = json.loads(corpus("messenger-message-image-attachment.json"))
    ev["entry"][0]["messaging"][0]["message"]["attachments"][0]["payload"]["url"] = \
        "https://cdn.example/" + "x" * 2100
    body = json.dumps(ev).encode()
    assert post(e.srv, ms, body, signed(e.srv, ms, body))[0] == 200
    assert stored(e.db, ms)[:2] == (1, 0)      # the message, without the file it cannot record

    wa = new_channel(e, "whatsapp")
    body = wa_inbound("wamid.empty-text", text="")
    assert post(e.srv, wa, body, signed(e.srv, wa, body))[0] == 200
    assert rows(e.db, f"SELECT body_text FROM messages WHERE channel_id = {wa['id']}") \
        == [["(an empty message)"]]


def test_texts_cut_on_character_boundaries(env, fake):
    """Where a plugin shortens what a platform sent (a Telegram name, an
    edited text, the platform's answer kept as the delivery error), it cuts
    between characters: a cut inside one was invalid UTF-8, which the
    database refuses (a webhook retried forever, a reply re-sent forever)."""
    e = env
    tg = new_channel(e, "telegram")
    upd = json.loads(corpus("telegram-update-message-text.json"))
    upd["message"]["from"]["first_name"] = "a" * 198 + "é"    # 200 bytes: one too many
    upd["message"]["from"]["id"] = 7770001                    # a new customer
    body = json.dumps(upd).encode()
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    assert psql(e.db, f"SELECT c.name FROM customers c JOIN messages m ON m.tenant_id = c.tenant_id"
                      f" AND m.author_customer_id = c.id WHERE m.channel_id = {tg['id']}"
                      ).strip() == "a" * 198
    upd = json.loads(corpus("telegram-update-edited-message-reply.json"))
    upd["edited_message"]["text"] = "b" * 3999 + "é"
    body = json.dumps(upd).encode()
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    assert rows(e.db, f"SELECT body_text FROM messages WHERE channel_id = {tg['id']}"
                      f" AND body_text LIKE '(edited)%'") == [["(edited) " + "b" * 3999]]

    ch = wa_channel(e, fake, "/wa-utf8")
    body = wa_inbound("wamid.in-utf8")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    fake.script.append((400, {}, ('{"error":{"message":"' + "é" * 200 + '"}}').encode()))
    msg = reply(e, ticket_of(e, ch), "Will not arrive")
    wait_until(lambda: delivery(e, msg["id"])[0] == "failed", 20, message="failed")
    assert delivery(e, msg["id"])[2].startswith('the platform answered 400: {"error":{"message":"é')


def test_sms_media_count_is_bounded_by_what_is_kept(env):
    """NumMedia is the sender's word: a huge one with no media costs at
    most ten lookups, not a worker spinning for ever."""
    e = env
    sms = new_channel(e, "sms", settings={"from_number": "+12028831111"})
    body = corpus("twilio-inbound-sms.txt").replace(b"NumMedia=0",
                                                    b"NumMedia=9223372036854775807")
    assert b"NumMedia=9223372036854775807" in body
    status, _, _ = e.srv.request("POST", sms["endpoints"]["webhook"], body=body,
                                 headers=signed(e.srv, sms, body), timeout=10)
    assert status == 200 and stored(e.db, sms)[:2] == (1, 0)


def test_events_of_other_accounts_of_the_app_are_ignored(env):
    """One Meta app's numbers and Pages share a webhook: a channel takes
    only the entries of its own account, which its settings must name."""
    e = env
    for type_, key in (("whatsapp", "phone_number_id"), ("messenger", "page_id")):
        r = e.adm.post(f"tenants/{T}/channels", {"type": type_, "name": "no id", "settings": {},
                                                 "secrets": SECRETS[type_]})
        expect(r, 422, field=f"settings.{key}")
        r = e.adm.post(f"tenants/{T}/channels", {"type": type_, "name": "long id",
                                                 "settings": {key: "1" * 64},
                                                 "secrets": SECRETS[type_]})
        expect(r, 422, field=f"settings.{key}")
    wa = new_channel(e, "whatsapp", settings={"phone_number_id": "999000"})
    body = wa_inbound("wamid.other-number")              # names 1122334455667
    assert post(e.srv, wa, body, signed(e.srv, wa, body))[0] == 200
    ms = new_channel(e, "messenger", settings={"page_id": "999000", "instagram_id": "999001"})
    for name in ("messenger-message-text.json", "instagram-message-text.json"):
        body = corpus(name)
        assert post(e.srv, ms, body, signed(e.srv, ms, body))[0] == 200
    ig = new_channel(e, "messenger", settings={"page_id": "1234567890", "instagram_id": None})
    body = corpus("instagram-message-text.json")          # no instagram_id: not its account
    assert post(e.srv, ig, body, signed(e.srv, ig, body))[0] == 200
    assert [stored(e.db, c)[0] for c in (wa, ms, ig)] == [0, 0, 0]


def test_twilio_signature_covers_the_query_string(env):
    """Twilio signs the whole URL it called, query string included."""
    e = env
    sms = new_channel(e, "sms", settings={"from_number": "+12028831111"})
    body = corpus("twilio-inbound-sms.txt")
    query = "?source=twilio&x=%2F1"
    path = sms["endpoints"]["webhook"] + query
    status, _, _ = e.srv.request("POST", path, body=body,
                                 headers=signed(e.srv, sms, body, query=query))
    assert status == 200 and stored(e.db, sms)[0] == 1
    status, _, _ = e.srv.request("POST", path, body=body, headers=signed(e.srv, sms, body))
    assert status == 401      # signed without the query: not the URL that was called


def test_unknown_channels_are_remembered_briefly(env):
    """An id that names no active channel is remembered like a found one
    (a few seconds, or until a channel changes through the API): a stream
    of unauthenticated requests for it does not query the database each."""
    e = env
    tg = new_channel(e, "telegram")
    psql(e.db, f"UPDATE channels SET active = false WHERE id = {tg['id']}")   # no NOTIFY
    assert post(e.srv, tg, b"{}", {})[0] == 404
    psql(e.db, f"UPDATE channels SET active = true WHERE id = {tg['id']}")
    assert post(e.srv, tg, b"{}", {})[0] == 404       # still the remembered miss
    wait_until(lambda: post(e.srv, tg, b"{}", {})[0] == 401, 15, message="found again")


def test_concurrent_redeliveries_store_one_message(env):
    """Platforms retry fast: the same notification arriving eight times at
    once is acknowledged eight times and stored once."""
    ch = new_channel(env, "whatsapp")
    body = wa_inbound("wamid.race-1", sender="31655500001")
    headers = signed(env.srv, ch, body)
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(env.srv, ch, body, headers)[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert stored(env.db, ch)[0] == 1
    assert psql(env.db, "SELECT count(*) FROM customer_identities"
                        " WHERE kind = 'whatsapp' AND value = '31655500001'").strip() == "1"


def test_rotated_secret_applies_at_once(env):
    """Workers cache channel instances; a change anywhere empties the cache."""
    ch = new_channel(env, "whatsapp")
    body = wa_inbound("wamid.rotate-1")
    assert post(env.srv, ch, body, signed(env.srv, ch, body))[0] == 200
    new = dict(SECRETS["whatsapp"], app_secret="rotated-secret")
    expect(env.adm.patch(f"tenants/{T}/channels/{ch['id']}", {"secrets": new}), 200)
    body = wa_inbound("wamid.rotate-2")
    assert post(env.srv, ch, body, signed(env.srv, ch, body))[0] == 401
    assert post(env.srv, ch, body, signed(env.srv, ch, body, secrets=new))[0] == 200


def attachment_of(e, ch):
    number = int(psql(e.db, f"SELECT number FROM tickets WHERE channel_id = {ch['id']}").strip())
    t = expect(e.adm.get(f"tenants/{T}/tickets/{number}"), 200)
    (att,) = t["messages"][0]["attachments"]
    return att, f"tenants/{T}/tickets/{number}/attachments/{att['id']}"


def test_platform_files_are_fetched_on_demand(env, fake):
    """Files stay on the platform (file_id, size, type) until an agent
    downloads one: then the channel's plugin fetches it."""
    e = env
    photo = bytes(range(256)) * 300
    tg = new_channel(e, "telegram", settings={"api_base": fake.base + "/tgf"})
    body = corpus("telegram-update-photo-caption.json")
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    att, path = attachment_of(e, tg)
    assert (att["file_id"], att["size"], att["content_type"]) == ("SEES", 104893, "image/jpeg")
    fake.files["/tgf/bot123:bot-token/getFile?file_id=SEES"] = (
        200, "application/json",
        json.dumps({"ok": True, "result": {"file_id": "SEES", "file_path": "photos/f_7.jpg"}}
                   ).encode())
    fake.files["/tgf/file/bot123:bot-token/photos/f_7.jpg"] = (200, "image/jpeg", photo)
    r = e.adm.get(path)
    assert r.status == 200 and r.body == photo
    assert r.headers["content-disposition"] == 'attachment; filename="photo.jpg"'

    wa = new_channel(e, "whatsapp", settings={"api_base": fake.base + "/waf"})
    body = corpus("whatsapp-message-image.json")
    assert post(e.srv, wa, body, signed(e.srv, wa, body))[0] == 200
    att, path = attachment_of(e, wa)
    fake.files["/waf/65463453"] = (200, "application/json", json.dumps(
        {"url": fake.base + "/waf/blob/65463453", "mime_type": "image/jpeg"}).encode())
    fake.files["/waf/blob/65463453"] = (200, "image/jpeg", b"\xff\xd8jpeg bytes")
    r = e.adm.get(path)
    assert r.status == 200 and r.body == b"\xff\xd8jpeg bytes"
    gets = [x for x in fake.requests if x[1].startswith("/waf/")]
    assert [x[1] for x in gets] == ["/waf/65463453", "/waf/blob/65463453"]
    assert all(x[2]["Authorization"] == "Bearer wa-access-token" for x in gets)

    # Gone from the platform: 404; the channel switched off: 409.
    del fake.files["/waf/blob/65463453"]
    expect(e.adm.get(path), 404)
    expect(e.adm.patch(f"tenants/{T}/channels/{wa['id']}", {"active": False}), 200)
    expect(e.adm.get(path), 409, code="not_downloaded")


def test_meta_verification_challenge(env):
    for type_, token in (("whatsapp", "wa-verify"), ("messenger", "fb-verify")):
        ch = new_channel(env, type_)
        path = ch["endpoints"]["webhook"]
        q = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"}
        status, _, body = env.srv.request("GET", path + "?" + urllib.parse.urlencode(q))
        assert (status, body) == (200, b"1158201444")
        q["hub.verify_token"] = token + "x"
        assert env.srv.request("GET", path + "?" + urllib.parse.urlencode(q))[0] == 401
        assert env.srv.request("GET", path + "?hub.mode=subscribe")[0] == 400


def test_secrets_never_returned_or_logged(env):
    ch = new_channel(env, "sms", settings={"from_number": "+15550001111"})
    got = expect(env.adm.get(f"tenants/{T}/channels/{ch['id']}"), 200)
    assert "twilio-auth-token" not in json.dumps(got)
    raw = psql(env.db, f"SELECT encode(secrets, 'escape') FROM channels WHERE id = {ch['id']}")
    assert "twilio-auth-token" not in raw
    for s in ("twilio-auth-token", "wa-access-token", "123:bot-token"):
        assert s not in env.srv.log_text()
    r = env.adm.post(f"tenants/{T}/channels", {"type": "whatsapp", "name": "bad",
                                               "settings": {"api_base": "ftp://x"}})
    expect(r, 422, field="settings.api_base")


# ---------------------------------------------------------------------------
# replies through the outbox to the fake platform API
# ---------------------------------------------------------------------------

def reply(e, number, text):
    return expect(e.adm.post(f"tenants/{T}/tickets/{number}/messages",
                             {"kind": "reply", "text": text}), 201)


def ticket_of(e, ch):
    return int(psql(e.db, f"SELECT max(number) FROM tickets WHERE channel_id = {ch['id']}").strip())


def delivery(e, message_id):
    return rows(e.db, f"SELECT coalesce(delivery_status, ''), coalesce(external_id, ''),"
                      f" coalesce(delivery_error, '') FROM messages WHERE id = {message_id}")[0]


def requests_to(fake, prefix):
    return [r for r in fake.requests if r[1].startswith(prefix)]


def wa_inbound(mid, text="hello", sender="972987654321"):
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {
            "metadata": {"phone_number_id": "1122334455667"},
            "contacts": [{"profile": {"name": "Test Name"}, "wa_id": sender}],
            "messages": [{"from": sender, "id": mid, "type": "text",
                          "text": {"body": text}}]}}]}]}).encode()


def wa_channel(e, fake, prefix):
    return new_channel(e, "whatsapp", settings={"phone_number_id": "1122334455667",
                                                "api_base": fake.base + prefix})


def test_whatsapp_reply_and_statuses(env, fake):
    e = env
    ch = wa_channel(e, fake, "/wa1")
    body = wa_inbound("wamid.in-1")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    fake.script.append((200, {}, {"messaging_product": "whatsapp",
                                  "messages": [{"id": "wamid.xyzxyz"}]}))
    msg = reply(e, ticket_of(e, ch), "Your order ships today")
    wait_until(lambda: delivery(e, msg["id"])[0] == "sent", 20, message="sent")
    (_, path, headers, sent), = requests_to(fake, "/wa1")
    assert path == "/wa1/1122334455667/messages"
    assert headers["Authorization"] == "Bearer wa-access-token"
    assert json.loads(sent) == {"messaging_product": "whatsapp", "recipient_type": "individual",
                                "to": "972987654321", "type": "text",
                                "text": {"body": "Your order ships today"}}
    assert delivery(e, msg["id"])[1] == "wamid.xyzxyz"
    for name, want in (("whatsapp-status-delivered.json", "delivered"),
                       ("whatsapp-status-read.json", "read"),
                       ("whatsapp-status-delivered.json", "read")):   # never backwards
        body = corpus(name)
        assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
        assert delivery(e, msg["id"])[0] == want

    ch2 = wa_channel(e, fake, "/wa2")
    body = wa_inbound("wamid.in-2")
    assert post(e.srv, ch2, body, signed(e.srv, ch2, body))[0] == 200
    fake.script.append((200, {}, {"messages": [{"id": "wamid.xyzxyz"}]}))
    msg2 = reply(e, ticket_of(e, ch2), "Hello again")
    wait_until(lambda: delivery(e, msg2["id"])[0] == "sent", 20, message="sent")
    body = corpus("whatsapp-status-failed.json")
    assert post(e.srv, ch2, body, signed(e.srv, ch2, body))[0] == 200
    status, _, err = delivery(e, msg2["id"])
    assert status == "failed" and "experiment" in err
    assert delivery(e, msg["id"])[0] == "read"    # the other instance's message is untouched


def test_status_before_the_id_is_recorded_is_applied_later(env, fake):
    """WhatsApp's "delivered" can beat the commit of the id our send got
    back: it is kept and applied when the id is recorded, not lost."""
    e = env
    ch = wa_channel(e, fake, "/wa-early")
    body = wa_inbound("wamid.in-early")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    status = json.loads(corpus("whatsapp-status-read.json"))
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = "wamid.early-1"
    body = json.dumps(status).encode()
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    fake.script.append((200, {}, {"messages": [{"id": "wamid.early-1"}]}))
    msg = reply(e, ticket_of(e, ch), "Read before we knew")
    wait_until(lambda: delivery(e, msg["id"])[0] == "read", 20, message="read")
    assert psql(e.db, "SELECT count(*) FROM message_status_early"
                      " WHERE external_id = 'wamid.early-1'").strip() == "0"


def test_retry_after_is_honoured(env, fake):
    e = env
    ch = wa_channel(e, fake, "/wa429")
    body = wa_inbound("wamid.in-429")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    fake.script.append((429, {"Retry-After": "4"}, {"error": {"message": "slow down"}}))
    fake.script.append((200, {}, {"messages": [{"id": "wamid.after-429"}]}))
    msg = reply(e, ticket_of(e, ch), "Thanks for waiting")
    wait_until(lambda: delivery(e, msg["id"])[0] == "sent", 30, message="sent after the retry")
    first, second = requests_to(fake, "/wa429")
    waited = second[0] - first[0]
    assert 3.8 <= waited <= 8, waited     # the outbox's own backoff would be 2 s
    assert first[3] == second[3]


def test_transient_refusals_are_retried_when_the_platform_says(env, fake):
    """The Graph API's rate limits are 4xx with an error code, and may say
    when in an HTTP date; Telegram's 429 says how long in its body."""
    e = env
    ch = wa_channel(e, fake, "/wa130429")
    body = wa_inbound("wamid.in-130429")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    when = email.utils.formatdate(time.time() + 7, usegmt=True)
    fake.script.append((400, {"Retry-After": when}, {"error": {"code": 130429,
                                                              "message": "Rate limit hit"}}))
    fake.script.append((200, {}, {"messages": [{"id": "wamid.after-130429"}]}))
    msg = reply(e, ticket_of(e, ch), "Sent when allowed")
    wait_until(lambda: delivery(e, msg["id"])[0] == "sent", 30, message="sent after the retry")
    first, second = requests_to(fake, "/wa130429")
    assert 5 <= second[0] - first[0] <= 12, second[0] - first[0]

    tg = new_channel(e, "telegram", settings={"api_base": fake.base + "/tg429"})
    body = corpus("telegram-update-message-text.json")
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    fake.script.append((429, {}, {"ok": False, "error_code": 429, "description":
                                  "Too Many Requests: retry after 5",
                                  "parameters": {"retry_after": 5}}))
    fake.script.append((200, {}, {"ok": True, "result": {"message_id": 9, "chat": {"id": 456}}}))
    msg = reply(e, ticket_of(e, tg), "Sent when Telegram allows")
    wait_until(lambda: delivery(e, msg["id"])[0] == "sent", 30, message="sent after the retry")
    first, second = requests_to(fake, "/tg429")
    assert 4.8 <= second[0] - first[0] <= 10, second[0] - first[0]


def test_permanent_refusal_is_failed_without_retry(env, fake):
    e = env
    ch = wa_channel(e, fake, "/wa400")
    body = wa_inbound("wamid.in-400")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    fake.script.append((400, {}, {"error": {"message": "Recipient phone number not valid"}}))
    msg = reply(e, ticket_of(e, ch), "Will not arrive")
    wait_until(lambda: delivery(e, msg["id"])[0] == "failed", 20, message="failed")
    assert "400" in delivery(e, msg["id"])[2]
    time.sleep(3)
    assert len(requests_to(fake, "/wa400")) == 1
    assert psql(e.db, f"SELECT status FROM outbox WHERE message_id = {msg['id']}").strip() == "failed"


def test_telegram_messenger_sms_replies(env, fake):
    e = env
    tg = new_channel(e, "telegram", settings={"api_base": fake.base + "/tg"})
    body = corpus("telegram-update-supergroup-topic-reply.json")
    assert post(e.srv, tg, body, signed(e.srv, tg, body))[0] == 200
    fake.script.append((200, {}, {"ok": True, "result": {"message_id": 36,
                                                         "chat": {"id": -1001234567489}}}))
    m1 = reply(e, ticket_of(e, tg), "Topic answer")

    ms = new_channel(e, "messenger", settings={"page_id": "111111", "api_base": fake.base + "/fb"})
    body = corpus("instagram-message-text.json")
    assert post(e.srv, ms, body, signed(e.srv, ms, body))[0] == 200
    fake.script.append((200, {}, {"recipient_id": "5678", "message_id": "m_out_1"}))
    m2 = reply(e, ticket_of(e, ms), "Instagram answer")

    sms = new_channel(e, "sms", settings={"from_number": "+12028831111",
                                          "api_base": fake.base + "/tw"})
    body = corpus("twilio-inbound-whatsapp.txt").replace(b"SMe287d7109a5a925f182f0e07fe5b223b",
                                                         b"SMinbound0000000000000000000000001")
    assert post(e.srv, sms, body, signed(e.srv, sms, body))[0] == 200
    fake.script.append((201, {}, {"sid": "SMe287d7109a5a925f182f0e07fe5b223b",
                                  "status": "queued"}))
    m3 = reply(e, ticket_of(e, sms), "SMS answer & more")

    for m in (m1, m2, m3):
        wait_until(lambda: delivery(e, m["id"])[0] == "sent", 20, message="sent")
    (_, path, _, sent), = requests_to(fake, "/tg/")
    assert path == "/tg/bot123:bot-token/sendMessage"
    assert json.loads(sent) == {"chat_id": -1001234567489, "message_thread_id": 33,
                                "text": "Topic answer"}
    (_, path, headers, sent), = requests_to(fake, "/fb/")
    assert path == "/fb/111111/messages" and headers["Authorization"] == "Bearer fb-page-token"
    assert json.loads(sent) == {"recipient": {"id": "5678"}, "messaging_type": "RESPONSE",
                                "message": {"text": "Instagram answer"}}
    (_, path, headers, sent), = requests_to(fake, "/tw/")
    assert path == "/tw/2010-04-01/Accounts/ACtest/Messages.json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(
        b"ACtest:twilio-auth-token").decode()
    assert urllib.parse.parse_qs(sent.decode()) == {
        "To": ["whatsapp:+14133881111"], "From": ["whatsapp:+12028831111"],
        "Body": ["SMS answer & more"]}
    assert delivery(e, m1["id"])[1] == "-1001234567489:36"
    # Twilio's status callbacks land on the reply.
    for name, want in (("twilio-status-delivered.txt", "delivered"),
                       ("twilio-status-failed-21610.txt", "failed")):
        body = corpus(name)
        assert post(e.srv, sms, body, signed(e.srv, sms, body))[0] == 200
        assert delivery(e, m3["id"])[0] == want
    assert "21610" in delivery(e, m3["id"])[2]


# ---------------------------------------------------------------------------
# one customer, two channels, one timeline
# ---------------------------------------------------------------------------

def test_email_then_whatsapp_linked_in_one_timeline(env):
    e = env
    t = expect(e.adm.post(f"tenants/{T}/tickets", {
        "subject": "Broken blender",
        "customer": {"email": "maria@example.com", "name": "Maria"},
        "message": {"text": "My blender broke (by email)"}}), 201)
    email_customer = t["customer"]["id"]
    ch = new_channel(e, "whatsapp")
    body = wa_inbound("wamid.timeline-1", "Any news about the blender?", sender="393471234567")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    wa_customer = int(psql(e.db, "SELECT customer_id FROM customer_identities"
                                 " WHERE kind = 'whatsapp' AND value = '393471234567'").strip())
    assert wa_customer != email_customer
    # An agent links them: the WhatsApp record merges into the email one.
    expect(e.adm.post(f"tenants/{T}/customers/{wa_customer}/merge", {"into": email_customer}), 200)
    tl = expect(e.adm.get(f"tenants/{T}/customers/{email_customer}/timeline"), 200)
    texts = [(i["channel"], i["text"]) for i in tl["items"]]
    assert ("whatsapp", "Any news about the blender?") in texts
    assert any(text == "My blender broke (by email)" for _, text in texts)
    assert [i["id"] for i in tl["items"]] == sorted(i["id"] for i in tl["items"])
    # Later WhatsApp messages find the linked customer directly.
    body = wa_inbound("wamid.timeline-2", "Thanks!", sender="393471234567")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    tl = expect(e.adm.get(f"tenants/{T}/customers/{email_customer}/timeline", limit=2), 200)
    assert [i["text"] for i in tl["items"]][-1] == "Thanks!" and tl["next_cursor"]
    older = expect(e.adm.get(f"tenants/{T}/customers/{email_customer}/timeline",
                             before=tl["next_cursor"]), 200)
    assert older["items"] and older["items"][-1]["id"] < tl["items"][0]["id"]
    expect(e.adm.get(f"tenants/{T}/customers/999999/timeline"), 404)


def test_identity_linked_first_joins_the_timeline(env):
    """An agent adds the person's Instagram id to the email customer; their
    Instagram message then lands on that customer, in the same timeline."""
    e = env
    t = expect(e.adm.post(f"tenants/{T}/tickets", {
        "subject": "Size exchange", "customer": {"email": "li@example.com", "name": "Li"},
        "message": {"text": "Can I exchange the shoes?"}}), 201)
    cust = t["customer"]["id"]
    expect(e.adm.post(f"tenants/{T}/customers/{cust}/identities",
                      {"kind": "instagram", "value": "70001"}), 201)
    ch = new_channel(e, "messenger")
    body = corpus("instagram-message-text.json").replace(b'"5678"', b'"70001"')
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200
    tl = expect(e.adm.get(f"tenants/{T}/customers/{cust}/timeline"), 200)
    assert [(i["ticket_channel"], i["text"]) for i in tl["items"]][-1] == ("messenger",
                                                                          "Hello World")
    assert len({i["ticket"] for i in tl["items"]}) == 2


LINK_RULE = r'''
on("message.received", function(ev, act)
  if ev.ticket.channel ~= "whatsapp" then return end
  local email = string.match(ev.message.text or "", "[%w%.%-_]+@[%w%.%-]+%.%a+")
  if email then act.link_identity { kind = "email", value = email } end
end)
'''


def test_rule_links_identity_across_channels(env):
    """A rule links the email a WhatsApp customer gives to their number: the
    email customer is merged in, and one timeline shows both channels."""
    e = env
    expect(e.adm.request("PUT", f"tenants/{T}/rules/link_email", {"source": LINK_RULE}), 200)
    expect(e.adm.post(f"tenants/{T}/tickets", {
        "subject": "Invoice", "customer": {"email": "ola@example.com", "name": "Ola"},
        "message": {"text": "Please resend my invoice"}}), 201)
    ch = new_channel(e, "whatsapp")
    body = wa_inbound("wamid.rule-1", "Hi, it is ola@example.com writing", sender="4790000001")
    assert post(e.srv, ch, body, signed(e.srv, ch, body))[0] == 200

    def owner(kind, value):
        return psql(e.db, f"SELECT customer_id FROM customer_identities"
                          f" WHERE kind = '{kind}' AND value = '{value}'").strip()
    wait_until(lambda: owner("email", "ola@example.com") == owner("whatsapp", "4790000001"), 30,
               message="the rule linked the email to the WhatsApp customer")
    cust = owner("whatsapp", "4790000001")
    tl = expect(e.adm.get(f"tenants/{T}/customers/{cust}/timeline"), 200)
    texts = {i["text"] for i in tl["items"]}
    assert {"Please resend my invoice", "Hi, it is ola@example.com writing"} <= texts


def test_no_secret_in_the_log_after_all_of_it(env):
    """Runs after the webhooks and replies above (the log level is debug)."""
    log = env.srv.log_text()
    for secrets in SECRETS.values():
        for value in secrets.values():
            assert value not in log, value


# ---------------------------------------------------------------------------
# the database down: 503, then the redelivery is stored once
# ---------------------------------------------------------------------------

def test_database_down_means_503_then_stored_once(pg_cluster_factory, start_server):
    cluster = pg_cluster_factory()
    assert run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": cluster.url}).returncode == 0
    cli_tenant(cluster.url, T, "Social Ltd")
    cli_agent(cluster.url, "adm@soc.example", T, "admin")
    srv = start(cluster.url, start_server)
    e = Env()
    e.db, e.srv, e.adm = cluster.url, srv, api_login(srv, "adm@soc.example")
    chans = [new_channel(e, "whatsapp"), new_channel(e, "telegram")]
    bodies = [wa_inbound("wamid.down-1"), corpus("telegram-update-message-text.json")]
    # The whatsapp instance is in the worker's cache, the telegram one is not.
    warm = wa_inbound("wamid.down-0")
    assert post(srv, chans[0], warm, signed(srv, chans[0], warm))[0] == 200
    cluster.stop()
    for ch, body in zip(chans, bodies):
        status, _, _ = srv.request("POST", ch["endpoints"]["webhook"], body=body,
                                   headers=signed(srv, ch, body))
        assert status == 503
    cluster.start()
    for ch, body in zip(chans, bodies):
        wait_until(lambda: srv.request("POST", ch["endpoints"]["webhook"], body=body,
                                       headers=signed(srv, ch, body))[0] == 200, 30,
                   message="stored after the database came back")
        assert post(srv, ch, body, signed(srv, ch, body))[0] == 200
    assert [stored(cluster.url, ch)[0] for ch in chans] == [2, 1]


def test_plain_http_api_base_only_with_private_addresses(database, start_server):
    """A platform API over plain http (tokens in clear) is for local fakes:
    refused unless channels_allow_private is on, which this server is not."""
    assert run_cli(["migrate"], env_extra={"SWITCHBOARD_DATABASE_URL": database}).returncode == 0
    cli_tenant(database, T, "Social Ltd")
    cli_agent(database, "adm@soc.example", T, "admin")
    srv = start_server(database, env={"SWITCHBOARD_PUBLIC_URL": "https://help.example.com"})
    adm = api_login(srv, "adm@soc.example")
    for base, want in (("http://graph.example.com", 422), ("HTTP://graph.example.com", 422),
                       ("https://graph.example.com", 201)):
        r = adm.post(f"tenants/{T}/channels", {"type": "whatsapp", "name": base,
                                               "settings": {"phone_number_id": "1",
                                                            "api_base": base},
                                               "secrets": SECRETS["whatsapp"]})
        if want == 422:
            expect(r, 422, field="settings.api_base")
        else:
            expect(r, 201)
