/* End to end: the real orchd, PostgreSQL and RabbitMQ, and three real `orch-agent run`
 * daemons enrolled with the CLI. Jobs land only on matching agents, run, and their output
 * and results come back; cancel and timeout kill a whole process tree; an agent killed
 * with SIGKILL mid-job loses it to another agent and its stale epoch is refused. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/proxy.h"
#include "tests/integration/server.h"

#define NAGENTS 3

static struct th_server srv;
static char *op, *tenant, *admin;
static struct {
    char dir[64];
    pid_t pid;
    char id[40];
} agents[NAGENTS];

static void start_agent(int i)
{
    agents[i].pid = th_agent_start(agents[i].dir);
}

static void stop_agent(int i, int sig)
{
    th_agent_stop(agents[i].pid, sig);
    agents[i].pid = 0;
}

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_LEASE=4s", "ORCHD_AGENT_ONLINE_WINDOW=4s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    static const char *const labels[NAGENTS] = {"pool=red", "pool=blue", "pool=blue"};
    for (int i = 0; i < NAGENTS; i++) {
        snprintf(agents[i].dir, sizeof(agents[i].dir), "/tmp/orch-e2e-%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(agents[i].dir));
        char name[24];
        snprintf(name, sizeof(name), "agent-%d", i);
        th_agent_enrol(&srv, admin, agents[i].dir, name, labels[i], "2", agents[i].id);
        start_agent(i);
    }
}

static void teardown(void)
{
    for (int i = 0; i < NAGENTS; i++) {
        stop_agent(i, SIGTERM);
        th_rm_rf(agents[i].dir);
    }
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(e2e, .init = setup, .fini = teardown, .timeout = 180);

static char *submit(const char *body)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

static char *logs(const char *id, const char *stream)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=%s", id, stream);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *b = strdup(r.body ? r.body : "");
    th_resp_free(&r);
    return b;
}

static int agent_index(const char *agent_id)
{
    for (int i = 0; i < NAGENTS; i++)
        if (agent_id && strcmp(agents[i].id, agent_id) == 0)
            return i;
    return -1;
}

Test(e2e, jobs_land_on_matching_agents_and_report_output_and_results)
{
    char *red[3], *blue[3];
    for (int i = 0; i < 3; i++) {
        red[i] = submit("{\"command\":\"echo out-$ORCH_JOB_ID; echo err >&2; exit 0\","
                        "\"requirements\":{\"pool\":\"red\"}}");
        blue[i] = submit("{\"command\":\"echo \\\"$1-$2\\\"; exit 3\",\"args\":[\"a\",\"b\"],"
                         "\"requirements\":{\"pool\":\"blue\"},\"max_attempts\":1}");
    }
    for (int i = 0; i < 3; i++) {
        json_t *j = th_job_wait_final(&srv, admin, red[i], 60);
        cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
        cr_assert_eq(agent_index(json_string_value(json_object_get(j, "agent_id"))), 0,
                     "a red job ran off the red agent");
        json_decref(j);
        char *out = logs(red[i], "stdout");
        char want[80];
        snprintf(want, sizeof(want), "out-%s\n", red[i]);
        cr_assert_str_eq(out, want);
        free(out);
        char *err = logs(red[i], "stderr");
        cr_assert_str_eq(err, "err\n");
        free(err);

        j = th_job_wait_final(&srv, admin, blue[i], 60);
        cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "dead",
                         "exit 3 on its only attempt");
        cr_assert_eq(json_integer_value(json_object_get(j, "exit_code")), 3, "%s",
                     json_dumps(j, 0));
        int who = agent_index(json_string_value(json_object_get(j, "agent_id")));
        cr_assert(who == 1 || who == 2, "a blue job ran on agent %d", who);
        json_decref(j);
        out = logs(blue[i], "stdout");
        cr_assert_str_eq(out, "a-b\n");
        free(out);
        free(red[i]);
        free(blue[i]);
    }
}

/* A job returns JSON by writing it to $ORCH_JOB_RESULT; anything else there is reported
 * on its stderr and ignored. */
