/* Integration tests of the store layer (server/store.c) on the real PostgreSQL, connected
 * as orchd is: tenant transactions as the application role orch_app, system ones as
 * orch_system. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "server/store.h"
#include "tests/integration/harness.h"

static char db[64];
static char tenant_a[ID_STR_LEN], tenant_b[ID_STR_LEN];

static const struct store_stmt q_tenant_insert =
    STORE_STMT("t_tenant_insert",
               "INSERT INTO tenants (id, slug, display_name, tier) VALUES ($1, $2, $2, 'free')", 2);
static const struct store_stmt q_queue_insert = STORE_STMT(
    "t_queue_insert", "INSERT INTO queues (id, tenant_id, name) VALUES ($1, app_tenant(), $2)", 2);
static const struct store_stmt q_queue_count =
    STORE_STMT("t_queue_count", "SELECT count(*) FROM queues", 0);
static const struct store_stmt q_queue_names =
    STORE_STMT("t_queue_names", "SELECT name FROM queues ORDER BY name", 0);
static const struct store_stmt q_job_bad_fk = STORE_STMT(
    "t_job_bad_fk",
    "INSERT INTO jobs (id, tenant_id, queue_id, command) VALUES ($1, app_tenant(), $2, 'true')", 2);
static const struct store_stmt q_queue_bad_priority =
    STORE_STMT("t_queue_bad_priority",
               "INSERT INTO queues (id, tenant_id, name, default_priority) VALUES ($1, "
               "app_tenant(), 'p', 1000)",
               1);
static const struct store_stmt q_settings =
    STORE_STMT("t_settings",
               "SELECT coalesce(current_setting('app.tenant_id', true), ''),"
               " coalesce(current_setting('app.probe', true), ''), pg_backend_pid(), current_user",
               0);
static const struct store_stmt q_set_probe =
    STORE_STMT("t_set_probe", "SELECT set_config('app.probe', 'set', true)", 0);
static const struct store_stmt q_sleep = STORE_STMT("t_sleep", "SELECT pg_sleep(5)", 0);
static const struct store_stmt q_named =
    STORE_STMT("t_named", "SELECT count(*) FROM queues WHERE ($1::text IS NULL OR name = $1)", 1);
static const struct store_stmt q_planned = STORE_STMT_PLANNED(
    "t_planned", "SELECT count(*) FROM queues WHERE ($1::text IS NULL OR name = $1)", 1);
static const struct store_stmt q_prepared_names = STORE_STMT(
    "t_prepared_names",
    "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM pg_prepared_statements"
    " WHERE name IN ('t_named', 't_planned')",
    0);

static struct store *open_store(int pool_size, int64_t statement_timeout_ms)
{
    char *url = th_pg_url("orch_app", db);
    char *system_url = th_pg_url("orch_system", db);
    struct store_options o = {
        .url = url,
        .system_url = system_url,
        .pool_size = pool_size,
        .connect_timeout_ms = 5000,
        .acquire_timeout_ms = 300,
        .statement_timeout_ms = statement_timeout_ms,
        .application_name = "orch-test",
    };
    struct store *s = NULL;
    char err[256] = "";
    int r = store_open(&o, &s, err, sizeof(err));
    free(url);
    free(system_url);
    cr_assert_eq(r, 0, "store_open: %d %s", r, err);
    return s;
}

static void make_tenant(struct store *s, char *id, const char *slug)
{
    cr_assert_eq(id_uuid7_str(id), 0);
    const char *p[] = {id, slug};
    cr_assert_eq(store_exec_once(s, NULL, &q_tenant_insert, p, NULL), 1);
}

static void add_queue(struct store *s, const char *tenant, const char *name)
{
    char qid[ID_STR_LEN];
    id_uuid7_str(qid);
    const char *p[] = {qid, name};
    cr_assert_eq(store_exec_once(s, tenant, &q_queue_insert, p, NULL), 1);
}

static long count_queues(struct store *s, const char *tenant)
{
    PGresult *res = NULL;
    cr_assert_eq(store_exec_once(s, tenant, &q_queue_count, NULL, &res), 1);
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static void setup(void)
{
    th_db_create_migrated(db, sizeof(db));
}

static void teardown(void)
{
    th_db_drop(db);
}

TestSuite(store, .init = setup, .fini = teardown);

Test(store, wrong_password_fails_at_open_with_reason)
{
    char url[256];
    snprintf(url, sizeof(url), "postgresql://orch_app:wrong@127.0.0.1:%s/nosuchdb",
             th_env("ORCH_PG_PORT"));
    struct store_options o = {.url = url, .pool_size = 1};
    struct store *s = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&o, &s, err, sizeof(err)), -ECONNREFUSED);
    cr_assert_null(s);
    cr_assert(strstr(err, "nosuchdb"), "err: %s", err);
    cr_assert_null(strstr(err, "wrong"), "the password must not appear: %s", err);
}

Test(store, tenant_transactions_see_only_their_rows)
{
    struct store *s = open_store(2, 0);
    make_tenant(s, tenant_a, "tenant-a");
    make_tenant(s, tenant_b, "tenant-b");
    add_queue(s, tenant_a, "a1");
    add_queue(s, tenant_a, "a2");
    add_queue(s, tenant_b, "b1");

    cr_assert_eq(count_queues(s, tenant_a), 2);
    cr_assert_eq(count_queues(s, tenant_b), 1);
    cr_assert_eq(count_queues(s, NULL), 3, "the system scope sees every tenant");

    PGresult *res = NULL;
    cr_assert_eq(store_exec_once(s, tenant_b, &q_queue_names, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "b1");
    PQclear(res);
    store_close(s);
}

Test(store, scope_ends_with_the_transaction)
{
    /* One connection: whatever one transaction declared must be gone in the next. */
    struct store *s = open_store(1, 0);
    make_tenant(s, tenant_a, "tenant-a");
    make_tenant(s, tenant_b, "tenant-b");

    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_set_probe, NULL, NULL), 1);
    cr_assert_eq(store_tx_exec(tx, &q_settings, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), tenant_a);
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "set");
    char pid[32];
    snprintf(pid, sizeof(pid), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);

    /* The next transaction, on the same backend, declared B and nothing else. */
    cr_assert_eq(store_tx_begin_tenant(s, tenant_b, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_settings, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), tenant_b);
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "", "a setting leaked into the next transaction");
    cr_assert_str_eq(PQgetvalue(res, 0, 2), pid, "expected the same pooled connection");
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    store_close(s);
}

