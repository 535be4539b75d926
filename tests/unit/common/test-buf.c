/* Tests for common/buf.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

Test(buf, init_is_empty)
{
    struct buf b = BUF_INIT;

    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    buf_init_max(&b, 10);
    cr_assert_eq(b.max, 10);
    cr_assert_null(b.data);
    buf_free(&b);
}

Test(buf, append_grows_and_terminates)
{
    struct buf b = BUF_INIT;
    char chunk[100];

    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 100; i++)
        cr_assert_eq(buf_append(&b, chunk, sizeof(chunk)), 0);
    cr_assert_eq(b.len, 10000);
    cr_assert_geq(b.cap, b.len + 1);
    cr_assert_eq(b.data[b.len], '\0');
    cr_assert_eq(strlen(b.data), 10000);
    buf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, 0);
}

Test(buf, append_binary_with_nul)
{
    struct buf b = BUF_INIT;

    cr_assert_eq(buf_append(&b, "a\0b", 3), 0);
    cr_assert_eq(b.len, 3);
    cr_assert_eq(memcmp(b.data, "a\0b", 4), 0);
    buf_free(&b);
}

Test(buf, append_empty_gives_empty_string)
{
    struct buf b = BUF_INIT;

    cr_assert_eq(buf_append(&b, NULL, 0), 0);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(b.data, "");
    buf_free(&b);
}

Test(buf, printf_appends)
{
    struct buf b = BUF_INIT;

    cr_assert_eq(buf_append_str(&b, "n="), 0);
    cr_assert_eq(buf_printf(&b, "%d,%s", 42, "ok"), 0);
    cr_assert_str_eq(b.data, "n=42,ok");
    cr_assert_eq(b.len, 7);
    buf_free(&b);
}

Test(buf, printf_long_output_grows)
{
    struct buf b = BUF_INIT;
    char big[5000];

    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(buf_printf(&b, "<%s>", big), 0);
    cr_assert_eq(b.len, 5001);
    cr_assert_eq(b.data[0], '<');
    cr_assert_eq(b.data[5000], '>');
    cr_assert_eq(b.data[5001], '\0');
    buf_free(&b);
}

static int vwrap(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vwrap(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

Test(buf, vprintf_reuses_va_list_on_growth)
{
    struct buf b = BUF_INIT;

    /* Fill to just under the first allocation so the next format must grow. */
    cr_assert_eq(buf_append_str(&b, "0123456789012345678901234567890123456789012345678901234"), 0);
    cr_assert_eq(vwrap(&b, "%s-%d-%s", "abcdefghijklmnopqrstuvwxyz", 123456, "end"), 0);
    cr_assert_str_eq(b.data, "0123456789012345678901234567890123456789012345678901234"
                             "abcdefghijklmnopqrstuvwxyz-123456-end");
    buf_free(&b);
}

Test(buf, max_cap_exact_fit)
{
    struct buf b;

    buf_init_max(&b, 5);
    cr_assert_eq(buf_append_str(&b, "hello"), 0);
    cr_assert_eq(b.len, 5);
    cr_assert_str_eq(b.data, "hello");
    cr_assert_eq(buf_append_str(&b, ""), 0);
    buf_free(&b);
    cr_assert_eq(b.max, 5, "max kept after free");
}

Test(buf, max_cap_append_rejected_unchanged)
{
    struct buf b;

    buf_init_max(&b, 8);
    cr_assert_eq(buf_append_str(&b, "abcdef"), 0);
    cr_assert_eq(buf_append_str(&b, "xyz"), -EMSGSIZE);
    cr_assert_eq(b.len, 6);
    cr_assert_str_eq(b.data, "abcdef");
    cr_assert_eq(buf_append_str(&b, "gh"), 0);
    cr_assert_str_eq(b.data, "abcdefgh");
    cr_assert_eq(buf_append(&b, "i", 1), -EMSGSIZE);
    buf_free(&b);
}

Test(buf, max_cap_printf_rejected_unchanged)
{
    struct buf b;

    buf_init_max(&b, 10);
    cr_assert_eq(buf_printf(&b, "%s", "1234567"), 0);
    cr_assert_eq(buf_printf(&b, "%d", 1234), -EMSGSIZE);
    cr_assert_eq(b.len, 7);
    cr_assert_str_eq(b.data, "1234567");
    cr_assert_eq(buf_printf(&b, "%d", 123), 0);
    cr_assert_str_eq(b.data, "1234567123");
    buf_free(&b);
}

Test(buf, max_cap_large_first_append)
{
    struct buf b;
    char big[200];

    memset(big, 'z', sizeof(big));
    buf_init_max(&b, 100);
    cr_assert_eq(buf_append(&b, big, sizeof(big)), -EMSGSIZE);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(buf_append(&b, big, 100), 0);
    cr_assert_leq(b.cap, 101, "allocation never exceeds max + 1");
    buf_free(&b);
}

Test(buf, reset_keeps_allocation)
{
    struct buf b = BUF_INIT;
    char *data;

    cr_assert_eq(buf_append_str(&b, "something"), 0);
    data = b.data;
    buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.data, data);
    cr_assert_str_eq(b.data, "");
    buf_free(&b);
}

Test(buf, steal_hands_over)
{
    struct buf b = BUF_INIT;
    char *s;

    cr_assert_eq(buf_append_str(&b, "owned"), 0);
    s = buf_steal(&b);
    cr_assert_str_eq(s, "owned");
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    free(s);

    s = buf_steal(&b);
    cr_assert_not_null(s);
    cr_assert_str_eq(s, "");
    free(s);
}

Test(buf, free_twice_is_safe)
{
    struct buf b = BUF_INIT;

    cr_assert_eq(buf_append_str(&b, "x"), 0);
    buf_free(&b);
    buf_free(&b);
    cr_assert_null(b.data);
}
