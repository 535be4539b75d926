/* gateway.c: long-polls, the dispatcher, the reaper and batched liveness (see gateway.h). */
#include "server/gateway.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/logs-retention.h"

/* Key of the reaper's advisory lock ("orchreap"). */
#define REAPER_LOCK_KEY "7957688149386658160"
#define GW_MAX_NOTES    65536
/* What an agent is told to wait before it asks again when this node holds as many
 * long-polls as gateway.max_waiters allows: a slot comes free as held ones are answered. */
#define GW_BUSY_RETRY_AFTER "5"

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
    int answering;    /* waiters gateway_stop() has posted an answer for, not yet answered */
    atomic_bool kick; /* a round is wanted now */
    pthread_t t_dispatch, t_reaper, t_checker, t_wakeups;
    bool started;
};

/* A failure of the store: while the database is unreachable every round of every thread
 * fails alike, and the store has said so once (op=store state=unreachable). */
static void log_store_failure(const char *op, int r)
{
    if (r == -ECONNRESET)
        log_debug("op=%s error=%s", op, strerror(-r));
    else
        log_warn("op=%s error=%s", op, strerror(-r));
}

/* --- long-polls ------------------------------------------------------------------------------ */

static const struct store_stmt q_deliver = STORE_STMT(
    "gw_deliver",
    "WITH d AS (UPDATE jobs SET delivered_at = now(),"
    "                  lease_expires_at = now() + make_interval(secs => $2::int)"
    "           WHERE agent_id = $1 AND status = 'assigned'"
    "           AND $4::bool AND (delivered_at IS NULL OR $3::bool) RETURNING id),"
    " c AS (UPDATE jobs SET cancel_sent = true WHERE agent_id = $1 AND cancel_requested"
    "         AND NOT cancel_sent AND status IN ('assigned', 'running') RETURNING id, epoch),"
    " a AS (SELECT v.doc FROM assignment_view v JOIN d USING (id))"
    " SELECT json_build_object("
    "   'assignments', coalesce((SELECT json_agg(doc) FROM a), '[]'), 'lease_s', $2::int,"
    "   'cancel', coalesce((SELECT json_agg(json_build_object('job_id', id, 'epoch', epoch))"
    "                         FROM c), '[]')),"
    "  (SELECT count(*) FROM a) + (SELECT count(*) FROM c)",
    4);

int gateway_claim(struct app *app, struct store_tx *tx, const char *agent_id, bool assign,
                  bool again, char **ret)
{
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    const char *p[] = {agent_id, lease, again ? "true" : "false", assign ? "true" : "false"};
    PGresult *res = NULL;
    *ret = NULL;
    int r = store_tx_exec(tx, &q_deliver, p, &res);
    if (r < 0)
        return r;
    if (r == 1 && strcmp(PQgetvalue(res, 0, 1), "0") != 0) {
        *ret = strdup(PQgetvalue(res, 0, 0));
        if (!*ret) {
            PQclear(res);
            return -ENOMEM; /* the caller rolls back: what was claimed stays undelivered */
        }
    }
    PQclear(res);
    return 0;
}

/* gateway_claim() in a transaction of its own, in the scope of tenant (NULL: system). */
static int deliver(struct app *app, const char *tenant, const char *agent, bool assign, char **ret)
{
    struct store_tx *tx = NULL;
    *ret = NULL;
    int r = store_tx_begin(app->store, tenant, 0, &tx);
    if (r < 0)
        return r;
    r = gateway_claim(app, tx, agent, assign, false, ret);
    if (r < 0) {
        store_tx_rollback(tx);
        return r;
    }
    int c = store_tx_commit(tx);
    if (r >= 0 && c < 0) {
        FREE_AND_NULL(*ret); /* not claimed after all */
        r = c;
    }
    return r;
}

static const char no_assignments[] = "{\"assignments\":[]}";

/* base (stolen; NULL for a plain long-poll) plus the claimed assignments' text (or none). */
static json_t *answer_doc(json_t *base, const char *assigned)
{
    json_t *a = json_loads(assigned ? assigned : no_assignments, 0, NULL);
    if (a && base)
        json_object_update(base, a);
    else if (!base)
        return a;
    json_decref(a);
    return base;
}

