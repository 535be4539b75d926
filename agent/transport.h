/* transport.h: the agent's HTTPS client: libcurl on POSIX (transport-curl.c), WinHTTP on
 * Windows (transport-winhttp.c), their shared part in transport-common.c. One connection to
 * the server, reused (keep-alive); the server certificate is verified against the system
 * store or a pinned CA file; a proxy from the options, else HTTPS_PROXY / NO_PROXY (and the
 * lower-case forms; on Windows the system's proxy settings instead), as corporate hosts
 * need. A request in flight can be given up from another thread (transport_wakeup() and the
 * request's `abort` callback), which closes the connection. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/id.h"

struct transport;

struct transport_options {
    const char *server_url; /* https://host[:port]; borrowed */
    const char *ca_file;    /* NULL or "" = the system store */
    const char *credential; /* orch_ag_... sent as a bearer token; NULL = none */
    int64_t timeout_ms;     /* whole request */
    const char *proxy;      /* NULL or "" = from the environment; borrowed */
    const char *no_proxy;   /* NULL or "" = from the environment; borrowed */
};

int transport_new(const struct transport_options *o, struct transport **ret);
void transport_free(struct transport *t);
/* Replace the bearer credential (after a rotation). */
int transport_set_credential(struct transport *t, const char *credential);

struct transport_reply {
    long status;           /* HTTP status, 0 when no answer came */
    json_t *body;          /* parsed JSON body or NULL; caller json_decref()s */
    char error[256];       /* transport failure, or the problem's detail on an error status */
    int64_t retry_after_s; /* the answer's Retry-After in seconds, 0 when none */
    /* The id this exchange was sent with as X-Request-Id (a new UUIDv7 each time): the
     * server logs its side of the exchange with req= this id. */
    char request_id[ID_STR_LEN];
};

/* Send method path with an optional JSON body (borrowed). Returns 0 when an HTTP answer
 * came (any status: see r->status), or -ECONNREFUSED / -ETIMEDOUT / -EPROTO with r->error
 * saying why. */
int transport_request(struct transport *t, const char *method, const char *path, const json_t *body,
                      struct transport_reply *r);

/* The same, giving up with -EINTR when abort(arg) returns true: it is asked after each
 * transport_wakeup(). timeout_ms overrides the transport's (0 = the transport's). */
int transport_request_ex(struct transport *t, const char *method, const char *path,
                         const json_t *body, int64_t timeout_ms, bool (*abort)(void *arg),
                         void *arg, struct transport_reply *r);

struct buf;
/* GET path as bytes (Accept: application/octet-stream) into out (initialised here, at most
 * max bytes: -EMSGSIZE beyond). Returns 0 when an HTTP answer came: on 200 out holds the
 * body (caller buf_free()s it); on any other status out is empty and r->error says why. Else a
 * transport error, as transport_request(). */
int transport_get_bytes(struct transport *t, const char *path, size_t max, struct buf *out,
                        struct transport_reply *r);

/* GET bytes off to off + max - 1 of path (Range, with If-Range: etag when not NULL): as
 * transport_get_bytes(), out holding the bytes on 206 (the range) and on 200 (the whole:
 * the server ignored the range, or etag is not the resource's; -EMSGSIZE when over max). */
int transport_get_range(struct transport *t, const char *path, uint64_t off, size_t max,
                        const char *etag, struct buf *out, struct transport_reply *r);

/* Make a request in flight on t ask its abort callback now. Thread-safe. */
void transport_wakeup(struct transport *t);
