/* exec-tree.c: finding and ending what is left of a job's process tree outside exec's own
 * process group and cgroup: orphans re-parented to the agent (a child subreaper), and the
 * trees a killed agent process left running (recorded in the spool, ended by the next one).
 *
 * Processes are read from /proc (Linux). A process is recognised by the job's ORCH_JOB_ID
 * entry in its initial environment (/proc/<pid>/environ, readable by root or the same user)
 * and a leader by its start time, so a pid the kernel has given to another process since is
 * never hit. The leader registry (which children are leaders exec_posix_run() still waits
 * for) is guarded by leaders_lock; fork happens with it held, so a sweep never sees a
 * leader that is not registered yet and never reaps a child run() will wait for.
 */
#include "agent/exec-tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define ENVIRON_MAX (256 * 1024) /* bytes of a process's environment we look at */
#define SWEEP_MS    2000         /* bound on ending a job's orphans */
#define POLL_MS     10

static pthread_mutex_t leaders_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *leaders;
static size_t nleaders, leaders_cap;

void exec_tree_leaders_lock(void)
{
    pthread_mutex_lock(&leaders_lock);
}

void exec_tree_leaders_unlock(void)
{
    pthread_mutex_unlock(&leaders_lock);
}

int exec_tree_leader_reserve_locked(void)
{
    if (nleaders == leaders_cap) {
        size_t cap = leaders_cap ? leaders_cap * 2 : 16;
        pid_t *p = realloc(leaders, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        leaders = p;
        leaders_cap = cap;
    }
    return 0;
}

void exec_tree_leader_add_locked(pid_t pid)
{
    if (nleaders < leaders_cap)
        leaders[nleaders++] = pid;
}

void exec_tree_leader_remove(pid_t pid)
{
    pthread_mutex_lock(&leaders_lock);
    for (size_t i = 0; i < nleaders; i++)
        if (leaders[i] == pid) {
            leaders[i] = leaders[--nleaders];
            break;
        }
    if (nleaders == 0) {
        FREE_AND_NULL(leaders);
        leaders_cap = 0;
    }
    pthread_mutex_unlock(&leaders_lock);
}

static bool leader_locked(pid_t pid)
{
    for (size_t i = 0; i < nleaders; i++)
        if (leaders[i] == pid)
            return true;
    return false;
}

int exec_subreaper_enable(void)
{
#if defined(__linux__) && defined(PR_SET_CHILD_SUBREAPER)
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 ? -errno : 0;
#else
    return -ENOTSUP;
#endif
}

int exec_tree_stat(pid_t pid, pid_t *ppid, pid_t *pgrp, char *state, uint64_t *start_ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return n == 0 ? -ESRCH : -errno;
    buf[n] = '\0';
    /* "pid (comm) S ppid ..." where comm may hold spaces and parentheses: the fields
     * start after the last ')'. Field 3 is the state, 4 the ppid, 22 the start time. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EINVAL;
    p += 2;
    char st = *p;
    long long pp = -1, pg = -1;
    unsigned long long start = 0;
    int field = 3;
    for (char *tok = p; tok && *tok; field++) {
        if (field == 4)
            pp = strtoll(tok, NULL, 10);
        else if (field == 5)
            pg = strtoll(tok, NULL, 10);
        else if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
        tok = strchr(tok, ' ');
        if (tok)
            tok++;
    }
    if (field != 22)
        return -EINVAL;
    if (ppid)
        *ppid = (pid_t)pp;
    if (pgrp)
        *pgrp = (pid_t)pg;
    if (state)
        *state = st;
    if (start_ticks)
        *start_ticks = start;
    return 0;
}

static int boot_id(char out[40])
{
    _cleanup_close_ int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, out, 39);
    if (n <= 0)
        return n == 0 ? -EIO : -errno;
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        n--;
    out[n] = '\0';
    return 0;
}

int exec_tree_probe(int pid, struct exec_tree *tree)
{
    uint64_t start;
    int r = exec_tree_stat(pid, NULL, NULL, NULL, &start);
    if (r < 0)
        return r;
    r = boot_id(tree->boot_id);
    if (r < 0)
        return r;
    tree->pgid = pid;
    tree->start_ticks = start;
    return 0;
}

/* Does the initial environment of pid hold every entry of tags (NULL-terminated, not
 * empty)? */
static bool environ_has(pid_t pid, const char *const *tags)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t ntags = 0, len = 0, seen = 0;
    while (tags[ntags])
        ntags++;
    if (ntags == 0 || ntags > 8)
        return false;
    bool hit[8] = {false};
    _cleanup_free_ char *buf = malloc(ENVIRON_MAX + 1);
    if (!buf)
        return false;
    for (;;) {
        ssize_t n = read(fd, buf + len, ENVIRON_MAX - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == ENVIRON_MAX)
            break;
    }
    buf[len] = '\0';
    for (size_t i = 0; i < len && seen < ntags;) {
        size_t e = strnlen(buf + i, len - i);
        for (size_t k = 0; k < ntags; k++)
            if (!hit[k] && strlen(tags[k]) == e && memcmp(buf + i, tags[k], e) == 0) {
                hit[k] = true;
                seen++;
            }
        i += e + 1;
    }
    return seen == ntags;
}

/* Call fn for every pid in /proc but ours. */
static void for_each_pid(void (*fn)(pid_t pid, void *arg), void *arg)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 0 || (pid_t)v == self)
            continue;
        fn((pid_t)v, arg);
    }
    closedir(d);
}

