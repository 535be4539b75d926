/* webhook-secret.c: see webhook-secret.h. */
#include "server/webhook-secret.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/crypto.h"

static int fail(char *err, size_t errlen, int r, const char *what, const char *path)
{
    snprintf(err, errlen, "webhook key %s: %s: %s", path, what, strerror(-r));
    return r;
}

static int read_key(const char *path, uint8_t key[WEBHOOK_KEY_LEN])
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t buf[WEBHOOK_KEY_LEN + 1];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0)
        return -errno;
    if (n != WEBHOOK_KEY_LEN) {
        crypto_cleanse(buf, sizeof(buf));
        return -EINVAL;
    }
    memcpy(key, buf, WEBHOOK_KEY_LEN);
    crypto_cleanse(buf, sizeof(buf));
    return 0;
}

/* Write a new key to a temporary and link it into place: link() fails when another node
 * made the file first, and then both read that one. */
static int create_key(const char *path)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    uint8_t key[WEBHOOK_KEY_LEN];
    int r = crypto_random(key, sizeof(key));
    if (r < 0)
        return r;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        crypto_cleanse(key, sizeof(key));
        return -errno;
    }
    r = 0;
    if (fchmod(fd, 0600) < 0 || write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) ||
        fsync(fd) < 0)
        r = errno ? -errno : -EIO;
    crypto_cleanse(key, sizeof(key));
    close(fd);
    if (r == 0 && link(tmp, path) < 0 && errno != EEXIST)
        r = -errno;
    unlink(tmp);
    return r;
}

int webhook_key_load(const struct orchd_config *cfg, uint8_t key[WEBHOOK_KEY_LEN], char *err,
                     size_t errlen)
{
    char path[4200];
    if (cfg->webhooks_key_file && cfg->webhooks_key_file[0])
        snprintf(path, sizeof(path), "%s", cfg->webhooks_key_file);
    else
        snprintf(path, sizeof(path), "%s/webhooks.key", cfg->auth_key_dir);
    int r = read_key(path, key);
    if (r == -ENOENT) {
        r = create_key(path);
        if (r < 0)
            return fail(err, errlen, r, "cannot create", path);
        r = read_key(path, key);
    }
    if (r == -EINVAL) {
        snprintf(err, errlen, "webhook key %s: must hold exactly %d bytes", path, WEBHOOK_KEY_LEN);
        return r;
    }
    if (r < 0)
        return fail(err, errlen, r, "cannot read", path);
    return 0;
}

int webhook_secret_seal(const uint8_t key[WEBHOOK_KEY_LEN], const char *id, const void *secret,
                        size_t len, uint8_t *out, size_t outlen)
{
    if (len > INT32_MAX - WEBHOOK_SEAL_EXTRA || outlen < len + WEBHOOK_SEAL_EXTRA)
        return -ENOSPC;
    if (crypto_random(out, 12) < 0)
        return -EIO;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0, r = -EIO;
    if (c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, out) == 1 &&
        EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)id, (int)strlen(id)) == 1 &&
        EVP_EncryptUpdate(c, out + 12, &n, secret, (int)len) == 1 &&
        EVP_EncryptFinal_ex(c, out + 12 + n, &m) == 1 &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + 12 + n + m) == 1)
        r = 12 + n + m + 16;
    EVP_CIPHER_CTX_free(c);
    return r;
}

int webhook_secret_open(const uint8_t key[WEBHOOK_KEY_LEN], const char *id, const uint8_t *sealed,
                        size_t len, char *out, size_t outlen)
{
    if (len < WEBHOOK_SEAL_EXTRA || len > INT32_MAX)
        return -EBADMSG;
    size_t clen = len - WEBHOOK_SEAL_EXTRA;
    if (outlen < clen + 1)
        return -ENOSPC;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, m = 0, r = -EIO;
    if (c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, sealed) == 1 &&
        EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)id, (int)strlen(id)) == 1 &&
        EVP_DecryptUpdate(c, (uint8_t *)out, &n, sealed + 12, (int)clen) == 1 &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(sealed + 12 + clen)) == 1) {
        r = EVP_DecryptFinal_ex(c, (uint8_t *)out + n, &m) == 1 ? n + m : -EBADMSG;
    }
    EVP_CIPHER_CTX_free(c);
    if (r < 0)
        crypto_cleanse(out, outlen);
    else
        out[r] = '\0';
    return r;
}
