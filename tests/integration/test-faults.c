/* Fault injection on the real services: jobs run all the time on three real agents while,
 * one at a time, orchd is killed with SIGKILL (and started again), an agent running long
 * jobs is killed with SIGKILL (and started again on its state), RabbitMQ is stopped and
 * started, PostgreSQL is stopped and started, and one agent is cut off from orchd for
 * twice the lease by a blackholing proxy, then healed.
 *
 * After each fault, for every job accepted until then: it ended exactly once, succeeded,
 * with its whole output and its result (nothing lost); it never ran twice at once, judged
 * from the job's own record of when its process really started and ended (each job
 * appends `<job_id> <epoch> start|tick|end <CLOCK_REALTIME ns> <pid>` lines to a file of
 * its own in a mode-1777 directory, so it works whichever user jobs run as; the pid is the
 * one the job sees, in its own PID namespace), not from the attempt records, which do not
 * see a process that outlived its agent; whether a run is still alive is found from the
 * ORCH_JOB_ID and ORCH_JOB_EPOCH of the processes' environment; and the system is
 * ready again, a fresh job running on every agent, within RECOVER_S. The table of
 * results is printed, then asserted.
 *
 * Runs alone (it stops the PostgreSQL and RabbitMQ the other tests share). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#define NAGENTS     3
#define SLOTS       "3"
#define LEASE_S     4
#define LOAD_ACTIVE 10 /* queued or running jobs the load keeps */
#define RECOVER_S   30 /* bound on the time to recover, generous: correctness, not speed */
#define DRAIN_S     120
#define TICK_MS     250 /* a job's step: it sleeps, prints a line and records a tick */
#define LONG_KILL   32  /* ticks of the jobs under a killed agent: 8 s, past its restart */
#define LONG_CUT    40  /* ticks of the jobs under a partition: 10 s, past lease + retry */
#define CUT_AGENT   2   /* the agent behind the proxy */
#define KILL_AGENT  0

enum kind { KIND_LOAD, KIND_LONG, KIND_PROBE };

struct job {
    char id[40];
    int phase; /* the fault it is accounted to */
    enum kind kind;
    int ticks;
    bool checked;
};

struct row {
    const char *fault;
    int jobs;         /* accepted in this phase */
    long in_flight;   /* assigned or running when the fault began */
    int lost;         /* not succeeded, or output or result missing */
    int not_once;     /* not exactly one successful attempt */
    int twice;        /* jobs with two runs overlapping in time */
    double overlap_s; /* the longest overlap */
    double recover_s;
    char why[512]; /* the first problems, for the failure message */
};

static struct th_server srv;
static char *op, *tenant, *admin;
static char jobs_dir[64];
static char run_tag[96]; /* ORCH_FAULTS_RUN=<jobs_dir>: in every job's environment */
static char *pg_url;     /* superuser, the test's database: sees every tenant's rows */
static struct th_proxy px;
static char proxy_env[64];
static bool pg_down, rmq_down;
static struct {
    char dir[64];
    pid_t pid;
    char id[40];
} agents[NAGENTS];

/* Accepted jobs, appended by the load thread and the main thread. */
static struct {
    pthread_mutex_t lock;
    struct job *v;
    size_t n, cap;
} jobs = {.lock = PTHREAD_MUTEX_INITIALIZER};

static atomic_int phase;
static atomic_bool load_stop;
static atomic_bool load_paused; /* while the jobs of a fault are checked */
static pthread_t load_thread;
static bool load_started;

static void start_agent(int i)
{
    const char *const env[] = {proxy_env, NULL};
    agents[i].pid = th_agent_start_env(agents[i].dir, i == CUT_AGENT ? env : NULL);
}

