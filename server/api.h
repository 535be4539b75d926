/* api.h: the REST API's route handlers (server/api-*.c) and the table that maps routes
 * to them (api-routes.c). Each handler replies exactly once, success or problem. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>

#include "common/id.h"
#include "proto/agent.h"
#include "server/http.h"
#include "server/store.h"

extern const struct http_route api_routes[];
extern const size_t api_nroutes;

/* Reply with the JSON text PostgreSQL built in column 0 of row 0 of res (frees res). */
void api_reply_pg_json(struct http_req *req, int status, PGresult *res);
/* Reply 404 when res has no row, else as api_reply_pg_json(). */
void api_reply_pg_json_or_404(struct http_req *req, int status, PGresult *res, const char *what);
/* Read the document of id back with stmt inside tx, commit, and reply with it (status);
 * when secret is not NULL it is added to the document as member secret_key (the one time
 * a secret is shown). Rolls back and replies with a problem on failure. */
void api_reply_doc_commit(struct http_req *req, struct store_tx *tx, const struct store_stmt *stmt,
                          const char *id, int status, const char *what, const char *secret_key,
                          const char *secret);
/* A page of a list: the limit and cursor query parameters are checked, then stmt ($1
 * cursor, $2 limit) runs in the scope of tenant_id (NULL: system) and its JSON is the
 * reply. Returns 0, or < 0 after replying with a problem. */
int api_list_page(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                  const char *what);
/* The same for a statement with a third parameter (a filter; NULL = SQL NULL). */
int api_list_page_with(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                       const char *what, const char *arg3);
/* List cursors (api-common.c): opaque, bound by a MAC to the list's route and the
 * principal's tenant. API_CURSOR_LEN counts the NUL. */
#define API_CURSOR_LEN 44
/* The cursor of the page after id. Returns 0, or -EINVAL when id is not a UUID. */
int api_cursor_seal(struct http_req *req, const char *id, char out[API_CURSOR_LEN]);
/* The id a cursor from api_cursor_seal() holds; -EINVAL for anything else. */
int api_cursor_open(struct http_req *req, const char *cursor, char id[ID_STR_LEN]);
/* The `cursor` query parameter (NULL: none): 0 when absent, 1 with id filled, or < 0 after
 * replying 422 (field cursor). */
int api_page_cursor(struct http_req *req, const char *cursor, char id[ID_STR_LEN]);
/* Reply 200 with a list page PostgreSQL built ({"items": ..., "next_cursor": <id>|null}),
 * its next_cursor sealed (frees res). */
void api_reply_page(struct http_req *req, PGresult *res);

/* GET of one document: the path's {id} (404 unless a UUID), stmt ($1 = id) in the scope of
 * tenant_id (NULL: system), 404 when no row, else 200 with the document. */
void api_get_doc(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                 const char *what);
/* Revoke the path's {id} with stmt ($1 = id; returns one row: (revoked now: 0|1,
 * exists: 0|1)) in the principal's scope: 404 when it does not exist, 204 otherwise, and
 * an audit record "<object_type>.revoke" only the first time. Returns true when this call
 * revoked it (committed). */
bool api_revoke(struct http_req *req, const struct store_stmt *stmt, const char *what,
                const char *object_type);
/* Delete the path's {id} with stmt ($1 = id; a row back when it existed) in the
 * principal's own tenant (app_tx_begin_own()): 404 "no such <noun>" when it does not
 * exist, else an audit record "<object_type>.delete" and 204. */
void api_delete_by_id(struct http_req *req, const struct store_stmt *stmt, const char *noun,
                      const char *object_type);
/* Commit tx; on failure reply with the mapped problem and return < 0. */
int api_commit(struct http_req *req, struct store_tx *tx, const char *what);
/* The path parameter "id" if it is a canonical UUID; otherwise reply 404 and return NULL
 * (an id that cannot exist is simply not found). */
const char *api_path_id(struct http_req *req, const char *name, const char *what);
/* A JSON string member, or NULL when absent or null. */
const char *api_json_str(const json_t *obj, const char *key);
/* Labels (an agent's, an enrolment token's) and requirements (a job's, a queue's) have one
 * shape: at most API_LABELS_MAX entries, names of 1 to API_LABEL_NAME_MAX characters of
 * A-Z a-z 0-9 _ . / -, string values of at most API_LABEL_VALUE_MAX bytes. */
#define API_LABELS_MAX      32
#define API_LABEL_NAME_MAX  63
#define API_LABEL_VALUE_MAX 255
/* Whether name is a label's (or a requirement's) name. */
bool api_label_name_ok(const char *name);
/* A tenant's slug and a pool's name: 1 to 63 of a-z 0-9 -, not starting with -
 * (the CHECKs on tenants.slug and pools.name). */
