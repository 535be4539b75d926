/* cron-fire.c: firing due schedules (see cron-fire.h). */
#include "server/cron-fire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/bus.h"
#include "server/api.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/config.h"
#include "server/cron.h"
#include "server/gateway-internal.h"
#include "server/metrics-orch.h"

/* Key of the scheduler's advisory lock ("orchcron"). */
#define CRON_FIRE_LOCK_KEY "8030602234734326382"
/* Schedules fired per round at most; the rest wait a second. */
#define CRON_FIRE_BATCH "200"
/* A time reached later than this (all schedulers were down) is missed: the schedule's
 * missed_policy decides. Under normal operation a round comes every second. */
#define CRON_MISSED_AFTER_S 60
/* Missed times counted at most (for the reason's text). */
#define CRON_MISSED_COUNT_MAX 100000

static const struct store_stmt q_due =
    STORE_STMT("cron_due",
               "SELECT s.id, s.tenant_id FROM schedules s"
               " WHERE pg_try_advisory_xact_lock(" CRON_FIRE_LOCK_KEY ")"
               "   AND s.enabled AND s.next_run_at <= to_timestamp($1::bigint)"
               " ORDER BY s.next_run_at LIMIT " CRON_FIRE_BATCH,
               1);

static const struct store_stmt q_lock_one = STORE_STMT(
    "cron_lock_one",
    "SELECT cron, timezone, missed_policy, overlap_policy,"
    " extract(epoch FROM next_run_at)::bigint, job_template,"
    " (SELECT q.name FROM queues q WHERE q.id = s.queue_id), name"
    " FROM schedules s WHERE id = $1 AND enabled AND next_run_at <= to_timestamp($2::bigint)"
    " FOR UPDATE SKIP LOCKED",
    2);

/* The schedule's jobs that are not finished: all of them, and those still queued. */
static const struct store_stmt q_active =
    STORE_STMT("cron_active",
               "SELECT count(*), count(*) FILTER (WHERE j.status = 'queued')"
               " FROM schedule_firings f JOIN jobs j ON j.id = f.job_id"
               " WHERE f.schedule_id = $1 AND j.status IN ('queued', 'assigned', 'running')",
               1);

/* The primary key (schedule_id, scheduled_for) fails the transaction of a second firing
 * of the same time. */
static const struct store_stmt q_record = STORE_STMT(
    "cron_record",
    "INSERT INTO schedule_firings (schedule_id, tenant_id, scheduled_for, status, reason, job_id)"
    " VALUES ($1, app_tenant(), to_timestamp($2::bigint), $3, left($4, 500), $5::uuid)",
    5);

static const struct store_stmt q_advance =
    STORE_STMT("cron_advance",
               "UPDATE schedules SET next_run_at = to_timestamp($2::bigint),"
               " last_run_at = now() WHERE id = $1",
               2);

/* The schedule.fired or schedule.skipped event, in the firing's transaction: a webhook
 * subscriber hears of every recorded firing, and of none that rolled back. */
static const struct store_stmt q_event =
    STORE_STMT("cron_event",
               "SELECT webhook_emit(app_tenant(), $1, jsonb_build_object('schedule_id', $2::uuid,"
               " 'name', $7::text,"
               " 'scheduled_for', to_timestamp($3::bigint), 'job_id', $4::uuid, 'reason', $5::text,"
               " 'next_run_at', to_timestamp($6::bigint)))",
               7);

struct cron_fire {
    struct app *app;
    struct gw_thread th;
};

/* What one firing decided. */
struct firing {
    int64_t scheduled_for, next;
    const char *status; /* "fired" | "skipped" */
    char reason[256];
    char job_id[ID_STR_LEN];
    char name[72]; /* the schedule's, for its event */
};

