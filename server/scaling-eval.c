/* scaling-eval.c: evaluating the scaling policies (see scaling-eval.h; the decision rule is
 * scaling-decide.h's). */
#include "server/scaling-eval.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "server/app.h"
#include "server/config.h"
#include "server/gateway-internal.h"
#include "server/scaling-decide.h"

/* Key of the evaluator's advisory lock ("orchscal"), not the cron scheduler's: the two
 * rounds of a node do not wait for each other. */
#define SCALING_LOCK_KEY "8030590385818657132"
/* Policies evaluated per round at most, those evaluated longest ago first. */
#define SCALING_BATCH "5000"
/* Decisions kept per policy; older history rows are pruned when a new one is written. */
#define SCALING_HISTORY_KEEP "1000"

static const struct store_stmt q_lock =
    STORE_STMT("scaling_lock", "SELECT pg_try_advisory_xact_lock(" SCALING_LOCK_KEY ")", 0);

/* Count the evaluation on each policy and return its rule, state and inputs. */
static const struct store_stmt q_inputs = STORE_STMT(
    "scaling_inputs",
    "WITH i AS (SELECT * FROM scaling_policy_inputs($1::int, " SCALING_BATCH ")),"
    " u AS (UPDATE scaling_policies p SET evaluations = p.evaluations + 1,"
    "         last_evaluated_at = now(), last_depth = i.depth, last_agents = i.agents,"
    "         last_utilisation = CASE WHEN i.slots > 0"
    "                            THEN round(i.in_use::numeric / i.slots, 4) ELSE 0 END"
    "        FROM i WHERE p.id = i.policy_id"
    "        RETURNING p.*, i.depth, i.agents, i.slots, i.in_use)"
    " SELECT u.id, u.tenant_id, u.name, (SELECT q.name FROM queues q WHERE q.id = u.queue_id),"
    " u.requirements, u.up_depth_per_agent, u.up_utilisation, u.down_depth_per_agent,"
    " u.down_utilisation, u.up_step, u.down_step, u.up_cooldown_s, u.down_cooldown_s,"
    " u.min_agents, u.max_agents, u.desired_agents, u.depth, u.agents, u.slots, u.in_use,"
    " floor(extract(epoch FROM now() - u.last_up_at))::bigint,"
    " floor(extract(epoch FROM now() - greatest(u.last_up_at, u.last_down_at)))::bigint,"
    " u.pool_id FROM u",
    1);

enum {
    C_ID,
    C_TENANT,
    C_NAME,
    C_QUEUE,
    C_REQS,
    C_UP_DEPTH,
    C_UP_UTIL,
    C_DOWN_DEPTH,
    C_DOWN_UTIL,
    C_UP_STEP,
    C_DOWN_STEP,
    C_UP_COOL,
    C_DOWN_COOL,
    C_MIN,
    C_MAX,
    C_DESIRED,
    C_DEPTH,
    C_AGENTS,
    C_SLOTS,
    C_IN_USE,
    C_SINCE_UP,
    C_SINCE_SCALED,
    C_POOL,
};

/* $1 history id, $2 tenant, $3 policy, $4 'up'|'down', $5 previous, $6 desired, $7 reason,
 * $8 the event's data (also the history row's). */
static const struct store_stmt q_decide = STORE_STMT(
    "scaling_decide",
    "WITH h AS (INSERT INTO scaling_history (id, tenant_id, policy_id, direction,"
    "             previous_agents, desired_agents, reason, data)"
    "           VALUES ($1, $2, $3, $4, $5::int, $6::int, $7, $8::jsonb) RETURNING 1),"
    " u AS (UPDATE scaling_policies SET desired_agents = $6::int,"
    "         last_up_at = CASE WHEN $4 = 'up' THEN now() ELSE last_up_at END,"
    "         last_down_at = CASE WHEN $4 = 'down' THEN now() ELSE last_down_at END"
    "        WHERE id = $3 RETURNING 1),"
    " old AS (DELETE FROM scaling_history WHERE id IN (SELECT x.id FROM scaling_history x"
    "           WHERE x.policy_id = $3 ORDER BY x.id DESC OFFSET " SCALING_HISTORY_KEEP ")"
    "         RETURNING 1)"
    " SELECT webhook_emit($2::uuid, 'scale.' || $4, $8::jsonb),"
    " (SELECT count(*) FROM h), (SELECT count(*) FROM u), (SELECT count(*) FROM old)",
    8);