/* Remove w from the registry (locked by the caller). Whoever removes a waiter owns it: it
 * alone answers and frees it, on the waiter's loop thread. Returns false when w was not
 * registered (another owns it). */
static bool unregister_locked(struct gateway *gw, struct waiter *w)
{
    bool found = false;
    for (int i = 0; i < gw->nwaiters && !found; i++) {
        if (gw->waiters[i] == w) {
            gw->waiters[i] = gw->waiters[--gw->nwaiters];
            found = true;
        }
    }
    return found;
}

/* Free w (unregistered, answered). */
static void waiter_free(struct waiter *w)
{
    json_decref(w->base);
    if (w->timer)
        event_free(w->timer);
    free(w);
}

/* Answer w 503 (it could not be held: the registry is full, or out of memory) and free it.
 * A 200 with nothing in it would send the agent straight back: a hot loop. */
static void finish_busy(struct waiter *w, const char *detail)
{
    http_deferred_reply_problem(w->d, PROBLEM_UNAVAILABLE, detail, GW_BUSY_RETRY_AFTER);
    waiter_free(w);
}

static const char registry_full[] = "this node holds as many waiting agents as it may; retry later";

/* Answer and free w. On w's loop thread, with w already unregistered. */
static void finish(struct waiter *w, const char *body)
{
    if (w->base)
        http_deferred_reply_json(w->d, 200, answer_doc(TAKE_PTR(w->base), body));
    else if (body)
        http_deferred_reply_json_text(w->d, 200, body, strlen(body));
    else
        http_deferred_reply_json_text(w->d, 200, no_assignments, sizeof(no_assignments) - 1);
    waiter_free(w);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    struct gateway *gw = w->gw;
    pthread_mutex_lock(&gw->lock);
    bool mine = unregister_locked(gw, w);
    pthread_mutex_unlock(&gw->lock);
    if (mine)
        finish(w, NULL); /* else its owner has posted its answer to this loop */
}

/* What gateway_wake() posts to the loop of a waiting agent. */
struct wake {
    char agent_id[ID_STR_LEN];
    struct event_base *base;
};

/* The running gateway, for callbacks posted to the loops: they enter it (or find none,
 * once gateway_stop() has begun) and leave it, and gateway_stop() frees it only after the
 * last one has left. */
static pthread_mutex_t self_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t self_left = PTHREAD_COND_INITIALIZER;
static struct gateway *gateway_self;
static int self_users;

static struct gateway *self_enter(void)
{
    pthread_mutex_lock(&self_lock);
    struct gateway *gw = gateway_self;
    if (gw)
        self_users++;
    pthread_mutex_unlock(&self_lock);
    return gw;
}

static void self_leave(struct gateway *gw)
{
    (void)gw;
    pthread_mutex_lock(&self_lock);
    self_users--;
    pthread_cond_broadcast(&self_left);
    pthread_mutex_unlock(&self_lock);
}

static void on_wake_with(struct gateway *gw, struct wake *wk);

/* On the loop of base: look again for the agent's waiter of this loop. It is taken out of
 * the registry while the database is asked (so that nobody else answers or frees it
 * meanwhile), and put back when there is nothing for it, unless a newer request of the
 * agent has come, which then holds on instead. */
static void on_wake(void *arg)
{
    struct wake *wk = arg;
    struct gateway *gw = self_enter();
    if (!gw) {
        free(wk);
        return;
    }
    on_wake_with(gw, wk);
    self_leave(gw);
}

/* Take w out of gw->looking (locked by the caller). */
static void looking_remove_locked(struct gateway *gw, struct waiter *w)
{
    for (struct waiter **p = &gw->looking; *p; p = &(*p)->next_looking) {
        if (*p == w) {
            *p = w->next_looking;
            w->next_looking = NULL;
            return;
        }
    }
}

/* Bound on looking again for a waiter woken while it was out; past it the checker's next
 * round (within a second) finds what the wake-up was for. */
#define WAKE_RELOOKS 3

