-- 0013_pools: shared agent pools (the table pools and agents.pool_id are in 0010).
--
-- Whose agents. Every agent row has a tenant (NOT NULL, row-level security): an agent of a
-- pool belongs to the platform tenant, one row made here with a fixed id
-- (platform_tenant()). It is not a customer: the operator API neither lists nor shows it,
-- nor changes or deletes it (a trigger makes an UPDATE or DELETE of it a no-op, so the API
-- answers 404), it has no API keys (so no principal ever acts in its scope but its pool
-- agents), and its agents take no agent quota, its own or anyone's (the enrolment of a pool
-- agent skips quota_acquire('agents')). An agent is a pool agent exactly when it is the
-- platform tenant's, and then it names its pool.
--
-- Enrolment. An operator makes enrolment tokens for a pool (POST /pools/{id}/
-- enrollment-tokens): rows of enrollment_tokens of the platform tenant with pool_id set.
-- `orch-agent register` with one makes an agent of that pool.
--
-- Which jobs. A pool admits a tenant when the tenant's tier is in its tiers or its id in
-- its tenants (admitting_pools(), sql/0012_wait.sql). A pool agent runs jobs of every
-- admitted tenant; the agent protocol of a pool agent runs in the system scope, each
-- statement bound to the calling agent's id (server/app.c, app_agent_scope()).

CREATE FUNCTION platform_tenant() RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '00000000-0000-4000-8000-000000000001'::uuid $$;
GRANT EXECUTE ON FUNCTION platform_tenant() TO orch_app;

-- The owner inserts it (FORCE would hold it to the policies, under which only orch_system
-- writes tenants); the slug is 'platform' unless a customer has it already.
ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY;
INSERT INTO tenants (id, slug, display_name, tier)
SELECT platform_tenant(),
       CASE WHEN EXISTS (SELECT FROM tenants WHERE slug = 'platform')
            THEN 'platform-' || substr(md5(random()::text), 1, 8) ELSE 'platform' END,
       'Platform (shared agent pools)', 'enterprise';
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

CREATE FUNCTION tenants_platform_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id = platform_tenant() THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER tenants_platform_fixed BEFORE UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_platform_fixed();

-- The platform tenant has no API keys: 23503, which the API answers "no such tenant".
CREATE FUNCTION api_keys_not_platform() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = platform_tenant() THEN
        RAISE foreign_key_violation USING MESSAGE = 'the platform tenant has no API keys';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER api_keys_not_platform BEFORE INSERT OR UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_not_platform();

ALTER TABLE agents ADD CONSTRAINT agents_pool_platform
    CHECK ((pool_id IS NOT NULL) = (tenant_id = '00000000-0000-4000-8000-000000000001'::uuid));

ALTER TABLE enrollment_tokens ADD COLUMN pool_id uuid REFERENCES pools (id) ON DELETE CASCADE;
ALTER TABLE enrollment_tokens ADD CONSTRAINT enrollment_tokens_pool_platform
    CHECK ((pool_id IS NOT NULL) = (tenant_id = '00000000-0000-4000-8000-000000000001'::uuid));

-- A pool as the operator API shows it.
CREATE VIEW pool_view WITH (security_invoker = true) AS
SELECT p.id, json_build_object(
    'id', p.id, 'name', p.name, 'tiers', p.tiers, 'tenants', p.tenants,
    'agent_count', (SELECT count(*) FROM agents a WHERE a.pool_id = p.id),
    'created_at', p.created_at, 'updated_at', p.updated_at) AS doc
  FROM pools p;
GRANT SELECT ON pool_view TO orch_app;

-- The old dispatch round (0007), with the pools: a job goes to its tenant's own agents
-- first, else to an agent of a pool that admits its tenant; tenants take turns by weight.
-- An interim round: the placement engine (server/placement.c) replaces it. Its fair
-- order numbers every waiting job each round (a scan of the queue, where 0007 read the
-- head of an index): fine for the tests, not for a deep queue.
CREATE OR REPLACE FUNCTION dispatch_round(max_jobs int, lease_s int, online_s int)
    RETURNS TABLE (job_id uuid, tenant_id uuid, agent_id uuid, epoch bigint, gateway_node text)
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
    a record;
    n int := 0;
    ep bigint;
    att int;
    free int;
