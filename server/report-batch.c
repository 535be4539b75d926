/* report-batch.c: the agents' group commit (report-batch.h).
 *
 * Locking: b->lock guards the queue (head, tail, queued) and stopping; b->more is signalled
 * when an item is queued or stopping is set. An item belongs to the queue until a
 * committer takes it, then to that committer until it is activated on its loop, then to the
 * loop's callback, which frees it. The request is touched only on its loop thread: the
 * committer reads the deferred's base and log fields, which do not change once deferred. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "server/metrics-orch.h"
#include "server/report-batch.h"

/* How many batches' worth of items may wait for a committer (report_batch_submit()). */
#define RB_QUEUE_BATCHES 16

struct rb_item {
    struct rb_item *next;
    struct http_deferred *d;
    struct event *ev; /* on d's loop: activated once the item has its outcome */
    const struct report_batch_ops *ops;
    void *arg;
    bool system; /* the system scope; else tenant */
    char tenant[ID_STR_LEN];
    char order[ID_STR_LEN]; /* the agent's id: the order its group locks agents in */
    int r;
};

struct report_batch {
    struct store *store;
    struct metrics_orch *metrics;
    struct report_batch_options opts;
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct rb_item *head, *tail;
    int queued;
    bool stopping;
    int nthreads;
    pthread_t *threads;
};

static const char *item_scope(const struct rb_item *it)
{
    return it->system ? NULL : it->tenant;
}

static bool same_scope(const struct rb_item *a, const struct rb_item *b)
{
    return a->system == b->system && (a->system || strcmp(a->tenant, b->tenant) == 0);
}

/* --- answering, on the request's loop ----------------------------------------------------- */

static void item_resume(struct http_req *req, void *arg)
{
    struct rb_item *it = arg;
    it->ops->done(req, it->r, it->arg);
}

static void on_outcome(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rb_item *it = arg;
    event_free(it->ev);
    http_deferred_resume(it->d, item_resume, it);
    free(it);
}

/* Hand the item back to its loop with its outcome r. */
static void item_finish(struct rb_item *it, int r)
{
    it->r = r;
    event_active(it->ev, EV_TIMEOUT, 0);
}

/* --- running, on a committer --------------------------------------------------------------- */

static int item_run(struct rb_item *it, struct store_tx *tx)
{
    size_t mark = http_deferred_log_push(it->d);
    int r = it->ops->run(tx, it->arg);
    log_ctx_pop(mark);
    return r;
}

/* An item's pre() on its own, then its run(). */
static int ops_run_alone(const struct report_batch_ops *ops, struct store_tx *tx, void *arg)
{
    int r = ops->pre ? ops->pre(tx, &arg, 1) : 0;
    return r < 0 ? r : ops->run(tx, arg);
}

/* One item in a transaction of its own: its outcome. */
static int run_alone(struct store *store, struct rb_item *it)
{
    struct store_tx *tx = NULL;
    int r = store_tx_begin(store, item_scope(it), 0, &tx);
    if (r < 0)
        return r;
    size_t mark = http_deferred_log_push(it->d);
    r = ops_run_alone(it->ops, tx, it->arg);
    log_ctx_pop(mark);
    if (r < 0) {
        store_tx_rollback(tx);
        return r;
    }
    return store_tx_commit(tx);
}

/* Sort a group by agent id, keeping the order in which one agent's items came (an insertion
 * sort: stable, and a group holds at most opts.max_items). Each item writes its own agent's
 * row; assign_batch() (sql/functions/70_placement.sql) and the gateway's heartbeat flush
 * lock agents in id order, so a group that locked them in arrival order could wait on
 * either of them in a cycle (a deadlock, broken by PostgreSQL only after deadlock_timeout). */
static void sort_group(struct rb_item **items, int n)
{
    for (int i = 1; i < n; i++) {
        struct rb_item *it = items[i];
        int j = i;
        for (; j > 0 && strcmp(items[j - 1]->order, it->order) > 0; j--)
            items[j] = items[j - 1];
        items[j] = it;
    }
}

/* The pre() of each kind of item of the group (items in run order; args: room for n), each
 * once over all the items that have it. Returns 0 or the first error. */
