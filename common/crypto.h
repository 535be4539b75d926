/* crypto.h: hashing, randomness, encodings and comparisons for secrets.
 * The primitives (sha256, hmac, random, cleanse) are OpenSSL's on POSIX (crypto-openssl.c)
 * and BCrypt's on Windows (crypto-bcrypt.c); the rest is portable C (crypto.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_SHA256_LEN     32
#define CRYPTO_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_LEN]);
void crypto_sha256_hex(const void *data, size_t len, char out[CRYPTO_SHA256_HEX_LEN]);
/* HMAC-SHA256. */
void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[CRYPTO_SHA256_LEN]);

/* Cryptographically secure random bytes. Returns 0 or -EIO. */
int crypto_random(void *out, size_t len);
/* Overwrite len bytes at p with zeros in a way the compiler cannot drop (secrets). */
void crypto_cleanse(void *p, size_t len);

/* A new secret token "<prefix>_<base64url of nbytes random bytes>", e.g. prefix "orch_ak".
 * nbytes in [16, 64]. *ret is malloc'd, caller frees. Returns 0, -EINVAL, -EIO or -ENOMEM. */
int crypto_token_new(const char *prefix, size_t nbytes, char **ret);

/* Constant-time equality of two equal-length buffers. */
bool crypto_equal(const void *a, const void *b, size_t len);
/* Constant-time in the contents; length difference returns false. NULL-safe. */
bool crypto_streq(const char *a, const char *b);

/* base64url without padding (RFC 4648 §5). Encoded length = base64url_encoded_len(n). */
size_t base64url_encoded_len(size_t n);
/* Write the encoding plus NUL into out (outlen >= encoded_len + 1). Returns length or -ENOSPC. */
int base64url_encode(const void *data, size_t len, char *out, size_t outlen);
/* Decode (padding tolerated, nothing else) into out. Returns decoded length, -EINVAL on a
 * bad character or impossible length, -ENOSPC when out is too small. */
int base64url_decode(const char *s, size_t slen, uint8_t *out, size_t outlen);

/* Standard base64 with padding (RFC 4648 §4), the encoding of log chunks on the wire.
 * Encoded length = base64_encoded_len(n), a multiple of 4. */
size_t base64_encoded_len(size_t n);
/* Write the encoding plus NUL into out (outlen >= encoded_len + 1). Returns length or -ENOSPC. */
int base64_encode(const void *data, size_t len, char *out, size_t outlen);
/* Decode padded base64 into out. The length must be a multiple of 4 and '=' may only be the
 * last one or two characters; no whitespace. Returns the decoded length, -EINVAL when s is
 * not that, -ENOSPC when out is too small (base64_decoded_max(slen) always suffices). */
int base64_decode(const char *s, size_t slen, uint8_t *out, size_t outlen);
size_t base64_decoded_max(size_t slen);

/* Hex (lower-case) encode; out needs 2*len+1. */
void hex_encode(const void *data, size_t len, char *out);
