/* dispatcher.h: the dispatch loop of a node (dispatch.enabled).
 *
 * Wakes on the orch.jobs queue (job submissions), on a kick, or every dispatch.tick; runs
 * a dispatch round in PostgreSQL (dispatch_round() in sql/0005_dispatch.sql) and wakes the
 * gateways holding the chosen agents (gateway_notify()). */
#pragma once

struct app;
struct gateway;
struct dispatcher;

/* Start the dispatch thread. gw (borrowed, may be NULL) is the local gateway told of each
 * assignment; it must outlive the dispatcher. *ret is untouched on failure. Returns 0 or
 * -errno. */
int dispatcher_start(struct app *app, struct gateway *gw, struct dispatcher **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void dispatcher_stop(struct dispatcher *d);
/* Run a round soon, without waiting for the next tick. Thread-safe, cheap. Accepts NULL. */
void dispatcher_kick(struct dispatcher *d);
