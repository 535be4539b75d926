/* "Why is my job waiting?" (the `waiting` object of GET /api/v1/jobs/{id}), the
 * autoscaling signals (GET /api/v1/scaling/signals) and the scheduling fields of the API
 * (tenant weight, queue max_running, resource requirements), on the real orchd,
 * PostgreSQL and RabbitMQ, with scripted agents.
 *
 * Each reason is set up so that any dispatcher leaves it standing: no agent that matches,
 * a full agent, quota 0, a paused queue, a full queue, a retry's backoff; the two that a
 * running dispatcher would end at once (ready, behind_higher_priority) are read from a
 * node whose dispatcher is off. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;

static void start(const char *const *env)
{
    th_server_start(&srv, env);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
}

static void setup(void)
{
    start(NULL);
}

/* A node that places nothing: what a job waits for stays as the test set it. */
static void setup_no_dispatch(void)
{
    const char *env[] = {"ORCHD_DISPATCH_ENABLED=false", NULL};
    start(env);
}

static void teardown(void)
{
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

/* Criterion runs a suite's .init as well as a test's own: each test names its setup. */
TestSuite(wait, .fini = teardown, .timeout = 120);

/* Register a scripted agent of the tenant whose admin token is adm (labels: JSON object
 * text) and send its first heartbeat, which puts it online; returns its credential. */
static char *agent_as(const char *adm, const char *name, const char *labels, int slots)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", adm, "{\"name\":\"t\",\"max_uses\":1}", NULL,
            &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"%s\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":%s,\"slots\":%d}",
             th_str_of(&r, "token"), name, labels, slots);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    snprintf(body, sizeof(body),
             "{\"status\":\"idle\",\"slots\":%d,\"free_slots\":%d,\"running\":[]}", slots, slots);
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", cred, body, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    return cred;
}

static char *agent(const char *name, const char *labels, int slots)
{
    return agent_as(admin, name, labels, slots);
}

static char *submit_as(const char *tok, const char *body)
{
    return th_job_submit(&srv, tok, json_loads(body, 0, NULL));
}

static char *submit(const char *body)
{
    return submit_as(admin, body);
}

static long send(const char *method, const char *path, const char *tok, const char *body,
                 json_t **json)
{
    struct th_resp r;
    th_http(&srv, method, path, tok, body, NULL, &r);
    long st = r.status;
    if (json)
        *json = json_incref(r.json);
    th_resp_free(&r);
    return st;
}

/* Create a queue; returns its id. */
static char *queue(const char *body)
{
    json_t *j = NULL;
    cr_assert_eq(send("POST", "/api/v1/queues", admin, body, &j), 201);
    char *id = strdup(json_string_value(json_object_get(j, "id")));
    json_decref(j);
    return id;
}

