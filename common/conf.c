/* conf.c: table-driven configuration from defaults, a `key = value` file and the
 * environment. */
#include "common/conf.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/compat.h"
#include "common/cleanup.h"
#include "common/printf.h"

#define CONF_STRING_MAX_DEFAULT 4096
#define CONF_SHOW_MAX           64 /* longest value or key echoed in an error */

static void conf_fail(struct conf_error *err, const char *fmt, ...) ORCH_PRINTF(2, 3);

static void conf_fail(struct conf_error *err, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

/* Copy s for display in a one-line message: at most CONF_SHOW_MAX bytes (then "..."),
 * control characters replaced by '?'. Values may be secrets; the cap limits exposure. */
static const char *conf_show(const char *s, char *out, size_t len)
{
    size_t o = 0, i;

    for (i = 0; s[i] && i < CONF_SHOW_MAX && o + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[i] && o + 4 <= len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static const struct conf_field *conf_find(const struct conf_field *fields, size_t n,
                                          const char *key, size_t *idx)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fields[i].name, key) == 0) {
            if (idx)
                *idx = i;
            return &fields[i];
        }
    }
    return NULL;
}

/* Effective bounds of a numeric field. For CONF_INT, min == max == 0 means no bound; for
 * durations and sizes (never negative) max 0 means no upper bound. */
static void num_bounds(const struct conf_field *f, int64_t *lo, int64_t *hi)
{
    if (f->type == CONF_INT) {
        bool unbounded = f->min == 0 && f->max == 0;

        *lo = unbounded ? INT64_MIN : f->min;
        *hi = unbounded ? INT64_MAX : f->max;
        return;
    }
    *lo = f->min > 0 ? f->min : 0;
    *hi = f->max > 0 ? f->max : INT64_MAX;
}

static size_t str_max(const struct conf_field *f)
{
    return f->max > 0 ? (size_t)f->max : CONF_STRING_MAX_DEFAULT;
}

/* Render a duration in ms with the largest exact unit: 1h, 5m, 30s, 250ms. */
static void fmt_duration(int64_t ms, char *out, size_t len)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(out, len, "%" PRId64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(out, len, "%" PRId64 "m", ms / 60000);
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(out, len, "%" PRId64 "s", ms / 1000);
    else
        snprintf(out, len, "%" PRId64 "ms", ms);
}

/* Render a size in bytes with the largest exact power-of-1024 unit: 1G, 16M, 64k, 512. */
static void fmt_size(int64_t b, char *out, size_t len)
{
    if (b != 0 && b % (INT64_C(1) << 30) == 0)
        snprintf(out, len, "%" PRId64 "G", b >> 30);
    else if (b != 0 && b % (INT64_C(1) << 20) == 0)
        snprintf(out, len, "%" PRId64 "M", b >> 20);
    else if (b != 0 && b % (INT64_C(1) << 10) == 0)
        snprintf(out, len, "%" PRId64 "k", b >> 10);
    else
        snprintf(out, len, "%" PRId64, b);
}

