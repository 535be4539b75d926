/* events-hub.c: see events-hub.h.
 *
 * Locking: h->lock guards the list of subs, the counts, and each sub's queue, scheduled
 * flag, left flag and reference count. A sub is referenced by the list (until it leaves)
 * and by each delivery posted to its loop; the last reference frees it. h->out_lock guards
 * the job.output slots (taken before h->lock, never inside it). */
#include "server/events-hub.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "server/http.h"

struct events_sub {
    struct events_sub *next;
    struct events_hub *hub;
    char tenant[37];
    struct event_base *base;
    events_deliver_fn deliver;
    void *arg;
    char *queue; /* text/event-stream bytes not yet delivered */
    size_t qlen, qcap;
    bool overflowed, ending, scheduled, left;
    int refs;
};

/* One job's stream whose job.output was published less than EVENTS_OUTPUT_INTERVAL_MS ago:
 * the time it was, and the latest event since (NULL: none). */
struct out_slot {
    char key[48]; /* job id '/' stream */
    long long sent_ms;
    char *pending;
};

struct events_hub {
    pthread_mutex_t out_lock;
    struct out_slot *out; /* EVENTS_OUTPUT_SLOTS; the first nout in use */
    int nout;
    pthread_mutex_t lock;
    pthread_cond_t gone; /* signalled when a sub leaves while closing */
    struct events_sub *subs;
    int nsubs;
    bool closing;
    char *url;
    pthread_t thread;
    int wake[2]; /* written to stop the thread */
    atomic_bool listening;
    pthread_mutex_t freed_lock; /* guards freed_fn and its calls */
    void (*freed_fn)(void *);
    void *freed_arg;
};

static void sub_unref_locked(struct events_sub *s)
{
    if (--s->refs > 0)
        return;
    free(s->queue);
    free(s);
}

static void on_deliver(void *arg)
{
    struct events_sub *s = arg;
    struct events_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    char *q = s->queue;
    size_t len = s->qlen;
    int flags = (s->overflowed ? EVENTS_OVERFLOWED : 0) | (s->ending ? EVENTS_END : 0);
    bool left = s->left;
    s->queue = NULL;
    s->qlen = s->qcap = 0;
    s->scheduled = false;
    pthread_mutex_unlock(&h->lock);
    /* Only this loop frees a sub that left (events_sub_leave() runs on it too), so s stays
     * valid here without the lock: the posted reference still holds it. */
    if (!left)
        s->deliver(s->arg, q ? q : "", len, flags);
    free(q);
    pthread_mutex_lock(&h->lock);
    sub_unref_locked(s);
    pthread_mutex_unlock(&h->lock);
}

/* Queue text for s and make sure a delivery is posted; h->lock held. */
static void sub_push_locked(struct events_sub *s, const char *text, size_t len)
{
    if (s->left)
        return;
    if (s->qlen + len > EVENTS_MAX_PENDING) {
        s->overflowed = true;
    } else if (len > 0) { /* none: only a delivery to post (EVENTS_END) */
        if (s->qlen + len > s->qcap) {
            size_t cap = s->qcap ? s->qcap : 1024;
            while (cap < s->qlen + len)
                cap *= 2;
            char *q = realloc(s->queue, cap);
            if (!q) {
                s->overflowed = true;
                goto post;
            }
            s->queue = q;
            s->qcap = cap;
        }
        memcpy(s->queue + s->qlen, text, len);
        s->qlen += len;
    }
post:
    if (s->scheduled)
        return;
    s->refs++;
    if (http_loop_post(s->base, on_deliver, s) < 0) {
        s->refs--;
        s->overflowed = true; /* nothing will come: the stream's heartbeat sees it */
        return;
    }
    s->scheduled = true;
}

void events_hub_publish(struct events_hub *h, const char *payload)
{
    json_error_t jerr;
    json_t *doc = json_loads(payload, 0, &jerr);
    const char *tenant = json_string_value(json_object_get(doc, "tenant_id"));
    const char *type = json_string_value(json_object_get(doc, "type"));
    if (!tenant || !type || strlen(tenant) != 36 || strpbrk(type, "\r\n") ||
        strpbrk(payload, "\r\n")) {
        log_warn("op=events.dispatch error=\"malformed notification\"");
        json_decref(doc);
        return;
    }
    size_t plen = strlen(payload), tlen = strlen(type);
    size_t len = tlen + plen + sizeof("event: \ndata: \n\n");
    char *text = malloc(len);
    if (text) {
        int n = snprintf(text, len, "event: %s\ndata: %s\n\n", type, payload);
        if (n < 0 || (size_t)n >= len)
            n = 0; /* cannot happen: len counts every byte */
        pthread_mutex_lock(&h->lock);
        for (struct events_sub *s = h->subs; s; s = s->next)
            if (n > 0 && strcmp(s->tenant, tenant) == 0)
                sub_push_locked(s, text, (size_t)n);
        pthread_mutex_unlock(&h->lock);
        free(text);
    }
    json_decref(doc);
}

