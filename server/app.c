/* app.c: the application context and the API's authentication and admission hooks. */
#include "server/app.h"
#include "server/metrics-orch.h"

#include "server/blob-store.h"
#include "server/blobcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/id.h"
#include "common/log.h"
#include "server/agentcache.h"
#include "server/auth-jwtcache.h"
#include "server/auth-keys.h"
#include "server/authcache.h"
#include "server/bus.h"
#include "server/ratelimit.h"
#include "server/webhook-secret.h"

static const struct store_stmt q_release =
    STORE_STMT("api_calls_release", "SELECT api_calls_release($1::bigint, $2::date)", 2);

int app_open(struct app *app, const struct orchd_config *cfg, char *err, size_t errlen)
{
    memset(app, 0, sizeof(*app));
    app->cfg = cfg;
    app->node = cfg->node_name;
    app->jwt = (struct jwt_params){
        .issuer = cfg->auth_issuer,
        .audience = cfg->auth_audience,
        .ttl_s = cfg->auth_token_ttl_ms / 1000,
        .leeway_s = cfg->auth_leeway_ms / 1000,
    };
    int r = orchd_config_require_system(cfg, err, errlen);
    if (r < 0)
        return r;
    r = jwt_ring_load(cfg->auth_key_dir, &app->ring, err, errlen);
    if (r < 0)
        return r;
    r = webhook_key_load(cfg, app->webhook_key, err, errlen);
    if (r < 0) {
        app_close(app);
        return r;
    }
    struct store_options so = {
        .url = cfg->db_url,
        .system_url = cfg->db_system_url,
        .pool_size = (int)cfg->db_pool_size,
        .connect_timeout_ms = cfg->db_connect_timeout_ms,
        .acquire_timeout_ms = cfg->db_acquire_timeout_ms,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
        .application_name = "orchd",
    };
    r = store_open(&so, &app->store, err, errlen);
    if (r < 0) {
        app_close(app);
        return r;
    }
    app->rl = ratelimit_new();
    if (!app->rl ||
        authcache_new(cfg->auth_cache_ttl_ms, (long)cfg->auth_quota_block, &app->auth) < 0 ||
        agentcache_new(cfg->auth_agent_cache_ttl_ms, (long)cfg->auth_agent_cache_max,
                       &app->agents) < 0 ||
        jwt_cache_new(&app->jwts) < 0 || bus_new(cfg->amqp_url, &app->bus) < 0 ||
        blobcache_new((size_t)cfg->packages_cache_bytes, &app->blobs) < 0 ||
        blob_store_pg_new(app->store, &app->blobstore) < 0 || metrics_orch_new(&app->metrics) < 0) {
        app_close(app);
        return -ENOMEM;
    }
    return 0;
}

static void release_block(void *arg, const char *tenant_id, int64_t day, long unused)
{
    struct app *app = arg;
    char n[24], d[16];
    snprintf(n, sizeof(n), "%ld", unused);
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(d, sizeof(d), "%Y-%m-%d", &tm);
    const char *params[] = {n, d};
    int r = store_exec_once(app->store, tenant_id, &q_release, params, NULL);
    if (r < 0)
        log_warn(
            "op=quota.release tenant=%s calls=%ld err=%d msg=\"the unused calls stay counted\"",
            tenant_id, unused, r);
}

void app_release_quota_blocks(struct app *app)
{
    if (app->auth && app->store)
        authcache_drain(app->auth, release_block, app);
}

void app_close(struct app *app)
{
    app_release_quota_blocks(app);
    authcache_free(app->auth);
    app->auth = NULL;
    agentcache_free(app->agents);
    app->agents = NULL;
    jwt_cache_free(app->jwts);
    app->jwts = NULL;
    store_close(app->store);
    jwt_ring_free(app->ring);
    ratelimit_free(app->rl);
    bus_free(app->bus);
    blobcache_free(app->blobs);
    blob_store_free(app->blobstore);
    app->blobstore = NULL;
    metrics_orch_free(app->metrics);
    app->metrics = NULL;
    app->blobs = NULL;
    app->bus = NULL;
    app->store = NULL;
    app->ring = NULL;
    app->rl = NULL;
    crypto_cleanse(app->webhook_key, sizeof(app->webhook_key));
}

