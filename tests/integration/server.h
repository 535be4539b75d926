/* server.h: run the real `orchd serve` for an integration test, and talk HTTPS to it.
 *
 * th_server_start() makes a migrated database of the test's own, a signing key, a TLS
 * certificate from a development CA (tools/gen-certs.sh), an operator token, and starts
 * orchd on a free port, waiting (bounded) for its ready line. th_server_stop() sends
 * SIGTERM, checks it exits 0, and drops the database. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

struct th_server {
    char db[64];
    char dir[64]; /* temp dir: keys/, tls/, orchd.log */
    int port;
    pid_t pid;
    char operator_token[80]; /* orch_op_... */
    char base[64];           /* https://127.0.0.1:PORT */
    char env[16][512];       /* orchd's environment, kept for restarts */
    int nenv;
    char log[128]; /* the running orchd's log file */
};

/* How many lines of the running orchd's log contain needle. */
int th_log_count(const struct th_server *s, const char *needle);
/* Wait up to timeout_ms for at least want such lines (a line logged after the fact a test
 * has just seen in the database, e.g. after a commit); returns the count then. */
int th_log_wait(const struct th_server *s, const char *needle, int want, int timeout_ms);

/* Kill orchd with sig (SIGKILL: a crash) and start it again on the same port and
 * database. */
void th_server_restart(struct th_server *s, int sig);

/* extra_env: more "K=V" entries for orchd (NULL-terminated, may be NULL). */
void th_server_start(struct th_server *s, const char *const *extra_env);
void th_server_stop(struct th_server *s);
/* Start a second orchd node sharing s's database, keys and certificate (a second node
 * behind the same load balancer). Stop it with th_server_stop_peer() before s. */
void th_server_start_peer(struct th_server *peer, const struct th_server *s);
/* The same with more "K=V" entries for the peer (NULL-terminated; may be NULL), e.g.
 * ORCHD_NODE_ROLES. */
void th_server_start_peer_env(struct th_server *peer, const struct th_server *s,
                              const char *const *extra_env);
void th_server_stop_peer(struct th_server *peer);

struct th_resp {
    long status;
    json_t *json;  /* parsed body, NULL when empty or not JSON */
    char *body;    /* raw body (NUL-terminated) */
    size_t len;    /* its length */
    char *headers; /* raw response headers */
    char *content_type;
    struct th_live *live; /* the harness's record of it (see th_resp_free_all()) */
};

/* Send method path (relative to s->base) with an optional bearer token and body. The
 * content type is application/json unless ctype says otherwise. Fails the test on a
 * transport error; on a thread other than the test's (where an assertion must not fail),
 * answers status 0 with the reason as the body instead. Free with th_resp_free(). */
void th_http(struct th_server *s, const char *method, const char *path, const char *token,
             const char *body, const char *ctype, struct th_resp *r);
/* The same with a body of len bytes (binary). */
void th_http_bytes(struct th_server *s, const char *method, const char *path, const char *token,
                   const char *body, size_t len, const char *ctype, struct th_resp *r);
/* th_http() (JSON body) with one more request header, "Name: value" (e.g. X-Request-Id). */
void th_http_hdr(struct th_server *s, const char *method, const char *path, const char *token,
                 const char *body, const char *header, struct th_resp *r);
void th_resp_free(struct th_resp *r);
/* Free every response not freed yet. A failed cr_assert leaves the test by longjmp, past
 * the th_resp_free() of whatever response its frame held: th_server_stop() (every suite's
 * fini) calls this, so that a failure leaks nothing. */
void th_resp_free_all(void);
/* The value of response header name (case-insensitive), malloc'd, or NULL. */
char *th_resp_header(const struct th_resp *r, const char *name);
/* A string member of the response JSON, "" when absent. */
const char *th_str_of(const struct th_resp *r, const char *key);

/* POST /api/v1/jobs with body (taken: json_decref()ed here), which must answer 201; the
 * new job's id (malloc'd). */
