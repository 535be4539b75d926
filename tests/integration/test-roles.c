/* Node roles (node.roles): a node runs only the roles it is given. A node with api and
 * gateway holds agents' long-polls but assigns nothing; a second node with the dispatcher
 * role assigns the queued jobs and wakes the first node's gateway through RabbitMQ; a node
 * without the gateway role refuses long-polls with 503. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <signal.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv, peer, peer2;
static char *op, *tenant, *admin;

static void setup(void)
{
    /* Debug: the wake-ups the front node takes from its queue are counted. A node name of
     * its own per test: the tests of the suite run at once on one RabbitMQ, and a node's
     * wake-up queue (orch.gw.<name>) is exclusive to one connection. */
    static char name[64];
    snprintf(name, sizeof(name), "ORCHD_NODE_NAME=front-%d", (int)getpid());
    const char *env[] = {"ORCHD_NODE_ROLES=api,gateway,reaper", name,
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", "ORCHD_LOG_LEVEL=debug", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    /* Also when a failed assertion left the test before it stopped the peer, which would
     * hold the database open. */
    if (peer.pid > 0)
        th_server_stop_peer(&peer);
    if (peer2.pid > 0)
        th_server_stop_peer(&peer2);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(roles, .init = setup, .fini = teardown, .timeout = 120);

static const char *status_of(struct th_server *s, const char *id)
{
    static char st[32];
    json_t *j = th_job(s, admin, id);
    snprintf(st, sizeof(st), "%s", json_string_value(json_object_get(j, "status")));
    json_decref(j);
    return st;
}

static void beat(struct th_server *s, const char *cred)
{
    struct th_resp r;
    th_http(s, "POST", "/api/v1/agent/heartbeat", cred,
            "{\"status\":\"idle\",\"slots\":2,\"free_slots\":2,\"running\":[]}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
}

/* The wake-ups the front node took from its queue orch.gw.front, once more than n or after
 * ten of the agent's long-polls of a second each (which pace the look). */
static int wakeups_above(const char *cred, int n)
{
    int seen = th_log_count(&srv, "op=gateway.wake-up ");
    for (int i = 0; i < 10 && seen <= n; i++) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", cred, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        th_resp_free(&r);
        seen = th_log_count(&srv, "op=gateway.wake-up ");
    }
    return seen;
}

Test(roles, jobs_wait_for_a_node_with_the_dispatcher_role)
{
    cr_assert_eq(th_log_count(&srv, "roles=api,gateway,reaper"), 1, "ready line names the roles");
    char *cred = th_agent_register(&srv, admin, "a1");
    beat(&srv, cred);
    char *id = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "echo hi"));

    /* No dispatcher anywhere: the job stays queued. The agent's long-polls, held a second
     * each by the gateway, pace the look (eight dispatch ticks each): nothing comes. */
    for (int i = 0; i < 2; i++) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", cred, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        cr_assert_eq(json_array_size(json_object_get(r.json, "assignments")), 0, "%s", r.body);
        th_resp_free(&r);
        cr_assert_str_eq(status_of(&srv, id), "queued");
    }
    cr_assert_eq(th_log_count(&srv, "op=dispatch "), 0);

    /* A node with the dispatcher role (and api, no gateway) joins. */
    const char *penv[] = {"ORCHD_NODE_ROLES=api,dispatcher", NULL};
    th_server_start_peer_env(&peer, &srv, penv);
    cr_assert_eq(th_log_count(&peer, "roles=api,dispatcher"), 1);

    /* The agent's long-poll on the gateway node is answered with the job: the dispatcher
     * on the peer woke it through orch.gw.front. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/agent/assignments?wait=20", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *a = json_array_get(json_object_get(r.json, "assignments"), 0);
    cr_assert_not_null(a, "no assignment within 20 s: %s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(a, "job_id")), id);
    th_resp_free(&r);
    cr_assert_str_eq(status_of(&srv, id), "assigned");
    cr_assert_geq(th_log_wait(&peer, "op=dispatch ", 1, 10000), 1);
    cr_assert_gt(wakeups_above(cred, 0), 0, "the dispatcher on the peer sent no wake-up");

    /* The peer has no gateway: it refuses long-polls (plain and in a sync), clearly. */
    th_http(&peer, "GET", "/api/v1/agent/assignments?wait=5", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(th_str_of(&r, "detail"), "gateway"), "%s", r.body);
    char *retry = th_resp_header(&r, "Retry-After");
    cr_assert_not_null(retry);
    free(retry);
    th_resp_free(&r);
    th_http(&peer, "POST", "/api/v1/agent/sync", cred, "{\"assign\":true,\"wait\":5}", NULL, &r);
    cr_assert_eq(r.status, 503, "%s", r.body);
    th_resp_free(&r);
    /* Without waiting, the peer answers as any node does. */
    th_http(&peer, "GET", "/api/v1/agent/assignments?wait=0", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);

    /* A cancel made on the peer (no gateway there) wakes the agent through orch.gw.front:
     * its long-poll is answered with the cancel, not found by the checker's next look. */
    int wakes = th_log_count(&srv, "op=gateway.wake-up ");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    th_http(&peer, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202, "%s", r.body);
    th_resp_free(&r);
    cr_assert_gt(wakeups_above(cred, wakes), wakes, "the cancel on the peer sent no wake-up");

    th_server_stop_peer(&peer);
    free(id);
    free(cred);
}

/* The job id an agent's long-poll on the front node is handed within wait_s, or NULL. */
static char *assigned_within(const char *cred, int wait_s)
{
    json_t *a = th_agent_poll(&srv, cred, wait_s);
    char *id = a ? strdup(json_string_value(json_object_get(a, "job_id"))) : NULL;
    json_decref(a);
    return id;
}

