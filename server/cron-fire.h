/* cron-fire.h: the scheduler of a node (node.roles "scheduler"): fires due schedules.
 *
 * Once a second a round takes the scheduler's advisory lock (pg_try_advisory_xact_lock in a
 * system-scope transaction held for the round): one node at a time fires, and when that
 * node dies its connection drops, the lock goes with it and another node's next round
 * fires. Each due schedule fires in its own transaction in its tenant's scope, which
 * inserts the firing record (primary key schedule_id, scheduled_for: a time fires once,
 * whatever node and however often it is tried), submits the job by POST /jobs' path
 * (api_jobs_insert()) and advances next_run_at with cron_next(). The policies and the rule
 * for missed times are in docs/scheduling.md ("Schedules: firing"). */
#pragma once

struct app;
struct cron_fire;

/* Start the scheduler thread. *ret is untouched on failure. Returns 0 or -errno. */
int cron_fire_start(struct app *app, struct cron_fire **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void cron_fire_stop(struct cron_fire *f);
