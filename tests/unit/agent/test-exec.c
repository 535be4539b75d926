/* Tests for agent/exec-posix.c: real processes, observed from outside (output, exit status,
 * /proc). Waits are bounded polls of /proc, never sleeps used as synchronisation. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/exec.h"
#include "agent/exec-uids.h"
#include "common/buf.h"
#include "common/clock.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static const char *const test_env[] = {"PATH=/usr/bin:/bin", NULL};

struct capture {
    struct buf out, err;
    size_t max_chunk;  /* largest chunk delivered */
    int calls;         /* on_output calls */
    int fail_at;       /* on_output returns -ENOSPC on this call (1-based); 0 = never */
    int started_calls; /* on_started calls */
    int pid;           /* from on_started */
    bool output_before_start;
    void (*started_hook)(struct capture *c, int pid);
    sem_t started;
    sem_t output; /* posted on the first on_output call */
    char cgroup[512];
};

static int cap_output(void *arg, int stream, const char *data, size_t len)
{
    struct capture *c = arg;

    if (c->calls++ == 0)
        sem_post(&c->output);
    if (c->started_calls == 0)
        c->output_before_start = true;
    if (len > c->max_chunk)
        c->max_chunk = len;
    cr_assert(stream == 1 || stream == 2);
    cr_assert_gt(len, 0);
    cr_assert_eq(buf_append(stream == 1 ? &c->out : &c->err, data, len), 0);
    return c->fail_at && c->calls >= c->fail_at ? -ENOSPC : 0;
}

static void cap_started(void *arg, int pid)
{
    struct capture *c = arg;

    c->started_calls++;
    c->pid = pid;
    if (c->started_hook)
        c->started_hook(c, pid);
    sem_post(&c->started);
}

static void cap_init(struct capture *c)
{
    memset(c, 0, sizeof(*c));
    c->out = (struct buf)BUF_INIT;
    c->err = (struct buf)BUF_INIT;
    sem_init(&c->started, 0, 0);
    sem_init(&c->output, 0, 0);
}

static void cap_free(struct capture *c)
{
    buf_free(&c->out);
    buf_free(&c->err);
    sem_destroy(&c->started);
    sem_destroy(&c->output);
}

static const char *out_of(struct capture *c)
{
    return c->out.data ? c->out.data : "";
}

static const char *err_of(struct capture *c)
{
    return c->err.data ? c->err.data : "";
}

static struct exec_spec spec_of(const char *const *argv)
{
    return (struct exec_spec){
        .argv = argv,
        .env = test_env,
        .job_id = "test-job",
        .grace_ms = 2000,
    };
}

/* Run spec, fail the test unless run() itself succeeds. */
static struct exec_result run(const struct exec_spec *spec, struct capture *c, atomic_bool *cancel)
{
    struct exec_sink sink = {.arg = c, .on_output = cap_output, .on_started = cap_started};
    struct exec_result res;

    memset(&res, 0xa5, sizeof(res));
    cr_assert_eq(exec_default_ops()->run(spec, &sink, cancel, &res), 0);
    return res;
}

static int64_t ms_since(uint64_t start_ns)
{
    return (int64_t)((clock_mono_ns() - start_ns) / 1000000);
}

/* The state letter of /proc/<pid>/stat and its process group, or 0 when there is no such
 * process. */
static char proc_state(pid_t pid, long *pgrp)
{
    char path[64], data[512];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, data, sizeof(data) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    data[n] = '\0';
    /* comm may hold spaces and parentheses: the state follows the last ')'. */
    char *p = strrchr(data, ')');
    if (!p || p[1] != ' ')
        return 0;
    char state = p[2];
    if (pgrp) {
        char *end;
        strtol(p + 4, &end, 10); /* ppid */
        *pgrp = strtol(end, NULL, 10);
    }
    return state;
}

/* Running, as opposed to gone or a zombie nobody has reaped yet (PID 1 here may not). */
static bool proc_running(pid_t pid)
{
    char s = proc_state(pid, NULL);
    return s != 0 && s != 'Z' && s != 'X';
}

static int pgrp_running(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        long pgrp = -1;
        if (*end || pid <= 0)
            continue;
        char s = proc_state((pid_t)pid, &pgrp);
        if (s && s != 'Z' && s != 'X' && pgrp == pgid)
            n++;
    }
    closedir(d);
    return n;
}

