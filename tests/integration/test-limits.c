/* test-limits.c: slow and greedy clients against the real orchd (issue 8, item 4): the
 * whole-request deadline, the route's body cap applied before the body is read, the caps on
 * connections per address and in total, and orchd's memory (VmRSS) meanwhile.
 *
 * The clients speak raw HTTP/1.1 over sockets, so most tests run orchd without TLS: the
 * limits live below TLS, and a thousand TLS handshakes in the test would only slow it. One
 * test keeps TLS to show a client stuck before its handshake is cut too. Each client binds
 * its own loopback source address (127.0.0.x) where the per-address cap must not interfere. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/server.h"

#define NSLOW         1000
#define SLOW_PER_ADDR 100
/* Long enough for the test to open its thousand connections on a loaded machine before
 * the first is cut. */
#define DEADLINE_MS 4000
#define MIB         (1024.0 * 1024.0)
#define SEC         1000000000ull
/* orchd's growth under NSLOW slow clients: evhttp's connection and request (a few KiB of
 * structures and buffers each, the headers read so far at most a few hundred bytes) and
 * the guard's record; 32 KiB a connection leaves room for the allocator's slack. */
#define RSS_PER_CONN_KIB 32

static struct th_server srv;

static void start_plain(const char *timeout, const char *max_total, const char *max_per_addr)
{
    static char t[64], m[64], p[64];
    snprintf(t, sizeof(t), "ORCHD_HTTP_REQUEST_TIMEOUT=%s", timeout);
    snprintf(m, sizeof(m), "ORCHD_HTTP_MAX_CONNECTIONS=%s", max_total);
    snprintf(p, sizeof(p), "ORCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=%s", max_per_addr);
    const char *env[] = {"ORCHD_HTTP_CERT_FILE=", "ORCHD_HTTP_KEY_FILE=", t, m, p, NULL};
    th_server_start(&srv, env);
}

static void stop(void)
{
    th_server_stop(&srv);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_assert(rl.rlim_max >= NSLOW + 200, "RLIMIT_NOFILE hard limit %lu is too low",
              (unsigned long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f);
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    cr_assert_gt(kib, 0);
    return kib;
}

/* The client connections pid has accepted on its port `port` and holds open (from /proc:
 * its socket inodes among the established TCP entries of that local port). */
static int accepted(pid_t pid, int port)
{
    static unsigned long inodes[8192];
    int ninodes = 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    cr_assert_not_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)) && ninodes < (int)(sizeof(inodes) / sizeof(inodes[0]))) {
        char link[400], target[64];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &inodes[ninodes]) == 1)
            ninodes++;
    }
    closedir(dir);
    int count = 0;
    snprintf(path, sizeof(path), "/proc/%d/net/tcp", (int)pid);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f);
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char local[64];
        unsigned st;
        unsigned long ino;
        if (sscanf(line, " %*s %63s %*s %x %*s %*s %*s %*s %*s %lu", local, &st, &ino) != 3)
            continue;
        const char *colon = strrchr(local, ':');
        if (!colon || (int)strtol(colon + 1, NULL, 16) != port || st != 1 /* ESTABLISHED */)
            continue;
        for (int i = 0; i < ninodes; i++)
            if (inodes[i] == ino) {
                count++;
                break;
            }
    }
    fclose(f);
    return count;
}

/* Wait (bounded, 20 s) until orchd holds at least n accepted connections. */
static void wait_accepted(int n)
{
    uint64_t until = clock_mono_ns() + 20 * SEC;
    int have = 0;
    while ((have = accepted(srv.pid, srv.port)) < n && clock_mono_ns() < until)
        poll(NULL, 0, 10);
    cr_assert_geq(have, n, "orchd accepted %d connections, not %d", have, n);
}

/* A blocking TCP connection to orchd from source address src (127.0.0.x). */
static int connect_from(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind %s: %s", src,
                 strerror(errno));
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server closed: the reply (or its absence) says why */
        data += n;
        len -= (size_t)n;
    }
}

