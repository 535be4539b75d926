/* http-server.c: the HTTP(S) front: listeners, TLS, loops, routing, limits, replies
 * (see http.h). */
#include "server/http.h"

#include <errno.h>
#include <inttypes.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/agent.h"
#include "server/http-guard.h"

struct http_loop {
    struct http_server *srv;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    pthread_t thread;
    bool started;
};

struct http_server {
    struct http_options opts;
    SSL_CTX *ssl;
    int port;
    int nloops;
    struct http_loop *loops;
    struct http_guard *guard;
    atomic_uint_fast64_t requests;
};

struct http_req {
    bool deferred;
    struct evhttp_request *ev;
    struct http_loop *loop;
    const struct http_route *route;
    struct http_principal principal;
    char id[HTTP_REQ_ID_MAX + 1];
    size_t log_mark; /* this thread's log context before the request's fields were pushed */
    /* The route's match, on the handler's stack beside the request; NULL in a deferred
     * request's copy, which keeps no path parameters (about 1 KiB each held request). */
    struct http_match *match;
    struct evkeyvalq query;
    bool query_parsed;
    bool query_ok;
    uint64_t start_ns;
    int status;
    bool replied;
    int64_t refused_len; /* a body refused unread for its Content-Length (http-guard.h) */
};

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;

static void evthread_init(void)
{
    evthread_use_pthreads();
}

/* --- method names ------------------------------------------------------------------------ */

static const struct {
    enum http_method m;
    enum evhttp_cmd_type ev;
    const char *name;
} methods[] = {
    {HTTP_GET, EVHTTP_REQ_GET, "GET"},
    {HTTP_POST, EVHTTP_REQ_POST, "POST"},
    {HTTP_PUT, EVHTTP_REQ_PUT, "PUT"},
    {HTTP_PATCH, EVHTTP_REQ_PATCH, "PATCH"},
    {HTTP_DELETE, EVHTTP_REQ_DELETE, "DELETE"},
    {HTTP_HEAD, EVHTTP_REQ_HEAD, "HEAD"},
    {HTTP_OPTIONS, EVHTTP_REQ_OPTIONS, "OPTIONS"},
};

const char *http_method_name(enum http_method m)
{
    for (size_t i = 0; i < ELEMENTSOF(methods); i++)
        if (methods[i].m == m)
            return methods[i].name;
    return "?";
}

static enum http_method method_from_ev(enum evhttp_cmd_type t)
{
    for (size_t i = 0; i < ELEMENTSOF(methods); i++)
        if (methods[i].ev == t)
            return methods[i].m;
    return 0;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

/* --- replies ------------------------------------------------------------------------------ */

void http_reply_header(struct http_req *req, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value);
}

static void send_body(struct http_req *req, int status, const char *ctype, const char *body,
                      size_t len)
{
    if (req->replied) {
        log_error("op=http.reply req=%s error=\"second reply\" status=%d", req->id, status);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
    if (ctype)
        evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "X-Request-Id", req->id);
    if (!evhttp_find_header(h, "Cache-Control")) /* the console's assets set their own */
        evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *buf = evbuffer_new();
    if (buf && len > 0)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(req->ev, status, reason_phrase(status), buf);
    if (buf)
        evbuffer_free(buf);
    req->status = status;
    req->replied = true;
}

/* A reply body sent without a copy: released when libevent is done with it. */
struct http_ref {
    void (*release)(void *arg);
    void *arg;
};

static void release_ref(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    struct http_ref *ref = arg;
    ref->release(ref->arg);
    free(ref);
}

void http_reply_ref(struct http_req *req, int status, const char *ctype, const void *data,
                    size_t len, void (*release)(void *arg), void *arg)
{
    struct http_ref *ref = malloc(sizeof(*ref));
    if (!ref) {
        release(arg);
        http_reply_problem(req, PROBLEM_INTERNAL, "out of memory", NULL);
        return;
    }
    *ref = (struct http_ref){.release = release, .arg = arg};
    struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "X-Request-Id", req->id);
    if (!evhttp_find_header(h, "Cache-Control")) /* the console's assets set their own */
        evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *buf = evbuffer_new();
    if (!buf || evbuffer_add_reference(buf, data, len, release_ref, ref) < 0) {
        if (buf)
            evbuffer_free(buf);
        release_ref(data, len, ref);
        http_reply_problem(req, PROBLEM_INTERNAL, "out of memory", NULL);
        return;
    }
    evhttp_send_reply(req->ev, status, reason_phrase(status), buf);
    evbuffer_free(buf);
    req->status = status;
    req->replied = true;
}

static void send_json(struct http_req *req, int status, const char *ctype, json_t *body)
{
    if (!body) {
        send_body(req, status, NULL, NULL, 0);
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"type\":\"urn:orch:problem:internal\",\"title\":\"Internal "
                                  "error\",\"status\":500}";
        send_body(req, 500, "application/problem+json", oom, sizeof(oom) - 1);
        return;
    }
    send_body(req, status, ctype, text, strlen(text));
    free(text);
}

void http_reply_json(struct http_req *req, int status, json_t *body)
{
    send_json(req, status, "application/json", body);
}

void http_reply_bytes(struct http_req *req, int status, const char *ctype, const char *body,
                      size_t len)
{
    send_body(req, status, ctype, body, len);
}

void http_reply_json_text(struct http_req *req, int status, const char *body, size_t len)
{
    send_body(req, status, "application/json", body, len);
}

