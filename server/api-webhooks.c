/* api-webhooks.c: a tenant's event webhook subscriptions and their delivery log
 * (sql/0015_webhooks.sql; deliveries are made by webhook-deliver.c). A platform operator
 * manages the platform tenant's own (app_own_tenant()), which receive the events of its
 * pool scaling policies (api-scaling.c).
 *
 * The URL is judged by url-guard.h when the subscription is made (and again before every
 * delivery, since what a name resolves to changes). The signing secret is made here, shown
 * once in the answer to the creation, and kept sealed (webhook-secret.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/crypto.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/url-guard.h"
#include "server/webhook-secret.h"

/* Subscriptions one tenant may have. */
#define WEBHOOKS_PER_TENANT_MAX 25
#define WEBHOOK_DESCRIPTION_MAX 1024
/* "orch_whsec_" + base64url of 32 bytes */
#define WEBHOOK_SECRET_BYTES  32
#define WEBHOOK_SECRET_PREFIX 16

/* The event types a subscription may name (docs/api.md lists what each carries). */
static const char *const webhook_events[] = {
    "job.queued",     "job.assigned",   "job.running",      "job.succeeded", "job.failed",
    "job.cancelled",  "job.dead",       "agent.online",     "agent.offline", "quota.near",
    "quota.exceeded", "schedule.fired", "schedule.skipped", "scale.up",      "scale.down",
};
#define WEBHOOK_EVENTS_N (sizeof(webhook_events) / sizeof(webhook_events[0]))

static const struct store_stmt q_webhook_doc =
    STORE_STMT("webhook_doc", "SELECT doc FROM webhook_view WHERE id = $1", 1);

static const struct store_stmt q_webhook_exists =
    STORE_STMT("webhook_exists", "SELECT 1 FROM webhooks WHERE id = $1", 1);

static const struct store_stmt q_webhook_list = STORE_STMT(
    "webhook_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM webhook_view WHERE ($1::uuid IS NULL OR id > $1::uuid)"
    "        ORDER BY id LIMIT $2) s",
    2);

/* At most WEBHOOKS_PER_TENANT_MAX ($7): no row inserted past it. */
static const struct store_stmt q_webhook_insert = STORE_STMT(
    "webhook_insert",
    "INSERT INTO webhooks (id, tenant_id, url, events, description, enabled, secret_sealed,"
    " secret_prefix) SELECT $1, app_tenant(), $2, $3::text[], coalesce($4, ''),"
    " coalesce($5::bool, true), $6::bytea, $8"
    " WHERE (SELECT count(*) FROM webhooks) < $7::int",
    8);

static const struct store_stmt q_webhook_update =
    STORE_STMT("webhook_update",
               "UPDATE webhooks SET events = coalesce($2::text[], events),"
               " description = coalesce($3, description), enabled = coalesce($4::bool, enabled),"
               " updated_at = now() WHERE id = $1 RETURNING id",
               4);

static const struct store_stmt q_webhook_delete =
    STORE_STMT("webhook_delete", "DELETE FROM webhooks WHERE id = $1 RETURNING id", 1);

static const struct store_stmt q_delivery_list = STORE_STMT(
    "webhook_delivery_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id DESC))[1] END)"
    " FROM (SELECT id, doc FROM webhook_delivery_view WHERE webhook_id = $3::uuid"
    "        AND ($1::uuid IS NULL OR id > $1::uuid) ORDER BY id LIMIT $2) s",
    3);

static const struct store_stmt q_delivery_resend =
    STORE_STMT("webhook_delivery_resend", "SELECT webhook_resend($1, $2, $3)", 3);

static const struct store_stmt q_delivery_doc =
    STORE_STMT("webhook_delivery_doc", "SELECT doc FROM webhook_delivery_view WHERE id = $1", 1);

static const struct jsonv_field create_fields[] = {
    {"url", JSONV_STRING, JSONV_REQUIRED, 1, URL_GUARD_URL_MAX},
    {"events", JSONV_ARRAY, JSONV_REQUIRED, 1, WEBHOOK_EVENTS_N},
    {"description", JSONV_STRING, 0, 0, WEBHOOK_DESCRIPTION_MAX},
    {"enabled", JSONV_BOOL, 0, 0, 0},
};

/* What a PATCH may change; the URL is not among them (a new URL is a new subscription,
 * with a new secret). */
static const struct jsonv_field update_fields[] = {
    {"events", JSONV_ARRAY, 0, 1, WEBHOOK_EVENTS_N},
    {"description", JSONV_STRING, 0, 0, WEBHOOK_DESCRIPTION_MAX},
    {"enabled", JSONV_BOOL, 0, 0, 0},
};

