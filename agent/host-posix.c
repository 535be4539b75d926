/* host-posix.c: the daemon's OS part on Linux and other POSIX systems (see host.h). */
#include "agent/host.h"

#include <errno.h>
#include <stdbool.h>
#include <ftw.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

/* Who jobs run as. A root agent needs an unprivileged exec.user, or an explicit
 * exec.allow_root; an agent that is not root cannot switch, and jobs run as itself. */
int host_job_identity(const struct agent_config *cfg, struct host_job_identity *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (cfg->exec_uid_range && cfg->exec_uid_range[0]) {
        if (geteuid() != 0) {
            fprintf(stderr, "orch-agent: exec.uid_range needs an agent that runs as root (it "
                            "switches each job to a uid of its own)\n");
            return -1;
        }
        if (exec_uids_new(cfg->exec_uid_first, cfg->exec_uid_last, &ret->uids) < 0) {
            fprintf(stderr, "orch-agent: out of memory\n");
            return -1;
        }
        ret->switch_user = true;
        ret->user = (struct exec_user){.uid = cfg->exec_uid_first, .gid = cfg->exec_uid_first};
        snprintf(ret->name, sizeof(ret->name), "uid %u-%u", cfg->exec_uid_first,
                 cfg->exec_uid_last);
        return 0;
    }
    const char *name = cfg->exec_user ? cfg->exec_user : "";
    if (geteuid() != 0) {
        struct passwd *self = getpwuid(geteuid());
        snprintf(ret->name, sizeof(ret->name), "%s", self ? self->pw_name : "agent");
        return 0;
    }
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (name[0] && getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0)
        res = NULL;
    if (res && res->pw_uid != 0) {
        ret->switch_user = true;
        ret->user = (struct exec_user){.uid = res->pw_uid, .gid = res->pw_gid};
        snprintf(ret->name, sizeof(ret->name), "%s", name);
        return 0;
    }
    char why[160];
    if (!name[0])
        snprintf(why, sizeof(why), "exec.user is empty");
    else if (!res)
        snprintf(why, sizeof(why), "the job user '%s' (exec.user) does not exist", name);
    else
        snprintf(why, sizeof(why), "the job user '%s' (exec.user) is root", name);
    if (cfg->exec_allow_root) {
        log_warn("op=start detail=\"%s; jobs run as root (exec.allow_root=true)\"", why);
        snprintf(ret->name, sizeof(ret->name), "root");
        return 0;
    }
    fprintf(stderr,
            "orch-agent: refusing to run jobs as root: %s. Create it (useradd --system "
            "--no-create-home --shell /usr/sbin/nologin %s), set exec.user to an unprivileged "
            "account, or set exec.allow_root=true to let jobs run as root\n",
            why, name[0] ? name : "orch-job");
    return -1;
}

/* A directory of the agent's: ours, not writable by others, then given mode. A job's user
 * must not be able to replace what the agent reads there. */
int host_own_dir(const char *dir, mode_t mode)
{
    struct stat sb;
    if (stat(dir, &sb) < 0)
        return -errno;
    if (!S_ISDIR(sb.st_mode))
        return -ENOTDIR;
    if (sb.st_uid != geteuid() || (sb.st_mode & 022))
        return -EPERM;
    return chmod(dir, mode) < 0 ? -errno : 0;
}

/* A cgroup v2 directory for this agent's jobs, under its own cgroup: the cgroup2 mount
 * point (from mountinfo) plus our path (from /proc/self/cgroup) plus orch-agent.<id>.
 * NULL when there is no cgroup v2 or it is not writable (jobs then go without). */
char *host_cgroup_dir(const char *agent_id)
{
    _cleanup_fclose_ FILE *mi = fopen("/proc/self/mountinfo", "re");
    _cleanup_fclose_ FILE *cg = fopen("/proc/self/cgroup", "re");
    char line[4096], mnt[4096] = "", own[4096] = "";
    while (mi && fgets(line, sizeof(line), mi)) {
        /* "id parent maj:min root mountpoint opts [optional...] - fstype source sopts" */
        char *sep = strstr(line, " - cgroup2 ");
        char point[4096];
        if (sep && sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 && !mnt[0])
            snprintf(mnt, sizeof(mnt), "%s", point);
    }
    while (cg && fgets(line, sizeof(line), cg))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(own, sizeof(own), "%s", strcmp(line + 3, "/") == 0 ? "" : line + 3);
        }
    if (!mnt[0] || strchr(mnt, '\\'))
        return NULL; /* none, or an escaped (odd) mount point */
    char *dir = NULL;
    if (asprintf(&dir, "%s%s/orch-agent.%s", mnt, own, agent_id) < 0)
        return NULL;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        log_debug("op=cgroup path=%s error=%d", dir, errno);
        free(dir);
        return NULL;
    }
    return dir;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0 && errno != ENOENT)
        log_debug("op=cleanup path=%s error=%d", path, errno);
    return 0;
}

void host_rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int host_restrict_dir(const char *dir, mode_t mode)
{
    return chmod(dir, mode) < 0 ? -errno : 0;
}

int host_give_to_job(const char *workdir, int fd, const struct exec_user *user)
{
    if (user && (fchown(fd, user->uid, user->gid) < 0 || chown(workdir, user->uid, user->gid) < 0))
        return -errno;
    return 0;
}

void host_job_argv(const char **argv, const char *command, const char *entrypoint,
                   const char *const *args, size_t nargs, char *buf, size_t len)
{
    /* A package job runs its entrypoint from the workdir, with the job's arguments. */
    if (entrypoint) {
        snprintf(buf, len, "exec './%s' \"$@\"", entrypoint);
        command = buf;
    }
    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = command;
    argv[3] = "orch-job"; /* $0 */
    for (size_t i = 0; i < nargs; i++)
        argv[4 + i] = args[i];
    argv[4 + nargs] = NULL;
}

/* "k=v", malloc'd; NULL on ENOMEM. */
static char *env_kv(const char *k, const char *v)
{
    char *s;
    return asprintf(&s, "%s=%s", k, v) < 0 ? NULL : s;
}

char **host_env_defaults(const char *workdir)
{
    char **v = calloc(4, sizeof(*v));
    if (!v)
        return NULL;
    v[0] = env_kv("PATH", "/usr/local/bin:/usr/bin:/bin");
    v[1] = env_kv("HOME", workdir);
    v[2] = env_kv("LANG", "C.UTF-8");
    if (!v[0] || !v[1] || !v[2]) {
        for (int i = 0; i < 3; i++)
            free(v[i]);
        free(v);
        return NULL;
    }
    return v;
}

bool host_env_name_eq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

char *host_expand(const char *s)
{
    return strdup(s);
}

int host_state_dir_init(const char *dir)
{
    (void)dir;
    return 0;
}
