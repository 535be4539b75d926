/* metrics.c: the registry and text exposition of metrics.h.
 *
 * Locking: a family's series live in one array allocated at registration. nseries is
 * published with release order after a series is filled, so a reader that loads it with
 * acquire order and scans below it sees complete label values without a lock; the family's
 * mutex only serialises creation. Values are atomics: a counter or a histogram bucket an
 * integer, a gauge or a histogram's sum a double's bits updated by compare-and-swap. A
 * histogram's _count is the total of its buckets as read, so a scrape racing an
 * observation still shows +Inf equal to _count. */
#include "server/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics_series {
    const struct metrics_family *f;
    char values[METRICS_MAX_LABELS][METRICS_LABEL_VALUE_MAX + 1];
    enum metrics_type type;
    atomic_uint_fast64_t count; /* counters: metrics_counter_add()'s */
    /* gauges: the value; histograms: the sum; counters: metrics_counter_set()'s (double
     * bits) */
    atomic_uint_fast64_t bits;
    /* histograms: observations per bucket (not cumulative), the last one past every bound */
    atomic_uint_fast64_t buckets[METRICS_MAX_BUCKETS + 1];
};

struct metrics_family {
    struct metrics_family *next;
    enum metrics_type type;
    const char *name;
    const char *help;
    const char *labels[METRICS_MAX_LABELS];
    size_t nlabels;
    double bounds[METRICS_MAX_BUCKETS];
    size_t nbounds;
    size_t max_series;
    struct metrics_series *series; /* max_series + 1: the last is the overflow series */
    /* The series by their label values, so finding one costs a hash and a probe or two
     * however many a family holds: open addressing over a power of two of slots at least
     * twice max_series (so a probe always ends on an empty slot), each holding a series'
     * index + 1, 0 when empty. Filled under lock, after the series' values are written, and
     * read without (release/acquire). NULL for a family without labels. */
    atomic_uint_fast32_t *slots;
    size_t slot_mask;
    atomic_size_t nseries;
    atomic_bool overflowed;
    pthread_mutex_t lock; /* creation of series */
};

struct metrics_registry {
    pthread_mutex_t lock; /* scrapes */
    struct metrics_family *head, *tail;
};

int metrics_registry_new(struct metrics_registry **ret)
{
    struct metrics_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    *ret = r;
    return 0;
}

