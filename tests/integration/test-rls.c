/* Row-level security: connected as the application role orch_app, a transaction of
 * tenant A can neither read, change, delete nor create tenant B's rows in any tenant
 * table, a transaction that declared no tenant sees nothing at all, and nothing orch_app
 * sets or switches to (app.scope, set_config, RESET ROLE, SET ROLE orch_system) gives it
 * the system scope, which only the role orch_system has (sql/0008_system_role.sql).
 *
 * The list of tenant tables comes from the catalog (every table with a tenant_id
 * column), so a table added later without RLS, or without fixture rows here, fails. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "server/store.h"
#include "tests/integration/harness.h"

static char db[64];
static char tenant_a[ID_STR_LEN], tenant_b[ID_STR_LEN];
static struct store *store;

/* One row in every tenant table for tenant @T@ (replaced by seed()). */
static const char fixture_sql[] =
    "INSERT INTO tenants (id, slug, display_name, tier) VALUES ('@T@', 't-' || left(md5('@T@'), "
    "8), 'T', 'free');"
    "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role) VALUES"
    " (gen_random_uuid(), '@T@', 'k', 'orch_ak_' || left(md5('@T@'), 12), sha256('k@T@'), 'admin');"
    "INSERT INTO agents (id, tenant_id, name) VALUES (gen_random_uuid(), '@T@', 'agent');"
    "INSERT INTO enrollment_tokens (id, tenant_id, name, token_hash, expires_at) VALUES"
    " (gen_random_uuid(), '@T@', 'e', sha256('e@T@'), now() + interval '1 day');"
    "INSERT INTO queues (id, tenant_id, name) VALUES (gen_random_uuid(), '@T@', 'q');"
    "INSERT INTO package_blobs (tenant_id, sha256, size_bytes) VALUES ('@T@', sha256('b@T@'), 1);"
    "INSERT INTO packages (id, tenant_id, name, version, sha256, size_bytes) VALUES"
    " (gen_random_uuid(), '@T@', 'p', '1', sha256('b@T@'), 1);"
    "INSERT INTO jobs (id, tenant_id, queue_id, command)"
    " SELECT gen_random_uuid(), '@T@', id, 'true' FROM queues WHERE tenant_id = '@T@';"
    "INSERT INTO job_attempts (id, tenant_id, job_id, attempt, epoch, status)"
    " SELECT gen_random_uuid(), '@T@', id, 1, 1, 'assigned' FROM jobs WHERE tenant_id = '@T@';"
    "INSERT INTO job_logs (tenant_id, job_id, epoch, stream, \"offset\", data)"
    " SELECT '@T@', id, 1, 'stdout', 0, 'hello' FROM jobs WHERE tenant_id = '@T@';"
    "INSERT INTO job_log_streams (tenant_id, job_id, epoch, stream, end_offset, stored_bytes)"
    " SELECT '@T@', id, 1, 'stdout', 5, 5 FROM jobs WHERE tenant_id = '@T@';"
    "INSERT INTO schedules (id, tenant_id, name, cron, job_template) VALUES"
    " (gen_random_uuid(), '@T@', 's', '0 * * * *', '{}');"
    "INSERT INTO schedule_firings (schedule_id, tenant_id, scheduled_for, status)"
    " SELECT id, '@T@', now(), 'fired' FROM schedules WHERE tenant_id = '@T@';"
    "INSERT INTO usage_counters (tenant_id, day, api_calls) VALUES ('@T@', current_date, 1);"
    "INSERT INTO audit_log (id, tenant_id, actor_type, actor_id, action) VALUES"
    " (gen_random_uuid(), '@T@', 'system', 'test', 'create');"
    "INSERT INTO webhooks (id, tenant_id, url, events, secret_sealed, secret_prefix) VALUES"
    " (gen_random_uuid(), '@T@', 'https://example.com/', '{job.failed}', '\\x00', 'p');"
    "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)"
    " SELECT gen_random_uuid(), '@T@', id, gen_random_uuid(), 'job.failed', '{}'"
    " FROM webhooks WHERE tenant_id = '@T@';"
    "INSERT INTO scaling_policies (id, tenant_id, name, up_depth_per_agent, up_step, down_step,"
    " up_cooldown_s, down_cooldown_s, min_agents, max_agents) VALUES"
    " (gen_random_uuid(), '@T@', 'p', 1, 1, 1, 60, 300, 0, 3);"
    "INSERT INTO scaling_history (id, tenant_id, policy_id, direction, previous_agents,"
    " desired_agents, reason, data)"
    " SELECT gen_random_uuid(), '@T@', id, 'up', 0, 1, 'queue_depth', '{}'"
    " FROM scaling_policies WHERE tenant_id = '@T@';"
    "INSERT INTO quota_events (tenant_id, resource, kind, last_sent_at) VALUES"
    " ('@T@', 'queues', 'exceeded', now());"
    "INSERT INTO package_channels (tenant_id, name, channel, package_id)"
    " SELECT '@T@', 'p', 'stable', id FROM packages WHERE tenant_id = '@T@';"
    "INSERT INTO blob_chunks (tenant_id, blob_key, off, data) VALUES ('@T@', 'pkg/b', 0, '\\x00');"
    "INSERT INTO package_uploads (id, tenant_id, name, version, size_bytes, sha256, expires_at)"
    " VALUES (gen_random_uuid(), '@T@', 'p', '2.0.0', 1, sha256('u@T@'), now() + interval '1 "
    "day');"
    "INSERT INTO package_deployments (id, tenant_id, package_id, package_ref, labels,"
    " max_parallel, spread_ms)"
    " SELECT gen_random_uuid(), '@T@', id, 'p@1', '{}', 1, 0 FROM packages WHERE tenant_id = '@T@';"
    "INSERT INTO package_deployment_targets (deployment_id, tenant_id, agent_id)"
    " SELECT d.id, '@T@', a.id FROM package_deployments d, agents a"
    "  WHERE d.tenant_id = '@T@' AND a.tenant_id = '@T@';";

