/* api-agents.c: enrolment tokens, agent registration, and the tenant's view and control of
 * its agents.
 *
 * An agent enrols once with a token a tenant admin made (`orch-agent register`): the
 * token is checked and its use counted, the tenant's agent quota is taken, and the agent
 * gets its own credential (orch_ag_..., shown once, stored hashed) that it presents on
 * every later request.
 *
 * A platform operator makes enrolment tokens for a shared pool (POST /pools/{id}/
 * enrollment-tokens): the agents they enrol are the platform tenant's, in that pool
 * (sql/0013_pools.sql), and take no tenant's agent quota. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/auth-keys.h"

/* How long an agent credential lives; agents rotate it well before (POST
 * /api/v1/agent/rotate-credential). */
#define AGENT_CREDENTIAL_DAYS "90"

/* --- enrolment tokens ---------------------------------------------------------------------- */

static const struct store_stmt q_et_insert = STORE_STMT(
    "et_insert",
    "INSERT INTO enrollment_tokens (id, tenant_id, name, prefix, token_hash, labels, max_uses,"
    " expires_at, created_by, pool_id) VALUES ($1,"
    " CASE WHEN $9::uuid IS NULL THEN app_tenant() ELSE platform_tenant() END, $2, $3,"
    " decode($4, 'hex'), coalesce($5::jsonb, '{}'), coalesce($6::int, 1),"
    " now() + make_interval(secs => coalesce($7::int, 86400)), $8, $9)",
    9);

static const struct store_stmt q_et_doc =
    STORE_STMT("et_doc", "SELECT doc FROM enrollment_token_view WHERE id = $1", 1);

static const struct store_stmt q_et_list = STORE_STMT(
    "et_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM enrollment_token_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_et_revoke = STORE_STMT(
    "et_revoke",
    "WITH u AS (UPDATE enrollment_tokens SET revoked_at = now() WHERE id = $1"
    "           AND revoked_at IS NULL RETURNING id)"
    " SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM enrollment_tokens WHERE id = $1)",
    1);

/* Make an enrolment token: the tenant's (pool NULL), or, for an operator, a pool's. */
static void enroll_token_create(struct http_req *req, const char *pool)
{
    static const struct jsonv_field fields[] = {
        {"name", JSONV_STRING, JSONV_REQUIRED, 1, 100},
        {"max_uses", JSONV_INT, 0, 1, 100000},
        {"expires_in", JSONV_INT, 0, 60, 30 * 86400},
        {"labels", JSONV_OBJECT, 0, 0, API_LABELS_MAX},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    json_t *labels = json_object_get(body, "labels");
    if (api_check_labels(req, labels, "labels") < 0) {
        json_decref(body);
        return;
    }
    struct authkey k;
    char id[ID_STR_LEN], uses[16] = "", ttl[16] = "";
    id_uuid7_str(id);
    if (authkey_new(AUTHKEY_ENROLL, &k) < 0) {
        json_decref(body);
        http_reply_error(req, -EIO, "generating the token");
        return;
    }
    if (json_object_get(body, "max_uses"))
        snprintf(uses, sizeof(uses), "%lld", json_integer_value(json_object_get(body, "max_uses")));
    if (json_object_get(body, "expires_in"))
        snprintf(ttl, sizeof(ttl), "%lld", json_integer_value(json_object_get(body, "expires_in")));
    char *labels_text = labels ? json_dumps(labels, JSON_COMPACT) : NULL;
    char creator[160];
    snprintf(creator, sizeof(creator), "%s:%s", pool ? "operator" : "api_key",
             http_req_principal(req)->subject);
    const char *p[] = {id,
                       api_json_str(body, "name"),
                       k.prefix,
                       k.hash_hex,
                       labels_text,
                       uses[0] ? uses : NULL,
                       ttl[0] ? ttl : NULL,
                       creator,
                       pool};
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r >= 0)
        r = store_tx_exec(tx, &q_et_insert, p, NULL);
    json_t *detail = json_pack("{s:s, s:s?}", "name", api_json_str(body, "name"), "pool", pool);
    if (r >= 0)
        r = app_audit(tx, req, NULL, "enrollment_token.create", "enrollment_token", id, detail);
    json_decref(detail);
    free(labels_text);
    json_decref(body);
    if (r < 0) {
        store_tx_rollback(tx);
        if (r == -ENOENT && pool)
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such pool", NULL);
        else
            http_reply_error(req, r, "creating the enrolment token");
        return;
    }
    api_reply_doc_commit(req, tx, &q_et_doc, id, 201, "enrolment token", "token", k.key);
}

