/* api-agentproto.c: the agent protocol's reports (docs/agent-protocol.md): heartbeats,
 * a job started, its output, its result, one at a time or batched in a sync exchange.
 * Every report names the epoch of the assignment it is about; any other epoch is refused
 * (409 stale-epoch), which is how a job never counts two agents' work. */
#include <errno.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "proto/version.h"
#include "server/api.h"
#include "server/app.h"
#include "server/gateway.h"

#define LOG_CHUNK_MAX    (64 * 1024)
#define LOG_OFFSET_MAX   ORCH_LOG_OFFSET_MAX
#define RESULT_MAX       (1024 * 1024)
#define SYNC_MAX_REPORTS 512
#define SYNC_MAX_WAIT_S  60

/* The outcome of one report: 200 with an answer, or a problem. */
struct outcome {
    json_t *answer;         /* 200: the answer (owned) */
    enum problem_kind kind; /* otherwise */
    char detail[256];
    char field[160]; /* "" = none */
    json_t *ext;     /* extra problem members (owned) or NULL */
    bool ended;      /* a result ended the attempt: a slot is free */
};

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

/* A report's function: the job id and the (checked) body; < 0 is a store error that
 * failed tx, else *o says what to answer. */
typedef int (*report_fn)(struct app *app, const struct http_principal *p, struct store_tx *tx,
                         const char *job_id, const json_t *body, struct outcome *o);

/* --- heartbeat ------------------------------------------------------------------------------ */

static const struct jsonv_field heartbeat_fields[] = {
    {"status", JSONV_STRING, 0, 1, 16},    {"slots", JSONV_INT, 0, 1, 1024},
    {"free_slots", JSONV_INT, 0, 0, 1024}, {"running", JSONV_ARRAY, 0, 0, 1024},
    {"load", JSONV_OBJECT, 0, 0, 16},      {"spool_bytes", JSONV_INT, 0, 0, INT64_MAX},
    {"packages", JSONV_ARRAY, 0, 0, 4096}, {"capabilities", JSONV_OBJECT, 0, 0, 64},
};

/* The package digests of a heartbeat: 64 lower-case hex digits each. */
static bool packages_valid(const json_t *list)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        if (!s || strlen(s) != 64 || strspn(s, "0123456789abcdef") != 64)
            return false;
    }
    return true;
}

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

/* Leases of listed jobs that would expire within half a lease are renewed in the
 * heartbeat's own transaction, before the agent is answered; the others are renewed by
 * the gateway's next batch (server/gateway.c), which lands well before they expire. So an
 * answered heartbeat has always renewed the lease, from a moment after the agent sent it,
 * before the reaper could take the job: the agent's self-fencing counts on it
 * (docs/agent.md, "Leases and self-fencing"). One that the reaper took first is not ours
 * any more, and the answer says `lost`. */
static const struct store_stmt q_renew_due =
    STORE_STMT("ap_renew_due",
               "UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $4::int)"
               "  FROM unnest($2::uuid[], $3::bigint[]) AS r(job_id, epoch)"
               " WHERE j.id = r.job_id AND j.epoch = r.epoch AND j.agent_id = $1"
               "   AND j.status IN ('assigned', 'running')"
               "   AND j.lease_expires_at < now() + make_interval(secs => $4::int / 2.0)",
               4);

static int renew_due(struct app *app, const struct http_principal *p, struct store_tx *tx,
                     const json_t *running)
{
    struct buf jobs = BUF_INIT, epochs = BUF_INIT;
    buf_append_str(&jobs, "{");
    buf_append_str(&epochs, "{");
    int n = 0;
    size_t k;
    json_t *e;
    json_array_foreach(running, k, e)
    {
        const char *jid = json_string_value(json_object_get(e, "job_id"));
        json_t *ep = json_object_get(e, "epoch");
        if (!jid || !id_is_valid(jid) || !json_is_integer(ep))
            continue;
        buf_printf(&jobs, "%s%s", n ? "," : "", jid);
        buf_printf(&epochs, "%s%lld", n ? "," : "", json_integer_value(ep));
        n++;
    }
    buf_append_str(&jobs, "}");
    buf_append_str(&epochs, "}");
    int r = 0;
    if (n > 0) {
        char lease[24];
        snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
        const char *pp[] = {p->subject, jobs.data, epochs.data, lease};
        r = jobs.data && epochs.data ? store_tx_exec(tx, &q_renew_due, pp, NULL) : -ENOMEM;
    }
    buf_free(&jobs);
    buf_free(&epochs);
    return r < 0 ? r : 0;
}

