/* test-exec.c: exec-win.c (exec_ops on Job Objects) under wine or Windows. The jobs run
 * exec-helper.exe (tests/win/exec-helper.c), which sits next to this program. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <windows.h>
#include <aclapi.h>
#include <sddl.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/exec-win.h"
#include "agent/exec.h"
#include "common/buf.h"
#include "common/clock.h"

static char helper[MAX_PATH];
static bool under_wine; /* wine adds WINE* and its own SystemRoot to every environment */
static char tmpdir[MAX_PATH];

struct out {
    struct buf o, e;
    size_t max_chunk, chunks;
    bool started, tree_seen, bad_order;
    int pid;
    struct exec_tree tree;
    char tree_name[128];
    int fail_after; /* > 0: on_output returns -ENOSPC from this call on */
    int calls;
};

static int on_output(void *arg, int stream, const char *data, size_t len)
{
    struct out *o = arg;
    if (!o->started)
        o->bad_order = true;
    o->calls++;
    o->chunks++;
    if (len > o->max_chunk)
        o->max_chunk = len;
    buf_append(stream == 1 ? &o->o : &o->e, data, len);
    return o->fail_after > 0 && o->calls >= o->fail_after ? -ENOSPC : 0;
}

static void on_started(void *arg, int pid)
{
    struct out *o = arg;
    if (!o->tree_seen)
        o->bad_order = true;
    o->started = true;
    o->pid = pid;
}

static void on_tree(void *arg, const struct exec_tree *t)
{
    struct out *o = arg;
    o->tree = *t;
    snprintf(o->tree_name, sizeof(o->tree_name), "%s", t->cgroup ? t->cgroup : "");
    o->tree.cgroup = o->tree_name[0] ? o->tree_name : NULL;
    o->tree_seen = true;
}

static void out_free(struct out *o)
{
    buf_free(&o->o);
    buf_free(&o->e);
}

static int run(struct exec_spec *spec, struct out *o, atomic_bool *cancel, struct exec_result *res)
{
    struct exec_sink sink = {o, on_output, on_started, on_tree};
    if (!spec->job_id)
        spec->job_id = "test-job";
    memset(res, 0xa5, sizeof(*res));
    return exec_default_ops()->run(spec, &sink, cancel, res);
}

