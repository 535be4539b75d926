/* The agent gateway under load on the real orchd: a full registry of held long-polls
 * answers 503 with Retry-After and a real agent waits that long before it asks again; the
 * background rounds (the lost-wake-up checker, the reaper) keep their pace however many
 * long-polls come and go. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char *holder, *other; /* agents' credentials, freed by teardown */

static void setup_with(const char *const *env)
{
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

/* One held long-poll fills this node (each one held is logged, at debug). */
static void setup_tiny(void)
{
    const char *env[] = {"ORCHD_GATEWAY_MAX_WAITERS=1", "ORCHD_LOG_LEVEL=debug", NULL};
    setup_with(env);
}

/* Every background round logged (debug). */
static void setup_debug(void)
{
    const char *env[] = {"ORCHD_LOG_LEVEL=debug", NULL};
    setup_with(env);
}

static void teardown(void)
{
    free(holder);
    free(other);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(gateway, .fini = teardown, .timeout = 120);

/* A long-poll on a thread of its own (no assertion runs there). */
struct hold {
    const char *cred;
    int wait_s;
    long status;
    pthread_t t;
};

static void *hold_main(void *arg)
{
    struct hold *h = arg;
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/agent/assignments?wait=%d", h->wait_s);
    struct th_resp r;
    th_http(&srv, "GET", path, h->cred, NULL, NULL, &r);
    h->status = r.status;
    th_resp_free(&r);
    return NULL;
}

/* Answer cred's held long-poll now: a new exchange of the agent supersedes it. */
static void release(const char *cred)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", cred, "{\"wait\":0}", NULL, &r);
    long st = r.status;
    th_resp_free(&r);
    cr_assert_eq(st, 200);
}

Test(gateway, a_full_registry_answers_503_with_retry_after_and_the_agent_waits, .init = setup_tiny)
{
    holder = th_agent_register(&srv, admin, "holder");
    other = th_agent_register(&srv, admin, "other");
    /* Held for the whole test (th_http() gives up after 30 s). */
    struct hold h = {.cred = holder, .wait_s = 28};
    cr_assert_eq(pthread_create(&h.t, NULL, hold_main, &h), 0);

    /* Once the holder's long-poll is held, any other one is refused at once. */
    uint64_t deadline = clock_mono_ns() + 10ull * 1000000000ull;
    while (th_log_count(&srv, "op=gateway.hold ") == 0 && clock_mono_ns() < deadline)
        usleep(20000); /* polling the log for the condition, bounded */
    long st = 0;
    char *ra = NULL, ctype[64] = "", type[64] = "";
    if (clock_mono_ns() < deadline) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", other, NULL, NULL, &r);
        st = r.status;
        if (st == 503) {
            ra = th_resp_header(&r, "Retry-After");
            snprintf(ctype, sizeof(ctype), "%s", r.content_type);
            snprintf(type, sizeof(type), "%s", th_str_of(&r, "type"));
        }
        th_resp_free(&r);
    }
    char retry_after[16] = "";
    snprintf(retry_after, sizeof(retry_after), "%s", ra ? ra : "");
    free(ra);
    if (st != 503) {
        release(holder);
        pthread_join(h.t, NULL);
        cr_assert_fail("a full registry answered %ld", st);
    }
    cr_assert_str_eq(retry_after, "5");
    cr_assert_str_eq(ctype, "application/problem+json");
    cr_assert_str_eq(type, "urn:orch:problem:unavailable");

    /* A real agent told so waits at least Retry-After before it asks again (it used to
     * come straight back: a hot loop). */
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/orch-gateway-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char id[40];
    th_agent_enrol(&srv, admin, dir, "real", NULL, "1", id);
    int before = th_log_count(&srv, "route=/api/v1/agent/sync status=503");
    pid_t agent = th_agent_start(dir);
    uint64_t first = 0, second = 0;
    deadline = clock_mono_ns() + 20ull * 1000000000ull;
    while (!second && clock_mono_ns() < deadline) {
        int n = th_log_count(&srv, "route=/api/v1/agent/sync status=503") - before;
        if (n >= 1 && !first)
            first = clock_mono_ns();
        if (n >= 2)
            second = clock_mono_ns();
        usleep(20000); /* polling the log for the condition, bounded */
    }
    int syncs = th_log_count(&srv, "route=/api/v1/agent/sync");
    th_agent_stop(agent, SIGTERM);
    release(holder);
    pthread_join(h.t, NULL);
    th_rm_rf(dir);
    cr_assert(first && second, "the agent was not refused twice (%d exchanges)", syncs);
    cr_assert_geq((second - first) / 1000000ull, 4900, "asked again after %llu ms",
                  (unsigned long long)((second - first) / 1000000ull));
    cr_assert_lt(syncs, 20, "%d exchanges: the agent did not back off", syncs);
}

/* Agents whose long-polls answer and re-register in a loop, on threads of their own. */
struct churn {
    char *cred;
    uint64_t until;
    int answers;
    pthread_t t;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    while (clock_mono_ns() < c->until) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", c->cred, NULL, NULL, &r);
        c->answers += r.status == 200;
        th_resp_free(&r);
    }
    return NULL;
}

Test(gateway, background_rounds_keep_their_pace_whatever_the_long_polls_do, .init = setup_debug)
{
    enum { N = 6 };
    struct churn c[N];
    for (int i = 0; i < N; i++) {
        char name[24];
        snprintf(name, sizeof(name), "churn-%d", i);
        c[i] = (struct churn){.cred = th_agent_register(&srv, admin, name)};
    }
    int checks0 = th_log_count(&srv, "op=gateway.check ");
    int reaps0 = th_log_count(&srv, "op=gateway round=flush");
    uint64_t t0 = clock_mono_ns();
    for (int i = 0; i < N; i++) {
        c[i].until = t0 + 4000000000ull;
        cr_assert_eq(pthread_create(&c[i].t, NULL, churn_main, &c[i]), 0);
    }
    int answers = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].t, NULL);
        answers += c[i].answers;
        free(c[i].cred);
    }
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    int checks = th_log_count(&srv, "op=gateway.check ") - checks0;
    int reaps = th_log_count(&srv, "op=gateway round=flush") - reaps0;
    cr_assert_geq(answers, 2 * N, "only %d long-polls answered", answers);
    /* Once a second (and one more at either end); they ran once per answer before. */
    cr_assert_leq(checks, (int)secs + 2, "%d checker rounds in %.1f s for %d answers", checks, secs,
                  answers);
    cr_assert_leq(reaps, (int)secs + 2, "%d liveness flushes in %.1f s for %d answers", reaps, secs,
                  answers);
}
