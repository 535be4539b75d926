/* gateway.h: the agent gateway and the background work of a node.
 *
 * Gateway: each agent keeps one long-poll (GET /api/v1/agent/assignments) open on some
 * node; the node remembers it, and answers it as soon as PostgreSQL holds an undelivered
 * assignment for that agent. It learns of one three ways: the agent polls and one is
 * already there; a wake-up on the node's RabbitMQ queue orch.gw.<node> from the
 * dispatcher that made it; or, should a wake-up be lost, a once-a-second check of all the
 * agents waiting on this node.
 *
 * Dispatcher: wakes on the orch.jobs queue (job submissions) or every dispatch.tick, runs
 * a dispatch round in PostgreSQL (dispatch_round() in sql/0005_dispatch.sql) and wakes the
 * gateways holding the chosen agents.
 *
 * Reaper (one node at a time, by advisory lock): leases that ran out, agents gone silent.
 *
 * Liveness: heartbeats are kept in memory and written to PostgreSQL in one batch per
 * flush interval (agents' last_heartbeat_at and their running jobs' leases), so a
 * heartbeat costs no write of its own. */
#pragma once

#include <stdbool.h>

#include "server/http.h"

struct app;
struct gateway;

int gateway_start(struct app *app, struct gateway **ret);
/* Answer every waiting long-poll (empty), stop the threads, free. Call before
 * http_server_stop(). Accepts NULL. */
void gateway_stop(struct gateway *gw);
/* Tell the gateway that agent_id may have an assignment. Thread-safe. */
void gateway_wake(struct gateway *gw, const char *agent_id);

/* A slot came free or an agent came online: run a dispatch round soon, without waiting for
 * the next tick. Thread-safe, cheap. */
void gateway_kick_dispatch(struct gateway *gw);

/* The long-poll handler (GET /api/v1/agent/assignments). */
void gateway_poll(struct http_req *req);

/* Remember a heartbeat (for the batched write). running: JSON array of {job_id, epoch},
 * borrowed. Returns true when this is the agent's first heartbeat on this node (the caller
 * then writes it at once, so the dispatcher sees the agent without waiting for a flush). */
bool gateway_note_heartbeat(struct gateway *gw, const char *agent_id, const json_t *running);
