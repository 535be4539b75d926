/* exec-win.c: exec_ops on Windows ("windows"): CreateProcessAsUserW into a Job Object,
 * under a restricted token (exec-token-win.c), with the command line, environment and
 * program path of exec-cmdline-win.c, output through two overlapped named pipes read by
 * run()'s own thread. exec-tree-win.c has the exec_tree_* side.
 *
 * The tree. Every job gets a Job Object of its own, named Global\orch-job-<job_id>.<agent
 * pid>.<n> (given to on_tree as exec_tree.cgroup, so that the daemon records it and a later
 * agent process can open it in exec_tree_kill; unnamed when the name cannot be had: an
 * agent without SeCreateGlobalPrivilege), with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE (when
 * the agent dies, its handle closes and Windows kills every process of the job: the
 * agent's death ends its jobs' trees) and JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION (a
 * crash ends the process instead of waiting on an error dialog nobody sees), and without
 * JOB_OBJECT_LIMIT_BREAKAWAY_OK: every process the job starts is in it, there is no way
 * out like setsid on POSIX. The main process is created suspended, put in the job,
 * recorded (on_tree), and only then resumed, so that nothing of the job runs outside the
 * object. (Wine 8 never frees a job object that held a process, name included: hence a
 * name per run, never reused.)
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
 * Start. Not found, or the workdir missing: exit 127; found but not startable: exit 126;
 * the reason (FormatMessage's, for the latter) on stream 2, started false. A token or a
 * grant that cannot be made is the agent's failure: run() returns it, nothing started.
 *
 * Handles. The child inherits exactly its stdin (spec->stdin_path, or NUL), stdout and
 * stderr (PROC_THREAD_ATTRIBUTE_HANDLE_LIST). Those must be inheritable handles; another
 * CreateProcess with bInheritHandles and no list, anywhere in the agent, would inherit
 * them too, so the agent has none (this file is its only CreateProcess). CREATE_NO_WINDOW:
 * a console program gets a console without a window. (Wine makes that console's
 * conhost.exe a child of the agent, outside the job object; on Windows it is the job's.)
 *
 * Exit codes: GetExitCodeProcess's DWORD as an int (NTSTATUS codes such as 0xC0000005
 * are negative; exit(-1) gives -1 like "no exit"); -1 when the main process was killed by
 * us; term_signal is always 0. Output: on_output gets what each ReadFile returned, at
 * most max_output_chunk bytes, in order per stream.
 */
#include "agent/exec.h"
#include "agent/exec-impl.h"
#include "agent/exec-win.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define TICK_MS        100 /* the promised latency for cancel and timeout */
#define ABANDON_MS     1000
#define JOB_EMPTY_MS   5000 /* bound on waiting for a terminated job object to empty */
#define MSG_ARG_MAX    200
#define PIPE_BUF_BYTES (64 * 1024)
#define JOB_NAME_MAX   (sizeof(EXEC_WIN_JOB_PREFIX) + EXEC_JOB_ID_MAX + 32) /* ".<pid>.<n>" */

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

