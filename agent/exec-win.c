/* exec-win.c: exec_ops on Windows ("windows"): CreateProcessAsUserW into a Job Object,
 * under a restricted token, output through two overlapped named pipes read by run()'s own
 * thread.
 *
 * The tree. Every job gets a Job Object of its own, named Global\orch-job-<job_id>.<agent
 * pid>.<n> (given to on_tree as exec_tree.cgroup, so that the daemon records it and a later
 * agent process can open it in exec_tree_kill; unnamed when the name cannot be had),
 * with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE (when the agent dies, its handle closes and
 * Windows kills every process of the job: the agent's death ends its jobs' trees) and
 * JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION (a crash ends the process instead of waiting
 * on an error dialog nobody sees), and without JOB_OBJECT_LIMIT_BREAKAWAY_OK: every
 * process the job starts is in it, there is no way out like setsid on POSIX. The main
 * process is created suspended, put in the job, recorded (on_tree), and only then
 * resumed, so that nothing of the job runs outside the object.
 *
 * Ending it. Windows has no SIGTERM for a tree: GenerateConsoleCtrlEvent reaches only a
 * process group on the caller's own console, and a service has none (attaching to each
 * job's console in turn is process-wide state that concurrent slots would fight over). So
 * a timeout, a cancel or a sink error ends the job at once with TerminateJobObject, which
 * kills every process of it; grace_ms is not used. Processes left behind by the main
 * process may hold the output pipes for drain_ms, then the job object is terminated; in
 * every case run() terminates it at the end and returns only once it holds no process
 * (JOBOBJECT_BASIC_ACCOUNTING_INFORMATION.ActiveProcesses == 0).
 *
 * Identity. The agent runs as LocalSystem; a job must not. It runs with a restricted token
 * made from the agent's own (the Chromium sandbox's "restricting SIDs" scheme):
 *   - DISABLE_MAX_PRIVILEGE: every privilege but SeChangeNotifyPrivilege is removed
 *     (no SeDebug, SeImpersonate, SeBackup, SeTcb...);
 *   - the powerful groups (Administrators, Power Users, the operators' groups, "local
 *     account and member of Administrators") are deny-only;
 *   - restricting SIDs {Everyone, BUILTIN\Users, RESTRICTED, a random per-job SID}: every
 *     access check is made twice, once with the token's normal SIDs and once with the
 *     restricting SIDs, and both must grant. The user SID stays (SYSTEM passes the first
 *     check nearly everywhere), so what the job may touch is what Everyone, Users or its
 *     own SID may: system files and the registry for reading, world-writable places, and
 *     its workdir and result file, on which run() grants the per-job SID full control
 *     (inherited by what the job creates there). The state dir (SYSTEM + Administrators
 *     only) and other jobs' workdirs (another per-job SID) are closed to it;
 *   - a default DACL {the token's user, SYSTEM, the per-job SID}: the job can open the
 *     processes and objects it creates itself, other jobs cannot;
 *   - integrity level Medium when the agent's is higher: the agent's process (System) is
 *     out of the job's reach for writing and reading even if a DACL were to let it;
 *   - a desktop of the agent's own (window station orch-jobs-<agent pid>, desktop
 *     Default) that RESTRICTED may use: a restricted process cannot open the service's
 *     desktop, and any program that loads user32.dll would fail to start (0xC0000142)
 *     on it. Jobs share that desktop (they may see each other's windows, if they make
 *     any: CREATE_NO_WINDOW, a service's session 0, there are none to see). Made once;
 *     when it cannot be, jobs get the agent's desktop and a warning is logged.
 * A restricted version of the caller's own token needs no SeAssignPrimaryTokenPrivilege,
 * so a by-hand agent under an ordinary account works the same way. This step is
 * fail-closed: when the token or the grants cannot be made, run() returns an error and
 * nothing is started. Wine (8.0) enforces none of it: its CreateRestrictedToken keeps
 * neither the restricting SIDs nor the removal of privileges (IsTokenRestricted() is
 * false in the job), and it checks no ACL on files. Under wine a job can read the state
 * dir; the fence holds on Windows only, and the tests check what wine can show (the
 * token calls succeed, the workdir's grant is in its DACL, the job starts on the desktop).
 *
 * Start. argv[0] is looked up like exec.h says (the PATH of spec->env, default
 * %SystemRoot%\System32;%SystemRoot%, relative entries from the workdir; ".exe" added
 * to a name without an extension), not by CreateProcess's own search, which would look in
 * the agent's directories first. Not found, or the workdir missing: exit 127; found but
 * not startable: exit 126; the reason (FormatMessage) on stream 2, started false.
 *
 * Environment. Only spec->env, sorted as CreateProcess wants (by name, case-insensitive),
 * plus, when the job's env lacks them, SystemRoot, SystemDrive, ComSpec and PATHEXT: many
 * programs (and Winsock) fail without SystemRoot, cmd.exe looks for ComSpec and PATHEXT.
 *
 * Handles. The child inherits exactly its stdin (spec->stdin_path, or NUL), stdout and
 * stderr (PROC_THREAD_ATTRIBUTE_HANDLE_LIST). Those must be inheritable handles; another
 * CreateProcess with bInheritHandles and no list, anywhere in the agent, would inherit
 * them too, so the agent has none (this file is its only CreateProcess).
 *
 * Command line. argv is joined with the MSVCRT rules (exec_win_cmdline), except after
 * cmd.exe's /c (or /k): the daemon runs argv = {"cmd.exe", "/d", "/s", "/c", COMMAND,
 * ARGS...}, and cmd /s takes everything between the first and the last quote as one
 * command line. So COMMAND and ARGS go inside one pair of quotes: COMMAND as it is (the
 * tenant's cmd syntax), each ARG quoted by the MSVCRT rules and then with every cmd
 * metacharacter ( ) % ! ^ " < > & | escaped with ^, so that cmd neither interprets an
 * argument nor expands %VAR% in it, and the program it runs gets it unchanged.
 *
 * Exit codes: GetExitCodeProcess's DWORD as an int (NTSTATUS codes such as 0xC0000005
 * are negative; exit(-1) gives -1 like "no exit"); -1 when run() killed the main process;
 * term_signal is always 0. Output: on_output gets what each ReadFile returned, at most
 * max_output_chunk bytes, in order per stream.
 */
#include "agent/exec.h"
#include "agent/exec-win.h"

#include <windows.h>
#include <aclapi.h>
#include <bcrypt.h>
#include <sddl.h>
#include <tlhelp32.h>
#include <winternl.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define TICK_MS        100 /* the promised latency for cancel and timeout */
#define ABANDON_MS     1000
#define JOB_EMPTY_MS   5000 /* bound on waiting for a terminated job object to empty */
#define POLL_MS        10
#define JOB_ID_MAX     64
#define MSG_ARG_MAX    200
#define PIPE_BUF_BYTES (64 * 1024)
/* The exit code TerminateJobObject gives the processes run() kills ('orch'): when the main
 * process has it after a kill, run() reports exit_code -1 as for a signal on POSIX. */
#define KILL_EXIT_CODE  0x6F726368u
#define JOB_NAME_PREFIX "Global\\orch-job-"
#define JOB_NAME_MAX    (sizeof(JOB_NAME_PREFIX) + JOB_ID_MAX + 32) /* ".<pid>.<n>" */
#define DEFAULT_PATHEXT L".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC"

