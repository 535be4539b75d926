/* Package references and channels on the real orchd, PostgreSQL and RabbitMQ, with a real
 * `orch-agent` running the jobs: a job names its package as name@version, name@latest, a
 * channel or a digest and runs exactly the version that named; latest follows semantic
 * versioning (a lower version uploaded later does not move it, a pre-release never is
 * latest); a schedule resolves its reference at each firing, so a moved channel is what
 * its next firing runs, and a reference that no longer resolves is a skipped firing with
 * the reason; a version is not deleted while anything refers to it; and another tenant's
 * references resolve to nothing. docs/packages.md, "References and channels". */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op, *tenant, *admin, *viewer;
static char agent_dir[64];
static pid_t agent_pid;

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "standard");
    admin = th_tenant_token(&srv, op, tenant, "admin");
    viewer = th_tenant_token(&srv, op, tenant, "viewer");
    snprintf(agent_dir, sizeof(agent_dir), "/tmp/orch-pkgref-XXXXXX");
    cr_assert_not_null(mkdtemp(agent_dir));
    char id[40];
    th_agent_enrol(&srv, admin, agent_dir, "refs-agent", "pool=refs", "2", id);
    agent_pid = th_agent_start(agent_dir);
}

static void teardown(void)
{
    th_agent_stop(agent_pid, SIGTERM);
    th_rm_rf(agent_dir);
    free(viewer);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(pkgrefs, .init = setup, .fini = teardown, .timeout = 240);

/* Upload name@version whose run.sh prints marker; the package's id (malloc'd), its digest
 * into sha when not NULL. */
static char *upload(const char *token, const char *name, const char *version, const char *marker,
                    char sha[CRYPTO_SHA256_HEX_LEN])
{
    size_t len;
    char *tgz = th_make_archive(marker, &len);
    if (sha)
        crypto_sha256_hex(tgz, len, sha);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/packages?name=%s&version=%s&entrypoint=run.sh", name,
             version);
    struct th_resp r;
    th_http_bytes(&srv, "POST", path, token, tgz, len, "application/gzip", &r);
    cr_assert_eq(r.status, 201, "%s@%s: %s", name, version, r.body);
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    free(tgz);
    return id;
}

/* POST /jobs with {"package": ref, ...extra}; the reply (caller frees). */
static void submit_ref(const char *token, const char *ref, const char *extra, struct th_resp *r)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"package\":\"%s\"%s%s}", ref, extra ? "," : "",
             extra ? extra : "");
    th_http(&srv, "POST", "/api/v1/jobs", token, body, NULL, r);
}

/* A job that no agent takes (so it stays queued): the package it resolved to. */
static char *resolved(const char *ref)
{
    struct th_resp r;
    submit_ref(admin, ref, "\"requirements\":{\"pool\":\"nowhere\"}", &r);
    cr_assert_eq(r.status, 201, "%s: %s", ref, r.body);
    cr_assert_str_eq(th_str_of(&r, "package"), ref, "the job keeps the reference as given");
    char *id = strdup(th_str_of(&r, "package_id"));
    th_resp_free(&r);
    return id;
}

static void refused_ref(const char *token, const char *ref, const char *why)
{
    struct th_resp r;
    submit_ref(token, ref, NULL, &r);
    cr_assert_eq(r.status, 422, "%s: %ld %s", ref, r.status, r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "package", "%s", r.body);
    cr_assert(strstr(th_str_of(&r, "detail"), why), "%s: %s", ref, r.body);
    th_resp_free(&r);
}

