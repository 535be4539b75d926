/* api-common.c: helpers shared by the route handlers, and the health endpoints. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/crypto.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"

void api_reply_pg_json(struct http_req *req, int status, PGresult *res)
{
    if (!res || PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        http_reply_error(req, -EIO, "the database returned no document");
        return;
    }
    http_reply_json_text(req, status, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    PQclear(res);
}

void api_reply_pg_json_or_404(struct http_req *req, int status, PGresult *res, const char *what)
{
    if (!res || PQntuples(res) < 1) {
        PQclear(res);
        char detail[128];
        snprintf(detail, sizeof(detail), "no such %s", what);
        http_reply_problem(req, PROBLEM_NOT_FOUND, detail, NULL);
        return;
    }
    api_reply_pg_json(req, status, res);
}

int api_commit(struct http_req *req, struct store_tx *tx, const char *what)
{
    int r = store_tx_commit(tx);
    if (r < 0)
        http_reply_error(req, r, what);
    return r;
}

void api_delete_by_id(struct http_req *req, const struct store_stmt *stmt, const char *noun,
                      const char *object_type)
{
    char what[96], action[64];
    snprintf(what, sizeof(what), "deleting the %s", noun);
    snprintf(action, sizeof(action), "%s.delete", object_type);
    const char *id = api_path_id(req, "id", noun);
    if (!id)
        return;
    struct store_tx *tx = NULL;
    int r = app_tx_begin_own(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, what);
        return;
    }
    const char *p[] = {id};
    r = store_tx_exec(tx, stmt, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        char detail[96];
        snprintf(detail, sizeof(detail), "no such %s", noun);
        http_reply_problem(req, PROBLEM_NOT_FOUND, detail, NULL);
        return;
    }
    if (r > 0)
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), action, object_type, id,
                      NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, what);
        return;
    }
    if (api_commit(req, tx, what) < 0)
        return;
    http_reply_json(req, 204, NULL);
}

const char *api_path_id(struct http_req *req, const char *name, const char *what)
{
    const char *id = http_req_param(req, name);
    if (!id || !id_is_valid(id)) {
        char detail[128];
        snprintf(detail, sizeof(detail), "no such %s", what);
        http_reply_problem(req, PROBLEM_NOT_FOUND, detail, NULL);
        return NULL;
    }
    return id;
}

const char *api_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

bool api_label_name_ok(const char *name)
{
    size_t n = strlen(name);
    bool ok = n >= 1 && n <= API_LABEL_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || strchr("_./-", name[i]);
    return ok;
}

bool api_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > API_QUEUE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || !strchr("_.-", c)))
            return false;
    }
    return true;
}

bool api_slug_ok(const char *s)
{
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= 63 && s[0] != '-';
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-';
    return ok;
}

const char *const api_tiers[API_TIERS_N] = {"free", "standard", "professional", "enterprise"};

bool api_tier_ok(const char *t)
{
    for (size_t k = 0; t && k < API_TIERS_N; k++)
        if (strcmp(api_tiers[k], t) == 0)
            return true;
    return false;
}

int api_check_labels(struct http_req *req, const json_t *labels, const char *field)
{
    if (!labels || json_is_null(labels))
        return 0;
    char path[192], detail[96];
    if (!json_is_object(labels) || json_object_size(labels) > API_LABELS_MAX) {
        snprintf(detail, sizeof(detail), "must be an object of at most %d label: value strings",
                 API_LABELS_MAX);
        http_reply_problem(req, PROBLEM_VALIDATION, detail, field);
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)labels, k, v)
    {
        snprintf(path, sizeof(path), "%s.%.63s", field, k);
        if (!api_label_name_ok(k)) {
            snprintf(detail, sizeof(detail),
                     "label names are 1 to %d characters of A-Z a-z 0-9 _ . / -",
                     API_LABEL_NAME_MAX);
            http_reply_problem(req, PROBLEM_VALIDATION, detail, path);
            return -EINVAL;
        }
        if (!json_is_string(v) || json_string_length(v) > API_LABEL_VALUE_MAX) {
            snprintf(detail, sizeof(detail), "label values are strings of at most %d bytes",
                     API_LABEL_VALUE_MAX);
            http_reply_problem(req, PROBLEM_VALIDATION, detail, path);
            return -EINVAL;
        }
    }
    return 0;
}

/* Read a document back in tx, commit, reply; rolls back on failure. */
void api_reply_doc_commit(struct http_req *req, struct store_tx *tx, const struct store_stmt *stmt,
                          const char *id, int status, const char *what, const char *secret_key,
                          const char *secret)
{
    PGresult *res = NULL;
    const char *p[] = {id};
    int r = store_tx_exec(tx, stmt, p, &res);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, what);
        return;
    }
    if (api_commit(req, tx, what) < 0) {
        PQclear(res);
        return;
    }
    if (!secret) {
        api_reply_pg_json_or_404(req, status, res, what);
        return;
    }
    json_error_t jerr;
    json_t *doc = r == 1 ? json_loads(PQgetvalue(res, 0, 0), 0, &jerr) : NULL;
    PQclear(res);
    if (!doc) {
        http_reply_error(req, -EIO, what);
        return;
    }
    /* The only time the secret is shown. */
    json_object_set_new(doc, secret_key, json_string(secret));
    http_reply_json(req, status, doc);
}

