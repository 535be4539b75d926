-- 97_events: the admin console's live events (server/events-hub.h, GET /api/v1/events):
-- a NOTIFY on channel orch_events, which PostgreSQL sends at commit (and drops with a
-- rollback) to every orchd api node listening. Raised by the job and agent triggers of
-- 90_webhooks.sql, so every path that changes a job's or an agent's status, on any node or
-- in SQL, is seen. The payload ({tenant_id, type, created_at, data}) stays far below
-- NOTIFY's 8000 bytes: ids and statuses only; the console reads the rest through the API.
CREATE OR REPLACE FUNCTION events_notify(p_tenant uuid, p_type text, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('orch_events', jsonb_build_object(
        'tenant_id', p_tenant, 'type', p_type, 'created_at', now(), 'data', p_data)::text)
     WHERE p_tenant IS NOT NULL -- an agent of a shared pool belongs to no tenant
$$;

-- A queue's changes as queue.created, queue.paused, queue.resumed, queue.updated (any other
-- change) and queue.deleted (trigger events_queues_changed, sql/0021_queue_events.sql).
CREATE OR REPLACE FUNCTION events_queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q queues%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    PERFORM events_notify(q.tenant_id,
                          CASE WHEN TG_OP = 'INSERT' THEN 'queue.created'
                               WHEN TG_OP = 'DELETE' THEN 'queue.deleted'
                               WHEN NEW.paused AND NOT OLD.paused THEN 'queue.paused'
                               WHEN OLD.paused AND NOT NEW.paused THEN 'queue.resumed'
                               ELSE 'queue.updated' END,
                          jsonb_build_object('queue_id', q.id, 'name', q.name,
                                             'paused', q.paused));
    RETURN NULL;
END
$$;
