/* http.h: orchd's HTTP(S) front on libevent's evhttp and OpenSSL, and the API that route
 * handlers use to read requests and write replies.
 *
 * One event loop per thread, each with its own listening socket on the same port
 * (SO_REUSEPORT), so the kernel spreads connections over the loops. Handlers run on the
 * loop thread and may block on the store (the pool is sized to the loops).
 *
 * Every listener has limits: header bytes, body bytes (the route's, applied before the
 * body is read), a read/write timeout, a whole-request deadline, open connections per
 * client address and in total (http-guard.h), and JSON depth for bodies parsed with
 * http_req_json(). Every error reply is
 * application/problem+json (proto/problem.h), except the few that libevent itself sends
 * before a request reaches us (a request line or headers it cannot parse, a chunked body
 * past the route's cap): those keep libevent's status code (400, 413) and close the
 * connection. A request not read whole by its deadline, or a connection over a cap (TLS),
 * gets no answer: the connection is closed.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/jsonv.h"
#include "proto/problem.h"

struct http_server;
struct event_base;
struct http_req;

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_POST = 1 << 1,
    HTTP_PUT = 1 << 2,
    HTTP_PATCH = 1 << 3,
    HTTP_DELETE = 1 << 4,
    HTTP_HEAD = 1 << 5,
    HTTP_OPTIONS = 1 << 6,
};

/* Who may call a route. Tenant roles are ordered: admin > operator > viewer. */
enum http_auth {
    HTTP_AUTH_NONE,              /* public: health, token exchange */
    HTTP_AUTH_ANY,               /* any valid token, tenant or platform */
    HTTP_AUTH_TENANT_VIEWER,     /* a tenant token of any role */
    HTTP_AUTH_TENANT_OPERATOR,   /* a tenant token of role operator or admin */
    HTTP_AUTH_TENANT_ADMIN,      /* a tenant token of role admin */
    HTTP_AUTH_PLATFORM,          /* a platform operator's token */
    HTTP_AUTH_ADMIN_OR_PLATFORM, /* tenant admin (own tenant) or platform (all) */
    HTTP_AUTH_AGENT,             /* an enrolled agent's credential */
};

typedef void (*http_handler_fn)(struct http_req *req);

struct http_route {
    enum http_method method;
    const char *pattern; /* "/api/v1/queues/{id}": {name} matches one path segment */
    enum http_auth auth;
    http_handler_fn handler;
    size_t max_body; /* 0 = HTTP_DEFAULT_MAX_BODY; bodies past it get a 413 problem */
    /* 0 = the server's request_timeout_ms; longer for routes taking big uploads. Counts
     * from the request's first byte to its last body byte, not the reply. */
    int64_t timeout_ms;
};

#define HTTP_DEFAULT_MAX_BODY (64 * 1024)
#define HTTP_MAX_PATH         2048
#define HTTP_MAX_PARAMS       4

/* The authenticated caller of a request. */
enum http_principal_kind {
    HTTP_PRINCIPAL_NONE,
    HTTP_PRINCIPAL_TENANT,
    HTTP_PRINCIPAL_PLATFORM,
    HTTP_PRINCIPAL_AGENT, /* subject = agent id, tenant_id = its tenant */
};

struct http_principal {
    enum http_principal_kind kind;
    char tenant_id[37]; /* tenant principals only */
    char role[16];      /* admin | operator | viewer | platform */
    char subject[129];  /* API key id or operator token id */
    char token_id[37];  /* jti of the token used; agents: the credential's public prefix */
    int64_t token_exp;  /* seconds since the epoch */
    bool pool;          /* agents: of a shared pool, holding jobs of several tenants */
};