Test(e2e, a_job_returns_result_json)
{
    char *ok = submit(
        "{\"command\":\"printf '{\\\"ok\\\": true, \\\"n\\\": 3}' >\\\"$ORCH_JOB_RESULT\\\"\","
        "\"requirements\":{\"pool\":\"red\"}}");
    char *bad = submit("{\"command\":\"echo nope >\\\"$ORCH_JOB_RESULT\\\"\","
                       "\"requirements\":{\"pool\":\"red\"}}");
    json_t *j = th_job_wait_final(&srv, admin, ok, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s",
                     json_dumps(j, 0));
    json_t *res = json_object_get(j, "result");
    cr_assert(json_is_true(json_object_get(res, "ok")), "%s", json_dumps(j, 0));
    cr_assert_eq(json_integer_value(json_object_get(res, "n")), 3);
    json_decref(j);
    j = th_job_wait_final(&srv, admin, bad, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    cr_assert(json_is_null(json_object_get(j, "result")), "%s", json_dumps(j, 0));
    json_decref(j);
    char *err = logs(bad, "stderr");
    cr_assert(strstr(err, "is not JSON"), "%s", err);
    free(err);
    free(ok);
    free(bad);
}

/* The last size - 1 bytes of the agent's log in dir, for a failure message. */
static void log_tail(const char *dir, char *out, size_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/agent.log", dir);
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        if (end > (long)size - 1)
            fseek(f, end - ((long)size - 1), SEEK_SET);
        else
            rewind(f);
    }
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* Each agent talks to orchd over one connection: idle (a held long-poll), and while a job
 * streams output and ends (reports, results and the next poll share it). */
Test(e2e, each_agent_keeps_one_connection)
{
    char *id = submit("{\"command\":\"for i in $(seq 1 30); do echo $i; sleep 0.05; done\","
                      "\"requirements\":{\"pool\":\"red\"}}");
    int most[NAGENTS] = {0}, samples = 0;
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    uint64_t deadline = clock_mono_ns() + 60000000000ull;
    for (bool done = false; !done; samples++) {
        for (int i = 0; i < NAGENTS; i++) {
            char desc[256];
            int n = th_tcp_conns_desc(agents[i].pid, srv.port, desc, sizeof(desc));
            if (n > 1) {
                char tail[4096];
                log_tail(agents[i].dir, tail, sizeof(tail));
                cr_assert_fail("agent %d holds %d connections to orchd (%s); its log ends:\n%s", i,
                               n, desc, tail);
            }
            if (n > most[i])
                most[i] = n;
        }
        struct th_resp r;
        th_http(&srv, "GET", path, admin, NULL, NULL, &r);
        cr_assert_eq(r.status, 200);
        const char *st = th_str_of(&r, "status");
        done = strcmp(st, "succeeded") == 0;
        cr_assert(done || strcmp(st, "queued") == 0 || strcmp(st, "assigned") == 0 ||
                      strcmp(st, "running") == 0,
                  "job ended %s", st);
        th_resp_free(&r);
        cr_assert(clock_mono_ns() < deadline, "job %s did not end in 60 s", id);
        usleep(20000); /* between two samples, bounded by the deadline */
    }
    for (int i = 0; i < NAGENTS; i++)
        cr_assert_eq(most[i], 1, "agent %d was never seen connected", i);
    char *out = logs(id, "stdout");
    char want[128] = "";
    for (int i = 1; i <= 30; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%d\n", i);
    cr_assert_str_eq(out, want);
    cr_log_info("%d samples, at most one connection per agent", samples);
    free(out);
    free(id);
}

/* Cancel job id and wait until it has ended: its final state. */
static json_t *cancel_wait(const char *id)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    struct th_resp r;
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202, "%s", r.body);
    th_resp_free(&r);
    return th_job_wait_final(&srv, admin, id, 60);
}

