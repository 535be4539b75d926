/* test-agent.c: the agent protocol's codec (proto/agent.h): what one side encodes, the
 * other decodes to the same values, and what breaks a table is refused naming the field. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonv.h"
#include "proto/agent.h"
#include "proto/problem.h"

#define JOB "0190a0b0-0000-7000-8000-000000000001"

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    cr_assert_not_null(v, "%s: %s", text, e.text);
    return v;
}

Test(agent, version_header)
{
    char detail[256];
    int v = 0;
    cr_assert_eq(proto_agent_version_check(NULL, &v, detail, sizeof(detail)), 0);
    cr_assert_eq(v, 1, "a missing header is version 1");
    cr_assert_eq(proto_agent_version_check("1", &v, detail, sizeof(detail)), 0);
    cr_assert_eq(proto_agent_version_check("99", &v, detail, sizeof(detail)), -EPROTONOSUPPORT);
    cr_assert(strstr(detail, "version 99") && strstr(detail, "version 1"), "%s", detail);
    cr_assert_eq(proto_agent_version_check("1x", NULL, detail, sizeof(detail)), -EPROTONOSUPPORT);
    cr_assert_eq(proto_agent_version_check("", NULL, NULL, 0), -EPROTONOSUPPORT);
}

Test(agent, unsupported_problem_round_trip)
{
    json_t *p = proto_agent_unsupported_new("no");
    cr_assert_eq(problem_kind_of(p), PROBLEM_UNSUPPORTED_PROTOCOL);
    cr_assert_eq(json_integer_value(json_object_get(p, "status")), 400);
    int versions[4];
    size_t n = 0;
    cr_assert(proto_agent_unsupported_decode(p, versions, 4, &n));
    cr_assert_eq(n, 1);
    cr_assert_eq(versions[0], PROTO_AGENT_VERSION);
    json_decref(p);
    json_t *other = problem_new(PROBLEM_CONFLICT, NULL, NULL);
    cr_assert_not(proto_agent_unsupported_decode(other, NULL, 0, NULL));
    cr_assert_not(proto_agent_unsupported_decode(NULL, NULL, 0, NULL));
    json_decref(other);
}

Test(agent, routes)
{
    cr_assert(proto_agent_route(PROTO_AGENT_PATH_SYNC));
    cr_assert(proto_agent_route(PROTO_AGENT_PATH_SELF));
    cr_assert(proto_agent_route(PROTO_AGENT_PATH_REGISTER));
    cr_assert(proto_agent_route(PROTO_AGENT_PATH_LOGS));
    cr_assert_not(proto_agent_route("/api/v1/agents"));
    cr_assert_not(proto_agent_route("/api/v1/agents/{id}"));
    cr_assert_not(proto_agent_route("/api/v1/agentx"));
    char path[128];
    cr_assert_eq(proto_agent_path(path, sizeof(path), PROTO_AGENT_PATH_PACKAGE, JOB), 0);
    cr_assert_str_eq(path, "/api/v1/agent/packages/" JOB "/content");
    cr_assert_eq(proto_agent_path(path, 10, PROTO_AGENT_PATH_PACKAGE, JOB), -ENAMETOOLONG);
    cr_assert_eq(proto_agent_path(path, sizeof(path), PROTO_AGENT_PATH_SYNC, JOB), -EINVAL);
}

Test(agent, streams)
{
    for (int s = 0; s < PROTO_STREAM__COUNT; s++)
        cr_assert_eq(proto_stream_from_name(proto_stream_name((enum proto_stream)s)), s);
    cr_assert_eq(proto_stream_from_name("tty"), -EINVAL);
    cr_assert_null(proto_stream_name(PROTO_STREAM__COUNT));
}

Test(agent, heartbeat_round_trip)
{
    struct proto_job_ref running[] = {{JOB, 3}};
    json_t *caps = load("{\"os\":\"linux\"}");
    struct proto_heartbeat hb = {
        .status = "busy",
        .slots = 2,
        .free_slots = 1,
        .running = running,
        .nrunning = 1,
        .has_load = true,
        .load = {.cpu_percent = 150,
                 .memory_used_bytes = 10,
                 .memory_available_bytes = 20,
                 .disk_free_bytes = 30},
        .spool_bytes = 0,
        .capabilities = caps,
    };
    json_t *doc = proto_heartbeat_encode(&hb);
    cr_assert_not_null(doc);
    struct proto_heartbeat out;
    struct jsonv_error e;
    cr_assert_eq(proto_heartbeat_decode(doc, &out, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_str_eq(out.status, "busy");
    cr_assert_eq(out.slots, 2);
    cr_assert_eq(out.nrunning, 1);
    cr_assert_str_eq(out.running[0].job_id, JOB);
    cr_assert_eq(out.running[0].epoch, 3);
    cr_assert(out.has_load);
    cr_assert_float_eq(out.load.cpu_percent, 100.0, 0.001, "clamped to 100");
    cr_assert_eq(out.load.memory_available_bytes, 20);
    cr_assert_eq(out.load.disk_free_bytes, 30);
    cr_assert_null(out.packages);
    cr_assert_not_null(out.capabilities);
    proto_heartbeat_clear(&out);
    json_decref(doc);
    json_decref(caps);
}

Test(agent, heartbeat_refusals_name_the_field)
{
    struct {
        const char *doc, *field;
    } cases[] = {
        {"{\"slots\":0}", "slots"},
        {"{\"bogus\":1}", "bogus"},
        {"{\"running\":[{\"job_id\":\"" JOB "\",\"epoch\":0}]}", "running[0].epoch"},
        {"{\"running\":[{\"job_id\":\"x\",\"epoch\":1}]}", "running[0].job_id"},
        {"{\"packages\":[\"ABC\"]}", "packages"},
        {"{\"load\":{\"memory_available_bytes\":-1}}", "load.memory_available_bytes"},
        {"{\"running\":[{\"job_id\":\"" JOB "\",\"epoch\":1}],"
         "\"prefetch\":[{\"deployment_id\":\"" JOB "\",\"state\":\"fetching\"}]}",
         "prefetch[0].state"},
        {"{\"prefetch\":[{\"deployment_id\":\"x\",\"state\":\"cached\"}]}",
         "prefetch[0].deployment_id"},
        {"{\"prefetch\":[{\"deployment_id\":\"" JOB "\",\"state\":\"failed\",\"bogus\":1}]}",
         "prefetch[0].bogus"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = load(cases[i].doc);
        struct proto_heartbeat out;
        struct jsonv_error e;
        cr_assert_eq(proto_heartbeat_decode(doc, &out, &e), -EINVAL, "%s", cases[i].doc);
        cr_assert_str_eq(e.field, cases[i].field, "%s", cases[i].doc);
        json_decref(doc);
    }
}

Test(agent, heartbeat_answer_round_trip)
{
    struct proto_job_ref cancel[] = {{JOB, 2}};
    struct proto_heartbeat_answer a = {
        .server_time = "2026-01-01T00:00:00.000Z",
        .heartbeat_interval_s = 10,
        .lease_s = 30,
        .cancel = cancel,
        .ncancel = 1,
        .credential_expires_in_s = -1,
    };
    json_t *doc = proto_heartbeat_answer_encode(&a);
    cr_assert_null(json_object_get(doc, "credential_expires_in_s"));
    struct proto_heartbeat_answer out;
    struct jsonv_error e;
    cr_assert_eq(proto_heartbeat_answer_decode(doc, &out, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_eq(out.lease_s, 30);
    cr_assert_eq(out.ncancel, 1);
    cr_assert_eq(out.nlost, 0);
    cr_assert_eq(out.cancel[0].epoch, 2);
    cr_assert_eq(out.credential_expires_in_s, -1);
    proto_heartbeat_answer_clear(&out);
    json_object_set_new(doc, "lease_s", json_integer(0));
    cr_assert_eq(proto_heartbeat_answer_decode(doc, &out, &e), -EINVAL);
    cr_assert_str_eq(e.field, "lease_s");
    json_decref(doc);
}

static const char assignment[] =
    "{\"job_id\":\"" JOB "\",\"epoch\":4,\"attempt\":1,\"command\":\"echo hi\",\"args\":[\"a\"],"
    "\"env\":{\"K\":\"v\"},\"params\":null,\"package_id\":null,\"entrypoint\":null,"
    "\"timeout_ms\":60000,\"package_sha256\":null,\"package_size\":null,\"later\":1}";

Test(agent, assignment_decodes)
{
    json_t *doc = load(assignment);
    struct proto_assignment a;
    struct jsonv_error e;
    cr_assert_eq(proto_assignment_decode(doc, &a, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_str_eq(a.job_id, JOB);
    cr_assert_eq(a.epoch, 4);
    cr_assert_str_eq(a.command, "echo hi");
    cr_assert_eq(json_array_size(a.args), 1);
    cr_assert_eq(a.timeout_ms, 60000);
    cr_assert_null(a.package_id);
    cr_assert_eq(a.package_size, -1);
    json_decref(doc);
}

Test(agent, assignment_refusals_keep_the_attempt)
{
    struct {
        const char *key, *value, *field;
    } cases[] = {
        {"command", "null", "command"},    {"args", "[1]", "args[0]"},
        {"env", "{\"K\":1}", "env.K"},     {"env", "{\"1K\":\"v\"}", "env.1K"},
        {"timeout_ms", "1", "timeout_ms"}, {"package_id", "\"" JOB "\"", "package_sha256"},
        {"command", "\"\"", "command"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = load(assignment);
        json_object_set_new(doc, cases[i].key, load(cases[i].value));
        struct proto_assignment a;
        struct jsonv_error e;
        cr_assert_eq(proto_assignment_decode(doc, &a, &e), -EINVAL, "%s", cases[i].key);
        cr_assert_str_eq(e.field, cases[i].field);
        cr_assert_str_eq(a.job_id, JOB, "the attempt is still named");
        cr_assert_eq(a.epoch, 4);
        json_decref(doc);
    }
    json_t *doc = load(assignment);
    json_object_set_new(doc, "package_id", json_string(JOB));
    json_object_set_new(doc, "package_sha256",
                        json_string("0123456789abcdef0123456789abcdef"
                                    "0123456789abcdef0123456789abcdef"));
    json_object_set_new(doc, "entrypoint", json_string("../x"));
    struct proto_assignment a;
    struct jsonv_error e;
    cr_assert_eq(proto_assignment_decode(doc, &a, &e), -EINVAL);
    cr_assert_str_eq(e.field, "entrypoint");
    json_decref(doc);
}

/* What the server encodes (proto_assignment_encode()) decodes to the same values on the
 * agent, at the bounds of every member, and is exactly the table: every member, nothing
 * else (allow_unknown off). */
