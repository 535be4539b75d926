/* Package storage on the real orchd and PostgreSQL: an upload in parts (resumable, checked,
 * published once: a version is never overwritten) and run by an agent; a 200 MiB package
 * uploaded and fetched with orchd's memory flat; Range, If-Range and If-None-Match; a fetch
 * cut short and resumed; the storage quota refusing before a byte is stored; the collector
 * freeing what expired uploads held; another tenant's uploads and packages not found. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;

/* Under AddressSanitizer (the same build as orchd's), freed memory waits in a quarantine
 * (256 MiB by default) before it is reused: a small one keeps orchd's peak RSS about what
 * it uses, and the bound below (64 MiB) meaningful. */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_ENV "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=8",
#else
#define ASAN_ENV
#endif

static void setup(void)
{
    const char *env[] = {"ORCHD_PACKAGES_GC_INTERVAL=200ms", "ORCHD_PACKAGES_GC_GRACE=2s",
                         ASAN_ENV NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "enterprise");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(pkgstore, .init = setup, .fini = teardown, .timeout = 240);

/* A transfer with the headers a test needs; the body goes to a SHA-256 and a counter
 * (and, when small, to out), and the transfer stops after stop_after bytes when not 0. */
struct xfer {
    long status;
    EVP_MD_CTX *md;
    uint64_t got, stop_after;
    struct buf out;
    char headers[4096];
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = sz * n;
    if (x->stop_after && x->got + len > x->stop_after)
        len = (size_t)(x->stop_after - x->got);
    EVP_DigestUpdate(x->md, p, len);
    if (x->out.len < 65536)
        buf_append(&x->out, p, len);
    x->got += len;
    return len == sz * n ? len : 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t have = strlen(x->headers);
    if (have + sz * n < sizeof(x->headers) - 1) {
        memcpy(x->headers + have, p, sz * n);
        x->headers[have + sz * n] = '\0';
    }
    return sz * n;
}

static void xfer(const char *method, const char *path, const char *token, const void *body,
                 size_t len, const char *h1, const char *h2, struct xfer *x)
{
    x->status = 0;
    x->got = 0;
    x->headers[0] = '\0';
    buf_free(&x->out);
    if (!x->md)
        x->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
    CURL *c = curl_easy_init();
    char url[512], ca[128], auth[8300];
    snprintf(url, sizeof(url), "%s%s", srv.base, path);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    if (h1)
        h = curl_slist_append(h, h1);
    if (h2)
        h = curl_slist_append(h, h2);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK && !x->stop_after) {
        char cmd[256]; /* why, from orchd's side */
        snprintf(cmd, sizeof(cmd), "grep -E 'warn|error|content' '%s/orchd.log' | tail -n 5 >&2",
                 srv.dir);
        if (system(cmd) != 0)
            cr_log_warn("no orchd.log in %s", srv.dir);
    }
    cr_assert(rc == CURLE_OK || (x->stop_after && rc == CURLE_WRITE_ERROR), "%s %s: %s after %llu",
              method, path, curl_easy_strerror(rc), (unsigned long long)x->got);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static void xfer_hex(struct xfer *x, char hex[CRYPTO_SHA256_HEX_LEN])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(x->md, md, &n);
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void xfer_free(struct xfer *x)
{
    EVP_MD_CTX_free(x->md);
    buf_free(&x->out);
}

static char *declare(const char *token, const char *name, const char *version, size_t size,
                     const char *sha, long want, struct th_resp *r)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"version\":\"%s\",\"entrypoint\":\"run.sh\","
             "\"size_bytes\":%zu,\"sha256\":\"%s\"}",
             name, version, size, sha);
    th_http(&srv, "POST", "/api/v1/packages/uploads", token, body, NULL, r);
    cr_assert_eq(r->status, want, "%s", r->body);
    return want == 201 ? strdup(th_str_of(r, "id")) : NULL;
}

static long part(const char *token, const char *id, uint64_t off, const void *data, size_t len,
                 struct xfer *x)
{
    char path[128], h[64];
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s", id);
    snprintf(h, sizeof(h), "Upload-Offset: %llu", (unsigned long long)off);
    xfer("PATCH", path, token, data, len, h, "Content-Type: application/offset+octet-stream", x);
    return x->status;
}