/* The job's `waiting` object (the job must be queued); caller json_decref()s. */
static json_t *waiting(const char *tok, const char *id)
{
    json_t *j = th_job(&srv, tok, id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "queued");
    json_t *w = json_incref(json_object_get(j, "waiting"));
    cr_assert_not_null(w, "a queued job has a waiting object");
    json_decref(j);
    char *text = json_dumps(w, JSON_COMPACT);
    cr_log_info("waiting: %s", text);
    free(text);
    return w;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t num(const json_t *o, const char *k)
{
    cr_assert(json_is_integer(json_object_get(o, k)), "%s is an integer", k);
    return json_integer_value(json_object_get(o, k));
}

/* Poll the job (bounded) until its status is not `queued` any more. */
static void wait_placed(const char *id)
{
    for (int i = 0; i < 200; i++) {
        json_t *j = th_job(&srv, admin, id);
        bool placed = strcmp(str(j, "status"), "queued") != 0;
        json_decref(j);
        if (placed)
            return;
        usleep(50000); /* polling the condition, bounded above */
    }
    cr_assert_fail("job %s was not placed within 10 s", id);
}

/* The text of row 0, column 0 of sql run as the system role (malloc'd). */
static char *sys_str(const char *sql)
{
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    PGresult *r = th_pg_ok(pg, sql);
    cr_assert_eq(PQntuples(r), 1, "%s", sql);
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return v;
}

/* Run sql as the system role on the server's database (test setup only). */
static void sys_sql(const char *sql)
{
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
}

Test(wait, no_matching_agent_names_each_failing_requirement_and_how_many_agents_fail_it,
     .init = setup)
{
    char *a[3] = {agent("l1", "{}", 1), agent("l2", "{}", 1), agent("l3", "{\"gpu\":\"yes\"}", 1)};
    /* One of the three has reported enough free memory; the others none (which fails). */
    sys_sql("UPDATE agents SET memory_free_bytes = 200::bigint * 1048576 WHERE name = 'l1'");
    char *id = submit("{\"command\":\"x\",\"requirements\":{\"os\":\"windows\","
                      "\"min_free_memory_mb\":100,\"gpu\":\"yes\"}}");
    json_t *w = waiting(admin, id);
    cr_assert_str_eq(str(w, "reason"), "no_matching_agent");
    cr_assert_eq(num(w, "agents_considered"), 3);
    cr_assert_eq(num(w, "agents_matching"), 0);
    json_t *reqs = json_object_get(w, "requirements");
    cr_assert_eq(json_array_size(reqs), 3, "every failing requirement, most failing first");
    json_t *r0 = json_array_get(reqs, 0), *r1 = json_array_get(reqs, 1),
           *r2 = json_array_get(reqs, 2);
    cr_assert_str_eq(str(r0, "key"), "os");
    cr_assert_str_eq(str(r0, "wanted"), "windows");
    cr_assert_eq(num(r0, "agents_failing"), 3);
    cr_assert_str_eq(str(r1, "key"), "gpu");
    cr_assert_eq(num(r1, "agents_failing"), 2);
    cr_assert_str_eq(str(r2, "key"), "min_free_memory_mb");
    cr_assert_eq(num(r2, "wanted"), 100);
    cr_assert_eq(num(r2, "agents_failing"), 2);
    cr_assert(strstr(str(w, "detail"), "os=windows fails on 3 of 3 agents"), "%s",
              str(w, "detail"));
    json_decref(w);

    /* A job whose labels all hold somewhere, but never on one agent together. */
    char *split = submit("{\"command\":\"x\",\"requirements\":{\"gpu\":\"yes\","
                         "\"min_free_memory_mb\":100}}");
    w = waiting(admin, split);
    cr_assert_str_eq(str(w, "reason"), "no_matching_agent");
    cr_assert_eq(json_array_size(json_object_get(w, "requirements")), 2);
    json_decref(w);

    /* A tenant with no agent at all: nothing considered. */
    char *other = th_tenant(&srv, op, "empty", "free");
    char *otok = th_tenant_token(&srv, op, other, "admin");
    char *lonely = submit_as(otok, "{\"command\":\"x\"}");
    w = waiting(otok, lonely);
    cr_assert_str_eq(str(w, "reason"), "no_matching_agent");
    cr_assert_eq(num(w, "agents_considered"), 0);
    cr_assert_eq(json_array_size(json_object_get(w, "requirements")), 0);
    json_decref(w);
    free(lonely);
    free(otok);
    free(other);
    free(split);
    free(id);
    for (int i = 0; i < 3; i++)
        free(a[i]);
}

Test(wait, agents_busy_counts_the_matching_agents_and_their_slots_in_use, .init = setup)
{
    char *a = agent("only", "{\"team\":\"blue\"}", 1);
    char *first = submit("{\"command\":\"x\",\"requirements\":{\"team\":\"blue\"}}");
    wait_placed(first);
    char *second = submit("{\"command\":\"x\",\"requirements\":{\"team\":\"blue\"}}");
    json_t *w = waiting(admin, second);
    cr_assert_str_eq(str(w, "reason"), "agents_busy");
    cr_assert_eq(num(w, "agents_matching"), 1);
    cr_assert_eq(num(w, "slots"), 1);
    cr_assert_eq(num(w, "slots_in_use"), 1);
    cr_assert_eq(num(json_object_get(w, "tenant"), "running"), 1);
    cr_assert_eq(json_array_size(json_object_get(w, "blocked_by")), 1);
    json_decref(w);
    /* A placed job carries no explanation. */
    json_t *j = th_job(&srv, admin, first);
    cr_assert_null(json_object_get(j, "waiting"));
    json_decref(j);
    free(second);
    free(first);
    free(a);
}

Test(wait, tenant_quota_says_running_of_quota, .init = setup)
{
    char path[96];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(send("PATCH", path, op, "{\"quotas\":{\"concurrent_jobs\":0}}", NULL), 200);
    char *a = agent("free-agent", "{}", 2);
    char *id = submit("{\"command\":\"x\"}");
    json_t *w = waiting(admin, id);
    cr_assert_str_eq(str(w, "reason"), "tenant_quota");
    json_t *t = json_object_get(w, "tenant");
    cr_assert_eq(num(t, "running"), 0);
    cr_assert_eq(num(t, "quota"), 0);
    cr_assert_eq(num(w, "agents_matching"), 1);
    cr_assert(strstr(str(w, "detail"), "0 of its 0 concurrent jobs"), "%s", str(w, "detail"));
    json_decref(w);
    free(id);
    free(a);
}

Test(wait, a_paused_queue_comes_first, .init = setup)
{
    char *a = agent("free-agent", "{}", 2);
    char *q = queue("{\"name\":\"nightly\",\"paused\":true}");
    char *id = submit("{\"command\":\"x\",\"queue\":\"nightly\"}");
    json_t *w = waiting(admin, id);
    cr_assert_str_eq(str(w, "reason"), "queue_paused");
    json_t *wq = json_object_get(w, "queue");
    cr_assert_str_eq(str(wq, "name"), "nightly");
    cr_assert(json_is_true(json_object_get(wq, "paused")));
    cr_assert(strstr(str(w, "detail"), "nightly is paused"));
    json_decref(w);
    free(id);
    free(q);
    free(a);
}

Test(wait, queue_limit_says_running_of_max, .init = setup)
{
    char *a = agent("single", "{}", 1);
    char *q = queue("{\"name\":\"serial\",\"max_running\":1}");
    char *first = submit("{\"command\":\"x\",\"queue\":\"serial\"}");
    wait_placed(first);
    char *second = submit("{\"command\":\"x\",\"queue\":\"serial\"}");
    json_t *w = waiting(admin, second);
    cr_assert_str_eq(str(w, "reason"), "queue_limit");
    json_t *wq = json_object_get(w, "queue");
    cr_assert_eq(num(wq, "running"), 1);
    cr_assert_eq(num(wq, "max_running"), 1);
    /* The full agent holds it too; the queue's limit is named first. */
    json_t *by = json_object_get(w, "blocked_by");
    cr_assert_str_eq(json_string_value(json_array_get(by, 0)), "queue_limit");
    cr_assert_str_eq(json_string_value(json_array_get(by, 1)), "agents_busy");
    json_decref(w);
    free(second);
    free(first);
    free(q);
    free(a);
}

Test(wait, a_failed_attempt_waits_for_its_backoff, .init = setup)
{
    char *a = agent("flaky", "{}", 1);
    char *id = submit("{\"command\":\"x\",\"max_attempts\":3}");
    wait_placed(id);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/started", id);
    cr_assert_eq(send("POST", path, a, "{\"epoch\":1}", NULL), 200);
    snprintf(path, sizeof(path), "/api/v1/agent/jobs/%s/result", id);
    cr_assert_eq(send("POST", path, a, "{\"epoch\":1,\"exit_code\":1}", NULL), 200);
    /* The retry waits 1 to 2 s (sql/0005_dispatch.sql, retry_backoff(1)). */
    json_t *w = waiting(admin, id);
    cr_assert_str_eq(str(w, "reason"), "not_before");
    cr_assert(json_is_string(json_object_get(w, "not_before")));
    cr_assert(strstr(str(w, "detail"), "not before"), "%s", str(w, "detail"));
    json_decref(w);
    free(id);
    free(a);
}

Test(wait, ready_and_behind_higher_priority_with_position, .init = setup_no_dispatch)
{
    char *a = agent("one-slot", "{}", 1);
    char *low = submit("{\"command\":\"x\",\"priority\":0}");
    char *high = submit("{\"command\":\"x\",\"priority\":10}");
    json_t *w = waiting(admin, high);
    cr_assert_str_eq(str(w, "reason"), "ready");
    cr_assert_eq(num(w, "position"), 0);
    cr_assert_eq(json_array_size(json_object_get(w, "blocked_by")), 0);
    json_decref(w);
    w = waiting(admin, low);
    cr_assert_str_eq(str(w, "reason"), "behind_higher_priority");
    cr_assert_eq(num(w, "position"), 1);
    cr_assert_eq(num(w, "slots"), 1);
    cr_assert_eq(num(w, "slots_in_use"), 0);
    json_decref(w);
    free(high);
    free(low);
    free(a);
}

Test(wait, another_tenant_cannot_read_it_and_pool_agents_count_without_a_trace, .init = setup)
{
    /* An agent of a pool that admits the standard tier, owned by the platform: the
     * platform tenant of the pools migration where there is one, else a tenant of its own. */
    sys_sql(
        "DO $$ DECLARE owner uuid; BEGIN"
        " IF to_regproc('platform_tenant') IS NOT NULL THEN"
        "   EXECUTE 'SELECT platform_tenant()' INTO owner;"
        " ELSE"
        "   owner := gen_random_uuid();"
        "   INSERT INTO tenants (id, slug, display_name, tier)"
        "   VALUES (owner, 'pool-owner', 'Pools', 'enterprise');"
        " END IF;"
        " INSERT INTO pools (id, name, tiers) VALUES (gen_random_uuid(), 'shared', '{standard}');"
        " INSERT INTO agents (id, tenant_id, name, os, arch, slots, status, last_heartbeat_at,"
        "                     pool_id)"
        " VALUES (gen_random_uuid(), owner, 'secret-pool-agent', 'linux', 'x86_64', 4, 'online',"
        "         now(), (SELECT id FROM pools WHERE name = 'shared'));"
        " END $$");
    char *platform = sys_str("SELECT tenant_id FROM agents WHERE name = 'secret-pool-agent'");
    char *mine = agent("mine", "{}", 1);
    char *id = submit("{\"command\":\"x\",\"requirements\":{\"os\":\"windows\"}}");
    json_t *w = waiting(admin, id);
    cr_assert_eq(num(w, "agents_considered"), 2, "its own agent and the pool's");
    char *text = json_dumps(w, JSON_COMPACT);
    cr_assert_null(strstr(text, platform), "no other tenant's id");
    cr_assert_null(strstr(text, "secret-pool-agent"), "no pool agent's name");
    free(text);
    json_decref(w);

    /* Another tenant: the job is not found, and its signals show nothing of acme. */
    char *other = th_tenant(&srv, op, "rival", "standard");
    char *rival = th_tenant_token(&srv, op, other, "viewer");
    char path[96];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    json_t *j = NULL;
    cr_assert_eq(send("GET", path, rival, NULL, &j), 404);
    cr_assert_null(json_object_get(j, "waiting"));
    json_decref(j);
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/scaling/signals", rival, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_null(strstr(r.body, tenant));
    cr_assert_null(strstr(r.body, platform));
    cr_assert_null(strstr(r.body, "windows"), "no other tenant's requirement sets");
    json_t *ts = json_object_get(r.json, "tenants");
    cr_assert_eq(json_array_size(ts), 1);
    cr_assert_str_eq(str(json_array_get(ts, 0), "tenant_id"), other);
    th_resp_free(&r);
    /* ...nor may it ask for them. */
    char q[160];
    snprintf(q, sizeof(q), "/api/v1/scaling/signals?tenant_id=%s", tenant);
    cr_assert_eq(send("GET", q, rival, NULL, NULL), 422);
    free(rival);
    free(other);
    free(id);
    free(mine);
    free(platform);
}

/* The tenant's entry of a signals answer. */
static json_t *signals_of(json_t *doc, const char *tid)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(doc, "tenants"), i, t)
    {
        if (strcmp(str(t, "tenant_id"), tid) == 0)
            return t;
    }
    cr_assert_fail("tenant %s not in the signals", tid);
    return NULL;
}

