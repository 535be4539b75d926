/* reaper.c: leases that ran out, agents gone silent (one node at a time, by advisory
 * lock), and the liveness flush and log retention on the same clock (see gateway.h). */
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/app.h"
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

void *gw_reaper_main(void *arg)
{
    struct gateway *gw = arg;
    struct app *app = gw->app;
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    int64_t flush_ms =
        app->cfg->agent_heartbeat_ms / 4 > 0 ? app->cfg->agent_heartbeat_ms / 4 : 1000;
    uint64_t next_reap = 0;
    while (!atomic_load(&gw->stop)) {
        /* One line per round (debug): tests count them against the clock. */
        log_debug("op=reaper round=flush");
        gw_flush_liveness(gw);
        if (clock_mono_ns() >= next_reap) {
            next_reap = clock_mono_ns() + 1000000000ull;
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
        }
        gw_sleep_ms(gw, flush_ms);
    }
    gw_flush_liveness(gw);
    return NULL;
}