static void setup(void)
{
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    char lease[32];
    snprintf(lease, sizeof(lease), "ORCHD_AGENT_LEASE=%ds", LEASE_S);
    const char *env[] = {lease, "ORCHD_AGENT_ONLINE_WINDOW=4s", "ORCHD_AGENT_HEARTBEAT_INTERVAL=1s",
                         NULL};
    th_server_start(&srv, env);
    pg_url = th_pg_url("postgres", srv.db);
    op = th_token(&srv, srv.operator_token);
    /* enterprise: a quota and a request rate that the load stays under */
    tenant = th_tenant(&srv, op, "acme", "enterprise");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(jobs_dir, sizeof(jobs_dir), "/tmp/orch-faults-jobs-XXXXXX");
    cr_assert_not_null(mkdtemp(jobs_dir));
    /* Whatever user the agent runs jobs as may append its records here. */
    cr_assert_eq(chmod(jobs_dir, 01777), 0);
    snprintf(run_tag, sizeof(run_tag), "ORCH_FAULTS_RUN=%s", jobs_dir);
    th_proxy_start(&px);
    snprintf(proxy_env, sizeof(proxy_env), "ORCH_AGENT_SERVER_PROXY=http://127.0.0.1:%d", px.port);
    for (int i = 0; i < NAGENTS; i++) {
        snprintf(agents[i].dir, sizeof(agents[i].dir), "/tmp/orch-faults-%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(agents[i].dir));
        char name[24], label[24];
        snprintf(name, sizeof(name), "agent-%d", i);
        snprintf(label, sizeof(label), "node=a%d", i);
        th_agent_enrol(&srv, admin, agents[i].dir, name, label, SLOTS, agents[i].id);
        start_agent(i);
    }
}

static void *load_main(void *arg);

static void stop_load(void)
{
    if (!load_started)
        return;
    atomic_store(&load_stop, true);
    pthread_join(load_thread, NULL);
    load_started = false;
}

static void teardown(void)
{
    stop_load();
    /* A failure in the middle of a fault must not leave the shared services down. */
    if (pg_down)
        th_pg_start();
    if (rmq_down) {
        th_rabbitmqctl("start_app");
        th_rabbitmqctl("await_startup");
    }
    if (px.port)
        th_proxy_heal(&px);
    for (int i = 0; i < NAGENTS; i++) {
        th_agent_stop(agents[i].pid, SIGTERM);
        if (agents[i].dir[0])
            th_rm_rf(agents[i].dir);
    }
    if (px.port)
        th_proxy_stop(&px);
    /* Processes our agents left behind (an agent killed with SIGKILL): found by the tag
     * of this run in their environment (the pids jobs record are those of their own PID
     * namespace). */
    if (run_tag[0])
        th_job_procs(NULL, -1, run_tag, SIGKILL);
    if (jobs_dir[0])
        th_rm_rf(jobs_dir);
    free(jobs.v);
    free(pg_url);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
    curl_global_cleanup();
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 360);

/* --- jobs ----------------------------------------------------------------------------- */

/* The command of a job of `ticks` steps: it records its start, each step and its end (also
 * when it is stopped with SIGTERM); then it prints "tick <n>" per step and "out <job id>",
 * and leaves {"job": <id>, "ticks": <n>} as its result. It prints nothing while it runs:
 * a job that wrote to its stdout after its agent died would die of SIGPIPE, and the test
 * would miss the runs that outlive their agent (most real jobs are quiet for seconds). */
static char *job_body(int ticks, const char *requirements, int priority, const char *key)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "f=%s/$ORCH_JOB_ID; "
             "r() { echo \"$ORCH_JOB_ID $ORCH_JOB_EPOCH $1 $(date +%%s%%N) $$\" >>\"$f\"; }; "
             "r start; trap 'r end; exit 143' TERM; i=0; "
             "while [ $i -lt %d ]; do sleep %d.%03d; i=$((i+1)); r tick; done; "
             "i=0; while [ $i -lt %d ]; do i=$((i+1)); echo \"tick $i\"; done; "
             "echo \"out $ORCH_JOB_ID\"; "
             "printf '{\"job\":\"%%s\",\"ticks\":%d}' \"$ORCH_JOB_ID\" >\"$ORCH_JOB_RESULT\"; "
             "r end",
             jobs_dir, ticks, TICK_MS / 1000, TICK_MS % 1000, ticks, ticks);
    json_t *b =
        json_pack("{s:s, s:i, s:i, s:s, s:{s:s}}", "command", cmd, "max_attempts", 20, "priority",
                  priority, "idempotency_key", key, "env", "ORCH_FAULTS_RUN", jobs_dir);
    if (b && requirements)
        json_object_set_new(b, "requirements", json_pack("{s:s}", "node", requirements));
    char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    return text;
}

