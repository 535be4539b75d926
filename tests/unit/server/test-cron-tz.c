/* Tests for server/cron-tz.c: zone names, unknown and malformed zones, the cache, and the
 * UTC <-> local conversion checked against glibc's localtime_r (an independent reader of
 * the same tz database) over several zones and 1970-2110, footer rule included. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/cron-tz.h"

static const struct cron_tz *get(const char *name)
{
    const struct cron_tz *z = NULL;
    char err[256] = "";
    cr_assert_eq(cron_tz_get(name, &z, err, sizeof(err)), 0, "%s: %s", name, err);
    cr_assert_str_eq(cron_tz_name(z), name);
    return z;
}

static void refused(const char *name, int want_r, const char *want_err)
{
    const struct cron_tz *z = (const struct cron_tz *)0x1;
    char err[256] = "";
    cr_expect_eq(cron_tz_get(name, &z, err, sizeof(err)), want_r, "%s", name);
    cr_expect_str_eq(err, want_err, "for \"%s\"", name);
    cr_expect_eq(z, (const struct cron_tz *)0x1, "%s: *ret touched", name);
}

static int64_t ts(const char *s)
{
    int64_t ms;
    cr_assert_eq(clock_parse_rfc3339(s, &ms), 0);
    return ms / 1000;
}

Test(cron_tz, utc_is_built_in_and_zero)
{
    const struct cron_tz *a = get("UTC"), *b = get("Etc/UTC");
    cr_expect_eq(cron_tz_offset(a, 0), 0);
    cr_expect_eq(cron_tz_offset(b, ts("2100-07-01T00:00:00Z")), 0);
    cr_expect_eq(get("UTC"), a, "cached: the same zone twice");
}

Test(cron_tz, malformed_names_are_refused)
{
    static const char *const bad[] = {
        "",
        "/etc/passwd",
        "../etc/passwd",
        "Europe/../../etc/passwd",
        "Europe//Berlin",
        "Europe/",
        "Europe/Ber lin",
        "Europe/Berlin\n",
        "Europe\\Berlin",
        "localtime",
        "posixrules",
        "right/Europe/Berlin",
        "-Europe",
        "Europe/Berlin.tab",
        "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        refused(bad[i], -EINVAL,
                "malformed time zone name: expected an IANA name such as \"Europe/Berlin\"");
    refused(NULL, -EINVAL,
            "malformed time zone name: expected an IANA name such as \"Europe/Berlin\"");
}

Test(cron_tz, unknown_zones_are_refused)
{
    refused("Mars/Olympus_Mons", -ENOENT, "unknown time zone \"Mars/Olympus_Mons\"");
    refused("Europe", -ENOENT, "unknown time zone \"Europe\""); /* a folder */
    refused("Europe/Berlin/X", -ENOENT, "unknown time zone \"Europe/Berlin/X\"");
}

Test(cron_tz, spans_around_a_change)
{
    const struct cron_tz *z = get("Europe/Berlin");
    int64_t start, end;
    int32_t off, prev;
    cron_tz_span(z, ts("2026-03-29T01:00:00Z"), &start, &end, &off, &prev);
    cr_expect_eq(start, ts("2026-03-29T01:00:00Z"));
    cr_expect_eq(end, ts("2026-10-25T01:00:00Z"));
    cr_expect_eq(off, 7200);
    cr_expect_eq(prev, 3600);
    /* The same from the footer rule, in 2100. */
    cron_tz_span(z, ts("2100-06-01T00:00:00Z"), &start, &end, &off, &prev);
    cr_expect_eq(start, ts("2100-03-28T01:00:00Z"));
    cr_expect_eq(end, ts("2100-10-31T01:00:00Z"));
    cr_expect_eq(off, 7200);
    cr_expect_eq(prev, 3600);
}

Test(cron_tz, any_instant_has_an_offset)
{
    /* The ends of int64: no overflow (UBSan checks), the rule of the nearest year. */
    const struct cron_tz *z = get("Europe/Berlin");
    cr_expect_eq(cron_tz_offset(z, INT64_MAX), 3600);
    cr_expect_eq(cron_tz_offset(z, INT64_MIN), cron_tz_offset(z, ts("1800-01-01T00:00:00Z")));
    /* Southern: the last change of a year starts DST. */
    cr_expect_eq(cron_tz_offset(get("Pacific/Chatham"), INT64_MAX), 13 * 3600 + 45 * 60);
}

