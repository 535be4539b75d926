/* Tests for common/conf.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"

struct cfg {
    char *db_url;
    int64_t port;
    bool debug;
    int64_t timeout_ms;
    int64_t max_body;
    int mode;
    char *name;
    int64_t pool;
};

static const char *const modes[] = {"fast", "safe", NULL};

static const struct conf_field fields[] = {
    {"db.url", CONF_STRING, offsetof(struct cfg, db_url), 1, 0, NULL, NULL, "PostgreSQL URL"},
    {"http.port", CONF_INT, offsetof(struct cfg, port), 1, 65535, "8080", NULL, "listen port"},
    {"log.debug", CONF_BOOL, offsetof(struct cfg, debug), 0, 0, "false", NULL, "debug logs"},
    {"http.timeout", CONF_DURATION, offsetof(struct cfg, timeout_ms), 1000, 3600000, "30s", NULL,
     "request timeout"},
    {"http.max-body", CONF_SIZE, offsetof(struct cfg, max_body), 1024, 1 << 30, "1M", NULL,
     "largest request body"},
    {"mode", CONF_ENUM, offsetof(struct cfg, mode), 0, 0, "fast", modes, "scheduling mode"},
    {"name", CONF_STRING, offsetof(struct cfg, name), 0, 8, "orch", NULL, "instance name"},
    {"db.pool_size", CONF_INT, offsetof(struct cfg, pool), 1, 100, "10", NULL, "pool size"},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static char tmp_path[64];

static const char *const env_names[] = {
    "ORCHT_DB_URL",        "ORCHT_HTTP_PORT", "ORCHT_LOG_DEBUG", "ORCHT_HTTP_TIMEOUT",
    "ORCHT_HTTP_MAX_BODY", "ORCHT_MODE",      "ORCHT_NAME",      "ORCHT_DB_POOL_SIZE",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
}

static void setup(void)
{
    tmp_path[0] = '\0';
    clear_env();
}

static void teardown(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
    clear_env();
}

TestSuite(conf, .init = setup, .fini = teardown);

/* Write content to a fresh temp file (replacing the previous one); teardown removes it. */
static const char *write_conf(const char *content)
{
    int fd;

    if (tmp_path[0])
        unlink(tmp_path);
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/orch-test-conf-XXXXXX");
    fd = mkstemp(tmp_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return tmp_path;
}

static int load(const char *content, struct cfg *c, struct conf_error *err)
{
    memset(c, 0, sizeof(*c));
    memset(err, 0, sizeof(*err));
    return conf_load(fields, NFIELDS, c, content ? write_conf(content) : NULL, "ORCHT", err);
}

/* Assert err is one line and contains part. */
static void assert_msg_has(const struct conf_error *err, const char *part)
{
    cr_assert_not_null(strstr(err->msg, part), "message '%s' lacks '%s'", err->msg, part);
    cr_assert_null(strchr(err->msg, '\n'), "one line: %s", err->msg);
}

static void load_bad(const char *content, const char *part1, const char *part2)
{
    struct cfg c;
    struct conf_error err;

    cr_assert_eq(load(content, &c, &err), -EINVAL, "accepted:\n%s", content);
    assert_msg_has(&err, part1);
    if (part2)
        assert_msg_has(&err, part2);
    cr_assert_null(c.db_url, "strings freed on failure");
    cr_assert_null(c.name, "strings freed on failure");
}

Test(conf, defaults_and_required_from_file)
{
    struct cfg c;
    struct conf_error err;

    cr_assert_eq(load("db.url = postgres://x\n", &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.db_url, "postgres://x");
    cr_assert_eq(c.port, 8080);
    cr_assert_eq(c.debug, false);
    cr_assert_eq(c.timeout_ms, 30000);
    cr_assert_eq(c.max_body, 1 << 20);
    cr_assert_eq(c.mode, 0);
    cr_assert_str_eq(c.name, "orch");
    cr_assert_eq(c.pool, 10);
    conf_free(fields, NFIELDS, &c);
    cr_assert_null(c.db_url);
    cr_assert_null(c.name);
    conf_free(fields, NFIELDS, &c);
}

Test(conf, every_type_from_file)
{
    struct cfg c;
    struct conf_error err;
    const char *text = "# orchd test config\n"
                       "\n"
                       "   db.url   =   \"postgres://u:p@h/db?x=\\\"y\\\"&z=\\\\\"   \n"
                       "http.port=443\n"
                       "log.debug = YES\n"
                       "\t# indented comment\n"
                       "http.timeout = 5m\n"
                       "http.max-body = 16M\r\n"
                       "mode = safe\n"
                       "name = \"a b # c\"\n"
                       "db.pool_size = +42\n";

    cr_assert_eq(load(text, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.db_url, "postgres://u:p@h/db?x=\"y\"&z=\\");
    cr_assert_eq(c.port, 443);
    cr_assert_eq(c.debug, true);
    cr_assert_eq(c.timeout_ms, 300000);
    cr_assert_eq(c.max_body, 16 << 20);
    cr_assert_eq(c.mode, 1);
    cr_assert_str_eq(c.name, "a b # c");
    cr_assert_eq(c.pool, 42);
    conf_free(fields, NFIELDS, &c);
}

Test(conf, env_overrides_file_and_default)
{
    struct cfg c;
    struct conf_error err;

    setenv("ORCHT_HTTP_PORT", "9000", 1);
    setenv("ORCHT_HTTP_MAX_BODY", "512M", 1);
    setenv("ORCHT_DB_POOL_SIZE", "7", 1);
    setenv("ORCHT_NAME", "env", 1);
    cr_assert_eq(load("db.url = file\nhttp.port = 80\nname = file\n", &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.port, 9000, "environment beats file");
    cr_assert_str_eq(c.name, "env", "environment beats file");
    cr_assert_str_eq(c.db_url, "file");
    cr_assert_eq(c.pool, 7, "environment beats default");
    cr_assert_eq(c.max_body, 512 << 20);
    conf_free(fields, NFIELDS, &c);
}

Test(conf, env_only_without_file)
{
    struct cfg c;
    struct conf_error err;

    setenv("ORCHT_DB_URL", "postgres://env", 1);
    cr_assert_eq(load(NULL, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(c.db_url, "postgres://env");
    conf_free(fields, NFIELDS, &c);
}

Test(conf, env_skipped_without_prefix)
{
    struct cfg c = {0};
    struct conf_error err;

    setenv("ORCHT_HTTP_PORT", "9000", 1);
    write_conf("db.url = x\n");
    cr_assert_eq(conf_load(fields, NFIELDS, &c, tmp_path, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(c.port, 8080);
    conf_free(fields, NFIELDS, &c);
}

Test(conf, env_error_names_variable)
{
    struct cfg c;
    struct conf_error err;

    setenv("ORCHT_HTTP_PORT", "abc", 1);
    cr_assert_eq(load("db.url = x\n", &c, &err), -EINVAL);
    cr_assert_str_eq(err.msg, "config: environment ORCHT_HTTP_PORT: key 'http.port': expected an "
                              "integer in [1, 65535], got 'abc'");
    cr_assert_null(c.db_url, "strings freed on failure");
}

Test(conf, missing_required)
{
    struct cfg c;
    struct conf_error err;

    cr_assert_eq(load("http.port = 1\n", &c, &err), -EINVAL);
    cr_assert_str_eq(err.msg,
                     "config: key 'db.url' is required (set it in the file or ORCHT_DB_URL)");
    cr_assert_null(c.name);
}

Test(conf, int_errors)
{
    load_bad("db.url = x\nhttp.port = abc\n", "config: /tmp/orch-test-conf-",
             ":2: key 'http.port': expected an integer in [1, 65535], got 'abc'");
    load_bad("db.url = x\nhttp.port = 0\n", "key 'http.port'", "got '0'");
    load_bad("db.url = x\nhttp.port = 65536\n", "key 'http.port'", "[1, 65535], got '65536'");
    load_bad("db.url = x\nhttp.port = 12abc\n", "key 'http.port'", "got '12abc'");
    load_bad("db.url = x\nhttp.port = 0x50\n", "key 'http.port'", "got '0x50'");
    load_bad("db.url = x\nhttp.port = 8.0\n", "key 'http.port'", "got '8.0'");
    load_bad("db.url = x\nhttp.port =\n", "key 'http.port'", "got ''");
    load_bad("db.url = x\nhttp.port = 99999999999999999999\n", "key 'http.port'",
             "got '99999999999999999999'");
    load_bad("db.url = x\nhttp.port = -99999999999999999999\n", "key 'http.port'",
             "expected an integer");
}

Test(conf, bool_values_and_errors)
{
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "On"};
    static const char *const no[] = {"false", "no", "off", "0", "False", "NO"};
    struct cfg c = {0};
    struct conf_error err;

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        c.debug = false;
        cr_assert_eq(conf_set(fields, NFIELDS, &c, "log.debug", yes[i], "--set", &err), 0);
        cr_assert(c.debug, "%s", yes[i]);
        cr_assert_eq(conf_set(fields, NFIELDS, &c, "log.debug", no[i], "--set", &err), 0);
        cr_assert_not(c.debug, "%s", no[i]);
    }
    load_bad("db.url = x\nlog.debug = maybe\n", ":2: key 'log.debug': expected a boolean",
             "got 'maybe'");
    load_bad("db.url = x\nlog.debug = 2\n", "key 'log.debug'", "got '2'");
}

Test(conf, duration_values_and_errors)
{
    static const struct {
        const char *text;
        int64_t ms;
    } ok[] = {{"250ms", 250}, {"1500", 1500}, {"30s", 30000}, {"5m", 300000}, {"1h", 3600000}};
    struct cfg c = {0};
    struct conf_error err;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_eq(conf_set(fields, NFIELDS, &c, "http.timeout", ok[i].text, NULL, &err),
                     i == 0 ? -EINVAL : 0, "%s: %s", ok[i].text, err.msg);
        if (i > 0)
            cr_assert_eq(c.timeout_ms, ok[i].ms, "%s", ok[i].text);
    }
    /* 250ms is below the 1s minimum: the message shows the bounds with units. */
    cr_assert_eq(conf_set(fields, NFIELDS, &c, "http.timeout", "250ms", "--set", &err), -EINVAL);
    cr_assert_str_eq(err.msg, "config: --set: key 'http.timeout': expected a duration (ms, s, m, "
                              "h; bare number = ms) in [1s, 1h], got '250ms' (out of range)");
    load_bad("db.url = x\nhttp.timeout = 2h\n", "key 'http.timeout'", "got '2h'");
    load_bad("db.url = x\nhttp.timeout = 5x\n", "key 'http.timeout'", "got '5x'");
    load_bad("db.url = x\nhttp.timeout = -5s\n", "key 'http.timeout'", "got '-5s'");
    load_bad("db.url = x\nhttp.timeout = 1.5s\n", "key 'http.timeout'", "got '1.5s'");
    load_bad("db.url = x\nhttp.timeout = s\n", "key 'http.timeout'", "got 's'");
    load_bad("db.url = x\nhttp.timeout = 5 s\n", "key 'http.timeout'", "got '5 s'");
    load_bad("db.url = x\nhttp.timeout = 9999999999999999999h\n", "key 'http.timeout'",
             "expected a duration");
    load_bad("db.url = x\nhttp.timeout = 9223372036854775807h\n", "key 'http.timeout'",
             "expected a duration");
}

Test(conf, size_values_and_errors)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } ok[] = {{"1024", 1024},    {"64k", 65536},  {"64K", 65536},
              {"16M", 16 << 20}, {"1G", 1 << 30}, {"1g", 1 << 30}};
    struct cfg c = {0};
    struct conf_error err;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_eq(conf_set(fields, NFIELDS, &c, "http.max-body", ok[i].text, "t", &err), 0,
                     "%s: %s", ok[i].text, err.msg);
        cr_assert_eq(c.max_body, ok[i].bytes, "%s", ok[i].text);
    }
    load_bad("db.url = x\nhttp.max-body = 512\n", ":2: key 'http.max-body': expected a size",
             "in [1k, 1G], got '512'");
    load_bad("db.url = x\nhttp.max-body = 2G\n", "key 'http.max-body'", "got '2G'");
    load_bad("db.url = x\nhttp.max-body = 1T\n", "key 'http.max-body'", "got '1T'");
    load_bad("db.url = x\nhttp.max-body = 1kb\n", "key 'http.max-body'", "got '1kb'");
    load_bad("db.url = x\nhttp.max-body = 99999999999G\n", "key 'http.max-body'",
             "got '99999999999G'");
}

Test(conf, enum_values_and_errors)
{
    load_bad("db.url = x\nmode = turbo\n", ":2: key 'mode': expected one of fast, safe",
             "got 'turbo'");
    load_bad("db.url = x\nmode = FAST\n", "key 'mode'", "got 'FAST'");
}

Test(conf, string_bounds)
{
    load_bad("db.url =\n", ":1: key 'db.url': expected a string of 1 to 4096 bytes", "got ''");
    load_bad("db.url = \"\"\n", "key 'db.url'", "got ''");
    load_bad("db.url = x\nname = abcdefghi\n", "key 'name': expected a string of at most 8 bytes",
             "got 'abcdefghi'");
}

Test(conf, long_value_truncated_in_message)
{
    char text[300];
    struct cfg c;
    struct conf_error err;
    char *got;

    snprintf(text, sizeof(text), "db.url = x\nname = %0200d\n", 7);
    cr_assert_eq(load(text, &c, &err), -EINVAL);
    got = strstr(err.msg, "got '");
    cr_assert_not_null(got, "%s", err.msg);
    /* 64 characters, then "...", then the closing quote. */
    cr_assert_eq(strlen(got), 5 + 64 + 3 + 1, "%s", err.msg);
    cr_assert_str_eq(got + 5 + 64, "...'");
}

Test(conf, unknown_key)
{
    struct cfg c;
    struct conf_error err;

    cr_assert_eq(load("db.url = x\n\n# c\nhtp.port = 80\n", &c, &err), -EINVAL);
    cr_assert_not_null(strstr(err.msg, "config: /tmp/orch-test-conf-"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ":4: unknown key 'htp.port'"), "%s", err.msg);
    cr_assert_eq(strncmp(err.msg + strlen(err.msg) - strlen("unknown key 'htp.port'"),
                         "unknown key 'htp.port'", 22),
                 0);
    cr_assert_null(c.db_url);
}

Test(conf, duplicate_key)
{
    load_bad("db.url = x\nhttp.port = 80\nhttp.port = 81\n",
             ":3: duplicate key 'http.port' (first set on line 2)", NULL);
}

Test(conf, malformed_lines)
{
    load_bad("db.url = x\njust words\n", ":2: malformed line", NULL);
    load_bad("db.url = x\n = 5\n", ":2: malformed line", NULL);
    load_bad("db.url = \"unterminated\n", ":1: key 'db.url': malformed quoted value", NULL);
    load_bad("db.url = \"a\" b\n", ":1: key 'db.url': malformed quoted value", NULL);
    load_bad("db.url = \"a\\nb\"\n", ":1: key 'db.url': malformed quoted value", NULL);
}

Test(conf, missing_file)
{
    struct cfg c = {0};
    struct conf_error err;

    cr_assert_eq(conf_load(fields, NFIELDS, &c, "/nonexistent/orchd.conf", "ORCHT", &err), -EINVAL);
    cr_assert_str_eq(err.msg, "config: /nonexistent/orchd.conf: cannot open: No such file or "
                              "directory");
    cr_assert_null(c.name, "defaults freed on failure");
}

Test(conf, set_unknown_and_origin)
{
    struct cfg c = {0};
    struct conf_error err;

    cr_assert_eq(conf_set(fields, NFIELDS, &c, "nope", "1", "--set", &err), -EINVAL);
    cr_assert_str_eq(err.msg, "config: --set: unknown key 'nope'");
    cr_assert_eq(conf_set(fields, NFIELDS, &c, "http.port", "x", NULL, &err), -EINVAL);
    cr_assert_str_eq(err.msg,
                     "config: key 'http.port': expected an integer in [1, 65535], got 'x'");
    cr_assert_eq(conf_set(fields, NFIELDS, &c, "http.port", "5", NULL, &err), 0);
    cr_assert_eq(c.port, 5);
}

Test(conf, set_string_replaces_and_frees)
{
    struct cfg c = {0};
    struct conf_error err;

    cr_assert_eq(conf_set(fields, NFIELDS, &c, "name", "one", "t", &err), 0);
    cr_assert_eq(conf_set(fields, NFIELDS, &c, "name", "two", "t", &err), 0);
    cr_assert_str_eq(c.name, "two");
    /* A rejected value keeps the previous one. */
    cr_assert_eq(conf_set(fields, NFIELDS, &c, "name", "too-long-value", "t", &err), -EINVAL);
    cr_assert_str_eq(c.name, "two");
    conf_free(fields, NFIELDS, &c);
    cr_assert_null(c.name);
}

Test(conf, bad_default_is_reported)
{
    static const struct conf_field bad[] = {
        {"x", CONF_INT, 0, 0, 10, "eleven", NULL, "broken table"},
    };
    int64_t x = 0;
    struct conf_error err;

    cr_assert_eq(conf_load(bad, 1, &x, NULL, NULL, &err), -EINVAL);
    assert_msg_has(&err, "key 'x'");
    assert_msg_has(&err, "got 'eleven'");
}

Test(conf, unbounded_int)
{
    static const struct conf_field f[] = {
        {"n", CONF_INT, 0, 0, 0, "-9223372036854775808", NULL, "any"},
    };
    int64_t n = 0;
    struct conf_error err;

    cr_assert_eq(conf_load(f, 1, &n, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(n, INT64_MIN);
    cr_assert_eq(conf_set(f, 1, &n, "n", "9223372036854775808", NULL, &err), -EINVAL);
    assert_msg_has(&err, "expected an integer, got '9223372036854775808' (out of range)");
}

Test(conf, describe_lists_every_key)
{
    int p[2];
    char out[4096];
    ssize_t n;

    cr_assert_eq(pipe(p), 0);
    conf_describe(fields, NFIELDS, p[1]);
    close(p[1]);
    n = read(p[0], out, sizeof(out) - 1);
    close(p[0]);
    cr_assert_gt(n, 0);
    out[n] = '\0';
    for (size_t i = 0; i < NFIELDS; i++) {
        cr_assert_not_null(strstr(out, fields[i].name), "%s missing", fields[i].name);
        cr_assert_not_null(strstr(out, fields[i].help));
    }
    cr_assert_not_null(strstr(out, "(required)"));
    cr_assert_not_null(strstr(out, "\"8080\""));
    cr_assert_not_null(strstr(out, "fast|safe"));
    int lines = 0;
    for (char *q = out; *q; q++)
        lines += *q == '\n';
    cr_assert_eq(lines, (int)NFIELDS);
}
