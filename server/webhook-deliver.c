/* webhook-deliver.c: see webhook-deliver.h.
 *
 * Locking: wd->lock guards wd->stop and wd->running and is what the idle workers'
 * condition waits on; wd->nthreads and threads[] are the starting thread's alone;
 * everything else a worker uses is its own (its curl handle, its claimed row) or read-only
 * (the app's configuration and key). */
#include "server/webhook-deliver.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "server/app.h"
#include "server/url-guard.h"
#include "server/webhook-secret.h"

/* A claim lasts one attempt's timeout and some: past it, another worker may take the row. */
#define CLAIM_SLACK_MS 30000
/* The endpoint's answer is read up to this much and dropped. */
#define RESPONSE_MAX 65536

static const struct store_stmt q_claim =
    STORE_STMT("webhook_claim",
               "SELECT id, tenant_id, webhook_id, url, secret_sealed, payload::text, attempts,"
               " payload->>'id' FROM webhook_claim($1::bigint)",
               1);

static const struct store_stmt q_finish = STORE_STMT(
    "webhook_finish", "SELECT webhook_finish($1, $2::bool, $3::int, $4, $5::int, $6, $7)", 7);

/* Ended deliveries past webhooks.retention, deleted by the first worker at most this often,
 * in batches (any node with the role does it; two at once only repeat each other). */
#define PRUNE_EVERY_MS 1000
#define PRUNE_BATCH    "1000"

static const struct store_stmt q_prune =
    STORE_STMT("webhook_prune",
               "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
               " WHERE status IN ('succeeded', 'failed')"
               "   AND updated_at < now() - $1::bigint * interval '1 millisecond' LIMIT $2::int)",
               2);

struct webhook_deliver {
    struct app *app;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    unsigned running; /* workers that have started (the first one prunes) */
    size_t nthreads;
    pthread_t threads[];
};

void webhook_sign(const char *secret, long long t, const char *body, size_t len,
                  char out[WEBHOOK_SIGNATURE_LEN])
{
    char ts[24];
    int tl = snprintf(ts, sizeof(ts), "%lld.", t);
    /* crypto_hmac_sha256() takes one buffer: "<t>.<body>" is built once. */
    size_t n = (size_t)tl + len;
    char *msg = malloc(n);
    uint8_t mac[CRYPTO_SHA256_LEN];
    char hex[2 * CRYPTO_SHA256_LEN + 1] = "";
    if (msg) {
        memcpy(msg, ts, (size_t)tl);
        memcpy(msg + tl, body, len);
        crypto_hmac_sha256(secret, strlen(secret), msg, n, mac);
        hex_encode(mac, sizeof(mac), hex);
        free(msg);
    }
    snprintf(out, WEBHOOK_SIGNATURE_LEN, "t=%lld,v1=%s", t, hex);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    size_t *seen = arg;
    (void)p;
    *seen += size * n;
    return *seen > RESPONSE_MAX ? 0 : size * n;
}

/* One attempt: returns the HTTP status (0 when none), with err filled when not 2xx. */
static long post(struct webhook_deliver *wd, const char *url, const char *secret,
                 const char *event_id, const char *body, char *err, size_t errlen)
{
    const struct orchd_config *cfg = wd->app->cfg;
    struct url_guard_url u;
    char addr[URL_GUARD_ADDR_STR], why[200];
    /* Judged again: the subscription's name may resolve elsewhere now. */
    if (url_guard_check(url, cfg->webhooks_allow_private, &u, addr, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "refused: %s", why);
        return 0;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    char pin[URL_GUARD_HOST_MAX + URL_GUARD_ADDR_STR + 16];
    snprintf(pin, sizeof(pin), u.host_is_ip6 ? "%s:%u:[%s]" : "%s:%u:%s", u.host, (unsigned)u.port,
             addr);
    struct curl_slist *resolve = u.host_is_ip6 ? NULL : curl_slist_append(NULL, pin);
    char sig[WEBHOOK_SIGNATURE_LEN], hid[96], hsig[WEBHOOK_SIGNATURE_LEN + 32];
    webhook_sign(secret, (long long)(clock_real_ms() / 1000), body, strlen(body), sig);
    snprintf(hid, sizeof(hid), "Orch-Webhook-Id: %s", event_id);
    snprintf(hsig, sizeof(hsig), "Orch-Signature: %s", sig);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "User-Agent: orch-webhooks/1");
    h = curl_slist_append(h, "Expect:");
    h = curl_slist_append(h, hid);
    h = curl_slist_append(h, hsig);
    size_t seen = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)cfg->webhooks_timeout_ms);
    curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &seen);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    if (cfg->webhooks_ca_file && cfg->webhooks_ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, cfg->webhooks_ca_file);
    long status = 0;
    CURLcode cr = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cr != CURLE_OK && !(cr == CURLE_WRITE_ERROR && status > 0))
        snprintf(err, errlen, "%s", curl_easy_strerror(cr));
    else if (status < 200 || status > 299)
        snprintf(err, errlen, "the endpoint answered HTTP %ld", status);
    curl_slist_free_all(h);
    curl_slist_free_all(resolve);
    curl_easy_cleanup(c);
    return status;
}

/* Claim one due delivery and make its attempt. Returns 1 when one was made, 0 when none
 * was due, < 0 on a store failure. */