/* The current credential, or the previous one during the grace period after a rotation
 * (sql/0006_rotation.sql): column 2 is the hash of the one whose prefix matched, column 4
 * when it stops being valid (its expiry, or the end of the grace period), or NULL. */
static const struct store_stmt q_agent_auth = STORE_STMT(
    "agent_auth",
    "SELECT a.id, a.tenant_id,"
    "       CASE WHEN a.credential_prefix = $1 THEN a.credential_hash"
    "            ELSE a.prev_credential_hash END,"
    "       a.credential_revoked_at IS NULL AND a.status <> 'disabled' AND t.status = 'active'"
    "       AND (a.credential_expires_at IS NULL OR a.credential_expires_at > now())"
    "       AND (a.credential_prefix = $1 OR a.prev_credential_valid_until > now()),"
    "       extract(epoch FROM a.credential_expires_at)::bigint, a.pool_id IS NOT NULL,"
    "       extract(epoch FROM CASE WHEN a.credential_prefix = $1 THEN a.credential_expires_at"
    "            ELSE least(a.credential_expires_at, a.prev_credential_valid_until) END)::bigint"
    "  FROM agents a JOIN tenants t ON t.id = a.tenant_id"
    " WHERE a.credential_prefix = $1 OR a.prev_credential_prefix = $1",
    1);

static void agent_principal(const struct agentcache_entry *e, const char *prefix,
                            struct http_principal *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->kind = HTTP_PRINCIPAL_AGENT;
    snprintf(ret->subject, sizeof(ret->subject), "%s", e->agent_id);
    snprintf(ret->tenant_id, sizeof(ret->tenant_id), "%s", e->tenant_id);
    snprintf(ret->role, sizeof(ret->role), "agent");
    snprintf(ret->token_id, sizeof(ret->token_id), "%s", prefix);
    ret->token_exp = e->expires_s;
    ret->pool = e->pool;
}

static int64_t pg_epoch(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* An agent presents its own long-lived credential (orch_ag_...) on every request: its
 * connection is one long-lived HTTPS session, so a token exchange would buy nothing. What
 * PostgreSQL said of an admitted credential is remembered (server/agentcache.h), so that
 * an agent's exchanges cost no query; the secret is hashed and compared every time. */
static int authenticate_agent(struct app *app, const char *token, size_t len,
                              struct http_principal *ret, const char **why)
{
    char prefix[AUTHKEY_PREFIX_LEN + 1], hash[65];
    *why = "the agent credential is not valid";
    if (!authkey_parse(AUTHKEY_AGENT, token, len, prefix, hash))
        return -EACCES;
    struct agentcache_entry e;
    if (agentcache_get(app->agents, prefix, clock_mono_ns(), &e) &&
        crypto_streq(hash, e.hash_hex) &&
        (e.valid_until_s == 0 || clock_real_ms() / 1000 < e.valid_until_s)) {
        agent_principal(&e, prefix, ret);
        metrics_orch_agent_auth(app->metrics, true);
        return 0;
    }
    const char *p[] = {prefix};
    uint64_t gen = agentcache_gen(app->agents);
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_agent_auth, p, &res);
    if (r < 0) {
        /* Not the agent's fault: say what happened, not that its credential is in doubt. */
        *why = r == -ECONNRESET ? HTTP_DB_UNREACHABLE : "the database is busy; retry";
        return -EAGAIN;
    }
    bool matches = r == 1 && authkey_hash_matches(hash, PQgetvalue(res, 0, 2));
    bool ok = matches && strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    if (ok) {
        memset(&e, 0, sizeof(e));
        snprintf(e.agent_id, sizeof(e.agent_id), "%s", PQgetvalue(res, 0, 0));
        snprintf(e.tenant_id, sizeof(e.tenant_id), "%s", PQgetvalue(res, 0, 1));
        snprintf(e.hash_hex, sizeof(e.hash_hex), "%s", hash);
        e.expires_s = pg_epoch(res, 4);
        e.pool = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
        e.valid_until_s = pg_epoch(res, 6);
        agentcache_put(app->agents, prefix, &e, gen, clock_mono_ns());
        agent_principal(&e, prefix, ret);
        metrics_orch_agent_auth(app->metrics, false);
    } else if (matches) {
        *why = "the agent credential was revoked or expired, the agent is disabled, or its "
               "tenant is suspended";
    }
    PQclear(res);
    return ok ? 0 : -EACCES;
}

