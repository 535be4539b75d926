/* exec-child.c: the child side of a job's start (exec-posix.c has the parent's), between
 * fork and exec in a multi-threaded process: only async-signal-safe calls, no malloc, no
 * stdio, nothing that takes a lock another thread may have held at the fork. Failures go
 * to the parent through the report pipe (struct child_report), whose closing on exec tells
 * it that the program runs. */
#include "agent/exec-child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/exec.h"

static _Noreturn void child_fail(int fd, int stage, int err)
{
    struct child_report rep = {stage, err};
    ssize_t n;

    do
        n = write(fd, &rep, sizeof(rep));
    while (n < 0 && errno == EINTR);
    _exit(stage == STAGE_EXEC && err != ENOENT && err != ENOTDIR ? EXEC_EXIT_NOEXEC
                                                                 : EXEC_EXIT_NOT_FOUND);
}

static void child_close_fds(int keep)
{
#ifdef SYS_close_range
    if ((keep == 3 || syscall(SYS_close_range, 3U, (unsigned)keep - 1, 0U) == 0) &&
        syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U) == 0)
        return;
#endif
    /* Old kernel: close them one by one, up to a sane bound on the limit. */
    struct rlimit rl;
    int max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max)
        max = (int)rl.rlim_cur;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

/* A report that does not end the child. */
static void child_note(int fd, int stage, int err)
{
    struct child_report rep = {stage, err};
    if (write(fd, &rep, sizeof(rep)) < 0) {
        /* The parent then believes the step worked; the job runs with less isolation. */
    }
}

/* A raw fork: the children of a multi-threaded process must not run glibc's fork handlers
 * or its set*id() broadcast to threads that do not exist in them; every call from here to
 * exec is a plain system call. */
pid_t exec_child_clone(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0UL);
}

/* The job's program: stdio, identity, then exec. Async-signal-safe calls only. */
static _Noreturn void child_exec(struct child_ctx *c)
{
    sigset_t none;
    int err = ENOENT;
    bool eacces = false;

    if (dup2(c->in_r, 0) < 0 || dup2(c->out_w, 1) < 0 || dup2(c->err_w, 2) < 0)
        child_fail(c->report_w, STAGE_SETUP, errno);
    /* Raw system calls: credentials are per thread in the kernel, and this process has one
     * thread whatever glibc remembers of the agent's. Groups first, the uid last (after it,
     * nothing else could be changed). */
    if (c->has_user && (syscall(SYS_setgroups, 1, &c->gid) < 0 || syscall(SYS_setgid, c->gid) < 0 ||
                        syscall(SYS_setuid, c->uid) < 0))
        child_fail(c->report_w, STAGE_USER, errno);
    /* After the uid change, which clears it. The kernel sends it when the thread that
     * forked us exits; if that happened already, our parent is another process now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != c->parent)
        _exit(EXEC_EXIT_NOT_FOUND);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(c->report_w, STAGE_SETUP, errno);
    umask(077);
    /* As the job's user, so a workdir it may not enter fails here and not later. */
    if (c->workdir && chdir(c->workdir) < 0)
        child_fail(c->report_w, STAGE_CHDIR, errno);
    /* Descriptors another thread of the daemon opened without O_CLOEXEC must not reach the
     * job; the report pipe closes on exec, which tells the parent that exec succeeded. */
    child_close_fds(c->report_w);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    for (size_t i = 0; c->paths[i]; i++) {
        execve(c->paths[i], c->argv, c->env);
        switch (errno) {
        case ENOEXEC:
            /* A script without #!: run it with the shell, as execvpe() does. */
            c->sh_argv[1] = c->paths[i];
            execve("/bin/sh", c->sh_argv, c->env);
            child_fail(c->report_w, STAGE_EXEC, errno);
        case EACCES:
            eacces = true;
            continue;
        case ENOENT:
        case ENOTDIR:
        case ESTALE:
        case ENODEV:
        case ETIMEDOUT:
            continue;
        default:
            child_fail(c->report_w, STAGE_EXEC, errno);
        }
    }
    if (eacces)
        err = EACCES;
    child_fail(c->report_w, STAGE_EXEC, err);
}

