/* api-agentproto.c: the agent protocol's reports (docs/agent-protocol.md): a job started,
 * its output, its result, one at a time or batched in a sync exchange with a heartbeat
 * (api-agentproto-heartbeat.c); a group commit's starts and results in one statement each.
 * Every report names the epoch of the assignment it is about; any other epoch is refused
 * (409 stale-epoch), which is how a job never counts two agents' work. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* The outcome of one report: 200 with an answer, or a problem. */
struct outcome {
    json_t *answer;         /* 200: the answer (owned) */
    enum problem_kind kind; /* otherwise */
    char detail[256];
    char field[160]; /* "" = none */
    json_t *ext;     /* extra problem members (owned) or NULL */
    bool ended;      /* a result ended the attempt: a slot is free */
    /* For the metrics, recorded once the transaction has committed (record_metrics()):
     * the job's final status when this report finished it (not a repeat; "" = none) and
     * its run time, its tenant and queue name ("" = none), and the wait from assignment to
     * a first start report (< 0 = none). */
    char finished[16];
    char tenant_id[ID_STR_LEN];
    char queue[API_QUEUE_NAME_MAX + 1];
    double run_s;
    double start_wait_s;
};

#define OUTCOME_INIT                                                                               \
    {                                                                                              \
        .run_s = -1, .start_wait_s = -1                                                            \
    }

/* What o says for the metrics, as JSON for a batch's outcomes (NULL = nothing). */
static json_t *outcome_metrics(const struct outcome *o)
{
    if (!o->finished[0] && o->start_wait_s < 0)
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:f, s:f}", "finished", o->finished, "tenant_id",
                     o->tenant_id, "queue", o->queue, "run_s", o->run_s, "start_wait_s",
                     o->start_wait_s);
}

static void record_metrics(struct app *app, const char *finished, const char *tenant_id,
                           const char *queue, double run_s, double start_wait_s)
{
    if (finished && finished[0])
        metrics_orch_finished(app->metrics, tenant_id ? tenant_id : "", queue, finished, run_s);
    if (start_wait_s >= 0)
        metrics_orch_started(app->metrics, start_wait_s);
}

static void outcome_problem(struct outcome *o, enum problem_kind kind, const char *detail,
                            const char *field)
{
    o->kind = kind;
    snprintf(o->detail, sizeof(o->detail), "%s", detail);
    snprintf(o->field, sizeof(o->field), "%s", field ? field : "");
}

static void outcome_stale(struct outcome *o)
{
    outcome_problem(o, PROBLEM_CONFLICT,
                    "this attempt is no longer the job's current one for this agent: "
                    "stop it and drop its reports",
                    "epoch");
    o->ext = json_pack("{s:s}", "reason", "stale-epoch");
}

/* A report's function: the job id and the decoded report; < 0 is a store error that
 * failed tx, else *o says what to answer. */
typedef int (*report_fn)(struct app *app, const struct http_principal *p, struct store_tx *tx,
                         const char *job_id, const struct proto_report *rep, struct outcome *o);

/* --- reports -------------------------------------------------------------------------------- */

/* Starts, set-based: every `started` report of a group commit's transaction in one
 * statement (sync_pre()), a report on its own route as a set of one. $1, $2, $3: the jobs,
 * epochs and reporting agents (in job id order: the order the rows are locked in); $4: the
 * lease in seconds. One row per report, by its position n (from 1): the attempt is this
 * agent's and was marked running; the job has an attempt of this agent's (else: no such
 * job); this report is the attempt's first start, and the wait from its assignment. The
 * CTE s reads the statement's snapshot: the attempt as it was, not yet started on a first
 * report. */
