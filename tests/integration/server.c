/* server.c: see server.h. */
#include "tests/integration/server.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/crypto.h"
#include "common/clock.h"
#include "tests/integration/harness.h"

extern char **environ;

static void run_ok(const char *const *argv, const char *const *env, struct th_run *r)
{
    th_run(r, argv, env, 60000);
    if (r->status != 0)
        cr_assert_fail("%s %s failed (%d): %s", argv[0], argv[1], r->status, th_str(&r->err));
}

static void spawn(struct th_server *s, const char *const *env, const char *logname);

/* The test's own thread: an assertion may fail only there (Criterion's abort longjmps to
 * it, and from any other thread that corrupts the stack). */
static pthread_t test_thread;
static bool test_thread_known;

void th_server_start(struct th_server *s, const char *const *extra_env)
{
    test_thread = pthread_self();
    test_thread_known = true;
    memset(s, 0, sizeof(*s));
    th_db_create_migrated(s->db, sizeof(s->db));
    snprintf(s->dir, sizeof(s->dir), "/tmp/orch-test-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir));

    char *app_url = th_pg_url("orch_app", s->db);
    char *system_url = th_pg_url("orch_system", s->db);
    char env_db[512], env_sys[512], env_keys[128], env_cert[128], env_key[128], env_amqp[512];
    snprintf(env_db, sizeof(env_db), "ORCHD_DB_URL=%s", app_url);
    snprintf(env_sys, sizeof(env_sys), "ORCHD_DB_SYSTEM_URL=%s", system_url);
    free(app_url);
    free(system_url);
    snprintf(env_keys, sizeof(env_keys), "ORCHD_AUTH_KEY_DIR=%s/keys", s->dir);
    snprintf(env_cert, sizeof(env_cert), "ORCHD_HTTP_CERT_FILE=%s/tls/server.pem", s->dir);
    snprintf(env_key, sizeof(env_key), "ORCHD_HTTP_KEY_FILE=%s/tls/server.key", s->dir);
    snprintf(env_amqp, sizeof(env_amqp), "ORCHD_AMQP_URL=%s", th_env("ORCH_AMQP_URL"));
    const char *env[16] = {env_db,
                           env_sys,
                           env_keys,
                           env_cert,
                           env_key,
                           env_amqp,
                           "ORCHD_HTTP_PORT=0",
                           "ORCHD_HTTP_THREADS=2"};
    size_t n = 8;
    for (size_t i = 0; extra_env && extra_env[i] && n < 15; i++)
        env[n++] = extra_env[i];
    env[n] = NULL;
    for (size_t i = 0; i < n && i < 15; i++)
        snprintf(s->env[i], sizeof(s->env[i]), "%s", env[i]);
    s->nenv = n < 15 ? (int)n : 15;

    const char *orchd = th_env("ORCH_TEST_ORCHD");
    struct th_run r;
    char tls[96];
    snprintf(tls, sizeof(tls), "%s/tls", s->dir);
    const char *gen_certs[] = {th_env("ORCH_TEST_GEN_CERTS"), tls, NULL};
    run_ok(gen_certs, NULL, &r);
    th_run_free(&r);
    const char *gen_key[] = {orchd, "admin", "gen-key", NULL};
    run_ok(gen_key, env, &r);
    th_run_free(&r);
    const char *create[] = {orchd, "admin", "create-token", "test-operator", NULL};
    run_ok(create, env, &r);
    snprintf(s->operator_token, sizeof(s->operator_token), "%.*s", 64, th_str(&r.out));
    th_run_free(&r);

    spawn(s, env, "orchd.log");
}

/* Start `orchd serve` with env, its stderr to dir/logname, and wait for its ready line. */
static void spawn(struct th_server *s, const char *const *env, const char *logname)
{
    const char *orchd = th_env("ORCH_TEST_ORCHD");
    char log[128];
    snprintf(log, sizeof(log), "%s/%s", s->dir, logname);
    snprintf(s->log, sizeof(s->log), "%s", log);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        for (size_t i = 0; env[i]; i++)
            putenv((char *)env[i]);
        execl(orchd, orchd, "serve", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (s->port == 0) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            cr_assert_fail("orchd serve exited during start-up; see %s", log);
        }
        cr_assert(clock_mono_ns() < deadline, "orchd did not get ready in 30 s; see %s", log);
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, "state=ready");
            const char *port = p ? strstr(p, " port=") : NULL;
            if (port)
                s->port = (int)strtol(port + 6, NULL, 10);
        }
        if (f)
            fclose(f);
        if (s->port == 0)
            usleep(20000); /* polling the log for the condition, bounded above */
    }
    snprintf(s->base, sizeof(s->base), "https://127.0.0.1:%d", s->port);
}