static void add_job(const char *id, int ph, enum kind kind, int ticks)
{
    pthread_mutex_lock(&jobs.lock);
    if (jobs.n == jobs.cap) {
        size_t cap = jobs.cap ? jobs.cap * 2 : 256;
        struct job *v = realloc(jobs.v, cap * sizeof(*v));
        if (!v)
            abort(); /* the test cannot account for its jobs any more */
        jobs.v = v;
        jobs.cap = cap;
    }
    struct job *j = &jobs.v[jobs.n++];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->phase = ph;
    j->kind = kind;
    j->ticks = ticks;
    pthread_mutex_unlock(&jobs.lock);
}

/* Submit once with idempotency key `key`: 1 accepted (id written), 0 not answered or not
 * ready yet (try the same key again: the job may exist already), -1 refused. */
static int submit_try(const struct th_server *s, const char *body, char id[40])
{
    json_t *j = NULL;
    long st = th_http_try(s, "POST", "/api/v1/jobs", admin, body, &j);
    const char *v = json_string_value(json_object_get(j, "id"));
    int r = (st == 201 || st == 200) && v ? 1 : st == 0 || st >= 500 || st == 429 ? 0 : -1;
    if (r == 1)
        snprintf(id, 40, "%s", v);
    json_decref(j);
    return r;
}

/* Submit from the main thread and retry (same key) until accepted, at most `seconds`.
 * false when it was not. */
static bool submit(enum kind kind, int ticks, const char *node, int priority, char id[40],
                   int seconds)
{
    static int seq;
    char key[32];
    snprintf(key, sizeof(key), "main-%d", ++seq);
    char *body = job_body(ticks, node, priority, key);
    cr_assert_not_null(body);
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    int r;
    while ((r = submit_try(&srv, body, id)) == 0 && clock_mono_ns() < deadline)
        usleep(50000); /* orchd or its database is coming back: retry, bounded */
    free(body);
    if (r == 1)
        add_job(id, atomic_load(&phase), kind, ticks);
    return r == 1;
}

/* The fault's duration (not a synchronisation). */
static void hold_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        continue;
}

static long active_jobs(PGconn **pg, const char *url)
{
    if (*pg && PQstatus(*pg) != CONNECTION_OK) {
        PQfinish(*pg);
        *pg = NULL;
    }
    if (!*pg)
        *pg = PQconnectdb(url);
    PGresult *r = PQexec(*pg, "SELECT count(*) FROM jobs WHERE status IN "
                              "('queued', 'assigned', 'running')");
    long n = PQresultStatus(r) == PGRES_TUPLES_OK ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    if (n < 0) {
        PQfinish(*pg);
        *pg = NULL;
    }
    return n;
}

/* The load: short jobs, keeping about LOAD_ACTIVE queued or running. A submission that
 * got no answer is retried with the same idempotency key until it gets one, so every job
 * that exists is one the test knows of (checked at the end). */
static void *load_main(void *arg)
{
    (void)arg;
    struct th_server s = srv; /* the main thread may restart srv (same base) meanwhile */
    PGconn *pg = NULL;
    char *body = NULL;
    int seq = 0;
    for (;;) {
        if (!body && atomic_load(&load_stop))
            break;
        if (!body && atomic_load(&load_paused)) {
            usleep(20000); /* pacing, not synchronisation */
            continue;
        }
        long active = body ? 0 : active_jobs(&pg, pg_url);
        if (active < 0 || active >= LOAD_ACTIVE) {
            usleep(active < 0 ? 100000 : 20000); /* pacing, not synchronisation */
            continue;
        }
        if (!body) {
            char key[32];
            snprintf(key, sizeof(key), "load-%d", ++seq);
            body = job_body(1, NULL, 0, key);
            if (!body)
                break;
        }
        char id[40];
        int r = submit_try(&s, body, id);
        if (r != 0) {
            if (r == 1)
                add_job(id, atomic_load(&phase), KIND_LOAD, 1);
            free(body);
            body = NULL;
        } else {
            usleep(50000); /* orchd or PostgreSQL is down: retry the same key */
        }
    }
    free(body);
    PQfinish(pg);
    return NULL;
}

/* --- observations --------------------------------------------------------------------- */

static const char *job_status(PGconn *pg, const char *id, char *buf, size_t len)
{
    const char *p[] = {id};
    PGresult *r =
        PQexecParams(pg, "SELECT status FROM jobs WHERE id = $1", 1, NULL, p, NULL, NULL, 0);
    snprintf(buf, len, "%s",
             PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
    return buf;
}

static bool terminal(const char *st)
{
    return !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "dead") ||
           !strcmp(st, "cancelled");
}

