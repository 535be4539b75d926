/* Integration tests of the REST API: the real orchd over HTTPS on the real PostgreSQL
 * and RabbitMQ. Each test runs its own orchd with its own database. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/crypto.h"
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

TestSuite(api, .init = setup, .fini = teardown, .timeout = 120);

/* Shorthand: one request, its status, freed. */
static long status_of(const char *method, const char *path, const char *token, const char *body)
{
    struct th_resp r;
    th_http(&srv, method, path, token, body, NULL, &r);
    long st = r.status;
    if (st >= 400)
        cr_assert_str_eq(r.content_type, "application/problem+json", "%s %s: %s", method, path,
                         r.body);
    th_resp_free(&r);
    return st;
}

static char *create_queue(const char *token, const char *name, long want)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"requirements\":{\"os\":\"linux\"}}", name);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", token, body, NULL, &r);
    cr_assert_eq(r.status, want, "create queue %s: %ld %s", name, r.status, r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

Test(api, health_and_readiness)
{
    struct th_resp r;
    th_http(&srv, "GET", "/healthz", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
    th_http(&srv, "GET", "/readyz", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "postgresql"), "ok");
    cr_assert_str_eq(th_str_of(&r, "rabbitmq"), "ok");
    char *rid = th_resp_header(&r, "X-Request-Id");
    cr_assert_not_null(rid);
    cr_assert_eq(strlen(rid), 36);
    free(rid);
    th_resp_free(&r);
}

Test(api, token_issue_and_refresh)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *tok = th_tenant_token(&srv, op, tenant, "viewer");

    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/auth/refresh", tok, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "token_type"), "Bearer");
    cr_assert_str_eq(th_str_of(&r, "role"), "viewer");
    cr_assert_str_eq(th_str_of(&r, "tenant_id"), tenant);
    cr_assert_gt(json_integer_value(json_object_get(r.json, "expires_in")), 0);
    char *fresh = strdup(th_str_of(&r, "access_token"));
    th_resp_free(&r);
    cr_assert_str_neq(fresh, tok);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", fresh, NULL), 200);

    /* The operator's token refreshes too, as a platform token. */
    th_http(&srv, "POST", "/api/v1/auth/refresh", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_str_of(&r, "role"), "platform");
    cr_assert_null(json_string_value(json_object_get(r.json, "tenant_id")));
    th_resp_free(&r);

    /* Wrong keys: one answer for all. */
    static const char *const bad[] = {
        "{\"key\":\"orch_ak_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
        "{\"key\":\"orch_op_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
        "{\"key\":\"nonsense\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        th_http(&srv, "POST", "/api/v1/auth/token", NULL, bad[i], NULL, &r);
        cr_assert_eq(r.status, 401, "%s", bad[i]);
        cr_assert_str_eq(th_str_of(&r, "detail"), "the key is not valid");
        th_resp_free(&r);
    }
    free(fresh);
    free(tok);
    free(tenant);
}

Test(api, revoked_key_stops_working_at_once)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/api-keys", admin, "{\"name\":\"ci\",\"role\":\"operator\"}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert(strncmp(th_str_of(&r, "key"), "orch_ak_", 8) == 0);
    char *key_id = strdup(th_str_of(&r, "id"));
    char *ci = th_token(&srv, th_str_of(&r, "key"));
    th_resp_free(&r);
    cr_assert_eq(status_of("GET", "/api/v1/queues", ci, NULL), 200);

    /* Listing never shows the secret again. */
    th_http(&srv, "GET", "/api/v1/api-keys", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, "\"key\""), "%s", r.body);
    th_resp_free(&r);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/api-keys/%s", key_id);
    cr_assert_eq(status_of("DELETE", path, admin, NULL), 204);
    cr_assert_eq(status_of("GET", "/api/v1/queues", ci, NULL), 401,
                 "a revoked key's token must stop working on the next request");
    free(ci);
    free(key_id);
    free(admin);
    free(tenant);
}

