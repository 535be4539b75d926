/* test-transport.c: the WinHTTP transport (agent/transport-winhttp.c) against the HTTPS test
 * servers of tests/win/tls-server.py, run by tests/win/run-transport.py, which hands over
 * their URLs and the pinned CA in ORCH_TEST_URL, ORCH_TEST_OTHER_URL (a certificate from
 * another CA), ORCH_TEST_WRONGNAME_URL (the pinned CA, another name), ORCH_TEST_REFUSED_URL
 * (nothing listens) and ORCH_TEST_CA. The servers record what they read: GET /_log. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <windows.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/transport.h"
#include "common/buf.h"
#include "proto/agent.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    WT_ASSERT(v && v[0], "%s is not set: run this through tests/win/run-transport.py", name);
    return v;
}

static struct transport *open_t(const char *url, const char *ca, const char *cred,
                                int64_t timeout_ms)
{
    struct transport_options o = {
        .server_url = url, .ca_file = ca, .credential = cred, .timeout_ms = timeout_ms};
    struct transport *t = NULL;
    int r = transport_new(&o, &t);
    WT_ASSERT(r == 0 && t, "transport_new(%s): %d", url, r);
    return t;
}

static int64_t now_ms(void)
{
    return (int64_t)GetTickCount64();
}

/* What server `name` recorded (a JSON array; caller json_decref()s). */
static json_t *server_log(const char *name)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), NULL, 10000);
    char path[64];
    snprintf(path, sizeof(path), "/_log?server=%s", name);
    struct transport_reply r;
    int rc = transport_request(t, "GET", path, NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == 0 && r.status == 200, "GET %s: %d %ld %s", path, rc, r.status, r.error);
    json_t *reqs = json_incref(json_object_get(r.body, "requests"));
    json_decref(r.body);
    WT_ASSERT(json_is_array(reqs), "no requests in the log");
    return reqs;
}

/* How many requests server `name` read for path, and of those how many carried `header`. */
static void count_seen(const char *name, const char *path, const char *header, size_t *n,
                       size_t *with)
{
    json_t *reqs = server_log(name);
    size_t i;
    json_t *q;
    *n = *with = 0;
    json_array_foreach(reqs, i, q)
    {
        if (strcmp(json_string_value(json_object_get(q, "path")), path) != 0)
            continue;
        (*n)++;
        if (header && json_object_get(json_object_get(q, "headers"), header))
            (*with)++;
    }
    json_decref(reqs);
}

WTEST(transport, json_round_trip_sends_the_bearer_and_the_protocol)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_one", 10000);
    json_t *body = json_pack("{s:s, s:i}", "name", "w1", "n", 42);
    struct transport_reply r;
    int rc = transport_request(t, "POST", "/echo", body, &r);
    json_decref(body);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    json_t *h = json_object_get(r.body, "headers");
    char version[16];
    snprintf(version, sizeof(version), "%d", PROTO_AGENT_VERSION);
    const char *auth = json_string_value(json_object_get(h, "authorization"));
    WT_ASSERT(auth && strcmp(auth, "Bearer orch_ag_one") == 0, "authorization %s", auth);
    const char *proto = json_string_value(json_object_get(h, "orch-protocol"));
    WT_ASSERT(proto && strcmp(proto, version) == 0, "%s: %s", PROTO_AGENT_VERSION_HEADER, proto);
    const char *accept = json_string_value(json_object_get(h, "accept"));
    WT_ASSERT(accept && strcmp(accept, "application/json") == 0, "accept %s", accept);
    const char *ctype = json_string_value(json_object_get(h, "content-type"));
    WT_ASSERT(ctype && strcmp(ctype, "application/json") == 0, "content-type %s", ctype);
    WT_ASSERT(strcmp(json_string_value(json_object_get(r.body, "method")), "POST") == 0, "method");
    json_t *seen = json_object_get(r.body, "body");
    WT_ASSERT(json_integer_value(json_object_get(seen, "n")) == 42, "the body came back changed");
    json_decref(r.body);

    /* After a rotation the new credential goes out. */
    WT_ASSERT(transport_set_credential(t, "orch_ag_two") == 0, "set_credential");
    rc = transport_request(t, "GET", "/echo", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    h = json_object_get(r.body, "headers");
    auth = json_string_value(json_object_get(h, "authorization"));
    WT_ASSERT(auth && strcmp(auth, "Bearer orch_ag_two") == 0, "authorization %s", auth);
    WT_ASSERT(!json_object_get(h, "content-type"), "a GET without a body has no content type");
    json_decref(r.body);
    transport_free(t);
}

WTEST(transport, pinned_ca_is_accepted)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), NULL, 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/small", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(json_is_true(json_object_get(r.body, "ok")), "body");
    json_decref(r.body);
    transport_free(t);
}