static void assignment_round_trip(const struct proto_assignment *in)
{
    json_t *doc = proto_assignment_encode(in);
    cr_assert_not_null(doc);
    struct jsonv_error e;
    cr_assert_eq(jsonv_check(doc, proto_msg_assignment.fields, proto_msg_assignment.n, false, &e),
                 0, "%s %s", e.field, e.detail);
    cr_assert_eq(json_object_size(doc), proto_msg_assignment.n, "every member, null or not");
    struct proto_assignment out;
    cr_assert_eq(proto_assignment_decode(doc, &out, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_str_eq(out.job_id, in->job_id);
    cr_assert_eq(out.epoch, in->epoch);
    cr_assert_eq(out.attempt, in->attempt);
    cr_assert_eq(out.timeout_ms, in->timeout_ms);
    cr_assert_eq(out.package_size, in->package_size);
    cr_assert_eq(!out.command, !in->command);
    if (in->command)
        cr_assert_str_eq(out.command, in->command);
    cr_assert_eq(!out.package_id, !in->package_id);
    if (in->package_id) {
        cr_assert_str_eq(out.package_id, in->package_id);
        cr_assert_str_eq(out.entrypoint, in->entrypoint);
        cr_assert_str_eq(out.package_sha256, in->package_sha256);
    } else {
        cr_assert_null(out.package_sha256);
        cr_assert(json_is_null(json_object_get(doc, "package_sha256")));
        cr_assert(json_is_null(json_object_get(doc, "package_size")));
    }
    cr_assert(in->args ? json_equal(out.args, in->args) : json_array_size(out.args) == 0);
    cr_assert(in->env ? json_equal(out.env, in->env) : json_object_size(out.env) == 0);
    cr_assert(in->params ? json_equal(out.params, in->params) : json_is_null(out.params));
    json_decref(doc);
}

Test(agent, assignment_round_trip)
{
    char *command = malloc(PROTO_JOB_COMMAND_MAX + 1);
    char *entrypoint = malloc(PROTO_JOB_ENTRYPOINT_MAX + 1);
    cr_assert(command && entrypoint);
    memset(command, 'c', PROTO_JOB_COMMAND_MAX);
    command[PROTO_JOB_COMMAND_MAX] = '\0';
    memset(entrypoint, 'e', PROTO_JOB_ENTRYPOINT_MAX);
    entrypoint[PROTO_JOB_ENTRYPOINT_MAX] = '\0';
    json_t *args = load("[\"a\", \"\"]");
    json_t *env = load("{\"K\":\"v\", \"_x1\":\"\"}");
    json_t *params = load("{\"n\":[1, 2.5, null, \"s\"]}");
    const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /* A command job at the upper bounds, with everything a command job may have. */
    struct proto_assignment a = {.job_id = JOB,
                                 .epoch = INT64_MAX,
                                 .attempt = INT32_MAX,
                                 .command = command,
                                 .args = args,
                                 .env = env,
                                 .params = params,
                                 .package_size = -1,
                                 .timeout_ms = PROTO_JOB_TIMEOUT_MAX_MS};
    assignment_round_trip(&a);
    /* At the lower bounds, with nothing optional: args and env go out empty, params null. */
    a = (struct proto_assignment){.job_id = JOB,
                                  .epoch = 1,
                                  .attempt = 1,
                                  .command = "x",
                                  .package_size = -1,
                                  .timeout_ms = PROTO_JOB_TIMEOUT_MIN_MS};
    assignment_round_trip(&a);
    /* Package jobs: the largest package and entrypoint, then an empty package. */
    a = (struct proto_assignment){.job_id = JOB,
                                  .epoch = 2,
                                  .attempt = 3,
                                  .args = args,
                                  .package_id = JOB,
                                  .entrypoint = entrypoint,
                                  .package_sha256 = sha,
                                  .package_size = PROTO_PACKAGE_MAX_BYTES,
                                  .timeout_ms = 60000};
    assignment_round_trip(&a);
    a.entrypoint = "bin/run.sh";
    a.package_size = 0;
    a.command = "also a command";
    assignment_round_trip(&a);

    /* Out of the table's bounds, the encoded doc is refused by the agent, naming it. */
    a.timeout_ms = PROTO_JOB_TIMEOUT_MAX_MS + 1;
    json_t *doc = proto_assignment_encode(&a);
    struct proto_assignment out;
    struct jsonv_error e;
    cr_assert_eq(proto_assignment_decode(doc, &out, &e), -EINVAL);
    cr_assert_str_eq(e.field, "timeout_ms");
    json_decref(doc);

    json_decref(args);
    json_decref(env);
    json_decref(params);
    free(command);
    free(entrypoint);
}

Test(agent, reports_round_trip)
{
    json_t *doc = proto_logs_encode(JOB, 4, PROTO_STREAM_STDERR, 10, "hello", 5);
    struct proto_report r;
    struct jsonv_error e;
    cr_assert_eq(proto_report_decode(doc, -1, &r, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_eq(r.kind, PROTO_REPORT_LOGS);
    cr_assert_str_eq(r.job_id, JOB);
    cr_assert_eq(r.stream, PROTO_STREAM_STDERR);
    cr_assert_eq(r.offset, 10);
    cr_assert_eq(r.bytes, 5);
    json_decref(doc);

    struct proto_result res;
    proto_result_from_flags(PROTO_RES_TIMED_OUT | (9u << PROTO_RES_SIGNAL_SHIFT), -1, &res);
    cr_assert_str_eq(proto_result_outcome(&res), "timeout");
    doc = proto_result_encode(NULL, 4, &res);
    cr_assert_eq(proto_report_decode(doc, PROTO_REPORT_RESULT, &r, &e), 0, "%s %s", e.field,
                 e.detail);
    cr_assert_null(r.job_id);
    cr_assert_eq(r.result.signal, 9);
    cr_assert(r.result.timed_out);
    cr_assert_eq(r.result.exit_code, -1);
    json_decref(doc);

    doc = proto_started_encode(JOB, 4);
    cr_assert_eq(proto_report_decode(doc, -1, &r, &e), 0);
    cr_assert_eq(r.kind, PROTO_REPORT_STARTED);
    json_decref(doc);
}

Test(agent, report_refusals)
{
    struct {
        const char *doc, *field;
    } cases[] = {
        {"{\"kind\":\"bogus\",\"job_id\":\"" JOB "\"}", "kind"},
        {"{\"kind\":\"started\"}", "job_id"},
        {"{\"kind\":\"logs\",\"job_id\":\"" JOB "\",\"epoch\":1,\"stream\":\"tty\",\"offset\":0,"
         "\"data\":\"\"}",
         "stream"},
        {"{\"kind\":\"logs\",\"job_id\":\"" JOB "\",\"epoch\":1,\"stream\":\"stdout\",\"offset\":0,"
         "\"data\":\"abc\"}",
         "data"},
        {"{\"kind\":\"logs\",\"job_id\":\"" JOB "\",\"epoch\":1,\"stream\":\"stdout\","
         "\"offset\":9007199254740991,\"data\":\"aGkK\"}",
         "offset"},
        {"{\"kind\":\"result\",\"job_id\":\"" JOB "\",\"epoch\":1,\"signal\":129}", "signal"},
        {"[]", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = load(cases[i].doc);
        struct proto_report r;
        struct jsonv_error e;
        cr_assert_eq(proto_report_decode(doc, -1, &r, &e), -EINVAL, "%s", cases[i].doc);
        cr_assert_str_eq(e.field, cases[i].field, "%s", cases[i].doc);
        json_decref(doc);
    }
}

Test(agent, sync_round_trip)
{
    struct proto_heartbeat hb = {.slots = 1, .free_slots = 1, .spool_bytes = -1};
    json_t *reports = json_array();
    json_array_append_new(reports, proto_started_encode(JOB, 1));
    struct proto_job_ref held = {.job_id = JOB, .epoch = 3};
    json_t *doc = proto_sync_encode(proto_heartbeat_encode(&hb), reports, true, 25, true, &held, 1);
    struct proto_sync s;
    struct jsonv_error e;
    cr_assert_eq(proto_sync_decode(doc, &s, &e), 0, "%s %s", e.field, e.detail);
    cr_assert(s.has_heartbeat);
    cr_assert(s.assign);
    cr_assert(s.resume);
    cr_assert_eq(s.wait_s, 25);
    cr_assert_eq(json_array_size(s.reports), 1);
    cr_assert_eq(s.nholding, 1);
    cr_assert_str_eq(s.holding[0].job_id, JOB);
    cr_assert_eq(s.holding[0].epoch, 3);
    proto_sync_clear(&s);
    json_t *bad = json_deep_copy(doc);
    json_object_set_new(json_array_get(json_object_get(bad, "holding"), 0), "epoch",
                        json_integer(0));
    cr_assert_eq(proto_sync_decode(bad, &s, &e), -EINVAL);
    cr_assert_str_eq(e.field, "holding[0].epoch", "%s", e.field);
    json_decref(bad);
    json_object_set_new(json_object_get(doc, "heartbeat"), "slots", json_integer(5000));
    cr_assert_eq(proto_sync_decode(doc, &s, &e), -EINVAL);
    cr_assert_str_eq(e.field, "heartbeat.slots");
    json_decref(doc);
}

Test(agent, sync_answer_and_report_answers)
{
    json_t *doc = load("{\"reports\":[{\"code\":200,\"next_offset\":3,\"dropped_bytes\":0},"
                       "{\"code\":409,\"problem\":{\"type\":\"urn:orch:problem:conflict\","
                       "\"reason\":\"offset-gap\",\"next_offset\":7}}],"
                       "\"assignments\":[],\"lease_s\":30,"
                       "\"cancel\":[{\"job_id\":\"" JOB "\",\"epoch\":1}]}");
    struct proto_sync_answer a;
    struct jsonv_error e;
    cr_assert_eq(proto_sync_answer_decode(doc, &a, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_eq(a.lease_s, 30);
    cr_assert_eq(a.ncancel, 1);
    struct proto_report_answer ra;
    proto_report_answer_decode(json_array_get(a.reports, 0), &ra);
    cr_assert_eq(ra.code, 200);
    cr_assert_eq(ra.next_offset, 3);
    proto_report_answer_decode(json_array_get(a.reports, 1), &ra);
    cr_assert_eq(ra.code, 409);
    cr_assert_str_eq(ra.reason, "offset-gap");
    cr_assert_eq(ra.problem_next_offset, 7);
    proto_report_answer_decode(NULL, &ra);
    cr_assert_eq(ra.code, 0, "no answer: send again");
    proto_sync_answer_clear(&a);
    json_decref(doc);

    doc = load("{\"assignments\":[]}");
    cr_assert_eq(proto_sync_answer_decode(doc, &a, &e), 0, "a long-poll's answer");
    json_decref(doc);
}

Test(agent, every_message_has_a_table)
{
    size_t n = 0;
    const struct proto_message *const *m = proto_agent_messages(&n);
    cr_assert_gt(n, 10);
    for (size_t i = 0; i < n; i++) {
        cr_assert_not_null(m[i]->name);
        cr_assert_gt(m[i]->n, 0, "%s", m[i]->name);
    }
}

/* One rule for a job's args and env, on submission (server/api-jobs.c) and on assignment. */
Test(agent, job_args_and_env_bounds)
{
    /* At the bound; one more byte each further down. */
    char arg[PROTO_JOB_ARG_MAX + 2] = "", val[PROTO_JOB_ENV_VALUE_MAX + 2] = "";
    memset(arg, 'a', PROTO_JOB_ARG_MAX);
    memset(val, 'v', PROTO_JOB_ENV_VALUE_MAX);
    json_t *args = json_pack("[s, s]", "x", arg), *env = json_pack("{s:s}", "_K1", val);
    struct jsonv_error e;
    cr_assert_eq(proto_job_args_env_check(args, env, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_eq(proto_job_args_env_check(NULL, NULL, &e), 0);

    arg[PROTO_JOB_ARG_MAX] = 'a';
    json_array_set_new(args, 1, json_string(arg));
    cr_assert_eq(proto_job_args_env_check(args, env, &e), -EINVAL);
    cr_assert_str_eq(e.field, "args[1]");
    cr_assert_str_eq(e.detail, "arguments are strings of at most 4096 bytes");

    val[PROTO_JOB_ENV_VALUE_MAX] = 'v';
    json_object_set_new(env, "_K1", json_string(val));
    cr_assert_eq(proto_job_args_env_check(NULL, env, &e), -EINVAL);
    cr_assert_str_eq(e.field, "env._K1");
    cr_assert(strstr(e.detail, "at most 32768 bytes"), "%s", e.detail);

    /* An assignment is held to the same rule. */
    json_t *doc = load(assignment);
    json_object_set(doc, "args", args);
    struct proto_assignment a;
    cr_assert_eq(proto_assignment_decode(doc, &a, &e), -EINVAL);
    cr_assert_str_eq(e.field, "args[1]");
    json_decref(doc);
    json_decref(args);
    json_decref(env);
}

#define CRED "orch_ag_0123456789ab_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"

Test(agent, agent_created_decodes)
{
    /* The whole document, with members the agent does not read and one a newer server adds. */
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:s}", "id", JOB, "tenant_id", JOB,
                            "name", "web-1", "credential", CRED, "status", "online", "slots", 4,
                            "connected", 0, "new_member", "x");
    struct proto_agent_created ac;
    struct jsonv_error e;
    cr_assert_eq(proto_agent_created_decode(doc, &ac, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_str_eq(ac.id, JOB);
    cr_assert_str_eq(ac.tenant_id, JOB);
    cr_assert_str_eq(ac.name, "web-1");
    cr_assert_str_eq(ac.credential, CRED);
    json_decref(doc);
}

Test(agent, agent_created_refusals_name_the_field)
{
    struct {
        const char *key;
        json_t *value; /* NULL: the member is removed */
    } cases[] = {
        {"credential", NULL},
        {"credential", json_string("orch_et_0123456789ab_x")},
        {"credential", json_integer(1)},
        {"id", json_string("not-a-uuid")},
        {"tenant_id", NULL},
        {"name", json_string("")},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:s}", "id", JOB, "tenant_id", JOB, "name", "a",
                                "credential", CRED);
        if (cases[i].value)
            json_object_set_new(doc, cases[i].key, cases[i].value);
        else
            json_object_del(doc, cases[i].key);
        struct proto_agent_created ac;
        struct jsonv_error e;
        cr_assert_eq(proto_agent_created_decode(doc, &ac, &e), -EINVAL, "case %zu", i);
        cr_assert_str_eq(e.field, cases[i].key, "case %zu", i);
        json_decref(doc);
    }
    struct jsonv_error e;
    struct proto_agent_created ac;
    cr_assert_eq(proto_agent_created_decode(NULL, &ac, &e), -EINVAL, "no JSON answer");
}

/* Ids are compared as text: an upper-case job id decodes in lower case, in an assignment
 * and in a list of JobEpoch alike. */
Test(agent, job_ids_decode_in_lower_case)
{
    const char *upper = "0190A0B0-0000-7000-8000-00000000000A";
    const char *lower = "0190a0b0-0000-7000-8000-00000000000a";
    json_t *doc = load(assignment);
    json_object_set_new(doc, "job_id", json_string(upper));
    struct proto_assignment a;
    struct jsonv_error e;
    cr_assert_eq(proto_assignment_decode(doc, &a, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_str_eq(a.job_id, lower);
    json_decref(doc);

    json_t *list = json_pack("[{s:s, s:i}]", "job_id", upper, "epoch", 2);
    struct proto_job_ref *refs = NULL;
    size_t n = 0;
    cr_assert_eq(proto_job_refs_decode(list, &refs, &n, &e), 0, "%s %s", e.field, e.detail);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(refs[0].job_id, lower);
    cr_assert_eq(refs[0].epoch, 2);
    free(refs);
    json_decref(list);
}
