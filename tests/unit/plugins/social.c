/*
 * Unit tests of plugins/social: the sender checks (Meta's signature with
 * the public pywa test vector, Twilio's with a vector computed by Python's
 * hmac), constant-time token comparison, form bodies, what a platform's
 * answer means for a send, and cutting text between UTF-8 characters.  The webhooks
 * themselves are tested end to end in tests/blackbox/test_social.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "social.h"

/* ../shared/corpus/social/meta-signature-vector.{json,body.json} */
static const char meta_body[] =
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"264937493375603\",\"changes\":"
    "[{\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":"
    "\"15550953877\",\"phone_number_id\":\"277321005464405\"},\"contacts\":[{\"profile\":{"
    "\"name\":\"PyWa Tests\"},\"wa_id\":\"972544401243\"}],\"messages\":[{\"from\":"
    "\"972544401243\",\"id\":\"wamid.HBgMOTcyNTQ0NDAxMjQzFQIAEhggM0RFQTNCMEEwRTY3QzUwODYzMDc4NjQ4"
    "QzM4ODAxM0YA\",\"timestamp\":\"1730231903\",\"text\":{\"body\":\"Hey there! I am using "
    "PyWa.\"},\"type\":\"text\"}]},\"field\":\"messages\"}]}]}";
static const char meta_secret[] = "1222e786b144d0e85b9f365372d93676";
static const char meta_header[] =
    "sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441";

static void test_meta_vector(void **state)
{
    char body[sizeof(meta_body)];

    assert_int_equal(strlen(meta_body), 511);
    assert_int_equal(sb_social_meta_verify(meta_secret, meta_body, strlen(meta_body), meta_header),
                     0);
    memcpy(body, meta_body, sizeof(body));
    body[100] ^= 1;
    assert_int_equal(sb_social_meta_verify(meta_secret, body, strlen(body), meta_header),
                     SB_EINVAL);
    assert_int_equal(sb_social_meta_verify("other", meta_body, strlen(meta_body), meta_header),
                     SB_EINVAL);
    /* Malformed headers are refused, not half-compared. */
    assert_int_equal(
        sb_social_meta_verify(meta_secret, meta_body, strlen(meta_body), "sha256=54ed"), SB_EINVAL);
    assert_int_equal(
        sb_social_meta_verify(meta_secret, meta_body, strlen(meta_body), meta_header + 7),
        SB_EINVAL);
    assert_int_equal(sb_social_meta_verify(meta_secret, meta_body, strlen(meta_body), NULL),
                     SB_EINVAL);
    assert_int_equal(sb_social_meta_verify("", meta_body, strlen(meta_body), meta_header),
                     SB_EINVAL);
}

static void test_twilio_vector(void **state)
{
    static const char body[] =
        "ToCountry=US&Body=Hello+there%21&MessageSid=SM1&From=%2B14133881111&NumMedia=0&Empty=";
    static const char url[] = "https://help.example.com/hooks/acme/7";
    static const char sig[] = "3EuoaWy1LUXIdf9yL6G8dAD7Sfc=";

    assert_int_equal(sb_social_twilio_verify("twilio-token", url, body, strlen(body), sig), 0);
    assert_int_equal(sb_social_twilio_verify("twilio-tokem", url, body, strlen(body), sig),
                     SB_EINVAL);
    assert_int_equal(sb_social_twilio_verify("twilio-token",
                                             "https://help.example.com/hooks/acme/8", body,
                                             strlen(body), sig),
                     SB_EINVAL);
    assert_int_equal(sb_social_twilio_verify("twilio-token", url, body, strlen(body) - 1, sig),
                     SB_EINVAL);
    assert_int_equal(sb_social_twilio_verify("twilio-token", NULL, body, strlen(body), sig),
                     SB_EINVAL);
}

static void test_token_equal(void **state)
{
    assert_true(sb_social_token_equal("s3cret", "s3cret"));
    assert_false(sb_social_token_equal("s3cret", "s3cres"));
    assert_false(sb_social_token_equal("s3cret", "s3cret-longer"));
    assert_false(sb_social_token_equal("s3cret", NULL));
    assert_false(sb_social_token_equal(NULL, "x"));
    assert_false(sb_social_token_equal("", ""));
}

