/* proxy.h: a minimal HTTP CONNECT proxy for tests (what a corporate proxy does for HTTPS):
 * it tunnels to 127.0.0.1 only, and counts the tunnels it opened. It can also play a
 * network partition: th_proxy_blackhole() stops every byte in both directions without
 * closing anything (as a link that silently drops packets), th_proxy_heal() lets them
 * through again. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

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
    bool blackholed;               /* under lock */
    pthread_cond_t healed;         /* signalled when blackholed turns false or on stop */
};

void th_proxy_start(struct th_proxy *p);
/* Close the listener and every tunnel, and wait (bounded) for them to end. */
void th_proxy_stop(struct th_proxy *p);

/* From now on nothing passes: open tunnels keep their sockets but forward no byte (what
 * was sent waits, unread, in the kernel's buffers), and new connections are accepted but
 * their CONNECT is never answered. Nothing is closed, so neither end learns of it except
 * by its own timeouts. */
void th_proxy_blackhole(struct th_proxy *p);
/* Forward again: held bytes flow on, waiting CONNECTs are answered. */
void th_proxy_heal(struct th_proxy *p);
