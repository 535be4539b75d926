/* api-stats.c: the jobs' figures for charts (GET /api/v1/stats/jobs, docs/api.md): per
 * time bucket, the jobs submitted, succeeded and failed (or dead) and the queue wait of
 * first assignments (p50, p95), and the current totals (running, queued, failed in the
 * window, agents online). The console's overview draws them.
 *
 * A tenant's token reads its own tenant: the statement runs in the tenant's transaction,
 * where row-level security scopes every table, and names app_tenant() itself so that the
 * planner can use the (tenant_id, ...) indexes (the policies' OR with the system scope
 * cannot be an index condition). A platform operator's runs in the system scope over
 * every tenant. Either way one statement, bounded by the window: each part reads an index
 * range starting at the window's first bucket, never the whole jobs table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/app.h"

/* A day at most, in at most STATS_BUCKETS_MAX buckets (a minute's buckets over a day). */
#define STATS_WINDOW_MIN     60
#define STATS_WINDOW_MAX     86400
#define STATS_WINDOW_DEFAULT 3600
#define STATS_STEP_DEFAULT   60
#define STATS_BUCKETS_MAX    1440

/* $1 window (s), $2 step (s), $3 the online window of agents (s). Buckets are aligned to
 * multiples of the step since the epoch, the last one holding now, so that two reads a
 * moment apart agree on their buckets. STATS_T0, the first bucket's start, is written out
 * in each condition rather than read from b: the planner then sees the range's bound (now()
 * is folded when a plan is made for the parameters) and picks the time indexes. J and A
 * are the scope's conditions on the tables aliased j and a.
 *
 * A wait needs its job's created_at: the jobs created in the window and the one before it
 * are read in one range of the time index and joined by hash (a lookup per assignment
 * cost three times as much, measured with 10,000 assignments in the hour); a job that
 * waited longer than that is looked up by its id. */
#define STATS_T0                                                                                   \
    "to_timestamp((floor(date_part('epoch', now()) / $2::int) + 1) * $2::int - $1::int)"
#define STATS_SQL(J, A)                                                                            \
    "WITH b AS MATERIALIZED (SELECT to_timestamp(e0) AS t0, e0, $1::int / $2::int AS n FROM"       \
    "            (SELECT (floor(date_part('epoch', now()) / $2::int) + 1) * $2::int - $1::int"     \
    "             AS e0) e),"                                                                      \
    " sub AS (SELECT floor((date_part('epoch', j.created_at) - b.e0) / $2::int)::int AS i,"        \
    "                count(*) AS n FROM jobs j, b WHERE " J " j.created_at >= " STATS_T0           \
    " GROUP BY 1),"                                                                                \
    " fin AS (SELECT floor((date_part('epoch', j.finished_at) - b.e0) / $2::int)::int AS i,"       \
    "                count(*) FILTER (WHERE j.status = 'succeeded') AS ok,"                        \
    "                count(*) FILTER (WHERE j.status IN ('failed', 'dead')) AS bad"                \
    "           FROM jobs j, b WHERE " J " j.finished_at >= " STATS_T0 " GROUP BY 1),"             \
    " wt AS (SELECT floor((date_part('epoch', a.assigned_at) - b.e0) / $2::int)::int AS i,"        \
    "               percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY a.assigned_at"        \
    "                 - coalesce(j.created_at, (SELECT x.created_at FROM jobs x"                   \
    "                                           WHERE x.id = a.job_id))) AS p"                     \
    "          FROM job_attempts a LEFT JOIN jobs j ON " J " j.id = a.job_id"                      \
    "               AND j.created_at >= " STATS_T0 " - make_interval(secs => $1::int), b"          \
    "         WHERE " A " a.attempt = 1 AND a.assigned_at >= " STATS_T0 " GROUP BY 1),"            \
    " s AS (SELECT i AS g, sum(n) AS submitted, sum(ok) AS ok, sum(bad) AS bad,"                   \
    "              round(extract(epoch FROM max(p[1])) * 1000) AS p50,"                            \
    "              round(extract(epoch FROM max(p[2])) * 1000) AS p95"                             \
    "         FROM (SELECT g, 0, 0, 0, NULL::interval[] FROM b, generate_series(0, b.n - 1) g"     \
    "               UNION ALL SELECT i, n, 0, 0, NULL FROM sub"                                    \
    "               UNION ALL SELECT i, 0, ok, bad, NULL FROM fin"                                 \
    "               UNION ALL SELECT i, 0, 0, 0, p FROM wt) u (i, n, ok, bad, p)"                  \
    "         WHERE i >= 0 AND i < $1::int / $2::int GROUP BY i)"                                  \
    " SELECT json_build_object('window', $1::int, 'step', $2::int, 'from', b.t0,"                  \
    "   'to', b.t0 + make_interval(secs => $1::int),"                                              \
    "   'submitted', (SELECT json_agg(submitted ORDER BY g) FROM s),"                              \
    "   'succeeded', (SELECT json_agg(ok ORDER BY g) FROM s),"                                     \
    "   'failed', (SELECT json_agg(bad ORDER BY g) FROM s),"                                       \
    "   'wait_p50_ms', (SELECT json_agg(p50 ORDER BY g) FROM s),"                                  \
    "   'wait_p95_ms', (SELECT json_agg(p95 ORDER BY g) FROM s),"                                  \
    "   'totals', json_build_object("                                                              \
    "     'running', (SELECT count(*) FROM jobs j WHERE " J " j.status IN"                         \
    "                  ('assigned', 'running')),"                                                  \
    "     'queued', (SELECT count(*) FROM jobs j WHERE " J " j.status = 'queued'),"                \
    "     'submitted', (SELECT coalesce(sum(n), 0) FROM sub),"                                     \
    "     'succeeded', (SELECT coalesce(sum(ok), 0) FROM fin),"                                    \
    "     'failed', (SELECT coalesce(sum(bad), 0) FROM fin),"                                      \
    "     'agents_online', (SELECT count(*) FROM agents a WHERE " A " a.status = 'online'"         \
    "        AND a.credential_revoked_at IS NULL"                                                  \
    "        AND a.last_heartbeat_at > now() - make_interval(secs => $3::int))))"                  \
    " FROM b"

