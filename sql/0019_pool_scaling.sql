-- 0019_pool_scaling: a platform operator's scaling policies for a shared agent pool
-- (server/api-scaling.c, docs/operations.md "Scaling policies").
--
-- A pool policy is a row of the platform tenant (platform_tenant(), sql/0013_pools.sql)
-- naming its pool: the operator's API acts in that tenant's scope, so a customer tenant
-- never sees one (row-level security) and the operator sees only these. It watches the
-- queued jobs of every tenant the pool admits against the pool's online agents
-- (scaling_policy_inputs(), sql/functions/98_scaling.sql). A queue is a tenant's, so a pool
-- policy names none.

ALTER TABLE scaling_policies ADD COLUMN pool_id uuid REFERENCES pools (id) ON DELETE CASCADE;
ALTER TABLE scaling_policies ADD CONSTRAINT scaling_policies_pool_platform
    CHECK ((pool_id IS NOT NULL) = (tenant_id = '00000000-0000-4000-8000-000000000001'::uuid));
ALTER TABLE scaling_policies ADD CONSTRAINT scaling_policies_pool_no_queue
    CHECK (pool_id IS NULL OR queue_id IS NULL);

-- scaling_policy_view shows the pool: sql/functions/98_scaling.sql.
