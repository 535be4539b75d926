/* cron-tz.c: TZif v2+ files and their POSIX TZ footer rule (RFC 8536), cached.
 *
 * Locking: the cache list is guarded by cache_lock; a zone is fully built before it is linked
 * into the list and never changes afterwards, so readers of a zone need no lock. */
#include "server/cron-tz.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

#define ZONEINFO_DIR  "/usr/share/zoneinfo"
#define TZIF_MAX_SIZE (512 * 1024) /* the largest Debian zone file is under 4 KiB */
#define OFFSET_MAX    (26 * 3600)  /* RFC 8536: |utoff| <= 25:59:59 */
#define POSIX_TZ_MAX  128
#define YEAR1_UTC     INT64_C(-62135596800) /* 0001-01-01T00:00:00Z */
#define YEAR9999_UTC  INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

/* A POSIX TZ rule date: Jn (1-365, no 29 Feb), n (0-365) or Mm.w.d. */
struct rule_date {
    char kind; /* 'J', 'D' (zero-based n) or 'M' */
    int n, m, w, d;
    int32_t time; /* seconds after local midnight, may be negative or past 24h */
};

/* The footer: standard offset, and when has_dst, the DST offset and its start and end. */
struct posix_tz {
    int32_t std_off, dst_off; /* seconds east */
    bool has_dst;
    struct rule_date start, end;
};

struct cron_tz {
    struct cron_tz *next; /* cache list */
    char name[CRON_TZ_NAME_MAX + 1];
    int64_t *trans;     /* ascending transition instants */
    int32_t *trans_off; /* offset from trans[i] on */
    size_t ntrans;
    int32_t first_off; /* before trans[0] (time type 0) */
    bool has_footer;
    struct posix_tz footer;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cron_tz *cache;

int64_t cron_tz_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Howard Hinnant's days_from_civil / civil_from_days. */
int64_t cron_tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = cron_tz_floordiv(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void cron_tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468;
    int64_t era = cron_tz_floordiv(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int cron_tz_days_in_month(int64_t y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : mdays[m - 1];
}

/* --- POSIX TZ strings (the footer) --- */

/* [+-]hh[:mm[:ss]] into seconds; hours up to max_h. */
static const char *parse_hms(const char *p, int max_h, int32_t *ret)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    int32_t v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        if (*p < '0' || *p > '9')
            return NULL;
        int n = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            n = n * 10 + (*p++ - '0');
            digits++;
        }
        if (n > (i == 0 ? max_h : 59))
            return NULL;
        v[i] = n;
    }
    *ret = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return p;
}

/* An abbreviation: 3+ letters, or <...> with letters, digits, '+' and '-'. */
static const char *parse_abbr(const char *p)
{
    const char *s = p;
    if (*p == '<') {
        while (*++p && *p != '>')
            if (!(*p == '+' || *p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= 'a' && *p <= 'z')))
                return NULL;
        return *p == '>' && p - s >= 4 ? p + 1 : NULL;
    }
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - s >= 3 ? p : NULL;
}

static const char *parse_int(const char *p, int lo, int hi, int *ret)
{
    int n = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) {
        n = n * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || n < lo || n > hi)
        return NULL;
    *ret = n;
    return p;
}

static const char *parse_rule_date(const char *p, struct rule_date *r)
{
    r->time = 7200; /* POSIX default: 02:00 */
    if (*p == 'M') {
        r->kind = 'M';
        if (!(p = parse_int(p + 1, 1, 12, &r->m)) || *p++ != '.' ||
            !(p = parse_int(p, 1, 5, &r->w)) || *p++ != '.' || !(p = parse_int(p, 0, 6, &r->d)))
            return NULL;
    } else if (*p == 'J') {
        r->kind = 'J';
        if (!(p = parse_int(p + 1, 1, 365, &r->n)))
            return NULL;
    } else {
        r->kind = 'D';
        if (!(p = parse_int(p, 0, 365, &r->n)))
            return NULL;
    }
    if (*p == '/' && !(p = parse_hms(p + 1, 167, &r->time))) /* RFC 8536 allows -167..167 */
        return NULL;
    return p;
}