Test(api, roles_are_enforced)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *viewer = th_tenant_token(&srv, op, tenant, "viewer");
    char *oper = th_tenant_token(&srv, op, tenant, "operator");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");

    /* viewer: reads only */
    cr_assert_eq(status_of("GET", "/api/v1/queues", viewer, NULL), 200);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", viewer, NULL), 200);
    cr_assert_eq(status_of("POST", "/api/v1/queues", viewer, "{\"name\":\"q\"}"), 403);
    cr_assert_eq(status_of("GET", "/api/v1/api-keys", viewer, NULL), 403);
    cr_assert_eq(status_of("GET", "/api/v1/audit", viewer, NULL), 403);
    /* operator: queues, not keys or audit */
    char *q = create_queue(oper, "q1", 201);
    cr_assert_eq(status_of("GET", "/api/v1/api-keys", oper, NULL), 403);
    cr_assert_eq(status_of("POST", "/api/v1/api-keys", oper, "{\"name\":\"x\",\"role\":\"admin\"}"),
                 403);
    cr_assert_eq(status_of("GET", "/api/v1/audit", oper, NULL), 403);
    /* admin: everything of the tenant, nothing of the platform */
    cr_assert_eq(status_of("GET", "/api/v1/api-keys", admin, NULL), 200);
    cr_assert_eq(status_of("GET", "/api/v1/audit", admin, NULL), 200);
    cr_assert_eq(status_of("GET", "/api/v1/tenants", admin, NULL), 403);
    cr_assert_eq(status_of("POST", "/api/v1/tenants", admin,
                           "{\"slug\":\"x\",\"display_name\":\"x\",\"tier\":\"free\"}"),
                 403);
    /* platform: the platform, not a tenant's own routes */
    cr_assert_eq(status_of("GET", "/api/v1/tenants", op, NULL), 200);
    cr_assert_eq(status_of("GET", "/api/v1/queues", op, NULL), 403);
    /* nobody */
    cr_assert_eq(status_of("GET", "/api/v1/queues", NULL, NULL), 401);
    free(q);
    free(viewer);
    free(oper);
    free(admin);
    free(tenant);
}

Test(api, tenants_cannot_reach_each_other)
{
    char *ta = th_tenant(&srv, op, "tenant-a", "standard");
    char *tb = th_tenant(&srv, op, "tenant-b", "standard");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    char *qb = create_queue(b, "b-queue", 201);
    char *qa = create_queue(a, "a-queue", 201);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/queues/%s", qb);
    struct th_resp r;
    th_http(&srv, "GET", path, a, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    cr_assert_null(strstr(r.body, "b-queue"), "nothing of B may leak: %s", r.body);
    th_resp_free(&r);
    cr_assert_eq(status_of("PATCH", path, a, "{\"paused\":true}"), 404);
    cr_assert_eq(status_of("DELETE", path, a, NULL), 404);
    /* B's queue is intact. */
    th_http(&srv, "GET", path, b, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert(json_is_false(json_object_get(r.json, "paused")));
    th_resp_free(&r);

    /* Lists and the audit log hold only A's own. */
    th_http(&srv, "GET", "/api/v1/queues", a, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
    cr_assert_null(strstr(r.body, qb));
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/audit", a, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, qb), "B's audit record visible to A");
    cr_assert_not_null(strstr(r.body, qa));
    th_resp_free(&r);
    /* A tenant admin cannot read another tenant's record by filter. */
    snprintf(path, sizeof(path), "/api/v1/audit?tenant_id=%s", tb);
    cr_assert_eq(status_of("GET", path, a, NULL), 422);
    /* The operator sees both. */
    th_http(&srv, "GET", "/api/v1/audit?limit=500", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, qa));
    cr_assert_not_null(strstr(r.body, qb));
    th_resp_free(&r);

    free(qa);
    free(qb);
    free(a);
    free(b);
    free(ta);
    free(tb);
}

Test(api, queue_lifecycle_and_pagination)
{
    char *tenant = th_tenant(&srv, op, "acme", "professional");
    char *t = th_tenant_token(&srv, op, tenant, "operator");
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "q%d", i);
        free(create_queue(t, name, 201));
    }
    free(create_queue(t, "q0", 409)); /* duplicate name */

    /* Walk the pages: 2 + 2 + 1, then no cursor. */
    char path[256] = "/api/v1/queues?limit=2";
    int seen = 0, pages = 0;
    for (;;) {
        struct th_resp r;
        th_http(&srv, "GET", path, t, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "%s", r.body);
        seen += (int)json_array_size(json_object_get(r.json, "items"));
        pages++;
        const char *next = json_string_value(json_object_get(r.json, "next_cursor"));
        if (!next) {
            th_resp_free(&r);
            break;
        }
        snprintf(path, sizeof(path), "/api/v1/queues?limit=2&cursor=%s", next);
        th_resp_free(&r);
        cr_assert_lt(pages, 10);
    }
    cr_assert_eq(seen, 5);
    cr_assert_eq(pages, 3);

    char *id = create_queue(t, "patched", 201);
    snprintf(path, sizeof(path), "/api/v1/queues/%s", id);
    struct th_resp r;
    th_http(&srv, "PATCH", path, t, "{\"default_priority\":7,\"paused\":true}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "default_priority")), 7);
    cr_assert(json_is_true(json_object_get(r.json, "paused")));
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "requirements"), "os")), "linux",
        "untouched fields keep their values");
    th_resp_free(&r);
    cr_assert_eq(status_of("DELETE", path, t, NULL), 204);
    cr_assert_eq(status_of("GET", path, t, NULL), 404);
    cr_assert_eq(status_of("GET", "/api/v1/queues/not-a-uuid", t, NULL), 404);
    cr_assert_eq(status_of("GET", "/api/v1/queues?limit=0", t, NULL), 422);
    cr_assert_eq(status_of("GET", "/api/v1/queues?cursor=bogus", t, NULL), 422);
    free(id);
    free(t);
    free(tenant);
}

