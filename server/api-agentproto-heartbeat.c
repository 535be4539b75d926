/* api-agentproto-heartbeat.c: an agent's heartbeat (docs/agent-protocol.md §1), on its own
 * route or in a sync exchange (api-agentproto.c): its facts, load and cache written when
 * due, the leases of the jobs it lists renewed, and its answer (cancels, lost jobs). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/agent.h"
#include "server/agentproto-heartbeat.h"
#include "server/api.h"
#include "server/app.h"
#include "server/metrics-orch.h"
#include "server/gateway.h"
#include "server/report-batch.h"

/* --- heartbeat ------------------------------------------------------------------------------ */

/* The host's facts (sent after each start of the agent): what the API shows, and os, arch,
 * hostname and version, which requirements match against. */
static const struct store_stmt q_capabilities =
    STORE_STMT("ap_capabilities",
               "UPDATE agents SET capabilities = $2::jsonb,"
               " os = coalesce(left($2::jsonb ->> 'os', 32), os),"
               " arch = coalesce(left($2::jsonb ->> 'arch', 32), arch),"
               " hostname = coalesce(left($2::jsonb ->> 'hostname', 255), hostname),"
               " version = coalesce(left($2::jsonb ->> 'version', 64), version), updated_at = now()"
               " WHERE id = $1",
               2);

/* The agent's cache changed: the dispatcher prefers agents holding a job's package. */
static const struct store_stmt q_packages =
    STORE_STMT("ap_packages",
               "UPDATE agents SET cached_packages ="
               " ARRAY(SELECT jsonb_array_elements_text($2::jsonb)) WHERE id = $1",
               2);

static const struct store_stmt q_first_beat =
    STORE_STMT("ap_first_beat",
               "UPDATE agents SET last_heartbeat_at = now(), gateway_node = $2,"
               " status = CASE WHEN status = 'offline' THEN 'online' ELSE status END,"
               " slots = coalesce($3::int, slots) WHERE id = $1",
               3);

static const struct store_stmt q_my_jobs =
    STORE_STMT("ap_my_jobs",
               "SELECT id, epoch, cancel_requested FROM jobs"
               " WHERE agent_id = $1 AND status IN ('assigned', 'running')",
               1);

/* The lease of every job the heartbeat lists is renewed in the heartbeat's own transaction,
 * before the agent is answered: an answered heartbeat has always renewed the whole lease,
 * from a moment after the agent sent it, which is what the agent's self-fencing counts on
 * (docs/agent.md, "Leases and self-fencing"). Besides the assignment, its delivery and its
 * `started`, nothing else renews a lease (the gateway's batch writes liveness only). One
 * that the reaper took first is not ours any more, and the answer says `lost`. */
static const struct store_stmt q_renew_listed =
    STORE_STMT("ap_renew_listed",
               "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $4::int)"
               "  FROM unnest($2::uuid[], $3::bigint[]) AS r(job_id, epoch)"
               " WHERE j.id = r.job_id AND j.epoch = r.epoch AND j.agent_id = $1"
               "   AND j.status IN ('assigned', 'running')",
               4);

static int renew_listed(struct app *app, const struct http_principal *p, struct store_tx *tx,
                        const struct proto_heartbeat *hb)
{
    struct buf jobs = BUF_INIT, epochs = BUF_INIT;
    int r = 0;
    if (hb->nrunning > 0) {
        char lease[24];
        snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
        r = gateway_refs_arrays(hb->running, hb->nrunning, &jobs, &epochs);
        const char *pp[] = {p->subject, jobs.data, epochs.data, lease};
        if (r == 0)
            r = store_tx_exec(tx, &q_renew_listed, pp, NULL);
    }
    buf_free(&jobs);
    buf_free(&epochs);
    return r < 0 ? r : 0;
}

/* The host's free memory and disk and its CPU use, which placement matches requirements
 * against, from an agent's first heartbeat on this node (or every heartbeat on a node
 * without the gateway role): written when a figure moved enough to matter
 * (agent_bytes_moved(), agent_cpu_moved() in sql/functions/17_agent_load.sql). The
 * gateway's batched liveness write (server/gw-liveness.c) carries the later ones. */
static const struct store_stmt q_load =
    STORE_STMT("ap_load",
               "UPDATE agents SET memory_free_bytes = coalesce($2::bigint, memory_free_bytes),"
               "       disk_free_bytes = coalesce($3::bigint, disk_free_bytes),"
               "       cpu_percent = coalesce($4::real, cpu_percent)"
               " WHERE id = $1 AND (agent_bytes_moved(memory_free_bytes, $2::bigint)"
               "   OR agent_bytes_moved(disk_free_bytes, $3::bigint)"
               "   OR agent_cpu_moved(cpu_percent, $4::real))",
               4);

