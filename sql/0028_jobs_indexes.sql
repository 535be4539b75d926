-- 0028_jobs_indexes: two indexes of jobs that no query needs any more. Every change of a
-- job's status is a non-HOT update, so each index of jobs takes a new entry at the
-- insert, the assignment, the delivery, the start, every lease renewal and the result.
--
-- jobs_waiting (priority, created_at, id) of queued jobs served dispatch_round(), which
-- 0011_placement.sql dropped: the dispatcher loads queued jobs by queued_seq (jobs_queued).
--
-- jobs_active_tenant (tenant_id) of assigned and running jobs duplicates
-- jobs_tenant_status (tenant_id, status, id DESC), which the per-tenant counts of active
-- jobs (assign_batch, tenant_usage, job_wait, the statistics) use as well, with
-- status = ANY ('{assigned,running}'). jobs_tenant_status is the one the job listing
-- needs since it names the tenant (server/api-jobs.c: row-level security's policies
-- cannot be an index condition).
DROP INDEX IF EXISTS jobs_waiting;
DROP INDEX IF EXISTS jobs_active_tenant;
