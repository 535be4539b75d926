/* lg-main.c: orch-loadgen's options and the phases of a run (see lg.h and
 * docs/operations.md, "Measuring dispatch"):
 *   1. the submitter's access token, from --api-key;
 *   2. enrolment of the agents not in the --state cache yet, with --enrol-token;
 *   3. every agent connects and heartbeats (at most --connect-parallel at once, so the
 *      server's TLS handshakes do not pile up) until all are online, or --duration passed
 *      (the run goes on with those online);
 *   4. --jobs jobs are submitted (--rate per second, or in batches as fast as the server
 *      takes them) while the agents take assignments, "run" each for --run-ms and report
 *      the result; the run ends once every job's result was accepted, or after --duration;
 *   5. the report: submit->assign latency, placements/s, completed jobs/s;
 * or, with --hold S instead of 4 and 5, the agents stay idle and connected for S seconds
 * (a long-poll held open each, a heartbeat every interval the server gives), and the
 * report says what the agents saw: tools/bench-agents.sh reads the server's side.
 * Exit status 0 when every agent came online and every job completed, 1 otherwise, 2 for
 * bad usage. */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"

struct opts {
    const char *url, *ca, *enrol_token, *api_key, *srcs, *state, *prefix, *job;
    int agents, slots, jobs, run_ms, log_bytes, batch, parallel, connect_parallel, duration_s;
    int poll_wait_s, hold_s;
    double rate;
    bool json, quiet;
};

struct cached {
    char *name, *credential;
};

struct lg {
    struct opts o;
    struct event_base *base;
    struct lg_http_ctx http;
    struct lg_stats *stats;
    struct lg_agent **agents;
    int nstarted;
    struct cached *cache;
    int ncache;
    /* phase 2 */
    int enrol_next, enrol_inflight, enrol_failed;
    /* run_until() */
    bool (*cond)(struct lg *);
    bool done;
    char token[4096];
    bool token_failed;
};

static volatile sig_atomic_t interrupted;
static struct event *progress;

static void on_signal(int sig)
{
    interrupted = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: orch-loadgen --url https://127.0.0.1:PORT --ca CA.pem --api-key KEY\n"
            "         [--enrol-token TOKEN] [--state FILE] [--agents N] [--slots S] [--jobs M]\n"
            "         [--rate R] [--run-ms T] [--log-bytes B] [--batch B] [--parallel P]\n"
            "         [--connect-parallel C] [--source-addrs 127.0.0.2,127.0.0.3,...]\n"
            "         [--name-prefix P] [--job JSON] [--poll-wait S] [--duration S] [--json]\n"
            "         [--hold S] [--quiet]\n"
            "  --api-key       a tenant API key (orch_ak_..., exchanged) or an access token\n"
            "  --enrol-token   enrols the agents missing from --state (max_uses >= N)\n"
            "  --state FILE    enrolled agents' credentials, kept between runs\n"
            "  --rate R        jobs submitted per second (0 = all at once, in batches)\n"
            "  --run-ms T      how long each job \"runs\" on its agent (default 0)\n"
            "  --jobs 0        only enrol the agents missing from --state\n"
            "  --poll-wait S   longest hold of an agent's exchange (default 25, as orch-agent)\n"
            "  --hold S        submit nothing: hold the agents idle, connected, for S seconds\n"
            "  --quiet         no progress lines on stderr (every 5 s)\n"
            "  --duration S    give up after S seconds (default 600)\n");
}

