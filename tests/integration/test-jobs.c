/* The jobs API on the real orchd, PostgreSQL and RabbitMQ: submission (single, batch,
 * idempotent), validation, listing, cancelling, output, tenancy, and the announcement of
 * submissions on the bus with publisher confirms. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/crypto.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *oper;
static char jobs_queue[64];

static void setup(void)
{
    uint8_t rnd[6];
    char hex[13];
    crypto_random(rnd, sizeof(rnd));
    hex_encode(rnd, sizeof(rnd), hex);
    snprintf(jobs_queue, sizeof(jobs_queue), "orch.test.jobs.%s", hex);
    char env_queue[128];
    snprintf(env_queue, sizeof(env_queue), "ORCHD_BUS_JOBS_QUEUE=%s", jobs_queue);
    /* No dispatcher on this node: the announcements stay in the queue for the test to read,
     * and the jobs stay queued. */
    const char *env[] = {env_queue, "ORCHD_DISPATCH_ENABLED=false", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "professional");
    oper = th_tenant_token(&srv, op, tenant, "operator");
}

static void teardown(void)
{
    free(oper);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(jobs, .init = setup, .fini = teardown, .timeout = 120);

static json_t *submit(const char *body, long want)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", oper, body, NULL, &r);
    cr_assert_eq(r.status, want, "%s -> %ld %s", body, r.status, r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    return j;
}

Test(jobs, submit_inherits_queue_and_reads_back)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", oper,
            "{\"name\":\"builds\",\"default_priority\":7,\"requirements\":{\"os\":\"linux\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 201);
    th_resp_free(&r);

    json_t *j = submit("{\"queue\":\"builds\",\"command\":\"make\",\"args\":[\"-j\",\"4\"],"
                       "\"env\":{\"CC\":\"gcc\"},\"params\":{\"ref\":\"main\"},"
                       "\"requirements\":{\"arch\":\"x86_64\"},\"timeout_ms\":60000}",
                       201);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "queued");
    cr_assert_eq(json_integer_value(json_object_get(j, "priority")), 7, "the queue's default");
    cr_assert_str_eq(json_string_value(json_object_get(j, "queue")), "builds");
    json_t *reqs = json_object_get(j, "requirements");
    cr_assert_str_eq(json_string_value(json_object_get(reqs, "os")), "linux", "from the queue");
    cr_assert_str_eq(json_string_value(json_object_get(reqs, "arch")), "x86_64");
    cr_assert_eq(json_integer_value(json_object_get(j, "timeout_ms")), 60000);
    cr_assert_eq(json_integer_value(json_object_get(j, "max_attempts")), 3);
    cr_assert_eq(json_integer_value(json_object_get(j, "epoch")), 0);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", json_string_value(json_object_get(j, "id")));
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_str_of(&r, "command"), "make");
    th_resp_free(&r);
    json_decref(j);
}

Test(jobs, idempotency_key_returns_the_same_job)
{
    const char *body = "{\"command\":\"true\",\"idempotency_key\":\"deploy-42\"}";
    json_t *a = submit(body, 201);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", oper, body, NULL, &r);
    cr_assert_eq(r.status, 200, "a retried submission is not a new job");
    cr_assert_str_eq(th_str_of(&r, "id"), json_string_value(json_object_get(a, "id")));
    char *replayed = th_resp_header(&r, "Idempotent-Replayed");
    cr_assert_str_eq(replayed, "true");
    free(replayed);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs", oper, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    th_resp_free(&r);
    json_decref(a);
}

Test(jobs, batch_is_all_or_nothing_and_bounded)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "{\"jobs\":[");
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%s{\"command\":\"echo %d\"}", i ? "," : "", i);
    buf_append_str(&b, "]}");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs/batch", oper, b.data, NULL, &r);
    cr_assert_eq(r.status, 201, "%.300s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1000);
    th_resp_free(&r);
    buf_free(&b);

    /* 1,001 is over the limit. */
    buf_append_str(&b, "{\"jobs\":[");
    for (int i = 0; i < 1001; i++)
        buf_printf(&b, "%s{\"command\":\"x\"}", i ? "," : "");
    buf_append_str(&b, "]}");
    th_http(&srv, "POST", "/api/v1/jobs/batch", oper, b.data, NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "jobs");
    th_resp_free(&r);
    buf_free(&b);

    /* One bad element refuses the whole batch, naming it. */
    th_http(&srv, "POST", "/api/v1/jobs/batch", oper,
            "{\"jobs\":[{\"command\":\"a\"},{\"command\":\"b\"},{\"args\":[\"x\"]}]}", NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "jobs[2].command");
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/jobs/batch", oper,
            "{\"jobs\":[{\"command\":\"a\"},{\"command\":\"b\",\"queue\":\"nope\"}]}", NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "jobs[1].queue");
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?limit=1&status=queued", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM jobs"), 1000,
                 "nothing of the refused batches");
    PQfinish(pg);
}