static void on_wake_with(struct gateway *gw, struct wake *wk)
{
    struct waiter *w = NULL;
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < gw->nwaiters && !w; i++)
        if (strcmp(gw->waiters[i]->agent_id, wk->agent_id) == 0 &&
            http_deferred_base(gw->waiters[i]->d) == wk->base)
            w = gw->waiters[i];
    if (w) {
        unregister_locked(gw, w);
        gw->nlooking++;
        w->woken = false;
        w->next_looking = gw->looking;
        gw->looking = w;
    }
    pthread_mutex_unlock(&gw->lock);
    free(wk);
    if (!w)
        return;
    char *body = NULL;
    bool found = false;
    for (int looks = 0;; looks++) {
        found = deliver(gw->app, w->tenant_id[0] ? w->tenant_id : NULL, w->agent_id, w->assign,
                        &body) == 0 &&
                body;
        /* A wake-up that came while the database was asked (a cancel or an assignment
         * committed after this look began) would be lost: look again. */
        pthread_mutex_lock(&gw->lock);
        bool again = !found && w->woken && looks < WAKE_RELOOKS && !atomic_load(&gw->stop);
        w->woken = false;
        if (!again)
            break; /* with the lock held */
        pthread_mutex_unlock(&gw->lock);
    }
    /* Nothing yet: wait on (the checker or the timeout answers), unless superseded. Its
     * slot was kept (nlooking), so there is room. */
    looking_remove_locked(gw, w);
    gw->nlooking--;
    bool newer = found || atomic_load(&gw->stop);
    for (int i = 0; i < gw->nwaiters && !newer; i++)
        newer = strcmp(gw->waiters[i]->agent_id, w->agent_id) == 0;
    if (!newer)
        gw->waiters[gw->nwaiters++] = w;
    pthread_mutex_unlock(&gw->lock);
    if (newer)
        finish(w, body);
    free(body);
}

static void answer_now(void *arg)
{
    struct waiter *w = arg;
    finish(w, NULL);
}

/* Post on_wake for w to w's loop. gw->lock held (w is registered). */
static void post_wake(struct waiter *w)
{
    struct wake *wk = malloc(sizeof(*wk));
    if (!wk)
        return; /* the checker looks again within a second */
    memcpy(wk->agent_id, w->agent_id, sizeof(wk->agent_id));
    wk->base = http_deferred_base(w->d);
    if (http_loop_post(wk->base, on_wake, wk) < 0)
        free(wk);
}

void gateway_kick_dispatch(struct gateway *gw)
{
    if (gw)
        atomic_store(&gw->kick, true);
}

void gateway_notify(struct gateway *gw, const char *agent_id, const char *node)
{
    if (!gw)
        return;
    struct app *app = gw->app;
    if (!node || !node[0] || strcmp(node, app->cfg->node_name) == 0) {
        gateway_wake(gw, agent_id);
        return;
    }
    char queue[128], msg[96];
    snprintf(queue, sizeof(queue), "orch.gw.%s", node);
    snprintf(msg, sizeof(msg), "{\"agent_id\":\"%s\"}", agent_id);
    bus_publish(app->bus, queue, msg, strlen(msg), 2000);
}

void gateway_wake(struct gateway *gw, const char *agent_id)
{
    if (!gw)
        return;
    pthread_mutex_lock(&gw->lock);
    bool posted = false;
    for (int i = 0; i < gw->nwaiters && !posted; i++) {
        struct waiter *w = gw->waiters[i];
        if (strcmp(w->agent_id, agent_id) == 0) {
            post_wake(w);
            posted = true;
        }
    }
    /* Out for a look (on_wake()): it looks again before it waits on. */
    for (struct waiter *w = gw->looking; w && !posted; w = w->next_looking)
        if (strcmp(w->agent_id, agent_id) == 0)
            w->woken = true;
    pthread_mutex_unlock(&gw->lock);
}

