/* clock.h: monotonic and wall-clock time, RFC 3339 formatting and parsing. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t clock_mono_ns(void);
/* *ts = now on clock clk (CLOCK_MONOTONIC, CLOCK_REALTIME) plus ms milliseconds: an
 * absolute deadline for pthread_cond_timedwait() and the like. */
void clock_deadline(clockid_t clk, int64_t ms, struct timespec *ts);
/* The clock pthread condition variables wait on (pthread_condattr_setclock() and the
 * deadline given to pthread_cond_timedwait()): CLOCK_MONOTONIC, except on Windows, where
 * winpthreads' condition variables know only CLOCK_REALTIME. */
#ifdef _WIN32
#define CLOCK_COND CLOCK_REALTIME
#else
#define CLOCK_COND CLOCK_MONOTONIC
#endif

/* CLOCK_REALTIME in milliseconds since the Unix epoch. */
int64_t clock_real_ms(void);

#define CLOCK_RFC3339_LEN 32 /* enough for "2026-11-22T05:35:10.123Z" plus NUL */

/* Format ms since epoch as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ". Returns 0 or -ENOSPC. */
int clock_format_rfc3339(int64_t ms, char *buf, size_t len);

/* Parse RFC 3339 ("2026-11-22T05:35:10Z", "…10.5+02:00", fractional seconds to ns
 * precision are accepted and truncated to ms). Returns 0 or -EINVAL; *ret untouched on
 * failure. */
int clock_parse_rfc3339(const char *s, int64_t *ret);
