-- The checks of the columns the job path never writes (sql/0027_field_checks.sql): row
-- triggers BEFORE INSERT and BEFORE an UPDATE that sets one of those columns. A failed
-- check raises check_violation (SQLSTATE 23514, which the server maps to -EINVAL as it did
-- the CHECK constraints) naming the constraint it replaces. Each test is `NOT (check)`:
-- like a CHECK constraint, a check that comes out NULL passes.

CREATE OR REPLACE FUNCTION jobs_fields_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text := CASE
        WHEN NOT (NEW.priority BETWEEN -100 AND 100) THEN 'jobs_priority_check'
        WHEN NOT (length(NEW.command) <= 65536) THEN 'jobs_command_check'
        WHEN NOT (length(NEW.entrypoint) <= 1024) THEN 'jobs_entrypoint_check'
        WHEN NOT (jsonb_typeof(NEW.args) = 'array') THEN 'jobs_args_check'
        WHEN NOT (jsonb_typeof(NEW.env) = 'object') THEN 'jobs_env_check'
        WHEN NOT (jsonb_typeof(NEW.requirements) = 'object') THEN 'jobs_requirements_check'
        WHEN NOT (NEW.timeout_ms BETWEEN 1000 AND 604800000) THEN 'jobs_timeout_ms_check'
        WHEN NOT (NEW.max_attempts BETWEEN 1 AND 100) THEN 'jobs_max_attempts_check'
        WHEN NOT (length(NEW.idempotency_key) BETWEEN 1 AND 255) THEN 'jobs_idempotency_key_check'
        WHEN NOT (length(NEW.package_ref) <= 200) THEN 'jobs_package_ref_check'
        WHEN NOT (NEW.package_id IS NULL OR NEW.entrypoint IS NOT NULL) THEN 'jobs_package_entrypoint'
    END;
BEGIN
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "jobs" violates check constraint "%"', bad
            USING ERRCODE = 'check_violation', CONSTRAINT = bad, TABLE = 'jobs';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION agents_fields_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text := CASE
        WHEN NOT ((NEW.pool_id IS NOT NULL)
                  = (NEW.tenant_id = '00000000-0000-4000-8000-000000000001'::uuid))
            THEN 'agents_pool_platform'
        WHEN NOT (length(NEW.name) BETWEEN 1 AND 128) THEN 'agents_name_check'
        WHEN NOT (length(NEW.credential_prefix) BETWEEN 8 AND 64) THEN 'agents_credential_prefix_check'
        WHEN NOT (length(NEW.credential_hash) = 32) THEN 'agents_credential_hash_check'
        WHEN NOT (length(NEW.prev_credential_prefix) BETWEEN 8 AND 64)
            THEN 'agents_prev_credential_prefix_check'
        WHEN NOT (length(NEW.prev_credential_hash) = 32) THEN 'agents_prev_credential_hash_check'
        WHEN NOT (NEW.slots BETWEEN 1 AND 1024) THEN 'agents_slots_check'
        WHEN NOT (jsonb_typeof(NEW.capabilities) = 'object') THEN 'agents_capabilities_check'
        WHEN NOT (jsonb_typeof(NEW.labels) = 'object') THEN 'agents_labels_check'
        WHEN NOT (length(NEW.os) <= 32) THEN 'agents_os_check'
        WHEN NOT (length(NEW.arch) <= 32) THEN 'agents_arch_check'
        WHEN NOT (length(NEW.hostname) <= 255) THEN 'agents_hostname_check'
        WHEN NOT (length(NEW.version) <= 64) THEN 'agents_version_check'
    END;
BEGIN
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "agents" violates check constraint "%"', bad
            USING ERRCODE = 'check_violation', CONSTRAINT = bad, TABLE = 'agents';
    END IF;
    RETURN NEW;
END
$$;
