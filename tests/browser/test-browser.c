/* The admin console in a real browser (Debian's Chromium, headless, through playwright-core;
 * one script of tests/browser per test) against the real orchd, PostgreSQL, RabbitMQ and an
 * enrolled orch-agent: this file starts them, makes a tenant and its API keys, and runs the
 * scripts. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char agent_dir[64];
static pid_t agent = -1;

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "browser", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(agent_dir, sizeof(agent_dir), "/tmp/orch-browser-XXXXXX");
    cr_assert_not_null(mkdtemp(agent_dir));
    char id[37];
    th_agent_enrol(&srv, admin, agent_dir, "browser-agent", "role=console", "2", id);
    agent = th_agent_start(agent_dir);
}

static void teardown(void)
{
    th_agent_stop(agent, SIGTERM);
    if (agent_dir[0])
        th_rm_rf(agent_dir);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(browser, .init = setup, .fini = teardown, .timeout = 120);

/* A new API key of the browser tenant with this role; caller frees. */
static char *tenant_key(const char *role)
{
    char path[128], body[96];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s/api-keys", tenant);
    snprintf(body, sizeof(body), "{\"name\":\"console-%s\",\"role\":\"%s\"}", role, role);
    struct th_resp r;
    th_http(&srv, "POST", path, op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *key = strdup(th_str_of(&r, "key"));
    th_resp_free(&r);
    return key;
}

/* Runs the browser script tests/browser/<name> (beside ORCH_TEST_BROWSER_SCRIPT) as
 * `node <script> BASE_URL <args> SCREENSHOT_DIR <more>`, echoing its output; fails the test
 * with that output when it does not exit 0. */
static void browser_run(const char *name, const char *args, const char *more)
{
    const char *node = getenv("ORCH_TEST_NODE");
    const char *first = getenv("ORCH_TEST_BROWSER_SCRIPT");
    const char *shots = getenv("ORCH_TEST_SCREENSHOTS");
    cr_assert(node && first && shots, "run through meson (the environment names node)");
    cr_assert_eq(access(getenv("ORCH_TEST_CHROMIUM") ? getenv("ORCH_TEST_CHROMIUM")
                                                     : "/usr/lib/chromium/chromium",
                        X_OK),
                 0, "Chromium is missing: apt-get install chromium (tools/lib.sh does)");
    const char *slash = strrchr(first, '/');
    int dir = slash ? (int)(slash - first) : 1;
    char cmd[1400];
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && NODE_EXTRA_CA_CERTS='%s/tls/ca.pem' '%s' '%.*s/%s' '%s' %s '%s' "
             "%s 2>&1",
             shots, srv.dir, node, dir, slash ? first : ".", name, srv.base, args, shots, more);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char line[4096], out[16384] = "";
    size_t used = 0;
    while (fgets(line, sizeof(line), p)) {
        fputs(line, stderr);
        int n = snprintf(out + used, sizeof(out) - used, "%s", line);
        if (n > 0 && used + (size_t)n < sizeof(out))
            used += (size_t)n;
    }
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed:\n%s", name, out);
}

Test(browser, sign_in_submit_watch_sign_out)
{
    char *key = tenant_key("admin");
    char args[256];
    snprintf(args, sizeof(args), "'%s'", key);
    browser_run("jobs.cjs", args, "");
    free(key);
}

