/* api-packages.c: a tenant's packages: tar (optionally gzip-compressed) or zip archives that jobs
 * run an entrypoint from. The bytes are stored once per tenant by SHA-256 (package_blobs)
 * and count against the tier's storage quota; a package is a name and version naming a
 * blob, with an optional default entrypoint. Agents fetch the bytes over their connection
 * and keep them in their cache (docs/agent.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/id.h"
#include "common/relpath.h"
#include "server/api.h"
#include "server/app.h"
#include "server/blobcache.h"
#include "server/pkgref.h"

static const struct store_stmt q_pkg_doc =
    STORE_STMT("pkg_doc", "SELECT doc FROM package_view WHERE id = $1", 1);

static const struct store_stmt q_pkg_list = STORE_STMT(
    "pkg_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM package_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "         AND ($3::text IS NULL OR name = $3)"
    "        ORDER BY id LIMIT $2) s",
    3);

/* The versions of one package, newest first by semantic-version precedence
 * (package_semver_key(), sql/functions/45_packages.sql; a version that is not a semantic
 * one, from before 0020, sorts last), then by the version's text; the cursor is the last
 * package of the page. */
#define PKG_ORDER_KEY "coalesce(package_semver_key(v.version), ''), v.version COLLATE \"C\", v.id"
static const struct store_stmt q_pkg_list_name = STORE_STMT(
    "pkg_list_name",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY k DESC, ver DESC, id DESC),"
    " '[]'), 'next_cursor', CASE WHEN count(*) = $2 THEN"
    " (array_agg(id ORDER BY k, ver, id))[1] END)"
    " FROM (SELECT v.id, v.doc, coalesce(package_semver_key(v.version), '') AS k,"
    "              v.version COLLATE \"C\" AS ver FROM package_view v"
    "        WHERE v.name = $3 AND ($1::uuid IS NULL OR (" PKG_ORDER_KEY ") <"
    "              (SELECT coalesce(package_semver_key(c.version), ''), c.version COLLATE \"C\","
    "                      c.id FROM packages c WHERE c.id = $1::uuid))"
    "        ORDER BY k DESC, ver DESC, v.id DESC LIMIT $2) s",
    3);

/* The storage quota counts a blob once: only new bytes are charged. */
static const struct store_stmt q_pkg_quota =
    STORE_STMT("pkg_quota",
               "SELECT quota_acquire('storage_bytes', $2::bigint)"
               "  WHERE NOT EXISTS (SELECT 1 FROM package_blobs WHERE sha256 = decode($1, 'hex'))",
               2);

static const struct store_stmt q_blob_insert = STORE_STMT(
    "pkg_blob_insert",
    "INSERT INTO package_blobs (tenant_id, sha256, size_bytes, data)"
    " VALUES (app_tenant(), decode($1, 'hex'), $2::bigint, $3::bytea) ON CONFLICT DO NOTHING",
    3);

static const struct store_stmt q_pkg_insert =
    STORE_STMT("pkg_insert",
               "INSERT INTO packages (id, tenant_id, name, version, sha256, size_bytes, entrypoint)"
               " VALUES ($1, app_tenant(), $2, $3, decode($4, 'hex'), $5::bigint, $6)",
               6);

/* The package locked against new jobs and channels referring to it (their foreign keys
 * wait for this lock), so that what api_package_refs_holding() counts stays true. */
static const struct store_stmt q_pkg_lock = STORE_STMT(
    "pkg_lock", "SELECT encode(sha256, 'hex') FROM packages WHERE id = $1 FOR UPDATE", 1);

static const struct store_stmt q_pkg_delete =
    STORE_STMT("pkg_delete", "DELETE FROM packages WHERE id = $1", 1);

/* The bytes go when no package names them any more. */
static const struct store_stmt q_blob_gc =
    STORE_STMT("pkg_blob_gc",
               "DELETE FROM package_blobs WHERE sha256 = decode($1, 'hex')"
               "   AND NOT EXISTS (SELECT 1 FROM packages WHERE sha256 = decode($1, 'hex'))",
               1);

/* What the content routes need before the bytes: RLS decides whether the tenant has it. */
/* $2: an agent of a shared pool (its transaction is in the system scope), which may read
 * only the package of a job assigned to it now; NULL for a tenant or a tenant's agent,
 * whose scope already bounds what it sees. */
