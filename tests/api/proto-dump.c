/* proto-dump: print proto/'s wire contracts as JSON, for the contract test
 * (test-openapi.py): every message table of the agent protocol and of the bus, the stream
 * names and report kinds, the protocol version, the agent routes, the problem types and the
 * limits. Nothing here is a second copy: all of it is read from proto/. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/agent.h"
#include "proto/bus.h"
#include "proto/problem.h"

static const char *type_name(enum jsonv_type t)
{
    switch (t) {
    case JSONV_STRING:
        return "string";
    case JSONV_INT:
        return "integer";
    case JSONV_NUMBER:
        return "number";
    case JSONV_BOOL:
        return "boolean";
    case JSONV_OBJECT:
        return "object";
    case JSONV_ARRAY:
        return "array";
    case JSONV_UUID:
        return "uuid";
    case JSONV_TIME:
        return "date-time";
    case JSONV_ANY:
        return "any";
    }
    return "?";
}

static json_t *names_of_streams(void)
{
    json_t *a = json_array();
    for (int s = 0; s < PROTO_STREAM__COUNT; s++)
        json_array_append_new(a, json_string(proto_stream_name((enum proto_stream)s)));
    return a;
}

static json_t *names_of_kinds(void)
{
    json_t *a = json_array();
    for (int k = 0; k < PROTO_REPORT__COUNT; k++)
        json_array_append_new(a, json_string(proto_report_kind_name((enum proto_report_kind)k)));
    return a;
}

/* The values a string member may take, where proto/ names them. */
static json_t *enum_of(const char *msg, const char *field)
{
    if (strcmp(msg, "LogChunk") == 0 && strcmp(field, "stream") == 0)
        return names_of_streams();
    if (strcmp(msg, "AgentSyncReport") == 0 && strcmp(field, "kind") == 0)
        return names_of_kinds();
    return NULL;
}

static json_t *message(const struct proto_message *m, const char *family)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < m->n; i++) {
        const struct jsonv_field *f = &m->fields[i];
        json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:I, s:I}", "name", f->name, "type",
                              type_name(f->type), "required", (f->flags & JSONV_REQUIRED) != 0,
                              "nullable", (f->flags & JSONV_NULLABLE) != 0, "min",
                              (json_int_t)f->min, "max", (json_int_t)f->max);
        json_t *e = enum_of(m->name, f->name);
        if (e)
            json_object_set_new(o, "enum", e);
        json_array_append_new(fields, o);
    }
    return json_pack("{s:s, s:s, s:b, s:o}", "name", m->name, "family", family, "allow_unknown",
                     m->allow_unknown, "fields", fields);
}

int main(void)
{
    json_t *messages = json_array();
    size_t n;
    const struct proto_message *const *am = proto_agent_messages(&n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(messages, message(am[i], "agent"));
    const struct proto_message *const *bm = proto_bus_messages(&n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(messages, message(bm[i], "bus"));

    json_t *problems = json_array();
    for (int k = 0; k < PROBLEM__COUNT; k++)
        json_array_append_new(problems, json_string(problem_def((enum problem_kind)k)->type));

    json_t *routes =
        json_pack("[s, s, s, s, s, s, s, s, s, s]", PROTO_AGENT_PATH_REGISTER,
                  PROTO_AGENT_PATH_SELF, PROTO_AGENT_PATH_ROTATE, PROTO_AGENT_PATH_HEARTBEAT,
                  PROTO_AGENT_PATH_ASSIGNMENTS, PROTO_AGENT_PATH_SYNC, PROTO_AGENT_PATH_PACKAGE,
                  PROTO_AGENT_PATH_STARTED, PROTO_AGENT_PATH_LOGS, PROTO_AGENT_PATH_RESULT);

    /* The limits docs/agent-protocol.md states, in its order. */
    json_t *limits = json_pack(
        "[[s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I],"
        " [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I], [s, I]]",
        "slots", (json_int_t)PROTO_SLOTS_MAX, "running", (json_int_t)PROTO_RUNNING_MAX, "packages",
        (json_int_t)PROTO_PACKAGES_LIST_MAX, "capabilities", (json_int_t)PROTO_CAPABILITIES_MAX,
        "load_keys", (json_int_t)PROTO_LOAD_KEYS_MAX, "log_chunk_bytes",
        (json_int_t)PROTO_LOG_CHUNK_MAX, "log_data_chars", (json_int_t)PROTO_LOG_DATA_MAX,
        "log_offset_max", (json_int_t)PROTO_LOG_OFFSET_MAX, "result_bytes",
        (json_int_t)PROTO_RESULT_MAX, "error_bytes", (json_int_t)PROTO_ERROR_MAX, "sync_reports",
        (json_int_t)PROTO_SYNC_MAX_REPORTS, "sync_wait_s", (json_int_t)PROTO_SYNC_MAX_WAIT_S,
        "lease_s_max", (json_int_t)PROTO_LEASE_MAX_S, "heartbeat_interval_s_max",
        (json_int_t)PROTO_HEARTBEAT_MAX_S, "package_bytes", (json_int_t)PROTO_PACKAGE_MAX_BYTES,
        "job_command_bytes", (json_int_t)PROTO_JOB_COMMAND_MAX, "job_args",
        (json_int_t)PROTO_JOB_ARGS_MAX, "job_env", (json_int_t)PROTO_JOB_ENV_MAX,
        "job_entrypoint_bytes", (json_int_t)PROTO_JOB_ENTRYPOINT_MAX, "job_timeout_ms_max",
        (json_int_t)PROTO_JOB_TIMEOUT_MAX_MS);

    json_t *doc = json_pack(
        "{s:o, s:{s:s, s:i, s:i, s:i}, s:o, s:o, s:o, s:o, s:o, s:{s:s, s:s, s:I}}", "messages",
        messages, "version", "header", PROTO_AGENT_VERSION_HEADER, "current", PROTO_AGENT_VERSION,
        "min", PROTO_AGENT_VERSION_MIN, "max", PROTO_AGENT_VERSION_MAX, "routes", routes, "streams",
        names_of_streams(), "report_kinds", names_of_kinds(), "problem_types", problems, "limits",
        limits, "bus", "jobs_queue", PROTO_BUS_JOBS_QUEUE, "gateway_queue_prefix",
        PROTO_BUS_GATEWAY_QUEUE_PREFIX, "message_max", (json_int_t)PROTO_BUS_MSG_MAX);
    if (!doc)
        return 1;
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        return 1;
    puts(text);
    free(text);
    return 0;
}
