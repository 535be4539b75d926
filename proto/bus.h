/* bus.h: orchd's messages on RabbitMQ (server/bus.h carries them): the queues and the
 * schema of every message, with the encoder the publisher uses and the decoder the
 * consumer uses. A message is a wake-up or a hint, never the truth: PostgreSQL decides
 * (docs/architecture.md), so a consumer that cannot decode one drops it and relies on its
 * own scan of PostgreSQL.
 *
 * Every message is a JSON object with a `type` (PROTO_BUS_TYPE_*). Decoders accept a
 * message without `type` when its queue carries one kind only (nodes from before `type`
 * sent agent wake-ups without it) and ignore members they do not know (a newer node may
 * add some).
 *
 * Ownership: encoders return malloc'd NUL-terminated compact JSON text (caller free()s),
 * NULL on ENOMEM or an invalid argument. Decoders fill a caller-owned struct; what they
 * allocate is freed by the matching *_clear(). They return 0, -EINVAL with err (may be
 * NULL) naming the offending member, or -ENOMEM.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "common/id.h"
#include "common/jsonv.h"
#include "proto/agent.h"

/* The durable quorum queue of submissions, shared by every node's dispatcher: the default
 * of the `bus.jobs_queue` setting. */
#define PROTO_BUS_JOBS_QUEUE "orch.jobs"
/* Each node's own queue of agent wake-ups: this prefix and the node's name. */
#define PROTO_BUS_GATEWAY_QUEUE_PREFIX "orch.gw."
/* The largest message a consumer reads: a batch of 1000 job ids fits with room. */
#define PROTO_BUS_MSG_MAX  (256 * 1024)
#define PROTO_BUS_JOBS_MAX 1000

#define PROTO_BUS_TYPE_JOBS_SUBMITTED "jobs.submitted"
#define PROTO_BUS_TYPE_AGENT_WAKE     "agent.wake"

/* The wake-up queue of node into out. Returns 0, or -ENAMETOOLONG / -EINVAL (no name). */
int proto_bus_gateway_queue(char *out, size_t len, const char *node);

/* Tables, for the contract test and docs: BusJobsSubmitted, BusAgentWake. */
extern const struct proto_message proto_bus_msg_jobs_submitted;
extern const struct proto_message proto_bus_msg_agent_wake;
const struct proto_message *const *proto_bus_messages(size_t *n);

/* jobs.submitted, on PROTO_BUS_JOBS_QUEUE: a tenant's new jobs, so that a dispatcher
 * places them now rather than at its next scan. */
struct proto_bus_jobs_submitted {
    char tenant_id[ID_STR_LEN];
    char (*job_ids)[ID_STR_LEN]; /* allocated; lower case */
    size_t njobs;
};

/* job_ids: a JSON array of job id strings (borrowed), 1 to PROTO_BUS_JOBS_MAX. */
char *proto_bus_jobs_submitted_encode(const char *tenant_id, const json_t *job_ids);
int proto_bus_jobs_submitted_decode(const char *body, size_t len,
                                    struct proto_bus_jobs_submitted *ret, struct jsonv_error *err);
void proto_bus_jobs_submitted_clear(struct proto_bus_jobs_submitted *m);

/* agent.wake, on a node's gateway queue: an agent held on that node has something to
 * carry (an assignment, a cancel). */
struct proto_bus_agent_wake {
    char agent_id[ID_STR_LEN];
};

char *proto_bus_agent_wake_encode(const char *agent_id);
int proto_bus_agent_wake_decode(const char *body, size_t len, struct proto_bus_agent_wake *ret,
                                struct jsonv_error *err);

/* auth.invalidate, on the fanout exchange PROTO_BUS_AUTH_EXCHANGE, which every api node
 * binds its own exclusive queue (PROTO_BUS_AUTH_QUEUE_PREFIX, its name, "." and its pid) to: an API
 * key was revoked (key_id), a tenant was suspended, changed or deleted (tenant_id), or an agent's
 * credential was revoked or rotated, or the agent disabled or deleted (agent_id), so each node
 * drops what it remembers of it (server/authcache.h, server/agentcache.h). At least one member
 * is set. */
#define PROTO_BUS_AUTH_EXCHANGE        "orch.auth"
#define PROTO_BUS_AUTH_QUEUE_PREFIX    "orch.auth."
#define PROTO_BUS_TYPE_AUTH_INVALIDATE "auth.invalidate"

extern const struct proto_message proto_bus_msg_auth_invalidate;

struct proto_bus_auth_invalidate {
    char key_id[ID_STR_LEN];    /* "" when absent */
    char tenant_id[ID_STR_LEN]; /* "" when absent */
    char agent_id[ID_STR_LEN];  /* "" when absent */
};

/* key_id, tenant_id, agent_id: UUIDs or NULL, not all NULL. */
char *proto_bus_auth_invalidate_encode(const char *key_id, const char *tenant_id,
                                       const char *agent_id);
int proto_bus_auth_invalidate_decode(const char *body, size_t len,
                                     struct proto_bus_auth_invalidate *ret,
                                     struct jsonv_error *err);
