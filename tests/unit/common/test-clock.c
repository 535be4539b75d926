/* Tests for common/clock.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/clock.h"

Test(clock, mono_is_monotonic)
{
    uint64_t a = clock_mono_ns(), b = clock_mono_ns();

    cr_assert_geq(b, a);
}

Test(clock, real_ms_is_plausible)
{
    int64_t now = clock_real_ms();

    /* After 2020-01-01 and before 2200-01-01. */
    cr_assert_gt(now, INT64_C(1577836800000));
    cr_assert_lt(now, INT64_C(7258118400000));
}

Test(clock, format_epoch)
{
    char buf[CLOCK_RFC3339_LEN];

    cr_assert_eq(clock_format_rfc3339(0, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
}

Test(clock, format_known_time)
{
    char buf[CLOCK_RFC3339_LEN];

    /* 2026-11-22T05:35:10.123Z */
    cr_assert_eq(clock_format_rfc3339(INT64_C(1795325710123), buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "2026-11-22T05:35:10.123Z");
}

Test(clock, format_before_epoch)
{
    char buf[CLOCK_RFC3339_LEN];

    cr_assert_eq(clock_format_rfc3339(-1, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "1969-12-31T23:59:59.999Z");
}

Test(clock, format_enospc)
{
    char buf[24]; /* needs 25 */

    cr_assert_eq(clock_format_rfc3339(0, buf, sizeof(buf)), -ENOSPC);
    cr_assert_eq(clock_format_rfc3339(0, buf, 0), -ENOSPC);
}

Test(clock, parse_utc)
{
    int64_t ms = 0;

    cr_assert_eq(clock_parse_rfc3339("2026-11-22T05:35:10Z", &ms), 0);
    cr_assert_eq(ms, INT64_C(1795325710000));
    cr_assert_eq(clock_parse_rfc3339("2026-11-22t05:35:10.123z", &ms), 0);
    cr_assert_eq(ms, INT64_C(1795325710123));
    cr_assert_eq(clock_parse_rfc3339("2026-11-22 05:35:10.123Z", &ms), 0);
    cr_assert_eq(ms, INT64_C(1795325710123));
}

Test(clock, parse_offsets)
{
    int64_t ms = 0;

    cr_assert_eq(clock_parse_rfc3339("2026-11-22T07:35:10.5+02:00", &ms), 0);
    cr_assert_eq(ms, INT64_C(1795325710500));
    cr_assert_eq(clock_parse_rfc3339("2026-11-21T23:05:10-06:30", &ms), 0);
    cr_assert_eq(ms, INT64_C(1795325710000));
    cr_assert_eq(clock_parse_rfc3339("1970-01-01T00:00:00+00:00", &ms), 0);
    cr_assert_eq(ms, 0);
}

Test(clock, parse_fraction_truncates_to_ms)
{
    int64_t ms = 0;

    cr_assert_eq(clock_parse_rfc3339("1970-01-01T00:00:01.123456789Z", &ms), 0);
    cr_assert_eq(ms, 1123);
    cr_assert_eq(clock_parse_rfc3339("1970-01-01T00:00:01.9999Z", &ms), 0);
    cr_assert_eq(ms, 1999);
    cr_assert_eq(clock_parse_rfc3339("1970-01-01T00:00:01.05Z", &ms), 0);
    cr_assert_eq(ms, 1050);
}

Test(clock, parse_before_epoch)
{
    int64_t ms = 0;

    cr_assert_eq(clock_parse_rfc3339("1969-12-31T23:59:59Z", &ms), 0);
    cr_assert_eq(ms, -1000);
    cr_assert_eq(clock_parse_rfc3339("1969-12-31T23:59:59.999Z", &ms), 0);
    cr_assert_eq(ms, -1);
}

Test(clock, parse_leap_years)
{
    int64_t ms;

    cr_assert_eq(clock_parse_rfc3339("2024-02-29T00:00:00Z", &ms), 0);
    cr_assert_eq(clock_parse_rfc3339("2000-02-29T00:00:00Z", &ms), 0);
    cr_assert_eq(clock_parse_rfc3339("2023-02-29T00:00:00Z", &ms), -EINVAL);
    cr_assert_eq(clock_parse_rfc3339("1900-02-29T00:00:00Z", &ms), -EINVAL);
}

Test(clock, parse_leap_second_accepted)
{
    int64_t a, b;

    cr_assert_eq(clock_parse_rfc3339("2016-12-31T23:59:60Z", &a), 0);
    cr_assert_eq(clock_parse_rfc3339("2017-01-01T00:00:00Z", &b), 0);
    cr_assert_eq(a, b);
}

Test(clock, parse_rejects_bad_ranges)
{
    static const char *const bad[] = {
        "2026-02-30T00:00:00Z",      "2026-04-31T00:00:00Z",      "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",      "2026-01-00T00:00:00Z",      "2026-01-01T25:00:00Z",
        "2026-01-01T24:00:00Z",      "2026-01-01T00:60:00Z",      "2026-01-01T00:00:61Z",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60",
    };
    int64_t ms = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(clock_parse_rfc3339(bad[i], &ms), -EINVAL, "accepted %s", bad[i]);
    cr_assert_eq(ms, 42, "ret untouched on failure");
}

Test(clock, parse_rejects_garbage)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "2026-11-22",
        "2026-11-22T05:35:10",
        "2026-11-22T05:35:10ZZ",
        "2026-11-22T05:35:10Z ",
        " 2026-11-22T05:35:10Z",
        "2026-11-22X05:35:10Z",
        "2026-11-22T05:35:10.Z",
        "2026-11-22T05:35Z",
        "26-11-22T05:35:10Z",
        "2026-1-22T05:35:10Z",
        "2026-11-22T05:35:10+0200",
        "2026-11-22T05:35:10+02",
        "2026/11/22T05:35:10Z",
        "+026-11-22T05:35:10Z",
    };
    int64_t ms = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(clock_parse_rfc3339(bad[i], &ms), -EINVAL, "accepted '%s'", bad[i]);
    cr_assert_eq(clock_parse_rfc3339(NULL, &ms), -EINVAL);
    cr_assert_eq(ms, 42);
}

Test(clock, round_trip)
{
    static const int64_t samples[] = {
        0,
        1,
        999,
        1000,
        INT64_C(951782400000) /* 2000-02-29 */,
        INT64_C(1795325710123),
        INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */,
        -INT64_C(86400000),
    };
    char buf[CLOCK_RFC3339_LEN];
    int64_t back;

    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        cr_assert_eq(clock_format_rfc3339(samples[i], buf, sizeof(buf)), 0);
        cr_assert_eq(clock_parse_rfc3339(buf, &back), 0, "%s", buf);
        cr_assert_eq(back, samples[i], "%s", buf);
    }
}

Test(clock, round_trip_now)
{
    char buf[CLOCK_RFC3339_LEN];
    int64_t now = clock_real_ms(), back;

    cr_assert_eq(clock_format_rfc3339(now, buf, sizeof(buf)), 0);
    cr_assert_eq(strlen(buf), 24);
    cr_assert_eq(clock_parse_rfc3339(buf, &back), 0);
    cr_assert_eq(back, now);
}

Test(clock, format_rejects_years_beyond_9999)
{
    char buf[CLOCK_RFC3339_LEN];

    cr_assert_lt(clock_format_rfc3339(INT64_C(253402300800000), buf, sizeof(buf)), 0);
}

Test(clock, deadline_carries_into_seconds)
{
    struct timespec now, d;
    clock_gettime(CLOCK_MONOTONIC, &now);
    clock_deadline(CLOCK_MONOTONIC, 1999, &d);
    cr_assert(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    int64_t diff_ms = (int64_t)(d.tv_sec - now.tv_sec) * 1000 + (d.tv_nsec - now.tv_nsec) / 1000000;
    cr_assert(diff_ms >= 1999 && diff_ms < 2999, "%lld", (long long)diff_ms);
}