/* --- cursors ---------------------------------------------------------------------------- */

/* A cursor is base64url(id || MAC(route, principal's tenant, id)): a cursor made by the
 * server for one list and one tenant, on any node, is recognised; anything else (an id
 * typed in, a cursor of another list or tenant) is refused with 422. */
#define CURSOR_LABEL   "orch list cursor v1"
#define CURSOR_RAW_LEN (16 + JWT_RING_MAC_LEN)

static size_t cursor_msg(struct http_req *req, const uint8_t id[16], uint8_t *msg, size_t cap)
{
    const struct http_principal *pr = http_req_principal(req);
    const char *scope = pr->kind == HTTP_PRINCIPAL_PLATFORM ? "platform" : pr->tenant_id;
    int n = snprintf((char *)msg, cap, "%s\n%s\n", http_req_route(req), scope);
    size_t len = n < 0 ? 0 : (size_t)n >= cap - 16 ? cap - 16 : (size_t)n;
    memcpy(msg + len, id, 16);
    return len + 16;
}

int api_cursor_seal(struct http_req *req, const char *id, char out[API_CURSOR_LEN])
{
    uint8_t raw[CURSOR_RAW_LEN], msg[512];
    if (id_parse(id, raw) < 0)
        return -EINVAL;
    struct app *app = http_req_app(req);
    jwt_ring_mac(app->ring, CURSOR_LABEL, msg, cursor_msg(req, raw, msg, sizeof(msg)), raw + 16);
    return base64url_encode(raw, sizeof(raw), out, API_CURSOR_LEN) < 0 ? -ENOSPC : 0;
}

int api_cursor_open(struct http_req *req, const char *cursor, char id[ID_STR_LEN])
{
    uint8_t raw[CURSOR_RAW_LEN + 1], msg[512];
    size_t len = strlen(cursor);
    if (len != API_CURSOR_LEN - 1 ||
        base64url_decode(cursor, len, raw, sizeof(raw)) != CURSOR_RAW_LEN)
        return -EINVAL;
    struct app *app = http_req_app(req);
    if (!jwt_ring_mac_check(app->ring, CURSOR_LABEL, msg, cursor_msg(req, raw, msg, sizeof(msg)),
                            raw + 16))
        return -EINVAL;
    id_format(raw, id);
    return 0;
}

int api_page_cursor(struct http_req *req, const char *cursor, char id[ID_STR_LEN])
{
    if (!cursor)
        return 0;
    if (api_cursor_open(req, cursor, id) < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, "is not a cursor returned by this API",
                           "cursor");
        return -EINVAL;
    }
    return 1;
}

void api_reply_page(struct http_req *req, PGresult *res)
{
    static const char key[] = "\"next_cursor\" : ";
    if (!res || PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        api_reply_pg_json(req, 200, res);
        return;
    }
    /* json_build_object()'s text ends with the cursor member: '"next_cursor" : null}' or
     * '"next_cursor" : "<id>"}'. Only the id is replaced, so the items are not parsed. */
    const char *text = PQgetvalue(res, 0, 0);
    size_t len = (size_t)PQgetlength(res, 0, 0);
    size_t klen = sizeof(key) - 1, idpos = len - (ID_STR_LEN - 1) - 2;
    bool has_id = len > klen + ID_STR_LEN + 2 && memcmp(text + idpos - 1 - klen, key, klen) == 0 &&
                  text[idpos - 1] == '"' && text[len - 2] == '"' && text[len - 1] == '}';
    char id[ID_STR_LEN], cursor[API_CURSOR_LEN];
    if (has_id) {
        memcpy(id, text + idpos, ID_STR_LEN - 1);
        id[ID_STR_LEN - 1] = '\0';
    }
    if (!has_id || api_cursor_seal(req, id, cursor) < 0) {
        api_reply_pg_json(req, 200, res);
        return;
    }
    struct buf b = BUF_INIT;
    int r = buf_append(&b, text, idpos);
    if (r >= 0)
        r = buf_printf(&b, "%s\"}", cursor);
    PQclear(res);
    if (r < 0) {
        buf_free(&b);
        http_reply_error(req, -ENOMEM, "listing");
        return;
    }
    http_reply_json_text(req, 200, b.data, b.len);
    buf_free(&b);
}

