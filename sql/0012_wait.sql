-- 0012_wait: the API side of scheduling: the tenant's weight and the queue's concurrency
-- limit in their documents, "why is my job waiting?" (GET /api/v1/jobs/{id}) and the
-- autoscaling signals (GET /api/v1/scaling/signals). docs/api.md describes both answers;
-- the functions that compute them (job_wait(), scaling_signals() and the rules they share)
-- live in sql/functions/60_scheduling.sql, applied after the migrations.

-- A tenant's queued jobs: the signals count them per queue, and a job's position is
-- counted over them, both from the index alone (its aging key's columns are included).
CREATE INDEX jobs_queued_tenant ON jobs (tenant_id, queue_id, not_before)
    INCLUDE (priority, created_at, id) WHERE status = 'queued';
