/* blob-store-pg.c: the PostgreSQL blob store (see blob-store.h): blob_chunks rows of at
 * most BLOB_PG_CHUNK_BYTES at their byte offset, in the tenant's scope. */
#include "server/blob-store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/store.h"

struct pg_blobs {
    struct store *store;
};

/* Appends to one blob queue behind each other, on every node. */
static const struct store_stmt q_lock =
    STORE_STMT("blob_lock",
               "SELECT pg_advisory_xact_lock(hashtextextended('blob/' || $1 || '/' || $2, 0))", 2);

static const struct store_stmt q_size =
    STORE_STMT("blob_size",
               "SELECT (off + length(data))::text FROM blob_chunks"
               " WHERE tenant_id = $1 AND blob_key = $2 ORDER BY off DESC LIMIT 1",
               2);

static const struct store_stmt q_insert = STORE_STMT(
    "blob_insert",
    "INSERT INTO blob_chunks (tenant_id, blob_key, off, data) VALUES ($1, $2, $3::bigint, $4)", 4);

/* The part of each row within [$3, $3 + $4): at most two rows more than the window holds
 * (a row is at most BLOB_PG_CHUNK_BYTES long). Binary results: the offset as text. */
static const struct store_stmt q_read =
    STORE_STMT("blob_read",
               "SELECT greatest(off, $3::bigint)::text,"
               "       substring(data FROM (greatest($3::bigint - off, 0) + 1)::int"
               "                 FOR (least(off + length(data), $3::bigint + $4::bigint)"
               "                      - greatest(off, $3::bigint))::int)"
               "  FROM blob_chunks WHERE tenant_id = $1 AND blob_key = $2"
               "   AND off > $3::bigint - 1048576 AND off < $3::bigint + $4::bigint"
               "   AND off + length(data) > $3::bigint ORDER BY off",
               4);

static const struct store_stmt q_exists = STORE_STMT(
    "blob_exists", "SELECT 1 FROM blob_chunks WHERE tenant_id = $1 AND blob_key = $2 LIMIT 1", 2);

static const struct store_stmt q_rename =
    STORE_STMT("blob_rename",
               "UPDATE blob_chunks SET blob_key = $3, created_at = now()"
               " WHERE tenant_id = $1 AND blob_key = $2",
               3);

static const struct store_stmt q_remove =
    STORE_STMT("blob_remove", "DELETE FROM blob_chunks WHERE tenant_id = $1 AND blob_key = $2", 2);

static int size_locked(struct store_tx *tx, const char *tenant, const char *key, uint64_t *size)
{
    const char *p[] = {tenant, key};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_size, p, &res);
    if (r >= 0)
        *size = r > 0 ? strtoull(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return r;
}

static int pg_append(void *impl, const char *tenant, const char *key, uint64_t off,
                     const void *data, size_t len, uint64_t *size)
{
    struct pg_blobs *pb = impl;
    if (len == 0)
        return -EINVAL;
    struct store_tx *tx = NULL;
    int r = store_tx_begin_tenant(pb->store, tenant, &tx);
    if (r < 0)
        return r;
    const char *pl[] = {tenant, key};
    r = store_tx_exec(tx, &q_lock, pl, NULL);
    uint64_t now = 0;
    if (r >= 0)
        r = size_locked(tx, tenant, key, &now);
    if (r >= 0 && now != off) {
        store_tx_rollback(tx);
        if (size)
            *size = now;
        return -ESPIPE;
    }
    for (size_t done = 0; r >= 0 && done < len;) {
        size_t n = len - done < BLOB_PG_CHUNK_BYTES ? len - done : BLOB_PG_CHUNK_BYTES;
        char at[24];
        snprintf(at, sizeof(at), "%" PRIu64, off + done);
        const char *p[] = {tenant, key, at, (const char *)data + done};
        const int lens[] = {0, 0, 0, (int)n};
        const int fmts[] = {0, 0, 0, 1};
        r = store_tx_exec_bin(tx, &q_insert, p, lens, fmts, false, NULL);
        done += n;
    }
    int c = store_tx_commit(tx);
    if (r < 0)
        return r;
    if (c < 0)
        return c;
    if (size)
        *size = off + len;
    return 0;
}