bool api_slug_ok(const char *s);
/* The tiers (tier_defaults), and whether t (may be NULL) is one of them. */
#define API_TIERS_N 4
extern const char *const api_tiers[API_TIERS_N];
bool api_tier_ok(const char *t);
/* Check a label map ({"os": "linux"}) of that shape. Replies 422 naming field and returns
 * < 0 when bad. */
int api_check_labels(struct http_req *req, const json_t *labels, const char *field);
/* A queue's and a schedule's name: 1 to API_QUEUE_NAME_MAX of A-Z a-z 0-9 _ . -, starting
 * with a letter or digit (the CHECKs on queues.name and schedules.name). */
bool api_name_ok(const char *s);
/* A job's priority and a queue's default one; a queue's name. */
#define API_PRIORITY_MIN   (-100)
#define API_PRIORITY_MAX   100
#define API_QUEUE_NAME_MAX 64

/* packages: an archive in one request up to PACKAGE_SINGLE_MAX_BYTES (the route's cap;
 * packages.single_upload_max_bytes and http.max_body_bytes may lower it), larger ones in
 * parts of at most PACKAGE_PART_MAX_BYTES (packages.max_bytes in all). Archives up to
 * PACKAGE_HOT_MAX_BYTES are served from the node's memory (blobcache.h), larger ones
 * streamed from the blob store. */
#define PACKAGE_SINGLE_MAX_BYTES (64 * 1024 * 1024)
#define PACKAGE_PART_MAX_BYTES   (8 * 1024 * 1024)
#define PACKAGE_HOT_MAX_BYTES    (16 * 1024 * 1024)
/* An upload's whole-request deadline: 15 MiB at 256 kbit/s. */
#define PACKAGE_UPLOAD_TIMEOUT_MS (10 * 60 * 1000)
void api_packages_create(struct http_req *req);
void api_packages_list(struct http_req *req);
void api_packages_get(struct http_req *req);
void api_packages_content(struct http_req *req);
void api_packages_delete(struct http_req *req);
void api_packages_upload_create(struct http_req *req);
void api_packages_upload_get(struct http_req *req);
void api_packages_upload_part(struct http_req *req);
void api_packages_upload_commit(struct http_req *req);
void api_packages_upload_delete(struct http_req *req);

/* health */
void api_healthz(struct http_req *req);
void api_readyz(struct http_req *req);
/* auth */
void api_auth_token(struct http_req *req);
void api_auth_refresh(struct http_req *req);
/* autoscaling signals (api-scaling.c) */
void api_scaling_signals(struct http_req *req);
/* scaling policies (api-scaling.c) */
void api_scaling_policies_list(struct http_req *req);
void api_scaling_policies_create(struct http_req *req);
void api_scaling_policies_get(struct http_req *req);
void api_scaling_policies_update(struct http_req *req);
void api_scaling_policies_delete(struct http_req *req);
void api_scaling_policies_history(struct http_req *req);
/* tenants */
void api_tenants_list(struct http_req *req);
void api_tenants_create(struct http_req *req);
void api_tenants_get(struct http_req *req);
void api_tenants_update(struct http_req *req);
void api_tenants_delete(struct http_req *req);
void api_tenant_self(struct http_req *req);
/* API keys */
void api_keys_list(struct http_req *req);
void api_keys_create(struct http_req *req);
void api_keys_revoke(struct http_req *req);
void api_keys_create_for_tenant(struct http_req *req);
/* queues */
void api_queues_list(struct http_req *req);
void api_queues_create(struct http_req *req);
void api_queues_get(struct http_req *req);
void api_queues_update(struct http_req *req);
void api_queues_delete(struct http_req *req);
/* shared agent pools (operators) */
void api_pools_list(struct http_req *req);
void api_pools_create(struct http_req *req);
void api_pools_get(struct http_req *req);
void api_pools_update(struct http_req *req);
void api_pools_delete(struct http_req *req);
/* event webhooks (api-webhooks.c) */
void api_webhooks_list(struct http_req *req);
void api_webhooks_create(struct http_req *req);
void api_webhooks_get(struct http_req *req);
void api_webhooks_update(struct http_req *req);
void api_webhooks_delete(struct http_req *req);
void api_webhooks_deliveries(struct http_req *req);
void api_webhooks_resend(struct http_req *req);
/* audit */
void api_audit_list(struct http_req *req);
/* enrolment and agents */
void api_enroll_tokens_create(struct http_req *req);
void api_enroll_tokens_list(struct http_req *req);
void api_enroll_tokens_revoke(struct http_req *req);
void api_pool_enroll_tokens_create(struct http_req *req);
void api_agents_register(struct http_req *req);
void api_agents_list(struct http_req *req);
void api_agents_get(struct http_req *req);
void api_agents_disable(struct http_req *req);
void api_agents_drain(struct http_req *req);
void api_agents_enable(struct http_req *req);
void api_agents_revoke(struct http_req *req);
void api_agents_delete(struct http_req *req);
void api_agent_self(struct http_req *req);
void api_agent_unregister(struct http_req *req);
void api_agent_rotate(struct http_req *req);
/* jobs */
/* Check a requirements object (of a job or a queue): the labels' shape (API_LABELS_MAX),
 * except that min_free_memory_mb and min_free_disk_mb are integers 0..2^31. On failure fills field
 * (named from field_prefix, e.g. "requirements.min_free_memory_mb") and detail, returns -EINVAL. */
