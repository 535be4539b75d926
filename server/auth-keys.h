/* auth-keys.h: the long-lived secrets people hold: tenant API keys and platform operator
 * tokens. Both read "orch_<kind>_<12 hex>_<43 base64url>" (64 characters): the first 20
 * characters are a public prefix that finds the row, the rest is 256 random bits. Only the
 * SHA-256 of the whole key is stored; the key is shown once, at creation. The fixed
 * "orch_ak_" / "orch_op_" start lets secret scanners recognise them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define AUTHKEY_LEN        64
#define AUTHKEY_PREFIX_LEN 20

enum authkey_kind {
    AUTHKEY_API,      /* orch_ak_: tenant API key */
    AUTHKEY_OPERATOR, /* orch_op_: platform operator token */
    AUTHKEY_ENROLL,   /* orch_et_: agent enrolment token */
    AUTHKEY_AGENT,    /* orch_ag_: an agent's own credential */
};

struct authkey {
    char key[AUTHKEY_LEN + 1];           /* the secret: show once, never log */
    char prefix[AUTHKEY_PREFIX_LEN + 1]; /* public, stored */
    char hash_hex[65];                   /* SHA-256 of key, hex, stored as bytea */
};

/* Make a new key of kind. Returns 0 or -EIO. */
int authkey_new(enum authkey_kind kind, struct authkey *ret);

/* Split a presented key: true when it has the shape of kind; fills prefix and the hex
 * SHA-256 of the whole key. */
bool authkey_parse(enum authkey_kind kind, const char *key, size_t len,
                   char prefix[AUTHKEY_PREFIX_LEN + 1], char hash_hex[65]);

/* Constant-time comparison of our hex hash with PostgreSQL's bytea text ("\x<hex>"). */
bool authkey_hash_matches(const char *hash_hex, const char *pg_bytea);