struct pipe_rd {
    HANDLE h;
    OVERLAPPED ov;
    char *buf;
    bool pending;
};

struct job {
    const struct exec_spec *spec;
    const struct exec_sink *sink;
    HANDLE job, proc;
    DWORD pid;
    struct pipe_rd p[2];
    size_t chunk_len;
    bool reaped;
    DWORD code;
    uint64_t start_ns, reaped_ns;
    bool killed;
    bool stragglers_killed;
    uint64_t stragglers_ns;
    struct exec_result res;
};

static uint64_t ms_to_ns(int64_t ms)
{
    return (uint64_t)ms * UINT64_C(1000000);
}

static int errno_from_win(DWORD e)
{
    switch (e) {
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_NO_SYSTEM_RESOURCES:
    case ERROR_COMMITMENT_LIMIT:
        return ENOMEM;
    case ERROR_ACCESS_DENIED:
        return EACCES;
    case ERROR_PRIVILEGE_NOT_HELD:
        return EPERM;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
        return ENOENT;
    case ERROR_INVALID_PARAMETER:
        return EINVAL;
    case ERROR_TOO_MANY_OPEN_FILES:
        return EMFILE;
    default:
        return EIO;
    }
}

static bool job_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > JOB_ID_MAX || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* UTF-8 to a malloc'd UTF-16 string. Returns NULL (errno EINVAL: not UTF-8, or ENOMEM). */
static wchar_t *wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    wchar_t *w = malloc((size_t)n * sizeof(*w));
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

/* UTF-16 (len units, or -1: NUL-terminated) to a malloc'd UTF-8 string, or NULL. */
static char *narrow(const wchar_t *w, int len)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, w, len, NULL, 0, NULL, NULL);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    WideCharToMultiByte(CP_UTF8, 0, w, len, s, n, NULL, NULL);
    s[n] = '\0';
    return s;
}

/* FormatMessage's text for e, without its trailing ".\r\n". */
static void win_strerror(DWORD e, char *out, size_t len)
{
    wchar_t *msg = NULL;
    DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS |
                                 FORMAT_MESSAGE_ALLOCATE_BUFFER,
                             NULL, e, 0, (wchar_t *)&msg, 0, NULL);
    char *s = n ? narrow(msg, (int)n) : NULL;
    if (msg)
        LocalFree(msg);
    if (!s) {
        snprintf(out, len, "error %lu", (unsigned long)e);
        return;
    }
    size_t l = strlen(s);
    while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '.'))
        l--;
    snprintf(out, len, "%.*s (error %lu)", (int)l, s, (unsigned long)e);
    free(s);
}

/* --- command line --------------------------------------------------------------------- */

/* One argument by the MSVCRT rules: bare when it has no blank and no quote (and force is
 * false), else in quotes with backslashes doubled where they precede a quote. */
static int quote_msvcrt(struct buf *b, const char *a, bool force)
{
    int r = 0;

    if (!force && *a && !strpbrk(a, " \t\n\v\""))
        return buf_append_str(b, a);
    r = buf_append(b, "\"", 1);
    for (const char *p = a; r >= 0; p++) {
        size_t bs = 0;
        while (*p == '\\') {
            bs++;
            p++;
        }
        /* Backslashes are literal unless a quote follows: before the closing quote (the
         * end) or an escaped one, each must be doubled. */
        size_t times = *p == '\0' ? 2 * bs : *p == '"' ? 2 * bs + 1 : bs;
        for (size_t i = 0; i < times && r >= 0; i++)
            r = buf_append(b, "\\", 1);
        if (r < 0 || *p == '\0')
            break;
        r = buf_append(b, p, 1);
    }
    return r < 0 ? r : buf_append(b, "\"", 1);
}

static bool is_cmd_exe(const char *argv0)
{
    const char *base = argv0;
    for (const char *p = argv0; *p; p++)
        if (*p == '\\' || *p == '/' || *p == ':')
            base = p + 1;
    return _stricmp(base, "cmd.exe") == 0 || _stricmp(base, "cmd") == 0;
}

int exec_win_cmdline(const char *const *argv, char **ret)
{
    struct buf b = BUF_INIT;
    size_t cmd_at = 0; /* index of COMMAND after cmd.exe's /c or /k, 0 = none */
    int r;

    if (!argv || !argv[0] || !argv[0][0] || strchr(argv[0], '"'))
        return -EINVAL;
    if (is_cmd_exe(argv[0]))
        for (size_t i = 1; argv[i]; i++)
            if ((_stricmp(argv[i], "/c") == 0 || _stricmp(argv[i], "/k") == 0) && argv[i + 1]) {
                cmd_at = i + 1;
                break;
            }
    /* The program name is read up to the next quote (or blank) with no escapes at all. */
    r = strpbrk(argv[0], " \t") ? buf_printf(&b, "\"%s\"", argv[0]) : buf_append_str(&b, argv[0]);
    for (size_t i = 1; argv[i] && r >= 0 && (cmd_at == 0 || i < cmd_at); i++) {
        r = buf_append(&b, " ", 1);
        if (r >= 0)
            r = quote_msvcrt(&b, argv[i], false);
    }
    if (cmd_at && r >= 0) {
        r = buf_printf(&b, " \"%s", argv[cmd_at]);
        for (size_t i = cmd_at + 1; argv[i] && r >= 0; i++) {
            struct buf q = BUF_INIT;
            r = quote_msvcrt(&q, argv[i], true);
            if (r >= 0)
                r = buf_append(&b, " ", 1);
            for (size_t k = 0; r >= 0 && k < q.len; k++) {
                if (strchr("()%!^\"<>&|", q.data[k]))
                    r = buf_append(&b, "^", 1);
                if (r >= 0)
                    r = buf_append(&b, q.data + k, 1);
            }
            buf_free(&q);
        }
        if (r >= 0)
            r = buf_append(&b, "\"", 1);
    }
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    *ret = buf_steal(&b);
    return *ret ? 0 : -ENOMEM;
}

/* --- environment ---------------------------------------------------------------------- */

struct env_ent {
    wchar_t *s;  /* "NAME=value" */
    size_t name; /* length of NAME */
};

static int env_cmp(const void *a, const void *b)
{
    const struct env_ent *x = a, *y = b;
    return CompareStringOrdinal(x->s, (int)x->name, y->s, (int)y->name, TRUE) - CSTR_EQUAL;
}

static bool env_has(const struct env_ent *v, size_t n, const wchar_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (CompareStringOrdinal(v[i].s, (int)v[i].name, name, -1, TRUE) == CSTR_EQUAL)
            return true;
    return false;
}

static const wchar_t *env_get(const struct env_ent *v, size_t n, const wchar_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (CompareStringOrdinal(v[i].s, (int)v[i].name, name, -1, TRUE) == CSTR_EQUAL)
            return v[i].s + v[i].name + 1;
    return NULL;
}

struct env {
    struct env_ent *v;
    size_t n;
    wchar_t *block;
};

static void env_free(struct env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].s);
    free(e->v);
    free(e->block);
}

static int env_add(struct env *e, wchar_t *s)
{
    if (!s)
        return -ENOMEM;
    const wchar_t *eq = wcschr(s + 1, L'='); /* a name may begin with '=' ("=C:") */
    if (!eq) {
        free(s);
        return 0; /* not K=V: nothing CreateProcess could pass */
    }
    e->v[e->n].s = s;
    e->v[e->n++].name = (size_t)(eq - s);
    return 0;
}