/* A job handed to an agent whose other slot runs a job comes in the answer to the exchange
 * held for it; the agent then waits for its worker to spool it and reports `started`,
 * rather than hold another exchange which that report would give up (closing the
 * connection, and handing the job out again to the next exchange's "resume"). Three
 * rounds: the connection the agent had when the job was submitted is still its only one
 * once the job runs, and the server delivered the job once. */
Test(e2e, a_job_start_keeps_the_connection_and_is_delivered_once)
{
    char *first = submit("{\"command\":\"sleep 300.21\",\"requirements\":{\"pool\":\"red\"}}");
    json_decref(th_job_wait_running(&srv, admin, first, 60));
    for (int round = 0; round < 3; round++) {
        char before[256], after[256];
        uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
        /* Between exchanges the agent may be reconnecting: take a moment with one. */
        while (th_tcp_conns_desc(agents[0].pid, srv.port, before, sizeof(before)) != 1) {
            cr_assert(clock_mono_ns() < deadline, "agent 0 holds no single connection");
            usleep(10000);
        }
        char *id = submit("{\"command\":\"sleep 300.22\",\"requirements\":{\"pool\":\"red\"}}");
        json_decref(th_job_wait_running(&srv, admin, id, 60));
        int n = th_tcp_conns_desc(agents[0].pid, srv.port, after, sizeof(after));
        if (n != 1 || strcmp(before, after) != 0) {
            char tail[4096];
            log_tail(agents[0].dir, tail, sizeof(tail));
            cr_assert_fail("round %d: agent 0 held %s before the job and %s (%d) once it ran; its "
                           "log ends:\n%s",
                           round, before, after, n, tail);
        }
        char needle[96];
        snprintf(needle, sizeof(needle), "op=job.deliver job=%s ", id);
        cr_assert_eq(th_log_count(&srv, needle), 1, "round %d: job %s delivered %d times", round,
                     id, th_log_count(&srv, needle));
        json_decref(cancel_wait(id));
        free(id);
    }
    json_decref(cancel_wait(first));
    free(first);
}

/* A host that reaches orchd only through an HTTPS proxy: `server.proxy` is used for
 * enrolment and by the daemon, through one CONNECT tunnel, with the certificate still
 * checked end to end. */
Test(e2e, an_agent_behind_a_proxy_enrols_and_runs_jobs)
{
    struct th_proxy px;
    th_proxy_start(&px);
    char proxy[64], dir[64] = "/tmp/orch-e2e-proxy-XXXXXX", id[40];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", px.port);
    cr_assert_not_null(mkdtemp(dir));
    setenv("ORCH_AGENT_SERVER_PROXY", proxy, 1);
    setenv("ORCH_AGENT_SERVER_NO_PROXY", "no-such-host.invalid", 1);
    th_agent_enrol(&srv, admin, dir, "behind-proxy", "pool=green", "1", id);
    cr_assert_geq(atomic_load(&px.tunnels), 1, "register did not go through the proxy");
    pid_t pid = th_agent_start(dir);
    char *job = submit("{\"command\":\"echo via-proxy\",\"requirements\":{\"pool\":\"green\"}}");
    json_t *j = th_job_wait_final(&srv, admin, job, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    cr_assert_str_eq(json_string_value(json_object_get(j, "agent_id")), id);
    json_decref(j);
    char *out = logs(job, "stdout");
    cr_assert_str_eq(out, "via-proxy\n");
    free(out);
    /* The daemon's one connection is the proxy's tunnel, to orchd's port. */
    uint64_t deadline = clock_mono_ns() + 10ull * 1000000000ull;
    int n;
    while ((n = th_tcp_conns(pid, px.port)) != 1) {
        cr_assert_eq(n, 0, "the agent holds %d connections", n);
        cr_assert(clock_mono_ns() < deadline, "the agent has no connection to the proxy");
        usleep(10000); /* waiting for the condition, bounded */
    }
    cr_assert_eq(th_tcp_conns(pid, srv.port), 0, "the agent bypassed the proxy");
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", srv.port);
    cr_assert_str_eq(px.last_target, want);
    th_agent_stop(pid, SIGTERM);
    th_proxy_stop(&px);
    unsetenv("ORCH_AGENT_SERVER_PROXY");
    unsetenv("ORCH_AGENT_SERVER_NO_PROXY");
    th_rm_rf(dir);
    free(job);
}

/* GET /api/v1/agents/{id} until its cached_packages is want (bounded). */
static void wait_cached(int agent, long want)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agents/%s", agents[agent].id);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    for (;;) {
        struct th_resp r;
        th_http(&srv, "GET", path, admin, NULL, NULL, &r);
        long n = (long)json_integer_value(json_object_get(r.json, "cached_packages"));
        th_resp_free(&r);
        if (n == want)
            return;
        cr_assert(clock_mono_ns() < deadline, "agent %d caches %ld packages, want %ld", agent, n,
                  want);
        usleep(50000); /* polling the condition, bounded */
    }
}

