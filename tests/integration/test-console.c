/* The admin console on the real orchd: its files' headers (CSP, ETag, caching, gzip,
 * nosniff), 304, 404s (an unknown file, a path that tries to climb out), and the live event
 * stream (GET /api/v1/events): scoped to the tenant, bounded per tenant. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "proto/agent.h"
#include "server/events-hub.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op;

static void setup(void)
{
    /* A short read/write timeout: an event stream, whose client sends nothing after its
     * request, must outlive it (the heartbeat test waits 15 s). */
    const char *env[] = {"ORCHD_HTTP_TIMEOUT=2s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
}

static void teardown(void)
{
    free(op);
    th_server_stop(&srv);
}

TestSuite(console, .init = setup, .fini = teardown, .timeout = 180);

/* --- the files ------------------------------------------------------------------------- */

struct got {
    long status;
    char *head, *body;
    size_t hlen, blen;
};

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
    char **buf = ((char **)arg);
    size_t *len = (size_t *)(buf + 1);
    size_t add = sz * n;
    char *b = realloc(*buf, *len + add + 1);
    if (!b)
        return 0;
    memcpy(b + *len, p, add);
    *len += add;
    b[*len] = '\0';
    *buf = b;
    return add;
}

/* GET path with extra request headers (NULL-terminated, may be NULL), no decoding: the
 * bytes as sent. */
static void get(const char *path, const char *const *hdrs, struct got *g)
{
    struct {
        char *buf;
        size_t len;
    } hb = {0}, bb = {0};
    char url[512], ca[128];
    snprintf(url, sizeof(url), "%s%s", srv.base, path);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    struct curl_slist *h = NULL;
    for (int i = 0; hdrs && hdrs[i]; i++)
        h = curl_slist_append(h, hdrs[i]);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send "/../" as is */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK, "GET %s", path);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &g->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    g->head = hb.buf ? hb.buf : strdup("");
    g->hlen = hb.len;
    g->body = bb.buf ? bb.buf : strdup("");
    g->blen = bb.len;
}

static void got_free(struct got *g)
{
    free(g->head);
    free(g->body);
}

/* The value of header name in g (copied into out), "" when absent. */
static const char *hdr(const struct got *g, const char *name, char *out, size_t len)
{
    out[0] = '\0';
    char key[96];
    snprintf(key, sizeof(key), "\n%s:", name);
    const char *p = strcasestr(g->head, key);
    if (!p)
        return out;
    p += strlen(key);
    p += strspn(p, " ");
    snprintf(out, len, "%.*s", (int)strcspn(p, "\r\n"), p);
    return out;
}

/* The hashed script's name, from index.html. */
static void script_name(const struct got *index, char *out, size_t len)
{
    const char *p = strstr(index->body, "src=\"app-");
    cr_assert_not_null(p, "index.html names its script: %s", index->body);
    p += 5;
    snprintf(out, len, "%.*s", (int)strcspn(p, "\""), p);
}

Test(console, index_headers)
{
    struct got g;
    char v[512];
    get("/console/", NULL, &g);
    cr_assert_eq(g.status, 200);
    cr_assert_str_eq(hdr(&g, "Content-Type", v, sizeof(v)), "text/html; charset=utf-8");
    cr_assert_str_eq(hdr(&g, "Cache-Control", v, sizeof(v)), "no-cache");
    cr_assert_str_eq(hdr(&g, "X-Content-Type-Options", v, sizeof(v)), "nosniff");
    hdr(&g, "Content-Security-Policy", v, sizeof(v));
    cr_assert(strstr(v, "default-src 'self'"), "CSP: %s", v);
    cr_assert(strstr(v, "frame-ancestors 'none'"), "CSP: %s", v);
    cr_assert(strstr(v, "script-src 'self';"), "CSP: %s", v);
    cr_assert(!strstr(v, "unsafe-inline") && !strstr(v, "unsafe-eval"), "CSP: %s", v);
    cr_assert_eq(hdr(&g, "ETag", v, sizeof(v))[0], '"');
    /* No inline script or style in the page: the CSP would refuse it anyway. */
    cr_assert(!strstr(g.body, "<script>") && !strstr(g.body, "<style") &&
                  !strstr(g.body, " style="),
              "%s", g.body);
    got_free(&g);

    get("/console", NULL, &g);
    cr_assert_eq(g.status, 301);
    cr_assert_str_eq(hdr(&g, "Location", v, sizeof(v)), "/console/");
    got_free(&g);
}

