/* api-jobs.c: submitting jobs (one or a batch of up to 1,000, with idempotency keys),
 * reading, listing, cancelling and retrying them, and reading their output.
 *
 * A submission is committed to PostgreSQL first, then announced on the bus (queue
 * bus.jobs_queue, publisher confirms) to wake the dispatcher. PostgreSQL decides: when
 * the announcement fails the job is still accepted, and the dispatcher's periodic scan of
 * queued jobs finds it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/cleanup.h"
#include "common/id.h"
#include "common/log.h"
#include "common/relpath.h"
#include "proto/agent.h"
#include "proto/bus.h"
#include "proto/version.h"
#include "server/api.h"
#include "server/app.h"
#include "server/metrics-orch.h"
#include "server/gateway.h"
#include "server/pkgref.h"
#include "server/bus.h"

#define JOBS_BATCH_MAX 1000

static const struct store_stmt q_job_doc =
    STORE_STMT("job_doc", "SELECT doc FROM job_view WHERE id = $1", 1);

static const struct store_stmt q_queue_by_name =
    STORE_STMT("job_queue_by_name",
               "SELECT id, default_priority, requirements FROM queues WHERE name = $1", 1);

/* ON CONFLICT on the idempotency key: a repeated submission inserts nothing and the caller
 * reads back the job the key already names. */
static const struct store_stmt q_job_insert = STORE_STMT(
    "job_insert",
    "INSERT INTO jobs (id, tenant_id, queue_id, priority, command, package_id, entrypoint, args,"
    " env, params, requirements, timeout_ms, max_attempts, idempotency_key, package_ref)"
    " VALUES ($1, app_tenant(), $2::uuid, $3::int, $4, $5::uuid,"
    " coalesce($6, (SELECT entrypoint FROM packages WHERE id = $5::uuid)), coalesce($7::jsonb, "
    "'[]'),"
    " coalesce($8::jsonb, '{}'), $9::jsonb, coalesce($10::jsonb, '{}'),"
    " coalesce($11::bigint, 3600000), coalesce($12::int, 3), $13, $14)"
    " ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING id",
    14);

static const struct store_stmt q_job_package =
    STORE_STMT("job_package", "SELECT entrypoint FROM packages WHERE id = $1", 1);

/* Tenant-scoped statements on jobs name app_tenant() themselves: row-level security's
 * policies (the tenant's OR the system scope) can never be an index condition, so without
 * it the planner reads every tenant's rows (docs/scaling.md, "Indexes on jobs"). */
static const struct store_stmt q_job_by_key = STORE_STMT(
    "job_by_key", "SELECT id FROM jobs WHERE tenant_id = app_tenant() AND idempotency_key = $1", 1);

static const struct jsonv_field job_fields[] = {
    {"queue", JSONV_STRING, 0, 1, API_QUEUE_NAME_MAX},
    {"command", JSONV_STRING, 0, 1, PROTO_JOB_COMMAND_MAX},
    {"package_id", JSONV_UUID, 0, 0, 0},
    {"package", JSONV_STRING, 0, 1, PKGREF_MAX},
    {"entrypoint", JSONV_STRING, 0, 1, PROTO_JOB_ENTRYPOINT_MAX},
    {"args", JSONV_ARRAY, 0, 0, PROTO_JOB_ARGS_MAX},
    {"env", JSONV_OBJECT, 0, 0, PROTO_JOB_ENV_MAX},
    {"params", JSONV_ANY, JSONV_NULLABLE, 0, 0},
    {"requirements", JSONV_OBJECT, 0, 0, API_LABELS_MAX},
    {"priority", JSONV_INT, 0, API_PRIORITY_MIN, API_PRIORITY_MAX},
    {"timeout_ms", JSONV_INT, 0, PROTO_JOB_TIMEOUT_MIN_MS, PROTO_JOB_TIMEOUT_MAX_MS},
    {"max_attempts", JSONV_INT, 0, 1, PROTO_JOB_ATTEMPT_MAX},
    {"idempotency_key", JSONV_STRING, 0, 1, 255},
};

/* A job's parameters, as text for the insert. */
struct job_input {
    char id[ID_STR_LEN];
    char queue_id[ID_STR_LEN];
    char priority[16];
    char timeout[24];
    char attempts[16];
    char *args, *env, *params, *requirements; /* malloc'd JSON text or NULL */
};

static void job_input_free(struct job_input *in)
{
    free(in->args);
    free(in->env);
    free(in->params);
    free(in->requirements);
}

/* The requirements whose value is a number, not a label: a minimum of the agent's last
 * reported free memory or disk, in MiB (sql/0012_wait.sql, server/placement.c). */
static const char *const resource_requirements[] = {"min_free_memory_mb", "min_free_disk_mb"};
#define REQUIREMENT_MB_MAX ((json_int_t)1 << 31)

