/* api-routes.c: every route of the REST API, in one table. proto/openapi.yaml describes
 * exactly these (tests/api/test-openapi.py checks both ways). */
#include "server/api.h"
#include "server/gateway.h"

#include "common/cleanup.h"
#include "proto/agent.h"

#define V1 "/api/v1"

const struct http_route api_routes[] = {
    {HTTP_GET, "/healthz", HTTP_AUTH_NONE, api_healthz, 0, 0},
    {HTTP_GET, "/readyz", HTTP_AUTH_NONE, api_readyz, 0, 0},

    {HTTP_POST, V1 "/auth/token", HTTP_AUTH_NONE, api_auth_token, 4096, 0},
    {HTTP_POST, V1 "/auth/refresh", HTTP_AUTH_ANY, api_auth_refresh, 0, 0},

    {HTTP_GET, V1 "/tenants", HTTP_AUTH_PLATFORM, api_tenants_list, 0, 0},
    {HTTP_POST, V1 "/tenants", HTTP_AUTH_PLATFORM, api_tenants_create, 0, 0},
    {HTTP_GET, V1 "/tenants/{id}", HTTP_AUTH_PLATFORM, api_tenants_get, 0, 0},
    {HTTP_PATCH, V1 "/tenants/{id}", HTTP_AUTH_PLATFORM, api_tenants_update, 0, 0},
    {HTTP_DELETE, V1 "/tenants/{id}", HTTP_AUTH_PLATFORM, api_tenants_delete, 0, 0},
    {HTTP_POST, V1 "/tenants/{id}/api-keys", HTTP_AUTH_PLATFORM, api_keys_create_for_tenant, 0, 0},

    {HTTP_GET, V1 "/pools", HTTP_AUTH_PLATFORM, api_pools_list, 0, 0},
    {HTTP_POST, V1 "/pools", HTTP_AUTH_PLATFORM, api_pools_create, 0, 0},
    {HTTP_GET, V1 "/pools/{id}", HTTP_AUTH_PLATFORM, api_pools_get, 0, 0},
    {HTTP_PATCH, V1 "/pools/{id}", HTTP_AUTH_PLATFORM, api_pools_update, 0, 0},
    {HTTP_DELETE, V1 "/pools/{id}", HTTP_AUTH_PLATFORM, api_pools_delete, 0, 0},
    {HTTP_POST, V1 "/pools/{id}/enrollment-tokens", HTTP_AUTH_PLATFORM,
     api_pool_enroll_tokens_create, 0, 0},

    {HTTP_GET, V1 "/tenant", HTTP_AUTH_TENANT_VIEWER, api_tenant_self, 0, 0},

    {HTTP_GET, V1 "/api-keys", HTTP_AUTH_TENANT_ADMIN, api_keys_list, 0, 0},
    {HTTP_POST, V1 "/api-keys", HTTP_AUTH_TENANT_ADMIN, api_keys_create, 0, 0},
    {HTTP_DELETE, V1 "/api-keys/{id}", HTTP_AUTH_TENANT_ADMIN, api_keys_revoke, 0, 0},

    {HTTP_GET, V1 "/packages", HTTP_AUTH_TENANT_VIEWER, api_packages_list, 0, 0},
    {HTTP_POST, V1 "/packages", HTTP_AUTH_TENANT_OPERATOR, api_packages_create,
     PACKAGE_SINGLE_MAX_BYTES, PACKAGE_UPLOAD_TIMEOUT_MS},
    /* Deployments (api-deployments.c, docs/packages.md): before /packages/{id}, which the
     * first-match router would otherwise take "deployments" for. */
    {HTTP_POST, V1 "/packages/deployments", HTTP_AUTH_TENANT_OPERATOR, api_deployments_create,
     16384, 0},
    {HTTP_GET, V1 "/packages/deployments", HTTP_AUTH_TENANT_VIEWER, api_deployments_list, 0, 0},
    {HTTP_GET, V1 "/packages/deployments/{id}", HTTP_AUTH_TENANT_VIEWER, api_deployments_get, 0, 0},
    {HTTP_GET, V1 "/packages/deployments/{id}/targets", HTTP_AUTH_TENANT_VIEWER,
     api_deployments_targets, 0, 0},
    {HTTP_DELETE, V1 "/packages/deployments/{id}", HTTP_AUTH_TENANT_OPERATOR,
     api_deployments_cancel, 0, 0},
    {HTTP_GET, V1 "/packages/{id}", HTTP_AUTH_TENANT_VIEWER, api_packages_get, 0, 0},
    {HTTP_GET, V1 "/packages/{id}/content", HTTP_AUTH_TENANT_VIEWER, api_packages_content, 0, 0},
    {HTTP_DELETE, V1 "/packages/{id}", HTTP_AUTH_TENANT_OPERATOR, api_packages_delete, 0, 0},
    {HTTP_GET, V1 "/queues", HTTP_AUTH_TENANT_VIEWER, api_queues_list, 0, 0},
    {HTTP_POST, V1 "/queues", HTTP_AUTH_TENANT_OPERATOR, api_queues_create, 0, 0},
    {HTTP_GET, V1 "/queues/{id}", HTTP_AUTH_TENANT_VIEWER, api_queues_get, 0, 0},
    {HTTP_PATCH, V1 "/queues/{id}", HTTP_AUTH_TENANT_OPERATOR, api_queues_update, 0, 0},
    {HTTP_DELETE, V1 "/queues/{id}", HTTP_AUTH_TENANT_OPERATOR, api_queues_delete, 0, 0},

    {HTTP_GET, V1 "/schedules", HTTP_AUTH_TENANT_VIEWER, api_schedules_list, 0, 0},
    {HTTP_POST, V1 "/schedules", HTTP_AUTH_TENANT_OPERATOR, api_schedules_create, 256 * 1024, 0},
    {HTTP_GET, V1 "/schedules/{id}", HTTP_AUTH_TENANT_VIEWER, api_schedules_get, 0, 0},
    {HTTP_PATCH, V1 "/schedules/{id}", HTTP_AUTH_TENANT_OPERATOR, api_schedules_update, 256 * 1024,
     0},
    {HTTP_DELETE, V1 "/schedules/{id}", HTTP_AUTH_TENANT_OPERATOR, api_schedules_delete, 0, 0},
    {HTTP_GET, V1 "/webhooks", HTTP_AUTH_ANY, api_webhooks_list, 0, 0},
    {HTTP_POST, V1 "/webhooks", HTTP_AUTH_ADMIN_OR_PLATFORM, api_webhooks_create, 16384, 0},
    {HTTP_GET, V1 "/webhooks/{id}", HTTP_AUTH_ANY, api_webhooks_get, 0, 0},
    {HTTP_PATCH, V1 "/webhooks/{id}", HTTP_AUTH_ADMIN_OR_PLATFORM, api_webhooks_update, 16384, 0},
    {HTTP_DELETE, V1 "/webhooks/{id}", HTTP_AUTH_ADMIN_OR_PLATFORM, api_webhooks_delete, 0, 0},
    {HTTP_GET, V1 "/webhooks/{id}/deliveries", HTTP_AUTH_ANY, api_webhooks_deliveries, 0, 0},
    {HTTP_POST, V1 "/webhooks/{id}/deliveries/{delivery_id}/resend", HTTP_AUTH_ADMIN_OR_PLATFORM,
     api_webhooks_resend, 0, 0},

    {HTTP_GET, V1 "/audit", HTTP_AUTH_ADMIN_OR_PLATFORM, api_audit_list, 0, 0},

    {HTTP_GET, V1 "/enrollment-tokens", HTTP_AUTH_TENANT_ADMIN, api_enroll_tokens_list, 0, 0},
    {HTTP_POST, V1 "/enrollment-tokens", HTTP_AUTH_TENANT_ADMIN, api_enroll_tokens_create, 0, 0},
    {HTTP_DELETE, V1 "/enrollment-tokens/{id}", HTTP_AUTH_TENANT_ADMIN, api_enroll_tokens_revoke, 0,
     0},

    {HTTP_POST, PROTO_AGENT_PATH_REGISTER, HTTP_AUTH_NONE, api_agents_register, 0, 0},
    {HTTP_GET, V1 "/agents", HTTP_AUTH_TENANT_VIEWER, api_agents_list, 0, 0},
    {HTTP_GET, V1 "/agents/{id}", HTTP_AUTH_TENANT_VIEWER, api_agents_get, 0, 0},
    {HTTP_DELETE, V1 "/agents/{id}", HTTP_AUTH_TENANT_ADMIN, api_agents_delete, 0, 0},
    {HTTP_POST, V1 "/agents/{id}/disable", HTTP_AUTH_TENANT_OPERATOR, api_agents_disable, 0, 0},
    {HTTP_POST, V1 "/agents/{id}/enable", HTTP_AUTH_TENANT_OPERATOR, api_agents_enable, 0, 0},
    {HTTP_POST, V1 "/agents/{id}/drain", HTTP_AUTH_TENANT_OPERATOR, api_agents_drain, 0, 0},
    {HTTP_POST, V1 "/agents/{id}/revoke-credential", HTTP_AUTH_TENANT_ADMIN, api_agents_revoke, 0,
     0},

    {HTTP_GET, PROTO_AGENT_PATH_SELF, HTTP_AUTH_AGENT, api_agent_self, 0, 0},
    {HTTP_DELETE, PROTO_AGENT_PATH_SELF, HTTP_AUTH_AGENT, api_agent_unregister, 0, 0},
    {HTTP_POST, PROTO_AGENT_PATH_ROTATE, HTTP_AUTH_AGENT, api_agent_rotate, 0, 0},

    {HTTP_POST, PROTO_AGENT_PATH_HEARTBEAT, HTTP_AUTH_AGENT, api_agent_heartbeat,
     PROTO_HEARTBEAT_BODY_MAX, 0},
    {HTTP_GET, PROTO_AGENT_PATH_ASSIGNMENTS, HTTP_AUTH_AGENT, gateway_poll, 0, 0},
    {HTTP_POST, PROTO_AGENT_PATH_SYNC, HTTP_AUTH_AGENT, api_agent_sync, PROTO_SYNC_BODY_MAX, 0},
    {HTTP_GET, PROTO_AGENT_PATH_PACKAGE, HTTP_AUTH_AGENT, api_packages_content, 0, 0},
    {HTTP_POST, PROTO_AGENT_PATH_STARTED, HTTP_AUTH_AGENT, api_agent_job_started, 0, 0},
    {HTTP_POST, PROTO_AGENT_PATH_LOGS, HTTP_AUTH_AGENT, api_agent_job_logs, PROTO_LOGS_BODY_MAX, 0},
    {HTTP_POST, PROTO_AGENT_PATH_RESULT, HTTP_AUTH_AGENT, api_agent_job_result,
     PROTO_RESULT_BODY_MAX, 0},

    {HTTP_GET, V1 "/jobs", HTTP_AUTH_TENANT_VIEWER, api_jobs_list, 0, 0},
    {HTTP_POST, V1 "/jobs", HTTP_AUTH_TENANT_OPERATOR, api_jobs_submit, 256 * 1024, 0},
    {HTTP_POST, V1 "/jobs/batch", HTTP_AUTH_TENANT_OPERATOR, api_jobs_submit_batch, 8 * 1024 * 1024,
     0},
    {HTTP_GET, V1 "/jobs/{id}", HTTP_AUTH_TENANT_VIEWER, api_jobs_get, 0, 0},
    {HTTP_POST, V1 "/jobs/{id}/cancel", HTTP_AUTH_TENANT_OPERATOR, api_jobs_cancel, 0, 0},
    {HTTP_GET, V1 "/jobs/{id}/logs", HTTP_AUTH_TENANT_VIEWER, api_jobs_logs, 0, 0},

    {HTTP_GET, V1 "/scaling/signals", HTTP_AUTH_ANY, api_scaling_signals, 0, 0},
    {HTTP_GET, V1 "/scaling/policies", HTTP_AUTH_ANY, api_scaling_policies_list, 0, 0},
    {HTTP_POST, V1 "/scaling/policies", HTTP_AUTH_ADMIN_OR_PLATFORM, api_scaling_policies_create,
     16384, 0},
    {HTTP_GET, V1 "/scaling/policies/{id}", HTTP_AUTH_ANY, api_scaling_policies_get, 0, 0},
    {HTTP_PATCH, V1 "/scaling/policies/{id}", HTTP_AUTH_ADMIN_OR_PLATFORM,
     api_scaling_policies_update, 16384, 0},
    {HTTP_DELETE, V1 "/scaling/policies/{id}", HTTP_AUTH_ADMIN_OR_PLATFORM,
     api_scaling_policies_delete, 0, 0},
    {HTTP_GET, V1 "/scaling/policies/{id}/history", HTTP_AUTH_ANY, api_scaling_policies_history, 0,
     0},

    /* Packages uploaded in parts (docs/packages.md, "Storage and upload"). */
    {HTTP_POST, V1 "/packages/uploads", HTTP_AUTH_TENANT_OPERATOR, api_packages_upload_create, 4096,
     0},
    {HTTP_GET, V1 "/packages/uploads/{id}", HTTP_AUTH_TENANT_OPERATOR, api_packages_upload_get, 0,
     0},
    {HTTP_PATCH, V1 "/packages/uploads/{id}", HTTP_AUTH_TENANT_OPERATOR, api_packages_upload_part,
     PACKAGE_PART_MAX_BYTES, PACKAGE_UPLOAD_TIMEOUT_MS},
    {HTTP_POST, V1 "/packages/uploads/{id}/commit", HTTP_AUTH_TENANT_OPERATOR,
     api_packages_upload_commit, 0, 0},
    {HTTP_DELETE, V1 "/packages/uploads/{id}", HTTP_AUTH_TENANT_OPERATOR,
     api_packages_upload_delete, 0, 0},

    /* The admin console (docs/console.md): its files, outside the API (not in openapi.yaml),
     * and the live events it shows. */
    {HTTP_GET, "/console", HTTP_AUTH_NONE, api_console_root, 0, 0},
    {HTTP_GET, "/console/", HTTP_AUTH_NONE, api_console_index, 0, 0},
    {HTTP_GET, "/console/{asset}", HTTP_AUTH_NONE, api_console_asset, 0, 0},
    {HTTP_GET, V1 "/events", HTTP_AUTH_TENANT_VIEWER, api_events_stream, 0, 0},

    /* The console's retry (issue 12): a finished job submitted again. */
    {HTTP_POST, V1 "/jobs/{id}/retry", HTTP_AUTH_TENANT_OPERATOR, api_jobs_retry, 0, 0},

    /* The figures of the console's overview (api-stats.c). */
    {HTTP_GET, V1 "/stats/jobs", HTTP_AUTH_ANY, api_stats_jobs, 0, 0},

    /* A package's channels (docs/packages.md, "References and channels"). */
    {HTTP_GET, V1 "/packages/{name}/channels", HTTP_AUTH_TENANT_VIEWER, api_package_channels_list,
     0, 0},
    {HTTP_PUT, V1 "/packages/{name}/channels/{channel}", HTTP_AUTH_TENANT_OPERATOR,
     api_package_channel_put, 4096, 0},
    {HTTP_DELETE, V1 "/packages/{name}/channels/{channel}", HTTP_AUTH_TENANT_OPERATOR,
     api_package_channel_delete, 0, 0},
};

const size_t api_nroutes = ELEMENTSOF(api_routes);
