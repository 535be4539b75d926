/* Tests for agent/spool.c, state.c and cache.c on Windows, through common/compat-win.c:
 * what they keep survives closing and reopening, as on Linux. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cache.h"
#include "agent/spool.h"
#include "agent/state.h"
#include "common/crypto.h"
#include "tests/win/wtest-fs.h"

static char root[512];

static const char *job(unsigned n)
{
    static char ids[4][ID_STR_LEN];
    char *s = ids[n % 4];

    snprintf(s, ID_STR_LEN, "0190a1b2-c3d4-7e5f-8a9b-%012x", n);
    return s;
}

static struct spool *open_spool(const char *dir)
{
    struct spool *s = NULL;
    int r = spool_open(dir, 0, &s);

    WT_ASSERT(r == 0 && s, "spool_open %s: %d", dir, r);
    return s;
}

WTEST(spool, survives_a_reopen)
{
    struct spool_result res = {.exit_code = 3, .json = "{\"n\":1}"};
    struct spool_attempt *list = NULL;
    struct spool_item it;
    char dir[600];
    struct spool *s;
    int64_t off = -1;
    size_t n = 0;
    int r;

    wt_tmpdir(root, sizeof(root), "spool");
    snprintf(dir, sizeof(dir), "%s/spool", root);
    s = open_spool(dir);
    WT_ASSERT(spool_begin(s, job(1), 1, "{\"job\":1}") == 0, "begin");
    WT_ASSERT(spool_begin(s, job(2), 2, "{\"job\":2}") == 0, "begin");
    WT_ASSERT(spool_append(s, job(1), 1, SPOOL_STDOUT, "acked ", 6, &off) == 0 && off == 0, "a");
    WT_ASSERT(spool_next(s, &it) == 0 && it.len == 6, "next");
    spool_item_free(&it);
    WT_ASSERT(spool_ack_chunk(s, job(1), 1, SPOOL_STDOUT, 6) == 0, "ack");
    WT_ASSERT(spool_append(s, job(1), 1, SPOOL_STDOUT, "pending\r\n", 9, &off) == 0 && off == 6,
              "append");
    WT_ASSERT(spool_append(s, job(2), 2, SPOOL_STDERR, "e", 1, NULL) == 0, "append");
    WT_ASSERT(spool_finish(s, job(2), 2, &res) == 0, "finish");
    /* A second agent on the same spool is refused while the first holds it. */
    {
        struct spool *t = NULL;

        r = spool_open(dir, 0, &t);
        WT_ASSERT(r == -EBUSY && !t, "second open: %d", r);
    }
    spool_close(s);

    s = open_spool(dir);
    WT_ASSERT(spool_list(s, &list, &n) == 0 && n == 2, "list: %zu", n);
    WT_ASSERT(!strcmp(list[0].job_id, job(1)) && !list[0].finished && list[0].stdout_len == 15,
              "first: %s %d %lld", list[0].job_id, list[0].finished, (long long)list[0].stdout_len);
    WT_ASSERT(!strcmp(list[0].meta, "{\"job\":1}"), "meta %s", list[0].meta);
    WT_ASSERT(list[1].finished && list[1].stderr_len == 1, "second");
    spool_attempts_free(list, n);

    /* What was not acknowledged comes again, byte for byte (no text-mode translation). */
    WT_ASSERT(spool_next(s, &it) == 0, "next");
    WT_ASSERT(!strcmp(it.job_id, job(1)) && it.offset == 6 && it.len == 9 &&
                  !memcmp(it.data, "pending\r\n", 9),
              "chunk %s %lld %zu", it.job_id, (long long)it.offset, it.len);
    WT_ASSERT(spool_ack_chunk(s, job(1), 1, SPOOL_STDOUT, 15) == 0, "ack");
    spool_item_free(&it);
    WT_ASSERT(spool_next(s, &it) == 0 && it.stream == SPOOL_STDERR, "stderr");
    WT_ASSERT(spool_ack_chunk(s, job(2), 2, SPOOL_STDERR, 1) == 0, "ack");
    spool_item_free(&it);
    WT_ASSERT(spool_next(s, &it) == 0 && it.kind == SPOOL_RESULT && it.exit_code == 3 &&
                  !strcmp(it.data, "{\"n\":1}"),
              "result");
    spool_item_free(&it);
    WT_ASSERT(spool_ack_result(s, job(2), 2) == 0, "ack result");
    /* The unfinished attempt takes appends where it left off. */
    WT_ASSERT(spool_append(s, job(1), 1, SPOOL_STDOUT, "more", 4, &off) == 0 && off == 15, "more");
    /* A discarded attempt's key is free again. */
    WT_ASSERT(spool_discard(s, job(1), 1) == 0, "discard");
    WT_ASSERT(spool_begin(s, job(1), 1, NULL) == 0, "begin again");
    WT_ASSERT(spool_append(s, job(1), 1, SPOOL_STDOUT, "x", 1, &off) == 0 && off == 0, "fresh");
    spool_close(s);

    s = open_spool(dir);
    WT_ASSERT(spool_list(s, &list, &n) == 0 && n == 1 && list[0].stdout_len == 1, "n %zu", n);
    spool_attempts_free(list, n);
    spool_close(s);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(state, written_and_read_back)
{
    struct agent_state st = {
        .server_url = "https://127.0.0.1:8443",
        .ca_file = "C:/ProgramData/Orch/Agent/ca.pem",
        .agent_id = "0190a1b2-c3d4-7e5f-8a9b-000000000001",
        .tenant_id = "0190a1b2-c3d4-7e5f-8a9b-000000000002",
        .name = "win-host",
        .credential = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        .slots = 4,
    };
    struct agent_state back;
    char dir[600], err[256] = "";
    int r;

    wt_tmpdir(root, sizeof(root), "state");
    snprintf(dir, sizeof(dir), "%s/state", root);
    r = agent_state_load(dir, &back, err, sizeof(err));
    WT_ASSERT(r == -ENOENT, "not enrolled yet: %d", r);
    WT_ASSERT(agent_state_probe(dir) == 0, "probe");
    WT_ASSERT(agent_state_save(dir, &st) == 0, "save");
    st.name = "renamed";
    WT_ASSERT(agent_state_save(dir, &st) == 0, "save over the old file");
    r = agent_state_load(dir, &back, err, sizeof(err));
    WT_ASSERT(r == 0, "load: %d %s", r, err);
    WT_ASSERT(!strcmp(back.name, "renamed") && !strcmp(back.credential, st.credential) &&
                  back.slots == 4 && !strcmp(back.ca_file, st.ca_file),
              "read back %s", back.name);
    agent_state_free(&back);
    WT_ASSERT(agent_state_remove(dir) == 0, "remove");
    r = agent_state_load(dir, &back, err, sizeof(err));
    WT_ASSERT(r == -ENOENT, "removed: %d", r);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

static char *blob(char fill, size_t n, char sha[CRYPTO_SHA256_HEX_LEN])
{
    char *b = malloc(n);

    WT_ASSERT(b, "malloc");
    memset(b, fill, n);
    crypto_sha256_hex(b, n, sha);
    return b;
}

WTEST(cache, store_lookup_trim)
{
    char dir[600], path[1024], sa[CRYPTO_SHA256_HEX_LEN], sb[CRYPTO_SHA256_HEX_LEN];
    char sc[CRYPTO_SHA256_HEX_LEN], part[1024];
    char *a = blob('a', 600, sa), *b = blob('b', 600, sb), *c = blob('c', 600, sc);
    struct cache *cache = NULL;
    struct stat st;
    int count = 0;
    FILE *f;

    wt_tmpdir(root, sizeof(root), "cache");
    snprintf(dir, sizeof(dir), "%s/cache", root);
    WT_ASSERT(cache_open(dir, 1500, &cache) == 0, "open");
    WT_ASSERT(cache_store(cache, sa, a, 600) == 0, "store a");
    WT_ASSERT(cache_store(cache, sb, b, 600) == 0, "store b");
    WT_ASSERT(cache_store(cache, sa, b, 600) == -EBADMSG, "wrong digest");
    WT_ASSERT(cache_lookup(cache, sa, path, sizeof(path)) == 0, "lookup a");
    WT_ASSERT(compat_stat(path, &st) == 0 && st.st_size == 600, "a on disk: %s", path);
    /* Over the cap: the least recently used (b) goes. */
    WT_ASSERT(cache_store(cache, sc, c, 600) == 0, "store c");
    WT_ASSERT(cache_lookup(cache, sb, path, sizeof(path)) == -ENOENT, "b trimmed");
    WT_ASSERT(cache_lookup(cache, sa, path, sizeof(path)) == 0, "a kept");
    WT_ASSERT(cache_lookup(cache, sc, path, sizeof(path)) == 0, "c kept");
    cache_close(cache);

    /* Reopened: the archives are found again; a torn store's leftover is removed. */
    snprintf(part, sizeof(part), "%s/%s.1234abcd.part", dir, sb);
    f = fopen(part, "w");
    WT_ASSERT(f, "fopen: errno %d", errno);
    fclose(f);
    WT_ASSERT(cache_dir_bytes(dir, &count) == 1200 && count == 2, "dir bytes, %d", count);
    WT_ASSERT(cache_open(dir, 1500, &cache) == 0, "reopen");
    WT_ASSERT(cache_lookup(cache, sa, path, sizeof(path)) == 0, "a after reopen");
    WT_ASSERT(cache_lookup(cache, sc, path, sizeof(path)) == 0, "c after reopen");
    WT_ASSERT(compat_stat(part, &st) < 0 && errno == ENOENT, "the leftover survived");
    cache_close(cache);
    free(a);
    free(b);
    free(c);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
