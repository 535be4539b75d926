/* Tests for server/auth-jwt.c: key ring, issue, verify, and the attacks the wrapper exists
 * to stop. Attack tokens are crafted by hand here, independent of the code under test. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/crypto.h"
#include "common/id.h"
#include "server/auth-jwt.h"

#define NOW    INT64_C(1800000000)
#define TENANT "0190f3a2-7c1e-7d4b-9a3f-2b6c8d9e0f11"
#define JTI    "0190f3a2-7c1e-7d4b-9a3f-000000000001"

static const struct jwt_params params = {
    .issuer = "orch",
    .audience = "orch-api",
    .ttl_s = 900,
    .leeway_s = 60,
};

static char dir[64];
static char kid[JWT_KEYGEN_KID_LEN];
static struct jwt_ring *ring;
static EVP_PKEY *signer; /* the private key behind kid, read back from its file */

enum sig {
    SIG_ES256,
    SIG_RS256,
    SIG_HS256,
    SIG_EMPTY, /* "h.p." */
    SIG_OMIT,  /* "h.p" */
};

static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char p[512];

    if (!d)
        return;
    while ((de = readdir(d))) {
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_dir(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

static void key_path(char *out, size_t len, const char *d, const char *k)
{
    snprintf(out, len, "%s/%s.pem", d, k);
}

static EVP_PKEY *read_private(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *pkey;

    cr_assert_not_null(f, "open %s", path);
    pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(pkey);
    return pkey;
}

/* The public key PEM exactly as the module hands it to libjwt. */
static char *public_pem(EVP_PKEY *pkey, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *s;
    long n;

    cr_assert(PEM_write_bio_PUBKEY(b, pkey) == 1);
    n = BIO_get_mem_data(b, &data);
    s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return s;
}

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    cr_assert(fd >= 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static void write_key(const char *path, EVP_PKEY *pkey, bool sec1)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long n;

    if (sec1)
        cr_assert(PEM_write_bio_PrivateKey_traditional(b, pkey, NULL, NULL, 0, NULL, NULL) == 1);
    else
        cr_assert(PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL) == 1);
    n = BIO_get_mem_data(b, &data);
    write_file(path, data, (size_t)n, 0600);
    BIO_free(b);
}

static void setup(void)
{
    char err[256] = "", path[256];

    snprintf(dir, sizeof(dir), "/tmp/orch-test-jwt-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(jwt_keygen(dir, kid, sizeof(kid), err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(jwt_ring_load(dir, &ring, err, sizeof(err)), 0, "%s", err);
    key_path(path, sizeof(path), dir, kid);
    signer = read_private(path);
}

static void teardown(void)
{
    jwt_ring_free(ring);
    ring = NULL;
    EVP_PKEY_free(signer);
    signer = NULL;
    remove_dir(dir);
}

TestSuite(auth_jwt, .init = setup, .fini = teardown);

static char *b64(const void *data, size_t len)
{
    size_t n = base64url_encoded_len(len) + 1;
    char *s = malloc(n);

    cr_assert_not_null(s);
    cr_assert_geq(base64url_encode(data, len, s, n), 0);
    return s;
}

/* JWS ECDSA signatures are raw r||s, 32 bytes each (RFC 7518 §3.4), not OpenSSL's DER. */
static size_t sign(enum sig kind, EVP_PKEY *key, const void *secret, size_t secretlen,
                   const char *input, uint8_t *out)
{
    uint8_t der[600];
    size_t derlen = sizeof(der);
    EVP_MD_CTX *ctx;

    if (kind == SIG_HS256) {
        crypto_hmac_sha256(secret, secretlen, input, strlen(input), out);
        return CRYPTO_SHA256_LEN;
    }
    ctx = EVP_MD_CTX_new();
    cr_assert(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1);
    cr_assert(EVP_DigestSign(ctx, der, &derlen, (const uint8_t *)input, strlen(input)) == 1);
    EVP_MD_CTX_free(ctx);
    if (kind == SIG_RS256) {
        memcpy(out, der, derlen);
        return derlen;
    }
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    cr_assert_not_null(es);
    cr_assert_eq(BN_bn2binpad(ECDSA_SIG_get0_r(es), out, 32), 32);
    cr_assert_eq(BN_bn2binpad(ECDSA_SIG_get0_s(es), out + 32, 32), 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* "<b64 header>.<b64 payload>.<b64 signature>", malloc'd. */
static char *craft(const char *header, const char *payload, enum sig kind, EVP_PKEY *key,
                   const void *secret, size_t secretlen)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload)), *s = NULL;
    char *input, *tok;
    uint8_t sig[600];
    size_t siglen, n;

    n = strlen(h) + strlen(p) + 2;
    input = malloc(n);
    snprintf(input, n, "%s.%s", h, p);
    if (kind == SIG_ES256 || kind == SIG_RS256 || kind == SIG_HS256) {
        siglen = sign(kind, key, secret, secretlen, input, sig);
        s = b64(sig, siglen);
    }
    n += (s ? strlen(s) : 0) + 1;
    tok = malloc(n);
    if (kind == SIG_OMIT)
        snprintf(tok, n, "%s", input);
    else
        snprintf(tok, n, "%s.%s", input, s ? s : "");
    free(h);
    free(p);
    free(s);
    free(input);
    return tok;
}

static char *header_for(const char *alg, const char *k)
{
    char *h = NULL;

    cr_assert_gt(asprintf(&h, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, k), 0);
    return h;
}

static json_t *good_claims(void)
{
    json_t *c =
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s}", "iss", "orch", "aud", "orch-api",
                  "iat", (json_int_t)NOW, "nbf", (json_int_t)NOW, "exp", (json_int_t)(NOW + 900),
                  "sub", "ak_0190f3a2", "role", "admin", "tenant", TENANT, "jti", JTI);
    cr_assert_not_null(c);
    return c;
}

