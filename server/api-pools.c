/* api-pools.c: shared agent pools, for platform operators (sql/0013_pools.sql).
 *
 * A pool is a set of agents of the platform (not of any tenant) that serve every tenant the
 * pool admits: by tier (tiers) or by name (tenants, an allow-list of tenant ids). Its agents
 * enrol with tokens made here (POST /pools/{id}/enrollment-tokens, see api-agents.c). A pool
 * with agents cannot be deleted: the operator removes them first. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

/* An allow-list longer than this is a tier. */
#define POOL_MAX_TENANTS 1000

static const struct store_stmt q_pool_doc =
    STORE_STMT("pool_doc", "SELECT doc FROM pool_view WHERE id = $1", 1);

/* The pool with its agents, how busy each is, and their labels. */
static const struct store_stmt q_pool_detail = STORE_STMT(
    "pool_detail",
    "SELECT v.doc::jsonb || jsonb_build_object('agents', coalesce((SELECT jsonb_agg("
    "  jsonb_build_object('id', a.id, 'name', a.name, 'hostname', a.hostname, 'status', a.status,"
    "   'connected', a.gateway_node IS NOT NULL, 'slots', a.slots,"
    "   'slots_in_use', (SELECT count(*) FROM jobs j WHERE j.agent_id = a.id"
    "                     AND j.status IN ('assigned', 'running')),"
    "   'last_heartbeat_at', a.last_heartbeat_at, 'labels', a.labels) ORDER BY a.name)"
    "  FROM agents a WHERE a.pool_id = v.id), '[]'))"
    " FROM pool_view v WHERE v.id = $1",
    1);

static const struct store_stmt q_pool_list = STORE_STMT(
    "pool_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM pool_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_pool_insert =
    STORE_STMT("pool_insert",
               "INSERT INTO pools (id, name, tiers, tenants) VALUES ($1, $2,"
               " coalesce($3::text[], '{}'), coalesce($4::uuid[], '{}'))",
               4);

static const struct store_stmt q_pool_update =
    STORE_STMT("pool_update",
               "UPDATE pools SET name = coalesce($2, name), tiers = coalesce($3::text[], tiers),"
               " tenants = coalesce($4::uuid[], tenants), updated_at = now()"
               " WHERE id = $1 RETURNING id",
               4);

/* The first entry of the allow-list (1-based) that is not a customer tenant, if any. */
static const struct store_stmt q_pool_unknown_tenant = STORE_STMT(
    "pool_unknown_tenant",
    "SELECT x.i FROM unnest($1::uuid[]) WITH ORDINALITY AS x(u, i)"
    " WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = x.u AND t.id <> platform_tenant())"
    " ORDER BY x.i LIMIT 1",
    1);

static const struct store_stmt q_pool_lock =
    STORE_STMT("pool_lock",
               "SELECT (SELECT count(*) FROM agents a WHERE a.pool_id = p.id) FROM pools p"
               " WHERE p.id = $1 FOR UPDATE",
               1);

static const struct store_stmt q_pool_delete =
    STORE_STMT("pool_delete", "DELETE FROM pools WHERE id = $1 RETURNING name", 1);

/* What a create or update body asks for, as statement parameters. */
struct pool_input {
    const char *name;
    char *tiers;   /* "{free,standard}" (malloc'd) or NULL: not given */
    char *tenants; /* "{uuid,...}" (malloc'd) or NULL: not given */
};

static void pool_input_free(struct pool_input *in)
{
    free(in->tiers);
    free(in->tenants);
}

/* The PostgreSQL array literal ("{a,b}", malloc'd in *ret) of the JSON array list, whose
 * elements must all be strings that valid() accepts. Returns 0, -EINVAL with *bad the index
 * of the first element refused, or -ENOMEM. */
static int array_literal(const json_t *list, bool (*valid)(const char *), char **ret, size_t *bad)
{
    struct buf b = BUF_INIT;
    int r = buf_append_str(&b, "{");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *t = json_string_value(v);
        if (!t || !valid(t)) {
            *bad = i;
            r = -EINVAL;
            break;
        }
        if (r >= 0)
            r = buf_printf(&b, "%s%s", i ? "," : "", t);
    }
    if (r >= 0)
        r = buf_append_str(&b, "}");
    if (r >= 0 && !(*ret = buf_steal(&b)))
        r = -ENOMEM;
    buf_free(&b);
    return r < 0 ? r : 0;
}

/* Check name, tiers and tenants and build the arrays' literals. Every element was checked
 * against a closed set or as a canonical UUID, so a literal cannot carry anything else.
 * Replies 422 with the offending element's field and returns < 0 when bad. */
static int pool_input(struct http_req *req, const json_t *body, struct pool_input *in)
{
    memset(in, 0, sizeof(*in));
    in->name = api_json_str(body, "name");
    if (in->name && !api_slug_ok(in->name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be 1 to 63 characters of a-z, 0-9 and -, not starting with -",
                           "name");
        return -EINVAL;
    }
    char field[64];
    size_t bad = 0;
    const json_t *list = json_object_get(body, "tiers");
    int r = list ? array_literal(list, api_tier_ok, &in->tiers, &bad) : 0;
    if (r == -EINVAL) {
        snprintf(field, sizeof(field), "tiers[%zu]", bad);
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be free, standard, professional or enterprise", field);
        return r;
    }
    list = json_object_get(body, "tenants");
    if (r >= 0 && list)
        r = array_literal(list, id_is_valid, &in->tenants, &bad);
    if (r == -EINVAL) {
        snprintf(field, sizeof(field), "tenants[%zu]", bad);
        http_reply_problem(req, PROBLEM_VALIDATION, "must be a tenant id (UUID)", field);
        return r;
    }
    if (r < 0)
        http_reply_error(req, r, "reading the pool");
    return r;
}

