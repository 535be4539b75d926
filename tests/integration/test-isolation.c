/* What a job can reach, observed from inside real jobs that a real root `orch-agent run`
 * runs for the real orchd: not the agent's credential or state, not another job's
 * processes or working directory, no agent environment, no privileges to gain, no
 * inherited descriptors; nothing it leaves behind outlives it; a restarted agent ends its
 * killed predecessor's job before the job runs again; a root agent without a job user does
 * not start. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char dir[64];
static pid_t agent;

static void setup(void)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        return; /* each test skips */
    const char *env[] = {"ORCHD_AGENT_LEASE=4s", "ORCHD_AGENT_ONLINE_WINDOW=4s",
                         "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s", NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(dir, sizeof(dir), "/tmp/orch-iso-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char id[40];
    th_agent_enrol(&srv, admin, dir, "iso", NULL, "2", id);
    agent = th_agent_start(dir);
}

static void teardown(void)
{
    if (!admin)
        return;
    th_agent_stop(agent, SIGTERM);
    th_rm_rf(dir);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(isolation, .init = setup, .fini = teardown, .timeout = 180);

static void need_root(void)
{
    if (!admin)
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
}

/* Submit command with args (NULL-terminated, may be NULL); returns the job id. */
static char *submit(const char *command, const char *const *args, int max_attempts)
{
    json_t *a = json_array();
    for (size_t i = 0; args && args[i]; i++)
        json_array_append_new(a, json_string(args[i]));
    json_t *body = json_pack("{s:s, s:o, s:i, s:{s:s}}", "command", command, "args", a,
                             "max_attempts", max_attempts, "env", "FOO", "bar");
    return th_job_submit(&srv, admin, body);
}

static char *logs(const char *id)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdout", id);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *b = strdup(r.body ? r.body : "");
    th_resp_free(&r);
    return b;
}

/* Run command to success; its stdout (malloc'd). */
static char *run_ok(const char *command, const char *const *args)
{
    char *id = submit(command, args, 1);
    json_t *j = th_job_wait_final(&srv, admin, id, 60);
    char *out = logs(id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s", out);
    json_decref(j);
    free(id);
    return out;
}

/* Is a process whose command line holds marker alive on the host (zombies aside)? */
static bool marker_alive(const char *marker)
{
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    struct dirent *de;
    bool found = false;
    while (!found && (de = readdir(d))) {
        char path[300], buf[4096], stat[512];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "re");
        size_t n = f ? fread(stat, 1, sizeof(stat) - 1, f) : 0;
        if (f)
            fclose(f);
        stat[n] = '\0';
        char *p = strrchr(stat, ')');
        if (!p || p[2] == 'Z')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
        f = fopen(path, "re");
        n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        for (size_t i = 0; i < n; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[n] = '\0';
        found = strstr(buf, marker) != NULL;
    }
    closedir(d);
    return found;
}

static bool marker_gone_within(const char *marker, int ms)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)ms * 1000000ull;
    while (marker_alive(marker)) {
        if (clock_mono_ns() > deadline)
            return false;
        usleep(20000); /* polling /proc, bounded */
    }
    return true;
}

Test(isolation, a_job_cannot_reach_the_agent_credential_or_state)
{
    need_root();
    const char *args[] = {dir, NULL};
    char *out = run_ok("cat \"$1/agent.json\" >/dev/null 2>&1 && echo cred=readable || "
                       "echo cred=denied; "
                       "ls \"$1\" >/dev/null 2>&1 && echo state=listable || echo state=denied; "
                       "ls \"$1/spool\" >/dev/null 2>&1 && echo spool=listable || "
                       "echo spool=denied; "
                       "ls \"$1/cache\" >/dev/null 2>&1 && echo cache=listable || "
                       "echo cache=denied; "
                       "echo uid=$(id -u)",
                       args);
    char want[64];
    snprintf(want, sizeof(want), "uid=%u\n", (unsigned)getpwnam("orch-job")->pw_uid);
    cr_assert(strstr(out, "cred=denied\n"), "%s", out);
    cr_assert(strstr(out, "state=denied\n"), "%s", out);
    cr_assert(strstr(out, "spool=denied\n"), "%s", out);
    cr_assert(strstr(out, "cache=denied\n"), "%s", out);
    cr_assert(strstr(out, want), "%s (want %s)", out, want);
    free(out);
}

