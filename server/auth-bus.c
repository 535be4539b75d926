/* auth-bus.c: revocations and suspensions pushed to every node (see auth-bus.h), and their
 * publisher, app_auth_invalidate() (app.h). */
#include "server/auth-bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "proto/bus.h"
#include "server/agentcache.h"
#include "server/app.h"
#include "server/authcache.h"
#include "server/bus.h"

struct auth_bus {
    struct app *app;
    pthread_t thread;
    atomic_bool stop;
    struct bus_sub *sub;
};

/* Drop from this node's caches what a change made stale (NULL or "": nothing of that kind). */
static void drop(struct app *app, const char *key_id, const char *tenant_id, const char *agent_id)
{
    authcache_drop_key(app->auth, key_id);
    authcache_drop_tenant(app->auth, tenant_id);
    agentcache_drop_tenant(app->agents, tenant_id);
    agentcache_drop_agent(app->agents, agent_id);
}

void app_auth_invalidate(struct app *app, const char *key_id, const char *tenant_id,
                         const char *agent_id)
{
    drop(app, key_id, tenant_id, agent_id);
    char *msg = proto_bus_auth_invalidate_encode(key_id, tenant_id, agent_id);
    if (!msg)
        return;
    int r = bus_broadcast(app->bus, PROTO_BUS_AUTH_EXCHANGE, msg, strlen(msg),
                          app->cfg->bus_publish_timeout_ms);
    free(msg);
    if (r < 0)
        log_warn("op=auth.invalidate err=%d msg=\"not pushed to the other nodes: they see the "
                 "change within auth.cache_ttl (agents: auth.agent_cache_ttl)\"",
                 r);
}

static void handle(struct auth_bus *ab, const char *body, size_t len)
{
    struct proto_bus_auth_invalidate m;
    struct jsonv_error err;
    if (proto_bus_auth_invalidate_decode(body, len, &m, &err) < 0) {
        log_warn("op=auth.bus field=%s error=\"%s: dropped\"", err.field, err.detail);
        return;
    }
    drop(ab->app, m.key_id, m.tenant_id, m.agent_id);
    log_debug("op=auth.bus key=%s tenant=%s agent=%s state=dropped", m.key_id[0] ? m.key_id : "-",
              m.tenant_id[0] ? m.tenant_id : "-", m.agent_id[0] ? m.agent_id : "-");
}

static void *run(void *arg)
{
    struct auth_bus *ab = arg;
    bool up = false;
    while (!atomic_load(&ab->stop)) {
        char *body = NULL;
        size_t len = 0;
        int r = bus_sub_next(ab->sub, 200, &body, &len);
        if (r < 0) {
            if (up) {
                log_warn("op=auth.bus state=lost msg=\"caches dropped; entries expire after "
                         "auth.cache_ttl (agents: auth.agent_cache_ttl) until the bus is back\"");
                authcache_drop_all(ab->app->auth);
                agentcache_drop_all(ab->app->agents);
            }
            up = false;
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL); /* bus_sub_next() reconnects at most once a second */
            continue;
        }
        if (!up) {
            /* Messages sent while we were not listening are lost: forget everything. */
            authcache_drop_all(ab->app->auth);
            agentcache_drop_all(ab->app->agents);
            log_info("op=auth.bus state=listening");
            up = true;
        }
        if (r == 1) {
            handle(ab, body, len);
            free(body);
        }
    }
    return NULL;
}

int auth_bus_start(struct app *app, struct auth_bus **ret)
{
    struct auth_bus *ab = calloc(1, sizeof(*ab));
    if (!ab)
        return -ENOMEM;
    ab->app = app;
    /* The pid too: two nodes left with the same node.name must not share (and fight over)
     * one exclusive queue. */
    char queue[160];
    snprintf(queue, sizeof(queue), "%s%s.%ld", PROTO_BUS_AUTH_QUEUE_PREFIX, app->node,
             (long)getpid());
    int r = bus_sub_new_fanout(app->cfg->amqp_url, PROTO_BUS_AUTH_EXCHANGE, queue, &ab->sub);
    if (r < 0) {
        free(ab);
        return r;
    }
    if (pthread_create(&ab->thread, NULL, run, ab) != 0) {
        bus_sub_free(ab->sub);
        free(ab);
        return -EAGAIN;
    }
    *ret = ab;
    return 0;
}

void auth_bus_stop(struct auth_bus *ab)
{
    if (!ab)
        return;
    atomic_store(&ab->stop, true);
    pthread_join(ab->thread, NULL);
    bus_sub_free(ab->sub);
    free(ab);
}
