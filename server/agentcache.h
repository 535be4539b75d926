/* agentcache.h: what a node remembers about the agent credentials it has admitted, so that
 * an agent's exchange (heartbeat, long poll, report) is authenticated in memory instead of
 * by a PostgreSQL query on the event loop (docs/scaling.md, "Agents held on one node").
 *
 * Per credential prefix: the agent, its tenant, the SHA-256 PostgreSQL holds for that
 * prefix and when the credential stops being valid (its expiry, or the end of the grace
 * period of a rotated-out credential), as PostgreSQL said at most ttl ago. Only admitted
 * credentials are remembered; a presented secret is still hashed and compared, in constant
 * time, on every request. Revoking, disabling, rotating or deleting an agent and
 * suspending its tenant are pushed over the bus (auth.invalidate, proto/bus.h) to every
 * node, which drops the entries at once; an entry older than ttl is not used, whatever
 * happens to the bus: that is the bound on staleness when a push is lost.
 *
 * A lookup that misses fetches from PostgreSQL and stores the answer with the generation
 * it read before the fetch (agentcache_gen()): a drop meanwhile bumps the generation and
 * the answer, which may predate the change, is not stored.
 *
 * The table grows with the agents (about 250 bytes each) up to max entries; past that,
 * answers are not stored. Thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/id.h"
#include "server/auth-keys.h"

struct agentcache;

struct agentcache_entry {
    char agent_id[ID_STR_LEN];
    char tenant_id[ID_STR_LEN];
    char hash_hex[65];     /* SHA-256 of the credential, as PostgreSQL holds it */
    int64_t valid_until_s; /* seconds since the epoch; 0: no end */
    int64_t expires_s;     /* the credential's own expiry; 0: none */
    bool pool;             /* the agent is in a shared pool */
};

/* ttl_ms: the bound on staleness (auth.agent_cache_ttl); 0 disables the cache. max: the
 * most entries kept. */
int agentcache_new(int64_t ttl_ms, long max, struct agentcache **ret);
/* Accepts NULL. */
void agentcache_free(struct agentcache *c);

/* The generation to pass to agentcache_put() for a fetch that starts now. */
uint64_t agentcache_gen(struct agentcache *c);
/* prefix's entry if it was fetched less than ttl before now_ns (monotonic). */
bool agentcache_get(struct agentcache *c, const char *prefix, uint64_t now_ns,
                    struct agentcache_entry *ret);
/* Store prefix's entry, fetched at now_ns, unless a drop happened since gen was read. */
void agentcache_put(struct agentcache *c, const char *prefix, const struct agentcache_entry *e,
                    uint64_t gen, uint64_t now_ns);

/* Forget every credential of an agent; of every agent of a tenant; everything (the bus
 * was lost: messages may have been missed). NULL or "" is ignored. */
void agentcache_drop_agent(struct agentcache *c, const char *agent_id);
void agentcache_drop_tenant(struct agentcache *c, const char *tenant_id);
void agentcache_drop_all(struct agentcache *c);

/* Entries held now (fresh or not). */
long agentcache_count(struct agentcache *c);
