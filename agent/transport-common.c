/* transport-common.c: the transport's portable part (see transport.h): JSON bodies, the
 * problem's detail on an error status, the byte-fetch limits, on top of the one exchange each
 * implementation provides (transport-impl.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "agent/transport-impl.h"
#include "common/buf.h"
#include "common/cleanup.h"

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
    _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct buf reply = BUF_INIT;
    buf_init_max(&reply, TRANSPORT_MAX_REPLY);
    int rc = transport_exchange(t, method, path, text, "application/json", timeout_ms, abort, arg,
                                &reply, r);
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

int transport_get_bytes(struct transport *t, const char *path, size_t max, struct buf *out,
                        struct transport_reply *r)
{
    memset(r, 0, sizeof(*r));
    buf_init_max(out, max);
    int rc =
        transport_exchange(t, "GET", path, NULL, "application/octet-stream", 0, NULL, NULL, out, r);
    if (rc < 0) {
        buf_free(out);
        return rc;
    }
    if (r->status != 200) {
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
