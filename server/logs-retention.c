/* logs-retention.c: job output retention (see logs-retention.h). */
#include "server/logs-retention.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/app.h"

/* Key of the retention's advisory lock ("orchlogs"): not the reaper's, so that a long
 * batch never holds the leases' reaper back on the node that runs both. */
#define LOGS_RETENTION_LOCK_KEY  "8030590385702004595"
#define LOGS_RETENTION_PERIOD_NS (10ull * 1000000000ull)

static const struct store_stmt q_expire =
    STORE_STMT("logs_expire",
               "SELECT CASE WHEN pg_try_advisory_xact_lock(" LOGS_RETENTION_LOCK_KEY ")"
               "            THEN job_logs_expire($1::bigint, $2::int) ELSE 0 END",
               2);

int logs_retention_run(struct app *app)
{
    char age[24], batch[16];
    snprintf(age, sizeof(age), "%lld", (long long)(app->cfg->logs_retention_ms / 1000));
    snprintf(batch, sizeof(batch), "%d", LOGS_RETENTION_BATCH);
    const char *p[] = {age, batch};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_expire, p, &res);
    if (r < 0)
        return r;
    int n = r == 1 ? (int)strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return n;
}

void logs_retention_tick(struct app *app)
{
    static uint64_t next_ns;
    if (app->cfg->logs_retention_ms <= 0 || clock_mono_ns() < next_ns)
        return;
    int n = logs_retention_run(app);
    if (n < 0)
        log_warn("op=logs.retention error=%s", strerror(-n));
    else if (n > 0)
        log_info("op=logs.retention chunks_deleted=%d", n);
    /* A full batch: more are due, go on at the next pass. Otherwise wait a period, shorter
     * for a short retention (tests) so that output does not outlive it by much. */
    uint64_t period = (uint64_t)app->cfg->logs_retention_ms * 1000000ull / 4;
    if (period > LOGS_RETENTION_PERIOD_NS)
        period = LOGS_RETENTION_PERIOD_NS;
    next_ns = clock_mono_ns() + (n == LOGS_RETENTION_BATCH ? 0 : period);
}