static void server_env(const struct th_server *s, char bufs[6][512], const char **env)
{
    char *app_url = th_pg_url("orch_app", s->db);
    char *system_url = th_pg_url("orch_system", s->db);
    snprintf(bufs[0], 512, "ORCHD_DB_URL=%s", app_url);
    snprintf(bufs[5], 512, "ORCHD_DB_SYSTEM_URL=%s", system_url);
    free(app_url);
    free(system_url);
    snprintf(bufs[1], 512, "ORCHD_AUTH_KEY_DIR=%s/keys", s->dir);
    snprintf(bufs[2], 512, "ORCHD_HTTP_CERT_FILE=%s/tls/server.pem", s->dir);
    snprintf(bufs[3], 512, "ORCHD_HTTP_KEY_FILE=%s/tls/server.key", s->dir);
    snprintf(bufs[4], 512, "ORCHD_AMQP_URL=%s", th_env("ORCH_AMQP_URL"));
    for (int i = 0; i < 6; i++)
        env[i] = bufs[i];
    env[6] = "ORCHD_HTTP_PORT=0";
    env[7] = "ORCHD_HTTP_THREADS=2";
    /* A name of its own per peer: the tests of a suite run at once on one RabbitMQ, and a
     * node's wake-up queue (orch.gw.<name>) is exclusive to one connection. */
    static char name[64];
    static int peers;
    snprintf(name, sizeof(name), "ORCHD_NODE_NAME=peer-%d-%d", (int)getpid(), ++peers);
    env[8] = name;
    env[9] = NULL;
}

void th_server_start_peer(struct th_server *peer, const struct th_server *s)
{
    th_server_start_peer_env(peer, s, NULL);
}

/* The peers started and not stopped yet. A failed assertion leaves its test before
 * th_server_stop_peer(): th_server_stop() kills them, or their connections would hold
 * the test's database open and its drop would wait for ever. */
static pid_t live_peers[16];

static void peer_track(pid_t pid)
{
    for (size_t i = 0; i < ELEMENTSOF(live_peers); i++)
        if (live_peers[i] == 0) {
            live_peers[i] = pid;
            return;
        }
    cr_assert_fail("more than %zu peers at once", ELEMENTSOF(live_peers));
}

static void peer_untrack(pid_t pid)
{
    for (size_t i = 0; i < ELEMENTSOF(live_peers); i++)
        if (pid > 0 && live_peers[i] == pid)
            live_peers[i] = 0;
}

/* Kill the peers still running. One a test killed and reaped itself is no child of ours
 * any more (waitpid fails): its pid is left alone, whoever has it now. */
