/* spool.c: durable spool of job output and results; spool.h has the contract.
 *
 * Locking. spool.lock guards the table, the send queue, byte counts and every field of an
 * attempt except the file contents. attempt.io serialises writes and syncs of one attempt's
 * stream files, so a slow fdatasync() never holds spool.lock; the fields that describe a
 * stream file (size, fpos, seg_len, synced, dirty_ns, appending to cuts) change only with
 * both held, so an io holder reads them without spool.lock. Order: io, then lock.
 * attempt.ack_io orders the writes of the acked file. An attempt is reference-counted (the
 * table holds one reference) so a discard can run while a job thread is still writing; the
 * last reference closes the files and, for a removed attempt, deletes its directory.
 */
#include "agent/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/compat.h"

/* Stream record: magic, payload length, CRC32C of the payload, CRC32C of the first 12
 * bytes; all little-endian. A CUT has no payload. */
#define REC_HDR  16
#define REC_DATA 0x3144534fu /* "OSD1" */
#define REC_CUT  0x3143534fu /* "OSC1" */
/* acked: magic, CRC32C of the 16 bytes that follow, stdout offset, stderr offset. */
#define ACK_MAGIC 0x3141534fu /* "OSA1" */
#define ACK_LEN   24
/* result: magic, exit code, flags, JSON length, CRC32C of the JSON, CRC32C of the first 20
 * bytes; then the JSON. */
#define RES_MAGIC 0x3152534fu /* "OSR1" */
#define RES_HDR   24

#define NAME_LEN     64 /* "<uuid>.<epoch>": 36 + 1 + 19 + NUL */
#define TMP_NAME_LEN (NAME_LEN + 32)
#define SCAN_BUF     (1024 * 1024) /* > one record, so a refill always holds a whole one */
#define HASH_SIZE    256

static const char *const stream_files[2] = {"stdout", "stderr"};

enum { SRC_STDOUT, SRC_STDERR, SRC_RESULT, SRC_N };

struct attempt;

/* A source of things to send, in the send queue while it has something due. */
struct qnode {
    struct qnode *prev, *next;
    struct attempt *a;
    int src;
    bool queued;
};

struct cut {
    int64_t off;  /* stream offset of the boundary */
    int64_t fpos; /* file position just past its CUT record */
};

struct stream {
    int fd;
    int64_t size;      /* payload bytes */
    int64_t fpos;      /* file bytes */
    int64_t seg_len;   /* payload since the last cut: not offerable until cut */
    int64_t synced;    /* file bytes known durable */
    uint64_t dirty_ns; /* when the oldest unsynced record was written; 0 = none */
    int64_t acked;     /* always a cut (or 0) */
    int64_t acked_fpos;
    struct cut *cuts; /* cuts past acked, ascending */
    size_t ncuts, cap;
    size_t nsent; /* cuts[0..nsent) offered since the last rewind */
};

struct attempt {
    struct attempt *all_prev, *all_next; /* begin order */
    struct attempt *hash_next;
    uint8_t id[16];
    char job_id[ID_STR_LEN];
    int64_t epoch;
    char name[NAME_LEN];
    char del_name[TMP_NAME_LEN];
    int dfd;
    pthread_mutex_t io;
    pthread_mutex_t ack_io;
    unsigned refs;
    bool finished, result_sent, removed;
    bool broken; /* a failed write could not be undone: refuse further writes (under io) */
    int64_t bytes;
    struct stream st[2];
    struct qnode q[SRC_N];
};

struct spool {
    pthread_mutex_t lock;
    int dfd;
    int lockfd;
    int64_t max_bytes;
    int64_t bytes;
    uint64_t seq; /* makes temporary directory names unique */
    struct attempt *hash[HASH_SIZE];
    struct attempt *first, *last;
    struct qnode ready; /* send queue sentinel */
};

/* ---- encoding ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

/* CRC32C (Castagnoli): catches the torn and zero-filled tails a power cut leaves. */
static uint32_t crc32c(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;

    pthread_once(&crc_once, crc_init);
    while (len--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void rec_header(uint8_t h[REC_HDR], uint32_t type, const void *payload, size_t len)
{
    put32(h, type);
    put32(h + 4, (uint32_t)len);
    put32(h + 8, len ? crc32c(payload, len) : 0);
    put32(h + 12, crc32c(h, 12));
}

static bool rec_header_ok(const uint8_t h[REC_HDR], uint32_t *type, uint32_t *len)
{
    if (get32(h + 12) != crc32c(h, 12))
        return false;
    *type = get32(h);
    *len = get32(h + 4);
    if (*type == REC_CUT)
        return *len == 0;
    return *type == REC_DATA && *len >= 1 && *len <= SPOOL_CHUNK_MAX;
}

/* ---- files ---- */

static int pwrite_all(int fd, const void *buf, size_t len, int64_t off)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Returns the bytes read (fewer than len only at end of file) or -errno. */
static ssize_t pread_all(int fd, void *buf, size_t len, int64_t off)
{
    uint8_t *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(off + (int64_t)got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Write name through tmp and rename, so a reader sees the old or the new file whole. When
 * durable, the data and the rename are synced before returning. */
static int write_atomic(int dfd, const char *name, const char *tmp, const void *a, size_t alen,
                        const void *b, size_t blen, bool durable)
{
    int fd, r = 0;

    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    r = pwrite_all(fd, a, alen, 0);
    if (r == 0 && blen > 0)
        r = pwrite_all(fd, b, blen, (int64_t)alen);
    if (r == 0 && durable && fdatasync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(dfd, tmp, 0);
        return r;
    }
    if (durable && fsync(dfd) < 0)
        return -errno;
    return 0;
}

/* Read a whole file of at most max bytes into a malloc'd NUL-terminated buffer. */
static int read_small(int dfd, const char *name, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *buf = NULL;
    struct stat sb;
    ssize_t n;

    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) < 0)
        return -errno;
    if (sb.st_size < 0 || (uint64_t)sb.st_size > max)
        return -EMSGSIZE;
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf)
        return -ENOMEM;
    n = pread_all(fd, buf, (size_t)sb.st_size, 0);
    if (n < 0)
        return (int)n;
    if (n != sb.st_size)
        return -EIO;
    buf[n] = '\0';
    *ret = TAKE_PTR(buf);
    *ret_len = (size_t)n;
    return 0;
}

/* Delete the files in directory name (the spool creates no subdirectories), then name. */
static void remove_tree(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        struct dirent *de;

        if (!d) {
            close(fd);
        } else {
            while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                    (void)unlinkat(dirfd(d), de->d_name, 0);
            closedir(d);
        }
    }
    if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        log_warn("op=spool_remove dir=%s errno=%d", name, errno);
}

