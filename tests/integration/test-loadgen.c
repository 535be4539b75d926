/* orch-loadgen (tools/loadgen) against the real orchd: simulated agents enrol, take every
 * job through the agent protocol and report its result; the enrolment cache makes a second
 * run enrol nobody. Keeps tools/bench-dispatch.sh working. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "loadgen", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(loadgen, .init = setup, .fini = teardown, .timeout = 240);

/* Run orch-loadgen with its --json report parsed into *report (caller json_decref()s). */
static int loadgen(const char *enrol_token, const char *state, int agents, int jobs,
                   json_t **report, struct th_run *r)
{
    char url[96], ca[128], na[16], nj[16];
    snprintf(url, sizeof(url), "%s", srv.base);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    snprintf(na, sizeof(na), "%d", agents);
    snprintf(nj, sizeof(nj), "%d", jobs);
    const char *argv[] = {th_env("ORCH_TEST_LOADGEN"),
                          "--url",
                          url,
                          "--ca",
                          ca,
                          "--api-key",
                          admin,
                          "--enrol-token",
                          enrol_token,
                          "--state",
                          state,
                          "--agents",
                          na,
                          "--slots",
                          "2",
                          "--jobs",
                          nj,
                          "--run-ms",
                          "20",
                          "--log-bytes",
                          "100",
                          "--batch",
                          "20",
                          "--source-addrs",
                          "127.0.0.1,127.0.0.2",
                          "--duration",
                          "120",
                          "--json",
                          NULL};
    th_run(r, argv, NULL, 180000);
    *report = json_loads(th_str(&r->out), 0, NULL);
    return r->status;
}

Test(loadgen, all_jobs_complete_and_the_cache_spares_enrolment)
{
    struct th_resp t;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", admin, "{\"name\":\"lg\",\"max_uses\":5}",
            NULL, &t);
    cr_assert_eq(t.status, 201, "%s", t.body);
    char *etok = strdup(th_str_of(&t, "token"));
    th_resp_free(&t);
    char state[160];
    snprintf(state, sizeof(state), "%s/loadgen.json", srv.dir);

    struct th_run r;
    json_t *rep = NULL;
    int st = loadgen(etok, state, 5, 50, &rep, &r);
    cr_assert_eq(st, 0, "orch-loadgen: %d: %s %s", st, th_str(&r.out), th_str(&r.err));
    cr_assert_not_null(rep, "no JSON report: %s", th_str(&r.out));
    cr_expect_eq(json_integer_value(json_object_get(rep, "online")), 5);
    cr_expect_eq(json_integer_value(json_object_get(rep, "submitted")), 50);
    cr_expect_eq(json_integer_value(json_object_get(rep, "assigned")), 50);
    cr_expect_eq(json_integer_value(json_object_get(rep, "completed")), 50);
    cr_expect_eq(json_integer_value(json_object_get(rep, "errors")), 0, "%s", th_str(&r.out));
    cr_expect_gt(json_real_value(json_object_get(rep, "placements_per_s")), 0);
    json_decref(rep);
    th_run_free(&r);

    /* The server saw what the load generator says: 50 jobs succeeded, each with output. */
    struct th_resp j;
    th_http(&srv, "GET", "/api/v1/jobs?status=succeeded&limit=100", admin, NULL, NULL, &j);
    cr_assert_eq(j.status, 200, "%s", j.body);
    cr_expect_eq(json_array_size(json_object_get(j.json, "items")), 50, "%s", j.body);
    th_resp_free(&j);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    cr_expect_eq(th_pg_long(pg, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"), 50);
    cr_expect_eq(th_pg_long(pg, "SELECT count(*) FROM agents"), 5);
    PQfinish(pg);

    /* Again from the cache: the token is used up, so an enrolment would fail. */
    st = loadgen(etok, state, 5, 10, &rep, &r);
    cr_assert_eq(st, 0, "orch-loadgen again: %d: %s %s", st, th_str(&r.out), th_str(&r.err));
    cr_expect_eq(json_integer_value(json_object_get(rep, "completed")), 10);
    json_decref(rep);
    th_run_free(&r);
    pg = th_pg_connect("postgres", srv.db);
    cr_expect_eq(th_pg_long(pg, "SELECT count(*) FROM agents"), 5);
    PQfinish(pg);
    free(etok);
}