/* The slot key of a job.output payload, or false when it is not one (or has no job id). */
static bool output_key(const char *payload, char key[48])
{
    /* Most notifications are not output: skip parsing those. */
    if (!strstr(payload, "\"job.output\""))
        return false;
    json_error_t jerr;
    json_t *doc = json_loads(payload, 0, &jerr);
    const char *type = json_string_value(json_object_get(doc, "type"));
    json_t *d = json_object_get(doc, "data");
    const char *job = json_string_value(json_object_get(d, "job_id"));
    const char *stream = json_string_value(json_object_get(d, "stream"));
    bool ok = type && strcmp(type, "job.output") == 0 && job && strlen(job) == 36;
    if (ok)
        snprintf(key, 48, "%s/%.10s", job, stream ? stream : "");
    json_decref(doc);
    return ok;
}

/* A job event whose previous status held a slot and whose status does not (the payload is
 * jsonb's text: `"key": "value"`, as 97_events.sql makes it). */
static bool slot_freed(const char *payload)
{
    if (!strstr(payload, "\"previous_status\": \"running\"") &&
        !strstr(payload, "\"previous_status\": \"assigned\""))
        return false;
    return !strstr(payload, "\"status\": \"running\"") &&
           !strstr(payload, "\"status\": \"assigned\"");
}

void events_hub_on_slot_freed(struct events_hub *h, void (*fn)(void *), void *arg)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->freed_lock);
    h->freed_fn = fn;
    h->freed_arg = arg;
    pthread_mutex_unlock(&h->freed_lock);
}

void events_hub_offer(struct events_hub *h, const char *payload, long long now_ms)
{
    if (slot_freed(payload)) {
        pthread_mutex_lock(&h->freed_lock);
        if (h->freed_fn)
            h->freed_fn(h->freed_arg);
        pthread_mutex_unlock(&h->freed_lock);
    }
    char key[48];
    if (!output_key(payload, key)) {
        events_hub_publish(h, payload);
        return;
    }
    pthread_mutex_lock(&h->out_lock);
    struct out_slot *o = NULL;
    for (int i = 0; i < h->nout && !o; i++)
        if (strcmp(h->out[i].key, key) == 0)
            o = &h->out[i];
    if (o) {
        /* Within the interval: hold the latest back (events_hub_flush() sends it). */
        char *copy = strdup(payload);
        if (copy) {
            free(o->pending);
            o->pending = copy;
            pthread_mutex_unlock(&h->out_lock);
            return;
        }
    } else if (h->out && h->nout < EVENTS_OUTPUT_SLOTS) {
        o = &h->out[h->nout++];
        snprintf(o->key, sizeof(o->key), "%s", key);
        o->pending = NULL;
        o->sent_ms = now_ms;
    }
    pthread_mutex_unlock(&h->out_lock);
    events_hub_publish(h, payload);
}

int events_hub_flush(struct events_hub *h, long long now_ms)
{
    int next = -1;
    for (;;) {
        char *send = NULL;
        pthread_mutex_lock(&h->out_lock);
        for (int i = 0; i < h->nout && !send; i++) {
            struct out_slot *o = &h->out[i];
            long long due = o->sent_ms + EVENTS_OUTPUT_INTERVAL_MS;
            if (due > now_ms) {
                int in = (int)(due - now_ms);
                next = next < 0 || in < next ? in : next;
                continue;
            }
            if (o->pending) {
                /* Sent now: the slot stays, for the next interval. */
                send = o->pending;
                o->pending = NULL;
                o->sent_ms = now_ms;
                next =
                    next < 0 || EVENTS_OUTPUT_INTERVAL_MS < next ? EVENTS_OUTPUT_INTERVAL_MS : next;
            } else {
                /* A quiet interval: the job's next output goes out at once. */
                h->out[i--] = h->out[--h->nout];
            }
        }
        pthread_mutex_unlock(&h->out_lock);
        if (!send)
            return next;
        events_hub_publish(h, send);
        free(send);
    }
}

/* After the LISTEN connection was (re)made: events may have been missed meanwhile, so
 * every stream is told to reread what it shows. */
static void broadcast_resync(struct events_hub *h)
{
    static const char text[] = "event: resync\ndata: {}\n\n";
    pthread_mutex_lock(&h->lock);
    for (struct events_sub *s = h->subs; s; s = s->next)
        sub_push_locked(s, text, sizeof(text) - 1);
    pthread_mutex_unlock(&h->lock);
}

