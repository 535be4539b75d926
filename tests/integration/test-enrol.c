/* Enrolment end to end: the real orch-agent CLI against the real orchd over HTTPS, with
 * enrolment tokens a tenant admin makes through the API. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/server.h"

static struct th_server srv;
static char *op;
static char *tenant;
static char *admin;
static char statedir[64];

static void setup(void)
{
    th_server_start(&srv, NULL);
    op = th_token(&srv, srv.operator_token);
    tenant = th_tenant(&srv, op, "acme", "free"); /* free tier: 2 agents */
    admin = th_tenant_token(&srv, op, tenant, "admin");
    snprintf(statedir, sizeof(statedir), "/tmp/orch-agent-test-XXXXXX");
    cr_assert_not_null(mkdtemp(statedir));
}

static void teardown(void)
{
    th_rm_rf(statedir);
    free(admin);
    free(tenant);
    free(op);
    th_server_stop(&srv);
}

TestSuite(enrol, .init = setup, .fini = teardown, .timeout = 120);

/* A new enrolment token (body: JSON); returns the token and sets *id. */
static char *enrol_token(const char *body, char **id)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", admin, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert(strncmp(th_str_of(&r, "token"), "orch_et_", 8) == 0);
    char *t = strdup(th_str_of(&r, "token"));
    if (id)
        *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);
    return t;
}

/* Run orch-agent with the state dir of this test (or dir) and the test CA. */
static void agent(struct th_run *r, const char *dir, const char *const *args)
{
    const char *argv[16] = {th_env("ORCH_TEST_AGENT")};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char env_dir[128];
    snprintf(env_dir, sizeof(env_dir), "ORCH_AGENT_STATE_DIR=%s", dir ? dir : statedir);
    const char *env[] = {env_dir, NULL};
    th_run(r, argv, env, 60000);
}

static int do_register(const char *token, const char *name, const char *dir, struct th_run *r)
{
    char ca[128];
    snprintf(ca, sizeof(ca), "%s/tls/ca.pem", srv.dir);
    const char *args[] = {"register", "--server", srv.base,  "--token",   token,
                          "--name",   name,       "--label", "team=blue", "--ca-file",
                          ca,         "--slots",  "4",       NULL};
    agent(r, dir, args);
    return r->status;
}

Test(enrol, register_status_unregister)
{
    char *tok =
        enrol_token("{\"name\":\"ci\",\"max_uses\":2,\"labels\":{\"zone\":\"eu-1\"}}", NULL);
    struct th_run r;
    cr_assert_eq(do_register(tok, "builder-1", NULL, &r), 0, "%s", th_str(&r.err));
    cr_assert(strstr(th_str(&r.out), "enrolled as 'builder-1'"), "%s", th_str(&r.out));
    th_run_free(&r);

    /* The credential is stored for the agent's eyes only. */
    char path[256];
    snprintf(path, sizeof(path), "%s/agent.json", statedir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);

    /* The tenant sees it, with the token's labels, the host's and its facts. */
    struct th_resp resp;
    th_http(&srv, "GET", "/api/v1/agents", admin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 200);
    json_t *a = json_array_get(json_object_get(resp.json, "items"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(a, "name")), "builder-1");
    json_t *labels = json_object_get(a, "labels");
    cr_assert_str_eq(json_string_value(json_object_get(labels, "zone")), "eu-1");
    cr_assert_str_eq(json_string_value(json_object_get(labels, "team")), "blue");
    cr_assert_eq(json_integer_value(json_object_get(a, "slots")), 4);
    json_t *caps = json_object_get(a, "capabilities");
    cr_assert_str_eq(json_string_value(json_object_get(caps, "os")), "linux");
    cr_assert_gt(json_integer_value(json_object_get(caps, "cpus")), 0);
    cr_assert_gt(json_integer_value(json_object_get(caps, "memory_bytes")), 0);
    cr_assert(json_array_size(json_object_get(caps, "interpreters")) > 0);
    cr_assert_null(strstr(resp.body, "orch_ag_"), "the credential must never be listed");
    th_resp_free(&resp);

    const char *status[] = {"status", NULL};
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 0, "%s%s", th_str(&r.out), th_str(&r.err));
    cr_assert(strstr(th_str(&r.out), "reachable:  yes"), "%s", th_str(&r.out));
    th_run_free(&r);

    /* Enrolling again on the same host is refused locally. */
    cr_assert_eq(do_register(tok, "builder-1", NULL, &r), 1);
    cr_assert(strstr(th_str(&r.err), "already enrolled"), "%s", th_str(&r.err));
    th_run_free(&r);

    const char *unreg[] = {"unregister", NULL};
    agent(&r, NULL, unreg);
    cr_assert_eq(r.status, 0, "%s", th_str(&r.err));
    th_run_free(&r);
    cr_assert_neq(stat(path, &st), 0, "the state file is gone");
    th_http(&srv, "GET", "/api/v1/agents", admin, NULL, NULL, &resp);
    cr_assert_eq(json_array_size(json_object_get(resp.json, "items")), 0);
    th_resp_free(&resp);

    agent(&r, NULL, status);
    cr_assert_eq(r.status, 3);
    cr_assert(strstr(th_str(&r.out), "not enrolled"));
    th_run_free(&r);
    free(tok);
}