static const struct store_stmt q_started = STORE_STMT(
    "ap_started",
    "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[])"
    "             WITH ORDINALITY AS r(id, epoch, agent, n)),"
    " u AS (UPDATE jobs j SET status = 'running', started_at = coalesce(j.started_at, now()),"
    "             delivered_at = coalesce(j.delivered_at, now()),"
    "             lease_expires_at = now() + make_interval(secs => $4::int), updated_at = now()"
    "           FROM r WHERE j.id = r.id AND j.epoch = r.epoch AND j.agent_id = r.agent"
    "             AND j.status IN ('assigned', 'running')"
    "        RETURNING j.id, j.epoch, j.agent_id),"
    " a AS (UPDATE job_attempts x SET status = 'running',"
    "             started_at = coalesce(x.started_at, now())"
    "           FROM u WHERE x.job_id = u.id AND x.epoch = u.epoch RETURNING x.job_id),"
    " s AS (SELECT x.job_id, x.epoch, x.assigned_at FROM job_attempts x"
    "        WHERE (x.job_id, x.epoch) IN (SELECT id, epoch FROM r) AND x.started_at IS NULL)"
    " SELECT r.n,"
    "        EXISTS (SELECT 1 FROM u WHERE u.id = r.id AND u.epoch = r.epoch"
    "                  AND u.agent_id = r.agent),"
    "        EXISTS (SELECT 1 FROM job_attempts h WHERE h.job_id = r.id AND h.agent_id = r.agent),"
    "        (SELECT extract(epoch FROM clock_timestamp() - s.assigned_at) FROM s"
    "          WHERE s.job_id = r.id AND s.epoch = r.epoch"
    "            AND EXISTS (SELECT 1 FROM a WHERE a.job_id = r.id)"
    "            AND EXISTS (SELECT 1 FROM u WHERE u.id = r.id AND u.epoch = r.epoch"
    "                          AND u.agent_id = r.agent))"
    "   FROM r ORDER BY r.n",
    4);

/* One `started` report: the job, its epoch, the reporting agent; its outcome once run. */
struct start {
    struct proto_job_ref ref;
    const char *agent;
    bool ours;     /* the attempt is this agent's: marked running */
    bool exists;   /* the job has an attempt of this agent's */
    bool repeat;   /* the same as the one before it in the statement */
    double wait_s; /* this report is the attempt's first start: the wait since its
                    * assignment; else < 0 */
};

/* The order of a set's reports: by job, epoch and agent (a repeat is next to its first). */
static int report_cmp(const struct proto_job_ref *a, const char *agent_a,
                      const struct proto_job_ref *b, const char *agent_b)
{
    int c = strcmp(a->job_id, b->job_id);
    if (c == 0)
        c = a->epoch < b->epoch ? -1 : a->epoch > b->epoch;
    return c ? c : strcmp(agent_a, agent_b);
}

static int start_cmp(const void *a, const void *b)
{
    const struct start *x = *(struct start *const *)a, *y = *(struct start *const *)b;
    return report_cmp(&x->ref, x->agent, &y->ref, y->agent);
}

/* Run q_started for the n starts st[] (n >= 1) and fill in their outcomes. A start that
 * repeats another of the same agent's in the set is not a first start. Returns 0 or a
 * store error (-ENOMEM). */
static int starts_run(struct app *app, struct store_tx *tx, struct start **st, size_t n)
{
    qsort(st, n, sizeof(*st), start_cmp);
    for (size_t i = 0; i < n; i++)
        st[i]->repeat = i > 0 && start_cmp(&st[i - 1], &st[i]) == 0;
    struct buf jobs = BUF_INIT, epochs = BUF_INIT, agents = BUF_INIT;
    int e =
        buf_append_str(&jobs, "{") | buf_append_str(&epochs, "{") | buf_append_str(&agents, "{");
    for (size_t i = 0; i < n; i++) {
        e |= buf_printf(&jobs, "%s%s", i ? "," : "", st[i]->ref.job_id);
        e |= buf_printf(&epochs, "%s%lld", i ? "," : "", (long long)st[i]->ref.epoch);
        e |= buf_printf(&agents, "%s%s", i ? "," : "", st[i]->agent);
    }
    e |= buf_append_str(&jobs, "}") | buf_append_str(&epochs, "}") | buf_append_str(&agents, "}");
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    const char *pp[] = {jobs.data, epochs.data, agents.data, lease};
    PGresult *res = NULL;
    int r = e ? -ENOMEM : store_tx_exec(tx, &q_started, pp, &res);
    buf_free(&jobs);
    buf_free(&epochs);
    buf_free(&agents);
    if (r < 0)
        return r;
    for (int i = 0; i < r && (size_t)i < n; i++) {
        long k = strtol(PQgetvalue(res, i, 0), NULL, 10) - 1;
        if (k < 0 || (size_t)k >= n)
            continue;
        struct start *x = st[k];
        x->ours = strcmp(PQgetvalue(res, i, 1), "t") == 0;
        x->exists = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        x->wait_s = PQgetisnull(res, i, 3) || x->repeat ? -1 : strtod(PQgetvalue(res, i, 3), NULL);
    }
    PQclear(res);
    return 0;
}

