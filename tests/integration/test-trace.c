/* Structured logs on the real orchd, PostgreSQL and RabbitMQ and a real `orch-agent run`:
 * a job submitted with a chosen X-Request-Id can be followed through orchd's log (submit,
 * dispatch, delivery, start, result) and the agent's (assignment, start, end, report) by
 * its job id, and each agent exchange by the request id both sides log. Incoming request
 * ids are kept when safe, cut when long, replaced when not safe; tokens never reach the
 * log. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/id.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char agent_dir[64], agent_id[40], agent_log[128];
static pid_t agent_pid;

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "trace", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(agent_dir, sizeof(agent_dir), "/tmp/orch-trace-XXXXXX");
    cr_assert_not_null(mkdtemp(agent_dir));
    th_agent_enrol(&srv, admin, agent_dir, "tracer", NULL, "1", agent_id);
    snprintf(agent_log, sizeof(agent_log), "%s/agent.log", agent_dir);
    agent_pid = th_agent_start(agent_dir);
}

static void teardown(void)
{
    th_agent_stop(agent_pid, SIGTERM);
    th_rm_rf(agent_dir);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(trace, .init = setup, .fini = teardown, .timeout = 180);

/* The first line of the file at path holding every one of the NULL-terminated needles
 * (malloc'd), or NULL. */
static char *line_with(const char *path, const char *const *needles)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char line[8192];
    char *found = NULL;
    while (!found && fgets(line, sizeof(line), f)) {
        bool all = true;
        for (size_t i = 0; all && needles[i]; i++)
            all = strstr(line, needles[i]) != NULL;
        if (all)
            found = strdup(line);
    }
    fclose(f);
    return found;
}

/* line_with(), waiting (bounded: 30 s) for the line to be written; fails the test past it. */
static char *wait_line(const char *path, const char *const *needles)
{
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    char *l;
    while (!(l = line_with(path, needles)) && clock_mono_ns() < deadline)
        usleep(20000); /* polling for the line, bounded by the deadline */
    cr_assert_not_null(l, "no line in %s with %s %s %s", path, needles[0],
                       needles[1] ? needles[1] : "", needles[1] && needles[2] ? needles[2] : "");
    return l;
}

/* The value of field key in a log line (malloc'd), or NULL. */
static char *field(const char *line, const char *key)
{
    char k[32];
    snprintf(k, sizeof(k), " %s=", key);
    const char *p = strstr(line, k);
    if (!p)
        return NULL;
    p += strlen(k);
    size_t n = strcspn(p, " \n");
    return strndup(p, n);
}

/* Does the file at path contain needle anywhere? */
static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "%s", path);
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

