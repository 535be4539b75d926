/* api-schedules.c: a tenant's cron schedules, which submit a job template to a queue.
 *
 * The expression and the zone are checked here with the same parser the firing uses
 * (cron.h, cron-tz.h), so a schedule the API accepted always has a next firing time; the
 * job template is checked by POST /jobs' own rules (api_jobs_check()). next_run_at is
 * computed here, from now, whenever the expression, the zone or `enabled` is written: a
 * re-enabled schedule starts from its next future time (the missed-run policy applies to
 * downtime, not to a pause the tenant asked for). Creating one is subject to the tier's
 * schedule quota (quota_acquire('schedules')). docs/api.md and docs/scheduling.md say the
 * rest. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"
#include "server/cron.h"

/* The firings a schedule's document lists in next_runs. */
#define SCHED_NEXT_RUNS 5

static const struct store_stmt q_sched_doc =
    STORE_STMT("schedule_doc", "SELECT doc FROM schedule_view WHERE id = $1", 1);

static const struct store_stmt q_sched_list = STORE_STMT(
    "schedule_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM schedule_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_quota_schedules =
    STORE_STMT("quota_schedules", "SELECT quota_acquire('schedules')", 0);

static const struct store_stmt q_sched_queue =
    STORE_STMT("schedule_queue", "SELECT id FROM queues WHERE name = $1", 1);

static const struct store_stmt q_sched_current =
    STORE_STMT("schedule_current",
               "SELECT cron, timezone, enabled FROM schedules WHERE id = $1 FOR UPDATE", 1);

static const struct store_stmt q_sched_insert = STORE_STMT(
    "schedule_insert",
    "INSERT INTO schedules (id, tenant_id, name, cron, timezone, queue_id, job_template, enabled,"
    " missed_policy, overlap_policy, next_run_at) VALUES ($1, app_tenant(), $2, $3,"
    " coalesce($4, 'UTC'), $5::uuid, $6::jsonb, coalesce($7::bool, true),"
    " coalesce($8, 'skip'), coalesce($9, 'allow'), $10::timestamptz)",
    10);

/* $11: the body has queue (null clears it); $12: next_run_at was recomputed. */
static const struct store_stmt q_sched_update = STORE_STMT(
    "schedule_update",
    "UPDATE schedules SET name = coalesce($2, name), cron = coalesce($3, cron),"
    " timezone = coalesce($4, timezone),"
    " queue_id = CASE WHEN $11::bool THEN $5::uuid ELSE queue_id END,"
    " job_template = coalesce($6::jsonb, job_template), enabled = coalesce($7::bool, enabled),"
    " missed_policy = coalesce($8, missed_policy), overlap_policy = coalesce($9, overlap_policy),"
    " next_run_at = CASE WHEN $12::bool THEN $10::timestamptz ELSE next_run_at END,"
    " updated_at = now() WHERE id = $1 RETURNING id",
    12);

static const struct store_stmt q_sched_delete =
    STORE_STMT("schedule_delete", "DELETE FROM schedules WHERE id = $1 RETURNING name", 1);

static const struct jsonv_field create_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, API_QUEUE_NAME_MAX},
    {"cron", JSONV_STRING, JSONV_REQUIRED, 1, CRON_EXPR_MAX},
    {"timezone", JSONV_STRING, 0, 1, CRON_TZ_NAME_MAX},
    {"queue", JSONV_STRING, JSONV_NULLABLE, 1, API_QUEUE_NAME_MAX},
    {"job", JSONV_OBJECT, JSONV_REQUIRED, 1, 64},
    {"enabled", JSONV_BOOL, 0, 0, 0},
    {"missed_policy", JSONV_STRING, 0, 1, 16},
    {"overlap_policy", JSONV_STRING, 0, 1, 16},
};

static const struct jsonv_field update_fields[] = {
    {"name", JSONV_STRING, 0, 1, API_QUEUE_NAME_MAX},
    {"cron", JSONV_STRING, 0, 1, CRON_EXPR_MAX},
    {"timezone", JSONV_STRING, 0, 1, CRON_TZ_NAME_MAX},
    {"queue", JSONV_STRING, JSONV_NULLABLE, 1, API_QUEUE_NAME_MAX},
    {"job", JSONV_OBJECT, 0, 1, 64},
    {"enabled", JSONV_BOOL, 0, 0, 0},
    {"missed_policy", JSONV_STRING, 0, 1, 16},
    {"overlap_policy", JSONV_STRING, 0, 1, 16},
};

