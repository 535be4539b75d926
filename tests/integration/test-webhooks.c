/* Event webhooks on the real services: a job's state changes delivered to an HTTPS
 * receiver in this test, the signature checked by an independent verifier (Python's hmac),
 * retries after the endpoint fails, a delivery marked failed past webhooks.max_attempts,
 * the delivery log, a resend, another tenant refused everything, and the quota events
 * (quota.near, quota.exceeded) sent once and only to their tenant. A second suite runs
 * orchd with the default configuration, where a loopback URL is refused (SSRF). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/rx-https.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op;

static void setup(void)
{
    rx_make_certs();
    static char ca[128];
    snprintf(ca, sizeof(ca), "ORCHD_WEBHOOKS_CA_FILE=%s/ca.pem", rx_certdir);
    const char *env[] = {"ORCHD_WEBHOOKS_ALLOW_PRIVATE=true", ca,
                         "ORCHD_WEBHOOKS_RETRY_BASE=20ms",    "ORCHD_WEBHOOKS_RETRY_MAX=100ms",
                         "ORCHD_WEBHOOKS_POLL=20ms",          "ORCHD_WEBHOOKS_MAX_ATTEMPTS=3",
                         "ORCHD_AGENT_ONLINE_WINDOW=2s",      NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    rx_start();
}

static void teardown(void)
{
    free(op);
    th_server_stop(&srv);
    rx_stop();
}

TestSuite(webhooks, .init = setup, .fini = teardown, .timeout = 240);

/* POST /webhooks as admin with body; returns the response (caller frees). */
static void hook_create(const char *admin, const char *path, const char *events, struct th_resp *r)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"url\": \"https://127.0.0.1:%d%s\", \"events\": %s}", rx.port,
             path, events);
    th_http(&srv, "POST", "/api/v1/webhooks", admin, body, NULL, r);
}

/* The subscription's deliveries (caller json_decref()s), waiting (bounded) until the
 * first one has status want. */
static json_t *deliveries_wait(const char *admin, const char *hook, const char *want)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s/deliveries", hook);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    for (;;) {
        struct th_resp r;
        th_http(&srv, "GET", path, admin, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        json_t *items = json_incref(json_object_get(r.json, "items"));
        th_resp_free(&r);
        json_t *first = json_array_get(items, 0);
        if (first && strcmp(json_string_value(json_object_get(first, "status")), want) == 0)
            return items;
        cr_assert(clock_mono_ns() < deadline, "no delivery reached %s", want);
        json_decref(items);
        usleep(100000); /* 10 requests/s: under the standard tier's 20/s, whatever the wait */
    }
}