/* A package job: the agent fetches the archive over its connection, unpacks it in the
 * job's directory and runs the entrypoint with the job's arguments; the next job of that
 * package goes to the agent that caches it and runs from the cache; bytes that do not
 * match the package's digest are refused and the job fails saying why. */
Test(e2e, package_jobs_fetch_cache_and_verify)
{
    char *pkg = th_package(&srv, admin, "greeter", "hello-from-package", NULL);
    char body[256];
    snprintf(body, sizeof(body),
             "{\"package_id\":\"%s\",\"args\":[\"A\",\"B\"],\"requirements\":{\"pool\":\"red\"}}",
             pkg);
    char *job = submit(body);
    json_t *j = th_job_wait_final(&srv, admin, job, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s",
                     json_dumps(j, 0));
    json_decref(j);
    char *out = logs(job, "stdout");
    cr_assert_str_eq(out, "hello-from-package A B\ndata-hello-from-package\n");
    free(out);
    free(job);
    wait_cached(0, 1);

    /* Blue: both blue agents are idle; the first run picks one, which then caches it, and
     * the second run goes there too. */
    snprintf(body, sizeof(body), "{\"package_id\":\"%s\",\"requirements\":{\"pool\":\"blue\"}}",
             pkg);
    char *b1 = submit(body);
    j = th_job_wait_final(&srv, admin, b1, 60);
    int first = agent_index(json_string_value(json_object_get(j, "agent_id")));
    json_decref(j);
    wait_cached(first, 1);
    char *b2 = submit(body);
    j = th_job_wait_final(&srv, admin, b2, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    cr_assert_eq(agent_index(json_string_value(json_object_get(j, "agent_id"))), first,
                 "the second run did not go to the agent caching the package");
    json_decref(j);
    wait_cached(3 - first, 0);
    /* ... and ran from the cache, without fetching again. */
    char logpath[128], want[128];
    snprintf(logpath, sizeof(logpath), "%s/agent.log", agents[first].dir);
    snprintf(want, sizeof(want), "op=package job=%s package=%s source=cache", b2, pkg);
    FILE *lf = fopen(logpath, "re");
    cr_assert_not_null(lf);
    char line[1024];
    bool from_cache = false;
    while (!from_cache && fgets(line, sizeof(line), lf))
        from_cache = strstr(line, want) != NULL;
    fclose(lf);
    cr_assert(from_cache, "no '%s' in %s", want, logpath);
    free(b1);
    free(b2);

    /* Damaged bytes on the server: the agent that has no copy refuses them. */
    char *bad = th_package(&srv, admin, "damaged", "damaged", NULL);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE blob_chunks SET data = overlay(data PLACING '\\x00000000' FROM 1)"
             " WHERE blob_key = (SELECT 'pkg/' || encode(sha256, 'hex') FROM packages"
             "                    WHERE id = '%s')",
             bad);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
    snprintf(body, sizeof(body),
             "{\"package_id\":\"%s\",\"max_attempts\":1,\"requirements\":{\"pool\":\"red\"}}", bad);
    job = submit(body);
    j = th_job_wait_final(&srv, admin, job, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "dead");
    cr_assert(strstr(json_string_value(json_object_get(j, "error")), "package"), "%s",
              json_dumps(j, 0));
    json_decref(j);
    char *err = logs(job, "stderr");
    cr_assert(strstr(err, "do not match the package's SHA-256"), "%s", err);
    free(err);
    free(job);
    free(bad);
    free(pkg);
}

