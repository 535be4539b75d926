/* dispatcher.c: the dispatch loop (see dispatcher.h and docs/scheduling.md).
 *
 * One thread owns a placement engine (server/placement.c) and keeps it current:
 *   - a full load at start and every dispatch.resync (a new engine: what the increments
 *     missed, jobs other dispatchers took, agents deleted, all go);
 *   - newly queued jobs by jobs.queued_seq after every wake-up (a submission on the bus, a
 *     kick, the tick), and once a second again from the mark of TRAIL_STEPS seconds
 *     before, for the jobs whose transactions committed after a later number was read;
 *   - agents, tenants, queues and pools with their counts of active jobs every
 *     dispatch.refresh and at once on a kick (a slot came free): one query each, counts
 *     from the partial indexes of active jobs, O(agents + tenants + queues), never per job.
 * Then it plans, commits the proposals with assign_batch() in batches of dispatch.batch,
 * reports each outcome back to the engine and wakes the gateways holding the agents.
 *
 * One node's dispatcher places at a time: the one whose connection holds a session advisory
 * lock (lead()); the others stand by, trying for it once a second, and take over within a
 * second or two of the leader's end (its session ends with its process, or PostgreSQL ends
 * it after LEAD_IDLE_MS without the leader's once-a-second check). Dispatchers that each
 * proposed from their own index all refused one another's placements and paid the same
 * reads (docs/scaling.md). Leadership is about cost, not safety: two leaders at once (one
 * that has not yet seen its session end) only contend; PostgreSQL decides every placement,
 * so nothing is ever oversubscribed, and each dispatcher sees every queued job, so one that
 * dies strands nothing. */
#include "server/dispatcher.h"
#include "server/metrics-orch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/bus.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/gateway-internal.h"
#include "server/placement.h"

/* Rows per page of the job load. */
#define LOAD_PAGE 10000
/* The second look at new jobs, once a second, reaches back this many seconds: a job whose
 * insert committed up to that long after a later number was loaded (a batch submission's
 * transaction, slow under load, takes numbers interleaved with a concurrent one's) is seen
 * within a second of its commit, not at the next resync. */
#define TRAIL_STEPS 10
#define TRAIL_MS    1000
/* After a kick, how long rounds reread the counts, and how often: a kick may come before
 * the transaction that caused it commits (a new agent's first heartbeat), and the round it
 * starts would then read the old state; the rounds that follow within the window, one
 * every KICK_ROUND_MS, read the new. */
#define KICK_FRESH_MS 500
#define KICK_ROUND_MS 100
/* Key of the dispatchers' session advisory lock ("orchdisp"), how often the leader checks
 * its session and a standby tries for the lock, and how long PostgreSQL keeps an idle
 * session of the lock (idle_session_timeout): a leader that stopped checking (hung, cut
 * off) loses the lock then. */
#define LEAD_LOCK_KEY "8030876094034228080"
#define LEAD_CHECK_MS 1000
#define LEAD_IDLE_MS  10000

