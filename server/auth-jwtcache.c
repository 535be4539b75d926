/* auth-jwtcache.c: verified access tokens by the SHA-256 of their bytes (see
 * auth-jwtcache.h). */
#include "server/auth-jwtcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

#define JWT_CACHE_PROBE 8

struct slot {
    uint8_t digest[CRYPTO_SHA256_LEN];
    struct jwt_claims claims;
    bool used;
};

struct jwt_cache {
    pthread_mutex_t lock;
    struct slot slots[JWT_CACHE_SLOTS];
};

int jwt_cache_new(struct jwt_cache **ret)
{
    struct jwt_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    *ret = c;
    return 0;
}

void jwt_cache_free(struct jwt_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static size_t home(const uint8_t digest[CRYPTO_SHA256_LEN])
{
    uint32_t h;
    memcpy(&h, digest, sizeof(h));
    return h % JWT_CACHE_SLOTS;
}

/* Called locked. */
static struct slot *find(struct jwt_cache *c, const uint8_t digest[CRYPTO_SHA256_LEN])
{
    size_t i = home(digest);
    for (size_t k = 0; k < JWT_CACHE_PROBE; k++) {
        struct slot *s = &c->slots[(i + k) % JWT_CACHE_SLOTS];
        if (s->used && crypto_equal(s->digest, digest, CRYPTO_SHA256_LEN))
            return s;
    }
    return NULL;
}

/* Called locked: an empty slot, or the one whose token expires first. */
static struct slot *victim(struct jwt_cache *c, const uint8_t digest[CRYPTO_SHA256_LEN])
{
    size_t i = home(digest);
    struct slot *v = NULL;
    for (size_t k = 0; k < JWT_CACHE_PROBE; k++) {
        struct slot *s = &c->slots[(i + k) % JWT_CACHE_SLOTS];
        if (!s->used)
            return s;
        if (!v || s->claims.exp < v->claims.exp)
            v = s;
    }
    return v;
}

int jwt_verify_cached(struct jwt_cache *c, const struct jwt_ring *ring, const struct jwt_params *p,
                      const char *token, size_t len, int64_t now, struct jwt_claims *out,
                      const char **why)
{
    /* What jwt_verify() refuses before reading the token is refused by it, uncached. */
    if (!c || !ring || !token || len == 0 || len > JWT_TOKEN_MAX || !out)
        return jwt_verify(ring, p, token, len, now, out, why);
    uint8_t digest[CRYPTO_SHA256_LEN];
    crypto_sha256(token, len, digest);

    struct jwt_claims claims;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct slot *s = find(c, digest);
    if (s) {
        claims = s->claims;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (hit) {
        int r = jwt_claims_current(&claims, p, now, why);
        if (r == 0)
            *out = claims;
        return r;
    }

    int r = jwt_verify(ring, p, token, len, now, &claims, why);
    if (r < 0)
        return r;
    pthread_mutex_lock(&c->lock);
    s = victim(c, digest);
    memcpy(s->digest, digest, sizeof(s->digest));
    s->claims = claims;
    s->used = true;
    pthread_mutex_unlock(&c->lock);
    *out = claims;
    return 0;
}
