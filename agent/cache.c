/* cache.c: see cache.h. */
#include "agent/cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/compat.h"

struct entry {
    char sha[CRYPTO_SHA256_HEX_LEN];
    int64_t size;
    int64_t used; /* a logical clock: larger = used more recently */
};

struct cache {
    char *dir;
    int64_t max_bytes;
    pthread_mutex_t lock;
    struct entry *entries;
    size_t n;
    int64_t bytes;
    int64_t clock;
    uint64_t gen;
    int holds;
};

static bool sha_valid(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Call fn for every "<sha>.pkg" in dir, and remove leftovers ("*.part") when clean. */
static void scan(const char *dir, bool clean,
                 void (*fn)(void *arg, const char *sha, int64_t size, int64_t mtime), void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (clean && strstr(e->d_name, ".part")) {
            unlinkat(dirfd(d), e->d_name, 0);
            continue;
        }
        if (!dot || strcmp(dot, ".pkg") != 0 || dot - e->d_name != 64)
            continue;
        char sha[CRYPTO_SHA256_HEX_LEN];
        memcpy(sha, e->d_name, 64);
        sha[64] = '\0';
        struct stat sb;
        if (!sha_valid(sha) || fstatat(dirfd(d), e->d_name, &sb, 0) < 0 || !S_ISREG(sb.st_mode))
            continue;
        fn(arg, sha, (int64_t)sb.st_size, (int64_t)sb.st_mtime);
    }
    closedir(d);
}

static void add_found(void *arg, const char *sha, int64_t size, int64_t mtime)
{
    struct cache *c = arg;
    if (c->n >= CACHE_MAX_ENTRIES)
        return;
    struct entry *e = &c->entries[c->n++];
    memcpy(e->sha, sha, sizeof(e->sha));
    e->size = size;
    e->used = mtime; /* before any use in this process: the file's age orders them */
    c->bytes += size;
    if (mtime > c->clock)
        c->clock = mtime;
}

int cache_open(const char *dir, int64_t max_bytes, struct cache **ret)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->dir = strdup(dir);
    c->entries = calloc(CACHE_MAX_ENTRIES, sizeof(*c->entries));
    if (!c->dir || !c->entries) {
        free(c->dir);
        free(c->entries);
        free(c);
        return -ENOMEM;
    }
    c->max_bytes = max_bytes;
    c->gen = 1;
    pthread_mutex_init(&c->lock, NULL);
    scan(dir, true, add_found, c);
    *ret = c;
    return 0;
}

void cache_close(struct cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->entries);
    free(c->dir);
    free(c);
}

static struct entry *find_locked(struct cache *c, const char *sha)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i].sha, sha) == 0)
            return &c->entries[i];
    return NULL;
}

int cache_lookup(struct cache *c, const char *sha, char *path, size_t len)
{
    if (!sha_valid(sha))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    struct entry *e = find_locked(c, sha);
    if (e)
        e->used = ++c->clock;
    pthread_mutex_unlock(&c->lock);
    if (!e)
        return -ENOENT;
    snprintf(path, len, "%s/%s.pkg", c->dir, sha);
    return 0;
}

/* Remove the least recently used archives (not keep) until the cache fits its bytes and
 * has room for room more entries. Lock held. */
