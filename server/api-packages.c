/* api-packages.c: a tenant's packages: tar (optionally gzip-compressed) or zip archives that
 * jobs run an entrypoint from. The bytes are stored once per tenant by SHA-256 (package_blobs
 * names them, the blob store holds them: blob-store.h) and count against the tier's
 * storage quota; a package is a name and version naming a blob, with an optional default
 * entrypoint. An archive comes in one request (small ones) or in parts through an upload
 * session (docs/packages.md, "Storage and upload"). Agents fetch the bytes over their
 * connection, with Range to resume, and keep them in their cache (docs/agent.md). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/id.h"
#include "common/relpath.h"
#include "server/api.h"
#include "server/app.h"
#include "server/blob-store.h"
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

/* A version is never overwritten: checked when an upload is declared, and again (the
 * unique key) when it is published. */
static const struct store_stmt q_pkg_exists =
    STORE_STMT("pkg_exists", "SELECT 1 FROM packages WHERE name = $1 AND version = $2", 2);

/* An upload session: the storage quota counts its declared size from here on, before a
 * byte is stored (quota_acquire() counts package_uploads). */
static const struct store_stmt q_up_insert = STORE_STMT(
    "pkg_up_insert",
    "WITH q AS (SELECT quota_acquire('storage_bytes', $6::bigint))"
    " INSERT INTO package_uploads (id, tenant_id, name, version, entrypoint, size_bytes, sha256,"
    "                              expires_at)"
    " SELECT $1, app_tenant(), $2, $3, $4, $6::bigint, decode($5, 'hex'),"
    "        now() + make_interval(secs => $7::double precision) FROM q",
    7);

static const struct store_stmt q_up_get =
    STORE_STMT("pkg_up_get",
               "SELECT name, version, entrypoint, size_bytes::text, encode(sha256, 'hex'),"
               "       json_build_object('id', id, 'name', name, 'version', version,"
               "         'entrypoint', entrypoint, 'size_bytes', size_bytes,"
               "         'sha256', encode(sha256, 'hex'), 'created_at', created_at,"
               "         'expires_at', expires_at)::text"
               "  FROM package_uploads WHERE id = $1 AND expires_at > now()",
               1);

static const struct store_stmt q_up_delete =
    STORE_STMT("pkg_up_delete", "DELETE FROM package_uploads WHERE id = $1 RETURNING 1", 1);

static const struct store_stmt q_blob_has =
    STORE_STMT("pkg_blob_has", "SELECT 1 FROM package_blobs WHERE sha256 = decode($1, 'hex')", 1);

static const struct store_stmt q_blob_insert =
    STORE_STMT("pkg_blob_insert",
               "INSERT INTO package_blobs (tenant_id, sha256, size_bytes)"
               " VALUES (app_tenant(), decode($1, 'hex'), $2::bigint) ON CONFLICT DO NOTHING",
               2);

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

/* The blob's row goes (and with it the bytes' charge on the quota) when no package names
 * it any more; the bytes themselves go with the collector (blob-gc.h). */
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
               "SELECT encode(p.sha256, 'hex'), p.name || '-' || p.version, p.tenant_id,"
               "       p.size_bytes::text"
               "  FROM packages p WHERE p.id = $1"
               "   AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs j"
               "         WHERE j.agent_id = $2 AND j.package_id = p.id"
               "           AND j.tenant_id = p.tenant_id AND j.status IN ('assigned', 'running')))",
               2);

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

/* The part of a package's fields both routes of upload share: 0, or < 0 after a 422. */
static int check_fields(struct http_req *req, const char *name, const char *version,
                        const char *entry)
{
    if (!name || !valid_name(name)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "required: 1 to 128 characters of A-Z a-z 0-9 _ . -, starting with a "
                           "letter or digit",
                           "name");
        return -EINVAL;
    }
    if (!version || !valid_version(version)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "required: a semantic version of at most 64 characters "
                           "(MAJOR.MINOR.PATCH, optionally -PRERELEASE and +BUILD: 1.4.0, "
                           "2.0.0-rc.1)",
                           "version");
        return -EINVAL;
    }
    if (entry && !relpath_is_safe(entry)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "must be a relative path in the package (A-Z a-z 0-9 _ . - /, no ..)",
                           "entrypoint");
        return -EINVAL;
    }
    return 0;
}

