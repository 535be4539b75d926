/* The agent protocol's version (proto/agent.h, docs/agent-protocol.md "Versions"): orchd
 * refuses every agent-protocol request of a version it does not speak with a clear
 * problem, and the real orch-agent, told so by a server, says it once and does not retry
 * fast. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "proto/agent.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "proto", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(proto, .init = setup, .fini = teardown, .timeout = 120);

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    buf_append((struct buf *)arg, data, size * n);
    return size * n;
}

/* method path with the protocol header set to version (NULL: no header). Returns the
 * status; *json the parsed body (caller json_decref()s). */
static long request(const char *method, const char *path, const char *token, const char *body,
                    const char *version, json_t **json)
{
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    char url[512], ca[128], auth[512], ver[64];
    snprintf(url, sizeof(url), "%s%s", srv.base, path);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (version) {
        snprintf(ver, sizeof(ver), "%s: %s", PROTO_AGENT_VERSION_HEADER, version);
        h = curl_slist_append(h, ver);
    }
    struct buf rb = BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode cc = curl_easy_perform(c);
    cr_assert_eq(cc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(cc));
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    *json = rb.len ? json_loadb(rb.data, rb.len, 0, NULL) : NULL;
    buf_free(&rb);
    return status;
}

/* The answer to a request of an unsupported version: 400, the stable type, a detail that
 * names both versions, and the versions the server speaks. */
static void assert_unsupported(long status, json_t *p, const char *asked, const char *what)
{
    cr_assert_eq(status, 400, "%s: %ld", what, status);
    cr_assert_str_eq(json_string_value(json_object_get(p, "type")),
                     "urn:orch:problem:unsupported-protocol", "%s", what);
    const char *detail = json_string_value(json_object_get(p, "detail"));
    cr_assert_not_null(detail, "%s", what);
    char want[64];
    snprintf(want, sizeof(want), "version %s", asked);
    if (strcmp(asked, "garbage") != 0)
        cr_assert(strstr(detail, want), "%s: %s", what, detail);
    cr_assert(strstr(detail, "speaks version 1"), "%s: %s", what, detail);
    json_t *list = json_object_get(p, "supported_versions");
    cr_assert_eq(json_array_size(list), 1, "%s", what);
    cr_assert_eq(json_integer_value(json_array_get(list, 0)), PROTO_AGENT_VERSION);
}

Test(proto, unsupported_version_refused_on_every_agent_route)
{
    char *cred = th_agent_register(&srv, admin, "p1");
    char id[ID_STR_LEN];
    id_uuid7_str(id);
    char started[128], logs[128], result[128], pkg[128];
    proto_agent_path(started, sizeof(started), PROTO_AGENT_PATH_STARTED, id);
    proto_agent_path(logs, sizeof(logs), PROTO_AGENT_PATH_LOGS, id);
    proto_agent_path(result, sizeof(result), PROTO_AGENT_PATH_RESULT, id);
    proto_agent_path(pkg, sizeof(pkg), PROTO_AGENT_PATH_PACKAGE, id);
    const struct {
        const char *method, *path, *body;
    } routes[] = {
        {"POST", PROTO_AGENT_PATH_SYNC, "{}"},
        {"POST", PROTO_AGENT_PATH_HEARTBEAT, "{}"},
        {"GET", PROTO_AGENT_PATH_ASSIGNMENTS, NULL},
        {"GET", PROTO_AGENT_PATH_SELF, NULL},
        {"POST", PROTO_AGENT_PATH_ROTATE, NULL},
        {"GET", pkg, NULL},
        {"POST", started, "{\"epoch\":1}"},
        {"POST", logs, "{}"},
        {"POST", result, "{}"},
        /* Enrolment too, before its token is even looked at. */
        {"POST", PROTO_AGENT_PATH_REGISTER, "{\"token\":\"orch_et_x\",\"name\":\"n\"}"},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        json_t *p = NULL;
        long st = request(routes[i].method, routes[i].path, cred, routes[i].body, "99", &p);
        assert_unsupported(st, p, "99", routes[i].path);
        json_decref(p);
    }
    /* Not a number at all: the same problem. */
    json_t *p = NULL;
    long st = request("POST", PROTO_AGENT_PATH_SYNC, cred, "{}", "garbage", &p);
    assert_unsupported(st, p, "garbage", "garbage");
    json_decref(p);
    cr_assert_geq(th_log_count(&srv, "op=agent.protocol"), 11);
    /* The credential still works: nothing was held against the agent. */
    st = request("POST", PROTO_AGENT_PATH_SYNC, cred, "{}", "1", &p);
    cr_assert_eq(st, 200, "%s", p ? json_dumps(p, 0) : "");
    json_decref(p);
    free(cred);
}

