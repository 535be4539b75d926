/* transport-winhttp.c: the agent's HTTPS client on WinHTTP, for the Windows agent (see
 * transport.h; transport-curl.c is the POSIX one, transport-common.c their shared part).
 *
 * One session and one connect handle per transport: WinHTTP keeps the connection alive
 * between requests. The session is asynchronous so that the waiting thread can give a
 * request up at once (transport_wakeup(), its own deadline): it waits for each completion
 * on an event. The system's proxy settings apply (automatic proxy from Windows 8.1, else
 * the WinHTTP default) unless the options name a proxy; the options' no_proxy is matched
 * here, with libcurl's rules, against the one server this transport talks to.
 *
 * Certificates: with no CA file, WinHTTP verifies against the system store. With a pinned
 * CA file, WinHTTP is told to let an unknown CA through and the chain is checked here
 * instead: it must end at a CA of that file and name the server. The credential and the
 * body must not reach a server before that check, and where the check can run differs:
 *   - Windows hands out the server certificate at WINHTTP_CALLBACK_STATUS_SENDING_REQUEST,
 *     before the request is written; closing the request handle in that callback cancels
 *     the send (the documented way, the one .NET's WinHttpHandler relies on).
 *   - wine (dlls/winhttp/request.c) builds the request's bytes before SENDING_REQUEST and
 *     writes them even when the handle was closed in it; its CONNECTED_TO_SERVER comes after
 *     the TLS handshake but before the bytes are built, with no certificate to read yet.
 * So: the body is written with WinHttpWriteData once the request was sent, i.e. after the
 * check; and when a request opens a new connection whose certificate cannot be
 * read yet (CONNECTED_TO_SERVER), its Authorization header is removed, and once the
 * connection passed the check the request is made again, with the credential, on that now
 * verified, kept-alive connection. Where the certificate is readable at CONNECTED_TO_SERVER
 * the check runs there and nothing is sent twice.
 * wine also pools connections process-wide by host name and port, whatever the security
 * flags they were opened with, and checks nothing when it reuses one: a process should use
 * one CA setting per server, as the agent does. A request given up there finishes in the
 * background (wine does not cancel a call when its handle is closed) until its timeout. */
#include "agent/transport.h"

#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <wincrypt.h>
#include <winhttp.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/transport-impl.h"
#include "common/buf.h"
#include "common/cleanup.h"
#include "proto/agent.h"

#define CONNECT_TIMEOUT_MS 10000
/* Attempts of one request: a new connection whose certificate is checked late costs one. */
#define MAX_ATTEMPTS 3

/* The pinned CA: shared by the transport and its requests (a request's callbacks may run
 * after the transport is gone, when wine finishes a given-up call late). */
struct pin {
    volatile LONG refs;
    HCERTSTORE store;        /* the CA file's certificates */
    HCERTCHAINENGINE engine; /* chains ending at those alone */
    wchar_t *host;           /* the name the certificate must carry */
    BYTE ip[16];             /* host as an address (IPv4 or IPv6), when it is one */
    size_t ip_len;           /* 0: host is a DNS name */
    char *ca_file;
    char load_error[160]; /* why the CA file is unusable; "" when it is usable */
};

/* What a request's callbacks share with the thread that waits for it. Freed when both let go:
 * the thread, and WinHTTP at HANDLE_CLOSING (the last callback of the handle). */
struct req {
    volatile LONG refs;
    volatile LONG closed; /* the handle was closed (by the thread or by the check) */
    HINTERNET h;
    HANDLE done;  /* set at each completion */
    DWORD event;  /* the last completion, a WINHTTP_CALLBACK_STATUS_* */
    DWORD error;  /* its error, at REQUEST_ERROR */
    DWORD nread;  /* bytes of the last READ_COMPLETE */
    DWORD secure; /* WINHTTP_CALLBACK_STATUS_FLAG_* of a SECURE_FAILURE */
    struct pin *pin;
    volatile LONG checked;  /* the pinned check passed for this request's connection */
    volatile LONG failed;   /* it failed: nothing more goes out */
    volatile LONG withheld; /* the credential was removed (the check could not run yet) */
    char cert_error[224];
    char *body; /* written after the check; here since a late write may still read it */
    size_t body_len;
    char buf[16384]; /* WinHttpReadData's, here since a late read may still fill it */
};

struct transport {
    HINTERNET session;
    HINTERNET connect;
    HANDLE wake;     /* transport_wakeup(): auto-reset */
    char *base;      /* the server URL, for messages */
    wchar_t *prefix; /* the URL's path, before each request's */
    struct pin *pin; /* NULL: the system store */
    wchar_t *auth;   /* "Authorization: Bearer ...\r\n" or NULL */
    int64_t timeout_ms;
};

static int64_t now_ms(void)
{
    return (int64_t)GetTickCount64();
}

/* UTF-8 to a new UTF-16 string; NULL on failure. */
static wchar_t *wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0)
        return NULL;
    wchar_t *w = malloc((size_t)n * sizeof(*w));
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n)
        FREE_AND_NULL(w);
    return w;
}

