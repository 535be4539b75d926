-- 0010_scheduling: what the placement engine reads (server/placement.c, server/dispatcher.c).
--
-- Fairness: a tenant's weight when tenants compete for dispatcher capacity and for shared
-- agents is its tier's (tier_defaults.weight), overridable per tenant like the quotas.
-- Queues get a concurrency limit of their own. Agents report free memory and disk and CPU
-- use in their heartbeats; the gateway's batched liveness write keeps them here, so that a
-- job's minimum free memory or disk can be checked by any dispatching node. Pools: agents
-- the operator enrols for the platform, shared by several tenants (by tier or by an
-- allow-list) with capacity shared by weight.

ALTER TABLE tenants ADD COLUMN weight int CHECK (weight BETWEEN 1 AND 1000);

CREATE OR REPLACE VIEW tenant_quotas WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, t.tier,
       coalesce(t.max_agents, d.max_agents) AS max_agents,
       coalesce(t.max_concurrent_jobs, d.max_concurrent_jobs) AS max_concurrent_jobs,
       coalesce(t.max_schedules, d.max_schedules) AS max_schedules,
       coalesce(t.max_queues, d.max_queues) AS max_queues,
       coalesce(t.max_storage_bytes, d.max_storage_bytes) AS max_storage_bytes,
       coalesce(t.max_api_calls_day, d.max_api_calls_day) AS max_api_calls_day,
       coalesce(t.weight, d.weight) AS weight,
       coalesce(t.max_job_log_bytes, d.max_job_log_bytes) AS max_job_log_bytes
  FROM tenants t JOIN tier_defaults d ON d.tier = t.tier;

-- At most this many of the queue's jobs assigned or running at once (NULL = no limit
-- but the tenant's).
ALTER TABLE queues ADD COLUMN max_running int CHECK (max_running BETWEEN 1 AND 100000);
CREATE INDEX jobs_active_queue ON jobs (queue_id)
    WHERE status IN ('assigned', 'running') AND queue_id IS NOT NULL;

-- The host's state from its last heartbeats (NULL = not reported yet).
ALTER TABLE agents
    ADD COLUMN memory_free_bytes bigint CHECK (memory_free_bytes >= 0),
    ADD COLUMN disk_free_bytes   bigint CHECK (disk_free_bytes >= 0),
    ADD COLUMN cpu_percent       real CHECK (cpu_percent BETWEEN 0 AND 100);

-- Shared pools. A pool agent is an agent of the platform: its row's tenant is the one that
-- holds the platform's agents (see the pools migration that follows), its pool_id says
-- which pool it serves, and a tenant may place jobs on it when its tier is in the pool's
-- tiers or its id in the pool's tenants.
CREATE TABLE pools (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    tiers      text[] NOT NULL DEFAULT '{}'
               CHECK (tiers <@ ARRAY['free', 'standard', 'professional', 'enterprise']),
    tenants    uuid[] NOT NULL DEFAULT '{}' CHECK (cardinality(tenants) <= 10000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE pools ENABLE ROW LEVEL SECURITY;
ALTER TABLE pools FORCE ROW LEVEL SECURITY;
CREATE POLICY system_scope ON pools FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON pools TO orch_app;

ALTER TABLE agents ADD COLUMN pool_id uuid REFERENCES pools (id) ON DELETE RESTRICT;
CREATE INDEX agents_pool ON agents (pool_id) WHERE pool_id IS NOT NULL;