static wchar_t *wcat(const wchar_t *a, const wchar_t *b, const wchar_t *c)
{
    size_t la = wcslen(a), lb = wcslen(b), lc = c ? wcslen(c) : 0;
    wchar_t *s = malloc((la + lb + lc + 1) * sizeof(*s));
    if (!s)
        return NULL;
    memcpy(s, a, la * sizeof(*s));
    memcpy(s + la, b, lb * sizeof(*s));
    if (c)
        memcpy(s + la + lb, c, lc * sizeof(*s));
    s[la + lb + lc] = 0;
    return s;
}

/* The job's environment block (see the top of the file). Returns 0, -EINVAL (not UTF-8)
 * or -ENOMEM. */
static int env_build(const char *const *env, struct env *e)
{
    wchar_t sysroot[MAX_PATH];
    size_t n = 0, len = 1;
    int r = 0;

    for (const char *const *p = env; p && *p; p++)
        n++;
    e->v = calloc(n + 4, sizeof(*e->v));
    if (!e->v)
        return -ENOMEM;
    for (size_t i = 0; i < n && r >= 0; i++) {
        wchar_t *w = wide(env[i]);
        if (!w)
            return -errno;
        r = env_add(e, w);
    }
    UINT sl = GetSystemWindowsDirectoryW(sysroot, MAX_PATH);
    if (sl == 0 || sl >= MAX_PATH)
        wcscpy_s(sysroot, MAX_PATH, L"C:\\Windows");
    if (r >= 0 && !env_has(e->v, e->n, L"SystemRoot"))
        r = env_add(e, wcat(L"SystemRoot=", sysroot, NULL));
    if (r >= 0 && !env_has(e->v, e->n, L"SystemDrive")) {
        wchar_t drive[3] = {sysroot[0], L':', 0};
        r = env_add(e, wcat(L"SystemDrive=", drive, NULL));
    }
    if (r >= 0 && !env_has(e->v, e->n, L"ComSpec"))
        r = env_add(e, wcat(L"ComSpec=", sysroot, L"\\System32\\cmd.exe"));
    if (r >= 0 && !env_has(e->v, e->n, L"PATHEXT"))
        r = env_add(e, wcat(L"PATHEXT=", DEFAULT_PATHEXT, NULL));
    if (r < 0)
        return r;
    qsort(e->v, e->n, sizeof(*e->v), env_cmp);
    for (size_t i = 0; i < e->n; i++)
        len += wcslen(e->v[i].s) + 1;
    e->block = malloc((len + 1) * sizeof(wchar_t));
    if (!e->block)
        return -ENOMEM;
    wchar_t *w = e->block;
    for (size_t i = 0; i < e->n; i++) {
        size_t l = wcslen(e->v[i].s) + 1;
        memcpy(w, e->v[i].s, l * sizeof(*w));
        w += l;
    }
    *w++ = 0;
    *w = 0;
    return 0;
}

/* --- program lookup ------------------------------------------------------------------- */

static bool path_absolute(const wchar_t *p)
{
    return (p[0] && p[1] == L':') || p[0] == L'\\' || p[0] == L'/';
}

static bool is_file(const wchar_t *p)
{
    DWORD a = GetFileAttributesW(p);
    return a != INVALID_FILE_ATTRIBUTES && !(a & FILE_ATTRIBUTE_DIRECTORY);
}

/* dir\name (dir relative to workdir when not absolute), ".exe" added when name has no
 * extension; NULL on ENOMEM. */
static wchar_t *candidate(const wchar_t *workdir, const wchar_t *dir, size_t dlen,
                          const wchar_t *name)
{
    const wchar_t *base = name;
    for (const wchar_t *p = name; *p; p++)
        if (*p == L'\\' || *p == L'/' || *p == L':')
            base = p + 1;
    bool ext = wcschr(base, L'.') != NULL;
    size_t wl = workdir && (dlen == 0 || !path_absolute(dir)) ? wcslen(workdir) + 1 : 0;
    size_t len = wl + dlen + 1 + wcslen(name) + 5;
    wchar_t *s = malloc(len * sizeof(*s));
    if (!s)
        return NULL;
    s[0] = 0;
    if (wl)
        swprintf(s, len, L"%ls\\", workdir);
    size_t at = wcslen(s);
    if (dlen)
        swprintf(s + at, len - at, L"%.*ls\\", (int)dlen, dir);
    at = wcslen(s);
    swprintf(s + at, len - at, L"%ls%ls", name, ext ? L"" : L".exe");
    return s;
}

/* The file to run for argv0, or NULL with errno ENOENT or ENOMEM. */
static wchar_t *program_find(const wchar_t *argv0, const struct env *e, const wchar_t *workdir)
{
    wchar_t sysroot[MAX_PATH], def[2 * MAX_PATH + 16];
    wchar_t *c;

    if (wcspbrk(argv0, L"\\/:")) {
        c = path_absolute(argv0) ? candidate(NULL, L"", 0, argv0)
                                 : candidate(workdir, L"", 0, argv0);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
        if (is_file(c))
            return c;
        free(c);
        errno = ENOENT;
        return NULL;
    }
    const wchar_t *path = env_get(e->v, e->n, L"PATH");
    if (!path) {
        const wchar_t *sr = env_get(e->v, e->n, L"SystemRoot");
        swprintf(sysroot, MAX_PATH, L"%ls", sr ? sr : L"C:\\Windows");
        swprintf(def, sizeof(def) / sizeof(*def), L"%ls\\System32;%ls", sysroot, sysroot);
        path = def;
    }
    for (const wchar_t *p = path;;) {
        const wchar_t *end = wcschr(p, L';');
        size_t dlen = end ? (size_t)(end - p) : wcslen(p);
        /* An empty element means the workdir, as in execvpe. */
        c = candidate(workdir, p, dlen, argv0);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
        if (is_file(c))
            return c;
        free(c);
        if (!end)
            break;
        p = end + 1;
    }
    errno = ENOENT;
    return NULL;
}

/* --- identity ------------------------------------------------------------------------- */

/* A random SID S-1-9-a-b-c-d (the resource-manager authority, which names no account):
 * 128 bits, so no other job's is the same. */
