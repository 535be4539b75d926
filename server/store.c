/* store.c: PostgreSQL connection pool and tenant-scoped transactions (see store.h). */
#include "server/store.h"

#include "common/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/id.h"
#include "common/log.h"

/* Statements one connection can have prepared; more is a programming error. */
#define STORE_MAX_PREPARED 512

struct store_conn {
    PGconn *pg;
    const struct store_stmt **prepared; /* statements prepared on this connection */
    size_t n_prepared;
    bool broken; /* lost mid-transaction: reset before reuse */
    struct store_conn *next_idle;
};

/* A store is one pool, of connections of one role. The store store_open() returns is the
 * tenant-facing role's pool and owns a second one, of the system role, for system-scope
 * transactions (store.h); a system pool has no system pool of its own. */
struct store {
    char *url;
    char *application_name;
    int pool_size;
    int64_t connect_timeout_ms;
    int64_t acquire_timeout_ms;
    int64_t statement_timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct store_conn *idle; /* stack of idle connections */
    int open;                /* connections open or being opened */
    int n_idle;
    int waiting;
    uint64_t acquired;
    uint64_t reconnects;

    bool is_system;       /* this pool's role is the system scope */
    struct store *system; /* owned: the system role's pool; NULL when not configured */
    /* The database could not be reached at the last attempt: said once when it happens and
     * once when it ends (store_mark_reachable()), never per retry. Both pools share the
     * tenant pool's flag (reach), so an outage is one line, not one per pool. */
    atomic_bool unreachable;
    atomic_bool *reach;
};

struct store_tx {
    struct store *store;
    struct store_conn *conn;
    int error; /* first error, 0 while the transaction is healthy */
    char tenant[ID_STR_LEN];
    char sqlstate[6];
    char errmsg[256];
    char errdetail[512];
};

int store_error_from_sqlstate(const char *s)
{
    if (!s || strlen(s) != 5)
        return -EIO;
    if (strcmp(s, "23505") == 0)
        return -EEXIST;
    if (strcmp(s, "23503") == 0)
        return -ENOENT;
    if (strcmp(s, "23502") == 0 || strcmp(s, "23514") == 0 || strncmp(s, "22", 2) == 0)
        return -EINVAL;
    if (strcmp(s, "42501") == 0)
        return -EACCES;
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
        return -EAGAIN;
    if (strcmp(s, "57014") == 0)
        return -ETIMEDOUT;
    if (strncmp(s, "08", 2) == 0 || strncmp(s, "57P0", 4) == 0)
        return -ECONNRESET;
    if (strncmp(s, "53", 2) == 0)
        return -ENOSPC;
    if (strcmp(s, "OQ001") == 0) /* quota_acquire(): sql/0002_api.sql */
        return -EDQUOT;
    return -EIO;
}

static void conn_free(struct store_conn *c)
{
    if (!c)
        return;
    PQfinish(c->pg);
    free(c->prepared);
    free(c);
}

/* Log the database's reachability when it changes: during an outage every round of every
 * thread fails the same way, and one line per state change says it all. why: the failure
 * (borrowed), NULL when reachable. */
static void store_mark_reachable(struct store *s, const char *why)
{
    bool down = why != NULL;
    if (atomic_exchange(s->reach, down) == down)
        return;
    if (down)
        log_error("op=store state=unreachable error=\"database unreachable: %s\"", why);
    else
        log_info("op=store state=reachable msg=\"database reachable again\"");
}