/* Hooks the application gives the front. All run on the loop thread. */
struct http_hooks {
    void *app; /* handed back by http_req_app() */
    /* Verify a bearer token (len bytes). Fill *ret and return 0, or return < 0 and set
     * *why to a static reason for the 401 detail; -EAGAIN (could not be checked) is
     * answered 503. */
    int (*authenticate)(void *app, const char *token, size_t len, struct http_principal *ret,
                        const char **why);
    /* After authentication, before the handler: quotas and rate limits. Return 0 to go
     * on, or < 0 after replying (429, 403) itself. */
    int (*admit)(void *app, struct http_req *req);
    /* Optional: a request has been answered (status) after dur_ns since its first byte was
     * handled; route is the matched pattern, or "-" for none. For metrics; must not block. */
    void (*observe)(void *app, enum http_method method, const char *route, int status,
                    uint64_t dur_ns);
};

struct http_options {
    const char *address;   /* "127.0.0.1", "::", "0.0.0.0" */
    int port;              /* 0 = any free port (see http_server_port()) */
    int threads;           /* event loops, >= 1 */
    const char *cert_file; /* PEM chain; NULL with key_file NULL = plain HTTP (tests only) */
    const char *key_file;
    size_t max_header_bytes;
    size_t max_body_bytes; /* hard cap enforced by libevent; routes' max_body must be below */
    int64_t timeout_ms;    /* read/write timeout (restarts on each byte); keep-alive idle */
    /* Whole-request deadline: headers and body must arrive within it (http-guard.h). */
    int64_t request_timeout_ms;
    int max_connections;             /* open connections in total; over it: 503 or close */
    int max_connections_per_address; /* of one client address; over it: 429 or close */
    int backlog;
    const struct http_route *routes; /* borrowed, must outlive the server */
    size_t nroutes;
    struct http_hooks hooks;
};

/* Bind and start the loops. Returns 0 with *ret set, or < 0 with err filled
 * (-EADDRINUSE, -EACCES, -EINVAL for TLS files that do not load, -ENOMEM). */
int http_server_start(const struct http_options *opts, struct http_server **ret, char *err,
                      size_t errlen);
/* The port bound (useful with port 0). */
int http_server_port(const struct http_server *srv);
/* Stop accepting, let requests being handled finish, close connections and join the
 * loops. Safe to call from a signal-handling thread. Frees srv. Accepts NULL. */
void http_server_stop(struct http_server *srv);
/* Requests served since start (all loops). */
uint64_t http_server_requests(const struct http_server *srv);
/* Connections open now (admitted ones, long-polls included), from any thread. */
int http_server_connections(const struct http_server *srv);

/* --- for handlers ---------------------------------------------------------------------- */

void *http_req_app(struct http_req *req);
const struct http_principal *http_req_principal(const struct http_req *req);
enum http_method http_req_method(const struct http_req *req);
/* The matched route's pattern, e.g. "/api/v1/queues/{id}". */
const char *http_req_route(const struct http_req *req);
/* The request id, also sent as X-Request-Id and on every log line written while the
 * request is handled (req=; see http_req_id_choose()). */
const char *http_req_id(const struct http_req *req);

/* Longest request id taken from a client's X-Request-Id (longer ones are cut to it). */
#define HTTP_REQ_ID_MAX 64
/* Choose the id of a request that came with X-Request-Id: in (NULL: none). A value of
 * [A-Za-z0-9._:-] only is taken, cut to its first HTTP_REQ_ID_MAX characters; anything
 * else (empty, a space, a quote, a control or non-ASCII byte) is refused and a new UUIDv7
 * is made instead, so that an id is always safe to log unquoted and to send back. Returns
 * true when in was taken. */
bool http_req_id_choose(const char *in, char out[HTTP_REQ_ID_MAX + 1]);

/* A path parameter by name ("id"), percent-decoded; NULL if the pattern has none. */
const char *http_req_param(const struct http_req *req, const char *name);
/* A query parameter, percent-decoded; NULL when absent. Borrowed until the reply. */
const char *http_req_query(const struct http_req *req, const char *name);
/* The client's address as text ("127.0.0.1", "::1"). Borrowed until the reply. */
const char *http_req_peer(const struct http_req *req);
/* A request header; NULL when absent. */
const char *http_req_header(const struct http_req *req, const char *name);

