/* Tests for common/crypto-bcrypt.c (and crypto.c) on Windows: the same vectors as the
 * Linux tests, so BCrypt and OpenSSL are known to agree. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

static const char *hmac_hex(const void *key, size_t keylen, const void *data, size_t len)
{
    static char hex[CRYPTO_SHA256_HEX_LEN];
    uint8_t mac[CRYPTO_SHA256_LEN];

    crypto_hmac_sha256(key, keylen, data, len, mac);
    hex_encode(mac, sizeof(mac), hex);
    return hex;
}

WTEST(crypto, sha256_vectors)
{
    char hex[CRYPTO_SHA256_HEX_LEN];

    crypto_sha256_hex("abc", 3, hex);
    WT_ASSERT(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
              "%s", hex);
    crypto_sha256_hex(NULL, 0, hex);
    WT_ASSERT(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
              "%s", hex);
    crypto_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
    WT_ASSERT(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
              "%s", hex);
}

WTEST(crypto, hmac_rfc4231)
{
    uint8_t key[131];
    const char *h;

    memset(key, 0x0b, 20);
    h = hmac_hex(key, 20, "Hi There", 8);
    WT_ASSERT(!strcmp(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"), "%s",
              h);
    h = hmac_hex("Jefe", 4, "what do ya want for nothing?", 28);
    WT_ASSERT(!strcmp(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"), "%s",
              h);
    memset(key, 0xaa, sizeof(key));
    h = hmac_hex(key, sizeof(key), "Test Using Larger Than Block-Size Key - Hash Key First", 54);
    WT_ASSERT(!strcmp(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"), "%s",
              h);
    h = hmac_hex(NULL, 0, NULL, 0);
    WT_ASSERT(!strcmp(h, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"), "%s",
              h);
}

WTEST(crypto, random_and_tokens)
{
    uint8_t a[64] = {0}, b[64] = {0};
    char *t1 = NULL, *t2 = NULL;

    WT_ASSERT(crypto_random(a, sizeof(a)) == 0, "random");
    WT_ASSERT(crypto_random(b, sizeof(b)) == 0, "random");
    WT_ASSERT(memcmp(a, b, sizeof(a)) != 0, "two draws are equal");
    WT_ASSERT(crypto_token_new("orch_ak", 32, &t1) == 0, "token");
    WT_ASSERT(crypto_token_new("orch_ak", 32, &t2) == 0, "token");
    WT_ASSERT(!strncmp(t1, "orch_ak_", 8) && strlen(t1) == 8 + 43, "%s", t1);
    WT_ASSERT(!crypto_streq(t1, t2), "two tokens are equal");
    WT_ASSERT(crypto_streq(t1, t1), "a token differs from itself");
    free(t1);
    free(t2);
}

WTEST(crypto, base64_vectors)
{
    static const char *const vec[][2] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    char enc[16];
    uint8_t dec[16];

    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        size_t n = strlen(vec[i][0]);

        WT_ASSERT(base64_encode(vec[i][0], n, enc, sizeof(enc)) == (int)strlen(vec[i][1]), "%zu",
                  i);
        WT_ASSERT(!strcmp(enc, vec[i][1]), "%s", enc);
        WT_ASSERT(base64_decode(enc, strlen(enc), dec, sizeof(dec)) == (int)n, "%zu", i);
        WT_ASSERT(!memcmp(dec, vec[i][0], n), "%zu", i);
    }
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
