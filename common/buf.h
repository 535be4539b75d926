/* buf.h: growable byte buffer, always NUL-terminated, with an optional size cap.
 *
 * struct buf b = BUF_INIT;            or buf_init_max(&b, 1 << 20)
 * buf_printf(&b, "%d", 1); ... buf_free(&b);
 * The buffer owns data; buf_steal() hands it to the caller (free() it).
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "common/printf.h"

struct buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* 0 = unlimited, else len may never exceed max */
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

void buf_init_max(struct buf *b, size_t max);

/* Append. Return 0, -ENOMEM, or -EMSGSIZE when max would be exceeded (b unchanged). */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) ORCH_PRINTF(2, 3);
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) ORCH_PRINTF(2, 0);

/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Release memory; b is BUF_INIT afterwards (max kept). Accepts a zeroed buf. */
void buf_free(struct buf *b);
/* Return the data (never NULL: "" when empty), caller frees; b is emptied. NULL on ENOMEM. */
char *buf_steal(struct buf *b);
