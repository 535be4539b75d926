/* migrate.h: the schema migrations (sql/NNNN_name.sql, embedded at build time) and
 * `orchd migrate`, which applies them.
 *
 * A run takes an advisory lock (so two nodes migrating at once queue up), applies every
 * pending migration and records each in orch_schema_version, then applies every file of
 * sql/functions/ (function and view bodies, CREATE OR REPLACE only) whatever their state,
 * recording each file's checksum in orch_schema_functions; all in one transaction: either
 * the database reaches the binary's version and functions or it is left as it was. A
 * database whose version is newer than the binary's is refused, as is one where an applied
 * migration's checksum differs from the binary's copy.
 */
#pragma once

#include <stddef.h>

struct migration {
    int version;
    const char *name;
    const char *sha256; /* hex of the file's bytes */
    const char *sql;
};

extern const struct migration migrate_list[];
extern const int migrate_count;
/* sql/functions/NN_name.sql in name order; version is the position (1..n). */
extern const struct migration migrate_functions[];
extern const int migrate_nfunctions;

struct migrate_report {
    int from_version; /* 0 for an empty database */
    int to_version;
    int applied;
    int functions_changed; /* sql/functions/ files whose checksum differed from the last run's */
};

/* Connect to url (the schema owner's connection) and migrate to the newest version.
 * Returns 0 with *rep filled, -ECONNREFUSED (cannot connect), -EPROTO (database newer than
 * this binary or checksum mismatch), -EIO (a migration failed); err holds one line saying
 * why, without secrets. */
int migrate_run(const char *url, struct migrate_report *rep, char *err, size_t errlen);

/* The schema version recorded in the database behind url (0 when none), or a negative
 * error as migrate_run(). */
int migrate_db_version(const char *url, char *err, size_t errlen);