/* A statement of optional filters is planned with its values at every call, never
 * prepared: a generic plan, which PostgreSQL adopts after five calls of a prepared one,
 * could use none of its filters. */
Test(store, a_planned_statement_is_never_prepared)
{
    struct store *s = open_store(1, 0);
    make_tenant(s, tenant_a, "tenant-a");
    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), 0);
    const char *none[] = {NULL}, *one[] = {"q1"};
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(store_tx_exec(tx, &q_planned, i % 2 ? one : none, &res), 1);
        cr_assert_str_eq(PQgetvalue(res, 0, 0), "0");
        PQclear(res);
        cr_assert_eq(store_tx_exec(tx, &q_named, none, NULL), 1);
    }
    cr_assert_eq(store_tx_exec(tx, &q_prepared_names, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "t_named", "prepared on the connection: %s",
                     PQgetvalue(res, 0, 0));
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    store_close(s);
}

Test(store, system_scope_has_its_own_role_and_pool)
{
    /* One connection per pool: a tenant transaction holding the tenant pool's only
     * connection does not stop a system one, which runs as orch_system. */
    struct store *s = open_store(1, 0);
    id_uuid7_str(tenant_a);
    struct store_tx *held = NULL, *tx = NULL;
    PGresult *res = NULL;
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &held), 0);
    cr_assert_eq(store_tx_exec(held, &q_settings, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 3), "orch_app");
    PQclear(res);
    res = NULL;
    cr_assert_eq(store_tx_begin_system(s, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_settings, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "", "the system scope declares no tenant");
    cr_assert_str_eq(PQgetvalue(res, 0, 3), "orch_system");
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    cr_assert_eq(store_tx_commit(held), 0);
    store_close(s);

    /* Without a system connection there is no system scope at all, rather than a weaker one. */
    char *url = th_pg_url("orch_app", db);
    struct store_options o = {.url = url, .pool_size = 1};
    char err[256] = "";
    cr_assert_eq(store_open(&o, &s, err, sizeof(err)), 0, "%s", err);
    free(url);
    tx = NULL;
    cr_assert_eq(store_tx_begin_system(s, &tx), -EPERM);
    cr_assert_null(tx);
    cr_assert_eq(store_exec_once(s, NULL, &q_queue_count, NULL, NULL), -EPERM);
    store_close(s);
}

/* Open a store with these roles; returns store_open()'s result with err filled. */
static int open_roles(const char *role, const char *system_role, char *err, size_t errlen)
{
    char *url = th_pg_url(role, db);
    char *system_url = system_role ? th_pg_url(system_role, db) : NULL;
    struct store_options o = {.url = url, .system_url = system_url, .pool_size = 1};
    struct store *s = NULL;
    int r = store_open(&o, &s, err, errlen);
    free(url);
    free(system_url);
    if (r < 0)
        cr_assert_null(s);
    store_close(s);
    return r;
}