/* What a start report answers, from its outcome. */
static void start_outcome(const struct start *st, struct outcome *o)
{
    if (st->wait_s >= 0) { /* the first report of this start */
        o->start_wait_s = st->wait_s;
        log_info("op=job.started job=%s epoch=%lld agent=%s", st->ref.job_id,
                 (long long)st->ref.epoch, st->agent);
    }
    if (!st->exists)
        outcome_problem(o, PROBLEM_NOT_FOUND, "no such job", NULL);
    else if (!st->ours)
        outcome_stale(o);
    else
        o->answer = json_pack("{s:s}", "status", "running");
}

/* One chunk through job_log_append() (sql/0009_job_logs.sql): contiguous, idempotent for an
 * identical retransmission, within the job's log limit. */
static const struct store_stmt q_log_chunk =
    STORE_STMT("ap_log_chunk",
               "SELECT code, next_offset, first_offset"
               "  FROM job_log_append($1, $2, $6, $3, $4, decode($5, 'base64'))",
               6);

/* Results, set-based like the starts: every result of a group commit's transaction in one
 * statement (sync_pre()), a report on its own route as a set of one. $1: a JSON array of
 * {n, id, epoch, agent, outcome, code, err, res}, n = 1, 2, ... in that order (job id
 * order). job_end_attempts() ends each attempt that is this agent's at that epoch; one row
 * per report, by n: the job's status after this result when this report ended the attempt
 * (else NULL); whether the attempt had ended before this statement (a repeat of a result
 * already recorded, answered like the first); the job's status when the job has an attempt
 * of this agent's (else NULL: no such job); the run time; the tenant and queue of an ended
 * job. The statement's own snapshot still sees everything as it was before it. */
static const struct store_stmt q_result = STORE_STMT(
    "ap_result",
    "WITH r AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(n bigint, id uuid,"
    "             epoch bigint, agent uuid, outcome text, code int, err text, res jsonb)),"
    " e AS MATERIALIZED (SELECT * FROM job_end_attempts(ARRAY(SELECT id FROM r ORDER BY n),"
    "       ARRAY(SELECT epoch FROM r ORDER BY n), ARRAY(SELECT agent FROM r ORDER BY n),"
    "       ARRAY(SELECT outcome FROM r ORDER BY n), ARRAY(SELECT code FROM r ORDER BY n),"
    "       ARRAY(SELECT err FROM r ORDER BY n), ARRAY(SELECT res FROM r ORDER BY n)))"
    " SELECT r.n, e.status,"
    "       EXISTS (SELECT 1 FROM job_attempts x WHERE x.job_id = r.id AND x.epoch = r.epoch"
    "                 AND x.agent_id = r.agent AND x.finished_at IS NOT NULL"
    "                 AND x.status <> 'lost'),"
    "       coalesce(e.status, (SELECT j.status FROM jobs j WHERE j.id = r.id AND EXISTS ("
    "           SELECT 1 FROM job_attempts h WHERE h.job_id = r.id AND h.agent_id = r.agent))),"
    "       (SELECT extract(epoch FROM clock_timestamp() - x.started_at) FROM job_attempts x"
    "         WHERE x.job_id = r.id AND x.epoch = r.epoch AND x.agent_id = r.agent),"
    "       jq.tenant_id, jq.queue"
    "  FROM r LEFT JOIN e ON e.n = r.n LEFT JOIN LATERAL (SELECT j.tenant_id, q.name AS queue"
    "       FROM jobs j LEFT JOIN queues q ON q.id = j.queue_id"
    "      WHERE j.id = r.id AND e.status IS NOT NULL) jq ON true"
    " ORDER BY r.n",
    1);

/* One result report: the job, its epoch, the reporting agent and the result (borrowed from
 * the decoded report); its outcome once run. */
struct end {
    struct proto_job_ref ref;
    const char *agent;
    struct proto_result res;
    bool repeat_in_set; /* the same job, epoch and agent as the one before it */
    bool known;         /* the job has an attempt of this agent's */
    bool ended;         /* this report ended the attempt */
    bool repeat;        /* the attempt had ended before: a repeat of its result */
    char status[16];    /* the job's, after this report */
    double run_s;
    char tenant_id[ID_STR_LEN];
    char queue[API_QUEUE_NAME_MAX + 1];
};

static int end_cmp(const void *a, const void *b)
{
    const struct end *x = *(struct end *const *)a, *y = *(struct end *const *)b;
    return report_cmp(&x->ref, x->agent, &y->ref, y->agent);
}

/* The error a result records: the agent's, else what its flags say. */
static void end_error(const struct proto_result *r, char *err, size_t len)
{
    err[0] = '\0';
    if (r->error)
        snprintf(err, len, "%s", r->error);
    else if (r->timed_out)
        snprintf(err, len, "the job ran past its timeout and was killed");
    else if (r->signal)
        snprintf(err, len, "the job was killed by signal %lld", (long long)r->signal);
}

