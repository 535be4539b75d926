/* migrate.c: apply the embedded schema migrations (see migrate.h). */
#include "server/migrate.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Key of the advisory lock that serialises migrations ("orchmigr" in ASCII). */
#define MIGRATE_LOCK_KEY "7957688148093044338"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

static PGconn *connect_db(const char *url, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {url, "orchd-migrate", "10", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        set_err(err, errlen, "cannot connect to the database: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* Run sql; on failure fill err with what and the server's message. */
static int exec_ok(PGconn *pg, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(msg, sizeof(msg), "%s: %s", what, primary ? primary : PQerrorMessage(pg));
        set_err(err, errlen, "%s", msg);
        PQclear(r);
        return -EIO;
    }
    PQclear(r);
    return 0;
}

static const char create_version_table[] = "CREATE TABLE IF NOT EXISTS orch_schema_version ("
                                           " version int PRIMARY KEY,"
                                           " name text NOT NULL,"
                                           " sha256 text NOT NULL,"
                                           " applied_at timestamptz NOT NULL DEFAULT now())";

/* Read the applied versions and check them against the binary's list. Returns the highest
 * applied version, or -EPROTO. */
static int check_applied(PGconn *pg, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, "SELECT version, sha256 FROM orch_schema_version ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        set_err(err, errlen, "reading orch_schema_version: %s", PQerrorMessage(pg));
        PQclear(r);
        return -EIO;
    }
    int current = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        char *end = NULL;
        long v = strtol(PQgetvalue(r, i, 0), &end, 10);
        if (!end || *end || v < 1 || v > 1000000) {
            set_err(err, errlen, "orch_schema_version holds an invalid version '%s'",
                    PQgetvalue(r, i, 0));
            PQclear(r);
            return -EPROTO;
        }
        if (v > migrate_count) {
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "the database is at schema version %ld, newer than this orchd knows (%d); "
                     "run a newer orchd",
                     v, migrate_count);
            set_err(err, errlen, "%s", msg);
            PQclear(r);
            return -EPROTO;
        }
        const struct migration *m = &migrate_list[v - 1];
        if (strcmp(PQgetvalue(r, i, 1), m->sha256) != 0) {
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "migration %ld (%s) was changed after it was applied: its checksum in the "
                     "database differs from this orchd's copy",
                     v, m->name);
            set_err(err, errlen, "%s", msg);
            PQclear(r);
            return -EPROTO;
        }
        current = (int)v;
    }
    PQclear(r);
    return current;
}

static const char create_functions_table[] = "CREATE TABLE IF NOT EXISTS orch_schema_functions ("
                                             " name text PRIMARY KEY,"
                                             " sha256 text NOT NULL,"
                                             " applied_at timestamptz NOT NULL DEFAULT now())";

/* Apply every sql/functions/ file and record its checksum. Returns how many files changed
 * since the last run (or -EIO). In the caller's transaction, under its lock. */
static int apply_functions(PGconn *pg, char *err, size_t errlen)
{
    int r = exec_ok(pg, create_functions_table, "creating orch_schema_functions", err, errlen);
    int changed = 0;
    for (int i = 0; r == 0 && i < migrate_nfunctions; i++) {
        const struct migration *f = &migrate_functions[i];
        char what[128];
        snprintf(what, sizeof(what), "sql/functions/%s.sql", f->name);
        r = exec_ok(pg, f->sql, what, err, errlen);
        if (r < 0)
            break;
        /* The row before the upsert: whether this file's text is new to the database. */
        const char *params[] = {f->name, f->sha256};
        PGresult *res =
            PQexecParams(pg,
                         "WITH old AS (SELECT sha256 FROM orch_schema_functions WHERE name = $1)"
                         " INSERT INTO orch_schema_functions AS s (name, sha256) VALUES ($1, $2)"
                         " ON CONFLICT (name) DO UPDATE SET sha256 = $2, applied_at = now()"
                         " RETURNING coalesce((SELECT sha256 FROM old), '')",
                         2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            set_err(err, errlen, "recording %s: %s", what, PQerrorMessage(pg));
            PQclear(res);
            r = -EIO;
            break;
        }
        bool same = strcmp(PQgetvalue(res, 0, 0), f->sha256) == 0;
        PQclear(res);
        changed += !same;
        log_info("op=migrate functions=%s sha256=%s changed=%s", f->name, f->sha256,
                 same ? "no" : "yes");
    }
    return r < 0 ? r : changed;
}

