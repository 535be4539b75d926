/* pkgref.h: the syntax of package references, versions and channel names (pure: no I/O),
 * which the packages, jobs and schedules APIs check before anything is stored or resolved.
 * Resolution is PostgreSQL's (package_resolve(), sql/functions/45_packages.sql), in the
 * caller's tenant scope. docs/packages.md, "References and channels". */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define PKGREF_NAME_MAX    128
#define PKGREF_VERSION_MAX 64
#define PKGREF_CHANNEL_MAX 63
/* name@sha256:<64 hex>, the longest reference. */
#define PKGREF_MAX (PKGREF_NAME_MAX + 1 + 7 + 64)

enum pkgref_kind {
    PKGREF_VERSION, /* name@1.4.0: exactly this version */
    PKGREF_LATEST,  /* name@latest: the highest release (pre-releases are never latest) */
    PKGREF_CHANNEL, /* name@stable: the version the tenant's channel points at */
    PKGREF_DIGEST,  /* name@sha256:<hex>: the version of the name with these bytes */
};

struct pkgref {
    enum pkgref_kind kind;
    char name[PKGREF_NAME_MAX + 1];
    char selector[PKGREF_VERSION_MAX + 8]; /* the part after '@' (a digest: its 64 hex) */
};

/* 1 to 128 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit. */
bool pkgref_name_valid(const char *s);
/* A Semantic Versioning 2.0 version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], no leading
 * zeros in numbers), at most PKGREF_VERSION_MAX bytes. */
bool pkgref_version_valid(const char *s);
/* A channel name: a lower-case letter, then up to 62 of a-z 0-9 _ -; not "latest". */
bool pkgref_channel_valid(const char *s);
/* Parse name@selector into *ret. On failure returns -EINVAL, leaves *ret untouched and
 * writes why into detail (dlen bytes); returns 0 on success. */
int pkgref_parse(const char *ref, struct pkgref *ret, char *detail, size_t dlen);