static int pg_stat(void *impl, const char *tenant, const char *key, uint64_t *size)
{
    struct pg_blobs *pb = impl;
    const char *p[] = {tenant, key};
    PGresult *res = NULL;
    int r = store_exec_once(pb->store, tenant, &q_size, p, &res);
    if (r > 0)
        *size = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

static int pg_read(void *impl, const char *tenant, const char *key, uint64_t off, void *buf,
                   size_t len, size_t *got)
{
    struct pg_blobs *pb = impl;
    *got = 0;
    if (len == 0)
        return 0;
    char at[24], n[24];
    snprintf(at, sizeof(at), "%" PRIu64, off);
    snprintf(n, sizeof(n), "%zu", len);
    const char *p[] = {tenant, key, at, n};
    PGresult *res = NULL;
    struct store_tx *tx = NULL;
    int r = store_tx_begin_tenant(pb->store, tenant, &tx);
    if (r < 0)
        return r;
    r = store_tx_exec_bin(tx, &q_read, p, NULL, NULL, true, &res);
    int c = store_tx_commit(tx);
    if (r >= 0 && c < 0)
        r = c;
    size_t have = 0;
    for (int i = 0; r > 0 && i < PQntuples(res); i++) {
        uint64_t at_i = strtoull(PQgetvalue(res, i, 0), NULL, 10);
        size_t l = (size_t)PQgetlength(res, i, 1);
        if (at_i != off + have || have + l > len) {
            r = -EIO; /* a hole or an overlap: not what append writes */
            break;
        }
        memcpy((char *)buf + have, PQgetvalue(res, i, 1), l);
        have += l;
    }
    PQclear(res);
    if (r < 0)
        return r;
    *got = have;
    return 0;
}

static int pg_rename(void *impl, const char *tenant, const char *from, const char *to)
{
    struct pg_blobs *pb = impl;
    struct store_tx *tx = NULL;
    int r = store_tx_begin_tenant(pb->store, tenant, &tx);
    if (r < 0)
        return r;
    const char *pl[] = {tenant, to};
    r = store_tx_exec(tx, &q_lock, pl, NULL);
    if (r >= 0)
        r = store_tx_exec(tx, &q_exists, pl, NULL);
    if (r > 0) {
        store_tx_rollback(tx);
        return -EEXIST;
    }
    const char *p[] = {tenant, from, to};
    if (r >= 0)
        r = store_tx_exec(tx, &q_rename, p, NULL);
    int c = store_tx_commit(tx);
    return r < 0 ? r : c < 0 ? c : 0;
}

static int pg_remove(void *impl, const char *tenant, const char *key)
{
    struct pg_blobs *pb = impl;
    const char *p[] = {tenant, key};
    int r = store_exec_once(pb->store, tenant, &q_remove, p, NULL);
    return r < 0 ? r : 0;
}

static void pg_free(void *impl)
{
    free(impl);
}

static const struct blob_store_ops pg_ops = {
    .name = "postgresql",
    .append = pg_append,
    .stat = pg_stat,
    .read = pg_read,
    .rename = pg_rename,
    .remove = pg_remove,
    .free = pg_free,
};

int blob_store_pg_new(struct store *store, struct blob_store **ret)
{
    struct blob_store *bs = calloc(1, sizeof(*bs));
    struct pg_blobs *pb = calloc(1, sizeof(*pb));
    if (!bs || !pb) {
        free(bs);
        free(pb);
        return -ENOMEM;
    }
    pb->store = store;
    bs->ops = &pg_ops;
    bs->impl = pb;
    *ret = bs;
    return 0;
}

void blob_store_free(struct blob_store *bs)
{
    if (!bs)
        return;
    bs->ops->free(bs->impl);
    free(bs);
}

void blob_key_package(char out[BLOB_KEY_MAX], const char *sha256_hex)
{
    snprintf(out, BLOB_KEY_MAX, "pkg/%s", sha256_hex);
}

void blob_key_upload(char out[BLOB_KEY_MAX], const char *session_id)
{
    snprintf(out, BLOB_KEY_MAX, "upload/%s", session_id);
}