Test(api, queue_quota_refuses_with_problem)
{
    char *tenant = th_tenant(&srv, op, "small", "free"); /* free tier: 2 queues */
    char *t = th_tenant_token(&srv, op, tenant, "admin");
    free(create_queue(t, "one", 201));
    free(create_queue(t, "two", 201));
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\":\"three\"}", NULL, &r);
    cr_assert_eq(r.status, 403, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:quota-exceeded");
    cr_assert_str_eq(th_str_of(&r, "quota"), "queues");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "limit")), 2);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "used")), 2);
    th_resp_free(&r);

    /* An operator raises the tenant's override; the third queue now fits. */
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    th_http(&srv, "PATCH", path, op, "{\"quotas\":{\"queues\":3}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(r.json, "quotas"), "queues")),
                 3);
    th_resp_free(&r);
    free(create_queue(t, "three", 201));

    /* The tenant sees its quotas and live usage. */
    th_http(&srv, "GET", "/api/v1/tenant", t, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    json_t *usage = json_object_get(r.json, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "queues")), 3);
    cr_assert_gt(json_integer_value(json_object_get(usage, "api_calls_today")), 0);
    static const char *const six[] = {"agents", "concurrent_jobs", "schedules",
                                      "queues", "storage_bytes",   "api_calls_per_day"};
    for (size_t i = 0; i < 6; i++)
        cr_assert(json_is_integer(json_object_get(json_object_get(r.json, "quotas"), six[i])),
                  "quota %s", six[i]);
    th_resp_free(&r);
    free(t);
    free(tenant);
}

Test(api, daily_api_call_quota_answers_429)
{
    char *tenant = th_tenant(&srv, op, "metered", "standard");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_of("PATCH", path, op, "{\"quotas\":{\"api_calls_per_day\":3}}"), 200);
    char *t = th_tenant_token(&srv, op, tenant, "viewer");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(status_of("GET", "/api/v1/tenant", t, NULL), 200, "call %d", i + 1);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/tenant", t, NULL, NULL, &r);
    cr_assert_eq(r.status, 429, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "quota"), "api_calls_per_day");
    cr_assert_eq(json_integer_value(json_object_get(r.json, "limit")), 3);
    char *retry = th_resp_header(&r, "Retry-After");
    char *remaining = th_resp_header(&r, "RateLimit-Remaining");
    char *xlimit = th_resp_header(&r, "X-RateLimit-Limit");
    cr_assert_not_null(retry);
    cr_assert(strtol(retry, NULL, 10) > 0 && strtol(retry, NULL, 10) <= 86400);
    cr_assert_str_eq(remaining, "0");
    cr_assert_str_eq(xlimit, "3");
    free(retry);
    free(remaining);
    free(xlimit);
    th_resp_free(&r);
    free(t);
    free(tenant);
}

