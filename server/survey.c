/*
 * survey.c - survey link tokens: base64url(tenant | nonce | expires | MAC),
 * the MAC being libsodium's crypto_auth (HMAC-SHA-512-256) under the key
 * derived for "survey".
 */
#include "survey.h"
#include "common.h"
#include "secrets.h"

#include <sodium.h>
#include <string.h>

#define SURVEY_BODY (8 + SB_SURVEY_NONCE_LEN + 8)

static void put64(unsigned char *p, int64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static int64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

static int survey_key(unsigned char key[crypto_auth_KEYBYTES])
{
    return sb_secrets_derive("survey", key) == 0 ? 0 : SB_EIO;
}

void sb_survey_nonce(unsigned char nonce[SB_SURVEY_NONCE_LEN])
{
    randombytes_buf(nonce, SB_SURVEY_NONCE_LEN);
}

void sb_survey_nonce_hex(const unsigned char nonce[SB_SURVEY_NONCE_LEN], char out[33])
{
    sodium_bin2hex(out, 33, nonce, SB_SURVEY_NONCE_LEN);
}

int sb_survey_nonce_from_hex(const char *hex, unsigned char nonce[SB_SURVEY_NONCE_LEN])
{
    size_t len = 0;
    if (strlen(hex) != 2 * SB_SURVEY_NONCE_LEN ||
        sodium_hex2bin(nonce, SB_SURVEY_NONCE_LEN, hex, strlen(hex), NULL, &len, NULL) != 0 ||
        len != SB_SURVEY_NONCE_LEN)
        return SB_EINVAL;
    return 0;
}

int sb_survey_token(const sb_survey_ref_t *ref, char out[SB_SURVEY_TOKEN_MAX])
{
    unsigned char buf[SURVEY_BODY + crypto_auth_BYTES];
    unsigned char key[crypto_auth_KEYBYTES];

    if (survey_key(key) != 0)
        return SB_EIO;
    put64(buf, ref->tenant_id);
    memcpy(buf + 8, ref->nonce, SB_SURVEY_NONCE_LEN);
    put64(buf + 8 + SB_SURVEY_NONCE_LEN, ref->expires);
    crypto_auth(buf + SURVEY_BODY, buf, SURVEY_BODY, key);
    sodium_memzero(key, sizeof(key));
    sodium_bin2base64(out, SB_SURVEY_TOKEN_MAX, buf, sizeof(buf),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int sb_survey_verify(const char *token, sb_survey_ref_t *ref)
{
    unsigned char buf[SURVEY_BODY + crypto_auth_BYTES];
    unsigned char key[crypto_auth_KEYBYTES];
    size_t len = 0;
    const char *end = NULL;

    if (token == NULL || strlen(token) >= SB_SURVEY_TOKEN_MAX ||
        sodium_base642bin(buf, sizeof(buf), token, strlen(token), NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len != sizeof(buf) || *end != '\0' || survey_key(key) != 0)
        return SB_EINVAL;
    int ok = crypto_auth_verify(buf + SURVEY_BODY, buf, SURVEY_BODY, key) == 0;
    sodium_memzero(key, sizeof(key));
    if (!ok)
        return SB_EINVAL;
    ref->tenant_id = get64(buf);
    memcpy(ref->nonce, buf + 8, SB_SURVEY_NONCE_LEN);
    ref->expires = get64(buf + 8 + SB_SURVEY_NONCE_LEN);
    return 0;
}

char *sb_survey_url(const sb_config_t *cfg, const char *token)
{
    sb_buf_t b;
    sb_buf_init(&b);
    if (cfg->public_url && cfg->public_url[0]) {
        size_t len = strlen(cfg->public_url);
        while (len > 0 && cfg->public_url[len - 1] == '/')
            len--;
        sb_buf_append(&b, cfg->public_url, len);
    } else
        sb_buf_printf(&b, "http://%s", cfg->listen);
    sb_buf_printf(&b, "/survey/%s", token);
    return sb_buf_steal(&b, NULL);
}