Test(webhooks, job_events_are_signed_retried_logged_and_resent)
{
    char *tenant = th_tenant(&srv, op, "wh-a", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    pthread_mutex_lock(&rx.mu);
    rx.fail_first = 2;
    pthread_mutex_unlock(&rx.mu);

    struct th_resp r;
    hook_create(admin, "/hook", "[\"job.queued\"]", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *hook = strdup(th_str_of(&r, "id"));
    char *secret = strdup(th_str_of(&r, "secret"));
    cr_assert(strncmp(secret, "orch_whsec_", 11) == 0, "secret %s", secret);
    cr_assert(strncmp(secret, th_str_of(&r, "secret_prefix"), 16) == 0);
    th_resp_free(&r);

    /* The secret is shown once: never again by GET or the list. */
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s", hook);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_null(json_object_get(r.json, "secret"));
    cr_assert_null(strstr(r.body, secret + 11));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/webhooks", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    cr_assert_null(strstr(r.body, secret + 11));
    th_resp_free(&r);

    /* A job submitted: job.queued, answered 500, 500, then 200. */
    char *job = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true"));
    rx_wait(3);
    json_t *items = deliveries_wait(admin, hook, "succeeded");
    cr_assert_eq(json_array_size(items), 1);
    json_t *d = json_array_get(items, 0);
    cr_assert_eq(json_integer_value(json_object_get(d, "attempts")), 3);
    cr_assert_eq(json_integer_value(json_object_get(d, "last_status_code")), 200);
    cr_assert(json_is_null(json_object_get(d, "next_attempt_at")));
    char *delivery = strdup(json_string_value(json_object_get(d, "id")));
    char *event = strdup(json_string_value(json_object_get(d, "event_id")));
    json_decref(items);

    pthread_mutex_lock(&rx.mu);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(rx.reqs[i].path, "/hook");
        cr_assert_str_eq(rx.reqs[i].id, event, "attempt %d", i);
        cr_assert_str_eq(rx.reqs[i].body, rx.reqs[0].body);
    }
    json_error_t jerr;
    json_t *ev = json_loads(rx.reqs[2].body, 0, &jerr);
    pthread_mutex_unlock(&rx.mu);
    cr_assert(ev, "body: %s", jerr.text);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "id")), event);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), "job.queued");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "tenant_id")), tenant);
    cr_assert(json_is_string(json_object_get(ev, "created_at")));
    json_t *data = json_object_get(ev, "data");
    cr_assert_str_eq(json_string_value(json_object_get(data, "job_id")), job);
    cr_assert_str_eq(json_string_value(json_object_get(data, "status")), "queued");
    json_decref(ev);
    for (int i = 0; i < 3; i++)
        rx_verify_with_python(secret, i);

    /* Resend: a new delivery of the same event. */
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s/deliveries/%s/resend", hook, delivery);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "event_id"), event);
    cr_assert_str_eq(th_str_of(&r, "status"), "pending");
    th_resp_free(&r);
    rx_wait(4);
    pthread_mutex_lock(&rx.mu);
    cr_assert_str_eq(rx.reqs[3].id, event);
    pthread_mutex_unlock(&rx.mu);
    rx_verify_with_python(secret, 3);

    /* Another tenant sees none of it and can do nothing to it. */
    char *other = th_tenant(&srv, op, "wh-b", "standard");
    char *oadmin = th_tenant_token(&srv, op, other, "admin");
    th_http(&srv, "GET", path, oadmin, NULL, NULL, &r);
    th_resp_free(&r);
    th_http(&srv, "POST", path, oadmin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "resend by another tenant: %s", r.body);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s", hook);
    th_http(&srv, "GET", path, oadmin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "DELETE", path, oadmin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s/deliveries", hook);
    th_http(&srv, "GET", path, oadmin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/webhooks", oadmin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s", hook);
    th_http(&srv, "PATCH", path, oadmin, "{\"enabled\": false}", NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    /* Its own job makes no delivery to A's subscription. */
    free(th_job_submit(&srv, oadmin, json_pack("{s:s}", "command", "true")));

    /* The log shows both deliveries of A's event, and nothing of B's job. */
    items = deliveries_wait(admin, hook, "succeeded");
    cr_assert_eq(json_array_size(items), 2);
    json_decref(items);

    /* Disabled, it gets no new events. */
    snprintf(path, sizeof(path), "/api/v1/webhooks/%s", hook);
    th_http(&srv, "PATCH", path, admin, "{\"enabled\": false, \"description\": \"off\"}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(json_is_false(json_object_get(r.json, "enabled")));
    cr_assert_str_eq(th_str_of(&r, "description"), "off");
    th_resp_free(&r);
    th_http(&srv, "PATCH", path, admin, "{\"events\": [\"job.nope\"]}", NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "events[0]");
    th_resp_free(&r);
    /* The outbox row would be written by the submission's own transaction: none now. */
    free(th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true")));
    items = deliveries_wait(admin, hook, "succeeded");
    cr_assert_eq(json_array_size(items), 2, "a disabled subscription got an event");
    json_decref(items);

    /* The owner deletes it: 204, then 404. */
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204);
    th_resp_free(&r);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    free(other), free(oadmin), free(delivery), free(event), free(job), free(hook), free(secret);
    free(tenant), free(admin);
}

Test(webhooks, an_endpoint_that_keeps_failing_ends_failed)
{
    char *tenant = th_tenant(&srv, op, "wh-c", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    hook_create(admin, "/fail", "[\"job.cancelled\"]", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *hook = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char *job = th_job_submit(&srv, admin, json_pack("{s:s}", "command", "true"));
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", job);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_lt(r.status, 300, "%s", r.body);
    th_resp_free(&r);
    /* webhooks.max_attempts = 3 in this suite */
    json_t *items = deliveries_wait(admin, hook, "failed");
    json_t *d = json_array_get(items, 0);
    cr_assert_eq(json_array_size(items), 1, "only job.cancelled was subscribed");
    cr_assert_str_eq(json_string_value(json_object_get(d, "type")), "job.cancelled");
    char *text = json_dumps(d, JSON_COMPACT);
    char shown[1024];
    snprintf(shown, sizeof(shown), "%s", text ? text : "?");
    free(text);
    cr_assert_eq(json_integer_value(json_object_get(d, "attempts")), 3, "%s", shown);
    cr_assert_eq(json_integer_value(json_object_get(d, "last_status_code")), 500, "%s", shown);
    cr_assert(strstr(json_string_value(json_object_get(d, "last_error")), "500"));
    cr_assert_eq(rx_count(), 3);
    json_decref(items);
    free(job), free(hook), free(tenant), free(admin);
}

Test(webhooks, agents_going_online_and_offline_are_delivered)
{
    char *tenant = th_tenant(&srv, op, "wh-f", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    hook_create(admin, "/agents", "[\"agent.online\", \"agent.offline\"]", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *hook = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char *agent = th_agent_register(&srv, admin, "runner");
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", agent,
            "{\"status\":\"idle\",\"slots\":1,\"free_slots\":1}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    /* online now; offline once silent past agent.online_window (2 s here). A slow run may
     * deliver an event twice (at least once): the events are told apart by id. */
    rx_wait_distinct(2);
    pthread_mutex_lock(&rx.mu);
    int idx[RX_MAX];
    rx_distinct(idx, RX_MAX);
    const char *want[] = {"agent.online", "agent.offline"};
    for (int i = 0; i < 2; i++) {
        json_error_t jerr;
        json_t *ev = json_loads(rx.reqs[idx[i]].body, 0, &jerr);
        cr_assert(ev, "%s", jerr.text);
        cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), want[i]);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "data"), "name")),
                         "runner");
        json_decref(ev);
    }
    pthread_mutex_unlock(&rx.mu);
    free(agent), free(hook), free(tenant), free(admin);
}