void http_reply_problem_ext(struct http_req *req, enum problem_kind kind, const char *detail,
                            const char *field, json_t *ext)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);
    if (kind == PROBLEM_UNAUTHENTICATED && !evhttp_find_header(out, "WWW-Authenticate"))
        evhttp_add_header(out, "WWW-Authenticate", "Bearer");
    json_t *p = problem_new(kind, detail, field);
    if (p && ext)
        json_object_update_missing(p, ext);
    json_decref(ext);
    if (p)
        json_object_set_new(p, "request_id", json_string(req->id));
    const struct problem_def *d = problem_def(kind);
    send_json(req, d ? d->status : 500, "application/problem+json", p);
}

void http_reply_problem(struct http_req *req, enum problem_kind kind, const char *detail,
                        const char *field)
{
    http_reply_problem_ext(req, kind, detail, field, NULL);
}

void http_reply_error(struct http_req *req, int err, const char *what)
{
    switch (err) {
    case -ENOENT:
        http_reply_problem(req, PROBLEM_NOT_FOUND, what, NULL);
        return;
    case -EEXIST:
        http_reply_problem(req, PROBLEM_CONFLICT, what, NULL);
        return;
    case -EINVAL:
        http_reply_problem(req, PROBLEM_VALIDATION, what, NULL);
        return;
    case -EACCES:
        http_reply_problem(req, PROBLEM_FORBIDDEN, what, NULL);
        return;
    case -ECONNRESET:
        http_reply_header(req, "Retry-After", "1");
        http_reply_problem(req, PROBLEM_UNAVAILABLE, HTTP_DB_UNREACHABLE, NULL);
        return;
    case -ETIMEDOUT:
    case -EAGAIN:
        http_reply_header(req, "Retry-After", "1");
        http_reply_problem(req, PROBLEM_UNAVAILABLE, "the database is busy; retry", NULL);
        return;
    default:
        log_error("op=http.error req=%s route=%s error=%d what=\"%s\"", req->id,
                  req->route ? req->route->pattern : "-", err, what ? what : "");
        http_reply_problem(req, PROBLEM_INTERNAL,
                           "an internal error occurred; the request id "
                           "identifies it in the server log",
                           NULL);
    }
}

/* --- request accessors ------------------------------------------------------------------- */

void *http_req_app(struct http_req *req)
{
    return req->loop->srv->opts.hooks.app;
}

const struct http_principal *http_req_principal(const struct http_req *req)
{
    return &req->principal;
}

enum http_method http_req_method(const struct http_req *req)
{
    return method_from_ev(evhttp_request_get_command(req->ev));
}

const char *http_req_route(const struct http_req *req)
{
    return req->route ? req->route->pattern : "-";
}

const char *http_req_id(const struct http_req *req)
{
    return req->id;
}

static bool req_id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

bool http_req_id_choose(const char *in, char out[HTTP_REQ_ID_MAX + 1])
{
    size_t n = 0;
    bool ok = in && *in;
    /* The whole value is checked, not just the part kept: a value that is not an id is
     * not one when cut either. It is bounded by the header limit. */
    for (const char *p = in; ok && *p; p++)
        ok = req_id_char((unsigned char)*p);
    if (ok) {
        n = strlen(in);
        if (n > HTTP_REQ_ID_MAX)
            n = HTTP_REQ_ID_MAX;
        memcpy(out, in, n);
        out[n] = '\0';
        return true;
    }
    char id[ID_STR_LEN] = "-"; /* only when the RNG fails */
    id_uuid7_str(id);
    memcpy(out, id, strlen(id) + 1);
    return false;
}

/* Push req's fields onto this thread's log context: req=, and once authenticated tenant=
 * (agent= too for an agent); job= on a job's routes (REST and agent protocol), so that the
 * request's own line and what its handler logs name the job. Returns the mark to pop
 * them with. */
static void req_log_push_route(const struct http_req *req)
{
    if (req->route && strstr(req->route->pattern, "/jobs/{id}"))
        log_ctx_push("job", http_req_param(req, "id"));
}

static void req_log_push_principal(const struct http_req *req)
{
    const struct http_principal *p = &req->principal;
    if (p->kind == HTTP_PRINCIPAL_TENANT || p->kind == HTTP_PRINCIPAL_AGENT)
        log_ctx_push("tenant", p->tenant_id);
    else if (p->kind == HTTP_PRINCIPAL_PLATFORM)
        log_ctx_push("tenant", "platform");
    if (p->kind == HTTP_PRINCIPAL_AGENT)
        log_ctx_push("agent", p->subject);
}

static size_t req_log_push(const struct http_req *req)
{
    size_t mark = log_ctx_push("req", req->id);
    req_log_push_route(req);
    req_log_push_principal(req);
    return mark;
}

const char *http_req_param(const struct http_req *req, const char *name)
{
    size_t len = strlen(name);
    const struct http_match *m = req->match;
    for (int i = 0; m && i < m->nparams; i++)
        if (m->name_lens[i] == len && memcmp(m->names[i], name, len) == 0)
            return m->params[i];
    return NULL;
}

const char *http_req_query(const struct http_req *req, const char *name)
{
    struct http_req *r = (struct http_req *)req;
    if (!r->query_parsed) {
        r->query_parsed = true;
        TAILQ_INIT(&r->query);
        const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->ev));
        r->query_ok = !q || evhttp_parse_query_str(q, &r->query) == 0;
    }
    return r->query_ok ? evhttp_find_header(&r->query, name) : NULL;
}

const char *http_req_peer(const struct http_req *req)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    struct evhttp_connection *c = evhttp_request_get_connection(req->ev);
    if (c)
        evhttp_connection_get_peer(c, &addr, &port);
    return addr ? addr : "-";
}

