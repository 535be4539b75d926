/* host-win.c: the daemon's OS part on Windows (see host.h).
 *
 * Jobs: the daemon does not switch users on Windows. exec-win.c runs every job with a
 * restricted token of the agent's own account (LocalSystem under the SCM), in a Job Object;
 * exec.user and exec.uid_range do not exist here and are refused. What keeps a job away
 * from the agent's files is the state directory's protected DACL (SYSTEM and
 * Administrators only), which host_own_dir() applies at every start. */
#include "agent/host.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <windows.h>

#include <aclapi.h>
#include <sddl.h>
#include <shlobj.h>

#include "common/compat.h"
#include "common/log.h"

int host_job_identity(const struct agent_config *cfg, struct host_job_identity *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (cfg->exec_uid_range && cfg->exec_uid_range[0]) {
        fprintf(stderr, "orch-agent: exec.uid_range does not exist on Windows: every job runs "
                        "with a restricted token in a Job Object of its own; remove it\n");
        return -1;
    }
    if (cfg->exec_user && cfg->exec_user[0]) {
        fprintf(stderr, "orch-agent: exec.user does not exist on Windows: jobs run with a "
                        "restricted token of the agent's account; remove it\n");
        return -1;
    }
    snprintf(ret->name, sizeof(ret->name), "restricted-token");
    return 0;
}

/* The SID of the process's user, malloc'd as a string; NULL when unknown. */
static wchar_t *own_sid(void)
{
    HANDLE tok;
    union {
        TOKEN_USER tu;
        char buf[256];
    } u;
    DWORD n = 0;
    wchar_t *s = NULL, *copy;

    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok))
        return NULL;
    if (GetTokenInformation(tok, TokenUser, &u, sizeof(u), &n))
        ConvertSidToStringSidW(u.tu.User.Sid, &s);
    CloseHandle(tok);
    if (!s)
        return NULL;
    copy = _wcsdup(s);
    LocalFree(s);
    return copy;
}

/* Whether the process may act as an administrator (LocalSystem, or elevated). */
static bool is_admin(void)
{
    SID_IDENTIFIER_AUTHORITY nt = {SECURITY_NT_AUTHORITY};
    PSID admins = NULL;
    BOOL member = FALSE;

    if (!AllocateAndInitializeSid(&nt, 2, SECURITY_BUILTIN_DOMAIN_RID, DOMAIN_ALIAS_RID_ADMINS, 0,
                                  0, 0, 0, 0, 0, &admins))
        return false;
    if (!CheckTokenMembership(NULL, admins, &member))
        member = FALSE;
    FreeSid(admins);
    return member;
}

int host_own_dir(const char *dir, mode_t mode)
{
    PSECURITY_DESCRIPTOR sd = NULL;
    wchar_t sddl[256], *wdir, *me = NULL;
    BOOL present = FALSE, defaulted = FALSE;
    PACL dacl = NULL;
    DWORD attrs, err;

    (void)mode;
    wdir = compat_utf8_to_wide(dir);
    if (!wdir)
        return -errno;
    attrs = GetFileAttributesW(wdir);
    if (attrs == INVALID_FILE_ATTRIBUTES) {
        err = GetLastError();
        free(wdir);
        return -compat_errno_from_win32(err);
    }
    if (!(attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        free(wdir);
        return -ENOTDIR;
    }
    /* A junction or link could point the agent's state anywhere. */
    if (attrs & FILE_ATTRIBUTE_REPARSE_POINT) {
        free(wdir);
        return -EPERM;
    }
    /* SYSTEM and Administrators, full control, inherited by everything below; P: nothing
     * inherited from above (ProgramData lets Users create files). An agent run by hand by
     * a user who is not an administrator keeps its own access too, or it would lock
     * itself out. */
    if (!is_admin())
        me = own_sid();
    swprintf(sddl, sizeof(sddl) / sizeof(*sddl), L"D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)%ls%ls%ls",
             me ? L"(A;OICI;FA;;;" : L"", me ? me : L"", me ? L")" : L"");
    free(me);
    if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1, &sd, NULL) ||
        !GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted) || !present) {
        err = GetLastError();
        if (sd)
            LocalFree(sd);
        free(wdir);
        return -compat_errno_from_win32(err);
    }
    err = SetNamedSecurityInfoW(wdir, SE_FILE_OBJECT,
                                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                                NULL, NULL, dacl, NULL);
    LocalFree(sd);
    free(wdir);
    if (err != ERROR_SUCCESS)
        return err == ERROR_ACCESS_DENIED ? -EPERM : -compat_errno_from_win32(err);
    return 0;
}

