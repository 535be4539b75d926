/* agent.c: the agent protocol's tables, encoders and decoders (see agent.h). */
#include "proto/agent.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/crypto.h"
#include "common/relpath.h"
#include "common/printf.h"
#include "proto/problem.h"

#define ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MSG(var, schema, table, unknown)                                                           \
    const struct proto_message var = {schema, table, ELEMS(table), unknown, false}

/* --- tables ------------------------------------------------------------------------------- */

static const struct jsonv_field job_epoch_fields[] = {
    {"job_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
};

/* Load figures a newer agent may add to: unknown keys are accepted (up to the heartbeat's
 * bound on the object). */
static const struct jsonv_field load_fields[] = {
    {"cpu_percent", JSONV_NUMBER, 0, 0, 100},
    {"memory_used_bytes", JSONV_INT, 0, 0, INT64_MAX},
    {"memory_available_bytes", JSONV_INT, 0, 0, INT64_MAX},
    {"disk_free_bytes", JSONV_INT, 0, 0, INT64_MAX},
};

static const struct jsonv_field heartbeat_fields[] = {
    {"status", JSONV_STRING, 0, 1, PROTO_STATUS_MAX},
    {"slots", JSONV_INT, 0, 1, PROTO_SLOTS_MAX},
    {"free_slots", JSONV_INT, 0, 0, PROTO_SLOTS_MAX},
    {"running", JSONV_ARRAY, 0, 0, PROTO_RUNNING_MAX},
    {"load", JSONV_OBJECT, 0, 0, PROTO_LOAD_KEYS_MAX},
    {"spool_bytes", JSONV_INT, 0, 0, INT64_MAX},
    {"packages", JSONV_ARRAY, 0, 0, PROTO_PACKAGES_LIST_MAX},
    {"capabilities", JSONV_OBJECT, 0, 0, PROTO_CAPABILITIES_MAX},
    {"prefetch", JSONV_ARRAY, 0, 0, PROTO_PREFETCH_MAX},
};

/* A deployment's target done on the agent (docs/packages.md, "Deploying a version"). */
static const struct jsonv_field prefetch_report_fields[] = {
    {"deployment_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"state", JSONV_STRING, JSONV_REQUIRED, 1, 16}, /* cached | failed */
    {"reason", JSONV_STRING, 0, 0, PROTO_PREFETCH_REASON_MAX},
};

/* A package the agent is to fetch into its cache for a deployment. */
static const struct jsonv_field prefetch_fields[] = {
    {"deployment_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"package_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"sha256", JSONV_STRING, JSONV_REQUIRED, PROTO_SHA256_HEX_LEN, PROTO_SHA256_HEX_LEN},
    {"size", JSONV_INT, JSONV_REQUIRED, 0, INT64_MAX},
    {"spread_ms", JSONV_INT, JSONV_REQUIRED, 0, PROTO_PREFETCH_SPREAD_MAX_MS},
};

static const struct jsonv_field heartbeat_answer_fields[] = {
    {"server_time", JSONV_TIME, JSONV_REQUIRED, 0, 0},
    {"heartbeat_interval_s", JSONV_INT, JSONV_REQUIRED, 1, PROTO_HEARTBEAT_MAX_S},
    {"lease_s", JSONV_INT, JSONV_REQUIRED, 1, PROTO_LEASE_MAX_S},
    {"cancel", JSONV_ARRAY, JSONV_REQUIRED, 0, 0},
    {"lost", JSONV_ARRAY, JSONV_REQUIRED, 0, 0},
    {"credential_expires_in_s", JSONV_INT, 0, 0, INT64_MAX},
    {"prefetch", JSONV_ARRAY, 0, 0, PROTO_PREFETCH_MAX},
};

/* What proto_assignment_encode() builds: every member is there, null when it does not apply,
 * except the package's digest and size, which only a package job has. */
static const struct jsonv_field assignment_fields[] = {
    {"job_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"attempt", JSONV_INT, JSONV_REQUIRED, 1, INT32_MAX},
    {"command", JSONV_STRING, JSONV_REQUIRED | JSONV_NULLABLE, 1, PROTO_JOB_COMMAND_MAX},
    {"args", JSONV_ARRAY, JSONV_REQUIRED, 0, PROTO_JOB_ARGS_MAX},
    {"env", JSONV_OBJECT, JSONV_REQUIRED, 0, PROTO_JOB_ENV_MAX},
    {"params", JSONV_ANY, JSONV_REQUIRED | JSONV_NULLABLE, 0, 0},
    {"package_id", JSONV_UUID, JSONV_REQUIRED | JSONV_NULLABLE, 0, 0},
    {"entrypoint", JSONV_STRING, JSONV_REQUIRED | JSONV_NULLABLE, 1, PROTO_JOB_ENTRYPOINT_MAX},
    {"package_sha256", JSONV_STRING, JSONV_NULLABLE, PROTO_SHA256_HEX_LEN, PROTO_SHA256_HEX_LEN},
    {"package_size", JSONV_INT, JSONV_NULLABLE, 0, PROTO_PACKAGE_MAX_BYTES},
    {"timeout_ms", JSONV_INT, JSONV_REQUIRED, PROTO_JOB_TIMEOUT_MIN_MS, PROTO_JOB_TIMEOUT_MAX_MS},
};

static const struct jsonv_field assignment_list_fields[] = {
    {"assignments", JSONV_ARRAY, JSONV_REQUIRED, 0, 0},
    {"lease_s", JSONV_INT, 0, 1, PROTO_LEASE_MAX_S},
    {"cancel", JSONV_ARRAY, 0, 0, 0},
};

static const struct jsonv_field sync_fields[] = {
    {"heartbeat", JSONV_OBJECT, 0, 0, 0},
    /* bounded by its own table */ {"reports", JSONV_ARRAY, 0, 0, PROTO_SYNC_MAX_REPORTS},
    {"assign", JSONV_BOOL, 0, 0, 0},
    {"wait", JSONV_INT, 0, 0, PROTO_SYNC_MAX_WAIT_S},
    {"resume", JSONV_BOOL, 0, 0, 0},
    {"holding", JSONV_ARRAY, 0, 0, PROTO_RUNNING_MAX},
};

/* The members a report has in a sync exchange besides its kind's own. */
static const struct jsonv_field sync_report_fields[] = {
    {"kind", JSONV_STRING, JSONV_REQUIRED, 0, 0}, /* one of proto_report_kind_name()s */
    {"job_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
};

static const struct jsonv_field sync_answer_fields[] = {
    {"heartbeat", JSONV_OBJECT, 0, 0, 0},
    {"reports", JSONV_ARRAY, JSONV_REQUIRED, 0, PROTO_SYNC_MAX_REPORTS},
    {"assignments", JSONV_ARRAY, JSONV_REQUIRED, 0, 0},
    {"lease_s", JSONV_INT, 0, 1, PROTO_LEASE_MAX_S},
    {"cancel", JSONV_ARRAY, 0, 0, 0},
};

/* One report's answer in a sync exchange: its route's answer plus `code`, or `problem`. */
static const struct jsonv_field report_answer_fields[] = {
    {"code", JSONV_INT, JSONV_REQUIRED, 100, 599},
    {"problem", JSONV_OBJECT, 0, 0, 0},
    {"status", JSONV_STRING, 0, 0, 0},
    {"next_offset", JSONV_INT, 0, 0, PROTO_LOG_OFFSET_MAX},
    {"dropped_bytes", JSONV_INT, 0, 0, PROTO_LOG_OFFSET_MAX},
};

static const struct jsonv_field started_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
};

static const struct jsonv_field started_answer_fields[] = {
    {"status", JSONV_STRING, JSONV_REQUIRED, 0, 0},
};

static const struct jsonv_field logs_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"stream", JSONV_STRING, JSONV_REQUIRED, 0, 0}, /* one of proto_stream_name()s */
    {"offset", JSONV_INT, JSONV_REQUIRED, 0, PROTO_LOG_OFFSET_MAX},
    {"data", JSONV_STRING, JSONV_REQUIRED, 0, PROTO_LOG_DATA_MAX},
};

static const struct jsonv_field logs_answer_fields[] = {
    {"next_offset", JSONV_INT, JSONV_REQUIRED, 0, PROTO_LOG_OFFSET_MAX},
    {"dropped_bytes", JSONV_INT, JSONV_REQUIRED, 0, PROTO_LOG_OFFSET_MAX},
};

static const struct jsonv_field result_fields[] = {
    {"epoch", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"exit_code", JSONV_INT, JSONV_NULLABLE, -1, PROTO_EXIT_CODE_MAX},
    {"signal", JSONV_INT, 0, 0, PROTO_SIGNAL_MAX},
    {"timed_out", JSONV_BOOL, 0, 0, 0},
    {"cancelled", JSONV_BOOL, 0, 0, 0},
    {"error", JSONV_STRING, JSONV_NULLABLE, 0, PROTO_ERROR_MAX},
    {"result", JSONV_ANY, JSONV_NULLABLE, 0, 0},
};

/* What the agent keeps of its document when it enrols or rotates its credential. */
static const struct jsonv_field agent_created_fields[] = {
    {"id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"tenant_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 128},
    {"credential", JSONV_STRING, JSONV_REQUIRED, 0, 0},
};

static const struct jsonv_field result_answer_fields[] = {
    {"status", JSONV_STRING, JSONV_REQUIRED, 0, 0},
};

/* What the agent sends is checked strictly (a typo is a bug to hear about); what the
 * server sends may grow members an older agent ignores. */
MSG(proto_msg_job_epoch, "JobEpoch", job_epoch_fields, false);
MSG(proto_msg_load, "HeartbeatLoad", load_fields, true);
MSG(proto_msg_heartbeat, "Heartbeat", heartbeat_fields, false);
MSG(proto_msg_heartbeat_answer, "HeartbeatAnswer", heartbeat_answer_fields, true);
MSG(proto_msg_prefetch_report, "PrefetchReport", prefetch_report_fields, false);
MSG(proto_msg_prefetch, "Prefetch", prefetch_fields, true);
MSG(proto_msg_assignment, "Assignment", assignment_fields, true);
MSG(proto_msg_assignment_list, "AssignmentList", assignment_list_fields, true);
MSG(proto_msg_sync, "AgentSync", sync_fields, false);
MSG(proto_msg_sync_report, "AgentSyncReport", sync_report_fields, true);
MSG(proto_msg_sync_answer, "AgentSyncAnswer", sync_answer_fields, true);
MSG(proto_msg_report_answer, "AgentSyncReportAnswer", report_answer_fields, true);
MSG(proto_msg_started, "JobStarted", started_fields, false);
MSG(proto_msg_started_answer, "JobStartedAnswer", started_answer_fields, true);
MSG(proto_msg_logs, "LogChunk", logs_fields, false);
MSG(proto_msg_logs_answer, "LogChunkAnswer", logs_answer_fields, true);
MSG(proto_msg_result, "JobResultReport", result_fields, false);
MSG(proto_msg_result_answer, "JobResultAnswer", result_answer_fields, true);
const struct proto_message proto_msg_agent_created = {"AgentCreated", agent_created_fields,
                                                      ELEMS(agent_created_fields), true, true};

static const struct proto_message *const messages[] = {
    &proto_msg_job_epoch,     &proto_msg_load,
    &proto_msg_heartbeat,     &proto_msg_heartbeat_answer,
    &proto_msg_assignment,    &proto_msg_assignment_list,
    &proto_msg_sync,          &proto_msg_sync_report,
    &proto_msg_sync_answer,   &proto_msg_report_answer,
    &proto_msg_started,       &proto_msg_started_answer,
    &proto_msg_logs,          &proto_msg_logs_answer,
    &proto_msg_result,        &proto_msg_result_answer,
    &proto_msg_agent_created, &proto_msg_prefetch_report,
    &proto_msg_prefetch,
};

const struct proto_message *const *proto_agent_messages(size_t *n)
{
    *n = ELEMS(messages);
    return messages;
}

int proto_check(const json_t *doc, const struct proto_message *m, struct jsonv_error *err)
{
    return jsonv_check(doc, m->fields, m->n, m->allow_unknown, err);
}

/* A valid job id into out, in lower case: ids are compared as text, so both sides spell
 * them one way. */
static void job_id_copy(char out[ID_STR_LEN], const char *id)
{
    snprintf(out, ID_STR_LEN, "%s", id);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
}

/* err's field prefixed with prefix ("heartbeat" + "slots" = "heartbeat.slots"). */
static void err_prefix(struct jsonv_error *err, const char *fmt, ...) ORCH_PRINTF(2, 3);

static void err_prefix(struct jsonv_error *err, const char *fmt, ...)
{
    char prefix[96], field[sizeof(err->field) + sizeof(prefix)];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    snprintf(field, sizeof(field), "%s%s%s", prefix,
             err->field[0] && err->field[0] != '[' ? "." : "", err->field);
    /* Cut to fit (the field names a place in the document, the start matters most). */
    field[sizeof(err->field) - 1] = '\0';
    memcpy(err->field, field, sizeof(err->field));
}

static int fail(struct jsonv_error *err, const char *field, const char *detail)
{
    if (err) {
        snprintf(err->field, sizeof(err->field), "%s", field);
        snprintf(err->detail, sizeof(err->detail), "%s", detail);
    }
    return -EINVAL;
}

/* --- version ------------------------------------------------------------------------------ */

static void supported_text(char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (int v = PROTO_AGENT_VERSION_MIN; v <= PROTO_AGENT_VERSION_MAX && used < len; v++) {
        int n = snprintf(out + used, len - used, "%s%d", used ? ", " : "", v);
        used = n < 0 ? len : used + (size_t)n;
    }
}

int proto_agent_version_check(const char *header, int *ret, char *detail, size_t len)
{
    char supported[64], *end = NULL;
    long v = 1;

    if (header) {
        errno = 0;
        v = strtol(header, &end, 10);
        if (errno || end == header || *end != '\0' || v < 0 || v > 1000000)
            v = -1;
    }
    if (v >= PROTO_AGENT_VERSION_MIN && v <= PROTO_AGENT_VERSION_MAX) {
        if (ret)
            *ret = (int)v;
        return 0;
    }
    supported_text(supported, sizeof(supported));
    if (detail && v >= 0)
        snprintf(detail, len,
                 "this agent speaks agent protocol version %ld; this server speaks version %s: "
                 "install an orch-agent that speaks version %s",
                 v, supported, supported);
    else if (detail)
        snprintf(detail, len,
                 "the %s header must be a protocol version number; this server speaks version %s",
                 PROTO_AGENT_VERSION_HEADER, supported);
    return -EPROTONOSUPPORT;
}

json_t *proto_agent_unsupported_new(const char *detail)
{
    json_t *p = problem_new(PROBLEM_UNSUPPORTED_PROTOCOL, detail, NULL);
    json_t *list = json_array();

    if (!p || !list) {
        json_decref(p);
        json_decref(list);
        return NULL;
    }
    for (int v = PROTO_AGENT_VERSION_MIN; v <= PROTO_AGENT_VERSION_MAX; v++)
        json_array_append_new(list, json_integer(v));
    json_object_set_new(p, "supported_versions", list);
    return p;
}

bool proto_agent_unsupported_decode(const json_t *doc, int *supported, size_t max, size_t *n)
{
    size_t i, k = 0;
    json_t *v;

    if (problem_kind_of(doc) != PROBLEM_UNSUPPORTED_PROTOCOL)
        return false;
    json_array_foreach(json_object_get(doc, "supported_versions"), i, v)
    {
        if (supported && k < max && json_is_integer(v))
            supported[k++] = (int)json_integer_value(v);
    }
    if (n)
        *n = k;
    return true;
}

/* --- routes ------------------------------------------------------------------------------- */

bool proto_agent_route(const char *pattern)
{
    static const char agent[] = PROTO_AGENT_PATH_SELF;

    if (!pattern)
        return false;
    if (strcmp(pattern, PROTO_AGENT_PATH_REGISTER) == 0)
        return true;
    return strncmp(pattern, agent, sizeof(agent) - 1) == 0 &&
           (pattern[sizeof(agent) - 1] == '\0' || pattern[sizeof(agent) - 1] == '/');
}

int proto_agent_path(char *out, size_t len, const char *pattern, const char *id)
{
    const char *at = strstr(pattern, "{id}");
    int n;

    if (!at || !id)
        return -EINVAL;
    n = snprintf(out, len, "%.*s%s%s", (int)(at - pattern), pattern, id, at + 4);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* --- streams and kinds -------------------------------------------------------------------- */

static const char *const stream_names[PROTO_STREAM__COUNT] = {
    [PROTO_STREAM_STDOUT] = "stdout",
    [PROTO_STREAM_STDERR] = "stderr",
    [PROTO_STREAM_SYSTEM] = "system",
};

const char *proto_stream_name(enum proto_stream s)
{
    if ((int)s < 0 || s >= PROTO_STREAM__COUNT)
        return NULL;
    return stream_names[s];
}

int proto_stream_from_name(const char *name)
{
    for (int s = 0; name && s < PROTO_STREAM__COUNT; s++)
        if (strcmp(stream_names[s], name) == 0)
            return s;
    return -EINVAL;
}

static const struct {
    const char *name;
    const struct proto_message *msg;
} report_kinds[PROTO_REPORT__COUNT] = {
    [PROTO_REPORT_STARTED] = {"started", &proto_msg_started},
    [PROTO_REPORT_LOGS] = {"logs", &proto_msg_logs},
    [PROTO_REPORT_RESULT] = {"result", &proto_msg_result},
};

const char *proto_report_kind_name(enum proto_report_kind k)
{
    if ((int)k < 0 || k >= PROTO_REPORT__COUNT)
        return NULL;
    return report_kinds[k].name;
}

const struct proto_message *proto_report_message(enum proto_report_kind k)
{
    if ((int)k < 0 || k >= PROTO_REPORT__COUNT)
        return NULL;
    return report_kinds[k].msg;
}

/* --- job refs ----------------------------------------------------------------------------- */

json_t *proto_job_refs_encode(const struct proto_job_ref *refs, size_t n)
{
    json_t *list = json_array();

    for (size_t i = 0; list && i < n; i++) {
        json_t *e =
            json_pack("{s:s, s:I}", "job_id", refs[i].job_id, "epoch", (json_int_t)refs[i].epoch);
        if (!e || json_array_append_new(list, e) < 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

int proto_job_refs_decode(const json_t *list, struct proto_job_ref **ret, size_t *n,
                          struct jsonv_error *err)
{
    struct proto_job_ref *refs = NULL;
    size_t i, count = list ? json_array_size(list) : 0;
    json_t *e;

    *ret = NULL;
    *n = 0;
    if (list && !json_is_array(list))
        return fail(err, "", "must be an array");
    if (count == 0)
        return 0;
    refs = calloc(count, sizeof(*refs));
    if (!refs)
        return -ENOMEM;
    json_array_foreach(list, i, e)
    {
        if (proto_check(e, &proto_msg_job_epoch, err) < 0) {
            err_prefix(err, "[%zu]", i);
            free(refs);
            return -EINVAL;
        }
        job_id_copy(refs[i].job_id, json_string_value(json_object_get(e, "job_id")));
        refs[i].epoch = json_integer_value(json_object_get(e, "epoch"));
    }
    *ret = refs;
    *n = count;
    return 0;
}

/* --- heartbeat ---------------------------------------------------------------------------- */

static int set_int(json_t *o, const char *key, int64_t v)
{
    return v < 0 ? 0 : json_object_set_new(o, key, json_integer((json_int_t)v));
}

json_t *proto_heartbeat_encode(const struct proto_heartbeat *hb)
{
    _cleanup_json_ json_t *o = json_object();
    int r = 0;

    if (!o)
        return NULL;
    if (hb->status)
        r |= json_object_set_new(o, "status", json_string(hb->status));
    r |= set_int(o, "slots", hb->slots);
    r |= set_int(o, "free_slots", hb->free_slots);
    r |= json_object_set_new(o, "running", proto_job_refs_encode(hb->running, hb->nrunning));
    if (hb->has_load) {
        double cpu = hb->load.cpu_percent;
        /* A counter that went backwards between samples must not fail the heartbeat. */
        cpu = cpu < 0 || cpu != cpu ? 0 : cpu > 100 ? 100 : cpu;
        json_t *load = json_pack("{s:f}", "cpu_percent", cpu);
        if (load) {
            r |= set_int(load, "memory_used_bytes", hb->load.memory_used_bytes);
            r |= set_int(load, "memory_available_bytes", hb->load.memory_available_bytes);
            r |= set_int(load, "disk_free_bytes", hb->load.disk_free_bytes);
        }
        r |= json_object_set_new(o, "load", load);
    }
    r |= set_int(o, "spool_bytes", hb->spool_bytes);
    if (hb->packages)
        r |= json_object_set(o, "packages", hb->packages);
    if (hb->capabilities)
        r |= json_object_set(o, "capabilities", hb->capabilities);
    if (r)
        return NULL;
    return TAKE_PTR(o);
}

static int64_t get_int(const json_t *o, const char *key, int64_t absent)
{
    const json_t *v = json_object_get(o, key);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : absent;
}

/* The package digests of a heartbeat: 64 lower-case hex digits each. */
static int packages_check(const json_t *list, struct jsonv_error *err)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        if (!s || strlen(s) != PROTO_SHA256_HEX_LEN ||
            strspn(s, "0123456789abcdef") != PROTO_SHA256_HEX_LEN)
            return fail(err, "packages", "must be SHA-256 digests in lower-case hex");
    }
    return 0;
}

/* Each entry of list (may be NULL) against m; errors name "<what>[i].<field>". */
static int prefetch_items_check(const json_t *list, const struct proto_message *m, const char *what,
                                struct jsonv_error *err)
{
    size_t i;
    const json_t *it;
    json_array_foreach(list, i, it)
    {
        if (proto_check(it, m, err) < 0) {
            char pre[48];
            snprintf(pre, sizeof(pre), "%s[%zu]", what, i);
            err_prefix(err, "%s", pre);
            return -EINVAL;
        }
        const char *st = json_string_value(json_object_get(it, "state"));
        if (m == &proto_msg_prefetch_report && strcmp(st, "cached") != 0 &&
            strcmp(st, "failed") != 0) {
            char f[48];
            snprintf(f, sizeof(f), "%s[%zu].state", what, i);
            return fail(err, f, "is cached or failed");
        }
    }
    return 0;
}

int proto_heartbeat_decode(const json_t *doc, struct proto_heartbeat *ret, struct jsonv_error *err)
{
    const json_t *load;
    int r;

    memset(ret, 0, sizeof(*ret));
    ret->slots = ret->free_slots = ret->spool_bytes = -1;
    r = proto_check(doc, &proto_msg_heartbeat, err);
    if (r < 0)
        return r;
    r = packages_check(json_object_get(doc, "packages"), err);
    if (r < 0)
        return r;
    load = json_object_get(doc, "load");
    if (load && proto_check(load, &proto_msg_load, err) < 0) {
        err_prefix(err, "load");
        return -EINVAL;
    }
    r = proto_job_refs_decode(json_object_get(doc, "running"), &ret->running, &ret->nrunning, err);
    if (r < 0) {
        if (r == -EINVAL)
            err_prefix(err, "running");
        return r;
    }
    ret->has_running = json_object_get(doc, "running") != NULL;
    ret->status = json_string_value(json_object_get(doc, "status"));
    ret->slots = get_int(doc, "slots", -1);
    ret->free_slots = get_int(doc, "free_slots", -1);
    ret->spool_bytes = get_int(doc, "spool_bytes", -1);
    if (load) {
        const json_t *cpu = json_object_get(load, "cpu_percent");
        ret->has_load = true;
        ret->load.cpu_percent = json_is_number(cpu) ? json_number_value(cpu) : -1;
        ret->load.memory_used_bytes = get_int(load, "memory_used_bytes", -1);
        ret->load.memory_available_bytes = get_int(load, "memory_available_bytes", -1);
        ret->load.disk_free_bytes = get_int(load, "disk_free_bytes", -1);
    }
    ret->packages = json_object_get(doc, "packages");
    ret->capabilities = json_object_get(doc, "capabilities");
    ret->prefetch = json_object_get(doc, "prefetch");
    r = prefetch_items_check(ret->prefetch, &proto_msg_prefetch_report, "prefetch", err);
    if (r < 0)
        proto_heartbeat_clear(ret); /* nothing is left to free on failure */
    return r;
}

void proto_heartbeat_clear(struct proto_heartbeat *hb)
{
    free(hb->running);
    hb->running = NULL;
    hb->nrunning = 0;
}

json_t *proto_heartbeat_answer_encode(const struct proto_heartbeat_answer *a)
{
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:o, s:o}", "server_time", a->server_time,
                  "heartbeat_interval_s", (json_int_t)a->heartbeat_interval_s, "lease_s",
                  (json_int_t)a->lease_s, "cancel", proto_job_refs_encode(a->cancel, a->ncancel),
                  "lost", proto_job_refs_encode(a->lost, a->nlost));

    if (o && set_int(o, "credential_expires_in_s", a->credential_expires_in_s) < 0) {
        json_decref(o);
        return NULL;
    }
    if (o && a->prefetch && json_array_size(a->prefetch) > 0 &&
        json_object_set(o, "prefetch", a->prefetch) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int proto_heartbeat_answer_decode(const json_t *doc, struct proto_heartbeat_answer *ret,
                                  struct jsonv_error *err)
{
    int r;

    memset(ret, 0, sizeof(*ret));
    ret->credential_expires_in_s = -1;
    r = proto_check(doc, &proto_msg_heartbeat_answer, err);
    if (r < 0)
        return r;
    r = proto_job_refs_decode(json_object_get(doc, "cancel"), &ret->cancel, &ret->ncancel, err);
    if (r == -EINVAL)
        err_prefix(err, "cancel");
    if (r >= 0) {
        r = proto_job_refs_decode(json_object_get(doc, "lost"), &ret->lost, &ret->nlost, err);
        if (r == -EINVAL)
            err_prefix(err, "lost");
    }
    if (r < 0) {
        proto_heartbeat_answer_clear(ret);
        return r;
    }
    ret->server_time = json_string_value(json_object_get(doc, "server_time"));
    ret->heartbeat_interval_s = get_int(doc, "heartbeat_interval_s", 0);
    ret->lease_s = get_int(doc, "lease_s", 0);
    ret->credential_expires_in_s = get_int(doc, "credential_expires_in_s", -1);
    ret->prefetch = json_object_get(doc, "prefetch");
    r = prefetch_items_check(ret->prefetch, &proto_msg_prefetch, "prefetch", err);
    if (r < 0)
        proto_heartbeat_answer_clear(ret);
    return r;
}

void proto_heartbeat_answer_clear(struct proto_heartbeat_answer *a)
{
    free(a->cancel);
    free(a->lost);
    a->cancel = a->lost = NULL;
    a->ncancel = a->nlost = 0;
}

/* --- assignment --------------------------------------------------------------------------- */

/* s as a JSON string, or null when s is NULL. */
static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *proto_assignment_encode(const struct proto_assignment *a)
{
    /* Every member the table requires is there, null when it does not apply; so are the
     * package's digest and size (null without a package), as the agents in the field
     * have always received them. */
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o}", "job_id", a->job_id,
        "epoch", (json_int_t)a->epoch, "attempt", (json_int_t)a->attempt, "command",
        string_or_null(a->command), "args", a->args ? json_incref((json_t *)a->args) : json_array(),
        "env", a->env ? json_incref((json_t *)a->env) : json_object(), "params",
        a->params ? json_incref((json_t *)a->params) : json_null(), "package_id",
        string_or_null(a->package_id), "entrypoint", string_or_null(a->entrypoint), "timeout_ms",
        (json_int_t)a->timeout_ms, "package_sha256", string_or_null(a->package_sha256),
        "package_size", a->package_size < 0 ? json_null() : json_integer(a->package_size));
    return o; /* json_pack() steals its "o" references on failure too */
}

int proto_assignment_decode(const json_t *doc, struct proto_assignment *ret,
                            struct jsonv_error *err)
{
    const char *id = json_string_value(json_object_get(doc, "job_id"));
    int64_t epoch = get_int(doc, "epoch", 0);
    int r;

    memset(ret, 0, sizeof(*ret));
    ret->package_size = -1;
    if (id && id_is_valid(id) && epoch >= 1) {
        job_id_copy(ret->job_id, id);
        ret->epoch = epoch;
    }
    r = proto_check(doc, &proto_msg_assignment, err);
    if (r < 0)
        return r;
    ret->attempt = get_int(doc, "attempt", 0);
    ret->command = json_string_value(json_object_get(doc, "command"));
    ret->args = json_object_get(doc, "args");
    ret->env = json_object_get(doc, "env");
    ret->params = json_object_get(doc, "params");
    ret->package_id = json_string_value(json_object_get(doc, "package_id"));
    ret->entrypoint = json_string_value(json_object_get(doc, "entrypoint"));
    ret->package_sha256 = json_string_value(json_object_get(doc, "package_sha256"));
    ret->package_size = get_int(doc, "package_size", -1);
    ret->timeout_ms = get_int(doc, "timeout_ms", 0);
    if (!ret->package_id && !ret->command)
        return fail(err, "command", "neither a command nor a package");
    if (ret->package_id &&
        (!ret->package_sha256 ||
         strspn(ret->package_sha256, "0123456789abcdef") != PROTO_SHA256_HEX_LEN))
        return fail(err, "package_sha256", "a package needs its SHA-256 in lower-case hex");
    if (ret->package_id && (!ret->entrypoint || !relpath_is_safe(ret->entrypoint)))
        return fail(err, "entrypoint", "a package needs a safe relative entrypoint");
    return proto_job_args_env_check(ret->args, ret->env, err);
}

int proto_job_args_env_check(const json_t *args, const json_t *env, struct jsonv_error *err)
{
    size_t i;
    const char *k;
    json_t *v;

    json_array_foreach(args, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) > PROTO_JOB_ARG_MAX) {
            if (err) {
                snprintf(err->field, sizeof(err->field), "args[%zu]", i);
                snprintf(err->detail, sizeof(err->detail),
                         "arguments are strings of at most %d bytes", PROTO_JOB_ARG_MAX);
            }
            return -EINVAL;
        }
    }
    json_object_foreach((json_t *)env, k, v)
    {
        bool ok =
            (isalpha((unsigned char)k[0]) || k[0] == '_') && strlen(k) <= PROTO_JOB_ENV_NAME_MAX;
        for (const char *p = k; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '_';
        if (!ok || !json_is_string(v) || json_string_length(v) > PROTO_JOB_ENV_VALUE_MAX) {
            if (err) {
                snprintf(err->field, sizeof(err->field), "env.%.64s", k);
                snprintf(err->detail, sizeof(err->detail),
                         "variables are [A-Za-z_][A-Za-z0-9_]* (at most %d bytes) with string "
                         "values of at most %d bytes",
                         PROTO_JOB_ENV_NAME_MAX, PROTO_JOB_ENV_VALUE_MAX);
            }
            return -EINVAL;
        }
    }
    return 0;
}

