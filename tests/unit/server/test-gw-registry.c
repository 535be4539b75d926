/* test-gw-registry.c: the gateway's long-poll registry and heartbeat notes at scale.
 *
 * Not a pass/fail benchmark: it checks what each operation finds and prints a table of
 * the time per operation for 1,000 to 100,000 agents (the registry is looked up on every
 * wake-up and the notes on every heartbeat, both under the gateway's one lock). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/gateway-internal.h"

/* Agent ids as uuid7 makes them: ids made close together share their leading digits. */
static void agent_id(int i, char out[ID_STR_LEN])
{
    snprintf(out, ID_STR_LEN, "0192f0a1-7c3e-7000-8000-%012d", i);
}

static double ns_per(uint64_t t0, int n)
{
    return (double)(clock_mono_ns() - t0) / (n > 0 ? n : 1);
}

static void bench_registry(int n)
{
    struct gateway *gw = NULL;
    cr_assert_eq(gw_new(NULL, n, &gw), 0);
    struct waiter *ws = calloc((size_t)n, sizeof(*ws));
    cr_assert_not_null(ws);
    for (int i = 0; i < n; i++) {
        agent_id(i, ws[i].agent_id);
        ws[i].gw = gw;
    }
    pthread_mutex_lock(&gw->lock);
    uint64_t t0 = clock_mono_ns();
    for (int i = 0; i < n; i++)
        gw_registry_add_locked(gw, &ws[i]);
    double add = ns_per(t0, n);
    t0 = clock_mono_ns();
    int found = 0;
    for (int i = 0; i < n; i++)
        found +=
            gw_registry_find_locked(gw, ws[(i * 7919) % n].agent_id, NULL) == &ws[(i * 7919) % n];
    double wake = ns_per(t0, n);
    char absent[ID_STR_LEN];
    agent_id(n + 1, absent);
    cr_assert_null(gw_registry_find_locked(gw, absent, NULL));
    t0 = clock_mono_ns();
    int removed = 0;
    for (int i = 0; i < n; i++)
        removed += gw_registry_remove_locked(gw, &ws[(i * 7919) % n]);
    double rm = ns_per(t0, n);
    cr_assert_not(gw_registry_remove_locked(gw, &ws[0]), "removed twice");
    pthread_mutex_unlock(&gw->lock);
    cr_assert_eq(found, n);
    cr_assert_eq(removed, n);
    cr_assert_eq(gw->nwaiters, 0);
    printf("registry agents=%-7d register_ns=%-10.0f wake_ns=%-10.0f remove_ns=%.0f\n", n, add,
           wake, rm);
    free(ws);
    gw_free(gw);
}

static void bench_notes(int n)
{
    struct gateway *gw = NULL;
    cr_assert_eq(gw_new(NULL, 16, &gw), 0);
    char id[ID_STR_LEN];
    uint64_t t0 = clock_mono_ns();
    int first = 0;
    for (int i = 0; i < n; i++) {
        agent_id(i, id);
        first += gateway_note_heartbeat(gw, id, NULL);
    }
    double once = ns_per(t0, n);
    t0 = clock_mono_ns();
    int again = 0;
    for (int i = 0; i < n; i++) {
        agent_id((i * 7919) % n, id);
        again += gateway_note_heartbeat(gw, id, NULL);
    }
    double twice = ns_per(t0, n);
    int kept = n < GW_MAX_NOTES ? n : GW_MAX_NOTES;
    cr_assert_eq(first, n, "first heartbeats: %d of %d", first, n);
    cr_assert_eq(again, n - kept, "a known agent's heartbeat counted as first");
    cr_assert_eq(gw->nnotes, kept);
    printf("notes    agents=%-7d first_ns=%-13.0f again_ns=%.0f\n", n, once, twice);
    gw_free(gw);
}

/* Two requests of one agent racing on two loops may both be held for a moment: removing
 * one leaves the other findable, and a removed waiter is not removed again. */
Test(gw_registry, same_agent_twice)
{
    struct gateway *gw = NULL;
    cr_assert_eq(gw_new(NULL, 4, &gw), 0);
    struct waiter a = {.slot = -1}, b = {.slot = -1}, c = {.slot = -1};
    agent_id(1, a.agent_id);
    agent_id(1, b.agent_id);
    agent_id(2, c.agent_id);
    cr_assert_not(gw_registry_remove_locked(gw, &a), "never registered");
    gw_registry_add_locked(gw, &a);
    gw_registry_add_locked(gw, &c);
    gw_registry_add_locked(gw, &b);
    cr_assert(gw_registry_remove_locked(gw, &b));
    cr_assert_eq(gw_registry_find_locked(gw, a.agent_id, NULL), &a);
    cr_assert(gw_registry_remove_locked(gw, &a));
    cr_assert_not(gw_registry_remove_locked(gw, &a));
    cr_assert_null(gw_registry_find_locked(gw, a.agent_id, NULL));
    cr_assert_eq(gw_registry_find_locked(gw, c.agent_id, NULL), &c);
    gw_registry_clear_locked(gw);
    cr_assert_null(gw_registry_find_locked(gw, c.agent_id, NULL));
    cr_assert_not(gw_registry_remove_locked(gw, &c), "cleared");
    gw_free(gw);
}

Test(gw_registry, scale, .timeout = 600)
{
    int sizes[] = {1000, 10000, 100000};
    const char *only = getenv("GW_BENCH_MAX");
    long max = only ? strtol(only, NULL, 10) : 100000;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (sizes[i] <= max)
            bench_registry(sizes[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (sizes[i] <= max)
            bench_notes(sizes[i]);
    fflush(stdout);
}
