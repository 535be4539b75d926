/* assign_batch() (sql/functions/70_placement.sql) on the real PostgreSQL, called as the
 * dispatchers call it (role orch_system): every outcome, the counts applied in proposal
 * order within one batch, a job proposed twice, the rows it writes, and a batch that
 * meets a job locked elsewhere. The rows are made with SQL as the database's owner. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "tests/integration/harness.h"

static char db[64];
static PGconn *owner, *sys;

static void setup(void)
{
    th_db_create_migrated(db, sizeof(db));
    owner = th_pg_connect("postgres", db);
    sys = th_pg_connect("orch_system", db);
}

static void teardown(void)
{
    PQfinish(sys);
    PQfinish(owner);
    th_db_drop(db);
}

TestSuite(assign, .init = setup, .fini = teardown, .timeout = 60);

/* The SQL of fmt run on pg (it must succeed). */
__attribute__((format(printf, 2, 3))) static PGresult *sqlf(PGconn *pg, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return th_pg_ok(pg, sql);
}

/* The first value of its result, as a number. */
static long value_of(PGresult *res)
{
    long v = PQntuples(res) > 0 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    return v;
}

/* Ids are fixed text so the assertions can name them: tenants 'a' and 'b' (free tier),
 * ids as UUIDs built from a letter and a number. */
#define T_A "00000000-0000-4000-8000-0000000000a1"
#define T_B "00000000-0000-4000-8000-0000000000b1"

static void id_of(char *out, size_t len, char kind, int n)
{
    snprintf(out, len, "00000000-0000-4000-8000-%c%011d", kind, n);
}

static void tenant(const char *id, const char *slug, int max_jobs)
{
    PQclear(sqlf(owner,
                 "INSERT INTO tenants (id, slug, display_name, tier, max_concurrent_jobs)"
                 " VALUES ('%s', '%s', '%s', 'free', %d)",
                 id, slug, slug, max_jobs));
}

/* An online agent of tenant t with slots slots and a fresh heartbeat; extra: SQL
 * assignments applied after (e.g. "status = 'offline'"), or NULL. */
static void agent(int n, const char *t, int slots, const char *extra)
{
    char id[40];
    id_of(id, sizeof(id), 'c', n);
    PQclear(sqlf(owner,
                 "INSERT INTO agents (id, tenant_id, name, slots, status, os, arch,"
                 " last_heartbeat_at) VALUES ('%s', '%s', 'agent-%d', %d, 'online', 'linux',"
                 " 'x86_64', now())",
                 id, t, n, slots));
    if (extra)
        PQclear(sqlf(owner, "UPDATE agents SET %s WHERE id = '%s'", extra, id));
}

static void queue(int n, const char *t, const char *extra)
{
    char id[40];
    id_of(id, sizeof(id), 'd', n);
    PQclear(sqlf(owner, "INSERT INTO queues (id, tenant_id, name) VALUES ('%s', '%s', 'q%d')", id,
                 t, n));
    if (extra)
        PQclear(sqlf(owner, "UPDATE queues SET %s WHERE id = '%s'", extra, id));
}

/* A queued job of tenant t, in queue q (0: none); extra as for agent(). */
static void job(int n, const char *t, int q, const char *extra)
{
    char id[40], qid[40];
    id_of(id, sizeof(id), 'e', n);
    id_of(qid, sizeof(qid), 'd', q);
    PQclear(sqlf(owner,
                 "INSERT INTO jobs (id, tenant_id, queue_id, command) VALUES ('%s', '%s', %s%s%s,"
                 " 'true')",
                 id, t, q ? "'" : "", q ? qid : "NULL", q ? "'" : ""));
    if (extra)
        PQclear(sqlf(owner, "UPDATE jobs SET %s WHERE id = '%s'", extra, id));
}

/* assign_batch() over the proposals "job:agent ..." (numbers); the outcomes, space
 * separated, in proposal order, into out. */
