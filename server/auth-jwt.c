/* auth-jwt.c: ES256 JWT issue and verification over a directory key ring.
 *
 * Verification is belt and braces: the header is validated here (libjwt would take the
 * algorithm from it), the ES256 signature is verified here with OpenSSL over the exact bytes
 * received, and libjwt must also decode and verify the token with the kid's public key, so a
 * bug or a leniency on either side (libjwt's base64 decoder, its signature conversion) is not
 * enough to get a token through. The claims libjwt returns must equal the payload we parsed
 * ourselves with duplicate keys rejected, and are then checked against a table.
 */
#include "server/auth-jwt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/id.h"
#include "common/jsonv.h"

#define KEY_FILE_MAX  (64 * 1024)
#define ES256_SIG_LEN 64
#define ES256_HALF    32
/* 9999-12-31T23:59:59Z: keeps exp + leeway and friends far from overflow. */
#define JWT_TIME_MAX INT64_C(253402300799)
/* The header is flat; the payload holds at most an aud array. Deeper means not ours. */
#define JWT_JSON_DEPTH 4

struct jwt_key {
    char kid[JWT_KID_MAX + 1];
    EVP_PKEY *pkey; /* private key; its public half verifies */
    char *priv_pem; /* PKCS#8 PEM for libjwt's signer; scrubbed on free */
    size_t priv_pem_len;
    char *pub_pem; /* SubjectPublicKeyInfo PEM for libjwt's verifier */
    size_t pub_pem_len;
};

struct jwt_ring {
    size_t n;
    struct jwt_key keys[JWT_RING_MAX_KEYS]; /* sorted by kid; the last one signs */
};

/* json_decrefp() comes with jansson. */
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free_all)
DEFINE_TRIVIAL_CLEANUP_FUNC(ECDSA_SIG *, ECDSA_SIG_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)
DEFINE_TRIVIAL_CLEANUP_FUNC(jwt_t *, jwt_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct jwt_ring *, jwt_ring_free)

static const char *const jwt_roles[] = {"admin", "operator", "viewer", "platform"};

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    /* Leave no stale OpenSSL error behind for the next, unrelated caller on this thread. */
    ERR_clear_error();
    return r;
}

