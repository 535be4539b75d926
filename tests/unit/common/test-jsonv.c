/* Tests for common/jsonv.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonv.h"

static json_t *parse_ok(const char *s)
{
    struct jsonv_error err = {{0}, {0}};
    json_t *v = NULL;

    cr_assert_eq(jsonv_parse(s, strlen(s), JSONV_MAX_DEPTH_DEFAULT, &v, &err), 0, "%s: %s", s,
                 err.detail);
    cr_assert_not_null(v);
    return v;
}

static void parse_bad(const char *s, size_t depth, const char *detail_part)
{
    struct jsonv_error err = {{0}, {0}};
    json_t *v = (json_t *)0x1;

    cr_assert_eq(jsonv_parse(s, strlen(s), depth, &v, &err), -EINVAL, "accepted %s", s);
    cr_assert_eq(v, (json_t *)0x1, "ret untouched");
    cr_assert_str_eq(err.field, "");
    cr_assert_not_null(strstr(err.detail, detail_part), "detail '%s' lacks '%s'", err.detail,
                       detail_part);
}

Test(jsonv, parse_object)
{
    json_t *v = parse_ok("{\"a\": 1, \"b\": [true, null]}");

    cr_assert(json_is_object(v));
    cr_assert_eq(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
}

Test(jsonv, parse_not_nul_terminated)
{
    const char data[] = "{\"a\":1}GARBAGE";
    struct jsonv_error err;
    json_t *v = NULL;

    cr_assert_eq(jsonv_parse(data, 7, 0, &v, &err), 0);
    cr_assert_eq(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
}

Test(jsonv, parse_trailing_whitespace_ok)
{
    json_t *v = parse_ok("  {\"a\": 1} \n\t\r ");

    json_decref(v);
}

Test(jsonv, parse_trailing_garbage_rejected)
{
    parse_bad("{\"a\": 1} x", 32, "line 1");
    parse_bad("{\"a\": 1}{}", 32, "column");
    parse_bad("[1] [2]", 32, "invalid JSON");
}

Test(jsonv, parse_syntax_error_names_position)
{
    parse_bad("{\n\"a\": 1,\n}", 32, "line 3");
    parse_bad("", 32, "invalid JSON");
    parse_bad("{\"a\": tru}", 32, "invalid JSON");
}

Test(jsonv, parse_duplicate_keys_rejected)
{
    parse_bad("{\"a\": 1, \"a\": 2}", 32, "duplicate");
    parse_bad("{\"o\": {\"x\": 1, \"x\": 1}}", 32, "duplicate");
}

Test(jsonv, parse_depth_limit)
{
    json_t *v;

    v = parse_ok("[[[1]]]");
    cr_assert_eq(jsonv_depth(v), 4);
    json_decref(v);

    struct jsonv_error err;
    const char *s = "{\"a\": {\"b\": [1]}}"; /* depth 4 */
    cr_assert_eq(jsonv_parse(s, strlen(s), 4, &v, &err), 0);
    json_decref(v);
    parse_bad(s, 3, "nesting deeper than 3");
}

Test(jsonv, parse_default_depth_limit)
{
    char deep[2 * 40 + 1];

    memset(deep, '[', 40);
    memset(deep + 40, ']', 40);
    deep[80] = '\0';
    parse_bad(deep, 0, "nesting deeper than 32");
    deep[32] = '\0';
    memset(deep, '[', 16);
    memset(deep + 16, ']', 16);
    json_decref(parse_ok(deep));
}

Test(jsonv, parse_very_deep_input_rejected)
{
    static char deep[20001];

    /* Deeper than jansson's own parser limit: must fail cleanly, not crash. */
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    parse_bad(deep, 100000, "invalid JSON");
}

Test(jsonv, depth_of_values)
{
    json_t *v = json_integer(1);

    cr_assert_eq(jsonv_depth(v), 1);
    json_decref(v);
    v = json_object();
    cr_assert_eq(jsonv_depth(v), 1);
    json_decref(v);
    v = parse_ok("{\"a\": [], \"b\": {\"c\": {\"d\": 1}}}");
    cr_assert_eq(jsonv_depth(v), 4);
    json_decref(v);
    cr_assert_eq(jsonv_depth(NULL), 0);
}

static const struct jsonv_field queue_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 64},
    {"priority", JSONV_INT, 0, 0, 100},
    {"paused", JSONV_BOOL, 0, 0, 0},
    {"weight", JSONV_NUMBER, 0, -1, 1},
    {"labels", JSONV_OBJECT, 0, 0, 2},
    {"tags", JSONV_ARRAY, 0, 1, 3},
    {"owner", JSONV_UUID, JSONV_NULLABLE, 0, 0},
    {"not_before", JSONV_TIME, 0, 0, 0},
    {"extra", JSONV_ANY, 0, 0, 0},
    {"note", JSONV_STRING, JSONV_NULLABLE, 0, 0},
};

static int check(const char *doc, bool allow_unknown, struct jsonv_error *err)
{
    json_t *v = parse_ok(doc);
    int r;

    memset(err, 0, sizeof(*err));
    r = jsonv_check(v, queue_fields, sizeof(queue_fields) / sizeof(queue_fields[0]), allow_unknown,
                    err);
    json_decref(v);
    return r;
}

static void check_bad(const char *doc, const char *field, const char *detail)
{
    struct jsonv_error err;

    cr_assert_eq(check(doc, false, &err), -EINVAL, "accepted %s", doc);
    cr_assert_str_eq(err.field, field, "doc %s", doc);
    cr_assert_str_eq(err.detail, detail, "doc %s", doc);
}

