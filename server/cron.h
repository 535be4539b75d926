/* cron.h: cron expressions and their next firing times, in a time zone.
 *
 * Pure: no database, no clock of its own (the caller passes the instant), no I/O beyond the
 * zone files of cron-tz.h. The syntax, the day-of-month/day-of-week rule and the DST rule
 * are written down for users in docs/scheduling.md ("Schedules: cron syntax and time
 * zones"); the code below follows that text.
 *
 * A struct cron is a plain value: the caller owns its memory, nothing to free. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/cron-tz.h"

#define CRON_EXPR_MAX 256 /* bytes of an expression, without the NUL */
#define CRON_NEXT_MAX 100 /* firings cron_next_n() computes at most */

/* How far cron_next() looks: 9 years covers the longest wait a valid expression can have
 * (29 February: 8 years across 2100). */
#define CRON_HORIZON_S (INT64_C(9) * 366 * 86400)

struct cron {
    uint64_t minute; /* bit n: minute n, 0-59 */
    uint32_t hour;   /* bit n: hour n, 0-23 */
    uint32_t mday;   /* bit n: day n of the month, 1-31 */
    uint16_t month;  /* bit n: month n, 1-12 */
    uint8_t wday;    /* bit n: weekday n, 0 = Sunday .. 6 */
    /* The field starts with '*' ("*", "*\/2"): Vixie cron's test for "unrestricted" in the
     * day rule (a day matches day-of-month OR day-of-week only when both are restricted). */
    bool mday_star, wday_star;
};

/* Parse a 5-field expression ("*\/15 9-17 * * MON-FRI") or a shortcut (@yearly, @annually,
 * @monthly, @weekly, @daily, @midnight, @hourly). Returns 0 with *ret filled; -EINVAL with
 * err naming the field and the fault ("field 2 (hour): 24 is out of range 0-23"), or
 * "never fires" for a day that no month has ("0 0 30 2 *"); *ret untouched on failure. */
int cron_parse(const char *expr, struct cron *ret, char *err, size_t errlen);

/* The first firing strictly after after_utc (seconds since the epoch), the expression read in
 * zone z's wall-clock time, with the DST rule of docs/scheduling.md:
 *  - a wall time in a spring-forward gap fires once at the first instant after the gap,
 *    and a wall time that occurs twice fires at its first occurrence only;
 *  - except schedules whose hour field matches every hour: they follow real time, firing in
 *    both occurrences of a repeated hour and not at all for wall times that do not exist.
 * Returns 0 with *next_utc_s set; -ENOENT when nothing fires within CRON_HORIZON_S or
 * before year 10000, or for after_utc_s outside years 1-9999 (*next_utc_s untouched). */
int cron_next(const struct cron *c, const struct cron_tz *z, int64_t after_utc_s,
              int64_t *next_utc_s);

/* The next n firings (n <= CRON_NEXT_MAX) after after_utc_s into ret[], ascending. Returns
 * how many it found (fewer than n only when the search ran out), or -EINVAL for n out of
 * range. */
int cron_next_n(const struct cron *c, const struct cron_tz *z, int64_t after_utc_s, int n,
                int64_t *ret);