const char *http_req_header(const struct http_req *req, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

int http_req_page(struct http_req *req, int def, int max, int *limit, const char **cursor)
{
    const char *l = http_req_query(req, "limit");
    *limit = def;
    if (l) {
        char *end = NULL;
        errno = 0;
        long v = strtol(l, &end, 10);
        if (errno || !end || *end || end == l || v < 1 || v > max) {
            char detail[96];
            snprintf(detail, sizeof(detail), "must be an integer between 1 and %d", max);
            http_reply_problem(req, PROBLEM_VALIDATION, detail, "limit");
            return -EINVAL;
        }
        *limit = (int)v;
    }
    *cursor = http_req_query(req, "cursor");
    if (*cursor && (strlen(*cursor) == 0 || strlen(*cursor) > 256)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "is not a cursor returned by this API",
                           "cursor");
        return -EINVAL;
    }
    return 0;
}

/* Is ct (a Content-Type header, parameters allowed) the media type want? */
static bool content_type_is(const char *ct, const char *want)
{
    if (!ct)
        return false;
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return false;
    char next = ct[n];
    return next == '\0' || next == ';' || next == ' ';
}

/* 413 when the body is over the route's limit. */
static int body_within_limit(struct http_req *req, size_t len)
{
    size_t max = req->route && req->route->max_body ? req->route->max_body : HTTP_DEFAULT_MAX_BODY;
    size_t hard = req->loop->srv->opts.max_body_bytes;
    if (hard > 0 && max > hard)
        max = hard;
    if (len <= max)
        return 0;
    char detail[96];
    snprintf(detail, sizeof(detail), "the body is %zu bytes; this route accepts at most %zu", len,
             max);
    http_reply_problem(req, PROBLEM_TOO_LARGE, detail, NULL);
    return -EMSGSIZE;
}

int http_req_body(struct http_req *req, const char *const *ctypes, const char **data, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
    *len = evbuffer_get_length(in);
    if (body_within_limit(req, *len) < 0)
        return -EMSGSIZE;
    const char *ct = http_req_header(req, "Content-Type");
    bool ok = false;
    for (size_t i = 0; ctypes[i] && !ok; i++)
        ok = content_type_is(ct, ctypes[i]);
    if (!ok) {
        char detail[256] = "send the body as";
        for (size_t i = 0; ctypes[i]; i++)
            snprintf(detail + strlen(detail), sizeof(detail) - strlen(detail), "%s %s",
                     i == 0 ? "" : (ctypes[i + 1] ? "," : " or"), ctypes[i]);
        http_reply_problem(req, PROBLEM_UNSUPPORTED_MEDIA, detail, NULL);
        return -EPROTO;
    }
    if (*len == 0) {
        http_reply_problem(req, PROBLEM_BAD_REQUEST, "the request body is empty", NULL);
        return -EINVAL;
    }
    *data = (const char *)evbuffer_pullup(in, -1);
    return 0;
}

int http_req_json(struct http_req *req, const struct jsonv_field *fields, size_t n, json_t **ret)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
    size_t len = evbuffer_get_length(in);
    if (body_within_limit(req, len) < 0)
        return -EMSGSIZE;
    if (!content_type_is(http_req_header(req, "Content-Type"), "application/json")) {
        http_reply_problem(req, PROBLEM_UNSUPPORTED_MEDIA, "send the body as application/json",
                           NULL);
        return -EPROTO;
    }
    if (len == 0) {
        http_reply_problem(req, PROBLEM_BAD_REQUEST,
                           "the request body is empty; send a JSON "
                           "object",
                           NULL);
        return -EINVAL;
    }
    const char *data = (const char *)evbuffer_pullup(in, -1);
    json_t *doc = NULL;
    struct jsonv_error err;
    if (jsonv_parse(data, len, JSONV_MAX_DEPTH_DEFAULT, &doc, &err) < 0) {
        http_reply_problem(req, PROBLEM_BAD_REQUEST, err.detail, err.field[0] ? err.field : NULL);
        return -EINVAL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        http_reply_problem(req, PROBLEM_BAD_REQUEST, "the body must be a JSON object", NULL);
        return -EINVAL;
    }
    if (jsonv_check(doc, fields, n, false, &err) < 0) {
        json_decref(doc);
        http_reply_problem(req, PROBLEM_VALIDATION, err.detail, err.field);
        return -EINVAL;
    }
    *ret = doc;
    return 0;
}

/* --- routing ----------------------------------------------------------------------------- */

/* Match path against pattern; on success fill m's params (when m is not NULL). Segments
 * are compared raw (percent-encoded), parameters are decoded, and a parameter that does not
 * decode (a NUL, an empty value, too long) matches nothing. */
static bool route_match(const char *pattern, const char *path, struct http_match *m)
{
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return false;
        p++;
        s++;
        const char *pe = strchrnul(p, '/');
        const char *se = strchrnul(s, '/');
        if (*p == '{') {
            if (se == s || np >= HTTP_MAX_PARAMS || (size_t)(se - s) > HTTP_MAX_PARAM_LEN * 3)
                return false;
            char raw[HTTP_MAX_PARAM_LEN * 3 + 1];
            memcpy(raw, s, (size_t)(se - s));
            raw[se - s] = '\0';
            size_t dlen = 0;
            char *dec = evhttp_uridecode(raw, 0, &dlen);
            if (!dec || dlen > HTTP_MAX_PARAM_LEN || strlen(dec) != dlen || dlen == 0) {
                free(dec);
                return false;
            }
            if (m) {
                memcpy(m->params[np], dec, dlen + 1);
                m->names[np] = p + 1;
                m->name_lens[np] = (size_t)(pe - p - 2);
            }
            free(dec);
            np++;
        } else if (pe - p != se - s || memcmp(p, s, (size_t)(pe - p)) != 0) {
            return false;
        }
        p = pe;
        s = se;
    }
    if (*p || *s)
        return false;
    if (m)
        m->nparams = np;
    return true;
}

