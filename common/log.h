/* log.h: leveled, structured logging to stderr (or a file, log_open_file()).
 *
 * One line per event: `ts=<RFC 3339 UTC, ms> level=<lvl> <caller's key=value fields>`.
 * Callers write their own fields in key=value form, e.g.
 *     log_info("op=migrate version=%d tenant=%s", v, tenant_id);
 * Values that may hold spaces or quotes go through log_quote(). Secrets are never logged.
 * Library code (common/, proto/) logs at debug level only.
 * Thread-safe: one write(2) per line.
 *
 * A thread may also hold a log context (log_ctx_push()): fields such as req=, tenant=,
 * job=, agent= that are appended to every line it logs until they are popped, so that the
 * lines written while handling one request or one job can be found together. A field the
 * caller wrote itself wins: the context's field of the same key is then left out; of two
 * pushes of one key, the later (inner) wins.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/printf.h"

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

/* Messages below level are dropped. Default: LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parse "debug", "info", "warn", "error" (case-insensitive). Returns 0 or -EINVAL;
 * *ret untouched on failure. */
int log_level_parse(const char *s, enum log_level *ret);
const char *log_level_name(enum log_level level);

/* Redirect output to fd (default 2); returns the previous one. For tests. */
int log_set_fd(int fd);

/* Log to the file at path from now on, appended to (created 0600; a file over 16 MiB is
 * first moved to path.1, replacing the one there). take_stderr: also point stderr (fd 2)
 * at it, for a process whose stderr goes nowhere (a Windows service). Call before other
 * threads log. Returns 0 or -errno (logging unchanged). */
int log_open_file(const char *path, bool take_stderr);

void log_emit(enum log_level level, const char *fmt, ...) ORCH_PRINTF(2, 3);
void log_emitv(enum log_level level, const char *fmt, va_list ap) ORCH_PRINTF(2, 0);

#define log_debug(...) log_emit(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_emit(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_emit(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_emit(LOG_LEVEL_ERROR, __VA_ARGS__)

/* The per-thread log context: at most LOG_CTX_MAX bytes of " key=value" fields. */
#define LOG_CTX_MAX 320

/* Append key=value (value quoted with log_quote(); NULL or "" adds nothing) to this
 * thread's context. Returns the mark to give log_ctx_pop() to remove it and whatever was
 * pushed after it. A field that does not fit whole is left out (the mark still pops
 * correctly). key must be safe characters ([A-Za-z0-9_.-]). No allocation. */
size_t log_ctx_push(const char *key, const char *value);
/* Restore this thread's context to what it was when mark was returned (0: empty). */
void log_ctx_pop(size_t mark);
/* This thread's context as text (" req=... tenant=..."), "" when empty. Borrowed until
 * the next push or pop on this thread. */
const char *log_ctx_get(void);

/* Add key=value to every line this process logs from now on, after the thread's context
 * (orchd: node=<node.name>); a key the line already has wins. Call before other threads
 * log (it is not locked). Returns 0, -EINVAL (bad key, empty value) or -ENOSPC (the
 * process's fields are full: 128 bytes). */
int log_set_process_field(const char *key, const char *value);

/* Quote s for use as a log value: returns s itself when it has only safe characters
 * ([A-Za-z0-9_.:/@+-]), otherwise a double-quoted, escaped copy written into buf
 * (truncated to len). Never returns NULL; NULL s gives "-". */
const char *log_quote(const char *s, char *buf, size_t len);
