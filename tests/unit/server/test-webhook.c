/* Tests for server/webhook-secret.c (sealing, the key file) and webhook_sign()
 * (server/webhook-deliver.c): a known HMAC-SHA256 value, and a sealed secret that opens
 * only under its key and for its subscription. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/webhook-deliver.h"
#include "server/webhook-secret.h"

Test(webhook, signature_is_hmac_sha256_of_time_dot_body)
{
    /* python3 -c 'import hmac,hashlib;print(hmac.new(b"orch_whsec_k",
     *   b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())' */
    char sig[WEBHOOK_SIGNATURE_LEN];
    webhook_sign("orch_whsec_k", 1700000000, "{\"a\":1}", 7, sig);
    cr_assert_str_eq(sig, "t=1700000000,v1="
                          "032083440c597397195f89ed156476ee7042a4fabe9a2ffc07c2076aa4f633cd");
}

static const uint8_t key[WEBHOOK_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

Test(webhook, sealed_secret_opens_only_for_its_key_and_row)
{
    static const char secret[] = "orch_whsec_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const char *id = "01a201d8-32cd-755e-bf8e-efa901b053be";
    uint8_t sealed[128];
    int n = webhook_secret_seal(key, id, secret, strlen(secret), sealed, sizeof(sealed));
    cr_assert_eq(n, (int)strlen(secret) + WEBHOOK_SEAL_EXTRA);
    cr_assert_null(memmem(sealed, (size_t)n, "orch_whsec", 10), "the secret is in clear");
    char out[128];
    cr_assert_eq(webhook_secret_open(key, id, sealed, (size_t)n, out, sizeof(out)),
                 (int)strlen(secret));
    cr_assert_str_eq(out, secret);
    /* another row */
    cr_assert_eq(webhook_secret_open(key, "01a201d8-32cd-755e-bf8e-efa901b053bf", sealed, (size_t)n,
                                     out, sizeof(out)),
                 -EBADMSG);
    /* another key */
    uint8_t other[WEBHOOK_KEY_LEN] = {9};
    cr_assert_eq(webhook_secret_open(other, id, sealed, (size_t)n, out, sizeof(out)), -EBADMSG);
    /* tampered, truncated */
    sealed[20] ^= 1;
    cr_assert_eq(webhook_secret_open(key, id, sealed, (size_t)n, out, sizeof(out)), -EBADMSG);
    sealed[20] ^= 1;
    cr_assert_eq(webhook_secret_open(key, id, sealed, 10, out, sizeof(out)), -EBADMSG);
    /* two seals of one secret differ (a fresh nonce each) */
    uint8_t again[128];
    cr_assert_eq(webhook_secret_seal(key, id, secret, strlen(secret), again, sizeof(again)), n);
    cr_assert_neq(memcmp(sealed, again, (size_t)n), 0);
}

Test(webhook, key_file_is_made_once_mode_0600)
{
    char dir[] = "/tmp/orch-whkey-XXXXXX";
    cr_assert(mkdtemp(dir));
    struct orchd_config cfg = {.auth_key_dir = dir, .webhooks_key_file = ""};
    uint8_t a[WEBHOOK_KEY_LEN], b[WEBHOOK_KEY_LEN];
    char err[256];
    cr_assert_eq(webhook_key_load(&cfg, a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(webhook_key_load(&cfg, b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0, "a second load made a new key");
    char path[96];
    snprintf(path, sizeof(path), "%s/webhooks.key", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, WEBHOOK_KEY_LEN);
    /* A key file of the wrong size is refused, not used. */
    FILE *f = fopen(path, "w");
    fputs("short", f);
    fclose(f);
    cr_assert_eq(webhook_key_load(&cfg, b, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "32 bytes"), "%s", err);
    unlink(path);
    rmdir(dir);
}