int exec_win_errno(DWORD e)
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
    s[l] = '\0';
    /* Messages with an insert ("%1 is not a valid Win32 application") name the program. */
    char *ins = strstr(s, "%1");
    if (ins)
        snprintf(out, len, "%.*sthe program%s (error %lu)", (int)(ins - s), s, ins + 2,
                 (unsigned long)e);
    else
        snprintf(out, len, "%s (error %lu)", s, (unsigned long)e);
    free(s);
}

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
        return -exec_win_errno(GetLastError());
    }
    *wr = CreateFileW(name, GENERIC_WRITE, 0, &inherit, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (*wr == INVALID_HANDLE_VALUE) {
        int r = -exec_win_errno(GetLastError());
        *wr = NULL;
        CloseHandle(p->h);
        p->h = NULL;
        return r;
    }
    p->ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!p->ov.hEvent) {
        int r = -exec_win_errno(GetLastError());
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
    if (!TerminateJobObject(j->job, EXEC_WIN_KILL_CODE))
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

static void job_reap(struct job *j)
{
    if (j->reaped || WaitForSingleObject(j->proc, 0) != WAIT_OBJECT_0)
        return;
    if (!GetExitCodeProcess(j->proc, &j->code))
        j->code = EXEC_WIN_KILL_CODE;
    j->reaped = true;
    j->reaped_ns = clock_mono_ns();
}

/* Drive the started job until its main process has exited and its pipes are closed. */
static void job_loop(struct job *j, atomic_bool *cancel)
{
    const struct exec_spec *s = j->spec;
    uint64_t drain = exec_ms_to_ns(s->drain_ms ? s->drain_ms : EXEC_DEFAULT_DRAIN_MS);
    uint64_t deadline = s->timeout_ms ? j->start_ns + exec_ms_to_ns(s->timeout_ms) : 0;

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
                timeout = exec_ms_until(now, deadline, timeout);
            }
        }
        if (j->reaped) {
            /* The job is over; only processes it left behind still hold the pipes. */
            if (!j->stragglers_killed && (j->killed || now >= j->reaped_ns + drain)) {
                log_debug("op=exec_kill job=%s pid=%lu reason=stragglers", s->job_id,
                          (unsigned long)j->pid);
                TerminateJobObject(j->job, EXEC_WIN_KILL_CODE);
                j->stragglers_killed = true;
                j->stragglers_ns = now;
            }
            if (j->stragglers_killed && now >= j->stragglers_ns + exec_ms_to_ns(ABANDON_MS)) {
                /* Only a process outside the job can hold them now: one the job gave a
                 * duplicate of its handle to. */
                log_warn("op=exec_abandon_pipes job=%s pid=%lu", s->job_id, (unsigned long)j->pid);
                j->res.abandoned_pipes = true;
                pipe_close(&j->p[0]);
                pipe_close(&j->p[1]);
                continue;
            }
            timeout =
                exec_ms_until(now,
                              j->stragglers_killed ? j->stragglers_ns + exec_ms_to_ns(ABANDON_MS)
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
    snprintf(name, name_len, EXEC_WIN_JOB_PREFIX "%s.%lu.%ld", j->spec->job_id,
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
            return -exec_win_errno(GetLastError());
    }
    li.BasicLimitInformation.LimitFlags =
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
    if (!SetInformationJobObject(j->job, JobObjectExtendedLimitInformation, &li, sizeof(li)))
        return -exec_win_errno(GetLastError());
    return 0;
}

struct start {
    HANDLE in, out_w, err_w, token;
    PSID sid;
    bool granted_workdir, granted_keep;
    wchar_t *cmdline, *app, *workdir;
    struct exec_win_env env;
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
    exec_win_env_free(&st->env);
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
    TerminateJobObject(j->job, EXEC_WIN_KILL_CODE);
    if (!exec_win_job_wait_empty(j->job, JOB_EMPTY_MS))
        log_warn("op=exec_job_empty job=%s error=timeout active=%lu", j->spec->job_id,
                 (unsigned long)exec_win_job_active(j->job));
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

    if (!ret || !exec_spec_valid(spec))
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
        st.cmdline = exec_win_wide(cmdline);
        free(cmdline);
        if (!st.cmdline) {
            r = -errno;
            goto fail;
        }
    }
    r = exec_win_env_build(spec->env, &st.env);
    if (r < 0)
        goto fail;
    if (spec->workdir) {
        st.workdir = exec_win_wide(spec->workdir);
        if (!st.workdir) {
            r = -errno;
            goto fail;
        }
        /* Windows' separators (the daemon joins paths with '/'): the job sees this path
         * as its current directory, and the lookup joins names to it. */
        for (wchar_t *c = st.workdir; *c; c++)
            if (*c == L'/')
                *c = L'\\';
    }

    /* Opened by the agent: the job may not be able to open it itself. */
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};
    in_path = exec_win_wide(spec->stdin_path ? spec->stdin_path : "NUL");
    if (!in_path) {
        r = -errno;
        goto fail;
    }
    st.in = CreateFileW(in_path, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                        OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (st.in == INVALID_HANDLE_VALUE) {
        st.in = NULL;
        r = -exec_win_errno(GetLastError());
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
    argv0 = exec_win_wide(spec->argv[0]);
    if (!argv0) {
        r = -errno;
        goto fail;
    }
    if (workdir_ok && st.cmdline) {
        st.app = exec_win_program_find(argv0, &st.env, st.workdir);
        if (!st.app && errno == ENOMEM) {
            r = -ENOMEM;
            goto fail;
        }
    }
    r = exec_win_sid_new(&st.sid);
    if (r >= 0)
        r = exec_win_token_make(st.sid, &st.token);
    if (r < 0) {
        log_error("op=exec_token job=%s error=%d", spec->job_id, -r);
        goto fail;
    }
    if (workdir_ok && spec->workdir) {
        r = exec_win_grant(spec->workdir, st.sid, true);
        st.granted_workdir = r >= 0;
        if (r >= 0 && spec->keep_file) {
            r = exec_win_grant(spec->keep_file, st.sid, false);
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
        r = -exec_win_errno(GetLastError());
        goto fail;
    }
    HANDLE std3[3] = {st.in, st.out_w, st.err_w};
    if (!UpdateProcThreadAttribute(st.attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, std3,
                                   sizeof(std3), NULL, NULL)) {
        r = -exec_win_errno(GetLastError());
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
    si.StartupInfo.lpDesktop = exec_win_desktop();
    si.lpAttributeList = st.attrs;
    if (!CreateProcessAsUserW(st.token, st.app, st.cmdline, NULL, NULL, TRUE,
                              CREATE_SUSPENDED | CREATE_NO_WINDOW | CREATE_UNICODE_ENVIRONMENT |
                                  EXTENDED_STARTUPINFO_PRESENT,
                              st.env.block, st.workdir, &si.StartupInfo, &pi)) {
        DWORD e = GetLastError();
        char why[256];
        if (exec_win_errno(e) == ENOMEM || e == ERROR_PRIVILEGE_NOT_HELD) {
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
        r = -exec_win_errno(GetLastError());
        TerminateProcess(pi.hProcess, EXEC_WIN_KILL_CODE);
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
    if (j.code == EXEC_WIN_KILL_CODE) /* by run() or exec_tree_kill() */
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
        exec_win_revoke(spec->workdir, st.sid);
    if (st.granted_keep)
        exec_win_revoke(spec->keep_file, st.sid);
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