static long vm_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f);
    long v = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtol(line + strlen(field) + 1, NULL, 10);
    fclose(f);
    return v;
}

static long storage_used(void)
{
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/tenant", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    long v = (long)json_integer_value(
        json_object_get(json_object_get(r.json, "usage"), "storage_bytes"));
    th_resp_free(&r);
    return v;
}

static long chunks_of(const char *key)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM blob_chunks WHERE blob_key = '%s'", key);
    long n = th_pg_long(pg, sql);
    PQfinish(pg);
    return n;
}

Test(pkgstore, parts_resume_commit_run_and_never_overwrite)
{
    size_t len;
    char *tgz = th_make_archive("parts", &len);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(tgz, len, sha);
    struct th_resp r;
    char *id = declare(admin, "parted", "1.0.0", len, sha, 201, &r);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "offset")), 0);
    th_resp_free(&r);

    struct xfer x = {0};
    size_t half = len / 2;
    cr_assert_eq(part(admin, id, 0, tgz, half, &x), 200, "%s", (char *)x.out.data);
    /* The same part again (an answer lost): refused with where the upload is. */
    cr_assert_eq(part(admin, id, 0, tgz, half, &x), 409);
    char want_h[64];
    snprintf(want_h, sizeof(want_h), "Upload-Offset: %zu", half);
    cr_assert(strcasestr(x.headers, want_h), "%s", x.headers);
    /* Committing now: incomplete. */
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);
    /* After a broken connection the client asks where to go on. */
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s", id);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "offset")), (json_int_t)half);
    th_resp_free(&r);
    /* A part past the declared size is refused. */
    cr_assert_eq(part(admin, id, half, tgz, len, &x), 422);
    cr_assert_eq(part(admin, id, half, tgz + half, len - half, &x), 200);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "sha256"), sha);
    char pkg[40];
    snprintf(pkg, sizeof(pkg), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    /* The session is gone. */
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s", id);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);

    /* A version is never overwritten: refused when declared, and in one request. */
    free(declare(admin, "parted", "1.0.0", len, sha, 409, &r));
    cr_assert_str_eq(th_str_of(&r, "field"), "version");
    th_resp_free(&r);
    th_http_bytes(&srv, "POST", "/api/v1/packages?name=parted&version=1.0.0", admin, tgz, len,
                  "application/gzip", &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);

    /* A damaged upload: the digest does not match, the session is dropped. */
    char bad[CRYPTO_SHA256_HEX_LEN];
    memset(bad, 'a', 64);
    bad[64] = '\0';
    char *id2 = declare(admin, "parted", "2.0.0", len, bad, 201, &r);
    th_resp_free(&r);
    cr_assert_eq(part(admin, id2, 0, tgz, len, &x), 200);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id2);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "sha256");
    th_resp_free(&r);

    /* An agent runs it. */
    char dir[] = "/tmp/orch-pkgstore-XXXXXX", agent[40];
    cr_assert_not_null(mkdtemp(dir));
    th_agent_enrol(&srv, admin, dir, "runner", NULL, "1", agent);
    pid_t pid = th_agent_start(dir);
    json_t *job = json_pack("{s:s, s:i}", "package_id", pkg, "max_attempts", 1);
    char *jid = th_job_submit(&srv, admin, job);
    json_t *j = th_job_wait_final(&srv, admin, jid, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s",
                     json_dumps(j, 0));
    json_decref(j);
    th_agent_stop(pid, SIGTERM);
    th_rm_rf(dir);
    free(jid);
    free(id2);
    free(id);
    xfer_free(&x);
    free(tgz);
}

/* Deterministic bytes that start as a gzip stream does. */
static void fill(unsigned char *p, size_t n, uint64_t at)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = (at + i) * 0x9E3779B97F4A7C15ull;
        p[i] = (unsigned char)(v >> 56);
    }
    if (at == 0 && n >= 2) {
        p[0] = 0x1f;
        p[1] = 0x8b;
    }
}

