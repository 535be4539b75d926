/* lg-http.c: a small HTTP/1.1 client over TLS bufferevents (see lg.h).
 *
 * Not evhttp's client: it reconnects a TLS bufferevent by reusing its SSL object, which
 * cannot be reused, and the load generator must choose each connection's source address
 * (thousands of connections to one port would run out of ephemeral ports from one
 * address). The server's answers have a Content-Length (orchd never chunks these routes);
 * anything else is a failed request. */
#include "tools/loadgen/lg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"

#define LG_MAX_HEADER (64 * 1024)
#define LG_MAX_BODY   (64 * 1024 * 1024)

uint64_t lg_http_connects;

struct lg_conn {
    struct lg_http_ctx *ctx;
    int src;
    struct bufferevent *bev; /* NULL while closed */
    SSL_SESSION *session;    /* the last one, to resume */
    bool busy;
    bool have_header;
    bool close_after; /* the answer said Connection: close */
    int status;
    int retry_after_s;
    size_t header_len, body_len;
    lg_http_cb cb;
    void *arg;
};

int lg_http_ctx_init(struct lg_http_ctx *c, struct event_base *base, const char *url,
                     const char *ca, const char *srcs)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
    const char *p = strncmp(url, "https://", 8) == 0 ? url + 8 : NULL;
    if (!p) {
        fprintf(stderr, "orch-loadgen: --url must be https://ADDRESS:PORT\n");
        return -EINVAL;
    }
    const char *colon = strrchr(p, ':');
    size_t hl = colon ? (size_t)(colon - p) : strlen(p);
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 443;
    if (hl == 0 || hl >= sizeof(c->host) || (colon && (!end || (*end && *end != '/'))) ||
        port < 1 || port > 65535) {
        fprintf(stderr, "orch-loadgen: --url: cannot read '%s'\n", url);
        return -EINVAL;
    }
    memcpy(c->host, p, hl);
    c->host[hl] = '\0';
    c->dst.sin_family = AF_INET;
    c->dst.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, c->host, &c->dst.sin_addr) != 1 ||
        (ntohl(c->dst.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "orch-loadgen: --url: the server must be a loopback IPv4 address\n");
        return -EINVAL;
    }
    if (srcs && *srcs) {
        int n = 1;
        for (const char *q = srcs; *q; q++)
            n += *q == ',';
        c->srcs = calloc((size_t)n, sizeof(*c->srcs));
        if (!c->srcs)
            return -ENOMEM;
        const char *q = srcs;
        while (*q) {
            size_t len = strcspn(q, ",");
            char one[64];
            if (len == 0 || len >= sizeof(one)) {
                fprintf(stderr, "orch-loadgen: --source-addrs: empty or long entry\n");
                goto fail;
            }
            memcpy(one, q, len);
            one[len] = '\0';
            struct sockaddr_in *sa = &c->srcs[c->nsrcs];
            sa->sin_family = AF_INET;
            if (inet_pton(AF_INET, one, &sa->sin_addr) != 1 ||
                (ntohl(sa->sin_addr.s_addr) >> 24) != 127) {
                fprintf(stderr, "orch-loadgen: --source-addrs: '%s' is not a loopback address\n",
                        one);
                goto fail;
            }
            c->nsrcs++;
            q += len;
            if (*q == ',')
                q++;
        }
    }
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (!c->ssl)
        goto fail;
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    /* An idle agent's connection keeps no TLS record buffers: the load generator holds up
     * to 100,000 of them. */
    SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_CLIENT);
    if (ca && *ca ? SSL_CTX_load_verify_locations(c->ssl, ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(c->ssl) != 1) {
        fprintf(stderr, "orch-loadgen: --ca %s: cannot load it\n", ca ? ca : "(system)");
        goto fail;
    }
    return 0;
fail:
    lg_http_ctx_free(c);
    return -EINVAL;
}

void lg_http_ctx_free(struct lg_http_ctx *c)
{
    if (c->ssl)
        SSL_CTX_free(c->ssl);
    c->ssl = NULL;
    free(c->srcs);
    c->srcs = NULL;
    c->nsrcs = 0;
}

struct lg_conn *lg_conn_new(struct lg_http_ctx *c, int src_index)
{
    struct lg_conn *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->ctx = c;
    k->src = c->nsrcs ? src_index % c->nsrcs : -1;
    return k;
}

bool lg_conn_busy(const struct lg_conn *k)
{
    return k->busy;
}

/* Drop the connection (keeping its TLS session to resume); no callback runs. */
static void conn_close(struct lg_conn *k)
{
    if (!k->bev)
        return;
    SSL *ssl = bufferevent_openssl_get_ssl(k->bev);
    SSL_SESSION *s = ssl ? SSL_get1_session(ssl) : NULL;
    if (s && SSL_SESSION_is_resumable(s)) {
        if (k->session)
            SSL_SESSION_free(k->session);
        k->session = s;
    } else if (s) {
        SSL_SESSION_free(s);
    }
    bufferevent_free(k->bev); /* closes the socket and frees ssl (BEV_OPT_CLOSE_ON_FREE) */
    k->bev = NULL;
    k->have_header = false;
}

void lg_conn_abort(struct lg_conn *k)
{
    conn_close(k);
    k->busy = false;
}

void lg_conn_free(struct lg_conn *k)
{
    if (!k)
        return;
    conn_close(k);
    if (k->session)
        SSL_SESSION_free(k->session);
    free(k);
}

/* End the request in flight with status (0: no answer) and body; the connection is closed
 * first when close_it. */
static void finish(struct lg_conn *k, int status, json_t *body, bool close_it)
{
    if (close_it)
        conn_close(k);
    k->busy = false;
    k->have_header = false;
    lg_http_cb cb = k->cb;
    void *arg = k->arg;
    int ra = k->retry_after_s;
    k->cb = NULL;
    if (cb)
        cb(arg, status, body, ra);
    json_decref(body);
}

