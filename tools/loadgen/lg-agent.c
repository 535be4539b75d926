/* lg-agent.c: one simulated agent (see lg.h), behaving on the wire as orch-agent does
 * (docs/agent-protocol.md, "How orch-agent uses it"): one exchange at a time on one
 * keep-alive connection; whatever is due (heartbeat, started, output, results) goes out at
 * once with wait 0; with nothing to send it holds an exchange open for assignments and
 * cancels; a result that comes due during a held exchange closes the connection (the only
 * way to interrupt an HTTP/1.1 request) and goes out on a new one. Jobs do not run: a job
 * "ends" run_ms after its assignment arrived.
 *
 * Unlike orch-agent, a heartbeat with nothing else to carry goes in the held exchange
 * (orch-agent sends it on its own, then holds): one exchange per heartbeat interval per idle
 * agent, so that the upkeep of thousands of idle agents weighs on the server as little as
 * the protocol allows. And it holds up to poll_wait_s (orch-agent: 25 s) while jobs "run"
 * unless it reports output (log_bytes > 0, then 1 s as orch-agent): there is no output to
 * carry otherwise, and the results interrupt the hold. */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

#define BUSY_WAIT_S        1
#define REQUEST_SLACK_MS   15000 /* past the wait, before an exchange counts as lost */
#define DEFAULT_HB_S       10
#define RETRY_MS           1000
#define MAX_RETRY_AFTER_MS 60000

struct lg_agent_counters lg_agent_counters;

struct run {
    struct lg_job_ref job;
    uint64_t due_ns; /* when its result is due */
    bool started;    /* the server accepted `started` */
    bool logged;     /* ... and its output */
    bool cancelled;  /* cancelled through the API: the result says so, now */
};

struct lg_agent {
    struct lg_http_ctx *http;
    struct lg_stats *stats;
    struct lg_agent_cfg cfg;
    int index;
    char name[64];
    char *credential;
    char *log; /* the output each job reports, cfg.log_bytes of it */
    struct lg_conn *conn;
    struct event *timer;
    bool online, stopped, caps_sent;
    bool held; /* the exchange in flight carries nothing but the wait */
    int hb_interval_s;
    uint64_t next_hb_ns;
    uint64_t not_before_ns; /* after a failure or a 503: no exchange before this */
    struct run *runs;       /* cfg.slots of them, nruns in use */
    int nruns;
    struct lg_msg_report *sent; /* the reports of the exchange in flight */
    int nsent;
};

static void kick(struct lg_agent *a);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    kick(arg);
}

struct lg_agent *lg_agent_new(struct lg_http_ctx *http, struct lg_stats *stats,
                              const struct lg_agent_cfg *cfg, int index, const char *name,
                              const char *credential)
{
    struct lg_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->http = http;
    a->stats = stats;
    a->cfg = *cfg;
    a->index = index;
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->credential = strdup(credential);
    a->conn = lg_conn_new(http, index);
    a->timer = evtimer_new(http->base, on_timer, a);
    a->runs = calloc((size_t)cfg->slots, sizeof(*a->runs));
    a->sent = calloc((size_t)cfg->slots * 2, sizeof(*a->sent));
    a->hb_interval_s = DEFAULT_HB_S;
    if (cfg->log_bytes > 0) {
        a->log = malloc((size_t)cfg->log_bytes);
        if (!a->log) {
            lg_agent_free(a);
            return NULL;
        }
        for (int i = 0; i < cfg->log_bytes; i++)
            a->log[i] = (char)(i % 64 == 63 ? '\n' : 'a' + i % 26);
    }
    if (!a->credential || !a->conn || !a->timer || !a->runs || !a->sent) {
        lg_agent_free(a);
        return NULL;
    }
    return a;
}

void lg_agent_stop(struct lg_agent *a)
{
    a->stopped = true;
    if (a->timer)
        evtimer_del(a->timer);
    if (a->conn)
        lg_conn_abort(a->conn);
}

void lg_agent_free(struct lg_agent *a)
{
    if (!a)
        return;
    lg_conn_free(a->conn);
    if (a->timer)
        event_free(a->timer);
    free(a->credential);
    free(a->log);
    free(a->runs);
    free(a->sent);
    free(a);
}

bool lg_agent_online(const struct lg_agent *a)
{
    return a->online;
}

void lg_agent_start(struct lg_agent *a)
{
    kick(a);
}

static void arm(struct lg_agent *a, uint64_t at_ns)
{
    uint64_t now = clock_mono_ns();
    uint64_t d = at_ns > now ? at_ns - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(d / 1000000000ULL),
                         .tv_usec = (suseconds_t)(d % 1000000000ULL / 1000)};
    evtimer_add(a->timer, &tv);
}

/* Whether a report is due now (the heartbeat waits for the held exchange's end: its wait
 * never goes past it). */