/* Run ref on the agent; its stdout. */
static char *run(const char *ref, char *package_id_out)
{
    struct th_resp r;
    submit_ref(admin, ref, "\"requirements\":{\"pool\":\"refs\"}", &r);
    cr_assert_eq(r.status, 201, "%s: %s", ref, r.body);
    char job[40];
    snprintf(job, sizeof(job), "%s", th_str_of(&r, "id"));
    if (package_id_out)
        snprintf(package_id_out, 40, "%s", th_str_of(&r, "package_id"));
    th_resp_free(&r);
    json_t *j = th_job_wait_final(&srv, admin, job, 60);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "succeeded", "%s: %s", ref,
                     json_dumps(j, 0));
    json_decref(j);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/logs?stream=stdout", job);
    th_http(&srv, "GET", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    char *out = strdup(r.body ? r.body : "");
    th_resp_free(&r);
    return out;
}

static long channel_put(const char *token, const char *name, const char *channel,
                        const char *version)
{
    char path[256], body[128];
    snprintf(path, sizeof(path), "/api/v1/packages/%s/channels/%s", name, channel);
    snprintf(body, sizeof(body), "{\"version\":\"%s\"}", version);
    struct th_resp r;
    th_http(&srv, "PUT", path, token, body, NULL, &r);
    long st = r.status;
    if (st == 200 || st == 201)
        cr_assert_str_eq(th_str_of(&r, "version"), version, "%s", r.body);
    th_resp_free(&r);
    return st;
}

Test(pkgrefs, run_by_version_latest_channel_and_digest)
{
    char sha120[CRYPTO_SHA256_HEX_LEN];
    char *v100 = upload(admin, "tool", "1.0.0", "one-zero", NULL);
    char *v120 = upload(admin, "tool", "1.2.0", "one-two", sha120);
    char *v1100 = upload(admin, "tool", "1.10.0", "one-ten", NULL);
    char *rc = upload(admin, "tool", "2.0.0-rc.1", "two-rc", NULL);

    /* The list of one package is newest first by semantic-version precedence. */
    struct th_resp r;
    th_http(&srv, "GET", "/api/v1/packages?name=tool", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *items = json_object_get(r.json, "items");
    static const char *const order[] = {"2.0.0-rc.1", "1.10.0", "1.2.0", "1.0.0"};
    cr_assert_eq(json_array_size(items), 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, i), "version")),
                         order[i], "%s", r.body);
    th_resp_free(&r);
    /* ... and pages through in that order. */
    th_http(&srv, "GET", "/api/v1/packages?name=tool&limit=3", viewer, NULL, NULL, &r);
    cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 3);
    char path[512];
    snprintf(path, sizeof(path), "/api/v1/packages?name=tool&limit=3&cursor=%s",
             th_str_of(&r, "next_cursor"));
    th_resp_free(&r);
    th_http(&srv, "GET", path, viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    items = json_object_get(r.json, "items");
    cr_assert_eq(json_array_size(items), 1, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "version")),
                     "1.0.0");
    th_resp_free(&r);

    /* latest: 1.10.0 (numbers compare as numbers; the pre-release is not latest). */
    char pid[40];
    char *out = run("tool@latest", pid);
    cr_assert_str_eq(pid, v1100);
    cr_assert_str_eq(out, "one-ten\ndata-one-ten\n");
    free(out);
    out = run("tool@1.2.0", pid);
    cr_assert_str_eq(pid, v120);
    cr_assert_str_eq(out, "one-two\ndata-one-two\n");
    free(out);
    char ref[256];
    snprintf(ref, sizeof(ref), "tool@sha256:%s", sha120);
    out = run(ref, pid);
    cr_assert_str_eq(pid, v120, "the digest names 1.2.0");
    cr_assert_str_eq(out, "one-two\ndata-one-two\n");
    free(out);
    out = run("tool@2.0.0-rc.1", pid);
    cr_assert_str_eq(pid, rc);
    free(out);

    cr_assert_eq(channel_put(admin, "tool", "stable", "1.0.0"), 201);
    out = run("tool@stable", pid);
    cr_assert_str_eq(pid, v100);
    cr_assert_str_eq(out, "one-zero\ndata-one-zero\n");
    free(out);
    cr_assert_eq(channel_put(admin, "tool", "stable", "1.2.0"), 200, "moved");
    out = run("tool@stable", pid);
    cr_assert_str_eq(pid, v120);
    free(out);
    th_http(&srv, "GET", "/api/v1/packages/tool/channels", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    items = json_object_get(r.json, "items");
    cr_assert_eq(json_array_size(items), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "version")),
                     "1.2.0");
    th_resp_free(&r);
    /* Moving a channel is audited, with where it was. */
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM audit_log WHERE action ="
                                " 'package.channel.set' AND object_id = 'tool@stable'"
                                " AND detail->>'previous_version' = '1.0.0'"
                                " AND detail->>'version' = '1.2.0'"),
                 1);
    PQfinish(pg);

    /* Each reason named. */
    refused_ref(admin, "tool", "name@version");
    refused_ref(admin, "tool@1.0", "semantic version");
    refused_ref(admin, "tool@9.9.9", "has no version 9.9.9");
    refused_ref(admin, "nope@latest", "no package named nope");
    refused_ref(admin, "tool@beta", "has no channel beta");
    snprintf(ref, sizeof(ref), "tool@sha256:%064d", 0);
    refused_ref(admin, ref, "no version with this digest");
    snprintf(ref, sizeof(ref), "{\"package\":\"tool@latest\",\"package_id\":\"%s\"}", v100);
    th_http(&srv, "POST", "/api/v1/jobs", admin, ref, NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "package");
    th_resp_free(&r);
    /* A batch names the job at fault. */
    th_http(&srv, "POST", "/api/v1/jobs/batch", admin,
            "{\"jobs\":[{\"command\":\"true\"},{\"package\":\"tool@nochannel\"}]}", NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "jobs[1].package");
    th_resp_free(&r);

    /* Channel names and versions are checked; a viewer moves nothing. */
    cr_assert_eq(channel_put(admin, "tool", "Stable", "1.0.0"), 422);
    cr_assert_eq(channel_put(admin, "tool", "latest", "1.0.0"), 422);
    cr_assert_eq(channel_put(admin, "tool", "beta", "1.0"), 422);
    cr_assert_eq(channel_put(admin, "tool", "beta", "9.9.9"), 422);
    cr_assert_eq(channel_put(admin, "nope", "beta", "1.0.0"), 404);
    cr_assert_eq(channel_put(viewer, "tool", "beta", "1.0.0"), 403);
    th_http(&srv, "GET", "/api/v1/packages/nope/channels", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    free(v100);
    free(v120);
    free(v1100);
    free(rc);
}