int api_jobs_check_requirements(const json_t *reqs, const char *field_prefix, char *field,
                                size_t flen, char *detail, size_t dlen)
{
    if (!reqs || json_is_null(reqs))
        return 0;
    if (!json_is_object(reqs) || json_object_size(reqs) > API_LABELS_MAX) {
        snprintf(field, flen, "%s", field_prefix);
        snprintf(detail, dlen, "must be an object of at most %d requirements", API_LABELS_MAX);
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)reqs, k, v)
    {
        snprintf(field, flen, "%s.%.63s", field_prefix, k);
        if (!api_label_name_ok(k)) {
            snprintf(detail, dlen,
                     "requirement names are 1 to %d characters of A-Z a-z 0-9 _ . / -",
                     API_LABEL_NAME_MAX);
            return -EINVAL;
        }
        bool resource = false;
        for (size_t i = 0; i < ELEMENTSOF(resource_requirements); i++)
            resource = resource || strcmp(k, resource_requirements[i]) == 0;
        if (resource && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                         json_integer_value(v) > REQUIREMENT_MB_MAX)) {
            snprintf(detail, dlen, "must be an integer number of MiB between 0 and %lld",
                     (long long)REQUIREMENT_MB_MAX);
            return -EINVAL;
        }
        if (!resource && (!json_is_string(v) || json_string_length(v) > API_LABEL_VALUE_MAX)) {
            snprintf(detail, dlen,
                     "must be a label value (a string of at most %d bytes); only "
                     "min_free_memory_mb and min_free_disk_mb take numbers",
                     API_LABEL_VALUE_MAX);
            return -EINVAL;
        }
    }
    field[0] = '\0';
    detail[0] = '\0';
    return 0;
}

int api_jobs_check(const json_t *job, const char *prefix, char *field, size_t flen, char *detail,
                   size_t dlen)
{
    struct jsonv_error err;
    if (!json_is_object(job)) {
        snprintf(field, flen, "%s", prefix[0] ? prefix : "");
        snprintf(detail, dlen, "a job is a JSON object");
        return -EINVAL;
    }
    if (jsonv_check(job, job_fields, ELEMENTSOF(job_fields), false, &err) < 0) {
        snprintf(field, flen, "%s%s", prefix, err.field);
        snprintf(detail, dlen, "%s", err.detail);
        return -EINVAL;
    }
    bool cmd = json_object_get(job, "command") != NULL;
    bool by_id = json_object_get(job, "package_id") != NULL;
    const char *ref = api_json_str(job, "package");
    bool pkg = by_id || ref;
    if (by_id && ref) {
        snprintf(field, flen, "%spackage", prefix);
        snprintf(detail, dlen, "give package or package_id, not both");
        return -EINVAL;
    }
    if (cmd == pkg) {
        snprintf(field, flen, "%scommand", prefix);
        snprintf(detail, dlen, "give either command or a package (package or package_id)");
        return -EINVAL;
    }
    struct pkgref pr;
    if (ref && pkgref_parse(ref, &pr, detail, dlen) < 0) {
        snprintf(field, flen, "%spackage", prefix);
        return -EINVAL;
    }
    const char *entry = api_json_str(job, "entrypoint");
    if (entry && (!pkg || !relpath_is_safe(entry))) {
        snprintf(field, flen, "%sentrypoint", prefix);
        snprintf(detail, dlen, "%s",
                 !pkg ? "only with a package"
                      : "must be a relative path in the package (A-Z a-z 0-9 _ . - /, no ..)");
        return -EINVAL;
    }
    /* The rules the agent holds its assignments to: a job it would refuse is refused here. */
    if (proto_job_args_env_check(json_object_get(job, "args"), json_object_get(job, "env"), &err) <
        0) {
        snprintf(field, flen, "%s%s", prefix, err.field);
        snprintf(detail, dlen, "%s", err.detail);
        return -EINVAL;
    }
    char rprefix[64];
    snprintf(rprefix, sizeof(rprefix), "%srequirements", prefix);
    if (api_jobs_check_requirements(json_object_get(job, "requirements"), rprefix, field, flen,
                                    detail, dlen) < 0)
        return -EINVAL;
    struct jsonv_error perr;
    if (proto_job_params_check(json_object_get(job, "params"), &perr) < 0) {
        snprintf(field, flen, "%s%s", prefix, perr.field);
        snprintf(detail, dlen, "%s", perr.detail);
        return -EINVAL;
    }
    return 0;
}