Test(console, asset_cache_etag_gzip)
{
    struct got index, g;
    char name[128], path[160], etag[64], v[256], inm[96];
    get("/console/", NULL, &index);
    script_name(&index, name, sizeof(name));
    snprintf(path, sizeof(path), "/console/%s", name);

    get(path, NULL, &g);
    cr_assert_eq(g.status, 200);
    cr_assert_str_eq(hdr(&g, "Content-Type", v, sizeof(v)), "text/javascript; charset=utf-8");
    cr_assert_str_eq(hdr(&g, "Cache-Control", v, sizeof(v)), "public, max-age=31536000, immutable");
    cr_assert_str_eq(hdr(&g, "Content-Encoding", v, sizeof(v)), "", "not asked for gzip");
    cr_assert_str_eq(hdr(&g, "X-Content-Type-Options", v, sizeof(v)), "nosniff");
    hdr(&g, "ETag", etag, sizeof(etag));
    /* The ETag is the content hash that names the file. */
    cr_assert(strlen(etag) == 18 && strstr(name, etag + 1) == NULL &&
                  strncmp(name + 4, etag + 1, 16) == 0,
              "name %s etag %s", name, etag);
    size_t plain = g.blen;
    got_free(&g);

    const char *gz[] = {"Accept-Encoding: br, gzip", NULL};
    get(path, gz, &g);
    cr_assert_eq(g.status, 200);
    cr_assert_str_eq(hdr(&g, "Content-Encoding", v, sizeof(v)), "gzip");
    cr_assert_str_eq(hdr(&g, "Vary", v, sizeof(v)), "Accept-Encoding");
    cr_assert(g.blen > 2 && (unsigned char)g.body[0] == 0x1f && (unsigned char)g.body[1] == 0x8b);
    cr_assert_lt(g.blen, plain);
    got_free(&g);

    const char *nogz[] = {"Accept-Encoding: gzip;q=0, identity", NULL};
    get(path, nogz, &g);
    cr_assert_str_eq(hdr(&g, "Content-Encoding", v, sizeof(v)), "");
    cr_assert_eq(g.blen, plain);
    got_free(&g);

    snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
    const char *cond[] = {inm, NULL};
    get(path, cond, &g);
    cr_assert_eq(g.status, 304);
    cr_assert_eq(g.blen, 0);
    cr_assert_str_eq(hdr(&g, "ETag", v, sizeof(v)), etag);
    got_free(&g);

    const char *other[] = {"If-None-Match: \"0000000000000000\"", NULL};
    get(path, other, &g);
    cr_assert_eq(g.status, 200);
    got_free(&g);
    got_free(&index);
}

Test(console, unknown_and_traversal_refused)
{
    const char *paths[] = {"/console/app-0000000000000000.js",
                           "/console/..%2f..%2fetc%2fpasswd",
                           "/console/%2e%2e",
                           "/console/../api/v1/tenant",
                           "/console/index.html%00.js",
                           "/console/sub/app.js"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct got g;
        get(paths[i], NULL, &g);
        cr_assert(g.status == 404 || g.status == 400, "%s: %ld", paths[i], g.status);
        cr_assert(!strstr(g.body, "root:"), "%s", paths[i]);
        got_free(&g);
    }
}

/* --- the event stream -------------------------------------------------------------------- */

struct stream {
    const struct th_server *srv;
    char token[2048];
    pthread_t th;
    pthread_mutex_t mu;
    char *buf;
    size_t len;
    long status;
    atomic_bool stop, done;
};

