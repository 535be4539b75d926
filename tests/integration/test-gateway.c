/* The agent gateway under load on the real orchd: a full registry of held long-polls
 * answers 503 with Retry-After and a real agent waits that long before it asks again; the
 * background rounds (the lost-wake-up checker, the reaper) keep their pace however many
 * long-polls come and go. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char *holder, *other; /* agents' credentials, freed by teardown */

static void setup_with(const char *const *env)
{
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

/* One held long-poll fills this node (each one held is logged, at debug). */
static void setup_tiny(void)
{
    const char *env[] = {"ORCHD_GATEWAY_MAX_WAITERS=1", "ORCHD_LOG_LEVEL=debug", NULL};
    setup_with(env);
}

/* Every background round logged (debug). */
static void setup_debug(void)
{
    const char *env[] = {"ORCHD_LOG_LEVEL=debug", NULL};
    setup_with(env);
}

static void teardown(void)
{
    free(holder);
    free(other);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(gateway, .fini = teardown, .timeout = 120);

/* A long-poll on a thread of its own (no assertion runs there). */
struct hold {
    const char *cred;
    int wait_s;
    long status;
    pthread_t t;
};

static void *hold_main(void *arg)
{
    struct hold *h = arg;
    char path[64];
    snprintf(path, sizeof(path), "/api/v1/agent/assignments?wait=%d", h->wait_s);
    struct th_resp r;
    th_http(&srv, "GET", path, h->cred, NULL, NULL, &r);
    h->status = r.status;
    th_resp_free(&r);
    return NULL;
}

/* Answer cred's held long-poll now: a new exchange of the agent supersedes it. */
static void release(const char *cred)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", cred, "{\"wait\":0}", NULL, &r);
    long st = r.status;
    th_resp_free(&r);
    cr_assert_eq(st, 200);
}

Test(gateway, a_full_registry_answers_503_with_retry_after_and_the_agent_waits, .init = setup_tiny)
{
    holder = th_agent_register(&srv, admin, "holder");
    other = th_agent_register(&srv, admin, "other");
    /* Held for the whole test (th_http() gives up after 30 s). */
    struct hold h = {.cred = holder, .wait_s = 28};
    cr_assert_eq(pthread_create(&h.t, NULL, hold_main, &h), 0);

    /* Once the holder's long-poll is held, any other one is refused at once. */
    uint64_t deadline = clock_mono_ns() + 10ull * 1000000000ull;
    while (th_log_count(&srv, "op=gateway.hold ") == 0 && clock_mono_ns() < deadline)
        usleep(20000); /* polling the log for the condition, bounded */
    long st = 0;
    char *ra = NULL, ctype[64] = "", type[64] = "";
    if (clock_mono_ns() < deadline) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", other, NULL, NULL, &r);
        st = r.status;
        if (st == 503) {
            ra = th_resp_header(&r, "Retry-After");
            snprintf(ctype, sizeof(ctype), "%s", r.content_type);
            snprintf(type, sizeof(type), "%s", th_str_of(&r, "type"));
        }
        th_resp_free(&r);
    }
    char retry_after[16] = "";
    snprintf(retry_after, sizeof(retry_after), "%s", ra ? ra : "");
    free(ra);
    if (st != 503) {
        release(holder);
        pthread_join(h.t, NULL);
        cr_assert_fail("a full registry answered %ld", st);
    }
    cr_assert_str_eq(retry_after, "5");
    cr_assert_str_eq(ctype, "application/problem+json");
    cr_assert_str_eq(type, "urn:orch:problem:unavailable");

    /* A real agent told so waits at least Retry-After before it asks again (it used to
     * come straight back: a hot loop). */
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/orch-gateway-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char id[40];
    th_agent_enrol(&srv, admin, dir, "real", NULL, "1", id);
    int before = th_log_count(&srv, "route=/api/v1/agent/sync status=503");
    pid_t agent = th_agent_start(dir);
    uint64_t first = 0, second = 0;
    deadline = clock_mono_ns() + 20ull * 1000000000ull;
    while (!second && clock_mono_ns() < deadline) {
        int n = th_log_count(&srv, "route=/api/v1/agent/sync status=503") - before;
        if (n >= 1 && !first)
            first = clock_mono_ns();
        if (n >= 2)
            second = clock_mono_ns();
        usleep(20000); /* polling the log for the condition, bounded */
    }
    int syncs = th_log_count(&srv, "route=/api/v1/agent/sync");
    th_agent_stop(agent, SIGTERM);
    release(holder);
    pthread_join(h.t, NULL);
    th_rm_rf(dir);
    cr_assert(first && second, "the agent was not refused twice (%d exchanges)", syncs);
    cr_assert_geq((second - first) / 1000000ull, 4900, "asked again after %llu ms",
                  (unsigned long long)((second - first) / 1000000ull));
    cr_assert_lt(syncs, 20, "%d exchanges: the agent did not back off", syncs);
}

