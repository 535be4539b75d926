/* auth-jwt.h: ES256 JSON Web Tokens for the API, signed and verified with a key ring.
 *
 * libjwt 1.10 checks neither the algorithm, nor exp/nbf; it accepts any HS256 token when no
 * key is passed, and an HS256 token whose HMAC secret is the verifier's RSA/EC public key
 * PEM. So no code in orch calls libjwt on a token directly: every token goes through
 * jwt_verify(), which bounds the token, validates the JOSE header itself, verifies the
 * ECDSA signature with OpenSSL AND has libjwt decode it with the kid's public key, then
 * checks every claim against a declared table.
 *
 * Keys live in one directory as "<kid>.pem" (EC P-256 private keys, mode 0600). The newest
 * kid (kids sort by creation time) signs; all of them verify, so a key can be rotated by
 * adding a new one and removing the old one once the longest token lifetime has passed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_TOKEN_MAX      4096 /* bytes; longer tokens are rejected before any parsing */
#define JWT_KID_MAX        64   /* kid: [A-Za-z0-9_-]{1,64} */
#define JWT_KEYGEN_KID_LEN 27   /* "k20261122T060102Z-1a2b3c4d" plus NUL */
#define JWT_RING_MAX_KEYS  64
#define JWT_TTL_MAX        86400 /* also the longest exp - iat a verified token may have */
#define JWT_LEEWAY_MAX     300

/* An immutable set of keys: after jwt_ring_load() returns, any number of threads may call
 * jwt_verify(), jwt_issue() and the accessors on it concurrently. */
struct jwt_ring;

/* Load every "<kid>.pem" in dir: EC P-256 private keys in PEM, PKCS#8 or SEC1, unencrypted.
 * The signing key is the one whose kid sorts last. Entries not ending in ".pem" are ignored.
 * Symbolic links are followed (secret volumes are made of them), but what they point to
 * must be a regular file that neither group nor others may access (mode & 077 == 0).
 *
 * Returns 0 with *ret set (caller frees with jwt_ring_free()), or a negative errno with err
 * (if not NULL) holding a sentence that names the directory or file:
 *   -ENOENT  dir has no key file;          -EPERM   a key file has mode & 077 != 0;
 *   -EINVAL  a bad PEM, a key that is not P-256, a "<name>.pem" whose name is not a kid,
 *            or something that is not a regular file;
 *   -EFBIG   a key file over 64 KiB;       -E2BIG   more than JWT_RING_MAX_KEYS keys;
 *   -ENOMEM, or the errno of opening/reading the directory or a file.
 * *ret is untouched on failure. */
int jwt_ring_load(const char *dir, struct jwt_ring **ret, char *err, size_t errlen);

/* Free ring and scrub its private keys. Accepts NULL. */
void jwt_ring_free(struct jwt_ring *ring);

/* Number of keys in ring (>= 1). */
size_t jwt_ring_size(const struct jwt_ring *ring);

/* The kid new tokens are signed with. Borrowed: valid as long as ring. */
const char *jwt_ring_signing_kid(const struct jwt_ring *ring);

/* A MAC for values the server hands out and must recognise later (list cursors): every
 * node loads the same keys, so any node checks what another made. HMAC-SHA256 of msg under
 * a key derived from the signing key and label (which keeps uses apart), truncated to
 * JWT_RING_MAC_LEN bytes. jwt_ring_mac_check() accepts a MAC made with any key of the ring,
 * so values made before a key rotation stay valid while the old key is in the ring. */
#define JWT_RING_MAC_LEN 16
void jwt_ring_mac(const struct jwt_ring *ring, const char *label, const void *msg, size_t len,
                  uint8_t out[JWT_RING_MAC_LEN]);
bool jwt_ring_mac_check(const struct jwt_ring *ring, const char *label, const void *msg, size_t len,
                        const uint8_t mac[JWT_RING_MAC_LEN]);