void metrics_registry_free(struct metrics_registry *r)
{
    if (!r)
        return;
    for (struct metrics_family *f = r->head, *next; f; f = next) {
        next = f->next;
        pthread_mutex_destroy(&f->lock);
        free(f->slots);
        free(f->series);
        free(f);
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static bool name_ok(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                     (colon && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static uint64_t dbits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

/* Copy at most METRICS_LABEL_VALUE_MAX bytes of src, not cutting a UTF-8 sequence. */
static void value_copy(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n > METRICS_LABEL_VALUE_MAX) {
        n = METRICS_LABEL_VALUE_MAX;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void series_init(struct metrics_series *s, const struct metrics_family *f)
{
    s->f = f;
    s->type = f->type;
    atomic_init(&s->count, 0);
    atomic_init(&s->bits, dbits(0.0));
    for (size_t i = 0; i <= METRICS_MAX_BUCKETS; i++)
        atomic_init(&s->buckets[i], 0);
}

int metrics_family_new(struct metrics_registry *r, enum metrics_type type, const char *name,
                       const char *help, const char *const *labels, size_t max_series,
                       const double *buckets, size_t nbuckets, struct metrics_family **ret)
{
    if (!name_ok(name, true) || !help || max_series < 1 || max_series > 100000)
        return -EINVAL;
    size_t nlabels = 0;
    while (labels && labels[nlabels]) {
        const char *l = labels[nlabels];
        if (nlabels == METRICS_MAX_LABELS || !name_ok(l, false) || strncmp(l, "__", 2) == 0 ||
            (type == METRICS_HISTOGRAM && strcmp(l, "le") == 0))
            return -EINVAL;
        nlabels++;
    }
    if (nlabels == 0 && max_series != 1)
        return -EINVAL;
    if (type == METRICS_HISTOGRAM) {
        if (!buckets || nbuckets < 1 || nbuckets > METRICS_MAX_BUCKETS)
            return -EINVAL;
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                return -EINVAL;
    } else if (nbuckets != 0) {
        return -EINVAL;
    }
    for (struct metrics_family *f = r->head; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return -EEXIST;

    struct metrics_family *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->series = calloc(max_series + 1, sizeof(*f->series));
    size_t nslots = 4;
    while (nslots < 2 * max_series)
        nslots *= 2;
    f->slots = nlabels ? calloc(nslots, sizeof(*f->slots)) : NULL;
    if (!f->series || (nlabels && !f->slots)) {
        free(f->slots);
        free(f->series);
        free(f);
        return -ENOMEM;
    }
    f->slot_mask = nslots - 1;
    for (size_t i = 0; f->slots && i < nslots; i++)
        atomic_init(&f->slots[i], 0);
    f->type = type;
    f->name = name;
    f->help = help;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        f->labels[i] = labels[i];
    f->nbounds = type == METRICS_HISTOGRAM ? nbuckets : 0;
    for (size_t i = 0; i < f->nbounds; i++)
        f->bounds[i] = buckets[i];
    f->max_series = max_series;
    atomic_init(&f->nseries, 0);
    atomic_init(&f->overflowed, false);
    pthread_mutex_init(&f->lock, NULL);
    for (size_t i = 0; i <= max_series; i++)
        series_init(&f->series[i], f);
    struct metrics_series *over = &f->series[max_series];
    for (size_t i = 0; i < nlabels; i++)
        value_copy(over->values[i], METRICS_OVERFLOW);

    if (r->tail)
        r->tail->next = f;
    else
        r->head = f;
    r->tail = f;
    *ret = f;
    return 0;
}

static bool series_is(const struct metrics_series *s, size_t nlabels,
                      char want[][METRICS_LABEL_VALUE_MAX + 1])
{
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(s->values[i], want[i]) != 0)
            return false;
    return true;
}

/* FNV-1a over the values, each with its terminating NUL (so "a","bc" and "ab","c" differ). */
static uint64_t series_hash(size_t nlabels, char want[][METRICS_LABEL_VALUE_MAX + 1])
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < nlabels; i++) {
        const unsigned char *p = (const unsigned char *)want[i];
        do {
            h ^= *p;
            h *= 1099511628211ull;
        } while (*p++);
    }
    return h;
}

static struct metrics_series *series_find(struct metrics_family *f, uint64_t h,
                                          char want[][METRICS_LABEL_VALUE_MAX + 1])
{
    for (size_t i = (size_t)h & f->slot_mask;; i = (i + 1) & f->slot_mask) {
        uint_fast32_t v = atomic_load_explicit(&f->slots[i], memory_order_acquire);
        if (v == 0)
            return NULL;
        if (series_is(&f->series[v - 1], f->nlabels, want))
            return &f->series[v - 1];
    }
}

/* Under f->lock. */
static void series_index(struct metrics_family *f, uint64_t h, size_t idx)
{
    size_t i = (size_t)h & f->slot_mask;
    while (atomic_load_explicit(&f->slots[i], memory_order_relaxed) != 0)
        i = (i + 1) & f->slot_mask;
    atomic_store_explicit(&f->slots[i], (uint_fast32_t)idx + 1, memory_order_release);
}

struct metrics_series *metrics_series(struct metrics_family *f, const char *const *values)
{
    if (f->nlabels == 0) {
        if (atomic_load_explicit(&f->nseries, memory_order_acquire) == 0) {
            pthread_mutex_lock(&f->lock);
            atomic_store_explicit(&f->nseries, 1, memory_order_release);
            pthread_mutex_unlock(&f->lock);
        }
        return &f->series[0];
    }
    char want[METRICS_MAX_LABELS][METRICS_LABEL_VALUE_MAX + 1];
    for (size_t i = 0; i < f->nlabels; i++)
        value_copy(want[i], values && values[i] ? values[i] : "");

    uint64_t h = series_hash(f->nlabels, want);
    struct metrics_series *s = series_find(f, h, want);
    if (s)
        return s;

    pthread_mutex_lock(&f->lock);
    size_t m = atomic_load_explicit(&f->nseries, memory_order_relaxed);
    s = series_find(f, h, want);
    if (!s && m < f->max_series) {
        s = &f->series[m];
        memcpy(s->values, want, sizeof(want));
        atomic_store_explicit(&f->nseries, m + 1, memory_order_release);
        series_index(f, h, m);
    }
    pthread_mutex_unlock(&f->lock);
    if (!s) {
        s = &f->series[f->max_series];
        atomic_store_explicit(&f->overflowed, true, memory_order_relaxed);
    }
    return s;
}

void metrics_counter_add(struct metrics_series *s, uint64_t n)
{
    if (s->type == METRICS_COUNTER)
        atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void metrics_counter_set(struct metrics_series *s, double v)
{
    if (s->type == METRICS_COUNTER)
        atomic_store_explicit(&s->bits, dbits(v), memory_order_relaxed);
}

void metrics_gauge_set(struct metrics_series *s, double v)
{
    if (s->type == METRICS_GAUGE)
        atomic_store_explicit(&s->bits, dbits(v), memory_order_relaxed);
}

static void double_add(atomic_uint_fast64_t *a, double v)
{
    uint_fast64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void metrics_gauge_add(struct metrics_series *s, double v)
{
    if (s->type == METRICS_GAUGE)
        double_add(&s->bits, v);
}

/* The bucket of v: the first whose bound is >= v (Prometheus' le), else the last. NaN
 * falls past every bound. */
static size_t bucket_of(const struct metrics_family *f, double v)
{
    size_t i = 0;
    while (i < f->nbounds && !(v <= f->bounds[i]))
        i++;
    return i;
}

void metrics_observe(struct metrics_series *s, double v)
{
    if (s->type != METRICS_HISTOGRAM)
        return;
    atomic_fetch_add_explicit(&s->buckets[bucket_of(s->f, v)], 1, memory_order_relaxed);
    double_add(&s->bits, v);
}

void metrics_inc(struct metrics_family *f, const char *const *values)
{
    metrics_counter_add(metrics_series(f, values), 1);
}

void metrics_set(struct metrics_family *f, const char *const *values, double v)
{
    metrics_gauge_set(metrics_series(f, values), v);
}

void metrics_family_clear(struct metrics_family *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = atomic_load_explicit(&f->nseries, memory_order_relaxed);
    for (size_t i = 0; i <= f->max_series; i++) {
        if (i < n || i == f->max_series)
            series_init(&f->series[i], f);
    }
    for (size_t i = 0; f->slots && i <= f->slot_mask; i++)
        atomic_store_explicit(&f->slots[i], 0, memory_order_relaxed);
    atomic_store_explicit(&f->nseries, 0, memory_order_release);
    atomic_store_explicit(&f->overflowed, false, memory_order_relaxed);
    pthread_mutex_unlock(&f->lock);
}

void metrics_lock(struct metrics_registry *r)
{
    pthread_mutex_lock(&r->lock);
}

void metrics_unlock(struct metrics_registry *r)
{
    pthread_mutex_unlock(&r->lock);
}

/* A sample value as Prometheus reads it: the shortest of %.15g and %.17g that reads back
 * the same double; NaN and infinities by name. */
static void fmt_double(char *s, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(s, n, "NaN");
    } else if (isinf(v)) {
        snprintf(s, n, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(s, n, "%.15g", v);
        if (strtod(s, NULL) != v)
            snprintf(s, n, "%.17g", v);
    }
}

static int put_double(struct buf *out, double v)
{
    char s[40];
    fmt_double(s, sizeof(s), v);
    return buf_append_str(out, s);
}

/* HELP text: backslash and newline escaped. Label values: also the double quote. */
static int put_escaped(struct buf *out, const char *s, bool quote)
{
    int r = 0;
    for (const char *p = s; *p && r == 0; p++) {
        if (*p == '\\')
            r = buf_append_str(out, "\\\\");
        else if (*p == '\n')
            r = buf_append_str(out, "\\n");
        else if (quote && *p == '"')
            r = buf_append_str(out, "\\\"");
        else
            r = buf_append(out, p, 1);
    }
    return r;
}

/* name{l1="v1",...,le="x"}: le NULL for no le label. */
static int put_name_labels(struct buf *out, const struct metrics_family *f, const char *suffix,
                           const struct metrics_series *s, const char *le)
{
    int r = buf_printf(out, "%s%s", f->name, suffix);
    if (f->nlabels == 0 && !le)
        return r;
    if (r == 0)
        r = buf_append_str(out, "{");
    for (size_t i = 0; i < f->nlabels && r == 0; i++) {
        r = buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        if (r == 0)
            r = put_escaped(out, s->values[i], true);
        if (r == 0)
            r = buf_append_str(out, "\"");
    }
    if (le && r == 0)
        r = buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    if (r == 0)
        r = buf_append_str(out, "}");
    return r;
}

static int render_series(struct buf *out, const struct metrics_family *f,
                         const struct metrics_series *s)
{
    int r;
    if (f->type == METRICS_COUNTER) {
        r = put_name_labels(out, f, "", s, NULL);
        if (r == 0)
            r = buf_printf(
                out, " %llu\n",
                (unsigned long long)atomic_load_explicit(&s->count, memory_order_relaxed));
        return r;
    }
    if (f->type == METRICS_GAUGE) {
        r = put_name_labels(out, f, "", s, NULL);
        if (r == 0)
            r = buf_append_str(out, " ");
        if (r == 0)
            r = put_double(out, bitsd(atomic_load_explicit(&s->bits, memory_order_relaxed)));
        if (r == 0)
            r = buf_append_str(out, "\n");
        return r;
    }
    uint64_t cum = 0;
    r = 0;
    for (size_t i = 0; i <= f->nbounds && r == 0; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        char le[40];
        fmt_double(le, sizeof(le), i < f->nbounds ? f->bounds[i] : INFINITY);
        r = put_name_labels(out, f, "_bucket", s, le);
        if (r == 0)
            r = buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    if (r == 0)
        r = put_name_labels(out, f, "_sum", s, NULL);
    if (r == 0)
        r = buf_append_str(out, " ");
    if (r == 0)
        r = put_double(out, bitsd(atomic_load_explicit(&s->bits, memory_order_relaxed)));
    if (r == 0)
        r = buf_append_str(out, "\n");
    if (r == 0)
        r = put_name_labels(out, f, "_count", s, NULL);
    if (r == 0)
        r = buf_printf(out, " %llu\n", (unsigned long long)cum);
    return r;
}

int metrics_render(struct metrics_registry *r, struct buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    int e = 0;
    for (const struct metrics_family *f = r->head; f && e == 0; f = f->next) {
        e = buf_printf(out, "# HELP %s ", f->name);
        if (e == 0)
            e = put_escaped(out, f->help, false);
        if (e == 0)
            e = buf_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
        size_t n = atomic_load_explicit(&f->nseries, memory_order_acquire);
        for (size_t i = 0; i < n && e == 0; i++)
            e = render_series(out, f, &f->series[i]);
        if (e == 0 && atomic_load_explicit(&f->overflowed, memory_order_relaxed))
            e = render_series(out, f, &f->series[f->max_series]);
    }
    return e;
}
