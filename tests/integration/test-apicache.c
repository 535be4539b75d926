/* test-apicache.c: what two orchd nodes on one database remember of API keys, tenants
 * (server/authcache.h) and agent credentials (server/agentcache.h), and how they count the
 * daily API call quota in blocks, on the real PostgreSQL and RabbitMQ. Every wait is
 * bounded, and the bound is the assertion. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op; /* operator access token */

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
}

static void teardown(void)
{
    free(op);
    op = NULL;
    th_server_stop(&srv);
}

TestSuite(apicache, .init = setup, .fini = teardown, .timeout = 240);

static long status_on(struct th_server *s, const char *method, const char *path, const char *token,
                      const char *body)
{
    struct th_resp r;
    th_http(s, method, path, token, body, NULL, &r);
    long st = r.status;
    th_resp_free(&r);
    return st;
}

/* Create an API key of role for tenant: its access token (malloc'd) and its id. */
static char *key_token(const char *tenant, const char *role, char id[64])
{
    char path[128], body[96];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s/api-keys", tenant);
    snprintf(body, sizeof(body), "{\"name\":\"k-%s\",\"role\":\"%s\"}", role, role);
    struct th_resp r;
    th_http(&srv, "POST", path, op, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    snprintf(id, 64, "%s", th_str_of(&r, "id"));
    char *t = th_token(&srv, th_str_of(&r, "key"));
    th_resp_free(&r);
    return t;
}

/* A loopback port nothing listens on (bound, read, closed). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Start a second node on srv's database whose bus is a port nothing listens on, with one
 * more "K=V" setting (a cache's TTL). */
static void start_peer_without_bus(struct th_server *peer, const char *setting)
{
    char amqp[128];
    snprintf(amqp, sizeof(amqp), "ORCHD_AMQP_URL=amqp://guest:guest@127.0.0.1:%d/", free_port());
    const char *env[] = {setting, amqp, NULL};
    th_server_start_peer_env(peer, &srv, env);
}

/* Wait until the node's log says its auth.invalidate listener is bound (bounded). */
static void wait_listening(const struct th_server *s)
{
    uint64_t deadline = clock_mono_ns() + 15ull * 1000000000ull;
    while (th_log_count(s, "op=auth.bus state=listening") == 0) {
        cr_assert(clock_mono_ns() < deadline, "the node's auth listener did not start in 15 s");
        usleep(20000);
    }
}

/* Send GET /api/v1/queues to s with token until it answers want, for at most bound_ms;
 * returns the milliseconds it took, or fails the test. */
static int64_t refused_within(struct th_server *s, const char *token, long want, int64_t bound_ms)
{
    uint64_t t0 = clock_mono_ns();
    for (;;) {
        long st = status_on(s, "GET", "/api/v1/queues", token, NULL);
        int64_t ms = (int64_t)((clock_mono_ns() - t0) / 1000000u);
        if (st == want)
            return ms;
        /* 429: the tier's request rate, which this loop soon reaches: not an answer. */
        cr_assert(st == 200 || st == 429, "unexpected status %ld", st);
        cr_assert_leq(ms, bound_ms, "node still answers 200 after %lld ms (bound %lld ms)",
                      (long long)ms, (long long)bound_ms);
    }
}

/* Node B trusts its cache for a minute: only the bus can make it refuse at once. */
Test(apicache, revocation_and_suspension_reach_the_other_node_over_the_bus)
{
    const char *env[] = {"ORCHD_AUTH_CACHE_TTL=60s", NULL};
    struct th_server peer;
    th_server_start_peer_env(&peer, &srv, env);
    wait_listening(&srv);
    wait_listening(&peer);
    char *tenant = th_tenant(&srv, op, "bus-revoke", "standard");
    char admin_id[64], viewer_id[64];
    char *admin = key_token(tenant, "admin", admin_id);
    char *viewer = key_token(tenant, "viewer", viewer_id);
    /* Node B has both keys in its cache now. */
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", viewer, NULL), 200);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", admin, NULL), 200);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/api-keys/%s", viewer_id);
    cr_assert_eq(status_on(&srv, "DELETE", path, admin, NULL), 204);
    int64_t ms = refused_within(&peer, viewer, 401, 2000);
    cr_log_info("revoked key refused by node B after %lld ms", (long long)ms);
    /* The other key of the tenant is still good there. */
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", admin, NULL), 200);

    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_on(&srv, "PATCH", path, op, "{\"status\":\"suspended\"}"), 200);
    ms = refused_within(&peer, admin, 403, 2000);
    cr_log_info("suspended tenant refused by node B after %lld ms", (long long)ms);
    /* Active again: admitted again at once. */
    cr_assert_eq(status_on(&srv, "PATCH", path, op, "{\"status\":\"active\"}"), 200);
    uint64_t t0 = clock_mono_ns();
    while (status_on(&peer, "GET", "/api/v1/queues", admin, NULL) != 200)
        cr_assert(clock_mono_ns() - t0 < 2000000000ull, "not admitted again within 2 s");

    th_server_stop_peer(&peer);
    free(admin);
    free(viewer);
    free(tenant);
}

