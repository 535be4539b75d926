/* lg.h: orch-loadgen, many simulated agents and a job submitter in one process, on one
 * libevent loop (one thread: nothing here is locked).
 *
 * lg-http.c   a small HTTP/1.1 client over TLS bufferevents, one request at a time per
 *             connection, from a chosen loopback source address
 * lg-msg.c    the agent protocol's messages: built and read in this file only
 * lg-agent.c  one simulated agent: enrolment, then sync exchanges on one connection
 * lg-submit.c the submitter: jobs through the REST API at a rate or in batches
 * lg-stats.c  per-job times (submitted, assignment received, result accepted), percentiles
 * lg-main.c   options, the phases of a run, the report
 */
#pragma once

#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- lg-http.c ------------------------------------------------------------------------------- */

/* Where the server is, and how to trust it. */
struct lg_http_ctx {
    struct event_base *base; /* borrowed */
    SSL_CTX *ssl;            /* owned */
    char host[256];          /* for Host: and certificate verification */
    struct sockaddr_in dst;
    struct sockaddr_in *srcs; /* source addresses, round robin (owned, nsrcs of them) */
    int nsrcs;
};

/* url "https://127.0.0.1:PORT" (an IPv4 literal: only loopback is ever a target), ca a PEM
 * file. srcs "127.0.0.2,127.0.0.3" or NULL (the kernel's choice). Returns 0 or -EINVAL with
 * a message on stderr. */
int lg_http_ctx_init(struct lg_http_ctx *c, struct event_base *base, const char *url,
                     const char *ca, const char *srcs);
void lg_http_ctx_free(struct lg_http_ctx *c);

/* One keep-alive connection, opened on the first request and again after a close. */
struct lg_conn;

/* The answer: status 0 when none came (connection refused, reset, timed out), body the
 * parsed JSON (borrowed for the call; NULL when empty or not JSON), retry_after_s from
 * Retry-After. The callback may start the connection's next request, or free it. */
typedef void (*lg_http_cb)(void *arg, int status, json_t *body, int retry_after_s);

/* src_index picks the source address (modulo their number). Caller frees with
 * lg_conn_free(). NULL on ENOMEM. */
struct lg_conn *lg_conn_new(struct lg_http_ctx *c, int src_index);
/* Send one request (none may be in flight): auth NULL or a bearer token, header NULL or
 * one more header line (no CRLF), body NULL or JSON text (copied). cb runs exactly once
 * unless lg_conn_abort()/lg_conn_free() comes first. Returns 0, -EBUSY (one in flight) or
 * -errno when the connection cannot be opened (cb does not run). */
int lg_conn_request(struct lg_conn *k, const char *method, const char *path, const char *auth,
                    const char *header, const char *body, int timeout_ms, lg_http_cb cb, void *arg);
/* Whether a request is in flight. */
bool lg_conn_busy(const struct lg_conn *k);
/* Close the connection, giving up the request in flight (its callback never runs): the
 * only way to interrupt an HTTP/1.1 request. The next request opens a new connection,
 * resuming the TLS session. */
void lg_conn_abort(struct lg_conn *k);
/* Accepts NULL. The callback of a request in flight never runs. */
void lg_conn_free(struct lg_conn *k);
/* Connections opened (TCP + TLS handshakes) by all lg_conns so far. */
extern uint64_t lg_http_connects;

/* --- lg-stats.c ------------------------------------------------------------------------------ */

struct lg_stats;

/* Room for at least njobs jobs. NULL on ENOMEM. */
struct lg_stats *lg_stats_new(size_t njobs);
void lg_stats_free(struct lg_stats *s);
/* The submitter sent job id at t_ns (clock_mono_ns()). */
void lg_stats_submitted(struct lg_stats *s, const char *id, uint64_t t_ns);
/* An agent received job id's assignment at t_ns: the first delivery counts. */
void lg_stats_assigned(struct lg_stats *s, const char *id, uint64_t t_ns);
/* The server accepted job id's result at t_ns. */
void lg_stats_completed(struct lg_stats *s, const char *id, uint64_t t_ns);

/* Jobs whose assignment arrived, whose result was accepted. */
size_t lg_stats_assigned_count(const struct lg_stats *s);
size_t lg_stats_completed_count(const struct lg_stats *s);

struct lg_report {
    size_t submitted, assigned, completed;
    double placements_per_s; /* assignments received / (last one, or end - first submission) */
    double completed_per_s;  /* results accepted / (last one, or end - first submission) */
    double assign_p50_ms, assign_p90_ms, assign_p99_ms, assign_max_ms; /* submit->assign */
    double run_s; /* first submit to last event */
};
/* Summarise a run that ended at end_ns. A job submitted but not assigned by then counts in
 * the latencies with the time it had waited (a lower bound), and the rates are over the
 * whole run unless every job was assigned (completed). Returns 0 or -ENOMEM. */
