/* config.h: orchd's configuration, described by one table (config.c). Read from the file
 * named by --config (or ORCHD_CONFIG), then ORCHD_* environment variables. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/conf.h"

/* What a node runs (node.roles); started in the order of main.c's role table. */
enum node_role {
    NODE_ROLE_API,        /* the HTTP server: REST API and agent protocol */
    NODE_ROLE_GATEWAY,    /* holds agents' long-polls; batched heartbeats */
    NODE_ROLE_DISPATCHER, /* assigns queued jobs to agents */
    NODE_ROLE_REAPER,     /* expired leases, silent agents, old logs */
    NODE_ROLE_WEBHOOKS,   /* delivers event webhooks (server/webhook-deliver.c) */
    NODE_ROLE_SCHEDULER,  /* fires cron schedules (server/cron-fire.c) */
    NODE_ROLE__COUNT
};

/* The roles' names in node.roles, by enum node_role. */
extern const char *const node_role_names[NODE_ROLE__COUNT];

struct orchd_config {
    char *db_url;         /* db.url: the application role's connection (orch_app) */
    char *db_system_url;  /* db.system_url: the system role's connection (orch_system) */
    char *db_migrate_url; /* db.migrate_url: the schema owner's, for `orchd migrate` */
    int64_t db_pool_size; /* db.pool_size */
    int64_t db_connect_timeout_ms;
    int64_t db_acquire_timeout_ms;
    int64_t db_statement_timeout_ms;
    char *amqp_url;                 /* amqp.url */
    int log_level;                  /* log.level: enum log_level */
    char *bus_jobs_queue;           /* bus.jobs_queue: where submissions are announced */
    int64_t bus_publish_timeout_ms; /* bus.publish_timeout */
    int64_t agent_heartbeat_ms;     /* agent.heartbeat_interval */
    int64_t agent_lease_ms;         /* agent.lease */
    int64_t agent_online_ms;        /* agent.online_window */
    int64_t agent_commit_threads;   /* agent.commit_threads */
    int64_t agent_batch_window_us;  /* agent.batch_window_us */
    int64_t agent_batch_max;        /* agent.batch_max */
    bool dispatch_enabled;          /* dispatch.enabled: false removes the dispatcher role */
    bool dispatch_exclusive;        /* dispatch.exclusive: one leading dispatcher at a time */
    int64_t dispatch_tick_ms;       /* dispatch.tick */
    int64_t dispatch_aging_ms;      /* dispatch.aging: one priority step per this much waited */
    int64_t dispatch_batch;         /* dispatch.batch: proposals per assign_batch() */
    int64_t dispatch_refresh_ms;    /* dispatch.refresh: agents, tenants, queues reread */
    int64_t dispatch_resync_ms;     /* dispatch.resync: the whole index rebuilt */
    int64_t gateway_max_waiters;    /* gateway.max_waiters */
    char *node_name;                /* node.name: this node in logs and the audit trail */
    char *node_roles;               /* node.roles: as written, e.g. "api,gateway" */
    unsigned node_roles_mask;       /* the same parsed: bits 1u << enum node_role */

    char *http_address;   /* http.address */
    int64_t http_port;    /* http.port */
    int64_t http_threads; /* http.threads: event loops (0 = one per core) */
    char *http_cert_file; /* http.cert_file: PEM chain ("" = plain HTTP, tests only) */
    char *http_key_file;  /* http.key_file */
    int64_t http_max_header_bytes;
    int64_t http_max_body_bytes;
    int64_t packages_cache_bytes;      /* packages.cache_bytes */
    int64_t packages_max_bytes;        /* packages.max_bytes: an archive uploaded in parts */
    int64_t packages_single_max_bytes; /* packages.single_upload_max_bytes: one-request POST */
    int64_t packages_upload_ttl_ms;    /* packages.upload_ttl: an upload session's life */
    int64_t packages_gc_interval_ms;   /* packages.gc_interval: the collector's period */
    int64_t packages_gc_grace_ms;      /* packages.gc_grace: unnamed bytes kept that long */
    int64_t sched_clock_offset_ms;     /* scheduler.clock_offset: a test aid, 0 in production */
    int64_t logs_retention_ms; /* logs.retention: finished jobs' output kept (0 = forever) */
    int64_t http_timeout_ms;
    int64_t http_request_timeout_ms;          /* http.request_timeout */
    int64_t http_max_connections;             /* http.max_connections */
    int64_t http_max_connections_per_address; /* http.max_connections_per_address */

    char *metrics_address; /* metrics.address: the operators' /metrics listener */
    int64_t metrics_port;  /* metrics.port: -1 = no listener, 0 = any free port */

    char *auth_key_dir;              /* auth.key_dir: ES256 signing keys, <kid>.pem, mode 0600 */
    char *auth_issuer;               /* auth.issuer: JWT iss */
    char *auth_audience;             /* auth.audience: JWT aud */
    int64_t auth_token_ttl_ms;       /* auth.token_ttl */
    int64_t auth_leeway_ms;          /* auth.leeway: clock skew tolerated */
    int64_t auth_cache_ttl_ms;       /* auth.cache_ttl: staleness bound of server/authcache.h */
    int64_t auth_quota_block;        /* auth.quota_block: daily API calls reserved at once */
    int64_t auth_agent_cache_ttl_ms; /* auth.agent_cache_ttl: bound of server/agentcache.h */
    int64_t auth_agent_cache_max;    /* auth.agent_cache_max: agent credentials remembered */

    bool webhooks_allow_private;    /* webhooks.allow_private: skip the SSRF address rule */
    char *webhooks_key_file;        /* webhooks.key_file: "" = <auth.key_dir>/webhooks.key */
    int64_t webhooks_workers;       /* webhooks.workers: deliveries in flight per node */
    int64_t webhooks_max_attempts;  /* webhooks.max_attempts */
    int64_t webhooks_retry_base_ms; /* webhooks.retry_base */
    int64_t webhooks_retry_max_ms;  /* webhooks.retry_max */
    int64_t webhooks_poll_ms;       /* webhooks.poll */
    int64_t webhooks_timeout_ms;    /* webhooks.timeout: one attempt, in total */
    char *webhooks_ca_file;         /* webhooks.ca_file: "" = the system's CAs */
    int64_t webhooks_retention_ms;  /* webhooks.retention: ended deliveries kept (0: forever) */

    int64_t scaling_interval_ms; /* scaling.interval: scaling policies evaluated this often */
};

extern const struct conf_field orchd_config_fields[];
extern const size_t orchd_config_nfields;

/* Load defaults, the file at path (NULL: none) and the environment into cfg.
 * Returns 0 or a negative errno with err filled. Free with orchd_config_free(). */
int orchd_config_load(struct orchd_config *cfg, const char *path, struct conf_error *err);
void orchd_config_free(struct orchd_config *cfg);

/* Whether this node runs role (node.roles, less the dispatcher when dispatch.enabled is
 * false). */
bool orchd_config_has_role(const struct orchd_config *cfg, enum node_role role);

/* 0 when db.system_url is set; else -EINVAL with err saying what to set. For the commands
 * that do system-scope work (serve, admin create-token). */
int orchd_config_require_system(const struct orchd_config *cfg, char *err, size_t errlen);
