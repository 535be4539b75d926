/* Crashes and restarts, with two real agents: orchd killed with SIGKILL mid-run and
 * started again, and RabbitMQ stopped and started, and every job is accounted for.
 * Runs alone (it restarts the RabbitMQ node the other tests share). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

#define NAGENTS 2
#define NJOBS   12

static struct th_server srv;
static char *op, *tenant, *admin;
static struct {
    char dir[64];
    pid_t pid;
} agents[NAGENTS];

static void setup_with(const char *threads)
{
    const char *env[] = {"ORCHD_AGENT_LEASE=4s", "ORCHD_AGENT_ONLINE_WINDOW=4s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", threads, NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    for (int i = 0; i < NAGENTS; i++) {
        snprintf(agents[i].dir, sizeof(agents[i].dir), "/tmp/orch-restart-%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(agents[i].dir));
        char name[24], id[40];
        snprintf(name, sizeof(name), "agent-%d", i);
        th_agent_enrol(&srv, admin, agents[i].dir, name, NULL, "3", id);
        agents[i].pid = th_agent_start(agents[i].dir);
    }
}

static void setup(void)
{
    setup_with(NULL);
}

/* Eight event loops: enough requests at once to fill the database pool with connections. */
static void setup_wide(void)
{
    setup_with("ORCHD_HTTP_THREADS=8");
}

static void pg_start(void);
static bool pg_stopped; /* by the test: teardown starts it again whatever happened */

static void teardown(void)
{
    if (pg_stopped)
        pg_start();
    for (int i = 0; i < NAGENTS; i++) {
        th_agent_stop(agents[i].pid, SIGTERM);
        th_rm_rf(agents[i].dir);
    }
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

/* Each test names its .init: Criterion runs a suite's .init and then the test's own, so
 * the suite has none (two servers would be started). */
TestSuite(restart, .fini = teardown, .timeout = 240);

static void submit_n(char ids[][40], int n, const char *cmd)
{
    for (int i = 0; i < n; i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"command\":\"%s\",\"max_attempts\":5}", cmd);
        struct th_resp r;
        th_http(&srv, "POST", "/api/v1/jobs", admin, body, NULL, &r);
        cr_assert_eq(r.status, 201, "%s", r.body);
        snprintf(ids[i], 40, "%s", th_str_of(&r, "id"));
        th_resp_free(&r);
    }
}

/* Every job ends succeeded (bounded wait). */
static void all_succeed(char ids[][40], int n, int seconds)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    for (int i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/jobs/%s", ids[i]);
        for (;;) {
            struct th_resp r;
            th_http(&srv, "GET", path, admin, NULL, NULL, &r);
            if (r.status != 200) {
                /* Freed before asserting: a failed assertion does not come back. */
                char why[512];
                snprintf(why, sizeof(why), "%ld %s", r.status, r.body ? r.body : "");
                th_resp_free(&r);
                cr_assert_fail("job %s is gone: %s", ids[i], why);
            }
            const char *st = th_str_of(&r, "status");
            bool ok = strcmp(st, "succeeded") == 0;
            bool bad = !strcmp(st, "dead") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
            char copy[16];
            snprintf(copy, sizeof(copy), "%s", st);
            th_resp_free(&r);
            cr_assert(!bad, "job %s ended %s", ids[i], copy);
            if (ok)
                break;
            cr_assert(clock_mono_ns() < deadline, "job %s still %s", ids[i], copy);
            usleep(100000); /* polling the job's state, bounded */
        }
    }
}

/* Wait (bounded) until some job runs. */
static void some_running(void)
{
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (bool running = false; !running;) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/jobs?status=running&limit=1", admin, NULL, NULL, &r);
        running = json_array_size(json_object_get(r.json, "items")) > 0;
        th_resp_free(&r);
        cr_assert(clock_mono_ns() < deadline, "no job started");
        if (!running)
            usleep(50000);
    }
}

Test(restart, orchd_killed_mid_run_loses_no_job, .init = setup)
{
    char ids[NJOBS][40];
    submit_n(ids, NJOBS, "sleep 1; echo done");
    some_running(); /* then crash the server */
    th_server_restart(&srv, SIGKILL);
    all_succeed(ids, NJOBS, 150);
}

Test(restart, rabbitmq_down_and_back_loses_no_job, .init = setup)
{
    char before[4][40], during[4][40];
    submit_n(before, 4, "echo before");
    th_rabbitmqctl("stop_app");
    /* While RabbitMQ is down jobs are still accepted (PostgreSQL decides), and run: the
     * dispatcher's rounds and the gateway's checks do not need the bus. */
    submit_n(during, 4, "echo during");
    all_succeed(during, 4, 120);
    th_rabbitmqctl("start_app");
    th_rabbitmqctl("await_startup");
    all_succeed(before, 4, 120);
    char after[4][40];
    submit_n(after, 4, "echo after");
    all_succeed(after, 4, 120);
}

static void pg_stop(void)
{
    pg_stopped = true;
    th_pg_stop();
}

static void pg_start(void)
{
    th_pg_start();
    pg_stopped = false;
}

/* GET /readyz until it answers want (bounded). */
static void wait_ready(long want, int seconds)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    for (;;) {
        struct th_resp r;
        th_http(&srv, "GET", "/readyz", NULL, NULL, NULL, &r);
        long st = r.status;
        th_resp_free(&r);
        if (st == want)
            return;
        cr_assert(clock_mono_ns() < deadline, "/readyz still %ld, want %ld", st, want);
        usleep(50000); /* polling the condition, bounded */
    }
}

