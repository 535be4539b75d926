/* clock.c: monotonic and wall-clock time, RFC 3339 formatting and parsing. */
#include "common/clock.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "common/compat.h"

uint64_t clock_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

int64_t clock_real_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int clock_format_rfc3339(int64_t ms, char *buf, size_t len)
{
    /* Floor division so that times before the epoch keep a positive millisecond part. */
    int64_t secs = ms / 1000, frac = ms % 1000;
    time_t t;
    struct tm tm;
    int n;

    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    t = (time_t)secs;
    if (!gmtime_r(&t, &tm))
        return -EINVAL;
    /* RFC 3339 has exactly four year digits. */
    if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return -EINVAL;
    n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    return 0;
}

/* Read exactly n decimal digits. */
static bool parse_digits(const char **p, int n, int *ret)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *ret = v;
    return true;
}

static bool expect_char(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && is_leap(y))
        return 29;
    return days[m - 1];
}

int clock_parse_rfc3339(const char *s, int64_t *ret)
{
    const char *p = s;
    int year, mon, day, hour, min, sec, ms = 0, off = 0;
    struct tm tm = {0};
    time_t t;

    if (!s)
        return -EINVAL;
    if (!parse_digits(&p, 4, &year) || !expect_char(&p, '-') || !parse_digits(&p, 2, &mon) ||
        !expect_char(&p, '-') || !parse_digits(&p, 2, &day))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (!parse_digits(&p, 2, &hour) || !expect_char(&p, ':') || !parse_digits(&p, 2, &min) ||
        !expect_char(&p, ':') || !parse_digits(&p, 2, &sec))
        return -EINVAL;

    if (*p == '.') {
        int digits = 0;

        p++;
        /* Any number of digits; keep milliseconds, truncate the rest. */
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -EINVAL;
        for (int i = digits; i < 3; i++)
            ms *= 10;
    }

    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;

        p++;
        if (!parse_digits(&p, 2, &oh) || !expect_char(&p, ':') || !parse_digits(&p, 2, &om))
            return -EINVAL;
        if (oh > 23 || om > 59)
            return -EINVAL;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;

    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 || min > 59 ||
        sec > 60)
        return -EINVAL;

    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    /* A leap second (60) is folded into the next minute by timegm(). */
    tm.tm_sec = sec;
    /* All fields were validated, so -1 is a real time (1969-12-31T23:59:59Z), not an error. */
    t = timegm(&tm);

    *ret = ((int64_t)t - off) * 1000 + ms;
    return 0;
}

void clock_deadline(clockid_t clk, int64_t ms, struct timespec *ts)
{
    clock_gettime(clk, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}