Test(jobs, validation_names_the_field)
{
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"args\":[\"x\"]}", "command"},
        {"{\"command\":\"x\",\"package_id\":\"01a201d6-c84b-7611-8d12-6ddb814c3026\"}", "command"},
        {"{\"command\":\"x\",\"args\":[1]}", "args[0]"},
        {"{\"command\":\"x\",\"env\":{\"1BAD\":\"v\"}}", "env.1BAD"},
        {"{\"command\":\"x\",\"priority\":101}", "priority"},
        {"{\"command\":\"x\",\"timeout_ms\":10}", "timeout_ms"},
        {"{\"command\":\"x\",\"max_attempts\":0}", "max_attempts"},
        {"{\"command\":\"x\",\"queue\":\"missing\"}", "queue"},
        {"{\"command\":\"x\",\"colour\":\"red\"}", "colour"},
        /* PostgreSQL would hand 1e300 back as a 301-digit integer: undeliverable. */
        {"{\"command\":\"x\",\"params\":{\"a\":[1.5,-1e300]}}", "params"},
        {"{\"package_id\":\"01a201d6-c84b-7611-8d12-6ddb814c3026\",\"entrypoint\":\"run\"}",
         "package_id"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct th_resp r;
        th_http(&srv, "POST", "/api/v1/jobs", oper, cases[i].body, NULL, &r);
        cr_assert_eq(r.status, 422, "%s -> %ld %s", cases[i].body, r.status, r.body);
        cr_assert_str_eq(th_str_of(&r, "field"), cases[i].field, "%s", cases[i].body);
        th_resp_free(&r);
    }
    /* An argument of 4097 bytes (one over), in a batch's second job: the field names it. */
    static char body[4200];
    int n = snprintf(body, sizeof(body),
                     "{\"jobs\":[{\"command\":\"x\"},{\"command\":\"x\","
                     "\"args\":[\"a\",\"%4097s\"]}]}",
                     "b");
    cr_assert(n > 0 && (size_t)n < sizeof(body));
    struct th_resp rb;
    th_http(&srv, "POST", "/api/v1/jobs/batch", oper, body, NULL, &rb);
    cr_assert_eq(rb.status, 422, "%ld %.200s", rb.status, rb.body);
    cr_assert_str_eq(th_str_of(&rb, "field"), "jobs[1].args[1]");
    cr_assert_str_eq(th_str_of(&rb, "detail"), "arguments are strings of at most 4096 bytes");
    th_resp_free(&rb);
    /* Viewers read, they do not submit. */
    char *viewer = th_tenant_token(&srv, op, tenant, "viewer");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", viewer, "{\"command\":\"x\"}", NULL, &r);
    cr_assert_eq(r.status, 403);
    th_resp_free(&r);
    free(viewer);
}

Test(jobs, list_filters_and_cancel)
{
    json_t *a = submit("{\"command\":\"a\"}", 201);
    json_t *b = submit("{\"command\":\"b\"}", 201);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel",
             json_string_value(json_object_get(a, "id")));
    struct th_resp r;
    th_http(&srv, "POST", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 202, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "status"), "cancelled", "a queued job is cancelled at once");
    cr_assert(json_is_true(json_object_get(r.json, "cancel_requested")));
    th_resp_free(&r);
    th_http(&srv, "POST", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 409);
    th_resp_free(&r);

    th_http(&srv, "GET", "/api/v1/jobs?status=queued", oper, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(r.json, "items"), 0), "id")),
                     json_string_value(json_object_get(b, "id")));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?status=cancelled&limit=1", oper, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?limit=1", oper, NULL, NULL, &r);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(r.json, "items"), 0), "id")),
                     json_string_value(json_object_get(b, "id")), "newest first");
    cr_assert(json_is_string(json_object_get(r.json, "next_cursor")));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?status=sleeping", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "status");
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?created_after=yesterday", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 422);
    th_resp_free(&r);
    json_decref(a);
    json_decref(b);
}

