/* Integration tests of `orchd migrate` and of the schema it leaves, on the real
 * PostgreSQL. Every test runs the real orchd binary against a database of its own. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/migrate.h"
#include "tests/integration/harness.h"

static char db[64];

static void setup(void)
{
    th_db_create(db, sizeof(db));
}

static void teardown(void)
{
    th_db_drop(db);
}

/* Run `orchd migrate` against db as the owner; extra is one more env entry or NULL. */
static void run_migrate(struct th_run *r, const char *extra)
{
    char *url = th_pg_url("orch_owner", db);
    char *env_url = NULL;
    cr_assert(asprintf(&env_url, "ORCHD_DB_MIGRATE_URL=%s", url) > 0);
    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "migrate", NULL};
    const char *env[] = {env_url, extra, NULL};
    th_run(r, argv, env, 60000);
    free(env_url);
    free(url);
}

/* Run `orchd migrate`, which must succeed. */
static void migrate_ok(void)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    th_run_free(&r);
}

TestSuite(migrate, .init = setup, .fini = teardown);

Test(migrate, empty_database_reaches_latest_version)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    char want[64];
    snprintf(want, sizeof(want), "from version 0 to %d", migrate_count);
    cr_assert(strstr(th_str(&r.out), want), "stdout: %s", th_str(&r.out));
    th_run_free(&r);

    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT max(version) FROM orch_schema_version"), migrate_count);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_version"), migrate_count);
    PGresult *res = th_pg_ok(pg, "SELECT sha256 FROM orch_schema_version WHERE version = 1");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), migrate_list[0].sha256);
    PQclear(res);
    /* 0014 dropped it: the server encodes an assignment with proto/ (gw-registry.c). */
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_views WHERE viewname = 'assignment_view'"),
                 0);
    PQfinish(pg);
}

Test(migrate, second_run_changes_nothing)
{
    migrate_ok();
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    cr_assert(strstr(th_str(&r.out), "up to date"), "stdout: %s", th_str(&r.out));
    th_run_free(&r);

    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_version"), migrate_count);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM tier_defaults"), 4);
    PQfinish(pg);
}

/* The definitions of every function and view of the schema, as one text. */
static const char schema_bodies[] =
    "SELECT md5(coalesce(string_agg(d, E'\\n' ORDER BY d), '')) FROM ("
    " SELECT pg_get_functiondef(p.oid) AS d FROM pg_proc p"
    "   JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
    " UNION ALL SELECT c.relname || pg_get_viewdef(c.oid) FROM pg_class c"
    "   JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE n.nspname = 'public' AND c.relkind = 'v') x";

static char *bodies_md5(PGconn *pg)
{
    PGresult *res = th_pg_ok(pg, schema_bodies);
    char *md5 = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return md5;
}

Test(migrate, functions_are_applied_on_every_run_and_recorded)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    char want[96];
    snprintf(want, sizeof(want), "(%d of %d files changed)", migrate_nfunctions,
             migrate_nfunctions);
    cr_assert(strstr(th_str(&r.out), want), "stdout: %s", th_str(&r.out));
    th_run_free(&r);
    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_functions"), migrate_nfunctions);
    for (int i = 0; i < migrate_nfunctions; i++) {
        char q[256];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM orch_schema_functions WHERE name = '%s'"
                 " AND sha256 = '%s'",
                 migrate_functions[i].name, migrate_functions[i].sha256);
        cr_assert_eq(th_pg_long(pg, q), 1, "%s not recorded", migrate_functions[i].name);
    }
    char *before = bodies_md5(pg);

    /* Idempotent: a second run leaves every body and the version as they were. */
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    cr_assert(strstr(th_str(&r.out), "up to date"), "stdout: %s", th_str(&r.out));
    snprintf(want, sizeof(want), "(0 of %d files changed)", migrate_nfunctions);
    cr_assert(strstr(th_str(&r.out), want), "stdout: %s", th_str(&r.out));
    th_run_free(&r);
    char *after = bodies_md5(pg);
    cr_assert_str_eq(before, after);
    free(after);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_version"), migrate_count);

    /* A function whose body differs from sql/functions/ (as after an older orchd's migrate,
     * whose copy had another checksum): the next run puts the binary's body back. */
    PQclear(th_pg_ok(pg, "CREATE OR REPLACE FUNCTION retry_backoff(n int) RETURNS interval"
                         " LANGUAGE sql VOLATILE AS $$ SELECT interval '42 seconds' $$"));
    PQclear(th_pg_ok(pg, "UPDATE orch_schema_functions SET sha256 = 'older'"
                         " WHERE name = '40_jobs'"));
    cr_assert_eq(th_pg_long(pg, "SELECT extract(epoch FROM retry_backoff(1))::int"), 42);
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    snprintf(want, sizeof(want), "(1 of %d files changed)", migrate_nfunctions);
    cr_assert(strstr(th_str(&r.out), want), "stdout: %s", th_str(&r.out));
    cr_assert(strstr(th_str(&r.err), "functions=40_jobs"), "stderr: %s", th_str(&r.err));
    th_run_free(&r);
    cr_assert_eq(th_pg_long(pg, "SELECT (retry_backoff(1) <= interval '2 seconds')::int"), 1);
    after = bodies_md5(pg);
    cr_assert_str_eq(before, after, "the bodies differ from a fresh migrate's");
    free(after);
    free(before);
    PQfinish(pg);
}

