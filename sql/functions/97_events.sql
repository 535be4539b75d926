-- 97_events: the admin console's live events (server/events-hub.h, GET /api/v1/events):
-- a NOTIFY on channel orch_events, which PostgreSQL sends at commit (and drops with a
-- rollback) to every orchd api node listening. Raised by the job and agent triggers of
-- 90_webhooks.sql, so every path that changes a job's or an agent's status, on any node or
-- in SQL, is seen. The payload ({tenant_id, type, created_at, data}) stays far below
-- NOTIFY's 8000 bytes: ids and statuses only; the console reads the rest through the API.
-- One expression with no FROM or WHERE, so that the planner inlines it into the statement
-- that calls it (the job triggers call it once per row): a call through the SQL function
-- executor cost a third more per row (29 against 45 us per row over 20,000 rows).
CREATE OR REPLACE FUNCTION events_notify(p_tenant uuid, p_type text, p_data jsonb)
RETURNS void LANGUAGE sql AS $$
    SELECT CASE WHEN p_tenant IS NOT NULL -- an agent of a shared pool belongs to no tenant
                THEN pg_notify('orch_events', jsonb_build_object(
                         'tenant_id', p_tenant, 'type', p_type, 'created_at', now(),
                         'data', p_data)::text)
           END
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

-- A deployment's creation and cancellation as deployment.created and deployment.cancelled
-- (trigger events_deployments_changed, sql/0026_deployment_events.sql). data: the
-- deployment's id and its package's name and version: the console reads the rest.
CREATE OR REPLACE FUNCTION events_deployments_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (OLD.cancelled_at IS NULL AND NEW.cancelled_at IS NOT NULL) THEN
        PERFORM events_notify(NEW.tenant_id,
                              CASE WHEN TG_OP = 'INSERT' THEN 'deployment.created'
                                   ELSE 'deployment.cancelled' END,
                              jsonb_build_object('deployment_id', NEW.id,
                                                 'package_id', NEW.package_id));
    END IF;
    RETURN NULL;
END
$$;

-- Targets that changed state (pending -> fetching -> cached or failed, or cancelled) as one
-- deployment.progress a deployment and statement (trigger events_deployment_targets_changed,
-- a statement trigger with transition tables): data holds the deployment's id and how many
-- of its targets this statement moved to each state; the console reads the counts.
CREATE OR REPLACE FUNCTION events_deployment_targets_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM events_notify(c.tenant_id, 'deployment.progress',
                          jsonb_build_object('deployment_id', c.deployment_id,
                                             'moved', c.moved))
       FROM (SELECT n.tenant_id, n.deployment_id, jsonb_object_agg(n.state, n.k) AS moved
               FROM (SELECT nt.tenant_id, nt.deployment_id, nt.state, count(*) AS k
                       FROM new_targets nt
                       JOIN old_targets ot USING (deployment_id, agent_id)
                      WHERE nt.state IS DISTINCT FROM ot.state
                      GROUP BY 1, 2, 3) n
              GROUP BY 1, 2) c;
    RETURN NULL;
END
$$;