Test(jsonv, check_valid_document)
{
    struct jsonv_error err;

    cr_assert_eq(check("{\"name\": \"q\", \"priority\": 100, \"paused\": false, \"weight\": 0.5,"
                       " \"labels\": {\"a\": \"b\"}, \"tags\": [1], "
                       "\"owner\": \"019a2b3c-4d5e-7f60-8192-a3b4c5d6e7f8\","
                       " \"not_before\": \"2026-11-22T05:35:10Z\", \"extra\": [{}],"
                       " \"note\": null}",
                       false, &err),
                 0, "%s: %s", err.field, err.detail);
    cr_assert_eq(check("{\"name\": \"q\", \"owner\": null}", false, &err), 0);
}

Test(jsonv, check_required)
{
    check_bad("{}", "name", "is required");
    check_bad("{\"priority\": 1}", "name", "is required");
}

Test(jsonv, check_unknown_field)
{
    struct jsonv_error err;

    check_bad("{\"name\": \"q\", \"prio\": 1}", "prio", "unknown field");
    cr_assert_eq(check("{\"name\": \"q\", \"prio\": 1}", true, &err), 0);
}

Test(jsonv, check_string_bounds)
{
    char doc[128];

    check_bad("{\"name\": \"\"}", "name", "must be a string of 1 to 64 bytes");
    check_bad("{\"name\": 5}", "name", "must be a string of 1 to 64 bytes");
    snprintf(doc, sizeof(doc), "{\"name\": \"%065d\"}", 0);
    check_bad(doc, "name", "must be a string of 1 to 64 bytes");
    snprintf(doc, sizeof(doc), "{\"name\": \"%064d\"}", 0);
    struct jsonv_error err;
    cr_assert_eq(check(doc, false, &err), 0, "64 bytes is the bound");
    /* Length is in bytes, not characters: 33 two-byte characters are 66 bytes. */
    check_bad("{\"name\": \"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
              "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
              "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"}",
              "name", "must be a string of 1 to 64 bytes");
    check_bad("{\"name\": \"q\", \"note\": 1}", "note", "must be a string or null");
}

Test(jsonv, check_int_bounds)
{
    struct jsonv_error err;

    check_bad("{\"name\": \"q\", \"priority\": 101}", "priority",
              "must be an integer between 0 and 100");
    check_bad("{\"name\": \"q\", \"priority\": -1}", "priority",
              "must be an integer between 0 and 100");
    check_bad("{\"name\": \"q\", \"priority\": 1.0}", "priority",
              "must be an integer between 0 and 100");
    check_bad("{\"name\": \"q\", \"priority\": \"1\"}", "priority",
              "must be an integer between 0 and 100");
    check_bad("{\"name\": \"q\", \"priority\": null}", "priority",
              "must be an integer between 0 and 100");
    cr_assert_eq(check("{\"name\": \"q\", \"priority\": 0}", false, &err), 0);
}

Test(jsonv, check_number_bounds)
{
    struct jsonv_error err;

    check_bad("{\"name\": \"q\", \"weight\": 1.5}", "weight", "must be a number between -1 and 1");
    check_bad("{\"name\": \"q\", \"weight\": \"x\"}", "weight",
              "must be a number between -1 and 1");
    cr_assert_eq(check("{\"name\": \"q\", \"weight\": -1}", false, &err), 0);
}

Test(jsonv, check_bool)
{
    check_bad("{\"name\": \"q\", \"paused\": 0}", "paused", "must be a boolean");
    check_bad("{\"name\": \"q\", \"paused\": \"true\"}", "paused", "must be a boolean");
}

Test(jsonv, check_object_and_array_bounds)
{
    check_bad("{\"name\": \"q\", \"labels\": {\"a\": 1, \"b\": 2, \"c\": 3}}", "labels",
              "must be an object with 0 to 2 keys");
    check_bad("{\"name\": \"q\", \"labels\": []}", "labels", "must be an object with 0 to 2 keys");
    check_bad("{\"name\": \"q\", \"tags\": []}", "tags", "must be an array of 1 to 3 elements");
    check_bad("{\"name\": \"q\", \"tags\": [1, 2, 3, 4]}", "tags",
              "must be an array of 1 to 3 elements");
}

Test(jsonv, check_uuid_and_time)
{
    check_bad("{\"name\": \"q\", \"owner\": \"not-a-uuid\"}", "owner",
              "must be a UUID string or null");
    check_bad("{\"name\": \"q\", \"not_before\": \"2026-02-30T00:00:00Z\"}", "not_before",
              "must be an RFC 3339 timestamp string");
    check_bad("{\"name\": \"q\", \"not_before\": 12}", "not_before",
              "must be an RFC 3339 timestamp string");
}

Test(jsonv, check_requires_object)
{
    struct jsonv_error err;
    json_t *v = json_array();

    cr_assert_eq(jsonv_check(v, queue_fields, 1, false, &err), -EINVAL);
    cr_assert_str_eq(err.field, "");
    cr_assert_str_eq(err.detail, "must be a JSON object");
    json_decref(v);
    cr_assert_eq(jsonv_check(NULL, queue_fields, 1, false, &err), -EINVAL);
}

Test(jsonv, check_long_unknown_field_truncated)
{
    struct jsonv_error err;
    char doc[400];
    char key[300];

    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    snprintf(doc, sizeof(doc), "{\"%s\": 1}", key);
    cr_assert_eq(check(doc, false, &err), -EINVAL);
    cr_assert_eq(strlen(err.field), sizeof(err.field) - 1);
    cr_assert_str_eq(err.detail, "unknown field");
}