/* Per-connection settings, applied after every (re)connect. */
static int conn_setup(struct store *store, struct store_conn *c)
{
    char sql[128];
    /* UTC, so timestamps PostgreSQL formats into JSON read the same from every node. */
    snprintf(sql, sizeof(sql), "SET statement_timeout = %lld; SET TimeZone = 'UTC'",
             (long long)store->statement_timeout_ms);
    PGresult *r = PQexec(c->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    c->n_prepared = 0;
    c->broken = false;
    return ok ? 0 : -ECONNRESET;
}

static int conn_open(struct store *store, struct store_conn **ret, char *err, size_t errlen)
{
    char timeout[32];
    /* libpq takes whole seconds; round up so a sub-second setting still limits. */
    snprintf(timeout, sizeof(timeout), "%lld",
             (long long)((store->connect_timeout_ms + 999) / 1000));
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {store->url, timeout, store->application_name, NULL};

    _cleanup_free_ struct store_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->prepared = calloc(STORE_MAX_PREPARED, sizeof(*c->prepared));
    if (!c->prepared)
        return -ENOMEM;
    /* expand_dbname: the URL's own parameters win over nothing, and ours fill the rest. */
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg) {
        free(c->prepared);
        return -ENOMEM;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        if (err) {
            /* The message never holds the password; trim its trailing newline. */
            snprintf(err, errlen, "%s", PQerrorMessage(c->pg));
            size_t n = strlen(err);
            while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
                err[--n] = '\0';
        }
        PQfinish(c->pg);
        free(c->prepared);
        return -ECONNREFUSED;
    }
    if (conn_setup(store, c) < 0) {
        if (err)
            snprintf(err, errlen, "could not apply session settings");
        PQfinish(c->pg);
        free(c->prepared);
        return -ECONNRESET;
    }
    *ret = TAKE_PTR(c);
    return 0;
}

/* The role a pool connects as decides what its transactions reach (sql/0008_system_role.sql),
 * so a role that does not fit its pool is refused at open, not found out by a wrong answer
 * later: a tenant pool that could reach the system scope would serve tenants with every
 * tenant's rows, and a system pool that cannot would see nothing and fail quietly. */
static int pool_check_role(struct store *s, struct store_conn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c->pg, "SELECT current_user, r.rolsuper OR r.rolbypassrls,"
                                "       pg_has_role(current_user, 'orch_system', 'MEMBER')"
                                "  FROM pg_roles r WHERE r.rolname = current_user");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        if (err)
            snprintf(err, errlen,
                     "checking the %s connection's role: %s (the role orch_system must exist; "
                     "see docs/operations.md)",
                     s->is_system ? "system" : "tenant", msg ? msg : "no answer");
        PQclear(r);
        return -EPERM;
    }
    const char *role = PQgetvalue(r, 0, 0);
    bool unbounded = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    bool system = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    int ret = 0;
    if (unbounded) {
        if (err)
            snprintf(err, errlen,
                     "the %s connection's role %s is a superuser or has BYPASSRLS: row-level "
                     "security would not hold for it",
                     s->is_system ? "system" : "tenant", role);
        ret = -EPERM;
    } else if (!s->is_system && system) {
        if (err)
            snprintf(err, errlen,
                     "the tenant connection's role %s is a member of orch_system: it would "
                     "reach every tenant's rows; connect as orch_app",
                     role);
        ret = -EPERM;
    } else if (s->is_system && !system) {
        if (err)
            snprintf(err, errlen,
                     "the system connection's role %s is not a member of orch_system: "
                     "connect as orch_system",
                     role);
        ret = -EPERM;
    }
    PQclear(r);
    return ret;
}

static int pool_open(const struct store_options *opts, const char *url, bool is_system,
                     struct store **ret, char *err, size_t errlen)
{
    _cleanup_free_ struct store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->is_system = is_system;
    s->reach = &s->unreachable;
    s->url = strdup(url);
    s->application_name = strdup(opts->application_name ? opts->application_name : "orchd");
    if (!s->url || !s->application_name) {
        free(s->url);
        free(s->application_name);
        return -ENOMEM;
    }
    s->pool_size = opts->pool_size;
    s->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    s->acquire_timeout_ms = opts->acquire_timeout_ms > 0 ? opts->acquire_timeout_ms : 5000;
    s->statement_timeout_ms = opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->freed, &ca);
    pthread_condattr_destroy(&ca);

    struct store_conn *c = NULL;
    int r = conn_open(s, &c, err, errlen);
    if (r < 0) {
        store_close(TAKE_PTR(s));
        return r;
    }
    s->idle = c;
    s->open = 1;
    s->n_idle = 1;
    r = pool_check_role(s, c, err, errlen);
    if (r < 0) {
        store_close(TAKE_PTR(s));
        return r;
    }
    *ret = TAKE_PTR(s);
    return 0;
}

