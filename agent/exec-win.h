/* exec-win.h: what the parts of exec_ops on Windows share, and what their tests reach:
 * exec-win.c runs a job, exec-cmdline-win.c makes its command line, environment block and
 * program path, exec-token-win.c its identity, exec-tree-win.c finds and ends trees. The
 * daemon uses exec.h only. */
#pragma once

#include <windows.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The exit code TerminateJobObject gives the processes run() or exec_tree_kill() kill
 * ('orch'): a main process that ends with it was killed by us (exit_code -1). */
#define EXEC_WIN_KILL_CODE  0x6F726368u
#define EXEC_WIN_JOB_PREFIX "Global\\orch-job-" /* a job object's name, see exec-win.c */
#define EXEC_WIN_POLL_MS    10

/* GetLastError()'s e as an errno value (EIO for what has no better one). */
int exec_win_errno(DWORD e);
/* UTF-8 to a malloc'd UTF-16 string, or NULL with errno EINVAL (not UTF-8) or ENOMEM. */
wchar_t *exec_win_wide(const char *s);

/* argv (NULL-terminated, UTF-8) joined into one Windows command line, see
 * exec-cmdline-win.c. Returns 0 with *ret malloc'd, -EINVAL (argv[0] empty or holding a
 * '"') or -ENOMEM. */
int exec_win_cmdline(const char *const *argv, char **ret);

struct exec_win_env_ent {
    wchar_t *s;  /* "NAME=value", owned */
    size_t name; /* length of NAME */
};

/* A job's environment: its entries and the block CreateProcess takes (sorted). */
struct exec_win_env {
    struct exec_win_env_ent *v;
    size_t n;
    wchar_t *block;
};

/* Build e (zeroed by the caller) from env ("K=V", NULL-terminated, may be NULL) and the
 * defaults. Returns 0, -EINVAL (not UTF-8) or -ENOMEM; free with exec_win_env_free() in
 * every case. */
int exec_win_env_build(const char *const *env, struct exec_win_env *e);
void exec_win_env_free(struct exec_win_env *e);
/* The file to run for argv0 (malloc'd), or NULL with errno ENOENT or ENOMEM. workdir
 * may be NULL (the agent's current directory). */
wchar_t *exec_win_program_find(const wchar_t *argv0, const struct exec_win_env *e,
                               const wchar_t *workdir);

/* A new random per-job SID (free with FreeSid). Returns 0 or -errno. */
int exec_win_sid_new(PSID *ret);
/* The job's restricted primary token for job_sid (caller closes it). Returns 0 or
 * -errno. */
int exec_win_token_make(PSID job_sid, HANDLE *ret);
/* Give sid full control of path (inherited below it when inherit), or take it back
 * (on path itself only; failures logged at debug). */
int exec_win_grant(const char *path, PSID sid, bool inherit);
void exec_win_revoke(const char *path, PSID sid);
/* "winsta\\desktop" for lpDesktop (made on the first call, kept for the process's life),
 * or NULL when it could not be made. Thread-safe. */
wchar_t *exec_win_desktop(void);

/* How many processes the job object holds now (0 when it cannot be asked). */
DWORD exec_win_job_active(HANDLE job);
/* Wait up to ms for the job object to hold none. Returns whether it is empty. */
bool exec_win_job_wait_empty(HANDLE job, int64_t ms);
