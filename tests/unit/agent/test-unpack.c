/* Tests for agent/unpack.c: archives built at run time with libarchive's writer (tar, tar.gz,
 * zip), unpacked under a small set of limits: good packages come out whole with their
 * modes; bombs, too many files, too deep or long paths, .., absolute paths, escaping links,
 * writing through a link and devices are refused with the sentence the job shows, and the
 * directory is left empty. Each test works in its own temporary directory. */
#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/unpack.h"

static char root[64];
static char arc[96];
static char dir[96];

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/test-unpack-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    snprintf(arc, sizeof(arc), "%s/pkg", root);
    snprintf(dir, sizeof(dir), "%s/job", root);
    cr_assert_eq(mkdir(dir, 0700), 0);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(unpack, .init = setup, .fini = teardown);

/* The limits of these tests: small enough for a bomb to pass them quickly. */
static const struct unpack_limits small = {
    .max_bytes = 1 << 20, .max_files = 20, .max_depth = 5, .max_path = 100, .timeout_ms = 60000};

enum fmt { TAR, TGZ, ZIP };

struct ent {
    const char *name;
    mode_t type; /* AE_IFREG when 0 */
    mode_t perm;
    const char *text; /* the file's bytes, or NULL */
    size_t zeros;     /* else this many zero bytes */
    const char *link; /* AE_IFLNK: the target */
    const char *hard; /* a hard link to this path */
};

static void make(enum fmt f, const struct ent *e, size_t n)
{
    struct archive *a = archive_write_new();
    cr_assert_not_null(a);
    if (f == ZIP) {
        cr_assert_eq(archive_write_set_format_zip(a), ARCHIVE_OK);
    } else {
        cr_assert_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        if (f == TGZ)
            cr_assert_eq(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    }
    cr_assert_eq(archive_write_open_filename(a, arc), ARCHIVE_OK);
    static char zero[65536];
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].name);
        mode_t type = e[i].type ? e[i].type : AE_IFREG;
        archive_entry_set_filetype(ae, type);
        archive_entry_set_perm(ae, e[i].perm ? e[i].perm : 0644);
        size_t size = e[i].text ? strlen(e[i].text) : e[i].zeros;
        if (e[i].hard) {
            archive_entry_set_hardlink(ae, e[i].hard);
            size = 0;
        }
        if (type == AE_IFLNK)
            archive_entry_set_symlink(ae, e[i].link);
        archive_entry_set_size(ae, type == AE_IFREG ? (la_int64_t)size : 0);
        cr_assert_eq(archive_write_header(a, ae), ARCHIVE_OK, "%s", archive_error_string(a));
        if (type == AE_IFREG && e[i].text)
            cr_assert_eq(archive_write_data(a, e[i].text, size), (la_ssize_t)size);
        for (size_t left = type == AE_IFREG && !e[i].text ? size : 0; left > 0;) {
            size_t k = left < sizeof(zero) ? left : sizeof(zero);
            cr_assert_eq(archive_write_data(a, zero, k), (la_ssize_t)k);
            left -= k;
        }
        archive_entry_free(ae);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

static int run(const struct unpack_limits *lim, char *err, size_t len)
{
    return unpack_archive(arc, dir, lim, NULL, NULL, NULL, err, len);
}

static size_t dir_entries(void)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

/* Unpacking refused with -EPERM, err containing want, nothing left in dir. */
static void refused(const struct unpack_limits *lim, const char *want)
{
    char err[600];
    int r = run(lim, err, sizeof(err));
    cr_assert_eq(r, -EPERM, "r=%d err=%s", r, err);
    cr_assert_not_null(strstr(err, want), "err: %s (wanted: %s)", err, want);
    cr_assert_eq(dir_entries(), 0, "the partial output was not removed");
}

static void file_is(const char *rel, const char *text, mode_t perm)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    struct stat sb;
    cr_assert_eq(lstat(p, &sb), 0, "%s: %s", rel, strerror(errno));
    cr_assert(S_ISREG(sb.st_mode), "%s", rel);
    cr_assert_eq(sb.st_mode & 07777, perm, "%s: mode %o", rel, sb.st_mode & 07777);
    char buf[256] = "";
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cr_assert_str_eq(buf, text);
}