Test(migrate, concurrent_runs_apply_once)
{
    /* Two nodes migrating at the same moment: the advisory lock queues one behind the
     * other, and the second finds nothing left to do. */
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        cr_assert_neq(kids[i], -1);
        if (kids[i] == 0) {
            struct th_run r;
            run_migrate(&r, NULL);
            _exit(r.status);
        }
    }
    for (int i = 0; i < 2; i++) {
        int st;
        cr_assert_eq(waitpid(kids[i], &st, 0), kids[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "migrate %d failed", i);
    }
    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_version"), migrate_count);
    PQfinish(pg);
}

Test(migrate, refuses_database_newer_than_binary)
{
    migrate_ok();
    struct th_run r;

    PGconn *pg = th_pg_connect("orch_owner", db);
    char sql[160];
    snprintf(sql, sizeof(sql),
             "INSERT INTO orch_schema_version (version, name, sha256) VALUES (%d, 'future', 'x')",
             migrate_count + 1);
    PQclear(th_pg_ok(pg, sql));

    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.err), "newer than this orchd"), "stderr: %s", th_str(&r.err));
    th_run_free(&r);
    /* Nothing was touched. */
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM orch_schema_version"), migrate_count + 1);
    PQfinish(pg);
}

Test(migrate, refuses_changed_migration)
{
    migrate_ok();
    struct th_run r;

    PGconn *pg = th_pg_connect("orch_owner", db);
    PQclear(th_pg_ok(pg, "UPDATE orch_schema_version SET sha256 = 'edited' WHERE version = 1"));
    PQfinish(pg);

    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.err), "was changed after it was applied"), "stderr: %s",
              th_str(&r.err));
    th_run_free(&r);
}

Test(migrate, failed_migration_leaves_database_untouched)
{
    /* A table the migration wants to create already exists: the whole run rolls back. */
    PGconn *pg = th_pg_connect("orch_owner", db);
    PQclear(th_pg_ok(pg, "CREATE TABLE jobs (x int)"));

    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.err), "migration 1 (init)"), "stderr: %s", th_str(&r.err));
    cr_assert(strstr(th_str(&r.err), "already exists"), "stderr: %s", th_str(&r.err));
    th_run_free(&r);

    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                                " AND tablename IN ('tenants', 'orch_schema_version')"),
                 0);
    PQfinish(pg);
}

Test(migrate, unreachable_database_is_a_clear_error)
{
    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "migrate", NULL};
    /* Port 1 is never a PostgreSQL. */
    const char *env[] = {"ORCHD_DB_MIGRATE_URL=postgresql://orch_owner@127.0.0.1:1/orch", NULL};
    struct th_run r;
    th_run(&r, argv, env, 60000);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.err), "cannot connect to the database"), "stderr: %s",
              th_str(&r.err));
    th_run_free(&r);
}

Test(migrate, application_role_is_unprivileged)
{
    migrate_ok();

    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_roles WHERE rolname = 'orch_app'"
                                " AND NOT rolsuper AND NOT rolbypassrls"),
                 1);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_class c JOIN pg_roles r"
                                " ON r.oid = c.relowner WHERE r.rolname = 'orch_app'"),
                 0, "orch_app must own nothing");
    /* The app role cannot rewrite the schema history or the tier table. */
    PQfinish(pg);
    pg = th_pg_connect("orch_app", db);
    PGresult *res = PQexec(pg, "DELETE FROM orch_schema_version");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501");
    PQclear(res);
    res = PQexec(pg, "UPDATE tier_defaults SET max_agents = 1000000");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    PQfinish(pg);
}