/* Record a heartbeat (body checked against heartbeat_fields) in tx and build its answer.
 * Returns 0 with *ret set, or a store error. */
static int heartbeat(struct app *app, const struct http_principal *p, struct store_tx *tx,
                     const json_t *body, json_t **ret)
{
    json_t *running = json_object_get(body, "running");
    _cleanup_json_ json_t *none = json_array();
    if (!running)
        running = none;

    int r = 0;
    if (!app->gw || gateway_note_heartbeat(app->gw, p->subject, running)) {
        /* First heartbeat on this node: write it now so the dispatcher sees the agent. */
        char slots[24] = "";
        if (json_object_get(body, "slots"))
            snprintf(slots, sizeof(slots), "%lld",
                     json_integer_value(json_object_get(body, "slots")));
        const char *pp[] = {p->subject, app->cfg->node_name, slots[0] ? slots : NULL};
        r = store_tx_exec(tx, &q_first_beat, pp, NULL);
        gateway_kick_dispatch(app->gw); /* a new agent: maybe jobs wait for it */
    }
    if (r >= 0)
        r = renew_due(app, p, tx, running);
    json_t *caps = json_object_get(body, "capabilities");
    if (r >= 0 && caps) {
        _cleanup_free_ char *text = json_dumps(caps, JSON_COMPACT);
        const char *pp[] = {p->subject, text};
        r = text ? store_tx_exec(tx, &q_capabilities, pp, NULL) : -ENOMEM;
    }
    json_t *pkgs = json_object_get(body, "packages");
    if (r >= 0 && pkgs) {
        _cleanup_free_ char *text = json_dumps(pkgs, JSON_COMPACT);
        const char *pp[] = {p->subject, text};
        r = text ? store_tx_exec(tx, &q_packages, pp, NULL) : -ENOMEM;
    }
    PGresult *res = NULL;
    const char *pj[] = {p->subject};
    if (r >= 0)
        r = store_tx_exec(tx, &q_my_jobs, pj, &res);
    if (r < 0)
        return r;
    /* cancel: ours and cancelled through the API. lost: reported running, but not (or no
     * longer at that epoch) ours. */
    json_t *cancel = json_array(), *lost = json_array();
    for (int i = 0; i < r; i++)
        if (strcmp(PQgetvalue(res, i, 2), "t") == 0)
            json_array_append_new(cancel,
                                  json_pack("{s:s, s:I}", "job_id", PQgetvalue(res, i, 0), "epoch",
                                            (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10)));
    size_t k;
    json_t *e;
    json_array_foreach(running, k, e)
    {
        const char *jid = json_string_value(json_object_get(e, "job_id"));
        json_int_t ep = json_integer_value(json_object_get(e, "epoch"));
        bool mine = false;
        for (int i = 0; jid && i < r; i++)
            mine = mine || (strcmp(PQgetvalue(res, i, 0), jid) == 0 &&
                            strtoll(PQgetvalue(res, i, 1), NULL, 10) == ep);
        if (jid && !mine)
            json_array_append_new(lost, json_pack("{s:s, s:I}", "job_id", jid, "epoch", ep));
    }
    PQclear(res);
    char now[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(clock_real_ms(), now, sizeof(now));
    json_t *ans =
        json_pack("{s:s, s:I, s:I, s:o, s:o}", "server_time", now, "heartbeat_interval_s",
                  (json_int_t)(app->cfg->agent_heartbeat_ms / 1000), "lease_s",
                  (json_int_t)(app->cfg->agent_lease_ms / 1000), "cancel", cancel, "lost", lost);
    if (!ans)
        return -ENOMEM;
    /* When the credential expires, so that the agent rotates it in time. */
    if (p->token_exp > 0) {
        int64_t left = p->token_exp - clock_real_ms() / 1000;
        json_object_set_new(ans, "credential_expires_in_s", json_integer(left > 0 ? left : 0));
    }
    *ret = ans;
    return 0;
}

void api_agent_heartbeat(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, heartbeat_fields, ELEMENTSOF(heartbeat_fields), &body) < 0)
        return;
    if (!packages_valid(json_object_get(body, "packages"))) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be SHA-256 digests in lower-case hex",
                           "packages");
        return;
    }
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    struct store_tx *tx = NULL;
    json_t *ans = NULL;
    int r = store_tx_begin(app->store, app_agent_scope(p), 0, &tx);
    if (r >= 0) {
        r = heartbeat(app, p, tx, body, &ans);
        int c = store_tx_commit(tx);
        r = r < 0 ? r : c;
    }
    if (r < 0) {
        json_decref(ans);
        http_reply_error(req, r, "recording the heartbeat");
        return;
    }
    http_reply_json(req, 200, ans);
}