static int job_sid_new(PSID *ret)
{
    SID_IDENTIFIER_AUTHORITY auth = {SECURITY_RESOURCE_MANAGER_AUTHORITY};
    DWORD r[4];

    if (!BCRYPT_SUCCESS(
            BCryptGenRandom(NULL, (PUCHAR)r, sizeof(r), BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
        return -EIO;
    if (!AllocateAndInitializeSid(&auth, 4, r[0], r[1], r[2], r[3], 0, 0, 0, 0, ret))
        return -errno_from_win(GetLastError());
    return 0;
}

static PSID well_known(WELL_KNOWN_SID_TYPE t, BYTE *buf)
{
    DWORD len = SECURITY_MAX_SID_SIZE;
    return CreateWellKnownSid(t, NULL, buf, &len) ? (PSID)buf : NULL;
}

/* The job's token, see the top of the file. Returns 0 or -errno. */
static int token_make(PSID job_sid, HANDLE *ret)
{
    static const WELL_KNOWN_SID_TYPE disable[] = {
        WinBuiltinAdministratorsSid,  WinBuiltinPowerUsersSid,     WinBuiltinAccountOperatorsSid,
        WinBuiltinSystemOperatorsSid, WinBuiltinPrintOperatorsSid, WinBuiltinBackupOperatorsSid,
    };
    static const WELL_KNOWN_SID_TYPE restrict_to[] = {WinWorldSid, WinBuiltinUsersSid,
                                                      WinRestrictedCodeSid};
    BYTE dis_buf[ELEMENTSOF(disable) + 1][SECURITY_MAX_SID_SIZE];
    BYTE res_buf[ELEMENTSOF(restrict_to)][SECURITY_MAX_SID_SIZE];
    BYTE sys_buf[SECURITY_MAX_SID_SIZE], user_buf[256], il_buf[SECURITY_MAX_SID_SIZE];
    SID_AND_ATTRIBUTES dis[ELEMENTSOF(disable) + 1], res[ELEMENTSOF(restrict_to) + 1];
    DWORD ndis = 0, nres = 0, len;
    HANDLE own = NULL, tok = NULL;
    PACL dacl = NULL;
    PSID local_admin = NULL;
    int r = 0;

    if (!OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY | TOKEN_ADJUST_DEFAULT, &own))
        return -errno_from_win(GetLastError());
    for (size_t i = 0; i < ELEMENTSOF(disable); i++) {
        PSID s = well_known(disable[i], dis_buf[ndis]);
        if (s)
            dis[ndis++] = (SID_AND_ATTRIBUTES){s, 0};
    }
    /* S-1-5-114, "local account and member of Administrators" (not in older SDKs' enum). */
    if (ConvertStringSidToSidW(L"S-1-5-114", &local_admin))
        dis[ndis++] = (SID_AND_ATTRIBUTES){local_admin, 0};
    for (size_t i = 0; i < ELEMENTSOF(restrict_to); i++) {
        PSID s = well_known(restrict_to[i], res_buf[nres]);
        if (!s) {
            r = -errno_from_win(GetLastError());
            goto out;
        }
        res[nres++] = (SID_AND_ATTRIBUTES){s, 0};
    }
    res[nres++] = (SID_AND_ATTRIBUTES){job_sid, 0};
    /* Sids to disable that the token does not hold are ignored by Windows. */
    if (!CreateRestrictedToken(own, DISABLE_MAX_PRIVILEGE, ndis, dis, 0, NULL, nres, res, &tok)) {
        r = -errno_from_win(GetLastError());
        goto out;
    }

    /* Default DACL: the user, SYSTEM, the job. */
    TOKEN_USER *user = (TOKEN_USER *)user_buf;
    PSID system = well_known(WinLocalSystemSid, sys_buf);
    if (!GetTokenInformation(tok, TokenUser, user_buf, sizeof(user_buf), &len) || !system) {
        r = -errno_from_win(GetLastError());
        goto out;
    }
    EXPLICIT_ACCESS_W ea[3];
    PSID who[3] = {user->User.Sid, system, job_sid};
    for (int i = 0; i < 3; i++)
        ea[i] = (EXPLICIT_ACCESS_W){
            .grfAccessPermissions = GENERIC_ALL,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)who[i]},
        };
    DWORD e = SetEntriesInAclW(3, ea, NULL, &dacl);
    if (e != ERROR_SUCCESS) {
        r = -errno_from_win(e);
        goto out;
    }
    TOKEN_DEFAULT_DACL dd = {dacl};
    if (!SetTokenInformation(tok, TokenDefaultDacl, &dd, sizeof(dd))) {
        r = -errno_from_win(GetLastError());
        goto out;
    }

    /* Medium integrity, when ours is higher (a service's is System). */
    BYTE cur[64];
    TOKEN_MANDATORY_LABEL *cl = (TOKEN_MANDATORY_LABEL *)cur;
    if (GetTokenInformation(own, TokenIntegrityLevel, cur, sizeof(cur), &len) &&
        IsValidSid(cl->Label.Sid) && *GetSidSubAuthorityCount(cl->Label.Sid) > 0 &&
        *GetSidSubAuthority(cl->Label.Sid, *GetSidSubAuthorityCount(cl->Label.Sid) - 1) >
            SECURITY_MANDATORY_MEDIUM_RID) {
        PSID il = well_known(WinMediumLabelSid, il_buf);
        TOKEN_MANDATORY_LABEL tml = {{il, SE_GROUP_INTEGRITY}};
        if (!il ||
            !SetTokenInformation(tok, TokenIntegrityLevel, &tml, sizeof(tml) + GetLengthSid(il))) {
            r = -errno_from_win(GetLastError());
            goto out;
        }
    }
    *ret = tok;
    tok = NULL;
out:
    if (tok)
        CloseHandle(tok);
    if (dacl)
        LocalFree(dacl);
    if (local_admin)
        LocalFree(local_admin);
    CloseHandle(own);
    return r;
}

/* Give sid full control of path (inherited by what is created in it when inherit). */
static int grant(const char *path, PSID sid, bool inherit)
{
    _cleanup_free_ wchar_t *w = wide(path);
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL old = NULL, acl = NULL;

    if (!w)
        return -errno;
    DWORD e = GetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &old,
                                    NULL, &sd);
    if (e == ERROR_SUCCESS) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessPermissions = FILE_ALL_ACCESS,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = inherit ? SUB_CONTAINERS_AND_OBJECTS_INHERIT : NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)sid},
        };
        e = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (e == ERROR_SUCCESS)
        e = SetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, acl,
                                  NULL);
    if (acl)
        LocalFree(acl);
    if (sd)
        LocalFree(sd);
    return e == ERROR_SUCCESS ? 0 : -errno_from_win(e);
}

/* Take sid's ACE off path again, on path itself only: what the job made there keeps its
 * inherited copy (the daemon deletes it all), and no tree walk slows the job's end. */
static void revoke(const char *path, PSID sid)
{
    _cleanup_free_ wchar_t *w = wide(path);
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL old = NULL, acl = NULL;
    HANDLE h = w ? CreateFileW(w, READ_CONTROL | WRITE_DAC,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                               OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL)
                 : INVALID_HANDLE_VALUE;

    if (h == INVALID_HANDLE_VALUE)
        return;
    DWORD e =
        GetSecurityInfo(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &old, NULL, &sd);
    if (e == ERROR_SUCCESS) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessMode = REVOKE_ACCESS,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)sid},
        };
        e = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (e == ERROR_SUCCESS)
        e = SetSecurityInfo(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, acl, NULL);
    if (e != ERROR_SUCCESS)
        log_debug("op=exec_revoke path=%s error=%lu", path, (unsigned long)e);
    if (acl)
        LocalFree(acl);
    if (sd)
        LocalFree(sd);
    CloseHandle(h);
}

/* The jobs' desktop, see the top of the file: "orch-jobs-<pid>\\Default", or NULL. */
static INIT_ONCE desktop_once = INIT_ONCE_STATIC_INIT;
static wchar_t desktop_name[64];
static bool desktop_ok;