static const char *const missed_policies[] = {"skip", "run_once"};
static const char *const overlap_policies[] = {"allow", "skip", "queue_one"};

static bool one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return true;
    return false;
}

/* A schedule body's members as the statements' text parameters (borrowed from the body,
 * except job, which is malloc'd). */
struct sched_input {
    const char *name, *cron, *timezone, *queue, *missed, *overlap, *enabled;
    bool queue_given;
    char queue_id[ID_STR_LEN];
    char *job;
    char next_run_at[CLOCK_RFC3339_LEN];
    bool next_given;
};

/* Check what the body holds, without the database; replies 422 and returns < 0 when bad. */
static int sched_check(struct http_req *req, const json_t *body, struct sched_input *in)
{
    char field[192], detail[256];
    memset(in, 0, sizeof(*in));
    in->name = api_json_str(body, "name");
    in->cron = api_json_str(body, "cron");
    in->timezone = api_json_str(body, "timezone");
    in->queue = api_json_str(body, "queue");
    in->queue_given = json_object_get(body, "queue") != NULL;
    in->missed = api_json_str(body, "missed_policy");
    in->overlap = api_json_str(body, "overlap_policy");
    json_t *en = json_object_get(body, "enabled");
    if (en)
        in->enabled = json_is_true(en) ? "true" : "false";
    if (in->name && !api_name_ok(in->name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit",
                           "name");
        return -EINVAL;
    }
    struct cron c;
    if (in->cron && cron_parse(in->cron, &c, detail, sizeof(detail)) < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "cron");
        return -EINVAL;
    }
    const struct cron_tz *z;
    if (in->timezone && cron_tz_get(in->timezone, &z, detail, sizeof(detail)) < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "timezone");
        return -EINVAL;
    }
    if (in->missed && !one_of(in->missed, missed_policies, ELEMENTSOF(missed_policies))) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be skip or run_once", "missed_policy");
        return -EINVAL;
    }
    if (in->overlap && !one_of(in->overlap, overlap_policies, ELEMENTSOF(overlap_policies))) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be allow, skip or queue_one",
                           "overlap_policy");
        return -EINVAL;
    }
    const json_t *job = json_object_get(body, "job");
    if (!job)
        return 0;
    /* The schedule names the queue, and each firing is a new job (the firing record, not
     * an idempotency key of the tenant's, keeps a time from firing twice). */
    static const char *const not_in_template[] = {"queue", "idempotency_key"};
    for (size_t i = 0; i < ELEMENTSOF(not_in_template); i++) {
        if (json_object_get(job, not_in_template[i])) {
            snprintf(field, sizeof(field), "job.%s", not_in_template[i]);
            http_reply_problem(req, PROBLEM_VALIDATION,
                               i == 0 ? "give the queue as the schedule's queue"
                                      : "a schedule's jobs take no idempotency key",
                               field);
            return -EINVAL;
        }
    }
    if (api_jobs_check(job, "job.", field, sizeof(field), detail, sizeof(detail)) < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
        return -EINVAL;
    }
    in->job = json_dumps(job, JSON_COMPACT);
    if (!in->job) {
        http_reply_error(req, -ENOMEM, "encoding the job template");
        return -ENOMEM;
    }
    return 0;
}

/* The first firing of expr in zone tz after now into out (RFC 3339). Both were checked. */
static int sched_next(const char *expr, const char *tz, char out[CLOCK_RFC3339_LEN])
{
    struct cron c;
    const struct cron_tz *z;
    char err[160];
    int64_t next;
    int r = cron_parse(expr, &c, err, sizeof(err));
    if (r >= 0)
        r = cron_tz_get(tz, &z, err, sizeof(err));
    if (r >= 0)
        r = cron_next(&c, z, clock_real_ms() / 1000, &next);
    if (r >= 0)
        r = clock_format_rfc3339(next * 1000, out, CLOCK_RFC3339_LEN);
    return r;
}