int store_open(const struct store_options *opts, struct store **ret, char *err, size_t errlen)
{
    if (!opts || !opts->url || opts->pool_size < 1)
        return -EINVAL;

    struct store *s = NULL;
    int r = pool_open(opts, opts->url, false, &s, err, errlen);
    if (r < 0)
        return r;
    if (opts->system_url) {
        r = pool_open(opts, opts->system_url, true, &s->system, err, errlen);
        if (r < 0) {
            store_close(s);
            return r;
        }
        s->system->reach = &s->unreachable;
    }
    *ret = s;
    return 0;
}

void store_close(struct store *store)
{
    if (!store)
        return;
    store_close(store->system);
    while (store->idle) {
        struct store_conn *c = store->idle;
        store->idle = c->next_idle;
        conn_free(c);
    }
    pthread_mutex_destroy(&store->lock);
    pthread_cond_destroy(&store->freed);
    free(store->url);
    free(store->application_name);
    free(store);
}

/* Give up c's slot (c closed, or never opened when c is NULL). */
static void pool_discard(struct store *s, struct store_conn *c)
{
    conn_free(c);
    pthread_mutex_lock(&s->lock);
    s->open--;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

/* Open c's connection again (the server closed it: restart, idle timeout, admin kill).
 * Returns 0, or -ECONNRESET with c unusable (the caller discards it). */
static int conn_revive(struct store *s, struct store_conn *c)
{
    PQreset(c->pg);
    pthread_mutex_lock(&s->lock);
    s->reconnects++;
    pthread_mutex_unlock(&s->lock);
    if (PQstatus(c->pg) != CONNECTION_OK || conn_setup(s, c) < 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(c->pg));
        size_t n = strlen(why);
        while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
            why[--n] = '\0';
        log_debug("op=store.reconnect error=\"%s\"", why);
        store_mark_reachable(s, why[0] ? why : "reconnect failed");
        return -ECONNRESET;
    }
    store_mark_reachable(s, NULL);
    return 0;
}

static int pool_acquire(struct store *s, struct store_conn **ret)
{
    struct timespec deadline;
    clock_deadline(CLOCK_MONOTONIC, s->acquire_timeout_ms, &deadline);

    pthread_mutex_lock(&s->lock);
    while (!s->idle && s->open >= s->pool_size) {
        s->waiting++;
        int r = pthread_cond_timedwait(&s->freed, &s->lock, &deadline);
        s->waiting--;
        if (r == ETIMEDOUT && !s->idle && s->open >= s->pool_size) {
            pthread_mutex_unlock(&s->lock);
            return -ETIMEDOUT;
        }
    }
    struct store_conn *c = s->idle;
    if (c) {
        s->idle = c->next_idle;
        s->n_idle--;
        c->next_idle = NULL;
    } else {
        s->open++; /* reserve the slot; connect outside the lock */
    }
    s->acquired++;
    pthread_mutex_unlock(&s->lock);

    if (!c) {
        char err[256] = "";
        int r = conn_open(s, &c, err, sizeof(err));
        if (r < 0) {
            /* Said once per outage (store_mark_reachable()), not per attempt. */
            log_debug("op=store.connect error=\"%s\"", err[0] ? err : strerror(-r));
            if (r == -ECONNREFUSED)
                store_mark_reachable(s, err[0] ? err : strerror(-r));
            pool_discard(s, NULL);
            return r == -ECONNREFUSED ? -ECONNRESET : r;
        }
        store_mark_reachable(s, NULL);
    } else if (c->broken || PQstatus(c->pg) != CONNECTION_OK) {
        if (conn_revive(s, c) < 0) {
            pool_discard(s, c);
            return -ECONNRESET;
        }
    }
    *ret = c;
    return 0;
}

