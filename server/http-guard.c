/* http-guard.c: request deadlines, per-route body caps before the body, connection caps
 * (see http-guard.h). */
#include "server/http-guard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define GUARD_BUCKETS 1024
/* A request line longer than this is not looked at: the route's cap stays the default. */
#define GUARD_MAX_LINE (HTTP_MAX_PATH + 64)
/* After a 413, how long and how many sockets at most linger to drain the refused body. */
#define GUARD_LINGER_MS  2000
#define GUARD_MAX_LINGER 1024

struct guard_addr {
    struct guard_addr *next;
    unsigned char key[16]; /* IPv6, or IPv4 mapped into it */
    int n;
};

struct guard_conn {
    struct guard_conn *next; /* in the table, keyed by bev */
    struct http_guard *g;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until set_up() */
    struct event *setup;
    struct event *deadline;
    struct evbuffer_cb_entry *watch;
    unsigned char addr[16];
    bool counted;
    bool held;              /* our reference on bev, until set_up() */
    bool at_start;          /* the next input byte begins a request line */
    bool reading;           /* a request is being read: the request deadline runs */
    bool discard;           /* a refused body is arriving: drop it unread */
    int64_t refused;        /* the refused request's Content-Length, 0 for none */
    struct timeval started; /* when the request deadline started (event_base time) */
};

/* At most one log line a second for a kind of event, counting those since the last line:
 * a flood of slow or refused clients must not flood the log as well. */
struct guard_lograte {
    pthread_mutex_t lock;
    uint64_t last_ns;
    int count;
};

struct http_guard {
    struct http_guard_options opts;
    pthread_mutex_t lock; /* the counters and both tables */
    int total;
    struct guard_addr *addrs[GUARD_BUCKETS];
    struct guard_conn *conns[GUARD_BUCKETS];
    struct guard_linger *lingering;
    int nlingering;
    struct guard_lograte deadline_log, refuse_log;
};

/* Count one event; returns how many to log now (this one included), or 0 to stay quiet. */
static int lograte_take(struct guard_lograte *r)
{
    uint64_t now = clock_mono_ns();
    int n = 0;
    pthread_mutex_lock(&r->lock);
    r->count++;
    if (r->last_ns == 0 || now - r->last_ns >= 1000000000ull) {
        n = r->count;
        r->count = 0;
        r->last_ns = now;
    }
    pthread_mutex_unlock(&r->lock);
    return n;
}

int http_guard_new(const struct http_guard_options *opts, struct http_guard **ret)
{
    struct http_guard *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->opts = *opts;
    pthread_mutex_init(&g->lock, NULL);
    pthread_mutex_init(&g->deadline_log.lock, NULL);
    pthread_mutex_init(&g->refuse_log.lock, NULL);
    *ret = g;
    return 0;
}

void http_guard_free(struct http_guard *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < GUARD_BUCKETS; i++) {
        while (g->addrs[i]) {
            struct guard_addr *a = g->addrs[i];
            g->addrs[i] = a->next;
            free(a);
        }
    }
    pthread_mutex_destroy(&g->lock);
    pthread_mutex_destroy(&g->deadline_log.lock);
    pthread_mutex_destroy(&g->refuse_log.lock);
    free(g);
}

int http_guard_connections(struct http_guard *g)
{
    pthread_mutex_lock(&g->lock);
    int n = g->total;
    pthread_mutex_unlock(&g->lock);
    return n;
}

static size_t hash_ptr(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    v *= 0x9e3779b97f4a7c15ull;
    return (size_t)(v >> 32) % GUARD_BUCKETS;
}

static size_t hash_addr(const unsigned char key[16])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h % GUARD_BUCKETS);
}

/* Call with the lock held. */
static struct guard_addr **addr_slot(struct http_guard *g, const unsigned char key[16])
{
    struct guard_addr **p = &g->addrs[hash_addr(key)];
    while (*p && memcmp((*p)->key, key, 16) != 0)
        p = &(*p)->next;
    return p;
}

