-- 0007_packages_dispatch: packages on agents, and dispatch rounds that cost what the free
-- capacity is worth.
--
-- Packages: a tenant's archives (content-addressed blobs in package_blobs, named versions
-- in packages). An agent keeps the archives it fetched in its cache and says which in its
-- heartbeat (agents.cached_packages, SHA-256 in hex); the dispatcher prefers, among the
-- capable agents with a free slot, one that holds the job's package.
--
-- Dispatch: a round used to lock up to 400 waiting jobs and count each agent's active jobs
-- over every job the agent ever ran, even when no agent had a free slot. Now the active
-- jobs of an agent and of a tenant come from partial indexes; a round with no free slot
-- anywhere returns at once; waiting jobs are scanned without locks and each is locked
-- (SKIP LOCKED) only once an agent has been found for it; the round ends when the free
-- slots it saw are used up.

ALTER TABLE agents ADD COLUMN cached_packages text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(cached_packages) <= 4096);

-- A package as the API shows it.
CREATE VIEW package_view WITH (security_invoker = true) AS
SELECT p.id, p.tenant_id, p.name, p.version, json_build_object(
    'id', p.id, 'name', p.name, 'version', p.version, 'sha256', encode(p.sha256, 'hex'),
    'size_bytes', p.size_bytes, 'entrypoint', p.entrypoint, 'created_at', p.created_at) AS doc
  FROM packages p;
GRANT SELECT ON package_view TO orch_app;

-- An assignment as the agent receives it: with a package, its digest and size (so that
-- the agent can use its cache) and the package's entrypoint when the job names none.
CREATE OR REPLACE VIEW assignment_view WITH (security_invoker = true) AS
SELECT j.id, j.tenant_id, j.agent_id, j.epoch, json_build_object(
    'job_id', j.id, 'epoch', j.epoch, 'attempt', j.attempt, 'command', j.command,
    'args', j.args, 'env', j.env, 'params', j.params, 'package_id', j.package_id,
    'entrypoint', coalesce(j.entrypoint, p.entrypoint), 'timeout_ms', j.timeout_ms,
    'package_sha256', encode(p.sha256, 'hex'), 'package_size', p.size_bytes) AS doc
  FROM jobs j LEFT JOIN packages p ON p.id = j.package_id AND p.tenant_id = j.tenant_id;

CREATE INDEX jobs_active_agent ON jobs (agent_id) WHERE status IN ('assigned', 'running');
CREATE INDEX jobs_active_tenant ON jobs (tenant_id) WHERE status IN ('assigned', 'running');

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
    FOR j IN
        SELECT jb.id, jb.tenant_id AS tid, jb.requirements, encode(pk.sha256, 'hex') AS pkg
          FROM jobs jb LEFT JOIN queues q ON q.id = jb.queue_id
               LEFT JOIN packages pk ON pk.id = jb.package_id AND pk.tenant_id = jb.tenant_id
         WHERE jb.status = 'queued' AND jb.not_before <= now() AND NOT jb.cancel_requested
           AND NOT coalesce(q.paused, false)
         ORDER BY jb.priority DESC, jb.created_at, jb.id
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
         WHERE ag.tenant_id = j.tid AND ag.status = 'online'
           AND ag.credential_revoked_at IS NULL
           AND ag.last_heartbeat_at > now() - make_interval(secs => online_s)
           AND (ag.labels || jsonb_build_object('os', ag.os, 'arch', ag.arch))
               @> j.requirements
           AND (SELECT count(*) FROM jobs r
                 WHERE r.agent_id = ag.id AND r.status IN ('assigned', 'running')) < ag.slots
         ORDER BY (j.pkg IS NOT NULL AND j.pkg = ANY (ag.cached_packages)) DESC,
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

-- A package job needs an entrypoint: its own, else the package's (filled at submission).
ALTER TABLE jobs ADD CONSTRAINT jobs_package_entrypoint
    CHECK (package_id IS NULL OR entrypoint IS NOT NULL);

-- An agent as the API shows it, now with the jobs it holds and the packages it caches.
CREATE OR REPLACE VIEW agent_view WITH (security_invoker = true) AS
SELECT a.id, a.tenant_id, json_build_object(
    'id', a.id, 'tenant_id', a.tenant_id, 'name', a.name, 'hostname', a.hostname, 'os', a.os,
    'arch', a.arch, 'version', a.version, 'labels', a.labels, 'capabilities', a.capabilities,
    'slots', a.slots, 'status', a.status, 'connected', a.gateway_node IS NOT NULL,
    'running_jobs', (SELECT count(*) FROM jobs j
                      WHERE j.agent_id = a.id AND j.status IN ('assigned', 'running')),
    'cached_packages', cardinality(a.cached_packages),
    'last_heartbeat_at', a.last_heartbeat_at,
    'credential_expires_at', a.credential_expires_at,
    'credential_revoked', a.credential_revoked_at IS NOT NULL,
    'created_at', a.created_at, 'updated_at', a.updated_at) AS doc
  FROM agents a;

-- A cancel is handed to the agent with its next exchange (or answers the one it holds):
-- once, marked here; the heartbeat's answer keeps listing it until the job ends.
ALTER TABLE jobs ADD COLUMN cancel_sent boolean NOT NULL DEFAULT false;