static long in_flight(void)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    long n = th_pg_long(pg, "SELECT count(*) FROM jobs WHERE status IN ('assigned', 'running')");
    PQfinish(pg);
    return n;
}

/* GET /readyz until 200, bounded by deadline. */
static bool wait_ready(uint64_t deadline)
{
    for (;;) {
        long st = th_http_try(&srv, "GET", "/readyz", NULL, NULL, NULL);
        if (st == 200)
            return true;
        if (clock_mono_ns() >= deadline)
            return false;
        usleep(50000); /* polling the condition, bounded */
    }
}

/* The job's status (as the API says), into buf. */
static const char *api_status(const char *id, char *buf, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    json_t *j = NULL;
    long st = th_http_try(&srv, "GET", path, admin, NULL, &j);
    const char *v = json_string_value(json_object_get(j, "status"));
    snprintf(buf, len, "%s", st == 200 && v ? v : "?");
    json_decref(j);
    return buf;
}

/* The system has recovered when /readyz answers 200 and a job submitted now has run on
 * every agent. Seconds since t0, or -1 past RECOVER_S. */
static double recover(uint64_t t0)
{
    uint64_t deadline = t0 + (uint64_t)RECOVER_S * 1000000000ull;
    if (!wait_ready(deadline))
        return -1;
    /* Ready means ready: the next request is served (issue 8, item 8). Not asserted here,
     * where the retried submissions below would hide it, but said. */
    long first = th_http_try(&srv, "GET", "/api/v1/jobs?limit=1", admin, NULL, NULL);
    if (first != 200)
        cr_log_warn("the first request after /readyz said 200 got %ld", first);
    char ids[NAGENTS][40];
    for (int i = 0; i < NAGENTS; i++) {
        char node[16];
        snprintf(node, sizeof(node), "a%d", i);
        uint64_t now = clock_mono_ns();
        if (now >= deadline ||
            !submit(KIND_PROBE, 1, node, 100, ids[i], (int)((deadline - now) / 1000000000u) + 1))
            return -1;
    }
    for (int i = 0; i < NAGENTS; i++) {
        char st[32];
        while (strcmp(api_status(ids[i], st, sizeof(st)), "succeeded") != 0) {
            if (clock_mono_ns() >= deadline || (terminal(st) && strcmp(st, "succeeded")))
                return -1;
            usleep(50000); /* polling the condition, bounded */
        }
    }
    return (double)(clock_mono_ns() - t0) / 1e9;
}

/* Submit n jobs of `ticks` steps for agent `agent`, wait until their processes run there,
 * then lift the requirement so that a re-run may go to any agent (which is where two runs
 * at once would happen). */
static void place_long(int agent, int n, int ticks, char ids[][40])
{
    char node[8];
    snprintf(node, sizeof(node), "a%d", agent);
    for (int i = 0; i < n; i++)
        cr_assert(submit(KIND_LONG, ticks, node, 50, ids[i], 30), "a long job was not accepted");
    uint64_t deadline = clock_mono_ns() + 60ull * 1000000000ull;
    for (int i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", jobs_dir, ids[i]);
        char st[32];
        while (access(path, F_OK) != 0 || strcmp(api_status(ids[i], st, sizeof(st)), "running")) {
            cr_assert(clock_mono_ns() < deadline, "long job %s did not start on agent %d", ids[i],
                      agent);
            usleep(50000); /* polling the condition, bounded */
        }
    }
    /* No API edits a job's requirements: the test changes them where they live. */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    for (int i = 0; i < n; i++) {
        const char *p[] = {ids[i]};
        PGresult *r = PQexecParams(pg, "UPDATE jobs SET requirements = '{}' WHERE id = $1", 1, NULL,
                                   p, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);
}

struct run {
    long long epoch;
    int pid;
    int64_t start, end; /* ns; end: the last record, or now while the process lives */
    bool ended;
};

/* The job's runs, from its own record file; returns how many (at most max). */
static int read_runs(const char *id, struct run *runs, int max)
{
    char path[160], line[256];
    snprintf(path, sizeof(path), "%s/%s", jobs_dir, id);
    FILE *f = fopen(path, "re");
    int n = 0;
    while (f && fgets(line, sizeof(line), f)) {
        char jid[40], what[8];
        long long epoch;
        int64_t ns;
        int pid;
        if (sscanf(line, "%39s %lld %7s %" SCNd64 " %d", jid, &epoch, what, &ns, &pid) != 5)
            continue;
        int k = 0;
        while (k < n && !(runs[k].pid == pid && runs[k].epoch == epoch))
            k++;
        if (k == n) {
            if (n == max)
                continue;
            runs[n++] = (struct run){.epoch = epoch, .pid = pid, .start = ns, .end = ns};
        }
        if (ns > runs[k].end)
            runs[k].end = ns;
        if (!strcmp(what, "start") && ns < runs[k].start)
            runs[k].start = ns;
        if (!strcmp(what, "end"))
            runs[k].ended = true;
    }
    if (f)
        fclose(f);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int k = 0; k < n; k++)
        if (!runs[k].ended && th_job_procs(id, runs[k].epoch, NULL, 0) > 0)
            runs[k].end = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    return n;
}

