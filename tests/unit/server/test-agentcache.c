/* test-agentcache.c: the staleness bound, the drops by agent, tenant and all, the
 * generation that keeps a raced answer out, growth past the first table and the cap on
 * entries (server/agentcache.h). Times are given, not read from a clock. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "server/agentcache.h"

#define A1 "0190a000-0000-7000-8000-000000000001"
#define A2 "0190a000-0000-7000-8000-000000000002"
#define T1 "0190b000-0000-7000-8000-000000000001"
#define T2 "0190b000-0000-7000-8000-000000000002"
#define MS 1000000ull

static struct agentcache_entry entry(const char *agent, const char *tenant)
{
    struct agentcache_entry e = {.expires_s = 1900000000, .pool = false};
    snprintf(e.agent_id, sizeof(e.agent_id), "%s", agent);
    snprintf(e.tenant_id, sizeof(e.tenant_id), "%s", tenant);
    memset(e.hash_hex, 'a', 64);
    return e;
}

static void prefix(char *buf, size_t n, int i)
{
    snprintf(buf, n, "orch_ag_%012x", i);
}

Test(agentcache, an_entry_is_trusted_for_the_ttl_only)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(30000, 100, &c), 0);
    struct agentcache_entry e = entry(A1, T1), got;
    agentcache_put(c, "orch_ag_000000000001", &e, agentcache_gen(c), 1000 * MS);
    cr_assert(agentcache_get(c, "orch_ag_000000000001", 1000 * MS, &got));
    cr_assert_str_eq(got.agent_id, A1);
    cr_assert_str_eq(got.tenant_id, T1);
    cr_assert_eq(got.expires_s, 1900000000);
    cr_assert(agentcache_get(c, "orch_ag_000000000001", 30999 * MS, &got));
    cr_assert_not(agentcache_get(c, "orch_ag_000000000001", 31000 * MS, &got),
                  "an entry as old as the ttl is not used");
    cr_assert_not(agentcache_get(c, "orch_ag_000000000002", 1000 * MS, &got));
    agentcache_free(c);
}

Test(agentcache, a_ttl_of_zero_remembers_nothing)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(0, 100, &c), 0);
    struct agentcache_entry e = entry(A1, T1), got;
    agentcache_put(c, "orch_ag_000000000001", &e, agentcache_gen(c), 1000 * MS);
    cr_assert_not(agentcache_get(c, "orch_ag_000000000001", 1000 * MS, &got));
    cr_assert_eq(agentcache_count(c), 0);
    agentcache_free(c);
}

Test(agentcache, drops_by_agent_tenant_and_all)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(30000, 100, &c), 0);
    struct agentcache_entry a1 = entry(A1, T1), a2 = entry(A2, T2), got;
    /* A1 holds two credentials: its current one and one rotated out, in its grace period. */
    agentcache_put(c, "orch_ag_000000000001", &a1, agentcache_gen(c), MS);
    agentcache_put(c, "orch_ag_000000000011", &a1, agentcache_gen(c), MS);
    agentcache_put(c, "orch_ag_000000000002", &a2, agentcache_gen(c), MS);
    agentcache_drop_agent(c, A1);
    cr_assert_not(agentcache_get(c, "orch_ag_000000000001", MS, &got));
    cr_assert_not(agentcache_get(c, "orch_ag_000000000011", MS, &got));
    cr_assert(agentcache_get(c, "orch_ag_000000000002", MS, &got));

    agentcache_put(c, "orch_ag_000000000001", &a1, agentcache_gen(c), MS);
    agentcache_drop_tenant(c, T2);
    cr_assert(agentcache_get(c, "orch_ag_000000000001", MS, &got));
    cr_assert_not(agentcache_get(c, "orch_ag_000000000002", MS, &got));

    agentcache_put(c, "orch_ag_000000000002", &a2, agentcache_gen(c), MS);
    agentcache_drop_all(c);
    cr_assert_not(agentcache_get(c, "orch_ag_000000000001", MS, &got));
    cr_assert_not(agentcache_get(c, "orch_ag_000000000002", MS, &got));
    cr_assert_eq(agentcache_count(c), 0);
    agentcache_drop_agent(c, NULL);
    agentcache_drop_tenant(c, "");
    agentcache_free(c);
}

Test(agentcache, an_answer_fetched_before_a_drop_is_not_stored)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(30000, 100, &c), 0);
    struct agentcache_entry e = entry(A1, T1), got;
    uint64_t gen = agentcache_gen(c); /* the fetch starts */
    agentcache_drop_agent(c, A1);     /* the credential is revoked meanwhile */
    agentcache_put(c, "orch_ag_000000000001", &e, gen, MS);
    cr_assert_not(agentcache_get(c, "orch_ag_000000000001", MS, &got),
                  "the answer may predate the revocation");
    agentcache_put(c, "orch_ag_000000000001", &e, agentcache_gen(c), MS);
    cr_assert(agentcache_get(c, "orch_ag_000000000001", MS, &got));
    agentcache_free(c);
}

Test(agentcache, grows_past_its_first_table)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(30000, 1000000, &c), 0);
    char p[32];
    for (int i = 0; i < 50000; i++) {
        struct agentcache_entry e = entry(A1, T1);
        snprintf(e.agent_id, sizeof(e.agent_id), "0190a000-0000-7000-8000-%012x", i);
        prefix(p, sizeof(p), i);
        agentcache_put(c, p, &e, agentcache_gen(c), MS);
    }
    cr_assert_eq(agentcache_count(c), 50000);
    for (int i = 0; i < 50000; i++) {
        struct agentcache_entry got;
        prefix(p, sizeof(p), i);
        cr_assert(agentcache_get(c, p, MS, &got), "entry %d", i);
        char want[ID_STR_LEN];
        snprintf(want, sizeof(want), "0190a000-0000-7000-8000-%012x", i);
        cr_assert_str_eq(got.agent_id, want);
    }
    agentcache_free(c);
}

Test(agentcache, full_of_fresh_entries_it_stores_no_more_and_stale_ones_make_room)
{
    struct agentcache *c;
    cr_assert_eq(agentcache_new(30000, 10, &c), 0);
    char p[32];
    struct agentcache_entry e = entry(A1, T1), got;
    for (int i = 0; i < 10; i++) {
        prefix(p, sizeof(p), i);
        agentcache_put(c, p, &e, agentcache_gen(c), MS);
    }
    prefix(p, sizeof(p), 10);
    agentcache_put(c, p, &e, agentcache_gen(c), 2 * MS);
    cr_assert_not(agentcache_get(c, p, 2 * MS, &got));
    cr_assert_eq(agentcache_count(c), 10);
    /* An entry already held is refreshed in place. */
    prefix(p, sizeof(p), 3);
    agentcache_put(c, p, &e, agentcache_gen(c), 20000 * MS);
    /* Later, all but that one are stale: they are swept for the newcomer. */
    prefix(p, sizeof(p), 10);
    agentcache_put(c, p, &e, agentcache_gen(c), 40000 * MS);
    cr_assert(agentcache_get(c, p, 40000 * MS, &got));
    cr_assert_eq(agentcache_count(c), 2);
    agentcache_free(c);
}
