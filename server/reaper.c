/* reaper.c: leases that ran out, agents gone silent, old logs (see reaper.h). */
#include "server/reaper.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "server/app.h"
#include "server/blob-gc.h"
#include "server/config.h"
#include "server/gateway-internal.h"
#include "server/logs-retention.h"

/* Key of the reaper's advisory lock ("orchreap"). */
#define REAPER_LOCK_KEY "7957688149386658160"

static const struct store_stmt q_reap =
    STORE_STMT("gw_reap",
               "SELECT pg_try_advisory_xact_lock(" REAPER_LOCK_KEY ")"
               "   AND reap_expired_leases(1000) >= 0",
               0);

static const struct store_stmt q_offline =
    STORE_STMT("gw_offline",
               "UPDATE agents SET status = 'offline', gateway_node = NULL"
               " WHERE status = 'online' AND (last_heartbeat_at IS NULL"
               "       OR last_heartbeat_at < now() - make_interval(secs => $1::int))",
               1);

struct reaper {
    struct app *app;
    struct gw_thread th;
};

static void *reaper_main(void *arg)
{
    struct reaper *rp = arg;
    struct app *app = rp->app;
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    while (!atomic_load(&rp->th.stop)) {
        /* One line per round (debug): tests count them against the clock. */
        log_debug("op=reaper round=reap");
        struct store_tx *tx = NULL;
        int r = store_tx_begin_system(app->store, &tx);
        if (r == 0) {
            store_tx_exec(tx, &q_reap, NULL, NULL);
            const char *p[] = {online};
            store_tx_exec(tx, &q_offline, p, NULL);
            r = store_tx_commit(tx);
        }
        if (r < 0)
            gw_log_store_failure("reaper", r);
        logs_retention_tick(app);
        blob_gc_tick(app);
        gw_thread_sleep(&rp->th, 1000);
    }
    return NULL;
}

int reaper_start(struct app *app, struct reaper **ret)
{
    struct reaper *rp = calloc(1, sizeof(*rp));
    if (!rp)
        return -ENOMEM;
    rp->app = app;
    int r = gw_thread_start(&rp->th, reaper_main, rp);
    if (r < 0) {
        free(rp);
        return r;
    }
    *ret = rp;
    return 0;
}

void reaper_stop(struct reaper *rp)
{
    if (!rp)
        return;
    gw_thread_stop(&rp->th);
    free(rp);
}
