/* exec-tree-win.c: a job's tree on Windows after the fact: exec_tree_probe (what on_tree
 * records), exec_tree_kill (what a later agent process, or the daemon giving an attempt
 * up, ends), exec_subreaper_enable (nothing to do), and the job object's count of
 * processes that run() waits on.
 *
 * A tree is its job object, named in exec_tree.cgroup, and its main process: pgid is its
 * pid, start_ticks its creation time (a FILETIME, wall-clock 100 ns since 1601, so a pid
 * given to another process since is never taken for it, across boots too), boot_id the
 * boot's time (for the record only). With KILL_ON_JOB_CLOSE a crashed agent's jobs die
 * with it; exec_tree_kill still opens the job object by name and terminates what it holds
 * (a job object outlives the agent only while another process holds a handle to it), then
 * kills the main process if it is still the same, with its descendants, found through
 * live members only: a process whose parent pid is a live member's and that was created
 * after it is that member's child, since the pid was the member's all along. env_tags are
 * not read: a process cannot leave its job object, and reading another process's
 * environment means reading its memory.
 */
#include "agent/exec.h"
#include "agent/exec-win.h"

#include <tlhelp32.h>
#include <winternl.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"

static uint64_t ms_to_ns(int64_t ms)
{
    return (uint64_t)ms * UINT64_C(1000000);
}

DWORD exec_win_job_active(HANDLE job)
{
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION ai;
    if (!QueryInformationJobObject(job, JobObjectBasicAccountingInformation, &ai, sizeof(ai), NULL))
        return 0;
    return ai.ActiveProcesses;
}

/* Wait for a job object to hold no process, at most ms. Returns whether it is empty. */
bool exec_win_job_wait_empty(HANDLE job, int64_t ms)
{
    uint64_t until = clock_mono_ns() + ms_to_ns(ms);
    for (;;) {
        if (exec_win_job_active(job) == 0)
            return true;
        if (clock_mono_ns() >= until)
            return false;
        Sleep(EXEC_WIN_POLL_MS);
    }
}

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
        return -exec_win_errno(GetLastError());
    *ret = ((uint64_t)c.dwHighDateTime << 32) | c.dwLowDateTime;
    return 0;
}

int exec_tree_probe(int pid, struct exec_tree *tree)
{
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
    if (!h)
        return GetLastError() == ERROR_INVALID_PARAMETER ? -ESRCH : -exec_win_errno(GetLastError());
    uint64_t ct = 0;
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
    uint64_t ct = 0;
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
    if (tree->cgroup &&
        strncmp(tree->cgroup, EXEC_WIN_JOB_PREFIX, strlen(EXEC_WIN_JOB_PREFIX)) == 0) {
        _cleanup_free_ wchar_t *w = exec_win_wide(tree->cgroup);
        HANDLE job = w ? OpenJobObjectW(JOB_OBJECT_TERMINATE | JOB_OBJECT_QUERY, FALSE, w) : NULL;
        if (job) {
            found += (int)exec_win_job_active(job);
            TerminateJobObject(job, EXEC_WIN_KILL_CODE);
            int64_t left = (int64_t)((until - clock_mono_ns()) / 1000000);
            busy = !exec_win_job_wait_empty(job, clock_mono_ns() < until ? left : 0);
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
            TerminateProcess(w->h[i], EXEC_WIN_KILL_CODE);
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
    return busy && wait_ms > 0 ? -ETIMEDOUT : found;
}
