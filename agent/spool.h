/* spool.h: the agent's durable spool of job output and results.
 *
 * Jobs append their stdout/stderr and, at the end, their result; the transport takes what
 * is due with spool_next(), sends it, and acknowledges what the server confirmed. Nothing
 * the spool accepted is lost across a network cut, an agent restart, kill -9 or power
 * loss, and a chunk is never offered twice with different content: the server keys chunks
 * by (job_id, epoch, stream, offset) and ignores a resent key, so a resend at the same
 * offset must carry the same bytes.
 *
 * An attempt is (job_id, epoch): job_id a canonical UUID (either case; the spool works in
 * lower case), epoch >= 1.
 *
 * On disk, <dir>/<job_id>.<epoch>/ holds
 *   meta.json  the caller's metadata, as given to spool_begin()
 *   stdout, stderr
 *              framed records: DATA (payload + CRC32C) and CUT (a chunk boundary). A chunk
 *              is the payload between two CUTs, so its bounds are on disk and the same
 *              chunk is offered again after a restart; a torn tail is detected by its CRC
 *              and trimmed on open.
 *   acked      the acknowledged offset of each stream (replaced by rename, not fsynced: a
 *              lost acknowledgement costs only a resend)
 *   result     exit code, flags and result JSON, with a CRC32C: created empty by
 *              spool_begin(), filled and fdatasync()ed by spool_finish(). Empty or torn
 *              (the CRC fails): not finished. (A spool of an older agent may lack it until
 *              spool_finish(), which then writes tmp + fsync + rename + fsync dir.)
 *   proc       where the attempt's processes are (spool_set_proc()), for the next agent
 *              process to end them after a crash (tmp + rename, not synced: see there)
 * and <dir>/lock is flock()ed: a second process on the same spool gets -EBUSY. The spool
 * relies on fdatasync() and rename() meaning what POSIX says: keep it on a local file
 * system.
 *
 * Durability. spool_append() writes to the page cache at once, so kill -9 of the agent
 * loses nothing that was appended. Against power loss, a stream is cut and fdatasync()ed:
 *   - by spool_append(), when the stream has >= SPOOL_SYNC_BYTES unsynced bytes or its
 *     oldest unsynced byte is >= SPOOL_SYNC_NS old (checked at append time);
 *   - by spool_next(), before any chunk is offered, so the server never holds bytes the
 *     agent could lose;
 *   - by spool_sync() / spool_sync_all() and spool_finish().
 * A daemon that wants a hard time bound while disconnected calls spool_sync_all() on a
 * timer (e.g. every SPOOL_SYNC_NS). spool_begin() and spool_finish() are durable on return:
 * spool_begin() costs three syncs (the metadata, the attempt's directory, the spool's),
 * spool_finish() one (the result) plus one per stream with unsynced output.
 *
 * Sending. spool_next() moves a send cursor: each chunk is offered once, so the transport
 * may take several before acknowledging any. After a reconnect (or any send failure) call
 * spool_rewind(): everything not acknowledged is offered again, with the same bounds. A
 * restart starts rewound. Order: per stream, by offset; between sources (a stream or a
 * result), first come first served, so a busy job does not starve the others. A result is
 * offered only when both streams are fully acknowledged.
 *
 * Thread-safety: every function may be called from any thread at the same time, except
 * spool_open() and spool_close(). Appends to different attempts run in parallel; the
 * transport never waits for a job's write, only (briefly) for the sync of the attempt it is
 * about to send from.
 *
 * Errors: >= 0 success, negative errno: -EINVAL bad argument (job id, epoch, stream),
 * -ENOENT unknown attempt, -EEXIST attempt already begun, -EALREADY attempt already
 * finished, -EMSGSIZE metadata or result too large, -ENOSPC spool over its byte cap,
 * -EBUSY spool in use by another process, -EIO and other errnos from the file system.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/id.h"

#define SPOOL_META_MAX          (64 * 1024)           /* bytes of meta JSON */
#define SPOOL_RESULT_MAX        (1024 * 1024)         /* bytes of result JSON */
#define SPOOL_PROC_MAX          4096                  /* bytes of a spool_set_proc() record */
#define SPOOL_CHUNK_MAX         (64 * 1024)           /* bytes in one offered chunk */
#define SPOOL_SYNC_BYTES        (64 * 1024)           /* unsynced bytes that force a sync */
#define SPOOL_SYNC_NS           (50 * 1000 * 1000ull) /* age of unsynced data that does */
#define SPOOL_MAX_BYTES_DEFAULT ((int64_t)1 << 30)

enum spool_stream {
    SPOOL_STDOUT = 1,
    SPOOL_STDERR = 2,
};

enum spool_kind {
    SPOOL_CHUNK,
    SPOOL_RESULT,
};

struct spool;

/* What spool_finish() records. */
struct spool_result {
    int exit_code;
    uint32_t flags;   /* opaque to the spool; the agent protocol defines the bits */
    const char *json; /* borrowed; NULL or "" = none; <= SPOOL_RESULT_MAX bytes, stored as
                         is (the caller validates it) */
};

/* One thing to send. Owned by the caller after spool_next(); release with
 * spool_item_free(). */
