/* exec-posix.c: exec_ops on POSIX systems: fork/exec into a new session, output through
 * two pipes read with poll(), the tree killed through its process group. On Linux, also a
 * cgroup v2 per job (catches processes that leave the process group), a pidfd (notices
 * the main process's exit at once instead of at the next 100 ms tick) and, for an isolated
 * job, a PID and mount namespace.
 *
 * An isolated job has two processes of ours: its leader is the init (PID 1) of the new
 * namespace, which mounts a /proc of the namespace, forks the job's program and reaps
 * whatever is re-parented to it, and writes the program's wait status to a pipe when it
 * exits. The init is in the job's process group but, as a namespace init without handlers,
 * ignores every signal but SIGKILL: a SIGTERM to the group reaches the program and its
 * processes only. When the init exits (after the program, or SIGKILLed), the kernel kills
 * everything left in the namespace: nothing a job starts outlives it. The child's side of
 * all this, from fork to exec, is in exec-child.c. */
#include "agent/exec.h"
#include "agent/exec-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#include "agent/exec-child.h"
#include "agent/exec-tree.h"
#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define TICK_MS 100 /* the promised latency for cancel and timeout */
/* After SIGKILL to stragglers, how long their pipes may stay open: only processes that left
 * the process group (with no cgroup to find them) survive it, and we stop waiting for them. */
#define ABANDON_MS      1000
#define CGROUP_EMPTY_MS 2000 /* bound on waiting for a killed cgroup to empty before rmdir */
#define MSG_ARG_MAX     200  /* a tenant's argv[0] or workdir is cut to this in messages */
#define DEFAULT_PATH    "/bin:/usr/bin" /* what execvpe() uses when PATH is unset */

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

struct cgroup {
    char *path;
    int procs_fd;
    int kill_fd;
    int events_fd;
};

struct job {
    const struct exec_spec *spec;
    const struct exec_sink *sink;
    pid_t pid;
    int pidfd;
    int status_r; /* isolated: the init reports the program's status here; else -1 */
    int fds[2];   /* read ends of stdout, stderr; -1 when closed */
    bool reaped;
    int status;
    uint64_t start_ns, reaped_ns;
    enum { KILL_NONE, KILL_TERM, KILL_KILL } kill_stage;
    uint64_t term_ns;
    bool stragglers_killed;
    uint64_t stragglers_ns;
    struct cgroup cg;
    char *chunk;
    size_t chunk_len;
    struct exec_result res;
};

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static inline void strv_freep(char ***v)
{
    strv_free(*v);
}

