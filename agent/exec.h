/* exec.h: running one job as a tree of child processes, behind one interface per OS.
 *
 * The daemon drives one job with one exec_ops.run() call on the slot's own thread; the call
 * returns when the job is over: its main process has been reaped and its output pipes are
 * closed (or abandoned, see below). run() is reentrant: several slots may run at once. It
 * installs no signal handlers, never waits for any child but its own, and does not need
 * SIGCHLD.
 *
 * A job's tree ends with the job: whatever is left of it when the main process has exited
 * (background or daemonized processes) is killed with SIGKILL before run() returns.
 *
 * What the daemon must do for this to hold: keep SIGCHLD at its default (SIG_IGN would
 * reap our children before we can read their status), never waitpid(-1), and, when it runs
 * as PID 1 in a container, reap the orphans reparented to it by pid (or leave PID 1 to an
 * init such as tini). Ignored signals and the signal mask of the calling thread do not
 * reach the job: the child resets them.
 *
 * What every job gets, whatever the spec: a descriptor table of 0..2 only, umask 077,
 * PR_SET_NO_NEW_PRIVS (no set-uid program can give it more than it has), and
 * PR_SET_PDEATHSIG(SIGKILL) on its leader. The kernel sends the latter when the *thread*
 * that forked the leader exits, not the process: run() keeps that thread inside run()
 * until the leader is reaped, so it only fires when the whole agent dies (kill -9).
 * What the spec may add: another user (uid/gid), a PID and mount namespace with its own
 * /proc (isolate), a cgroup (cgroup_parent). See docs/agent.md for the model.
 *
 * On Windows (exec-win.c, exec_win_ops) the same interface holds with Windows' means: a
 * Job Object instead of the process group, cgroup and namespaces (KILL_ON_JOB_CLOSE ends
 * the tree when the agent dies; nothing a job starts can leave it); a restricted token
 * instead of spec->user (ignored; user_switched says the token was in force); no polite
 * signal: a timeout or cancel terminates the job object at once (grace_ms unused);
 * term_signal is 0, exit_code the process's exit code; exec_tree.cgroup is the job
 * object's name, pgid the main process's pid, start_ticks its creation FILETIME; env_tags
 * are not read. See exec-win.c's opening comment.
 *
 * Orphans. A process that leaves the job's process group (setsid) and whose parent exits
 * is re-parented to the nearest subreaper. When the daemon called exec_subreaper_enable(),
 * that is the agent: after the job, run() kills and reaps the agent's children whose
 * initial environment holds all of spec->env_tags (the attempt's), then reaps any
 * other exited orphan; without a PID namespace or a cgroup this is what ends them. A job
 * in a PID namespace of its own (isolate) leaves no orphan to the agent (they go to its
 * init and die with it): then this scan of the host's processes is skipped.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXEC_DEFAULT_CHUNK    (64 * 1024)                       /* max_output_chunk when 0 */
#define EXEC_DEFAULT_GRACE_MS 10000                             /* grace_ms when 0 */
#define EXEC_DEFAULT_DRAIN_MS 2000                              /* drain_ms when 0 */
#define EXEC_MAX_MS           (INT64_C(366) * 24 * 3600 * 1000) /* bound on the *_ms fields */
#define EXEC_MAX_CHUNK        (16 * 1024 * 1024)                /* bound on max_output_chunk */

/* Exit codes run() reports, like a shell, when the job's program could not be started. The
 * reason is delivered as text on stream 2 through on_output. */
#define EXEC_EXIT_NOT_FOUND 127 /* command not found, or the workdir could not be entered */
#define EXEC_EXIT_NOEXEC    126 /* found but could not be executed (permission denied…) */

struct exec_user {
    unsigned uid, gid;
};

/* What to run. Every pointer is borrowed for the duration of run() only. */
struct exec_spec {
    /* NULL-terminated, argv[0] non-empty. argv[0] without a '/' is looked up in the PATH of
     * env (default "/bin:/usr/bin" when env has none), after the chdir to workdir, like
     * execvpe(); a file without a #! line is run by /bin/sh. */
    const char *const *argv;
    /* NULL-terminated "K=V" entries: the job's whole environment; NULL = empty. */
    const char *const *env;
    /* The child chdirs there before exec; created by the caller. NULL = the agent's cwd. */
    const char *workdir;
    int64_t timeout_ms;      /* from the start; 0 = none */
    int64_t grace_ms;        /* SIGTERM -> SIGKILL delay on timeout, cancel or sink error;
                              * 0 = EXEC_DEFAULT_GRACE_MS */
    int64_t drain_ms;        /* how long processes left behind by the main process may keep
                              * the output pipes open before they are killed; 0 = default.
                              * An isolated job's are killed with its main process. */
    size_t max_output_chunk; /* max bytes per on_output call; 0 = EXEC_DEFAULT_CHUNK */
    /* A cgroup v2 directory the agent may create children in, e.g.
     * "/sys/fs/cgroup/orch-agent". When usable (a directory we can create
     * "job-<job_id>" in, with cgroup.kill: Linux >= 5.14), the job runs in that child cgroup
     * from before exec, and killing the job also kills the processes that left its process
     * group (setsid). NULL or unusable: process group only (logged at debug). */
    const char *cgroup_parent;
    /* Required: [A-Za-z0-9._-]{1,64}, not "." or "..": names the cgroup, tags log lines. */
    const char *job_id;
    /* Run as this user (setgroups to its gid alone, setgid, setuid before exec); NULL =
     * stay as the agent (the only choice when it is not root). */
    const struct exec_user *user;
    /* Run the job in a PID namespace and a mount namespace of its own with its own /proc,
     * when the agent may (root): it sees and signals only its own processes, and all of
     * them die with its main process. Not allowed: a plain process group (logged at
     * debug, exec_result.isolated false). */
    bool isolate;
    /* isolate only: the directory that holds workdir (the agent's work root), whose other
     * entries (other jobs' workdirs) the job must not see. In the job's mount namespace an
     * empty tmpfs covers it, with workdir and keep_file (when not NULL) bound back at their
     * places; both must be direct entries of it. NULL: nothing hidden. Without a namespace
     * nothing is hidden either (then only file modes protect other jobs' files). */
    const char *hide_dir;
    const char *keep_file;
    /* The job's stdin: this file, opened by the agent (so it may be one the job user could
     * not open). NULL: /dev/null. */
    const char *stdin_path;
    /* "K=V" entries of env that together mark the job's processes (see "Orphans"), e.g.
     * its ORCH_JOB_ID and ORCH_JOB_EPOCH: the attempt, so that a re-run of the same job by
     * another agent on this host is never taken for it. NULL-terminated; NULL = none. */
    const char *const *env_tags;
};