int app_authenticate(void *ctx, const char *token, size_t len, struct http_principal *ret,
                     const char **why)
{
    struct app *app = ctx;
    if (len > 8 && strncmp(token, "orch_ag_", 8) == 0)
        return authenticate_agent(app, token, len, ret, why);
    struct jwt_claims c;
    int r = jwt_verify_cached(app->jwts, app->ring, &app->jwt, token, len, clock_real_ms() / 1000,
                              &c, why);
    if (r < 0)
        return r;
    memset(ret, 0, sizeof(*ret));
    if (strcmp(c.role, "platform") == 0) {
        ret->kind = HTTP_PRINCIPAL_PLATFORM;
    } else {
        ret->kind = HTTP_PRINCIPAL_TENANT;
        memcpy(ret->tenant_id, c.tenant, sizeof(ret->tenant_id));
    }
    memcpy(ret->role, c.role, sizeof(ret->role));
    snprintf(ret->subject, sizeof(ret->subject), "%s", c.sub);
    memcpy(ret->token_id, c.jti, sizeof(ret->token_id));
    ret->token_exp = c.exp;
    return 0;
}

int64_t app_seconds_to_utc_midnight(int64_t now_s)
{
    return 86400 - (now_s % 86400);
}

/* What a node needs to admit a tenant's requests (server/authcache.h), in one statement: the
 * API key still valid, the tenant active, its daily quota and request rate, and, when $2 >
 * 0 and both hold, a block of up to $2 calls reserved for today (api_calls_reserve(), which
 * also records the daily quota's events). With $2 = 0 it only reads. */
static const struct store_stmt q_admit_tenant = STORE_STMT(
    "admit_tenant",
    "WITH k AS (SELECT 1 FROM api_keys WHERE id = $1::uuid AND revoked_at IS NULL"
    "             AND (expires_at IS NULL OR expires_at > now())),"
    " t AS (SELECT t.status, q.max_api_calls_day, coalesce(t.rate_per_sec, d.rate_per_sec)"
    "              AS rate_per_sec, coalesce(t.rate_burst, d.rate_burst) AS rate_burst"
    "         FROM tenants t JOIN tenant_quotas q ON q.tenant_id = t.id"
    "         JOIN tier_defaults d ON d.tier = t.tier WHERE t.id = app_tenant())"
    " SELECT (SELECT count(*) FROM k), t.status, t.max_api_calls_day, t.rate_per_sec,"
    "        t.rate_burst, r.granted, r.used"
    "   FROM t, LATERAL api_calls_reserve(CASE WHEN (SELECT count(*) FROM k) = 1"
    "                                          AND t.status = 'active' THEN $2::bigint"
    "                                          ELSE 0 END, t.max_api_calls_day) r",
    2);

static const struct store_stmt q_admit_platform =
    STORE_STMT("admit_platform",
               "SELECT count(*) FROM operator_tokens WHERE id = $1::uuid AND revoked_at IS NULL"
               " AND (expires_at IS NULL OR expires_at > now())",
               1);

