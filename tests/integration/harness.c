/* harness.c: see harness.h. */
#include "tests/integration/harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crypto.h"

extern char **environ;

const char *th_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        cr_assert_fail("environment variable %s is not set: run the tests through tools/test.sh",
                       name);
    return v;
}

char *th_pg_url(const char *role, const char *db)
{
    char *url = NULL;
    /* Passwords equal role names in the private test cluster (tools/lib.sh). */
    if (asprintf(&url, "postgresql://%s:%s@127.0.0.1:%s/%s", role, role, th_env("ORCH_PG_PORT"),
                 db) < 0)
        cr_assert_fail("out of memory");
    return url;
}

PGconn *th_pg_connect(const char *role, const char *db)
{
    char *url = th_pg_url(role, db);
    PGconn *pg = PQconnectdb(url);
    free(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(pg));
        PQfinish(pg);
        cr_assert_fail("connect as %s to %s: %s", role, db, why);
    }
    PQclear(PQexec(pg, "SET client_min_messages = warning"));
    return pg;
}

PGresult *th_pg_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        PQclear(r); /* the connection is the caller's */
        cr_assert_fail("SQL failed: %s\n  %s", PQerrorMessage(pg), sql);
    }
    return r;
}

long th_pg_long(PGconn *pg, const char *sql)
{
    PGresult *r = th_pg_ok(pg, sql);
    if (PQntuples(r) != 1) {
        PQclear(r);
        cr_assert_fail("expected one row from: %s", sql);
    }
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

void th_db_create(char *name, size_t len)
{
    uint8_t rnd[6];
    char hex[13];
    cr_assert_eq(crypto_random(rnd, sizeof(rnd)), 0);
    hex_encode(rnd, sizeof(rnd), hex);
    snprintf(name, len, "orch_t_%s", hex);
    PGconn *pg = th_pg_connect("orch_owner", "postgres");
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s OWNER orch_owner", name);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
}

/* Migrate database name with the real `orchd migrate`. */
static void migrate(const char *name)
{
    char *url = th_pg_url("orch_owner", name);
    char *env_url = NULL;
    cr_assert(asprintf(&env_url, "ORCHD_DB_MIGRATE_URL=%s", url) > 0);
    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "migrate", NULL};
    const char *env[] = {env_url, NULL};
    struct th_run r;
    th_run(&r, argv, env, 60000);
    free(env_url);
    free(url);
    if (r.status != 0) {
        char why[1024];
        snprintf(why, sizeof(why), "%s", th_str(&r.err));
        int st = r.status;
        th_run_free(&r);
        cr_assert_fail("orchd migrate failed (%d): %s", st, why);
    }
    th_run_free(&r);
}

/* The name of the migrated template of this orchd binary: its path, size and time of
 * change, hashed. A rebuilt orchd (whose migrations may differ) gets a template of its own. */