Test(pkgrefs, latest_moves_up_with_new_versions_and_never_down)
{
    char *a = upload(admin, "lat", "1.0.0", "a", NULL);
    char *got = resolved("lat@latest");
    cr_assert_str_eq(got, a);
    free(got);
    char *b = upload(admin, "lat", "2.0.0", "b", NULL);
    got = resolved("lat@latest");
    cr_assert_str_eq(got, b, "a higher version moved latest");
    free(got);
    char *c = upload(admin, "lat", "1.5.0", "c", NULL);
    got = resolved("lat@latest");
    cr_assert_str_eq(got, b, "a lower version uploaded later did not move latest");
    free(got);
    char *d = upload(admin, "lat", "3.0.0-beta.1", "d", NULL);
    got = resolved("lat@latest");
    cr_assert_str_eq(got, b, "a pre-release is never latest");
    free(got);
    char *e = upload(admin, "lat", "2.0.1", "e", NULL);
    got = resolved("lat@latest");
    cr_assert_str_eq(got, e);
    free(got);
    /* Versions are never overwritten. */
    size_t len;
    char *tgz = th_make_archive("again", &len);
    struct th_resp r;
    th_http_bytes(&srv, "POST", "/api/v1/packages?name=lat&version=2.0.0", admin, tgz, len,
                  "application/gzip", &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);
    free(tgz);
    /* Only pre-releases: no latest, and the reason says so. */
    char *p = upload(admin, "pre", "1.0.0-alpha", "p", NULL);
    refused_ref(admin, "pre@latest", "no release version");
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    free(p);
}

