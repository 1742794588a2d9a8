/*
 * auth.c - tokens and password hashes with libsodium.  No policy here:
 * who may log in, and how often, is the API's business.
 */
#include "auth.h"
#include "common.h"
#include "log.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static char auth_dummy_hash[crypto_pwhash_STRBYTES];

int sb_auth_init(void)
{
    if (sodium_init() < 0)
        return SB_EIO;
    if (auth_dummy_hash[0] == '\0' &&
        crypto_pwhash_str(auth_dummy_hash, "switchboard", 11, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return SB_ENOMEM;
    return 0;
}

void sb_auth_token_new(char *token, const char *prefix)
{
    unsigned char raw[32];

    randombytes_buf(raw, sizeof(raw));
    size_t n = strlen(prefix);
    memcpy(token, prefix, n);
    sodium_bin2base64(token + n, SB_AUTH_TOKEN_LEN + 1 - n, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

void sb_auth_token_hash(const char *token, char *out)
{
    unsigned char h[32];

    crypto_generichash(h, sizeof(h), (const unsigned char *)token, strlen(token), NULL, 0);
    out[0] = '\\';
    out[1] = 'x';
    sodium_bin2hex(out + 2, SB_AUTH_HASH_HEX_LEN - 1, h, sizeof(h));
}

int sb_auth_password_hash(const char *password, char *out)
{
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return SB_ENOMEM;
    return 0;
}

int sb_auth_password_check(const char *hash, const char *password)
{
    if (hash == NULL || strlen(hash) >= crypto_pwhash_STRBYTES)
        return 0;
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

/* ======================== thread pool ======================== */

typedef struct {
    uv_work_t work;
    int verify;
    char *hash; /* in (verify) or out (hash) */
    char *password;
    int ok;
    sb_auth_done_cb cb;
    void *data;
} auth_job_t;

static void auth_work(uv_work_t *w)
{
    auth_job_t *j = w->data;

    if (j->verify) {
        const char *h = j->hash ? j->hash : auth_dummy_hash;
        j->ok = sb_auth_password_check(h, j->password) && j->hash != NULL;
        return;
    }
    j->hash = sb_xmalloc(crypto_pwhash_STRBYTES);
    j->ok = sb_auth_password_hash(j->password, j->hash) == 0;
}

static void auth_after(uv_work_t *w, int status)
{
    auth_job_t *j = w->data;

    sodium_memzero(j->password, strlen(j->password));
    j->cb(status == 0 && j->ok, j->verify ? NULL : j->hash, j->data);
    free(j->password);
    free(j->hash);
    free(j);
}

static int auth_queue(uv_loop_t *loop, int verify, const char *hash, const char *password,
                      sb_auth_done_cb cb, void *data)
{
    auth_job_t *j = sb_xcalloc(1, sizeof(*j));

    j->verify = verify;
    j->hash = hash ? sb_xstrdup(hash) : NULL;
    j->password = sb_xstrdup(password);
    j->cb = cb;
    j->data = data;
    j->work.data = j;
    if (uv_queue_work(loop, &j->work, auth_work, auth_after) != 0) {
        free(j->hash);
        free(j->password);
        free(j);
        return SB_EIO;
    }
    return 0;
}

int sb_auth_password_verify_async(uv_loop_t *loop, const char *hash, const char *password,
                                  sb_auth_done_cb cb, void *data)
{
    return auth_queue(loop, 1, hash, password, cb, data);
}

int sb_auth_password_hash_async(uv_loop_t *loop, const char *password, sb_auth_done_cb cb,
                                void *data)
{
    return auth_queue(loop, 0, NULL, password, cb, data);
}
