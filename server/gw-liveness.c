/* gw-liveness.c: heartbeats noted in memory and written to PostgreSQL in one batch per
 * flush interval, each agent's row only when it needs writing (see gateway.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/agent.h"
#include "server/app.h"
#include "server/config.h"
#include "server/gateway-internal.h"

/* Room in gw->notes for one more (gw->lock held). Returns 0 or -ENOMEM. */
static int notes_reserve(struct gateway *gw)
{
    if (gw->nnotes < gw->capnotes)
        return 0;
    int cap = gw->capnotes ? gw->capnotes * 2 : 64;
    struct note *n = realloc(gw->notes, sizeof(*n) * (size_t)cap);
    if (!n)
        return -ENOMEM;
    gw->notes = n;
    gw->capnotes = cap;
    return 0;
}

/* Add a note (gw->lock held, room reserved, none for the agent yet). */
static struct note *notes_add(struct gateway *gw, const char *agent_id)
{
    struct note *slot = &gw->notes[gw->nnotes];
    memset(slot, 0, sizeof(*slot));
    snprintf(slot->agent_id, sizeof(slot->agent_id), "%s", agent_id);
    gw_idindex_put(&gw->note_index, slot->agent_id, gw->nnotes++);
    return slot;
}

static struct note *notes_find(struct gateway *gw, const char *agent_id)
{
    int32_t k = gw_idindex_find(&gw->note_index, agent_id, gw->notes, sizeof(*gw->notes));
    return k < 0 ? NULL : &gw->notes[k];
}

/* Remember agent_id as seen (gw->lock held). Returns true when it was not seen before. */
static bool seen_add(struct gateway *gw, const char *agent_id)
{
    if (gw_idindex_find(&gw->seen_index, agent_id, gw->seen, sizeof(*gw->seen)) >= 0)
        return false;
    if (gw->nseen >= gw->maxseen)
        return true; /* not remembered: every heartbeat counts as first */
    if (gw->nseen == gw->capseen) {
        int cap = gw->capseen ? gw->capseen * 2 : 64;
        char(*n)[ID_STR_LEN] = realloc(gw->seen, sizeof(*n) * (size_t)cap);
        if (!n)
            return false; /* out of memory: the next heartbeat counts as first again */
        gw->seen = n;
        gw->capseen = cap;
    }
    snprintf(gw->seen[gw->nseen], sizeof(*gw->seen), "%s", agent_id);
    gw_idindex_put(&gw->seen_index, gw->seen[gw->nseen], gw->nseen);
    gw->nseen++;
    return true;
}

bool gateway_note_heartbeat(struct gateway *gw, const char *agent_id, const struct proto_load *load)
{
    pthread_mutex_lock(&gw->lock);
    bool first = seen_add(gw, agent_id);
    struct note *slot = notes_find(gw, agent_id);
    if (!slot && gw->nnotes < GW_MAX_NOTES && notes_reserve(gw) == 0)
        slot = notes_add(gw, agent_id);
    if (slot) {
        slot->memory_free = load && load->memory_available_bytes >= 0
                                ? (long long)load->memory_available_bytes
                                : -1;
        slot->disk_free =
            load && load->disk_free_bytes >= 0 ? (long long)load->disk_free_bytes : -1;
        slot->cpu_percent =
            load && load->cpu_percent >= 0 && load->cpu_percent <= 100 ? load->cpu_percent : -1;
    }
    pthread_mutex_unlock(&gw->lock);
    return first;
}

/* One batch of the agents heard from since the last flush. A row is written only when it
 * needs to be: its stored liveness is older than $6 ms (gw_liveness_refresh_ms()), it is
 * offline or listed on another node (the reaper's, a move), or a host figure moved enough to
 * matter (sql/functions/17_agent_load.sql); an idle agent's heartbeats are otherwise read,
 * not written. The rows written are locked first, in id order, as assign_batch() locks
 * agents (sql/0011_placement.sql): a flush and a dispatcher's batch never wait on each
 * other in a cycle. */
static const struct store_stmt q_flush_agents =
    STORE_STMT("gw_flush_agents",
               "WITH r AS (SELECT * FROM unnest($1::uuid[], $3::bigint[], $4::bigint[], $5::real[])"
               "             AS r(id, memory_free, disk_free, cpu)),"
               " lk AS (SELECT a.id FROM agents a JOIN r ON a.id = r.id"
               "         WHERE a.status = 'offline' OR a.gateway_node IS DISTINCT FROM $2"
               "            OR a.last_heartbeat_at IS NULL"
               "            OR a.last_heartbeat_at <= now() - $6::int * interval '1 millisecond'"
               "            OR agent_bytes_moved(a.memory_free_bytes, r.memory_free)"
               "            OR agent_bytes_moved(a.disk_free_bytes, r.disk_free)"
               "            OR agent_cpu_moved(a.cpu_percent, r.cpu)"
               "         ORDER BY a.id FOR NO KEY UPDATE OF a)"
               "UPDATE agents a SET last_heartbeat_at = now(), gateway_node = $2,"
               " status = CASE WHEN a.status = 'offline' THEN 'online' ELSE a.status END,"
               " memory_free_bytes = coalesce(r.memory_free, a.memory_free_bytes),"
               " disk_free_bytes = coalesce(r.disk_free, a.disk_free_bytes),"
               " cpu_percent = coalesce(r.cpu, a.cpu_percent)"
               " FROM r WHERE a.id = r.id AND a.id IN (SELECT id FROM lk)",
               6);