static void trim_locked(struct cache *c, const char *keep, size_t room)
{
    while ((c->bytes > c->max_bytes || c->n + room > CACHE_MAX_ENTRIES) && c->holds == 0) {
        struct entry *old = NULL;
        for (size_t i = 0; i < c->n; i++)
            if (strcmp(c->entries[i].sha, keep) != 0 && (!old || c->entries[i].used < old->used))
                old = &c->entries[i];
        if (!old)
            return;
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s.pkg", c->dir, old->sha);
        unlink(path);
        c->bytes -= old->size;
        *old = c->entries[--c->n];
        c->gen++;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cache_store(struct cache *c, const char *sha, const void *data, size_t len)
{
    if (!sha_valid(sha))
        return -EINVAL;
    char got[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(data, len, got);
    if (strcmp(got, sha) != 0)
        return -EBADMSG;
    char tmp[4200], path[4200];
    uint32_t rnd = 0;
    crypto_random(&rnd, sizeof(rnd));
    snprintf(tmp, sizeof(tmp), "%s/%s.%08x.part", c->dir, sha, rnd);
    snprintf(path, sizeof(path), "%s/%s.pkg", c->dir, sha);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = write_all(fd, data, len);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    pthread_mutex_lock(&c->lock);
    struct entry *e = find_locked(c, sha);
    if (!e) {
        trim_locked(c, sha, 1);
        if (c->n >= CACHE_MAX_ENTRIES) { /* full of archives in use */
            pthread_mutex_unlock(&c->lock);
            unlink(path);
            return -ENOSPC;
        }
        e = &c->entries[c->n++];
        memcpy(e->sha, sha, sizeof(e->sha));
        e->size = (int64_t)len;
        c->bytes += (int64_t)len;
        c->gen++;
    }
    e->used = ++c->clock;
    trim_locked(c, sha, 0);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void partial_path(struct cache *c, const char *sha, char *path, size_t len)
{
    snprintf(path, len, "%s/%s.dl", c->dir, sha);
}

int64_t cache_partial_size(struct cache *c, const char *sha)
{
    if (!sha_valid(sha))
        return 0;
    char path[4200];
    partial_path(c, sha, path, sizeof(path));
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : 0;
}

int cache_partial_append(struct cache *c, const char *sha, const void *data, size_t len)
{
    if (!sha_valid(sha))
        return -EINVAL;
    char path[4200];
    partial_path(c, sha, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = lseek(fd, 0, SEEK_END) < 0 ? -errno : write_all(fd, data, len);
    close(fd);
    return r;
}

void cache_partial_drop(struct cache *c, const char *sha)
{
    if (!sha_valid(sha))
        return;
    char path[4200];
    partial_path(c, sha, path, sizeof(path));
    unlink(path);
}

int cache_partial_finish(struct cache *c, const char *sha)
{
    if (!sha_valid(sha))
        return -EINVAL;
    char path[4200];
    partial_path(c, sha, path, sizeof(path));
    int64_t size = cache_partial_size(c, sha);
    char *data = malloc(size > 0 ? (size_t)size : 1);
    int r = data ? 0 : -ENOMEM;
    int fd = r == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (r == 0 && fd < 0)
        r = -errno;
    for (int64_t got = 0; r == 0 && got < size;) {
        ssize_t n = read(fd, data + got, (size_t)(size - got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            r = n < 0 ? -errno : -EIO;
        else
            got += n;
    }
    if (fd >= 0)
        close(fd);
    if (r == 0)
        r = cache_store(c, sha, data, (size_t)size);
    free(data);
    unlink(path);
    return r;
}

void cache_hold(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    c->holds++;
    pthread_mutex_unlock(&c->lock);
}

void cache_release(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    c->holds--;
    pthread_mutex_unlock(&c->lock);
}

json_t *cache_list(struct cache *c, uint64_t *gen)
{
    json_t *a = json_array();
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; a && i < c->n; i++)
        json_array_append_new(a, json_string(c->entries[i].sha));
    *gen = c->gen;
    pthread_mutex_unlock(&c->lock);
    return a;
}

uint64_t cache_generation(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t g = c->gen;
    pthread_mutex_unlock(&c->lock);
    return g;
}

struct tally {
    int64_t bytes;
    int count;
};

static void count_found(void *arg, const char *sha, int64_t size, int64_t mtime)
{
    (void)sha;
    (void)mtime;
    struct tally *t = arg;
    t->bytes += size;
    t->count++;
}

int64_t cache_dir_bytes(const char *dir, int *count)
{
    struct tally t = {0, 0};
    scan(dir, false, count_found, &t);
    if (count)
        *count = t.count;
    return t.bytes;
}
