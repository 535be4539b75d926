/* facts-posix.c: host facts on Linux and other POSIX systems (see facts.h). */
#include "agent/facts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "orch-config.h"
#include "common/cleanup.h"

/* Interpreters jobs commonly need; reported when found on PATH. */
static const char *const interpreters[] = {"sh",   "bash", "python3", "pwsh",
                                           "node", "perl", "ruby",    "java"};

static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof(dir) - 64) {
            memcpy(dir, path, n);
            snprintf(dir + n, sizeof(dir) - n, "/%s", name);
            struct stat st;
            if (stat(dir, &st) == 0 && S_ISREG(st.st_mode) && access(dir, X_OK) == 0)
                return 1;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

json_t *facts_collect(void)
{
    struct utsname u;
    if (uname(&u) < 0)
        memset(&u, 0, sizeof(u));
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    struct sysinfo si;
    long long mem = sysinfo(&si) == 0 ? (long long)si.totalram * si.mem_unit : 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    char os[sizeof(u.sysname)];
    snprintf(os, sizeof(os), "%s", u.sysname);
    for (char *p = os; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');

    json_t *interp = json_array();
    for (size_t i = 0; interp && i < sizeof(interpreters) / sizeof(interpreters[0]); i++)
        if (on_path(interpreters[i]))
            json_array_append_new(interp, json_string(interpreters[i]));
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:o*}", "os", os, "arch", u.machine,
                     "hostname", host, "kernel", u.release, "cpus", (json_int_t)cpus,
                     "memory_bytes", (json_int_t)mem, "version", ORCH_VERSION, "interpreters",
                     interp);
}

bool facts_cpu_sample(struct facts_cpu *c)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");
    unsigned long long v[8] = {0};
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]) < 4)
        return false;
    c->total = 0;
    for (int i = 0; i < 8; i++)
        c->total += v[i];
    c->busy = c->total - v[3] - v[4]; /* minus idle and iowait */
    return true;
}

/* The host's memory in use and available (MemAvailable: what a new job can have without
 * swapping, which placement matches a job's minimum against), in bytes. */
static void mem_read(struct proto_load *load)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    long long total = -1, avail = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "MemTotal: %lld kB", &total) == 1 ||
            sscanf(line, "MemAvailable: %lld kB", &avail) == 1)
            continue;
    }
    if (total >= 0 && avail >= 0) {
        load->memory_used_bytes = (int64_t)(total - avail) * 1024;
        load->memory_available_bytes = (int64_t)avail * 1024;
        return;
    }
    struct sysinfo si;
    if (sysinfo(&si) < 0) {
        load->memory_used_bytes = load->memory_available_bytes = -1;
        return;
    }
    load->memory_used_bytes = (int64_t)(si.totalram - si.freeram - si.bufferram) * si.mem_unit;
    load->memory_available_bytes = (int64_t)(si.freeram + si.bufferram) * si.mem_unit;
}

void facts_load(const char *dir, struct facts_cpu *prev, struct proto_load *load)
{
    struct facts_cpu now;
    if (facts_cpu_sample(&now)) {
        if (prev->total && now.total > prev->total && now.busy >= prev->busy)
            load->cpu_percent =
                100.0 * (double)(now.busy - prev->busy) / (double)(now.total - prev->total);
        *prev = now;
    }
    mem_read(load);
    struct statvfs vfs;
    load->disk_free_bytes =
        statvfs(dir, &vfs) == 0 ? (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize : 0;
}