static bool is_kid(const char *s, size_t n)
{
    if (n < 1 || n > JWT_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* sub ends up in logs and database lookups: no control characters, no embedded NUL. */
static bool is_sub(const char *s, size_t n)
{
    if (n < 1 || n > JWT_SUB_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static bool is_role(const char *s, size_t n)
{
    for (size_t i = 0; i < ELEMENTSOF(jwt_roles); i++)
        if (strlen(jwt_roles[i]) == n && memcmp(jwt_roles[i], s, n) == 0)
            return true;
    return false;
}

static void key_clear(struct jwt_key *k)
{
    EVP_PKEY_free(k->pkey);
    if (k->priv_pem)
        OPENSSL_cleanse(k->priv_pem, k->priv_pem_len);
    free(k->priv_pem);
    free(k->pub_pem);
    memset(k, 0, sizeof(*k));
}

void jwt_ring_free(struct jwt_ring *ring)
{
    if (!ring)
        return;
    for (size_t i = 0; i < ring->n; i++)
        key_clear(&ring->keys[i]);
    free(ring);
}

/* The MAC of msg under key k for label: HMAC(HMAC(private key PEM, label), msg). */
static void key_mac(const struct jwt_key *k, const char *label, const void *msg, size_t len,
                    uint8_t out[JWT_RING_MAC_LEN])
{
    uint8_t derived[CRYPTO_SHA256_LEN], full[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(k->priv_pem, k->priv_pem_len, label, strlen(label), derived);
    crypto_hmac_sha256(derived, sizeof(derived), msg, len, full);
    memcpy(out, full, JWT_RING_MAC_LEN);
    OPENSSL_cleanse(derived, sizeof(derived));
}

void jwt_ring_mac(const struct jwt_ring *ring, const char *label, const void *msg, size_t len,
                  uint8_t out[JWT_RING_MAC_LEN])
{
    key_mac(&ring->keys[ring->n - 1], label, msg, len, out);
}

bool jwt_ring_mac_check(const struct jwt_ring *ring, const char *label, const void *msg, size_t len,
                        const uint8_t mac[JWT_RING_MAC_LEN])
{
    bool ok = false;
    for (size_t i = 0; i < ring->n; i++) {
        uint8_t want[JWT_RING_MAC_LEN];
        key_mac(&ring->keys[i], label, msg, len, want);
        ok = crypto_equal(want, mac, JWT_RING_MAC_LEN) || ok;
    }
    return ok;
}

size_t jwt_ring_size(const struct jwt_ring *ring)
{
    return ring ? ring->n : 0;
}

const char *jwt_ring_signing_kid(const struct jwt_ring *ring)
{
    if (!ring || ring->n == 0)
        return NULL;
    return ring->keys[ring->n - 1].kid;
}

static int kid_cmp(const void *a, const void *b)
{
    return strcmp(((const struct jwt_key *)a)->kid, ((const struct jwt_key *)b)->kid);
}

static const struct jwt_key *ring_find(const struct jwt_ring *ring, const char *kid)
{
    struct jwt_key probe;

    snprintf(probe.kid, sizeof(probe.kid), "%s", kid);
    return bsearch(&probe, ring->keys, ring->n, sizeof(ring->keys[0]), kid_cmp);
}

/* Never prompt on a terminal for an encrypted key: a server has nobody to answer. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static bool is_p256(EVP_PKEY *pkey)
{
    char group[80];
    size_t glen = 0;
    int nid;

    if (!EVP_PKEY_is_a(pkey, "EC") ||
        !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        &glen))
        return false;
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(group);
    return nid == NID_X9_62_prime256v1;
}

/* Serialize pkey as PEM into a malloc'd NUL-terminated string. A private PEM goes through
 * a secure-heap BIO, which is cleared when freed. */
static int pem_export(EVP_PKEY *pkey, bool private, char **ret, size_t *ret_len)
{
    _cleanup_(BIO_free_allp) BIO *b = BIO_new(private ? BIO_s_secmem() : BIO_s_mem());
    char *data = NULL, *s;
    long n;

    if (!b)
        return -ENOMEM;
    if (private ? PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL) != 1
                : PEM_write_bio_PUBKEY(b, pkey) != 1)
        return -EIO;
    n = BIO_get_mem_data(b, &data);
    if (n <= 0 || n > KEY_FILE_MAX)
        return -EIO;
    s = malloc((size_t)n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *ret = s;
    *ret_len = (size_t)n;
    return 0;
}

/* Read a whole regular, private key file of at most KEY_FILE_MAX bytes into buf. */
static int key_file_read(int dfd, const char *dir, const char *name, char *buf, size_t *ret_len,
                         char *err, size_t errlen)
{
    _cleanup_close_ int fd = -1;
    struct stat st;
    size_t n = 0;
    int e;

    /* O_NONBLOCK: a FIFO named like a key must not hang the server at start-up. */
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        e = errno;
        return fail(err, errlen, -e, "key file %s/%s: cannot open: %s", dir, name, strerror(e));
    }
    if (fstat(fd, &st) < 0) {
        e = errno;
        return fail(err, errlen, -e, "key file %s/%s: cannot stat: %s", dir, name, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return fail(err, errlen, -EINVAL, "key file %s/%s: not a regular file", dir, name);
    if (st.st_mode & 077)
        return fail(err, errlen, -EPERM,
                    "key file %s/%s has mode %04o: a private key must not be accessible by "
                    "group or others (chmod 600 it)",
                    dir, name, (unsigned)(st.st_mode & 07777));

    for (;;) {
        ssize_t k = read(fd, buf + n, KEY_FILE_MAX + 1 - n);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            e = errno;
            return fail(err, errlen, -e, "key file %s/%s: cannot read: %s", dir, name, strerror(e));
        }
        if (k == 0)
            break;
        n += (size_t)k;
        if (n > KEY_FILE_MAX)
            return fail(err, errlen, -EFBIG, "key file %s/%s: larger than %d bytes", dir, name,
                        KEY_FILE_MAX);
    }
    *ret_len = n;
    return 0;
}

/* Load dir/name into *ret; *ret is untouched on failure. */
static int key_load(int dfd, const char *dir, const char *name, size_t kidlen, struct jwt_key *ret,
                    char *err, size_t errlen)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
    struct jwt_key k = {0};
    char *buf;
    size_t n = 0;
    int r;

    buf = malloc(KEY_FILE_MAX + 1);
    if (!buf)
        return fail(err, errlen, -ENOMEM, "out of memory");
    r = key_file_read(dfd, dir, name, buf, &n, err, errlen);
    if (r >= 0) {
        BIO *b = BIO_new_mem_buf(buf, (int)n);

        if (!b)
            r = fail(err, errlen, -ENOMEM, "out of memory");
        else
            pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
        BIO_free(b);
    }
    OPENSSL_cleanse(buf, KEY_FILE_MAX + 1);
    free(buf);
    if (r < 0)
        return r;

    if (!pkey)
        return fail(err, errlen, -EINVAL,
                    "key file %s/%s: not an unencrypted PEM private key (PKCS#8 or SEC1)", dir,
                    name);
    if (!is_p256(pkey))
        return fail(err, errlen, -EINVAL, "key file %s/%s: not an EC P-256 key", dir, name);
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!ctx)
        return fail(err, errlen, -ENOMEM, "out of memory");
    if (EVP_PKEY_check(ctx) != 1)
        return fail(err, errlen, -EINVAL, "key file %s/%s: the key fails its consistency check",
                    dir, name);

    memcpy(k.kid, name, kidlen);
    k.kid[kidlen] = '\0';
    r = pem_export(pkey, true, &k.priv_pem, &k.priv_pem_len);
    if (r >= 0)
        r = pem_export(pkey, false, &k.pub_pem, &k.pub_pem_len);
    if (r < 0) {
        key_clear(&k);
        return fail(err, errlen, r, "key file %s/%s: cannot re-encode the key", dir, name);
    }
    k.pkey = TAKE_PTR(pkey);
    *ret = k;
    ERR_clear_error();
    return 0;
}

int jwt_ring_load(const char *dir, struct jwt_ring **ret, char *err, size_t errlen)
{
    _cleanup_(jwt_ring_freep) struct jwt_ring *ring = NULL;
    _cleanup_(closedirp) DIR *d = NULL;
    struct dirent *de;
    int r, e;

    if (!dir || !ret)
        return fail(err, errlen, -EINVAL, "no key directory given");
    d = opendir(dir);
    if (!d) {
        e = errno;
        return fail(err, errlen, -e, "key directory %s: %s", dir, strerror(e));
    }
    ring = calloc(1, sizeof(*ring));
    if (!ring)
        return fail(err, errlen, -ENOMEM, "out of memory");

    for (;;) {
        const char *name;
        size_t nlen;

        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno != 0) {
                e = errno;
                return fail(err, errlen, -e, "key directory %s: %s", dir, strerror(e));
            }
            break;
        }
        name = de->d_name;
        nlen = strlen(name);
        if (nlen < 4 || strcmp(name + nlen - 4, ".pem") != 0)
            continue;
        if (!is_kid(name, nlen - 4))
            return fail(err, errlen, -EINVAL,
                        "key file %s/%s: the name must be <kid>.pem, kid being 1 to %d of "
                        "[A-Za-z0-9_-]",
                        dir, name, JWT_KID_MAX);
        if (ring->n == JWT_RING_MAX_KEYS)
            return fail(err, errlen, -E2BIG, "key directory %s: more than %d keys", dir,
                        JWT_RING_MAX_KEYS);
        r = key_load(dirfd(d), dir, name, nlen - 4, &ring->keys[ring->n], err, errlen);
        if (r < 0)
            return r;
        ring->n++;
    }
    if (ring->n == 0)
        return fail(err, errlen, -ENOENT, "key directory %s: no key files (<kid>.pem)", dir);

    qsort(ring->keys, ring->n, sizeof(ring->keys[0]), kid_cmp);
    *ret = TAKE_PTR(ring);
    return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t k = write(fd, data, len);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        data += k;
        len -= (size_t)k;
    }
    return 0;
}

