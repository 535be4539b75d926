/* api-deployments.c: deploying a package version to the tenant's agents of a label set
 * (POST/GET/DELETE /packages/deployments[/{id}[/targets]]). The reference is resolved once,
 * at creation, to one exact version; the targets are the agents (not revoked, not
 * disabled) whose labels held then. The agents learn of their targets in their heartbeat's
 * answer and report there (api-agentproto.c, deployment_agent_step() in
 * sql/functions/46_deployments.sql). docs/packages.md, "Deploying a version to agents". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"
#include "server/pkgref.h"

#define DEPLOY_PARALLEL_MAX     1000
#define DEPLOY_PARALLEL_DEFAULT 20
#define DEPLOY_SPREAD_MAX_MS    600000
#define DEPLOY_SPREAD_DEFAULT   2000

#define DEPLOYMENT_DOC                                                                             \
    "json_build_object('id', d.id, 'package', d.package_ref, 'package_id', d.package_id,"          \
    " 'name', p.name, 'version', p.version, 'sha256', encode(p.sha256, 'hex'),"                    \
    " 'size_bytes', p.size_bytes, 'labels', d.labels, 'max_parallel', d.max_parallel,"             \
    " 'spread_ms', d.spread_ms, 'created_by', d.created_by, 'created_at', d.created_at,"           \
    " 'cancelled_at', d.cancelled_at,"                                                             \
    " 'status', CASE WHEN d.cancelled_at IS NOT NULL THEN 'cancelled'"                             \
    "   WHEN c.pending + c.fetching = 0 THEN 'done' ELSE 'running' END,"                           \
    " 'counts', json_build_object('total', c.total, 'pending', c.pending, 'fetching', c.fetching," \
    "   'cached', c.cached, 'failed', c.failed, 'cancelled', c.cancelled),"                        \
    " 'started_at', c.started_at,"                                                                 \
    " 'finished_at', CASE WHEN c.pending + c.fetching = 0 THEN c.finished_at END)"

#define DEPLOYMENT_FROM                                                                            \
    " FROM package_deployments d JOIN packages p ON p.id = d.package_id,"                          \
    " LATERAL (SELECT count(*) AS total, count(*) FILTER (WHERE state = 'pending') AS pending,"    \
    "   count(*) FILTER (WHERE state = 'fetching') AS fetching,"                                   \
    "   count(*) FILTER (WHERE state = 'cached') AS cached,"                                       \
    "   count(*) FILTER (WHERE state = 'failed') AS failed,"                                       \
    "   count(*) FILTER (WHERE state = 'cancelled') AS cancelled,"                                 \
    "   min(started_at) AS started_at, max(finished_at) AS finished_at"                            \
    "   FROM package_deployment_targets t WHERE t.deployment_id = d.id) c"

static const struct store_stmt q_dep_doc =
    STORE_STMT("dep_doc", "SELECT " DEPLOYMENT_DOC DEPLOYMENT_FROM " WHERE d.id = $1", 1);

static const struct store_stmt q_dep_list =
    STORE_STMT("dep_list",
               "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id DESC), '[]'),"
               " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id))[1] END)"
               " FROM (SELECT d.id, " DEPLOYMENT_DOC " AS doc" DEPLOYMENT_FROM
               "        WHERE ($1::uuid IS NULL OR d.id < $1::uuid) ORDER BY d.id DESC LIMIT $2) s",
               2);

static const struct store_stmt q_dep_targets = STORE_STMT(
    "dep_targets",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT t.agent_id AS id, json_build_object('agent_id', t.agent_id, 'agent_name',"
    "         a.name, 'state', t.state, 'reason', t.reason, 'attempts', t.attempts,"
    "         'started_at', t.started_at, 'finished_at', t.finished_at, 'updated_at',"
    "         t.updated_at) AS doc"
    "        FROM package_deployment_targets t JOIN agents a ON a.id = t.agent_id"
    "       WHERE t.deployment_id = $3::uuid AND ($1::uuid IS NULL OR t.agent_id > $1::uuid)"
    "       ORDER BY t.agent_id LIMIT $2) s",
    3);

static const struct store_stmt q_dep_exists =
    STORE_STMT("dep_exists", "SELECT 1 FROM package_deployments WHERE id = $1", 1);

static const struct store_stmt q_dep_insert =
    STORE_STMT("dep_insert",
               "INSERT INTO package_deployments (id, tenant_id, package_id, package_ref, labels,"
               " max_parallel, spread_ms, created_by)"
               " VALUES ($1, app_tenant(), $2, $3, $4::jsonb, $5::int, $6::int, $7)",
               7);

/* The matching agents as they are now: an agent enrolled later is not a target. */
static const struct store_stmt q_dep_targets_insert =
    STORE_STMT("dep_targets_insert",
               "INSERT INTO package_deployment_targets (deployment_id, tenant_id, agent_id)"
               " SELECT $1, app_tenant(), a.id FROM agents a"
               "  WHERE a.labels @> $2::jsonb AND a.credential_revoked_at IS NULL"
               "    AND a.status <> 'disabled'",
               2);