static bool event_known(const char *e)
{
    for (size_t i = 0; i < WEBHOOK_EVENTS_N; i++)
        if (strcmp(e, webhook_events[i]) == 0)
            return true;
    return false;
}

/* events as a PostgreSQL array literal ({"job.failed","agent.offline"}) into out; the
 * names are of the table above, so they need no quoting beyond the quotes. Replies 422
 * naming the element and returns -EINVAL when one is unknown or repeated. */
static int events_literal(struct http_req *req, const json_t *events, char *out, size_t outlen)
{
    size_t i, used = 0;
    json_t *v;
    out[used++] = '{';
    json_array_foreach(events, i, v)
    {
        char field[32];
        snprintf(field, sizeof(field), "events[%zu]", i);
        const char *e = json_string_value(v);
        if (!e || !event_known(e)) {
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "must be one of job.queued, job.assigned, job.running, "
                               "job.succeeded, job.failed, job.cancelled, job.dead, "
                               "agent.online, agent.offline, quota.near, quota.exceeded, "
                               "schedule.fired, schedule.skipped, scale.up, scale.down",
                               field);
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(json_string_value(json_array_get(events, j)), e) == 0) {
                http_reply_problem(req, PROBLEM_VALIDATION, "is named twice", field);
                return -EINVAL;
            }
        }
        int n = snprintf(out + used, outlen - used, "%s\"%s\"", i ? "," : "", e);
        if (n < 0 || (size_t)n >= outlen - used - 1)
            return -ENOSPC;
        used += (size_t)n;
    }
    out[used++] = '}';
    out[used] = '\0';
    return 0;
}

void api_webhooks_create(struct http_req *req)
{
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, create_fields, ELEMENTSOF(create_fields), &body) < 0)
        return;
    struct app *app = http_req_app(req);
    const char *url = api_json_str(body, "url");
    /* The cheap checks first: the URL is resolved only for a request valid otherwise. */
    char events[WEBHOOK_EVENTS_N * 20 + 4];
    if (events_literal(req, json_object_get(body, "events"), events, sizeof(events)) < 0)
        return;
    struct url_guard_url parsed;
    char addr[URL_GUARD_ADDR_STR], why[200];
    int r = url_guard_parse(url, &parsed, why, sizeof(why));
    if (r < 0) {
        http_reply_problem(req, PROBLEM_VALIDATION, why, "url");
        return;
    }
    r = url_guard_check(url, app->cfg->webhooks_allow_private, &parsed, addr, why, sizeof(why));
    if (r < 0) {
        /* Refused for where it leads, not for its form: 400, with the reason. */
        http_reply_problem(req, PROBLEM_BAD_REQUEST, why, "url");
        return;
    }

    char id[ID_STR_LEN];
    id_uuid7_str(id);
    _cleanup_free_ char *secret = NULL;
    r = crypto_token_new("orch_whsec", WEBHOOK_SECRET_BYTES, &secret);
    if (r < 0) {
        http_reply_error(req, r, "making the webhook secret");
        return;
    }
    size_t slen = strlen(secret);
    uint8_t sealed[128];
    char sealed_hex[2 + 2 * sizeof(sealed) + 1];
    int n = webhook_secret_seal(app->webhook_key, id, secret, slen, sealed, sizeof(sealed));
    if (n < 0) {
        crypto_cleanse(secret, slen);
        http_reply_error(req, n, "sealing the webhook secret");
        return;
    }
    memcpy(sealed_hex, "\\x", 2);
    hex_encode(sealed, (size_t)n, sealed_hex + 2);
    char prefix[WEBHOOK_SECRET_PREFIX + 1];
    memcpy(prefix, secret, WEBHOOK_SECRET_PREFIX);
    prefix[WEBHOOK_SECRET_PREFIX] = '\0';
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", WEBHOOKS_PER_TENANT_MAX);
    json_t *enabled = json_object_get(body, "enabled");
    const char *p[] = {id,
                       url,
                       events,
                       api_json_str(body, "description"),
                       enabled ? (json_is_true(enabled) ? "true" : "false") : NULL,
                       sealed_hex,
                       limit,
                       prefix};

    struct store_tx *tx = NULL;
    r = app_tx_begin_own(app, req, &tx);
    if (r < 0) {
        crypto_cleanse(secret, slen);
        http_reply_error(req, r, "creating the webhook");
        return;
    }
    r = store_tx_exec(tx, &q_webhook_insert, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        crypto_cleanse(secret, slen);
        http_reply_problem(req, PROBLEM_CONFLICT,
                           "the tenant has 25 webhooks, the most it may have; delete one first",
                           NULL);
        return;
    }
    /* The audit record names the URL and events, never the secret. */
    if (r > 0) {
        _cleanup_json_ json_t *detail =
            json_pack("{s:s, s:O}", "url", url, "events", json_object_get(body, "events"));
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), "webhook.create", "webhook",
                      id, detail);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        crypto_cleanse(secret, slen);
        http_reply_error(req, r, "creating the webhook");
        return;
    }
    api_reply_doc_commit(req, tx, &q_webhook_doc, id, 201, "webhook", "secret", secret);
    crypto_cleanse(secret, slen);
}

