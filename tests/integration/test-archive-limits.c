/* The agent's archive limits on the real orchd, PostgreSQL and RabbitMQ with one real
 * `orch-agent run` under small limits: packages that are bombs (tar.gz and zip), hold too
 * many files, too deep paths, .., absolute paths or escaping links fail their job with
 * the reason in its error and its stderr; the same agent then runs good packages (tar.gz
 * and zip) to the end. The archives are built at run time with libarchive. */
#include <archive.h>
#include <archive_entry.h>
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin;
static char dir[64], agent_id[40];
static pid_t agent;

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(dir, sizeof(dir), "/tmp/orch-unpack-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    th_agent_enrol(&srv, admin, dir, "unpacker", "pool=unpack", "1", agent_id);
    const char *env[] = {"ORCH_AGENT_PACKAGES_MAX_UNPACKED_BYTES=1M",
                         "ORCH_AGENT_PACKAGES_MAX_FILES=50", "ORCH_AGENT_PACKAGES_MAX_PATH_DEPTH=6",
                         NULL};
    agent = th_agent_start_env(dir, env);
}

static void teardown(void)
{
    th_agent_stop(agent, SIGTERM);
    th_rm_rf(dir);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(archive_limits, .init = setup, .fini = teardown, .timeout = 240);

struct ent {
    const char *name;
    const char *text; /* the file's bytes; NULL: zeros bytes of zeros */
    size_t zeros;
    const char *link; /* a symbolic link to this */
};

/* An archive of n entries (zip or tar.gz) in memory, malloc'd, *len bytes. */
static char *build(bool zip, const struct ent *e, size_t n, size_t *len)
{
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    struct archive *a = archive_write_new();
    if (zip) {
        archive_write_set_format_zip(a);
    } else {
        archive_write_set_format_pax_restricted(a);
        archive_write_add_filter_gzip(a);
    }
    cr_assert_eq(archive_write_open_memory(a, buf, cap, len), ARCHIVE_OK);
    static char zero[65536];
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].name);
        size_t size = e[i].link ? 0 : e[i].text ? strlen(e[i].text) : e[i].zeros;
        archive_entry_set_filetype(ae, e[i].link ? AE_IFLNK : AE_IFREG);
        archive_entry_set_perm(ae, 0755);
        if (e[i].link)
            archive_entry_set_symlink(ae, e[i].link);
        archive_entry_set_size(ae, (la_int64_t)size);
        cr_assert_eq(archive_write_header(a, ae), ARCHIVE_OK, "%s", archive_error_string(a));
        if (e[i].text)
            archive_write_data(a, e[i].text, size);
        for (size_t left = e[i].text || e[i].link ? 0 : size; left > 0;) {
            size_t k = left < sizeof(zero) ? left : sizeof(zero);
            cr_assert_eq(archive_write_data(a, zero, k), (la_ssize_t)k);
            left -= k;
        }
        archive_entry_free(ae);
    }
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return buf;
}

static char *upload(const char *name, bool zip, const struct ent *e, size_t n)
{
    size_t len;
    char *data = build(zip, e, n, &len);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/packages?name=%s&version=1.0.0&entrypoint=run.sh", name);
    struct th_resp r;
    th_http_bytes(&srv, "POST", path, admin, data, len,
                  zip ? "application/zip" : "application/gzip", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    free(data);
    return id;
}

static char *logs(const char *id, const char *stream)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=%s", id, stream);
    struct th_resp r;
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *b = strdup(r.body ? r.body : "");
    th_resp_free(&r);
    return b;
}

/* Run package pkg's job on the agent to its end: its final document (json_decref()). */
static json_t *run(const char *pkg, char **id)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"package_id\":\"%s\",\"max_attempts\":1,\"requirements\":{\"pool\":\"unpack\"}}",
             pkg);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/jobs", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return th_job_wait_final(&srv, admin, *id, 90);
}

/* The job of pkg fails; its error and its stderr both say want. */
static void refused(const char *pkg, const char *want)
{
    char *id;
    json_t *j = run(pkg, &id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "dead", "%s",
                     json_dumps(j, 0));
    const char *error = json_string_value(json_object_get(j, "error"));
    cr_assert(error && strstr(error, want), "error %s, wanted %s", error ? error : "(none)", want);
    char *err = logs(id, "stderr");
    cr_assert(strstr(err, want), "stderr %s, wanted %s", err, want);
    free(err);
    json_decref(j);
    free(id);
}

static void runs(const char *pkg, const char *want_out)
{
    char *id;
    json_t *j = run(pkg, &id);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s",
                     json_dumps(j, 0));
    json_decref(j);
    char *out = logs(id, "stdout");
    cr_assert_str_eq(out, want_out);
    free(out);
    free(id);
}

#define RUN_SH "#!/bin/sh\ncat data/msg\n"

Test(archive_limits, bad_packages_fail_clearly_and_the_agent_runs_the_next)
{
    const struct ent tar_bomb[] = {{.name = "run.sh", .text = RUN_SH},
                                   {.name = "zeros", .zeros = 8u << 20}};
    const struct ent zip_bomb[] = {{.name = "run.sh", .text = RUN_SH},
                                   {.name = "a", .zeros = 4u << 20}};
    struct ent many[60];
    char names[60][16];
    for (int i = 0; i < 60; i++) {
        snprintf(names[i], sizeof(names[i]), "f%d", i);
        many[i] = (struct ent){.name = names[i], .text = "x"};
    }
    const struct ent deep[] = {{.name = "a/b/c/d/e/f/g", .text = "x"}};
    const struct ent dotdot[] = {{.name = "../x", .text = "x"}};
    const struct ent absolute[] = {{.name = "/tmp/orch-unpack-escape", .text = "x"}};
    const struct ent link[] = {{.name = "l", .link = "../../.."}};
    const struct {
        const char *name;
        bool zip;
        const struct ent *e;
        size_t n;
        const char *want;
    } bad[] = {
        {"tar-bomb", false, tar_bomb, 2,
         "package archive refused: unpacked size over the 1 MiB limit "
         "(agent packages.max_unpacked_bytes)"},
        {"zip-bomb", true, zip_bomb, 2, "unpacked size over the 1 MiB limit"},
        {"many", false, many, 60, "more than 50 entries (agent packages.max_files)"},
        {"deep", true, deep, 1, "over the 6 limit (agent packages.max_path_depth)"},
        {"dotdot", false, dotdot, 1, "entry ../x escapes the job directory"},
        {"absolute", false, absolute, 1, "entry /tmp/orch-unpack-escape has an absolute path"},
        {"link", false, link, 1, "symbolic link l points outside the job directory"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *pkg = upload(bad[i].name, bad[i].zip, bad[i].e, bad[i].n);
        refused(pkg, bad[i].want);
        free(pkg);
    }
    cr_assert_neq(access("/tmp/orch-unpack-escape", F_OK), 0);

    /* The same agent, healthy: good packages run, tar.gz and zip. */
    const struct ent good[] = {{.name = "run.sh", .text = RUN_SH},
                               {.name = "data/msg", .text = "unpacked\n"}};
    char *pkg = upload("good", false, good, 2);
    runs(pkg, "unpacked\n");
    free(pkg);
    pkg = upload("good-zip", true, good, 2);
    runs(pkg, "unpacked\n");
    free(pkg);
}