static size_t stream_collect(char *p, size_t sz, size_t n, void *arg)
{
    struct stream *s = arg;
    pthread_mutex_lock(&s->mu);
    char *b = realloc(s->buf, s->len + sz * n + 1);
    if (b) {
        memcpy(b + s->len, p, sz * n);
        s->len += sz * n;
        b[s->len] = '\0';
        s->buf = b;
    }
    pthread_mutex_unlock(&s->mu);
    return b ? sz * n : 0;
}

static int stream_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct stream *s = arg;
    return atomic_load(&s->stop) ? 1 : 0;
}

static void *stream_main(void *arg)
{
    struct stream *s = arg;
    char url[512], ca[128], auth[2100];
    snprintf(url, sizeof(url), "%s/api/v1/events", s->srv->base);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", s->srv->dir);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", s->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    atomic_store(&s->done, true);
    return NULL;
}

static void stream_open_on(struct stream *s, const struct th_server *on, const char *token)
{
    memset(s, 0, sizeof(*s));
    s->srv = on;
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->token, sizeof(s->token), "%s", token);
    cr_assert_eq(pthread_create(&s->th, NULL, stream_main, s), 0);
}

static void stream_open(struct stream *s, const char *token)
{
    stream_open_on(s, &srv, token);
}

static void stream_close(struct stream *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    free(s->buf);
    pthread_mutex_destroy(&s->mu);
}

static bool stream_has(struct stream *s, const char *needle)
{
    pthread_mutex_lock(&s->mu);
    bool r = s->buf && strstr(s->buf, needle);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Wait (bounded) until the stream carries needle. */
static bool stream_wait(struct stream *s, const char *needle, int ms)
{
    uint64_t until = clock_mono_ns() + (uint64_t)ms * 1000000;
    while (clock_mono_ns() < until) {
        if (stream_has(s, needle))
            return true;
        if (atomic_load(&s->done))
            return stream_has(s, needle);
        usleep(20000);
    }
    return false;
}

/* A stream is ready once its events flow: ": listening", or the resync sent once the
 * node's LISTEN connection came up. */
static void stream_ready(struct stream *s)
{
    uint64_t until = clock_mono_ns() + 20 * 1000000000ULL;
    while (clock_mono_ns() < until && !stream_has(s, ": listening") &&
           !stream_has(s, "event: resync"))
        usleep(20000);
    cr_assert(stream_has(s, ": listening") || stream_has(s, "event: resync"),
              "the stream did not start (status %ld)", s->status);
}

Test(console, events_scoped_to_tenant)
{
    char *ta = th_tenant(&srv, op, "ev-a", "professional");
    char *tb = th_tenant(&srv, op, "ev-b", "professional");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "viewer");
    struct stream sa, sb;
    stream_open(&sa, a);
    stream_open(&sb, b);
    stream_ready(&sa);
    stream_ready(&sb);

    char *job = th_job_submit(&srv, a, json_pack("{s:s}", "command", "true"));
    cr_assert(stream_wait(&sa, "event: job.queued", 15000), "A sees its job queued");
    cr_assert(stream_has(&sa, job));
    cr_assert(stream_has(&sa, ta));
    /* Cancelled at once (no agent): a second event on A's stream. */
    struct th_resp r;
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", job);
    th_http(&srv, "POST", path, a, NULL, NULL, &r);
    cr_assert_lt(r.status, 300, "cancel: %ld %s", r.status, r.body);
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: job.cancelled", 15000), "A sees its job cancelled: %s",
              sa.buf);

    /* B's stream, open all along, carried nothing of A's: only its opening lines and any
     * heartbeat or resync. A job of B's then shows up on B's stream, proving it was live. */
    cr_assert(!stream_has(&sb, job) && !stream_has(&sb, ta) && !stream_has(&sb, "job."),
              "B saw: %s", sb.buf);
    char *bop = th_tenant_token(&srv, op, tb, "operator");
    char *jb2 = th_job_submit(&srv, bop, json_pack("{s:s}", "command", "true"));
    cr_assert(stream_wait(&sb, jb2, 15000), "B sees its own job");
    cr_assert(!stream_has(&sb, job) && !stream_has(&sb, ta), "B saw: %s", sb.buf);

    stream_close(&sa);
    stream_close(&sb);
    free(jb2);
    free(bop);
    free(job);
    free(a);
    free(b);
    free(ta);
    free(tb);
}