int migrate_run(const char *url, struct migrate_report *rep, char *err, size_t errlen)
{
    PGconn *pg = connect_db(url, err, errlen);
    if (!pg)
        return -ECONNREFUSED;

    int r = exec_ok(pg, "BEGIN", "BEGIN", err, errlen);
    if (r == 0)
        r = exec_ok(pg, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", "locking", err,
                    errlen);
    /* Quiet the NOTICE that IF NOT EXISTS raises on every run after the first. */
    if (r == 0)
        r = exec_ok(pg, "SET LOCAL client_min_messages = warning", "settings", err, errlen);
    if (r == 0)
        r = exec_ok(pg, create_version_table, "creating orch_schema_version", err, errlen);
    if (r == 0)
        r = exec_ok(pg, "GRANT SELECT ON orch_schema_version TO orch_app",
                    "granting orch_app read access to orch_schema_version (does the role "
                    "orch_app exist?)",
                    err, errlen);
    int current = 0;
    if (r == 0) {
        current = check_applied(pg, err, errlen);
        if (current < 0)
            r = current;
    }

    int applied = 0;
    for (int v = current + 1; r == 0 && v <= migrate_count; v++) {
        const struct migration *m = &migrate_list[v - 1];
        char what[128];
        snprintf(what, sizeof(what), "migration %d (%s)", m->version, m->name);
        r = exec_ok(pg, m->sql, what, err, errlen);
        if (r < 0)
            break;
        const char *params[] = {NULL, m->name, m->sha256};
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        params[0] = version;
        PGresult *res = PQexecParams(
            pg, "INSERT INTO orch_schema_version (version, name, sha256) VALUES ($1, $2, $3)", 3,
            NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            set_err(err, errlen, "recording the migration: %s", PQerrorMessage(pg));
            r = -EIO;
        }
        PQclear(res);
        log_info("op=migrate version=%d name=%s", m->version, m->name);
        applied++;
    }

    /* Every run: a function or view body changed in sql/functions/ takes effect without a
     * migration of its own, and one changed by hand in the database is put back. */
    int changed = 0;
    if (r == 0) {
        changed = apply_functions(pg, err, errlen);
        if (changed < 0)
            r = changed;
    }
    if (r == 0)
        r = exec_ok(pg, "COMMIT", "COMMIT", err, errlen);
    else
        PQclear(PQexec(pg, "ROLLBACK"));
    PQfinish(pg);
    if (r < 0)
        return r;
    if (rep) {
        rep->from_version = current;
        rep->to_version = migrate_count;
        rep->applied = applied;
        rep->functions_changed = changed;
    }
    return 0;
}

int migrate_db_version(const char *url, char *err, size_t errlen)
{
    PGconn *pg = connect_db(url, err, errlen);
    if (!pg)
        return -ECONNREFUSED;
    PGresult *r = PQexec(pg, "SELECT coalesce(max(version), 0) FROM orch_schema_version");
    int v;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        v = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* 42P01: no such table, i.e. never migrated. */
        if (state && strcmp(state, "42P01") == 0) {
            v = 0;
        } else {
            set_err(err, errlen, "reading the schema version: %s", PQerrorMessage(pg));
            v = -EIO;
        }
    }
    PQclear(r);
    PQfinish(pg);
    return v;
}