static void note(struct row *row, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct row *row, const char *fmt, ...)
{
    size_t len = strlen(row->why);
    if (len + 2 >= sizeof(row->why))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(row->why + len, sizeof(row->why) - len, fmt, ap);
    va_end(ap);
}

/* Check one job that has ended; updates row. */
static void check_job(PGconn *pg, struct job *j, struct row *row)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", j->id);
    json_t *doc = NULL;
    long st = th_http_try(&srv, "GET", path, admin, NULL, &doc);
    const char *status = json_string_value(json_object_get(doc, "status"));
    bool lost = false;
    if (st != 200 || !status || strcmp(status, "succeeded") != 0) {
        lost = true;
        note(row, "job %s: %ld %s; ", j->id, st, status ? status : "?");
    } else {
        json_t *res = json_object_get(doc, "result");
        const char *rid = json_string_value(json_object_get(res, "job"));
        if (!rid || strcmp(rid, j->id) != 0 ||
            json_integer_value(json_object_get(res, "ticks")) != j->ticks) {
            lost = true;
            note(row, "job %s: result lost; ", j->id);
        }
        snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdout&limit_bytes=1048576",
                 j->id);
        struct th_resp r;
        th_http(&srv, "GET", path, admin, NULL, NULL, &r);
        char want[2048] = "";
        for (int i = 1; i <= j->ticks; i++)
            snprintf(want + strlen(want), sizeof(want) - strlen(want), "tick %d\n", i);
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "out %s\n", j->id);
        if (r.status != 200 || strcmp(r.body ? r.body : "", want) != 0) {
            lost = true;
            note(row, "job %s: output lost (%zu of %zu bytes); ", j->id, r.len, strlen(want));
        }
        th_resp_free(&r);
    }
    json_decref(doc);
    row->lost += lost;

    /* Exactly once: one attempt ended it, the job's last. */
    const char *p[] = {j->id};
    PGresult *r = PQexecParams(pg,
                               "SELECT count(*) FILTER (WHERE a.status = 'succeeded'),"
                               "       count(*) FILTER (WHERE a.status = 'succeeded'"
                               "                          AND a.epoch = j.epoch)"
                               "  FROM job_attempts a JOIN jobs j ON j.id = a.job_id"
                               " WHERE a.job_id = $1",
                               1, NULL, p, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
    if (!lost && (strcmp(PQgetvalue(r, 0, 0), "1") || strcmp(PQgetvalue(r, 0, 1), "1"))) {
        row->not_once++;
        note(row, "job %s: %s successful attempts; ", j->id, PQgetvalue(r, 0, 0));
    }
    PQclear(r);

    /* Two runs of the job at once, from its own records. */
    struct run runs[32];
    int n = read_runs(j->id, runs, 32);
    double worst = 0;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++) {
            int64_t from = runs[a].start > runs[b].start ? runs[a].start : runs[b].start;
            int64_t to = runs[a].end < runs[b].end ? runs[a].end : runs[b].end;
            if (to > from && (double)(to - from) / 1e9 > worst)
                worst = (double)(to - from) / 1e9;
        }
    if (worst > 0) {
        row->twice++;
        if (worst > row->overlap_s)
            row->overlap_s = worst;
        note(row, "job %s: two runs overlapped %.1f s; ", j->id, worst);
    }
}