static int store_load(const struct http_principal *p, struct store_tx *tx,
                      const struct proto_heartbeat *hb)
{
    char mem[24] = "", disk[24] = "", cpu[32] = "";
    if (!hb->has_load)
        return 0;
    if (hb->load.memory_available_bytes >= 0)
        snprintf(mem, sizeof(mem), "%lld", (long long)hb->load.memory_available_bytes);
    if (hb->load.disk_free_bytes >= 0)
        snprintf(disk, sizeof(disk), "%lld", (long long)hb->load.disk_free_bytes);
    if (hb->load.cpu_percent >= 0)
        snprintf(cpu, sizeof(cpu), "%.1f", hb->load.cpu_percent);
    if (!mem[0] && !disk[0] && !cpu[0])
        return 0;
    const char *pp[] = {p->subject, mem[0] ? mem : NULL, disk[0] ? disk : NULL,
                        cpu[0] ? cpu : NULL};
    int r = store_tx_exec(tx, &q_load, pp, NULL);
    return r < 0 ? r : 0;
}

/* Deployments (docs/packages.md, "Deploying a version to agents"): the agent's reports
 * end its targets, and the targets it is to fetch now come back (bounded by each
 * deployment's max_parallel; one already cached is done at once). A target whose agent
 * stays silent for a lease goes back to pending. */
static const struct store_stmt q_deploy_step =
    STORE_STMT("ap_deploy_step",
               "SELECT deployment_id, package_id, sha256, size_bytes, spread_ms"
               "  FROM deployment_agent_step($1, $2::jsonb, $3::int)",
               3);

static int deploy_step(struct app *app, const struct http_principal *p, struct store_tx *tx,
                       const struct proto_heartbeat *hb, json_t **ret)
{
    _cleanup_free_ char *reports = hb->prefetch ? json_dumps(hb->prefetch, JSON_COMPACT) : NULL;
    if (hb->prefetch && !reports)
        return -ENOMEM;
    char stale[24];
    snprintf(stale, sizeof(stale), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    const char *pp[] = {p->subject, reports, stale};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_deploy_step, pp, &res);
    if (r <= 0) {
        PQclear(res);
        return r;
    }
    json_t *list = json_array();
    for (int i = 0; list && i < r; i++)
        json_array_append_new(
            list, json_pack("{s:s, s:s, s:s, s:I, s:I}", "deployment_id", PQgetvalue(res, i, 0),
                            "package_id", PQgetvalue(res, i, 1), "sha256", PQgetvalue(res, i, 2),
                            "size", (json_int_t)strtoll(PQgetvalue(res, i, 3), NULL, 10),
                            "spread_ms", (json_int_t)strtoll(PQgetvalue(res, i, 4), NULL, 10)));
    PQclear(res);
    *ret = list;
    return list ? 0 : -ENOMEM;
}

/* Whether (job, epoch) is among the rows of q_my_jobs. */
static bool is_mine(PGresult *res, int n, const struct proto_job_ref *ref)
{
    for (int i = 0; i < n; i++)
        if (strcmp(PQgetvalue(res, i, 0), ref->job_id) == 0 &&
            strtoll(PQgetvalue(res, i, 1), NULL, 10) == ref->epoch)
            return true;
    return false;
}

/* agentproto-heartbeat.h */
bool heartbeat_note(struct app *app, const struct http_principal *p,
                    const struct proto_heartbeat *hb)
{
    metrics_orch_heartbeat(app->metrics);
    return !app->gw || gateway_note_heartbeat(app->gw, p->subject, hb->has_load ? &hb->load : NULL);
}

/* After the heartbeat's commit: the dispatcher learns of a new agent, or of its cache,
 * within its kick window, not only at its next full refresh. */
void heartbeat_committed(struct app *app, bool first, const struct proto_heartbeat *hb)
{
    if (first || hb->packages)
        gateway_kick_dispatch(app->gw);
}

