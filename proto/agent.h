/* agent.h: the agent protocol (docs/agent-protocol.md), the one definition both orchd and
 * orch-agent (and tools/loadgen) use: its routes, its version, every message's table of
 * fields with their limits, stream names, result flags, and the encoders and decoders.
 *
 * A limit, a path or a field name written anywhere else is a copy that will drift:
 * server/api-agentproto.c checks what agents send against these tables, agent/daemon.c
 * builds what it sends with these encoders and reads every answer through these decoders,
 * and tests/api/test-openapi.py checks that these tables and proto/openapi.yaml agree.
 *
 * Ownership: encoders return a new reference (caller json_decref()s it; NULL on ENOMEM)
 * and borrow their inputs unless a parameter says "stolen". Decoders borrow the document:
 * string and json_t pointers in a decoded struct point into it and are valid while the
 * document lives; arrays a decoder allocates are freed by the matching *_clear(). A
 * decoder that fails returns -EINVAL with err (may be NULL) naming the offending field
 * relative to the document ("running[2].epoch"), or -ENOMEM.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/id.h"
#include "common/jsonv.h"
#include "proto/version.h"

/* --- version ------------------------------------------------------------------------------ */

/* The agent sends its protocol version on every request, enrolment included, in this
 * header. A request without it is taken as version 1 (agents before the header existed
 * speak version 1). Any version outside [MIN, MAX] is answered 400 with the problem
 * PROBLEM_UNSUPPORTED_PROTOCOL, whose `supported_versions` lists what the server speaks. */
#define PROTO_AGENT_VERSION        ORCH_PROTO_VERSION
#define PROTO_AGENT_VERSION_MIN    1
#define PROTO_AGENT_VERSION_MAX    1
#define PROTO_AGENT_VERSION_HEADER "Orch-Protocol"

/* Check a request's version header value (NULL = absent = version 1). Returns 0 when the
 * server speaks it, with *ret (may be NULL) the version; -EPROTONOSUPPORT otherwise, with
 * detail (may be NULL) a sentence naming the version asked and the versions supported. */
int proto_agent_version_check(const char *header, int *ret, char *detail, size_t len);

/* The body of the unsupported-protocol problem: a new reference (problem + its
 * `supported_versions` member), NULL on ENOMEM. */
json_t *proto_agent_unsupported_new(const char *detail);

/* Whether doc (a problem body, borrowed, may be NULL) is the unsupported-protocol problem;
 * when it is and supported is not NULL, the versions it lists are written there (at most
 * max, *n how many). */
bool proto_agent_unsupported_decode(const json_t *doc, int *supported, size_t max, size_t *n);

/* --- routes ------------------------------------------------------------------------------- */

#define PROTO_AGENT_PATH_REGISTER    ORCH_API_PREFIX "/agents/register"
#define PROTO_AGENT_PATH_SELF        ORCH_API_PREFIX "/agent"
#define PROTO_AGENT_PATH_ROTATE      ORCH_API_PREFIX "/agent/rotate-credential"
#define PROTO_AGENT_PATH_HEARTBEAT   ORCH_API_PREFIX "/agent/heartbeat"
#define PROTO_AGENT_PATH_ASSIGNMENTS ORCH_API_PREFIX "/agent/assignments"
#define PROTO_AGENT_PATH_SYNC        ORCH_API_PREFIX "/agent/sync"
#define PROTO_AGENT_PATH_PACKAGE     ORCH_API_PREFIX "/agent/packages/{id}/content"
#define PROTO_AGENT_PATH_STARTED     ORCH_API_PREFIX "/agent/jobs/{id}/started"
#define PROTO_AGENT_PATH_LOGS        ORCH_API_PREFIX "/agent/jobs/{id}/logs"
#define PROTO_AGENT_PATH_RESULT      ORCH_API_PREFIX "/agent/jobs/{id}/result"