static bool valid_sha(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* An upload session, as read back. */
struct upload {
    char id[ID_STR_LEN];
    const char *tenant;
    char name[129], version[65], entry[1025];
    bool has_entry;
    char sha[CRYPTO_SHA256_HEX_LEN];
    uint64_t size;
    json_t *doc;
};

/* Session id of tenant: 0, -ENOENT (none, expired, or another tenant's), or a store
 * error. u->doc is a new reference. */
static int upload_load(struct app *app, const char *tenant, const char *id, struct upload *u)
{
    memset(u, 0, sizeof(*u));
    const char *p[] = {id};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, tenant, &q_up_get, p, &res);
    if (r == 1) {
        snprintf(u->id, sizeof(u->id), "%s", id);
        u->tenant = tenant;
        snprintf(u->name, sizeof(u->name), "%s", PQgetvalue(res, 0, 0));
        snprintf(u->version, sizeof(u->version), "%s", PQgetvalue(res, 0, 1));
        u->has_entry = !PQgetisnull(res, 0, 2);
        snprintf(u->entry, sizeof(u->entry), "%s", PQgetvalue(res, 0, 2));
        u->size = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        snprintf(u->sha, sizeof(u->sha), "%s", PQgetvalue(res, 0, 4));
        u->doc = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
        if (!u->doc)
            r = -ENOMEM;
    }
    PQclear(res);
    return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

/* Bytes received so far: the upload blob's size. */
static int upload_offset(struct app *app, const struct upload *u, uint64_t *off)
{
    char key[BLOB_KEY_MAX];
    blob_key_upload(key, u->id);
    int r = blob_stat(app->blobstore, u->tenant, key, off);
    if (r == -ENOENT) {
        *off = 0;
        r = 0;
    }
    return r;
}

static void reply_upload(struct http_req *req, int status, struct upload *u, uint64_t off)
{
    char o[24];
    snprintf(o, sizeof(o), "%" PRIu64, off);
    http_reply_header(req, "Upload-Offset", o);
    json_object_set_new(u->doc, "offset", json_integer((json_int_t)off));
    json_object_set_new(u->doc, "part_max_bytes", json_integer(PACKAGE_PART_MAX_BYTES));
    http_reply_json(req, status, json_incref(u->doc));
}

/* Declare an upload: the version must be new, and the storage quota must take size more
 * bytes. 0 with id set, or < 0 after replying. */
static int upload_create(struct http_req *req, const char *name, const char *version,
                         const char *entry, const char *sha, uint64_t size, char id[ID_STR_LEN])
{
    struct app *app = http_req_app(req);
    char sz[24], ttl[24];
    snprintf(sz, sizeof(sz), "%" PRIu64, size);
    snprintf(ttl, sizeof(ttl), "%.3f", (double)app->cfg->packages_upload_ttl_ms / 1000.0);
    id_uuid7_str(id);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(app, req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "declaring the upload");
        return r;
    }
    const char *pe[] = {name, version};
    r = store_tx_exec(tx, &q_pkg_exists, pe, NULL);
    if (r > 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_CONFLICT,
                           "this package already has this version; a version is never "
                           "overwritten",
                           "version");
        return -EEXIST;
    }
    const char *pi[] = {id, name, version, entry, sha, sz, ttl};
    if (r >= 0)
        r = store_tx_exec(tx, &q_up_insert, pi, NULL);
    if (r == -EDQUOT) {
        app_reply_quota_refused(req, tx, NULL,
                                "the tenant's storage quota would be exceeded; delete packages "
                                "or move to a larger tier");
        return r;
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "declaring the upload");
        return r;
    }
    return api_commit(req, tx, "declaring the upload");
}