/* Agents whose long-polls answer and re-register in a loop, on threads of their own. */
struct churn {
    char *cred;
    uint64_t until;
    int answers;
    pthread_t t;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    while (clock_mono_ns() < c->until) {
        struct th_resp r;
        th_http(&srv, "GET", "/api/v1/agent/assignments?wait=1", c->cred, NULL, NULL, &r);
        c->answers += r.status == 200;
        th_resp_free(&r);
    }
    return NULL;
}

Test(gateway, background_rounds_keep_their_pace_whatever_the_long_polls_do, .init = setup_debug)
{
    enum { N = 6 };
    struct churn c[N];
    for (int i = 0; i < N; i++) {
        char name[24];
        snprintf(name, sizeof(name), "churn-%d", i);
        c[i] = (struct churn){.cred = th_agent_register(&srv, admin, name)};
    }
    int checks0 = th_log_count(&srv, "op=gateway.check ");
    int reaps0 = th_log_count(&srv, "op=gateway round=flush");
    uint64_t t0 = clock_mono_ns();
    for (int i = 0; i < N; i++) {
        c[i].until = t0 + 4000000000ull;
        cr_assert_eq(pthread_create(&c[i].t, NULL, churn_main, &c[i]), 0);
    }
    int answers = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].t, NULL);
        answers += c[i].answers;
        free(c[i].cred);
    }
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    int checks = th_log_count(&srv, "op=gateway.check ") - checks0;
    int reaps = th_log_count(&srv, "op=gateway round=flush") - reaps0;
    cr_assert_geq(answers, 2 * N, "only %d long-polls answered", answers);
    /* Once a second (and one more at either end); they ran once per answer before. */
    cr_assert_leq(checks, (int)secs + 2, "%d checker rounds in %.1f s for %d answers", checks, secs,
                  answers);
    cr_assert_leq(reaps, (int)secs + 2, "%d liveness flushes in %.1f s for %d answers", reaps, secs,
                  answers);
}

/* Heartbeats of 1 s and an online window of 10 s: an idle agent's liveness is rewritten
 * once it is 6.5 s old (10 s less 1.5 intervals and 2 s, gw_liveness_refresh_ms()). */
static void setup_liveness(void)
{
    const char *env[] = {"ORCHD_LOG_LEVEL=debug", "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s",
                         "ORCHD_AGENT_ONLINE_WINDOW=10s", NULL};
    setup_with(env);
}

#define REFRESH_MS 6500

/* A heartbeat of cred carrying the host figures of load (a JSON object text). */
static void beat(const char *cred, const char *load)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"status\":\"idle\",\"slots\":2,\"free_slots\":2,\"running\":[],\"load\":%s}", load);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", cred, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
}

/* Wait until a liveness flush that started after now has ended: two more rounds begin (a
 * heartbeat answered before this call was noted before the first of them took the notes). */
static void flushed(void)
{
    int n0 = th_log_count(&srv, "op=gateway round=flush");
    uint64_t end = clock_mono_ns() + 10000000000ull;
    while (th_log_count(&srv, "op=gateway round=flush") < n0 + 2 && clock_mono_ns() < end)
        usleep(20000); /* polling the log, bounded */
    cr_assert_geq(th_log_count(&srv, "op=gateway round=flush"), n0 + 2,
                  "no liveness flush in 10 s");
}

/* The agent's row as "last_heartbeat_at|status|gateway_node|memory|cpu". */
static char *row(PGconn *pg, const char *id)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT last_heartbeat_at::text || '|' || status || '|' || coalesce(gateway_node, '-')"
             "       || '|' || memory_free_bytes || '|' || cpu_percent::int"
             "  FROM agents WHERE id = '%s'",
             id);
    PGresult *res = th_pg_ok(pg, sql);
    cr_assert_eq(PQntuples(res), 1);
    char *s = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return s;
}

/* Whether the stored liveness ts (text) is younger than the refresh age: until then an
 * unchanged heartbeat must not rewrite it. */
static bool young(PGconn *pg, const char *ts)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT (now() - '%s'::timestamptz < interval '%d ms')::int", ts,
             REFRESH_MS);
    return th_pg_long(pg, sql) == 1;
}

static char *ts_of(const char *row_text)
{
    return strndup(row_text, strcspn(row_text, "|"));
}

#define LOAD(mem, cpu)                                                                             \
    "{\"memory_available_bytes\":" #mem ",\"disk_free_bytes\":107374182400,\"cpu_percent\":" #cpu  \
    "}"

