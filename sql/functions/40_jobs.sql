-- 40_jobs: A job's attempts: the end of one (result, lost lease, cancel) and the retry backoff.
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- retry_backoff: from 0005_dispatch.sql.
-- Backoff before retry attempt n: 2^n seconds, at most 5 minutes, with up to 50% jitter.
CREATE OR REPLACE FUNCTION retry_backoff(n int) RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(300, power(2, least(n, 16)))
                                 * (0.5 + random() * 0.5))
$$;

-- job_end_attempts: End the current attempt of many jobs at once, the one place a job
-- leaves `assigned`/`running`: the set-based form of job_end_attempt() (below), which the
-- agents' group commit calls once for every result of a transaction (server/api-agentproto.c)
-- and which job_end_attempt() calls with one row. Row i of the arrays: the job, the epoch
-- of the attempt, the agent it must be assigned to (NULL: whichever), the outcome
-- (succeeded | failed | timeout | lost | cancelled), the exit code, the error, the result.
-- A failed, timed-out or lost attempt is retried (queued after a backoff) while attempts
-- remain, else the job is dead; a job whose cancel was requested ends cancelled. Returns
-- one row for each attempt ended: its row number n (from 1) and the job's new status. A
-- job named twice is ended by its first row only; a job that is not at that epoch, not that
-- agent's or not active is left alone (no row). The jobs are locked in id order first, so
-- that two callers with the same jobs wait for each other instead of deadlocking.
CREATE OR REPLACE FUNCTION job_end_attempts(p_ids uuid[], p_epochs bigint[], p_agents uuid[],
                                            p_outcomes text[], p_codes int[], p_errors text[],
                                            p_results jsonb[])
    RETURNS TABLE (n bigint, status text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM jobs WHERE id = ANY (p_ids) ORDER BY id FOR UPDATE;
    -- A new statement, a new snapshot: the jobs as they are now that they are locked.
    RETURN QUERY
    WITH r AS (SELECT * FROM unnest(p_ids, p_epochs, p_agents, p_outcomes, p_codes, p_errors,
                                    p_results)
                        WITH ORDINALITY AS r(id, epoch, agent, outcome, code, err, res, n)),
    e AS (SELECT DISTINCT ON (jb.id) r.n, jb.id, jb.epoch, jb.attempt, r.outcome, r.code,
                 left(r.err, 4096) AS err, r.res,
                 CASE WHEN jb.cancel_requested THEN 'cancelled'
                      WHEN r.outcome = 'succeeded' THEN 'succeeded'
                      WHEN r.outcome = 'cancelled' THEN 'cancelled'
                      WHEN jb.attempt < jb.max_attempts THEN 'queued'
                      ELSE 'dead' END AS next
            FROM r JOIN jobs jb ON jb.id = r.id AND jb.epoch = r.epoch
                                AND (r.agent IS NULL OR jb.agent_id = r.agent)
                                AND jb.status IN ('assigned', 'running')
           ORDER BY jb.id, r.n),
    a AS (UPDATE job_attempts x
             SET status = CASE e.outcome WHEN 'succeeded' THEN 'succeeded'
                                         WHEN 'cancelled' THEN 'cancelled'
                                         WHEN 'timeout' THEN 'timeout'
                                         WHEN 'lost' THEN 'lost' ELSE 'failed' END,
                 finished_at = now(), exit_code = e.code, error = e.err
            FROM e WHERE x.job_id = e.id AND x.epoch = e.epoch),
    u AS (UPDATE jobs jb
             SET status = e.next, exit_code = e.code, error = e.err, result = e.res,
                 agent_id = CASE WHEN e.next = 'queued' THEN NULL ELSE jb.agent_id END,
                 lease_expires_at = NULL,
                 not_before = CASE WHEN e.next = 'queued' THEN now() + retry_backoff(e.attempt)
                                   ELSE jb.not_before END,
                 queued_seq = CASE WHEN e.next = 'queued' THEN nextval('jobs_queued_seq')
                                   ELSE jb.queued_seq END,
                 finished_at = CASE WHEN e.next = 'queued' THEN NULL ELSE now() END,
                 updated_at = now()
            FROM e WHERE jb.id = e.id)
    SELECT e.n, e.next FROM e;
END
$$;

-- job_end_attempt: from 0005_dispatch.sql; a retry gets a new queued_seq (0011_placement.sql).
-- End the current attempt of one job (job_end_attempts() with one row, whichever agent):
-- its new status, or NULL when the job is not active at epoch ep.
CREATE OR REPLACE FUNCTION job_end_attempt(jid uuid, ep bigint, outcome text, code int, err text,
                                           res jsonb)
    RETURNS text LANGUAGE sql AS $$
    SELECT status FROM job_end_attempts(ARRAY[jid], ARRAY[ep], ARRAY[NULL::uuid], ARRAY[outcome],
                                        ARRAY[code], ARRAY[err], ARRAY[res])
$$;

-- reap_expired_leases: from 0005_dispatch.sql.
-- The reaper: attempts whose lease ran out are lost (their agent went silent), and their
-- jobs retried or dead. Returns how many. lease_expires_at has no index (a renewal is then
-- a heap-only update, 0029_jobs_lease_hot.sql): the active jobs are read through
-- jobs_active_agent.
CREATE OR REPLACE FUNCTION reap_expired_leases(max_jobs int) RETURNS int LANGUAGE plpgsql AS $$
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
