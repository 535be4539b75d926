-- 0027_field_checks: the checks of the columns that the job path never writes move from
-- CHECK constraints to row triggers that fire only when a statement writes those columns.
--
-- PostgreSQL 15 reads every CHECK constraint of a table from its stored text
-- (stringToNode) and compiles it at the start of each statement that inserts or updates a
-- row, whichever columns the statement sets: 11.6 KB of node text for the 16 of jobs and
-- 12.7 KB for the 18 of agents. The job path writes one row at a time (a delivery, a
-- start, a result, an agent's load), so that was 14% of PostgreSQL's CPU in
-- tools/bench-dispatch.sh (docs/scaling.md, "Where PostgreSQL's time goes per job").
-- The checks that name a column the job path writes stay CHECK constraints: a job's
-- status, attempt, epoch, error and jobs_check (it names status); an agent's status, load
-- and cached packages. The others are tested by jobs_fields_check() and
-- agents_fields_check() (sql/functions/15_checks.sql), which raise check_violation naming
-- the constraint they replace, BEFORE INSERT or an UPDATE that sets one of their columns.
-- The functions are created empty here because CREATE TRIGGER names them; 15_checks.sql,
-- applied right after, gives them their bodies.
DROP FUNCTION IF EXISTS jobs_fields_check();
CREATE FUNCTION jobs_fields_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_fields_check
    BEFORE INSERT OR UPDATE OF priority, command, package_id, entrypoint, args, env,
        requirements, timeout_ms, max_attempts, idempotency_key, package_ref ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_fields_check();
ALTER TABLE jobs DROP CONSTRAINT jobs_priority_check, DROP CONSTRAINT jobs_command_check,
    DROP CONSTRAINT jobs_entrypoint_check, DROP CONSTRAINT jobs_args_check,
    DROP CONSTRAINT jobs_env_check, DROP CONSTRAINT jobs_requirements_check,
    DROP CONSTRAINT jobs_timeout_ms_check, DROP CONSTRAINT jobs_max_attempts_check,
    DROP CONSTRAINT jobs_idempotency_key_check, DROP CONSTRAINT jobs_package_ref_check,
    DROP CONSTRAINT jobs_package_entrypoint;

DROP FUNCTION IF EXISTS agents_fields_check();
CREATE FUNCTION agents_fields_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_fields_check
    BEFORE INSERT OR UPDATE OF tenant_id, pool_id, name, credential_prefix, credential_hash,
        prev_credential_prefix, prev_credential_hash, slots, capabilities, labels, os, arch,
        hostname, version ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_fields_check();
ALTER TABLE agents DROP CONSTRAINT agents_name_check,
    DROP CONSTRAINT agents_credential_prefix_check, DROP CONSTRAINT agents_credential_hash_check,
    DROP CONSTRAINT agents_prev_credential_prefix_check,
    DROP CONSTRAINT agents_prev_credential_hash_check, DROP CONSTRAINT agents_slots_check,
    DROP CONSTRAINT agents_capabilities_check, DROP CONSTRAINT agents_labels_check,
    DROP CONSTRAINT agents_os_check, DROP CONSTRAINT agents_arch_check,
    DROP CONSTRAINT agents_hostname_check, DROP CONSTRAINT agents_version_check,
    DROP CONSTRAINT agents_pool_platform;
