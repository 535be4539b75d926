/* test-apicache.c: what two orchd nodes on one database remember of API keys and tenants
 * (server/authcache.h) and how they count the daily API call quota in blocks, on the real
 * PostgreSQL and RabbitMQ. Every wait is bounded, and the bound is the assertion. */
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
    int dead = free_port();
    char amqp[128];
    snprintf(amqp, sizeof(amqp), "ORCHD_AMQP_URL=amqp://guest:guest@127.0.0.1:%d/", dead);
    const char *env[] = {"ORCHD_AUTH_CACHE_TTL=1s", amqp, NULL};
    struct th_server peer;
    th_server_start_peer_env(&peer, &srv, env);
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
