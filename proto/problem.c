/* problem.c: the table of problem kinds (see problem.h). */
#include "proto/problem.h"

#include <stddef.h>
#include <string.h>

#define P(kind, status, slug, title) [kind] = {status, slug, "urn:orch:problem:" slug, title}

static const struct problem_def problems[PROBLEM__COUNT] = {
    P(PROBLEM_BAD_REQUEST, 400, "bad-request", "Malformed request"),
    P(PROBLEM_VALIDATION, 422, "validation", "Invalid request field"),
    P(PROBLEM_UNAUTHENTICATED, 401, "unauthenticated", "Authentication required"),
    P(PROBLEM_FORBIDDEN, 403, "forbidden", "Not allowed"),
    P(PROBLEM_NOT_FOUND, 404, "not-found", "Not found"),
    P(PROBLEM_METHOD_NOT_ALLOWED, 405, "method-not-allowed", "Method not allowed"),
    P(PROBLEM_CONFLICT, 409, "conflict", "Conflict with the current state"),
    P(PROBLEM_QUOTA_EXCEEDED, 403, "quota-exceeded", "Tenant quota exceeded"),
    P(PROBLEM_TOO_LARGE, 413, "too-large", "Request too large"),
    P(PROBLEM_UNSUPPORTED_MEDIA, 415, "unsupported-media-type", "Unsupported media type"),
    P(PROBLEM_RATE_LIMITED, 429, "rate-limited", "Too many requests"),
    P(PROBLEM_INTERNAL, 500, "internal", "Internal error"),
    P(PROBLEM_UNAVAILABLE, 503, "unavailable", "Service unavailable"),
    P(PROBLEM_UNSUPPORTED_PROTOCOL, 400, "unsupported-protocol",
      "Unsupported agent protocol version"),
    P(PROBLEM_RANGE_NOT_SATISFIABLE, 416, "range-not-satisfiable", "Range not satisfiable"),
};

const struct problem_def *problem_def(enum problem_kind kind)
{
    if ((int)kind < 0 || kind >= PROBLEM__COUNT)
        return NULL;
    return &problems[kind];
}

json_t *problem_new(enum problem_kind kind, const char *detail, const char *field)
{
    const struct problem_def *d = problem_def(kind);
    if (!d)
        d = &problems[PROBLEM_INTERNAL];
    json_t *o =
        json_pack("{s:s, s:s, s:i}", "type", d->type, "title", d->title, "status", d->status);
    if (!o)
        return NULL;
    if ((detail && json_object_set_new(o, "detail", json_string(detail)) < 0) ||
        (field && json_object_set_new(o, "field", json_string(field)) < 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int problem_kind_of(const json_t *doc)
{
    const char *type = json_string_value(json_object_get(doc, "type"));

    if (!type)
        return -1;
    for (int k = 0; k < PROBLEM__COUNT; k++)
        if (strcmp(problems[k].type, type) == 0)
            return k;
    return -1;
}
