/* blobcache.h: package archives kept in orchd's memory, so that a package fetched by many
 * agents at once is read from PostgreSQL once. Archives are immutable and named by
 * tenant and SHA-256, so a cached copy is never stale, and a key with the tenant in it
 * never serves one tenant another's bytes (the caller has checked the package is the
 * tenant's). Least recently used out beyond a byte cap. Thread-safe; blobs are reference
 * counted, so one can be sent while it leaves the cache. */
#pragma once

#include <stddef.h>

struct blobcache;
struct blob;

/* max_bytes 0: a cache that keeps nothing. */
int blobcache_new(size_t max_bytes, struct blobcache **ret);
void blobcache_free(struct blobcache *c);

/* A new reference to the blob of key (tenant "/" sha256), or NULL. */
struct blob *blobcache_get(struct blobcache *c, const char *key);
/* A new blob holding a copy of data, cached under key when it fits in a quarter of the
 * cap; returns a new reference, or NULL on ENOMEM. */
struct blob *blobcache_put(struct blobcache *c, const char *key, const void *data, size_t len);

void blob_ref(struct blob *b);
void blob_unref(struct blob *b); /* accepts NULL */
const void *blob_data(const struct blob *b);
size_t blob_len(const struct blob *b);