int api_jobs_insert(struct store_tx *tx, const json_t *job, char id_out[ID_STR_LEN], bool *created,
                    char *field, size_t flen, char *detail, size_t dlen, const char *prefix)
{
    struct job_input in = {0};
    id_uuid7_str(in.id);
    int r = 0;
    json_t *reqs = json_deep_copy(json_object_get(job, "requirements"));
    if (!reqs)
        reqs = json_object();
    const char *queue = api_json_str(job, "queue");
    if (queue) {
        PGresult *res = NULL;
        const char *p[] = {queue};
        r = store_tx_exec(tx, &q_queue_by_name, p, &res);
        if (r == 0) {
            PQclear(res);
            snprintf(field, flen, "%squeue", prefix);
            snprintf(detail, dlen, "no queue of this name");
            json_decref(reqs);
            return -ENOENT;
        }
        if (r > 0) {
            snprintf(in.queue_id, sizeof(in.queue_id), "%s", PQgetvalue(res, 0, 0));
            snprintf(in.priority, sizeof(in.priority), "%s", PQgetvalue(res, 0, 1));
            json_error_t je;
            json_t *qreqs = json_loads(PQgetvalue(res, 0, 2), 0, &je);
            if (qreqs)
                json_object_update_missing(reqs, qreqs);
            json_decref(qreqs);
        }
        PQclear(res);
        if (r < 0) {
            json_decref(reqs);
            return r;
        }
    }
    /* A package job: the package must be the tenant's, and it or the job names the
     * entrypoint. A reference is resolved now, once: the job keeps the reference as given
     * and runs the exact package it named at this moment. */
    const char *pkg = api_json_str(job, "package_id");
    const char *ref = api_json_str(job, "package");
    char ref_id[ID_STR_LEN];
    if (ref) {
        r = api_package_ref_resolve(tx, ref, ref_id, detail, dlen);
        if (r == -EINVAL)
            snprintf(field, flen, "%spackage", prefix);
        if (r < 0) {
            json_decref(reqs);
            return r;
        }
        pkg = ref_id;
    }
    if (pkg) {
        PGresult *res = NULL;
        const char *p[] = {pkg};
        r = store_tx_exec(tx, &q_job_package, p, &res);
        bool has_entry = r > 0 && !PQgetisnull(res, 0, 0);
        PQclear(res);
        if (r >= 0 && (r == 0 || (!has_entry && !api_json_str(job, "entrypoint")))) {
            snprintf(field, flen, "%s%s", prefix,
                     r != 0 ? "entrypoint"
                     : ref  ? "package"
                            : "package_id");
            snprintf(detail, dlen, "%s",
                     r == 0 ? "no package with this id"
                            : "is required: the package has no default entrypoint");
            r = -EINVAL;
        }
        if (r < 0) {
            json_decref(reqs);
            return r;
        }
    }
    json_t *prio = json_object_get(job, "priority");
    if (prio)
        snprintf(in.priority, sizeof(in.priority), "%lld", json_integer_value(prio));
    json_t *t = json_object_get(job, "timeout_ms");
    if (t)
        snprintf(in.timeout, sizeof(in.timeout), "%lld", json_integer_value(t));
    json_t *m = json_object_get(job, "max_attempts");
    if (m)
        snprintf(in.attempts, sizeof(in.attempts), "%lld", json_integer_value(m));
    if (json_object_get(job, "args"))
        in.args = json_dumps(json_object_get(job, "args"), JSON_COMPACT);
    if (json_object_get(job, "env"))
        in.env = json_dumps(json_object_get(job, "env"), JSON_COMPACT);
    if (json_object_get(job, "params"))
        in.params = json_dumps(json_object_get(job, "params"), JSON_COMPACT | JSON_ENCODE_ANY);
    in.requirements = json_dumps(reqs, JSON_COMPACT);
    json_decref(reqs);

    const char *key = api_json_str(job, "idempotency_key");
    const char *p[] = {in.id,
                       in.queue_id[0] ? in.queue_id : NULL,
                       in.priority[0] ? in.priority : "0",
                       api_json_str(job, "command"),
                       pkg,
                       api_json_str(job, "entrypoint"),
                       in.args,
                       in.env,
                       in.params,
                       in.requirements,
                       in.timeout[0] ? in.timeout : NULL,
                       in.attempts[0] ? in.attempts : NULL,
                       key,
                       ref};
    r = store_tx_exec(tx, &q_job_insert, p, NULL);
    job_input_free(&in);
    if (r < 0) {
        if (r == -ENOENT) {
            snprintf(field, flen, "%s%s", prefix, ref ? "package" : "package_id");
            snprintf(detail, dlen, "no package with this id");
        }
        return r;
    }
    if (r == 1) {
        memcpy(id_out, in.id, ID_STR_LEN);
        *created = true;
        return 0;
    }
    /* Nothing inserted: the idempotency key names an existing job. */
    PGresult *res = NULL;
    const char *pk[] = {key};
    r = store_tx_exec(tx, &q_job_by_key, pk, &res);
    if (r == 1)
        snprintf(id_out, ID_STR_LEN, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    *created = false;
    return r == 1 ? 0 : -EIO;
}

/* Tell the dispatcher; failure is logged, the jobs are safe in PostgreSQL. */
static void announce(struct http_req *req, const char *tenant, json_t *ids)
{
    struct app *app = http_req_app(req);
    if (!app->bus || json_array_size(ids) == 0)
        return;
    char *text = proto_bus_jobs_submitted_encode(tenant, ids);
    if (!text)
        return;
    int r = bus_publish(app->bus, app->cfg->bus_jobs_queue, text, strlen(text),
                        app->cfg->bus_publish_timeout_ms);
    if (r < 0)
        log_warn("op=jobs.announce tenant=%s jobs=%zu req=%s error=%s "
                 "msg=\"the dispatcher's scan will find them\"",
                 tenant, json_array_size(ids), http_req_id(req), strerror(-r));
    free(text);
}

/* Submit jobs (an array of job objects); reply with one document or a list. */
static void submit(struct http_req *req, json_t *jobs, bool single)
{
    char field[192] = "", detail[256] = "";
    size_t i;
    json_t *job;
    json_array_foreach(jobs, i, job)
    {
        char prefix[32] = "";
        if (!single)
            snprintf(prefix, sizeof(prefix), "jobs[%zu].", i);
        if (api_jobs_check(job, prefix, field, sizeof(field), detail, sizeof(detail)) < 0) {
            http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
            return;
        }
    }
    struct app *app = http_req_app(req);
    const char *tenant = http_req_principal(req)->tenant_id;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(app, req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "submitting jobs");
        return;
    }
    json_t *ids = json_array(), *new_ids = json_array(), *new_queues = json_array();
    bool any_created = false;
    json_array_foreach(jobs, i, job)
    {
        char prefix[32] = "", id[ID_STR_LEN] = "";
        bool created = false;
        if (!single)
            snprintf(prefix, sizeof(prefix), "jobs[%zu].", i);
        r = api_jobs_insert(tx, job, id, &created, field, sizeof(field), detail, sizeof(detail),
                            prefix);
        if (r < 0)
            break;
        json_array_append_new(ids, json_string(id));
        if (created) {
            json_array_append_new(new_ids, json_string(id));
            const char *queue = api_json_str(job, "queue");
            json_array_append_new(new_queues, json_string(queue ? queue : ""));
            any_created = true;
        }
    }
    if (r >= 0 && any_created) {
        json_t *d = json_pack("{s:O}", "job_ids", new_ids);
        r = app_audit(tx, req, NULL, single ? "job.submit" : "job.submit_batch", "job",
                      single ? json_string_value(json_array_get(new_ids, 0)) : NULL, d);
        json_decref(d);
    }
    /* Read the documents back inside the transaction. */
    json_t *docs = json_array();
    for (size_t k = 0; r >= 0 && k < json_array_size(ids); k++) {
        PGresult *res = NULL;
        const char *p[] = {json_string_value(json_array_get(ids, k))};
        r = store_tx_exec(tx, &q_job_doc, p, &res);
        json_error_t je;
        if (r == 1)
            json_array_append_new(docs, json_loads(PQgetvalue(res, 0, 0), 0, &je));
        PQclear(res);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        if (field[0])
            http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
        else
            http_reply_error(req, r, "submitting jobs");
    } else if (api_commit(req, tx, "submitting jobs") == 0) {
        announce(req, tenant, new_ids);
        size_t k;
        json_t *q;
        json_array_foreach(new_queues, k, q)
        {
            char qq[160];
            metrics_orch_submitted(app->metrics, tenant, json_string_value(q), 1);
            /* req= and tenant= come from the request's log context. */
            const char *qname = json_string_value(q);
            log_info("op=job.submit job=%s queue=%s", json_string_value(json_array_get(new_ids, k)),
                     qname && *qname ? log_quote(qname, qq, sizeof(qq)) : "-");
        }
        if (single) {
            if (!any_created)
                http_reply_header(req, "Idempotent-Replayed", "true");
            http_reply_json(req, any_created ? 201 : 200, json_incref(json_array_get(docs, 0)));
        } else {
            http_reply_json(req, 201, json_pack("{s:O}", "items", docs));
        }
    }
    json_decref(docs);
    json_decref(ids);
    json_decref(new_ids);
    json_decref(new_queues);
}

