/* gw-registry.c: the long-polls held on this node (see gateway.h): the registry of
 * waiting agents, wake-ups (local, from other nodes' dispatchers through orch.gw.<node>,
 * and the once-a-second check), supersede, answer and claim. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/agent.h"
#include "proto/bus.h"
#include "server/api.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/config.h"
#include "server/gateway-internal.h"

/* What an agent is told to wait before it asks again when this node holds as many
 * long-polls as gateway.max_waiters allows: a slot comes free as held ones are answered. */
#define GW_BUSY_RETRY_AFTER "5"

/* One row a claimed assignment (kind 'a') or cancel ('c', only id and epoch); the answer is
 * built in C with proto/'s encoders, the one definition of what the agent decodes. A
 * package job gets its package's digest and size (so that the agent can use its cache)
 * and the package's entrypoint when the job names none. An assignment delivered before is
 * handed out again ($3) unless the agent holds it already ($5, $6: its running and spooled
 * attempts), which would rewrite the row for an answer the agent ignores. */
static const struct store_stmt q_deliver = STORE_STMT(
    "gw_deliver",
    "WITH d AS (UPDATE jobs SET delivered_at = now(),"
    "                  lease_expires_at = now() + make_interval(secs => $2::int)"
    "           WHERE agent_id = $1 AND status = 'assigned'"
    "           AND $4::bool AND (delivered_at IS NULL OR ($3::bool AND NOT EXISTS ("
    "                 SELECT 1 FROM unnest($5::uuid[], $6::bigint[]) AS h(id, epoch)"
    "                  WHERE h.id = jobs.id AND h.epoch = jobs.epoch)))"
    "           RETURNING id, tenant_id, epoch, attempt, command, args, env, params, package_id,"
    "                     entrypoint, timeout_ms),"
    " c AS (UPDATE jobs SET cancel_sent = true WHERE agent_id = $1 AND cancel_requested"
    "         AND NOT cancel_sent AND status IN ('assigned', 'running') RETURNING id, epoch)"
    " SELECT 'a', d.id, d.epoch, d.attempt, d.command, d.args::text, d.env::text,"
    "        d.params::text, d.package_id, coalesce(d.entrypoint, p.entrypoint), d.timeout_ms,"
    "        encode(p.sha256, 'hex'), p.size_bytes"
    "   FROM d LEFT JOIN packages p ON p.id = d.package_id AND p.tenant_id = d.tenant_id"
    " UNION ALL"
    " SELECT 'c', c.id, c.epoch, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
    "   FROM c",
    6);

enum {
    DELIVER_KIND,
    DELIVER_ID,
    DELIVER_EPOCH,
    DELIVER_ATTEMPT,
    DELIVER_COMMAND,
    DELIVER_ARGS,
    DELIVER_ENV,
    DELIVER_PARAMS,
    DELIVER_PACKAGE_ID,
    DELIVER_ENTRYPOINT,
    DELIVER_TIMEOUT_MS,
    DELIVER_SHA256,
    DELIVER_SIZE,
};

/* Column c of row i: NULL when SQL NULL. */
static const char *col(const PGresult *res, int i, int c)
{
    return PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
}

/* Column c of row i (jsonb as text) parsed, or NULL when SQL NULL; -ENOMEM when it
 * cannot be parsed (the database's own JSON: only memory can fail it). */
static int col_json(const PGresult *res, int i, int c, json_t **ret)
{
    const char *text = col(res, i, c);
    *ret = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return text && !*ret ? -ENOMEM : 0;
}

/* The assignment of row i of q_deliver, appended to list. */
static int append_assignment(json_t *list, const PGresult *res, int i)
{
    _cleanup_json_ json_t *args = NULL;
    _cleanup_json_ json_t *env = NULL;
    _cleanup_json_ json_t *params = NULL;
    const char *size = col(res, i, DELIVER_SIZE);
    struct proto_assignment a = {
        .epoch = strtoll(PQgetvalue(res, i, DELIVER_EPOCH), NULL, 10),
        .attempt = strtoll(PQgetvalue(res, i, DELIVER_ATTEMPT), NULL, 10),
        .command = col(res, i, DELIVER_COMMAND),
        .package_id = col(res, i, DELIVER_PACKAGE_ID),
        .entrypoint = col(res, i, DELIVER_ENTRYPOINT),
        .package_sha256 = col(res, i, DELIVER_SHA256),
        .package_size = size ? strtoll(size, NULL, 10) : -1,
        .timeout_ms = strtoll(PQgetvalue(res, i, DELIVER_TIMEOUT_MS), NULL, 10),
    };
    snprintf(a.job_id, sizeof(a.job_id), "%s", PQgetvalue(res, i, DELIVER_ID));
    if (col_json(res, i, DELIVER_ARGS, &args) < 0 || col_json(res, i, DELIVER_ENV, &env) < 0 ||
        col_json(res, i, DELIVER_PARAMS, &params) < 0)
        return -ENOMEM;
    a.args = args;
    a.env = env;
    a.params = params;
    json_t *doc = proto_assignment_encode(&a);
    return doc && json_array_append_new(list, doc) == 0 ? 0 : -ENOMEM;
}

