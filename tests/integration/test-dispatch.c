/* The path of a job on the server side, driven by scripted agents that speak the agent
 * protocol (docs/agent-protocol.md) over HTTPS to the real orchd on PostgreSQL and
 * RabbitMQ: dispatch by labels, long-poll delivery, reports, results, stale epochs, lost
 * leases and reassignment. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;

static void setup(void)
{
    /* Short leases so that a silent agent loses its job within the test's patience. */
    const char *env[] = {"ORCHD_AGENT_LEASE=3s", "ORCHD_AGENT_ONLINE_WINDOW=3s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(dispatch, .init = setup, .fini = teardown, .timeout = 120);

/* Enrol an agent of the tenant whose admin token is adm, with labels (JSON object text);
 * returns its credential. */
static char *enrol_as(const char *adm, const char *name, const char *labels)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", adm, "{\"name\":\"t\",\"max_uses\":1}", NULL,
            &r);
    cr_assert_eq(r.status, 201);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"%s\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":%s,\"slots\":2}",
             th_str_of(&r, "token"), name, labels);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    return cred;
}

static char *enrol(const char *name, const char *labels)
{
    return enrol_as(admin, name, labels);
}

static json_t *beat(const char *cred, const char *running)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"status\":\"idle\",\"slots\":2,\"free_slots\":2,\"running\":%s}",
             running ? running : "[]");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", cred, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    return j;
}

static char *submit(const char *body)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

static long report(const char *cred, const char *id, const char *what, const char *body)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/%s", id, what);
    struct th_resp r;
    th_http(&srv, "POST", path, cred, body, NULL, &r);
    long st = r.status;
    th_resp_free(&r);
    return st;
}

static const char *status_of(json_t *j)
{
    return json_string_value(json_object_get(j, "status"));
}

Test(dispatch, a_job_runs_on_the_matching_agent_and_reports_back)
{
    char *linux_agent = enrol("builder", "{\"team\":\"blue\"}");
    char *gpu_agent = enrol("gpu", "{\"gpu\":\"yes\"}");
    json_decref(beat(linux_agent, NULL));
    json_decref(beat(gpu_agent, NULL));

    char *id = submit("{\"command\":\"echo hi\",\"requirements\":{\"team\":\"blue\"}}");
    uint64_t t0 = clock_mono_ns();
    json_t *a = th_agent_poll(&srv, linux_agent, 20);
    double ms = (double)(clock_mono_ns() - t0) / 1e6;
    cr_assert_not_null(a, "no assignment within the long-poll");
    cr_log_info("submit -> assignment delivered in %.1f ms", ms);
    cr_assert_str_eq(json_string_value(json_object_get(a, "job_id")), id);
    cr_assert_str_eq(json_string_value(json_object_get(a, "command")), "echo hi");
    json_int_t epoch = json_integer_value(json_object_get(a, "epoch"));
    cr_assert_eq(epoch, 1);
    json_decref(a);
    /* The other agent gets nothing: it does not match. */
    json_t *none = th_agent_poll(&srv, gpu_agent, 0);
    cr_assert_null(none);

    cr_assert_eq(report(linux_agent, id, "started", "{\"epoch\":1}"), 200);
    json_t *j = th_job(&srv, admin, id);
    cr_assert_str_eq(status_of(j), "running");
    json_decref(j);
    cr_assert_eq(report(linux_agent, id, "logs",
                        "{\"epoch\":1,\"stream\":\"stdout\",\"offset\":0,\"data\":\"aGkK\"}"),
                 200);
    /* A resent chunk is harmless. */
    cr_assert_eq(report(linux_agent, id, "logs",
                        "{\"epoch\":1,\"stream\":\"stdout\",\"offset\":0,\"data\":\"aGkK\"}"),
                 200);
    /* An agent that never held the job is told there is no such job (404: whether a job
     * exists is not an agent's to learn); a wrong epoch is refused as stale. */
    cr_assert_eq(report(gpu_agent, id, "started", "{\"epoch\":1}"), 404);
    cr_assert_eq(report(linux_agent, id, "result", "{\"epoch\":7,\"exit_code\":0}"), 409);

    cr_assert_eq(report(linux_agent, id, "result",
                        "{\"epoch\":1,\"exit_code\":0,\"result\":{\"artifacts\":3}}"),
                 200);
    cr_assert_eq(report(linux_agent, id, "result", "{\"epoch\":1,\"exit_code\":0}"), 200,
                 "a repeated result is answered like the first");
    j = th_job(&srv, admin, id);
    cr_assert_str_eq(status_of(j), "succeeded");
    cr_assert_eq(json_integer_value(json_object_get(j, "exit_code")), 0);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "result"), "artifacts")), 3);
    json_decref(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs", id);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_str_eq(r.body, "hi\n");
    char *complete = th_resp_header(&r, "X-Complete");
    cr_assert_str_eq(complete, "true");
    free(complete);
    th_resp_free(&r);

    /* A job nobody can run waits. */
    char *gpuless = submit("{\"command\":\"x\",\"requirements\":{\"os\":\"windows\"}}");
    json_t *w = th_agent_poll(&srv, linux_agent, 1);
    cr_assert_null(w);
    j = th_job(&srv, admin, gpuless);
    cr_assert_str_eq(status_of(j), "queued");
    json_decref(j);
    free(gpuless);
    free(id);
    free(gpu_agent);
    free(linux_agent);
}