static int parse_int(const char *name, const char *v, long lo, long hi, int *ret)
{
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (!end || *end || x < lo || x > hi) {
        fprintf(stderr, "orch-loadgen: %s: expected an integer in [%ld, %ld]\n", name, lo, hi);
        return -EINVAL;
    }
    *ret = (int)x;
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"ca", required_argument, NULL, 'c'},
        {"enrol-token", required_argument, NULL, 'e'},
        {"api-key", required_argument, NULL, 'k'},
        {"agents", required_argument, NULL, 'a'},
        {"slots", required_argument, NULL, 's'},
        {"jobs", required_argument, NULL, 'j'},
        {"rate", required_argument, NULL, 'r'},
        {"run-ms", required_argument, NULL, 'T'},
        {"log-bytes", required_argument, NULL, 'L'},
        {"batch", required_argument, NULL, 'b'},
        {"parallel", required_argument, NULL, 'p'},
        {"connect-parallel", required_argument, NULL, 'C'},
        {"source-addrs", required_argument, NULL, 'S'},
        {"state", required_argument, NULL, 'f'},
        {"name-prefix", required_argument, NULL, 'n'},
        {"job", required_argument, NULL, 'J'},
        {"duration", required_argument, NULL, 'd'},
        {"poll-wait", required_argument, NULL, 'w'},
        {"hold", required_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.agents = 1,
                       .slots = 1,
                       .jobs = 100,
                       .batch = 1000,
                       .parallel = 2,
                       .connect_parallel = 256,
                       .duration_s = 600,
                       .poll_wait_s = 25,
                       .prefix = "lg",
                       .job = "{\"command\":\"true\",\"max_attempts\":1}"};
    int c, r = 0;
    while (r == 0 && (c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            o->url = optarg;
            break;
        case 'c':
            o->ca = optarg;
            break;
        case 'e':
            o->enrol_token = optarg;
            break;
        case 'k':
            o->api_key = optarg;
            break;
        case 'a':
            r = parse_int("--agents", optarg, 1, 1000000, &o->agents);
            break;
        case 's':
            r = parse_int("--slots", optarg, 1, 1024, &o->slots);
            break;
        case 'j':
            r = parse_int("--jobs", optarg, 0, 100000000, &o->jobs);
            break;
        case 'r': {
            char *end = NULL;
            o->rate = strtod(optarg, &end);
            if (!end || *end || o->rate < 0 || o->rate > 1e7) {
                fprintf(stderr, "orch-loadgen: --rate: expected jobs per second, 0 or more\n");
                r = -EINVAL;
            }
            break;
        }
        case 'T':
            r = parse_int("--run-ms", optarg, 0, 86400000, &o->run_ms);
            break;
        case 'L':
            r = parse_int("--log-bytes", optarg, 0, 65536, &o->log_bytes);
            break;
        case 'b':
            r = parse_int("--batch", optarg, 1, 1000, &o->batch);
            break;
        case 'p':
            r = parse_int("--parallel", optarg, 1, 256, &o->parallel);
            break;
        case 'C':
            r = parse_int("--connect-parallel", optarg, 1, 100000, &o->connect_parallel);
            break;
        case 'S':
            o->srcs = optarg;
            break;
        case 'f':
            o->state = optarg;
            break;
        case 'n':
            o->prefix = optarg;
            break;
        case 'J':
            o->job = optarg;
            break;
        case 'd':
            r = parse_int("--duration", optarg, 1, 86400, &o->duration_s);
            break;
        case 'w':
            r = parse_int("--poll-wait", optarg, 1, 60, &o->poll_wait_s);
            break;
        case 'H':
            r = parse_int("--hold", optarg, 1, 86400, &o->hold_s);
            break;
        case 'o':
            o->json = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        default:
            usage();
            return -EINVAL;
        }
    }
    if (r < 0)
        return r;
    if (optind < argc || !o->url || !o->api_key) {
        usage();
        return -EINVAL;
    }
    json_t *job = json_loads(o->job, 0, NULL);
    bool ok = json_is_object(job);
    json_decref(job);
    if (!ok) {
        fprintf(stderr, "orch-loadgen: --job: expected a JSON object (one job)\n");
        return -EINVAL;
    }
    return 0;
}