Test(pkgstore, big_package_streams_with_flat_memory_range_and_resume)
{
    const size_t size = 200u << 20, partsz = 8u << 20;
    unsigned char *buf = malloc(partsz);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t off = 0; off < size; off += partsz) {
        fill(buf, partsz, off);
        EVP_DigestUpdate(md, buf, partsz);
    }
    unsigned char d[32];
    unsigned int dn;
    EVP_DigestFinal_ex(md, d, &dn);
    EVP_MD_CTX_free(md);
    char sha[CRYPTO_SHA256_HEX_LEN];
    for (int i = 0; i < 32; i++)
        snprintf(sha + 2 * i, 3, "%02x", d[i]);

    long rss0 = vm_kib(srv.pid, "VmRSS:"), hwm0 = vm_kib(srv.pid, "VmHWM:");
    struct th_resp r;
    uint64_t t0 = clock_mono_ns();
    char *id = declare(admin, "big", "1.0.0", size, sha, 201, &r);
    th_resp_free(&r);
    struct xfer x = {0};
    for (size_t off = 0; off < size; off += partsz) {
        fill(buf, partsz, off);
        cr_assert_eq(part(admin, id, off, buf, partsz, &x), 200);
    }
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    double up_s = (double)(clock_mono_ns() - t0) / 1e9;
    char pkg[40];
    snprintf(pkg, sizeof(pkg), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);

    char content[160];
    snprintf(content, sizeof(content), "/api/v1/packages/%s/content", pkg);
    t0 = clock_mono_ns();
    xfer("GET", content, admin, NULL, 0, NULL, NULL, &x);
    double down_s = (double)(clock_mono_ns() - t0) / 1e9;
    cr_assert_eq(x.status, 200);
    cr_assert_eq(x.got, size);
    char hex[CRYPTO_SHA256_HEX_LEN];
    xfer_hex(&x, hex);
    cr_assert_str_eq(hex, sha);
    char etag[80];
    snprintf(etag, sizeof(etag), "ETag: \"%s\"", sha);
    cr_assert(strcasestr(x.headers, etag), "%s", x.headers);

    long rss1 = vm_kib(srv.pid, "VmRSS:"), hwm1 = vm_kib(srv.pid, "VmHWM:");
    printf(
        "| package | upload MiB/s | download MiB/s | orchd VmHWM before | after | VmRSS after |\n"
        "| 200 MiB | %.1f | %.1f | %ld MiB | %ld MiB | %ld MiB |\n",
        200.0 / up_s, 200.0 / down_s, hwm0 / 1024, hwm1 / 1024, rss1 / 1024);
    cr_assert_lt(hwm1 - hwm0, 64 * 1024, "orchd's peak RSS grew by %ld KiB (RSS %ld -> %ld)",
                 hwm1 - hwm0, rss0, rss1);

    /* Cut short after 50 MiB, resumed from there: the rest is the package's rest. */
    x.stop_after = 50u << 20;
    xfer("GET", content, admin, NULL, 0, NULL, NULL, &x);
    cr_assert_eq(x.got, 50u << 20);
    x.stop_after = 0;
    char range[64], ifr[96];
    snprintf(range, sizeof(range), "Range: bytes=%u-", 50u << 20);
    snprintf(ifr, sizeof(ifr), "If-Range: \"%s\"", sha);
    xfer("GET", content, admin, NULL, 0, range, ifr, &x);
    cr_assert_eq(x.status, 206);
    cr_assert_eq(x.got, size - (50u << 20));
    char cr_want[96];
    snprintf(cr_want, sizeof(cr_want), "Content-Range: bytes %u-%zu/%zu", 50u << 20, size - 1,
             size);
    cr_assert(strcasestr(x.headers, cr_want), "%s", x.headers);
    xfer_hex(&x, hex);
    char tail[CRYPTO_SHA256_HEX_LEN];
    EVP_MD_CTX *t = EVP_MD_CTX_new();
    EVP_DigestInit_ex(t, EVP_sha256(), NULL);
    for (uint64_t off = 50u << 20; off < size; off += partsz) {
        size_t n = size - off < partsz ? (size_t)(size - off) : partsz;
        fill(buf, n, off);
        EVP_DigestUpdate(t, buf, n);
    }
    EVP_DigestFinal_ex(t, d, &dn);
    EVP_MD_CTX_free(t);
    for (int i = 0; i < 32; i++)
        snprintf(tail + 2 * i, 3, "%02x", d[i]);
    cr_assert_str_eq(hex, tail);

    /* A bounded range; past the end 416; another version's If-Range: the whole (200);
     * If-None-Match with the digest: 304. */
    xfer("GET", content, admin, NULL, 0, "Range: bytes=10-19", NULL, &x);
    cr_assert_eq(x.status, 206);
    cr_assert_eq(x.got, 10);
    fill(buf, 32, 0);
    cr_assert(memcmp(x.out.data, buf + 10, 10) == 0);
    snprintf(range, sizeof(range), "Range: bytes=%zu-", size);
    xfer("GET", content, admin, NULL, 0, range, NULL, &x);
    cr_assert_eq(x.status, 416);
    x.stop_after = 1024;
    xfer("GET", content, admin, NULL, 0, "Range: bytes=100-", "If-Range: \"other\"", &x);
    cr_assert_eq(x.status, 200);
    x.stop_after = 0;
    snprintf(ifr, sizeof(ifr), "If-None-Match: \"%s\"", sha);
    xfer("GET", content, admin, NULL, 0, ifr, NULL, &x);
    cr_assert_eq(x.status, 304);
    cr_assert_eq(x.got, 0);

    xfer_free(&x);
    free(id);
    free(buf);
}

