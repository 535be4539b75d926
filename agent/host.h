/* host.h: what the daemon does differently per OS, behind one small interface: who jobs
 * run as, the agent's own directories, removing a job's files, a job's command line and
 * default environment. One implementation per OS: host-posix.c (Linux and
 * other POSIX systems) and host-win.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "agent/config.h"
#include "agent/exec-uids.h"
#include "agent/exec.h"

/* Who jobs run as. */
struct host_job_identity {
    bool switch_user;       /* jobs run as user (a root agent); else as the agent itself */
    struct exec_user user;  /* switch_user: the job user (with uids: the probe's) */
    char name[72];          /* for log lines: the account, "uid A-B", "restricted-token" */
    struct exec_uids *uids; /* exec.uid_range: each running job a uid of its own; NULL =
                               none. Owned: free with exec_uids_free() */
};

/* Decide who jobs run as from cfg (exec.user, exec.allow_root, exec.uid_range) and who the
 * agent is. Returns 0 with *ret filled, or -1 after saying why on stderr (refused: jobs
 * would run as root, a setting this OS does not have, ...). */
int host_job_identity(const struct agent_config *cfg, struct host_job_identity *ret);

/* The agent's state directory: check that it is a directory only the agent (and the OS's
 * administrators) can change, and make it so: POSIX: owned by the agent's user, not
 * writable by others, then given mode; Windows: a protected DACL (SYSTEM and
 * Administrators full control, nothing inherited; mode is ignored). Returns 0, -ENOTDIR,
 * -EPERM (someone else's, writable by others, a link) or -errno. */
int host_own_dir(const char *dir, mode_t mode);

/* Before `register` writes the credential: POSIX: nothing (the directory is made by
 * agent_state_probe(), its modes checked by the daemon); Windows: create the state
 * directory and its parents, and give it its protected DACL (host_own_dir()) so that
 * agent.json never inherits ProgramData's. Returns 0 or -errno. */
int host_state_dir_init(const char *dir);

/* A directory inside the state directory, restricted to mode (POSIX chmod; Windows: it
 * inherits the state directory's DACL, nothing to do). Returns 0 or -errno. */
int host_restrict_dir(const char *dir, mode_t mode);

/* Hand a job's new workdir and its open result file (fd) over to user; NULL user: nothing
 * to do. Returns 0 or -errno. */
int host_give_to_job(const char *workdir, int fd, const struct exec_user *user);

/* Remove path and everything below it, never following a link (a job may leave links to
 * anywhere). What cannot be removed is logged at debug level. */
void host_rm_rf(const char *path);

/* A cgroup v2 directory for this agent's jobs (Linux), malloc'd; NULL when there is none
 * or it is not writable (jobs then go without). */
char *host_cgroup_dir(const char *agent_id);

/* Entries of a job's argv beyond its arguments, the terminating NULL included. */
#define HOST_ARGV_EXTRA 6

/* The argv of a job: the host's shell runs command (POSIX: /bin/sh -c COMMAND orch-job
 * ARGS...; Windows: cmd.exe /d /s /c COMMAND ARGS...), or, for a package job (entrypoint
 * not NULL: a relative path checked safe, [A-Za-z0-9_./-], no ..), the package's
 * entrypoint in the workdir instead of command. argv has room for nargs +
 * HOST_ARGV_EXTRA entries; buf (len >= RELPATH_MAX + 32 bytes) holds text built for it;
 * args are borrowed, as argv's entries are. */
void host_job_argv(const char **argv, const char *command, const char *entrypoint,
                   const char *const *args, size_t nargs, char *buf, size_t len);

/* The variables a job's environment gets unless its own env sets them (PATH, HOME, LANG on
 * POSIX; PATH, SystemRoot, ComSpec, TEMP... on Windows), with workdir as its home and
 * temporary directory: a NULL-terminated malloc'd array of malloc'd "K=V" strings, or NULL
 * on ENOMEM. */
char **host_env_defaults(const char *workdir);

/* Whether the variable names a (alen bytes) and b (NUL-terminated) are the same variable:
 * case-sensitive on POSIX, not on Windows. */
bool host_env_name_eq(const char *a, size_t alen, const char *b);

/* s with the OS's variables expanded (Windows: %ProgramData% and the like; POSIX: s as
 * is), malloc'd; NULL on ENOMEM. */
char *host_expand(const char *s);
