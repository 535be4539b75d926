/* proxy.c: see proxy.h. One thread accepts; one detached thread per tunnel relays bytes. */
#include "tests/integration/proxy.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"

struct tunnel {
    struct th_proxy *p;
    int client;
    int slot;
};

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Wait while the proxy is blackholed. false when the proxy is stopping. */
static bool pass(struct th_proxy *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->blackholed && !atomic_load(&p->stop))
        pthread_cond_wait(&p->healed, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return !atomic_load(&p->stop);
}

static void relay(struct th_proxy *p, int a, int b)
{
    char buf[16384];
    struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    for (;;) {
        if (poll(pf, 2, 1000) < 0 && errno != EINTR)
            return;
        /* Readable, but during a partition the bytes stay where they are: not read, so
         * not lost either, as TCP would retransmit them once the link is back. */
        if (!pass(p))
            return;
        for (int i = 0; i < 2; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(pf[i].fd, buf, sizeof(buf));
            if (n <= 0)
                return;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(pf[1 - i].fd, buf + off, (size_t)(n - off));
                if (w <= 0)
                    return;
                off += w;
            }
        }
    }
}

static void *tunnel_main(void *arg)
{
    struct tunnel *t = arg;
    struct th_proxy *p = t->p;
    char req[8192];
    size_t len = 0;
    int upstream = -1;
    if (!pass(p))
        goto out;
    /* The request head: "CONNECT host:port HTTP/1.1" and headers, up to a blank line. */
    while (len < sizeof(req) - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
        ssize_t n = read(t->client, req + len, sizeof(req) - 1 - len);
        if (n <= 0)
            goto out;
        len += (size_t)n;
    }
    req[len] = '\0';
    char host[100];
    int port = 0;
    if (sscanf(req, "CONNECT %99[^:]:%d HTTP/1.", host, &port) != 2 ||
        (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0)) {
        static const char no[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        if (write(t->client, no, sizeof(no) - 1) < 0)
            goto out;
        goto out;
    }
    if (!pass(p)) /* a partition that began while the head arrived */
        goto out;
    upstream = connect_local(port);
    if (upstream < 0) {
        static const char bad[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        if (write(t->client, bad, sizeof(bad) - 1) < 0)
            goto out;
        goto out;
    }
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (write(t->client, ok, sizeof(ok) - 1) != (ssize_t)sizeof(ok) - 1)
        goto out;
    pthread_mutex_lock(&p->lock);
    snprintf(p->last_target, sizeof(p->last_target), "%s:%d", host, port);
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_add(&p->tunnels, 1);
    /* Bytes the client sent after the head belong to the tunnel (TLS ClientHello). */
    char *end = (char *)memmem(req, len, "\r\n\r\n", 4) + 4;
    if (end < req + len && write(upstream, end, (size_t)(req + len - end)) < 0)
        goto out;
    relay(p, t->client, upstream);
out:
    if (upstream >= 0)
        close(upstream);
    pthread_mutex_lock(&p->lock);
    p->conns[t->slot] = -1;
    close(t->client);
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_sub(&p->open, 1);
    free(t);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct th_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        int c = accept4(p->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* the listener was shut down */
        }
        struct tunnel *t = calloc(1, sizeof(*t));
        pthread_mutex_lock(&p->lock);
        int slot = -1;
        for (int i = 0; i < TH_PROXY_MAX_CONNS && slot < 0; i++)
            if (p->conns[i] < 0)
                slot = i;
        if (slot >= 0)
            p->conns[slot] = c;
        pthread_mutex_unlock(&p->lock);
        pthread_t th;
        if (!t || slot < 0) {
            close(c);
            free(t);
            continue;
        }
        *t = (struct tunnel){.p = p, .client = c, .slot = slot};
        atomic_fetch_add(&p->open, 1);
        if (pthread_create(&th, NULL, tunnel_main, t) != 0) {
            atomic_fetch_sub(&p->open, 1);
            pthread_mutex_lock(&p->lock);
            p->conns[slot] = -1;
            pthread_mutex_unlock(&p->lock);
            close(c);
            free(t);
            continue;
        }
        pthread_detach(th);
    }
    return NULL;
}

void th_proxy_start(struct th_proxy *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->healed, NULL);
    for (int i = 0; i < TH_PROXY_MAX_CONNS; i++)
        p->conns[i] = -1;
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(p->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(p->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(p->fd, 64), 0);
    cr_assert_eq(getsockname(p->fd, (struct sockaddr *)&a, &al), 0);
    p->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&p->thread, NULL, accept_main, p), 0);
}

void th_proxy_stop(struct th_proxy *p)
{
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->healed);
    pthread_mutex_unlock(&p->lock);
    shutdown(p->fd, SHUT_RDWR);
    pthread_join(p->thread, NULL);
    close(p->fd);
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < TH_PROXY_MAX_CONNS; i++)
        if (p->conns[i] >= 0)
            shutdown(p->conns[i], SHUT_RDWR);
    pthread_mutex_unlock(&p->lock);
    uint64_t deadline = clock_mono_ns() + 10ull * 1000000000ull;
    while (atomic_load(&p->open) > 0 && clock_mono_ns() < deadline)
        usleep(10000); /* the relays notice the shutdown within one poll() */
    cr_assert_eq(atomic_load(&p->open), 0, "proxy tunnels still open");
    pthread_cond_destroy(&p->healed);
    pthread_mutex_destroy(&p->lock);
}

void th_proxy_blackhole(struct th_proxy *p)
{
    pthread_mutex_lock(&p->lock);
    p->blackholed = true;
    pthread_mutex_unlock(&p->lock);
}

void th_proxy_heal(struct th_proxy *p)
{
    pthread_mutex_lock(&p->lock);
    p->blackholed = false;
    pthread_cond_broadcast(&p->healed);
    pthread_mutex_unlock(&p->lock);
}
