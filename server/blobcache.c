/* blobcache.c: see blobcache.h. A short list: a few large archives, scanned linearly. */
#include "server/blobcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define BLOBCACHE_MAX_ENTRIES 256
#define BLOBCACHE_KEY_MAX     112 /* "<tenant uuid>/<64 hex>" */

struct blob {
    atomic_int refs;
    char key[BLOBCACHE_KEY_MAX];
    uint64_t used;
    size_t len;
    char data[];
};

struct blobcache {
    pthread_mutex_t lock;
    size_t max_bytes, bytes;
    uint64_t clock;
    struct blob *entries[BLOBCACHE_MAX_ENTRIES];
    int n;
};

int blobcache_new(size_t max_bytes, struct blobcache **ret)
{
    struct blobcache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    *ret = c;
    return 0;
}

void blobcache_free(struct blobcache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        blob_unref(c->entries[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void blob_ref(struct blob *b)
{
    atomic_fetch_add(&b->refs, 1);
}

void blob_unref(struct blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

const void *blob_data(const struct blob *b)
{
    return b->data;
}

size_t blob_len(const struct blob *b)
{
    return b->len;
}

struct blob *blobcache_get(struct blobcache *c, const char *key)
{
    struct blob *b = NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n && !b; i++)
        if (strcmp(c->entries[i]->key, key) == 0) {
            b = c->entries[i];
            b->used = ++c->clock;
            blob_ref(b);
        }
    pthread_mutex_unlock(&c->lock);
    return b;
}

/* Drop the least recently used entry. Lock held. */
static void evict_one_locked(struct blobcache *c)
{
    int old = 0;
    for (int i = 1; i < c->n; i++)
        if (c->entries[i]->used < c->entries[old]->used)
            old = i;
    c->bytes -= c->entries[old]->len;
    blob_unref(c->entries[old]);
    c->entries[old] = c->entries[--c->n];
}

struct blob *blobcache_put(struct blobcache *c, const char *key, const void *data, size_t len)
{
    struct blob *b = malloc(sizeof(*b) + len);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    snprintf(b->key, sizeof(b->key), "%s", key);
    b->len = len;
    memcpy(b->data, data, len);
    if (len == 0 || len > c->max_bytes / 4)
        return b; /* not worth a place */
    pthread_mutex_lock(&c->lock);
    bool present = false;
    for (int i = 0; i < c->n && !present; i++)
        present = strcmp(c->entries[i]->key, key) == 0;
    if (!present) {
        while (c->n > 0 && (c->bytes + len > c->max_bytes || c->n == BLOBCACHE_MAX_ENTRIES))
            evict_one_locked(c);
        b->used = ++c->clock;
        blob_ref(b);
        c->entries[c->n++] = b;
        c->bytes += len;
    }
    pthread_mutex_unlock(&c->lock);
    return b;
}
