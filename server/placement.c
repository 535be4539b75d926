/* placement.c: the placement engine (see placement.h and docs/scheduling.md).
 *
 * Layout. Queued jobs are grouped by shape: one tenant, one queue, one requirement set, one
 * package. A shape holds its jobs in a heap ordered by the aging key (created - priority *
 * aging, then arrival), and the agents able to run them in a heap ordered by preference
 * (own before pool, package cached, free slot fraction, low CPU). Tenants with at least one
 * non-empty shape sit in a heap ordered by stride pass: the one with the lowest pass has
 * the next turn, and a placement advances its pass by STRIDE1 / weight.
 *
 * Laziness keeps every step logarithmic. An agent's entries in the shapes' heaps are
 * stamped with its version; a placement that makes an agent less attractive only bumps its
 * version, and a stale entry is re-scored when it reaches the top. A change that makes an
 * agent more attractive (a slot freed, a package cached) pushes a fresh entry into the
 * shapes that listed it. A change to what agents can run (labels, facts, online, pools)
 * bumps a generation, and each shape recomputes its capable set when next looked at. */
#include "server/placement.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRIDE1        (UINT64_C(1) << 24)
#define NO_POS         SIZE_MAX
#define KEY_MIN_MEMORY "min_free_memory_mb"
#define KEY_MIN_DISK   "min_free_disk_mb"
#define TIER_LEN       32

/* --- a string-keyed hash map (open addressing, linear probing, backward-shift delete) --- */

struct map_slot {
    const char *key; /* owned by the value */
    void *val;
};

struct map {
    struct map_slot *slots;
    size_t cap, n; /* cap: 0 or a power of two */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

static void *map_get(const struct map *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i].key)
            return NULL;
        if (strcmp(m->slots[i].key, key) == 0)
            return m->slots[i].val;
    }
}