Test(webhooks, bad_subscriptions_are_refused_naming_the_field)
{
    char *tenant = th_tenant(&srv, op, "wh-d", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    static const struct {
        const char *body;
        long status;
        const char *field;
    } cases[] = {
        {"{\"url\": \"http://example.com/\", \"events\": [\"job.failed\"]}", 422, "url"},
        {"{\"url\": \"https://user@example.com/\", \"events\": [\"job.failed\"]}", 422, "url"},
        {"{\"url\": \"https://0x7f.1/\", \"events\": [\"job.failed\"]}", 422, "url"},
        {"{\"url\": \"https://example.com/\", \"events\": [\"job.exploded\"]}", 422, "events[0]"},
        {"{\"url\": \"https://example.com/\", \"events\": [\"job.failed\", \"job.failed\"]}", 422,
         "events[1]"},
        {"{\"url\": \"https://example.com/\", \"events\": []}", 422, "events"},
        {"{\"events\": [\"job.failed\"]}", 422, "url"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_http(&srv, "POST", "/api/v1/webhooks", admin, cases[i].body, NULL, &r);
        cr_expect_eq(r.status, cases[i].status, "%s: %ld %s", cases[i].body, r.status, r.body);
        cr_expect_str_eq(th_str_of(&r, "field"), cases[i].field, "%s", cases[i].body);
        th_resp_free(&r);
    }
    /* A viewer may not subscribe. */
    char *viewer = th_tenant_token(&srv, op, tenant, "viewer");
    hook_create(viewer, "/hook", "[\"job.failed\"]", &r);
    cr_assert_eq(r.status, 403);
    th_resp_free(&r);
    free(viewer), free(tenant), free(admin);
}

/* The deliveries made so far of tenant's events of type: they are written before the
 * request that causes them is answered (in its transaction, or for a refusal in one of
 * their own before the reply), so the count is exact once the reply is in. */
static long events_of(PGconn *pg, const char *tenant, const char *type)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = '%s'"
             " AND event_type = '%s'",
             tenant, type);
    return th_pg_long(pg, sql);
}