/* Run q_result for the n results en[] (n >= 1) and fill in their outcomes. A result that
 * repeats the one before it in the set is answered like it, without ending anything again.
 * Returns 0 or a store error (-ENOMEM). */
static int ends_run(struct store_tx *tx, struct end **en, size_t n)
{
    qsort(en, n, sizeof(*en), end_cmp);
    _cleanup_json_ json_t *rows = json_array();
    int e = rows ? 0 : -ENOMEM;
    for (size_t i = 0; i < n && e == 0; i++) {
        struct end *x = en[i];
        x->repeat_in_set = i > 0 && end_cmp(&en[i - 1], &en[i]) == 0;
        char err[4200];
        end_error(&x->res, err, sizeof(err));
        json_t *row =
            json_pack("{s:I, s:s, s:I, s:s, s:s, s:o, s:o, s:O?}", "n", (json_int_t)(i + 1), "id",
                      x->ref.job_id, "epoch", (json_int_t)x->ref.epoch, "agent", x->agent,
                      "outcome", proto_result_outcome(&x->res), "code",
                      x->res.exit_code_null ? json_null() : json_integer(x->res.exit_code), "err",
                      err[0] ? json_string(err) : json_null(), "res", x->res.result);
        e = row ? json_array_append_new(rows, row) : -1;
    }
    _cleanup_free_ char *text = e == 0 ? json_dumps(rows, JSON_COMPACT) : NULL;
    if (!text)
        return -ENOMEM;
    const char *pp[] = {text};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_result, pp, &res);
    if (r < 0)
        return r;
    for (int i = 0; i < r; i++) {
        long k = strtol(PQgetvalue(res, i, 0), NULL, 10) - 1;
        if (k < 0 || (size_t)k >= n)
            continue;
        struct end *x = en[k];
        x->known = !PQgetisnull(res, i, 3);
        x->ended = !PQgetisnull(res, i, 1);
        x->repeat = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        snprintf(x->status, sizeof(x->status), "%s", PQgetvalue(res, i, 3));
        x->run_s = PQgetisnull(res, i, 4) ? -1 : strtod(PQgetvalue(res, i, 4), NULL);
        snprintf(x->tenant_id, sizeof(x->tenant_id), "%s", PQgetvalue(res, i, 5));
        snprintf(x->queue, sizeof(x->queue), "%s", PQgetvalue(res, i, 6));
    }
    PQclear(res);
    for (size_t i = 1; i < n; i++) {
        struct end *x = en[i], *prev = en[i - 1];
        if (!x->repeat_in_set)
            continue;
        x->known = prev->known;
        x->repeat = prev->ended || prev->repeat;
        x->ended = false;
        snprintf(x->status, sizeof(x->status), "%s", prev->status);
    }
    return 0;
}

/* What a result report answers, from its outcome. */
static void end_outcome(const struct end *x, struct outcome *o)
{
    if (!x->known) {
        outcome_problem(o, PROBLEM_NOT_FOUND, "no such job", NULL);
        return;
    }
    snprintf(o->tenant_id, sizeof(o->tenant_id), "%s", x->tenant_id);
    snprintf(o->queue, sizeof(o->queue), "%s", x->queue);
    if (!x->ended && !x->repeat) {
        outcome_stale(o);
        return;
    }
    log_info("op=job.result job=%s epoch=%lld agent=%s outcome=%s status=%s", x->ref.job_id,
             (long long)x->ref.epoch, x->agent, proto_result_outcome(&x->res), x->status);
    if (x->ended && !x->repeat) {
        snprintf(o->finished, sizeof(o->finished), "%s", x->status);
        o->run_s = x->run_s;
    }
    o->ended = x->ended;
    o->answer = json_pack("{s:s}", "status", x->status);
}

static void epoch_text(const struct proto_report *rep, char *epoch, size_t len)
{
    snprintf(epoch, len, "%lld", (long long)rep->epoch);
}

static int report_started(struct app *app, const struct http_principal *p, struct store_tx *tx,
                          const char *id, const struct proto_report *rep, struct outcome *o)
{
    struct start one = {.agent = p->subject, .wait_s = -1}, *st = &one;
    snprintf(one.ref.job_id, sizeof(one.ref.job_id), "%s", id);
    one.ref.epoch = rep->epoch;
    int r = starts_run(app, tx, &st, 1);
    if (r < 0)
        return r;
    start_outcome(&one, o);
    return 0;
}

