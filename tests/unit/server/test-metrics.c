/* Tests for server/metrics.c: the text exposition (HELP and TYPE, escaping, cumulative
 * histogram buckets with +Inf, _sum and _count), the label cap with its "other" series,
 * the index that finds a series among thousands, registration checks, and counts that add
 * up under concurrent updates. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "server/metrics.h"

static char *render(struct metrics_registry *r)
{
    struct buf b = BUF_INIT;
    metrics_lock(r);
    cr_assert_eq(metrics_render(r, &b), 0);
    metrics_unlock(r);
    return buf_steal(&b);
}

Test(metrics, counter_and_gauge_text)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *c = NULL, *g = NULL, *e = NULL;
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "orch_things_total",
                                    "Things done.\nSecond line with a \\ backslash.",
                                    (const char *const[]){"kind", NULL}, 8, NULL, 0, &c),
                 0);
    cr_assert_eq(
        metrics_family_new(r, METRICS_GAUGE, "orch_level", "A level.", NULL, 1, NULL, 0, &g), 0);
    cr_assert_eq(
        metrics_family_new(r, METRICS_GAUGE, "orch_empty", "Never set.", NULL, 1, NULL, 0, &e), 0);
    metrics_inc(c, (const char *const[]){"a\"b\\c\nd"});
    metrics_counter_add(metrics_series(c, (const char *const[]){"a\"b\\c\nd"}), 41);
    metrics_inc(c, (const char *const[]){"plain"});
    metrics_set(g, NULL, 0.1);
    metrics_gauge_add(metrics_series(g, NULL), 2.0);
    char *text = render(r);
    cr_assert_str_eq(text, "# HELP orch_things_total Things done.\\nSecond line with a \\\\ "
                           "backslash.\n"
                           "# TYPE orch_things_total counter\n"
                           "orch_things_total{kind=\"a\\\"b\\\\c\\nd\"} 42\n"
                           "orch_things_total{kind=\"plain\"} 1\n"
                           "# HELP orch_level A level.\n"
                           "# TYPE orch_level gauge\n"
                           "orch_level 2.1\n"
                           "# HELP orch_empty Never set.\n"
                           "# TYPE orch_empty gauge\n");
    free(text);
    metrics_registry_free(r);
}

Test(metrics, histogram_buckets_are_cumulative)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *h = NULL;
    cr_assert_eq(metrics_registry_new(&r), 0);
    static const double b[] = {0.005, 0.1, 1};
    cr_assert_eq(metrics_family_new(r, METRICS_HISTOGRAM, "orch_wait_seconds", "Waits.",
                                    (const char *const[]){"route", NULL}, 4, b, 3, &h),
                 0);
    struct metrics_series *s = metrics_series(h, (const char *const[]){"/x"});
    metrics_observe(s, 0.001);
    metrics_observe(s, 0.005); /* le is inclusive */
    metrics_observe(s, 0.5);
    metrics_observe(s, 7);
    char *text = render(r);
    cr_assert_str_eq(text, "# HELP orch_wait_seconds Waits.\n"
                           "# TYPE orch_wait_seconds histogram\n"
                           "orch_wait_seconds_bucket{route=\"/x\",le=\"0.005\"} 2\n"
                           "orch_wait_seconds_bucket{route=\"/x\",le=\"0.1\"} 2\n"
                           "orch_wait_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"
                           "orch_wait_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
                           "orch_wait_seconds_sum{route=\"/x\"} 7.506\n"
                           "orch_wait_seconds_count{route=\"/x\"} 4\n");
    free(text);
    metrics_registry_free(r);
}

Test(metrics, label_sets_past_the_cap_go_to_other)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *c = NULL;
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "orch_jobs_total", "Jobs.",
                                    (const char *const[]){"tenant", "queue", NULL}, 2, NULL, 0, &c),
                 0);
    metrics_inc(c, (const char *const[]){"t1", "q"});
    metrics_inc(c, (const char *const[]){"t2", "q"});
    metrics_inc(c, (const char *const[]){"t3", "q"});
    metrics_inc(c, (const char *const[]){"t4", "q"});
    metrics_inc(c, (const char *const[]){"t1", "q"});
    char *text = render(r);
    cr_assert_str_eq(text, "# HELP orch_jobs_total Jobs.\n"
                           "# TYPE orch_jobs_total counter\n"
                           "orch_jobs_total{tenant=\"t1\",queue=\"q\"} 2\n"
                           "orch_jobs_total{tenant=\"t2\",queue=\"q\"} 1\n"
                           "orch_jobs_total{tenant=\"other\",queue=\"other\"} 2\n");
    free(text);
    /* Cleared (a scrape-time gauge family's label sets come and go). */
    metrics_lock(r);
    metrics_family_clear(c);
    metrics_unlock(r);
    metrics_inc(c, (const char *const[]){"t9", "q"});
    text = render(r);
    cr_assert(strstr(text, "orch_jobs_total{tenant=\"t9\",queue=\"q\"} 1\n"));
    cr_assert_null(strstr(text, "t1"));
    cr_assert_null(strstr(text, "other"));
    free(text);
    metrics_registry_free(r);
}

