/* transport-common.c: the transport's portable part (see transport.h): JSON bodies, the
 * problem's detail on an error status, the byte-fetch limits, on top of the one exchange each
 * implementation provides (transport-impl.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/transport-impl.h"
#include "common/buf.h"
#include "common/cleanup.h"

/* Each exchange has its own id; without randomness it goes without one ("-" in the log). */
static void request_id_new(struct transport_reply *r)
{
    if (id_uuid7_str(r->request_id) < 0)
        r->request_id[0] = '\0';
}

int transport_request(struct transport *t, const char *method, const char *path, const json_t *body,
                      struct transport_reply *r)
{
    return transport_request_ex(t, method, path, body, 0, NULL, NULL, r);
}

int transport_request_ex(struct transport *t, const char *method, const char *path,
                         const json_t *body, int64_t timeout_ms, bool (*abort)(void *arg),
                         void *arg, struct transport_reply *r)
{
    memset(r, 0, sizeof(*r));
    request_id_new(r);
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct buf reply = BUF_INIT;
    buf_init_max(&reply, TRANSPORT_MAX_REPLY);
    int rc = transport_exchange(t, method, path, text, "application/json", NULL, timeout_ms, abort,
                                arg, &reply, r);
    if (rc < 0) {
        buf_free(&reply);
        return rc;
    }
    if (reply.len > 0) {
        json_error_t e;
        r->body = json_loadb(reply.data, reply.len, 0, &e);
    }
    buf_free(&reply);
    if (r->status >= 400) {
        const char *detail = json_string_value(json_object_get(r->body, "detail"));
        snprintf(r->error, sizeof(r->error), "%s", detail ? detail : "the server refused");
    }
    return 0;
}

/* GET path as bytes with the header lines extra (NULL: none); ok: the status that brings
 * the bytes (200, or 206 for a range). */
static int get_bytes(struct transport *t, const char *path, const char *extra, size_t max,
                     struct buf *out, struct transport_reply *r)
{
    memset(r, 0, sizeof(*r));
    request_id_new(r);
    buf_init_max(out, max);
    int rc = transport_exchange(t, "GET", path, NULL, "application/octet-stream", extra, 0, NULL,
                                NULL, out, r);
    if (rc < 0) {
        buf_free(out);
        return rc;
    }
    if (r->status != 200 && (!extra || r->status != 206)) {
        json_t *p = json_loadb(out->data ? out->data : "", out->len, 0, NULL);
        const char *detail = json_string_value(json_object_get(p, "detail"));
        snprintf(r->error, sizeof(r->error), "%s",
                 detail             ? detail
                 : r->status >= 400 ? "the server refused"
                                    : "unexpected answer");
        json_decref(p);
        buf_free(out);
    }
    return 0;
}

int transport_get_bytes(struct transport *t, const char *path, size_t max, struct buf *out,
                        struct transport_reply *r)
{
    return get_bytes(t, path, NULL, max, out, r);
}

int transport_get_range(struct transport *t, const char *path, uint64_t off, size_t max,
                        const char *etag, struct buf *out, struct transport_reply *r)
{
    char extra[192];
    snprintf(extra, sizeof(extra), "Range: bytes=%llu-%llu\r\n%s%s%s", (unsigned long long)off,
             (unsigned long long)(off + max - 1), etag ? "If-Range: " : "", etag ? etag : "",
             etag ? "\r\n" : "");
    return get_bytes(t, path, extra, max, out, r);
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (H. Hinnant's
 * days_from_civil): no timegm() on every platform the agent runs on. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t transport_retry_after(const char *value, int64_t now_s)
{
    if (!value)
        return 0;
    while (*value == ' ' || *value == '\t')
        value++;
    if (*value >= '0' && *value <= '9') {
        char *end = NULL;
        errno = 0;
        long long s = strtoll(value, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        return errno == 0 && *end == '\0' && s > 0 ? (int64_t)s : 0;
    }
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char wday[4], mon[4];
    int d, y, hh, mm, ss, n = 0;
    if (sscanf(value, "%3s, %d %3s %d %d:%d:%d GMT%n", wday, &d, mon, &y, &hh, &mm, &ss, &n) != 7 ||
        n == 0 || value[n] != '\0' || strlen(wday) != 3)
        return 0;
    const char *mp = strstr(months, mon);
    if (!mp || strlen(mon) != 3 || (mp - months) % 3 != 0 || d < 1 || d > 31 || hh > 23 ||
        mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0)
        return 0;
    int64_t at =
        days_from_civil(y, (int)(mp - months) / 3 + 1, d) * 86400 + hh * 3600 + mm * 60 + ss;
    return at > now_s ? at - now_s : 0;
}

/* a.b.c.d into *ip (host order); false when s is not exactly that. */
static bool parse_ipv4(const char *s, size_t len, uint32_t *ip)
{
    uint32_t v = 0;
    int parts = 0;
    size_t i = 0;
    while (parts < 4) {
        if (i >= len || s[i] < '0' || s[i] > '9')
            return false;
        unsigned part = 0;
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            part = part * 10 + (unsigned)(s[i++] - '0');
            digits++;
        }
        if (part > 255)
            return false;
        v = v << 8 | part;
        if (++parts < 4 && (i >= len || s[i++] != '.'))
            return false;
    }
    *ip = v;
    return i == len;
}

static bool no_proxy_entry(const char *e, size_t len, const char *host, size_t hlen)
{
    if (len == 1 && e[0] == '*')
        return true;
    uint32_t hip, eip;
    const char *slash = memchr(e, '/', len);
    if (parse_ipv4(host, hlen, &hip) && parse_ipv4(e, slash ? (size_t)(slash - e) : len, &eip)) {
        long bits = 32;
        if (slash) {
            char tmp[8] = "";
            size_t blen = len - (size_t)(slash - e) - 1;
            if (blen == 0 || blen >= sizeof(tmp))
                return false;
            memcpy(tmp, slash + 1, blen);
            char *end = NULL;
            bits = strtol(tmp, &end, 10);
            if (*end != '\0' || bits < 0 || bits > 32)
                return false;
        }
        uint32_t mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
        return (hip & mask) == (eip & mask);
    }
    if (len > 0 && e[0] == '.') {
        e++;
        len--;
    }
    if (len == 0 || hlen < len || strncasecmp(host + hlen - len, e, len) != 0)
        return false;
    return hlen == len || host[hlen - len - 1] == '.';
}

bool transport_no_proxy(const char *no_proxy, const char *host)
{
    if (!no_proxy || !host || !host[0])
        return false;
    size_t hlen = strlen(host);
    if (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    for (const char *p = no_proxy; *p;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, ", \t");
        if (len > 0 && no_proxy_entry(p, len, host, hlen))
            return true;
        p += len;
    }
    return false;
}