static const struct store_stmt q_dep_cancel =
    STORE_STMT("dep_cancel",
               "WITH d AS (UPDATE package_deployments SET cancelled_at = coalesce(cancelled_at,"
               "             now()) WHERE id = $1 RETURNING id)"
               " UPDATE package_deployment_targets t SET state = 'cancelled', finished_at = now(),"
               "        updated_at = now(), reason = 'the deployment was cancelled'"
               "   FROM d WHERE t.deployment_id = d.id AND t.state = 'pending' RETURNING 1",
               1);

static const struct jsonv_field create_fields[] = {
    {"package", JSONV_STRING, JSONV_REQUIRED, 1, PKGREF_MAX},
    {"labels", JSONV_OBJECT, JSONV_REQUIRED, 1, API_LABELS_MAX},
    {"max_parallel", JSONV_INT, 0, 1, DEPLOY_PARALLEL_MAX},
    {"spread_ms", JSONV_INT, 0, 0, DEPLOY_SPREAD_MAX_MS},
};

static void reply_doc(struct http_req *req, struct store_tx *tx, const char *id, int status,
                      const char *what)
{
    api_reply_doc_commit(req, tx, &q_dep_doc, id, status, what, NULL, NULL);
}

void api_deployments_create(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0)
        return;
    json_t *labels = json_object_get(body, "labels");
    if (api_check_labels(req, labels, "labels") < 0)
        return;
    const char *ref = api_json_str(body, "package");
    json_t *mp = json_object_get(body, "max_parallel"), *sp = json_object_get(body, "spread_ms");
    char par[16], spread[16];
    snprintf(par, sizeof(par), "%lld",
             mp ? (long long)json_integer_value(mp) : (long long)DEPLOY_PARALLEL_DEFAULT);
    snprintf(spread, sizeof(spread), "%lld",
             sp ? (long long)json_integer_value(sp) : (long long)DEPLOY_SPREAD_DEFAULT);
    _cleanup_free_ char *labels_text = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    char id[ID_STR_LEN];
    if (!labels_text || id_uuid7_str(id) < 0) {
        http_reply_error(req, -ENOMEM, "creating the deployment");
        return;
    }
    struct app *app = http_req_app(req);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(app, req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "creating the deployment");
        return;
    }
    char pkg[ID_STR_LEN], detail[256];
    r = api_package_ref_resolve(tx, ref, pkg, detail, sizeof(detail));
    if (r == -EINVAL) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "package");
        return;
    }
    const char *who = http_req_principal(req)->subject;
    const char *pi[] = {id, pkg, ref, labels_text, par, spread, who};
    if (r >= 0)
        r = store_tx_exec(tx, &q_dep_insert, pi, NULL);
    const char *pt[] = {id, labels_text};
    if (r >= 0)
        r = store_tx_exec(tx, &q_dep_targets_insert, pt, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "no agent of the tenant (enabled, not revoked) has all these labels",
                           "labels");
        return;
    }
    if (r > 0) {
        json_t *d = json_pack("{s:s, s:s, s:O, s:i}", "package", ref, "package_id", pkg, "labels",
                              labels, "targets", r);
        r = app_audit(tx, req, NULL, "package.deployment.create", "package_deployment", id, d);
        json_decref(d);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "creating the deployment");
        return;
    }
    reply_doc(req, tx, id, 201, "creating the deployment");
}

void api_deployments_list(struct http_req *req)
{
    api_list_page(req, &q_dep_list, http_req_principal(req)->tenant_id, "listing deployments");
}

void api_deployments_get(struct http_req *req)
{
    api_get_doc(req, &q_dep_doc, http_req_principal(req)->tenant_id, "deployment");
}

void api_deployments_targets(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "deployment");
    if (!id)
        return;
    const char *tenant = http_req_principal(req)->tenant_id;
    const char *p[] = {id};
    int r =
        store_exec_once(((struct app *)http_req_app(req))->store, tenant, &q_dep_exists, p, NULL);
    if (r < 0) {
        http_reply_error(req, r, "listing the deployment's targets");
        return;
    }
    if (r == 0) {
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such deployment", NULL);
        return;
    }
    api_list_page_with(req, &q_dep_targets, tenant, "listing the deployment's targets", id);
}

void api_deployments_cancel(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "deployment");
    if (!id)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "cancelling the deployment");
        return;
    }
    const char *p[] = {id};
    r = store_tx_exec(tx, &q_dep_exists, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such deployment", NULL);
        return;
    }
    if (r > 0)
        r = store_tx_exec(tx, &q_dep_cancel, p, NULL);
    if (r >= 0) {
        json_t *d = json_pack("{s:i}", "cancelled_targets", r);
        r = app_audit(tx, req, NULL, "package.deployment.cancel", "package_deployment", id, d);
        json_decref(d);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "cancelling the deployment");
        return;
    }
    reply_doc(req, tx, id, 200, "cancelling the deployment");
}
