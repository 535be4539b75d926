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
                     + (SELECT coalesce(sum(size_bytes), 0) FROM package_uploads u
                         WHERE u.tenant_id = t.id)
                     + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                         WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'job_log_bytes', (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                       WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'api_calls_today', coalesce((SELECT api_calls FROM usage_counters c WHERE c.tenant_id = t.id
                                   AND c.day = (now() AT TIME ZONE 'UTC')::date), 0)
  ) AS doc
  FROM tenants t;

-- quota_acquire: from 0009_job_logs.sql (0002_api.sql, with storage: packages, the sizes
-- declared by uploads in progress (0024_blob_store.sql) and job output).
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
                    + (SELECT coalesce(sum(size_bytes), 0) FROM package_uploads)
                    + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams
                        WHERE stored_bytes > 0)
            END;
    IF lim IS NULL OR used IS NULL THEN
        RAISE EXCEPTION 'unknown quota resource %', resource USING ERRCODE = '22023';
    END IF;
    IF used + amount > lim THEN
        -- The refusal rolls this transaction back, and an event recorded here with it: the
        -- caller records quota.exceeded afterwards, in a transaction of its own
        -- (quota_note_exceeded()).
        RAISE EXCEPTION 'the tenant''s % quota is exhausted (% of %)', resource, used, lim
            USING ERRCODE = 'OQ001',
                  DETAIL = json_build_object('quota', resource, 'limit', lim, 'used', used,
                                             'requested', amount)::text;
    END IF;
    -- Commits or rolls back with the creation: a creation that fails later sends nothing.
    PERFORM quota_note_usage(resource, lim, used + amount);
END
$$;

-- The quota events (webhook types quota.near and quota.exceeded; state in
-- sql/0018_quota_events.sql; rules in docs/operations.md, "Webhooks"):
--   quota.near      a tenant's use of a resource reaches quota_near_fraction() of its limit
--                   or more, coming from below it (seen when a creation acquires the quota,
--                   and by the daily API call counter as it counts);
--   quota.exceeded  a request is refused because of a quota;
-- each at most once per tenant, resource and kind per quota_event_period(), and quota.near
-- only again after the use went back below the threshold. The data: {resource, limit,
-- used, requested (exceeded), threshold (near)}.
CREATE OR REPLACE FUNCTION quota_near_fraction() RETURNS numeric
    LANGUAGE sql IMMUTABLE AS $$ SELECT 0.8 $$;
CREATE OR REPLACE FUNCTION quota_event_period() RETURNS interval
    LANGUAGE sql IMMUTABLE AS $$ SELECT interval '1 hour' $$;

-- Send the tenant in scope's quota.<p_kind> event about p_resource unless one was sent less
-- than quota_event_period() ago. Returns whether it was sent. The first check reads only,
-- so a refusal repeated within the period writes nothing; the upsert's condition is what
-- makes concurrent callers on several nodes send once.
CREATE OR REPLACE FUNCTION quota_event_send(p_resource text, p_kind text, p_data jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM quota_events
                WHERE tenant_id = app_tenant() AND resource = p_resource AND kind = p_kind
                  AND last_sent_at > now() - quota_event_period()) THEN
        RETURN false;
    END IF;
    INSERT INTO quota_events AS e (tenant_id, resource, kind, last_sent_at)
    VALUES (app_tenant(), p_resource, p_kind, now())
    ON CONFLICT (tenant_id, resource, kind) DO UPDATE SET last_sent_at = now()
     WHERE e.last_sent_at IS NULL OR e.last_sent_at <= now() - quota_event_period();
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM webhook_emit(app_tenant(), 'quota.' || p_kind, p_data);
    RETURN true;
END
$$;