/* "/proc/self/fd/<fd>" into buf (>= 32 bytes), without snprintf (not async-signal-safe). */
static const char *fd_path(char *buf, int fd)
{
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;

    memcpy(buf, prefix, sizeof(prefix) - 1);
    do
        digits[n++] = (char)('0' + fd % 10);
    while ((fd /= 10) > 0 && n < (int)sizeof(digits));
    for (int i = 0; i < n; i++)
        buf[sizeof(prefix) - 1 + i] = digits[n - 1 - i];
    buf[sizeof(prefix) - 1 + n] = '\0';
    return buf;
}

/* In the init, with /proc mounted: cover hide_dir with an empty tmpfs and bind the job's
 * workdir and keep_file back. A failure before the tmpfs is mounted leaves everything
 * visible (noted); after it, the job cannot run (its workdir is gone): fatal. */
static void child_hide(struct child_ctx *c)
{
    char p[32];
    int wfd = open(c->workdir, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int kfd = c->keep_file ? open(c->keep_file, O_PATH | O_CLOEXEC | O_NOFOLLOW) : -2;
    if (wfd < 0 || kfd == -1 ||
        mount("tmpfs", c->hide_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0711,size=64k") < 0) {
        child_note(c->report_w, STAGE_PROC, errno);
        return;
    }
    if (mkdir(c->workdir, 0700) < 0 || mount(fd_path(p, wfd), c->workdir, NULL, MS_BIND, NULL) < 0)
        child_fail(c->report_w, STAGE_SETUP, errno);
    if (kfd >= 0) {
        int fd = open(c->keep_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || close(fd) < 0 ||
            mount(fd_path(p, kfd), c->keep_file, NULL, MS_BIND, NULL) < 0)
            child_fail(c->report_w, STAGE_SETUP, errno);
        close(kfd);
    }
    close(wfd);
}

/* PID 1 of an isolated job's namespace (see the top of the file). Never returns. */
static _Noreturn void child_init(struct child_ctx *c)
{
    /* The agent's death ends the namespace, hence the job. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Private first: on a host where / is a shared mount, a /proc mounted without it would
     * propagate to the host's mount namespace. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        child_note(c->report_w, STAGE_PROC, errno);
    } else {
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            child_note(c->report_w, STAGE_PROC, errno);
        if (c->hide_dir && c->workdir)
            child_hide(c);
    }
    c->parent = 1;
    pid_t pid = exec_child_clone(0);
    if (pid < 0)
        child_fail(c->report_w, STAGE_SETUP, errno);
    if (pid == 0)
        child_exec(c);
    /* Only the program may hold the pipes (and the agent's descriptors have no business
     * here): EOF on the report pipe then means the program exec'd. */
    child_close_fds(c->status_w);
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w == pid) {
            if (write(c->status_w, &st, sizeof(st)) < 0) {
                /* The agent then takes our exit as the program's. */
            }
            _exit(0);
        }
        if (w < 0 && errno != EINTR)
            _exit(0);
    }
}

/* In the child, after fork: async-signal-safe calls only. Never returns. */
_Noreturn void exec_child_start(struct child_ctx *c)
{
    struct sigaction sa;

    /* The daemon's handlers and ignored signals (SIGPIPE surely) must not leak into the job:
     * ignored dispositions survive exec. Signals are still blocked here (see exec_run), so no
     * daemon handler can run in the child. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL);

    /* Own session and process group: kill(-pid) reaches the whole tree, and the job has no
     * controlling terminal. */
    if (setsid() < 0)
        child_fail(c->report_w, STAGE_SETUP, errno);
    /* Before exec, so that nothing the job forks can start outside the cgroup. */
    if (c->cgroup_procs >= 0 && write(c->cgroup_procs, "0", 1) != 1)
        child_note(c->report_w, STAGE_CGROUP, errno);
    if (c->init)
        child_init(c);
    child_exec(c);
}