void gateway_poll(struct http_req *req)
{
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    const char *ws = http_req_query(req, "wait");
    long wait = 25;
    if (ws) {
        char *end = NULL;
        wait = strtol(ws, &end, 10);
        if (!end || *end || wait < 0 || wait > 60) {
            http_reply_problem(req, PROBLEM_VALIDATION, "must be 0 to 60 seconds", "wait");
            return;
        }
    }
    char *body = NULL;
    int r = deliver(app, app_agent_scope(p), p->subject, true, &body);
    if (r < 0) {
        http_reply_error(req, r, "looking for assignments");
        return;
    }
    gateway_answer(req, NULL, body, true, wait);
}

void gateway_supersede(struct gateway *gw, const char *agent_id)
{
    if (!gw)
        return;
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < gw->nwaiters; i++) {
        struct waiter *old = gw->waiters[i];
        if (strcmp(old->agent_id, agent_id) == 0 && unregister_locked(gw, old)) {
            if (http_loop_post(http_deferred_base(old->d), answer_now, old) < 0)
                log_error("op=gateway error=\"cannot answer a superseded long-poll\"");
            break;
        }
    }
    pthread_mutex_unlock(&gw->lock);
}

void gateway_answer(struct http_req *req, json_t *base, char *assigned, bool assign, long wait_s)
{
    struct app *app = http_req_app(req);
    struct gateway *gw = app->gw;
    const struct http_principal *p = http_req_principal(req);
    if (assigned || wait_s <= 0 || !gw) {
        if (base)
            http_reply_json(req, 200, answer_doc(base, assigned));
        else if (assigned)
            http_reply_json_text(req, 200, assigned, strlen(assigned));
        else
            http_reply_json_text(req, 200, no_assignments, sizeof(no_assignments) - 1);
        free(assigned);
        return;
    }
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w) {
        json_decref(base);
        http_reply_error(req, -ENOMEM, "waiting for assignments");
        return;
    }
    snprintf(w->agent_id, sizeof(w->agent_id), "%.36s", p->subject);
    const char *scope = app_agent_scope(p);
    snprintf(w->tenant_id, sizeof(w->tenant_id), "%s", scope ? scope : "");
    w->gw = gw;
    w->base = base;
    w->assign = assign;
    w->d = http_req_defer(req);
    if (!w->d) {
        json_decref(w->base);
        free(w);
        http_reply_error(req, -ENOMEM, "waiting for assignments");
        return;
    }
    w->timer = evtimer_new(http_deferred_base(w->d), on_timeout, w);
    struct timeval tv = {.tv_sec = wait_s};
    if (!w->timer || evtimer_add(w->timer, &tv) < 0) {
        /* Without its timer it would be held until something comes for it. */
        log_error("op=gateway agent=%s error=\"cannot arm the long-poll timer\"", w->agent_id);
        finish_busy(w, "the server cannot hold the request now; retry later");
        return;
    }
    gateway_supersede(gw, w->agent_id);
    pthread_mutex_lock(&gw->lock);
    bool stop = atomic_load(&gw->stop);
    bool full = !stop && gw->nwaiters + gw->nlooking >= gw->max_waiters;
    if (!stop && !full) {
        gw->waiters[gw->nwaiters++] = w;
        /* An assignment made between the first look and the registration: look once
         * more, on this loop, once the handler has returned. */
        post_wake(w);
    }
    pthread_mutex_unlock(&gw->lock);
    if (stop)
        finish(w, NULL);
    else if (full)
        finish_busy(w, registry_full);
    else
        log_debug("op=gateway.hold agent=%s wait_s=%ld", p->subject, wait_s);
}

/* --- liveness ------------------------------------------------------------------------------ */

bool gateway_note_heartbeat(struct gateway *gw, const char *agent_id, const json_t *running)
{
    bool first = true;
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < gw->nseen; i++)
        if (strcmp(gw->seen[i], agent_id) == 0)
            first = false;
    if (first && gw->nseen < GW_MAX_NOTES) {
        char **n = realloc(gw->seen, sizeof(*n) * (size_t)(gw->nseen + 1));
        char *copy = n ? strdup(agent_id) : NULL;
        if (n)
            gw->seen = n;
        if (copy)
            gw->seen[gw->nseen++] = copy;
        else
            first = false; /* out of memory: the next heartbeat counts as first again */
    }
    struct note *slot = NULL;
    for (int i = 0; i < gw->nnotes; i++)
        if (strcmp(gw->notes[i].agent_id, agent_id) == 0)
            slot = &gw->notes[i];
    if (!slot && gw->nnotes < GW_MAX_NOTES) {
        struct note *n = realloc(gw->notes, sizeof(*n) * (size_t)(gw->nnotes + 1));
        if (n) {
            gw->notes = n;
            slot = &gw->notes[gw->nnotes++];
            memset(slot, 0, sizeof(*slot));
            snprintf(slot->agent_id, sizeof(slot->agent_id), "%s", agent_id);
        }
    }
    if (slot) {
        json_decref(slot->running);
        slot->running = json_deep_copy(running);
    }
    pthread_mutex_unlock(&gw->lock);
    return first;
}

