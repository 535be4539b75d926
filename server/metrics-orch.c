/* metrics-orch.c: orchd's metrics and the /metrics listener (metrics-orch.h). */
#include "server/metrics-orch.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "orch-config.h"
#include "common/buf.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/gateway.h"
#include "server/metrics.h"
#include "server/store.h"

struct metrics_orch {
    struct metrics_registry *reg;
    struct metrics_family *build_info;
    struct metrics_family *cpu, *rss, *vsz, *fds, *max_fds, *start_time;
    struct metrics_family *http_requests, *http_duration;
    struct metrics_family *submitted, *assigned, *finished, *submit_assign;
    struct metrics_family *assign_start, *run_time, *heartbeats, *agent_auth;
    struct metrics_family *commit_items, *commit_redone;
    struct metrics_family *queue_depth, *agents, *tenant_info, *db_up;
    struct metrics_family *quota_used, *quota_limit;
    struct metrics_family *pool_conns, *pool_max, *pool_waiting, *bus_connected;
    struct metrics_family *http_conns, *held;
    struct http_server *api; /* borrowed; read and written under the registry's lock */
};

/* Seconds: 0.5 ms to 10 s for API requests. */
static const double http_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};
/* Seconds: 1 ms to 10 minutes for a job's wait before its assignment. */
static const double wait_buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1,
                                      2,     5,     10,   30,   60,  300, 600};

/* Seconds: 10 ms to 6 hours for a job's run. */
static const double run_buckets[] = {0.01, 0.1, 0.5, 1,    5,    10,   30,
                                     60,   300, 900, 1800, 3600, 7200, 21600};

/* Exchanges in one transaction of the agents' group commit: 1 to agent.batch_max's bound. */
static const double commit_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

static const char *const agent_statuses[] = {"online", "offline", "draining", "disabled"};

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

