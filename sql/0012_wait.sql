-- 0012_wait: placeholder on the h-pools branch so that migration versions have no gap; the
-- real file comes from its own branch (on a merge conflict take the other side).
SELECT 1;