struct dispatcher {
    struct app *app;
    struct gw_thread th;
    atomic_bool kick;      /* a round is wanted now, with fresh counts */
    atomic_bool kick_soon; /* one is wanted soon, with fresh counts (dispatcher_kick_soon()) */
    uint64_t last_round;   /* when the last round started (the thread's) */
    int kick_fd;           /* an eventfd written on a kick (and at stop): the loop's wait ends */
    /* Owned by the thread. */
    struct placement *pl;
    long long seq;                /* highest queued_seq loaded */
    long long trail[TRAIL_STEPS]; /* seq as it was at each of the last second looks */
    int trail_pos;                /* the oldest of them, the next look's start */
    bool trail_set;               /* filled by the first full load */
    uint64_t trail_at;            /* when the next second look is due */
    uint64_t next_refresh, next_resync;
    uint64_t fresh_until; /* rounds reread the counts until then (after a kick) */
    char lease[24], online[24];
    PGconn *lead_pg;       /* the session that holds (or tries for) the lock */
    bool leading;          /* lead_pg holds it */
    uint64_t lead_check;   /* when lead() looks again */
    bool lead_unreachable; /* the last connect failed (said once) */
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *val(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static long long num(const PGresult *res, int row, int col)
{
    const char *s = val(res, row, col);
    return s ? strtoll(s, NULL, 10) : 0;
}

/* --- loading --------------------------------------------------------------------------------- */

static const struct store_stmt q_tenants =
    STORE_STMT("dispatch_tenants",
               "SELECT tq.tenant_id, tq.tier, tq.weight,"
               "       CASE WHEN t.status = 'active' THEN tq.max_concurrent_jobs ELSE 0 END,"
               "       coalesce(c.n, 0)"
               "  FROM tenant_quotas tq JOIN tenants t ON t.id = tq.tenant_id"
               "  LEFT JOIN (SELECT tenant_id, count(*) AS n FROM jobs"
               "              WHERE status IN ('assigned', 'running') GROUP BY tenant_id) c"
               "         ON c.tenant_id = tq.tenant_id",
               0);

static const struct store_stmt q_queues =
    STORE_STMT("dispatch_queues",
               "SELECT q.id, q.paused, coalesce(q.max_running, 0), coalesce(c.n, 0)"
               "  FROM queues q"
               "  LEFT JOIN (SELECT queue_id, count(*) AS n FROM jobs"
               "              WHERE status IN ('assigned', 'running') AND queue_id IS NOT NULL"
               "              GROUP BY queue_id) c ON c.queue_id = q.id",
               0);

static const struct store_stmt q_pools =
    STORE_STMT("dispatch_pools",
               "SELECT id, array_to_json(tiers)::text, array_to_json(tenants)::text FROM pools", 0);

/* A stamp of what an agent offers but its counts and host figures: when it differs from
 * the one the index holds, the agent is read whole. */
#define AGENT_STAMP                                                                                \
    "hashtextextended(concat_ws('|', a.tenant_id, a.pool_id, a.labels::text, a.os, a.arch,"        \
    " a.slots, array_to_string(a.cached_packages, ',')), 0)"

/* Whether the agent may be given a job now ($1: agent.online_window in seconds), and the
 * agents with their active jobs (c.n), counted in one pass over the partial index. */
#define AGENT_ONLINE                                                                               \
    "a.status = 'online' AND a.credential_revoked_at IS NULL"                                      \
    " AND a.last_heartbeat_at > now() - make_interval(secs => $1::int)"
#define AGENT_FROM                                                                                 \
    "  FROM agents a"                                                                              \
    "  LEFT JOIN (SELECT agent_id, count(*) AS n FROM jobs"                                        \
    "              WHERE status IN ('assigned', 'running') GROUP BY agent_id) c"                   \
    "         ON c.agent_id = a.id"

static const struct store_stmt q_agents =
    STORE_STMT("dispatch_agents",
               "SELECT a.id, CASE WHEN a.pool_id IS NULL THEN a.tenant_id END, a.pool_id,"
               "       a.labels::text, a.os, a.arch, coalesce(a.memory_free_bytes, -1),"
               "       coalesce(a.disk_free_bytes, -1), coalesce(a.cpu_percent, -1), a.slots,"
               "       coalesce(c.n, 0), array_to_json(a.cached_packages)::text,"
               "       " AGENT_ONLINE ", " AGENT_STAMP AGENT_FROM,
               1);

/* Between full refreshes: each agent's active jobs, whether it is online, and its stamp. */
static const struct store_stmt q_agent_counts =
    STORE_STMT("dispatch_agent_counts",
               "SELECT a.id, coalesce(c.n, 0),"
               "       " AGENT_ONLINE ", " AGENT_STAMP AGENT_FROM,
               1);

static const struct store_stmt q_jobs = STORE_STMT(
    "dispatch_jobs",
    "SELECT j.id, j.tenant_id, j.queue_id, j.priority,"
    "       (extract(epoch FROM j.created_at) * 1000)::bigint,"
    "       (extract(epoch FROM j.not_before) * 1000)::bigint, j.requirements::text,"
    "       encode(p.sha256, 'hex'), j.queued_seq"
    "  FROM jobs j LEFT JOIN packages p ON p.id = j.package_id AND p.tenant_id = j.tenant_id"
    " WHERE j.status = 'queued' AND NOT j.cancel_requested AND j.queued_seq > $1::bigint"
    " ORDER BY j.queued_seq LIMIT $2::int",
    2);

/* A JSON array of strings as a C array (pointers into arr, which the caller keeps). */
static size_t str_array(json_t *arr, const char **out, size_t max)
{
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && n < max)
            out[n++] = json_string_value(v);
    }
    return n;
}