/* ---- attempts ---- */

/* Canonical (lower-case) form of an attempt key; a UUID holds no '/' or '.', so the names
 * built from it stay inside the spool directory. */
static int attempt_key(const char *job_id, int64_t epoch, uint8_t id[16], char canon[ID_STR_LEN])
{
    if (!job_id || epoch < 1 || id_parse(job_id, id) < 0)
        return -EINVAL;
    id_format(id, canon);
    return 0;
}

static void attempt_name(char name[NAME_LEN], const char *canon, int64_t epoch)
{
    snprintf(name, NAME_LEN, "%s.%" PRId64, canon, epoch);
}

/* Accept only names spool_begin() creates: canonical lower-case id, epoch without sign or
 * leading zero. */
static int name_parse(const char *name, uint8_t id[16], char canon[ID_STR_LEN], int64_t *epoch)
{
    char idbuf[ID_STR_LEN];
    int64_t v = 0;
    const char *e;

    if (strnlen(name, NAME_LEN) >= NAME_LEN || strlen(name) < 38 || name[36] != '.')
        return -EINVAL;
    memcpy(idbuf, name, 36);
    idbuf[36] = '\0';
    if (id_parse(idbuf, id) < 0)
        return -EINVAL;
    id_format(id, canon);
    if (memcmp(canon, name, 36) != 0)
        return -EINVAL;
    e = name + 37;
    if (*e < '1' || *e > '9')
        return -EINVAL;
    for (; *e; e++) {
        if (*e < '0' || *e > '9' || v > (INT64_MAX - (*e - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (*e - '0');
    }
    *epoch = v;
    return 0;
}

static unsigned hash_of(const uint8_t id[16], int64_t epoch)
{
    /* The tail of a UUIDv7 is random. */
    return (unsigned)(id[15] ^ id[13] ^ (uint8_t)epoch) % HASH_SIZE;
}

static struct attempt *attempt_new(const uint8_t id[16], const char *canon, int64_t epoch)
{
    struct attempt *a = calloc(1, sizeof(*a));

    if (!a)
        return NULL;
    memcpy(a->id, id, 16);
    memcpy(a->job_id, canon, ID_STR_LEN);
    a->epoch = epoch;
    attempt_name(a->name, canon, epoch);
    a->dfd = -1;
    pthread_mutex_init(&a->io, NULL);
    pthread_mutex_init(&a->ack_io, NULL);
    for (int k = 0; k < 2; k++)
        a->st[k].fd = -1;
    for (int i = 0; i < SRC_N; i++) {
        a->q[i].a = a;
        a->q[i].src = i;
    }
    return a;
}

/* Close and free; a removed attempt's directory is deleted. */
static void attempt_destroy(struct spool *s, struct attempt *a)
{
    for (int k = 0; k < 2; k++) {
        if (a->st[k].fd >= 0)
            close(a->st[k].fd);
        free(a->st[k].cuts);
    }
    if (a->dfd >= 0)
        close(a->dfd);
    if (a->removed)
        remove_tree(s->dfd, a->del_name);
    pthread_mutex_destroy(&a->io);
    pthread_mutex_destroy(&a->ack_io);
    free(a);
}

static struct attempt *attempt_find(struct spool *s, const uint8_t id[16], int64_t epoch)
{
    for (struct attempt *a = s->hash[hash_of(id, epoch)]; a; a = a->hash_next)
        if (a->epoch == epoch && memcmp(a->id, id, 16) == 0)
            return a;
    return NULL;
}

static void attempt_link(struct spool *s, struct attempt *a)
{
    unsigned h = hash_of(a->id, a->epoch);

    a->hash_next = s->hash[h];
    s->hash[h] = a;
    a->all_prev = s->last;
    a->all_next = NULL;
    if (s->last)
        s->last->all_next = a;
    else
        s->first = a;
    s->last = a;
}

static void attempt_unlink(struct spool *s, struct attempt *a)
{
    struct attempt **pp = &s->hash[hash_of(a->id, a->epoch)];

    while (*pp != a)
        pp = &(*pp)->hash_next;
    *pp = a->hash_next;
    if (a->all_prev)
        a->all_prev->all_next = a->all_next;
    else
        s->first = a->all_next;
    if (a->all_next)
        a->all_next->all_prev = a->all_prev;
    else
        s->last = a->all_prev;
}

/* Take a reference on an attempt by key. */
static int attempt_get(struct spool *s, const char *job_id, int64_t epoch, struct attempt **ret)
{
    uint8_t id[16];
    char canon[ID_STR_LEN];
    struct attempt *a;
    int r;

    r = attempt_key(job_id, epoch, id, canon);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    a = attempt_find(s, id, epoch);
    if (a)
        a->refs++;
    pthread_mutex_unlock(&s->lock);
    if (!a)
        return -ENOENT;
    *ret = a;
    return 0;
}

static void attempt_unref(struct spool *s, struct attempt *a)
{
    bool last;

    pthread_mutex_lock(&s->lock);
    last = --a->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last)
        attempt_destroy(s, a);
}

/* Under lock. Bytes of a removed attempt were already taken off the spool's total. */
static void account(struct spool *s, struct attempt *a, int64_t delta)
{
    a->bytes += delta;
    if (!a->removed)
        s->bytes += delta;
}

/* ---- send queue (under lock) ---- */

static void q_push(struct spool *s, struct qnode *n)
{
    if (n->queued)
        return;
    n->prev = s->ready.prev;
    n->next = &s->ready;
    s->ready.prev->next = n;
    s->ready.prev = n;
    n->queued = true;
}

static void q_del(struct qnode *n)
{
    if (!n->queued)
        return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    n->queued = false;
}

static bool stream_due(const struct stream *st)
{
    return st->nsent < st->ncuts || st->seg_len > 0;
}

static bool result_due(const struct attempt *a)
{
    return a->finished && !a->result_sent && a->st[0].acked == a->st[0].size &&
           a->st[1].acked == a->st[1].size;
}

/* Queue every source of a that has something due (at the tail, unless already queued). */
static void attempt_queue(struct spool *s, struct attempt *a)
{
    if (a->removed)
        return;
    for (int k = 0; k < 2; k++)
        if (stream_due(&a->st[k]))
            q_push(s, &a->q[k]);
    if (result_due(a))
        q_push(s, &a->q[SRC_RESULT]);
}

/* Under lock: take a out of the table and the queue and rename its directory out of the
 * way (so the name is free at once, and a crash mid-deletion leaves a name recovery
 * deletes). Drops the table's reference; the caller still holds one. */
static void attempt_remove_locked(struct spool *s, struct attempt *a)
{
    attempt_unlink(s, a);
    for (int i = 0; i < SRC_N; i++)
        q_del(&a->q[i]);
    s->bytes -= a->bytes;
    a->removed = true;
    snprintf(a->del_name, sizeof(a->del_name), ".del.%s.%" PRIu64, a->name, s->seq++);
    if (renameat(s->dfd, a->name, s->dfd, a->del_name) < 0) {
        log_warn("op=spool_remove job=%s epoch=%" PRId64 " errno=%d", a->job_id, a->epoch, errno);
        snprintf(a->del_name, sizeof(a->del_name), "%s", a->name);
    }
    a->refs--;
}

/* ---- streams ---- */

/* Under lock. */
static int cuts_reserve(struct stream *st, size_t extra)
{
    size_t cap = st->cap ? st->cap : 16;
    struct cut *p;

    if (st->ncuts + extra <= st->cap)
        return 0;
    while (cap < st->ncuts + extra)
        cap *= 2;
    p = realloc(st->cuts, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    st->cuts = p;
    st->cap = cap;
    return 0;
}

/* A write failed part way: cut the file back to what the bookkeeping says, or, if even that
 * fails, refuse further writes so no record ever lands after garbage. Under io. */
static int stream_rollback(struct attempt *a, struct stream *st, int err)
{
    if (ftruncate(st->fd, (off_t)st->fpos) < 0) {
        log_warn("op=spool_rollback job=%s epoch=%" PRId64 " errno=%d", a->job_id, a->epoch, errno);
        a->broken = true;
    }
    return err;
}

/* Close the open segment with a CUT and make the stream durable. Under io. */
static int stream_cut_sync(struct spool *s, struct attempt *a, int k)
{
    struct stream *st = &a->st[k];
    int64_t fpos = st->fpos;
    bool cut = st->seg_len > 0;
    int r = 0;

    if (!cut && fpos <= st->synced)
        return 0;
    if (cut) {
        uint8_t h[REC_HDR];

        pthread_mutex_lock(&s->lock);
        r = cuts_reserve(st, 1);
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            return r;
        rec_header(h, REC_CUT, NULL, 0);
        r = pwrite_all(st->fd, h, REC_HDR, fpos);
        if (r < 0)
            return stream_rollback(a, st, r);
        fpos += REC_HDR;
    }
    if (fdatasync(st->fd) < 0)
        r = -errno;
    pthread_mutex_lock(&s->lock);
    if (cut) {
        st->cuts[st->ncuts++] = (struct cut){st->size, fpos};
        st->fpos = fpos;
        st->seg_len = 0;
        account(s, a, REC_HDR);
    }
    if (r == 0) {
        st->synced = fpos;
        st->dirty_ns = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static int attempt_sync_locked(struct spool *s, struct attempt *a)
{
    int r = 0;

    for (int k = 0; k < 2 && r == 0; k++)
        r = stream_cut_sync(s, a, k);
    return r;
}

/* Under io. */
static int append_locked(struct spool *s, struct attempt *a, int k, const uint8_t *p, size_t len,
                         int64_t *ret_offset)
{
    struct stream *st = &a->st[k];
    struct cut small[8], *local = small;
    _cleanup_free_ struct cut *big = NULL;
    size_t maxcuts, ncut = 0;
    int64_t start = st->size, off = st->size, fpos = st->fpos, seg = st->seg_len, reserve;
    uint64_t now;
    bool need_sync;
    int r;

    if (a->broken)
        return -EIO;
    if (a->finished)
        return -EALREADY;
    if (len == 0) {
        if (ret_offset)
            *ret_offset = start;
        return 0;
    }
    if (len > (uint64_t)s->max_bytes)
        return -ENOSPC;
    /* A record never holds more than a chunk, and a chunk boundary is cut whenever the open
     * segment is full: at most maxcuts cuts and maxcuts + 1 data records. */
    maxcuts = len / SPOOL_CHUNK_MAX + 1;
    reserve = (int64_t)len + (int64_t)(2 * maxcuts + 1) * REC_HDR;
    if (maxcuts > ELEMENTSOF(small)) {
        big = calloc(maxcuts, sizeof(*big));
        if (!big)
            return -ENOMEM;
        local = big;
    }

    pthread_mutex_lock(&s->lock);
    if (a->removed)
        r = -ENOENT;
    else if (s->bytes + reserve > s->max_bytes)
        r = -ENOSPC;
    else
        r = cuts_reserve(st, maxcuts);
    if (r == 0)
        account(s, a, reserve);
    pthread_mutex_unlock(&s->lock);
    if (r < 0)
        return r;

    while (len > 0) {
        uint8_t h[REC_HDR];
        size_t piece;

        if (seg == SPOOL_CHUNK_MAX) {
            rec_header(h, REC_CUT, NULL, 0);
            r = pwrite_all(st->fd, h, REC_HDR, fpos);
            if (r < 0)
                goto fail;
            fpos += REC_HDR;
            seg = 0;
            local[ncut++] = (struct cut){off, fpos};
        }
        piece = len < (size_t)(SPOOL_CHUNK_MAX - seg) ? len : (size_t)(SPOOL_CHUNK_MAX - seg);
        rec_header(h, REC_DATA, p, piece);
        r = pwrite_all(st->fd, h, REC_HDR, fpos);
        if (r == 0)
            r = pwrite_all(st->fd, p, piece, fpos + REC_HDR);
        if (r < 0)
            goto fail;
        fpos += REC_HDR + (int64_t)piece;
        off += (int64_t)piece;
        seg += (int64_t)piece;
        p += piece;
        len -= piece;
    }

    now = clock_mono_ns();
    pthread_mutex_lock(&s->lock);
    memcpy(st->cuts + st->ncuts, local, ncut * sizeof(*local));
    st->ncuts += ncut;
    account(s, a, (fpos - st->fpos) - reserve);
    st->size = off;
    st->fpos = fpos;
    st->seg_len = seg;
    if (!st->dirty_ns)
        st->dirty_ns = now;
    need_sync = fpos - st->synced >= SPOOL_SYNC_BYTES || now - st->dirty_ns >= SPOOL_SYNC_NS;
    attempt_queue(s, a);
    pthread_mutex_unlock(&s->lock);
    if (ret_offset)
        *ret_offset = start;
    if (need_sync) {
        /* The bytes are accepted whatever happens here; spool_next() syncs again before it
         * offers them, and spool_sync()/spool_finish() report the error. */
        r = stream_cut_sync(s, a, k);
        if (r < 0)
            log_warn("op=spool_sync job=%s epoch=%" PRId64 " errno=%d", a->job_id, a->epoch, -r);
    }
    return 0;

fail:
    pthread_mutex_lock(&s->lock);
    account(s, a, -reserve);
    pthread_mutex_unlock(&s->lock);
    return stream_rollback(a, st, r);
}

/* Read the payload of the chunk [from, to), which is DATA records closed by a CUT. */
static int chunk_read(int fd, struct cut from, struct cut to, char **ret)
{
    size_t flen = (size_t)(to.fpos - from.fpos), len = (size_t)(to.off - from.off);
    size_t pos = 0, o = 0;
    _cleanup_free_ uint8_t *raw = malloc(flen);
    _cleanup_free_ char *out = malloc(len + 1);
    ssize_t n;

    if (!raw || !out)
        return -ENOMEM;
    n = pread_all(fd, raw, flen, from.fpos);
    if (n < 0)
        return (int)n;
    if ((size_t)n != flen)
        return -EIO;
    while (pos + REC_HDR <= flen) {
        uint32_t type, l;

        if (!rec_header_ok(raw + pos, &type, &l) || l > flen - pos - REC_HDR)
            return -EIO;
        pos += REC_HDR;
        if (type == REC_CUT)
            break;
        if (l > len - o || crc32c(raw + pos, l) != get32(raw + pos - REC_HDR + 8))
            return -EIO;
        memcpy(out + o, raw + pos, l);
        o += l;
        pos += l;
    }
    if (pos != flen || o != len)
        return -EIO;
    out[len] = '\0';
    *ret = TAKE_PTR(out);
    return 0;
}

/* ---- results and acknowledgements on disk ---- */

static int result_parse(const char *buf, size_t len, int *exit_code, uint32_t *flags,
                        size_t *json_len)
{
    const uint8_t *h = (const uint8_t *)buf;
    uint32_t jlen;

    if (len < RES_HDR || get32(h) != RES_MAGIC || get32(h + 20) != crc32c(h, 20))
        return -EBADMSG;
    jlen = get32(h + 12);
    if (jlen > SPOOL_RESULT_MAX || jlen != len - RES_HDR ||
        crc32c(buf + RES_HDR, jlen) != get32(h + 16))
        return -EBADMSG;
    *exit_code = (int)(int32_t)get32(h + 4);
    *flags = get32(h + 8);
    *json_len = jlen;
    return 0;
}

static int result_read(struct attempt *a, struct spool_item *ret)
{
    _cleanup_free_ char *buf = NULL;
    char *json = NULL;
    size_t len, jlen;
    int exit_code, r;
    uint32_t flags;

    r = read_small(a->dfd, "result", RES_HDR + SPOOL_RESULT_MAX, &buf, &len);
    if (r < 0)
        return r;
    r = result_parse(buf, len, &exit_code, &flags, &jlen);
    if (r < 0)
        return -EIO;
    if (jlen > 0) {
        json = malloc(jlen + 1);
        if (!json)
            return -ENOMEM;
        memcpy(json, buf + RES_HDR, jlen);
        json[jlen] = '\0';
    }
    memcpy(ret->job_id, a->job_id, ID_STR_LEN);
    ret->epoch = a->epoch;
    ret->kind = SPOOL_RESULT;
    ret->exit_code = exit_code;
    ret->flags = flags;
    ret->data = json;
    ret->len = jlen;
    return 0;
}

static int ack_write(struct attempt *a, const int64_t acked[2])
{
    uint8_t b[ACK_LEN];

    put32(b, ACK_MAGIC);
    put64(b + 8, (uint64_t)acked[0]);
    put64(b + 16, (uint64_t)acked[1]);
    put32(b + 4, crc32c(b + 8, 16));
    /* Not synced: losing it only means resending chunks the server already has. */
    return write_atomic(a->dfd, "acked", "acked.tmp", b, sizeof(b), NULL, 0, false);
}

static void ack_read(struct attempt *a, int64_t acked[2])
{
    uint8_t b[ACK_LEN];
    ssize_t n = -1;
    int fd;

    acked[0] = acked[1] = 0;
    fd = openat(a->dfd, "acked", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        n = pread_all(fd, b, sizeof(b), 0);
        close(fd);
    }
    if (n != ACK_LEN || get32(b) != ACK_MAGIC || get32(b + 4) != crc32c(b + 8, 16)) {
        if (fd >= 0)
            log_debug("op=spool_recover job=%s epoch=%" PRId64 " acked=invalid", a->job_id,
                      a->epoch);
        return;
    }
    for (int k = 0; k < 2; k++) {
        int64_t v = (int64_t)get64(b + 8 + 8 * k);
        acked[k] = v > 0 ? v : 0;
    }
}

/* ---- recovery ---- */

/* Rebuild a stream's bookkeeping from its records; trim a torn tail. */
static int stream_recover(struct attempt *a, int k, int64_t acked)
{
    struct stream *st = &a->st[k];
    _cleanup_free_ uint8_t *buf = malloc(SCAN_BUF);
    struct cut base = {0, 0};
    int64_t pos = 0, off = 0, seg = 0, bpos = 0, blen = 0;
    struct stat sb;
    int r;

    if (!buf)
        return -ENOMEM;
    if (fstat(st->fd, &sb) < 0)
        return -errno;
    for (;;) {
        uint32_t type, len;
        const uint8_t *h;

        if (pos + REC_HDR > sb.st_size)
            break;
        if (pos + REC_HDR > bpos + blen) {
            ssize_t n = pread_all(st->fd, buf, SCAN_BUF, pos);
            if (n < 0)
                return (int)n;
            bpos = pos;
            blen = n;
            if (pos + REC_HDR > bpos + blen)
                break;
        }
        h = buf + (pos - bpos);
        if (!rec_header_ok(h, &type, &len) || pos + REC_HDR + (int64_t)len > sb.st_size)
            break;
        if (pos + REC_HDR + (int64_t)len > bpos + blen) {
            ssize_t n = pread_all(st->fd, buf, SCAN_BUF, pos);
            if (n < 0)
                return (int)n;
            bpos = pos;
            blen = n;
            if (pos + REC_HDR + (int64_t)len > bpos + blen)
                break;
            h = buf;
        }
        if (type == REC_DATA && crc32c(h + REC_HDR, len) != get32(h + 8))
            break;
        pos += REC_HDR + (int64_t)len;
        if (type == REC_DATA) {
            off += len;
            seg += len;
        } else if (seg > 0) {
            /* An empty CUT is never written; were one there, it would bound nothing. */
            struct cut c = {off, pos};

            if (c.off <= acked) {
                base = c;
            } else {
                r = cuts_reserve(st, 1);
                if (r < 0)
                    return r;
                st->cuts[st->ncuts++] = c;
            }
            seg = 0;
        }
    }
    if (pos < sb.st_size) {
        /* Written but never synced before a crash: nothing of it was offered. */
        log_warn("op=spool_recover job=%s epoch=%" PRId64 " stream=%s trimmed=%" PRId64, a->job_id,
                 a->epoch, stream_files[k], (int64_t)sb.st_size - pos);
        if (ftruncate(st->fd, (off_t)pos) < 0)
            return -errno;
    }
    st->size = off;
    st->fpos = pos;
    st->seg_len = seg;
    /* Unknown whether it reached the disk before the crash: sync before offering. */
    st->synced = 0;
    st->acked = base.off;
    st->acked_fpos = base.fpos;
    a->bytes += pos;
    return 0;
}

static int attempt_load(struct spool *s, const char *name, const uint8_t id[16], const char *canon,
                        int64_t epoch)
{
    struct attempt *a = attempt_new(id, canon, epoch);
    _cleanup_free_ char *res = NULL;
    int64_t acked[2];
    struct stat sb;
    size_t len;
    int r;

    if (!a)
        return -ENOMEM;
    a->dfd = openat(s->dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (a->dfd < 0) {
        r = -errno;
        goto fail;
    }
    if (fstatat(a->dfd, "meta.json", &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        r = -errno;
        goto fail;
    }
    a->bytes += sb.st_size;
    (void)unlinkat(a->dfd, "acked.tmp", 0);
    (void)unlinkat(a->dfd, "result.tmp", 0);
    (void)unlinkat(a->dfd, "proc.tmp", 0);
    ack_read(a, acked);
    for (int k = 0; k < 2; k++) {
        a->st[k].fd =
            openat(a->dfd, stream_files[k], O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (a->st[k].fd < 0) {
            r = -errno;
            goto fail;
        }
        r = stream_recover(a, k, acked[k]);
        if (r < 0)
            goto fail;
    }
    r = read_small(a->dfd, "result", RES_HDR + SPOOL_RESULT_MAX, &res, &len);
    if (r == 0 && len == 0) {
        /* Made by spool_begin(), not filled yet: unfinished. */
    } else if (r == 0) {
        int exit_code;
        uint32_t flags;
        size_t jlen;

        if (result_parse(res, len, &exit_code, &flags, &jlen) == 0) {
            a->finished = true;
            a->bytes += (int64_t)len;
        } else {
            /* Torn: the agent died (or the power went) before spool_finish() returned.
             * The attempt reads as unfinished, so the daemon finishes it again. */
            log_warn("op=spool_recover job=%s epoch=%" PRId64 " result=invalid", a->job_id,
                     a->epoch);
        }
    } else if (r != -ENOENT) {
        goto fail;
    }
    a->refs = 1;
    attempt_link(s, a);
    s->bytes += a->bytes;
    attempt_queue(s, a);
    return 0;

fail:
    attempt_destroy(s, a);
    return r;
}

struct entry {
    char name[TMP_NAME_LEN];
    uint8_t id[16];
    char canon[ID_STR_LEN];
    int64_t epoch;
};

static int entry_cmp(const void *x, const void *y)
{
    const struct entry *a = x, *b = y;
    int c = memcmp(a->id, b->id, 16);

    if (c)
        return c;
    return (a->epoch > b->epoch) - (a->epoch < b->epoch);
}

static bool is_leftover(const char *name)
{
    return strncmp(name, ".new.", 5) == 0 || strncmp(name, ".del.", 5) == 0;
}

static int spool_recover(struct spool *s)
{
    _cleanup_free_ struct entry *ents = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d;
    int fd, r = 0;

    fd = dup(s->dfd);
    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    /* Deleting while reading a directory may skip entries: collect first. */
    while ((de = readdir(d))) {
        struct entry e;

        memset(&e, 0, sizeof(e));
        if (is_leftover(de->d_name)) {
            if (strlen(de->d_name) >= sizeof(e.name))
                continue; /* not a name the spool makes */
            e.epoch = 0;
        } else if (name_parse(de->d_name, e.id, e.canon, &e.epoch) < 0) {
            continue;
        }
        /* Both kinds were checked to fit. */
        memcpy(e.name, de->d_name, strlen(de->d_name) + 1);
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            struct entry *p = realloc(ents, ncap * sizeof(*p));
            if (!p) {
                r = -ENOMEM;
                break;
            }
            ents = p;
            cap = ncap;
        }
        ents[n++] = e;
    }
    closedir(d);
    if (r < 0)
        return r;

    for (size_t i = 0; i < n; i++)
        if (ents[i].epoch == 0)
            remove_tree(s->dfd, ents[i].name);
    /* Restarted attempts are queued by job id (UUIDv7: creation order), then epoch. */
    if (n > 1)
        qsort(ents, n, sizeof(*ents), entry_cmp);
    for (size_t i = 0; i < n; i++) {
        if (ents[i].epoch == 0)
            continue;
        r = attempt_load(s, ents[i].name, ents[i].id, ents[i].canon, ents[i].epoch);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            log_warn("op=spool_recover dir=%s errno=%d skipped=1", ents[i].name, -r);
    }
    return 0;
}

/* ---- public ---- */

int spool_open(const char *dir, int64_t max_bytes, struct spool **ret)
{
    struct spool *s;
    int r;

    if (!dir || !ret || max_bytes < 0)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    s->dfd = s->lockfd = -1;
    s->max_bytes = max_bytes ? max_bytes : SPOOL_MAX_BYTES_DEFAULT;
    s->ready.next = s->ready.prev = &s->ready;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        r = -errno;
        goto fail;
    }
    s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dfd < 0) {
        r = -errno;
        goto fail;
    }
    s->lockfd = openat(s->dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lockfd < 0) {
        r = -errno;
        goto fail;
    }
    /* Two agents on one spool would interleave records and acknowledgements. */
    if (flock(s->lockfd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK ? -EBUSY : -errno;
        goto fail;
    }
    r = spool_recover(s);
    if (r < 0)
        goto fail;
    *ret = s;
    return 0;

fail:
    spool_close(s);
    return r;
}

void spool_close(struct spool *s)
{
    struct attempt *a, *next;

    if (!s)
        return;
    for (a = s->first; a; a = next) {
        next = a->all_next;
        attempt_destroy(s, a);
    }
    if (s->lockfd >= 0)
        close(s->lockfd);
    if (s->dfd >= 0)
        close(s->dfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int write_new(int dfd, const char *name, const void *data, size_t len, bool durable)
{
    int fd, r;

    fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    r = pwrite_all(fd, data, len, 0);
    if (r == 0 && durable && fdatasync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r;
}

int spool_begin(struct spool *s, const char *job_id, int64_t epoch, const char *meta_json)
{
    uint8_t id[16];
    char canon[ID_STR_LEN], canon_name[NAME_LEN], tmp[TMP_NAME_LEN];
    struct attempt *a;
    size_t mlen;
    int r = 0;

    r = attempt_key(job_id, epoch, id, canon);
    if (r < 0)
        return r;
    mlen = meta_json ? strnlen(meta_json, SPOOL_META_MAX + 1) : 0;
    if (mlen > SPOOL_META_MAX)
        return -EMSGSIZE;
    a = attempt_new(id, canon, epoch);
    if (!a)
        return -ENOMEM;
    memcpy(canon_name, a->name, NAME_LEN);

    pthread_mutex_lock(&s->lock);
    if (attempt_find(s, id, epoch))
        r = -EEXIST;
    else if (s->bytes + (int64_t)mlen > s->max_bytes)
        r = -ENOSPC;
    else
        snprintf(tmp, sizeof(tmp), ".new.%s.%" PRIu64, a->name, s->seq++);
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        attempt_destroy(s, a);
        return r;
    }

    /* Built under a temporary name and renamed into place, so an attempt on disk always has
     * its metadata and both streams. The streams are opened after the rename: Windows
     * refuses to rename a directory while a file in it is open. */
    if (mkdirat(s->dfd, tmp, 0700) < 0) {
        r = -errno;
        attempt_destroy(s, a);
        return r;
    }
    a->dfd = openat(s->dfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (a->dfd < 0) {
        r = -errno;
        goto fail;
    }
    /* Three syncs: the metadata, then the directory's entries, then its name. The empty
     * files need none of their own: the directory's sync covers their names, nothing is in
     * them yet, and recovery creates a missing stream and reads an empty result as "not
     * finished". The result file is made now so that spool_finish() only fills it: one
     * sync, where a new name would need the directory's too. */
    r = write_new(a->dfd, "meta.json", meta_json, mlen, true);
    for (int k = 0; k < 2 && r == 0; k++)
        r = write_new(a->dfd, stream_files[k], NULL, 0, false);
    if (r == 0)
        r = write_new(a->dfd, "result", NULL, 0, false);
    if (r < 0)
        goto fail;
    if (fsync(a->dfd) < 0) {
        r = -errno;
        goto fail;
    }
    if (renameat(s->dfd, tmp, s->dfd, a->name) < 0) {
        r = (errno == ENOTEMPTY || errno == EEXIST) ? -EEXIST : -errno;
        goto fail;
    }
    if (fsync(s->dfd) < 0) {
        /* In place but perhaps not durable: undo, so failure means "no attempt". */
        r = -errno;
        goto fail_placed;
    }
    for (int k = 0; k < 2; k++) {
        a->st[k].fd = openat(a->dfd, stream_files[k], O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (a->st[k].fd < 0) {
            r = -errno;
            goto fail_placed;
        }
    }
    pthread_mutex_lock(&s->lock);
    a->refs = 1;
    attempt_link(s, a);
    account(s, a, (int64_t)mlen);
    pthread_mutex_unlock(&s->lock);
    return r;

fail:
    attempt_destroy(s, a);
    remove_tree(s->dfd, tmp);
    return r;

fail_placed:
    attempt_destroy(s, a);
    remove_tree(s->dfd, canon_name);
    return r;
}

int spool_append(struct spool *s, const char *job_id, int64_t epoch, int stream, const void *data,
                 size_t len, int64_t *ret_offset)
{
    struct attempt *a;
    int r;

    if ((stream != SPOOL_STDOUT && stream != SPOOL_STDERR) || (!data && len > 0))
        return -EINVAL;
    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    pthread_mutex_lock(&a->io);
    r = append_locked(s, a, stream - 1, data, len, ret_offset);
    pthread_mutex_unlock(&a->io);
    attempt_unref(s, a);
    return r;
}

int spool_sync(struct spool *s, const char *job_id, int64_t epoch)
{
    struct attempt *a;
    int r;

    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    pthread_mutex_lock(&a->io);
    r = attempt_sync_locked(s, a);
    pthread_mutex_unlock(&a->io);
    attempt_unref(s, a);
    return r;
}

int spool_sync_all(struct spool *s)
{
    _cleanup_free_ struct attempt **list = NULL;
    size_t n = 0, i = 0;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    for (struct attempt *a = s->first; a; a = a->all_next)
        n++;
    list = n ? calloc(n, sizeof(*list)) : NULL;
    if (n && !list) {
        pthread_mutex_unlock(&s->lock);
        return -ENOMEM;
    }
    for (struct attempt *a = s->first; a; a = a->all_next) {
        a->refs++;
        list[i++] = a;
    }
    pthread_mutex_unlock(&s->lock);

    for (i = 0; i < n; i++) {
        int q;

        pthread_mutex_lock(&list[i]->io);
        q = attempt_sync_locked(s, list[i]);
        pthread_mutex_unlock(&list[i]->io);
        if (q < 0 && r == 0)
            r = q;
        attempt_unref(s, list[i]);
    }
    return r;
}

int spool_set_proc(struct spool *s, const char *job_id, int64_t epoch, const char *text)
{
    struct attempt *a;
    size_t len = text ? strnlen(text, SPOOL_PROC_MAX + 1) : 0;
    int r;

    if (!text)
        return -EINVAL;
    if (len > SPOOL_PROC_MAX)
        return -EMSGSIZE;
    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    /* Under io: the rename must not race a removal of the attempt's directory. */
    pthread_mutex_lock(&a->io);
    /* Not synced: the record is for the next agent process after this one dies, and the
     * page cache outlives a killed process. A power loss ends the processes it names, and
     * a successor sees from the boot id that they are gone. */
    r = a->finished ? -EALREADY
                    : write_atomic(a->dfd, "proc", "proc.tmp", text, len, NULL, 0, false);
    pthread_mutex_unlock(&a->io);
    attempt_unref(s, a);
    return r;
}

/* Fill the result file spool_begin() made: one sync, as its name is durable already. An
 * attempt begun by an older agent has none and gets one through tmp + rename. A failure
 * empties it again (best effort: a torn or unsynced record fails its CRC on recovery
 * anyway), so the attempt reads as unfinished. Under io. */
static int result_write(struct attempt *a, const uint8_t h[RES_HDR], const char *json, size_t jlen)
{
    int fd, r;

    fd = openat(a->dfd, "result", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return write_atomic(a->dfd, "result", "result.tmp", h, RES_HDR, json, jlen, true);
    if (fd < 0)
        return -errno;
    r = pwrite_all(fd, h, RES_HDR, 0);
    if (r == 0 && jlen > 0)
        r = pwrite_all(fd, json, jlen, RES_HDR);
    /* A recovered attempt that is finished again may hold a torn record: cut it. */
    if (r == 0 && ftruncate(fd, (off_t)(RES_HDR + jlen)) < 0)
        r = -errno;
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    if (r < 0 && ftruncate(fd, 0) < 0)
        log_warn("op=spool_result job=%s epoch=%" PRId64 " errno=%d", a->job_id, a->epoch, errno);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r;
}

int spool_finish(struct spool *s, const char *job_id, int64_t epoch, const struct spool_result *res)
{
    uint8_t h[RES_HDR];
    struct attempt *a;
    size_t jlen;
    int r;

    if (!res)
        return -EINVAL;
    jlen = res->json ? strnlen(res->json, SPOOL_RESULT_MAX + 1) : 0;
    if (jlen > SPOOL_RESULT_MAX)
        return -EMSGSIZE;
    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    pthread_mutex_lock(&a->io);
    if (a->broken)
        r = -EIO;
    else if (a->finished)
        r = -EALREADY;
    else
        r = attempt_sync_locked(s, a);
    if (r == 0) {
        put32(h, RES_MAGIC);
        put32(h + 4, (uint32_t)res->exit_code);
        put32(h + 8, res->flags);
        put32(h + 12, (uint32_t)jlen);
        put32(h + 16, crc32c(res->json, jlen));
        put32(h + 20, crc32c(h, 20));
        r = result_write(a, h, res->json, jlen);
    }
    if (r == 0) {
        pthread_mutex_lock(&s->lock);
        a->finished = true;
        account(s, a, RES_HDR + (int64_t)jlen);
        attempt_queue(s, a);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&a->io);
    attempt_unref(s, a);
    return r;
}

void spool_item_free(struct spool_item *item)
{
    if (!item)
        return;
    free(item->data);
    memset(item, 0, sizeof(*item));
}

int spool_next(struct spool *s, struct spool_item *ret)
{
    memset(ret, 0, sizeof(*ret));
    for (;;) {
        struct qnode *n;
        struct attempt *a;
        struct stream *st;
        int r;

        pthread_mutex_lock(&s->lock);
        n = s->ready.next;
        if (n == &s->ready) {
            pthread_mutex_unlock(&s->lock);
            return -ENOENT;
        }
        a = n->a;

        if (n->src == SRC_RESULT) {
            q_del(n);
            if (!result_due(a)) {
                pthread_mutex_unlock(&s->lock);
                continue;
            }
            a->result_sent = true;
            a->refs++;
            pthread_mutex_unlock(&s->lock);
            r = result_read(a, ret);
            if (r < 0) {
                pthread_mutex_lock(&s->lock);
                a->result_sent = false;
                attempt_queue(s, a);
                pthread_mutex_unlock(&s->lock);
            }
            attempt_unref(s, a);
            return r;
        }

        st = &a->st[n->src];
        if (st->nsent < st->ncuts && st->cuts[st->nsent].fpos <= st->synced) {
            size_t i = st->nsent;
            struct cut from = i ? st->cuts[i - 1] : (struct cut){st->acked, st->acked_fpos};
            struct cut to = st->cuts[i];

            st->nsent++;
            /* Back of the queue: the other sources get their turn first. */
            q_del(n);
            if (stream_due(st))
                q_push(s, n);
            a->refs++;
            pthread_mutex_unlock(&s->lock);
            r = chunk_read(st->fd, from, to, &ret->data);
            if (r < 0) {
                size_t j = 0;

                log_warn("op=spool_read job=%s epoch=%" PRId64 " stream=%s offset=%" PRId64
                         " errno=%d",
                         a->job_id, a->epoch, stream_files[n->src], from.off, -r);
                pthread_mutex_lock(&s->lock);
                /* Offer it again; acknowledgements may have shifted the cuts meanwhile. */
                while (j < st->ncuts && st->cuts[j].off <= from.off)
                    j++;
                if (st->nsent > j)
                    st->nsent = j;
                attempt_queue(s, a);
                pthread_mutex_unlock(&s->lock);
            } else {
                memcpy(ret->job_id, a->job_id, ID_STR_LEN);
                ret->epoch = a->epoch;
                ret->kind = SPOOL_CHUNK;
                ret->stream = n->src + 1;
                ret->offset = from.off;
                ret->len = (size_t)(to.off - from.off);
            }
            attempt_unref(s, a);
            return r;
        }
        if (!stream_due(st)) {
            q_del(n);
            pthread_mutex_unlock(&s->lock);
            continue;
        }

        /* The next chunk is still open or not yet durable: cut and sync it, then retry. */
        a->refs++;
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_lock(&a->io);
        r = stream_cut_sync(s, a, n->src);
        pthread_mutex_unlock(&a->io);
        if (r < 0) {
            pthread_mutex_lock(&s->lock);
            q_del(n);
            attempt_queue(s, a);
            pthread_mutex_unlock(&s->lock);
        }
        attempt_unref(s, a);
        if (r < 0)
            return r;
    }
}

void spool_rewind(struct spool *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->ready.next != &s->ready)
        q_del(s->ready.next);
    for (struct attempt *a = s->first; a; a = a->all_next) {
        a->st[0].nsent = a->st[1].nsent = 0;
        a->result_sent = false;
        attempt_queue(s, a);
    }
    pthread_mutex_unlock(&s->lock);
}

int spool_ack_chunk(struct spool *s, const char *job_id, int64_t epoch, int stream,
                    int64_t end_offset)
{
    struct attempt *a;
    struct stream *st;
    int64_t snap[2];
    bool changed = false;
    int r;

    if (stream != SPOOL_STDOUT && stream != SPOOL_STDERR)
        return -EINVAL;
    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    st = &a->st[stream - 1];
    pthread_mutex_lock(&a->ack_io);
    pthread_mutex_lock(&s->lock);
    if (a->removed) {
        r = -ENOENT;
    } else if (end_offset < 0 || end_offset > st->size) {
        r = -EINVAL;
    } else {
        size_t d = 0;

        while (d < st->ncuts && st->cuts[d].off <= end_offset)
            d++;
        if (d > 0) {
            st->acked = st->cuts[d - 1].off;
            st->acked_fpos = st->cuts[d - 1].fpos;
            memmove(st->cuts, st->cuts + d, (st->ncuts - d) * sizeof(*st->cuts));
            st->ncuts -= d;
            st->nsent = st->nsent > d ? st->nsent - d : 0;
            snap[0] = a->st[0].acked;
            snap[1] = a->st[1].acked;
            changed = true;
            attempt_queue(s, a);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (changed) {
        /* Taken under ack_io, the snapshots reach the file in order. A failure costs only
         * a resend after a restart, so it is not the caller's problem. */
        int q = ack_write(a, snap);
        if (q < 0)
            log_warn("op=spool_ack job=%s epoch=%" PRId64 " errno=%d", a->job_id, a->epoch, -q);
    }
    pthread_mutex_unlock(&a->ack_io);
    attempt_unref(s, a);
    return r;
}

static int remove_attempt(struct spool *s, const char *job_id, int64_t epoch, bool need_finished)
{
    struct attempt *a;
    int r;

    r = attempt_get(s, job_id, epoch, &a);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    if (a->removed)
        r = -ENOENT;
    else if (need_finished && !a->finished)
        r = -EINVAL;
    else
        attempt_remove_locked(s, a);
    pthread_mutex_unlock(&s->lock);
    /* Usually the last reference: the files go now. */
    attempt_unref(s, a);
    return r;
}

int spool_ack_result(struct spool *s, const char *job_id, int64_t epoch)
{
    return remove_attempt(s, job_id, epoch, true);
}

int spool_discard(struct spool *s, const char *job_id, int64_t epoch)
{
    return remove_attempt(s, job_id, epoch, false);
}

void spool_attempts_free(struct spool_attempt *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].meta);
        free(list[i].proc);
    }
    free(list);
}

int spool_list(struct spool *s, struct spool_attempt **ret, size_t *ret_n)
{
    _cleanup_free_ struct attempt **refs = NULL;
    struct spool_attempt *list = NULL;
    size_t n = 0, i = 0;
    int r = 0;

    pthread_mutex_lock(&s->lock);
    for (struct attempt *a = s->first; a; a = a->all_next)
        n++;
    if (n) {
        refs = calloc(n, sizeof(*refs));
        list = calloc(n, sizeof(*list));
        if (!refs || !list) {
            pthread_mutex_unlock(&s->lock);
            free(list);
            return -ENOMEM;
        }
    }
    for (struct attempt *a = s->first; a; a = a->all_next, i++) {
        a->refs++;
        refs[i] = a;
        memcpy(list[i].job_id, a->job_id, ID_STR_LEN);
        list[i].epoch = a->epoch;
        list[i].finished = a->finished;
        list[i].stdout_len = a->st[0].size;
        list[i].stderr_len = a->st[1].size;
    }
    pthread_mutex_unlock(&s->lock);

    /* meta.json never changes after spool_begin(): read it without the lock. */
    for (i = 0; i < n; i++) {
        if (r == 0)
            r = read_small(refs[i]->dfd, "meta.json", SPOOL_META_MAX, &list[i].meta,
                           &list[i].meta_len);
        if (r == 0) {
            /* Replaced by rename only: a reader sees a whole record or none. */
            size_t plen;
            pthread_mutex_lock(&refs[i]->io);
            int q = read_small(refs[i]->dfd, "proc", SPOOL_PROC_MAX, &list[i].proc, &plen);
            pthread_mutex_unlock(&refs[i]->io);
            if (q < 0 && q != -ENOENT)
                r = q;
        }
        attempt_unref(s, refs[i]);
    }
    if (r < 0) {
        spool_attempts_free(list, n);
        return r;
    }
    *ret = list;
    *ret_n = n;
    return 0;
}

int64_t spool_bytes(struct spool *s)
{
    int64_t b;

    pthread_mutex_lock(&s->lock);
    b = s->bytes;
    pthread_mutex_unlock(&s->lock);
    return b;
}
