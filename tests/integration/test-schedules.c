/* Integration tests of schedules: the real orchd over HTTPS on the real PostgreSQL and
 * RabbitMQ. The API (validation, next firings, quota, tenant isolation, audit). */
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
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

/* --- firing ------------------------------------------------------------------------------
 * The scheduler's clock is moved with scheduler.clock_offset (a test aid): a node started
 * with an offset acts as if the time were that much later, so a test reaches an hourly
 * schedule's next times in seconds. The firing records are read in the database. */

/* A scheduler node whose clock reads real time + offset_ms (with the api role: the
 * harness waits for a node's port). */
static void start_scheduler(struct th_server *peer, int64_t offset_ms)
{
    char off[64];
    snprintf(off, sizeof(off), "ORCHD_SCHEDULER_CLOCK_OFFSET=%lldms", (long long)offset_ms);
    const char *env[] = {"ORCHD_NODE_ROLES=api,scheduler", off, NULL};
    th_server_start_peer_env(peer, &srv, env);
}

/* The first time of schedule id as the API computed it, in ms. */
static int64_t first_time_ms(PGconn *pg, const char *id)
{
    char q[256];
    snprintf(
        q, sizeof(q),
        "SELECT (extract(epoch FROM next_run_at) * 1000)::bigint FROM schedules WHERE id = '%s'",
        id);
    return th_pg_long(pg, q);
}

/* Wait (at most 30 s) until sql, run as the system role, counts at least want. */
static long wait_count(PGconn *pg, const char *sql, long want)
{
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    long n;
    while ((n = th_pg_long(pg, sql)) < want && clock_mono_ns() < deadline)
        usleep(50000);
    return n;
}

/* Create a schedule and return its id; body is the JSON object's members after the name. */
static char *create_named(const char *token, const char *name, const char *rest)
{
    char body[1024];
    snprintf(body, sizeof(body), "{\"name\":\"%s\",%s}", name, rest);
    return create(token, body, 201);
}

static long firings(PGconn *pg, const char *id, const char *status)
{
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s' AND status = '%s'", id,
             status);
    return th_pg_long(pg, q);
}

/* Subscribe tenant's admin token to the schedule events, at an address no one listens on:
 * this test's orchd runs no webhooks role, so the deliveries stay pending, to be read. */
static void subscribe(const char *admin)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/webhooks", admin,
            "{\"url\":\"https://127.0.0.1:9/hook\","
            "\"events\":[\"schedule.fired\",\"schedule.skipped\"]}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
}

/* The events of type about schedule id queued for delivery. */
static long events(PGconn *pg, const char *id, const char *type)
{
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM webhook_deliveries WHERE event_type = '%s'"
             " AND payload->'data'->>'schedule_id' = '%s'",
             type, id);
    return th_pg_long(pg, q);
}

/* This test's orchd runs no scheduler: the tests' own scheduler nodes fire. It runs no
 * webhooks role either (subscribe()). */
