/* authcache.h: what a node remembers about the API keys it has admitted, so that a request
 * is admitted in memory, off the database's critical path (docs/scaling.md, "REST API").
 *
 * Two tables, each under one mutex:
 *   keys: per API key id, its tenant's status, its own validity, the tenant's daily quota
 *       and request rate, as PostgreSQL said at most ttl ago. An entry older than ttl is
 *       not used: that is the bound on staleness, whatever happens to the bus. A revoked
 *       key, a suspended or changed tenant is also pushed over the bus (auth.invalidate,
 *       proto/bus.h) to every node, which drops the entries at once (authcache_drop_*).
 *   blocks: per tenant, the daily API calls this node reserved from PostgreSQL and has not
 *       used yet (api_calls_reserve(), sql/functions/20_quotas.sql). Calls are counted
 *       here; a node asks PostgreSQL for another block when its block is used up. A tenant
 *       whose quota is spent is remembered as such for ttl, so refusals cost no round
 *       trip either.
 *
 * A lookup that misses fetches from PostgreSQL and puts the answer back with the
 * generation it read before the fetch (authcache_gen()): a drop that happened meanwhile
 * bumps the generation and the stale answer is not stored.
 *
 * Thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/id.h"

struct authcache;

struct authcache_entry {
    char tenant_id[ID_STR_LEN];
    bool key_ok;        /* not revoked, not expired */
    bool active;        /* the tenant is active */
    long quota;         /* API calls per day */
    double rate, burst; /* request rate */
};

/* ttl_ms: the bound on staleness (auth.cache_ttl); 0 disables the cache (every request
 * reads PostgreSQL). block_max: the largest block of calls a node reserves at once. */
int authcache_new(int64_t ttl_ms, long block_max, struct authcache **ret);
void authcache_free(struct authcache *c);
int64_t authcache_ttl_ms(const struct authcache *c);

/* The generation to pass to authcache_put() for a fetch that starts now. */
uint64_t authcache_gen(struct authcache *c);
/* key_id's entry if it is younger than ttl at now_ns. */
bool authcache_get(struct authcache *c, const char *key_id, uint64_t now_ns,
                   struct authcache_entry *ret);
/* Store key_id's entry, fetched at now_ns, unless a drop happened since gen was read. */
void authcache_put(struct authcache *c, const char *key_id, const struct authcache_entry *e,
                   uint64_t gen, uint64_t now_ns);

/* Forget a key; every key of a tenant, its block (its calls stay counted in PostgreSQL)
 * and its "quota spent" mark; everything (the bus was
 * lost: messages may have been missed). NULL or "" is ignored. */
void authcache_drop_key(struct authcache *c, const char *key_id);
void authcache_drop_tenant(struct authcache *c, const char *tenant_id);
void authcache_drop_all(struct authcache *c);

enum authcache_take {
    AUTHCACHE_TAKEN, /* one call counted from the node's block */
    AUTHCACHE_EMPTY, /* no calls left in the block: reserve another */
    AUTHCACHE_SPENT, /* the quota was found spent less than ttl ago: refuse */
};

/* Calls left in tenant_id's block of day. */
long authcache_left(struct authcache *c, const char *tenant_id, int64_t day);
/* Count one call of tenant_id on UTC day `day` (days since the epoch). *remaining (may be
 * NULL): the calls of quota this node believes are left today (quota less what all nodes
 * had reserved at this node's last reservation, plus its own unused block): exact on one
 * node, an estimate across nodes, for the RateLimit-Remaining header. */
enum authcache_take authcache_take(struct authcache *c, const char *tenant_id, int64_t day,
                                   uint64_t now_ns, long quota, long *remaining);
/* The largest block a node reserves (api_calls_reserve() gives less near the end of the
 * quota). */
long authcache_block_max(const struct authcache *c);
/* Add `granted` reserved calls of `day` to tenant_id's block, `used` being the count of
 * reserved calls in PostgreSQL after it; granted 0 marks the quota spent until
 * now_ns + ttl. */
void authcache_give(struct authcache *c, const char *tenant_id, int64_t day, long granted,
                    long used, uint64_t now_ns);

/* Empty every block, calling fn for each non-empty one (to give the calls back to
 * PostgreSQL at shutdown). */
void authcache_drain(struct authcache *c,
                     void (*fn)(void *arg, const char *tenant_id, int64_t day, long unused),
                     void *arg);
