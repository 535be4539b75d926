/* webhook-secret.h: webhook signing secrets, kept sealed at rest.
 *
 * A subscription's secret signs every delivery, so orchd must recover it: it is stored
 * sealed with AES-256-GCM under one server key (webhooks.key_file), never hashed, never
 * logged. A sealed secret is nonce (12 bytes) || ciphertext || tag (16 bytes); the
 * subscription's id is the associated data, so a sealed secret copied onto another row
 * does not open. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "server/config.h"

#define WEBHOOK_KEY_LEN    32
#define WEBHOOK_SEAL_EXTRA (12 + 16)

/* Load the key from cfg->webhooks_key_file, or <auth.key_dir>/webhooks.key when that is
 * empty; when the file does not exist it is created (random, mode 0600) atomically, so
 * nodes sharing the folder that start together end with the same key. Returns 0 with key
 * filled, or -errno with err filled. */
int webhook_key_load(const struct orchd_config *cfg, uint8_t key[WEBHOOK_KEY_LEN], char *err,
                     size_t errlen);

/* Seal len bytes of secret for the subscription id into out (outlen >= len +
 * WEBHOOK_SEAL_EXTRA). Returns the sealed length, or -ENOSPC, -EIO. */
int webhook_secret_seal(const uint8_t key[WEBHOOK_KEY_LEN], const char *id, const void *secret,
                        size_t len, uint8_t *out, size_t outlen);

/* Open what webhook_secret_seal() made for id into out (outlen > len - WEBHOOK_SEAL_EXTRA;
 * NUL-terminated). Returns the secret's length, -EBADMSG when it does not authenticate
 * (another key, another row, tampered), -ENOSPC, -EIO. */
int webhook_secret_open(const uint8_t key[WEBHOOK_KEY_LEN], const char *id, const uint8_t *sealed,
                        size_t len, char *out, size_t outlen);
