/* api-package-refs.c: naming a package by reference (name@1.4.0, name@latest,
 * name@<channel>, name@sha256:<hex>) and the channels a tenant moves between versions
 * (PUT/GET/DELETE /packages/{name}/channels[/{channel}]). The syntax is pkgref.c's; the
 * resolution is PostgreSQL's package_resolve() (sql/functions/45_packages.sql), always in
 * the tenant's scope, so another tenant's packages and channels never resolve. What the
 * reference names is decided here once for a job (at submission) and at every firing for
 * a schedule (cron-fire.c goes through api_jobs_insert()). docs/packages.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "server/api.h"
#include "server/app.h"
#include "server/pkgref.h"

/* A package name has at most this many channels. */
#define PACKAGE_CHANNELS_MAX 64

static const struct store_stmt q_ref_resolve =
    STORE_STMT("pkgref_resolve", "SELECT p.id FROM packages p WHERE p.id = package_resolve($1)", 1);

static const struct store_stmt q_ref_name_known =
    STORE_STMT("pkgref_name_known", "SELECT 1 FROM packages WHERE name = $1 LIMIT 1", 1);

/* Who holds a version: the jobs that may still run it, the schedules whose reference
 * resolves to it (name@latest excepted: deleting the latest moves latest), and the
 * channels pointing at it. Names are listed up to five. */
static const struct store_stmt q_ref_holders =
    STORE_STMT("pkgref_holders",
               "SELECT (SELECT count(*) FROM jobs j WHERE j.package_id = $1::uuid"
               "          AND j.status IN ('queued', 'assigned', 'running')),"
               " (SELECT count(*) FROM schedules s WHERE s.job_template->>'package_id' = $1::text"
               "     OR (s.job_template->>'package' NOT LIKE '%@latest'"
               "         AND package_resolve(s.job_template->>'package') = $1::uuid)),"
               " (SELECT coalesce(string_agg(x.name, ', ' ORDER BY x.name), '') FROM"
               "   (SELECT s.name FROM schedules s WHERE s.job_template->>'package_id' = $1::text"
               "       OR (s.job_template->>'package' NOT LIKE '%@latest'"
               "           AND package_resolve(s.job_template->>'package') = $1::uuid)"
               "     ORDER BY s.name LIMIT 5) x),"
               " (SELECT count(*) FROM package_channels c WHERE c.package_id = $1::uuid),"
               " (SELECT coalesce(string_agg(x.channel, ', ' ORDER BY x.channel), '') FROM"
               "   (SELECT c.channel FROM package_channels c WHERE c.package_id = $1::uuid"
               "     ORDER BY c.channel LIMIT 5) x)",
               1);

#define CHANNEL_DOC                                                                                \
    "json_build_object('name', c.name, 'channel', c.channel, 'version', p.version,"                \
    " 'package_id', p.id, 'sha256', encode(p.sha256, 'hex'), 'created_at', c.created_at,"          \
    " 'updated_at', c.updated_at)"

static const struct store_stmt q_chan_doc = STORE_STMT(
    "pkgchan_doc",
    "SELECT " CHANNEL_DOC " FROM package_channels c JOIN packages p ON p.id = c.package_id"
    " WHERE c.name = $1 AND c.channel = $2",
    2);

/* NULL when the tenant has no package of this name (404). */
static const struct store_stmt q_chan_list = STORE_STMT(
    "pkgchan_list",
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM packages WHERE name = $1) THEN"
    " json_build_object('items', coalesce((SELECT json_agg(" CHANNEL_DOC " ORDER BY c.channel)"
    "   FROM package_channels c JOIN packages p ON p.id = c.package_id WHERE c.name = $1),"
    "   '[]')) END",
    1);

static const struct store_stmt q_chan_version =
    STORE_STMT("pkgchan_version", "SELECT id FROM packages WHERE name = $1 AND version = $2", 2);

/* The channel's version before the move (locked), and how many channels the name has. */
static const struct store_stmt q_chan_current = STORE_STMT(
    "pkgchan_current",
    "SELECT (SELECT p.version FROM package_channels c JOIN packages p ON p.id = c.package_id"
    "         WHERE c.name = $1 AND c.channel = $2 FOR UPDATE OF c),"
    " (SELECT count(*) FROM package_channels WHERE name = $1)",
    2);

static const struct store_stmt q_chan_upsert =
    STORE_STMT("pkgchan_upsert",
               "INSERT INTO package_channels (tenant_id, name, channel, package_id)"
               " VALUES (app_tenant(), $1, $2, $3::uuid)"
               " ON CONFLICT (tenant_id, name, channel)"
               " DO UPDATE SET package_id = excluded.package_id, updated_at = now()",
               3);