/* The tenant's condition names app_tenant() for the planner; the platform's is none. */
#define STATS_TENANT_J "j.tenant_id = app_tenant() AND"
#define STATS_TENANT_A "a.tenant_id = app_tenant() AND"

static const struct store_stmt q_stats_tenant =
    STORE_STMT("stats_jobs_tenant", STATS_SQL(STATS_TENANT_J, STATS_TENANT_A), 3);
static const struct store_stmt q_stats_platform =
    STORE_STMT("stats_jobs_platform", STATS_SQL("", ""), 3);

/* The query parameter name as an integer in [min, max] (def when absent). Returns 0, or
 * -EINVAL after replying 422 naming it. */
static int stats_int(struct http_req *req, const char *name, long def, long min, long max,
                     long *ret)
{
    const char *v = http_req_query(req, name);
    *ret = def;
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || !end || end == v || *end || n < min || n > max) {
        char detail[96];
        snprintf(detail, sizeof(detail), "must be an integer number of seconds between %ld and %ld",
                 min, max);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, name);
        return -EINVAL;
    }
    *ret = n;
    return 0;
}

void api_stats_jobs(struct http_req *req)
{
    long window, step;
    if (stats_int(req, "window", STATS_WINDOW_DEFAULT, STATS_WINDOW_MIN, STATS_WINDOW_MAX,
                  &window) < 0 ||
        stats_int(req, "step", STATS_STEP_DEFAULT, 1, STATS_WINDOW_MAX, &step) < 0)
        return;
    if (step > window || window % step != 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must divide the window", "step");
        return;
    }
    if (window / step > STATS_BUCKETS_MAX) {
        char detail[96];
        snprintf(detail, sizeof(detail), "makes more than %d buckets: take a longer step",
                 STATS_BUCKETS_MAX);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "step");
        return;
    }
    const struct http_principal *pr = http_req_principal(req);
    struct app *app = http_req_app(req);
    char ws[24], ss[24], online[24];
    snprintf(ws, sizeof(ws), "%ld", window);
    snprintf(ss, sizeof(ss), "%ld", step);
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    const char *p[] = {ws, ss, online};
    bool tenant = pr->kind == HTTP_PRINCIPAL_TENANT;
    PGresult *res = NULL;
    int r = store_exec_once(app->store, tenant ? pr->tenant_id : NULL,
                            tenant ? &q_stats_tenant : &q_stats_platform, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the job statistics");
        return;
    }
    api_reply_pg_json(req, 200, res);
}
