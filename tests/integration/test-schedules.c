/* Integration tests of schedules: the real orchd over HTTPS on the real PostgreSQL and
 * RabbitMQ. The API (validation, next firings, quota, tenant isolation, audit). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op; /* operator access token */

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
}

static void teardown(void)
{
    free(op);
    op = NULL;
    th_server_stop(&srv);
}

TestSuite(schedules, .init = setup, .fini = teardown, .timeout = 120);

/* POST body; asserts the status; returns the new id (or NULL when not 201). */
static char *create(const char *token, const char *body, long want)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/schedules", token, body, NULL, &r);
    cr_assert_eq(r.status, want, "create %s: %ld %s", body, r.status, r.body);
    char *id = r.status == 201 ? strdup(th_str_of(&r, "id")) : NULL;
    th_resp_free(&r);
    return id;
}

/* POST body expecting 422 naming field, whose detail contains detail_part. */
static void refused(const char *token, const char *body, const char *field, const char *detail_part)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/schedules", token, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s: %ld %s", body, r.status, r.body);
    cr_assert_str_eq(r.content_type, "application/problem+json");
    cr_assert_str_eq(th_str_of(&r, "field"), field, "%s: %s", body, r.body);
    if (detail_part)
        cr_assert_not_null(strstr(th_str_of(&r, "detail"), detail_part), "%s", r.body);
    th_resp_free(&r);
}

Test(schedules, lifecycle_with_next_runs_in_the_zone)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\":\"builds\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/schedules", t,
            "{\"name\":\"nightly\",\"cron\":\"30 2 * * *\",\"timezone\":\"Europe/Paris\","
            "\"queue\":\"builds\",\"job\":{\"command\":\"true\",\"args\":[\"x\"]},"
            "\"missed_policy\":\"run_once\",\"overlap_policy\":\"skip\"}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    cr_assert_str_eq(th_str_of(&r, "queue"), "builds");
    cr_assert_str_eq(th_str_of(&r, "missed_policy"), "run_once");
    cr_assert_str_eq(th_str_of(&r, "overlap_policy"), "skip");
    cr_assert(json_is_null(json_object_get(r.json, "last_fired_at")));
    json_t *runs = json_object_get(r.json, "next_runs");
    cr_assert_eq(json_array_size(runs), 5, "%s", r.body);
    int64_t prev = 0;
    for (size_t i = 0; i < 5; i++) {
        json_t *run = json_array_get(runs, i);
        const char *at = json_string_value(json_object_get(run, "at"));
        const char *local = json_string_value(json_object_get(run, "local"));
        int64_t ms = 0;
        cr_assert_eq(clock_parse_rfc3339(at, &ms), 0, "%s", at);
        cr_assert_gt(ms, prev);
        cr_assert_gt(ms, clock_real_ms());
        prev = ms;
        /* 02:30 in Paris, whatever the offset of the day (+01:00 or +02:00). */
        cr_assert_not_null(strstr(local, "T02:30:00+0"), "%s", local);
        int64_t lms = 0;
        cr_assert_eq(clock_parse_rfc3339(local, &lms), 0, "%s", local);
        cr_assert_eq(lms, ms, "the local time is the same instant");
    }
    /* next_run_at is the first of them. */
    int64_t next = 0;
    cr_assert_eq(clock_parse_rfc3339(th_str_of(&r, "next_run_at"), &next), 0);
    int64_t first = 0;
    clock_parse_rfc3339(json_string_value(json_object_get(json_array_get(runs, 0), "at")), &first);
    cr_assert_eq(next, first);
    th_resp_free(&r);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", id);
    th_http(&srv, "GET", path, t, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "name"), "nightly");
    cr_assert_str_eq(th_str_of(&r, "timezone"), "Europe/Paris");
    th_resp_free(&r);

    /* Disable: no next firing; enable with a shortcut: hourly, at minute 0. */
    th_http(&srv, "PATCH", path, t, "{\"enabled\":false}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_false(json_object_get(r.json, "enabled")));
    cr_assert(json_is_null(json_object_get(r.json, "next_run_at")), "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "next_runs")), 0);
    cr_assert_str_eq(th_str_of(&r, "queue"), "builds", "untouched members stay");
    th_resp_free(&r);
    th_http(&srv, "PATCH", path, t, "{\"enabled\":true,\"cron\":\"@hourly\",\"timezone\":\"UTC\"}",
            NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    runs = json_object_get(r.json, "next_runs");
    cr_assert_eq(json_array_size(runs), 5);
    const char *at0 = json_string_value(json_object_get(json_array_get(runs, 0), "at"));
    cr_assert_not_null(strstr(at0, ":00:00.000Z"), "%s", at0);
    th_resp_free(&r);

    th_http(&srv, "GET", "/api/v1/schedules", t, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    th_resp_free(&r);

    /* Audited like other resources. */
    th_http(&srv, "GET", "/api/v1/audit", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, "schedule.create"));
    cr_assert_not_null(strstr(r.body, "schedule.update"));
    th_resp_free(&r);

    th_http(&srv, "DELETE", path, t, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "GET", path, t, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/audit", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, "schedule.delete"));
    th_resp_free(&r);
    free(id);
    free(t);
    free(tenant);
}

Test(schedules, bad_input_is_refused_naming_the_field)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    /* The parser's own message reaches the tenant. */
    refused(t, "{\"name\":\"a\",\"cron\":\"0 24 * * *\",\"job\":{\"command\":\"x\"}}", "cron",
            "field 2 (hour): 24 is out of range 0-23");
    refused(t, "{\"name\":\"a\",\"cron\":\"0 0 30 2 *\",\"job\":{\"command\":\"x\"}}", "cron",
            "never fires");
    refused(t, "{\"name\":\"a\",\"cron\":\"@sometimes\",\"job\":{\"command\":\"x\"}}", "cron",
            NULL);
    refused(t,
            "{\"name\":\"a\",\"cron\":\"@daily\",\"timezone\":\"Mars/Base\","
            "\"job\":{\"command\":\"x\"}}",
            "timezone", "Mars/Base");
    refused(t,
            "{\"name\":\"a\",\"cron\":\"@daily\",\"timezone\":\"../etc/passwd\","
            "\"job\":{\"command\":\"x\"}}",
            "timezone", NULL);
    /* The job template gets POST /jobs' checks, named under job. */
    refused(t, "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"args\":[]}}", "job.command", NULL);
    refused(t, "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\",\"priority\":1000}}",
            "job.priority", NULL);
    refused(t, "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\",\"queue\":\"q\"}}",
            "job.queue", NULL);
    refused(t,
            "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"},\"queue\":\"nope\"}",
            "queue", "no queue");
    refused(t,
            "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"},"
            "\"missed_policy\":\"later\"}",
            "missed_policy", NULL);
    refused(t,
            "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"},"
            "\"overlap_policy\":\"sometimes\"}",
            "overlap_policy", NULL);
    refused(t, "{\"name\":\"-a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", "name", NULL);
    refused(t, "{\"name\":\"a\",\"job\":{\"command\":\"x\"}}", "cron", NULL);
    /* Nothing was created by any of them; a duplicate name is a conflict. */
    free(create(t, "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", 201));
    create(t, "{\"name\":\"a\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", 409);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/schedules", t, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1, "%s", r.body);
    th_resp_free(&r);
    free(t);
    free(tenant);
}