void api_enroll_tokens_create(struct http_req *req)
{
    enroll_token_create(req, NULL);
}

void api_pool_enroll_tokens_create(struct http_req *req)
{
    const char *pool = api_path_id(req, "id", "pool");
    if (pool)
        enroll_token_create(req, pool);
}

void api_enroll_tokens_list(struct http_req *req)
{
    api_list_page(req, &q_et_list, http_req_principal(req)->tenant_id, "listing enrolment tokens");
}

void api_enroll_tokens_revoke(struct http_req *req)
{
    api_revoke(req, &q_et_revoke, "enrolment token", "enrollment_token");
}

/* --- registration -------------------------------------------------------------------------- */

static const struct store_stmt q_et_find =
    STORE_STMT("et_find", "SELECT id, tenant_id FROM enrollment_tokens WHERE prefix = $1", 1);

static const struct store_stmt q_et_lock = STORE_STMT(
    "et_lock",
    "SELECT e.token_hash, e.revoked_at IS NULL AND t.status = 'active', e.expires_at > now(),"
    "       e.uses < e.max_uses, e.labels, e.pool_id"
    "  FROM enrollment_tokens e JOIN tenants t ON t.id = e.tenant_id"
    " WHERE e.id = $1 FOR UPDATE OF e",
    1);

static const struct store_stmt q_et_use =
    STORE_STMT("et_use", "UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1", 1);

static const struct store_stmt q_quota_agents =
    STORE_STMT("quota_agents", "SELECT quota_acquire('agents')", 0);

/* The enrolment labels win over the host's own: a tenant admin stamps them. */
static const struct store_stmt q_agent_insert = STORE_STMT(
    "agent_insert",
    "INSERT INTO agents (id, tenant_id, name, hostname, os, arch, version, labels, capabilities,"
    " slots, status, credential_prefix, credential_hash, credential_expires_at, enrolled_with,"
    " pool_id) VALUES ($1, app_tenant(), $2, $3, $4, $5, $6,"
    " coalesce($7::jsonb, '{}') || $8::jsonb, coalesce($9::jsonb, '{}'), coalesce($10::int, 1),"
    " 'offline', $11, decode($12, 'hex'), now() + interval '" AGENT_CREDENTIAL_DAYS " days', $13,"
    " $14)",
    14);

static const struct store_stmt q_agent_doc =
    STORE_STMT("agent_doc", "SELECT doc FROM agent_view WHERE id = $1", 1);

/* The registration's answer says which pool the agent serves (null: its tenant's own), so
 * that the agent knows it will run several tenants' jobs (orch-agent: exec.uid_range). */
static const struct store_stmt q_agent_registered =
    STORE_STMT("agent_registered",
               "SELECT v.doc::jsonb || jsonb_build_object('pool_id', a.pool_id)"
               "  FROM agent_view v JOIN agents a ON a.id = v.id WHERE v.id = $1",
               1);

static const struct jsonv_field register_fields[] = {
    {"token", JSONV_STRING, JSONV_REQUIRED, 1, 128},
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 128},
    {"hostname", JSONV_STRING, 0, 0, 255},
    {"os", JSONV_STRING, 0, 0, 32},
    {"arch", JSONV_STRING, 0, 0, 32},
    {"version", JSONV_STRING, 0, 0, 64},
    {"labels", JSONV_OBJECT, 0, 0, API_LABELS_MAX},
    {"capabilities", JSONV_OBJECT, 0, 0, 64},
    {"slots", JSONV_INT, 0, 1, 1024},
};

/* One answer for a token that does not exist or does not match. */
static void bad_token(struct http_req *req, const char *detail)
{
    http_reply_problem(req, PROBLEM_UNAUTHENTICATED, detail, "token");
}