/* "CET-1CEST,M3.5.0,M10.5.0/3", "<+0530>-5:30", "UTC0". POSIX offsets count west, ours east. */
static int posix_tz_parse(const char *s, struct posix_tz *ret)
{
    struct posix_tz tz = {0};
    int32_t v;
    const char *p = parse_abbr(s);
    if (!p || !(p = parse_hms(p, 24, &v)))
        return -EBADMSG;
    tz.std_off = -v;
    if (*p) {
        if (!(p = parse_abbr(p)))
            return -EBADMSG;
        tz.has_dst = true;
        tz.dst_off = tz.std_off + 3600;
        if (*p && *p != ',') {
            if (!(p = parse_hms(p, 24, &v)))
                return -EBADMSG;
            tz.dst_off = -v;
        }
        /* A footer always carries its rules (a bare "EST5EDT" would need posixrules). */
        if (*p++ != ',' || !(p = parse_rule_date(p, &tz.start)) || *p++ != ',' ||
            !(p = parse_rule_date(p, &tz.end)))
            return -EBADMSG;
    }
    if (*p)
        return -EBADMSG;
    *ret = tz;
    return 0;
}

/* The instant a rule date happens in year y, its time read at offset off. */
static int64_t rule_instant(const struct rule_date *r, int64_t y, int32_t off)
{
    int64_t day;
    if (r->kind == 'J')
        day = cron_tz_days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    else if (r->kind == 'D')
        day = cron_tz_days_from_civil(y, 1, 1) + r->n;
    else {
        int64_t first = cron_tz_days_from_civil(y, r->m, 1);
        int wday1 = (int)((first % 7 + 11) % 7); /* 1970-01-01 was a Thursday (4) */
        int mday = 1 + (r->d - wday1 + 7) % 7 + (r->w - 1) * 7;
        if (mday > cron_tz_days_in_month(y, r->m))
            mday -= 7;
        day = first + mday - 1;
    }
    return day * 86400 + r->time - off;
}

/* The footer's transitions in years y-1..y+1, ascending: at[i] switches to off[i]. */
static int footer_transitions(const struct posix_tz *f, int64_t y, int64_t at[6], int32_t off[6])
{
    int n = 0;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        /* DST starts at a time read in standard time, ends at one read in DST. */
        at[n] = rule_instant(&f->start, yy, f->std_off);
        off[n++] = f->dst_off;
        at[n] = rule_instant(&f->end, yy, f->dst_off);
        off[n++] = f->std_off;
    }
    for (int i = 1; i < n; i++) /* insertion sort: southern zones end DST before they start */
        for (int j = i; j > 0 && at[j - 1] > at[j]; j--) {
            int64_t ta = at[j];
            int32_t to = off[j];
            at[j] = at[j - 1], off[j] = off[j - 1];
            at[j - 1] = ta, off[j - 1] = to;
        }
    return n;
}

static int64_t year_of(int64_t t)
{
    int64_t y;
    int m, d;
    cron_tz_civil_from_days(cron_tz_floordiv(t, 86400), &y, &m, &d);
    return y;
}

/* Span of the footer rule around utc, which is at or after lo (the last explicit transition,
 * from which lo_off is in force; lo_prev before it). INT64_MIN for lo: the rule alone. */
static void footer_span(const struct cron_tz *z, int64_t utc, int64_t lo, int32_t lo_off,
                        int32_t lo_prev, int64_t *start, int64_t *end, int32_t *off,
                        int32_t *prev_off)
{
    const struct posix_tz *f = &z->footer;
    *start = lo, *end = INT64_MAX, *off = lo_off, *prev_off = lo_prev;
    if (!f->has_dst) {
        if (lo == INT64_MIN)
            *off = *prev_off = f->std_off;
        return;
    }
    int64_t at[6];
    int32_t to[6];
    /* Clamped to years 1-9999 so the calendar arithmetic cannot overflow; past the ends the
     * nearest year's rule holds. */
    int64_t y = year_of(utc < YEAR1_UTC ? YEAR1_UTC : utc > YEAR9999_UTC ? YEAR9999_UTC : utc);
    int n = footer_transitions(f, y, at, to);
    if (lo == INT64_MIN) /* the rule repeats yearly: before the first, the last is in force */
        *off = *prev_off = to[n - 1];
    for (int i = 0; i < n; i++) {
        if (at[i] > utc) {
            *end = at[i];
            break;
        }
        if (at[i] > lo) {
            *start = at[i];
            *prev_off = *off;
            *off = to[i];
        }
    }
}