Test(dispatch, a_silent_agent_loses_its_job_to_another_and_its_late_report_is_refused)
{
    char *a1 = enrol("first", "{}");
    char *a2 = enrol("second", "{}");
    json_decref(beat(a1, NULL));
    char *id = submit("{\"command\":\"long\",\"max_attempts\":3}");
    json_t *as = th_agent_poll(&srv, a1, 20);
    cr_assert_not_null(as);
    cr_assert_eq(report(a1, id, "started", "{\"epoch\":1}"), 200);
    json_decref(as);

    /* a1 goes silent (no heartbeats); a2 keeps beating and polling. Its lease (3 s) runs
     * out, the reaper puts the job back (backoff 1-2 s), and it lands on a2. */
    json_t *again = NULL;
    uint64_t deadline = clock_mono_ns() + 40ull * 1000000000ull;
    while (!again && clock_mono_ns() < deadline) {
        json_decref(beat(a2, NULL));
        again = th_agent_poll(&srv, a2, 1);
    }
    cr_assert_not_null(again, "the job was not reassigned");
    cr_assert_str_eq(json_string_value(json_object_get(again, "job_id")), id);
    cr_assert_eq(json_integer_value(json_object_get(again, "epoch")), 2);
    json_decref(again);

    /* a1 comes back late: everything it says about epoch 1 is refused, and its heartbeat
     * is told the job is no longer its own. */
    cr_assert_eq(report(a1, id, "result", "{\"epoch\":1,\"exit_code\":0}"), 409);
    char running[160];
    snprintf(running, sizeof(running), "[{\"job_id\":\"%s\",\"epoch\":1}]", id);
    json_t *hb = beat(a1, running);
    cr_assert_eq(json_array_size(json_object_get(hb, "lost")), 1);
    json_decref(hb);

    cr_assert_eq(report(a2, id, "started", "{\"epoch\":2}"), 200);
    cr_assert_eq(report(a2, id, "result", "{\"epoch\":2,\"exit_code\":0}"), 200);
    json_t *j = th_job(&srv, admin, id);
    cr_assert_str_eq(status_of(j), "succeeded");
    cr_assert_eq(json_integer_value(json_object_get(j, "attempt")), 2);
    json_decref(j);
    free(id);
    free(a1);
    free(a2);
}

/* A new agent named name (its credential in *cred) that has reported started the one job
 * it was handed; returns that job's id. */
static char *started_on_new_agent(const char *name, char **cred)
{
    *cred = enrol(name, "{}");
    json_decref(beat(*cred, NULL));
    char *id = submit("{\"command\":\"long\"}");
    json_t *as = th_agent_poll(&srv, *cred, 20);
    cr_assert_not_null(as);
    json_decref(as);
    cr_assert_eq(report(*cred, id, "started", "{\"epoch\":1}"), 200);
    return id;
}

/* An answered heartbeat has renewed the whole lease of every job it lists, in its own
 * transaction: the agent fences itself counting on it (docs/agent.md, "Leases and
 * self-fencing"). The gateway's batch, which renews them too, is held back here by a lock
 * on the agent's row, as a slow or failed batch would be. */
