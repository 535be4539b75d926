/* Tests for agent/unpack.c on Windows: a tar.gz and a zip built at run time with libarchive
 * come out whole; a bomb, .., drive-letter and UNC paths, and escaping links are refused
 * with the directory left empty. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/unpack.h"
#include "tests/win/wtest-fs.h"

static const struct unpack_limits small = {
    .max_bytes = 1 << 20, .max_files = 20, .max_depth = 5, .max_path = 100, .timeout_ms = 60000};

/* An archive at path of one file name (text, or zeros bytes of zeros) and, when link is not
 * NULL, a symbolic link "l" to it. */
static void make(const char *path, int zip, const char *name, const char *text, size_t zeros,
                 const char *link)
{
    static char zero[65536];
    struct archive *a = archive_write_new();
    struct archive_entry *e = archive_entry_new();
    size_t size = text ? strlen(text) : zeros;

    WT_ASSERT(a && e, "archive_write_new");
    if (zip) {
        archive_write_set_format_zip(a);
    } else {
        archive_write_set_format_pax_restricted(a);
        archive_write_add_filter_gzip(a);
    }
    WT_ASSERT(archive_write_open_filename(a, path) == ARCHIVE_OK, "%s", archive_error_string(a));
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    WT_ASSERT(archive_write_header(a, e) == ARCHIVE_OK, "%s", archive_error_string(a));
    if (text)
        archive_write_data(a, text, size);
    for (size_t left = text ? 0 : size; left > 0;) {
        size_t k = left < sizeof(zero) ? left : sizeof(zero);
        WT_ASSERT(archive_write_data(a, zero, k) == (la_ssize_t)k, "write");
        left -= k;
    }
    if (link) {
        archive_entry_clear(e);
        archive_entry_set_pathname(e, "l");
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_perm(e, 0777);
        archive_entry_set_symlink(e, link);
        WT_ASSERT(archive_write_header(a, e) == ARCHIVE_OK, "%s", archive_error_string(a));
    }
    archive_entry_free(e);
    WT_ASSERT(archive_write_close(a) == ARCHIVE_OK, "%s", archive_error_string(a));
    archive_write_free(a);
}

static int empty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    WT_ASSERT(d, "opendir %s", dir);
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n == 0;
}

WTEST(unpack, tar_gz_and_zip_come_out_whole)
{
    char root[600], arc[700], dir[700], p[800], buf[64] = "";

    for (int zip = 0; zip < 2; zip++) {
        char err[600];
        FILE *f;
        size_t n;
        int r;

        wt_tmpdir(root, sizeof(root), "unpack");
        snprintf(arc, sizeof(arc), "%s/pkg", root);
        snprintf(dir, sizeof(dir), "%s/job", root);
        WT_ASSERT(mkdir(dir, 0700) == 0, "mkdir");
        make(arc, zip, "bin/run.cmd", "@echo hi\r\n", 0, NULL);
        r = unpack_archive(arc, dir, &small, NULL, NULL, NULL, err, sizeof(err));
        WT_ASSERT(r == 0, "zip=%d r=%d %s", zip, r, err);
        snprintf(p, sizeof(p), "%s/bin/run.cmd", dir);
        f = fopen(p, "rb");
        WT_ASSERT(f, "%s", p);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        WT_ASSERT(!strcmp(buf, "@echo hi\r\n"), "%s", buf);
        wt_rm_rf(root);
    }
}

WTEST(unpack, bombs_escapes_and_links_are_refused)
{
    static const struct {
        const char *name;
        size_t zeros;
        const char *link;
        const char *want;
    } cases[] = {
        {"zeros", 4u << 20, NULL, "unpacked size over the 1 MiB limit"},
        {"../x", 0, NULL, "escapes the job directory"},
        {"..\\x", 0, NULL, "escapes the job directory"},
        {"C:/x", 0, NULL, "has an absolute path"},
        {"c:x", 0, NULL, "has an absolute path"},
        {"\\\\host\\share\\x", 0, NULL, "has an absolute path"},
        {"a", 0, "..\\..", "symbolic link l points outside"},
        {"a", 0, "C:\\Windows", "symbolic link l points outside"},
    };
    char root[600], arc[700], dir[700];

    wt_tmpdir(root, sizeof(root), "unpack");
    snprintf(arc, sizeof(arc), "%s/pkg", root);
    snprintf(dir, sizeof(dir), "%s/job", root);
    WT_ASSERT(mkdir(dir, 0700) == 0, "mkdir");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int zip = 0; zip < 2; zip++) {
            char err[600];
            int r;

            if (zip && cases[i].link)
                continue;
            make(arc, zip, cases[i].name, cases[i].zeros ? NULL : "x", cases[i].zeros,
                 cases[i].link);
            r = unpack_archive(arc, dir, &small, NULL, NULL, NULL, err, sizeof(err));
            WT_ASSERT(r == -EPERM && strstr(err, cases[i].want), "%s zip=%d: r=%d %s",
                      cases[i].name, zip, r, err);
            WT_ASSERT(empty(dir), "%s: the partial output was not removed", cases[i].name);
        }
    }
    wt_rm_rf(root);
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