static char *good_payload(void)
{
    json_t *c = good_claims();
    char *s = json_dumps(c, JSON_COMPACT);

    cr_assert_not_null(s);
    json_decref(c);
    return s;
}

/* Sign claims (reference stolen) as a well-formed ES256 token by the ring's key. */
static char *token_with(json_t *claims)
{
    char *payload = json_dumps(claims, JSON_COMPACT), *h = header_for("ES256", kid), *tok;

    cr_assert_not_null(payload);
    tok = craft(h, payload, SIG_ES256, signer, NULL, 0);
    free(payload);
    free(h);
    json_decref(claims);
    return tok;
}

static char *token_set(const char *claim, json_t *value)
{
    json_t *c = good_claims();

    if (value)
        json_object_set_new(c, claim, value);
    else
        json_object_del(c, claim);
    return token_with(c);
}

static void expect_refused_n(const char *tok, size_t len, const char *why_expected)
{
    struct jwt_claims out, sentinel;
    const char *why = NULL;
    int r;

    memset(&out, 0xa5, sizeof(out));
    sentinel = out;
    r = jwt_verify(ring, &params, tok, len, NOW, &out, &why);
    cr_assert_eq(r, -EACCES, "expected refusal (%s), got %d", why_expected, r);
    cr_assert_not_null(why);
    cr_assert_str_eq(why, why_expected);
    cr_assert_eq(memcmp(&out, &sentinel, sizeof(out)), 0, "out written on failure");
}

static void expect_refused(char *tok, const char *why_expected)
{
    expect_refused_n(tok, strlen(tok), why_expected);
    free(tok);
}

static void expect_accepted(char *tok, struct jwt_claims *out)
{
    struct jwt_claims c;
    const char *why = "unset";
    int r = jwt_verify(ring, &params, tok, strlen(tok), NOW, out ? out : &c, &why);

    cr_assert_eq(r, 0, "refused: %s", why ? why : "(null)");
    cr_assert_null(why);
    free(tok);
}

static struct jwt_claims claims_for(const char *sub, const char *role, const char *tenant)
{
    struct jwt_claims c = {0};

    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    snprintf(c.tenant, sizeof(c.tenant), "%s", tenant);
    return c;
}

/* The header of a token, decoded. */
static json_t *header_of(const char *tok)
{
    uint8_t buf[1024];
    const char *dot = strchr(tok, '.');
    int n = base64url_decode(tok, (size_t)(dot - tok), buf, sizeof(buf));
    json_t *h;

    cr_assert_gt(n, 0);
    h = json_loadb((const char *)buf, (size_t)n, 0, NULL);
    cr_assert_not_null(h);
    return h;
}

Test(auth_jwt, issue_then_verify_round_trip)
{
    struct jwt_claims in = claims_for("ak_0190f3a2", "operator", TENANT), issued, got;
    char *tok = NULL;
    json_t *h;
    uint8_t id[16];

    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, &issued), 0);
    cr_assert_not_null(tok);
    cr_assert_str_eq(issued.sub, "ak_0190f3a2");
    cr_assert_str_eq(issued.role, "operator");
    cr_assert_str_eq(issued.tenant, TENANT);
    cr_assert_eq(issued.iat, NOW);
    cr_assert_eq(issued.nbf, NOW);
    cr_assert_eq(issued.exp, NOW + 900);
    cr_assert_eq(id_parse(issued.jti, id), 0);
    cr_assert_eq(id[6] >> 4, 7, "jti is a UUIDv7");

    h = header_of(tok);
    cr_assert_str_eq(json_string_value(json_object_get(h, "alg")), "ES256");
    cr_assert_str_eq(json_string_value(json_object_get(h, "kid")), kid);
    json_decref(h);

    expect_accepted(tok, &got);
    cr_assert_eq(memcmp(&got, &issued, sizeof(got)), 0);
}

Test(auth_jwt, platform_token_has_no_tenant)
{
    struct jwt_claims in = claims_for("op_1", "platform", ""), got;
    char *tok = NULL;

    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), 0);
    expect_accepted(tok, &got);
    cr_assert_str_eq(got.role, "platform");
    cr_assert_str_eq(got.tenant, "");
}