Test(dispatch, an_answered_heartbeat_has_renewed_the_whole_lease_of_its_jobs)
{
    char *a1 = NULL;
    char *id = started_on_new_agent("renewer", &a1);

    PGconn *pg = th_pg_connect("postgres", srv.db);
    PQclear(th_pg_ok(pg, "BEGIN"));
    PQclear(th_pg_ok(pg, "SELECT 1 FROM agents WHERE name = 'renewer' FOR UPDATE"));
    PGconn *pg2 = th_pg_connect("postgres", srv.db);
    char sql[256];
    /* What an older renewal leaves: 2 s of the 3 s lease. */
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET lease_expires_at = now() + interval '2 s' WHERE id = '%s'", id);
    PQclear(th_pg_ok(pg2, sql));
    long sent_ms = th_pg_long(pg2, "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint");
    char running[160];
    snprintf(running, sizeof(running), "[{\"job_id\":\"%s\",\"epoch\":1}]", id);
    json_decref(beat(a1, running));
    snprintf(sql, sizeof(sql),
             "SELECT (extract(epoch FROM lease_expires_at) * 1000)::bigint FROM jobs"
             " WHERE id = '%s'",
             id);
    long expires_ms = th_pg_long(pg2, sql);
    PQclear(th_pg_ok(pg, "COMMIT"));
    PQfinish(pg2);
    PQfinish(pg);
    free(id);
    free(a1);
    cr_assert_geq(expires_ms, sent_ms + 3000,
                  "the answered heartbeat left the lease %ld ms after it was sent, not 3000",
                  expires_ms - sent_ms);
}

/* A renewal sets lease_expires_at only (api-agentproto-heartbeat.c, q_renew_listed): with no index
 * on it and room in the page (sql/0029_jobs_lease_hot.sql), PostgreSQL makes it a
 * heap-only update, which writes no index entry. The transaction's own counter says so. */
Test(dispatch, a_lease_renewal_is_a_heap_only_update)
{
    char *a1 = NULL;
    char *id = started_on_new_agent("hot", &a1);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    PQclear(th_pg_ok(pg, "BEGIN"));
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET lease_expires_at = now() + interval '3 s' WHERE id = '%s'", id);
    PQclear(th_pg_ok(pg, sql));
    long hot = th_pg_long(pg, "SELECT pg_stat_get_xact_tuples_hot_updated('jobs'::regclass)");
    long all = th_pg_long(pg, "SELECT pg_stat_get_xact_tuples_updated('jobs'::regclass)");
    PQclear(th_pg_ok(pg, "ROLLBACK"));
    PQfinish(pg);
    free(id);
    free(a1);
    cr_assert_eq(all, 1);
    cr_assert_eq(hot, 1, "the renewal wrote index entries (an index names lease_expires_at?)");
}

Test(dispatch, failures_are_retried_then_dead_and_cancel_reaches_the_agent)
{
    char *a = enrol("worker", "{}");
    json_decref(beat(a, NULL));
    char *id = submit("{\"command\":\"false\",\"max_attempts\":2}");
    for (int attempt = 1; attempt <= 2; attempt++) {
        json_t *as = NULL;
        uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
        while (!as && clock_mono_ns() < deadline) {
            json_decref(beat(a, NULL));
            as = th_agent_poll(&srv, a, 1);
        }
        cr_assert_not_null(as, "attempt %d not assigned", attempt);
        cr_assert_eq(json_integer_value(json_object_get(as, "epoch")), attempt);
        json_decref(as);
        char body[64];
        snprintf(body, sizeof(body), "{\"epoch\":%d,\"exit_code\":1}", attempt);
        cr_assert_eq(report(a, id, "result", body), 200);
    }
    json_t *j = th_job(&srv, admin, id);
    cr_assert_str_eq(status_of(j), "dead", "two failures of a two-attempt job");
    json_decref(j);

    /* Cancel a running job: the agent hears it in its next heartbeat. */
    char *c = submit("{\"command\":\"sleep 100\"}");
    json_t *as = th_agent_poll(&srv, a, 20);
    cr_assert_not_null(as);
    json_decref(as);
    cr_assert_eq(report(a, c, "started", "{\"epoch\":1}"), 200);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", c);
    struct th_resp r;
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202);
    th_resp_free(&r);
    char running[160];
    snprintf(running, sizeof(running), "[{\"job_id\":\"%s\",\"epoch\":1}]", c);
    json_t *hb = beat(a, running);
    cr_assert_eq(json_array_size(json_object_get(hb, "cancel")), 1);
    json_decref(hb);
    cr_assert_eq(report(a, c, "result",
                        "{\"epoch\":1,\"exit_code\":-1,\"signal\":15,"
                        "\"cancelled\":true}"),
                 200);
    j = th_job(&srv, admin, c);
    cr_assert_str_eq(status_of(j), "cancelled");
    json_decref(j);
    free(c);
    free(id);
    free(a);
}

