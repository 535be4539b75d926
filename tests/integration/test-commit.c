/* The agents' group commit (server/report-batch.h, docs/scaling.md "Group commit"): the
 * heartbeats and reports of many agents share transactions, an exchange whose work fails
 * fails alone, and an exchange is answered only once its COMMIT has returned, so that a
 * report whose commit failed gets an error, is not recorded, and counts when the agent
 * sends it again. Real orchd, PostgreSQL and RabbitMQ; the agents are scripted (their
 * exchanges are sent by the test, concurrently, as many agents would). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/agent.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

#define AGENTS 6

static struct th_server srv;
static struct th_server msrv; /* the same orchd, its base the metrics listener */
static char *op, *tenant, *admin;
static char *creds[AGENTS];
static char ids[AGENTS][40];
static PGconn *pg; /* the schema owner's, for the faults this test injects */

static void setup(void)
{
    /* A long window and a batch of AGENTS items: exchanges sent together are committed
     * together, however loaded the machine is. */
    char max[48];
    snprintf(max, sizeof(max), "ORCHD_AGENT_BATCH_MAX=%d", AGENTS);
    const char *env[] = {"ORCHD_METRICS_PORT=0",
                         "ORCHD_METRICS_ADDRESS=127.0.0.1",
                         "ORCHD_AGENT_COMMIT_THREADS=1",
                         "ORCHD_AGENT_BATCH_WINDOW_US=100000",
                         max,
                         NULL};
    th_server_start(&srv, env);
    int port = th_metrics_port(&srv);
    cr_assert(port > 0, "no metrics_port in the ready line of %s", srv.log);
    msrv = srv;
    snprintf(msrv.base, sizeof(msrv.base), "http://127.0.0.1:%d", port);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "commit-co", "professional");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    pg = th_pg_connect("postgres", srv.db);
    for (int i = 0; i < AGENTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "gc-%d", i);
        creds[i] = th_agent_register(&srv, admin, name);
    }
}

static void teardown(void)
{
    if (pg)
        PQfinish(pg);
    pg = NULL;
    for (int i = 0; i < AGENTS; i++)
        free(creds[i]);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(commit, .init = setup, .fini = teardown, .timeout = 240);

/* A metric's value (a series without labels), 0 when absent. */
static double metric(const char *name)
{
    struct th_resp r;
    th_http(&msrv, "GET", "/metrics", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    double v = 0;
    size_t n = strlen(name);
    for (const char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, name, n) == 0 && l[n] == ' ')
            v = strtod(l + n + 1, NULL);
    th_resp_free(&r);
    return v;
}

/* One agent exchange, sent from a thread of its own. */
struct call {
    const char *path, *cred;
    char body[512];
    long status;
    json_t *json;
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    c->status = th_http_try(&srv, "POST", c->path, c->cred, c->body, &c->json);
    return NULL;
}

/* Send the n exchanges at once; each gets its status and answer. */
static void send_together(struct call *calls, int n)
{
    pthread_t t[AGENTS + 1];
    for (int i = 0; i < n; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, call_main, &calls[i]), 0);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void heartbeat_call(struct call *c, int agent, int round)
{
    memset(c, 0, sizeof(*c));
    c->path = PROTO_AGENT_PATH_HEARTBEAT;
    c->cred = creds[agent];
    snprintf(c->body, sizeof(c->body),
             "{\"status\":\"idle\",\"slots\":1,\"free_slots\":1,"
             "\"capabilities\":{\"round\":\"%d\"}}",
             round);
}

/* The round agent i's last committed heartbeat carried (-1: none). */
static long committed_round(int agent)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce((capabilities ->> 'round')::int, -1) FROM agents WHERE id = '%.36s'",
             ids[agent]);
    return th_pg_long(pg, sql);
}

