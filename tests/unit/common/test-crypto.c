/* Tests for common/crypto.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/crypto.h"

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    hex_encode(d, n, out);
}

Test(crypto, sha256_vectors)
{
    char hex[CRYPTO_SHA256_HEX_LEN];

    crypto_sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    crypto_sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    crypto_sha256_hex(NULL, 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    crypto_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(crypto, sha256_raw_matches_hex)
{
    uint8_t md[CRYPTO_SHA256_LEN];
    char a[CRYPTO_SHA256_HEX_LEN], b[CRYPTO_SHA256_HEX_LEN];

    crypto_sha256("orch", 4, md);
    to_hex(md, sizeof(md), a);
    crypto_sha256_hex("orch", 4, b);
    cr_assert_str_eq(a, b);
}

Test(crypto, hmac_rfc4231_case1)
{
    uint8_t key[20], mac[CRYPTO_SHA256_LEN];
    char hex[CRYPTO_SHA256_HEX_LEN];

    memset(key, 0x0b, sizeof(key));
    crypto_hmac_sha256(key, sizeof(key), "Hi There", 8, mac);
    to_hex(mac, sizeof(mac), hex);
    cr_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

Test(crypto, hmac_rfc4231_case2)
{
    uint8_t mac[CRYPTO_SHA256_LEN];
    char hex[CRYPTO_SHA256_HEX_LEN];

    crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    to_hex(mac, sizeof(mac), hex);
    cr_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

Test(crypto, hmac_rfc4231_case6_long_key)
{
    uint8_t key[131], mac[CRYPTO_SHA256_LEN];
    char hex[CRYPTO_SHA256_HEX_LEN];
    const char *data = "Test Using Larger Than Block-Size Key - Hash Key First";

    memset(key, 0xaa, sizeof(key));
    crypto_hmac_sha256(key, sizeof(key), data, strlen(data), mac);
    to_hex(mac, sizeof(mac), hex);
    cr_assert_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

Test(crypto, hmac_empty_key_and_data)
{
    uint8_t mac[CRYPTO_SHA256_LEN];
    char hex[CRYPTO_SHA256_HEX_LEN];

    crypto_hmac_sha256(NULL, 0, NULL, 0, mac);
    to_hex(mac, sizeof(mac), hex);
    cr_assert_str_eq(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

Test(crypto, random_fills_and_differs)
{
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};

    cr_assert_eq(crypto_random(a, sizeof(a)), 0);
    cr_assert_eq(crypto_random(b, sizeof(b)), 0);
    cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_neq(memcmp(a, zero, sizeof(a)), 0);
    cr_assert_eq(crypto_random(a, 0), 0);
}

Test(crypto, token_format)
{
    char *t = NULL;
    uint8_t raw[64];

    cr_assert_eq(crypto_token_new("orch_ak", 32, &t), 0);
    cr_assert_not_null(t);
    cr_assert_eq(strncmp(t, "orch_ak_", 8), 0);
    cr_assert_eq(strlen(t), 8 + base64url_encoded_len(32));
    cr_assert_eq(strspn(t + 8, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                 strlen(t + 8));
    cr_assert_eq(base64url_decode(t + 8, strlen(t + 8), raw, sizeof(raw)), 32);
    free(t);
}

Test(crypto, token_unique)
{
    char *a = NULL, *b = NULL;

    cr_assert_eq(crypto_token_new("x", 16, &a), 0);
    cr_assert_eq(crypto_token_new("x", 16, &b), 0);
    cr_assert_str_neq(a, b);
    free(a);
    free(b);
}

Test(crypto, token_bounds)
{
    char *t = (char *)"untouched";

    cr_assert_eq(crypto_token_new("p", 15, &t), -EINVAL);
    cr_assert_eq(crypto_token_new("p", 65, &t), -EINVAL);
    cr_assert_eq(crypto_token_new(NULL, 32, &t), -EINVAL);
    cr_assert_eq(crypto_token_new("", 32, &t), -EINVAL);
    cr_assert_str_eq(t, "untouched");
    cr_assert_eq(crypto_token_new("p", 64, &t), 0);
    cr_assert_eq(strlen(t), 2 + base64url_encoded_len(64));
    free(t);
}

Test(crypto, equal_results)
{
    cr_assert(crypto_equal("abcd", "abcd", 4));
    cr_assert_not(crypto_equal("abcd", "abce", 4));
    cr_assert_not(crypto_equal("xbcd", "abcd", 4));
    cr_assert(crypto_equal("a", "b", 0));
}

Test(crypto, streq_results)
{
    cr_assert(crypto_streq("secret", "secret"));
    cr_assert(crypto_streq("", ""));
    cr_assert_not(crypto_streq("secret", "secreT"));
    cr_assert_not(crypto_streq("secret", "secret1"));
    cr_assert_not(crypto_streq("secret1", "secret"));
    cr_assert_not(crypto_streq("", "a"));
    cr_assert_not(crypto_streq(NULL, "a"));
    cr_assert_not(crypto_streq("a", NULL));
    cr_assert_not(crypto_streq(NULL, NULL), "a missing secret never matches");
}

struct b64_vec {
    const char *plain;
    const char *enc;
};

static const struct b64_vec rfc4648[] = {
    {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

Test(crypto, base64url_encode_rfc4648)
{
    char out[16];

    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        size_t n = strlen(rfc4648[i].plain);

        cr_assert_eq(base64url_encoded_len(n), strlen(rfc4648[i].enc));
        cr_assert_eq(base64url_encode(rfc4648[i].plain, n, out, sizeof(out)),
                     (int)strlen(rfc4648[i].enc));
        cr_assert_str_eq(out, rfc4648[i].enc);
    }
}

Test(crypto, base64url_decode_rfc4648)
{
    uint8_t out[16];

    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        size_t n = strlen(rfc4648[i].plain);

        cr_assert_eq(base64url_decode(rfc4648[i].enc, strlen(rfc4648[i].enc), out, sizeof(out)),
                     (int)n, "%s", rfc4648[i].enc);
        cr_assert_eq(memcmp(out, rfc4648[i].plain, n), 0);
    }
}

Test(crypto, base64url_url_alphabet)
{
    static const uint8_t data[] = {0xfb, 0xff, 0xbf};
    char out[8];
    uint8_t back[4];

    cr_assert_eq(base64url_encode(data, 2, out, sizeof(out)), 3);
    cr_assert_str_eq(out, "-_8");
    cr_assert_eq(base64url_encode(data, 3, out, sizeof(out)), 4);
    cr_assert_str_eq(out, "-_-_");
    cr_assert_eq(base64url_decode("-_8", 3, back, sizeof(back)), 2);
    cr_assert_eq(memcmp(back, data, 2), 0);
}

Test(crypto, base64url_padding_tolerated)
{
    uint8_t out[8];

    cr_assert_eq(base64url_decode("Zg==", 4, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 'f');
    cr_assert_eq(base64url_decode("Zm8=", 4, out, sizeof(out)), 2);
    cr_assert_eq(memcmp(out, "fo", 2), 0);
}

Test(crypto, base64url_decode_rejects_bad_input)
{
    uint8_t out[16];

    cr_assert_eq(base64url_decode("Zm9v+A", 6, out, sizeof(out)), -EINVAL, "'+' is not url");
    cr_assert_eq(base64url_decode("Zm9v/A", 6, out, sizeof(out)), -EINVAL, "'/' is not url");
    cr_assert_eq(base64url_decode("Zm 9v", 5, out, sizeof(out)), -EINVAL);
    cr_assert_eq(base64url_decode("Z", 1, out, sizeof(out)), -EINVAL, "impossible length");
    cr_assert_eq(base64url_decode("Zm9vY", 5, out, sizeof(out)), -EINVAL, "impossible length");
    cr_assert_eq(base64url_decode("Zg=", 3, out, sizeof(out)), -EINVAL, "short padding");
    cr_assert_eq(base64url_decode("Z===", 4, out, sizeof(out)), -EINVAL);
    cr_assert_eq(base64url_decode("Zg==Zg==", 8, out, sizeof(out)), -EINVAL, "inner padding");
    cr_assert_eq(base64url_decode("Zh", 2, out, sizeof(out)), -EINVAL, "non-zero pad bits");
    cr_assert_eq(base64url_decode("Zm9v\n", 5, out, sizeof(out)), -EINVAL);
}

Test(crypto, base64url_decode_honours_slen)
{
    uint8_t out[8];

    /* Only the first 4 characters are input; the rest of the string is ignored. */
    cr_assert_eq(base64url_decode("Zm9v!!!", 4, out, sizeof(out)), 3);
    cr_assert_eq(memcmp(out, "foo", 3), 0);
}