/* In tx: every tenant of the allow-list exists. Returns 0, 1 after replying 422 (the
 * field names the first unknown one), or a store error. */
static int pool_check_tenants(struct http_req *req, struct store_tx *tx, const char *tenants)
{
    if (!tenants)
        return 0;
    PGresult *res = NULL;
    const char *p[] = {tenants};
    int r = store_tx_exec(tx, &q_pool_unknown_tenant, p, &res);
    if (r <= 0) {
        PQclear(res);
        return r;
    }
    char field[64];
    snprintf(field, sizeof(field), "tenants[%lld]", strtoll(PQgetvalue(res, 0, 0), NULL, 10) - 1);
    PQclear(res);
    http_reply_problem(req, PROBLEM_VALIDATION, "no such tenant", field);
    return 1;
}

static const struct jsonv_field create_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 63},
    {"tiers", JSONV_ARRAY, 0, 0, API_TIERS_N},
    {"tenants", JSONV_ARRAY, 0, 0, POOL_MAX_TENANTS},
};

static const struct jsonv_field update_fields[] = {
    {"name", JSONV_STRING, 0, 1, 63},
    {"tiers", JSONV_ARRAY, 0, 0, API_TIERS_N},
    {"tenants", JSONV_ARRAY, 0, 0, POOL_MAX_TENANTS},
};

/* Create (id NULL) or update the pool id from the request's body. */
static void pool_write(struct http_req *req, const char *id)
{
    bool create = !id;
    json_t *body = NULL;
    if (create ? http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0
               : http_req_json(req, update_fields, ELEMENTSOF(update_fields), &body) < 0)
        return;
    struct pool_input in;
    char new_id[ID_STR_LEN];
    struct store_tx *tx = NULL;
    if (pool_input(req, body, &in) < 0)
        goto done;
    if (create) {
        id_uuid7_str(new_id);
        id = new_id;
    }
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r >= 0)
        r = pool_check_tenants(req, tx, in.tenants);
    if (r == 1) {
        store_tx_rollback(TAKE_PTR(tx));
        goto done;
    }
    const char *p[] = {id, in.name, in.tiers, in.tenants};
    if (r >= 0)
        r = store_tx_exec(tx, create ? &q_pool_insert : &q_pool_update, p, NULL);
    if (r == 0) {
        store_tx_rollback(TAKE_PTR(tx));
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such pool", NULL);
        goto done;
    }
    if (r > 0)
        r = app_audit(tx, req, NULL, create ? "pool.create" : "pool.update", "pool", id, body);
    if (r < 0) {
        store_tx_rollback(TAKE_PTR(tx));
        if (r == -EEXIST)
            http_reply_problem(req, PROBLEM_CONFLICT, "a pool with this name exists", "name");
        else
            http_reply_error(req, r, create ? "creating the pool" : "updating the pool");
        goto done;
    }
    api_reply_doc_commit(req, TAKE_PTR(tx), &q_pool_doc, id, create ? 201 : 200, "pool", NULL,
                         NULL);
done:
    pool_input_free(&in);
    json_decref(body);
}

void api_pools_create(struct http_req *req)
{
    pool_write(req, NULL);
}

void api_pools_update(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "pool");
    if (id)
        pool_write(req, id);
}

void api_pools_list(struct http_req *req)
{
    api_list_page(req, &q_pool_list, NULL, "listing pools");
}

void api_pools_get(struct http_req *req)
{
    api_get_doc(req, &q_pool_detail, NULL, "pool");
}

void api_pools_delete(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "pool");
    if (!id)
        return;
    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    const char *p[] = {id};
    /* The pool row locked: an agent enrolling meanwhile waits, then fails on the foreign
     * key (answered 409 below) instead of joining a pool being deleted. */
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r >= 0)
        r = store_tx_exec(tx, &q_pool_lock, p, &res);
    if (r == 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such pool", NULL);
        return;
    }
    long long agents = r > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    if (agents > 0) {
        store_tx_rollback(tx);
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "%lld agent(s) are in this pool; unregister or delete them first", agents);
        http_reply_problem_ext(
            req, PROBLEM_CONFLICT, detail, NULL,
            json_pack("{s:s, s:I}", "reason", "pool-has-agents", "agents", (json_int_t)agents));
        return;
    }
    if (r > 0)
        r = store_tx_exec(tx, &q_pool_delete, p, NULL);
    if (r >= 0)
        r = app_audit(tx, req, NULL, "pool.delete", "pool", id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        if (r == -ENOENT)
            http_reply_problem(req, PROBLEM_CONFLICT, "an agent joined this pool meanwhile", NULL);
        else
            http_reply_error(req, r, "deleting the pool");
        return;
    }
    if (api_commit(req, tx, "deleting the pool") == 0)
        http_reply_json(req, 204, NULL);
}