static void pool_release(struct store *s, struct store_conn *c)
{
    pthread_mutex_lock(&s->lock);
    c->next_idle = s->idle;
    s->idle = c;
    s->n_idle++;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

/* Record the first failure of tx from a result (or from the connection when r is NULL). */
static int tx_fail(struct store_tx *tx, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (PQstatus(tx->conn->pg) != CONNECTION_OK) {
        state = "08006";
        tx->conn->broken = true;
    }
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (!msg)
        msg = PQerrorMessage(tx->conn->pg);
    if (!state)
        state = "XX000";
    if (tx->error == 0) {
        snprintf(tx->sqlstate, sizeof(tx->sqlstate), "%s", state);
        snprintf(tx->errmsg, sizeof(tx->errmsg), "%s", msg);
        snprintf(tx->errdetail, sizeof(tx->errdetail), "%s", detail ? detail : "");
        size_t n = strlen(tx->errmsg);
        while (n > 0 && tx->errmsg[n - 1] == '\n')
            tx->errmsg[--n] = '\0';
        tx->error = store_error_from_sqlstate(state);
    }
    if (tx->error == -EIO || tx->error == -ECONNRESET)
        log_warn("op=store.%s tenant=%s sqlstate=%s error=\"%s\"", what,
                 tx->tenant[0] ? tx->tenant : "system", tx->sqlstate, tx->errmsg);
    else
        log_debug("op=store.%s tenant=%s sqlstate=%s", what, tx->tenant[0] ? tx->tenant : "system",
                  tx->sqlstate);
    return tx->error;
}

/* Check out a connection of pool s into tx and run begin_sql (BEGIN and a SELECT) there.
 * A connection the server closed while it sat idle in the pool (a restart, an idle timeout,
 * an administrator's kill) is found out here, before anything of the transaction ran, so
 * running it on another is safe: the dead one goes back marked broken, and its next
 * checkout reconnects it (pool_acquire). Bounded by the pool's size, for a pool full of
 * them; when the database is really down, that reconnect fails and so does this. Without
 * it, every pool would need the readiness probe to walk through its dead connections before
 * requests stopped failing after the database came back. On failure tx->conn is released
 * by the caller's store_tx_rollback(). */
static int pool_begin(struct store *s, const char *begin_sql, struct store_tx *tx)
{
    tx->store = s;
    for (int attempt = 0;; attempt++) {
        int r = pool_acquire(s, &tx->conn);
        if (r < 0)
            return r;
        PGresult *res = PQexec(tx->conn->pg, begin_sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            PQclear(res);
            if (atomic_load(s->reach))
                store_mark_reachable(s, NULL); /* a pooled connection outlived the outage */
            return 0;
        }
        bool lost =
            PQstatus(tx->conn->pg) != CONNECTION_OK ||
            store_error_from_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE)) == -ECONNRESET;
        if (lost && attempt < s->pool_size) {
            PQclear(res);
            tx->conn->broken = true;
            pool_release(s, tx->conn);
            tx->conn = NULL;
            continue;
        }
        r = tx_fail(tx, res, "begin");
        PQclear(res);
        return r;
    }
}

/* The scope picks the pool, and so the role: no setting chooses it. tenant_id NULL is the
 * system scope. Returns 0 with *ret, -EINVAL (not a canonical UUID) or -EPERM (no system
 * pool). */
static int scope_pool(struct store *store, const char *tenant_id, struct store **ret)
{
    if (tenant_id && !id_is_valid(tenant_id))
        return -EINVAL;
    if (!tenant_id && !store->system)
        return -EPERM;
    *ret = tenant_id ? store : store->system;
    return 0;
}

static int tx_begin(struct store *store, const char *tenant_id, unsigned flags,
                    struct store_tx **ret)
{
    struct store *s;
    int r = scope_pool(store, tenant_id, &s);
    if (r < 0)
        return r;

    _cleanup_free_ struct store_tx *tx = calloc(1, sizeof(*tx));
    if (!tx)
        return -ENOMEM;

    /* One round trip: BEGIN, the scope and the options in one simple-protocol message. The
     * tenant id was checked to be a canonical UUID above, so it is safe in the text. The
     * system scope declares nothing: it is the pool's role. */
    char sql[256];
    const char *async = "set_config('synchronous_commit', 'off', true)";
    bool is_async = flags & STORE_TX_ASYNC_COMMIT;
    const char *begin = flags & STORE_TX_READ_ONLY ? "BEGIN READ ONLY" : "BEGIN";
    if (tenant_id) {
        snprintf(tx->tenant, sizeof(tx->tenant), "%s", tenant_id);
        snprintf(sql, sizeof(sql), "%s; SELECT set_config('app.tenant_id', '%s', true)%s%s", begin,
                 tenant_id, is_async ? ", " : "", is_async ? async : "");
    } else {
        snprintf(sql, sizeof(sql), "%s; SELECT %s", begin, is_async ? async : "true");
    }
    r = pool_begin(s, sql, tx);
    if (r < 0) {
        store_tx_rollback(TAKE_PTR(tx));
        return r;
    }
    *ret = TAKE_PTR(tx);
    return 0;
}