Test(crypto, base64url_enospc)
{
    char small[4];
    uint8_t two[2];

    cr_assert_eq(base64url_encode("foo", 3, small, sizeof(small)), -ENOSPC, "NUL needs room");
    cr_assert_eq(base64url_encode("fo", 2, small, sizeof(small)), 3);
    cr_assert_eq(base64url_decode("Zm9v", 4, two, sizeof(two)), -ENOSPC);
}

Test(crypto, base64url_round_trip_all_lengths)
{
    uint8_t data[70], back[70];
    char enc[128];

    cr_assert_eq(crypto_random(data, sizeof(data)), 0);
    for (size_t n = 0; n <= sizeof(data); n++) {
        int e = base64url_encode(data, n, enc, sizeof(enc));
        cr_assert_eq(e, (int)base64url_encoded_len(n));
        cr_assert_eq(base64url_decode(enc, (size_t)e, back, sizeof(back)), (int)n);
        cr_assert_eq(memcmp(back, data, n), 0);
    }
}

Test(crypto, hex_encode_lower)
{
    char out[9];

    hex_encode("\x01\xab\xff\x00", 4, out);
    cr_assert_str_eq(out, "01abff00");
    hex_encode("", 0, out);
    cr_assert_str_eq(out, "");
}

Test(crypto, base64_rfc4648_vectors)
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

        cr_assert_eq(base64_encode(vec[i][0], n, enc, sizeof(enc)), (int)strlen(vec[i][1]));
        cr_assert_str_eq(enc, vec[i][1]);
        cr_assert_eq(base64_decode(enc, strlen(enc), dec, sizeof(dec)), (int)n);
        cr_assert_eq(memcmp(dec, vec[i][0], n), 0);
    }
    cr_assert_eq(base64_encode("foo", 3, enc, 4), -ENOSPC, "NUL needs room");
    cr_assert_eq(base64_decode("Zm9v", 4, dec, 2), -ENOSPC);
}

