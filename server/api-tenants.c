/* api-tenants.c: tenants, for platform operators (create, list, update, suspend, delete,
 * quota and fairness weight overrides) and for a tenant itself (its own record, quotas and
 * live usage). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

/* The quota names of the API, and their columns. */
static const struct {
    const char *name;
    const char *column;
} quotas[] = {
    {"agents", "max_agents"},
    {"concurrent_jobs", "max_concurrent_jobs"},
    {"schedules", "max_schedules"},
    {"queues", "max_queues"},
    {"storage_bytes", "max_storage_bytes"},
    {"api_calls_per_day", "max_api_calls_day"},
    {"rate_per_second", "rate_per_sec"},
    {"rate_burst", "rate_burst"},
    {"job_log_bytes", "max_job_log_bytes"},
};

/* The platform tenant, which holds the shared pools' agents (sql/0013_pools.sql), is not a
 * customer: the operator API neither lists nor shows it (and cannot change it). */
static const struct store_stmt q_tenant_doc = STORE_STMT(
    "tenant_doc", "SELECT doc FROM tenant_view WHERE id = $1 AND id <> platform_tenant()", 1);

static const struct store_stmt q_tenant_self =
    STORE_STMT("tenant_self", "SELECT doc FROM tenant_view WHERE id = app_tenant()", 0);

static const struct store_stmt q_tenant_list = STORE_STMT(
    "tenant_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM tenant_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        AND id <> platform_tenant() ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_tenant_insert =
    STORE_STMT("tenant_insert",
               "INSERT INTO tenants (id, slug, display_name, tier, max_agents, max_concurrent_jobs,"
               " max_schedules, max_queues, max_storage_bytes, max_api_calls_day, rate_per_sec,"
               " rate_burst, max_job_log_bytes, weight) VALUES ($1, $2, $3, $4, $5::int, $6::int,"
               " $7::int, $8::int, $9::bigint, $10::int, $11::int, $12::int, $13::bigint,"
               " $14::int)",
               14);

/* For each quota: $n::bool "was given", $n+1 the value (NULL clears the override). */
static const struct store_stmt q_tenant_update = STORE_STMT(
    "tenant_update",
    "UPDATE tenants SET display_name = coalesce($2, display_name), tier = coalesce($3, tier),"
    " status = coalesce($4, status),"
    " max_agents = CASE WHEN $5::bool THEN $6::int ELSE max_agents END,"
    " max_concurrent_jobs = CASE WHEN $7::bool THEN $8::int ELSE max_concurrent_jobs END,"
    " max_schedules = CASE WHEN $9::bool THEN $10::int ELSE max_schedules END,"
    " max_queues = CASE WHEN $11::bool THEN $12::int ELSE max_queues END,"
    " max_storage_bytes = CASE WHEN $13::bool THEN $14::bigint ELSE max_storage_bytes END,"
    " max_api_calls_day = CASE WHEN $15::bool THEN $16::int ELSE max_api_calls_day END,"
    " rate_per_sec = CASE WHEN $17::bool THEN $18::int ELSE rate_per_sec END,"
    " rate_burst = CASE WHEN $19::bool THEN $20::int ELSE rate_burst END,"
    " max_job_log_bytes = CASE WHEN $21::bool THEN $22::bigint ELSE max_job_log_bytes END,"
    " weight = CASE WHEN $23::bool THEN $24::int ELSE weight END,"
    " updated_at = now() WHERE id = $1 RETURNING id",
    24);

static const struct store_stmt q_tenant_delete =
    STORE_STMT("tenant_delete", "DELETE FROM tenants WHERE id = $1 RETURNING slug", 1);

/* Check the "quotas" object: known names, each a non-negative integer or null. Fills
 * text[i] (empty = null) and given[i]. Replies 422 and returns < 0 when bad. */
static int parse_quotas(struct http_req *req, const json_t *q, char text[][24], bool *given)
{
    for (size_t i = 0; i < ELEMENTSOF(quotas); i++) {
        given[i] = false;
        text[i][0] = '\0';
    }
    if (!q || json_is_null(q))
        return 0;
    if (!json_is_object(q)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be an object", "quotas");
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)q, k, v)
    {
        size_t i = 0;
        while (i < ELEMENTSOF(quotas) && strcmp(quotas[i].name, k) != 0)
            i++;
        char field[96];
        snprintf(field, sizeof(field), "quotas.%.60s", k);
        if (i == ELEMENTSOF(quotas)) {
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "unknown quota (agents, concurrent_jobs, schedules, queues, "
                               "storage_bytes, api_calls_per_day, rate_per_second, rate_burst, "
                               "job_log_bytes)",
                               field);
            return -EINVAL;
        }
        bool bytes = strcmp(k, "storage_bytes") == 0 || strcmp(k, "job_log_bytes") == 0;
        json_int_t max = bytes ? (json_int_t)1 << 50 : 100000000;
        json_int_t min = strncmp(k, "rate_", 5) == 0 ? 1 : 0;
        if (!json_is_null(v) &&
            (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)) {
            char detail[96];
            snprintf(detail, sizeof(detail), "must be null or an integer between %lld and %lld",
                     (long long)min, (long long)max);
            http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
            return -EINVAL;
        }
        given[i] = true;
        if (!json_is_null(v))
            snprintf(text[i], 24, "%lld", (long long)json_integer_value(v));
    }
    return 0;
}

