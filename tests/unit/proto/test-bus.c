/* test-bus.c: the bus messages (proto/bus.h): what a publisher encodes, a consumer decodes;
 * what is not ours is refused. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/bus.h"

#define TENANT "0190a0b0-0000-7000-8000-00000000000A"
#define JOB    "0190a0b0-0000-7000-8000-000000000001"

Test(bus, jobs_submitted_round_trip)
{
    json_t *ids = json_pack("[s, s]", JOB, JOB);
    char *text = proto_bus_jobs_submitted_encode(TENANT, ids);
    cr_assert_not_null(text);
    struct proto_bus_jobs_submitted m;
    struct jsonv_error e;
    cr_assert_eq(proto_bus_jobs_submitted_decode(text, strlen(text), &m, &e), 0, "%s %s", e.field,
                 e.detail);
    cr_assert_str_eq(m.tenant_id, "0190a0b0-0000-7000-8000-00000000000a", "lower case");
    cr_assert_eq(m.njobs, 2);
    cr_assert_str_eq(m.job_ids[1], JOB);
    proto_bus_jobs_submitted_clear(&m);
    free(text);
    json_array_clear(ids);
    cr_assert_null(proto_bus_jobs_submitted_encode(TENANT, ids), "no jobs: nothing to say");
    json_decref(ids);
}

Test(bus, agent_wake_round_trip_and_old_form)
{
    char *text = proto_bus_agent_wake_encode(JOB);
    struct proto_bus_agent_wake m;
    cr_assert_eq(proto_bus_agent_wake_decode(text, strlen(text), &m, NULL), 0);
    cr_assert_str_eq(m.agent_id, JOB);
    free(text);
    /* A node from before `type`. */
    const char old[] = "{\"agent_id\":\"" JOB "\"}";
    cr_assert_eq(proto_bus_agent_wake_decode(old, strlen(old), &m, NULL), 0);
    cr_assert_null(proto_bus_agent_wake_encode("x"));
}

Test(bus, refusals)
{
    struct jsonv_error e;
    struct proto_bus_agent_wake w;
    struct proto_bus_jobs_submitted m;
    const char *bad[] = {
        "{\"agent_id\":\"x\"}",
        "{\"type\":\"jobs.submitted\",\"agent_id\":\"" JOB "\"}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(proto_bus_agent_wake_decode(bad[i], strlen(bad[i]), &w, &e), -EINVAL, "%s",
                     bad[i]);
    const char ids[] = "{\"type\":\"jobs.submitted\",\"tenant_id\":\"" TENANT "\","
                       "\"job_ids\":[\"" JOB "\", 3]}";
    cr_assert_eq(proto_bus_jobs_submitted_decode(ids, strlen(ids), &m, &e), -EINVAL);
    cr_assert_str_eq(e.field, "job_ids[1]");
    const char untyped[] = "{\"tenant_id\":\"" TENANT "\",\"job_ids\":[\"" JOB "\"]}";
    cr_assert_eq(proto_bus_jobs_submitted_decode(untyped, strlen(untyped), &m, &e), -EINVAL);
    cr_assert_str_eq(e.field, "type");
}

Test(bus, queues)
{
    char q[32];
    cr_assert_eq(proto_bus_gateway_queue(q, sizeof(q), "node-1"), 0);
    cr_assert_str_eq(q, "orch.gw.node-1");
    cr_assert_eq(proto_bus_gateway_queue(q, 8, "node-1"), -ENAMETOOLONG);
    cr_assert_eq(proto_bus_gateway_queue(q, sizeof(q), ""), -EINVAL);
}
