/* Tests for server/placement.c: requirements, preference, priority and aging, quotas, queue
 * limits, fairness between tenants and on shared pools, and the report-back protocol. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/placement.h"

#define T1    "00000000-0000-7000-8000-000000000001"
#define T2    "00000000-0000-7000-8000-000000000002"
#define T3    "00000000-0000-7000-8000-000000000003"
#define Q1    "00000000-0000-7000-8000-0000000000a1"
#define POOL  "00000000-0000-7000-8000-0000000000b1"
#define NOW   INT64_C(1800000000000)
#define AGING INT64_C(60000)
#define PKG   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static struct placement *pl;
static int next_job;

static void setup(void)
{
    struct placement_config cfg = {.aging_ms = AGING};
    cr_assert_eq(placement_new(&cfg, &pl), 0);
    next_job = 0;
}

static void teardown(void)
{
    placement_free(pl);
    pl = NULL;
}

TestSuite(placement, .init = setup, .fini = teardown);

/* An id made of a prefix digit and a number: agents "1...", jobs "2...". */
static void make_id(char out[ID_STR_LEN], int kind, int n)
{
    snprintf(out, ID_STR_LEN, "%08x-0000-7000-8000-%012x", kind, n);
}

static void agent(int n, const char *tenant, const char *pool, const char *os, int slots,
                  int active, const char *pkg, int64_t mem)
{
    char id[ID_STR_LEN];
    make_id(id, 1, n);
    const char *pkgs[] = {pkg};
    struct placement_agent a = {
        .id = id,
        .tenant_id = tenant,
        .pool_id = pool,
        .os = os,
        .arch = "x86_64",
        .memory_free_bytes = mem,
        .disk_free_bytes = -1,
        .cpu_percent = -1,
        .slots = slots,
        .active = active,
        .packages = pkg ? pkgs : NULL,
        .npackages = pkg ? 1 : 0,
        .online = true,
    };
    cr_assert_eq(placement_agent_set(pl, &a), 0);
}

/* Add a job; returns its number. req: JSON text or NULL. */
static int job_full(const char *tenant, const char *queue, int priority, int64_t created,
                    const char *req, const char *pkg)
{
    char id[ID_STR_LEN];
    int n = ++next_job;
    make_id(id, 2, n);
    json_t *r = req ? json_loads(req, 0, NULL) : NULL;
    struct placement_job j = {
        .id = id,
        .tenant_id = tenant,
        .queue_id = queue,
        .priority = priority,
        .created_ms = created,
        .not_before_ms = created,
        .requirements = r,
        .package_digest = pkg,
    };
    cr_assert_eq(placement_job_add(pl, &j), 0);
    json_decref(r);
    return n;
}

static int job(const char *tenant, const char *req)
{
    return job_full(tenant, NULL, 0, NOW - 1000000 + next_job, req, NULL);
}

static int id_num(const char *id)
{
    return (int)strtol(id + 24, NULL, 16);
}

/* Plan and accept everything; returns the count. */
static size_t plan_accept(struct placement_proposal *out, size_t max)
{
    size_t n = placement_plan(pl, NOW, out, max);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(placement_accepted(pl, out[i].job_id), 0);
    return n;
}

Test(placement, requirement_os_never_on_other_os)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 0, NULL, -1);
    job(T1, "{\"os\":\"windows\"}");
    struct placement_proposal p[4];
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    agent(2, T1, NULL, "windows", 4, 0, NULL, -1);
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 1);
    cr_assert_eq(id_num(p[0].agent_id), 2);
    cr_assert_eq(placement_accepted(pl, p[0].job_id), 0);
}

Test(placement, labels_and_unsupported_values)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    char id[ID_STR_LEN];
    make_id(id, 1, 1);
    json_t *labels = json_pack("{s:s}", "gpu", "a100");
    struct placement_agent a = {.id = id,
                                .tenant_id = T1,
                                .labels = labels,
                                .os = "linux",
                                .memory_free_bytes = -1,
                                .disk_free_bytes = -1,
                                .cpu_percent = -1,
                                .slots = 8,
                                .online = true};
    cr_assert_eq(placement_agent_set(pl, &a), 0);
    json_decref(labels);
    job(T1, "{\"gpu\":\"h100\"}");
    job(T1, "{\"gpu\":1}");
    int ok = job(T1, "{\"gpu\":\"a100\",\"os\":\"linux\"}");
    struct placement_proposal p[8];
    cr_assert_eq(plan_accept(p, 8), 1);
    cr_assert_eq(id_num(p[0].job_id), ok);
}

