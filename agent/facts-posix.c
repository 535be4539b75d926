/* facts-posix.c: host facts on Linux and other POSIX systems (see facts.h). */
#include "agent/facts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "orch-config.h"

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
