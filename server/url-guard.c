/* url-guard.c: see url-guard.h. Pure C but for getaddrinfo(); the ranges are tables. */
#include "server/url-guard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"

#define WHY(...) ((void)(why && whylen ? snprintf(why, whylen, __VA_ARGS__) : 0))

struct v4_range {
    uint32_t net;
    unsigned prefix;
    const char *why;
};

/* IANA's IPv4 special-purpose registry, less what is globally reachable on purpose. */
static const struct v4_range v4_blocked[] = {
    {0x00000000, 8, "\"this network\" (0.0.0.0/8)"},
    {0x0a000000, 8, "private (10.0.0.0/8)"},
    {0x64400000, 10, "shared address space (100.64.0.0/10)"},
    {0x7f000000, 8, "loopback (127.0.0.0/8)"},
    {0xa9fe0000, 16, "link-local (169.254.0.0/16)"},
    {0xac100000, 12, "private (172.16.0.0/12)"},
    {0xc0000000, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {0xc0000200, 24, "documentation (192.0.2.0/24)"},
    {0xc0586300, 24, "6to4 relay anycast (192.88.99.0/24)"},
    {0xc0a80000, 16, "private (192.168.0.0/16)"},
    {0xc6120000, 15, "benchmarking (198.18.0.0/15)"},
    {0xc6336400, 24, "documentation (198.51.100.0/24)"},
    {0xcb007100, 24, "documentation (203.0.113.0/24)"},
    {0xe0000000, 4, "multicast (224.0.0.0/4)"},
    {0xf0000000, 4, "reserved (240.0.0.0/4, with broadcast)"},
};

static bool v4_blocked_why(uint32_t a, const char **why)
{
    for (size_t i = 0; i < sizeof(v4_blocked) / sizeof(v4_blocked[0]); i++) {
        uint32_t mask = v4_blocked[i].prefix ? ~0u << (32 - v4_blocked[i].prefix) : 0;
        if ((a & mask) == v4_blocked[i].net) {
            if (why)
                *why = v4_blocked[i].why;
            return true;
        }
    }
    return false;
}

static uint32_t be32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct v6_range {
    uint8_t net[16];
    unsigned prefix;
    const char *why;
};

/* IPv6 ranges refused whole. The forms that embed an IPv4 address are handled apart. */
static const struct v6_range v6_blocked[] = {
    {{0}, 128, "unspecified (::)"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback (::1)"},
    {{0x01, 0x00}, 64, "discard (100::/64)"},
    {{0x20, 0x01, 0x00, 0x00}, 23, "IETF protocol assignments and Teredo (2001::/23)"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation (2001:db8::/32)"},
    {{0x3f, 0xff}, 20, "documentation (3fff::/20)"},
    {{0xfc}, 7, "unique local (fc00::/7)"},
    {{0xfe, 0x80}, 10, "link-local (fe80::/10)"},
    {{0xfe, 0xc0}, 10, "site-local (fec0::/10)"},
    {{0xff}, 8, "multicast (ff00::/8)"},
};

static bool v6_in(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

bool url_guard_addr_blocked(const struct sockaddr *sa, const char **why)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t compat[12] = {0};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    if (sa->sa_family == AF_INET)
        return v4_blocked_why(
            ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr), why);
    if (sa->sa_family != AF_INET6) {
        if (why)
            *why = "not an IP address";
        return true;
    }
    const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    for (size_t i = 0; i < sizeof(v6_blocked) / sizeof(v6_blocked[0]); i++) {
        if (v6_in(a, v6_blocked[i].net, v6_blocked[i].prefix)) {
            if (why)
                *why = v6_blocked[i].why;
            return true;
        }
    }
    /* Whoever routes these forms reaches the IPv4 address inside; judge that one. */
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, compat, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return v4_blocked_why(be32_at(a + 12), why);
    if (a[0] == 0x20 && a[1] == 0x02)
        return v4_blocked_why(be32_at(a + 2), why);
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A DNS name: labels of 1 to 63 letters, digits and '-', not starting or ending with '-';
 * the last label not all digits nor hex (that would be an IPv4 address in another form). */
static int check_hostname(const char *h, char *why, size_t whylen)
{
    size_t n = strlen(h);
    if (n == 0 || n > URL_GUARD_HOST_MAX) {
        WHY("the host must be 1 to %d characters", URL_GUARD_HOST_MAX);
        return -EINVAL;
    }
    const char *label = h;
    for (;;) {
        size_t len = strcspn(label, ".");
        if (len == 0 || len > 63 || label[0] == '-' || label[len - 1] == '-') {
            WHY("the host is not a valid DNS name");
            return -EINVAL;
        }
        for (size_t i = 0; i < len; i++) {
            char c = label[i];
            if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '-')) {
                WHY("the host is not a valid DNS name");
                return -EINVAL;
            }
        }
        if (label[len] == '\0') {
            bool numeric = true;
            for (size_t i = 0; i < len; i++)
                numeric = numeric && is_digit(label[i]);
            if (numeric || (len >= 2 && label[0] == '0' && label[1] == 'x')) {
                WHY("an IPv4 address must be written as four decimal numbers (a.b.c.d)");
                return -EINVAL;
            }
            return 0;
        }
        label += len + 1;
    }
}

int url_guard_parse(const char *url, struct url_guard_url *ret, char *why, size_t whylen)
{
    static const char scheme[] = "https://";
    size_t n = strlen(url);
    if (n > URL_GUARD_URL_MAX) {
        WHY("the URL is longer than %d bytes", URL_GUARD_URL_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\') {
            WHY("the URL holds a space, a control or non-ASCII character or a backslash");
            return -EINVAL;
        }
    }
    if (n < sizeof(scheme) - 1 || strncasecmp(url, scheme, sizeof(scheme) - 1) != 0) {
        WHY("the scheme must be https");
        return -EINVAL;
    }
    if (strchr(url, '#')) {
        WHY("the URL must not have a fragment");
        return -EINVAL;
    }
    const char *auth = url + sizeof(scheme) - 1;
    size_t alen = strcspn(auth, "/?");
    if (memchr(auth, '@', alen)) {
        WHY("the URL must not hold a user name or password");
        return -EINVAL;
    }
    memset(ret, 0, sizeof(*ret));
    ret->port = 443;
    const char *port = NULL;
    size_t hlen;
    const char *host;
    if (alen > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close) {
            WHY("the host's IPv6 address lacks its ']'");
            return -EINVAL;
        }
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':') {
                WHY("the host's IPv6 address is followed by something other than a port");
                return -EINVAL;
            }
            port = close + 2;
        }
        ret->host_is_ip6 = true;
    } else {
        host = auth;
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0 || hlen > URL_GUARD_HOST_MAX) {
        WHY("the URL must name a host of at most %d characters", URL_GUARD_HOST_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < hlen; i++) {
        char c = host[i];
        ret->host[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    ret->host[hlen] = '\0';
    if (port) {
        size_t plen = (size_t)(auth + alen - port);
        unsigned long v = 0;
        if (plen == 0 || plen > 5) {
            WHY("the port must be a number from 1 to 65535");
            return -EINVAL;
        }
        for (size_t i = 0; i < plen; i++) {
            if (!is_digit(port[i])) {
                WHY("the port must be a number from 1 to 65535");
                return -EINVAL;
            }
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v < 1 || v > 65535) {
            WHY("the port must be a number from 1 to 65535");
            return -EINVAL;
        }
        ret->port = (uint16_t)v;
    }
    if (ret->host_is_ip6) {
        struct in6_addr a6;
        if (strchr(ret->host, '%') || inet_pton(AF_INET6, ret->host, &a6) != 1) {
            WHY("the host's IPv6 address is not valid (zones are not allowed)");
            return -EINVAL;
        }
        return 0;
    }
    struct in_addr a4;
    if (inet_pton(AF_INET, ret->host, &a4) == 1)
        return 0;
    return check_hostname(ret->host, why, whylen);
}

static void addrinfo_freep(struct addrinfo **p)
{
    if (*p)
        freeaddrinfo(*p);
}

int url_guard_check(const char *url, bool allow_private, struct url_guard_url *ret,
                    char addr[URL_GUARD_ADDR_STR], char *why, size_t whylen)
{
    int r = url_guard_parse(url, ret, why, whylen);
    if (r < 0)
        return r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    _cleanup_(addrinfo_freep) struct addrinfo *res = NULL;
    int g = getaddrinfo(ret->host, NULL, &hints, &res);
    if (g != 0 || !res) {
        WHY("the host does not resolve");
        return -ENOENT;
    }
    /* Every address, not the first: a client may try any of them. */
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        const char *range = NULL;
        if (!allow_private && url_guard_addr_blocked(ai->ai_addr, &range)) {
            WHY("the host resolves to a %s address, which webhooks may not reach", range);
            return -EACCES;
        }
    }
    const void *src = res->ai_family == AF_INET
                          ? (const void *)&((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr
                          : (const void *)&((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr;
    if (!inet_ntop(res->ai_family, src, addr, URL_GUARD_ADDR_STR)) {
        WHY("the host's address cannot be written");
        return -EINVAL;
    }
    return 0;
}