static bool report_due(const struct lg_agent *a, uint64_t now)
{
    for (int i = 0; i < a->nruns; i++) {
        const struct run *r = &a->runs[i];
        if (!r->started || (a->log && !r->logged) || r->cancelled || now >= r->due_ns)
            return true;
    }
    return false;
}

/* When the next result comes due (UINT64_MAX: none runs). */
static uint64_t next_result_due(const struct lg_agent *a)
{
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < a->nruns; i++)
        if (a->runs[i].due_ns < due)
            due = a->runs[i].due_ns;
    return due;
}

static struct run *find_run(struct lg_agent *a, const struct lg_job_ref *j)
{
    for (int i = 0; i < a->nruns; i++)
        if (a->runs[i].job.epoch == j->epoch && strcmp(a->runs[i].job.id, j->id) == 0)
            return &a->runs[i];
    return NULL;
}

static void drop_run(struct lg_agent *a, struct run *r)
{
    *r = a->runs[--a->nruns];
}

static void on_answer(void *arg, int status, json_t *body, int retry_after_s);

/* Send the next exchange, or interrupt a held one when a report is due. */
static void kick(struct lg_agent *a)
{
    if (a->stopped)
        return;
    uint64_t now = clock_mono_ns();
    if (lg_conn_busy(a->conn)) {
        if (!a->held)
            return; /* its answer comes soon, and kicks again */
        if (!report_due(a, now)) {
            /* libevent's timers count from the loop's cached time: early by up to the
             * time the loop has spent since. */
            uint64_t due = next_result_due(a);
            if (due != UINT64_MAX)
                arm(a, due);
            return;
        }
        lg_conn_abort(a->conn);
        lg_agent_counters.interrupts++;
    }
    if (now < a->not_before_ns) {
        arm(a, a->not_before_ns);
        return;
    }
    /* What is due, as orch-agent orders it: started (and output) first, then results. */
    a->nsent = 0;
    uint64_t next_due = UINT64_MAX;
    for (int i = 0; i < a->nruns; i++) {
        struct run *r = &a->runs[i];
        if (!r->started)
            a->sent[a->nsent++] = (struct lg_msg_report){.kind = LG_REPORT_STARTED, .job = r->job};
        else if (a->log && !r->logged)
            a->sent[a->nsent++] = (struct lg_msg_report){.kind = LG_REPORT_LOGS,
                                                         .job = r->job,
                                                         .data = a->log,
                                                         .len = (size_t)a->cfg.log_bytes,
                                                         .offset = 0};
        else if (r->cancelled || now >= r->due_ns)
            a->sent[a->nsent++] = (struct lg_msg_report){.kind = LG_REPORT_RESULT,
                                                         .job = r->job,
                                                         .exit_code = a->cfg.exit_code,
                                                         .cancelled = r->cancelled};
        else if (r->due_ns < next_due)
            next_due = r->due_ns;
    }
    bool hb = !a->online || now >= a->next_hb_ns;
    struct lg_job_ref running[1024];
    int nrunning = 0;
    for (int i = 0; i < a->nruns && nrunning < (int)(sizeof(running) / sizeof(running[0])); i++)
        running[nrunning++] = a->runs[i].job;
    int free_slots = a->cfg.slots - a->nruns;
    int wait = 0;
    if (a->nsent == 0 && a->online) {
        /* Never held past the next heartbeat, which this one may carry. */
        uint64_t to_hb_s =
            hb ? (uint64_t)a->hb_interval_s : (a->next_hb_ns - now + 999999999ULL) / 1000000000ULL;
        wait = a->nruns > 0 && a->log ? BUSY_WAIT_S : a->cfg.poll_wait_s;
        if (to_hb_s < (uint64_t)wait)
            wait = to_hb_s > 1 ? (int)to_hb_s : 1;
    }
    struct lg_msg_sync m = {
        .heartbeat = hb,
        .status = free_slots > 0 ? "idle" : "busy",
        .slots = a->cfg.slots,
        .free_slots = free_slots,
        .running = running,
        .nrunning = nrunning,
        .hostname = a->caps_sent ? NULL : a->name,
        .reports = a->sent,
        .nreports = a->nsent,
        .assign = free_slots > 0,
        .wait_s = wait,
    };
    char *body = lg_msg_sync(&m);
    int r = body ? lg_conn_request(a->conn, "POST", lg_msg_sync_path, a->credential,
                                   lg_msg_version_header, body, wait * 1000 + REQUEST_SLACK_MS,
                                   on_answer, a)
                 : -ENOMEM;
    free(body);
    if (r < 0) {
        lg_agent_counters.errors++;
        a->not_before_ns = now + RETRY_MS * 1000000ULL;
        arm(a, a->not_before_ns);
        return;
    }
    lg_agent_counters.exchanges++;
    a->held = wait > 0;
    if (hb) {
        lg_agent_counters.heartbeats++;
        a->next_hb_ns = now + (uint64_t)a->hb_interval_s * 1000000000ULL;
        a->caps_sent = true;
    }
    /* Wake for the next result due (it interrupts the hold). */
    evtimer_del(a->timer);
    if (a->held && next_due != UINT64_MAX)
        arm(a, next_due);
}