Test(placement, minimum_free_memory_needs_a_report)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 0, NULL, -1);                         /* not reported */
    agent(2, T1, NULL, "linux", 4, 0, NULL, INT64_C(512) * 1024 * 1024); /* 512 MiB */
    job(T1, "{\"min_free_memory_mb\":1024}");
    struct placement_proposal p[4];
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    agent(2, T1, NULL, "linux", 4, 0, NULL, INT64_C(2048) * 1024 * 1024);
    cr_assert_eq(plan_accept(p, 4), 1);
    cr_assert_eq(id_num(p[0].agent_id), 2);
}

Test(placement, package_cache_wins_between_equal_agents)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 1, NULL, -1);
    agent(2, T1, NULL, "linux", 4, 1, PKG, -1);
    agent(3, T1, NULL, "linux", 4, 1, NULL, -1);
    job_full(T1, NULL, 0, NOW, NULL, PKG);
    struct placement_proposal p[4];
    cr_assert_eq(plan_accept(p, 4), 1);
    cr_assert_eq(id_num(p[0].agent_id), 2);
}

Test(placement, most_free_slots_then_spread)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 3, NULL, -1);
    agent(2, T1, NULL, "linux", 4, 0, NULL, -1);
    for (int i = 0; i < 4; i++)
        job(T1, NULL);
    struct placement_proposal p[8];
    cr_assert_eq(plan_accept(p, 8), 4);
    int on2 = 0;
    for (int i = 0; i < 4; i++)
        on2 += id_num(p[i].agent_id) == 2;
    /* 2 is emptier for its first three; then both have one slot of four. */
    cr_assert_eq(id_num(p[0].agent_id), 2);
    cr_assert(on2 >= 3, "on2=%d", on2);
}

Test(placement, own_agents_before_pool)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    const char *tiers[] = {"standard"};
    cr_assert_eq(placement_pool_set(pl, POOL, tiers, 1, NULL, 0), 0);
    agent(1, NULL, POOL, "linux", 8, 0, NULL, -1);
    agent(2, T1, NULL, "linux", 2, 1, NULL, -1);
    job(T1, NULL);
    job(T1, NULL);
    struct placement_proposal p[4];
    cr_assert_eq(plan_accept(p, 4), 2);
    cr_assert_eq(id_num(p[0].agent_id), 2);
    cr_assert_eq(id_num(p[1].agent_id), 1);
}

Test(placement, pool_admits_by_tier_or_list)
{
    placement_tenant_set(pl, T1, "free", 1, 100, 0);
    placement_tenant_set(pl, T2, "free", 1, 100, 0);
    placement_tenant_set(pl, T3, "enterprise", 1, 100, 0);
    const char *tiers[] = {"enterprise"};
    const char *tenants[] = {T2};
    cr_assert_eq(placement_pool_set(pl, POOL, tiers, 1, tenants, 1), 0);
    agent(1, NULL, POOL, "linux", 8, 0, NULL, -1);
    job(T1, NULL);
    job(T2, NULL);
    job(T3, NULL);
    struct placement_proposal p[4];
    cr_assert_eq(plan_accept(p, 4), 2);
    for (int i = 0; i < 2; i++)
        cr_assert_str_neq(p[i].tenant_id, T1);
}

Test(placement, priority_first_fifo_within)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 1, 0, NULL, -1);
    int a = job_full(T1, NULL, 0, NOW - 3000, NULL, NULL);
    int b = job_full(T1, NULL, 0, NOW - 2000, NULL, NULL);
    int c = job_full(T1, NULL, 5, NOW - 1000, NULL, NULL);
    int order[3] = {c, a, b};
    for (int i = 0; i < 3; i++) {
        struct placement_proposal p[1];
        cr_assert_eq(plan_accept(p, 1), 1);
        cr_assert_eq(id_num(p[0].job_id), order[i], "turn %d", i);
        agent(1, T1, NULL, "linux", 1, 0, NULL, -1); /* it finished */
    }
}

Test(placement, aging_lifts_low_priority)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 1, 0, NULL, -1);
    /* Waited 10 minutes at priority 0: beats a fresh job of priority 9, not one of 11. */
    int old = job_full(T1, NULL, 0, NOW - 10 * AGING, NULL, NULL);
    job_full(T1, NULL, 9, NOW, NULL, NULL);
    struct placement_proposal p[1];
    cr_assert_eq(plan_accept(p, 1), 1);
    cr_assert_eq(id_num(p[0].job_id), old);
    agent(1, T1, NULL, "linux", 1, 0, NULL, -1);
    int hi = job_full(T1, NULL, 11, NOW, NULL, NULL);
    cr_assert_eq(plan_accept(p, 1), 1);
    cr_assert_eq(id_num(p[0].job_id), hi);
}