/* mkdir -p: the state directory's parents may not exist yet (%ProgramData%\Orch). */
static int mkdir_parents(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);

    if (n >= sizeof(path))
        return -ENAMETOOLONG;
    memcpy(path, dir, n + 1);
    for (size_t i = 3; i <= n; i++) {
        if (path[i] != '\\' && path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -errno;
        path[i] = c;
    }
    return 0;
}

int host_state_dir_init(const char *dir)
{
    int r = mkdir_parents(dir);

    return r < 0 ? r : host_own_dir(dir, 0700);
}

int host_restrict_dir(const char *dir, mode_t mode)
{
    (void)dir;
    (void)mode;
    return 0;
}

int host_give_to_job(const char *workdir, int fd, const struct exec_user *user)
{
    (void)workdir;
    (void)fd;
    (void)user;
    return 0;
}

/* Remove path (UTF-16) and what is below it. A reparse point (symlink, junction) is
 * removed itself, never entered. Read-only files lose the attribute first. */
static void rm_tree(wchar_t *path, size_t len, size_t cap)
{
    WIN32_FIND_DATAW fd;
    DWORD attrs = GetFileAttributesW(path);
    HANDLE h;

    if (attrs == INVALID_FILE_ATTRIBUTES)
        return;
    if (attrs & FILE_ATTRIBUTE_READONLY)
        SetFileAttributesW(path, attrs & ~(DWORD)FILE_ATTRIBUTE_READONLY);
    if (!(attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        if (!DeleteFileW(path))
            log_debug("op=cleanup error=%lu", GetLastError());
        return;
    }
    if (!(attrs & FILE_ATTRIBUTE_REPARSE_POINT) && len + 3 < cap) {
        wcscpy(path + len, L"\\*");
        h = FindFirstFileW(path, &fd);
        path[len] = L'\0';
        if (h != INVALID_HANDLE_VALUE) {
            do {
                size_t n = wcslen(fd.cFileName);

                if (!wcscmp(fd.cFileName, L".") || !wcscmp(fd.cFileName, L".."))
                    continue;
                if (len + 1 + n + 1 > cap)
                    continue;
                path[len] = L'\\';
                memcpy(path + len + 1, fd.cFileName, (n + 1) * sizeof(*path));
                rm_tree(path, len + 1 + n, cap);
                path[len] = L'\0';
            } while (FindNextFileW(h, &fd));
            FindClose(h);
        }
    }
    if (!RemoveDirectoryW(path))
        log_debug("op=cleanup error=%lu", GetLastError());
}

void host_rm_rf(const char *path)
{
    enum { CAP = 32768 };
    wchar_t *w = compat_utf8_to_wide(path), *buf;
    size_t len;

    if (!w)
        return;
    for (wchar_t *c = w; *c; c++)
        if (*c == L'/')
            *c = L'\\';
    len = wcslen(w);
    buf = malloc(CAP * sizeof(*buf));
    if (buf && len + 1 < CAP) {
        memcpy(buf, w, (len + 1) * sizeof(*buf));
        rm_tree(buf, len, CAP);
    }
    free(buf);
    free(w);
}

char *host_cgroup_dir(const char *agent_id)
{
    (void)agent_id;
    return NULL;
}

/* %SystemRoot% (C:\Windows), UTF-8. */
static void system_root(char *out, size_t len)
{
    wchar_t w[MAX_PATH];
    UINT n = GetSystemWindowsDirectoryW(w, MAX_PATH);
    char *s = n > 0 && n < MAX_PATH ? compat_wide_to_utf8(w) : NULL;

    snprintf(out, len, "%s", s ? s : "C:\\Windows");
    free(s);
}

static char cmd_exe[MAX_PATH + 32];
static pthread_once_t cmd_exe_once = PTHREAD_ONCE_INIT;

static void cmd_exe_init(void)
{
    char root[MAX_PATH];

    system_root(root, sizeof(root));
    snprintf(cmd_exe, sizeof(cmd_exe), "%s\\System32\\cmd.exe", root);
}

void host_job_argv(const char **argv, const char *command, const char *entrypoint,
                   const char *const *args, size_t nargs, char *buf, size_t len)
{
    /* cmd.exe from System32 by its full path: never one a job or PATH put first. */
    pthread_once(&cmd_exe_once, cmd_exe_init);
    /* A package job: its entrypoint, relative to the workdir (cmd's current directory),
     * quoted, with '\' as cmd wants it. cmd runs .cmd/.bat itself and starts an .exe. */
    if (entrypoint) {
        size_t o = 0;

        if (len > 4) {
            buf[o++] = '"';
            buf[o++] = '.';
            buf[o++] = '\\';
            for (const char *p = entrypoint; *p && o + 2 < len; p++)
                buf[o++] = *p == '/' ? '\\' : *p;
            buf[o++] = '"';
            buf[o] = '\0';
        }
        command = buf;
    }
    argv[0] = cmd_exe;
    argv[1] = "/d"; /* no AutoRun commands from the registry */
    argv[2] = "/s";
    argv[3] = "/c";
    argv[4] = command;
    for (size_t i = 0; i < nargs; i++)
        argv[5 + i] = args[i];
    argv[5 + nargs] = NULL;
}

static char *env_kv(const char *k, const char *v)
{
    char *s;

    return asprintf(&s, "%s=%s", k, v) < 0 ? NULL : s;
}

char **host_env_defaults(const char *workdir)
{
    enum { N = 10 };
    char root[MAX_PATH], path[4 * MAX_PATH + 64], comspec[MAX_PATH + 32], drive[3] = "C:";
    char win[MAX_PATH + 4];
    char **v = calloc(N + 1, sizeof(*v));
    int i = 0;

    if (!v)
        return NULL;
    system_root(root, sizeof(root));
    if (root[0] && root[1] == ':')
        drive[0] = root[0];
    snprintf(path, sizeof(path),
             "%s\\System32;%s;%s\\System32\\Wbem;%s\\System32\\WindowsPowerShell\\v1.0", root, root,
             root, root);
    snprintf(comspec, sizeof(comspec), "%s\\System32\\cmd.exe", root);
    /* The job's own workdir, with Windows' separators, as its home and temporary dir. */
    snprintf(win, sizeof(win), "%s", workdir);
    for (char *c = win; *c; c++)
        if (*c == '/')
            *c = '\\';
    v[i++] = env_kv("PATH", path);
    v[i++] = env_kv("PATHEXT", ".COM;.EXE;.BAT;.CMD;.VBS;.JS;.WS;.MSC;.PS1");
    v[i++] = env_kv("SystemRoot", root);
    v[i++] = env_kv("windir", root);
    v[i++] = env_kv("SystemDrive", drive);
    v[i++] = env_kv("ComSpec", comspec);
    v[i++] = env_kv("USERPROFILE", win);
    v[i++] = env_kv("HOME", win);
    v[i++] = env_kv("TEMP", win);
    v[i++] = env_kv("TMP", win);
    for (int k = 0; k < N; k++) {
        if (!v[k]) {
            for (int m = 0; m < N; m++)
                free(v[m]);
            free(v);
            return NULL;
        }
    }
    return v;
}

bool host_env_name_eq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && _strnicmp(a, b, alen) == 0;
}

