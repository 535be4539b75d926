/* metrics-orch.h: orchd's own metrics (docs/operations.md, "Metrics") on the registry of
 * metrics.h, and the operators' listener that serves them at GET /metrics.
 *
 * Counters and histograms are updated where things happen (the HTTP front's observe hook,
 * job submission, the dispatcher, agents' results); gauges are computed at each scrape:
 * process figures from /proc/self, pool and bus state from memory, queue depth, agents by
 * status and tenant names by a few bounded queries as the system role. Labels are bounded:
 * route patterns, status classes, outcome names, and tenants and queues capped at
 * METRICS_ORCH_MAX_TENANT_SERIES label sets with an "other" overflow; never a job or agent
 * id. Every function is thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "server/http.h"

struct app;
struct metrics_orch;

/* Label sets kept per family fed by tenants (tenant id x queue name). */
#define METRICS_ORCH_MAX_TENANT_SERIES 1000
/* Label sets kept per tenant and queue in a family that adds a job's outcome: the statuses
 * an attempt can end in (succeeded, failed, cancelled, dead, queued), and a spare. */
#define METRICS_ORCH_OUTCOMES 6

/* Register orchd's families. Returns 0 with *ret (free with metrics_orch_free(), accepts
 * NULL) or -ENOMEM. */
int metrics_orch_new(struct metrics_orch **ret);
void metrics_orch_free(struct metrics_orch *m);

/* An HTTP request answered: the http_hooks.observe of the API listener (app is the
 * struct app *). */
void metrics_orch_http(void *app, enum http_method method, const char *route, int status,
                       uint64_t dur_ns);

/* n jobs newly submitted by tenant_id to the queue named queue ("" = none). */
void metrics_orch_submitted(struct metrics_orch *m, const char *tenant_id, const char *queue,
                            uint64_t n);
/* A job of tenant_id in the queue named queue ("" = none) assigned to an agent, wait_s
 * seconds after it was submitted (< 0: unknown). */
void metrics_orch_assigned(struct metrics_orch *m, const char *tenant_id, const char *queue,
                           double wait_s);
/* A job of tenant_id in the queue named queue ("" = none) whose attempt ended with the job
 * in status outcome (succeeded, failed, cancelled, dead; queued when it is retried), as
 * reported by its agent, after running run_s seconds (< 0: unknown, never started). */
void metrics_orch_finished(struct metrics_orch *m, const char *tenant_id, const char *queue,
                           const char *outcome, double run_s);
/* A job's first start report, wait_s seconds after its assignment. */
void metrics_orch_started(struct metrics_orch *m, double wait_s);
/* A transaction of the agents' group commit (report-batch.h) committed items exchanges. */
void metrics_orch_agent_commit(struct metrics_orch *m, unsigned items);
/* One of them failed, and its exchanges are redone one by one. */
void metrics_orch_agent_commit_redone(struct metrics_orch *m);
/* An agent's heartbeat received. */
void metrics_orch_heartbeat(struct metrics_orch *m);
/* An agent request admitted, its credential checked from the node's cache or the database
 * (server/agentcache.h). */
void metrics_orch_agent_auth(struct metrics_orch *m, bool cached);
/* The API listener whose open connections orch_http_connections shows (borrowed; NULL:
 * none). Waits for a scrape in progress, so once it returns with NULL the listener may be
 * stopped. */
void metrics_orch_watch_api(struct metrics_orch *m, struct http_server *srv);

/* The operators' listener (metrics.address, metrics.port; metrics.port -1 = none): a
 * plain-HTTP server of its own with the one route GET /metrics, the limits and timeouts
 * of the API's (http.*), one event loop and a few connections. Returns 0 with *ret NULL
 * when disabled, 0 with *ret (stop with http_server_stop()), or < 0 with err filled. */
int metrics_orch_listen(struct app *app, struct http_server **ret, char *err, size_t errlen);
