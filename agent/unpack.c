/* unpack.c: a package archive unpacked with libarchive's reader (tar, zip; gzip) and its
 * disk writer, behind checks of our own on every entry: libarchive's secure flags refuse
 * `..` and writing through a symbolic link, ours refuse what they do not cover (absolute
 * and drive-letter paths, the targets of links, devices) and count what is written.
 *
 * The writer takes each entry's path prefixed with the job directory's canonical path (the
 * agent is multi-threaded: no chdir), so libarchive's own absolute-path refusal cannot be
 * used; ours runs on the path as the archive gives it, before the prefix. */
#include "agent/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/host.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/printf.h"

#define UNPACK_BLOCK (64 * 1024)
/* Room for any entry path the limits allow (packages.max_path_bytes <= 4000), on every OS
 * (mingw's PATH_MAX is 260). */
#define REL_MAX  4096
#define FULL_MAX (REL_MAX + 1024)

ORCH_PRINTF(3, 4) static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EPERM;
}

/* n bytes as "4 GiB" when a whole number of KiB, MiB or GiB, else "n bytes". */
static const char *size_str(int64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"GiB", "MiB", "KiB"};
    for (int i = 0; i < 3; i++) {
        int64_t u = (int64_t)1 << (10 * (3 - i));
        if (n >= u && n % u == 0) {
            snprintf(buf, len, "%" PRId64 " %s", n / u, units[i]);
            return buf;
        }
    }
    snprintf(buf, len, "%" PRId64 " bytes", n);
    return buf;
}

static bool is_sep(char c)
{
    /* A separator on Windows, so refused as one everywhere: a package unpacks the same on
     * every agent. */
    return c == '/' || c == '\\';
}

/* Absolute anywhere: /x, \x, \\host\share, C:x. */
static bool is_absolute(const char *p)
{
    return is_sep(p[0]) || (((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z') && p[1] == ':');
}

/* The components of p (separators / and \, "." and empty ones dropped) into out, joined by
 * '/', with their count in *depth and the number of ".." among them in *dotdot and of those
 * after the first other component in *inner_dotdot. */
static void split(const char *p, char *out, size_t len, int64_t *depth, int64_t *dotdot,
                  int64_t *inner_dotdot)
{
    size_t o = 0;
    *depth = *dotdot = *inner_dotdot = 0;
    bool named = false;
    while (*p) {
        while (is_sep(*p))
            p++;
        size_t n = 0;
        while (p[n] && !is_sep(p[n]))
            n++;
        if (n == 0 || (n == 1 && p[0] == '.')) {
            p += n;
            continue;
        }
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            (*dotdot)++;
            if (named)
                (*inner_dotdot)++;
        } else {
            named = true;
        }
        (*depth)++;
        if (o + n + 2 < len) {
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    out[o] = '\0';
}

/* The entry's path checked against the limits and the job directory: its normalized form
 * in rel (depth 0: the directory itself). 0 or -EPERM with err. */
static int check_path(const char *name, const struct unpack_limits *lim, char *rel, size_t len,
                      int64_t *depth, char *err, size_t errlen)
{
    int64_t dotdot, inner;
    if ((int64_t)strlen(name) > lim->max_path)
        return refuse(err, errlen,
                      "entry %.80s... has a path over the %" PRId64
                      "-byte limit (agent packages.max_path_bytes)",
                      name, lim->max_path);
    if (is_absolute(name))
        return refuse(err, errlen,
                      "entry %.200s has an absolute path: it escapes the job directory", name);
    split(name, rel, len, depth, &dotdot, &inner);
    if (dotdot)
        return refuse(err, errlen, "entry %.200s escapes the job directory (a .. component)", name);
    if (*depth > lim->max_depth)
        return refuse(err, errlen,
                      "entry %.200s is %" PRId64 " directories deep, over the %" PRId64
                      " limit (agent packages.max_path_depth)",
                      name, *depth, lim->max_depth);
    return 0;
}

/* A symbolic link at rel (depth components) to target: relative, and its leading ".."
 * climb no higher than the link's own directory, with no ".." after a name (that name
 * may be a link itself, the climb would then start elsewhere). The names it then goes
 * down through are the job directory's own, and any link among them is checked the same
 * way: the target stays inside. */
static int check_symlink(const char *name, const char *target, int64_t depth, char *err,
                         size_t errlen)
{
    char norm[REL_MAX];
    int64_t tdepth, dotdot, inner;
    if (!target[0] || strlen(target) >= sizeof(norm) || is_absolute(target))
        goto out;
    split(target, norm, sizeof(norm), &tdepth, &dotdot, &inner);
    if (inner == 0 && dotdot <= depth - 1)
        return 0;
out:
    return refuse(err, errlen, "symbolic link %.200s points outside the job directory (to %.200s)",
                  name, target);
}

/* Remove everything in dir, not dir itself. */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) < (int)sizeof(p))
            host_rm_rf(p);
    }
    closedir(d);
}