static const char *const fixture_tables[] = {
    "api_keys",
    "agents",
    "enrollment_tokens",
    "queues",
    "package_blobs",
    "packages",
    "jobs",
    "job_attempts",
    "job_logs",
    "schedules",
    "usage_counters",
    "audit_log",
    "job_log_streams",
    "webhooks",
    "webhook_deliveries",
    "schedule_firings",
    "scaling_policies",
    "scaling_history",
    "quota_events",
    "package_channels",
    "blob_chunks",
    "package_uploads",
    "package_deployments",
    "package_deployment_targets",
};
#define N_TABLES (sizeof(fixture_tables) / sizeof(fixture_tables[0]))

static void seed(const char *tenant)
{
    struct buf sql = BUF_INIT;
    for (const char *p = fixture_sql; *p;) {
        const char *at = strstr(p, "@T@");
        size_t n = at ? (size_t)(at - p) : strlen(p);
        buf_append(&sql, p, n);
        if (!at)
            break;
        buf_append_str(&sql, tenant);
        p = at + 3;
    }
    struct store_tx *tx = NULL;
    cr_assert_eq(store_tx_begin_system(store, &tx), 0);
    int r = store_tx_exec_sql(tx, sql.data, NULL);
    cr_assert_geq(r, 0, "fixture: %s", store_tx_errmsg(tx));
    cr_assert_eq(store_tx_commit(tx), 0);
    buf_free(&sql);
}

static void setup(void)
{
    th_db_create_migrated(db, sizeof(db));
    char *url = th_pg_url("orch_app", db);
    char *system_url = th_pg_url("orch_system", db);
    struct store_options o = {
        .url = url, .system_url = system_url, .pool_size = 2, .acquire_timeout_ms = 5000};
    char err[256];
    cr_assert_eq(store_open(&o, &store, err, sizeof(err)), 0, "%s", err);
    free(url);
    free(system_url);
    id_uuid7_str(tenant_a);
    id_uuid7_str(tenant_b);
    seed(tenant_a);
    seed(tenant_b);
}