void cron_tz_span(const struct cron_tz *z, int64_t utc, int64_t *start, int64_t *end, int32_t *off,
                  int32_t *prev_off)
{
    size_t n = z->ntrans;
    if (n == 0 && z->has_footer) {
        footer_span(z, utc, INT64_MIN, 0, 0, start, end, off, prev_off);
        return;
    }
    if (n == 0 || utc < z->trans[0]) {
        *start = INT64_MIN, *end = n ? z->trans[0] : INT64_MAX;
        *off = *prev_off = z->first_off;
        return;
    }
    size_t lo = 0, hi = n; /* the last trans[i] <= utc */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= utc)
            lo = mid;
        else
            hi = mid;
    }
    int32_t before = lo > 0 ? z->trans_off[lo - 1] : z->first_off;
    if (lo == n - 1 && z->has_footer) {
        footer_span(z, utc, z->trans[lo], z->trans_off[lo], before, start, end, off, prev_off);
        return;
    }
    *start = z->trans[lo];
    *end = lo + 1 < n ? z->trans[lo + 1] : INT64_MAX;
    *off = z->trans_off[lo];
    *prev_off = before;
}

int32_t cron_tz_offset(const struct cron_tz *z, int64_t utc)
{
    int64_t start, end;
    int32_t off, prev;
    cron_tz_span(z, utc, &start, &end, &off, &prev);
    return off;
}

int cron_tz_from_local(const struct cron_tz *z, int64_t wall, int64_t ret[2])
{
    /* Every instant with this wall time lies within OFFSET_MAX of it: try each offset in
     * force in that window and keep the instants that really have it. */
    int n = 0;
    int64_t t = wall - OFFSET_MAX;
    while (t <= wall + OFFSET_MAX) {
        int64_t start, end;
        int32_t off, prev;
        cron_tz_span(z, t, &start, &end, &off, &prev);
        int64_t u = wall - off;
        if (u >= start && u < end && u >= wall - OFFSET_MAX && u <= wall + OFFSET_MAX &&
            (n == 0 || ret[n - 1] != u) && n < 2)
            ret[n++] = u;
        if (end == INT64_MAX)
            break;
        t = end;
    }
    if (n == 2 && ret[0] > ret[1]) {
        int64_t x = ret[0];
        ret[0] = ret[1], ret[1] = x;
    }
    return n;
}

const char *cron_tz_name(const struct cron_tz *z)
{
    return z->name;
}

/* --- TZif --- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static void zone_free(struct cron_tz *z)
{
    if (!z)
        return;
    free(z->trans);
    free(z->trans_off);
    free(z);
}

/* The counts of a TZif header at p (44 bytes), and the size of the data block that follows
 * for times of tsize bytes. */
static int tzif_header(const unsigned char *p, size_t len, size_t tsize, uint32_t cnt[6],
                       size_t *block)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -EBADMSG;
    for (int i = 0; i < 6; i++) {
        cnt[i] = be32(p + 20 + 4 * i);
        if (cnt[i] > 100000)
            return -EBADMSG;
    }
    /* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
    *block = (size_t)cnt[3] * tsize + cnt[3] + (size_t)cnt[4] * 6 + cnt[5] +
             (size_t)cnt[2] * (tsize + 4) + cnt[1] + cnt[0];
    return 44 + *block <= len ? 0 : -EBADMSG;
}

static int tzif_parse(const unsigned char *buf, size_t len, struct cron_tz *z)
{
    uint32_t cnt[6];
    size_t block;
    if (tzif_header(buf, len, 4, cnt, &block) < 0 || buf[4] < '2')
        return -EBADMSG; /* version 1 files have no 64-bit data and no footer */
    const unsigned char *p = buf + 44 + block;
    len -= 44 + block;
    if (tzif_header(p, len, 8, cnt, &block) < 0)
        return -EBADMSG;
    uint32_t timecnt = cnt[3], typecnt = cnt[4];
    if (typecnt == 0 || cnt[2] != 0) /* leap-second ("right/") zones count TAI, not UTC */
        return -EBADMSG;
    const unsigned char *times = p + 44, *idx = times + (size_t)timecnt * 8;
    const unsigned char *types = idx + timecnt;
    int32_t offs[256];
    if (typecnt > 256)
        return -EBADMSG;
    for (uint32_t i = 0; i < typecnt; i++) {
        offs[i] = (int32_t)be32(types + 6 * i);
        if (offs[i] <= -OFFSET_MAX || offs[i] >= OFFSET_MAX)
            return -EBADMSG;
    }
    z->first_off = offs[0];
    if (timecnt) {
        z->trans = calloc(timecnt, sizeof(*z->trans));
        z->trans_off = calloc(timecnt, sizeof(*z->trans_off));
        if (!z->trans || !z->trans_off)
            return -ENOMEM;
    }
    for (uint32_t i = 0; i < timecnt; i++) {
        z->trans[i] = be64(times + 8 * i);
        if (idx[i] >= typecnt || (i > 0 && z->trans[i] <= z->trans[i - 1]))
            return -EBADMSG;
        z->trans_off[i] = offs[idx[i]];
    }
    z->ntrans = timecnt;
    /* The footer: "\n<POSIX TZ>\n", possibly empty. */
    const unsigned char *f = p + 44 + block, *end = p + len;
    if (f >= end || *f != '\n')
        return -EBADMSG;
    const unsigned char *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
    if (!nl || nl - f - 1 > POSIX_TZ_MAX)
        return -EBADMSG;
    if (nl - f - 1 > 0) {
        char s[POSIX_TZ_MAX + 1];
        memcpy(s, f + 1, (size_t)(nl - f - 1));
        s[nl - f - 1] = '\0';
        if (posix_tz_parse(s, &z->footer) < 0)
            return -EBADMSG;
        z->has_footer = true;
    }
    return 0;
}

