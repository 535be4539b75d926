/* cache.h: the agent's package cache. Archives fetched from orchd are kept as
 * <dir>/<sha256>.pkg, verified against their SHA-256 before they are stored and written
 * durably (temporary file, fsync, rename, fsync of the directory); beyond max_bytes the
 * least recently used go. The server learns which archives an agent holds from its
 * heartbeat and prefers agents that hold a job's package. Thread-safe. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CACHE_MAX_ENTRIES 4096 /* what a heartbeat can list */

struct cache;

/* Open (creating dir 0700 when missing; leftovers of interrupted stores are removed). */
int cache_open(const char *dir, int64_t max_bytes, struct cache **ret);
void cache_close(struct cache *c);

/* When archive sha (64 lower-case hex digits) is cached: its path in path (len bytes),
 * marked as just used, and 0. Else -ENOENT (-EINVAL for a malformed sha). */
int cache_lookup(struct cache *c, const char *sha, char *path, size_t len);

/* Store len bytes as archive sha: -EBADMSG when their SHA-256 is another, -EIO and other
 * errnos from the file system. Then trims the cache to its cap (never the new archive, and
 * not while an archive is held). */
int cache_store(struct cache *c, const char *sha, const void *data, size_t len);

/* A download in progress, kept as <dir>/<sha>.dl across broken connections and restarts
 * so that it resumes where it stopped (a Range request): its size (0 when none), more
 * bytes at its end, and its end: cache_partial_finish() stores it as archive sha as
 * cache_store() does (-EBADMSG when the whole has another SHA-256) and removes the
 * download whatever the outcome, so that a damaged one starts again from nothing. */
int64_t cache_partial_size(struct cache *c, const char *sha);
int cache_partial_append(struct cache *c, const char *sha, const void *data, size_t len);
int cache_partial_finish(struct cache *c, const char *sha);
void cache_partial_drop(struct cache *c, const char *sha);

/* While held, no archive is removed (a job is unpacking one). */
void cache_hold(struct cache *c);
void cache_release(struct cache *c);

/* The cached digests as a new JSON array of strings; *gen gets the cache's generation,
 * which changes whenever an archive is added or removed. */
json_t *cache_list(struct cache *c, uint64_t *gen);
uint64_t cache_generation(struct cache *c);

/* Bytes in the archives of a cache directory, whether open or not (for `status`). */
int64_t cache_dir_bytes(const char *dir, int *count);