static PGconn *listen_connect(struct events_hub *h)
{
    /* TCP keep-alives: a connection that only listens sends nothing, and would not notice
     * a server that vanished without a reset. */
    const char *keys[] = {
        "dbname",          "connect_timeout",     "application_name", "keepalives",
        "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {h->url, "5", "orchd-events", "1", "30", "10", "3", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg)
        return NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        log_warn("op=events.listen error=\"cannot connect\"");
        PQfinish(pg);
        return NULL;
    }
    PGresult *res = PQexec(pg, "LISTEN " EVENTS_CHANNEL);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok || PQsetnonblocking(pg, 1) != 0) {
        log_warn("op=events.listen error=\"LISTEN failed\"");
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* Wait at most ms for the stop pipe (true: stop) or fd (-1: none) to be readable. */
static bool wait_or_stop(struct events_hub *h, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = h->wake[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    int n = poll(p, fd >= 0 ? 2 : 1, ms);
    return n > 0 && (p[0].revents & POLLIN);
}

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *listen_main(void *arg)
{
    struct events_hub *h = arg;
    for (;;) {
        PGconn *pg = listen_connect(h);
        if (!pg) {
            if (wait_or_stop(h, -1, 1000))
                return NULL;
            continue;
        }
        atomic_store(&h->listening, true);
        log_info("op=events.listen status=listening");
        /* Also the first time: a stream that joined before told its client it was still
         * connecting. */
        broadcast_resync(h);
        bool stop = false;
        int due = -1;
        while (!stop) {
            stop = wait_or_stop(h, PQsocket(pg), due < 0 ? 30000 : due);
            if (stop)
                break;
            if (PQconsumeInput(pg) != 1)
                break;
            PGnotify *n;
            while ((n = PQnotifies(pg))) {
                events_hub_offer(h, n->extra, mono_ms());
                PQfreemem(n);
            }
            due = events_hub_flush(h, mono_ms());
            if (PQstatus(pg) != CONNECTION_OK)
                break;
        }
        atomic_store(&h->listening, false);
        PQfinish(pg);
        if (stop)
            return NULL;
        log_warn("op=events.listen status=lost");
    }
}

int events_hub_start(const char *db_url, struct events_hub **ret)
{
    struct events_hub *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->wake[0] = h->wake[1] = -1;
    h->url = strdup(db_url);
    h->out = calloc(EVENTS_OUTPUT_SLOTS, sizeof(*h->out));
    if (!h->url || !h->out || pipe(h->wake) < 0) {
        events_hub_stop(h);
        return -ENOMEM;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->out_lock, NULL);
    pthread_mutex_init(&h->freed_lock, NULL);
    pthread_cond_init(&h->gone, NULL);
    int r = pthread_create(&h->thread, NULL, listen_main, h);
    if (r != 0) {
        pthread_mutex_destroy(&h->lock);
        pthread_mutex_destroy(&h->out_lock);
        pthread_mutex_destroy(&h->freed_lock);
        free(h->out);
        pthread_cond_destroy(&h->gone);
        close(h->wake[0]);
        close(h->wake[1]);
        free(h->url);
        free(h);
        return -r;
    }
    *ret = h;
    return 0;
}

void events_hub_stop(struct events_hub *h)
{
    if (!h)
        return;
    if (h->thread) {
        (void)!write(h->wake[1], "x", 1);
        pthread_join(h->thread, NULL);
        pthread_mutex_destroy(&h->lock);
        pthread_mutex_destroy(&h->out_lock);
        pthread_mutex_destroy(&h->freed_lock);
        pthread_cond_destroy(&h->gone);
    }
    if (h->wake[0] >= 0)
        close(h->wake[0]);
    if (h->wake[1] >= 0)
        close(h->wake[1]);
    for (int i = 0; h->out && i < h->nout; i++)
        free(h->out[i].pending);
    free(h->out);
    free(h->url);
    free(h);
}

bool events_hub_listening(struct events_hub *h)
{
    return h && atomic_load(&h->listening);
}

int events_sub_join(struct events_hub *h, const char *tenant_id, struct event_base *base,
                    events_deliver_fn deliver, void *arg, struct events_sub **ret)
{
    struct events_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    *s = (struct events_sub){.hub = h, .base = base, .deliver = deliver, .arg = arg, .refs = 1};
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant_id);
    pthread_mutex_lock(&h->lock);
    int same = 0;
    for (struct events_sub *x = h->subs; x; x = x->next)
        same += strcmp(x->tenant, tenant_id) == 0;
    int r = h->nsubs >= EVENTS_MAX_PER_NODE || h->closing ? -EBUSY
            : same >= EVENTS_MAX_PER_TENANT               ? -EDQUOT
                                                          : 0;
    if (r == 0) {
        s->next = h->subs;
        h->subs = s;
        h->nsubs++;
    }
    pthread_mutex_unlock(&h->lock);
    if (r < 0) {
        free(s);
        return r;
    }
    *ret = s;
    return 0;
}

void events_sub_leave(struct events_sub *s)
{
    struct events_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    for (struct events_sub **p = &h->subs; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            h->nsubs--;
            break;
        }
    }
    s->left = true;
    sub_unref_locked(s);
    if (h->closing)
        pthread_cond_broadcast(&h->gone);
    pthread_mutex_unlock(&h->lock);
}

void events_hub_shutdown(struct events_hub *h, int timeout_ms)
{
    if (!h)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    h->closing = true;
    for (struct events_sub *s = h->subs; s; s = s->next) {
        s->ending = true;
        sub_push_locked(s, "", 0);
    }
    while (h->nsubs > 0)
        if (pthread_cond_timedwait(&h->gone, &h->lock, &until) != 0)
            break;
    if (h->nsubs > 0)
        log_warn("op=events.shutdown streams=%d error=\"streams still open\"", h->nsubs);
    pthread_mutex_unlock(&h->lock);
}
