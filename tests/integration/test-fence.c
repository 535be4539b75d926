/* Self-fencing (docs/agent.md, "Leases and self-fencing"): an agent cut off from orchd
 * by a blackholing proxy while it runs a long job kills the job's whole tree before the
 * lease expires on the server, so the re-run that orchd starts on another agent once the
 * lease has expired never overlaps it; when the link heals, nothing of the old attempt is
 * taken for a result. Real orchd, PostgreSQL and agents (root: jobs run as orch-job in
 * their own PID namespace, so the job's processes are found by their environment). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/proxy.h"
#include "tests/integration/server.h"

/* Long enough for a loaded machine (sanitizers, parallel builds) to renew it in time: the
 * agent's window is LEASE_S - 2 s, with a heartbeat a second. */
#define LEASE_S     6
#define TICKS       100 /* of 100 ms: the job runs 10 s, longer than the time to fence it */
#define FENCE_JOBS  3   /* jobs on the cut-off agent at once, one per slot */
#define FENCE_SLOTS "3" /* each agent's slots */

static struct th_server srv;
static char *op, *tenant, *admin;
static struct th_proxy px;
static PGconn *pg; /* the test's, closed by the teardown (also after a failed assertion) */
static char rec_dir[64];
static struct {
    char dir[64];
    pid_t pid;
    char id[40];
} agents[2]; /* 0: behind the proxy, cut off; 1: direct */

