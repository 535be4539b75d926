/* transport-impl.h: what the transport's portable part (transport-common.c) needs from an
 * implementation (transport-curl.c, transport-winhttp.c), and what they share. Internal to
 * the transport files. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent/transport.h"

struct buf;

/* Replies larger than this are refused: the server's answers to an agent are small. */
#define TRANSPORT_MAX_REPLY (16u << 20)

/* Send one request: method path with text (a JSON document, or NULL for no body),
 * `Accept: accept`, the header lines of extra ("Name: value", each ended by "\r\n"; NULL
 * for none) and `X-Request-Id: r->request_id` (set by the caller), giving up with -EINTR
 * when abort(arg) says so after a wakeup, within timeout_ms (0 = the transport's). The answer's
 * bytes go to reply (its max is the limit: -EMSGSIZE beyond). Returns 0 with r->status and
 * r->retry_after_s set, or -ECONNREFUSED / -ETIMEDOUT / -EPROTO / -EMSGSIZE / -EINTR with r->error
 * filled. Implemented by each transport. */
int transport_exchange(struct transport *t, const char *method, const char *path, const char *text,
                       const char *accept, const char *extra, int64_t timeout_ms,
                       bool (*abort)(void *arg), void *arg, struct buf *reply,
                       struct transport_reply *r);

/* The seconds a Retry-After value asks for at now_s (Unix time): delta-seconds, or an HTTP
 * date (IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT"); 0 when none, in the past or unreadable.
 * libcurl reads it itself; transports that get the raw header use this. */
int64_t transport_retry_after(const char *value, int64_t now_s);

/* Whether host is to be reached without the proxy by no_proxy, a NO_PROXY list with libcurl's
 * rules: entries separated by commas or spaces, "*" for every host, a name matching itself
 * and the names under it (a leading dot changes nothing), an IPv4 address or CIDR range
 * (a.b.c.d/n) matching addresses; case-insensitive. */
bool transport_no_proxy(const char *no_proxy, const char *host);
