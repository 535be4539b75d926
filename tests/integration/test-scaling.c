/* Scaling policies on the real services: a policy fires scale.up when its queue's depth per
 * agent crosses the threshold, holds during its cooldown while the evaluator keeps running
 * (its evaluation counter moves, no second decision), scales up again to no more than
 * max_agents once the cooldown is lifted, and scales down to no less than min_agents when
 * the queue drains; each decision in the history (newest first, paged) and delivered to an
 * HTTPS receiver with a signature Python's hmac verifies. Then validation, the per-tenant
 * limit, the audit trail, and tenant isolation. */
#include <criterion/criterion.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/rx-https.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op;
static pid_t prov;         /* the provisioner, while a test runs it */
static char prov_root[64]; /* its state root */

static void setup(void)
{
    rx_make_certs();
    static char ca[128];
    snprintf(ca, sizeof(ca), "ORCHD_WEBHOOKS_CA_FILE=%s/ca.pem", rx_certdir);
    /* Rounds every 100 ms keep the test short; the cooldowns are the policy's own. */
    const char *env[] = {"ORCHD_WEBHOOKS_ALLOW_PRIVATE=true", ca, "ORCHD_WEBHOOKS_POLL=20ms",
                         "ORCHD_SCALING_INTERVAL=100ms", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    rx_start();
}

static void teardown(void)
{
    if (prov > 0) {
        /* A failed test left it running: it stops its agents when it exits. */
        kill(prov, SIGTERM);
        waitpid(prov, NULL, 0);
    }
    if (prov_root[0])
        th_rm_rf(prov_root);
    free(op);
    th_server_stop(&srv);
    rx_stop();
}

TestSuite(scaling, .init = setup, .fini = teardown, .timeout = 240);

#define WAIT_NS (30ull * 1000000000ull)

/* GET path as token, 200 expected; the body (caller json_decref()s). */
static json_t *get(const char *token, const char *path)
{
    struct th_resp r;
    th_http(&srv, "GET", path, token, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "GET %s: %ld %s", path, r.status, r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    return j;
}

static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* The policy's evaluation count. */
static long long evaluations(const char *token, const char *id)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s", id);
    json_t *p = get(token, path);
    long long n = num(p, "evaluations");
    json_decref(p);
    return n;
}

/* The policy's history (newest first), waiting (bounded) until it has n decisions. */
static json_t *history_wait(const char *token, const char *id, size_t n)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s/history", id);
    uint64_t deadline = clock_mono_ns() + WAIT_NS;
    for (;;) {
        json_t *h = get(token, path);
        json_t *items = json_incref(json_object_get(h, "items"));
        json_decref(h);
        if (json_array_size(items) >= n) {
            cr_assert_eq(json_array_size(items), n, "more decisions than expected");
            return items;
        }
        json_decref(items);
        cr_assert(clock_mono_ns() < deadline, "the policy never made %zu decisions", n);
        usleep(20000);
    }
}

/* Wait (bounded) until the evaluator has evaluated the policy `more` more times: proof
 * that it ran while the policy held. */
static void evaluations_pass(const char *token, const char *id, long long more)
{
    long long want = evaluations(token, id) + more;
    uint64_t deadline = clock_mono_ns() + WAIT_NS;
    while (evaluations(token, id) < want) {
        cr_assert(clock_mono_ns() < deadline, "the evaluator stopped evaluating");
        usleep(20000);
    }
}

static void check_decision(const json_t *h, const char *type, long long previous, long long desired,
                           long long depth)
{
    cr_assert_str_eq(json_string_value(json_object_get(h, "type")), type);
    cr_assert_eq(num(h, "previous_agents"), previous);
    cr_assert_eq(num(h, "desired_agents"), desired);
    const json_t *in = json_object_get(h, "inputs");
    cr_assert_eq(num(in, "queue_depth"), depth, "%s: depth %lld", type, num(in, "queue_depth"));
    cr_assert_eq(num(in, "agents"), 0);
}