/* The schedules naming the channel: deleting it would leave their firings unresolved. */
static const struct store_stmt q_chan_schedules =
    STORE_STMT("pkgchan_schedules",
               "SELECT count(*), coalesce(string_agg(x.name, ', ' ORDER BY x.name), '') FROM"
               " (SELECT s.name FROM schedules s WHERE s.job_template->>'package' = $1 || '@' || $2"
               "   ORDER BY s.name LIMIT 5) x",
               2);

static const struct store_stmt q_chan_delete = STORE_STMT(
    "pkgchan_delete",
    "DELETE FROM package_channels WHERE name = $1 AND channel = $2 RETURNING channel", 2);

int api_package_ref_resolve(struct store_tx *tx, const char *ref, char id_out[ID_STR_LEN],
                            char *detail, size_t dlen)
{
    struct pkgref pr;
    int r = pkgref_parse(ref, &pr, detail, dlen);
    if (r < 0)
        return r;
    PGresult *res = NULL;
    const char *p[] = {ref};
    r = store_tx_exec(tx, &q_ref_resolve, p, &res);
    if (r > 0)
        snprintf(id_out, ID_STR_LEN, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (r != 0)
        return r < 0 ? r : 0;
    const char *pn[] = {pr.name};
    r = store_tx_exec(tx, &q_ref_name_known, pn, NULL);
    if (r < 0)
        return r;
    if (r == 0)
        snprintf(detail, dlen, "no package named %s", pr.name);
    else if (pr.kind == PKGREF_VERSION)
        snprintf(detail, dlen, "package %s has no version %s", pr.name, pr.selector);
    else if (pr.kind == PKGREF_LATEST)
        snprintf(detail, dlen,
                 "package %s has no release version (pre-releases are never latest): name "
                 "the version or a channel",
                 pr.name);
    else if (pr.kind == PKGREF_CHANNEL)
        snprintf(detail, dlen, "package %s has no channel %s", pr.name, pr.selector);
    else
        snprintf(detail, dlen, "package %s has no version with this digest", pr.name);
    return -EINVAL;
}

int api_package_refs_holding(struct store_tx *tx, const char *package_id, char *detail, size_t dlen)
{
    PGresult *res = NULL;
    const char *p[] = {package_id};
    int r = store_tx_exec(tx, &q_ref_holders, p, &res);
    if (r <= 0) {
        PQclear(res);
        return r < 0 ? r : -EIO;
    }
    long long jobs = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    long long scheds = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    long long chans = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    size_t at = 0;
    detail[0] = '\0';
    if (jobs > 0)
        at += (size_t)snprintf(detail + at, dlen - at, "%lld queued or running job(s)", jobs);
    if (scheds > 0 && at < dlen)
        at += (size_t)snprintf(detail + at, dlen - at, "%sschedule(s) %s%s", at ? "; " : "",
                               PQgetvalue(res, 0, 2), scheds > 5 ? ", ..." : "");
    if (chans > 0 && at < dlen)
        at += (size_t)snprintf(detail + at, dlen - at, "%schannel(s) %s%s", at ? "; " : "",
                               PQgetvalue(res, 0, 4), chans > 5 ? ", ..." : "");
    PQclear(res);
    if (at > 0 && at < dlen)
        snprintf(detail + at, dlen - at, " refer to this version");
    return jobs + scheds + chans > 0 ? 1 : 0;
}

/* The path's {name} and {channel}: an impossible name is a package that does not exist
 * (404); an impossible channel is the caller's mistake (422). Returns 0 or < 0 after
 * replying. */
static int channel_path(struct http_req *req, const char **name, const char **channel)
{
    *name = http_req_param(req, "name");
    if (!*name || !pkgref_name_valid(*name)) {
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        return -ENOENT;
    }
    if (!channel)
        return 0;
    *channel = http_req_param(req, "channel");
    if (!*channel || !pkgref_channel_valid(*channel)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "a channel is a lower-case letter, then up to 62 of a-z 0-9 _ -; "
                           "latest is reserved",
                           "channel");
        return -EINVAL;
    }
    return 0;
}

void api_package_channels_list(struct http_req *req)
{
    const char *name;
    if (channel_path(req, &name, NULL) < 0)
        return;
    const char *p[] = {name};
    PGresult *res = NULL;
    int r = store_exec_once(((struct app *)http_req_app(req))->store,
                            http_req_principal(req)->tenant_id, &q_chan_list, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "listing the package's channels");
        return;
    }
    if (PQgetisnull(res, 0, 0)) {
        PQclear(res);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        return;
    }
    api_reply_pg_json(req, 200, res);
}

static const struct jsonv_field channel_fields[] = {
    {"version", JSONV_STRING, JSONV_REQUIRED, 1, PKGREF_VERSION_MAX},
};

