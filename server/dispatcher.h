/* dispatcher.h: the dispatch loop of a node (node.roles "dispatcher").
 *
 * Wakes on the orch.jobs queue (job submissions), on a kick, or every dispatch.tick; runs
 * a dispatch round in PostgreSQL (dispatch_round() in sql/0005_dispatch.sql) and wakes the
 * gateways holding the chosen agents (gateway_notify_node()). */
#pragma once

struct app;
struct dispatcher;

/* Start the dispatch thread. app->gw (the local gateway, or NULL) must not change until
 * dispatcher_stop(). *ret is untouched on failure. Returns 0 or -errno. */
int dispatcher_start(struct app *app, struct dispatcher **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void dispatcher_stop(struct dispatcher *d);
/* Run a round soon, without waiting for the next tick. Thread-safe, cheap. Accepts NULL. */
void dispatcher_kick(struct dispatcher *d);