int store_tx_begin(struct store *store, const char *tenant_id, unsigned flags,
                   struct store_tx **ret)
{
    return tx_begin(store, tenant_id, flags, ret);
}

int store_tx_begin_tenant(struct store *store, const char *tenant_id, struct store_tx **ret)
{
    if (!tenant_id)
        return -EINVAL;
    return tx_begin(store, tenant_id, 0, ret);
}

int store_tx_begin_system(struct store *store, struct store_tx **ret)
{
    return tx_begin(store, NULL, 0, ret);
}

static bool conn_has_prepared(const struct store_conn *c, const struct store_stmt *stmt)
{
    for (size_t i = 0; i < c->n_prepared; i++)
        if (c->prepared[i] == stmt)
            return true;
    return false;
}

static int result_rows(PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return PQntuples(res);
    const char *n = PQcmdTuples(res);
    if (!n || !*n)
        return 0;
    char *end = NULL;
    long v = strtol(n, &end, 10);
    return (end && *end == '\0' && v >= 0 && v <= INT32_MAX) ? (int)v : 0;
}

static int tx_finish_result(struct store_tx *tx, PGresult *res, PGresult **ret, const char *what)
{
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        int r = tx_fail(tx, res, what);
        PQclear(res);
        return r;
    }
    int rows = result_rows(res);
    if (ret)
        *ret = res;
    else
        PQclear(res);
    return rows;
}

int store_tx_exec(struct store_tx *tx, const struct store_stmt *stmt, const char *const *params,
                  PGresult **ret)
{
    return store_tx_exec_bin(tx, stmt, params, NULL, NULL, false, ret);
}

/* Prepare stmt on tx's connection unless it was already. Returns 0 or a store error (the
 * transaction failed). */
static int conn_prepare(struct store_tx *tx, const struct store_stmt *stmt)
{
    struct store_conn *c = tx->conn;
    if (conn_has_prepared(c, stmt))
        return 0;
    if (c->n_prepared >= STORE_MAX_PREPARED)
        return -E2BIG;
    PGresult *p = PQprepare(c->pg, stmt->name, stmt->sql, stmt->nparams, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK) {
        int r = tx_fail(tx, p, "prepare");
        log_error("op=store.prepare stmt=%s sqlstate=%s error=\"%s\"", stmt->name, tx->sqlstate,
                  tx->errmsg);
        PQclear(p);
        return r;
    }
    PQclear(p);
    c->prepared[c->n_prepared++] = stmt;
    return 0;
}

int store_tx_exec_bin(struct store_tx *tx, const struct store_stmt *stmt, const char *const *params,
                      const int *lengths, const int *formats, bool binary_result, PGresult **ret)
{
    if (tx->error)
        return tx->error;
    struct store_conn *c = tx->conn;
    PGresult *res;
    if (stmt->plan_each_time) {
        /* The unnamed statement: planned with these values, as a custom plan always is. */
        res = PQexecParams(c->pg, stmt->sql, stmt->nparams, NULL, params, lengths, formats,
                           binary_result ? 1 : 0);
        return tx_finish_result(tx, res, ret, stmt->name);
    }
    int r = conn_prepare(tx, stmt);
    if (r < 0)
        return r;
    res = PQexecPrepared(c->pg, stmt->name, stmt->nparams, params, lengths, formats,
                         binary_result ? 1 : 0);
    return tx_finish_result(tx, res, ret, stmt->name);
}

int store_tx_exec_sql(struct store_tx *tx, const char *sql, PGresult **ret)
{
    if (tx->error)
        return tx->error;
    PGresult *res = PQexec(tx->conn->pg, sql);
    return tx_finish_result(tx, res, ret, "exec_sql");
}