Test(api, request_rate_limit_answers_429)
{
    /* free tier: bucket of 20, 5/s. 200 requests cannot all fit unless each one took
     * longer than 200 ms. */
    char *tenant = th_tenant(&srv, op, "burst", "free");
    char *t = th_tenant_token(&srv, op, tenant, "viewer");
    bool limited = false;
    for (int i = 0; i < 200 && !limited; i++) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/queues", t, NULL, NULL, &r);
        if (r.status == 429) {
            limited = true;
            cr_assert_str_eq(th_str_of(&r, "quota"), "request_rate");
            char *retry = th_resp_header(&r, "Retry-After");
            cr_assert_not_null(retry);
            free(retry);
        } else {
            cr_assert_eq(r.status, 200);
        }
        th_resp_free(&r);
    }
    cr_assert(limited, "no 429 in 200 requests");
    free(t);
    free(tenant);
}

Test(api, every_error_is_a_problem)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;

    th_http(&srv, "GET", "/no/such/route", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(r.content_type, "application/problem+json");
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:not-found");
    th_resp_free(&r);

    th_http(&srv, "PUT", "/api/v1/queues", t, "{}", NULL, &r);
    cr_assert_eq(r.status, 405);
    char *allow = th_resp_header(&r, "Allow");
    cr_assert_str_eq(allow, "GET, POST");
    free(allow);
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\": ", NULL, &r);
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:bad-request");
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/queues", t, "name=x", "application/x-www-form-urlencoded", &r);
    cr_assert_eq(r.status, 415);
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\":\"x\",\"default_priority\":1000}", NULL,
            &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "default_priority");
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\":\"x\",\"colour\":\"red\"}", NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "colour");
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/queues", t, "{\"name\":\"x\",\"requirements\":{\"o s\":\"x\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "requirements.o s");
    th_resp_free(&r);

    /* Nesting deeper than the limit. */
    struct buf deep = BUF_INIT;
    buf_append_str(&deep, "{\"name\":\"x\",\"requirements\":");
    for (int i = 0; i < 100; i++)
        buf_append_str(&deep, "[");
    for (int i = 0; i < 100; i++)
        buf_append_str(&deep, "]");
    buf_append_str(&deep, "}");
    th_http(&srv, "POST", "/api/v1/queues", t, deep.data, NULL, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    th_resp_free(&r);
    buf_free(&deep);

    /* A body over the route's 64 KiB limit. */
    struct buf big = BUF_INIT;
    buf_append_str(&big, "{\"name\":\"");
    for (int i = 0; i < 100 * 1024; i++)
        buf_append(&big, "a", 1);
    buf_append_str(&big, "\"}");
    th_http(&srv, "POST", "/api/v1/queues", t, big.data, NULL, &r);
    cr_assert_eq(r.status, 413);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:too-large");
    th_resp_free(&r);
    buf_free(&big);

    th_http(&srv, "POST", "/api/v1/tenants", op,
            "{\"slug\":\"acme\",\"display_name\":\"again\",\"tier\":\"free\"}", NULL, &r);
    cr_assert_eq(r.status, 409);
    cr_assert_str_eq(th_str_of(&r, "field"), "slug");
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/tenants", op,
            "{\"slug\":\"x\",\"display_name\":\"x\",\"tier\":\"gold\"}", NULL, &r);
    cr_assert_eq(r.status, 422);
    cr_assert_str_eq(th_str_of(&r, "field"), "tier");
    th_resp_free(&r);

    free(t);
    free(tenant);
}