Test(scaling, scale_up_holds_in_cooldown_then_scales_down_within_min_and_max)
{
    char *tenant = th_tenant(&srv, op, "sc-a", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", admin, "{\"name\":\"work\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"url\": \"https://127.0.0.1:%d/hook\", \"events\": [\"scale.up\", \"scale.down\"]}",
             rx.port);
    th_http(&srv, "POST", "/api/v1/webhooks", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *secret = strdup(th_str_of(&r, "secret"));
    char *hook = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    /* Five jobs and no agent: 5 queued per agent (no agent counts as one). */
    char *jobs[5];
    for (int i = 0; i < 5; i++)
        jobs[i] =
            th_job_submit(&srv, admin, json_pack("{s:s, s:s}", "command", "true", "queue", "work"));

    th_http(&srv, "POST", "/api/v1/scaling/policies", admin,
            "{\"name\": \"work-pool\", \"queue\": \"work\", \"up_depth_per_agent\": 2,"
            " \"up_step\": 2, \"up_cooldown_s\": 3600, \"down_depth_per_agent\": 0,"
            " \"down_step\": 5, \"down_cooldown_s\": 0, \"min_agents\": 1, \"max_agents\": 3}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    cr_assert_str_eq(th_str_of(&r, "queue"), "work");
    th_resp_free(&r);

    /* Up by the step: from none to 2. */
    json_t *h = history_wait(admin, id, 1);
    check_decision(json_array_get(h, 0), "scale.up", 0, 2, 5);
    json_decref(h);

    /* Still 5 per agent, but within the hour's cooldown: the evaluator runs, nothing more. */
    evaluations_pass(admin, id, 3);
    h = history_wait(admin, id, 1);
    json_decref(h);
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s", id);
    json_t *p = get(admin, path);
    cr_assert_eq(num(p, "desired_agents"), 2);
    cr_assert_eq(num(json_object_get(p, "last_evaluation"), "queue_depth"), 5);
    json_decref(p);
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s/deliveries", hook);
    json_t *d = get(admin, path);
    cr_assert_eq(json_array_size(json_object_get(d, "items")), 1, "one event in the cooldown");
    json_decref(d);

    /* The cooldown lifted: up again, by 2 but no further than max_agents (3), then held at
     * the maximum. */
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s", id);
    th_http(&srv, "PATCH", path, admin, "{\"up_cooldown_s\": 0}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    h = history_wait(admin, id, 2);
    check_decision(json_array_get(h, 0), "scale.up", 2, 3, 5);
    json_decref(h);
    evaluations_pass(admin, id, 3);
    json_decref(history_wait(admin, id, 2));

    /* The queue drains: down by 5, but no lower than min_agents (1), then held there. */
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", jobs[i]);
        th_http(&srv, "POST", path, admin, NULL, NULL, &r);
        cr_assert_lt(r.status, 300, "%s", r.body);
        th_resp_free(&r);
    }
    h = history_wait(admin, id, 3);
    check_decision(json_array_get(h, 0), "scale.down", 3, 1, 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(h, 0), "reason")), "idle");
    json_decref(h);
    evaluations_pass(admin, id, 3);
    json_decref(history_wait(admin, id, 3));

    /* The three events reached the receiver, signed, with the numbers that fired them. */
    rx_wait(3);
    static const char *const types[] = {"scale.up", "scale.up", "scale.down"};
    static const long long desired[] = {2, 3, 1}, depth[] = {5, 5, 0};
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&rx.mu);
        json_error_t je;
        json_t *ev = json_loads(rx.reqs[i].body, 0, &je);
        pthread_mutex_unlock(&rx.mu);
        cr_assert_not_null(ev);
        cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), types[i]);
        const json_t *data = json_object_get(ev, "data");
        cr_assert_str_eq(json_string_value(json_object_get(data, "policy_id")), id);
        cr_assert_str_eq(json_string_value(json_object_get(data, "queue")), "work");
        cr_assert_eq(num(data, "desired_agents"), desired[i]);
        cr_assert_eq(num(data, "queue_depth"), depth[i]);
        cr_assert_eq(num(data, "min_agents"), 1);
        cr_assert_eq(num(data, "max_agents"), 3);
        cr_assert_eq(num(data, "agents"), 0);
        cr_assert(json_is_number(json_object_get(data, "utilisation")));
        const json_t *th = json_object_get(data, "thresholds");
        cr_assert_eq(json_number_value(json_object_get(th, "up_depth_per_agent")), 2.0);
        cr_assert_eq(json_number_value(json_object_get(th, "down_depth_per_agent")), 0.0);
        cr_assert(json_is_null(json_object_get(th, "up_utilisation")));
        json_decref(ev);
        rx_verify_with_python(secret, i);
    }

    /* The history pages newest first. */
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s/history?limit=2", id);
    json_t *pg = get(admin, path);
    json_t *items = json_object_get(pg, "items");
    cr_assert_eq(json_array_size(items), 2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "type")),
                     "scale.down");
    const char *cursor = json_string_value(json_object_get(pg, "next_cursor"));
    cr_assert_not_null(cursor);
    snprintf(path, sizeof(path), "/api/v1/scaling/policies/%s/history?limit=2&cursor=%s", id,
             cursor);
    json_t *pg2 = get(admin, path);
    items = json_object_get(pg2, "items");
    cr_assert_eq(json_array_size(items), 1);
    check_decision(json_array_get(items, 0), "scale.up", 0, 2, 5);
    json_decref(pg2);
    json_decref(pg);

    for (int i = 0; i < 5; i++)
        free(jobs[i]);
    free(id), free(hook), free(secret), free(admin), free(tenant);
}