static int map_put(struct map *m, const char *key, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        struct map_slot *ns = calloc(ncap, sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key)
                continue;
            size_t j = hash_str(m->slots[i].key) & (ncap - 1);
            while (ns[j].key)
                j = (j + 1) & (ncap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->slots[i].key) {
        if (strcmp(m->slots[i].key, key) == 0) {
            m->slots[i].val = val;
            m->slots[i].key = key;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->slots[i].key = key;
    m->slots[i].val = val;
    m->n++;
    return 0;
}

static void map_del(struct map *m, const char *key)
{
    if (m->cap == 0)
        return;
    size_t mask = m->cap - 1, i = hash_str(key) & mask;
    for (;; i = (i + 1) & mask) {
        if (!m->slots[i].key)
            return;
        if (strcmp(m->slots[i].key, key) == 0)
            break;
    }
    /* Shift later members of the run back, so that no lookup meets a hole too early. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        size_t home = hash_str(m->slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].val = NULL;
    m->n--;
}

/* --- the model ----------------------------------------------------------------------------- */

struct shape;

struct tenant {
    char id[ID_STR_LEN];
    char tier[TIER_LEN];
    int weight, max_running, running;
    uint64_t pass;
    size_t heap_pos;       /* in pl->ready, or NO_POS */
    struct shape **active; /* shapes with jobs waiting */
    size_t nactive, capactive;
    struct tenant *all_next;
};

struct queue {
    char id[ID_STR_LEN];
    bool paused, blocked; /* blocked: refused as full since the last queue_set */
    int max_running, running;
    struct queue *all_next;
};

struct pool {
    char id[ID_STR_LEN];
    char (*tiers)[TIER_LEN];
    size_t ntiers;
    char (*tenants)[ID_STR_LEN];
    size_t ntenants;
    struct pool *all_next;
};

struct agent;

/* A package some agents cache: who, for the locality preference. */
struct pkg {
    char digest[PLACEMENT_DIGEST_LEN];
    struct agent **holders;
    size_t nholders, capholders;
    size_t rot; /* where the next bounded scan of the holders starts */
    struct pkg *all_next;
};

struct agent {
    char id[ID_STR_LEN];
    struct tenant *owner;
    struct pool *pool;
    json_t *labels;
    char *os, *arch;
    int64_t memory_free, disk_free;
    double cpu;
    int slots, active;
    struct pkg **pkgs;
    size_t npkgs;
    bool online;
    uint64_t version;
    uint64_t serial;       /* order of arrival: the last tie-break */
    int64_t stamp;         /* the caller's, see placement_agent_update() */
    size_t list_pos;       /* in pl->agents */
    struct shape **shapes; /* shapes whose capable set held it once */
    size_t nshapes, capshapes;
    uint64_t *noted; /* bit per shape index: in shapes already */
    size_t capnoted;
};

/* An agent in a shape's heap: its preference packed in one integer (own, then free slot
 * fraction, then idle CPU), then its serial, so that a comparison is two integer compares. */
struct agent_ent {
    struct agent *a;
    uint64_t version;
    uint64_t rank;
    uint64_t serial;
};

struct job;

struct shape {
    char *key;    /* tenant, queue, requirements */
    size_t index; /* dense, for the agents' bitmaps */
    struct tenant *tenant;
    struct queue *queue;
    json_t *req;
    bool unsatisfiable;           /* a requirement no agent can meet (a value not a string) */
    int64_t min_memory, min_disk; /* bytes, -1 for none */
    struct job **jobs;            /* heap by aging key */
    size_t njobs, capjobs;
    struct agent_ent *ents; /* heap by preference */
    size_t nents, capents;
    size_t ncapable;
    uint64_t gen, res_gen; /* pl->gen and pl->res_gen it was computed at */
    size_t active_pos;     /* in tenant->active, or NO_POS */
    struct shape *all_next;
};

enum job_state { JOB_QUEUED, JOB_DELAYED, JOB_PROPOSED };

struct job {
    char id[ID_STR_LEN];
    char agent_id[ID_STR_LEN]; /* proposed to */
    struct shape *shape;
    struct pkg *pkg; /* its package, or NULL */
    int64_t key, not_before;
    uint64_t seq;
    size_t pos; /* in shape->jobs or pl->delayed */
    enum job_state state;
};

struct placement {
    struct placement_config cfg;
    struct map tenants, queues, pools, agents_by_id, shapes, jobs, pkgs;
    struct pkg *all_pkgs;
    struct tenant *all_tenants;
    struct queue *all_queues;
    struct pool *all_pools;
    struct shape *all_shapes;
    struct agent **agents; /* every agent, for capable-set scans */
    size_t nagents, capagents;
    struct tenant **ready; /* heap by pass: tenants with jobs waiting */
    size_t nready, capready;
    struct job **delayed; /* heap by not_before */
    size_t ndelayed, capdelayed;
    struct tenant **parked; /* plan()'s scratch */
    size_t capparked;
    uint64_t gen, res_gen, seq, vtime;
    int64_t free_slots, now;
    size_t nproposed, nshapes;
};

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*arr, ncap * size);
    if (!n)
        return -ENOMEM;
    *arr = n;
    *cap = ncap;
    return 0;
}

static void copy_id(char dst[ID_STR_LEN], const char *src)
{
    size_t n = strnlen(src, ID_STR_LEN - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool valid_id(const char *s)
{
    return s && s[0] && strnlen(s, ID_STR_LEN) < ID_STR_LEN;
}

/* --- heaps --------------------------------------------------------------------------------- */

static bool tenant_before(const struct tenant *a, const struct tenant *b)
{
    if (a->pass != b->pass)
        return a->pass < b->pass;
    return strcmp(a->id, b->id) < 0;
}

static void ready_swap(struct placement *pl, size_t i, size_t j)
{
    struct tenant *t = pl->ready[i];
    pl->ready[i] = pl->ready[j];
    pl->ready[j] = t;
    pl->ready[i]->heap_pos = i;
    pl->ready[j]->heap_pos = j;
}

static void ready_fix(struct placement *pl, size_t i)
{
    while (i > 0 && tenant_before(pl->ready[i], pl->ready[(i - 1) / 2])) {
        ready_swap(pl, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < pl->nready && tenant_before(pl->ready[l], pl->ready[m]))
            m = l;
        if (r < pl->nready && tenant_before(pl->ready[r], pl->ready[m]))
            m = r;
        if (m == i)
            return;
        ready_swap(pl, i, m);
        i = m;
    }
}

static int ready_push(struct placement *pl, struct tenant *t)
{
    if (grow((void **)&pl->ready, &pl->capready, pl->nready + 1, sizeof(*pl->ready)) < 0)
        return -ENOMEM;
    t->heap_pos = pl->nready;
    pl->ready[pl->nready++] = t;
    ready_fix(pl, t->heap_pos);
    return 0;
}

static void ready_remove(struct placement *pl, struct tenant *t)
{
    size_t i = t->heap_pos;
    if (i == NO_POS)
        return;
    pl->nready--;
    if (i != pl->nready) {
        pl->ready[i] = pl->ready[pl->nready];
        pl->ready[i]->heap_pos = i;
        ready_fix(pl, i);
    }
    t->heap_pos = NO_POS;
}

/* Job heaps: a shape's by aging key, pl->delayed by not_before. */
static bool job_before(const struct job *a, const struct job *b, bool by_time)
{
    int64_t ka = by_time ? a->not_before : a->key, kb = by_time ? b->not_before : b->key;
    if (ka != kb)
        return ka < kb;
    return a->seq < b->seq;
}

static void jobs_swap(struct job **h, size_t i, size_t j)
{
    struct job *t = h[i];
    h[i] = h[j];
    h[j] = t;
    h[i]->pos = i;
    h[j]->pos = j;
}

static void jobs_fix(struct job **h, size_t n, size_t i, bool by_time)
{
    while (i > 0 && job_before(h[i], h[(i - 1) / 2], by_time)) {
        jobs_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && job_before(h[l], h[m], by_time))
            m = l;
        if (r < n && job_before(h[r], h[m], by_time))
            m = r;
        if (m == i)
            return;
        jobs_swap(h, i, m);
        i = m;
    }
}

static int jobs_push(struct job ***h, size_t *n, size_t *cap, struct job *j, bool by_time)
{
    if (grow((void **)h, cap, *n + 1, sizeof(**h)) < 0)
        return -ENOMEM;
    j->pos = *n;
    (*h)[(*n)++] = j;
    jobs_fix(*h, *n, j->pos, by_time);
    return 0;
}

static void jobs_remove(struct job **h, size_t *n, struct job *j, bool by_time)
{
    size_t i = j->pos;
    (*n)--;
    if (i != *n) {
        h[i] = h[*n];
        h[i]->pos = i;
        jobs_fix(h, *n, i, by_time);
    }
    j->pos = NO_POS;
}

/* Agent entries: the best first. */
static bool ent_better(const struct agent_ent *a, const struct agent_ent *b)
{
    if (a->rank != b->rank)
        return a->rank > b->rank;
    return a->serial < b->serial;
}

static void ents_sift_down(struct agent_ent *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && ent_better(&h[l], &h[m]))
            m = l;
        if (r < n && ent_better(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct agent_ent t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void ents_pop(struct shape *s)
{
    s->ents[0] = s->ents[--s->nents];
    ents_sift_down(s->ents, s->nents, 0);
}

/* --- agents and shapes --------------------------------------------------------------------- */

static int agent_free_slots(const struct agent *a)
{
    return a->online && a->slots > a->active ? a->slots - a->active : 0;
}

static bool pool_admits(const struct pool *p, const struct tenant *t)
{
    for (size_t i = 0; i < p->ntiers; i++)
        if (strcmp(p->tiers[i], t->tier) == 0)
            return true;
    for (size_t i = 0; i < p->ntenants; i++)
        if (strcmp(p->tenants[i], t->id) == 0)
            return true;
    return false;
}

/* The value an agent offers for a requirement key: os and arch first, then its labels. */
static const char *agent_label(const struct agent *a, const char *key)
{
    if (strcmp(key, "os") == 0 && a->os)
        return a->os;
    if (strcmp(key, "arch") == 0 && a->arch)
        return a->arch;
    return json_string_value(json_object_get(a->labels, key));
}

/* True when a may run s's jobs: it serves s's tenant and every requirement holds. */
static bool agent_capable(const struct agent *a, const struct shape *s)
{
    if (!a->online || s->unsatisfiable)
        return false;
    if (a->owner ? a->owner != s->tenant : !(a->pool && pool_admits(a->pool, s->tenant)))
        return false;
    if (s->min_memory >= 0 && (a->memory_free < 0 || a->memory_free < s->min_memory))
        return false;
    if (s->min_disk >= 0 && (a->disk_free < 0 || a->disk_free < s->min_disk))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(s->req, k, v)
    {
        if (strcmp(k, KEY_MIN_MEMORY) == 0 || strcmp(k, KEY_MIN_DISK) == 0)
            continue;
        const char *have = agent_label(a, k);
        if (!have || strcmp(have, json_string_value(v)) != 0)
            return false;
    }
    return true;
}

static struct agent_ent agent_entry(const struct agent *a)
{
    /* own: bit 40; free fraction in 1/65535: bits 20-35; idle CPU in 1/100 %: bits 0-13. */
    double frac = a->slots > 0 ? (double)(a->slots - a->active) / a->slots : 0;
    double cpu = a->cpu < 0 ? 0 : a->cpu > 100 ? 100 : a->cpu;
    return (struct agent_ent){
        .a = (struct agent *)a,
        .version = a->version,
        .rank = (uint64_t)(a->owner != NULL) << 40 | (uint64_t)(frac * 65535) << 20 |
                (uint64_t)((100 - cpu) * 100),
        .serial = a->serial,
    };
}

static int ents_push(struct shape *s, const struct agent *a)
{
    if (grow((void **)&s->ents, &s->capents, s->nents + 1, sizeof(*s->ents)) < 0)
        return -ENOMEM;
    size_t i = s->nents++;
    s->ents[i] = agent_entry(a);
    while (i > 0 && ent_better(&s->ents[i], &s->ents[(i - 1) / 2])) {
        struct agent_ent t = s->ents[i];
        s->ents[i] = s->ents[(i - 1) / 2];
        s->ents[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static bool shape_current(const struct placement *pl, const struct shape *s)
{
    bool res = s->min_memory >= 0 || s->min_disk >= 0;
    return s->gen == pl->gen && (!res || s->res_gen == pl->res_gen);
}

static int agent_note_shape(struct agent *a, struct shape *s)
{
    size_t w = s->index / 64;
    uint64_t bit = UINT64_C(1) << (s->index % 64);
    if (w >= a->capnoted) {
        size_t old = a->capnoted;
        if (grow((void **)&a->noted, &a->capnoted, w + 1, sizeof(*a->noted)) < 0)
            return -ENOMEM;
        memset(a->noted + old, 0, (a->capnoted - old) * sizeof(*a->noted));
    }
    if (a->noted[w] & bit)
        return 0;
    if (grow((void **)&a->shapes, &a->capshapes, a->nshapes + 1, sizeof(*a->shapes)) < 0)
        return -ENOMEM;
    a->shapes[a->nshapes++] = s;
    a->noted[w] |= bit;
    return 0;
}

/* Recompute s's capable agents: O(agents). On -ENOMEM s stays stale and is tried again. */
static int shape_rebuild(struct placement *pl, struct shape *s)
{
    s->nents = 0;
    s->ncapable = 0;
    for (size_t i = 0; i < pl->nagents; i++) {
        struct agent *a = pl->agents[i];
        if (!agent_capable(a, s))
            continue;
        s->ncapable++;
        if (agent_note_shape(a, s) < 0)
            return -ENOMEM;
        if (agent_free_slots(a) > 0) {
            if (grow((void **)&s->ents, &s->capents, s->nents + 1, sizeof(*s->ents)) < 0)
                return -ENOMEM;
            s->ents[s->nents++] = agent_entry(a);
        }
    }
    for (size_t i = s->nents / 2; i-- > 0;)
        ents_sift_down(s->ents, s->nents, i);
    s->gen = pl->gen;
    s->res_gen = pl->res_gen;
    return 0;
}

/* The best agent with a free slot for s's jobs, at the top of s's heap, or NULL. */
static struct agent *shape_peek_agent(struct placement *pl, struct shape *s)
{
    if (!shape_current(pl, s) && shape_rebuild(pl, s) < 0)
        return NULL;
    /* Entries only accumulate while stale: rebuild when they outnumber the agents. */
    if (s->nents > 2 * s->ncapable + 64 && shape_rebuild(pl, s) < 0)
        return NULL;
    while (s->nents > 0) {
        struct agent_ent *e = &s->ents[0];
        struct agent *a = e->a;
        if (e->version != a->version) {
            ents_pop(s);
            if (agent_free_slots(a) > 0 && ents_push(s, a) < 0)
                return NULL;
            continue;
        }
        if (agent_free_slots(a) == 0) {
            ents_pop(s);
            continue;
        }
        return a;
    }
    return NULL;
}

/* An agent became more attractive (or able to take work again): offer it to its shapes. */
static void agent_improved(struct placement *pl, struct agent *a)
{
    if (agent_free_slots(a) == 0)
        return;
    for (size_t i = 0; i < a->nshapes; i++) {
        struct shape *s = a->shapes[i];
        if (shape_current(pl, s) && agent_capable(a, s))
            ents_push(s, a); /* on -ENOMEM the next rebuild finds it */
    }
}

static void agent_set_active(struct placement *pl, struct agent *a, int active)
{
    pl->free_slots -= agent_free_slots(a);
    bool better = active < a->active;
    a->active = active;
    a->version++;
    pl->free_slots += agent_free_slots(a);
    if (better)
        agent_improved(pl, a);
}

static int shape_activate(struct placement *pl, struct shape *s)
{
    struct tenant *t = s->tenant;
    if (s->active_pos != NO_POS)
        return 0;
    if (grow((void **)&t->active, &t->capactive, t->nactive + 1, sizeof(*t->active)) < 0)
        return -ENOMEM;
    s->active_pos = t->nactive;
    t->active[t->nactive++] = s;
    if (t->heap_pos == NO_POS) {
        /* A tenant coming back from idle starts at the current virtual time: it neither
         * loses its turns nor gets a burst for the time it had nothing to run. */
        if (t->pass < pl->vtime)
            t->pass = pl->vtime;
        if (ready_push(pl, t) < 0) {
            t->nactive--;
            s->active_pos = NO_POS;
            return -ENOMEM;
        }
    }
    return 0;
}

static void shape_deactivate(struct placement *pl, struct shape *s)
{
    struct tenant *t = s->tenant;
    if (s->active_pos == NO_POS)
        return;
    size_t i = s->active_pos;
    t->active[i] = t->active[--t->nactive];
    t->active[i]->active_pos = i;
    s->active_pos = NO_POS;
    if (t->nactive == 0)
        ready_remove(pl, t);
}

/* --- entities ------------------------------------------------------------------------------ */

static struct tenant *tenant_get(struct placement *pl, const char *id)
{
    struct tenant *t = map_get(&pl->tenants, id);
    if (t)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    copy_id(t->id, id);
    t->weight = 1;
    t->heap_pos = NO_POS;
    t->pass = pl->vtime;
    if (map_put(&pl->tenants, t->id, t) < 0) {
        free(t);
        return NULL;
    }
    t->all_next = pl->all_tenants;
    pl->all_tenants = t;
    return t;
}

static struct queue *queue_get(struct placement *pl, const char *id)
{
    struct queue *q = map_get(&pl->queues, id);
    if (q)
        return q;
    q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    copy_id(q->id, id);
    if (map_put(&pl->queues, q->id, q) < 0) {
        free(q);
        return NULL;
    }
    q->all_next = pl->all_queues;
    pl->all_queues = q;
    return q;
}

static struct pool *pool_get(struct placement *pl, const char *id)
{
    struct pool *p = map_get(&pl->pools, id);
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    copy_id(p->id, id);
    if (map_put(&pl->pools, p->id, p) < 0) {
        free(p);
        return NULL;
    }
    p->all_next = pl->all_pools;
    pl->all_pools = p;
    return p;
}

int placement_new(const struct placement_config *cfg, struct placement **ret)
{
    struct placement *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return -ENOMEM;
    pl->cfg = *cfg;
    if (pl->cfg.aging_ms < 0)
        pl->cfg.aging_ms = 0;
    pl->gen = 1;
    pl->res_gen = 1;
    *ret = pl;
    return 0;
}

static void agent_free(struct agent *a)
{
    json_decref(a->labels);
    free(a->os);
    free(a->arch);
    free(a->pkgs);
    free(a->shapes);
    free(a->noted);
    free(a);
}

void placement_free(struct placement *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i < pl->jobs.cap; i++)
        free(pl->jobs.slots[i].val);
    for (size_t i = 0; i < pl->nagents; i++)
        agent_free(pl->agents[i]);
    while (pl->all_shapes) {
        struct shape *s = pl->all_shapes;
        pl->all_shapes = s->all_next;
        free(s->key);
        json_decref(s->req);
        free(s->jobs);
        free(s->ents);
        free(s);
    }
    while (pl->all_tenants) {
        struct tenant *t = pl->all_tenants;
        pl->all_tenants = t->all_next;
        free(t->active);
        free(t);
    }
    while (pl->all_pkgs) {
        struct pkg *k = pl->all_pkgs;
        pl->all_pkgs = k->all_next;
        free(k->holders);
        free(k);
    }
    while (pl->all_queues) {
        struct queue *q = pl->all_queues;
        pl->all_queues = q->all_next;
        free(q);
    }
    while (pl->all_pools) {
        struct pool *p = pl->all_pools;
        pl->all_pools = p->all_next;
        free(p->tiers);
        free(p->tenants);
        free(p);
    }
    free(pl->tenants.slots);
    free(pl->queues.slots);
    free(pl->pools.slots);
    free(pl->agents_by_id.slots);
    free(pl->shapes.slots);
    free(pl->jobs.slots);
    free(pl->pkgs.slots);
    free(pl->agents);
    free(pl->ready);
    free(pl->delayed);
    free(pl->parked);
    free(pl);
}

int placement_tenant_set(struct placement *pl, const char *id, const char *tier, int weight,
                         int max_running, int running)
{
    if (!valid_id(id) || weight < 1 || max_running < 0 || running < 0)
        return -EINVAL;
    struct tenant *t = tenant_get(pl, id);
    if (!t)
        return -ENOMEM;
    char nt[TIER_LEN] = "";
    if (tier)
        memcpy(nt, tier, strnlen(tier, TIER_LEN - 1));
    if (strcmp(nt, t->tier) != 0) {
        memcpy(t->tier, nt, sizeof(nt));
        pl->gen++; /* pool admission may change */
    }
    t->weight = weight;
    t->max_running = max_running;
    t->running = running;
    return 0;
}

int placement_queue_set(struct placement *pl, const char *id, bool paused, int max_running,
                        int running)
{
    if (!valid_id(id) || max_running < 0 || running < 0)
        return -EINVAL;
    struct queue *q = queue_get(pl, id);
    if (!q)
        return -ENOMEM;
    q->paused = paused;
    q->blocked = false;
    q->max_running = max_running;
    q->running = running;
    return 0;
}

int placement_pool_set(struct placement *pl, const char *id, const char *const *tiers,
                       size_t ntiers, const char *const *tenants, size_t ntenants)
{
    if (!valid_id(id))
        return -EINVAL;
    for (size_t i = 0; i < ntenants; i++)
        if (!valid_id(tenants[i]))
            return -EINVAL;
    char(*nt)[TIER_LEN] = calloc(ntiers ? ntiers : 1, sizeof(*nt));
    char(*nn)[ID_STR_LEN] = calloc(ntenants ? ntenants : 1, sizeof(*nn));
    struct pool *p = nt && nn ? pool_get(pl, id) : NULL;
    if (!p) {
        free(nt);
        free(nn);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ntiers; i++)
        memcpy(nt[i], tiers[i], strnlen(tiers[i], TIER_LEN - 1));
    for (size_t i = 0; i < ntenants; i++)
        copy_id(nn[i], tenants[i]);
    /* The dispatcher sets every pool at every refresh: only a change costs the shapes a
     * recomputation. */
    bool same = p->tiers && p->ntiers == ntiers && p->ntenants == ntenants &&
                memcmp(p->tiers, nt, ntiers * sizeof(*nt)) == 0 &&
                memcmp(p->tenants, nn, ntenants * sizeof(*nn)) == 0;
    free(p->tiers);
    free(p->tenants);
    p->tiers = nt;
    p->ntiers = ntiers;
    p->tenants = nn;
    p->ntenants = ntenants;
    if (!same)
        pl->gen++;
    return 0;
}

static struct pkg *pkg_get(struct placement *pl, const char *digest)
{
    struct pkg *k = map_get(&pl->pkgs, digest);
    if (k)
        return k;
    k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    memcpy(k->digest, digest, strnlen(digest, PLACEMENT_DIGEST_LEN - 1));
    if (map_put(&pl->pkgs, k->digest, k) < 0) {
        free(k);
        return NULL;
    }
    k->all_next = pl->all_pkgs;
    pl->all_pkgs = k;
    return k;
}

static void pkg_drop_holder(struct pkg *k, const struct agent *a)
{
    for (size_t i = 0; i < k->nholders; i++) {
        if (k->holders[i] == a) {
            k->holders[i] = k->holders[--k->nholders];
            return;
        }
    }
}

static int pkg_add_holder(struct pkg *k, struct agent *a)
{
    if (grow((void **)&k->holders, &k->capholders, k->nholders + 1, sizeof(*k->holders)) < 0)
        return -ENOMEM;
    k->holders[k->nholders++] = a;
    return 0;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

int placement_agent_set(struct placement *pl, const struct placement_agent *in)
{
    if (!valid_id(in->id) || (!in->tenant_id == !in->pool_id) || in->slots < 0 || in->active < 0 ||
        (in->labels && !json_is_object(in->labels)))
        return -EINVAL;
    struct tenant *owner = in->tenant_id ? tenant_get(pl, in->tenant_id) : NULL;
    struct pool *pool = in->pool_id ? pool_get(pl, in->pool_id) : NULL;
    if (!owner && !pool)
        return -ENOMEM;
    struct pkg **pkgs = calloc(in->npackages ? in->npackages : 1, sizeof(*pkgs));
    json_t *labels = in->labels ? json_deep_copy(in->labels) : json_object();
    char *os = in->os ? strdup(in->os) : NULL, *arch = in->arch ? strdup(in->arch) : NULL;
    size_t np = 0;
    bool ok = pkgs && labels && (!in->os || os) && (!in->arch || arch);
    for (; ok && np < in->npackages; np++)
        ok = (pkgs[np] = pkg_get(pl, in->packages[np])) != NULL;
    struct agent *a = map_get(&pl->agents_by_id, in->id), *fresh = NULL;
    if (ok && !a) {
        fresh = calloc(1, sizeof(*fresh));
        ok = fresh &&
             grow((void **)&pl->agents, &pl->capagents, pl->nagents + 1, sizeof(*pl->agents)) == 0;
        if (ok) {
            copy_id(fresh->id, in->id);
            ok = map_put(&pl->agents_by_id, fresh->id, fresh) == 0;
        }
    }
    if (!ok) {
        free(pkgs);
        json_decref(labels);
        free(os);
        free(arch);
        free(fresh);
        return -ENOMEM;
    }
    if (fresh) {
        a = fresh;
        a->serial = pl->seq++;
        a->memory_free = a->disk_free = -1;
        a->list_pos = pl->nagents;
        pl->agents[pl->nagents++] = a;
        pl->gen++;
    } else {
        pl->free_slots -= agent_free_slots(a);
        bool caps = a->owner != owner || a->pool != pool || a->online != in->online ||
                    !str_eq(a->os, os) || !str_eq(a->arch, arch) || !json_equal(a->labels, labels);
        if (caps)
            pl->gen++;
        if (a->memory_free != in->memory_free_bytes || a->disk_free != in->disk_free_bytes)
            pl->res_gen++;
    }
    /* What could only have made it less attractive needs no push: its stale entries are
     * re-scored when they surface. Anything else offers it to its shapes again. */
    bool better = in->active < a->active || in->slots > a->slots ||
                  (in->cpu_percent >= 0 && in->cpu_percent < a->cpu) || (in->online && !a->online);
    bool changed = better || fresh || in->active != a->active || in->slots != a->slots ||
                   in->cpu_percent != a->cpu || in->online != a->online;
    json_decref(a->labels);
    free(a->os);
    free(a->arch);
    for (size_t i = 0; i < a->npkgs; i++)
        pkg_drop_holder(a->pkgs[i], a);
    for (size_t i = 0; i < np; i++)
        pkg_add_holder(pkgs[i], a); /* on -ENOMEM only the preference is lost */
    free(a->pkgs);
    a->owner = owner;
    a->pool = pool;
    a->labels = labels;
    a->os = os;
    a->arch = arch;
    a->pkgs = pkgs;
    a->npkgs = np;
    a->memory_free = in->memory_free_bytes;
    a->disk_free = in->disk_free_bytes;
    a->cpu = in->cpu_percent;
    a->slots = in->slots;
    a->active = in->active;
    a->online = in->online;
    a->stamp = in->stamp;
    if (changed)
        a->version++;
    pl->free_slots += agent_free_slots(a);
    if (better || fresh)
        agent_improved(pl, a);
    return 0;
}

int placement_agent_update(struct placement *pl, const char *id, int active, bool online,
                           int64_t stamp)
{
    struct agent *a = map_get(&pl->agents_by_id, id);
    if (!a)
        return -ENOENT;
    if (a->stamp != stamp)
        return -ESTALE;
    if (active < 0)
        return -EINVAL;
    if (online != a->online) {
        pl->free_slots -= agent_free_slots(a);
        a->online = online;
        a->version++;
        pl->gen++; /* what it can run: nothing, or what it could before */
        pl->free_slots += agent_free_slots(a);
    }
    if (active != a->active)
        agent_set_active(pl, a, active);
    return 0;
}

int placement_agent_remove(struct placement *pl, const char *id)
{
    struct agent *a = map_get(&pl->agents_by_id, id);
    if (!a)
        return -ENOENT;
    pl->free_slots -= agent_free_slots(a);
    map_del(&pl->agents_by_id, a->id);
    size_t i = a->list_pos;
    pl->agents[i] = pl->agents[--pl->nagents];
    pl->agents[i]->list_pos = i;
    /* Entries pointing at it are dropped by the rebuild every shape makes before its next
     * look, so none is ever followed. */
    pl->gen++;
    for (size_t k = 0; k < a->npkgs; k++)
        pkg_drop_holder(a->pkgs[k], a);
    agent_free(a);
    return 0;
}

/* --- jobs ---------------------------------------------------------------------------------- */

static int64_t mb_to_bytes(json_int_t mb)
{
    return mb > INT64_MAX / (1024 * 1024) ? INT64_MAX : (int64_t)mb * 1024 * 1024;
}

static struct shape *shape_get(struct placement *pl, struct tenant *t, struct queue *q,
                               const json_t *req)
{
    char *reqs = json_dumps(req, JSON_SORT_KEYS | JSON_COMPACT);
    if (!reqs)
        return NULL;
    size_t klen = strlen(t->id) + 1 + (q ? strlen(q->id) : 0) + 1 + strlen(reqs) + 1;
    char *key = malloc(klen);
    if (!key) {
        free(reqs);
        return NULL;
    }
    snprintf(key, klen, "%s|%s|%s", t->id, q ? q->id : "", reqs);
    free(reqs);
    struct shape *s = map_get(&pl->shapes, key);
    if (s) {
        free(key);
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->req = json_deep_copy(req)) || map_put(&pl->shapes, key, s) < 0) {
        if (s)
            json_decref(s->req);
        free(s);
        free(key);
        return NULL;
    }
    s->key = key;
    s->tenant = t;
    s->queue = q;
    s->active_pos = NO_POS;
    s->min_memory = s->min_disk = -1;
    const char *k;
    json_t *v;
    json_object_foreach(s->req, k, v)
    {
        bool mem = strcmp(k, KEY_MIN_MEMORY) == 0, disk = strcmp(k, KEY_MIN_DISK) == 0;
        if (mem || disk) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                s->unsatisfiable = true;
            else if (mem)
                s->min_memory = mb_to_bytes(json_integer_value(v));
            else
                s->min_disk = mb_to_bytes(json_integer_value(v));
        } else if (!json_is_string(v)) {
            s->unsatisfiable = true;
        }
    }
    s->all_next = pl->all_shapes;
    pl->all_shapes = s;
    s->index = pl->nshapes++;
    return s;
}

/* Put j where it waits: its shape's heap, or pl->delayed until not_before. */
static int job_enqueue(struct placement *pl, struct job *j, int64_t now)
{
    if (j->not_before > now) {
        j->state = JOB_DELAYED;
        return jobs_push(&pl->delayed, &pl->ndelayed, &pl->capdelayed, j, true);
    }
    struct shape *s = j->shape;
    j->state = JOB_QUEUED;
    if (jobs_push(&s->jobs, &s->njobs, &s->capjobs, j, false) < 0)
        return -ENOMEM;
    if (shape_activate(pl, s) < 0) {
        jobs_remove(s->jobs, &s->njobs, j, false);
        return -ENOMEM;
    }
    return 0;
}

static void job_dequeue(struct placement *pl, struct job *j)
{
    if (j->state == JOB_DELAYED) {
        jobs_remove(pl->delayed, &pl->ndelayed, j, true);
    } else if (j->state == JOB_QUEUED) {
        struct shape *s = j->shape;
        jobs_remove(s->jobs, &s->njobs, j, false);
        if (s->njobs == 0)
            shape_deactivate(pl, s);
    }
}

int placement_job_add(struct placement *pl, const struct placement_job *in)
{
    if (!valid_id(in->id) || !valid_id(in->tenant_id) ||
        (in->queue_id && !valid_id(in->queue_id)) ||
        (in->requirements && !json_is_object(in->requirements)))
        return -EINVAL;
    if (map_get(&pl->jobs, in->id))
        return -EEXIST;
    json_t *none = NULL;
    const json_t *req = in->requirements;
    if (!req && !(req = none = json_object()))
        return -ENOMEM;
    struct tenant *t = tenant_get(pl, in->tenant_id);
    struct queue *q = in->queue_id ? queue_get(pl, in->queue_id) : NULL;
    struct shape *s = t && (q || !in->queue_id) ? shape_get(pl, t, q, req) : NULL;
    json_decref(none);
    struct pkg *k =
        in->package_digest && in->package_digest[0] ? pkg_get(pl, in->package_digest) : NULL;
    struct job *j =
        s && (k || !in->package_digest || !in->package_digest[0]) ? calloc(1, sizeof(*j)) : NULL;
    if (!j)
        return -ENOMEM;
    j->pkg = k;
    copy_id(j->id, in->id);
    j->shape = s;
    j->key = in->created_ms - (int64_t)in->priority * pl->cfg.aging_ms;
    j->not_before = in->not_before_ms;
    j->seq = pl->seq++;
    if (map_put(&pl->jobs, j->id, j) < 0) {
        free(j);
        return -ENOMEM;
    }
    if (job_enqueue(pl, j, pl->now) < 0) {
        map_del(&pl->jobs, j->id);
        free(j);
        return -ENOMEM;
    }
    return 0;
}

int placement_job_remove(struct placement *pl, const char *id)
{
    struct job *j = map_get(&pl->jobs, id);
    if (!j)
        return -ENOENT;
    if (j->state == JOB_PROPOSED)
        return -EBUSY;
    job_dequeue(pl, j);
    map_del(&pl->jobs, j->id);
    free(j);
    return 0;
}

bool placement_job_known(const struct placement *pl, const char *id)
{
    return map_get(&pl->jobs, id) != NULL;
}

/* --- planning ------------------------------------------------------------------------------ */

static bool queue_open(const struct queue *q)
{
    return !q ||
           (!q->paused && !q->blocked && (q->max_running == 0 || q->running < q->max_running));
}

/* Tenant t's next placement: the shape whose head job comes first by aging key among those
 * whose queue is open and that have an agent with a free slot. O(t's non-empty shapes). */
static struct shape *tenant_pick(struct placement *pl, struct tenant *t)
{
    struct shape *best = NULL;
    for (size_t i = 0; i < t->nactive; i++) {
        struct shape *s = t->active[i];
        if (!queue_open(s->queue))
            continue;
        if (best && !job_before(s->jobs[0], best->jobs[0], false))
            continue;
        if (shape_peek_agent(pl, s))
            best = s;
    }
    return best;
}

/* The agent for j, the head of s (which has an agent): a holder of j's package if one of
 * the first PKG_SCAN holders looked at is capable and free and not a pool agent where s's
 * heap offers an own one; else the top of s's heap. The scan is bounded so that a package
 * cached everywhere costs no more than that; it starts where the last one stopped. */
#define PKG_SCAN 32
static struct agent *job_pick_agent(struct placement *pl, struct shape *s, struct job *j)
{
    struct agent *top = shape_peek_agent(pl, s);
    struct pkg *k = j->pkg;
    if (!k || k->nholders == 0)
        return top;
    struct agent *best = NULL;
    struct agent_ent be = {0};
    size_t n = k->nholders < PKG_SCAN ? k->nholders : PKG_SCAN;
    for (size_t i = 0; i < n; i++) {
        struct agent *a = k->holders[(k->rot + i) % k->nholders];
        if (agent_free_slots(a) == 0 || !agent_capable(a, s))
            continue;
        struct agent_ent e = agent_entry(a);
        if (!best || ent_better(&e, &be)) {
            best = a;
            be = e;
        }
    }
    k->rot = (k->rot + n) % k->nholders;
    if (best && (!top || best->owner || !top->owner))
        return best;
    return top;
}

size_t placement_plan(struct placement *pl, int64_t now, struct placement_proposal *out, size_t max)
{
    pl->now = now;
    while (pl->ndelayed > 0 && pl->delayed[0]->not_before <= now) {
        struct job *j = pl->delayed[0];
        jobs_remove(pl->delayed, &pl->ndelayed, j, true);
        if (job_enqueue(pl, j, now) < 0) {
            jobs_push(&pl->delayed, &pl->ndelayed, &pl->capdelayed, j, true);
            break; /* out of memory: it waits in the delayed heap (pushing back never grows) */
        }
    }
    size_t n = 0, nparked = 0;
    if (grow((void **)&pl->parked, &pl->capparked, pl->nready, sizeof(*pl->parked)) < 0)
        return 0;
    while (n < max && pl->free_slots > 0 && pl->nready > 0) {
        struct tenant *t = pl->ready[0];
        struct shape *s = t->running < t->max_running ? tenant_pick(pl, t) : NULL;
        if (!s) {
            /* Nothing it can place now: out of the heap until this plan ends, so that it
             * costs one look per plan and takes no one's turn. */
            ready_remove(pl, t);
            pl->parked[nparked++] = t;
            continue;
        }
        struct job *j = s->jobs[0];
        struct agent *a = job_pick_agent(pl, s, j);
        jobs_remove(s->jobs, &s->njobs, j, false);
        j->state = JOB_PROPOSED;
        copy_id(j->agent_id, a->id);
        pl->nproposed++;
        t->running++;
        if (s->queue)
            s->queue->running++;
        agent_set_active(pl, a, a->active + 1);
        memcpy(out[n].job_id, j->id, ID_STR_LEN);
        memcpy(out[n].agent_id, a->id, ID_STR_LEN);
        memcpy(out[n].tenant_id, t->id, ID_STR_LEN);
        n++;
        pl->vtime = t->pass;
        t->pass += STRIDE1 / (uint64_t)t->weight;
        if (s->njobs == 0)
            shape_deactivate(pl, s);
        if (t->heap_pos != NO_POS)
            ready_fix(pl, t->heap_pos);
    }
    /* The heap held them all before: pushing them back never grows it. */
    for (size_t i = 0; i < nparked; i++)
        ready_push(pl, pl->parked[i]);
    return n;
}

static struct job *proposed_job(struct placement *pl, const char *id)
{
    struct job *j = map_get(&pl->jobs, id);
    return j && j->state == JOB_PROPOSED ? j : NULL;
}

int placement_accepted(struct placement *pl, const char *job_id)
{
    struct job *j = proposed_job(pl, job_id);
    if (!j)
        return -ENOENT;
    pl->nproposed--;
    map_del(&pl->jobs, j->id);
    free(j);
    return 0;
}

int placement_refused(struct placement *pl, const char *job_id, enum placement_refusal why)
{
    struct job *j = proposed_job(pl, job_id);
    if (!j)
        return -ENOENT;
    struct shape *s = j->shape;
    struct tenant *t = s->tenant;
    struct agent *a = map_get(&pl->agents_by_id, j->agent_id);
    pl->nproposed--;
    if (t->running > 0)
        t->running--;
    if (s->queue && s->queue->running > 0)
        s->queue->running--;
    if (a && a->active > 0)
        agent_set_active(pl, a, a->active - 1);
    /* What PostgreSQL saw and the index did not: believed until the next refresh says
     * otherwise. */
    switch (why) {
    case PLACEMENT_JOB_GONE:
        map_del(&pl->jobs, j->id);
        free(j);
        return 0;
    case PLACEMENT_JOB_LATER:
        /* Its not_before moved (a retry's backoff): look again in a second, not at once. */
        if (j->not_before < pl->now + 1000)
            j->not_before = pl->now + 1000;
        break;
    case PLACEMENT_AGENT_FULL:
        if (a)
            agent_set_active(pl, a, a->slots);
        break;
    case PLACEMENT_AGENT_GONE:
        if (a) {
            pl->free_slots -= agent_free_slots(a);
            a->online = false;
            a->version++;
            pl->gen++;
        }
        break;
    case PLACEMENT_QUEUE_FULL:
        if (s->queue)
            s->queue->blocked = true;
        break;
    case PLACEMENT_TENANT_FULL:
        t->running = t->max_running;
        break;
    }
    if (job_enqueue(pl, j, pl->now) < 0) {
        map_del(&pl->jobs, j->id);
        free(j);
        return -ENOMEM; /* forgotten here; the next full load finds it again */
    }
    return 0;
}

void placement_stats(const struct placement *pl, struct placement_stats *ret)
{
    size_t waiting = 0;
    for (const struct shape *s = pl->all_shapes; s; s = s->all_next)
        waiting += s->njobs;
    *ret = (struct placement_stats){
        .tenants = pl->tenants.n,
        .queues = pl->queues.n,
        .pools = pl->pools.n,
        .agents = pl->nagents,
        .shapes = pl->nshapes,
        .jobs = waiting,
        .delayed = pl->ndelayed,
        .proposed = pl->nproposed,
        .free_slots = pl->free_slots,
    };
}