/* The first n bytes of s as a new string (mingw has no strndup). */
static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void wipe_free(wchar_t *w)
{
    if (w)
        SecureZeroMemory(w, wcslen(w) * sizeof(*w));
    free(w);
}

/* Words for the errors a transport meets, where winhttp.dll has no message table (wine). */
static const struct {
    DWORD err;
    const char *text;
} winhttp_errors[] = {
    {ERROR_WINHTTP_TIMEOUT, "the operation timed out"},
    {ERROR_WINHTTP_NAME_NOT_RESOLVED, "the server name could not be resolved"},
    {ERROR_WINHTTP_CANNOT_CONNECT, "cannot connect to the server"},
    {ERROR_WINHTTP_CONNECTION_ERROR, "the connection was reset or closed"},
    {ERROR_WINHTTP_INVALID_SERVER_RESPONSE, "the server's answer could not be read"},
    {ERROR_WINHTTP_SECURE_CHANNEL_ERROR, "the TLS handshake with the server failed"},
    {ERROR_WINHTTP_SECURE_FAILURE, "the server certificate was refused"},
    {ERROR_WINHTTP_OPERATION_CANCELLED, "the request was cancelled"},
};

/* WinHTTP's own words for err (winhttp.dll's message table), else ours, else its number. */
static void winhttp_strerror(DWORD err, char *out, size_t size)
{
    char msg[200] = "";
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_FROM_SYSTEM |
                                 FORMAT_MESSAGE_IGNORE_INSERTS,
                             GetModuleHandleA("winhttp.dll"), err, 0, msg, sizeof(msg), NULL);
    while (n > 0 &&
           (msg[n - 1] == '\r' || msg[n - 1] == '\n' || msg[n - 1] == ' ' || msg[n - 1] == '.'))
        msg[--n] = '\0';
    for (size_t i = 0; n == 0 && i < ELEMENTSOF(winhttp_errors); i++)
        if (winhttp_errors[i].err == err)
            n = (DWORD)snprintf(msg, sizeof(msg), "%s", winhttp_errors[i].text);
    if (n > 0)
        snprintf(out, size, "%s (WinHTTP error %lu)", msg, (unsigned long)err);
    else
        snprintf(out, size, "WinHTTP error %lu", (unsigned long)err);
}

/* The pinned CA ------------------------------------------------------------------------ */

static void pin_unref(struct pin *p)
{
    if (!p || InterlockedDecrement(&p->refs) > 0)
        return;
    if (p->engine)
        CertFreeCertificateChainEngine(p->engine);
    if (p->store)
        CertCloseStore(p->store, 0);
    free(p->host);
    free(p->ca_file);
    free(p);
}

