/* harness.h: helpers for integration tests on the real PostgreSQL and RabbitMQ that
 * tools/test.sh starts. Each test makes its own database (th_db_create) and drops it
 * (th_db_drop), so tests never see each other's rows.
 *
 * Environment (exported by tools/test.sh, or by meson for binaries):
 *   ORCH_PG_PORT    the private PostgreSQL's port (roles orch_owner, orch_app, orch_system,
 *                   postgres)
 *   ORCH_AMQP_URL   the private RabbitMQ node's URL
 *   ORCH_TEST_ORCHD path of the orchd binary under test
 */
#pragma once

#include <sys/types.h>

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* A required environment variable; fails the test with a hint when missing. */
const char *th_env(const char *name);

/* URL of database db for role ("orch_owner", "orch_app", "orch_system" or "postgres"),
 * malloc'd. */
char *th_pg_url(const char *role, const char *db);

/* Create an empty database owned by orch_owner with a unique name written to name
 * (at least 64 bytes). */
void th_db_create(char *name, size_t len);
/* Create a database migrated by the real `orchd migrate`: a copy of a template it migrated
 * once for this orchd binary (made by the first caller). */
void th_db_create_migrated(char *name, size_t len);
/* Drop it, closing whatever is still connected. */
void th_db_drop(const char *name);

/* Connect as role to db; fails the test on error. Caller PQfinish()es. */
PGconn *th_pg_connect(const char *role, const char *db);
/* Run sql that must succeed; return its result (caller PQclear()s). */
PGresult *th_pg_ok(PGconn *pg, const char *sql);
/* First column of the first row as a long (sql must return one row). */
long th_pg_long(PGconn *pg, const char *sql);

struct th_run {
    int status;     /* exit status, or 128+signal */
    struct buf out; /* stdout */
    struct buf err; /* stderr */
};

/* Run argv with extra environment entries ("K=V", NULL-terminated; may be NULL) added
 * to ours, wait at most timeout_ms (the child is killed and the test fails past it), and
 * collect its output. Free with th_run_free(). */
void th_run(struct th_run *r, const char *const *argv, const char *const *env, int timeout_ms);
void th_run_free(struct th_run *r);

/* Remove dir and everything below it (a missing dir is fine); fails the test otherwise. */
void th_rm_rf(const char *dir);

/* The established TCP connections process pid holds to remote port `port` (from /proc). */
int th_tcp_conns(pid_t pid, int port);
/* The same, with each connection's local port and socket inode written to desc. */
int th_tcp_conns_desc(pid_t pid, int port, char *desc, size_t desc_len);

/* The live processes (zombies do not count) of a job's attempt, found by the
 * ORCH_JOB_ID=<job_id> and ORCH_JOB_EPOCH=<epoch> entries of their initial environment
 * (root reads every process's): whatever user they run as, and whatever pid they see in
 * their own PID namespace. epoch < 0: any attempt of the job; job_id NULL: any process
 * that holds `tag` ("K=V") instead. Each one found gets signal sig when sig > 0. Returns
 * how many were found. */
int th_job_procs(const char *job_id, long long epoch, const char *tag, int sig);

/* The text of b, "" when empty (a struct buf holds NULL until something is appended). */
static inline const char *th_str(const struct buf *b)
{
    return b->data ? b->data : "";
}

/* The shared services of tools/lib.sh, stopped and started from a test (which must then
 * run alone: is_parallel false). Need ORCH_STATE, ORCH_PG_PORT and ORCH_PG_HOST. */
/* Stop PostgreSQL (fast shutdown: sessions are ended) and wait until it has stopped. */
void th_pg_stop(void);
/* Start it again as tools/lib.sh did, and wait until it accepts connections. */
void th_pg_start(void);
/* Run `rabbitmqctl -q what` on the private node (e.g. "stop_app", "start_app",
 * "await_startup"); fails the test when it fails. */
void th_rabbitmqctl(const char *what);