int api_jobs_check_requirements(const json_t *reqs, const char *field_prefix, char *field,
                                size_t flen, char *detail, size_t dlen);
/* Check one job object as POST /jobs takes it (the member table, command or package,
 * args/env/params as the agent holds them, requirements). On failure fills field (prefixed
 * by prefix: "jobs[3].", "job.") and detail, and returns -EINVAL. */
int api_jobs_check(const json_t *job, const char *prefix, char *field, size_t flen, char *detail,
                   size_t dlen);
/* Insert one job, checked by api_jobs_check(), in tx (a tenant's scope): POST /jobs' one
 * path into the jobs table, which the scheduler's firings take too. *id_out gets the new
 * (or, for a repeated idempotency key, the existing) job id and *created whether it is
 * new. A queue named by the job supplies the default priority and requirements (the job's
 * own requirements win). On a fault of the job (no such queue or package) fills field and
 * detail. Returns 0 or < 0. */
int api_jobs_insert(struct store_tx *tx, const json_t *job, char id_out[ID_STR_LEN], bool *created,
                    char *field, size_t flen, char *detail, size_t dlen, const char *prefix);
void api_jobs_submit(struct http_req *req);
void api_jobs_submit_batch(struct http_req *req);
void api_jobs_list(struct http_req *req);
void api_jobs_get(struct http_req *req);
void api_jobs_cancel(struct http_req *req);
/* POST /jobs/{id}/retry: a finished job submitted again as a new job (docs/api.md). */
void api_jobs_retry(struct http_req *req);
void api_jobs_logs(struct http_req *req);
/* schedules (api-schedules.c) */
void api_schedules_list(struct http_req *req);
void api_schedules_create(struct http_req *req);
void api_schedules_get(struct http_req *req);
void api_schedules_update(struct http_req *req);
void api_schedules_delete(struct http_req *req);
/* the admin console (api-console.c): its files, and the live events it shows (api-events.c) */
void api_console_root(struct http_req *req);
void api_console_index(struct http_req *req);
void api_console_asset(struct http_req *req);
void api_events_stream(struct http_req *req);
/* the jobs' figures for charts (api-stats.c) */
void api_stats_jobs(struct http_req *req);
/* the agent protocol (docs/agent-protocol.md) */
void api_agent_heartbeat(struct http_req *req);
void api_agent_job_started(struct http_req *req);
void api_agent_job_logs(struct http_req *req);
void api_agent_job_result(struct http_req *req);
/* POST /api/v1/agent/sync: heartbeat, reports and the long-poll in one exchange. */
void api_agent_sync(struct http_req *req);

/* package references and channels (api-package-refs.c, docs/packages.md) */
/* The package the reference ref names (name@version|latest|<channel>|sha256:<hex>), in tx
 * (a tenant's scope). 0 with id_out filled; -EINVAL with detail saying why (bad syntax, no
 * such name, version, channel or digest); or a store error. */
int api_package_ref_resolve(struct store_tx *tx, const char *ref, char id_out[ID_STR_LEN],
                            char *detail, size_t dlen);
/* Whether anything holds the package version package_id: jobs that may still run it,
 * schedules whose reference resolves to it (not through @latest), channels pointing at it.
 * 1 with detail naming them, 0 when nothing does, or a store error. */
int api_package_refs_holding(struct store_tx *tx, const char *package_id, char *detail,
                             size_t dlen);
void api_package_channels_list(struct http_req *req);
void api_package_channel_put(struct http_req *req);
void api_package_channel_delete(struct http_req *req);

/* package deployments (api-deployments.c, docs/packages.md "Deploying a version to agents") */
void api_deployments_create(struct http_req *req);
void api_deployments_list(struct http_req *req);
void api_deployments_get(struct http_req *req);
void api_deployments_targets(struct http_req *req);
void api_deployments_cancel(struct http_req *req);
