/* compat-win.c: the POSIX calls of compat.h on Windows. See compat.h for the contract of
 * each; paths are UTF-8 and go through the W (UTF-16) APIs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include "common/compat.h"

#undef fopen

/* UTF-8 to a malloc'd UTF-16 string; NULL with errno set when it is not valid UTF-8. */
static wchar_t *compat_wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    wchar_t *w;

    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    w = malloc((size_t)n * sizeof(*w));
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

ssize_t compat_getline(char **buf, size_t *cap, FILE *f)
{
    size_t n = 0;
    int c;

    if (!buf || !cap || !f) {
        errno = EINVAL;
        return -1;
    }
    while ((c = getc(f)) != EOF) {
        if (n + 2 > *cap) {
            size_t ncap = *cap < 128 ? 128 : *cap * 2;
            char *p = realloc(*buf, ncap);

            if (!p) {
                errno = ENOMEM;
                return -1;
            }
            *buf = p;
            *cap = ncap;
        }
        (*buf)[n++] = (char)c;
        if (c == '\n')
            break;
    }
    if (n == 0)
        return -1;
    (*buf)[n] = '\0';
    return (ssize_t)n;
}

FILE *compat_fopen(const char *path, const char *mode)
{
    wchar_t wmode[16], *wpath;
    size_t o = 0;
    FILE *f;

    for (const char *m = mode; *m && o + 3 < sizeof(wmode) / sizeof(*wmode); m++) {
        if (*m == 'b')
            continue;
        wmode[o++] = *m == 'e' ? L'N' : (wchar_t)*m;
    }
    wmode[o++] = L'b';
    wmode[o] = L'\0';
    wpath = compat_wide(path);
    if (!wpath)
        return NULL;
    f = _wfopen(wpath, wmode);
    free(wpath);
    return f;
}
