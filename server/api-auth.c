/* api-auth.c: exchanging an API key or operator token for an access token, refreshing
 * it, and the tenant's API keys. */
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
#include "server/ratelimit.h"

/* Token exchanges per client address and node: 20 a second, bursts of 100. */
#define AUTH_TOKEN_RATE  20.0
#define AUTH_TOKEN_BURST 100.0

static const struct store_stmt q_find_api_key =
    STORE_STMT("auth_find_api_key",
               "SELECT k.id, k.tenant_id, k.role, k.secret_hash,"
               "       k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()),"
               "       t.status"
               "  FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix = $1",
               1);

static const struct store_stmt q_touch_api_key =
    STORE_STMT("auth_touch_api_key", "UPDATE api_keys SET last_used_at = now() WHERE id = $1", 1);

static const struct store_stmt q_find_operator = STORE_STMT(
    "auth_find_operator",
    "SELECT id, secret_hash, revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    "  FROM operator_tokens WHERE prefix = $1",
    1);

static const struct store_stmt q_touch_operator = STORE_STMT(
    "auth_touch_operator", "UPDATE operator_tokens SET last_used_at = now() WHERE id = $1", 1);

/* Issue a token for claims and reply with it. */
static void reply_token(struct http_req *req, struct app *app, const struct jwt_claims *in)
{
    char *token = NULL;
    struct jwt_claims out;
    int r = jwt_issue(app->ring, &app->jwt, in, clock_real_ms() / 1000, &token, &out);
    if (r < 0) {
        http_reply_error(req, r, "signing the token");
        return;
    }
    char exp[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(out.exp * 1000, exp, sizeof(exp));
    json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s*}", "access_token", token, "token_type",
                             "Bearer", "expires_in", (json_int_t)(out.exp - out.iat), "expires_at",
                             exp, "role", out.role, "tenant_id", out.tenant[0] ? out.tenant : NULL);
    free(token);
    http_reply_json(req, 200, body);
}

static void unauthorized(struct http_req *req)
{
    /* One answer for every failure: no oracle telling which part was wrong. */
    http_reply_problem(req, PROBLEM_UNAUTHENTICATED, "the key is not valid", "key");
}

static void token_for_api_key(struct http_req *req, struct app *app, const char *key, size_t len)
{
    char prefix[AUTHKEY_PREFIX_LEN + 1], hash[65];
    if (!authkey_parse(AUTHKEY_API, key, len, prefix, hash)) {
        unauthorized(req);
        return;
    }
    struct store_tx *tx = NULL;
    int r = store_tx_begin_system(app->store, &tx);
    if (r < 0) {
        http_reply_error(req, r, "looking up the key");
        return;
    }
    PGresult *res = NULL;
    const char *p[] = {prefix};
    r = store_tx_exec(tx, &q_find_api_key, p, &res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "looking up the key");
        return;
    }
    bool found = r == 1 && authkey_hash_matches(hash, PQgetvalue(res, 0, 3));
    bool valid = found && strcmp(PQgetvalue(res, 0, 4), "t") == 0;
    bool active = found && strcmp(PQgetvalue(res, 0, 5), "active") == 0;
    struct jwt_claims c = {0};
    if (found) {
        snprintf(c.sub, sizeof(c.sub), "%s", PQgetvalue(res, 0, 0));
        snprintf(c.tenant, sizeof(c.tenant), "%s", PQgetvalue(res, 0, 1));
        snprintf(c.role, sizeof(c.role), "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    if (!valid) {
        store_tx_rollback(tx);
        log_info("op=auth.token result=refused prefix=%s req=%s", prefix, http_req_id(req));
        unauthorized(req);
        return;
    }
    if (!active) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_FORBIDDEN, "the tenant is suspended", NULL);
        return;
    }
    const char *p2[] = {c.sub};
    store_tx_exec(tx, &q_touch_api_key, p2, NULL);
    if (api_commit(req, tx, "recording the key's use") < 0)
        return;
    reply_token(req, app, &c);
}