/* Parse the body as JSON (Content-Type must be application/json) and check it against
 * fields. On success *ret holds a new reference (caller json_decref()s it) and 0 is
 * returned. On failure a 400/413/415/422 problem naming the offending field has been sent
 * and < 0 is returned: the handler just returns. */
int http_req_json(struct http_req *req, const struct jsonv_field *fields, size_t n, json_t **ret);

/* The raw body, when its Content-Type is one of ctypes (a NULL-terminated list; 415
 * otherwise), it is within the route's max_body (413) and not empty (400). *data points
 * into the request, valid until the reply. Returns 0, or < 0 after replying. */
int http_req_body(struct http_req *req, const char *const *ctypes, const char **data, size_t *len);

/* Parse `limit` (1..max, default def) and `cursor` query parameters; replies 422 and
 * returns < 0 on a bad value. *cursor is NULL when absent. */
int http_req_page(struct http_req *req, int def, int max, int *limit, const char **cursor);

/* Add a response header (before the reply). */
void http_reply_header(struct http_req *req, const char *name, const char *value);
/* Reply with body as application/json; steals the reference to body (NULL = no body). */
void http_reply_json(struct http_req *req, int status, json_t *body);
/* Reply with raw bytes of content type ctype. */
void http_reply_bytes(struct http_req *req, int status, const char *ctype, const char *body,
                      size_t len);
/* Reply with len bytes of data sent without a copy; release(arg) is called once libevent
 * no longer needs them (also when the reply fails). */
void http_reply_ref(struct http_req *req, int status, const char *ctype, const void *data,
                    size_t len, void (*release)(void *arg), void *arg);
/* A reply body produced as the client takes it (http_reply_source()). */
struct http_source {
    /* Fill buf with up to cap bytes of the body from offset off: the number written (> 0),
     * or < 0 on an error, which cuts the reply short (the connection is closed, so the
     * client sees fewer bytes than Content-Length said). */
    long (*read)(void *arg, uint64_t off, char *buf, size_t cap);
    void (*release)(void *arg); /* once, when the reply has ended whatever its outcome */
    void *arg;
};
/* Reply with len bytes (sent with Content-Length, not chunked) read from src a window of
 * at most `window` bytes at a time, the next one only once the client has taken the one
 * before: the memory a reply holds is two windows whatever len is. Reads run on the
 * request's loop, between other events; the handler returns after this call. A client
 * that goes away ends it (release is called). */
void http_reply_source(struct http_req *req, int status, const char *ctype, uint64_t len,
                       size_t window, const struct http_source *src);
/* Reply with body, already JSON text (for instance built by PostgreSQL), len bytes. */
void http_reply_json_text(struct http_req *req, int status, const char *body, size_t len);
/* Reply with an RFC 9457 problem; detail and field may be NULL. */
void http_reply_problem(struct http_req *req, enum problem_kind kind, const char *detail,
                        const char *field);
/* The same, with extra members merged into the problem object (reference stolen). */
void http_reply_problem_ext(struct http_req *req, enum problem_kind kind, const char *detail,
                            const char *field, json_t *ext);
/* The 503 detail while PostgreSQL cannot be reached (-ECONNRESET from the store). */
#define HTTP_DB_UNREACHABLE "the database is unreachable; retry"

/* Map a store/-errno error to a problem reply (-ENOENT 404, -EEXIST 409, -EINVAL 422,
 * -EACCES 403, -ETIMEDOUT/-ECONNRESET/-EAGAIN 503, else 500). */
void http_reply_error(struct http_req *req, int err, const char *what);

/* --- deferred replies (long-poll) -------------------------------------------------------- */

/* A request whose reply comes later, on the same loop thread: the handler calls
 * http_req_defer() and returns; the reply is sent with http_deferred_reply_*() from a
 * callback running on that loop (a timer, or work posted with http_deferred_post()).
 * Exactly one reply frees it. If the client has gone meanwhile, the reply is dropped. */
struct http_deferred;