static bool name_valid(const char *name)
{
    size_t len = strnlen(name, CRON_TZ_NAME_MAX + 1);
    if (len == 0 || len > CRON_TZ_NAME_MAX || name[0] == '/' || name[len - 1] == '/' ||
        strstr(name, "..") || strstr(name, "//"))
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '+' || *p == '-' || *p == '/'))
            return false;
    /* Every IANA name starts with a capital; this keeps out "localtime" (the host's zone),
     * "posixrules" and the "posix/" and "right/" copies. */
    return name[0] >= 'A' && name[0] <= 'Z';
}

static int zone_load(const char *name, struct cron_tz **ret, char *err, size_t errlen)
{
    struct cron_tz *z = calloc(1, sizeof(*z));
    if (!z)
        return -ENOMEM;
    memcpy(z->name, name, strlen(name) + 1);
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
        *ret = z; /* no transitions, offset 0 */
        return 0;
    }
    char path[sizeof(ZONEINFO_DIR) + CRON_TZ_NAME_MAX + 2];
    snprintf(path, sizeof(path), "%s/%s", ZONEINFO_DIR, name);
    _cleanup_free_ unsigned char *buf = NULL;
    int r = -ENOENT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto fail;
    r = -EBADMSG;
    if (st.st_size < 44 || st.st_size > TZIF_MAX_SIZE)
        goto fail;
    r = -ENOMEM;
    if (!(buf = malloc((size_t)st.st_size)))
        goto fail;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = -EBADMSG;
            goto fail;
        }
        got += (size_t)n;
    }
    r = tzif_parse(buf, got, z);
    if (r < 0)
        goto fail;
    close(fd);
    *ret = z;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    zone_free(z);
    if (r == -ENOENT)
        snprintf(err, errlen, "unknown time zone \"%s\"", name);
    else if (r == -EBADMSG)
        snprintf(err, errlen, "time zone \"%s\": not a valid TZif v2+ file", name);
    else
        snprintf(err, errlen, "time zone \"%s\": out of memory", name);
    return r;
}

int cron_tz_get(const char *name, const struct cron_tz **ret, char *err, size_t errlen)
{
    if (!name || !name_valid(name)) {
        snprintf(err, errlen,
                 "malformed time zone name: expected an IANA name such as \"Europe/Berlin\"");
        return -EINVAL;
    }
    pthread_mutex_lock(&cache_lock);
    struct cron_tz *z;
    for (z = cache; z; z = z->next)
        if (strcmp(z->name, name) == 0)
            break;
    int r = 0;
    if (!z) { /* loading under the lock: rare, and no one waits on a half-loaded zone */
        r = zone_load(name, &z, err, errlen);
        if (r == 0) {
            z->next = cache;
            cache = z;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    if (r == 0)
        *ret = z;
    return r;
}

void cron_tz_cache_free(void)
{
    pthread_mutex_lock(&cache_lock);
    while (cache) {
        struct cron_tz *z = cache;
        cache = z->next;
        zone_free(z);
    }
    pthread_mutex_unlock(&cache_lock);
}
