/* Tests for agent/spool.c. Each test works in its own temporary directory. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/spool.h"
#include "common/buf.h"
#include "common/clock.h"

static char root[64];
static char dir[96];

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/test-spool-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    snprintf(dir, sizeof(dir), "%s/spool", root);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void teardown(void)
{
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(spool, .init = setup, .fini = teardown);

/* A canonical UUIDv7-shaped job id; n tells them apart. */
static const char *job(unsigned n)
{
    static char ids[16][ID_STR_LEN];
    char *s = ids[n % 16];

    snprintf(s, ID_STR_LEN, "0190a1b2-c3d4-7e5f-8a9b-%012x", n);
    return s;
}

static struct spool *open_spool(int64_t max)
{
    struct spool *s = NULL;

    cr_assert_eq(spool_open(dir, max, &s), 0);
    cr_assert_not_null(s);
    return s;
}

static int64_t append_str(struct spool *s, const char *id, int stream, const char *text)
{
    int64_t off = -1;

    cr_assert_eq(spool_append(s, id, 1, stream, text, strlen(text), &off), 0);
    return off;
}

static bool path_exists(const char *id, int64_t epoch)
{
    char p[1024];
    struct stat sb;

    snprintf(p, sizeof(p), "%s/%s.%lld", dir, id, (long long)epoch);
    return stat(p, &sb) == 0;
}

/* Take every chunk that is due, check it continues its stream, acknowledge it and append it
 * to out[stream - 1]. Stops at a result, which goes to *result (freed when NULL). Returns the
 * number of chunks. */
static int drain_chunks(struct spool *s, const char *id, struct buf out[2],
                        struct spool_item *result)
{
    struct spool_item it;
    int n = 0;

    while (spool_next(s, &it) == 0) {
        if (it.kind == SPOOL_RESULT) {
            if (result)
                *result = it;
            else
                spool_item_free(&it);
            break;
        }
        cr_assert_str_eq(it.job_id, id);
        cr_assert(it.stream == 1 || it.stream == 2);
        cr_assert_eq(it.offset, (int64_t)out[it.stream - 1].len, "chunk continues its stream");
        cr_assert_gt(it.len, 0);
        cr_assert_leq(it.len, SPOOL_CHUNK_MAX);
        cr_assert_eq(buf_append(&out[it.stream - 1], it.data, it.len), 0);
        cr_assert_eq(spool_ack_chunk(s, id, it.epoch, it.stream, it.offset + (int64_t)it.len), 0);
        spool_item_free(&it);
        n++;
    }
    return n;
}

Test(spool, append_next_ack_in_order)
{
    struct spool *s = open_spool(0);
    struct spool_item it;
    const char *id = job(1);

    cr_assert_eq(spool_begin(s, id, 1, "{\"cmd\":\"true\"}"), 0);
    cr_assert_eq(append_str(s, id, SPOOL_STDOUT, "hello "), 0);
    cr_assert_eq(append_str(s, id, SPOOL_STDERR, "oops"), 0);
    cr_assert_eq(append_str(s, id, SPOOL_STDOUT, "world"), 6);

    /* Sources come in the order they had something to send. */
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_CHUNK);
    cr_assert_str_eq(it.job_id, id);
    cr_assert_eq(it.epoch, 1);
    cr_assert_eq(it.stream, SPOOL_STDOUT);
    cr_assert_eq(it.offset, 0);
    cr_assert_eq(it.len, 11);
    cr_assert_str_eq(it.data, "hello world");
    spool_item_free(&it);

    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.stream, SPOOL_STDERR);
    cr_assert_eq(it.offset, 0);
    cr_assert_str_eq(it.data, "oops");
    spool_item_free(&it);

    cr_assert_eq(spool_next(s, &it), -ENOENT, "everything is in flight");
    cr_assert_null(it.data);

    cr_assert_eq(append_str(s, id, SPOOL_STDOUT, "!"), 11);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.stream, SPOOL_STDOUT);
    cr_assert_eq(it.offset, 11);
    cr_assert_str_eq(it.data, "!");
    spool_item_free(&it);

    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDOUT, 12), 0);
    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDERR, 4), 0);
    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDERR, 2), 0, "older ack is a no-op");
    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDERR, 5), -EINVAL, "past the data");
    spool_rewind(s);
    cr_assert_eq(spool_next(s, &it), -ENOENT, "acknowledged chunks are not offered again");
    spool_close(s);
}