static int run_pres(struct rb_item **items, int n, void **args, struct store_tx *tx)
{
    for (int i = 0; i < n; i++) {
        int (*pre)(struct store_tx *, void *const *, int) = items[i]->ops->pre;
        bool seen = false;
        for (int k = 0; k < i && !seen; k++)
            seen = items[k]->ops->pre == pre;
        if (!pre || seen)
            continue;
        int m = 0;
        for (int k = i; k < n; k++)
            if (items[k]->ops->pre == pre)
                args[m++] = items[k]->arg;
        int r = pre(tx, args, m);
        if (r < 0)
            return r;
    }
    return 0;
}

/* n items of one scope (n >= 1) in one transaction, in agent id order; on any failure, each
 * alone. Answers them all. args: room for n. */
static void run_group(struct report_batch *b, struct rb_item **items, int n, void **args)
{
    sort_group(items, n);
    struct store_tx *tx = NULL;
    int r = store_tx_begin(b->store, item_scope(items[0]), 0, &tx);
    if (r < 0) { /* no connection, or the database is gone: the same for each of them */
        for (int i = 0; i < n; i++)
            item_finish(items[i], r);
        return;
    }
    int failed = -1;
    r = run_pres(items, n, args, tx);
    for (int i = 0; i < n && r >= 0; i++) {
        r = item_run(items[i], tx);
        if (r < 0)
            failed = i;
    }
    if (r < 0)
        store_tx_rollback(tx);
    else
        r = store_tx_commit(tx);
    if (r >= 0)
        metrics_orch_agent_commit(b->metrics, (unsigned)n);
    if (r >= 0 || n == 1) {
        for (int i = 0; i < n; i++)
            item_finish(items[i], r);
        return;
    }
    metrics_orch_agent_commit_redone(b->metrics);
    log_info("op=agent.commit items=%d failed_item=%d error=%d: each redone alone", n, failed, r);
    for (int i = 0; i < n; i++) {
        int ri = run_alone(b->store, items[i]);
        if (ri >= 0)
            metrics_orch_agent_commit(b->metrics, 1);
        item_finish(items[i], ri);
    }
}

/* Run the taken items (at most opts.max_items), one transaction per scope. group and args:
 * room for opts.max_items. */
static void run_batch(struct report_batch *b, struct rb_item *list, struct rb_item **group,
                      void **args)
{
    while (list) {
        int n = 0;
        struct rb_item **link = &list;
        const struct rb_item *first = list;
        while (*link) {
            struct rb_item *it = *link;
            if (n == 0 || same_scope(first, it)) {
                *link = it->next;
                it->next = NULL;
                group[n++] = it;
            } else {
                link = &it->next;
            }
        }
        run_group(b, group, n, args);
    }
}

/* Take up to opts.max_items queued items (b->lock held). */
static struct rb_item *take(struct report_batch *b)
{
    struct rb_item *list = b->head, *last = NULL;
    int n = 0;
    for (struct rb_item *it = b->head; it && n < b->opts.max_items; it = it->next) {
        last = it;
        n++;
    }
    b->head = last->next;
    last->next = NULL;
    if (!b->head)
        b->tail = NULL;
    b->queued -= n;
    return list;
}

static void deadline_us(int64_t us, struct timespec *ts)
{
    clock_gettime(CLOCK_COND, ts);
    ts->tv_sec += us / 1000000;
    ts->tv_nsec += (us % 1000000) * 1000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void *committer(void *arg)
{
    struct report_batch *b = arg;
    /* A group never outgrows a batch: opts.max_items. Allocated up front, so that a batch
     * taken is always run. */
    struct rb_item **group = calloc((size_t)b->opts.max_items, sizeof(*group));
    void **args = calloc((size_t)b->opts.max_items, sizeof(*args));
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->more, &b->lock);
        if (!b->head)
            break; /* stopping, and nothing left */
        /* The window: more agents' items join this transaction rather than the next. */
        if (b->opts.window_us > 0 && !b->stopping && b->queued < b->opts.max_items) {
            struct timespec until;
            deadline_us(b->opts.window_us, &until);
            while (b->head && !b->stopping && b->queued < b->opts.max_items &&
                   pthread_cond_timedwait(&b->more, &b->lock, &until) == 0)
                ;
            if (!b->head)
                continue; /* another committer took them */
        }
        struct rb_item *list = take(b);
        bool left = b->head != NULL;
        pthread_mutex_unlock(&b->lock);
        if (left) /* another committer may start on the rest now */
            pthread_cond_signal(&b->more);
        if (group && args) {
            run_batch(b, list, group, args);
        } else { /* out of memory when it started: one at a time */
            while (list) {
                struct rb_item *it = list;
                list = it->next;
                item_finish(it, run_alone(b->store, it));
            }
        }
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    free(group);
    free(args);
    return NULL;
}

