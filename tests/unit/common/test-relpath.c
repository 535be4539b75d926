/* Tests for common/relpath.c: what may name a file inside an unpacked package. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/relpath.h"

Test(relpath, accepts_plain_relative_paths)
{
    static const char *const ok[] = {"run.sh", "bin/report", "a/b/c.d-e_f", ".hidden",
                                     "x..y",   "a/.b",       "..a"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        cr_assert(relpath_is_safe(ok[i]), "%s refused", ok[i]);
}

Test(relpath, refuses_what_could_leave_the_directory_or_needs_quoting)
{
    static const char *const bad[] = {"",      "/bin/sh", "../x", "a/../b", "a/..", "..",   ".",
                                      "a/./b", "a//b",    "a/",   "a b",    "a'b",  "a\"b", "$(id)",
                                      "a;b",   "a\\b",    "a\nb", "~/x",    "a*",   "é"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(relpath_is_safe(bad[i]), "'%s' accepted", bad[i]);
}

Test(relpath, bounds_the_length)
{
    char s[RELPATH_MAX + 2];
    memset(s, 'a', sizeof(s));
    s[RELPATH_MAX] = '\0';
    cr_assert(relpath_is_safe(s));
    s[RELPATH_MAX] = 'a';
    s[RELPATH_MAX + 1] = '\0';
    cr_assert_not(relpath_is_safe(s));
}