Test(migrate, tier_defaults_match_design)
{
    migrate_ok();

    PGconn *pg = th_pg_connect("orch_owner", db);
    PGresult *res = th_pg_ok(
        pg, "SELECT tier, max_agents, max_concurrent_jobs, max_schedules, max_queues,"
            " max_storage_bytes >> 30, max_api_calls_day FROM tier_defaults ORDER BY rank");
    static const char *const want[4][7] = {
        {"free", "2", "5", "2", "2", "5", "1000"},
        {"standard", "10", "25", "10", "5", "20", "5000"},
        {"professional", "50", "100", "50", "20", "100", "20000"},
        {"enterprise", "250", "500", "100", "50", "500", "100000"},
    };
    cr_assert_eq(PQntuples(res), 4);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 7; j++)
            cr_assert_str_eq(PQgetvalue(res, i, j), want[i][j], "tier %s column %d", want[i][0], j);
    PQclear(res);
    PQfinish(pg);
}

/* orchd's configuration errors: one line naming the key and the expected type, exit 2. */
TestSuite(orchd_config);

Test(orchd_config, bad_environment_value_names_key)
{
    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "check-config", NULL};
    const char *env[] = {"ORCHD_DB_POOL_SIZE=lots", NULL};
    struct th_run r;
    th_run(&r, argv, env, 10000);
    cr_assert_eq(r.status, 2);
    const char *e = th_str(&r.err);
    cr_assert(strstr(e, "ORCHD_DB_POOL_SIZE"), "stderr: %s", e);
    cr_assert(strstr(e, "db.pool_size"), "stderr: %s", e);
    cr_assert(strstr(e, "integer"), "stderr: %s", e);
    cr_assert_eq(strchr(e, '\n'), e + strlen(e) - 1, "one line expected: %s", e);
    th_run_free(&r);
}

Test(orchd_config, malformed_file_names_line_and_key)
{
    char path[] = "/tmp/orchd-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_neq(fd, -1);
    const char text[] = "# test\ndb.pool_size = 4\nlog.level = loud\n";
    cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);

    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "--config", path, "check-config", NULL};
    struct th_run r;
    th_run(&r, argv, NULL, 10000);
    unlink(path);
    cr_assert_eq(r.status, 2);
    const char *e = th_str(&r.err);
    cr_assert(strstr(e, ":3:"), "stderr: %s", e);
    cr_assert(strstr(e, "log.level"), "stderr: %s", e);
    cr_assert(strstr(e, "loud"), "stderr: %s", e);
    th_run_free(&r);
}

Test(orchd_config, unknown_key_is_refused)
{
    char path[] = "/tmp/orchd-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_neq(fd, -1);
    const char text[] = "db.pool_sise = 4\n";
    cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);

    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "-c", path, "check-config", NULL};
    struct th_run r;
    th_run(&r, argv, NULL, 10000);
    unlink(path);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(th_str(&r.err), "db.pool_sise"), "stderr: %s", th_str(&r.err));
    th_run_free(&r);
}

Test(orchd_config, valid_configuration_accepted)
{
    const char *argv[] = {th_env("ORCH_TEST_ORCHD"), "check-config", NULL};
    const char *env[] = {"ORCHD_DB_POOL_SIZE=8", "ORCHD_LOG_LEVEL=debug", NULL};
    struct th_run r;
    th_run(&r, argv, env, 10000);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    th_run_free(&r);
}

Test(migrate, system_role_is_the_scope_and_unprivileged)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    th_run_free(&r);

    PGconn *pg = th_pg_connect("orch_owner", db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_roles WHERE rolname = 'orch_system'"
                                " AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcreaterole"),
                 1);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_class c JOIN pg_roles r"
                                " ON r.oid = c.relowner WHERE r.rolname = 'orch_system'"),
                 0, "orch_system must own nothing");
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_roles"
                                " WHERE pg_has_role('orch_app', 'orch_system', 'MEMBER')"),
                 0, "orch_app must not be able to become orch_system");
    /* No setting is read to decide the system scope any more. */
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_proc WHERE proname = 'app_system'"
                                " AND prosrc LIKE '%current_setting%'"),
                 0);
    /* Asked once per statement, not once per row, by every system_scope policy. */
    cr_assert_geq(
        th_pg_long(pg, "SELECT count(*) FROM pg_policies WHERE policyname = 'system_scope'"), 13);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM pg_policies WHERE policyname = 'system_scope'"
                                " AND (qual NOT LIKE '%SELECT app_system()%'"
                                "      OR with_check NOT LIKE '%SELECT app_system()%')"),
                 0);
    PQfinish(pg);
}