/* %ProgramData% from the shell's known folder: the environment of a service may say
 * otherwise (wine's does), and the MSI installs to the known folder. malloc'd or NULL. */
static char *program_data(void)
{
    wchar_t *w = NULL;
    char *s = NULL;

    if (SUCCEEDED(SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, NULL, &w)))
        s = compat_wide_to_utf8(w);
    CoTaskMemFree(w);
    return s;
}

char *host_expand(const char *s)
{
    static const char pd[] = "%ProgramData%";
    wchar_t *w, *x;
    char *out, *known = NULL, *joined = NULL;
    DWORD n;

    if (!_strnicmp(s, pd, sizeof(pd) - 1) && (known = program_data()) &&
        asprintf(&joined, "%s%s", known, s + sizeof(pd) - 1) < 0)
        joined = NULL;
    free(known);
    if (joined)
        s = joined;
    w = compat_utf8_to_wide(s);
    if (!w) {
        out = errno == ENOMEM ? NULL : strdup(s);
        free(joined);
        return out;
    }
    n = ExpandEnvironmentStringsW(w, NULL, 0);
    x = n ? malloc(n * sizeof(*x)) : NULL;
    if (!x || ExpandEnvironmentStringsW(w, x, n) == 0 || ExpandEnvironmentStringsW(w, x, n) > n) {
        out = n ? NULL : strdup(s); /* nothing to expand with: as is */
        free(x);
        free(w);
        free(joined);
        return out;
    }
    free(w);
    free(joined);
    out = compat_wide_to_utf8(x);
    free(x);
    return out;
}
