-- 0015: placeholder so that 0016 has no gap on this branch; h-sched's 0015_schedules.sql
-- replaces it at the merge (take theirs).
SELECT 1;