Test(api, state_changes_are_audited)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "admin");
    char *q = create_queue(t, "audited", 201);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/audit", t, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    json_t *first = json_array_get(json_object_get(r.json, "items"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(first, "action")), "queue.create",
                     "newest first: %s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(first, "object_id")), q);
    cr_assert_str_eq(json_string_value(json_object_get(first, "actor_type")), "api_key");
    th_resp_free(&r);
    /* The tenant's creation is recorded for operators. */
    th_http(&srv, "GET", "/api/v1/audit", op, NULL, NULL, &r);
    cr_assert_not_null(strstr(r.body, "tenant.create"));
    th_resp_free(&r);
    free(q);
    free(t);
    free(tenant);
}

Test(api, suspended_tenant_is_refused)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *t = th_tenant_token(&srv, op, tenant, "viewer");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_of("PATCH", path, op, "{\"status\":\"suspended\"}"), 200);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", t, NULL), 403);
    cr_assert_eq(status_of("PATCH", path, op, "{\"status\":\"active\"}"), 200);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", t, NULL), 200);
    cr_assert_eq(status_of("DELETE", path, op, NULL), 204);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", t, NULL), 401);
    free(t);
    free(tenant);
}

/* --- forged tokens ----------------------------------------------------------------------- */

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(base64url_encoded_len(n) + 1);
    base64url_encode(s, n, out, base64url_encoded_len(n) + 1);
    return out;
}

/* The ring's one key file, and its kid. */
static EVP_PKEY *ring_key(char *kid, size_t len)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/keys", srv.dir);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    EVP_PKEY *k = NULL;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".pem") == 0) {
            snprintf(kid, len, "%.*s", (int)(n - 4), e->d_name);
            char path[512];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            FILE *f = fopen(path, "r");
            k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
            fclose(f);
        }
    }
    closedir(d);
    cr_assert_not_null(k);
    return k;
}

/* header.payload signed ES256 (raw r||s) with key. */
static char *sign_es256(EVP_PKEY *key, const char *header, const char *payload)
{
    char *h = b64(header), *p = b64(payload);
    struct buf in = BUF_INIT;
    buf_printf(&in, "%s.%s", h, p);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[128];
    size_t derlen = sizeof(der);
    cr_assert_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
    cr_assert_eq(EVP_DigestSign(ctx, der, &derlen, (unsigned char *)in.data, in.len), 1);
    EVP_MD_CTX_free(ctx);
    const unsigned char *dp = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &dp, (long)derlen);
    unsigned char raw[64];
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32);
    ECDSA_SIG_free(sig);
    char s[128];
    base64url_encode(raw, 64, s, sizeof(s));
    buf_printf(&in, ".%s", s);
    free(h);
    free(p);
    return buf_steal(&in);
}

static char *claims(const char *tenant, int64_t iat, int64_t exp, const char *aud, const char *iss,
                    const char *extra)
{
    char *out = NULL;
    cr_assert(asprintf(&out,
                       "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"01a201d6-c9aa-7162-aaef-"
                       "5820fc6c4104\",\"tenant\":\"%s\",\"role\":\"admin\",\"iat\":%lld,"
                       "\"nbf\":%lld,\"exp\":%lld,\"jti\":\"01a201d6-c9aa-7162-aaef-"
                       "5820fc6c4105\"%s}",
                       iss, aud, tenant, (long long)iat, (long long)iat, (long long)exp,
                       extra) > 0);
    return out;
}

static void expect_401(const char *token, const char *what)
{
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/queues", token, NULL, NULL, &r);
    cr_assert_eq(r.status, 401, "%s: %ld %s", what, r.status, r.body);
    cr_assert_str_eq(r.content_type, "application/problem+json");
    th_resp_free(&r);
}