static void tx_end(struct store_tx *tx, const char *sql)
{
    PGresult *res = PQexec(tx->conn->pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        tx_fail(tx, res, "end");
    PQclear(res);
    /* A connection left inside a transaction (end failed) must not be reused as is. */
    if (PQtransactionStatus(tx->conn->pg) != PQTRANS_IDLE)
        tx->conn->broken = true;
    pool_release(tx->store, tx->conn);
    tx->conn = NULL;
}

int store_tx_commit(struct store_tx *tx)
{
    if (!tx)
        return -EINVAL;
    int r = tx->error;
    tx_end(tx, r ? "ROLLBACK" : "COMMIT");
    if (r == 0)
        r = tx->error; /* the COMMIT itself can fail (deferred constraint, serialization) */
    free(tx);
    return r;
}

void store_tx_rollback(struct store_tx *tx)
{
    if (!tx)
        return;
    if (tx->conn)
        tx_end(tx, "ROLLBACK");
    free(tx);
}

const char *store_tx_sqlstate(const struct store_tx *tx)
{
    return tx->sqlstate;
}

const char *store_tx_errmsg(const struct store_tx *tx)
{
    return tx->errmsg;
}

const char *store_tx_errdetail(const struct store_tx *tx)
{
    return tx->errdetail;
}

void store_stats(struct store *s, struct store_stats *ret)
{
    pthread_mutex_lock(&s->lock);
    ret->size = s->open;
    ret->idle = s->n_idle;
    ret->waiting = s->waiting;
    ret->acquired = s->acquired;
    ret->reconnects = s->reconnects;
    pthread_mutex_unlock(&s->lock);
}

bool store_stats_system(struct store *s, struct store_stats *ret)
{
    if (!s->system) {
        memset(ret, 0, sizeof(*ret));
        return false;
    }
    store_stats(s->system, ret);
    return true;
}

int store_pool_size(const struct store *s)
{
    return s->pool_size;
}

int store_ping(struct store *store)
{
    struct store *pools[] = {store, store->system};
    for (size_t i = 0; i < 2 && pools[i]; i++) {
        struct store_tx *tx = calloc(1, sizeof(*tx));
        if (!tx)
            return -ENOMEM;
        int r = pool_begin(pools[i], "BEGIN; SELECT true", tx);
        if (r < 0) {
            store_tx_rollback(tx);
            return r;
        }
        r = store_tx_commit(tx);
        if (r < 0)
            return r;
    }
    return 0;
}

int store_exec_once(struct store *store, const char *tenant_id, const struct store_stmt *stmt,
                    const char *const *params, PGresult **ret)
{
    struct store_tx *tx = NULL;
    int r = tenant_id ? store_tx_begin_tenant(store, tenant_id, &tx)
                      : store_tx_begin_system(store, &tx);
    if (r < 0)
        return r;
    PGresult *res = NULL;
    int rows = store_tx_exec(tx, stmt, params, ret ? &res : NULL);
    r = store_tx_commit(tx);
    if (r < 0 || rows < 0) {
        PQclear(res);
        return r < 0 ? r : rows;
    }
    if (ret)
        *ret = res;
    return rows;
}

/* Read the next result of a pipeline and the NULL that ends it. Returns the result (NULL
 * when the connection broke before it). */
static PGresult *pipeline_next(PGconn *pg)
{
    PGresult *res = PQgetResult(pg);
    if (res && PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        PGresult *end = PQgetResult(pg);
        PQclear(end); /* NULL, unless the stream is broken */
    }
    return res;
}

/* The statements around a pipelined read, prepared once per connection like any other, so
 * that PostgreSQL does not parse them on every read. */
static const struct store_stmt q_read_begin = STORE_STMT("store_read_begin", "BEGIN READ ONLY", 0);
static const struct store_stmt q_read_scope =
    STORE_STMT("store_read_scope", "SELECT set_config('app.tenant_id', $1, true)", 1);
static const struct store_stmt q_read_commit = STORE_STMT("store_read_commit", "COMMIT", 0);

/* Send BEGIN READ ONLY, the scope, stmt and COMMIT on tx->conn in one pipeline and read
 * the results. Returns the statement's rows with *ret set, a store error, or -EAGAIN when
 * the connection was found dead before anything ran (the caller tries another). */
static int read_pipelined(struct store_tx *tx, const struct store_stmt *stmt,
                          const char *const *params, PGresult **ret)
{
    PGconn *pg = tx->conn->pg;
    int r = conn_prepare(tx, &q_read_begin);
    if (r >= 0 && tx->tenant[0])
        r = conn_prepare(tx, &q_read_scope);
    if (r >= 0)
        r = conn_prepare(tx, &q_read_commit);
    if (r >= 0)
        r = conn_prepare(tx, stmt);
    if (r < 0)
        return PQstatus(pg) != CONNECTION_OK ? -EAGAIN : r;
    const char *scope[] = {tx->tenant};
    bool sent = PQenterPipelineMode(pg) == 1 &&
                PQsendQueryPrepared(pg, q_read_begin.name, 0, NULL, NULL, NULL, 0) == 1 &&
                (!tx->tenant[0] ||
                 PQsendQueryPrepared(pg, q_read_scope.name, 1, scope, NULL, NULL, 0) == 1) &&
                PQsendQueryPrepared(pg, stmt->name, stmt->nparams, params, NULL, NULL, 0) == 1 &&
                PQsendQueryPrepared(pg, q_read_commit.name, 0, NULL, NULL, NULL, 0) == 1 &&
                PQpipelineSync(pg) == 1;
    if (!sent) {
        bool lost = PQstatus(pg) != CONNECTION_OK;
        r = tx_fail(tx, NULL, "pipeline");
        tx->conn->broken = true;
        return lost ? -EAGAIN : r;
    }

    PGresult *begin = pipeline_next(pg);
    bool begun = begin && PQresultStatus(begin) == PGRES_COMMAND_OK;
    if (!begun) {
        /* Nothing ran after a failed BEGIN; a dead connection is tried again elsewhere. */
        bool lost = PQstatus(pg) != CONNECTION_OK ||
                    store_error_from_sqlstate(begin ? PQresultErrorField(begin, PG_DIAG_SQLSTATE)
                                                    : NULL) == -ECONNRESET;
        r = tx_fail(tx, begin, "begin");
        PQclear(begin);
        tx->conn->broken = true;
        return lost ? -EAGAIN : r;
    }
    PQclear(begin);
    if (tx->tenant[0]) {
        PGresult *set = pipeline_next(pg);
        if (!set || PQresultStatus(set) != PGRES_TUPLES_OK)
            tx_fail(tx, set, "scope");
        PQclear(set);
    }
    PGresult *res = pipeline_next(pg);
    int rows = 0;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        rows = result_rows(res);
    } else if (st != PGRES_PIPELINE_ABORTED || !tx->error) {
        tx_fail(tx, res, stmt->name);
    }
    PGresult *commit = pipeline_next(pg);
    if (!tx->error && (!commit || PQresultStatus(commit) != PGRES_COMMAND_OK))
        tx_fail(tx, commit, "commit");
    PQclear(commit);
    PGresult *sync = pipeline_next(pg);
    if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC)
        tx->conn->broken = true;
    PQclear(sync);
    if (PQexitPipelineMode(pg) != 1)
        tx->conn->broken = true;
    /* After an error inside BEGIN ... COMMIT the transaction is still open, failed. */
    if (!tx->conn->broken && PQtransactionStatus(pg) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(pg, "ROLLBACK");
        PQclear(rb);
        if (PQtransactionStatus(pg) != PQTRANS_IDLE)
            tx->conn->broken = true;
    }
    if (tx->error) {
        PQclear(res);
        return tx->error;
    }
    if (ret)
        *ret = res;
    else
        PQclear(res);
    return rows;
}

int store_read_once(struct store *store, const char *tenant_id, const struct store_stmt *stmt,
                    const char *const *params, PGresult **ret)
{
    struct store *s;
    int r = scope_pool(store, tenant_id, &s);
    if (r < 0)
        return r;
    struct store_tx tx = {.store = s};
    if (tenant_id)
        snprintf(tx.tenant, sizeof(tx.tenant), "%s", tenant_id);
    for (int attempt = 0;; attempt++) {
        r = pool_acquire(s, &tx.conn);
        if (r < 0)
            return r;
        tx.error = 0;
        r = read_pipelined(&tx, stmt, params, ret);
        pool_release(s, tx.conn);
        tx.conn = NULL;
        if (r != -EAGAIN)
            return r;
        if (attempt >= s->pool_size)
            return tx.error ? tx.error : -ECONNRESET;
    }
}