/* Whether a route pattern (as in the route table, "/api/v1/agent/jobs/{id}/logs") belongs
 * to the agent protocol: the /agent routes and enrolment. The server checks the version
 * on exactly these. */
bool proto_agent_route(const char *pattern);

/* pattern with its "{id}" replaced by id, into out. Returns 0, or -ENAMETOOLONG /
 * -EINVAL (pattern without "{id}"). */
int proto_agent_path(char *out, size_t len, const char *pattern, const char *id);

/* --- limits ------------------------------------------------------------------------------- */

#define PROTO_SLOTS_MAX         1024
#define PROTO_RUNNING_MAX       1024 /* entries of a heartbeat's `running` */
#define PROTO_PACKAGES_LIST_MAX 4096 /* digests in a heartbeat's `packages` */
#define PROTO_CAPABILITIES_MAX  64   /* keys of a heartbeat's `capabilities` */
#define PROTO_LOAD_KEYS_MAX     16
#define PROTO_STATUS_MAX        16
#define PROTO_LOG_CHUNK_MAX     (64 * 1024) /* decoded bytes of one `logs` report */
#define PROTO_LOG_DATA_MAX      ((PROTO_LOG_CHUNK_MAX / 3 + 1) * 4) /* its base64 */
#define PROTO_LOG_OFFSET_MAX    ORCH_LOG_OFFSET_MAX
#define PROTO_RESULT_MAX        (1024 * 1024) /* a result's `result`, compact JSON bytes */
#define PROTO_ERROR_MAX         4096          /* a result's `error` */
#define PROTO_SIGNAL_MAX        128
#define PROTO_EXIT_CODE_MAX     255 /* exit_code's bound, a POSIX exit status's */
#define PROTO_SYNC_MAX_REPORTS  512
#define PROTO_SYNC_MAX_WAIT_S   60
#define PROTO_LEASE_MAX_S       86400
#define PROTO_HEARTBEAT_MAX_S   3600
#define PROTO_PACKAGE_MAX_BYTES ((int64_t)1 << 40) /* an archive (packages.max_bytes caps it) */
#define PROTO_SHA256_HEX_LEN    64
/* Request bodies, as the server's route table caps them (413 past them). */
#define PROTO_HEARTBEAT_BODY_MAX (128 * 1024)
#define PROTO_LOGS_BODY_MAX      (128 * 1024)
#define PROTO_RESULT_BODY_MAX    (2 * 1024 * 1024)
#define PROTO_SYNC_BODY_MAX      (8 * 1024 * 1024)
/* A job as submitted and as assigned: the same bounds on both sides. */
#define PROTO_JOB_COMMAND_MAX    65536
#define PROTO_JOB_ARGS_MAX       256
#define PROTO_JOB_ARG_MAX        4096 /* bytes of one argument */
#define PROTO_JOB_ENV_MAX        128
#define PROTO_JOB_ENV_NAME_MAX   128   /* bytes of a variable's name */
#define PROTO_JOB_ENV_VALUE_MAX  32768 /* bytes of its value */
#define PROTO_JOB_PARAMS_MAX     65536 /* `params`, compact JSON bytes */
#define PROTO_JOB_ENTRYPOINT_MAX 1024
#define PROTO_JOB_TIMEOUT_MIN_MS 1000
#define PROTO_JOB_TIMEOUT_MAX_MS 604800000 /* 7 days */
#define PROTO_JOB_ATTEMPT_MAX    100       /* a job's max_attempts */

/* Deployments (docs/packages.md, "Deploying a version to agents"): entries of a heartbeat's
 * and of its answer's `prefetch`, a failure's reason, a target's start spread. */
#define PROTO_PREFETCH_MAX           16
#define PROTO_PREFETCH_REASON_MAX    512
#define PROTO_PREFETCH_SPREAD_MAX_MS 600000

/* --- tables ------------------------------------------------------------------------------- */