/* Tenants and queues with their counts; agents (and pools) whole when full, else only
 * their counts and online state, unless one of them is new to the index or its stamp
 * changed (labels, pool, slots, cached packages: a new agent's first heartbeat). Free
 * memory, disk and CPU are read with the full refreshes only. */
static int load_counts(struct dispatcher *d, struct store_tx *tx, bool full)
{
    PGresult *res = NULL;
    int n = store_tx_exec(tx, &q_tenants, NULL, &res);
    for (int i = 0; i < n; i++)
        placement_tenant_set(d->pl, val(res, i, 0), val(res, i, 1), (int)num(res, i, 2),
                             (int)num(res, i, 3), (int)num(res, i, 4));
    PQclear(res);
    if (n < 0)
        return n;
    res = NULL;
    n = store_tx_exec(tx, &q_queues, NULL, &res);
    for (int i = 0; i < n; i++)
        placement_queue_set(d->pl, val(res, i, 0), strcmp(val(res, i, 1), "t") == 0,
                            (int)num(res, i, 2), (int)num(res, i, 3));
    PQclear(res);
    if (n < 0)
        return n;
    const char *p[] = {d->online};
    if (!full) {
        res = NULL;
        n = store_tx_exec(tx, &q_agent_counts, p, &res);
        for (int i = 0; i < n && !full; i++)
            full = placement_agent_update(d->pl, val(res, i, 0), (int)num(res, i, 1),
                                          strcmp(val(res, i, 2) ? val(res, i, 2) : "f", "t") == 0,
                                          num(res, i, 3)) < 0;
        PQclear(res);
        if (n < 0 || !full)
            return n < 0 ? n : 0;
    }
    res = NULL;
    n = store_tx_exec(tx, &q_pools, NULL, &res);
    for (int i = 0; i < n; i++) {
        json_t *tiers = json_loads(val(res, i, 1), 0, NULL);
        json_t *tenants = json_loads(val(res, i, 2), 0, NULL);
        size_t nt = json_array_size(tiers), nn = json_array_size(tenants);
        const char **t = calloc(nt + 1, sizeof(*t)), **m = calloc(nn + 1, sizeof(*m));
        if (t && m)
            placement_pool_set(d->pl, val(res, i, 0), t, str_array(tiers, t, nt), m,
                               str_array(tenants, m, nn));
        free(t);
        free(m);
        json_decref(tiers);
        json_decref(tenants);
    }
    PQclear(res);
    if (n < 0)
        return n;
    res = NULL;
    n = store_tx_exec(tx, &q_agents, p, &res);
    for (int i = 0; i < n; i++) {
        json_t *labels = json_loads(val(res, i, 3), 0, NULL);
        json_t *pkgs = json_loads(val(res, i, 11), 0, NULL);
        size_t np = json_array_size(pkgs);
        const char **pk = calloc(np + 1, sizeof(*pk));
        struct placement_agent a = {
            .id = val(res, i, 0),
            .tenant_id = val(res, i, 1),
            .pool_id = val(res, i, 2),
            .labels = json_is_object(labels) ? labels : NULL,
            .os = val(res, i, 4),
            .arch = val(res, i, 5),
            .memory_free_bytes = num(res, i, 6),
            .disk_free_bytes = num(res, i, 7),
            .cpu_percent = strtod(val(res, i, 8), NULL),
            .slots = (int)num(res, i, 9),
            .active = (int)num(res, i, 10),
            .packages = pk,
            .npackages = pk ? str_array(pkgs, pk, np) : 0,
            .online = strcmp(val(res, i, 12) ? val(res, i, 12) : "f", "t") == 0,
            .stamp = num(res, i, 13),
        };
        placement_agent_set(d->pl, &a);
        free(pk);
        json_decref(labels);
        json_decref(pkgs);
    }
    PQclear(res);
    return n < 0 ? n : 0;
}

/* Jobs queued with a number above from, page by page. Returns how many were new, or a
 * store error. */