/* The "expected ..." phrase of an error message, with bounds. */
static void conf_expected(const struct conf_field *f, char *out, size_t len)
{
    char a[32], b[32];
    int64_t lo, hi;

    switch (f->type) {
    case CONF_STRING:
        if (f->min > 0)
            snprintf(out, len, "a string of %" PRId64 " to %zu bytes", f->min, str_max(f));
        else
            snprintf(out, len, "a string of at most %zu bytes", str_max(f));
        return;
    case CONF_INT:
        num_bounds(f, &lo, &hi);
        if (lo == INT64_MIN && hi == INT64_MAX)
            snprintf(out, len, "an integer");
        else
            snprintf(out, len, "an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
        return;
    case CONF_BOOL:
        snprintf(out, len, "a boolean (true/false, yes/no, on/off, 1/0)");
        return;
    case CONF_DURATION:
        num_bounds(f, &lo, &hi);
        fmt_duration(lo, a, sizeof(a));
        if (hi == INT64_MAX)
            snprintf(out, len, "a duration (ms, s, m, h; bare number = ms) of at least %s", a);
        else {
            fmt_duration(hi, b, sizeof(b));
            snprintf(out, len, "a duration (ms, s, m, h; bare number = ms) in [%s, %s]", a, b);
        }
        return;
    case CONF_SIZE:
        num_bounds(f, &lo, &hi);
        fmt_size(lo, a, sizeof(a));
        if (hi == INT64_MAX)
            snprintf(out, len, "a size (bytes, k, M, G) of at least %s", a);
        else {
            fmt_size(hi, b, sizeof(b));
            snprintf(out, len, "a size (bytes, k, M, G) in [%s, %s]", a, b);
        }
        return;
    case CONF_ENUM: {
        size_t o;
        int n = snprintf(out, len, "one of");

        o = n > 0 ? (size_t)n : 0;
        for (size_t i = 0; f->choices && f->choices[i] && o < len; i++) {
            n = snprintf(out + o, len - o, "%s %s", i ? "," : "", f->choices[i]);
            if (n < 0)
                break;
            o += (size_t)n;
        }
        return;
    }
    }
    snprintf(out, len, "a value");
}

/* Strict decimal integer: optional sign, digits only, no blanks, overflow detected. */
static int parse_int64(const char *s, int64_t *ret)
{
    char *end;
    long long v;

    if (!*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (errno || end == s || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* Unsigned digits followed by a unit suffix; the multiplied value must fit in int64_t. */
static int parse_scaled(const char *s, const char *const *units, const int64_t *mult, int64_t *ret)
{
    int64_t v = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - (*p - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (*p - '0');
    }
    for (size_t i = 0; units[i]; i++) {
        if (strcmp(p, units[i]) == 0) {
            if (mult[i] > 1 && v > INT64_MAX / mult[i])
                return -ERANGE;
            *ret = v * mult[i];
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_duration(const char *s, int64_t *ret)
{
    static const char *const units[] = {"", "ms", "s", "m", "h", NULL};
    static const int64_t mult[] = {1, 1, 1000, 60000, 3600000};

    return parse_scaled(s, units, mult, ret);
}

static int parse_size(const char *s, int64_t *ret)
{
    static const char *const units[] = {"", "k", "K", "m", "M", "g", "G", NULL};
    static const int64_t mult[] = {1, 1 << 10, 1 << 10, 1 << 20, 1 << 20, 1 << 30, 1 << 30};

    return parse_scaled(s, units, mult, ret);
}

static int parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Parse value for f and store it in target. origin prefixes the message ("f.conf:3",
 * "environment ORCHD_X"); NULL for none. */
static int conf_apply(const struct conf_field *f, void *target, const char *value,
                      const char *origin, struct conf_error *err)
{
    char *dst = (char *)target + f->offset;
    char shown[CONF_SHOW_MAX + 4], expected[256];
    int64_t v, lo, hi;
    int r = -EINVAL;

    switch (f->type) {
    case CONF_STRING: {
        size_t len = strlen(value);
        char *copy;

        if (len < (size_t)(f->min > 0 ? f->min : 0) || len > str_max(f))
            break;
        copy = strdup(value);
        if (!copy) {
            conf_fail(err, "config: out of memory");
            return -ENOMEM;
        }
        free(*(char **)dst);
        *(char **)dst = copy;
        return 0;
    }
    case CONF_INT:
    case CONF_DURATION:
    case CONF_SIZE:
        if (f->type == CONF_INT)
            r = parse_int64(value, &v);
        else if (f->type == CONF_DURATION)
            r = parse_duration(value, &v);
        else
            r = parse_size(value, &v);
        if (r < 0)
            break;
        num_bounds(f, &lo, &hi);
        if (v < lo || v > hi) {
            r = -ERANGE;
            break;
        }
        *(int64_t *)dst = v;
        return 0;
    case CONF_BOOL: {
        bool b;

        r = parse_bool(value, &b);
        if (r < 0)
            break;
        *(bool *)dst = b;
        return 0;
    }
    case CONF_ENUM:
        for (size_t i = 0; f->choices && f->choices[i]; i++) {
            if (strcmp(value, f->choices[i]) == 0) {
                *(int *)dst = (int)i;
                return 0;
            }
        }
        break;
    }

    conf_expected(f, expected, sizeof(expected));
    conf_show(value, shown, sizeof(shown));
    conf_fail(err, "config: %s%skey '%s': expected %s, got '%s'%s", origin ? origin : "",
              origin ? ": " : "", f->name, expected, shown, r == -ERANGE ? " (out of range)" : "");
    return -EINVAL;
}

int conf_set(const struct conf_field *fields, size_t n, void *target, const char *key,
             const char *value, const char *origin, struct conf_error *err)
{
    const struct conf_field *f;
    char shown[CONF_SHOW_MAX + 4];

    if (!key || !value) {
        conf_fail(err, "config: %s%smissing key or value", origin ? origin : "",
                  origin ? ": " : "");
        return -EINVAL;
    }
    f = conf_find(fields, n, key, NULL);
    if (!f) {
        conf_fail(err, "config: %s%sunknown key '%s'", origin ? origin : "", origin ? ": " : "",
                  conf_show(key, shown, sizeof(shown)));
        return -EINVAL;
    }
    return conf_apply(f, target, value, origin, err);
}

void conf_free(const struct conf_field *fields, size_t n, void *target)
{
    for (size_t i = 0; i < n; i++) {
        if (fields[i].type == CONF_STRING) {
            char **p = (char **)((char *)target + fields[i].offset);
            FREE_AND_NULL(*p);
        }
    }
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static char *trim(char *s)
{
    size_t len;

    while (is_blank(*s))
        s++;
    len = strlen(s);
    while (len > 0 && is_blank(s[len - 1]))
        s[--len] = '\0';
    return s;
}

/* Unquote a "..." value in place (\" and \\ only). Returns 0 or -EINVAL. */
static int unquote(char *s)
{
    char *r = s + 1, *w = s;

    for (; *r && *r != '"'; r++) {
        if (*r == '\\') {
            r++;
            if (*r != '"' && *r != '\\')
                return -EINVAL;
        }
        *w++ = *r;
    }
    if (*r != '"' || r[1] != '\0')
        return -EINVAL;
    *w = '\0';
    return 0;
}

static int conf_load_file(const struct conf_field *fields, size_t n, void *target, const char *path,
                          unsigned *lines, struct conf_error *err)
{
    _cleanup_fclose_ FILE *f = NULL;
    _cleanup_free_ char *line = NULL;
    char shown[CONF_SHOW_MAX + 4];
    size_t cap = 0;
    unsigned lineno = 0;
    ssize_t got;

    f = fopen(path, "re");
    if (!f) {
        conf_fail(err, "config: %s: cannot open: %s", path, strerror(errno));
        return -EINVAL;
    }

    while ((got = getline(&line, &cap, f)) >= 0) {
        char origin[512], *key, *value, *eq;
        const struct conf_field *fld;
        size_t idx;
        int r;

        lineno++;
        if (memchr(line, '\0', (size_t)got)) {
            conf_fail(err, "config: %s:%u: NUL byte in line", path, lineno);
            return -EINVAL;
        }
        key = trim(line);
        if (*key == '\0' || *key == '#')
            continue;
        eq = strchr(key, '=');
        if (!eq) {
            conf_fail(err, "config: %s:%u: malformed line, expected 'key = value'", path, lineno);
            return -EINVAL;
        }
        *eq = '\0';
        key = trim(key);
        value = trim(eq + 1);
        if (*key == '\0') {
            conf_fail(err, "config: %s:%u: malformed line, missing key before '='", path, lineno);
            return -EINVAL;
        }
        fld = conf_find(fields, n, key, &idx);
        if (!fld) {
            conf_fail(err, "config: %s:%u: unknown key '%s'", path, lineno,
                      conf_show(key, shown, sizeof(shown)));
            return -EINVAL;
        }
        if (lines[idx]) {
            conf_fail(err, "config: %s:%u: duplicate key '%s' (first set on line %u)", path, lineno,
                      fld->name, lines[idx]);
            return -EINVAL;
        }
        if (*value == '"' && unquote(value) < 0) {
            conf_fail(err,
                      "config: %s:%u: key '%s': malformed quoted value (only \\\" and \\\\ "
                      "escapes, nothing after the closing quote)",
                      path, lineno, fld->name);
            return -EINVAL;
        }
        snprintf(origin, sizeof(origin), "%s:%u", path, lineno);
        r = conf_apply(fld, target, value, origin, err);
        if (r < 0)
            return r;
        lines[idx] = lineno;
    }
    if (ferror(f)) {
        conf_fail(err, "config: %s: read error", path);
        return -EINVAL;
    }
    return 0;
}

/* "ORCHD" + "db.pool-size" -> "ORCHD_DB_POOL_SIZE". */
static char *conf_env_name(const char *prefix, const char *key)
{
    struct buf b = BUF_INIT;

    if (buf_printf(&b, "%s_%s", prefix, key) < 0) {
        buf_free(&b);
        return NULL;
    }
    for (size_t i = strlen(prefix) + 1; i < b.len; i++) {
        char c = b.data[i];
        b.data[i] = (c == '.' || c == '-') ? '_' : (char)toupper((unsigned char)c);
    }
    return buf_steal(&b);
}

static int conf_load_env(const struct conf_field *fields, size_t n, void *target,
                         const char *prefix, bool *set, struct conf_error *err)
{
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *name = conf_env_name(prefix, fields[i].name);
        char origin[256];
        const char *v;
        int r;

        if (!name) {
            conf_fail(err, "config: out of memory");
            return -ENOMEM;
        }
        v = getenv(name);
        if (!v)
            continue;
        snprintf(origin, sizeof(origin), "environment %s", name);
        r = conf_apply(&fields[i], target, v, origin, err);
        if (r < 0)
            return r;
        set[i] = true;
    }
    return 0;
}

int conf_load(const struct conf_field *fields, size_t n, void *target, const char *path,
              const char *env_prefix, struct conf_error *err)
{
    _cleanup_free_ unsigned *lines = NULL;
    _cleanup_free_ bool *set = NULL;
    int r;

    if (err)
        err->msg[0] = '\0';
    /* target is assumed to own no strings yet: start from NULL so defaults and later layers
     * can replace (and free) what an earlier layer set. */
    for (size_t i = 0; i < n; i++)
        if (fields[i].type == CONF_STRING)
            *(char **)((char *)target + fields[i].offset) = NULL;

    lines = calloc(n ? n : 1, sizeof(*lines));
    set = calloc(n ? n : 1, sizeof(*set));
    if (!lines || !set) {
        conf_fail(err, "config: out of memory");
        return -ENOMEM;
    }

    for (size_t i = 0; i < n; i++) {
        if (!fields[i].def)
            continue;
        r = conf_apply(&fields[i], target, fields[i].def, "built-in default", err);
        if (r < 0)
            goto fail;
        set[i] = true;
    }
    if (path) {
        r = conf_load_file(fields, n, target, path, lines, err);
        if (r < 0)
            goto fail;
        for (size_t i = 0; i < n; i++)
            if (lines[i])
                set[i] = true;
    }
    if (env_prefix) {
        r = conf_load_env(fields, n, target, env_prefix, set, err);
        if (r < 0)
            goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *env = NULL;

        if (set[i])
            continue;
        if (env_prefix) {
            env = conf_env_name(env_prefix, fields[i].name);
            if (!env) {
                conf_fail(err, "config: out of memory");
                r = -ENOMEM;
                goto fail;
            }
        }
        if (path && env)
            conf_fail(err, "config: key '%s' is required (set it in the file or %s)",
                      fields[i].name, env);
        else if (env)
            conf_fail(err, "config: key '%s' is required (set it in %s)", fields[i].name, env);
        else if (path)
            conf_fail(err, "config: key '%s' is required (set it in the file)", fields[i].name);
        else
            conf_fail(err, "config: key '%s' is required", fields[i].name);
        r = -EINVAL;
        goto fail;
    }
    return 0;

fail:
    conf_free(fields, n, target);
    return r;
}

static const char *conf_type_name(enum conf_type t)
{
    switch (t) {
    case CONF_STRING:
        return "string";
    case CONF_INT:
        return "int";
    case CONF_BOOL:
        return "bool";
    case CONF_DURATION:
        return "duration";
    case CONF_SIZE:
        return "size";
    case CONF_ENUM:
        return "enum";
    }
    return "?";
}

void conf_describe(const struct conf_field *fields, size_t n, int fd)
{
    struct buf b = BUF_INIT;

    for (size_t i = 0; i < n; i++) {
        const struct conf_field *f = &fields[i];
        char def[80];

        if (f->def)
            snprintf(def, sizeof(def), "\"%s\"", f->def);
        else
            snprintf(def, sizeof(def), "(required)");
        if (buf_printf(&b, "%-28s %-9s %-18s %s", f->name, conf_type_name(f->type), def,
                       f->help ? f->help : "") < 0)
            goto out;
        if (f->type == CONF_ENUM) {
            for (size_t c = 0; f->choices && f->choices[c]; c++)
                if (buf_printf(&b, "%s%s", c ? "|" : " [", f->choices[c]) < 0)
                    goto out;
            if (f->choices && f->choices[0] && buf_append_str(&b, "]") < 0)
                goto out;
        }
        if (buf_append_str(&b, "\n") < 0)
            goto out;
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t w = write(fd, b.data + off, b.len - off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
out:
    buf_free(&b);
}