void api_jobs_submit(struct http_req *req)
{
    /* The table check runs in submit() (it also serves batch elements). */
    static const struct jsonv_field any[] = {
        {"queue", JSONV_ANY, 0, 0, 0},        {"command", JSONV_ANY, 0, 0, 0},
        {"package_id", JSONV_ANY, 0, 0, 0},   {"entrypoint", JSONV_ANY, 0, 0, 0},
        {"args", JSONV_ANY, 0, 0, 0},         {"env", JSONV_ANY, 0, 0, 0},
        {"params", JSONV_ANY, 0, 0, 0},       {"requirements", JSONV_ANY, 0, 0, 0},
        {"priority", JSONV_ANY, 0, 0, 0},     {"timeout_ms", JSONV_ANY, 0, 0, 0},
        {"max_attempts", JSONV_ANY, 0, 0, 0}, {"idempotency_key", JSONV_ANY, 0, 0, 0},
        {"package", JSONV_ANY, 0, 0, 0},
    };
    json_t *body = NULL;
    if (http_req_json(req, any, ELEMENTSOF(any), &body) < 0)
        return;
    json_t *one = json_pack("[O]", body);
    submit(req, one, true);
    json_decref(one);
    json_decref(body);
}

void api_jobs_submit_batch(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"jobs", JSONV_ARRAY, JSONV_REQUIRED, 1, JOBS_BATCH_MAX},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    submit(req, json_object_get(body, "jobs"), false);
    json_decref(body);
}