/* The log line of a committed firing (its webhook event is recorded by record()). */
static void cron_fire_log(const char *tenant, const char *id, const struct firing *f)
{
    char at[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(f->scheduled_for * 1000, at, sizeof(at));
    if (strcmp(f->status, "fired") == 0)
        log_info("op=schedule-fired tenant=%s schedule=%s scheduled_for=%s job=%s", tenant, id, at,
                 f->job_id);
    else
        log_info("op=schedule-skipped tenant=%s schedule=%s scheduled_for=%s reason=\"%s\"", tenant,
                 id, at, f->reason);
}

/* Tell the dispatcher about the new job; on failure its periodic scan finds it. */
static void announce(struct app *app, const char *tenant, const char *job_id)
{
    if (!app->bus)
        return;
    json_t *ids = json_pack("[s]", job_id);
    char *text = ids ? proto_bus_jobs_submitted_encode(tenant, ids) : NULL;
    if (text) {
        int r = bus_publish(app->bus, app->cfg->bus_jobs_queue, text, strlen(text),
                            app->cfg->bus_publish_timeout_ms);
        if (r < 0)
            log_warn("op=schedule-announce tenant=%s job=%s error=%s", tenant, job_id,
                     strerror(-r));
    }
    free(text);
    json_decref(ids);
}

/* Decide which time fires and the next one, from the row's due time and now. */
static int plan(const struct cron *c, const struct cron_tz *z, int64_t due, int64_t now,
                bool run_once, struct firing *f)
{
    int64_t n1;
    int r = cron_next(c, z, due, &n1);
    if (r < 0)
        return r;
    if (n1 > now && now - due <= CRON_MISSED_AFTER_S) {
        f->scheduled_for = due;
        f->next = n1;
        f->status = "fired";
        return 0;
    }
    /* Missed times: find the last one not after now, and the first after it. */
    int64_t last = due, t = due;
    long n = 1;
    while (n < CRON_MISSED_COUNT_MAX && cron_next(c, z, t, &t) == 0 && t <= now) {
        last = t;
        n++;
    }
    r = cron_next(c, z, now, &f->next);
    if (r < 0)
        return r;
    f->scheduled_for = last;
    if (run_once) {
        f->status = "fired";
        snprintf(f->reason, sizeof(f->reason), "run once for %ld missed firing time%s", n,
                 n == 1 ? "" : "s");
    } else {
        f->status = "skipped";
        snprintf(f->reason, sizeof(f->reason),
                 "missed: %ld firing time%s passed while no "
                 "scheduler ran (missed_policy skip)",
                 n, n == 1 ? "" : "s");
    }
    return 0;
}

/* Record f, advance the schedule and queue its event, in tx. */
static int record(struct store_tx *tx, const char *id, const struct firing *f)
{
    char at[24], next[24], type[32];
    snprintf(at, sizeof(at), "%" PRId64, f->scheduled_for);
    snprintf(next, sizeof(next), "%" PRId64, f->next);
    snprintf(type, sizeof(type), "schedule.%s", f->status);
    const char *reason = f->reason[0] ? f->reason : NULL, *job = f->job_id[0] ? f->job_id : NULL;
    const char *p[] = {id, at, f->status, reason, job};
    int r = store_tx_exec(tx, &q_record, p, NULL);
    const char *pa[] = {id, next};
    if (r >= 0)
        r = store_tx_exec(tx, &q_advance, pa, NULL);
    const char *pe[] = {type, id, at, job, reason, next, f->name};
    if (r >= 0)
        r = store_tx_exec(tx, &q_event, pe, NULL);
    return r;
}

/* Fire schedule id of tenant if it is still due at now. Returns 1 fired or skipped, 0 not
 * due any more (another node took it), or < 0. */
static int fire_one(struct app *app, const char *tenant, const char *id, int64_t now)
{
    struct store_tx *tx = NULL;
    int r = store_tx_begin_tenant(app->store, tenant, &tx);
    if (r < 0)
        return r;
    char nows[24];
    snprintf(nows, sizeof(nows), "%" PRId64, now);
    const char *p[] = {id, nows};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_lock_one, p, &res);
    if (r <= 0) {
        PQclear(res);
        store_tx_rollback(tx);
        return r;
    }
    struct firing f = {0};
    struct cron c;
    const struct cron_tz *z;
    char err[160];
    json_error_t je;
    json_t *job = json_loads(PQgetvalue(res, 0, 5), 0, &je);
    bool run_once = strcmp(PQgetvalue(res, 0, 2), "run_once") == 0;
    /* Copied: res is cleared before the overlap policy is read. */
    char overlap[16];
    snprintf(overlap, sizeof(overlap), "%s", PQgetvalue(res, 0, 3));
    int64_t due = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    r = cron_parse(PQgetvalue(res, 0, 0), &c, err, sizeof(err));
    if (r >= 0)
        r = cron_tz_get(PQgetvalue(res, 0, 1), &z, err, sizeof(err));
    if (r >= 0)
        r = plan(&c, z, due, now, run_once, &f);
    if (r >= 0 && !job)
        r = -EINVAL;
    snprintf(f.name, sizeof(f.name), "%s", PQgetvalue(res, 0, 7));
    if (r >= 0 && !PQgetisnull(res, 0, 6))
        json_object_set_new(job, "queue", json_string(PQgetvalue(res, 0, 6)));
    PQclear(res);
    res = NULL;
    if (r >= 0 && strcmp(f.status, "fired") == 0 && strcmp(overlap, "allow") != 0) {
        const char *pid[] = {id};
        r = store_tx_exec(tx, &q_active, pid, &res);
        if (r > 0) {
            long active = strtol(PQgetvalue(res, 0, 0), NULL, 10);
            long queued = strtol(PQgetvalue(res, 0, 1), NULL, 10);
            bool skip = strcmp(overlap, "skip") == 0 ? active > 0 : queued > 0;
            if (skip) {
                f.status = "skipped";
                snprintf(f.reason, sizeof(f.reason), "%s",
                         strcmp(overlap, "skip") == 0
                             ? "overlap: the previous job is still queued or running "
                               "(overlap_policy skip)"
                             : "overlap: a job of this schedule already waits queued "
                               "(overlap_policy queue_one)");
            }
        }
        PQclear(res);
    }
    char field[192] = "", detail[256] = "";
    bool created = false;
    if (r >= 0 && strcmp(f.status, "fired") == 0) {
        r = api_jobs_insert(tx, job, f.job_id, &created, field, sizeof(field), detail,
                            sizeof(detail), "job.");
    }
    if (r >= 0)
        r = record(tx, id, &f);
    if (r >= 0)
        r = store_tx_commit(tx);
    else
        store_tx_rollback(tx);
    if (r == -EEXIST) {
        /* Another node recorded this time first: nothing to do. */
        log_debug("op=schedule-fire tenant=%s schedule=%s outcome=already-fired", tenant, id);
        json_decref(job);
        return 0;
    }
    if (r < 0 && field[0]) {
        /* The template no longer makes a job (its package or queue was deleted): the time
         * is recorded as skipped, with the reason, and the schedule moves on. */
        f.status = "skipped";
        f.job_id[0] = '\0';
        /* Cut to fit the reason (256 bytes): gcc -O0 rejects a possible truncation. */
        snprintf(f.reason, sizeof(f.reason), "the job was refused: %.80s: %.150s", field, detail);
        r = store_tx_begin_tenant(app->store, tenant, &tx);
        if (r >= 0) {
            r = record(tx, id, &f);
            if (r >= 0)
                r = store_tx_commit(tx);
            else
                store_tx_rollback(tx);
        }
    }
    /* Counted as the API counts its submissions (orch_jobs_submitted_total). */
    if (r >= 0 && created && f.job_id[0]) {
        const char *queue = job ? json_string_value(json_object_get(job, "queue")) : NULL;
        metrics_orch_submitted(app->metrics, tenant, queue ? queue : "", 1);
    }
    json_decref(job);
    if (r < 0)
        return r;
    cron_fire_log(tenant, id, &f);
    if (f.job_id[0])
        announce(app, tenant, f.job_id);
    return 1;
}