WTEST(transport, another_ca_is_refused_before_the_credential_or_body_goes_out)
{
    struct transport *t =
        open_t(env("ORCH_TEST_OTHER_URL"), env("ORCH_TEST_CA"), "orch_ag_secret", 10000);
    json_t *body = json_pack("{s:s}", "token", "enrol-secret");
    struct transport_reply r;
    int rc = transport_request(t, "POST", "/echo", body, &r);
    json_decref(body);
    transport_free(t);
    WT_ASSERT(rc == -EPROTO, "rc %d status %ld: %s", rc, r.status, r.error);
    WT_ASSERT(strstr(r.error, "server certificate not signed by the pinned CA"), "%s", r.error);
    WT_ASSERT(strstr(r.error, env("ORCH_TEST_CA")), "the message names the CA file: %s", r.error);
    fprintf(stdout, "# %s\n", r.error);

    size_t n, with;
    count_seen("other", "/echo", "authorization", &n, &with);
    WT_ASSERT(with == 0, "the server saw the credential (%zu of %zu requests)", with, n);
    json_t *reqs = server_log("other");
    size_t i;
    json_t *q;
    json_array_foreach(reqs, i, q)
    {
        WT_ASSERT(json_is_null(json_object_get(q, "body")), "the server saw a body");
    }
    json_decref(reqs);
}

WTEST(transport, the_system_store_refuses_an_unknown_ca)
{
    /* By address, not "localhost": wine pools connections process-wide by host name and port,
     * whatever the security flags they were opened with, so a pinned transport's connection
     * to localhost would be taken up without a check (the agent uses one CA setting). */
    char url[128];
    snprintf(url, sizeof(url), "https://127.0.0.1%s", strrchr(env("ORCH_TEST_URL"), ':'));
    struct transport *t = open_t(url, NULL, "orch_ag_secret", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/echo?system-store", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -EPROTO, "rc %d status %ld: %s", rc, r.status, r.error);
    fprintf(stdout, "# %s\n", r.error);
    size_t n, with;
    count_seen("good", "/echo?system-store", NULL, &n, &with);
    WT_ASSERT(n == 0, "the server read %zu requests", n);
}

WTEST(transport, a_wrong_host_name_is_refused)
{
    struct transport *t =
        open_t(env("ORCH_TEST_WRONGNAME_URL"), env("ORCH_TEST_CA"), "orch_ag_secret", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/echo", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -EPROTO, "rc %d status %ld: %s", rc, r.status, r.error);
    fprintf(stdout, "# %s\n", r.error);
    size_t n, with;
    count_seen("wrongname", "/echo", "authorization", &n, &with);
    WT_ASSERT(with == 0, "the server saw the credential (%zu of %zu requests)", with, n);
}

WTEST(transport, an_address_is_checked_against_the_certificate)
{
    /* https://127.0.0.1: the pinned CA's certificate lists IP:127.0.0.1 */
    struct transport *t =
        open_t(env("ORCH_TEST_ADDR_URL"), env("ORCH_TEST_CA"), "orch_ag_addr", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/echo", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    const char *auth =
        json_string_value(json_object_get(json_object_get(r.body, "headers"), "authorization"));
    WT_ASSERT(auth && strcmp(auth, "Bearer orch_ag_addr") == 0, "authorization %s", auth);
    json_decref(r.body);

    /* The same CA, a certificate without that address: refused, nothing sent. */
    t = open_t(env("ORCH_TEST_WRONGADDR_URL"), env("ORCH_TEST_CA"), "orch_ag_secret", 10000);
    rc = transport_request(t, "GET", "/echo?by-address", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -EPROTO, "rc %d status %ld: %s", rc, r.status, r.error);
    WT_ASSERT(strstr(r.error, "does not name 127.0.0.1"), "%s", r.error);
    size_t n, with;
    count_seen("wrongname", "/echo?by-address", "authorization", &n, &with);
    WT_ASSERT(with == 0, "the server saw the credential (%zu of %zu requests)", with, n);
}

WTEST(transport, a_problem_gives_its_detail)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "POST", "/problem", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 422, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(strcmp(r.error, "the name is taken") == 0, "error: %s", r.error);
    WT_ASSERT(r.retry_after_s == 0, "retry_after %lld", (long long)r.retry_after_s);
    json_decref(r.body);
    transport_free(t);
}

WTEST(transport, retry_after_in_seconds_and_as_a_date)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/retry", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 503, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(r.retry_after_s == 7, "retry_after %lld", (long long)r.retry_after_s);
    WT_ASSERT(strcmp(r.error, "busy, come back later") == 0, "error: %s", r.error);
    json_decref(r.body);
    rc = transport_request(t, "GET", "/retry-date", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 429, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(r.retry_after_s >= 25 && r.retry_after_s <= 31, "retry_after %lld",
              (long long)r.retry_after_s);
    json_decref(r.body);
    transport_free(t);
}

WTEST(transport, get_bytes_within_and_over_the_limit)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 10000);
    struct buf out;
    struct transport_reply r;
    int rc = transport_get_bytes(t, "/bytes/40000", 65536, &out, &r);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(out.len == 40000, "len %zu", out.len);
    for (size_t i = 0; i < out.len; i++)
        WT_ASSERT((unsigned char)out.data[i] == i % 251, "byte %zu", i);
    buf_free(&out);

    rc = transport_get_bytes(t, "/bytes/100000", 65536, &out, &r);
    WT_ASSERT(rc == -EMSGSIZE, "rc %d: %s", rc, r.error);
    WT_ASSERT(out.len == 0 && !out.data, "out is empty");

    rc = transport_get_bytes(t, "/problem", 65536, &out, &r);
    WT_ASSERT(rc == 0 && r.status == 422, "%d %ld %s", rc, r.status, r.error);
    WT_ASSERT(strcmp(r.error, "the name is taken") == 0, "error: %s", r.error);
    WT_ASSERT(out.len == 0, "out is empty on an error status");

    /* The transport still works after a refused answer. */
    rc = transport_get_bytes(t, "/bytes/10", 65536, &out, &r);
    WT_ASSERT(rc == 0 && r.status == 200 && out.len == 10, "%d %ld %zu", rc, r.status, out.len);
    buf_free(&out);
    size_t n, with;
    count_seen("good", "/bytes/10", NULL, &n, &with);
    json_t *reqs = server_log("good");
    size_t i;
    json_t *q;
    json_array_foreach(reqs, i, q)
    {
        if (strcmp(json_string_value(json_object_get(q, "path")), "/bytes/10") == 0) {
            const char *a =
                json_string_value(json_object_get(json_object_get(q, "headers"), "accept"));
            WT_ASSERT(a && strcmp(a, "application/octet-stream") == 0, "accept %s", a);
        }
    }
    json_decref(reqs);
    transport_free(t);
}

