/* Tests for http_req_id_choose() (server/http-server.c): which X-Request-Id values a
 * request keeps as its id, and that the rest get a generated one. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/id.h"
#include "server/http.h"

Test(http_reqid, safe_value_taken)
{
    char out[HTTP_REQ_ID_MAX + 1];

    cr_assert(http_req_id_choose("trace-0001_a.b:c", out));
    cr_assert_str_eq(out, "trace-0001_a.b:c");
    cr_assert(http_req_id_choose("01a201d8-3404-72ec-a98d-71e503698aad", out));
    cr_assert_str_eq(out, "01a201d8-3404-72ec-a98d-71e503698aad");
}

/* An over-long id is cut to HTTP_REQ_ID_MAX characters, not refused. */
Test(http_reqid, long_value_cut)
{
    char in[300], out[HTTP_REQ_ID_MAX + 1];

    memset(in, 'a', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    in[0] = 'Z';
    cr_assert(http_req_id_choose(in, out));
    cr_assert_eq(strlen(out), HTTP_REQ_ID_MAX);
    cr_assert_eq(memcmp(out, in, HTTP_REQ_ID_MAX), 0);
}

/* A value with a character that would need quoting in a log line or could split a header
 * (a space, a quote, =, a control, non-ASCII), or none at all, gets a fresh UUIDv7. */
Test(http_reqid, unsafe_value_replaced)
{
    static const char *const bad[] = {
        "",          "two words",   "quote\"d", "k=v",     "semi;colon", "line\nbreak",
        "tab\there", "caf\xc3\xa9", "ctl\x01",  "back\\s", "slash/es",
    };
    char out[HTTP_REQ_ID_MAX + 1];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_not(http_req_id_choose(bad[i], out), "taken: %s", bad[i]);
        cr_assert(id_is_valid(out), "not a UUID for %s: %s", bad[i], out);
    }
    cr_assert_not(http_req_id_choose(NULL, out));
    cr_assert(id_is_valid(out));
    char first[HTTP_REQ_ID_MAX + 1];
    memcpy(first, out, sizeof(first));
    http_req_id_choose(NULL, out);
    cr_assert_str_neq(first, out, "each request gets its own id");
}

/* A bad character past the cut still refuses the value. */
Test(http_reqid, bad_past_cut_refused)
{
    char in[200], out[HTTP_REQ_ID_MAX + 1];

    memset(in, 'b', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    in[150] = ' ';
    cr_assert_not(http_req_id_choose(in, out));
    cr_assert(id_is_valid(out));
}
