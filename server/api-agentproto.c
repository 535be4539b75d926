/* api-agentproto.c: the agent protocol's reports (docs/agent-protocol.md): heartbeats,
 * a job started, its output, its result. Every report names the epoch of the assignment
 * it is about; any other epoch is refused (409 stale-epoch), which is how a job never
 * counts two agents' work. */
#include <errno.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/gateway.h"

#define LOG_CHUNK_MAX (64 * 1024)

static void stale(struct http_req *req)
{
    http_reply_problem_ext(req, PROBLEM_CONFLICT,
                           "this attempt is no longer the job's current one for this agent: "
                           "stop it and drop its reports",
                           "epoch", json_pack("{s:s}", "reason", "stale-epoch"));
}

/* --- heartbeat ------------------------------------------------------------------------------ */

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

void api_agent_heartbeat(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"status", JSONV_STRING, 0, 1, 16},    {"slots", JSONV_INT, 0, 1, 1024},
        {"free_slots", JSONV_INT, 0, 0, 1024}, {"running", JSONV_ARRAY, 0, 0, 1024},
        {"load", JSONV_OBJECT, 0, 0, 16},      {"spool_bytes", JSONV_INT, 0, 0, INT64_MAX},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    json_t *running = json_object_get(body, "running");
    if (!running)
        running = json_array();
    else
        json_incref(running);

    int r = 0;
    if (!app->gw || gateway_note_heartbeat(app->gw, p->subject, running)) {
        /* First heartbeat on this node: write it now so the dispatcher sees the agent. */
        char slots[24] = "";
        if (json_object_get(body, "slots"))
            snprintf(slots, sizeof(slots), "%lld",
                     json_integer_value(json_object_get(body, "slots")));
        const char *pp[] = {p->subject, app->cfg->node_name, slots[0] ? slots : NULL};
        r = store_exec_once(app->store, p->tenant_id, &q_first_beat, pp, NULL);
        gateway_kick_dispatch(app->gw); /* a new agent: maybe jobs wait for it */
    }
    PGresult *res = NULL;
    const char *pj[] = {p->subject};
    if (r >= 0)
        r = store_exec_once(app->store, p->tenant_id, &q_my_jobs, pj, &res);
    if (r < 0) {
        json_decref(running);
        json_decref(body);
        http_reply_error(req, r, "recording the heartbeat");
        return;
    }
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
    /* When the credential expires, so that the agent rotates it in time. */
    int64_t exp = http_req_principal(req)->token_exp;
    if (ans && exp > 0) {
        int64_t left = exp - clock_real_ms() / 1000;
        json_object_set_new(ans, "credential_expires_in_s", json_integer(left > 0 ? left : 0));
    }
    http_reply_json(req, 200, ans);
    json_decref(running);
    json_decref(body);
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

static const struct store_stmt q_log_chunk = STORE_STMT(
    "ap_log_chunk",
    "WITH ok AS (SELECT tenant_id FROM jobs WHERE id = $1 AND epoch = $2 AND agent_id = $6"
    "              AND status IN ('assigned', 'running')),"
    " ins AS (INSERT INTO job_logs (tenant_id, job_id, epoch, stream, \"offset\", data)"
    "           SELECT ok.tenant_id, $1, $2, $3, $4, decode($5, 'base64') FROM ok"
    "         ON CONFLICT DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM jobs WHERE id = $1),"
    "        (SELECT count(*) FROM ins)",
    6);

/* Ends the attempt when (job, epoch) is this agent's; a repeat of a result already
 * recorded for this agent and epoch is answered like the first. */
static const struct store_stmt q_result = STORE_STMT(
    "ap_result",
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND epoch = $2 AND agent_id = $3)"
    "            THEN job_end_attempt($1, $2, $4, $5::int, $6, $7::jsonb) END,"
    "       EXISTS (SELECT 1 FROM job_attempts WHERE job_id = $1 AND epoch = $2"
    "                 AND agent_id = $3 AND finished_at IS NOT NULL AND status <> 'lost'),"
    "       (SELECT status FROM jobs WHERE id = $1)",
    7);

/* Common checks: the path's job id and the body's epoch. */
static const char *report_job(struct http_req *req, const json_t *body, char *epoch, size_t len)
{
    const char *id = api_path_id(req, "id", "job");
    if (!id)
        return NULL;
    snprintf(epoch, len, "%lld", json_integer_value(json_object_get(body, "epoch")));
    return id;
}