/* --- sync: heartbeat, reports and the long-poll in one exchange --------------------------- */

static json_t *sync_ex(const char *cred, const char *body, long want)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", cred, body, NULL, &r);
    cr_assert_eq(r.status, want, "%s", r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    return j;
}

static long code_at(json_t *ans, size_t i)
{
    return (long)json_integer_value(
        json_object_get(json_array_get(json_object_get(ans, "reports"), i), "code"));
}

static const char *problem_field_at(json_t *ans, size_t i)
{
    json_t *pr = json_object_get(json_array_get(json_object_get(ans, "reports"), i), "problem");
    return json_string_value(json_object_get(pr, "field"));
}

/* An exchange held open on a thread of its own, while the test acts. */
struct held {
    const char *cred;
    const char *body;
    json_t *ans;
};

static void *held_sync(void *arg)
{
    struct held *h = arg;
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", h->cred, h->body, NULL, &r);
    h->ans = r.status == 200 ? json_incref(r.json) : NULL;
    th_resp_free(&r);
    return NULL;
}

Test(dispatch, sync_batches_reports_and_holds_for_assignments)
{
    char *a = enrol("syncer", "{\"pool\":\"sync\"}");
    /* The body is checked as a whole first: the field at fault is named. */
    json_t *ans = sync_ex(a, "{\"wait\":61}", 422);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "field")), "wait");
    json_decref(ans);
    ans = sync_ex(a, "{\"heartbeat\":{\"slots\":0}}", 422);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "field")), "heartbeat.slots");
    json_decref(ans);

    /* A heartbeat alone: its answer, no reports, no assignments asked for. */
    ans = sync_ex(a, "{\"heartbeat\":{\"status\":\"idle\",\"slots\":2,\"free_slots\":2}}", 200);
    cr_assert(json_is_object(json_object_get(ans, "heartbeat")));
    cr_assert_eq(json_integer_value(
                     json_object_get(json_object_get(ans, "heartbeat"), "heartbeat_interval_s")),
                 1);
    cr_assert_eq(json_array_size(json_object_get(ans, "reports")), 0);
    cr_assert_eq(json_array_size(json_object_get(ans, "assignments")), 0);
    json_decref(ans);

    /* The host's facts in a heartbeat replace those of the enrolment. */
    ans = sync_ex(a,
                  "{\"heartbeat\":{\"capabilities\":{\"os\":\"linux\",\"arch\":\"aarch64\","
                  "\"version\":\"9.9.9\",\"interpreters\":[\"sh\",\"pwsh\"]}}}",
                  200);
    json_decref(ans);
    struct th_resp ar;
    th_http(&srv, "GET", "/api/v1/agents?limit=100", admin, NULL, NULL, &ar);
    size_t k;
    json_t *ag, *me = NULL;
    json_array_foreach(json_object_get(ar.json, "items"), k, ag)
    {
        if (strcmp(json_string_value(json_object_get(ag, "name")), "syncer") == 0)
            me = ag;
    }
    cr_assert_not_null(me);
    cr_assert_str_eq(json_string_value(json_object_get(me, "arch")), "aarch64");
    cr_assert_str_eq(json_string_value(json_object_get(me, "version")), "9.9.9");
    cr_assert_eq(
        json_array_size(json_object_get(json_object_get(me, "capabilities"), "interpreters")), 2);
    th_resp_free(&ar);

    /* A job waiting is handed out at once. */
    char *id = submit("{\"command\":\"echo hi\",\"requirements\":{\"pool\":\"sync\"}}");
    ans = sync_ex(a, "{\"assign\":true,\"wait\":20}", 200);
    json_t *as = json_array_get(json_object_get(ans, "assignments"), 0);
    cr_assert_not_null(as, "%s", json_dumps(ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), id);
    int64_t epoch = json_integer_value(json_object_get(as, "epoch"));
    json_decref(ans);

    /* Seven reports in one exchange, each answered in its place. */
    char other[ID_STR_LEN];
    id_uuid7_str(other);
    char body[2048];
    snprintf(body, sizeof(body),
             "{\"reports\":["
             "{\"kind\":\"started\",\"job_id\":\"%s\",\"epoch\":%lld},"
             "{\"kind\":\"logs\",\"job_id\":\"%s\",\"epoch\":%lld,\"stream\":\"stdout\","
             "\"offset\":0,\"data\":\"aGkK\"},"
             "{\"kind\":\"logs\",\"job_id\":\"%s\",\"epoch\":%lld,\"stream\":\"tty\","
             "\"offset\":3,\"data\":\"aGkK\"},"
             "{\"kind\":\"bogus\",\"job_id\":\"%s\"},"
             "{\"kind\":\"started\",\"job_id\":\"%s\",\"epoch\":%lld},"
             "{\"kind\":\"started\",\"job_id\":\"%s\",\"epoch\":1},"
             "{\"kind\":\"result\",\"job_id\":\"%s\",\"epoch\":%lld,\"exit_code\":0,"
             "\"result\":{\"n\":1}}]}",
             id, (long long)epoch, id, (long long)epoch, id, (long long)epoch, id, id,
             (long long)epoch + 1, other, id, (long long)epoch);
    ans = sync_ex(a, body, 200);
    cr_assert_eq(json_array_size(json_object_get(ans, "reports")), 7, "%s", json_dumps(ans, 0));
    cr_assert_eq(code_at(ans, 0), 200);
    cr_assert_eq(code_at(ans, 1), 200);
    cr_assert_eq(json_integer_value(json_object_get(
                     json_array_get(json_object_get(ans, "reports"), 1), "next_offset")),
                 3);
    cr_assert_eq(code_at(ans, 2), 422);
    cr_assert_str_eq(problem_field_at(ans, 2), "reports[2].stream");
    cr_assert_eq(code_at(ans, 3), 422);
    cr_assert_str_eq(problem_field_at(ans, 3), "reports[3].kind");
    cr_assert_eq(code_at(ans, 4), 409);
    cr_assert_str_eq(problem_field_at(ans, 4), "reports[4].epoch");
    cr_assert_eq(code_at(ans, 5), 404);
    cr_assert_eq(code_at(ans, 6), 200);
    json_decref(ans);
    json_t *j = th_job(&srv, admin, id);
    cr_assert_str_eq(status_of(j), "succeeded");
    json_decref(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdout", id);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(r.body, "hi\n");
    th_resp_free(&r);

    /* Another tenant's agent cannot report on this tenant's job. */
    char *t2 = th_tenant(&srv, op, "sync-other", "standard");
    char *adm2 = th_tenant_token(&srv, op, t2, "admin");
    char *b = enrol_as(adm2, "intruder", "{}");
    snprintf(body, sizeof(body),
             "{\"reports\":[{\"kind\":\"result\",\"job_id\":\"%s\",\"epoch\":%lld,"
             "\"exit_code\":1}]}",
             id, (long long)epoch);
    ans = sync_ex(b, body, 200);
    cr_assert_eq(code_at(ans, 0), 404);
    json_decref(ans);

    /* A held exchange is answered as soon as a job is made for the agent. */
    struct held h = {.cred = a, .body = "{\"assign\":true,\"wait\":30}"};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, held_sync, &h), 0);
    char *id2 = submit("{\"command\":\"true\",\"requirements\":{\"pool\":\"sync\"}}");
    pthread_join(th, NULL);
    cr_assert_not_null(h.ans);
    as = json_array_get(json_object_get(h.ans, "assignments"), 0);
    cr_assert_not_null(as, "%s", json_dumps(h.ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), id2);
    epoch = json_integer_value(json_object_get(as, "epoch"));
    json_decref(h.ans);

    /* Handed out once; `resume` hands it out again (the agent lost that answer). */
    ans = sync_ex(a, "{\"assign\":true}", 200);
    cr_assert_eq(json_array_size(json_object_get(ans, "assignments")), 0);
    json_decref(ans);
    ans = sync_ex(b, "{\"assign\":true,\"resume\":true}", 200);
    cr_assert_eq(json_array_size(json_object_get(ans, "assignments")), 0);
    json_decref(ans);
    ans = sync_ex(a, "{\"assign\":true,\"resume\":true}", 200);
    as = json_array_get(json_object_get(ans, "assignments"), 0);
    cr_assert_not_null(as, "%s", json_dumps(ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), id2);
    cr_assert_eq(json_integer_value(json_object_get(as, "epoch")), epoch);
    json_decref(ans);

    /* Not to an agent that says it holds that attempt (its row is not rewritten either),
     * but still when it holds another epoch of the job, or other jobs only. */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT (extract(epoch FROM delivered_at) * 1e6)::bigint FROM jobs WHERE id = '%s'",
             id2);
    long delivered = th_pg_long(pg, sql);
    snprintf(body, sizeof(body),
             "{\"assign\":true,\"resume\":true,\"holding\":[{\"job_id\":\"%s\",\"epoch\":%lld}]}",
             id2, (long long)epoch);
    ans = sync_ex(a, body, 200);
    cr_assert_eq(json_array_size(json_object_get(ans, "assignments")), 0, "%s", json_dumps(ans, 0));
    json_decref(ans);
    cr_assert_eq(th_pg_long(pg, sql), delivered, "the held assignment's row was rewritten");
    PQfinish(pg);
    for (int n = 0; n < 2; n++) {
        char ref[160];
        snprintf(ref, sizeof(ref), "{\"job_id\":\"%s\",\"epoch\":%lld}",
                 n == 0 ? id2 : "01a23c1b-03bd-7538-9b1d-22eae3d30e7e",
                 (long long)(n == 0 ? epoch + 1 : epoch));
        snprintf(body, sizeof(body), "{\"assign\":true,\"resume\":true,\"holding\":[%s]}", ref);
        ans = sync_ex(a, body, 200);
        as = json_array_get(json_object_get(ans, "assignments"), 0);
        cr_assert_not_null(as, "holding %s: %s", ref, json_dumps(ans, 0));
        cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), id2);
        json_decref(ans);
    }
    /* A bad entry is refused with its field. */
    ans = sync_ex(
        a, "{\"assign\":true,\"resume\":true,\"holding\":[{\"job_id\":\"x\",\"epoch\":1}]}", 422);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "field")), "holding[0].job_id", "%s",
                     json_dumps(ans, 0));
    json_decref(ans);

    free(id2);
    free(b);
    free(adm2);
    free(t2);
    free(id);
    free(a);
}