static json_t *queue_of(json_t *t, const char *name)
{
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(t, "queues"), i, q)
    {
        if (strcmp(str(q, "name"), name) == 0)
            return q;
    }
    cr_assert_fail("queue %s not in the signals", name);
    return NULL;
}

Test(wait, signals_count_a_known_set_of_jobs, .init = setup_no_dispatch)
{
    char *a = agent("blue", "{\"team\":\"blue\"}", 2);
    char *q1 = queue("{\"name\":\"builds\",\"max_running\":5}");
    char *q2 = queue("{\"name\":\"held\",\"paused\":true}");
    char *ids[6];
    ids[0] =
        submit("{\"command\":\"x\",\"queue\":\"builds\",\"requirements\":{\"os\":\"windows\"}}");
    ids[1] =
        submit("{\"command\":\"x\",\"queue\":\"builds\",\"requirements\":{\"os\":\"windows\"}}");
    ids[2] = submit("{\"command\":\"x\",\"queue\":\"held\"}");
    for (int i = 3; i < 6; i++)
        ids[i] = submit("{\"command\":\"x\",\"requirements\":{\"team\":\"blue\"}}");
    /* One of the unqueued jobs waits for a retry, another runs on the agent. */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = '%s';"
             "UPDATE jobs SET status = 'running', epoch = 1, attempt = 1,"
             " agent_id = (SELECT id FROM agents WHERE name = 'blue'),"
             " lease_expires_at = now() + interval '1 hour' WHERE id = '%s'",
             ids[5], ids[4]);
    sys_sql(sql);

    json_t *doc = NULL;
    cr_assert_eq(send("GET", "/api/v1/scaling/signals", admin, NULL, &doc), 200);
    char *text = json_dumps(doc, JSON_COMPACT);
    cr_log_info("signals: %s", text);
    free(text);
    cr_assert_eq(json_array_size(json_object_get(doc, "tenants")), 1);
    json_t *t = signals_of(doc, tenant);
    cr_assert_eq(num(t, "running"), 1);
    cr_assert_eq(num(t, "quota"), 25);
    cr_assert_eq(num(t, "queued"), 4);
    cr_assert_eq(num(t, "delayed"), 1);
    json_t *b = queue_of(t, "builds");
    cr_assert_eq(num(b, "queued"), 2);
    cr_assert_eq(num(b, "delayed"), 0);
    cr_assert_eq(num(b, "running"), 0);
    cr_assert_eq(num(b, "max_running"), 5);
    cr_assert(json_is_false(json_object_get(b, "paused")));
    json_t *h = queue_of(t, "held");
    cr_assert_eq(num(h, "queued"), 1);
    cr_assert(json_is_true(json_object_get(h, "paused")));
    cr_assert(json_is_null(json_object_get(h, "max_running")));
    json_t *nq = json_object_get(t, "no_queue");
    cr_assert_eq(num(nq, "queued"), 1);
    cr_assert_eq(num(nq, "delayed"), 1);
    cr_assert_eq(num(nq, "running"), 1);
    /* Sets of eligible jobs outside paused queues, most waiting first. */
    json_t *sets = json_object_get(t, "requirement_sets");
    cr_assert_eq(json_array_size(sets), 2);
    json_t *s0 = json_array_get(sets, 0), *s1 = json_array_get(sets, 1);
    cr_assert_str_eq(str(json_object_get(s0, "requirements"), "os"), "windows");
    cr_assert_eq(num(s0, "waiting"), 2);
    cr_assert_eq(num(s0, "agents_matching"), 0);
    cr_assert_eq(num(s0, "free_slots"), 0);
    cr_assert(num(s0, "oldest_wait_s") >= 0);
    cr_assert_str_eq(str(json_object_get(s1, "requirements"), "team"), "blue");
    cr_assert_eq(num(s1, "waiting"), 1);
    cr_assert_eq(num(s1, "agents_matching"), 1);
    cr_assert_eq(num(s1, "free_slots"), 1);
    cr_assert(json_is_false(json_object_get(t, "requirement_sets_truncated")));
    json_decref(doc);

    /* The operator sees every tenant, by id, and may pick one. */
    char *other = th_tenant(&srv, op, "second", "free");
    cr_assert_eq(send("GET", "/api/v1/scaling/signals", op, NULL, &doc), 200);
    /* (With the pools migration the platform tenant is listed too: it holds no jobs.) */
    cr_assert_geq(json_array_size(json_object_get(doc, "tenants")), 2);
    cr_assert_eq(num(signals_of(doc, tenant), "queued"), 4);
    cr_assert_eq(num(signals_of(doc, other), "queued"), 0);
    json_decref(doc);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/scaling/signals?tenant_id=%s", other);
    cr_assert_eq(send("GET", path, op, NULL, &doc), 200);
    cr_assert_eq(json_array_size(json_object_get(doc, "tenants")), 1);
    json_decref(doc);
    cr_assert_eq(send("GET", "/api/v1/scaling/signals?tenant_id=nope", op, NULL, NULL), 422);
    free(other);
    for (int i = 0; i < 6; i++)
        free(ids[i]);
    free(q2);
    free(q1);
    free(a);
}