/* Run the helper with these arguments (NULL-terminated, after the helper itself). */
static int run_helper(const char *const *args, struct exec_spec *spec, struct out *o,
                      struct exec_result *res)
{
    const char *argv[32] = {helper};
    for (int i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    spec->argv = argv;
    return run(spec, o, NULL, res);
}

/* Is process pid gone, or gone within ms? */
static bool gone_within(unsigned long pid, DWORD ms)
{
    HANDLE h = OpenProcess(SYNCHRONIZE, FALSE, (DWORD)pid);
    if (!h)
        return true;
    bool gone = WaitForSingleObject(h, ms) == WAIT_OBJECT_0;
    CloseHandle(h);
    return gone;
}

static unsigned long pid_in(const char *text)
{
    const char *p = text ? strstr(text, "pid=") : NULL;
    return p ? strtoul(p + 4, NULL, 10) : 0;
}

WTEST(exec, name_and_bad_spec)
{
    WT_ASSERT(strcmp(exec_default_ops()->name, "windows") == 0, "name %s",
              exec_default_ops()->name);
    const char *argv[] = {"x", NULL};
    struct exec_spec spec = {.argv = argv, .job_id = "bad/id"};
    struct exec_result res;
    WT_ASSERT(exec_default_ops()->run(&spec, NULL, NULL, &res) == -EINVAL, "bad job id");
    spec.job_id = "ok";
    spec.timeout_ms = -1;
    WT_ASSERT(exec_default_ops()->run(&spec, NULL, NULL, &res) == -EINVAL, "negative timeout");
}

WTEST(exec, exit_codes)
{
    static const char *codes[] = {"0", "3", "255", "300", "65536"};
    static const int want[] = {0, 3, 255, 300, 65536};
    for (size_t i = 0; i < sizeof(codes) / sizeof(*codes); i++) {
        struct out o = {0};
        struct exec_spec spec = {0};
        struct exec_result res;
        const char *args[] = {"exit", codes[i], NULL};
        WT_ASSERT(run_helper(args, &spec, &o, &res) == 0, "run");
        WT_ASSERT(res.started && res.exit_code == want[i], "exit %s: got %d started=%d", codes[i],
                  res.exit_code, res.started);
        WT_ASSERT(res.term_signal == 0 && !res.timed_out && !res.cancelled, "flags");
        WT_ASSERT(res.user_switched, "restricted token in force");
        WT_ASSERT(o.tree_seen && o.started && !o.bad_order && o.pid > 0, "callbacks");
        WT_ASSERT(o.tree.pgid == o.pid && o.tree.start_ticks > 0, "tree");
        const char *pre = "Global\\orch-job-test-job.";
        WT_ASSERT(strncmp(o.tree_name, pre, strlen(pre)) == 0, "job object %s", o.tree_name);
        out_free(&o);
    }
}

WTEST(exec, streams_apart_in_order)
{
    struct out o = {0};
    struct exec_spec spec = {0};
    struct exec_result res;
    const char *args[] = {"interleave", "500", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    struct buf wo = BUF_INIT, we = BUF_INIT;
    for (int i = 0; i < 500; i++) {
        buf_printf(&wo, "o%d\n", i);
        buf_printf(&we, "e%d\n", i);
    }
    WT_ASSERT(o.o.len == wo.len && memcmp(o.o.data, wo.data, wo.len) == 0, "stdout %zu/%zu",
              o.o.len, wo.len);
    WT_ASSERT(o.e.len == we.len && memcmp(o.e.data, we.data, we.len) == 0, "stderr %zu/%zu",
              o.e.len, we.len);
    buf_free(&wo);
    buf_free(&we);
    out_free(&o);
}

WTEST(exec, large_output_in_chunks)
{
    struct out o = {0};
    struct exec_spec spec = {.max_output_chunk = 4096};
    struct exec_result res;
    const char *args[] = {"out", "6000000", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    WT_ASSERT(o.o.len == 6000000, "got %zu bytes", o.o.len);
    WT_ASSERT(o.max_chunk <= 4096, "chunk of %zu", o.max_chunk);
    for (size_t i = 0; i < o.o.len; i++)
        WT_ASSERT(o.o.data[i] == (char)('a' + i % 26), "byte %zu", i);
    out_free(&o);
}

/* The child's environment without what wine adds to every process. */
static int env_lines(char *text, char **lines, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save)) {
        if (under_wine && strncmp(l, "WINE", 4) == 0)
            continue;
        lines[n++] = l;
    }
    return n;
}

WTEST(exec, env_is_clean)
{
    struct out o = {0};
    const char *env[] = {"ZED=last", "FOO=bar baz", "alpha=1", "not an entry", NULL};
    struct exec_spec spec = {.env = env};
    struct exec_result res;
    const char *args[] = {"env", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    /* What was given plus the documented defaults, sorted by name without case (wine
     * moves SystemDrive and SystemRoot to the end, after its own WINE* entries). */
    const char *want[] = {"alpha=1",      "ComSpec=",    "FOO=bar baz", "PATHEXT=",
                          "SystemDrive=", "SystemRoot=", "ZED=last",    NULL};
    char *lines[64];
    int n = env_lines(o.o.data, lines, 64);
    WT_ASSERT(n == 7, "%d entries", n);
    for (int k = 0; want[k]; k++) {
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= strncmp(lines[i], want[k], strlen(want[k])) == 0;
        WT_ASSERT(seen, "missing %s", want[k]);
        if (!under_wine)
            WT_ASSERT(strncmp(lines[k], want[k], strlen(want[k])) == 0, "entry %d: %s, want %s", k,
                      lines[k], want[k]);
    }
    out_free(&o);
}

WTEST(exec, env_given_defaults_win)
{
    /* A default the job set itself, in any case, is left as it is. */
    struct out o = {0};
    const char *env[] = {"comspec=X:\\my\\cmd.exe", "Pathext=.EXE", NULL};
    struct exec_spec spec = {.env = env};
    struct exec_result res;
    const char *args[] = {"env", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    char *lines[64];
    int n = env_lines(o.o.data, lines, 64), comspec = 0, pathext = 0;
    for (int i = 0; i < n; i++) {
        if (_strnicmp(lines[i], "comspec=", 8) == 0) {
            comspec++;
            WT_ASSERT(strcmp(lines[i], "comspec=X:\\my\\cmd.exe") == 0, "got %s", lines[i]);
        }
        if (_strnicmp(lines[i], "pathext=", 8) == 0) {
            pathext++;
            WT_ASSERT(strcmp(lines[i], "Pathext=.EXE") == 0, "got %s", lines[i]);
        }
    }
    WT_ASSERT(comspec == 1 && pathext == 1, "comspec %d pathext %d", comspec, pathext);
    out_free(&o);
}

static void mkdtemp_w(char *out, size_t len, const char *tag)
{
    static int n;
    snprintf(out, len, "%s\\orch-exec-%lu-%s-%d", tmpdir, (unsigned long)GetCurrentProcessId(), tag,
             n++);
    CreateDirectoryA(out, NULL);
}

WTEST(exec, workdir_and_stdin)
{
    char dir[MAX_PATH], in[MAX_PATH + 16];
    mkdtemp_w(dir, sizeof(dir), "wd");
    snprintf(in, sizeof(in), "%s\\stdin.txt", dir);
    FILE *f = fopen(in, "wb");
    WT_ASSERT(f, "fopen");
    fputs("line one\nline two\n", f);
    fclose(f);
    struct out o = {0};
    struct exec_spec spec = {.workdir = dir};
    struct exec_result res;
    const char *args[] = {"cwd", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    WT_ASSERT(o.o.data && _strnicmp(o.o.data, dir, strlen(dir)) == 0, "cwd %s, want %s", o.o.data,
              dir);
    out_free(&o);

    struct out c = {0};
    struct exec_spec s2 = {.workdir = dir, .stdin_path = in};
    const char *cat[] = {"cat", NULL};
    WT_ASSERT(run_helper(cat, &s2, &c, &res) == 0 && res.exit_code == 0, "run cat");
    WT_ASSERT(c.o.data && strcmp(c.o.data, "line one\nline two\n") == 0, "stdin: %s", c.o.data);
    out_free(&c);

    /* Without stdin_path: NUL, at EOF at once. */
    struct out d = {0};
    struct exec_spec s3 = {0};
    WT_ASSERT(run_helper(cat, &s3, &d, &res) == 0 && res.exit_code == 0 && d.o.len == 0,
              "stdin NUL");
    out_free(&d);
    DeleteFileA(in);
    RemoveDirectoryA(dir);
}

WTEST(exec, not_found_127)
{
    struct out o = {0};
    const char *argv[] = {"no-such-program-here", "x", NULL};
    const char *env[] = {"PATH=C:\\windows\\system32", NULL};
    struct exec_spec spec = {.argv = argv, .env = env};
    struct exec_result res;
    WT_ASSERT(run(&spec, &o, NULL, &res) == 0, "run");
    WT_ASSERT(!res.started && res.exit_code == 127, "exit %d started %d", res.exit_code,
              res.started);
    WT_ASSERT(o.e.data && strstr(o.e.data, "no-such-program-here: command not found"), "reason %s",
              o.e.data);
    WT_ASSERT(!o.started && !o.tree_seen, "no start callbacks");
    out_free(&o);

    struct out w = {0};
    struct exec_spec s2 = {.workdir = "C:\\no\\such\\dir"};
    const char *args[] = {"cwd", NULL};
    WT_ASSERT(run_helper(args, &s2, &w, &res) == 0, "run");
    WT_ASSERT(!res.started && res.exit_code == 127, "workdir: exit %d", res.exit_code);
    WT_ASSERT(w.e.data && strstr(w.e.data, "cannot enter workdir"), "reason %s", w.e.data);
    out_free(&w);
}

WTEST(exec, not_executable_126)
{
    char dir[MAX_PATH], path[MAX_PATH + 16];
    mkdtemp_w(dir, sizeof(dir), "noexec");
    snprintf(path, sizeof(path), "%s\\fake.exe", dir);
    FILE *f = fopen(path, "wb");
    WT_ASSERT(f, "fopen");
    fputs("this is not a program", f);
    fclose(f);
    struct out o = {0};
    const char *argv[] = {path, NULL};
    struct exec_spec spec = {.argv = argv};
    struct exec_result res;
    WT_ASSERT(run(&spec, &o, NULL, &res) == 0, "run");
    WT_ASSERT(!res.started && res.exit_code == 126, "exit %d", res.exit_code);
    WT_ASSERT(o.e.data && strstr(o.e.data, "fake.exe: "), "reason %s", o.e.data);
    printf("# reason: %s", o.e.data);
    out_free(&o);
    DeleteFileA(path);
    RemoveDirectoryA(dir);
}

WTEST(exec, timeout_kills_tree)
{
    struct out o = {0};
    struct exec_spec spec = {.timeout_ms = 1500};
    struct exec_result res;
    const char *args[] = {"spawn-wait", "60000", NULL};
    uint64_t t0 = clock_mono_ns();
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0, "run");
    uint64_t ms = (clock_mono_ns() - t0) / 1000000;
    unsigned long gc = pid_in(o.o.data);
    WT_ASSERT(res.timed_out && !res.cancelled && res.exit_code == -1, "timed_out %d exit %d",
              res.timed_out, res.exit_code);
    WT_ASSERT(gc > 0, "grandchild pid in %s", o.o.data);
    WT_ASSERT(gone_within(gc, 2000), "grandchild %lu still runs", gc);
    WT_ASSERT(ms >= 1400 && ms < 10000, "took %llu ms", (unsigned long long)ms);
    WT_ASSERT(res.duration_ms >= 1400, "duration %lld", (long long)res.duration_ms);
    out_free(&o);
}

struct canceller {
    atomic_bool *flag;
    struct out *o;
};

static void *cancel_main(void *arg)
{
    struct canceller *c = arg;
    /* Once the job has said where its grandchild is, bounded. */
    for (int i = 0; i < 1000 && !pid_in(c->o->o.data); i++)
        Sleep(10);
    atomic_store(c->flag, true);
    return NULL;
}

WTEST(exec, cancel_from_another_thread)
{
    struct out o = {0};
    atomic_bool flag = false;
    struct canceller c = {&flag, &o};
    const char *argv[] = {helper, "spawn-wait", "60000", NULL};
    struct exec_spec spec = {.argv = argv};
    struct exec_result res;
    pthread_t t;
    pthread_create(&t, NULL, cancel_main, &c);
    uint64_t t0 = clock_mono_ns();
    int r = run(&spec, &o, &flag, &res);
    pthread_join(t, NULL);
    WT_ASSERT(r == 0 && res.cancelled && !res.timed_out && res.exit_code == -1,
              "cancelled %d exit %d", res.cancelled, res.exit_code);
    WT_ASSERT((clock_mono_ns() - t0) / 1000000 < 10000, "slow cancel");
    unsigned long gc = pid_in(o.o.data);
    WT_ASSERT(gc && gone_within(gc, 2000), "grandchild %lu", gc);
    out_free(&o);
}

WTEST(exec, drain_then_kill)
{
    /* The main process exits at once; its child holds stdout and writes after 300 ms:
     * that output is delivered within drain_ms. */
    struct out o = {0};
    struct exec_spec spec = {.drain_ms = 10000};
    struct exec_result res;
    const char *args[] = {"spawn", "-300", "7", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 7, "run");
    WT_ASSERT(o.o.data && strstr(o.o.data, "late\n"), "drained: %s", o.o.data);
    WT_ASSERT(!res.abandoned_pipes, "abandoned");
    out_free(&o);

    /* One that would hold it for a minute is killed after drain_ms. */
    struct out k = {0};
    struct exec_spec s2 = {.drain_ms = 500};
    const char *a2[] = {"spawn", "-60000", "0", NULL};
    uint64_t t0 = clock_mono_ns();
    WT_ASSERT(run_helper(a2, &s2, &k, &res) == 0 && res.exit_code == 0, "run 2");
    uint64_t ms = (clock_mono_ns() - t0) / 1000000;
    WT_ASSERT(ms < 5000, "took %llu ms", (unsigned long long)ms);
    WT_ASSERT(!res.abandoned_pipes && !res.timed_out, "flags");
    unsigned long gc = pid_in(k.o.data);
    WT_ASSERT(gc && gone_within(gc, 2000), "straggler %lu", gc);
    WT_ASSERT(!strstr(k.o.data, "late"), "late output");
    out_free(&k);
}

WTEST(exec, leftover_without_pipes_killed)
{
    /* A child that does not hold the pipes outlives its parent: killed at the end. */
    struct out o = {0};
    struct exec_spec spec = {0};
    struct exec_result res;
    const char *args[] = {"spawn", "60000", "0", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    unsigned long gc = pid_in(o.o.data);
    WT_ASSERT(gc && gone_within(gc, 1000), "leftover %lu", gc);
    out_free(&o);
}

WTEST(exec, output_error_kills)
{
    struct out o = {.fail_after = 1};
    struct exec_spec spec = {.max_output_chunk = 1024};
    struct exec_result res;
    const char *args[] = {"out", "100000000", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0, "run");
    WT_ASSERT(res.output_error == -ENOSPC && res.exit_code == -1, "error %d exit %d",
              res.output_error, res.exit_code);
    WT_ASSERT(o.calls == 1, "%d calls after the error", o.calls);
    out_free(&o);
}

static const char *tricky[] = {
    "plain",
    "with space",
    "",
    "quote\"inside",
    "trailing\\",
    "trail space\\",
    "\\\\server\\share\\",
    "a\\\\\"b",
    "tab\there",
    "\"",
    "\\",
    "é ü 😀",
    NULL,
};

WTEST(exec, quoting_direct)
{
    struct out o = {0};
    const char *argv[32] = {helper, "argv"};
    int n = 2;
    for (int i = 0; tricky[i]; i++)
        argv[n++] = tricky[i];
    argv[n] = NULL;
    struct exec_spec spec = {.argv = argv};
    struct exec_result res;
    WT_ASSERT(run(&spec, &o, NULL, &res) == 0 && res.exit_code == 0, "run");
    struct buf want = BUF_INIT;
    buf_append_str(&want, "[argv]\n");
    for (int i = 0; tricky[i]; i++)
        buf_printf(&want, "[%s]\n", tricky[i]);
    const char *got = strchr(o.o.data, '\n'); /* after the raw command line */
    WT_ASSERT(got && strcmp(got + 1, want.data) == 0, "got:\n%s\nwant:\n%s", o.o.data, want.data);
    buf_free(&want);
    out_free(&o);
}

WTEST(exec, quoting_through_cmd)
{
    /* The daemon's shape: cmd.exe /d /s /c COMMAND ARGS...; the ARGS reach the program
     * COMMAND runs unchanged, cmd's metacharacters and %VAR% included (wine's cmd expands
     * %VAR% before it removes the carets, Windows' cmd does not: that one on Windows only). */
    static const char *args[] = {"with space", "a&b",    "x|y",     "<in>", "%PATH%",
                                 "q\"uo&te",   "caret^", "(paren)", "",     NULL};
    struct out o = {0};
    char command[MAX_PATH + 16];
    snprintf(command, sizeof(command), "\"%s\" argv", helper);
    const char *argv[32] = {"cmd.exe", "/d", "/s", "/c", command};
    int n = 5;
    for (int i = 0; args[i]; i++)
        if (!under_wine || !strchr(args[i], '%'))
            argv[n++] = args[i];
    argv[n] = NULL;
    const char *env[] = {"PATH=C:\\windows\\system32", NULL};
    struct exec_spec spec = {.argv = argv, .env = env};
    struct exec_result res;
    WT_ASSERT(run(&spec, &o, NULL, &res) == 0 && res.exit_code == 0, "run: %s",
              o.e.data ? o.e.data : "");
    struct buf want = BUF_INIT;
    buf_append_str(&want, "[argv]\n");
    for (int i = 0; args[i]; i++)
        if (!under_wine || !strchr(args[i], '%'))
            buf_printf(&want, "[%s]\n", args[i]);
    const char *got = o.o.data ? strchr(o.o.data, '\n') : NULL;
    WT_ASSERT(got && strcmp(got + 1, want.data) == 0, "got:\n%s\nwant:\n%s", o.o.data, want.data);
    buf_free(&want);
    out_free(&o);
}

WTEST(exec, cmdline_builder)
{
    struct {
        const char *argv[8];
        const char *want;
    } cases[] = {
        {{"prog", "a", "b c", NULL}, "prog a \"b c\""},
        {{"C:\\Program Files\\x.exe", "", NULL}, "\"C:\\Program Files\\x.exe\" \"\""},
        {{"p", "a\\\\b", "c\\", "d e\\", NULL}, "p a\\\\b c\\ \"d e\\\\\""},
        {{"p", "say \"hi\"", NULL}, "p \"say \\\"hi\\\"\""},
        {{"p", "\\\"", NULL}, "p \"\\\\\\\"\""},
        {{"cmd.exe", "/d", "/s", "/c", "echo hi", NULL}, "cmd.exe /d /s /c \"echo hi\""},
        {{"C:\\Windows\\System32\\CMD.EXE", "/c", "dir", "a b", "x&y", NULL},
         "C:\\Windows\\System32\\CMD.EXE /c \"dir ^\"a b^\" ^\"x^&y^\"\""},
        {{"cmd", "/d", "/s", "/c", "prog", "%X%", NULL}, "cmd /d /s /c \"prog ^\"^%X^%^\"\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char *got = NULL;
        WT_ASSERT(exec_win_cmdline(cases[i].argv, &got) == 0, "case %zu", i);
        WT_ASSERT(strcmp(got, cases[i].want) == 0, "case %zu: got %s, want %s", i, got,
                  cases[i].want);
        free(got);
    }
    const char *bad[] = {"a\"b", NULL};
    char *got = NULL;
    WT_ASSERT(exec_win_cmdline(bad, &got) == -EINVAL, "quote in argv[0]");
}

WTEST(exec, only_std_handles_inherited)
{
    /* An inheritable pipe of ours: were it inherited, the job's write would reach us. */
    SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, TRUE};
    HANDLE rd, wr;
    WT_ASSERT(CreatePipe(&rd, &wr, &sa, 0), "pipe");
    SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
    char hv[32];
    snprintf(hv, sizeof(hv), "%llu", (unsigned long long)(uintptr_t)wr);
    struct out o = {0};
    struct exec_spec spec = {0};
    struct exec_result res;
    const char *args[] = {"handle", hv, NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    CloseHandle(wr);
    char got[16];
    DWORD n = 0;
    BOOL ok = ReadFile(rd, got, sizeof(got), &n, NULL);
    CloseHandle(rd);
    WT_ASSERT(!ok || n == 0, "an inheritable handle of the agent reached the job (%s)", o.o.data);
    out_free(&o);
}

WTEST(exec, restricted_token)
{
    struct out o = {0};
    struct exec_spec spec = {0};
    struct exec_result res;
    const char *args[] = {"token", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    WT_ASSERT(res.user_switched, "user_switched");
    WT_ASSERT(o.o.data && strncmp(o.o.data, "restricted=", 11) == 0, "token: %s", o.o.data);
    if (under_wine) {
        /* Wine's CreateRestrictedToken keeps neither restricting SIDs nor the removal of
         * privileges: nothing to see in the job. */
        printf("# wine: restricted tokens not implemented, child says %s", o.o.data);
    } else {
        WT_ASSERT(strcmp(o.o.data, "restricted=1 privileges=1\n") == 0, "token: %s", o.o.data);
    }
    out_free(&o);
}

WTEST(exec, job_desktop)
{
    /* The agent's own desktop, which the restricted token may use (user32 starts). */
    struct out o = {0};
    struct exec_spec spec = {0};
    struct exec_result res;
    const char *args[] = {"desktop", NULL};
    WT_ASSERT(run_helper(args, &spec, &o, &res) == 0 && res.exit_code == 0, "run");
    char want[64];
    snprintf(want, sizeof(want), "orch-jobs-%lu\\Default user32=ok\n",
             (unsigned long)GetCurrentProcessId());
    WT_ASSERT(o.o.data && strcmp(o.o.data, want) == 0, "desktop: %s", o.o.data);
    out_free(&o);
}

/* Does path's DACL hold an allow ACE for a per-job SID (S-1-9-...)? Its flags in *flags. */
static bool has_job_ace(const char *path, DWORD *flags)
{
    PACL dacl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    bool found = false;
    if (GetNamedSecurityInfoA(path, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &dacl,
                              NULL, &sd) != ERROR_SUCCESS)
        return false;
    for (DWORD i = 0; dacl && i < dacl->AceCount && !found; i++) {
        ACCESS_ALLOWED_ACE *ace;
        LPSTR str = NULL;
        if (!GetAce(dacl, i, (void **)&ace) || ace->Header.AceType != ACCESS_ALLOWED_ACE_TYPE)
            continue;
        if (ConvertSidToStringSidA((PSID)&ace->SidStart, &str) && strncmp(str, "S-1-9-", 6) == 0) {
            found = true;
            *flags = ace->Header.AceFlags;
        }
        LocalFree(str);
    }
    LocalFree(sd);
    return found;
}

struct acl_seen {
    struct out o;
    const char *dir, *keep;
    bool dir_ace, keep_ace;
    DWORD dir_flags, keep_flags;
};

static void acl_started(void *arg, int pid)
{
    struct acl_seen *a = arg;
    (void)pid;
    a->dir_ace = has_job_ace(a->dir, &a->dir_flags);
    a->keep_ace = has_job_ace(a->keep, &a->keep_flags);
}

WTEST(exec, workdir_granted_to_the_job)
{
    char dir[MAX_PATH], keep[MAX_PATH + 16];
    mkdtemp_w(dir, sizeof(dir), "acl");
    snprintf(keep, sizeof(keep), "%s.result.json", dir);
    FILE *f = fopen(keep, "wb");
    WT_ASSERT(f, "fopen");
    fclose(f);
    struct acl_seen a = {.dir = dir, .keep = keep};
    const char *argv[] = {helper, "exit", "0", NULL};
    struct exec_spec spec = {.argv = argv, .job_id = "acl", .workdir = dir, .keep_file = keep};
    struct exec_sink sink = {&a, on_output, acl_started, NULL};
    struct exec_result res;
    WT_ASSERT(exec_default_ops()->run(&spec, &sink, NULL, &res) == 0 && res.exit_code == 0, "run");
    DWORD fl;
    bool dir_after = has_job_ace(dir, &fl), keep_after = has_job_ace(keep, &fl);
    DeleteFileA(keep);
    RemoveDirectoryA(dir);
    if (under_wine && !a.dir_ace) {
        /* Wine's SetNamedSecurityInfo succeeds and keeps nothing: nothing to look at. */
        printf("# wine: file DACLs are not kept, the grant is not visible\n");
        return;
    }
    /* While it ran: full control for its SID, inherited in the workdir, not on the file. */
    WT_ASSERT(a.dir_ace && (a.dir_flags & (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE)) ==
                               (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE),
              "workdir ace %d flags %lx", a.dir_ace, (unsigned long)a.dir_flags);
    WT_ASSERT(a.keep_ace && a.keep_flags == 0, "result file ace %d flags %lx", a.keep_ace,
              (unsigned long)a.keep_flags);
    /* Gone with the job. */
    WT_ASSERT(!dir_after && !keep_after, "ACE left behind");
}

struct killer {
    struct out *o;
    volatile bool *seen;
    int found;
};

static void *kill_main(void *arg)
{
    struct killer *k = arg;
    for (int i = 0; i < 1000 && !pid_in(k->o->o.data); i++)
        Sleep(10);
    k->found = exec_tree_kill(&k->o->tree, NULL, 5000);
    return NULL;
}

WTEST(exec, tree_kill_by_job_object_name)
{
    /* What daemon_kill_tree() does while the job runs, and a restarted agent with the
     * recorded tree: the job object found by its name ends every process. */
    struct out o = {0};
    struct killer k = {&o, NULL, 0};
    const char *argv[] = {helper, "spawn-wait", "60000", NULL};
    struct exec_spec spec = {.argv = argv, .job_id = "kill-me.3"};
    struct exec_result res;
    pthread_t t;
    pthread_create(&t, NULL, kill_main, &k);
    int r = run(&spec, &o, NULL, &res);
    pthread_join(t, NULL);
    WT_ASSERT(r == 0 && res.exit_code == -1, "exit %d", res.exit_code);
    const char *pre = "Global\\orch-job-kill-me.3.";
    WT_ASSERT(strncmp(o.tree_name, pre, strlen(pre)) == 0, "name %s", o.tree_name);
    WT_ASSERT(k.found >= 2, "found %d", k.found);
    unsigned long gc = pid_in(o.o.data);
    WT_ASSERT(gc && gone_within(gc, 2000), "grandchild %lu", gc);
}

WTEST(exec, tree_kill_by_pid_and_start_time)
{
    /* A tree outside any job object of ours (an unnamed one's leftovers): found from the
     * leader's pid and creation time. */
    wchar_t wh[MAX_PATH], cmd[MAX_PATH + 64];
    MultiByteToWideChar(CP_UTF8, 0, helper, -1, wh, MAX_PATH);
    swprintf(cmd, MAX_PATH + 64, L"\"%ls\" spawn-wait 60000", wh);
    STARTUPINFOW si = {.cb = sizeof(si)};
    PROCESS_INFORMATION pi;
    SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, TRUE};
    HANDLE rd, wr;
    WT_ASSERT(CreatePipe(&rd, &wr, &sa, 0), "pipe");
    SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdOutput = wr;
    /* DETACHED_PROCESS: no console, so no conhost.exe of ours (wine's, for a process it
     * kills, sometimes lingers with this program's stdout and meson waits for it). */
    WT_ASSERT(CreateProcessW(wh, cmd, NULL, NULL, TRUE, DETACHED_PROCESS, NULL, NULL, &si, &pi),
              "start");
    CloseHandle(wr);
    char line[64] = "";
    DWORD n = 0;
    ReadFile(rd, line, sizeof(line) - 1, &n, NULL);
    line[n] = '\0';
    unsigned long gc = pid_in(line);
    WT_ASSERT(gc, "grandchild pid: %s", line);
    struct exec_tree tree = {0};
    WT_ASSERT(exec_tree_probe((int)pi.dwProcessId, &tree) == 0, "probe");
    WT_ASSERT(tree.pgid == (int)pi.dwProcessId && strncmp(tree.boot_id, "win-", 4) == 0, "tree");

    /* A wrong start time is another process: left alone. */
    struct exec_tree other = tree;
    other.start_ticks++;
    WT_ASSERT(exec_tree_kill(&other, NULL, 100) == 0, "other process hit");
    WT_ASSERT(WaitForSingleObject(pi.hProcess, 0) == WAIT_TIMEOUT, "leader killed");

    /* The leader, its child, and (Windows 8 on, and wine) the leader's conhost.exe. */
    int r = exec_tree_kill(&tree, NULL, 5000);
    WT_ASSERT(r >= 2, "found %d", r);
    WT_ASSERT(WaitForSingleObject(pi.hProcess, 2000) == WAIT_OBJECT_0, "leader alive");
    WT_ASSERT(gone_within(gc, 2000), "grandchild alive");
    CloseHandle(pi.hProcess);
    CloseHandle(pi.hThread);
    CloseHandle(rd);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

WTEST(exec, bench_cmd_exit_0)
{
    /* Not an assertion on speed: the time to start and reap `cmd /c exit 0`. */
    uint64_t t[50];
    const char *argv[] = {"cmd.exe", "/d", "/s", "/c", "exit 0", NULL};
    const char *env[] = {"PATH=C:\\windows\\system32", NULL};
    for (int i = 0; i < 50; i++) {
        struct out o = {0};
        struct exec_spec spec = {.argv = argv, .env = env};
        struct exec_result res;
        uint64_t t0 = clock_mono_ns();
        WT_ASSERT(run(&spec, &o, NULL, &res) == 0 && res.exit_code == 0, "run %d", i);
        t[i] = clock_mono_ns() - t0;
        out_free(&o);
    }
    qsort(t, 50, sizeof(*t), cmp_u64);
    printf("# cmd /c exit 0: median %.1f ms, min %.1f ms, max %.1f ms (50 runs)\n",
           (double)(t[24] + t[25]) / 2e6, (double)t[0] / 1e6, (double)t[49] / 1e6);
}

int main(int argc, char **argv)
{
    char self[MAX_PATH];
    GetModuleFileNameA(NULL, self, MAX_PATH);
    char *slash = strrchr(self, '\\');
    if (slash)
        *slash = '\0';
    snprintf(helper, sizeof(helper), "%s\\exec-helper.exe", self);
    under_wine = GetProcAddress(GetModuleHandleA("ntdll.dll"), "wine_get_version") != NULL;
    DWORD n = GetTempPathA(sizeof(tmpdir), tmpdir);
    if (n > 0 && tmpdir[n - 1] == '\\')
        tmpdir[n - 1] = '\0';
    return wtest_main(argc, argv);
}