/* Every PEM certificate of path into store. Returns how many, or -errno. */
static int load_pem(const char *path, HCERTSTORE store)
{
    _cleanup_fclose_ FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    struct buf b = BUF_INIT;
    buf_init_max(&b, 4u << 20);
    char chunk[4096];
    size_t n;
    int r = 0;
    while (r == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        r = buf_append(&b, chunk, n);
    if (r < 0 || ferror(f)) {
        buf_free(&b);
        return r < 0 ? r : -EIO;
    }
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    int count = 0;
    for (const char *p = b.data ? strstr(b.data, begin) : NULL; p; p = strstr(p, begin)) {
        const char *e = strstr(p, end);
        if (!e)
            break;
        e += sizeof(end) - 1;
        DWORD len = 0;
        if (CryptStringToBinaryA(p, (DWORD)(e - p), CRYPT_STRING_BASE64HEADER, NULL, &len, NULL,
                                 NULL) &&
            len > 0) {
            BYTE *der = malloc(len);
            if (der &&
                CryptStringToBinaryA(p, (DWORD)(e - p), CRYPT_STRING_BASE64HEADER, der, &len, NULL,
                                     NULL) &&
                CertAddEncodedCertificateToStore(store, X509_ASN_ENCODING, der, len,
                                                 CERT_STORE_ADD_USE_EXISTING, NULL))
                count++;
            free(der);
        }
        p = e;
    }
    buf_free(&b);
    return count;
}

/* A pin for ca_file and host. -ENOMEM only: an unusable file is remembered in load_error, so
 * that every request says why (as libcurl does with a bad CA file). */
static int pin_new(const char *ca_file, const wchar_t *host, struct pin **ret)
{
    struct pin *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->refs = 1;
    p->ca_file = strdup(ca_file);
    p->host = _wcsdup(host);
    if (InetPtonW(AF_INET, host, p->ip) == 1)
        p->ip_len = 4;
    else if (InetPtonW(AF_INET6, host, p->ip) == 1)
        p->ip_len = 16;
    p->store = CertOpenStore(CERT_STORE_PROV_MEMORY, 0, 0, CERT_STORE_CREATE_NEW_FLAG, NULL);
    if (!p->ca_file || !p->host || !p->store) {
        pin_unref(p);
        return -ENOMEM;
    }
    int n = load_pem(ca_file, p->store);
    if (n <= 0) {
        snprintf(p->load_error, sizeof(p->load_error), "cannot read a CA certificate from %s: %s",
                 ca_file, n < 0 ? strerror(-n) : "no PEM certificate in it");
    } else {
        /* The Windows 8 layout, else the Windows 7 one (without dwExclusiveFlags), which is
         * also the one wine 8 takes. */
        CERT_CHAIN_ENGINE_CONFIG cfg = {.cbSize = sizeof(cfg), .hExclusiveRoot = p->store};
        bool ok = CertCreateCertificateChainEngine(&cfg, &p->engine);
        if (!ok) {
            cfg.cbSize = offsetof(CERT_CHAIN_ENGINE_CONFIG, dwExclusiveFlags);
            ok = CertCreateCertificateChainEngine(&cfg, &p->engine);
        }
        if (!ok) {
            char why[200];
            winhttp_strerror(GetLastError(), why, sizeof(why));
            snprintf(p->load_error, sizeof(p->load_error), "cannot use the CA of %s: %s", ca_file,
                     why);
            p->engine = NULL;
        }
    }
    *ret = p;
    return 0;
}

/* Whether cert's subjectAltName lists the address ip (ip_len bytes). The SSL policy is
 * not asked: wine's matches DNS names only. */
static bool cert_names_ip(PCCERT_CONTEXT cert, const BYTE *ip, size_t ip_len)
{
    PCERT_EXTENSION ext = CertFindExtension(szOID_SUBJECT_ALT_NAME2, cert->pCertInfo->cExtension,
                                            cert->pCertInfo->rgExtension);
    CERT_ALT_NAME_INFO *names = NULL;
    DWORD n = 0;
    if (!ext || !CryptDecodeObjectEx(X509_ASN_ENCODING, X509_ALTERNATE_NAME, ext->Value.pbData,
                                     ext->Value.cbData, CRYPT_DECODE_ALLOC_FLAG, NULL, &names, &n))
        return false;
    bool found = false;
    for (DWORD i = 0; !found && i < names->cAltEntry; i++) {
        const CERT_ALT_NAME_ENTRY *e = &names->rgAltEntry[i];
        found = e->dwAltNameChoice == CERT_ALT_NAME_IP_ADDRESS && e->IPAddress.cbData == ip_len &&
                memcmp(e->IPAddress.pbData, ip, ip_len) == 0;
    }
    LocalFree(names);
    return found;
}

/* Check cert against the pin: its chain ends at a pinned CA, is fit for a TLS server, and it
 * names the host. Returns 0, or -EPROTO with why. */
static int pin_check(const struct pin *p, PCCERT_CONTEXT cert, char *why, size_t size)
{
    if (p->load_error[0]) {
        snprintf(why, size, "%s", p->load_error);
        return -EPROTO;
    }
    LPSTR usage[] = {(LPSTR)szOID_PKIX_KP_SERVER_AUTH};
    CERT_CHAIN_PARA para = {.cbSize = sizeof(para)};
    para.RequestedUsage.dwType = USAGE_MATCH_TYPE_AND;
    para.RequestedUsage.Usage.cUsageIdentifier = 1;
    para.RequestedUsage.Usage.rgpszUsageIdentifier = usage;
    PCCERT_CHAIN_CONTEXT chain = NULL;
    if (!CertGetCertificateChain(p->engine, cert, NULL, cert->hCertStore, &para, 0, NULL, &chain)) {
        snprintf(why, size, "server certificate not signed by the pinned CA %s", p->ca_file);
        return -EPROTO;
    }
    int r = 0;
    const CERT_SIMPLE_CHAIN *simple = chain->cChain > 0 ? chain->rgpChain[0] : NULL;
    PCCERT_CONTEXT root = simple && simple->cElement > 0
                              ? simple->rgpElement[simple->cElement - 1]->pCertContext
                              : NULL;
    PCCERT_CONTEXT pinned = root ? CertFindCertificateInStore(p->store, X509_ASN_ENCODING, 0,
                                                              CERT_FIND_EXISTING, root, NULL)
                                 : NULL;
    /* An address is matched here (cert_names_ip), a name by the policy. */
    HTTPSPolicyCallbackData ssl = {.cbSize = sizeof(ssl),
                                   .dwAuthType = AUTHTYPE_SERVER,
                                   .pwszServerName = p->ip_len ? NULL : p->host};
    CERT_CHAIN_POLICY_PARA pp = {.cbSize = sizeof(pp), .pvExtraPolicyPara = &ssl};
    CERT_CHAIN_POLICY_STATUS ps = {.cbSize = sizeof(ps)};
    if (!pinned || (chain->TrustStatus.dwErrorStatus &
                    (CERT_TRUST_IS_UNTRUSTED_ROOT | CERT_TRUST_IS_PARTIAL_CHAIN |
                     CERT_TRUST_IS_NOT_SIGNATURE_VALID | CERT_TRUST_IS_CYCLIC))) {
        snprintf(why, size,
                 "server certificate not signed by the pinned CA %s (chain status 0x%lx)",
                 p->ca_file, (unsigned long)chain->TrustStatus.dwErrorStatus);
        r = -EPROTO;
    } else if (!CertVerifyCertificateChainPolicy(CERT_CHAIN_POLICY_SSL, chain, &pp, &ps) ||
               ps.dwError != 0) {
        DWORD e = ps.dwError;
        if (e == (DWORD)CERT_E_CN_NO_MATCH)
            snprintf(why, size, "server certificate does not name %ls", p->host);
        else if (e == (DWORD)CERT_E_EXPIRED)
            snprintf(why, size, "server certificate expired or not yet valid");
        else if (e == (DWORD)CERT_E_UNTRUSTEDROOT || e == (DWORD)CERT_E_CHAINING)
            snprintf(why, size, "server certificate not signed by the pinned CA %s", p->ca_file);
        else
            snprintf(why, size, "server certificate refused (policy error 0x%08lx)",
                     (unsigned long)e);
        r = -EPROTO;
    } else if (p->ip_len && !cert_names_ip(cert, p->ip, p->ip_len)) {
        snprintf(why, size, "server certificate does not name %ls", p->host);
        r = -EPROTO;
    }
    if (pinned)
        CertFreeCertificateContext(pinned);
    CertFreeCertificateChain(chain);
    return r;
}

/* A request's shared state ---------------------------------------------------------------- */

static void req_unref(struct req *q)
{
    if (!q || InterlockedDecrement(&q->refs) > 0)
        return;
    if (q->done)
        CloseHandle(q->done);
    pin_unref(q->pin);
    free(q->body);
    free(q);
}

/* Close the request's handle once, whoever asks first. */
static void req_close(struct req *q)
{
    if (q->h && InterlockedExchange(&q->closed, 1) == 0)
        WinHttpCloseHandle(q->h);
}

/* Remove the request's Authorization header (a replaced header with no value is removed). */
static void req_withhold(struct req *q, HINTERNET h)
{
    if (WinHttpAddRequestHeaders(h, L"Authorization:", (DWORD)-1, WINHTTP_ADDREQ_FLAG_REPLACE))
        InterlockedExchange(&q->withheld, 1);
}

/* The pinned check, from the callbacks. At CONNECTED_TO_SERVER the certificate may not be
 * readable yet (wine): the credential is then withheld from this request. */
static void req_check(struct req *q, HINTERNET h, bool at_connect)
{
    if (q->failed || q->checked)
        return;
    PCCERT_CONTEXT cert = NULL;
    DWORD n = sizeof(cert);
    int r;
    if (!WinHttpQueryOption(h, WINHTTP_OPTION_SERVER_CERT_CONTEXT, &cert, &n) || !cert) {
        if (at_connect) {
            req_withhold(q, h);
            return;
        }
        snprintf(q->cert_error, sizeof(q->cert_error), "cannot read the server certificate");
        r = -EPROTO;
    } else {
        r = pin_check(q->pin, cert, q->cert_error, sizeof(q->cert_error));
        CertFreeCertificateContext(cert);
    }
    if (r == 0) {
        InterlockedExchange(&q->checked, 1);
        return;
    }
    InterlockedExchange(&q->failed, 1);
    req_withhold(q, h);
    req_close(q);
}

static void CALLBACK on_status(HINTERNET h, DWORD_PTR ctx, DWORD status, void *info, DWORD len)
{
    struct req *q = (struct req *)ctx;
    if (!q)
        return; /* the session's and connection's handles */
    switch (status) {
    case WINHTTP_CALLBACK_STATUS_CONNECTED_TO_SERVER:
        if (q->pin)
            req_check(q, h, true);
        return;
    case WINHTTP_CALLBACK_STATUS_SENDING_REQUEST:
        if (q->pin)
            req_check(q, h, false);
        return;
    case WINHTTP_CALLBACK_STATUS_SECURE_FAILURE:
        if (info && len >= sizeof(DWORD))
            q->secure = *(DWORD *)info;
        return;
    case WINHTTP_CALLBACK_STATUS_READ_COMPLETE:
        q->nread = len;
        break;
    case WINHTTP_CALLBACK_STATUS_REQUEST_ERROR:
        q->error = info ? ((WINHTTP_ASYNC_RESULT *)info)->dwError : ERROR_WINHTTP_INTERNAL_ERROR;
        break;
    case WINHTTP_CALLBACK_STATUS_SENDREQUEST_COMPLETE:
    case WINHTTP_CALLBACK_STATUS_WRITE_COMPLETE:
    case WINHTTP_CALLBACK_STATUS_HEADERS_AVAILABLE:
        break;
    case WINHTTP_CALLBACK_STATUS_HANDLE_CLOSING:
        q->event = status;
        SetEvent(q->done);
        req_unref(q);
        return;
    default:
        return;
    }
    q->event = status;
    SetEvent(q->done);
}

/* The transport ------------------------------------------------------------------------- */

/* The proxy part of WinHttpOpen for this transport's options and server host. */
static HINTERNET open_session(const struct transport_options *o, const char *host)
{
    DWORD flags = WINHTTP_FLAG_ASYNC;
    if (o->proxy && o->proxy[0]) {
        if (transport_no_proxy(o->no_proxy, host))
            return WinHttpOpen(L"orch-agent", WINHTTP_ACCESS_TYPE_NO_PROXY, WINHTTP_NO_PROXY_NAME,
                               WINHTTP_NO_PROXY_BYPASS, flags);
        /* WinHTTP takes host:port and speaks plain HTTP to the proxy (CONNECT). */
        const char *p = o->proxy;
        if (strncmp(p, "http://", 7) == 0)
            p += 7;
        else if (strstr(p, "://"))
            return NULL;
        _cleanup_free_ char *hp = dup_n(p, strcspn(p, "/"));
        _cleanup_free_ wchar_t *w = hp ? wide(hp) : NULL;
        if (!w)
            return NULL;
        return WinHttpOpen(L"orch-agent", WINHTTP_ACCESS_TYPE_NAMED_PROXY, w,
                           WINHTTP_NO_PROXY_BYPASS, flags);
    }
    if (o->no_proxy && o->no_proxy[0] && transport_no_proxy(o->no_proxy, host))
        return WinHttpOpen(L"orch-agent", WINHTTP_ACCESS_TYPE_NO_PROXY, WINHTTP_NO_PROXY_NAME,
                           WINHTTP_NO_PROXY_BYPASS, flags);
    /* The system's settings: automatic (Windows 8.1 and later), else WinHTTP's default. */
    HINTERNET s = WinHttpOpen(L"orch-agent", WINHTTP_ACCESS_TYPE_AUTOMATIC_PROXY,
                              WINHTTP_NO_PROXY_NAME, WINHTTP_NO_PROXY_BYPASS, flags);
    if (!s)
        s = WinHttpOpen(L"orch-agent", WINHTTP_ACCESS_TYPE_DEFAULT_PROXY, WINHTTP_NO_PROXY_NAME,
                        WINHTTP_NO_PROXY_BYPASS, flags);
    return s;
}

int transport_new(const struct transport_options *o, struct transport **ret)
{
    if (!o->server_url || strncmp(o->server_url, "https://", 8) != 0)
        return -EINVAL;
    struct transport *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    size_t n = strlen(o->server_url);
    while (n > 0 && o->server_url[n - 1] == '/')
        n--;
    t->base = dup_n(o->server_url, n);
    t->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    t->wake = CreateEventW(NULL, FALSE, FALSE, NULL);
    _cleanup_free_ wchar_t *url = t->base ? wide(t->base) : NULL;
    if (!t->base || !t->wake || !url || transport_set_credential(t, o->credential) < 0) {
        transport_free(t);
        return -ENOMEM;
    }
    wchar_t host[256], path[2048];
    URL_COMPONENTS uc = {.dwStructSize = sizeof(uc),
                         .lpszHostName = host,
                         .dwHostNameLength = ELEMENTSOF(host),
                         .lpszUrlPath = path,
                         .dwUrlPathLength = ELEMENTSOF(path)};
    if (!WinHttpCrackUrl(url, 0, 0, &uc) || uc.nScheme != INTERNET_SCHEME_HTTPS || !host[0]) {
        transport_free(t);
        return -EINVAL;
    }
    char host8[512];
    if (WideCharToMultiByte(CP_UTF8, 0, host, -1, host8, sizeof(host8), NULL, NULL) <= 0) {
        transport_free(t);
        return -EINVAL;
    }
    t->prefix = _wcsdup(path);
    t->session = open_session(o, host8);
    if (!t->prefix || !t->session) {
        int r = t->prefix ? -EINVAL : -ENOMEM; /* a proxy WinHTTP cannot use (https://) */
        transport_free(t);
        return r;
    }
    /* TLS 1.2 and later; TLS 1.3 where this Windows has it. */
    DWORD protocols = WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_2 | WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_3;
    if (!WinHttpSetOption(t->session, WINHTTP_OPTION_SECURE_PROTOCOLS, &protocols,
                          sizeof(protocols))) {
        protocols = WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_2;
        if (!WinHttpSetOption(t->session, WINHTTP_OPTION_SECURE_PROTOCOLS, &protocols,
                              sizeof(protocols))) {
            transport_free(t); /* never fall back to what this Windows allows by default */
            return -EINVAL;
        }
    }
    /* A redirect would carry the credential elsewhere: libcurl does not follow them either. */
    DWORD policy = WINHTTP_OPTION_REDIRECT_POLICY_NEVER;
    DWORD notify = WINHTTP_CALLBACK_FLAG_ALL_COMPLETIONS | WINHTTP_CALLBACK_FLAG_HANDLES |
                   WINHTTP_CALLBACK_FLAG_SECURE_FAILURE | WINHTTP_CALLBACK_FLAG_CONNECT_TO_SERVER |
                   WINHTTP_CALLBACK_FLAG_SEND_REQUEST;
    if (!WinHttpSetOption(t->session, WINHTTP_OPTION_REDIRECT_POLICY, &policy, sizeof(policy)) ||
        WinHttpSetStatusCallback(t->session, on_status, notify, 0) ==
            WINHTTP_INVALID_STATUS_CALLBACK) {
        transport_free(t);
        return -EINVAL;
    }
    t->connect = WinHttpConnect(t->session, host, uc.nPort, 0);
    if (!t->connect) {
        transport_free(t);
        return -ENOMEM;
    }
    /* The certificate names an IPv6 address without the URL's brackets. */
    wchar_t *name = host;
    size_t hl = wcslen(host);
    if (hl > 2 && host[0] == L'[' && host[hl - 1] == L']') {
        host[hl - 1] = L'\0';
        name = host + 1;
    }
    if (o->ca_file && o->ca_file[0] && pin_new(o->ca_file, name, &t->pin) < 0) {
        transport_free(t);
        return -ENOMEM;
    }
    *ret = t;
    return 0;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    if (t->connect)
        WinHttpCloseHandle(t->connect);
    if (t->session)
        WinHttpCloseHandle(t->session);
    if (t->wake)
        CloseHandle(t->wake);
    pin_unref(t->pin);
    wipe_free(t->auth);
    free(t->prefix);
    free(t->base);
    free(t);
}

int transport_set_credential(struct transport *t, const char *credential)
{
    wipe_free(t->auth);
    t->auth = NULL;
    if (!credential)
        return 0;
    size_t n = strlen(credential) + 64;
    _cleanup_free_ char *line = malloc(n);
    if (!line)
        return -ENOMEM;
    snprintf(line, n, "Authorization: Bearer %s\r\n", credential);
    t->auth = wide(line);
    SecureZeroMemory(line, n);
    return t->auth ? 0 : -ENOMEM;
}

void transport_wakeup(struct transport *t)
{
    SetEvent(t->wake);
}

/* Wait for q's next completion until deadline, asking abort after each wakeup. 0, -EINTR or
 * -ETIMEDOUT. */
static int req_wait(struct transport *t, struct req *q, int64_t deadline, bool (*abort)(void *arg),
                    void *arg)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        HANDLE hs[2] = {q->done, t->wake};
        DWORD w = WaitForMultipleObjects(2, hs, FALSE, (DWORD)left);
        if (w == WAIT_OBJECT_0)
            return 0;
        if (w == WAIT_OBJECT_0 + 1) {
            if (abort && abort(arg))
                return -EINTR;
            continue;
        }
        if (w == WAIT_TIMEOUT)
            return -ETIMEDOUT;
        return -EPROTO;
    }
}

