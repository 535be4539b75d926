/* fuzz-unpack.c: libFuzzer target for the agent's unpacker (agent/unpack.c): the input is
 * the archive, unpacked under small limits into a directory of a private root. Beyond
 * memory errors, it checks what the unpacker promises: nothing appears in the root beside
 * the archive and the job directory, a refusal leaves the job directory empty, and no
 * more bytes are written than the limit.
 *
 * Built with clang (-Dfuzz=enabled), run for a bounded time by tools/test.sh. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/host.h"
#include "agent/unpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64], arc[96], dir[96];

static const struct unpack_limits lim = {
    .max_bytes = 1 << 20, .max_files = 200, .max_depth = 8, .max_path = 256, .timeout_ms = 10000};

/* The names in d other than . and ..; when rm, each is removed. */
static int count(const char *d, bool rm)
{
    DIR *h = opendir(d);
    if (!h)
        abort();
    struct dirent *de;
    int n = 0;
    while ((de = readdir(h))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        n++;
        if (rm) {
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", d, de->d_name);
            host_rm_rf(p);
        }
    }
    closedir(h);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof(root), "/tmp/orch-fuzz-unpack-XXXXXX");
        if (!mkdtemp(root))
            abort();
        snprintf(arc, sizeof(arc), "%s/pkg", root);
        snprintf(dir, sizeof(dir), "%s/job", root);
        if (mkdir(dir, 0700) < 0)
            abort();
    }
    FILE *f = fopen(arc, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    char err[600];
    struct unpack_stats st;
    int r = unpack_archive(arc, dir, &lim, NULL, NULL, &st, err, sizeof(err));
    if (count(root, false) != 2) /* pkg and job: nothing escaped */
        abort();
    if (st.bytes > lim.max_bytes || st.files > lim.max_files + 1)
        abort();
    if (r < 0 && count(dir, false) != 0)
        abort();
    count(dir, true);
    return 0;
}
