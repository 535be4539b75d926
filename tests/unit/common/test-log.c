/* Tests for common/log.c: output captured through a pipe. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
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

/* The per-thread context: pushed fields ride on every line, popped ones leave it. */
Test(log, ctx_nested_push_pop)
{
    char out[512];

    cr_assert_str_eq(log_ctx_get(), "");
    size_t m0 = log_ctx_push("req", "r-1");
    cr_assert_eq(m0, 0);
    size_t m1 = log_ctx_push("tenant", "t-1");
    log_info("op=a");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, "level=info op=a req=r-1 tenant=t-1\n"), "%s", out);

    size_t m2 = log_ctx_push("job", "j-1");
    log_info("op=b");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=b req=r-1 tenant=t-1 job=j-1\n"), "%s", out);
    /* An inner push of a key already there replaces it until popped. */
    size_t m3 = log_ctx_push("job", "j-2");
    log_info("op=b2");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=b2 req=r-1 tenant=t-1 job=j-2\n"), "%s", out);
    log_ctx_pop(m3);
    log_info("op=b3");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=b3 req=r-1 tenant=t-1 job=j-1\n"), "%s", out);
    log_ctx_pop(m2);
    log_info("op=c");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=c req=r-1 tenant=t-1\n"), "%s", out);

    log_ctx_pop(m1);
    cr_assert_str_eq(log_ctx_get(), " req=r-1");
    log_ctx_pop(m0);
    cr_assert_str_eq(log_ctx_get(), "");
    log_info("op=d");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=d\n"), "%s", out);
    log_ctx_pop(0); /* popping an empty context is harmless */
    cr_assert_str_eq(log_ctx_get(), "");
}

/* A field the caller wrote itself is not repeated from the context; text inside a quoted
 * value is not taken for a field. */
Test(log, ctx_caller_field_wins)
{
    char out[512];

    size_t m = log_ctx_push("req", "r-ctx");
    log_ctx_push("job", "j-ctx");
    log_info("op=x job=j-own");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=x job=j-own req=r-ctx\n"), "%s", out);
    log_info("op=y detail=\"req=fake job=fake\"");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=y detail=\"req=fake job=fake\" req=r-ctx job=j-ctx\n"),
                       "%s", out);
    log_ctx_pop(m);
}

/* Values are quoted as log_quote() does; bad keys, empty values and a field that would
 * overflow the context are left out whole. */
Test(log, ctx_quoting_and_bounds)
{
    char out[1024], big[LOG_CTX_MAX + 8];

    size_t m = log_ctx_push("tenant", "a b\"c\nd");
    cr_assert_str_eq(log_ctx_get(), " tenant=\"a b\\\"c\\nd\"");
    log_info("op=q");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=q tenant=\"a b\\\"c\\nd\"\n"), "%s", out);
    cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1);

    log_ctx_push("bad key", "v");
    log_ctx_push("k=v", "v");
    log_ctx_push("empty", "");
    log_ctx_push("null", NULL);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    size_t before = strlen(log_ctx_get());
    size_t mb = log_ctx_push("big", big);
    cr_assert_eq(mb, before);
    cr_assert_str_eq(log_ctx_get(), " tenant=\"a b\\\"c\\nd\"");
    log_ctx_pop(m);
    cr_assert_str_eq(log_ctx_get(), "");
}

/* A long line is still cut at the line limit with the context on it, and stays one line. */
Test(log, ctx_on_long_line)
{
    static char big[9000], out[16384];
    size_t n;

    size_t m = log_ctx_push("req", "r-1");
    memset(big, 'v', 8145);
    big[8145] = '\0';
    log_info("k=%s", big);
    n = drain(out, sizeof(out));
    cr_assert_leq(n, 8192);
    cr_assert_eq(out[n - 1], '\n');
    cr_assert_eq(strchr(out, '\n'), out + n - 1);
    cr_assert_eq(strncmp(out + n - 4, "...", 3), 0, "%s", out + n - 20);
    log_ctx_pop(m);
}

static void *ctx_other_thread(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)strlen(log_ctx_get());
}

/* The context is the thread's own. */
Test(log, ctx_per_thread)
{
    pthread_t t;
    void *len = NULL;

    size_t m = log_ctx_push("req", "r-main");
    cr_assert_eq(pthread_create(&t, NULL, ctx_other_thread, NULL), 0);
    cr_assert_eq(pthread_join(t, &len), 0);
    cr_assert_eq((uintptr_t)len, 0);
    log_ctx_pop(m);
}

/* A process field rides on every line, after the thread's context; a line's own key wins. */
Test(log, process_field)
{
    char out[512];

    cr_assert_eq(log_set_process_field("bad key", "x"), -EINVAL);
    cr_assert_eq(log_set_process_field("node", ""), -EINVAL);
    cr_assert_eq(log_set_process_field("node", "orchd-1"), 0);
    size_t m = log_ctx_push("req", "r-1");
    log_info("op=a");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=a req=r-1 node=orchd-1\n"), "%s", out);
    log_info("op=b node=other");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=b node=other req=r-1\n"), "%s", out);
    log_ctx_pop(m);
    log_info("op=c");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=c node=orchd-1\n"), "%s", out);
    char big[200];
    memset(big, 'n', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(log_set_process_field("big", big), -ENOSPC);
    log_info("op=d");
    drain(out, sizeof(out));
    cr_assert_not_null(strstr(out, " op=d node=orchd-1\n"), "%s", out);
}
