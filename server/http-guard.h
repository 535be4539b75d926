/* http-guard.h: bounds on the connections of the HTTP front (http-server.c): an absolute
 * deadline per request, the route's body cap set before the body is read, and caps on
 * connections per client address and in total.
 *
 * libevent's own timeout (http.timeout) restarts on every byte, so a client trickling a
 * byte a second holds a connection for ever; the guard's deadline does not restart. It runs
 * from the accept (covering the TLS handshake and the first request) or from the first byte
 * of a later request on a kept-alive connection, until the request (headers and body) has
 * been read. While a request is handled and its reply written (a long-poll holds its
 * reply) no deadline runs; between requests the connection may idle for idle_timeout_ms.
 *
 * libevent 2.1 offers no callback between a request's headers and its body, so the guard
 * reads the request line as the bytes arrive (before evhttp parses them), finds the route
 * and sets the connection's body cap to the route's max_body: evhttp then refuses a
 * Content-Length over it, and cuts a chunked body at it, before reading the body (its own
 * 413 reply, text/html, connection closed). When the whole head arrives at once (what
 * clients do), a Content-Length over the cap is caught before evhttp parses the head: the
 * request reaches the front without its body, which answers the 413 problem naming the
 * limit, and the body is dropped unread until the connection closes.
 *
 * Everything here runs on the connection's loop thread except the counters, which are
 * shared by the loops (SO_REUSEPORT spreads one client over them) under a mutex. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/http.h"

struct bufferevent;
struct event_base;
struct evhttp_request;
struct http_guard;

struct http_guard_options {
    int64_t request_timeout_ms; /* a request's headers and body, from its first byte */
    int64_t idle_timeout_ms;    /* a kept-alive connection between requests */
    int max_connections;        /* open connections in total (all loops) */
    int max_per_address;        /* open connections of one client address */
    size_t max_body_hard;       /* no route's cap goes past this */
    size_t max_header_bytes;    /* a head longer than this is left to evhttp to refuse */
    bool tls;                   /* over-cap connections cannot be answered before a handshake */
    const struct http_route *routes; /* borrowed */
    size_t nroutes;
};

int http_guard_new(const struct http_guard_options *opts, struct http_guard **ret);
/* Call after every connection of every loop has been freed (evhttp_free). Accepts NULL. */
void http_guard_free(struct http_guard *g);

/* From evhttp's bufferevent callback: watch the new connection whose bufferevent is bev
 * (fd not set yet). Returns 0, or -ENOMEM (the connection then goes unguarded). */
int http_guard_accept(struct http_guard *g, struct event_base *base, struct bufferevent *bev);
/* A request has been read whole and goes to its handler: stop its deadline, and start the
 * idle one when its reply has been sent. Returns the Content-Length of a body refused
 * unread (the caller answers 413 and the connection closes after it), else 0. */
int64_t http_guard_request_read(struct http_guard *g, struct evhttp_request *req);

/* The loop of base has stopped: let go of what the guard still holds on it (sockets
 * lingering after a 413). Call before event_base_free(). */
void http_guard_loop_stop(struct http_guard *g, struct event_base *base);

/* Open connections now (admitted ones), for tests and logs. */
int http_guard_connections(struct http_guard *g);