static void learn_ids(void)
{
    for (int i = 0; i < AGENTS; i++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT id FROM agents WHERE name = 'gc-%d'", i);
        PGresult *res = th_pg_ok(pg, sql);
        cr_assert_eq(PQntuples(res), 1);
        snprintf(ids[i], sizeof(ids[i]), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
}

Test(commit, many_agents_heartbeats_share_transactions)
{
    learn_ids();
    bool shared = false;
    for (int round = 1; round <= 10 && !shared; round++) {
        double items0 = metric("orch_agent_commit_items_sum");
        double txs0 = metric("orch_agent_commit_items_count");
        struct call calls[AGENTS];
        for (int i = 0; i < AGENTS; i++)
            heartbeat_call(&calls[i], i, round);
        send_together(calls, AGENTS);
        for (int i = 0; i < AGENTS; i++) {
            cr_assert_eq(calls[i].status, 200, "agent %d: %ld", i, calls[i].status);
            /* Answered: committed. */
            cr_assert_eq(committed_round(i), round);
            cr_assert_not_null(json_object_get(calls[i].json, "lease_s"));
            json_decref(calls[i].json);
        }
        double items = metric("orch_agent_commit_items_sum") - items0;
        double txs = metric("orch_agent_commit_items_count") - txs0;
        cr_assert_geq(items, AGENTS, "every heartbeat went through the group commit");
        shared = txs < items;
    }
    cr_assert(shared, "heartbeats sent together never shared a transaction");
}

/* The job the scripted agent 0 gets, and its epoch. */
static void assigned_job(char *job_id, size_t len, long long *epoch)
{
    struct th_resp r;
    th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, creds[0],
            "{\"heartbeat\":{\"status\":\"idle\",\"slots\":1,\"free_slots\":1}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    char *id = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true"));
    bool got = false;
    for (int i = 0; i < 30 && !got; i++) {
        th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, creds[0], "{\"assign\":true,\"wait\":2}", NULL,
                &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        json_t *a = json_array_get(json_object_get(r.json, "assignments"), 0);
        if (a) {
            cr_assert_str_eq(json_string_value(json_object_get(a, "job_id")), id);
            *epoch = json_integer_value(json_object_get(a, "epoch"));
            got = true;
        }
        th_resp_free(&r);
    }
    cr_assert(got, "job %s was never assigned to the only agent", id);
    snprintf(job_id, len, "%s", id);
    free(id);
}

static const char *job_status(const char *id)
{
    static char status[32];
    json_t *j = th_job(&srv, admin, id);
    snprintf(status, sizeof(status), "%s", json_string_value(json_object_get(j, "status")));
    json_decref(j);
    return status;
}

Test(commit, a_report_whose_commit_fails_fails_alone_and_counts_when_resent)
{
    learn_ids();
    char job[40];
    long long epoch = 0;
    assigned_job(job, sizeof(job), &epoch);
    char path[160], body[160];
    proto_agent_path(path, sizeof(path), PROTO_AGENT_PATH_STARTED, job);
    snprintf(body, sizeof(body), "{\"epoch\":%lld}", epoch);
    struct th_resp r;
    th_http(&srv, "POST", path, creds[0], body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);

    /* The job's end fails at COMMIT (a deferred constraint trigger), after every statement
     * of its report has succeeded: a reply sent before the commit would say 200. */
    PQclear(th_pg_ok(pg, "CREATE TABLE test_poisoned (job_id uuid PRIMARY KEY)"));
    PQclear(th_pg_ok(pg, "CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql"
                         " SECURITY DEFINER SET search_path = public AS $$ BEGIN"
                         " IF EXISTS (SELECT 1 FROM test_poisoned WHERE job_id = NEW.id) THEN"
                         "   RAISE EXCEPTION 'poisoned at commit' USING ERRCODE = '40001';"
                         " END IF; RETURN NULL; END $$"));
    PQclear(th_pg_ok(pg, "CREATE CONSTRAINT TRIGGER test_poison AFTER UPDATE ON jobs"
                         " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                         " WHEN (NEW.status IS DISTINCT FROM OLD.status)"
                         " EXECUTE FUNCTION test_poison()"));
    char sql[160];
    snprintf(sql, sizeof(sql), "INSERT INTO test_poisoned VALUES ('%s')", job);
    PQclear(th_pg_ok(pg, sql));

    struct proto_result res = {.exit_code = 0};
    json_t *rj = proto_result_encode(NULL, epoch, &res);
    char *result_body = json_dumps(rj, JSON_COMPACT);
    json_decref(rj);
    char result_path[160];
    proto_agent_path(result_path, sizeof(result_path), PROTO_AGENT_PATH_RESULT, job);

    double redone0 = metric("orch_agent_commit_redone_total");
    bool redone = false;
    for (int round = 1; round <= 10 && !redone; round++) {
        /* The result of agent 0, with the heartbeats of the others, at once. */
        struct call calls[AGENTS];
        memset(&calls[0], 0, sizeof(calls[0]));
        calls[0].path = result_path;
        calls[0].cred = creds[0];
        snprintf(calls[0].body, sizeof(calls[0].body), "%s", result_body);
        for (int i = 1; i < AGENTS; i++)
            heartbeat_call(&calls[i], i, 100 + round);
        send_together(calls, AGENTS);
        cr_assert_geq(calls[0].status, 500, "the result whose commit failed was answered %ld",
                      calls[0].status);
        json_decref(calls[0].json);
        for (int i = 1; i < AGENTS; i++) {
            cr_assert_eq(calls[i].status, 200, "agent %d: %ld", i, calls[i].status);
            cr_assert_eq(committed_round(i), 100 + round);
            json_decref(calls[i].json);
        }
        /* Not recorded: the job runs on. */
        cr_assert_str_eq(job_status(job), "running");
        redone = metric("orch_agent_commit_redone_total") > redone0;
    }
    cr_assert(redone, "the failed result never shared a transaction with a heartbeat");

    /* The fault is gone: the agent sends its result again, and it counts. */
    PQclear(th_pg_ok(pg, "DELETE FROM test_poisoned"));
    th_http(&srv, "POST", result_path, creds[0], result_body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "status"), "succeeded");
    th_resp_free(&r);
    cr_assert_str_eq(job_status(job), "succeeded");
    free(result_body);
}