/* "k" + UTC yyyymmddThhmmssZ + "-" + 8 hex digits: sorts by creation second. */
static int kid_new(char kid[JWT_KEYGEN_KID_LEN])
{
    uint8_t rnd[4];
    char hex[2 * sizeof(rnd) + 1];
    time_t t = (time_t)(clock_real_ms() / 1000);
    struct tm tm;

    if (crypto_random(rnd, sizeof(rnd)) < 0)
        return -EIO;
    hex_encode(rnd, sizeof(rnd), hex);
    if (!gmtime_r(&t, &tm) || strftime(kid, JWT_KEYGEN_KID_LEN, "k%Y%m%dT%H%M%SZ-", &tm) != 18)
        return -EIO;
    memcpy(kid + 18, hex, sizeof(hex));
    return 0;
}

int jwt_keygen(const char *dir, char *kid_out, size_t kid_len, char *err, size_t errlen)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    _cleanup_close_ int dfd = -1;
    _cleanup_close_ int fd = -1;
    char kid[JWT_KEYGEN_KID_LEN], tmp[JWT_KEYGEN_KID_LEN + 16], name[JWT_KEYGEN_KID_LEN + 8];
    char *pem = NULL;
    size_t pem_len = 0;
    int r, e;

    if (!dir || !kid_out)
        return fail(err, errlen, -EINVAL, "no key directory given");
    if (kid_len < JWT_KEYGEN_KID_LEN)
        return fail(err, errlen, -ENOSPC, "kid buffer too small");

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        e = errno;
        return fail(err, errlen, -e, "key directory %s: cannot create: %s", dir, strerror(e));
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        e = errno;
        return fail(err, errlen, -e, "key directory %s: %s", dir, strerror(e));
    }

    r = kid_new(kid);
    if (r < 0)
        return fail(err, errlen, r, "cannot make a kid: random number generator failed");
    pkey = EVP_EC_gen("P-256");
    if (!pkey)
        return fail(err, errlen, -EIO, "cannot generate a P-256 key");
    r = pem_export(pkey, true, &pem, &pem_len);
    if (r < 0)
        return fail(err, errlen, r, "cannot encode the new key");

    /* Write a hidden temporary (not *.pem, so jwt_ring_load() ignores it), then link it
     * into place: the key appears complete or not at all, and never replaces another. */
    snprintf(tmp, sizeof(tmp), ".%s.pem.tmp", kid);
    snprintf(name, sizeof(name), "%s.pem", kid);
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        e = errno;
        r = fail(err, errlen, -e, "key file %s/%s: cannot create: %s", dir, tmp, strerror(e));
        goto out;
    }
    r = write_all(fd, pem, pem_len);
    if (r >= 0 && fchmod(fd, 0600) < 0)
        r = -errno;
    if (r >= 0 && fsync(fd) < 0)
        r = -errno;
    if (r >= 0 && close(TAKE_FD(fd)) < 0)
        r = -errno;
    if (r >= 0 && linkat(dfd, tmp, dfd, name, 0) < 0)
        r = -errno;
    (void)unlinkat(dfd, tmp, 0);
    if (r >= 0 && fsync(dfd) < 0) {
        r = -errno;
        (void)unlinkat(dfd, name, 0);
    }
    if (r < 0) {
        r = fail(err, errlen, r, "key file %s/%s: cannot write: %s", dir, name, strerror(-r));
        goto out;
    }
    memcpy(kid_out, kid, sizeof(kid));
    r = 0;
