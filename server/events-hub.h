/* events-hub.h: the tenants' live events (jobs, agents, queues, job output) for the
 * console's stream (GET /api/v1/events, api-events.c), from PostgreSQL.
 *
 * The source is the database, not the bus: a job changes state in SQL on whichever node
 * (or in PostgreSQL itself, the reaper's functions), and the triggers that already watch
 * jobs and agents for webhooks (sql/functions/90_webhooks.sql) also pg_notify() channel
 * EVENTS_CHANNEL with {tenant_id, type, created_at, data} (sql/functions/97_events.sql).
 * NOTIFY is sent at commit and dropped with a rollback, so a stream shows only what
 * happened. Each api node holds one LISTEN connection and hands every notification to the
 * streams of its tenant on this node.
 *
 * Bounds: EVENTS_MAX_PER_TENANT streams of one tenant and EVENTS_MAX_PER_NODE in all on a
 * node; a stream's undelivered events past EVENTS_MAX_PENDING mark it overflowed (its
 * handler drops it: a client that does not read is cut off, not buffered for).
 *
 * Threads: one listener thread; events_sub_* are called on the stream's loop thread, and
 * deliveries are posted to that loop (http_loop_post()). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct events_hub;
struct events_sub;

#define EVENTS_CHANNEL        "orch_events"
#define EVENTS_MAX_PER_TENANT 16
#define EVENTS_MAX_PER_NODE   512
#define EVENTS_MAX_PENDING    (256 * 1024)

/* Start listening with db_url (borrowed; the application role's: LISTEN needs no
 * privilege). The connection is made by the thread, and remade after a failure. Returns 0
 * with *ret set, or -errno. */
int events_hub_start(const char *db_url, struct events_hub **ret);
/* Ask every stream to end (EVENTS_END), refuse new ones, and wait, at most timeout_ms,
 * for all to leave. Call before the HTTP server stops. Accepts NULL. */
void events_hub_shutdown(struct events_hub *h, int timeout_ms);
/* Stop the thread and free the hub. Every sub must have left first. Accepts NULL. */
void events_hub_stop(struct events_hub *h);
/* Whether the LISTEN connection is up (a test waits for it before counting on events). */
bool events_hub_listening(struct events_hub *h);

/* Call fn(arg) on the listener thread for every notification of a job that left assigned
 * or running (a slot came free on its agent, on whichever node the result arrived): the
 * dispatcher's kick, so that the leading dispatcher refills a slot freed on another node
 * at once rather than at its next reread of the counts. fn must be cheap and not block.
 * fn NULL removes it; once this returns, the old fn is not running and will not run.
 * Accepts h NULL. */
void events_hub_on_slot_freed(struct events_hub *h, void (*fn)(void *), void *arg);

/* Hand one notification's payload ({tenant_id, type, created_at, data}, as
 * events_notify() in sql/functions/97_events.sql makes it; borrowed) to the streams of its
 * tenant: what the listener thread does with each. Malformed payloads are dropped with a
 * warning. Thread-safe; exported for the tests. */
void events_hub_publish(struct events_hub *h, const char *payload);

/* job.output (new output of a job, from job_log_append()) is sent with every stored chunk;
 * a chatty job makes many. The listener coalesces them per job and stream: the first is
 * published at once, those within EVENTS_OUTPUT_INTERVAL_MS after it are merged (the
 * latest, whose end_offset covers the others, is kept) and published when the interval
 * ends, so a stream gets at most 1000 / EVENTS_OUTPUT_INTERVAL_MS of them a second per job
 * and stream, and the last output is always announced. At most EVENTS_OUTPUT_SLOTS jobs
 * and streams are held back at a time; past that, events go out uncoalesced. */
#define EVENTS_OUTPUT_INTERVAL_MS 250
#define EVENTS_OUTPUT_SLOTS       4096

/* What the listener thread does with each notification: job.output through the
 * coalescing above, anything else straight to events_hub_publish(). now_ms is a monotonic
 * clock in ms. Thread-safe; exported for the tests. */
void events_hub_offer(struct events_hub *h, const char *payload, long long now_ms);
/* Publish the held-back job.output events whose interval has ended by now_ms. Returns the
 * ms until the next one is due, or -1 when none is held. Thread-safe; exported for the
 * tests. */
int events_hub_flush(struct events_hub *h, long long now_ms);

/* Flags of a delivery. */
#define EVENTS_OVERFLOWED 1 /* some events were dropped: the queue was full */
#define EVENTS_END        2 /* the node is stopping: end the stream (and leave) */

/* deliver(arg, text, len, flags) runs on base's loop with the events queued for the sub,
 * already in text/event-stream form (text is borrowed for the call). Never after
 * events_sub_leave() has returned. */
typedef void (*events_deliver_fn)(void *arg, const char *text, size_t len, int flags);

/* Join as a stream of tenant_id (borrowed). Returns 0 with *ret, -EDQUOT when the tenant
 * has EVENTS_MAX_PER_TENANT streams on this node, -EBUSY when the node has
 * EVENTS_MAX_PER_NODE or is stopping, -ENOMEM. */
int events_sub_join(struct events_hub *h, const char *tenant_id, struct event_base *base,
                    events_deliver_fn deliver, void *arg, struct events_sub **ret);
/* Leave; on base's loop thread. No deliver() runs after this. */
void events_sub_leave(struct events_sub *s);