/* A failed WinHTTP call or completion as the transport's error. */
static int fail(struct transport *t, struct req *q, DWORD err, struct transport_reply *r)
{
    if (q && q->failed) {
        snprintf(r->error, sizeof(r->error), "%s: %s", t->base, q->cert_error);
        return -EPROTO;
    }
    char why[200];
    switch (err) {
    case ERROR_WINHTTP_SECURE_FAILURE:
    case ERROR_WINHTTP_SECURE_INVALID_CA:
    case ERROR_WINHTTP_SECURE_CERT_CN_INVALID:
    case ERROR_WINHTTP_SECURE_CERT_DATE_INVALID:
    case ERROR_WINHTTP_SECURE_INVALID_CERT:
    case ERROR_WINHTTP_SECURE_CERT_REVOKED:
    case ERROR_WINHTTP_SECURE_CERT_REV_FAILED:
    case ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE:
    case ERROR_WINHTTP_SECURE_CHANNEL_ERROR: {
        DWORD f = q ? q->secure : 0;
        if (err == ERROR_WINHTTP_SECURE_CERT_CN_INVALID ||
            (f & WINHTTP_CALLBACK_STATUS_FLAG_CERT_CN_INVALID))
            snprintf(why, sizeof(why), "server certificate does not name the server's host");
        else if (err == ERROR_WINHTTP_SECURE_INVALID_CA ||
                 (f & WINHTTP_CALLBACK_STATUS_FLAG_INVALID_CA))
            snprintf(why, sizeof(why), "server certificate not signed by a CA the system trusts");
        else if (err == ERROR_WINHTTP_SECURE_CERT_DATE_INVALID ||
                 (f & WINHTTP_CALLBACK_STATUS_FLAG_CERT_DATE_INVALID))
            snprintf(why, sizeof(why), "server certificate expired or not yet valid");
        else
            winhttp_strerror(err, why, sizeof(why));
        snprintf(r->error, sizeof(r->error), "%s: %s", t->base, why);
        return -EPROTO;
    }
    default:
        break;
    }
    winhttp_strerror(err, why, sizeof(why));
    snprintf(r->error, sizeof(r->error), "%s: %s", t->base, why);
    return err == ERROR_WINHTTP_TIMEOUT ? -ETIMEDOUT : -ECONNREFUSED;
}

