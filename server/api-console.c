/* api-console.c: the admin console's files (console-assets.h), served under /console/
 * without authentication: the page holds no data, it asks the REST API for it with the
 * token its user signs in for (docs/console.md).
 *
 * Every reply carries a Content-Security-Policy that allows scripts, styles and fetches
 * from this origin only, no inline script or style and no framing: the bundle needs
 * nothing else, so a script injected into a page (a job's name, a log line) cannot run. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "server/api.h"
#include "server/console-assets.h"

#define CONSOLE_CSP                                                                                \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "                 \
    "frame-ancestors 'none'"

static const struct console_asset *asset_find(const char *name)
{
    for (size_t i = 0; i < console_nassets; i++)
        if (strcmp(console_assets[i].name, name) == 0)
            return &console_assets[i];
    return NULL;
}

/* Whether the If-None-Match value names etag (or is "*"). A weak validator (W/"…") of
 * the same hash matches too: a proxy that recompressed the reply may have weakened it. */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t elen = strlen(etag);
    const char *p = inm;
    while (*p) {
        p += strspn(p, " \t,");
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, elen) == 0 && (p[elen] == '\0' || strchr(" \t,", p[elen])))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

/* Whether Accept-Encoding allows gzip: a "gzip" (or "*") member without q=0. */
static bool accepts_gzip(const char *ae)
{
    if (!ae)
        return false;
    const char *p = ae;
    while (*p) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,;");
        bool named = (n == 4 && strncasecmp(p, "gzip", 4) == 0) || (n == 1 && *p == '*');
        const char *end = p + strcspn(p, ",");
        const char *q = memchr(p, ';', (size_t)(end - p));
        bool zero = false;
        if (q) {
            q++;
            q += strspn(q, " \t");
            if (strncasecmp(q, "q=", 2) == 0) {
                q += 2;
                zero = q[0] == '0' &&
                       (q + 1 == end || q[1] != '.' || strspn(q + 2, "0") == (size_t)(end - q - 2));
            }
        }
        if (named)
            return !zero;
        p = end;
    }
    return false;
}

static void no_release(void *arg)
{
    (void)arg;
}

static void serve(struct http_req *req, const char *name)
{
    http_reply_header(req, "Content-Security-Policy", CONSOLE_CSP);
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    http_reply_header(req, "Referrer-Policy", "no-referrer");
    const struct console_asset *a = name ? asset_find(name) : NULL;
    if (!a) {
        http_reply_problem(req, PROBLEM_NOT_FOUND,
                           console_nassets ? "no such file of the console"
                                           : "this orchd was built without the console",
                           NULL);
        return;
    }
    http_reply_header(req, "ETag", a->etag);
    http_reply_header(req, "Vary", "Accept-Encoding");
    http_reply_header(req, "Cache-Control",
                      a->immutable ? "public, max-age=31536000, immutable" : "no-cache");
    if (etag_matches(http_req_header(req, "If-None-Match"), a->etag)) {
        http_reply_bytes(req, 304, NULL, NULL, 0);
        return;
    }
    if (a->gz && accepts_gzip(http_req_header(req, "Accept-Encoding"))) {
        http_reply_header(req, "Content-Encoding", "gzip");
        http_reply_ref(req, 200, a->ctype, a->gz, a->gz_len, no_release, NULL);
        return;
    }
    http_reply_ref(req, 200, a->ctype, a->data, a->len, no_release, NULL);
}

void api_console_root(struct http_req *req)
{
    /* "/console" → "/console/": the page's relative asset names resolve under it. */
    http_reply_header(req, "Location", "/console/");
    http_reply_bytes(req, 301, NULL, NULL, 0);
}

void api_console_index(struct http_req *req)
{
    serve(req, "index.html");
}

void api_console_asset(struct http_req *req)
{
    /* Looked up by name in the table: "..", "%2f" or anything else not in it is a 404,
     * never a path on the disk. */
    serve(req, http_req_param(req, "asset"));
}
