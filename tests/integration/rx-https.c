/* rx-https.c: the webhook receiver of integration tests (see rx-https.h). */
#include "tests/integration/rx-https.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"

struct rx_state rx = {.mu = PTHREAD_MUTEX_INITIALIZER};
char rx_certdir[64];

static void header(const char *head, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    const char *p = strcasestr(head, name);
    if (!p)
        return;
    p += strlen(name);
    p += strspn(p, ": ");
    size_t n = strcspn(p, "\r\n");
    snprintf(out, outlen, "%.*s", (int)n, p);
}

static void rx_serve(int c)
{
    SSL *ssl = SSL_new(rx.ctx);
    SSL_set_fd(ssl, c);
    char buf[65536];
    size_t used = 0;
    if (SSL_accept(ssl) == 1) {
        char *end = NULL;
        long clen = -1;
        for (;;) {
            int n = SSL_read(ssl, buf + used, (int)(sizeof(buf) - 1 - used));
            if (n <= 0)
                break;
            used += (size_t)n;
            buf[used] = '\0';
            if (!end && (end = strstr(buf, "\r\n\r\n"))) {
                char cl[32];
                header(buf, "Content-Length", cl, sizeof(cl));
                clen = strtol(cl, NULL, 10);
            }
            if (end && (long)(used - (size_t)(end + 4 - buf)) >= clen)
                break;
        }
        if (end) {
            pthread_mutex_lock(&rx.mu);
            int i = rx.n;
            struct rx_req *r = &rx.reqs[i < RX_MAX ? i : RX_MAX - 1];
            sscanf(buf, "POST %127s", r->path);
            header(buf, "Orch-Webhook-Id", r->id, sizeof(r->id));
            header(buf, "Orch-Signature", r->sig, sizeof(r->sig));
            free(r->body);
            r->body = strndup(end + 4, (size_t)clen);
            int status = 200;
            if (strstr(r->path, "/fail"))
                status = 500;
            else if (rx.fail_first > 0) {
                rx.fail_first--;
                status = 500;
            }
            rx.n++;
            pthread_mutex_unlock(&rx.mu);
            char reply[128];
            int rn =
                snprintf(reply, sizeof(reply),
                         "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status);
            SSL_write(ssl, reply, rn);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(c);
}

static void *rx_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&rx.stop)) {
        struct pollfd p = {.fd = rx.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(rx.fd, NULL, NULL);
        if (c >= 0)
            rx_serve(c);
    }
    return NULL;
}

void rx_start(void)
{
    char cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/server.pem", rx_certdir);
    snprintf(key, sizeof(key), "%s/server.key", rx_certdir);
    rx.ctx = SSL_CTX_new(TLS_server_method());
    cr_assert(rx.ctx);
    cr_assert_eq(SSL_CTX_use_certificate_chain_file(rx.ctx, cert), 1);
    cr_assert_eq(SSL_CTX_use_PrivateKey_file(rx.ctx, key, SSL_FILETYPE_PEM), 1);
    rx.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(rx.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(rx.fd, 16), 0);
    socklen_t al = sizeof(a);
    getsockname(rx.fd, (struct sockaddr *)&a, &al);
    rx.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&rx.th, NULL, rx_main, NULL), 0);
}

void rx_make_certs(void)
{
    snprintf(rx_certdir, sizeof(rx_certdir), "/tmp/orch-wh-XXXXXX");
    cr_assert(mkdtemp(rx_certdir));
    struct th_run r;
    const char *gen[] = {th_env("ORCH_TEST_GEN_CERTS"), rx_certdir, NULL};
    th_run(&r, gen, NULL, 60000);
    cr_assert_eq(r.status, 0, "gen-certs: %s", th_str(&r.err));
    th_run_free(&r);
}

int rx_count(void)
{
    pthread_mutex_lock(&rx.mu);
    int n = rx.n;
    pthread_mutex_unlock(&rx.mu);
    return n;
}

void rx_wait(int n)
{
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (rx_count() < n) {
        cr_assert(clock_mono_ns() < deadline, "the receiver had %d requests, not %d", rx_count(),
                  n);
        usleep(10000);
    }
}

int rx_distinct(int *idx, int max)
{
    int k = 0;
    for (int i = 0; i < rx.n && i < RX_MAX && k < max; i++) {
        bool seen = false;
        for (int j = 0; j < k && !seen; j++)
            seen = strcmp(rx.reqs[idx[j]].id, rx.reqs[i].id) == 0;
        if (!seen)
            idx[k++] = i;
    }
    return k;
}

void rx_wait_distinct(int n)
{
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    for (;;) {
        int idx[RX_MAX];
        pthread_mutex_lock(&rx.mu);
        int k = rx_distinct(idx, RX_MAX);
        pthread_mutex_unlock(&rx.mu);
        if (k >= n)
            return;
        cr_assert(clock_mono_ns() < deadline, "the receiver had %d distinct events, not %d", k, n);
        usleep(10000);
    }
}

void rx_verify_with_python(const char *secret, int i)
{
    char bodyf[160];
    snprintf(bodyf, sizeof(bodyf), "%s/body-%d", rx_certdir, i);
    FILE *f = fopen(bodyf, "w");
    cr_assert(f);
    fputs(rx.reqs[i].body, f);
    fclose(f);
    static const char script[] =
        "import hmac, hashlib, sys, time\n"
        "secret, header, path = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "body = open(path, 'rb').read()\n"
        "parts = dict(p.split('=', 1) for p in header.split(','))\n"
        "t = parts['t']\n"
        "want = hmac.new(secret.encode(), t.encode() + b'.' + body, hashlib.sha256).hexdigest()\n"
        "assert hmac.compare_digest(want, parts['v1']), 'bad signature'\n"
        "assert abs(time.time() - int(t)) < 300, 'stale'\n"
        "print('ok')\n";
    const char *argv[] = {"/usr/bin/python3", "-c", script, secret, rx.reqs[i].sig, bodyf, NULL};
    struct th_run r;
    th_run(&r, argv, NULL, 30000);
    cr_assert_eq(r.status, 0, "python verifier: %s %s", th_str(&r.out), th_str(&r.err));
    cr_assert_str_eq(th_str(&r.out), "ok\n");
    th_run_free(&r);
    /* The same check must fail for another secret: the verifier is not a rubber stamp. */
    const char *bad[] = {"/usr/bin/python3", "-c",  script, "orch_whsec_wrong",
                         rx.reqs[i].sig,     bodyf, NULL};
    th_run(&r, bad, NULL, 30000);
    cr_assert_neq(r.status, 0);
    th_run_free(&r);
}

void rx_stop(void)
{
    atomic_store(&rx.stop, true);
    if (rx.th)
        pthread_join(rx.th, NULL);
    if (rx.fd > 0)
        close(rx.fd);
    SSL_CTX_free(rx.ctx);
    for (int i = 0; i < RX_MAX; i++)
        free(rx.reqs[i].body);
    if (rx_certdir[0])
        th_rm_rf(rx_certdir);
}