static const struct store_stmt q_job_get =
    STORE_STMT("job_get", "SELECT doc, status FROM job_view WHERE id = $1", 1);

static const struct store_stmt q_job_wait =
    STORE_STMT("job_wait", "SELECT job_wait($1, $2, $3::int, $4::int)", 4);

/* Why queued job id of tenant waits: *ret gets the `waiting` object (docs/api.md), or
 * NULL when the job is no longer queued. job_wait() counts the agents of shared pools,
 * which the tenant's scope cannot see, so it runs in the system scope; the caller has
 * read the job in the tenant's scope first, and the tenant's id bounds the function to
 * that tenant's job. Returns 0 or a store error. */
static int job_waiting(struct app *app, const char *tenant, const char *id, json_t **ret)
{
    char online[24], aging[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    snprintf(aging, sizeof(aging), "%lld", (long long)app->cfg->dispatch_aging_ms);
    const char *p[] = {tenant, id, online, aging};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_job_wait, p, &res);
    *ret = NULL;
    if (r > 0 && !PQgetisnull(res, 0, 0)) {
        json_error_t je;
        *ret = json_loads(PQgetvalue(res, 0, 0), 0, &je);
        if (!*ret)
            r = -EIO;
    }
    PQclear(res);
    return r < 0 ? r : 0;
}

void api_jobs_get(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const char *tenant = http_req_principal(req)->tenant_id;
    const char *p[] = {id};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, tenant, &q_job_get, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the job");
        return;
    }
    if (r == 0 || strcmp(PQgetvalue(res, 0, 1), "queued") != 0) {
        api_reply_pg_json_or_404(req, 200, res, "job");
        return;
    }
    json_error_t je;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, &je);
    PQclear(res);
    if (!doc) {
        http_reply_error(req, -EIO, "reading the job");
        return;
    }
    json_t *waiting = NULL;
    r = job_waiting(app, tenant, id, &waiting);
    /* The job is the answer; its explanation is an aid: without it, say why in the log. */
    if (r < 0)
        log_warn("op=jobs.waiting tenant=%s job=%s req=%s error=%s", tenant, id, http_req_id(req),
                 strerror(-r));
    if (waiting)
        json_object_set_new(doc, "waiting", waiting);
    http_reply_json(req, 200, doc);
}

/* The page's ids first, from jobs with the tenant named (its indexes) and LIMIT applied,
 * then their documents: a filter that matches many jobs builds 50 documents, not all of
 * them. Planned at each call (STORE_STMT_PLANNED): a generic plan can use none of the
 * optional filters, and one made in a small tenant's scope walks a large tenant's jobs
 * (docs/scaling.md, "Indexes on jobs"). */
static const struct store_stmt q_job_list = STORE_STMT_PLANNED(
    "job_list",
    "SELECT json_build_object('items', coalesce(json_agg(v.doc ORDER BY v.id DESC), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(v.id ORDER BY v.id))[1] END)"
    " FROM (SELECT j.id FROM jobs j"
    "        WHERE j.tenant_id = app_tenant()"
    "          AND ($1::uuid IS NULL OR j.id < $1::uuid)"
    "          AND ($3::text IS NULL OR j.status = $3)"
    "          AND ($4::uuid IS NULL OR j.queue_id = $4::uuid)"
    "          AND ($5::uuid IS NULL OR j.agent_id = $5::uuid)"
    "          AND ($6::timestamptz IS NULL OR j.created_at >= $6::timestamptz)"
    "          AND ($7::timestamptz IS NULL OR j.created_at < $7::timestamptz)"
    "          AND ($8::uuid IS NULL OR j.retry_of = $8::uuid)"
    "        ORDER BY j.id DESC LIMIT $2) s"
    " JOIN job_view v ON v.id = s.id",
    8);