void api_agents_register(struct http_req *req)
{
    json_t *body = NULL;
    if (http_req_json(req, register_fields, ELEMENTSOF(register_fields), &body) < 0)
        return;
    struct app *app = http_req_app(req);
    const char *token = api_json_str(body, "token");
    char prefix[AUTHKEY_PREFIX_LEN + 1], hash[65];
    json_t *labels = json_object_get(body, "labels");
    json_t *caps = json_object_get(body, "capabilities");
    char *labels_text = NULL, *caps_text = NULL, *et_labels = NULL, *pool = NULL;
    struct store_tx *tx = NULL;
    PGresult *res = NULL;

    if (api_check_labels(req, labels, "labels") < 0)
        goto done;
    if (!authkey_parse(AUTHKEY_ENROLL, token, strlen(token), prefix, hash)) {
        bad_token(req, "the enrolment token is not valid");
        goto done;
    }
    /* Which tenant: the one lookup made before a tenant is known, in the system scope. */
    const char *p1[] = {prefix};
    int r = store_exec_once(app->store, NULL, &q_et_find, p1, &res);
    if (r <= 0) {
        if (r < 0)
            http_reply_error(req, r, "looking up the enrolment token");
        else
            bad_token(req, "the enrolment token is not valid");
        goto done;
    }
    char et_id[ID_STR_LEN], tenant[ID_STR_LEN];
    snprintf(et_id, sizeof(et_id), "%s", PQgetvalue(res, 0, 0));
    snprintf(tenant, sizeof(tenant), "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    res = NULL;

    /* Everything else in the tenant's own transaction, the token row locked so that its
     * uses cannot be overspent by agents enrolling at the same moment. */
    r = store_tx_begin_tenant(app->store, tenant, &tx);
    const char *p2[] = {et_id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_et_lock, p2, &res);
    if (r <= 0) {
        store_tx_rollback(TAKE_PTR(tx));
        if (r < 0)
            http_reply_error(req, r, "checking the enrolment token");
        else
            bad_token(req, "the enrolment token is not valid");
        goto done;
    }
    if (!authkey_hash_matches(hash, PQgetvalue(res, 0, 0))) {
        store_tx_rollback(TAKE_PTR(tx));
        bad_token(req, "the enrolment token is not valid");
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0 || strcmp(PQgetvalue(res, 0, 2), "t") != 0 ||
        strcmp(PQgetvalue(res, 0, 3), "t") != 0) {
        const char *why = strcmp(PQgetvalue(res, 0, 1), "t") != 0
                              ? "the enrolment token was revoked, or its tenant is suspended"
                          : strcmp(PQgetvalue(res, 0, 2), "t") != 0
                              ? "the enrolment token has expired"
                              : "the enrolment token has been used up (max_uses)";
        store_tx_rollback(TAKE_PTR(tx));
        bad_token(req, why);
        goto done;
    }
    et_labels = strdup(PQgetvalue(res, 0, 4));
    if (!PQgetisnull(res, 0, 5))
        pool = strdup(PQgetvalue(res, 0, 5));
    bool pooled = !PQgetisnull(res, 0, 5);
    PQclear(res);
    res = NULL;

    struct authkey cred;
    char agent_id[ID_STR_LEN], slots[16] = "";
    id_uuid7_str(agent_id);
    if (!et_labels || (pooled && !pool) || authkey_new(AUTHKEY_AGENT, &cred) < 0) {
        store_tx_rollback(TAKE_PTR(tx));
        http_reply_error(req, -EIO, "generating the agent credential");
        goto done;
    }
    labels_text = labels ? json_dumps(labels, JSON_COMPACT) : NULL;
    caps_text = caps ? json_dumps(caps, JSON_COMPACT) : NULL;
    if (json_object_get(body, "slots"))
        snprintf(slots, sizeof(slots), "%lld", json_integer_value(json_object_get(body, "slots")));
    const char *p3[] = {agent_id,
                        api_json_str(body, "name"),
                        api_json_str(body, "hostname"),
                        api_json_str(body, "os"),
                        api_json_str(body, "arch"),
                        api_json_str(body, "version"),
                        labels_text,
                        et_labels,
                        caps_text,
                        slots[0] ? slots : NULL,
                        cred.prefix,
                        cred.hash_hex,
                        et_id,
                        pool};
    /* A pool agent is the platform's: no tenant's quota pays for it. */
    r = pool ? 0 : store_tx_exec(tx, &q_quota_agents, NULL, NULL);
    if (r >= 0)
        r = store_tx_exec(tx, &q_agent_insert, p3, NULL);
    if (r >= 0)
        r = store_tx_exec(tx, &q_et_use, p2, NULL);
    json_t *detail =
        json_pack("{s:s, s:s}", "name", api_json_str(body, "name"), "enrollment_token", et_id);
    if (r >= 0)
        r = app_audit_as(tx, req, tenant, "agent", agent_id, "agent.register", "agent", agent_id,
                         detail);
    json_decref(detail);
    if (r < 0) {
        if (r == -EDQUOT) {
            app_reply_quota_refused(req, TAKE_PTR(tx), tenant,
                                    "the tenant's agent quota is exhausted; remove an agent or "
                                    "move to a larger tier");
        } else if (r == -EEXIST) {
            store_tx_rollback(TAKE_PTR(tx));
            http_reply_problem(req, PROBLEM_CONFLICT,
                               "an agent of this name is enrolled; unregister it or choose "
                               "another name",
                               "name");
        } else {
            store_tx_rollback(TAKE_PTR(tx));
            http_reply_error(req, r, "registering the agent");
        }
        goto done;
    }
    log_info("op=agent.register tenant=%s agent=%s pool=%s", tenant, agent_id,
             pool ? pool : "none");
    api_reply_doc_commit(req, TAKE_PTR(tx), &q_agent_registered, agent_id, 201, "agent",
                         "credential", cred.key);

done:
    PQclear(res);
    free(labels_text);
    free(caps_text);
    free(et_labels);
    free(pool);
    json_decref(body);
}

/* --- the tenant's agents ------------------------------------------------------------------- */

static const struct store_stmt q_agent_list = STORE_STMT(
    "agent_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM agent_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_agent_status =
    STORE_STMT("agent_status",
               "UPDATE agents SET status = $2, updated_at = now() WHERE id = $1 RETURNING id", 2);

static const struct store_stmt q_agent_revoke =
    STORE_STMT("agent_revoke",
               "UPDATE agents SET credential_revoked_at = coalesce(credential_revoked_at, now()),"
               " prev_credential_prefix = NULL, prev_credential_hash = NULL,"
               " prev_credential_valid_until = NULL, updated_at = now() WHERE id = $1 RETURNING id",
               1);

static const struct store_stmt q_agent_delete =
    STORE_STMT("agent_delete", "DELETE FROM agents WHERE id = $1 RETURNING name", 1);

void api_agents_list(struct http_req *req)
{
    api_list_page(req, &q_agent_list, http_req_principal(req)->tenant_id, "listing agents");
}

void api_agents_get(struct http_req *req)
{
    api_get_doc(req, &q_agent_doc, http_req_principal(req)->tenant_id, "agent");
}

/* Run one UPDATE/DELETE on an agent (by path id or the calling agent), audit it, and reply
 * with the agent (204 when deleted). Every node then forgets what it remembered of the
 * agent's credentials (server/agentcache.h): the next request reads them again. */
static void agent_change(struct http_req *req, const char *id, const struct store_stmt *stmt,
                         const char *arg, const char *action, bool deleted)
{
    struct app *app = http_req_app(req);
    char agent[ID_STR_LEN]; /* id may live in req, which the reply may end */
    snprintf(agent, sizeof(agent), "%s", id);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    const char *p[] = {id, arg};
    if (r >= 0)
        r = store_tx_exec(tx, stmt, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such agent", NULL);
        return;
    }
    if (r > 0)
        r = app_audit(tx, req, NULL, action, "agent", id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, action);
        return;
    }
    if (deleted) {
        if (api_commit(req, tx, action) == 0)
            http_reply_json(req, 204, NULL);
    } else {
        api_reply_doc_commit(req, tx, &q_agent_doc, id, 200, "agent", NULL, NULL);
    }
    app_auth_invalidate(app, NULL, NULL, agent);
}

void api_agents_disable(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "agent");
    if (id)
        agent_change(req, id, &q_agent_status, "disabled", "agent.disable", false);
}