/* The SHA-256 of a blob, read a window at a time. */
static int blob_sha256(struct app *app, const char *tenant, const char *key, uint64_t size,
                       char hex[CRYPTO_SHA256_HEX_LEN])
{
    char *buf = malloc(BLOB_PG_CHUNK_BYTES);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int r = buf && ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
    for (uint64_t off = 0; r == 0 && off < size;) {
        size_t got = 0;
        r = blob_read(app->blobstore, tenant, key, off, buf, BLOB_PG_CHUNK_BYTES, &got);
        if (r == 0 && got == 0)
            r = -EIO;
        if (r == 0)
            EVP_DigestUpdate(ctx, buf, got);
        off += got;
    }
    unsigned char md[CRYPTO_SHA256_LEN];
    unsigned int mdlen = 0;
    if (r == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        r = -EIO;
    for (unsigned i = 0; r == 0 && i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return r;
}

/* Drop a session and its bytes (its quota with it). */
static void upload_drop(struct app *app, const struct upload *u)
{
    const char *p[] = {u->id};
    store_exec_once(app->store, u->tenant, &q_up_delete, p, NULL);
    char key[BLOB_KEY_MAX];
    blob_key_upload(key, u->id);
    blob_remove(app->blobstore, u->tenant, key);
}

/* The version u names, created over bytes stored already, in the transaction that ends
 * u's session (when it has one, u->id not empty), so that the quota moves from the
 * session to the blob at once. Replies. */
static void publish_version(struct http_req *req, struct upload *u)
{
    struct app *app = http_req_app(req);
    int r;
    char id[ID_STR_LEN], size[24];
    id_uuid7_str(id);
    snprintf(size, sizeof(size), "%" PRIu64, u->size);
    struct store_tx *tx = NULL;
    r = app_tx_begin(app, req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "publishing the package");
        return;
    }
    const char *pd[] = {u->id};
    r = u->id[0] ? store_tx_exec(tx, &q_up_delete, pd, NULL) : 1;
    if (r == 0) { /* committed or expired meanwhile */
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such upload", NULL);
        return;
    }
    const char *pb[] = {u->sha, size};
    if (r >= 0)
        r = store_tx_exec(tx, &q_blob_insert, pb, NULL);
    const char *pp[] = {id, u->name, u->version, u->sha, size, u->has_entry ? u->entry : NULL};
    if (r >= 0)
        r = store_tx_exec(tx, &q_pkg_insert, pp, NULL);
    if (r >= 0) {
        json_t *detail = json_pack("{s:s, s:s, s:s, s:I}", "name", u->name, "version", u->version,
                                   "sha256", u->sha, "size_bytes", (json_int_t)u->size);
        r = app_audit(tx, req, NULL, "package.create", "package", id, detail);
        json_decref(detail);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        if (r == -EEXIST) {
            if (u->id[0])
                upload_drop(app, u); /* the bytes it published are the collector's now */
            http_reply_problem(req, PROBLEM_CONFLICT,
                               "this package already has this version; a version is never "
                               "overwritten",
                               "version");
        } else {
            http_reply_error(req, r, "publishing the package");
        }
        return;
    }
    api_reply_doc_commit(req, tx, &q_pkg_doc, id, 201, "package", NULL, NULL);
}

/* Publish a complete upload as its version: the bytes checked against the declared
 * SHA-256 (unless verified already), given the package key (or dropped when the same
 * bytes are stored already), and the version created in the transaction that ends the
 * session, so that the quota moves from the session to the blob at once. Replies. */
static void upload_publish(struct http_req *req, struct upload *u, bool verified)
{
    struct app *app = http_req_app(req);
    uint64_t off = 0;
    int r = upload_offset(app, u, &off);
    if (r < 0) {
        http_reply_error(req, r, "publishing the package");
        return;
    }
    if (off != u->size) {
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "the upload is incomplete: %" PRIu64 " of %" PRIu64 " bytes received", off,
                 u->size);
        http_reply_problem(req, PROBLEM_CONFLICT, detail, NULL);
        return;
    }
    char from[BLOB_KEY_MAX], to[BLOB_KEY_MAX];
    blob_key_upload(from, u->id);
    blob_key_package(to, u->sha);
    if (!verified) {
        char hex[CRYPTO_SHA256_HEX_LEN];
        r = blob_sha256(app, u->tenant, from, u->size, hex);
        if (r < 0) {
            http_reply_error(req, r, "publishing the package");
            return;
        }
        if (strcasecmp(hex, u->sha) != 0) {
            upload_drop(app, u);
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "does not match the SHA-256 of the bytes received: the upload "
                               "was damaged and is dropped; start again",
                               "sha256");
            return;
        }
    }
    char head[512];
    size_t hl = 0;
    r = blob_read(app->blobstore, u->tenant, from, 0, head, sizeof(head), &hl);
    if (r == 0 && !looks_like_archive((const unsigned char *)head, hl)) {
        upload_drop(app, u);
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "the body must be a tar archive, optionally gzip-compressed, or a zip "
                           "archive",
                           "body");
        return;
    }
    if (r == 0) {
        r = blob_rename(app->blobstore, u->tenant, from, to);
        if (r == -EEXIST) /* the same bytes are stored already (and kept fresh) */
            r = blob_remove(app->blobstore, u->tenant, from);
    }
    if (r < 0) {
        http_reply_error(req, r, "publishing the package");
        return;
    }
    publish_version(req, u);
}