struct scaling_eval {
    struct app *app;
    struct gw_thread th;
};

static int64_t col_int(const PGresult *res, int row, int col, int64_t if_null)
{
    return PQgetisnull(res, row, col) ? if_null : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static double col_num(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? -1.0 : strtod(PQgetvalue(res, row, col), NULL);
}

/* A trigger as JSON: null when not set. */
static json_t *trigger(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

/* The event's data: the numbers that fired it, the rule's thresholds and bounds, and
 * pool_id for a pool's policy (the platform tenant's, sql/0019_pool_scaling.sql). */
static json_t *event_data(const PGresult *res, int i, const struct scaling_rule *r,
                          const struct scaling_input *in, const struct scaling_decision *d)
{
    json_error_t je;
    json_t *reqs =
        PQgetisnull(res, i, C_REQS) ? json_null() : json_loads(PQgetvalue(res, i, C_REQS), 0, &je);
    json_t *queue =
        PQgetisnull(res, i, C_QUEUE) ? json_null() : json_string(PQgetvalue(res, i, C_QUEUE));
    json_t *data = json_pack(
        "{s:s, s:s, s:o*, s:o*, s:s, s:s, s:I, s:I, s:I, s:I,"
        " s:I, s:I, s:I, s:I, s:f, s:f,"
        " s:{s:o, s:o, s:I, s:I, s:o, s:o, s:I, s:I}}",
        "policy_id", PQgetvalue(res, i, C_ID), "policy_name", PQgetvalue(res, i, C_NAME), "queue",
        queue, "requirements", reqs, "direction", d->direction == SCALING_UP ? "up" : "down",
        "reason", d->reason, "previous_agents", (json_int_t)d->current, "desired_agents",
        (json_int_t)d->desired, "min_agents", (json_int_t)r->min_agents, "max_agents",
        (json_int_t)r->max_agents, "queue_depth", (json_int_t)in->depth, "agents",
        (json_int_t)in->agents, "slots", (json_int_t)in->slots, "slots_in_use",
        (json_int_t)in->in_use, "depth_per_agent", d->depth_per_agent, "utilisation",
        d->utilisation, "thresholds", "up_depth_per_agent", trigger(r->up_depth_per_agent),
        "up_utilisation", trigger(r->up_utilisation), "up_step", (json_int_t)r->up_step,
        "up_cooldown_s", (json_int_t)r->up_cooldown_s, "down_depth_per_agent",
        trigger(r->down_depth_per_agent), "down_utilisation", trigger(r->down_utilisation),
        "down_step", (json_int_t)r->down_step, "down_cooldown_s", (json_int_t)r->down_cooldown_s);
    if (data && !PQgetisnull(res, i, C_POOL) &&
        json_object_set_new(data, "pool_id", json_string(PQgetvalue(res, i, C_POOL))) < 0) {
        json_decref(data);
        return NULL;
    }
    return data;
}

/* Decide for row i and record a decision in tx. Returns 1 decided, 0 held, or < 0. */
static int evaluate_one(struct store_tx *tx, const PGresult *res, int i)
{
    struct scaling_rule r = {
        .up_depth_per_agent = col_num(res, i, C_UP_DEPTH),
        .up_utilisation = col_num(res, i, C_UP_UTIL),
        .down_depth_per_agent = col_num(res, i, C_DOWN_DEPTH),
        .down_utilisation = col_num(res, i, C_DOWN_UTIL),
        .up_step = col_int(res, i, C_UP_STEP, 1),
        .down_step = col_int(res, i, C_DOWN_STEP, 1),
        .up_cooldown_s = col_int(res, i, C_UP_COOL, 0),
        .down_cooldown_s = col_int(res, i, C_DOWN_COOL, 0),
        .min_agents = col_int(res, i, C_MIN, 0),
        .max_agents = col_int(res, i, C_MAX, 1),
    };
    struct scaling_input in = {
        .depth = col_int(res, i, C_DEPTH, 0),
        .agents = col_int(res, i, C_AGENTS, 0),
        .slots = col_int(res, i, C_SLOTS, 0),
        .in_use = col_int(res, i, C_IN_USE, 0),
        .desired = col_int(res, i, C_DESIRED, -1),
        .since_up_s = col_int(res, i, C_SINCE_UP, -1),
        .since_scaled_s = col_int(res, i, C_SINCE_SCALED, -1),
    };
    struct scaling_decision d;
    scaling_decide(&r, &in, &d);
    const char *tenant = PQgetvalue(res, i, C_TENANT), *policy = PQgetvalue(res, i, C_ID);
    const char *pool = PQgetisnull(res, i, C_POOL) ? "-" : PQgetvalue(res, i, C_POOL);
    log_debug("op=scaling-evaluate tenant=%s pool=%s policy=%s depth=%lld agents=%lld current=%lld "
              "outcome=%s reason=%s",
              tenant, pool, policy, (long long)in.depth, (long long)in.agents, (long long)d.current,
              d.direction == SCALING_HOLD ? "hold" : "decided", d.reason);
    if (d.direction == SCALING_HOLD)
        return 0;

    json_t *data = event_data(res, i, &r, &in, &d);
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (!text)
        return -ENOMEM;
    char hid[ID_STR_LEN], prev[24], want[24];
    id_uuid7_str(hid);
    snprintf(prev, sizeof(prev), "%lld", (long long)d.current);
    snprintf(want, sizeof(want), "%lld", (long long)d.desired);
    const char *dir = d.direction == SCALING_UP ? "up" : "down";
    const char *p[] = {hid, tenant, policy, dir, prev, want, d.reason, text};
    int rc = store_tx_exec(tx, &q_decide, p, NULL);
    free(text);
    if (rc < 0)
        return rc;
    log_info(
        "op=scale tenant=%s pool=%s policy=%s direction=%s previous=%lld desired=%lld reason=%s "
        "depth=%lld agents=%lld utilisation=%.3f",
        tenant, pool, policy, dir, (long long)d.current, (long long)d.desired, d.reason,
        (long long)in.depth, (long long)in.agents, d.utilisation);
    return 1;
}

/* One round: under the lock, evaluate every enabled policy. */
static void round_once(struct app *app)
{
    uint64_t t0 = clock_mono_ns();
    struct store_tx *tx = NULL;
    int r = store_tx_begin_system(app->store, &tx);
    if (r < 0) {
        gw_log_store_failure("scaling", r);
        return;
    }
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_lock, NULL, &res);
    bool locked = r > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    res = NULL;
    if (!locked) {
        /* Another node evaluates (or the store failed, logged at the commit). */
        r = store_tx_commit(tx);
        if (r < 0)
            gw_log_store_failure("scaling", r);
        return;
    }
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    const char *p[] = {online};
    r = store_tx_exec(tx, &q_inputs, p, &res);
    int n = r > 0 ? PQntuples(res) : 0, decided = 0;
    for (int i = 0; r >= 0 && i < n; i++) {
        int d = evaluate_one(tx, res, i);
        if (d < 0) {
            log_warn("op=scaling-evaluate tenant=%s policy=%s error=%s",
                     PQgetvalue(res, i, C_TENANT), PQgetvalue(res, i, C_ID), strerror(-d));
            r = d;
        }
        decided += d > 0;
    }
    PQclear(res);
    if (r >= 0)
        r = store_tx_commit(tx);
    else
        store_tx_rollback(tx);
    if (r < 0) {
        gw_log_store_failure("scaling", r);
        return;
    }
    log_debug("op=scaling round=done policies=%d decisions=%d ms=%.1f", n, decided,
              (double)(clock_mono_ns() - t0) / 1e6);
}

static void *scaling_eval_main(void *arg)
{
    struct scaling_eval *e = arg;
    while (!atomic_load(&e->th.stop)) {
        round_once(e->app);
        gw_thread_sleep(&e->th, e->app->cfg->scaling_interval_ms);
    }
    return NULL;
}

int scaling_eval_start(struct app *app, struct scaling_eval **ret)
{
    struct scaling_eval *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->app = app;
    int r = gw_thread_start(&e->th, scaling_eval_main, e);
    if (r < 0) {
        free(e);
        return r;
    }
    *ret = e;
    return 0;
}

void scaling_eval_stop(struct scaling_eval *e)
{
    if (!e)
        return;
    gw_thread_stop(&e->th);
    free(e);
}
