/* crypto.c: hashing, randomness, encodings and comparisons for secrets (OpenSSL 3). */
#include "common/crypto.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
    unsigned int outlen = 0;

    /* The void API gives no way to report failure, and a wrong digest must never be used:
     * a failing SHA-256 means a broken OpenSSL install. */
    if (EVP_Digest(len ? data : "", len, out, &outlen, EVP_sha256(), NULL) != 1 ||
        outlen != CRYPTO_SHA256_LEN)
        abort();
}

void crypto_sha256_hex(const void *data, size_t len, char out[CRYPTO_SHA256_HEX_LEN])
{
    uint8_t md[CRYPTO_SHA256_LEN];

    crypto_sha256(data, len, md);
    hex_encode(md, sizeof(md), out);
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    static const uint8_t empty[1];
    unsigned int outlen = 0;

    if (keylen > INT_MAX)
        abort();
    /* HMAC() rejects a NULL key even when keylen is 0; the empty key is valid HMAC. */
    if (!HMAC(EVP_sha256(), keylen ? key : empty, (int)keylen, len ? data : empty, len, out,
              &outlen) ||
        outlen != CRYPTO_SHA256_LEN)
        abort();
}

int crypto_random(void *out, size_t len)
{
    unsigned char *p = out;

    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;

        if (RAND_bytes(p, chunk) != 1)
            return -EIO;
        p += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int crypto_token_new(const char *prefix, size_t nbytes, char **ret)
{
    uint8_t raw[64];
    size_t plen, elen, total;
    char *s;
    int r;

    if (!prefix || !*prefix || nbytes < 16 || nbytes > 64)
        return -EINVAL;
    plen = strlen(prefix);
    elen = base64url_encoded_len(nbytes);
    total = plen + 1 + elen + 1;

    r = crypto_random(raw, nbytes);
    if (r < 0)
        return r;
    s = malloc(total);
    if (!s) {
        OPENSSL_cleanse(raw, sizeof(raw));
        return -ENOMEM;
    }
    memcpy(s, prefix, plen);
    s[plen] = '_';
    r = base64url_encode(raw, nbytes, s + plen + 1, total - plen - 1);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (r < 0) {
        free(s);
        return r;
    }
    *ret = s;
    return 0;
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
    if (len == 0)
        return true;
    return CRYPTO_memcmp(a, b, len) == 0;
}

bool crypto_streq(const char *a, const char *b)
{
    size_t la, lb;

    /* A missing secret never matches anything, not even another missing one. */
    if (!a || !b)
        return false;
    la = strlen(a);
    lb = strlen(b);
    if (la != lb)
        return false;
    return crypto_equal(a, b, la);
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t base64url_encoded_len(size_t n)
{
    static const size_t tail[3] = {0, 2, 3};

    return n / 3 * 4 + tail[n % 3];
}

int base64url_encode(const void *data, size_t len, char *out, size_t outlen)
{
    const uint8_t *in = data;
    size_t elen = base64url_encoded_len(len), o = 0, i;

    if (elen >= outlen || elen > INT_MAX)
        return -ENOSPC;
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
        out[o++] = b64url_alphabet[v >> 6 & 0x3f];
        out[o++] = b64url_alphabet[v & 0x3f];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
        out[o++] = b64url_alphabet[v >> 6 & 0x3f];
    }
    out[o] = '\0';
    return (int)o;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int base64url_decode(const char *s, size_t slen, uint8_t *out, size_t outlen)
{
    size_t n = slen, dlen, o = 0, i;
    uint32_t v = 0;
    int bits = 0;

    /* Padding is tolerated only in its proper place: 1 or 2 '=' completing a 4-char group. */
    if (n > 0 && s[n - 1] == '=') {
        n--;
        if (n > 0 && s[n - 1] == '=')
            n--;
        if (slen % 4 != 0)
            return -EINVAL;
    }
    if (n % 4 == 1)
        return -EINVAL;
    dlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (dlen > INT_MAX)
        return -EINVAL;
    if (dlen > outlen)
        return -ENOSPC;

    for (i = 0; i < n; i++) {
        int c = b64url_value(s[i]);

        if (c < 0)
            return -EINVAL;
        v = v << 6 | (uint32_t)c;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(v >> bits);
            v &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero: only the canonical encoding is accepted. */
    if (v != 0)
        return -EINVAL;
    return (int)o;
}

void hex_encode(const void *data, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *in = data;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}