void api_agent_job_started(struct http_req *req)
{
    static const struct jsonv_field fields[] = {{"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX}};
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    char epoch[24], lease[24];
    const char *id = report_job(req, body, epoch, sizeof(epoch));
    json_decref(body);
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    snprintf(lease, sizeof(lease), "%lld", (long long)(app->cfg->agent_lease_ms / 1000));
    const char *pp[] = {id, epoch, p->subject, lease};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, p->tenant_id, &q_started, pp, &res);
    if (r < 0) {
        http_reply_error(req, r, "recording the start");
        return;
    }
    bool ok = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    bool exists = strcmp(PQgetvalue(res, 0, 1), "1") == 0;
    PQclear(res);
    if (!exists)
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
    else if (!ok)
        stale(req);
    else
        http_reply_json(req, 200, json_pack("{s:s}", "status", "running"));
}

void api_agent_job_logs(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
        {"stream", JSONV_STRING, JSONV_REQUIRED, 1, 8},
        {"offset", JSONV_INT, JSONV_REQUIRED, 0, INT64_MAX},
        {"data", JSONV_STRING, JSONV_REQUIRED, 0, (LOG_CHUNK_MAX / 3 + 1) * 4},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    const char *stream = api_json_str(body, "stream");
    json_int_t offset = json_integer_value(json_object_get(body, "offset"));
    const char *data = api_json_str(body, "data");
    size_t dlen = json_string_length(json_object_get(body, "data"));
    /* Check the base64 and learn the decoded size (PostgreSQL decodes it again). */
    unsigned char *raw = malloc(dlen / 4 * 3 + 4);
    int n =
        raw && dlen % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)data, (int)dlen) : -1;
    free(raw);
    if (strcmp(stream, "stdout") != 0 && strcmp(stream, "stderr") != 0 &&
        strcmp(stream, "system") != 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be stdout, stderr or system", "stream");
    } else if (offset < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be >= 0", "offset");
    } else if (n < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be base64 (RFC 4648, padded)", "data");
    } else {
        int pad = (dlen >= 1 && data[dlen - 1] == '=') + (dlen >= 2 && data[dlen - 2] == '=');
        long long bytes = n - pad;
        char epoch[24], off[24];
        const char *id = report_job(req, body, epoch, sizeof(epoch));
        if (id) {
            snprintf(off, sizeof(off), "%lld", (long long)offset);
            struct app *app = http_req_app(req);
            const struct http_principal *p = http_req_principal(req);
            const char *pp[] = {id, epoch, stream, off, data, p->subject};
            PGresult *res = NULL;
            int r = store_exec_once(app->store, p->tenant_id, &q_log_chunk, pp, &res);
            if (r < 0) {
                http_reply_error(req, r, "storing the output");
            } else {
                bool ok = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
                bool exists = strcmp(PQgetvalue(res, 0, 1), "1") == 0;
                PQclear(res);
                if (!exists)
                    http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
                else if (!ok)
                    stale(req);
                else
                    http_reply_json(
                        req, 200, json_pack("{s:I}", "next_offset", (json_int_t)(offset + bytes)));
            }
        }
    }
    json_decref(body);
}

void api_agent_job_result(struct http_req *req)
{
    static const struct jsonv_field fields[] = {
        {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
        {"exit_code", JSONV_INT, JSONV_NULLABLE, -1, 255},
        {"signal", JSONV_INT, 0, 0, 128},
        {"timed_out", JSONV_BOOL, 0, 0, 0},
        {"cancelled", JSONV_BOOL, 0, 0, 0},
        {"error", JSONV_STRING, JSONV_NULLABLE, 0, 4096},
        {"result", JSONV_ANY, JSONV_NULLABLE, 0, 0},
    };
    json_t *body = NULL;
    if (http_req_json(req, fields, ELEMENTSOF(fields), &body) < 0)
        return;
    char epoch[24], code[16] = "";
    const char *id = report_job(req, body, epoch, sizeof(epoch));
    if (!id) {
        json_decref(body);
        return;
    }
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
    char *result_text =
        result && !json_is_null(result) ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (result_text && strlen(result_text) > 1048576) {
        free(result_text);
        json_decref(body);
        http_reply_problem(req, PROBLEM_VALIDATION, "the result is at most 1 MiB of JSON",
                           "result");
        return;
    }
    char err[4200] = "";
    const char *e = api_json_str(body, "error");
    if (e)
        snprintf(err, sizeof(err), "%s", e);
    else if (timed_out)
        snprintf(err, sizeof(err), "the job ran past its timeout and was killed");
    else if (sig)
        snprintf(err, sizeof(err), "the job was killed by signal %lld", (long long)sig);
    struct app *app = http_req_app(req);
    const struct http_principal *p = http_req_principal(req);
    const char *pp[] = {
        id, epoch, p->subject, outcome, code[0] ? code : NULL, err[0] ? err : NULL, result_text};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, p->tenant_id, &q_result, pp, &res);
    free(result_text);
    json_decref(body);
    if (r < 0) {
        http_reply_error(req, r, "recording the result");
        return;
    }
    if (r == 0 || PQgetisnull(res, 0, 2)) {
        PQclear(res);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such job", NULL);
        return;
    }
    bool ended = !PQgetisnull(res, 0, 0);
    bool repeat = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    char status[16];
    snprintf(status, sizeof(status), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    if (!ended && !repeat) {
        stale(req);
        return;
    }
    log_info("op=job.result job=%s epoch=%s agent=%s outcome=%s status=%s", id, epoch, p->subject,
             outcome, status);
    if (ended)
        gateway_kick_dispatch(app->gw); /* a slot is free */
    http_reply_json(req, 200, json_pack("{s:s}", "status", status));
}
