/* gateway.c: start and stop of the gateway and the node's background threads (see
 * gateway.h; the parts are in gw-registry.c, gw-liveness.c, dispatcher.c and reaper.c). */
#include "server/gateway.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/app.h"
#include "server/dispatcher.h"
#include "server/gateway-internal.h"

/* A failure of the store: while the database is unreachable every round of every thread
 * fails alike, and the store has said so once (op=store state=unreachable). */
void gw_log_store_failure(const char *op, int r)
{
    if (r == -ECONNRESET)
        log_debug("op=%s error=%s", op, strerror(-r));
    else
        log_warn("op=%s error=%s", op, strerror(-r));
}

void gateway_kick_dispatch(struct gateway *gw)
{
    if (!gw)
        return;
    /* Under the lock: the dispatcher may be stopping (gateway_set_dispatcher(NULL)). */
    pthread_mutex_lock(&gw->lock);
    dispatcher_kick(gw->dispatcher);
    pthread_mutex_unlock(&gw->lock);
}

void gateway_set_dispatcher(struct gateway *gw, struct dispatcher *d)
{
    if (!gw)
        return;
    pthread_mutex_lock(&gw->lock);
    gw->dispatcher = d;
    pthread_mutex_unlock(&gw->lock);
}

int gw_thread_start(struct gw_thread *th, void *(*main)(void *), void *arg)
{
    atomic_store(&th->stop, false);
    int r = gw_cond_init_mono(&th->tick);
    if (r < 0)
        return r;
    pthread_mutex_init(&th->lock, NULL);
    r = pthread_create(&th->t, NULL, main, arg);
    if (r != 0) {
        pthread_mutex_destroy(&th->lock);
        pthread_cond_destroy(&th->tick);
        return -r;
    }
    return 0;
}

void gw_thread_sleep(struct gw_thread *th, int64_t ms)
{
    struct timespec ts;
    clock_deadline(CLOCK_MONOTONIC, ms, &ts);
    pthread_mutex_lock(&th->lock);
    while (!atomic_load(&th->stop) && pthread_cond_timedwait(&th->tick, &th->lock, &ts) == 0)
        ; /* a spurious wake-up: sleep on to the deadline */
    pthread_mutex_unlock(&th->lock);
}

void gw_thread_stop(struct gw_thread *th)
{
    pthread_mutex_lock(&th->lock);
    atomic_store(&th->stop, true);
    pthread_cond_broadcast(&th->tick);
    pthread_mutex_unlock(&th->lock);
    pthread_join(th->t, NULL);
    pthread_mutex_destroy(&th->lock);
    pthread_cond_destroy(&th->tick);
}

/* Sleep ms, or until gateway_stop(). On gw->tick, which nothing else broadcasts, so that
 * the once-a-second rounds stay once a second however many long-polls come and go; on the
 * monotonic clock, so that a wall-clock step neither stalls nor hurries them. */
void gw_sleep_ms(struct gateway *gw, int64_t ms)
{
    struct timespec ts;
    clock_deadline(CLOCK_MONOTONIC, ms, &ts);
    pthread_mutex_lock(&gw->lock);
    while (!atomic_load(&gw->stop) && pthread_cond_timedwait(&gw->tick, &gw->lock, &ts) == 0)
        ; /* a spurious wake-up: sleep on to the deadline */
    pthread_mutex_unlock(&gw->lock);
}

void gw_free(struct gateway *gw)
{
    free(gw->notes);
    free(gw->seen);
    gw_idindex_free(&gw->note_index);
    gw_idindex_free(&gw->seen_index);
    free(gw->waiters);
    free(gw->buckets);
    pthread_mutex_destroy(&gw->lock);
    pthread_cond_destroy(&gw->changed);
    pthread_cond_destroy(&gw->tick);
    free(gw);
}

int gw_cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r != 0)
        return -r;
    r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (r == 0)
        r = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return -r;
}

