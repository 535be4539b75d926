-- 0026_deployment_events: the console's live deployment.created, deployment.progress and
-- deployment.cancelled events (GET /api/v1/events; docs/console.md). A row trigger on
-- package_deployments (created, cancelled) and a statement trigger on
-- package_deployment_targets (states changed) call the functions of
-- sql/functions/97_events.sql, which call events_notify(): the NOTIFY goes out at commit,
-- whichever node or SQL function made the change. The statement trigger sends one event a
-- deployment per statement, not one a target: cancelling a deployment of 1,000 agents, or
-- a heartbeat's deployment_agent_step(), makes one notification per deployment touched.
-- The functions are created empty here because CREATE TRIGGER names them; 97_events.sql,
-- applied right after, gives them their bodies.
DROP FUNCTION IF EXISTS events_deployments_changed();
CREATE FUNCTION events_deployments_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER events_deployments_changed AFTER INSERT OR UPDATE ON package_deployments
    FOR EACH ROW EXECUTE FUNCTION events_deployments_changed();

DROP FUNCTION IF EXISTS events_deployment_targets_changed();
CREATE FUNCTION events_deployment_targets_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER events_deployment_targets_changed AFTER UPDATE ON package_deployment_targets
    REFERENCING OLD TABLE AS old_targets NEW TABLE AS new_targets
    FOR EACH STATEMENT EXECUTE FUNCTION events_deployment_targets_changed();
