/* webhook-deliver.h: the webhooks role: a pool of webhooks.workers threads that claim due
 * deliveries (webhook_claim(), sql/functions/90_webhooks.sql), POST them and record the
 * outcome (webhook_finish()).
 *
 * A delivery is a POST of the event's JSON ({id, type, created_at, tenant_id, data}) with
 *   Orch-Webhook-Id: <event id>
 *   Orch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 * to the subscription's URL, judged again by url-guard.h and connected to the address that
 * check resolved (no second lookup, no redirect followed). 2xx is success; anything else,
 * or no answer within webhooks.timeout, is retried by webhook_finish()'s backoff.
 *
 * Isolation: a worker holds one delivery at a time and a subscription has at most one in
 * flight, so a slow endpoint takes at most one worker for at most webhooks.timeout, and
 * never touches job processing (deliveries are read from the outbox, not from the job
 * path). */
#pragma once

#include <stddef.h>

struct app;
struct webhook_deliver;

/* Start the workers. Returns 0 with *ret set (stop with webhook_deliver_stop()), or
 * -errno; then no thread runs. */
int webhook_deliver_start(struct app *app, struct webhook_deliver **ret);

/* Ask the workers to stop, wait for them (an attempt in progress ends within
 * webhooks.timeout) and free wd. Accepts NULL. */
void webhook_deliver_stop(struct webhook_deliver *wd);

/* The signature header's value for body at unix time t into out ("t=...,v1=<64 hex>"). */
#define WEBHOOK_SIGNATURE_LEN 96
void webhook_sign(const char *secret, long long t, const char *body, size_t len,
                  char out[WEBHOOK_SIGNATURE_LEN]);
