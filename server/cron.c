/* cron.c: cron expressions (Vixie/cronie syntax) and their next firing in a time zone.
 *
 * The search walks the zone's spans of constant UTC offset (cron-tz.h) from the given
 * instant, and within each span looks for the first matching wall-clock minute, so a DST
 * change is only ever a span boundary: that is where the gap and repeat rules of cron.h
 * apply. */
#include "server/cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define ALL_HOURS ((UINT32_C(1) << 24) - 1)
#define UTC_MAX   INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define UTC_MIN   INT64_C(-62135596800) /* 0001-01-01T00:00:00Z */
#define FIELD_MAX (CRON_EXPR_MAX + 1)

/* The five fields, as a table: position, name, bounds, and the names a value may take. */
struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] is value lo + i, or NULL */
};

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                          "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const wday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},           {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},     {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, wday_names}, /* 7 is Sunday too */
};

static const struct {
    const char *name, *expr;
} shortcuts[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

#define FIELD_ERR(...)                                                                             \
    do {                                                                                           \
        int _n = snprintf(err, errlen, "field %d (%s): ", idx + 1, f->name);                       \
        if (_n >= 0 && (size_t)_n < errlen)                                                        \
            snprintf(err + _n, errlen - (size_t)_n, __VA_ARGS__);                                  \
        return -EINVAL;                                                                            \
    } while (0)

/* One value of field idx: a number or (month, weekday) a three-letter name. */
static int parse_value(int idx, const char **pp, int *ret, char *err, size_t errlen)
{
    const struct field *f = &fields[idx];
    const char *p = *pp;
    if (isdigit((unsigned char)*p)) {
        int n = 0, digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (++digits > 3)
                FIELD_ERR("%.4s... is out of range %d-%d", *pp, f->lo, f->hi);
            n = n * 10 + (*p++ - '0');
        }
        if (n < f->lo || n > f->hi)
            FIELD_ERR("%d is out of range %d-%d", n, f->lo, f->hi);
        *pp = p, *ret = n;
        return 0;
    }
    size_t len = 0;
    while (isalpha((unsigned char)p[len]))
        len++;
    if (len == 0)
        FIELD_ERR("expected a number%s at \"%.16s\"", f->names ? " or a name" : "", p);
    for (int i = 0; f->names && f->names[i]; i++)
        if (len == 3 && strncasecmp(p, f->names[i], 3) == 0) {
            *pp = p + 3, *ret = f->lo + i;
            return 0;
        }
    if (f->names)
        FIELD_ERR("\"%.*s\" is not a number or a %s name", (int)(len > 16 ? 16 : len), p,
                  idx == 3 ? "month (JAN-DEC)" : "weekday (SUN-SAT)");
    FIELD_ERR("\"%.*s\" is not a number", (int)(len > 16 ? 16 : len), p);
}

/* A comma-separated list of *, n, a-b, each optionally /step. Sets bits lo..hi of *mask. */
static int parse_field(int idx, const char *s, uint64_t *mask, char *err, size_t errlen)
{
    const struct field *f = &fields[idx];
    const char *p = s;
    uint64_t m = 0;
    for (;;) {
        int a, b, step = 1, r;
        bool single = false;
        if (*p == ',' || *p == '\0')
            FIELD_ERR("empty list item in \"%s\"", s);
        if (*p == '*') {
            a = f->lo, b = idx == 4 ? 6 : f->hi;
            p++;
        } else {
            if ((r = parse_value(idx, &p, &a, err, errlen)) < 0)
                return r;
            b = a;
            single = *p != '-';
            if (*p == '-') {
                p++;
                if ((r = parse_value(idx, &p, &b, err, errlen)) < 0)
                    return r;
                if (b < a)
                    FIELD_ERR("range %d-%d is backwards", a, b);
            }
        }
        if (*p == '/') {
            p++;
            if (!isdigit((unsigned char)*p))
                FIELD_ERR("expected a step number after \"/\"");
            step = 0;
            for (int digits = 0; isdigit((unsigned char)*p); p++)
                if (++digits <= 3)
                    step = step * 10 + (*p - '0');
                else
                    step = f->hi + 1;
            if (step < 1 || step > f->hi)
                FIELD_ERR("step %d is out of range 1-%d", step, f->hi);
            if (single)
                FIELD_ERR("a step needs a range or *: write %d-%d/%d", a, f->hi, step);
        }
        for (int v = a; v <= b; v += step)
            m |= UINT64_C(1) << v;
        if (*p == '\0')
            break;
        if (*p != ',')
            FIELD_ERR("unexpected \"%c\" in \"%s\"", *p, s);
        p++;
    }
    *mask = m;
    return 0;
}

/* Whether some selected month has some selected day of month (29 February counts). */
static bool day_exists(uint32_t mday, uint16_t month)
{
    for (int m = 1; m <= 12; m++)
        if (month >> m & 1)
            for (int d = 1; d <= cron_tz_days_in_month(2000, m); d++) /* 2000: a leap year */
                if (mday >> d & 1)
                    return true;
    return false;
}

