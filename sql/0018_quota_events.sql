-- 0018_quota_events: what the quota.near and quota.exceeded webhook events remember
-- (sql/functions/20_quotas.sql, quota_event_send() and its callers; docs/operations.md,
-- "Webhooks").
--
-- One row per tenant, quota resource and kind of event: when the event was last sent (at
-- most one per hour), and for 'near' whether the tenant's use is at or above the
-- threshold, so the event fires again only after the use went back below it.
CREATE TABLE quota_events (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    resource     text NOT NULL CHECK (length(resource) BETWEEN 1 AND 64),
    kind         text NOT NULL CHECK (kind IN ('near', 'exceeded')),
    last_sent_at timestamptz,
    above        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, resource, kind)
);

ALTER TABLE quota_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE quota_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON quota_events FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
-- (SELECT app_system()), as 0008_system_role.sql made every system_scope policy.
CREATE POLICY system_scope ON quota_events FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON quota_events TO orch_app;
