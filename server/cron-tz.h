/* cron-tz.h: IANA time zones read from the system tz database, for schedules.
 *
 * A zone is the compiled TZif file /usr/share/zoneinfo/<name> (RFC 8536, version 2 or
 * later): its 64-bit transition table, and after the last transition the POSIX TZ rule of
 * the file's footer (for example "CET-1CEST,M3.5.0,M10.5.0/3"), which is the tz database's
 * own rule for the future. No zone rule is written in this code.
 *
 * Zones are loaded once and cached for the life of the process (or until
 * cron_tz_cache_free()); lookups are thread-safe, and a loaded zone is immutable, so any
 * thread may use it without a lock. "UTC" and "Etc/UTC" are built in (they work without
 * tzdata installed).
 *
 * Times are int64 seconds: `utc` counts from the Unix epoch; `wall` is the local wall-clock
 * time counted the same way (wall = utc + offset), so calendar arithmetic on it needs no
 * zone. Offsets are seconds east of UTC (+3600 for CET). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define CRON_TZ_NAME_MAX 64 /* the longest IANA name is 32 bytes */

struct cron_tz;

/* The zone called name, loaded on first use. *ret is borrowed from the cache (never freed by
 * the caller; valid until cron_tz_cache_free()). Returns 0; -EINVAL for a malformed name
 * (only [A-Za-z0-9_+-/], starting with a capital letter, no "..", no trailing "/", no empty
 * part, at most CRON_TZ_NAME_MAX bytes); -ENOENT for a zone the tz database does not have; -EBADMSG
 * for a file that is not valid TZif v2+; -ENOMEM. On failure err says why ("unknown time zone
 * \"Mars/Base\"") and *ret is untouched. */
int cron_tz_get(const char *name, const struct cron_tz **ret, char *err, size_t errlen);

/* Free every cached zone; pointers from cron_tz_get() become invalid. For tests and exit. */
void cron_tz_cache_free(void);

/* The zone's IANA name. */
const char *cron_tz_name(const struct cron_tz *z);

/* The offset (seconds east of UTC) in force at instant utc. */
int32_t cron_tz_offset(const struct cron_tz *z, int64_t utc);

/* The span of constant offset that contains utc: [*start, *end) with offset *off; *prev_off
 * is the offset just before *start (equal to *off when nothing changed there, or when
 * *start is INT64_MIN). *end is INT64_MAX when no change follows. A span boundary may change
 * only the abbreviation or the DST flag, not the offset. */
void cron_tz_span(const struct cron_tz *z, int64_t utc, int64_t *start, int64_t *end, int32_t *off,
                  int32_t *prev_off);

/* The instants whose local time is wall: 0 in a spring-forward gap, 2 in a fall-back
 * repeat (ascending), else 1. ret[] needs room for 2. */
int cron_tz_from_local(const struct cron_tz *z, int64_t wall, int64_t ret[2]);

/* Proleptic Gregorian calendar arithmetic on day numbers (0 = 1970-01-01). */
int64_t cron_tz_days_from_civil(int64_t y, int m, int d);
void cron_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int cron_tz_days_in_month(int64_t y, int m);
/* Floor division and its remainder (>= 0), for times before the epoch. */
int64_t cron_tz_floordiv(int64_t a, int64_t b);