/* --- reports -------------------------------------------------------------------------------- */

static const struct store_stmt q_started = STORE_STMT(
    "ap_started",
    "WITH u AS (UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now()),"
    "             delivered_at = coalesce(delivered_at, now()),"
    "             lease_expires_at = now() + make_interval(secs => $4::int), updated_at = now()"
    "           WHERE id = $1 AND epoch = $2 AND agent_id = $3"
    "             AND status IN ('assigned', 'running') RETURNING id),"
    " a AS (UPDATE job_attempts SET status = 'running', started_at = coalesce(started_at, now())"
    "        WHERE job_id = $1 AND epoch = $2 AND EXISTS (SELECT 1 FROM u) RETURNING id)"
    " SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM jobs WHERE id = $1),"
    "        (SELECT count(*) FROM a)",
    4);

/* One chunk through job_log_append() (sql/0009_job_logs.sql): contiguous, idempotent for an
 * identical retransmission, within the job's log limit. */
static const struct store_stmt q_log_chunk =
    STORE_STMT("ap_log_chunk",
               "SELECT code, next_offset, first_offset"
               "  FROM job_log_append($1, $2, $6, $3, $4, decode($5, 'base64'))",
               6);

/* Ends the attempt when (job, epoch) is this agent's; a repeat of a result already
 * recorded for this agent and epoch is answered like the first. The status answered is the
 * job's after this result: job_end_attempt()'s, since the statement's own snapshot still
 * sees the status from before. */
static const struct store_stmt q_result = STORE_STMT(
    "ap_result",
    "WITH e AS MATERIALIZED ("
    "  SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND epoch = $2 AND agent_id = $3)"
    "              THEN job_end_attempt($1, $2, $4, $5::int, $6, $7::jsonb) END AS status)"
    " SELECT e.status,"
    "       EXISTS (SELECT 1 FROM job_attempts WHERE job_id = $1 AND epoch = $2"
    "                 AND agent_id = $3 AND finished_at IS NOT NULL AND status <> 'lost'),"
    "       coalesce(e.status, (SELECT status FROM jobs WHERE id = $1))"
    "  FROM e",
    7);

static void epoch_text(const json_t *body, char *epoch, size_t len)
{
    snprintf(epoch, len, "%lld", json_integer_value(json_object_get(body, "epoch")));
}

/* The first two columns of q_started: attempt ours, job exists. */
static void ours_or_not(PGresult *res, struct outcome *o, json_t *answer)
{
    bool ok = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    bool exists = strcmp(PQgetvalue(res, 0, 1), "1") == 0;
    PQclear(res);
    if (!exists)
        outcome_problem(o, PROBLEM_NOT_FOUND, "no such job", NULL);
    else if (!ok)
        outcome_stale(o);
    else {
        o->answer = answer;
        answer = NULL;
    }
    json_decref(answer);
}

static const struct jsonv_field started_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
};

static int report_started(struct app *app, const struct http_principal *p, struct store_tx *tx,
                          const char *id, const json_t *body, struct outcome *o)
{
    char epoch[24], lease[24];
    epoch_text(body, epoch, sizeof(epoch));
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    const char *pp[] = {id, epoch, p->subject, lease};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_started, pp, &res);
    if (r < 0)
        return r;
    ours_or_not(res, o, json_pack("{s:s}", "status", "running"));
    return 0;
}