Test(api, forged_and_broken_tokens_are_refused)
{
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char kid[128];
    EVP_PKEY *key = ring_key(kid, sizeof(kid));
    int64_t now = clock_real_ms() / 1000;
    char header[256];
    snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);

    /* Control: a token we sign ourselves with the real key and good claims works, so the
     * refusals below are about what each one changes. */
    char *good_claims = claims(tenant, now, now + 300, "orch-api", "orch", "");
    char *good = sign_es256(key, header, good_claims);
    cr_assert_eq(status_of("GET", "/api/v1/tenant", good, NULL), 401,
                 "a forged token names an API key that does not exist: refused at admission");

    /* alg none */
    char none_h[256];
    snprintf(none_h, sizeof(none_h), "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    char *h = b64(none_h), *p = b64(good_claims);
    char *none = NULL;
    cr_assert(asprintf(&none, "%s.%s.", h, p) > 0);
    expect_401(none, "alg none");

    /* HS256 with the public key as the HMAC secret */
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, key);
    char *pem = NULL;
    long pemlen = BIO_get_mem_data(bio, &pem);
    char hs_h[256];
    snprintf(hs_h, sizeof(hs_h), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
    char *hh = b64(hs_h);
    struct buf in = BUF_INIT;
    buf_printf(&in, "%s.%s", hh, p);
    uint8_t mac[32];
    crypto_hmac_sha256(pem, (size_t)pemlen, in.data, in.len, mac);
    char macs[64];
    base64url_encode(mac, 32, macs, sizeof(macs));
    buf_printf(&in, ".%s", macs);
    expect_401(in.data, "HS256 with the public key");
    buf_free(&in);
    BIO_free(bio);

    struct {
        const char *what;
        char *payload;
        const char *header;
    } cases[] = {
        {"expired", claims(tenant, now - 7200, now - 3600, "orch-api", "orch", ""), NULL},
        {"not yet valid", NULL, NULL},
        {"wrong audience", claims(tenant, now, now + 300, "other-api", "orch", ""), NULL},
        {"wrong issuer", claims(tenant, now, now + 300, "orch-api", "evil", ""), NULL},
        {"claim of the wrong type", NULL, NULL},
        {"unknown kid", strdup(good_claims),
         "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k20990101T000000Z-deadbeef\"}"},
    };
    cr_assert(asprintf(&cases[1].payload,
                       "{\"iss\":\"orch\",\"aud\":\"orch-api\",\"sub\":\"x\",\"tenant\":\"%s\","
                       "\"role\":\"admin\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"jti\":"
                       "\"01a201d6-c9aa-7162-aaef-5820fc6c4105\"}",
                       tenant, (long long)now, (long long)(now + 3600),
                       (long long)(now + 7200)) > 0);
    cr_assert(asprintf(&cases[4].payload,
                       "{\"iss\":\"orch\",\"aud\":\"orch-api\",\"sub\":\"x\",\"tenant\":\"%s\","
                       "\"role\":\"admin\",\"iat\":%lld,\"nbf\":%lld,\"exp\":\"%lld\",\"jti\":"
                       "\"01a201d6-c9aa-7162-aaef-5820fc6c4105\"}",
                       tenant, (long long)now, (long long)now, (long long)(now + 300)) > 0);
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char *tok = sign_es256(key, cases[i].header ? cases[i].header : header, cases[i].payload);
        expect_401(tok, cases[i].what);
        free(tok);
        free(cases[i].payload);
    }

    /* A forged tenant claim: a real token with the tenant swapped keeps the old signature. */
    char *other = th_tenant(&srv, op, "other", "standard");
    char *real = th_tenant_token(&srv, op, tenant, "admin");
    char *dot1 = strchr(real, '.'), *dot2 = strchr(dot1 + 1, '.');
    size_t plen = (size_t)(dot2 - dot1 - 1);
    uint8_t payload[1024];
    int n = base64url_decode(dot1 + 1, plen, payload, sizeof(payload) - 1);
    cr_assert_gt(n, 0);
    payload[n] = '\0';
    char *swap = strstr((char *)payload, tenant);
    cr_assert_not_null(swap);
    memcpy(swap, other, 36);
    char *np = b64((char *)payload);
    struct buf forged = BUF_INIT;
    buf_append(&forged, real, (size_t)(dot1 - real));
    buf_printf(&forged, ".%s%s", np, dot2);
    expect_401(forged.data, "tenant claim swapped");
    buf_free(&forged);

    /* Garbage and size. */
    expect_401("not.a.jwt", "garbage");
    expect_401("", "empty");
    struct buf big = BUF_INIT;
    for (int i = 0; i < 10000; i++)
        buf_append(&big, "A", 1);
    expect_401(big.data, "10 KB token");
    /* 1 MB: over the header limit, so libevent refuses the request before it reaches us;
     * the server must survive it. */
    for (int i = 0; i < 1024 * 1024 / 10000; i++)
        for (int j = 0; j < 10000; j++)
            buf_append(&big, "A", 1);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/queues", big.data, NULL, NULL, &r);
    cr_assert(r.status == 400 || r.status == 413 || r.status == 431 || r.status == 401,
              "1 MB token: %ld", r.status);
    th_resp_free(&r);
    buf_free(&big);
    cr_assert_eq(status_of("GET", "/healthz", NULL, NULL), 200, "the server survived");

    free(np);
    free(real);
    free(other);
    free(hh);
    free(h);
    free(p);
    free(none);
    free(good);
    free(good_claims);
    EVP_PKEY_free(key);
    free(tenant);
}