Test(enrol, used_up_expired_and_revoked_tokens_are_refused)
{
    char *once = enrol_token("{\"name\":\"once\",\"max_uses\":1}", NULL);
    char dir2[] = "/tmp/orch-agent-test2-XXXXXX";
    cr_assert_not_null(mkdtemp(dir2));
    struct th_run r;
    cr_assert_eq(do_register(once, "a1", NULL, &r), 0, "%s", th_str(&r.err));
    th_run_free(&r);
    cr_assert_eq(do_register(once, "a2", dir2, &r), 1);
    cr_assert(strstr(th_str(&r.err), "used up"), "%s", th_str(&r.err));
    th_run_free(&r);

    char *rid = NULL;
    char *revoked = enrol_token("{\"name\":\"revoked\"}", &rid);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/enrollment-tokens/%s", rid);
    struct th_resp resp;
    th_http(&srv, "DELETE", path, admin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 204);
    th_resp_free(&resp);
    cr_assert_eq(do_register(revoked, "a2", dir2, &r), 1);
    cr_assert(strstr(th_str(&r.err), "revoked"), "%s", th_str(&r.err));
    th_run_free(&r);

    char *eid = NULL;
    char *expired = enrol_token("{\"name\":\"expired\"}", &eid);
    PGconn *pg = th_pg_connect("postgres", srv.db);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE id = "
             "'%s'",
             eid);
    PQclear(th_pg_ok(pg, sql));
    PQfinish(pg);
    cr_assert_eq(do_register(expired, "a2", dir2, &r), 1);
    cr_assert(strstr(th_str(&r.err), "expired"), "%s", th_str(&r.err));
    th_run_free(&r);

    /* A token that never existed, and one of another kind. */
    cr_assert_eq(do_register("orch_et_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                             "a2", dir2, &r),
                 1);
    cr_assert(strstr(th_str(&r.err), "not valid"), "%s", th_str(&r.err));
    th_run_free(&r);

    th_rm_rf(dir2);
    free(once);
    free(revoked);
    free(expired);
    free(rid);
    free(eid);
}