/* Room for every connection: one per agent, the submitter's, a few more. */
static int raise_nofile(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur >= (rlim_t)need)
        return 0;
    if (rl.rlim_max < (rlim_t)need) {
        struct rlimit up = {.rlim_cur = (rlim_t)need, .rlim_max = (rlim_t)need};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return 0;
        fprintf(stderr,
                "orch-loadgen: %d agents need %d file descriptors; the limit is %llu "
                "(raise it: ulimit -n)\n",
                need - 64, need, (unsigned long long)rl.rlim_max);
        return -EMFILE;
    }
    rl.rlim_cur = (rlim_t)need;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* --- the event loop, until a condition ---------------------------------------------------------
 */

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    struct lg *lg = arg;
    if (interrupted || lg->cond(lg)) {
        lg->done = true;
        event_base_loopbreak(lg->base);
    }
}

/* Run the loop until cond(lg) holds (checked every 10 ms) or timeout_s pass. Returns 0, or
 * -ETIMEDOUT, or -EINTR on SIGINT/SIGTERM. */
static int run_until(struct lg *lg, bool (*cond)(struct lg *), int timeout_s)
{
    lg->cond = cond;
    lg->done = cond(lg);
    struct event *ev = event_new(lg->base, -1, EV_PERSIST, on_check, lg);
    if (!ev)
        return -ENOMEM;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 10000};
    event_add(ev, &tv);
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_s * 1000000000ULL;
    while (!lg->done && !interrupted && clock_mono_ns() < deadline)
        event_base_loop(lg->base, EVLOOP_ONCE);
    event_free(ev);
    if (interrupted)
        return -EINTR;
    return lg->done ? 0 : -ETIMEDOUT;
}

/* --- 1. the submitter's token ------------------------------------------------------------------
 */

static void on_token(void *arg, int status, json_t *body, int retry_after_s)
{
    struct lg *lg = arg;
    const char *t = json_string_value(json_object_get(body, "access_token"));
    if (status == 200 && t && strlen(t) < sizeof(lg->token)) {
        memcpy(lg->token, t, strlen(t) + 1);
        return;
    }
    const char *detail = json_string_value(json_object_get(body, "detail"));
    fprintf(stderr, "orch-loadgen: exchanging --api-key: HTTP %d: %s\n", status,
            detail   ? detail
            : status ? "no detail"
                     : "no answer");
    lg->token_failed = true;
}

static bool token_done(struct lg *lg)
{
    return lg->token[0] || lg->token_failed;
}

static int get_token(struct lg *lg)
{
    if (strncmp(lg->o.api_key, "orch_ak_", 8) != 0) {
        /* Already an access token. */
        if (strlen(lg->o.api_key) >= sizeof(lg->token))
            return -EINVAL;
        memcpy(lg->token, lg->o.api_key, strlen(lg->o.api_key) + 1);
        return 0;
    }
    struct lg_conn *k = lg_conn_new(&lg->http, 0);
    json_t *b = json_pack("{s:s}", "key", lg->o.api_key);
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    int r = k && body ? lg_conn_request(k, "POST", "/api/v1/auth/token", NULL, NULL, body, 30000,
                                        on_token, lg)
                      : -ENOMEM;
    free(body);
    if (r >= 0)
        r = run_until(lg, token_done, 60);
    lg_conn_free(k);
    if (r >= 0 && lg->token_failed)
        r = -EACCES;
    return r;
}

/* --- 2. enrolment, and the cache of credentials ------------------------------------------------
 */

static void cache_free(struct lg *lg)
{
    for (int i = 0; i < lg->ncache; i++) {
        free(lg->cache[i].name);
        free(lg->cache[i].credential);
    }
    free(lg->cache);
    lg->cache = NULL;
    lg->ncache = 0;
}

/* The cached agents of lg->o.url (none when the file is missing or names another server). */
static int cache_load(struct lg *lg)
{
    lg->cache = calloc((size_t)lg->o.agents, sizeof(*lg->cache));
    if (!lg->cache)
        return -ENOMEM;
    if (!lg->o.state || access(lg->o.state, F_OK) != 0)
        return 0;
    json_error_t err;
    json_t *doc = json_load_file(lg->o.state, 0, &err);
    if (!doc) {
        fprintf(stderr, "orch-loadgen: --state %s: %s\n", lg->o.state, err.text);
        return -EINVAL;
    }
    const char *url = json_string_value(json_object_get(doc, "url"));
    size_t i;
    json_t *v;
    if (url && strcmp(url, lg->o.url) == 0) {
        json_array_foreach(json_object_get(doc, "agents"), i, v)
        {
            const char *name = json_string_value(json_object_get(v, "name"));
            const char *cred = json_string_value(json_object_get(v, "credential"));
            if (!name || !cred || lg->ncache >= lg->o.agents)
                continue;
            lg->cache[lg->ncache].name = strdup(name);
            lg->cache[lg->ncache].credential = strdup(cred);
            lg->ncache++;
        }
    }
    json_decref(doc);
    return 0;
}

