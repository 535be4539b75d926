/* api-audit.c: the audit log, newest first. A tenant admin reads the tenant's records;
 * a platform operator reads every record, or one tenant's with ?tenant_id=. */
#include <stdio.h>
#include <string.h>

#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

static const struct store_stmt q_audit_list =
    STORE_STMT("audit_list",
               "SELECT json_build_object('items', coalesce(json_agg(doc ORDER BY id DESC), '[]'),"
               " 'next_cursor', CASE WHEN count(*) = $2 THEN (array_agg(id ORDER BY id))[1] END)"
               " FROM (SELECT id, doc FROM audit_view WHERE ($1::uuid IS NULL OR id < $1::uuid)"
               "         AND ($3::uuid IS NULL OR tenant_id = $3::uuid)"
               "        ORDER BY id DESC LIMIT $2) s",
               3);

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
    if (tenant && (!id_is_valid(tenant) || pr->kind != HTTP_PRINCIPAL_PLATFORM)) {
        http_reply_problem(req, PROBLEM_VALIDATION,
                           pr->kind == HTTP_PRINCIPAL_PLATFORM
                               ? "must be a tenant id"
                               : "only platform operators filter by tenant",
                           "tenant_id");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {c ? after : NULL, lim, tenant};
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