/* Node B cannot reach RabbitMQ: it still refuses within auth.cache_ttl (1 s here) of the
 * change, since its entries expire. */
Test(apicache, without_the_bus_the_other_node_refuses_within_the_cache_ttl)
{
    struct th_server peer;
    start_peer_without_bus(&peer, "ORCHD_AUTH_CACHE_TTL=1s");
    char *tenant = th_tenant(&srv, op, "nobus-revoke", "standard");
    char admin_id[64], viewer_id[64];
    char *admin = key_token(tenant, "admin", admin_id);
    char *viewer = key_token(tenant, "viewer", viewer_id);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", viewer, NULL), 200);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", admin, NULL), 200);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/api-keys/%s", viewer_id);
    cr_assert_eq(status_on(&srv, "DELETE", path, admin, NULL), 204);
    /* The bound: the TTL, and a request's time on a loaded box. */
    int64_t ms = refused_within(&peer, viewer, 401, 1000 + 500);
    cr_log_info("revoked key refused by node B (no bus) after %lld ms", (long long)ms);

    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_on(&srv, "PATCH", path, op, "{\"status\":\"suspended\"}"), 200);
    ms = refused_within(&peer, admin, 403, 1000 + 500);
    cr_log_info("suspended tenant refused by node B (no bus) after %lld ms", (long long)ms);

    th_server_stop_peer(&peer);
    free(admin);
    free(viewer);
    free(tenant);
}

/* --- agent credentials (server/agentcache.h) ------------------------------------------- */

/* GET /api/v1/agent on s with an agent credential until it answers want, for at most
 * bound_ms; returns the milliseconds it took, or fails the test. */
static int64_t agent_answers_within(struct th_server *s, const char *cred, long want,
                                    int64_t bound_ms)
{
    uint64_t t0 = clock_mono_ns();
    for (;;) {
        long st = status_on(s, "GET", "/api/v1/agent", cred, NULL);
        int64_t ms = (int64_t)((clock_mono_ns() - t0) / 1000000u);
        if (st == want)
            return ms;
        cr_assert(st == 200 || st == 401, "unexpected status %ld", st);
        cr_assert_leq(ms, bound_ms, "node still answers %ld after %lld ms (bound %lld ms)", st,
                      (long long)ms, (long long)bound_ms);
    }
}