static void template_name(char *name, size_t len, char *path_tag, size_t tag_len)
{
    const char *orchd = th_env("ORCH_TEST_ORCHD");
    struct stat st;
    cr_assert_eq(stat(orchd, &st), 0, "%s: %s", orchd, strerror(errno));
    char key[4200];
    snprintf(key, sizeof(key), "%s\n%lld\n%lld.%09ld", orchd, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    char hex[CRYPTO_SHA256_HEX_LEN], path_hex[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(key, strlen(key), hex);
    crypto_sha256_hex(orchd, strlen(orchd), path_hex);
    snprintf(path_tag, tag_len, "orch_tpl_%.8s_", path_hex);
    snprintf(name, len, "%s%.16s", path_tag, hex);
}

/* A migrated database is a copy of a template migrated once per orchd binary (CREATE
 * DATABASE ... TEMPLATE copies files: about a second less per test than migrating, most of
 * it PostgreSQL's CPU). The first test to need it makes it, under an advisory lock that
 * the others wait on; templates of earlier builds of the same orchd are dropped then. */
void th_db_create_migrated(char *name, size_t len)
{
    char tpl[64], tag[32];
    template_name(tpl, sizeof(tpl), tag, sizeof(tag));
    PGconn *pg = th_pg_connect("orch_owner", "postgres");
    PQclear(th_pg_ok(pg, "SELECT pg_advisory_lock(7336841)"));
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_database WHERE datname = '%s'", tpl);
    if (th_pg_long(pg, sql) == 0) {
        snprintf(sql, sizeof(sql),
                 "SELECT datname FROM pg_database WHERE datname LIKE '%s%%' AND datname <> '%s'",
                 tag, tpl);
        PGresult *old = th_pg_ok(pg, sql);
        for (int i = 0; i < PQntuples(old); i++) {
            snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", PQgetvalue(old, i, 0));
            PQclear(PQexec(pg, sql)); /* in use by a copy being made: left for next time */
        }
        PQclear(old);
        char tmp[64];
        th_db_create(tmp, sizeof(tmp));
        migrate(tmp);
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s RENAME TO %s", tmp, tpl);
        PQclear(th_pg_ok(pg, sql));
    }
    PQclear(th_pg_ok(pg, "SELECT pg_advisory_unlock(7336841)"));

    uint8_t rnd[6];
    char hex[13];
    cr_assert_eq(crypto_random(rnd, sizeof(rnd)), 0);
    hex_encode(rnd, sizeof(rnd), hex);
    snprintf(name, len, "orch_t_%s", hex);
    /* FILE_COPY copies the template's files (and checkpoints first) rather than writing
     * every page of it to the WAL: about half the time for a migrated database. */
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE %s OWNER orch_owner STRATEGY FILE_COPY",
             name, tpl);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
}

void th_db_drop(const char *name)
{
    /* As the superuser: FORCE must end orch_app's backends too, which may still be exiting
     * just after the orchd that owned them did, and only a superuser (or pg_signal_backend)
     * may terminate another role's backends. */
    PGconn *pg = th_pg_connect("postgres", "postgres");
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
}

static char **merged_env(const char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **envp = calloc(n + m + 1, sizeof(*envp));
    cr_assert_not_null(envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* An extra entry replaces the inherited one of the same name. */
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < m; j++)
            if (strncmp(extra[j], environ[i], klen) == 0 && extra[j][klen] == '=')
                replaced = true;
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        envp[k++] = (char *)extra[j];
    envp[k] = NULL;
    return envp;
}

void th_run(struct th_run *r, const char *const *argv, const char *const *env, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    int out[2], err[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    char **envp = merged_env(env);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        close(out[1]);
        close(err[1]);
        execve(argv[0], (char *const *)argv, envp);
        _exit(127);
    }
    free(envp);
    close(out[1]);
    close(err[1]);

    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    struct pollfd fds[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds > 0) {
        uint64_t now = clock_mono_ns();
        if (now >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            /* Freed before asserting: a failed assertion does not come back. */
            for (int i = 0; i < 2; i++)
                if (fds[i].fd >= 0)
                    close(fds[i].fd);
            th_run_free(r);
            cr_assert_fail("%s did not finish within %d ms", argv[0], timeout_ms);
        }
        int n = poll(fds, 2, (int)((deadline - now) / 1000000u) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert(n >= 0);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char chunk[4096];
            ssize_t got = read(fds[i].fd, chunk, sizeof(chunk));
            if (got > 0) {
                buf_append(i == 0 ? &r->out : &r->err, chunk, (size_t)got);
            } else {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void th_run_free(struct th_run *r)
{
    buf_free(&r->out);
    buf_free(&r->err);
}

int th_tcp_conns(pid_t pid, int port)
{
    return th_tcp_conns_desc(pid, port, NULL, 0);
}

int th_tcp_conns_desc(pid_t pid, int port, char *desc, size_t desc_len)
{
    if (desc_len)
        desc[0] = '\0';
    /* The socket inodes among pid's file descriptors. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    unsigned long inodes[256];
    int ninodes = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && ninodes < 256) {
        char link[400], target[64];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) != 1)
            continue;
        /* Two descriptors of one socket (a dup, one inherited for a moment) are one
         * connection: each inode is counted once. */
        bool seen = false;
        for (int i = 0; i < ninodes && !seen; i++)
            seen = inodes[i] == ino;
        if (!seen)
            inodes[ninodes++] = ino;
    }
    closedir(dir);
    int count = 0;
    static const char *const tables[] = {"tcp", "tcp6"};
    for (size_t t = 0; t < 2; t++) {
        snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, tables[t]);
        FILE *f = fopen(path, "re");
        char line[512];
        if (!f)
            continue;
        if (!fgets(line, sizeof(line), f)) { /* the header */
            fclose(f);
            continue;
        }
        while (fgets(line, sizeof(line), f)) {
            char local[64], remote[64];
            unsigned st;
            unsigned long ino;
            /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
            if (sscanf(line, " %*s %63s %63s %x %*s %*s %*s %*s %*s %lu", local, remote, &st,
                       &ino) != 4)
                continue;
            const char *colon = strrchr(remote, ':');
            if (!colon || (int)strtol(colon + 1, NULL, 16) != port || st != 1 /* ESTABLISHED */)
                continue;
            for (int i = 0; i < ninodes; i++)
                if (inodes[i] == ino) {
                    count++;
                    const char *lc = strrchr(local, ':');
                    size_t used = desc_len ? strlen(desc) : 0;
                    if (lc && used + 1 < desc_len)
                        snprintf(desc + used, desc_len - used, "%slocal port %ld inode %lu",
                                 used ? ", " : "", strtol(lc + 1, NULL, 16), ino);
                }
        }
        fclose(f);
    }
    return count;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void th_rm_rf(const char *dir)
{
    int r = nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert(r == 0 || errno == ENOENT, "could not remove %s: %s", dir, strerror(errno));
}

static void pg_ctl(const char *what)
{
    char cmd[1024];
    const char *state = th_env("ORCH_STATE");
    snprintf(cmd, sizeof(cmd),
             "runuser -u postgres -- \"$(cat '%s/pg.bindir')/pg_ctl\" -D '%s/pg' -l "
             "'%s/postgres.log' -w -t 60 %s >/dev/null 2>&1",
             state, state, state, what);
    cr_assert_eq(system(cmd), 0, "pg_ctl %s failed", what);
}

void th_pg_stop(void)
{
    pg_ctl("stop -m fast");
}

void th_pg_start(void)
{
    char start[512];
    /* The options tools/lib.sh's orch_pg_start gives it. */
    snprintf(start, sizeof(start),
             "start -o \"-p %s -k %s -c listen_addresses=127.0.0.1 -c max_connections=200\"",
             th_env("ORCH_PG_PORT"), th_env("ORCH_PG_HOST"));
    pg_ctl(start);
}

void th_rabbitmqctl(const char *what)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "runuser -u rabbitmq -- sh -c \". '%s/rabbitmq/env.sh'; "
             "/usr/lib/rabbitmq/bin/rabbitmqctl -q %s\" >/dev/null 2>&1",
             th_env("ORCH_STATE"), what);
    cr_assert_eq(system(cmd), 0, "rabbitmqctl %s failed", what);
}

/* Does the NUL-separated environment env (n bytes) hold entry `kv` whole? */
static bool env_has(const char *env, size_t n, const char *kv)
{
    size_t len = strlen(kv);
    for (size_t i = 0; i < n; i += strlen(env + i) + 1)
        if (n - i >= len && strncmp(env + i, kv, len) == 0 && (i + len == n || !env[i + len]))
            return true;
    return false;
}

int th_job_procs(const char *job_id, long long epoch, const char *tag, int sig)
{
    char want_id[80] = "", want_epoch[48] = "";
    if (job_id) {
        snprintf(want_id, sizeof(want_id), "ORCH_JOB_ID=%s", job_id);
        if (epoch >= 0)
            snprintf(want_epoch, sizeof(want_epoch), "ORCH_JOB_EPOCH=%lld", epoch);
    } else {
        snprintf(want_id, sizeof(want_id), "%s", tag);
    }
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    char env[65536];
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end = NULL;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 1 || pid == getpid())
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t n = fread(env, 1, sizeof(env) - 1, f);
        fclose(f);
        env[n] = '\0';
        if (n == 0 || !env_has(env, n, want_id) || (want_epoch[0] && !env_has(env, n, want_epoch)))
            continue;
        found++;
        if (sig > 0)
            kill((pid_t)pid, sig);
    }
    closedir(d);
    return found;
}