Test(placement, not_before_waits)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 0, NULL, -1);
    char id[ID_STR_LEN];
    make_id(id, 2, 99);
    struct placement_job j = {
        .id = id, .tenant_id = T1, .created_ms = NOW, .not_before_ms = NOW + 5000};
    cr_assert_eq(placement_job_add(pl, &j), 0);
    cr_assert_eq(placement_job_add(pl, &j), -EEXIST);
    struct placement_proposal p[4];
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    cr_assert_eq(placement_plan(pl, NOW + 5000, p, 4), 1);
    cr_assert_eq(placement_accepted(pl, id), 0);
    cr_assert_not(placement_job_known(pl, id));
}

Test(placement, quota_exactly_and_resumes)
{
    placement_tenant_set(pl, T1, "free", 1, 5, 0);
    agent(1, T1, NULL, "linux", 100, 0, NULL, -1);
    for (int i = 0; i < 20; i++)
        job(T1, NULL);
    struct placement_proposal p[32];
    cr_assert_eq(plan_accept(p, 32), 5);
    cr_assert_eq(plan_accept(p, 32), 0);
    /* Two ended: the refresh says so, and exactly two more start. */
    placement_tenant_set(pl, T1, "free", 1, 5, 3);
    agent(1, T1, NULL, "linux", 100, 3, NULL, -1);
    cr_assert_eq(plan_accept(p, 32), 2);
}

Test(placement, queue_pause_and_limit)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    placement_queue_set(pl, Q1, true, 0, 0);
    agent(1, T1, NULL, "linux", 100, 0, NULL, -1);
    for (int i = 0; i < 10; i++)
        job_full(T1, Q1, 0, NOW - 100 + i, NULL, NULL);
    int free_job = job(T1, NULL);
    struct placement_proposal p[32];
    cr_assert_eq(plan_accept(p, 32), 1);
    cr_assert_eq(id_num(p[0].job_id), free_job);
    placement_queue_set(pl, Q1, false, 3, 0);
    cr_assert_eq(plan_accept(p, 32), 3);
    cr_assert_eq(plan_accept(p, 32), 0);
}

/* The head of the line: 1,000 jobs no agent matches and 1,000 over quota do not delay
 * another tenant, and cost no turn. */
Test(placement, backlog_does_not_delay_others)
{
    placement_tenant_set(pl, T1, "enterprise", 1000, 2, 2);
    placement_tenant_set(pl, T2, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 100, 2, NULL, -1);
    agent(2, T2, NULL, "linux", 4, 0, NULL, -1);
    for (int i = 0; i < 1000; i++)
        job_full(T1, NULL, 100, NOW - 100000 + i, "{\"os\":\"plan9\"}", NULL);
    for (int i = 0; i < 1000; i++)
        job_full(T1, NULL, 100, NOW - 100000 + i, NULL, NULL);
    int other = job_full(T2, NULL, -100, NOW, NULL, NULL);
    struct placement_proposal p[1];
    cr_assert_eq(plan_accept(p, 1), 1);
    cr_assert_eq(id_num(p[0].job_id), other);
}

/* Two tenants of weight 1 and 3 flooding one shared pool: placements 1:3 over 400, within
 * 2% of the 400 (the stride is exact but for the order of ties). */
Test(placement, weighted_fairness_on_pool)
{
    placement_tenant_set(pl, T1, "standard", 1, 10000, 0);
    placement_tenant_set(pl, T2, "standard", 3, 10000, 0);
    const char *tiers[] = {"standard"};
    placement_pool_set(pl, POOL, tiers, 1, NULL, 0);
    for (int i = 0; i < 4; i++)
        agent(i + 1, NULL, POOL, "linux", 5, 0, NULL, -1);
    for (int i = 0; i < 1000; i++) {
        job(T1, NULL);
        job(T2, NULL);
    }
    /* 20 slots: rounds of plan, accept, then every job of the round ends. */
    int got1 = 0, got2 = 0;
    struct placement_proposal p[20];
    while (got1 + got2 < 400) {
        size_t n = plan_accept(p, 20);
        cr_assert_eq(n, 20);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(p[i].tenant_id, T1) == 0)
                got1++;
            else
                got2++;
        }
        for (int i = 0; i < 4; i++)
            agent(i + 1, NULL, POOL, "linux", 5, 0, NULL, -1);
    }
    cr_log_info("weight 1: %d, weight 3: %d", got1, got2);
    cr_assert(got1 >= 92 && got1 <= 108, "got1=%d got2=%d", got1, got2);
}