out:
    OPENSSL_cleanse(pem, pem_len);
    free(pem);
    ERR_clear_error();
    return r;
}

static bool params_valid(const struct jwt_params *p)
{
    return p && p->issuer && p->issuer[0] && p->audience && p->audience[0] && p->ttl_s >= 1 &&
           p->ttl_s <= JWT_TTL_MAX && p->leeway_s >= 0 && p->leeway_s <= JWT_LEEWAY_MAX;
}

/* Length of the NUL-terminated string in a fixed array, or -1 when it is not terminated. */
static ssize_t field_len(const char *s, size_t size)
{
    size_t n = strnlen(s, size);

    return n == size ? -1 : (ssize_t)n;
}

int jwt_issue(const struct jwt_ring *ring, const struct jwt_params *p, const struct jwt_claims *in,
              int64_t now, char **token, struct jwt_claims *claims_out)
{
    _cleanup_json_ json_t *claims = NULL;
    _cleanup_(jwt_freep) jwt_t *jwt = NULL;
    _cleanup_free_ char *claims_json = NULL;
    const struct jwt_key *k;
    struct jwt_claims c = {0};
    json_error_t jerr;
    ssize_t sublen, rolelen, tenantlen;
    bool platform;
    uint8_t uuid[16];
    char *tok;
    int r;

    if (!ring || ring->n == 0 || !params_valid(p) || !in || !token)
        return -EINVAL;
    if (now < 0 || now > JWT_TIME_MAX - p->ttl_s)
        return -EINVAL;
    sublen = field_len(in->sub, sizeof(in->sub));
    rolelen = field_len(in->role, sizeof(in->role));
    tenantlen = field_len(in->tenant, sizeof(in->tenant));
    if (sublen < 0 || !is_sub(in->sub, (size_t)sublen) || rolelen < 0 ||
        !is_role(in->role, (size_t)rolelen) || tenantlen < 0)
        return -EINVAL;
    platform = strcmp(in->role, "platform") == 0;
    if (platform ? tenantlen != 0 : id_parse(in->tenant, uuid) < 0)
        return -EINVAL;

    memcpy(c.sub, in->sub, (size_t)sublen + 1);
    memcpy(c.role, in->role, (size_t)rolelen + 1);
    if (!platform)
        id_format(uuid, c.tenant);
    if (id_uuid7_str(c.jti) < 0)
        return -EIO;
    c.iat = c.nbf = now;
    c.exp = now + p->ttl_s;

    claims = json_pack_ex(&jerr, 0, "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "iss", p->issuer,
                          "aud", p->audience, "sub", c.sub, "role", c.role, "jti", c.jti, "iat",
                          (json_int_t)c.iat, "nbf", (json_int_t)c.nbf, "exp", (json_int_t)c.exp);
    if (!claims) /* the strings are caller input: invalid UTF-8 is the likely cause */
        return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM : -EINVAL;
    if (!platform && json_object_set_new(claims, "tenant", json_string(c.tenant)) < 0)
        return -ENOMEM;
    claims_json = json_dumps(claims, JSON_COMPACT);
    if (!claims_json)
        return -ENOMEM;

    k = &ring->keys[ring->n - 1];
    r = jwt_new(&jwt);
    if (r == 0)
        r = jwt_add_header(jwt, "kid", k->kid);
    if (r == 0)
        r = jwt_add_grants_json(jwt, claims_json);
    if (r == 0)
        r = jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)k->priv_pem,
                        (int)k->priv_pem_len);
    if (r != 0) {
        ERR_clear_error();
        return r == ENOMEM ? -ENOMEM : -EIO;
    }
    tok = jwt_encode_str(jwt);
    if (!tok) {
        r = errno == ENOMEM ? -ENOMEM : -EIO;
        ERR_clear_error();
        return r;
    }
    *token = tok;
    if (claims_out)
        *claims_out = c;
    return 0;
}

