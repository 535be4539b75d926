/* Shared agent pools on the real orchd, PostgreSQL, RabbitMQ and a real root `orch-agent
 * run`: the operator API and its validation; a pool agent enrolled with a pool token runs
 * the jobs of the tenants its pool admits (by tier, by allow-list) at the same time, each
 * under a uid and in a working directory of its own, as the jobs themselves report; a
 * tenant the pool does not admit gets nothing from it; tenants see none of each other's
 * jobs; a pool agent reads only the packages of jobs it holds; a pool agent without
 * exec.uid_range does not start. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

#define UID_FIRST 200100
#define UID_LAST  200109

static struct th_server srv;
static char *op;
static pid_t agent_pid; /* a started agent, stopped by teardown() whatever happened */

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_LEASE=6s", "ORCHD_AGENT_ONLINE_WINDOW=6s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
}

static void teardown(void)
{
    th_agent_stop(agent_pid, SIGTERM);
    free(op);
    th_server_stop(&srv);
}

TestSuite(pools, .init = setup, .fini = teardown, .timeout = 240);

/* As operator: create a pool from body (a JSON text), which must answer 201; its id. */
static char *pool_create(const char *body)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/pools", op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

/* The problem's field of an answer that must be a 422. */
static void expect_invalid(const char *method, const char *path, const char *body,
                           const char *field)
{
    struct th_resp r;
    th_http(&srv, method, path, op, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s %s: %s", method, body, r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), field, "%s", r.body);
    th_resp_free(&r);
}

/* An enrolment token of pool (as operator). */
static char *pool_token(const char *pool)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/pools/%s/enrollment-tokens", pool);
    struct th_resp r;
    th_http(&srv, "POST", path, op, "{\"name\":\"pool\",\"max_uses\":5}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *tok = strdup(th_str_of(&r, "token"));
    th_resp_free(&r);
    return tok;
}

/* Enrol a real agent of pool in state_dir with the CLI; its id in agent_id (37 bytes). */
static void pool_enrol(const char *pool, const char *state_dir, const char *slots, char *agent_id)
{
    char *tok = pool_token(pool);
    char ca[128], env[128];
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    snprintf(env, sizeof(env), "ORCH_AGENT_STATE_DIR=%.100s", state_dir);
    const char *argv[] = {th_env("ORCH_TEST_AGENT"),
                          "register",
                          "--server",
                          srv.base,
                          "--token",
                          tok,
                          "--name",
                          "pooled",
                          "--ca-file",
                          ca,
                          "--slots",
                          slots,
                          NULL};
    const char *envp[] = {env, NULL};
    struct th_run run;
    th_run(&run, argv, envp, 60000);
    cr_assert_eq(run.status, 0, "register: %s", th_str(&run.err));
    cr_assert(strstr(th_str(&run.out), "serves the shared pool"), "%s", th_str(&run.out));
    const char *p = strstr(th_str(&run.out), "(agent ");
    cr_assert_not_null(p, "%s", th_str(&run.out));
    snprintf(agent_id, 37, "%.36s", p + 7);
    th_run_free(&run);
    free(tok);
}

/* `orch-agent run` on state with env added; its exit status, its stderr in err. */
static int agent_run(const char *state, const char *const *env, char *err, size_t len)
{
    char errfile[] = "/tmp/orch-pools-err-XXXXXX";
    int fd = mkstemp(errfile);
    cr_assert_geq(fd, 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fd, 2);
        setenv("ORCH_AGENT_STATE_DIR", state, 1);
        for (size_t i = 0; env[i]; i++)
            putenv((char *)env[i]);
        execl(th_env("ORCH_TEST_AGENT"), "orch-agent", "run", (char *)NULL);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    ssize_t n = pread(fd, err, len - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(errfile);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *job_logs(const char *token, const char *id, long *status)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdout", id);
    struct th_resp r;
    th_http(&srv, "GET", path, token, NULL, NULL, &r);
    *status = r.status;
    char *b = strdup(r.body ? r.body : "");
    th_resp_free(&r);
    return b;
}

Test(pools, operators_create_list_update_and_delete_pools_with_validation)
{
    char *a = th_tenant(&srv, op, "alpha", "free");
    char *a_admin = th_tenant_token(&srv, op, a, "admin");
    expect_invalid("POST", "/api/v1/pools", "{\"name\":\"Bad Name\"}", "name");
    expect_invalid("POST", "/api/v1/pools", "{\"tiers\":[]}", "name");
    expect_invalid("POST", "/api/v1/pools", "{\"name\":\"p\",\"tiers\":[\"free\",\"gold\"]}",
                   "tiers[1]");
    expect_invalid("POST", "/api/v1/pools", "{\"name\":\"p\",\"tenants\":[\"x\"]}", "tenants[0]");
    expect_invalid("POST", "/api/v1/pools",
                   "{\"name\":\"p\",\"tenants\":[\"0190a000-0000-7000-8000-000000000000\"]}",
                   "tenants[0]");
    expect_invalid("POST", "/api/v1/pools", "{\"name\":\"p\",\"size\":3}", "size");

    char body[256];
    snprintf(body, sizeof(body),
             "{\"name\":\"shared\",\"tiers\":[\"standard\"],\"tenants\":[\"%s\"]}", a);
    char *id = pool_create(body);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/pools", op, "{\"name\":\"shared\"}", NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);

    /* Tenants have no access to pools. */
    th_http(&srv, "GET", "/api/v1/pools", a_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    th_resp_free(&r);

    th_http(&srv, "GET", "/api/v1/pools", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *items = json_object_get(r.json, "items");
    cr_assert_eq(json_array_size(items), 1, "%s", r.body);
    json_t *p = json_array_get(items, 0);
    cr_assert_str_eq(json_string_value(json_object_get(p, "name")), "shared");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "tiers"), 0)), "standard");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "tenants"), 0)), a);
    cr_assert_eq(json_integer_value(json_object_get(p, "agent_count")), 0);
    th_resp_free(&r);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/pools/%s", id);
    expect_invalid("PATCH", path, "{\"tiers\":[\"platinum\"]}", "tiers[0]");
    th_http(&srv, "PATCH", path, op, "{\"name\":\"renamed\",\"tiers\":[]}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "name"), "renamed");
    cr_assert_eq(json_array_size(json_object_get(r.json, "tiers")), 0);
    cr_assert_eq(json_array_size(json_object_get(r.json, "tenants")), 1, "kept: %s", r.body);
    th_resp_free(&r);

    th_http(&srv, "GET", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_array(json_object_get(r.json, "agents")), "%s", r.body);
    th_resp_free(&r);

    /* The platform tenant that holds pool agents is no customer: not listed. */
    th_http(&srv, "GET", "/api/v1/tenants", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1, "%s", r.body);
    th_resp_free(&r);

    th_http(&srv, "DELETE", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "GET", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/pools/%s/enrollment-tokens", id);
    th_http(&srv, "POST", path, op, "{\"name\":\"x\"}", NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    free(id);
    free(a_admin);
    free(a);
}

Test(pools, a_pool_agent_is_the_platforms_and_reads_only_packages_of_jobs_it_holds)
{
    char *b = th_tenant(&srv, op, "beta", "free");
    char *b_admin = th_tenant_token(&srv, op, b, "admin");
    char body[256];
    snprintf(body, sizeof(body), "{\"name\":\"allow\",\"tenants\":[\"%s\"]}", b);
    char *pool = pool_create(body);
    char *tok = pool_token(pool);

    /* A scripted agent (no process, never online): registered through the API. */
    char reg[512];
    snprintf(reg, sizeof(reg),
             "{\"token\":\"%s\",\"name\":\"scripted\",\"slots\":2,\"labels\":{\"site\":\"fra1\"}}",
             tok);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, reg, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "pool_id"), pool, "%s", r.body);
    cr_assert_str_neq(th_str_of(&r, "tenant_id"), b, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    char agent[40];
    snprintf(agent, sizeof(agent), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);

    /* Not the tenant's agent, and none of the tenant's agent quota (free: 2) is taken. */
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/agents/%s", agent);
    th_http(&srv, "GET", path, b_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/tenant", b_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *usage = json_object_get(r.json, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "agents")), 0, "%s", r.body);
    th_resp_free(&r);

    /* The pool lists it; a pool with agents is not deleted. */
    snprintf(path, sizeof(path), "/api/v1/pools/%s", pool);
    th_http(&srv, "GET", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *agents = json_object_get(r.json, "agents");
    cr_assert_eq(json_array_size(agents), 1, "%s", r.body);
    json_t *a0 = json_array_get(agents, 0);
    cr_assert_str_eq(json_string_value(json_object_get(a0, "id")), agent);
    cr_assert_eq(json_integer_value(json_object_get(a0, "slots")), 2);
    cr_assert_eq(json_integer_value(json_object_get(a0, "slots_in_use")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(a0, "status")), "offline");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(a0, "labels"), "site")),
                     "fra1", "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "DELETE", path, op, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);

    /* A package of a tenant the pool admits, but of no job this agent holds. */
    char *pkg = th_package(&srv, b_admin, "tool", "m1", NULL);
    snprintf(path, sizeof(path), "/api/v1/agent/packages/%s/content", pkg);
    th_http(&srv, "GET", path, cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);

    /* Its own record, and its reports about a job not its own, stay its own. */
    th_http(&srv, "GET", "/api/v1/agent", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "id"), agent);
    th_resp_free(&r);

    /* It works in the system scope, yet reports about a job it never held (another
     * tenant's, queued) answer as for a job that does not exist: not even the job's
     * existence leaks. */
    char *other = th_job_submit(&srv, b_admin, json_pack("{s:s}", "command", "true"));
    const char *kinds[] = {"started", "logs", "result"};
    const char *bodies[] = {"{\"epoch\":1}",
                            "{\"epoch\":1,\"stream\":\"stdout\",\"offset\":0,\"data\":\"aGk=\"}",
                            "{\"epoch\":1,\"exit_code\":0}"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/%s", other, kinds[i]);
        th_http(&srv, "POST", path, cred, bodies[i], NULL, &r);
        cr_assert_eq(r.status, 404, "%s: %s", kinds[i], r.body);
        th_resp_free(&r);
    }
    free(other);

    free(pkg);
    free(cred);
    free(tok);
    free(pool);
    free(b_admin);
    free(b);
}