Test(e2e, timeout_and_cancel_kill_the_whole_tree)
{
    /* A tree: the shell, a background sleeper and a foreground one. Its processes are found
     * by the job id in their environment (th_job_procs()), which no other run shares. */
    char *t = submit("{\"command\":\"sleep 300.11 & sleep 300.12; wait\","
                     "\"timeout_ms\":2000,\"max_attempts\":1,\"requirements\":{\"pool\":\"red\"}}");
    json_t *j = th_job_wait_final(&srv, admin, t, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "dead");
    cr_assert(strstr(json_string_value(json_object_get(j, "error")), "timeout"), "%s",
              json_string_value(json_object_get(j, "error")));
    json_decref(j);
    cr_assert_eq(th_job_procs(t, -1, NULL, 0), 0, "the timed-out tree survived");

    char *c = submit("{\"command\":\"sleep 300.13 & sleep 300.14; wait\","
                     "\"requirements\":{\"pool\":\"red\"}}");
    json_decref(th_job_wait_running(&srv, admin, c, 60));
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (th_job_procs(c, -1, NULL, 0) < 3) { /* the shell and both sleeps */
        cr_assert(clock_mono_ns() < deadline, "the job's processes never started");
        usleep(100000);
    }
    j = cancel_wait(c);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "cancelled");
    json_decref(j);
    cr_assert_eq(th_job_procs(c, -1, NULL, 0), 0, "the cancelled tree survived");
    free(t);
    free(c);
}

Test(e2e, an_agent_killed_mid_job_loses_it_to_another)
{
    /* Long enough to be mid-run when its agent dies; short enough to finish on the next. */
    char *id = submit("{\"command\":\"echo start; sleep 3; echo done\","
                      "\"requirements\":{\"pool\":\"blue\"},\"max_attempts\":3}");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    int first = -1;
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (first < 0) {
        struct th_resp r;
        th_http(&srv, "GET", path, admin, NULL, NULL, &r);
        if (strcmp(th_str_of(&r, "status"), "running") == 0)
            first = agent_index(th_str_of(&r, "agent_id"));
        th_resp_free(&r);
        cr_assert(clock_mono_ns() < deadline, "the job never started");
        if (first < 0)
            usleep(50000);
    }
    stop_agent(first, SIGKILL);
    json_t *j = th_job_wait_final(&srv, admin, id, 90);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    int second = agent_index(json_string_value(json_object_get(j, "agent_id")));
    cr_assert(second != first && second >= 1, "finished on agent %d after %d died", second, first);
    cr_assert_geq(json_integer_value(json_object_get(j, "epoch")), 2);
    json_decref(j);
    /* The dead agent comes back: its stale epoch's spooled result is refused, and the job
     * keeps the result of the attempt that finished. */
    start_agent(first);
    struct th_resp r;
    char apath[128];
    snprintf(apath, sizeof(apath), "/api/v1/agents/%s", agents[first].id);
    deadline = clock_mono_ns() + 30ull * 1000000000ull;
    for (bool back = false; !back;) {
        th_http(&srv, "GET", apath, admin, NULL, NULL, &r);
        back = strcmp(th_str_of(&r, "status"), "online") == 0;
        th_resp_free(&r);
        cr_assert(clock_mono_ns() < deadline, "the restarted agent did not come back online");
        if (!back)
            usleep(100000);
    }
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_str_eq(th_str_of(&r, "status"), "succeeded");
    cr_assert_eq(agent_index(th_str_of(&r, "agent_id")), second);
    th_resp_free(&r);
    free(id);
}