Test(placement, refusals_correct_the_index)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 4, 0, NULL, -1);
    agent(2, T1, NULL, "linux", 2, 0, NULL, -1);
    int a = job(T1, NULL);
    job(T1, NULL);
    struct placement_proposal p[2];
    cr_assert_eq(placement_plan(pl, NOW, p, 1), 1);
    cr_assert_eq(id_num(p[0].agent_id), 1);
    cr_assert_eq(id_num(p[0].job_id), a);
    /* Another dispatcher filled agent 1: the job waits again and goes to agent 2. */
    cr_assert_eq(placement_refused(pl, p[0].job_id, PLACEMENT_AGENT_FULL), 0);
    cr_assert_eq(placement_plan(pl, NOW, p, 1), 1);
    cr_assert_eq(id_num(p[0].agent_id), 2);
    cr_assert_eq(id_num(p[0].job_id), a);
    /* The job was taken elsewhere: forgotten. */
    cr_assert_eq(placement_refused(pl, p[0].job_id, PLACEMENT_JOB_GONE), 0);
    cr_assert_not(placement_job_known(pl, p[0].job_id));
    cr_assert_eq(placement_refused(pl, p[0].job_id, PLACEMENT_JOB_GONE), -ENOENT);
    struct placement_stats st;
    placement_stats(pl, &st);
    cr_assert_eq(st.jobs, 1);
    cr_assert_eq(st.proposed, 0);
    cr_assert_eq(st.free_slots, 2);
}

Test(placement, agent_removed_and_tenant_unknown)
{
    agent(1, T1, NULL, "linux", 4, 0, NULL, -1);
    job(T1, NULL);
    struct placement_proposal p[2];
    /* A tenant not yet set has quota 0. */
    cr_assert_eq(placement_plan(pl, NOW, p, 2), 0);
    placement_tenant_set(pl, T1, "standard", 1, 10, 0);
    char id[ID_STR_LEN];
    make_id(id, 1, 1);
    cr_assert_eq(placement_agent_remove(pl, id), 0);
    cr_assert_eq(placement_agent_remove(pl, id), -ENOENT);
    cr_assert_eq(placement_plan(pl, NOW, p, 2), 0);
    agent(2, T1, NULL, "linux", 4, 0, NULL, -1);
    cr_assert_eq(plan_accept(p, 2), 1);
    cr_assert_eq(id_num(p[0].agent_id), 2);
}

Test(placement, bad_input)
{
    struct placement_job j = {.id = "x", .tenant_id = T1};
    json_t *arr = json_array();
    cr_assert_eq(placement_job_add(pl, &j), 0); /* any short id is an id */
    j.id = NULL;
    cr_assert_eq(placement_job_add(pl, &j), -EINVAL);
    j.id = "y";
    j.requirements = arr;
    cr_assert_eq(placement_job_add(pl, &j), -EINVAL);
    json_decref(arr);
    struct placement_agent a = {.id = "z", .slots = 1};
    cr_assert_eq(placement_agent_set(pl, &a), -EINVAL); /* neither tenant nor pool */
    cr_assert_eq(placement_tenant_set(pl, T1, "free", 0, 1, 0), -EINVAL);
}

/* Random operations: no agent ever holds more than its slots, no tenant more than its
 * quota, and every job is placed once. */
