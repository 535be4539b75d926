-- 80_pools: the platform tenant that owns shared pools' agents and what keeps it fixed
-- (sql/0013_pools.sql creates the first definitions, which its own statements use; these
-- are the same, re-applied on every migrate).

CREATE OR REPLACE FUNCTION platform_tenant() RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '00000000-0000-4000-8000-000000000001'::uuid $$;

CREATE OR REPLACE FUNCTION tenants_platform_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id = platform_tenant() THEN
        RETURN NULL;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE OR REPLACE FUNCTION api_keys_not_platform() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = platform_tenant() THEN
        RAISE foreign_key_violation USING MESSAGE = 'the platform tenant has no API keys';
    END IF;
    RETURN NEW;
END
$$;

-- A pool as the operator API shows it.
CREATE OR REPLACE VIEW pool_view WITH (security_invoker = true) AS
SELECT p.id, json_build_object(
    'id', p.id, 'name', p.name, 'tiers', p.tiers, 'tenants', p.tenants,
    'agent_count', (SELECT count(*) FROM agents a WHERE a.pool_id = p.id),
    'created_at', p.created_at, 'updated_at', p.updated_at) AS doc
  FROM pools p;