Test(enrol, agent_quota_refuses_third_agent)
{
    char *tok = enrol_token("{\"name\":\"fleet\",\"max_uses\":10}", NULL);
    char dirs[3][40];
    struct th_run r;
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof(dirs[i]), "/tmp/orch-agent-q%d-XXXXXX", i);
        cr_assert_not_null(mkdtemp(dirs[i]));
        char name[24];
        snprintf(name, sizeof(name), "agent-%d", i);
        int st = do_register(tok, name, dirs[i], &r);
        if (i < 2) {
            cr_assert_eq(st, 0, "agent %d: %s", i, th_str(&r.err));
        } else {
            cr_assert_eq(st, 1);
            cr_assert(strstr(th_str(&r.err), "agent quota"), "%s", th_str(&r.err));
            cr_assert(strstr(th_str(&r.err), "HTTP 403"), "%s", th_str(&r.err));
        }
        th_run_free(&r);
    }
    /* The refused enrolment did not use the token up. */
    struct th_resp resp;
    th_http(&srv, "GET", "/api/v1/enrollment-tokens", admin, NULL, NULL, &resp);
    json_t *t = json_array_get(json_object_get(resp.json, "items"), 0);
    cr_assert_eq(json_integer_value(json_object_get(t, "uses")), 2);
    th_resp_free(&resp);
    th_http(&srv, "GET", "/api/v1/tenant", admin, NULL, NULL, &resp);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(resp.json, "usage"), "agents")),
                 2);
    th_resp_free(&resp);
    for (int i = 0; i < 3; i++) {
        th_rm_rf(dirs[i]);
    }
    free(tok);
}

Test(enrol, revoked_or_disabled_agent_is_refused_and_other_tenants_see_nothing)
{
    char *tok = enrol_token("{\"name\":\"ci\"}", NULL);
    struct th_run r;
    cr_assert_eq(do_register(tok, "builder", NULL, &r), 0, "%s", th_str(&r.err));
    th_run_free(&r);
    struct th_resp resp;
    th_http(&srv, "GET", "/api/v1/agents", admin, NULL, NULL, &resp);
    char *id = strdup(json_string_value(
        json_object_get(json_array_get(json_object_get(resp.json, "items"), 0), "id")));
    th_resp_free(&resp);

    /* Another tenant's admin cannot see, disable or delete it. */
    char *other = th_tenant(&srv, op, "other", "standard");
    char *oadmin = th_tenant_token(&srv, op, other, "admin");
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/agents/%s", id);
    th_http(&srv, "GET", path, oadmin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 404);
    th_resp_free(&resp);
    th_http(&srv, "DELETE", path, oadmin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 404);
    th_resp_free(&resp);
    snprintf(path, sizeof(path), "/api/v1/agents/%s/disable", id);
    th_http(&srv, "POST", path, oadmin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 404);
    th_resp_free(&resp);

    /* Disabled: the agent's own requests are refused; enabled again: accepted. */
    th_http(&srv, "POST", path, admin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 200, "%s", resp.body);
    cr_assert_str_eq(th_str_of(&resp, "status"), "disabled");
    th_resp_free(&resp);
    const char *status[] = {"status", NULL};
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.out), "refuses"), "%s", th_str(&r.out));
    th_run_free(&r);
    snprintf(path, sizeof(path), "/api/v1/agents/%s/enable", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 200);
    th_resp_free(&resp);
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 0, "%s", th_str(&r.out));
    th_run_free(&r);

    /* Revoking the credential takes effect at once. */
    snprintf(path, sizeof(path), "/api/v1/agents/%s/revoke-credential", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 200);
    cr_assert(json_is_true(json_object_get(resp.json, "credential_revoked")));
    th_resp_free(&resp);
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 1);
    th_run_free(&r);

    free(oadmin);
    free(other);
    free(id);
    free(tok);
}

