/* Package deployments on the real orchd, PostgreSQL and RabbitMQ with three real
 * `orch-agent`s (docs/packages.md, "Deploying a version to agents"): a deployment to a label
 * set reaches every matching agent and none other (its cache stays empty), its progress goes
 * pending -> fetching -> cached through the API with never more than max_parallel fetching,
 * an agent already holding the digest is cached at once; bad input is a 422 naming the
 * field, a viewer cannot deploy, and another tenant sees nothing. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin, *viewer;
static char dirs[3][64];
static pid_t pids[3];
static char ids[3][40];

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", "ORCHD_AGENT_LEASE=4s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "enterprise");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    viewer = th_tenant_token(&srv, op, tenant, "viewer");
    const char *labels[3] = {"role=web", "role=web", "role=db"};
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof(dirs[i]), "/tmp/orch-deploy-XXXXXX");
        cr_assert_not_null(mkdtemp(dirs[i]));
        char name[16];
        snprintf(name, sizeof(name), "dep-%d", i);
        th_agent_enrol(&srv, admin, dirs[i], name, labels[i], "1", ids[i]);
        pids[i] = th_agent_start(dirs[i]);
    }
}

static void teardown(void)
{
    for (int i = 0; i < 3; i++) {
        th_agent_stop(pids[i], SIGTERM);
        th_rm_rf(dirs[i]);
    }
    free(viewer);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(deployments, .init = setup, .fini = teardown, .timeout = 240);

static bool cached_on(int agent, const char *sha)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/cache/%s.pkg", dirs[agent], sha);
    return access(path, F_OK) == 0;
}

static long long count_of(json_t *doc, const char *state)
{
    return json_integer_value(json_object_get(json_object_get(doc, "counts"), state));
}

/* Poll the deployment until it is done (bounded); the most targets ever seen fetching at
 * once in *max_fetching and whether fetching was ever seen. Returns its last document. */
static json_t *wait_done(const char *id, long long *max_fetching)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s", id);
    int64_t end = clock_real_ms() + 90000;
    *max_fetching = 0;
    for (;;) {
        struct th_resp r;
        th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        json_t *doc = json_loads(r.body, 0, NULL);
        th_resp_free(&r);
        long long f = count_of(doc, "fetching");
        if (f > *max_fetching)
            *max_fetching = f;
        const char *st = json_string_value(json_object_get(doc, "status"));
        if (strcmp(st, "running") != 0 || clock_real_ms() > end)
            return doc;
        json_decref(doc);
        usleep(100000); /* pacing within the rate limit, not synchronisation */
    }
}

static char *deploy(const char *body, long expect)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/packages/deployments", admin, body, NULL, &r);
    cr_assert_eq(r.status, expect, "%s: %s", body, r.body);
    char *id = NULL;
    if (expect == 201) {
        /* Created with every target pending: the agents learn of it in a heartbeat. */
        json_t *doc = json_loads(r.body, 0, NULL);
        cr_assert_eq(count_of(doc, "pending"), count_of(doc, "total"), "%s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(doc, "status")), "running");
        json_decref(doc);
        id = strdup(th_str_of(&r, "id"));
    }
    th_resp_free(&r);
    return id;
}

Test(deployments, reaches_every_matching_agent_and_none_other)
{
    char sha[65];
    char *pkg = th_package(&srv, admin, "tool", "deployed", sha);
    char *id = deploy("{\"package\":\"tool@latest\",\"labels\":{\"role\":\"web\"},"
                      "\"max_parallel\":1,\"spread_ms\":300}",
                      201);
    long long maxf;
    json_t *doc = wait_done(id, &maxf);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "status")), "done", "%s",
                     json_dumps(doc, 0));
    cr_assert_eq(count_of(doc, "total"), 2);
    cr_assert_eq(count_of(doc, "cached"), 2, "%s", json_dumps(doc, 0));
    cr_assert_eq(maxf, 1, "max_parallel=1 held and fetching was seen (max %lld)", maxf);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "package_id")), pkg);
    json_decref(doc);
    cr_assert(cached_on(0, sha) && cached_on(1, sha), "the matching agents hold it");
    cr_assert(!cached_on(2, sha), "the third agent never fetched it");

    /* The targets: the two web agents, cached; never the db agent. */
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s/targets?limit=1", id);
    struct th_resp r;
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *page = json_loads(r.body, 0, NULL);
    th_resp_free(&r);
    cr_assert_eq(json_array_size(json_object_get(page, "items")), 1);
    cr_assert(json_is_string(json_object_get(page, "next_cursor")), "paged");
    json_t *t = json_array_get(json_object_get(page, "items"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(t, "state")), "cached");
    cr_assert_str_neq(json_string_value(json_object_get(t, "agent_id")), ids[2]);
    json_decref(page);

    /* Again: both already hold the digest, so both are cached at once. */
    char *again = deploy("{\"package\":\"tool@1.0.0\",\"labels\":{\"role\":\"web\"}}", 201);
    doc = wait_done(again, &maxf);
    cr_assert_eq(count_of(doc, "cached"), 2, "%s", json_dumps(doc, 0));
    json_decref(doc);
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s/targets", again);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert(strstr(r.body, "already in the agent's cache"), "%s", r.body);
    th_resp_free(&r);

    /* The list shows both, newest first. */
    th_http(&srv, "GET", "/api/v1/packages/deployments", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, id) && strstr(r.body, again));
    th_resp_free(&r);
    free(again);
    free(id);
    free(pkg);
}