Test(pkgstore, quota_refuses_before_storing_and_gc_frees_it)
{
    char *small = th_tenant(&srv, op, "small", "standard");
    char *tok = th_tenant_token(&srv, op, small, "operator");
    char body[160], path[128];
    snprintf(body, sizeof(body), "{\"quotas\":{\"storage_bytes\":%d}}", 1 << 20);
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", small);
    struct th_resp r;
    th_http(&srv, "PATCH", path, op, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex("x", 1, sha);
    free(declare(tok, "huge", "1.0.0", 2u << 20, sha, 403, &r));
    cr_assert_str_eq(th_str_of(&r, "type"), "urn:orch:problem:quota-exceeded");
    cr_assert_str_eq(th_str_of(&r, "quota"), "storage_bytes");
    th_resp_free(&r);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM package_uploads WHERE tenant_id = '%s'",
             small);
    cr_assert_eq(th_pg_long(pg, sql), 0);
    PQfinish(pg);

    /* A session counts its declared size at once; expired, the collector frees it. */
    long before = storage_used();
    unsigned char data[4096];
    fill(data, sizeof(data), 0);
    char *id = declare(admin, "expiring", "1.0.0", 100000, sha, 201, &r);
    th_resp_free(&r);
    struct xfer x = {0};
    cr_assert_eq(part(admin, id, 0, data, sizeof(data), &x), 200);
    cr_assert_eq(storage_used(), before + 100000);
    char key[96];
    snprintf(key, sizeof(key), "upload/%s", id);
    cr_assert_eq(chunks_of(key), 1);
    pg = th_pg_connect("postgres", srv.db);
    snprintf(sql, sizeof(sql), "UPDATE package_uploads SET expires_at = now() WHERE id = '%s'", id);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
    for (int i = 0; i < 150 && (storage_used() != before || chunks_of(key) != 0); i++)
        usleep(100 * 1000);
    cr_assert_eq(storage_used(), before);
    cr_assert_eq(chunks_of(key), 0);

    /* A package deleted: its charge goes at once, its bytes with the collector. */
    size_t len;
    char *tgz = th_make_archive("gc", &len);
    char psha[CRYPTO_SHA256_HEX_LEN];
    char *pkg = th_package(&srv, admin, "gone", "gc", psha);
    snprintf(key, sizeof(key), "pkg/%s", psha);
    cr_assert_eq(chunks_of(key), 1);
    snprintf(path, sizeof(path), "/api/v1/packages/%s", pkg);
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(storage_used(), before);
    for (int i = 0; i < 150 && chunks_of(key) != 0; i++)
        usleep(100 * 1000);
    cr_assert_eq(chunks_of(key), 0);
    free(pkg);
    free(tgz);
    xfer_free(&x);
    free(id);
    free(tok);
    free(small);
}

