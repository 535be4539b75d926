/* bus-amqp.c: publishing with confirms on librabbitmq-c (see bus.h). */
#include "server/bus.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "proto/bus.h"

#define BUS_MAX_QUEUES 16

struct bus {
    pthread_mutex_t lock;
    char *url;
    amqp_connection_state_t conn; /* NULL while disconnected */
    uint64_t next_attempt_ns;     /* no reconnect before this */
    uint64_t delivery_tag;        /* of the last publish on this connection */
    char *declared[BUS_MAX_QUEUES];
    int ndeclared;
    atomic_bool connected; /* conn != NULL, readable without the lock (metrics) */
};

int bus_new(const char *url, struct bus **ret)
{
    struct bus *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->url = strdup(url);
    if (!b->url) {
        free(b);
        return -ENOMEM;
    }
    pthread_mutex_init(&b->lock, NULL);
    *ret = b;
    return 0;
}

static void disconnect(struct bus *b)
{
    if (b->conn) {
        amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(b->conn);
        b->conn = NULL;
        atomic_store(&b->connected, false);
    }
    for (int i = 0; i < b->ndeclared; i++)
        free(b->declared[i]);
    b->ndeclared = 0;
    b->delivery_tag = 0;
}

bool bus_connected(struct bus *b)
{
    return atomic_load(&b->connected);
}

void bus_free(struct bus *b)
{
    if (!b)
        return;
    disconnect(b);
    pthread_mutex_destroy(&b->lock);
    free(b->url);
    free(b);
}

static bool rpc_ok(amqp_connection_state_t c)
{
    return amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
}

static int connect_locked(struct bus *b)
{
    uint64_t now = clock_mono_ns();
    if (now < b->next_attempt_ns)
        return -ECONNREFUSED;
    b->next_attempt_ns = now + 1000000000ull;

    char *url = strdup(b->url);
    struct amqp_connection_info ci;
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        free(url);
        log_error("op=bus.connect error=\"amqp.url is not a valid AMQP URL\"");
        return -EINVAL;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = c ? amqp_tcp_socket_new(c) : NULL;
    struct timeval tv = {.tv_sec = 2};
    int r = 0;
    if (!s || amqp_socket_open_noblock(s, ci.host, ci.port, &tv) != AMQP_STATUS_OK) {
        r = -ECONNREFUSED;
    } else {
        amqp_set_handshake_timeout(c, &tv);
        amqp_set_rpc_timeout(c, &tv);
        if (amqp_login(c, ci.vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
                .reply_type != AMQP_RESPONSE_NORMAL)
            r = -EACCES;
        else if (!amqp_channel_open(c, 1) || !rpc_ok(c))
            r = -EIO;
        else if (!amqp_confirm_select(c, 1) || !rpc_ok(c))
            r = -EIO;
    }
    free(url);
    if (r < 0) {
        log_warn("op=bus.connect error=%s", r == -EACCES ? "login-refused" : "unreachable");
        if (c)
            amqp_destroy_connection(c);
        return r;
    }
    b->conn = c;
    b->delivery_tag = 0;
    atomic_store(&b->connected, true);
    log_info("op=bus.connect state=connected");
    return 0;
}

static int declare_locked(struct bus *b, const char *queue)
{
    for (int i = 0; i < b->ndeclared; i++)
        if (strcmp(b->declared[i], queue) == 0)
            return 0;
    amqp_table_entry_t arg = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    amqp_queue_declare(b->conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    if (!rpc_ok(b->conn))
        return -EIO;
    if (b->ndeclared < BUS_MAX_QUEUES)
        b->declared[b->ndeclared++] = strdup(queue);
    return 0;
}

/* A fanout exchange (durable: it outlives the nodes that bind to it). Remembered among the
 * declared queues as "x:" and its name. */
static int declare_exchange_locked(struct bus *b, const char *exchange)
{
    char key[160];
    snprintf(key, sizeof(key), "x:%s", exchange);
    for (int i = 0; i < b->ndeclared; i++)
        if (strcmp(b->declared[i], key) == 0)
            return 0;
    amqp_exchange_declare(b->conn, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("fanout"), 0,
                          1, 0, 0, amqp_empty_table);
    if (!rpc_ok(b->conn))
        return -EIO;
    if (b->ndeclared < BUS_MAX_QUEUES)
        b->declared[b->ndeclared++] = strdup(key);
    return 0;
}

/* Wait for the confirm of delivery tag `tag` (acks may be multiple). */
static int wait_confirm_locked(struct bus *b, uint64_t tag, int64_t timeout_ms)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        uint64_t now = clock_mono_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        uint64_t left_us = (deadline - now) / 1000u;
        struct timeval tv = {.tv_sec = (time_t)(left_us / 1000000u),
                             .tv_usec = (suseconds_t)(left_us % 1000000u)};
        amqp_frame_t f;
        int r = amqp_simple_wait_frame_noblock(b->conn, &f, &tv);
        if (r == AMQP_STATUS_TIMEOUT)
            return -ETIMEDOUT;
        if (r != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_METHOD)
            return -EIO;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = f.payload.method.decoded;
            if (ack->delivery_tag == tag || (ack->multiple && ack->delivery_tag >= tag))
                return 0;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            return -EIO;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            return -EIO;
        }
    }
}