int report_batch_start(struct store *store, struct metrics_orch *metrics,
                       const struct report_batch_options *opts, struct report_batch **ret)
{
    if (opts->threads < 1 || opts->max_items < 1 || opts->window_us < 0)
        return -EINVAL;
    struct report_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->threads = calloc((size_t)opts->threads, sizeof(*b->threads));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_COND);
    int r = b->threads ? -pthread_cond_init(&b->more, &ca) : -ENOMEM;
    pthread_condattr_destroy(&ca);
    if (r < 0) {
        free(b->threads);
        free(b);
        return r;
    }
    pthread_mutex_init(&b->lock, NULL);
    b->store = store;
    b->metrics = metrics;
    b->opts = *opts;
    for (int i = 0; i < opts->threads; i++) {
        r = -pthread_create(&b->threads[i], NULL, committer, b);
        if (r < 0)
            break;
        b->nthreads++;
    }
    if (r < 0) {
        report_batch_free(b);
        return r;
    }
    *ret = b;
    return 0;
}

void report_batch_stop(struct report_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    pthread_cond_broadcast(&b->more);
    pthread_mutex_unlock(&b->lock);
    for (int i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
    b->nthreads = 0;
}

void report_batch_free(struct report_batch *b)
{
    if (!b)
        return;
    report_batch_stop(b);
    pthread_cond_destroy(&b->more);
    pthread_mutex_destroy(&b->lock);
    free(b->threads);
    free(b);
}

/* Without the committers: run it here and answer at once. */
static void submit_inline(struct store *store, struct http_req *req, const char *tenant_id,
                          const struct report_batch_ops *ops, void *arg)
{
    struct store_tx *tx = NULL;
    int r = store_tx_begin(store, tenant_id, 0, &tx);
    if (r >= 0) {
        r = ops_run_alone(ops, tx, arg);
        if (r < 0)
            store_tx_rollback(tx);
        else
            r = store_tx_commit(tx);
    }
    ops->done(req, r, arg);
}

void report_batch_submit(struct report_batch *b, struct store *store, struct http_req *req,
                         const char *tenant_id, const char *agent_id,
                         const struct report_batch_ops *ops, void *arg)
{
    struct rb_item *it = b ? calloc(1, sizeof(*it)) : NULL;
    if (!it) {
        submit_inline(store, req, tenant_id, ops, arg);
        return;
    }
    it->ops = ops;
    it->arg = arg;
    it->system = tenant_id == NULL;
    if (tenant_id)
        snprintf(it->tenant, sizeof(it->tenant), "%s", tenant_id);
    snprintf(it->order, sizeof(it->order), "%s", agent_id);
    pthread_mutex_lock(&b->lock);
    /* Past RB_QUEUE_BATCHES batches queued (the database is slower than the agents), the
     * exchange commits alone on its loop: the loop then stops reading new requests while
     * it waits, which is the back-pressure a queue without bound would take away. */
    bool alone = b->stopping || b->queued >= RB_QUEUE_BATCHES * b->opts.max_items;
    pthread_mutex_unlock(&b->lock);
    if (alone || !(it->d = http_req_defer(req))) {
        free(it);
        submit_inline(store, req, tenant_id, ops, arg);
        return;
    }
    it->ev = event_new(http_deferred_base(it->d), -1, 0, on_outcome, it);
    if (!it->ev) { /* answer it on this loop, at once */
        struct http_deferred *d = it->d;
        free(it);
        struct rb_item tmp = {.ops = ops, .arg = arg, .r = -ENOMEM};
        http_deferred_resume(d, item_resume, &tmp);
        return;
    }
    pthread_mutex_lock(&b->lock);
    if (b->stopping) { /* stopped meanwhile: nobody would take it */
        pthread_mutex_unlock(&b->lock);
        item_finish(it, run_alone(store, it));
        return;
    }
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->queued++;
    pthread_mutex_unlock(&b->lock);
    pthread_cond_signal(&b->more);
}
