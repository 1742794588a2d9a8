"""The email channel's MIME parser (plugins/email/mime.c) over the email
corpus, through the email_parse tool that tests/unit/email/mime builds:
every message parses (exit 0, no crash, no hang) into what EXPECTED.tsv
lists, and truncated or damaged copies still parse.

The tool is <build>/tests/unit/email/mime/email_parse, <build> being two
directories above SWITCHBOARD_BIN (<build>/server/switchboard).  The corpus
is $SWITCHBOARD_TEST_CORPUS/email, else ../shared/corpus/email next to the
checkout, else /work/shared/corpus/email.
"""

import csv
import json
import os
import random
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWITCHBOARD_BIN = os.environ.get("SWITCHBOARD_BIN") or os.path.join(
    ROOT, "build", "server", "switchboard")
TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(SWITCHBOARD_BIN))),
                    "tests", "unit", "email", "mime", "email_parse")
TIMEOUT = 10


def corpus_dir():
    for top in (os.environ.get("SWITCHBOARD_TEST_CORPUS"),
                os.path.join(ROOT, "..", "shared", "corpus"), "/work/shared/corpus"):
        if top and os.path.isdir(os.path.join(top, "email")):
            return os.path.join(top, "email")
    return os.path.join(ROOT, "..", "shared", "corpus", "email")


CORPUS = corpus_dir()

pytestmark = [
    pytest.mark.skipif(not os.path.isfile(TOOL), reason="email_parse is not built"),
    pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no email corpus"),
]


def load_expected():
    path = os.path.join(CORPUS, "EXPECTED.tsv")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t",
                                                            quoting=csv.QUOTE_NONE)}


EXPECTED = load_expected()


def corpus_files():
    if not os.path.isdir(CORPUS):
        return []
    return sorted(n for n in os.listdir(CORPUS) if n.endswith(".eml"))


def number(name):
    return int(name.split("-", 1)[0])