static int load_jobs(struct dispatcher *d, struct store_tx *tx, long long from)
{
    int added = 0;
    for (;;) {
        char after[24], page[24];
        snprintf(after, sizeof(after), "%lld", from);
        snprintf(page, sizeof(page), "%d", LOAD_PAGE);
        const char *p[] = {after, page};
        PGresult *res = NULL;
        int n = store_tx_exec(tx, &q_jobs, p, &res);
        if (n < 0)
            return n;
        for (int i = 0; i < n; i++) {
            from = num(res, i, 8);
            if (from > d->seq)
                d->seq = from;
            /* The second look sees mostly jobs the engine has already. */
            if (placement_job_known(d->pl, val(res, i, 0)))
                continue;
            json_t *req = json_loads(val(res, i, 6), 0, NULL);
            struct placement_job j = {
                .id = val(res, i, 0),
                .tenant_id = val(res, i, 1),
                .queue_id = val(res, i, 2),
                .priority = (int)num(res, i, 3),
                .created_ms = num(res, i, 4),
                .not_before_ms = num(res, i, 5),
                .requirements = json_is_object(req) ? req : NULL,
                .package_digest = val(res, i, 7),
            };
            if (placement_job_add(d->pl, &j) == 0)
                added++;
            json_decref(req);
        }
        PQclear(res);
        if (n < LOAD_PAGE)
            return added;
    }
}

/* A new engine loaded from scratch, replacing the old one only when the load succeeded. */
static int resync(struct dispatcher *d)
{
    struct placement_config cfg = {.aging_ms = d->app->cfg->dispatch_aging_ms};
    struct placement *old = d->pl, *pl = NULL;
    long long old_seq = d->seq;
    int r = placement_new(&cfg, &pl);
    if (r < 0)
        return r;
    d->pl = pl;
    d->seq = 0;
    struct store_tx *tx = NULL;
    r = store_tx_begin_system(d->app->store, &tx);
    if (r >= 0)
        r = load_counts(d, tx, true);
    if (r >= 0)
        r = load_jobs(d, tx, 0);
    if (tx)
        r = r >= 0 ? store_tx_commit(tx) : (store_tx_rollback(tx), r);
    if (r < 0) {
        placement_free(pl);
        d->pl = old;
        d->seq = old_seq;
        return r;
    }
    placement_free(old);
    /* The marks stay valid across a resync (each is below what was loaded then); the
     * first full load sets them. */
    for (int i = 0; !d->trail_set && i < TRAIL_STEPS; i++)
        d->trail[i] = d->seq;
    d->trail_set = true;
    struct placement_stats st;
    placement_stats(d->pl, &st);
    log_debug("op=dispatch.resync agents=%zu tenants=%zu jobs=%zu delayed=%zu", st.agents,
              st.tenants, st.jobs, st.delayed);
    return 0;
}

/* Counts (when due or wanted) and the jobs queued since the last look. */
static int refresh(struct dispatcher *d, bool counts)
{
    uint64_t now = clock_mono_ns();
    struct store_tx *tx = NULL;
    int r = store_tx_begin_system(d->app->store, &tx);
    if (r < 0)
        return r;
    bool due = now >= d->next_refresh;
    if (counts || due)
        r = load_counts(d, tx, due);
    if (due)
        d->next_refresh = now + (uint64_t)d->app->cfg->dispatch_refresh_ms * 1000000u;
    long long from = d->seq;
    if (now >= d->trail_at) {
        /* A job whose insert committed after a later number was loaded: seen now. */
        from = d->trail[d->trail_pos];
        d->trail[d->trail_pos] = d->seq;
        d->trail_pos = (d->trail_pos + 1) % TRAIL_STEPS;
        d->trail_at = now + (uint64_t)TRAIL_MS * 1000000u;
    }
    if (r >= 0)
        r = load_jobs(d, tx, from);
    return r >= 0 ? store_tx_commit(tx) : (store_tx_rollback(tx), r);
}

static const struct store_stmt q_assign =
    STORE_STMT("dispatch_assign",
               "SELECT job_id, agent_id, tenant_id, outcome, epoch, gateway_node,"
               "       (SELECT extract(epoch FROM clock_timestamp() - j.created_at)"
               "          FROM jobs j WHERE j.id = a.job_id),"
               "       (SELECT q.name FROM jobs j JOIN queues q ON q.id = j.queue_id"
               "         WHERE j.id = a.job_id AND a.outcome = 'assigned')"
               "  FROM assign_batch($1::uuid[], $2::uuid[], $3::int, $4::int) a",
               4);

