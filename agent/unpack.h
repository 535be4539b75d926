/* unpack.h: a package archive (.tar, .tar.gz, .zip) unpacked into a job's directory, in
 * the agent's process with libarchive, under limits counted on the bytes and entries
 * actually written (never on what the archive declares). */
#pragma once

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/exec.h"

/* The defaults of the agent's packages.* keys (config.c). */
#define UNPACK_MAX_BYTES_DEFAULT "4G"
#define UNPACK_MAX_FILES_DEFAULT "100000"
#define UNPACK_MAX_DEPTH_DEFAULT "64"
#define UNPACK_MAX_PATH_DEFAULT  "1024"

struct unpack_limits {
    int64_t max_bytes;  /* packages.max_unpacked_bytes: bytes written, holes included */
    int64_t max_files;  /* packages.max_files: entries (files, directories, links) */
    int64_t max_depth;  /* packages.max_path_depth: components of an entry's path */
    int64_t max_path;   /* packages.max_path_bytes: bytes of an entry's path */
    int64_t timeout_ms; /* the whole unpack; 0: none */
};

/* What the unpack did: filled on success and failure alike. */
struct unpack_stats {
    int64_t bytes;
    int64_t files;
};

/* Unpack the archive at path into dir (an existing, empty directory nothing else writes
 * to while this runs). Entries are refused, and the whole unpack with them, when their path
 * is absolute (/x, \x, C:x, \\host\share), has a .. component, is too deep or too long;
 * when they are devices, FIFOs or sockets; when a symbolic link's target or a hard link's
 * source would leave dir; when they would be written through a symbolic link; when a limit
 * would be passed. Files get their archive's permission bits (no set-id or sticky bit,
 * owner read and write always) and, with user (the agent is root), the user's ownership.
 * cancel, when set while it runs, stops it.
 *
 * Returns 0, or: -EPERM refused (err says which entry or limit: the limits by their
 * configuration key), -EBADMSG not a readable tar, tar.gz or zip archive, -ECANCELED, -ETIME
 * over timeout_ms, other -errno. On failure dir is left empty. err (errlen bytes) gets the
 * sentence, without a trailing newline; stats, when not NULL, what was written. */
int unpack_archive(const char *path, const char *dir, const struct unpack_limits *lim,
                   const struct exec_user *user, const atomic_bool *cancel,
                   struct unpack_stats *stats, char *err, size_t errlen);
