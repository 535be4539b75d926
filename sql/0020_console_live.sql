-- 0020_console_live: the console's retry of a job and its live queue events
-- (docs/console.md, docs/api.md "Retry a job").
--
-- retry_of: the job that POST /api/v1/jobs/{id}/retry submitted this one again from. No
-- foreign key: the retry is a job of its own and outlives whatever becomes of the
-- original; the id is a record, read back through the API in the tenant's scope.
ALTER TABLE jobs ADD COLUMN retry_of uuid;

-- A queue's changes reach the tenant's event stream as queue.* (events_queues_changed()'s
-- body is in sql/functions/97_events.sql, applied right after this; a stub here so the
-- trigger can name it). A row trigger: queues change rarely.
DROP FUNCTION IF EXISTS events_queues_changed();
CREATE FUNCTION events_queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER events_queues_changed AFTER INSERT OR UPDATE OR DELETE ON queues
    FOR EACH ROW EXECUTE FUNCTION events_queues_changed();

-- GET /api/v1/jobs?retry_of=: a job's retries (the console's job page names them).
CREATE INDEX jobs_retry_of ON jobs (retry_of) WHERE retry_of IS NOT NULL;

-- When job_log_append() last sent the stream's job.output event: it sends at most one per
-- 250 ms per stream (sql/functions/50_logs.sql), as a NOTIFY serialises the commits of the
-- transactions that send one.
ALTER TABLE job_log_streams ADD COLUMN notified_at timestamptz;