static bool valid_status(const char *s)
{
    static const char *const all[] = {"queued", "assigned",  "running", "succeeded",
                                      "failed", "cancelled", "dead"};
    for (size_t i = 0; i < ELEMENTSOF(all); i++)
        if (strcmp(all[i], s) == 0)
            return true;
    return false;
}

void api_jobs_list(struct http_req *req)
{
    int limit;
    const char *cursor;
    if (http_req_page(req, 50, 500, &limit, &cursor) < 0)
        return;
    const char *status = http_req_query(req, "status");
    const char *queue = http_req_query(req, "queue_id");
    const char *agent = http_req_query(req, "agent_id");
    const char *since = http_req_query(req, "created_after");
    const char *until = http_req_query(req, "created_before");
    const char *retry_of = http_req_query(req, "retry_of");
    int64_t ms;
    const char *bad = NULL, *why = NULL;
    char after[ID_STR_LEN];
    int c = api_page_cursor(req, cursor, after);
    if (c < 0)
        return;
    if (status && !valid_status(status))
        bad = "status",
        why = "must be queued, assigned, running, succeeded, failed, cancelled or dead";
    else if (queue && !id_is_valid(queue))
        bad = "queue_id", why = "must be a queue id";
    else if (agent && !id_is_valid(agent))
        bad = "agent_id", why = "must be an agent id";
    else if (retry_of && !id_is_valid(retry_of))
        bad = "retry_of", why = "must be a job id";
    else if (since && clock_parse_rfc3339(since, &ms) < 0)
        bad = "created_after", why = "must be an RFC 3339 time";
    else if (until && clock_parse_rfc3339(until, &ms) < 0)
        bad = "created_before", why = "must be an RFC 3339 time";
    if (bad) {
        http_reply_problem(req, PROBLEM_VALIDATION, why, bad);
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {c ? after : NULL, lim, status, queue, agent, since, until, retry_of};
    PGresult *res = NULL;
    int r = store_exec_once(((struct app *)http_req_app(req))->store,
                            http_req_principal(req)->tenant_id, &q_job_list, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "listing jobs");
        return;
    }
    api_reply_page(req, res);
}

/* A queued job is cancelled at once; an assigned or running one is marked, and its agent
 * is told (the agent protocol's heartbeat answer) to stop it. A finished job is left as
 * it is (409). */
static const struct store_stmt q_job_cancel = STORE_STMT(
    "job_cancel",
    "WITH j AS (SELECT id, status FROM jobs WHERE id = $1 FOR UPDATE),"
    " u AS (UPDATE jobs SET cancel_requested = true, updated_at = now(),"
    "         status = CASE WHEN jobs.status = 'queued' THEN 'cancelled' ELSE jobs.status END,"
    "         finished_at = CASE WHEN jobs.status = 'queued' THEN now() ELSE finished_at END"
    "        FROM j WHERE jobs.id = j.id AND j.status IN ('queued', 'assigned', 'running')"
    "        RETURNING jobs.id, jobs.agent_id)"
    " SELECT j.status, (SELECT count(*) FROM u),"
    "        (SELECT u.agent_id FROM u WHERE j.status <> 'queued'),"
    "        (SELECT a.gateway_node FROM u JOIN agents a ON a.id = u.agent_id)"
    "   FROM j",
    1);

void api_jobs_cancel(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    PGresult *res = NULL;
    const char *p[] = {id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_job_cancel, p, &res);
    if (r == 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
        return;
    }
    if (r > 0 && strcmp(PQgetvalue(res, 0, 1), "0") == 0) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the job is already %s", PQgetvalue(res, 0, 0));
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT, detail, NULL);
        return;
    }
    /* The agent running it hears at once (its held exchange is answered). */
    char agent[ID_STR_LEN] = "", node[128] = "";
    if (r > 0 && !PQgetisnull(res, 0, 2)) {
        snprintf(agent, sizeof(agent), "%s", PQgetvalue(res, 0, 2));
        snprintf(node, sizeof(node), "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    if (r > 0)
        r = app_audit(tx, req, NULL, "job.cancel", "job", id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "cancelling the job");
        return;
    }
    res = NULL;
    r = store_tx_exec(tx, &q_job_doc, p, &res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "cancelling the job");
        return;
    }
    if (api_commit(req, tx, "cancelling the job") < 0) {
        PQclear(res);
        return;
    }
    /* Through the agent's node's queue when this node holds no long-polls (an API-only
     * node): gateway_notify() would need a gateway here. */
    if (agent[0])
        gateway_notify_node(http_req_app(req), agent, node[0] ? node : NULL);
    api_reply_pg_json(req, 202, res);
}

