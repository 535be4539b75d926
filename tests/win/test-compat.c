/* Tests for common/compat-win.c: the POSIX file calls spool.c, cache.c and state.c use,
 * as compat.h promises them on Windows. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/win/wtest-fs.h"

static char root[512];

static void put_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    WT_ASSERT(fd >= 0, "open %s: errno %d", path, errno);
    WT_ASSERT(write(fd, text, (unsigned)strlen(text)) == (int)strlen(text), "write");
    WT_ASSERT(close(fd) == 0, "close");
}

static void file_is(const char *path, const char *text)
{
    char buf[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int n;

    WT_ASSERT(fd >= 0, "open %s: errno %d", path, errno);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    WT_ASSERT(n == (int)strlen(text), "%s holds %d bytes, not %zu", path, n, strlen(text));
    buf[n] = '\0';
    WT_ASSERT(!strcmp(buf, text), "%s holds '%s'", path, buf);
}

WTEST(compat, binary_pread_pwrite_and_fstat)
{
    char path[600], buf[16];
    struct stat sb;
    int fd;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(path, sizeof(path), "%s/data", root);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    WT_ASSERT(fd >= 0, "errno %d", errno);
    WT_ASSERT(pwrite(fd, "a\nb\r\n", 5, 0) == 5, "pwrite");
    WT_ASSERT(pwrite(fd, "XY", 2, 10) == 2, "pwrite past the end");
    WT_ASSERT(fsync(fd) == 0 && fdatasync(fd) == 0, "fsync: errno %d", errno);
    WT_ASSERT(fstat(fd, &sb) == 0, "fstat");
    WT_ASSERT(sb.st_size == 12, "size %lld: no text-mode translation", (long long)sb.st_size);
    WT_ASSERT(S_ISREG(sb.st_mode) && (sb.st_mode & 077) == 0, "mode %o", (unsigned)sb.st_mode);
    WT_ASSERT(pread(fd, buf, 5, 0) == 5 && !memcmp(buf, "a\nb\r\n", 5), "pread");
    WT_ASSERT(pread(fd, buf, 16, 10) == 2 && !memcmp(buf, "XY", 2), "short pread at the end");
    WT_ASSERT(pread(fd, buf, 16, 12) == 0, "pread at end of file");
    WT_ASSERT(ftruncate(fd, 3) == 0, "ftruncate");
    WT_ASSERT(fstat(fd, &sb) == 0 && sb.st_size == 3, "size after ftruncate");
    close(fd);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    WT_ASSERT(fd < 0 && errno == EEXIST, "O_EXCL on an existing file: fd %d errno %d", fd, errno);
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    WT_ASSERT(fd < 0 && errno == ENOTDIR, "O_DIRECTORY on a file: errno %d", errno);
    snprintf(path, sizeof(path), "%s/missing", root);
    WT_ASSERT(open(path, O_RDONLY | O_CLOEXEC) < 0 && errno == ENOENT, "errno %d", errno);
    WT_ASSERT(fstatat(AT_FDCWD, path, &sb, 0) < 0 && errno == ENOENT, "errno %d", errno);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, at_calls_follow_a_renamed_directory)
{
    char a[600], b[600];
    struct stat sb;
    int dfd, fd;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(a, sizeof(a), "%s/a", root);
    snprintf(b, sizeof(b), "%s/b", root);
    WT_ASSERT(mkdir(a, 0700) == 0, "mkdir");
    WT_ASSERT(mkdir(a, 0700) < 0 && errno == EEXIST, "mkdir twice: errno %d", errno);
    dfd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    WT_ASSERT(dfd >= 0, "open dir: errno %d", errno);
    WT_ASSERT(fsync(dfd) == 0, "fsync on a directory: errno %d", errno);
    WT_ASSERT(mkdirat(dfd, "sub", 0700) == 0, "mkdirat: errno %d", errno);
    fd = openat(dfd, "f", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    WT_ASSERT(fd >= 0, "openat: errno %d", errno);
    close(fd);
    /* Like a POSIX fd, the directory descriptor follows the directory. */
    WT_ASSERT(rename(a, b) == 0, "rename dir: errno %d", errno);
    WT_ASSERT(fstatat(dfd, "f", &sb, AT_SYMLINK_NOFOLLOW) == 0, "fstatat: errno %d", errno);
    WT_ASSERT(fstatat(dfd, "sub", &sb, 0) == 0 && S_ISDIR(sb.st_mode), "sub is a directory");
    WT_ASSERT(renameat(dfd, "f", dfd, "g") == 0, "renameat: errno %d", errno);
    snprintf(a, sizeof(a), "%s/b/g", root);
    WT_ASSERT(compat_stat(a, &sb) == 0, "g is in the renamed directory: errno %d", errno);
    WT_ASSERT(unlinkat(dfd, "g", 0) == 0, "unlinkat: errno %d", errno);
    WT_ASSERT(unlinkat(dfd, "sub", AT_REMOVEDIR) == 0, "rmdir: errno %d", errno);
    WT_ASSERT(unlinkat(dfd, "sub", AT_REMOVEDIR) < 0 && errno == ENOENT, "errno %d", errno);
    close(dfd);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, rename_replaces_and_open_files_can_go)
{
    char a[600], b[600];
    int fd;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(a, sizeof(a), "%s/new", root);
    snprintf(b, sizeof(b), "%s/old", root);
    put_file(a, "new text");
    put_file(b, "old");
    /* The source may be open (shared for delete); the target may not, on Windows. */
    fd = open(a, O_RDONLY | O_CLOEXEC);
    WT_ASSERT(fd >= 0, "errno %d", errno);
    WT_ASSERT(rename(a, b) == 0, "rename over an existing file: errno %d", errno);
    close(fd);
    file_is(b, "new text");
    WT_ASSERT(access(a, F_OK) != 0, "the old name is gone");
    fd = open(b, O_RDONLY | O_CLOEXEC);
    WT_ASSERT(fd >= 0, "errno %d", errno);
    WT_ASSERT(unlink(b) == 0, "unlink of an open file: errno %d", errno);
    close(fd);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, flock_excludes_a_second_holder)
{
    char path[600];
    int a, b;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(path, sizeof(path), "%s/lock", root);
    a = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    b = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    WT_ASSERT(a >= 0 && b >= 0, "errno %d", errno);
    WT_ASSERT(flock(a, LOCK_EX | LOCK_NB) == 0, "first lock: errno %d", errno);
    WT_ASSERT(flock(b, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK, "second: errno %d", errno);
    close(a);
    WT_ASSERT(flock(b, LOCK_EX | LOCK_NB) == 0, "after the holder closed: errno %d", errno);
    close(b);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, readdir_lists_utf8_names)
{
    static const char name[] = "caf\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac";
    char path[600];
    bool seen[3] = {false, false, false};
    struct dirent *e;
    DIR *d;
    int dfd;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(path, sizeof(path), "%s/%s", root, name);
    put_file(path, "x");
    snprintf(path, sizeof(path), "%s/plain", root);
    put_file(path, "y");
    dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    WT_ASSERT(dfd >= 0, "errno %d", errno);
    d = fdopendir(dfd);
    WT_ASSERT(d && dirfd(d) == dfd, "fdopendir: errno %d", errno);
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, name))
            seen[0] = true;
        else if (!strcmp(e->d_name, "plain"))
            seen[1] = true;
        else if (!strcmp(e->d_name, "."))
            seen[2] = true;
    }
    WT_ASSERT(fstatat(dirfd(d), name, &(struct stat){0}, 0) == 0, "fstatat: errno %d", errno);
    closedir(d);
    WT_ASSERT(seen[0] && seen[1] && seen[2], "listed: %d %d %d", seen[0], seen[1], seen[2]);
    snprintf(path, sizeof(path), "%s/%s", root, name);
    file_is(path, "x");
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, fopen_e_and_getline)
{
    char path[600], *line = NULL;
    size_t cap = 0;
    FILE *f;

    wt_tmpdir(root, sizeof(root), "compat");
    snprintf(path, sizeof(path), "%s/conf", root);
    put_file(path, "a = 1\r\nlast line");
    f = fopen(path, "re");
    WT_ASSERT(f, "fopen re: errno %d", errno);
    WT_ASSERT(getline(&line, &cap, f) == 7 && !strcmp(line, "a = 1\r\n"), "binary: '%s'", line);
    WT_ASSERT(getline(&line, &cap, f) == 9 && !strcmp(line, "last line"), "'%s'", line);
    WT_ASSERT(getline(&line, &cap, f) == -1, "end of file");
    fclose(f);
    free(line);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(compat, timegm_and_hostname)
{
    struct tm tm = {.tm_year = 124, .tm_mon = 1, .tm_mday = 29, .tm_hour = 12};
    char host[256];

    WT_ASSERT(timegm(&tm) == 1709208000, "timegm: %lld", (long long)timegm(&tm));
    WT_ASSERT(gethostname(host, sizeof(host)) == 0 && host[0], "gethostname: errno %d", errno);
    WT_ASSERT(gethostname(host, 1) < 0 && errno == ENAMETOOLONG, "too small: errno %d", errno);
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