/* The agent's id, asked of s with its credential. */
static void agent_id_of(struct th_server *s, const char *cred, char id[64])
{
    struct th_resp r;
    th_http(s, "GET", "/api/v1/agent", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    snprintf(id, 64, "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
}

/* orch_agent_auth_total{source="<source>"} on the metrics listener at port. */
static double agent_auths(const struct th_server *s, int port, const char *source)
{
    struct th_server m = *s;
    snprintf(m.base, sizeof(m.base), "http://127.0.0.1:%d", port);
    struct th_resp r;
    th_http(&m, "GET", "/metrics", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char name[96];
    snprintf(name, sizeof(name), "orch_agent_auth_total{source=\"%s\"} ", source);
    const char *l = strstr(r.body, name);
    double v = l ? strtod(l + strlen(name), NULL) : 0;
    th_resp_free(&r);
    return v;
}

static char *agent_rotate(struct th_server *s, const char *cred)
{
    struct th_resp r;
    th_http(s, "POST", "/api/v1/agent/rotate-credential", cred, "{}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *c = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    return c;
}

/* Node B remembers agent credentials for ten minutes: its agents' requests cost it no
 * query, and only the bus can make it refuse at once. */
Test(apicache, agent_credentials_are_remembered_and_changes_reach_the_other_node_over_the_bus)
{
    const char *env[] = {"ORCHD_AUTH_AGENT_CACHE_TTL=10m", "ORCHD_METRICS_PORT=0",
                         "ORCHD_METRICS_ADDRESS=127.0.0.1", NULL};
    struct th_server peer;
    th_server_start_peer_env(&peer, &srv, env);
    int mport = th_metrics_port(&peer);
    cr_assert(mport > 0, "no metrics_port in the ready line of %s", peer.log);
    wait_listening(&srv);
    wait_listening(&peer);
    char *tenant = th_tenant(&srv, op, "bus-agents", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    char *revoked = th_agent_register(&srv, admin, "revoked");
    char *disabled = th_agent_register(&srv, admin, "disabled");
    char *rotated = th_agent_register(&srv, admin, "rotated");
    char revoked_id[64], disabled_id[64];
    agent_id_of(&peer, revoked, revoked_id);
    agent_id_of(&peer, disabled, disabled_id);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", rotated, NULL), 200);

    /* Remembered: ten more requests, ten more admitted from the cache. */
    double cached = agent_auths(&peer, mport, "cache");
    for (int i = 0; i < 10; i++)
        cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", revoked, NULL), 200);
    cr_assert_geq(agent_auths(&peer, mport, "cache") - cached, 10);
    /* A wrong secret under a remembered prefix is still refused. */
    char *forged = strdup(revoked);
    size_t n = strlen(forged);
    forged[n - 1] = forged[n - 1] == 'A' ? 'B' : 'A';
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", forged, NULL), 401);
    free(forged);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agents/%s/revoke-credential", revoked_id);
    cr_assert_eq(status_on(&srv, "POST", path, admin, NULL), 200);
    int64_t ms = agent_answers_within(&peer, revoked, 401, 2000);
    cr_log_info("revoked agent credential refused by node B after %lld ms", (long long)ms);

    snprintf(path, sizeof(path), "/api/v1/agents/%s/disable", disabled_id);
    cr_assert_eq(status_on(&srv, "POST", path, admin, NULL), 200);
    ms = agent_answers_within(&peer, disabled, 401, 2000);
    cr_log_info("disabled agent refused by node B after %lld ms", (long long)ms);
    snprintf(path, sizeof(path), "/api/v1/agents/%s/enable", disabled_id);
    cr_assert_eq(status_on(&srv, "POST", path, admin, NULL), 200);
    agent_answers_within(&peer, disabled, 200, 2000);

    /* Rotated once, the old credential keeps its grace period; rotated again, the first
     * one is neither current nor previous and is refused at once. */
    char *second = agent_rotate(&srv, rotated);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", rotated, NULL), 200);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", second, NULL), 200);
    char *third = agent_rotate(&srv, second);
    ms = agent_answers_within(&peer, rotated, 401, 2000);
    cr_log_info("credential rotated out twice refused by node B after %lld ms", (long long)ms);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", second, NULL), 200);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", third, NULL), 200);

    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_on(&srv, "PATCH", path, op, "{\"status\":\"suspended\"}"), 200);
    ms = agent_answers_within(&peer, third, 401, 2000);
    cr_log_info("agent of a suspended tenant refused by node B after %lld ms", (long long)ms);

    th_server_stop_peer(&peer);
    free(revoked);
    free(disabled);
    free(rotated);
    free(second);
    free(third);
    free(admin);
    free(tenant);
}

/* Node B cannot reach RabbitMQ: it still refuses a revoked agent credential within
 * auth.agent_cache_ttl (1 s here), since its entries expire. */