-- Record the tenant in scope's use p_used of p_resource (limit p_limit) after a creation:
-- quota.near when the use crossed the threshold upward. Writes only when the use crosses
-- the threshold either way. Callers hold quota_acquire()'s lock on the resource.
CREATE OR REPLACE FUNCTION quota_note_usage(p_resource text, p_limit bigint, p_used bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    was_above boolean;
    is_above boolean := p_limit > 0 AND p_used >= p_limit * quota_near_fraction();
BEGIN
    SELECT above INTO was_above FROM quota_events
     WHERE tenant_id = app_tenant() AND resource = p_resource AND kind = 'near';
    IF coalesce(was_above, false) = is_above THEN
        RETURN false;
    END IF;
    IF NOT is_above THEN
        UPDATE quota_events SET above = false
         WHERE tenant_id = app_tenant() AND resource = p_resource AND kind = 'near';
        RETURN false;
    END IF;
    INSERT INTO quota_events AS e (tenant_id, resource, kind, above)
    VALUES (app_tenant(), p_resource, 'near', true)
    ON CONFLICT (tenant_id, resource, kind) DO UPDATE SET above = true;
    RETURN quota_event_send(p_resource, 'near',
                            jsonb_build_object('resource', p_resource, 'limit', p_limit,
                                               'used', p_used,
                                               'threshold', quota_near_fraction()));
END
$$;

-- Record a refusal by a quota, from the JSON detail quota_acquire() raised (p_detail:
-- {quota, limit, used, requested}) or one of the same shape: quota.exceeded. For a
-- transaction of its own, after the refused one rolled back.
CREATE OR REPLACE FUNCTION quota_note_exceeded(p_detail jsonb) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF app_tenant() IS NULL OR jsonb_typeof(p_detail->'quota') IS DISTINCT FROM 'string' THEN
        RETURN false;
    END IF;
    RETURN quota_event_send(p_detail->>'quota', 'exceeded',
                            jsonb_build_object('resource', p_detail->'quota',
                                               'limit', p_detail->'limit',
                                               'used', p_detail->'used',
                                               'requested', p_detail->'requested'));
END
$$;

-- The daily API call counter's events, from the statement that admits a tenant's request
-- (server/app.c): p_counted is the count after this call, NULL when the call was refused
-- because the day's quota is spent. The counter grows by one and restarts each day, so
-- exactly one call a day sees the threshold's value: that call sends quota.near.
CREATE OR REPLACE FUNCTION quota_note_api_calls(p_admitted boolean, p_limit bigint,
                                                p_counted bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT p_admitted OR p_limit IS NULL OR p_limit <= 0 THEN
        RETURN false;
    END IF;
    IF p_counted IS NULL THEN
        RETURN quota_note_exceeded(jsonb_build_object('quota', 'api_calls_per_day',
                                                      'limit', p_limit, 'used', p_limit,
                                                      'requested', 1));
    END IF;
    IF p_counted <> ceil(p_limit * quota_near_fraction()) THEN
        RETURN false;
    END IF;
    RETURN quota_event_send('api_calls_per_day', 'near',
                            jsonb_build_object('resource', 'api_calls_per_day',
                                               'limit', p_limit, 'used', p_counted,
                                               'threshold', quota_near_fraction()));
END
$$;

-- The daily API call quota, counted in blocks (server/authcache.h, docs/scaling.md "REST
-- API"): a node reserves up to p_max calls of the caller's tenant (app_tenant()) for today
-- in one short transaction, and counts them in memory. usage_counters.api_calls counts
-- calls reserved, so the sum of every node's blocks never exceeds p_limit. Near the end a
-- block is an eighth of what is left (at least 1), so the calls still unused in other
-- nodes' blocks stay few. p_max 0 reserves nothing and only reads the count. A reservation
-- that reaches the 'near' threshold sends that event, one that finds the quota spent
-- records quota.exceeded (each once per period, quota_event_send()).
CREATE OR REPLACE FUNCTION api_calls_reserve(p_max bigint, p_limit bigint)
RETURNS TABLE (granted bigint, used bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_day date := (now() AT TIME ZONE 'UTC')::date;
    v_old bigint;
    v_near bigint;
BEGIN
    IF p_max IS NULL OR p_max <= 0 OR p_limit IS NULL OR p_limit <= 0 THEN
        SELECT c.api_calls INTO v_old FROM usage_counters c
         WHERE c.tenant_id = app_tenant() AND c.day = v_day;
        granted := 0;
        used := coalesce(v_old, 0);
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO usage_counters AS c (tenant_id, day, api_calls) VALUES (app_tenant(), v_day, 0)
        ON CONFLICT (tenant_id, day) DO NOTHING;
    SELECT c.api_calls INTO v_old FROM usage_counters c
     WHERE c.tenant_id = app_tenant() AND c.day = v_day FOR UPDATE;
    granted := greatest(0, least(p_max, greatest(1, (p_limit - v_old) / 8), p_limit - v_old));
    used := v_old + granted;
    IF granted > 0 THEN
        UPDATE usage_counters c SET api_calls = v_old + granted
         WHERE c.tenant_id = app_tenant() AND c.day = v_day;
        v_near := ceil(p_limit * quota_near_fraction());
        IF v_old + granted >= v_near THEN -- once per period (quota_event_send())
            PERFORM quota_event_send('api_calls_per_day', 'near',
                                     jsonb_build_object('resource', 'api_calls_per_day',
                                                        'limit', p_limit, 'used', v_near,
                                                        'threshold', quota_near_fraction()));
        END IF;
    ELSE
        PERFORM quota_note_exceeded(jsonb_build_object('quota', 'api_calls_per_day',
                                                       'limit', p_limit, 'used', v_old,
                                                       'requested', 1));
    END IF;
    RETURN NEXT;
END
$$;

-- Give back p_n calls of a block reserved on p_day and not used (a node that stops).
CREATE OR REPLACE FUNCTION api_calls_release(p_n bigint, p_day date)
RETURNS void LANGUAGE sql AS $$
    UPDATE usage_counters c SET api_calls = greatest(0, c.api_calls - p_n)
     WHERE c.tenant_id = app_tenant() AND c.day = p_day AND p_n > 0;
$$;