static const struct jsonv_field logs_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"stream", JSONV_STRING, JSONV_REQUIRED, 1, 8},
    {"offset", JSONV_INT, JSONV_REQUIRED, 0, LOG_OFFSET_MAX},
    {"data", JSONV_STRING, JSONV_REQUIRED, 0, (LOG_CHUNK_MAX / 3 + 1) * 4},
};

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

static int report_logs(struct app *app, const struct http_principal *p, struct store_tx *tx,
                       const char *id, const json_t *body, struct outcome *o)
{
    (void)app;
    const char *stream = api_json_str(body, "stream");
    json_int_t offset = json_integer_value(json_object_get(body, "offset"));
    const char *data = api_json_str(body, "data");
    size_t dlen = json_string_length(json_object_get(body, "data"));
    /* Check the base64 and learn the decoded size (PostgreSQL decodes it again). */
    _cleanup_free_ unsigned char *raw = malloc(dlen / 4 * 3 + 4);
    int n =
        raw && dlen % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)data, (int)dlen) : -1;
    if (strcmp(stream, "stdout") != 0 && strcmp(stream, "stderr") != 0 &&
        strcmp(stream, "system") != 0) {
        outcome_problem(o, PROBLEM_VALIDATION, "must be stdout, stderr or system", "stream");
        return 0;
    }
    if (n < 0) {
        outcome_problem(o, PROBLEM_VALIDATION, "must be base64 (RFC 4648, padded)", "data");
        return 0;
    }
    int pad = (dlen >= 1 && data[dlen - 1] == '=') + (dlen >= 2 && data[dlen - 2] == '=');
    long long bytes = n - pad;
    /* offset <= LOG_OFFSET_MAX (the table) and bytes <= LOG_CHUNK_MAX: no overflow here. */
    if (offset > LOG_OFFSET_MAX - bytes) {
        outcome_problem(o, PROBLEM_VALIDATION,
                        "offset plus the chunk's length is past the largest stream offset "
                        "(2^53 - 1)",
                        "offset");
        return 0;
    }
    char epoch[24], off[24];
    epoch_text(body, epoch, sizeof(epoch));
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

static const struct jsonv_field result_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"exit_code", JSONV_INT, JSONV_NULLABLE, -1, 255},
    {"signal", JSONV_INT, 0, 0, 128},
    {"timed_out", JSONV_BOOL, 0, 0, 0},
    {"cancelled", JSONV_BOOL, 0, 0, 0},
    {"error", JSONV_STRING, JSONV_NULLABLE, 0, 4096},
    {"result", JSONV_ANY, JSONV_NULLABLE, 0, 0},
};