static const struct store_stmt q_pkg_meta =
    STORE_STMT("pkg_meta",
               "SELECT encode(p.sha256, 'hex'), p.name || '-' || p.version, p.tenant_id"
               "  FROM packages p WHERE p.id = $1"
               "   AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs j"
               "         WHERE j.agent_id = $2 AND j.package_id = p.id"
               "           AND j.tenant_id = p.tenant_id AND j.status IN ('assigned', 'running')))",
               2);

/* Binary result: data is the raw bytes. */
static const struct store_stmt q_pkg_blob = STORE_STMT(
    "pkg_blob",
    "SELECT data FROM package_blobs WHERE sha256 = decode($1, 'hex') AND tenant_id = $2", 2);

static bool valid_name(const char *s)
{
    return pkgref_name_valid(s);
}

static bool valid_version(const char *s)
{
    return pkgref_version_valid(s);
}

/* A tar archive (ustar magic at 257), a gzip stream (1f 8b) or a zip archive (its first
 * local file header, PK 03 04). The agent reads the archive itself and refuses what is not
 * one of these (agent/unpack.c): this only turns away the obvious mistakes early. */
static bool looks_like_archive(const unsigned char *d, size_t n)
{
    if (n >= 2 && d[0] == 0x1f && d[1] == 0x8b)
        return true;
    if (n >= 4 && memcmp(d, "PK\x03\x04", 4) == 0)
        return true;
    return n >= 512 && memcmp(d + 257, "ustar", 5) == 0;
}

static void write_failed(struct http_req *req, struct store_tx *tx, int r)
{
    if (r == -EDQUOT) {
        app_reply_quota_refused(req, tx, NULL,
                                "the tenant's storage quota would be exceeded; delete packages "
                                "or move to a larger tier");
        return;
    }
    store_tx_rollback(tx);
    if (r == -EEXIST)
        http_reply_problem(req, PROBLEM_CONFLICT, "this package already has this version",
                           "version");
    else
        http_reply_error(req, r, "saving the package");
}

void api_packages_create(struct http_req *req)
{
    const char *name = http_req_query(req, "name");
    const char *version = http_req_query(req, "version");
    const char *entry = http_req_query(req, "entrypoint");
    const char *want = http_req_query(req, "sha256");
    if (!name || !valid_name(name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "required: 1 to 128 characters of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit",
                           "name");
        return;
    }
    if (!version || !valid_version(version)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "required: a semantic version of at most 64 characters "
                           "(MAJOR.MINOR.PATCH, optionally -PRERELEASE and +BUILD: 1.4.0, "
                           "2.0.0-rc.1)",
                           "version");
        return;
    }
    if (entry && !relpath_is_safe(entry)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be a relative path in the package (A-Z a-z 0-9 _ . - /, no ..)",
                           "entrypoint");
        return;
    }
    static const char *const types[] = {"application/gzip",  "application/x-gzip",
                                        "application/x-tar", "application/octet-stream",
                                        "application/zip",   NULL};
    const char *data = NULL;
    size_t len = 0;
    if (http_req_body(req, types, &data, &len) < 0)
        return;
    if (!looks_like_archive((const unsigned char *)data, len)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "the body must be a tar archive, optionally gzip-compressed, or a zip "
                           "archive",
                           "body");
        return;
    }
    char hex[CRYPTO_SHA256_HEX_LEN];
    crypto_sha256_hex(data, len, hex);
    if (want && strcasecmp(want, hex) != 0) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "does not match the body's SHA-256: the upload was damaged", "sha256");
        return;
    }
    char id[ID_STR_LEN], size[24];
    id_uuid7_str(id);
    snprintf(size, sizeof(size), "%zu", len);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "saving the package");
        return;
    }
    const char *pq[] = {hex, size};
    r = store_tx_exec(tx, &q_pkg_quota, pq, NULL);
    const char *pb[] = {hex, size, data};
    const int lens[] = {0, 0, (int)len};
    const int fmts[] = {0, 0, 1};
    if (r >= 0)
        r = store_tx_exec_bin(tx, &q_blob_insert, pb, lens, fmts, false, NULL);
    const char *pp[] = {id, name, version, hex, size, entry};
    if (r >= 0)
        r = store_tx_exec(tx, &q_pkg_insert, pp, NULL);
    if (r >= 0) {
        json_t *detail = json_pack("{s:s, s:s, s:s, s:I}", "name", name, "version", version,
                                   "sha256", hex, "size_bytes", (json_int_t)len);
        r = app_audit(tx, req, NULL, "package.create", "package", id, detail);
        json_decref(detail);
    }
    if (r < 0) {
        write_failed(req, tx, r);
        return;
    }
    api_reply_doc_commit(req, tx, &q_pkg_doc, id, 201, "package", NULL, NULL);
}