static void good(enum fmt f)
{
    const struct ent e[] = {
        {.name = "bin", .type = AE_IFDIR, .perm = 0755},
        {.name = "bin/run.sh", .perm = 0755, .text = "#!/bin/sh\necho hi\n"},
        {.name = "./etc/conf", .perm = 0640, .text = "k=v\n"},
        {.name = "setuid", .perm = 04755, .text = "x"},
        {.name = "readonly", .perm = 0444, .text = "r"},
        {.name = "bin/link", .type = AE_IFLNK, .link = "../etc/conf"},
        {.name = "hard", .hard = "etc/conf"},
    };
    /* zip has no hard links. */
    size_t n = sizeof(e) / sizeof(e[0]) - (f == ZIP);
    make(f, e, n);
    char err[600];
    struct unpack_stats st;
    int r = unpack_archive(arc, dir, &small, NULL, NULL, &st, err, sizeof(err));
    cr_assert_eq(r, 0, "r=%d err=%s", r, err);
    file_is("bin/run.sh", "#!/bin/sh\necho hi\n", 0755);
    file_is("etc/conf", "k=v\n", 0640);
    file_is("setuid", "x", 0755);   /* no set-id bit */
    file_is("readonly", "r", 0644); /* the owner may always write */
    char p[256], target[64] = "";
    snprintf(p, sizeof(p), "%s/bin/link", dir);
    cr_assert_gt(readlink(p, target, sizeof(target) - 1), 0);
    cr_assert_str_eq(target, "../etc/conf");
    cr_assert_eq(st.files, (int64_t)n);
    cr_assert_eq(st.bytes, (int64_t)(strlen("#!/bin/sh\necho hi\n") + 4 + 1 + 1));
    if (f == ZIP)
        return;
    file_is("hard", "k=v\n", 0640);
    struct stat a, b;
    snprintf(p, sizeof(p), "%s/hard", dir);
    cr_assert_eq(stat(p, &a), 0);
    snprintf(p, sizeof(p), "%s/etc/conf", dir);
    cr_assert_eq(stat(p, &b), 0);
    cr_assert_eq(a.st_ino, b.st_ino);
}

Test(unpack, tar_comes_out_whole_with_its_modes)
{
    good(TAR);
}

Test(unpack, tar_gz_comes_out_whole_with_its_modes)
{
    good(TGZ);
}

Test(unpack, zip_comes_out_whole_with_its_modes)
{
    good(ZIP);
}

Test(unpack, tar_bomb_is_refused_at_the_size_limit)
{
    /* 8 MiB of zeros: a gzip of about 8 KiB. */
    const struct ent e[] = {{.name = "zeros", .zeros = 8u << 20}};
    make(TGZ, e, 1);
    struct stat sb;
    cr_assert_eq(stat(arc, &sb), 0);
    cr_assert_lt(sb.st_size, 64 * 1024);
    refused(&small, "unpacked size over the 1 MiB limit (agent packages.max_unpacked_bytes)");
}

Test(unpack, zip_bomb_is_refused_at_the_size_limit)
{
    const struct ent e[] = {{.name = "a", .zeros = 600 * 1024}, {.name = "b", .zeros = 600 * 1024}};
    make(ZIP, e, 2);
    refused(&small, "unpacked size over the 1 MiB limit");
}

Test(unpack, a_size_exactly_at_the_limit_is_accepted)
{
    const struct ent e[] = {{.name = "a", .zeros = 1 << 20}};
    make(TGZ, e, 1);
    char err[600];
    cr_assert_eq(run(&small, err, sizeof(err)), 0, "%s", err);
}

Test(unpack, too_many_files_are_refused)
{
    struct ent e[30];
    char names[30][16];
    for (int i = 0; i < 30; i++) {
        snprintf(names[i], sizeof(names[i]), "f%d", i);
        e[i] = (struct ent){.name = names[i], .text = "x"};
    }
    make(TAR, e, 30);
    refused(&small, "more than 20 entries (agent packages.max_files)");
}

Test(unpack, too_deep_paths_are_refused)
{
    const struct ent e[] = {{.name = "a/b/c/d/e/f", .text = "x"}};
    make(TAR, e, 1);
    refused(&small, "entry a/b/c/d/e/f is 6 directories deep, over the 5 limit "
                    "(agent packages.max_path_depth)");
}

Test(unpack, too_long_paths_are_refused)
{
    char name[160];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    const struct ent e[] = {{.name = name, .text = "x"}};
    make(TAR, e, 1);
    refused(&small, "-byte limit (agent packages.max_path_bytes)");
}

Test(unpack, dotdot_is_refused)
{
    const struct ent e[] = {{.name = "ok", .text = "x"}, {.name = "a/../../x", .text = "x"}};
    make(TAR, e, 2);
    refused(&small, "entry a/../../x escapes the job directory");
}

Test(unpack, dotdot_in_a_zip_is_refused)
{
    const struct ent e[] = {{.name = "../x", .text = "x"}};
    make(ZIP, e, 1);
    refused(&small, "entry ../x escapes the job directory");
}