/* One report's answer: code as the report's own route would have answered. */
static void report_done(struct lg_agent *a, const struct lg_msg_report *rep, int code, uint64_t now)
{
    struct run *r = find_run(a, &rep->job);
    if (!r)
        return;
    if (code == 409 || code == 404) {
        /* Not ours any more (stale epoch, reassigned): drop it, as orch-agent does. */
        lg_agent_counters.stale_409++;
        drop_run(a, r);
        return;
    }
    if (code != 200)
        return; /* sent again with the next exchange */
    if (rep->kind == LG_REPORT_STARTED) {
        r->started = true;
    } else if (rep->kind == LG_REPORT_LOGS) {
        r->logged = true;
    } else {
        lg_stats_completed(a->stats, r->job.id, now);
        drop_run(a, r);
    }
}

static void on_answer(void *arg, int status, json_t *body, int retry_after_s)
{
    struct lg_agent *a = arg;
    uint64_t now = clock_mono_ns();
    a->held = false;
    if (status != 200) {
        /* Reports are sent again (idempotent); the heartbeat too. */
        if (status == 503) {
            lg_agent_counters.busy_503++;
            int64_t ms = retry_after_s > 0 ? (int64_t)retry_after_s * 1000 : RETRY_MS;
            ms += rand() % (ms / 2 + 1);
            a->not_before_ns =
                now + (uint64_t)(ms < MAX_RETRY_AFTER_MS ? ms : MAX_RETRY_AFTER_MS) * 1000000ULL;
        } else {
            lg_agent_counters.errors++;
            if (status != 0)
                fprintf(stderr, "orch-loadgen: agent %s: sync answered HTTP %d\n", a->name, status);
            a->not_before_ns = now + RETRY_MS * 1000000ULL;
        }
        a->next_hb_ns = now;
        kick(a);
        return;
    }
    struct lg_msg_answer ans;
    if (lg_msg_answer_parse(body, &ans) < 0) {
        lg_agent_counters.errors++;
        a->not_before_ns = now + RETRY_MS * 1000000ULL;
        kick(a);
        return;
    }
    if (!a->online)
        lg_agent_counters.online++;
    a->online = true;
    if (ans.heartbeat_interval_s > 0)
        a->hb_interval_s = ans.heartbeat_interval_s;
    for (int i = 0; i < a->nsent && i < ans.nreport_codes; i++)
        report_done(a, &a->sent[i], ans.report_codes[i], now);
    a->nsent = 0;
    for (int i = 0; i < ans.nassignments; i++) {
        const struct lg_job_ref *j = &ans.assignments[i];
        if (find_run(a, j))
            continue; /* handed out again (resume): already ours */
        lg_stats_assigned(a->stats, j->id, now);
        if (a->nruns == a->cfg.slots) {
            /* More than the free slots: the server oversubscribed this agent. */
            fprintf(stderr, "orch-loadgen: agent %s: assignment %s past its %d slots\n", a->name,
                    j->id, a->cfg.slots);
            lg_agent_counters.errors++;
            continue;
        }
        a->runs[a->nruns++] =
            (struct run){.job = *j, .due_ns = now + (uint64_t)a->cfg.run_ms * 1000000ULL};
    }
    for (int i = 0; i < ans.ncancel; i++) {
        struct run *r = find_run(a, &ans.cancel[i]);
        if (r)
            r->cancelled = true;
    }
    lg_msg_answer_free(&ans);
    kick(a);
}

/* --- enrolment ------------------------------------------------------------------------------- */

struct enrol {
    lg_enrol_cb done;
    void *arg;
};

static void on_enrolled(void *arg, int status, json_t *body, int retry_after_s)
{
    struct enrol e = *(struct enrol *)arg;
    free(arg);
    const char *cred = json_string_value(json_object_get(body, "credential"));
    if (status == 201 && cred) {
        e.done(e.arg, 0, cred);
        return;
    }
    char msg[512];
    const char *detail = json_string_value(json_object_get(body, "detail"));
    snprintf(msg, sizeof(msg), "HTTP %d: %s", status,
             detail   ? detail
             : status ? "no detail"
                      : "no answer");
    e.done(e.arg, -EIO, msg);
}

int lg_agent_enrol(struct lg_conn *conn, const char *token, const char *name, int slots,
                   lg_enrol_cb done, void *arg)
{
    struct enrol *e = malloc(sizeof(*e));
    char *body = lg_msg_register(token, name, slots);
    if (!e || !body) {
        free(e);
        free(body);
        return -ENOMEM;
    }
    *e = (struct enrol){.done = done, .arg = arg};
    int r = lg_conn_request(conn, "POST", lg_msg_register_path, NULL, lg_msg_version_header, body,
                            60000, on_enrolled, e);
    free(body);
    if (r < 0)
        free(e);
    return r;
}
