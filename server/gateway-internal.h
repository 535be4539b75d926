/* gateway-internal.h: what the gateway's files share (see gateway.h). Private to
 * gateway.c, gw-hash.c, gw-registry.c, gw-liveness.c, and the gw_thread helper of
 * reaper.c and dispatcher.c.
 *
 * Locking: gw->lock guards the registry (waiters, buckets, looking, nlooking), the notes
 * and the seen list with their indexes, answering and the dispatcher pointer; gw->tick and
 * gw->changed wait on it. self_lock (gw-registry.c)
 * guards which gateway the callbacks posted to the loops may enter. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/id.h"
#include "server/gateway.h"

struct dispatcher;
struct event_base;
struct orchd_config;

#define GW_MAX_NOTES 65536

struct waiter {
    char agent_id[ID_STR_LEN];
    char tenant_id[ID_STR_LEN]; /* the scope of its claims (app_agent_scope()); "" = system */
    struct http_deferred *d;
    char *base;  /* a sync's answer so far, compact JSON text (owned); NULL: a plain long-poll */
    bool assign; /* waits for assignments too, not only cancels */
    struct event *timer;
    struct gateway *gw;
    struct waiter *next_looking; /* in gw->looking while on_wake() has it out */
    bool woken;                  /* woken while out: look again before waiting on */
    struct waiter *hnext;        /* the next in its bucket of gw->buckets */
    int slot;                    /* its index in gw->waiters while registered */
};

/* An index from agent ids to positions in an array (open addressing, at most half full):
 * the entry at position i has its id at keys + i * stride. Entries are never removed one
 * by one, only all at once. */
struct gw_idindex {
    int32_t *slots; /* -1: empty */
    uint32_t mask;  /* number of slots - 1 (a power of two) */
};

struct note {
    char agent_id[ID_STR_LEN];
    long long memory_free, disk_free; /* bytes, -1: not reported */
    double cpu_percent;               /* -1: not reported */
};

struct gateway {
    struct app *app;
    pthread_mutex_t lock;
    pthread_cond_t changed;  /* answering went down (gateway_stop() waits for 0) */
    pthread_cond_t tick;     /* the threads' sleeps: broadcast only when stopping */
    struct waiter **waiters; /* agents waiting on this node, in no order */
    int nwaiters;
    struct waiter **buckets; /* the same by agent id: chains by gw_hash_id() & bucket_mask */
    uint32_t bucket_mask;
    int nlooking; /* waiters on_wake() took out to look for work: their slots stay theirs */
    struct waiter *looking; /* those waiters, so that a wake-up meanwhile is not lost */
    int max_waiters;        /* gateway.max_waiters */
    struct note *notes;     /* heartbeats since the last flush */
    int nnotes, capnotes;
    struct gw_idindex note_index; /* notes by agent id */
    char (*seen)[ID_STR_LEN];     /* agents that heartbeated on this node since start */
    int nseen, capseen;
    int maxseen; /* seen's bound: room for every agent the node may hold, and as many again
                  * that came and went (past it, every heartbeat is written as a first) */
    struct gw_idindex seen_index; /* seen by agent id */
    atomic_bool stop;
    int answering; /* waiters gateway_stop() has posted an answer for, not yet answered */
    struct dispatcher *dispatcher; /* borrowed (gateway_set_dispatcher()), or NULL */
    pthread_t t_liveness, t_checker, t_wakeups;
    bool started;
};

/* gw-hash.c */
uint32_t gw_hash_id(const char *id);
/* Room for max_entries (no more may be put). Returns 0 or -ENOMEM. */
int gw_idindex_init(struct gw_idindex *x, uint32_t max_entries);
void gw_idindex_free(struct gw_idindex *x);
void gw_idindex_clear(struct gw_idindex *x);
/* The position of id, or -1. */
int32_t gw_idindex_find(const struct gw_idindex *x, const char *id, const void *keys,
                        size_t stride);
/* Add id at pos (id not in x yet). */
void gw_idindex_put(struct gw_idindex *x, const char *id, int32_t pos);

/* A background thread that sleeps until its next round or until it is stopped (the
 * dispatcher's, the reaper's). */
struct gw_thread {
    pthread_t t;
    pthread_mutex_t lock;
    pthread_cond_t tick; /* broadcast only when stopping */
    atomic_bool stop;
};

/* gateway.c */
/* Start main(arg) on th (caller-owned memory). Returns 0 or -errno (then nothing runs). */
int gw_thread_start(struct gw_thread *th, void *(*main)(void *), void *arg);
/* Sleep ms on the monotonic clock, or until gw_thread_stop(). */
void gw_thread_sleep(struct gw_thread *th, int64_t ms);
/* Tell the thread to stop, wake it, join it. */
void gw_thread_stop(struct gw_thread *th);

/* A gateway with its locks and tables, no thread started (app borrowed). *ret is untouched
 * on failure. Returns 0 or -ENOMEM. */
int gw_new(struct app *app, int max_waiters, struct gateway **ret);
/* Free gw and what it owns (its threads joined, no waiter left, no loop using it). */
void gw_free(struct gateway *gw);
/* A failure of the store, logged at the level it deserves. */
void gw_log_store_failure(const char *op, int r);
/* Sleep ms, or until gateway_stop(). */
void gw_sleep_ms(struct gateway *gw, int64_t ms);
/* A condition variable whose timed waits run on CLOCK_MONOTONIC. Returns 0 or -errno. */
int gw_cond_init_mono(pthread_cond_t *c);

/* gw-registry.c */
/* The registry's index; gw->lock held by the caller. Whoever removes a waiter owns it: it
 * alone answers and frees it, on the waiter's loop thread. add: w not registered, and
 * fewer than max_waiters are. remove: false when w was not registered (another owns it).
 * find: a waiter of agent_id held on the loop base (NULL: any loop), or NULL. clear: forget
 * them all (their owner is whoever took the list). */
void gw_registry_add_locked(struct gateway *gw, struct waiter *w);
bool gw_registry_remove_locked(struct gateway *gw, struct waiter *w);
struct waiter *gw_registry_find_locked(struct gateway *gw, const char *agent_id,
                                       struct event_base *base);
void gw_registry_clear_locked(struct gateway *gw);
/* Make gw the gateway the loops' callbacks enter (NULL: none; then wait until the last
 * callback that entered the old one has left). */
void gw_self_set(struct gateway *gw);
/* gateway_stop()'s answer to a waiter (posted to its loop), see gateway.c. */
void gw_answer_at_stop(void *arg);
/* Threads: the once-a-second check of waiting agents, the wake-up consumer. */
void *gw_checker_main(void *arg);
void *gw_wakeups_main(void *arg);

/* gw-liveness.c */
/* Thread: the batched liveness flush, every quarter heartbeat interval. */
void *gw_liveness_main(void *arg);
/* How late a heartbeat may come (a busy agent, a slow exchange) before an idle agent's
 * stored liveness, rewritten only every gw_liveness_refresh_ms(), would run out. */
#define GW_LIVENESS_SLACK_MS 2000
/* How old an idle agent's stored liveness (agents.last_heartbeat_at) gets before a heartbeat
 * rewrites it: the stored time must stay within agent.online_window until the next
 * heartbeat after it has been flushed (one interval, two flush rounds, the slack). 0: every
 * heartbeat is written. */
int64_t gw_liveness_refresh_ms(const struct orchd_config *cfg);
/* Write the heartbeats noted since the last flush in one batch. */
void gw_flush_liveness(struct gateway *gw);
