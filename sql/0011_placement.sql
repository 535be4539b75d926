-- 0011_placement: batched assignment for the placement engine (server/placement.c,
-- server/dispatcher.c, docs/scheduling.md).
--
-- The engine proposes (job, agent) pairs from its in-memory index; assign_batch() decides
-- them, many in one transaction, checking every invariant again under locks, so that any
-- number of dispatchers on any number of nodes can propose at once: PostgreSQL decides,
-- and a stale index costs a refused proposal, never an oversubscribed agent or quota.
--
-- Dispatchers load queued jobs incrementally by jobs.queued_seq: a number from a sequence
-- given whenever a job becomes queued (at insert and at a retry's requeue).

CREATE SEQUENCE jobs_queued_seq;
GRANT USAGE ON SEQUENCE jobs_queued_seq TO orch_app;
ALTER TABLE jobs ADD COLUMN queued_seq bigint NOT NULL DEFAULT nextval('jobs_queued_seq');
ALTER SEQUENCE jobs_queued_seq OWNED BY jobs.queued_seq;
CREATE INDEX jobs_queued ON jobs (queued_seq) WHERE status = 'queued';

-- job_end_attempt() (sql/functions/40_jobs.sql) gives a job queued again for a retry a
-- new queued_seq, so that the dispatchers' incremental load sees it.

-- True when an agent (its labels, os, arch and reported free memory and disk) meets a
-- job's requirements: string values equal the agent's labels (os and arch from their
-- columns), min_free_memory_mb and min_free_disk_mb are at most what it reported (an
-- agent that has not reported fails them). The same rule as agent_capable() in
-- server/placement.c.
CREATE FUNCTION agent_meets(labels jsonb, os text, arch text, memory_free bigint,
                            disk_free bigint, req jsonb)
    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (labels || jsonb_build_object('os', os, 'arch', arch))
               @> (req - 'min_free_memory_mb' - 'min_free_disk_mb')
       AND (NOT req ? 'min_free_memory_mb'
            OR (jsonb_typeof(req -> 'min_free_memory_mb') = 'number'
                AND memory_free IS NOT NULL
                AND memory_free >= (req ->> 'min_free_memory_mb')::numeric * 1048576))
       AND (NOT req ? 'min_free_disk_mb'
            OR (jsonb_typeof(req -> 'min_free_disk_mb') = 'number'
                AND disk_free IS NOT NULL
                AND disk_free >= (req ->> 'min_free_disk_mb')::numeric * 1048576))
$$;

-- Decide a batch of proposals (job_ids[i] to agent_ids[i]) in the system scope. Returns
-- one row per proposal, in order: outcome 'assigned' with the new epoch and the gateway
-- node holding the agent, or the reason it was refused:
--   job_busy     the job's row is locked by another transaction (a cancel, a dispatcher)
--   job_gone     not queued any more, or its cancel was requested
--   job_later    its not_before has not come
--   queue_paused / queue_full   its queue is paused / at max_running
--   agent_gone   unknown, not online, revoked, or its heartbeat is older than online_s
--   agent_unfit  its requirements do not hold there, or the agent does not serve the
--                tenant (another tenant's, or a pool that does not admit it)
--   agent_full   no free slot
--   tenant_full  the tenant is at its concurrent-job quota
--
-- Locks: the rows of the tenants, then of the agents, then of the queues involved, each
-- set in id order (FOR NO KEY UPDATE, which a job insert's foreign-key check does not
-- wait for), so that two batches never wait on each other in a cycle; the jobs with SKIP
-- LOCKED, so a batch never waits for a job. Under those locks the counts of active jobs
-- (from the partial indexes jobs_active_tenant, jobs_active_agent, jobs_active_queue) are
-- exact, and every batch that could change them waits for this one to commit.
CREATE FUNCTION assign_batch(job_ids uuid[], agent_ids uuid[], lease_s int, online_s int)
    RETURNS TABLE (job_id uuid, agent_id uuid, tenant_id uuid, outcome text, epoch bigint,
                   gateway_node text)
    LANGUAGE plpgsql AS $$
DECLARE
    t_ids uuid[];
    t_run int[];
    t_max int[];
    t_tier text[];
    a_ids uuid[];
    a_act int[];
    q_ids uuid[];
    q_run int[];
    j record;
    a record;
    q record;
    ti int;
    ai int;
    qi int;
    ep bigint;
    att int;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(agent_ids) THEN
        RAISE EXCEPTION 'assign_batch: % jobs and % agents', cardinality(job_ids),
                        cardinality(agent_ids);
    END IF;
    IF coalesce(cardinality(job_ids), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM tenants t
     WHERE t.id IN (SELECT jb.tenant_id FROM jobs jb WHERE jb.id = ANY (job_ids))
     ORDER BY t.id FOR NO KEY UPDATE OF t;
    PERFORM 1 FROM agents ag WHERE ag.id = ANY (agent_ids) ORDER BY ag.id FOR NO KEY UPDATE;
    PERFORM 1 FROM queues qu
     WHERE qu.id IN (SELECT jb.queue_id FROM jobs jb WHERE jb.id = ANY (job_ids))
     ORDER BY qu.id FOR NO KEY UPDATE;

    SELECT array_agg(x.id), array_agg(x.n), array_agg(x.m), array_agg(x.tier)
      INTO t_ids, t_run, t_max, t_tier
      FROM (SELECT tq.tenant_id AS id, tq.max_concurrent_jobs AS m, tq.tier,
                   (SELECT count(*) FROM jobs r WHERE r.tenant_id = tq.tenant_id
                       AND r.status IN ('assigned', 'running'))::int AS n
              FROM tenant_quotas tq
             WHERE tq.tenant_id IN (SELECT jb.tenant_id FROM jobs jb
                                     WHERE jb.id = ANY (job_ids))) x;
    SELECT array_agg(x.id), array_agg(x.n) INTO a_ids, a_act
      FROM (SELECT ag.id, (SELECT count(*) FROM jobs r WHERE r.agent_id = ag.id
                              AND r.status IN ('assigned', 'running'))::int AS n
              FROM agents ag WHERE ag.id = ANY (agent_ids)) x;
    SELECT array_agg(x.id), array_agg(x.n) INTO q_ids, q_run
      FROM (SELECT qu.id, (SELECT count(*) FROM jobs r WHERE r.queue_id = qu.id
                              AND r.status IN ('assigned', 'running'))::int AS n
              FROM queues qu
             WHERE qu.id IN (SELECT jb.queue_id FROM jobs jb WHERE jb.id = ANY (job_ids))) x;

    FOR i IN 1 .. cardinality(job_ids) LOOP
        job_id := job_ids[i];
        agent_id := agent_ids[i];
        tenant_id := NULL;
        epoch := NULL;
        gateway_node := NULL;
        outcome := NULL;
        SELECT jb.id, jb.tenant_id, jb.queue_id, jb.status, jb.cancel_requested,
               jb.not_before, jb.requirements
          INTO j FROM jobs jb WHERE jb.id = job_ids[i] FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            outcome := CASE WHEN EXISTS (SELECT 1 FROM jobs jb WHERE jb.id = job_ids[i])
                            THEN 'job_busy' ELSE 'job_gone' END;
            RETURN NEXT;
            CONTINUE;
        END IF;
        tenant_id := j.tenant_id;
        IF j.status <> 'queued' OR j.cancel_requested THEN
            outcome := 'job_gone';
        ELSIF j.not_before > now() THEN
            outcome := 'job_later';
        END IF;
        qi := NULL;
        IF outcome IS NULL AND j.queue_id IS NOT NULL THEN
            SELECT qu.paused, qu.max_running INTO q FROM queues qu WHERE qu.id = j.queue_id;
            qi := array_position(q_ids, j.queue_id);
            IF q.paused THEN
                outcome := 'queue_paused';
            ELSIF q.max_running IS NOT NULL AND q_run[qi] >= q.max_running THEN
                outcome := 'queue_full';
            END IF;
        END IF;
        ti := array_position(t_ids, j.tenant_id);
        IF outcome IS NULL THEN
            SELECT ag.id, ag.tenant_id, ag.pool_id, ag.status, ag.slots, ag.labels, ag.os,
                   ag.arch, ag.memory_free_bytes, ag.disk_free_bytes, ag.gateway_node,
                   ag.credential_revoked_at, ag.last_heartbeat_at
              INTO a FROM agents ag WHERE ag.id = agent_ids[i];
            IF NOT FOUND OR a.status <> 'online' OR a.credential_revoked_at IS NOT NULL
               OR a.last_heartbeat_at IS NULL
               OR a.last_heartbeat_at <= now() - make_interval(secs => online_s) THEN
                outcome := 'agent_gone';
            ELSIF NOT (CASE WHEN a.pool_id IS NULL THEN a.tenant_id = j.tenant_id
                            ELSE EXISTS (SELECT 1 FROM pools p
                                          WHERE p.id = a.pool_id
                                            AND (t_tier[ti] = ANY (p.tiers)
                                                 OR j.tenant_id = ANY (p.tenants))) END)
                  OR NOT agent_meets(a.labels, a.os, a.arch, a.memory_free_bytes,
                                     a.disk_free_bytes, j.requirements) THEN
                outcome := 'agent_unfit';
            ELSIF a_act[array_position(a_ids, agent_ids[i])] >= a.slots THEN
                outcome := 'agent_full';
            ELSIF ti IS NULL OR t_run[ti] >= t_max[ti] THEN
                outcome := 'tenant_full';
            END IF;
        END IF;
        IF outcome IS NOT NULL THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE jobs SET status = 'assigned', epoch = jobs.epoch + 1, attempt = jobs.attempt + 1,
               agent_id = agent_ids[i],
               lease_expires_at = now() + make_interval(secs => lease_s),
               delivered_at = NULL, updated_at = now()
         WHERE jobs.id = job_ids[i]
        RETURNING jobs.epoch, jobs.attempt INTO ep, att;
        INSERT INTO job_attempts (id, tenant_id, job_id, attempt, epoch, agent_id, status)
        VALUES (gen_random_uuid(), j.tenant_id, j.id, att, ep, agent_ids[i], 'assigned');
        ai := array_position(a_ids, agent_ids[i]);
        t_run[ti] := t_run[ti] + 1;
        a_act[ai] := a_act[ai] + 1;
        IF qi IS NOT NULL THEN
            q_run[qi] := q_run[qi] + 1;
        END IF;
        outcome := 'assigned';
        epoch := ep;
        gateway_node := a.gateway_node;
        RETURN NEXT;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION assign_batch(uuid[], uuid[], int, int),
    agent_meets(jsonb, text, text, bigint, bigint, jsonb) TO orch_app;

-- Nothing calls dispatch_round() any more: the placement engine and assign_batch() replace
-- it.
DROP FUNCTION dispatch_round(int, int, int);
