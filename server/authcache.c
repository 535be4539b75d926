/* authcache.c: the node's memory of admitted API keys and reserved call blocks (see
 * authcache.h). Two small open-addressing tables, as ratelimit.c's: a key probes 8 slots
 * and, when absent, takes the stalest of them. */
#include "server/authcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AC_SLOTS 4096
#define AC_PROBE 8

struct key_slot {
    char key[ID_STR_LEN];
    struct authcache_entry e;
    uint64_t at_ns; /* fetched at; 0 = empty */
};

struct block_slot {
    char tenant[ID_STR_LEN];
    int64_t day;
    long left;
    long db_used;            /* calls reserved by every node, as of the last reservation */
    uint64_t spent_until_ns; /* the quota was spent: refuse until then */
    uint64_t used_ns;        /* last use, for eviction */
};

struct authcache {
    pthread_mutex_t lock;
    int64_t ttl_ms;
    long block_max;
    uint64_t gen;
    struct key_slot keys[AC_SLOTS];
    struct block_slot blocks[AC_SLOTS];
};

int authcache_new(int64_t ttl_ms, long block_max, struct authcache **ret)
{
    struct authcache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->ttl_ms = ttl_ms < 0 ? 0 : ttl_ms;
    c->block_max = block_max < 1 ? 1 : block_max;
    *ret = c;
    return 0;
}

