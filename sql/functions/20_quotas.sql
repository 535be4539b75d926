-- 20_quotas: Quotas: the effective limits of each tenant, its usage, and their enforcement.
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- tenant_quotas: from 0010_scheduling.sql.
CREATE OR REPLACE VIEW tenant_quotas WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, t.tier,
       coalesce(t.max_agents, d.max_agents) AS max_agents,
       coalesce(t.max_concurrent_jobs, d.max_concurrent_jobs) AS max_concurrent_jobs,
       coalesce(t.max_schedules, d.max_schedules) AS max_schedules,
       coalesce(t.max_queues, d.max_queues) AS max_queues,
       coalesce(t.max_storage_bytes, d.max_storage_bytes) AS max_storage_bytes,
       coalesce(t.max_api_calls_day, d.max_api_calls_day) AS max_api_calls_day,
       coalesce(t.weight, d.weight) AS weight,
       coalesce(t.max_job_log_bytes, d.max_job_log_bytes) AS max_job_log_bytes
  FROM tenants t JOIN tier_defaults d ON d.tier = t.tier;

-- tenant_usage: from 0009_job_logs.sql.
CREATE OR REPLACE VIEW tenant_usage WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, json_build_object(
    'agents', (SELECT count(*) FROM agents a WHERE a.tenant_id = t.id),
    'concurrent_jobs', (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id
                          AND j.status IN ('assigned', 'running')),
    'schedules', (SELECT count(*) FROM schedules s WHERE s.tenant_id = t.id),
    'queues', (SELECT count(*) FROM queues q WHERE q.tenant_id = t.id),
    'storage_bytes', (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs b
                       WHERE b.tenant_id = t.id)
                     + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                         WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'job_log_bytes', (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                       WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'api_calls_today', coalesce((SELECT api_calls FROM usage_counters c WHERE c.tenant_id = t.id
                                   AND c.day = (now() AT TIME ZONE 'UTC')::date), 0)
  ) AS doc
  FROM tenants t;

-- quota_acquire: from 0009_job_logs.sql (0002_api.sql, with storage: packages and job
-- output).
-- Quotas on created things. quota_acquire('queues') (or 'agents', 'schedules',
-- 'storage_bytes' with an amount) runs in the caller's tenant transaction, before the
-- insert: it serialises the tenant's creators of that resource with an advisory lock,
-- counts what the tenant has (row-level security limits the count to the tenant), and
-- raises SQLSTATE OQ001 with a JSON detail {quota, limit, used, requested} when the
-- creation would go over. The lock holds until commit, so concurrent requests on
-- several nodes cannot both slip under the limit.
CREATE OR REPLACE FUNCTION quota_acquire(resource text, amount bigint DEFAULT 1) RETURNS void
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
                WHEN 'storage_bytes' THEN
                    (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs)
                    + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams
                        WHERE stored_bytes > 0)
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
