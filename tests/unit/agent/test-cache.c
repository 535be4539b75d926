/* Tests for agent/cache.c: verified stores, lookups, least-recently-used trimming, holds,
 * and what a reopened cache finds. Each test works in its own temporary directory. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/cache.h"
#include "common/crypto.h"

static char root[64];
static char dir[96];

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/test-cache-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/cache", root);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cache, .init = setup, .fini = teardown);

/* n bytes of fill, and their digest. */
static char *blob(char fill, size_t n, char sha[CRYPTO_SHA256_HEX_LEN])
{
    char *b = malloc(n);
    cr_assert_not_null(b);
    memset(b, fill, n);
    crypto_sha256_hex(b, n, sha);
    return b;
}

Test(cache, stores_verified_bytes_and_finds_them_again)
{
    struct cache *c = NULL;
    cr_assert_eq(cache_open(dir, 1 << 20, &c), 0);
    char sha[CRYPTO_SHA256_HEX_LEN], path[PATH_MAX];
    char *b = blob('a', 1000, sha);
    cr_assert_eq(cache_lookup(c, sha, path, sizeof(path)), -ENOENT);
    uint64_t g0 = cache_generation(c);
    cr_assert_eq(cache_store(c, sha, b, 1000), 0);
    cr_assert_neq(cache_generation(c), g0);
    cr_assert_eq(cache_lookup(c, sha, path, sizeof(path)), 0);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_size, 1000);
    cr_assert_eq(sb.st_mode & 0777, 0600);
    uint64_t gen = 0;
    json_t *list = cache_list(c, &gen);
    cr_assert_eq(json_array_size(list), 1);
    cr_assert_str_eq(json_string_value(json_array_get(list, 0)), sha);
    json_decref(list);
    /* Another digest than the bytes': refused, nothing kept. */
    char other[CRYPTO_SHA256_HEX_LEN];
    char *o = blob('b', 10, other);
    cr_assert_eq(cache_store(c, other, b, 1000), -EBADMSG);
    cr_assert_eq(cache_lookup(c, other, path, sizeof(path)), -ENOENT);
    cr_assert_eq(cache_lookup(c, "not-a-digest", path, sizeof(path)), -EINVAL);
    cache_close(c);

    /* Reopened: the archive is still there; a torn store's leftover is removed. */
    char part[256];
    snprintf(part, sizeof(part), "%s/%s.1234abcd.part", dir, other);
    FILE *f = fopen(part, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(cache_open(dir, 1 << 20, &c), 0);
    cr_assert_eq(cache_lookup(c, sha, path, sizeof(path)), 0);
    cr_assert_neq(access(part, F_OK), 0, "the leftover survived");
    int n = 0;
    cr_assert_eq(cache_dir_bytes(dir, &n), 1000);
    cr_assert_eq(n, 1);
    cache_close(c);
    free(o);
    free(b);
}

Test(cache, the_least_recently_used_go_beyond_the_cap)
{
    struct cache *c = NULL;
    cr_assert_eq(cache_open(dir, 2500, &c), 0);
    char s1[CRYPTO_SHA256_HEX_LEN], s2[CRYPTO_SHA256_HEX_LEN], s3[CRYPTO_SHA256_HEX_LEN];
    char path[PATH_MAX];
    char *b1 = blob('1', 1000, s1), *b2 = blob('2', 1000, s2), *b3 = blob('3', 1000, s3);
    cr_assert_eq(cache_store(c, s1, b1, 1000), 0);
    cr_assert_eq(cache_store(c, s2, b2, 1000), 0);
    cr_assert_eq(cache_lookup(c, s1, path, sizeof(path)), 0); /* 1 is now the newer */
    cr_assert_eq(cache_store(c, s3, b3, 1000), 0);            /* 3000 > 2500: 2 goes */
    cr_assert_eq(cache_lookup(c, s2, path, sizeof(path)), -ENOENT);
    cr_assert_eq(cache_lookup(c, s1, path, sizeof(path)), 0);
    cr_assert_eq(cache_lookup(c, s3, path, sizeof(path)), 0);
    cr_assert_eq(cache_dir_bytes(dir, NULL), 2000);

    /* While held, nothing goes; the next store after the release trims. */
    cache_hold(c);
    cr_assert_eq(cache_store(c, s2, b2, 1000), 0);
    cr_assert_eq(cache_dir_bytes(dir, NULL), 3000);
    cache_release(c);
    char s4[CRYPTO_SHA256_HEX_LEN];
    char *b4 = blob('4', 400, s4);
    cr_assert_eq(cache_store(c, s4, b4, 400), 0);
    cr_assert_leq(cache_dir_bytes(dir, NULL), 2500);
    cr_assert_eq(cache_lookup(c, s4, path, sizeof(path)), 0, "the newest went");
    cache_close(c);
    free(b1);
    free(b2);
    free(b3);
    free(b4);
}
