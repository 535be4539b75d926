/* api-events.c: GET /api/v1/events, the tenant's live events as Server-Sent Events
 * (text/event-stream) for the console (docs/console.md), from events-hub.h.
 *
 * Each event is "event: <type>\ndata: {tenant_id, type, created_at, data}\n\n" with type
 * job.<status> or agent.<status>; "event: resync" says events may have been missed (the
 * node's LISTEN connection was remade): reread what is shown. A comment line every
 * HEARTBEAT_MS keeps proxies from closing an idle stream and finds a client that left.
 * The stream ends when the token expires (the client's next request gets the 401), when
 * the client stops reading (EVENTS_MAX_PENDING unsent: dropped, not buffered), and when
 * the node stops. */
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/events-hub.h"

#define HEARTBEAT_MS 15000
#define RECHECK_MS   200

struct stream {
    struct http_deferred *d;
    struct events_sub *sub;
    struct event *heartbeat;
    struct event *expiry;     /* the token's exp */
    struct event *closewatch; /* the socket readable: the client closed it */
    struct event *recheck;    /* bytes came but no FIN yet: look again soon */
    char tenant[37];
    char req_id[40];
};

static void stream_end(struct stream *st, bool close, const char *why)
{
    log_info("op=events.end tenant=%s req=%s reason=%s", st->tenant, st->req_id, why);
    if (st->heartbeat)
        event_free(st->heartbeat);
    if (st->expiry)
        event_free(st->expiry);
    if (st->closewatch)
        event_free(st->closewatch);
    if (st->recheck)
        event_free(st->recheck);
    if (st->sub)
        events_sub_leave(st->sub);
    http_deferred_stream_end(st->d, close);
    free(st);
}

static void stream_write(struct stream *st, const char *text, size_t len)
{
    int r = http_deferred_stream_write(st->d, text, len, EVENTS_MAX_PENDING);
    if (r == -ENOBUFS)
        stream_end(st, true, "slow-client");
    else if (r < 0)
        stream_end(st, false, "client-gone");
}

static void on_events(void *arg, const char *text, size_t len, int flags)
{
    struct stream *st = arg;
    if (flags & EVENTS_END) {
        stream_end(st, false, "node-stopping");
        return;
    }
    if (flags & EVENTS_OVERFLOWED) {
        stream_end(st, true, "slow-client");
        return;
    }
    if (len > 0)
        stream_write(st, text, len);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct stream *st = arg;
    if (http_deferred_stream_closed(st->d)) {
        stream_end(st, false, "client-gone");
        return;
    }
    static const char hb[] = ": heartbeat\n\n";
    stream_write(st, hb, sizeof(hb) - 1);
}

static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
    stream_end(arg, false, "token-expired");
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct stream *st = arg;
    if (http_deferred_stream_closed(st->d)) {
        stream_end(st, false, "client-gone");
        return;
    }
    /* Bytes from the client and no FIN yet (a TLS close_notify comes just before it):
     * they stay unread, so the socket stays readable; rather than spin, look again in
     * RECHECK_MS. */
    event_del(st->closewatch);
    struct timeval tv = {.tv_sec = 0, .tv_usec = RECHECK_MS * 1000};
    if (st->recheck)
        event_add(st->recheck, &tv);
}

static void on_recheck(evutil_socket_t fd, short what, void *arg)
{
    struct stream *st = arg;
    if (http_deferred_stream_closed(st->d)) {
        stream_end(st, false, "client-gone");
        return;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = RECHECK_MS * 1000};
    event_add(st->recheck, &tv);
}

void api_events_stream(struct http_req *req)
{
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    if (!app->events) {
        http_reply_problem(req, PROBLEM_UNAVAILABLE, "live events are not available", NULL);
        return;
    }
    struct stream *st = calloc(1, sizeof(*st));
    if (!st) {
        http_reply_error(req, -ENOMEM, "starting the event stream");
        return;
    }
    snprintf(st->tenant, sizeof(st->tenant), "%s", p->tenant_id);
    snprintf(st->req_id, sizeof(st->req_id), "%s", http_req_id(req));
    int64_t ttl_s = p->token_exp - (int64_t)time(NULL);
    st->d = http_req_defer(req);
    if (!st->d) {
        free(st);
        http_reply_error(req, -ENOMEM, "starting the event stream");
        return;
    }
    struct event_base *base = http_deferred_base(st->d);
    int r = events_sub_join(app->events, st->tenant, base, on_events, st, &st->sub);
    if (r < 0) {
        log_warn("op=events.refuse tenant=%s req=%s reason=%s", st->tenant, st->req_id,
                 r == -EDQUOT ? "tenant-streams" : "node-streams");
        http_deferred_reply_problem(st->d,
                                    r == -EDQUOT ? PROBLEM_RATE_LIMITED : PROBLEM_UNAVAILABLE,
                                    r == -EDQUOT ? "too many event streams open for this tenant "
                                                   "on this node; close one first"
                                                 : "this node has too many event streams open",
                                    "5");
        free(st);
        return;
    }
    if (http_deferred_stream_start(st->d, "text/event-stream") < 0) {
        stream_end(st, false, "client-gone");
        return;
    }
    st->heartbeat = event_new(base, -1, EV_PERSIST, on_heartbeat, st);
    st->expiry = evtimer_new(base, on_expiry, st);
    st->recheck = evtimer_new(base, on_recheck, st);
    int fd = http_deferred_stream_fd(st->d);
    /* Not edge-triggered: libevent refuses to mix that with the bufferevent's own events
     * on the same socket. */
    st->closewatch = fd >= 0 ? event_new(base, fd, EV_READ | EV_PERSIST, on_readable, st) : NULL;
    struct timeval hb = {.tv_sec = HEARTBEAT_MS / 1000};
    struct timeval exp = {.tv_sec = ttl_s > 0 ? ttl_s : 0};
    if (!st->heartbeat || !st->expiry || event_add(st->heartbeat, &hb) < 0 ||
        event_add(st->expiry, &exp) < 0 ||
        (st->closewatch && event_add(st->closewatch, NULL) < 0)) {
        stream_end(st, true, "out-of-memory");
        return;
    }
    log_info("op=events.start tenant=%s req=%s", st->tenant, st->req_id);
    /* retry: the browser's reconnection delay; the comment says whether events flow yet
     * (if not, "event: resync" follows once they do). */
    const char *hello = events_hub_listening(app->events) ? "retry: 2000\n: listening\n\n"
                                                          : "retry: 2000\n: connecting\n\n";
    stream_write(st, hello, strlen(hello));
}
