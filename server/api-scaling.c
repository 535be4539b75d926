/* api-scaling.c: the autoscaling signals (GET /api/v1/scaling/signals, docs/api.md): what
 * an external autoscaler needs to add or remove agents, per tenant, queue and distinct
 * requirement set. A tenant reads its own; a platform operator reads every tenant's, or
 * one's with ?tenant_id=.
 *
 * The matching agents include the shared pools' that admit the tenant, which the tenant's
 * scope cannot see: scaling_signals() (sql/0012_wait.sql) runs in the system scope with
 * the tenant's id from the caller's token as its bound, and says nothing of a pool agent
 * but counts.
 *
 * The policies (/api/v1/scaling/policies) are those of the caller's own tenant
 * (app_own_tenant()): a tenant's watch its jobs; a platform operator's are the platform
 * tenant's rows, each naming a shared pool, and watch the jobs of every tenant the pool
 * admits against the pool's agents (sql/0019_pool_scaling.sql). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

/* Requirement sets listed per tenant, most waiting first; the rest are summed up in
 * requirement_sets_truncated. */
#define SCALING_MAX_SETS "100"

static const struct store_stmt q_signals =
    STORE_STMT("scaling_signals", "SELECT scaling_signals($1::uuid, $2::int, $3::int)", 3);

void api_scaling_signals(struct http_req *req)
{
    const struct http_principal *pr = http_req_principal(req);
    const char *tenant = http_req_query(req, "tenant_id");
    if (pr->kind == HTTP_PRINCIPAL_TENANT) {
        /* A tenant's own id is the only one it may name. */
        if (tenant && strcmp(tenant, pr->tenant_id) != 0) {
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "only platform operators read other tenants' signals", "tenant_id");
            return;
        }
        tenant = pr->tenant_id;
    } else if (tenant && !id_is_valid(tenant)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be a tenant id", "tenant_id");
        return;
    }
    struct app *app = http_req_app(req);
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    const char *p[] = {tenant, online, SCALING_MAX_SETS};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_signals, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the scaling signals");
        return;
    }
    api_reply_pg_json(req, 200, res);
}

/* Policies one tenant may have. */
#define SCALING_POLICIES_MAX 50
/* The bounds of a policy's members (the CHECKs of sql/0017_scaling.sql). */
#define SCALING_DEPTH_MAX    100000
#define SCALING_STEP_MAX     1000
#define SCALING_COOLDOWN_MAX 86400
#define SCALING_AGENTS_MAX   10000

static const struct store_stmt q_policy_doc =
    STORE_STMT("scaling_policy_doc", "SELECT doc FROM scaling_policy_view WHERE id = $1", 1);

static const struct store_stmt q_policy_exists =
    STORE_STMT("scaling_policy_exists", "SELECT 1 FROM scaling_policies WHERE id = $1", 1);