static struct guard_conn *conn_find(struct http_guard *g, struct bufferevent *bev)
{
    pthread_mutex_lock(&g->lock);
    struct guard_conn *c = g->conns[hash_ptr(bev)];
    while (c && c->bev != bev)
        c = c->next;
    pthread_mutex_unlock(&g->lock);
    return c;
}

static struct guard_conn *conn_of_request(struct http_guard *g, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? conn_find(g, bev) : NULL;
}

/* Admit the connection: counted in the totals and findable by its bufferevent. Returns 0,
 * or 503 / 429 when a cap is reached. */
static int conn_admit(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    int r = 0;
    pthread_mutex_lock(&g->lock);
    struct guard_addr **slot = addr_slot(g, c->addr);
    if (g->total >= g->opts.max_connections) {
        r = 503;
    } else if (*slot && (*slot)->n >= g->opts.max_per_address) {
        r = 429;
    } else if (!*slot && !(*slot = calloc(1, sizeof(**slot)))) {
        r = 503;
    } else {
        memcpy((*slot)->key, c->addr, 16);
        (*slot)->n++;
        g->total++;
        c->counted = true;
        size_t h = hash_ptr(c->bev);
        c->next = g->conns[h];
        g->conns[h] = c;
    }
    pthread_mutex_unlock(&g->lock);
    return r;
}

static void conn_free(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    if (c->counted) {
        pthread_mutex_lock(&g->lock);
        g->total--;
        struct guard_addr **slot = addr_slot(g, c->addr);
        if (*slot && --(*slot)->n == 0) {
            struct guard_addr *a = *slot;
            *slot = a->next;
            free(a);
        }
        struct guard_conn **p = &g->conns[hash_ptr(c->bev)];
        while (*p && *p != c)
            p = &(*p)->next;
        if (*p)
            *p = c->next;
        pthread_mutex_unlock(&g->lock);
    }
    if (c->watch)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
    if (c->held)
        bufferevent_decref(c->bev);
    if (c->setup)
        event_free(c->setup);
    if (c->deadline)
        event_free(c->deadline);
    free(c);
}

/* evhttp is freeing the connection (closed by either side, timed out, or cut by us). */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    conn_free(arg);
}

static void arm(struct guard_conn *c, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
}

/* Start the request deadline of ms now, or re-arm it for ms from when it started. */
static void arm_request(struct guard_conn *c, int64_t ms, bool from_start)
{
    struct timeval now;
    /* The loop's cached time is from before it took a batch of accepts: a deadline counted
     * from it would end early. */
    event_base_update_cache_time(event_get_base(c->deadline));
    event_base_gettimeofday_cached(event_get_base(c->deadline), &now);
    if (!from_start) {
        c->started = now;
        arm(c, ms);
        return;
    }
    int64_t spent = (int64_t)(now.tv_sec - c->started.tv_sec) * 1000 +
                    (now.tv_usec - c->started.tv_usec) / 1000;
    arm(c, ms > spent ? ms - spent : 0);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guard_conn *c = arg;
    char peer[INET6_ADDRSTRLEN] = "-";
    inet_ntop(AF_INET6, c->addr, peer, sizeof(peer));
    int n = lograte_take(&c->g->deadline_log);
    if (n > 0)
        log_info("op=http.deadline peer=%s phase=%s count=%d", peer,
                 c->reading ? "request" : "idle", n);
    if (c->evcon)
        evhttp_connection_free(c->evcon); /* frees c through on_close() */
}

/* The largest Content-Length among the header lines of head (NUL-terminated, the request
 * line excluded), or -1 when there is none or a Transfer-Encoding decides the length. */
