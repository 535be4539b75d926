/* pkgref.c: package references, versions and channel names (see pkgref.h). */
#include "server/pkgref.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

bool pkgref_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PKGREF_NAME_MAX || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
            return false;
    return true;
}

/* A numeric identifier of n digits at s: no leading zero unless it is "0". */
static bool numeric_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return n == 1 || s[0] != '0';
}

/* Dot-separated identifiers of [0-9A-Za-z-] in s[0..n); numeric ones checked by numeric_ok()
 * when strict_numbers (pre-release identifiers; build metadata may have leading zeros). */
static bool identifiers_ok(const char *s, size_t n, bool strict_numbers)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            if (!isalnum((unsigned char)s[i]) && s[i] != '-')
                return false;
            continue;
        }
        size_t len = i - start;
        if (len == 0)
            return false;
        bool all_digits = strspn(s + start, "0123456789") >= len;
        if (strict_numbers && all_digits && !numeric_ok(s + start, len))
            return false;
        start = i + 1;
    }
    return true;
}

bool pkgref_version_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 5 || n > PKGREF_VERSION_MAX)
        return false;
    size_t build = strcspn(s, "+");
    size_t pre = strcspn(s, "-");
    if (pre > build)
        pre = build;
    /* MAJOR.MINOR.PATCH in s[0..pre). */
    size_t at = 0;
    for (int k = 0; k < 3; k++) {
        size_t len = strspn(s + at, "0123456789");
        if (!numeric_ok(s + at, len) || at + len > pre)
            return false;
        at += len;
        if (k < 2) {
            if (s[at] != '.')
                return false;
            at++;
        }
    }
    if (at != pre)
        return false;
    if (pre < build && !identifiers_ok(s + pre + 1, build - pre - 1, true))
        return false;
    if (build < n && !identifiers_ok(s + build + 1, n - build - 1, false))
        return false;
    return true;
}

bool pkgref_channel_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PKGREF_CHANNEL_MAX || !islower((unsigned char)s[0]) ||
        strcmp(s, "latest") == 0)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

int pkgref_parse(const char *ref, struct pkgref *ret, char *detail, size_t dlen)
{
    const char *at = strchr(ref, '@');
    if (!at || strlen(ref) > PKGREF_MAX) {
        snprintf(detail, dlen,
                 "a package reference is name@version, name@latest, name@<channel> or "
                 "name@sha256:<64 hex digits>");
        return -EINVAL;
    }
    size_t nlen = (size_t)(at - ref);
    char name[PKGREF_NAME_MAX + 1];
    if (nlen > PKGREF_NAME_MAX) {
        snprintf(detail, dlen, "the package name is over %d characters", PKGREF_NAME_MAX);
        return -EINVAL;
    }
    memcpy(name, ref, nlen);
    name[nlen] = '\0';
    if (!pkgref_name_valid(name)) {
        snprintf(detail, dlen,
                 "the package name (before @) is 1 to 128 characters of A-Z a-z 0-9 _ . -, "
                 "starting with a letter or digit");
        return -EINVAL;
    }
    const char *sel = at + 1;
    enum pkgref_kind kind;
    if (strcmp(sel, "latest") == 0) {
        kind = PKGREF_LATEST;
    } else if (strncmp(sel, "sha256:", 7) == 0) {
        if (strlen(sel + 7) != 64 || strspn(sel + 7, "0123456789abcdef") != 64) {
            snprintf(detail, dlen, "a digest is sha256: and 64 lower-case hex digits");
            return -EINVAL;
        }
        kind = PKGREF_DIGEST;
        sel += 7;
    } else if (isdigit((unsigned char)sel[0])) {
        if (!pkgref_version_valid(sel)) {
            snprintf(detail, dlen,
                     "the version after @ is not a semantic version (MAJOR.MINOR.PATCH, "
                     "optionally -PRERELEASE and +BUILD)");
            return -EINVAL;
        }
        kind = PKGREF_VERSION;
    } else if (pkgref_channel_valid(sel)) {
        kind = PKGREF_CHANNEL;
    } else {
        snprintf(detail, dlen,
                 "after @ comes a version (1.4.0), latest, a channel (a-z 0-9 _ -, starting "
                 "with a letter) or sha256:<64 hex digits>");
        return -EINVAL;
    }
    ret->kind = kind;
    memcpy(ret->name, name, nlen + 1);
    snprintf(ret->selector, sizeof(ret->selector), "%s", sel);
    return 0;
}
