/* auth-keys.c: API keys and operator tokens (see auth-keys.h). */
#include "server/auth-keys.h"

#include <errno.h>
#include <string.h>

#include "common/crypto.h"

static const char *kind_start(enum authkey_kind kind)
{
    switch (kind) {
    case AUTHKEY_API:
        return "orch_ak_";
    case AUTHKEY_OPERATOR:
        return "orch_op_";
    case AUTHKEY_ENROLL:
        return "orch_et_";
    case AUTHKEY_AGENT:
        return "orch_ag_";
    }
    return "orch_xx_";
}

int authkey_new(enum authkey_kind kind, struct authkey *ret)
{
    uint8_t id[6], secret[32];
    if (crypto_random(id, sizeof(id)) < 0 || crypto_random(secret, sizeof(secret)) < 0)
        return -EIO;
    struct authkey k;
    memcpy(k.prefix, kind_start(kind), 8);
    hex_encode(id, sizeof(id), k.prefix + 8);
    memcpy(k.key, k.prefix, AUTHKEY_PREFIX_LEN);
    k.key[AUTHKEY_PREFIX_LEN] = '_';
    if (base64url_encode(secret, sizeof(secret), k.key + AUTHKEY_PREFIX_LEN + 1,
                         sizeof(k.key) - AUTHKEY_PREFIX_LEN - 1) != 43)
        return -EIO;
    crypto_sha256_hex(k.key, AUTHKEY_LEN, k.hash_hex);
    *ret = k;
    return 0;
}

bool authkey_parse(enum authkey_kind kind, const char *key, size_t len,
                   char prefix[AUTHKEY_PREFIX_LEN + 1], char hash_hex[65])
{
    if (len != AUTHKEY_LEN || memcmp(key, kind_start(kind), 8) != 0 ||
        key[AUTHKEY_PREFIX_LEN] != '_')
        return false;
    for (size_t i = 8; i < AUTHKEY_PREFIX_LEN; i++)
        if (!strchr("0123456789abcdef", key[i]) || key[i] == '\0')
            return false;
    memcpy(prefix, key, AUTHKEY_PREFIX_LEN);
    prefix[AUTHKEY_PREFIX_LEN] = '\0';
    crypto_sha256_hex(key, len, hash_hex);
    return true;
}

bool authkey_hash_matches(const char *hash_hex, const char *pg_bytea)
{
    if (!pg_bytea || strncmp(pg_bytea, "\\x", 2) != 0)
        return false;
    return crypto_streq(hash_hex, pg_bytea + 2);
}