/* A chunk is stored at the stream's end only: anything else would make the stream read
 * back as something the job never wrote. */
static void log_offset_refused(struct outcome *o, const char *code, long long end)
{
    bool gap = strcmp(code, "gap") == 0;
    char detail[200];
    snprintf(detail, sizeof(detail),
             gap ? "the stream ends at %lld: a chunk must start there (no gap)"
                 : "differs from the bytes already stored at this offset (the stream ends at "
                   "%lld)",
             end);
    outcome_problem(o, PROBLEM_CONFLICT, detail, "offset");
    o->ext = json_pack("{s:s, s:I}", "reason", gap ? "offset-gap" : "offset-conflict",
                       "next_offset", (json_int_t)end);
}

/* The chunk was checked by proto_report_decode(): a known stream, base64 data, its end
 * within the largest stream offset. */
static int report_logs(struct app *app, const struct http_principal *p, struct store_tx *tx,
                       const char *id, const struct proto_report *rep, struct outcome *o)
{
    (void)app;
    const char *stream = proto_stream_name(rep->stream);
    int64_t offset = rep->offset;
    const char *data = rep->data;
    char epoch[24], off[24];
    epoch_text(rep, epoch, sizeof(epoch));
    snprintf(off, sizeof(off), "%lld", (long long)offset);
    const char *pp[] = {id, epoch, stream, off, data, p->subject};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_log_chunk, pp, &res);
    if (r < 0)
        return r;
    const char *code = r == 1 ? PQgetvalue(res, 0, 0) : "missing";
    long long next = r == 1 ? strtoll(PQgetvalue(res, 0, 1), NULL, 10) : 0;
    long long first = r == 1 ? strtoll(PQgetvalue(res, 0, 2), NULL, 10) : 0;
    if (strcmp(code, "missing") == 0)
        outcome_problem(o, PROBLEM_NOT_FOUND, "no such job", NULL);
    else if (strcmp(code, "stale") == 0)
        outcome_stale(o);
    else if (strcmp(code, "ok") != 0)
        log_offset_refused(o, code, next);
    else
        o->answer = json_pack("{s:I, s:I}", "next_offset", (json_int_t)next, "dropped_bytes",
                              (json_int_t)first);
    PQclear(res);
    return 0;
}

static int report_result(struct app *app, const struct http_principal *p, struct store_tx *tx,
                         const char *id, const struct proto_report *rep, struct outcome *o)
{
    (void)app;
    struct end one = {.agent = p->subject, .res = rep->result}, *x = &one;
    snprintf(one.ref.job_id, sizeof(one.ref.job_id), "%s", id);
    one.ref.epoch = rep->epoch;
    int r = ends_run(tx, &x, 1);
    if (r < 0)
        return r;
    end_outcome(&one, o);
    return 0;
}

/* One report on its own route (POST /agent/jobs/{id}/<kind>), committed by the agents'
 * group commit (report-batch.h). */
struct report_work {
    struct app *app;
    struct http_principal p;
    json_t *body; /* owned: rep borrows from it */
    struct proto_report rep;
    char id[ID_STR_LEN];
    report_fn fn;
    const char *what;
    struct outcome o; /* run's */
};

static void outcome_clear(struct outcome *o)
{
    json_decref(o->answer);
    json_decref(o->ext);
    *o = (struct outcome)OUTCOME_INIT;
}

static int report_run(struct store_tx *tx, void *arg)
{
    struct report_work *w = arg;
    outcome_clear(&w->o);
    return w->fn(w->app, &w->p, tx, w->id, &w->rep, &w->o);
}

static void report_done(struct http_req *req, int r, void *arg)
{
    struct report_work *w = arg;
    struct outcome *o = &w->o;
    if (r < 0) {
        http_reply_error(req, r, w->what);
    } else {
        record_metrics(w->app, o->finished, o->tenant_id, o->queue, o->run_s, o->start_wait_s);
        if (o->ended)
            gateway_kick_dispatch(w->app->gw); /* a slot is free */
        if (o->answer)
            http_reply_json(req, 200, TAKE_PTR(o->answer));
        else
            http_reply_problem_ext(req, o->kind, o->detail, o->field[0] ? o->field : NULL,
                                   TAKE_PTR(o->ext));
    }
    outcome_clear(o);
    json_decref(w->body);
    free(w);
}

static const struct report_batch_ops report_ops = {.run = report_run, .done = report_done};