Test(spool, rewind_offers_the_same_chunks_again)
{
    struct spool *s = open_spool(0);
    struct spool_item a, b, c;
    const char *id = job(2);

    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    append_str(s, id, SPOOL_STDOUT, "first ");
    cr_assert_eq(spool_next(s, &a), 0);
    append_str(s, id, SPOOL_STDOUT, "second ");
    cr_assert_eq(spool_next(s, &b), 0);
    append_str(s, id, SPOOL_STDOUT, "third");
    cr_assert_str_eq(a.data, "first ");
    cr_assert_eq(b.offset, 6);
    cr_assert_str_eq(b.data, "second ");

    /* The connection dropped: both are offered again with their bounds, then the rest. */
    spool_rewind(s);
    cr_assert_eq(spool_next(s, &c), 0);
    cr_assert_eq(c.offset, a.offset);
    cr_assert_eq(c.len, a.len);
    cr_assert_str_eq(c.data, a.data);
    spool_item_free(&c);
    cr_assert_eq(spool_next(s, &c), 0);
    cr_assert_eq(c.offset, b.offset);
    cr_assert_str_eq(c.data, b.data);
    spool_item_free(&c);
    cr_assert_eq(spool_next(s, &c), 0);
    cr_assert_eq(c.offset, 13);
    cr_assert_str_eq(c.data, "third");
    spool_item_free(&c);

    /* Only the first is acknowledged: a rewind offers the second and third. */
    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDOUT, a.offset + (int64_t)a.len), 0);
    spool_rewind(s);
    cr_assert_eq(spool_next(s, &c), 0);
    cr_assert_eq(c.offset, 6);
    spool_item_free(&c);
    spool_item_free(&a);
    spool_item_free(&b);
    spool_close(s);
}

Test(spool, chunks_never_exceed_the_cap)
{
    struct spool *s = open_spool(0);
    struct buf out[2] = {BUF_INIT, BUF_INIT};
    size_t big = 3 * SPOOL_CHUNK_MAX + 123;
    char *data = malloc(big);
    const char *id = job(3);
    int64_t off;

    cr_assert_not_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    cr_assert_eq(spool_append(s, id, 1, SPOOL_STDOUT, "head:", 5, &off), 0);
    cr_assert_eq(spool_append(s, id, 1, SPOOL_STDOUT, data, big, &off), 0);
    cr_assert_eq(off, 5);
    cr_assert_geq(drain_chunks(s, id, out, NULL), 4);
    cr_assert_eq(out[0].len, big + 5);
    cr_assert_eq(memcmp(out[0].data, "head:", 5), 0);
    cr_assert_eq(memcmp(out[0].data + 5, data, big), 0);
    free(data);
    buf_free(&out[0]);
    buf_free(&out[1]);
    spool_close(s);
}

Test(spool, result_only_after_output_acked)
{
    struct spool *s = open_spool(0);
    struct spool_result res = {.exit_code = 3, .flags = 5, .json = "{\"ok\":false}"};
    struct spool_item it, chunk;
    const char *id = job(4);

    cr_assert_eq(spool_begin(s, id, 7, NULL), 0);
    cr_assert_eq(spool_append(s, id, 7, SPOOL_STDERR, "boom", 4, NULL), 0);
    cr_assert_eq(spool_finish(s, id, 7, &res), 0);
    cr_assert_eq(spool_append(s, id, 7, SPOOL_STDOUT, "late", 4, NULL), -EALREADY);
    cr_assert_eq(spool_finish(s, id, 7, &res), -EALREADY);

    cr_assert_eq(spool_next(s, &chunk), 0);
    cr_assert_eq(chunk.kind, SPOOL_CHUNK);
    cr_assert_str_eq(chunk.data, "boom");
    cr_assert_eq(spool_next(s, &it), -ENOENT, "output not acknowledged yet");
    cr_assert_eq(spool_ack_result(s, id, 7), 0, "finished: the server may have it already");
    spool_item_free(&chunk);
    cr_assert(!path_exists(id, 7));

    /* Again, acknowledging the output this time. */
    cr_assert_eq(spool_begin(s, id, 8, NULL), 0);
    cr_assert_eq(spool_ack_result(s, id, 8), -EINVAL, "not finished");
    cr_assert_eq(spool_append(s, id, 8, SPOOL_STDERR, "boom", 4, NULL), 0);
    cr_assert_eq(spool_finish(s, id, 8, &res), 0);
    cr_assert_eq(spool_next(s, &chunk), 0);
    cr_assert_eq(spool_next(s, &it), -ENOENT);
    cr_assert_eq(spool_ack_chunk(s, id, 8, SPOOL_STDERR, 4), 0);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_str_eq(it.job_id, id);
    cr_assert_eq(it.epoch, 8);
    cr_assert_eq(it.exit_code, 3);
    cr_assert_eq(it.flags, 5);
    cr_assert_eq(it.len, strlen(res.json));
    cr_assert_str_eq(it.data, res.json);
    spool_item_free(&it);
    spool_item_free(&chunk);
    cr_assert_eq(spool_next(s, &it), -ENOENT, "the result is offered once");
    spool_close(s);
}

