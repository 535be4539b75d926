/* agentproto-heartbeat.h: an agent's heartbeat in a sync exchange
 * (api-agentproto-heartbeat.c; its own route is api_agent_heartbeat() in api.h). */
#pragma once

#include <stdbool.h>

#include <jansson.h>

#include "proto/agent.h"
#include "server/app.h"
#include "server/http.h"
#include "server/store.h"

/* Take note of a heartbeat (decoded as hb) in memory, once, before its transaction (which
 * may run twice, report-batch.h). Returns true when it is to be written at once: the agent's
 * first on this node, or any on a node without the gateway role. */
bool heartbeat_note(struct app *app, const struct http_principal *p,
                    const struct proto_heartbeat *hb);
/* After the heartbeat's commit (first: heartbeat_note()'s). */
void heartbeat_committed(struct app *app, bool first, const struct proto_heartbeat *hb);
/* Record a heartbeat (decoded as hb; first: heartbeat_note()'s) in tx and build its answer.
 * Returns 0 with *ret set, or a store error. */
int heartbeat(struct app *app, const struct http_principal *p, struct store_tx *tx, bool first,
              const struct proto_heartbeat *hb, json_t **ret);
