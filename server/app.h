/* app.h: orchd's application context, shared by the route handlers: configuration, store,
 * token key ring, and the per-node rate limiter. One per process; handlers reach it with
 * http_req_app(). */
#pragma once

#include <pthread.h>
#include <stdint.h>

#include "server/auth-jwt.h"
#include "server/config.h"
#include "server/http.h"
#include "server/store.h"

struct metrics_orch;
struct ratelimit;
struct events_hub;
struct blob_store;
struct agentcache;
struct jwt_cache;
struct authcache;
struct auth_bus;
struct report_batch;

struct app {
    const struct orchd_config *cfg; /* borrowed */
    struct store *store;            /* owned */
    struct jwt_ring *ring;          /* owned */
    struct jwt_params jwt;
    struct ratelimit *rl;    /* owned */
    struct bus *bus;         /* owned: RabbitMQ, connected on first use */
    struct gateway *gw;      /* owned: agents' long-polls (gateway_start()); NULL on a node without
                              * the gateway role: wake agents with gateway_notify_node() */
    struct blobcache *blobs; /* owned: package archives in memory */
    struct blob_store *blobstore; /* owned: where package bytes live (blob-store.h) */
    const char *node;             /* this node's name, for logs and audit */
    struct metrics_orch *metrics; /* owned: this node's metrics (metrics-orch.h) */
    uint8_t webhook_key[32];      /* seals webhook secrets (webhook-secret.h) */
    struct events_hub *events;    /* owned: live events for the console (api role), or NULL */
    struct authcache *auth;       /* owned: admitted keys and reserved call blocks */
    struct agentcache *agents;    /* owned: admitted agent credentials */
    struct jwt_cache *jwts;       /* owned: verified access tokens */
    struct auth_bus *auth_bus;    /* owned: auth.invalidate listener (api role), or NULL */
    /* owned: the agents' group commit (api role, agent.commit_threads > 0), or NULL: each
     * agent exchange commits alone on its loop (report-batch.h) */
    struct report_batch *reports;
};

/* Open the store and load the key ring as cfg says. Returns 0 or < 0 with err filled. */
int app_open(struct app *app, const struct orchd_config *cfg, char *err, size_t errlen);
void app_close(struct app *app);

/* The http_hooks of the API: bearer token verification and admission (key revocation,
 * tenant status, daily API calls, request rate). */
int app_authenticate(void *app, const char *token, size_t len, struct http_principal *ret,
                     const char **why);
int app_admit(void *app, struct http_req *req);

/* Give the unused calls of this node's reserved blocks back to PostgreSQL (at shutdown,
 * once no request runs; app_close() does it too). After a crash they stay counted: a
 * tenant loses at most one block per node and day (docs/scaling.md, "REST API"). */
void app_release_quota_blocks(struct app *app);

/* An API key was revoked (key_id), a tenant suspended, changed or deleted (tenant_id), an
 * agent's credential revoked or rotated or the agent disabled or deleted (agent_id; each
 * may be NULL): drop it from this node's caches now and tell every node over the bus
 * (auth-bus.c). Call after the change committed. A failed publish is logged: the other
 * nodes then see the change within auth.cache_ttl (agents: auth.agent_cache_ttl). */
void app_auth_invalidate(struct app *app, const char *key_id, const char *tenant_id,
                         const char *agent_id);

/* Begin a transaction in the scope of the request's principal: the tenant's for a tenant
 * token, the system scope for a platform operator. A GET's is READ ONLY. */
int app_tx_begin(struct app *app, const struct http_req *req, struct store_tx **ret);

/* The platform tenant's id (platform_tenant(), sql/0013_pools.sql): the owner of the
 * shared pools' agents, and of a platform operator's own scaling policies and webhooks. */
#define APP_PLATFORM_TENANT "00000000-0000-4000-8000-000000000001"

/* The tenant whose own things (scaling policies, webhooks) the principal manages: a
 * tenant's own, the platform tenant for a platform operator; NULL for others. Borrowed
 * from p or static. */
const char *app_own_tenant(const struct http_principal *p);

/* Begin a transaction in the scope of app_own_tenant() (never the system scope), or
 * -EACCES. */
int app_tx_begin_own(struct app *app, const struct http_req *req, struct store_tx **ret);

/* The scope of an agent's exchanges about jobs (heartbeat, reports, claims, package
 * downloads): its tenant's (p->tenant_id), or NULL, the system scope, for an agent of a
 * shared pool, whose jobs are of several tenants (sql/0013_pools.sql). Every statement run
 * in that scope names the calling agent (agent_id = p->subject), so it reaches only the
 * jobs assigned to it. Borrowed from p. */
const char *app_agent_scope(const struct http_principal *p);

/* Record a state-changing request in audit_log, inside tx (so it commits or rolls back
 * with the change). tenant_id NULL = the principal's tenant (platform actions: none).
 * detail is borrowed (may be NULL). */
int app_audit(struct store_tx *tx, const struct http_req *req, const char *tenant_id,
              const char *action, const char *object_type, const char *object_id,
              const json_t *detail);

/* The same with an explicit actor (for requests made before anyone is authenticated, such
 * as an agent enrolling with a token). */
int app_audit_as(struct store_tx *tx, const struct http_req *req, const char *tenant_id,
                 const char *actor_type, const char *actor_id, const char *action,
                 const char *object_type, const char *object_id, const json_t *detail);

/* Answer a write that quota_acquire() refused (tx failed with -EDQUOT): a 403 quota-exceeded
 * problem carrying the refusal's JSON detail {quota, limit, used, requested} and the text
 * detail, then the quota.exceeded event for tenant_id (NULL = the principal's tenant) in a
 * transaction of its own, since the refused one is rolled back and would take the event
 * with it. tx is consumed (rolled back). A failure to record the event is logged, never
 * changes the reply. */
void app_reply_quota_refused(struct http_req *req, struct store_tx *tx, const char *tenant_id,
                             const char *detail);

/* Seconds until the next UTC midnight, when daily quotas reset. */
int64_t app_seconds_to_utc_midnight(int64_t now_s);
