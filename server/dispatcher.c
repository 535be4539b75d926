/* dispatcher.c: the dispatch loop (see dispatcher.h). */
#include "server/dispatcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "proto/bus.h"
#include "server/app.h"
#include "server/bus.h"
#include "server/gateway-internal.h"

struct dispatcher {
    struct app *app;
    struct gw_thread th;
    atomic_bool kick; /* a round is wanted now */
};

static const struct store_stmt q_dispatch =
    STORE_STMT("gw_dispatch",
               "SELECT job_id, tenant_id, agent_id, epoch, gateway_node"
               "  FROM dispatch_round($1::int, $2::int, $3::int)",
               3);

static void *dispatch_main(void *arg)
{
    struct dispatcher *d = arg;
    struct app *app = d->app;
    struct bus_sub *sub = NULL;
    bus_sub_new(app->cfg->amqp_url, app->cfg->bus_jobs_queue, false, &sub);
    char lease[24], online[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    uint64_t next_tick = 0;
    while (!atomic_load(&d->th.stop)) {
        /* A submission (on the bus) or a kick (a slot came free) starts a round at once;
         * otherwise one every tick. The bus is read in short waits so that a kick is seen
         * within a few milliseconds. */
        char *body = NULL;
        size_t len = 0;
        int r = sub ? bus_sub_next(sub, 5, &body, &len) : 0;
        /* A submission only starts the round: what it names is a hint (proto/bus.h). */
        struct proto_bus_jobs_submitted m = {0};
        if (r == 1 && proto_bus_jobs_submitted_decode(body, len, &m, NULL) < 0)
            log_debug("op=dispatch.bus error=\"not a jobs.submitted message\"");
        proto_bus_jobs_submitted_clear(&m);
        free(body);
        if (r < 0 || !sub)
            gw_thread_sleep(&d->th, 5);
        bool kicked = atomic_exchange(&d->kick, false);
        if (r != 1 && !kicked && clock_mono_ns() < next_tick)
            continue;
        next_tick = clock_mono_ns() + (uint64_t)app->cfg->dispatch_tick_ms * 1000000u;
        for (int round = 0; round < 100 && !atomic_load(&d->th.stop); round++) {
            const char *p[] = {"100", lease, online};
            PGresult *res = NULL;
            int n = store_exec_once(app->store, NULL, &q_dispatch, p, &res);
            if (n < 0) {
                gw_log_store_failure("dispatch", n);
                break;
            }
            for (int i = 0; i < n; i++) {
                const char *agent = PQgetvalue(res, i, 2);
                const char *node = PQgetvalue(res, i, 4);
                log_info("op=dispatch job=%s tenant=%s agent=%s epoch=%s", PQgetvalue(res, i, 0),
                         PQgetvalue(res, i, 1), agent, PQgetvalue(res, i, 3));
                gateway_notify_node(app, agent, PQgetisnull(res, i, 4) ? NULL : node);
            }
            PQclear(res);
            if (n < 100)
                break;
        }
    }
    bus_sub_free(sub);
    return NULL;
}

void dispatcher_kick(struct dispatcher *d)
{
    if (d)
        atomic_store(&d->kick, true);
}

int dispatcher_start(struct app *app, struct dispatcher **ret)
{
    struct dispatcher *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->app = app;
    int r = gw_thread_start(&d->th, dispatch_main, d);
    if (r < 0) {
        free(d);
        return r;
    }
    *ret = d;
    return 0;
}

void dispatcher_stop(struct dispatcher *d)
{
    if (!d)
        return;
    gw_thread_stop(&d->th);
    free(d);
}