/* Wait (bounded) until the schedule has n firings of status; the last one's reason or job. */
static long firings(PGconn *pg, const char *sched, const char *status)
{
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s' AND status = '%s'",
             sched, status);
    return th_pg_long(pg, q);
}

static void fire_now(PGconn *pg, const char *sched, int seconds_ago, const char *status, long want)
{
    char q[256];
    snprintf(q, sizeof(q),
             "UPDATE schedules SET next_run_at = now() - make_interval(secs => %d) WHERE id = '%s'",
             seconds_ago, sched);
    PQclear(th_pg_ok(pg, q));
    uint64_t deadline = clock_mono_ns() + 30 * 1000000000ULL;
    while (firings(pg, sched, status) < want && clock_mono_ns() < deadline)
        usleep(50 * 1000);
    cr_assert_eq(firings(pg, sched, status), want, "the schedule did not fire");
}

static char *last_job_package(PGconn *pg, const char *sched)
{
    char q[512];
    snprintf(q, sizeof(q),
             "SELECT j.package_id, j.package_ref FROM schedule_firings f JOIN jobs j"
             " ON j.id = f.job_id WHERE f.schedule_id = '%s' ORDER BY f.scheduled_for DESC"
             " LIMIT 1",
             sched);
    PGresult *res = th_pg_ok(pg, q);
    cr_assert_eq(PQntuples(res), 1);
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "sch@stable");
    char *id = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return id;
}

Test(pkgrefs, a_schedule_resolves_its_reference_at_each_firing)
{
    char *one = upload(admin, "sch", "1.0.0", "first", NULL);
    char *two = upload(admin, "sch", "2.0.0", "second", NULL);
    cr_assert_eq(channel_put(admin, "sch", "stable", "1.0.0"), 201);
    struct th_resp r;
    /* A reference that does not resolve is refused when the schedule is written. */
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"bad\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":\"sch@beta\"}}", NULL,
            &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "job.package");
    cr_assert(strstr(th_str_of(&r, "detail"), "no channel beta"), "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"bad\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":\"sch@\"}}", NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "job.package");
    th_resp_free(&r);

    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"yearly\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":\"sch@stable\","
            "\"requirements\":{\"pool\":\"refs\"}}}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *sched = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    PGconn *pg = th_pg_connect("orch_system", srv.db);
    fire_now(pg, sched, 2, "fired", 1);
    char *got = last_job_package(pg, sched);
    cr_assert_str_eq(got, one);
    free(got);

    /* The channel moves; the next firing runs what it points at now. */
    cr_assert_eq(channel_put(admin, "sch", "stable", "2.0.0"), 200);
    fire_now(pg, sched, 1, "fired", 2);
    got = last_job_package(pg, sched);
    cr_assert_str_eq(got, two, "the firing did not pick up the moved channel");
    free(got);

    /* A firing whose reference no longer resolves is recorded as skipped, with why. */
    char *gone = upload(admin, "gone", "1.0.0", "gone", NULL);
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"orphan\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":\"gone@latest\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *orphan = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/packages/%s", gone);
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "latest does not pin a version: %s", r.body);
    th_resp_free(&r);
    fire_now(pg, orphan, 2, "skipped", 1);
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM schedule_firings WHERE schedule_id = '%s' AND reason LIKE"
             " '%%job.package: no package named gone%%'",
             orphan);
    cr_assert_eq(th_pg_long(pg, q), 1, "the skipped firing says why");
    PQfinish(pg);
    free(orphan);
    free(gone);
    free(sched);
    free(one);
    free(two);
}