static int refuse(const char **why, const char *reason)
{
    *why = reason;
    return -EACCES;
}

/* A JSON string is compared with its length: jansson strings may hold "\u0000". */
static bool json_str_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

static const struct {
    const char *name;
    const char *why;
} header_refused[] = {
    /* Each of these makes the token name its own key or extend the rules we check. */
    {"jku", "header 'jku' not allowed"},   {"x5u", "header 'x5u' not allowed"},
    {"jwk", "header 'jwk' not allowed"},   {"x5c", "header 'x5c' not allowed"},
    {"crit", "header 'crit' not allowed"},
};

/* Validate the JOSE header and find its key. */
static int check_header(const struct jwt_ring *ring, const char *h, size_t hlen,
                        const struct jwt_key **ret, const char **why)
{
    _cleanup_json_ json_t *hdr = NULL;
    uint8_t dec[JWT_TOKEN_MAX];
    const char *key;
    json_t *v;
    char kid[JWT_KID_MAX + 1];
    const struct jwt_key *k;
    int n, r;

    n = base64url_decode(h, hlen, dec, sizeof(dec));
    if (n < 0)
        return refuse(why, "malformed header");
    r = jsonv_parse((const char *)dec, (size_t)n, JWT_JSON_DEPTH, &hdr, NULL);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return refuse(why, "malformed header");
    if (!json_is_object(hdr))
        return refuse(why, "header is not a JSON object");

    json_object_foreach(hdr, key, v)
    {
        if (strcmp(key, "alg") == 0 || strcmp(key, "typ") == 0 || strcmp(key, "kid") == 0)
            continue;
        for (size_t i = 0; i < ELEMENTSOF(header_refused); i++)
            if (strcmp(key, header_refused[i].name) == 0)
                return refuse(why, header_refused[i].why);
        return refuse(why, "unexpected header field");
    }

    if (!json_str_is(json_object_get(hdr, "alg"), "ES256"))
        return refuse(why, "algorithm not allowed");
    v = json_object_get(hdr, "typ");
    if (v && !json_str_is(v, "JWT"))
        return refuse(why, "header 'typ' must be \"JWT\"");
    v = json_object_get(hdr, "kid");
    if (!v)
        return refuse(why, "missing kid");
    if (!json_is_string(v) || !is_kid(json_string_value(v), json_string_length(v)))
        return refuse(why, "malformed kid");
    memcpy(kid, json_string_value(v), json_string_length(v) + 1);
    k = ring_find(ring, kid);
    if (!k)
        return refuse(why, "unknown kid");
    *ret = k;
    return 0;
}