Test(pools, a_pool_agent_without_a_uid_range_does_not_start)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char *pool = pool_create("{\"name\":\"strict\",\"tiers\":[\"free\"]}");
    char state[] = "/tmp/orch-pools-state-XXXXXX", err[2048], agent[40];
    cr_assert_not_null(mkdtemp(state));
    pool_enrol(pool, state, "1", agent);
    const char *none[] = {"ORCH_AGENT_EXEC_USER=orch-job", NULL};
    cr_assert_eq(agent_run(state, none, err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "shared pool"), "%s", err);
    cr_assert(strstr(err, "exec.uid_range"), "%s", err);
    const char *bad[] = {"ORCH_AGENT_EXEC_UID_RANGE=0-10", NULL};
    cr_assert_eq(agent_run(state, bad, err, sizeof(err)), 2, "%s", err);
    cr_assert(strstr(err, "exec.uid_range"), "%s", err);
    const char *small[] = {"ORCH_AGENT_EXEC_UID_RANGE=200000-200000", "ORCH_AGENT_SLOTS=2", NULL};
    cr_assert_eq(agent_run(state, small, err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "fewer than the 2 slots"), "%s", err);
    th_rm_rf(state);
    free(pool);
}

/* A .tar.gz of run.sh (the script text), malloc'd, *len bytes. */
static char *archive_of(const char *script, size_t *len)
{
    char d[] = "/tmp/orch-pools-pkg-XXXXXX", path[128];
    cr_assert_not_null(mkdtemp(d));
    snprintf(path, sizeof(path), "%s/run.sh", d);
    FILE *f = fopen(path, "we");
    cr_assert_not_null(f);
    fputs(script, f);
    fclose(f);
    cr_assert_eq(chmod(path, 0755), 0);
    const char *argv[] = {"/usr/bin/tar", "-czf", "-", "-C", d, "run.sh", NULL};
    struct th_run run;
    th_run(&run, argv, NULL, 30000);
    cr_assert_eq(run.status, 0, "%s", th_str(&run.err));
    *len = run.out.len;
    char *data = malloc(run.out.len);
    cr_assert_not_null(data);
    memcpy(data, run.out.data, run.out.len);
    th_run_free(&run);
    th_rm_rf(d);
    return data;
}

