/* conf.h: table-driven configuration (nginx style): one table describes every key with
 * its type, bounds and default; a file of `key = value` lines and the environment fill a
 * caller-owned struct.
 *
 * Precedence, lowest first: table default, file, environment. The environment variable of
 * key "db.pool_size" with prefix "ORCHD" is ORCHD_DB_POOL_SIZE (upper-cased, '.' and '-'
 * become '_').
 *
 * File syntax: one `key = value` per line; blank lines and lines starting with '#' are
 * ignored; values may be wrapped in double quotes (then \" and \\ escapes apply);
 * surrounding blanks are trimmed. An unknown key, a duplicate key, a malformed line or a
 * value out of bounds is an error that names the file, line, key and the expected type.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum conf_type {
    CONF_STRING,   /* char *: malloc'd, freed by conf_free(); min/max bound the length */
    CONF_INT,      /* int64_t: min/max bound the value */
    CONF_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
    CONF_DURATION, /* int64_t milliseconds: "250ms", "30s", "5m", "1h", bare number = ms;
                      min/max in ms */
    CONF_SIZE,     /* int64_t bytes: "512", "64k", "16M", "1G" (powers of 1024); min/max */
    CONF_ENUM,     /* int: index into choices (NULL-terminated) */
};

struct conf_field {
    const char *name; /* key, e.g. "db.url" */
    enum conf_type type;
    size_t offset;              /* offsetof(target struct, member) */
    int64_t min, max;           /* see conf_type; max 0 on CONF_STRING = 4096 */
    const char *def;            /* default as text; NULL = required (error when absent) */
    const char *const *choices; /* CONF_ENUM only */
    const char *help;           /* one line for --help and docs */
};

struct conf_error {
    char msg[512]; /* "config: /etc/orch/orchd.conf:12: key 'http.port': expected an integer
                      in [1, 65535], got 'abc'" */
};

/* Apply defaults, then path (skipped when NULL; a missing file is an error), then the
 * environment (skipped when env_prefix is NULL). Returns 0, -EINVAL (with err filled) or
 * -ENOMEM. On failure, strings already set are freed with conf_free(). */
int conf_load(const struct conf_field *fields, size_t n, void *target, const char *path,
              const char *env_prefix, struct conf_error *err);

/* Set one key from text (as the file would). Same errors; origin names the source in the
 * message (e.g. "--set"). */
int conf_set(const struct conf_field *fields, size_t n, void *target, const char *key,
             const char *value, const char *origin, struct conf_error *err);

/* Free the strings the table owns in target. Safe to call twice. */
void conf_free(const struct conf_field *fields, size_t n, void *target);

/* Print "key  type  default  help" lines for every field (for --help-config). */
void conf_describe(const struct conf_field *fields, size_t n, int fd);
