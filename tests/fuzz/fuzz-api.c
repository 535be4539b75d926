/* fuzz-api.c: libFuzzer target for what a request's bytes reach before any handler runs:
 * URI parsing and route matching, query strings, JSON bodies (bounded parse and table
 * validation), bearer tokens (the JWT verification wrapper), the key formats, and schedules'
 * cron expressions with their next firings.
 *
 * The first input byte picks the surface; the rest is the data. Built with clang
 * (-Dfuzz=enabled), run for a bounded time by tools/test.sh. */
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/jsonv.h"
#include "server/api.h"
#include "server/auth-jwt.h"
#include "server/auth-keys.h"
#include "server/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct jwt_ring *ring;

static void init_ring(void)
{
    char dir[] = "/tmp/orch-fuzz-keys-XXXXXX";
    char kid[64], err[256];
    if (!mkdtemp(dir) || jwt_keygen(dir, kid, sizeof(kid), err, sizeof(err)) < 0 ||
        jwt_ring_load(dir, &ring, err, sizeof(err)) < 0)
        abort();
}

static const struct jsonv_field queue_fields[] = {
    {"name", JSONV_STRING, JSONV_REQUIRED, 1, 64},
    {"default_priority", JSONV_INT, 0, -100, 100},
    {"requirements", JSONV_OBJECT, 0, 0, 32},
    {"paused", JSONV_BOOL, JSONV_NULLABLE, 0, 0},
    {"expires_at", JSONV_TIME, 0, 0, 0},
    {"id", JSONV_UUID, 0, 0, 0},
    {"ratio", JSONV_NUMBER, 0, 0, 1},
    {"tags", JSONV_ARRAY, 0, 0, 8},
    {"any", JSONV_ANY, 0, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 5;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *s = malloc(len + 1);
    if (!s)
        return 0;
    memcpy(s, in, len);
    s[len] = '\0';

    switch (which) {
    case 0: { /* request target: URI, route, query */
        struct evhttp_uri *uri = evhttp_uri_parse_with_flags(s, EVHTTP_URI_NONCONFORMANT);
        const char *path = uri ? evhttp_uri_get_path(uri) : s;
        struct http_match m;
        for (int meth = 0; meth < 7; meth++)
            http_route_find(api_routes, api_nroutes, (enum http_method)(1 << meth), path, &m);
        const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
        if (q) {
            struct evkeyvalq h;
            TAILQ_INIT(&h);
            if (evhttp_parse_query_str(q, &h) == 0)
                evhttp_clear_headers(&h);
        }
        if (uri)
            evhttp_uri_free(uri);
        break;
    }
    case 1: { /* JSON body */
        json_t *doc = NULL;
        struct jsonv_error err;
        if (jsonv_parse(in, len, JSONV_MAX_DEPTH_DEFAULT, &doc, &err) == 0) {
            if (json_is_object(doc))
                jsonv_check(doc, queue_fields, sizeof(queue_fields) / sizeof(queue_fields[0]),
                            false, &err);
            json_decref(doc);
        }
        break;
    }
    case 2: { /* bearer token */
        if (!ring)
            init_ring();
        struct jwt_params p = {
            .issuer = "orch", .audience = "orch-api", .ttl_s = 900, .leeway_s = 30};
        struct jwt_claims c;
        const char *why = NULL;
        jwt_verify(ring, &p, in, len, 1795000000, &c, &why);
        break;
    }
    case 3: { /* API key and operator token formats */
        char prefix[AUTHKEY_PREFIX_LEN + 1], hash[65];
        authkey_parse(AUTHKEY_API, in, len, prefix, hash);
        authkey_parse(AUTHKEY_OPERATOR, in, len, prefix, hash);
        authkey_hash_matches("00", s);
        break;
    }
    case 4: { /* a schedule's cron expression, and its next firings across DST changes */
        struct cron c;
        const struct cron_tz *z;
        char err[256];
        int64_t next[8];
        if (cron_parse(s, &c, err, sizeof(err)) == 0 &&
            cron_tz_get(len % 2 ? "Europe/Berlin" : "Australia/Lord_Howe", &z, err, sizeof(err)) ==
                0)
            cron_next_n(&c, z, 1774000000 + (int64_t)len * 86400 * 7, 8, next);
        break;
    }
    }
    free(s);
    return 0;
}