void api_agents_drain(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "agent");
    if (id)
        agent_change(req, id, &q_agent_status, "draining", "agent.drain", false);
}

void api_agents_enable(struct http_req *req)
{
    /* Back in service; it shows online again with its next heartbeat. */
    const char *id = api_path_id(req, "id", "agent");
    if (id)
        agent_change(req, id, &q_agent_status, "offline", "agent.enable", false);
}

void api_agents_revoke(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "agent");
    if (id)
        agent_change(req, id, &q_agent_revoke, NULL, "agent.revoke_credential", false);
}

void api_agents_delete(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "agent");
    if (id)
        agent_change(req, id, &q_agent_delete, NULL, "agent.delete", true);
}

/* --- the agent's own routes ------------------------------------------------------------------ */

/* How long the previous credential keeps working after a rotation. */
#define AGENT_ROTATION_GRACE_MINUTES "15"

/* The current credential (its prefix: $4) becomes the previous one and a new one is made.
 * Only the current credential may rotate: the previous one, still accepted during the grace
 * period for the agent protocol, would otherwise let whoever stole it replace the current
 * one and lock the agent out (0 rows: refused, see api_agent_rotate()). */
static const struct store_stmt q_agent_rotate = STORE_STMT(
    "agent_rotate",
    "UPDATE agents SET"
    " prev_credential_prefix = credential_prefix, prev_credential_hash = credential_hash,"
    " prev_credential_valid_until = now() + interval '" AGENT_ROTATION_GRACE_MINUTES " minutes',"
    " credential_prefix = $2, credential_hash = decode($3, 'hex'),"
    " credential_expires_at = now() + interval '" AGENT_CREDENTIAL_DAYS " days',"
    " updated_at = now() WHERE id = $1 AND credential_prefix = $4 RETURNING id",
    4);

