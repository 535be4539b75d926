-- 0011_placement: placeholder on the h-wait branch so that 0012 has no gap; the placement
-- engine's migration (h-engine) replaces this file when the branches meet.
SELECT 1;
