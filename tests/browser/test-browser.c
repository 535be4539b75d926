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
    th_agent_enrol(&srv, admin, agent_dir, "browser-agent", NULL, "2", id);
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

Test(browser, retry_live_queues_pushed_log)
{
    char *key = tenant_key("admin"), *viewer = tenant_key("viewer");
    char args[512];
    snprintf(args, sizeof(args), "'%s' '%s'", key, viewer);
    browser_run("live.cjs", args, "");
    free(viewer);
    free(key);
}