static BOOL CALLBACK desktop_init(PINIT_ONCE once, PVOID arg, PVOID *ctx)
{
    BYTE sys[SECURITY_MAX_SID_SIZE], adm[SECURITY_MAX_SID_SIZE], rst[SECURITY_MAX_SID_SIZE];
    BYTE user_buf[256];
    TOKEN_USER *user = (TOKEN_USER *)user_buf;
    PSID who[4] = {well_known(WinLocalSystemSid, sys), well_known(WinBuiltinAdministratorsSid, adm),
                   well_known(WinRestrictedCodeSid, rst), NULL};
    HANDLE own = NULL;
    PACL dacl = NULL;
    DWORD len, e = ERROR_SUCCESS;
    wchar_t ws_name[32];

    (void)once;
    (void)arg;
    (void)ctx;
    /* Our own user too, for an agent that is not SYSTEM (run by hand). */
    if (OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &own) &&
        GetTokenInformation(own, TokenUser, user_buf, sizeof(user_buf), &len))
        who[3] = user->User.Sid;
    if (!who[0] || !who[1] || !who[2])
        e = GetLastError();
    EXPLICIT_ACCESS_W ea[4];
    DWORD n = 0;
    for (int i = 0; i < 4 && e == ERROR_SUCCESS; i++)
        if (who[i])
            ea[n++] = (EXPLICIT_ACCESS_W){
                /* The jobs may use it, not change who may. */
                .grfAccessPermissions =
                    i == 2 ? GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE : GENERIC_ALL,
                .grfAccessMode = GRANT_ACCESS,
                .grfInheritance = NO_INHERITANCE,
                .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)who[i]},
            };
    if (e == ERROR_SUCCESS)
        e = SetEntriesInAclW(n, ea, NULL, &dacl);
    SECURITY_DESCRIPTOR sd;
    SECURITY_ATTRIBUTES sa = {sizeof(sa), &sd, FALSE};
    if (e == ERROR_SUCCESS && (!InitializeSecurityDescriptor(&sd, SECURITY_DESCRIPTOR_REVISION) ||
                               !SetSecurityDescriptorDacl(&sd, TRUE, dacl, FALSE)))
        e = GetLastError();
    if (e == ERROR_SUCCESS) {
        swprintf(ws_name, 32, L"orch-jobs-%lu", (unsigned long)GetCurrentProcessId());
        /* Kept open for the agent's life: the last handle's close would destroy it. */
        HWINSTA ws = CreateWindowStationW(ws_name, 0, GENERIC_ALL, &sa);
        HWINSTA cur = GetProcessWindowStation();
        /* CreateDesktopW makes it in the process's window station: switched for that call
         * only (the agent has no window that would care). */
        HDESK d = ws && cur && SetProcessWindowStation(ws)
                      ? CreateDesktopW(L"Default", NULL, NULL, 0, GENERIC_ALL, &sa)
                      : NULL;
        if (!d)
            e = GetLastError();
        if (cur)
            SetProcessWindowStation(cur);
        if (d)
            swprintf(desktop_name, 64, L"%ls\\Default", ws_name);
        else if (ws)
            CloseWindowStation(ws);
    }
    if (e != ERROR_SUCCESS)
        log_warn("op=exec_desktop error=%lu detail=\"jobs that use user32 may not start\"",
                 (unsigned long)e);
    desktop_ok = e == ERROR_SUCCESS;
    if (dacl)
        LocalFree(dacl);
    if (own)
        CloseHandle(own);
    return TRUE;
}

static wchar_t *job_desktop(void)
{
    InitOnceExecuteOnce(&desktop_once, desktop_init, NULL, NULL);
    return desktop_ok ? desktop_name : NULL;
}

/* --- the job -------------------------------------------------------------------------- */

/* An inbound pipe: the read end ours (overlapped), the write end inheritable for the child.
 * Returns 0 or -errno. */
static int pipe_new(struct pipe_rd *p, HANDLE *wr)
{
    static volatile LONG counter;
    wchar_t name[96];
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};

    swprintf(name, sizeof(name) / sizeof(*name), L"\\\\.\\pipe\\orch-exec-%lu-%ld-%llx",
             (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&counter),
             (unsigned long long)clock_mono_ns());
    p->h = CreateNamedPipeW(
        name, PIPE_ACCESS_INBOUND | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, 1,
        PIPE_BUF_BYTES, PIPE_BUF_BYTES, 0, NULL);
    if (p->h == INVALID_HANDLE_VALUE) {
        p->h = NULL;
        return -errno_from_win(GetLastError());
    }
    *wr = CreateFileW(name, GENERIC_WRITE, 0, &inherit, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (*wr == INVALID_HANDLE_VALUE) {
        int r = -errno_from_win(GetLastError());
        *wr = NULL;
        CloseHandle(p->h);
        p->h = NULL;
        return r;
    }
    p->ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!p->ov.hEvent) {
        int r = -errno_from_win(GetLastError());
        CloseHandle(*wr);
        CloseHandle(p->h);
        *wr = p->h = NULL;
        return r;
    }
    return 0;
}

static void pipe_close(struct pipe_rd *p)
{
    DWORD n;

    if (p->h && p->pending) {
        /* The buffer must outlive the read: wait for the cancel to land. */
        CancelIoEx(p->h, &p->ov);
        GetOverlappedResult(p->h, &p->ov, &n, TRUE);
    }
    p->pending = false;
    if (p->h)
        CloseHandle(p->h);
    p->h = NULL;
}

static void pipe_free(struct pipe_rd *p)
{
    pipe_close(p);
    if (p->ov.hEvent)
        CloseHandle(p->ov.hEvent);
    p->ov.hEvent = NULL;
    FREE_AND_NULL(p->buf);
}

static void job_terminate(struct job *j, const char *why)
{
    if (!TerminateJobObject(j->job, KILL_EXIT_CODE))
        log_debug("op=exec_kill job=%s error=%lu", j->spec->job_id, (unsigned long)GetLastError());
    if (!j->killed)
        log_debug("op=exec_terminate job=%s pid=%lu reason=%s", j->spec->job_id,
                  (unsigned long)j->pid, why);
    j->killed = true;
}

static void job_deliver(struct job *j, int stream, const char *data, size_t len)
{
    if (j->res.output_error < 0 || !j->sink || !j->sink->on_output)
        return;
    int r = j->sink->on_output(j->sink->arg, stream, data, len);
    if (r < 0) {
        j->res.output_error = r;
        job_terminate(j, "output");
    }
}

/* Start the next read on pipe i unless one is pending; EOF or an error closes it. */
static void pipe_arm(struct job *j, int i)
{
    struct pipe_rd *p = &j->p[i];

    if (!p->h || p->pending)
        return;
    if (ReadFile(p->h, p->buf, (DWORD)j->chunk_len, NULL, &p->ov) ||
        GetLastError() == ERROR_IO_PENDING) {
        /* Done or not, completion sets the event; it is read there. */
        p->pending = true;
        return;
    }
    pipe_close(p); /* ERROR_BROKEN_PIPE: every writer is gone */
}

/* Pipe i's event is set: deliver what the read brought and start the next one. */
static void pipe_done(struct job *j, int i)
{
    struct pipe_rd *p = &j->p[i];
    DWORD n = 0;

    if (!p->h || !p->pending)
        return;
    if (!GetOverlappedResult(p->h, &p->ov, &n, FALSE)) {
        if (GetLastError() == ERROR_IO_INCOMPLETE)
            return;
        p->pending = false;
        pipe_close(p);
        return;
    }
    p->pending = false;
    if (n > 0)
        job_deliver(j, i + 1, p->buf, n);
    pipe_arm(j, i);
}

static DWORD job_active(HANDLE job)
{
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION ai;
    if (!QueryInformationJobObject(job, JobObjectBasicAccountingInformation, &ai, sizeof(ai), NULL))
        return 0;
    return ai.ActiveProcesses;
}

/* Wait for a job object to hold no process, at most ms. Returns whether it is empty. */
static bool job_wait_empty(HANDLE job, int64_t ms)
{
    uint64_t until = clock_mono_ns() + ms_to_ns(ms);
    for (;;) {
        if (job_active(job) == 0)
            return true;
        if (clock_mono_ns() >= until)
            return false;
        Sleep(POLL_MS);
    }
}

