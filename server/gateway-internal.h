/* gateway-internal.h: what the gateway's files share (see gateway.h). Private to
 * gateway.c, gw-registry.c, gw-liveness.c, reaper.c and dispatcher.c.
 *
 * Locking: gw->lock guards the registry (waiters, looking, nlooking), the notes and the
 * seen list, and answering; gw->tick and gw->changed wait on it. self_lock (gw-registry.c)
 * guards which gateway the callbacks posted to the loops may enter. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/id.h"
#include "server/gateway.h"

struct dispatcher;

#define GW_MAX_NOTES 65536

struct waiter {
    char agent_id[ID_STR_LEN];
    char tenant_id[ID_STR_LEN]; /* the scope of its claims (app_agent_scope()); "" = system */
    struct http_deferred *d;
    json_t *base; /* a sync's answer so far (owned), or NULL for a plain long-poll */
    bool assign;  /* waits for assignments too, not only cancels */
    struct event *timer;
    struct gateway *gw;
    struct waiter *next_looking; /* in gw->looking while on_wake() has it out */
    bool woken;                  /* woken while out: look again before waiting on */
};

struct note {
    char agent_id[ID_STR_LEN];
    json_t *running; /* [{job_id, epoch}] */
};

struct gateway {
    struct app *app;
    pthread_mutex_t lock;
    pthread_cond_t changed;  /* answering went down (gateway_stop() waits for 0) */
    pthread_cond_t tick;     /* the threads' sleeps: broadcast only when stopping */
    struct waiter **waiters; /* agents waiting on this node; few enough for a linear scan */
    int nwaiters;
    int nlooking; /* waiters on_wake() took out to look for work: their slots stay theirs */
    struct waiter *looking; /* those waiters, so that a wake-up meanwhile is not lost */
    int max_waiters;        /* gateway.max_waiters */
    struct note *notes;     /* heartbeats since the last flush */
    int nnotes;
    char **seen; /* agents that heartbeated on this node since start */
    int nseen;
    atomic_bool stop;
    int answering; /* waiters gateway_stop() has posted an answer for, not yet answered */
    struct dispatcher *dispatcher; /* owned; NULL when dispatch.enabled is false */
    pthread_t t_reaper, t_checker, t_wakeups;
    bool started;
};

/* gateway.c */
/* A failure of the store, logged at the level it deserves. */
void gw_log_store_failure(const char *op, int r);
/* Sleep ms, or until gateway_stop(). */
void gw_sleep_ms(struct gateway *gw, int64_t ms);
/* A condition variable whose timed waits run on CLOCK_MONOTONIC. Returns 0 or -errno. */
int gw_cond_init_mono(pthread_cond_t *c);

/* gw-registry.c */
/* Make gw the gateway the loops' callbacks enter (NULL: none; then wait until the last
 * callback that entered the old one has left). */
void gw_self_set(struct gateway *gw);
/* gateway_stop()'s answer to a waiter (posted to its loop), see gateway.c. */
void gw_answer_at_stop(void *arg);
/* Threads: the once-a-second check of waiting agents, the wake-up consumer. */
void *gw_checker_main(void *arg);
void *gw_wakeups_main(void *arg);

/* gw-liveness.c */
/* Write the heartbeats noted since the last flush in one batch. */
void gw_flush_liveness(struct gateway *gw);

/* reaper.c */
/* Thread: the liveness flush, expired leases, silent agents, log retention. */
void *gw_reaper_main(void *arg);
