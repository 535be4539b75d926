/* The packages API on the real orchd and PostgreSQL: upload, list, read, download, delete;
 * validation with the field at fault; roles; the storage quota (a blob counted once); jobs
 * naming a package; and another tenant seeing and touching nothing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crypto.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *oper, *viewer;

static void setup(void)
{
    const char *env[] = {"ORCHD_DISPATCH_ENABLED=false", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    oper = th_tenant_token(&srv, op, tenant, "operator");
    viewer = th_tenant_token(&srv, op, tenant, "viewer");
}

static void teardown(void)
{
    free(viewer);
    free(oper);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(packages, .init = setup, .fini = teardown, .timeout = 120);

static void upload(const char *token, const char *query, const char *data, size_t len,
                   const char *ctype, long want, struct th_resp *r)
{
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/packages?%s", query);
    th_http_bytes(&srv, "POST", path, token, data, len, ctype, r);
    cr_assert_eq(r->status, want, "%s", r->body);
}

static long storage_used(const char *token)
{
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/tenant", token, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    long v = (long)json_integer_value(
        json_object_get(json_object_get(r.json, "usage"), "storage_bytes"));
    th_resp_free(&r);
    return v;
}

Test(packages, upload_read_download_and_delete)
{
    size_t len;
    char *tgz = th_make_archive("hello", &len);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(tgz, len, sha);
    char q[256];
    snprintf(q, sizeof(q), "name=tool&version=1.0.0&entrypoint=run.sh&sha256=%s", sha);
    struct th_resp r;
    upload(oper, q, tgz, len, "application/gzip", 201, &r);
    char id[40];
    snprintf(id, sizeof(id), "%s", th_str_of(&r, "id"));
    cr_assert_str_eq(th_str_of(&r, "sha256"), sha);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "size_bytes")), (json_int_t)len);
    cr_assert_str_eq(th_str_of(&r, "entrypoint"), "run.sh");
    th_resp_free(&r);

    /* The same version again is a conflict; the same bytes as another version are stored
     * once. */
    upload(oper, "name=tool&version=1.0.0", tgz, len, "application/gzip", 409, &r);
    cr_assert_str_eq(th_str_of(&r, "field"), "version");
    th_resp_free(&r);
    upload(oper, "name=tool&version=1.0.1", tgz, len, "application/octet-stream", 201, &r);
    char id2[40];
    snprintf(id2, sizeof(id2), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    cr_assert_eq(storage_used(viewer), (long)len);

    /* Viewers read; the list filters by name. */
    th_http(&srv, "GET", "/api/v1/packages?name=tool", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 2);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/packages?name=other", viewer, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/packages/%s", id);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_str_of(&r, "name"), "tool");
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/packages/%s/content", id);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.len, len);
    cr_assert_eq(memcmp(r.body, tgz, len), 0, "the bytes came back changed");
    char *h = th_resp_header(&r, "X-Content-SHA256");
    cr_assert_str_eq(h, sha);
    free(h);
    th_resp_free(&r);

    /* A viewer cannot upload or delete. */
    upload(viewer, "name=tool&version=2.0.0", tgz, len, "application/gzip", 403, &r);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/packages/%s", id);
    th_http(&srv, "DELETE", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 403);
    th_resp_free(&r);

    /* A job naming the package takes its entrypoint; the package then stays. */
    char body[256];
    snprintf(body, sizeof(body), "{\"package_id\":\"%s\",\"args\":[\"x\"]}", id);
    th_http(&srv, "POST", "/api/v1/jobs", oper, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "entrypoint"), "run.sh");
    th_resp_free(&r);
    th_http(&srv, "DELETE", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);

    /* 1.0.1 has no default entrypoint: a job must name one. */
    snprintf(body, sizeof(body), "{\"package_id\":\"%s\"}", id2);
    th_http(&srv, "POST", "/api/v1/jobs", oper, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "entrypoint");
    th_resp_free(&r);
    snprintf(body, sizeof(body), "{\"package_id\":\"%s\",\"entrypoint\":\"../run.sh\"}", id2);
    th_http(&srv, "POST", "/api/v1/jobs", oper, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "entrypoint");
    th_resp_free(&r);

    /* Deleting the unused version keeps the bytes the other still names. */
    snprintf(path, sizeof(path), "/api/v1/packages/%s", id2);
    th_http(&srv, "DELETE", path, oper, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    cr_assert_eq(storage_used(viewer), (long)len);
    free(tgz);
}