Test(schedules, quota_refuses_with_problem)
{
    char *tenant = th_tenant(&srv, op, "small", "free"); /* free tier: 2 schedules */
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    free(create(t, "{\"name\":\"one\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", 201));
    free(create(t, "{\"name\":\"two\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", 201));
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/schedules", t,
            "{\"name\":\"three\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", NULL, &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:quota-exceeded");
    cr_assert_str_eq(th_str_of(&r, "quota"), "schedules");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "limit")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "used")), 2);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/tenant", t, NULL, NULL, &r);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.json, "usage"), "schedules")),
                 2);
    th_resp_free(&r);
    free(t);
    free(tenant);
}

Test(schedules, tenants_cannot_reach_each_other)
{
    char *ta = th_tenant(&srv, op, "tenant-a", "standard");
    char *tb = th_tenant(&srv, op, "tenant-b", "standard");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    char *sa =
        create(a, "{\"name\":\"a-sched\",\"cron\":\"@daily\",\"job\":{\"command\":\"x\"}}", 201);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", sa);
    struct th_resp r;
    th_http(&srv, "GET", path, b, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    cr_assert_null(strstr(r.body, "a-sched"), "nothing of A may leak: %s", r.body);
    th_resp_free(&r);
    th_http(&srv, "PATCH", path, b, "{\"enabled\":false}", NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "DELETE", path, b, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/schedules", b, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0, "%s", r.body);
    th_resp_free(&r);
    /* A's schedule is intact. */
    th_http(&srv, "GET", path, a, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(json_is_true(json_object_get(r.json, "enabled")));
    th_resp_free(&r);
    free(sa);
    free(a);
    free(b);
    free(ta);
    free(tb);
}