/* Verify the JWS signature (raw r||s, RFC 7518 §3.4) over input with OpenSSL. */
static int check_signature(const struct jwt_key *k, const char *input, size_t inlen,
                           const char *sig, size_t siglen, const char **why)
{
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *es = NULL;
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
    uint8_t raw[ES256_SIG_LEN + 1];
    unsigned char *der = NULL;
    BIGNUM *r = NULL, *s = NULL;
    int n, derlen, ok;

    n = base64url_decode(sig, siglen, raw, sizeof(raw));
    if (n != ES256_SIG_LEN)
        return refuse(why, "bad signature");

    es = ECDSA_SIG_new();
    r = BN_bin2bn(raw, ES256_HALF, NULL);
    s = BN_bin2bn(raw + ES256_HALF, ES256_HALF, NULL);
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ERR_clear_error();
        return -ENOMEM;
    }
    derlen = i2d_ECDSA_SIG(es, &der);
    ctx = EVP_MD_CTX_new();
    if (derlen <= 0 || !ctx) {
        OPENSSL_free(der);
        ERR_clear_error();
        return -ENOMEM;
    }
    /* EVP_PKEY is safe to share between threads for verification; the ctx is ours. */
    ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
         EVP_DigestVerify(ctx, der, (size_t)derlen, (const unsigned char *)input, inlen) == 1;
    OPENSSL_free(der);
    ERR_clear_error();
    if (!ok)
        return refuse(why, "bad signature");
    return 0;
}

/* Our own strict parse of the payload (duplicate keys refused), then jwt_decode() with the
 * kid's public key: the claims libjwt returns must be exactly what we parsed. */
static int decode_claims(const struct jwt_key *k, const char *token, size_t len,
                         const char *payload, size_t plen, json_t **ret, const char **why)
{
    _cleanup_(jwt_freep) jwt_t *jwt = NULL;
    _cleanup_json_ json_t *claims = NULL;
    _cleanup_json_ json_t *raw = NULL;
    _cleanup_free_ char *grants = NULL;
    char buf[JWT_TOKEN_MAX + 1];
    uint8_t dec[JWT_TOKEN_MAX];
    int n, r;

    n = base64url_decode(payload, plen, dec, sizeof(dec));
    if (n < 0)
        return refuse(why, "malformed payload");
    r = jsonv_parse((const char *)dec, (size_t)n, JWT_JSON_DEPTH, &raw, NULL);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || !json_is_object(raw))
        return refuse(why, "malformed payload");

    memcpy(buf, token, len);
    buf[len] = '\0';
    r = jwt_decode(&jwt, buf, (const unsigned char *)k->pub_pem, (int)k->pub_pem_len);
    ERR_clear_error();
    if (r == ENOMEM)
        return -ENOMEM;
    if (r != 0 || !jwt)
        return refuse(why, "token rejected by libjwt");
    /* Our header check already demanded ES256; this catches libjwt reading it otherwise. */
    if (jwt_get_alg(jwt) != JWT_ALG_ES256)
        return refuse(why, "algorithm not allowed");

    grants = jwt_get_grants_json(jwt, NULL);
    if (!grants)
        return refuse(why, "token rejected by libjwt");
    r = jsonv_parse(grants, strlen(grants), JWT_JSON_DEPTH, &claims, NULL);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || !json_equal(raw, claims))
        return refuse(why, "token rejected by libjwt");

    *ret = TAKE_PTR(claims);
    return 0;
}

/* Types first, table driven; values after. Unknown claims are tolerated so that a newer
 * orchd may add one without an older one refusing its tokens during a rolling upgrade. */