Test(unpack, absolute_paths_are_refused)
{
    const char *names[] = {"/tmp/x", "\\\\host\\share\\x", "C:/x", "c:x"};
    for (size_t i = 0; i < 4; i++) {
        const struct ent e[] = {{.name = names[i], .text = "x"}};
        make(TAR, e, 1);
        char want[64];
        snprintf(want, sizeof(want), "entry %s has an absolute path", names[i]);
        refused(&small, want);
    }
}

Test(unpack, escaping_symlinks_are_refused)
{
    const char *targets[] = {"/etc", "..", "../x", "d/../../x", "sub/../.."};
    for (size_t i = 0; i < 5; i++) {
        const struct ent e[] = {{.name = "l", .type = AE_IFLNK, .link = targets[i]}};
        make(TAR, e, 1);
        refused(&small, "symbolic link l points outside the job directory");
    }
    /* Deeper, it may climb as high as its own directory's depth, no higher. */
    const struct ent ok[] = {{.name = "a/b/l", .type = AE_IFLNK, .link = "../../x"}};
    make(TAR, ok, 1);
    char err[600];
    cr_assert_eq(run(&small, err, sizeof(err)), 0, "%s", err);
    char p[256];
    snprintf(p, sizeof(p), "%s/a", dir);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
    cr_assert_eq(system(cmd), 0);
    const struct ent bad[] = {{.name = "a/b/l", .type = AE_IFLNK, .link = "../../../x"}};
    make(TAR, bad, 1);
    refused(&small, "symbolic link a/b/l points outside the job directory (to ../../../x)");
}

Test(unpack, writing_through_a_symlink_is_refused)
{
    /* The link stays inside: the file under it must still not be written through it. */
    const struct ent e[] = {{.name = "sub", .type = AE_IFDIR, .perm = 0755},
                            {.name = "l", .type = AE_IFLNK, .link = "sub"},
                            {.name = "l/x", .text = "x"}};
    make(TAR, e, 3);
    refused(&small, "entry l/x refused");
    /* libarchive's own sentence, without the agent's directories in it. */
    char err[600];
    cr_assert_eq(run(&small, err, sizeof(err)), -EPERM);
    cr_assert_null(strstr(err, root), "%s", err);
}

Test(unpack, files_belong_to_the_job_user)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to give files away");
    const struct ent e[] = {{.name = "d", .type = AE_IFDIR, .perm = 0755},
                            {.name = "d/f", .text = "x"},
                            {.name = "d/l", .type = AE_IFLNK, .link = "f"}};
    make(TGZ, e, 3);
    struct exec_user user = {.uid = 65534, .gid = 65534};
    char err[600];
    cr_assert_eq(unpack_archive(arc, dir, &small, &user, NULL, NULL, err, sizeof(err)), 0, "%s",
                 err);
    const char *names[] = {"d", "d/f", "d/l"};
    for (size_t i = 0; i < 3; i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        struct stat sb;
        cr_assert_eq(lstat(p, &sb), 0);
        cr_assert_eq(sb.st_uid, 65534u, "%s: uid %u", names[i], (unsigned)sb.st_uid);
        cr_assert_eq(sb.st_gid, 65534u, "%s: gid %u", names[i], (unsigned)sb.st_gid);
    }
}

Test(unpack, hard_links_outside_are_refused)
{
    const char *sources[] = {"../outside", "/etc/passwd", "a/../../x"};
    for (size_t i = 0; i < 3; i++) {
        const struct ent e[] = {{.name = "h", .hard = sources[i]}};
        make(TAR, e, 1);
        refused(&small, "hard link h points outside the job directory");
    }
}

Test(unpack, devices_and_fifos_are_refused)
{
    const mode_t types[] = {AE_IFIFO, AE_IFCHR, AE_IFBLK};
    for (size_t i = 0; i < 3; i++) {
        const struct ent e[] = {{.name = "dev", .type = types[i]}};
        make(TAR, e, 1);
        refused(&small, "entry dev is a device, FIFO or socket");
    }
}

Test(unpack, what_is_not_an_archive_is_refused_as_such)
{
    FILE *f = fopen(arc, "w");
    cr_assert_not_null(f);
    fputs("this is not an archive at all, just some text long enough to be looked at", f);
    fclose(f);
    char err[600];
    cr_assert_eq(run(&small, err, sizeof(err)), -EBADMSG, "%s", err);
    cr_assert_not_null(strstr(err, "not a tar, tar.gz or zip archive"), "%s", err);
}

Test(unpack, a_cancel_stops_it)
{
    const struct ent e[] = {{.name = "a", .text = "x"}};
    make(TAR, e, 1);
    atomic_bool cancel = true;
    char err[600];
    cr_assert_eq(unpack_archive(arc, dir, &small, NULL, &cancel, NULL, err, sizeof(err)),
                 -ECANCELED);
    cr_assert_eq(dir_entries(), 0);
}
