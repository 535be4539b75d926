-- 0007_dispatch_capacity: dispatch rounds that cost what the free capacity is worth.
--
-- A round used to lock up to 400 waiting jobs and count each agent's active jobs over
-- every job the agent ever ran, even when no agent had a free slot. Now: the active jobs
-- of an agent and of a tenant come from partial indexes; a round with no free slot
-- anywhere returns at once; waiting jobs are scanned without locks and each is locked
-- (SKIP LOCKED) only once an agent has been found for it; the round ends when the free
-- slots it saw are used up.

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
        SELECT jb.id, jb.tenant_id AS tid, jb.requirements
          FROM jobs jb LEFT JOIN queues q ON q.id = jb.queue_id
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
         ORDER BY (SELECT count(*) FROM jobs r
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
