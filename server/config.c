/* config.c: the table of orchd's configuration keys. Adding a key is one line here; the
 * loader, the environment overrides, the error messages and `orchd config` follow. */
#include "server/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proto/bus.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define F(field) offsetof(struct orchd_config, field)

const struct conf_field orchd_config_fields[] = {
    {"db.url", CONF_STRING, F(db_url), 1, 4096, "postgresql://orch_app@127.0.0.1:5432/orch", NULL,
     "PostgreSQL connection of the application role (no BYPASSRLS, owns no table)"},
    {"db.system_url", CONF_STRING, F(db_system_url), 0, 4096, "", NULL,
     "PostgreSQL connection of the system role orch_system, for cross-tenant work (dispatcher, "
     "reaper, credential lookup, operator API); required by serve"},
    {"db.migrate_url", CONF_STRING, F(db_migrate_url), 0, 4096, "", NULL,
     "PostgreSQL connection of the schema owner, used by `orchd migrate` (default: db.url)"},
    {"db.pool_size", CONF_INT, F(db_pool_size), 1, 1000, "16", NULL,
     "connections at most in each pool (tenant and system)"},
    {"db.connect_timeout", CONF_DURATION, F(db_connect_timeout_ms), 100, 300000, "5s", NULL,
     "time to establish one connection"},
    {"db.acquire_timeout", CONF_DURATION, F(db_acquire_timeout_ms), 1, 300000, "5s", NULL,
     "time to wait for a free pooled connection"},
    {"db.statement_timeout", CONF_DURATION, F(db_statement_timeout_ms), 0, 3600000, "30s", NULL,
     "longest a statement may run (0 = no limit)"},
    {"amqp.url", CONF_STRING, F(amqp_url), 1, 4096, "amqp://guest:guest@127.0.0.1:5672/", NULL,
     "RabbitMQ connection"},
    {"log.level", CONF_ENUM, F(log_level), 0, 0, "info", log_levels,
     "least severe level logged: debug, info, warn or error"},
    {"bus.jobs_queue", CONF_STRING, F(bus_jobs_queue), 1, 200, PROTO_BUS_JOBS_QUEUE, NULL,
     "RabbitMQ quorum queue announcing submitted jobs to the dispatchers"},
    {"bus.publish_timeout", CONF_DURATION, F(bus_publish_timeout_ms), 100, 60000, "5s", NULL,
     "longest wait for RabbitMQ's publisher confirm"},
    {"agent.heartbeat_interval", CONF_DURATION, F(agent_heartbeat_ms), 1000, 300000, "10s", NULL,
     "how often agents send a heartbeat (told to them in each answer)"},
    {"agent.lease", CONF_DURATION, F(agent_lease_ms), 3000, 3600000, "30s", NULL,
     "an agent silent this long loses its jobs, which are retried elsewhere"},
    {"agent.online_window", CONF_DURATION, F(agent_online_ms), 2000, 3600000, "50s", NULL,
     "an agent is offline (gets no new jobs) when silent this long; an idle agent's "
     "liveness is rewritten once it is this long less 1.5 heartbeat intervals and 2 s old"},
    {"agent.commit_threads", CONF_INT, F(agent_commit_threads), 0, 64, "2", NULL,
     "threads committing agents' heartbeats and reports in shared transactions "
     "(0 = each exchange commits alone on its event loop)"},
    {"agent.batch_window_us", CONF_INT, F(agent_batch_window_us), 0, 100000, "0", NULL,
     "microseconds a committer waits for more agents' exchanges before it commits "
     "(0 = only those that came while the previous commit ran)"},
    {"agent.batch_max", CONF_INT, F(agent_batch_max), 1, 4096, "128", NULL,
     "agents' exchanges at most in one shared transaction"},
    {"dispatch.enabled", CONF_BOOL, F(dispatch_enabled), 0, 0, "true", NULL,
     "false: no dispatcher on this node whatever node.roles says (the older spelling)"},
    {"dispatch.exclusive", CONF_BOOL, F(dispatch_exclusive), 0, 0, "true", NULL,
     "one node's dispatcher places at a time (false: every node's, contending)"},
    {"dispatch.tick", CONF_DURATION, F(dispatch_tick_ms), 10, 10000, "250ms", NULL,
     "longest wait between dispatch rounds when no submission wakes the dispatcher"},
    {"dispatch.aging", CONF_DURATION, F(dispatch_aging_ms), 0, 86400000, "60s", NULL,
     "a waiting job gains one priority step per this much waited (0 = strict priority)"},
    {"dispatch.batch", CONF_INT, F(dispatch_batch), 1, 10000, "256", NULL,
     "placements decided in one assign_batch() transaction"},
    {"dispatch.refresh", CONF_DURATION, F(dispatch_refresh_ms), 50, 60000, "1s", NULL,
     "how often the dispatcher rereads agents, tenants and queues (and at once on a kick)"},
    {"dispatch.resync", CONF_DURATION, F(dispatch_resync_ms), 1000, 3600000, "30s", NULL,
     "how often the dispatcher rebuilds its whole index from PostgreSQL"},
    {"gateway.max_waiters", CONF_INT, F(gateway_max_waiters), 1, 1048576, "65536", NULL,
     "long-polls one node holds at once; past it agents are told 503 and retry later"},
    {"node.name", CONF_STRING, F(node_name), 1, 64, "orchd", NULL,
     "this node's name in logs and the audit trail"},
    {"node.roles", CONF_STRING, F(node_roles), 1, 200,
     "api,gateway,dispatcher,reaper,webhooks,scheduler", NULL,
     "what this node runs, comma-separated: api (the HTTP server), gateway (agents' "
     "long-polls; needs api), dispatcher, reaper, webhooks (event deliveries), "
     "scheduler (fires cron schedules)"},
    {"http.address", CONF_STRING, F(http_address), 1, 64, "127.0.0.1", NULL,
     "listen address (0.0.0.0 or :: for all)"},
    {"http.port", CONF_INT, F(http_port), 0, 65535, "8443", NULL, "listen port (0 = any free)"},
    {"http.threads", CONF_INT, F(http_threads), 0, 256, "0", NULL,
     "event loops, each on its own thread (0 = one per core)"},
    {"http.cert_file", CONF_STRING, F(http_cert_file), 0, 4096, "", NULL,
     "TLS certificate chain, PEM (empty = plain HTTP, for tests only)"},
    {"http.key_file", CONF_STRING, F(http_key_file), 0, 4096, "", NULL, "TLS private key, PEM"},
    {"http.max_header_bytes", CONF_SIZE, F(http_max_header_bytes), 1024, 1048576, "16k", NULL,
     "largest request line plus headers"},
    {"http.max_body_bytes", CONF_SIZE, F(http_max_body_bytes), 1048576, 1073741824, "16M", NULL,
     "hard cap on a request body (routes have lower limits of their own)"},
    {"http.timeout", CONF_DURATION, F(http_timeout_ms), 1000, 3600000, "30s", NULL,
     "read and write timeout of a connection (restarts on each byte); also how long a "
     "kept-alive connection may idle between requests"},
    {"http.request_timeout", CONF_DURATION, F(http_request_timeout_ms), 100, 3600000, "10s", NULL,
     "whole-request deadline: a request's headers and body must arrive within it (the TLS "
     "handshake too, for a connection's first request); package uploads get 10 minutes"},
    {"http.max_connections", CONF_INT, F(http_max_connections), 1, 1000000, "4096", NULL,
     "open connections in total; past it a new connection gets 503 (plain HTTP) or is closed "
     "(TLS)"},
    {"http.max_connections_per_address", CONF_INT, F(http_max_connections_per_address), 1, 1000000,
     "256", NULL,
     "open connections from one client address; past it 429 (plain HTTP) or closed (TLS); "
     "raise it when many agents share one NAT or proxy address"},
    {"packages.cache_bytes", CONF_SIZE, F(packages_cache_bytes), 0, (int64_t)1 << 40, "256M", NULL,
     "package archives kept in memory for the agents fetching them (0 = none)"},
    {"packages.max_bytes", CONF_SIZE, F(packages_max_bytes), 1024, (int64_t)1 << 40, "1G", NULL,
     "the largest package archive, uploaded in parts (POST /api/v1/packages/uploads)"},
    {"packages.single_upload_max_bytes", CONF_SIZE, F(packages_single_max_bytes), 1024,
     64 * 1024 * 1024, "15M", NULL,
     "the largest archive uploaded in one request (POST /api/v1/packages); also bounded by "
     "http.max_body_bytes"},
    {"packages.upload_ttl", CONF_DURATION, F(packages_upload_ttl_ms), 1000, (int64_t)720 * 3600000,
     "24h", NULL,
     "how long an upload session may stay unfinished before it and its parts are removed"},
    {"packages.gc_interval", CONF_DURATION, F(packages_gc_interval_ms), 100, 86400000, "60s", NULL,
     "how often the collector removes expired uploads and package bytes nothing names"},
    {"packages.gc_grace", CONF_DURATION, F(packages_gc_grace_ms), 0, 86400000, "10m", NULL,
     "package bytes nothing names are removed once this old (a publication in progress "
     "names them moments later)"},
    {"scheduler.clock_offset", CONF_DURATION, F(sched_clock_offset_ms), 0, (int64_t)366 * 86400000,
     "0s", NULL,
     "a test aid: the scheduler acts as if the time were this much later (never set it in "
     "production; docs/scheduling.md)"},
    {"logs.retention", CONF_DURATION, F(logs_retention_ms), 0, (int64_t)87600 * 3600000, "720h",
     NULL, "how long the output of a finished job is kept, e.g. 720h = 30 days (0 = forever)"},
    {"metrics.address", CONF_STRING, F(metrics_address), 1, 64, "127.0.0.1", NULL,
     "listen address of the Prometheus /metrics listener: keep it on loopback or a "
     "management network, it has no authentication (docs/operations.md, Metrics)"},
    {"metrics.port", CONF_INT, F(metrics_port), -1, 65535, "-1", NULL,
     "port of the /metrics listener (plain HTTP; -1 = none, 0 = any free port)"},
    {"auth.key_dir", CONF_STRING, F(auth_key_dir), 1, 4096, "/var/lib/orchd/keys", NULL,
     "directory of ES256 token signing keys (<kid>.pem, mode 0600; `orchd admin gen-key`)"},
    {"auth.issuer", CONF_STRING, F(auth_issuer), 1, 256, "orch", NULL, "JWT issuer (iss)"},
    {"auth.audience", CONF_STRING, F(auth_audience), 1, 256, "orch-api", NULL,
     "JWT audience (aud)"},
    {"auth.token_ttl", CONF_DURATION, F(auth_token_ttl_ms), 60000, 86400000, "15m", NULL,
     "lifetime of access tokens"},
    {"auth.leeway", CONF_DURATION, F(auth_leeway_ms), 0, 300000, "30s", NULL,
     "clock skew tolerated when checking exp and nbf"},
    {"auth.cache_ttl", CONF_DURATION, F(auth_cache_ttl_ms), 0, 60000, "2s", NULL,
     "how long a node trusts what it read about an API key and its tenant (revoked, suspended, "
     "quotas) before reading it again; revocations and suspensions also reach every node over "
     "the bus at once; 0 = read on every request"},
    {"auth.quota_block", CONF_INT, F(auth_quota_block), 1, 100000, "100", NULL,
     "largest block of daily API calls a node reserves for a tenant at once"},
    {"auth.agent_cache_ttl", CONF_DURATION, F(auth_agent_cache_ttl_ms), 0, 600000, "30s", NULL,
     "how long a node trusts what it read about an agent credential (revoked, expired, agent "
     "disabled, tenant suspended) before reading it again; those changes also reach every node "
     "over the bus at once; 0 = read on every agent request"},
    {"auth.agent_cache_max", CONF_INT, F(auth_agent_cache_max), 1, 10000000, "200000", NULL,
     "most agent credentials a node remembers (about 250 bytes each)"},
    {"webhooks.allow_private", CONF_BOOL, F(webhooks_allow_private), 0, 0, "false", NULL,
     "allow webhook URLs that resolve to loopback, private, link-local or other non-public "
     "addresses (server-side request forgery: leave false unless every tenant is trusted)"},
    {"webhooks.key_file", CONF_STRING, F(webhooks_key_file), 0, 4096, "", NULL,
     "32-byte key sealing webhook signing secrets (AES-256-GCM), created mode 0600 when "
     "absent; empty = <auth.key_dir>/webhooks.key; every node needs the same one"},
    {"webhooks.workers", CONF_INT, F(webhooks_workers), 1, 256, "4", NULL,
     "webhook deliveries one node makes at once (the webhooks role)"},
    {"webhooks.max_attempts", CONF_INT, F(webhooks_max_attempts), 1, 100, "8", NULL,
     "attempts of one delivery before it is marked failed"},
    {"webhooks.retry_base", CONF_DURATION, F(webhooks_retry_base_ms), 1, 3600000, "30s", NULL,
     "first retry within this; each later one within twice the previous (full jitter)"},
    {"webhooks.retry_max", CONF_DURATION, F(webhooks_retry_max_ms), 1, 86400000, "1h", NULL,
     "longest wait between two attempts of a delivery"},
    {"webhooks.poll", CONF_DURATION, F(webhooks_poll_ms), 10, 60000, "1s", NULL,
     "longest wait of an idle delivery worker before it looks for due deliveries again"},
    {"webhooks.timeout", CONF_DURATION, F(webhooks_timeout_ms), 1000, 60000, "10s", NULL,
     "one delivery attempt in total (connecting: at most 5s of it)"},
    {"webhooks.retention", CONF_DURATION, F(webhooks_retention_ms), 0, (int64_t)87600 * 3600000,
     "720h", NULL,
     "how long a succeeded or failed delivery stays in the delivery log (0 = forever)"},
    {"webhooks.ca_file", CONF_STRING, F(webhooks_ca_file), 0, 4096, "", NULL,
     "CA certificates (PEM) that webhook endpoints' certificates must chain to (empty = the "
     "system's)"},
    {"scaling.interval", CONF_DURATION, F(scaling_interval_ms), 100, 3600000, "10s", NULL,
     "how often the scheduler role evaluates the scaling policies (docs/operations.md, "
     "Scaling policies)"},
};