int metrics_orch_new(struct metrics_orch **ret)
{
    struct metrics_orch *m = calloc(1, sizeof(*m));
    if (!m || metrics_registry_new(&m->reg) < 0) {
        free(m);
        return -ENOMEM;
    }
    const size_t tcap = METRICS_ORCH_MAX_TENANT_SERIES;
    const struct {
        struct metrics_family **f;
        enum metrics_type type;
        const char *name, *help;
        const char *const *labels;
        size_t cap;
        const double *buckets;
        size_t nbuckets;
    } defs[] = {
        {&m->build_info, METRICS_GAUGE, "orch_build_info",
         "Always 1; the version of this orchd in its label.", L("version"), 1, NULL, 0},
        {&m->cpu, METRICS_COUNTER, "process_cpu_seconds_total",
         "User and system CPU time spent by orchd, in seconds.", NULL, 1, NULL, 0},
        {&m->rss, METRICS_GAUGE, "process_resident_memory_bytes", "Resident memory of orchd.", NULL,
         1, NULL, 0},
        {&m->vsz, METRICS_GAUGE, "process_virtual_memory_bytes", "Virtual memory of orchd.", NULL,
         1, NULL, 0},
        {&m->fds, METRICS_GAUGE, "process_open_fds",
         "Open file descriptors of orchd (connections included).", NULL, 1, NULL, 0},
        {&m->max_fds, METRICS_GAUGE, "process_max_fds", "orchd's limit of open file descriptors.",
         NULL, 1, NULL, 0},
        {&m->start_time, METRICS_GAUGE, "process_start_time_seconds",
         "When orchd started, in seconds since the Unix epoch.", NULL, 1, NULL, 0},
        {&m->http_requests, METRICS_COUNTER, "orch_http_requests_total",
         "REST and agent API requests answered, by method, route pattern and status class.",
         L("method", "route", "status"), 1024, NULL, 0},
        {&m->http_duration, METRICS_HISTOGRAM, "orch_http_request_duration_seconds",
         "Time from reading a request to answering it (long-polls included), by method, route "
         "pattern and status class.",
         L("method", "route", "status"), 1024, http_buckets, ELEMENTSOF(http_buckets)},
        {&m->submitted, METRICS_COUNTER, "orch_jobs_submitted_total",
         "Jobs submitted through this node, by tenant id and queue name (\"\" = no queue).",
         L("tenant_id", "queue"), tcap, NULL, 0},
        {&m->assigned, METRICS_COUNTER, "orch_jobs_assigned_total",
         "Jobs assigned to an agent by this node's dispatcher, by tenant id and queue name "
         "(\"\" = no queue).",
         L("tenant_id", "queue"), tcap, NULL, 0},
        {&m->finished, METRICS_COUNTER, "orch_jobs_finished_total",
         "Job attempts whose result an agent reported through this node, by tenant id, queue "
         "name (\"\" = no queue) and the job's status after it (queued: it will be retried).",
         L("tenant_id", "queue", "outcome"), METRICS_ORCH_OUTCOMES * tcap, NULL, 0},
        {&m->submit_assign, METRICS_HISTOGRAM, "orch_job_submit_to_assign_seconds",
         "Time from a job's submission to its assignment by this node's dispatcher.", NULL, 1,
         wait_buckets, ELEMENTSOF(wait_buckets)},
        {&m->assign_start, METRICS_HISTOGRAM, "orch_job_assign_to_start_seconds",
         "Time from a job's assignment to its agent's first report that it started, as "
         "received by this node.",
         NULL, 1, wait_buckets, ELEMENTSOF(wait_buckets)},
        {&m->run_time, METRICS_HISTOGRAM, "orch_job_run_seconds",
         "Time from a job's start to its result, by final status, as received by this node.",
         L("outcome"), 16, run_buckets, ELEMENTSOF(run_buckets)},
        {&m->heartbeats, METRICS_COUNTER, "orch_agent_heartbeats_total",
         "Agents' heartbeats received by this node.", NULL, 1, NULL, 0},
        {&m->agent_auth, METRICS_COUNTER, "orch_agent_auth_total",
         "Agent requests this node admitted, by where their credential was checked: cache "
         "(what it remembered, auth.agent_cache_ttl) or database.",
         L("source"), 2, NULL, 0},
        {&m->commit_items, METRICS_HISTOGRAM, "orch_agent_commit_items",
         "Agents' exchanges (heartbeats, reports, syncs) committed in one transaction by this "
         "node's group commit.",
         NULL, 1, commit_buckets, ELEMENTSOF(commit_buckets)},
        {&m->commit_redone, METRICS_COUNTER, "orch_agent_commit_redone_total",
         "Group-commit transactions that failed and whose exchanges were each redone alone.", NULL,
         1, NULL, 0},
        {&m->queue_depth, METRICS_GAUGE, "orch_job_queue_depth",
         "Jobs waiting (queued), by tenant id and queue name (\"\" = no queue).",
         L("tenant_id", "queue"), tcap, NULL, 0},
        {&m->agents, METRICS_GAUGE, "orch_agents", "Enrolled agents by status.", L("status"), 8,
         NULL, 0},
        {&m->tenant_info, METRICS_GAUGE, "orch_tenant_info",
         "Always 1: a tenant's slug by its id, to join on tenant_id.", L("tenant_id", "tenant"),
         tcap, NULL, 0},
        {&m->quota_used, METRICS_GAUGE, "orch_tenant_quota_used",
         "A tenant's use of a quota resource (agents, concurrent_jobs, schedules, queues, "
         "storage_bytes, api_calls_day).",
         L("tenant_id", "resource"), 6 * tcap, NULL, 0},
        {&m->quota_limit, METRICS_GAUGE, "orch_tenant_quota_limit",
         "A tenant's quota of a resource (its override, else its tier's).",
         L("tenant_id", "resource"), 6 * tcap, NULL, 0},
        {&m->db_up, METRICS_GAUGE, "orch_db_up",
         "1 when this scrape's queries to PostgreSQL succeeded, else 0.", NULL, 1, NULL, 0},
        {&m->pool_conns, METRICS_GAUGE, "orch_db_pool_connections",
         "Open PostgreSQL connections of a pool (tenant or system), in use or idle.",
         L("pool", "state"), 4, NULL, 0},
        {&m->pool_max, METRICS_GAUGE, "orch_db_pool_max_connections",
         "Connections a pool may open (db.pool_size).", L("pool"), 2, NULL, 0},
        {&m->pool_waiting, METRICS_GAUGE, "orch_db_pool_waiting",
         "Threads waiting for a free connection of a pool.", L("pool"), 2, NULL, 0},
        {&m->bus_connected, METRICS_GAUGE, "orch_bus_connected",
         "1 when this node's publishing connection to RabbitMQ is open (it opens on first "
         "use), else 0.",
         NULL, 1, NULL, 0},
        {&m->http_conns, METRICS_GAUGE, "orch_http_connections",
         "Connections open to this node's API listener (clients and agents' long-polls).", NULL, 1,
         NULL, 0},
        {&m->held, METRICS_GAUGE, "orch_gateway_held_requests",
         "Agents' requests this node holds open now, waiting for work (long-polls).", NULL, 1, NULL,
         0},
    };
    for (size_t i = 0; i < ELEMENTSOF(defs); i++) {
        int r = metrics_family_new(m->reg, defs[i].type, defs[i].name, defs[i].help, defs[i].labels,
                                   defs[i].cap, defs[i].buckets, defs[i].nbuckets, defs[i].f);
        if (r < 0) {
            metrics_orch_free(m);
            return r;
        }
    }
    metrics_set(m->build_info, L(ORCH_VERSION), 1);
    *ret = m;
    return 0;
}