static void test_form(void **state)
{
    static const char body[] = "To=%2B1202&Body=caf%C3%A9+au+lait&&Empty=&Bare";
    sb_social_form_t f;

    assert_int_equal(sb_social_form_parse(body, strlen(body), &f), 0);
    assert_int_equal(f.n, 4);
    assert_string_equal(sb_social_form_get(&f, "To"), "+1202");
    assert_string_equal(sb_social_form_get(&f, "Body"), "café au lait");
    assert_string_equal(sb_social_form_get(&f, "Empty"), "");
    assert_string_equal(sb_social_form_get(&f, "Bare"), "");
    assert_null(sb_social_form_get(&f, "Missing"));
    sb_social_form_free(&f);
    assert_int_equal(sb_social_form_parse("a=%zz", 5, &f), SB_EINVAL);

    const char *pairs[] = {"To", "whatsapp:+1 202", "Skip", NULL, "Body", "a&b=c"};
    char *enc = sb_social_form_encode(pairs, 3);
    assert_string_equal(enc, "To=whatsapp%3A%2B1%20202&Body=a%26b%3Dc");
    free(enc);
}

/* sb_social_send_result of a JSON body. */
static int send_result(long status, const char *body, long retry_after, int *retry_s)
{
    return sb_social_send_result(status, body, body ? strlen(body) : 0, retry_after, retry_s);
}

static void test_send_result(void **state)
{
    int s;

    assert_int_equal(send_result(200, "{}", -1, &s), SB_SENT);
    assert_int_equal(send_result(503, NULL, 7, &s), SB_RETRY);
    assert_int_equal(s, 7);
    assert_int_equal(send_result(500, "", -1, &s), SB_RETRY);
    assert_int_equal(s, 0);
    /* A Retry-After far away is clamped, not wrapped into a negative int. */
    assert_int_equal(send_result(429, NULL, 4294967296L + 5, &s), SB_RETRY);
    assert_int_equal(s, 86400);
    /* Telegram's 429 says how long in its body. */
    assert_int_equal(send_result(429,
                                 "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many "
                                 "Requests: retry after 35\",\"parameters\":{\"retry_after\":35}}",
                                 -1, &s),
                     SB_RETRY);
    assert_int_equal(s, 35);
    /* The Graph API's rate limits and transient errors are 4xx. */
    assert_int_equal(send_result(400, "{\"error\":{\"code\":130429}}", -1, &s), SB_RETRY);
    assert_int_equal(send_result(400, "{\"error\":{\"code\":131056}}", -1, &s), SB_RETRY);
    assert_int_equal(send_result(403, "{\"error\":{\"code\":4}}", -1, &s), SB_RETRY);
    assert_int_equal(send_result(400, "{\"error\":{\"code\":80007}}", -1, &s), SB_RETRY);
    assert_int_equal(send_result(400, "{\"error\":{\"code\":1,\"is_transient\":true}}", -1, &s),
                     SB_RETRY);
    /* Anything else is refused for good. */
    assert_int_equal(send_result(400, "{\"error\":{\"code\":131026}}", -1, &s), SB_FAILED);
    assert_int_equal(send_result(400, "{\"error\":{\"code\":\"4\"}}", -1, &s), SB_FAILED);
    assert_int_equal(send_result(404, "not json", 9, &s), SB_FAILED);
    assert_int_equal(s, 0);
}

static void test_printf_cuts_between_characters(void **state)
{
    char buf[8];

    assert_string_equal(sb_social_printf(buf, sizeof(buf), "%s", "abcdeé"), "abcdeé");
    assert_string_equal(sb_social_printf(buf, sizeof(buf), "%s", "abcdefé"), "abcdef");
    assert_string_equal(sb_social_printf(buf, sizeof(buf), "(%s)", "ab€"), "(ab€)");
    assert_string_equal(sb_social_printf(buf, sizeof(buf), "(%s)", "abcd€"), "(abcd");
    assert_string_equal(
        sb_social_printf(buf, sizeof(buf), "%s", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80"),
        "\xf0\x9f\x98\x80");
}

static void test_send_json_without_a_document(void **state)
{
    /* Refused before anything is sent: the host table is never touched. */
    assert_int_equal(
        sb_social_send_json(NULL, NULL, "https://example.invalid/", "t", NULL, NULL, NULL, NULL),
        SB_EINVAL);
    assert_int_equal(sb_social_send_json(NULL, NULL, "https://example.invalid/", NULL,
                                         json_pack("{s:s}", "text", "\xff"), NULL, NULL, NULL),
                     SB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meta_vector),
        cmocka_unit_test(test_twilio_vector),
        cmocka_unit_test(test_token_equal),
        cmocka_unit_test(test_form),
        cmocka_unit_test(test_send_result),
        cmocka_unit_test(test_printf_cuts_between_characters),
        cmocka_unit_test(test_send_json_without_a_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