static void setup(void)
{
    char lease[32];
    snprintf(lease, sizeof(lease), "ORCHD_AGENT_LEASE=%ds", LEASE_S);
    const char *env[] = {lease, "ORCHD_AGENT_ONLINE_WINDOW=4s", "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s",
                         NULL};
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(rec_dir, sizeof(rec_dir), "/tmp/orch-fence-rec-XXXXXX");
    cr_assert_not_null(mkdtemp(rec_dir));
    cr_assert_eq(chmod(rec_dir, 01777), 0); /* the job user writes its records here */
    th_proxy_start(&px);
    char proxy_env[64];
    snprintf(proxy_env, sizeof(proxy_env), "ORCH_AGENT_SERVER_PROXY=http://127.0.0.1:%d", px.port);
    const char *aenv[] = {proxy_env, NULL};
    for (int i = 0; i < 2; i++) {
        snprintf(agents[i].dir, sizeof(agents[i].dir), "/tmp/orch-fence-%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(agents[i].dir));
        char name[24], label[24];
        snprintf(name, sizeof(name), "fence-%d", i);
        snprintf(label, sizeof(label), "node=f%d", i);
        th_agent_enrol(&srv, admin, agents[i].dir, name, label, FENCE_SLOTS, agents[i].id);
        agents[i].pid = th_agent_start_env(agents[i].dir, i == 0 ? aenv : NULL);
    }
}

static void teardown(void)
{
    if (pg)
        PQfinish(pg);
    pg = NULL;
    if (px.port)
        th_proxy_heal(&px);
    for (int i = 0; i < 2; i++) {
        if (agents[i].pid > 0)
            th_agent_stop(agents[i].pid, SIGTERM);
        if (agents[i].dir[0])
            th_rm_rf(agents[i].dir);
    }
    if (px.port)
        th_proxy_stop(&px);
    if (rec_dir[0]) {
        char tag[96];
        snprintf(tag, sizeof(tag), "ORCH_FENCE_RUN=%s", rec_dir);
        th_job_procs(NULL, -1, tag, SIGKILL); /* a failed test's leftovers */
        th_rm_rf(rec_dir);
    }
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(fence, .init = setup, .fini = teardown, .timeout = 180);

static long db_long(PGconn *c, const char *sql, const char *id)
{
    const char *p[] = {id};
    PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    long v =
        PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

/* The first and last record (CLOCK_REALTIME ns) of each epoch 1 and 2 of the job. */
static void read_runs(const char *id, int64_t first[3], int64_t last[3])
{
    char path[160], line[256];
    snprintf(path, sizeof(path), "%s/%.39s", rec_dir, id);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f, "no records of job %s", id);
    for (int e = 0; e < 3; e++)
        first[e] = last[e] = 0;
    while (fgets(line, sizeof(line), f)) {
        int epoch;
        char what[8];
        int64_t ns;
        if (sscanf(line, "%d %7s %" SCNd64, &epoch, what, &ns) != 3 || epoch < 1 || epoch > 2)
            continue;
        if (!first[epoch] || ns < first[epoch])
            first[epoch] = ns;
        if (ns > last[epoch])
            last[epoch] = ns;
    }
    fclose(f);
}

/* The job's attempts, for a failure message. */
static void attempts_of(const char *id, char *out, size_t size)
{
    out[0] = '\0';
    const char *pa[] = {id};
    PGresult *ar = PQexecParams(pg,
                                "SELECT string_agg(a.epoch || ':' || g.name || ':' || a.status ||"
                                "                  ':' || coalesce(a.error, ''), '; '"
                                "                  ORDER BY a.epoch)"
                                "  FROM job_attempts a JOIN agents g ON g.id = a.agent_id"
                                " WHERE a.job_id = $1",
                                1, NULL, pa, NULL, NULL, 0);
    if (PQresultStatus(ar) == PGRES_TUPLES_OK && PQntuples(ar) == 1)
        snprintf(out, size, "%s", PQgetvalue(ar, 0, 0));
    PQclear(ar);
}

/* How many of the jobs still have a process of epoch `epoch`. */
static int jobs_with_procs(char ids[][40], int n, int epoch)
{
    int alive = 0;
    for (int i = 0; i < n; i++)
        alive += th_job_procs(ids[i], epoch, NULL, 0) > 0;
    return alive;
}

/* Several jobs on the cut-off agent lapse together: every one is killed while the server
 * still holds its lease (one job's end does not hold the next one's kill back), and none
 * overlaps its re-run. */
Test(fence, a_cut_off_agent_kills_its_job_before_the_server_runs_it_elsewhere)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "f=%s/$ORCH_JOB_ID; r() { echo \"$ORCH_JOB_EPOCH $1 $(date +%%s%%N)\" >>\"$f\"; }; "
             "r start; i=0; while [ $i -lt %d ]; do sleep 0.1; i=$((i+1)); r tick; done; r end; "
             "echo done",
             rec_dir, TICKS);
    char ids[FENCE_JOBS][40];
    for (int i = 0; i < FENCE_JOBS; i++) {
        json_t *body = json_pack("{s:s, s:i, s:{s:s}, s:{s:s}}", "command", cmd, "max_attempts", 3,
                                 "requirements", "node", "f0", "env", "ORCH_FENCE_RUN", rec_dir);
        char *new_id = th_job_submit(&srv, admin, body);
        snprintf(ids[i], sizeof(ids[i]), "%s", new_id);
        free(new_id);
    }

    /* Running on agent 0 (their processes seen), and their `started` accepted. */
    pg = th_pg_connect("postgres", srv.db);
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (int i = 0; i < FENCE_JOBS; i++)
        while (th_job_procs(ids[i], 1, NULL, 0) == 0 ||
               db_long(pg, "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'running'",
                       ids[i]) != 1) {
            cr_assert(clock_mono_ns() < deadline, "job %d did not start on agent 0", i);
            usleep(20000); /* polling the condition, bounded */
        }
    /* Any agent may run them again (no API edits a job's requirements). */
    PGresult *u = PQexec(pg, "UPDATE jobs SET requirements = '{}'");
    cr_assert_eq(PQresultStatus(u), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(u);

    th_proxy_blackhole(&px);
    uint64_t cut = clock_mono_ns();
    /* The agent must end every job while the server still holds its lease: every poll asks
     * the database (its clock) whether the lease of epoch 1 is still running. */
    const char *q_held = "SELECT count(*) FROM jobs WHERE id = $1 AND epoch = 1"
                         "   AND status = 'running' AND lease_expires_at > now()";
    deadline = cut + (uint64_t)(3 * LEASE_S) * 1000000000ull;
    for (int alive; (alive = jobs_with_procs(ids, FENCE_JOBS, 1)) > 0;) {
        for (int i = 0; i < FENCE_JOBS; i++)
            cr_assert(th_job_procs(ids[i], 1, NULL, 0) == 0 || db_long(pg, q_held, ids[i]) == 1,
                      "the server's lease of job %d expired while the cut-off agent still ran it",
                      i);
        cr_assert(clock_mono_ns() < deadline, "the cut-off agent never killed %d of its jobs",
                  alive);
        usleep(20000); /* polling the condition, bounded */
    }
    double gone_s = (double)(clock_mono_ns() - cut) / 1e9;
    for (int i = 0; i < FENCE_JOBS; i++)
        cr_assert(db_long(pg, q_held, ids[i]) == 1,
                  "the jobs were gone only %.1f s after the cut, after job %d's lease expired",
                  gone_s, i);
    cr_assert(gone_s < LEASE_S, "the jobs ran %.1f s after the cut", gone_s);

    /* The server takes them back after the lease and runs them on agent 1; the cut lasts
     * until those runs have started, so that an old run still alive would overlap them. */
    deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (jobs_with_procs(ids, FENCE_JOBS, 2) < FENCE_JOBS) {
        cr_assert(clock_mono_ns() < deadline, "the jobs were not all run again");
        usleep(20000); /* polling the condition, bounded */
    }
    th_proxy_heal(&px);

    for (int i = 0; i < FENCE_JOBS; i++) {
        const char *id = ids[i];
        deadline = clock_mono_ns() + 60ull * 1000000000ull;
        char st[32] = "";
        for (;;) {
            struct th_resp jr;
            char path[96];
            snprintf(path, sizeof(path), "/api/v1/jobs/%.39s", id);
            th_http(&srv, "GET", path, admin, NULL, NULL, &jr);
            snprintf(st, sizeof(st), "%s",
                     th_str_of(&jr, "status") ? th_str_of(&jr, "status") : "");
            th_resp_free(&jr);
            if (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "dead"))
                break;
            cr_assert(clock_mono_ns() < deadline, "job %d did not end (status %s)", i, st);
            usleep(50000); /* polling the condition, bounded */
        }
        char attempts[1024];
        attempts_of(id, attempts, sizeof(attempts));
        cr_assert_str_eq(st, "succeeded", "job %d: attempts: %s", i, attempts);
        /* Epoch 2 ran on agent 1 and succeeded; epoch 1 was lost (the server's reaper), and
         * the cut-off agent's late report of it was refused, not taken. */
        cr_assert_eq(
            db_long(pg,
                    "SELECT count(*) FROM job_attempts a JOIN agents g ON g.id = a.agent_id"
                    " WHERE a.job_id = $1 AND a.epoch = 2 AND a.status = 'succeeded'"
                    "   AND g.name = 'fence-1'",
                    id),
            1, "job %d: attempts: %s", i, attempts);
        cr_assert_eq(db_long(pg,
                             "SELECT count(*) FROM job_attempts WHERE job_id = $1 AND epoch = 1"
                             "   AND status = 'lost'",
                             id),
                     1, "job %d: attempts: %s", i, attempts);
        cr_assert_eq(db_long(pg, "SELECT epoch FROM jobs WHERE id = $1", id), 2,
                     "job %d: attempts: %s", i, attempts);

        /* From the job's own records: run 1 ended before run 2 began. */
        int64_t first[3], last[3];
        read_runs(id, first, last);
        cr_assert(first[1] && first[2], "job %d: missing runs in the records", i);
        cr_assert_lt(last[1], first[2], "job %d: the two runs overlapped by %.2f s", i,
                     (double)(last[1] - first[2]) / 1e9);
    }

    /* The agent said why, in one line per job. */
    char log[128];
    snprintf(log, sizeof(log), "%s/agent.log", agents[0].dir);
    for (int i = 0; i < FENCE_JOBS; i++) {
        FILE *f = fopen(log, "re");
        cr_assert_not_null(f);
        char line[1024];
        bool said = false;
        while (fgets(line, sizeof(line), f))
            said = said || (strstr(line, "op=lease_lapsed") && strstr(line, ids[i]));
        fclose(f);
        cr_assert(said, "no op=lease_lapsed line for job %s in %s", ids[i], log);
    }
}

