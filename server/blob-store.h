/* blob-store.h: where package bytes live, behind an interface so that a store other than
 * PostgreSQL (an S3-compatible one) can follow without touching its callers.
 *
 * A blob is a tenant's byte string under a key ('pkg/<sha256 hex>' for a package archive,
 * 'upload/<session id>' for an upload being received). It is written in parts, each
 * appended at the blob's current end (so a part sent again after a broken connection is
 * refused, not stored twice), read a range at a time (never whole: callers keep a bounded
 * window in memory), published under its final key once complete (rename), and deleted.
 * Every call names the tenant, and the PostgreSQL store runs it in that tenant's scope
 * (row-level security): a key never reaches another tenant's bytes.
 *
 * Calls block (the store's connection pool); they are thread-safe. Each is its own
 * transaction: callers order them so that a failure leaves at worst bytes that nothing
 * names, which the collector (blob-gc.h) removes. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct store;

#define BLOB_KEY_MAX 128

struct blob_store_ops {
    const char *name;
    /* Append len bytes (len >= 1) at off to the blob: off must be its size now, else
     * -ESPIPE. *size (when not NULL) gets the blob's size afterwards, or its current size
     * on -ESPIPE. */
    int (*append)(void *impl, const char *tenant, const char *key, uint64_t off, const void *data,
                  size_t len, uint64_t *size);
    /* The blob's size; -ENOENT when it holds nothing. */
    int (*stat)(void *impl, const char *tenant, const char *key, uint64_t *size);
    /* Up to len bytes at off into buf; *got gets how many (0 at or past the end). */
    int (*read)(void *impl, const char *tenant, const char *key, uint64_t off, void *buf,
                size_t len, size_t *got);
    /* Give blob from the key to: -EEXIST when to exists already (from is left as it was). */
    int (*rename)(void *impl, const char *tenant, const char *from, const char *to);
    /* Delete the blob; 0 also when there was none. */
    int (*remove)(void *impl, const char *tenant, const char *key);
    void (*free)(void *impl);
};

struct blob_store {
    const struct blob_store_ops *ops;
    void *impl;
};

/* The PostgreSQL store: the blob_chunks table (sql/0024_blob_store.sql), rows of at most
 * BLOB_PG_CHUNK_BYTES, through store (borrowed, must outlive it). */
#define BLOB_PG_CHUNK_BYTES (1024 * 1024)
int blob_store_pg_new(struct store *store, struct blob_store **ret);

void blob_store_free(struct blob_store *bs); /* accepts NULL */

static inline int blob_append(struct blob_store *bs, const char *tenant, const char *key,
                              uint64_t off, const void *data, size_t len, uint64_t *size)
{
    return bs->ops->append(bs->impl, tenant, key, off, data, len, size);
}

static inline int blob_stat(struct blob_store *bs, const char *tenant, const char *key,
                            uint64_t *size)
{
    return bs->ops->stat(bs->impl, tenant, key, size);
}

static inline int blob_read(struct blob_store *bs, const char *tenant, const char *key,
                            uint64_t off, void *buf, size_t len, size_t *got)
{
    return bs->ops->read(bs->impl, tenant, key, off, buf, len, got);
}

static inline int blob_rename(struct blob_store *bs, const char *tenant, const char *from,
                              const char *to)
{
    return bs->ops->rename(bs->impl, tenant, from, to);
}

static inline int blob_remove(struct blob_store *bs, const char *tenant, const char *key)
{
    return bs->ops->remove(bs->impl, tenant, key);
}

/* The key of a package archive ("pkg/<hex>") and of an upload session ("upload/<id>"). */
void blob_key_package(char out[BLOB_KEY_MAX], const char *sha256_hex);
void blob_key_upload(char out[BLOB_KEY_MAX], const char *session_id);