/* bus_publish() and bus_publish_node(): node_local, a queue its subscriber declared
 * (exclusive): declaring it here would fail, a missing one drops the message, and nothing
 * in it outlives the broker. */
static int publish(struct bus *b, const char *exchange, const char *queue, const char *body,
                   size_t len, int64_t timeout_ms, bool node_local)
{
    pthread_mutex_lock(&b->lock);
    int r = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!b->conn && (r = connect_locked(b)) < 0)
            break;
        r = exchange     ? declare_exchange_locked(b, exchange)
            : node_local ? 0
                         : declare_locked(b, queue);
        if (r == 0) {
            amqp_basic_properties_t props = {
                ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG,
                .delivery_mode = node_local ? 1 : 2,
                .content_type = amqp_cstring_bytes("application/json"),
            };
            amqp_bytes_t bytes = {.len = len, .bytes = (void *)body};
            r = amqp_basic_publish(
                    b->conn, 1, exchange ? amqp_cstring_bytes(exchange) : amqp_empty_bytes,
                    amqp_cstring_bytes(queue), !node_local, 0, &props, bytes) == AMQP_STATUS_OK
                    ? 0
                    : -EIO;
            if (r == 0)
                r = wait_confirm_locked(b, ++b->delivery_tag, timeout_ms);
        }
        if (r == 0 || r == -ETIMEDOUT)
            break;
        /* The connection is broken: drop it and try once more on a fresh one. */
        disconnect(b);
        b->next_attempt_ns = 0;
    }
    if (r < 0 && r != -ETIMEDOUT && b->conn)
        disconnect(b);
    pthread_mutex_unlock(&b->lock);
    return r;
}

int bus_publish(struct bus *b, const char *queue, const char *body, size_t len, int64_t timeout_ms)
{
    return publish(b, NULL, queue, body, len, timeout_ms, false);
}

int bus_publish_node(struct bus *b, const char *queue, const char *body, size_t len,
                     int64_t timeout_ms)
{
    return publish(b, NULL, queue, body, len, timeout_ms, true);
}

int bus_broadcast(struct bus *b, const char *exchange, const char *body, size_t len,
                  int64_t timeout_ms)
{
    return publish(b, exchange, "", body, len, timeout_ms, true);
}

struct bus_sub {
    char *url;
    char *queue;
    char *exchange; /* NULL, or the fanout exchange the queue is bound to */
    bool node_local;
    amqp_connection_state_t conn;
    uint64_t next_attempt_ns;
};