void api_packages_create(struct http_req *req)
{
    struct app *app = http_req_app(req);
    const char *name = http_req_query(req, "name");
    const char *version = http_req_query(req, "version");
    const char *entry = http_req_query(req, "entrypoint");
    const char *want = http_req_query(req, "sha256");
    if (check_fields(req, name, version, entry) < 0)
        return;
    static const char *const types[] = {"application/gzip",  "application/x-gzip",
                                        "application/x-tar", "application/octet-stream",
                                        "application/zip",   NULL};
    const char *data = NULL;
    size_t len = 0;
    if (http_req_body(req, types, &data, &len) < 0)
        return;
    if ((int64_t)len > app->cfg->packages_single_max_bytes) {
        char detail[200];
        snprintf(detail, sizeof(detail),
                 "the body is %zu bytes; one request takes at most %" PRId64
                 ": upload in parts (POST /api/v1/packages/uploads)",
                 len, app->cfg->packages_single_max_bytes);
        http_reply_problem(req, PROBLEM_TOO_LARGE, detail, NULL);
        return;
    }
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
    /* Bytes stored already are counted once: only the version is new. */
    const char *tenant = http_req_principal(req)->tenant_id;
    const char *ph[] = {hex};
    int r = store_exec_once(app->store, tenant, &q_blob_has, ph, NULL);
    if (r < 0) {
        http_reply_error(req, r, "saving the package");
        return;
    }
    struct upload u = {.tenant = tenant, .size = len, .has_entry = entry != NULL};
    if (r > 0) {
        snprintf(u.name, sizeof(u.name), "%s", name);
        snprintf(u.version, sizeof(u.version), "%s", version);
        snprintf(u.entry, sizeof(u.entry), "%s", entry ? entry : "");
        snprintf(u.sha, sizeof(u.sha), "%s", hex);
        publish_version(req, &u);
        return;
    }
    /* Otherwise one request is an upload session of one part. */
    char id[ID_STR_LEN];
    if (upload_create(req, name, version, entry, hex, len, id) < 0)
        return;
    char key[BLOB_KEY_MAX];
    blob_key_upload(key, id);
    r = blob_append(app->blobstore, tenant, key, 0, data, len, NULL);
    if (r == 0)
        r = upload_load(app, tenant, id, &u);
    if (r < 0) {
        struct upload tmp = {.tenant = tenant};
        snprintf(tmp.id, sizeof(tmp.id), "%s", id);
        upload_drop(app, &tmp);
        http_reply_error(req, r, "saving the package");
        return;
    }
    upload_publish(req, &u, true);
    json_decref(u.doc);
}