/* What each job prints first: its uid, the owner of its workdir (or of its unpacked
 * entrypoint), its working directory. Then it says it runs (touches me) and waits, bounded,
 * for the other job to say so: both succeed only if they ran at the same time. */
#define REPORT_AND_MEET                                                                            \
    "echo \"uid=$(id -u) owner=$(stat -c %u \"$OWNED\") pwd=$(pwd)\"; touch \"$1/$2\"; i=0;"       \
    " while [ ! -e \"$1/$3\" ]; do i=$((i+1)); if [ $i -gt 1200 ]; then echo alone; exit 9; fi;"   \
    " sleep 0.05; done"

struct seen {
    unsigned uid, owner;
    char pwd[256];
};

static void parse_report(const char *out, struct seen *s)
{
    cr_assert_eq(sscanf(out, "uid=%u owner=%u pwd=%255s", &s->uid, &s->owner, s->pwd), 3, "%s",
                 out);
}

Test(pools, admitted_tenants_share_a_pool_agent_under_distinct_uids_and_workdirs)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    /* A by tier, B by allow-list, C neither. */
    char *a = th_tenant(&srv, op, "alpha", "professional");
    char *b = th_tenant(&srv, op, "beta", "free");
    char *c = th_tenant(&srv, op, "gamma", "standard");
    char *a_admin = th_tenant_token(&srv, op, a, "admin");
    char *b_admin = th_tenant_token(&srv, op, b, "admin");
    char *c_admin = th_tenant_token(&srv, op, c, "admin");
    char body[256];
    snprintf(body, sizeof(body),
             "{\"name\":\"shared\",\"tiers\":[\"professional\"],"
             "\"tenants\":[\"%s\"]}",
             b);
    char *pool = pool_create(body);

    char meet[] = "/tmp/orch-pools-meet-XXXXXX", state[] = "/tmp/orch-pools-agent-XXXXXX";
    cr_assert_not_null(mkdtemp(meet));
    cr_assert_eq(chmod(meet, 01777), 0);
    cr_assert_not_null(mkdtemp(state));
    char agent[40];
    pool_enrol(pool, state, "2", agent);
    char range[64];
    snprintf(range, sizeof(range), "ORCH_AGENT_EXEC_UID_RANGE=%d-%d", UID_FIRST, UID_LAST);
    const char *env[] = {range, NULL};
    agent_pid = th_agent_start_env(state, env);

    /* C first: at the head of the queue, and still waiting when A's and B's are done. */
    char *jc = th_job_submit(&srv, c_admin, json_pack("{s:s}", "command", "echo never"));

    /* A: a command. B: a package, unpacked as its own user. */
    json_t *ja_body = json_pack("{s:s, s:[s, s, s], s:{s:s}, s:i}", "command", REPORT_AND_MEET,
                                "args", meet, "a", "b", "env", "OWNED", ".", "max_attempts", 1);
    char *ja = th_job_submit(&srv, a_admin, ja_body);
    size_t len;
    char *tgz = archive_of("#!/bin/sh\n" REPORT_AND_MEET "\n", &len);
    struct th_resp r;
    th_http_bytes(&srv, "POST", "/api/v1/packages?name=meet&version=1.0.0&entrypoint=run.sh",
                  b_admin, tgz, len, "application/gzip", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *pkg = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    free(tgz);
    json_t *jb_body = json_pack("{s:s, s:[s, s, s], s:{s:s}, s:i}", "package_id", pkg, "args", meet,
                                "b", "a", "env", "OWNED", "run.sh", "max_attempts", 1);
    char *jb = th_job_submit(&srv, b_admin, jb_body);

    json_t *fa = th_job_wait_final(&srv, a_admin, ja, 90);
    json_t *fb = th_job_wait_final(&srv, b_admin, jb, 90);
    long st;
    char *out_a = job_logs(a_admin, ja, &st);
    char *out_b = job_logs(b_admin, jb, &st);
    cr_assert_str_eq(json_string_value(json_object_get(fa, "status")), "succeeded", "%s", out_a);
    cr_assert_str_eq(json_string_value(json_object_get(fb, "status")), "succeeded", "%s", out_b);
    /* Both on the pool agent, each tenant seeing the agent's id on its own job. */
    cr_assert_str_eq(json_string_value(json_object_get(fa, "agent_id")), agent);
    cr_assert_str_eq(json_string_value(json_object_get(fb, "agent_id")), agent);

    struct seen sa, sb;
    parse_report(out_a, &sa);
    parse_report(out_b, &sb);
    cr_assert(sa.uid >= UID_FIRST && sa.uid <= UID_LAST, "%s", out_a);
    cr_assert(sb.uid >= UID_FIRST && sb.uid <= UID_LAST, "%s", out_b);
    cr_assert_neq(sa.uid, sb.uid, "the two tenants' jobs ran as one user: %s / %s", out_a, out_b);
    cr_assert_eq(sa.owner, sa.uid, "A's workdir is its own: %s", out_a);
    cr_assert_eq(sb.owner, sb.uid, "B's unpacked package is its own: %s", out_b);
    cr_assert_str_neq(sa.pwd, sb.pwd);

    /* Neither tenant sees the other's job, its output, or the pool agent itself. */
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", jb);
    th_http(&srv, "GET", path, a_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    free(job_logs(a_admin, jb, &st));
    cr_assert_eq(st, 404);
    th_http(&srv, "GET", "/api/v1/jobs", a_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1, "%s", r.body);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/agents/%s", agent);
    th_http(&srv, "GET", path, a_admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);

    /* Not admitted: C's job never went to the pool. */
    json_t *jcd = th_job(&srv, c_admin, jc);
    cr_assert_str_eq(json_string_value(json_object_get(jcd, "status")), "queued");
    json_decref(jcd);

    /* The agent held B's package only while it held B's job. */
    char cred[128] = "";
    {
        char p2[128];
        snprintf(p2, sizeof(p2), "%s/agent.json", state);
        json_error_t je;
        json_t *st_doc = json_load_file(p2, 0, &je);
        cr_assert_not_null(st_doc);
        cr_assert_str_eq(json_string_value(json_object_get(st_doc, "pool_id")), pool);
        snprintf(cred, sizeof(cred), "%s",
                 json_string_value(json_object_get(st_doc, "credential")));
        json_decref(st_doc);
    }
    snprintf(path, sizeof(path), "/api/v1/agent/packages/%s/content", pkg);
    th_http(&srv, "GET", path, cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);

    th_agent_stop(agent_pid, SIGTERM);
    agent_pid = 0;
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", jc);
    th_http(&srv, "POST", path, c_admin, NULL, NULL, &r);
    th_resp_free(&r);
    json_decref(fa);
    json_decref(fb);
    free(out_a);
    free(out_b);
    free(ja);
    free(jb);
    free(jc);
    free(pkg);
    th_rm_rf(state);
    th_rm_rf(meet);
    free(pool);
    free(a_admin);
    free(b_admin);
    free(c_admin);
    free(a);
    free(b);
    free(c);
}

/* Submit n jobs of command to the tenant of token in one batch. */
static void flood(const char *token, int n, const char *command)
{
    json_t *jobs = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(jobs, json_pack("{s:s, s:i}", "command", command, "max_attempts", 1));
    json_t *body = json_pack("{s:o}", "jobs", jobs);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs/batch", token, text, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    free(text);
}

/* Two tenants of weights 1 and 3, both with a backlog on one pool agent (and nothing else
 * to run on): of the first FAIR_WINDOW placements, the heavier tenant gets 3/4, within
 * FAIR_TOLERANCE placements (a round places up to the agent's 4 slots at one timestamp,
 * so the window's edge blurs by that much; the rest is margin for jobs ending out of
 * order). */
#define FAIR_JOBS      200
#define FAIR_WINDOW    200
#define FAIR_TOLERANCE 15

Test(pools, tenants_flooding_a_pool_get_placements_in_proportion_to_their_weights)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char *a = th_tenant(&srv, op, "light", "professional");
    char *b = th_tenant(&srv, op, "heavy", "professional");
    char *a_admin = th_tenant_token(&srv, op, a, "admin");
    char *b_admin = th_tenant_token(&srv, op, b, "admin");
    char *pool = pool_create("{\"name\":\"fair\",\"tiers\":[\"professional\"]}");
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE tenants SET weight = CASE id WHEN '%s' THEN 1 ELSE 3 END"
             " WHERE id IN ('%s', '%s')",
             a, a, b);
    PQclear(th_pg_ok(pg, sql));

    /* Both backlogs wait before the agent comes: no head start for either. */
    flood(a_admin, FAIR_JOBS, "true");
    flood(b_admin, FAIR_JOBS, "true");
    char state[] = "/tmp/orch-pools-fair-XXXXXX", agent[40];
    cr_assert_not_null(mkdtemp(state));
    pool_enrol(pool, state, "4", agent);
    const char *env[] = {"ORCH_AGENT_EXEC_UID_RANGE=200200-200209", NULL};
    agent_pid = th_agent_start_env(state, env);

    long placed = 0;
    for (int i = 0; i < 1200 && placed < FAIR_WINDOW; i++) { /* at most 120 s */
        placed = th_pg_long(pg, "SELECT count(*) FROM job_attempts");
        if (placed < FAIR_WINDOW)
            usleep(100000); /* polling the database, bounded */
    }
    cr_assert_geq(placed, FAIR_WINDOW, "only %ld placements", placed);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FILTER (WHERE tenant_id = '%s') FROM (SELECT tenant_id"
             "  FROM job_attempts ORDER BY assigned_at, id LIMIT %d) s",
             b, FAIR_WINDOW);
    long heavy = th_pg_long(pg, sql);
    long want = FAIR_WINDOW * 3 / 4;
    cr_log_info("fair: weights 1:3, first %d placements: light=%ld heavy=%ld (want %ld)",
                FAIR_WINDOW, FAIR_WINDOW - heavy, heavy, want);
    cr_assert(heavy >= want - FAIR_TOLERANCE && heavy <= want + FAIR_TOLERANCE,
              "weights 1:3, first %d placements: heavy=%ld, want %ld +- %d", FAIR_WINDOW, heavy,
              want, FAIR_TOLERANCE);

    th_agent_stop(agent_pid, SIGTERM);
    agent_pid = 0;
    PQfinish(pg);
    th_rm_rf(state);
    free(pool);
    free(a_admin);
    free(b_admin);
    free(a);
    free(b);
}

