/* problem.h: RFC 9457 problem details, the body of every API error
 * (Content-Type: application/problem+json).
 *
 * Each kind has a stable `type` URI (urn:orch:problem:<slug>), a fixed `title` and an
 * HTTP status; a response adds a human `detail` and, for validation errors, the offending
 * `field`. Clients match on `type`, never on `detail`.
 */
#pragma once

#include <jansson.h>

enum problem_kind {
    PROBLEM_BAD_REQUEST,           /* 400 malformed request or JSON */
    PROBLEM_VALIDATION,            /* 422 a field is missing, of the wrong type or out of bounds */
    PROBLEM_UNAUTHENTICATED,       /* 401 no, bad or expired credential */
    PROBLEM_FORBIDDEN,             /* 403 authenticated but not allowed */
    PROBLEM_NOT_FOUND,             /* 404 */
    PROBLEM_METHOD_NOT_ALLOWED,    /* 405 */
    PROBLEM_CONFLICT,              /* 409 already exists, or state does not allow it */
    PROBLEM_QUOTA_EXCEEDED,        /* 403 a tier quota would be exceeded */
    PROBLEM_TOO_LARGE,             /* 413 body over the route's limit */
    PROBLEM_UNSUPPORTED_MEDIA,     /* 415 */
    PROBLEM_RATE_LIMITED,          /* 429 */
    PROBLEM_INTERNAL,              /* 500 */
    PROBLEM_UNAVAILABLE,           /* 503 a dependency is down; retry */
    PROBLEM_UNSUPPORTED_PROTOCOL,  /* 400 the agent speaks a protocol version the server does
                                    * not (proto/agent.h); `supported_versions` lists those it
                                    * does */
    PROBLEM_RANGE_NOT_SATISFIABLE, /* 416 a Range past the end of the resource */
    PROBLEM__COUNT
};

struct problem_def {
    int status;
    const char *slug;  /* "validation" */
    const char *type;  /* "urn:orch:problem:validation" */
    const char *title; /* "Invalid request field" */
};

/* The definition of kind (borrowed, static). NULL for an out-of-range kind. */
const struct problem_def *problem_def(enum problem_kind kind);

/* A new problem object {type, title, status, detail[, field]}: a new reference, caller
 * json_decref()s it. detail and field may be NULL (then omitted). NULL on ENOMEM. */
json_t *problem_new(enum problem_kind kind, const char *detail, const char *field);

/* The kind whose type doc's `type` is (doc: a problem body, borrowed, may be NULL), or -1
 * when it is none of ours. */
int problem_kind_of(const json_t *doc);
