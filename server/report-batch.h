/* report-batch.h: group commit of the agents' exchanges (heartbeats, reports, syncs).
 *
 * One commit costs a WAL flush (about 0.24 ms here, docs/scaling.md); an exchange that
 * commits on its own loop thread pays it alone and holds the loop meanwhile. Here the
 * handler checks the request, defers it and queues its work; a few committer threads each
 * take what is queued (what came while the previous commit was in flight, plus what comes
 * within agent.batch_window_us, at most agent.batch_max items) and run the items of one
 * tenant scope in ONE transaction (in agent id order), so that many agents share one
 * commit. Each item is answered on its request's loop once that COMMIT has returned, never
 * before: an acknowledged report is durable.
 *
 * Items never share a transaction across scopes (RLS: a tenant's statements run in its
 * scope, a shared pool's agents in the system scope). When an item fails (a store error)
 * or the COMMIT does, the batch is rolled back and each of its items redone in a
 * transaction of its own, so that one item's failure is its own only
 * (orch_agent_commit_redone_total).
 */
#pragma once

#include <stdint.h>

#include "server/http.h"
#include "server/store.h"

struct metrics_orch;
struct report_batch;

struct report_batch_options {
    int threads;       /* committer threads, >= 1 */
    int64_t window_us; /* how long a committer waits for more items once it has one (0 = not) */
    int max_items;     /* items at most in one transaction, >= 1 */
};

/* The work of one exchange. */
struct report_batch_ops {
    /* Run the exchange's statements in tx (in the scope it was submitted with), on a
     * committer thread. May run more than once (after a neighbour's failure the batch is
     * rolled back and each item redone alone): it must change nothing outside tx, and reset
     * what it produced the time before. Returns 0, or < 0 (a store error, -ENOMEM): tx
     * then does not commit. */
    int (*run)(struct store_tx *tx, void *arg);
    /* Optional: once per transaction, before any item's run(), over the args of every item
     * of the transaction with this same pre, in the order they will run (n >= 1; n = 1 when
     * an item is redone alone). It runs the statements that serve many exchanges at once
     * (one statement for a group's many rows, not one each) and leaves each arg what its
     * run() then answers with. The same rules as run(): it may run again, must change
     * nothing outside tx, and returns 0 or < 0 (the transaction then does not commit). */
    int (*pre)(struct store_tx *tx, void *const *args, int n);
    /* Once, on the request's loop thread: r = 0 after run's work committed, else the error
     * (nothing of it kept). Replies to req (http_reply_*(), or defers it again), does what
     * follows a commit, and frees arg. */
    void (*done)(struct http_req *req, int r, void *arg);
};

/* Start the committers on store (borrowed; metrics borrowed, may be NULL). Returns 0 with
 * *ret, -EINVAL on bad options, -ENOMEM, or the error of a thread that did not start. */
int report_batch_start(struct store *store, struct metrics_orch *metrics,
                       const struct report_batch_options *opts, struct report_batch **ret);

/* Run what is queued, answer it (the replies are queued on the loops, which must still run)
 * and join the threads. Items submitted from then on run on their own loop thread. Accepts
 * NULL. */
void report_batch_stop(struct report_batch *b);
/* Free b once nothing submits to it any more (the loops have stopped); stops it first if
 * need be. Accepts NULL. */
void report_batch_free(struct report_batch *b);

/* Run ops on req's exchange in the scope tenant_id (copied; NULL = the system scope): on
 * b's committers, or, when b is NULL, stopping, or out of memory, at once on this thread in
 * a transaction of its own. agent_id (copied): the calling agent's id; the items of one
 * transaction run in agent id order (the order in which the dispatcher and the heartbeat
 * flush lock agents), one agent's in the order they came. Either way ops->done() runs
 * exactly once and replies; the handler returns after this call. Call it from req's
 * handler. */
void report_batch_submit(struct report_batch *b, struct store *store, struct http_req *req,
                         const char *tenant_id, const char *agent_id,
                         const struct report_batch_ops *ops, void *arg);
