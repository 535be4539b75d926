/* bus.c: the bus messages' tables, encoders and decoders (see bus.h). */
#include "proto/bus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

#define ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct jsonv_field jobs_submitted_fields[] = {
    {"type", JSONV_STRING, JSONV_REQUIRED, 1, 64},
    {"tenant_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
    {"job_ids", JSONV_ARRAY, JSONV_REQUIRED, 1, PROTO_BUS_JOBS_MAX},
};

static const struct jsonv_field agent_wake_fields[] = {
    {"type", JSONV_STRING, 0, 1, 64},
    {"agent_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
};

static const struct jsonv_field auth_invalidate_fields[] = {
    {"type", JSONV_STRING, JSONV_REQUIRED, 1, 64},
    {"key_id", JSONV_UUID, 0, 0, 0},
    {"tenant_id", JSONV_UUID, 0, 0, 0},
    {"agent_id", JSONV_UUID, 0, 0, 0},
};

const struct proto_message proto_bus_msg_auth_invalidate = {
    "BusAuthInvalidate", auth_invalidate_fields, ELEMS(auth_invalidate_fields), true, false};
const struct proto_message proto_bus_msg_jobs_submitted = {
    "BusJobsSubmitted", jobs_submitted_fields, ELEMS(jobs_submitted_fields), true, false};
const struct proto_message proto_bus_msg_agent_wake = {"BusAgentWake", agent_wake_fields,
                                                       ELEMS(agent_wake_fields), true, false};

static const struct proto_message *const messages[] = {
    &proto_bus_msg_jobs_submitted,
    &proto_bus_msg_agent_wake,
    &proto_bus_msg_auth_invalidate,
};

const struct proto_message *const *proto_bus_messages(size_t *n)
{
    *n = ELEMS(messages);
    return messages;
}

int proto_bus_gateway_queue(char *out, size_t len, const char *node)
{
    int n;

    if (!node || !node[0])
        return -EINVAL;
    n = snprintf(out, len, "%s%s", PROTO_BUS_GATEWAY_QUEUE_PREFIX, node);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

static int fail(struct jsonv_error *err, const char *field, const char *detail)
{
    if (err) {
        snprintf(err->field, sizeof(err->field), "%s", field);
        snprintf(err->detail, sizeof(err->detail), "%s", detail);
    }
    return -EINVAL;
}

/* Parse body as an object of message m, of type type (absent accepted when
 * type_optional). */
static int parse(const char *body, size_t len, const struct proto_message *m, const char *type,
                 bool type_optional, json_t **ret, struct jsonv_error *err)
{
    json_t *doc = NULL;
    const char *t;
    int r;

    if (len > PROTO_BUS_MSG_MAX)
        return fail(err, "", "message too large");
    r = jsonv_parse(body, len, 4, &doc, err);
    if (r < 0)
        return r;
    r = proto_check(doc, m, err);
    t = json_string_value(json_object_get(doc, "type"));
    if (r == 0 && (t ? strcmp(t, type) != 0 : !type_optional))
        r = fail(err, "type", "is not this queue's message type");
    if (r < 0) {
        json_decref(doc);
        return r;
    }
    *ret = doc;
    return 0;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F')
            *s = (char)(*s - 'A' + 'a');
}

static char *dump(json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    return text;
}

char *proto_bus_jobs_submitted_encode(const char *tenant_id, const json_t *job_ids)
{
    size_t n = json_array_size(job_ids);

    if (!tenant_id || !id_is_valid(tenant_id) || n == 0 || n > PROTO_BUS_JOBS_MAX)
        return NULL;
    return dump(json_pack("{s:s, s:s, s:O}", "type", PROTO_BUS_TYPE_JOBS_SUBMITTED, "tenant_id",
                          tenant_id, "job_ids", (json_t *)job_ids));
}

int proto_bus_jobs_submitted_decode(const char *body, size_t len,
                                    struct proto_bus_jobs_submitted *ret, struct jsonv_error *err)
{
    _cleanup_json_ json_t *doc = NULL;
    const json_t *ids;
    size_t i;
    json_t *v;
    int r;

    memset(ret, 0, sizeof(*ret));
    r = parse(body, len, &proto_bus_msg_jobs_submitted, PROTO_BUS_TYPE_JOBS_SUBMITTED, false, &doc,
              err);
    if (r < 0)
        return r;
    ids = json_object_get(doc, "job_ids");
    ret->job_ids = calloc(json_array_size(ids), sizeof(*ret->job_ids));
    if (!ret->job_ids)
        return -ENOMEM;
    json_array_foreach(ids, i, v)
    {
        const char *id = json_string_value(v);
        if (!id || !id_is_valid(id)) {
            char field[32];
            snprintf(field, sizeof(field), "job_ids[%zu]", i);
            proto_bus_jobs_submitted_clear(ret);
            return fail(err, field, "must be a UUID string");
        }
        snprintf(ret->job_ids[i], sizeof(ret->job_ids[i]), "%s", id);
        lower(ret->job_ids[i]);
    }
    ret->njobs = json_array_size(ids);
    snprintf(ret->tenant_id, sizeof(ret->tenant_id), "%s",
             json_string_value(json_object_get(doc, "tenant_id")));
    lower(ret->tenant_id);
    return 0;
}

void proto_bus_jobs_submitted_clear(struct proto_bus_jobs_submitted *m)
{
    free(m->job_ids);
    m->job_ids = NULL;
    m->njobs = 0;
}

char *proto_bus_agent_wake_encode(const char *agent_id)
{
    if (!agent_id || !id_is_valid(agent_id))
        return NULL;
    return dump(json_pack("{s:s, s:s}", "type", PROTO_BUS_TYPE_AGENT_WAKE, "agent_id", agent_id));
}

int proto_bus_agent_wake_decode(const char *body, size_t len, struct proto_bus_agent_wake *ret,
                                struct jsonv_error *err)
{
    _cleanup_json_ json_t *doc = NULL;
    int r;

    memset(ret, 0, sizeof(*ret));
    r = parse(body, len, &proto_bus_msg_agent_wake, PROTO_BUS_TYPE_AGENT_WAKE, true, &doc, err);
    if (r < 0)
        return r;
    snprintf(ret->agent_id, sizeof(ret->agent_id), "%s",
             json_string_value(json_object_get(doc, "agent_id")));
    lower(ret->agent_id);
    return 0;
}

char *proto_bus_auth_invalidate_encode(const char *key_id, const char *tenant_id,
                                       const char *agent_id)
{
    if ((!key_id && !tenant_id && !agent_id) || (key_id && !id_is_valid(key_id)) ||
        (tenant_id && !id_is_valid(tenant_id)) || (agent_id && !id_is_valid(agent_id)))
        return NULL;
    json_t *doc = json_pack("{s:s}", "type", PROTO_BUS_TYPE_AUTH_INVALIDATE);
    if (doc && key_id)
        json_object_set_new(doc, "key_id", json_string(key_id));
    if (doc && tenant_id)
        json_object_set_new(doc, "tenant_id", json_string(tenant_id));
    if (doc && agent_id)
        json_object_set_new(doc, "agent_id", json_string(agent_id));
    return dump(doc);
}

int proto_bus_auth_invalidate_decode(const char *body, size_t len,
                                     struct proto_bus_auth_invalidate *ret, struct jsonv_error *err)
{
    _cleanup_json_ json_t *doc = NULL;
    int r;

    memset(ret, 0, sizeof(*ret));
    r = parse(body, len, &proto_bus_msg_auth_invalidate, PROTO_BUS_TYPE_AUTH_INVALIDATE, false,
              &doc, err);
    if (r < 0)
        return r;
    const char *k = json_string_value(json_object_get(doc, "key_id"));
    const char *t = json_string_value(json_object_get(doc, "tenant_id"));
    const char *a = json_string_value(json_object_get(doc, "agent_id"));
    if (!k && !t && !a)
        return fail(err, "key_id", "key_id, tenant_id or agent_id is required");
    snprintf(ret->key_id, sizeof(ret->key_id), "%s", k ? k : "");
    snprintf(ret->tenant_id, sizeof(ret->tenant_id), "%s", t ? t : "");
    snprintf(ret->agent_id, sizeof(ret->agent_id), "%s", a ? a : "");
    lower(ret->key_id);
    lower(ret->tenant_id);
    lower(ret->agent_id);
    return 0;
}