/* Many label sets (the index of series by their values): each set keeps its own series,
 * a repeat finds it again, sets that differ only in where one value ends are two, and
 * after a clear the same sets are indexed anew. */
Test(metrics, many_label_sets_each_find_their_series)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *c = NULL;
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "orch_many_total", "Many.",
                                    (const char *const[]){"a", "b", NULL}, 3000, NULL, 0, &c),
                 0);
    enum { N = 3000 };
    static struct metrics_series *got[N];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char t[16], q[16];
            snprintf(t, sizeof(t), "t%d", i / 10);
            snprintf(q, sizeof(q), "q%d", i % 10);
            struct metrics_series *s = metrics_series(c, (const char *const[]){t, q});
            if (round == 0) {
                got[i] = s;
                for (int k = 0; k < i && k < 20; k++)
                    cr_assert_neq(got[i - 1 - k], s, "set %d shares a series", i);
            } else {
                cr_assert_eq(got[i], s, "set %d found another series", i);
            }
            metrics_counter_add(s, 1);
        }
    }
    char *text = render(r);
    cr_assert(strstr(text, "orch_many_total{a=\"t299\",b=\"q9\"} 2\n"));
    cr_assert_null(strstr(text, "other"));
    free(text);
    /* "ab","c" and "a","bc": two label sets, not one. */
    metrics_lock(r);
    metrics_family_clear(c);
    metrics_unlock(r);
    struct metrics_series *x = metrics_series(c, (const char *const[]){"ab", "c"});
    struct metrics_series *y = metrics_series(c, (const char *const[]){"a", "bc"});
    cr_assert_neq(x, y);
    cr_assert_eq(metrics_series(c, (const char *const[]){"ab", "c"}), x);
    cr_assert_eq(metrics_series(c, (const char *const[]){"a", "bc"}), y);
    metrics_registry_free(r);
}

Test(metrics, long_values_are_cut_on_a_character)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *c = NULL;
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "orch_x_total", "X.",
                                    (const char *const[]){"v", NULL}, 4, NULL, 0, &c),
                 0);
    char v[200] = "";
    for (int i = 0; i < 40; i++)
        memcpy(v + 2 * i, "\xc3\xa9", 2); /* é: 64 bytes hold 32 of them */
    metrics_inc(c, (const char *const[]){v});
    char *text = render(r);
    const char *q = strchr(text + strlen("# HELP orch_x_total X.\n# TYPE"), '"');
    cr_assert_not_null(q);
    cr_assert_eq(strchr(q + 1, '"') - (q + 1), 64);
    free(text);
    metrics_registry_free(r);
}

Test(metrics, registration_is_checked)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *f = NULL;
    static const double b[] = {1, 0.5};
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "9bad", "h", NULL, 1, NULL, 0, &f),
                 -EINVAL);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "ok_total", "h",
                                    (const char *const[]){"__x", NULL}, 2, NULL, 0, &f),
                 -EINVAL);
    cr_assert_eq(metrics_family_new(r, METRICS_HISTOGRAM, "h_seconds", "h",
                                    (const char *const[]){"le", NULL}, 2, b, 1, &f),
                 -EINVAL);
    cr_assert_eq(metrics_family_new(r, METRICS_HISTOGRAM, "h_seconds", "h", NULL, 1, b, 2, &f),
                 -EINVAL);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "ok_total", "h", NULL, 1, NULL, 0, &f), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_GAUGE, "ok_total", "h", NULL, 1, NULL, 0, &f),
                 -EEXIST);
    metrics_registry_free(r);
}

struct worker {
    struct metrics_family *c, *h;
    int id;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    char name[8];
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "s%d", (i + w->id) % 5);
        metrics_inc(w->c, (const char *const[]){name});
        metrics_observe(metrics_series(w->h, NULL), 0.25);
    }
    return NULL;
}

Test(metrics, concurrent_updates_add_up)
{
    struct metrics_registry *r = NULL;
    struct metrics_family *c = NULL, *h = NULL;
    static const double b[] = {0.5};
    cr_assert_eq(metrics_registry_new(&r), 0);
    cr_assert_eq(metrics_family_new(r, METRICS_COUNTER, "orch_c_total", "C.",
                                    (const char *const[]){"s", NULL}, 3, NULL, 0, &c),
                 0);
    cr_assert_eq(
        metrics_family_new(r, METRICS_HISTOGRAM, "orch_h_seconds", "H.", NULL, 1, b, 1, &h), 0);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){c, h, i};
        cr_assert_eq(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = render(r);
    unsigned long long total = 0, v;
    for (const char *p = text; (p = strstr(p, "\norch_c_total{")); p++) {
        cr_assert_eq(sscanf(strchr(p, '}') + 1, " %llu", &v), 1);
        total += v;
    }
    cr_assert_eq(total, 80000);
    cr_assert(strstr(text, "orch_h_seconds_bucket{le=\"+Inf\"} 80000\n"));
    cr_assert(strstr(text, "orch_h_seconds_sum 20000\n"));
    cr_assert(strstr(text, "orch_h_seconds_count 80000\n"));
    free(text);
    metrics_registry_free(r);
}
