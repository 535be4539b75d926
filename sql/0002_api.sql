-- 0002_api: what the REST API needs beyond the first schema.

-- Per-tier request-rate limit: a token bucket refilled at rate_per_sec up to rate_burst,
-- kept by each orchd node for each tenant.
ALTER TABLE tier_defaults
    ADD COLUMN rate_per_sec int NOT NULL DEFAULT 5 CHECK (rate_per_sec > 0),
    ADD COLUMN rate_burst int NOT NULL DEFAULT 20 CHECK (rate_burst > 0);
UPDATE tier_defaults SET rate_per_sec = 5, rate_burst = 20 WHERE tier = 'free';
UPDATE tier_defaults SET rate_per_sec = 20, rate_burst = 50 WHERE tier = 'standard';
UPDATE tier_defaults SET rate_per_sec = 100, rate_burst = 200 WHERE tier = 'professional';
UPDATE tier_defaults SET rate_per_sec = 500, rate_burst = 1000 WHERE tier = 'enterprise';
-- ...overridable per tenant like the quotas (NULL = the tier's).
ALTER TABLE tenants
    ADD COLUMN rate_per_sec int CHECK (rate_per_sec > 0),
    ADD COLUMN rate_burst int CHECK (rate_burst > 0);

-- Operator tokens are found by their public prefix, like API keys, and the secret's hash
-- is then compared in constant time.
ALTER TABLE operator_tokens ADD COLUMN prefix text UNIQUE CHECK (length(prefix) BETWEEN 8 AND 64);

-- The audit log is read newest first, per tenant or across all.
CREATE INDEX audit_log_created ON audit_log (created_at DESC, id DESC);

-- Quotas on created things. quota_acquire('queues') (or 'agents', 'schedules',
-- 'storage_bytes' with an amount) runs in the caller's tenant transaction, before the
-- insert: it serialises the tenant's creators of that resource with an advisory lock,
-- counts what the tenant has (row-level security limits the count to the tenant), and
-- raises SQLSTATE OQ001 with a JSON detail {quota, limit, used, requested} when the
-- creation would go over. The lock holds until commit, so concurrent requests on
-- several nodes cannot both slip under the limit.
CREATE FUNCTION quota_acquire(resource text, amount bigint DEFAULT 1) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    lim bigint;
    used bigint;
BEGIN
    IF app_tenant() IS NULL THEN
        RAISE EXCEPTION 'quota_acquire needs a tenant in scope' USING ERRCODE = '42501';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(app_tenant()::text || '/' || resource, 0));
    SELECT CASE resource
               WHEN 'queues' THEN max_queues
               WHEN 'agents' THEN max_agents
               WHEN 'schedules' THEN max_schedules
               WHEN 'storage_bytes' THEN max_storage_bytes
           END
      INTO lim FROM tenant_quotas WHERE tenant_id = app_tenant();
    used := CASE resource
                WHEN 'queues' THEN (SELECT count(*) FROM queues)
                WHEN 'agents' THEN (SELECT count(*) FROM agents)
                WHEN 'schedules' THEN (SELECT count(*) FROM schedules)
                WHEN 'storage_bytes' THEN (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs)
            END;
    IF lim IS NULL OR used IS NULL THEN
        RAISE EXCEPTION 'unknown quota resource %', resource USING ERRCODE = '22023';
    END IF;
    IF used + amount > lim THEN
        RAISE EXCEPTION 'the tenant''s % quota is exhausted (% of %)', resource, used, lim
            USING ERRCODE = 'OQ001',
                  DETAIL = json_build_object('quota', resource, 'limit', lim, 'used', used,
                                             'requested', amount)::text;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION quota_acquire(text, bigint) TO orch_app;

-- The JSON documents the API returns, built where the data is. security_invoker: the
-- caller's row-level security applies.
CREATE VIEW tenant_usage WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, json_build_object(
    'agents', (SELECT count(*) FROM agents a WHERE a.tenant_id = t.id),
    'concurrent_jobs', (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id
                          AND j.status IN ('assigned', 'running')),
    'schedules', (SELECT count(*) FROM schedules s WHERE s.tenant_id = t.id),
    'queues', (SELECT count(*) FROM queues q WHERE q.tenant_id = t.id),
    'storage_bytes', (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs b
                       WHERE b.tenant_id = t.id),
    'api_calls_today', coalesce((SELECT api_calls FROM usage_counters c WHERE c.tenant_id = t.id
                                   AND c.day = (now() AT TIME ZONE 'UTC')::date), 0)
  ) AS doc
  FROM tenants t;

CREATE VIEW tenant_view WITH (security_invoker = true) AS
SELECT t.id, json_build_object(
    'id', t.id, 'slug', t.slug, 'display_name', t.display_name, 'tier', t.tier,
    'status', t.status,
    'quotas', json_build_object('agents', q.max_agents, 'concurrent_jobs', q.max_concurrent_jobs,
                                'schedules', q.max_schedules, 'queues', q.max_queues,
                                'storage_bytes', q.max_storage_bytes,
                                'api_calls_per_day', q.max_api_calls_day),
    'overrides', json_build_object('agents', t.max_agents, 'concurrent_jobs', t.max_concurrent_jobs,
                                   'schedules', t.max_schedules, 'queues', t.max_queues,
                                   'storage_bytes', t.max_storage_bytes,
                                   'api_calls_per_day', t.max_api_calls_day,
                                   'rate_per_second', t.rate_per_sec, 'rate_burst', t.rate_burst),
    'rate_limit', json_build_object('per_second', coalesce(t.rate_per_sec, d.rate_per_sec),
                                    'burst', coalesce(t.rate_burst, d.rate_burst)),
    'usage', u.doc,
    'created_at', t.created_at, 'updated_at', t.updated_at) AS doc
  FROM tenants t
  JOIN tenant_quotas q ON q.tenant_id = t.id
  JOIN tier_defaults d ON d.tier = t.tier
  JOIN tenant_usage u ON u.tenant_id = t.id;

CREATE VIEW queue_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'default_priority', default_priority, 'requirements', requirements,
    'paused', paused, 'created_at', created_at, 'updated_at', updated_at) AS doc
  FROM queues;

CREATE VIEW api_key_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'prefix', prefix, 'role', role, 'created_by', created_by,
    'created_at', created_at, 'expires_at', expires_at, 'last_used_at', last_used_at,
    'revoked_at', revoked_at) AS doc
  FROM api_keys;

CREATE VIEW audit_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'tenant_id', tenant_id, 'actor_type', actor_type, 'actor_id', actor_id,
    'action', action, 'object_type', object_type, 'object_id', object_id, 'detail', detail,
    'created_at', created_at) AS doc
  FROM audit_log;

GRANT SELECT ON tenant_usage, tenant_view, queue_view, api_key_view, audit_view TO orch_app;