void api_package_channel_put(struct http_req *req)
{
    const char *name, *channel;
    if (channel_path(req, &name, &channel) < 0)
        return;
    json_t *body = NULL;
    if (http_req_json(req, channel_fields, ELEMENTSOF(channel_fields), &body) < 0)
        return;
    const char *version = api_json_str(body, "version");
    if (!pkgref_version_valid(version)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "is not a semantic version (MAJOR.MINOR.PATCH, optionally "
                           "-PRERELEASE and +BUILD)",
                           "version");
        json_decref(body);
        return;
    }
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "moving the channel");
        json_decref(body);
        return;
    }
    char id[ID_STR_LEN] = "", prev[PKGREF_VERSION_MAX + 1] = "";
    long long nchannels = 0;
    const char *pv[] = {name, version};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_chan_version, pv, &res);
    if (r > 0)
        snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    if (r == 0) {
        const char *pn[] = {name};
        r = store_tx_exec(tx, &q_ref_name_known, pn, NULL);
        store_tx_rollback(tx);
        if (r == 0) {
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        } else if (r > 0) {
            char detail[256];
            snprintf(detail, sizeof(detail), "package %s has no version %s", name, version);
            http_reply_problem(req, PROBLEM_VALIDATION, detail, "version");
        } else {
            http_reply_error(req, r, "moving the channel");
        }
        json_decref(body);
        return;
    }
    const char *pc[] = {name, channel};
    if (r > 0)
        r = store_tx_exec(tx, &q_chan_current, pc, &res);
    if (r > 0) {
        snprintf(prev, sizeof(prev), "%s", PQgetvalue(res, 0, 0));
        nchannels = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    bool created = r > 0 && PQgetisnull(res, 0, 0);
    PQclear(res);
    if (r > 0 && created && nchannels >= PACKAGE_CHANNELS_MAX) {
        store_tx_rollback(tx);
        char detail[128];
        snprintf(detail, sizeof(detail), "a package has at most %d channels; delete one first",
                 PACKAGE_CHANNELS_MAX);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "channel");
        json_decref(body);
        return;
    }
    const char *pu[] = {name, channel, id};
    if (r >= 0)
        r = store_tx_exec(tx, &q_chan_upsert, pu, NULL);
    if (r == -ENOENT) {
        /* The version was deleted since it was read (its foreign key said so). */
        store_tx_rollback(tx);
        char detail[256];
        snprintf(detail, sizeof(detail), "package %s has no version %s", name, version);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "version");
        json_decref(body);
        return;
    }
    if (r >= 0) {
        char obj[PKGREF_NAME_MAX + PKGREF_CHANNEL_MAX + 2];
        snprintf(obj, sizeof(obj), "%s@%s", name, channel);
        json_t *d = json_pack("{s:s, s:s, s:s, s:s?}", "name", name, "channel", channel, "version",
                              version, "previous_version", created ? NULL : prev);
        r = app_audit(tx, req, NULL, "package.channel.set", "package_channel", obj, d);
        json_decref(d);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "moving the channel");
        json_decref(body);
        return;
    }
    res = NULL;
    r = store_tx_exec(tx, &q_chan_doc, pc, &res);
    if (r <= 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_error(req, r < 0 ? r : -EIO, "moving the channel");
    } else if (api_commit(req, tx, "moving the channel") == 0) {
        api_reply_pg_json(req, created ? 201 : 200, res);
    } else {
        PQclear(res);
    }
    json_decref(body);
}

void api_package_channel_delete(struct http_req *req)
{
    const char *name, *channel;
    if (channel_path(req, &name, &channel) < 0)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "deleting the channel");
        return;
    }
    const char *p[] = {name, channel};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_chan_schedules, p, &res);
    long long scheds = r > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    if (scheds > 0) {
        char detail[512];
        snprintf(detail, sizeof(detail),
                 "schedule(s) %s%s name this channel; change them before deleting it",
                 PQgetvalue(res, 0, 1), scheds > 5 ? ", ..." : "");
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT, detail, NULL);
        return;
    }
    PQclear(res);
    if (r >= 0)
        r = store_tx_exec(tx, &q_chan_delete, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such channel", NULL);
        return;
    }
    if (r > 0) {
        char obj[PKGREF_NAME_MAX + PKGREF_CHANNEL_MAX + 2];
        snprintf(obj, sizeof(obj), "%s@%s", name, channel);
        r = app_audit(tx, req, NULL, "package.channel.delete", "package_channel", obj, NULL);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "deleting the channel");
        return;
    }
    if (api_commit(req, tx, "deleting the channel") < 0)
        return;
    http_reply_json(req, 204, NULL);
}