static const char *env_get(const char *const *env, const char *name)
{
    size_t n = strlen(name);

    for (; env && *env; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

/* The files execvpe() would try for argv0, in order. Returns 0 or -ENOMEM. */
static int exec_candidates(const char *argv0, const char *const *env, char ***ret)
{
    _cleanup_(strv_freep) char **v = NULL;
    const char *path = env_get(env, "PATH");
    size_t n = 0, cap = 2;

    if (strchr(argv0, '/'))
        path = NULL;
    else if (!path)
        path = DEFAULT_PATH;
    if (path)
        for (const char *p = path; *p; p++)
            cap += *p == ':';
    v = calloc(cap, sizeof(*v));
    if (!v)
        return -ENOMEM;
    if (!path) {
        v[n] = strdup(argv0);
        if (!v[n++])
            return -ENOMEM;
    } else {
        for (const char *p = path;; p++) {
            const char *end = strchrnul(p, ':');
            struct buf b = BUF_INIT;
            /* An empty element means the current directory (the workdir), as in execvpe. */
            int r = end == p ? buf_append_str(&b, argv0)
                             : buf_printf(&b, "%.*s/%s", (int)(end - p), p, argv0);
            if (r < 0) {
                buf_free(&b);
                return r;
            }
            v[n] = buf_steal(&b);
            if (!v[n++])
                return -ENOMEM;
            if (!*end)
                break;
            p = end;
        }
    }
    *ret = TAKE_PTR(v);
    return 0;
}

/* "/bin/sh", NULL (filled by the child), argv[1..], NULL. */
static int sh_argv_new(const char *const *argv, char ***ret)
{
    size_t n = 0;

    while (argv[n])
        n++;
    char **v = calloc(n + 2, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v[0] = (char *)"/bin/sh";
    for (size_t i = 1; i < n; i++)
        v[i + 1] = (char *)argv[i];
    *ret = v;
    return 0;
}

/* The child's ends must not be 0..2, or the dup2() onto 0..2 in the child could overwrite
 * one with another (when the agent runs with stdio closed). */
static int fd_above_stdio(int *fd)
{
    if (*fd > 2)
        return 0;
    int n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (n < 0)
        return -errno;
    close(*fd);
    *fd = n;
    return 0;
}

/* A pipe whose write end goes to the child; the read end is non-blocking for the poll loop,
 * or blocking for the exec report. */
static int pipe_new(int p[2], bool nonblock)
{
    int r;

    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    r = fd_above_stdio(&p[1]);
    if (r >= 0 && nonblock && fcntl(p[0], F_SETFL, O_NONBLOCK) < 0)
        r = -errno;
    if (r < 0) {
        close(p[0]);
        close(p[1]);
        p[0] = p[1] = -1;
    }
    return r;
}

static void cgroup_close_fds(struct cgroup *cg)
{
    if (cg->procs_fd >= 0)
        close(cg->procs_fd);
    if (cg->kill_fd >= 0)
        close(cg->kill_fd);
    if (cg->events_fd >= 0)
        close(cg->events_fd);
    cg->procs_fd = cg->kill_fd = cg->events_fd = -1;
}

static void cgroup_drop(struct cgroup *cg)
{
    cgroup_close_fds(cg);
    if (cg->path)
        rmdir(cg->path);
    FREE_AND_NULL(cg->path);
}

static int open_in(const char *dir, const char *name, int flags)
{
    struct buf b = BUF_INIT;
    int fd;

    if (buf_printf(&b, "%s/%s", dir, name) < 0)
        return -ENOMEM;
    fd = open(b.data, flags | O_CLOEXEC);
    buf_free(&b);
    return fd < 0 ? -errno : fd;
}

/* Create <parent>/job-<id> with the files we need. Returns 0, or < 0 when cgroups are not
 * usable here (the job then runs without one). */
static int cgroup_open(const char *parent, const char *job_id, struct cgroup *cg)
{
    struct buf b = BUF_INIT;
    int r;

#ifdef __linux__
    struct statfs sfs;
    /* Only a cgroup2 mount can hold a job; anything else would just get a stray directory. */
    if (statfs(parent, &sfs) < 0)
        return -errno;
    if (sfs.f_type != CGROUP2_SUPER_MAGIC)
        return -ENOTSUP;
#else
    return -ENOTSUP;
#endif
    if (buf_printf(&b, "%s/job-%s", parent, job_id) < 0)
        return -ENOMEM;
    cg->path = buf_steal(&b);
    if (!cg->path)
        return -ENOMEM;
    if (mkdir(cg->path, 0755) < 0) {
        /* A leftover of an agent that crashed while running this job: reuse it if empty. */
        if (errno != EEXIST || (rmdir(cg->path) < 0 && errno != ENOENT) ||
            mkdir(cg->path, 0755) < 0) {
            r = -errno;
            FREE_AND_NULL(cg->path);
            return r;
        }
    }
    /* cgroup.kill (Linux 5.14) is the point: without it a kill could miss processes. */
    r = open_in(cg->path, "cgroup.kill", O_WRONLY);
    if (r >= 0) {
        cg->kill_fd = r;
        r = open_in(cg->path, "cgroup.procs", O_WRONLY);
    }
    if (r >= 0) {
        cg->procs_fd = r;
        r = open_in(cg->path, "cgroup.events", O_RDONLY);
    }
    if (r < 0) {
        cgroup_drop(cg);
        return r;
    }
    cg->events_fd = r;
    return 0;
}

/* Send sig to every process in the cgroup: there is no cgroup.signal, and cgroup.kill only
 * does SIGKILL, but SIGTERM must reach the processes that left the process group too. */
static void cgroup_signal_each(const struct cgroup *cg, int sig)
{
    char data[4096];
    size_t have = 0;
    ssize_t n;
    int fd = open_in(cg->path, "cgroup.procs", O_RDONLY);

    if (fd < 0)
        return;
    for (;;) {
        n = read(fd, data + have, sizeof(data) - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        data[have] = '\0';
        /* Signal every complete line, keep a partial last one for the next read. */
        char *line = data, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            char *end;
            errno = 0;
            long pid = strtol(line, &end, 10);
            if (errno == 0 && end != line && pid > 0)
                kill((pid_t)pid, sig);
            line = nl + 1;
        }
        have = strlen(line);
        memmove(data, line, have);
        if (have == sizeof(data) - 1)
            break;
    }
    close(fd);
}

/* Signal the whole tree: the process group, and the cgroup when there is one. */
static void job_signal(struct job *j, int sig)
{
    if (kill(-j->pid, sig) < 0 && errno != ESRCH)
        log_debug("op=exec_kill job=%s pgid=%d sig=%d error=%d", j->spec->job_id, (int)j->pid, sig,
                  errno);
    if (j->cg.kill_fd >= 0) {
        if (sig != SIGKILL)
            cgroup_signal_each(&j->cg, sig);
        else if (write(j->cg.kill_fd, "1", 1) < 0)
            log_debug("op=exec_cgroup_kill job=%s error=%d", j->spec->job_id, errno);
    }
}

static void job_terminate(struct job *j, uint64_t now, const char *why)
{
    if (j->kill_stage != KILL_NONE)
        return;
    log_debug("op=exec_terminate job=%s pid=%d reason=%s", j->spec->job_id, (int)j->pid, why);
    job_signal(j, SIGTERM);
    j->kill_stage = KILL_TERM;
    j->term_ns = now;
}

/* Kill what is left of the tree, then remove the cgroup once it is empty. */
static void job_cleanup_tree(struct job *j)
{
    job_signal(j, SIGKILL);
    if (!j->cg.path)
        return;
    uint64_t until = clock_mono_ns() + exec_ms_to_ns(CGROUP_EMPTY_MS);
    for (;;) {
        if (rmdir(j->cg.path) == 0 || errno != EBUSY)
            break;
        uint64_t now = clock_mono_ns();
        if (now >= until) {
            log_warn("op=exec_cgroup_rmdir job=%s path=%s error=EBUSY", j->spec->job_id,
                     j->cg.path);
            break;
        }
        /* cgroup.events signals POLLPRI when "populated" changes; the timeout covers a
         * change that happened before we polled. */
        struct pollfd pfd = {.fd = j->cg.events_fd, .events = POLLPRI};
        poll(&pfd, 1, 10);
    }
    cgroup_close_fds(&j->cg);
    FREE_AND_NULL(j->cg.path);
}

static void job_reap(struct job *j, bool block)
{
    pid_t r;

    if (j->reaped)
        return;
    do
        r = waitpid(j->pid, &j->status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return;
    if (r < 0) {
        /* ECHILD: someone else reaped our child (SIGCHLD set to SIG_IGN, or a waitpid(-1)
         * elsewhere in the daemon); its status is lost. */
        log_warn("op=exec_waitpid job=%s pid=%d error=%d", j->spec->job_id, (int)j->pid, errno);
        j->status = -1;
    }
    exec_tree_leader_remove(j->pid);
    if (j->status_r >= 0) {
        /* The init has exited: its report is whole in the pipe, or missing when it was
         * killed (then its own status, SIGKILL, stands for the program's). */
        int st;
        if (read(j->status_r, &st, sizeof(st)) == (ssize_t)sizeof(st))
            j->status = st;
        close(j->status_r);
        j->status_r = -1;
    }
    j->reaped = true;
    j->reaped_ns = clock_mono_ns();
    if (j->pidfd >= 0) {
        close(j->pidfd);
        j->pidfd = -1;
    }
}

static void job_close_pipe(struct job *j, int i)
{
    if (j->fds[i] >= 0)
        close(j->fds[i]);
    j->fds[i] = -1;
}

static void job_deliver(struct job *j, int stream, const char *data, size_t len)
{
    if (j->res.output_error < 0 || !j->sink || !j->sink->on_output)
        return;
    int r = j->sink->on_output(j->sink->arg, stream, data, len);
    if (r < 0) {
        j->res.output_error = r;
        job_terminate(j, clock_mono_ns(), "output");
    }
}

/* Read one chunk from a ready pipe; EOF or error closes it. */
static void job_read(struct job *j, int i)
{
    ssize_t n;

    do
        n = read(j->fds[i], j->chunk, j->chunk_len);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        job_deliver(j, i + 1, j->chunk, (size_t)n);
    else if (n == 0 || errno != EAGAIN)
        job_close_pipe(j, i);
}

/* Drive the started job until its main process is reaped and its pipes are closed. */
static void job_loop(struct job *j, atomic_bool *cancel)
{
    const struct exec_spec *s = j->spec;
    uint64_t grace = exec_ms_to_ns(s->grace_ms ? s->grace_ms : EXEC_DEFAULT_GRACE_MS);
    uint64_t drain = exec_ms_to_ns(s->drain_ms ? s->drain_ms : EXEC_DEFAULT_DRAIN_MS);
    uint64_t deadline = s->timeout_ms ? j->start_ns + exec_ms_to_ns(s->timeout_ms) : 0;

    for (;;) {
        job_reap(j, false);
        if (j->reaped && j->fds[0] < 0 && j->fds[1] < 0)
            return;

        uint64_t now = clock_mono_ns();
        int timeout = TICK_MS;
        if (j->kill_stage == KILL_NONE) {
            if (cancel && atomic_load(cancel)) {
                j->res.cancelled = true;
                job_terminate(j, now, "cancel");
            } else if (deadline && now >= deadline) {
                j->res.timed_out = true;
                job_terminate(j, now, "timeout");
            } else if (deadline) {
                timeout = exec_ms_until(now, deadline, timeout);
            }
        }
        if (j->kill_stage == KILL_TERM) {
            if (now >= j->term_ns + grace) {
                log_debug("op=exec_kill job=%s pid=%d reason=grace", s->job_id, (int)j->pid);
                job_signal(j, SIGKILL);
                j->kill_stage = KILL_KILL;
            } else {
                timeout = exec_ms_until(now, j->term_ns + grace, timeout);
            }
        }
        if (j->reaped) {
            /* The job is over; only processes it left behind still hold the pipes. */
            if (!j->stragglers_killed && now >= j->reaped_ns + drain) {
                log_debug("op=exec_kill job=%s pid=%d reason=stragglers", s->job_id, (int)j->pid);
                job_signal(j, SIGKILL);
                j->stragglers_killed = true;
                j->stragglers_ns = now;
            }
            if (j->stragglers_killed && now >= j->stragglers_ns + exec_ms_to_ns(ABANDON_MS)) {
                log_warn("op=exec_abandon_pipes job=%s pid=%d", s->job_id, (int)j->pid);
                j->res.abandoned_pipes = true;
                job_close_pipe(j, 0);
                job_close_pipe(j, 1);
                continue;
            }
            timeout =
                exec_ms_until(now,
                              j->stragglers_killed ? j->stragglers_ns + exec_ms_to_ns(ABANDON_MS)
                                                   : j->reaped_ns + drain,
                              timeout);
        }

        struct pollfd pfd[3];
        int idx[3], n = 0;
        for (int i = 0; i < 2; i++)
            if (j->fds[i] >= 0) {
                pfd[n] = (struct pollfd){.fd = j->fds[i], .events = POLLIN};
                idx[n++] = i;
            }
        if (!j->reaped && j->pidfd >= 0) {
            pfd[n] = (struct pollfd){.fd = j->pidfd, .events = POLLIN};
            idx[n++] = -1;
        }
        if (poll(pfd, (nfds_t)n, timeout) <= 0)
            continue; /* timeout or EINTR: the checks above run again */
        for (int k = 0; k < n; k++)
            if (idx[k] >= 0 && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                job_read(j, idx[k]);
    }
}

/* The reason the program did not start, on stream 2, as a shell would print it. */
static void job_report_failure(struct job *j, const struct child_report *rep)
{
    struct buf b = BUF_INIT;
    const char *what = j->spec->argv[0];

    switch (rep->stage) {
    case STAGE_CHDIR:
        buf_printf(&b, "orch-agent: cannot enter workdir '%.*s': %s\n", MSG_ARG_MAX,
                   j->spec->workdir, strerror(rep->err));
        break;
    case STAGE_EXEC:
        buf_printf(&b, "orch-agent: %.*s: %s\n", MSG_ARG_MAX, what,
                   rep->err == ENOENT ? "command not found" : strerror(rep->err));
        break;
    case STAGE_USER:
        buf_printf(&b, "orch-agent: cannot switch to the job's user: %s\n", strerror(rep->err));
        break;
    default:
        buf_printf(&b, "orch-agent: cannot set up the job's process: %s\n", strerror(rep->err));
        break;
    }
    if (b.len)
        job_deliver(j, 2, b.data, b.len < j->chunk_len ? b.len : j->chunk_len);
    buf_free(&b);
}

/* Read the child's reports until exec closes the pipe. Returns true when it exec'd. */
static bool job_wait_exec(struct job *j, int fd, struct child_report *fatal)
{
    struct child_report rep;
    ssize_t n;

    for (;;) {
        n = read(fd, &rep, sizeof(rep));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(rep))
            return true; /* EOF: exec'd, or the child died without reporting */
        if (rep.stage == STAGE_PROC) {
            log_debug("op=exec_ns_proc job=%s error=%d detail=\"the host's /proc is visible\"",
                      j->spec->job_id, rep.err);
            j->res.isolated = false;
            continue;
        }
        if (rep.stage != STAGE_CGROUP) {
            *fatal = rep;
            return false;
        }
        log_debug("op=exec_cgroup_enter job=%s error=%d fallback=pgid", j->spec->job_id, rep.err);
        j->res.in_cgroup = false;
    }
}

static int exec_posix_run(const struct exec_spec *spec, const struct exec_sink *sink,
                          atomic_bool *cancel, struct exec_result *ret)
{
    static const char *const empty_env[] = {NULL};
    _cleanup_(strv_freep) char **paths = NULL;
    _cleanup_free_ char **sh_argv = NULL;
    _cleanup_free_ char *chunk = NULL;
    _cleanup_close_ int devnull = -1, report_r = -1, report_w = -1, status_w = -1;
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    struct job j = {.spec = spec, .sink = sink, .pidfd = -1, .status_r = -1, .fds = {-1, -1}};
    struct child_report fatal = {0, 0};
    sigset_t all, old;
    int r;

    j.cg = (struct cgroup){NULL, -1, -1, -1};
    if (!ret || !exec_spec_valid(spec))
        return -EINVAL;
    const char *const *env = spec->env ? spec->env : empty_env;

    j.chunk_len = spec->max_output_chunk ? spec->max_output_chunk : EXEC_DEFAULT_CHUNK;
    chunk = malloc(j.chunk_len);
    if (!chunk)
        return -ENOMEM;
    j.chunk = chunk;
    r = exec_candidates(spec->argv[0], env, &paths);
    if (r < 0)
        return r;
    r = sh_argv_new(spec->argv, &sh_argv);
    if (r < 0)
        return r;

    /* Opened by the agent: the job's user may not be able to open it itself. */
    devnull = open(spec->stdin_path ? spec->stdin_path : "/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        return -errno;
    r = fd_above_stdio(&devnull);
    if (r < 0)
        return r;
    int rp[2];
    r = pipe_new(rp, false);
    if (r < 0)
        return r;
    report_r = rp[0];
    report_w = rp[1];
    r = pipe_new(out, true);
    if (r < 0)
        return r;
    r = pipe_new(err, true);
    if (r < 0)
        goto fail_pipes;
    /* A PID namespace needs CAP_SYS_ADMIN: only root tries. */
    bool isolate = spec->isolate && geteuid() == 0;
    if (isolate) {
        int sp[2];
        r = pipe_new(sp, true);
        if (r < 0) {
            close(err[0]);
            close(err[1]);
            goto fail_pipes;
        }
        j.status_r = sp[0];
        status_w = sp[1];
    }

    if (spec->cgroup_parent) {
        r = cgroup_open(spec->cgroup_parent, spec->job_id, &j.cg);
        if (r < 0)
            log_debug("op=exec_cgroup job=%s parent=%s error=%d fallback=pgid", spec->job_id,
                      spec->cgroup_parent, -r);
        j.res.in_cgroup = r >= 0;
    }

    struct child_ctx ctx = {
        .argv = (char *const *)spec->argv,
        .env = (char *const *)env,
        .workdir = spec->workdir,
        .paths = paths,
        .sh_argv = sh_argv,
        .in_r = devnull,
        .out_w = out[1],
        .err_w = err[1],
        .report_w = report_w,
        .cgroup_procs = j.cg.procs_fd,
        .has_user = spec->user != NULL,
        .uid = spec->user ? (uid_t)spec->user->uid : 0,
        .gid = spec->user ? (gid_t)spec->user->gid : 0,
        .status_w = status_w,
        .parent = getpid(),
        .hide_dir = spec->hide_dir,
        .keep_file = spec->keep_file,
    };
    /* Block every signal across fork so that no daemon handler runs in the child before it
     * has reset the dispositions. The leader registry is locked across it so that an orphan
     * sweep in another thread never takes the new child for an orphan. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    exec_tree_leaders_lock();
    r = exec_tree_leader_reserve_locked();
    j.start_ns = clock_mono_ns();
    if (r == 0 && isolate) {
        ctx.init = true;
        j.pid = exec_child_clone(CLONE_NEWPID | CLONE_NEWNS);
        if (j.pid < 0) {
            /* Not allowed here (a container without CAP_SYS_ADMIN, a seccomp filter):
             * the job runs in a process group of its own only. */
            log_debug("op=exec_isolate job=%s error=%d fallback=pgid", spec->job_id, errno);
            ctx.init = false;
        } else {
            j.res.isolated = true;
        }
    }
    if (r == 0 && !ctx.init)
        j.pid = fork();
    if (r == 0 && j.pid == 0)
        exec_child_start(&ctx);
    if (r == 0 && j.pid < 0)
        r = -errno;
    if (r == 0)
        exec_tree_leader_add_locked(j.pid);
    exec_tree_leaders_unlock();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        cgroup_drop(&j.cg);
        close(err[0]);
        close(err[1]);
        if (j.status_r >= 0)
            close(j.status_r);
        goto fail_pipes;
    }
    j.res.user_switched = spec->user != NULL;
    if (status_w >= 0)
        close(TAKE_FD(status_w));

    /* Only the child may hold the write ends, or we would never see EOF. */
    close(out[1]);
    close(err[1]);
    j.fds[0] = out[0];
    j.fds[1] = err[0];
    close(TAKE_FD(report_w));
    if (j.cg.procs_fd >= 0) {
        close(j.cg.procs_fd);
        j.cg.procs_fd = -1;
    }
#ifdef SYS_pidfd_open
    j.pidfd = (int)syscall(SYS_pidfd_open, j.pid, 0);
#endif

    if (job_wait_exec(&j, report_r, &fatal)) {
        j.res.started = true;
        log_debug("op=exec_start job=%s pid=%d cgroup=%s pid_ns=%s user=%s", spec->job_id,
                  (int)j.pid, j.res.in_cgroup ? "yes" : "no", j.res.isolated ? "yes" : "no",
                  j.res.user_switched ? "switched" : "agent");
        if (sink && sink->on_tree) {
            struct exec_tree tree = {.cgroup = j.res.in_cgroup ? j.cg.path : NULL,
                                     .pid_ns = ctx.init};
            if (exec_tree_probe((int)j.pid, &tree) == 0)
                sink->on_tree(sink->arg, &tree);
        }
        if (sink && sink->on_started)
            sink->on_started(sink->arg, (int)j.pid);
        job_loop(&j, cancel);
    } else {
        job_reap(&j, true);
        job_close_pipe(&j, 0);
        job_close_pipe(&j, 1);
        job_report_failure(&j, &fatal);
    }
    job_cleanup_tree(&j);
    if (j.pidfd >= 0)
        close(j.pidfd);
    if (j.status_r >= 0)
        close(j.status_r);
    /* A job in a PID namespace of its own cannot leave orphans to the agent: they go to
     * its init, and die with it. Only then is the scan of every process on the host (the
     * costliest part of a short job's end) left out. */
    if (spec->env_tags && !ctx.init)
        exec_tree_sweep_orphans(spec->env_tags, spec->job_id);

    if (j.status >= 0 && WIFEXITED(j.status)) {
        j.res.exit_code = WEXITSTATUS(j.status);
    } else {
        j.res.exit_code = -1;
        if (j.status >= 0 && WIFSIGNALED(j.status))
            j.res.term_signal = WTERMSIG(j.status);
    }
    j.res.duration_ms = (int64_t)((j.reaped_ns - j.start_ns) / 1000000);
    log_debug("op=exec_end job=%s pid=%d exit=%d signal=%d timed_out=%d cancelled=%d "
              "duration_ms=%lld",
              spec->job_id, (int)j.pid, j.res.exit_code, j.res.term_signal, j.res.timed_out,
              j.res.cancelled, (long long)j.res.duration_ms);
    *ret = j.res;
    return 0;

fail_pipes:
    close(out[0]);
    close(out[1]);
    return r;
}

const struct exec_ops exec_posix_ops = {
    .name = "posix",
    .run = exec_posix_run,
};

const struct exec_ops *exec_default_ops(void)
{
    return &exec_posix_ops;
}