static void token_for_operator(struct http_req *req, struct app *app, const char *key, size_t len)
{
    char prefix[AUTHKEY_PREFIX_LEN + 1], hash[65];
    if (!authkey_parse(AUTHKEY_OPERATOR, key, len, prefix, hash)) {
        unauthorized(req);
        return;
    }
    struct store_tx *tx = NULL;
    int r = store_tx_begin_system(app->store, &tx);
    if (r < 0) {
        http_reply_error(req, r, "looking up the token");
        return;
    }
    PGresult *res = NULL;
    const char *p[] = {prefix};
    r = store_tx_exec(tx, &q_find_operator, p, &res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "looking up the token");
        return;
    }
    bool ok = r == 1 && authkey_hash_matches(hash, PQgetvalue(res, 0, 1)) &&
              strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    struct jwt_claims c = {.role = "platform"};
    if (ok)
        snprintf(c.sub, sizeof(c.sub), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!ok) {
        store_tx_rollback(tx);
        log_info("op=auth.token result=refused prefix=%s req=%s", prefix, http_req_id(req));
        unauthorized(req);
        return;
    }
    const char *p2[] = {c.sub};
    store_tx_exec(tx, &q_touch_operator, p2, NULL);
    if (api_commit(req, tx, "recording the token's use") < 0)
        return;
    reply_token(req, app, &c);
}

void api_auth_token(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"key", JSONV_STRING, JSONV_REQUIRED, 1, 256},
    };
    struct app *app = http_req_app(req);
    /* Keys are 256-bit secrets, so guessing is hopeless; the limit keeps a flood of
     * attempts from one address from costing a database transaction each. */
    char bucket[64];
    snprintf(bucket, sizeof(bucket), "addr:%s", http_req_peer(req));
    uint64_t now = clock_mono_ns();
    int64_t retry_ms = 0;
    if (!ratelimit_take(app->rl, bucket, now, &retry_ms)) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)((retry_ms + 999) / 1000));
        http_reply_header(req, "Retry-After", v);
        http_reply_problem_ext(req, PROBLEM_RATE_LIMITED,
                               "too many token requests from this address; slow down", NULL,
                               json_pack("{s:s}", "quota", "token_requests"));
        return;
    }
    ratelimit_set(app->rl, bucket, AUTH_TOKEN_RATE, AUTH_TOKEN_BURST, now);

    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    const char *key = api_json_str(body, "key");
    size_t len = json_string_length(json_object_get(body, "key"));
    if (strncmp(key, "orch_op_", 8) == 0)
        token_for_operator(req, app, key, len);
    else
        token_for_api_key(req, app, key, len);
    json_decref(body);
}

void api_auth_refresh(struct http_req *req)
{
    /* The admission hook has already checked that the key or operator token behind this
     * token is still valid. */
    const struct http_principal *p = http_req_principal(req);
    struct jwt_claims c = {0};
    snprintf(c.sub, sizeof(c.sub), "%s", p->subject);
    snprintf(c.role, sizeof(c.role), "%s", p->role);
    if (p->kind == HTTP_PRINCIPAL_TENANT)
        snprintf(c.tenant, sizeof(c.tenant), "%s", p->tenant_id);
    reply_token(req, http_req_app(req), &c);
}

/* --- API keys ------------------------------------------------------------------------------ */

static const struct store_stmt q_key_insert = STORE_STMT(
    "key_insert",
    "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role, created_by, expires_at)"
    " VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6, $7, $8::timestamptz)",
    8);

static const struct store_stmt q_key_doc =
    STORE_STMT("key_doc", "SELECT doc FROM api_key_view WHERE id = $1", 1);

static const struct store_stmt q_key_list = STORE_STMT(
    "key_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM api_key_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

static const struct store_stmt q_key_revoke = STORE_STMT(
    "key_revoke",
    "WITH u AS (UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
    "           RETURNING id)"
    " SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM api_keys WHERE id = $1)",
    1);

static const struct jsonv_field key_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 100},
    {"role", JSONV_STRING, JSONV_REQUIRED, 1, 16},
    {"expires_at", JSONV_TIME, JSONV_NULLABLE, 0, 0},
};