Test(gateway, an_idle_agents_liveness_is_written_when_stale_moved_or_changed_not_per_heartbeat,
     .init = setup_liveness)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    holder = th_agent_register(&srv, admin, "steady");
    char id[40];
    PGresult *res = th_pg_ok(pg, "SELECT id FROM agents WHERE name = 'steady'");
    snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    /* The first heartbeat on the node is written at once, figures and all. */
    beat(holder, LOAD(8589934592, 5));
    flushed();
    char *r0 = row(pg, id), *ts0 = ts_of(r0);
    cr_assert(strstr(r0, "|online|") && strstr(r0, "|8589934592|5"), "%s", r0);

    /* Unchanged heartbeats, and one whose memory moved less than a sixteenth: read, not
     * written, while the stored time is young. */
    int unchanged = 0;
    for (int i = 0; i < 4; i++) {
        beat(holder, i == 3 ? LOAD(8489934592, 7) : LOAD(8589934592, 5));
        flushed();
        char *r = row(pg, id);
        if (young(pg, ts0)) {
            cr_assert_str_eq(r, r0, "heartbeat %d rewrote the row: %s (was %s)", i, r, r0);
            unchanged++;
        }
        free(r);
    }
    cr_assert_gt(unchanged, 0, "the box was too slow to see a heartbeat within %d ms", REFRESH_MS);

    /* A host figure that moved enough is written with the liveness. */
    beat(holder, LOAD(8589934592, 60));
    flushed();
    char *r1 = row(pg, id), *ts1 = ts_of(r1);
    cr_assert(strstr(r1, "|8589934592|60"), "%s", r1);
    cr_assert_str_neq(ts1, ts0);

    /* Listed on another node (it moved there and back), or offline (the reaper): written. */
    PQclear(th_pg_ok(pg, "UPDATE agents SET gateway_node = 'elsewhere' WHERE name = 'steady'"));
    beat(holder, LOAD(8589934592, 60));
    flushed();
    char *r2 = row(pg, id);
    cr_assert(strstr(r2, "|online|") && !strstr(r2, "elsewhere") && !strstr(r2, "|-|"), "%s", r2);
    PQclear(th_pg_ok(pg, "UPDATE agents SET status = 'offline', gateway_node = NULL"
                         " WHERE name = 'steady'"));
    beat(holder, LOAD(8589934592, 60));
    flushed();
    char *r3 = row(pg, id), *ts3 = ts_of(r3);
    cr_assert(strstr(r3, "|online|") && !strstr(r3, "|-|"), "%s", r3);

    /* Heartbeats with nothing new: the row is rewritten once its time is REFRESH_MS old,
     * and the agent stays online meanwhile. */
    char *ts = strdup(ts3);
    uint64_t end = clock_mono_ns() + 20000000000ull;
    while (strcmp(ts, ts3) == 0 && clock_mono_ns() < end) {
        beat(holder, LOAD(8589934592, 60));
        flushed();
        char *r = row(pg, id);
        cr_assert(strstr(r, "|online|"), "went offline while heartbeating: %s", r);
        free(ts);
        ts = ts_of(r);
        free(r);
    }
    cr_assert_str_neq(ts, ts3, "not rewritten in 20 s");
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT extract(epoch FROM '%s'::timestamptz - '%s'::timestamptz) * 1000", ts, ts3);
    long gap = th_pg_long(pg, sql);
    cr_assert_geq(gap, REFRESH_MS, "rewritten after %ld ms", gap);
    free(ts);
    free(ts3);
    free(r3);
    free(r2);
    free(ts1);
    free(r1);
    free(ts0);
    free(r0);
    PQfinish(pg);
}

/* A held exchange whose client has gone (the agent timed out, or reconnected elsewhere)
 * claims nothing when a job is made for its agent: the assignment stays undelivered, and
 * the agent's next exchange gets it without `resume`. */
Test(gateway, a_held_exchange_whose_client_left_claims_nothing, .init = setup_debug)
{
    holder = th_agent_register_labelled(&srv, admin, "gone", "{\"pool\":\"gone\"}");
    beat(holder, "{\"cpu_percent\":1}");
    /* Held up to 30 s; the client gives up after 10 s, closing its connection. */
    long st = th_http_try(&srv, "POST", "/api/v1/agent/sync", holder,
                          "{\"assign\":true,\"wait\":30}", NULL);
    cr_assert_eq(st, 0, "the held exchange was answered (%ld)", st);
    int answered0 = th_log_count(&srv, "route=/api/v1/agent/sync status=200");
    char *id = th_job_submit(
        &srv, admin,
        json_pack("{s:s, s:{s:s}}", "command", "true", "requirements", "pool", "gone"));
    /* The dispatcher assigns it and wakes the held exchange, which is answered (into the
     * closed connection) at once. */
    uint64_t end = clock_mono_ns() + 20000000000ull;
    while (th_log_count(&srv, "route=/api/v1/agent/sync status=200") == answered0 &&
           clock_mono_ns() < end)
        usleep(20000); /* polling the log, bounded */
    cr_assert_gt(th_log_count(&srv, "route=/api/v1/agent/sync status=200"), answered0,
                 "the held exchange was never answered");
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs WHERE id = '%s' AND status = 'assigned'"
             " AND delivered_at IS NULL",
             id);
    cr_assert_eq(th_pg_long(pg, sql), 1, "claimed by the exchange whose client had gone");
    PQfinish(pg);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/sync", holder, "{\"assign\":true}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *as = json_array_get(json_object_get(r.json, "assignments"), 0);
    cr_assert_not_null(as, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(as, "job_id")), id);
    th_resp_free(&r);
    free(id);
}