/* Two nodes with the dispatcher role: one leads (places), the other stands by, and takes
 * over when the leader dies. */
Test(roles, one_dispatcher_leads_and_a_standby_takes_over)
{
    char *cred = th_agent_register(&srv, admin, "a1");
    beat(&srv, cred);
    const char *penv[] = {"ORCHD_NODE_ROLES=api,dispatcher", NULL};
    th_server_start_peer_env(&peer, &srv, penv);
    th_server_start_peer_env(&peer2, &srv, penv);
    const char *leading = "op=dispatch.lead state=leading";
    uint64_t deadline = clock_mono_ns() + 15ull * 1000000000ull;
    int a = 0, b = 0;
    while (a + b == 0 && clock_mono_ns() < deadline) {
        a = th_log_count(&peer, leading);
        b = th_log_count(&peer2, leading);
        if (a + b == 0)
            usleep(50000);
    }
    cr_assert_eq(a + b, 1, "leaders: %d and %d", a, b);
    struct th_server *leader = a ? &peer : &peer2, *standby = a ? &peer2 : &peer;

    char *id = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "echo hi"));
    char *got = assigned_within(cred, 20);
    cr_assert_not_null(got, "the leader placed nothing within 20 s");
    cr_assert_str_eq(got, id);
    free(got);
    free(id);
    cr_assert_geq(th_log_wait(leader, "op=dispatch ", 1, 10000), 1);
    cr_assert_eq(th_log_count(standby, "op=dispatch job="), 0, "the standby placed a job");
    cr_assert_eq(th_log_count(standby, leading), 0, "two leaders at once");

    /* The leader dies: its session ends with it, the standby takes the lock. */
    kill(leader->pid, SIGKILL);
    waitpid(leader->pid, NULL, 0);
    leader->pid = 0;
    cr_assert_eq(th_log_wait(standby, leading, 1, 15000), 1, "no standby took over");
    id = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "echo again"));
    got = assigned_within(cred, 20);
    cr_assert_not_null(got, "the new leader placed nothing within 20 s");
    cr_assert_str_eq(got, id);
    free(got);
    free(id);
    cr_assert_geq(th_log_wait(standby, "op=dispatch job=", 1, 10000), 1);
    th_server_stop_peer(standby);
    free(cred);
}

/* A result on a node without the dispatcher frees a slot that the leading dispatcher, on
 * another node, refills at once: PostgreSQL's notification of the job's end (the live
 * events) kicks it, where its own reread of the counts is a minute away here. */
Test(roles, a_slot_freed_on_another_node_is_refilled_at_once)
{
    char *cred = th_agent_register(&srv, admin, "a1");
    beat(&srv, cred); /* 2 slots */
    const char *penv[] = {"ORCHD_NODE_ROLES=api,dispatcher", "ORCHD_DISPATCH_REFRESH=60s",
                          "ORCHD_DISPATCH_RESYNC=600s", "ORCHD_DISPATCH_TICK=10s", NULL};
    th_server_start_peer_env(&peer, &srv, penv);
    char *ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true"));
    /* An answer may carry both. */
    char *got[2] = {NULL, NULL};
    int n = 0;
    uint64_t deadline = clock_mono_ns() + 20ull * 1000000000ull;
    while (n < 2 && clock_mono_ns() < deadline) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=5", cred, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        json_t *as = json_object_get(r.json, "assignments");
        for (size_t k = 0; k < json_array_size(as) && n < 2; k++)
            got[n++] = strdup(json_string_value(json_object_get(json_array_get(as, k), "job_id")));
        th_resp_free(&r);
    }
    cr_assert_eq(n, 2, "%d of the 2 assignments came within 20 s", n);
    /* The agent is full: the third waits. */
    int third = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(ids[i], got[0]) != 0 && strcmp(ids[i], got[1]) != 0)
            third = i;
    cr_assert_geq(third, 0);
    cr_assert_str_eq(status_of(&srv, ids[third]), "queued");
    /* One ends, reported to the front node. */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/result", got[0]);
    struct th_resp r;
    th_http(&srv, "POST", path, cred, "{\"epoch\":1,\"exit_code\":0}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    char *next = assigned_within(cred, 8);
    cr_assert_not_null(next, "the freed slot was not refilled within 8 s");
    cr_assert_str_eq(next, ids[third]);
    free(next);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    free(got[0]);
    free(got[1]);
    th_server_stop_peer(&peer);
    free(cred);
}

Test(roles, bad_role_lists_are_refused)
{
    const char *orchd = getenv("ORCH_TEST_ORCHD");
    const char *argv[] = {orchd, "check-config", NULL};
    struct {
        const char *env, *says;
        int status;
    } cases[] = {
        {"ORCHD_NODE_ROLES=api,gateway,dispatcher,reaper", "configuration is valid", 0},
        {"ORCHD_NODE_ROLES=api, reaper", "configuration is valid", 0},
        {"ORCHD_NODE_ROLES=gateway", "gateway needs api", 2},
        {"ORCHD_NODE_ROLES=api,scheduler", "configuration is valid", 0},
        {"ORCHD_NODE_ROLES=api,cron", "unknown role 'cron'", 2},
        {"ORCHD_NODE_ROLES=,", "no role", 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *env[] = {cases[i].env, NULL};
        struct th_run r;
        th_run(&r, argv, env, 30000);
        cr_assert_eq(r.status, cases[i].status, "%s: status %d", cases[i].env, r.status);
        const char *out = cases[i].status ? r.err.data : r.out.data;
        cr_assert(out && strstr(out, cases[i].says), "%s: %s", cases[i].env, out ? out : "");
        th_run_free(&r);
    }
}