/* Bounded wait: the kernel finishes a SIGKILLed process asynchronously. */
static bool wait_not_running(pid_t pid, int ms)
{
    uint64_t start = clock_mono_ns();
    struct timespec tick = {0, 5 * 1000 * 1000};

    while (proc_running(pid)) {
        if (ms_since(start) > ms)
            return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

static bool wait_pgrp_empty(pid_t pgid, int ms)
{
    uint64_t start = clock_mono_ns();
    struct timespec tick = {0, 5 * 1000 * 1000};

    while (pgrp_running(pgid) > 0) {
        if (ms_since(start) > ms)
            return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

/* The pids a job printed, one per line. */
static int parse_pids(const char *s, pid_t *pids, int max)
{
    int n = 0;

    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        pids[n++] = (pid_t)v;
        s = end;
        while (*s == '\n')
            s++;
    }
    return n;
}

Test(exec, exit_code_zero)
{
    const char *const argv[] = {"true", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_eq(res.term_signal, 0);
    cr_assert(res.started);
    cr_assert(!res.timed_out && !res.cancelled && !res.abandoned_pipes);
    cr_assert_eq(res.output_error, 0);
    cr_assert_eq(c.started_calls, 1);
    cr_assert_gt(c.pid, 0);
    cr_assert_eq(c.calls, 0);
    cr_assert_geq(res.duration_ms, 0);
    cr_assert_lt(res.duration_ms, 5000);
    cap_free(&c);
}

Test(exec, exit_code_three)
{
    const char *const argv[] = {"sh", "-c", "exit 3", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 3);
    cr_assert_eq(res.term_signal, 0);
    cap_free(&c);
}

Test(exec, killed_by_signal_sets_term_signal)
{
    const char *const argv[] = {"sh", "-c", "kill -USR1 $$", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.term_signal, SIGUSR1);
    cr_assert_eq(res.exit_code, -1);
    cr_assert(!res.timed_out && !res.cancelled);
    cap_free(&c);
}

Test(exec, both_streams_arrive_in_order_in_bounded_chunks)
{
    const char *const argv[] = {
        "sh", "-c", "for i in $(seq 1 1000); do echo out $i; echo err $i >&2; done", NULL};
    struct exec_spec spec = spec_of(argv);
    struct buf want_out = BUF_INIT, want_err = BUF_INIT;
    struct capture c;

    spec.max_output_chunk = 100;
    for (int i = 1; i <= 1000; i++) {
        buf_printf(&want_out, "out %d\n", i);
        buf_printf(&want_err, "err %d\n", i);
    }
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!c.output_before_start);
    cr_assert_leq(c.max_chunk, 100);
    cr_assert_str_eq(out_of(&c), want_out.data);
    cr_assert_str_eq(err_of(&c), want_err.data);
    buf_free(&want_out);
    buf_free(&want_err);
    cap_free(&c);
}

Test(exec, ten_megabytes_on_both_streams_without_deadlock)
{
    const char *const argv[] = {
        "sh", "-c", "head -c 10485760 /dev/zero & head -c 10485760 /dev/zero >&2; wait", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.timeout_ms = 60000;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.timed_out);
    cr_assert_eq(c.out.len, 10485760);
    cr_assert_eq(c.err.len, 10485760);
    cr_assert_leq(c.max_chunk, EXEC_DEFAULT_CHUNK);
    for (size_t i = 0; i < c.out.len; i++)
        if (c.out.data[i] != '\0')
            cr_assert_fail("byte %zu of stdout is %d", i, c.out.data[i]);
    cap_free(&c);
}

Test(exec, environment_is_exactly_the_given_one)
{
    const char *const argv[] = {"/usr/bin/env", NULL};
    const char *const env[] = {"A=1", "B=two words", "EMPTY=", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.env = env;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), "A=1\nB=two words\nEMPTY=\n");
    cap_free(&c);

    spec.env = NULL;
    cap_init(&c);
    res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), "");
    cap_free(&c);
}

Test(exec, command_is_looked_up_in_the_jobs_path)
{
    const char *const argv[] = {"env", NULL};
    const char *const env[] = {"PATH=/nonexistent::/usr/bin:/bin", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.env = env;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), "PATH=/nonexistent::/usr/bin:/bin\n");
    cap_free(&c);

    /* Not the agent's PATH: sh is not found in this one. */
    const char *const argv_sh[] = {"sh", "-c", "true", NULL};
    const char *const env_bad[] = {"PATH=/nonexistent", NULL};
    spec = spec_of(argv_sh);
    spec.env = env_bad;
    cap_init(&c);
    res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, EXEC_EXIT_NOT_FOUND);
    cr_assert(!res.started);
    cap_free(&c);
}

Test(exec, workdir_is_honoured)
{
    char dir[] = "/tmp/orch-exec-XXXXXX", real[PATH_MAX], want[PATH_MAX + 1];
    const char *const argv[] = {"/bin/pwd", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cr_assert_not_null(mkdtemp(dir));
    cr_assert_not_null(realpath(dir, real));
    snprintf(want, sizeof(want), "%s\n", real);
    spec.workdir = dir;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), want);
    cap_free(&c);
    rmdir(dir);
}