/* The answer to the claim in res: {"assignments": [...], "lease_s": N, "cancel": [...]},
 * as text into *ret. */
static int claim_answer(const PGresult *res, long long lease_s, char **ret)
{
    int n = PQntuples(res);
    _cleanup_free_ struct proto_job_ref *cancel = calloc((size_t)n, sizeof(*cancel));
    _cleanup_json_ json_t *list = json_array();
    _cleanup_json_ json_t *doc = NULL;
    size_t ncancel = 0;

    if (!cancel || !list)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        if (PQgetvalue(res, i, DELIVER_KIND)[0] == 'c') {
            struct proto_job_ref *ref = &cancel[ncancel++];
            snprintf(ref->job_id, sizeof(ref->job_id), "%s", PQgetvalue(res, i, DELIVER_ID));
            ref->epoch = strtoll(PQgetvalue(res, i, DELIVER_EPOCH), NULL, 10);
        } else if (append_assignment(list, res, i) < 0) {
            return -ENOMEM;
        }
    }
    doc = json_pack("{s:O, s:I, s:o}", "assignments", list, "lease_s", (json_int_t)lease_s,
                    "cancel", proto_job_refs_encode(cancel, ncancel));
    *ret = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    return *ret ? 0 : -ENOMEM;
}

int gateway_refs_arrays(const struct proto_job_ref *refs, size_t n, struct buf *ids,
                        struct buf *epochs)
{
    int e = buf_append_str(ids, "{") | buf_append_str(epochs, "{");
    for (size_t i = 0; i < n; i++) {
        e |= buf_printf(ids, "%s%s", i ? "," : "", refs[i].job_id);
        e |= buf_printf(epochs, "%s%lld", i ? "," : "", (long long)refs[i].epoch);
    }
    e |= buf_append_str(ids, "}") | buf_append_str(epochs, "}");
    return e ? -ENOMEM : 0;
}

int gateway_claim(struct app *app, struct store_tx *tx, const char *agent_id, bool assign,
                  bool again, const struct proto_job_ref *held, size_t nheld, char **ret)
{
    long long lease_s = (long long)(app->cfg->agent_lease_ms / 1000);
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", lease_s);
    struct buf ids = BUF_INIT, epochs = BUF_INIT;
    int e = gateway_refs_arrays(held, nheld, &ids, &epochs);
    const char *p[] = {agent_id, lease,      again ? "true" : "false", assign ? "true" : "false",
                       ids.data, epochs.data};
    PGresult *res = NULL;
    *ret = NULL;
    int r = e == 0 ? store_tx_exec(tx, &q_deliver, p, &res) : -ENOMEM;
    buf_free(&ids);
    buf_free(&epochs);
    if (r < 0)
        return r;
    /* On -ENOMEM the caller rolls back: what was claimed stays undelivered. */
    r = r > 0 ? claim_answer(res, lease_s, ret) : 0;
    for (int i = 0; r == 0 && i < PQntuples(res); i++)
        log_info("op=%s job=%s epoch=%s agent=%s",
                 PQgetvalue(res, i, DELIVER_KIND)[0] == 'c' ? "job.cancel-sent" : "job.deliver",
                 PQgetvalue(res, i, DELIVER_ID), PQgetvalue(res, i, DELIVER_EPOCH), agent_id);
    PQclear(res);
    return r;
}

