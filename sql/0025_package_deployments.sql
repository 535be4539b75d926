-- 0025_package_deployments: a package version fetched onto every agent of a label set
-- (docs/packages.md, "Deploying a version to agents"). A deployment names one exact
-- version (the reference is resolved when it is created) and its targets are the tenant's
-- agents that matched its labels then; each target moves pending -> fetching -> cached or
-- failed (or cancelled while still pending), in PostgreSQL, so progress survives a restart.
CREATE TABLE package_deployments (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    package_id   uuid NOT NULL,
    package_ref  text NOT NULL CHECK (length(package_ref) BETWEEN 1 AND 300),
    labels       jsonb NOT NULL,
    max_parallel int NOT NULL CHECK (max_parallel BETWEEN 1 AND 1000),
    spread_ms    int NOT NULL CHECK (spread_ms BETWEEN 0 AND 600000),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, package_id) REFERENCES packages (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX package_deployments_list ON package_deployments (tenant_id, created_at DESC, id);

CREATE TABLE package_deployment_targets (
    deployment_id uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    agent_id      uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'fetching', 'cached', 'failed', 'cancelled')),
    reason        text CHECK (length(reason) <= 512),
    attempts      int NOT NULL DEFAULT 0,
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, agent_id),
    FOREIGN KEY (tenant_id, deployment_id) REFERENCES package_deployments (tenant_id, id)
        ON DELETE CASCADE
);
-- What a heartbeat looks for: this agent's targets still to do.
CREATE INDEX package_deployment_targets_open ON package_deployment_targets (agent_id)
    WHERE state IN ('pending', 'fetching');
CREATE INDEX package_deployment_targets_fetching ON package_deployment_targets (deployment_id)
    WHERE state = 'fetching';

ALTER TABLE package_deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE package_deployments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON package_deployments FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON package_deployments FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON package_deployments TO orch_app;

ALTER TABLE package_deployment_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE package_deployment_targets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON package_deployment_targets FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON package_deployment_targets FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON package_deployment_targets TO orch_app;