Test(auth_jwt, issued_token_is_standard_es256)
{
    struct jwt_claims in = claims_for("ak_1", "viewer", TENANT);
    char *tok = NULL, *pem;
    size_t pemlen;
    jwt_t *j = NULL;

    /* An independent ES256 verifier (libjwt on its own) accepts what we issue. */
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), 0);
    pem = public_pem(signer, &pemlen);
    cr_assert_eq(jwt_decode(&j, tok, (const unsigned char *)pem, (int)pemlen), 0);
    cr_assert_eq(jwt_get_alg(j), JWT_ALG_ES256);
    cr_assert_str_eq(jwt_get_grant(j, "aud"), "orch-api");
    cr_assert_str_eq(jwt_get_grant(j, "iss"), "orch");
    jwt_free(j);
    free(pem);
    free(tok);
}

Test(auth_jwt, issue_rejects_bad_claims_and_params)
{
    struct jwt_params bad = params;
    struct jwt_claims in;
    char *tok = (char *)"untouched";

    in = claims_for("op", "platform", TENANT);
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("ak", "admin", "");
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("ak", "root", TENANT);
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("", "admin", TENANT);
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("a\nb", "admin", TENANT);
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("ak", "admin", "not-a-uuid");
    cr_assert_eq(jwt_issue(ring, &params, &in, NOW, &tok, NULL), -EINVAL);
    in = claims_for("ak", "admin", TENANT);
    bad.ttl_s = 0;
    cr_assert_eq(jwt_issue(ring, &bad, &in, NOW, &tok, NULL), -EINVAL);
    bad.ttl_s = 86401;
    cr_assert_eq(jwt_issue(ring, &bad, &in, NOW, &tok, NULL), -EINVAL);
    bad = params;
    bad.leeway_s = 301;
    cr_assert_eq(jwt_issue(ring, &bad, &in, NOW, &tok, NULL), -EINVAL);
    cr_assert_str_eq(tok, "untouched");
}

