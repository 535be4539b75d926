-- 30_views: The API's views (security_invoker: row-level security applies as the caller).
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- tenant_view: from 0009_job_logs.sql.
CREATE OR REPLACE VIEW tenant_view WITH (security_invoker = true) AS
SELECT t.id, json_build_object(
    'id', t.id, 'slug', t.slug, 'display_name', t.display_name, 'tier', t.tier,
    'status', t.status, 'weight', q.weight,
    'quotas', json_build_object('agents', q.max_agents, 'concurrent_jobs', q.max_concurrent_jobs,
                                'schedules', q.max_schedules, 'queues', q.max_queues,
                                'storage_bytes', q.max_storage_bytes,
                                'api_calls_per_day', q.max_api_calls_day,
                                'job_log_bytes', q.max_job_log_bytes),
    'overrides', json_build_object('agents', t.max_agents, 'concurrent_jobs', t.max_concurrent_jobs,
                                   'schedules', t.max_schedules, 'queues', t.max_queues,
                                   'storage_bytes', t.max_storage_bytes,
                                   'api_calls_per_day', t.max_api_calls_day,
                                   'rate_per_second', t.rate_per_sec, 'rate_burst', t.rate_burst,
                                   'job_log_bytes', t.max_job_log_bytes, 'weight', t.weight),
    'rate_limit', json_build_object('per_second', coalesce(t.rate_per_sec, d.rate_per_sec),
                                    'burst', coalesce(t.rate_burst, d.rate_burst)),
    'usage', u.doc,
    'created_at', t.created_at, 'updated_at', t.updated_at) AS doc
  FROM tenants t
  JOIN tenant_quotas q ON q.tenant_id = t.id
  JOIN tier_defaults d ON d.tier = t.tier
  JOIN tenant_usage u ON u.tenant_id = t.id;

-- queue_view: from 0002_api.sql.
CREATE OR REPLACE VIEW queue_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'default_priority', default_priority, 'requirements', requirements,
    'paused', paused, 'max_running', max_running, 'created_at', created_at,
    'updated_at', updated_at) AS doc
  FROM queues;

-- api_key_view: from 0002_api.sql.
CREATE OR REPLACE VIEW api_key_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'prefix', prefix, 'role', role, 'created_by', created_by,
    'created_at', created_at, 'expires_at', expires_at, 'last_used_at', last_used_at,
    'revoked_at', revoked_at) AS doc
  FROM api_keys;

-- audit_view: from 0002_api.sql. The columns after doc are what GET /api/v1/audit filters on.
CREATE OR REPLACE VIEW audit_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'tenant_id', tenant_id, 'actor_type', actor_type, 'actor_id', actor_id,
    'action', action, 'object_type', object_type, 'object_id', object_id, 'detail', detail,
    'created_at', created_at) AS doc,
    action, object_type, object_id, actor_type, actor_id, created_at
  FROM audit_log;

-- agent_view: from 0007_packages_dispatch.sql.
-- An agent as the API shows it, now with the jobs it holds and the packages it caches.
CREATE OR REPLACE VIEW agent_view WITH (security_invoker = true) AS
SELECT a.id, a.tenant_id, json_build_object(
    'id', a.id, 'tenant_id', a.tenant_id, 'name', a.name, 'hostname', a.hostname, 'os', a.os,
    'arch', a.arch, 'version', a.version, 'labels', a.labels, 'capabilities', a.capabilities,
    'slots', a.slots, 'status', a.status, 'connected', a.gateway_node IS NOT NULL,
    'running_jobs', (SELECT count(*) FROM jobs j
                      WHERE j.agent_id = a.id AND j.status IN ('assigned', 'running')),
    'cached_packages', cardinality(a.cached_packages),
    'last_heartbeat_at', a.last_heartbeat_at,
    'credential_expires_at', a.credential_expires_at,
    'credential_revoked', a.credential_revoked_at IS NOT NULL,
    'created_at', a.created_at, 'updated_at', a.updated_at) AS doc
  FROM agents a;

-- enrollment_token_view: from 0003_agents.sql.
CREATE OR REPLACE VIEW enrollment_token_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'prefix', prefix, 'labels', labels, 'max_uses', max_uses,
    'uses', uses, 'expires_at', expires_at, 'revoked_at', revoked_at,
    'created_by', created_by, 'created_at', created_at) AS doc
  FROM enrollment_tokens;

-- job_view: from 0004_jobs.sql.
CREATE OR REPLACE VIEW job_view WITH (security_invoker = true) AS
SELECT j.id, j.tenant_id, j.status, j.queue_id, j.agent_id, j.created_at, json_build_object(
    'id', j.id, 'queue_id', j.queue_id, 'queue', q.name, 'status', j.status,
    'priority', j.priority, 'command', j.command, 'package_id', j.package_id,
    'package', j.package_ref, 'entrypoint', j.entrypoint, 'args', j.args, 'env', j.env, 'params', j.params,
    'requirements', j.requirements, 'timeout_ms', j.timeout_ms,
    'max_attempts', j.max_attempts, 'attempt', j.attempt, 'epoch', j.epoch,
    'agent_id', j.agent_id, 'idempotency_key', j.idempotency_key,
    'exit_code', j.exit_code, 'result', j.result, 'error', j.error,
    'cancel_requested', j.cancel_requested, 'not_before', j.not_before,
    'created_at', j.created_at, 'updated_at', j.updated_at, 'started_at', j.started_at,
    'finished_at', j.finished_at, 'retry_of', j.retry_of) AS doc,
       j.retry_of -- last: CREATE OR REPLACE VIEW can only add columns at the end
  FROM jobs j LEFT JOIN queues q ON q.id = j.queue_id;

-- package_view: from 0007_packages_dispatch.sql.
-- A package as the API shows it.
CREATE OR REPLACE VIEW package_view WITH (security_invoker = true) AS
SELECT p.id, p.tenant_id, p.name, p.version, json_build_object(
    'id', p.id, 'name', p.name, 'version', p.version, 'sha256', encode(p.sha256, 'hex'),
    'size_bytes', p.size_bytes, 'entrypoint', p.entrypoint, 'created_at', p.created_at) AS doc
  FROM packages p;
