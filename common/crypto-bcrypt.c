/* crypto-bcrypt.c: crypto.h's primitives on Windows' CNG (BCrypt): SHA-256, HMAC-SHA256,
 * random bytes, cleansing. The rest of crypto.h is portable, in crypto.c.
 *
 * The algorithm pseudo-handles (BCRYPT_SHA256_ALG_HANDLE, BCRYPT_HMAC_SHA256_ALG_HANDLE,
 * Windows 10+) need no open/close and are safe to share between threads; BCryptHash is the
 * one-shot form. Random bytes come from the system-preferred RNG, no handle either. */
#include "common/crypto.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <windows.h>

#include <bcrypt.h>

/* mingw-w64's bcrypt.h has the pseudo-handles since v9; their values are fixed by the ABI. */
#ifndef BCRYPT_SHA256_ALG_HANDLE
#define BCRYPT_SHA256_ALG_HANDLE ((BCRYPT_ALG_HANDLE)0x00000041)
#endif
#ifndef BCRYPT_HMAC_SHA256_ALG_HANDLE
#define BCRYPT_HMAC_SHA256_ALG_HANDLE ((BCRYPT_ALG_HANDLE)0x000000b1)
#endif

/* One-shot hash or HMAC. A failure means a broken system: a wrong digest must never be used,
 * and the void API has no way to say so, hence abort(), as crypto-openssl.c does. */
static void bcrypt_hash(BCRYPT_ALG_HANDLE alg, const void *key, size_t keylen, const void *data,
                        size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
    static UCHAR empty[1];
    NTSTATUS st;

    if (keylen > ULONG_MAX || len > ULONG_MAX)
        abort();
    st = BCryptHash(alg, keylen ? (PUCHAR)key : (alg == BCRYPT_SHA256_ALG_HANDLE ? NULL : empty),
                    (ULONG)keylen, len ? (PUCHAR)data : empty, (ULONG)len, out, CRYPTO_SHA256_LEN);
    if (!BCRYPT_SUCCESS(st))
        abort();
}

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
    bcrypt_hash(BCRYPT_SHA256_ALG_HANDLE, NULL, 0, data, len, out);
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    bcrypt_hash(BCRYPT_HMAC_SHA256_ALG_HANDLE, key, keylen, data, len, out);
}

int crypto_random(void *out, size_t len)
{
    PUCHAR p = out;

    while (len > 0) {
        ULONG chunk = len > ULONG_MAX ? ULONG_MAX : (ULONG)len;

        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return -EIO;
        p += chunk;
        len -= chunk;
    }
    return 0;
}

void crypto_cleanse(void *p, size_t len)
{
    SecureZeroMemory(p, len);
}
