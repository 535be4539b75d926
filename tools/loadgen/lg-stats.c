/* lg-stats.c: per-job times and their summary (see lg.h). An open-addressing table keyed
 * by job id: the agent side may see a job before the submitter has its id (the assignment
 * can arrive before the submission's answer), so whichever comes first makes the entry. */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char id[LG_JOB_ID_LEN]; /* "" = free */
    uint64_t submitted, assigned, completed;
};

struct lg_stats {
    struct entry *tab;
    size_t cap; /* a power of two, at least twice the jobs */
    size_t n;
    size_t nsubmitted, nassigned, ncompleted;
    uint64_t first_submit, last_assign, last_complete;
};

struct lg_stats *lg_stats_new(size_t njobs)
{
    struct lg_stats *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cap = 1024;
    while (s->cap < 2 * njobs + 16)
        s->cap *= 2;
    s->tab = calloc(s->cap, sizeof(*s->tab));
    if (!s->tab) {
        free(s);
        return NULL;
    }
    return s;
}

void lg_stats_free(struct lg_stats *s)
{
    if (!s)
        return;
    free(s->tab);
    free(s);
}

static uint64_t hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

/* The entry of id, made when absent; NULL when the table is full (more jobs than sized
 * for: they are not counted). */
static struct entry *lookup(struct lg_stats *s, const char *id)
{
    if (strlen(id) != LG_JOB_ID_LEN - 1)
        return NULL;
    size_t i = hash(id) & (s->cap - 1);
    for (size_t probes = 0; probes < s->cap; probes++, i = (i + 1) & (s->cap - 1)) {
        struct entry *e = &s->tab[i];
        if (!e->id[0]) {
            if (s->n + 1 > s->cap / 2 + s->cap / 4)
                return NULL;
            memcpy(e->id, id, LG_JOB_ID_LEN);
            s->n++;
            return e;
        }
        if (memcmp(e->id, id, LG_JOB_ID_LEN) == 0)
            return e;
    }
    return NULL;
}

void lg_stats_submitted(struct lg_stats *s, const char *id, uint64_t t_ns)
{
    struct entry *e = lookup(s, id);
    if (!e || e->submitted)
        return;
    e->submitted = t_ns;
    s->nsubmitted++;
    if (!s->first_submit || t_ns < s->first_submit)
        s->first_submit = t_ns;
}

void lg_stats_assigned(struct lg_stats *s, const char *id, uint64_t t_ns)
{
    struct entry *e = lookup(s, id);
    if (!e || e->assigned)
        return;
    e->assigned = t_ns;
    s->nassigned++;
    if (t_ns > s->last_assign)
        s->last_assign = t_ns;
}

void lg_stats_completed(struct lg_stats *s, const char *id, uint64_t t_ns)
{
    struct entry *e = lookup(s, id);
    if (!e || e->completed)
        return;
    e->completed = t_ns;
    s->ncompleted++;
    if (t_ns > s->last_complete)
        s->last_complete = t_ns;
}

size_t lg_stats_assigned_count(const struct lg_stats *s)
{
    return s->nassigned;
}

size_t lg_stats_completed_count(const struct lg_stats *s)
{
    return s->ncompleted;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of n sorted values, in ms. */
static double quantile_ms(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)n + 0.999999);
    i = i == 0 ? 0 : i - 1;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1e6;
}

int lg_stats_report(const struct lg_stats *s, uint64_t end_ns, struct lg_report *r)
{
    memset(r, 0, sizeof(*r));
    r->submitted = s->nsubmitted;
    r->assigned = s->nassigned;
    r->completed = s->ncompleted;
    uint64_t *lat = malloc((s->n ? s->n : 1) * sizeof(*lat));
    if (!lat)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < s->cap; i++) {
        const struct entry *e = &s->tab[i];
        uint64_t at = e->assigned ? e->assigned : end_ns;
        if (e->id[0] && e->submitted)
            lat[n++] = at > e->submitted ? at - e->submitted : 0;
    }
    qsort(lat, n, sizeof(*lat), cmp_u64);
    r->assign_p50_ms = quantile_ms(lat, n, 0.50);
    r->assign_p90_ms = quantile_ms(lat, n, 0.90);
    r->assign_p99_ms = quantile_ms(lat, n, 0.99);
    r->assign_max_ms = n ? (double)lat[n - 1] / 1e6 : 0;
    free(lat);
    /* Short of every job, the run's end is the denominator: a dispatcher that stalls must
     * not look fast for what it placed before. */
    uint64_t la = s->nassigned >= s->nsubmitted ? s->last_assign : end_ns;
    uint64_t lc = s->ncompleted >= s->nsubmitted ? s->last_complete : end_ns;
    if (s->first_submit && la > s->first_submit)
        r->placements_per_s = (double)s->nassigned / ((double)(la - s->first_submit) / 1e9);
    if (s->first_submit && lc > s->first_submit)
        r->completed_per_s = (double)s->ncompleted / ((double)(lc - s->first_submit) / 1e9);
    uint64_t last = lc > la ? lc : la;
    if (s->first_submit && last > s->first_submit)
        r->run_s = (double)(last - s->first_submit) / 1e9;
    return 0;
}
