/* jsonv.h: bounded JSON parsing and validation against a declared table (jansson).
 *
 * Input a tenant or an agent controls is parsed with jsonv_parse() (size and depth capped)
 * and checked with jsonv_check() before any code reads it, Janus style:
 *
 *     static const struct jsonv_field queue_fields[] = {
 *         {"name", JSONV_STRING, JSONV_REQUIRED, 1, 64},
 *         {"priority", JSONV_INT, 0, 0, 100},
 *         {"paused", JSONV_BOOL, 0, 0, 0},
 *     };
 *
 * Ownership: jsonv_parse() returns a new reference (caller json_decref()s it); the other
 * functions borrow.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"

/* _cleanup_json_ json_t *v = ...;   json_decref()ed when v leaves scope (json_decrefp()
 * comes with jansson) */
#define _cleanup_json_ _cleanup_(json_decrefp)

enum jsonv_type {
    JSONV_STRING, /* min/max: length in bytes (UTF-8, validated by jansson) */
    JSONV_INT,    /* min/max: value */
    JSONV_NUMBER, /* integer or real; min/max: value */
    JSONV_BOOL,
    JSONV_OBJECT, /* min/max: number of keys */
    JSONV_ARRAY,  /* min/max: number of elements */
    JSONV_UUID,   /* string in canonical UUID form */
    JSONV_TIME,   /* string in RFC 3339 form */
    JSONV_ANY,    /* any JSON value (still bounded by parse depth) */
};

#define JSONV_REQUIRED 0x1u
#define JSONV_NULLABLE 0x2u /* JSON null accepted in place of the type */

struct jsonv_field {
    const char *name;
    enum jsonv_type type;
    unsigned flags;
    int64_t min, max; /* both 0 = no bound */
};

struct jsonv_error {
    char field[128];  /* offending field ("" when the document itself is at fault) */
    char detail[256]; /* human sentence: "must be a string of 1 to 64 bytes" */
};

#define JSONV_MAX_DEPTH_DEFAULT 32

/* Parse len bytes (need not be NUL-terminated). Rejects more than max_depth nesting
 * levels, duplicate object keys, and trailing data. Returns 0 with *ret set, -EINVAL with
 * err filled (detail names line/column for syntax errors), or -ENOMEM. */
int jsonv_parse(const char *data, size_t len, size_t max_depth, json_t **ret,
                struct jsonv_error *err);

/* Check obj (must be an object) against fields. Unknown keys are rejected unless
 * allow_unknown. Returns 0 or -EINVAL with err naming the first offending field. */
int jsonv_check(const json_t *obj, const struct jsonv_field *fields, size_t n, bool allow_unknown,
                struct jsonv_error *err);

/* Depth of v (a scalar is 1). */
size_t jsonv_depth(const json_t *v);