/* One round: under the lock, fire every due schedule. */
static void round_once(struct app *app)
{
    int64_t now = (clock_real_ms() + app->cfg->sched_clock_offset_ms) / 1000;
    struct store_tx *lock = NULL;
    int r = store_tx_begin_system(app->store, &lock);
    if (r < 0) {
        gw_log_store_failure("scheduler", r);
        return;
    }
    char nows[24];
    snprintf(nows, sizeof(nows), "%" PRId64, now);
    const char *p[] = {nows};
    PGresult *res = NULL;
    r = store_tx_exec(lock, &q_due, p, &res);
    /* The lock transaction stays open while the schedules fire (each in its own
     * transaction), so that no other node's round runs meanwhile. */
    for (int i = 0; r > 0 && i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0), *tenant = PQgetvalue(res, i, 1);
        int fr = fire_one(app, tenant, id, now);
        if (fr < 0)
            log_warn("op=schedule-fire tenant=%s schedule=%s error=%s", tenant, id, strerror(-fr));
    }
    PQclear(res);
    r = store_tx_commit(lock);
    if (r < 0)
        gw_log_store_failure("scheduler", r);
}

static void *cron_fire_main(void *arg)
{
    struct cron_fire *f = arg;
    while (!atomic_load(&f->th.stop)) {
        log_debug("op=scheduler round=fire");
        round_once(f->app);
        gw_thread_sleep(&f->th, 1000);
    }
    return NULL;
}

int cron_fire_start(struct app *app, struct cron_fire **ret)
{
    struct cron_fire *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->app = app;
    int r = gw_thread_start(&f->th, cron_fire_main, f);
    if (r < 0) {
        free(f);
        return r;
    }
    *ret = f;
    return 0;
}

void cron_fire_stop(struct cron_fire *f)
{
    if (!f)
        return;
    gw_thread_stop(&f->th);
    free(f);
}