static void teardown(void)
{
    store_close(store);
    store = NULL;
    th_db_drop(db);
}

/* Run sql in a transaction of tenant, returning store_tx_exec_sql()'s result; *out gets
 * the first value of the first row when asked. */
static int as_tenant(const char *tenant, const char *sql, long *out)
{
    struct store_tx *tx = NULL;
    cr_assert_eq(store_tx_begin_tenant(store, tenant, &tx), 0);
    PGresult *res = NULL;
    int r = store_tx_exec_sql(tx, sql, out ? &res : NULL);
    if (r >= 0 && out) {
        cr_assert_eq(PQntuples(res), 1, "%s", sql);
        *out = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    store_tx_rollback(tx); /* nothing here may persist */
    return r;
}

static long as_system(const char *sql)
{
    struct store_tx *tx = NULL;
    cr_assert_eq(store_tx_begin_system(store, &tx), 0);
    PGresult *res = NULL;
    cr_assert_eq(store_tx_exec_sql(tx, sql, &res), 1, "%s: %s", sql, store_tx_errmsg(tx));
    long v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    cr_assert_eq(store_tx_commit(tx), 0);
    return v;
}

TestSuite(rls, .init = setup, .fini = teardown);

Test(rls, every_tenant_table_forces_row_security)
{
    PGconn *pg = th_pg_connect("orch_owner", db);
    PGresult *res =
        th_pg_ok(pg, "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
                     "       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)"
                     "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE n.nspname = 'public' AND c.relkind = 'r'"
                     "   AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
                     "               AND a.attname = 'tenant_id' AND NOT a.attisdropped)"
                     " ORDER BY 1");
    cr_assert_eq((size_t)PQntuples(res), N_TABLES,
                 "tenant tables in the schema: %d, covered here: %zu (add fixture rows for new "
                 "tables)",
                 PQntuples(res), N_TABLES);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *t = PQgetvalue(res, i, 0);
        bool known = false;
        for (size_t j = 0; j < N_TABLES; j++)
            known = known || strcmp(fixture_tables[j], t) == 0;
        cr_assert(known, "table %s has no fixture rows in this test", t);
        cr_assert_str_eq(PQgetvalue(res, i, 1), "t", "%s: row security not enabled", t);
        cr_assert_str_eq(PQgetvalue(res, i, 2), "t", "%s: row security not forced", t);
        cr_assert_geq(strtol(PQgetvalue(res, i, 3), NULL, 10), 1, "%s: no policy", t);
    }
    PQclear(res);
    PQfinish(pg);
}

Test(rls, tenant_reads_only_its_rows)
{
    char sql[256];
    for (size_t i = 0; i < N_TABLES; i++) {
        const char *t = fixture_tables[i];
        long n = -1;
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", t);
        cr_assert_eq(as_tenant(tenant_a, sql, &n), 1);
        cr_assert_eq(n, 1, "%s: tenant A sees %ld rows", t, n);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE tenant_id = '%s'", t, tenant_b);
        cr_assert_eq(as_tenant(tenant_a, sql, &n), 1);
        cr_assert_eq(n, 0, "%s: tenant A sees tenant B's rows", t);
    }
    long n = -1;
    cr_assert_eq(as_tenant(tenant_a, "SELECT count(*) FROM tenants", &n), 1);
    cr_assert_eq(n, 1, "a tenant sees exactly its own tenant row");
    cr_assert_eq(as_tenant(tenant_a, "SELECT count(*) FROM operator_tokens", &n), 1);
    cr_assert_eq(n, 0);
}

