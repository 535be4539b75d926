/* Tests for common/log.c: output captured through a pipe. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

static int pipefd[2] = {-1, -1};

static void setup(void)
{
    cr_assert_eq(pipe2(pipefd, O_NONBLOCK), 0);
    log_set_fd(pipefd[1]);
    log_set_level(LOG_LEVEL_INFO);
}

static void teardown(void)
{
    log_set_fd(2);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* Everything written so far; "" when nothing. */
static size_t drain(char *out, size_t len)
{
    size_t o = 0;

    for (;;) {
        ssize_t n = read(pipefd[0], out + o, len - 1 - o);
        if (n <= 0)
            break;
        o += (size_t)n;
    }
    out[o] = '\0';
    return o;
}

TestSuite(log, .init = setup, .fini = teardown);

Test(log, line_format)
{
    char out[256], ts[CLOCK_RFC3339_LEN];
    int64_t ms;

    log_info("op=migrate version=%d", 3);
    cr_assert_gt(drain(out, sizeof(out)), 0);
    cr_assert_eq(strncmp(out, "ts=", 3), 0, "%s", out);
    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
    memcpy(ts, out + 3, 24);
    ts[24] = '\0';
    cr_assert_eq(ts[23], 'Z');
    cr_assert_eq(clock_parse_rfc3339(ts, &ms), 0, "bad ts %s", ts);
    cr_assert_str_eq(out + 27, " level=info op=migrate version=3\n");
}

Test(log, one_line_per_event)
{
    char out[512];

    log_warn("a=1");
    log_error("b=2");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, "level=warn a=1\nts="));
    cr_assert_not_null(strstr(out, "level=error b=2\n"));
    cr_assert_eq(out[strlen(out) - 1], '\n');
}

Test(log, level_filter)
{
    char out[512];

    log_debug("hidden=1");
    cr_assert_eq(drain(out, sizeof(out)), 0, "debug dropped at info: %s", out);
    log_set_level(LOG_LEVEL_ERROR);
    cr_assert_eq(log_get_level(), LOG_LEVEL_ERROR);
    log_info("hidden=2");
    log_warn("hidden=3");
    cr_assert_eq(drain(out, sizeof(out)), 0);
    log_error("shown=1");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, "level=error shown=1"));
    log_set_level(LOG_LEVEL_DEBUG);
    log_debug("shown=2");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, "level=debug shown=2"));
}

/* No fixture: Criterion runs each test in a fresh process, so this sees the default. */
Test(log_default, level_is_info)
{
    cr_assert_eq(log_get_level(), LOG_LEVEL_INFO);
}

Test(log, embedded_newline_cannot_forge_events)
{
    char out[512];

    log_info("msg=%s", "x\nts=fake level=error");
    drain(out, sizeof(out));
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "exactly one newline: %s", out);
}

Test(log, caller_trailing_newline_not_doubled)
{
    char out[256];

    log_info("a=1\n");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, "level=info a=1\n"));
    cr_assert_null(strstr(out, "\n\n"));
}

Test(log, long_line_truncated)
{
    static char big[20000], out[32768];
    size_t n;

    memset(big, 'v', sizeof(big) - 1);
    log_info("k=%s", big);
    n = drain(out, sizeof(out));
    cr_assert_leq(n, 8192);
    cr_assert_gt(n, 8000);
    cr_assert_eq(out[n - 1], '\n');
    cr_assert_eq(strncmp(out + n - 4, "...", 3), 0, "truncation marker: %s", out + n - 10);
    cr_assert_eq(strchr(out, '\n'), out + n - 1);
}

Test(log, preserves_errno)
{
    char out[128];

    errno = EPERM;
    log_info("x=1");
    cr_assert_eq(errno, EPERM);
    drain(out, sizeof(out));
}

Test(log, level_parse)
{
    enum log_level l = LOG_LEVEL_ERROR;

    cr_assert_eq(log_level_parse("debug", &l), 0);
    cr_assert_eq(l, LOG_LEVEL_DEBUG);
    cr_assert_eq(log_level_parse("INFO", &l), 0);
    cr_assert_eq(l, LOG_LEVEL_INFO);
    cr_assert_eq(log_level_parse("Warn", &l), 0);
    cr_assert_eq(l, LOG_LEVEL_WARN);
    cr_assert_eq(log_level_parse("error", &l), 0);
    cr_assert_eq(l, LOG_LEVEL_ERROR);
    cr_assert_eq(log_level_parse("verbose", &l), -EINVAL);
    cr_assert_eq(log_level_parse("", &l), -EINVAL);
    cr_assert_eq(log_level_parse("info ", &l), -EINVAL);
    cr_assert_eq(log_level_parse(NULL, &l), -EINVAL);
    cr_assert_eq(l, LOG_LEVEL_ERROR, "untouched on failure");
}

Test(log, level_names)
{
    cr_assert_str_eq(log_level_name(LOG_LEVEL_DEBUG), "debug");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_INFO), "info");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_WARN), "warn");
    cr_assert_str_eq(log_level_name(LOG_LEVEL_ERROR), "error");
}

Test(log, quote_safe_returns_input)
{
    char buf[64];
    const char *s = "tenant-1_a.b:c/d@e+f";

    cr_assert_eq(log_quote(s, buf, sizeof(buf)), s);
    cr_assert_str_eq(log_quote(NULL, buf, sizeof(buf)), "-");
}

Test(log, quote_escapes)
{
    char buf[128];

    cr_assert_str_eq(log_quote("a b", buf, sizeof(buf)), "\"a b\"");
    cr_assert_str_eq(log_quote("say \"hi\"", buf, sizeof(buf)), "\"say \\\"hi\\\"\"");
    cr_assert_str_eq(log_quote("back\\slash", buf, sizeof(buf)), "\"back\\\\slash\"");
    cr_assert_str_eq(log_quote("l1\nl2\tx", buf, sizeof(buf)), "\"l1\\nl2\\tx\"");
    cr_assert_str_eq(log_quote("\x01\x7f\xc3\xa9", buf, sizeof(buf)), "\"\\x01\\x7f\\xc3\\xa9\"");
    cr_assert_str_eq(log_quote("", buf, sizeof(buf)), "\"\"");
    cr_assert_str_eq(log_quote("k=v", buf, sizeof(buf)), "\"k=v\"");
}

Test(log, quote_truncates)
{
    char buf[12];
    const char *q;

    q = log_quote("hello world, long value", buf, sizeof(buf));
    cr_assert_eq(q, buf);
    cr_assert_leq(strlen(q), sizeof(buf) - 1);
    cr_assert_str_eq(q, "\"hello ...\"");

    /* An escape sequence is never cut in half. */
    q = log_quote("abcd\"\"\"\"\"\"", buf, sizeof(buf));
    cr_assert_str_eq(q, "\"abcd\\\"...\"");

    q = log_quote("a b", buf, 3);
    cr_assert_not_null(q);
    cr_assert_str_eq(q, "\"...\"");
}

Test(log, quote_exact_fit)
{
    char buf[6];

    /* "a b" quoted is 5 chars + NUL. */
    cr_assert_str_eq(log_quote("a b", buf, sizeof(buf)), "\"a b\"");
}