static int64_t declared_length(const char *head)
{
    int64_t len = -1;
    for (const char *line = head; *line; line += strcspn(line, "\n"), line += *line == '\n') {
        const char *colon = strchr(line, ':');
        if (!colon || colon > line + strcspn(line, "\n"))
            continue;
        size_t nlen = (size_t)(colon - line);
        if (nlen == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0)
            return -1;
        if (nlen != 14 || strncasecmp(line, "Content-Length", 14) != 0)
            continue;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(colon + 1, &end, 10);
        if (errno == 0 && end != colon + 1 && v > len)
            len = v;
    }
    return len;
}

/* When the whole head of the request is in the buffer (evhttp has parsed none of it yet)
 * and declares a body over max_body: replace the head with a bodiless one (request line
 * and "Connection: close") and drop the body as it comes, so that the handler front can
 * answer a 413 problem naming the limit (http_guard_request_read()) without reading the
 * body. A head in pieces is left to evhttp, whose body cap refuses it with its own 413. */
static void refuse_declared_body(struct guard_conn *c, size_t line_len, size_t max_body)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    size_t head_len = end.pos >= 0 ? (size_t)end.pos + 4 : 0;
    if (head_len == 0 || head_len > c->g->opts.max_header_bytes || line_len > head_len)
        return;
    _cleanup_free_ char *head = malloc(head_len + 1);
    if (!head)
        return;
    evbuffer_copyout(in, head, head_len);
    head[head_len] = '\0';
    int64_t declared = declared_length(head + line_len);
    if (declared < 0 || (uint64_t)declared <= max_body)
        return;
    static const char close_hdr[] = "Connection: close\r\n\r\n";
    c->refused = declared;
    evbuffer_drain(in, evbuffer_get_length(in));
    /* Out of memory, the head is gone: evhttp waits for one until the deadline closes. */
    if (evbuffer_prepend(in, close_hdr, sizeof(close_hdr) - 1) < 0 ||
        evbuffer_prepend(in, head, line_len) < 0)
        c->refused = 0;
    c->discard = true;
}

/* The request starting at the head of the input buffer: when its line is there, find its
 * route and give the connection that route's body cap (and body deadline) before evhttp
 * reads the body. evhttp parses the same bytes right after this: a line it rejects never
 * gets a body read, and a line parsed differently here only picks another route's cap,
 * never one over max_body_hard. */
static void peek_request_line(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    size_t have = evbuffer_get_length(in);
    if (eol.pos < 0 && have < GUARD_MAX_LINE)
        return; /* more to come */
    c->at_start = false;
    size_t max_body = HTTP_DEFAULT_MAX_BODY;
    int64_t timeout_ms = 0;
    if (eol.pos >= 0 && (size_t)eol.pos < GUARD_MAX_LINE) {
        char line[GUARD_MAX_LINE + 1];
        ev_ssize_t n = evbuffer_copyout(in, line, (size_t)eol.pos);
        line[n > 0 ? n : 0] = '\0';
        char *sp = strchr(line, ' ');
        char *target = sp ? sp + 1 : NULL;
        char *end = target ? strchr(target, ' ') : NULL;
        if (end) {
            *sp = '\0';
            *end = '\0';
            /* Parsed as evhttp parses it, so that the route is the one dispatch() finds. */
            struct evhttp_uri *uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
            const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
            enum http_method m = 0;
            static const char *const names[] = {"GET",    "POST", "PUT",    "PATCH",
                                                "DELETE", "HEAD", "OPTIONS"};
            for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(line, names[i]) == 0)
                    m = (enum http_method)(1u << i);
            struct http_match match;
            const struct http_route *r =
                m && path ? http_route_find(g->opts.routes, g->opts.nroutes, m, path, &match)
                          : NULL;
            if (r && r->max_body)
                max_body = r->max_body;
            if (r)
                timeout_ms = r->timeout_ms;
            if (uri)
                evhttp_uri_free(uri);
        }
    }
    if (max_body > g->opts.max_body_hard)
        max_body = g->opts.max_body_hard;
    evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)max_body);
    if (timeout_ms > 0 && c->reading)
        arm_request(c, timeout_ms, true);
    if (eol.pos >= 0)
        refuse_declared_body(c, (size_t)eol.pos + eol_len, max_body);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct guard_conn *c = arg;
    if (info->n_added > 0 && c->discard) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    if (info->n_added == 0 || !c->at_start)
        return;
    if (!c->reading) { /* the first byte of a request on a kept-alive connection */
        c->reading = true;
        arm_request(c, c->g->opts.request_timeout_ms, false);
    }
    peek_request_line(c);
}

