/* lg-msg.c: the agent protocol's messages as the load generator sends and reads them
 * (docs/agent-protocol.md). Kept in this one file so that it moves to proto/'s codec in
 * one change once that exists. */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char lg_msg_sync_path[] = "/api/v1/agent/sync";
const char lg_msg_register_path[] = "/api/v1/agents/register";

static const char *const report_kinds[] = {
    [LG_REPORT_STARTED] = "started",
    [LG_REPORT_LOGS] = "logs",
    [LG_REPORT_RESULT] = "result",
};

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

static json_t *job_ref(const struct lg_job_ref *j)
{
    return json_pack("{s:s, s:I}", "job_id", j->id, "epoch", (json_int_t)j->epoch);
}

static json_t *report(const struct lg_msg_report *r)
{
    json_t *o = job_ref(&r->job);
    if (!o)
        return NULL;
    json_object_set_new(o, "kind", json_string(report_kinds[r->kind]));
    if (r->kind == LG_REPORT_LOGS) {
        json_object_set_new(o, "stream", json_string("stdout"));
        json_object_set_new(o, "offset", json_integer(r->offset));
        json_object_set_new(o, "data", json_string(r->data_b64));
    } else if (r->kind == LG_REPORT_RESULT) {
        json_object_set_new(o, "exit_code", json_integer(r->exit_code));
        json_object_set_new(o, "signal", json_integer(0));
        json_object_set_new(o, "timed_out", json_false());
        json_object_set_new(o, "cancelled", json_boolean(r->cancelled));
    }
    return o;
}

char *lg_msg_sync(const struct lg_msg_sync *m)
{
    json_t *doc =
        json_pack("{s:b, s:i, s:b}", "assign", m->assign, "wait", m->wait_s, "resume", true);
    if (!doc)
        return NULL;
    if (m->heartbeat) {
        json_t *running = json_array();
        for (int i = 0; i < m->nrunning; i++)
            json_array_append_new(running, job_ref(&m->running[i]));
        json_t *hb = json_pack("{s:s, s:i, s:i, s:o, s:i}", "status", m->status, "slots", m->slots,
                               "free_slots", m->free_slots, "running", running, "spool_bytes", 0);
        if (hb && m->hostname)
            json_object_set_new(hb, "capabilities", capabilities(m->hostname));
        json_object_set_new(doc, "heartbeat", hb);
    }
    if (m->nreports > 0) {
        json_t *reports = json_array();
        for (int i = 0; i < m->nreports; i++)
            json_array_append_new(reports, report(&m->reports[i]));
        json_object_set_new(doc, "reports", reports);
    }
    return dump(doc);
}

/* A list of {job_id, epoch} into a malloc'd array; entries without both are skipped. */
static int refs(const json_t *list, struct lg_job_ref **ret, int *n)
{
    *ret = NULL;
    *n = 0;
    size_t len = json_array_size(list);
    if (len == 0)
        return 0;
    *ret = calloc(len, sizeof(**ret));
    if (!*ret)
        return -ENOMEM;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *id = json_string_value(json_object_get(v, "job_id"));
        json_t *ep = json_object_get(v, "epoch");
        if (!id || strlen(id) != LG_JOB_ID_LEN - 1 || !json_is_integer(ep))
            continue;
        memcpy((*ret)[*n].id, id, LG_JOB_ID_LEN);
        (*ret)[*n].epoch = json_integer_value(ep);
        (*n)++;
    }
    return 0;
}

int lg_msg_answer_parse(const json_t *body, struct lg_msg_answer *a)
{
    memset(a, 0, sizeof(*a));
    if (!json_is_object(body))
        return -EPROTO;
    json_t *hb = json_object_get(body, "heartbeat");
    if (hb)
        a->heartbeat_interval_s =
            (int)json_integer_value(json_object_get(hb, "heartbeat_interval_s"));
    json_t *reps = json_object_get(body, "reports");
    size_t nrep = json_array_size(reps);
    if (nrep > 0) {
        a->report_codes = calloc(nrep, sizeof(int));
        if (!a->report_codes)
            return -ENOMEM;
        size_t i;
        json_t *v;
        json_array_foreach(reps, i, v)
        {
            a->report_codes[i] = (int)json_integer_value(json_object_get(v, "code"));
        }
        a->nreport_codes = (int)nrep;
    }
    int r = refs(json_object_get(body, "assignments"), &a->assignments, &a->nassignments);
    if (r >= 0)
        r = refs(json_object_get(body, "cancel"), &a->cancel, &a->ncancel);
    if (r < 0)
        lg_msg_answer_free(a);
    return r;
}

void lg_msg_answer_free(struct lg_msg_answer *a)
{
    free(a->report_codes);
    free(a->assignments);
    free(a->cancel);
    memset(a, 0, sizeof(*a));
}