const struct http_route *http_route_find(const struct http_route *routes, size_t n,
                                         enum http_method method, const char *path,
                                         struct http_match *m)
{
    m->route = NULL;
    m->allowed = 0;
    m->nparams = 0;
    if (!path || !*path || strlen(path) > HTTP_MAX_PATH)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const struct http_route *r = &routes[i];
        /* A parameter that does not decode (%00) names no resource: no method is allowed
         * on such a path, and it is 404, not 405. */
        if (!route_match(r->pattern, path, NULL))
            continue;
        m->allowed |= r->method;
        if (r->method == method && route_match(r->pattern, path, m)) {
            m->route = r;
            break;
        }
    }
    return m->route;
}

static bool auth_allows(enum http_auth need, const struct http_principal *pr)
{
    bool tenant = pr->kind == HTTP_PRINCIPAL_TENANT;
    bool platform = pr->kind == HTTP_PRINCIPAL_PLATFORM;
    switch (need) {
    case HTTP_AUTH_NONE:
        return true;
    case HTTP_AUTH_ANY:
        return tenant || platform;
    case HTTP_AUTH_TENANT_VIEWER:
        return tenant;
    case HTTP_AUTH_TENANT_OPERATOR:
        return tenant && (strcmp(pr->role, "operator") == 0 || strcmp(pr->role, "admin") == 0);
    case HTTP_AUTH_TENANT_ADMIN:
        return tenant && strcmp(pr->role, "admin") == 0;
    case HTTP_AUTH_PLATFORM:
        return platform;
    case HTTP_AUTH_ADMIN_OR_PLATFORM:
        return platform || (tenant && strcmp(pr->role, "admin") == 0);
    case HTTP_AUTH_AGENT:
        return pr->kind == HTTP_PRINCIPAL_AGENT;
    }
    return false;
}

static int authenticate(struct http_req *req)
{
    struct http_server *srv = req->loop->srv;
    const char *h = http_req_header(req, "Authorization");
    const char *why = "a bearer token is required";
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *tok = h + 7;
        while (*tok == ' ')
            tok++;
        int r = srv->opts.hooks.authenticate(srv->opts.hooks.app, tok, strlen(tok), &req->principal,
                                             &why);
        if (r == 0)
            return 0;
        if (r == -EAGAIN) { /* could not be checked: not the caller's fault */
            memset(&req->principal, 0, sizeof(req->principal));
            http_reply_header(req, "Retry-After", "1");
            http_reply_problem(req, PROBLEM_UNAVAILABLE, why, NULL);
            return r;
        }
        http_reply_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    } else {
        http_reply_header(req, "WWW-Authenticate", "Bearer");
    }
    memset(&req->principal, 0, sizeof(req->principal));
    http_reply_problem(req, PROBLEM_UNAUTHENTICATED, why, NULL);
    return -EACCES;
}

/* Every query parameter is name=value and decodes to text without a NUL: a value that
 * decoded to "queued\0x" would be read as "queued", and an unparsable query would be read
 * as no parameters at all. Replies 422 naming the parameter and returns < 0 otherwise. */
static int query_check(struct http_req *req)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req->ev));
    if (!q || !*q)
        return 0;
    char *copy = strdup(q);
    if (!copy) {
        http_reply_error(req, -ENOMEM, "reading the query");
        return -ENOMEM;
    }
    int r = 0;
    char *rest = copy;
    while (r == 0 && rest) {
        char *pair = rest;
        char *amp = strchr(pair, '&');
        rest = amp ? amp + 1 : NULL;
        if (amp)
            *amp = '\0';
        char *eq = strchr(pair, '=');
        if (eq)
            *eq = '\0';
        size_t nlen = 0, vlen = 0;
        char *name = evhttp_uridecode(pair, 1, &nlen);
        char *value = eq ? evhttp_uridecode(eq + 1, 1, &vlen) : NULL;
        bool name_ok = name && nlen > 0 && strlen(name) == nlen;
        char field[72];
        snprintf(field, sizeof(field), "%.64s", name_ok ? name : "query");
        if (!name_ok || !eq) {
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "the query must be name=value pairs joined by &", field);
            r = -EINVAL;
        } else if (!value || strlen(value) != vlen) {
            http_reply_problem(req, PROBLEM_VALIDATION, "must not contain a NUL (%00)", field);
            r = -EINVAL;
        }
        free(name);
        free(value);
    }
    free(copy);
    return r;
}

/* The agent protocol's version (proto/agent.h) on the routes of the agent protocol: 0, or
 * < 0 after answering 400 unsupported-protocol. */
static int agent_version_check(struct http_req *req)
{
    const char *v = http_req_header(req, PROTO_AGENT_VERSION_HEADER);
    char detail[256], q[64];
    if (proto_agent_version_check(v, NULL, detail, sizeof(detail)) == 0)
        return 0;
    log_warn("op=agent.protocol req=%s route=%s version=%s supported=%d-%d", req->id,
             req->route->pattern, log_quote(v, q, sizeof(q)), PROTO_AGENT_VERSION_MIN,
             PROTO_AGENT_VERSION_MAX);
    http_reply_problem_ext(req, PROBLEM_UNSUPPORTED_PROTOCOL, detail, NULL,
                           proto_agent_unsupported_new(detail));
    return -EPROTONOSUPPORT;
}

