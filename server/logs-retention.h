/* logs-retention.h: deleting the stored output of jobs that finished more than
 * logs.retention ago (sql/0009_job_logs.sql, job_logs_expire()), so that PostgreSQL does
 * not grow without bound. One node at a time does it (a PostgreSQL advisory lock), in
 * batches of LOGS_RETENTION_BATCH chunks, each its own transaction; the streams keep their
 * row, and readers see the removed bytes as dropped (X-Dropped-Bytes). */
#pragma once

struct app;

#define LOGS_RETENTION_BATCH 1000 /* chunks (at most 64 KiB each) per transaction */

/* Run one batch now. Returns the number of chunks deleted (0 when another node holds the
 * lock or nothing is due), or a negative errno from the store. */
int logs_retention_run(struct app *app);

/* Called on every pass of the reaper (gateway.c): runs a batch every 10 s (a quarter of
 * logs.retention when that is shorter), or at once again after a full batch, while
 * logs.retention is not 0. Only one thread may call it
 * (the pacing state is the file's). Errors are logged, never fatal. */
void logs_retention_tick(struct app *app);