/* A finished job submitted again as a new job with the same spec (queue, command or
 * package and entrypoint, args, env, params, requirements as stored, priority, timeout,
 * attempts), recording retry_of. Its idempotency key is not copied: the retry is a job of
 * its own. Row-level security keeps another tenant's job out of the select (404). */
static const struct store_stmt q_job_retry =
    STORE_STMT("job_retry",
               "WITH o AS (SELECT * FROM jobs WHERE id = $2),"
               " i AS (INSERT INTO jobs (id, tenant_id, queue_id, priority, command, package_id,"
               "         package_ref, entrypoint, args, env, params, requirements, timeout_ms,"
               "         max_attempts, retry_of)"
               "       SELECT $1, app_tenant(), o.queue_id, o.priority, o.command, o.package_id,"
               "              o.package_ref, o.entrypoint, o.args, o.env, o.params, o.requirements,"
               "              o.timeout_ms, o.max_attempts, o.id"
               "         FROM o WHERE o.status IN ('succeeded', 'failed', 'cancelled', 'dead')"
               "          AND (o.command IS NOT NULL OR o.package_id IS NOT NULL)"
               "       RETURNING id)"
               " SELECT o.status, (SELECT count(*) FROM i), q.name,"
               "        o.command IS NULL AND o.package_id IS NULL, o.package_ref FROM o"
               "   LEFT JOIN queues q ON q.id = o.queue_id",
               2);

void api_jobs_retry(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const char *tenant = http_req_principal(req)->tenant_id;
    char new_id[ID_STR_LEN], queue[API_QUEUE_NAME_MAX + 1] = "";
    id_uuid7_str(new_id);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(app, req, &tx);
    PGresult *res = NULL;
    const char *p[] = {new_id, id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_job_retry, p, &res);
    if (r == 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
        return;
    }
    if (r > 0 && strcmp(PQgetvalue(res, 0, 1), "0") == 0) {
        char detail[160];
        if (strcmp(PQgetvalue(res, 0, 3), "t") == 0) /* its package version was deleted */
            snprintf(detail, sizeof(detail),
                     "the package version this job ran (%s) was deleted: submit it again "
                     "by reference",
                     PQgetisnull(res, 0, 4) ? "-" : PQgetvalue(res, 0, 4));
        else
            snprintf(detail, sizeof(detail), "the job is still %s: only a finished job is retried",
                     PQgetvalue(res, 0, 0));
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT, detail, NULL);
        return;
    }
    if (r > 0 && !PQgetisnull(res, 0, 2))
        snprintf(queue, sizeof(queue), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    res = NULL;
    if (r > 0) {
        json_t *d = json_pack("{s:s}", "retry_of", id);
        r = app_audit(tx, req, NULL, "job.retry", "job", new_id, d);
        json_decref(d);
    }
    const char *pn[] = {new_id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_job_doc, pn, &res);
    if (r < 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_error(req, r, "retrying the job");
        return;
    }
    if (api_commit(req, tx, "retrying the job") < 0) {
        PQclear(res);
        return;
    }
    json_t *ids = json_pack("[s]", new_id);
    announce(req, tenant, ids);
    json_decref(ids);
    metrics_orch_submitted(app->metrics, tenant, queue, 1);
    char qq[160];
    log_info("op=job.retry job=%s retry_of=%s queue=%s", new_id, id,
             queue[0] ? log_quote(queue, qq, sizeof(qq)) : "-");
    api_reply_pg_json(req, 201, res);
}

/* Output of the job's latest attempt (or ?epoch=), one stream, from ?offset=, at most
 * ?limit_bytes= (default 64 KiB, at most 1 MiB). The body is the raw bytes; headers say
 * where the next read starts, where the stream ends now, whether the attempt has finished,
 * and how much of the stream's start is no longer stored. */