static int report_result(struct app *app, const struct http_principal *p, struct store_tx *tx,
                         const char *id, const json_t *body, struct outcome *o)
{
    (void)app;
    char epoch[24], code[16] = "";
    epoch_text(body, epoch, sizeof(epoch));
    json_t *ec = json_object_get(body, "exit_code");
    bool timed_out = json_is_true(json_object_get(body, "timed_out"));
    bool cancelled = json_is_true(json_object_get(body, "cancelled"));
    json_int_t sig = json_integer_value(json_object_get(body, "signal"));
    if (json_is_integer(ec))
        snprintf(code, sizeof(code), "%lld", json_integer_value(ec));
    const char *outcome = cancelled   ? "cancelled"
                          : timed_out ? "timeout"
                          : (json_is_integer(ec) && json_integer_value(ec) == 0 && sig == 0)
                              ? "succeeded"
                              : "failed";
    json_t *result = json_object_get(body, "result");
    _cleanup_free_ char *result_text =
        result && !json_is_null(result) ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (result_text && strlen(result_text) > RESULT_MAX) {
        outcome_problem(o, PROBLEM_VALIDATION, "the result is at most 1 MiB of JSON", "result");
        return 0;
    }
    char err[4200] = "";
    const char *e = api_json_str(body, "error");
    if (e)
        snprintf(err, sizeof(err), "%s", e);
    else if (timed_out)
        snprintf(err, sizeof(err), "the job ran past its timeout and was killed");
    else if (sig)
        snprintf(err, sizeof(err), "the job was killed by signal %lld", (long long)sig);
    const char *pp[] = {
        id, epoch, p->subject, outcome, code[0] ? code : NULL, err[0] ? err : NULL, result_text};
    PGresult *res = NULL;
    int r = store_tx_exec(tx, &q_result, pp, &res);
    if (r < 0)
        return r;
    if (r == 0 || PQgetisnull(res, 0, 2)) {
        PQclear(res);
        outcome_problem(o, PROBLEM_NOT_FOUND, "no such job", NULL);
        return 0;
    }
    bool ended = !PQgetisnull(res, 0, 0);
    bool repeat = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    char status[16];
    snprintf(status, sizeof(status), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    if (!ended && !repeat) {
        outcome_stale(o);
        return 0;
    }
    log_info("op=job.result job=%s epoch=%s agent=%s outcome=%s status=%s", id, epoch, p->subject,
             outcome, status);
    o->ended = ended;
    o->answer = json_pack("{s:s}", "status", status);
    return 0;
}

/* One report on its own route (POST /agent/jobs/{id}/<kind>): one transaction. */
static void report_http(struct http_req *req, const struct jsonv_field *fields, size_t n,
                        report_fn fn, const char *what)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, fields, n, &body) < 0)
        return;
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    struct outcome o = {0};
    struct store_tx *tx = NULL;
    int r = store_tx_begin(app->store, app_agent_scope(p), 0, &tx);
    if (r >= 0) {
        r = fn(app, p, tx, id, body, &o);
        int c = store_tx_commit(tx);
        r = r < 0 ? r : c;
    }
    if (r < 0) {
        json_decref(o.answer);
        json_decref(o.ext);
        http_reply_error(req, r, what);
        return;
    }
    if (o.ended)
        gateway_kick_dispatch(app->gw); /* a slot is free */
    if (o.answer)
        http_reply_json(req, 200, o.answer);
    else
        http_reply_problem_ext(req, o.kind, o.detail, o.field[0] ? o.field : NULL, o.ext);
}

void api_agent_job_started(struct http_req *req)
{
    report_http(req, started_fields, ELEMENTSOF(started_fields), report_started,
                "recording the start");
}

void api_agent_job_logs(struct http_req *req)
{
    report_http(req, logs_fields, ELEMENTSOF(logs_fields), report_logs, "storing the output");
}

void api_agent_job_result(struct http_req *req)
{
    report_http(req, result_fields, ELEMENTSOF(result_fields), report_result,
                "recording the result");
}

/* --- sync: everything in one exchange ------------------------------------------------------- */