static void dispatch(struct http_req *req)
{
    struct http_server *srv = req->loop->srv;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req->ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum http_method m = method_from_ev(evhttp_request_get_command(req->ev));
    req->route = http_route_find(srv->opts.routes, srv->opts.nroutes, m, path, req->match);
    req_log_push_route(req);    /* on top of req=, popped with it */
    if (req->refused_len > 0) { /* before anything else: the body was never read */
        http_reply_header(req, "Connection", "close");
        /* The guard found the same route; should it ever not, the answer is still 413. */
        if (body_within_limit(req, (size_t)req->refused_len) == 0)
            http_reply_problem(req, PROBLEM_TOO_LARGE, "the body is over this route's limit", NULL);
        return;
    }
    unsigned allowed = req->match->allowed;
    if (!req->route) {
        if (!allowed) {
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such route", NULL);
            return;
        }
        char allow[96] = "";
        size_t used = 0;
        for (size_t i = 0; i < ELEMENTSOF(methods) && used < sizeof(allow); i++) {
            if (!(allowed & methods[i].m))
                continue;
            int n = snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                             methods[i].name);
            used = n < 0 ? sizeof(allow) : used + (size_t)n;
        }
        http_reply_header(req, "Allow", allow);
        char detail[160];
        snprintf(detail, sizeof(detail), "this route accepts %s", allow);
        http_reply_problem(req, PROBLEM_METHOD_NOT_ALLOWED, detail, NULL);
        return;
    }

    /* Before authentication: an agent too old or too new for this server is told that,
     * whatever else may be wrong with its request. */
    if (proto_agent_route(req->route->pattern) && agent_version_check(req) < 0)
        return;
    if (req->route->auth != HTTP_AUTH_NONE) {
        if (authenticate(req) < 0)
            return;
        req_log_push_principal(req);
        if (!auth_allows(req->route->auth, &req->principal)) {
            http_reply_problem(req, PROBLEM_FORBIDDEN, "your role does not allow this operation",
                               NULL);
            return;
        }
        if (srv->opts.hooks.admit && srv->opts.hooks.admit(srv->opts.hooks.app, req) < 0)
            return;
    }
    if (query_check(req) < 0)
        return;
    req->route->handler(req);
    if (!req->replied && !req->deferred) {
        log_error("op=http req=%s route=%s error=\"handler sent no reply\"", req->id,
                  req->route->pattern);
        http_reply_problem(req, PROBLEM_INTERNAL, NULL, NULL);
    }
}

/* Tell the observe hook, if any, that req has been answered. */
static void observe(struct http_req *req, uint64_t dur_ns)
{
    const struct http_hooks *h = &req->loop->srv->opts.hooks;
    if (h->observe)
        h->observe(h->app, method_from_ev(evhttp_request_get_command(req->ev)),
                   req->route ? req->route->pattern : "-", req->status, dur_ns);
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    struct http_loop *loop = arg;
    struct http_match match;
    struct http_req req = {.ev = ev, .loop = loop, .match = &match, .start_ns = clock_mono_ns()};
    http_req_id_choose(evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id"),
                       req.id);
    req.refused_len = http_guard_request_read(loop->srv->guard, ev);
    req.log_mark = log_ctx_push("req", req.id);

    dispatch(&req);

    if (req.query_parsed)
        evhttp_clear_headers(&req.query);
    if (req.deferred) {
        log_ctx_pop(req.log_mark);
        return; /* logged when the reply is sent */
    }
    atomic_fetch_add(&loop->srv->requests, 1);
    uint64_t dur_ns = clock_mono_ns() - req.start_ns;
    double ms = (double)dur_ns / 1e6;
    observe(&req, dur_ns);
    const char *tenant = "-";
    if (req.principal.kind == HTTP_PRINCIPAL_TENANT || req.principal.kind == HTTP_PRINCIPAL_AGENT)
        tenant = req.principal.tenant_id;
    else if (req.principal.kind == HTTP_PRINCIPAL_PLATFORM)
        tenant = "platform";
    log_info("op=http method=%s route=%s status=%d dur_ms=%.3f tenant=%s req=%s",
             http_method_name(method_from_ev(evhttp_request_get_command(ev))),
             req.route ? req.route->pattern : "-", req.status, ms, tenant, req.id);
    log_ctx_pop(req.log_mark);
}

/* --- deferred replies ---------------------------------------------------------------------- */

struct http_deferred {
    struct http_req req; /* a copy: the original lived on the handler's stack */
};

/* libevent 2.1 (fixed in 2.2) may read from a connection whose request awaits a deferred
 * reply, and then exits the process ("evhttp_read_cb: illegal connection state 7"). As
 * Bitcoin Core does, reading stops while the reply is deferred and resumes with it. */
static void deferred_reading(struct evhttp_request *ev, bool on)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (!bev)
        return;
    if (on)
        bufferevent_enable(bev, EV_READ | EV_WRITE);
    else
        bufferevent_disable(bev, EV_READ);
}

struct http_deferred *http_req_defer(struct http_req *req)
{
    struct http_deferred *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    deferred_reading(req->ev, false);
    if (req->query_parsed) {
        evhttp_clear_headers(&req->query);
        req->query_parsed = false;
    }
    d->req = *req;
    d->req.match = NULL; /* parameters are not kept */
    req->deferred = true;
    return d;
}

void http_deferred_release_body(struct http_deferred *d)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(d->req.ev);
    if (body)
        evbuffer_drain(body, evbuffer_get_length(body));
}

struct event_base *http_deferred_base(const struct http_deferred *d)
{
    return d->req.loop->base;
}

const struct http_principal *http_deferred_principal(const struct http_deferred *d)
{
    return &d->req.principal;
}

size_t http_deferred_log_push(const struct http_deferred *d)
{
    return req_log_push(&d->req);
}

static void deferred_done(struct http_deferred *d)
{
    uint64_t dur_ns = clock_mono_ns() - d->req.start_ns;
    double ms = (double)dur_ns / 1e6;
    observe(&d->req, dur_ns);
    atomic_fetch_add(&d->req.loop->srv->requests, 1);
    log_info("op=http method=%s route=%s status=%d dur_ms=%.3f tenant=%s req=%s",
             http_method_name(method_from_ev(evhttp_request_get_command(d->req.ev))),
             d->req.route ? d->req.route->pattern : "-", d->req.status, ms,
             d->req.principal.tenant_id[0] ? d->req.principal.tenant_id : "-", d->req.id);
    free(d);
}

