#include <criterion/criterion.h>
#include <string.h>

#include "proto/problem.h"

Test(problem, validation_names_field)
{
    json_t *p = problem_new(PROBLEM_VALIDATION, "must be 1 to 64 bytes", "name");
    cr_assert_not_null(p);
    cr_assert_str_eq(json_string_value(json_object_get(p, "type")), "urn:orch:problem:validation");
    cr_assert_str_eq(json_string_value(json_object_get(p, "title")), "Invalid request field");
    cr_assert_eq(json_integer_value(json_object_get(p, "status")), 422);
    cr_assert_str_eq(json_string_value(json_object_get(p, "detail")), "must be 1 to 64 bytes");
    cr_assert_str_eq(json_string_value(json_object_get(p, "field")), "name");
    json_decref(p);
}

Test(problem, optional_members_omitted)
{
    json_t *p = problem_new(PROBLEM_NOT_FOUND, NULL, NULL);
    cr_assert_eq(json_object_size(p), 3);
    cr_assert_null(json_object_get(p, "detail"));
    cr_assert_null(json_object_get(p, "field"));
    json_decref(p);
}

Test(problem, every_kind_defined_with_unique_type)
{
    for (int i = 0; i < PROBLEM__COUNT; i++) {
        const struct problem_def *d = problem_def((enum problem_kind)i);
        cr_assert_not_null(d);
        cr_assert(d->status >= 400 && d->status < 600, "kind %d status %d", i, d->status);
        cr_assert(strncmp(d->type, "urn:orch:problem:", 17) == 0);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(problem_def((enum problem_kind)j)->type, d->type);
    }
    cr_assert_null(problem_def(PROBLEM__COUNT));
}

Test(problem, out_of_range_kind_is_internal)
{
    json_t *p = problem_new((enum problem_kind)999, "x", NULL);
    cr_assert_eq(json_integer_value(json_object_get(p, "status")), 500);
    json_decref(p);
}