static void job_reap(struct job *j)
{
    if (j->reaped || WaitForSingleObject(j->proc, 0) != WAIT_OBJECT_0)
        return;
    if (!GetExitCodeProcess(j->proc, &j->code))
        j->code = KILL_EXIT_CODE;
    j->reaped = true;
    j->reaped_ns = clock_mono_ns();
}

static int ms_until(uint64_t now, uint64_t when, int cur)
{
    uint64_t ms;

    if (when <= now)
        return 0;
    ms = (when - now + 999999) / 1000000;
    return ms < (uint64_t)cur ? (int)ms : cur;
}

/* Drive the started job until its main process has exited and its pipes are closed. */
static void job_loop(struct job *j, atomic_bool *cancel)
{
    const struct exec_spec *s = j->spec;
    uint64_t drain = ms_to_ns(s->drain_ms ? s->drain_ms : EXEC_DEFAULT_DRAIN_MS);
    uint64_t deadline = s->timeout_ms ? j->start_ns + ms_to_ns(s->timeout_ms) : 0;

    pipe_arm(j, 0);
    pipe_arm(j, 1);
    for (;;) {
        job_reap(j);
        if (j->reaped && !j->p[0].h && !j->p[1].h)
            return;

        uint64_t now = clock_mono_ns();
        int timeout = TICK_MS;
        if (!j->killed && !j->reaped) {
            if (cancel && atomic_load(cancel)) {
                j->res.cancelled = true;
                job_terminate(j, "cancel");
            } else if (deadline && now >= deadline) {
                j->res.timed_out = true;
                job_terminate(j, "timeout");
            } else if (deadline) {
                timeout = ms_until(now, deadline, timeout);
            }
        }
        if (j->reaped) {
            /* The job is over; only processes it left behind still hold the pipes. */
            if (!j->stragglers_killed && (j->killed || now >= j->reaped_ns + drain)) {
                log_debug("op=exec_kill job=%s pid=%lu reason=stragglers", s->job_id,
                          (unsigned long)j->pid);
                TerminateJobObject(j->job, KILL_EXIT_CODE);
                j->stragglers_killed = true;
                j->stragglers_ns = now;
            }
            if (j->stragglers_killed && now >= j->stragglers_ns + ms_to_ns(ABANDON_MS)) {
                /* Only a process outside the job can hold them now: one the job gave a
                 * duplicate of its handle to. */
                log_warn("op=exec_abandon_pipes job=%s pid=%lu", s->job_id, (unsigned long)j->pid);
                j->res.abandoned_pipes = true;
                pipe_close(&j->p[0]);
                pipe_close(&j->p[1]);
                continue;
            }
            timeout = ms_until(now,
                               j->stragglers_killed ? j->stragglers_ns + ms_to_ns(ABANDON_MS)
                                                    : j->reaped_ns + drain,
                               timeout);
        }

        HANDLE h[3];
        int idx[3], n = 0;
        for (int i = 0; i < 2; i++)
            if (j->p[i].h && j->p[i].pending) {
                h[n] = j->p[i].ov.hEvent;
                idx[n++] = i;
            }
        if (!j->reaped) {
            h[n] = j->proc;
            idx[n++] = -1;
        }
        if (n == 0) {
            Sleep((DWORD)timeout); /* not expected: an open pipe always has a read pending */
            continue;
        }
        DWORD w = WaitForMultipleObjects((DWORD)n, h, FALSE, (DWORD)timeout);
        if (w >= WAIT_OBJECT_0 + (DWORD)n)
            continue; /* timeout: the checks above run again */
        /* Both pipes may be ready: look at each, the one signalled first first. */
        int first = idx[w - WAIT_OBJECT_0];
        if (first >= 0)
            pipe_done(j, first);
        for (int k = 0; k < n; k++)
            if (idx[k] >= 0 && idx[k] != first && j->p[idx[k]].pending &&
                WaitForSingleObject(j->p[idx[k]].ov.hEvent, 0) == WAIT_OBJECT_0)
                pipe_done(j, idx[k]);
    }
}