static const struct store_stmt q_policy_list = STORE_STMT(
    "scaling_policy_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM scaling_policy_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

/* Newest first: the cursor is the oldest id of the page. */
static const struct store_stmt q_history_list =
    STORE_STMT("scaling_history_list",
               "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id DESC), '[]'),"
               " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id))[1] END)"
               " FROM (SELECT id, doc FROM scaling_history_view WHERE policy_id = $3::uuid"
               "        AND ($1::uuid IS NULL OR id < $1::uuid) ORDER BY id DESC LIMIT $2) s",
               3);

static const struct store_stmt q_policy_queue =
    STORE_STMT("scaling_policy_queue", "SELECT id FROM queues WHERE name = $1", 1);

static const struct store_stmt q_policy_current = STORE_STMT(
    "scaling_policy_current",
    "SELECT name, (SELECT q.name FROM queues q WHERE q.id = p.queue_id), requirements,"
    " up_depth_per_agent, up_utilisation, down_depth_per_agent, down_utilisation, up_step,"
    " down_step, up_cooldown_s, down_cooldown_s, min_agents, max_agents, enabled, pool_id"
    " FROM scaling_policies p WHERE id = $1 FOR UPDATE",
    1);

/* At most SCALING_POLICIES_MAX ($17): no row inserted past it. A pool ($16) that does
 * not exist fails the foreign key (-ENOENT). */
static const struct store_stmt q_policy_insert = STORE_STMT(
    "scaling_policy_insert",
    "INSERT INTO scaling_policies (id, tenant_id, name, queue_id, requirements,"
    " up_depth_per_agent, up_utilisation, down_depth_per_agent, down_utilisation, up_step,"
    " down_step, up_cooldown_s, down_cooldown_s, min_agents, max_agents, enabled, pool_id)"
    " SELECT $1, app_tenant(), $2, $3::uuid, $4::jsonb, $5::numeric, $6::numeric, $7::numeric,"
    " $8::numeric, $9::int, $10::int, $11::int, $12::int, $13::int, $14::int, $15::bool,"
    " $16::uuid WHERE (SELECT count(*) FROM scaling_policies) < $17::int",
    17);

static const struct store_stmt q_policy_update = STORE_STMT(
    "scaling_policy_update",
    "UPDATE scaling_policies SET name = $2, queue_id = $3::uuid, requirements = $4::jsonb,"
    " up_depth_per_agent = $5::numeric, up_utilisation = $6::numeric,"
    " down_depth_per_agent = $7::numeric, down_utilisation = $8::numeric, up_step = $9::int,"
    " down_step = $10::int, up_cooldown_s = $11::int, down_cooldown_s = $12::int,"
    " min_agents = $13::int, max_agents = $14::int, enabled = $15::bool, pool_id = $16::uuid,"
    " updated_at = now() WHERE id = $1 RETURNING id",
    16);

static const struct store_stmt q_policy_delete = STORE_STMT(
    "scaling_policy_delete", "DELETE FROM scaling_policies WHERE id = $1 RETURNING id", 1);

#define POLICY_FIELDS(req)                                                                         \
    {"name", JSONV_STRING, req, 1, API_QUEUE_NAME_MAX},                                            \
        {"queue", JSONV_STRING, JSONV_NULLABLE, 1, API_QUEUE_NAME_MAX},                            \
        {"requirements", JSONV_OBJECT, JSONV_NULLABLE, 0, API_LABELS_MAX},                         \
        {"up_depth_per_agent", JSONV_NUMBER, JSONV_NULLABLE, 0, SCALING_DEPTH_MAX},                \
        {"up_utilisation", JSONV_NUMBER, JSONV_NULLABLE, 0, 1},                                    \
        {"down_depth_per_agent", JSONV_NUMBER, JSONV_NULLABLE, 0, SCALING_DEPTH_MAX},              \
        {"down_utilisation", JSONV_NUMBER, JSONV_NULLABLE, 0, 1},                                  \
        {"up_step", JSONV_INT, 0, 1, SCALING_STEP_MAX},                                            \
        {"down_step", JSONV_INT, 0, 1, SCALING_STEP_MAX},                                          \
        {"up_cooldown_s", JSONV_INT, 0, 0, SCALING_COOLDOWN_MAX},                                  \
        {"down_cooldown_s", JSONV_INT, 0, 0, SCALING_COOLDOWN_MAX},                                \
        {"min_agents", JSONV_INT, 0, 0, SCALING_AGENTS_MAX},                                       \
        {"max_agents", JSONV_INT, req, 1, SCALING_AGENTS_MAX},                                     \
        {"pool", JSONV_STRING, JSONV_NULLABLE, 1, ID_STR_LEN - 1},                                 \
    {                                                                                              \
        "enabled", JSONV_BOOL, 0, 0, 0                                                             \
    }

static const struct jsonv_field create_fields[] = {POLICY_FIELDS(JSONV_REQUIRED)};
static const struct jsonv_field update_fields[] = {POLICY_FIELDS(0)};

/* The triggers, in the order of the statements' parameters $5..$8. */
static const char *const triggers[] = {"up_depth_per_agent", "up_utilisation",
                                       "down_depth_per_agent", "down_utilisation"};
/* The integers, in the order of $9..$14. */
static const char *const integers[] = {"up_step",         "down_step",  "up_cooldown_s",
                                       "down_cooldown_s", "min_agents", "max_agents"};

/* A whole policy as the statements take it. */
struct policy {
    char name[API_QUEUE_NAME_MAX + 1];
    char queue[API_QUEUE_NAME_MAX + 1]; /* "" = none */
    char queue_id[ID_STR_LEN];          /* resolved from queue */
    char pool[ID_STR_LEN];              /* "" = none: a tenant's policy */
    json_t *requirements;               /* owned; NULL = none */
    double trig[4];                     /* < 0 = not set */
    int64_t ints[6];
    bool enabled;
};

static void policy_defaults(struct policy *p)
{
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < ELEMENTSOF(p->trig); i++)
        p->trig[i] = -1;
    static const int64_t defaults[] = {1, 1, 60, 300, 0, 1};
    memcpy(p->ints, defaults, sizeof(defaults));
    p->enabled = true;
}

