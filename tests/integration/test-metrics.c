/* test-metrics.c: the operators' /metrics listener of the real orchd (issue 11, Metrics):
 * its output passes `promtool check metrics`, its counters (by tenant, queue and outcome)
 * and queue depth move as a tenant submits jobs, a schedule fires one and a real agent runs
 * them, and /metrics is not reachable on the public API port, with a tenant's token or an
 * operator's. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch-config.h"
#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static struct th_server msrv; /* the same orchd, its base the metrics listener */
static char *op, *tenant, *admin;

static void setup(void)
{
    const char *env[] = {"ORCHD_METRICS_PORT=0", "ORCHD_METRICS_ADDRESS=127.0.0.1", NULL};
    th_server_start(&srv, env);
    int port = th_metrics_port(&srv);
    cr_assert(port > 0 && port != srv.port, "no metrics_port in the ready line of %s", srv.log);
    msrv = srv;
    snprintf(msrv.base, sizeof(msrv.base), "http://127.0.0.1:%d", port);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "metrics-co", "professional");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 180);

/* GET /metrics: 200 in the text format; the body (malloc'd). */
static char *scrape(void)
{
    struct th_resp r;
    th_http(&msrv, "GET", "/metrics", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    char *body = strdup(r.body);
    th_resp_free(&r);
    return body;
}

/* The value of the sample written exactly as series ("name{l=\"v\"}"), or -1 when absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)); p += n)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

/* `promtool check metrics` on text: its exit status, its complaints in out. */
static int promtool_check(const char *text, char *out, size_t outlen)
{
    cr_assert_eq(system("command -v promtool >/dev/null"), 0,
                 "promtool is missing: apt-get install prometheus (tools/lib.sh)");
    char path[160], cmd[400];
    snprintf(path, sizeof(path), "%s/metrics.txt", srv.dir);
    FILE *f = fopen(path, "we");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t len = fread(out, 1, outlen - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(metrics, output_passes_promtool)
{
    /* Some API traffic first, so that the histograms have series. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/jobs", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
    char *text = scrape();
    cr_assert(sample(text, "orch_build_info{version=\"" ORCH_VERSION "\"}") == 1, "%s", text);
    cr_assert(sample(text, "orch_db_up") == 1);
    cr_assert(sample(text, "process_cpu_seconds_total") >= 0, "%s", text);
    cr_assert(sample(text, "process_resident_memory_bytes") > 1e6);
    cr_assert(sample(text, "process_open_fds") > 3);
    cr_assert(sample(text, "process_start_time_seconds") > 1.6e9);
    cr_assert(sample(text, "orch_db_pool_max_connections{pool=\"system\"}") > 0);
    cr_assert(sample(text, "orch_agents{status=\"online\"}") == 0);
    cr_assert(sample(text, "orch_http_requests_total{method=\"GET\",route=\"/api/v1/jobs\","
                           "status=\"2xx\"}") >= 1);
    cr_assert(sample(text, "orch_http_request_duration_seconds_count{method=\"GET\",route=\"/api/"
                           "v1/jobs\",status=\"2xx\"}") >= 1,
              "%s", text);
    cr_assert(sample(text, "orch_http_connections") >= 0, "%s", text);
    cr_assert(sample(text, "orch_gateway_held_requests") == 0, "no agent yet:\n%s", text);
    char tinfo[200];
    snprintf(tinfo, sizeof(tinfo), "orch_tenant_info{tenant_id=\"%s\",tenant=\"metrics-co\"}",
             tenant);
    cr_assert(sample(text, tinfo) == 1, "%s", text);
    /* The professional tier: 100 concurrent jobs, 50 agents (DESIGN.md). */
    char quota[200];
    snprintf(quota, sizeof(quota),
             "orch_tenant_quota_limit{tenant_id=\"%s\",resource=\"concurrent_jobs\"}", tenant);
    cr_assert(sample(text, quota) == 100, "%s", text);
    snprintf(quota, sizeof(quota),
             "orch_tenant_quota_used{tenant_id=\"%s\",resource=\"api_calls_day\"}", tenant);
    cr_assert(sample(text, quota) >= 1, "%s", text);
    char out[8192];
    int st = promtool_check(text, out, sizeof(out));
    cr_assert_eq(st, 0, "promtool check metrics failed (%d):\n%s", st, out);
    free(text);
}

Test(metrics, not_reachable_on_the_api_port)
{
    struct th_resp r;
    th_http(&srv, "GET", "/metrics", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "a tenant reached /metrics: %ld", r.status);
    th_resp_free(&r);
    th_http(&srv, "GET", "/metrics", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/metrics", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    /* The metrics listener serves nothing else: no API route, no other method. */
    th_http(&msrv, "GET", "/api/v1/jobs", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&msrv, "POST", "/metrics", NULL, "{}", NULL, &r);
    cr_assert_eq(r.status, 405);
    th_resp_free(&r);
}

Test(metrics, values_move_as_jobs_run)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", admin, "{\"name\":\"builds\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    char sub[256], depth[256], assigned[256], finished[256];
    char sub0[256], assigned0[256], finished0[256];
    snprintf(sub, sizeof(sub), "orch_jobs_submitted_total{tenant_id=\"%s\",queue=\"builds\"}",
             tenant);
    snprintf(depth, sizeof(depth), "orch_job_queue_depth{tenant_id=\"%s\",queue=\"builds\"}",
             tenant);
    snprintf(assigned, sizeof(assigned),
             "orch_jobs_assigned_total{tenant_id=\"%s\",queue=\"builds\"}", tenant);
    snprintf(finished, sizeof(finished),
             "orch_jobs_finished_total{tenant_id=\"%s\",queue=\"builds\",outcome=\"succeeded\"}",
             tenant);
    /* The same of a job in no queue (queue=""). */
    snprintf(sub0, sizeof(sub0), "orch_jobs_submitted_total{tenant_id=\"%s\",queue=\"\"}", tenant);
    snprintf(assigned0, sizeof(assigned0), "orch_jobs_assigned_total{tenant_id=\"%s\",queue=\"\"}",
             tenant);
    snprintf(finished0, sizeof(finished0),
             "orch_jobs_finished_total{tenant_id=\"%s\",queue=\"\",outcome=\"succeeded\"}", tenant);
    char *text = scrape();
    cr_assert(sample(text, depth) == 0, "a new queue reads 0:\n%s", text);
    cr_assert(sample(text, sub) == -1);
    cr_assert(sample(text, finished) == -1);
    free(text);

    /* No agent yet: the jobs wait. */
    char *ids[4];
    for (int i = 0; i < 3; i++)
        ids[i] = th_job_submit(&srv, admin,
                               json_pack("{s:s,s:s}", "queue", "builds", "command", "true"));
    ids[3] = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true"));
    text = scrape();
    cr_assert(sample(text, sub) == 3, "%s", text);
    cr_assert(sample(text, sub0) == 1, "%s", text);
    cr_assert(sample(text, depth) == 3, "%s", text);
    cr_assert(sample(text, "orch_http_requests_total{method=\"POST\",route=\"/api/v1/jobs\","
                           "status=\"2xx\"}") >= 3);
    free(text);

    /* A real agent runs them: depth back to 0, assignments and results counted. */
    char dir[64] = "/tmp/orch-metrics-agent-XXXXXX", agent_id[40];
    cr_assert_not_null(mkdtemp(dir));
    th_agent_enrol(&srv, admin, dir, "m1", NULL, "2", agent_id);
    pid_t agent = th_agent_start(dir);
    for (int i = 0; i < 4; i++) {
        json_t *j = th_job_wait_final(&srv, admin, ids[i], 60);
        cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
        json_decref(j);
        free(ids[i]);
    }
    text = scrape();
    cr_assert(sample(text, depth) == 0, "%s", text);
    cr_assert(sample(text, assigned) == 3, "%s", text);
    cr_assert(sample(text, assigned0) == 1, "%s", text);
    cr_assert(sample(text, "orch_job_submit_to_assign_seconds_count") >= 4);
    cr_assert(sample(text, finished) == 3, "%s", text);
    cr_assert(sample(text, finished0) == 1, "%s", text);
    cr_assert(sample(text, "orch_http_connections") >= 1, "the agent's connection:\n%s", text);
    cr_assert(sample(text, "orch_agents{status=\"online\"}") >= 1, "%s", text);
    cr_assert(sample(text, "orch_job_assign_to_start_seconds_count") >= 3, "%s", text);
    cr_assert(sample(text, "orch_job_run_seconds_count{outcome=\"succeeded\"}") >= 3, "%s", text);
    cr_assert(sample(text, "orch_agent_heartbeats_total") >= 1, "%s", text);
    /* The idle agent holds a long-poll nearly all the time: between two of its exchanges
     * the gauge may read 0 for a moment. */
    for (int i = 0; i < 50 && sample(text, "orch_gateway_held_requests") < 1; i++) {
        free(text);
        usleep(100000);
        text = scrape();
    }
    cr_assert(sample(text, "orch_gateway_held_requests") == 1, "the agent's long-poll:\n%s", text);
    char out[8192];
    int st = promtool_check(text, out, sizeof(out));
    cr_assert_eq(st, 0, "promtool check metrics failed (%d):\n%s", st, out);
    free(text);

    /* A schedule's job counts as submitted too: one made due now fires within a round. */
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"hourly\",\"cron\":\"@hourly\",\"queue\":\"builds\","
            "\"job\":{\"command\":\"true\"},\"missed_policy\":\"run_once\"}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char q[256];
    snprintf(q, sizeof(q), "UPDATE schedules SET next_run_at = now() WHERE id = '%s'",
             th_str_of(&r, "id"));
    th_resp_free(&r);
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    PQclear(th_pg_ok(pg, q));
    PQfinish(pg);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    for (;;) {
        text = scrape();
        double n = sample(text, sub);
        free(text);
        if (n == 4)
            break;
        cr_assert(clock_mono_ns() < deadline, "the schedule's job was not counted (%g)", n);
        usleep(100000);
    }
    th_agent_stop(agent, SIGTERM);
    th_rm_rf(dir);
}
