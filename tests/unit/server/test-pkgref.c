/* pkgref: the syntax of package references, semantic versions and channel names. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/pkgref.h"

Test(pkgref, semantic_versions)
{
    static const char *const good[] = {"0.0.0",
                                       "1.4.0",
                                       "10.20.30",
                                       "1.0.0-rc.1",
                                       "1.0.0-alpha-a.b-c",
                                       "1.0.0+build.007",
                                       "1.0.0-0.3.7",
                                       "2.0.0-x.7.z.92+exp.sha.5114f85"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert(pkgref_version_valid(good[i]), "%s", good[i]);
    static const char *const bad[] = {"1",         "1.0",    "v1.0.0",   "01.0.0",     "1.01.0",
                                      "1.0.0-",    "1.0.0+", "1.0.0-01", "1.0.0-a..b", "1.0.0 ",
                                      "1.0.0-a_b", "-1.0.0", "1.0.0.0",  "",           "a.b.c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!pkgref_version_valid(bad[i]), "%s", bad[i]);
    char longv[80];
    memset(longv, '1', sizeof(longv));
    memcpy(longv, "1.0.0-", 6);
    longv[65] = '\0';
    cr_assert(!pkgref_version_valid(longv), "over 64 bytes");
    longv[64] = '\0';
    cr_assert(pkgref_version_valid(longv), "64 bytes");
}

Test(pkgref, channel_names)
{
    cr_assert(pkgref_channel_valid("stable"));
    cr_assert(pkgref_channel_valid("canary-2_eu"));
    cr_assert(!pkgref_channel_valid("latest"), "latest is reserved");
    cr_assert(!pkgref_channel_valid("Stable"));
    cr_assert(!pkgref_channel_valid("1stable"));
    cr_assert(!pkgref_channel_valid(""));
    cr_assert(!pkgref_channel_valid("a.b"));
}

Test(pkgref, references_by_kind)
{
    struct pkgref r;
    char detail[256];
    cr_assert_eq(pkgref_parse("tool@1.4.0", &r, detail, sizeof(detail)), 0);
    cr_assert_eq(r.kind, PKGREF_VERSION);
    cr_assert_str_eq(r.name, "tool");
    cr_assert_str_eq(r.selector, "1.4.0");
    cr_assert_eq(pkgref_parse("my.tool-x@latest", &r, detail, sizeof(detail)), 0);
    cr_assert_eq(r.kind, PKGREF_LATEST);
    cr_assert_str_eq(r.name, "my.tool-x");
    cr_assert_eq(pkgref_parse("tool@stable", &r, detail, sizeof(detail)), 0);
    cr_assert_eq(r.kind, PKGREF_CHANNEL);
    cr_assert_str_eq(r.selector, "stable");
    char ref[PKGREF_MAX + 8];
    snprintf(ref, sizeof(ref), "tool@sha256:%064d", 7);
    cr_assert_eq(pkgref_parse(ref, &r, detail, sizeof(detail)), 0);
    cr_assert_eq(r.kind, PKGREF_DIGEST);
    cr_assert_eq(strlen(r.selector), 64);
}

Test(pkgref, bad_references_say_why)
{
    static const struct {
        const char *ref, *why;
    } bad[] = {
        {"tool", "name@version"},
        {"@1.0.0", "package name"},
        {"-x@1.0.0", "package name"},
        {"tool@1.0", "semantic version"},
        {"tool@sha256:abc", "64 lower-case hex"},
        {"tool@sha256:ABCDEF0000000000000000000000000000000000000000000000000000000000",
         "64 lower-case hex"},
        {"tool@Stable", "a channel"},
        {"tool@", "a channel"},
        {"tool@a@b", "a channel"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pkgref r;
        memset(&r, 0x5a, sizeof(r));
        char detail[256] = "";
        cr_assert_eq(pkgref_parse(bad[i].ref, &r, detail, sizeof(detail)), -EINVAL, "%s",
                     bad[i].ref);
        cr_assert(strstr(detail, bad[i].why), "%s: %s", bad[i].ref, detail);
        cr_assert_eq(((unsigned char *)&r)[0], 0x5a, "untouched on failure");
    }
}
