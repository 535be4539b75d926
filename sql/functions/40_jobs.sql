-- 40_jobs: A job's attempts: the end of one (result, lost lease, cancel) and the retry backoff.
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- retry_backoff: from 0005_dispatch.sql.
-- Backoff before retry attempt n: 2^n seconds, at most 5 minutes, with up to 50% jitter.
CREATE OR REPLACE FUNCTION retry_backoff(n int) RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(300, power(2, least(n, 16)))
                                 * (0.5 + random() * 0.5))
$$;

-- job_end_attempt: from 0005_dispatch.sql; a retry gets a new queued_seq (0011_placement.sql).
-- End the current attempt of a job: the one place a job leaves `assigned`/`running`.
-- outcome: succeeded | failed | timeout | lost | cancelled. A failed, timed-out or lost
-- attempt is retried (queued after a backoff) while attempts remain, else the job is
-- dead; a job whose cancel was requested ends cancelled.
CREATE OR REPLACE FUNCTION job_end_attempt(jid uuid, ep bigint, outcome text, code int, err text,
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
           queued_seq = CASE WHEN next_status = 'queued' THEN nextval('jobs_queued_seq')
                             ELSE queued_seq END,
           finished_at = CASE WHEN next_status = 'queued' THEN NULL ELSE now() END,
           updated_at = now()
     WHERE id = jid;
    RETURN next_status;
END
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