/* The status line and headers (len bytes, ending in the blank line). Returns 0 or -EPROTO. */
static int parse_header(struct lg_conn *k, const char *h, size_t len, bool *close_it)
{
    if (len < 12 || strncmp(h, "HTTP/1.", 7) != 0)
        return -EPROTO;
    k->status = (int)strtol(h + 9, NULL, 10);
    k->body_len = 0;
    k->retry_after_s = 0;
    *close_it = false;
    const char *line = memchr(h, '\n', len);
    while (line && (size_t)(line - h) < len) {
        line++;
        const char *eol = memchr(line, '\n', len - (size_t)(line - h));
        if (!eol)
            break;
        size_t ll = (size_t)(eol - line);
        if (ll >= 15 && strncasecmp(line, "Content-Length:", 15) == 0) {
            k->body_len = (size_t)strtoull(line + 15, NULL, 10);
        } else if (ll >= 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
            k->retry_after_s = (int)strtol(line + 12, NULL, 10);
        } else if (ll >= 17 && strncasecmp(line, "Connection: close", 17) == 0) {
            *close_it = true;
        } else if (ll >= 18 && strncasecmp(line, "Transfer-Encoding:", 18) == 0) {
            return -EPROTO;
        }
        line = eol;
    }
    if (k->status < 100 || k->status > 599 || k->body_len > LG_MAX_BODY)
        return -EPROTO;
    /* No Content-Length: an empty body, as orchd's 204s. */
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct lg_conn *k = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!k->busy) {
        /* Nothing was asked: the server has nothing to say outside an answer. */
        conn_close(k);
        return;
    }
    if (!k->have_header) {
        struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (pos.pos < 0) {
            if (evbuffer_get_length(in) > LG_MAX_HEADER)
                finish(k, 0, NULL, true);
            return;
        }
        k->header_len = (size_t)pos.pos + 4;
        const char *h = (const char *)evbuffer_pullup(in, (ev_ssize_t)k->header_len);
        if (!h || parse_header(k, h, k->header_len, &k->close_after) < 0) {
            finish(k, 0, NULL, true);
            return;
        }
        evbuffer_drain(in, k->header_len);
        k->have_header = true;
    }
    if (evbuffer_get_length(in) < k->body_len)
        return;
    json_t *body = NULL;
    if (k->body_len > 0) {
        const char *b = (const char *)evbuffer_pullup(in, (ev_ssize_t)k->body_len);
        body = b ? json_loadb(b, k->body_len, 0, NULL) : NULL;
        evbuffer_drain(in, k->body_len);
    }
    bufferevent_set_timeouts(bev, NULL, NULL);
    finish(k, k->status, body, k->close_after);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct lg_conn *k = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    /* EOF, error or timeout: the connection is gone. */
    while (ERR_get_error() != 0) {
    }
    if (k->busy)
        finish(k, 0, NULL, true);
    else
        conn_close(k);
}

/* Open a connection: TCP from the chosen source address, then TLS (resuming). */
static int conn_open(struct lg_conn *k)
{
    struct lg_http_ctx *c = k->ctx;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (k->src >= 0) {
        int one = 1;
        /* The port is picked at connect(), per destination: more connections per source. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&c->srcs[k->src], sizeof(c->srcs[k->src])) < 0) {
            int r = -errno;
            close(fd);
            return r;
        }
    }
    SSL *ssl = SSL_new(c->ssl);
    if (!ssl) {
        close(fd);
        return -ENOMEM;
    }
    SSL_set1_host(ssl, c->host);
    if (k->session)
        SSL_set_session(ssl, k->session);
    k->bev = bufferevent_openssl_socket_new(c->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!k->bev) {
        SSL_free(ssl);
        close(fd);
        return -ENOMEM;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(k->bev, 1);
    bufferevent_setcb(k->bev, on_read, NULL, on_event, k);
    if (bufferevent_socket_connect(k->bev, (const struct sockaddr *)&c->dst, sizeof(c->dst)) < 0) {
        bufferevent_free(k->bev);
        k->bev = NULL;
        return -ECONNREFUSED;
    }
    bufferevent_enable(k->bev, EV_READ | EV_WRITE);
    lg_http_connects++;
    return 0;
}

int lg_conn_request(struct lg_conn *k, const char *method, const char *path, const char *auth,
                    const char *header, const char *body, int timeout_ms, lg_http_cb cb, void *arg)
{
    if (k->busy)
        return -EBUSY;
    if (!k->bev) {
        int r = conn_open(k);
        if (r < 0)
            return r;
    }
    size_t blen = body ? strlen(body) : 0;
    struct buf h = BUF_INIT;
    buf_printf(&h, "%s %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n", method, path,
               k->ctx->host);
    if (auth)
        buf_printf(&h, "Authorization: Bearer %s\r\n", auth);
    if (header)
        buf_printf(&h, "%s\r\n", header);
    if (body)
        buf_printf(&h, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    else if (strcmp(method, "POST") == 0)
        buf_append_str(&h, "Content-Length: 0\r\n");
    int r = buf_append_str(&h, "\r\n");
    struct evbuffer *out = bufferevent_get_output(k->bev);
    if (r < 0 || evbuffer_add(out, h.data, h.len) < 0 || (body && evbuffer_add(out, body, blen))) {
        buf_free(&h);
        conn_close(k);
        return -ENOMEM;
    }
    buf_free(&h);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(k->bev, &tv, &tv);
    k->busy = true;
    k->have_header = false;
    k->cb = cb;
    k->arg = arg;
    return 0;
}
