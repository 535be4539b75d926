/* Crashes and restarts, with two real agents: orchd killed with SIGKILL mid-run and
 * started again, and RabbitMQ stopped and started, and every job is accounted for.
 * Runs alone (it restarts the RabbitMQ node the other tests share). */
#include <criterion/criterion.h>
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

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_LEASE=4s", "ORCHD_AGENT_ONLINE_WINDOW=4s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    for (int i = 0; i < NAGENTS; i++) {
        snprintf(agents[i].dir, sizeof(agents[i].dir), "/tmp/orch-restart-%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(agents[i].dir));
        char name[16], id[40];
        snprintf(name, sizeof(name), "agent-%d", i);
        th_agent_enrol(&srv, admin, agents[i].dir, name, NULL, "3", id);
        agents[i].pid = th_agent_start(agents[i].dir);
    }
}

static void teardown(void)
{
    for (int i = 0; i < NAGENTS; i++) {
        th_agent_stop(agents[i].pid, SIGTERM);
        th_rm_rf(agents[i].dir);
    }
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(restart, .init = setup, .fini = teardown, .timeout = 240);

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
            cr_assert_eq(r.status, 200, "job %s is gone", ids[i]);
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

Test(restart, orchd_killed_mid_run_loses_no_job)
{
    char ids[NJOBS][40];
    submit_n(ids, NJOBS, "sleep 1; echo done");
    some_running(); /* then crash the server */
    th_server_restart(&srv, SIGKILL);
    all_succeed(ids, NJOBS, 150);
}

static void rabbitmqctl(const char *what)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "runuser -u rabbitmq -- sh -c \". '%s/rabbitmq/env.sh'; "
             "/usr/lib/rabbitmq/bin/rabbitmqctl -q %s\" >/dev/null 2>&1",
             th_env("ORCH_STATE"), what);
    cr_assert_eq(system(cmd), 0, "rabbitmqctl %s failed", what);
}

Test(restart, rabbitmq_down_and_back_loses_no_job)
{
    char before[4][40], during[4][40];
    submit_n(before, 4, "echo before");
    rabbitmqctl("stop_app");
    /* While RabbitMQ is down jobs are still accepted (PostgreSQL decides), and run: the
     * dispatcher's rounds and the gateway's checks do not need the bus. */
    submit_n(during, 4, "echo during");
    all_succeed(during, 4, 120);
    rabbitmqctl("start_app");
    rabbitmqctl("await_startup");
    all_succeed(before, 4, 120);
    char after[4][40];
    submit_n(after, 4, "echo after");
    all_succeed(after, 4, 120);
}

static void pg_ctl(const char *what)
{
    char cmd[1024];
    const char *state = th_env("ORCH_STATE");
    snprintf(cmd, sizeof(cmd),
             "runuser -u postgres -- \"$(cat '%s/pg.bindir')/pg_ctl\" -D '%s/pg' -l "
             "'%s/postgres.log' -w -t 60 %s >/dev/null 2>&1",
             state, state, state, what);
    cr_assert_eq(system(cmd), 0, "pg_ctl %s failed", what);
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

Test(restart, postgresql_down_and_back_loses_no_job)
{
    char ids[NJOBS][40];
    submit_n(ids, NJOBS, "sleep 1; echo done");
    some_running();
    /* The database goes away under running jobs: the server says it is not ready, the
     * agents keep their reports in the spool and retry. */
    pg_ctl("stop -m fast");
    wait_ready(503, 30);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/jobs?limit=1", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:unavailable");
    th_resp_free(&r);
    char start[512];
    snprintf(start, sizeof(start),
             "start -o \"-p %s -k %s -c listen_addresses=127.0.0.1 -c max_connections=200\"",
             th_env("ORCH_PG_PORT"), th_env("ORCH_PG_HOST"));
    pg_ctl(start); /* as tools/lib.sh started it */
    wait_ready(200, 60);
    all_succeed(ids, NJOBS, 150);
    char after[4][40];
    submit_n(after, 4, "echo after");
    all_succeed(after, 4, 120);
}
