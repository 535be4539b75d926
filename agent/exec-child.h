/* exec-child.h: the child side of exec-posix.c, from fork to exec: what the parent
 * prepares for it (struct child_ctx) and what it reports back (struct child_report). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Written by the child to the report pipe; at most PIPE_BUF bytes, so one atomic write. */
enum child_stage {
    STAGE_CGROUP = 1, /* not fatal: the job runs, just outside its cgroup */
    STAGE_PROC,       /* not fatal: the namespace's /proc could not be mounted */
    STAGE_SETUP,
    STAGE_USER,
    STAGE_CHDIR,
    STAGE_EXEC,
};

struct child_report {
    int stage;
    int err;
};

/* Everything the child needs, prepared by the parent: between fork and exec in a
 * multi-threaded process only async-signal-safe calls are allowed (no malloc, no stdio). */
struct child_ctx {
    char *const *argv;
    char *const *env;
    const char *workdir;
    char **paths;   /* candidate files for argv[0], NULL-terminated */
    char **sh_argv; /* "/bin/sh", <slot for the file>, argv[1..], NULL: for ENOEXEC */
    int in_r, out_w, err_w, report_w; /* all >= 3 */
    int cgroup_procs;                 /* -1 = no cgroup */
    bool has_user;
    uid_t uid;
    gid_t gid;
    bool init; /* isolated: this child is the namespace's init, the program its child */
    const char *hide_dir, *keep_file;
    int status_w; /* init: where the program's wait status goes */
    pid_t parent; /* the program's expected parent, to catch a death before PDEATHSIG */
};

/* A fork by raw clone(2) with flags (e.g. CLONE_NEWPID | CLONE_NEWNS) and SIGCHLD: see
 * exec-child.c for why not fork(). Returns the pid, 0 in the child, or -1 with errno. */
pid_t exec_child_clone(unsigned long flags);

/* In the child, right after the fork, with every signal blocked: become the job (or, when
 * c->init, the init of its namespace). Async-signal-safe calls only. Never returns. */
_Noreturn void exec_child_start(struct child_ctx *c);
