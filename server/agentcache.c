/* agentcache.c: the node's memory of admitted agent credentials (see agentcache.h). A
 * chained hash table keyed by the credential's public prefix, grown by doubling; entries
 * older than ttl are swept when it is full. */
#include "server/agentcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENTCACHE_MIN_BUCKETS 1024

struct node {
    struct node *next;
    char prefix[AUTHKEY_PREFIX_LEN + 1];
    struct agentcache_entry e;
    uint64_t at_ns; /* fetched at */
};

struct agentcache {
    pthread_mutex_t lock;
    uint64_t ttl_ns;
    long max;
    uint64_t gen;
    struct node **buckets;
    size_t nbuckets; /* a power of two */
    long count;
};

int agentcache_new(int64_t ttl_ms, long max, struct agentcache **ret)
{
    struct agentcache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->buckets = calloc(AGENTCACHE_MIN_BUCKETS, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->nbuckets = AGENTCACHE_MIN_BUCKETS;
    c->ttl_ns = ttl_ms > 0 ? (uint64_t)ttl_ms * 1000000u : 0;
    c->max = max < 1 ? 1 : max;
    *ret = c;
    return 0;
}

/* Called locked. Remove (and free) every node for which drop(node, arg) holds. */
static void sweep(struct agentcache *c, bool (*drop)(const struct node *n, const void *arg),
                  const void *arg)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct node **pp = &c->buckets[i];
        while (*pp) {
            struct node *n = *pp;
            if (drop(n, arg)) {
                *pp = n->next;
                free(n);
                c->count--;
            } else {
                pp = &n->next;
            }
        }
    }
}

static bool drop_any(const struct node *n, const void *arg)
{
    (void)n;
    (void)arg;
    return true;
}

void agentcache_free(struct agentcache *c)
{
    if (!c)
        return;
    sweep(c, drop_any, NULL);
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Called locked. */
static struct node *find(struct agentcache *c, const char *prefix)
{
    for (struct node *n = c->buckets[hash(prefix) & (c->nbuckets - 1)]; n; n = n->next)
        if (strcmp(n->prefix, prefix) == 0)
            return n;
    return NULL;
}

static bool fresh(const struct agentcache *c, const struct node *n, uint64_t now_ns)
{
    return now_ns >= n->at_ns && now_ns - n->at_ns < c->ttl_ns;
}

uint64_t agentcache_gen(struct agentcache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->lock);
    return g;
}

bool agentcache_get(struct agentcache *c, const char *prefix, uint64_t now_ns,
                    struct agentcache_entry *ret)
{
    if (c->ttl_ns == 0)
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct node *n = find(c, prefix);
    if (n && fresh(c, n, now_ns)) {
        *ret = n->e;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

struct stale_arg {
    const struct agentcache *c;
    uint64_t now_ns;
};

static bool drop_stale(const struct node *n, const void *arg)
{
    const struct stale_arg *a = arg;
    return !fresh(a->c, n, a->now_ns);
}

/* Called locked: make room for one more entry. Returns false when the table is full of
 * fresh entries (more agents than max exchanged within ttl). */
static bool room(struct agentcache *c, uint64_t now_ns)
{
    if (c->count >= c->max) {
        struct stale_arg a = {c, now_ns};
        sweep(c, drop_stale, &a);
        if (c->count >= c->max)
            return false;
    }
    if ((size_t)c->count < c->nbuckets)
        return true;
    size_t nb = c->nbuckets * 2;
    struct node **b = calloc(nb, sizeof(*b));
    if (!b)
        return true; /* longer chains rather than nothing */
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct node *n = c->buckets[i];
        while (n) {
            struct node *next = n->next;
            size_t j = hash(n->prefix) & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = nb;
    return true;
}

void agentcache_put(struct agentcache *c, const char *prefix, const struct agentcache_entry *e,
                    uint64_t gen, uint64_t now_ns)
{
    if (c->ttl_ns == 0 || strlen(prefix) > AUTHKEY_PREFIX_LEN)
        return;
    pthread_mutex_lock(&c->lock);
    if (gen != c->gen)
        goto out;
    struct node *n = find(c, prefix);
    if (!n) {
        if (!room(c, now_ns) || !(n = calloc(1, sizeof(*n))))
            goto out;
        snprintf(n->prefix, sizeof(n->prefix), "%s", prefix);
        size_t i = hash(prefix) & (c->nbuckets - 1);
        n->next = c->buckets[i];
        c->buckets[i] = n;
        c->count++;
    }
    n->e = *e;
    n->at_ns = now_ns;
out:
    pthread_mutex_unlock(&c->lock);
}

static bool drop_of_agent(const struct node *n, const void *arg)
{
    return strcmp(n->e.agent_id, arg) == 0;
}

static bool drop_of_tenant(const struct node *n, const void *arg)
{
    return strcmp(n->e.tenant_id, arg) == 0;
}

static void drop(struct agentcache *c, bool (*fn)(const struct node *n, const void *arg),
                 const void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->gen++;
    sweep(c, fn, arg);
    pthread_mutex_unlock(&c->lock);
}

void agentcache_drop_agent(struct agentcache *c, const char *agent_id)
{
    if (agent_id && agent_id[0])
        drop(c, drop_of_agent, agent_id);
}

void agentcache_drop_tenant(struct agentcache *c, const char *tenant_id)
{
    if (tenant_id && tenant_id[0])
        drop(c, drop_of_tenant, tenant_id);
}

void agentcache_drop_all(struct agentcache *c)
{
    drop(c, drop_any, NULL);
}

long agentcache_count(struct agentcache *c)
{
    pthread_mutex_lock(&c->lock);
    long n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}
