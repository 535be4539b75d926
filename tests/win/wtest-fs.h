/* wtest-fs.h: a private temporary directory per test for the Windows unit tests, removed
 * with everything in it afterwards. Include after wtest.h; uses common/compat.h's calls. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include "common/compat.h"

/* Remove path and everything below it (no reparse points are followed: the tests make
 * none). Returns 0 or -errno. */
static inline int wt_rm_rf(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;

    if (compat_stat(path, &sb) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(sb.st_mode))
        return unlink(path) < 0 ? -errno : 0;
    d = opendir(path);
    if (!d)
        return -errno;
    while ((e = readdir(d))) {
        char child[2048];

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        wt_rm_rf(child);
    }
    closedir(d);
    return rmdir(path) < 0 ? -errno : 0;
}

/* Make a new directory under %TEMP% and write its path (UTF-8, '/'-separated after the
 * drive) into out. */
static inline void wt_tmpdir(char *out, size_t len, const char *tag)
{
    static unsigned seq;
    wchar_t wtmp[MAX_PATH + 1];
    char *tmp;
    DWORD n = GetTempPathW(MAX_PATH + 1, wtmp);

    WT_ASSERT(n > 0 && n <= MAX_PATH, "GetTempPathW: %lu", GetLastError());
    tmp = compat_wide_to_utf8(wtmp);
    WT_ASSERT(tmp, "utf8");
    snprintf(out, len, "%sorch-%s-%lu-%u", tmp, tag, GetCurrentProcessId(), seq++);
    free(tmp);
    for (char *c = out; *c; c++)
        if (*c == '\\')
            *c = '/';
    /* A failed run leaves its directory behind, and wine reuses process ids. */
    if (mkdir(out, 0700) == 0)
        return;
    WT_ASSERT(errno == EEXIST, "mkdir %s: errno %d", out, errno);
    wt_rm_rf(out);
    WT_ASSERT(mkdir(out, 0700) == 0, "mkdir %s: errno %d", out, errno);
}