static void assign(const char *proposals, char *out, size_t len)
{
    struct buf jobs = BUF_INIT, agents = BUF_INIT;
    const char *p = proposals;
    int j, a, used;
    buf_append_str(&jobs, "{");
    buf_append_str(&agents, "{");
    for (int k = 0; sscanf(p, "%d:%d%n", &j, &a, &used) == 2; k++, p += used) {
        char jid[40], aid[40];
        id_of(jid, sizeof(jid), 'e', j);
        id_of(aid, sizeof(aid), 'c', a);
        buf_printf(&jobs, "%s%s", k ? "," : "", jid);
        buf_printf(&agents, "%s%s", k ? "," : "", aid);
    }
    buf_append_str(&jobs, "}");
    buf_append_str(&agents, "}");
    PGresult *res =
        sqlf(sys, "SELECT outcome FROM assign_batch('%s', '%s', 60, 30)", jobs.data, agents.data);
    buf_free(&jobs);
    buf_free(&agents);
    out[0] = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        size_t l = strlen(out);
        snprintf(out + l, len - l, "%s%s", i ? " " : "", PQgetvalue(res, i, 0));
    }
    PQclear(res);
}

Test(assign, counts_apply_in_proposal_order_within_one_batch)
{
    tenant(T_A, "a", 3);
    agent(1, T_A, 2, NULL);
    agent(2, T_A, 4, NULL);
    queue(1, T_A, "max_running = 1");
    for (int i = 1; i <= 6; i++)
        job(i, T_A, i <= 2 ? 1 : 0, NULL);
    char out[512];
    /* 1 and 2 share a queue of one; agent 1 has two slots; the tenant may run three. */
    assign("1:1 2:2 3:1 4:1 5:2 6:2", out, sizeof(out));
    cr_assert_str_eq(out, "assigned queue_full assigned agent_full assigned tenant_full");
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM jobs WHERE status = 'assigned'")), 3);
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM job_attempts WHERE status = 'assigned'"
                                      " AND attempt = 1 AND epoch = 1")),
                 3);
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM jobs j JOIN job_attempts a"
                                      " ON a.job_id = j.id AND a.agent_id = j.agent_id"
                                      " WHERE j.status = 'assigned' AND j.lease_expires_at >"
                                      " now() + interval '50 seconds'")),
                 3);
    /* What the batch counted is what is there: the next batch starts from it. */
    job(7, T_A, 0, NULL);
    assign("7:2", out, sizeof(out));
    cr_assert_str_eq(out, "tenant_full");
}

Test(assign, every_refusal_names_its_reason)
{
    tenant(T_A, "a", 100);
    tenant(T_B, "b", 100);
    agent(1, T_A, 8, NULL);
    agent(2, T_A, 8, "status = 'offline'");
    agent(3, T_A, 8, "last_heartbeat_at = now() - interval '1 minute'");
    agent(4, T_A, 8, "credential_revoked_at = now()");
    agent(5, T_B, 8, NULL);
    agent(6, T_A, 8, "labels = '{\"gpu\":\"no\"}'");
    queue(1, T_A, "paused = true");
    job(1, T_A, 0, "status = 'succeeded'");
    job(2, T_A, 0, "cancel_requested = true");
    job(3, T_A, 0, "not_before = now() + interval '1 hour'");
    job(4, T_A, 1, NULL);
    for (int i = 5; i <= 9; i++)
        job(i, T_A, 0, NULL);
    job(10, T_A, 0, "requirements = '{\"gpu\":\"yes\"}'");
    char out[512];
    /* 99: no such job; 9 on agent 99: no such agent. */
    assign("1:1 2:1 3:1 4:1 99:1 5:2 6:3 7:4 8:5 9:99 10:6", out, sizeof(out));
    cr_assert_str_eq(out, "job_gone job_gone job_later queue_paused job_gone agent_gone agent_gone"
                          " agent_gone agent_unfit agent_gone agent_unfit");
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM job_attempts")), 0);
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM jobs WHERE status = 'assigned'")), 0);
    /* The same jobs, on the agent that fits. */
    assign("5:1 6:1 10:1", out, sizeof(out));
    cr_assert_str_eq(out, "assigned assigned agent_unfit");
}

