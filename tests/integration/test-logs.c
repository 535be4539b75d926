/* Job output on the real orchd, PostgreSQL and RabbitMQ, through the agent protocol's `logs`
 * and `result` reports and GET /api/v1/jobs/{id}/logs: offsets that would overflow, chunks
 * that overlap or leave a gap, the per-job log limit (the tail is kept, and readers are told
 * what was dropped), output counted in the tenant's storage, and retention. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin, *agent;

static char *enrol(const char *name)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", admin, "{\"name\":\"t\",\"max_uses\":1}",
            NULL, &r);
    cr_assert_eq(r.status, 201);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"%s\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":{},\"slots\":4}",
             th_str_of(&r, "token"), name);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    return cred;
}

static void setup(void)
{
    /* Output of finished jobs is kept 2 s, so that the test sees retention at work. */
    const char *env[] = {"ORCHD_LOGS_RETENTION=2s", "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    agent = enrol("runner");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", agent,
            "{\"status\":\"idle\",\"slots\":4,\"free_slots\":4}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
}

static void teardown(void)
{
    free(agent);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(logs, .init = setup, .fini = teardown, .timeout = 120);

/* Submit a job and take its assignment as the agent; returns its id (malloc'd). */
static char *running_job(void)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", admin, "{\"command\":\"x\",\"max_attempts\":2}", NULL,
            &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/agent/assignments?wait=20", agent, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *a = json_array_get(json_object_get(r.json, "assignments"), 0);
    cr_assert_not_null(a, "no assignment: %s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(a, "job_id")), id);
    th_resp_free(&r);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/started", id);
    th_http(&srv, "POST", path, agent, "{\"epoch\":1}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    return id;
}

/* A report on the job's own route: the status; *ans (when not NULL) gets the JSON. */
static long report(const char *id, const char *what, const char *body, json_t **ans)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/%s", id, what);
    struct th_resp r;
    th_http(&srv, "POST", path, agent, body, NULL, &r);
    long st = r.status;
    if (ans)
        *ans = json_incref(r.json);
    th_resp_free(&r);
    return st;
}

/* A logs report of stdout at offset with base64 data: the status, and the answer. */
static long chunk(const char *id, const char *offset, const char *b64, json_t **ans)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"epoch\":1,\"stream\":\"stdout\",\"offset\":%s,\"data\":\"%s\"}", offset, b64);
    return report(id, "logs", body, ans);
}

static const char *field_of(json_t *j)
{
    const char *f = json_string_value(json_object_get(j, "field"));
    return f ? f : "";
}

static json_int_t int_of(json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

/* GET the job's stdout from offset: the body (malloc'd), X-Next-Offset, X-Dropped-Bytes. */
static char *read_logs(const char *id, long long offset, long long *next, long long *dropped)
{
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?offset=%lld", id, offset);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *n = th_resp_header(&r, "X-Next-Offset");
    char *d = th_resp_header(&r, "X-Dropped-Bytes");
    cr_assert_not_null(n);
    cr_assert_not_null(d, "readers are told what was dropped");
    *next = strtoll(n, NULL, 10);
    *dropped = strtoll(d, NULL, 10);
    free(n);
    free(d);
    char *body = strndup(r.body ? r.body : "", r.len);
    th_resp_free(&r);
    return body;
}

static json_int_t usage_of(const char *what)
{
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/tenant", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_int_t v = int_of(json_object_get(r.json, "usage"), what);
    th_resp_free(&r);
    return v;
}

Test(logs, offsets_that_overflow_are_refused_naming_the_field)
{
    char *id = running_job();
    json_t *ans = NULL;
    /* 2^63 - 1: next_offset came back negative and the chunk could not be read. */
    cr_assert_eq(chunk(id, "9223372036854775807", "QUFBQQ==", &ans), 422);
    cr_assert_str_eq(field_of(ans), "offset");
    json_decref(ans);
    /* The largest offset, but its end is past it. */
    cr_assert_eq(chunk(id, "9007199254740990", "QUFBQQ==", &ans), 422);
    cr_assert_str_eq(field_of(ans), "offset");
    json_decref(ans);
    /* In a batch too, with the report's index. */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"reports\":[{\"kind\":\"logs\",\"job_id\":\"%s\",\"epoch\":1,"
             "\"stream\":\"stdout\",\"offset\":9223372036854775807,\"data\":\"QQ==\"}]}",
             id);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", agent, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *rep = json_array_get(json_object_get(r.json, "reports"), 0);
    cr_assert_eq(int_of(rep, "code"), 422, "%s", r.body);
    cr_assert_str_eq(field_of(json_object_get(rep, "problem")), "reports[0].offset");
    th_resp_free(&r);
    /* The reader's offset is bounded the same way (it overflowed in SQL). */
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?offset=9223372036854775807", id);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "offset");
    th_resp_free(&r);
    free(id);
}