void api_webhooks_get(struct http_req *req)
{
    api_get_doc(req, &q_webhook_doc, app_own_tenant(http_req_principal(req)), "webhook");
}

void api_webhooks_list(struct http_req *req)
{
    api_list_page(req, &q_webhook_list, app_own_tenant(http_req_principal(req)),
                  "listing webhooks");
}

void api_webhooks_update(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "webhook");
    if (!id)
        return;
    _cleanup_json_ json_t *body = NULL;
    if (http_req_json(req, update_fields, ELEMENTSOF(update_fields), &body) < 0)
        return;
    char events[WEBHOOK_EVENTS_N * 20 + 4];
    json_t *ev = json_object_get(body, "events");
    if (ev && events_literal(req, ev, events, sizeof(events)) < 0)
        return;
    json_t *enabled = json_object_get(body, "enabled");
    const char *p[] = {id, ev ? events : NULL, api_json_str(body, "description"),
                       enabled ? (json_is_true(enabled) ? "true" : "false") : NULL};
    struct store_tx *tx = NULL;
    int r = app_tx_begin_own(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "updating the webhook");
        return;
    }
    r = store_tx_exec(tx, &q_webhook_update, p, NULL);
    if (r == 0) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such webhook", NULL);
        return;
    }
    if (r > 0)
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), "webhook.update", "webhook",
                      id, body);
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "updating the webhook");
        return;
    }
    api_reply_doc_commit(req, tx, &q_webhook_doc, id, 200, "webhook", NULL, NULL);
}

void api_webhooks_delete(struct http_req *req)
{
    api_delete_by_id(req, &q_webhook_delete, "webhook", "webhook");
}

/* 0 when the path's webhook is visible to the principal, else < 0 after replying 404. */
static int webhook_visible(struct http_req *req, const char *id)
{
    const char *p[] = {id};
    struct app *app = http_req_app(req);
    int r = store_exec_once(app->store, app_own_tenant(http_req_principal(req)), &q_webhook_exists,
                            p, NULL);
    if (r < 0) {
        http_reply_error(req, r, "reading the webhook");
        return r;
    }
    if (r == 0) {
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such webhook", NULL);
        return -ENOENT;
    }
    return 0;
}

void api_webhooks_deliveries(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "webhook");
    if (!id || webhook_visible(req, id) < 0)
        return;
    api_list_page_with(req, &q_delivery_list, app_own_tenant(http_req_principal(req)),
                       "listing deliveries", id);
}

void api_webhooks_resend(struct http_req *req)
{
    const char *id = api_path_id(req, "id", "webhook");
    if (!id)
        return;
    const char *did = api_path_id(req, "delivery_id", "delivery");
    if (!did)
        return;
    char nid[ID_STR_LEN];
    id_uuid7_str(nid);
    struct store_tx *tx = NULL;
    int r = app_tx_begin_own(http_req_app(req), req, &tx);
    if (r < 0) {
        http_reply_error(req, r, "resending the delivery");
        return;
    }
    const char *p[] = {id, did, nid};
    PGresult *res = NULL;
    r = store_tx_exec(tx, &q_delivery_resend, p, &res);
    bool found = r > 0 && !PQgetisnull(res, 0, 0);
    PQclear(res);
    if (r >= 0 && !found) {
        store_tx_rollback(tx);
        http_reply_problem(req, PROBLEM_NOT_FOUND, "no such delivery", NULL);
        return;
    }
    if (r >= 0) {
        _cleanup_json_ json_t *detail = json_pack("{s:s}", "resent", did);
        r = app_audit(tx, req, app_own_tenant(http_req_principal(req)), "webhook.resend", "webhook",
                      id, detail);
    }
    if (r < 0) {
        store_tx_rollback(tx);
        http_reply_error(req, r, "resending the delivery");
        return;
    }
    api_reply_doc_commit(req, tx, &q_delivery_doc, nid, 202, "delivery", NULL, NULL);
}
