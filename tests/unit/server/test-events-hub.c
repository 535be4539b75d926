/* events-hub.h without PostgreSQL: payloads handed in with events_hub_publish() reach the
 * streams of their tenant only, in text/event-stream form; the caps per tenant and per
 * node; a stream whose client does not keep up is marked overflowed instead of queueing
 * without bound; shutdown ends every stream. */
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/events-hub.h"

/* Nothing listens there: the listener thread keeps failing to connect, which is fine. */
#define NO_DB    "postgresql://orch@127.0.0.1:1/none?connect_timeout=1"
#define TENANT_A "01a22fa2-25ad-748a-9bca-57bdf9ab1e5e"
#define TENANT_B "01a22fa2-25ad-748a-9bca-57bdf9ab1e5f"

struct got {
    char text[4096];
    size_t len;
    int calls, flags;
};

static void deliver(void *arg, const char *text, size_t len, int flags)
{
    struct got *g = arg;
    g->calls++;
    g->flags |= flags;
    if (g->len + len < sizeof(g->text)) {
        memcpy(g->text + g->len, text, len);
        g->len += len;
        g->text[g->len] = '\0';
    }
}

static void payload(char *out, size_t len, const char *tenant, const char *type)
{
    snprintf(out, len,
             "{\"data\": {\"job_id\": \"01a22fa2-27ec-7676-be40-65c1d36cc611\"}, \"type\": \"%s\", "
             "\"tenant_id\": \"%s\", \"created_at\": \"2026-12-01T03:24:45+00:00\"}",
             type, tenant);
}

Test(events_hub, scoped_to_the_tenant)
{
    struct event_base *base = event_base_new();
    struct events_hub *h = NULL;
    cr_assert_eq(events_hub_start(NO_DB, &h), 0);
    struct got a = {0}, b = {0};
    struct events_sub *sa, *sb;
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &a, &sa), 0);
    cr_assert_eq(events_sub_join(h, TENANT_B, base, deliver, &b, &sb), 0);
    char p[512];
    payload(p, sizeof(p), TENANT_A, "job.queued");
    events_hub_publish(h, p);
    payload(p, sizeof(p), TENANT_A, "job.running");
    events_hub_publish(h, p);
    events_hub_publish(h, "{\"type\": \"job.queued\"}"); /* no tenant: dropped */
    events_hub_publish(h, "not json");                   /* dropped */
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(a.calls, 1, "both events in one delivery");
    cr_assert(strncmp(a.text, "event: job.queued\ndata: {", 25) == 0, "%s", a.text);
    cr_assert(strstr(a.text, "}\n\nevent: job.running\ndata: {"), "%s", a.text);
    cr_assert_eq(a.text[a.len - 1], '\n');
    cr_assert_eq(strlen(a.text), a.len, "no NUL inside the stream");
    cr_assert_eq(b.calls, 0, "B got: %s", b.text);
    events_sub_leave(sa);
    events_sub_leave(sb);
    events_hub_stop(h);
    event_base_free(base);
}

Test(events_hub, caps_per_tenant_and_node)
{
    struct event_base *base = event_base_new();
    struct events_hub *h = NULL;
    cr_assert_eq(events_hub_start(NO_DB, &h), 0);
    static struct events_sub *subs[EVENTS_MAX_PER_NODE + 1];
    struct got g = {0};
    for (int i = 0; i < EVENTS_MAX_PER_TENANT; i++)
        cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &g, &subs[i]), 0);
    struct events_sub *extra = NULL;
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &g, &extra), -EDQUOT);
    int n = EVENTS_MAX_PER_TENANT;
    /* Other tenants fill the node. */
    while (n < EVENTS_MAX_PER_NODE) {
        char t[37];
        snprintf(t, sizeof(t), "01a22fa2-25ad-748a-9bca-%012d", n);
        cr_assert_eq(events_sub_join(h, t, base, deliver, &g, &subs[n]), 0, "stream %d", n);
        n++;
    }
    cr_assert_eq(events_sub_join(h, TENANT_B, base, deliver, &g, &extra), -EBUSY);
    /* Leaving frees a place. */
    events_sub_leave(subs[0]);
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &g, &subs[0]), 0);
    for (int i = 0; i < n; i++)
        events_sub_leave(subs[i]);
    events_hub_stop(h);
    event_base_free(base);
}