/* POST body expecting status and, for a problem, the field it names. */
static void refused(const char *token, const char *method, const char *path, const char *body,
                    long status, const char *field)
{
    struct th_resp r;
    th_http(&srv, method, path, token, body, NULL, &r);
    cr_expect_eq(r.status, status, "%s: %ld %s", body, r.status, r.body);
    if (field)
        cr_expect_str_eq(th_str_of(&r, "field"), field, "%s: %s", body, r.body);
    th_resp_free(&r);
}

Test(scaling, bad_policies_are_refused_naming_the_field)
{
    char *tenant = th_tenant(&srv, op, "sc-b", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    static const char *const P = "/api/v1/scaling/policies";
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"name\": \"p\", \"up_depth_per_agent\": 1}", "max_agents"},
        {"{\"max_agents\": 3, \"up_depth_per_agent\": 1}", "name"},
        {"{\"name\": \"p\", \"max_agents\": 3}", "up_depth_per_agent"},
        {"{\"name\": \"bad name\", \"max_agents\": 3, \"up_depth_per_agent\": 1}", "name"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 0}", "up_depth_per_agent"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 100001}",
         "up_depth_per_agent"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_utilisation\": 1.5}", "up_utilisation"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_utilisation\": \"high\"}", "up_utilisation"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_utilisation\": 0.8, \"down_utilisation\": 0.8}",
         "down_utilisation"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 2,"
         " \"down_depth_per_agent\": 2}",
         "down_depth_per_agent"},
        {"{\"name\": \"p\", \"max_agents\": 0, \"up_depth_per_agent\": 1}", "max_agents"},
        {"{\"name\": \"p\", \"max_agents\": 10001, \"up_depth_per_agent\": 1}", "max_agents"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"min_agents\": 4, \"up_depth_per_agent\": 1}",
         "min_agents"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1, \"up_step\": 0}",
         "up_step"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1, \"down_step\": 1001}",
         "down_step"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1,"
         " \"up_cooldown_s\": 86401}",
         "up_cooldown_s"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1,"
         " \"down_cooldown_s\": -1}",
         "down_cooldown_s"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1, \"queue\": \"nope\"}",
         "queue"},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1,"
         " \"requirements\": {\"bad key\": \"x\"}}",
         NULL},
        {"{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1, \"colour\": 1}",
         "colour"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        refused(admin, "POST", P, cases[i].body, 422, cases[i].field);

    /* A viewer reads but does not write. */
    char *viewer = th_tenant_token(&srv, op, tenant, "viewer");
    refused(viewer, "POST", P, "{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1}",
            403, NULL);

    /* A PATCH is checked against the whole policy it makes. */
    struct th_resp r;
    th_http(&srv, "POST", P, admin,
            "{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 4,"
            " \"requirements\": {\"os\": \"linux\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_eq(num(r.json, "min_agents"), 0);
    cr_assert_eq(num(r.json, "up_step"), 1);
    cr_assert_eq(num(r.json, "up_cooldown_s"), 60);
    cr_assert_eq(num(r.json, "down_cooldown_s"), 300);
    cr_assert(json_is_null(json_object_get(r.json, "queue")));
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", P, th_str_of(&r, "id"));
    th_resp_free(&r);
    refused(admin, "PATCH", path, "{\"min_agents\": 4}", 422, "min_agents");
    refused(admin, "PATCH", path, "{\"down_depth_per_agent\": 4}", 422, "down_depth_per_agent");
    refused(admin, "PATCH", path, "{\"up_depth_per_agent\": null}", 422, "up_depth_per_agent");
    refused(admin, "PATCH", path, "{\"up_depth_per_agent\": null, \"up_utilisation\": 0.9}", 200,
            NULL);
    refused(admin, "POST", P, "{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1}",
            409, "name");

    /* At most 50 policies per tenant (49 more written directly: the API's request rate
     * limit is not what this tests). */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO scaling_policies (id, tenant_id, name, up_depth_per_agent, up_step,"
             " down_step, up_cooldown_s, down_cooldown_s, min_agents, max_agents, enabled)"
             " SELECT gen_random_uuid(), '%s', 'p' || i, 1, 1, 1, 60, 300, 0, 3, false"
             " FROM generate_series(1, 49) i",
             tenant);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
    refused(admin, "POST", P,
            "{\"name\": \"one-more\", \"max_agents\": 3, \"up_depth_per_agent\": 1}", 409, NULL);

    /* Audited like other resources. */
    th_http(&srv, "GET", "/api/v1/audit", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, "scaling_policy.create"));
    cr_assert_not_null(strstr(r.body, "scaling_policy.update"));
    th_resp_free(&r);
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    refused(admin, "GET", path, NULL, 404, NULL);
    th_http(&srv, "GET", "/api/v1/audit", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, "scaling_policy.delete"));
    th_resp_free(&r);
    free(viewer), free(admin), free(tenant);
}