Test(browser, agents_drain_queues_pause_viewer_sees_no_buttons)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    /* Another tenant's queue and waiting job, which the browser tenant's console must not
     * show. */
    char *other = th_tenant(&srv, op, "other", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", other_admin, "{\"name\":\"other-q\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/jobs", other_admin,
            "{\"queue\":\"other-q\",\"command\":\"true\",\"requirements\":{\"nowhere\":\"x\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *other_job = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char args[512], more[128];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    snprintf(more, sizeof(more), "'%s' other-q", other_job);
    browser_run("agents.cjs", args, more);
    free(other_job);
    free(other_admin);
    free(other);
    free(viewer);
    free(key);
}

Test(browser, job_page_live_log_cancel_tail)
{
    char *key = tenant_key("admin");
    char args[256];
    snprintf(args, sizeof(args), "'%s'", key);
    browser_run("jobdetail.cjs", args, "");
    free(key);
}

/* The schedules page (schedules.cjs): a schedule that has fired, its job waiting in a paused
 * queue (the script resumes it and watches the result change live), and another tenant's
 * schedule, which must not show. */
Test(browser, schedules_next_runs_disable_viewer_other_tenant)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", admin, "{\"name\":\"sched-q\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *queue = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/queues/%s", queue);
    th_http(&srv, "PATCH", path, admin, "{\"paused\":true}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    /* Once a year, made due now: the scheduler fires it within its next round. */
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"fired-once\",\"cron\":\"0 0 1 1 *\",\"queue\":\"sched-q\","
            "\"job\":{\"command\":\"true\"},\"overlap_policy\":\"skip\"}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *fired = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    char q[256];
    snprintf(q, sizeof(q), "UPDATE schedules SET next_run_at = now() WHERE id = '%s'", fired);
    PQclear(th_pg_ok(pg, q));
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s' AND status = 'fired'",
             fired);
    for (int i = 0; i < 300 && th_pg_long(pg, q) < 1; i++) /* 15 s at most */
        usleep(50000);
    cr_assert_eq(th_pg_long(pg, q), 1, "the schedule did not fire within 15 s");
    PQfinish(pg);

    char *other = th_tenant(&srv, op, "other-s", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    th_http(&srv, "POST", "/api/v1/schedules", other_admin,
            "{\"name\":\"other-sched\",\"cron\":\"@daily\",\"job\":{\"command\":\"true\"}}", NULL,
            &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);

    char args[512], more[256];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    snprintf(more, sizeof(more), "'%s' '%s' other-sched", fired, queue);
    browser_run("schedules.cjs", args, more);
    free(other_admin);
    free(other);
    free(fired);
    free(queue);
    free(viewer);
    free(key);
}

/* The webhooks page (webhooks.cjs): orchd again with private URLs allowed (the subscription
 * points at a closed port on loopback) and two attempts a delivery, 1 s apart at most; another
 * tenant's subscription, which must not show. */
Test(browser, webhooks_deliveries_failures_resend_viewer_other_tenant)
{
    const char *extra[] = {"ORCHD_WEBHOOKS_ALLOW_PRIVATE=true", "ORCHD_WEBHOOKS_MAX_ATTEMPTS=2",
                           "ORCHD_WEBHOOKS_RETRY_BASE=1s", "ORCHD_WEBHOOKS_POLL=100ms"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
        snprintf(srv.env[srv.nenv++], sizeof(srv.env[0]), "%s", extra[i]);
    th_server_restart(&srv, SIGTERM);
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    char *other = th_tenant(&srv, op, "other-w", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/webhooks", other_admin,
            "{\"url\":\"https://127.0.0.1:2/other-tenant\",\"events\":[\"job.queued\"]}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *other_hook = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    char args[512], more[256];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    snprintf(more, sizeof(more), "'%s' other-tenant", other_hook);
    browser_run("webhooks.cjs", args, more);
    free(other_hook);
    free(other_admin);
    free(other);
    free(viewer);
    free(key);
}

/* The platform operator's console: signed in with the operator token itself (orch_op_…),
 * the tenants and pools pages, and a tenant's console without them (tests/browser/
 * operator.cjs). */
Test(browser, operator_tenants_pools_suspend_resume)
{
    char *key = tenant_key("admin");
    char args[512], more[64];
    snprintf(args, sizeof(args), "'%s' '%s'", srv.operator_token, key);
    snprintf(more, sizeof(more), "'%s'", tenant);
    browser_run("operator.cjs", args, more);
    free(key);
}

Test(browser, quotas_usage_live_marks_override)
{
    char *key = tenant_key("admin");
    /* An operator's override of the agents quota, which the page must mark. */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, "{\"quotas\":{\"agents\":4}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    char args[256];
    snprintf(args, sizeof(args), "'%s'", key);
    browser_run("quotas.cjs", args, "");
    free(key);
}

Test(browser, audit_log_pages_filters_viewer_other_tenant)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    /* Another tenant's queue, whose audit record this tenant's console must never show. */
    char *other = th_tenant(&srv, op, "other", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", other_admin, "{\"name\":\"other-audited\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *other_queue = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char args[512], more[128];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    snprintf(more, sizeof(more), "'%s'", other_queue);
    browser_run("audit.cjs", args, more);
    free(other_queue);
    free(other_admin);
    free(other);
    free(viewer);
    free(key);
}

Test(browser, overview_tiles_and_charts_move_live_other_tenant_hidden)
{
    char *key = tenant_key("admin");
    /* Another tenant's queued jobs, which the browser tenant's overview must not count. */
    char *other = th_tenant(&srv, op, "stranger", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    for (int i = 0; i < 3; i++) {
        struct th_resp r;
        th_http(&srv, "POST", "/api/v1/jobs", other_admin,
                "{\"command\":\"true\",\"requirements\":{\"nowhere\":\"x\"}}", NULL, &r);
        cr_assert_eq(r.status, 201, "%s", r.body);
        th_resp_free(&r);
    }
    char args[256];
    snprintf(args, sizeof(args), "'%s'", key);
    char more[128];
    snprintf(more, sizeof(more), "3 '%s'", srv.operator_token);
    browser_run("overview.cjs", args, more);
    free(other_admin);
    free(other);
    free(key);
}

Test(browser, retry_live_queues_pushed_log)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    char args[512];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    browser_run("live.cjs", args, "");
    free(viewer);
    free(key);
}

/* The packages page (packages.cjs, which makes its own tar.gz files) and a job's package on
 * its page; another tenant's package, uploaded here (a minimal tar: one ustar header), must
 * not show. */
Test(browser, packages_upload_latest_channel_delete_viewer_other_tenant)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    char *other = th_tenant(&srv, op, "other-p", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    char tar[1536] = {0};
    memcpy(tar + 257, "ustar", 5);
    struct th_resp r;
    th_http_bytes(&srv, "POST", "/api/v1/packages?name=secret-tool&version=1.0.0", other_admin, tar,
                  sizeof(tar), "application/x-tar", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    char args[512];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    browser_run("packages.cjs", args, "secret-tool");
    free(other_admin);
    free(other);
    free(viewer);
    free(key);
}

/* The deployments page (deployments.cjs): a version deployed to the agent's label set
 * (role=console) reaches it live; another tenant, whose admin token the script uses to make a
 * deployment of its own, must not show. */
Test(browser, deployments_deploy_live_cancel_viewer_other_tenant)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    char *other = th_tenant(&srv, op, "other-d", "standard");
    char *other_admin = th_tenant_token(&srv, op, other, "admin");
    char args[512];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    browser_run("deployments.cjs", args, other_admin);
    free(other_admin);
    free(other);
    free(viewer);
    free(key);
}