Test(trace, job_followed_from_request_to_report)
{
    char rid[64], hdr[96], job_kv[64], agent_kv[64], tenant_kv[64], req_kv[80];
    snprintf(rid, sizeof(rid), "trace-%d-submit", (int)getpid());
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", rid);
    struct th_resp r;
    th_http_hdr(&srv, "POST", "/api/v1/jobs", admin, "{\"command\":\"echo traced\"}", hdr, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *echoed = th_resp_header(&r, "X-Request-Id");
    cr_assert_str_eq(echoed, rid, "the client's request id is answered back");
    free(echoed);
    char *job = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    json_t *j = th_job_wait_final(&srv, admin, job, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    json_decref(j);

    snprintf(job_kv, sizeof(job_kv), " job=%s", job);
    snprintf(agent_kv, sizeof(agent_kv), " agent=%s", agent_id);
    snprintf(tenant_kv, sizeof(tenant_kv), " tenant=%s", tenant);
    snprintf(req_kv, sizeof(req_kv), " req=%s", rid);

    /* orchd: the submit line names the request, the tenant and the job. */
    const char *submit[] = {"op=job.submit ", job_kv, req_kv, tenant_kv, NULL};
    free(wait_line(srv.log, submit));
    /* The request's own line carries the same id. */
    const char *http[] = {"op=http method=POST route=/api/v1/jobs status=201", req_kv, NULL};
    free(wait_line(srv.log, http));
    /* Every line of orchd's names its node. */
    const char *node[] = {"op=job.submit ", job_kv, " node=orchd", NULL};
    free(wait_line(srv.log, node));
    /* Requests on the job's routes name it: th_job_wait_final() read it. */
    const char *get[] = {"op=http method=GET route=/api/v1/jobs/{id} status=200", job_kv, NULL};
    free(wait_line(srv.log, get));
    /* The dispatcher's assignment: job, tenant, agent. */
    const char *dispatch[] = {"op=dispatch ", job_kv, tenant_kv, agent_kv, NULL};
    free(wait_line(srv.log, dispatch));
    /* The gateway's delivery and the start and result reports, each under the agent's
     * exchange (req=) and naming the agent. */
    const char *deliver[] = {"op=job.deliver ", job_kv, agent_kv, " req=", NULL};
    char *deliver_line = wait_line(srv.log, deliver);
    const char *started[] = {"op=job.started ", job_kv, agent_kv, NULL};
    free(wait_line(srv.log, started));
    const char *result[] = {"op=job.result ", job_kv, agent_kv, " outcome=", " req=", NULL};
    char *result_line = wait_line(srv.log, result);

    /* The agent: received, started, ended, reported, each with the job. */
    const char *received[] = {"op=assignment ", job_kv, " req=", NULL};
    char *received_line = wait_line(agent_log, received);
    const char *start[] = {"op=job-start ", job_kv, NULL};
    free(wait_line(agent_log, start));
    const char *end[] = {"op=job-end ", job_kv, NULL};
    free(wait_line(agent_log, end));
    const char *report[] = {"op=report kind=result ", job_kv, " req=", NULL};
    char *report_line = wait_line(agent_log, report);

    /* One exchange, one id on both sides: the agent's report and orchd's result line, and
     * the exchange that carried the assignment. */
    char *report_req = field(report_line, "req");
    char *result_req = field(result_line, "req");
    cr_assert_str_eq(report_req, result_req, "agent: %s orchd: %s", report_line, result_line);
    cr_assert(id_is_valid(report_req), "the agent's exchange id: %s", report_req);
    char *received_req = field(received_line, "req");
    char *deliver_req = field(deliver_line, "req");
    cr_assert_str_eq(received_req, deliver_req, "agent: %s orchd: %s", received_line, deliver_line);

    free(report_req);
    free(result_req);
    free(received_req);
    free(deliver_req);
    free(report_line);
    free(received_line);
    free(result_line);
    free(deliver_line);
    free(job);
}

/* X-Request-Id: kept when safe, cut to 64 characters when longer, replaced by a new
 * UUIDv7 when it holds what a log line or a header must not; the log shows the id used. */
Test(trace, incoming_request_ids)
{
    struct th_resp r;
    char hdr[256], want[80], *got;

    char long_id[129];
    memset(long_id, 'L', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", long_id);
    th_http_hdr(&srv, "GET", "/api/v1/queues", admin, NULL, hdr, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    got = th_resp_header(&r, "X-Request-Id");
    cr_assert_eq(strlen(got), 64);
    cr_assert_eq(memcmp(got, long_id, 64), 0);
    snprintf(want, sizeof(want), " req=%s ", got);
    cr_assert(file_has(srv.log, want), "the cut id is the one logged");
    free(got);
    th_resp_free(&r);

    th_http_hdr(&srv, "GET", "/api/v1/queues", admin, NULL,
                "X-Request-Id: evil\" level=error forged=1", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    got = th_resp_header(&r, "X-Request-Id");
    cr_assert(id_is_valid(got), "replaced by a new id: %s", got);
    snprintf(want, sizeof(want), " req=%s ", got);
    cr_assert(file_has(srv.log, want), "the new id is the one logged");
    cr_assert_not(file_has(srv.log, "forged=1"), "a refused id never reaches the log");
    free(got);
    th_resp_free(&r);

    /* A problem carries the id too. */
    th_http_hdr(&srv, "GET", "/api/v1/jobs/not-a-job", admin, NULL, "X-Request-Id: pb-1", &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "request_id"), "pb-1");
    th_resp_free(&r);
}

/* Bearer tokens (an access token, a refused one), the operator's key and an agent's
 * credential sent on requests never appear in orchd's log, and the agent does not log its
 * own credential; the requests themselves are logged by id. */
Test(trace, secrets_stay_out_of_the_log)
{
    struct th_resp r;
    const char *fake = "orch_op_FAKEsecretVALUE0123456789";

    th_http_hdr(&srv, "GET", "/api/v1/queues", admin, NULL, "X-Request-Id: secret-ok", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    th_http_hdr(&srv, "GET", "/api/v1/queues", fake, NULL, "X-Request-Id: secret-refused", &r);
    cr_assert_eq(r.status, 401, "%s", r.body);
    th_resp_free(&r);
    char body[160];
    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", fake);
    th_http_hdr(&srv, "POST", "/api/v1/auth/token", NULL, body, "X-Request-Id: secret-key", &r);
    cr_assert_eq(r.status, 401, "%s", r.body);
    th_resp_free(&r);

    const char *ok[] = {"status=200", " req=secret-ok", NULL};
    free(wait_line(srv.log, ok));
    const char *refused[] = {"status=401", " req=secret-refused", NULL};
    free(wait_line(srv.log, refused));
    const char *key[] = {"status=401", " req=secret-key", NULL};
    free(wait_line(srv.log, key));

    cr_assert_not(file_has(srv.log, admin), "an access token in orchd's log");
    cr_assert_not(file_has(srv.log, fake), "a refused token in orchd's log");
    cr_assert_not(file_has(srv.log, srv.operator_token), "the operator key in orchd's log");

    /* The agent's credential: in its state file, never in either log. The agent has run
     * exchanges by now (it took part in no job yet, but it has synced). */
    char state_path[160];
    snprintf(state_path, sizeof(state_path), "%s/agent.json", agent_dir);
    json_error_t je;
    json_t *st = json_load_file(state_path, 0, &je);
    cr_assert_not_null(st, "%s: %s", state_path, je.text);
    const char *cred = json_string_value(json_object_get(st, "credential"));
    cr_assert(cred && strlen(cred) > 16, "no credential in %s", state_path);
    const char *sync[] = {"op=http method=POST route=/api/v1/agent/sync", NULL};
    free(wait_line(srv.log, sync));
    cr_assert_not(file_has(srv.log, cred), "the agent credential in orchd's log");
    cr_assert_not(file_has(agent_log, cred), "the agent credential in its own log");
    json_decref(st);
}