/* One message: its name (the schema's in proto/openapi.yaml), its fields, whether keys
 * outside the table are accepted (forward compatibility, for what the server sends), and
 * whether the table lists only the members its reader uses (partial: of a document that
 * has more, such as an agent's; the contract test then holds only those to the spec). */
struct proto_message {
    const char *name;
    const struct jsonv_field *fields;
    size_t n;
    bool allow_unknown;
    bool partial;
};

extern const struct proto_message proto_msg_job_epoch;        /* JobEpoch: cancel/lost/running */
extern const struct proto_message proto_msg_load;             /* HeartbeatLoad */
extern const struct proto_message proto_msg_heartbeat;        /* Heartbeat */
extern const struct proto_message proto_msg_heartbeat_answer; /* HeartbeatAnswer */
extern const struct proto_message proto_msg_prefetch_report;  /* PrefetchReport */
extern const struct proto_message proto_msg_prefetch;         /* Prefetch */
extern const struct proto_message proto_msg_assignment;       /* Assignment */
extern const struct proto_message proto_msg_assignment_list;  /* AssignmentList */
extern const struct proto_message proto_msg_sync;             /* AgentSync */
extern const struct proto_message proto_msg_sync_report;      /* AgentSyncReport: kind, job_id */
extern const struct proto_message proto_msg_sync_answer;      /* AgentSyncAnswer */
extern const struct proto_message proto_msg_report_answer;    /* AgentSyncReportAnswer */
extern const struct proto_message proto_msg_started;          /* JobStarted */
extern const struct proto_message proto_msg_started_answer;   /* JobStartedAnswer */
extern const struct proto_message proto_msg_logs;             /* LogChunk */
extern const struct proto_message proto_msg_logs_answer;      /* LogChunkAnswer */
extern const struct proto_message proto_msg_result;           /* JobResultReport */
extern const struct proto_message proto_msg_result_answer;    /* JobResultAnswer */
extern const struct proto_message proto_msg_agent_created;    /* AgentCreated (partial) */

/* Every message above, for the contract test (tests/api/proto-dump.c). */
const struct proto_message *const *proto_agent_messages(size_t *n);

/* Check doc against m (jsonv_check() with m's own allow_unknown). */
int proto_check(const json_t *doc, const struct proto_message *m, struct jsonv_error *err);

/* --- streams ------------------------------------------------------------------------------ */

enum proto_stream {
    PROTO_STREAM_STDOUT,
    PROTO_STREAM_STDERR,
    PROTO_STREAM_SYSTEM, /* what the agent itself says about the job (package fetch, ...) */
    PROTO_STREAM__COUNT
};

/* "stdout", "stderr", "system"; NULL out of range. */
const char *proto_stream_name(enum proto_stream s);
/* The stream called name, or -EINVAL. */
int proto_stream_from_name(const char *name);

/* --- result flags ------------------------------------------------------------------------- */

/* How an attempt ended, as the agent records it (its spool stores these values: never
 * renumber). The wire carries timed_out, cancelled, signal and error (see
 * proto_result_from_flags()). */
#define PROTO_RES_TIMED_OUT      0x01u
#define PROTO_RES_CANCELLED      0x02u
#define PROTO_RES_RESTARTED      0x04u
#define PROTO_RES_SETUP_FAILED   0x08u
#define PROTO_RES_OUTPUT_LOST    0x10u
#define PROTO_RES_BAD_ASSIGNMENT 0x20u
#define PROTO_RES_PACKAGE        0x40u
#define PROTO_RES_LEASE_LAPSED   0x80u /* killed by the agent: no exchange renewed its lease */
#define PROTO_RES_SIGNAL_SHIFT   16    /* the terminating signal in bits 16..23 */
#define PROTO_RES_SIGNAL_MASK    0xffu

/* --- messages ----------------------------------------------------------------------------- */

/* A job and the epoch of one of its assignments (running, cancel, lost). */
struct proto_job_ref {
    char job_id[ID_STR_LEN];
    int64_t epoch;
};