Test(pkgstore, another_tenants_uploads_and_packages_are_not_found)
{
    char *other = th_tenant(&srv, op, "other", "standard");
    char *tok = th_tenant_token(&srv, op, other, "admin");
    size_t len;
    char *tgz = th_make_archive("mine", &len);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(tgz, len, sha);
    struct th_resp r;
    char *id = declare(admin, "mine", "1.0.0", len, sha, 201, &r);
    th_resp_free(&r);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s", id);
    th_http(&srv, "GET", path, tok, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    struct xfer x = {0};
    cr_assert_eq(part(tok, id, 0, tgz, len, &x), 404);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, tok, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s", id);
    th_http(&srv, "DELETE", path, tok, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    cr_assert_eq(part(admin, id, 0, tgz, len, &x), 200);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    snprintf(path, sizeof(path), "/api/v1/packages/%s/content", th_str_of(&r, "id"));
    th_resp_free(&r);
    xfer("GET", path, tok, NULL, 0, "Range: bytes=0-", NULL, &x);
    cr_assert_eq(x.status, 404);
    xfer_free(&x);
    free(id);
    free(tgz);
    free(tok);
    free(other);
}

/* tools/pkg-upload.sh, the one-command upload of docs/packages.md: 20 MiB in 4 MiB parts,
 * the last one short, then the package downloads whole. */
Test(pkgstore, the_upload_script_sends_a_file_in_parts)
{
    char dir[] = "/tmp/orch-pkgup-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char file[96];
    snprintf(file, sizeof(file), "%s/big.tgz", dir);
    const size_t size = (20u << 20) + 12345;
    unsigned char *buf = malloc(size);
    fill(buf, size, 0);
    FILE *f = fopen(file, "we");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, size, f), size);
    fclose(f);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(buf, size, sha);
    free(buf);

    char script[512], orch[128], token[8300], ca[128];
    snprintf(script, sizeof(script), "%s", th_env("ORCH_TEST_GEN_CERTS"));
    char *slash = strrchr(script, '/');
    cr_assert_not_null(slash);
    snprintf(slash + 1, sizeof(script) - (size_t)(slash + 1 - script), "pkg-upload.sh");
    snprintf(orch, sizeof(orch), "ORCH=%s", srv.base);
    snprintf(token, sizeof(token), "TOKEN=%s", admin);
    snprintf(ca, sizeof(ca), "CA=%s/tls/ca.pem", srv.dir);
    const char *argv[] = {"/bin/bash", script, file, "scripted", "1.0.0", "run.sh", NULL};
    const char *env[] = {orch, token, ca, "PART_MIB=4", NULL};
    struct th_run run;
    th_run(&run, argv, env, 120000);
    cr_assert_eq(run.status, 0, "status %d: %s %s", run.status, th_str(&run.err), th_str(&run.out));
    json_t *pkg = json_loads(th_str(&run.out), 0, NULL);
    cr_assert_not_null(pkg, "%s", th_str(&run.out));
    cr_assert_str_eq(json_string_value(json_object_get(pkg, "sha256")), sha);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/packages/%s/content",
             json_string_value(json_object_get(pkg, "id")));
    struct xfer x = {0};
    xfer("GET", path, admin, NULL, 0, NULL, NULL, &x);
    cr_assert_eq(x.status, 200);
    cr_assert_eq(x.got, size);
    char hex[CRYPTO_SHA256_HEX_LEN];
    xfer_hex(&x, hex);
    cr_assert_str_eq(hex, sha);
    xfer_free(&x);
    json_decref(pkg);
    th_run_free(&run);
    th_rm_rf(dir);
}

/* The agent resumes a package fetch: a download cut short (here: left by an earlier run
 * in its cache, as an agent stopped mid-fetch leaves it) goes on with Range from the bytes
 * it holds, and the whole is checked; a partial download of other bytes fails the
 * SHA-256 check once and starts again from nothing. */