Test(enrol, suspended_tenant_can_neither_enrol_nor_connect)
{
    char *tok = enrol_token("{\"name\":\"ci\",\"max_uses\":2}", NULL);
    struct th_run r;
    cr_assert_eq(do_register(tok, "builder", NULL, &r), 0, "%s", th_str(&r.err));
    th_run_free(&r);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/tenants/%s", tenant);
    struct th_resp resp;
    th_http(&srv, "PATCH", path, op, "{\"status\":\"suspended\"}", NULL, &resp);
    cr_assert_eq(resp.status, 200);
    th_resp_free(&resp);

    const char *status[] = {"status", NULL};
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(th_str(&r.out), "suspended"), "%s", th_str(&r.out));
    th_run_free(&r);
    char dir2[] = "/tmp/orch-agent-test3-XXXXXX";
    cr_assert_not_null(mkdtemp(dir2));
    cr_assert_eq(do_register(tok, "second", dir2, &r), 1);
    cr_assert(strstr(th_str(&r.err), "suspended"), "%s", th_str(&r.err));
    th_run_free(&r);

    th_http(&srv, "PATCH", path, op, "{\"status\":\"active\"}", NULL, &resp);
    cr_assert_eq(resp.status, 200);
    th_resp_free(&resp);
    agent(&r, NULL, status);
    cr_assert_eq(r.status, 0, "%s", th_str(&r.out));
    th_run_free(&r);
    th_rm_rf(dir2);
    free(tok);
}

Test(enrol, damaged_state_file_is_not_overwritten)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/agent.json", statedir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\"half\": ", f);
    fclose(f);
    chmod(path, 0600);
    char *tok = enrol_token("{\"name\":\"ci\"}", NULL);
    struct th_run r;
    cr_assert_eq(do_register(tok, "builder", NULL, &r), 1);
    cr_assert(strstr(th_str(&r.err), "damaged"), "%s", th_str(&r.err));
    th_run_free(&r);
    const char *force[] = {"unregister", "--force", NULL};
    agent(&r, NULL, force);
    cr_assert_eq(r.status, 0, "%s", th_str(&r.err));
    th_run_free(&r);
    cr_assert_eq(do_register(tok, "builder", NULL, &r), 0, "%s", th_str(&r.err));
    th_run_free(&r);
    free(tok);
}

/* Status of POST /api/v1/agent/heartbeat with cred; *exp_s gets credential_expires_in_s
 * (-1 when absent). */
static long beat_status(const char *cred, json_int_t *exp_s)
{
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agent/heartbeat", cred,
            "{\"status\":\"idle\",\"slots\":1,\"free_slots\":1,\"running\":[]}", NULL, &r);
    long st = r.status;
    if (exp_s) {
        json_t *e = json_object_get(r.json, "credential_expires_in_s");
        *exp_s = json_is_integer(e) ? json_integer_value(e) : -1;
    }
    th_resp_free(&r);
    return st;
}