struct spool_item {
    char job_id[ID_STR_LEN];
    int64_t epoch;
    enum spool_kind kind;
    int stream;     /* SPOOL_CHUNK: SPOOL_STDOUT or SPOOL_STDERR */
    int64_t offset; /* SPOOL_CHUNK: stream offset of data[0]; acknowledge offset + len */
    int exit_code;  /* SPOOL_RESULT */
    uint32_t flags; /* SPOOL_RESULT */
    char *data;     /* CHUNK: 1 to SPOOL_CHUNK_MAX bytes; RESULT: the result JSON or NULL
                       when none. malloc'd, NUL-terminated (len excludes the NUL) */
    size_t len;
};

/* One attempt the spool holds (spool_list()). */
struct spool_attempt {
    char job_id[ID_STR_LEN];
    int64_t epoch;
    bool finished;      /* spool_finish() returned; the result is still to be acknowledged */
    int64_t stdout_len; /* stream sizes: the next append to each starts here */
    int64_t stderr_len;
    char *meta; /* meta JSON as given to spool_begin(), NUL-terminated; malloc'd */
    size_t meta_len;
    char *proc; /* as given to spool_set_proc(), malloc'd; NULL when never set */
};

/* Open the spool in dir (created 0700 when missing; its parent must exist) and recover
 * what is there: leftovers of interrupted begins and deletions are removed, torn stream
 * tails trimmed, acknowledged offsets clamped to the data. max_bytes caps the bytes on disk
 * (0 = SPOOL_MAX_BYTES_DEFAULT). On success *ret is a new spool, freed with spool_close();
 * on failure *ret is untouched. */
int spool_open(const char *dir, int64_t max_bytes, struct spool **ret);
/* Close the files and free s (NULL accepted). Data stays on disk; nothing is synced that
 * was not already due, as the next open resumes from what is there. No other call on s may
 * be running or follow. */
void spool_close(struct spool *s);

/* Record a new attempt with its metadata (NULL = none; <= SPOOL_META_MAX bytes; borrowed,
 * stored as is). Durable on return. -EEXIST when the attempt is already in the spool,
 * -ENOSPC when the spool is at its cap. */
int spool_begin(struct spool *s, const char *job_id, int64_t epoch, const char *meta_json);

/* Append len bytes (borrowed) to a stream (SPOOL_STDOUT or SPOOL_STDERR) of an unfinished
 * attempt; *ret_offset (may be NULL) gets the stream offset of data[0]. See "Durability"
 * above for when the bytes reach the disk. -EALREADY after spool_finish(), -ENOSPC when the
 * spool would exceed its cap (nothing written). */
int spool_append(struct spool *s, const char *job_id, int64_t epoch, int stream, const void *data,
                 size_t len, int64_t *ret_offset);

/* Record where the attempt's processes are (text <= SPOOL_PROC_MAX bytes, borrowed;
 * replaces an earlier record). On return the next process to open the spool reads it,
 * whole, even when this one is killed (kill -9) the next instant; it is not synced, as a
 * power loss ends the processes it names (the record's boot id tells). Not counted against
 * the byte cap. */
int spool_set_proc(struct spool *s, const char *job_id, int64_t epoch, const char *text);

/* Make everything appended to one attempt durable. */
int spool_sync(struct spool *s, const char *job_id, int64_t epoch);
/* Same for every attempt with unsynced data. Returns 0 or the first error met. */
int spool_sync_all(struct spool *s);

/* Record the result (res borrowed) after syncing the streams; atomic and durable on
 * return. Afterwards the attempt takes no appends. Not subject to the byte cap: a result is
 * never refused for space. -EALREADY when already finished. */
int spool_finish(struct spool *s, const char *job_id, int64_t epoch,
                 const struct spool_result *res);

/* The next thing to send: a chunk of output not yet offered since the last rewind, or the
 * result of a finished attempt whose output is fully acknowledged. Syncs the chunk first
 * when needed. Returns 0 with *ret filled, or -ENOENT when nothing is due (*ret zeroed in
 * both cases on error, so spool_item_free() is always safe). */
int spool_next(struct spool *s, struct spool_item *ret);
/* Free item->data and zero the item; accepts a zeroed item. */
void spool_item_free(struct spool_item *item);
/* Offer again everything that was offered and not acknowledged. */
void spool_rewind(struct spool *s);

/* The server has stream bytes [0, end_offset). Counts up to the last chunk boundary at or
 * below end_offset (the end of an offered chunk is one); acknowledging less than before is
 * a no-op. -EINVAL when end_offset is past the data. Once both streams of a finished attempt
 * are acknowledged, its result becomes due. */
int spool_ack_chunk(struct spool *s, const char *job_id, int64_t epoch, int stream,
                    int64_t end_offset);
/* The server has the result: the attempt's files are deleted. -EINVAL when not finished.
 * The deletion is not synced: after power loss the result may be offered once more, which
 * the server must accept as a duplicate. */
int spool_ack_result(struct spool *s, const char *job_id, int64_t epoch);
/* Drop an attempt whatever its state (the server refused it: stale epoch, job cancelled).
 * Later appends to it get -ENOENT. */
int spool_discard(struct spool *s, const char *job_id, int64_t epoch);

/* The attempts held, in the order they were begun (after a restart: by job id, then
 * epoch). On success *ret is a malloc'd array of *n entries (NULL when none), freed with
 * spool_attempts_free(). */
int spool_list(struct spool *s, struct spool_attempt **ret, size_t *n);
void spool_attempts_free(struct spool_attempt *list, size_t n);

/* Bytes held on disk (approximate: file sizes). */
int64_t spool_bytes(struct spool *s);