/* Wait for the completion `want`; 0, or the error (r->error filled). */
static int req_step(struct transport *t, struct req *q, DWORD want, int64_t deadline,
                    bool (*abort)(void *arg), void *arg, struct transport_reply *r)
{
    int rc = req_wait(t, q, deadline, abort, arg);
    if (rc == -EINTR) {
        snprintf(r->error, sizeof(r->error), "%s: request given up", t->base);
        return rc;
    }
    if (rc < 0) {
        snprintf(r->error, sizeof(r->error), "%s: no answer within the request's time", t->base);
        return rc;
    }
    if (q->failed)
        return fail(t, q, 0, r);
    if (q->event == WINHTTP_CALLBACK_STATUS_REQUEST_ERROR)
        return fail(t, q, q->error, r);
    if (q->event != want)
        return fail(t, q, ERROR_WINHTTP_OPERATION_CANCELLED, r);
    return 0;
}

/* Start an asynchronous call (its BOOL result): ResetEvent first, so its completion stays. */
#define REQ_CALL(q, call) (ResetEvent((q)->done), (call))

static int64_t header_retry_after(HINTERNET h)
{
    wchar_t w[128];
    DWORD n = sizeof(w);
    char v[128];
    if (!WinHttpQueryHeaders(h, WINHTTP_QUERY_RETRY_AFTER, WINHTTP_HEADER_NAME_BY_INDEX, w, &n,
                             WINHTTP_NO_HEADER_INDEX) ||
        WideCharToMultiByte(CP_UTF8, 0, w, -1, v, sizeof(v), NULL, NULL) <= 0)
        return 0;
    return transport_retry_after(v, (int64_t)time(NULL));
}

