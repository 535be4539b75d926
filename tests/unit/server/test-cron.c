/* Tests for server/cron.c: every syntax form and error, next firings in UTC and in zones,
 * and the DST rule of docs/scheduling.md in both directions, in both hemispheres, with a
 * 30-minute change, and past the last explicit transition (the TZif footer). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "server/cron.h"

static int64_t ts(const char *s)
{
    int64_t ms;
    cr_assert_eq(clock_parse_rfc3339(s, &ms), 0, "bad test time %s", s);
    return ms / 1000;
}

/* "2026-03-29T01:00:00Z" */
static const char *fmt(int64_t s, char *buf)
{
    cr_assert_eq(clock_format_rfc3339(s * 1000, buf, CLOCK_RFC3339_LEN), 0);
    buf[19] = 'Z', buf[20] = '\0';
    return buf;
}

static struct cron parse_ok(const char *expr)
{
    struct cron c;
    char err[256] = "";
    cr_assert_eq(cron_parse(expr, &c, err, sizeof(err)), 0, "%s: %s", expr, err);
    return c;
}

static void parse_fails(const char *expr, const char *want)
{
    struct cron c;
    memset(&c, 0xab, sizeof(c));
    struct cron before = c;
    char err[256] = "";
    cr_assert_eq(cron_parse(expr, &c, err, sizeof(err)), -EINVAL, "%s parsed", expr);
    cr_expect_str_eq(err, want, "for \"%s\"", expr);
    cr_expect(memcmp(&c, &before, sizeof(c)) == 0, "%s: *ret touched on failure", expr);
}

/* The next n firings of expr in zone after `after`, against the expected UTC instants. */
static void check_next(const char *expr, const char *zone, const char *after, int n, ...)
{
    struct cron c = parse_ok(expr);
    const struct cron_tz *z;
    char err[256] = "", got_s[CLOCK_RFC3339_LEN];
    cr_assert_eq(cron_tz_get(zone, &z, err, sizeof(err)), 0, "%s", err);
    int64_t got[CRON_NEXT_MAX];
    cr_assert_eq(cron_next_n(&c, z, ts(after), n, got), n, "%s in %s", expr, zone);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *want = va_arg(ap, const char *);
        cr_expect_str_eq(fmt(got[i], got_s), want, "\"%s\" in %s after %s: firing %d", expr, zone,
                         after, i + 1);
    }
    va_end(ap);
}

Test(cron, parses_every_syntax_form)
{
    struct cron c = parse_ok("* * * * *");
    cr_expect_eq(c.minute, (UINT64_C(1) << 60) - 1);
    cr_expect_eq(c.hour, (1u << 24) - 1);
    cr_expect_eq(c.mday, 0xfffffffeu);
    cr_expect_eq(c.month, 0x1ffe);
    cr_expect_eq(c.wday, 0x7f);
    cr_expect(c.mday_star && c.wday_star);

    c = parse_ok("5,10,15 1-3 */10 1-12/5 1-5");
    cr_expect_eq(c.minute, (1u << 5) | (1u << 10) | (1u << 15));
    cr_expect_eq(c.hour, 0xe);
    cr_expect_eq(c.mday, (1u << 1) | (1u << 11) | (1u << 21) | (1u << 31));
    cr_expect_eq(c.month, (1u << 1) | (1u << 6) | (1u << 11));
    cr_expect_eq(c.wday, 0x3e);
    cr_expect(c.mday_star && !c.wday_star);

    c = parse_ok("  0-59/20\t*/6 1,15 jan,Jul,DEC mon-FRI ");
    cr_expect_eq(c.minute, (UINT64_C(1) << 0) | (UINT64_C(1) << 20) | (UINT64_C(1) << 40));
    cr_expect_eq(c.hour, (1u << 0) | (1u << 6) | (1u << 12) | (1u << 18));
    cr_expect_eq(c.month, (1u << 1) | (1u << 7) | (1u << 12));
    cr_expect_eq(c.wday, 0x3e);
    cr_expect(!c.mday_star && !c.wday_star);

    /* 0 and 7 are both Sunday, by number and in ranges. */
    cr_expect_eq(parse_ok("0 0 * * 7").wday, 1);
    cr_expect_eq(parse_ok("0 0 * * 0").wday, 1);
    cr_expect_eq(parse_ok("0 0 * * SUN").wday, 1);
    cr_expect_eq(parse_ok("0 0 * * 5-7").wday, (1u << 0) | (1u << 5) | (1u << 6));
    cr_expect_eq(parse_ok("0 0 * * */2").wday, 0x55);
}