/* Unregistering, likewise, takes the current credential. */
static const struct store_stmt q_agent_unregister =
    STORE_STMT("agent_unregister",
               "DELETE FROM agents WHERE id = $1 AND credential_prefix = $2 RETURNING name", 2);

/* The refusal of a change the previous credential asked for. */
static void reply_previous_credential(struct http_req *req)
{
    http_reply_problem_ext(req, PROBLEM_CONFLICT,
                           "this credential was replaced by a rotation and only works for the "
                           "agent protocol until its grace period ends: use the current one",
                           NULL, json_pack("{s:s}", "reason", "previous-credential"));
}

void api_agent_self(struct http_req *req)
{
    const char *p[] = {http_req_principal(req)->subject};
    PGresult *res = NULL;
    int r = store_exec_once(((struct app *)http_req_app(req))->store,
                            http_req_principal(req)->tenant_id, &q_agent_doc, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the agent");
        return;
    }
    api_reply_pg_json_or_404(req, 200, res, "agent");
}

void api_agent_unregister(struct http_req *req)
{
    const struct http_principal *pr = http_req_principal(req);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    const char *p[] = {pr->subject, pr->token_id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_agent_unregister, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        reply_previous_credential(req);
        return;
    }
    if (r > 0)
        r = app_audit(tx, req, NULL, "agent.unregister", "agent", pr->subject, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "unregistering the agent");
        return;
    }
    char agent[sizeof(pr->subject)]; /* pr lives in req, which the reply may end */
    snprintf(agent, sizeof(agent), "%s", pr->subject);
    struct app *app = http_req_app(req);
    if (api_commit(req, tx, "unregistering the agent") == 0)
        http_reply_json(req, 204, NULL);
    app_auth_invalidate(app, NULL, NULL, agent);
}

void api_agent_rotate(struct http_req *req)
{
    /* The old credential keeps working for the agent protocol for
     * AGENT_ROTATION_GRACE_MINUTES after this commits (the agent's other connections switch
     * over meanwhile); the agent saves the new one before it uses it (see orch-agent). */
    const char *id = http_req_principal(req)->subject;
    struct authkey cred;
    if (authkey_new(AUTHKEY_AGENT, &cred) < 0) {
        http_reply_error(req, -EIO, "generating the agent credential");
        return;
    }
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    const char *p[] = {id, cred.prefix, cred.hash_hex, http_req_principal(req)->token_id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_agent_rotate, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        reply_previous_credential(req);
        return;
    }
    if (r > 0)
        r = app_audit(tx, req, NULL, "agent.rotate_credential", "agent", id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "rotating the credential");
        return;
    }
    char agent[sizeof(http_req_principal(req)->subject)]; /* in req, which the reply may end */
    snprintf(agent, sizeof(agent), "%s", id);
    struct app *app = http_req_app(req);
    api_reply_doc_commit(req, tx, &q_agent_doc, id, 200, "agent", "credential", cred.key);
    /* A credential rotated out twice in its grace period is refused from now on. */
    app_auth_invalidate(app, NULL, NULL, agent);
}