/* Save the cache (mode 0600: it holds credentials), keeping agents of the file beyond ours. */
static int cache_save(struct lg *lg)
{
    if (!lg->o.state)
        return 0;
    json_t *doc =
        lg->o.state && access(lg->o.state, F_OK) == 0 ? json_load_file(lg->o.state, 0, NULL) : NULL;
    json_t *old = json_object_get(doc, "agents");
    const char *url = json_string_value(json_object_get(doc, "url"));
    bool same = url && strcmp(url, lg->o.url) == 0;
    json_t *agents = json_array();
    for (int i = 0; i < lg->ncache; i++)
        json_array_append_new(agents, json_pack("{s:s, s:s}", "name", lg->cache[i].name,
                                                "credential", lg->cache[i].credential));
    for (size_t i = (size_t)lg->ncache; same && i < json_array_size(old); i++)
        json_array_append(agents, json_array_get(old, i));
    json_decref(doc);
    json_t *out = json_pack("{s:s, s:o}", "url", lg->o.url, "agents", agents);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", lg->o.state);
    mode_t um = umask(077);
    int r = out && json_dump_file(out, tmp, JSON_COMPACT) == 0 ? 0 : -EIO;
    umask(um);
    json_decref(out);
    if (r == 0 && rename(tmp, lg->o.state) < 0)
        r = -errno;
    if (r < 0)
        fprintf(stderr, "orch-loadgen: cannot write --state %s\n", lg->o.state);
    return r;
}

struct enroller {
    struct lg *lg;
    struct lg_conn *conn;
    int index;
    char name[64];
};

static void enrol_next(struct enroller *e);

static void on_enrol(void *arg, int r, const char *text)
{
    struct enroller *e = arg;
    struct lg *lg = e->lg;
    lg->enrol_inflight--;
    if (r < 0) {
        fprintf(stderr, "orch-loadgen: enrolling %s: %s\n", e->name, text);
        lg->enrol_failed++;
        return;
    }
    lg->cache[e->index].name = strdup(e->name);
    lg->cache[e->index].credential = strdup(text);
    enrol_next(e);
}

static void enrol_next(struct enroller *e)
{
    struct lg *lg = e->lg;
    if (lg->enrol_failed || lg->enrol_next >= lg->o.agents)
        return;
    e->index = lg->enrol_next++;
    snprintf(e->name, sizeof(e->name), "%s-%06d", lg->o.prefix, e->index);
    lg->enrol_inflight++;
    if (lg_agent_enrol(e->conn, lg->o.enrol_token, e->name, lg->o.slots, on_enrol, e) < 0) {
        lg->enrol_inflight--;
        lg->enrol_failed++;
        fprintf(stderr, "orch-loadgen: enrolling %s: cannot reach the server\n", e->name);
    }
}

static bool enrol_done(struct lg *lg)
{
    return lg->enrol_inflight == 0 && (lg->enrol_failed || lg->enrol_next >= lg->o.agents);
}

