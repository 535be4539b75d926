/* transport-curl.c: the agent's HTTPS client on libcurl (see transport.h). */
#include "agent/transport.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/transport-impl.h"
#include "common/buf.h"
#include "common/cleanup.h"
#include "proto/agent.h"

struct transport {
    CURL *curl;
    CURLM *multi; /* holds the connection between requests, and lets one be interrupted */
    char *base;
    char *ca_file;
    char *proxy;
    char *no_proxy;
    char *auth_header;
    int64_t timeout_ms;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int transport_new(const struct transport_options *o, struct transport **ret)
{
    if (!o->server_url || strncmp(o->server_url, "https://", 8) != 0)
        return -EINVAL;
    pthread_once(&curl_once, curl_init_once);
    struct transport *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->curl = curl_easy_init();
    t->multi = curl_multi_init();
    t->proxy = o->proxy && o->proxy[0] ? strdup(o->proxy) : NULL;
    t->no_proxy = o->no_proxy && o->no_proxy[0] ? strdup(o->no_proxy) : NULL;
    size_t n = strlen(o->server_url);
    while (n > 0 && o->server_url[n - 1] == '/')
        n--;
    t->base = strndup(o->server_url, n);
    t->ca_file = o->ca_file && o->ca_file[0] ? strdup(o->ca_file) : NULL;
    t->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    if (!t->curl || !t->multi || !t->base || (o->ca_file && o->ca_file[0] && !t->ca_file) ||
        (o->proxy && o->proxy[0] && !t->proxy) || (o->no_proxy && o->no_proxy[0] && !t->no_proxy) ||
        transport_set_credential(t, o->credential) < 0) {
        transport_free(t);
        return -ENOMEM;
    }
    *ret = t;
    return 0;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    if (t->curl)
        curl_easy_cleanup(t->curl);
    if (t->multi)
        curl_multi_cleanup(t->multi);
    free(t->base);
    free(t->ca_file);
    free(t->proxy);
    free(t->no_proxy);
    if (t->auth_header)
        explicit_bzero(t->auth_header, strlen(t->auth_header));
    free(t->auth_header);
    free(t);
}

int transport_set_credential(struct transport *t, const char *credential)
{
    if (t->auth_header)
        explicit_bzero(t->auth_header, strlen(t->auth_header));
    FREE_AND_NULL(t->auth_header);
    if (credential && asprintf(&t->auth_header, "Authorization: Bearer %s", credential) < 0) {
        t->auth_header = NULL;
        return -ENOMEM;
    }
    return 0;
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    return buf_append(b, data, size * n) == 0 ? size * n : 0;
}

void transport_wakeup(struct transport *t)
{
    curl_multi_wakeup(t->multi);
}

/* Run the transfer on the multi handle; -EINTR when abort says so. */
static CURLcode perform(struct transport *t, bool (*abort)(void *arg), void *arg, bool *aborted)
{
    CURL *c = t->curl;
    CURLMcode mc = curl_multi_add_handle(t->multi, c);
    if (mc != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    CURLcode rc = CURLE_OK;
    for (;;) {
        int running = 0;
        mc = curl_multi_perform(t->multi, &running);
        if (mc != CURLM_OK) {
            rc = CURLE_SEND_ERROR;
            break;
        }
        int left = 0;
        CURLMsg *m = NULL;
        bool done = false;
        while ((m = curl_multi_info_read(t->multi, &left)))
            if (m->msg == CURLMSG_DONE && m->easy_handle == c) {
                rc = m->data.result;
                done = true;
            }
        if (done)
            break;
        if (abort && abort(arg)) {
            *aborted = true;
            break;
        }
        mc = curl_multi_poll(t->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            rc = CURLE_RECV_ERROR;
            break;
        }
    }
    curl_multi_remove_handle(t->multi, c); /* mid-transfer, this closes the connection */
    return rc;
}

/* transport-impl.h */
int transport_exchange(struct transport *t, const char *method, const char *path, const char *text,
                       const char *accept, const char *extra, int64_t timeout_ms,
                       bool (*abort)(void *arg), void *arg, struct buf *reply,
                       struct transport_reply *r)
{
    char url[4096];
    snprintf(url, sizeof(url), "%s%s", t->base, path);
    char accept_h[128];
    snprintf(accept_h, sizeof(accept_h), "Accept: %s", accept);
    struct curl_slist *h = NULL;
    if (t->auth_header)
        h = curl_slist_append(h, t->auth_header);
    if (text)
        h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, accept_h);
    char line[256];
    for (const char *e = extra; e && *e;) {
        size_t n = strcspn(e, "\r\n");
        if (n > 0 && n < sizeof(line)) {
            memcpy(line, e, n);
            line[n] = '\0';
            h = curl_slist_append(h, line);
        }
        e += n;
        e += strspn(e, "\r\n");
    }
    /* Every request says which agent protocol it speaks (proto/agent.h). */
    char version_h[64];
    snprintf(version_h, sizeof(version_h), "%s: %d", PROTO_AGENT_VERSION_HEADER,
             PROTO_AGENT_VERSION);
    h = curl_slist_append(h, version_h);
    char rid_h[64];
    if (r->request_id[0]) {
        snprintf(rid_h, sizeof(rid_h), "X-Request-Id: %s", r->request_id);
        h = curl_slist_append(h, rid_h);
    }

    CURL *c = t->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : t->timeout_ms));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "orch-agent");
    if (t->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, t->ca_file);
    if (t->proxy)
        curl_easy_setopt(c, CURLOPT_PROXY, t->proxy);
    if (t->no_proxy)
        curl_easy_setopt(c, CURLOPT_NOPROXY, t->no_proxy);
    if (text) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    }
    bool aborted = false;
    CURLcode rc = perform(t, abort, arg, &aborted);
    curl_slist_free_all(h);
    if (aborted) {
        snprintf(r->error, sizeof(r->error), "%s: request given up", t->base);
        return -EINTR;
    }
    if (rc != CURLE_OK) {
        snprintf(r->error, sizeof(r->error), "%s: %s", t->base,
                 rc == CURLE_WRITE_ERROR ? "the answer is too large" : curl_easy_strerror(rc));
        return rc == CURLE_OPERATION_TIMEDOUT                                           ? -ETIMEDOUT
               : rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ? -EPROTO
               : rc == CURLE_WRITE_ERROR                                                ? -EMSGSIZE
                                         : -ECONNREFUSED;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_off_t ra = 0;
    if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
        r->retry_after_s = (int64_t)ra;
    return 0;
}
