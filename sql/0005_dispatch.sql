-- 0005_dispatch: assigning jobs to agents, leases, results. PostgreSQL decides every
-- transition here; RabbitMQ only wakes the dispatcher and the gateway that holds an
-- agent's connection, so a lost or repeated message never loses or doubles a job.

ALTER TABLE jobs ADD COLUMN delivered_at timestamptz;
-- Assigned jobs not yet handed to their agent.
CREATE INDEX jobs_undelivered ON jobs (agent_id) WHERE status = 'assigned' AND delivered_at IS NULL;

-- One dispatch round, run in the system scope by any number of dispatchers at once:
-- waiting jobs by priority then age (SKIP LOCKED, so dispatchers never wait on each other
-- for a job), each to the online agent of its tenant whose labels and facts contain the
-- job's requirements and that has a free slot, the least loaded first. A tenant at its
-- concurrent-job quota keeps its jobs waiting. Returns the assignments made.
CREATE FUNCTION dispatch_round(max_jobs int, lease_s int, online_s int)
    RETURNS TABLE (job_id uuid, tenant_id uuid, agent_id uuid, epoch bigint, gateway_node text)
    LANGUAGE plpgsql AS $$
DECLARE
    j record;
    a record;
    n int := 0;
    ep bigint;
    att int;
BEGIN
    FOR j IN
        SELECT jb.id, jb.tenant_id AS tid, jb.requirements
          FROM jobs jb LEFT JOIN queues q ON q.id = jb.queue_id
         WHERE jb.status = 'queued' AND jb.not_before <= now() AND NOT jb.cancel_requested
           AND NOT coalesce(q.paused, false)
         ORDER BY jb.priority DESC, jb.created_at, jb.id
         LIMIT max_jobs * 4
           FOR UPDATE OF jb SKIP LOCKED
    LOOP
        EXIT WHEN n >= max_jobs;
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
    END LOOP;
END
$$;

-- Backoff before retry attempt n: 2^n seconds, at most 5 minutes, with up to 50% jitter.
CREATE FUNCTION retry_backoff(n int) RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(300, power(2, least(n, 16)))
                                 * (0.5 + random() * 0.5))
$$;

-- End the current attempt of a job: the one place a job leaves `assigned`/`running`.
-- outcome: succeeded | failed | timeout | lost | cancelled. A failed, timed-out or lost
-- attempt is retried (queued after a backoff) while attempts remain, else the job is
-- dead; a job whose cancel was requested ends cancelled.
CREATE FUNCTION job_end_attempt(jid uuid, ep bigint, outcome text, code int, err text,
                                res jsonb)
    RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j record;
    next_status text;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = jid FOR UPDATE;
    IF NOT FOUND OR j.epoch <> ep OR j.status NOT IN ('assigned', 'running') THEN
        RETURN NULL;
    END IF;
    IF j.cancel_requested THEN
        next_status := 'cancelled';
    ELSIF outcome = 'succeeded' THEN
        next_status := 'succeeded';
    ELSIF outcome = 'cancelled' THEN
        next_status := 'cancelled';
    ELSIF j.attempt < j.max_attempts THEN
        next_status := 'queued';
    ELSE
        next_status := 'dead';
    END IF;
    UPDATE job_attempts SET status = CASE outcome WHEN 'succeeded' THEN 'succeeded'
                                                  WHEN 'cancelled' THEN 'cancelled'
                                                  WHEN 'timeout' THEN 'timeout'
                                                  WHEN 'lost' THEN 'lost' ELSE 'failed' END,
           finished_at = now(), exit_code = code, error = left(err, 4096)
     WHERE job_id = jid AND epoch = ep;
    UPDATE jobs SET status = next_status,
           exit_code = code, error = left(err, 4096), result = res,
           agent_id = CASE WHEN next_status = 'queued' THEN NULL ELSE agent_id END,
           lease_expires_at = NULL,
           not_before = CASE WHEN next_status = 'queued' THEN now() + retry_backoff(j.attempt)
                             ELSE not_before END,
           finished_at = CASE WHEN next_status = 'queued' THEN NULL ELSE now() END,
           updated_at = now()
     WHERE id = jid;
    RETURN next_status;
END
$$;

-- The reaper: attempts whose lease ran out are lost (their agent went silent), and their
-- jobs retried or dead. Returns how many.
CREATE FUNCTION reap_expired_leases(max_jobs int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    j record;
    n int := 0;
BEGIN
    FOR j IN SELECT id, epoch FROM jobs
              WHERE status IN ('assigned', 'running') AND lease_expires_at < now()
              ORDER BY lease_expires_at LIMIT max_jobs FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM job_end_attempt(j.id, j.epoch, 'lost', NULL, 'the agent lost its lease', NULL);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION dispatch_round(int, int, int), retry_backoff(int),
    job_end_attempt(uuid, bigint, text, int, text, jsonb), reap_expired_leases(int) TO orch_app;

-- An assignment as the agent receives it.
CREATE VIEW assignment_view WITH (security_invoker = true) AS
SELECT id, tenant_id, agent_id, epoch, json_build_object(
    'job_id', id, 'epoch', epoch, 'attempt', attempt, 'command', command, 'args', args,
    'env', env, 'params', params, 'package_id', package_id, 'entrypoint', entrypoint,
    'timeout_ms', timeout_ms) AS doc
  FROM jobs;
GRANT SELECT ON assignment_view TO orch_app;