Test(enrol, rotated_credential_keeps_the_old_one_for_a_grace_period_until_revoked)
{
    char *tok = enrol_token("{\"name\":\"rot\"}", NULL);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"rot\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":{},\"slots\":1}",
             tok);
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *old = strdup(th_str_of(&r, "credential"));
    char *id = strdup(th_str_of(&r, "id"));
    th_resp_free(&r);

    json_int_t exp = 0;
    cr_assert_eq(beat_status(old, &exp), 200);
    cr_assert(exp > 89 * 86400 && exp <= 90 * 86400 + 5, "credential_expires_in_s=%lld",
              (long long)exp);

    th_http(&srv, "POST", "/api/v1/agent/rotate-credential", old, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    cr_assert(strncmp(cred, "orch_ag_", 8) == 0);
    cr_assert_str_neq(cred, old);

    /* Both work: the new one, and the old one during its grace period. */
    cr_assert_eq(beat_status(cred, &exp), 200);
    cr_assert(exp > 0, "credential_expires_in_s=%lld", (long long)exp);
    cr_assert_eq(beat_status(old, &exp), 200);
    cr_assert(exp > 0);
    th_http(&srv, "GET", "/api/v1/agent", old, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "id"), id);
    th_resp_free(&r);

    /* A second rotation: the first credential is gone, the second is in its grace. */
    th_http(&srv, "POST", "/api/v1/agent/rotate-credential", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *third = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);
    cr_assert_eq(beat_status(old, NULL), 401);
    cr_assert_eq(beat_status(cred, NULL), 200);
    cr_assert_eq(beat_status(third, NULL), 200);

    /* The previous credential cannot rotate (nor unregister): whoever stole it would
     * replace the current one and lock the agent out. It still speaks the protocol until
     * its grace period ends, and the current one is untouched. */
    th_http(&srv, "POST", "/api/v1/agent/rotate-credential", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    cr_assert_str_eq(th_str_of(&r, "reason"), "previous-credential");
    cr_assert(!strstr(r.body, "orch_ag_"), "no credential is handed out: %s", r.body);
    th_resp_free(&r);
    th_http(&srv, "DELETE", "/api/v1/agent", cred, NULL, NULL, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(beat_status(third, NULL), 200);
    cr_assert_eq(beat_status(cred, NULL), 200);
    th_http(&srv, "GET", "/api/v1/agent", third, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);

    /* Revoking clears both the current and the previous credential. */
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/agents/%s/revoke-credential", id);
    th_http(&srv, "POST", path, admin, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    th_resp_free(&r);
    cr_assert_eq(beat_status(third, NULL), 401);
    cr_assert_eq(beat_status(cred, NULL), 401);
    cr_assert_eq(beat_status(old, NULL), 401);

    free(third);
    free(cred);
    free(id);
    free(old);
    free(tok);
}

static char *state_credential(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/agent.json", statedir);
    json_t *j = json_load_file(path, 0, NULL);
    cr_assert_not_null(j, "cannot read %s", path);
    char *c = strdup(json_string_value(json_object_get(j, "credential")));
    json_decref(j);
    return c;
}

Test(enrol, daemon_rotates_its_credential_and_stays_online)
{
    char *tok = enrol_token("{\"name\":\"ci\"}", NULL);
    struct th_run r;
    cr_assert_eq(do_register(tok, "rotor", NULL, &r), 0, "%s", th_str(&r.err));
    th_run_free(&r);
    char *old = state_credential();

    char env_dir[128], log[128];
    snprintf(env_dir, sizeof(env_dir), "ORCH_AGENT_STATE_DIR=%s", statedir);
    snprintf(log, sizeof(log), "%s.log", statedir);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        putenv(env_dir);
        putenv("ORCH_AGENT_ROTATE_BEFORE_S=99999999");
        execl(th_env("ORCH_TEST_AGENT"), "orch-agent", "run", (char *)NULL);
        _exit(127);
    }

    /* The first heartbeat answer says the credential expires within 99999999 s: the
     * daemon rotates at once and saves the new credential. */
    char *cred = NULL;
    for (int i = 0; i < 300; i++) {
        free(cred);
        cred = state_credential();
        if (strcmp(cred, old) != 0)
            break;
        usleep(100000);
    }
    cr_assert_str_neq(cred, old, "agent.json still holds the first credential");
    cr_assert(strncmp(cred, "orch_ag_", 8) == 0);

    /* It stays online with it (its next heartbeats use the new credential). */
    struct th_resp resp;
    th_http(&srv, "GET", "/api/v1/agent", cred, NULL, NULL, &resp);
    cr_assert_eq(resp.status, 200, "%s", resp.body);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/agents/%s", th_str_of(&resp, "id"));
    th_resp_free(&resp);
    bool online = false;
    for (int i = 0; i < 300 && !online; i++) {
        th_http(&srv, "GET", path, admin, NULL, NULL, &resp);
        online = strcmp(th_str_of(&resp, "status"), "online") == 0;
        th_resp_free(&resp);
        if (!online)
            usleep(100000);
    }
    cr_assert(online, "the agent is not online after the rotation");

    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "orch-agent run exited %d", st);
    /* Rotated once (at most once an hour), and no request was refused. */
    FILE *f = fopen(log, "r");
    cr_assert_not_null(f);
    char line[1024];
    int rotations = 0, refused = 0;
    while (fgets(line, sizeof(line), f)) {
        rotations += strstr(line, "op=rotate-credential state=rotated") != NULL;
        refused += strstr(line, "status=401") != NULL;
    }
    fclose(f);
    unlink(log);
    cr_assert_eq(rotations, 1);
    cr_assert_eq(refused, 0);
    free(cred);
    free(old);
    free(tok);
}
