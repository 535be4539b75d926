-- 70_placement: what the dispatchers call to commit the placement engine's proposals
-- (sql/0011_placement.sql, server/dispatcher.c, docs/scheduling.md).

-- True when an agent (its labels, os, arch and reported free memory and disk) meets a
-- job's requirements: string values equal the agent's labels (os and arch from their
-- columns), min_free_memory_mb and min_free_disk_mb are at most what it reported (an
-- agent that has not reported fails them). The same rule as agent_capable() in
-- server/placement.c.
CREATE OR REPLACE FUNCTION agent_meets(labels jsonb, os text, arch text, memory_free bigint,
                                       disk_free bigint, req jsonb)
    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT requirements_hold(req, labels || jsonb_build_object('os', os, 'arch', arch),
                             memory_free, disk_free)
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
--
-- Set-based: one query reads every proposal with its job, agent, queue and tenant and
-- decides what does not depend on the order (the job's state, a paused queue, the
-- agent's state and fit); a loop in memory applies the counts in proposal order; one
-- UPDATE and one INSERT write the assignments. So the statement-level triggers on jobs
-- (sql/functions/90_webhooks.sql) run once per batch, not once per job.
--
-- Planned once per connection: each statement's plan depends on its arrays' contents, so
-- PostgreSQL's default planned all eight anew on every call (a custom plan each time,
-- judged cheaper than a generic one), which was 44% of the call: jobs has 19 indexes, most
-- of them partial, for the planner to weigh. force_generic_plan keeps one plan per
-- statement; enable_seqscan = off keeps that plan on the indexes even when it was made
-- while the tables were small (a generic plan made then scans jobs whole for as long as
-- the connection lives). Every statement here reaches its rows by key or through a partial
-- index, which is the right plan at any size. 10.7 to 3.4 ms a call in batches of about
-- four jobs (docs/scaling.md, "Where PostgreSQL's time goes per job").
CREATE OR REPLACE FUNCTION assign_batch(job_ids uuid[], agent_ids uuid[], lease_s int, online_s int)
    RETURNS TABLE (job_id uuid, agent_id uuid, tenant_id uuid, outcome text, epoch bigint,
                   gateway_node text)
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    n int := coalesce(cardinality(job_ids), 0);
    t_ids uuid[];
    t_run int[];
    t_max int[];
    a_ids uuid[];
    a_act int[];
    q_ids uuid[];
    q_run int[];
    o_tenant uuid[];
    o_outcome text[];
    o_epoch bigint[];
    o_gateway text[];
    w_jobs uuid[] := '{}';
    w_agents uuid[] := '{}';
    w_at int[] := '{}';
    w_epochs bigint[];
    w int := 0;
    p record;
    oc text;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(agent_ids) THEN
        RAISE EXCEPTION 'assign_batch: % jobs and % agents', cardinality(job_ids),
                        cardinality(agent_ids);
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM tenants t
     WHERE t.id IN (SELECT jb.tenant_id FROM jobs jb WHERE jb.id = ANY (job_ids))
     ORDER BY t.id FOR NO KEY UPDATE OF t;
    PERFORM 1 FROM agents ag WHERE ag.id = ANY (agent_ids) ORDER BY ag.id FOR NO KEY UPDATE;
    PERFORM 1 FROM queues qu
     WHERE qu.id IN (SELECT jb.queue_id FROM jobs jb WHERE jb.id = ANY (job_ids))
     ORDER BY qu.id FOR NO KEY UPDATE;

    SELECT array_agg(x.id), array_agg(x.n), array_agg(x.m)
      INTO t_ids, t_run, t_max
      FROM (SELECT tq.tenant_id AS id, tq.max_concurrent_jobs AS m,
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

    o_tenant := array_fill(NULL::uuid, ARRAY[n]);
    o_outcome := array_fill(NULL::text, ARRAY[n]);
    o_epoch := array_fill(NULL::bigint, ARRAY[n]);
    o_gateway := array_fill(NULL::text, ARRAY[n]);
    FOR p IN
        WITH lj AS MATERIALIZED (
            SELECT jb.id, jb.tenant_id, jb.queue_id, jb.status, jb.cancel_requested,
                   jb.not_before, jb.requirements
              FROM jobs jb WHERE jb.id = ANY (job_ids) FOR UPDATE SKIP LOCKED)
        SELECT pr.i::int AS i, pr.jid, pr.aid, lj.tenant_id,
               row_number() OVER (PARTITION BY pr.jid ORDER BY pr.i) > 1 AS again,
               CASE WHEN lj.id IS NULL THEN
                         CASE WHEN EXISTS (SELECT 1 FROM jobs jb WHERE jb.id = pr.jid)
                              THEN 'job_busy' ELSE 'job_gone' END
                    WHEN lj.status <> 'queued' OR lj.cancel_requested THEN 'job_gone'
                    WHEN lj.not_before > now() THEN 'job_later'
                    WHEN qu.paused THEN 'queue_paused'
               END AS job_refused,
               CASE WHEN ag.id IS NULL OR ag.status <> 'online'
                         OR ag.credential_revoked_at IS NOT NULL OR ag.last_heartbeat_at IS NULL
                         OR ag.last_heartbeat_at <= now() - make_interval(secs => online_s)
                    THEN 'agent_gone'
                    WHEN NOT (CASE WHEN ag.pool_id IS NULL THEN ag.tenant_id = lj.tenant_id
                                   ELSE EXISTS (SELECT 1 FROM pools pl
                                                 WHERE pl.id = ag.pool_id
                                                   AND (tq.tier = ANY (pl.tiers)
                                                        OR lj.tenant_id = ANY (pl.tenants))) END)
                         OR NOT agent_meets(ag.labels, ag.os, ag.arch, ag.memory_free_bytes,
                                            ag.disk_free_bytes, lj.requirements)
                    THEN 'agent_unfit'
               END AS agent_refused,
               qu.max_running, ag.slots, ag.gateway_node,
               array_position(q_ids, lj.queue_id) AS qi,
               array_position(t_ids, lj.tenant_id) AS ti,
               array_position(a_ids, pr.aid) AS ai
          FROM unnest(job_ids, agent_ids) WITH ORDINALITY AS pr(jid, aid, i)
          LEFT JOIN lj ON lj.id = pr.jid
          LEFT JOIN queues qu ON qu.id = lj.queue_id
          LEFT JOIN agents ag ON ag.id = pr.aid
          LEFT JOIN tenant_quotas tq ON tq.tenant_id = lj.tenant_id
         ORDER BY pr.i
    LOOP
        o_tenant[p.i] := p.tenant_id;
        oc := p.job_refused;
        IF oc IS NULL AND p.again AND p.jid = ANY (w_jobs) THEN
            oc := 'job_gone'; -- assigned by an earlier proposal of this batch
        END IF;
        IF oc IS NULL AND p.qi IS NOT NULL AND p.max_running IS NOT NULL
           AND q_run[p.qi] >= p.max_running THEN
            oc := 'queue_full';
        END IF;
        IF oc IS NULL THEN
            oc := p.agent_refused;
        END IF;
        IF oc IS NULL AND a_act[p.ai] >= p.slots THEN
            oc := 'agent_full';
        ELSIF oc IS NULL AND (p.ti IS NULL OR t_run[p.ti] >= t_max[p.ti]) THEN
            oc := 'tenant_full';
        END IF;
        IF oc IS NULL THEN
            oc := 'assigned';
            w := w + 1;
            w_jobs[w] := p.jid;
            w_agents[w] := p.aid;
            w_at[w] := p.i;
            t_run[p.ti] := t_run[p.ti] + 1;
            a_act[p.ai] := a_act[p.ai] + 1;
            IF p.qi IS NOT NULL THEN
                q_run[p.qi] := q_run[p.qi] + 1;
            END IF;
            o_gateway[p.i] := p.gateway_node;
        END IF;
        o_outcome[p.i] := oc;
    END LOOP;

    IF w > 0 THEN
        WITH u AS (
            UPDATE jobs SET status = 'assigned', epoch = jobs.epoch + 1,
                   attempt = jobs.attempt + 1, agent_id = x.aid,
                   lease_expires_at = now() + make_interval(secs => lease_s),
                   delivered_at = NULL, updated_at = now()
              FROM unnest(w_jobs, w_agents) WITH ORDINALITY AS x(jid, aid, k)
             WHERE jobs.id = x.jid
            RETURNING x.k, jobs.id, jobs.tenant_id, jobs.epoch, jobs.attempt, jobs.agent_id),
        ins AS (
            INSERT INTO job_attempts (id, tenant_id, job_id, attempt, epoch, agent_id, status)
            SELECT gen_random_uuid(), u.tenant_id, u.id, u.attempt, u.epoch, u.agent_id,
                   'assigned'
              FROM u)
        SELECT array_agg(u.epoch ORDER BY u.k) INTO w_epochs FROM u;
        IF coalesce(cardinality(w_epochs), 0) <> w THEN
            RAISE EXCEPTION 'assign_batch: % assignments written of %',
                            coalesce(cardinality(w_epochs), 0), w;
        END IF;
        FOR k IN 1 .. w LOOP
            o_epoch[w_at[k]] := w_epochs[k];
        END LOOP;
    END IF;

    FOR i IN 1 .. n LOOP
        job_id := job_ids[i];
        agent_id := agent_ids[i];
        tenant_id := o_tenant[i];
        outcome := o_outcome[i];
        epoch := o_epoch[i];
        gateway_node := o_gateway[i];
        RETURN NEXT;
    END LOOP;
END
$$;