/* One attempt. Returns 0 (answer in reply and r), 1 when it must be made again with the
 * credential (it was withheld from a new connection, now checked), or the error. */
static int exchange_once(struct transport *t, const wchar_t *method, const wchar_t *path,
                         const wchar_t *headers, const char *text, int64_t deadline,
                         bool (*abort)(void *arg), void *arg, struct buf *reply,
                         struct transport_reply *r)
{
    struct req *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(r->error, sizeof(r->error), "%s: out of memory", t->base);
        return -ENOMEM;
    }
    q->refs = 1;
    q->done = CreateEventW(NULL, TRUE, FALSE, NULL);
    q->body_len = text ? strlen(text) : 0;
    q->body = text ? strdup(text) : NULL;
    if (t->pin) {
        InterlockedIncrement(&t->pin->refs);
        q->pin = t->pin;
    }
    int rc;
    if (!q->done || (text && !q->body)) {
        snprintf(r->error, sizeof(r->error), "%s: out of memory", t->base);
        req_unref(q);
        return -ENOMEM;
    }
    q->h = WinHttpOpenRequest(t->connect, method, path, NULL, WINHTTP_NO_REFERER,
                              WINHTTP_DEFAULT_ACCEPT_TYPES, WINHTTP_FLAG_SECURE);
    if (!q->h) {
        rc = fail(t, NULL, GetLastError(), r);
        req_unref(q);
        return rc;
    }
    DWORD_PTR ctx = (DWORD_PTR)q;
    InterlockedIncrement(&q->refs); /* WinHTTP's, until HANDLE_CLOSING */
    if (!WinHttpSetOption(q->h, WINHTTP_OPTION_CONTEXT_VALUE, &ctx, sizeof(ctx))) {
        InterlockedDecrement(&q->refs);
        rc = fail(t, NULL, GetLastError(), r);
        goto out;
    }
    DWORD off =
        WINHTTP_DISABLE_REDIRECTS | WINHTTP_DISABLE_COOKIES | WINHTTP_DISABLE_AUTHENTICATION;
    WinHttpSetOption(q->h, WINHTTP_OPTION_DISABLE_FEATURE, &off, sizeof(off));
    if (t->pin) {
        /* Only the unknown CA is let through (and, for an address, the name, which wine
         * cannot match): the chain is checked in the callbacks. */
        DWORD sec = SECURITY_FLAG_IGNORE_UNKNOWN_CA |
                    (t->pin->ip_len ? SECURITY_FLAG_IGNORE_CERT_CN_INVALID : 0);
        if (!WinHttpSetOption(q->h, WINHTTP_OPTION_SECURITY_FLAGS, &sec, sizeof(sec))) {
            rc = fail(t, NULL, GetLastError(), r);
            goto out;
        }
    }
    int64_t left = deadline - now_ms();
    int ms = left > INT32_MAX ? INT32_MAX : left < 1 ? 1 : (int)left;
    WinHttpSetTimeouts(q->h, ms, ms < CONNECT_TIMEOUT_MS ? ms : CONNECT_TIMEOUT_MS, ms, ms);

    /* Pinned, the body waits for the check (SENDING_REQUEST); else WinHTTP checked the
     * certificate in the handshake and the body goes with the headers. */
    bool late_body = q->pin && q->body_len > 0;
    if (!REQ_CALL(q, WinHttpSendRequest(q->h, headers, (DWORD)-1, late_body ? NULL : q->body,
                                        late_body ? 0 : (DWORD)q->body_len, (DWORD)q->body_len,
                                        ctx))) {
        rc = fail(t, q, GetLastError(), r);
        goto out;
    }
    rc = req_step(t, q, WINHTTP_CALLBACK_STATUS_SENDREQUEST_COMPLETE, deadline, abort, arg, r);
    if (rc < 0)
        goto out;
    if (q->pin && !q->checked) { /* SENDING_REQUEST never came: fail closed */
        snprintf(r->error, sizeof(r->error), "%s: the server certificate was not checked", t->base);
        rc = -EPROTO;
        goto out;
    }
    if (late_body) {
        if (!REQ_CALL(q, WinHttpWriteData(q->h, q->body, (DWORD)q->body_len, NULL))) {
            rc = fail(t, q, GetLastError(), r);
            goto out;
        }
        rc = req_step(t, q, WINHTTP_CALLBACK_STATUS_WRITE_COMPLETE, deadline, abort, arg, r);
        if (rc < 0)
            goto out;
    }
    if (!REQ_CALL(q, WinHttpReceiveResponse(q->h, NULL))) {
        rc = fail(t, q, GetLastError(), r);
        goto out;
    }
    rc = req_step(t, q, WINHTTP_CALLBACK_STATUS_HEADERS_AVAILABLE, deadline, abort, arg, r);
    if (rc < 0)
        goto out;
    DWORD status = 0, n = sizeof(status);
    if (!WinHttpQueryHeaders(q->h, WINHTTP_QUERY_STATUS_CODE | WINHTTP_QUERY_FLAG_NUMBER,
                             WINHTTP_HEADER_NAME_BY_INDEX, &status, &n, WINHTTP_NO_HEADER_INDEX)) {
        rc = fail(t, q, GetLastError(), r);
        goto out;
    }
    r->status = (long)status;
    r->retry_after_s = header_retry_after(q->h);
    for (;;) {
        if (!REQ_CALL(q, WinHttpReadData(q->h, q->buf, sizeof(q->buf), NULL))) {
            rc = fail(t, q, GetLastError(), r);
            goto out;
        }
        rc = req_step(t, q, WINHTTP_CALLBACK_STATUS_READ_COMPLETE, deadline, abort, arg, r);
        if (rc < 0)
            goto out;
        if (q->nread == 0)
            break;
        if (buf_append(reply, q->buf, q->nread) < 0) {
            snprintf(r->error, sizeof(r->error), "%s: the answer is too large", t->base);
            rc = -EMSGSIZE;
            goto out;
        }
    }
    rc = q->withheld && t->auth ? 1 : 0;
