/* bench-placement: the placement engine's own speed, no database, no network.
 *
 * 100 tenants (weights 1..4), half the agents their own, half one shared pool; 100,000
 * queued jobs over 4 requirement sets and 8 packages. Each round plans up to 500 proposals
 * and accepts them all (timed), then every agent used reports its slots free again (not
 * timed: the dispatcher's refresh). A second scenario puts 50,000 jobs no agent matches at
 * the head. Prints a table; asserts nothing. Run: meson test -C build --benchmark. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "server/placement.h"

#define NTENANTS 100
#define NJOBS    100000
#define BATCH    500

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_id(char out[ID_STR_LEN], int kind, int n)
{
    snprintf(out, ID_STR_LEN, "%08x-0000-7000-8000-%012x", kind, n);
}

static const char *const reqs[] = {"{}", "{\"os\":\"linux\"}", "{\"arch\":\"x86_64\"}",
                                   "{\"os\":\"linux\",\"zone\":\"a\"}"};

static void set_agent(struct placement *pl, int i, int active)
{
    char id[ID_STR_LEN], tenant[ID_STR_LEN], pkg[PLACEMENT_DIGEST_LEN];
    make_id(id, 1, i);
    make_id(tenant, 3, i % NTENANTS);
    snprintf(pkg, sizeof(pkg), "%064x", i % 8);
    const char *pkgs[] = {pkg};
    static json_t *labels;
    if (!labels)
        labels = json_pack("{s:s}", "zone", "a");
    struct placement_agent a = {
        .id = id,
        .tenant_id = i % 2 ? tenant : NULL,
        .pool_id = i % 2 ? NULL : "00000000-0000-7000-8000-0000000000b1",
        .labels = labels,
        .os = "linux",
        .arch = "x86_64",
        .memory_free_bytes = -1,
        .disk_free_bytes = -1,
        .cpu_percent = (double)(i % 100),
        .slots = 4,
        .active = active,
        .packages = pkgs,
        .npackages = 1,
        .online = true,
    };
    placement_agent_set(pl, &a);
}

static void run(int nagents, bool backlog)
{
    struct placement_config cfg = {.aging_ms = 60000};
    struct placement *pl = NULL;
    if (placement_new(&cfg, &pl) < 0)
        exit(1);
    const char *tiers[] = {"standard"};
    placement_pool_set(pl, "00000000-0000-7000-8000-0000000000b1", tiers, 1, NULL, 0);
    for (int t = 0; t < NTENANTS; t++) {
        char id[ID_STR_LEN];
        make_id(id, 3, t);
        placement_tenant_set(pl, id, "standard", 1 + t % 4, 1000000, 0);
    }
    for (int i = 0; i < nagents; i++)
        set_agent(pl, i, 0);
    json_t *rj[4], *unmatched = json_pack("{s:s}", "os", "plan9");
    for (int i = 0; i < 4; i++)
        rj[i] = json_loads(reqs[i], 0, NULL);
    srand(7);
    double t0 = now_s();
    for (int n = 0; n < NJOBS; n++) {
        char id[ID_STR_LEN], tenant[ID_STR_LEN], pkg[PLACEMENT_DIGEST_LEN];
        make_id(id, 2, n);
        bool bad = backlog && n < NJOBS / 2;
        make_id(tenant, 3, bad ? 0 : rand() % NTENANTS);
        snprintf(pkg, sizeof(pkg), "%064x", rand() % 8);
        struct placement_job j = {
            .id = id,
            .tenant_id = tenant,
            .priority = rand() % 5,
            .created_ms = INT64_C(1800000000000) + n,
            .not_before_ms = 0,
            .requirements = bad ? unmatched : rj[rand() % 4],
            .package_digest = pkg,
        };
        placement_job_add(pl, &j);
    }
    double load_s = now_s() - t0;
    struct placement_proposal *out = calloc(BATCH, sizeof(*out));
    int *used = calloc((size_t)nagents, sizeof(*used));
    double plan_s = 0;
    long placed = 0, plans = 0;
    int want = backlog ? NJOBS / 2 : NJOBS;
    while (placed < want) {
        double a = now_s();
        size_t n = placement_plan(pl, INT64_C(1800000100000), out, BATCH);
        for (size_t i = 0; i < n; i++)
            placement_accepted(pl, out[i].job_id);
        plan_s += now_s() - a;
        plans++;
        if (n == 0)
            break;
        placed += (long)n;
        int nused = 0;
        for (size_t i = 0; i < n; i++) {
            int ag = (int)strtol(out[i].agent_id + 24, NULL, 16);
            if (!used[ag]++)
                nused++;
        }
        for (int i = 0; i < nagents; i++) {
            if (used[i])
                set_agent(pl, i, 0);
            used[i] = 0;
        }
        (void)nused;
    }
    struct placement_stats st;
    placement_stats(pl, &st);
    printf("| %6d | %7d | %-8s | %6zu | %7.0f | %8ld | %8.0f | %10.0f | %7.2f |\n", nagents, NJOBS,
           backlog ? "backlog" : "mixed", st.shapes, NJOBS / load_s, placed, plans / plan_s,
           placed / plan_s, plan_s * 1e9 / (double)(placed ? placed : 1) / 1000);
    free(out);
    free(used);
    for (int i = 0; i < 4; i++)
        json_decref(rj[i]);
    json_decref(unmatched);
    placement_free(pl);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("placement engine: %d tenants, %d queued jobs, plans of up to %d\n\n", NTENANTS, NJOBS,
           BATCH);
    printf("| agents | jobs    | scenario | shapes | adds/s  | placed   | plans/s  | "
           "placements/s | us/placement |\n");
    printf("|--------|---------|----------|--------|---------|----------|----------|"
           "------------|---------|\n");
    run(1000, false);
    run(10000, false);
    run(1000, true);
    run(10000, true);
    return 0;
}
