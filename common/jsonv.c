/* jsonv.c: bounded JSON parsing and table-driven validation (jansson). */
#include "common/jsonv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
#include "common/printf.h"

static void jsonv_fail(struct jsonv_error *err, const char *field, const char *fmt, ...)
    ORCH_PRINTF(3, 4);

static void jsonv_fail(struct jsonv_error *err, const char *field, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
}

size_t jsonv_depth(const json_t *v)
{
    size_t max = 0;

    if (!v)
        return 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;

        /* json_object_foreach takes a non-const object; iteration does not modify it. */
        json_object_foreach((json_t *)v, key, child)
        {
            size_t d = jsonv_depth(child);
            if (d > max)
                max = d;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;

        json_array_foreach(v, i, child)
        {
            size_t d = jsonv_depth(child);
            if (d > max)
                max = d;
        }
    }
    return max + 1;
}

int jsonv_parse(const char *data, size_t len, size_t max_depth, json_t **ret,
                struct jsonv_error *err)
{
    json_error_t jerr;
    json_t *v;

    if (!data && len > 0) {
        jsonv_fail(err, "", "no input");
        return -EINVAL;
    }
    /* Without JSON_DISABLE_EOF_CHECK jansson itself rejects anything but whitespace after
     * the value, which is exactly the trailing-data rule we want. jansson also caps nesting
     * at 2048 levels while parsing, so the recursive depth check below is bounded. */
    v = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!v) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return -ENOMEM;
        jsonv_fail(err, "", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                   jerr.text);
        return -EINVAL;
    }
    if (max_depth == 0)
        max_depth = JSONV_MAX_DEPTH_DEFAULT;
    if (jsonv_depth(v) > max_depth) {
        json_decref(v);
        jsonv_fail(err, "", "nesting deeper than %zu levels", max_depth);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

static const struct jsonv_field *find_field(const struct jsonv_field *fields, size_t n,
                                            const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static bool has_bounds(const struct jsonv_field *f)
{
    return f->min != 0 || f->max != 0;
}

/* Upper bound of a counted type; max 0 with a non-zero min means "at least min". */
static bool within(const struct jsonv_field *f, int64_t v)
{
    if (!has_bounds(f))
        return true;
    if (v < f->min)
        return false;
    return f->max == 0 || v <= f->max;
}

/* Describe a length/count bound: "1 to 64", "at least 1". */
static void count_range(const struct jsonv_field *f, char *out, size_t len)
{
    if (f->max == 0)
        snprintf(out, len, "at least %" PRId64, f->min);
    else
        snprintf(out, len, "%" PRId64 " to %" PRId64, f->min, f->max);
}

static int check_value(const struct jsonv_field *f, const json_t *v, struct jsonv_error *err)
{
    const char *null_ok = (f->flags & JSONV_NULLABLE) ? " or null" : "";
    char range[64];

    if (json_is_null(v) && (f->flags & JSONV_NULLABLE))
        return 0;

    count_range(f, range, sizeof(range));
    switch (f->type) {
    case JSONV_STRING:
        if (!json_is_string(v) || !within(f, (int64_t)json_string_length(v))) {
            if (has_bounds(f))
                jsonv_fail(err, f->name, "must be a string of %s bytes%s", range, null_ok);
            else
                jsonv_fail(err, f->name, "must be a string%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_INT:
        /* json_int_t is long long, at least as wide as int64_t. */
        if (!json_is_integer(v) ||
            (has_bounds(f) && (json_integer_value(v) < f->min || json_integer_value(v) > f->max))) {
            if (has_bounds(f))
                jsonv_fail(err, f->name, "must be an integer between %" PRId64 " and %" PRId64 "%s",
                           f->min, f->max, null_ok);
            else
                jsonv_fail(err, f->name, "must be an integer%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_NUMBER:
        if (!json_is_number(v) || (has_bounds(f) && (json_number_value(v) < (double)f->min ||
                                                     json_number_value(v) > (double)f->max))) {
            if (has_bounds(f))
                jsonv_fail(err, f->name, "must be a number between %" PRId64 " and %" PRId64 "%s",
                           f->min, f->max, null_ok);
            else
                jsonv_fail(err, f->name, "must be a number%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_BOOL:
        if (!json_is_boolean(v)) {
            jsonv_fail(err, f->name, "must be a boolean%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_OBJECT:
        if (!json_is_object(v) || !within(f, (int64_t)json_object_size(v))) {
            if (has_bounds(f))
                jsonv_fail(err, f->name, "must be an object with %s keys%s", range, null_ok);
            else
                jsonv_fail(err, f->name, "must be an object%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_ARRAY:
        if (!json_is_array(v) || !within(f, (int64_t)json_array_size(v))) {
            if (has_bounds(f))
                jsonv_fail(err, f->name, "must be an array of %s elements%s", range, null_ok);
            else
                jsonv_fail(err, f->name, "must be an array%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_UUID:
        if (!json_is_string(v) || !id_is_valid(json_string_value(v))) {
            jsonv_fail(err, f->name, "must be a UUID string%s", null_ok);
            return -EINVAL;
        }
        return 0;
    case JSONV_TIME: {
        int64_t ms;

        if (!json_is_string(v) || clock_parse_rfc3339(json_string_value(v), &ms) < 0) {
            jsonv_fail(err, f->name, "must be an RFC 3339 timestamp string%s", null_ok);
            return -EINVAL;
        }
        return 0;
    }
    case JSONV_ANY:
        return 0;
    }
    jsonv_fail(err, f->name, "has an unsupported type in the schema");
    return -EINVAL;
}

int jsonv_check(const json_t *obj, const struct jsonv_field *fields, size_t n, bool allow_unknown,
                struct jsonv_error *err)
{
    const char *key;
    json_t *v;
    int r;

    if (!json_is_object(obj)) {
        jsonv_fail(err, "", "must be a JSON object");
        return -EINVAL;
    }
    /* Report in document order for unknown keys, then in table order for the rest, so the
     * first offending field is stable. */
    if (!allow_unknown) {
        json_object_foreach((json_t *)obj, key, v)
        {
            if (!find_field(fields, n, key)) {
                jsonv_fail(err, key, "unknown field");
                return -EINVAL;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct jsonv_field *f = &fields[i];

        v = json_object_get(obj, f->name);
        if (!v) {
            if (f->flags & JSONV_REQUIRED) {
                jsonv_fail(err, f->name, "is required");
                return -EINVAL;
            }
            continue;
        }
        r = check_value(f, v, err);
        if (r < 0)
            return r;
    }
    return 0;
}