/* The policy's current values (row 0 of q_policy_current) into p. */
static void policy_from_row(struct policy *p, const PGresult *res)
{
    policy_defaults(p);
    snprintf(p->name, sizeof(p->name), "%s", PQgetvalue(res, 0, 0));
    if (!PQgetisnull(res, 0, 1))
        snprintf(p->queue, sizeof(p->queue), "%s", PQgetvalue(res, 0, 1));
    json_error_t je;
    if (!PQgetisnull(res, 0, 2))
        p->requirements = json_loads(PQgetvalue(res, 0, 2), 0, &je);
    for (int i = 0; i < 4; i++)
        if (!PQgetisnull(res, 0, 3 + i))
            p->trig[i] = strtod(PQgetvalue(res, 0, 3 + i), NULL);
    for (int i = 0; i < 6; i++)
        p->ints[i] = strtoll(PQgetvalue(res, 0, 7 + i), NULL, 10);
    p->enabled = strcmp(PQgetvalue(res, 0, 13), "t") == 0;
    if (!PQgetisnull(res, 0, 14))
        snprintf(p->pool, sizeof(p->pool), "%s", PQgetvalue(res, 0, 14));
}

/* Lay what body (checked by the field table) gives over p, then check the whole. Replies
 * 422 naming the field and returns -EINVAL when bad. */
static int policy_apply(struct http_req *req, const json_t *body, struct policy *p)
{
    char field[192], detail[256];
    const char *name = api_json_str(body, "name");
    if (name && !api_name_ok(name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be 1 to 64 characters of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit",
                           "name");
        return -EINVAL;
    }
    if (name)
        snprintf(p->name, sizeof(p->name), "%s", name);
    json_t *v = json_object_get(body, "queue");
    if (v)
        snprintf(p->queue, sizeof(p->queue), "%s", json_is_string(v) ? json_string_value(v) : "");
    v = json_object_get(body, "requirements");
    if (v) {
        if (json_is_object(v) &&
            api_jobs_check_requirements(v, "requirements", field, sizeof(field), detail,
                                        sizeof(detail)) < 0) {
            http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
            return -EINVAL;
        }
        json_decref(p->requirements);
        p->requirements = json_is_object(v) ? json_incref(v) : NULL;
    }
    for (size_t i = 0; i < ELEMENTSOF(triggers); i++) {
        v = json_object_get(body, triggers[i]);
        if (v)
            p->trig[i] = json_is_number(v) ? json_number_value(v) : -1;
    }
    for (size_t i = 0; i < ELEMENTSOF(integers); i++) {
        v = json_object_get(body, integers[i]);
        if (v)
            p->ints[i] = json_integer_value(v);
    }
    v = json_object_get(body, "enabled");
    if (v)
        p->enabled = json_is_true(v);
    /* A pool's policy is the platform operator's alone (rows of the platform tenant,
     * sql/0019_pool_scaling.sql), and the operator's policies are all of pools. */
    bool platform = http_req_principal(req)->kind == HTTP_PRINCIPAL_PLATFORM;
    v = json_object_get(body, "pool");
    if (v && json_is_string(v) && !platform) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "only a platform operator's policy names a pool", "pool");
        return -EINVAL;
    }
    if (v && json_is_string(v) && !id_is_valid(json_string_value(v))) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be a pool id", "pool");
        return -EINVAL;
    }
    if (v)
        snprintf(p->pool, sizeof(p->pool), "%s", json_is_string(v) ? json_string_value(v) : "");
    if (platform && !p->pool[0]) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "a platform operator's policy must name a pool (its id)", "pool");
        return -EINVAL;
    }
    if (platform && p->queue[0]) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "a pool's policy names no queue: queues are a tenant's", "queue");
        return -EINVAL;
    }

    /* The rules across members, each named by the member the body is most likely to have
     * got wrong. */
    const char *bad = NULL, *why = NULL;
    if (json_object_get(body, "up_depth_per_agent") && p->trig[0] == 0)
        bad = "up_depth_per_agent", why = "must be more than 0, or null";
    else if (json_object_get(body, "up_utilisation") && p->trig[1] == 0)
        bad = "up_utilisation", why = "must be more than 0 and at most 1, or null";
    else if (p->trig[3] >= 1)
        bad = "down_utilisation", why = "must be at least 0 and less than 1, or null";
    else if (p->trig[0] < 0 && p->trig[1] < 0)
        bad = json_object_get(body, "up_utilisation") ? "up_utilisation" : "up_depth_per_agent",
        why = "a policy needs an up trigger: up_depth_per_agent, up_utilisation or both";
    else if (p->trig[0] >= 0 && p->trig[2] >= 0 && p->trig[2] >= p->trig[0])
        bad = "down_depth_per_agent", why = "must be less than up_depth_per_agent";
    else if (p->trig[1] >= 0 && p->trig[3] >= 0 && p->trig[3] >= p->trig[1])
        bad = "down_utilisation", why = "must be less than up_utilisation";
    else if (p->ints[4] > p->ints[5])
        bad = json_object_get(body, "min_agents") ? "min_agents" : "max_agents",
        why = "min_agents must not exceed max_agents";
    if (bad) {
        http_reply_problem(req, PROBLEM_VALIDATION, why, bad);
        return -EINVAL;
    }
    return 0;
}