struct proto_load {
    double cpu_percent;             /* 0..100 over the last heartbeat interval */
    int64_t memory_used_bytes;      /* MemTotal - MemAvailable */
    int64_t memory_available_bytes; /* MemAvailable: what the placement engine matches */
    int64_t disk_free_bytes;        /* on the agent's state directory's file system */
};

/* A heartbeat. Encoded: members with a negative value or a NULL pointer are left out.
 * Decoded: absent members are -1 / NULL / has_load false. */
struct proto_heartbeat {
    const char *status; /* "idle", "busy", "draining" */
    int64_t slots, free_slots;
    struct proto_job_ref *running; /* decoded: allocated (proto_heartbeat_clear()) */
    size_t nrunning;
    bool has_running; /* decoded: `running` was sent (encode: always sent) */
    bool has_load;
    struct proto_load load;
    int64_t spool_bytes;
    json_t *packages;     /* array of SHA-256 hex digests; borrowed */
    json_t *capabilities; /* the host's facts (object); borrowed */
    json_t *prefetch;     /* decoded: PrefetchReport entries, checked; borrowed */
};

json_t *proto_heartbeat_encode(const struct proto_heartbeat *hb);
/* Check doc against the Heartbeat table, its load, its running entries and package
 * digests, and decode it into *ret. */
int proto_heartbeat_decode(const json_t *doc, struct proto_heartbeat *ret, struct jsonv_error *err);
void proto_heartbeat_clear(struct proto_heartbeat *hb);

/* The answer to a heartbeat. credential_expires_in_s < 0: absent. */
struct proto_heartbeat_answer {
    const char *server_time;
    int64_t heartbeat_interval_s;
    int64_t lease_s;
    struct proto_job_ref *cancel; /* decoded: allocated (proto_heartbeat_answer_clear()) */
    size_t ncancel;
    struct proto_job_ref *lost; /* idem */
    size_t nlost;
    int64_t credential_expires_in_s;
    json_t *prefetch; /* Prefetch entries (checked when decoded); borrowed; NULL = none */
};

json_t *proto_heartbeat_answer_encode(const struct proto_heartbeat_answer *a);
int proto_heartbeat_answer_decode(const json_t *doc, struct proto_heartbeat_answer *ret,
                                  struct jsonv_error *err);
void proto_heartbeat_answer_clear(struct proto_heartbeat_answer *a);

/* The entries of a list of JobEpoch (cancel, lost, running): checked, into *ret (caller
 * free()s it, NULL when empty) and *n. list NULL: none. */
int proto_job_refs_decode(const json_t *list, struct proto_job_ref **ret, size_t *n,
                          struct jsonv_error *err);
/* A list of JobEpoch from refs. */
json_t *proto_job_refs_encode(const struct proto_job_ref *refs, size_t n);

/* A job assigned to the agent: the server encodes it (server/gw-registry.c), the agent
 * decodes it; the contract test holds both to this table. Absent or null members:
 * NULL / 0 / -1. */
struct proto_assignment {
    char job_id[ID_STR_LEN];
    int64_t epoch;
    int64_t attempt;
    const char *command; /* NULL with a package */
    const json_t *args;  /* array of strings or NULL */
    const json_t *env;   /* object of strings or NULL */
    const json_t *params;
    const char *package_id;     /* NULL without a package */
    const char *entrypoint;     /* safe relative path (common/relpath.h) with a package */
    const char *package_sha256; /* 64 hex digits with a package */
    int64_t package_size;       /* -1 unknown */
    int64_t timeout_ms;         /* 0 none */
    int64_t lease_s; /* always 0: an assignment's lease is its answer's (proto_sync_answer) */
};