Test(exec, missing_workdir_is_exit_127_with_message)
{
    const char *const argv[] = {"true", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.workdir = "/nonexistent/orch-workdir";
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, EXEC_EXIT_NOT_FOUND);
    cr_assert(!res.started);
    cr_assert_eq(c.started_calls, 0);
    cr_assert_not_null(strstr(err_of(&c), "/nonexistent/orch-workdir"), "%s", err_of(&c));
    cr_assert_not_null(strstr(err_of(&c), "No such file or directory"), "%s", err_of(&c));
    cr_assert_str_eq(out_of(&c), "");
    cap_free(&c);
}

Test(exec, missing_command_is_exit_127_with_message)
{
    const char *const argv[] = {"orch-no-such-command", "x", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, EXEC_EXIT_NOT_FOUND);
    cr_assert_eq(res.term_signal, 0);
    cr_assert(!res.started);
    cr_assert_eq(c.started_calls, 0);
    cr_assert_str_eq(err_of(&c), "orch-agent: orch-no-such-command: command not found\n");
    cap_free(&c);
}

Test(exec, unexecutable_file_is_exit_126)
{
    char dir[] = "/tmp/orch-exec-XXXXXX", file[64];
    struct capture c;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/data", dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    const char *const argv[] = {file, NULL};
    struct exec_spec spec = spec_of(argv);
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, EXEC_EXIT_NOEXEC);
    cr_assert_not_null(strstr(err_of(&c), "Permission denied"), "%s", err_of(&c));
    cap_free(&c);
    unlink(file);
    rmdir(dir);
}

Test(exec, script_without_shebang_runs_with_sh)
{
    char dir[] = "/tmp/orch-exec-XXXXXX", file[64];
    const char script[] = "echo from script \"$1\"\n";
    struct capture c;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/script", dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, script, strlen(script)), (ssize_t)strlen(script));
    close(fd);
    /* Found through PATH, relative to nothing: the directory is in the job's PATH. */
    char path_var[96];
    snprintf(path_var, sizeof(path_var), "PATH=%s:/usr/bin:/bin", dir);
    const char *const env[] = {path_var, NULL};
    const char *const argv[] = {"script", "arg", NULL};
    struct exec_spec spec = spec_of(argv);
    spec.env = env;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
    cr_assert_str_eq(out_of(&c), "from script arg\n");
    cap_free(&c);
    unlink(file);
    rmdir(dir);
}

Test(exec, process_that_closes_its_pipes_is_still_waited_for)
{
    const char *const argv[] = {"sh", "-c", "exec >&- 2>&-; sleep 0.3; exit 4", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 4);
    cr_assert_geq(res.duration_ms, 300);
    cap_free(&c);
}

Test(exec, timeout_kills_the_whole_tree)
{
    const char *const argv[] = {"sh", "-c",
                                "sleep 100 & echo $!; sleep 100 & echo $!; exec sleep 100", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    pid_t pids[2];
    uint64_t start = clock_mono_ns();

    spec.timeout_ms = 300;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert(res.timed_out);
    cr_assert(!res.cancelled);
    cr_assert_eq(res.term_signal, SIGTERM);
    cr_assert_eq(res.exit_code, -1);
    cr_assert_geq(res.duration_ms, 300);
    cr_assert_lt(ms_since(start), 2000);
    cr_assert_eq(parse_pids(out_of(&c), pids, 2), 2, "%s", out_of(&c));
    cr_assert(wait_not_running(pids[0], 5000));
    cr_assert(wait_not_running(pids[1], 5000));
    cr_assert(wait_pgrp_empty(c.pid, 5000));
    cap_free(&c);
}

Test(exec, term_ignoring_tree_is_killed_after_grace)
{
    const char *const argv[] = {"sh", "-c", "trap '' TERM; sleep 100 & echo $!; sleep 100", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    pid_t pid;

    /* The timeout must come after the shell has set its trap, or SIGTERM ends it and there
     * is no grace to test: 1.5 s is far beyond a shell's start, even on a loaded machine
     * under the sanitizers (200 ms was not: the shell was killed by SIGTERM once in CI). */
    spec.timeout_ms = 1500;
    spec.grace_ms = 300;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert(res.timed_out);
    cr_assert_eq(res.term_signal, SIGKILL, "ended by signal %d", res.term_signal);
    cr_assert_geq(res.duration_ms, 1800);
    cr_assert_lt(res.duration_ms, 6000);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000));
    cr_assert(wait_pgrp_empty(c.pid, 5000));
    cap_free(&c);
}

struct canceller {
    struct capture *c;
    atomic_bool *cancel;
};

static void *cancel_thread(void *arg)
{
    struct canceller *k = arg;

    /* The job prints after its trap is set: cancelling earlier would test nothing. */
    sem_wait(&k->c->output);
    atomic_store(k->cancel, true);
    return NULL;
}