static long delete_pkg(const char *id, const char *want_detail)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/packages/%s", id);
    struct th_resp r;
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    long st = r.status;
    if (want_detail) {
        cr_assert_eq(st, 409, "%s", r.body);
        cr_assert(strstr(th_str_of(&r, "detail"), want_detail), "%s", r.body);
    }
    th_resp_free(&r);
    return st;
}

Test(pkgrefs, a_version_is_deleted_only_once_nothing_refers_to_it)
{
    char sha1[CRYPTO_SHA256_HEX_LEN];
    char *one = upload(admin, "del", "1.0.0", "d1", sha1);
    char *two = upload(admin, "del", "2.0.0", "d2", NULL);
    struct th_resp r;

    /* A queued job: refused; cancelled, allowed, and the job keeps its reference. */
    submit_ref(admin, "del@1.0.0", "\"requirements\":{\"pool\":\"nowhere\"}", &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char job[40];
    snprintf(job, sizeof(job), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    delete_pkg(one, "1 queued or running job(s)");

    /* A schedule by digest: refused, naming it. */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"name\":\"by-digest\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":"
             "\"del@sha256:%s\"}}",
             sha1);
    th_http(&srv, "POST", "/api/v1/schedules", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char sched[40];
    snprintf(sched, sizeof(sched), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    delete_pkg(one, "schedule(s) by-digest");

    char path[160];
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/cancel", job);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert(r.status == 200 || r.status == 202, "%ld %s", r.status, r.body);
    th_resp_free(&r);
    json_t *j = th_job_wait_final(&srv, admin, job, 30);
    json_decref(j);
    delete_pkg(one, "schedule(s) by-digest");
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", sched);
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(delete_pkg(one, NULL), 204);
    j = th_job(&srv, admin, job);
    cr_assert(json_is_null(json_object_get(j, "package_id")), "the version is gone");
    cr_assert_str_eq(json_string_value(json_object_get(j, "package")), "del@1.0.0");
    json_decref(j);
    refused_ref(admin, "del@1.0.0", "has no version 1.0.0");
    /* Its retry has nothing to run: a 409 that says why, not a job without a package. */
    snprintf(path, sizeof(path), "/api/v1/jobs/%s/retry", job);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    cr_assert(strstr(th_str_of(&r, "detail"), "(del@1.0.0) was deleted"), "%s", r.body);
    th_resp_free(&r);

    /* A channel, then a schedule naming the channel. */
    cr_assert_eq(channel_put(admin, "del", "stable", "2.0.0"), 201);
    delete_pkg(two, "channel(s) stable");
    th_http(&srv, "POST", "/api/v1/schedules", admin,
            "{\"name\":\"on-stable\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":"
            "\"del@stable\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    snprintf(sched, sizeof(sched), "%s", th_str_of(&r, "id"));
    th_resp_free(&r);
    delete_pkg(two, "schedule(s) on-stable; channel(s) stable");
    th_http(&srv, "DELETE", "/api/v1/packages/del/channels/stable", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "a schedule names the channel: %s", r.body);
    cr_assert(strstr(th_str_of(&r, "detail"), "on-stable"), "%s", r.body);
    th_resp_free(&r);
    snprintf(path, sizeof(path), "/api/v1/schedules/%s", sched);
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204);
    th_resp_free(&r);
    th_http(&srv, "DELETE", "/api/v1/packages/del/channels/stable", viewer, NULL, NULL, &r);
    cr_assert_eq(r.status, 403);
    th_resp_free(&r);
    th_http(&srv, "DELETE", "/api/v1/packages/del/channels/stable", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 204, "%s", r.body);
    th_resp_free(&r);
    th_http(&srv, "DELETE", "/api/v1/packages/del/channels/stable", admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 404);
    th_resp_free(&r);
    cr_assert_eq(delete_pkg(two, NULL), 204);
    free(one);
    free(two);
}

Test(pkgrefs, another_tenants_references_resolve_to_nothing)
{
    char sha[CRYPTO_SHA256_HEX_LEN];
    char *mine = upload(admin, "iso", "1.0.0", "iso", sha);
    cr_assert_eq(channel_put(admin, "iso", "stable", "1.0.0"), 201);
    char *t2 = th_tenant(&srv, op, "other", "standard");
    char *b = th_tenant_token(&srv, op, t2, "admin");
    refused_ref(b, "iso@1.0.0", "no package named iso");
    refused_ref(b, "iso@latest", "no package named iso");
    refused_ref(b, "iso@stable", "no package named iso");
    char ref[256];
    snprintf(ref, sizeof(ref), "iso@sha256:%s", sha);
    refused_ref(b, ref, "no package named iso");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/schedules", b,
            "{\"name\":\"steal\",\"cron\":\"0 0 1 1 *\",\"job\":{\"package\":\"iso@stable\"}}",
            NULL, &r);
    cr_assert_eq(r.status, 422, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "field"), "job.package");
    th_resp_free(&r);
    th_http(&srv, "GET", "/api/v1/packages/iso/channels", b, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(channel_put(b, "iso", "stable", "1.0.0"), 404);
    th_http(&srv, "DELETE", "/api/v1/packages/iso/channels/stable", b, NULL, NULL, &r);
    cr_assert_eq(r.status, 404, "%s", r.body);
    th_resp_free(&r);
    /* B's own package of the same name and channel is B's alone. */
    char *theirs = upload(b, "iso", "1.0.0", "theirs", NULL);
    cr_assert_eq(channel_put(b, "iso", "stable", "1.0.0"), 201);
    snprintf(ref, sizeof(ref), "{\"package\":\"iso@stable\",\"requirements\":{\"pool\":\"x\"}}");
    th_http(&srv, "POST", "/api/v1/jobs", b, ref, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "package_id"), theirs);
    th_resp_free(&r);
    char *got = resolved("iso@stable");
    cr_assert_str_eq(got, mine, "A's channel untouched");
    free(got);
    free(theirs);
    free(b);
    free(t2);
    free(mine);
}

/* PostgreSQL's sort key orders versions as the SemVer 2.0 specification's own examples
 * (section 11), whatever order they come in; build metadata does not count, and a string
 * that is not a semantic version has no key. */
Test(pkgrefs, the_sort_key_is_semver_precedence)
{
    PGconn *pg = th_pg_connect("orch_system", srv.db);
    PGresult *res = th_pg_ok(
        pg, "SELECT string_agg(v, ' ' ORDER BY package_semver_key(v), v) FROM unnest(ARRAY["
            "'1.0.0-beta.11', '1.0.0', '2.1.1', '1.0.0-alpha.beta', '1.0.0-rc.1', '2.0.0',"
            " '1.0.0-alpha', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-alpha.1', '2.1.0',"
            " '1.0.0-alpha.10', '1.0.0-alpha.9', '1.9.0', '1.10.0', '1.0.0-1', '1.0.0-a-b']) v");
    cr_assert_str_eq(PQgetvalue(res, 0, 0),
                     "1.0.0-1 1.0.0-a-b 1.0.0-alpha 1.0.0-alpha.1 1.0.0-alpha.9 1.0.0-alpha.10 "
                     "1.0.0-alpha.beta 1.0.0-beta 1.0.0-beta.2 1.0.0-beta.11 1.0.0-rc.1 1.0.0 "
                     "1.9.0 1.10.0 2.0.0 2.1.0 2.1.1");
    PQclear(res);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM (SELECT 1 WHERE package_semver_key("
                                "'1.0.0+build.1') = package_semver_key('1.0.0+zzz')) x"),
                 1);
    cr_assert_eq(th_pg_long(pg, "SELECT count(*) FROM unnest(ARRAY['1', '1.0', 'v1.0.0',"
                                " '01.0.0', '1.0.0-01', '1.0.0-']) v"
                                " WHERE package_semver_key(v) IS NULL"),
                 6);
    PQfinish(pg);
}