Test(spool, result_without_json_or_output)
{
    struct spool *s = open_spool(0);
    struct spool_result res = {.exit_code = -1, .flags = 0x80000001u, .json = NULL};
    struct spool_item it;
    const char *id = job(5);

    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    cr_assert_eq(spool_finish(s, id, 1, &res), 0);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_eq(it.exit_code, -1);
    cr_assert_eq(it.flags, 0x80000001u);
    cr_assert_null(it.data);
    cr_assert_eq(it.len, 0);
    spool_item_free(&it);
    spool_close(s);
}

Test(spool, ack_result_deletes_files)
{
    struct spool *s = open_spool(0);
    struct spool_result res = {.exit_code = 0, .json = "{}"};
    struct buf out[2] = {BUF_INIT, BUF_INIT};
    struct spool_attempt *list;
    struct spool_item it;
    const char *id = job(6);
    size_t n;

    cr_assert_eq(spool_begin(s, id, 2, "{}"), 0);
    cr_assert(path_exists(id, 2));
    cr_assert_eq(spool_append(s, id, 2, SPOOL_STDOUT, "x", 1, NULL), 0);
    cr_assert_gt(spool_bytes(s), 0);
    cr_assert_eq(spool_finish(s, id, 2, &res), 0);
    cr_assert_eq(drain_chunks(s, id, out, &it), 1);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_str_eq(it.data, "{}");
    spool_item_free(&it);
    cr_assert_eq(spool_ack_result(s, id, 2), 0);
    cr_assert(!path_exists(id, 2));
    cr_assert_eq(spool_bytes(s), 0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_null(list);
    cr_assert_eq(spool_ack_result(s, id, 2), -ENOENT);
    cr_assert_eq(spool_next(s, &it), -ENOENT);
    buf_free(&out[0]);
    buf_free(&out[1]);
    spool_close(s);
}

Test(spool, reopen_resumes_exactly)
{
    struct spool *s = open_spool(0);
    struct spool_result res = {.exit_code = 1, .json = "{\"n\":1}"};
    struct spool_attempt *list;
    struct spool_item a, b, it;
    const char *j1 = job(7), *j2 = job(8);
    size_t n;

    cr_assert_eq(spool_begin(s, j1, 1, "{\"job\":1}"), 0);
    cr_assert_eq(spool_begin(s, j2, 3, "{\"job\":2}"), 0);
    append_str(s, j1, SPOOL_STDOUT, "acked ");
    cr_assert_eq(spool_next(s, &a), 0);
    cr_assert_eq(spool_ack_chunk(s, j1, 1, SPOOL_STDOUT, 6), 0);
    append_str(s, j1, SPOOL_STDOUT, "offered ");
    cr_assert_eq(spool_next(s, &b), 0); /* offered, never acknowledged */
    cr_assert_str_eq(b.data, "offered ");
    append_str(s, j1, SPOOL_STDOUT, "pending");
    cr_assert_eq(spool_append(s, j2, 3, SPOOL_STDERR, "e", 1, NULL), 0);
    cr_assert_eq(spool_finish(s, j2, 3, &res), 0);
    spool_close(s);

    s = open_spool(0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(list[0].job_id, j1);
    cr_assert_eq(list[0].epoch, 1);
    cr_assert(!list[0].finished);
    cr_assert_eq(list[0].stdout_len, 21);
    cr_assert_eq(list[0].stderr_len, 0);
    cr_assert_str_eq(list[0].meta, "{\"job\":1}");
    cr_assert_str_eq(list[1].job_id, j2);
    cr_assert_eq(list[1].epoch, 3);
    cr_assert(list[1].finished);
    cr_assert_eq(list[1].stderr_len, 1);
    cr_assert_str_eq(list[1].meta, "{\"job\":2}");
    spool_attempts_free(list, n);

    /* What was not acknowledged comes again, the offered chunk with the same bounds; sources
     * take turns (j1 stdout, j2 stderr, j1 stdout, j2 result). */
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_str_eq(it.job_id, j1);
    cr_assert_eq(it.offset, b.offset);
    cr_assert_eq(it.len, b.len);
    cr_assert_str_eq(it.data, b.data);
    spool_item_free(&it);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_str_eq(it.job_id, j2);
    cr_assert_eq(it.stream, SPOOL_STDERR);
    cr_assert_str_eq(it.data, "e");
    cr_assert_eq(spool_ack_chunk(s, j2, 3, SPOOL_STDERR, 1), 0);
    spool_item_free(&it);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_str_eq(it.job_id, j1);
    cr_assert_eq(it.offset, 14);
    cr_assert_str_eq(it.data, "pending");
    spool_item_free(&it);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_str_eq(it.job_id, j2);
    cr_assert_str_eq(it.data, "{\"n\":1}");
    spool_item_free(&it);
    cr_assert_eq(spool_next(s, &it), -ENOENT);

    /* The unfinished attempt takes appends where it left off. */
    cr_assert_eq(append_str(s, j1, SPOOL_STDOUT, "more"), 21);
    spool_item_free(&a);
    spool_item_free(&b);
    spool_close(s);
}

/* Deterministic content: byte at stream offset off of (job n, stream). */
static char pattern(unsigned n, int stream, int64_t off)
{
    return (char)((n * 31u + (unsigned)stream * 7u + (uint64_t)off * 13u + (uint64_t)off / 251u) &
                  0xff);
}

static void fill(char *p, size_t len, unsigned n, int stream, int64_t off)
{
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(n, stream, off + (int64_t)i);
}

static bool matches(const char *p, size_t len, unsigned n, int stream, int64_t off)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(n, stream, off + (int64_t)i))
            return false;
    return true;
}