static void peers_kill(void)
{
    for (size_t i = 0; i < ELEMENTSOF(live_peers); i++) {
        pid_t pid = live_peers[i];
        live_peers[i] = 0;
        if (pid <= 0 || waitpid(pid, NULL, WNOHANG) != 0)
            continue;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

void th_server_start_peer_env(struct th_server *peer, const struct th_server *s,
                              const char *const *extra_env)
{
    *peer = *s;
    peer->port = 0;
    peer->pid = 0;
    char bufs[6][512];
    const char *env[16];
    server_env(s, bufs, env);
    size_t n = 9;
    for (size_t i = 0; extra_env && extra_env[i] && n < 15; i++)
        env[n++] = extra_env[i];
    env[n] = NULL;
    /* A log of its own per peer: tests count each node's lines. */
    static int peers;
    char log[32];
    snprintf(log, sizeof(log), "orchd-peer-%d.log", ++peers);
    spawn(peer, env, log);
    peer_track(peer->pid);
}

static void stop_process(struct th_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int st = 0;
    uint64_t deadline = clock_mono_ns() + 20ull * 1000000000ull;
    pid_t w;
    while ((w = waitpid(s->pid, &st, WNOHANG)) == 0 && clock_mono_ns() < deadline)
        usleep(10000);
    if (w == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        cr_assert_fail("orchd did not stop within 20 s of SIGTERM");
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        /* Why: the end of its log, for whoever reads the test's output. */
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "tail -n 40 '%s/orchd.log' >&2", s->dir);
        if (system(cmd) != 0)
            cr_log_warn("no orchd.log in %s", s->dir);
    }
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "orchd exited with status %d", st);
    s->pid = 0;
}

void th_server_restart(struct th_server *s, int sig)
{
    kill(s->pid, sig);
    int st;
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    int port = s->port;
    const char *env[18];
    int n = 0;
    for (int i = 0; i < s->nenv; i++)
        env[n++] = s->env[i];
    char fixed[64];
    snprintf(fixed, sizeof(fixed), "ORCHD_HTTP_PORT=%d", port);
    env[n++] = fixed; /* after the original's port=0: putenv lets the later one win */
    env[n] = NULL;
    s->port = 0;
    spawn(s, env, "orchd-restarted.log");
    cr_assert_eq(s->port, port, "orchd came back on another port");
}

void th_server_stop_peer(struct th_server *peer)
{
    peer_untrack(peer->pid);
    stop_process(peer);
}

void th_server_stop(struct th_server *s)
{
    th_resp_free_all();
    peers_kill();
    stop_process(s);
    if (s->db[0])
        th_db_drop(s->db);
    if (s->dir[0]) {
        th_rm_rf(s->dir);
    }
}

/* The responses not freed yet, each with what it owns. Some tests call th_http() from
 * threads of their own: live_lock guards the list. */
struct th_live {
    json_t *json;
    char *body, *headers, *content_type;
    struct th_live *prev, *next;
};
static struct th_live *live_list;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

/* live_lock held. */
static void live_unlink(struct th_live *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        live_list = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

void th_resp_free_all(void)
{
    pthread_mutex_lock(&live_lock);
    while (live_list) {
        struct th_live *l = live_list;
        live_unlink(l);
        json_decref(l->json);
        free(l->body);
        free(l->headers);
        free(l->content_type);
        free(l);
    }
    pthread_mutex_unlock(&live_lock);
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    buf_append(arg, data, size * n);
    return size * n;
}

void th_http(struct th_server *s, const char *method, const char *path, const char *token,
             const char *body, const char *ctype, struct th_resp *r)
{
    th_http_bytes(s, method, path, token, body, body ? strlen(body) : 0, ctype, r);
}

/* th_http_bytes() with one more request header ("Name: value"; NULL: none). */
static void http_do(struct th_server *s, const char *method, const char *path, const char *token,
                    const char *body, size_t len, const char *ctype, const char *header,
                    struct th_resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    char url[2048], ca[128], auth[8192 + 64], ct[128];
    snprintf(url, sizeof(url), "%s%s", s->base, path);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", s->dir);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (body) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype ? ctype : "application/json");
        h = curl_slist_append(h, ct);
    }
    if (header)
        h = curl_slist_append(h, header);
    struct buf rb = BUF_INIT, hb = BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    char *ctp = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctp);
    r->content_type = strdup(ctp ? ctp : "");
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    r->len = rb.len;
    r->body = buf_steal(&rb);
    r->headers = buf_steal(&hb);
    if (rc != CURLE_OK) {
        /* Freed before asserting: a failed assertion does not come back. */
        th_resp_free(r);
        if (test_thread_known && !pthread_equal(pthread_self(), test_thread)) {
            /* On a thread of the test's: status 0 and the reason as the body, for the
             * test's thread to assert on. */
            r->body = strdup(curl_easy_strerror(rc));
            r->len = r->body ? strlen(r->body) : 0;
            r->content_type = strdup("");
            r->headers = strdup("");
            return;
        }
        cr_assert_fail("%s %s: %s", method, path, curl_easy_strerror(rc));
    }
    if (r->body && r->body[0]) {
        json_error_t e;
        r->json = json_loads(r->body, 0, &e);
    }
    r->live = calloc(1, sizeof(*r->live));
    cr_assert_not_null(r->live);
    *r->live = (struct th_live){
        .json = r->json, .body = r->body, .headers = r->headers, .content_type = r->content_type};
    pthread_mutex_lock(&live_lock);
    r->live->next = live_list;
    if (live_list)
        live_list->prev = r->live;
    live_list = r->live;
    pthread_mutex_unlock(&live_lock);
}