Test(console, events_need_a_tenant_token)
{
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/events", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 401);
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/events", op, NULL, NULL, &r);
    cr_assert_eq(r.status, 403, "a platform token has no tenant to stream");
    th_resp_free(&r);
}

Test(console, events_bounded_per_tenant)
{
    char *t = th_tenant(&srv, op, "ev-cap", "professional");
    char *tok = th_tenant_token(&srv, op, t, "viewer");
    struct stream s[EVENTS_MAX_PER_TENANT];
    for (int i = 0; i < EVENTS_MAX_PER_TENANT; i++) {
        stream_open(&s[i], tok);
        stream_ready(&s[i]);
    }
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/events", tok, NULL, NULL, &r);
    cr_assert_eq(r.status, 429, "one stream over the cap: %ld %s", r.status, r.body);
    th_resp_free(&r);
    /* A stream that closes frees its place (the server sees the close at once). */
    stream_close(&s[0]);
    struct stream again;
    uint64_t until = clock_mono_ns() + 10 * 1000000000ULL;
    for (;;) {
        /* Refused (429) while the server has not yet seen the close: try again. */
        stream_open(&again, tok);
        while (!stream_has(&again, ": listening") && !atomic_load(&again.done))
            usleep(20000);
        if (stream_has(&again, ": listening") || clock_mono_ns() > until)
            break;
        stream_close(&again);
        usleep(100000);
    }
    stream_ready(&again);
    stream_close(&again);
    for (int i = 1; i < EVENTS_MAX_PER_TENANT; i++)
        stream_close(&s[i]);
    free(tok);
    free(t);
}

Test(console, events_heartbeat)
{
    char *t = th_tenant(&srv, op, "ev-hb", "professional");
    char *tok = th_tenant_token(&srv, op, t, "viewer");
    struct stream s;
    stream_open(&s, tok);
    stream_ready(&s);
    /* Every 15 s: a comment, which keeps proxies from closing an idle stream. */
    cr_assert(stream_wait(&s, ": heartbeat\n\n", 20000), "no heartbeat within 20 s: %s", s.buf);
    stream_close(&s);
    free(tok);
    free(t);
}

Test(console, events_end_when_the_node_stops)
{
    char *t = th_tenant(&srv, op, "ev-stop", "professional");
    char *tok = th_tenant_token(&srv, op, t, "viewer");
    struct th_server peer;
    th_server_start_peer(&peer, &srv);
    struct stream s;
    stream_open_on(&s, &peer, tok);
    stream_ready(&s);
    /* SIGTERM: the node ends its streams, then stops, and exits 0 (under ASan: no leak). */
    th_server_stop_peer(&peer);
    uint64_t until = clock_mono_ns() + 10 * 1000000000ULL;
    while (!atomic_load(&s.done) && clock_mono_ns() < until)
        usleep(20000);
    cr_assert(atomic_load(&s.done), "the stream outlived its node");
    cr_assert_eq(s.status, 200);
    stream_close(&s);
    free(tok);
    free(t);
}

/* A queue's creation, pause, resume, change and deletion reach its tenant's stream as
 * queue.* events, and nothing of them another tenant's. */