/* kill -9 after a sync point: the synced prefix, and indeed everything appended (the page
 * cache survives the process), is there after reopening; a chunk offered before the crash
 * is offered again with the same bounds. */
Test(spool, crash_keeps_everything_synced)
{
    const char *id = job(9);
    int pipefd[2];
    int64_t synced_len = 0, total = 0, offered_len = 0;
    struct spool_attempt *list;
    struct spool_item it;
    struct spool *s;
    int status;
    size_t n;
    pid_t pid;

    cr_assert_eq(pipe(pipefd), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char block[1000];
        int64_t nums[3], off = 0;
        struct spool_item first;

        if (spool_open(dir, 0, &s) < 0 || spool_begin(s, id, 1, "{}") < 0)
            _exit(1);
        for (int i = 0; i < 300; i++) {
            size_t len = 1 + (size_t)(i * 37) % sizeof(block);
            fill(block, len, 9, SPOOL_STDOUT, off);
            if (spool_append(s, id, 1, SPOOL_STDOUT, block, len, NULL) < 0)
                _exit(1);
            off += (int64_t)len;
            if (i == 100 && spool_next(s, &first) < 0)
                _exit(1);
        }
        if (spool_sync(s, id, 1) < 0)
            _exit(1);
        nums[0] = off;
        for (int i = 0; i < 50; i++) {
            fill(block, 500, 9, SPOOL_STDOUT, off);
            if (spool_append(s, id, 1, SPOOL_STDOUT, block, 500, NULL) < 0)
                _exit(1);
            off += 500;
        }
        nums[1] = off;
        nums[2] = (int64_t)first.len;
        if (write(pipefd[1], nums, sizeof(nums)) != (ssize_t)sizeof(nums))
            _exit(1);
        raise(SIGKILL);
        _exit(1);
    }
    close(pipefd[1]);
    {
        int64_t nums[3];
        cr_assert_eq(read(pipefd[0], nums, sizeof(nums)), (ssize_t)sizeof(nums));
        synced_len = nums[0];
        total = nums[1];
        offered_len = nums[2];
    }
    close(pipefd[0]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    cr_assert_gt(synced_len, 0);

    s = open_spool(0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert(!list[0].finished);
    cr_assert_geq(list[0].stdout_len, synced_len);
    cr_assert_eq(list[0].stdout_len, total, "kill -9 loses no appended byte");
    spool_attempts_free(list, n);

    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.offset, 0);
    cr_assert_eq((int64_t)it.len, offered_len, "same bounds as offered before the crash");
    cr_assert(matches(it.data, it.len, 9, SPOOL_STDOUT, 0));
    cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDOUT, (int64_t)it.len), 0);
    {
        int64_t off = (int64_t)it.len;
        spool_item_free(&it);
        while (spool_next(s, &it) == 0) {
            cr_assert_eq(it.offset, off);
            cr_assert(matches(it.data, it.len, 9, SPOOL_STDOUT, off));
            off += (int64_t)it.len;
            cr_assert_eq(spool_ack_chunk(s, id, 1, SPOOL_STDOUT, off), 0);
            spool_item_free(&it);
        }
        cr_assert_eq(off, total);
    }
    spool_close(s);
}

/* After power loss a stream may end in a torn record: it is trimmed, and the bookkeeping
 * follows the file. */