Test(exec, cancel_from_another_thread_kills_the_tree)
{
    const char *const argv[] = {"sh", "-c", "trap '' TERM; sleep 100 & echo $!; sleep 100", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    atomic_bool cancel = false;
    pthread_t t;
    pid_t pid;

    spec.grace_ms = 300;
    cap_init(&c);
    struct canceller k = {&c, &cancel};
    cr_assert_eq(pthread_create(&t, NULL, cancel_thread, &k), 0);
    struct exec_result res = run(&spec, &c, &cancel);
    pthread_join(t, NULL);
    cr_assert(res.cancelled);
    cr_assert(!res.timed_out);
    cr_assert_eq(res.term_signal, SIGKILL);
    cr_assert_geq(res.duration_ms, 300);
    cr_assert_lt(res.duration_ms, 3000);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000));
    cr_assert(wait_pgrp_empty(c.pid, 5000));
    cap_free(&c);
}

Test(exec, failing_output_sink_kills_the_job)
{
    const char *const argv[] = {"yes", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    c.fail_at = 3;
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.output_error, -ENOSPC);
    cr_assert_eq(res.term_signal, SIGTERM);
    cr_assert(!res.cancelled && !res.timed_out);
    cr_assert_eq(c.calls, 3);
    cap_free(&c);
}

Test(exec, background_child_holding_the_pipes_is_killed)
{
    const char *const argv[] = {"sh", "-c", "sleep 100 & echo $!", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    uint64_t start = clock_mono_ns();
    pid_t pid;

    spec.drain_ms = 300;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.abandoned_pipes);
    cr_assert_lt(ms_since(start), 3000);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000));
    cap_free(&c);
}

Test(exec, background_child_that_closed_the_pipes_is_killed_at_the_end)
{
    const char *const argv[] = {"sh", "-c", "sleep 100 >/dev/null 2>&1 & echo $!", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    pid_t pid;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000));
    cap_free(&c);
}

Test(exec, daemonized_grandchild_holding_the_pipes_does_not_hang)
{
    /* setsid leaves the process group: without a cgroup it cannot be found, so the runner
     * gives up on the pipes instead of waiting for it. */
    const char *const argv[] = {"sh", "-c", "setsid sleep 100 & echo $!", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    uint64_t start = clock_mono_ns();
    pid_t pid;

    spec.drain_ms = 300;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(res.abandoned_pipes);
    cr_assert_lt(ms_since(start), 5000);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    kill(pid, SIGKILL);
    cap_free(&c);
}

Test(exec, child_sees_only_stdio_descriptors)
{
    /* ls lists its own descriptors; besides 0..2 it holds only the directory it reads. */
    const char *const argv[] = {"ls", "-l", "/proc/self/fd/", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    int leak[2], stdio = 0;

    /* What another thread of the daemon might hold without O_CLOEXEC. */
    cr_assert_eq(pipe(leak), 0);
    int leak_file = open("/dev/null", O_RDONLY);
    cr_assert_geq(leak_file, 0);
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));

    /* Lines end in "<fd> -> <target>". */
    for (const char *line = out_of(&c); *line;) {
        const char *eol = strchrnul(line, '\n'), *arrow = strstr(line, " -> ");
        if (arrow && arrow < eol) {
            const char *num = arrow;
            while (num > line && num[-1] != ' ')
                num--;
            long fd = strtol(num, NULL, 10);
            const char *target = arrow + 4;
            int tlen = (int)(eol - target);
            if (fd <= 2)
                stdio++;
            else
                cr_assert(tlen >= 3 && strncmp(eol - 3, "/fd", 3) == 0,
                          "fd %ld -> %.*s leaked into the job", fd, tlen, target);
            if (fd == 0)
                cr_assert(strncmp(target, "/dev/null", (size_t)tlen) == 0);
        }
        line = *eol ? eol + 1 : eol;
    }
    cr_assert_eq(stdio, 3, "%s", out_of(&c));
    close(leak[0]);
    close(leak[1]);
    close(leak_file);
    cap_free(&c);
}

Test(exec, stdin_is_dev_null)
{
    const char *const argv[] = {"sh", "-c", "cat; readlink /proc/$$/fd/0", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), "/dev/null\n");
    cap_free(&c);
}

