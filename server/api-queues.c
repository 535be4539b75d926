/* api-queues.c: a tenant's named job queues. Creating one is subject to the tier's queue
 * quota (quota_acquire() in sql/0002_api.sql). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

static const struct store_stmt q_queue_doc =
    STORE_STMT("queue_doc", "SELECT doc FROM queue_view WHERE id = $1", 1);

static const struct store_stmt q_queue_list = STORE_STMT(
    "queue_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM queue_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_quota_queues =
    STORE_STMT("quota_queues", "SELECT quota_acquire('queues')", 0);

static const struct store_stmt q_queue_insert =
    STORE_STMT("queue_insert",
               "INSERT INTO queues (id, tenant_id, name, default_priority, requirements, paused,"
               " max_running) VALUES ($1, app_tenant(), $2, coalesce($3::int, 0),"
               " coalesce($4::jsonb, '{}'), coalesce($5::bool, false),"
               " CASE WHEN $6::bool THEN $7::int END)",
               7);

static const struct store_stmt q_queue_update = STORE_STMT(
    "queue_update",
    "UPDATE queues SET name = coalesce($2, name),"
    " default_priority = coalesce($3::int, default_priority),"
    " requirements = coalesce($4::jsonb, requirements), paused = coalesce($5::bool, paused),"
    " max_running = CASE WHEN $6::bool THEN $7::int ELSE max_running END,"
    " updated_at = now() WHERE id = $1 RETURNING id",
    7);

static const struct store_stmt q_queue_delete =
    STORE_STMT("queue_delete", "DELETE FROM queues WHERE id = $1 RETURNING name", 1);

/* Shared validation of create and update bodies; fills the text parameters. */
struct queue_input {
    const char *name;
    char prio[16];
    char *requirements; /* malloc'd JSON text or NULL */
    const char *paused;
    const char *max_running_given; /* "true" when the body has max_running (null clears it) */
    char max_running[16];          /* "" = null */
};

static int queue_input(struct http_req *req, const json_t *body, struct queue_input *in)
{
    memset(in, 0, sizeof(*in));
    in->name = api_json_str(body, "name");
    if (in->name && !api_name_ok(in->name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit",
                           "name");
        return -EINVAL;
    }
    json_t *prio = json_object_get(body, "default_priority");
    if (prio)
        snprintf(in->prio, sizeof(in->prio), "%lld", (long long)json_integer_value(prio));
    json_t *reqs = json_object_get(body, "requirements");
    char field[96], detail[160];
    if (api_jobs_check_requirements(reqs, "requirements", field, sizeof(field), detail,
                                    sizeof(detail)) < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
        return -EINVAL;
    }
    if (reqs) {
        in->requirements = json_dumps(reqs, JSON_COMPACT);
        if (!in->requirements) {
            http_reply_error(req, -ENOMEM, "encoding requirements");
            return -ENOMEM;
        }
    }
    json_t *paused = json_object_get(body, "paused");
    if (paused)
        in->paused = json_is_true(paused) ? "true" : "false";
    /* At most this many of the queue's jobs assigned or running (null: no limit of its
     * own); the table's bounds are the column's. */
    json_t *maxr = json_object_get(body, "max_running");
    in->max_running_given = maxr ? "true" : "false";
    if (json_is_integer(maxr))
        snprintf(in->max_running, sizeof(in->max_running), "%lld",
                 (long long)json_integer_value(maxr));
    return 0;
}

/* The bound of the column queues.max_running (sql/0010_scheduling.sql). */
#define QUEUE_MAX_RUNNING_MAX 100000

/* The parameters of q_queue_insert and q_queue_update, in their order (borrowed from in). */
#define QUEUE_PARAMS 7
static void queue_params(const char *id, const struct queue_input *in, const char *p[QUEUE_PARAMS])
{
    p[0] = id;
    p[1] = in->name;
    p[2] = in->prio[0] ? in->prio : NULL;
    p[3] = in->requirements;
    p[4] = in->paused;
    p[5] = in->max_running_given;
    p[6] = in->max_running[0] ? in->max_running : NULL;
}