Test(spool, torn_tail_is_trimmed)
{
    struct spool *s = open_spool(0);
    struct buf out[2] = {BUF_INIT, BUF_INIT};
    struct spool_attempt *list;
    const char *id = job(10);
    char path[1024];
    struct stat before, after;
    size_t n;
    int fd;

    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    append_str(s, id, SPOOL_STDOUT, "durable");
    cr_assert_eq(spool_sync(s, id, 1), 0);
    spool_close(s);

    snprintf(path, sizeof(path), "%s/%s.1/stdout", dir, id);
    cr_assert_eq(stat(path, &before), 0);
    fd = open(path, O_WRONLY | O_APPEND);
    cr_assert_geq(fd, 0);
    /* A record header cut short, then the zeros a file system may leave. */
    cr_assert_eq(write(fd, "OSD1\x05\0\0\0\0\0\0\0\0\0\0\0\0\0", 18), 18);
    close(fd);

    s = open_spool(0);
    cr_assert_eq(stat(path, &after), 0);
    cr_assert_eq(after.st_size, before.st_size);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(list[0].stdout_len, 7);
    spool_attempts_free(list, n);
    cr_assert_eq(append_str(s, id, SPOOL_STDOUT, " more"), 7);
    drain_chunks(s, id, out, NULL);
    cr_assert_eq(out[0].len, 12);
    cr_assert_str_eq(out[0].data, "durable more");
    buf_free(&out[0]);
    buf_free(&out[1]);
    spool_close(s);
}

/* An acknowledgement past the data (the data was lost) is clamped to it. */
Test(spool, acked_is_clamped_to_the_data)
{
    struct spool *s = open_spool(0);
    struct buf out[2] = {BUF_INIT, BUF_INIT};
    struct spool_attempt *list;
    struct spool_item it;
    const char *id = job(11);
    char path[1024];
    size_t n;

    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    append_str(s, id, SPOOL_STDOUT, "lost");
    cr_assert_eq(drain_chunks(s, id, out, NULL), 1);
    spool_close(s);
    snprintf(path, sizeof(path), "%s/%s.1/stdout", dir, id);
    cr_assert_eq(truncate(path, 0), 0);

    s = open_spool(0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(list[0].stdout_len, 0);
    spool_attempts_free(list, n);
    cr_assert_eq(spool_next(s, &it), -ENOENT);
    cr_assert_eq(append_str(s, id, SPOOL_STDOUT, "x"), 0);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.offset, 0);
    cr_assert_str_eq(it.data, "x");
    spool_item_free(&it);
    buf_free(&out[0]);
    buf_free(&out[1]);
    spool_close(s);
}

Test(spool, discard_drops_the_attempt)
{
    struct spool *s = open_spool(0);
    struct spool_item it;
    const char *id = job(12);
    int64_t off = -1;

    cr_assert_eq(spool_begin(s, id, 4, NULL), 0);
    cr_assert_eq(spool_append(s, id, 4, SPOOL_STDOUT, "x", 1, NULL), 0);
    cr_assert_eq(spool_sync(s, id, 4), 0);
    cr_assert_eq(spool_append(s, id, 4, SPOOL_STDOUT, "y", 1, NULL), 0);
    cr_assert_eq(spool_discard(s, id, 4), 0);
    cr_assert(!path_exists(id, 4));
    cr_assert_eq(spool_next(s, &it), -ENOENT);
    cr_assert_eq(spool_append(s, id, 4, SPOOL_STDOUT, "z", 1, NULL), -ENOENT);
    cr_assert_eq(spool_ack_chunk(s, id, 4, SPOOL_STDOUT, 1), -ENOENT);
    cr_assert_eq(spool_discard(s, id, 4), -ENOENT);
    cr_assert_eq(spool_bytes(s), 0);

    /* The key is free again, and the new attempt starts empty. */
    cr_assert_eq(spool_begin(s, id, 4, NULL), 0);
    cr_assert_eq(spool_append(s, id, 4, SPOOL_STDOUT, "new", 3, &off), 0);
    cr_assert_eq(off, 0);
    spool_close(s);
}

