/* store-t.h: types of the store layer (functions in store.h). */
#pragma once

#include <stdbool.h>

#include <stdint.h>

struct store;
struct store_tx;

struct store_options {
    const char *url; /* libpq connection URI or key=value string; borrowed. The
                      * tenant-facing role (orch_app): tenant transactions run here */
    /* The system role's connection (orch_system); borrowed. System transactions run here,
     * on a pool of their own. NULL: this store has no system scope
     * (store_tx_begin_system() returns -EPERM). */
    const char *system_url;
    int pool_size;                /* connections at most, per pool, >= 1 */
    int64_t connect_timeout_ms;   /* per connection attempt */
    int64_t acquire_timeout_ms;   /* waiting for a free connection */
    int64_t statement_timeout_ms; /* 0 = none; set on every connection */
    const char *application_name; /* shows in pg_stat_activity; borrowed; NULL = "orchd" */
};

/* A statement known at compile time. Declare them static const: the pool prepares each one
 * once per connection, under its name, the first time it runs there.
 *     static const struct store_stmt q_get_queue = STORE_STMT(
 *         "queue_get", "SELECT name FROM queues WHERE id = $1", 1);
 */
struct store_stmt {
    const char *name; /* unique across the program */
    const char *sql;
    int nparams;
    /* Planned at each execution with its parameters' values (libpq's PQexecParams), never
     * prepared: for a statement of optional filters ("$n IS NULL OR ..."), whose generic
     * plan can use none of them, and whose plan depends on the tenant in scope. */
    bool plan_each_time;
};

#define STORE_STMT(n, q, np)                                                                       \
    {                                                                                              \
        .name = (n), .sql = (q), .nparams = (np)                                                   \
    }
/* A statement planned at each execution (plan_each_time). */
#define STORE_STMT_PLANNED(n, q, np)                                                               \
    {                                                                                              \
        .name = (n), .sql = (q), .nparams = (np), .plan_each_time = true                           \
    }

struct store_stats {
    int size;          /* connections open */
    int idle;          /* of which idle */
    int waiting;       /* threads waiting for a connection */
    uint64_t acquired; /* transactions begun since open */
    uint64_t reconnects;
};