Test(api, sigterm_stops_cleanly)
{
    /* teardown sends SIGTERM and asserts exit status 0 within 20 s; make it do so with a
     * keep-alive connection that has served requests. */
    cr_assert_eq(status_of("GET", "/healthz", NULL, NULL), 200);
    cr_assert_eq(status_of("GET", "/api/v1/tenants", op, NULL), 200);
}

Test(api, daily_quota_holds_across_two_nodes)
{
    /* Two orchd nodes on one database: the count is PostgreSQL's, so requests spread over
     * both nodes still stop at the quota. */
    struct th_server peer;
    th_server_start_peer(&peer, &srv);
    char *tenant = th_tenant(&srv, op, "shared", "standard");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_of("PATCH", path, op, "{\"quotas\":{\"api_calls_per_day\":4}}"), 200);
    char *t = th_tenant_token(&srv, op, tenant, "viewer");
    struct th_resp r;
    for (int i = 0; i < 4; i++) {
        th_http(i % 2 ? &peer : &srv, "GET", "/api/v1/tenant", t, NULL, NULL, &r);
        cr_assert_eq(r.status, 200, "call %d on node %d: %s", i + 1, i % 2, r.body);
        th_resp_free(&r);
    }
    for (int node = 0; node < 2; node++) {
        th_http(node ? &peer : &srv, "GET", "/api/v1/tenant", t, NULL, NULL, &r);
        cr_assert_eq(r.status, 429, "node %d let call 5 through", node);
        th_resp_free(&r);
    }
    th_server_stop_peer(&peer);
    free(t);
    free(tenant);
}

/* The audit log's filters: what each narrows the page to, with paging under a filter, 422
 * naming the bad parameter, and another tenant's records out of reach of any filter. */
static json_t *audit_items(const char *token, const char *query, long want)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/audit?%s", query);
    struct th_resp r;
    th_http(&srv, "GET", path, token, NULL, NULL, &r);
    cr_assert_eq(r.status, want, "%s: %ld %s", path, r.status, r.body);
    json_t *items = json_incref(want == 200 ? json_object_get(r.json, "items") : r.json);
    th_resp_free(&r);
    return items;
}