WTEST(transport, connection_refused)
{
    struct transport *t = open_t(env("ORCH_TEST_REFUSED_URL"), env("ORCH_TEST_CA"), NULL, 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/echo", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -ECONNREFUSED, "rc %d status %ld: %s", rc, r.status, r.error);
    WT_ASSERT(r.error[0], "no reason given");
    fprintf(stdout, "# %s\n", r.error);
}

WTEST(transport, an_unreadable_ca_file_fails_every_request)
{
    struct transport *t =
        open_t(env("ORCH_TEST_URL"), "Z:\\no\\such\\dir\\ca.pem", "orch_ag_x", 10000);
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/echo?no-ca", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -EPROTO, "rc %d status %ld: %s", rc, r.status, r.error);
    WT_ASSERT(strstr(r.error, "cannot read a CA certificate"), "%s", r.error);
    size_t n, with;
    count_seen("good", "/echo?no-ca", NULL, &n, &with);
    WT_ASSERT(n == 0, "the server read %zu requests", n);
}

WTEST(transport, only_https_urls)
{
    struct transport_options o = {.server_url = "http://localhost:1"};
    struct transport *t = NULL;
    WT_ASSERT(transport_new(&o, &t) == -EINVAL, "http:// accepted");
    o.server_url = "https://";
    WT_ASSERT(transport_new(&o, &t) == -EINVAL, "no host accepted");
}

WTEST(transport, a_proxy_is_skipped_for_no_proxy_hosts)
{
    /* The proxy is the refused port: a request through it fails, one around it works. */
    const char *refused = env("ORCH_TEST_REFUSED_URL") + strlen("https://");
    char proxy[128];
    snprintf(proxy, sizeof(proxy), "http://%s", refused);
    struct transport_options o = {.server_url = env("ORCH_TEST_URL"),
                                  .ca_file = env("ORCH_TEST_CA"),
                                  .timeout_ms = 10000,
                                  .proxy = proxy,
                                  .no_proxy = "example.com, localhost"};
    struct transport *t = NULL;
    WT_ASSERT(transport_new(&o, &t) == 0, "transport_new");
    struct transport_reply r;
    int rc = transport_request(t, "GET", "/small", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    json_decref(r.body);

    o.no_proxy = "example.com";
    WT_ASSERT(transport_new(&o, &t) == 0, "transport_new");
    rc = transport_request(t, "GET", "/small", NULL, &r);
    transport_free(t);
    WT_ASSERT(rc == -ECONNREFUSED, "through the (closed) proxy: rc %d status %ld %s", rc, r.status,
              r.error);
}

struct hang {
    struct transport *t;
    volatile LONG give_up;
    int rc;
    struct transport_reply r;
    int64_t ended_ms;
};

static bool hang_abort(void *arg)
{
    struct hang *h = arg;
    return h->give_up != 0;
}

static DWORD WINAPI hang_main(void *arg)
{
    struct hang *h = arg;
    h->rc = transport_request_ex(h->t, "GET", "/hang", NULL, 60000, hang_abort, h, &h->r);
    h->ended_ms = now_ms();
    return 0;
}

WTEST(transport, wakeup_gives_up_a_request_in_flight)
{
    size_t before, with;
    count_seen("good", "/hang", NULL, &before, &with);
    struct hang h = {.t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 60000)};
    /* A wakeup whose abort says no changes nothing. */
    transport_wakeup(h.t);
    HANDLE th = CreateThread(NULL, 0, hang_main, &h, 0, NULL);
    WT_ASSERT(th, "CreateThread");
    /* Wait (bounded) until the server holds the request, so that it is in flight. */
    size_t n = before;
    for (int64_t end = now_ms() + 20000; n == before && now_ms() < end;)
        count_seen("good", "/hang", NULL, &n, &with);
    WT_ASSERT(n > before, "the request never reached the server");
    WT_ASSERT(WaitForSingleObject(th, 0) == WAIT_TIMEOUT, "the request ended early: %d %s", h.rc,
              h.r.error);
    InterlockedExchange(&h.give_up, 1);
    int64_t woke = now_ms();
    transport_wakeup(h.t);
    DWORD w = WaitForSingleObject(th, 10000);
    WT_ASSERT(w == WAIT_OBJECT_0, "the request was not given up within 10 s");
    CloseHandle(th);
    WT_ASSERT(h.rc == -EINTR, "rc %d: %s", h.rc, h.r.error);
    WT_ASSERT(h.ended_ms - woke < 2000, "given up %lld ms after the wakeup",
              (long long)(h.ended_ms - woke));
    fprintf(stdout, "# given up %lld ms after the wakeup\n", (long long)(h.ended_ms - woke));

    /* The transport works afterwards. */
    struct transport_reply r;
    int rc = transport_request(h.t, "GET", "/small", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    json_decref(r.body);
    transport_free(h.t);
}

WTEST(transport, a_hanging_server_times_out)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 1500);
    struct transport_reply r;
    int64_t t0 = now_ms();
    int rc = transport_request(t, "GET", "/hang", NULL, &r);
    int64_t took = now_ms() - t0;
    transport_free(t);
    WT_ASSERT(rc == -ETIMEDOUT, "rc %d: %s", rc, r.error);
    WT_ASSERT(took >= 1400 && took < 6000, "took %lld ms", (long long)took);
}