static const struct {
    const char *outcome;
    enum placement_refusal why;
} refusals[] = {
    {"job_gone", PLACEMENT_JOB_GONE},       {"job_busy", PLACEMENT_JOB_LATER},
    {"job_later", PLACEMENT_JOB_LATER},     {"queue_paused", PLACEMENT_QUEUE_FULL},
    {"queue_full", PLACEMENT_QUEUE_FULL},   {"agent_gone", PLACEMENT_AGENT_GONE},
    {"agent_unfit", PLACEMENT_AGENT_GONE},  {"agent_full", PLACEMENT_AGENT_FULL},
    {"tenant_full", PLACEMENT_TENANT_FULL},
};

static enum placement_refusal refusal_of(const char *outcome)
{
    for (size_t i = 0; i < ELEMENTSOF(refusals); i++)
        if (strcmp(refusals[i].outcome, outcome) == 0)
            return refusals[i].why;
    return PLACEMENT_JOB_LATER;
}

/* Decide n proposals in one transaction and report each outcome to the engine. Returns
 * how many were assigned, or a store error (then every proposal waits again). */
static int commit_batch(struct dispatcher *d, const struct placement_proposal *p, size_t n)
{
    struct buf jobs = BUF_INIT, agents = BUF_INIT;
    buf_append_str(&jobs, "{");
    buf_append_str(&agents, "{");
    for (size_t i = 0; i < n; i++) {
        buf_printf(&jobs, "%s%s", i ? "," : "", p[i].job_id);
        buf_printf(&agents, "%s%s", i ? "," : "", p[i].agent_id);
    }
    buf_append_str(&jobs, "}");
    buf_append_str(&agents, "}");
    const char *params[] = {jobs.data, agents.data, d->lease, d->online};
    PGresult *res = NULL;
    struct store_tx *tx = NULL;
    int r = store_tx_begin_system(d->app->store, &tx);
    int rows = r >= 0 ? store_tx_exec(tx, &q_assign, params, &res) : r;
    if (tx)
        r = rows >= 0 ? store_tx_commit(tx) : (store_tx_rollback(tx), rows);
    buf_free(&jobs);
    buf_free(&agents);
    if (r >= 0 && (size_t)rows != n)
        r = -EIO; /* one row per proposal, always */
    if (r < 0) {
        PQclear(res);
        for (size_t i = 0; i < n; i++)
            placement_refused(d->pl, p[i].job_id, PLACEMENT_JOB_LATER);
        return r;
    }
    int assigned = 0;
    for (size_t i = 0; i < n; i++) {
        const char *outcome = PQgetvalue(res, (int)i, 3);
        if (strcmp(outcome, "assigned") != 0) {
            log_debug("op=dispatch.refused job=%s tenant=%s agent=%s outcome=%s", p[i].job_id,
                      p[i].tenant_id, p[i].agent_id, outcome);
            placement_refused(d->pl, p[i].job_id, refusal_of(outcome));
            continue;
        }
        placement_accepted(d->pl, p[i].job_id);
        assigned++;
        metrics_orch_assigned(
            d->app->metrics, p[i].tenant_id, PQgetvalue(res, (int)i, 7),
            PQgetisnull(res, (int)i, 6) ? -1 : strtod(PQgetvalue(res, (int)i, 6), NULL));
        log_info("op=dispatch job=%s tenant=%s agent=%s epoch=%s", p[i].job_id, p[i].tenant_id,
                 p[i].agent_id, PQgetvalue(res, (int)i, 4));
        gateway_notify_node(d->app, p[i].agent_id, val(res, (int)i, 5));
    }
    PQclear(res);
    return assigned;
}

static bool lead_still(struct dispatcher *d);

/* One round: bring the index up to date, then place until a batch comes back short (or
 * this node no longer leads). */
static void round_run(struct dispatcher *d, struct placement_proposal *props, bool counts)
{
    const struct orchd_config *cfg = d->app->cfg;
    uint64_t now = clock_mono_ns();
    int r;
    if (!d->pl || now >= d->next_resync) {
        r = resync(d);
        d->next_resync = now + (uint64_t)cfg->dispatch_resync_ms * 1000000u;
        d->next_refresh = now + (uint64_t)cfg->dispatch_refresh_ms * 1000000u;
    } else {
        r = refresh(d, counts);
    }
    if (r < 0) {
        gw_log_store_failure("dispatch", r);
        if (!d->pl)
            return;
    }
    size_t batch = (size_t)cfg->dispatch_batch;
    while (!atomic_load(&d->th.stop) && lead_still(d)) {
        size_t n = placement_plan(d->pl, wall_ms(), props, batch);
        if (n == 0)
            return;
        r = commit_batch(d, props, n);
        if (r < 0) {
            gw_log_store_failure("dispatch", r);
            return;
        }
        if (n < batch)
            return;
    }
}