Test(apicache, without_the_bus_the_other_node_refuses_an_agent_within_its_cache_ttl)
{
    struct th_server peer;
    start_peer_without_bus(&peer, "ORCHD_AUTH_AGENT_CACHE_TTL=1s");
    char *tenant = th_tenant(&srv, op, "nobus-agents", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    char *cred = th_agent_register(&srv, admin, "a");
    char *other = th_agent_register(&srv, admin, "b");
    char id[64];
    agent_id_of(&peer, cred, id);
    cr_assert_eq(status_on(&peer, "GET", "/api/v1/agent", other, NULL), 200);

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agents/%s/revoke-credential", id);
    cr_assert_eq(status_on(&srv, "POST", path, admin, NULL), 200);
    /* The bound: the TTL, and a request's time on a loaded box. */
    int64_t ms = agent_answers_within(&peer, cred, 401, 1000 + 500);
    cr_log_info("revoked agent credential refused by node B (no bus) after %lld ms", (long long)ms);

    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    cr_assert_eq(status_on(&srv, "PATCH", path, op, "{\"status\":\"suspended\"}"), 200);
    ms = agent_answers_within(&peer, other, 401, 1000 + 500);
    cr_log_info("agent of a suspended tenant refused by node B (no bus) after %lld ms",
                (long long)ms);

    th_server_stop_peer(&peer);
    free(cred);
    free(other);
    free(admin);
    free(tenant);
}

static long usage_of(const char *tenant)
{
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(sum(api_calls), 0) FROM usage_counters WHERE tenant_id = '%s'",
             tenant);
    long n = th_pg_long(pg, sql);
    PQfinish(pg);
    return n;
}

/* Requests spread over two nodes, each counting from blocks it reserved: the tenant gets
 * exactly its quota, never more, and the count in PostgreSQL says so. */
Test(apicache, the_daily_quota_counted_in_blocks_is_exact_across_two_nodes)
{
    struct th_server peer;
    th_server_start_peer(&peer, &srv);
    char *tenant = th_tenant(&srv, op, "blocks", "standard");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    const long quota = 60;
    cr_assert_eq(status_on(&srv, "PATCH", path, op,
                           "{\"quotas\":{\"api_calls_per_day\":60,\"rate_per_second\":100000,"
                           "\"rate_burst\":100000}}"),
                 200);
    char id[64];
    char *t = key_token(tenant, "viewer", id);
    long admitted = 0;
    bool refused[2] = {false, false};
    /* Node A takes 3 calls for each of node B's, so that both hold unused calls at times. */
    for (int i = 0; i < 400 && !(refused[0] && refused[1]); i++) {
        int node = i % 4 == 3 ? 1 : 0;
        if (refused[node])
            node = !node;
        long st = status_on(node ? &peer : &srv, "GET", "/api/v1/queues", t, NULL);
        if (st == 200) {
            admitted++;
            refused[0] = refused[1] = false;
        } else {
            cr_assert_eq(st, 429, "status %ld", st);
            refused[node] = true;
        }
        cr_assert_leq(admitted, quota, "node %d admitted call %ld of a quota of %ld", node,
                      admitted, quota);
    }
    cr_assert(refused[0] && refused[1]);
    cr_assert_eq(admitted, quota, "admitted %ld of %ld", admitted, quota);
    cr_assert_eq(usage_of(tenant), quota);
    th_server_stop_peer(&peer);
    free(t);
    free(tenant);
}

/* A node that stops gives the unused calls of its block back. */
Test(apicache, a_stopping_node_gives_its_unused_calls_back)
{
    struct th_server peer;
    th_server_start_peer(&peer, &srv);
    char *tenant = th_tenant(&srv, op, "giveback", "standard");
    char id[64];
    char *t = key_token(tenant, "viewer", id);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(status_on(&peer, "GET", "/api/v1/queues", t, NULL), 200);
    long reserved = usage_of(tenant);
    cr_assert_gt(reserved, 3, "node B reserved a block, not call by call (%ld)", reserved);
    th_server_stop_peer(&peer);
    cr_assert_eq(usage_of(tenant), 3);
    free(t);
    free(tenant);
}