Test(exec, agent_signal_mask_and_ignores_do_not_reach_the_job)
{
    const char *const argv[] = {"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    sigset_t set;

    /* A daemon typically ignores SIGPIPE and blocks SIGTERM in its worker threads. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert_str_eq(out_of(&c), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    cap_free(&c);
}

Test(exec, invalid_spec_is_einval_and_leaves_result_untouched)
{
    const char *const empty[] = {"", NULL};
    const char *const ok[] = {"true", NULL};
    struct exec_result res, before;
    struct exec_spec spec;

    memset(&res, 0x5a, sizeof(res));
    before = res;
    spec = spec_of(NULL);
    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), -EINVAL);
    spec = spec_of(empty);
    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), -EINVAL);
    spec = spec_of(ok);
    spec.job_id = "../escape";
    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), -EINVAL);
    spec.job_id = NULL;
    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), -EINVAL);
    spec = spec_of(ok);
    spec.timeout_ms = -1;
    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), -EINVAL);
    cr_assert_eq(memcmp(&res, &before, sizeof(res)), 0);
    cr_assert_str_eq(exec_default_ops()->name, "posix");
}

Test(exec, no_sink_is_allowed)
{
    const char *const argv[] = {"sh", "-c", "echo discarded; exit 5", NULL};
    struct exec_spec spec = spec_of(argv);
    struct exec_result res;

    cr_assert_eq(exec_posix_ops.run(&spec, NULL, NULL, &res), 0);
    cr_assert_eq(res.exit_code, 5);
}

Test(exec, unusable_cgroup_parent_falls_back_to_the_process_group)
{
    char dir[] = "/tmp/orch-exec-XXXXXX", stray[64];
    const char *const argv[] = {"sh", "-c", "echo ok", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cr_assert_not_null(mkdtemp(dir));
    spec.cgroup_parent = dir;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.in_cgroup);
    cr_assert_str_eq(out_of(&c), "ok\n");
    snprintf(stray, sizeof(stray), "%s/job-test-job", dir);
    cr_assert_neq(access(stray, F_OK), 0, "a directory was left in a non-cgroup parent");
    cap_free(&c);

    spec.cgroup_parent = "/nonexistent/cgroup";
    cap_init(&c);
    res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.in_cgroup);
    cap_free(&c);
    rmdir(dir);
}

/* A writable cgroup2 directory for this test process, or skip: not every machine has one. */
static char cg_parent[256];

static void cgroup_parent_setup(void)
{
    static const char *const mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    struct statfs sfs;

    cg_parent[0] = '\0';
    for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
        char kill_file[300];
        if (statfs(mounts[i], &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
            continue;
        snprintf(cg_parent, sizeof(cg_parent), "%s/orch-exec-test-%d", mounts[i], (int)getpid());
        snprintf(kill_file, sizeof(kill_file), "%s/cgroup.kill", cg_parent);
        if (mkdir(cg_parent, 0755) == 0 && access(kill_file, W_OK) == 0)
            return;
        rmdir(cg_parent);
        cg_parent[0] = '\0';
    }
}

static void cgroup_parent_teardown(void)
{
    if (cg_parent[0])
        rmdir(cg_parent);
}

static void read_cgroup(struct capture *c, int pid)
{
    char path[64];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
    f = fopen(path, "re");
    cr_assert_not_null(f);
    size_t n = fread(c->cgroup, 1, sizeof(c->cgroup) - 1, f);
    c->cgroup[n] = '\0';
    fclose(f);
}

Test(exec, cgroup_holds_the_job_and_kills_escaped_processes, .init = cgroup_parent_setup,
     .fini = cgroup_parent_teardown)
{
    const char *const argv[] = {"sh", "-c", "setsid sleep 100 >/dev/null 2>&1 & echo $!; sleep 100",
                                NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    char job_dir[300], want[128];
    pid_t pid;

    if (!cg_parent[0])
        cr_skip_test("no writable cgroup2 hierarchy with cgroup.kill on this machine");
    spec.cgroup_parent = cg_parent;
    spec.timeout_ms = 300;
    spec.job_id = "cg-1";
    cap_init(&c);
    c.started_hook = read_cgroup;
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert(res.in_cgroup);
    cr_assert(res.timed_out);
    cr_assert_eq(res.term_signal, SIGTERM);
    /* The hierarchy line "0::<path>" names the job's own cgroup. */
    snprintf(want, sizeof(want), "/orch-exec-test-%d/job-cg-1\n", (int)getpid());
    cr_assert_not_null(strstr(c.cgroup, want), "%s", c.cgroup);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000), "escaped process %d survived", (int)pid);
    snprintf(job_dir, sizeof(job_dir), "%s/job-cg-1", cg_parent);
    cr_assert_neq(access(job_dir, F_OK), 0, "job cgroup left behind");
    cap_free(&c);
}

Test(exec, cgroup_catches_daemonized_grandchild_holding_the_pipes, .init = cgroup_parent_setup,
     .fini = cgroup_parent_teardown)
{
    const char *const argv[] = {"sh", "-c", "setsid sleep 100 & echo $!", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;
    uint64_t start = clock_mono_ns();
    pid_t pid;

    if (!cg_parent[0])
        cr_skip_test("no writable cgroup2 hierarchy with cgroup.kill on this machine");
    spec.cgroup_parent = cg_parent;
    spec.drain_ms = 300;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert(res.in_cgroup);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.abandoned_pipes);
    cr_assert_lt(ms_since(start), 3000);
    cr_assert_eq(parse_pids(out_of(&c), &pid, 1), 1);
    cr_assert(wait_not_running(pid, 5000));
    cap_free(&c);
}

/* --- identity, privileges, namespaces, orphans ------------------------------------------ */

static void need_root(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root (user switch, namespaces)");
}

Test(exec, every_job_has_no_new_privs_and_umask_077)
{
    const char *const argv[] = {"sh", "-c", "grep NoNewPrivs /proc/self/status; umask", NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
    cr_assert_str_eq(out_of(&c), "NoNewPrivs:\t1\n0077\n");
    cap_free(&c);
}

Test(exec, user_switch_sets_uid_gid_and_drops_groups)
{
    need_root();
    const char *const argv[] = {"sh", "-c", "id -u; id -g; id -G", NULL};
    struct exec_spec spec = spec_of(argv);
    struct exec_user u = {.uid = 65534, .gid = 65534};
    struct capture c;

    spec.user = &u;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
    cr_assert(res.user_switched);
    cr_assert_str_eq(out_of(&c), "65534\n65534\n65534\n");
    cap_free(&c);
}

/* --- job users from exec.uid_range ------------------------------------------------------ */

Test(exec_uids, parses_ranges_and_refuses_root_and_oversized_ones)
{
    unsigned a = 7, b = 7;
    cr_assert_eq(exec_uids_parse("200000-200999", &a, &b), 0);
    cr_assert_eq(a, 200000);
    cr_assert_eq(b, 200999);
    cr_assert_eq(exec_uids_parse("5-5", &a, &b), 0);
    const char *bad[] = {"",     "200000", "0-10", "10-9",         "1-65537",       "a-b",
                         "1-2x", " 1-2",   "-1-2", "1-4294967295", "99999999999-1", "1--2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = b = 7;
        cr_assert_eq(exec_uids_parse(bad[i], &a, &b), -EINVAL, "%s", bad[i]);
        cr_assert(a == 7 && b == 7, "%s: untouched on failure", bad[i]);
    }
    cr_assert_eq(exec_uids_parse("1-65536", &a, &b), 0, "the largest range");
}

Test(exec_uids, running_jobs_never_share_a_uid_and_a_freed_one_comes_back_last)
{
    struct exec_uids *u = NULL;
    cr_assert_eq(exec_uids_new(300, 302, &u), 0);
    cr_assert_eq(exec_uids_size(u), 3);
    struct exec_user x, y, z, w = {.uid = 1, .gid = 1};
    cr_assert_eq(exec_uids_take(u, &x), 0);
    cr_assert_eq(exec_uids_take(u, &y), 0);
    cr_assert_eq(exec_uids_take(u, &z), 0);
    cr_assert(x.uid == 300 && y.uid == 301 && z.uid == 302, "in turn");
    cr_assert(x.gid == x.uid && z.gid == z.uid);
    cr_assert_eq(exec_uids_take(u, &w), -EBUSY, "all three run");
    cr_assert_eq(w.uid, 1, "untouched when none is free");
    exec_uids_put(u, y.uid);
    exec_uids_put(u, 12345); /* not ours: ignored */
    cr_assert_eq(exec_uids_take(u, &w), 0);
    cr_assert_eq(w.uid, y.uid, "the only free one");
    /* Round-robin: a freed uid is reused as late as possible. */
    exec_uids_put(u, x.uid);
    exec_uids_put(u, z.uid);
    struct exec_user n1, n2;
    cr_assert_eq(exec_uids_take(u, &n1), 0);
    cr_assert_eq(exec_uids_take(u, &n2), 0);
    cr_assert_eq(n1.uid, 302, "the one after the last taken (301), not the lowest free");
    cr_assert_eq(n2.uid, 300);
    exec_uids_free(u);
    cr_assert_eq(exec_uids_new(0, 5, &u), -EINVAL);
    exec_uids_free(NULL);
}

Test(exec_uids, two_jobs_at_once_run_as_their_own_uids)
{
    need_root();
    struct exec_uids *u = NULL;
    cr_assert_eq(exec_uids_new(200500, 200509, &u), 0);
    struct exec_user ua, ub;
    cr_assert_eq(exec_uids_take(u, &ua), 0);
    cr_assert_eq(exec_uids_take(u, &ub), 0);
    const char *const argv[] = {"sh", "-c", "id -u; id -g", NULL};
    char want[64];
    const struct exec_user *users[] = {&ua, &ub};
    for (int i = 0; i < 2; i++) {
        struct exec_spec spec = spec_of(argv);
        struct capture c;
        spec.user = users[i];
        cap_init(&c);
        struct exec_result res = run(&spec, &c, NULL);
        cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
        cr_assert(res.user_switched);
        snprintf(want, sizeof(want), "%u\n%u\n", users[i]->uid, users[i]->uid);
        cr_assert_str_eq(out_of(&c), want);
        cap_free(&c);
    }
    cr_assert_neq(ua.uid, ub.uid);
    exec_uids_free(u);
}

Test(exec, stdin_path_is_opened_by_the_agent_for_a_user_who_cannot)
{
    need_root();
    char path[] = "/tmp/orch-exec-stdin-XXXXXX";
    int fd = mkstemp(path); /* 0600 root: the job's user could not open it */
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "secret-for-tar\n", 15), 15);
    close(fd);
    const char *const argv[] = {"sh", "-c", "cat; cat \"$0\" 2>/dev/null || echo denied", path,
                                NULL};
    struct exec_spec spec = spec_of(argv);
    struct exec_user u = {.uid = 65534, .gid = 65534};
    struct capture c;

    spec.user = &u;
    spec.stdin_path = path;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
    cr_assert_str_eq(out_of(&c), "secret-for-tar\ndenied\n");
    unlink(path);
    cap_free(&c);
}

Test(exec, isolated_job_sees_only_its_own_processes)
{
    need_root();
    /* The test process and the agent's others are not in the job's /proc; the job's shell
     * is not PID 1 (the init is). */
    char argv2[64];
    snprintf(argv2, sizeof(argv2), "test -e /proc/%d && echo agent-visible; echo $$",
             (int)getpid());
    const char *const argv[] = {"sh", "-c", argv2, NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.isolate = true;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0, "%s", err_of(&c));
    if (!res.isolated)
        cr_skip_test("no PID namespace here: %s", err_of(&c));
    cr_assert_str_eq(out_of(&c), "2\n");
    cap_free(&c);
}

Test(exec, isolated_job_exit_code_and_signals_are_the_programs)
{
    need_root();
    const char *const exit3[] = {"sh", "-c", "exit 3", NULL};
    struct exec_spec spec = spec_of(exit3);
    struct capture c;

    spec.isolate = true;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 3);
    cap_free(&c);

    /* SIGTERM on timeout reaches the program at once (the init ignores it, the program
     * does not): no wait for the grace period. */
    const char *const sleeper[] = {"sleep", "100", NULL};
    spec = spec_of(sleeper);
    spec.isolate = true;
    spec.timeout_ms = 200;
    spec.grace_ms = 20000;
    uint64_t start = clock_mono_ns();
    cap_init(&c);
    res = run(&spec, &c, NULL);
    cr_assert(res.timed_out);
    cr_assert_eq(res.term_signal, SIGTERM);
    cr_assert_lt(ms_since(start), 5000);
    cap_free(&c);

    const char *const missing[] = {"no-such-command-xyz", NULL};
    spec = spec_of(missing);
    spec.isolate = true;
    cap_init(&c);
    res = run(&spec, &c, NULL);
    cr_assert(!res.started);
    cr_assert_eq(res.exit_code, EXEC_EXIT_NOT_FOUND);
    cr_assert(strstr(err_of(&c), "command not found"), "%s", err_of(&c));
    cap_free(&c);
}