static const struct jsonv_field upload_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 128},
    {"version", JSONV_STRING, JSONV_REQUIRED, 1, 64},
    {"entrypoint", JSONV_STRING, JSONV_NULLABLE, 1, 1024},
    {"size_bytes", JSONV_INT, JSONV_REQUIRED, 1, INT64_MAX},
    {"sha256", JSONV_STRING, JSONV_REQUIRED, 64, 64},
};

void api_packages_upload_create(struct http_req *req)
{
    struct app *app = http_req_app(req);
    json_t *body = NULL;
    if (http_req_json(req, upload_fields, ELEMENTSOF(upload_fields), &body) < 0)
        return;
    const char *name = api_json_str(body, "name");
    const char *version = api_json_str(body, "version");
    const char *entry = api_json_str(body, "entrypoint");
    const char *sha = api_json_str(body, "sha256");
    json_int_t size = json_integer_value(json_object_get(body, "size_bytes"));
    char id[ID_STR_LEN], lower[CRYPTO_SHA256_HEX_LEN];
    if (check_fields(req, name, version, entry) < 0)
        goto out;
    if (!valid_sha(sha)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be 64 hexadecimal digits", "sha256");
        goto out;
    }
    if (size > app->cfg->packages_max_bytes) {
        char detail[128];
        snprintf(detail, sizeof(detail), "a package is at most %" PRId64 " bytes",
                 app->cfg->packages_max_bytes);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "size_bytes");
        goto out;
    }
    for (int i = 0; i < 65; i++)
        lower[i] = (char)tolower((unsigned char)sha[i]);
    if (upload_create(req, name, version, entry, lower, (uint64_t)size, id) < 0)
        goto out;
    struct upload u;
    int r = upload_load(app, http_req_principal(req)->tenant_id, id, &u);
    if (r < 0)
        http_reply_error(req, r, "reading the upload");
    else
        reply_upload(req, 201, &u, 0);
    json_decref(u.doc);
out:
    json_decref(body);
}

/* The path's session of the caller's tenant into u: 0, or < 0 after a 404 (another
 * tenant's session is not found either). */
static int upload_of_path(struct http_req *req, struct upload *u)
{
    memset(u, 0, sizeof(*u));
    const char *id = api_path_id(req, "id", "upload");
    if (!id)
        return -ENOENT;
    int r = upload_load(http_req_app(req), http_req_principal(req)->tenant_id, id, u);
    if (r == -ENOENT)
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such upload (it may have expired)", NULL);
    else if (r < 0)
        http_reply_error(req, r, "reading the upload");
    return r;
}

void api_packages_upload_get(struct http_req *req)
{
    struct upload u;
    if (upload_of_path(req, &u) < 0)
        return;
    uint64_t off = 0;
    int r = upload_offset(http_req_app(req), &u, &off);
    if (r < 0)
        http_reply_error(req, r, "reading the upload");
    else
        reply_upload(req, 200, &u, off);
    json_decref(u.doc);
}

/* A part: Upload-Offset must be the bytes received so far (409 telling it otherwise, so a
 * client that lost an answer resumes where the server is), the body goes straight to the
 * blob store. */
