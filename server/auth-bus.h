/* auth-bus.h: each api node's listener of auth.invalidate (proto/bus.h), which drops what
 * the node's cache (server/authcache.h) remembers of a revoked key or a changed tenant.
 *
 * One thread, one node_local queue bound to the fanout exchange PROTO_BUS_AUTH_EXCHANGE.
 * When the bus connection fails, and again when it comes back, the whole cache is
 * dropped: messages may have been missed meanwhile. While the bus is down, entries still
 * expire after auth.cache_ttl. */
#pragma once

#include <stdbool.h>

struct app;
struct auth_bus;

/* Start the listener for app (borrowed; outlives it). Returns 0 or -errno. */
int auth_bus_start(struct app *app, struct auth_bus **ret);
/* Stop the thread and free. Accepts NULL. */
void auth_bus_stop(struct auth_bus *ab);
