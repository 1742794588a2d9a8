/*
 * mime.c - unit tests of plugins/email/mime.c: ticket tags, building a
 * reply and reading it back, quoted history, the HTML sanitiser and
 * HTML-to-text, delivery reports, malformed and empty input, Message-IDs.
 * The real-world corpus is covered by tests/blackbox/test_email_mime.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <switchboard/plugin.h>

#include "mime.h"

static sb_mail_t *parse(const char *raw)
{
    sb_mail_t *m = NULL;
    assert_int_equal(sb_mail_parse(raw, strlen(raw), &m), 0);
    assert_non_null(m);
    assert_non_null(m->text);
    assert_non_null(m->references);
    return m;
}

static size_t count_refs(const sb_mail_t *m)
{
    size_t n = 0;
    while (m->references[n] != NULL)
        n++;
    return n;
}

/*=== ticket tags ===*/

static void test_tag_find(void **state)
{
    (void)state;
    assert_int_equal(sb_mail_tag_find("Re: help [#42]", NULL), 42);
    assert_int_equal(sb_mail_tag_find("[#7] Re: [#42] again", NULL), 42);
    assert_int_equal(sb_mail_tag_find("no tag here", NULL), 0);
    assert_int_equal(sb_mail_tag_find("broken [#] and [#12", NULL), 0);
    assert_int_equal(sb_mail_tag_find(NULL, NULL), 0);
    assert_int_equal(sb_mail_tag_find("Ticket#0099: x", "Ticket#{number}:"), 99);
    assert_int_equal(sb_mail_tag_find("ticket#5: lower case prefix", "Ticket#{number}:"), 5);
    assert_int_equal(sb_mail_tag_find("[#123456789012345678]", NULL), 123456789012345678LL);
    /* Nineteen digits are not a ticket number. */
    assert_int_equal(sb_mail_tag_find("[#1234567890123456789]", NULL), 0);
    assert_int_equal(sb_mail_tag_find("x [#1]", "no placeholder"), 0);
}

static void test_tag_format(void **state)
{
    (void)state;
    char out[64];
    sb_mail_tag_format(NULL, 42, out, sizeof out);
    assert_string_equal(out, "[#42]");
    sb_mail_tag_format("(Case {number})", 7, out, sizeof out);
    assert_string_equal(out, "(Case 7)");
    sb_mail_tag_format(NULL, 123456, out, 5);
    assert_string_equal(out, "[#12");
    sb_mail_tag_format("[#{number}]", 31337, out, sizeof out);
    assert_int_equal(sb_mail_tag_find(out, "[#{number}]"), 31337);
}

/*=== building a reply ===*/

