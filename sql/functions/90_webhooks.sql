-- 90_webhooks: event webhooks' views and functions (tables in sql/0015_webhooks.sql).

-- webhook_view, webhook_delivery_view: from 0015_webhooks.sql.
CREATE OR REPLACE VIEW webhook_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'url', url, 'events', events, 'description', description, 'enabled', enabled,
    'secret_prefix', secret_prefix, 'created_at', created_at, 'updated_at', updated_at) AS doc
  FROM webhooks;

CREATE OR REPLACE VIEW webhook_delivery_view WITH (security_invoker = true) AS
SELECT id, tenant_id, webhook_id, created_at, json_build_object(
    'id', id, 'webhook_id', webhook_id, 'event_id', event_id, 'type', event_type,
    'status', status, 'attempts', attempts,
    'next_attempt_at', CASE WHEN status IN ('pending', 'delivering') THEN next_attempt_at END,
    'last_status_code', last_status_code, 'last_error', last_error,
    'created_at', created_at, 'updated_at', updated_at, 'delivered_at', delivered_at) AS doc
  FROM webhook_deliveries;

-- A UUID whose first 48 bits are the Unix time in milliseconds (the layout of version 7,
-- as id_uuid7_str() makes in C), so deliveries list in the order they were made.
CREATE OR REPLACE FUNCTION webhook_uuid7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    b bytea := uuid_send(gen_random_uuid());
BEGIN
    b := overlay(b PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                    * 1000)::bigint) FROM 3) FROM 1 FOR 6);
    b := set_byte(b, 6, 112 + (get_byte(b, 6) & 15));
    RETURN encode(b, 'hex')::uuid;
END
$$;

-- Record an event of p_tenant for every enabled subscription of it that wants p_type, in the
-- caller's transaction. Returns the deliveries queued. For events raised in C (agents,
-- quotas, schedules, scaling); a job's state changes come from the triggers below.
CREATE OR REPLACE FUNCTION webhook_emit(p_tenant uuid, p_type text, p_data jsonb)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    ev uuid := gen_random_uuid();
    n int;
BEGIN
    INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)
    SELECT webhook_uuid7(), w.tenant_id, w.id, ev, p_type,
           jsonb_build_object('id', ev, 'type', p_type, 'created_at', now(),
                              'tenant_id', p_tenant, 'data', coalesce(p_data, '{}'))
      FROM webhooks w
     WHERE w.tenant_id = p_tenant AND w.enabled AND p_type = ANY (w.events);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- A job's status changes as events job.<status>: set-based over the statement's rows, and
-- nearly free for a tenant without subscriptions (one index probe of webhooks_enabled).
CREATE OR REPLACE FUNCTION webhook_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The console's live events (97_events.sql), whether or not anyone subscribed.
    PERFORM events_notify(n.tenant_id, 'job.' || n.status,
                          jsonb_build_object('job_id', n.id, 'queue_id', n.queue_id,
                                             'status', n.status, 'previous_status', NULL))
       FROM n;
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE enabled) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)
    SELECT webhook_uuid7(), e.tenant_id, w.id, e.event_id, e.type,
           jsonb_build_object('id', e.event_id, 'type', e.type, 'created_at', now(),
                              'tenant_id', e.tenant_id, 'data', e.data)
      FROM (SELECT n.tenant_id, gen_random_uuid() AS event_id, 'job.' || n.status AS type,
                   jsonb_build_object('job_id', n.id, 'queue_id', n.queue_id,
                                      'status', n.status, 'previous_status', NULL) AS data
              FROM n) e
      JOIN webhooks w ON w.tenant_id = e.tenant_id AND w.enabled AND e.type = ANY (w.events);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM events_notify(n.tenant_id, 'job.' || n.status,
                          jsonb_build_object('job_id', n.id, 'queue_id', n.queue_id,
                                             'status', n.status, 'previous_status', o.status,
                                             'agent_id', n.agent_id))
       FROM n JOIN o ON o.id = n.id
      WHERE n.status IS DISTINCT FROM o.status;
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE enabled) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)
    SELECT webhook_uuid7(), e.tenant_id, w.id, e.event_id, e.type,
           jsonb_build_object('id', e.event_id, 'type', e.type, 'created_at', now(),
                              'tenant_id', e.tenant_id, 'data', e.data)
      FROM (SELECT n.tenant_id, gen_random_uuid() AS event_id, 'job.' || n.status AS type,
                   jsonb_build_object('job_id', n.id, 'queue_id', n.queue_id,
                                      'status', n.status, 'previous_status', o.status) AS data
              FROM n JOIN o ON o.id = n.id
             WHERE n.status IS DISTINCT FROM o.status) e
      JOIN webhooks w ON w.tenant_id = e.tenant_id AND w.enabled AND e.type = ANY (w.events);
    RETURN NULL;
END
$$;

