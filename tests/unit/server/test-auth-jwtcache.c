/* test-auth-jwtcache.c: a token verified once is answered from the cache with its time
 * claims checked again; a changed byte and a refused token are not answered from it
 * (server/auth-jwtcache.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/auth-jwt.h"
#include "server/auth-jwtcache.h"

#define NOW    INT64_C(1800000000)
#define TENANT "0190f3a2-7c1e-7d4b-9a3f-2b6c8d9e0f11"

static const struct jwt_params params = {
    .issuer = "orch", .audience = "orch-api", .ttl_s = 900, .leeway_s = 60};

static char dir[64], keyfile[128];
static struct jwt_ring *ring;
static struct jwt_cache *cache;

static void setup(void)
{
    char err[256] = "", kid[JWT_KEYGEN_KID_LEN];
    snprintf(dir, sizeof(dir), "/tmp/orch-test-jwtcache-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(jwt_keygen(dir, kid, sizeof(kid), err, sizeof(err)), 0, "%s", err);
    snprintf(keyfile, sizeof(keyfile), "%s/%s.pem", dir, kid);
    cr_assert_eq(jwt_ring_load(dir, &ring, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(jwt_cache_new(&cache), 0);
}

static void teardown(void)
{
    jwt_cache_free(cache);
    jwt_ring_free(ring);
    unlink(keyfile);
    rmdir(dir);
}

TestSuite(jwtcache, .init = setup, .fini = teardown);

static char *issue(const char *sub, int64_t at)
{
    struct jwt_claims in = {0};
    snprintf(in.sub, sizeof(in.sub), "%s", sub);
    snprintf(in.tenant, sizeof(in.tenant), "%s", TENANT);
    snprintf(in.role, sizeof(in.role), "admin");
    char *t = NULL;
    cr_assert_eq(jwt_issue(ring, &params, &in, at, &t, NULL), 0);
    return t;
}

static int verify(const char *t, int64_t now, struct jwt_claims *out, const char **why)
{
    return jwt_verify_cached(cache, ring, &params, t, strlen(t), now, out, why);
}

Test(jwtcache, a_token_verified_once_is_answered_again_with_the_same_claims)
{
    char *t = issue("key-1", NOW);
    struct jwt_claims a, b;
    const char *why = "unset";
    cr_assert_eq(verify(t, NOW, &a, &why), 0);
    cr_assert_null(why);
    cr_assert_eq(verify(t, NOW + 10, &b, &why), 0);
    cr_assert_str_eq(b.sub, "key-1");
    cr_assert_str_eq(b.tenant, TENANT);
    cr_assert_str_eq(b.role, "admin");
    cr_assert_str_eq(b.jti, a.jti);
    cr_assert_eq(b.exp, NOW + 900);
    free(t);
}

Test(jwtcache, a_cached_token_still_expires_and_is_not_valid_before_its_time)
{
    char *t = issue("key-1", NOW);
    struct jwt_claims c;
    const char *why = NULL;
    cr_assert_eq(verify(t, NOW, &c, &why), 0);
    /* exp + leeway: refused as jwt_verify() refuses it. */
    cr_assert_eq(verify(t, NOW + 900 + 60, &c, &why), -EACCES);
    cr_assert_str_eq(why, "expired");
    cr_assert_eq(verify(t, NOW + 900 + 59, &c, &why), 0);
    cr_assert_eq(verify(t, NOW - 61, &c, &why), -EACCES);
    cr_assert_str_eq(why, "not yet valid");
    free(t);
}

Test(jwtcache, one_changed_byte_is_not_the_cached_token)
{
    char *t = issue("key-1", NOW);
    struct jwt_claims c;
    const char *why = NULL;
    cr_assert_eq(verify(t, NOW, &c, &why), 0);
    /* The last character of the signature: another token, checked in full and refused. */
    size_t n = strlen(t);
    t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
    cr_assert_eq(verify(t, NOW, &c, &why), -EACCES);
    cr_assert_str_eq(why, "bad signature");
    cr_assert_eq(verify(t, NOW, &c, &why), -EACCES, "a refused token is not remembered");
    free(t);
}

Test(jwtcache, refusals_before_reading_and_no_cache_behave_as_jwt_verify)
{
    struct jwt_claims c;
    const char *why = NULL;
    cr_assert_eq(verify("", NOW, &c, &why), -EACCES);
    cr_assert_str_eq(why, "empty token");
    char big[JWT_TOKEN_MAX + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(verify(big, NOW, &c, &why), -EACCES);
    cr_assert_str_eq(why, "token too long");
    char *t = issue("key-1", NOW);
    cr_assert_eq(jwt_verify_cached(NULL, ring, &params, t, strlen(t), NOW, &c, &why), 0);
    cr_assert_str_eq(c.sub, "key-1");
    free(t);
}

Test(jwtcache, many_tokens_are_each_answered_with_their_own_claims)
{
    enum { N = 300 };
    char *tokens[N];
    for (int i = 0; i < N; i++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "key-%d", i);
        tokens[i] = issue(sub, NOW);
    }
    for (int pass = 0; pass < 2; pass++) { /* verified, then from the cache */
        for (int i = 0; i < N; i++) {
            struct jwt_claims c;
            const char *why = NULL;
            cr_assert_eq(verify(tokens[i], NOW, &c, &why), 0, "token %d: %s", i, why);
            char sub[32];
            snprintf(sub, sizeof(sub), "key-%d", i);
            cr_assert_str_eq(c.sub, sub);
        }
    }
    for (int i = 0; i < N; i++)
        free(tokens[i]);
}