void api_packages_list(struct http_req *req)
{
    const char *name = http_req_query(req, "name");
    if (name && !valid_name(name)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "is not a package name", "name");
        return;
    }
    api_list_page_with(req, name ? &q_pkg_list_name : &q_pkg_list,
                       http_req_principal(req)->tenant_id, "listing packages", name);
}

void api_packages_get(struct http_req *req)
{
    api_get_doc(req, &q_pkg_doc, http_req_principal(req)->tenant_id, "package");
}

static void unref_blob(void *arg)
{
    blob_unref(arg);
}

/* The bytes, to a tenant (GET /packages/{id}/content) or to one of its agents
 * (GET /agent/packages/{id}/content): the principal's tenant decides what is visible; to an
 * agent of a shared pool, the package of a job it holds now, whatever its tenant. The
 * archive comes from the node's memory when an agent fetched it lately (the same package
 * to many agents is read from PostgreSQL once) and is sent without a copy. */
void api_packages_content(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "package");
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const struct http_principal *pr = http_req_principal(req);
    bool pool = pr->pool; /* an agent of a shared pool: system scope */
    struct store_tx *tx = NULL;
    int r = store_tx_begin(app->store, app_agent_scope(pr), 0, &tx);
    if (r < 0) {
        http_reply_error(req, r, "reading the package");
        return;
    }
    const char *p[] = {id, pool ? pr->subject : NULL};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_pkg_meta, p, &res);
    if (r <= 0) {
        PQclear(res);
        store_tx_rollback(tx);
        if (r == 0)
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        else
            http_reply_error(req, r, "reading the package");
        return;
    }
    char hex[CRYPTO_SHA256_HEX_LEN], disp[256], key[128], tenant[ID_STR_LEN];
    snprintf(hex, sizeof(hex), "%s", PQgetvalue(res, 0, 0));
    snprintf(disp, sizeof(disp), "attachment; filename=\"%.200s.tar\"", PQgetvalue(res, 0, 1));
    snprintf(tenant, sizeof(tenant), "%s", PQgetvalue(res, 0, 2));
    PQclear(res);
    snprintf(key, sizeof(key), "%s/%s", tenant, hex);
    struct blob *b = blobcache_get(app->blobs, key);
    if (!b) {
        const char *pb[] = {hex, tenant};
        res = NULL;
        r = store_tx_exec_bin(tx, &q_pkg_blob, pb, NULL, NULL, true, &res);
        if (r > 0)
            b = blobcache_put(app->blobs, key, PQgetvalue(res, 0, 0),
                              (size_t)PQgetlength(res, 0, 0));
        PQclear(res);
        if (r > 0 && !b)
            r = -ENOMEM;
    }
    int c = store_tx_commit(tx);
    if (r < 0 || c < 0 || !b) {
        blob_unref(b);
        if (r == 0)
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        else
            http_reply_error(req, r < 0 ? r : c, "reading the package");
        return;
    }
    http_reply_header(req, "X-Content-SHA256", hex);
    http_reply_header(req, "Content-Disposition", disp);
    http_reply_ref(req, 200, "application/octet-stream", blob_data(b), blob_len(b), unref_blob, b);
}

void api_packages_delete(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "package");
    if (!id)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "deleting the package");
        return;
    }
    const char *p[] = {id};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_pkg_lock, p, &res);
    if (r == 0) {
        PQclear(res);
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        return;
    }
    char hex[65] = "";
    if (r > 0)
        snprintf(hex, sizeof(hex), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    char detail[512];
    if (r > 0)
        r = api_package_refs_holding(tx, id, detail, sizeof(detail));
    if (r > 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT, detail, NULL);
        return;
    }
    if (r == 0)
        r = 1;
    if (r > 0)
        r = store_tx_exec(tx, &q_pkg_delete, p, NULL);
    const char *pg[] = {hex};
    if (r >= 0)
        r = store_tx_exec(tx, &q_blob_gc, pg, NULL);
    if (r >= 0)
        r = app_audit(tx, req, NULL, "package.delete", "package", id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "deleting the package");
        return;
    }
    if (api_commit(req, tx, "deleting the package") < 0)
        return;
    http_reply_json(req, 204, NULL);
}