Test(assign, a_job_proposed_twice_is_assigned_once)
{
    tenant(T_A, "a", 100);
    agent(1, T_A, 1, NULL);
    agent(2, T_A, 4, NULL);
    job(1, T_A, 0, NULL);
    job(2, T_A, 0, NULL);
    char out[512];
    /* Each job twice: the second proposal finds it assigned by the first. */
    assign("1:2 1:2 2:1 2:2", out, sizeof(out));
    cr_assert_str_eq(out, "assigned job_gone assigned job_gone");
    cr_assert_eq(value_of(sqlf(owner, "SELECT count(*) FROM job_attempts")), 2);
    /* Refused first, the second proposal of the same job may still win. */
    job(3, T_A, 0, NULL);
    assign("3:1 3:2", out, sizeof(out));
    cr_assert_str_eq(out, "agent_full assigned");
    cr_assert_eq(value_of(sqlf(owner, "SELECT epoch FROM jobs WHERE id = "
                                      "'00000000-0000-4000-8000-e00000000003'")),
                 1);
}

Test(assign, a_job_locked_elsewhere_is_busy_and_the_rest_go_on)
{
    tenant(T_A, "a", 100);
    agent(1, T_A, 4, NULL);
    job(1, T_A, 0, NULL);
    job(2, T_A, 0, NULL);
    PGconn *other = th_pg_connect("postgres", db);
    PQclear(th_pg_ok(other, "BEGIN"));
    PQclear(th_pg_ok(other, "SELECT 1 FROM jobs WHERE id = "
                            "'00000000-0000-4000-8000-e00000000001' FOR UPDATE"));
    char out[512];
    assign("1:1 2:1", out, sizeof(out));
    cr_assert_str_eq(out, "job_busy assigned");
    PQclear(th_pg_ok(other, "ROLLBACK"));
    PQfinish(other);
    assign("1:1", out, sizeof(out));
    cr_assert_str_eq(out, "assigned");
}

Test(assign, returns_epoch_tenant_and_gateway_of_each_assignment)
{
    tenant(T_A, "a", 100);
    agent(1, T_A, 4, "gateway_node = 'node-1'");
    job(1, T_A, 0, "epoch = 4, attempt = 1");
    job(2, T_A, 0, NULL);
    PGresult *res = sqlf(sys, "SELECT job_id, agent_id, tenant_id, outcome, epoch, gateway_node"
                              "  FROM assign_batch('{00000000-0000-4000-8000-e00000000001,"
                              "00000000-0000-4000-8000-e00000000099,"
                              "00000000-0000-4000-8000-e00000000002}',"
                              " '{00000000-0000-4000-8000-c00000000001,"
                              "00000000-0000-4000-8000-c00000000001,"
                              "00000000-0000-4000-8000-c00000000001}', 60, 30)");
    cr_assert_eq(PQntuples(res), 3);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "00000000-0000-4000-8000-e00000000001");
    cr_assert_str_eq(PQgetvalue(res, 0, 2), T_A);
    cr_assert_str_eq(PQgetvalue(res, 0, 3), "assigned");
    cr_assert_str_eq(PQgetvalue(res, 0, 4), "5");
    cr_assert_str_eq(PQgetvalue(res, 0, 5), "node-1");
    cr_assert_str_eq(PQgetvalue(res, 1, 3), "job_gone");
    cr_assert(PQgetisnull(res, 1, 2) && PQgetisnull(res, 1, 4) && PQgetisnull(res, 1, 5));
    cr_assert_str_eq(PQgetvalue(res, 2, 0), "00000000-0000-4000-8000-e00000000002");
    cr_assert_str_eq(PQgetvalue(res, 2, 4), "1");
    PQclear(res);
    cr_assert_eq(value_of(sqlf(owner, "SELECT attempt FROM job_attempts WHERE epoch = 5")), 2);
    /* Nothing, or arrays of different lengths. */
    res = sqlf(sys, "SELECT count(*) FROM assign_batch('{}', '{}', 60, 30)");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    res = PQexec(sys, "SELECT * FROM assign_batch('{00000000-0000-4000-8000-e00000000002}',"
                      " '{}', 60, 30)");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    cr_assert(strstr(PQresultErrorMessage(res), "1 jobs and 0 agents"), "%s",
              PQresultErrorMessage(res));
    PQclear(res);
}