/* The writer's last error, with the job directory's path taken out of it (the agent's
 * directories are none of the tenant's business): in buf. */
static const char *write_error(struct archive *out, const char *root, char *buf, size_t len)
{
    const char *m = archive_error_string(out);
    size_t rl = strlen(root), o = 0;
    if (!m)
        m = "unknown error";
    while (*m && o + 1 < len) {
        if (!strncmp(m, root, rl) && m[rl] == '/')
            m += rl + 1;
        else
            buf[o++] = *m++;
    }
    buf[o] = '\0';
    return buf;
}

/* dir's canonical path: no link in it for libarchive's symlink check to stop at. */
static int canonical(const char *dir, char *out, size_t len)
{
#ifdef _WIN32
    if (!_fullpath(out, dir, len))
        return -errno;
#else
    char buf[PATH_MAX];
    if (!realpath(dir, buf))
        return -errno;
    if (snprintf(out, len, "%s", buf) >= (int)len)
        return -ENAMETOOLONG;
#endif
    return 0;
}

struct unpack_run {
    const struct unpack_limits *lim;
    const atomic_bool *cancel;
    uint64_t deadline_ns;
    const char *root; /* the job directory, canonical */
    struct unpack_stats st;
    char *err;
    size_t errlen;
};

static int check_time(struct unpack_run *u)
{
    if (u->cancel && atomic_load(u->cancel))
        return -ECANCELED;
    if (u->deadline_ns && clock_mono_ns() > u->deadline_ns) {
        snprintf(u->err, u->errlen, "unpacking took over %" PRId64 " s", u->lim->timeout_ms / 1000);
        return -ETIME;
    }
    return 0;
}

/* The data of the current entry, counted before each block is written. */
static int copy_data(struct unpack_run *u, struct archive *in, struct archive *out,
                     const char *name)
{
    int64_t end = 0; /* the file's size so far, holes included */
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t offset;
        int r = archive_read_data_block(in, &buf, &size, &offset);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN) {
            snprintf(u->err, u->errlen, "entry %.200s cannot be read: %.200s", name,
                     archive_error_string(in));
            return -EBADMSG;
        }
        int tr = check_time(u);
        if (tr < 0)
            return tr;
        int64_t grow = offset + (int64_t)size > end ? offset + (int64_t)size - end : 0;
        if (offset < 0 || u->st.bytes + grow > u->lim->max_bytes) {
            char s[32];
            return refuse(u->err, u->errlen,
                          "unpacked size over the %s limit (agent packages.max_unpacked_bytes), "
                          "at entry %.200s",
                          size_str(u->lim->max_bytes, s, sizeof(s)), name);
        }
        if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN) {
            char m[256];
            snprintf(u->err, u->errlen, "entry %.200s cannot be written: %s", name,
                     write_error(out, u->root, m, sizeof(m)));
            return -EIO;
        }
        u->st.bytes += grow;
        end += grow;
    }
}

static int too_long(struct unpack_run *u, const char *name)
{
    snprintf(u->err, u->errlen, "entry %.200s: its path under the job directory is too long", name);
    return -ENAMETOOLONG;
}