/* Check doc against the Assignment table (unknown members accepted: a newer server may add
 * some) and the rules the table cannot say (a command or a package; a package's digest and
 * safe entrypoint; args and env values are strings). On -EINVAL, ret->job_id and
 * ret->epoch are still set when those two members were valid (epoch 0 otherwise), so that
 * the refusal can be reported about the right attempt. */
int proto_assignment_decode(const json_t *doc, struct proto_assignment *ret,
                            struct jsonv_error *err);
/* a as the Assignment table has it: every required member, null when it does not apply
 * (args and env: empty when NULL), package_sha256 and package_size null without a package;
 * a's json members are referenced, not copied. lease_s is not a member. NULL: no memory
 * (or a string that is not UTF-8). */
json_t *proto_assignment_encode(const struct proto_assignment *a);

/* A job's args (array of strings, NULL: none) and env (object of strings, NULL: none) as
 * both a submission and an assignment must have them: at most PROTO_JOB_ARG_MAX bytes an
 * argument, names [A-Za-z_][A-Za-z0-9_]* of at most PROTO_JOB_ENV_NAME_MAX bytes, values
 * of at most PROTO_JOB_ENV_VALUE_MAX. The counts are the tables' (PROTO_JOB_ARGS_MAX,
 * PROTO_JOB_ENV_MAX). -EINVAL with err naming "args[i]" or "env.NAME". */
int proto_job_args_env_check(const json_t *args, const json_t *env, struct jsonv_error *err);
/* A job's params as submission and delivery need them: at most PROTO_JOB_PARAMS_MAX bytes of
 * compact JSON, and no number of magnitude 2^63 or more (PostgreSQL's jsonb hands such a
 * real back as an integer of hundreds of digits, which no JSON parser of ours reads, so
 * the assignment could never be delivered). Returns 0 or -EINVAL with err (field
 * "params") filled when err is not NULL. */
int proto_job_params_check(const json_t *params, struct jsonv_error *err);

/* Reports: started, logs, result, on their own routes or in a sync exchange. */
enum proto_report_kind {
    PROTO_REPORT_STARTED,
    PROTO_REPORT_LOGS,
    PROTO_REPORT_RESULT,
    PROTO_REPORT__COUNT
};

/* "started", "logs", "result"; NULL out of range. */
const char *proto_report_kind_name(enum proto_report_kind k);
/* The fields of a kind's body on its own route (proto_msg_started, ...); NULL out of range. */
const struct proto_message *proto_report_message(enum proto_report_kind k);

struct proto_result {
    int exit_code; /* -1: none (encoded as null only when exit_code_null) */
    bool exit_code_null;
    int signal; /* 0 none */
    bool timed_out, cancelled;
    const char *error; /* NULL: none */
    json_t *result;    /* any JSON the job produced, NULL none; borrowed */
};

/* The wire members of an attempt that ended with flags (PROTO_RES_*) and exit_code: its
 * signal, timed_out, cancelled and error (a static sentence, or NULL). result is left
 * NULL. */
void proto_result_from_flags(uint32_t flags, int exit_code, struct proto_result *ret);
/* The outcome the server records for r: "cancelled", "timeout", "succeeded" or "failed". */
const char *proto_result_outcome(const struct proto_result *r);

/* A decoded report. */
struct proto_report {
    enum proto_report_kind kind;
    const char *job_id; /* in a sync exchange; NULL on a report's own route */
    int64_t epoch;
    /* logs */
    enum proto_stream stream;
    int64_t offset;
    const char *data; /* base64, as sent */
    size_t data_len;  /* of data */
    size_t bytes;     /* decoded length */
    /* result */
    struct proto_result result;
};

/* Encoders. job_id NULL: the body for the kind's own route; else the sync form, with
 * `kind` and `job_id`. */
json_t *proto_started_encode(const char *job_id, int64_t epoch);
/* data: len raw bytes (at most PROTO_LOG_CHUNK_MAX), encoded base64 here. */
json_t *proto_logs_encode(const char *job_id, int64_t epoch, enum proto_stream stream,
                          int64_t offset, const void *data, size_t len);
