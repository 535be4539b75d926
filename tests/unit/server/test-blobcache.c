/* Tests for server/blobcache.c: hits, least-recently-used eviction by bytes, blobs too
 * large to keep, and references that outlive eviction. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/blobcache.h"

Test(blobcache, keeps_and_evicts_by_bytes)
{
    struct blobcache *c = NULL;
    cr_assert_eq(blobcache_new(1000, &c), 0);
    char data[250];
    memset(data, 'x', sizeof(data));
    struct blob *a = blobcache_put(c, "t/a", data, 250);
    struct blob *b = blobcache_put(c, "t/b", data, 250);
    struct blob *d = blobcache_put(c, "t/c", data, 250);
    cr_assert(a && b && d);
    struct blob *hit = blobcache_get(c, "t/a"); /* a is now the most recent */
    cr_assert_eq(hit, a);
    cr_assert_eq(blob_len(hit), 250);
    cr_assert_eq(memcmp(blob_data(hit), data, 250), 0);
    blob_unref(hit);
    struct blob *e = blobcache_put(c, "t/d", data, 250);
    struct blob *f = blobcache_put(c, "t/e", data, 250); /* 1250 > 1000: b goes */
    cr_assert_null(blobcache_get(c, "t/b"));
    hit = blobcache_get(c, "t/a");
    cr_assert_not_null(hit);
    blob_unref(hit);
    /* b's holder still reads it after its eviction. */
    cr_assert_eq(memcmp(blob_data(b), data, 250), 0);
    /* Another tenant's key is another entry. */
    cr_assert_null(blobcache_get(c, "u/a"));
    blob_unref(a);
    blob_unref(b);
    blob_unref(d);
    blob_unref(e);
    blob_unref(f);
    blobcache_free(c);
}

Test(blobcache, a_blob_over_a_quarter_is_served_not_kept)
{
    struct blobcache *c = NULL;
    cr_assert_eq(blobcache_new(1000, &c), 0);
    char data[300] = {0};
    struct blob *big = blobcache_put(c, "t/big", data, sizeof(data));
    cr_assert_not_null(big);
    cr_assert_eq(blob_len(big), sizeof(data));
    cr_assert_null(blobcache_get(c, "t/big"));
    blob_unref(big);
    blobcache_free(c);

    cr_assert_eq(blobcache_new(0, &c), 0); /* a cache that keeps nothing */
    struct blob *x = blobcache_put(c, "t/x", data, 10);
    cr_assert_not_null(x);
    cr_assert_null(blobcache_get(c, "t/x"));
    blob_unref(x);
    blobcache_free(c);
}