/* Agent i's sync exchange c: four reports of kind ("started", or "result" with exit code
 * 0), the k-th on job jobs[k] at epochs[k]. */
static void four_reports(struct call *c, int i, const char *kind, const char *const jobs[4],
                         const long long epochs[4])
{
    memset(c, 0, sizeof(*c));
    c->path = PROTO_AGENT_PATH_SYNC;
    c->cred = creds[i];
    size_t n = (size_t)snprintf(c->body, sizeof(c->body), "{\"reports\":[");
    for (int k = 0; k < 4; k++)
        n += (size_t)snprintf(c->body + n, sizeof(c->body) - n,
                              "%s{\"kind\":\"%s\",\"job_id\":\"%.36s\",\"epoch\":%lld%s}",
                              k ? "," : "", kind, jobs[k], epochs[k],
                              strcmp(kind, "result") == 0 ? ",\"exit_code\":0" : "");
    snprintf(c->body + n, sizeof(c->body) - n, "]}");
    cr_assert_lt(n + 2, sizeof(c->body), "the exchange's body does not fit");
}

/* Agent i's exchange c was answered 200, its four reports with the codes want, each 200
 * with the job's status (then frees its answer). */
static void expect_answers(struct call *c, int i, const long want[4], const char *status)
{
    cr_assert_eq(c->status, 200, "agent %d: %ld", i, c->status);
    json_t *reps = json_object_get(c->json, "reports");
    char *text = json_dumps(c->json, JSON_COMPACT);
    for (size_t k = 0; k < 4; k++) {
        json_t *rep = json_array_get(reps, k);
        cr_expect_eq(json_integer_value(json_object_get(rep, "code")), want[k],
                     "agent %d, report %zu: %s", i, k, text);
        if (want[k] == 200)
            cr_expect_str_eq(json_string_value(json_object_get(rep, "status")), status,
                             "agent %d, report %zu: %s", i, k, text);
    }
    free(text);
    json_decref(c->json);
}

/* The `started` reports of the exchanges that share a transaction run as one statement
 * (sync_pre() in server/api-agentproto.c), then their results as another, and each is
 * still answered in its place: every agent's own start or result is recorded and answered
 * 200, a repeat of it in the same statement too (a start not a second first start, a
 * result ending nothing twice), another agent's job is not found and a wrong epoch is
 * stale. */