Test(restart, postgresql_down_and_back_loses_no_job, .init = setup)
{
    char ids[NJOBS][40];
    submit_n(ids, NJOBS, "sleep 1; echo done");
    some_running();
    /* The database goes away under running jobs: the server says it is not ready, the
     * agents keep their reports in the spool and retry. */
    pg_stop();
    wait_ready(503, 30);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/jobs?limit=1", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:unavailable");
    th_resp_free(&r);
    pg_start();
    wait_ready(200, 60);
    all_succeed(ids, NJOBS, 150);
    char after[4][40];
    submit_n(after, 4, "echo after");
    all_succeed(after, 4, 120);
}

/* GETs of the tenant list as the operator (not rate-limited, unlike a tenant's calls)
 * from a thread of its own; the statuses are checked by the test's thread (an assertion
 * must not fail on another). */
struct burst {
    const char *token;
    int n;
    long status[8];
};

static void *burst_main(void *arg)
{
    struct burst *b = arg;
    for (int i = 0; i < b->n; i++) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/tenants", b->token, NULL, NULL, &r);
        b->status[i] = r.status;
        th_resp_free(&r);
    }
    return NULL;
}

/* 16 threads x n requests; returns how many did not answer 200. */
static int burst(int n)
{
    struct burst b[16];
    pthread_t t[16];
    for (int i = 0; i < 16; i++) {
        b[i] = (struct burst){.token = op, .n = n};
        cr_assert_eq(pthread_create(&t[i], NULL, burst_main, &b[i]), 0);
    }
    int bad = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        for (int k = 0; k < n; k++) {
            if (b[i].status[k] != 200)
                cr_log_warn("a request answered %ld", b[i].status[k]);
            bad += b[i].status[k] != 200;
        }
    }
    return bad;
}

/* Once /readyz says ready, every request succeeds: the pooled connections the database
 * closed while they sat idle are not handed to the requests that come right after. */
Test(restart, every_request_succeeds_once_readyz_says_ready_after_postgresql_returns,
     .init = setup_wide)
{
    cr_assert_eq(burst(4), 0, "requests failed before anything happened");
    /* What a restart does to them, without the outage (during which the background
     * threads would find some of them dead first): every backend of orchd's ends. */
    PGconn *pg = th_pg_connect("postgres", "postgres");
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND usename = 'orch_app'",
             srv.db);
    long ended = th_pg_long(pg, sql);
    PQfinish(pg);
    cr_assert_gt(ended, 0);
    wait_ready(200, 60);
    int bad = burst(4);
    cr_assert_eq(bad, 0, "%d of 64 requests failed right after /readyz said ready", bad);
    /* And a real restart. */
    pg_stop();
    pg_start();
    wait_ready(200, 60);
    bad = burst(4);
    cr_assert_eq(bad, 0, "%d of 64 requests failed right after /readyz said ready", bad);
}

/* During an outage the log says once that the database is unreachable (not once per
 * retry), and agents and API clients are told so; once it is back, the log says so once. */
Test(restart, a_postgresql_outage_is_said_once_and_told_as_it_is, .init = setup)
{
    static char *cred; /* static: still reachable, not leaked, if an assertion ends the test */
    cred = th_agent_register(&srv, admin, "scripted");
    pg_stop();
    wait_ready(503, 30);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", cred, "{\"wait\":0}", NULL, &r);
    long st = r.status;
    char detail[256], type[64];
    snprintf(detail, sizeof(detail), "%s", th_str_of(&r, "detail"));
    snprintf(type, sizeof(type), "%s", th_str_of(&r, "type"));
    th_resp_free(&r);
    cr_assert_eq(st, 503);
    cr_assert_str_eq(type, "urn:orch:problem:unavailable");
    cr_assert(strstr(detail, "database is unreachable"), "agent told: %s", detail);
    th_http(&srv, "GET", "/api/v1/jobs?limit=1", admin, NULL, NULL, &r);
    st = r.status;
    snprintf(detail, sizeof(detail), "%s", th_str_of(&r, "detail"));
    th_resp_free(&r);
    cr_assert_eq(st, 503);
    cr_assert(strstr(detail, "database is unreachable"), "client told: %s", detail);
    /* Retries, from the requests here and from the dispatcher (every 250 ms) meanwhile:
     * at least 2 s of them. */
    uint64_t until = clock_mono_ns() + 2000000000ull;
    while (clock_mono_ns() < until) {
        wait_ready(503, 30);
        usleep(100000); /* pacing the retries, not waiting for anything */
    }
    int down = th_log_count(&srv, "op=store state=unreachable");
    int dispatch = th_log_count(&srv, "op=dispatch error=");
    int connect = th_log_count(&srv, "op=store.connect");
    pg_start();
    wait_ready(200, 60);
    free(cred);
    cr_assert_eq(down, 1, "%d 'database unreachable' lines, want 1", down);
    cr_assert_eq(dispatch, 0, "the dispatcher logged each failed round (%d lines)", dispatch);
    cr_assert_eq(connect, 0, "each failed connection was logged (%d lines)", connect);
    int up = th_log_count(&srv, "database reachable again");
    cr_assert_eq(up, 1, "%d 'database reachable again' lines, want 1", up);
    cr_assert_eq(th_log_count(&srv, "op=store state=unreachable"), 1);
}