Test(isolation, a_job_has_a_clean_environment_and_no_privileges_to_gain)
{
    need_root();
    /* cat opens its own environ (a redirection would open the shell's child before exec). */
    char *out = run_ok("printf env=; cat /proc/self/environ | tr '\\0' '\\n' | cut -d= -f1 | "
                       "sort | tr '\\n' ' '; echo; "
                       "printf agentvars=; cat /proc/self/environ | tr '\\0' '\\n' | grep -c "
                       "'^ORCH_AGENT_'; "
                       "grep NoNewPrivs /proc/self/status; "
                       "echo umask=$(umask); echo mode=$(stat -c %a .); "
                       "[ \"$HOME\" = \"$PWD\" ] && echo home=workdir",
                       NULL);
    /* Exactly what the job gave, the defaults and ORCH_JOB_*; the shell adds PWD. */
    cr_assert(strstr(out, "env=FOO HOME LANG ORCH_JOB_EPOCH ORCH_JOB_ID ORCH_JOB_PARAMS "
                          "ORCH_JOB_RESULT PATH PWD \n") ||
                  strstr(out, "env=FOO HOME LANG ORCH_JOB_EPOCH ORCH_JOB_ID ORCH_JOB_PARAMS "
                              "ORCH_JOB_RESULT PATH \n"),
              "%s", out);
    cr_assert(strstr(out, "agentvars=0\n"), "%s", out);
    cr_assert(strstr(out, "NoNewPrivs:\t1\n"), "%s", out);
    cr_assert(strstr(out, "umask=0077\n"), "%s", out);
    cr_assert(strstr(out, "mode=700\n"), "%s", out);
    cr_assert(strstr(out, "home=workdir\n"), "%s", out);
    free(out);
}

/* The pid of a running process whose command line holds marker (bounded wait), or 0. */
static pid_t marker_pid(const char *marker, int ms)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)ms * 1000000ull;
    for (;;) {
        DIR *d = opendir("/proc");
        cr_assert_not_null(d);
        struct dirent *de;
        pid_t found = 0;
        while (!found && (de = readdir(d))) {
            char path[300], buf[1024];
            if (de->d_name[0] < '0' || de->d_name[0] > '9')
                continue;
            snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
            FILE *f = fopen(path, "re");
            size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
            if (f)
                fclose(f);
            for (size_t i = 0; i < n; i++)
                if (!buf[i])
                    buf[i] = ' ';
            buf[n] = '\0';
            if (strncmp(buf, marker, strlen(marker)) == 0)
                found = (pid_t)strtol(de->d_name, NULL, 10);
        }
        closedir(d);
        if (found || clock_mono_ns() > deadline)
            return found;
        usleep(20000); /* polling /proc, bounded */
    }
}