Test(spool, invalid_arguments_rejected)
{
    static const char *const bad[] = {
        "../x",
        "",
        "..",
        "0190a1b2-c3d4-7e5f-8a9b-00000000000",
        "0190a1b2-c3d4-7e5f-8a9b-0000000000001",
        "0190a1b2-c3d4-7e5f-8a9b-00000000000/",
        "0190a1b2c3d47e5f8a9b000000000001",
        "../../../../etc/passwd",
        "0190a1b2-c3d4-7e5f-8a9b-00000000000g",
    };
    struct spool *s = open_spool(0);
    struct spool_result res = {0};
    char *big = malloc(SPOOL_RESULT_MAX + 2);
    const char *id = job(13);
    DIR *d;
    struct dirent *de;
    int entries = 0;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(spool_begin(s, bad[i], 1, NULL), -EINVAL, "%s", bad[i]);
        cr_assert_eq(spool_append(s, bad[i], 1, 1, "x", 1, NULL), -EINVAL, "%s", bad[i]);
        cr_assert_eq(spool_discard(s, bad[i], 1), -EINVAL, "%s", bad[i]);
    }
    cr_assert_eq(spool_begin(s, NULL, 1, NULL), -EINVAL);
    cr_assert_eq(spool_begin(s, id, 0, NULL), -EINVAL);
    cr_assert_eq(spool_begin(s, id, -5, NULL), -EINVAL);

    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    cr_assert_eq(spool_begin(s, id, 1, NULL), -EEXIST);
    cr_assert_eq(spool_append(s, id, 1, 0, "x", 1, NULL), -EINVAL);
    cr_assert_eq(spool_append(s, id, 1, 3, "x", 1, NULL), -EINVAL);
    cr_assert_eq(spool_append(s, id, 1, 1, NULL, 1, NULL), -EINVAL);
    cr_assert_eq(spool_ack_chunk(s, id, 1, 3, 0), -EINVAL);
    cr_assert_eq(spool_append(s, id, 2, 1, "x", 1, NULL), -ENOENT);

    /* Upper case names the same attempt. */
    {
        char upper[ID_STR_LEN];
        for (size_t i = 0; i < ID_STR_LEN; i++)
            upper[i] = (char)((id[i] >= 'a' && id[i] <= 'f') ? id[i] - 32 : id[i]);
        cr_assert_neq(strcmp(upper, id), 0);
        cr_assert_eq(spool_begin(s, upper, 1, NULL), -EEXIST);
        cr_assert_eq(spool_append(s, upper, 1, 1, "x", 1, NULL), 0);
    }

    cr_assert_not_null(big);
    memset(big, 'x', SPOOL_RESULT_MAX + 1);
    big[SPOOL_RESULT_MAX + 1] = '\0';
    res.json = big;
    cr_assert_eq(spool_finish(s, id, 1, &res), -EMSGSIZE);
    big[SPOOL_META_MAX + 1] = '\0';
    cr_assert_eq(spool_begin(s, job(14), 1, big), -EMSGSIZE);
    free(big);

    /* Nothing was created outside the spool directory. */
    d = opendir(root);
    cr_assert_not_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            entries++;
    closedir(d);
    cr_assert_eq(entries, 1);
    spool_close(s);
}

Test(spool, byte_cap_returns_enospc)
{
    struct spool *s = open_spool(64 * 1024);
    struct spool_attempt *list;
    char block[8192];
    const char *id = job(15);
    int64_t len_before;
    size_t n;
    int r = 0, ok = 0;

    memset(block, 'b', sizeof(block));
    cr_assert_eq(spool_begin(s, id, 1, NULL), 0);
    while (ok < 100) {
        r = spool_append(s, id, 1, SPOOL_STDOUT, block, sizeof(block), NULL);
        if (r < 0)
            break;
        ok++;
    }
    cr_assert_eq(r, -ENOSPC);
    cr_assert_geq(ok, 6);
    cr_assert_leq(spool_bytes(s), 64 * 1024);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    len_before = list[0].stdout_len;
    cr_assert_eq(len_before, ok * (int64_t)sizeof(block), "the refused append wrote nothing");
    spool_attempts_free(list, n);

    /* Space comes back when an attempt goes. */
    cr_assert_eq(spool_discard(s, id, 1), 0);
    cr_assert_eq(spool_begin(s, job(16), 1, NULL), 0);
    cr_assert_eq(spool_append(s, job(16), 1, SPOOL_STDOUT, block, sizeof(block), NULL), 0);
    spool_close(s);
}

Test(spool, second_open_is_busy)
{
    struct spool *s = open_spool(0), *t = NULL;

    cr_assert_eq(spool_open(dir, 0, &t), -EBUSY);
    cr_assert_null(t);
    spool_close(s);
    t = open_spool(0);
    spool_close(t);
}