void http_deferred_reply_json(struct http_deferred *d, int status, json_t *body)
{
    size_t mark = req_log_push(&d->req);
    deferred_reading(d->req.ev, true);
    http_reply_json(&d->req, status, body);
    deferred_done(d);
    log_ctx_pop(mark);
}

void http_deferred_reply_json_text(struct http_deferred *d, int status, const char *body,
                                   size_t len)
{
    size_t mark = req_log_push(&d->req);
    deferred_reading(d->req.ev, true);
    http_reply_json_text(&d->req, status, body, len);
    deferred_done(d);
    log_ctx_pop(mark);
}

void http_deferred_reply_problem(struct http_deferred *d, enum problem_kind kind,
                                 const char *detail, const char *retry_after)
{
    size_t mark = req_log_push(&d->req);
    deferred_reading(d->req.ev, true);
    if (retry_after)
        http_reply_header(&d->req, "Retry-After", retry_after);
    http_reply_problem(&d->req, kind, detail, NULL);
    deferred_done(d);
    log_ctx_pop(mark);
}

void http_deferred_resume(struct http_deferred *d, void (*fn)(struct http_req *req, void *arg),
                          void *arg)
{
    size_t mark = req_log_push(&d->req);
    deferred_reading(d->req.ev, true);
    fn(&d->req, arg);
    if (d->req.deferred) { /* deferred again: the new one holds a copy of the request */
        free(d);
        log_ctx_pop(mark);
        return;
    }
    if (!d->req.replied) {
        log_error("op=http req=%s route=%s error=\"handler sent no reply\"", d->req.id,
                  d->req.route ? d->req.route->pattern : "-");
        http_reply_problem(&d->req, PROBLEM_INTERNAL, NULL, NULL);
    }
    deferred_done(d);
    log_ctx_pop(mark);
}

/* --- streamed replies ---------------------------------------------------------------------- */

int http_deferred_stream_start(struct http_deferred *d, const char *ctype)
{
    struct evhttp_request *ev = d->req.ev;
    if (!evhttp_request_get_connection(ev))
        return -EPIPE;
    struct evkeyvalq *h = evhttp_request_get_output_headers(ev);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "X-Request-Id", d->req.id);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Accel-Buffering", "no"); /* a proxy in front: do not buffer */
    /* Reading stays off (http_req_defer()): the client sends nothing more on a stream's
     * connection, and libevent 2.1 must not parse a request behind this one. The read
     * timeout goes too: evhttp re-enables reading with each chunk (to see a close), and a
     * client that rightly sends nothing for http.timeout would be cut off. The write
     * timeout stays: a client that stops reading is. */
    struct evhttp_connection *conn = evhttp_request_get_connection(ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (bev) {
        int64_t ms = d->req.loop->srv->opts.timeout_ms;
        struct timeval wtv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, NULL, ms > 0 ? &wtv : NULL);
    }
    evhttp_send_reply_start(ev, 200, reason_phrase(200));
    d->req.status = 200;
    d->req.replied = true;
    return 0;
}

int http_deferred_stream_write(struct http_deferred *d, const char *data, size_t len,
                               size_t max_pending)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(d->req.ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (!bev)
        return -EPIPE; /* libevent has let go of the connection: the client has gone */
    if (evbuffer_get_length(bufferevent_get_output(bev)) > max_pending)
        return -ENOBUFS;
    struct evbuffer *buf = evbuffer_new();
    if (!buf || evbuffer_add(buf, data, len) < 0) {
        if (buf)
            evbuffer_free(buf);
        return -ENOMEM;
    }
    evhttp_send_reply_chunk(d->req.ev, buf);
    evbuffer_free(buf);
    return 0;
}

bool http_deferred_stream_closed(struct http_deferred *d)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(d->req.ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (!bev)
        return true;
    int fd = bufferevent_getfd(bev);
    /* The TCP state, not a read: over TLS the client's close_notify comes before its FIN,
     * and those bytes must stay unread. */
    struct tcp_info ti;
    socklen_t tl = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
        return ti.tcpi_state != TCP_ESTABLISHED;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void http_deferred_stream_end(struct http_deferred *d, bool close)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(d->req.ev);
    if (close && conn) {
        /* Frees the request with the connection: d->req.ev is not touched again. */
        deferred_done(d);
        evhttp_connection_free(conn);
        return;
    }
    struct evhttp_request *ev = d->req.ev;
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (bev) { /* the connection may carry more requests: their timeouts as before */
        int64_t ms = d->req.loop->srv->opts.timeout_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, ms > 0 ? &tv : NULL, ms > 0 ? &tv : NULL);
        deferred_reading(ev, true);
    }
    deferred_done(d);
    /* With the connection gone, libevent frees the request here. */
    evhttp_send_reply_end(ev);
}

int http_deferred_stream_fd(struct http_deferred *d)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(d->req.ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    return bev ? bufferevent_getfd(bev) : -1;
}

/* --- replies read from a source ------------------------------------------------------------ */

#define PUMP_INFLIGHT 2 /* windows queued for the socket at a time */

struct http_pump {
    struct http_deferred *d; /* NULL once the reply has ended */
    struct evhttp_request *ev;
    struct event *wake;
    struct http_source src;
    uint64_t len, queued;
    size_t window;
    int inflight; /* windows queued and not yet taken by the client (or dropped) */
};

static void pump_free_if_done(struct http_pump *p)
{
    if (p->d || p->inflight > 0)
        return;
    if (p->src.release)
        p->src.release(p->src.arg);
    event_free(p->wake);
    free(p);
}

