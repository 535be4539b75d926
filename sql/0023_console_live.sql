-- 0023_console_live: the console's retry of a job and its live log
-- (docs/console.md, docs/api.md "Retry a job").
--
-- retry_of: the job that POST /api/v1/jobs/{id}/retry submitted this one again from. No
-- foreign key: the retry is a job of its own and outlives whatever becomes of the
-- original; the id is a record, read back through the API in the tenant's scope.
ALTER TABLE jobs ADD COLUMN retry_of uuid;

-- GET /api/v1/jobs?retry_of=: a job's retries (the console's job page names them).
CREATE INDEX jobs_retry_of ON jobs (retry_of) WHERE retry_of IS NOT NULL;

-- When job_log_append() last sent the stream's job.output event: it sends at most one per
-- 250 ms per stream (sql/functions/50_logs.sql), as a NOTIFY serialises the commits of the
-- transactions that send one.
ALTER TABLE job_log_streams ADD COLUMN notified_at timestamptz;