static int parse_fields(const char *expr, struct cron *ret, char *err, size_t errlen)
{
    char buf[FIELD_MAX];
    const char *p = expr;
    uint64_t mask[5];
    bool star[5];
    int n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, " \t");
        if (n == 5) {
            snprintf(err, errlen,
                     "expected 5 fields (minute hour day-of-month month day-of-week), got more");
            return -EINVAL;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        star[n] = buf[0] == '*';
        int r = parse_field(n, buf, &mask[n], err, errlen);
        if (r < 0)
            return r;
        n++;
        p += len;
    }
    if (n != 5) {
        snprintf(err, errlen,
                 "expected 5 fields (minute hour day-of-month month day-of-week), got %d", n);
        return -EINVAL;
    }
    struct cron c = {
        .minute = mask[0],
        .hour = (uint32_t)mask[1],
        .mday = (uint32_t)mask[2],
        .month = (uint16_t)mask[3],
        .wday = (uint8_t)((mask[4] | mask[4] >> 7) & 0x7f), /* 7 is Sunday */
        .mday_star = star[2],
        .wday_star = star[4],
    };
    /* Day-of-month and day-of-week are ANDed when either starts with '*': then the day must
     * exist in a selected month. (ORed, any weekday comes round every week.) */
    if ((c.mday_star || c.wday_star) && !day_exists(c.mday, c.month)) {
        snprintf(err, errlen,
                 "never fires: no selected month (field 4) has a selected day "
                 "of the month (field 3)");
        return -EINVAL;
    }
    *ret = c;
    return 0;
}

int cron_parse(const char *expr, struct cron *ret, char *err, size_t errlen)
{
    if (!expr || strnlen(expr, CRON_EXPR_MAX + 1) > CRON_EXPR_MAX) {
        snprintf(err, errlen, "expression longer than %d bytes", CRON_EXPR_MAX);
        return -EINVAL;
    }
    for (const char *p = expr; *p; p++)
        if (!isprint((unsigned char)*p) && *p != '\t') {
            snprintf(err, errlen, "expression contains a control or non-ASCII character");
            return -EINVAL;
        }
    const char *p = expr + strspn(expr, " \t");
    if (*p == '@') {
        size_t len = strcspn(p, " \t");
        if (p[len + strspn(p + len, " \t")] == '\0')
            for (size_t i = 0; i < sizeof(shortcuts) / sizeof(shortcuts[0]); i++)
                if (strlen(shortcuts[i].name) == len && strncasecmp(p, shortcuts[i].name, len) == 0)
                    return parse_fields(shortcuts[i].expr, ret, err, errlen);
        snprintf(err, errlen,
                 "unknown shortcut \"%.*s\": expected @yearly, @annually, @monthly, @weekly, "
                 "@daily, @midnight or @hourly",
                 (int)(len > 32 ? 32 : len), p);
        return -EINVAL;
    }
    return parse_fields(p, ret, err, errlen);
}

/* Vixie cron: both fields restricted, either may match; else both must. */
static bool day_matches(const struct cron *c, int d, int wday)
{
    bool md = c->mday >> d & 1, wd = c->wday >> wday & 1;
    return c->mday_star || c->wday_star ? md && wd : md || wd;
}

/* The first matching wall-clock minute in [from, until) (from rounded up to a minute). */
static bool wall_next(const struct cron *c, int64_t from, int64_t until, int64_t *ret)
{
    int64_t s = cron_tz_floordiv(from + 59, 60) * 60;
    while (s < until) {
        int64_t days = cron_tz_floordiv(s, 86400), y;
        int sod = (int)(s - days * 86400), m, d;
        int h = sod / 3600, mi = sod / 60 % 60;
        cron_tz_civil_from_days(days, &y, &m, &d);
        if (!(c->month >> m & 1)) {
            s = (days - d + 1 + cron_tz_days_in_month(y, m)) * 86400;
            continue;
        }
        int wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
        if (!day_matches(c, d, wday)) {
            s = (days + 1) * 86400;
            continue;
        }
        if (!(c->hour >> h & 1)) {
            s = days * 86400 + (h + 1) * 3600;
            continue;
        }
        uint64_t rest = c->minute & (~UINT64_C(0) << mi);
        if (!rest) {
            s = days * 86400 + (h + 1) * 3600;
            continue;
        }
        s += (__builtin_ctzll(rest) - mi) * 60;
        if (s >= until)
            break;
        *ret = s;
        return true;
    }
    return false;
}

int cron_next(const struct cron *c, const struct cron_tz *z, int64_t after_utc_s,
              int64_t *next_utc_s)
{
    if (after_utc_s < UTC_MIN || after_utc_s >= UTC_MAX)
        return -ENOENT;
    bool every_hour = (c->hour & ALL_HOURS) == ALL_HOURS;
    int64_t t = after_utc_s + 1;
    int64_t limit = after_utc_s + CRON_HORIZON_S < UTC_MAX ? after_utc_s + CRON_HORIZON_S : UTC_MAX;
    while (t <= limit) {
        int64_t start, end, w;
        int32_t off, prev;
        cron_tz_span(z, t, &start, &end, &off, &prev);
        int64_t from = t + off;
        /* Spring forward at start: the wall times [start + prev, start + off) do not exist.
         * A schedule tied to the clock fires once, at the first instant after the gap; one
         * that fires every hour follows real time and loses nothing (see cron.h). */
        if (t == start && off > prev && !every_hour &&
            wall_next(c, start + prev, start + off, &w)) {
            *next_utc_s = start;
            return 0;
        }
        /* Fall back at start: [start + off, start + prev) comes round a second time; only
         * schedules that fire every hour fire again. */
        if (off < prev && !every_hour && from < start + prev)
            from = start + prev;
        int64_t stop = end > limit ? limit + 1 : end;
        if (wall_next(c, from, stop + off, &w)) {
            *next_utc_s = w - off;
            return 0;
        }
        if (end > limit)
            break;
        t = end;
    }
    return -ENOENT;
}

int cron_next_n(const struct cron *c, const struct cron_tz *z, int64_t after_utc_s, int n,
                int64_t *ret)
{
    if (n < 0 || n > CRON_NEXT_MAX)
        return -EINVAL;
    int i;
    for (i = 0; i < n; i++) {
        if (cron_next(c, z, after_utc_s, &ret[i]) < 0)
            break;
        after_utc_s = ret[i];
    }
    return i;
}