int gw_new(struct app *app, int max_waiters, struct gateway **ret)
{
    struct gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return -ENOMEM;
    gw->app = app;
    gw->max_waiters = max_waiters;
    uint32_t nbuckets = 16;
    while (nbuckets < (uint32_t)max_waiters)
        nbuckets *= 2;
    gw->bucket_mask = nbuckets - 1;
    gw->maxseen = max_waiters > GW_MAX_NOTES / 2 ? 2 * max_waiters : GW_MAX_NOTES;
    /* Conditions first: gw_free() destroys them. */
    if (gw_cond_init_mono(&gw->changed) < 0) {
        free(gw);
        return -ENOMEM;
    }
    if (gw_cond_init_mono(&gw->tick) < 0) {
        pthread_cond_destroy(&gw->changed);
        free(gw);
        return -ENOMEM;
    }
    pthread_mutex_init(&gw->lock, NULL);
    gw->waiters = calloc((size_t)gw->max_waiters, sizeof(*gw->waiters));
    gw->buckets = calloc(nbuckets, sizeof(*gw->buckets));
    if (!gw->waiters || !gw->buckets || gw_idindex_init(&gw->note_index, GW_MAX_NOTES) < 0 ||
        gw_idindex_init(&gw->seen_index, (uint32_t)gw->maxseen) < 0) {
        gw_free(gw);
        return -ENOMEM;
    }
    *ret = gw;
    return 0;
}

int gateway_start(struct app *app, struct gateway **ret)
{
    struct gateway *gw = NULL;
    int r = gw_new(app, (int)app->cfg->gateway_max_waiters, &gw);
    if (r < 0)
        return r;
    gw_self_set(gw);
    /* Each thread started is listed, so that a failure stops and joins exactly those. */
    struct {
        pthread_t *t;
        void *(*main)(void *);
        bool want;
    } threads[] = {
        {&gw->t_liveness, gw_liveness_main, true},
        {&gw->t_checker, gw_checker_main, true},
        {&gw->t_wakeups, gw_wakeups_main, true},
    };
    size_t started = 0;
    for (; started < ELEMENTSOF(threads) && r == 0; started++)
        if (threads[started].want)
            r = pthread_create(threads[started].t, NULL, threads[started].main, gw);
    if (r != 0) {
        started--; /* the one that failed */
        log_error("op=gateway.start error=\"cannot start threads: %s\"", strerror(r));
        pthread_mutex_lock(&gw->lock);
        atomic_store(&gw->stop, true);
        pthread_cond_broadcast(&gw->tick);
        pthread_mutex_unlock(&gw->lock);
        for (size_t i = 0; i < started; i++)
            if (threads[i].want)
                pthread_join(*threads[i].t, NULL);
        /* No long-poll can have come yet (the HTTP server starts after this). */
        gw_self_set(NULL);
        gw_free(gw);
        return -r;
    }
    gw->started = true;
    *ret = gw;
    return 0;
}

void gateway_stop(struct gateway *gw)
{
    if (!gw)
        return;
    /* Every waiting long-poll gets its (empty) answer on its own loop. */
    pthread_mutex_lock(&gw->lock);
    atomic_store(&gw->stop, true);
    for (int i = 0; i < gw->nwaiters; i++) {
        struct waiter *w = gw->waiters[i];
        if (http_loop_post(http_deferred_base(w->d), gw_answer_at_stop, w) == 0)
            gw->answering++;
    }
    gw_registry_clear_locked(gw);
    pthread_cond_broadcast(&gw->tick);
    pthread_mutex_unlock(&gw->lock);
    if (gw->started) {
        pthread_join(gw->t_liveness, NULL);
        pthread_join(gw->t_checker, NULL);
        pthread_join(gw->t_wakeups, NULL);
    }
    /* No callback on a loop may still use gw: those posted find none now; those running
     * are waited for, and so are the answers posted above (after them no waiter's timer
     * can fire). */
    gw_self_set(NULL);
    pthread_mutex_lock(&gw->lock);
    int64_t deadline = clock_mono_ns() + 5000000000LL;
    while (gw->answering > 0 && (int64_t)clock_mono_ns() < deadline) {
        struct timespec ts;
        clock_deadline(CLOCK_MONOTONIC, 50, &ts);
        pthread_cond_timedwait(&gw->changed, &gw->lock, &ts);
    }
    bool answered = gw->answering == 0;
    pthread_mutex_unlock(&gw->lock);
    if (!answered) {
        /* A loop that does not run any more: leave gw to it rather than free it. */
        log_error("op=gateway.stop error=\"long-polls still unanswered\"");
        return;
    }
    gw_free(gw);
}