Test(store, role_that_does_not_fit_its_pool_is_refused_at_open)
{
    char err[512] = "";
    cr_assert_eq(open_roles("orch_app", "orch_system", err, sizeof(err)), 0, "%s", err);

    /* A tenant pool that would see every tenant. */
    cr_assert_eq(open_roles("orch_system", "orch_system", err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "tenant connection's role orch_system is a member of orch_system"),
              "err: %s", err);
    cr_assert_eq(open_roles("postgres", NULL, err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "superuser or has BYPASSRLS"), "err: %s", err);
    /* A system pool that would see nothing, or more than RLS allows. */
    cr_assert_eq(open_roles("orch_app", "orch_app", err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "system connection's role orch_app is not a member of orch_system"),
              "err: %s", err);
    cr_assert_eq(open_roles("orch_app", "postgres", err, sizeof(err)), -EPERM);
    cr_assert(strstr(err, "system connection's role postgres is a superuser"), "err: %s", err);
}

Test(store, invalid_tenant_id_refused_before_sql)
{
    struct store *s = open_store(1, 0);
    struct store_tx *tx = NULL;
    cr_assert_eq(store_tx_begin_tenant(s, "x'); SELECT 1; --", &tx), -EINVAL);
    cr_assert_eq(store_tx_begin_tenant(s, "", &tx), -EINVAL);
    cr_assert_eq(store_tx_begin_tenant(s, NULL, &tx), -EINVAL);
    cr_assert_null(tx);
    store_close(s);
}

Test(store, errors_translate_and_roll_back)
{
    struct store *s = open_store(1, 0);
    make_tenant(s, tenant_a, "tenant-a");
    add_queue(s, tenant_a, "dup");

    /* Unique violation: -EEXIST; the transaction is failed, and its earlier insert gone. */
    struct store_tx *tx = NULL;
    char q1[ID_STR_LEN], q2[ID_STR_LEN];
    id_uuid7_str(q1);
    id_uuid7_str(q2);
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), 0);
    const char *p1[] = {q1, "fresh"};
    cr_assert_eq(store_tx_exec(tx, &q_queue_insert, p1, NULL), 1);
    const char *p2[] = {q2, "dup"};
    cr_assert_eq(store_tx_exec(tx, &q_queue_insert, p2, NULL), -EEXIST);
    cr_assert_str_eq(store_tx_sqlstate(tx), "23505");
    cr_assert_eq(store_tx_exec(tx, &q_queue_count, NULL, NULL), -EEXIST,
                 "a failed transaction stays failed");
    cr_assert_eq(store_tx_commit(tx), -EEXIST);
    cr_assert_eq(count_queues(s, tenant_a), 1, "the rolled-back insert must not persist");

    /* Foreign key: -ENOENT. Check constraint: -EINVAL. */
    char job[ID_STR_LEN], missing[ID_STR_LEN];
    id_uuid7_str(job);
    id_uuid7_str(missing);
    const char *p3[] = {job, missing};
    cr_assert_eq(store_exec_once(s, tenant_a, &q_job_bad_fk, p3, NULL), -ENOENT);
    const char *p4[] = {q2};
    cr_assert_eq(store_exec_once(s, tenant_a, &q_queue_bad_priority, p4, NULL), -EINVAL);
    /* A bad UUID parameter is data the server refuses: -EINVAL. */
    const char *p5[] = {"not-a-uuid", "q"};
    cr_assert_eq(store_exec_once(s, tenant_a, &q_queue_insert, p5, NULL), -EINVAL);

    /* The pool is still healthy. */
    cr_assert_eq(count_queues(s, tenant_a), 1);
    store_close(s);
}

Test(store, statement_timeout_is_etimedout)
{
    struct store *s = open_store(1, 100);
    cr_assert_eq(store_exec_once(s, NULL, &q_sleep, NULL, NULL), -ETIMEDOUT);
    cr_assert_eq(count_queues(s, NULL), 0, "the connection is reusable afterwards");
    store_close(s);
}

Test(store, exhausted_pool_times_out)
{
    struct store *s = open_store(1, 0);
    struct store_tx *held = NULL, *tx = NULL;
    id_uuid7_str(tenant_a);
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &held), 0);
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), -ETIMEDOUT);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.size, 1);
    cr_assert_eq(st.idle, 0);
    cr_assert_eq(store_tx_commit(held), 0);
    cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), 0, "free again once released");
    store_tx_rollback(tx);
    store_close(s);
}