/* The reason the program did not start, on stream 2. */
static void job_report_failure(struct job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void job_report_failure(struct job *j, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    int r = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (r >= 0 && b.len)
        job_deliver(j, 2, b.data, b.len < j->chunk_len ? b.len : j->chunk_len);
    buf_free(&b);
}

static int job_object_new(struct job *j, char *name, size_t name_len)
{
    static volatile LONG counter;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION li = {0};
    wchar_t wname[JOB_NAME_MAX];

    /* Unique to this run: a name nobody else made (a leftover, or a squatter's object
     * that would hand us its limits and let it watch the job) is never reused. */
    snprintf(name, name_len, JOB_NAME_PREFIX "%s.%lu.%ld", j->spec->job_id,
             (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&counter));
    swprintf(wname, JOB_NAME_MAX, L"%hs", name);
    SetLastError(ERROR_SUCCESS); /* a new object may leave it untouched */
    j->job = CreateJobObjectW(NULL, wname);
    if (j->job && GetLastError() == ERROR_ALREADY_EXISTS) {
        log_warn("op=exec_job_object job=%s name=%s error=exists fallback=unnamed", j->spec->job_id,
                 name);
        CloseHandle(j->job);
        j->job = NULL;
    } else if (!j->job) {
        log_debug("op=exec_job_object job=%s name=%s error=%lu fallback=unnamed", j->spec->job_id,
                  name, (unsigned long)GetLastError());
    }
    if (!j->job) {
        name[0] = '\0';
        j->job = CreateJobObjectW(NULL, NULL);
        if (!j->job)
            return -errno_from_win(GetLastError());
    }
    li.BasicLimitInformation.LimitFlags =
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
    if (!SetInformationJobObject(j->job, JobObjectExtendedLimitInformation, &li, sizeof(li)))
        return -errno_from_win(GetLastError());
    return 0;
}

struct start {
    HANDLE in, out_w, err_w, token;
    PSID sid;
    bool granted_workdir, granted_keep;
    wchar_t *cmdline, *app, *workdir;
    struct env env;
    LPPROC_THREAD_ATTRIBUTE_LIST attrs;
};

static void start_free(struct start *st)
{
    if (st->in)
        CloseHandle(st->in);
    if (st->out_w)
        CloseHandle(st->out_w);
    if (st->err_w)
        CloseHandle(st->err_w);
    if (st->token)
        CloseHandle(st->token);
    if (st->sid)
        FreeSid(st->sid);
    if (st->attrs) {
        DeleteProcThreadAttributeList(st->attrs);
        free(st->attrs);
    }
    free(st->cmdline);
    free(st->app);
    free(st->workdir);
    env_free(&st->env);
}

static void job_free(struct job *j)
{
    pipe_free(&j->p[0]);
    pipe_free(&j->p[1]);
    if (j->proc)
        CloseHandle(j->proc);
    if (j->job)
        CloseHandle(j->job);
}

/* Kill what is left in the job object and wait for it to be empty. */
static void job_cleanup_tree(struct job *j)
{
    if (!j->job)
        return;
    TerminateJobObject(j->job, KILL_EXIT_CODE);
    if (!job_wait_empty(j->job, JOB_EMPTY_MS))
        log_warn("op=exec_job_empty job=%s error=timeout active=%lu", j->spec->job_id,
                 (unsigned long)job_active(j->job));
}

static int exec_win_run(const struct exec_spec *spec, const struct exec_sink *sink,
                        atomic_bool *cancel, struct exec_result *ret)
{
    struct job j = {.spec = spec, .sink = sink};
    struct start st = {0};
    char job_name[JOB_NAME_MAX] = "";
    char *cmdline = NULL;
    _cleanup_free_ wchar_t *in_path = NULL, *argv0 = NULL;
    int r;

    if (!spec || !ret || !spec->argv || !spec->argv[0] || !spec->argv[0][0] ||
        !job_id_valid(spec->job_id) || spec->timeout_ms < 0 || spec->grace_ms < 0 ||
        spec->drain_ms < 0 || spec->timeout_ms > EXEC_MAX_MS || spec->grace_ms > EXEC_MAX_MS ||
        spec->drain_ms > EXEC_MAX_MS || spec->max_output_chunk > EXEC_MAX_CHUNK)
        return -EINVAL;
    j.chunk_len = spec->max_output_chunk ? spec->max_output_chunk : EXEC_DEFAULT_CHUNK;
    for (int i = 0; i < 2; i++) {
        j.p[i].buf = malloc(j.chunk_len);
        if (!j.p[i].buf) {
            r = -ENOMEM;
            goto fail;
        }
    }
    r = exec_win_cmdline(spec->argv, &cmdline);
    if (r == -EINVAL)
        r = 0; /* argv[0] with a quote: no file has that name, see the lookup */
    if (r < 0)
        goto fail;
    if (cmdline) {
        st.cmdline = wide(cmdline);
        free(cmdline);
        if (!st.cmdline) {
            r = -errno;
            goto fail;
        }
    }
    r = env_build(spec->env, &st.env);
    if (r < 0)
        goto fail;
    if (spec->workdir) {
        st.workdir = wide(spec->workdir);
        if (!st.workdir) {
            r = -errno;
            goto fail;
        }
    }

    /* Opened by the agent: the job may not be able to open it itself. */
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};
    in_path = wide(spec->stdin_path ? spec->stdin_path : "NUL");
    if (!in_path) {
        r = -errno;
        goto fail;
    }
    st.in = CreateFileW(in_path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                        OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (st.in == INVALID_HANDLE_VALUE) {
        st.in = NULL;
        r = -errno_from_win(GetLastError());
        goto fail;
    }
    r = pipe_new(&j.p[0], &st.out_w);
    if (r >= 0)
        r = pipe_new(&j.p[1], &st.err_w);
    if (r < 0)
        goto fail;

    /* Where it can run, and as whom. */
    bool workdir_ok = true;
    if (st.workdir) {
        DWORD a = GetFileAttributesW(st.workdir);
        workdir_ok = a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY);
    }
    argv0 = wide(spec->argv[0]);
    if (!argv0) {
        r = -errno;
        goto fail;
    }
    if (workdir_ok && st.cmdline) {
        st.app = program_find(argv0, &st.env, st.workdir);
        if (!st.app && errno == ENOMEM) {
            r = -ENOMEM;
            goto fail;
        }
    }
    r = job_sid_new(&st.sid);
    if (r >= 0)
        r = token_make(st.sid, &st.token);
    if (r < 0) {
        log_error("op=exec_token job=%s error=%d", spec->job_id, -r);
        goto fail;
    }
    if (workdir_ok && spec->workdir) {
        r = grant(spec->workdir, st.sid, true);
        st.granted_workdir = r >= 0;
        if (r >= 0 && spec->keep_file) {
            r = grant(spec->keep_file, st.sid, false);
            st.granted_keep = r >= 0;
        }
        if (r < 0) {
            log_error("op=exec_grant job=%s path=%s error=%d", spec->job_id, spec->workdir, -r);
            goto fail;
        }
    }
    r = job_object_new(&j, job_name, sizeof(job_name));
    if (r < 0)
        goto fail;

    SIZE_T alen = 0;
    InitializeProcThreadAttributeList(NULL, 1, 0, &alen);
    st.attrs = malloc(alen);
    if (!st.attrs) {
        r = -ENOMEM;
        goto fail;
    }
    if (!InitializeProcThreadAttributeList(st.attrs, 1, 0, &alen)) {
        free(st.attrs);
        st.attrs = NULL;
        r = -errno_from_win(GetLastError());
        goto fail;
    }
    HANDLE std3[3] = {st.in, st.out_w, st.err_w};
    if (!UpdateProcThreadAttribute(st.attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, std3,
                                   sizeof(std3), NULL, NULL)) {
        r = -errno_from_win(GetLastError());
        goto fail;
    }

    j.start_ns = clock_mono_ns();
    j.res.exit_code = -1;
    if (!workdir_ok) {
        j.res.exit_code = EXEC_EXIT_NOT_FOUND;
        j.reaped_ns = j.start_ns;
        job_report_failure(&j, "orch-agent: cannot enter workdir '%.*s': %s\n", MSG_ARG_MAX,
                           spec->workdir, "no such directory");
        goto done;
    }
    if (!st.app) {
        j.res.exit_code = EXEC_EXIT_NOT_FOUND;
        j.reaped_ns = j.start_ns;
        job_report_failure(&j, "orch-agent: %.*s: command not found\n", MSG_ARG_MAX, spec->argv[0]);
        goto done;
    }

    STARTUPINFOEXW si = {0};
    PROCESS_INFORMATION pi = {0};
    si.StartupInfo.cb = sizeof(si);
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = st.in;
    si.StartupInfo.hStdOutput = st.out_w;
    si.StartupInfo.hStdError = st.err_w;
    si.StartupInfo.lpDesktop = job_desktop();
    si.lpAttributeList = st.attrs;
    if (!CreateProcessAsUserW(st.token, st.app, st.cmdline, NULL, NULL, TRUE,
                              CREATE_SUSPENDED | CREATE_NO_WINDOW | CREATE_UNICODE_ENVIRONMENT |
                                  EXTENDED_STARTUPINFO_PRESENT,
                              st.env.block, st.workdir, &si.StartupInfo, &pi)) {
        DWORD e = GetLastError();
        char why[256];
        if (errno_from_win(e) == ENOMEM || e == ERROR_PRIVILEGE_NOT_HELD) {
            r = e == ERROR_PRIVILEGE_NOT_HELD ? -EPERM : -ENOMEM;
            goto fail;
        }
        win_strerror(e, why, sizeof(why));
        j.res.exit_code =
            e == ERROR_FILE_NOT_FOUND || e == ERROR_PATH_NOT_FOUND || e == ERROR_DIRECTORY
                ? EXEC_EXIT_NOT_FOUND
                : EXEC_EXIT_NOEXEC;
        j.reaped_ns = j.start_ns;
        job_report_failure(&j, "orch-agent: %.*s: %s\n", MSG_ARG_MAX, spec->argv[0], why);
        goto done;
    }
    j.proc = pi.hProcess;
    j.pid = pi.dwProcessId;
    if (!AssignProcessToJobObject(j.job, pi.hProcess)) {
        /* Not one instruction of it has run: no job at all rather than one outside. */
        r = -errno_from_win(GetLastError());
        TerminateProcess(pi.hProcess, KILL_EXIT_CODE);
        WaitForSingleObject(pi.hProcess, INFINITE);
        CloseHandle(pi.hThread);
        goto fail;
    }
    /* Only the child may hold the write ends, or we would never see EOF. */
    CloseHandle(st.out_w);
    CloseHandle(st.err_w);
    st.out_w = st.err_w = NULL;
    j.res.started = true;
    j.res.user_switched = true;
    log_debug("op=exec_start job=%s pid=%lu job_object=%s user=restricted", spec->job_id,
              (unsigned long)j.pid, job_name[0] ? job_name : "unnamed");
    /* Recorded while it is still suspended: an agent killed from here on leaves a record
     * its successor finds the job with (and the job object kills the tree anyway). */
    if (sink && sink->on_tree) {
        struct exec_tree tree = {.cgroup = job_name[0] ? job_name : NULL};
        if (exec_tree_probe((int)j.pid, &tree) == 0)
            sink->on_tree(sink->arg, &tree);
    }
    if (sink && sink->on_started)
        sink->on_started(sink->arg, (int)j.pid);
    ResumeThread(pi.hThread);
    CloseHandle(pi.hThread);
    job_loop(&j, cancel);
    if (j.code == KILL_EXIT_CODE) /* by run() or exec_tree_kill() */
        j.res.exit_code = -1;
    else
        j.res.exit_code = (int)j.code;

done:
    job_cleanup_tree(&j);
    j.res.duration_ms = (int64_t)((j.reaped_ns - j.start_ns) / 1000000);
    log_debug("op=exec_end job=%s pid=%lu exit=%d timed_out=%d cancelled=%d duration_ms=%lld",
              spec->job_id, (unsigned long)j.pid, j.res.exit_code, j.res.timed_out, j.res.cancelled,
              (long long)j.res.duration_ms);
    *ret = j.res;
    r = 0;
fail:
    /* The tree is gone: its SID will never be seen again. */
    if (st.granted_workdir)
        revoke(spec->workdir, st.sid);
    if (st.granted_keep)
        revoke(spec->keep_file, st.sid);
    start_free(&st);
    job_free(&j);
    return r;
}