void metrics_orch_free(struct metrics_orch *m)
{
    if (!m)
        return;
    metrics_registry_free(m->reg);
    free(m);
}

void metrics_orch_http(void *ctx, enum http_method method, const char *route, int status,
                       uint64_t dur_ns)
{
    struct app *app = ctx;
    struct metrics_orch *m = app->metrics;
    if (!m)
        return;
    static const char *const classes[] = {"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    int c = status / 100;
    const char *cls = classes[c < 1 ? 5 : c > 5 ? 5 : c]; /* no status: it failed */
    const char *meth = http_method_name(method);
    metrics_inc(m->http_requests, L(meth, route, cls));
    metrics_observe(metrics_series(m->http_duration, L(meth, route, cls)), (double)dur_ns / 1e9);
}

void metrics_orch_submitted(struct metrics_orch *m, const char *tenant_id, const char *queue,
                            uint64_t n)
{
    if (m)
        metrics_counter_add(metrics_series(m->submitted, L(tenant_id, queue ? queue : "")), n);
}

void metrics_orch_assigned(struct metrics_orch *m, const char *tenant_id, const char *queue,
                           double wait_s)
{
    if (!m)
        return;
    metrics_inc(m->assigned, L(tenant_id, queue ? queue : ""));
    if (wait_s >= 0)
        metrics_observe(metrics_series(m->submit_assign, NULL), wait_s);
}

void metrics_orch_finished(struct metrics_orch *m, const char *tenant_id, const char *queue,
                           const char *outcome, double run_s)
{
    if (!m)
        return;
    metrics_inc(m->finished, L(tenant_id, queue ? queue : "", outcome));
    if (run_s >= 0)
        metrics_observe(metrics_series(m->run_time, L(outcome)), run_s);
}

void metrics_orch_started(struct metrics_orch *m, double wait_s)
{
    if (m)
        metrics_observe(metrics_series(m->assign_start, NULL), wait_s);
}

void metrics_orch_agent_commit(struct metrics_orch *m, unsigned items)
{
    if (m)
        metrics_observe(metrics_series(m->commit_items, NULL), items);
}

void metrics_orch_agent_commit_redone(struct metrics_orch *m)
{
    if (m)
        metrics_inc(m->commit_redone, NULL);
}

void metrics_orch_heartbeat(struct metrics_orch *m)
{
    if (m)
        metrics_inc(m->heartbeats, NULL);
}

void metrics_orch_agent_auth(struct metrics_orch *m, bool cached)
{
    const char *v[] = {cached ? "cache" : "database"};
    if (m)
        metrics_inc(m->agent_auth, v);
}

/* --- computed at scrape ------------------------------------------------------------------ */

/* /proc/self/stat after the command name: utime (14), stime (15), starttime (22), vsize
 * (23), rss (24), counted from 1 with the pid. */
static void collect_process(struct metrics_orch *m)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char stat[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(stat, 1, sizeof(stat) - 1, f) : 0;
    if (f)
        fclose(f);
    stat[n] = '\0';
    const char *p = strrchr(stat, ')');
    unsigned long long v[25] = {0};
    for (int field = 3; p && field <= 24; field++) {
        p = strchr(p, ' ');
        if (!p)
            break;
        p++;
        v[field] = strtoull(p, NULL, 10);
    }
    unsigned long long btime = 0;
    f = fopen("/proc/stat", "re");
    char line[256];
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "btime ", 6) == 0)
            btime = strtoull(line + 6, NULL, 10);
    if (f)
        fclose(f);
    if (p && tick > 0) {
        metrics_counter_set(metrics_series(m->cpu, NULL), (double)(v[14] + v[15]) / (double)tick);
        metrics_set(m->start_time, NULL, (double)btime + (double)v[22] / (double)tick);
        metrics_set(m->vsz, NULL, (double)v[23]);
        metrics_set(m->rss, NULL, (double)v[24] * (double)page);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.')
            fds++;
    if (d) {
        closedir(d);
        metrics_set(m->fds, NULL, fds - 1); /* less the directory's own */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_set(m->max_fds, NULL, rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur);
}

static void collect_pools(struct metrics_orch *m, struct app *app)
{
    struct store_stats st[2];
    store_stats(app->store, &st[0]);
    bool sys = store_stats_system(app->store, &st[1]);
    static const char *const pools[] = {"tenant", "system"};
    for (size_t i = 0; i < (sys ? 2u : 1u); i++) {
        metrics_set(m->pool_conns, L(pools[i], "in_use"), st[i].size - st[i].idle);
        metrics_set(m->pool_conns, L(pools[i], "idle"), st[i].idle);
        metrics_set(m->pool_max, L(pools[i]), store_pool_size(app->store));
        metrics_set(m->pool_waiting, L(pools[i]), st[i].waiting);
    }
    metrics_set(m->bus_connected, NULL, app->bus && bus_connected(app->bus) ? 1 : 0);
    metrics_set(m->http_conns, NULL, m->api ? http_server_connections(m->api) : 0);
    metrics_set(m->held, NULL, gateway_held(app->gw));
}

void metrics_orch_watch_api(struct metrics_orch *m, struct http_server *srv)
{
    if (!m)
        return;
    metrics_lock(m->reg);
    m->api = srv;
    metrics_unlock(m->reg);
}

/* Waiting jobs of every queue (zero included, so a drained queue reads 0) and of no queue;
 * agents by status; tenants' slugs. Bounded: queues and tenants are capped by quotas, the
 * label sets by the families' caps. */
static const struct store_stmt q_depth = STORE_STMT(
    "metrics_queue_depth",
    "SELECT q.tenant_id, q.name, count(j.id) FROM queues q"
    "  LEFT JOIN jobs j ON j.queue_id = q.id AND j.status = 'queued' GROUP BY 1, 2"
    " UNION ALL "
    "SELECT tenant_id, '', count(*) FROM jobs WHERE status = 'queued' AND queue_id IS NULL"
    "  GROUP BY 1 LIMIT 100000",
    0);
static const struct store_stmt q_agents =
    STORE_STMT("metrics_agents", "SELECT status, count(*) FROM agents GROUP BY 1", 0);
static const struct store_stmt q_tenants =
    STORE_STMT("metrics_tenants", "SELECT id, slug FROM tenants ORDER BY slug LIMIT 1000", 0);

/* Quotas and their use, from the views the tenants' API reads (tenant_quotas,
 * tenant_usage), one row per tenant and resource. */
static const struct store_stmt q_quotas = STORE_STMT(
    "metrics_quotas",
    "SELECT q.tenant_id, r.resource, r.used, r.lim"
    "  FROM (SELECT * FROM tenant_quotas ORDER BY tenant_id LIMIT 1000) q"
    "  JOIN tenant_usage u ON u.tenant_id = q.tenant_id"
    "  CROSS JOIN LATERAL (VALUES"
    "    ('agents', (u.doc->>'agents')::bigint, q.max_agents::bigint),"
    "    ('concurrent_jobs', (u.doc->>'concurrent_jobs')::bigint, q.max_concurrent_jobs::bigint),"
    "    ('schedules', (u.doc->>'schedules')::bigint, q.max_schedules::bigint),"
    "    ('queues', (u.doc->>'queues')::bigint, q.max_queues::bigint),"
    "    ('storage_bytes', (u.doc->>'storage_bytes')::bigint, q.max_storage_bytes::bigint),"
    "    ('api_calls_day', (u.doc->>'api_calls_today')::bigint, q.max_api_calls_day::bigint)"
    "  ) r(resource, used, lim)",
    0);

static int collect_db(struct metrics_orch *m, struct app *app)
{
    metrics_family_clear(m->queue_depth);
    metrics_family_clear(m->tenant_info);
    metrics_family_clear(m->quota_used);
    metrics_family_clear(m->quota_limit);
    for (size_t i = 0; i < ELEMENTSOF(agent_statuses); i++)
        metrics_set(m->agents, L(agent_statuses[i]), 0);
    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    int r = store_tx_begin_system(app->store, &tx);
    /* A scrape is cut short well before Prometheus' own timeout (10 s by default). */
    if (r >= 0)
        r = store_tx_exec_sql(tx, "SET LOCAL statement_timeout = '5s'", NULL);
    if (r >= 0)
        r = store_tx_exec(tx, &q_depth, NULL, &res);
    for (int i = 0; r >= 0 && i < PQntuples(res); i++)
        metrics_gauge_add(
            metrics_series(m->queue_depth, L(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1))),
            strtod(PQgetvalue(res, i, 2), NULL));
    PQclear(res);
    res = NULL;
    if (r >= 0)
        r = store_tx_exec(tx, &q_agents, NULL, &res);
    for (int i = 0; r >= 0 && i < PQntuples(res); i++)
        metrics_set(m->agents, L(PQgetvalue(res, i, 0)), strtod(PQgetvalue(res, i, 1), NULL));
    PQclear(res);
    res = NULL;
    if (r >= 0)
        r = store_tx_exec(tx, &q_tenants, NULL, &res);
    for (int i = 0; r >= 0 && i < PQntuples(res); i++)
        metrics_set(m->tenant_info, L(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)), 1);
    PQclear(res);
    res = NULL;
    if (r >= 0)
        r = store_tx_exec(tx, &q_quotas, NULL, &res);
    for (int i = 0; r >= 0 && i < PQntuples(res); i++) {
        const char *const l[] = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)};
        metrics_gauge_add(metrics_series(m->quota_used, l), strtod(PQgetvalue(res, i, 2), NULL));
        metrics_gauge_add(metrics_series(m->quota_limit, l), strtod(PQgetvalue(res, i, 3), NULL));
    }
    PQclear(res);
    if (tx)
        r = r >= 0 ? store_tx_commit(tx) : (store_tx_rollback(tx), r);
    if (r < 0)
        log_warn("op=metrics.scrape error=%d msg=\"database figures unavailable\"", r);
    metrics_set(m->db_up, NULL, r >= 0 ? 1 : 0);
    return r;
}