/* A 422 naming field. */
static void refused(const char *method, const char *path, const char *tok, const char *body,
                    const char *field)
{
    json_t *j = NULL;
    long st = send(method, path, tok, body, &j);
    cr_assert_eq(st, 422, "%s %s: %ld", method, body, st);
    cr_assert_str_eq(str(j, "field"), field, "%s", body);
    json_decref(j);
}

Test(wait, weight_max_running_and_resource_requirements_in_the_api, .init = setup)
{
    /* Tenant weight: the tier's (standard: 2) until overridden; null restores it. */
    char path[96];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    json_t *j = NULL;
    cr_assert_eq(send("GET", path, op, NULL, &j), 200);
    cr_assert_eq(num(j, "weight"), 2);
    cr_assert(json_is_null(json_object_get(json_object_get(j, "overrides"), "weight")));
    json_decref(j);
    cr_assert_eq(send("PATCH", path, op, "{\"weight\":7}", &j), 200);
    cr_assert_eq(num(j, "weight"), 7);
    cr_assert_eq(num(json_object_get(j, "overrides"), "weight"), 7);
    json_decref(j);
    cr_assert_eq(send("PATCH", path, op, "{\"display_name\":\"Acme\"}", &j), 200);
    cr_assert_eq(num(j, "weight"), 7, "a PATCH without weight keeps it");
    json_decref(j);
    cr_assert_eq(send("PATCH", path, op, "{\"weight\":null}", &j), 200);
    cr_assert_eq(num(j, "weight"), 2);
    json_decref(j);
    refused("PATCH", path, op, "{\"weight\":0}", "weight");
    refused("PATCH", path, op, "{\"weight\":1001}", "weight");
    cr_assert_eq(
        send("POST", "/api/v1/tenants", op,
             "{\"slug\":\"heavy\",\"display_name\":\"H\",\"tier\":\"free\",\"weight\":1000}", &j),
        201);
    cr_assert_eq(num(j, "weight"), 1000);
    json_decref(j);
    cr_assert_eq(send("GET", "/api/v1/tenant", admin, NULL, &j), 200);
    cr_assert_eq(num(j, "weight"), 2, "the tenant reads its own weight");
    json_decref(j);

    /* Queue max_running. */
    cr_assert_eq(send("POST", "/api/v1/queues", admin, "{\"name\":\"q\",\"max_running\":3}", &j),
                 201);
    cr_assert_eq(num(j, "max_running"), 3);
    char qpath[96];
    snprintf(qpath, sizeof(qpath), "/api/v1/queues/%s", str(j, "id"));
    json_decref(j);
    cr_assert_eq(send("PATCH", qpath, admin, "{\"paused\":true}", &j), 200);
    cr_assert_eq(num(j, "max_running"), 3);
    json_decref(j);
    cr_assert_eq(send("PATCH", qpath, admin, "{\"max_running\":100000}", &j), 200);
    cr_assert_eq(num(j, "max_running"), 100000);
    json_decref(j);
    cr_assert_eq(send("PATCH", qpath, admin, "{\"max_running\":null}", &j), 200);
    cr_assert(json_is_null(json_object_get(j, "max_running")));
    json_decref(j);
    refused("PATCH", qpath, admin, "{\"max_running\":0}", "max_running");
    refused("POST", "/api/v1/queues", admin, "{\"name\":\"r\",\"max_running\":100001}",
            "max_running");

    /* Resource requirements: integers of MiB, checked field by field. */
    char *id = submit("{\"command\":\"x\",\"requirements\":{\"min_free_memory_mb\":2048,"
                      "\"min_free_disk_mb\":0,\"os\":\"linux\"}}");
    j = th_job(&srv, admin, id);
    cr_assert_eq(num(json_object_get(j, "requirements"), "min_free_memory_mb"), 2048);
    json_decref(j);
    free(id);
    refused("POST", "/api/v1/jobs", admin,
            "{\"command\":\"x\",\"requirements\":{\"min_free_memory_mb\":\"2048\"}}",
            "requirements.min_free_memory_mb");
    refused("POST", "/api/v1/jobs", admin,
            "{\"command\":\"x\",\"requirements\":{\"min_free_disk_mb\":-1}}",
            "requirements.min_free_disk_mb");
    refused("POST", "/api/v1/jobs", admin,
            "{\"command\":\"x\",\"requirements\":{\"min_free_memory_mb\":2147483649}}",
            "requirements.min_free_memory_mb");
    refused("POST", "/api/v1/jobs", admin, "{\"command\":\"x\",\"requirements\":{\"os\":7}}",
            "requirements.os");
    refused("POST", "/api/v1/jobs/batch", admin,
            "{\"jobs\":[{\"command\":\"x\"},{\"command\":\"x\","
            "\"requirements\":{\"min_free_memory_mb\":1.5}}]}",
            "jobs[1].requirements.min_free_memory_mb");
    refused("POST", "/api/v1/queues", admin,
            "{\"name\":\"r\",\"requirements\":{\"min_free_disk_mb\":\"big\"}}",
            "requirements.min_free_disk_mb");
    refused("PATCH", qpath, admin, "{\"requirements\":{\"bad key\":\"x\"}}",
            "requirements.bad key");
    cr_assert_eq(send("PATCH", qpath, admin, "{\"requirements\":{\"min_free_memory_mb\":512}}", &j),
                 200);
    cr_assert_eq(num(json_object_get(j, "requirements"), "min_free_memory_mb"), 512);
    json_decref(j);
}