static void rate_headers(struct http_req *req, long limit, long remaining, int64_t reset)
{
    char v[32];
    snprintf(v, sizeof(v), "%ld", limit);
    http_reply_header(req, "RateLimit-Limit", v);
    http_reply_header(req, "X-RateLimit-Limit", v);
    snprintf(v, sizeof(v), "%ld", remaining < 0 ? 0 : remaining);
    http_reply_header(req, "RateLimit-Remaining", v);
    http_reply_header(req, "X-RateLimit-Remaining", v);
    snprintf(v, sizeof(v), "%lld", (long long)reset);
    http_reply_header(req, "RateLimit-Reset", v);
    http_reply_header(req, "X-RateLimit-Reset", v);
}

static int admit_platform(struct app *app, struct http_req *req)
{
    const struct http_principal *p = http_req_principal(req);
    const char *params[] = {p->subject};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_admit_platform, params, &res);
    if (r < 0) {
        http_reply_error(req, r, "checking the operator token");
        return r;
    }
    bool ok = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    PQclear(res);
    if (!ok) {
        http_reply_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        http_reply_problem(req, PROBLEM_UNAUTHENTICATED, "the operator token was revoked", NULL);
        return -EACCES;
    }
    return 0;
}

/* Read p's key and tenant into *e (and the node's cache), reserving a block of up to want
 * calls of `day` when want > 0. A reservation commits asynchronously: a database crash may
 * lose the last fraction of a second of reservations, whose calls may then be reserved
 * again (the quota's only excess, bounded by those blocks).
 * Returns 0, -ENOENT (no such tenant), or a store error. */
static int admit_fetch(struct app *app, const struct http_principal *p, long want, int64_t day,
                       struct authcache_entry *e)
{
    char wants[24];
    snprintf(wants, sizeof(wants), "%ld", want);
    const char *params[] = {p->subject, wants};
    uint64_t gen = authcache_gen(app->auth);
    PGresult *res = NULL;
    struct store_tx *tx = NULL;
    int r = store_tx_begin(app->store, p->tenant_id,
                           want > 0 ? STORE_TX_ASYNC_COMMIT : STORE_TX_READ_ONLY, &tx);
    if (r >= 0) {
        r = store_tx_exec(tx, &q_admit_tenant, params, &res);
        int c = store_tx_commit(tx);
        if (r >= 0 && c < 0) {
            PQclear(res);
            res = NULL;
            r = c;
        }
    }
    if (r < 0)
        return r;
    if (r == 0) {
        PQclear(res);
        return -ENOENT;
    }
    memset(e, 0, sizeof(*e));
    snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", p->tenant_id);
    e->key_ok = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    e->active = strcmp(PQgetvalue(res, 0, 1), "active") == 0;
    e->quota = strtol(PQgetvalue(res, 0, 2), NULL, 10);
    e->rate = strtod(PQgetvalue(res, 0, 3), NULL);
    e->burst = strtod(PQgetvalue(res, 0, 4), NULL);
    long granted = strtol(PQgetvalue(res, 0, 5), NULL, 10);
    long used = strtol(PQgetvalue(res, 0, 6), NULL, 10);
    PQclear(res);
    uint64_t now_ns = clock_mono_ns();
    authcache_put(app->auth, p->subject, e, gen, now_ns);
    if (want > 0 && e->key_ok && e->active)
        authcache_give(app->auth, p->tenant_id, day, granted, used, now_ns);
    return 0;
}