/* The data of the one event of type the receiver had on path (caller json_decref()s);
 * fails when there is none or more than one. Delivery is at least once (a reply slower
 * than the sender's timeout is retried), so a repeat of the same event id is not another
 * event. */
static json_t *rx_event_data(const char *path, const char *type)
{
    json_t *data = NULL;
    char id[64] = "";
    pthread_mutex_lock(&rx.mu);
    for (int i = 0; i < rx.n && i < RX_MAX; i++) {
        json_error_t jerr;
        json_t *ev = json_loads(rx.reqs[i].body, 0, &jerr);
        cr_assert(ev, "%s", jerr.text);
        const char *ev_id = json_string_value(json_object_get(ev, "id"));
        if (strcmp(rx.reqs[i].path, path) == 0 &&
            strcmp(json_string_value(json_object_get(ev, "type")), type) == 0 &&
            strcmp(ev_id, id) != 0) {
            cr_assert_null(data, "a second %s on %s: %s", type, path, rx.reqs[i].body);
            data = json_incref(json_object_get(ev, "data"));
            snprintf(id, sizeof(id), "%s", ev_id);
        }
        json_decref(ev);
    }
    pthread_mutex_unlock(&rx.mu);
    cr_assert(data, "no %s on %s", type, path);
    return data;
}

static long int_of(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "%s is not an integer", key);
    return (long)json_integer_value(v);
}

static void set_quota(const char *tenant, const char *name, int value)
{
    char path[128], body[96];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    snprintf(body, sizeof(body), "{\"quotas\":{\"%s\":%d}}", name, value);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
}

/* Queues up to 80% of the quota send quota.near once; a refused queue sends quota.exceeded
 * with the refusal's numbers, and a second refusal within the hour nothing; another tenant,
 * subscribed to the same events, gets none of them. */