void th_http_bytes(struct th_server *s, const char *method, const char *path, const char *token,
                   const char *body, size_t len, const char *ctype, struct th_resp *r)
{
    http_do(s, method, path, token, body, len, ctype, NULL, r);
}

void th_http_hdr(struct th_server *s, const char *method, const char *path, const char *token,
                 const char *body, const char *header, struct th_resp *r)
{
    http_do(s, method, path, token, body, body ? strlen(body) : 0, NULL, header, r);
}

void th_resp_free(struct th_resp *r)
{
    if (r->live) {
        pthread_mutex_lock(&live_lock);
        live_unlink(r->live);
        pthread_mutex_unlock(&live_lock);
        free(r->live);
    }
    json_decref(r->json);
    free(r->body);
    free(r->headers);
    free(r->content_type);
    memset(r, 0, sizeof(*r));
}

char *th_resp_header(const struct th_resp *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            size_t len = eol ? (size_t)(eol - v) : strlen(v);
            while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == ' '))
                len--;
            return strndup(v, len);
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

const char *th_str_of(const struct th_resp *r, const char *key)
{
    const char *v = json_string_value(json_object_get(r->json, key));
    return v ? v : "";
}

char *th_job_submit(struct th_server *s, const char *token, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    cr_assert_not_null(text);
    struct th_resp r;
    th_http(s, "POST", "/api/v1/jobs", token, text, NULL, &r);
    free(text);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

json_t *th_job(struct th_server *s, const char *token, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    struct th_resp r;
    th_http(s, "GET", path, token, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "GET %s: %ld %s", path, r.status, r.body);
    json_t *j = json_incref(r.json);
    th_resp_free(&r);
    return j;
}

json_t *th_job_wait_final(struct th_server *s, const char *token, const char *id, int seconds)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    for (;;) {
        json_t *j = th_job(s, token, id);
        const char *st = json_string_value(json_object_get(j, "status"));
        if (st && (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "dead") ||
                   !strcmp(st, "cancelled")))
            return j;
        char now[32];
        snprintf(now, sizeof(now), "%s", st ? st : "?");
        json_decref(j);
        cr_assert(clock_mono_ns() < deadline, "job %s still %s after %d s", id, now, seconds);
        usleep(100000); /* polling the condition, bounded by the deadline */
    }
}

