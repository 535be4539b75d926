/* test-transport.c: the transport's portable helpers (transport-common.c) that the WinHTTP
 * transport relies on: Retry-After and NO_PROXY read as libcurl reads them. */
#include <criterion/criterion.h>

#include "agent/transport-impl.h"

/* 1994-11-06 08:49:37 UTC */
#define T_1994 784111777

Test(transport, retry_after_reads_seconds)
{
    cr_assert_eq(transport_retry_after("7", T_1994), 7);
    cr_assert_eq(transport_retry_after(" 120 ", T_1994), 120);
    cr_assert_eq(transport_retry_after("0", T_1994), 0);
    cr_assert_eq(transport_retry_after("-3", T_1994), 0);
    cr_assert_eq(transport_retry_after("7s", T_1994), 0);
    cr_assert_eq(transport_retry_after("", T_1994), 0);
    cr_assert_eq(transport_retry_after(NULL, T_1994), 0);
}

Test(transport, retry_after_reads_an_http_date)
{
    cr_assert_eq(transport_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", T_1994), 30);
    cr_assert_eq(transport_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", T_1994), 0);
    cr_assert_eq(transport_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", T_1994), 0, "the past");
    cr_assert_eq(transport_retry_after("Thu, 01 Mar 2096 00:00:00 GMT", 3981398400 - 86400), 86400,
                 "across a leap day");
    cr_assert_eq(transport_retry_after("Sun, 06 Foo 1994 08:50:07 GMT", T_1994), 0);
    cr_assert_eq(transport_retry_after("Sun, 06 Nov 1994 08:50:07", T_1994), 0);
    cr_assert_eq(transport_retry_after("Sun, 06 Nov 1994 25:50:07 GMT", T_1994), 0);
}

Test(transport, no_proxy_follows_libcurl)
{
    cr_assert(transport_no_proxy("*", "orch.example.com"));
    cr_assert(transport_no_proxy("example.com", "example.com"));
    cr_assert(transport_no_proxy("example.com", "orch.example.com"));
    cr_assert(transport_no_proxy(".example.com", "orch.example.com"));
    cr_assert(transport_no_proxy(".example.com", "example.com"));
    cr_assert(transport_no_proxy("localhost, .internal", "ORCH.INTERNAL"));
    cr_assert(transport_no_proxy("a.test,b.test", "b.test"));
    cr_assert(!transport_no_proxy("example.com", "badexample.com"));
    cr_assert(!transport_no_proxy("orch.example.com", "example.com"));
    cr_assert(!transport_no_proxy("", "example.com"));
    cr_assert(!transport_no_proxy(NULL, "example.com"));
    cr_assert(transport_no_proxy("10.0.0.0/8", "10.1.2.3"));
    cr_assert(!transport_no_proxy("10.0.0.0/8", "11.1.2.3"));
    cr_assert(transport_no_proxy("192.168.1.7", "192.168.1.7"));
    cr_assert(!transport_no_proxy("192.168.1.7", "192.168.1.8"));
    cr_assert(transport_no_proxy("0.0.0.0/0", "127.0.0.1"));
    cr_assert(!transport_no_proxy("10.0.0.0/33", "10.0.0.1"));
}