Test(jobs, logs_read_incrementally)
{
    json_t *j = submit("{\"command\":\"echo\"}", 201);
    const char *id = json_string_value(json_object_get(j, "id"));
    /* Output as agents will write it (the agent protocol is not built yet): epoch 1,
     * three chunks of stdout. */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET epoch = 1, status = 'running' WHERE id = '%s';"
             "INSERT INTO job_logs (tenant_id, job_id, epoch, stream, \"offset\", data) VALUES"
             " ('%s', '%s', 1, 'stdout', 0, 'hello '), ('%s', '%s', 1, 'stdout', 6, 'wor'),"
             " ('%s', '%s', 1, 'stdout', 9, convert_to(E'ld\\n', 'UTF8')), ('%s', '%s', 1, "
             "'stderr', 0, 'oops')",
             id, tenant, id, tenant, id, tenant, id, tenant, id);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);

    char path[256];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs", id);
    struct th_resp r;
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello world\n");
    char *next = th_resp_header(&r, "X-Next-Offset");
    char *done = th_resp_header(&r, "X-Complete");
    cr_assert_str_eq(next, "12");
    cr_assert_str_eq(done, "false");
    free(next);
    free(done);
    th_resp_free(&r);

    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?offset=7&limit_bytes=3", id);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_str_eq(r.body, "orl", "a read starting inside a chunk");
    next = th_resp_header(&r, "X-Next-Offset");
    cr_assert_str_eq(next, "10");
    free(next);
    next = th_resp_header(&r, "X-End-Offset");
    cr_assert_str_eq(next, "12", "the stream's end, whatever was read");
    free(next);
    th_resp_free(&r);

    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?offset=12", id);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(!r.body || !r.body[0], "nothing new yet");
    next = th_resp_header(&r, "X-Next-Offset");
    cr_assert_str_eq(next, "12");
    free(next);
    th_resp_free(&r);

    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stderr", id);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_str_eq(r.body, "oops");
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdin", id);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 422);
    th_resp_free(&r);
    json_decref(j);
}

Test(jobs, other_tenants_see_nothing)
{
    json_t *j = submit("{\"command\":\"secret\"}", 201);
    char *other = th_tenant(&srv, op, "other", "standard");
    char *o = th_tenant_token(&srv, op, other, "admin");
    char path[256];
    const char *id = json_string_value(json_object_get(j, "id"));
    static const char *const suffix[] = {"", "/logs"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/api/v1/jobs/%s%s", id, suffix[i]);
        struct th_resp r;
        th_http(&srv, "GET", path, o, NULL, NULL, &r);
        cr_assert_eq(r.status, 404, "%s: %ld %s", path, r.status, r.body);
        cr_assert_null(strstr(r.body ? r.body : "", "secret"));
        th_resp_free(&r);
    }
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    struct th_resp r;
    th_http(&srv, "POST", path, o, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs", o, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    free(o);
    free(other);
    json_decref(j);
}

Test(jobs, submissions_are_announced_on_the_bus)
{
    json_t *j = submit("{\"command\":\"announce me\"}", 201);
    const char *id = json_string_value(json_object_get(j, "id"));

    struct amqp_connection_info ci;
    char *url = strdup(th_env("ORCH_AMQP_URL"));
    cr_assert_eq(amqp_parse_url(url, &ci), AMQP_STATUS_OK);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {.tv_sec = 10};
    cr_assert_eq(amqp_socket_open_noblock(s, ci.host, ci.port, &tv), AMQP_STATUS_OK);
    cr_assert_eq(amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
                     .reply_type,
                 AMQP_RESPONSE_NORMAL);
    amqp_channel_open(c, 1);
    cr_assert_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    /* The publish was confirmed before the 201, so the message is there now. */
    amqp_rpc_reply_t got = amqp_basic_get(c, 1, amqp_cstring_bytes(jobs_queue), 1);
    cr_assert_eq(got.reply_type, AMQP_RESPONSE_NORMAL);
    cr_assert_eq(got.reply.id, AMQP_BASIC_GET_OK_METHOD, "no announcement in %s", jobs_queue);
    amqp_message_t msg;
    cr_assert_eq(amqp_read_message(c, 1, &msg, 0).reply_type, AMQP_RESPONSE_NORMAL);
    char body[512];
    snprintf(body, sizeof(body), "%.*s", (int)msg.body.len, (char *)msg.body.bytes);
    cr_assert(strstr(body, id), "%s", body);
    cr_assert(strstr(body, tenant), "%s", body);
    cr_assert(strstr(body, "jobs.submitted"), "%s", body);
    amqp_destroy_message(&msg);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(jobs_queue), 0, 0);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    free(url);
    json_decref(j);
}