static void setup_firing(void)
{
    const char *env[] = {"ORCHD_NODE_ROLES=api,gateway,dispatcher,reaper",
                         "ORCHD_WEBHOOKS_ALLOW_PRIVATE=true", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
}

TestSuite(firing, .init = setup_firing, .fini = teardown, .timeout = 240);

Test(firing, fires_on_time_with_the_job_recorded)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    subscribe(admin);
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    char *id = create_named(t, "hourly", "\"cron\":\"0 * * * *\",\"job\":{\"command\":\"true\"}");
    int64_t h = first_time_ms(pg, id);
    /* The scheduler's clock reads 3 s before the hour: nothing fires until it passes. */
    struct th_server sched;
    start_scheduler(&sched, h - clock_real_ms() - 3000);
    cr_assert_eq(firings(pg, id, "fired"), 0, "fired before its time");
    char q[1024];
    snprintf(q, sizeof(q), "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'", id);
    cr_assert_eq(wait_count(pg, q, 1), 1, "no firing within 30 s");
    snprintf(q, sizeof(q),
             "SELECT ((extract(epoch FROM scheduled_for) * 1000)::bigint = %lld"
             " AND status = 'fired' AND job_id IS NOT NULL"
             " AND (SELECT count(*) FROM jobs j WHERE j.id = f.job_id AND j.command = 'true') = 1)"
             "::int FROM schedule_firings f WHERE schedule_id = '%s'",
             (long long)h, id);
    cr_assert_eq(th_pg_long(pg, q), 1, "the firing is for the hour and its job exists");
    /* The API shows it, and the next time is the hour after. */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", id);
    struct th_resp r;
    th_http(&srv, "GET", path, t, NULL, NULL, &r);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "last_firing"), "status")),
        "fired", "%s", r.body);
    int64_t next = 0;
    clock_parse_rfc3339(th_str_of(&r, "next_run_at"), &next);
    cr_assert_eq(next, h + 3600000, "%s", r.body);
    const char *jid =
        json_string_value(json_object_get(json_object_get(r.json, "last_firing"), "job_id"));
    cr_assert_not_null(jid);
    /* The job's status comes with it: queued, as this server runs no agent. */
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "last_firing"), "job_status")),
        "queued", "%s", r.body);
    char job[ID_STR_LEN];
    snprintf(job, sizeof(job), "%s", jid);
    json_t *j = th_job(&srv, t, job);
    cr_assert_not_null(j);
    json_decref(j);
    th_resp_free(&r);
    cr_assert_eq(th_log_wait(&sched, "op=schedule-fired", 1, 10000), 1);
    /* Its schedule.fired event, with the job and the times. */
    cr_assert_eq(events(pg, id, "schedule.fired"), 1);
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'schedule.fired'"
             " AND payload->'data'->>'job_id' = '%s' AND payload->'data'->>'name' = 'hourly'"
             " AND (payload->'data'->>'scheduled_for')::timestamptz = to_timestamp(%lld)"
             " AND (payload->'data'->>'next_run_at')::timestamptz = to_timestamp(%lld)",
             job, (long long)(h / 1000), (long long)(h / 1000 + 3600));
    cr_assert_eq(th_pg_long(pg, q), 1, "the event names the job and the times");
    cr_assert_eq(events(pg, id, "schedule.skipped"), 0);
    th_server_stop_peer(&sched);
    PQfinish(pg);
    free(id);
    free(admin);
    free(t);
    free(tenant);
}

/* Fire schedule id at its due time t (seconds) with a scheduler whose clock reads 1 s past
 * it; return the next time it was moved to, in seconds. */
static int64_t fire_at(PGconn *pg, const char *id, int64_t t)
{
    struct th_server sched;
    start_scheduler(&sched, t * 1000 - clock_real_ms() + 1000);
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'"
             " AND scheduled_for = to_timestamp(%lld) AND status = 'fired'",
             id, (long long)t);
    cr_assert_eq(wait_count(pg, q, 1), 1, "%lld did not fire", (long long)t);
    th_server_stop_peer(&sched);
    snprintf(q, sizeof(q),
             "SELECT extract(epoch FROM next_run_at)::bigint FROM schedules WHERE id = '%s'", id);
    return th_pg_long(pg, q);
}

/* 02:30 in Berlin across both changes of 2027 (docs/scheduling.md, "Daylight saving
 * time"): on 28 March 02:00-02:59 does not exist and the firing comes at the end of the
 * gap, 03:00 CEST; on 31 October 02:00-02:59 happens twice and it fires at the first. */