void authcache_free(struct authcache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int64_t authcache_ttl_ms(const struct authcache *c)
{
    return c->ttl_ms;
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool same(const char *slot, const char *key)
{
    return slot[0] && strncmp(slot, key, ID_STR_LEN) == 0;
}

/* Called locked. */
static struct key_slot *key_find(struct authcache *c, const char *key, bool create)
{
    uint32_t h = hash(key);
    struct key_slot *stale = NULL;
    for (uint32_t i = 0; i < AC_PROBE; i++) {
        struct key_slot *s = &c->keys[(h + i) % AC_SLOTS];
        if (same(s->key, key))
            return s;
        if (!stale || s->at_ns < stale->at_ns)
            stale = s;
    }
    if (!create)
        return NULL;
    memset(stale, 0, sizeof(*stale));
    snprintf(stale->key, sizeof(stale->key), "%s", key);
    return stale;
}

/* Called locked. */
static struct block_slot *block_find(struct authcache *c, const char *tenant, bool create)
{
    uint32_t h = hash(tenant);
    struct block_slot *stale = NULL;
    for (uint32_t i = 0; i < AC_PROBE; i++) {
        struct block_slot *s = &c->blocks[(h + i) % AC_SLOTS];
        if (same(s->tenant, tenant))
            return s;
        if (!stale || s->used_ns < stale->used_ns)
            stale = s;
    }
    if (!create)
        return NULL;
    /* An evicted block's calls stay counted in PostgreSQL: the tenant loses them. */
    memset(stale, 0, sizeof(*stale));
    snprintf(stale->tenant, sizeof(stale->tenant), "%s", tenant);
    return stale;
}

uint64_t authcache_gen(struct authcache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->lock);
    return g;
}

bool authcache_get(struct authcache *c, const char *key_id, uint64_t now_ns,
                   struct authcache_entry *ret)
{
    if (c->ttl_ms == 0 || !key_id[0])
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct key_slot *s = key_find(c, key_id, false);
    if (s && s->at_ns && now_ns >= s->at_ns && now_ns - s->at_ns < (uint64_t)c->ttl_ms * 1000000u) {
        *ret = s->e;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void authcache_put(struct authcache *c, const char *key_id, const struct authcache_entry *e,
                   uint64_t gen, uint64_t now_ns)
{
    if (c->ttl_ms == 0 || !key_id[0])
        return;
    pthread_mutex_lock(&c->lock);
    if (gen == c->gen) {
        struct key_slot *s = key_find(c, key_id, true);
        s->e = *e;
        s->at_ns = now_ns ? now_ns : 1;
    }
    pthread_mutex_unlock(&c->lock);
}

void authcache_drop_key(struct authcache *c, const char *key_id)
{
    if (!key_id || !key_id[0])
        return;
    pthread_mutex_lock(&c->lock);
    c->gen++;
    struct key_slot *s = key_find(c, key_id, false);
    if (s)
        memset(s, 0, sizeof(*s));
    pthread_mutex_unlock(&c->lock);
}

void authcache_drop_tenant(struct authcache *c, const char *tenant_id)
{
    if (!tenant_id || !tenant_id[0])
        return;
    pthread_mutex_lock(&c->lock);
    c->gen++;
    for (size_t i = 0; i < AC_SLOTS; i++)
        if (same(c->keys[i].e.tenant_id, tenant_id))
            memset(&c->keys[i], 0, sizeof(c->keys[i]));
    /* Its quota may have changed: the block is dropped (its calls stay counted, the tenant
     * loses them) and the next call reserves under the new quota. */
    struct block_slot *b = block_find(c, tenant_id, false);
    if (b) {
        b->spent_until_ns = 0;
        b->left = 0;
    }
    pthread_mutex_unlock(&c->lock);
}

void authcache_drop_all(struct authcache *c)
{
    pthread_mutex_lock(&c->lock);
    c->gen++;
    memset(c->keys, 0, sizeof(c->keys));
    for (size_t i = 0; i < AC_SLOTS; i++)
        c->blocks[i].spent_until_ns = 0;
    pthread_mutex_unlock(&c->lock);
}

long authcache_left(struct authcache *c, const char *tenant_id, int64_t day)
{
    pthread_mutex_lock(&c->lock);
    struct block_slot *b = block_find(c, tenant_id, false);
    long l = b && b->day == day ? b->left : 0;
    pthread_mutex_unlock(&c->lock);
    return l;
}

enum authcache_take authcache_take(struct authcache *c, const char *tenant_id, int64_t day,
                                   uint64_t now_ns, long quota, long *remaining)
{
    enum authcache_take t = AUTHCACHE_EMPTY;
    long l = 0;
    pthread_mutex_lock(&c->lock);
    struct block_slot *b = block_find(c, tenant_id, false);
    if (b && b->day != day) { /* yesterday's block: its calls were yesterday's */
        b->left = 0;
        b->spent_until_ns = 0;
        b->day = day;
    }
    if (b && b->left > 0) {
        b->left--;
        b->used_ns = now_ns;
        l = quota - b->db_used + b->left;
        t = AUTHCACHE_TAKEN;
    } else if (b && now_ns < b->spent_until_ns) {
        t = AUTHCACHE_SPENT;
    }
    pthread_mutex_unlock(&c->lock);
    if (remaining)
        *remaining = l < 0 ? 0 : l;
    return t;
}

long authcache_block_max(const struct authcache *c)
{
    return c->block_max;
}

void authcache_give(struct authcache *c, const char *tenant_id, int64_t day, long granted,
                    long used, uint64_t now_ns)
{
    pthread_mutex_lock(&c->lock);
    struct block_slot *b = block_find(c, tenant_id, true);
    if (b->day != day) {
        b->left = 0;
        b->day = day;
    }
    b->used_ns = now_ns;
    b->db_used = used;
    if (granted > 0) {
        b->left += granted;
        b->spent_until_ns = 0;
    } else {
        b->spent_until_ns = now_ns + (uint64_t)c->ttl_ms * 1000000u;
    }
    pthread_mutex_unlock(&c->lock);
}

void authcache_drain(struct authcache *c,
                     void (*fn)(void *arg, const char *tenant_id, int64_t day, long unused),
                     void *arg)
{
    for (size_t i = 0; i < AC_SLOTS; i++) {
        pthread_mutex_lock(&c->lock);
        struct block_slot b = c->blocks[i];
        c->blocks[i].left = 0;
        pthread_mutex_unlock(&c->lock);
        if (b.tenant[0] && b.left > 0)
            fn(arg, b.tenant, b.day, b.left);
    }
}
