/* metrics.h: a registry of Prometheus metrics and its text exposition (format 0.0.4).
 *
 * Families are counters, gauges or histograms (fixed buckets, in seconds or another base
 * unit), each with a name, HELP text and up to METRICS_MAX_LABELS label names fixed when
 * it is registered. A family holds at most max_series label sets, allocated when it is
 * registered: the hot path (metrics_series(), metrics_counter_add(), metrics_observe())
 * never allocates. A label set past the cap is counted in the family's overflow series,
 * whose every label value is "other", so a label fed by tenants (a tenant, a queue) stays
 * bounded whatever they create. Label values are never job or agent ids.
 *
 * Threads: registration happens before the registry is shared. After that every call is
 * thread-safe: counters, gauges and histogram buckets are atomics; a family's lock is taken
 * only to create a series; metrics_render() and metrics_family_clear() are serialised by
 * the registry's lock (a scrape computes its gauges and renders under it).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define METRICS_MAX_LABELS      3
#define METRICS_MAX_BUCKETS     16
#define METRICS_LABEL_VALUE_MAX 64 /* longer values are cut (on a UTF-8 boundary) */
#define METRICS_OVERFLOW        "other"

enum metrics_type {
    METRICS_COUNTER,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
};

struct metrics_registry;
struct metrics_family;
struct metrics_series;

/* A registry. Returns 0 or -ENOMEM. Free with metrics_registry_free() (accepts NULL),
 * which frees its families and series. */
int metrics_registry_new(struct metrics_registry **ret);
void metrics_registry_free(struct metrics_registry *r);

/* Register a family. name and help are borrowed (string literals); labels is a
 * NULL-terminated list of borrowed label names (NULL = none); max_series >= 1 label sets
 * (1 for a family without labels); buckets: histograms only, nbuckets strictly increasing
 * finite upper bounds (+Inf is implicit). Returns 0 with *ret (owned by r), -EINVAL (a
 * bad name, label, bucket list or cap), -EEXIST (name taken), -ENOMEM. */
int metrics_family_new(struct metrics_registry *r, enum metrics_type type, const char *name,
                       const char *help, const char *const *labels, size_t max_series,
                       const double *buckets, size_t nbuckets, struct metrics_family **ret);

/* The series of these label values (as many as the family's labels; NULL for a family
 * without labels), created on first use; past the cap, the overflow series. Never NULL.
 * values are copied. Lock-free when the series exists. */
struct metrics_series *metrics_series(struct metrics_family *f, const char *const *values);

/* Counters: add n. Gauges: set or add to v. Histograms: observe v. Each is a no-op on a
 * series of another type. */
void metrics_counter_add(struct metrics_series *s, uint64_t n);
/* Counters kept elsewhere (the kernel's CPU time): set the value, which the source keeps
 * monotonic; it is added to what metrics_counter_add() counted. */
void metrics_counter_set(struct metrics_series *s, double v);
void metrics_gauge_set(struct metrics_series *s, double v);
void metrics_gauge_add(struct metrics_series *s, double v);
void metrics_observe(struct metrics_series *s, double v);

/* Shorthands: the series of values, then the operation. */
void metrics_inc(struct metrics_family *f, const char *const *values);
void metrics_set(struct metrics_family *f, const char *const *values, double v);

/* Forget every series of f (gauges computed at scrape, whose label sets come and go).
 * Call with the registry locked (metrics_lock()) on the scraping thread. */
void metrics_family_clear(struct metrics_family *f);

/* The registry's scrape lock: hold it while computing scrape-time gauges and rendering. */
void metrics_lock(struct metrics_registry *r);
void metrics_unlock(struct metrics_registry *r);

/* Append every family in registration order to out, in the text format 0.0.4 (HELP, TYPE,
 * samples; histograms as cumulative _bucket{le=...}, _sum, _count). Families without a
 * series are written with HELP and TYPE only. Call with metrics_lock() held. Returns 0 or
 * the buffer's error (-ENOMEM, -EMSGSIZE). */
int metrics_render(struct metrics_registry *r, struct buf *out);

/* The content type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