/* gateway_claim() in a transaction of its own, in the scope of tenant (NULL: system). */
static int deliver(struct app *app, const char *tenant, const char *agent, bool assign, char **ret)
{
    struct store_tx *tx = NULL;
    *ret = NULL;
    int r = store_tx_begin(app->store, tenant, 0, &tx);
    if (r < 0)
        return r;
    r = gateway_claim(app, tx, agent, assign, false, NULL, 0, ret);
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

/* The registry: gw->waiters for the checker's round and gateway_stop(), gw->buckets for
 * the lookups of every wake-up, supersede and heartbeat's kick, so that none of them scans
 * the whole registry under gw->lock. An agent normally has one waiter; two requests of
 * the same agent racing on two loops may both be held for a moment. */
static struct waiter **chain_of(struct gateway *gw, const char *agent_id)
{
    return &gw->buckets[gw_hash_id(agent_id) & gw->bucket_mask];
}

void gw_registry_add_locked(struct gateway *gw, struct waiter *w)
{
    w->slot = gw->nwaiters;
    gw->waiters[gw->nwaiters++] = w;
    struct waiter **c = chain_of(gw, w->agent_id);
    w->hnext = *c;
    *c = w;
}

bool gw_registry_remove_locked(struct gateway *gw, struct waiter *w)
{
    if (w->slot < 0 || w->slot >= gw->nwaiters || gw->waiters[w->slot] != w)
        return false;
    for (struct waiter **p = chain_of(gw, w->agent_id); *p; p = &(*p)->hnext) {
        if (*p == w) {
            *p = w->hnext;
            break;
        }
    }
    struct waiter *last = gw->waiters[--gw->nwaiters];
    gw->waiters[w->slot] = last;
    last->slot = w->slot;
    w->slot = -1;
    w->hnext = NULL;
    return true;
}

struct waiter *gw_registry_find_locked(struct gateway *gw, const char *agent_id,
                                       struct event_base *base)
{
    for (struct waiter *w = *chain_of(gw, agent_id); w; w = w->hnext)
        if (strcmp(w->agent_id, agent_id) == 0 && (!base || http_deferred_base(w->d) == base))
            return w;
    return NULL;
}

int gateway_held(struct gateway *gw)
{
    if (!gw)
        return 0;
    pthread_mutex_lock(&gw->lock);
    int n = gw->nwaiters + gw->nlooking;
    pthread_mutex_unlock(&gw->lock);
    return n;
}

/* The waiters themselves are not touched: whoever took the list may be freeing them. */
void gw_registry_clear_locked(struct gateway *gw)
{
    gw->nwaiters = 0;
    memset(gw->buckets, 0, sizeof(*gw->buckets) * ((size_t)gw->bucket_mask + 1));
}

/* Free w (unregistered, answered). */
static void waiter_free(struct waiter *w)
{
    free(w->base);
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

static const char no_gateway[] = "this node does not hold agents' long-polls (node.roles has no "
                                 "gateway); connect through a gateway node";

/* A node without the gateway role (not one whose gateway is stopping: that one answers
 * its long-polls empty, as it answers those it holds). */
static bool refuses_long_polls(const struct app *app)
{
    return !app->gw && !orchd_config_has_role(app->cfg, NODE_ROLE_GATEWAY);
}

/* Answer and free w. On w's loop thread, with w already unregistered. */
static void finish(struct waiter *w, const char *body)
{
    if (w->base) {
        json_t *base = json_loads(w->base, 0, NULL);
        if (!base) { /* only memory can fail it: the agent sends its reports again */
            finish_busy(w, "the server is short of memory; retry later");
            return;
        }
        http_deferred_reply_json(w->d, 200, answer_doc(base, body));
    } else if (body)
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
    bool mine = gw_registry_remove_locked(gw, w);
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

void gw_self_set(struct gateway *gw)
{
    pthread_mutex_lock(&self_lock);
    gateway_self = gw;
    while (!gw && self_users > 0)
        pthread_cond_wait(&self_left, &self_lock);
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
    w = gw_registry_find_locked(gw, wk->agent_id, wk->base);
    if (w) {
        gw_registry_remove_locked(gw, w);
        gw->nlooking++;
        w->woken = false;
        w->next_looking = gw->looking;
        gw->looking = w;
    }
    pthread_mutex_unlock(&gw->lock);
    free(wk);
    if (!w)
        return;
    if (http_deferred_stream_closed(w->d)) {
        /* Its client has gone (an agent that reconnected, perhaps to another node, whose
         * old connection this node still held): what it claimed would count as delivered
         * and go nowhere, while the agent's new exchange waits its whole hold. Unclaimed,
         * it wakes that exchange (through the checker when the wake-up came here). */
        pthread_mutex_lock(&gw->lock);
        looking_remove_locked(gw, w);
        gw->nlooking--;
        pthread_mutex_unlock(&gw->lock);
        finish(w, NULL);
        return;
    }
    size_t log_mark = http_deferred_log_push(w->d);
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
    if (!newer)
        newer = gw_registry_find_locked(gw, w->agent_id, NULL) != NULL;
    if (!newer)
        gw_registry_add_locked(gw, w);
    pthread_mutex_unlock(&gw->lock);
    if (newer)
        finish(w, body);
    free(body);
    log_ctx_pop(log_mark);
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

/* Wake agent_id on gw when node is this one, else through node's queue. */
static void notify(struct app *app, struct gateway *gw, const char *agent_id, const char *node)
{
    if (!node || !node[0] || strcmp(node, app->cfg->node_name) == 0) {
        gateway_wake(gw, agent_id);
        return;
    }
    char queue[128];
    _cleanup_free_ char *msg = proto_bus_agent_wake_encode(agent_id);
    if (msg && proto_bus_gateway_queue(queue, sizeof(queue), node) == 0)
        bus_publish_node(app->bus, queue, msg, strlen(msg), 2000);
}

void gateway_notify(struct gateway *gw, const char *agent_id, const char *node)
{
    if (gw)
        notify(gw->app, gw, agent_id, node);
}

void gateway_notify_node(struct app *app, const char *agent_id, const char *node)
{
    notify(app, app->gw, agent_id, node);
}

void gateway_wake(struct gateway *gw, const char *agent_id)
{
    if (!gw)
        return;
    pthread_mutex_lock(&gw->lock);
    struct waiter *held = gw_registry_find_locked(gw, agent_id, NULL);
    bool posted = held != NULL;
    if (held)
        post_wake(held);
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
    if (wait > 0 && refuses_long_polls(app)) {
        http_reply_header(req, "Retry-After", GW_BUSY_RETRY_AFTER);
        http_reply_problem(req, PROBLEM_UNAVAILABLE, no_gateway, NULL);
        return;
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
    struct waiter *old = gw_registry_find_locked(gw, agent_id, NULL);
    if (old && gw_registry_remove_locked(gw, old) &&
        http_loop_post(http_deferred_base(old->d), answer_now, old) < 0)
        log_error("op=gateway error=\"cannot answer a superseded long-poll\"");
    pthread_mutex_unlock(&gw->lock);
}

void gateway_answer(struct http_req *req, json_t *base, char *assigned, bool assign, long wait_s)
{
    struct app *app = http_req_app(req);
    struct gateway *gw = app->gw;
    const struct http_principal *p = http_req_principal(req);
    if (!assigned && wait_s > 0 && refuses_long_polls(app)) {
        /* What the exchange recorded is committed; the agent sends its reports again. */
        json_decref(base);
        http_reply_header(req, "Retry-After", GW_BUSY_RETRY_AFTER);
        http_reply_problem(req, PROBLEM_UNAVAILABLE, no_gateway, NULL);
        return;
    }
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
    w->slot = -1; /* not registered */
    /* Held as text: a jansson tree of a heartbeat's answer takes about a kilobyte more
     * for each idle agent (docs/operations.md, "Holding many agents"). */
    w->base = base ? json_dumps(base, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    bool lost = base && !w->base;
    json_decref(base);
    w->assign = assign;
    w->d = lost ? NULL : http_req_defer(req);
    if (!w->d) {
        free(w->base);
        free(w);
        http_reply_error(req, -ENOMEM, "waiting for assignments");
        return;
    }
    /* What the exchange carried is decoded and recorded: only its answer is to come. */
    http_deferred_release_body(w->d);
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
        gw_registry_add_locked(gw, w);
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

static const struct store_stmt q_pending = STORE_STMT(
    "gw_pending",
    "SELECT DISTINCT agent_id FROM jobs WHERE agent_id = ANY($1::uuid[])"
    "   AND ((status = 'assigned' AND delivered_at IS NULL)"
    "        OR (cancel_requested AND NOT cancel_sent AND status IN ('assigned', 'running')))",
    1);

/* Once a second: any waiting agent with an undelivered assignment or cancel (a lost
 * wake-up: one that came while on_wake() had the waiter out of the registry to look). */
void *gw_checker_main(void *arg)
{
    struct gateway *gw = arg;
    while (!atomic_load(&gw->stop)) {
        gw_sleep_ms(gw, 1000);
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
void *gw_wakeups_main(void *arg)
{
    struct gateway *gw = arg;
    char queue[128];
    struct bus_sub *sub = NULL;
    if (proto_bus_gateway_queue(queue, sizeof(queue), gw->app->cfg->node_name) < 0 ||
        bus_sub_new(gw->app->cfg->amqp_url, queue, true, &sub) < 0)
        return NULL;
    while (!atomic_load(&gw->stop)) {
        char *body = NULL;
        size_t len = 0;
        int r = bus_sub_next(sub, 500, &body, &len);
        if (r < 0) {
            gw_sleep_ms(gw, 1000);
            continue;
        }
        if (r == 1) {
            struct proto_bus_agent_wake m;
            struct jsonv_error e;
            if (proto_bus_agent_wake_decode(body, len, &m, &e) == 0) {
                /* One line a wake-up from another node (debug): tests count them. */
                log_debug("op=gateway.wake-up agent=%s", m.agent_id);
                gateway_wake(gw, m.agent_id);
            } else
                log_debug("op=gateway.wake-up error=\"invalid message\" field=%s", e.field);
            free(body);
        }
    }
    bus_sub_free(sub);
    return NULL;
}

/* gateway_stop()'s answer to a waiter: once all are given, no waiter's timer can fire. */
void gw_answer_at_stop(void *arg)
{
    struct waiter *w = arg;
    struct gateway *gw = w->gw;
    finish(w, NULL);
    pthread_mutex_lock(&gw->lock);
    gw->answering--;
    pthread_cond_broadcast(&gw->changed);
    pthread_mutex_unlock(&gw->lock);
}
