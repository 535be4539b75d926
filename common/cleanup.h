/* cleanup.h: scope-bound cleanup helpers (systemd style).
 *
 * _cleanup_free_ char *s = strdup("x");   freed when s leaves scope
 * return TAKE_PTR(s);                     hands ownership to the caller
 *
 * Every destructor used with _cleanup_ accepts NULL.
 */
#pragma once

#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Return p and set it to NULL, so the scope's cleanup no longer frees it. */
#define TAKE_PTR(p)                                                                                \
    __extension__({                                                                                \
        __typeof__(p) _take_ptr_tmp = (p);                                                         \
        (p) = NULL;                                                                                \
        _take_ptr_tmp;                                                                             \
    })

/* Return fd and set it to -1. */
#define TAKE_FD(fd)                                                                                \
    __extension__({                                                                                \
        int _take_fd_tmp = (fd);                                                                   \
        (fd) = -1;                                                                                 \
        _take_fd_tmp;                                                                              \
    })

/* Declare `static inline void funcp(type *p)` that calls func(*p) when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p)                                                            \
    {                                                                                              \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

static inline void freep(void *p)
{
    free(*(void **)p);
}

static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

static inline void closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

#define _cleanup_free_   _cleanup_(freep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_close_  _cleanup_(closep)

/* Free p and set it to NULL; never leaves a dangling pointer. */
#define FREE_AND_NULL(p)                                                                           \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
