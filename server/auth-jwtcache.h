/* auth-jwtcache.h: the access tokens a node has verified, so that a client sending the same
 * token again costs no signature check (two ES256 verifications and a PEM parse in
 * jwt_verify()) (docs/scaling.md, "REST API").
 *
 * An entry is the SHA-256 of the whole token and the claims jwt_verify() returned for it;
 * a token is found only by its exact bytes, so nothing in it can be changed. On a hit the
 * time claims are checked again (jwt_claims_current(): exp, nbf, iat with the leeway), so
 * an expired token is refused as jwt_verify() would. The key ring is loaded once per
 * process, so a verification stays true for the token's life; whether its API key is
 * still valid is admission's business (server/authcache.h), on every request.
 *
 * A fixed table of JWT_CACHE_SLOTS entries: a token probes 8 slots and, when absent, takes
 * the one that expires first. Thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "server/auth-jwt.h"

#define JWT_CACHE_SLOTS 16384

struct jwt_cache;

/* Returns 0 with *ret (free with jwt_cache_free(), accepts NULL), or -ENOMEM. */
int jwt_cache_new(struct jwt_cache **ret);
void jwt_cache_free(struct jwt_cache *c);

/* jwt_verify() of token, answered from the cache when it verified these exact bytes
 * before (and only their time claims checked again). c may be NULL (no cache). Same
 * arguments, results and reasons as jwt_verify(). */
int jwt_verify_cached(struct jwt_cache *c, const struct jwt_ring *ring, const struct jwt_params *p,
                      const char *token, size_t len, int64_t now, struct jwt_claims *out,
                      const char **why);
