/* rx-https.h: an HTTPS receiver of webhook deliveries for integration tests (one per test
 * process), with a certificate from the development CA (tools/gen-certs.sh) and a signature
 * verifier in Python's hmac, independent of orchd's C code.
 *
 * Use: rx_make_certs() (then give orchd ORCHD_WEBHOOKS_CA_FILE=<rx_certdir>/ca.pem and
 * ORCHD_WEBHOOKS_ALLOW_PRIVATE=true), rx_start(), and rx_stop() in the suite's fini. The
 * receiver serves one TLS connection at a time and records each request; requests to a
 * path with "/fail" always get 500, the others get rx.fail_first 500s and then 200. Read
 * rx.n and rx.reqs under rx.mu. */
#pragma once

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#define RX_MAX 32

struct rx_req {
    char path[128];
    char id[96];   /* Orch-Webhook-Id */
    char sig[160]; /* Orch-Signature */
    char *body;    /* malloc'd, NUL-terminated */
};

struct rx_state {
    int fd, port;
    SSL_CTX *ctx;
    pthread_t th;
    atomic_bool stop;
    pthread_mutex_t mu;
    int n, fail_first; /* requests had (past RX_MAX the last slot is reused); 500s to give */
    struct rx_req reqs[RX_MAX];
};

extern struct rx_state rx;
/* The receiver's certificate directory (ca.pem, server.pem, server.key); "" before
 * rx_make_certs(). */
extern char rx_certdir[64];

/* Make the certificates in a new temporary rx_certdir. */
void rx_make_certs(void);
/* Listen on a free loopback port (rx.port) and serve on a thread. */
void rx_start(void);
/* Stop the thread, free the requests, remove rx_certdir. Safe after a partial start. */
void rx_stop(void);
/* Requests had so far. */
int rx_count(void);
/* Wait (bounded, 30 s) until the receiver has had n requests; fails the test past it. */
void rx_wait(int n);
/* Delivery is at least once: a reply slower than the sender's timeout is retried, so an
 * event may arrive twice. Fills idx with the index in rx.reqs of the first request of each
 * distinct event (Orch-Webhook-Id), in arrival order, at most max; returns their number.
 * Call with rx.mu held. */
int rx_distinct(int *idx, int max);
/* Wait (at most 30 s) until the receiver had n distinct events. */
void rx_wait_distinct(int n);
/* Check the signature of request i with Python's hmac, as docs/api.md shows a receiver
 * do, and that the same check fails for another secret. */
void rx_verify_with_python(const char *secret, int i);