json_t *th_job_wait_running(struct th_server *s, const char *token, const char *id, int seconds)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    for (;;) {
        json_t *j = th_job(s, token, id);
        const char *st = json_string_value(json_object_get(j, "status"));
        char now[32];
        snprintf(now, sizeof(now), "%s", st ? st : "?");
        if (!strcmp(now, "running"))
            return j;
        json_decref(j);
        cr_assert(!strcmp(now, "queued") || !strcmp(now, "assigned"), "job %s is %s", id, now);
        cr_assert(clock_mono_ns() < deadline, "job %s still %s after %d s", id, now, seconds);
        usleep(20000); /* polling the condition, bounded by the deadline */
    }
}

char *th_token(struct th_server *s, const char *key)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
    struct th_resp r;
    th_http(s, "POST", "/api/v1/auth/token", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 200, "token exchange: %ld %s", r.status, r.body);
    char *t = strdup(th_str_of(&r, "access_token"));
    th_resp_free(&r);
    return t;
}

char *th_tenant(struct th_server *s, const char *op_token, const char *slug, const char *tier)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"slug\":\"%s\",\"display_name\":\"%s\",\"tier\":\"%s\"}", slug,
             slug, tier);
    struct th_resp r;
    th_http(s, "POST", "/api/v1/tenants", op_token, body, NULL, &r);
    cr_assert_eq(r.status, 201, "create tenant: %ld %s", r.status, r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return id;
}

char *th_tenant_token(struct th_server *s, const char *op_token, const char *tenant_id,
                      const char *role)
{
    char path[128], body[128];
    static int seq;
    snprintf(path, sizeof(path), "/api/v1/tenants/%s/api-keys", tenant_id);
    snprintf(body, sizeof(body), "{\"name\":\"%s-%d\",\"role\":\"%s\"}", role, ++seq, role);
    struct th_resp r;
    th_http(s, "POST", path, op_token, body, NULL, &r);
    cr_assert_eq(r.status, 201, "create key: %ld %s", r.status, r.body);
    char *t = th_token(s, th_str_of(&r, "key"));
    th_resp_free(&r);
    return t;
}

void th_agent_enrol(struct th_server *s, const char *admin, const char *state_dir, const char *name,
                    const char *label, const char *slots, char *agent_id)
{
    struct th_resp r;
    th_http(s, "POST", "/api/v1/enrollment-tokens", admin, "{\"name\":\"test\"}", NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *tok = strdup(th_str_of(&r, "token"));
    th_resp_free(&r);
    char ca[128], env[128];
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", s->dir);
    snprintf(env, sizeof(env), "ORCH_AGENT_STATE_DIR=%.100s", state_dir);
    const char *argv[16] = {th_env("ORCH_TEST_AGENT"),
                            "register",
                            "--server",
                            s->base,
                            "--token",
                            tok,
                            "--name",
                            name,
                            "--ca-file",
                            ca,
                            "--slots",
                            slots};
    int n = 12;
    if (label) {
        argv[n++] = "--label";
        argv[n++] = label;
    }
    argv[n] = NULL;
    const char *envp[] = {env, NULL};
    struct th_run run;
    th_run(&run, argv, envp, 60000);
    cr_assert_eq(run.status, 0, "register %s: %s", name, th_str(&run.err));
    const char *p = strstr(th_str(&run.out), "(agent ");
    cr_assert_not_null(p, "%s", th_str(&run.out));
    snprintf(agent_id, 37, "%.36s", p + 7);
    th_run_free(&run);
    free(tok);
}

int th_log_count(const struct th_server *s, const char *needle)
{
    FILE *f = fopen(s->log, "re");
    if (!f)
        return 0;
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

int th_log_wait(const struct th_server *s, const char *needle, int want, int timeout_ms)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    int n;
    while ((n = th_log_count(s, needle)) < want && clock_mono_ns() < deadline)
        usleep(20000);
    return n;
}

int th_metrics_port(const struct th_server *s)
{
    FILE *f = fopen(s->log, "re");
    cr_assert_not_null(f);
    char line[1024];
    int port = -1;
    while (fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "state=ready");
        const char *m = p ? strstr(p, " metrics_port=") : NULL;
        if (m)
            port = (int)strtol(m + 14, NULL, 10);
    }
    fclose(f);
    return port;
}