/* The queue p names, as an id in p->queue_id. Returns 0, -ENOENT when the tenant has no
 * such queue, or a store error. */
static int policy_queue(struct store_tx *tx, struct policy *p)
{
    p->queue_id[0] = '\0';
    if (!p->queue[0])
        return 0;
    PGresult *res = NULL;
    const char *params[] = {p->queue};
    int r = store_tx_exec(tx, &q_policy_queue, params, &res);
    if (r == 1)
        snprintf(p->queue_id, sizeof(p->queue_id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return r < 0 ? r : r == 1 ? 0 : -ENOENT;
}

/* Text of the statements' parameters $1..$17 (the pool, then the limit, last) for p;
 * reqs is p's requirements' JSON text (malloc'd by the caller) or NULL. */
struct policy_text {
    char trig[4][32];
    char ints[6][24];
    char limit[16];
};

static void policy_params(const char *id, const struct policy *p, const char *reqs,
                          struct policy_text *t, const char *out[17])
{
    out[0] = id;
    out[1] = p->name;
    out[2] = p->queue_id[0] ? p->queue_id : NULL;
    out[3] = reqs;
    for (int i = 0; i < 4; i++) {
        snprintf(t->trig[i], sizeof(t->trig[i]), "%.10g", p->trig[i]);
        out[4 + i] = p->trig[i] >= 0 ? t->trig[i] : NULL;
    }
    for (int i = 0; i < 6; i++) {
        snprintf(t->ints[i], sizeof(t->ints[i]), "%lld", (long long)p->ints[i]);
        out[8 + i] = t->ints[i];
    }
    out[14] = p->enabled ? "true" : "false";
    out[15] = p->pool[0] ? p->pool : NULL;
    snprintf(t->limit, sizeof(t->limit), "%d", SCALING_POLICIES_MAX);
    out[16] = t->limit;
}

/* Reply to a failed write (rolls tx back). */
static void policy_write_failed(struct http_req *req, struct store_tx *tx, const struct policy *p,
                                int r)
{
    store_tx_rollback(tx);
    if (r == -EEXIST)
        http_reply_problem(req, PROBLEM_CONFLICT, "a scaling policy with this name exists", "name");
    else if (r == -ENOENT && p && p->pool[0])
        http_reply_problem(req, PROBLEM_VALIDATION, "no such pool", "pool");
    else if (r == -ENOENT)
        http_reply_problem(req, PROBLEM_VALIDATION, "no queue of this name", "queue");
    else
        http_reply_error(req, r, "saving the scaling policy");
}

void api_scaling_policies_create(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0)
        return;
    struct policy p;
    policy_defaults(&p);
    char *reqs = NULL;
    if (policy_apply(req, body, &p) < 0)
        goto out;
    reqs = p.requirements ? json_dumps(p.requirements, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char id[ID_STR_LEN];
    id_uuid7_str(id);
    struct store_tx *tx = NULL;
    int r = app_tx_begin_own(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "creating the scaling policy");
        goto out;
    }
    struct policy_text t;
    const char *params[17];
    r = policy_queue(tx, &p);
    policy_params(id, &p, reqs, &t, params);
    if (r >= 0)
        r = store_tx_exec(tx, &q_policy_insert, params, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT,
                           "the tenant has 50 scaling policies, the most it may have; delete "
                           "one first",
                           NULL);
        goto out;
    }
    if (r > 0)
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), "scaling_policy.create",
                      "scaling_policy", id, body);
    if (r < 0)
        policy_write_failed(req, tx, &p, r);
    else
        api_reply_doc_commit(req, tx, &q_policy_doc, id, 201, "scaling policy", NULL, NULL);
