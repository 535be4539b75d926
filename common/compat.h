/* compat.h: the POSIX file and time calls orch uses, on Windows (mingw-w64).
 *
 * On POSIX this header is empty: the real calls are used. On Windows it maps each call onto
 * a shim in compat-win.c; what each shim guarantees, and where it is weaker than POSIX, is
 * written next to it. Include it after the system headers, in files that use those calls. */
#pragma once

#ifdef _WIN32

#include <stdio.h>
#include <sys/types.h>
#include <time.h>

/* getline(3): same contract (a line with its '\n', NUL-terminated, *buf grown with
 * realloc; -1 at end of file or on error with errno set). */
ssize_t compat_getline(char **buf, size_t *cap, FILE *f);
#define getline compat_getline

/* timegm(3): the C runtime's _mkgmtime, the same conversion (UTC, no time zone). */
#define timegm _mkgmtime

/* fopen(3) with a UTF-8 path (through _wfopen) and always binary ('b' added): a mode's
 * 'e' (close-on-exec) becomes 'N' (not inherited by child processes). */
FILE *compat_fopen(const char *path, const char *mode);
#define fopen compat_fopen

#endif