/* Rounds of the flush: four per heartbeat interval. */
static int64_t flush_interval_ms(const struct orchd_config *cfg)
{
    return cfg->agent_heartbeat_ms / 4 > 0 ? cfg->agent_heartbeat_ms / 4 : 1000;
}

int64_t gw_liveness_refresh_ms(const struct orchd_config *cfg)
{
    int64_t ms = cfg->agent_online_ms - cfg->agent_heartbeat_ms - 2 * flush_interval_ms(cfg) -
                 GW_LIVENESS_SLACK_MS;
    return ms > 0 ? ms : 0;
}

/* After a flush: free the notes, or when it failed put back those of agents not heard
 * from since, whole (their load figures too: notes_add() zeroes them), so that neither
 * their liveness nor their figures are lost. */
static void requeue_notes(struct gateway *gw, struct note *notes, int n, bool failed)
{
    pthread_mutex_lock(&gw->lock);
    for (int i = 0; i < n; i++) {
        bool newer = !failed || notes_find(gw, notes[i].agent_id);
        if (!newer && gw->nnotes < GW_MAX_NOTES && notes_reserve(gw) == 0)
            *notes_add(gw, notes[i].agent_id) = notes[i];
    }
    pthread_mutex_unlock(&gw->lock);
    free(notes);
}

void gw_flush_liveness(struct gateway *gw)
{
    pthread_mutex_lock(&gw->lock);
    struct note *notes = gw->notes;
    int n = gw->nnotes;
    if (n > 0) {
        gw->notes = NULL;
        gw->nnotes = gw->capnotes = 0;
        gw_idindex_clear(&gw->note_index);
    }
    pthread_mutex_unlock(&gw->lock);
    if (n == 0)
        return;
    struct buf agents = BUF_INIT;
    struct buf mems = BUF_INIT, disks = BUF_INIT, cpus = BUF_INIT;
    buf_append_str(&mems, "{");
    buf_append_str(&disks, "{");
    buf_append_str(&cpus, "{");
    buf_append_str(&agents, "{");
    for (int i = 0; i < n; i++) {
        const char *sep = i ? "," : "";
        buf_printf(&agents, "%s%s", sep, notes[i].agent_id);
        if (notes[i].memory_free >= 0)
            buf_printf(&mems, "%s%lld", sep, notes[i].memory_free);
        else
            buf_printf(&mems, "%sNULL", sep);
        if (notes[i].disk_free >= 0)
            buf_printf(&disks, "%s%lld", sep, notes[i].disk_free);
        else
            buf_printf(&disks, "%sNULL", sep);
        if (notes[i].cpu_percent >= 0)
            buf_printf(&cpus, "%s%.2f", sep, notes[i].cpu_percent);
        else
            buf_printf(&cpus, "%sNULL", sep);
    }
    buf_append_str(&agents, "}");
    buf_append_str(&mems, "}");
    buf_append_str(&disks, "}");
    buf_append_str(&cpus, "}");
    struct store_tx *tx = NULL;
    int r = store_tx_begin(gw->app->store, NULL, STORE_TX_ASYNC_COMMIT, &tx);
    char refresh[24];
    snprintf(refresh, sizeof(refresh), "%lld", (long long)gw_liveness_refresh_ms(gw->app->cfg));
    const char *p1[] = {agents.data, gw->app->cfg->node_name, mems.data, disks.data, cpus.data,
                        refresh};
    if (r >= 0)
        r = store_tx_exec(tx, &q_flush_agents, p1, NULL);
    if (r >= 0)
        r = store_tx_commit(tx);
    else
        store_tx_rollback(tx);
    if (r < 0)
        gw_log_store_failure("gateway.flush", r);
    requeue_notes(gw, notes, n, r < 0);
    buf_free(&agents);
    buf_free(&mems);
    buf_free(&disks);
    buf_free(&cpus);
}

void *gw_liveness_main(void *arg)
{
    struct gateway *gw = arg;
    struct app *app = gw->app;
    int64_t flush_ms = flush_interval_ms(app->cfg);
    while (!atomic_load(&gw->stop)) {
        /* One line per round (debug): tests count them against the clock. */
        log_debug("op=gateway round=flush");
        gw_flush_liveness(gw);
        gw_sleep_ms(gw, flush_ms);
    }
    gw_flush_liveness(gw);
    return NULL;
}