static void report_http(struct http_req *req, enum proto_report_kind kind, report_fn fn,
                        const char *what)
{
    const struct proto_message *m = proto_report_message(kind);
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, m->fields, m->n, &body) < 0)
        return;
    struct proto_report rep;
    struct jsonv_error e;
    int r = proto_report_decode(body, (int)kind, &rep, &e);
    if (r < 0) {
        if (r == -EINVAL)
            http_reply_problem(req, PROBLEM_VALIDATION, e.detail, e.field);
        else
            http_reply_error(req, r, what);
        return;
    }
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    struct report_work *w = calloc(1, sizeof(*w));
    if (!w) {
        http_reply_error(req, -ENOMEM, what);
        return;
    }
    w->app = http_req_app(req);
    w->p = *http_req_principal(req);
    w->body = TAKE_PTR(body);
    w->rep = rep;
    snprintf(w->id, sizeof(w->id), "%s", id);
    w->fn = fn;
    w->what = what;
    w->o = (struct outcome)OUTCOME_INIT;
    report_batch_submit(w->app->reports, w->app->store, req, app_agent_scope(&w->p), w->p.subject,
                        &report_ops, w);
}

void api_agent_job_started(struct http_req *req)
{
    report_http(req, PROTO_REPORT_STARTED, report_started, "recording the start");
}

void api_agent_job_logs(struct http_req *req)
{
    report_http(req, PROTO_REPORT_LOGS, report_logs, "storing the output");
}

void api_agent_job_result(struct http_req *req)
{
    report_http(req, PROTO_REPORT_RESULT, report_result, "recording the result");
}

/* --- sync: everything in one exchange ------------------------------------------------------- */

static const report_fn report_fns[PROTO_REPORT__COUNT] = {
    [PROTO_REPORT_STARTED] = report_started,
    [PROTO_REPORT_LOGS] = report_logs,
    [PROTO_REPORT_RESULT] = report_result,
};

/* The answer to one report of a batch: {"code": 200, ...the route's answer} or
 * {"code": N, "problem": {...}}. */
static json_t *outcome_json(struct outcome *o)
{
    if (o->answer) {
        json_t *a = o->answer;
        o->answer = NULL;
        json_object_set_new(a, "code", json_integer(200));
        return a;
    }
    json_t *pr = problem_new(o->kind, o->detail, o->field[0] ? o->field : NULL);
    if (pr && o->ext)
        json_object_update(pr, o->ext);
    json_decref(o->ext);
    o->ext = NULL;
    const struct problem_def *d = problem_def(o->kind);
    return json_pack("{s:i, s:o?}", "code", d ? d->status : 500, "problem", pr);
}

/* What sync_pre() ran of one report of an exchange: its start or its result (both NULL:
 * nothing, the report runs in its exchange's turn). */
struct pre {
    const struct start *start;
    const struct end *end;
};

/* Check report idx of an exchange and run it, or answer what sync_pre() ran of it (pre, a
 * report it already decoded); < 0 is a store error. */
static int sync_report(struct app *app, const struct http_principal *p, struct store_tx *tx,
                       const json_t *item, size_t idx, const struct pre *pre, struct outcome *o)
{
    char field[160];
    int r = 0;
    if (pre->start) {
        start_outcome(pre->start, o);
    } else if (pre->end) {
        end_outcome(pre->end, o);
    } else {
        struct proto_report rep;
        struct jsonv_error e;
        r = proto_report_decode(item, -1, &rep, &e);
        if (r == -EINVAL) {
            snprintf(field, sizeof(field), "reports[%zu]%s%.100s", idx, e.field[0] ? "." : "",
                     e.field);
            outcome_problem(o, PROBLEM_VALIDATION, e.detail, field);
            return 0;
        }
        if (r < 0)
            return r;
        r = report_fns[rep.kind](app, p, tx, rep.job_id, &rep, o);
    }
    if (r >= 0 && !o->answer && o->field[0]) {
        snprintf(field, sizeof(field), "reports[%zu].%.100s", idx, o->field);
        snprintf(o->field, sizeof(o->field), "%s", field);
    }
    return r;
}

/* A sync exchange: everything in one transaction (one item of the group commit). */
struct sync_work {
    struct app *app;
    struct http_principal p;
    json_t *body; /* owned: sync borrows from it */
    struct proto_sync sync;
    bool first; /* heartbeat_note()'s, when it has a heartbeat */
    /* run's: the answer so far, the reports' outcomes, outcome_metrics() to record after
     * the commit, what gateway_claim() claimed, whether a slot came free */
    json_t *ans, *outs, *finished;
    char *assigned;
    bool ended;
    /* sync_pre()'s: the exchange's `started` and result reports it ran (nstarts, nends of
     * them) with their outcomes, and pre[i] for report i (pointing into those) */
    struct start *starts;
    struct end *ends;
    size_t nstarts, nends;
    struct pre *pre;
};

