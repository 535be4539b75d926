/* crypto.c: what of crypto.h is the same on every platform: tokens, constant-time
 * comparison, base64 and hex. The primitives (SHA-256, HMAC, random bytes, cleansing) come
 * from crypto-openssl.c on POSIX and crypto-bcrypt.c on Windows. */
#include "common/crypto.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

void crypto_sha256_hex(const void *data, size_t len, char out[CRYPTO_SHA256_HEX_LEN])
{
    uint8_t md[CRYPTO_SHA256_LEN];

    crypto_sha256(data, len, md);
    hex_encode(md, sizeof(md), out);
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
        crypto_cleanse(raw, sizeof(raw));
        return -ENOMEM;
    }
    memcpy(s, prefix, plen);
    s[plen] = '_';
    r = base64url_encode(raw, nbytes, s + plen + 1, total - plen - 1);
    crypto_cleanse(raw, sizeof(raw));
    if (r < 0) {
        free(s);
        return r;
    }
    *ret = s;
    return 0;
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;

    /* Every byte is read whatever the earlier ones held, through volatile so that the
     * compiler cannot stop at the first difference. */
    for (size_t i = 0; i < len; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
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

/* The 4-for-3 encoding of both alphabets; pad: complete a short group with '=' (RFC 4648
 * §4) or end it there (§5). out has room for the encoding and its NUL. */
static size_t b64_encode_with(const char *alphabet, bool pad, const uint8_t *in, size_t len,
                              char *out)
{
    size_t o = 0, i;

    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18 & 0x3f];
        out[o++] = alphabet[v >> 12 & 0x3f];
        out[o++] = alphabet[v >> 6 & 0x3f];
        out[o++] = alphabet[v & 0x3f];
    }
    if (len - i >= 1) {
        uint32_t v = (uint32_t)in[i] << 16 | (len - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18 & 0x3f];
        out[o++] = alphabet[v >> 12 & 0x3f];
        if (len - i == 2)
            out[o++] = alphabet[v >> 6 & 0x3f];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The value of one digit of an alphabet whose last two digits are c62 and c63, or -1. */
static int b64_value(char c, char c62, char c63)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == c62)
        return 62;
    if (c == c63)
        return 63;
    return -1;
}

int base64url_encode(const void *data, size_t len, char *out, size_t outlen)
{
    size_t elen = base64url_encoded_len(len);

    if (elen >= outlen || elen > INT_MAX)
        return -ENOSPC;
    return (int)b64_encode_with(b64url_alphabet, false, data, len, out);
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
        int c = b64_value(s[i], '-', '_');

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

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t base64_decoded_max(size_t slen)
{
    return slen / 4 * 3;
}

int base64_encode(const void *data, size_t len, char *out, size_t outlen)
{
    size_t elen;

    if (len > (SIZE_MAX - 2) / 4 * 3)
        return -ENOSPC;
    elen = base64_encoded_len(len);
    if (elen >= outlen || elen > INT_MAX)
        return -ENOSPC;
    return (int)b64_encode_with(b64_alphabet, true, data, len, out);
}

int base64_decode(const char *s, size_t slen, uint8_t *out, size_t outlen)
{
    size_t n = slen, dlen, o = 0;

    if (slen % 4 != 0 || slen / 4 * 3 > INT_MAX)
        return -EINVAL;
    if (n > 0 && s[n - 1] == '=')
        n--;
    if (n > 0 && s[n - 1] == '=')
        n--;
    dlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (dlen > outlen)
        return -ENOSPC;
    /* Trailing bits of a short group are ignored, as OpenSSL's EVP_DecodeBlock (which this
     * replaces on the wire) ignores them: the same text decodes to the same bytes. */
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t k, m = n - i < 4 ? n - i : 4;

        for (k = 0; k < 4; k++) {
            int c = k < m ? b64_value(s[i + k], '+', '/') : 0;

            if (c < 0)
                return -EINVAL;
            v = v << 6 | (uint32_t)c;
        }
        for (k = 0; k + 1 < m && o < dlen; k++)
            out[o++] = (uint8_t)(v >> (16 - 8 * k));
    }
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