/* Wall-clock time of utc in zone z, "2026-03-29T03:00:00+02:00". */
static void local_time(const struct cron_tz *z, int64_t utc, char *out, size_t len)
{
    int32_t off = cron_tz_offset(z, utc);
    time_t wall = (time_t)(utc + off);
    struct tm tm;
    gmtime_r(&wall, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    int32_t a = off < 0 ? -off : off;
    snprintf(out, len, "%s%c%02d:%02d", base, off < 0 ? '-' : '+', (int)(a / 3600),
             (int)(a % 3600 / 60));
}

/* Add next_runs to a schedule's document: its next SCHED_NEXT_RUNS firings from now, in
 * UTC and in the schedule's zone; empty while the schedule is disabled. */
static void sched_decorate(json_t *doc)
{
    json_t *runs = json_array();
    struct cron c;
    const struct cron_tz *z;
    char err[160];
    const char *expr = api_json_str(doc, "cron"), *tz = api_json_str(doc, "timezone");
    if (json_is_true(json_object_get(doc, "enabled")) && expr && tz &&
        cron_parse(expr, &c, err, sizeof(err)) == 0 && cron_tz_get(tz, &z, err, sizeof(err)) == 0) {
        int64_t t[SCHED_NEXT_RUNS];
        int n = cron_next_n(&c, z, clock_real_ms() / 1000, SCHED_NEXT_RUNS, t);
        for (int i = 0; i < n; i++) {
            char at[CLOCK_RFC3339_LEN], local[48];
            if (clock_format_rfc3339(t[i] * 1000, at, sizeof(at)) < 0)
                break;
            local_time(z, t[i], local, sizeof(local));
            json_array_append_new(runs, json_pack("{s:s,s:s}", "at", at, "local", local));
        }
    }
    json_object_set_new(doc, "next_runs", runs);
}

/* Reply with a document from res (one row, column 0), next_runs added; frees res. */
static void reply_sched(struct http_req *req, int status, PGresult *res)
{
    json_error_t jerr;
    json_t *doc = PQntuples(res) == 1 ? json_loads(PQgetvalue(res, 0, 0), 0, &jerr) : NULL;
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such schedule", NULL);
        return;
    }
    if (!doc) {
        http_reply_error(req, -EIO, "reading the schedule");
        return;
    }
    sched_decorate(doc);
    http_reply_json(req, status, doc);
}

/* Read the schedule back in tx, commit, reply. */
static void reply_sched_commit(struct http_req *req, struct store_tx *tx, const char *id,
                               int status)
{
    PGresult *res = NULL;
    const char *p[] = {id};
    int r = store_tx_exec(tx, &q_sched_doc, p, &res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "reading the schedule");
        return;
    }
    if (api_commit(req, tx, "saving the schedule") < 0) {
        PQclear(res);
        return;
    }
    reply_sched(req, status, res);
}

/* Reply to a failed schedule write: quota, name taken, unknown queue, or other. Rolls tx
 * back. */
static void sched_write_failed(struct http_req *req, struct store_tx *tx, int r)
{
    if (r == -EDQUOT) {
        app_reply_quota_refused(req, tx, NULL,
                                "the tenant's schedule quota is exhausted; delete a schedule or "
                                "move to a larger tier");
        return;
    }
    store_tx_rollback(tx);
    if (r == -EEXIST)
        http_reply_problem(req, PROBLEM_CONFLICT, "a schedule with this name exists", "name");
    else if (r == -ENOENT)
        http_reply_problem(req, PROBLEM_VALIDATION, "no queue of this name", "queue");
    else
        http_reply_error(req, r, "saving the schedule");
}

/* The queue the body names, as an id in in->queue_id. Returns 0, -ENOENT when the tenant
 * has no such queue, or a store error. */