void api_packages_upload_part(struct http_req *req)
{
    struct app *app = http_req_app(req);
    struct upload u;
    if (upload_of_path(req, &u) < 0)
        return;
    const char *h = http_req_header(req, "Upload-Offset");
    char *end = NULL;
    errno = 0;
    unsigned long long at = h ? strtoull(h, &end, 10) : 0;
    if (!h || !*h || errno || *end || !isdigit((unsigned char)h[0])) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           "required: the byte offset of this part, a decimal integer",
                           "Upload-Offset");
        goto out;
    }
    static const char *const types[] = {"application/offset+octet-stream",
                                        "application/octet-stream", NULL};
    const char *data = NULL;
    size_t len = 0;
    if (http_req_body(req, types, &data, &len) < 0)
        goto out;
    if (at > u.size || len > u.size - at) {
        char detail[160];
        snprintf(detail, sizeof(detail),
                 "the part ends past the declared size of %" PRIu64 " bytes", u.size);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, "Upload-Offset");
        goto out;
    }
    char key[BLOB_KEY_MAX];
    blob_key_upload(key, u.id);
    uint64_t now = 0;
    int r = blob_append(app->blobstore, u.tenant, key, at, data, len, &now);
    if (r == -ESPIPE) {
        char o[24], detail[160];
        snprintf(o, sizeof(o), "%" PRIu64, now);
        http_reply_header(req, "Upload-Offset", o);
        snprintf(detail, sizeof(detail),
                 "the upload has %" PRIu64 " bytes: send the part at that offset", now);
        http_reply_problem_ext(req, PROBLEM_CONFLICT, detail, "Upload-Offset",
                               json_pack("{s:I}", "offset", (json_int_t)now));
        goto out;
    }
    if (r < 0)
        http_reply_error(req, r, "storing the part");
    else
        reply_upload(req, 200, &u, now);
out:
    json_decref(u.doc);
}

void api_packages_upload_commit(struct http_req *req)
{
    struct upload u;
    if (upload_of_path(req, &u) < 0)
        return;
    upload_publish(req, &u, false);
    json_decref(u.doc);
}

void api_packages_upload_delete(struct http_req *req)
{
    struct upload u;
    if (upload_of_path(req, &u) < 0)
        return;
    upload_drop(http_req_app(req), &u);
    json_decref(u.doc);
    http_reply_json(req, 204, NULL);
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

/* A package's bytes streamed from the blob store (http_reply_source()). */
struct pkg_source {
    struct blob_store *bs;
    char tenant[ID_STR_LEN];
    char key[BLOB_KEY_MAX];
    uint64_t start; /* of the range sent */
};

static long pkg_source_read(void *arg, uint64_t off, char *buf, size_t cap)
{
    struct pkg_source *s = arg;
    size_t got = 0;
    int r = blob_read(s->bs, s->tenant, s->key, s->start + off, buf, cap, &got);
    return r < 0 ? r : (long)got;
}

/* Range: bytes=N-, N-M or -S (one range; several are answered whole). 1 with
 * [*start, *end] set, 0 for no usable range (the whole body), -1 when unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end)
{
    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    const char *p = h + 6;
    char *e = NULL;
    if (*p == '-') { /* the last S bytes */
        errno = 0;
        unsigned long long n = strtoull(p + 1, &e, 10);
        if (errno || e == p + 1 || *e)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *start = n >= size ? 0 : size - n;
        *end = size - 1;
        return 1;
    }
    if (!isdigit((unsigned char)*p))
        return 0;
    errno = 0;
    unsigned long long a = strtoull(p, &e, 10);
    if (errno || *e != '-')
        return 0;
    p = e + 1;
    unsigned long long b = size ? size - 1 : 0;
    if (*p) {
        if (!isdigit((unsigned char)*p))
            return 0;
        b = strtoull(p, &e, 10);
        if (errno || *e || b < a)
            return 0;
        if (b >= size)
            b = size ? size - 1 : 0;
    }
    if (a >= size)
        return -1;
    *start = a;
    *end = b;
    return 1;
}

/* Does an If-None-Match or If-Range value name etag (a list, W/ allowed for the former)? */
static bool etag_listed(const char *h, const char *etag)
{
    if (!h)
        return false;
    if (strcmp(h, "*") == 0)
        return true;
    return strstr(h, etag) != NULL;
}

/* The bytes, to a tenant (GET /packages/{id}/content) or to one of its agents
 * (GET /agent/packages/{id}/content): the principal's tenant decides what is visible; to an
 * agent of a shared pool, the package of a job it holds now, whatever its tenant. ETag is
 * the digest; Range (with If-Range) asks for a part, so that an interrupted fetch
 * resumes. An archive small enough comes from the node's memory when an agent fetched it
 * lately (the same package to many agents is read from PostgreSQL once) and is sent
 * without a copy; a larger one is streamed from the blob store a window at a time. */