Test(packages, validation_names_the_field)
{
    size_t len;
    char *tgz = th_make_archive("v", &len);
    static const struct {
        const char *query;
        const char *field;
    } cases[] = {
        {"version=1.0.0", "name"},
        {"name=-x&version=1.0.0", "name"},
        {"name=x", "version"},
        {"name=x&version=a%20b", "version"},
        {"name=x&version=1", "version"},
        {"name=x&version=01.0.0", "version"},
        {"name=x&version=1.0.0-", "version"},
        {"name=x&version=1.0.0&entrypoint=../up.sh", "entrypoint"},
        {"name=x&version=1.0.0&entrypoint=/bin/sh", "entrypoint"},
        {"name=x&version=1.0.0&sha256=00", "sha256"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct th_resp r;
        upload(oper, cases[i].query, tgz, len, "application/gzip", 422, &r);
        cr_assert_str_eq(th_str_of(&r, "field"), cases[i].field, "%s: %s", cases[i].query, r.body);
        th_resp_free(&r);
    }
    struct th_resp r;
    upload(oper, "name=x&version=1.0.0", "not an archive", 14, "application/gzip", 422, &r);
    cr_assert_str_eq(th_str_of(&r, "field"), "body");
    th_resp_free(&r);
    upload(oper, "name=x&version=1.0.0", "{}", 2, "application/json", 415, &r);
    th_resp_free(&r);
    upload(oper, "name=x&version=1.0.0", "", 0, "application/gzip", 400, &r);
    th_resp_free(&r);
    free(tgz);
}

Test(packages, the_storage_quota_counts_new_bytes)
{
    size_t len;
    char *tgz = th_make_archive("quota", &len);
    char body[160], path[128];
    snprintf(body, sizeof(body), "{\"quotas\":{\"storage_bytes\":%zu}}", len + len / 2);
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    upload(oper, "name=q&version=1.0.0", tgz, len, "application/gzip", 201, &r);
    th_resp_free(&r);
    /* The same bytes again cost nothing; other bytes do not fit. */
    upload(oper, "name=q&version=2.0.0", tgz, len, "application/gzip", 201, &r);
    th_resp_free(&r);
    size_t len2;
    char *other = th_make_archive("quota-other", &len2);
    upload(oper, "name=q&version=3.0.0", other, len2, "application/gzip", 403, &r);
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:quota-exceeded");
    cr_assert_str_eq(th_str_of(&r, "quota"), "storage_bytes");
    th_resp_free(&r);
    free(other);
    free(tgz);
}

Test(packages, other_tenants_see_and_touch_nothing)
{
    size_t len;
    char *tgz = th_make_archive("mine", &len);
    struct th_resp r;
    upload(oper, "name=secret&version=1.0.0&entrypoint=run.sh", tgz, len, "application/gzip", 201,
           &r);
    char id[40];
    snprintf(id, sizeof(id), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    char *t2 = th_tenant(&srv, op, "other", "standard");
    char *o2 = th_tenant_token(&srv, op, t2, "admin");
    char path[128];
    static const char *const suffix[] = {"", "/content"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/api/v1/packages/%s%s", id, suffix[i]);
        th_http(&srv, "GET", path, o2, NULL, NULL, &r);
        cr_assert_eq(r.status, 404, "%s: %s", path, r.body);
        th_resp_free(&r);
    }
    snprintf(path, sizeof(path), "/api/v1/packages/%s", id);
    th_http(&srv, "DELETE", path, o2, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/packages", o2, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    char body[128];
    snprintf(body, sizeof(body), "{\"package_id\":\"%s\"}", id);
    th_http(&srv, "POST", "/api/v1/jobs", o2, body, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "package_id");
    th_resp_free(&r);
    /* The same bytes uploaded by the other tenant are its own copy, charged to it. */
    upload(o2, "name=secret&version=1.0.0", tgz, len, "application/gzip", 201, &r);
    th_resp_free(&r);
    cr_assert_eq(storage_used(o2), (long)len);
    free(o2);
    free(t2);
    free(tgz);
}