Test(api, audit_filters)
{
    char *ta = th_tenant(&srv, op, "filtered", "standard");
    char *tb = th_tenant(&srv, op, "other", "standard");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "admin");
    char *q1 = create_queue(a, "one", 201);
    char *q2 = create_queue(a, "two", 201);
    char *qb = create_queue(b, "theirs", 201);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/queues/%s", q2);
    cr_assert_eq(status_of("PATCH", path, a, "{\"paused\":true}"), 200);

    json_t *it = audit_items(a, "action=queue.create", 200);
    cr_assert_eq(json_array_size(it), 2, "A's two creations only");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(it, 0), "object_id")), q2);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(it, 1), "object_id")), q1);
    json_decref(it);

    it = audit_items(a, "object_type=queue", 200);
    cr_assert_eq(json_array_size(it), 3, "two creations and an update");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(it, 0), "action")),
                     "queue.update");
    json_decref(it);

    char query[256];
    snprintf(query, sizeof(query), "object_id=%s", q1);
    it = audit_items(a, query, 200);
    cr_assert_eq(json_array_size(it), 1);
    json_decref(it);

    /* The operator's own actions on the tenant (its key's creation), and the admin's. */
    it = audit_items(a, "actor_type=operator", 200);
    cr_assert_geq(json_array_size(it), 1);
    for (size_t i = 0; i < json_array_size(it); i++)
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(it, i), "actor_type")),
                         "operator");
    json_decref(it);
    it = audit_items(a, "actor_type=api_key", 200);
    const char *key = json_string_value(json_object_get(json_array_get(it, 0), "actor_id"));
    cr_assert_not_null(key);
    snprintf(query, sizeof(query), "actor_id=%s&action=queue.create", key);
    json_decref(it);
    it = audit_items(a, query, 200);
    cr_assert_eq(json_array_size(it), 2);
    json_decref(it);

    /* Time: nothing before 2000 or after 2100; everything since 2000. */
    it = audit_items(a, "created_before=2000-01-01T00:00:00Z", 200);
    cr_assert_eq(json_array_size(it), 0);
    json_decref(it);
    it = audit_items(a, "created_after=2100-01-01T00:00:00Z", 200);
    cr_assert_eq(json_array_size(it), 0);
    json_decref(it);
    it = audit_items(a, "created_after=2000-01-01T00:00:00Z&action=queue.create", 200);
    cr_assert_eq(json_array_size(it), 2);
    json_decref(it);

    /* Paging under a filter: one record a page, the cursor keeps the filter's place. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/audit?action=queue.create&limit=1", a, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *next = strdup(th_str_of(&r, "next_cursor"));
    th_resp_free(&r);
    snprintf(query, sizeof(query), "action=queue.create&limit=1&cursor=%s", next);
    it = audit_items(a, query, 200);
    cr_assert_eq(json_array_size(it), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(it, 0), "object_id")), q1);
    json_decref(it);
    free(next);

    /* B's records are out of reach whatever the filter names. */
    snprintf(query, sizeof(query), "object_id=%s", qb);
    it = audit_items(a, query, 200);
    cr_assert_eq(json_array_size(it), 0, "B's record visible to A");
    json_decref(it);
    it = audit_items(b, "action=queue.create", 200);
    cr_assert_eq(json_array_size(it), 1);
    json_decref(it);

    /* Bad values: 422 naming the parameter. */
    static const char *const bad[][2] = {
        {"action=Queue.Create", "action"},
        {"action=queue%20create", "action"},
        {"object_type=queue.x", "object_type"},
        {"actor_type=robot", "actor_type"},
        {"created_after=yesterday", "created_after"},
        {"created_before=2026-13-01T00:00:00Z", "created_before"},
        {"tenant_id=00000000-0000-0000-0000-000000000000", "tenant_id"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        it = audit_items(a, bad[i][0], 422);
        cr_assert_str_eq(json_string_value(json_object_get(it, "field")), bad[i][1], "%s",
                         bad[i][0]);
        json_decref(it);
    }
    char longer[300];
    memset(longer, 'x', sizeof(longer));
    memcpy(longer, "actor_id=", 9);
    longer[sizeof(longer) - 1] = '\0';
    it = audit_items(a, longer, 422);
    cr_assert_str_eq(json_string_value(json_object_get(it, "field")), "actor_id");
    json_decref(it);

    /* A platform operator filters across tenants and per tenant. */
    snprintf(query, sizeof(query), "tenant_id=%s&action=queue.create", tb);
    it = audit_items(op, query, 200);
    cr_assert_eq(json_array_size(it), 1);
    json_decref(it);

    free(q1);
    free(q2);
    free(qb);
    free(a);
    free(b);
    free(ta);
    free(tb);
}