const struct exec_ops exec_win_ops = {
    .name = "windows",
    .run = exec_win_run,
};

const struct exec_ops *exec_default_ops(void)
{
    return &exec_win_ops;
}

/* --- trees ---------------------------------------------------------------------------- */

/* Nothing to enable: a job object holds every process the job starts, wherever its parent
 * is; orphans cannot leave it. */
int exec_subreaper_enable(void)
{
    return 0;
}

/* The boot's identity: its time in 100 ns since 1601, as Windows keeps it. */
static void boot_id(char out[40])
{
    SYSTEM_TIMEOFDAY_INFORMATION tod;
    if (NtQuerySystemInformation(SystemTimeOfDayInformation, &tod, sizeof(tod), NULL) >= 0)
        snprintf(out, 40, "win-%llu", (unsigned long long)tod.BootTime.QuadPart);
    else
        snprintf(out, 40, "win-unknown");
}

static int process_ctime(HANDLE h, uint64_t *ret)
{
    FILETIME c, e, k, u;
    if (!GetProcessTimes(h, &c, &e, &k, &u))
        return -errno_from_win(GetLastError());
    *ret = ((uint64_t)c.dwHighDateTime << 32) | c.dwLowDateTime;
    return 0;
}

int exec_tree_probe(int pid, struct exec_tree *tree)
{
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
    if (!h)
        return GetLastError() == ERROR_INVALID_PARAMETER ? -ESRCH : -errno_from_win(GetLastError());
    uint64_t ct;
    int r = process_ctime(h, &ct);
    CloseHandle(h);
    if (r < 0)
        return r;
    tree->pgid = pid;
    tree->start_ticks = ct;
    boot_id(tree->boot_id);
    return 0;
}

/* Processes of the recorded tree that a job object does not find (it was unnamed): the
 * leader while it is the same process (same creation time) and, through live members
 * only, their descendants: a process whose parent pid is a live member's and that was
 * created after it is that member's child, since the pid was the member's all along. */
struct tree_walk {
    DWORD pid[256];
    HANDLE h[256];
    uint64_t ctime[256];
    size_t n;
};

static void walk_add(struct tree_walk *w, DWORD pid, uint64_t want_ctime, bool exact)
{
    if (w->n == ELEMENTSOF(w->pid))
        return;
    for (size_t i = 0; i < w->n; i++)
        if (w->pid[i] == pid)
            return;
    HANDLE h = OpenProcess(PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE,
                           FALSE, pid);
    uint64_t ct;
    if (!h)
        return;
    if (process_ctime(h, &ct) < 0 || (exact ? ct != want_ctime : ct < want_ctime) ||
        WaitForSingleObject(h, 0) == WAIT_OBJECT_0) {
        CloseHandle(h);
        return;
    }
    w->pid[w->n] = pid;
    w->h[w->n] = h;
    w->ctime[w->n++] = ct;
}

static void walk_children(struct tree_walk *w)
{
    for (size_t done = 0; done < w->n;) {
        HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if (snap == INVALID_HANDLE_VALUE)
            return;
        size_t upto = w->n;
        PROCESSENTRY32W pe = {.dwSize = sizeof(pe)};
        for (BOOL ok = Process32FirstW(snap, &pe); ok; ok = Process32NextW(snap, &pe))
            for (size_t i = done; i < upto; i++)
                if (pe.th32ParentProcessID == w->pid[i] && pe.th32ProcessID != w->pid[i])
                    walk_add(w, pe.th32ProcessID, w->ctime[i], false);
        CloseHandle(snap);
        done = upto;
    }
}

int exec_tree_kill(const struct exec_tree *tree, const char *const *env_tags, int64_t wait_ms)
{
    uint64_t until = clock_mono_ns() + ms_to_ns(wait_ms > 0 ? wait_ms : 0);
    int found = 0;
    bool busy = false;

    /* env_tags are not read on Windows: a process cannot leave its job object, and reading
     * another process's environment means reading its memory. */
    (void)env_tags;
    if (tree->cgroup && strncmp(tree->cgroup, JOB_NAME_PREFIX, strlen(JOB_NAME_PREFIX)) == 0) {
        _cleanup_free_ wchar_t *w = wide(tree->cgroup);
        HANDLE job = w ? OpenJobObjectW(JOB_OBJECT_TERMINATE | JOB_OBJECT_QUERY, FALSE, w) : NULL;
        if (job) {
            found += (int)job_active(job);
            TerminateJobObject(job, KILL_EXIT_CODE);
            int64_t left = (int64_t)((until - clock_mono_ns()) / 1000000);
            busy = !job_wait_empty(job, clock_mono_ns() < until ? left : 0);
            CloseHandle(job);
        }
    }
    if (tree->pgid > 0 && tree->start_ticks) {
        struct tree_walk *w = calloc(1, sizeof(*w));
        if (!w)
            return -ENOMEM;
        walk_add(w, (DWORD)tree->pgid, tree->start_ticks, true);
        walk_children(w);
        for (size_t i = 0; i < w->n; i++)
            TerminateProcess(w->h[i], KILL_EXIT_CODE);
        found += (int)w->n;
        for (size_t i = 0; i < w->n; i++) {
            uint64_t now = clock_mono_ns();
            DWORD ms = now < until ? (DWORD)((until - now) / 1000000) : 0;
            if (WaitForSingleObject(w->h[i], ms) != WAIT_OBJECT_0)
                busy = true;
            CloseHandle(w->h[i]);
        }
        free(w);
    }
    return busy ? -ETIMEDOUT : found;
}