-- An agent's going online or offline as agent.online / agent.offline: a row trigger that
-- fires only when the status changed (sql/0015_webhooks.sql).
CREATE OR REPLACE FUNCTION webhook_agents_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM events_notify(NEW.tenant_id, 'agent.' || NEW.status,
                          jsonb_build_object('agent_id', NEW.id, 'name', NEW.name,
                                             'status', NEW.status,
                                             'previous_status', OLD.status));
    IF NEW.status NOT IN ('online', 'offline') THEN
        RETURN NULL;
    END IF;
    PERFORM webhook_emit(NEW.tenant_id, 'agent.' || NEW.status,
                         jsonb_build_object('agent_id', NEW.id, 'name', NEW.name,
                                            'status', NEW.status,
                                            'previous_status', OLD.status));
    RETURN NULL;
END
$$;

-- Claim the next due delivery for a worker (system scope): at most one in flight per
-- subscription, so a slow endpoint holds back only its own deliveries. The claim is a lease:
-- a worker that dies leaves the row to be claimed again once p_lease_ms has passed.
CREATE OR REPLACE FUNCTION webhook_claim(p_lease_ms bigint)
RETURNS TABLE (id uuid, tenant_id uuid, webhook_id uuid, url text, secret_sealed bytea,
               payload jsonb, attempts int)
LANGUAGE plpgsql AS $$
DECLARE
    d_id uuid;
    w_id uuid;
BEGIN
    SELECT d.id, d.webhook_id INTO d_id, w_id
      FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
     WHERE d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now() AND w.enabled
       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                        WHERE x.webhook_id = d.webhook_id AND x.status = 'delivering'
                          AND x.lease_until > now() AND x.id <> d.id)
     ORDER BY d.next_attempt_at, d.created_at
     LIMIT 1
       FOR UPDATE OF w SKIP LOCKED;
    IF d_id IS NULL THEN
        RETURN;
    END IF;
    -- Asked again with the lock held: a claim committed after this statement's snapshot
    -- was taken is seen now (READ COMMITTED: a new statement, a new snapshot).
    IF EXISTS (SELECT 1 FROM webhook_deliveries x
                WHERE x.webhook_id = w_id AND x.status = 'delivering'
                  AND x.lease_until > clock_timestamp() AND x.id <> d_id) THEN
        RETURN;
    END IF;
    -- The row itself is asked again too: the first statement's snapshot may predate
    -- another worker's claim of it (committed, so the lock on w was free) or its finish.
    -- This statement sees the row as it is now, and waits for a claim in progress.
    RETURN QUERY
    UPDATE webhook_deliveries d
       SET status = 'delivering', attempts = d.attempts + 1,
           lease_until = clock_timestamp() + p_lease_ms * interval '1 millisecond',
           next_attempt_at = clock_timestamp() + p_lease_ms * interval '1 millisecond',
           updated_at = now()
      FROM webhooks w
     WHERE d.id = d_id AND w.id = d.webhook_id
       AND d.status IN ('pending', 'delivering') AND d.next_attempt_at <= now()
    RETURNING d.id, d.tenant_id, d.webhook_id, w.url, w.secret_sealed, d.payload, d.attempts;
END
$$;

-- Record an attempt's outcome: succeeded, or pending again after a delay drawn uniformly
-- from [0, min(p_cap_ms, p_base_ms * 2^(attempts-1))] (exponential backoff with full
-- jitter), or failed after p_max_attempts. Returns the new status (no row: not claimed).
CREATE OR REPLACE FUNCTION webhook_finish(p_id uuid, p_ok boolean, p_code int, p_error text,
                                          p_max_attempts int, p_base_ms bigint, p_cap_ms bigint)
RETURNS text LANGUAGE sql AS $$
    UPDATE webhook_deliveries
       SET status = CASE WHEN p_ok THEN 'succeeded'
                         WHEN attempts >= p_max_attempts THEN 'failed' ELSE 'pending' END,
           next_attempt_at = clock_timestamp() + random()
               * least(p_cap_ms::float8, p_base_ms * power(2::float8, least(attempts - 1, 40)))
               * interval '1 millisecond',
           lease_until = NULL, last_status_code = p_code, last_error = left(p_error, 512),
           delivered_at = CASE WHEN p_ok THEN clock_timestamp() END, updated_at = now()
     WHERE id = p_id AND status = 'delivering'
    RETURNING status
$$;

-- Queue a delivery's event again for its subscription (the API's resend): a new delivery
-- of the same event (same id, so a receiver that dedupes by it sees a repeat). Returns the
-- new delivery's id, NULL when p_id is not a delivery of p_webhook in the caller's scope.
CREATE OR REPLACE FUNCTION webhook_resend(p_webhook uuid, p_id uuid, p_new uuid)
RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)
    SELECT p_new, tenant_id, webhook_id, event_id, event_type, payload
      FROM webhook_deliveries WHERE id = p_id AND webhook_id = p_webhook
    RETURNING id
$$;