/* Terminate the backends with these pids and wait (bounded) until they are gone. */
static void kill_backends(const char *const *pids, size_t n)
{
    PGconn *super = th_pg_connect("postgres", db);
    char sql[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%s)", pids[i]);
        PQclear(th_pg_ok(super, sql));
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pids[i]);
        for (int tries = 0; th_pg_long(super, sql) != 0; tries++) {
            cr_assert_lt(tries, 1000, "backend %s still alive", pids[i]);
            PQclear(th_pg_ok(super, "SELECT pg_sleep(0.01)"));
        }
    }
    PQfinish(super);
}

/* The pid of the backend a transaction of tenant (NULL: system) runs on. */
static void backend_pid(struct store *s, const char *tenant, char *pid, size_t len)
{
    PGresult *res = NULL;
    cr_assert_eq(store_exec_once(s, tenant, &q_settings, NULL, &res), 1);
    snprintf(pid, len, "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
}

Test(store, reconnects_after_backend_killed)
{
    /* A connection that died while idle in the pool (a restart, an administrator's kill) is
     * found out at BEGIN, before anything ran, and replaced: no transaction fails for it. */
    struct store *s = open_store(1, 0);
    id_uuid7_str(tenant_a);
    char pid[32];
    backend_pid(s, tenant_a, pid, sizeof(pid));
    const char *pids[] = {pid};
    kill_backends(pids, 1);

    cr_assert_eq(store_exec_once(s, tenant_a, &q_queue_count, NULL, NULL), 1);
    cr_assert_eq(store_exec_once(s, tenant_a, &q_queue_count, NULL, NULL), 1);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_geq(st.reconnects, 1);
    store_close(s);
}

Test(store, ping_reaches_both_pools_after_their_backends_died)
{
    struct store *s = open_store(1, 0);
    id_uuid7_str(tenant_a);
    char tenant_pid[32], system_pid[32];
    backend_pid(s, tenant_a, tenant_pid, sizeof(tenant_pid));
    backend_pid(s, NULL, system_pid, sizeof(system_pid));
    cr_assert_str_neq(tenant_pid, system_pid, "one connection per pool");
    cr_assert_eq(store_ping(s), 0);
    const char *pids[] = {tenant_pid, system_pid};
    kill_backends(pids, 2);

    cr_assert_eq(store_ping(s), 0, "the database is up: ready at the first probe");
    cr_assert_eq(count_queues(s, tenant_a), 0);
    cr_assert_eq(count_queues(s, NULL), 0);
    store_close(s);
}

struct worker {
    struct store *s;
    const char *tenant;
    int ok;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100; i++) {
        char qid[ID_STR_LEN], name[32];
        id_uuid7_str(qid);
        snprintf(name, sizeof(name), "q-%d", i);
        const char *p[] = {qid, name};
        if (store_exec_once(w->s, w->tenant, &q_queue_insert, p, NULL) == 1)
            w->ok++;
    }
    return NULL;
}

Test(store, concurrent_threads_share_the_pool)
{
    /* Acquire waits up to 300 ms; eight threads on four connections stay well inside. */
    struct store *s = open_store(4, 0);
    char tenants[8][ID_STR_LEN];
    struct worker w[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        char slug[16];
        snprintf(slug, sizeof(slug), "t%d", i);
        make_tenant(s, tenants[i], slug);
        w[i] = (struct worker){.s = s, .tenant = tenants[i]};
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].ok, 100, "thread %d: %d of 100", i, w[i].ok);
        cr_assert_eq(count_queues(s, tenants[i]), 100);
    }
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_leq(st.size, 4);
    store_close(s);
}

static const struct store_stmt q_quota_agents =
    STORE_STMT("t_quota_agents", "SELECT quota_acquire('agents')", 0);
static const struct store_stmt q_agent_insert = STORE_STMT(
    "t_agent_insert", "INSERT INTO agents (id, tenant_id, name) VALUES ($1, app_tenant(), $2)", 2);

