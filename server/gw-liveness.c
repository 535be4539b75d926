/* gw-liveness.c: heartbeats noted in memory and written to PostgreSQL in one batch per
 * flush interval (see gateway.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/id.h"
#include "common/log.h"
#include "server/app.h"
#include "server/config.h"
#include "server/gateway-internal.h"

bool gateway_note_heartbeat(struct gateway *gw, const char *agent_id, const json_t *running)
{
    bool first = true;
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < gw->nseen; i++)
        if (strcmp(gw->seen[i], agent_id) == 0)
            first = false;
    if (first && gw->nseen < GW_MAX_NOTES) {
        char **n = realloc(gw->seen, sizeof(*n) * (size_t)(gw->nseen + 1));
        char *copy = n ? strdup(agent_id) : NULL;
        if (n)
            gw->seen = n;
        if (copy)
            gw->seen[gw->nseen++] = copy;
        else
            first = false; /* out of memory: the next heartbeat counts as first again */
    }
    struct note *slot = NULL;
    for (int i = 0; i < gw->nnotes; i++)
        if (strcmp(gw->notes[i].agent_id, agent_id) == 0)
            slot = &gw->notes[i];
    if (!slot && gw->nnotes < GW_MAX_NOTES) {
        struct note *n = realloc(gw->notes, sizeof(*n) * (size_t)(gw->nnotes + 1));
        if (n) {
            gw->notes = n;
            slot = &gw->notes[gw->nnotes++];
            memset(slot, 0, sizeof(*slot));
            snprintf(slot->agent_id, sizeof(slot->agent_id), "%s", agent_id);
        }
    }
    if (slot) {
        json_decref(slot->running);
        slot->running = json_deep_copy(running);
    }
    pthread_mutex_unlock(&gw->lock);
    return first;
}

/* One batch: every agent heard from since the last flush is online on this node, and the
 * leases of the jobs it runs (as the server knows them) are renewed. Always from after the
 * agent sent its heartbeat, which is what the agent's self-fencing counts on
 * (docs/agent.md, "Leases and self-fencing"). */
static const struct store_stmt q_flush_agents =
    STORE_STMT("gw_flush_agents",
               "UPDATE agents SET last_heartbeat_at = now(), gateway_node = $2,"
               " status = CASE WHEN status = 'offline' THEN 'online' ELSE status END"
               " WHERE id = ANY($1::uuid[])",
               2);

static const struct store_stmt q_renew_leases =
    STORE_STMT("gw_renew_leases",
               "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $4::int)"
               "  FROM unnest($1::uuid[], $2::bigint[], $3::uuid[]) AS r(job_id, epoch, agent_id)"
               " WHERE j.id = r.job_id AND j.epoch = r.epoch AND j.agent_id = r.agent_id"
               "   AND j.status IN ('assigned', 'running')",
               4);

/* After a flush: free the notes, or when it failed put back those of agents not heard
 * from since, so that the renewal is not lost (an agent that was answered counts on it). */
static void requeue_notes(struct gateway *gw, struct note *notes, int n, bool failed)
{
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < n; i++) {
        bool newer = !failed;
        for (int k = 0; k < gw->nnotes && !newer; k++)
            newer = strcmp(gw->notes[k].agent_id, notes[i].agent_id) == 0;
        struct note *v = newer || gw->nnotes >= GW_MAX_NOTES
                             ? NULL
                             : realloc(gw->notes, sizeof(*v) * (size_t)(gw->nnotes + 1));
        if (v) {
            gw->notes = v;
            gw->notes[gw->nnotes++] = notes[i];
        } else {
            json_decref(notes[i].running);
        }
    }
    pthread_mutex_unlock(&gw->lock);
    free(notes);
}

void gw_flush_liveness(struct gateway *gw)
{
    pthread_mutex_lock(&gw->lock);
    struct note *notes = gw->notes;
    int n = gw->nnotes;
    gw->notes = NULL;
    gw->nnotes = 0;
    pthread_mutex_unlock(&gw->lock);
    if (n == 0)
        return;
    struct buf agents = BUF_INIT, jobs = BUF_INIT, epochs = BUF_INIT, owners = BUF_INIT;
    buf_append_str(&agents, "{");
    buf_append_str(&jobs, "{");
    buf_append_str(&epochs, "{");
    buf_append_str(&owners, "{");
    int nj = 0;
    for (int i = 0; i < n; i++) {
        buf_printf(&agents, "%s%s", i ? "," : "", notes[i].agent_id);
        size_t k;
        json_t *e;
        json_array_foreach(notes[i].running, k, e)
        {
            const char *jid = json_string_value(json_object_get(e, "job_id"));
            json_t *ep = json_object_get(e, "epoch");
            if (!jid || !id_is_valid(jid) || !json_is_integer(ep))
                continue;
            buf_printf(&jobs, "%s%s", nj ? "," : "", jid);
            buf_printf(&epochs, "%s%lld", nj ? "," : "", json_integer_value(ep));
            buf_printf(&owners, "%s%s", nj ? "," : "", notes[i].agent_id);
            nj++;
        }
    }
    buf_append_str(&agents, "}");
    buf_append_str(&jobs, "}");
    buf_append_str(&epochs, "}");
    buf_append_str(&owners, "}");
    struct store_tx *tx = NULL;
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(gw->app->cfg->agent_lease_ms / 1000));
    int r = store_tx_begin(gw->app->store, NULL, STORE_TX_ASYNC_COMMIT, &tx);
    const char *p1[] = {agents.data, gw->app->cfg->node_name};
    const char *p2[] = {jobs.data, epochs.data, owners.data, lease};
    if (r >= 0)
        r = store_tx_exec(tx, &q_flush_agents, p1, NULL);
    if (r >= 0 && nj > 0)
        r = store_tx_exec(tx, &q_renew_leases, p2, NULL);
    if (r >= 0)
        r = store_tx_commit(tx);
    else
        store_tx_rollback(tx);
    if (r < 0)
        gw_log_store_failure("gateway.flush", r);
    requeue_notes(gw, notes, n, r < 0);
    buf_free(&agents);
    buf_free(&jobs);
    buf_free(&epochs);
    buf_free(&owners);
}
