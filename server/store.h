/* store.h: orchd's PostgreSQL access: connection pools, tenant-scoped transactions,
 * prepared statements, and libpq errors translated into -errno codes.
 *
 * Every transaction declares its scope when it begins, and the database enforces it
 * through row-level security (sql/0001_init.sql, sql/0008_system_role.sql):
 *   store_tx_begin_tenant(): only the rows of one tenant are visible or writable; runs on
 *       the tenant-facing role's pool (orch_app), with the tenant set by
 *       set_config('app.tenant_id', ..., true), so it ends with the transaction and a
 *       pooled connection never carries it into the next one;
 *   store_tx_begin_system(): all rows; for cross-tenant work only (dispatcher, reaper,
 *       operator API, the lookup of a credential before its tenant is known). It runs on
 *       a second pool, connected as the system role (orch_system): the system scope is
 *       that role, not a setting, so nothing a tenant transaction sets can widen it.
 * The two pools never lend each other a connection.
 *
 * Threads: the pool is thread-safe; one store_tx is used by one thread at a time.
 * Calls block (the connection pool is sized to the worker threads that use it).
 */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/store-t.h"

/* Open a pool of up to opts->pool_size connections to opts->url and, when
 * opts->system_url is set, another of as many to it. One connection of each is made at
 * once, so a wrong URL or password fails here, with the reason in err; so does a role
 * that does not fit its pool: the tenant pool's role must not reach the system scope
 * (superuser, BYPASSRLS, or member of orch_system), the system pool's must be a member of
 * orch_system and neither superuser nor BYPASSRLS.
 * Returns 0 with *ret set (free with store_close()), -ECONNREFUSED, -EPERM (a role does
 * not fit, or orch_system does not exist), -EINVAL, -ENOMEM. */
int store_open(const struct store_options *opts, struct store **ret, char *err, size_t errlen);

/* Close every connection. Accepts NULL. All transactions must have ended. */
void store_close(struct store *store);

/* Check out a connection of the scope's pool (waiting at most opts->acquire_timeout_ms for
 * one), BEGIN, and declare the scope. tenant_id must be a canonical UUID (else -EINVAL).
 * Returns 0 with *ret set, -ETIMEDOUT when no connection came free, -ECONNRESET when the
 * database cannot be reached, -EPERM for the system scope of a store opened without
 * system_url, -EINVAL, -ENOMEM. */
int store_tx_begin_tenant(struct store *store, const char *tenant_id, struct store_tx **ret);
int store_tx_begin_system(struct store *store, struct store_tx **ret);

/* Transaction options for store_tx_begin(). */
enum store_tx_flags {
    /* COMMIT returns before the WAL reaches disk (synchronous_commit = off for this
     * transaction): a database crash may lose the last few hundred milliseconds of such
     * transactions, never corrupt anything. For counters that may lose a little on a crash,
     * never for jobs. */
    STORE_TX_ASYNC_COMMIT = 1 << 0,
    /* BEGIN READ ONLY: a write fails (SQLSTATE 25006, -EIO). Its COMMIT writes no WAL and
     * waits for no flush. For the requests that only read (GET). */
    STORE_TX_READ_ONLY = 1 << 1,
};

/* The general form: tenant_id NULL = system scope. */
int store_tx_begin(struct store *store, const char *tenant_id, unsigned flags,
                   struct store_tx **ret);

/* Run a registered statement with text parameters (NULL = SQL NULL). Prepares it on the
 * connection the first time. On success, when ret is not NULL, *ret holds the result (also
 * with 0 rows), which the caller frees with PQclear(). On failure *ret is untouched (start
 * it at NULL) and the transaction is failed: later calls return the same error and
 * store_tx_commit() rolls back.
 * Returns the number of rows affected or returned (>= 0), or a store error (see
 * store_error_from_sqlstate()). */
int store_tx_exec(struct store_tx *tx, const struct store_stmt *stmt, const char *const *params,
                  PGresult **ret);

/* The same with binary parameters and results (libpq's PQexecPrepared): lengths and
 * formats per parameter (NULL: all text); binary_result: every column of the result in
 * binary form (a bytea is then its raw bytes). */
int store_tx_exec_bin(struct store_tx *tx, const struct store_stmt *stmt, const char *const *params,
                      const int *lengths, const int *formats, bool binary_result, PGresult **ret);

/* Run ad-hoc SQL without parameters (simple query protocol; several statements allowed).
 * For migrations and tests, never with input from a request. Same returns as
 * store_tx_exec(). */
int store_tx_exec_sql(struct store_tx *tx, const char *sql, PGresult **ret);

/* COMMIT (or ROLLBACK when the transaction failed) and return the connection to the pool.
 * tx is freed in every case. Returns 0 or the error that failed the transaction. */
int store_tx_commit(struct store_tx *tx);
/* ROLLBACK and return the connection. Accepts NULL. */
void store_tx_rollback(struct store_tx *tx);

/* The SQLSTATE and primary message of the error that failed tx ("" when none). Borrowed,
 * valid until tx ends. Never contains parameter values. */
const char *store_tx_sqlstate(const struct store_tx *tx);
const char *store_tx_errmsg(const struct store_tx *tx);
/* The error's DETAIL field ("" when none); quota_acquire() puts JSON there. */
const char *store_tx_errdetail(const struct store_tx *tx);

/* Map a SQLSTATE to our error codes:
 *   23505 unique violation           -EEXIST
 *   23503 foreign key violation      -ENOENT
 *   23502, 23514, 22xxx bad data     -EINVAL
 *   42501 privilege / row security   -EACCES
 *   40001, 40P01 serialization       -EAGAIN (retry the transaction)
 *   57014 statement timeout          -ETIMEDOUT
 *   08xxx, 57P0x connection lost     -ECONNRESET
 *   53xxx out of resources           -ENOSPC
 *   OQ001 tenant quota exhausted     -EDQUOT (quota_acquire(), detail holds JSON)
 *   anything else                    -EIO */
int store_error_from_sqlstate(const char *sqlstate);

/* Statistics of the tenant pool, for metrics and tests. */
void store_stats(struct store *store, struct store_stats *ret);
/* The same of the system pool; false (and *ret zeroed) when there is none. */
bool store_stats_system(struct store *store, struct store_stats *ret);
/* Connections at most in each pool (store_options.pool_size). */
int store_pool_size(const struct store *store);

/* Whether the database answers on both pools: an empty transaction on a connection of the
 * tenant pool, then of the system pool (when configured), in no scope. For readiness
 * probes. Returns 0 or the first error, as store_tx_begin(). */
int store_ping(struct store *store);

/* Callback-free convenience for one-off statements: begin with the given scope
 * (tenant_id NULL = system), exec, commit. Same returns as store_tx_exec(). */
int store_exec_once(struct store *store, const char *tenant_id, const struct store_stmt *stmt,
                    const char *const *params, PGresult **ret);

/* store_exec_once() for a statement that only reads, in one round trip: BEGIN READ ONLY,
 * the scope, the statement and COMMIT are sent together (libpq's pipeline mode). A
 * connection found dead on the way is replaced and the whole tried again, which is safe
 * since nothing it ran could write. Same returns as store_tx_exec(); a statement that
 * writes fails (SQLSTATE 25006, -EIO). */
int store_read_once(struct store *store, const char *tenant_id, const struct store_stmt *stmt,
                    const char *const *params, PGresult **ret);