Test(events_hub, a_slow_stream_overflows_instead_of_growing)
{
    struct event_base *base = event_base_new();
    struct events_hub *h = NULL;
    cr_assert_eq(events_hub_start(NO_DB, &h), 0);
    struct got g = {0};
    struct events_sub *s;
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &g, &s), 0);
    char p[512];
    payload(p, sizeof(p), TENANT_A, "job.queued");
    /* The loop does not run meanwhile: as if the stream's client were not reading. */
    size_t each = strlen(p) + 26;
    for (size_t i = 0; i < 2 * EVENTS_MAX_PENDING / each; i++)
        events_hub_publish(h, p);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(g.calls, 1);
    cr_assert(g.flags & EVENTS_OVERFLOWED, "the stream is to be dropped");
    events_sub_leave(s);
    events_hub_stop(h);
    event_base_free(base);
}

struct ender {
    struct events_sub *sub;
    int ended;
};

static void deliver_end(void *arg, const char *text, size_t len, int flags)
{
    struct ender *e = arg;
    if (flags & EVENTS_END) {
        e->ended++;
        events_sub_leave(e->sub);
    }
}

static void *run_loop(void *arg)
{
    event_base_loop(arg, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

Test(events_hub, shutdown_ends_every_stream)
{
    evthread_use_pthreads();
    struct event_base *base = event_base_new();
    struct events_hub *h = NULL;
    cr_assert_eq(events_hub_start(NO_DB, &h), 0);
    struct ender e[3] = {{0}};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver_end, &e[i], &e[i].sub), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_loop, base), 0);
    events_hub_shutdown(h, 5000);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(e[i].ended, 1);
    struct events_sub *late;
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver_end, &e[0], &late), -EBUSY,
                 "no new stream while stopping");
    event_base_loopbreak(base);
    pthread_join(th, NULL);
    events_hub_stop(h);
    event_base_free(base);
}

static void output_payload(char *out, size_t len, const char *job, long long end)
{
    snprintf(out, len,
             "{\"data\": {\"job_id\": \"%s\", \"epoch\": 1, \"stream\": \"stdout\", "
             "\"end_offset\": %lld}, \"type\": \"job.output\", \"tenant_id\": \"%s\", "
             "\"created_at\": \"2026-12-01T03:24:45+00:00\"}",
             job, end, TENANT_A);
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* A chatty job's job.output events: the first goes at once, the rest of the interval are
 * merged into the latest, sent when the interval ends; other events are never held. */
Test(events_hub, output_events_are_coalesced_per_job)
{
    struct event_base *base = event_base_new();
    struct events_hub *h = NULL;
    cr_assert_eq(events_hub_start(NO_DB, &h), 0);
    struct got a = {0};
    struct events_sub *sa;
    cr_assert_eq(events_sub_join(h, TENANT_A, base, deliver, &a, &sa), 0);
    const char *j1 = "01a22fa2-27ec-7676-be40-65c1d36cc611";
    const char *j2 = "01a22fa2-27ec-7676-be40-65c1d36cc612";
    char p[512];
    long long t = 1000000;
    for (int i = 1; i <= 100; i++) { /* 100 chunks in 100 ms */
        output_payload(p, sizeof(p), j1, i * 10);
        events_hub_offer(h, p, t + i);
    }
    output_payload(p, sizeof(p), j2, 7);
    events_hub_offer(h, p, t + 50); /* another job: not held back by the first */
    payload(p, sizeof(p), TENANT_A, "job.succeeded");
    events_hub_offer(h, p, t + 60);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(count(a.text, "event: job.output"), 2, "%s", a.text);
    cr_assert(strstr(a.text, "\"end_offset\": 10}"), "the first at once: %s", a.text);
    cr_assert(strstr(a.text, "\"end_offset\": 7}"), "%s", a.text);
    cr_assert_eq(count(a.text, "event: job.succeeded"), 1, "never held: %s", a.text);

    /* Not yet due: nothing; then the latest of the interval, once. */
    int due = events_hub_flush(h, t + 100);
    cr_assert(due > 0 && due <= EVENTS_OUTPUT_INTERVAL_MS, "due in %d ms", due);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(count(a.text, "event: job.output"), 2);
    events_hub_flush(h, t + 1 + EVENTS_OUTPUT_INTERVAL_MS);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(count(a.text, "event: job.output"), 3, "%s", a.text);
    cr_assert(strstr(a.text, "\"end_offset\": 1000}"), "the latest offset: %s", a.text);
    cr_assert_null(strstr(a.text, "\"end_offset\": 990}"), "merged away");

    /* Quiet intervals free the slots: the next output goes at once. */
    cr_assert_eq(events_hub_flush(h, t + 10000), -1, "nothing held");
    output_payload(p, sizeof(p), j1, 2000);
    events_hub_offer(h, p, t + 10001);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert(strstr(a.text, "\"end_offset\": 2000}"), "%s", a.text);
    events_sub_leave(sa);
    events_hub_stop(h);
    event_base_free(base);
}