void api_packages_content(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "package");
    if (!id)
        return;
    struct app *app = http_req_app(req);
    const struct http_principal *pr = http_req_principal(req);
    bool pool = pr->pool; /* an agent of a shared pool: system scope */
    const char *p[] = {id, pool ? pr->subject : NULL};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, app_agent_scope(pr), &q_pkg_meta, p, &res);
    if (r <= 0) {
        PQclear(res);
        if (r == 0)
            http_reply_problem(req, PROBLEM_NOT_FOUND, "no such package", NULL);
        else
            http_reply_error(req, r, "reading the package");
        return;
    }
    char hex[CRYPTO_SHA256_HEX_LEN], disp[256], key[128], tenant[ID_STR_LEN], etag[72];
    snprintf(hex, sizeof(hex), "%s", PQgetvalue(res, 0, 0));
    snprintf(disp, sizeof(disp), "attachment; filename=\"%.200s.tar\"", PQgetvalue(res, 0, 1));
    snprintf(tenant, sizeof(tenant), "%s", PQgetvalue(res, 0, 2));
    uint64_t size = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
    snprintf(etag, sizeof(etag), "\"%s\"", hex);
    http_reply_header(req, "ETag", etag);
    http_reply_header(req, "Accept-Ranges", "bytes");
    http_reply_header(req, "X-Content-SHA256", hex);
    http_reply_header(req, "Content-Disposition", disp);
    if (etag_listed(http_req_header(req, "If-None-Match"), etag)) {
        http_reply_bytes(req, 304, NULL, NULL, 0);
        return;
    }
    uint64_t start = 0, end = size ? size - 1 : 0;
    int ranged = 0;
    const char *ifr = http_req_header(req, "If-Range");
    if (!ifr || strcmp(ifr, etag) == 0)
        ranged = parse_range(http_req_header(req, "Range"), size, &start, &end);
    char cr[96];
    if (ranged < 0) {
        snprintf(cr, sizeof(cr), "bytes */%" PRIu64, size);
        http_reply_header(req, "Content-Range", cr);
        http_reply_problem(req, PROBLEM_RANGE_NOT_SATISFIABLE,
                           "the range starts past the end of the package", NULL);
        return;
    }
    int status = ranged ? 206 : 200;
    uint64_t len = size ? end - start + 1 : 0;
    if (ranged) {
        snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start, end, size);
        http_reply_header(req, "Content-Range", cr);
    }
    char bkey[BLOB_KEY_MAX];
    blob_key_package(bkey, hex);
    if (size <= PACKAGE_HOT_MAX_BYTES) {
        snprintf(key, sizeof(key), "%s/%s", tenant, hex);
        struct blob *b = blobcache_get(app->blobs, key);
        if (!b) {
            char *buf = malloc(size ? size : 1);
            size_t got = 0;
            r = buf ? blob_read(app->blobstore, tenant, bkey, 0, buf, size, &got) : -ENOMEM;
            if (r == 0 && got != size)
                r = -EIO;
            if (r == 0)
                b = blobcache_put(app->blobs, key, buf, size);
            free(buf);
            if (r == 0 && !b)
                r = -ENOMEM;
        }
        if (!b) {
            http_reply_error(req, r, "reading the package");
            return;
        }
        http_reply_ref(req, status, "application/octet-stream", (const char *)blob_data(b) + start,
                       len, unref_blob, b);
        return;
    }
    struct pkg_source *s = calloc(1, sizeof(*s));
    if (!s) {
        http_reply_error(req, -ENOMEM, "reading the package");
        return;
    }
    s->bs = app->blobstore;
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
    snprintf(s->key, sizeof(s->key), "%s", bkey);
    s->start = start;
    struct http_source src = {.read = pkg_source_read, .release = free, .arg = s};
    http_reply_source(req, status, "application/octet-stream", len, BLOB_PG_CHUNK_BYTES, &src);
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