/* A job that keeps writing does not hold back another job's output. */
Test(spool, busy_attempt_does_not_starve_others)
{
    struct spool *s = open_spool(0);
    struct spool_item it;
    char block[SPOOL_CHUNK_MAX];
    const char *busy = job(17), *quiet = job(18);
    bool seen_quiet = false;

    memset(block, 'q', sizeof(block));
    cr_assert_eq(spool_begin(s, busy, 1, NULL), 0);
    cr_assert_eq(spool_begin(s, quiet, 1, NULL), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(spool_append(s, busy, 1, SPOOL_STDOUT, block, sizeof(block), NULL), 0);
    append_str(s, quiet, SPOOL_STDOUT, "hi");
    for (int i = 0; i < 3 && !seen_quiet; i++) {
        cr_assert_eq(spool_next(s, &it), 0);
        seen_quiet = strcmp(it.job_id, quiet) == 0;
        spool_item_free(&it);
    }
    cr_assert(seen_quiet, "the quiet job's chunk came within the first chunks");
    spool_close(s);
}

#define WRITERS    4
#define WRITES     300
#define WRITE_MAX  3000
#define DRAIN_SECS 60

struct writer {
    struct spool *s;
    unsigned n;
    int64_t total[2];
    int err;
};

static unsigned lcg(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char *block = malloc(WRITE_MAX);
    struct spool_result res = {.exit_code = (int)w->n, .json = "{}"};
    unsigned seed = w->n + 1;
    const char *id = job(w->n);
    int r;

    if (!block) {
        w->err = -ENOMEM;
        return NULL;
    }
    r = spool_begin(w->s, id, 1, NULL);
    for (int i = 0; i < WRITES && r == 0; i++) {
        int stream = 1 + (int)(lcg(&seed) % 2);
        size_t len = 1 + lcg(&seed) % WRITE_MAX;
        int64_t off;

        fill(block, len, w->n, stream, w->total[stream - 1]);
        r = spool_append(w->s, id, 1, stream, block, len, &off);
        if (r == 0 && off != w->total[stream - 1])
            r = -EPROTO;
        w->total[stream - 1] += (int64_t)len;
        if (i % 50 == 0)
            sched_yield();
    }
    if (r == 0)
        r = spool_finish(w->s, id, 1, &res);
    w->err = r;
    free(block);
    return NULL;
}

Test(spool, concurrent_writers_and_drainer)
{
    struct spool *s = open_spool(0);
    struct writer w[WRITERS];
    pthread_t th[WRITERS];
    int64_t seen[WRITERS][2] = {{0}};
    int results = 0;
    uint64_t deadline = clock_mono_ns() + DRAIN_SECS * 1000000000ull;

    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.s = s, .n = 100 + i};
        cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    /* This thread is the transport. */
    while (results < WRITERS) {
        struct spool_item it;
        unsigned k;
        int r = spool_next(s, &it);

        cr_assert_lt(clock_mono_ns(), deadline, "drain timed out");
        if (r == -ENOENT) {
            usleep(200);
            continue;
        }
        cr_assert_eq(r, 0);
        k = (unsigned)strtoul(it.job_id + 24, NULL, 16) - 100;
        cr_assert_lt(k, WRITERS);
        if (it.kind == SPOOL_RESULT) {
            cr_assert_eq(it.exit_code, (int)(100 + k));
            cr_assert_eq(seen[k][0], w[k].total[0], "all stdout before the result");
            cr_assert_eq(seen[k][1], w[k].total[1], "all stderr before the result");
            cr_assert_eq(spool_ack_result(s, it.job_id, it.epoch), 0);
            results++;
        } else {
            cr_assert_eq(it.offset, seen[k][it.stream - 1], "in order, no gap, no repeat");
            cr_assert(matches(it.data, it.len, 100 + k, it.stream, it.offset));
            seen[k][it.stream - 1] += (int64_t)it.len;
            cr_assert_eq(
                spool_ack_chunk(s, it.job_id, it.epoch, it.stream, it.offset + (int64_t)it.len), 0);
        }
        spool_item_free(&it);
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_eq(w[i].err, 0);
        cr_assert_eq(seen[i][0] + seen[i][1], w[i].total[0] + w[i].total[1]);
    }
    cr_assert_eq(spool_bytes(s), 0);
    spool_close(s);
}