/* Where a job's tree is, for a later agent process to end it after a crash. pgid is the
 * leader's pid and process group; start_ticks its start time (/proc/<pid>/stat field 22),
 * so a reused pid is never taken for it; boot_id the kernel's boot id then. */
struct exec_tree {
    int pgid;
    uint64_t start_ticks;
    char boot_id[40];
    const char *cgroup; /* its cgroup directory, or NULL */
    bool pid_ns;        /* pgid is the init of a PID namespace: killing it ends the tree */
};

/* Callbacks, all called on run()'s thread, never after run() returns. Any may be NULL. */
struct exec_sink {
    void *arg;
    /* Output in order per stream (1 stdout, 2 stderr), len in 1..max_output_chunk; data is
     * valid during the call only. Return >= 0, or < 0 (e.g. -ENOSPC from the spool) to kill
     * the job like a cancel: no more output is delivered and the value ends up in
     * exec_result.output_error. */
    int (*on_output)(void *arg, int stream, const char *data, size_t len);
    /* Once, after the program has been exec'd, before any on_output: pid is the job's main
     * process and its process group id. Not called when the program could not be started. */
    void (*on_started)(void *arg, int pid);
    /* Once, just before on_started, after the leader is in its process group (and cgroup):
     * where the tree is; tree is valid during the call only. The leader may be an init
     * process of the agent's when the job is isolated (then pid == tree->pgid too). */
    void (*on_tree)(void *arg, const struct exec_tree *tree);
};

struct exec_result {
    int exit_code;        /* exit status when the main process exited, else -1 */
    int term_signal;      /* signal that killed the main process, else 0 */
    bool timed_out;       /* the job was killed because timeout_ms passed */
    bool cancelled;       /* the job was killed because *cancel became true */
    int output_error;     /* < 0: on_output returned this and the job was killed; else 0 */
    bool started;         /* the program was exec'd (false: exit_code is 126/127) */
    bool in_cgroup;       /* the job ran in its own cgroup */
    bool isolated;        /* the job ran in its own PID and mount namespace */
    bool user_switched;   /* the job ran as spec->user */
    bool abandoned_pipes; /* output pipes were still held by processes we could not kill
                           * (they escaped the process group and no cgroup): we stopped
                           * reading, the tail of their output is lost */
    int64_t duration_ms;  /* from start until the main process was reaped */
};

struct exec_ops {
    const char *name; /* "posix" */
    /* Run spec to completion, see above. cancel may be NULL; when it becomes true (any thread
     * may set it) the whole tree gets SIGTERM, then SIGKILL after grace_ms. Cancel and timeout
     * are checked at least every 100 ms, except during the start (fork to exec), which could
     * only hang on a workdir on a dead network filesystem.
     * Returns 0 with *ret filled once the job has run, including when its program could not
     * be started (exit 126/127, reason on stream 2). Returns -EINVAL for a bad spec (see the
     * bounds above), or -errno when the agent could not set the job up (pipes, fork, memory);
     * then no callback has run, no process is left and *ret is untouched. */
    int (*run)(const struct exec_spec *spec, const struct exec_sink *sink, atomic_bool *cancel,
               struct exec_result *ret);
};

extern const struct exec_ops exec_posix_ops;
extern const struct exec_ops exec_win_ops; /* Windows: see exec-win.c for what differs */

/* Make this process a child subreaper (Linux), so that orphans of jobs are re-parented to
 * it and run() can end them (see "Orphans"). Returns 0, or -errno (then orphans go to PID
 * 1 and only a PID namespace or a cgroup ends them). Call once, before jobs run. */
int exec_subreaper_enable(void);

/* Fill tree->start_ticks and tree->boot_id for process pid. Returns 0, -ESRCH (gone) or
 * -errno. */
int exec_tree_probe(int pid, struct exec_tree *tree);

/* End a tree recorded by a previous agent process (the agent was killed): kill its cgroup
 * (when it still exists), every process of its process group while that group is still the
 * job's (its leader the same process: same boot, same start time; or the leader gone and
 * the group not), and every process whose initial environment holds all of env_tags
 * (NULL-terminated, may be NULL);
 * then wait up to wait_ms for them to be gone (zombies count as gone). Returns the number
 * of processes (and cgroups) found at first, or -ETIMEDOUT when some are still there at
 * the deadline. wait_ms 0 signals them and returns the number found at once, without
 * waiting: a second call waits (and signals what they forked meanwhile). */
int exec_tree_kill(const struct exec_tree *tree, const char *const *env_tags, int64_t wait_ms);

/* The implementation for the OS we were built for. Never NULL. */
const struct exec_ops *exec_default_ops(void);