BEGIN
    SELECT coalesce(sum(greatest(ag.slots - (SELECT count(*) FROM jobs r
                                              WHERE r.agent_id = ag.id
                                                AND r.status IN ('assigned', 'running')), 0)), 0)
      INTO free
      FROM agents ag
     WHERE ag.status = 'online' AND ag.credential_revoked_at IS NULL
       AND ag.last_heartbeat_at > now() - make_interval(secs => online_s);
    IF free = 0 THEN
        RETURN;
    END IF;
    -- Within a priority, tenants take turns by weight: the k-th waiting job of a tenant
    -- with n jobs active is tagged (n + k) / weight, and lower tags go first, so tenants
    -- competing for the same agents (a pool) get placements in proportion to their weights.
    FOR j IN
        SELECT s.id, s.tid, s.requirements, s.pkg
          FROM (SELECT jb.id, jb.tenant_id AS tid, jb.requirements, jb.priority, jb.created_at,
                       encode(pk.sha256, 'hex') AS pkg,
                       row_number() OVER (PARTITION BY jb.tenant_id, jb.priority
                                          ORDER BY jb.created_at, jb.id) AS k
                  FROM jobs jb LEFT JOIN queues q ON q.id = jb.queue_id
                       LEFT JOIN packages pk ON pk.id = jb.package_id
                                            AND pk.tenant_id = jb.tenant_id
                 WHERE jb.status = 'queued' AND jb.not_before <= now()
                   AND NOT jb.cancel_requested AND NOT coalesce(q.paused, false)) s
          JOIN tenant_quotas tq ON tq.tenant_id = s.tid
          LEFT JOIN (SELECT x.tenant_id, count(*) AS n FROM jobs x
                      WHERE x.status IN ('assigned', 'running') GROUP BY x.tenant_id) act
                 ON act.tenant_id = s.tid
         ORDER BY s.priority DESC, (coalesce(act.n, 0) + s.k)::float8 / tq.weight,
                  s.created_at, s.id
         LIMIT max_jobs * 4
    LOOP
        EXIT WHEN n >= max_jobs OR free <= 0;
        IF (SELECT count(*) FROM jobs x
             WHERE x.tenant_id = j.tid AND x.status IN ('assigned', 'running'))
           >= (SELECT tq.max_concurrent_jobs FROM tenant_quotas tq WHERE tq.tenant_id = j.tid) THEN
            CONTINUE;
        END IF;
        SELECT ag.id, ag.gateway_node INTO a
          FROM agents ag
         WHERE (ag.tenant_id = j.tid OR ag.pool_id IN (SELECT admitting_pools(j.tid)))
           AND ag.status = 'online'
           AND ag.credential_revoked_at IS NULL
           AND ag.last_heartbeat_at > now() - make_interval(secs => online_s)
           AND (ag.labels || jsonb_build_object('os', ag.os, 'arch', ag.arch))
               @> j.requirements
           AND (SELECT count(*) FROM jobs r
                 WHERE r.agent_id = ag.id AND r.status IN ('assigned', 'running')) < ag.slots
         ORDER BY ag.pool_id IS NOT NULL,
                  (j.pkg IS NOT NULL AND j.pkg = ANY (ag.cached_packages)) DESC,
                  (SELECT count(*) FROM jobs r
                    WHERE r.agent_id = ag.id AND r.status IN ('assigned', 'running'))::float
                  / ag.slots, ag.id
         LIMIT 1
           FOR UPDATE OF ag;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        -- Another dispatcher may hold or have taken this job since the scan.
        PERFORM 1 FROM jobs x WHERE x.id = j.id AND x.status = 'queued'
            FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        UPDATE jobs SET status = 'assigned', epoch = jobs.epoch + 1, attempt = jobs.attempt + 1,
               agent_id = a.id, lease_expires_at = now() + make_interval(secs => lease_s),
               delivered_at = NULL, updated_at = now()
         WHERE jobs.id = j.id
        RETURNING jobs.epoch, jobs.attempt INTO ep, att;
        INSERT INTO job_attempts (id, tenant_id, job_id, attempt, epoch, agent_id, status)
        VALUES (gen_random_uuid(), j.tid, j.id, att, ep, a.id, 'assigned');
        job_id := j.id;
        tenant_id := j.tid;
        agent_id := a.id;
        epoch := ep;
        gateway_node := a.gateway_node;
        RETURN NEXT;
        n := n + 1;
        free := free - 1;
    END LOOP;
END
$$;
