/* test-authcache.c: the staleness bound, drops, the generation that keeps a raced answer
 * out, and the counting of reserved blocks (server/authcache.h). Times are given, not
 * read from a clock. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "server/authcache.h"

#define K1 "0190a000-0000-7000-8000-000000000001"
#define K2 "0190a000-0000-7000-8000-000000000002"
#define T1 "0190b000-0000-7000-8000-000000000001"
#define MS 1000000ull

static struct authcache_entry entry(const char *tenant)
{
    struct authcache_entry e = {
        .key_ok = true, .active = true, .quota = 1000, .rate = 5, .burst = 20};
    snprintf(e.tenant_id, sizeof(e.tenant_id), "%s", tenant);
    return e;
}

Test(authcache, an_entry_is_trusted_for_the_ttl_only)
{
    struct authcache *c;
    cr_assert_eq(authcache_new(2000, 100, &c), 0);
    struct authcache_entry e = entry(T1), got;
    authcache_put(c, K1, &e, authcache_gen(c), 1000 * MS);
    cr_assert(authcache_get(c, K1, 1000 * MS, &got));
    cr_assert_str_eq(got.tenant_id, T1);
    cr_assert(authcache_get(c, K1, 2999 * MS, &got));
    cr_assert_not(authcache_get(c, K1, 3000 * MS, &got), "past the TTL");
    cr_assert_not(authcache_get(c, K2, 1000 * MS, &got));
    authcache_free(c);
}

Test(authcache, drops_and_a_raced_answer)
{
    struct authcache *c;
    cr_assert_eq(authcache_new(60000, 100, &c), 0);
    struct authcache_entry e = entry(T1), got;
    authcache_put(c, K1, &e, authcache_gen(c), MS);
    authcache_put(c, K2, &e, authcache_gen(c), MS);
    authcache_drop_key(c, K1);
    cr_assert_not(authcache_get(c, K1, MS, &got));
    cr_assert(authcache_get(c, K2, MS, &got));
    authcache_drop_tenant(c, T1);
    cr_assert_not(authcache_get(c, K2, MS, &got), "every key of the tenant goes");
    /* A fetch that started before a drop does not put its answer back. */
    uint64_t gen = authcache_gen(c);
    authcache_drop_key(c, K1);
    authcache_put(c, K1, &e, gen, MS);
    cr_assert_not(authcache_get(c, K1, MS, &got));
    authcache_put(c, K1, &e, authcache_gen(c), MS);
    authcache_drop_all(c);
    cr_assert_not(authcache_get(c, K1, MS, &got));
    authcache_free(c);
}

Test(authcache, a_ttl_of_zero_caches_nothing)
{
    struct authcache *c;
    cr_assert_eq(authcache_new(0, 100, &c), 0);
    struct authcache_entry e = entry(T1), got;
    authcache_put(c, K1, &e, authcache_gen(c), MS);
    cr_assert_not(authcache_get(c, K1, MS, &got));
    authcache_free(c);
}

static long drained;
static void drain_fn(void *arg, const char *tenant, int64_t day, long unused)
{
    (void)arg;
    cr_assert_str_eq(tenant, T1);
    cr_assert_eq(day, 20000);
    drained += unused;
}

Test(authcache, blocks_count_calls_and_mark_a_spent_quota)
{
    struct authcache *c;
    cr_assert_eq(authcache_new(2000, 100, &c), 0);
    long rem;
    cr_assert_eq(authcache_take(c, T1, 20000, MS, 10, &rem), AUTHCACHE_EMPTY);
    authcache_give(c, T1, 20000, 3, 3, MS); /* 3 reserved of 10, all by us */
    cr_assert_eq(authcache_left(c, T1, 20000), 3);
    cr_assert_eq(authcache_take(c, T1, 20000, MS, 10, &rem), AUTHCACHE_TAKEN);
    cr_assert_eq(rem, 9);
    cr_assert_eq(authcache_take(c, T1, 20000, MS, 10, &rem), AUTHCACHE_TAKEN);
    cr_assert_eq(authcache_left(c, T1, 20000), 1);
    /* The next day, yesterday's block is worth nothing. */
    cr_assert_eq(authcache_left(c, T1, 20001), 0);
    cr_assert_eq(authcache_take(c, T1, 20000, MS, 10, &rem), AUTHCACHE_TAKEN);
    cr_assert_eq(authcache_take(c, T1, 20000, MS, 10, &rem), AUTHCACHE_EMPTY);
    /* Spent: refused without asking again, for the TTL. */
    authcache_give(c, T1, 20000, 0, 10, 10 * MS);
    cr_assert_eq(authcache_take(c, T1, 20000, 10 * MS, 10, &rem), AUTHCACHE_SPENT);
    cr_assert_eq(authcache_take(c, T1, 20000, 2009 * MS, 10, &rem), AUTHCACHE_SPENT);
    cr_assert_eq(authcache_take(c, T1, 20000, 2010 * MS, 10, &rem), AUTHCACHE_EMPTY);
    /* A quota change drops the block and the mark. */
    authcache_give(c, T1, 20000, 0, 10, 3000 * MS);
    authcache_drop_tenant(c, T1);
    cr_assert_eq(authcache_take(c, T1, 20000, 3000 * MS, 10, &rem), AUTHCACHE_EMPTY);
    /* What is left is given back at shutdown, once. */
    authcache_give(c, T1, 20000, 7, 17, 4000 * MS);
    drained = 0;
    authcache_drain(c, drain_fn, NULL);
    cr_assert_eq(drained, 7);
    authcache_drain(c, drain_fn, NULL);
    cr_assert_eq(drained, 7);
    cr_assert_eq(authcache_left(c, T1, 20000), 0);
    authcache_free(c);
}
