/*
 * survey.h - the links of customer surveys: a token that names the
 * tenant, the survey (a random nonce stored with it) and when the link
 * expires, signed with a key derived from the installation key, so a
 * link can be checked without the database and cannot be forged or
 * pointed at another tenant's ticket.  Any thread; no I/O.
 */
#ifndef SB_SURVEY_H
#define SB_SURVEY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SB_SURVEY_NONCE_LEN 16
/* Room for a token and its NUL (base64url of 24 + 16 + 32 bytes). */
#define SB_SURVEY_TOKEN_MAX 112

typedef struct sb_survey_ref {
    int64_t tenant_id;
    unsigned char nonce[SB_SURVEY_NONCE_LEN];
    int64_t expires; /* unix seconds */
} sb_survey_ref_t;

/* A fresh random nonce. */
void sb_survey_nonce(unsigned char nonce[SB_SURVEY_NONCE_LEN]);

/* The nonce as 32 hex digits (for SQL), and back.  from_hex: 0 or SB_EINVAL. */
void sb_survey_nonce_hex(const unsigned char nonce[SB_SURVEY_NONCE_LEN], char out[33]);
int sb_survey_nonce_from_hex(const char *hex, unsigned char nonce[SB_SURVEY_NONCE_LEN]);

/* Signs ref into a URL-safe token.  0, or SB_EIO without an installation key. */
int sb_survey_token(const sb_survey_ref_t *ref, char out[SB_SURVEY_TOKEN_MAX]);

/*
 * Checks a token's shape and signature and fills ref (expiry not judged
 * here: the caller answers 410 for an expired link).  0, or SB_EINVAL for
 * anything forged, truncated or signed with another key.
 */
int sb_survey_verify(const char *token, sb_survey_ref_t *ref);

/*
 * The link customers open: public_url (trailing slashes dropped), or
 * http://<listen> without one, then /survey/<token>.  The caller frees it.
 */
char *sb_survey_url(const sb_config_t *cfg, const char *token);

#endif