/* One batch: every agent heard from since the last flush is online on this node, and the
 * leases of the jobs it runs (as the server knows them) are renewed. Always from after the
 * agent sent its heartbeat, which is what the agent's self-fencing counts on
 * (docs/agent.md, "Leases and self-fencing"). */
static const struct store_stmt q_flush_agents =
    STORE_STMT("gw_flush_agents",
               "UPDATE agents SET last_heartbeat_at = now(), gateway_node = $2,"
               " status = CASE WHEN status = 'offline' THEN 'online' ELSE status END"
               " WHERE id = ANY($1::uuid[])",
               2);

static const struct store_stmt q_renew_leases =
    STORE_STMT("gw_renew_leases",
               "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $4::int)"
               "  FROM unnest($1::uuid[], $2::bigint[], $3::uuid[]) AS r(job_id, epoch, agent_id)"
               " WHERE j.id = r.job_id AND j.epoch = r.epoch AND j.agent_id = r.agent_id"
               "   AND j.status IN ('assigned', 'running')",
               4);

/* After a flush: free the notes, or when it failed put back those of agents not heard
 * from since, so that the renewal is not lost (an agent that was answered counts on it). */
static void requeue_notes(struct gateway *gw, struct note *notes, int n, bool failed)
{
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < n; i++) {
        bool newer = !failed;
        for (int k = 0; k < gw->nnotes && !newer; k++)
            newer = strcmp(gw->notes[k].agent_id, notes[i].agent_id) == 0;
        struct note *v = newer || gw->nnotes >= GW_MAX_NOTES
                             ? NULL
                             : realloc(gw->notes, sizeof(*v) * (size_t)(gw->nnotes + 1));
        if (v) {
            gw->notes = v;
            gw->notes[gw->nnotes++] = notes[i];
        } else {
            json_decref(notes[i].running);
        }
    }
    pthread_mutex_unlock(&gw->lock);
    free(notes);
}

static void flush_liveness(struct gateway *gw)
{
    pthread_mutex_lock(&gw->lock);
    struct note *notes = gw->notes;
    int n = gw->nnotes;
    gw->notes = NULL;
    gw->nnotes = 0;
    pthread_mutex_unlock(&gw->lock);
    if (n == 0)
        return;
    struct buf agents = BUF_INIT, jobs = BUF_INIT, epochs = BUF_INIT, owners = BUF_INIT;
    buf_append_str(&agents, "{");
    buf_append_str(&jobs, "{");
    buf_append_str(&epochs, "{");
    buf_append_str(&owners, "{");
    int nj = 0;
    for (int i = 0; i < n; i++) {
        buf_printf(&agents, "%s%s", i ? "," : "", notes[i].agent_id);
        size_t k;
        json_t *e;
        json_array_foreach(notes[i].running, k, e)
        {
            const char *jid = json_string_value(json_object_get(e, "job_id"));
            json_t *ep = json_object_get(e, "epoch");
            if (!jid || !id_is_valid(jid) || !json_is_integer(ep))
                continue;
            buf_printf(&jobs, "%s%s", nj ? "," : "", jid);
            buf_printf(&epochs, "%s%lld", nj ? "," : "", json_integer_value(ep));
            buf_printf(&owners, "%s%s", nj ? "," : "", notes[i].agent_id);
            nj++;
        }
    }
    buf_append_str(&agents, "}");
    buf_append_str(&jobs, "}");
    buf_append_str(&epochs, "}");
    buf_append_str(&owners, "}");
    struct store_tx *tx = NULL;
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(gw->app->cfg->agent_lease_ms / 1000));
    int r = store_tx_begin(gw->app->store, NULL, STORE_TX_ASYNC_COMMIT, &tx);
    const char *p1[] = {agents.data, gw->app->cfg->node_name};
    const char *p2[] = {jobs.data, epochs.data, owners.data, lease};
    if (r >= 0)
        r = store_tx_exec(tx, &q_flush_agents, p1, NULL);
    if (r >= 0 && nj > 0)
        r = store_tx_exec(tx, &q_renew_leases, p2, NULL);
    if (r >= 0)
        r = store_tx_commit(tx);
    else
        store_tx_rollback(tx);
    if (r < 0)
        log_store_failure("gateway.flush", r);
    requeue_notes(gw, notes, n, r < 0);
    buf_free(&agents);
    buf_free(&jobs);
    buf_free(&epochs);
    buf_free(&owners);
}

