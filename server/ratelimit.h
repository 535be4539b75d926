/* ratelimit.h: per-tenant token buckets, kept in memory by each orchd node.
 *
 * A bucket holds up to burst tokens and refills at rate tokens per second; a request takes
 * one. The limit is per node: behind a load balancer spreading requests over N nodes a
 * tenant gets up to N times its rate, which docs/api.md states. The daily API call quota,
 * which must hold exactly across nodes, is counted in PostgreSQL instead. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;

struct ratelimit *ratelimit_new(void);
void ratelimit_free(struct ratelimit *rl);

/* Take a token from key's bucket at time now_ns. A key with no bucket yet is allowed
 * (its parameters come from the database on that first request, see ratelimit_set()).
 * Returns true when allowed; otherwise *retry_ms (may be NULL) says when the next token
 * comes. Thread-safe. */
bool ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ns, int64_t *retry_ms);

/* Set key's rate (tokens per second) and burst (> 0). A new bucket starts full less the
 * token of the request that brought the parameters. Thread-safe. */
void ratelimit_set(struct ratelimit *rl, const char *key, double rate, double burst,
                   uint64_t now_ns);