int bus_sub_new(const char *url, const char *queue, bool node_local, struct bus_sub **ret)
{
    struct bus_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->url = strdup(url);
    s->queue = strdup(queue);
    s->node_local = node_local;
    if (!s->url || !s->queue) {
        bus_sub_free(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

int bus_sub_new_fanout(const char *url, const char *exchange, const char *queue,
                       struct bus_sub **ret)
{
    int r = bus_sub_new(url, queue, true, ret);
    if (r < 0)
        return r;
    (*ret)->exchange = strdup(exchange);
    if (!(*ret)->exchange) {
        bus_sub_free(*ret);
        *ret = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void sub_disconnect(struct bus_sub *s)
{
    if (s->conn) {
        amqp_connection_close(s->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(s->conn);
        s->conn = NULL;
    }
}

void bus_sub_free(struct bus_sub *s)
{
    if (!s)
        return;
    sub_disconnect(s);
    free(s->url);
    free(s->queue);
    free(s->exchange);
    free(s);
}

static int sub_connect(struct bus_sub *s)
{
    uint64_t now = clock_mono_ns();
    if (now < s->next_attempt_ns)
        return -ECONNREFUSED;
    s->next_attempt_ns = now + 1000000000ull;
    char *url = strdup(s->url);
    struct amqp_connection_info ci;
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        free(url);
        return -EINVAL;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *sock = c ? amqp_tcp_socket_new(c) : NULL;
    struct timeval tv = {.tv_sec = 2};
    int r = 0;
    if (!sock || amqp_socket_open_noblock(sock, ci.host, ci.port, &tv) != AMQP_STATUS_OK) {
        r = -ECONNREFUSED;
    } else {
        amqp_set_handshake_timeout(c, &tv);
        amqp_set_rpc_timeout(c, &tv);
        amqp_table_entry_t arg = {
            .key = amqp_cstring_bytes("x-queue-type"),
            .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
        amqp_table_t args = {.num_entries = s->node_local ? 0 : 1, .entries = &arg};
        if (amqp_login(c, ci.vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
                .reply_type != AMQP_RESPONSE_NORMAL)
            r = -EACCES;
        else if (!amqp_channel_open(c, 1) || !rpc_ok(c))
            r = -EIO;
        else if ((amqp_queue_declare(c, 1, amqp_cstring_bytes(s->queue), 0, !s->node_local,
                                     s->node_local, s->node_local, args),
                  !rpc_ok(c)))
            r = -EIO;
        else if (s->exchange && ((amqp_exchange_declare(c, 1, amqp_cstring_bytes(s->exchange),
                                                        amqp_cstring_bytes("fanout"), 0, 1, 0, 0,
                                                        amqp_empty_table),
                                  !rpc_ok(c)) ||
                                 (amqp_queue_bind(c, 1, amqp_cstring_bytes(s->queue),
                                                  amqp_cstring_bytes(s->exchange), amqp_empty_bytes,
                                                  amqp_empty_table),
                                  !rpc_ok(c))))
            r = -EIO;
        else if ((amqp_basic_consume(c, 1, amqp_cstring_bytes(s->queue), amqp_empty_bytes, 0, 1,
                                     s->node_local, amqp_empty_table),
                  !rpc_ok(c)))
            r = -EIO;
    }
    free(url);
    if (r < 0) {
        if (c)
            amqp_destroy_connection(c);
        return r;
    }
    s->conn = c;
    log_debug("op=bus.subscribe queue=%s", s->queue);
    return 0;
}

int bus_sub_next(struct bus_sub *s, int timeout_ms, char **body, size_t *len)
{
    if (!s->conn) {
        int r = sub_connect(s);
        if (r < 0)
            return r;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_envelope_t env;
    amqp_maybe_release_buffers(s->conn);
    amqp_rpc_reply_t rep = amqp_consume_message(s->conn, &env, &tv, 0);
    if (rep.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        rep.library_error == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
        sub_disconnect(s);
        return -ECONNRESET;
    }
    if (env.message.body.len > PROTO_BUS_MSG_MAX) {
        /* No message of ours is that large (proto/bus.h): dropped, unread. */
        log_warn("op=bus.receive queue=%s bytes=%zu error=\"message too large: dropped\"", s->queue,
                 env.message.body.len);
        amqp_destroy_envelope(&env);
        return 0;
    }
    char *b = malloc(env.message.body.len + 1);
    if (b) {
        memcpy(b, env.message.body.bytes, env.message.body.len);
        b[env.message.body.len] = '\0';
        *len = env.message.body.len;
    }
    amqp_destroy_envelope(&env);
    if (!b)
        return -ENOMEM;
    *body = b;
    return 1;
}

int bus_sub_next_or_wake(struct bus_sub *s, int timeout_ms, int wake_fd, char **body, size_t *len)
{
    if (!s->conn) {
        int r = sub_connect(s);
        if (r < 0)
            return r;
    }
    /* A frame librabbitmq read already would not make the socket readable again. */
    if (amqp_data_in_buffer(s->conn) || amqp_frames_enqueued(s->conn))
        return bus_sub_next(s, 0, body, len);
    struct pollfd p[2] = {{.fd = amqp_get_sockfd(s->conn), .events = POLLIN},
                          {.fd = wake_fd, .events = POLLIN}};
    int n = poll(p, 2, timeout_ms);
    if (n <= 0)
        return 0; /* the time passed, or a signal: the caller looks again */
    if (p[1].revents & POLLIN) {
        uint64_t v;
        if (read(wake_fd, &v, sizeof(v)) < 0) {
            /* another reader drained it: nothing to do */
        }
    }
    /* Readable (or closed, which the read reports): what is there, without waiting for
     * the rest of a frame that has not all come (librabbitmq keeps the part). */
    return p[0].revents ? bus_sub_next(s, 0, body, len) : 0;
}