Test(cron_tz, from_local_in_gaps_and_repeats)
{
    const struct cron_tz *z = get("Europe/Berlin");
    int64_t u[2];
    /* 02:30 on 29 March 2026 does not exist; on 25 October 2026 it exists twice. */
    cr_expect_eq(cron_tz_from_local(z, ts("2026-03-29T02:30:00Z"), u), 0);
    cr_assert_eq(cron_tz_from_local(z, ts("2026-10-25T02:30:00Z"), u), 2);
    cr_expect_eq(u[0], ts("2026-10-25T00:30:00Z"));
    cr_expect_eq(u[1], ts("2026-10-25T01:30:00Z"));
    cr_assert_eq(cron_tz_from_local(z, ts("2026-07-01T12:00:00Z"), u), 1);
    cr_expect_eq(u[0], ts("2026-07-01T10:00:00Z"));
}

/* glibc as the oracle: TZ set for this process only (Criterion runs each test in its own
 * process, and this one starts no thread). */
static void compare_with_glibc(const char *zone)
{
    const struct cron_tz *z = get(zone);
    char tzenv[80];
    snprintf(tzenv, sizeof(tzenv), ":%s", zone);
    cr_assert_eq(setenv("TZ", tzenv, 1), 0);
    tzset();
    int checked = 0;
    int64_t from = ts("1970-01-01T00:00:00Z"), to = ts("2110-01-01T00:00:00Z");
    /* Every change (and the second on each side of it), and a sample between changes. */
    for (int64_t t = from; t < to;) {
        int64_t start, end;
        int32_t off, prev;
        cron_tz_span(z, t, &start, &end, &off, &prev);
        int64_t probes[] = {t, t + 1, end - 1, t + (end < to ? (end - t) / 2 : 86400 * 13 + 7)};
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
            time_t tt = (time_t)probes[i];
            struct tm tm;
            if (probes[i] >= to || !localtime_r(&tt, &tm))
                continue;
            cr_assert_eq(cron_tz_offset(z, probes[i]), tm.tm_gmtoff, "%s at %lld: %d, glibc %ld",
                         zone, (long long)probes[i], cron_tz_offset(z, probes[i]), tm.tm_gmtoff);
            int64_t u[2];
            int n = cron_tz_from_local(z, probes[i] + tm.tm_gmtoff, u);
            cr_assert(n >= 1 && (u[0] == probes[i] || (n == 2 && u[1] == probes[i])),
                      "%s: from_local(to_local(%lld)) lost it", zone, (long long)probes[i]);
            checked++;
        }
        t = end < to ? end : t + 86400 * 29 + 3607; /* no change ahead: step a month */
    }
    cr_expect_gt(checked, 100, "%s: %d instants", zone, checked);
}

Test(cron_tz, agrees_with_glibc_berlin)
{
    compare_with_glibc("Europe/Berlin");
}

Test(cron_tz, agrees_with_glibc_new_york)
{
    compare_with_glibc("America/New_York");
}

Test(cron_tz, agrees_with_glibc_southern_and_odd)
{
    compare_with_glibc("Australia/Sydney");
    compare_with_glibc("Australia/Lord_Howe");
    compare_with_glibc("America/Sao_Paulo");
    compare_with_glibc("Pacific/Apia");
    compare_with_glibc("Asia/Kolkata");
    compare_with_glibc("Africa/Casablanca");
    compare_with_glibc("America/St_Johns");
    compare_with_glibc("Pacific/Chatham");
}

/* Footers that stretch the POSIX rule: a negative time (Nuuk "/-1"), a time past 24h
 * (Jerusalem "/26"), DST in winter (Dublin's negative DST: the rule "ends" before it
 * "starts" in each year), a two-hour change (Troll), southern rules (Santiago). */
Test(cron_tz, agrees_with_glibc_unusual_footers)
{
    compare_with_glibc("America/Nuuk");
    compare_with_glibc("Asia/Jerusalem");
    compare_with_glibc("Europe/Dublin");
    compare_with_glibc("Antarctica/Troll");
    compare_with_glibc("America/Santiago");
}

static void *get_many(void *arg)
{
    static const char *const names[] = {"Europe/Paris", "Asia/Tokyo", "America/Chicago"};
    const struct cron_tz **out = arg;
    char err[128];
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < 3; i++)
            if (cron_tz_get(names[i], &out[i], err, sizeof(err)) != 0)
                return (void *)1;
    return NULL;
}

Test(cron_tz, cache_is_shared_between_threads)
{
    pthread_t th[4];
    const struct cron_tz *got[4][3];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, get_many, got[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        cr_expect_null(r);
    }
    for (int i = 1; i < 4; i++)
        for (int j = 0; j < 3; j++)
            cr_expect_eq(got[i][j], got[0][j], "one zone object per name");
    cron_tz_cache_free();
    cr_expect_eq(cron_tz_offset(get("Asia/Tokyo"), 0), 9 * 3600, "loads again after a free");
    cron_tz_cache_free();
}