struct sweep {
    const char *const *tags;
    pid_t self;
    int live; /* tagged orphans still running in this round */
};

static void sweep_one(pid_t pid, void *arg)
{
    struct sweep *s = arg;
    pid_t ppid;
    char state;
    if (exec_tree_stat(pid, &ppid, NULL, &state, NULL) < 0 || ppid != s->self)
        return;
    pthread_mutex_lock(&leaders_lock);
    bool leader = leader_locked(pid);
    if (!leader) {
        /* An orphan: a zombie is reaped whoever it belonged to; a live one only when it is
         * this job's (another job's orphans end with that job). */
        if (state != 'Z' && s->tags && environ_has(pid, s->tags)) {
            kill(pid, SIGKILL);
            s->live++;
        }
        int st;
        if (state == 'Z')
            waitpid(pid, &st, WNOHANG);
    }
    pthread_mutex_unlock(&leaders_lock);
}

int exec_tree_sweep_orphans(const char *const *tags, const char *job_id)
{
    struct sweep s = {.tags = tags, .self = getpid()};
    uint64_t until = clock_mono_ns() + (uint64_t)SWEEP_MS * 1000000u;
    int killed = 0;
    for (;;) {
        s.live = 0;
        for_each_pid(sweep_one, &s);
        killed += s.live;
        if (s.live == 0)
            break;
        if (clock_mono_ns() >= until) {
            log_warn("op=exec_orphans job=%s state=still-running", job_id);
            return -ETIMEDOUT;
        }
        poll(NULL, 0, POLL_MS);
    }
    if (killed)
        log_debug("op=exec_orphans job=%s killed=%d", job_id, killed);
    return killed;
}

struct tagged {
    const char *const *tags; /* may be NULL */
    pid_t pgid;              /* the job's process group, 0 when it may not be signalled */
    int found;
};

static void kill_tagged(pid_t pid, void *arg)
{
    struct tagged *t = arg;
    char state;
    pid_t pgrp;
    if (exec_tree_stat(pid, NULL, &pgrp, &state, NULL) < 0 || state == 'Z')
        return;
    if ((t->pgid > 0 && pgrp == t->pgid) || (t->tags && environ_has(pid, t->tags))) {
        kill(pid, SIGKILL);
        t->found++;
    }
}

/* Is process group tree->pgid still the job's? While its leader is the same process
 * (same boot, same start time); and once the leader is gone, while any process is left in
 * it: the kernel does not give out a pid that is still a process group's id, so the group
 * cannot be another's. A pid now held by another process is never signalled. */
static bool group_ours(const struct exec_tree *tree)
{
    char now[40];
    uint64_t start;
    if (tree->pgid <= 1 || !tree->boot_id[0] || boot_id(now) < 0 || strcmp(now, tree->boot_id) != 0)
        return false;
    int r = exec_tree_stat(tree->pgid, NULL, NULL, NULL, &start);
    return r == -ESRCH || (r == 0 && start == tree->start_ticks);
}

/* Kill every process of a cgroup (cgroup.kill, Linux 5.14). Returns whether it still has
 * processes. */
static bool cgroup_kill_dir(const char *dir, bool kill_it)
{
    char path[4200], buf[256];
    snprintf(path, sizeof(path), "%s/cgroup.kill", dir);
    if (kill_it) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1", 1) < 0)
                log_debug("op=exec_tree_kill cgroup=%s error=%d", dir, errno);
            close(fd);
        }
    }
    snprintf(path, sizeof(path), "%s/cgroup.events", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return strstr(buf, "populated 1") != NULL;
}

int exec_tree_kill(const struct exec_tree *tree, const char *const *env_tags, int64_t wait_ms)
{
    uint64_t until = clock_mono_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000u;
    int found = 0;
    bool cg = tree->cgroup && tree->cgroup[0] && access(tree->cgroup, F_OK) == 0;
    if (cg && cgroup_kill_dir(tree->cgroup, true))
        found++;
    for (bool first = true;; first = false) {
        /* Every round: a process may fork until it is killed. */
        struct tagged t = {.tags = env_tags, .pgid = group_ours(tree) ? tree->pgid : 0};
        for_each_pid(kill_tagged, &t);
        bool cg_busy = cg && cgroup_kill_dir(tree->cgroup, t.found > 0);
        if (first)
            found += t.found;
        if (!t.found && !cg_busy)
            break;
        if (wait_ms <= 0)
            return found; /* signalled only: the caller waits later */
        if (clock_mono_ns() >= until)
            return -ETIMEDOUT;
        poll(NULL, 0, POLL_MS);
    }
    if (cg && rmdir(tree->cgroup) < 0 && errno != ENOENT)
        log_debug("op=exec_tree_kill cgroup=%s rmdir_error=%d", tree->cgroup, errno);
    return found;
}