/* The end of the reply: its last byte queued (close false), or cut short (close true). */
static void pump_end(struct http_pump *p, bool close)
{
    struct http_deferred *d = p->d;
    p->d = NULL;
    p->inflight++; /* windows dropped with the connection must not free p under us */
    http_deferred_stream_end(d, close);
    p->inflight--;
    pump_free_if_done(p);
}

/* A window has left the output buffer: taken by the socket, or dropped with the
 * connection. Runs inside libevent's buffer code: the next window is read from the loop. */
static void pump_window_done(const void *data, size_t len, void *arg)
{
    (void)len;
    struct http_pump *p = arg;
    free((void *)data);
    p->inflight--;
    if (p->d)
        event_active(p->wake, EV_TIMEOUT, 0);
    else
        pump_free_if_done(p);
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_pump *p = arg;
    if (!p->d)
        return;
    while (p->inflight < PUMP_INFLIGHT && p->queued < p->len) {
        if (!evhttp_request_get_connection(p->ev)) { /* the client has gone */
            pump_end(p, false);
            return;
        }
        size_t n = p->len - p->queued < p->window ? (size_t)(p->len - p->queued) : p->window;
        char *buf = malloc(n);
        long got = buf ? p->src.read(p->src.arg, p->queued, buf, n) : -ENOMEM;
        if (got <= 0 || (size_t)got > n) {
            free(buf);
            log_warn("op=http.source req=%s error=%ld sent=%" PRIu64 " len=%" PRIu64, p->d->req.id,
                     got, p->queued, p->len);
            pump_end(p, true);
            return;
        }
        struct evbuffer *b = evbuffer_new();
        if (!b || evbuffer_add_reference(b, buf, (size_t)got, pump_window_done, p) < 0) {
            if (b)
                evbuffer_free(b);
            free(buf);
            pump_end(p, true);
            return;
        }
        p->inflight++;
        p->queued += (uint64_t)got;
        evhttp_send_reply_chunk(p->ev, b);
        evbuffer_free(b);
    }
    /* The reply ends once its last window has left the output buffer: ended with windows
     * still queued, the last of them were seen not to reach the client (libevent 2.1.12
     * over TLS). */
    if (p->queued >= p->len && p->inflight == 0)
        pump_end(p, false);
}

void http_reply_source(struct http_req *req, int status, const char *ctype, uint64_t len,
                       size_t window, const struct http_source *src)
{
    struct http_pump *p = calloc(1, sizeof(*p));
    struct event *wake = p ? event_new(req->loop->base, -1, 0, pump_cb, p) : NULL;
    struct http_deferred *d = wake ? http_req_defer(req) : NULL;
    if (!d) {
        if (wake)
            event_free(wake);
        free(p);
        if (src->release)
            src->release(src->arg);
        http_reply_problem(req, PROBLEM_INTERNAL, "out of memory", NULL);
        return;
    }
    *p = (struct http_pump){
        .d = d, .ev = d->req.ev, .wake = wake, .src = *src, .len = len, .window = window};
    struct evkeyvalq *h = evhttp_request_get_output_headers(p->ev);
    char cl[24];
    snprintf(cl, sizeof(cl), "%" PRIu64, len);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Content-Length", cl);
    evhttp_add_header(h, "X-Request-Id", d->req.id);
    if (!evhttp_find_header(h, "Cache-Control"))
        evhttp_add_header(h, "Cache-Control", "no-store");
    /* evhttp turns reading on with each window (to see a close), and its read timeout
     * would cut a long reply off: only the write timeout stays, for a client that stops
     * reading (http_deferred_stream_end() puts both back). */
    struct evhttp_connection *conn = evhttp_request_get_connection(p->ev);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    if (bev) {
        int64_t ms = d->req.loop->srv->opts.timeout_ms;
        struct timeval wtv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, NULL, ms > 0 ? &wtv : NULL);
    }
    evhttp_send_reply_start(p->ev, status, reason_phrase(status));
    d->req.status = status;
    d->req.replied = true;
    pump_cb(-1, 0, p);
}

struct loop_post {
    void (*fn)(void *arg);
    void *arg;
};

static void loop_post_cb(evutil_socket_t fd, short what, void *arg)
{
    struct loop_post *p = arg;
    p->fn(p->arg);
    free(p);
}

int http_loop_post(struct event_base *base, void (*fn)(void *arg), void *arg)
{
    struct loop_post *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->arg = arg;
    if (event_base_once(base, -1, EV_TIMEOUT, loop_post_cb, p, NULL) < 0) {
        free(p);
        return -ENOMEM;
    }
    return 0;
}

/* --- listeners, TLS and loops ------------------------------------------------------------ */

/* evhttp's bufferevent for a new connection: TLS or not, under the guard's deadline and
 * caps. NULL lets evhttp make a plain one itself (only when out of memory). */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    struct http_loop *loop = arg;
    struct bufferevent *bev = NULL;
    if (loop->srv->ssl) {
        SSL *ssl = SSL_new(loop->srv->ssl);
        if (!ssl)
            return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev && http_guard_accept(loop->srv->guard, base, bev) < 0)
        log_error("op=http.accept error=\"out of memory\" guard=off");
    return bev;
}

static int ssl_setup(struct http_server *srv, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return -ENOMEM;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* TLS 1.2 suites: forward secret AEAD only. TLS 1.3 keeps OpenSSL's defaults. */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    /* An idle connection (an agent's held long-poll) keeps no TLS record buffers: they are
     * allocated for a record and freed once it is read or written. About 14 KiB less RSS
     * per held agent, for a malloc and a free per record (docs/operations.md, "Holding
     * many agents"). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, srv->opts.cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, srv->opts.key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char ossl[256];
        ERR_error_string_n(ERR_get_error(), ossl, sizeof(ossl));
        snprintf(err, errlen, "TLS certificate %s or key %s: %s", srv->opts.cert_file,
                 srv->opts.key_file, ossl);
        SSL_CTX_free(ctx);
        return -EINVAL;
    }
    srv->ssl = ctx;
    return 0;
}

