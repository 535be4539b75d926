-- 0008_reserved: a placeholder that keeps the versions without gaps on this branch.
-- Version 8 belongs to 0008_system_role.sql (the system scope as a database role); when
-- that migration is merged, this file is deleted and replaced by it.
SELECT 1;
