-- 0015_webhooks: event webhooks (server/api-webhooks.c, server/webhook-*.c, docs/api.md).
--
-- A subscription (webhooks) names an HTTPS URL and the event types it wants. An event is
-- written, in the transaction that makes it happen, as one row of webhook_deliveries per
-- enabled subscription that wants it (the outbox): a job's status change and an agent's
-- going online or offline by the statement triggers below, other events by webhook_emit(). The webhooks role's workers claim due
-- rows (webhook_claim(): at most one in flight per subscription, so one slow endpoint holds
-- only its own), POST them and record the outcome (webhook_finish(): retry with exponential
-- backoff and full jitter, then failed).
--
-- The signing secret is kept sealed (AES-256-GCM under the server's webhook key, server/
-- webhook-secret.c): it must be recovered to sign, so it cannot be hashed.

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (length(url) BETWEEN 9 AND 2048),
    events      text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 32),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 1024),
    enabled     boolean NOT NULL DEFAULT true,
    secret_sealed bytea NOT NULL,
    secret_prefix text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX webhooks_enabled ON webhooks (tenant_id) WHERE enabled;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    webhook_id       uuid NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    last_status_code int,
    last_error       text CHECK (length(last_error) <= 512),
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (updated_at)
    WHERE status IN ('succeeded', 'failed');
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, created_at DESC, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhooks', 'webhook_deliveries']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL'
                       ' USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
        EXECUTE format('CREATE POLICY system_scope ON %I FOR ALL'
                       ' USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO orch_app', t);
    END LOOP;
END
$$;

-- The views the API shows (the same bodies are in sql/functions/90_webhooks.sql).
DROP VIEW IF EXISTS webhook_view;
CREATE VIEW webhook_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'url', url, 'events', events, 'description', description, 'enabled', enabled,
    'secret_prefix', secret_prefix, 'created_at', created_at, 'updated_at', updated_at) AS doc
  FROM webhooks;
GRANT SELECT ON webhook_view TO orch_app;

DROP VIEW IF EXISTS webhook_delivery_view;
CREATE VIEW webhook_delivery_view WITH (security_invoker = true) AS
SELECT id, tenant_id, webhook_id, created_at, json_build_object(
    'id', id, 'webhook_id', webhook_id, 'event_id', event_id, 'type', event_type,
    'status', status, 'attempts', attempts,
    'next_attempt_at', CASE WHEN status IN ('pending', 'delivering') THEN next_attempt_at END,
    'last_status_code', last_status_code, 'last_error', last_error,
    'created_at', created_at, 'updated_at', updated_at, 'delivered_at', delivered_at) AS doc
  FROM webhook_deliveries;
GRANT SELECT ON webhook_delivery_view TO orch_app;

-- The job and agent triggers' functions first (sql/functions/90_webhooks.sql re-applies them).
DROP FUNCTION IF EXISTS webhook_jobs_inserted();
CREATE FUNCTION webhook_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
DROP FUNCTION IF EXISTS webhook_jobs_updated();
CREATE FUNCTION webhook_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
DROP FUNCTION IF EXISTS webhook_agents_updated();
CREATE FUNCTION webhook_agents_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
-- Per row, and only when the status changes: heartbeats update agents all the time, and
-- the WHEN clause keeps them from calling anything (a trigger with transition tables could
-- not name the column).
CREATE TRIGGER webhook_agents_updated AFTER UPDATE OF status ON agents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION webhook_agents_updated();
CREATE TRIGGER webhook_jobs_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION webhook_jobs_inserted();
CREATE TRIGGER webhook_jobs_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT
    EXECUTE FUNCTION webhook_jobs_updated();
