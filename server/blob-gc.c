/* blob-gc.c: the collector of unnamed package bytes (see blob-gc.h). */
#include "server/blob-gc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/app.h"
#include "server/blob-store.h"

/* Key of the collector's advisory lock ("orchblob"). */
#define BLOB_GC_LOCK_KEY "8030590385702061154"

/* Expired sessions go with their quota in one statement; their bytes after. */
static const struct store_stmt q_expire =
    STORE_STMT("blob_gc_expire",
               "DELETE FROM package_uploads WHERE id IN (SELECT id FROM package_uploads"
               "  WHERE expires_at <= now() AND pg_try_advisory_xact_lock(" BLOB_GC_LOCK_KEY ")"
               "  ORDER BY expires_at LIMIT $1::int FOR UPDATE SKIP LOCKED)"
               " RETURNING tenant_id, id",
               1);

/* Blobs of the PostgreSQL store that nothing names (the store's own sweep: another store
 * would list its keys). */
static const struct store_stmt q_orphans =
    STORE_STMT("blob_gc_orphans",
               "SELECT DISTINCT c.tenant_id, c.blob_key FROM blob_chunks c"
               " WHERE pg_try_advisory_xact_lock(" BLOB_GC_LOCK_KEY ")"
               "   AND c.created_at < now() - make_interval(secs => $2::int)"
               "   AND NOT EXISTS (SELECT 1 FROM package_blobs b WHERE b.tenant_id = c.tenant_id"
               "                     AND 'pkg/' || encode(b.sha256, 'hex') = c.blob_key)"
               "   AND NOT EXISTS (SELECT 1 FROM package_uploads u WHERE u.tenant_id = c.tenant_id"
               "                     AND 'upload/' || u.id::text = c.blob_key)"
               " LIMIT $1::int",
               2);

/* The same condition again as the bytes go: a blob named again meanwhile stays. */
static const struct store_stmt q_orphan_delete =
    STORE_STMT("blob_gc_orphan_delete",
               "DELETE FROM blob_chunks c WHERE c.tenant_id = $1 AND c.blob_key = $2"
               "   AND c.created_at < now() - make_interval(secs => $3::int)"
               "   AND NOT EXISTS (SELECT 1 FROM package_blobs b WHERE b.tenant_id = c.tenant_id"
               "                     AND 'pkg/' || encode(b.sha256, 'hex') = c.blob_key)"
               "   AND NOT EXISTS (SELECT 1 FROM package_uploads u WHERE u.tenant_id = c.tenant_id"
               "                     AND 'upload/' || u.id::text = c.blob_key)",
               3);

int blob_gc_run(struct app *app)
{
    char batch[16], grace[24];
    snprintf(batch, sizeof(batch), "%d", BLOB_GC_BATCH);
    snprintf(grace, sizeof(grace), "%lld", (long long)(app->cfg->packages_gc_grace_ms / 1000));
    const char *pe[] = {batch};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_expire, pe, &res);
    int n = 0;
    for (int i = 0; r > 0 && i < PQntuples(res); i++) {
        char key[BLOB_KEY_MAX];
        blob_key_upload(key, PQgetvalue(res, i, 1));
        int e = blob_remove(app->blobstore, PQgetvalue(res, i, 0), key);
        if (e < 0)
            log_warn("op=blob.gc key=%s error=%s", key, strerror(-e));
        n++;
    }
    PQclear(res);
    if (r < 0)
        return r;
    const char *po[] = {batch, grace};
    res = NULL;
    r = store_exec_once(app->store, NULL, &q_orphans, po, &res);
    for (int i = 0; r > 0 && i < PQntuples(res); i++) {
        const char *pd[] = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), grace};
        int e = store_exec_once(app->store, NULL, &q_orphan_delete, pd, NULL);
        if (e < 0)
            log_warn("op=blob.gc key=%s error=%s", PQgetvalue(res, i, 1), strerror(-e));
        else if (e > 0)
            n++;
    }
    PQclear(res);
    return r < 0 ? r : n;
}

void blob_gc_tick(struct app *app)
{
    static uint64_t next_ns;
    if (clock_mono_ns() < next_ns)
        return;
    int n = blob_gc_run(app);
    if (n < 0)
        log_warn("op=blob.gc error=%s", strerror(-n));
    else if (n > 0)
        log_info("op=blob.gc removed=%d", n);
    uint64_t period = (uint64_t)app->cfg->packages_gc_interval_ms * 1000000ull;
    next_ns = clock_mono_ns() + (n >= BLOB_GC_BATCH ? 0 : period);
}