/* --- threads ------------------------------------------------------------------------------- */

/* Sleep ms, or until gateway_stop(). On gw->tick, which nothing else broadcasts, so that
 * the once-a-second rounds stay once a second however many long-polls come and go; on the
 * monotonic clock, so that a wall-clock step neither stalls nor hurries them. */
static void sleep_ms(struct gateway *gw, int64_t ms)
{
    struct timespec ts;
    clock_deadline(CLOCK_MONOTONIC, ms, &ts);
    pthread_mutex_lock(&gw->lock);
    while (!atomic_load(&gw->stop) && pthread_cond_timedwait(&gw->tick, &gw->lock, &ts) == 0)
        ; /* a spurious wake-up: sleep on to the deadline */
    pthread_mutex_unlock(&gw->lock);
}

static const struct store_stmt q_dispatch =
    STORE_STMT("gw_dispatch",
               "SELECT job_id, tenant_id, agent_id, epoch, gateway_node"
               "  FROM dispatch_round($1::int, $2::int, $3::int)",
               3);

static void *dispatch_main(void *arg)
{
    struct gateway *gw = arg;
    struct app *app = gw->app;
    struct bus_sub *sub = NULL;
    bus_sub_new(app->cfg->amqp_url, app->cfg->bus_jobs_queue, false, &sub);
    char lease[24], online[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    uint64_t next_tick = 0;
    while (!atomic_load(&gw->stop)) {
        /* A submission (on the bus) or a kick (a slot came free) starts a round at once;
         * otherwise one every tick. The bus is read in short waits so that a kick is seen
         * within a few milliseconds. */
        char *body = NULL;
        size_t len = 0;
        int r = sub ? bus_sub_next(sub, 5, &body, &len) : 0;
        free(body);
        if (r < 0 || !sub)
            sleep_ms(gw, 5);
        bool kicked = atomic_exchange(&gw->kick, false);
        if (r != 1 && !kicked && clock_mono_ns() < next_tick)
            continue;
        next_tick = clock_mono_ns() + (uint64_t)app->cfg->dispatch_tick_ms * 1000000u;
        for (int round = 0; round < 100 && !atomic_load(&gw->stop); round++) {
            const char *p[] = {"100", lease, online};
            PGresult *res = NULL;
            int n = store_exec_once(app->store, NULL, &q_dispatch, p, &res);
            if (n < 0) {
                log_store_failure("dispatch", n);
                break;
            }
            for (int i = 0; i < n; i++) {
                const char *agent = PQgetvalue(res, i, 2);
                const char *node = PQgetvalue(res, i, 4);
                log_info("op=dispatch job=%s tenant=%s agent=%s epoch=%s", PQgetvalue(res, i, 0),
                         PQgetvalue(res, i, 1), agent, PQgetvalue(res, i, 3));
                gateway_notify(gw, agent, PQgetisnull(res, i, 4) ? NULL : node);
            }
            PQclear(res);
            if (n < 100)
                break;
        }
    }
    bus_sub_free(sub);
    return NULL;
}

static const struct store_stmt q_reap =
    STORE_STMT("gw_reap",
               "SELECT pg_try_advisory_xact_lock(" REAPER_LOCK_KEY ")"
               "   AND reap_expired_leases(1000) >= 0",
               0);

static const struct store_stmt q_offline =
    STORE_STMT("gw_offline",
               "UPDATE agents SET status = 'offline', gateway_node = NULL"
               " WHERE status = 'online' AND (last_heartbeat_at IS NULL"
               "       OR last_heartbeat_at < now() - make_interval(secs => $1::int))",
               1);

static void *reaper_main(void *arg)
{
    struct gateway *gw = arg;
    struct app *app = gw->app;
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    int64_t flush_ms =
        app->cfg->agent_heartbeat_ms / 4 > 0 ? app->cfg->agent_heartbeat_ms / 4 : 1000;
    uint64_t next_reap = 0;
    while (!atomic_load(&gw->stop)) {
        /* One line per round (debug): tests count them against the clock. */
        log_debug("op=reaper round=flush");
        flush_liveness(gw);
        if (clock_mono_ns() >= next_reap) {
            next_reap = clock_mono_ns() + 1000000000ull;
            log_debug("op=reaper round=reap");
            struct store_tx *tx = NULL;
            int r = store_tx_begin_system(app->store, &tx);
            if (r == 0) {
                store_tx_exec(tx, &q_reap, NULL, NULL);
                const char *p[] = {online};
                store_tx_exec(tx, &q_offline, p, NULL);
                r = store_tx_commit(tx);
            }
            if (r < 0)
                log_store_failure("reaper", r);
            logs_retention_tick(app);
        }
        sleep_ms(gw, flush_ms);
    }
    flush_liveness(gw);
    return NULL;
}

static const struct store_stmt q_pending = STORE_STMT(
    "gw_pending",
    "SELECT DISTINCT agent_id FROM jobs WHERE agent_id = ANY($1::uuid[])"
    "   AND ((status = 'assigned' AND delivered_at IS NULL)"
    "        OR (cancel_requested AND NOT cancel_sent AND status IN ('assigned', 'running')))",
    1);

/* Once a second: any waiting agent with an undelivered assignment or cancel (a lost
 * wake-up: one that came while on_wake() had the waiter out of the registry to look). */
static void *checker_main(void *arg)
{
    struct gateway *gw = arg;
    while (!atomic_load(&gw->stop)) {
        sleep_ms(gw, 1000);
        struct buf ids = BUF_INIT;
        buf_append_str(&ids, "{");
        pthread_mutex_lock(&gw->lock);
        for (int i = 0; i < gw->nwaiters; i++)
            buf_printf(&ids, "%s%s", i ? "," : "", gw->waiters[i]->agent_id);
        int n = gw->nwaiters;
        pthread_mutex_unlock(&gw->lock);
        /* One line per round (debug): tests count them against the clock. */
        log_debug("op=gateway.check waiters=%d", n);
        buf_append_str(&ids, "}");
        if (n > 0) {
            const char *p[] = {ids.data};
            PGresult *res = NULL;
            int r = store_exec_once(gw->app->store, NULL, &q_pending, p, &res);
            for (int i = 0; i < r; i++)
                gateway_wake(gw, PQgetvalue(res, i, 0));
            PQclear(res);
        }
        buf_free(&ids);
    }
    return NULL;
}

/* Wake-ups from dispatchers on other nodes. */
static void *wakeups_main(void *arg)
{
    struct gateway *gw = arg;
    char queue[128];
    snprintf(queue, sizeof(queue), "orch.gw.%s", gw->app->cfg->node_name);
    struct bus_sub *sub = NULL;
    if (bus_sub_new(gw->app->cfg->amqp_url, queue, true, &sub) < 0)
        return NULL;
    while (!atomic_load(&gw->stop)) {
        char *body = NULL;
        size_t len = 0;
        int r = bus_sub_next(sub, 500, &body, &len);
        if (r < 0) {
            sleep_ms(gw, 1000);
            continue;
        }
        if (r == 1) {
            json_error_t e;
            json_t *m = json_loadb(body, len, 0, &e);
            const char *agent = json_string_value(json_object_get(m, "agent_id"));
            if (agent && id_is_valid(agent))
                gateway_wake(gw, agent);
            json_decref(m);
            free(body);
        }
    }
    bus_sub_free(sub);
    return NULL;
}

/* Free gw and what it owns (its threads joined, no waiter left, no loop using it). */
static void gateway_free(struct gateway *gw)
{
    for (int i = 0; i < gw->nnotes; i++)
        json_decref(gw->notes[i].running);
    free(gw->notes);
    for (int i = 0; i < gw->nseen; i++)
        free(gw->seen[i]);
    free(gw->seen);
    free(gw->waiters);
    pthread_mutex_destroy(&gw->lock);
    pthread_cond_destroy(&gw->changed);
    pthread_cond_destroy(&gw->tick);
    free(gw);
}

/* A condition variable whose timed waits run on CLOCK_MONOTONIC. */
static int cond_init_mono(pthread_cond_t *c)
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

int gateway_start(struct app *app, struct gateway **ret)
{
    struct gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return -ENOMEM;
    gw->app = app;
    gw->max_waiters = (int)app->cfg->gateway_max_waiters;
    gw->waiters = calloc((size_t)gw->max_waiters, sizeof(*gw->waiters));
    if (!gw->waiters) {
        free(gw);
        return -ENOMEM;
    }
    pthread_mutex_init(&gw->lock, NULL);
    if (cond_init_mono(&gw->changed) < 0) {
        pthread_mutex_destroy(&gw->lock);
        free(gw->waiters);
        free(gw);
        return -ENOMEM;
    }
    if (cond_init_mono(&gw->tick) < 0) {
        pthread_cond_destroy(&gw->changed);
        pthread_mutex_destroy(&gw->lock);
        free(gw->waiters);
        free(gw);
        return -ENOMEM;
    }
    pthread_mutex_lock(&self_lock);
    gateway_self = gw;
    pthread_mutex_unlock(&self_lock);
    /* Each thread started is listed, so that a failure stops and joins exactly those. */
    struct {
        pthread_t *t;
        void *(*main)(void *);
        bool want;
    } threads[] = {
        {&gw->t_dispatch, dispatch_main, app->cfg->dispatch_enabled},
        {&gw->t_reaper, reaper_main, true},
        {&gw->t_checker, checker_main, true},
        {&gw->t_wakeups, wakeups_main, true},
    };
    size_t started = 0;
    int r = 0;
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
        pthread_mutex_lock(&self_lock);
        gateway_self = NULL;
        while (self_users > 0)
            pthread_cond_wait(&self_left, &self_lock);
        pthread_mutex_unlock(&self_lock);
        gateway_free(gw);
        return -r;
    }
    gw->started = true;
    *ret = gw;
    return 0;
}

