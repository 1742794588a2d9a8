/*
 * secrets.h - the installation's master key (32 random bytes in
 * <data_dir>/secret.key, made on first start, mode 0600) and what is built
 * on it: keys derived per purpose, and channel secrets sealed with
 * libsodium's secretbox so the database never holds them in clear.
 * Loaded in the master before fork; read-only afterwards.
 */
#ifndef SB_SECRETS_H
#define SB_SECRETS_H

#include <stddef.h>

#include "common.h"

/* Reads or creates the key file.  0, or SB_EIO (logged). */
int sb_secrets_init(const char *data_dir);

/* True once a key is loaded. */
int sb_secrets_ready(void);

/* A 32-byte key for a purpose ("plugin:chat"), stable across restarts. */
int sb_secrets_derive(const char *purpose, unsigned char out[32]);

/*
 * Seals plain into out as the bytea text form ("\x" nonce || box), ready to
 * pass as a query parameter.  0, or SB_EIO without a key.
 */
int sb_secrets_seal(const char *plain, size_t len, sb_buf_t *out);

/*
 * Opens what sb_secrets_seal made (raw bytes, as read from a bytea column)
 * into out.  0, or SB_EINVAL when it was forged or sealed with another key.
 */
int sb_secrets_open(const unsigned char *sealed, size_t len, sb_buf_t *out);

#endif