/* Create a key for tenant_id from the request body, in a transaction of scope tx_tenant
 * (the tenant's own, or NULL for the system scope), and reply 201 with it. */
static void create_key(struct http_req *req, const char *tenant_id, const char *tx_tenant)
{
    json_t *body = NULL;
    if (http_req_json(req, key_fields, ELEMENTSOF(key_fields), &body) < 0)
        return;
    const char *role = api_json_str(body, "role");
    if (strcmp(role, "admin") != 0 && strcmp(role, "operator") != 0 &&
        strcmp(role, "viewer") != 0) {
        json_decref(body);
        http_reply_problem(req, PROBLEM_VALIDATION, "must be admin, operator or viewer", "role");
        return;
    }
    const char *expires = api_json_str(body, "expires_at");
    if (expires) {
        int64_t ms;
        if (clock_parse_rfc3339(expires, &ms) < 0 || ms <= clock_real_ms()) {
            json_decref(body);
            http_reply_problem(req, PROBLEM_VALIDATION, "must be a time in the future",
                               "expires_at");
            return;
        }
    }
    struct authkey k;
    char id[ID_STR_LEN];
    id_uuid7_str(id);
    if (authkey_new(AUTHKEY_API, &k) < 0) {
        json_decref(body);
        http_reply_error(req, -EIO, "generating the key");
        return;
    }
    struct app *app = http_req_app(req);
    struct store_tx *tx = NULL;
    int r = tx_tenant ? store_tx_begin_tenant(app->store, tx_tenant, &tx)
                      : store_tx_begin_system(app->store, &tx);
    if (r < 0) {
        json_decref(body);
        http_reply_error(req, r, "creating the key");
        return;
    }
    const struct http_principal *pr = http_req_principal(req);
    char creator[160];
    snprintf(creator, sizeof(creator), "%s:%s",
             pr->kind == HTTP_PRINCIPAL_PLATFORM ? "operator" : "api_key", pr->subject);
    const char *p[] = {id,      tenant_id, api_json_str(body, "name"), k.prefix, k.hash_hex, role,
                       creator, expires};
    r = store_tx_exec(tx, &q_key_insert, p, NULL);
    json_t *detail = json_pack("{s:s, s:s}", "name", api_json_str(body, "name"), "role", role);
    json_decref(body);
    if (r >= 0)
        r = app_audit(tx, req, tenant_id, "api_key.create", "api_key", id, detail);
    json_decref(detail);
    if (r < 0) {
        bool dup = r == -EEXIST;
        bool no_tenant = r == -ENOENT && strcmp(store_tx_sqlstate(tx), "23503") == 0;
        store_tx_rollback(tx);
        if (dup)
            http_reply_problem(req, PROBLEM_CONFLICT, "a key with this name exists", "name");
        else if (no_tenant)
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such tenant", NULL);
        else
            http_reply_error(req, r, "creating the key");
        return;
    }
    api_reply_doc_commit(req, tx, &q_key_doc, id, 201, "API key", "key", k.key);
}

void api_keys_create(struct http_req *req)
{
    const char *tenant = http_req_principal(req)->tenant_id;
    create_key(req, tenant, tenant);
}

void api_keys_create_for_tenant(struct http_req *req)
{
    const char *tenant = api_path_id(req, "id", "tenant");
    if (tenant)
        create_key(req, tenant, NULL);
}

void api_keys_list(struct http_req *req)
{
    api_list_page(req, &q_key_list, http_req_principal(req)->tenant_id, "listing keys");
}

void api_keys_revoke(struct http_req *req)
{
    /* Every node forgets the key at once (and within auth.cache_ttl without the bus). */
    if (api_revoke(req, &q_key_revoke, "API key", "api_key"))
        app_auth_invalidate(http_req_app(req), http_req_param(req, "id"), NULL, NULL);
}
