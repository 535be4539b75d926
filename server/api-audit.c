/* api-audit.c: the audit log, newest first. A tenant admin reads the tenant's records;
 * a platform operator reads every record, or one tenant's with ?tenant_id=. Both may narrow
 * it by action, object, actor and time; the database filters, the page never does. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

/* Planned at each call (STORE_STMT_PLANNED): a generic plan can use none of the optional
 * filters. A tenant's own reads name its id ($3): row-level security alone gives the
 * planner no index condition (docs/scaling.md, "Indexes on jobs"). */
static const struct store_stmt q_audit_list = STORE_STMT_PLANNED(
    "audit_list",
    "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id DESC), '[]'),"
    " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id))[1] END)"
    " FROM (SELECT id, doc FROM audit_view WHERE ($1::uuid IS NULL OR id < $1::uuid)"
    "         AND ($3::uuid IS NULL OR tenant_id = $3::uuid)"
    "         AND ($4::text IS NULL OR action = $4)"
    "         AND ($5::text IS NULL OR object_type = $5)"
    "         AND ($6::text IS NULL OR object_id = $6)"
    "         AND ($7::text IS NULL OR actor_type = $7)"
    "         AND ($8::text IS NULL OR actor_id = $8)"
    "         AND ($9::timestamptz IS NULL OR created_at >= $9::timestamptz)"
    "         AND ($10::timestamptz IS NULL OR created_at < $10::timestamptz)"
    "        ORDER BY id DESC LIMIT $2) s",
    10);

/* A name as the log writes them: "queue.create", "api_key": lower-case letters, digits,
 * '_' and (if dots) '.', 1 to max bytes. */
static bool valid_name(const char *s, size_t max, bool dots)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              (dots && *s == '.')))
            return false;
    return true;
}

static bool valid_actor_type(const char *s)
{
    return strcmp(s, "operator") == 0 || strcmp(s, "api_key") == 0 || strcmp(s, "agent") == 0 ||
           strcmp(s, "system") == 0;
}

void api_audit_list(struct http_req *req)
{
    int limit;
    const char *cursor;
    if (http_req_page(req, 50, 500, &limit, &cursor) < 0)
        return;
    char after[ID_STR_LEN];
    int c = api_page_cursor(req, cursor, after);
    if (c < 0)
        return;
    const struct http_principal *pr = http_req_principal(req);
    const char *tenant = http_req_query(req, "tenant_id");
    const char *action = http_req_query(req, "action");
    const char *otype = http_req_query(req, "object_type");
    const char *oid = http_req_query(req, "object_id");
    const char *atype = http_req_query(req, "actor_type");
    const char *aid = http_req_query(req, "actor_id");
    const char *since = http_req_query(req, "created_after");
    const char *until = http_req_query(req, "created_before");
    int64_t ms;
    const char *bad = NULL, *why = NULL;
    if (tenant && pr->kind != HTTP_PRINCIPAL_PLATFORM)
        bad = "tenant_id", why = "only platform operators filter by tenant";
    else if (tenant && !id_is_valid(tenant))
        bad = "tenant_id", why = "must be a tenant id";
    else if (action && !valid_name(action, 100, true))
        bad = "action", why = "must be an action such as queue.create (at most 100 characters)";
    else if (otype && !valid_name(otype, 50, false))
        bad = "object_type", why = "must be an object type such as queue (at most 50 characters)";
    else if (oid && (oid[0] == '\0' || strlen(oid) > 200))
        bad = "object_id", why = "must be 1 to 200 characters";
    else if (atype && !valid_actor_type(atype))
        bad = "actor_type", why = "must be operator, api_key, agent or system";
    else if (aid && (aid[0] == '\0' || strlen(aid) > 200))
        bad = "actor_id", why = "must be 1 to 200 characters";
    else if (since && clock_parse_rfc3339(since, &ms) < 0)
        bad = "created_after", why = "must be an RFC 3339 time";
    else if (until && clock_parse_rfc3339(until, &ms) < 0)
        bad = "created_before", why = "must be an RFC 3339 time";
    if (bad) {
        http_reply_problem(req, PROBLEM_VALIDATION, why, bad);
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    if (pr->kind == HTTP_PRINCIPAL_TENANT)
        tenant = pr->tenant_id;
    const char *p[] = {c ? after : NULL, lim, tenant, action, otype, oid, atype, aid, since, until};
    PGresult *res = NULL;
    struct app *app = http_req_app(req);
    int r = store_exec_once(app->store, pr->kind == HTTP_PRINCIPAL_TENANT ? pr->tenant_id : NULL,
                            &q_audit_list, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the audit log");
        return;
    }
    api_reply_page(req, res);
}