int api_list_page(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                  const char *what)
{
    return api_list_page_with(req, stmt, tenant_id, what, NULL);
}

int api_list_page_with(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                       const char *what, const char *arg3)
{
    int limit;
    const char *cursor;
    char after[ID_STR_LEN];
    if (http_req_page(req, 50, 500, &limit, &cursor) < 0)
        return -EINVAL;
    int c = api_page_cursor(req, cursor, after);
    if (c < 0)
        return c;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {c ? after : NULL, lim, arg3}; /* the statement takes 2 or 3 */
    PGresult *res = NULL;
    int r = store_read_once(((struct app *)http_req_app(req))->store, tenant_id, stmt, p, &res);
    if (r < 0) {
        http_reply_error(req, r, what);
        return r;
    }
    api_reply_page(req, res);
    return 0;
}

void api_get_doc(struct http_req *req, const struct store_stmt *stmt, const char *tenant_id,
                 const char *what)
{
    const char *id = api_path_id(req, "id", what);
    if (!id)
        return;
    const char *p[] = {id};
    PGresult *res = NULL;
    int r = store_read_once(((struct app *)http_req_app(req))->store, tenant_id, stmt, p, &res);
    if (r < 0) {
        char detail[96];
        snprintf(detail, sizeof(detail), "reading the %s", what);
        http_reply_error(req, r, detail);
        return;
    }
    api_reply_pg_json_or_404(req, 200, res, what);
}

bool api_revoke(struct http_req *req, const struct store_stmt *stmt, const char *what,
                const char *object_type)
{
    const char *id = api_path_id(req, "id", what);
    if (!id)
        return false;
    char detail[96], action[64];
    snprintf(detail, sizeof(detail), "revoking the %s", what);
    snprintf(action, sizeof(action), "%s.revoke", object_type);
    struct store_tx *tx = NULL;
    int r = app_tx_begin(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, detail);
        return false;
    }
    const char *p[] = {id};
    PGresult *res = NULL;
    r = store_tx_exec(tx, stmt, p, &res);
    bool revoked = r > 0 && strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    bool exists = r > 0 && strcmp(PQgetvalue(res, 0, 1), "1") == 0;
    PQclear(res);
    if (r >= 0 && !exists) {
        store_tx_rollback(tx);
        char nf[96];
        snprintf(nf, sizeof(nf), "no such %s", what);
        http_reply_problem(req, PROBLEM_NOT_FOUND, nf, NULL);
        return false;
    }
    /* Revoking twice is not an error, and not a second audit record. */
    if (r > 0 && revoked)
        r = app_audit(tx, req, NULL, action, object_type, id, NULL);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, detail);
        return false;
    }
    if (api_commit(req, tx, detail) < 0)
        return false;
    http_reply_json(req, 204, NULL);
    return revoked;
}

void api_healthz(struct http_req *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* RabbitMQ is reachable when an AMQP login on its URL succeeds within 2 s. */
static int amqp_ping(const char *url_in, char *why, size_t whylen)
{
    char *url = strdup(url_in);
    struct amqp_connection_info ci;
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        free(url);
        snprintf(why, whylen, "amqp.url is not a valid AMQP URL");
        return -EINVAL;
    }
    int r = 0;
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
    struct timeval tv = {.tv_sec = 2};
    if (!sock || amqp_socket_open_noblock(sock, ci.host, ci.port, &tv) != AMQP_STATUS_OK) {
        snprintf(why, whylen, "cannot connect to RabbitMQ");
        r = -ECONNREFUSED;
    } else {
        amqp_set_handshake_timeout(conn, &tv);
        amqp_rpc_reply_t rep =
            amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
        if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
            snprintf(why, whylen, "RabbitMQ refused the login");
            r = -EACCES;
        } else {
            amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
        }
    }
    if (conn)
        amqp_destroy_connection(conn);
    free(url);
    return r;
}

void api_readyz(struct http_req *req)
{
    struct app *app = http_req_app(req);
    /* Both pools: the tenant and the system role each need their connection. */
    int pg = store_ping(app->store);
    char why[128] = "";
    int mq = amqp_ping(app->cfg->amqp_url, why, sizeof(why));
    json_t *body =
        json_pack("{s:s, s:s, s:s}", "status", pg >= 0 && mq == 0 ? "ready" : "not ready",
                  "postgresql", pg >= 0 ? "ok" : "unreachable", "rabbitmq", mq == 0 ? "ok" : why);
    if (pg >= 0 && mq == 0) {
        http_reply_json(req, 200, body);
        return;
    }
    http_reply_header(req, "Retry-After", "1");
    http_reply_problem_ext(req, PROBLEM_UNAVAILABLE, "a dependency is not reachable", NULL, body);
}