Test(rls, tenant_cannot_update_or_delete_other_tenant)
{
    char sql[256];
    for (size_t i = 0; i < N_TABLES; i++) {
        const char *t = fixture_tables[i];
        snprintf(sql, sizeof(sql), "UPDATE %s SET tenant_id = tenant_id WHERE tenant_id = '%s'", t,
                 tenant_b);
        cr_assert_eq(as_tenant(tenant_a, sql, NULL), 0, "%s: update reached B's rows", t);
        snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE tenant_id = '%s'", t, tenant_b);
        cr_assert_eq(as_tenant(tenant_a, sql, NULL), 0, "%s: delete reached B's rows", t);
        /* An unqualified delete reaches only A's one row (package_blobs' row is still
         * referenced by A's package, and the package by A's channel, which the foreign
         * keys report). */
        snprintf(sql, sizeof(sql), "DELETE FROM %s", t);
        int want = strcmp(t, "package_blobs") == 0 || strcmp(t, "packages") == 0 ? -ENOENT : 1;
        cr_assert_eq(as_tenant(tenant_a, sql, NULL), want, "%s: unqualified delete", t);
    }
    /* A tenant cannot change its own tenant row (tier, quotas, status). */
    snprintf(sql, sizeof(sql), "UPDATE tenants SET tier = 'enterprise' WHERE id = '%s'", tenant_a);
    cr_assert_eq(as_tenant(tenant_a, sql, NULL), 0);

    /* B's rows are all still there. */
    for (size_t i = 0; i < N_TABLES; i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE tenant_id = '%s'",
                 fixture_tables[i], tenant_b);
        cr_assert_eq(as_system(sql), 1, "%s", fixture_tables[i]);
    }
}

Test(rls, tenant_cannot_write_rows_for_other_tenant)
{
    char sql[512];
    for (size_t i = 0; i < N_TABLES; i++) {
        const char *t = fixture_tables[i];
        /* Copy A's own row with B's tenant_id: refused by the policy's WITH CHECK. */
        snprintf(sql, sizeof(sql),
                 "INSERT INTO %s SELECT (jsonb_populate_record(NULL::%s, to_jsonb(x)"
                 " || jsonb_build_object('tenant_id', '%s'))).* FROM %s x",
                 t, t, tenant_b, t);
        cr_assert_eq(as_tenant(tenant_a, sql, NULL), -EACCES, "%s: insert for B", t);
        /* Move A's own row to B: refused the same way. */
        snprintf(sql, sizeof(sql), "UPDATE %s SET tenant_id = '%s'", t, tenant_b);
        cr_assert_eq(as_tenant(tenant_a, sql, NULL), -EACCES, "%s: move to B", t);
    }
}

Test(rls, no_tenant_declared_sees_nothing)
{
    PGconn *pg = th_pg_connect("orch_app", db);
    char sql[128];
    static const char *const extra[] = {"tenants", "operator_tokens"};
    /* Outside a transaction, in one with nothing declared, and with an empty setting. */
    static const char *const preludes[] = {
        NULL,
        "BEGIN",
        "BEGIN; SELECT set_config('app.tenant_id', '', true), set_config('app.scope', '', true)",
    };
    for (size_t p = 0; p < 3; p++) {
        if (preludes[p])
            PQclear(th_pg_ok(pg, preludes[p]));
        for (size_t i = 0; i < N_TABLES + 2; i++) {
            const char *t = i < N_TABLES ? fixture_tables[i] : extra[i - N_TABLES];
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", t);
            cr_assert_eq(th_pg_long(pg, sql), 0, "%s visible without a tenant (prelude %zu)", t, p);
        }
        if (preludes[p])
            PQclear(th_pg_ok(pg, "ROLLBACK"));
    }
    PQfinish(pg);
}

Test(rls, malformed_tenant_setting_fails_closed)
{
    PGconn *pg = th_pg_connect("orch_app", db);
    PQclear(th_pg_ok(pg, "BEGIN; SELECT set_config('app.tenant_id', 'garbage', true)"));
    PGresult *res = PQexec(pg, "SELECT count(*) FROM jobs");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "a bad tenant id must be an error");
    PQclear(res);
    PQclear(PQexec(pg, "ROLLBACK"));
    /* Any scope value other than 'system' grants nothing. */
    PQclear(th_pg_ok(pg, "BEGIN; SELECT set_config('app.scope', 'System ', true)"));
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM jobs"), 0);
    PQclear(th_pg_ok(pg, "ROLLBACK"));
    PQfinish(pg);
}

