-- 95_schedules: the API's view of a schedule (0016_schedules.sql creates and grants it).
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- schedule_view: from 0016_schedules.sql.
CREATE OR REPLACE VIEW schedule_view WITH (security_invoker = true) AS
SELECT s.id, s.tenant_id, json_build_object(
    'id', s.id, 'name', s.name, 'cron', s.cron, 'timezone', s.timezone,
    'queue', (SELECT q.name FROM queues q WHERE q.id = s.queue_id),
    'job', s.job_template, 'enabled', s.enabled,
    'missed_policy', s.missed_policy, 'overlap_policy', s.overlap_policy,
    'next_run_at', s.next_run_at,
    'last_fired_at', f.fired_at,
    'last_firing', CASE WHEN f.schedule_id IS NULL THEN NULL ELSE json_build_object(
        'scheduled_for', f.scheduled_for, 'fired_at', f.fired_at, 'status', f.status,
        'reason', f.reason, 'job_id', f.job_id,
        -- The fired job's status now (null when skipped, or the job is gone): the console
        -- shows a schedule's last result without a read per job.
        'job_status', (SELECT j.status FROM jobs j WHERE j.id = f.job_id)) END,
    'created_at', s.created_at, 'updated_at', s.updated_at) AS doc
  FROM schedules s
  LEFT JOIN LATERAL (SELECT * FROM schedule_firings x WHERE x.schedule_id = s.id
                      ORDER BY x.scheduled_for DESC LIMIT 1) f ON true;
