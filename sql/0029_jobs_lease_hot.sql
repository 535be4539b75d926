-- 0029_jobs_lease_hot: renewing a lease writes no index entry.
--
-- An agent's heartbeat renews the lease of every job it runs (api-agentproto.c,
-- renew_listed: lease_expires_at only). While lease_expires_at was indexed (jobs_leased),
-- each renewal was a non-HOT update: a new entry in every index of jobs, for every running
-- job, every heartbeat, which is most of the database's writes once jobs run for minutes.
-- Without that index, and with room left in each page for the new version (fillfactor 85;
-- pages written from now on), a renewal is a heap-only (HOT) update: 3 to 5 times cheaper
-- in PostgreSQL 15 (docs/scaling.md, "Indexes on jobs").
--
-- The reaper (reap_expired_leases, every second) finds expired leases among the active
-- jobs through jobs_active_agent instead: it reads every active job's row, about 0.5 ms
-- per 1,000 running jobs, where the renewals it saves cost 3 to 4 ms per 1,000.
DROP INDEX IF EXISTS jobs_leased;
ALTER TABLE jobs SET (fillfactor = 85);