/* The answer to a connection over a cap, written straight to the socket before closing it:
 * nothing has been read from it and it gets no more of the server's memory. Over TLS
 * there is no cheap answer (it needs a handshake), so the connection is just closed. */
static void refuse(struct guard_conn *c, int status)
{
    if (c->g->opts.tls)
        return;
    const char *detail = status == 503
                             ? "the server has too many open connections; retry later"
                             : "too many open connections from your address; close some first";
    char body[320], msg[640];
    int blen =
        snprintf(body, sizeof(body),
                 "{\"type\":\"urn:orch:problem:%s\",\"title\":\"%s\",\"status\":%d,"
                 "\"detail\":\"%s\"}",
                 status == 503 ? "unavailable" : "rate-limited",
                 status == 503 ? "Service unavailable" : "Too many requests", status, detail);
    int n =
        snprintf(msg, sizeof(msg),
                 "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\n"
                 "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                 status, status == 503 ? "Service Unavailable" : "Too Many Requests", blen, body);
    if (blen > 0 && n > 0 && (size_t)n < sizeof(msg))
        (void)send(bufferevent_getfd(c->bev), msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Runs once, right after evhttp has made its connection around bev (same loop turn, before
 * anything is read): learn the connection, admit it or refuse it. */
static void set_up(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guard_conn *c = arg;
    bufferevent_data_cb readcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(c->bev, &readcb, NULL, NULL, &cbarg);
    if (!readcb || !cbarg) { /* evhttp gave up on the connection already */
        conn_free(c);
        return;
    }
    /* evhttp is the bufferevent's owner and passes its connection as the callbacks' arg. */
    c->evcon = cbarg;
    c->held = false;
    bufferevent_decref(c->bev);
    evhttp_connection_set_closecb(c->evcon, on_close, c);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    memset(c->addr, 0, sizeof(c->addr));
    if (getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            memcpy(c->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        } else if (ss.ss_family == AF_INET) {
            c->addr[10] = 0xff;
            c->addr[11] = 0xff;
            memcpy(c->addr + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        }
    }
    int status = conn_admit(c);
    if (status == 0)
        c->watch = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    if (status == 0 && !c->watch)
        status = 503;
    if (status != 0) {
        char peer[INET6_ADDRSTRLEN] = "-";
        inet_ntop(AF_INET6, c->addr, peer, sizeof(peer));
        int n = lograte_take(&c->g->refuse_log);
        if (n > 0)
            log_warn("op=http.refuse peer=%s status=%d reason=%s count=%d", peer, status,
                     status == 429 ? "max_connections_per_address" : "max_connections", n);
        refuse(c, status);
        evhttp_connection_free(c->evcon); /* frees c through on_close() */
        return;
    }
    evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)HTTP_DEFAULT_MAX_BODY);
    c->at_start = true;
}

int http_guard_accept(struct http_guard *g, struct event_base *base, struct bufferevent *bev)
{
    struct guard_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    *c = (struct guard_conn){.g = g, .bev = bev, .reading = true};
    c->setup = event_new(base, -1, 0, set_up, c);
    c->deadline = evtimer_new(base, on_deadline, c);
    if (!c->setup || !c->deadline) {
        conn_free(c);
        return -ENOMEM;
    }
    /* Kept alive until set_up() has looked at it, whatever evhttp does meanwhile. */
    bufferevent_incref(bev);
    c->held = true;
    /* From the accept: the TLS handshake and the first request. */
    arm_request(c, g->opts.request_timeout_ms, false);
    event_active(c->setup, EV_TIMEOUT, 0);
    return 0;
}

/* A socket kept open a little after its 413, to read and drop what the client still sends
 * of the refused body: closing a socket with unread input sends a reset, and a client
 * still sending (curl) may lose the answer it has not read yet. */
struct guard_linger {
    struct guard_linger *prev, *next; /* in the guard's list */
    struct http_guard *g;
    struct event *ev;
    int fd;
};

static void linger_end(struct guard_linger *l)
{
    struct http_guard *g = l->g;
    pthread_mutex_lock(&g->lock);
    if (l->prev)
        l->prev->next = l->next;
    else
        g->lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    g->nlingering--;
    pthread_mutex_unlock(&g->lock);
    event_free(l->ev);
    close(l->fd);
    free(l);
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct guard_linger *l = arg;
    char scratch[16384];
    ssize_t n = what & EV_READ ? recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) : 0;
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    linger_end(l); /* the client closed, failed, or the linger time is up */
}

/* After the refusal has been written, before evhttp closes the connection. */
static void linger_start(struct guard_conn *c)
{
    struct http_guard *g = c->g;
    struct guard_linger *l = calloc(1, sizeof(*l));
    if (!l)
        return;
    *l = (struct guard_linger){.g = g, .fd = -1};
    pthread_mutex_lock(&g->lock);
    bool room = g->nlingering < GUARD_MAX_LINGER;
    pthread_mutex_unlock(&g->lock);
    if (room)
        l->fd = fcntl(bufferevent_getfd(c->bev), F_DUPFD_CLOEXEC, 0);
    if (l->fd >= 0)
        l->ev = event_new(event_get_base(c->deadline), l->fd, EV_READ | EV_PERSIST, on_linger, l);
    struct timeval tv = {.tv_sec = GUARD_LINGER_MS / 1000, .tv_usec = 0};
    if (!l->ev || event_add(l->ev, &tv) < 0) {
        if (l->ev)
            event_free(l->ev);
        if (l->fd >= 0)
            close(l->fd);
        free(l);
        return;
    }
    shutdown(l->fd, SHUT_WR); /* the answer is all there is */
    pthread_mutex_lock(&g->lock);
    l->next = g->lingering;
    if (l->next)
        l->next->prev = l;
    g->lingering = l;
    g->nlingering++;
    pthread_mutex_unlock(&g->lock);
}

void http_guard_loop_stop(struct http_guard *g, struct event_base *base)
{
    for (;;) {
        pthread_mutex_lock(&g->lock);
        struct guard_linger *l = g->lingering;
        while (l && event_get_base(l->ev) != base)
            l = l->next;
        pthread_mutex_unlock(&g->lock);
        if (!l)
            return;
        linger_end(l);
    }
}

static void on_reply_sent(struct evhttp_request *req, void *arg)
{
    struct guard_conn *c = conn_of_request(arg, req);
    if (!c)
        return;
    if (c->discard) {
        linger_start(c); /* "Connection: close": evhttp closes it next */
        return;
    }
    c->reading = false;
    c->at_start = true;
    evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)HTTP_DEFAULT_MAX_BODY);
    arm(c, c->g->opts.idle_timeout_ms);
    /* The next request may be in the buffer already (sent before this reply). */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        c->reading = true;
        arm_request(c, c->g->opts.request_timeout_ms, false);
        peek_request_line(c);
    }
}

int64_t http_guard_request_read(struct http_guard *g, struct evhttp_request *req)
{
    struct guard_conn *c = conn_of_request(g, req);
    if (!c)
        return 0;
    int64_t refused = c->refused;
    c->refused = 0;
    c->reading = false;
    c->at_start = false;
    evtimer_del(c->deadline);
    evhttp_request_set_on_complete_cb(req, on_reply_sent, g);
    return refused;
}