static int sched_queue(struct store_tx *tx, struct sched_input *in)
{
    if (!in->queue)
        return 0;
    PGresult *res = NULL;
    const char *p[] = {in->queue};
    int r = store_tx_exec(tx, &q_sched_queue, p, &res);
    if (r == 1)
        snprintf(in->queue_id, sizeof(in->queue_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

/* The package reference of the body's job template, if any, must resolve now (each firing
 * resolves it again: a moved channel or a new latest is what that firing runs). Returns 0,
 * 1 after rolling back and replying 422 (job.package), or a store error. */
static int sched_package(struct http_req *req, struct store_tx *tx, const json_t *body)
{
    const char *ref = api_json_str(json_object_get(body, "job"), "package");
    if (!ref)
        return 0;
    char id[ID_STR_LEN], detail[256];
    int r = api_package_ref_resolve(tx, ref, id, detail, sizeof(detail));
    if (r != -EINVAL)
        return r;
    store_tx_rollback(tx);
    http_reply_problem(req, PROBLEM_VALIDATION, detail, "job.package");
    return 1;
}

#define SCHED_PARAMS 12
static void sched_params(const char *id, const struct sched_input *in, const char *p[SCHED_PARAMS])
{
    p[0] = id;
    p[1] = in->name;
    p[2] = in->cron;
    p[3] = in->timezone;
    p[4] = in->queue_id[0] ? in->queue_id : NULL;
    p[5] = in->job;
    p[6] = in->enabled;
    p[7] = in->missed;
    p[8] = in->overlap;
    p[9] = in->next_run_at[0] ? in->next_run_at : NULL;
    p[10] = in->queue_given ? "true" : "false";
    p[11] = in->next_given ? "true" : "false";
}

void api_schedules_create(struct http_req *req)
{
    json_t *body = NULL;
    if (http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0)
        return;
    struct sched_input in;
    if (sched_check(req, body, &in) < 0)
        goto out;
    bool enabled = !in.enabled || strcmp(in.enabled, "true") == 0;
    int r = enabled ? sched_next(in.cron, in.timezone ? in.timezone : "UTC", in.next_run_at) : 0;
    if (r < 0) {
        http_reply_error(req, r, "computing the next firing");
        goto out;
    }
    char id[ID_STR_LEN];
    id_uuid7_str(id);
    struct store_tx *tx = NULL;
    r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "creating the schedule");
        goto out;
    }
    const char *p[SCHED_PARAMS];
    r = store_tx_exec(tx, &q_quota_schedules, NULL, NULL);
    if (r >= 0)
        r = sched_queue(tx, &in);
    if (r >= 0 && (r = sched_package(req, tx, body)) > 0)
        goto out;
    sched_params(id, &in, p);
    if (r >= 0)
        r = store_tx_exec(tx, &q_sched_insert, p, NULL);
    if (r >= 0)
        r = app_audit(tx, req, NULL, "schedule.create", "schedule", id, body);
    if (r < 0)
        sched_write_failed(req, tx, r);
    else
        reply_sched_commit(req, tx, id, 201);
out:
    free(in.job);
    json_decref(body);
}

void api_schedules_update(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "schedule");
    if (!id)
        return;
    json_t *body = NULL;
    if (http_req_json(req, update_fields, ELEMENTSOF(update_fields), &body) < 0)
        return;
    struct sched_input in;
    if (sched_check(req, body, &in) < 0)
        goto out;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "updating the schedule");
        goto out;
    }
    PGresult *cur = NULL;
    const char *pid[] = {id};
    r = store_tx_exec(tx, &q_sched_current, pid, &cur);
    if (r == 0) {
        PQclear(cur);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such schedule", NULL);
        goto out;
    }
    if (r > 0 && (in.cron || in.timezone || in.enabled)) {
        /* The time the schedule fires next follows from what it is after this write. */
        const char *cron = in.cron ? in.cron : PQgetvalue(cur, 0, 0);
        const char *tz = in.timezone ? in.timezone : PQgetvalue(cur, 0, 1);
        bool enabled =
            in.enabled ? strcmp(in.enabled, "true") == 0 : strcmp(PQgetvalue(cur, 0, 2), "t") == 0;
        in.next_given = true;
        if (enabled)
            r = sched_next(cron, tz, in.next_run_at);
    }
    PQclear(cur);
    if (r >= 0)
        r = sched_queue(tx, &in);
    if (r >= 0 && (r = sched_package(req, tx, body)) > 0)
        goto out;
    const char *p[SCHED_PARAMS];
    sched_params(id, &in, p);
    if (r >= 0)
        r = store_tx_exec(tx, &q_sched_update, p, NULL);
    if (r >= 0)
        r = app_audit(tx, req, NULL, "schedule.update", "schedule", id, body);
    if (r < 0)
        sched_write_failed(req, tx, r);
    else
        reply_sched_commit(req, tx, id, 200);
out:
    free(in.job);
    json_decref(body);
}

void api_schedules_get(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "schedule");
    if (!id)
        return;
    const char *p[] = {id};
    PGresult *res = NULL;
    struct app *app = http_req_app(req);
    int r = store_exec_once(app->store, http_req_principal(req)->tenant_id, &q_sched_doc, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the schedule");
        return;
    }
    reply_sched(req, 200, res);
}

void api_schedules_list(struct http_req *req)
{
    api_list_page(req, &q_sched_list, http_req_principal(req)->tenant_id, "listing schedules");
}

void api_schedules_delete(struct http_req *req)
{
    api_delete_by_id(req, &q_sched_delete, "schedule", "schedule");
}
