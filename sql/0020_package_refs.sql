-- 0020_package_refs: packages named by reference (docs/packages.md, "References and
-- channels"): a job or a schedule may name its package as name@1.4.0, name@latest,
-- name@<channel> or name@sha256:<hex>. A job resolves the reference when it is submitted
-- and keeps both the reference as given (package_ref) and the exact package (package_id);
-- a schedule keeps the reference in its job template and resolves it at each firing.
--
-- Channels: a tenant's named pointers (stable, beta, ...) at one version of a package,
-- moved with PUT /packages/{name}/channels/{channel}. The foreign key on (tenant_id,
-- package_id) keeps a channel from pointing at another tenant's package or at a deleted
-- one (a version a channel points at cannot be deleted: api-packages.c says which).
--
-- Deleting a version: refused while a queued, assigned or running job, a schedule or a
-- channel refers to it; allowed once only finished jobs do. Those keep their reference
-- (package_ref) and lose the id: the foreign key sets it to NULL, and the rule that a job
-- has a command or a package holds for the jobs that can still run.
--
-- The resolver (package_resolve) and the semantic-version sort key (package_semver_key)
-- are in sql/functions/45_packages.sql.

CREATE TABLE package_channels (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    channel     text NOT NULL CHECK (channel ~ '^[a-z][a-z0-9_-]{0,62}$' AND channel <> 'latest'),
    package_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, channel),
    FOREIGN KEY (tenant_id, package_id) REFERENCES packages (tenant_id, id)
);
CREATE INDEX package_channels_package ON package_channels (package_id);

ALTER TABLE package_channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE package_channels FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON package_channels FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
-- (SELECT app_system()), as 0008_system_role.sql made every system_scope policy.
CREATE POLICY system_scope ON package_channels FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON package_channels TO orch_app;

-- A reference is name@selector: at most 128 + 1 + 71 bytes (sha256: and 64 hex digits).
ALTER TABLE jobs ADD COLUMN package_ref text CHECK (length(package_ref) <= 200);

-- The versions of a package with its jobs by package: the delete check counts them.
CREATE INDEX jobs_active_package ON jobs (package_id)
    WHERE package_id IS NOT NULL AND status IN ('queued', 'assigned', 'running');

ALTER TABLE jobs DROP CONSTRAINT jobs_tenant_id_package_id_fkey;
ALTER TABLE jobs ADD CONSTRAINT jobs_tenant_id_package_id_fkey
    FOREIGN KEY (tenant_id, package_id) REFERENCES packages (tenant_id, id)
    ON DELETE SET NULL (package_id);
ALTER TABLE jobs DROP CONSTRAINT jobs_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_check
    CHECK (command IS NOT NULL OR package_id IS NOT NULL
           OR status NOT IN ('queued', 'assigned', 'running'));
