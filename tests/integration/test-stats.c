/* GET /api/v1/stats/jobs on the real orchd, PostgreSQL, RabbitMQ and an enrolled
 * orch-agent: the figures after real jobs ran (per bucket and in total), the queue wait of
 * their first assignment, the validation of window and step (422 naming the field), a
 * tenant's figures scoped to it (another tenant's jobs and agents count nowhere), and the
 * platform operator's over every tenant. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *ta, *tb, *a, *b;
static char agent_dir[64];
static pid_t agent = -1;

static void setup(void)
{
    const char *env[] = {"ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    ta = th_tenant(&srv, op, "stats-a", "standard");
    tb = th_tenant(&srv, op, "stats-b", "standard");
    a = th_tenant_token(&srv, op, ta, "viewer");
    b = th_tenant_token(&srv, op, tb, "operator");
    snprintf(agent_dir, sizeof(agent_dir), "/tmp/orch-stats-XXXXXX");
    cr_assert_not_null(mkdtemp(agent_dir));
}

static void teardown(void)
{
    th_agent_stop(agent, SIGTERM);
    if (agent_dir[0])
        th_rm_rf(agent_dir);
    free(a);
    free(b);
    free(ta);
    free(tb);
    free(op);
    th_server_stop(&srv);
}

TestSuite(stats, .init = setup, .fini = teardown, .timeout = 180);

/* GET the stats with query q as token; must answer 200; the document (caller decrefs). */
static json_t *stats(const char *token, const char *q)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/stats/jobs%s", q);
    struct th_resp r;
    th_http(&srv, "GET", path, token, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s: %s", path, r.body);
    cr_assert_not_null(r.json, "%s", r.body);
    json_t *doc = json_incref(r.json);
    th_resp_free(&r);
    return doc;
}

static long total(const json_t *doc, const char *key)
{
    json_t *v = json_object_get(json_object_get(doc, "totals"), key);
    cr_assert(json_is_integer(v), "totals.%s", key);
    return (long)json_integer_value(v);
}

/* The sum of the array member key, which must have n entries (integers or null). */
static long sum(const json_t *doc, const char *key, size_t n)
{
    json_t *arr = json_object_get(doc, key), *v;
    cr_assert(json_is_array(arr), "%s is not an array", key);
    cr_assert_eq(json_array_size(arr), n, "%s has %zu buckets", key, json_array_size(arr));
    size_t i;
    long s = 0;
    json_array_foreach(arr, i, v)
    {
        cr_assert(json_is_integer(v) || json_is_null(v), "%s[%zu]", key, i);
        s += json_is_integer(v) ? (long)json_integer_value(v) : 0;
    }
    return s;
}

/* A job of token's tenant running command (one attempt), ended with status want (a
 * failure: failed or dead). */
static void run_job(const char *token, const char *command, const char *want)
{
    bool failure = strcmp(want, "failed") == 0;
    char *id =
        th_job_submit(&srv, token, json_pack("{s:s, s:i}", "command", command, "max_attempts", 1));
    json_t *j = th_job_wait_final(&srv, token, id, 60);
    const char *st = json_string_value(json_object_get(j, "status"));
    cr_assert(st && (strcmp(st, want) == 0 || (failure && strcmp(st, "dead") == 0)), "%s: %s",
              command, st ? st : "no status");
    json_decref(j);
    free(id);
}

