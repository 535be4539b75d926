-- 10_scope: Who the current transaction acts for (set by the store on every transaction).
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- app_tenant: from 0001_init.sql.
-- Scope helpers. They read transaction-local settings, so a pooled connection never
-- carries one request's tenant into the next. An empty or missing setting gives NULL,
-- which matches no row: the policies fail closed.
CREATE OR REPLACE FUNCTION app_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- app_system: from 0008_system_role.sql.
-- Every system_scope policy calls app_system(), so redefining it moves them all at once.
-- current_user, not session_user: inside SET ROLE orch_app an orch_system session is
-- the tenant-facing role and loses the system scope, as it should.
CREATE OR REPLACE FUNCTION app_system() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_has_role(current_user, 'orch_system', 'MEMBER') $$;