Test(auth_jwt, keygen_makes_private_file_and_time_sortable_kid)
{
    char sub[128], path[256], k[JWT_KEYGEN_KID_LEN], small[8] = "same", err[256];
    struct stat st;

    cr_assert_eq(strlen(kid), 26);
    cr_assert_eq(kid[0], 'k');
    cr_assert_eq(kid[9], 'T');
    cr_assert_eq(kid[16], 'Z');
    cr_assert_eq(kid[17], '-');
    cr_assert_eq(strspn(kid + 1, "0123456789"), 8);
    cr_assert_eq(strspn(kid + 18, "0123456789abcdef"), 8);
    cr_assert_str_eq(jwt_ring_signing_kid(ring), kid);
    cr_assert_eq(jwt_ring_size(ring), 1);

    key_path(path, sizeof(path), dir, kid);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);

    /* A missing directory is created private. */
    snprintf(sub, sizeof(sub), "%s/keys", dir);
    cr_assert_eq(jwt_keygen(sub, k, sizeof(k), err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(stat(sub, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    cr_assert_eq(jwt_keygen(sub, small, sizeof(small), err, sizeof(err)), -ENOSPC);
    cr_assert_str_eq(small, "same");
}

Test(auth_jwt, load_refuses_key_readable_by_others)
{
    struct jwt_ring *r2 = NULL;
    char path[256], err[512] = "";

    key_path(path, sizeof(path), dir, kid);
    cr_assert_eq(chmod(path, 0640), 0);
    cr_assert_eq(jwt_ring_load(dir, &r2, err, sizeof(err)), -EPERM);
    cr_assert_null(r2);
    cr_assert_not_null(strstr(err, path), "error names the file: %s", err);
    cr_assert_not_null(strstr(err, "chmod 600"), "%s", err);
    cr_assert_eq(chmod(path, 0604), 0);
    cr_assert_eq(jwt_ring_load(dir, &r2, err, sizeof(err)), -EPERM);
}

Test(auth_jwt, load_errors_name_the_problem)
{
    struct jwt_ring *r2 = NULL;
    char empty[128], path[256], err[512] = "";
    EVP_PKEY *p384;

    snprintf(empty, sizeof(empty), "%s/empty", dir);
    cr_assert_eq(mkdir(empty, 0700), 0);
    cr_assert_eq(jwt_ring_load(empty, &r2, err, sizeof(err)), -ENOENT);
    cr_assert_not_null(strstr(err, empty));

    /* Other files are ignored. */
    snprintf(path, sizeof(path), "%s/README.txt", empty);
    write_file(path, "hi", 2, 0644);
    cr_assert_eq(jwt_ring_load(empty, &r2, err, sizeof(err)), -ENOENT);

    snprintf(path, sizeof(path), "%s/kbad.pem", empty);
    write_file(path, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", 58, 0600);
    cr_assert_eq(jwt_ring_load(empty, &r2, err, sizeof(err)), -EINVAL);
    cr_assert_not_null(strstr(err, "kbad.pem"), "%s", err);
    unlink(path);

    p384 = EVP_EC_gen("P-384");
    cr_assert_not_null(p384);
    snprintf(path, sizeof(path), "%s/kp384.pem", empty);
    write_key(path, p384, false);
    EVP_PKEY_free(p384);
    cr_assert_eq(jwt_ring_load(empty, &r2, err, sizeof(err)), -EINVAL);
    cr_assert_not_null(strstr(err, "kp384.pem"), "%s", err);
    cr_assert_not_null(strstr(err, "P-256"), "%s", err);
    unlink(path);

    snprintf(path, sizeof(path), "%s/bad kid.pem", empty);
    write_key(path, signer, false);
    cr_assert_eq(jwt_ring_load(empty, &r2, err, sizeof(err)), -EINVAL);
    cr_assert_not_null(strstr(err, "bad kid.pem"), "%s", err);
    cr_assert_null(r2);
}

Test(auth_jwt, load_accepts_sec1_and_pkcs8)
{
    struct jwt_ring *r2 = NULL;
    char d2[128], path[256], err[512] = "";
    struct jwt_claims in = claims_for("ak", "admin", TENANT);
    char *tok = NULL;
    const char *why = NULL;
    struct jwt_claims out;

    snprintf(d2, sizeof(d2), "%s/sec1", dir);
    cr_assert_eq(mkdir(d2, 0700), 0);
    snprintf(path, sizeof(path), "%s/%s.pem", d2, kid);
    write_key(path, signer, true);
    cr_assert_eq(jwt_ring_load(d2, &r2, err, sizeof(err)), 0, "%s", err);
    /* Same key as the PKCS#8 file: tokens are interchangeable. */
    cr_assert_eq(jwt_issue(r2, &params, &in, NOW, &tok, NULL), 0);
    cr_assert_eq(jwt_verify(ring, &params, tok, strlen(tok), NOW, &out, &why), 0, "%s", why);
    free(tok);
    jwt_ring_free(r2);
    jwt_ring_free(NULL);
}

Test(auth_jwt, rotation_keeps_old_tokens_valid)
{
    char old_kid[] = "k20000101T000000Z-00000000", from[256], to[256], err[256] = "";
    char newk[JWT_KEYGEN_KID_LEN];
    struct jwt_claims in = claims_for("ak", "admin", TENANT), got;
    struct jwt_ring *r1 = NULL, *r2 = NULL;
    char *old_tok = NULL, *new_tok = NULL;
    const char *why = NULL;
    json_t *h;

    /* Make the first key unambiguously older, whatever second the test runs in. */
    key_path(from, sizeof(from), dir, kid);
    key_path(to, sizeof(to), dir, old_kid);
    cr_assert_eq(rename(from, to), 0);
    cr_assert_eq(jwt_ring_load(dir, &r1, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(jwt_issue(r1, &params, &in, NOW, &old_tok, NULL), 0);

    cr_assert_eq(jwt_keygen(dir, newk, sizeof(newk), err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(jwt_ring_load(dir, &r2, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(jwt_ring_size(r2), 2);
    cr_assert_str_eq(jwt_ring_signing_kid(r2), newk);

    cr_assert_eq(jwt_verify(r2, &params, old_tok, strlen(old_tok), NOW, &got, &why), 0, "%s", why);
    cr_assert_eq(jwt_issue(r2, &params, &in, NOW, &new_tok, NULL), 0);
    h = header_of(new_tok);
    cr_assert_str_eq(json_string_value(json_object_get(h, "kid")), newk);
    json_decref(h);
    cr_assert_eq(jwt_verify(r2, &params, new_tok, strlen(new_tok), NOW, &got, &why), 0, "%s", why);
    /* A server still on the old ring does not know the new kid. */
    cr_assert_eq(jwt_verify(r1, &params, new_tok, strlen(new_tok), NOW, &got, &why), -EACCES);
    cr_assert_str_eq(why, "unknown kid");

    free(old_tok);
    free(new_tok);
    jwt_ring_free(r1);
    jwt_ring_free(r2);
}

Test(auth_jwt, alg_none_refused)
{
    char *h = NULL, *tok;
    jwt_t *j = NULL;

    cr_assert_gt(asprintf(&h, "{\"alg\":\"none\",\"kid\":\"%s\"}", kid), 0);
    tok = craft(h, "{\"iss\":\"orch\"}", SIG_EMPTY, NULL, NULL, 0);
    /* Bare libjwt without a key takes it: the attack is real. */
    cr_assert_eq(jwt_decode(&j, tok, NULL, 0), 0);
    jwt_free(j);
    expect_refused(tok, "algorithm not allowed");
    expect_refused(craft(h, "{\"iss\":\"orch\"}", SIG_OMIT, NULL, NULL, 0), "malformed token");
    free(h);
    h = header_for("None", kid);
    expect_refused(craft(h, "{}", SIG_EMPTY, NULL, NULL, 0), "algorithm not allowed");
    free(h);
    h = strdup("{\"kid\":\"x\"}");
    expect_refused(craft(h, "{}", SIG_EMPTY, NULL, NULL, 0), "algorithm not allowed");
    free(h);
}

Test(auth_jwt, hs256_with_public_key_as_secret_refused)
{
    size_t pemlen;
    char *pem = public_pem(signer, &pemlen), *h = header_for("HS256", kid), *payload, *tok;
    jwt_t *j = NULL;

    payload = good_payload();
    tok = craft(h, payload, SIG_HS256, NULL, pem, pemlen);
    /* libjwt given the verifier's public key accepts it as an HMAC secret: the attack is real. */
    cr_assert_eq(jwt_decode(&j, tok, (const unsigned char *)pem, (int)pemlen), 0);
    cr_assert_eq(jwt_get_alg(j), JWT_ALG_HS256);
    jwt_free(j);
    expect_refused(tok, "algorithm not allowed");
    free(payload);
    free(pem);
    free(h);
}

Test(auth_jwt, rs256_refused)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    char *h = header_for("RS256", kid), *payload = good_payload();

    cr_assert_not_null(rsa);
    expect_refused(craft(h, payload, SIG_RS256, rsa, NULL, 0), "algorithm not allowed");
    EVP_PKEY_free(rsa);
    free(h);
    free(payload);
}

Test(auth_jwt, es256_by_another_key_refused)
{
    EVP_PKEY *other = EVP_EC_gen("P-256");
    char *h = header_for("ES256", kid), *payload = good_payload();

    cr_assert_not_null(other);
    expect_refused(craft(h, payload, SIG_ES256, other, NULL, 0), "bad signature");
    EVP_PKEY_free(other);
    free(h);
    free(payload);
}

Test(auth_jwt, tampered_or_misencoded_signature_refused)
{
    char *tok = token_with(good_claims()), *dot, *evil, *p;
    size_t n = strlen(tok);
    json_t *c;

    /* Payload swapped under a valid signature. */
    dot = strrchr(tok, '.');
    c = good_claims();
    json_object_set_new(c, "role", json_string("platform"));
    json_object_del(c, "tenant");
    p = json_dumps(c, JSON_COMPACT);
    char *pb = b64(p, strlen(p)), *hdr = strndup(tok, (size_t)(strchr(tok, '.') - tok));
    cr_assert_gt(asprintf(&evil, "%s.%s%s", hdr, pb, dot), 0);
    expect_refused(evil, "bad signature");
    free(pb);
    free(hdr);
    free(p);
    json_decref(c);

    /* Signature truncated, extended, or emptied. */
    evil = strndup(tok, n - 2);
    expect_refused(evil, "bad signature");
    cr_assert_gt(asprintf(&evil, "%sAAAA", tok), 0);
    expect_refused(evil, "bad signature");
    evil = strndup(tok, (size_t)(dot - tok) + 1);
    expect_refused(evil, "bad signature");
    free(tok);
}

Test(auth_jwt, kid_problems_refused)
{
    char *payload = good_payload(), *h;

    h = header_for("ES256", "k20991231T235959Z-ffffffff");
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "unknown kid");
    free(h);
    h = header_for("ES256", "../../etc/passwd");
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "malformed kid");
    free(h);
    h = header_for("ES256", "");
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "malformed kid");
    free(h);
    expect_refused(
        craft("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload, SIG_ES256, signer, NULL, 0),
        "missing kid");
    expect_refused(craft("{\"alg\":\"ES256\",\"kid\":7}", payload, SIG_ES256, signer, NULL, 0),
                   "malformed kid");
    free(payload);
}

Test(auth_jwt, dangerous_and_unknown_headers_refused)
{
    static const struct {
        const char *field, *value, *why;
    } cases[] = {
        {"jku", "\"https://evil.example/jwks.json\"", "header 'jku' not allowed"},
        {"x5u", "\"https://evil.example/cert.pem\"", "header 'x5u' not allowed"},
        {"jwk", "{\"kty\":\"EC\",\"crv\":\"P-256\"}", "header 'jwk' not allowed"},
        {"x5c", "[\"MIIB\"]", "header 'x5c' not allowed"},
        {"crit", "[\"exp\"]", "header 'crit' not allowed"},
        {"zip", "\"DEF\"", "unexpected header field"},
    };
    char *payload = good_payload(), *h;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_gt(asprintf(&h, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"%s\":%s}", kid,
                              cases[i].field, cases[i].value),
                     0);
        expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), cases[i].why);
        free(h);
    }
    cr_assert_gt(asprintf(&h, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JOSE\"}", kid), 0);
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "header 'typ' must be \"JWT\"");
    free(h);
    /* typ is optional. */
    cr_assert_gt(asprintf(&h, "{\"kid\":\"%s\",\"alg\":\"ES256\"}", kid), 0);
    expect_accepted(craft(h, payload, SIG_ES256, signer, NULL, 0), NULL);
    free(h);
    free(payload);
}

Test(auth_jwt, malformed_headers_refused)
{
    char *payload = good_payload(), *h;

    expect_refused(craft("not json", payload, SIG_ES256, signer, NULL, 0), "malformed header");
    expect_refused(craft("[\"ES256\"]", payload, SIG_ES256, signer, NULL, 0),
                   "header is not a JSON object");
    expect_refused(craft("\"ES256\"", payload, SIG_ES256, signer, NULL, 0),
                   "header is not a JSON object");
    cr_assert_gt(asprintf(&h, "{\"alg\":\"none\",\"alg\":\"ES256\",\"kid\":\"%s\"}", kid), 0);
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "malformed header");
    free(h);
    cr_assert_gt(asprintf(&h, "{\"alg\":\"ES256\",\"kid\":\"%s\"} x", kid), 0);
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "malformed header");
    free(h);
    /* "ES256\u0000": jansson refuses NUL in strings, and alg is compared with its length. */
    cr_assert_gt(asprintf(&h, "{\"alg\":\"ES256\\u0000\",\"kid\":\"%s\"}", kid), 0);
    expect_refused(craft(h, payload, SIG_ES256, signer, NULL, 0), "malformed header");
    free(h);
    free(payload);
}

Test(auth_jwt, malformed_structure_refused)
{
    char *tok = token_with(good_claims()), *evil;
    const char *why = NULL;
    struct jwt_claims out;

    expect_refused_n("", 0, "empty token");
    expect_refused_n(NULL, 0, "empty token");
    expect_refused_n("..", 2, "malformed token");
    expect_refused_n("abc", 3, "malformed token");
    expect_refused_n("!!!!.eyJ9.sig", 13, "malformed token");
    expect_refused_n("eyJh bGc.e30.AAAA", 17, "malformed token");
    /* A header segment whose length no base64 encoding has. */
    expect_refused_n("eyJhb.e30.AAAA", 14, "malformed header");
    cr_assert_gt(asprintf(&evil, "%s.", tok), 0);
    expect_refused(evil, "malformed token");
    cr_assert_gt(asprintf(&evil, "%s.AAAA.BBBB", tok), 0);
    expect_refused(evil, "malformed token");
    cr_assert_gt(asprintf(&evil, "%s=", tok), 0);
    expect_refused(evil, "malformed token");
    /* A NUL inside the length the caller gave is not a terminator. */
    evil = strdup(tok);
    evil[10] = '\0';
    expect_refused_n(evil, strlen(tok), "malformed token");
    free(evil);
    /* The token need not be NUL-terminated: only len bytes are read. */
    evil = malloc(strlen(tok));
    memcpy(evil, tok, strlen(tok));
    cr_assert_eq(jwt_verify(ring, &params, evil, strlen(tok), NOW, &out, &why), 0, "%s", why);
    free(evil);
    free(tok);
}

Test(auth_jwt, length_cap_comes_first)
{
    size_t mb = 1024 * 1024, len = 0;
    char *big = malloc(mb), *payload, *h = NULL, *tok = NULL;
    json_t *c;

    memset(big, 'A', mb);
    expect_refused_n(big, mb, "token too long");
    expect_refused_n(big, JWT_TOKEN_MAX + 1, "token too long");

    /* A valid token of exactly JWT_TOKEN_MAX bytes passes, and the same one byte longer
     * does not even reach the signature check. Padding moves the length in steps of 1 or 2,
     * and base64url never has a length of 4n+1: header whitespace shifts it. */
    for (int sp = 0; sp < 3 && len != JWT_TOKEN_MAX; sp++) {
        free(h);
        cr_assert_gt(asprintf(&h, "{\"alg\":\"ES256\",%.*s\"kid\":\"%s\"}", sp, "  ", kid), 0);
        for (size_t pad = 2000; pad < 3200; pad++) {
            memset(big, 'x', pad);
            big[pad] = '\0';
            c = good_claims();
            json_object_set_new(c, "pad", json_string(big));
            payload = json_dumps(c, JSON_COMPACT);
            json_decref(c);
            free(tok);
            tok = craft(h, payload, SIG_ES256, signer, NULL, 0);
            free(payload);
            len = strlen(tok);
            if (len >= JWT_TOKEN_MAX)
                break;
        }
    }
    cr_assert_eq(len, JWT_TOKEN_MAX);
    expect_refused_n(tok, len + 1, "token too long");
    expect_accepted(tok, NULL);
    free(h);
    free(big);
}

Test(auth_jwt, time_claims_with_leeway)
{
    json_t *c;

    c = good_claims();
    json_object_set_new(c, "iat", json_integer(NOW - 1000));
    json_object_set_new(c, "nbf", json_integer(NOW - 1000));
    json_object_set_new(c, "exp", json_integer(NOW - 61));
    expect_refused(token_with(c), "expired");

    c = good_claims();
    json_object_set_new(c, "iat", json_integer(NOW - 1000));
    json_object_set_new(c, "nbf", json_integer(NOW - 1000));
    json_object_set_new(c, "exp", json_integer(NOW - 60));
    expect_refused(token_with(c), "expired");

    /* Within the leeway: accepted. */
    c = good_claims();
    json_object_set_new(c, "iat", json_integer(NOW - 1000));
    json_object_set_new(c, "nbf", json_integer(NOW - 1000));
    json_object_set_new(c, "exp", json_integer(NOW - 59));
    expect_accepted(token_with(c), NULL);

    expect_refused(token_set("nbf", json_integer(NOW + 61)), "not yet valid");
    expect_accepted(token_set("nbf", json_integer(NOW + 60)), NULL);
    expect_refused(token_set("iat", json_integer(NOW + 61)), "issued in the future");
    expect_accepted(token_set("iat", json_integer(NOW + 60)), NULL);
    expect_refused(token_set("exp", json_integer(NOW + 86401)), "lifetime too long");
    expect_refused(token_set("exp", json_integer(NOW)), "claim 'exp' must be after 'iat'");
    expect_refused(token_set("exp", json_integer(INT64_MAX)), "claim 'exp' out of range");
    expect_refused(token_set("nbf", json_integer(-1)), "claim 'nbf' out of range");
}

Test(auth_jwt, issuer_and_audience)
{
    struct jwt_claims got;

    expect_refused(token_set("iss", json_string("orch-evil")), "wrong issuer");
    expect_refused(token_set("iss", json_string("orc")), "wrong issuer");
    expect_refused(token_set("aud", json_string("orch-admin")), "wrong audience");
    expect_accepted(token_set("aud", json_pack("[s, s]", "other", "orch-api")), &got);
    cr_assert_str_eq(got.sub, "ak_0190f3a2");
    expect_refused(token_set("aud", json_pack("[s]", "other")), "wrong audience");
    expect_refused(token_set("aud", json_pack("[]")), "wrong audience");
    expect_refused(token_set("aud", json_pack("[s, i]", "orch-api", 1)),
                   "claim 'aud' must be a string or an array of strings");
    expect_refused(token_set("aud", json_integer(1)),
                   "claim 'aud' must be a string or an array of strings");
    expect_refused(token_set("aud", NULL), "missing claim 'aud'");
    expect_refused(token_set("iss", NULL), "missing claim 'iss'");
}

Test(auth_jwt, claim_types_enforced)
{
    char long_sub[JWT_SUB_MAX + 2];

    memset(long_sub, 's', sizeof(long_sub) - 1);
    long_sub[sizeof(long_sub) - 1] = '\0';

    expect_refused(token_set("exp", json_string("1800000900")), "claim 'exp' must be an integer");
    expect_refused(token_set("exp", json_real(1800000900.0)), "claim 'exp' must be an integer");
    expect_refused(token_set("nbf", json_true()), "claim 'nbf' must be an integer");
    expect_refused(token_set("iat", json_null()), "claim 'iat' must be an integer");
    expect_refused(token_set("exp", NULL), "missing claim 'exp'");
    expect_refused(token_set("iss", json_integer(1)), "claim 'iss' must be a string");
    expect_refused(token_set("tenant", json_integer(42)), "claim 'tenant' must be a UUID string");
    expect_refused(token_set("role", json_pack("[s]", "admin")), "claim 'role' must be a string");
    expect_refused(token_set("sub", json_string("")),
                   "claim 'sub' must be a string of 1 to 128 bytes");
    expect_refused(token_set("sub", json_string(long_sub)),
                   "claim 'sub' must be a string of 1 to 128 bytes");
    expect_refused(token_set("sub", json_string("ak\n1")),
                   "claim 'sub' must not hold control characters");
    /* jansson refuses "\u0000" in strings: a NUL never reaches the claim checks. */
    expect_refused(token_set("sub", json_stringn("ak\0x", 4)), "malformed payload");
    expect_refused(token_set("jti", json_string("1")), "claim 'jti' must be a UUID string");
    expect_refused(token_set("jti", NULL), "missing claim 'jti'");
    expect_refused(token_set("sub", NULL), "missing claim 'sub'");
}

Test(auth_jwt, role_and_tenant_rules)
{
    struct jwt_claims got;
    json_t *c;

    expect_refused(token_set("role", json_string("root")), "unknown role");
    expect_refused(token_set("role", json_string("Admin")), "unknown role");
    expect_refused(token_set("tenant", json_string("not-a-uuid")),
                   "claim 'tenant' must be a UUID string");
    expect_refused(token_set("tenant", json_stringn(TENANT "\0junk", 41)), "malformed payload");
    expect_refused(token_set("tenant", NULL), "missing claim 'tenant'");
    expect_refused(token_set("tenant", json_null()), "missing claim 'tenant'");

    expect_refused(token_set("role", json_string("platform")),
                   "platform role must not have a tenant");
    c = good_claims();
    json_object_set_new(c, "role", json_string("platform"));
    json_object_set_new(c, "tenant", json_null());
    expect_accepted(token_with(c), &got);
    cr_assert_str_eq(got.tenant, "");

    /* Upper-case UUIDs are returned in canonical lower case. */
    expect_accepted(token_set("tenant", json_string("0190F3A2-7C1E-7D4B-9A3F-2B6C8D9E0F11")), &got);
    cr_assert_str_eq(got.tenant, TENANT);
    cr_assert_str_eq(got.role, "admin");
    cr_assert_str_eq(got.jti, JTI);
}

Test(auth_jwt, payload_duplicates_and_non_objects_refused)
{
    char *h = header_for("ES256", kid), *p = NULL;

    /* libjwt would keep the last "role"; we refuse the ambiguity. */
    cr_assert_gt(asprintf(&p,
                          "{\"iss\":\"orch\",\"aud\":\"orch-api\",\"iat\":%lld,\"nbf\":%lld,"
                          "\"exp\":%lld,\"sub\":\"a\",\"role\":\"viewer\",\"tenant\":\"%s\","
                          "\"jti\":\"%s\",\"role\":\"admin\"}",
                          (long long)NOW, (long long)NOW, (long long)NOW + 900, TENANT, JTI),
                 0);
    expect_refused(craft(h, p, SIG_ES256, signer, NULL, 0), "malformed payload");
    free(p);
    expect_refused(craft(h, "[1,2]", SIG_ES256, signer, NULL, 0), "malformed payload");
    expect_refused(craft(h, "not json", SIG_ES256, signer, NULL, 0), "malformed payload");
    expect_refused(craft(h, "{}", SIG_ES256, signer, NULL, 0), "missing claim 'iss'");
    free(h);
}

Test(auth_jwt, bad_arguments)
{
    struct jwt_params bad = params;
    struct jwt_claims out;
    const char *why = NULL;
    char *tok = token_with(good_claims());

    cr_assert_eq(jwt_verify(NULL, &params, tok, strlen(tok), NOW, &out, &why), -EINVAL);
    cr_assert_str_eq(why, "invalid arguments");
    bad.leeway_s = -1;
    cr_assert_eq(jwt_verify(ring, &bad, tok, strlen(tok), NOW, &out, &why), -EINVAL);
    cr_assert_eq(jwt_verify(ring, &params, tok, strlen(tok), NOW, NULL, &why), -EINVAL);
    /* why is optional. */
    cr_assert_eq(jwt_verify(ring, &params, tok, strlen(tok), NOW, &out, NULL), 0);
    cr_assert_eq(jwt_verify(ring, &params, "x", 1, NOW, &out, NULL), -EACCES);
    cr_assert_eq(jwt_ring_size(NULL), 0);
    cr_assert_null(jwt_ring_signing_kid(NULL));
    free(tok);
}

static void *hammer(void *arg)
{
    struct jwt_claims in = claims_for("ak_t", "viewer", TENANT), got;
    const char *why;
    intptr_t bad = 0;

    for (int i = 0; i < 100; i++) {
        char *tok = NULL;

        if (jwt_issue(ring, &params, &in, NOW, &tok, NULL) != 0) {
            bad++;
            continue;
        }
        if (jwt_verify(ring, &params, tok, strlen(tok), NOW, &got, &why) != 0 ||
            strcmp(got.sub, "ak_t") != 0)
            bad++;
        free(tok);
    }
    return (void *)bad;
}

Test(auth_jwt, concurrent_issue_and_verify)
{
    pthread_t t[4];
    void *bad;

    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(pthread_join(t[i], &bad), 0);
        cr_assert_eq((intptr_t)bad, 0);
    }
}