static const struct {
    const char *kind;
    const struct jsonv_field *fields;
    size_t n;
    report_fn fn;
} report_kinds[] = {
    {"started", started_fields, ELEMENTSOF(started_fields), report_started},
    {"logs", logs_fields, ELEMENTSOF(logs_fields), report_logs},
    {"result", result_fields, ELEMENTSOF(result_fields), report_result},
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

/* Check one report of a batch and run it; < 0 is a store error. */
static int sync_report(struct app *app, const struct http_principal *p, struct store_tx *tx,
                       const json_t *item, size_t idx, struct outcome *o)
{
    char field[160];
    if (!json_is_object(item)) {
        snprintf(field, sizeof(field), "reports[%zu]", idx);
        outcome_problem(o, PROBLEM_VALIDATION, "must be an object", field);
        return 0;
    }
    const char *kind = json_string_value(json_object_get(item, "kind"));
    const char *id = json_string_value(json_object_get(item, "job_id"));
    size_t k = 0;
    while (kind && k < ELEMENTSOF(report_kinds) && strcmp(report_kinds[k].kind, kind) != 0)
        k++;
    if (!kind || k == ELEMENTSOF(report_kinds)) {
        snprintf(field, sizeof(field), "reports[%zu].kind", idx);
        outcome_problem(o, PROBLEM_VALIDATION, "must be started, logs or result", field);
        return 0;
    }
    if (!id || !id_is_valid(id)) {
        snprintf(field, sizeof(field), "reports[%zu].job_id", idx);
        outcome_problem(o, PROBLEM_VALIDATION, "must be a job id (UUID)", field);
        return 0;
    }
    /* The kind's own fields, as on its route; kind and job_id belong to the batch. */
    _cleanup_json_ json_t *body = json_copy((json_t *)item);
    if (!body)
        return -ENOMEM;
    json_object_del(body, "kind");
    json_object_del(body, "job_id");
    struct jsonv_error e;
    if (jsonv_check(body, report_kinds[k].fields, report_kinds[k].n, false, &e) < 0) {
        snprintf(field, sizeof(field), "reports[%zu].%.100s", idx, e.field);
        outcome_problem(o, PROBLEM_VALIDATION, e.detail, field);
        return 0;
    }
    int r = report_kinds[k].fn(app, p, tx, id, body, o);
    if (r >= 0 && !o->answer && o->field[0]) {
        snprintf(field, sizeof(field), "reports[%zu].%.100s", idx, o->field);
        snprintf(o->field, sizeof(o->field), "%s", field);
    }
    return r;
}

static const struct jsonv_field sync_fields[] = {
    {"heartbeat", JSONV_OBJECT, 0, 0, 16}, {"reports", JSONV_ARRAY, 0, 0, SYNC_MAX_REPORTS},
    {"assign", JSONV_BOOL, 0, 0, 0},       {"wait", JSONV_INT, 0, 0, SYNC_MAX_WAIT_S},
    {"resume", JSONV_BOOL, 0, 0, 0},
};

void api_agent_sync(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, sync_fields, ELEMENTSOF(sync_fields), &body) < 0)
        return;
    json_t *hb = json_object_get(body, "heartbeat");
    struct jsonv_error e;
    if (hb && jsonv_check(hb, heartbeat_fields, ELEMENTSOF(heartbeat_fields), false, &e) < 0) {
        char field[160];
        snprintf(field, sizeof(field), "heartbeat.%.100s", e.field);
        http_reply_problem(req, PROBLEM_VALIDATION, e.detail, field);
        return;
    }
    if (hb && !packages_valid(json_object_get(hb, "packages"))) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be SHA-256 digests in lower-case hex",
                           "heartbeat.packages");
        return;
    }
    bool assign = json_is_true(json_object_get(body, "assign"));
    long wait = (long)json_integer_value(json_object_get(body, "wait"));
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    /* A held exchange of this agent's was given up (it has one connection): it must not
     * claim what this one is to carry. */
    gateway_supersede(app->gw, p->subject);

    /* Everything in one transaction: one commit for the whole exchange. */
    json_t *ans = json_object(), *outs = json_array();
    char *assigned = NULL;
    bool ended = false;
    struct store_tx *tx = NULL;
    int r = ans && outs ? store_tx_begin(app->store, app_agent_scope(p), 0, &tx) : -ENOMEM;
    if (r >= 0 && hb) {
        json_t *hba = NULL;
        r = heartbeat(app, p, tx, hb, &hba);
        if (r >= 0)
            json_object_set_new(ans, "heartbeat", hba);
    }
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(body, "reports"), i, item)
    {
        if (r < 0)
            break;
        struct outcome o = {0};
        r = sync_report(app, p, tx, item, i, &o);
        if (r >= 0) {
            ended = ended || o.ended;
            json_array_append_new(outs, outcome_json(&o));
        }
        json_decref(o.answer);
        json_decref(o.ext);
    }
    if (r >= 0)
        r = gateway_claim(app, tx, p->subject, assign,
                          json_is_true(json_object_get(body, "resume")), &assigned);
    if (tx && r < 0)
        store_tx_rollback(tx); /* also when the failure was not the database's (-ENOMEM) */
    else if (tx)
        r = store_tx_commit(tx);
    if (r < 0) {
        free(assigned);
        json_decref(ans);
        json_decref(outs);
        http_reply_error(req, r, "recording the agent's reports");
        return;
    }
    json_object_set_new(ans, "reports", outs);
    if (ended)
        gateway_kick_dispatch(app->gw); /* a slot is free */
    gateway_answer(req, ans, assigned, assign, wait);
}