Test(proto, version_one_and_no_header_accepted)
{
    char *cred = th_agent_register(&srv, admin, "p2");
    json_t *p = NULL;
    cr_assert_eq(request("POST", PROTO_AGENT_PATH_SYNC, cred, "{}", "1", &p), 200);
    json_decref(p);
    /* An agent from before the header: version 1. */
    cr_assert_eq(request("POST", PROTO_AGENT_PATH_SYNC, cred, "{}", NULL, &p), 200);
    json_decref(p);
    /* Other routes do not look at it. */
    cr_assert_eq(request("GET", "/api/v1/jobs", admin, NULL, "99", &p), 200);
    json_decref(p);
    free(cred);
}

/* POST /api/v1/agent/sync with body: the answer, which must be 200 and decode through
 * proto/ (caller json_decref()s). */
static json_t *sync_decoded(const char *cred, const char *body)
{
    struct th_resp r;
    th_http(&srv, "POST", PROTO_AGENT_PATH_SYNC, cred, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    struct proto_sync_answer a;
    struct jsonv_error e;
    cr_assert_eq(proto_sync_answer_decode(j, &a, &e), 0, "%s %s: %s", e.field, e.detail, r.body);
    if (a.heartbeat) {
        struct proto_heartbeat_answer h;
        cr_assert_eq(proto_heartbeat_answer_decode(a.heartbeat, &h, &e), 0, "%s %s", e.field,
                     e.detail);
        proto_heartbeat_answer_clear(&h);
    }
    proto_sync_answer_clear(&a);
    return j;
}

/* The assignments orchd builds (proto_assignment_encode()) are what proto/ accepts, at the
 * bounds a job may be submitted with. */
Test(proto, assignments_orchd_builds_decode_through_proto)
{
    char *cred = th_agent_register(&srv, admin, "p3");
    json_t *ans = sync_decoded(cred, "{\"heartbeat\":{\"status\":\"idle\",\"slots\":2,"
                                     "\"free_slots\":2}}");
    json_decref(ans);

    /* A job at every submission bound proto/agent.h names. */
    json_t *job = json_object();
    char *command = malloc(PROTO_JOB_COMMAND_MAX + 1);
    memset(command, ':', PROTO_JOB_COMMAND_MAX);
    command[PROTO_JOB_COMMAND_MAX] = '\0';
    json_object_set_new(job, "command", json_string(command));
    free(command);
    json_t *args = json_array(), *env = json_object();
    for (int i = 0; i < PROTO_JOB_ARGS_MAX; i++)
        json_array_append_new(args, json_string("a"));
    for (int i = 0; i < PROTO_JOB_ENV_MAX; i++) {
        char k[16];
        snprintf(k, sizeof(k), "K%d", i);
        json_object_set_new(env, k, json_string("v"));
    }
    json_object_set_new(job, "args", args);
    json_object_set_new(job, "env", env);
    json_object_set_new(job, "params", json_pack("{s:i}", "n", 1));
    json_object_set_new(job, "timeout_ms", json_integer(PROTO_JOB_TIMEOUT_MAX_MS));
    char *id1 = th_job_submit(&srv, admin, job);
    char sha[65];
    char *pkg = th_package(&srv, admin, "proto-pkg", "proto", sha);
    char *id2 = th_job_submit(&srv, admin, json_pack("{s:s}", "package_id", pkg));

    int found = 0;
    for (int round = 0; round < 20 && found < 2; round++) {
        ans = sync_decoded(cred, "{\"assign\":true,\"wait\":10}");
        size_t i;
        json_t *doc;
        json_array_foreach(json_object_get(ans, "assignments"), i, doc)
        {
            struct proto_assignment a;
            struct jsonv_error e;
            cr_assert_eq(proto_assignment_decode(doc, &a, &e), 0, "%s %s", e.field, e.detail);
            /* Exactly the table's members, every one of them (null when it does not apply). */
            cr_assert_eq(
                jsonv_check(doc, proto_msg_assignment.fields, proto_msg_assignment.n, false, &e), 0,
                "%s %s", e.field, e.detail);
            cr_assert_eq(json_object_size(doc), proto_msg_assignment.n);
            if (strcmp(a.job_id, id1) == 0) {
                cr_assert_eq(json_array_size(a.args), PROTO_JOB_ARGS_MAX);
                cr_assert_eq(json_object_size(a.env), PROTO_JOB_ENV_MAX);
                cr_assert_eq(json_integer_value(json_object_get(a.params, "n")), 1);
                cr_assert_null(a.package_id);
                cr_assert_eq(a.package_size, -1);
                cr_assert_eq(a.timeout_ms, PROTO_JOB_TIMEOUT_MAX_MS);
            } else {
                cr_assert_str_eq(a.job_id, id2);
                cr_assert_str_eq(a.package_sha256, sha);
                cr_assert_str_eq(a.entrypoint, "run.sh");
                cr_assert_gt(a.package_size, 0);
            }
            found++;
        }
        json_decref(ans);
    }
    cr_assert_eq(found, 2, "both jobs were assigned to the only agent");
    free(id1);
    free(id2);
    free(pkg);
    free(cred);
}

/* A sync held until its wait ran out answers with what the exchange recorded (its
 * heartbeat's answer, its reports' outcomes) as well as the empty assignments: the held
 * request keeps that answer as text (gateway_answer()), and it must come back whole. */
Test(proto, a_held_sync_answers_its_heartbeat_and_reports_when_its_wait_ends)
{
    char *cred = th_agent_register(&srv, admin, "p4");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *ans = sync_decoded(cred, "{\"heartbeat\":{\"status\":\"idle\",\"slots\":2,"
                                     "\"free_slots\":2},\"assign\":true,\"wait\":1}");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert_geq(ms, 900, "answered after %ld ms: it was not held", ms);
    cr_assert(json_is_object(json_object_get(ans, "heartbeat")), "no heartbeat answer");
    cr_assert_geq(json_integer_value(
                      json_object_get(json_object_get(ans, "heartbeat"), "heartbeat_interval_s")),
                  1);
    cr_assert(json_is_array(json_object_get(ans, "reports")), "no reports");
    cr_assert_eq(json_array_size(json_object_get(ans, "assignments")), 0);
    json_decref(ans);
    free(cred);
}

/* --- a server that speaks only version 7, for the real agent ------------------------------ */

struct fake {
    int fd, port;
    SSL_CTX *ctx;
    atomic_int requests;
    atomic_bool stop;
    pthread_t thread;
};

static const char refusal[] =
    "{\"type\":\"urn:orch:problem:unsupported-protocol\",\"title\":\"Unsupported agent protocol "
    "version\",\"status\":400,\"detail\":\"this agent speaks agent protocol version 1; this "
    "server speaks version 7\",\"supported_versions\":[7]}";

/* Read one request's head (and ignore its body), answer the refusal, close. */
static void fake_serve(struct fake *f, int cfd)
{
    SSL *ssl = SSL_new(f->ctx);
    SSL_set_fd(ssl, cfd);
    if (SSL_accept(ssl) == 1) {
        char buf[16384];
        size_t len = 0;
        while (len < sizeof(buf) - 1) {
            int n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            if (strstr(buf, "\r\n\r\n"))
                break;
        }
        if (strstr(buf, "\r\n\r\n")) {
            atomic_fetch_add(&f->requests, 1);
            char head[256];
            int n = snprintf(head, sizeof(head),
                             "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json"
                             "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                             sizeof(refusal) - 1);
            SSL_write(ssl, head, n);
            SSL_write(ssl, refusal, (int)sizeof(refusal) - 1);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(cfd);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        int cfd = accept(f->fd, NULL, NULL);
        if (cfd < 0)
            continue;
        if (atomic_load(&f->stop)) {
            close(cfd);
            break;
        }
        struct timeval tv = {.tv_sec = 5};
        setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        fake_serve(f, cfd);
    }
    return NULL;
}

static void fake_start(struct fake *f)
{
    char cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/tls/server.pem", srv.dir);
    snprintf(key, sizeof(key), "%s/tls/server.key", srv.dir);
    f->ctx = SSL_CTX_new(TLS_server_method());
    cr_assert_not_null(f->ctx);
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(f->ctx, cert), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(f->ctx, key, SSL_FILETYPE_PEM), 1);
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(f->fd, 16), 0);
    socklen_t alen = sizeof(a);
    getsockname(f->fd, (struct sockaddr *)&a, &alen);
    f->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, true);
    shutdown(f->fd, SHUT_RDWR);
    /* accept() may not return on shutdown() of a listener: one connection wakes it. */
    int w = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)f->port)};
    connect(w, (struct sockaddr *)&a, sizeof(a));
    close(w);
    pthread_join(f->thread, NULL);
    close(f->fd);
    SSL_CTX_free(f->ctx);
}