/* The tables a tenant transaction must not reach beyond its own rows, read from the
 * catalog (every table with a tenant_id column, so a new one is covered without an edit
 * here), plus tenants (keyed by id) and operator_tokens (no tenant at all). */
static PGresult *tenant_tables(PGconn *pg)
{
    return th_pg_ok(pg, "SELECT c.relname::text, 'tenant_id'"
                        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = 'public' AND c.relkind = 'r'"
                        "   AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
                        "               AND a.attname = 'tenant_id' AND NOT a.attisdropped)"
                        " UNION ALL SELECT 'tenants', 'id'"
                        " UNION ALL SELECT 'operator_tokens', NULL ORDER BY 1");
}

/* Rows of tenant B in table (all rows for a table without a tenant column) that sql reaches
 * on pg: "SELECT count(*)", "UPDATE" or "DELETE". */
static long reach_b(PGconn *pg, const char *table, const char *column, const char *verb)
{
    char where[128] = "";
    if (column)
        snprintf(where, sizeof(where), " WHERE %s = '%s'", column, tenant_b);
    char sql[512];
    if (strcmp(verb, "SELECT") == 0)
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s%s", table, where);
    else if (strcmp(verb, "UPDATE") == 0)
        snprintf(sql, sizeof(sql), "UPDATE %s SET %s = %s%s", table, column ? column : "id",
                 column ? column : "id", where);
    else
        snprintf(sql, sizeof(sql), "DELETE FROM %s%s", table, where);
    /* A savepoint, so that a refused statement (a foreign key, say) leaves the transaction
     * usable for the next one; a refusal reaches nothing. */
    PQclear(th_pg_ok(pg, "SAVEPOINT probe"));
    PGresult *res = PQexec(pg, sql);
    long n = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    else if (PQresultStatus(res) == PGRES_COMMAND_OK)
        n = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    PQclear(th_pg_ok(pg, "ROLLBACK TO SAVEPOINT probe"));
    return n;
}