Test(placement, random_never_oversubscribes)
{
    srand(42);
    enum { NA = 30, NT = 5 };
    const char *tenants[NT] = {T1, T2, T3, "00000000-0000-7000-8000-000000000004",
                               "00000000-0000-7000-8000-000000000005"};
    const char *tiers[] = {"standard"};
    placement_pool_set(pl, POOL, tiers, 1, NULL, 0);
    int active[NA] = {0}, slots[NA], running[NT] = {0}, quota[NT];
    for (int t = 0; t < NT; t++) {
        quota[t] = 1 + rand() % 20;
        placement_tenant_set(pl, tenants[t], "standard", 1 + t, quota[t], 0);
    }
    for (int i = 0; i < NA; i++) {
        slots[i] = 1 + rand() % 4;
        agent(i + 1, i % 3 == 0 ? NULL : tenants[i % NT], i % 3 == 0 ? POOL : NULL,
              i % 2 ? "linux" : "windows", slots[i], 0, NULL, -1);
    }
    /* Who runs what, to end it later. */
    static int job_agent[5000], job_tenant[5000];
    int placed = 0;
    for (int i = 0; i < 3000; i++) {
        int t = rand() % NT;
        int n = job_full(tenants[t], NULL, rand() % 7 - 3, NOW - 100000 + i,
                         rand() % 2 ? "{\"os\":\"linux\"}" : NULL, NULL);
        job_tenant[n] = t;
    }
    for (int round = 0; round < 2000 && placed < 3000; round++) {
        struct placement_proposal p[16];
        /* Time passes, so the refused jobs' not_before does too. */
        size_t n = placement_plan(pl, NOW + round * 200, p, 1 + (size_t)(rand() % 16));
        for (size_t i = 0; i < n; i++) {
            int ag = id_num(p[i].agent_id) - 1, jn = id_num(p[i].job_id);
            if (rand() % 10 == 0) {
                cr_assert_eq(placement_refused(pl, p[i].job_id, PLACEMENT_JOB_LATER), 0);
                continue;
            }
            cr_assert_eq(placement_accepted(pl, p[i].job_id), 0);
            active[ag]++;
            running[job_tenant[jn]]++;
            job_agent[jn] = ag + 1;
            placed++;
            cr_assert(active[ag] <= slots[ag], "agent %d: %d > %d", ag, active[ag], slots[ag]);
            cr_assert(running[job_tenant[jn]] <= quota[job_tenant[jn]]);
        }
        /* Some jobs end; a refresh reports the new counts. */
        for (int jn = 1; jn <= next_job; jn++) {
            if (job_agent[jn] > 0 && rand() % 3 == 0) {
                active[job_agent[jn] - 1]--;
                running[job_tenant[jn]]--;
                job_agent[jn] = -1;
            }
        }
        for (int i = 0; i < NA; i++)
            agent(i + 1, i % 3 == 0 ? NULL : tenants[i % NT], i % 3 == 0 ? POOL : NULL,
                  i % 2 ? "linux" : "windows", slots[i], active[i], NULL, -1);
        for (int t = 0; t < NT; t++)
            placement_tenant_set(pl, tenants[t], "standard", 1 + t, quota[t], running[t]);
    }
    struct placement_stats st;
    placement_stats(pl, &st);
    cr_assert_eq(placed, 3000, "placed=%d waiting=%zu delayed=%zu free=%lld", placed, st.jobs,
                 st.delayed, (long long)st.free_slots);
}

Test(placement, agent_update_counts_and_online)
{
    placement_tenant_set(pl, T1, "standard", 1, 100, 0);
    agent(1, T1, NULL, "linux", 2, 2, NULL, -1);
    job(T1, NULL);
    struct placement_proposal p[4];
    char id[ID_STR_LEN];
    make_id(id, 1, 1);
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    cr_assert_eq(placement_agent_update(pl, id, 1, false, 0), 0);
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    cr_assert_eq(placement_agent_update(pl, id, 1, true, 0), 0);
    cr_assert_eq(plan_accept(p, 4), 1);
    /* Its facts changed: set it whole. */
    cr_assert_eq(placement_agent_update(pl, id, 0, true, 7), -ESTALE);
    make_id(id, 1, 9);
    cr_assert_eq(placement_agent_update(pl, id, 0, true, 0), -ENOENT);
}

Test(placement, pool_admission_follows_changes)
{
    placement_tenant_set(pl, T1, "free", 1, 100, 0);
    const char *tenants[] = {T1};
    cr_assert_eq(placement_pool_set(pl, POOL, NULL, 0, tenants, 1), 0);
    agent(1, NULL, POOL, "linux", 8, 0, NULL, -1);
    job(T1, NULL);
    job(T1, NULL);
    struct placement_proposal p[4];
    cr_assert_eq(plan_accept(p, 1), 1);
    /* Set again unchanged, then without the tenant: the second job waits. */
    cr_assert_eq(placement_pool_set(pl, POOL, NULL, 0, tenants, 1), 0);
    cr_assert_eq(placement_pool_set(pl, POOL, NULL, 0, NULL, 0), 0);
    cr_assert_eq(placement_plan(pl, NOW, p, 4), 0);
    const char *tiers[] = {"free"};
    cr_assert_eq(placement_pool_set(pl, POOL, tiers, 1, NULL, 0), 0);
    cr_assert_eq(plan_accept(p, 4), 1);
}
