-- 0014_assignment_encode: the assignment an agent receives is built in C with proto/'s
-- encoder (proto_assignment_encode(), server/gw-registry.c), the one definition both the
-- server and the agent use; the SQL view that built it before is gone.
DROP VIEW IF EXISTS assignment_view;
