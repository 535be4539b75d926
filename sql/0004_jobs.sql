-- 0004_jobs: what the jobs API needs.

CREATE VIEW job_view WITH (security_invoker = true) AS
SELECT j.id, j.tenant_id, j.status, j.queue_id, j.agent_id, j.created_at, json_build_object(
    'id', j.id, 'queue_id', j.queue_id, 'queue', q.name, 'status', j.status,
    'priority', j.priority, 'command', j.command, 'package_id', j.package_id,
    'entrypoint', j.entrypoint, 'args', j.args, 'env', j.env, 'params', j.params,
    'requirements', j.requirements, 'timeout_ms', j.timeout_ms,
    'max_attempts', j.max_attempts, 'attempt', j.attempt, 'epoch', j.epoch,
    'agent_id', j.agent_id, 'idempotency_key', j.idempotency_key,
    'exit_code', j.exit_code, 'result', j.result, 'error', j.error,
    'cancel_requested', j.cancel_requested, 'not_before', j.not_before,
    'created_at', j.created_at, 'updated_at', j.updated_at, 'started_at', j.started_at,
    'finished_at', j.finished_at) AS doc
  FROM jobs j LEFT JOIN queues q ON q.id = j.queue_id;

GRANT SELECT ON job_view TO orch_app;

-- Listing a tenant's jobs by status and by queue, newest first.
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status, id DESC);
CREATE INDEX jobs_tenant_queue ON jobs (tenant_id, queue_id, id DESC);