Test(firing, dst_changes_both_ways)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    char *id = create_named(t, "night",
                            "\"cron\":\"30 2 * * *\",\"timezone\":\"Europe/Berlin\","
                            "\"job\":{\"command\":\"true\"}");
    /* 27 March 2027 02:30 CET = 01:30Z. */
    const int64_t mar27 = 1806111000;
    char q[256];
    snprintf(q, sizeof(q), "UPDATE schedules SET next_run_at = to_timestamp(%lld) WHERE id = '%s'",
             (long long)mar27, id);
    PQclear(th_pg_ok(pg, q));
    int64_t next = fire_at(pg, id, mar27);
    cr_assert_eq(next, mar27 + 86400 - 1800, "28 March: 03:00 CEST (01:00Z), the gap's end");
    next = fire_at(pg, id, next);
    cr_assert_eq(next, mar27 + 2 * 86400 - 3600, "29 March: 02:30 CEST (00:30Z)");

    /* 30 October 2027 02:30 CEST = 00:30Z. */
    const int64_t oct30 = 1824856200;
    snprintf(q, sizeof(q), "UPDATE schedules SET next_run_at = to_timestamp(%lld) WHERE id = '%s'",
             (long long)oct30, id);
    PQclear(th_pg_ok(pg, q));
    next = fire_at(pg, id, oct30);
    cr_assert_eq(next, oct30 + 86400, "31 October: 02:30 CEST (00:30Z), the first 02:30");
    next = fire_at(pg, id, next);
    cr_assert_eq(next, oct30 + 2 * 86400 + 3600,
                 "not 02:30 CET (01:30Z) the same night: 1 November 02:30 CET (01:30Z)");
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'"
             " AND status = 'fired'",
             id);
    cr_assert_eq(th_pg_long(pg, q), 4, "four firings, one job each");
    PQfinish(pg);
    free(id);
    free(t);
    free(tenant);
}

Test(firing, missed_runs_skip_or_run_once)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    subscribe(admin);
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    char *skip = create_named(t, "skipper",
                              "\"cron\":\"0 * * * *\",\"job\":{\"command\":\"true\"},"
                              "\"missed_policy\":\"skip\"");
    char *once = create_named(t, "once",
                              "\"cron\":\"0 * * * *\",\"job\":{\"command\":\"true\"},"
                              "\"missed_policy\":\"run_once\"");
    int64_t h = first_time_ms(pg, skip);
    cr_assert_eq(first_time_ms(pg, once), h);
    /* Down from before h until h + 3.5 hours: h, h+1, h+2 and h+3 were missed. */
    struct th_server sched;
    start_scheduler(&sched, h - clock_real_ms() + 3 * 3600000 + 1800000);
    char q[512];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedules WHERE id IN ('%s', '%s')"
             " AND next_run_at = to_timestamp(%lld)",
             skip, once, (long long)(h / 1000 + 4 * 3600));
    cr_assert_eq(wait_count(pg, q, 2), 2, "both moved to the first future time");
    cr_assert_eq(firings(pg, skip, "skipped"), 1, "skip: one skipped firing");
    cr_assert_eq(firings(pg, skip, "fired"), 0);
    cr_assert_eq(firings(pg, once, "fired"), 1, "run_once: one firing for all");
    cr_assert_eq(firings(pg, once, "skipped"), 0);
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'"
             " AND reason LIKE 'missed: 4 firing times%%'"
             " AND scheduled_for = to_timestamp(%lld)",
             skip, (long long)(h / 1000 + 3 * 3600));
    cr_assert_eq(th_pg_long(pg, q), 1, "the skip names the 4 missed times, at the last");
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings f JOIN jobs j ON j.id = f.job_id"
             " WHERE f.schedule_id = '%s' AND f.scheduled_for = to_timestamp(%lld)",
             once, (long long)(h / 1000 + 3 * 3600));
    cr_assert_eq(th_pg_long(pg, q), 1, "run_once submitted one job, for the last missed time");
    cr_assert_eq(events(pg, skip, "schedule.skipped"), 1, "one schedule.skipped event");
    cr_assert_eq(events(pg, skip, "schedule.fired"), 0);
    cr_assert_eq(events(pg, once, "schedule.fired"), 1, "one schedule.fired event");
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM webhook_deliveries WHERE event_type = 'schedule.skipped'"
             " AND payload->'data'->>'reason' LIKE 'missed: 4 firing times%%'"
             " AND payload->'data'->>'job_id' IS NULL");
    cr_assert_eq(th_pg_long(pg, q), 1, "the skipped event says why");
    /* Through the API: a skip has no job, and so no job status. */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", skip);
    struct th_resp r;
    th_http(&srv, "GET", path, t, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *last = json_object_get(r.json, "last_firing");
    cr_assert_str_eq(json_string_value(json_object_get(last, "status")), "skipped", "%s", r.body);
    cr_assert(json_is_null(json_object_get(last, "job_id")), "%s", r.body);
    cr_assert(json_is_null(json_object_get(last, "job_status")), "%s", r.body);
    th_resp_free(&r);
    th_server_stop_peer(&sched);
    PQfinish(pg);
    free(skip);
    free(once);
    free(admin);
    free(t);
    free(tenant);
}