static char *build(const sb_mail_reply_t *r, size_t *len)
{
    char *out = NULL;
    assert_int_equal(sb_mail_build(r, &out, len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    return out;
}

static void test_build_roundtrip(void **state)
{
    (void)state;
    sb_mail_reply_t r = {
        .from_addr = "support@example.com",
        .from_name = "Support Désk",
        .to_addr = "Client@Example.org",
        .to_name = "Клиент",
        .subject = "Re: Привет, ça va? [#42]",
        .message_id = "<abc.1@example.com>",
        .in_reply_to = "<orig@example.org>",
        .references = "<first@example.org> <orig@example.org>",
        .text = "Hello & <welcome>\nSecond line: ünïcödé\n",
        .html = NULL,
    };
    size_t len = 0;
    char *out = build(&r, &len);
    /* CRLF everywhere: no LF without its CR. */
    for (size_t i = 0; i < len; i++)
        if (out[i] == '\n')
            assert_true(i > 0 && out[i - 1] == '\r');
    assert_non_null(strstr(out, "Auto-Submitted: no\r\n"));
    assert_non_null(strstr(out, "MIME-Version: 1.0\r\n"));
    assert_non_null(strstr(out, "multipart/alternative"));
    assert_non_null(strstr(out, "In-Reply-To: <orig@example.org>\r\n"));
    assert_non_null(strstr(out, "References: <first@example.org> <orig@example.org>\r\n"));
    assert_non_null(strstr(out, "Message-Id: <abc.1@example.com>\r\n"));
    assert_non_null(strstr(out, "Date: "));
    assert_non_null(strstr(out, "quoted-printable"));
    /* The subject is encoded, never raw 8-bit. */
    assert_non_null(strstr(out, "Subject: Re: =?UTF-8?B?"));
    assert_non_null(strstr(out, "From: Support =?UTF-8?"));
    assert_non_null(strstr(out, "charset=utf-8"));
    assert_non_null(strstr(out, "=C3=BC"));
    for (size_t i = 0; i < len; i++)
        assert_true((unsigned char)out[i] < 0x80);

    sb_mail_t *m = parse(out);
    assert_string_equal(m->subject, r.subject);
    assert_string_equal(m->from_addr, "support@example.com");
    assert_string_equal(m->from_name, "Support Désk");
    assert_string_equal(m->message_id, "<abc.1@example.com>");
    assert_int_equal(count_refs(m), 2);
    assert_string_equal(m->references[0], "<orig@example.org>");
    assert_string_equal(m->references[1], "<first@example.org>");
    assert_string_equal(m->text, r.text);
    assert_non_null(m->html);
    assert_non_null(strstr(m->html, "Hello &amp; &lt;welcome&gt;<br>"));
    assert_non_null(strstr(m->html, "ünïcödé"));
    assert_int_equal(m->nfiles, 0);
    assert_int_equal(m->auto_submitted, 0);
    sb_mail_free(m);
    free(out);
}

static void test_build_given_html(void **state)
{
    (void)state;
    sb_mail_reply_t r = {.from_addr = "a@example.com",
                         .to_addr = "b@example.com",
                         .subject = "plain ascii",
                         .message_id = "<x@example.com>",
                         .text = "hi",
                         .html = "<p>hi <b>there</b></p>"};
    size_t len;
    char *out = build(&r, &len);
    assert_non_null(strstr(out, "Subject: plain ascii\r\n"));
    sb_mail_t *m = parse(out);
    assert_string_equal(m->subject, "plain ascii");
    assert_non_null(strstr(m->html, "<b>there</b>"));
    assert_string_equal(m->text, "hi");
    assert_int_equal(count_refs(m), 0);
    sb_mail_free(m);
    free(out);
}

static void test_build_refuses(void **state)
{
    (void)state;
    char *out = (char *)"untouched";
    size_t len = 1;
    sb_mail_reply_t r = {.from_addr = "a@example.com",
                         .to_addr = NULL,
                         .subject = "s",
                         .message_id = "<x@example.com>",
                         .text = "t"};
    assert_int_equal(sb_mail_build(&r, &out, &len), SB_EINVAL);
    assert_null(out);
    r.to_addr = "b@example.com";
    r.in_reply_to = "<a@b>\r\nBcc: victim@example.com";
    assert_int_equal(sb_mail_build(&r, &out, &len), SB_EINVAL);
    r.in_reply_to = NULL;
    r.from_addr = "";
    assert_int_equal(sb_mail_build(&r, &out, &len), SB_EINVAL);
}

/*=== quoted history ===*/

static size_t new_len(const char *body)
{
    char *raw = malloc(strlen(body) + 64);
    strcpy(raw, "From: a@example.com\nSubject: q\n\n");
    strcat(raw, body);
    sb_mail_t *m = parse(raw);
    size_t n = m->text_new_len;
    assert_true(n <= strlen(m->text));
    sb_mail_free(m);
    free(raw);
    return n;
}

static void test_quotes(void **state)
{
    (void)state;
    assert_int_equal(new_len("Thanks!\n\nOn Mon, 1 Jan 2024, Bob <b@x> wrote:\n> hi\n"), 7);
    assert_int_equal(
        new_len("Thanks!\nOn Mon, 1 Jan 2024 at 10:00, Bob Smith\n<b@x> wrote:\n> hi\n"), 7);
    assert_int_equal(new_len("Danke\nAm 1. Jan. 2024 schrieb Bob <b@x>:\n> hallo\n"), 5);
    assert_int_equal(new_len("Yes.\n\n-----Original Message-----\nFrom: Bob\n"), 4);
    assert_int_equal(new_len("Ok\n________________________________\nFrom: Bob\nSent: now\n"), 2);
    assert_int_equal(new_len("Fine\n\n> quoted\n>\n> more\n"), 4);
    /* Quoting in the middle with an answer after it is not history. */
    assert_int_equal(new_len("> question\nanswer\n"), strlen("> question\nanswer\n"));
    assert_int_equal(new_len("No history at all\n"), strlen("No history at all\n"));
}

/*=== HTML ===*/

static const char html_mail[] =
    "From: a@example.com\n"
    "Subject: html\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<html><head><title>T</title><style>p{}</style><script>alert(1)</script></head>"
    "<body><p onclick=\"steal()\">Hello <b>w\xC3\xB6rld</b></p>"
    "<img src=\"x.png\" onerror=\"alert(2)\"><img src=\"data:image/png;base64,AAAA\">"
    "<a href=\" JaVa\tScript:alert(3)\">bad</a><a href=\"https://example.com/\">good</a>"
    "<a href=\"data:text/html,<script>\">data</a><a href=\"vbscript:x\">vb</a>"
    "<iframe src=\"https://evil.example/\"></iframe><form action=\"/x\"><input name=q></form>"
    "<div>Line two</div><script>alert(4)</script><ul><li>one</li><li>two</li></ul>"
    "</body></html>\n";

static void test_html_sanitised(void **state)
{
    (void)state;
    sb_mail_t *m = parse(html_mail);
    assert_non_null(m->html);
    const char *h = m->html;
    assert_null(strstr(h, "<script"));
    assert_null(strstr(h, "alert"));
    assert_null(strstr(h, "onclick"));
    assert_null(strstr(h, "onerror"));
    assert_null(strstr(h, "<iframe"));
    assert_null(strstr(h, "<form"));
    assert_null(strstr(h, "<input"));
    assert_null(strstr(h, "<style"));
    assert_null(strstr(h, "data:text"));
    assert_null(strstr(h, "vbscript"));
    assert_null(strstr(h, "<html"));
    assert_non_null(strstr(h, "data:image/png"));
    assert_non_null(strstr(h, "href=\"https://example.com/\""));
    assert_non_null(strstr(h, "Hello <b>w\xC3\xB6rld</b>"));
    /* No text/plain part: the text is the HTML's. */
    assert_non_null(strstr(m->text, "Hello w\xC3\xB6rld"));
    assert_non_null(strstr(m->text, "\nLine two\n"));
    assert_non_null(strstr(m->text, "- one\n- two"));
    assert_null(strstr(m->text, "alert"));
    assert_null(strstr(m->text, "<"));
    sb_mail_free(m);
}

/*=== structure ===*/

static const char report_mail[] =
    "From: MAILER-DAEMON@mx.example.com\n"
    "Subject: Undelivered Mail Returned to Sender\n"
    "Message-ID: <bounce1@mx.example.com>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n"
    "\n"
    "--B\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "Your message could not be delivered.\n"
    "--B\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; mx.example.com\n"
    "\n"
    "Final-Recipient: rfc822; nobody@example.org\n"
    "Action: failed\n"
    "--B\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: me@example.com\n"
    "Subject: my question\n"
    "Message-ID: <orig42@example.com>\n"
    "\n"
    "body\n"
    "--B--\n";

static void test_report(void **state)
{
    (void)state;
    sb_mail_t *m = parse(report_mail);
    assert_int_equal(m->auto_submitted, 1);
    assert_int_equal(m->nfiles, 1);
    assert_string_equal(m->files[0].content_type, "message/rfc822");
    assert_string_equal(m->files[0].filename, "my question.eml");
    assert_non_null(memmem(m->files[0].data, m->files[0].size, "Subject: my question", 20));
    assert_int_equal(count_refs(m), 1);
    assert_string_equal(m->references[0], "<orig42@example.com>");
    assert_string_equal(m->text, "Your message could not be delivered.");
    assert_string_equal(m->from_addr, "mailer-daemon@mx.example.com");
    sb_mail_free(m);
}

static const char mixed_mail[] =
    "From \"Caf\xE9\" <cafe@example.com>\n" /* mbox separator line, skipped */
    "From: =?iso-8859-1?Q?Caf=E9?= <Cafe@Example.com>\r\n"
    "Subject: =?utf-8?B?w6k=?= =?utf-8?B?w6k=?=\r\n"
    "In-Reply-To: <a@x>\r\n"
    "References: <z@x> <y@x> <a@x>\r\n"
    "Content-Type: multipart/mixed; boundary=M\r\n"
    "\r\n"
    "--M\r\n"
    "Content-Type: text/plain; charset=iso-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "caf=E9\r\n"
    "--M\r\n"
    "Content-Type: application/pdf; name=\"doc.pdf\"\r\n"
    "Content-Disposition: attachment\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "aGVsbG8=\r\n"
    "--M\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "trailing body fragment\r\n"
    "--M--\r\n";

static void test_mixed(void **state)
{
    (void)state;
    sb_mail_t *m = parse(mixed_mail);
    assert_string_equal(m->from_addr, "cafe@example.com");
    assert_string_equal(m->from_name, "Caf\xC3\xA9");
    assert_string_equal(m->subject, "\xC3\xA9\xC3\xA9");
    assert_string_equal(m->text, "caf\xC3\xA9");
    assert_null(m->html);
    assert_int_equal(m->nfiles, 1);
    assert_string_equal(m->files[0].filename, "doc.pdf");
    assert_string_equal(m->files[0].content_type, "application/pdf");
    assert_int_equal(m->files[0].size, 5);
    assert_memory_equal(m->files[0].data, "hello", 5);
    assert_int_equal(count_refs(m), 3);
    assert_string_equal(m->references[0], "<a@x>");
    assert_string_equal(m->references[1], "<y@x>");
    assert_string_equal(m->references[2], "<z@x>");
    assert_null(m->message_id);
    assert_int_equal(m->auto_submitted, 0);
    sb_mail_free(m);
}

/*=== malformed and empty ===*/

static void test_malformed(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "Content-Type: multipart/mixed; boundary=\"x\"\n\n--x\nContent-Type: text/plain\n\nno end",
        "Content-Type: multipart/mixed\n\nno boundary at all\n",
        "From: <>\nContent-Type: image/png; name=a.png\nContent-Transfer-Encoding: base64\n\n"
        "!!!not base64 at all===\x01\x02",
        "Subject: =?x-unknown?Q?=FF=FE?= =?utf-8?B?////?=\n\n\xFF\xFE\x00body",
        "Subject: =?utf-8?Q?unterminated\nFrom: \"unbalanced <a@\n\n",
        "\r\r\rFrom: a@example.com\rSubject: bare CR\r\rbody\r",
        "Content-Type: text/html\n\n<p><b><i>unclosed <script>",
        "Content-Type: message/rfc822\n\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb_mail_t *m = NULL;
        assert_int_equal(sb_mail_parse(cases[i], strlen(cases[i]), &m), 0);
        assert_non_null(m->text);
        assert_non_null(m->references);
        assert_true(m->text_new_len <= strlen(m->text));
        sb_mail_free(m);
    }
    sb_mail_t *m = parse(cases[5]);
    assert_string_equal(m->subject, "bare CR");
    assert_string_equal(m->text, "body\n");
    sb_mail_free(m);
    m = parse(cases[2]);
    assert_int_equal(m->nfiles, 1);
    assert_int_equal(m->auto_submitted, 1);
    sb_mail_free(m);
}

static void test_empty(void **state)
{
    (void)state;
    sb_mail_t *m = NULL;
    assert_int_equal(sb_mail_parse("", 0, &m), 0);
    assert_string_equal(m->text, "");
    assert_int_equal(m->text_new_len, 0);
    assert_null(m->references[0]);
    assert_null(m->from_addr);
    assert_null(m->subject);
    assert_null(m->message_id);
    assert_null(m->html);
    assert_int_equal(m->nfiles, 0);
    assert_int_equal(m->auto_submitted, 0);
    sb_mail_free(m);
    sb_mail_free(NULL);
}

/*=== Message-IDs ===*/

static void test_new_id(void **state)
{
    (void)state;
    char a[128], b[128];
    sb_mail_new_id("example.com", a, sizeof a);
    sb_mail_new_id("example.com", b, sizeof b);
    assert_string_not_equal(a, b);
    assert_int_equal(a[0], '<');
    assert_int_equal(a[25], '.');
    size_t n = strlen(a);
    assert_true(n > 40);
    assert_string_equal(a + n - strlen("@example.com>"), "@example.com>");
    for (int i = 1; i < 25; i++)
        assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz234567", a[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tag_find),        cmocka_unit_test(test_tag_format),
        cmocka_unit_test(test_build_roundtrip), cmocka_unit_test(test_build_given_html),
        cmocka_unit_test(test_build_refuses),   cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_html_sanitised),  cmocka_unit_test(test_report),
        cmocka_unit_test(test_mixed),           cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_new_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
