/* buf.c: growable NUL-terminated byte buffer with an optional size cap. */
#include "common/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

void buf_init_max(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* Make room for extra more bytes plus the NUL. Never changes len or the contents. */
static int buf_reserve(struct buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > SIZE_MAX - 1 - b->len)
        return -ENOMEM;
    if (b->max && b->len + extra > b->max)
        return -EMSGSIZE;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;

    cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    /* Never allocate beyond what the cap can ever use. */
    if (b->max && cap > b->max + 1)
        cap = b->max + 1;

    p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    if (!b->data)
        p[0] = '\0';
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
    int r;

    r = buf_reserve(b, len);
    if (r < 0)
        return r;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    size_t avail = b->cap > b->len ? b->cap - b->len : 0;
    va_list aq;
    int n, r;

    /* First try to format in place; ap is consumed only by the second attempt. */
    va_copy(aq, ap);
    n = vsnprintf(avail ? b->data + b->len : NULL, avail, fmt, aq);
    va_end(aq);
    if (n < 0) {
        if (b->data)
            b->data[b->len] = '\0';
        return -EINVAL;
    }
    if ((size_t)n < avail) {
        b->len += (size_t)n;
        return 0;
    }

    /* The truncated attempt may have overwritten our terminator: restore it first so a
     * failure below leaves b unchanged. */
    if (b->data)
        b->data[b->len] = '\0';
    r = buf_reserve(b, (size_t)n);
    if (r < 0)
        return r;
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        b->data[b->len] = '\0';
        return -EINVAL;
    }
    b->len += (size_t)n;
    return 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

char *buf_steal(struct buf *b)
{
    char *p;

    if (!b->data)
        return strdup("");
    p = b->data;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