/* Fire hour k (h + k hours) of the schedules with a scheduler whose clock reads 1 s past
 * it; wait until every schedule in ids has a record for it. */
static void fire_hour(PGconn *pg, int64_t h, int k, const char *const *ids, size_t n)
{
    struct th_server sched;
    start_scheduler(&sched, h + (int64_t)k * 3600000 - clock_real_ms() + 1000);
    for (size_t i = 0; i < n; i++) {
        char q[256];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'"
                 " AND scheduled_for = to_timestamp(%lld)",
                 ids[i], (long long)(h / 1000 + k * 3600));
        cr_assert_eq(wait_count(pg, q, 1), 1, "hour %d of %s not recorded", k, ids[i]);
    }
    th_server_stop_peer(&sched);
}

Test(firing, overlap_policies)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    /* No agent: every job stays queued, so each schedule's first job is still waiting at
     * its second time. */
    const char *job = "\"cron\":\"0 * * * *\",\"job\":{\"command\":\"true\"}";
    char rest[256];
    snprintf(rest, sizeof(rest), "%s,\"overlap_policy\":\"allow\"", job);
    char *allow = create_named(t, "allow", rest);
    snprintf(rest, sizeof(rest), "%s,\"overlap_policy\":\"skip\"", job);
    char *skip = create_named(t, "skip", rest);
    snprintf(rest, sizeof(rest), "%s,\"overlap_policy\":\"queue_one\"", job);
    char *one = create_named(t, "one", rest);
    const char *ids[] = {allow, skip, one};
    int64_t h = first_time_ms(pg, allow);
    cr_assert_eq(first_time_ms(pg, skip), h);
    cr_assert_eq(first_time_ms(pg, one), h);
    fire_hour(pg, h, 0, ids, 3);
    fire_hour(pg, h, 1, ids, 3);
    PGresult *dump = th_pg_ok(pg, "SELECT string_agg(schedule_id || ' ' || scheduled_for || ' '"
                                  " || status || ' ' || coalesce(reason, ''), '; ')"
                                  " FROM schedule_firings");
    cr_assert_eq(firings(pg, allow, "fired"), 2, "allow fires while its job waits: %s",
                 PQgetvalue(dump, 0, 0));
    PQclear(dump);
    cr_assert_eq(firings(pg, skip, "fired"), 1);
    cr_assert_eq(firings(pg, skip, "skipped"), 1, "skip skips while its job waits");
    cr_assert_eq(firings(pg, one, "fired"), 1);
    cr_assert_eq(firings(pg, one, "skipped"), 1, "queue_one: one job waits already");
    char q[512];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s'"
             " AND reason LIKE 'overlap:%%'",
             skip);
    cr_assert_eq(th_pg_long(pg, q), 1);
    /* The job an agent took (assigned, not queued): queue_one fires again, skip does not. */
    PQclear(th_pg_ok(pg, "UPDATE jobs SET status = 'assigned', epoch = 1, attempt = 1"
                         " WHERE status = 'queued'"));
    fire_hour(pg, h, 2, ids, 3);
    cr_assert_eq(firings(pg, one, "fired"), 2, "queue_one fires while the previous runs");
    cr_assert_eq(firings(pg, skip, "skipped"), 2, "skip still skips");
    cr_assert_eq(firings(pg, allow, "fired"), 3);
    PQfinish(pg);
    free(allow);
    free(skip);
    free(one);
    free(t);
    free(tenant);
}