static int bind_loop(struct http_server *srv, struct http_loop *loop, int port, char *err,
                     size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int r = getaddrinfo(srv->opts.address, portstr, &hints, &ai);
    if (r != 0) {
        snprintf(err, errlen, "listen address '%s': %s", srv->opts.address, gai_strerror(r));
        return -EINVAL;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        loop->base, NULL, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        srv->opts.backlog > 0 ? srv->opts.backlog : 1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!l) {
        int e = errno ? errno : EADDRINUSE;
        snprintf(err, errlen, "cannot listen on %s:%d: %s", srv->opts.address, port, strerror(e));
        return -e;
    }
    /* Accepted sockets inherit this on Linux. Without it, a response written in more than
     * one segment waits for the client's delayed ACK: about 40 ms per request. */
    int one = 1;
    setsockopt(evconnlistener_get_fd(l), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    loop->bound = evhttp_bind_listener(loop->http, l);
    if (!loop->bound) {
        evconnlistener_free(l);
        snprintf(err, errlen, "cannot attach the listener");
        return -ENOMEM;
    }
    if (port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sl);
        srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    } else {
        srv->port = port;
    }
    return 0;
}

static void *loop_main(void *arg)
{
    struct http_loop *loop = arg;
    event_base_dispatch(loop->base);
    return NULL;
}

static int loop_setup(struct http_server *srv, struct http_loop *loop, char *err, size_t errlen)
{
    loop->srv = srv;
    loop->base = event_base_new();
    if (!loop->base)
        return -ENOMEM;
    loop->http = evhttp_new(loop->base);
    if (!loop->http)
        return -ENOMEM;
    evhttp_set_max_headers_size(loop->http, (ev_ssize_t)srv->opts.max_header_bytes);
    evhttp_set_max_body_size(loop->http, (ev_ssize_t)srv->opts.max_body_bytes);
    struct timeval tv = {.tv_sec = srv->opts.timeout_ms / 1000,
                         .tv_usec = (srv->opts.timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(loop->http, &tv);
    evhttp_set_allowed_methods(loop->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                               EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                               EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(loop->http, on_request, loop);
    evhttp_set_bevcb(loop->http, make_bev, loop);
    return bind_loop(srv, loop, srv->port, err, errlen);
}

int http_server_start(const struct http_options *opts, struct http_server **ret, char *err,
                      size_t errlen)
{
    if (!opts || opts->threads < 1 || opts->threads > 256 || !opts->routes ||
        (!opts->cert_file) != (!opts->key_file) || !opts->hooks.authenticate) {
        snprintf(err, errlen, "invalid HTTP server options");
        return -EINVAL;
    }
    pthread_once(&evthread_once, evthread_init);

    struct http_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->opts = *opts;
    srv->port = opts->port;
    int r = 0;
    if (opts->cert_file)
        r = ssl_setup(srv, err, errlen);
    if (r == 0) {
        struct http_guard_options go = {
            .request_timeout_ms = opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 10000,
            .idle_timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000,
            .max_connections = opts->max_connections > 0 ? opts->max_connections : 4096,
            .max_per_address =
                opts->max_connections_per_address > 0 ? opts->max_connections_per_address : 256,
            .max_body_hard = opts->max_body_bytes,
            .max_header_bytes = opts->max_header_bytes,
            .tls = srv->ssl != NULL,
            .routes = opts->routes,
            .nroutes = opts->nroutes,
        };
        r = http_guard_new(&go, &srv->guard);
    }
    if (r == 0) {
        srv->loops = calloc((size_t)opts->threads, sizeof(*srv->loops));
        if (!srv->loops)
            r = -ENOMEM;
    }
    for (int i = 0; r == 0 && i < opts->threads; i++) {
        r = loop_setup(srv, &srv->loops[i], err, errlen);
        srv->nloops = i + 1;
    }
    for (int i = 0; r == 0 && i < srv->nloops; i++) {
        if (pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]) != 0)
            r = -EAGAIN;
        else
            srv->loops[i].started = true;
    }
    if (r < 0) {
        http_server_stop(srv);
        return r;
    }
    *ret = srv;
    return 0;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

uint64_t http_server_requests(const struct http_server *srv)
{
    return atomic_load(&srv->requests);
}

int http_server_connections(const struct http_server *srv)
{
    return srv->guard ? http_guard_connections(srv->guard) : 0;
}

/* Runs on the loop's own thread: stop accepting, then leave the loop once the events
 * already active (requests being handled) are done. */
static void loop_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;
    if (loop->bound) {
        evhttp_del_accept_socket(loop->http, loop->bound);
        loop->bound = NULL;
    }
    event_base_loopexit(loop->base, NULL);
}

void http_server_stop(struct http_server *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->nloops; i++) {
        struct http_loop *loop = &srv->loops[i];
        if (loop->started)
            event_base_once(loop->base, -1, EV_TIMEOUT, loop_stop_cb, loop, NULL);
    }
    for (int i = 0; i < srv->nloops; i++) {
        struct http_loop *loop = &srv->loops[i];
        if (loop->started)
            pthread_join(loop->thread, NULL);
        if (loop->http)
            evhttp_free(loop->http);
        if (loop->base && srv->guard)
            http_guard_loop_stop(srv->guard, loop->base);
        if (loop->base)
            event_base_free(loop->base);
    }
    free(srv->loops);
    http_guard_free(srv->guard); /* after evhttp_free(): closing connections update it */
    if (srv->ssl)
        SSL_CTX_free(srv->ssl);
    free(srv);
}