/* proto/agent.c used OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock on the wire: the portable
 * code gives the same text, and the same bytes back, for every length and byte value. */
Test(crypto, base64_same_as_openssl)
{
    uint8_t data[300], back[300], evp_back[300 + 3];
    char enc[420];
    unsigned char evp[420];

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 3);
    cr_assert_eq(crypto_random(data + 256, 44), 0);
    for (size_t n = 0; n <= sizeof(data); n++) {
        int e = base64_encode(data, n, enc, sizeof(enc));
        int ev = EVP_EncodeBlock(evp, data, (int)n);

        cr_assert_eq(e, ev, "length %zu", n);
        cr_assert_eq(e, (int)base64_encoded_len(n));
        cr_assert_str_eq(enc, (const char *)evp, "length %zu", n);
        cr_assert_eq(base64_decode(enc, (size_t)e, back, sizeof(back)), (int)n);
        cr_assert_eq(memcmp(back, data, n), 0);
        if (n > 0) {
            int d = EVP_DecodeBlock(evp_back, (const unsigned char *)enc, e);
            int pad = (enc[e - 1] == '=') + (enc[e - 2] == '=');

            cr_assert_eq(d - pad, (int)n);
            cr_assert_eq(memcmp(evp_back, back, n), 0);
        }
    }
}

Test(crypto, base64_refuses_what_is_not_padded_base64)
{
    uint8_t out[16];

    cr_assert_eq(base64_decode("Zm9", 3, out, sizeof(out)), -EINVAL, "length not a multiple of 4");
    cr_assert_eq(base64_decode("Zm9v\n", 5, out, sizeof(out)), -EINVAL);
    cr_assert_eq(base64_decode("Zm-v", 4, out, sizeof(out)), -EINVAL, "base64url alphabet");
    cr_assert_eq(base64_decode("Z===", 4, out, sizeof(out)), -EINVAL, "three pads");
    cr_assert_eq(base64_decode("Zg==Zg==", 8, out, sizeof(out)), -EINVAL, "pad in the middle");
    cr_assert_eq(base64_decode("Zm 9", 4, out, sizeof(out)), -EINVAL, "space");
    /* Like EVP_DecodeBlock, unused trailing bits are not checked. */
    cr_assert_eq(base64_decode("Zh==", 4, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 'f');
}