/* agentproto-heartbeat.h */
int heartbeat(struct app *app, const struct http_principal *p, struct store_tx *tx, bool first,
              const struct proto_heartbeat *hb, json_t **ret)
{
    int r = 0;
    if (first) {
        /* First heartbeat on this node: write it now so the dispatcher sees the agent. */
        char slots[24] = "";
        if (hb->slots > 0)
            snprintf(slots, sizeof(slots), "%lld", (long long)hb->slots);
        const char *pp[] = {p->subject, app->cfg->node_name, slots[0] ? slots : NULL};
        r = store_tx_exec(tx, &q_first_beat, pp, NULL);
        /* Its host figures too, at once; later ones ride the gateway's batched write. */
        if (r >= 0)
            r = store_load(p, tx, hb);
    }
    if (r >= 0)
        r = renew_listed(app, p, tx, hb);
    if (r >= 0 && hb->capabilities) {
        _cleanup_free_ char *text = json_dumps(hb->capabilities, JSON_COMPACT);
        const char *pp[] = {p->subject, text};
        r = text ? store_tx_exec(tx, &q_capabilities, pp, NULL) : -ENOMEM;
    }
    if (r >= 0 && hb->packages) {
        _cleanup_free_ char *text = json_dumps(hb->packages, JSON_COMPACT);
        const char *pp[] = {p->subject, text};
        r = text ? store_tx_exec(tx, &q_packages, pp, NULL) : -ENOMEM;
    }
    _cleanup_json_ json_t *prefetch = NULL;
    if (r >= 0 && !p->pool)
        r = deploy_step(app, p, tx, hb, &prefetch);
    PGresult *res = NULL;
    const char *pj[] = {p->subject};
    if (r >= 0)
        r = store_tx_exec(tx, &q_my_jobs, pj, &res);
    if (r < 0)
        return r;
    /* cancel: ours and cancelled through the API. lost: reported running, but not (or no
     * longer at that epoch) ours. */
    struct proto_heartbeat_answer a = {.credential_expires_in_s = -1};
    _cleanup_free_ struct proto_job_ref *cancel = calloc((size_t)r + 1, sizeof(*cancel));
    _cleanup_free_ struct proto_job_ref *lost = calloc(hb->nrunning + 1, sizeof(*lost));
    if (!cancel || !lost) {
        PQclear(res);
        return -ENOMEM;
    }
    for (int i = 0; i < r; i++) {
        if (strcmp(PQgetvalue(res, i, 2), "t") != 0)
            continue;
        struct proto_job_ref *c = &cancel[a.ncancel++];
        snprintf(c->job_id, sizeof(c->job_id), "%s", PQgetvalue(res, i, 0));
        c->epoch = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    for (size_t k = 0; k < hb->nrunning; k++)
        if (!is_mine(res, r, &hb->running[k]))
            lost[a.nlost++] = hb->running[k];
    PQclear(res);
    char now[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(clock_real_ms(), now, sizeof(now));
    a.server_time = now;
    a.heartbeat_interval_s = app->cfg->agent_heartbeat_ms / 1000;
    a.lease_s = app->cfg->agent_lease_ms / 1000;
    a.cancel = cancel;
    a.lost = lost;
    a.prefetch = prefetch;
    /* When the credential expires, so that the agent rotates it in time. */
    if (p->token_exp > 0) {
        int64_t left = p->token_exp - clock_real_ms() / 1000;
        a.credential_expires_in_s = left > 0 ? left : 0;
    }
    *ret = proto_heartbeat_answer_encode(&a);
    return *ret ? 0 : -ENOMEM;
}

/* Decode a checked body; false after answering 422. */
static bool heartbeat_decode(struct http_req *req, const json_t *doc, struct proto_heartbeat *hb)
{
    struct jsonv_error e;
    int r = proto_heartbeat_decode(doc, hb, &e);
    if (r == -EINVAL)
        http_reply_problem(req, PROBLEM_VALIDATION, e.detail, e.field);
    else if (r < 0)
        http_reply_error(req, r, "reading the heartbeat");
    return r >= 0;
}

/* A heartbeat on its own route, committed by the agents' group commit (report-batch.h). */
struct hb_work {
    struct app *app;
    struct http_principal p;
    json_t *body; /* owned: hb borrows from it */
    struct proto_heartbeat hb;
    bool first;     /* heartbeat_note()'s */
    json_t *answer; /* run's (owned) */
};

static void hb_work_free(struct hb_work *w)
{
    json_decref(w->answer);
    proto_heartbeat_clear(&w->hb);
    json_decref(w->body);
    free(w);
}

static int hb_run(struct store_tx *tx, void *arg)
{
    struct hb_work *w = arg;
    json_decref(w->answer);
    w->answer = NULL;
    return heartbeat(w->app, &w->p, tx, w->first, &w->hb, &w->answer);
}

static void hb_done(struct http_req *req, int r, void *arg)
{
    struct hb_work *w = arg;
    if (r < 0) {
        http_reply_error(req, r, "recording the heartbeat");
    } else {
        heartbeat_committed(w->app, w->first, &w->hb);
        http_reply_json(req, 200, TAKE_PTR(w->answer));
    }
    hb_work_free(w);
}

static const struct report_batch_ops hb_ops = {.run = hb_run, .done = hb_done};

void api_agent_heartbeat(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, proto_msg_heartbeat.fields, proto_msg_heartbeat.n, &body) < 0)
        return;
    struct hb_work *w = calloc(1, sizeof(*w));
    if (!w) {
        http_reply_error(req, -ENOMEM, "recording the heartbeat");
        return;
    }
    if (!heartbeat_decode(req, body, &w->hb)) {
        free(w);
        return;
    }
    w->app = http_req_app(req);
    w->p = *http_req_principal(req);
    w->body = TAKE_PTR(body);
    w->first = heartbeat_note(w->app, &w->p, &w->hb);
    report_batch_submit(w->app->reports, w->app->store, req, app_agent_scope(&w->p), w->p.subject,
                        &hb_ops, w);
}