/* gateway_stop()'s answer to a waiter: once all are given, no waiter's timer can fire. */
static void answer_at_stop(void *arg)
{
    struct waiter *w = arg;
    struct gateway *gw = w->gw;
    finish(w, NULL);
    pthread_mutex_lock(&gw->lock);
    gw->answering--;
    pthread_cond_broadcast(&gw->changed);
    pthread_mutex_unlock(&gw->lock);
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
        if (http_loop_post(http_deferred_base(w->d), answer_at_stop, w) == 0)
            gw->answering++;
    }
    gw->nwaiters = 0;
    pthread_cond_broadcast(&gw->tick);
    pthread_mutex_unlock(&gw->lock);
    if (gw->started) {
        if (gw->app->cfg->dispatch_enabled)
            pthread_join(gw->t_dispatch, NULL);
        pthread_join(gw->t_reaper, NULL);
        pthread_join(gw->t_checker, NULL);
        pthread_join(gw->t_wakeups, NULL);
    }
    /* No callback on a loop may still use gw: those posted find none now; those running
     * are waited for, and so are the answers posted above (after them no waiter's timer
     * can fire). */
    pthread_mutex_lock(&self_lock);
    gateway_self = NULL;
    while (self_users > 0)
        pthread_cond_wait(&self_left, &self_lock);
    pthread_mutex_unlock(&self_lock);
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
    gateway_free(gw);
}