struct http_deferred *http_req_defer(struct http_req *req);
/* The handler has done with the request's body (nothing reads it again): free it while the
 * reply waits. libevent reads a request into chunks of up to 16 KiB and hands the request
 * the whole chunk, however short its body: an agent's held long-poll keeps about 8 KiB
 * less. */
void http_deferred_release_body(struct http_deferred *d);
/* The loop's event_base (for timers on the right thread). */
struct event_base *http_deferred_base(const struct http_deferred *d);
const struct http_principal *http_deferred_principal(const struct http_deferred *d);
/* Put d's request fields (req=, tenant=, agent=) on this thread's log context, for work done
 * for it outside its handler. Returns the mark to give log_ctx_pop() when done. */
size_t http_deferred_log_push(const struct http_deferred *d);
void http_deferred_reply_json(struct http_deferred *d, int status, json_t *body);
void http_deferred_reply_json_text(struct http_deferred *d, int status, const char *body,
                                   size_t len);
/* A problem reply (application/problem+json), with a Retry-After header when retry_after
 * (seconds, as text) is not NULL. */
void http_deferred_reply_problem(struct http_deferred *d, enum problem_kind kind,
                                 const char *detail, const char *retry_after);
/* A streamed reply (Server-Sent Events) on a deferred request: a 200 with ctype, sent
 * chunked, written to as long as the client reads. Returns 0, or -EPIPE when the client
 * has gone already (end it all the same). */
int http_deferred_stream_start(struct http_deferred *d, const char *ctype);
/* Send len bytes of the stream now. Returns 0; -EPIPE when the client has gone; -ENOBUFS
 * when more than max_pending bytes of it are still unsent (a client that does not read:
 * end it with close, rather than hold its backlog in memory). */
int http_deferred_stream_write(struct http_deferred *d, const char *data, size_t len,
                               size_t max_pending);
/* Whether the client has closed its side of the stream's connection (seen at once, not
 * at the next write). */
bool http_deferred_stream_closed(struct http_deferred *d);
/* End the stream and free d: the last chunk, or with close, the connection is dropped
 * (what is unsent is lost). */
void http_deferred_stream_end(struct http_deferred *d, bool close);
/* The stream's socket, to watch for the client closing it (then see
 * http_deferred_stream_closed()); -1 when the connection is gone. Borrowed. */
int http_deferred_stream_fd(struct http_deferred *d);

/* Go on with d's request on its loop thread (call it there): fn(req, arg) runs as a handler
 * would, with the request d was made from (its path parameters are not kept), and replies
 * with http_reply_*() or defers it again with http_req_defer(). One that sent no reply gets
 * a 500. Frees d. */
void http_deferred_resume(struct http_deferred *d, void (*fn)(struct http_req *req, void *arg),
                          void *arg);

/* Run fn(arg) on the event loop of base soon. Thread-safe. Returns 0 or -ENOMEM. */
int http_loop_post(struct event_base *base, void (*fn)(void *arg), void *arg);

/* The outcome of matching a request path against a route table. */
#define HTTP_MAX_PARAM_LEN 256
struct http_match {
    const struct http_route *route; /* NULL: no route for this method and path */
    unsigned allowed;               /* methods of the routes whose pattern matches the path */
    int nparams;
    const char *names[HTTP_MAX_PARAMS]; /* into route->pattern, not NUL-terminated */
    size_t name_lens[HTTP_MAX_PARAMS];
    char params[HTTP_MAX_PARAMS][HTTP_MAX_PARAM_LEN + 1]; /* percent-decoded */
};

/* Match method and the raw (percent-encoded) path against routes. Pure: no I/O, safe on
 * any input (it is fuzzed). Returns the route, also left in m->route, or NULL. */
const struct http_route *http_route_find(const struct http_route *routes, size_t n,
                                         enum http_method method, const char *path,
                                         struct http_match *m);

/* Route table introspection for `orchd routes` and the OpenAPI test. */
const char *http_method_name(enum http_method m);