json_t *th_agent_poll(struct th_server *s, const char *cred, int wait_s)
{
    struct th_resp r;
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/agent/assignments?wait=%d", wait_s);
    th_http(s, "GET", path, cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *a = json_incref(json_array_get(json_object_get(r.json, "assignments"), 0));
    th_resp_free(&r);
    return a;
}

char *th_agent_register(struct th_server *s, const char *admin, const char *name)
{
    return th_agent_register_labelled(s, admin, name, "{}");
}

char *th_agent_register_labelled(struct th_server *s, const char *admin, const char *name,
                                 const char *labels)
{
    struct th_resp r;
    th_http(s, "POST", "/api/v1/enrollment-tokens", admin, "{\"name\":\"t\",\"max_uses\":1}", NULL,
            &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"%s\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":%s,\"slots\":2}",
             th_str_of(&r, "token"), name, labels);
    th_resp_free(&r);
    th_http(s, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    return cred;
}

pid_t th_agent_start(const char *state_dir)
{
    return th_agent_start_env(state_dir, NULL);
}

void th_agent_stop(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    int st;
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (clock_mono_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return;
        }
        usleep(20000); /* polling for the exit, bounded */
    }
}

char *th_make_archive(const char *marker, size_t *len)
{
    char dir[] = "/tmp/orch-pkg-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && mkdir src && printf '#!/bin/sh\\necho %s \"$@\"\\ncat data.txt\\n' "
             ">src/run.sh && chmod 755 src/run.sh && echo data-%s >src/data.txt && "
             "tar -czf pkg.tgz -C src run.sh data.txt",
             dir, marker, marker);
    cr_assert_eq(system(cmd), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/pkg.tgz", dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    char *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    th_rm_rf(dir);
    return buf;
}

char *th_package(struct th_server *s, const char *token, const char *name, const char *marker,
                 char sha[65])
{
    size_t len;
    char *tgz = th_make_archive(marker, &len);
    if (sha)
        crypto_sha256_hex(tgz, len, sha);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/packages?name=%s&version=1.0.0&entrypoint=run.sh", name);
    struct th_resp r;
    th_http_bytes(s, "POST", path, token, tgz, len, "application/gzip", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    free(tgz);
    return id;
}

pid_t th_agent_start_env(const char *state_dir, const char *const *extra_env)
{
    char env[128], log[128];
    snprintf(env, sizeof(env), "ORCH_AGENT_STATE_DIR=%.100s", state_dir);
    snprintf(log, sizeof(log), "%.100s/agent.log", state_dir);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        putenv(env);
        putenv("ORCH_AGENT_LOG_LEVEL=debug");
        /* As in production: a root agent runs jobs as the unprivileged job user. */
        putenv("ORCH_AGENT_EXEC_USER=orch-job");
        for (size_t i = 0; extra_env && extra_env[i]; i++)
            putenv((char *)extra_env[i]);
        execl(th_env("ORCH_TEST_AGENT"), "orch-agent", "run", (char *)NULL);
        _exit(127);
    }
    return pid;
}

long th_http_try(const struct th_server *s, const char *method, const char *path, const char *token,
                 const char *body, json_t **json)
{
    if (json)
        *json = NULL;
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    char url[2048], ca[128], auth[8192 + 64];
    snprintf(url, sizeof(url), "%s%s", s->base, path);
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", s->dir);
    struct curl_slist *h = NULL, *n;
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        if ((n = curl_slist_append(h, auth)))
            h = n;
    }
    if (body && (n = curl_slist_append(h, "Content-Type: application/json")))
        h = n;
    struct buf rb = BUF_INIT;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status && json && rb.len > 0) {
        json_error_t e;
        *json = json_loadb(rb.data, rb.len, 0, &e);
    }
    buf_free(&rb);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}