Test(pkgstore, the_agent_resumes_a_fetch_cut_short)
{
    char dir[] = "/tmp/orch-pkgres-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(chmod(dir, 0711), 0); /* the jobs' user reaches the agent's work dir */
    char src[128], file[128], path[256];
    snprintf(src, sizeof(src), "%s/src", dir);
    snprintf(file, sizeof(file), "%s/pkg.tgz", dir);
    cr_assert_eq(mkdir(src, 0700), 0);
    snprintf(path, sizeof(path), "%s/run.sh", src);
    FILE *f = fopen(path, "we");
    cr_assert_not_null(f);
    fputs("#!/bin/sh\necho resumed-ok $(wc -c < blob)\n", f);
    fclose(f);
    chmod(path, 0755);
    snprintf(path, sizeof(path), "%s/blob", src);
    f = fopen(path, "we");
    cr_assert_not_null(f);
    unsigned char *noise = malloc(1 << 20);
    for (int i = 0; i < 20; i++) {
        crypto_random(noise, 1 << 20);
        fwrite(noise, 1, 1 << 20, f);
    }
    fclose(f);
    free(noise);
    const char *tar[] = {"/bin/tar", "-czf", file, "-C", src, "run.sh", "blob", NULL};
    struct th_run run;
    th_run(&run, tar, NULL, 60000);
    cr_assert_eq(run.status, 0, "%s", th_str(&run.err));
    th_run_free(&run);
    f = fopen(file, "re");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    char *tgz = malloc(len);
    cr_assert_eq(fread(tgz, 1, len, f), len);
    fclose(f);
    char sha[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(tgz, len, sha);

    struct th_resp r;
    char *id = declare(admin, "resumable", "1.0.0", len, sha, 201, &r);
    th_resp_free(&r);
    struct xfer x = {0};
    const size_t partsz = 8u << 20;
    for (size_t off = 0; off < len; off += partsz)
        cr_assert_eq(part(admin, id, off, tgz + off, len - off < partsz ? len - off : partsz, &x),
                     200);
    snprintf(path, sizeof(path), "/api/v1/packages/uploads/%s/commit", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char pkg[40];
    snprintf(pkg, sizeof(pkg), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);

    /* An agent whose cache holds the first 10 MiB and a bit of it. */
    char state[128], agent[40];
    snprintf(state, sizeof(state), "%s/agent", dir);
    cr_assert_eq(mkdir(state, 0700), 0);
    th_agent_enrol(&srv, admin, state, "resumer", "role=resume", "1", agent);
    snprintf(path, sizeof(path), "%s/cache", state);
    mkdir(path, 0700);
    const size_t cut = (10u << 20) + 4321;
    snprintf(path, sizeof(path), "%s/cache/%s.dl", state, sha);
    f = fopen(path, "we");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(tgz, 1, cut, f), cut);
    fclose(f);
    pid_t pid = th_agent_start(state);
    json_t *job = json_pack("{s:s, s:i, s:{s:s}}", "package_id", pkg, "max_attempts", 1,
                            "requirements", "role", "resume");
    char *jid = th_job_submit(&srv, admin, job);
    json_t *j = th_job_wait_final(&srv, admin, jid, 90);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    json_decref(j);
    char want[96];
    snprintf(want, sizeof(want), "resumed_at=%zu", cut);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "grep -q 'op=package-fetch package=%s bytes=%zu %s' '%s/agent.log'",
             pkg, len, want, state);
    cr_assert_eq(system(cmd), 0, "no '%s' in %s/agent.log", want, state);
    th_agent_stop(pid, SIGTERM);
    free(jid);

    /* Other bytes in the partial download: the check fails, and the next try starts from
     * nothing. */
    snprintf(path, sizeof(path), "%s/cache/%s.pkg", state, sha);
    cr_assert_eq(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/cache/%s.dl", state, sha);
    f = fopen(path, "we");
    cr_assert_not_null(f);
    fputs("not the archive's first bytes", f);
    fclose(f);
    pid = th_agent_start(state);
    job = json_pack("{s:s, s:i, s:{s:s}}", "package_id", pkg, "max_attempts", 2, "requirements",
                    "role", "resume");
    jid = th_job_submit(&srv, admin, job);
    j = th_job_wait_final(&srv, admin, jid, 90);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded");
    cr_assert_eq(json_integer_value(json_object_get(j, "attempt")), 2);
    json_decref(j);
    th_agent_stop(pid, SIGTERM);
    free(jid);
    xfer_free(&x);
    free(id);
    free(tgz);
    th_rm_rf(dir);
}
