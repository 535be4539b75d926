/* facts-win.c: host facts and load figures on Windows (see facts.h). */
#include "agent/facts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <windows.h>

#include "orch-config.h"
#include "common/compat.h"

/* Interpreters jobs commonly need, reported when found: name, then the program looked for
 * on the agent's PATH (cmd and powershell also in System32 where Windows keeps them). */
static const struct {
    const char *name;
    const wchar_t *exe;
    const wchar_t *system; /* below %SystemRoot%, or NULL */
} interpreters[] = {
    {"cmd", L"cmd.exe", L"\\System32\\cmd.exe"},
    {"powershell", L"powershell.exe", L"\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"},
    {"pwsh", L"pwsh.exe", NULL},
    {"python", L"python.exe", NULL},
};

static bool found(const wchar_t *exe, const wchar_t *system)
{
    wchar_t path[MAX_PATH + 64];
    UINT n;

    if (SearchPathW(NULL, exe, NULL, MAX_PATH + 64, path, NULL) > 0)
        return true;
    if (!system)
        return false;
    n = GetSystemWindowsDirectoryW(path, MAX_PATH);
    if (n == 0 || n >= MAX_PATH)
        return false;
    wcsncat(path, system, MAX_PATH + 63 - n);
    return GetFileAttributesW(path) != INVALID_FILE_ATTRIBUTES;
}

/* The Windows version as "major.minor.build": RtlGetVersion, which (unlike GetVersionEx)
 * is not subject to the manifest's compatibility shims. */
static void os_version(char *out, size_t len)
{
    typedef LONG(WINAPI * rtl_get_version_fn)(OSVERSIONINFOW *);
    OSVERSIONINFOW v = {.dwOSVersionInfoSize = sizeof(v)};
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    rtl_get_version_fn fn =
        ntdll ? (rtl_get_version_fn)(void (*)(void))GetProcAddress(ntdll, "RtlGetVersion") : NULL;

    if (fn && fn(&v) == 0)
        snprintf(out, len, "%lu.%lu.%lu", v.dwMajorVersion, v.dwMinorVersion, v.dwBuildNumber);
    else
        snprintf(out, len, "unknown");
}

static const char *arch_name(void)
{
    SYSTEM_INFO si;

    GetNativeSystemInfo(&si);
    switch (si.wProcessorArchitecture) {
    case PROCESSOR_ARCHITECTURE_AMD64:
        return "x86_64";
    case PROCESSOR_ARCHITECTURE_ARM64:
        return "aarch64";
    case PROCESSOR_ARCHITECTURE_INTEL:
        return "i686";
    case PROCESSOR_ARCHITECTURE_ARM:
        return "arm";
    default:
        return "unknown";
    }
}

json_t *facts_collect(void)
{
    MEMORYSTATUSEX mem = {.dwLength = sizeof(mem)};
    char host[256] = "", kernel[64];
    json_t *interp = json_array();

    if (gethostname(host, sizeof(host)) < 0)
        host[0] = '\0';
    os_version(kernel, sizeof(kernel));
    if (!GlobalMemoryStatusEx(&mem))
        mem.ullTotalPhys = 0;
    for (size_t i = 0; interp && i < sizeof(interpreters) / sizeof(interpreters[0]); i++)
        if (found(interpreters[i].exe, interpreters[i].system))
            json_array_append_new(interp, json_string(interpreters[i].name));
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:o*}", "os", "windows", "arch",
                     arch_name(), "hostname", host, "kernel", kernel, "cpus",
                     (json_int_t)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS), "memory_bytes",
                     (json_int_t)mem.ullTotalPhys, "version", ORCH_VERSION, "interpreters", interp);
}

static uint64_t ft64(FILETIME ft)
{
    return (uint64_t)ft.dwHighDateTime << 32 | ft.dwLowDateTime;
}

bool facts_cpu_sample(struct facts_cpu *c)
{
    FILETIME idle, kernel, user;

    /* Kernel time includes idle time. */
    if (!GetSystemTimes(&idle, &kernel, &user))
        return false;
    c->total = ft64(kernel) + ft64(user);
    c->busy = c->total - ft64(idle);
    return true;
}

void facts_load(const char *dir, struct facts_cpu *prev, struct proto_load *load)
{
    MEMORYSTATUSEX mem = {.dwLength = sizeof(mem)};
    ULARGE_INTEGER avail;
    struct facts_cpu now;
    wchar_t *wdir;

    if (facts_cpu_sample(&now)) {
        if (prev->total && now.total > prev->total && now.busy >= prev->busy)
            load->cpu_percent =
                100.0 * (double)(now.busy - prev->busy) / (double)(now.total - prev->total);
        *prev = now;
    }
    if (GlobalMemoryStatusEx(&mem)) {
        load->memory_used_bytes = (int64_t)(mem.ullTotalPhys - mem.ullAvailPhys);
        load->memory_available_bytes = (int64_t)mem.ullAvailPhys;
    } else {
        load->memory_used_bytes = load->memory_available_bytes = -1;
    }
    wdir = compat_utf8_to_wide(dir);
    load->disk_free_bytes =
        wdir && GetDiskFreeSpaceExW(wdir, &avail, NULL, NULL) ? (int64_t)avail.QuadPart : 0;
    free(wdir);
}
