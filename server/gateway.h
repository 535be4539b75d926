/* gateway.h: the agent gateway and the background work of a node.
 *
 * Gateway: each agent keeps one long-poll (GET /api/v1/agent/assignments) open on some
 * node; the node remembers it, and answers it as soon as PostgreSQL holds an undelivered
 * assignment for that agent. It learns of one three ways: the agent polls and one is
 * already there; a wake-up on the node's RabbitMQ queue orch.gw.<node> from the
 * dispatcher that made it; or, should a wake-up be lost, a once-a-second check of all the
 * agents waiting on this node.
 *
 * The dispatcher (dispatcher.h) and the reaper (reaper.h) are roles of their own
 * (node.roles); a node without the gateway role has no struct gateway (app->gw is NULL)
 * and refuses agents' long-polls with 503.
 *
 * Liveness: heartbeats are kept in memory and written to PostgreSQL in one batch per
 * flush interval (agents' last_heartbeat_at and load figures); a heartbeat's own
 * transaction renews the leases of the jobs it lists (api-agentproto-heartbeat.c), nothing else.
 *
 * Files: gateway.c (start, stop), gw-registry.c (long-polls, wake-ups, the checker),
 * gw-liveness.c (heartbeats), gw-hash.c (agent-id tables); what they share is in
 * gateway-internal.h. */
#pragma once

struct proto_job_ref;
struct proto_load;

#include <stdbool.h>

#include "server/http.h"
#include "server/store.h"

struct app;
struct buf;
struct dispatcher;
struct gateway;

int gateway_start(struct app *app, struct gateway **ret);
/* Answer every waiting long-poll (empty), stop the threads, free. Call before
 * http_server_stop(). Accepts NULL. */
void gateway_stop(struct gateway *gw);
/* Tell the gateway that agent_id may have an assignment (or a cancel). Thread-safe. */
void gateway_wake(struct gateway *gw, const char *agent_id);
/* The same for an agent whose connection node (agents.gateway_node) holds: this node
 * directly, another through its queue orch.gw.<node>; NULL = this node. Thread-safe. */
void gateway_notify(struct gateway *gw, const char *agent_id, const char *node);

/* Wake agent_id's gateway from anywhere on this node: through app->gw when this node has
 * the gateway role (as gateway_notify()), else through node's queue (NULL: nobody to
 * wake; the agent's gateway finds the work within a second). Thread-safe. */
void gateway_notify_node(struct app *app, const char *agent_id, const char *node);

/* A slot came free or an agent came online: run a dispatch round soon, without waiting for
 * the next tick. Thread-safe, cheap. Accepts NULL. A node without the dispatcher role
 * kicks nobody (dispatchers elsewhere run every dispatch.tick). */
void gateway_kick_dispatch(struct gateway *gw);
/* The local dispatcher gateway_kick_dispatch() kicks (borrowed; NULL: none). Set it to
 * NULL before stopping the dispatcher. Accepts gw NULL. */
void gateway_set_dispatcher(struct gateway *gw, struct dispatcher *d);

/* Agents' requests held on this node now (long-polls waiting for work, those being looked
 * at for it included). Thread-safe. Accepts NULL (0). */
int gateway_held(struct gateway *gw);

/* The long-poll handler (GET /api/v1/agent/assignments). */
void gateway_poll(struct http_req *req);

/* refs as two PostgreSQL array texts, "{id,...}" into ids and "{epoch,...}" into epochs
 * (both BUF_INIT before; the caller frees them). Returns 0 or -ENOMEM. */
int gateway_refs_arrays(const struct proto_job_ref *refs, size_t n, struct buf *ids,
                        struct buf *epochs);

/* Claim agent_id's undelivered cancels and (when assign) assignments in tx (they count as
 * delivered once tx commits); again: also assignments delivered before but not yet
 * reported started (the agent lost an answer), except the nheld attempts of held, which the
 * agent says it has. *ret gets the answer text {"assignments": [...], "lease_s": N,
 * "cancel": [{job_id, epoch}]} when there is anything, else NULL. Returns 0 or a store
 * error, or -ENOMEM (then tx must be rolled back, not committed: the claim is in it). */
int gateway_claim(struct app *app, struct store_tx *tx, const char *agent_id, bool assign,
                  bool again, const struct proto_job_ref *held, size_t nheld, char **ret);

/* A new request of agent_id: its older held request, if any (the agent has one connection,
 * so that one was given up), gets its empty answer now and claims nothing more. */
void gateway_supersede(struct gateway *gw, const char *agent_id);

/* Answer an agent's request with base (stolen; NULL = a plain long-poll's answer) plus
 * what was claimed (text from gateway_claim(), stolen, or NULL). With nothing claimed and
 * wait_s > 0, hold the request until there is something for this agent (an assignment,
 * when assign, or a cancel: then claim and answer) or wait_s seconds pass (then answer
 * with empty lists). A node that holds gateway.max_waiters requests already answers 503
 * unavailable with Retry-After instead: an empty 200 would bring the agent straight back. */
void gateway_answer(struct http_req *req, json_t *base, char *assigned, bool assign, long wait_s);

/* Remember a heartbeat (for the batched write). load: the heartbeat's load figures
 * (borrowed), or NULL: its free memory
 * (memory_available_bytes), free disk and CPU are written with the batch (the placement
 * engine checks jobs' minimum free memory and disk against them); a figure that is absent
 * (negative) or out of bounds leaves the stored one as it was. Returns true when this is
 * the agent's first heartbeat on this node (the caller then writes it at once, so the
 * dispatcher sees the agent without waiting for a flush). */
bool gateway_note_heartbeat(struct gateway *gw, const char *agent_id,
                            const struct proto_load *load);