int app_admit(void *ctx, struct http_req *req)
{
    struct app *app = ctx;
    const struct http_principal *p = http_req_principal(req);
    if (p->kind == HTTP_PRINCIPAL_PLATFORM)
        return admit_platform(app, req);
    /* Agents were checked against the database in authenticate_agent(); their heartbeats
     * and reports are not the tenant's API calls. */
    if (p->kind != HTTP_PRINCIPAL_TENANT)
        return 0;

    uint64_t now_ns = clock_mono_ns();
    int64_t retry_ms = 0;
    if (!ratelimit_take(app->rl, p->tenant_id, now_ns, &retry_ms)) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)((retry_ms + 999) / 1000));
        http_reply_header(req, "Retry-After", v);
        http_reply_problem_ext(req, PROBLEM_RATE_LIMITED,
                               "request rate over the tier's limit; slow down", NULL,
                               json_pack("{s:s}", "quota", "request_rate"));
        return -EBUSY;
    }

    int64_t now_s = clock_real_ms() / 1000, day = now_s / 86400;
    struct authcache_entry e;
    /* Keyed by the key id; the tenant is checked too (a signed token names both). */
    bool have =
        authcache_get(app->auth, p->subject, now_ns, &e) && strcmp(e.tenant_id, p->tenant_id) == 0;
    enum authcache_take t = AUTHCACHE_EMPTY;
    long remaining = 0;
    for (int round = 0; round < 4; round++) {
        bool reserved = false;
        if (!have) {
            long want = authcache_left(app->auth, p->tenant_id, day) > 0
                            ? 0
                            : authcache_block_max(app->auth);
            int r = admit_fetch(app, p, want, day, &e);
            if (r == -ENOENT) {
                http_reply_problem(req, PROBLEM_UNAUTHENTICATED, "the tenant no longer exists",
                                   NULL);
                return -EACCES;
            }
            if (r < 0) {
                http_reply_error(req, r, "admitting the request");
                return r;
            }
            have = true;
            reserved = want > 0;
        }
        if (!e.key_ok) {
            http_reply_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
            http_reply_problem(req, PROBLEM_UNAUTHENTICATED,
                               "the API key behind this token was revoked or expired", NULL);
            return -EACCES;
        }
        if (!e.active) {
            http_reply_problem(req, PROBLEM_FORBIDDEN, "the tenant is suspended", NULL);
            return -EACCES;
        }
        ratelimit_set(app->rl, p->tenant_id, e.rate, e.burst, now_ns);
        t = authcache_take(app->auth, p->tenant_id, day, now_ns, e.quota, &remaining);
        if (t != AUTHCACHE_EMPTY || reserved)
            break;
        /* The block is used up: reserve another (and read the key and tenant afresh). */
        have = false;
    }
    int64_t reset = app_seconds_to_utc_midnight(now_s);
    if (t != AUTHCACHE_TAKEN) {
        rate_headers(req, e.quota, 0, reset);
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)reset);
        http_reply_header(req, "Retry-After", v);
        http_reply_problem_ext(req, PROBLEM_RATE_LIMITED,
                               "the tenant's daily API call quota is spent; it resets at 00:00 "
                               "UTC",
                               NULL,
                               json_pack("{s:s, s:I, s:I}", "quota", "api_calls_per_day", "limit",
                                         (json_int_t)e.quota, "used", (json_int_t)e.quota));
        return -EBUSY;
    }
    rate_headers(req, e.quota, remaining, reset);
    return 0;
}

int app_tx_begin(struct app *app, const struct http_req *req, struct store_tx **ret)
{
    const struct http_principal *p = http_req_principal(req);
    /* A tenant's or an operator's GET only reads: READ ONLY, so its COMMIT writes nothing. */
    unsigned ro = http_req_method(req) == HTTP_GET ? STORE_TX_READ_ONLY : 0;
    if (p->kind == HTTP_PRINCIPAL_TENANT)
        return store_tx_begin(app->store, p->tenant_id, ro, ret);
    if (p->kind == HTTP_PRINCIPAL_AGENT)
        return store_tx_begin_tenant(app->store, p->tenant_id, ret);
    if (p->kind == HTTP_PRINCIPAL_PLATFORM)
        return store_tx_begin(app->store, NULL, ro, ret);
    return -EACCES;
}