Test(isolation, a_job_inherits_no_descriptor_but_stdio)
{
    need_root();
    /* Looked at from outside, on the job's own program (the shell exec's it): what the
     * agent passed, nothing a shell opened for itself. */
    char *id = submit("exec sleep 99.71", NULL, 1);
    pid_t pid = marker_pid("sleep 99.71", 60000);
    cr_assert_gt(pid, 0, "the job never started");
    /* The command line is the new program's a moment before the kernel closes the
     * close-on-exec descriptors of the old one (begin_new_exec()), so a descriptor seen
     * once may be one on its way out: look until only stdio is left, bounded. A real leak
     * stays and fails the test. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    uint64_t deadline = clock_mono_ns() + 2000000000ull;
    long leaked;
    int n;
    for (;;) {
        DIR *d = opendir(path);
        cr_assert_not_null(d);
        struct dirent *de;
        leaked = -1;
        n = 0;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            long fd = strtol(de->d_name, NULL, 10);
            if (fd < 0 || fd > 2)
                leaked = fd;
            n++;
        }
        closedir(d);
        if ((leaked < 0 && n == 3) || clock_mono_ns() > deadline)
            break;
        usleep(10000); /* polling /proc, bounded */
    }
    cr_assert(leaked < 0, "fd %ld leaked into the job", leaked);
    cr_assert_eq(n, 3);
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", id);
    struct th_resp r;
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202);
    th_resp_free(&r);
    json_decref(th_job_wait_final(&srv, admin, id, 60));
    free(id);
}

Test(isolation, a_job_cannot_see_or_reach_another_jobs_processes_or_workdir)
{
    need_root();
    char *a = submit("echo \"$PWD\"; exec sleep 99.51", NULL, 1);
    /* Running, and its workdir printed. */
    char *pwd = NULL;
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (!pwd) {
        char *out = logs(a);
        char *nl = strchr(out, '\n');
        if (nl && marker_alive("sleep 99.51")) {
            *nl = '\0';
            pwd = strdup(out);
        }
        free(out);
        cr_assert(clock_mono_ns() < deadline, "the first job never started");
        if (!pwd)
            usleep(100000); /* polling the condition, bounded */
    }
    const char *args[] = {pwd, NULL};
    /* The patterns do not match themselves (nor this shell's command line). */
    char *out = run_ok("echo seen=$(grep -l '99[.]51' /proc/[0-9]*/cmdline 2>/dev/null | wc -l); "
                       "pkill -f '99[.]51'; echo pkill=$?; "
                       "ls \"$1\" >/dev/null 2>&1 && echo workdir=readable || echo workdir=hidden; "
                       "echo pids=$(ls -d /proc/[0-9]* | wc -l)",
                       args);
    cr_assert(strstr(out, "seen=0\n"), "%s", out);
    cr_assert(strstr(out, "pkill=1\n"), "%s", out);
    cr_assert(strstr(out, "workdir=hidden\n"), "%s", out);
    /* Gone although the probe neither saw nor killed it: say what became of the job (on an
     * overloaded machine its lease may have run out), not that it was reached. */
    json_t *j = th_job(&srv, admin, a);
    const char *st = json_string_value(json_object_get(j, "status"));
    cr_assert(marker_alive("sleep 99.51"),
              "the first job's process is gone (job %s; the probe saw: %s)", st ? st : "?", out);
    cr_assert_str_eq(st, "running");
    json_decref(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", a);
    struct th_resp r;
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 202);
    th_resp_free(&r);
    json_decref(th_job_wait_final(&srv, admin, a, 60));
    free(out);
    free(pwd);
    free(a);
}

Test(isolation, a_setsid_background_process_does_not_outlive_its_job)
{
    need_root();
    char *out = run_ok("setsid sh -c 'sleep 97.25' >/dev/null 2>&1 & echo started", NULL);
    cr_assert_str_eq(out, "started\n");
    cr_assert(marker_gone_within("sleep 97.25", 5000), "the job's setsid process survived it");
    free(out);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return strdup("");
    struct buf b = BUF_INIT;
    char chunk[512];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        cr_assert_eq(buf_append(&b, chunk, n), 0);
    fclose(f);
    cr_assert_eq(buf_append_str(&b, ""), 0);
    return buf_steal(&b);
}