/* Wait (bounded) for every unchecked job of phase <= ph to end, then check each into row. */
static void check_phase(int ph, struct row *row)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    uint64_t deadline = clock_mono_ns() + (uint64_t)DRAIN_S * 1000000000ull;
    for (size_t i = 0;; i++) {
        pthread_mutex_lock(&jobs.lock);
        bool more = i < jobs.n;
        struct job j = more ? jobs.v[i] : (struct job){0};
        pthread_mutex_unlock(&jobs.lock);
        if (!more)
            break;
        if (j.checked || j.phase > ph)
            continue;
        char st[32];
        while (!terminal(job_status(pg, j.id, st, sizeof(st))) && clock_mono_ns() < deadline)
            usleep(50000); /* polling the condition, bounded */
        row->jobs++;
        check_job(pg, &j, row);
        pthread_mutex_lock(&jobs.lock);
        jobs.v[i].checked = true;
        pthread_mutex_unlock(&jobs.lock);
    }
    PQfinish(pg);
}

/* --- the faults ----------------------------------------------------------------------- */

/* Wait (bounded) until `n` more jobs than now have succeeded; false when they did not. */
static bool wait_progress(int n, int seconds)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    const char *q = "SELECT count(*) FROM jobs WHERE status = 'succeeded'";
    long base = th_pg_long(pg, q);
    uint64_t deadline = clock_mono_ns() + (uint64_t)seconds * 1000000000ull;
    bool ok;
    while (!(ok = th_pg_long(pg, q) >= base + n) && clock_mono_ns() < deadline)
        usleep(50000); /* polling the condition, bounded */
    PQfinish(pg);
    return ok;
}

static uint64_t fault_orchd(struct row *row)
{
    row->in_flight = in_flight();
    uint64_t t0 = clock_mono_ns();
    th_server_restart(&srv, SIGKILL);
    return t0;
}

/* The long jobs the current fault placed on one agent. */
static char placed[3][40];
static int nplaced;

/* Did the fault really hit the jobs it placed (each needed a second attempt)? A proxy the
 * agent bypassed, or a kill that missed, would make the fault a no-op that passes. */
static void check_hit(struct row *row)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    for (int i = 0; i < nplaced; i++) {
        const char *p[] = {placed[i]};
        PGresult *r =
            PQexecParams(pg, "SELECT epoch FROM jobs WHERE id = $1", 1, NULL, p, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
        if (PQntuples(r) != 1 || strtol(PQgetvalue(r, 0, 0), NULL, 10) < 2)
            note(row, "job %s: the fault did not take it from its agent; ", placed[i]);
        PQclear(r);
    }
    PQfinish(pg);
    nplaced = 0;
}

static uint64_t fault_agent(struct row *row)
{
    char(*ids)[40] = placed;
    nplaced = 3;
    place_long(KILL_AGENT, 3, LONG_KILL, ids);
    row->in_flight = in_flight();
    uint64_t t0 = clock_mono_ns();
    th_agent_stop(agents[KILL_AGENT].pid, SIGKILL);
    start_agent(KILL_AGENT);
    return t0;
}

static uint64_t fault_rabbitmq(struct row *row)
{
    row->in_flight = in_flight();
    rmq_down = true;
    th_rabbitmqctl("stop_app");
    /* Jobs are still accepted and run without the bus (PostgreSQL decides): the outage
     * lasts until that has been seen. */
    if (!wait_progress(5, 60))
        note(row, "no job ended while RabbitMQ was down; ");
    th_rabbitmqctl("start_app");
    th_rabbitmqctl("await_startup");
    rmq_down = false;
    return clock_mono_ns();
}

static uint64_t fault_postgresql(struct row *row)
{
    row->in_flight = in_flight();
    pg_down = true;
    th_pg_stop();
    /* The outage lasts until orchd says it is not ready, and agents have had a sync
     * exchange with it in that state (one heartbeat interval). */
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (th_http_try(&srv, "GET", "/readyz", NULL, NULL, NULL) != 503) {
        cr_assert(clock_mono_ns() < deadline, "/readyz never said 503 without PostgreSQL");
        usleep(50000); /* polling the condition, bounded */
    }
    hold_ms(1500); /* past one heartbeat */
    th_pg_start();
    pg_down = false;
    return clock_mono_ns();
}