/* Read the reply until the server closes or timeout_ms pass: the status (0 for none), the
 * raw reply (headers and body) into body. */
static int read_reply(int fd, char *body, size_t cap, int timeout_ms)
{
    char tmp[4096];
    size_t got = 0;
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int left = (int)((deadline - clock_mono_ns()) / 1000000ull);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (clock_mono_ns() >= deadline || poll(&p, 1, left > 0 ? left : 0) <= 0)
            break;
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            break;
        if (got + 1 < cap) {
            size_t c = (size_t)n < cap - 1 - got ? (size_t)n : cap - 1 - got;
            memcpy(body + got, tmp, c);
            got += c;
        }
    }
    body[got] = '\0';
    int st = 0;
    if (sscanf(body, "HTTP/1.%*d %d", &st) != 1)
        st = 0;
    return st;
}

/* One request on a new connection from src; the status, the raw reply in out. */
static int request_from(const char *src, const char *req, char *out, size_t cap)
{
    int fd = connect_from(src);
    send_all(fd, req, strlen(req));
    int st = read_reply(fd, out, cap, 10000);
    close(fd);
    return st;
}

TestSuite(limits, .fini = stop, .timeout = 180);

static const char healthz[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

struct slow {
    int fd;
    bool body;       /* trickles the body (headers complete), else the headers */
    uint64_t opened; /* ns */
    uint64_t cut;    /* ns, 0 while open */
};

Test(limits, slow_clients_are_cut_and_memory_stays_bounded)
{
    raise_nofile();
    start_plain("4s", "1200", "150");
    long before = rss_kib(srv.pid);

    static struct slow c[NSLOW];
    for (int i = 0; i < NSLOW; i++) {
        char src[32];
        snprintf(src, sizeof(src), "127.0.0.%d", 2 + i / SLOW_PER_ADDR);
        c[i] =
            (struct slow){.fd = connect_from(src), .body = i % 2 == 1, .opened = clock_mono_ns()};
        const char *head = c[i].body ? "POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Content-Length: 1000\r\n\r\n{"
                                     : "POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n";
        send_all(c[i].fd, head, strlen(head));
        fcntl(c[i].fd, F_SETFL, O_NONBLOCK);
    }
    /* All accepted by orchd (bounded wait), then its memory under them. */
    wait_accepted(NSLOW);
    long under = rss_kib(srv.pid);

    /* A normal request is answered meanwhile. */
    char reply[4096];
    uint64_t t0 = clock_mono_ns();
    cr_assert_eq(request_from("127.0.0.1", healthz, reply, sizeof(reply)), 200, "%s", reply);
    double healthz_ms = (double)(clock_mono_ns() - t0) / 1e6;

    /* Trickle a byte every 100 ms to each until orchd has cut them all (bounded). */
    static struct pollfd p[NSLOW];
    int open = NSLOW;
    uint64_t until = clock_mono_ns() + (DEADLINE_MS + 15000) * 1000000ull;
    while (open > 0 && clock_mono_ns() < until) {
        int n = 0;
        for (int i = 0; i < NSLOW; i++)
            if (!c[i].cut)
                p[n++] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
        poll(p, (nfds_t)n, 100);
        uint64_t now = clock_mono_ns();
        for (int i = 0; i < NSLOW; i++) {
            if (c[i].cut)
                continue;
            char b[256];
            ssize_t r = recv(c[i].fd, b, sizeof(b), 0);
            bool closed = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
            if (!closed && send(c[i].fd, c[i].body ? " " : "X", 1, MSG_NOSIGNAL) < 0 &&
                errno != EAGAIN)
                closed = true;
            cr_assert(r <= 0, "slow client %d got a reply instead of being cut: %.*s", i, (int)r,
                      b);
            if (closed) {
                c[i].cut = now;
                open--;
            }
        }
    }
    cr_assert_eq(open, 0, "%d of %d slow clients still open %d ms after the deadline", open, NSLOW,
                 DEADLINE_MS + 15000);
    double first_ms = 1e12, last_ms = 0;
    for (int i = 0; i < NSLOW; i++) {
        double held = (double)(c[i].cut - c[i].opened) / 1e6;
        first_ms = held < first_ms ? held : first_ms;
        last_ms = held > last_ms ? held : last_ms;
        close(c[i].fd);
    }
    /* Cut at the deadline, not before (the 100 ms poll rounds the measure up). */
    cr_assert_geq(first_ms, DEADLINE_MS - 200, "a slow client was cut after %.0f ms", first_ms);
    cr_assert_lt(last_ms, DEADLINE_MS + 5000, "a slow client was cut after %.0f ms", last_ms);

    /* The connections are gone from orchd (bounded wait), then its memory after them. */
    until = clock_mono_ns() + 10 * SEC;
    while (accepted(srv.pid, srv.port) > 0 && clock_mono_ns() < until)
        poll(NULL, 0, 20);
    cr_assert_eq(accepted(srv.pid, srv.port), 0);
    long after = rss_kib(srv.pid);
    cr_assert_eq(request_from("127.0.0.1", healthz, reply, sizeof(reply)), 200, "%s", reply);

    printf("limits: %d slow clients (half trickling headers, half a body), deadline %d ms: "
           "cut after %.0f..%.0f ms; /healthz meanwhile in %.1f ms\n",
           NSLOW, DEADLINE_MS, first_ms, last_ms, healthz_ms);
    printf("limits: orchd VmRSS before %.1f MiB, under %d slow clients %.1f MiB (+%.1f), "
           "after %.1f MiB; bound +%.1f MiB (%d KiB a connection)\n",
           before / 1024.0, NSLOW, under / 1024.0, (under - before) / 1024.0, after / 1024.0,
           NSLOW * RSS_PER_CONN_KIB / 1024.0, RSS_PER_CONN_KIB);
    fflush(stdout);
    cr_assert_lt(under - before, NSLOW * RSS_PER_CONN_KIB, "orchd grew %ld KiB under %d clients",
                 under - before, NSLOW);
}

Test(limits, oversized_body_is_refused_before_it_is_read)
{
    start_plain("10s", "1200", "150");
    enum { NBIG = 10, SENT = 256 * 1024 };
    static char chunk[SENT];
    memset(chunk, 'a', sizeof(chunk));
    long before = rss_kib(srv.pid);

    /* Ten 15 MiB uploads to the 4 KiB token exchange, unauthenticated: each announces its
     * length and sends a first 256 KiB; each gets a 413 and orchd reads no more of it. */
    int fds[NBIG];
    for (int i = 0; i < NBIG; i++) {
        fds[i] = connect_from("127.0.0.60");
        static const char head[] = "POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n"
                                   "Content-Type: application/json\r\n"
                                   "Content-Length: 15728640\r\n\r\n";
        send_all(fds[i], head, strlen(head));
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        send_all(fds[i], chunk, sizeof(chunk)); /* as much as the socket takes */
    }
    for (int i = 0; i < NBIG; i++) {
        fcntl(fds[i], F_SETFL, 0);
        char reply[4096];
        int st = read_reply(fds[i], reply, sizeof(reply), 10000);
        cr_assert_eq(st, 413, "upload %d: %s", i, reply);
        cr_assert(strstr(reply, "Connection: close"), "%s", reply);
        cr_assert(strstr(reply, "application/problem+json"), "%s", reply);
        cr_assert(strstr(reply, "the body is 15728640 bytes; this route accepts at most 4096"),
                  "%s", reply);
        close(fds[i]);
    }
    long after = rss_kib(srv.pid);
    printf("limits: %d x 15 MiB to /api/v1/auth/token: 413 each; VmRSS %.1f -> %.1f MiB "
           "(+%.1f)\n",
           NBIG, before / 1024.0, after / 1024.0, (after - before) / 1024.0);
    fflush(stdout);
    /* Before: each body was buffered whole (+12 MiB each). */
    cr_assert_lt(after - before, 8 * 1024, "orchd grew %ld KiB", after - before);

    /* A target in absolute form finds the same route, and the same limit. */
    static const char absolute[] = "POST http://t/api/v1/auth/token?x=1 HTTP/1.1\r\nHost: t\r\n"
                                   "Content-Type: application/json\r\n"
                                   "Content-Length: 15728640\r\n\r\n";
    char abs_reply[4096];
    int afd = connect_from("127.0.0.62");
    send_all(afd, absolute, strlen(absolute));
    cr_assert_eq(read_reply(afd, abs_reply, sizeof(abs_reply), 10000), 413, "%s", abs_reply);
    cr_assert(strstr(abs_reply, "this route accepts at most 4096"), "%s", abs_reply);
    close(afd);

    /* A chunked body is cut at the route's limit too. */
    char reply[4096];
    char req[8192];
    int n = snprintf(req, sizeof(req),
                     "POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "1400\r\n%.*s",
                     5120, chunk);
    cr_assert_lt(n, (int)sizeof(req));
    cr_assert_eq(request_from("127.0.0.61", req, reply, sizeof(reply)), 413, "%s", reply);

    /* Within the limit the route answers as before (a body it rejects for what it says). */
    static const char small[] = "POST /api/v1/auth/token HTTP/1.1\r\nHost: t\r\n"
                                "Content-Type: application/json\r\nContent-Length: 2\r\n"
                                "Connection: close\r\n\r\n{}";
    int st = request_from("127.0.0.61", small, reply, sizeof(reply));
    cr_assert(st == 422 || st == 401 || st == 400, "status %d: %s", st, reply);

    /* A route with a bigger limit still takes a body past 4 KiB (then wants a token). */
    static char big[200 * 1024];
    n = snprintf(big, sizeof(big),
                 "POST /api/v1/packages HTTP/1.1\r\nHost: t\r\nContent-Type: "
                 "application/gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                 100 * 1024);
    memset(big + n, 'z', 100 * 1024);
    big[n + 100 * 1024] = '\0';
    cr_assert_eq(request_from("127.0.0.61", big, reply, sizeof(reply)), 401, "%s", reply);
}

Test(limits, connection_caps_answer_429_and_503)
{
    raise_nofile();
    start_plain("20s", "40", "10");
    char reply[4096];
    int held[40], nheld = 0;

    /* Ten idle connections from one address fill its share; the eleventh gets 429. */
    for (int i = 0; i < 10; i++)
        held[nheld++] = connect_from("127.0.0.70");
    wait_accepted(10);
    int st = request_from("127.0.0.70", healthz, reply, sizeof(reply));
    cr_assert_eq(st, 429, "%s", reply);
    cr_assert(strstr(reply, "application/problem+json"), "%s", reply);
    cr_assert(strstr(reply, "Retry-After: 1"), "%s", reply);
    cr_assert(strstr(reply, "urn:orch:problem:rate-limited"), "%s", reply);
    /* Another address is still served. */
    cr_assert_eq(request_from("127.0.0.71", healthz, reply, sizeof(reply)), 200, "%s", reply);

    /* Thirty more from three other addresses reach the total; the next gets 503. */
    for (int a = 0; a < 3; a++) {
        char src[32];
        snprintf(src, sizeof(src), "127.0.0.%d", 72 + a);
        for (int i = 0; i < 10; i++)
            held[nheld++] = connect_from(src);
    }
    wait_accepted(40);
    st = request_from("127.0.0.80", healthz, reply, sizeof(reply));
    cr_assert_eq(st, 503, "%s", reply);
    cr_assert(strstr(reply, "Retry-After: 1"), "%s", reply);
    cr_assert(strstr(reply, "urn:orch:problem:unavailable"), "%s", reply);

    /* Closing them frees the places (bounded wait for orchd to see the closes). */
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    st = 0;
    uint64_t until = clock_mono_ns() + 10 * SEC;
    while (st != 200 && clock_mono_ns() < until)
        st = request_from("127.0.0.70", healthz, reply, sizeof(reply));
    cr_assert_eq(st, 200, "%s", reply);
}

Test(limits, tls_client_silent_before_its_handshake_is_cut)
{
    enum { TLS_DEADLINE_MS = 2000 };
    const char *env[] = {"ORCHD_HTTP_REQUEST_TIMEOUT=2s", NULL};
    th_server_start(&srv, env);
    enum { N = 20 };
    int fds[N];
    uint64_t opened = clock_mono_ns();
    for (int i = 0; i < N; i++)
        fds[i] = connect_from("127.0.0.90");
    /* Meanwhile an ordinary HTTPS request is answered. */
    struct th_resp r;
    th_http(&srv, "GET", "/healthz", NULL, NULL, NULL, &r);
    cr_assert_eq(r.status, 200);
    th_resp_free(&r);
    for (int i = 0; i < N; i++) {
        char b[64];
        int st = read_reply(fds[i], b, sizeof(b), TLS_DEADLINE_MS + 30000);
        cr_assert_eq(st, 0);
        close(fds[i]);
    }
    double held = (double)(clock_mono_ns() - opened) / 1e6;
    cr_assert_geq(held, TLS_DEADLINE_MS - 50);
    cr_assert_lt(held, TLS_DEADLINE_MS + 10000, "held %.0f ms", held);
}

Test(limits, held_reply_outlives_the_request_deadline)
{
    const char *env[] = {"ORCHD_HTTP_REQUEST_TIMEOUT=1s", NULL};
    th_server_start(&srv, env);
    char *op = th_token(&srv, srv.operator_token);
    char *tenant = th_tenant(&srv, op, "acme", "standard");
    char *admin = th_tenant_token(&srv, op, tenant, "admin");
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/enrollment-tokens", admin, "{\"name\":\"t\",\"max_uses\":1}",
            NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"token\":\"%s\",\"name\":\"a1\",\"os\":\"linux\",\"arch\":\"x86_64\","
             "\"labels\":{},\"slots\":1}",
             th_str_of(&r, "token"));
    th_resp_free(&r);
    th_http(&srv, "POST", "/api/v1/agents/register", NULL, body, NULL, &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    char *cred = strdup(th_str_of(&r, "credential"));
    th_resp_free(&r);

    /* The agents' long-poll holds its reply three times the request deadline. */
    uint64_t t0 = clock_mono_ns();
    th_http(&srv, "GET", "/api/v1/agent/assignments?wait=3", cred, NULL, NULL, &r);
    double held_ms = (double)(clock_mono_ns() - t0) / 1e6;
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(json_array_size(json_object_get(r.json, "assignments")), 0);
    cr_assert_geq(held_ms, 2900, "answered after %.0f ms", held_ms);
    th_resp_free(&r);
    free(cred);
    free(admin);
    free(tenant);
    free(op);
}

Test(limits, kept_alive_connection_may_idle_past_the_request_deadline)
{
    start_plain("1s", "100", "100");
    static const char again[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    int fd = connect_from("127.0.0.1");
    char reply[4096];
    for (int i = 0; i < 2; i++) {
        send_all(fd, again, strlen(again));
        char *p = reply;
        size_t got = 0;
        /* One reply (Content-Length 15): read until its body is in. */
        while (!(p = strstr(reply, "\r\n\r\n")) || strlen(p + 4) < 15) {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            cr_assert_eq(poll(&pf, 1, 5000), 1, "no reply to request %d", i);
            ssize_t n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
            cr_assert_gt(n, 0, "connection closed before reply %d", i);
            got += (size_t)n;
            reply[got] = '\0';
        }
        cr_assert(strncmp(reply, "HTTP/1.1 200", 12) == 0, "%s", reply);
        memset(reply, 0, sizeof(reply));
        /* Idle twice the request deadline: the connection stays open (http.timeout). */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (i == 0)
            cr_assert_eq(poll(&pf, 1, 2000), 0, "the idle connection was closed");
    }
    close(fd);
}