def run_tool(path):
    """The tool's JSON for one file; asserts a clean exit within TIMEOUT."""
    p = subprocess.run([TOOL, path], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, f"email_parse {path}: exit {p.returncode}: {p.stderr[-2000:]!r}"
    for marker in (b"ERROR: AddressSanitizer", b"runtime error:", b"ERROR: LeakSanitizer"):
        assert marker not in p.stderr, p.stderr[-4000:].decode("utf-8", "replace")
    return json.loads(p.stdout)


def norm(s):
    """A subject as EXPECTED shows it: trimmed, whitespace collapsed."""
    if s is None:
        return ""
    s = s.replace("\\n", "\n")
    return " ".join(s.split())


def none_if_blank(s):
    return None if s in ("", "(none)") else s


def precedence_list(path):
    """Whether the message's own header block has Precedence bulk/junk/list."""
    with open(path, "rb") as f:
        head = f.read().replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return re.search(rb"(?im)^precedence:\s*(bulk|junk|list)", head) is not None


def expected_auto(name, path):
    """mime.h's rule as the corpus needs it: 40-42 and 47-62 are bounces,
    DSNs, MDNs, abuse reports and auto-replies (EXPECTED's notes say so for
    each).  43-46 are forwards written by people (the notes speak only of
    the forwarded message), so like ordinary mail 01-39 they are machine
    mail only as list mail marked Precedence bulk/list (03, 28, 29, 45).
    63-73 are judged in test_auto_submitted_rest."""
    n = number(name)
    if 40 <= n <= 62 and not 43 <= n <= 46:
        return True
    if n <= 46:
        return precedence_list(path)
    return None


@pytest.mark.parametrize("name", corpus_files())
def test_corpus_message(name):
    path = os.path.join(CORPUS, name)
    got = run_tool(path)
    assert name in EXPECTED, f"{name} is not listed in EXPECTED.tsv"
    exp = EXPECTED[name]
    assert got["from_addr"] == (none_if_blank(exp["from_addr"]) or "").lower() or (
        got["from_addr"] is None and none_if_blank(exp["from_addr"]) is None), \
        f"from_addr {got['from_addr']!r} != {exp['from_addr']!r}"
    assert norm(got["subject"]) == norm(exp["subject_utf8"]), \
        f"subject {got['subject']!r} != {exp['subject_utf8']!r}"
    assert got["message_id"] == none_if_blank(exp["message_id"])
    assert len(got["files"]) == int(exp["n_attachments"]), \
        f"files {[(f['filename'], f['content_type']) for f in got['files']]}: {exp['notes']}"
    assert isinstance(got["text"], str)
    assert 0 <= got["text_new_len"] <= len(got["text"].encode("utf-8"))
    for ref in got["references"]:
        assert ref.startswith("<") and ref.endswith(">")
    assert len(got["references"]) == len(set(got["references"])) <= 50
    want = expected_auto(name, path)
    if want is not None:
        assert got["auto_submitted"] is want


# Text that must come through each charset (the body, decoded).
TEXTS = {
    23: "Вопрос",
    24: "Вопрос",
    26: "äöüßÄÖÜß€",
    27: "А эта линия по-русски",
    30: "日本語",
    31: "あいうえお",
    32: "스티해",
    33: "测试",
    35: "Citēju",
    40: "Это письмо отправлено",
    41: "مرحب",
    42: "أنظروا",
}


@pytest.mark.parametrize("n", sorted(TEXTS))
def test_corpus_text_charset(n):
    name = next(f for f in corpus_files() if number(f) == n)
    got = run_tool(os.path.join(CORPUS, name))
    assert TEXTS[n] in got["text"], got["text"][:300]


def by_number(n):
    name = next(f for f in corpus_files() if number(f) == n)
    return run_tool(os.path.join(CORPUS, name))


def test_corpus_names_and_addresses():
    assert by_number(1)["from_name"] == "Wilhelmsen Håvard"
    assert by_number(28)["from_name"].startswith("Jason Lee")
    assert by_number(35)["from_name"] == "Agris Pudāns"
    assert by_number(42)["from_name"] == "متجر سوق نت"
    assert by_number(21)["from_addr"] == "jamehi03@jamehi03lx.noa.com"
    assert by_number(42)["subject"].endswith(" ")
    assert by_number(23)["subject"] == "Алфавит\n"


def test_corpus_filenames():
    assert [f["filename"] for f in by_number(13)["files"]] == ["新しいテキスト ドキュメント.txt"]
    assert [f["filename"] for f in by_number(14)["files"]] == ["管理.doc"]
    assert [f["content_type"] for f in by_number(43)["files"]] == ["message/rfc822"]
    assert by_number(43)["files"][0]["filename"] == "test-email.eml"
    assert [f["filename"] for f in by_number(72)["files"]] == ["test-sjis.txt", "test-archive.txt"]
    assert all(f["content_type"] == "message/rfc822" for f in by_number(17)["files"])


def test_corpus_threading():
    refs = by_number(42)["references"]
    assert refs[0] == "<4e6e35f5a38b4_479f13bb90078178@small-app-01.mail>"
    r4 = by_number(4)["references"]
    assert r4 and all(r.startswith("<") for r in r4)
    # A delivery report threads under the returned message.
    assert by_number(48)["references"] != [] or by_number(47)["references"] != []


def test_corpus_html_and_quotes():
    got = by_number(29)
    assert got["html"] is not None and "<script" not in got["html"].lower()
    assert "永久網址" in got["text"]
    got = by_number(35)
    assert got["text_new_len"] < len(got["text"].encode("utf-8"))
    assert by_number(15)["text"] == ""


def test_auto_submitted_rest():
    """63-73: bounces (MAILER-DAEMON, postmaster senders) are machine mail;
    the rest depends only on Precedence."""
    for n in (65, 70):
        assert by_number(n)["auto_submitted"] is True
    for n in (63, 64, 66, 67, 69, 71, 73):
        assert by_number(n)["auto_submitted"] is False


# ---------------------------------------------------------------------------
# damaged input: never a crash, never a hang
# ---------------------------------------------------------------------------

FUZZ_SOURCES = [7, 12, 17, 20, 38, 40, 44, 52, 66, 69, 73]


def fuzz_inputs():
    rnd = random.Random(20240611)
    for n in FUZZ_SOURCES:
        names = [f for f in corpus_files() if number(f) == n]
        if not names:
            continue
        with open(os.path.join(CORPUS, names[0]), "rb") as f:
            data = f.read()
        for frac in (0.05, 0.3, 0.5, 0.77, 0.95):
            yield f"{n}-cut{frac}", data[:int(len(data) * frac)]
        for i in range(3):
            b = bytearray(data)
            for _ in range(max(1, len(b) // 200)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            yield f"{n}-mut{i}", bytes(b)


FUZZ = list(fuzz_inputs()) if os.path.isdir(CORPUS) else []


@pytest.mark.parametrize("data", [d for _, d in FUZZ], ids=[label for label, _ in FUZZ])
def test_damaged_input_parses(tmp_path, data):
    path = tmp_path / "m.eml"
    path.write_bytes(data)
    got = run_tool(str(path))
    assert isinstance(got["text"], str)


def test_empty_and_garbage_input(tmp_path):
    for i, data in enumerate([b"", b"\n", b"\r\r\r", b"From \n", bytes(range(256)) * 40,
                              b"Content-Type: multipart/mixed; boundary=x\n\n" + b"--x\n" * 500]):
        path = tmp_path / f"g{i}.eml"
        path.write_bytes(data)
        got = run_tool(str(path))
        assert isinstance(got["text"], str)


def test_large_message_is_linear(tmp_path):
    """A 25 MiB message (a base64 attachment and a long text) parses in time."""
    att = os.urandom(18 * 1024 * 1024)
    import base64
    b64 = base64.encodebytes(att)
    text = ("Lorem ipsum dolor sit amet, " * 3 + "\n") * 20000
    msg = (b"From: a@example.com\nSubject: big\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=BOUND\n\n--BOUND\n"
           b"Content-Type: text/plain; charset=utf-8\n\n" + text.encode() +
           b"\n--BOUND\nContent-Type: application/octet-stream; name=big.bin\n"
           b"Content-Transfer-Encoding: base64\n\n" + b64 + b"\n--BOUND--\n")
    path = tmp_path / "big.eml"
    path.write_bytes(msg)
    p = subprocess.run([TOOL, str(path)], capture_output=True, timeout=60)
    assert p.returncode == 0
    got = json.loads(p.stdout)
    assert got["files"][0]["size"] == len(att)
    assert got["text"].startswith("Lorem ipsum")
