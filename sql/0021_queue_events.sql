-- 0021_queue_events: the console's live queue.created, queue.updated and queue.deleted
-- events (GET /api/v1/events; docs/console.md). A row trigger on queues calls
-- events_queues_changed() (sql/functions/97_events.sql), which calls events_notify(): the
-- NOTIFY goes out at commit, whichever node or SQL function made the change. Queues change
-- rarely (a tenant holds at most its quota of them), so a row trigger costs nothing.
-- The function is created empty here because CREATE TRIGGER names it; 97_events.sql,
-- applied right after, gives it its body.
DROP FUNCTION IF EXISTS events_queues_changed();
CREATE FUNCTION events_queues_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE TRIGGER events_queues_changed AFTER INSERT OR UPDATE OR DELETE ON queues
    FOR EACH ROW EXECUTE FUNCTION events_queues_changed();