/* Among capable agents with a free slot, the one that holds the job's package in its cache
 * (as its heartbeat said) gets the job; without a package the tie goes to the older agent. */
Test(dispatch, a_package_job_prefers_the_agent_that_caches_it)
{
    char sha[65];
    char *pkg = th_package(&srv, admin, "cached-tool", "loc", sha);
    char *a = enrol("loc-a", "{\"pool\":\"loc\"}");
    char *b = enrol("loc-b", "{\"pool\":\"loc\"}");
    char body[512];
    json_t *ans =
        sync_ex(a, "{\"heartbeat\":{\"status\":\"idle\",\"slots\":2,\"free_slots\":2}}", 200);
    json_decref(ans);
    snprintf(body, sizeof(body),
             "{\"heartbeat\":{\"status\":\"idle\",\"slots\":2,\"free_slots\":2,"
             "\"packages\":[\"%s\"]}}",
             sha);
    ans = sync_ex(b, body, 200);
    json_decref(ans);
    /* A malformed digest list is refused, naming it. */
    ans = sync_ex(b, "{\"heartbeat\":{\"packages\":[\"XYZ\"]}}", 422);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "field")), "heartbeat.packages");
    json_decref(ans);

    snprintf(body, sizeof(body), "{\"package_id\":\"%s\",\"requirements\":{\"pool\":\"loc\"}}",
             pkg);
    char *job_pkg = submit(body);
    ans = sync_ex(b, "{\"assign\":true,\"wait\":20}", 200);
    json_t *as = json_array_get(json_object_get(ans, "assignments"), 0);
    cr_assert_not_null(as, "the agent caching the package got nothing: %s", json_dumps(ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), job_pkg);
    cr_assert_str_eq(json_string_value(json_object_get(as, "package_sha256")), sha);
    cr_assert_str_eq(json_string_value(json_object_get(as, "entrypoint")), "run.sh");
    cr_assert_null(json_string_value(json_object_get(as, "command")));
    json_decref(ans);

    /* The agent API shows what each holds. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/agents?limit=100", admin, NULL, NULL, &r);
    size_t i;
    json_t *ag;
    int seen = 0;
    json_array_foreach(json_object_get(r.json, "items"), i, ag)
    {
        const char *name = json_string_value(json_object_get(ag, "name"));
        if (strcmp(name, "loc-b") == 0) {
            cr_assert_eq(json_integer_value(json_object_get(ag, "cached_packages")), 1);
            cr_assert_eq(json_integer_value(json_object_get(ag, "running_jobs")), 1);
            seen++;
        } else if (strcmp(name, "loc-a") == 0) {
            cr_assert_eq(json_integer_value(json_object_get(ag, "cached_packages")), 0);
            seen++;
        }
    }
    cr_assert_eq(seen, 2);
    th_resp_free(&r);

    /* A command job: b is busier now, so a takes it. */
    char *job_cmd = submit("{\"command\":\"true\",\"requirements\":{\"pool\":\"loc\"}}");
    ans = sync_ex(a, "{\"assign\":true,\"wait\":20}", 200);
    as = json_array_get(json_object_get(ans, "assignments"), 0);
    cr_assert_not_null(as, "%s", json_dumps(ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), job_cmd);
    json_decref(ans);
    free(job_cmd);
    free(job_pkg);
    free(b);
    free(a);
    free(pkg);
}