/* The credential stored in state/agent.json (into cred, len bytes). */
static void stored_credential(const char *state, char *cred, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/agent.json", state);
    json_error_t je;
    json_t *doc = json_load_file(path, 0, &je);
    cr_assert_not_null(doc, "%s", je.text);
    snprintf(cred, len, "%s", json_string_value(json_object_get(doc, "credential")));
    json_decref(doc);
}

Test(pools, a_pool_agent_rotates_its_credential_and_a_tenant_cancels_its_job_on_it)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char *a = th_tenant(&srv, op, "alpha", "enterprise");
    char *a_admin = th_tenant_token(&srv, op, a, "admin");
    char *pool = pool_create("{\"name\":\"ent\",\"tiers\":[\"enterprise\"]}");
    char state[] = "/tmp/orch-pools-rot-XXXXXX", agent[40], before[128], after[128];
    cr_assert_not_null(mkdtemp(state));
    pool_enrol(pool, state, "1", agent);
    stored_credential(state, before, sizeof(before));
    /* Rotate at once: the credential "expires" within the rotation margin. */
    const char *env[] = {"ORCH_AGENT_EXEC_UID_RANGE=200300-200301",
                         "ORCH_AGENT_ROTATE_BEFORE_S=99999999", NULL};
    agent_pid = th_agent_start_env(state, env);

    char *id = th_job_submit(
        &srv, a_admin, json_pack("{s:s, s:i}", "command", "echo up; sleep 120", "max_attempts", 1));
    json_t *j = th_job_wait_running(&srv, a_admin, id, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "agent_id")), agent);
    json_decref(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    struct th_resp r;
    th_http(&srv, "POST", path, a_admin, NULL, NULL, &r);
    cr_assert(r.status == 200 || r.status == 202, "%s", r.body);
    th_resp_free(&r);
    j = th_job_wait_final(&srv, a_admin, id, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "cancelled");
    json_decref(j);

    stored_credential(state, after, sizeof(after));
    cr_assert_str_neq(before, after, "the pool agent rotated its credential");
    th_http(&srv, "GET", "/api/v1/agent", after, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);

    th_agent_stop(agent_pid, SIGTERM);
    agent_pid = 0;
    th_rm_rf(state);
    free(id);
    free(pool);
    free(a_admin);
    free(a);
}
