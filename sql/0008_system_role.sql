-- 0008_system_role: the system scope is a database role, no longer a setting.
--
-- Until now app_system() read current_setting('app.scope'), which every session may set:
-- connected as orch_app, `SET LOCAL app.scope = 'system'` read and changed every tenant's
-- rows. From this version the system scope is being the role orch_system (or a member of
-- it), which orchd reaches only through a connection of its own (db.system_url). The
-- tenant-facing role cannot become it whatever it sets: it is not a member, so SET ROLE
-- is refused, and only a role with CREATEROLE could make it one. app.scope means nothing
-- any more.
--
-- Why a role tested by the policies rather than BYPASSRLS: BYPASSRLS can only be granted
-- by a superuser, switches off every policy of every table (present and future) instead
-- of the one this schema defines, and would leave FORCE ROW LEVEL SECURITY meaning
-- nothing for that role. Testing membership keeps the system scope inside the policies
-- the schema owns, and fails closed: if the role is missing, every policy raises an
-- error instead of matching.
--
-- The operator creates the role before this migration (docs/operations.md):
--     CREATE ROLE orch_system LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '...' IN ROLE orch_app;
-- The migrations run as the schema owner, which has no CREATEROLE, so this one checks the
-- roles rather than creating them, and refuses to apply when they would leave a hole.
-- orch_system's privileges are orch_app's, through membership: the system scope does the
-- application's work across tenants and needs exactly its table privileges, and grants
-- later migrations make to orch_app reach it without a second list to keep equal.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orch_system') THEN
        RAISE EXCEPTION 'role orch_system does not exist: create it first with CREATE ROLE '
                        'orch_system LOGIN NOBYPASSRLS PASSWORD ''...'' IN ROLE orch_app '
                        '(docs/operations.md)';
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname IN ('orch_app', 'orch_system')
                                      AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'orch_app and orch_system must be neither superusers nor BYPASSRLS';
    END IF;
    IF pg_has_role('orch_app', 'orch_system', 'MEMBER') THEN
        RAISE EXCEPTION 'orch_app is a member of orch_system: the tenant-facing role would '
                        'reach every tenant''s rows; REVOKE orch_system FROM orch_app';
    END IF;
    IF NOT pg_has_role('orch_system', 'orch_app', 'USAGE') THEN
        RAISE EXCEPTION 'orch_system does not hold orch_app''s privileges: GRANT orch_app TO '
                        'orch_system (and give orch_system INHERIT)';
    END IF;
END
$$;

-- Every system_scope policy calls app_system(), so redefining it moves them all at once.
-- current_user, not session_user: inside SET ROLE orch_app an orch_system session is
-- the tenant-facing role and loses the system scope, as it should.
CREATE OR REPLACE FUNCTION app_system() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_has_role(current_user, 'orch_system', 'MEMBER') $$;

-- Every system_scope policy asks (SELECT app_system()) rather than app_system(): a subquery
-- that reads no column runs once per statement (an InitPlan), where a function call in a
-- policy runs once per row it filters. Measured on 500,000 jobs, a full count took
-- ~110 ms as orch_system and ~170 ms for one tenant of ten with the call per row, ~60 ms
-- and ~120 ms with it once (the setting it replaces: ~65 ms and ~140 ms). A table added
-- later with USING (app_system()) is as safe, only slower.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_policies
              WHERE schemaname = 'public' AND policyname = 'system_scope'
    LOOP
        EXECUTE format('ALTER POLICY system_scope ON %I USING ((SELECT app_system()))'
                       ' WITH CHECK ((SELECT app_system()))', t);
    END LOOP;
END
$$;