/* GET /metrics. Prometheus scrapes one node at a time: the registry's lock serialises two
 * scrapes of the same node. */
static void handle_scrape(struct http_req *req)
{
    struct app *app = http_req_app(req);
    struct metrics_orch *m = app->metrics;
    struct buf out = BUF_INIT;
    metrics_lock(m->reg);
    collect_process(m);
    collect_pools(m, app);
    collect_db(m, app);
    int r = metrics_render(m->reg, &out);
    metrics_unlock(m->reg);
    if (r < 0)
        http_reply_error(req, r, "rendering metrics");
    else
        http_reply_bytes(req, 200, METRICS_CONTENT_TYPE, out.data, out.len);
    buf_free(&out);
}

static const struct http_route metrics_routes[] = {
    {HTTP_GET, "/metrics", HTTP_AUTH_NONE, handle_scrape, 0, 0},
};

int metrics_orch_listen(struct app *app, struct http_server **ret, char *err, size_t errlen)
{
    const struct orchd_config *cfg = app->cfg;
    *ret = NULL;
    if (cfg->metrics_port < 0)
        return 0;
    struct http_options ho = {
        .address = cfg->metrics_address,
        .port = (int)cfg->metrics_port,
        .threads = 1,
        .max_header_bytes = (size_t)cfg->http_max_header_bytes,
        .max_body_bytes = (size_t)cfg->http_max_body_bytes,
        .timeout_ms = cfg->http_timeout_ms,
        .request_timeout_ms = cfg->http_request_timeout_ms,
        .max_connections = 16,
        .max_connections_per_address = 8,
        .routes = metrics_routes,
        .nroutes = ELEMENTSOF(metrics_routes),
        /* No route authenticates: the listener's address is the access control. */
        .hooks = {.app = app, .authenticate = app_authenticate},
    };
    return http_server_start(&ho, ret, err, errlen);
}