Test(isolation, a_restarted_agent_ends_its_predecessors_job_before_it_runs_again)
{
    need_root();
    /* The job's own record of when it really ran, in a directory every user may write;
     * the lock is held for as long as a run lives, so a second run while the first still
     * lives writes "overlap". */
    char shared[] = "/tmp/orch-iso-runs-XXXXXX";
    cr_assert_not_null(mkdtemp(shared));
    cr_assert_eq(chmod(shared, 01777), 0);
    const char *args[] = {shared, NULL};
    char *id = submit("exec 9>>\"$1/lock\"; "
                      "if flock -n 9; then echo \"start $ORCH_JOB_EPOCH\" >>\"$1/log\"; "
                      "sleep 3; echo \"end $ORCH_JOB_EPOCH\" >>\"$1/log\"; "
                      "else echo \"overlap $ORCH_JOB_EPOCH\" >>\"$1/log\"; exit 1; fi",
                      args, 3);
    char log[128];
    snprintf(log, sizeof(log), "%s/log", shared);
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (;;) {
        char *text = read_file(log);
        bool started = strstr(text, "start 1\n") != NULL;
        free(text);
        if (started)
            break;
        cr_assert(clock_mono_ns() < deadline, "the job never started");
        usleep(50000); /* polling the job's record, bounded */
    }
    th_agent_stop(agent, SIGKILL);
    agent = th_agent_start(dir);
    json_t *j = th_job_wait_final(&srv, admin, id, 90);
    char *text = read_file(log);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s", text);
    cr_assert_eq(json_integer_value(json_object_get(j, "epoch")), 2, "%s", text);
    /* The first run never ended on its own (killed), the second ran alone and ended. */
    cr_assert_str_eq(text, "start 1\nstart 2\nend 2\n");
    json_decref(j);
    free(text);
    /* The restarted agent looked for the predecessor's tree before reporting the job. */
    char alog[128];
    snprintf(alog, sizeof(alog), "%s/agent.log", dir);
    text = read_file(alog);
    char *kill_line = strstr(text, "op=recover-kill");
    char *recover_line = strstr(text, "op=recover job=");
    cr_assert(kill_line && recover_line && kill_line < recover_line, "%s", text);
    free(text);
    free(id);
    th_rm_rf(shared);
}

/* Run `orch-agent run` with extra environment; its exit status, its stderr in err. */
static int agent_run(const char *state, const char *const *env, char *err, size_t len)
{
    char errfile[] = "/tmp/orch-iso-err-XXXXXX";
    int fd = mkstemp(errfile);
    cr_assert_geq(fd, 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fd, 2);
        setenv("ORCH_AGENT_STATE_DIR", state, 1);
        for (size_t i = 0; env[i]; i++)
            putenv((char *)env[i]);
        execl(th_env("ORCH_TEST_AGENT"), "orch-agent", "run", (char *)NULL);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    ssize_t n = pread(fd, err, len - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(errfile);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(isolation, a_root_agent_without_a_job_user_refuses_to_start)
{
    need_root();
    char state[] = "/tmp/orch-iso-state-XXXXXX", err[2048];
    cr_assert_not_null(mkdtemp(state));
    const char *missing[] = {"ORCH_AGENT_EXEC_USER=orch-no-such-user", NULL};
    cr_assert_eq(agent_run(state, missing, err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "refusing to run jobs as root"), "%s", err);
    cr_assert(strstr(err, "'orch-no-such-user' (exec.user) does not exist"), "%s", err);
    cr_assert(strstr(err, "exec.allow_root=true"), "%s", err);
    const char *as_root[] = {"ORCH_AGENT_EXEC_USER=root", NULL};
    cr_assert_eq(agent_run(state, as_root, err, sizeof(err)), 1, "%s", err);
    cr_assert(strstr(err, "is root"), "%s", err);
    /* Allowed explicitly: it gets past the check (and stops at the missing enrolment). */
    const char *allowed[] = {"ORCH_AGENT_EXEC_USER=", "ORCH_AGENT_EXEC_ALLOW_ROOT=true", NULL};
    cr_assert_eq(agent_run(state, allowed, err, sizeof(err)), 3, "%s", err);
    cr_assert(strstr(err, "not enrolled"), "%s", err);
    th_rm_rf(state);
}
