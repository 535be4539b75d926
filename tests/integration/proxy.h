/* proxy.h: a minimal HTTP CONNECT proxy for tests (what a corporate proxy does for HTTPS):
 * it tunnels to 127.0.0.1 only, and counts the tunnels it opened. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#define TH_PROXY_MAX_CONNS 64

struct th_proxy {
    int port;              /* where it listens (127.0.0.1) */
    atomic_int tunnels;    /* CONNECTs answered 200 since start */
    atomic_int open;       /* tunnels open now */
    char last_target[128]; /* host:port of the last CONNECT */
    /* private */
    int fd;
    atomic_bool stop;
    pthread_t thread;
    pthread_mutex_t lock;
    int conns[TH_PROXY_MAX_CONNS]; /* client sockets of live tunnels, -1 = free */
};

void th_proxy_start(struct th_proxy *p);
/* Close the listener and every tunnel, and wait (bounded) for them to end. */
void th_proxy_stop(struct th_proxy *p);
