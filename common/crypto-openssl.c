/* crypto-openssl.c: crypto.h's primitives on OpenSSL 3 (POSIX builds): SHA-256, HMAC-SHA256,
 * random bytes, cleansing. The rest of crypto.h is portable, in crypto.c. */
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

void crypto_cleanse(void *p, size_t len)
{
    OPENSSL_cleanse(p, len);
}