/* Two scheduler nodes (this test's orchd and a peer) with the same clock: each time fires
 * once. The node that fired is killed (-9) within the minute; the other fires the next
 * minute, with no double and no gap. */
Test(firing, two_nodes_fire_once_and_survive_a_kill)
{
    th_server_stop(&srv);
    int64_t now = clock_real_ms();
    int64_t m1 = (now / 60000 + 1) * 60000;
    if (m1 - now < 10000)
        m1 += 60000;
    /* Both nodes' clocks read 4 s before minute m1. */
    int64_t offset = m1 - now - 4000;
    char off[64];
    snprintf(off, sizeof(off), "ORCHD_SCHEDULER_CLOCK_OFFSET=%lldms", (long long)offset);
    const char *env[] = {off, NULL};
    th_server_start(&srv, env);
    free(op);
    op = th_token(&srv, srv.operator_token);
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    struct th_server peer;
    start_scheduler(&peer, offset);
    char *id = create_named(t, "minutely",
                            "\"cron\":\"* * * * *\",\"enabled\":false,"
                            "\"job\":{\"command\":\"true\"}");
    /* Created disabled (the API computes next times on the real clock, which the
     * schedulers' is ahead of), then enabled from the schedulers' next minute. */
    char q[512];
    snprintf(
        q, sizeof(q),
        "UPDATE schedules SET enabled = true, next_run_at = to_timestamp(%lld) WHERE id = '%s'",
        (long long)(m1 / 1000), id);
    PQclear(th_pg_ok(pg, q));
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s' AND status = 'fired'",
             id);
    cr_assert_eq(wait_count(pg, q, 1), 1, "minute 1 did not fire");
    /* The firing's log line follows its commit: wait for it, bounded. */
    int by_main = 0, by_peer = 0;
    uint64_t logged_by = clock_mono_ns() + 10ull * 1000000000ull;
    do {
        by_main = th_log_count(&srv, "op=schedule-fired");
        by_peer = th_log_count(&peer, "op=schedule-fired");
        if (by_main + by_peer == 0)
            usleep(20000);
    } while (by_main + by_peer == 0 && clock_mono_ns() < logged_by);
    cr_assert_eq(by_main + by_peer, 1, "one node fired minute 1 (main %d, peer %d)", by_main,
                 by_peer);
    /* Kill the one that fired, within the minute. */
    struct th_server *leader = by_main ? &srv : &peer, *other = by_main ? &peer : &srv;
    kill(leader->pid, SIGKILL);
    waitpid(leader->pid, NULL, 0);
    leader->pid = 0;
    uint64_t deadline = clock_mono_ns() + 90ull * 1000000000ull;
    while (th_pg_long(pg, q) < 2 && clock_mono_ns() < deadline)
        usleep(100000);
    PGresult *dump =
        th_pg_ok(pg, "SELECT coalesce(string_agg(scheduled_for || ' ' || status, '; '), '')"
                     " || ' next ' || (SELECT next_run_at FROM schedules)::text"
                     " || ' now ' || now()::text FROM schedule_firings");
    cr_assert_eq(th_pg_long(pg, q), 2, "the survivor did not fire minute 2: %s (survivor log: %s)",
                 PQgetvalue(dump, 0, 0), other->log);
    PQclear(dump);
    cr_assert_eq(th_log_wait(other, "op=schedule-fired", 1, 10000), 1,
                 "the survivor fired minute 2");
    snprintf(q, sizeof(q),
             "SELECT (count(DISTINCT scheduled_for) = 2 AND max(scheduled_for) - min(scheduled_for)"
             " = interval '1 minute' AND count(*) = 2"
             " AND (SELECT count(*) FROM jobs) = 2)::int FROM schedule_firings"
             " WHERE schedule_id = '%s'",
             id);
    cr_assert_eq(th_pg_long(pg, q), 1, "minutes 1 and 2 fired once each, one job each");
    if (peer.pid)
        th_server_stop_peer(&peer);
    PQfinish(pg);
    free(id);
    free(t);
    free(tenant);
}
