/* bus.h: orchd's side of the internal bus on RabbitMQ: durable publishing with publisher
 * confirms to quorum queues. RabbitMQ carries wake-ups and hand-offs; PostgreSQL decides,
 * so a lost or duplicated message never loses or doubles a job (see docs/architecture.md).
 *
 * Thread-safe (one connection, a mutex around each publish). The connection is made on
 * first use and remade after a failure, at most once a second, so a RabbitMQ outage costs
 * a failed publish, not a stalled request.
 *
 * What travels on it, the queues' names and every message's schema, is defined in
 * proto/bus.h: publishers encode and consumers decode through it, nothing else. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus;

/* url: amqp://user:pass@host:port/vhost (borrowed). No connection is made yet. */
int bus_new(const char *url, struct bus **ret);
void bus_free(struct bus *b);
/* Whether the publishing connection is open now (it opens on first use). Lock-free. */
bool bus_connected(struct bus *b);

/* Publish body (persistent) to the durable quorum queue named queue (declared on first
 * use) and wait at most timeout_ms for the broker's confirm. Returns 0 when confirmed,
 * -ECONNREFUSED (no connection), -ETIMEDOUT (no confirm in time), -EIO (nacked or the
 * connection failed). */
int bus_publish(struct bus *b, const char *queue, const char *body, size_t len, int64_t timeout_ms);

/* The same to a node's own queue (a bus_sub_new() node_local one, such as a gateway's
 * orch.gw.<node>): not declared (its subscriber owns it), not persistent; when the node is
 * gone the broker drops the message and this still returns 0. */
int bus_publish_node(struct bus *b, const char *queue, const char *body, size_t len,
                     int64_t timeout_ms);

/* The same to every queue bound to the fanout exchange `exchange` (declared on first use,
 * durable), not persistent: every node that listens gets it; a node that does not listen
 * at that moment never will (its cache entries expire instead, server/authcache.h). */
int bus_broadcast(struct bus *b, const char *exchange, const char *body, size_t len,
                  int64_t timeout_ms);

/* A subscription to one queue, for wake-up messages: messages are acknowledged when they
 * are received (a lost wake-up only costs latency: the dispatcher and the gateway also
 * poll PostgreSQL). Not thread-safe: one thread reads it. */
struct bus_sub;

/* node_local: a queue of this node only (exclusive, deleted with the connection), else a
 * durable quorum queue shared by all nodes. No connection is made yet. */
int bus_sub_new(const char *url, const char *queue, bool node_local, struct bus_sub **ret);
/* A node_local queue bound to the fanout exchange `exchange` (both declared on connect):
 * this node's copy of every bus_broadcast() to it. */
int bus_sub_new_fanout(const char *url, const char *exchange, const char *queue,
                       struct bus_sub **ret);
void bus_sub_free(struct bus_sub *s);
/* Wait at most timeout_ms for a message: 1 with *body (malloc'd, NUL-terminated) and *len,
 * 0 when none came, < 0 when the connection failed (the next call reconnects, at most once
 * a second). */
int bus_sub_next(struct bus_sub *s, int timeout_ms, char **body, size_t *len);
/* bus_sub_next(), or 0 as soon as wake_fd (an eventfd) is readable, which it drains: a
 * thread that also has work from elsewhere waits for both at once. */
int bus_sub_next_or_wake(struct bus_sub *s, int timeout_ms, int wake_fd, char **body, size_t *len);