static int enrol(struct lg *lg)
{
    int r = cache_load(lg);
    if (r < 0 || lg->ncache >= lg->o.agents)
        return r;
    if (!lg->o.enrol_token) {
        fprintf(stderr, "orch-loadgen: %d agents are not enrolled yet: give --enrol-token\n",
                lg->o.agents - lg->ncache);
        return -EINVAL;
    }
    enum { ENROLLERS = 8 }; /* the token's row is locked per enrolment: more do not help */
    struct enroller es[ENROLLERS] = {0};
    lg->enrol_next = lg->ncache;
    for (int i = 0; i < ENROLLERS; i++) {
        es[i] = (struct enroller){.lg = lg, .conn = lg_conn_new(&lg->http, i)};
        if (es[i].conn)
            enrol_next(&es[i]);
    }
    r = run_until(lg, enrol_done, lg->o.duration_s);
    for (int i = 0; i < ENROLLERS; i++)
        lg_conn_free(es[i].conn);
    /* Keep what was enrolled, in order up to the first gap. */
    int n = lg->ncache;
    while (n < lg->o.agents && lg->cache[n].credential)
        n++;
    for (int i = n; i < lg->o.agents; i++) {
        FREE_AND_NULL(lg->cache[i].name);
        FREE_AND_NULL(lg->cache[i].credential);
    }
    lg->ncache = n;
    int s = cache_save(lg);
    if (r >= 0 && (lg->enrol_failed || n < lg->o.agents))
        r = -EIO;
    return r < 0 ? r : s;
}

/* --- 3. connect ----------------------------------------------------------------------------------
 */

/* Counted as they come online: checked every 10 ms, a walk over 100,000 agents would cost
 * the load generator a good part of its core. */
static int online_count(const struct lg *lg)
{
    return (int)lg_agent_counters.online;
}

static bool all_online(struct lg *lg)
{
    int online = online_count(lg);
    /* Start more while few are connecting. */
    while (lg->nstarted < lg->o.agents && lg->nstarted - online < lg->o.connect_parallel)
        lg_agent_start(lg->agents[lg->nstarted++]);
    return online == lg->o.agents;
}

/* --- 4. the run ----------------------------------------------------------------------------------
 */

struct run_state {
    struct lg_submit *sub;
    int jobs;
};
static struct run_state run_state;

static bool run_done(struct lg *lg)
{
    return lg_submit_failed(run_state.sub) ||
           (int)lg_stats_completed_count(lg->stats) >= run_state.jobs;
}

/* Every 5 s on stderr, so that a long run shows where it is. */
static void on_progress(evutil_socket_t fd, short what, void *arg)
{
    struct lg *lg = arg;
    static uint64_t t0;
    uint64_t now = clock_mono_ns();
    if (!t0)
        t0 = now;
    fprintf(stderr,
            "orch-loadgen: t=%.0fs online=%d/%d submitted=%d assigned=%zu completed=%zu "
            "exchanges=%llu connections=%llu errors=%llu\n",
            (double)(now - t0) / 1e9, online_count(lg), lg->o.agents,
            run_state.sub ? lg_submit_accepted(run_state.sub) : 0,
            lg_stats_assigned_count(lg->stats), lg_stats_completed_count(lg->stats),
            (unsigned long long)lg_agent_counters.exchanges, (unsigned long long)lg_http_connects,
            (unsigned long long)lg_agent_counters.errors);
}