static int deliver_one(struct webhook_deliver *wd)
{
    const struct orchd_config *cfg = wd->app->cfg;
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)(cfg->webhooks_timeout_ms + CLAIM_SLACK_MS));
    const char *p[] = {lease};
    PGresult *res = NULL;
    int r = store_exec_once(wd->app->store, NULL, &q_claim, p, &res);
    if (r <= 0) {
        PQclear(res);
        return r;
    }
    const char *id = PQgetvalue(res, 0, 0), *tenant = PQgetvalue(res, 0, 1);
    const char *hook = PQgetvalue(res, 0, 2), *url = PQgetvalue(res, 0, 3);
    const char *body = PQgetvalue(res, 0, 5), *attempts = PQgetvalue(res, 0, 6);
    const char *event_id = PQgetvalue(res, 0, 7);
    size_t slen = 0;
    unsigned char *sealed = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 4), &slen);
    char secret[256], err[512] = "";
    long status = 0;
    int n = sealed ? webhook_secret_open(wd->app->webhook_key, hook, sealed, slen, secret,
                                         sizeof(secret))
                   : -ENOMEM;
    PQfreemem(sealed);
    if (n < 0)
        snprintf(err, sizeof(err),
                 "the signing secret cannot be opened (webhooks.key_file "
                 "changed?)");
    else
        status = post(wd, url, secret, event_id, body, err, sizeof(err));
    crypto_cleanse(secret, sizeof(secret));
    bool ok = status >= 200 && status <= 299;
    char code[16], maxa[16], base[24], cap[24];
    snprintf(code, sizeof(code), "%ld", status);
    snprintf(maxa, sizeof(maxa), "%lld", (long long)cfg->webhooks_max_attempts);
    snprintf(base, sizeof(base), "%lld", (long long)cfg->webhooks_retry_base_ms);
    snprintf(cap, sizeof(cap), "%lld", (long long)cfg->webhooks_retry_max_ms);
    const char *fp[] = {
        id, ok ? "true" : "false", status ? code : NULL, ok ? NULL : err, maxa, base, cap};
    PGresult *fres = NULL;
    r = store_exec_once(wd->app->store, NULL, &q_finish, fp, &fres);
    const char *outcome = r > 0 && !PQgetisnull(fres, 0, 0) ? PQgetvalue(fres, 0, 0) : "lost";
    log_info("op=webhook.deliver tenant=%s webhook=%s delivery=%s attempt=%s status=%ld "
             "outcome=%s%s%s",
             tenant, hook, id, attempts, status, outcome, ok ? "" : " error=", ok ? "" : err);
    PQclear(fres);
    PQclear(res);
    return r < 0 ? r : 1;
}

static bool stopping(struct webhook_deliver *wd)
{
    pthread_mutex_lock(&wd->lock);
    bool s = wd->stop;
    pthread_mutex_unlock(&wd->lock);
    return s;
}

/* Wait up to ms for a stop. */
static void idle(struct webhook_deliver *wd, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&wd->lock);
    if (!wd->stop)
        pthread_cond_timedwait(&wd->wake, &wd->lock, &ts);
    pthread_mutex_unlock(&wd->lock);
}

/* The retention of the delivery log (webhooks.retention; 0 = forever). */
static void prune(struct webhook_deliver *wd)
{
    int64_t keep = wd->app->cfg->webhooks_retention_ms;
    if (keep <= 0)
        return;
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)keep);
    const char *p[] = {ms, PRUNE_BATCH};
    int r = store_exec_once(wd->app->store, NULL, &q_prune, p, NULL);
    if (r > 0)
        log_debug("op=webhook.prune deleted=%d", r);
    else if (r < 0)
        log_warn("op=webhook.prune error=%d", r);
}

static void *worker_main(void *arg)
{
    struct webhook_deliver *wd = arg;
    /* One worker prunes: the first to get here. */
    pthread_mutex_lock(&wd->lock);
    bool pruner = wd->running++ == 0;
    pthread_mutex_unlock(&wd->lock);
    uint64_t next_prune = 0;
    while (!stopping(wd)) {
        if (pruner && clock_mono_ns() >= next_prune) {
            prune(wd);
            next_prune = clock_mono_ns() + (uint64_t)PRUNE_EVERY_MS * 1000000u;
        }
        int r = deliver_one(wd);
        if (r < 0)
            log_warn("op=webhook.claim error=%d", r);
        if (r <= 0)
            idle(wd, wd->app->cfg->webhooks_poll_ms);
    }
    return NULL;
}

int webhook_deliver_start(struct app *app, struct webhook_deliver **ret)
{
    size_t n = (size_t)app->cfg->webhooks_workers;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -EIO;
    struct webhook_deliver *wd = calloc(1, sizeof(*wd) + n * sizeof(pthread_t));
    if (!wd)
        return -ENOMEM;
    wd->app = app;
    pthread_mutex_init(&wd->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->wake, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < n; i++) {
        int r = pthread_create(&wd->threads[i], NULL, worker_main, wd);
        if (r != 0) {
            webhook_deliver_stop(wd);
            return -r;
        }
        wd->nthreads++;
    }
    log_info("op=webhooks state=started workers=%zu", n);
    *ret = wd;
    return 0;
}

void webhook_deliver_stop(struct webhook_deliver *wd)
{
    if (!wd)
        return;
    pthread_mutex_lock(&wd->lock);
    wd->stop = true;
    pthread_cond_broadcast(&wd->wake);
    pthread_mutex_unlock(&wd->lock);
    for (size_t i = 0; i < wd->nthreads; i++)
        pthread_join(wd->threads[i], NULL);
    pthread_cond_destroy(&wd->wake);
    pthread_mutex_destroy(&wd->lock);
    free(wd);
}