static uint64_t fault_partition(struct row *row)
{
    char(*ids)[40] = placed;
    nplaced = 3;
    place_long(CUT_AGENT, 3, LONG_CUT, ids);
    row->in_flight = in_flight();
    th_proxy_blackhole(&px);
    /* The fault's duration: twice the lease, so orchd takes the agent's jobs away and
     * runs them elsewhere while the agent, cut off, cannot hear it. */
    hold_ms(2 * LEASE_S * 1000);
    th_proxy_heal(&px);
    return clock_mono_ns();
}

static const struct {
    const char *name;
    uint64_t (*inject)(struct row *row); /* returns when the fault ended */
} faults[] = {
    {"kill -9 orchd", fault_orchd},          {"kill -9 agent (8 s jobs)", fault_agent},
    {"RabbitMQ stop/start", fault_rabbitmq}, {"PostgreSQL stop/start", fault_postgresql},
    {"partition > lease", fault_partition},
};
#define NFAULTS (sizeof(faults) / sizeof(faults[0]))

Test(faults, no_job_is_lost_or_runs_twice_at_once)
{
    struct row rows[NFAULTS];
    memset(rows, 0, sizeof(rows));
    uint64_t t_start = clock_mono_ns();
    atomic_store(&phase, 0);
    cr_assert_eq(pthread_create(&load_thread, NULL, load_main, NULL), 0);
    load_started = true;
    cr_assert(wait_progress(10, 60), "the load does not run");

    for (size_t f = 0; f < NFAULTS; f++) {
        struct row *row = &rows[f];
        row->fault = faults[f].name;
        atomic_store(&phase, (int)f);
        if (!wait_progress(5, 60))
            note(row, "no job ended before the fault; ");
        uint64_t t0 = faults[f].inject(row);
        row->recover_s = recover(t0);
        /* Jobs accepted from now on meet the next fault. */
        atomic_store(&phase, (int)f + 1);
        atomic_store(&load_paused, true);
        check_phase((int)f, row);
        check_hit(row);
        atomic_store(&load_paused, false);
        fprintf(stderr,
                "faults: %.1f s: %s: %d jobs, %ld in flight, %d lost, %d twice at once, "
                "recovered in %.1f s\n",
                (double)(clock_mono_ns() - t_start) / 1e9, row->fault, row->jobs, row->in_flight,
                row->lost, row->twice, row->recover_s);
    }
    stop_load();
    struct row tail = {.fault = "(after the last fault)"};
    check_phase((int)NFAULTS, &tail);

    /* Every job that exists is one the test was told of: none was accepted unseen. */
    PGconn *pg = th_pg_connect("postgres", srv.db);
    long in_db = th_pg_long(pg, "SELECT count(*) FROM jobs");
    PQfinish(pg);

    int total = tail.jobs;
    fprintf(stderr, "\n| fault | jobs | in flight | lost | not exactly once | run twice at once "
                    "(longest overlap s) | time to recover (s) |\n|---|---|---|---|---|---|---|\n");
    for (size_t f = 0; f < NFAULTS; f++) {
        struct row *r = &rows[f];
        total += r->jobs;
        char rec[16];
        if (r->recover_s < 0)
            snprintf(rec, sizeof(rec), "> %d", RECOVER_S);
        else
            snprintf(rec, sizeof(rec), "%.1f", r->recover_s);
        fprintf(stderr, "| %s | %d | %ld | %d | %d | %d (%.1f) | %s |\n", r->fault, r->jobs,
                r->in_flight, r->lost, r->not_once, r->twice, r->overlap_s, rec);
    }
    fprintf(stderr, "| %s | %d | | %d | %d | %d (%.1f) | |\n\n", tail.fault, tail.jobs, tail.lost,
            tail.not_once, tail.twice, tail.overlap_s);

    bool ok = true;
    for (size_t f = 0; f < NFAULTS; f++) {
        struct row *r = &rows[f];
        bool bad = r->lost || r->not_once || r->twice || r->recover_s < 0 || r->why[0];
        if (bad)
            cr_log_error("%s: %s%s", r->fault, r->recover_s < 0 ? "did not recover; " : "", r->why);
        ok &= !bad;
    }
    if (tail.lost || tail.not_once || tail.twice)
        cr_log_error("%s: %s", tail.fault, tail.why);
    ok &= !tail.lost && !tail.not_once && !tail.twice;
    cr_assert_eq(in_db, total, "%ld jobs exist, the test accepted %d", in_db, total);
    cr_assert(ok, "jobs were lost or ran twice at once, or the system did not recover "
                  "(see the table above)");
}