/* A cancel through the API answers the exchange the agent holds, even one that asks for no
 * assignment (every slot busy), without waiting for a heartbeat; it is handed out once. */
Test(dispatch, a_cancel_answers_the_held_exchange)
{
    char *a = enrol("canceller", "{\"pool\":\"cancel\"}");
    json_t *ans = sync_ex(a, "{\"heartbeat\":{\"slots\":1}}", 200);
    json_decref(ans);
    char *id = submit("{\"command\":\"sleep 100\",\"requirements\":{\"pool\":\"cancel\"}}");
    ans = sync_ex(a, "{\"assign\":true,\"wait\":20}", 200);
    json_t *as = json_array_get(json_object_get(ans, "assignments"), 0);
    cr_assert_not_null(as, "%s", json_dumps(ans, 0));
    long long epoch = json_integer_value(json_object_get(as, "epoch"));
    json_decref(ans);
    char body[256];
    snprintf(body, sizeof(body),
             "{\"reports\":[{\"kind\":\"started\",\"job_id\":\"%s\",\"epoch\":%lld}]}", id, epoch);
    ans = sync_ex(a, body, 200);
    cr_assert_eq(code_at(ans, 0), 200);
    json_decref(ans);

    struct held h = {.cred = a, .body = "{\"assign\":false,\"wait\":30}"};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, held_sync, &h), 0);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    struct th_resp r;
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202, "%s", r.body);
    th_resp_free(&r);
    pthread_join(th, NULL);
    cr_assert_not_null(h.ans);
    json_t *c = json_array_get(json_object_get(h.ans, "cancel"), 0);
    cr_assert_not_null(c, "no cancel in %s", json_dumps(h.ans, 0));
    cr_assert_str_eq(json_string_value(json_object_get(c, "job_id")), id);
    cr_assert_eq(json_integer_value(json_object_get(c, "epoch")), epoch);
    cr_assert_eq(json_array_size(json_object_get(h.ans, "assignments")), 0);
    json_decref(h.ans);
    /* Once: the next exchange does not list it again (the heartbeat still does). */
    ans = sync_ex(a, "{\"assign\":false}", 200);
    cr_assert_eq(json_array_size(json_object_get(ans, "cancel")), 0, "%s", json_dumps(ans, 0));
    json_decref(ans);
    snprintf(body, sizeof(body),
             "{\"heartbeat\":{\"running\":[{\"job_id\":\"%s\",\"epoch\":%lld}]}}", id, epoch);
    ans = sync_ex(a, body, 200);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(ans, "heartbeat"), "cancel")), 1);
    json_decref(ans);
    free(id);
    free(a);
}