out:
    req_close(q);
    req_unref(q);
    return rc;
}

/* transport-impl.h */
int transport_exchange(struct transport *t, const char *method, const char *path, const char *text,
                       const char *accept, const char *extra, int64_t timeout_ms,
                       bool (*abort)(void *arg), void *arg, struct buf *reply,
                       struct transport_reply *r)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : t->timeout_ms);
    if (t->pin && t->pin->load_error[0]) {
        snprintf(r->error, sizeof(r->error), "%s: %s", t->base, t->pin->load_error);
        return -EPROTO;
    }
    _cleanup_free_ wchar_t *wmethod = wide(method);
    _cleanup_free_ wchar_t *wpath0 = wide(path);
    size_t plen = wcslen(t->prefix), n = wpath0 ? plen + wcslen(wpath0) + 1 : 0;
    _cleanup_free_ wchar_t *wpath = n ? malloc(n * sizeof(wchar_t)) : NULL;
    /* Every request says which agent protocol it speaks (proto/agent.h). */
    char fixed[640];
    snprintf(fixed, sizeof(fixed), "Accept: %s\r\n%s%s: %d\r\n%s%s%s%s", accept, extra ? extra : "",
             PROTO_AGENT_VERSION_HEADER, PROTO_AGENT_VERSION,
             text ? "Content-Type: application/json\r\n" : "",
             r->request_id[0] ? "X-Request-Id: " : "", r->request_id,
             r->request_id[0] ? "\r\n" : "");
    _cleanup_free_ wchar_t *wfixed = wide(fixed);
    size_t alen = t->auth ? wcslen(t->auth) : 0;
    size_t hlen = wfixed ? wcslen(wfixed) + alen + 1 : 0;
    wchar_t *headers = hlen ? malloc(hlen * sizeof(wchar_t)) : NULL;
    if (!wmethod || !wpath || !headers) {
        free(headers);
        snprintf(r->error, sizeof(r->error), "%s: out of memory", t->base);
        return -ENOMEM;
    }
    /* The prefix ends where the path begins: "/" alone is the URL's root. */
    if (plen == 1 && t->prefix[0] == L'/')
        plen = 0;
    memcpy(wpath, t->prefix, plen * sizeof(wchar_t));
    memcpy(wpath + plen, wpath0, (wcslen(wpath0) + 1) * sizeof(wchar_t));
    memcpy(headers, wfixed, wcslen(wfixed) * sizeof(wchar_t));
    if (alen)
        memcpy(headers + wcslen(wfixed), t->auth, alen * sizeof(wchar_t));
    headers[hlen - 1] = L'\0';

    int rc = 1;
    for (int i = 0; rc == 1 && i < MAX_ATTEMPTS; i++) {
        buf_reset(reply);
        r->status = 0;
        r->retry_after_s = 0;
        rc = exchange_once(t, wmethod, wpath, headers, text, deadline, abort, arg, reply, r);
    }
    SecureZeroMemory(headers, hlen * sizeof(wchar_t));
    free(headers);
    if (rc == 1) {
        snprintf(r->error, sizeof(r->error),
                 "%s: no connection whose certificate was checked could be kept", t->base);
        rc = -EPROTO;
    }
    if (rc < 0) {
        r->status = 0;
        r->retry_after_s = 0;
    }
    return rc;
}