/* Generate a new P-256 key and store it as dir/<kid>.pem (PKCS#8 PEM, mode 0600), creating
 * dir with mode 0700 when it does not exist (its parent must). The file appears atomically,
 * fully written and synced, so a concurrent jwt_ring_load() never sees a partial key.
 * kid = "k" + UTC yyyymmddThhmmssZ + "-" + 8 random hex digits, e.g.
 * "k20261122T060102Z-1a2b3c4d"; two keys made in the same second sort in random order.
 *
 * Returns 0 with the kid written to kid_out, or a negative errno with err (if not NULL)
 * filled: -ENOSPC when kid_len < JWT_KEYGEN_KID_LEN (checked first, nothing created),
 * -EIO on an OpenSSL or RNG failure, or the errno of a failing file operation. kid_out is
 * untouched on failure, and no file is left behind. */
int jwt_keygen(const char *dir, char *kid_out, size_t kid_len, char *err, size_t errlen);

struct jwt_params {
    const char *issuer;   /* e.g. "orch" */
    const char *audience; /* e.g. "orch-api" */
    int64_t ttl_s;        /* lifetime of issued tokens, 1..JWT_TTL_MAX */
    int64_t leeway_s;     /* clock skew tolerated on exp/nbf/iat, 0..JWT_LEEWAY_MAX */
};

#define JWT_SUB_MAX 128

struct jwt_claims {
    char sub[JWT_SUB_MAX + 1]; /* subject: API key id or operator token id; 1..128 bytes */
    char tenant[37];           /* canonical lower-case UUID, "" for platform operators */
    char role[16];             /* admin | operator | viewer | platform */
    char jti[37];              /* token id, canonical lower-case UUID */
    int64_t iat, nbf, exp;     /* seconds since the epoch */
};

/* Sign a token for in->sub, in->tenant and in->role (the other fields of in are ignored):
 * iat = nbf = now, exp = now + p->ttl_s, jti a new UUIDv7, iss/aud from p, kid the ring's
 * signing kid. in->sub must be 1..128 bytes without control characters, in->role one of the
 * four roles, in->tenant a UUID unless role is "platform", in which case it must be "".
 *
 * Returns 0 with *token set to a NUL-terminated token (caller frees with free()) and, when
 * claims_out is not NULL, the claims issued written to it. Returns -EINVAL on bad p/in/now,
 * -ENOMEM, or -EIO when signing fails; *token and *claims_out are untouched on failure. */
int jwt_issue(const struct jwt_ring *ring, const struct jwt_params *p, const struct jwt_claims *in,
              int64_t now, char **token, struct jwt_claims *claims_out);

/* Verify token (len bytes, need not be NUL-terminated, borrowed) at time now.
 *
 * Accepts only: at most JWT_TOKEN_MAX bytes; three base64url parts; a header that is a JSON
 * object with exactly alg "ES256", optional typ "JWT" and a kid naming a key in ring (jku,
 * x5u, x5c, jwk, crit and any other header field are refused); a valid ES256 signature by
 * that key; claims iss == p->issuer, aud == p->audience (or an array of strings holding
 * it), integer exp/nbf/iat with now < exp + leeway, nbf - leeway <= now,
 * iat - leeway <= now, iat < exp <= iat + JWT_TTL_MAX, sub a 1..128 byte string, role one
 * of the four roles, tenant a UUID (or, for role "platform", absent or null), jti a UUID.
 * Unknown claims are allowed (and ignored), duplicate keys are not.
 *
 * Returns 0 with *out filled; -EACCES when the token is refused; -ENOMEM; -EINVAL when
 * ring, p or out is NULL, or p or now is out of range. why may be NULL; otherwise, on every
 * failure, *why points to a static, loggable reason such as "token too long",
 * "unknown kid", "algorithm not allowed", "bad signature", "expired", "not yet valid",
 * "wrong audience", "wrong issuer", "claim 'exp' must be an integer" (NULL on success).
 * *out is untouched on failure. The reason never quotes the token, and this function never logs. */
int jwt_verify(const struct jwt_ring *ring, const struct jwt_params *p, const char *token,
               size_t len, int64_t now, struct jwt_claims *out, const char **why);

/* The time checks of jwt_verify() alone, on claims it returned earlier: now < exp + leeway,
 * nbf - leeway <= now, iat - leeway <= now. Returns 0, or -EACCES with *why (may be NULL)
 * "expired", "not yet valid" or "issued in the future". For server/auth-jwtcache.c. */
int jwt_claims_current(const struct jwt_claims *c, const struct jwt_params *p, int64_t now,
                       const char **why);
