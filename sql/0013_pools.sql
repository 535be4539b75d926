-- 0013_pools: shared agent pools (the table pools and agents.pool_id are in 0010).
--
-- Whose agents. Every agent row has a tenant (NOT NULL, row-level security): an agent of a
-- pool belongs to the platform tenant, one row made here with a fixed id
-- (platform_tenant()). It is not a customer: the operator API neither lists nor shows it,
-- nor changes or deletes it (a trigger makes an UPDATE or DELETE of it a no-op, so the API
-- answers 404), it has no API keys (so no principal ever acts in its scope but its pool
-- agents), and its agents take no agent quota, its own or anyone's (the enrolment of a pool
-- agent skips quota_acquire('agents')). An agent is a pool agent exactly when it is the
-- platform tenant's, and then it names its pool.
--
-- Enrolment. An operator makes enrolment tokens for a pool (POST /pools/{id}/
-- enrollment-tokens): rows of enrollment_tokens of the platform tenant with pool_id set.
-- `orch-agent register` with one makes an agent of that pool.
--
-- Which jobs. A pool admits a tenant when the tenant's tier is in its tiers or its id in
-- its tenants (admitting_pools(), sql/0012_wait.sql). A pool agent runs jobs of every
-- admitted tenant; the agent protocol of a pool agent runs in the system scope, each
-- statement bound to the calling agent's id (server/app.c, app_agent_scope()).

DROP FUNCTION IF EXISTS platform_tenant();
CREATE FUNCTION platform_tenant() RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '00000000-0000-4000-8000-000000000001'::uuid $$;
GRANT EXECUTE ON FUNCTION platform_tenant() TO orch_app;

-- The owner inserts it (FORCE would hold it to the policies, under which only orch_system
-- writes tenants); the slug is 'platform' unless a customer has it already.
ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY;
INSERT INTO tenants (id, slug, display_name, tier)
SELECT platform_tenant(),
       CASE WHEN EXISTS (SELECT FROM tenants WHERE slug = 'platform')
            THEN 'platform-' || substr(md5(random()::text), 1, 8) ELSE 'platform' END,
       'Platform (shared agent pools)', 'enterprise';
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

DROP FUNCTION IF EXISTS tenants_platform_fixed();
CREATE FUNCTION tenants_platform_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id = platform_tenant() THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER tenants_platform_fixed BEFORE UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_platform_fixed();

-- The platform tenant has no API keys: 23503, which the API answers "no such tenant".
DROP FUNCTION IF EXISTS api_keys_not_platform();
CREATE FUNCTION api_keys_not_platform() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = platform_tenant() THEN
        RAISE foreign_key_violation USING MESSAGE = 'the platform tenant has no API keys';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER api_keys_not_platform BEFORE INSERT OR UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_not_platform();

ALTER TABLE agents ADD CONSTRAINT agents_pool_platform
    CHECK ((pool_id IS NOT NULL) = (tenant_id = '00000000-0000-4000-8000-000000000001'::uuid));

ALTER TABLE enrollment_tokens ADD COLUMN pool_id uuid REFERENCES pools (id) ON DELETE CASCADE;
ALTER TABLE enrollment_tokens ADD CONSTRAINT enrollment_tokens_pool_platform
    CHECK ((pool_id IS NOT NULL) = (tenant_id = '00000000-0000-4000-8000-000000000001'::uuid));

-- A pool as the operator API shows it.
DROP VIEW IF EXISTS pool_view;
CREATE VIEW pool_view WITH (security_invoker = true) AS
SELECT p.id, json_build_object(
    'id', p.id, 'name', p.name, 'tiers', p.tiers, 'tenants', p.tenants,
    'agent_count', (SELECT count(*) FROM agents a WHERE a.pool_id = p.id),
    'created_at', p.created_at, 'updated_at', p.updated_at) AS doc
  FROM pools p;
GRANT SELECT ON pool_view TO orch_app;