Test(webhooks, quota_near_and_exceeded_are_sent_once_to_their_tenant)
{
    static const char events[] = "[\"quota.near\", \"quota.exceeded\"]";
    char *ta = th_tenant(&srv, op, "wh-qa", "standard");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *tb = th_tenant(&srv, op, "wh-qb", "standard");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    PGconn *pg = th_pg_connect("postgres", srv.db);
    set_quota(ta, "queues", 5);
    struct th_resp r;
    hook_create(a, "/qa", events, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    hook_create(b, "/qb", events, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);

    th_http(&srv, "GET", "/api/v1/tenant", a, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    long used = int_of(json_object_get(r.json, "usage"), "queues");
    th_resp_free(&r);
    cr_assert_lt(used, 3);
    int n = 0;
    char body[64];
    for (; used < 3; used++) { /* 3 of 5: below 80% */
        snprintf(body, sizeof(body), "{\"name\":\"q%d\"}", n++);
        th_http(&srv, "POST", "/api/v1/queues", a, body, NULL, &r);
        cr_assert_eq(r.status, 201, "%s", r.body);
        th_resp_free(&r);
    }
    cr_assert_eq(events_of(pg, ta, "quota.near"), 0);
    /* The 4th (80%) sends quota.near, the 5th nothing, the 6th and 7th are refused. */
    static const int want[] = {201, 201, 403, 403};
    static const long near_after[] = {1, 1, 1, 1}, exceeded_after[] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        snprintf(body, sizeof(body), "{\"name\":\"q%d\"}", n++);
        th_http(&srv, "POST", "/api/v1/queues", a, body, NULL, &r);
        cr_assert_eq(r.status, want[i], "queue %d: %s", i, r.body);
        th_resp_free(&r);
        cr_assert_eq(events_of(pg, ta, "quota.near"), near_after[i], "after queue %d", i);
        cr_assert_eq(events_of(pg, ta, "quota.exceeded"), exceeded_after[i], "after queue %d", i);
    }

    rx_wait(2);
    json_t *near = rx_event_data("/qa", "quota.near");
    cr_assert_str_eq(json_string_value(json_object_get(near, "resource")), "queues");
    cr_assert_eq(int_of(near, "limit"), 5);
    cr_assert_eq(int_of(near, "used"), 4);
    cr_assert_float_eq(json_number_value(json_object_get(near, "threshold")), 0.8, 1e-9);
    json_decref(near);
    json_t *ex = rx_event_data("/qa", "quota.exceeded");
    cr_assert_str_eq(json_string_value(json_object_get(ex, "resource")), "queues");
    cr_assert_eq(int_of(ex, "limit"), 5);
    cr_assert_eq(int_of(ex, "used"), 5);
    cr_assert_eq(int_of(ex, "requested"), 1);
    json_decref(ex);

    /* B's subscription wants the same types and got none of A's. */
    cr_assert_eq(events_of(pg, tb, "quota.near") + events_of(pg, tb, "quota.exceeded"), 0);
    pthread_mutex_lock(&rx.mu);
    for (int i = 0; i < rx.n && i < RX_MAX; i++)
        cr_assert_str_neq(rx.reqs[i].path, "/qb");
    pthread_mutex_unlock(&rx.mu);
    PQfinish(pg);
    free(a), free(ta), free(b), free(tb);
}

/* The daily API call quota: the call that reaches 80% sends quota.near, the first refused
 * call quota.exceeded, the next refused call nothing. */
Test(webhooks, the_daily_api_call_quota_sends_near_and_exceeded_once)
{
    char *tc = th_tenant(&srv, op, "wh-qc", "standard");
    char *c = th_tenant_token(&srv, op, tc, "admin");
    PGconn *pg = th_pg_connect("postgres", srv.db);
    struct th_resp r;
    hook_create(c, "/qc", "[\"quota.near\", \"quota.exceeded\"]", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    th_resp_free(&r);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(sum(api_calls), 0) FROM usage_counters WHERE tenant_id = '%s'", tc);
    long used = th_pg_long(pg, sql);
    set_quota(tc, "api_calls_per_day", (int)used + 5);
    long limit = used + 5, at = (limit * 8 + 9) / 10; /* ceil(80%) */
    int refused = 0;
    while (refused < 2) {
        th_http(&srv, "GET", "/api/v1/queues", c, NULL, NULL, &r);
        if (r.status == 429) {
            refused++;
            cr_assert_eq(events_of(pg, tc, "quota.exceeded"), 1);
        } else {
            cr_assert_eq(r.status, 200, "%s", r.body);
            used++;
            cr_assert_eq(events_of(pg, tc, "quota.near"), used >= at, "after call %ld", used);
            cr_assert_eq(events_of(pg, tc, "quota.exceeded"), 0);
        }
        th_resp_free(&r);
        cr_assert_leq(used, limit);
    }
    cr_assert_eq(used, limit);
    cr_assert_eq(events_of(pg, tc, "quota.near"), 1);
    rx_wait_distinct(2); /* delivery is at least once: a repeat is not the other */
    json_t *near = rx_event_data("/qc", "quota.near");
    cr_assert_str_eq(json_string_value(json_object_get(near, "resource")), "api_calls_per_day");
    cr_assert_eq(int_of(near, "limit"), limit);
    cr_assert_eq(int_of(near, "used"), at);
    json_decref(near);
    json_t *ex = rx_event_data("/qc", "quota.exceeded");
    cr_assert_str_eq(json_string_value(json_object_get(ex, "resource")), "api_calls_per_day");
    cr_assert_eq(int_of(ex, "limit"), limit);
    cr_assert_eq(int_of(ex, "used"), limit);
    json_decref(ex);
    PQfinish(pg);
    free(c), free(tc);
}

/* The default configuration: loopback, private and link-local URLs are refused. */
static struct th_server dsrv;

static void dsetup(void)
{
    const char *env[] = {"ORCHD_WEBHOOKS_RETENTION=2s", NULL};
    th_server_start(&dsrv, env);
}

static void dteardown(void)
{
    th_server_stop(&dsrv);
}

TestSuite(webhooks_default, .init = dsetup, .fini = dteardown, .timeout = 240);

Test(webhooks_default, loopback_and_private_urls_are_refused)
{
    char *dop = th_token(&dsrv, dsrv.operator_token);
    char *tenant = th_tenant(&dsrv, dop, "wh-e", "standard");
    char *admin = th_tenant_token(&dsrv, dop, tenant, "admin");
    static const char *const urls[] = {
        "https://127.0.0.1:8443/hook", "https://localhost/hook",   "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/", "https://169.254.169.254/", "https://10.1.2.3/",
        "https://192.168.0.1/",        "https://100.64.0.1/",      "https://[fd00::1]/",
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"url\": \"%s\", \"events\": [\"job.failed\"]}", urls[i]);
        struct th_resp r;
        th_http(&dsrv, "POST", "/api/v1/webhooks", admin, body, NULL, &r);
        cr_expect_eq(r.status, 400, "%s: %ld %s", urls[i], r.status, r.body);
        cr_expect_str_eq(th_str_of(&r, "field"), "url");
        cr_expect(strstr(th_str_of(&r, "detail"), "may not reach"), "%s", r.body);
        th_resp_free(&r);
    }
    struct th_resp r;
    th_http(&dsrv, "GET", "/api/v1/webhooks", admin, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    free(dop), free(tenant), free(admin);
}

/* webhooks.retention (2 s here): ended deliveries leave the log, pending ones stay. */
Test(webhooks_default, ended_deliveries_are_pruned_after_the_retention)
{
    char *dop = th_token(&dsrv, dsrv.operator_token);
    char *tenant = th_tenant(&dsrv, dop, "wh-g", "standard");
    PGconn *pg = th_pg_connect("postgres", dsrv.db);
    char sql[1024];
    /* A subscription that is disabled (so nothing tries to deliver), with one ended and
     * one pending delivery. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO webhooks (id, tenant_id, url, events, enabled, secret_sealed,"
             " secret_prefix) VALUES (gen_random_uuid(), '%s', 'https://example.com/',"
             " '{job.failed}', false, '\\x00', 'p');"
             "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type,"
             " payload, status) SELECT gen_random_uuid(), '%s', id, gen_random_uuid(),"
             " 'job.failed', '{}', s FROM webhooks, unnest('{succeeded,pending}'::text[]) s"
             " WHERE tenant_id = '%s'",
             tenant, tenant, tenant);
    PQclear(th_pg_ok(pg, sql));
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = '%s'"
             " AND status = 'succeeded'",
             tenant);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (th_pg_long(pg, sql) != 0) {
        cr_assert(clock_mono_ns() < deadline, "the ended delivery was not pruned");
        usleep(100000);
    }
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = '%s'"
             " AND status = 'pending'",
             tenant);
    cr_assert_eq(th_pg_long(pg, sql), 1, "a pending delivery was pruned");
    PQfinish(pg);
    free(dop), free(tenant);
}

/* webhook_claim() and webhook_finish() on their own database, with no orchd: several
 * workers claiming at once, as orchd's webhooks.workers do, never claim a delivery that is
 * already in flight. A second claim of it would post it twice at once, and the first
 * worker's finish would then be lost (no row still 'delivering'): this counts those. */
static char claim_db[64];
static void claim_setup(void)
{
    th_db_create_migrated(claim_db, sizeof(claim_db));
}
static void claim_teardown(void)
{
    th_db_drop(claim_db);
}
TestSuite(webhook_claim, .init = claim_setup, .fini = claim_teardown, .timeout = 120);

#define CLAIM_WORKERS 8
#define CLAIM_ROUNDS  400

struct claimer {
    pthread_t th;
    int claims, lost;
    char error[256];
};

static void *claimer_main(void *arg)
{
    struct claimer *c = arg;
    PGconn *pg = th_pg_connect("orch_system", claim_db);
    for (int i = 0; i < CLAIM_ROUNDS && !c->error[0]; i++) {
        PGresult *res = PQexec(pg, "SELECT id FROM webhook_claim(60000)");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(c->error, sizeof(c->error), "claim: %s", PQerrorMessage(pg));
        } else if (PQntuples(res) == 1) {
            c->claims++;
            const char *p[] = {PQgetvalue(res, 0, 0)};
            /* Failed, retried at once (base 0), never given up (max attempts huge). */
            PGresult *f =
                PQexecParams(pg, "SELECT webhook_finish($1, false, 500, 'x', 1000000, 0, 0)", 1,
                             NULL, p, NULL, NULL, 0);
            if (PQresultStatus(f) != PGRES_TUPLES_OK)
                snprintf(c->error, sizeof(c->error), "finish: %s", PQerrorMessage(pg));
            else if (PQgetisnull(f, 0, 0))
                c->lost++;
            PQclear(f);
        }
        PQclear(res);
    }
    PQfinish(pg);
    return NULL;
}

Test(webhook_claim, concurrent_workers_never_claim_a_delivery_in_flight)
{
    PGconn *pg = th_pg_connect("postgres", claim_db);
    /* Four subscriptions of one tenant, each with one delivery always due again. */
    PQclear(th_pg_ok(pg, "INSERT INTO tenants (id, slug, display_name, tier)"
                         " VALUES (gen_random_uuid(), 'claim', 'claim', 'free');"
                         "INSERT INTO webhooks (id, tenant_id, url, events, secret_sealed,"
                         " secret_prefix) SELECT gen_random_uuid(), t.id, 'https://example.com/',"
                         " '{job.failed}', '\\x00', 'p' FROM tenants t, generate_series(1, 4)"
                         " WHERE t.slug = 'claim';"
                         "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id,"
                         " event_type, payload) SELECT gen_random_uuid(), tenant_id, id,"
                         " gen_random_uuid(), 'job.failed', '{}' FROM webhooks"));
    struct claimer c[CLAIM_WORKERS] = {0};
    for (int i = 0; i < CLAIM_WORKERS; i++)
        cr_assert_eq(pthread_create(&c[i].th, NULL, claimer_main, &c[i]), 0);
    int claims = 0, lost = 0;
    for (int i = 0; i < CLAIM_WORKERS; i++) {
        pthread_join(c[i].th, NULL);
        cr_expect_eq(c[i].error[0], '\0', "worker %d: %s", i, c[i].error);
        claims += c[i].claims;
        lost += c[i].lost;
    }
    /* Every claim is one attempt, and no attempt's outcome was lost. */
    cr_assert_eq(th_pg_long(pg, "SELECT sum(attempts) FROM webhook_deliveries"), claims);
    cr_assert_eq(lost, 0, "%d of %d claims took a delivery already in flight", lost, claims);
    cr_assert_gt(claims, CLAIM_WORKERS, "the workers made only %d claims", claims);
    PQfinish(pg);
}