/* GET path with the tenant operator's token: the status, and the problem's field (or ""). */
static long get_field(const char *path, char *field, size_t flen)
{
    struct th_resp r;
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    long st = r.status;
    snprintf(field, flen, "%s", th_str_of(&r, "field"));
    th_resp_free(&r);
    return st;
}

Test(jobs, a_nul_in_the_path_or_the_query_is_refused_not_truncated)
{
    char field[64];
    /* A path parameter that decodes to a NUL names no job: 404 (was 405). */
    cr_assert_eq(get_field("/api/v1/jobs/%00", field, sizeof(field)), 404);
    cr_assert_eq(get_field("/api/v1/jobs/%00/logs", field, sizeof(field)), 404);
    /* A NUL in a query value would truncate it ("queued\0x" read as "queued"). */
    cr_assert_eq(get_field("/api/v1/jobs?status=queued%00x", field, sizeof(field)), 422);
    cr_assert_str_eq(field, "status");
    cr_assert_eq(get_field("/api/v1/jobs?limit=1&cursor=%00", field, sizeof(field)), 422);
    cr_assert_str_eq(field, "cursor");
    /* A query that is not name=value pairs was read as no parameters at all. */
    cr_assert_eq(get_field("/api/v1/jobs?status", field, sizeof(field)), 422);
    cr_assert_str_eq(field, "status");
    cr_assert_eq(get_field("/api/v1/jobs?status=queued", field, sizeof(field)), 200);
}

Test(jobs, only_cursors_the_api_returned_are_accepted)
{
    json_t *a = submit("{\"command\":\"a\"}", 201);
    json_t *b = submit("{\"command\":\"b\"}", 201);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/jobs?limit=1", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *cursor = strdup(json_string_value(json_object_get(r.json, "next_cursor")));
    th_resp_free(&r);
    char path[256], field[64];
    snprintf(path, sizeof(path), "/api/v1/jobs?limit=1&cursor=%s", cursor);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(r.json, "items"), 0), "id")),
                     json_string_value(json_object_get(a, "id")), "the next page");
    th_resp_free(&r);

    /* Forged: a job id, an id that names nothing, the real cursor with one bit changed,
     * and a real cursor of another list. */
    static const char *const forged[] = {"ffffffff-ffff-7fff-bfff-ffffffffffff", "AAAA"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/api/v1/jobs?cursor=%s", forged[i]);
        cr_assert_eq(get_field(path, field, sizeof(field)), 422, "%s", forged[i]);
        cr_assert_str_eq(field, "cursor");
    }
    snprintf(path, sizeof(path), "/api/v1/jobs?cursor=%s",
             json_string_value(json_object_get(b, "id")));
    cr_assert_eq(get_field(path, field, sizeof(field)), 422);
    char *flipped = strdup(cursor);
    flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
    snprintf(path, sizeof(path), "/api/v1/jobs?cursor=%s", flipped);
    cr_assert_eq(get_field(path, field, sizeof(field)), 422);
    cr_assert_str_eq(field, "cursor");
    snprintf(path, sizeof(path), "/api/v1/queues?cursor=%s", cursor);
    cr_assert_eq(get_field(path, field, sizeof(field)), 422, "a cursor of another list");
    free(flipped);
    free(cursor);
    json_decref(a);
    json_decref(b);
}

