/* blob-gc.h: the collector of package bytes nothing names any more: upload sessions past
 * their expiry (packages.upload_ttl), whose declared size stops counting against the
 * tenant's storage quota as the row goes, with the bytes they received; and blobs of the
 * blob store that neither a package (package_blobs) nor an upload session names, once
 * older than packages.gc_grace (a blob being published is renamed moments before its row is
 * written, and a rename refreshes its age). One node at a time does it (a PostgreSQL
 * advisory lock), BLOB_GC_BATCH of each per pass. */
#pragma once

struct app;

#define BLOB_GC_BATCH 100

/* Run one pass now. Returns the sessions and blobs removed (0 when another node holds
 * the lock or nothing is due), or a negative errno from the store. */
int blob_gc_run(struct app *app);

/* Called on every pass of the reaper (reaper.c): a pass every packages.gc_interval, at
 * once again after a full batch. Only one thread may call it. Errors are logged. */
void blob_gc_tick(struct app *app);