/* One entry: checked, renamed under root, written. */
static int unpack_entry(struct unpack_run *u, struct archive *in, struct archive *out,
                        struct archive_entry *e, const char *root, const struct exec_user *user)
{
    const struct unpack_limits *lim = u->lim;
    const char *raw = archive_entry_pathname_utf8(e);
    if (!raw)
        raw = archive_entry_pathname(e);
    if (!raw)
        return refuse(u->err, u->errlen, "an entry has no readable name");
    /* A copy: the entry's own is replaced below. One cut short is over packages.max_path_bytes
     * all the same. */
    char name[REL_MAX];
    snprintf(name, sizeof(name), "%s", raw);
    if (++u->st.files > lim->max_files)
        return refuse(u->err, u->errlen, "more than %" PRId64 " entries (agent packages.max_files)",
                      lim->max_files);
    char rel[REL_MAX], full[FULL_MAX];
    int64_t depth;
    int r = check_path(name, lim, rel, sizeof(rel), &depth, u->err, u->errlen);
    if (r < 0)
        return r;
    if (depth == 0) /* "./": the job directory itself, there already */
        return 0;
    const char *hard = archive_entry_hardlink_utf8(e);
    if (!hard)
        hard = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    if (hard) {
        char hrel[REL_MAX];
        int64_t hdepth;
        if (check_path(hard, lim, hrel, sizeof(hrel), &hdepth, u->err, u->errlen) < 0 ||
            hdepth == 0)
            return refuse(u->err, u->errlen,
                          "hard link %.200s points outside the job directory "
                          "(to %.200s)",
                          name, hard);
        if (snprintf(full, sizeof(full), "%s/%s", root, hrel) >= (int)sizeof(full))
            return too_long(u, name);
        archive_entry_update_hardlink_utf8(e, full);
    } else if (type == AE_IFLNK) {
        const char *target = archive_entry_symlink_utf8(e);
        if (!target)
            target = archive_entry_symlink(e);
        r = check_symlink(name, target ? target : "", depth, u->err, u->errlen);
        if (r < 0)
            return r;
    } else if (type != AE_IFREG && type != AE_IFDIR) {
        return refuse(u->err, u->errlen,
                      "entry %.200s is a device, FIFO or socket: packages hold files, "
                      "directories and links only",
                      name);
    }
    if (snprintf(full, sizeof(full), "%s/%s", root, rel) >= (int)sizeof(full))
        return too_long(u, name);
    archive_entry_update_pathname_utf8(e, full);
    /* The archive's permission bits, without set-id or sticky, the owner's own always. */
    mode_t perm = archive_entry_perm(e) & 0777;
    archive_entry_set_perm(e, perm | (type == AE_IFDIR ? 0700 : 0600));
    if (user) {
        archive_entry_set_uid(e, user->uid);
        archive_entry_set_gid(e, user->gid);
    }
    char m[256];
    if (archive_write_header(out, e) < ARCHIVE_WARN)
        return refuse(u->err, u->errlen, "entry %.200s refused: %s", name,
                      write_error(out, root, m, sizeof(m)));
    if (archive_entry_size_is_set(e) || type == AE_IFREG) {
        r = copy_data(u, in, out, name);
        if (r < 0)
            return r;
    }
    if (archive_write_finish_entry(out) < ARCHIVE_WARN) {
        snprintf(u->err, u->errlen, "entry %.200s cannot be written: %s", name,
                 write_error(out, root, m, sizeof(m)));
        return -EIO;
    }
    return 0;
}

int unpack_archive(const char *path, const char *dir, const struct unpack_limits *lim,
                   const struct exec_user *user, const atomic_bool *cancel,
                   struct unpack_stats *stats, char *err, size_t errlen)
{
    struct unpack_run u = {.lim = lim, .cancel = cancel, .err = err, .errlen = errlen};
    if (lim->timeout_ms > 0)
        u.deadline_ns = clock_mono_ns() + (uint64_t)lim->timeout_ms * 1000000u;
    err[0] = '\0';
    char root[PATH_MAX];
    int r = canonical(dir, root, sizeof(root));
    u.root = root;
    if (r < 0) {
        snprintf(err, errlen, "the job directory: %s", strerror(-r));
        return r;
    }
    struct archive *in = archive_read_new();
    struct archive *out = archive_write_disk_new();
    if (!in || !out) {
        r = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    archive_read_support_filter_gzip(in);
    archive_read_support_format_tar(in);
    archive_read_support_format_zip(in);
    int flags = ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME;
    if (user)
        flags |= ARCHIVE_EXTRACT_OWNER;
    archive_write_disk_set_options(out, flags);
    if (archive_read_open_filename(in, path, UNPACK_BLOCK) != ARCHIVE_OK) {
        r = -EBADMSG;
        snprintf(err, errlen, "not a tar, tar.gz or zip archive: %.200s", archive_error_string(in));
        goto done;
    }
    for (;;) {
        struct archive_entry *e;
        int hr = archive_read_next_header(in, &e);
        if (hr == ARCHIVE_EOF)
            break;
        if (hr < ARCHIVE_WARN) {
            r = -EBADMSG;
            snprintf(err, errlen, "%s: %.200s",
                     u.st.files ? "the archive is damaged" : "not a tar, tar.gz or zip archive",
                     archive_error_string(in));
            goto done;
        }
        r = check_time(&u);
        if (r < 0)
            goto done;
        r = unpack_entry(&u, in, out, e, root, user);
        if (r < 0)
            goto done;
    }
    /* Directories' modes and times are set last, here. */
    if (archive_write_close(out) < ARCHIVE_WARN) {
        r = -EIO;
        char m[256];
        snprintf(err, errlen, "cannot finish unpacking: %s", write_error(out, root, m, sizeof(m)));
    }
done:
    if (r == -ECANCELED)
        snprintf(err, errlen, "cancelled");
    archive_read_free(in);
    archive_write_free(out);
    if (r < 0)
        empty_dir(root);
    if (stats)
        *stats = u.st;
    return r;
}