static void refused(const char *body, const char *field)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/packages/deployments", admin, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s: %ld %s", body, r.status, r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), field, "%s: %s", body, r.body);
    th_resp_free(&r);
}

Test(deployments, validation_roles_and_isolation)
{
    char *pkg = th_package(&srv, admin, "tool", "v", NULL);
    refused("{\"labels\":{\"role\":\"web\"}}", "package");
    refused("{\"package\":\"tool\",\"labels\":{\"role\":\"web\"}}", "package");
    refused("{\"package\":\"nope@1.0.0\",\"labels\":{\"role\":\"web\"}}", "package");
    refused("{\"package\":\"tool@1.0.0\"}", "labels");
    refused("{\"package\":\"tool@1.0.0\",\"labels\":{}}", "labels");
    refused("{\"package\":\"tool@1.0.0\",\"labels\":{\"role\":\"nowhere\"}}", "labels");
    refused("{\"package\":\"tool@1.0.0\",\"labels\":{\"role\":\"web\"},\"max_parallel\":0}",
            "max_parallel");
    refused("{\"package\":\"tool@1.0.0\",\"labels\":{\"role\":\"web\"},\"spread_ms\":9999999}",
            "spread_ms");

    struct th_resp r;
    const char *body = "{\"package\":\"tool@1.0.0\",\"labels\":{\"role\":\"db\"},"
                       "\"spread_ms\":600000}";
    th_http(&srv, "POST", "/api/v1/packages/deployments", viewer, body, NULL, &r);
    cr_assert_eq(r.status, 403, "a viewer cannot deploy: %s", r.body);
    th_resp_free(&r);
    char *id = deploy(body, 201);

    /* Another tenant sees and touches nothing. */
    char *t2 = th_tenant(&srv, op, "other", "standard");
    char *a2 = th_tenant_token(&srv, op, t2, "admin");
    char path[160];
    const char *suffix[] = {"", "/targets"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s%s", id, suffix[i]);
        th_http(&srv, "GET", path, a2, NULL, NULL, &r);
        cr_assert_eq(r.status, 404, "%s: %s", path, r.body);
        th_resp_free(&r);
    }
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s", id);
    th_http(&srv, "DELETE", path, a2, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/packages/deployments", a2, NULL, NULL, &r);
    cr_assert(!strstr(r.body, id), "%s", r.body);
    th_resp_free(&r);

    /* Cancelled: its target waits out a ten-minute spread, so it has not been fetched. */
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "status"), "cancelled", "%s", r.body);
    th_resp_free(&r);
    free(a2);
    free(t2);
    free(id);
    free(pkg);
}

/* The stored bytes are damaged behind orchd's back (as a bad disk would): the agent's
 * check against the digest refuses them, and the target fails with the agent's reason. */
