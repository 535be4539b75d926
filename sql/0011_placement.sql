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

-- agent_meets() and assign_batch() live in sql/functions/70_placement.sql.

-- Nothing calls dispatch_round() any more: the placement engine and assign_batch() replace
-- it.
DROP FUNCTION dispatch_round(int, int, int);