/* The fairness weight override (top-level `weight`: 1..1000, null = the tier's): fills
 * text ("" = null) and *given. */
static void parse_weight(const json_t *body, char text[24], bool *given)
{
    json_t *w = json_object_get(body, "weight");
    *given = w != NULL;
    text[0] = '\0';
    if (json_is_integer(w))
        snprintf(text, 24, "%lld", (long long)json_integer_value(w));
}

static void reply_tenant(struct http_req *req, struct store_tx *tx, const char *id, int status)
{
    api_reply_doc_commit(req, tx, &q_tenant_doc, id, status, "tenant", NULL, NULL);
}

void api_tenants_create(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"slug", JSONV_STRING, JSONV_REQUIRED, 1, 63},
        {"display_name", JSONV_STRING, JSONV_REQUIRED, 1, 200},
        {"tier", JSONV_STRING, JSONV_REQUIRED, 1, 16},
        {"quotas", JSONV_OBJECT, JSONV_NULLABLE, 0, ELEMENTSOF(quotas)},
        {"weight", JSONV_INT, JSONV_NULLABLE, 1, 1000},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    const char *slug = api_json_str(body, "slug");
    char qt[ELEMENTSOF(quotas)][24];
    bool given[ELEMENTSOF(quotas)];
    if (!api_slug_ok(slug)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be 1 to 63 characters of a-z, 0-9 and -, not starting with -",
                           "slug");
    } else if (!api_tier_ok(api_json_str(body, "tier"))) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be free, standard, professional or enterprise", "tier");
    } else if (parse_quotas(req, json_object_get(body, "quotas"), qt, given) == 0) {
        char id[ID_STR_LEN];
        id_uuid7_str(id);
        const char *p[5 + ELEMENTSOF(quotas)] = {id, slug, api_json_str(body, "display_name"),
                                                 api_json_str(body, "tier")};
        for (size_t i = 0; i < ELEMENTSOF(quotas); i++)
            p[4 + i] = qt[i][0] ? qt[i] : NULL;
        char weight[24];
        bool wgiven;
        parse_weight(body, weight, &wgiven);
        p[4 + ELEMENTSOF(quotas)] = weight[0] ? weight : NULL;
        struct store_tx *tx = NULL;
        int r = store_tx_begin_system(((struct app *)http_req_app(req))->store, &tx);
        if (r >= 0)
            r = store_tx_exec(tx, &q_tenant_insert, p, NULL);
        if (r >= 0)
            r = app_audit(tx, req, NULL, "tenant.create", "tenant", id, body);
        if (r < 0) {
            store_tx_rollback(tx);
            if (r == -EEXIST)
                http_reply_problem(req, PROBLEM_CONFLICT, "a tenant with this slug exists", "slug");
            else
                http_reply_error(req, r, "creating the tenant");
        } else {
            reply_tenant(req, tx, id, 201);
        }
    }
    json_decref(body);
}