/* `orchd serve` refuses to start without a system role that fits, and says why. */
TestSuite(orchd_serve, .init = setup, .fini = teardown);

/* Run `orchd serve` with env (NULL-terminated) and a fresh signing key; it must exit 1
 * before serving, with want in its stderr. */
static void serve_refused(const char *const *env_extra, const char *want)
{
    char dir[] = "/tmp/orch-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char keys[64], *env[8];
    snprintf(keys, sizeof(keys), "ORCHD_AUTH_KEY_DIR=%s/keys", dir);
    size_t n = 0;
    env[n++] = keys;
    for (size_t i = 0; env_extra[i] && n < 7; i++)
        env[n++] = (char *)env_extra[i];
    env[n] = NULL;
    struct th_run r;
    const char *gen[] = {th_env("ORCH_TEST_ORCHD"), "admin", "gen-key", NULL};
    th_run(&r, gen, (const char *const *)env, 30000);
    cr_assert_eq(r.status, 0, "gen-key: %s", th_str(&r.err));
    th_run_free(&r);
    const char *serve[] = {th_env("ORCH_TEST_ORCHD"), "serve", NULL};
    th_run(&r, serve, (const char *const *)env, 30000);
    th_rm_rf(dir);
    cr_assert_eq(r.status, 1, "stderr: %s", th_str(&r.err));
    cr_assert(strstr(th_str(&r.err), want), "stderr: %s", th_str(&r.err));
    th_run_free(&r);
}

Test(orchd_serve, without_system_role_fails_at_start)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    th_run_free(&r);

    char *app = th_pg_url("orch_app", db), *sys = th_pg_url("orch_system", db);
    char env_app[512], env_sys_app[512], env_app_sys[512];
    snprintf(env_app, sizeof(env_app), "ORCHD_DB_URL=%s", app);
    snprintf(env_sys_app, sizeof(env_sys_app), "ORCHD_DB_SYSTEM_URL=%s", app);
    snprintf(env_app_sys, sizeof(env_app_sys), "ORCHD_DB_URL=%s", sys);
    free(app);

    /* Not configured: no fallback to the settable scope or to db.url. */
    const char *none[] = {env_app, NULL};
    serve_refused(none, "db.system_url is not set");
    const char *empty[] = {env_app, "ORCHD_DB_SYSTEM_URL=", NULL};
    serve_refused(empty, "db.system_url is not set");
    /* The tenant-facing role given as the system one. */
    const char *same[] = {env_app, env_sys_app, NULL};
    serve_refused(same, "system connection's role orch_app is not a member of orch_system");
    /* The system role given as the tenant-facing one. */
    char env_sys[512];
    snprintf(env_sys, sizeof(env_sys), "ORCHD_DB_SYSTEM_URL=%s", sys);
    free(sys);
    const char *swapped[] = {env_app_sys, env_sys, NULL};
    serve_refused(swapped, "tenant connection's role orch_system is a member of orch_system");
}

/* Whether a file of sql/functions/ (as embedded in orchd) defines the function name. */
static bool in_functions_folder(const char *name)
{
    char want[128];
    snprintf(want, sizeof(want), "CREATE OR REPLACE FUNCTION %s(", name);
    for (int i = 0; i < migrate_nfunctions; i++)
        if (strstr(migrate_functions[i].sql, want))
            return true;
    return false;
}

/* The rule of sql/functions/README.md: a function's body lives in sql/functions/, where
 * every migrate re-applies it. Only these, from before the folder existed, do not. */
static const char *const functions_outside_the_folder[] = {
    "dispatch_round", /* the placement engine replaces it */
};