json_t *proto_result_encode(const char *job_id, int64_t epoch, const struct proto_result *r);

/* Decode a report. kind < 0 (-1): a sync exchange's report, with `kind` and `job_id`;
 * otherwise the body of that kind's own route. Checks the table and what it cannot say
 * (base64 data, offset plus length within PROTO_LOG_OFFSET_MAX, a result within
 * PROTO_RESULT_MAX). */
int proto_report_decode(const json_t *doc, int kind, struct proto_report *ret,
                        struct jsonv_error *err);

/* A sync request. Encode: heartbeat and reports are stolen (each may be NULL); holding
 * lists the attempts the agent has spooled (at most PROTO_RUNNING_MAX, none when 0). */
json_t *proto_sync_encode(json_t *heartbeat, json_t *reports, bool assign, int64_t wait_s,
                          bool resume, const struct proto_job_ref *holding, size_t nholding);

/* A decoded sync request: heartbeat decoded (has_heartbeat), reports borrowed (each
 * decoded on its own with proto_report_decode(), so one bad report is answered in its
 * place, not by refusing the exchange). */
struct proto_sync {
    bool has_heartbeat;
    struct proto_heartbeat heartbeat;
    const json_t *reports; /* array or NULL */
    bool assign;
    int64_t wait_s;
    bool resume;
    /* With resume: attempts the agent holds already, not to be handed out again
     * (allocated, proto_sync_clear()). */
    struct proto_job_ref *holding;
    size_t nholding;
};

/* Errors in the heartbeat name "heartbeat.<field>". */
int proto_sync_decode(const json_t *doc, struct proto_sync *ret, struct jsonv_error *err);
void proto_sync_clear(struct proto_sync *s);

/* The answer to one report, on its route or in a sync exchange ({"code": ..., ...}).
 * code 200: status (started, result), next_offset and dropped_bytes (logs). Otherwise
 * the problem's type, detail, reason and next_offset (-1 absent). */
struct proto_report_answer {
    int code;
    const char *status;
    int64_t next_offset;
    int64_t dropped_bytes;
    const char *problem_type;
    const char *detail;
    const char *reason;
    int64_t problem_next_offset;
};

/* A missing or malformed answer decodes as code 0 (not answered: send the report again). */
void proto_report_answer_decode(const json_t *doc, struct proto_report_answer *ret);

/* The answer to a sync exchange (or to GET /agent/assignments, without heartbeat and
 * reports): members borrowed. lease_s 0: absent. */
struct proto_sync_answer {
    const json_t *heartbeat;   /* HeartbeatAnswer or NULL */
    const json_t *reports;     /* array of report answers or NULL */
    const json_t *assignments; /* array of Assignment (decode each) or NULL */
    int64_t lease_s;
    struct proto_job_ref *cancel; /* allocated (proto_sync_answer_clear()) */
    size_t ncancel;
};

int proto_sync_answer_decode(const json_t *doc, struct proto_sync_answer *ret,
                             struct jsonv_error *err);
void proto_sync_answer_clear(struct proto_sync_answer *a);

/* --- enrolment and credential rotation ---------------------------------------------------- */

/* An agent's credential: this prefix, 12 hex digits, '_', 43 base64url characters. */
#define PROTO_AGENT_CREDENTIAL_PREFIX "orch_ag_"

/* The answer to POST register (201) and to POST rotate-credential (200): the agent's
 * document with its new credential (proto_msg_agent_created: the members the agent uses;
 * the server builds the document in SQL, agent_view). Members borrowed. */
struct proto_agent_created {
    const char *id;
    const char *tenant_id;
    const char *name;
    const char *credential; /* a secret: the caller wipes its copies */
};

/* Check doc against the table and the credential's prefix, and decode it into *ret. */
int proto_agent_created_decode(const json_t *doc, struct proto_agent_created *ret,
                               struct jsonv_error *err);
