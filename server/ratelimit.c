/* ratelimit.c: per-tenant token buckets (see ratelimit.h). A small open-addressing table
 * under one mutex: the critical section is a few arithmetic operations. */
#include "server/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RL_KEY_MAX 40
#define RL_SLOTS   4096 /* tenants tracked per node; the least recently used slot is reused */

struct bucket {
    char key[RL_KEY_MAX];
    double tokens;
    double rate, burst;
    uint64_t last_ns;
};

struct ratelimit {
    pthread_mutex_t lock;
    struct bucket slots[RL_SLOTS];
};

struct ratelimit *ratelimit_new(void)
{
    struct ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl)
        pthread_mutex_init(&rl->lock, NULL);
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Find key's bucket, or (create) the stalest of its probe slots. Called locked. */
static struct bucket *lookup(struct ratelimit *rl, const char *key, bool create)
{
    uint32_t h = hash(key) % RL_SLOTS;
    struct bucket *stale = NULL;
    for (int i = 0; i < 8; i++) {
        struct bucket *c = &rl->slots[(h + (uint32_t)i) % RL_SLOTS];
        if (strncmp(c->key, key, RL_KEY_MAX) == 0)
            return c;
        if (!stale || c->last_ns < stale->last_ns)
            stale = c;
    }
    if (!create)
        return NULL;
    memset(stale, 0, sizeof(*stale));
    size_t n = strnlen(key, RL_KEY_MAX - 1);
    memcpy(stale->key, key, n);
    stale->key[n] = '\0';
    return stale;
}

static void refill(struct bucket *b, uint64_t now_ns)
{
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * b->rate;
        b->last_ns = now_ns;
    }
    if (b->tokens > b->burst)
        b->tokens = b->burst;
}

bool ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ns, int64_t *retry_ms)
{
    bool ok = true;
    pthread_mutex_lock(&rl->lock);
    struct bucket *b = lookup(rl, key, false);
    if (b) {
        refill(b, now_ns);
        ok = b->tokens >= 1.0;
        if (ok)
            b->tokens -= 1.0;
        else if (retry_ms)
            *retry_ms = (int64_t)((1.0 - b->tokens) / b->rate * 1000.0) + 1;
    }
    pthread_mutex_unlock(&rl->lock);
    return ok;
}

void ratelimit_set(struct ratelimit *rl, const char *key, double rate, double burst,
                   uint64_t now_ns)
{
    if (rate <= 0 || burst < 1)
        return;
    pthread_mutex_lock(&rl->lock);
    struct bucket *b = lookup(rl, key, false);
    if (!b) {
        b = lookup(rl, key, true);
        b->tokens = burst - 1.0;
        b->last_ns = now_ns;
    }
    b->rate = rate;
    b->burst = burst;
    refill(b, now_ns);
    pthread_mutex_unlock(&rl->lock);
}
