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
#define LEASE_S 6
#define TICKS   100 /* of 100 ms: the job runs 10 s, longer than the time to fence it */

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
        th_agent_enrol(&srv, admin, agents[i].dir, name, label, "1", agents[i].id);
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
    snprintf(path, sizeof(path), "%s/%s", rec_dir, id);
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
    json_t *body = json_pack("{s:s, s:i, s:{s:s}, s:{s:s}}", "command", cmd, "max_attempts", 3,
                             "requirements", "node", "f0", "env", "ORCH_FENCE_RUN", rec_dir);
    char *new_id = th_job_submit(&srv, admin, body);
    char id[40];
    snprintf(id, sizeof(id), "%s", new_id);
    free(new_id);

    /* Running on agent 0 (its process seen), and its `started` accepted. */
    pg = th_pg_connect("postgres", srv.db);
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    while (th_job_procs(id, 1, NULL, 0) == 0 ||
           db_long(pg, "SELECT count(*) FROM jobs WHERE id = $1 AND status = 'running'", id) != 1) {
        cr_assert(clock_mono_ns() < deadline, "the job did not start on agent 0");
        usleep(20000); /* polling the condition, bounded */
    }
    /* Any agent may run it again (no API edits a job's requirements). */
    const char *p[] = {id};
    PGresult *u = PQexecParams(pg, "UPDATE jobs SET requirements = '{}' WHERE id = $1", 1, NULL, p,
                               NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(u), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(u);

    th_proxy_blackhole(&px);
    uint64_t cut = clock_mono_ns();
    /* The agent must end the job while the server still holds its lease: every poll asks
     * the database (its clock) whether the lease of epoch 1 is still running. */
    const char *q_held = "SELECT count(*) FROM jobs WHERE id = $1 AND epoch = 1"
                         "   AND status = 'running' AND lease_expires_at > now()";
    bool held = true;
    deadline = cut + (uint64_t)(3 * LEASE_S) * 1000000000ull;
    while (th_job_procs(id, 1, NULL, 0) > 0) {
        held = db_long(pg, q_held, id) == 1;
        cr_assert(held, "the server's lease expired while the cut-off agent still ran the job");
        cr_assert(clock_mono_ns() < deadline, "the cut-off agent never killed its job");
        usleep(20000); /* polling the condition, bounded */
    }
    held = db_long(pg, q_held, id) == 1;
    double gone_s = (double)(clock_mono_ns() - cut) / 1e9;
    cr_assert(held, "the job was gone only %.1f s after the cut, after its lease expired", gone_s);
    cr_assert(gone_s < LEASE_S, "the job ran %.1f s after the cut", gone_s);

    /* The server takes it back after the lease and runs it on agent 1; the cut lasts until
     * that run has started, so that an old run still alive would overlap it. */
    deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (th_job_procs(id, 2, NULL, 0) == 0) {
        cr_assert(clock_mono_ns() < deadline, "the job was not run again");
        usleep(20000); /* polling the condition, bounded */
    }
    th_proxy_heal(&px);

    deadline = clock_mono_ns() + 60ull * 1000000000ull;
    char st[32] = "";
    for (;;) {
        struct th_resp jr;
        char path[96];
        snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
        th_http(&srv, "GET", path, admin, NULL, NULL, &jr);
        snprintf(st, sizeof(st), "%s", th_str_of(&jr, "status") ? th_str_of(&jr, "status") : "");
        th_resp_free(&jr);
        if (!strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "dead"))
            break;
        cr_assert(clock_mono_ns() < deadline, "the job did not end (status %s)", st);
        usleep(50000); /* polling the condition, bounded */
    }
    /* The attempts, for the failure messages below. */
    char attempts[1024] = "";
    const char *pa[] = {id};
    PGresult *ar = PQexecParams(pg,
                                "SELECT string_agg(a.epoch || ':' || g.name || ':' || a.status ||"
                                "                  ':' || coalesce(a.error, ''), '; '"
                                "                  ORDER BY a.epoch)"
                                "  FROM job_attempts a JOIN agents g ON g.id = a.agent_id"
                                " WHERE a.job_id = $1",
                                1, NULL, pa, NULL, NULL, 0);
    if (PQresultStatus(ar) == PGRES_TUPLES_OK && PQntuples(ar) == 1)
        snprintf(attempts, sizeof(attempts), "%s", PQgetvalue(ar, 0, 0));
    PQclear(ar);
    cr_assert_str_eq(st, "succeeded", "attempts: %s", attempts);
    /* Epoch 2 ran on agent 1 and succeeded; epoch 1 was lost (the server's reaper), and the
     * cut-off agent's late report of it was refused, not taken. */
    cr_assert_eq(db_long(pg,
                         "SELECT count(*) FROM job_attempts a JOIN agents g ON g.id = a.agent_id"
                         " WHERE a.job_id = $1 AND a.epoch = 2 AND a.status = 'succeeded'"
                         "   AND g.name = 'fence-1'",
                         id),
                 1, "attempts: %s", attempts);
    cr_assert_eq(db_long(pg,
                         "SELECT count(*) FROM job_attempts WHERE job_id = $1 AND epoch = 1"
                         "   AND status = 'lost'",
                         id),
                 1, "attempts: %s", attempts);
    cr_assert_eq(db_long(pg, "SELECT epoch FROM jobs WHERE id = $1", id), 2, "attempts: %s",
                 attempts);

    /* From the job's own records: run 1 ended before run 2 began. */
    int64_t first[3], last[3];
    read_runs(id, first, last);
    cr_assert(first[1] && first[2], "missing runs in the records");
    cr_assert_lt(last[1], first[2], "the two runs overlapped by %.2f s",
                 (double)(last[1] - first[2]) / 1e9);

    /* The agent said why, in one line. */
    char log[128];
    snprintf(log, sizeof(log), "%s/agent.log", agents[0].dir);
    FILE *f = fopen(log, "re");
    cr_assert_not_null(f);
    char line[1024];
    bool said = false;
    while (fgets(line, sizeof(line), f))
        said = said || (strstr(line, "op=lease_lapsed") && strstr(line, id));
    fclose(f);
    cr_assert(said, "no op=lease_lapsed line for job %s in %s", id, log);
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
