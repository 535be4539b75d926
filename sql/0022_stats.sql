-- 0022_stats: the indexes of GET /api/v1/stats/jobs (server/api-stats.c, docs/api.md "Job
-- statistics"). Each part of that read is a range from the window's first bucket to now:
-- the jobs created (a tenant's: jobs_tenant_list; the platform's: jobs_created), the jobs
-- ended and the first assignments. The time comes first so that one index serves a tenant
-- (its tenant_id checked in the index, without reading the rows of other tenants) and the
-- platform operator (every tenant); either way the read costs what the window holds, not
-- what the table holds. jobs_created carries tenant_id (which row-level security reads) and
-- id (by which a wait joins its job) so that the platform's reads of it, like a tenant's of
-- jobs_tenant_list, need not visit the rows.
CREATE INDEX jobs_created ON jobs (created_at) INCLUDE (tenant_id, id);
CREATE INDEX jobs_finished ON jobs (finished_at, tenant_id) WHERE finished_at IS NOT NULL;
CREATE INDEX job_attempts_first ON job_attempts (assigned_at, tenant_id) WHERE attempt = 1;