static const struct jsonv_field claim_fields[] = {
    {"iss", JSONV_STRING, JSONV_REQUIRED, 0, 0},
    {"aud", JSONV_ANY, JSONV_REQUIRED, 0, 0}, /* string or array of strings, checked below */
    {"exp", JSONV_INT, JSONV_REQUIRED, 0, 0},
    {"nbf", JSONV_INT, JSONV_REQUIRED, 0, 0},
    {"iat", JSONV_INT, JSONV_REQUIRED, 0, 0},
    {"sub", JSONV_STRING, JSONV_REQUIRED, 1, JWT_SUB_MAX},
    {"role", JSONV_STRING, JSONV_REQUIRED, 0, 0},
    {"tenant", JSONV_UUID, JSONV_NULLABLE, 0, 0},
    {"jti", JSONV_UUID, JSONV_REQUIRED, 0, 0},
};

static const struct {
    const char *name;
    const char *missing;
    const char *bad;
} claim_why[] = {
    {"iss", "missing claim 'iss'", "claim 'iss' must be a string"},
    {"aud", "missing claim 'aud'", "claim 'aud' must be a string or an array of strings"},
    {"exp", "missing claim 'exp'", "claim 'exp' must be an integer"},
    {"nbf", "missing claim 'nbf'", "claim 'nbf' must be an integer"},
    {"iat", "missing claim 'iat'", "claim 'iat' must be an integer"},
    {"sub", "missing claim 'sub'", "claim 'sub' must be a string of 1 to 128 bytes"},
    {"role", "missing claim 'role'", "claim 'role' must be a string"},
    {"tenant", "missing claim 'tenant'", "claim 'tenant' must be a UUID string"},
    {"jti", "missing claim 'jti'", "claim 'jti' must be a UUID string"},
};

static int refuse_claim(const char **why, const json_t *claims, const char *field)
{
    for (size_t i = 0; i < ELEMENTSOF(claim_why); i++)
        if (strcmp(claim_why[i].name, field) == 0)
            return refuse(why,
                          json_object_get(claims, field) ? claim_why[i].bad : claim_why[i].missing);
    return refuse(why, "malformed claims");
}

static int check_audience(const json_t *aud, const char *expected, const char **why)
{
    bool found = false;
    size_t i;
    json_t *v;

    if (json_is_string(aud))
        return json_str_is(aud, expected) ? 0 : refuse(why, "wrong audience");
    if (!json_is_array(aud))
        return refuse(why, "claim 'aud' must be a string or an array of strings");
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return refuse(why, "claim 'aud' must be a string or an array of strings");
        if (json_str_is(v, expected))
            found = true;
    }
    return found ? 0 : refuse(why, "wrong audience");
}

/* Copy a UUID claim in canonical lower-case form; length checked because jansson strings
 * may hide a NUL that would make "<uuid>\u0000junk" look valid. */
static bool uuid_claim(const json_t *v, char out[ID_STR_LEN])
{
    uint8_t id[16];

    if (!json_is_string(v) || json_string_length(v) != ID_STR_LEN - 1 ||
        id_parse(json_string_value(v), id) < 0)
        return false;
    id_format(id, out);
    return true;
}

static int check_times(int64_t exp, int64_t nbf, int64_t iat, const struct jwt_params *p,
                       int64_t now, const char **why)
{
    if (now >= exp + p->leeway_s)
        return refuse(why, "expired");
    if (nbf - p->leeway_s > now)
        return refuse(why, "not yet valid");
    if (iat - p->leeway_s > now)
        return refuse(why, "issued in the future");
    return 0;
}

int jwt_claims_current(const struct jwt_claims *c, const struct jwt_params *p, int64_t now,
                       const char **why)
{
    const char *reason = NULL;
    int r = check_times(c->exp, c->nbf, c->iat, p, now, &reason);
    if (why)
        *why = reason;
    return r;
}

static int check_claims(const json_t *claims, const struct jwt_params *p, int64_t now,
                        struct jwt_claims *ret, const char **why)
{
    struct jsonv_error jerr;
    struct jwt_claims c = {0};
    const json_t *sub, *role, *tenant;
    int64_t exp, nbf, iat;
    int r;

    if (jsonv_check(claims, claim_fields, ELEMENTSOF(claim_fields), true, &jerr) < 0)
        return refuse_claim(why, claims, jerr.field);