int lg_stats_report(const struct lg_stats *s, uint64_t end_ns, struct lg_report *r);

/* --- lg-msg.c: the agent protocol (docs/agent-protocol.md) ---------------------------------- */

#define LG_JOB_ID_LEN 37 /* a UUID and its NUL */

struct lg_job_ref {
    char id[LG_JOB_ID_LEN];
    int64_t epoch;
};

enum lg_report_kind { LG_REPORT_STARTED, LG_REPORT_LOGS, LG_REPORT_RESULT };

struct lg_msg_report {
    enum lg_report_kind kind;
    struct lg_job_ref job;
    const char *data; /* logs: the chunk (borrowed), len bytes */
    size_t len;
    int64_t offset; /* logs */
    int exit_code;  /* result */
    bool cancelled; /* result */
};

struct lg_msg_sync {
    bool heartbeat;
    const char *status; /* idle, busy */
    int slots, free_slots;
    const struct lg_job_ref *running; /* nrunning of them, borrowed */
    int nrunning;
    const char *hostname; /* capabilities sent when not NULL */
    const struct lg_msg_report *reports;
    int nreports;
    bool assign;
    int wait_s;
};

/* POST /api/v1/agents/register's body (malloc'd text) or NULL on ENOMEM. */
char *lg_msg_register(const char *token, const char *name, int slots);
/* POST /api/v1/agent/sync's body (malloc'd text) or NULL on ENOMEM. */
char *lg_msg_sync(const struct lg_msg_sync *m);
extern const char lg_msg_sync_path[];
extern const char lg_msg_register_path[];
/* The protocol version header line (no CRLF) every agent request carries. */
extern const char lg_msg_version_header[];

/* What a sync answer says, read from body (borrowed). The arrays are malloc'd: free with
 * lg_msg_answer_free(). */
struct lg_msg_answer {
    int heartbeat_interval_s; /* 0 when the answer carried no heartbeat */
    int *report_codes;        /* in the order sent; nreport_codes of them */
    int nreport_codes;
    struct lg_job_ref *assignments;
    int nassignments;
    struct lg_job_ref *cancel;
    int ncancel;
};
int lg_msg_answer_parse(const json_t *body, struct lg_msg_answer *a);
void lg_msg_answer_free(struct lg_msg_answer *a);

/* --- lg-agent.c ------------------------------------------------------------------------------ */

struct lg;

struct lg_agent_cfg {
    int slots;
    int run_ms;      /* how long a simulated job "runs" before its result */
    int log_bytes;   /* output each job reports (0 = none) */
    int exit_code;   /* of every job */
    int poll_wait_s; /* longest hold of an exchange (1 to 60; orch-agent: 25) */
};

struct lg_agent;

/* An enrolled agent: name, id and credential copied. Caller frees with lg_agent_free(). */
struct lg_agent *lg_agent_new(struct lg_http_ctx *http, struct lg_stats *stats,
                              const struct lg_agent_cfg *cfg, int index, const char *name,
                              const char *credential);
void lg_agent_free(struct lg_agent *a);
/* Start its loop: the first exchange (heartbeat) goes out now. */
void lg_agent_start(struct lg_agent *a);
/* Whether its first heartbeat was answered. */
bool lg_agent_online(const struct lg_agent *a);
/* Stop: close the connection, drop timers. */
void lg_agent_stop(struct lg_agent *a);

struct lg_agent_counters {
    uint64_t exchanges, heartbeats, interrupts, errors, busy_503, stale_409;
    uint64_t online; /* agents whose first heartbeat was answered */
};
extern struct lg_agent_counters lg_agent_counters;

/* Enrol one agent: POST /api/v1/agents/register on conn. done(arg, 0, credential) or
 * done(arg, -EIO, message). */
typedef void (*lg_enrol_cb)(void *arg, int r, const char *text);
int lg_agent_enrol(struct lg_conn *conn, const char *token, const char *name, int slots,
                   lg_enrol_cb done, void *arg);

/* --- lg-submit.c ----------------------------------------------------------------------------- */

struct lg_submit_cfg {
    int jobs;         /* how many to submit */
    double rate;      /* per second; 0 = as fast as possible, in batches */
    int batch;        /* most jobs in one request (1 to 1000) */
    int parallel;     /* requests in flight at once */
    const char *body; /* one job's JSON object (text) */
};

struct lg_submit;

/* token: a tenant access token (borrowed). Caller frees with lg_submit_free(). */
struct lg_submit *lg_submit_new(struct lg_http_ctx *http, struct lg_stats *stats,
                                const struct lg_submit_cfg *cfg, const char *token);
void lg_submit_start(struct lg_submit *s);
/* Jobs accepted so far, and whether it gave up (an error answer: message on stderr). */
int lg_submit_accepted(const struct lg_submit *s);
bool lg_submit_failed(const struct lg_submit *s);
void lg_submit_free(struct lg_submit *s);
