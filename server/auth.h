/*
 * auth.h - secrets: bearer tokens (random, stored only as a BLAKE2b hash)
 * and argon2id password hashes (libsodium's crypto_pwhash_str).  Hashing a
 * password takes tens of milliseconds and 64 MiB, so on a worker it runs
 * on libuv's thread pool, never on the loop; the CLI uses the synchronous
 * form.  Comparisons of secrets are constant-time.
 */
#ifndef SB_AUTH_H
#define SB_AUTH_H

#include <stddef.h>
#include <uv.h>

#define SB_AUTH_TOKEN_LEN 47    /* "sbt_" + 43 base64url characters */
#define SB_AUTH_HASH_HEX_LEN 66 /* "\x" + 64 hex digits: a bytea literal */
#define SB_AUTH_PWHASH_LEN 128  /* crypto_pwhash_STRBYTES */

/* Initialises libsodium.  Call once per process before anything else here. */
int sb_auth_init(void);

/* Fills token (SB_AUTH_TOKEN_LEN + 1 bytes) with a new random token. */
void sb_auth_token_new(char *token, const char *prefix);

/*
 * Writes the bytea text form ("\x...") of the token's BLAKE2b-256 hash into
 * out (SB_AUTH_HASH_HEX_LEN + 1 bytes): what the database stores and
 * looks tokens up by.
 */
void sb_auth_token_hash(const char *token, char *out);

/* Hashes password into out (SB_AUTH_PWHASH_LEN bytes).  0 or SB_ENOMEM. */
int sb_auth_password_hash(const char *password, char *out);

/* True when password matches hash.  Synchronous. */
int sb_auth_password_check(const char *hash, const char *password);

/*
 * ok is 1 when the password matched (verify) and out holds the new hash
 * (hash); borrowed until the callback returns.
 */
typedef void (*sb_auth_done_cb)(int ok, const char *out, void *data);

/*
 * Verifies password against hash (NULL: against a fixed dummy hash, so an
 * unknown account costs the same time as a wrong password) on the thread
 * pool.  Copies both strings.  Returns 0 and calls cb once on the loop
 * thread; or returns SB_EIO and never calls cb.
 */
int sb_auth_password_verify_async(uv_loop_t *loop, const char *hash, const char *password,
                                  sb_auth_done_cb cb, void *data);

/* Hashes password on the thread pool; as above. */
int sb_auth_password_hash_async(uv_loop_t *loop, const char *password, sb_auth_done_cb cb,
                                void *data);

#endif