static int count_marker(const char *marker)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d))) {
        char path[300], buf[1024];
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || !proc_running((pid_t)pid))
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < len; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[len > 0 ? len : 0] = '\0';
        n += strstr(buf, marker) != NULL;
    }
    closedir(d);
    return n;
}

static bool wait_marker_gone(const char *marker, int ms)
{
    uint64_t start = clock_mono_ns();
    struct timespec tick = {0, 5 * 1000 * 1000};

    while (count_marker(marker) > 0) {
        if (ms_since(start) > ms)
            return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

Test(exec, isolated_job_takes_its_setsid_processes_with_it)
{
    need_root();
    const char *const argv[] = {"sh", "-c", "setsid sh -c 'sleep 97.61' >/dev/null 2>&1 & echo ok",
                                NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.isolate = true;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(wait_marker_gone("sleep 97.61", 5000), "a setsid process outlived its job");
    cap_free(&c);
}

Test(exec, subreaper_ends_a_jobs_setsid_orphans_without_namespace_or_cgroup)
{
    /* The fallback of a host without namespaces and cgroup v2: the orphan is re-parented to
     * us (a subreaper) and recognised by the job's tag in its environment. */
    cr_assert_eq(exec_subreaper_enable(), 0);
    const char *const env[] = {"PATH=/usr/bin:/bin", "ORCH_JOB_ID=orphan-test", "ORCH_JOB_EPOCH=1",
                               NULL};
    const char *const tags[] = {"ORCH_JOB_ID=orphan-test", "ORCH_JOB_EPOCH=1", NULL};
    const char *const argv[] = {"sh", "-c", "setsid sh -c 'sleep 97.62' >/dev/null 2>&1 & echo ok",
                                NULL};
    struct exec_spec spec = spec_of(argv);
    struct capture c;

    spec.env = env;
    spec.env_tags = tags;
    cap_init(&c);
    struct exec_result res = run(&spec, &c, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_assert(!res.isolated && !res.in_cgroup);
    /* Gone when run() returns: nothing left to wait for. */
    cr_assert_eq(count_marker("sleep 97.62"), 0, "the orphan outlived its job");
    cap_free(&c);
}

/* A tree like one a killed agent left: a session leader with a child, not ours to reap
 * once the leader exits (the child is re-parented away from us). */
static pid_t orphan_tree(const char *marker_arg)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(p[0]);
        setsid();
        if (fork() == 0) {
            execl("/bin/sleep", "sleep", marker_arg, (char *)NULL);
            _exit(127);
        }
        if (write(p[1], "x", 1) < 0)
            _exit(1);
        execl("/bin/sleep", "sleep", "100", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char x;
    cr_assert_eq(read(p[0], &x, 1), 1);
    close(p[0]);
    /* Both exec'd (the child may still be the test binary for a moment). */
    char marker[64];
    snprintf(marker, sizeof(marker), "sleep %s", marker_arg);
    uint64_t start = clock_mono_ns();
    while (count_marker(marker) == 0 || count_marker("sleep 100") == 0)
        cr_assert_lt(ms_since(start), 5000);
    return pid;
}

Test(exec, tree_kill_ends_a_recorded_tree_but_never_a_reused_pid)
{
    pid_t pid = orphan_tree("97.63");
    struct exec_tree tree = {0};
    cr_assert_eq(exec_tree_probe(pid, &tree), 0);
    cr_assert_eq(tree.pgid, pid);
    cr_assert_gt(tree.start_ticks, 0);

    /* Another start time: the pid was reused by an unrelated process; untouched. */
    struct exec_tree other = tree;
    other.start_ticks++;
    cr_assert_eq(exec_tree_kill(&other, NULL, 1000), 0);
    cr_assert(proc_running(pid));
    cr_assert_eq(count_marker("sleep 97.63"), 1);

    cr_assert_geq(exec_tree_kill(&tree, NULL, 5000), 1);
    cr_assert(!proc_running(pid));
    cr_assert(wait_marker_gone("sleep 97.63", 5000));
    waitpid(pid, NULL, 0);
}

/* wait_ms 0 (the fence signals every lapsed job before it waits for any): the tree is
 * signalled and what was found returned at once, never -ETIMEDOUT; a second call waits. */
Test(exec, tree_kill_without_a_wait_signals_and_returns_what_it_found)
{
    pid_t pid = orphan_tree("97.66");
    struct exec_tree tree = {0};
    cr_assert_eq(exec_tree_probe(pid, &tree), 0);
    cr_assert_geq(exec_tree_kill(&tree, NULL, 0), 1);
    cr_assert(wait_marker_gone("sleep 97.66", 5000));
    uint64_t start = clock_mono_ns();
    while (proc_running(pid)) /* the leader, a zombie once killed */
        cr_assert_lt(ms_since(start), 5000);
    cr_assert_geq(exec_tree_kill(&tree, NULL, 5000), 0);
    waitpid(pid, NULL, 0);
}

Test(exec, tree_kill_finds_processes_by_their_job_tag)
{
    /* Left its process group and no record of it: found by the environment. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        setsid();
        char *const env[] = {"ORCH_JOB_ID=tagged-tree", "ORCH_JOB_EPOCH=2", NULL};
        execle("/bin/sleep", "sleep", "97.64", (char *)NULL, env);
        _exit(127);
    }
    uint64_t start = clock_mono_ns();
    while (count_marker("sleep 97.64") == 0)
        cr_assert_lt(ms_since(start), 5000);
    struct exec_tree none = {0};
    /* Another job, or another attempt of this one (a re-run by another agent): spared. */
    const char *const other_job[] = {"ORCH_JOB_ID=other-tree", "ORCH_JOB_EPOCH=2", NULL};
    const char *const other_attempt[] = {"ORCH_JOB_ID=tagged-tree", "ORCH_JOB_EPOCH=3", NULL};
    const char *const this_attempt[] = {"ORCH_JOB_ID=tagged-tree", "ORCH_JOB_EPOCH=2", NULL};
    cr_assert_eq(exec_tree_kill(&none, other_job, 1000), 0);
    cr_assert_eq(exec_tree_kill(&none, other_attempt, 1000), 0);
    cr_assert_eq(count_marker("sleep 97.64"), 1);
    cr_assert_eq(exec_tree_kill(&none, this_attempt, 5000), 1);
    cr_assert_eq(count_marker("sleep 97.64"), 0);
    waitpid(pid, NULL, 0);
}

Test(exec, tree_kill_ends_the_group_its_dead_leader_left)
{
    /* The leader got its pdeathsig; its child, still in the group, did not. */
    pid_t pid = orphan_tree("97.65");
    struct exec_tree tree = {0};
    cr_assert_eq(exec_tree_probe(pid, &tree), 0);
    kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    cr_assert_eq(count_marker("sleep 97.65"), 1);
    cr_assert_eq(exec_tree_kill(&tree, NULL, 5000), 1);
    cr_assert(wait_marker_gone("sleep 97.65", 5000));
}