/* A log chunk refused as `offset-conflict` when the server's stream already covers it
 * (here: other bytes were stored there behind the agent's back) is skipped: the agent
 * resyncs to the stream's end and the attempt goes on to its result, instead of being
 * dropped as if its epoch were stale. */
Test(fence, a_log_chunk_the_server_already_covers_is_skipped_not_the_job)
{
    if (geteuid() != 0 || !getpwnam("orch-job"))
        cr_skip_test("needs root and the orch-job user (tools/lib.sh orch_job_user)");
    char go[96], cmd[512];
    snprintf(go, sizeof(go), "%s/go", rec_dir);
    snprintf(cmd, sizeof(cmd),
             "echo aaaa; i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); "
             "done; echo bbbb",
             go);
    json_t *body = json_pack("{s:s, s:i, s:{s:s}}", "command", cmd, "max_attempts", 3,
                             "requirements", "node", "f1");
    char *new_id = th_job_submit(&srv, admin, body);
    char id[40];
    snprintf(id, sizeof(id), "%s", new_id);
    free(new_id);

    /* "aaaa\n" stored; then 12 other bytes after it, as if from elsewhere. */
    pg = th_pg_connect("postgres", srv.db);
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (db_long(pg,
                   "SELECT end_offset FROM job_log_streams WHERE job_id = $1 AND epoch = 1"
                   "   AND stream = 'stdout'",
                   id) != 5) {
        cr_assert(clock_mono_ns() < deadline, "the first line was not stored");
        usleep(20000); /* polling the condition, bounded */
    }
    const char *p[] = {id};
    PGresult *u = PQexecParams(pg,
                               "WITH i AS (INSERT INTO job_logs (tenant_id, job_id, epoch, stream,"
                               "                                 \"offset\", data)"
                               "           SELECT tenant_id, id, 1, 'stdout', 5, 'XXXXXXXXXXXX'"
                               "             FROM jobs WHERE id = $1)"
                               " UPDATE job_log_streams SET end_offset = 17,"
                               "        stored_bytes = stored_bytes + 12"
                               "  WHERE job_id = $1 AND epoch = 1 AND stream = 'stdout'",
                               1, NULL, p, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(u), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(u);
    FILE *g = fopen(go, "we");
    cr_assert_not_null(g);
    fclose(g);

    deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (db_long(pg, "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'succeeded'", id) !=
           1) {
        cr_assert(clock_mono_ns() < deadline, "the job did not succeed");
        usleep(50000); /* polling the condition, bounded */
    }
    /* On its first attempt: the agent did not give it up. */
    cr_assert_eq(db_long(pg, "SELECT epoch FROM jobs WHERE id = $1", id), 1);

    char log[128], line[1024];
    snprintf(log, sizeof(log), "%s/agent.log", agents[1].dir);
    FILE *f = fopen(log, "re");
    cr_assert_not_null(f);
    bool resync = false, dropped = false;
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, id))
            continue;
        resync = resync || (strstr(line, "reason=offset-conflict") &&
                            strstr(line, "next_offset=17") && strstr(line, "action=resync"));
        dropped = dropped || strstr(line, "op=drop");
    }
    fclose(f);
    cr_assert(resync, "no action=resync line for job %s in %s", id, log);
    cr_assert(!dropped, "the agent dropped job %s", id);
}