Test(logs, a_stream_is_contiguous_and_reads_back_as_written)
{
    char *id = running_job();
    json_t *ans = NULL;
    cr_assert_eq(chunk(id, "0", "QUFBQQ==", &ans), 200); /* "AAAA" */
    cr_assert_eq(int_of(ans, "next_offset"), 4);
    json_decref(ans);
    /* Overlapping with different bytes ("BBBB" at 2): refused, naming the offset. */
    cr_assert_eq(chunk(id, "2", "QkJCQg==", &ans), 409);
    cr_assert_str_eq(field_of(ans), "offset");
    cr_assert_eq(int_of(ans, "next_offset"), 4);
    json_decref(ans);
    /* A gap: refused. */
    cr_assert_eq(chunk(id, "10", "QkJCQg==", &ans), 409);
    cr_assert_str_eq(field_of(ans), "offset");
    json_decref(ans);
    /* A retransmission is acknowledged as the first time. */
    cr_assert_eq(chunk(id, "0", "QUFBQQ==", &ans), 200);
    cr_assert_eq(int_of(ans, "next_offset"), 4);
    json_decref(ans);
    /* Overlapping with the same bytes, then new ones ("AABB" at 2): the new part is kept. */
    cr_assert_eq(chunk(id, "2", "QUFCQg==", &ans), 200);
    cr_assert_eq(int_of(ans, "next_offset"), 6);
    json_decref(ans);
    long long next, dropped;
    char *body = read_logs(id, 0, &next, &dropped);
    cr_assert_str_eq(body, "AAAABB");
    cr_assert_eq(next, 6);
    cr_assert_eq(dropped, 0);
    free(body);
    free(id);
}

Test(logs, a_result_answers_the_status_it_led_to)
{
    char *id = running_job();
    json_t *ans = NULL;
    /* A failure with an attempt left: the job is queued again (the answer said running). */
    cr_assert_eq(report(id, "result", "{\"epoch\":1,\"exit_code\":3}", &ans), 200);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "status")), "queued");
    json_decref(ans);
    cr_assert_eq(report(id, "result", "{\"epoch\":1,\"exit_code\":3}", &ans), 200);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "status")), "queued",
                     "a repeat answers the same");
    json_decref(ans);
    free(id);
    id = running_job();
    cr_assert_eq(report(id, "result", "{\"epoch\":1,\"exit_code\":0}", &ans), 200);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "status")), "succeeded");
    json_decref(ans);
    free(id);
}