const char *app_own_tenant(const struct http_principal *p)
{
    if (p->kind == HTTP_PRINCIPAL_TENANT)
        return p->tenant_id;
    return p->kind == HTTP_PRINCIPAL_PLATFORM ? APP_PLATFORM_TENANT : NULL;
}

int app_tx_begin_own(struct app *app, const struct http_req *req, struct store_tx **ret)
{
    const char *tenant = app_own_tenant(http_req_principal(req));
    return tenant ? store_tx_begin_tenant(app->store, tenant, ret) : -EACCES;
}

const char *app_agent_scope(const struct http_principal *p)
{
    return p->pool ? NULL : p->tenant_id;
}

/* Deduplicated in SQL: at most one event per tenant, resource and period
 * (sql/functions/20_quotas.sql), and a refusal within the period reads one row. */
static const struct store_stmt q_quota_exceeded =
    STORE_STMT("quota_exceeded", "SELECT quota_note_exceeded($1::jsonb)", 1);

void app_reply_quota_refused(struct http_req *req, struct store_tx *tx, const char *tenant_id,
                             const char *detail)
{
    const struct http_principal *p = http_req_principal(req);
    const char *tenant = tenant_id ? tenant_id : p->tenant_id;
    char *why = strdup(store_tx_errdetail(tx));
    json_error_t jerr;
    json_t *ext = why ? json_loads(why, 0, &jerr) : NULL;
    bool parsed = ext != NULL;
    store_tx_rollback(tx);
    http_reply_problem_ext(req, PROBLEM_QUOTA_EXCEEDED, detail, NULL, ext);
    if (!parsed || !tenant || !tenant[0])
        goto done;
    struct app *app = http_req_app(req);
    const char *params[] = {why};
    int r = store_exec_once(app->store, tenant, &q_quota_exceeded, params, NULL);
    if (r < 0)
        log_warn("op=quota.exceeded tenant=%s err=%d msg=\"recording the event failed\"", tenant,
                 r);
done:
    free(why);
}

static const struct store_stmt q_audit = STORE_STMT(
    "audit_insert",
    "INSERT INTO audit_log (id, tenant_id, actor_type, actor_id, action, object_type, object_id,"
    " detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
    8);

int app_audit(struct store_tx *tx, const struct http_req *req, const char *tenant_id,
              const char *action, const char *object_type, const char *object_id,
              const json_t *detail)
{
    const struct http_principal *p = http_req_principal(req);
    const char *actor_type = p->kind == HTTP_PRINCIPAL_PLATFORM ? "operator"
                             : p->kind == HTTP_PRINCIPAL_AGENT  ? "agent"
                                                                : "api_key";
    if (!tenant_id && (p->kind == HTTP_PRINCIPAL_TENANT || p->kind == HTTP_PRINCIPAL_AGENT))
        tenant_id = p->tenant_id;
    return app_audit_as(tx, req, tenant_id, actor_type, p->subject[0] ? p->subject : "anonymous",
                        action, object_type, object_id, detail);
}

int app_audit_as(struct store_tx *tx, const struct http_req *req, const char *tenant_id,
                 const char *actor_type, const char *actor_id, const char *action,
                 const char *object_type, const char *object_id, const json_t *detail)
{
    char id[ID_STR_LEN];
    id_uuid7_str(id);
    char *d = NULL;
    json_t *full = detail ? json_deep_copy(detail) : json_object();
    if (full) {
        json_object_set_new(full, "request_id", json_string(http_req_id(req)));
        d = json_dumps(full, JSON_COMPACT);
        json_decref(full);
    }
    const char *params[] = {
        id, tenant_id, actor_type, actor_id, action, object_type, object_id, d,
    };
    int r = store_tx_exec(tx, &q_audit, params, NULL);
    free(d);
    return r < 0 ? r : 0;
}