static void sync_work_reset(struct sync_work *w)
{
    json_decref(w->ans);
    json_decref(w->outs);
    json_decref(w->finished);
    free(w->assigned);
    w->ans = w->outs = w->finished = NULL;
    w->assigned = NULL;
    w->ended = false;
}

/* Whether a report before report idx of reports is output of idx's job. */
static bool output_before(const json_t *reports, size_t idx)
{
    const char *job = json_string_value(json_object_get(json_array_get(reports, idx), "job_id"));
    const char *logs = proto_report_kind_name(PROTO_REPORT_LOGS);
    for (size_t i = 0; job && i < idx; i++) {
        const json_t *it = json_array_get(reports, i);
        const char *kind = json_string_value(json_object_get(it, "kind"));
        const char *id = json_string_value(json_object_get(it, "job_id"));
        if (kind && id && strcmp(kind, logs) == 0 && strcasecmp(id, job) == 0)
            return true;
    }
    return false;
}

/* The `started` reports of every exchange of the transaction in one statement (q_started),
 * then their results in another (q_result): the start or the end of many jobs costs little
 * more than one did, once per statement (its plan, its triggers, its round trip). Each
 * exchange's run then answers its own from what this left in it. */
static int sync_pre(struct store_tx *tx, void *const *args, int n)
{
    size_t nstarts = 0, nends = 0;
    for (int k = 0; k < n; k++) {
        struct sync_work *w = args[k];
        w->nstarts = w->nends = 0;
        size_t i;
        json_t *item;
        json_array_foreach(w->sync.reports, i, item)
        {
            w->pre[i] = (struct pre){0};
            struct proto_report rep;
            struct jsonv_error e;
            /* Starts and results are decoded here, once (run answers them from pre[i]);
             * the others, and one that does not decode (its problem names the field), in
             * run only (a chunk's base64 is long to check). A
             * result is left to run too when its exchange has a heartbeat (which comes
             * first there, and would call a job this result ended lost) or output of its
             * job before it (which the end of the job would refuse). */
            const char *kind = json_string_value(json_object_get(item, "kind"));
            bool start = kind && strcmp(kind, proto_report_kind_name(PROTO_REPORT_STARTED)) == 0;
            bool end = kind && !w->sync.has_heartbeat &&
                       strcmp(kind, proto_report_kind_name(PROTO_REPORT_RESULT)) == 0 &&
                       !output_before(w->sync.reports, i);
            if ((!start && !end) || proto_report_decode(item, -1, &rep, &e) < 0)
                continue;
            if (rep.kind == PROTO_REPORT_STARTED) {
                struct start *st = &w->starts[w->nstarts];
                *st = (struct start){.agent = w->p.subject, .wait_s = -1};
                snprintf(st->ref.job_id, sizeof(st->ref.job_id), "%s", rep.job_id);
                st->ref.epoch = rep.epoch;
                w->pre[i].start = st;
                w->nstarts++;
            } else if (rep.kind == PROTO_REPORT_RESULT) {
                struct end *x = &w->ends[w->nends];
                *x = (struct end){.agent = w->p.subject, .res = rep.result};
                snprintf(x->ref.job_id, sizeof(x->ref.job_id), "%s", rep.job_id);
                x->ref.epoch = rep.epoch;
                w->pre[i].end = x;
                w->nends++;
            }
        }
        nstarts += w->nstarts;
        nends += w->nends;
    }
    _cleanup_free_ struct start **starts = calloc(nstarts + 1, sizeof(*starts));
    _cleanup_free_ struct end **ends = calloc(nends + 1, sizeof(*ends));
    if (!starts || !ends)
        return -ENOMEM;
    size_t ns = 0, ne = 0;
    for (int k = 0; k < n; k++) {
        struct sync_work *w = args[k];
        for (size_t j = 0; j < w->nstarts; j++)
            starts[ns++] = &w->starts[j];
        for (size_t j = 0; j < w->nends; j++)
            ends[ne++] = &w->ends[j];
    }
    /* The starts first: one exchange may carry a short job's start and its result. */
    int r = ns ? starts_run(((struct sync_work *)args[0])->app, tx, starts, ns) : 0;
    if (r >= 0 && ne)
        r = ends_run(tx, ends, ne);
    return r < 0 ? r : 0;
}