Test(scaling, another_tenant_cannot_see_or_touch_a_policy)
{
    char *ta = th_tenant(&srv, op, "sc-c", "standard");
    char *tb = th_tenant(&srv, op, "sc-d", "standard");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    static const char *const P = "/api/v1/scaling/policies";
    struct th_resp r;
    th_http(&srv, "POST", P, a,
            "{\"name\": \"mine\", \"max_agents\": 3, \"up_depth_per_agent\": 1}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char path[160], hist[200];
    snprintf(path, sizeof(path), "%s/%s", P, th_str_of(&r, "id"));
    snprintf(hist, sizeof(hist), "%s/history", path);
    th_resp_free(&r);

    refused(b, "GET", path, NULL, 404, NULL);
    refused(b, "GET", hist, NULL, 404, NULL);
    refused(b, "PATCH", path, "{\"max_agents\": 5}", 404, NULL);
    refused(b, "DELETE", path, NULL, 404, NULL);
    json_t *l = get(b, P);
    cr_assert_eq(json_array_size(json_object_get(l, "items")), 0);
    json_decref(l);
    /* The same name is free in another tenant. */
    refused(b, "POST", P, "{\"name\": \"mine\", \"max_agents\": 3, \"up_depth_per_agent\": 1}", 201,
            NULL);

    json_t *p = get(a, path);
    cr_assert_eq(num(p, "max_agents"), 3, "B's PATCH changed nothing");
    json_decref(p);
    l = get(a, P);
    cr_assert_eq(json_array_size(json_object_get(l, "items")), 1);
    json_decref(l);
    free(a), free(b), free(ta), free(tb);
}

/* Fail the test showing the provisioner's log and its agents'. */
static void logs_fail(const char *log, const char *what)
{
    struct th_run r;
    const char *argv[] = {"/bin/sh", "-c", "tail -n 30 \"$0\" $(dirname \"$0\")/*/agent.log", log,
                          NULL};
    th_run(&r, argv, NULL, 10000);
    cr_assert_fail("%s: never %s:\n%s", log, what, th_str(&r.out));
}

/* Wait (bounded) until file holds needle; returns the text after it on its line (static). */
static const char *file_wait(const char *file, const char *needle)
{
    static char line[512];
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (;;) {
        FILE *f = fopen(file, "r");
        while (f && fgets(line, sizeof(line), f)) {
            char *at = strstr(line, needle);
            if (at) {
                fclose(f);
                return at + strlen(needle);
            }
        }
        if (f)
            fclose(f);
        if (clock_mono_ns() >= deadline)
            logs_fail(file, needle);
        usleep(50000);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* docs/operations.md's provisioner (tools/provisioner.py) as the receiver: scale.up makes
 * it enrol and start real agents, which run the queue's jobs; the drained queue's
 * scale.down makes it stop them. */
Test(scaling, the_provisioner_starts_and_stops_real_agents)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char *tenant = th_tenant(&srv, op, "sc-e", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", admin, "{\"name\":\"auto\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", admin,
            "{\"name\": \"provisioner\", \"max_uses\": 10}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char root[128], file[192], secretf[192], log[192], cert[160], key[160], ca[160], url[96];
    /* Not under rx_certdir (0700): the job user must pass through to the agents' work/. */
    snprintf(prov_root, sizeof(prov_root), "/tmp/orch-prov-XXXXXX");
    cr_assert_not_null(mkdtemp(prov_root));
    cr_assert_eq(chmod(prov_root, 0711), 0);
    snprintf(root, sizeof(root), "%s", prov_root);
    snprintf(file, sizeof(file), "%s/enrol-token", root);
    write_file(file, th_str_of(&r, "token"));
    th_resp_free(&r);
    snprintf(secretf, sizeof(secretf), "%s/secret", root);
    write_file(secretf, "not yet");
    snprintf(log, sizeof(log), "%s/provisioner.log", root);
    snprintf(cert, sizeof(cert), "%s/server.pem", rx_certdir);
    snprintf(key, sizeof(key), "%s/server.key", rx_certdir);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);

    prov = fork();
    cr_assert_neq(prov, -1);
    if (prov == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        putenv("ORCH_AGENT_LOG_LEVEL=debug");
        execl("/usr/bin/python3", "python3", th_env("ORCH_TEST_PROVISIONER"), "--listen",
              "127.0.0.1:0", "--cert", cert, "--key", key, "--secret-file", secretf, "--server",
              srv.base, "--ca-file", ca, "--enroll-token-file", file, "--state-root", root,
              "--agent", th_env("ORCH_TEST_AGENT"), "--name-prefix", "auto", (char *)NULL);
        _exit(127);
    }
    int port = (int)strtol(file_wait(log, "op=listen address=127.0.0.1 port="), NULL, 10);
    cr_assert_gt(port, 0);

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/orch", port);
    json_t *hb = json_pack("{s:s, s:[ss]}", "url", url, "events", "scale.up", "scale.down");
    char *hbs = json_dumps(hb, 0);
    json_decref(hb);
    th_http(&srv, "POST", "/api/v1/webhooks", admin, hbs, NULL, &r);
    free(hbs);
    cr_assert_eq(r.status, 201, "%s", r.body);
    write_file(secretf, th_str_of(&r, "secret"));
    th_resp_free(&r);

    char *jobs[3];
    for (int i = 0; i < 3; i++)
        jobs[i] =
            th_job_submit(&srv, admin, json_pack("{s:s, s:s}", "command", "true", "queue", "auto"));
    th_http(&srv, "POST", "/api/v1/scaling/policies", admin,
            "{\"name\": \"auto\", \"queue\": \"auto\", \"up_depth_per_agent\": 1, \"up_step\": 2,"
            " \"up_cooldown_s\": 0, \"down_depth_per_agent\": 0, \"down_utilisation\": 0,"
            " \"down_step\": 2, \"down_cooldown_s\": 0, \"min_agents\": 0, \"max_agents\": 2}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    /* scale.up to 2: the provisioner starts two agents, which run the three jobs. */
    file_wait(log, "op=event type=scale.up desired=2");
    file_wait(log, "op=start agent=1");
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (int i = 0; i < 3; i++) {
        for (;;) {
            json_t *j = th_job(&srv, admin, jobs[i]);
            bool done = strcmp(json_string_value(json_object_get(j, "status")), "succeeded") == 0;
            json_decref(j);
            if (done)
                break;
            if (clock_mono_ns() >= deadline)
                logs_fail(log, "were the jobs run");
            usleep(100000);
        }
    }
    /* The queue drained and the agents idle: scale.down to 0, and both are stopped. */
    file_wait(log, "op=event type=scale.down desired=0");
    file_wait(log, "op=stop agent=1");
    file_wait(log, "op=stop agent=0");
    json_t *h = get(admin, "/api/v1/agents");
    cr_assert_eq(json_array_size(json_object_get(h, "items")), 2, "two agents enrolled");
    json_decref(h);
    snprintf(file, sizeof(file), "/api/v1/scaling/policies/%s/history", id);
    h = get(admin, file);
    json_t *items = json_object_get(h, "items");
    cr_assert_eq(json_array_size(items), 2);
    check_decision(json_array_get(items, 1), "scale.up", 0, 2, 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "type")),
                     "scale.down");
    json_decref(h);

    kill(prov, SIGTERM);
    int st;
    cr_assert_eq(waitpid(prov, &st, 0), prov);
    prov = 0;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the provisioner exited %d", st);
    for (int i = 0; i < 3; i++)
        free(jobs[i]);
    free(id), free(admin), free(tenant);
}

/* A platform operator's policy for a shared pool: it counts the queued jobs of every tenant
 * the pool admits (and of no other) against the pool's agents, fires scale.up through the
 * operator's own webhook (the platform tenant's) with the pool's id, and keeps its history
 * for the operator. Tenants can neither name a pool nor see or touch the operator's policy,
 * and the operator sees no tenant's. */
Test(scaling, an_operators_pool_policy_scales_on_admitted_tenants_jobs)
{
    char *ta = th_tenant(&srv, op, "sc-pa", "standard");
    char *tb = th_tenant(&srv, op, "sc-pb", "free");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    static const char *const P = "/api/v1/scaling/policies";
    struct th_resp r;
    char body[512];
    snprintf(body, sizeof(body), "{\"name\": \"shared\", \"tenants\": [\"%s\"]}", ta);
    th_http(&srv, "POST", "/api/v1/pools", op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *pool = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    /* The operator subscribes its own webhook. */
    snprintf(body, sizeof(body),
             "{\"url\": \"https://127.0.0.1:%d/pool\", \"events\": [\"scale.up\"]}", rx.port);
    th_http(&srv, "POST", "/api/v1/webhooks", op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *secret = strdup(th_str_of(&r, "secret"));
    char *hook = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    /* Four jobs of the admitted tenant, none with an agent of its own; two of a tenant
     * the pool does not admit, which the pool's policy must not count. */
    char *jobs[6];
    for (int i = 0; i < 6; i++)
        jobs[i] = th_job_submit(&srv, i < 4 ? a : b, json_pack("{s:s}", "command", "true"));

    /* What a policy may name, by who makes it. */
    snprintf(body, sizeof(body),
             "{\"name\": \"p\", \"pool\": \"%s\", \"max_agents\": 3, \"up_depth_per_agent\": 1}",
             pool);
    refused(a, "POST", P, body, 422, "pool");
    refused(op, "POST", P, "{\"name\": \"p\", \"max_agents\": 3, \"up_depth_per_agent\": 1}", 422,
            "pool");
    refused(op, "POST", P,
            "{\"name\": \"p\", \"pool\": \"0190a0c0-0000-7000-8000-000000000000\","
            " \"max_agents\": 3, \"up_depth_per_agent\": 1}",
            422, "pool");
    refused(op, "POST", P,
            "{\"name\": \"p\", \"pool\": \"nope\", \"max_agents\": 3,"
            " \"up_depth_per_agent\": 1}",
            422, "pool");
    snprintf(body, sizeof(body),
             "{\"name\": \"p\", \"pool\": \"%s\", \"queue\": \"work\", \"max_agents\": 3,"
             " \"up_depth_per_agent\": 1}",
             pool);
    refused(op, "POST", P, body, 422, "queue");

    snprintf(body, sizeof(body),
             "{\"name\": \"shared-up\", \"pool\": \"%s\", \"up_depth_per_agent\": 2,"
             " \"up_step\": 3, \"up_cooldown_s\": 3600, \"max_agents\": 5}",
             pool);
    th_http(&srv, "POST", P, op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    cr_assert_str_eq(th_str_of(&r, "pool"), pool);
    th_resp_free(&r);

    /* 4 queued of the admitted tenant, no pool agent: up by the step, 0 to 3. */
    json_t *h = history_wait(op, id, 1);
    check_decision(json_array_get(h, 0), "scale.up", 0, 3, 4);
    json_decref(h);

    /* The event reached the operator's receiver, signed, naming the pool. */
    rx_wait(1);
    pthread_mutex_lock(&rx.mu);
    json_error_t je;
    json_t *ev = json_loads(rx.reqs[0].body, 0, &je);
    pthread_mutex_unlock(&rx.mu);
    cr_assert_not_null(ev);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), "scale.up");
    const json_t *data = json_object_get(ev, "data");
    cr_assert_str_eq(json_string_value(json_object_get(data, "pool_id")), pool);
    cr_assert_str_eq(json_string_value(json_object_get(data, "policy_id")), id);
    cr_assert_eq(num(data, "queue_depth"), 4);
    cr_assert_eq(num(data, "desired_agents"), 3);
    cr_assert(json_is_null(json_object_get(data, "queue")));
    json_decref(ev);
    rx_verify_with_python(secret, 0);
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s/deliveries", hook);
    json_t *d = get(op, path);
    cr_assert_eq(json_array_size(json_object_get(d, "items")), 1);
    json_decref(d);

    /* Tenants see neither the operator's policy nor its webhook. */
    char ppath[160], hist[200], hpath[160];
    snprintf(ppath, sizeof(ppath), "%s/%s", P, id);
    snprintf(hist, sizeof(hist), "%s/history", ppath);
    snprintf(hpath, sizeof(hpath), "/api/v1/webhooks/%s", hook);
    const char *tenants[] = {a, b};
    for (int i = 0; i < 2; i++) {
        refused(tenants[i], "GET", ppath, NULL, 404, NULL);
        refused(tenants[i], "GET", hist, NULL, 404, NULL);
        refused(tenants[i], "PATCH", ppath, "{\"max_agents\": 9}", 404, NULL);
        refused(tenants[i], "DELETE", ppath, NULL, 404, NULL);
        refused(tenants[i], "GET", hpath, NULL, 404, NULL);
        json_t *l = get(tenants[i], P);
        cr_assert_eq(json_array_size(json_object_get(l, "items")), 0);
        json_decref(l);
        l = get(tenants[i], "/api/v1/webhooks");
        cr_assert_eq(json_array_size(json_object_get(l, "items")), 0);
        json_decref(l);
    }
    /* Nor the operator a tenant's (its own are the pools'). */
    th_http(&srv, "POST", P, a, "{\"name\": \"own\", \"max_agents\": 3, \"up_depth_per_agent\": 1}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char tpath[160];
    snprintf(tpath, sizeof(tpath), "%s/%s", P, th_str_of(&r, "id"));
    th_resp_free(&r);
    refused(op, "GET", tpath, NULL, 404, NULL);
    json_t *l = get(op, P);
    cr_assert_eq(json_array_size(json_object_get(l, "items")), 1);
    json_decref(l);

    /* The policy is the platform tenant's row, and so is its delivery. */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT tenant_id, pool_id FROM scaling_policies WHERE id = '%s'",
             id);
    PGresult *res = th_pg_ok(pg, sql);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "00000000-0000-4000-8000-000000000001");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), pool);
    PQclear(res);
    snprintf(sql, sizeof(sql), "SELECT tenant_id FROM webhook_deliveries WHERE webhook_id = '%s'",
             hook);
    res = th_pg_ok(pg, sql);
    cr_assert_eq(PQntuples(res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "00000000-0000-4000-8000-000000000001");
    PQclear(res);
    PQfinish(pg);

    /* The operator updates and deletes it; deleting the pool would too. */
    th_http(&srv, "PATCH", ppath, op, "{\"max_agents\": 9}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(num(r.json, "max_agents"), 9);
    th_resp_free(&r);
    refused(op, "PATCH", ppath, "{\"pool\": null}", 422, "pool");
    refused(op, "DELETE", ppath, NULL, 204, NULL);
    refused(op, "GET", ppath, NULL, 404, NULL);

    for (int i = 0; i < 6; i++)
        free(jobs[i]);
    free(id), free(hook), free(secret), free(pool), free(a), free(b), free(ta), free(tb);
}