/* Create and update take the same members; only create requires the name. */
static const struct jsonv_field create_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, API_QUEUE_NAME_MAX},
    {"default_priority", JSONV_INT, 0, API_PRIORITY_MIN, API_PRIORITY_MAX},
    {"requirements", JSONV_OBJECT, 0, 0, API_LABELS_MAX},
    {"paused", JSONV_BOOL, 0, 0, 0},
    {"max_running", JSONV_INT, JSONV_NULLABLE, 1, QUEUE_MAX_RUNNING_MAX},
};

static const struct jsonv_field update_fields[] = {
    {"name", JSONV_STRING, 0, 1, API_QUEUE_NAME_MAX},
    {"default_priority", JSONV_INT, 0, API_PRIORITY_MIN, API_PRIORITY_MAX},
    {"requirements", JSONV_OBJECT, 0, 0, API_LABELS_MAX},
    {"paused", JSONV_BOOL, 0, 0, 0},
    {"max_running", JSONV_INT, JSONV_NULLABLE, 1, QUEUE_MAX_RUNNING_MAX},
};

/* Read the queue back in tx, commit, and reply. */
static void reply_queue(struct http_req *req, struct store_tx *tx, const char *id, int status)
{
    api_reply_doc_commit(req, tx, &q_queue_doc, id, status, "queue", NULL, NULL);
}

/* Reply to a failed queue write: name taken, quota exhausted, or other. Rolls tx back. */
static void queue_write_failed(struct http_req *req, struct store_tx *tx, int r)
{
    if (r == -EDQUOT) {
        app_reply_quota_refused(req, tx, NULL,
                                "the tenant's queue quota is exhausted; delete a queue or move "
                                "to a larger tier");
        return;
    }
    store_tx_rollback(tx);
    if (r == -EEXIST)
        http_reply_problem(req, PROBLEM_CONFLICT, "a queue with this name exists", "name");
    else
        http_reply_error(req, r, "saving the queue");
}

void api_queues_create(struct http_req *req)
{
    json_t *body = NULL;
    if (http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0)
        return;
    struct queue_input in;
    if (queue_input(req, body, &in) == 0) {
        char id[ID_STR_LEN];
        id_uuid7_str(id);
        struct app *app = http_req_app(req);
        struct store_tx *tx = NULL;
        int r = app_tx_begin(app, req, &tx);
        if (r < 0) {
            http_reply_error(req, r, "creating the queue");
        } else {
            const char *p[QUEUE_PARAMS];
            queue_params(id, &in, p);
            r = store_tx_exec(tx, &q_quota_queues, NULL, NULL);
            if (r >= 0)
                r = store_tx_exec(tx, &q_queue_insert, p, NULL);
            if (r >= 0)
                r = app_audit(tx, req, NULL, "queue.create", "queue", id, body);
            if (r < 0)
                queue_write_failed(req, tx, r);
            else
                reply_queue(req, tx, id, 201);
        }
    }
    free(in.requirements);
    json_decref(body);
}

void api_queues_update(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "queue");
    if (!id)
        return;
    json_t *body = NULL;
    if (http_req_json(req, update_fields, ELEMENTSOF(update_fields), &body) < 0)
        return;
    struct queue_input in;
    if (queue_input(req, body, &in) == 0) {
        struct store_tx *tx = NULL;
        int r = app_tx_begin(http_req_app(req), req, &tx);
        if (r < 0) {
            http_reply_error(req, r, "updating the queue");
        } else {
            const char *p[QUEUE_PARAMS];
            queue_params(id, &in, p);
            r = store_tx_exec(tx, &q_queue_update, p, NULL);
            if (r == 0) {
                store_tx_rollback(tx);
                http_reply_problem(req, PROBLEM_NOT_FOUND, "no such queue", NULL);
            } else {
                if (r > 0)
                    r = app_audit(tx, req, NULL, "queue.update", "queue", id, body);
                if (r < 0)
                    queue_write_failed(req, tx, r);
                else
                    reply_queue(req, tx, id, 200);
            }
        }
    }
    free(in.requirements);
    json_decref(body);
}

void api_queues_get(struct http_req *req)
{
    api_get_doc(req, &q_queue_doc, http_req_principal(req)->tenant_id, "queue");
}

void api_queues_list(struct http_req *req)
{
    api_list_page(req, &q_queue_list, http_req_principal(req)->tenant_id, "listing queues");
}

void api_queues_delete(struct http_req *req)
{
    api_delete_by_id(req, &q_queue_delete, "queue", "queue");
}