/* Lines of path that contain needle. */
static int file_count(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "re");
    char line[4096];
    int n = 0;
    while (fp && fgets(line, sizeof(line), fp))
        n += strstr(line, needle) != NULL;
    if (fp)
        fclose(fp);
    return n;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(proto, agent_told_unsupported_says_so_once_and_backs_off)
{
    char dir[64], agent_id[ID_STR_LEN];
    snprintf(dir, sizeof(dir), "/tmp/orch-proto-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    th_agent_enrol(&srv, admin, dir, "old", NULL, "1", agent_id);

    /* The enrolled agent now finds a server that speaks only version 7. */
    struct fake f = {0};
    fake_start(&f);
    char path[128], url[64];
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    json_t *st = json_load_file(path, 0, NULL);
    cr_assert_not_null(st);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", f.port);
    json_object_set_new(st, "server_url", json_string(url));
    cr_assert_eq(json_dump_file(st, path, JSON_COMPACT), 0);
    chmod(path, 0600);
    json_decref(st);

    pid_t pid = th_agent_start(dir);
    char log[128];
    snprintf(log, sizeof(log), "%s/agent.log", dir);
    const char *line = "error=unsupported-protocol agent_protocol=1 server_protocols=7";
    int64_t deadline = now_ms() + 30000;
    while (file_count(log, line) == 0 && now_ms() < deadline)
        usleep(50 * 1000);
    cr_assert_eq(file_count(log, line), 1, "the agent names both versions once");
    int seen = atomic_load(&f.requests);
    /* A fast retry (the plain backoff starts at 1 s) would ask again within 3 s. */
    int64_t until = now_ms() + 3000;
    while (now_ms() < until && atomic_load(&f.requests) == seen)
        usleep(50 * 1000);
    cr_assert_eq(atomic_load(&f.requests), seen, "no fast retry after the refusal");
    cr_assert_eq(file_count(log, line), 1);
    th_agent_stop(pid, SIGTERM);
    fake_stop(&f);
    th_rm_rf(dir);
}
