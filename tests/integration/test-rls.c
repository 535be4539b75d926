/* Row-level security: connected as the application role orch_app, a transaction of
 * tenant A can neither read, change, delete nor create tenant B's rows in any tenant
 * table, and a transaction that declared no tenant sees nothing at all.
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
    "INSERT INTO usage_counters (tenant_id, day, api_calls) VALUES ('@T@', current_date, 1);"
    "INSERT INTO audit_log (id, tenant_id, actor_type, actor_id, action) VALUES"
    " (gen_random_uuid(), '@T@', 'system', 'test', 'create');";

static const char *const fixture_tables[] = {
    "api_keys",       "agents",    "enrollment_tokens", "queues",   "package_blobs",
    "packages",       "jobs",      "job_attempts",      "job_logs", "schedules",
    "usage_counters", "audit_log", "job_log_streams",
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
    struct store_options o = {.url = url, .pool_size = 2, .acquire_timeout_ms = 5000};
    char err[256];
    cr_assert_eq(store_open(&o, &store, err, sizeof(err)), 0, "%s", err);
    free(url);
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
         * referenced by A's package, which the foreign key reports). */
        snprintf(sql, sizeof(sql), "DELETE FROM %s", t);
        int want = strcmp(t, "package_blobs") == 0 ? -ENOENT : 1;
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