/* Whether every number in v is below 2^63 in magnitude. */
static bool numbers_in_range(const json_t *v)
{
    size_t i;
    const char *k;
    json_t *e;
    if (json_is_real(v)) {
        double x = json_real_value(v);
        return x < 9223372036854775808.0 && x > -9223372036854775808.0;
    }
    json_array_foreach((json_t *)v, i, e)
    {
        if (!numbers_in_range(e))
            return false;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        if (!numbers_in_range(e))
            return false;
    }
    return true;
}

int proto_job_params_check(const json_t *params, struct jsonv_error *err)
{
    if (!params)
        return 0;
    char *t = json_dumps(params, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = t ? strlen(t) : SIZE_MAX;
    free(t);
    if (n <= PROTO_JOB_PARAMS_MAX && numbers_in_range(params))
        return 0;
    if (err) {
        snprintf(err->field, sizeof(err->field), "params");
        if (n > PROTO_JOB_PARAMS_MAX)
            snprintf(err->detail, sizeof(err->detail),
                     "params are at most %d bytes of compact JSON", PROTO_JOB_PARAMS_MAX);
        else
            snprintf(err->detail, sizeof(err->detail),
                     "numbers in params are below 2^63 in magnitude");
    }
    return -EINVAL;
}

/* --- reports ------------------------------------------------------------------------------ */

/* A report's body with, in a sync exchange, its kind and job id. Takes o. */
static json_t *report_wrap(json_t *o, enum proto_report_kind kind, const char *job_id)
{
    if (o && job_id &&
        (json_object_set_new(o, "kind", json_string(report_kinds[kind].name)) < 0 ||
         json_object_set_new(o, "job_id", json_string(job_id)) < 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *proto_started_encode(const char *job_id, int64_t epoch)
{
    return report_wrap(json_pack("{s:I}", "epoch", (json_int_t)epoch), PROTO_REPORT_STARTED,
                       job_id);
}

json_t *proto_logs_encode(const char *job_id, int64_t epoch, enum proto_stream stream,
                          int64_t offset, const void *data, size_t len)
{
    _cleanup_free_ char *b64 = NULL;
    const char *name = proto_stream_name(stream);
    size_t b64len = base64_encoded_len(len) + 1;

    if (!name || len > PROTO_LOG_CHUNK_MAX)
        return NULL;
    b64 = malloc(b64len);
    if (!b64)
        return NULL;
    if (base64_encode(data ? data : (const void *)"", len, b64, b64len) < 0)
        return NULL;
    return report_wrap(json_pack("{s:I, s:s, s:I, s:s}", "epoch", (json_int_t)epoch, "stream", name,
                                 "offset", (json_int_t)offset, "data", (const char *)b64),
                       PROTO_REPORT_LOGS, job_id);
}

json_t *proto_result_encode(const char *job_id, int64_t epoch, const struct proto_result *r)
{
    json_t *o = json_pack("{s:I, s:o, s:i, s:b, s:b, s:o}", "epoch", (json_int_t)epoch, "exit_code",
                          r->exit_code_null ? json_null() : json_integer(r->exit_code), "signal",
                          r->signal, "timed_out", r->timed_out, "cancelled", r->cancelled, "error",
                          r->error ? json_string(r->error) : json_null());

    if (o && r->result && json_object_set(o, "result", r->result) < 0) {
        json_decref(o);
        return NULL;
    }
    return report_wrap(o, PROTO_REPORT_RESULT, job_id);
}

void proto_result_from_flags(uint32_t f, int exit_code, struct proto_result *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->exit_code = exit_code;
    ret->signal = (int)((f >> PROTO_RES_SIGNAL_SHIFT) & PROTO_RES_SIGNAL_MASK);
    ret->timed_out = (f & PROTO_RES_TIMED_OUT) != 0;
    ret->cancelled = (f & PROTO_RES_CANCELLED) != 0;
    ret->error = f & PROTO_RES_RESTARTED        ? "agent restarted"
                 : f & PROTO_RES_SETUP_FAILED   ? "the agent could not set up the job"
                 : f & PROTO_RES_OUTPUT_LOST    ? "the agent's spool is full: job killed"
                 : f & PROTO_RES_BAD_ASSIGNMENT ? "the agent refused an invalid assignment"
                 : f & PROTO_RES_PACKAGE        ? "the agent could not fetch or unpack the package "
                                                  "(see the job's stderr)"
                 : f & PROTO_RES_LEASE_LAPSED   ? "the agent could not reach the server for "
                                                  "longer than the lease allows: job killed"
                                                : NULL;
}

const char *proto_result_outcome(const struct proto_result *r)
{
    if (r->cancelled)
        return "cancelled";
    if (r->timed_out)
        return "timeout";
    if (!r->exit_code_null && r->exit_code == 0 && r->signal == 0)
        return "succeeded";
    return "failed";
}

/* The decoded length of base64 text (RFC 4648, padded), or -1 when it is not that. */
static long long base64_decoded_len(const char *data, size_t len)
{
    _cleanup_free_ uint8_t *raw = NULL;
    int n;

    if (len % 4 != 0)
        return -1;
    if (len == 0)
        return 0;
    raw = malloc(base64_decoded_max(len));
    if (!raw)
        return -2;
    n = base64_decode(data, len, raw, base64_decoded_max(len));
    return n < 0 ? -1 : n;
}

int proto_report_decode(const json_t *doc, int kind, struct proto_report *ret,
                        struct jsonv_error *err)
{
    _cleanup_json_ json_t *body = NULL;
    const json_t *b = doc;
    int r;

    memset(ret, 0, sizeof(*ret));
    ret->result.exit_code = -1;
    ret->result.exit_code_null = true;
    if (kind < 0) {
        const char *name;

        r = proto_check(doc, &proto_msg_sync_report, err);
        if (r < 0)
            return r;
        name = json_string_value(json_object_get(doc, "kind"));
        kind = -1;
        for (int k = 0; k < PROTO_REPORT__COUNT; k++)
            if (strcmp(report_kinds[k].name, name) == 0)
                kind = k;
        if (kind < 0)
            return fail(err, "kind", "must be started, logs or result");
        ret->job_id = json_string_value(json_object_get(doc, "job_id"));
        /* The kind's own members are checked as on its route: kind and job_id belong to
         * the exchange. */
        body = json_copy((json_t *)doc);
        if (!body)
            return -ENOMEM;
        json_object_del(body, "kind");
        json_object_del(body, "job_id");
        b = body;
    } else if (kind >= PROTO_REPORT__COUNT) {
        return fail(err, "kind", "must be started, logs or result");
    }
    ret->kind = (enum proto_report_kind)kind;
    r = proto_check(b, report_kinds[kind].msg, err);
    if (r < 0)
        return r;
    ret->epoch = get_int(doc, "epoch", 0);
    if (kind == PROTO_REPORT_LOGS) {
        const json_t *data = json_object_get(doc, "data");
        int s = proto_stream_from_name(json_string_value(json_object_get(doc, "stream")));
        long long n;

        if (s < 0)
            return fail(err, "stream", "must be stdout, stderr or system");
        ret->stream = (enum proto_stream)s;
        ret->offset = get_int(doc, "offset", 0);
        ret->data = json_string_value(data);
        ret->data_len = json_string_length(data);
        n = base64_decoded_len(ret->data, ret->data_len);
        if (n == -2)
            return -ENOMEM;
        if (n < 0)
            return fail(err, "data", "must be base64 (RFC 4648, padded)");
        /* offset <= PROTO_LOG_OFFSET_MAX (the table) and n <= the chunk: no overflow. */
        if (ret->offset > PROTO_LOG_OFFSET_MAX - n)
            return fail(err, "offset",
                        "offset plus the chunk's length is past the largest stream offset "
                        "(2^53 - 1)");
        ret->bytes = (size_t)n;
    } else if (kind == PROTO_REPORT_RESULT) {
        const json_t *ec = json_object_get(doc, "exit_code");
        json_t *res = json_object_get(doc, "result");

        ret->result.exit_code_null = !json_is_integer(ec);
        ret->result.exit_code = json_is_integer(ec) ? (int)json_integer_value(ec) : -1;
        ret->result.signal = (int)get_int(doc, "signal", 0);
        ret->result.timed_out = json_is_true(json_object_get(doc, "timed_out"));
        ret->result.cancelled = json_is_true(json_object_get(doc, "cancelled"));
        ret->result.error = json_string_value(json_object_get(doc, "error"));
        ret->result.result = json_is_null(res) ? NULL : res;
        if (ret->result.result) {
            _cleanup_free_ char *text =
                json_dumps(ret->result.result, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!text)
                return -ENOMEM;
            if (strlen(text) > PROTO_RESULT_MAX)
                return fail(err, "result", "the result is at most 1 MiB of JSON");
        }
    }
    return 0;
}

/* --- sync --------------------------------------------------------------------------------- */

json_t *proto_sync_encode(json_t *heartbeat, json_t *reports, bool assign, int64_t wait_s,
                          bool resume, const struct proto_job_ref *holding, size_t nholding)
{
    json_t *o = json_object();
    int r = 0;

    if (!o) {
        json_decref(heartbeat);
        json_decref(reports);
        return NULL;
    }
    if (heartbeat)
        r |= json_object_set_new(o, "heartbeat", heartbeat);
    if (reports)
        r |= json_object_set_new(o, "reports", reports);
    r |= json_object_set_new(o, "assign", json_boolean(assign));
    r |= json_object_set_new(o, "wait", json_integer((json_int_t)wait_s));
    if (resume)
        r |= json_object_set_new(o, "resume", json_true());
    if (nholding > 0)
        r |= json_object_set_new(o, "holding", proto_job_refs_encode(holding, nholding));
    if (r) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int proto_sync_decode(const json_t *doc, struct proto_sync *ret, struct jsonv_error *err)
{
    const json_t *hb;
    int r;

    memset(ret, 0, sizeof(*ret));
    r = proto_check(doc, &proto_msg_sync, err);
    if (r < 0)
        return r;
    hb = json_object_get(doc, "heartbeat");
    if (hb) {
        r = proto_heartbeat_decode(hb, &ret->heartbeat, err);
        if (r < 0) {
            if (r == -EINVAL)
                err_prefix(err, "heartbeat");
            return r;
        }
        ret->has_heartbeat = true;
    }
    ret->reports = json_object_get(doc, "reports");
    ret->assign = json_is_true(json_object_get(doc, "assign"));
    ret->wait_s = get_int(doc, "wait", 0);
    ret->resume = json_is_true(json_object_get(doc, "resume"));
    r = proto_job_refs_decode(json_object_get(doc, "holding"), &ret->holding, &ret->nholding, err);
    if (r < 0) {
        if (r == -EINVAL)
            err_prefix(err, "holding");
        proto_sync_clear(ret);
        return r;
    }
    return 0;
}

void proto_sync_clear(struct proto_sync *s)
{
    proto_heartbeat_clear(&s->heartbeat);
    s->has_heartbeat = false;
    free(s->holding);
    s->holding = NULL;
    s->nholding = 0;
}

void proto_report_answer_decode(const json_t *doc, struct proto_report_answer *ret)
{
    const json_t *p;

    memset(ret, 0, sizeof(*ret));
    ret->next_offset = ret->dropped_bytes = ret->problem_next_offset = -1;
    if (!doc || proto_check(doc, &proto_msg_report_answer, NULL) < 0)
        return;
    ret->code = (int)get_int(doc, "code", 0);
    ret->status = json_string_value(json_object_get(doc, "status"));
    ret->next_offset = get_int(doc, "next_offset", -1);
    ret->dropped_bytes = get_int(doc, "dropped_bytes", -1);
    p = json_object_get(doc, "problem");
    ret->problem_type = json_string_value(json_object_get(p, "type"));
    ret->detail = json_string_value(json_object_get(p, "detail"));
    ret->reason = json_string_value(json_object_get(p, "reason"));
    ret->problem_next_offset = get_int(p, "next_offset", -1);
}

int proto_sync_answer_decode(const json_t *doc, struct proto_sync_answer *ret,
                             struct jsonv_error *err)
{
    int r;

    memset(ret, 0, sizeof(*ret));
    /* An answer to GET /agent/assignments has no reports: the AssignmentList table. */
    r = proto_check(
        doc, json_object_get(doc, "reports") ? &proto_msg_sync_answer : &proto_msg_assignment_list,
        err);
    if (r < 0)
        return r;
    r = proto_job_refs_decode(json_object_get(doc, "cancel"), &ret->cancel, &ret->ncancel, err);
    if (r < 0) {
        if (r == -EINVAL)
            err_prefix(err, "cancel");
        return r;
    }
    ret->heartbeat = json_object_get(doc, "heartbeat");
    ret->reports = json_object_get(doc, "reports");
    ret->assignments = json_object_get(doc, "assignments");
    ret->lease_s = get_int(doc, "lease_s", 0);
    return 0;
}

void proto_sync_answer_clear(struct proto_sync_answer *a)
{
    free(a->cancel);
    a->cancel = NULL;
    a->ncancel = 0;
}

/* --- enrolment and credential rotation ---------------------------------------------------- */

int proto_agent_created_decode(const json_t *doc, struct proto_agent_created *ret,
                               struct jsonv_error *err)
{
    int r = proto_check(doc, &proto_msg_agent_created, err);
    if (r < 0)
        return r;
    const char *cred = json_string_value(json_object_get(doc, "credential"));
    if (strncmp(cred, PROTO_AGENT_CREDENTIAL_PREFIX, strlen(PROTO_AGENT_CREDENTIAL_PREFIX)) != 0)
        return fail(err, "credential",
                    "is not an agent credential (" PROTO_AGENT_CREDENTIAL_PREFIX "...)");
    ret->id = json_string_value(json_object_get(doc, "id"));
    ret->tenant_id = json_string_value(json_object_get(doc, "tenant_id"));
    ret->name = json_string_value(json_object_get(doc, "name"));
    ret->credential = cred;
    return 0;
}
