/* lg-submit.c: the submitter (see lg.h): jobs through POST /api/v1/jobs and
 * /api/v1/jobs/batch (docs/api.md) on `parallel` connections. At a rate, a 10 ms tick sends
 * what has come due since (several due at once go as one batch); at rate 0, batches back to
 * back. Each job's submission time is when its request was sent: what a user waits for
 * starts there. */
#include "tools/loadgen/lg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"

#define TICK_MS    10
#define TIMEOUT_MS 120000

struct slot {
    struct lg_submit *s;
    struct lg_conn *conn;
    uint64_t sent_ns;
    int n; /* jobs in the request in flight */
};

struct lg_submit {
    struct lg_http_ctx *http;
    struct lg_stats *stats;
    struct lg_submit_cfg cfg;
    char *token;
    struct slot *slots;
    struct event *tick;
    uint64_t start_ns, retry_ns;
    int sent;     /* jobs in requests sent (and not to be sent again) */
    int accepted; /* jobs the server answered with */
    bool failed;
};

static void pump(struct lg_submit *s);

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    pump(arg);
}

struct lg_submit *lg_submit_new(struct lg_http_ctx *http, struct lg_stats *stats,
                                const struct lg_submit_cfg *cfg, const char *token)
{
    struct lg_submit *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->http = http;
    s->stats = stats;
    s->cfg = *cfg;
    s->token = strdup(token);
    s->slots = calloc((size_t)cfg->parallel, sizeof(*s->slots));
    s->tick = event_new(http->base, -1, EV_PERSIST, on_tick, s);
    if (!s->token || !s->slots || !s->tick) {
        lg_submit_free(s);
        return NULL;
    }
    for (int i = 0; i < cfg->parallel; i++) {
        s->slots[i].s = s;
        s->slots[i].conn = lg_conn_new(http, i);
        if (!s->slots[i].conn) {
            lg_submit_free(s);
            return NULL;
        }
    }
    return s;
}

void lg_submit_free(struct lg_submit *s)
{
    if (!s)
        return;
    for (int i = 0; s->slots && i < s->cfg.parallel; i++)
        lg_conn_free(s->slots[i].conn);
    free(s->slots);
    if (s->tick)
        event_free(s->tick);
    free(s->token);
    free(s);
}

int lg_submit_accepted(const struct lg_submit *s)
{
    return s->accepted;
}

bool lg_submit_failed(const struct lg_submit *s)
{
    return s->failed;
}

static void stop(struct lg_submit *s)
{
    event_del(s->tick);
}

static void on_answer(void *arg, int status, json_t *body, int retry_after_s)
{
    struct slot *sl = arg;
    struct lg_submit *s = sl->s;
    if (status == 201 || status == 200) {
        json_t *items = json_object_get(body, "items");
        if (!items) {
            const char *id = json_string_value(json_object_get(body, "id"));
            if (id) {
                lg_stats_submitted(s->stats, id, sl->sent_ns);
                s->accepted++;
            }
        }
        size_t i;
        json_t *v;
        json_array_foreach(items, i, v)
        {
            const char *id = json_string_value(json_object_get(v, "id"));
            if (id) {
                lg_stats_submitted(s->stats, id, sl->sent_ns);
                s->accepted++;
            }
        }
    } else if (status == 429 || status == 503 || status == 0) {
        /* Rate-limited, busy or cut: these jobs go again (none was created, or a cut
         * answer's jobs exist without our knowing: counted by the agents, not here). */
        s->sent -= sl->n;
        s->retry_ns =
            clock_mono_ns() + (uint64_t)(retry_after_s > 0 ? retry_after_s : 1) * 1000000000ULL;
    } else {
        const char *detail = json_string_value(json_object_get(body, "detail"));
        fprintf(stderr, "orch-loadgen: submitting jobs: HTTP %d: %s\n", status,
                detail ? detail : "no detail");
        s->failed = true;
        stop(s);
        return;
    }
    sl->n = 0;
    pump(s);
}

/* Send n jobs on sl. */
static int send_jobs(struct lg_submit *s, struct slot *sl, int n)
{
    struct buf b = BUF_INIT;
    const char *path = "/api/v1/jobs";
    if (n == 1) {
        buf_append_str(&b, s->cfg.body);
    } else {
        path = "/api/v1/jobs/batch";
        buf_append_str(&b, "{\"jobs\":[");
        for (int i = 0; i < n; i++) {
            if (i)
                buf_append_str(&b, ",");
            buf_append_str(&b, s->cfg.body);
        }
        buf_append_str(&b, "]}");
    }
    if (!b.data)
        return -ENOMEM;
    sl->sent_ns = clock_mono_ns();
    sl->n = n;
    int r =
        lg_conn_request(sl->conn, "POST", path, s->token, NULL, b.data, TIMEOUT_MS, on_answer, sl);
    buf_free(&b);
    if (r < 0) {
        sl->n = 0;
        return r;
    }
    s->sent += n;
    return 0;
}

/* Send what is due on every idle connection. */
static void pump(struct lg_submit *s)
{
    if (s->failed)
        return;
    uint64_t now = clock_mono_ns();
    if (now < s->retry_ns)
        return; /* the tick comes back */
    int due = s->cfg.jobs;
    if (s->cfg.rate > 0) {
        double el = (double)(now - s->start_ns) / 1e9;
        double d = 1 + el * s->cfg.rate;
        due = d < (double)s->cfg.jobs ? (int)d : s->cfg.jobs;
    }
    for (int i = 0; i < s->cfg.parallel && s->sent < due; i++) {
        struct slot *sl = &s->slots[i];
        if (lg_conn_busy(sl->conn))
            continue;
        int n = due - s->sent;
        if (n > s->cfg.batch)
            n = s->cfg.batch;
        if (send_jobs(s, sl, n) < 0) {
            fprintf(stderr, "orch-loadgen: submitting jobs: cannot reach the server\n");
            s->retry_ns = now + 1000000000ULL;
            return;
        }
    }
    if (s->sent >= s->cfg.jobs) {
        bool idle = true;
        for (int i = 0; i < s->cfg.parallel; i++)
            idle = idle && !lg_conn_busy(s->slots[i].conn);
        if (idle)
            stop(s);
    }
}

void lg_submit_start(struct lg_submit *s)
{
    s->start_ns = clock_mono_ns();
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    event_add(s->tick, &tv);
    pump(s);
}
