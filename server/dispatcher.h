/* dispatcher.h: the dispatch loop of a node (node.roles "dispatcher").
 *
 * Wakes on the orch.jobs queue (job submissions), on a kick, or every dispatch.tick; keeps
 * the placement engine's index (server/placement.h) current from PostgreSQL, commits its
 * proposals with assign_batch() (sql/0011_placement.sql) and wakes the gateways holding
 * the chosen agents (gateway_notify_node()). See docs/scheduling.md. */
#pragma once

struct app;
struct dispatcher;

/* Start the dispatch thread. app->gw (the local gateway, or NULL) must not change until
 * dispatcher_stop(). *ret is untouched on failure. Returns 0 or -errno. */
int dispatcher_start(struct app *app, struct dispatcher **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void dispatcher_stop(struct dispatcher *d);
/* Run a round soon, with fresh counts of active jobs (a slot came free), without waiting
 * for the next tick. Thread-safe, cheap. Accepts NULL. */
void dispatcher_kick(struct dispatcher *d);
/* A slot came free somewhere (a job's end, heard from PostgreSQL by the live events, on any
 * node): rounds with fresh counts, the next within KICK_ROUND_MS of the last, so that a
 * stream of such events costs at most one round each KICK_ROUND_MS. Thread-safe, cheap.
 * Accepts NULL. */
void dispatcher_kick_soon(struct dispatcher *d);