Test(migrate, every_function_body_lives_in_the_functions_folder)
{
    struct th_run r;
    run_migrate(&r, NULL);
    cr_assert_eq(r.status, 0, "stderr: %s", th_str(&r.err));
    th_run_free(&r);
    PGconn *pg = th_pg_connect("orch_owner", db);
    PGresult *res = th_pg_ok(pg, "SELECT DISTINCT p.proname FROM pg_proc p"
                                 " JOIN pg_namespace n ON n.oid = p.pronamespace"
                                 " WHERE n.nspname = 'public' ORDER BY 1");
    cr_assert_gt(PQntuples(res), 10);
    char outside[1024] = "";
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        bool known = false;
        for (size_t k = 0; k < sizeof(functions_outside_the_folder) / sizeof(char *); k++)
            known = known || strcmp(name, functions_outside_the_folder[k]) == 0;
        if (!known && !in_functions_folder(name)) {
            size_t n = strlen(outside);
            snprintf(outside + n, sizeof(outside) - n, " %s", name);
        }
    }
    PQclear(res);
    PQfinish(pg);
    cr_assert_str_eq(outside, "", "functions defined only by a migration:%s", outside);
}

/* events_notify() is inlined by the planner into the job triggers' statements (one call per
 * job row through the SQL function executor cost a third more): its body must stay one
 * expression. */
Test(migrate, events_notify_is_inlined)
{
    migrate_ok();

    PGconn *pg = th_pg_connect("orch_owner", db);
    /* From a table, as the triggers call it (a volatile argument used twice is not inlined). */
    PGresult *res = th_pg_ok(pg, "EXPLAIN (VERBOSE, COSTS OFF)"
                                 " SELECT events_notify(id, 'job.x', '{}') FROM tenants");
    bool inlined = false, called = false;
    for (int i = 0; i < PQntuples(res); i++) {
        inlined = inlined || strstr(PQgetvalue(res, i, 0), "pg_notify(");
        called = called || strstr(PQgetvalue(res, i, 0), "events_notify(");
    }
    PQclear(res);
    PQfinish(pg);
    cr_assert(inlined && !called, "the plan still calls events_notify()");
}

/* The SQLSTATE and constraint of sql's error (both "" when it succeeds). */
static void sql_error(PGconn *pg, const char *sql, char *state, char *constraint, size_t len)
{
    PGresult *res = PQexec(pg, sql);
    const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *c = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    snprintf(state, len, "%s", s ? s : "");
    snprintf(constraint, len, "%s", c ? c : "");
    PQclear(res);
}

#define FC_TENANT "00000000-0000-4000-8000-0000000000f1"
#define FC_JOB    "00000000-0000-4000-8000-0000000000f2"
#define FC_AGENT  "00000000-0000-4000-8000-0000000000f3"

/* 0027 moved the checks of the columns the job path never writes from CHECK constraints
 * (compiled from their text at the start of every statement that writes a row) to row
 * triggers on the columns: each still refuses what it refused, on INSERT and on an UPDATE
 * of its column, with check_violation naming the same constraint; the checks left as
 * constraints are those of columns the job path writes. */