Test(cron, parses_shortcuts)
{
    static const char *const pairs[][2] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"}, {" @DAILY ", "0 0 * * *"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct cron a = parse_ok(pairs[i][0]), b = parse_ok(pairs[i][1]);
        /* Field by field: padding bytes are not part of the value. */
        cr_expect(a.minute == b.minute && a.hour == b.hour && a.mday == b.mday &&
                      a.month == b.month && a.wday == b.wday && a.mday_star == b.mday_star &&
                      a.wday_star == b.wday_star,
                  "%s", pairs[i][0]);
    }
}

Test(cron, errors_name_the_field_and_the_fault)
{
    parse_fails("0 24 * * *", "field 2 (hour): 24 is out of range 0-23");
    parse_fails("60 * * * *", "field 1 (minute): 60 is out of range 0-59");
    parse_fails("* * 0 * *", "field 3 (day-of-month): 0 is out of range 1-31");
    parse_fails("* * 32 * *", "field 3 (day-of-month): 32 is out of range 1-31");
    parse_fails("* * * 13 *", "field 4 (month): 13 is out of range 1-12");
    parse_fails("* * * * 8", "field 5 (day-of-week): 8 is out of range 0-7");
    parse_fails("99999 * * * *", "field 1 (minute): 9999... is out of range 0-59");
    parse_fails("30-10 * * * *", "field 1 (minute): range 30-10 is backwards");
    parse_fails("*/0 * * * *", "field 1 (minute): step 0 is out of range 1-59");
    parse_fails("* */24 * * *", "field 2 (hour): step 24 is out of range 1-23");
    parse_fails("*/ * * * *", "field 1 (minute): expected a step number after \"/\"");
    parse_fails("5/15 * * * *", "field 1 (minute): a step needs a range or *: write 5-59/15");
    parse_fails("1,,2 * * * *", "field 1 (minute): empty list item in \"1,,2\"");
    parse_fails("1, * * * *", "field 1 (minute): empty list item in \"1,\"");
    parse_fails("1x * * * *", "field 1 (minute): unexpected \"x\" in \"1x\"");
    parse_fails("MON * * * *", "field 1 (minute): \"MON\" is not a number");
    parse_fails("* * * FOO *",
                "field 4 (month): \"FOO\" is not a number or a month (JAN-DEC) name");
    parse_fails("* * * * MONDAY",
                "field 5 (day-of-week): \"MONDAY\" is not a number or a weekday (SUN-SAT) name");
    parse_fails("* * * * -1", "field 5 (day-of-week): expected a number or a name at \"-1\"");
    parse_fails("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
    parse_fails("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0");
    parse_fails("* * * * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), got more");
    parse_fails("@often", "unknown shortcut \"@often\": expected @yearly, @annually, @monthly, "
                          "@weekly, @daily, @midnight or @hourly");
    parse_fails("@daily *", "unknown shortcut \"@daily\": expected @yearly, @annually, "
                            "@monthly, @weekly, @daily, @midnight or @hourly");
    parse_fails("* * * * *\n", "expression contains a control or non-ASCII character");
    char longer[CRON_EXPR_MAX + 2];
    memset(longer, ' ', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    memcpy(longer, "* * * * *", 9);
    parse_fails(longer, "expression longer than 256 bytes");
    longer[CRON_EXPR_MAX] = '\0'; /* exactly at the cap: accepted */
    parse_ok(longer);
}

Test(cron, refuses_a_day_no_month_has)
{
    parse_fails("0 0 30 2 *", "never fires: no selected month (field 4) has a selected day of "
                              "the month (field 3)");
    parse_fails("0 0 31 APR,JUN,SEP,NOV *", "never fires: no selected month (field 4) has a "
                                            "selected day of the month (field 3)");
    parse_ok("0 0 29 2 *");   /* leap years */
    parse_ok("0 0 30 2 MON"); /* both restricted: every Monday in February */
    parse_ok("0 0 31 2,3 *"); /* 31 March */
}

Test(cron, next_in_utc)
{
    check_next("*/15 * * * *", "UTC", "2026-12-01T01:07:00Z", 3, "2026-12-01T01:15:00Z",
               "2026-12-01T01:30:00Z", "2026-12-01T01:45:00Z");
    /* Strictly after: an instant on a firing yields the next one. */
    check_next("0 * * * *", "UTC", "2026-12-01T01:00:00Z", 2, "2026-12-01T02:00:00Z",
               "2026-12-01T03:00:00Z");
    check_next("0 * * * *", "UTC", "2026-12-01T00:59:59Z", 1, "2026-12-01T01:00:00Z");
    check_next("@yearly", "Etc/UTC", "2026-06-15T00:00:00Z", 2, "2027-01-01T00:00:00Z",
               "2028-01-01T00:00:00Z");
    check_next("@monthly", "UTC", "2026-12-15T00:00:00Z", 2, "2027-01-01T00:00:00Z",
               "2027-02-01T00:00:00Z");
    check_next("@weekly", "UTC", "2026-12-01T00:00:00Z", 1, "2026-12-06T00:00:00Z"); /* Sun */
    check_next("30 9 * * MON-FRI", "UTC", "2026-12-04T10:00:00Z", 2, "2026-12-07T09:30:00Z",
               "2026-12-08T09:30:00Z");
    check_next("0 0 29 2 *", "UTC", "2026-12-01T00:00:00Z", 2, "2028-02-29T00:00:00Z",
               "2032-02-29T00:00:00Z");
    check_next("0 12 31 * *", "UTC", "2026-04-01T00:00:00Z", 2, "2026-05-31T12:00:00Z",
               "2026-07-31T12:00:00Z");
}

Test(cron, day_of_month_or_day_of_week_when_both_restricted)
{
    /* Vixie/cronie: the 13th OR any Friday (December 2026: Fri 4, 11; Sun 13). */
    check_next("0 0 13 * FRI", "UTC", "2026-12-01T00:00:00Z", 3, "2026-12-04T00:00:00Z",
               "2026-12-11T00:00:00Z", "2026-12-13T00:00:00Z");
    /* A field starting with '*' is unrestricted for this rule: odd days that are Fridays. */
    check_next("0 0 */2 * FRI", "UTC", "2026-12-01T00:00:00Z", 2, "2026-12-11T00:00:00Z",
               "2026-12-25T00:00:00Z");
}

Test(cron, next_in_a_zone)
{
    /* 09:00 in Berlin is 08:00Z in winter, 07:00Z in summer. */
    check_next("0 9 * * *", "Europe/Berlin", "2026-12-01T00:00:00Z", 1, "2026-12-01T08:00:00Z");
    check_next("0 9 * * *", "Europe/Berlin", "2026-07-01T00:00:00Z", 1, "2026-07-01T07:00:00Z");
    /* Midnight in New York on 1 January is 05:00Z. */
    check_next("@yearly", "America/New_York", "2026-06-01T00:00:00Z", 1, "2027-01-01T05:00:00Z");
    /* India, +05:30 without DST. */
    check_next("0 0 * * *", "Asia/Kolkata", "2026-12-01T00:00:00Z", 1, "2026-12-01T18:30:00Z");
}

Test(cron, berlin_spring_forward)
{
    /* 2026-03-29 01:00Z: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day. */
    check_next("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3, "2026-03-28T01:30:00Z",
               "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z");
    check_next("*/15 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 4, "2026-03-29T00:45:00Z",
               "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z", "2026-03-29T01:30:00Z");
    check_next("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", 3, "2026-03-29T00:00:00Z",
               "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z");
    /* A gap firing and a firing at the end of the gap are one firing. */
    check_next("30 2,3 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2, "2026-03-29T01:00:00Z",
               "2026-03-29T01:30:00Z");
    check_next("*/10 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 2, "2026-03-29T01:00:00Z",
               "2026-03-30T00:00:00Z");
    check_next("0,30 2-3 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 3, "2026-03-29T01:00:00Z",
               "2026-03-29T01:30:00Z", "2026-03-30T00:00:00Z");
}

Test(cron, berlin_fall_back)
{
    /* 2026-10-25 01:00Z: 03:00 CEST becomes 02:00 CET; 02:00-02:59 comes twice. */
    check_next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2, "2026-10-25T00:30:00Z",
               "2026-10-26T01:30:00Z");
    check_next("*/15 * * * *", "Europe/Berlin", "2026-10-25T00:30:00Z", 5, "2026-10-25T00:45:00Z",
               "2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z",
               "2026-10-25T01:45:00Z");
    check_next("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3, "2026-10-25T00:00:00Z",
               "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z");
    /* Asked between the two occurrences: the repeat does not fire. */
    check_next("30 2 * * *", "Europe/Berlin", "2026-10-25T00:45:00Z", 1, "2026-10-26T01:30:00Z");
    /* Every 20 minutes in the 2 o'clock hour: only its first occurrence. */
    check_next("*/20 2 * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 4, "2026-10-25T00:00:00Z",
               "2026-10-25T00:20:00Z", "2026-10-25T00:40:00Z", "2026-10-26T01:00:00Z");
}

Test(cron, new_york_spring_forward)
{
    /* 2026-03-08 07:00Z: 02:00 EST becomes 03:00 EDT. */
    check_next("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2, "2026-03-08T07:00:00Z",
               "2026-03-09T06:30:00Z");
    check_next("*/15 * * * *", "America/New_York", "2026-03-08T06:30:00Z", 3,
               "2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z");
    check_next("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", 3, "2026-03-08T06:00:00Z",
               "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z");
}

Test(cron, new_york_fall_back)
{
    /* 2026-11-01 06:00Z: 02:00 EDT becomes 01:00 EST; 01:00-01:59 comes twice. */
    check_next("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2, "2026-11-01T05:30:00Z",
               "2026-11-02T06:30:00Z");
    check_next("30 2 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2, "2026-11-01T07:30:00Z",
               "2026-11-02T07:30:00Z");
    check_next("*/15 * * * *", "America/New_York", "2026-11-01T05:30:00Z", 4,
               "2026-11-01T05:45:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z",
               "2026-11-01T06:30:00Z");
    check_next("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3, "2026-11-01T05:00:00Z",
               "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z");
}

Test(cron, lord_howe_half_hour_changes)
{
    /* 2026-10-03 15:30Z: 02:00 (+10:30) becomes 02:30 (+11). */
    check_next("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00Z", 2,
               "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z");
    check_next("*/15 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z", 3,
               "2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z");
    /* 2026-04-04 15:00Z: 02:00 (+11) becomes 01:30 (+10:30); 01:30-01:59 comes twice. */
    check_next("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T00:00:00Z", 2,
               "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z");
    check_next("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z", 4,
               "2026-04-04T14:45:00Z", "2026-04-04T15:00:00Z", "2026-04-04T15:15:00Z",
               "2026-04-04T15:30:00Z");
}

Test(cron, sydney_southern_hemisphere)
{
    /* 2026-10-03 16:00Z: 02:00 AEST becomes 03:00 AEDT. */
    check_next("30 2 * * *", "Australia/Sydney", "2026-10-03T00:00:00Z", 2, "2026-10-03T16:00:00Z",
               "2026-10-04T15:30:00Z");
    /* 2026-04-04 16:00Z: 03:00 AEDT becomes 02:00 AEST. */
    check_next("30 2 * * *", "Australia/Sydney", "2026-04-04T00:00:00Z", 2, "2026-04-04T15:30:00Z",
               "2026-04-05T16:30:00Z");
    /* Summer in January: 09:00 AEDT is 22:00Z the day before. */
    check_next("0 9 * * *", "Australia/Sydney", "2027-01-10T00:00:00Z", 1, "2027-01-10T22:00:00Z");
}

Test(cron, a_skipped_day_fires_once_after_it)
{
    /* Samoa skipped 30 December 2011: 23:59:59 on the 29th (-10) was followed by 00:00 on
     * the 31st (+14), at 10:00Z. */
    check_next("0 12 * * *", "Pacific/Apia", "2011-12-29T00:00:00Z", 3, "2011-12-29T22:00:00Z",
               "2011-12-30T10:00:00Z", "2011-12-30T22:00:00Z");
    check_next("0 * * * *", "Pacific/Apia", "2011-12-30T08:30:00Z", 3, "2011-12-30T09:00:00Z",
               "2011-12-30T10:00:00Z", "2011-12-30T11:00:00Z");
}

Test(cron, year_2100_uses_the_footer_rule)
{
    /* Past the last transition in the file: only "CET-1CEST,M3.5.0,M10.5.0/3" knows. */
    check_next("30 2 * * *", "Europe/Berlin", "2100-03-27T12:00:00Z", 2, "2100-03-28T01:00:00Z",
               "2100-03-29T00:30:00Z");
    check_next("30 2 * * *", "Europe/Berlin", "2100-10-30T12:00:00Z", 2, "2100-10-31T00:30:00Z",
               "2100-11-01T01:30:00Z");
    check_next("0 * * * *", "America/New_York", "2100-11-07T04:30:00Z", 3, "2100-11-07T05:00:00Z",
               "2100-11-07T06:00:00Z", "2100-11-07T07:00:00Z");
}

Test(cron, gives_up_past_the_horizon)
{
    /* 29 February on a Sunday ('*' makes day-of-week an AND): 2032, then 2060. */
    struct cron c = parse_ok("0 0 29 2 */7");
    const struct cron_tz *z;
    char err[128];
    cr_assert_eq(cron_tz_get("UTC", &z, err, sizeof(err)), 0);
    int64_t next = 42;
    cr_assert_eq(cron_next(&c, z, ts("2031-01-01T00:00:00Z"), &next), 0);
    cr_expect_eq(next, ts("2032-02-29T00:00:00Z"));
    next = 42;
    cr_expect_eq(cron_next(&c, z, next + ts("2032-03-01T00:00:00Z") - 42, &next), -ENOENT);
    cr_expect_eq(next, 42, "untouched on failure");
    /* The calendar ends with year 9999. */
    c = parse_ok("@yearly");
    cr_expect_eq(cron_next(&c, z, ts("9999-06-01T00:00:00Z"), &next), -ENOENT);
    int64_t all[3];
    cr_expect_eq(cron_next_n(&c, z, ts("9997-06-01T00:00:00Z"), 3, all), 2);
    cr_expect_eq(cron_next_n(&c, z, 0, CRON_NEXT_MAX + 1, all), -EINVAL);
}
