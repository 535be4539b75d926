/* reaper.h: the lease reaper of a node (node.roles "reaper").
 *
 * Once a second: jobs whose lease ran out go back to the queue (or dead), agents silent
 * for agent.online_window go offline (reap_expired_leases() in sql/functions/), and old
 * job logs are deleted (logs-retention.h). Several nodes may run it: one at a time does
 * the work, by advisory lock. */
#pragma once

struct app;
struct reaper;

/* Start the reaper thread. *ret is untouched on failure. Returns 0 or -errno. */
int reaper_start(struct app *app, struct reaper **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void reaper_stop(struct reaper *r);