/* POST /jobs/{id}/retry: a finished job is submitted again as a new job with the same spec
 * and retry_of; a job still waiting or running is 409, another tenant's 404, a viewer 403;
 * the retry is audited and listed by ?retry_of=. */
Test(jobs, retry_submits_a_finished_job_again)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", oper,
            "{\"name\":\"again\",\"default_priority\":5,\"requirements\":{\"os\":\"linux\"}}", NULL,
            &r);
    cr_assert_eq(r.status, 201);
    th_resp_free(&r);
    json_t *j = submit("{\"queue\":\"again\",\"command\":\"make\",\"args\":[\"all\"],"
                       "\"env\":{\"CC\":\"cc\"},\"params\":{\"ref\":\"main\"},\"max_attempts\":2,"
                       "\"timeout_ms\":60000,\"idempotency_key\":\"retry-me\"}",
                       201);
    const char *id = json_string_value(json_object_get(j, "id"));
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/retry", id);
    th_http(&srv, "POST", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "a queued job is not retried: %ld %s", r.status, r.body);
    cr_assert_not_null(strstr(r.body, "still queued"), "%s", r.body);
    th_resp_free(&r);

    char cpath[256];
    snprintf(cpath, sizeof(cpath), "/api/v1/jobs/%s/cancel", id);
    th_http(&srv, "POST", cpath, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 202);
    th_resp_free(&r);

    char *other = th_tenant(&srv, op, "retry-other", "standard");
    char *o = th_tenant_token(&srv, op, other, "admin");
    th_http(&srv, "POST", path, o, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "another tenant's job: %ld %s", r.status, r.body);
    cr_assert_null(strstr(r.body, "make"));
    th_resp_free(&r);
    char *viewer = th_tenant_token(&srv, op, tenant, "viewer");
    th_http(&srv, "POST", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 403);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/jobs/not-a-uuid/retry", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%ld %s", r.status, r.body);
    th_resp_free(&r);

    th_http(&srv, "POST", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body);
    const char *nid = th_str_of(&r, "id");
    cr_assert_str_neq(nid, id, "a new job");
    cr_assert_str_eq(th_str_of(&r, "retry_of"), id);
    cr_assert_str_eq(th_str_of(&r, "status"), "queued");
    cr_assert_str_eq(th_str_of(&r, "queue"), "again");
    cr_assert_str_eq(th_str_of(&r, "command"), "make");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "priority")), 5);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "max_attempts")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "timeout_ms")), 60000);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "attempt")), 0);
    cr_assert(json_equal(json_object_get(r.json, "args"), json_object_get(j, "args")));
    cr_assert(json_equal(json_object_get(r.json, "env"), json_object_get(j, "env")));
    cr_assert(json_equal(json_object_get(r.json, "params"), json_object_get(j, "params")));
    cr_assert(
        json_equal(json_object_get(r.json, "requirements"), json_object_get(j, "requirements")));
    cr_assert(json_is_null(json_object_get(r.json, "idempotency_key")), "the key is not copied");
    char *new_id = strdup(nid);
    th_resp_free(&r);
    cr_assert(json_is_null(json_object_get(j, "retry_of")), "a submitted job retries nothing");

    /* Read back, found by ?retry_of=, and the retry of the retry is refused while it waits. */
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", new_id);
    th_http(&srv, "GET", path, oper, NULL, NULL, &r);
    cr_assert_str_eq(th_str_of(&r, "retry_of"), id);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/jobs?retry_of=%s", id);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    cr_assert_eq(json_array_size(items), 1, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), new_id);
    th_resp_free(&r);
    th_http(&srv, "GET", path, o, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/jobs?retry_of=nope", oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_not_null(strstr(r.body, "retry_of"));
    th_resp_free(&r);

    /* Audited, by whom and of what. */
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    th_http(&srv, "GET", "/api/v1/audit?limit=50", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    const char *at = strstr(r.body, "job.retry");
    cr_assert_not_null(at, "no audit record: %s", r.body);
    cr_assert_not_null(strstr(r.body, new_id));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/audit?limit=50", o, NULL, NULL, &r);
    cr_assert_null(strstr(r.body, "job.retry"), "the other tenant's audit log shows it");
    th_resp_free(&r);

    free(admin);
    free(new_id);
    free(viewer);
    free(o);
    free(other);
    json_decref(j);
}