Test(stats, counts_buckets_and_wait_after_real_jobs_scoped_to_the_tenant)
{
    /* Nothing yet: every bucket is there, empty. */
    json_t *d = stats(a, "");
    cr_expect_eq(json_integer_value(json_object_get(d, "window")), 3600);
    cr_expect_eq(json_integer_value(json_object_get(d, "step")), 60);
    cr_expect_eq(sum(d, "submitted", 60), 0);
    cr_expect_eq(sum(d, "wait_p50_ms", 60), 0);
    cr_expect(json_is_null(json_array_get(json_object_get(d, "wait_p95_ms"), 59)));
    cr_expect_eq(total(d, "running") + total(d, "queued") + total(d, "failed"), 0);
    cr_expect_eq(total(d, "agents_online"), 0);
    json_decref(d);

    /* Tenant A's agent runs three jobs that succeed and one that fails. */
    char *adm = th_tenant_token(&srv, op, ta, "admin");
    char id[37];
    th_agent_enrol(&srv, adm, agent_dir, "stats-agent", NULL, "2", id);
    agent = th_agent_start(agent_dir);
    for (int i = 0; i < 3; i++)
        run_job(adm, "true", "succeeded");
    run_job(adm, "exit 3", "failed");
    /* Tenant B's job that no agent can take: queued, and nowhere in A's figures. */
    free(th_job_submit(
        &srv, b, json_pack("{s:s, s:{s:s}}", "command", "true", "requirements", "nowhere", "x")));

    d = stats(a, "?window=3600&step=60");
    cr_expect_eq(sum(d, "submitted", 60), 4);
    cr_expect_eq(sum(d, "succeeded", 60), 3);
    cr_expect_eq(sum(d, "failed", 60), 1);
    cr_expect_eq(total(d, "submitted"), 4);
    cr_expect_eq(total(d, "succeeded"), 3);
    cr_expect_eq(total(d, "failed"), 1);
    cr_expect_eq(total(d, "queued"), 0);
    cr_expect_eq(total(d, "running"), 0);
    cr_expect_eq(total(d, "agents_online"), 1);
    /* The jobs ran within the last minute or two: the newest buckets hold them, and each
     * bucket with a first assignment has p50 <= p95, both >= 0. */
    json_t *sub = json_object_get(d, "submitted");
    long recent =
        json_integer_value(json_array_get(sub, 58)) + json_integer_value(json_array_get(sub, 59));
    cr_expect_eq(recent, 4, "the jobs are not in the last two buckets");
    json_t *p50 = json_object_get(d, "wait_p50_ms"), *p95 = json_object_get(d, "wait_p95_ms");
    int waited = 0;
    for (size_t i = 0; i < 60; i++) {
        json_t *x = json_array_get(p50, i), *y = json_array_get(p95, i);
        cr_expect_eq(json_is_null(x), json_is_null(y), "bucket %zu", i);
        if (json_is_null(x))
            continue;
        waited++;
        cr_expect(json_integer_value(x) >= 0 && json_integer_value(x) <= json_integer_value(y),
                  "bucket %zu: p50 %lld p95 %lld", i, (long long)json_integer_value(x),
                  (long long)json_integer_value(y));
        cr_expect(json_integer_value(y) < 60000, "a wait of a minute on an idle agent");
    }
    cr_expect(waited >= 1 && waited <= 2, "%d buckets with a wait", waited);
    /* The buckets' bounds: [from, to) is the window, to after now. */
    cr_expect_str_neq(json_string_value(json_object_get(d, "from")), "");
    json_decref(d);

    /* Tenant B sees its own job only: none of A's figures, nor A's agent. */
    d = stats(b, "");
    cr_expect_eq(sum(d, "submitted", 60), 1);
    cr_expect_eq(total(d, "submitted"), 1);
    cr_expect_eq(total(d, "queued"), 1);
    cr_expect_eq(total(d, "succeeded") + total(d, "failed") + total(d, "running"), 0);
    cr_expect_eq(sum(d, "wait_p50_ms", 60), 0);
    cr_expect_eq(total(d, "agents_online"), 0);
    json_decref(d);

    /* The platform operator sees both tenants (at least: the harness may have others). */
    d = stats(op, "?window=600&step=10");
    cr_expect(sum(d, "submitted", 60) >= 5);
    cr_expect(total(d, "succeeded") >= 3 && total(d, "failed") >= 1);
    cr_expect(total(d, "queued") >= 1 && total(d, "agents_online") >= 1);
    json_decref(d);

    /* One bucket: the totals in the window still add up. */
    d = stats(a, "?window=300&step=300");
    cr_expect_eq(sum(d, "submitted", 1), total(d, "submitted"));
    json_decref(d);
    free(adm);
}

/* GET with query q must be 422 naming field. */
static void refused(const char *q, const char *field)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/stats/jobs%s", q);
    struct th_resp r;
    th_http(&srv, "GET", path, a, NULL, NULL, &r);
    cr_expect_eq(r.status, 422, "%s: %ld %s", q, r.status, r.body);
    cr_expect_str_eq(th_str_of(&r, "field"), field, "%s: %s", q, r.body);
    th_resp_free(&r);
}

Test(stats, window_and_step_are_bounded)
{
    refused("?window=59", "window");
    refused("?window=86401", "window");
    refused("?window=-3600", "window");
    refused("?window=1h", "window");
    refused("?window=", "window");
    refused("?window=99999999999999999999", "window");
    refused("?step=0", "step");
    refused("?step=abc", "step");
    refused("?step=7", "step");                    /* does not divide 3600 */
    refused("?window=600&step=1200", "step");      /* longer than the window */
    refused("?window=86400&step=30", "step");      /* 2,880 buckets */
    refused("?window=3600&step=1", "step");        /* 3,600 buckets */
    json_t *d = stats(a, "?window=86400&step=60"); /* the most: 1,440 */
    cr_expect_eq(sum(d, "succeeded", 1440), 0);
    json_decref(d);
    d = stats(a, "?window=60&step=1");
    cr_expect_eq(sum(d, "failed", 60), 0);
    json_decref(d);

    /* No token, no figures. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/stats/jobs", NULL, NULL, NULL, &r);
    cr_expect_eq(r.status, 401);
    th_resp_free(&r);
}
