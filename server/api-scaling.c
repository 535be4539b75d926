/* api-scaling.c: the autoscaling signals (GET /api/v1/scaling/signals, docs/api.md): what
 * an external autoscaler needs to add or remove agents, per tenant, queue and distinct
 * requirement set. A tenant reads its own; a platform operator reads every tenant's, or
 * one's with ?tenant_id=.
 *
 * The matching agents include the shared pools' that admit the tenant, which the tenant's
 * scope cannot see: scaling_signals() (sql/0012_wait.sql) runs in the system scope with
 * the tenant's id from the caller's token as its bound, and says nothing of a pool agent
 * but counts. */
#include <stdio.h>
#include <string.h>

#include "common/id.h"
#include "server/api.h"
#include "server/app.h"

/* Requirement sets listed per tenant, most waiting first; the rest are summed up in
 * requirement_sets_truncated. */
#define SCALING_MAX_SETS "100"

static const struct store_stmt q_signals =
    STORE_STMT("scaling_signals", "SELECT scaling_signals($1::uuid, $2::int, $3::int)", 3);

void api_scaling_signals(struct http_req *req)
{
    const struct http_principal *pr = http_req_principal(req);
    const char *tenant = http_req_query(req, "tenant_id");
    if (pr->kind == HTTP_PRINCIPAL_TENANT) {
        /* A tenant's own id is the only one it may name. */
        if (tenant && strcmp(tenant, pr->tenant_id) != 0) {
            http_reply_problem(req, PROBLEM_VALIDATION,
                               "only platform operators read other tenants' signals", "tenant_id");
            return;
        }
        tenant = pr->tenant_id;
    } else if (tenant && !id_is_valid(tenant)) {
        http_reply_problem(req, PROBLEM_VALIDATION, "must be a tenant id", "tenant_id");
        return;
    }
    struct app *app = http_req_app(req);
    char online[24];
    snprintf(online, sizeof(online), "%lld", (long long)(app->cfg->agent_online_ms / 1000));
    const char *p[] = {tenant, online, SCALING_MAX_SETS};
    PGresult *res = NULL;
    int r = store_exec_once(app->store, NULL, &q_signals, p, &res);
    if (r < 0) {
        http_reply_error(req, r, "reading the scaling signals");
        return;
    }
    api_reply_pg_json(req, 200, res);
}
