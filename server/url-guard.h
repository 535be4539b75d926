/* url-guard.h: the check a URL a tenant gives us (a webhook's) must pass before orchd
 * fetches it, against server-side request forgery.
 *
 * A URL is accepted only as https://host[:port][/path][?query]: no userinfo, no fragment,
 * a host that is a DNS name of letters, digits, '-' and '.', a dotted-quad IPv4 address in
 * its one standard form, or a bracketed IPv6 address without a zone. IPv4 in the other
 * forms that resolvers accept ("0x7f.1", "2130706433", "127.1", "0177.0.0.1") is refused
 * outright rather than normalised, because two parsers that disagree about an address are
 * the usual way past a check like this one.
 *
 * The host is then resolved and refused when ANY of its addresses is not a public unicast
 * address (url_guard_addr_blocked()), unless the operator allows private addresses. The
 * caller connects to the address this check returns (libcurl CURLOPT_RESOLVE), never
 * resolves the name again, and follows no redirect: a DNS answer that changes between the
 * check and the connection (rebinding) then cannot take the request anywhere else. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest URL accepted (bytes, without the NUL). */
#define URL_GUARD_URL_MAX  2048
#define URL_GUARD_HOST_MAX 253
/* "ffff:ffff:...:255.255.255.255" and the NUL. */
#define URL_GUARD_ADDR_STR 46

/* A URL taken apart. host is lower-cased and without brackets. */
struct url_guard_url {
    char host[URL_GUARD_HOST_MAX + 1];
    bool host_is_ip6; /* it was a bracketed literal */
    uint16_t port;    /* 443 when the URL names none */
};

/* Parse url. Returns 0 with *ret filled, or -EINVAL with why (a short English reason,
 * e.g. "the scheme must be https") written to why; *ret is then unspecified. */
int url_guard_parse(const char *url, struct url_guard_url *ret, char *why, size_t whylen);

/* Whether sa (AF_INET or AF_INET6) is an address a tenant's URL may not reach: this
 * network (0/8), loopback, RFC 1918, CGNAT (100.64/10), link-local, IETF protocol and
 * documentation ranges, benchmarking (198.18/15), multicast, reserved and broadcast;
 * for IPv6 the unspecified and loopback addresses, ULA (fc00::/7), link- and site-local,
 * multicast, documentation, discard, and the forms that carry an IPv4 address
 * (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16), judged by the IPv4
 * address they carry; Teredo and the rest of 2001::/23 are refused. When blocked and
 * why is not NULL, *why names the range (static string). */
bool url_guard_addr_blocked(const struct sockaddr *sa, const char **why);

/* The whole check: parse, resolve (getaddrinfo, blocking) and judge every address.
 * allow_private: the operator's webhooks.allow_private (skip the address judgement).
 * On success fills *ret and addr with the first address (numeric, for CURLOPT_RESOLVE) and
 * returns 0. Returns -EINVAL (bad URL), -EACCES (a refused address), -ENOENT (the name does
 * not resolve), with why filled in every case. */
int url_guard_check(const char *url, bool allow_private, struct url_guard_url *ret,
                    char addr[URL_GUARD_ADDR_STR], char *why, size_t whylen);