static void print_report(const struct lg *lg, const struct lg_report *r, double connect_s,
                         int online)
{
    const struct opts *o = &lg->o;
    const struct lg_agent_counters *c = &lg_agent_counters;
    if (o->json) {
        printf("{\"agents\":%d,\"online\":%d,\"slots\":%d,\"jobs\":%d,\"rate\":%g,\"run_ms\":%d,"
               "\"submitted\":%zu,\"assigned\":%zu,\"completed\":%zu,"
               "\"placements_per_s\":%.1f,\"completed_per_s\":%.1f,"
               "\"submit_assign_p50_ms\":%.2f,\"submit_assign_p90_ms\":%.2f,"
               "\"submit_assign_p99_ms\":%.2f,\"submit_assign_max_ms\":%.2f,"
               "\"run_s\":%.2f,\"connect_s\":%.2f,\"connects\":%llu,\"exchanges\":%llu,"
               "\"interrupts\":%llu,\"busy_503\":%llu,\"stale_409\":%llu,\"errors\":%llu}\n",
               o->agents, online, o->slots, o->jobs, o->rate, o->run_ms, r->submitted, r->assigned,
               r->completed, r->placements_per_s, r->completed_per_s, r->assign_p50_ms,
               r->assign_p90_ms, r->assign_p99_ms, r->assign_max_ms, r->run_s, connect_s,
               (unsigned long long)lg_http_connects, (unsigned long long)c->exchanges,
               (unsigned long long)c->interrupts, (unsigned long long)c->busy_503,
               (unsigned long long)c->stale_409, (unsigned long long)c->errors);
        return;
    }
    printf("agents:          %d online of %d, %d slots each (all online after %.1f s)\n", online,
           o->agents, o->slots, connect_s);
    printf("jobs:            %zu submitted, %zu assigned, %zu completed of %d (run %d ms)\n",
           r->submitted, r->assigned, r->completed, o->jobs, o->run_ms);
    printf("placements/s:    %.1f\n", r->placements_per_s);
    printf("completed/s:     %.1f\n", r->completed_per_s);
    printf("submit->assign:  p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           r->assign_p50_ms, r->assign_p90_ms, r->assign_p99_ms, r->assign_max_ms);
    printf("wire:            %llu connections, %llu exchanges, %llu interrupted, %llu 503, "
           "%llu 409, %llu errors\n",
           (unsigned long long)lg_http_connects, (unsigned long long)c->exchanges,
           (unsigned long long)c->interrupts, (unsigned long long)c->busy_503,
           (unsigned long long)c->stale_409, (unsigned long long)c->errors);
}

/* --- --hold: idle agents, connected ------------------------------------------------------------
 */

static bool never(struct lg *lg)
{
    return false;
}

/* Hold the agents lg->o.hold_s seconds (SIGINT or SIGTERM ends it early, as planned: the
 * caller has measured what it wanted) and report what they did meanwhile. Returns 0 when
 * every agent stayed online throughout, else -EIO. */
static int hold(struct lg *lg, double connect_s)
{
    int online = online_count(lg);
    if (!lg->o.quiet)
        fprintf(stderr, "orch-loadgen: %d of %d agents online after %.1f s; holding %d s\n", online,
                lg->o.agents, connect_s, lg->o.hold_s);
    struct lg_agent_counters c0 = lg_agent_counters;
    uint64_t connects0 = lg_http_connects, t0 = clock_mono_ns();
    int r = run_until(lg, never, lg->o.hold_s);
    double held_s = (double)(clock_mono_ns() - t0) / 1e9;
    const struct lg_agent_counters *c = &lg_agent_counters;
    /* During the hold only: a reconnect or an error means the server dropped an agent. */
    unsigned long long hb = c->heartbeats - c0.heartbeats, ex = c->exchanges - c0.exchanges,
                       rec = lg_http_connects - connects0, err = c->errors - c0.errors,
                       busy = c->busy_503 - c0.busy_503;
    int still = online_count(lg);
    if (lg->o.json)
        printf("{\"agents\":%d,\"online\":%d,\"connect_s\":%.2f,\"held_s\":%.2f,"
               "\"heartbeats\":%llu,\"heartbeats_per_s\":%.1f,\"exchanges\":%llu,"
               "\"reconnects\":%llu,\"busy_503\":%llu,\"errors\":%llu}\n",
               lg->o.agents, still, connect_s, held_s, hb, (double)hb / held_s, ex, rec, busy, err);
    else
        printf("agents:      %d online of %d (all online after %.1f s), held %.1f s\n"
               "heartbeats:  %llu sent, %.1f/s; %llu exchanges\n"
               "wire:        %llu reconnects, %llu 503, %llu errors during the hold\n",
               still, lg->o.agents, connect_s, held_s, hb, (double)hb / held_s, ex, rec, busy, err);
    fflush(stdout);
    return (r == 0 || r == -ETIMEDOUT || r == -EINTR) && online == lg->o.agents && rec == 0 &&
                   err == 0
               ? 0
               : -EIO;
}

int main(int argc, char **argv)
{
    struct lg lg = {0};
    if (parse_opts(argc, argv, &lg.o) < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (raise_nofile(lg.o.agents + lg.o.parallel + 64) < 0)
        return 1;
    int rc = 1;
    lg.base = event_base_new();
    if (!lg.base || lg_http_ctx_init(&lg.http, lg.base, lg.o.url, lg.o.ca, lg.o.srcs) < 0)
        goto out;
    lg.stats = lg_stats_new((size_t)lg.o.jobs);
    lg.agents = calloc((size_t)lg.o.agents, sizeof(*lg.agents));
    if (!lg.stats || !lg.agents)
        goto out;
    if (get_token(&lg) < 0) {
        fprintf(stderr, "orch-loadgen: no access token for the submitter\n");
        goto out;
    }
    if (enrol(&lg) < 0) {
        fprintf(stderr, "orch-loadgen: enrolment failed\n");
        goto out;
    }
    if (lg.o.jobs == 0 && lg.o.hold_s == 0) {
        rc = 0; /* --jobs 0: enrol (into --state) and stop */
        goto out;
    }
    struct lg_agent_cfg acfg = {.slots = lg.o.slots,
                                .run_ms = lg.o.run_ms,
                                .log_bytes = lg.o.log_bytes,
                                .poll_wait_s = lg.o.poll_wait_s};
    struct timeval every = {.tv_sec = 5};
    progress = lg.o.quiet ? NULL : event_new(lg.base, -1, EV_PERSIST, on_progress, &lg);
    if (progress)
        event_add(progress, &every);
    for (int i = 0; i < lg.o.agents; i++) {
        lg.agents[i] =
            lg_agent_new(&lg.http, lg.stats, &acfg, i, lg.cache[i].name, lg.cache[i].credential);
        if (!lg.agents[i])
            goto out;
    }
    uint64_t t0 = clock_mono_ns();
    int r = run_until(&lg, all_online, lg.o.duration_s);
    if (r == -EINTR || online_count(&lg) == 0) {
        fprintf(stderr, "orch-loadgen: no agent came online\n");
        goto stop;
    }
    if (r < 0) /* the run goes on with those online: the report says how many */
        fprintf(stderr, "orch-loadgen: only %d of %d agents came online within %d s\n",
                online_count(&lg), lg.o.agents, lg.o.duration_s);
    double connect_s = (double)(clock_mono_ns() - t0) / 1e9;
    if (lg.o.hold_s > 0) {
        rc = hold(&lg, connect_s) == 0 ? 0 : 1;
        goto stop;
    }
    struct lg_submit_cfg scfg = {.jobs = lg.o.jobs,
                                 .rate = lg.o.rate,
                                 .batch = lg.o.batch,
                                 .parallel = lg.o.parallel,
                                 .body = lg.o.job};
    run_state = (struct run_state){.sub = lg_submit_new(&lg.http, lg.stats, &scfg, lg.token),
                                   .jobs = lg.o.jobs};
    if (!run_state.sub)
        goto stop;
    lg_submit_start(run_state.sub);
    r = run_until(&lg, run_done, lg.o.duration_s);
    struct lg_report rep;
    if (lg_stats_report(lg.stats, clock_mono_ns(), &rep) == 0) {
        print_report(&lg, &rep, connect_s, online_count(&lg));
        if (r == 0 && !lg_submit_failed(run_state.sub) && (int)rep.completed >= lg.o.jobs &&
            online_count(&lg) == lg.o.agents)
            rc = 0;
    }
    if (r == -ETIMEDOUT)
        fprintf(stderr, "orch-loadgen: not every job completed within --duration %d s\n",
                lg.o.duration_s);
stop:
    for (int i = 0; i < lg.nstarted; i++)
        lg_agent_stop(lg.agents[i]);
out:
    if (progress)
        event_free(progress);
    lg_submit_free(run_state.sub);
    for (int i = 0; lg.agents && i < lg.o.agents; i++)
        lg_agent_free(lg.agents[i]);
    free(lg.agents);
    cache_free(&lg);
    lg_stats_free(lg.stats);
    lg_http_ctx_free(&lg.http);
    if (lg.base)
        event_base_free(lg.base);
    return rc;
}