out:
    free(reqs);
    json_decref(p.requirements);
}

void api_scaling_policies_update(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "scaling policy");
    if (!id)
        return;
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, update_fields, ELEMENTSOF(update_fields), &body) < 0)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin_own(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "updating the scaling policy");
        return;
    }
    PGresult *cur = NULL;
    const char *pid[] = {id};
    r = store_tx_exec(tx, &q_policy_current, pid, &cur);
    if (r <= 0) {
        PQclear(cur);
        if (r == 0) {
            store_tx_rollback(tx);
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such scaling policy", NULL);
        } else {
            policy_write_failed(req, tx, NULL, r);
        }
        return;
    }
    struct policy p;
    policy_from_row(&p, cur);
    PQclear(cur);
    char *reqs = NULL;
    if (policy_apply(req, body, &p) < 0) {
        store_tx_rollback(tx);
        goto out;
    }
    reqs = p.requirements ? json_dumps(p.requirements, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    struct policy_text t;
    const char *params[17];
    r = policy_queue(tx, &p);
    policy_params(id, &p, reqs, &t, params);
    if (r >= 0)
        r = store_tx_exec(tx, &q_policy_update, params, NULL);
    if (r >= 0)
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), "scaling_policy.update",
                      "scaling_policy", id, body);
    if (r < 0)
        policy_write_failed(req, tx, &p, r);
    else
        api_reply_doc_commit(req, tx, &q_policy_doc, id, 200, "scaling policy", NULL, NULL);
out:
    free(reqs);
    json_decref(p.requirements);
}

void api_scaling_policies_get(struct http_req *req)
{
    api_get_doc(req, &q_policy_doc, app_own_tenant(http_req_principal(req)), "scaling policy");
}

void api_scaling_policies_list(struct http_req *req)
{
    api_list_page(req, &q_policy_list, app_own_tenant(http_req_principal(req)),
                  "listing scaling policies");
}

void api_scaling_policies_delete(struct http_req *req)
{
    api_delete_by_id(req, &q_policy_delete, "scaling policy", "scaling_policy");
}

void api_scaling_policies_history(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "scaling policy");
    if (!id)
        return;
    const char *tenant = app_own_tenant(http_req_principal(req));
    const char *p[] = {id};
    struct app *app = http_req_app(req);
    int r = store_exec_once(app->store, tenant, &q_policy_exists, p, NULL);
    if (r < 0) {
        http_reply_error(req, r, "reading the scaling policy");
        return;
    }
    if (r == 0) {
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such scaling policy", NULL);
        return;
    }
    api_list_page_with(req, &q_history_list, tenant, "listing scaling decisions", id);
}