Test(console, queue_events_reach_the_tenant)
{
    char *ta = th_tenant(&srv, op, "evq-a", "professional");
    char *tb = th_tenant(&srv, op, "evq-b", "professional");
    char *a = th_tenant_token(&srv, op, ta, "operator");
    char *b = th_tenant_token(&srv, op, tb, "viewer");
    struct stream sa, sb;
    stream_open(&sa, a);
    stream_open(&sb, b);
    stream_ready(&sa);
    stream_ready(&sb);

    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/queues", a, "{\"name\":\"live-q\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body);
    char *qid = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: queue.created", 15000), "%s", sa.buf);
    cr_assert(stream_has(&sa, qid));
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/queues/%s", qid);
    static const char *const steps[][2] = {
        {"{\"paused\":true}", "event: queue.paused"},
        {"{\"paused\":false}", "event: queue.resumed"},
        {"{\"max_running\":3}", "event: queue.updated"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        th_http(&srv, "PATCH", path, a, steps[i][0], NULL, &r);
        cr_assert_eq(r.status, 200, "%s: %ld %s", steps[i][0], r.status, r.body);
        th_resp_free(&r);
        cr_assert(stream_wait(&sa, steps[i][1], 15000), "%s: %s", steps[i][1], sa.buf);
    }
    cr_assert(stream_has(&sa, "\"paused\": true"), "%s", sa.buf);
    th_http(&srv, "DELETE", path, a, NULL, NULL, &r);
    cr_assert_lt(r.status, 300, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: queue.deleted", 15000), "%s", sa.buf);

    cr_assert(!stream_has(&sb, qid) && !stream_has(&sb, "queue.") && !stream_has(&sb, ta),
              "B saw: %s", sb.buf);
    stream_close(&sa);
    stream_close(&sb);
    free(qid);
    free(a);
    free(b);
    free(ta);
    free(tb);
}

/* A deployment's creation, its targets' progress (the agent's heartbeat hands its target
 * out: pending -> fetching) and its cancellation reach its tenant's stream as deployment.*
 * events naming it, and nothing of them another tenant's. */
Test(console, deployment_events_reach_the_tenant)
{
    char *ta = th_tenant(&srv, op, "evd-a", "professional");
    char *tb = th_tenant(&srv, op, "evd-b", "professional");
    char *a = th_tenant_token(&srv, op, ta, "admin");
    char *b = th_tenant_token(&srv, op, tb, "viewer");
    char *cred = th_agent_register_labelled(&srv, a, "live-1", "{\"role\":\"live\"}");
    size_t len = 0;
    char *tgz = th_make_archive("evd", &len);
    struct th_resp r;
    th_http_bytes(&srv, "POST", "/api/v1/packages?name=dtool&version=1.0.0", a, tgz, len,
                  "application/gzip", &r);
    cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    free(tgz);
    struct stream sa, sb;
    stream_open(&sa, a);
    stream_open(&sb, b);
    stream_ready(&sa);
    stream_ready(&sb);

    th_http(&srv, "POST", "/api/v1/packages/deployments", a,
            "{\"package\":\"dtool@1.0.0\",\"labels\":{\"role\":\"live\"},\"spread_ms\":0}", NULL,
            &r);
    cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body);
    char *did = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: deployment.created", 15000), "%s", sa.buf);
    cr_assert(stream_has(&sa, did));

    /* The agent's heartbeat hands its target out. */
    th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, cred,
            "{\"heartbeat\":{\"status\":\"idle\",\"slots\":1,\"free_slots\":1}}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, did), "the heartbeat's answer hands out no prefetch: %s", r.body);
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: deployment.progress", 15000), "%s", sa.buf);
    cr_assert(stream_wait(&sa, "\"fetching\": 1", 15000), "%s", sa.buf);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/packages/deployments/%s", did);
    th_http(&srv, "DELETE", path, a, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    cr_assert(stream_wait(&sa, "event: deployment.cancelled", 15000), "%s", sa.buf);

    cr_assert(!stream_has(&sb, did) && !stream_has(&sb, "deployment.") && !stream_has(&sb, ta),
              "B saw: %s", sb.buf);
    stream_close(&sa);
    stream_close(&sb);
    free(did);
    free(cred);
    free(a);
    free(b);
    free(ta);
    free(tb);
}