WTEST(transport, sequential_requests_keep_one_connection)
{
    struct transport *t = open_t(env("ORCH_TEST_URL"), env("ORCH_TEST_CA"), "orch_ag_x", 10000);
    enum { N = 200 };
    struct transport_reply r;
    /* The first request opens the connection (and, on wine, checks it). */
    int rc = transport_request(t, "GET", "/small?warm", NULL, &r);
    WT_ASSERT(rc == 0 && r.status == 200, "%d %ld %s", rc, r.status, r.error);
    json_decref(r.body);
    int64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        rc = transport_request(t, "GET", "/small?keepalive", NULL, &r);
        WT_ASSERT(rc == 0 && r.status == 200, "request %d: %d %ld %s", i, rc, r.status, r.error);
        json_decref(r.body);
    }
    int64_t ms = now_ms() - t0;
    fprintf(stdout, "# keep-alive: %d sequential GETs in %lld ms, %.0f requests/s\n", N,
            (long long)ms, ms > 0 ? N * 1000.0 / (double)ms : 0.0);
    json_t *body = json_pack("{s:s}", "k", "v");
    t0 = now_ms();
    for (int i = 0; i < N; i++) {
        rc = transport_request(t, "POST", "/small?keepalive", body, &r);
        WT_ASSERT(rc == 0 && r.status == 200, "request %d: %d %ld %s", i, rc, r.status, r.error);
        json_decref(r.body);
    }
    ms = now_ms() - t0;
    json_decref(body);
    transport_free(t);
    fprintf(stdout, "# keep-alive: %d sequential POSTs in %lld ms, %.0f requests/s\n", N,
            (long long)ms, ms > 0 ? N * 1000.0 / (double)ms : 0.0);
    json_t *reqs = server_log("good");
    size_t i, n = 0;
    json_t *q;
    json_int_t conn = -1;
    json_array_foreach(reqs, i, q)
    {
        if (strcmp(json_string_value(json_object_get(q, "path")), "/small?keepalive") != 0)
            continue;
        json_int_t c = json_integer_value(json_object_get(q, "conn"));
        if (conn < 0)
            conn = c;
        if (c == conn)
            n++;
    }
    json_decref(reqs);
    WT_ASSERT(n >= 2 * N, "only %zu of %d requests on one connection", n, 2 * N);
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