Test(spool, proc_record_survives_a_restart_until_the_attempt_finishes)
{
    struct spool *s = open_spool(0);
    struct spool_attempt *list = NULL;
    size_t n = 0;
    const char *id = job(40);

    cr_assert_eq(spool_begin(s, id, 2, "{}"), 0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_null(list[0].proc);
    spool_attempts_free(list, n);
    cr_assert_eq(spool_set_proc(s, id, 2, "{\"pgid\":1}"), 0);
    cr_assert_eq(spool_set_proc(s, id, 2, "{\"pgid\":42}"), 0); /* replaces */
    cr_assert_eq(spool_set_proc(s, id, 3, "{}"), -ENOENT);
    spool_close(s);

    /* As after kill -9: the next process reads the last record. */
    s = open_spool(0);
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert(!list[0].finished);
    cr_assert_str_eq(list[0].proc, "{\"pgid\":42}");
    spool_attempts_free(list, n);
    struct spool_result res = {.exit_code = 0};
    cr_assert_eq(spool_finish(s, id, 2, &res), 0);
    cr_assert_eq(spool_set_proc(s, id, 2, "{}"), -EALREADY);
    spool_close(s);
}

/* The path of an attempt's file. */
static void attempt_file(char *path, size_t len, const char *id, int64_t epoch, const char *name)
{
    snprintf(path, len, "%s/%s.%lld/%s", dir, id, (long long)epoch, name);
}

/* kill -9 of the agent at each step of a job's life: what spool_begin(), spool_set_proc()
 * and spool_finish() returned is there for the next process, whole, and a job killed
 * before its finish reads as unfinished. */
Test(spool, kill_at_each_step_keeps_what_returned)
{
    const char *ids[3] = {job(50), job(51), job(52)};

    for (int step = 0; step < 3; step++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            struct spool *s;
            struct spool_result res = {.exit_code = 3, .flags = 5, .json = "{\"ok\":true}"};

            if (spool_open(dir, 0, &s) < 0 || spool_begin(s, ids[step], 1, "{\"m\":1}") < 0)
                _exit(1);
            if (step >= 1 && spool_set_proc(s, ids[step], 1, "{\"pgid\":7}") < 0)
                _exit(1);
            if (step >= 2 && spool_finish(s, ids[step], 1, &res) < 0)
                _exit(1);
            raise(SIGKILL);
            _exit(1);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "step %d", step);
    }

    struct spool *s = open_spool(0);
    struct spool_attempt *list;
    size_t n;
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        int step = strcmp(list[i].job_id, ids[0]) == 0   ? 0
                   : strcmp(list[i].job_id, ids[1]) == 0 ? 1
                                                         : 2;
        cr_assert_str_eq(list[i].meta, "{\"m\":1}");
        cr_assert_eq(list[i].finished, step == 2, "step %d", step);
        if (step == 0)
            cr_assert_null(list[i].proc);
        else
            cr_assert_str_eq(list[i].proc, "{\"pgid\":7}");
    }
    spool_attempts_free(list, n);

    struct spool_item it;
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_str_eq(it.job_id, ids[2]);
    cr_assert_eq(it.exit_code, 3);
    cr_assert_eq(it.flags, 5);
    cr_assert_str_eq(it.data, "{\"ok\":true}");
    spool_item_free(&it);
    cr_assert_eq(spool_next(s, &it), -ENOENT, "the unfinished ones have no result");
    /* The unfinished ones can still be finished (the daemon reports them as restarted). */
    struct spool_result res = {.exit_code = -1};
    cr_assert_eq(spool_finish(s, ids[0], 1, &res), 0);
    cr_assert_eq(spool_finish(s, ids[2], 1, &res), -EALREADY);
    spool_close(s);
}

/* A result cut short (the agent or the power died inside spool_finish()) fails its CRC:
 * the attempt reads as unfinished, and finishing it again leaves exactly the new result
 * even when it is shorter than what was there. */
Test(spool, torn_result_reads_unfinished_and_is_replaced)
{
    struct spool *s = open_spool(0);
    char path[1024], big[2000];
    const char *id = job(53);
    struct stat sb;

    memset(big, 'x', sizeof(big));
    memcpy(big, "\"", 1);
    big[sizeof(big) - 2] = '"';
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(spool_begin(s, id, 1, "{}"), 0);
    struct spool_result res = {.exit_code = 0, .json = big};
    cr_assert_eq(spool_finish(s, id, 1, &res), 0);
    spool_close(s);
    attempt_file(path, sizeof(path), id, 1, "result");
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size / 2), 0);

    s = open_spool(0);
    struct spool_attempt *list;
    size_t n;
    cr_assert_eq(spool_list(s, &list, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert(!list[0].finished);
    spool_attempts_free(list, n);
    struct spool_item it;
    cr_assert_eq(spool_next(s, &it), -ENOENT);
    struct spool_result again = {.exit_code = -1, .flags = 2, .json = "{\"n\":2}"};
    cr_assert_eq(spool_finish(s, id, 1, &again), 0);
    spool_close(s);

    s = open_spool(0);
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.kind, SPOOL_RESULT);
    cr_assert_eq(it.exit_code, -1);
    cr_assert_eq(it.flags, 2);
    cr_assert_str_eq(it.data, "{\"n\":2}");
    spool_item_free(&it);
    spool_close(s);
}

/* An attempt begun by an older agent has no result file until its finish, which then makes
 * one. */
Test(spool, attempt_without_result_file_is_finished_through_a_new_file)
{
    struct spool *s = open_spool(0);
    char path[1024];
    const char *id = job(54);

    cr_assert_eq(spool_begin(s, id, 4, "{}"), 0);
    spool_close(s);
    attempt_file(path, sizeof(path), id, 4, "result");
    cr_assert_eq(unlink(path), 0);

    s = open_spool(0);
    struct spool_result res = {.exit_code = 9, .json = "[1]"};
    cr_assert_eq(spool_finish(s, id, 4, &res), 0);
    spool_close(s);
    s = open_spool(0);
    struct spool_item it;
    cr_assert_eq(spool_next(s, &it), 0);
    cr_assert_eq(it.exit_code, 9);
    cr_assert_str_eq(it.data, "[1]");
    spool_item_free(&it);
    spool_close(s);
}