char *th_job_submit(struct th_server *s, const char *token, json_t *body);
/* GET /api/v1/jobs/{id} with token, which must answer 200: the job (caller
 * json_decref()s). */
json_t *th_job(struct th_server *s, const char *token, const char *id);
/* Poll the job (every 100 ms, at most seconds) until its status is final (succeeded,
 * failed, dead or cancelled); fails the test past the bound. Returns the job (caller
 * json_decref()s). */
json_t *th_job_wait_final(struct th_server *s, const char *token, const char *id, int seconds);
/* Wait (bounded) until job id is running (its `started` committed); its document. Fails at
 * once if it ends or fails first. */
json_t *th_job_wait_running(struct th_server *s, const char *token, const char *id, int seconds);

/* Exchange a key (operator token or API key) for an access token (malloc'd). */
char *th_token(struct th_server *s, const char *key);
/* As operator: create a tenant of tier, return its id (malloc'd). */
char *th_tenant(struct th_server *s, const char *op_token, const char *slug, const char *tier);
/* As operator: create an API key of role for tenant and return an access token for it. */
char *th_tenant_token(struct th_server *s, const char *op_token, const char *tenant_id,
                      const char *role);

/* The metrics listener's port from the running orchd's ready line (metrics_port=), or -1. */
int th_metrics_port(const struct th_server *s);

/* Enrol a real orch-agent in state_dir with the CLI, through a new enrolment token made
 * with the tenant admin token admin. label ("k=v") may be NULL. The agent's id is written
 * to agent_id (37 bytes). */
void th_agent_enrol(struct th_server *s, const char *admin, const char *state_dir, const char *name,
                    const char *label, const char *slots, char *agent_id);
/* Register an agent through the API (a scripted agent: no process) with an enrolment
 * token made with admin; returns its credential (malloc'd). */
char *th_agent_register(struct th_server *s, const char *admin, const char *name);
/* A scripted agent's long-poll (GET /api/v1/agent/assignments?wait=wait_s, which must
 * answer 200): the first assignment it is handed (caller json_decref()s), or NULL. */
json_t *th_agent_poll(struct th_server *s, const char *cred, int wait_s);
/* The same with labels, a JSON object ("{\"role\":\"web\"}"). */
char *th_agent_register_labelled(struct th_server *s, const char *admin, const char *name,
                                 const char *labels);
/* Start `orch-agent run` on state_dir, its log in state_dir/agent.log. */
pid_t th_agent_start(const char *state_dir);
/* Send sig and wait (bounded, 30 s; then SIGKILL) until it has exited. Accepts pid <= 0. */
void th_agent_stop(pid_t pid, int sig);

/* A .tar.gz (malloc'd, *len bytes) holding run.sh, which prints marker and its arguments
 * and then data.txt ("data-<marker>"). */
char *th_make_archive(const char *marker, size_t *len);
/* Upload such an archive as package name, version 1, entrypoint run.sh; returns its id
 * (malloc'd) and, when sha is not NULL, its SHA-256 in hex. */
char *th_package(struct th_server *s, const char *token, const char *name, const char *marker,
                 char sha[65]);

/* Like th_agent_start(), with more "K=V" entries for the agent (NULL-terminated; may be
 * NULL), e.g. ORCH_AGENT_SERVER_PROXY for an agent that reaches orchd through a proxy. */
pid_t th_agent_start_env(const char *state_dir, const char *const *extra_env);

/* Send method path to s without failing the test on any outcome, for load generators and
 * for requests made while orchd or its services are down: returns the HTTP status, or 0
 * when orchd could not be reached or did not answer within 10 s. When json is not NULL it
 * receives the parsed body (NULL when none; caller json_decref()s). Safe to call from
 * several threads at once once curl_global_init() has run; reads s but never writes it
 * (give each thread its own copy if another may restart the server meanwhile). */
long th_http_try(const struct th_server *s, const char *method, const char *path, const char *token,
                 const char *body, json_t **json);