static const struct store_stmt q_job_logs = STORE_STMT(
    "job_logs",
    "WITH j AS (SELECT id, epoch, status IN ('succeeded', 'failed', 'cancelled', 'dead') AS done"
    "             FROM jobs WHERE id = $1),"
    " e AS (SELECT coalesce($2::bigint, (SELECT epoch FROM j)) AS epoch),"
    /* Bytes before first_offset are no longer stored: a read from there starts at it. */
    " s AS (SELECT ls.first_offset FROM job_log_streams ls, e"
    "        WHERE ls.job_id = $1 AND ls.epoch = e.epoch AND ls.stream = $3),"
    " o AS (SELECT greatest($4::bigint, coalesce((SELECT first_offset FROM s), 0)) AS off),"
    " c AS (SELECT l.\"offset\", l.data FROM job_logs l, e, o"
    "        WHERE l.job_id = $1 AND l.epoch = e.epoch AND l.stream = $3"
    "          AND l.\"offset\" + length(l.data) > o.off"
    "          AND l.\"offset\" < o.off + $5::int"
    "        ORDER BY l.\"offset\")"
    " SELECT (SELECT epoch FROM e), (SELECT done FROM j),"
    "        substring(coalesce(string_agg(c.data, ''::bytea ORDER BY c.\"offset\"), ''::bytea)"
    "                  FROM (1 + greatest((SELECT off FROM o) - coalesce(min(c.\"offset\"),"
    "                                                          (SELECT off FROM o)), 0))::int"
    "                  FOR $5::int),"
    "        greatest(coalesce(min(c.\"offset\"), (SELECT off FROM o)), (SELECT off FROM o)),"
    "        (SELECT first_offset FROM s),"
    /* Where the stream ends now, so a reader can start at its tail: the stream's own
     * count, or the last stored chunk's end (one probe of the primary key). */
    "        greatest(coalesce((SELECT ls.end_offset FROM job_log_streams ls, e"
    "                            WHERE ls.job_id = $1 AND ls.epoch = e.epoch"
    "                              AND ls.stream = $3), 0),"
    "                 coalesce((SELECT l.\"offset\" + length(l.data) FROM job_logs l, e"
    "                            WHERE l.job_id = $1 AND l.epoch = e.epoch AND l.stream = $3"
    "                            ORDER BY l.\"offset\" DESC LIMIT 1), 0))"
    " FROM c WHERE EXISTS (SELECT 1 FROM j)",
    5);

void api_jobs_logs(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    const char *stream = http_req_query(req, "stream");
    const char *offset = http_req_query(req, "offset");
    const char *epoch = http_req_query(req, "epoch");
    const char *limit = http_req_query(req, "limit_bytes");
    char *end = NULL;
    errno = 0;
    long long off = offset ? strtoll(offset, &end, 10) : 0;
    if (!stream)
        stream = "stdout";
    if (strcmp(stream, "stdout") != 0 && strcmp(stream, "stderr") != 0 &&
        strcmp(stream, "system") != 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be stdout, stderr or system", "stream");
        return;
    }
    if (offset &&
        (errno || !end || end == offset || *end || off < 0 || off > ORCH_LOG_OFFSET_MAX)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be a byte offset between 0 and 2^53 - 1",
                           "offset");
        return;
    }
    long long lim = 65536;
    if (limit) {
        lim = strtoll(limit, &end, 10);
        if (!end || *end || lim < 1 || lim > 1048576) {
            http_reply_problem(req, PROBLEM_VALIDATION, "must be between 1 and 1048576",
                               "limit_bytes");
            return;
        }
    }
    if (epoch) {
        errno = 0;
        long long e = strtoll(epoch, &end, 10);
        if (errno || !end || end == epoch || *end || e < 1) {
            http_reply_problem(req, PROBLEM_VALIDATION, "must be an attempt epoch >= 1", "epoch");
            return;
        }
    }
    char offs[24], lims[24];
    snprintf(offs, sizeof(offs), "%lld", off);
    snprintf(lims, sizeof(lims), "%lld", lim);
    const char *p[] = {id, epoch, stream, offs, lims};
    PGresult *res = NULL;
    struct app *app = http_req_app(req);
    struct store_tx *tx = NULL;
    int r = store_tx_begin_tenant(app->store, http_req_principal(req)->tenant_id, &tx);
    if (r >= 0) {
        /* Binary result: the bytes come back unescaped. */
        r = store_tx_exec(tx, &q_job_logs, p, &res);
        store_tx_commit(tx);
    }
    if (r < 0) {
        http_reply_error(req, r, "reading the job's output");
        return;
    }
    if (r == 0 || PQgetisnull(res, 0, 1)) {
        PQclear(res);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
        return;
    }
    size_t n = 0;
    unsigned char *data = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 2), &n);
    long long start = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    char next[24];
    snprintf(next, sizeof(next), "%lld", start + (long long)n);
    http_reply_header(req, "X-Next-Offset", next);
    http_reply_header(req, "X-Epoch", PQgetvalue(res, 0, 0));
    /* The marker of output no longer stored (the job's log limit kept the tail, or
     * retention removed it): bytes [0, X-Dropped-Bytes) of the stream are gone, and a read
     * from before there starts there. */
    http_reply_header(req, "X-Dropped-Bytes", PQgetisnull(res, 0, 4) ? "0" : PQgetvalue(res, 0, 4));
    http_reply_header(req, "X-End-Offset", PQgetvalue(res, 0, 5));
    http_reply_header(req, "X-Complete",
                      strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? "true" : "false");
    http_reply_bytes(req, 200, "application/octet-stream", (const char *)data, n);
    PQfreemem(data);
    PQclear(res);
}