/* Connect lead_pg: the system role, TCP keep-alives, and PostgreSQL ending the session
 * once idle for LEAD_IDLE_MS (the leader's check comes every LEAD_CHECK_MS). */
static PGconn *lead_connect(struct dispatcher *d)
{
    char opts[64];
    snprintf(opts, sizeof(opts), "-c idle_session_timeout=%d", LEAD_IDLE_MS);
    const char *keys[] = {"dbname",           "connect_timeout", "application_name",
                          "keepalives",       "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "options",         NULL};
    const char *vals[] = {
        d->app->cfg->db_system_url, "5", "orchd-dispatch-lead", "1", "5", "2", "2", opts, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (pg && PQstatus(pg) != CONNECTION_OK) {
        /* Once an outage, not every second of it; the store's own log says why. */
        if (!d->lead_unreachable)
            log_warn("op=dispatch.lead error=\"cannot connect to the database\"");
        PQfinish(pg);
        pg = NULL;
    }
    d->lead_unreachable = pg == NULL;
    return pg;
}

/* The one-row, one-column answer of sql on lead_pg ("t", "1"), or false when the session
 * failed (it is then closed). */
static bool lead_query(struct dispatcher *d, const char *sql, bool *value)
{
    PGresult *res = PQexec(d->lead_pg, sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok && value)
        *value = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!ok) {
        PQfinish(d->lead_pg);
        d->lead_pg = NULL;
    }
    return ok;
}

/* Whether this dispatcher leads: holds the lock on a session that still answers. Looks at
 * most once every LEAD_CHECK_MS. Losing the lead drops the engine (a new lead starts from a
 * full load: another node placed meanwhile) and says so in the log. */
static bool lead(struct dispatcher *d)
{
    if (!d->app->cfg->dispatch_exclusive)
        return true;
    uint64_t now = clock_mono_ns();
    if (now < d->lead_check)
        return d->leading;
    d->lead_check = now + LEAD_CHECK_MS * 1000000ull;
    bool was = d->leading;
    /* A session lost (here or by lead_still()) lost the lock with it, even if a new one
     * takes it again at once: another node may have placed meanwhile. */
    bool lost = d->leading && (!d->lead_pg || !lead_query(d, "SELECT true", NULL));
    if (lost)
        d->leading = false;
    if (!d->leading) {
        if (!d->lead_pg)
            d->lead_pg = lead_connect(d);
        bool got = false;
        d->leading = d->lead_pg &&
                     lead_query(d, "SELECT pg_try_advisory_lock(" LEAD_LOCK_KEY ")", &got) && got;
    }
    if (d->leading != was || lost) {
        log_info("op=dispatch.lead state=%s", d->leading ? "leading" : "standby");
        placement_free(d->pl);
        d->pl = NULL;
        d->trail_set = false;
    }
    return d->leading;
}

/* Between the batches of a long round: the lock's session checked when due (it must not
 * stay idle LEAD_IDLE_MS), and false once it is gone, to end the round; the loop's lead()
 * then stands by. */
static bool lead_still(struct dispatcher *d)
{
    if (!d->app->cfg->dispatch_exclusive)
        return true;
    uint64_t now = clock_mono_ns();
    if (now < d->lead_check)
        return d->lead_pg != NULL;
    d->lead_check = now + LEAD_CHECK_MS * 1000000ull;
    if (d->lead_pg && lead_query(d, "SELECT true", NULL))
        return true;
    d->lead_check = 0; /* lead() looks at once */
    return false;
}

static void *dispatch_main(void *arg)
{
    struct dispatcher *d = arg;
    struct app *app = d->app;
    struct bus_sub *sub = NULL;
    struct placement_proposal *props = calloc((size_t)app->cfg->dispatch_batch, sizeof(*props));
    if (!props) {
        log_error("op=dispatch error=\"out of memory\"");
        bus_sub_free(sub);
        return NULL;
    }
    uint64_t next_tick = 0;
    while (!atomic_load(&d->th.stop)) {
        /* A standby takes no submissions off the bus: the leader's wake-ups. */
        if (!lead(d)) {
            bus_sub_free(sub);
            sub = NULL;
            gw_thread_sleep(&d->th, LEAD_CHECK_MS);
            continue;
        }
        if (!sub)
            bus_sub_new(app->cfg->amqp_url, app->cfg->bus_jobs_queue, false, &sub);
        /* A submission (on the bus) or a kick (a slot came free) starts a round at once;
         * otherwise one every tick. The wait on the bus ends at a kick too (kick_fd); what
         * else came meanwhile is drained, one round serves it all. */
        char *body = NULL;
        size_t len = 0;
        uint64_t now0 = clock_mono_ns();
        int wait_ms = now0 < next_tick ? (int)((next_tick - now0 + 999999) / 1000000) : 0;
        int r = sub ? bus_sub_next_or_wake(sub, wait_ms, d->kick_fd, &body, &len) : 0;
        /* A submission only starts the round: what it names is a hint (proto/bus.h). */
        struct proto_bus_jobs_submitted m = {0};
        if (r == 1 && proto_bus_jobs_submitted_decode(body, len, &m, NULL) < 0)
            log_debug("op=dispatch.bus error=\"not a jobs.submitted message\"");
        proto_bus_jobs_submitted_clear(&m);
        free(body);
        while (r == 1) {
            body = NULL;
            if (bus_sub_next(sub, 0, &body, &len) != 1)
                break;
            free(body);
        }
        if (r < 0 || !sub)
            gw_thread_sleep(&d->th, 5);
        bool kicked = atomic_exchange(&d->kick, false);
        uint64_t now = clock_mono_ns();
        if (kicked)
            d->fresh_until = now + KICK_FRESH_MS * 1000000u;
        /* A slot freed on any node (dispatcher_kick_soon()): rounds with fresh counts, the
         * next within KICK_ROUND_MS of the last, not one per event. */
        if (atomic_exchange(&d->kick_soon, false)) {
            d->fresh_until = now + KICK_FRESH_MS * 1000000u;
            uint64_t soon = d->last_round + KICK_ROUND_MS * 1000000u;
            if (soon < next_tick)
                next_tick = soon;
        }
        if (r != 1 && !kicked && now < next_tick)
            continue;
        uint64_t tick_ms = (uint64_t)app->cfg->dispatch_tick_ms;
        if (now < d->fresh_until && tick_ms > KICK_ROUND_MS)
            tick_ms = KICK_ROUND_MS;
        next_tick = now + tick_ms * 1000000u;
        d->last_round = now;
        round_run(d, props, now < d->fresh_until);
    }
    free(props);
    placement_free(d->pl);
    d->pl = NULL;
    bus_sub_free(sub);
    /* Ending the session frees the lock for a standby at once. */
    PQfinish(d->lead_pg);
    d->lead_pg = NULL;
    return NULL;
}

/* End the loop's wait on the bus now. */
static void wake(struct dispatcher *d)
{
    uint64_t one = 1;
    if (write(d->kick_fd, &one, sizeof(one)) < 0) {
        /* the counter is full, so the loop is awake already */
    }
}

void dispatcher_kick(struct dispatcher *d)
{
    if (!d)
        return;
    atomic_store(&d->kick, true);
    wake(d);
}

void dispatcher_kick_soon(struct dispatcher *d)
{
    if (!d || atomic_exchange(&d->kick_soon, true))
        return; /* the loop has one to see already */
    wake(d);
}

int dispatcher_start(struct app *app, struct dispatcher **ret)
{
    struct dispatcher *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->app = app;
    d->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->kick_fd < 0) {
        int e = -errno;
        free(d);
        return e;
    }
    snprintf(d->lease, sizeof(d->lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    snprintf(d->online, sizeof(d->online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    int r = gw_thread_start(&d->th, dispatch_main, d);
    if (r < 0) {
        close(d->kick_fd);
        free(d);
        return r;
    }
    *ret = d;
    return 0;
}

void dispatcher_stop(struct dispatcher *d)
{
    if (!d)
        return;
    atomic_store(&d->th.stop, true);
    wake(d);
    gw_thread_stop(&d->th);
    close(d->kick_fd);
    free(d);
}