    if (!json_str_is(json_object_get(claims, "iss"), p->issuer))
        return refuse(why, "wrong issuer");
    r = check_audience(json_object_get(claims, "aud"), p->audience, why);
    if (r < 0)
        return r;

    exp = json_integer_value(json_object_get(claims, "exp"));
    nbf = json_integer_value(json_object_get(claims, "nbf"));
    iat = json_integer_value(json_object_get(claims, "iat"));
    if (exp < 0 || exp > JWT_TIME_MAX)
        return refuse(why, "claim 'exp' out of range");
    if (nbf < 0 || nbf > JWT_TIME_MAX)
        return refuse(why, "claim 'nbf' out of range");
    if (iat < 0 || iat > JWT_TIME_MAX)
        return refuse(why, "claim 'iat' out of range");
    r = check_times(exp, nbf, iat, p, now, why);
    if (r < 0)
        return r;
    if (exp <= iat)
        return refuse(why, "claim 'exp' must be after 'iat'");
    if (exp - iat > JWT_TTL_MAX)
        return refuse(why, "lifetime too long");

    sub = json_object_get(claims, "sub");
    if (!is_sub(json_string_value(sub), json_string_length(sub)))
        return refuse(why, "claim 'sub' must not hold control characters");
    role = json_object_get(claims, "role");
    if (!is_role(json_string_value(role), json_string_length(role)))
        return refuse(why, "unknown role");
    tenant = json_object_get(claims, "tenant");
    if (json_str_is(role, "platform")) {
        if (tenant && !json_is_null(tenant))
            return refuse(why, "platform role must not have a tenant");
    } else {
        if (!tenant || json_is_null(tenant))
            return refuse(why, "missing claim 'tenant'");
        if (!uuid_claim(tenant, c.tenant))
            return refuse(why, "claim 'tenant' must be a UUID string");
    }
    if (!uuid_claim(json_object_get(claims, "jti"), c.jti))
        return refuse(why, "claim 'jti' must be a UUID string");

    memcpy(c.sub, json_string_value(sub), json_string_length(sub) + 1);
    memcpy(c.role, json_string_value(role), json_string_length(role) + 1);
    c.iat = iat;
    c.nbf = nbf;
    c.exp = exp;
    *ret = c;
    return 0;
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int verify(const struct jwt_ring *ring, const struct jwt_params *p, const char *token,
                  size_t len, int64_t now, struct jwt_claims *out, const char **w)
{
    _cleanup_json_ json_t *claims = NULL;
    const struct jwt_key *k = NULL;
    size_t dots[2], ndots = 0;
    int r;

    /* The length cap comes before anything reads the token. */
    if (len > JWT_TOKEN_MAX)
        return refuse(w, "token too long");
    if (!token || len == 0)
        return refuse(w, "empty token");

    /* Compact JWS only: base64url alphabet and exactly two dots (no JWE, no padding, no
     * whitespace, no NUL that would cut the copy we hand to libjwt). */
    for (size_t i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (ndots == 2)
                return refuse(w, "malformed token");
            dots[ndots++] = i;
        } else if (!is_b64url(token[i])) {
            return refuse(w, "malformed token");
        }
    }
    if (ndots != 2 || dots[0] == 0 || dots[1] == dots[0] + 1)
        return refuse(w, "malformed token");

    r = check_header(ring, token, dots[0], &k, w);
    if (r < 0)
        return r;
    r = check_signature(k, token, dots[1], token + dots[1] + 1, len - dots[1] - 1, w);
    if (r < 0)
        return r;
    r = decode_claims(k, token, len, token + dots[0] + 1, dots[1] - dots[0] - 1, &claims, w);
    if (r < 0)
        return r;
    return check_claims(claims, p, now, out, w);
}

int jwt_verify(const struct jwt_ring *ring, const struct jwt_params *p, const char *token,
               size_t len, int64_t now, struct jwt_claims *out, const char **why)
{
    const char *reason = NULL;
    int r;

    if (!ring || ring->n == 0 || !params_valid(p) || !out || now < 0 || now > JWT_TIME_MAX) {
        reason = "invalid arguments";
        r = -EINVAL;
    } else {
        r = verify(ring, p, token, len, now, out, &reason);
        if (r == -ENOMEM)
            reason = "out of memory";
    }
    if (why)
        *why = r < 0 ? reason : NULL;
    return r;
}