Test(logs, over_the_job_limit_the_tail_is_kept_and_counted)
{
    /* A limit of 10 bytes for this tenant's jobs (an override, like the quotas). */
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, "{\"quotas\":{\"job_log_bytes\":10}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(int_of(json_object_get(r.json, "quotas"), "job_log_bytes"), 10);
    th_resp_free(&r);
    th_http(&srv, "PATCH", path, op, "{\"quotas\":{\"job_log_bytes\":-1}}", NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    th_resp_free(&r);

    char *id = running_job();
    json_t *ans = NULL;
    cr_assert_eq(chunk(id, "0", "MDEyMzQ1Njc4OQ==", &ans), 200); /* "0123456789" */
    cr_assert_eq(int_of(ans, "dropped_bytes"), 0);
    json_decref(ans);
    cr_assert_eq(usage_of("job_log_bytes"), 10);
    cr_assert_eq(usage_of("storage_bytes"), 10, "output counts in the storage");
    cr_assert_eq(chunk(id, "10", "YWJjZGVm", &ans), 200); /* "abcdef" */
    cr_assert_eq(int_of(ans, "next_offset"), 16);
    cr_assert_eq(int_of(ans, "dropped_bytes"), 10, "the oldest chunk made room");
    json_decref(ans);
    long long next, dropped;
    char *body = read_logs(id, 0, &next, &dropped);
    cr_assert_str_eq(body, "abcdef", "a read from the start begins where the kept bytes do");
    cr_assert_eq(next, 16);
    cr_assert_eq(dropped, 10);
    free(body);
    /* A chunk larger than the whole limit keeps its own tail. */
    cr_assert_eq(chunk(id, "16", "QUJDREVGR0hJSktMTU5P", &ans), 200); /* "ABCDEFGHIJKLMNO" */
    cr_assert_eq(int_of(ans, "next_offset"), 31);
    cr_assert_eq(int_of(ans, "dropped_bytes"), 21);
    json_decref(ans);
    body = read_logs(id, 0, &next, &dropped);
    cr_assert_str_eq(body, "FGHIJKLMNO");
    cr_assert_eq(next, 31);
    cr_assert_eq(dropped, 21);
    free(body);
    cr_assert_eq(usage_of("job_log_bytes"), 10);
    /* A retransmission of dropped bytes is acknowledged (they can no longer differ). */
    cr_assert_eq(chunk(id, "0", "MDEyMzQ1Njc4OQ==", &ans), 200);
    json_decref(ans);
    free(id);
}

Test(logs, retention_deletes_the_output_of_finished_jobs)
{
    char *id = running_job();
    char *other = running_job();
    json_t *ans = NULL;
    cr_assert_eq(chunk(id, "0", "MDEyMzQ1Njc4OQ==", &ans), 200);
    json_decref(ans);
    cr_assert_eq(chunk(other, "0", "YWJjZGVm", &ans), 200);
    json_decref(ans);
    cr_assert_eq(usage_of("job_log_bytes"), 16);
    cr_assert_eq(report(id, "result", "{\"epoch\":1,\"exit_code\":0}", NULL), 200);
    /* Bounded wait: retention runs every 0.5 s with logs.retention = 2s. */
    uint64_t deadline = clock_mono_ns() + 20ull * 1000000000ull;
    while (usage_of("job_log_bytes") != 6 && clock_mono_ns() < deadline)
        usleep(100000); /* polling the condition, bounded by the deadline */
    cr_assert_eq(usage_of("job_log_bytes"), 6, "only the running job's output is left");
    long long next, dropped;
    char *body = read_logs(id, 0, &next, &dropped);
    cr_assert_str_eq(body, "");
    cr_assert_eq(next, 10);
    cr_assert_eq(dropped, 10, "readers see the expired bytes as dropped");
    free(body);
    body = read_logs(other, 0, &next, &dropped);
    cr_assert_str_eq(body, "abcdef", "a running job's output is kept");
    free(body);
    free(other);
    free(id);
}

/* What the issue measured (34 MiB stored from one job in 1.3 s), bounded: 16 MiB of output
 * sent as the agent sends it (64 KiB chunks, 32 per exchange) to a job limited to 4 MiB. The
 * rate is printed, not asserted. */
Test(logs, a_flooding_job_stays_within_its_limit)
{
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, "{\"quotas\":{\"job_log_bytes\":4194304}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    char *id = running_job();
    enum { CHUNK = 65536, PER_SYNC = 32, SYNCS = 8 };
    static unsigned char raw[CHUNK];
    memset(raw, 'x', sizeof(raw));
    char *b64 = malloc(4 * ((CHUNK + 2) / 3) + 1);
    cr_assert_not_null(b64);
    EVP_EncodeBlock((unsigned char *)b64, raw, CHUNK);
    uint64_t t0 = clock_mono_ns();
    long long offset = 0;
    for (int s = 0; s < SYNCS; s++) {
        json_t *reports = json_array();
        for (int i = 0; i < PER_SYNC; i++, offset += CHUNK)
            json_array_append_new(reports,
                                  json_pack("{s:s, s:s, s:i, s:s, s:I, s:s}", "kind", "logs",
                                            "job_id", id, "epoch", 1, "stream", "stdout", "offset",
                                            (json_int_t)offset, "data", b64));
        json_t *body = json_pack("{s:o}", "reports", reports);
        char *text = json_dumps(body, JSON_COMPACT);
        th_http(&srv, "POST", "/api/v1/agent/sync", agent, text, NULL, &r);
        cr_assert_eq(r.status, 200, "%.300s", r.body);
        json_t *last = json_array_get(json_object_get(r.json, "reports"), PER_SYNC - 1);
        cr_assert_eq(int_of(last, "code"), 200, "%.300s", r.body);
        cr_assert_eq(int_of(last, "next_offset"), offset);
        th_resp_free(&r);
        free(text);
        json_decref(body);
    }
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    cr_log_info("sent %lld MiB in %.2f s (%.1f MiB/s); stored %lld bytes", offset >> 20, secs,
                (double)(offset >> 20) / secs, (long long)usage_of("job_log_bytes"));
    cr_assert_eq(usage_of("job_log_bytes"), 4194304, "the job keeps exactly its limit");
    long long next, dropped;
    free(read_logs(id, 0, &next, &dropped));
    cr_assert_eq(dropped, offset - 4194304);
    cr_assert_eq(next, dropped + 65536, "the first read starts at the kept tail");
    free(b64);
    free(id);
}
