/* Tests for the agent's Windows platform files: host-win.c (state directory DACL, rm -rf,
 * job argv and environment), facts-win.c, the stop event of service-win.c, the
 * Windows defaults of config.c, log_open_file() and CLOCK_COND. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include <aclapi.h>
#include <sddl.h>

#include "agent/config.h"
#include "agent/facts.h"
#include "agent/host.h"
#include "agent/service.h"
#include "common/clock.h"
#include "common/log.h"
#include "tests/win/wtest-fs.h"

static char root[512];

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    WT_ASSERT(f, "fopen %s: errno %d", path, errno);
    fputs(text, f);
    fclose(f);
}

static bool exists(const char *path)
{
    struct stat sb;

    return compat_stat(path, &sb) == 0;
}

/* Wine says so through ntdll's wine_get_version. */
static bool on_wine(void)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");

    return ntdll && GetProcAddress(ntdll, "wine_get_version");
}

WTEST(host, state_dir_gets_a_protected_dacl)
{
    PSECURITY_DESCRIPTOR sd = NULL;
    SECURITY_DESCRIPTOR_CONTROL ctl = 0;
    DWORD rev = 0;
    PACL dacl = NULL;
    wchar_t *w, *sddl = NULL;
    char file[600];
    bool sy = false, ba = false;

    wt_tmpdir(root, sizeof(root), "host");
    WT_ASSERT(host_own_dir(root, 0700) == 0, "host_own_dir");
    w = compat_utf8_to_wide(root);
    WT_ASSERT(GetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &dacl,
                                    NULL, &sd) == ERROR_SUCCESS,
              "GetNamedSecurityInfoW");
    free(w);
    WT_ASSERT(ConvertSecurityDescriptorToStringSecurityDescriptorW(
                  sd, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, &sddl, NULL),
              "to SDDL");
    printf("# state dir DACL: %ls\n", sddl);
    sy = wcsstr(sddl, L";;;SY)") != NULL;
    ba = wcsstr(sddl, L";;;BA)") != NULL;
    WT_ASSERT(GetSecurityDescriptorControl(sd, &ctl, &rev), "control");
    /* Wine accepts the DACL but keeps none: it shows one made from the Unix mode. What is
     * checked there is that host_own_dir() succeeded; on Windows, the DACL itself. */
    if (on_wine()) {
        printf("# wine keeps no file DACL: the protected DACL is checked on Windows only\n");
    } else {
        WT_ASSERT(ctl & SE_DACL_PROTECTED, "the DACL inherits from above: control %#x", ctl);
        WT_ASSERT(sy && ba && !wcsstr(sddl, L";;;BU)") && !wcsstr(sddl, L";;;WD)") &&
                      !wcsstr(sddl, L";;;AU)"),
                  "DACL %ls: SYSTEM and Administrators only", sddl);
    }
    LocalFree(sddl);
    LocalFree(sd);
    snprintf(file, sizeof(file), "%s/f", root);
    put(file, "x");
    WT_ASSERT(host_own_dir(file, 0700) == -ENOTDIR, "a file");
    snprintf(file, sizeof(file), "%s/missing", root);
    WT_ASSERT(host_own_dir(file, 0700) == -ENOENT, "missing");
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(host, state_dir_init_makes_the_parents)
{
    char dir[600];
    struct stat sb;

    wt_tmpdir(root, sizeof(root), "host");
    snprintf(dir, sizeof(dir), "%s\\Orch\\Agent", root);
    WT_ASSERT(host_state_dir_init(dir) == 0, "init %s", dir);
    WT_ASSERT(compat_stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode), "made");
    WT_ASSERT(host_state_dir_init(dir) == 0, "again");
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(host, rm_rf_removes_a_tree_but_not_what_a_link_points_to)
{
    char p[600], outside[600], keep[600];
    wchar_t *wl, *wt;

    wt_tmpdir(root, sizeof(root), "host");
    snprintf(outside, sizeof(outside), "%s/outside", root);
    WT_ASSERT(mkdir(outside, 0700) == 0, "mkdir");
    snprintf(keep, sizeof(keep), "%s/outside/keep", root);
    put(keep, "keep");
    snprintf(p, sizeof(p), "%s/work", root);
    WT_ASSERT(mkdir(p, 0700) == 0, "mkdir");
    snprintf(p, sizeof(p), "%s/work/a", root);
    WT_ASSERT(mkdir(p, 0700) == 0, "mkdir");
    snprintf(p, sizeof(p), "%s/work/a/ro.txt", root);
    put(p, "read-only");
    wl = compat_utf8_to_wide(p);
    SetFileAttributesW(wl, FILE_ATTRIBUTE_READONLY);
    free(wl);
    /* A directory link to outside the tree (a job could make one): removed, not entered. */
    snprintf(p, sizeof(p), "%s\\work\\link", root);
    wl = compat_utf8_to_wide(p);
    wt = compat_utf8_to_wide(outside);
    for (wchar_t *c = wt; *c; c++)
        if (*c == L'/')
            *c = L'\\';
    for (wchar_t *c = wl; *c; c++)
        if (*c == L'/')
            *c = L'\\';
    if (!CreateSymbolicLinkW(wl, wt, SYMBOLIC_LINK_FLAG_DIRECTORY))
        printf("# no directory symlink here (error %lu): the link case is not checked\n",
               GetLastError());
    free(wl);
    free(wt);
    snprintf(p, sizeof(p), "%s/work", root);
    host_rm_rf(p);
    WT_ASSERT(!exists(p), "the tree is gone");
    WT_ASSERT(exists(keep), "what the link pointed to survives");
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

WTEST(host, job_argv_runs_cmd)
{
    const char *argv[2 + HOST_ARGV_EXTRA];
    const char *args[] = {"a b", "c"};
    char buf[1200];

    host_job_argv(argv, "echo hi", NULL, args, 2, buf, sizeof(buf));
    WT_ASSERT(strstr(argv[0], "\\System32\\cmd.exe") != NULL, "%s", argv[0]);
    WT_ASSERT(!strcmp(argv[1], "/d") && !strcmp(argv[2], "/s") && !strcmp(argv[3], "/c"), "flags");
    WT_ASSERT(!strcmp(argv[4], "echo hi") && !strcmp(argv[5], "a b") && !strcmp(argv[6], "c") &&
                  argv[7] == NULL,
              "command and args");
    host_job_argv(argv, "ignored", "bin/run.cmd", NULL, 0, buf, sizeof(buf));
    WT_ASSERT(!strcmp(argv[4], "\".\\bin\\run.cmd\"") && argv[5] == NULL, "entrypoint %s", argv[4]);
}

WTEST(host, env_defaults_and_names)
{
    char **env = host_env_defaults("C:/ProgramData/Orch/Agent/work/j.1");
    bool root_set = false, path_set = false, temp_ok = false;

    WT_ASSERT(env, "defaults");
    for (size_t i = 0; env[i]; i++) {
        root_set |= !strncmp(env[i], "SystemRoot=", 11) && strlen(env[i]) > 11;
        path_set |= !strncmp(env[i], "PATH=", 5) && strstr(env[i], "System32");
        temp_ok |= !strcmp(env[i], "TEMP=C:\\ProgramData\\Orch\\Agent\\work\\j.1");
        free(env[i]);
    }
    free(env);
    WT_ASSERT(root_set && path_set && temp_ok, "SystemRoot, PATH, TEMP: %d %d %d", root_set,
              path_set, temp_ok);
    WT_ASSERT(host_env_name_eq("Path=x", 4, "PATH"), "names are case-insensitive");
    WT_ASSERT(!host_env_name_eq("PATH=x", 4, "PATHEXT"), "a longer name");
}

WTEST(host, config_defaults_and_job_identity)
{
    struct host_job_identity who;
    struct agent_config cfg;
    struct conf_error err;

    _putenv("ORCH_AGENT_EXEC_USER=");
    WT_ASSERT(agent_config_load(&cfg, NULL, &err) == 0, "load: %s", err.msg);
    WT_ASSERT(!strchr(cfg.state_dir, '%') && strstr(cfg.state_dir, "\\Orch\\Agent"), "state_dir %s",
              cfg.state_dir);
    WT_ASSERT(cfg.exec_user && !cfg.exec_user[0], "exec.user '%s'", cfg.exec_user);
    WT_ASSERT(host_job_identity(&cfg, &who) == 0 && !who.switch_user && !who.uids, "identity");
    agent_config_free(&cfg);
    _putenv("ORCH_AGENT_EXEC_USER=orch-job");
    WT_ASSERT(agent_config_load(&cfg, NULL, &err) == 0, "load: %s", err.msg);
    WT_ASSERT(host_job_identity(&cfg, &who) < 0, "exec.user is refused on Windows");
    agent_config_free(&cfg);
    _putenv("ORCH_AGENT_EXEC_USER=");
    _putenv("ORCH_AGENT_EXEC_UID_RANGE=200000-200009");
    WT_ASSERT(agent_config_load(&cfg, NULL, &err) == 0, "load: %s", err.msg);
    WT_ASSERT(host_job_identity(&cfg, &who) < 0, "exec.uid_range is refused on Windows");
    agent_config_free(&cfg);
    _putenv("ORCH_AGENT_EXEC_UID_RANGE=");
}

WTEST(facts, collect_and_load)
{
    struct proto_load load = {.cpu_percent = -1};
    struct facts_cpu prev = {0};
    json_t *f = facts_collect(), *interp;
    bool cmd = false;
    char *dir;

    WT_ASSERT(f, "facts");
    WT_ASSERT(!strcmp(json_string_value(json_object_get(f, "os")), "windows"), "os");
    WT_ASSERT(json_integer_value(json_object_get(f, "cpus")) >= 1, "cpus");
    WT_ASSERT(json_integer_value(json_object_get(f, "memory_bytes")) > 0, "memory");
    WT_ASSERT(json_string_length(json_object_get(f, "hostname")) > 0, "hostname");
    interp = json_object_get(f, "interpreters");
    for (size_t i = 0; i < json_array_size(interp); i++)
        cmd |= !strcmp(json_string_value(json_array_get(interp, i)), "cmd");
    WT_ASSERT(cmd, "cmd is an interpreter");
    printf("# facts: %s\n", json_dumps(f, JSON_COMPACT));
    json_decref(f);

    dir = host_expand("%SystemRoot%");
    WT_ASSERT(dir && !strchr(dir, '%'), "expanded: %s", dir);
    WT_ASSERT(facts_cpu_sample(&prev), "a CPU sample");
    Sleep(50);
    facts_load(dir, &prev, &load);
    free(dir);
    WT_ASSERT(load.cpu_percent >= -1 && load.cpu_percent <= 100, "cpu %f", load.cpu_percent);
    WT_ASSERT(load.memory_available_bytes > 0 && load.memory_used_bytes >= 0, "memory");
    WT_ASSERT(load.disk_free_bytes > 0, "disk");
}

WTEST(clock, cond_waits_on_clock_cond)
{
    pthread_condattr_t ca;
    pthread_cond_t c;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    struct timespec ts;
    uint64_t t0 = clock_mono_ns(), waited;

    pthread_condattr_init(&ca);
    WT_ASSERT(pthread_condattr_setclock(&ca, CLOCK_COND) == 0, "setclock");
    pthread_cond_init(&c, &ca);
    pthread_mutex_lock(&m);
    clock_deadline(CLOCK_COND, 200, &ts);
    while (pthread_cond_timedwait(&c, &m, &ts) == 0)
        ;
    pthread_mutex_unlock(&m);
    waited = (clock_mono_ns() - t0) / 1000000;
    WT_ASSERT(waited >= 150 && waited < 5000, "a 200 ms wait took %llu ms",
              (unsigned long long)waited);
}

WTEST(log, to_a_file_rotated_at_open)
{
    char path[600], old[600], buf[256] = "";
    FILE *f;
    int fd;

    wt_tmpdir(root, sizeof(root), "log");
    snprintf(path, sizeof(path), "%s/agent.log", root);
    snprintf(old, sizeof(old), "%s/agent.log.1", root);
    /* Over the cap: moved to agent.log.1 when opened. */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    WT_ASSERT(fd >= 0 && ftruncate(fd, 17 * 1024 * 1024) == 0, "a big log");
    close(fd);
    WT_ASSERT(log_open_file(path, false) == 0, "log_open_file");
    log_info("op=test value=%d", 42);
    close(log_set_fd(2));
    WT_ASSERT(exists(old), "the old log moved aside");
    f = fopen(path, "r");
    WT_ASSERT(f && fgets(buf, sizeof(buf), f), "read the log");
    fclose(f);
    WT_ASSERT(strstr(buf, "level=info op=test value=42\n"), "line: %s", buf);
    WT_ASSERT(wt_rm_rf(root) == 0, "cleanup");
}

/* The event stays set once set: no other test here uses it. */
WTEST(service, stop_event)
{
    const char *why = NULL;

    WT_ASSERT(service_stop_init() == 0, "init");
    WT_ASSERT(service_stop_wait(20, &why) == 0, "nothing asked yet");
    service_stop_request("test-stop");
    WT_ASSERT(service_stop_wait(5000, &why) == 1 && !strcmp(why, "test-stop"), "why %s", why);
    WT_ASSERT(service_stop_wait(0, NULL) == 1, "stays set");
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