Test(migrate, field_checks_refuse_what_the_constraints_refused)
{
    migrate_ok();
    PGconn *pg = th_pg_connect("postgres", db);
    PQclear(th_pg_ok(pg, "INSERT INTO tenants (id, slug, display_name, tier)"
                         " VALUES ('" FC_TENANT "', 'fc', 'FC', 'free')"));
    PQclear(th_pg_ok(pg, "INSERT INTO jobs (id, tenant_id, command)"
                         " VALUES ('" FC_JOB "', '" FC_TENANT "', 'true')"));
    PQclear(th_pg_ok(pg, "INSERT INTO agents (id, tenant_id, name, credential_prefix,"
                         " credential_hash, slots) VALUES ('" FC_AGENT "', '" FC_TENANT "', 'a1',"
                         " 'prefix01', decode(repeat('ab', 32), 'hex'), 2)"));
    static const struct {
        const char *sql, *constraint;
    } refused[] = {
        {"INSERT INTO jobs (id, tenant_id, command, priority) VALUES (gen_random_uuid(), "
         "'" FC_TENANT "', 'true', 101)",
         "jobs_priority_check"},
        {"INSERT INTO jobs (id, tenant_id, command) VALUES (gen_random_uuid(), '" FC_TENANT
         "', repeat('x', 65537))",
         "jobs_command_check"},
        {"INSERT INTO jobs (id, tenant_id, command, idempotency_key) VALUES (gen_random_uuid(), "
         "'" FC_TENANT "', 'true', '')",
         "jobs_idempotency_key_check"},
        {"UPDATE jobs SET env = '[]' WHERE id = '" FC_JOB "'", "jobs_env_check"},
        {"UPDATE jobs SET args = '{}' WHERE id = '" FC_JOB "'", "jobs_args_check"},
        {"UPDATE jobs SET requirements = '1' WHERE id = '" FC_JOB "'", "jobs_requirements_check"},
        {"UPDATE jobs SET timeout_ms = 999 WHERE id = '" FC_JOB "'", "jobs_timeout_ms_check"},
        {"UPDATE jobs SET max_attempts = 0 WHERE id = '" FC_JOB "'", "jobs_max_attempts_check"},
        {"UPDATE jobs SET entrypoint = repeat('x', 1025) WHERE id = '" FC_JOB "'",
         "jobs_entrypoint_check"},
        {"UPDATE jobs SET package_ref = repeat('x', 201) WHERE id = '" FC_JOB "'",
         "jobs_package_ref_check"},
        {"UPDATE jobs SET status = 'bogus' WHERE id = '" FC_JOB "'", "jobs_status_check"},
        {"UPDATE jobs SET command = NULL WHERE id = '" FC_JOB "'", "jobs_check"},
        {"UPDATE jobs SET error = repeat('x', 4097) WHERE id = '" FC_JOB "'", "jobs_error_check"},
        {"UPDATE agents SET name = '' WHERE id = '" FC_AGENT "'", "agents_name_check"},
        {"UPDATE agents SET credential_hash = '\\x00' WHERE id = '" FC_AGENT "'",
         "agents_credential_hash_check"},
        {"UPDATE agents SET prev_credential_prefix = 'short' WHERE id = '" FC_AGENT "'",
         "agents_prev_credential_prefix_check"},
        {"UPDATE agents SET slots = 0 WHERE id = '" FC_AGENT "'", "agents_slots_check"},
        {"UPDATE agents SET labels = '[]' WHERE id = '" FC_AGENT "'", "agents_labels_check"},
        {"UPDATE agents SET version = repeat('x', 65) WHERE id = '" FC_AGENT "'",
         "agents_version_check"},
        {"UPDATE agents SET pool_id = gen_random_uuid() WHERE id = '" FC_AGENT "'",
         "agents_pool_platform"},
        {"UPDATE agents SET status = 'bogus' WHERE id = '" FC_AGENT "'", "agents_status_check"},
        {"UPDATE agents SET cpu_percent = 101 WHERE id = '" FC_AGENT "'",
         "agents_cpu_percent_check"},
    };
    char state[64], constraint[64];
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        sql_error(pg, refused[i].sql, state, constraint, sizeof(state));
        cr_expect_str_eq(state, "23514", "%s: SQLSTATE %s", refused[i].sql, state);
        cr_expect_str_eq(constraint, refused[i].constraint, "%s", refused[i].sql);
    }
    /* What the job path writes passes, and a check that comes out NULL passes. */
    PQclear(th_pg_ok(pg, "UPDATE jobs SET status = 'running', epoch = 1, attempt = 1,"
                         " entrypoint = NULL, idempotency_key = NULL WHERE id = '" FC_JOB "'"));
    PQclear(th_pg_ok(pg, "UPDATE agents SET status = 'online', cpu_percent = 50, os = NULL"
                         " WHERE id = '" FC_AGENT "'"));
    cr_expect_eq(th_pg_long(pg, "SELECT count(*) FROM pg_constraint WHERE contype = 'c'"
                                " AND conrelid = 'jobs'::regclass"),
                 5, "jobs keeps the checks of status, attempt, epoch, error and jobs_check");
    cr_expect_eq(th_pg_long(pg, "SELECT count(*) FROM pg_constraint WHERE contype = 'c'"
                                " AND conrelid = 'agents'::regclass"),
                 5, "agents keeps the checks of status, load and cached packages");
    PQfinish(pg);
}

/* assign_batch() plans each of its statements once per connection, on the indexes
 * (sql/functions/70_placement.sql): without these settings PostgreSQL planned all of them
 * on every call, 44% of the call. */
Test(migrate, assign_batch_keeps_its_plans)
{
    migrate_ok();
    PGconn *pg = th_pg_connect("orch_owner", db);
    PGresult *res = th_pg_ok(pg, "SELECT array_to_string(proconfig, ',') FROM pg_proc"
                                 " WHERE proname = 'assign_batch'");
    cr_assert_eq(PQntuples(res), 1);
    const char *config = PQgetvalue(res, 0, 0);
    cr_expect(strstr(config, "plan_cache_mode=force_generic_plan"), "%s", config);
    cr_expect(strstr(config, "enable_seqscan=off"), "%s", config);
    PQclear(res);
    PQfinish(pg);
}
