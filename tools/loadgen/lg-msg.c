/* lg-msg.c: the agent protocol's messages as the load generator sends and reads them,
 * through proto/agent.h's codec (the one definition orchd and orch-agent use), so that the
 * simulated agents speak exactly what a real one does. Only the registration body has no
 * encoder there (orch-agent builds it from its host's facts). */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/agent.h"

const char lg_msg_sync_path[] = PROTO_AGENT_PATH_SYNC;
const char lg_msg_register_path[] = PROTO_AGENT_PATH_REGISTER;
#define STR_(x) #x
#define STR(x)  STR_(x)
const char lg_msg_version_header[] = PROTO_AGENT_VERSION_HEADER ": " STR(PROTO_AGENT_VERSION);

/* The host's facts a simulated agent claims. */
static json_t *capabilities(const char *hostname)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "os", "linux", "arch", "x86_64", "hostname", hostname,
                     "version", "orch-loadgen");
}

static char *dump(json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

char *lg_msg_register(const char *token, const char *name, int slots)
{
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:i}", "token", token, "name", name,
                          "hostname", name, "os", "linux", "arch", "x86_64", "version",
                          "orch-loadgen", "capabilities", capabilities(name), "slots", slots));
}

static json_t *report(const struct lg_msg_report *r)
{
    switch (r->kind) {
    case LG_REPORT_STARTED:
        return proto_started_encode(r->job.id, r->job.epoch);
    case LG_REPORT_LOGS:
        return proto_logs_encode(r->job.id, r->job.epoch, PROTO_STREAM_STDOUT, r->offset, r->data,
                                 r->len);
    case LG_REPORT_RESULT: {
        struct proto_result res = {.exit_code = r->exit_code, .cancelled = r->cancelled};
        return proto_result_encode(r->job.id, r->job.epoch, &res);
    }
    }
    return NULL;
}

char *lg_msg_sync(const struct lg_msg_sync *m)
{
    json_t *hb = NULL, *reports = NULL;
    /* The jobs it runs: in a heartbeat, and as what it holds (not to be handed out again). */
    _cleanup_free_ struct proto_job_ref *running =
        calloc((size_t)(m->nrunning > 0 ? m->nrunning : 1), sizeof(*running));
    if (!running)
        return NULL;
    for (int i = 0; i < m->nrunning; i++) {
        memcpy(running[i].job_id, m->running[i].id, sizeof(running[i].job_id));
        running[i].epoch = m->running[i].epoch;
    }
    if (m->heartbeat) {
        json_t *caps = m->hostname ? capabilities(m->hostname) : NULL;
        struct proto_heartbeat h = {.status = m->status,
                                    .slots = m->slots,
                                    .free_slots = m->free_slots,
                                    .running = running,
                                    .nrunning = (size_t)m->nrunning,
                                    .spool_bytes = 0,
                                    .capabilities = caps};
        hb = proto_heartbeat_encode(&h);
        json_decref(caps);
        if (!hb)
            return NULL;
    }
    if (m->nreports > 0) {
        reports = json_array();
        for (int i = 0; reports && i < m->nreports; i++) {
            if (json_array_append_new(reports, report(&m->reports[i])) < 0) {
                json_decref(reports);
                reports = NULL;
            }
        }
        if (!reports) {
            json_decref(hb);
            return NULL;
        }
    }
    /* resume: an assignment answered into a connection we closed comes again. */
    return dump(
        proto_sync_encode(hb, reports, m->assign, m->wait_s, true, running, (size_t)m->nrunning));
}

int lg_msg_answer_parse(const json_t *body, struct lg_msg_answer *a)
{
    memset(a, 0, sizeof(*a));
    struct proto_sync_answer ans;
    struct jsonv_error err;
    int r = proto_sync_answer_decode(body, &ans, &err);
    if (r < 0) {
        if (r == -EINVAL)
            fprintf(stderr, "orch-loadgen: a sync answer is malformed: %s: %s\n", err.field,
                    err.detail);
        return r;
    }
    if (ans.heartbeat) {
        struct proto_heartbeat_answer hba;
        if (proto_heartbeat_answer_decode(ans.heartbeat, &hba, NULL) == 0) {
            a->heartbeat_interval_s = (int)hba.heartbeat_interval_s;
            proto_heartbeat_answer_clear(&hba);
        }
    }
    size_t nrep = json_array_size(ans.reports), nas = json_array_size(ans.assignments);
    a->report_codes = calloc(nrep + 1, sizeof(int));
    a->assignments = calloc(nas + 1, sizeof(*a->assignments));
    a->cancel = calloc(ans.ncancel + 1, sizeof(*a->cancel));
    if (!a->report_codes || !a->assignments || !a->cancel) {
        proto_sync_answer_clear(&ans);
        lg_msg_answer_free(a);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nrep; i++) {
        struct proto_report_answer ra;
        proto_report_answer_decode(json_array_get(ans.reports, i), &ra);
        a->report_codes[a->nreport_codes++] = ra.code;
    }
    for (size_t i = 0; i < nas; i++) {
        struct proto_assignment pa;
        /* One an agent would refuse is still taken: it names its job and epoch. */
        if (proto_assignment_decode(json_array_get(ans.assignments, i), &pa, NULL) < 0 &&
            !pa.job_id[0])
            continue;
        memcpy(a->assignments[a->nassignments].id, pa.job_id, LG_JOB_ID_LEN);
        a->assignments[a->nassignments++].epoch = pa.epoch;
    }
    for (size_t i = 0; i < ans.ncancel; i++) {
        memcpy(a->cancel[a->ncancel].id, ans.cancel[i].job_id, LG_JOB_ID_LEN);
        a->cancel[a->ncancel++].epoch = ans.cancel[i].epoch;
    }
    proto_sync_answer_clear(&ans);
    return 0;
}

void lg_msg_answer_free(struct lg_msg_answer *a)
{
    free(a->report_codes);
    free(a->assignments);
    free(a->cancel);
    memset(a, 0, sizeof(*a));
}