Test(rls, tenant_role_cannot_take_the_system_scope)
{
    /* One operator token, which a session with the system scope could read or mint. */
    as_system("WITH t AS (INSERT INTO operator_tokens (id, name, prefix, secret_hash) VALUES"
              " (gen_random_uuid(), 'op', 'orch_op_rlstest1', sha256('op')) RETURNING 1)"
              " SELECT count(*) FROM t");

    /* What the old system scope was (a setting), every way orch_app can set it, and the
     * ways it might try to become another role. Each runs on a fresh connection, and the
     * last statement opens the transaction the probes run in. */
    char with_a[256];
    snprintf(with_a, sizeof(with_a),
             "BEGIN; SELECT set_config('app.tenant_id', '%s', true);"
             " SET LOCAL app.scope = 'system'",
             tenant_a);
    const char *const attacks[] = {
        "BEGIN; SET LOCAL app.scope = 'system'",
        "BEGIN; SELECT set_config('app.scope', 'system', true)",
        "SELECT set_config('app.scope', 'system', false); BEGIN",
        "SET app.scope = 'system'; BEGIN",
        "RESET ROLE; SET app.scope = 'system'; BEGIN",
        "SET SESSION ROLE NONE; BEGIN; SET LOCAL app.scope = 'system'",
        with_a,
    };
    PGconn *sys = th_pg_connect("orch_system", db);
    PGresult *tables = tenant_tables(sys);
    int nt = PQntuples(tables);
    cr_assert_geq(nt, (int)N_TABLES + 2);
    /* The probes below mean something only if there is something to reach. */
    PQclear(th_pg_ok(sys, "BEGIN"));
    for (int i = 0; i < nt; i++) {
        const char *t = PQgetvalue(tables, i, 0);
        const char *col = PQgetisnull(tables, i, 1) ? NULL : PQgetvalue(tables, i, 1);
        cr_assert_geq(reach_b(sys, t, col, "SELECT"), 1, "%s: no row to attack", t);
    }
    PQclear(th_pg_ok(sys, "ROLLBACK"));

    for (size_t a = 0; a < sizeof(attacks) / sizeof(attacks[0]); a++) {
        PGconn *pg = th_pg_connect("orch_app", db);
        PQclear(th_pg_ok(pg, attacks[a]));
        cr_assert_str_eq(PQparameterStatus(pg, "session_authorization"), "orch_app");
        for (int i = 0; i < nt; i++) {
            const char *t = PQgetvalue(tables, i, 0);
            const char *col = PQgetisnull(tables, i, 1) ? NULL : PQgetvalue(tables, i, 1);
            cr_assert_eq(reach_b(pg, t, col, "SELECT"), 0, "%s: read B's rows after: %s", t,
                         attacks[a]);
            cr_assert_eq(reach_b(pg, t, col, "UPDATE"), 0, "%s: updated B's rows after: %s", t,
                         attacks[a]);
            cr_assert_eq(reach_b(pg, t, col, "DELETE"), 0, "%s: deleted B's rows after: %s", t,
                         attacks[a]);
        }
        /* Nor can it create rows for another tenant, a tenant, or an operator token. */
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO queues (id, tenant_id, name) VALUES (gen_random_uuid(), '%s', 'x')",
                 tenant_b);
        const char *const inserts[] = {
            sql,
            "INSERT INTO tenants (id, slug, display_name, tier) VALUES (gen_random_uuid(),"
            " 'evil', 'E', 'enterprise')",
            "INSERT INTO operator_tokens (id, name, prefix, secret_hash) VALUES"
            " (gen_random_uuid(), 'evil', 'orch_op_evil0001', sha256('evil'))",
        };
        for (size_t k = 0; k < 3; k++) {
            PQclear(th_pg_ok(pg, "SAVEPOINT probe"));
            PGresult *res = PQexec(pg, inserts[k]);
            cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "%s after: %s", inserts[k],
                         attacks[a]);
            cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501");
            PQclear(res);
            PQclear(th_pg_ok(pg, "ROLLBACK TO SAVEPOINT probe"));
        }
        PQclear(th_pg_ok(pg, "ROLLBACK"));
        PQfinish(pg);
    }
    PQclear(tables);
    PQfinish(sys);

    /* orch_app cannot become orch_system, nor make itself a member of it. */
    const char *const switches[] = {
        "SET ROLE orch_system",
        "BEGIN; SET LOCAL ROLE orch_system",
        "SET SESSION AUTHORIZATION orch_system",
        "GRANT orch_system TO orch_app",
        "ALTER ROLE orch_app BYPASSRLS",
    };
    for (size_t k = 0; k < sizeof(switches) / sizeof(switches[0]); k++) {
        PGconn *pg = th_pg_connect("orch_app", db);
        PGresult *res = PQexec(pg, switches[k]);
        cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "%s was allowed", switches[k]);
        cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501", "%s", switches[k]);
        PQclear(res);
        PQclear(PQexec(pg, "ROLLBACK"));
        cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_auth_members m"
                                    " JOIN pg_roles r ON r.oid = m.member"
                                    " JOIN pg_roles g ON g.oid = m.roleid"
                                    " WHERE r.rolname = 'orch_app' AND g.rolname = 'orch_system'"),
                     0);
        PQfinish(pg);
    }
}

Test(rls, system_scope_is_the_role_and_only_while_it_is_current)
{
    PGconn *pg = th_pg_connect("orch_system", db);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE tenant_id IN ('%s', '%s')",
             tenant_a, tenant_b);
    cr_assert_eq(th_pg_long(pg, sql), 2, "orch_system sees every tenant without a setting");
    /* Switched to the tenant-facing role, the same session is the tenant-facing role. */
    PQclear(th_pg_ok(pg, "SET ROLE orch_app"));
    cr_assert_eq(th_pg_long(pg, sql), 0);
    PQclear(th_pg_ok(pg, "RESET ROLE"));
    cr_assert_eq(th_pg_long(pg, sql), 2);
    PQfinish(pg);
}