void api_tenants_list(struct http_req *req)
{
    api_list_page(req, &q_tenant_list, NULL, "listing tenants");
}

void api_tenants_get(struct http_req *req)
{
    api_get_doc(req, &q_tenant_doc, NULL, "tenant");
}

void api_tenants_update(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"display_name", JSONV_STRING, 0, 1, 200},
        {"tier", JSONV_STRING, 0, 1, 16},
        {"status", JSONV_STRING, 0, 1, 16},
        {"quotas", JSONV_OBJECT, 0, 0, ELEMENTSOF(quotas)},
        {"weight", JSONV_INT, JSONV_NULLABLE, 1, 1000},
    };
    const char *id = api_path_id(req, "id", "tenant");
    if (!id)
        return;
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    const char *tier = api_json_str(body, "tier");
    const char *status = api_json_str(body, "status");
    char qt[ELEMENTSOF(quotas)][24];
    bool given[ELEMENTSOF(quotas)];
    if (tier && !api_tier_ok(tier)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be free, standard, professional or enterprise", "tier");
    } else if (status && strcmp(status, "active") != 0 && strcmp(status, "suspended") != 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be active or suspended", "status");
    } else if (parse_quotas(req, json_object_get(body, "quotas"), qt, given) == 0) {
        const char *p[6 + 2 * ELEMENTSOF(quotas)] = {id, api_json_str(body, "display_name"), tier,
                                                     status};
        for (size_t i = 0; i < ELEMENTSOF(quotas); i++) {
            p[4 + 2 * i] = given[i] ? "true" : "false";
            p[5 + 2 * i] = qt[i][0] ? qt[i] : NULL;
        }
        char weight[24];
        bool wgiven;
        parse_weight(body, weight, &wgiven);
        p[4 + 2 * ELEMENTSOF(quotas)] = wgiven ? "true" : "false";
        p[5 + 2 * ELEMENTSOF(quotas)] = weight[0] ? weight : NULL;
        struct store_tx *tx = NULL;
        int r = store_tx_begin_system(((struct app *)http_req_app(req))->store, &tx);
        if (r >= 0)
            r = store_tx_exec(tx, &q_tenant_update, p, NULL);
        if (r == 0) {
            store_tx_rollback(tx);
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such tenant", NULL);
        } else {
            if (r > 0)
                r = app_audit(tx, req, id, "tenant.update", "tenant", id, body);
            if (r < 0) {
                store_tx_rollback(tx);
                http_reply_error(req, r, "updating the tenant");
            } else {
                reply_tenant(req, tx, id, 200);
                /* Suspended, or its quotas or rate changed: every node reads it afresh. */
                app_auth_invalidate(http_req_app(req), NULL, id, NULL);
            }
        }
    }
    json_decref(body);
}

void api_tenants_delete(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "tenant");
    if (!id)
        return;
    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    int r = store_tx_begin_system(((struct app *)http_req_app(req))->store, &tx);
    const char *p[] = {id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_tenant_delete, p, &res);
    if (r == 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such tenant", NULL);
        return;
    }
    if (r > 0) {
        /* The tenant's own audit rows go with it; the deletion is a platform record. */
        json_t *d = json_pack("{s:s}", "slug", PQgetvalue(res, 0, 0));
        r = app_audit(tx, req, NULL, "tenant.delete", "tenant", id, d);
        json_decref(d);
    }
    PQclear(res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "deleting the tenant");
        return;
    }
    if (api_commit(req, tx, "deleting the tenant") < 0)
        return;
    app_auth_invalidate(http_req_app(req), NULL, id, NULL);
    http_reply_json(req, 204, NULL);
}

void api_tenant_self(struct http_req *req)
{
    PGresult *res = NULL;
    int r = store_exec_once(((struct app *)http_req_app(req))->store,
                            http_req_principal(req)->tenant_id, &q_tenant_self, NULL, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the tenant");
        return;
    }
    api_reply_pg_json_or_404(req, 200, res, "tenant");
}