Test(store, agent_quota_refused_by_database)
{
    /* The free tier allows two agents: the third creation, checked the way enrolment does
     * (quota_acquire in the same transaction as the insert), is refused with the numbers. */
    struct store *s = open_store(2, 0);
    make_tenant(s, tenant_a, "tenant-a");
    for (int i = 0; i < 3; i++) {
        char id[ID_STR_LEN], name[24];
        id_uuid7_str(id);
        snprintf(name, sizeof(name), "agent-%d", i);
        const char *p[] = {id, name};
        struct store_tx *tx = NULL;
        cr_assert_eq(store_tx_begin_tenant(s, tenant_a, &tx), 0);
        int r = store_tx_exec(tx, &q_quota_agents, NULL, NULL);
        if (r >= 0)
            r = store_tx_exec(tx, &q_agent_insert, p, NULL);
        if (i < 2) {
            cr_assert_eq(r, 1, "agent %d: %d %s", i, r, store_tx_errmsg(tx));
            cr_assert_eq(store_tx_commit(tx), 0);
        } else {
            cr_assert_eq(r, -EDQUOT, "agent %d: %d %s", i, r, store_tx_errmsg(tx));
            cr_assert_str_eq(store_tx_sqlstate(tx), "OQ001");
            cr_assert(strstr(store_tx_errdetail(tx), "\"quota\" : \"agents\""), "%s",
                      store_tx_errdetail(tx));
            cr_assert(strstr(store_tx_errdetail(tx), "\"limit\" : 2"), "%s",
                      store_tx_errdetail(tx));
            cr_assert_eq(store_tx_commit(tx), -EDQUOT);
        }
    }
    /* Without a tenant in scope the function refuses to count anything. */
    struct store_tx *tx = NULL;
    cr_assert_eq(store_tx_begin_system(s, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_quota_agents, NULL, NULL), -EACCES);
    store_tx_rollback(tx);
    store_close(s);
}

static const struct store_stmt q_sync =
    STORE_STMT("t_sync", "SELECT current_setting('synchronous_commit')", 0);

Test(store, async_commit_is_per_transaction)
{
    struct store *s = open_store(1, 0);
    make_tenant(s, tenant_a, "tenant-a");
    struct store_tx *tx = NULL;
    PGresult *res = NULL;
    cr_assert_eq(store_tx_begin(s, tenant_a, STORE_TX_ASYNC_COMMIT, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_sync, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "off");
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    /* The same connection, next transaction: back to the durable default. */
    cr_assert_eq(store_tx_begin(s, tenant_a, 0, &tx), 0);
    cr_assert_eq(store_tx_exec(tx, &q_sync, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "on");
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    store_close(s);
}

/* store_read_once(): one round trip, the same scope and errors as store_exec_once(). */
Test(store, read_once_reads_in_scope_refuses_writes_and_survives_errors)
{
    struct store *s = open_store(1, 0);
    make_tenant(s, tenant_a, "read-a");
    make_tenant(s, tenant_b, "read-b");
    add_queue(s, tenant_a, "a1");
    add_queue(s, tenant_a, "a2");
    add_queue(s, tenant_b, "b1");

    PGresult *res = NULL;
    cr_assert_eq(store_read_once(s, tenant_a, &q_queue_names, NULL, &res), 2);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "a1");
    cr_assert_str_eq(PQgetvalue(res, 1, 0), "a2");
    PQclear(res);
    res = NULL;
    cr_assert_eq(store_read_once(s, tenant_b, &q_queue_names, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "b1");
    PQclear(res);
    res = NULL;
    cr_assert_eq(store_read_once(s, NULL, &q_queue_count, NULL, &res), 1, "system scope");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "3");
    PQclear(res);

    /* The scope ends with it: the pooled connection carries nothing into the next one. */
    res = NULL;
    cr_assert_eq(store_exec_once(s, NULL, &q_settings, NULL, &res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "");
    PQclear(res);

    /* A write is refused, and nothing of it is left: not the row, not an open transaction. */
    char qid[ID_STR_LEN];
    id_uuid7_str(qid);
    const char *p[] = {qid, "w"};
    cr_assert_eq(store_read_once(s, tenant_a, &q_queue_insert, p, NULL), -EIO);
    cr_assert_eq(count_queues(s, tenant_a), 2);
    /* A failing statement (a type error at run time), then a good one on the same
     * connection (the pool holds one). */
    static const struct store_stmt q_bad_cast =
        STORE_STMT("t_bad_cast", "SELECT 'x'::int FROM queues", 0);
    cr_assert_lt(store_read_once(s, tenant_a, &q_bad_cast, NULL, NULL), 0);
    cr_assert_eq(store_read_once(s, tenant_a, &q_queue_count, NULL, NULL), 1);
    cr_assert_eq(store_read_once(s, "not-a-uuid", &q_queue_count, NULL, NULL), -EINVAL);

    /* A connection that died while idle is replaced; the read does not fail for it. */
    char pid[32];
    backend_pid(s, tenant_a, pid, sizeof(pid));
    const char *pids[] = {pid};
    kill_backends(pids, 1);
    res = NULL;
    cr_assert_eq(store_read_once(s, tenant_a, &q_queue_names, NULL, &res), 2);
    PQclear(res);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_geq(st.reconnects, 1);
    store_close(s);
}