Test(deployments, a_failure_shows_its_reason)
{
    char sha[65];
    char *pkg = th_package(&srv, admin, "broken", "b", sha);
    char *url = th_pg_url("postgres", srv.db);
    PGconn *pg = PQconnectdb(url);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    char sql[256];
    /* One byte of the stored archive flipped: the same size, another SHA-256. */
    snprintf(sql, sizeof(sql),
             "UPDATE blob_chunks SET data = set_byte(data, 10, get_byte(data, 10) # 255)"
             " WHERE blob_key = 'pkg/%s' AND off = 0",
             sha);
    PGresult *res = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    cr_assert_str_eq(PQcmdTuples(res), "1");
    PQclear(res);
    PQfinish(pg);
    free(url);

    char *id = deploy("{\"package\":\"broken@1.0.0\",\"labels\":{\"role\":\"db\"},"
                      "\"spread_ms\":0}",
                      201);
    long long maxf;
    json_t *doc = wait_done(id, &maxf);
    cr_assert_eq(count_of(doc, "failed"), 1, "%s", json_dumps(doc, 0));
    json_decref(doc);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s/targets", id);
    struct th_resp r;
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    json_t *page = json_loads(r.body, 0, NULL);
    json_t *t = json_array_get(json_object_get(page, "items"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(t, "state")), "failed", "%s", r.body);
    const char *why = json_string_value(json_object_get(t, "reason"));
    cr_assert(why && why[0], "a reason: %s", r.body);
    cr_log_info("failure reason: %s", why);
    th_resp_free(&r);
    json_decref(page);
    cr_assert(!cached_on(2, sha), "nothing damaged was cached");
    free(id);
    free(pkg);
}

/* The state is PostgreSQL's: a deployment created before orchd restarts goes on after. */
Test(deployments, progress_survives_an_orchd_restart)
{
    char sha[65];
    char *pkg = th_package(&srv, admin, "steady", "s", sha);
    char *id = deploy("{\"package\":\"steady@1.0.0\",\"labels\":{\"role\":\"web\"},"
                      "\"max_parallel\":1,\"spread_ms\":1500}",
                      201);
    th_server_restart(&srv, SIGTERM);
    long long maxf;
    json_t *doc = wait_done(id, &maxf);
    cr_assert_eq(count_of(doc, "cached"), 2, "%s", json_dumps(doc, 0));
    json_decref(doc);
    cr_assert(cached_on(0, sha) && cached_on(1, sha) && !cached_on(2, sha));
    free(id);
    free(pkg);
}

/* An agent that goes away mid-fetch gives its place back: after a lease without a
 * heartbeat its target is pending again and the next agent is handed one. A ten-minute
 * spread keeps each handed-out agent waiting, so what is seen is only the handover. */
Test(deployments, an_agent_gone_mid_fetch_gives_its_place_back)
{
    char *pkg = th_package(&srv, admin, "slow", "s", NULL);
    char *id = deploy("{\"package\":\"slow@1.0.0\",\"labels\":{\"role\":\"web\"},"
                      "\"max_parallel\":1,\"spread_ms\":600000}",
                      201);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s/targets", id);
    /* Wait (bounded) for the one place to be taken; then stop that agent. */
    char first[40] = "";
    int64_t end = clock_real_ms() + 30000;
    while (!first[0] && clock_real_ms() < end) {
        struct th_resp r;
        th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
        json_t *page = json_loads(r.body, 0, NULL);
        th_resp_free(&r);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(page, "items"), i, t)
        {
            if (strcmp(json_string_value(json_object_get(t, "state")), "fetching") == 0)
                snprintf(first, sizeof(first), "%s",
                         json_string_value(json_object_get(t, "agent_id")));
        }
        json_decref(page);
        if (!first[0])
            usleep(100000); /* pacing, not synchronisation */
    }
    cr_assert(first[0], "one target was handed out");
    int gone = strcmp(first, ids[0]) == 0 ? 0 : 1;
    th_agent_stop(pids[gone], SIGKILL);
    pids[gone] = 0;

    /* The other agent takes the place; the gone one's target is pending again. */
    bool handed_over = false;
    end = clock_real_ms() + 60000;
    while (!handed_over && clock_real_ms() < end) {
        struct th_resp r;
        th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
        json_t *page = json_loads(r.body, 0, NULL);
        th_resp_free(&r);
        size_t i;
        json_t *t;
        int ok = 0;
        json_array_foreach(json_object_get(page, "items"), i, t)
        {
            const char *agent = json_string_value(json_object_get(t, "agent_id"));
            const char *st = json_string_value(json_object_get(t, "state"));
            if (strcmp(agent, ids[gone]) == 0 && strcmp(st, "pending") == 0 &&
                json_integer_value(json_object_get(t, "attempts")) == 1)
                ok++;
            if (strcmp(agent, ids[1 - gone]) == 0 && strcmp(st, "fetching") == 0)
                ok++;
        }
        json_decref(page);
        handed_over = ok == 2;
        if (!handed_over)
            usleep(200000); /* pacing, not synchronisation */
    }
    cr_assert(handed_over, "the place went to the other agent");
    free(id);
    free(pkg);
}