Test(commit, starts_and_results_sharing_a_transaction_are_each_answered_in_place)
{
    learn_ids();
    /* Every agent online, with one slot: one job each. */
    for (int i = 0; i < AGENTS; i++) {
        struct th_resp r;
        th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, creds[i],
                "{\"heartbeat\":{\"status\":\"idle\",\"slots\":1,\"free_slots\":1}}", NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        th_resp_free(&r);
    }
    for (int i = 0; i < AGENTS; i++)
        free(th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true")));
    char job[AGENTS][40];
    long long epoch[AGENTS];
    for (int i = 0; i < AGENTS; i++) {
        job[i][0] = '\0';
        for (int k = 0; k < 30 && !job[i][0]; k++) {
            struct th_resp r;
            th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, creds[i], "{\"assign\":true,\"wait\":2}",
                    NULL, &r);
            cr_assert_eq(r.status, 200, "%s", r.body);
            json_t *a = json_array_get(json_object_get(r.json, "assignments"), 0);
            if (a) {
                snprintf(job[i], sizeof(job[i]), "%s",
                         json_string_value(json_object_get(a, "job_id")));
                epoch[i] = json_integer_value(json_object_get(a, "epoch"));
            }
            th_resp_free(&r);
        }
        cr_assert(job[i][0], "agent %d was never given a job", i);
    }

    double firsts0 = metric("orch_job_assign_to_start_seconds_count");
    double items0 = metric("orch_agent_commit_items_sum");
    double txs0 = metric("orch_agent_commit_items_count");
    struct call calls[AGENTS];
    for (int i = 0; i < AGENTS; i++) {
        int o = (i + 1) % AGENTS; /* another agent's job */
        const char *jobs[4] = {job[o], job[i], job[i], job[i]};
        const long long epochs[4] = {epoch[o], epoch[i], epoch[i] + 1, epoch[i]};
        four_reports(&calls[i], i, "started", jobs, epochs);
    }
    send_together(calls, AGENTS);
    static const long want_start[4] = {404, 200, 409, 200};
    for (int i = 0; i < AGENTS; i++) {
        expect_answers(&calls[i], i, want_start, "running");
        cr_assert_str_eq(job_status(job[i]), "running");
    }
    /* One first start per job: the repeats are not counted again. */
    cr_assert_eq(metric("orch_job_assign_to_start_seconds_count") - firsts0, AGENTS);
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM job_attempts WHERE status = 'running' AND started_at IS NOT NULL"
             " AND job_id IN (SELECT id FROM jobs WHERE tenant_id = '%s')",
             tenant);
    cr_assert_eq(th_pg_long(pg, sql), AGENTS);
    /* They shared transactions (the window is long, the batch AGENTS items). */
    double items = metric("orch_agent_commit_items_sum") - items0;
    double txs = metric("orch_agent_commit_items_count") - txs0;
    cr_assert_eq(items, AGENTS);
    cr_assert_lt(txs, items, "the %d exchanges sent together took %.0f transactions", AGENTS, txs);

    /* Their results, the same way (q_result in sync_pre()): another agent's job, its own,
     * its own again (a repeat: answered like the first), a wrong epoch. */
    items0 = metric("orch_agent_commit_items_sum");
    txs0 = metric("orch_agent_commit_items_count");
    for (int i = 0; i < AGENTS; i++) {
        int o = (i + 1) % AGENTS;
        const char *jobs[4] = {job[o], job[i], job[i], job[i]};
        const long long epochs[4] = {epoch[o], epoch[i], epoch[i], epoch[i] + 1};
        four_reports(&calls[i], i, "result", jobs, epochs);
    }
    send_together(calls, AGENTS);
    static const long want_end[4] = {404, 200, 200, 409};
    for (int i = 0; i < AGENTS; i++) {
        expect_answers(&calls[i], i, want_end, "succeeded");
        cr_assert_str_eq(job_status(job[i]), "succeeded");
    }
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM job_attempts WHERE status = 'succeeded' AND exit_code = 0"
             " AND job_id IN (SELECT id FROM jobs WHERE tenant_id = '%s')",
             tenant);
    cr_assert_eq(th_pg_long(pg, sql), AGENTS);
    items = metric("orch_agent_commit_items_sum") - items0;
    txs = metric("orch_agent_commit_items_count") - txs0;
    cr_assert_eq(items, AGENTS);
    cr_assert_lt(txs, items, "the %d exchanges sent together took %.0f transactions", AGENTS, txs);
}