Test(auth_jwt, ring_mac_is_checked_by_any_key_and_bound_to_its_label)
{
    uint8_t mac[JWT_RING_MAC_LEN];
    jwt_ring_mac(ring, "cursor", "page-7", 6, mac);
    cr_assert(jwt_ring_mac_check(ring, "cursor", "page-7", 6, mac));
    cr_assert(!jwt_ring_mac_check(ring, "cursor", "page-8", 6, mac), "another message");
    cr_assert(!jwt_ring_mac_check(ring, "other", "page-7", 6, mac), "another label");
    uint8_t bad[JWT_RING_MAC_LEN];
    memcpy(bad, mac, sizeof(bad));
    bad[0] ^= 1;
    cr_assert(!jwt_ring_mac_check(ring, "cursor", "page-7", 6, bad));

    /* After a rotation (a newer key signs), a MAC made with the old key still checks, and
     * the new key makes a different one. */
    char k2[JWT_KEYGEN_KID_LEN], err[256];
    cr_assert_eq(jwt_keygen(dir, k2, sizeof(k2), err, sizeof(err)), 0, "%s", err);
    struct jwt_ring *r2 = NULL;
    cr_assert_eq(jwt_ring_load(dir, &r2, err, sizeof(err)), 0, "%s", err);
    cr_assert(jwt_ring_mac_check(r2, "cursor", "page-7", 6, mac));
    uint8_t mac2[JWT_RING_MAC_LEN];
    jwt_ring_mac(r2, "cursor", "page-7", 6, mac2);
    cr_assert(jwt_ring_mac_check(r2, "cursor", "page-7", 6, mac2));
    if (strcmp(jwt_ring_signing_kid(r2), kid) != 0)
        cr_assert(!jwt_ring_mac_check(ring, "cursor", "page-7", 6, mac2),
                  "a key the ring does not hold");
    jwt_ring_free(r2);
}
