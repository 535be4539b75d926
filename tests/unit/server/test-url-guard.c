/* Tests for server/url-guard.c: the URL grammar, every refused address range and the forms
 * an address hides in, and the whole check with names that resolve without a network. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "server/url-guard.h"

static bool blocked(const char *ip)
{
    struct sockaddr_storage ss = {0};
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1, "bad test address %s", ip);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1, "bad test address %s", ip);
    }
    const char *why = NULL;
    bool b = url_guard_addr_blocked((struct sockaddr *)&ss, &why);
    if (b)
        cr_assert(why && *why, "%s blocked without a reason", ip);
    return b;
}

Test(url_guard, refuses_every_special_ipv4_range)
{
    static const char *const bad[] = {
        "0.0.0.0",         "0.255.255.255",  "10.0.0.1",        "10.255.255.255",  "100.64.0.1",
        "100.127.255.254", "127.0.0.1",      "127.255.255.254", "169.254.169.254", "172.16.0.1",
        "172.31.255.255",  "192.0.0.8",      "192.0.2.1",       "192.88.99.1",     "192.168.1.1",
        "198.18.0.1",      "198.19.255.255", "198.51.100.7",    "203.0.113.9",     "224.0.0.1",
        "239.255.255.250", "240.0.0.1",      "255.255.255.255",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(blocked(bad[i]), "%s should be refused", bad[i]);
}

Test(url_guard, allows_public_ipv4_next_to_the_ranges)
{
    static const char *const good[] = {
        "1.1.1.1",     "8.8.8.8",         "9.255.255.255",   "11.0.0.0",        "100.63.255.255",
        "100.128.0.0", "126.255.255.255", "128.0.0.1",       "169.253.255.255", "172.15.255.255",
        "172.32.0.0",  "192.0.1.1",       "192.167.255.255", "192.169.0.0",     "198.17.255.255",
        "198.20.0.0",  "223.255.255.255",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(!blocked(good[i]), "%s should be allowed", good[i]);
}

Test(url_guard, refuses_every_special_ipv6_range_and_embedded_ipv4)
{
    static const char *const bad[] = {
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "100::1",
        "2001:db8::1",
        "2001::1",
        "2001:0:4136:e378::1",
        "3fff::1",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
        "2002:a00:1::",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(blocked(bad[i]), "%s should be refused", bad[i]);
}

Test(url_guard, allows_public_ipv6)
{
    static const char *const good[] = {
        "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2001:4860:4860::8888",
        "::ffff:8.8.8.8",       "64:ff9b::808:808",         "2002:808:808::1",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(!blocked(good[i]), "%s should be allowed", good[i]);
}

static int parse(const char *url, struct url_guard_url *u)
{
    char why[160] = "";
    int r = url_guard_parse(url, u, why, sizeof(why));
    if (r < 0)
        cr_assert(why[0], "%s refused without a reason", url);
    return r;
}

Test(url_guard, parses_https_urls)
{
    struct url_guard_url u;
    cr_assert_eq(parse("https://Hooks.Example.com/orch?x=1", &u), 0);
    cr_expect_str_eq(u.host, "hooks.example.com");
    cr_expect_eq(u.port, 443);
    cr_assert_eq(parse("HTTPS://example.com:8443", &u), 0);
    cr_expect_eq(u.port, 8443);
    cr_assert_eq(parse("https://[2606:4700::1]:9000/p", &u), 0);
    cr_expect_str_eq(u.host, "2606:4700::1");
    cr_expect(u.host_is_ip6);
    cr_expect_eq(u.port, 9000);
    cr_assert_eq(parse("https://93.184.216.34/", &u), 0);
    cr_expect_str_eq(u.host, "93.184.216.34");
}

Test(url_guard, refuses_bad_urls)
{
    static const char *const bad[] = {
        "http://example.com/",
        "ftp://example.com/",
        "https:/example.com",
        "https://",
        "https:///path",
        "https://user@example.com/",
        "https://u:p@example.com/",
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://example.com:/",
        "https://example.com:8x/",
        "https://example.com/#frag",
        "https://exa mple.com/",
        "https://example.com\\@evil/",
        "https://ex_ample.com/",
        "https://-example.com/",
        "https://example..com/",
        "https://example.com./",
        "https://[::1/",
        "https://[::1]x/",
        "https://[fe80::1%25eth0]/",
        "https://[not-v6]/",
        "https://example.com/\x01",
        "https://ex\xc3\xa4mple.com/",
        /* IPv4 in the forms resolvers accept besides a.b.c.d */
        "https://0x7f.1/",
        "https://2130706433/",
        "https://127.1/",
        "https://0177.0.0.1/",
        "https://0x7f000001/",
        "https://127.0.0.01/",
        "https://1.2.3.4.5/",
    };
    struct url_guard_url u;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(parse(bad[i], &u), -EINVAL, "%s should be refused", bad[i]);
}

Test(url_guard, caps_the_length)
{
    char url[URL_GUARD_URL_MAX + 2];
    memcpy(url, "https://a.example/", 18);
    memset(url + 18, 'p', sizeof(url) - 19);
    url[sizeof(url) - 1] = '\0';
    struct url_guard_url u;
    cr_expect_eq(parse(url, &u), -EINVAL);
    url[URL_GUARD_URL_MAX] = '\0';
    cr_expect_eq(parse(url, &u), 0);
}

static int check(const char *url, bool allow, char *addr, char *why)
{
    struct url_guard_url u;
    return url_guard_check(url, allow, &u, addr, why, 160);
}

Test(url_guard, check_refuses_loopback_unless_allowed)
{
    char addr[URL_GUARD_ADDR_STR], why[160];
    static const char *const bad[] = {
        "https://127.0.0.1:8443/hook",
        "https://localhost/hook",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://0.0.0.0/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(check(bad[i], false, addr, why), -EACCES, "%s should be refused", bad[i]);
        cr_expect(strstr(why, "may not reach"), "%s: %s", bad[i], why);
    }
    cr_assert_eq(check("https://127.0.0.1:8443/hook", true, addr, why), 0, "%s", why);
    cr_expect_str_eq(addr, "127.0.0.1");
    cr_assert_eq(check("https://[::ffff:127.0.0.1]/", true, addr, why), 0, "%s", why);
    cr_expect_str_eq(addr, "::ffff:127.0.0.1");
    /* A public literal needs no resolver. */
    cr_assert_eq(check("https://93.184.216.34/", false, addr, why), 0, "%s", why);
    cr_expect_str_eq(addr, "93.184.216.34");
}