const size_t orchd_config_nfields = sizeof(orchd_config_fields) / sizeof(orchd_config_fields[0]);

const char *const node_role_names[NODE_ROLE__COUNT] = {
    [NODE_ROLE_API] = "api",
    [NODE_ROLE_GATEWAY] = "gateway",
    [NODE_ROLE_DISPATCHER] = "dispatcher",
    [NODE_ROLE_REAPER] = "reaper",
    [NODE_ROLE_WEBHOOKS] = "webhooks",
    [NODE_ROLE_SCHEDULER] = "scheduler",
};

/* node.roles into cfg->node_roles_mask. Returns 0 or -EINVAL with err filled. */
static int parse_roles(struct orchd_config *cfg, struct conf_error *err)
{
    unsigned mask = 0;
    const char *p = cfg->node_roles;
    while (*p) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n == 0)
            break;
        int role = -1;
        for (int i = 0; i < NODE_ROLE__COUNT && role < 0; i++)
            if (strlen(node_role_names[i]) == n && strncmp(p, node_role_names[i], n) == 0)
                role = i;
        if (role < 0) {
            snprintf(err->msg, sizeof(err->msg),
                     "config: key 'node.roles': unknown role '%.*s' (expected api, gateway, "
                     "dispatcher, reaper, webhooks, scheduler)",
                     (int)(n > 64 ? 64 : n), p);
            return -EINVAL;
        }
        mask |= 1u << role;
        p += n;
    }
    if (mask == 0) {
        snprintf(err->msg, sizeof(err->msg), "config: key 'node.roles': no role given");
        return -EINVAL;
    }
    if ((mask & (1u << NODE_ROLE_GATEWAY)) && !(mask & (1u << NODE_ROLE_API))) {
        snprintf(err->msg, sizeof(err->msg),
                 "config: key 'node.roles': gateway needs api (agents reach it over HTTP)");
        return -EINVAL;
    }
    if (!cfg->dispatch_enabled)
        mask &= ~(1u << NODE_ROLE_DISPATCHER);
    cfg->node_roles_mask = mask;
    return 0;
}

int orchd_config_load(struct orchd_config *cfg, const char *path, struct conf_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    int r = conf_load(orchd_config_fields, orchd_config_nfields, cfg, path, "ORCHD", err);
    if (r < 0)
        return r;
    r = parse_roles(cfg, err);
    if (r < 0)
        orchd_config_free(cfg);
    return r;
}

bool orchd_config_has_role(const struct orchd_config *cfg, enum node_role role)
{
    return (cfg->node_roles_mask & (1u << role)) != 0;
}

int orchd_config_require_system(const struct orchd_config *cfg, char *err, size_t errlen)
{
    if (cfg->db_system_url && cfg->db_system_url[0])
        return 0;
    /* No fallback to db.url: the system scope is a role of its own, or nothing. */
    snprintf(err, errlen,
             "db.system_url is not set (ORCHD_DB_SYSTEM_URL): orchd's cross-tenant work needs "
             "a connection as the role orch_system; see docs/operations.md");
    return -EINVAL;
}

void orchd_config_free(struct orchd_config *cfg)
{
    conf_free(orchd_config_fields, orchd_config_nfields, cfg);
}
