/*
 * secrets.c - the master key file and secretbox sealing.
 */
#include "secrets.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char secrets_key[32];
static int secrets_loaded;

static int secrets_create(const char *path)
{
    unsigned char key[32];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int ok = 0;

    randombytes_buf(key, sizeof(key));
    if (fd >= 0) {
        ok = write(fd, key, sizeof(key)) == (ssize_t)sizeof(key) && fsync(fd) == 0;
        close(fd);
    }
    if (ok)
        memcpy(secrets_key, key, sizeof(key));
    sodium_memzero(key, sizeof(key));
    return ok ? 0 : SB_EIO;
}

int sb_secrets_init(const char *data_dir)
{
    char path[PATH_MAX];
    struct stat st;

    if (secrets_loaded)
        return 0;
    snprintf(path, sizeof(path), "%s/secret.key", data_dir);
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        sb_log(SB_LOG_ERR, NULL, "could not create data directory \"%s\": %s", data_dir,
               strerror(errno));
        return SB_EIO;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (secrets_create(path) != 0) {
            sb_log(SB_LOG_ERR, NULL, "could not create key file \"%s\": %s", path, strerror(errno));
            return SB_EIO;
        }
        secrets_loaded = 1;
        return 0;
    }
    if (fd < 0 || fstat(fd, &st) != 0 || (st.st_mode & 077) ||
        read(fd, secrets_key, sizeof(secrets_key)) != (ssize_t)sizeof(secrets_key)) {
        sb_log_ex(SB_LOG_ERR, NULL, NULL,
                  "The file must hold 32 bytes and be readable by its owner only.",
                  "could not use key file \"%s\"", path);
        if (fd >= 0)
            close(fd);
        return SB_EIO;
    }
    close(fd);
    secrets_loaded = 1;
    return 0;
}

int sb_secrets_ready(void)
{
    return secrets_loaded;
}

int sb_secrets_derive(const char *purpose, unsigned char out[32])
{
    if (!secrets_loaded)
        return SB_EIO;
    crypto_generichash(out, 32, (const unsigned char *)purpose, strlen(purpose), secrets_key,
                       sizeof(secrets_key));
    return 0;
}

int sb_secrets_seal(const char *plain, size_t len, sb_buf_t *out)
{
    unsigned char key[32];
    unsigned char nonce[crypto_secretbox_NONCEBYTES];

    if (sb_secrets_derive("channel-secrets", key) != 0)
        return SB_EIO;
    size_t blen = sizeof(nonce) + crypto_secretbox_MACBYTES + len;
    unsigned char *box = sb_xmalloc(blen);
    randombytes_buf(nonce, sizeof(nonce));
    memcpy(box, nonce, sizeof(nonce));
    crypto_secretbox_easy(box + sizeof(nonce), (const unsigned char *)plain, len, nonce, key);
    char *hex = sb_xmalloc(blen * 2 + 1);
    sodium_bin2hex(hex, blen * 2 + 1, box, blen);
    sb_buf_reset(out);
    sb_buf_puts(out, "\\x");
    sb_buf_append(out, hex, blen * 2);
    free(hex);
    free(box);
    sodium_memzero(key, sizeof(key));
    return 0;
}

int sb_secrets_open(const unsigned char *sealed, size_t len, sb_buf_t *out)
{
    unsigned char key[32];
    size_t head = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;

    if (len < head || sb_secrets_derive("channel-secrets", key) != 0)
        return SB_EINVAL;
    unsigned char *plain = sb_xmalloc(len - head + 1);
    int rc = crypto_secretbox_open_easy(plain, sealed + crypto_secretbox_NONCEBYTES,
                                        len - crypto_secretbox_NONCEBYTES, sealed, key);
    sodium_memzero(key, sizeof(key));
    if (rc == 0) {
        sb_buf_reset(out);
        sb_buf_append(out, plain, len - head);
    }
    sodium_memzero(plain, len - head);
    free(plain);
    return rc == 0 ? 0 : SB_EINVAL;
}