static int sync_run(struct store_tx *tx, void *arg)
{
    struct sync_work *w = arg;
    struct app *app = w->app;
    const struct http_principal *p = &w->p;
    sync_work_reset(w);
    w->ans = json_object();
    w->outs = json_array();
    w->finished = json_array();
    if (!w->ans || !w->outs || !w->finished)
        return -ENOMEM;
    int r = 0;
    if (w->sync.has_heartbeat) {
        json_t *hba = NULL;
        r = heartbeat(app, p, tx, w->first, &w->sync.heartbeat, &hba);
        if (r >= 0)
            json_object_set_new(w->ans, "heartbeat", hba);
    }
    size_t i;
    json_t *item;
    json_array_foreach(w->sync.reports, i, item)
    {
        if (r < 0)
            break;
        struct outcome o = OUTCOME_INIT;
        r = sync_report(app, p, tx, item, i, &w->pre[i], &o);
        if (r >= 0) {
            w->ended = w->ended || o.ended;
            json_t *om = outcome_metrics(&o);
            if (om)
                json_array_append_new(w->finished, om);
            json_array_append_new(w->outs, outcome_json(&o));
        }
        json_decref(o.answer);
        json_decref(o.ext);
    }
    /* On -ENOMEM too the transaction rolls back: the claim is in it. */
    if (r >= 0)
        r = gateway_claim(app, tx, p->subject, w->sync.assign, w->sync.resume, w->sync.holding,
                          w->sync.nholding, &w->assigned);
    return r;
}

static void sync_done(struct http_req *req, int r, void *arg)
{
    struct sync_work *w = arg;
    struct app *app = w->app;
    if (r < 0) {
        http_reply_error(req, r, "recording the agent's reports");
        goto done;
    }
    size_t k;
    json_t *st;
    json_array_foreach(w->finished, k, st)
    {
        record_metrics(app, json_string_value(json_object_get(st, "finished")),
                       json_string_value(json_object_get(st, "tenant_id")),
                       json_string_value(json_object_get(st, "queue")),
                       json_real_value(json_object_get(st, "run_s")),
                       json_real_value(json_object_get(st, "start_wait_s")));
    }
    if (w->sync.has_heartbeat)
        heartbeat_committed(app, w->first, &w->sync.heartbeat);
    if (w->ended)
        gateway_kick_dispatch(app->gw); /* a slot is free */
    json_object_set_new(w->ans, "reports", TAKE_PTR(w->outs));
    gateway_answer(req, TAKE_PTR(w->ans), TAKE_PTR(w->assigned), w->sync.assign,
                   (long)w->sync.wait_s);
done:
    sync_work_reset(w);
    proto_sync_clear(&w->sync);
    json_decref(w->body);
    free(w->starts);
    free(w->ends);
    free(w->pre);
    free(w);
}

static const struct report_batch_ops sync_ops = {
    .run = sync_run, .pre = sync_pre, .done = sync_done};

void api_agent_sync(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, proto_msg_sync.fields, proto_msg_sync.n, &body) < 0)
        return;
    struct sync_work *w = calloc(1, sizeof(*w));
    if (!w) {
        http_reply_error(req, -ENOMEM, "reading the agent's reports");
        return;
    }
    struct jsonv_error e;
    int r = proto_sync_decode(body, &w->sync, &e);
    if (r < 0) {
        if (r == -EINVAL)
            http_reply_problem(req, PROBLEM_VALIDATION, e.detail, e.field);
        else
            http_reply_error(req, r, "reading the agent's reports");
        free(w);
        return;
    }
    size_t nreports = json_array_size(w->sync.reports);
    w->starts = calloc(nreports + 1, sizeof(*w->starts));
    w->ends = calloc(nreports + 1, sizeof(*w->ends));
    w->pre = calloc(nreports + 1, sizeof(*w->pre));
    if (!w->starts || !w->ends || !w->pre) {
        http_reply_error(req, -ENOMEM, "reading the agent's reports");
        proto_sync_clear(&w->sync);
        free(w->starts);
        free(w->ends);
        free(w->pre);
        free(w);
        return;
    }
    w->app = http_req_app(req);
    w->p = *http_req_principal(req);
    w->body = TAKE_PTR(body);
    /* A held exchange of this agent's was given up (it has one connection): it must not
     * claim what this one is to carry. */
    gateway_supersede(w->app->gw, w->p.subject);
    if (w->sync.has_heartbeat)
        w->first = heartbeat_note(w->app, &w->p, &w->sync.heartbeat);
    report_batch_submit(w->app->reports, w->app->store, req, app_agent_scope(&w->p), w->p.subject,
                        &sync_ops, w);
}
