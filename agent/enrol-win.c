/* enrol-win.c: first-start enrolment from the registry (see enrol-win.h). */
#include "agent/enrol-win.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "common/log.h"

/* The largest value read: a URL, a path, a name, labels. */
#define REG_VALUE_MAX 8192

struct reg_values {
    char *server_url;
    char *token;
    char *ca_file;
    char *name;
    char *labels;
};

static void free_secret(char *s)
{
    if (s) {
        SecureZeroMemory(s, strlen(s));
        free(s);
    }
}

static void reg_values_free(struct reg_values *v)
{
    free(v->server_url);
    free_secret(v->token);
    free(v->ca_file);
    free(v->name);
    free(v->labels);
    memset(v, 0, sizeof(*v));
}

/* Value name of key as UTF-8 into *ret (malloc'd; NULL when absent or empty). */
static int reg_get(HKEY key, const wchar_t *name, char **ret)
{
    *ret = NULL;
    DWORD size = 0;
    LSTATUS s = RegGetValueW(key, NULL, name, RRF_RT_REG_SZ, NULL, NULL, &size);
    if (s == ERROR_FILE_NOT_FOUND)
        return 0;
    if (s != ERROR_SUCCESS)
        return -EIO;
    if (size > REG_VALUE_MAX * sizeof(wchar_t))
        return -E2BIG;
    wchar_t *w = calloc(1, size + sizeof(wchar_t));
    if (!w)
        return -ENOMEM;
    int r = 0;
    s = RegGetValueW(key, NULL, name, RRF_RT_REG_SZ, NULL, w, &size);
    if (s != ERROR_SUCCESS) {
        r = s == ERROR_FILE_NOT_FOUND ? 0 : -EIO;
    } else if (w[0]) {
        int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, NULL, 0, NULL, NULL);
        char *u = n > 0 ? malloc((size_t)n) : NULL;
        if (!u)
            r = n > 0 ? -ENOMEM : -EILSEQ;
        else if (WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, u, n, NULL, NULL) != n)
            r = -EILSEQ;
        if (r == 0)
            *ret = u;
        else
            free(u);
    }
    SecureZeroMemory(w, size);
    free(w);
    return r;
}

static int reg_read(HKEY key, struct reg_values *v)
{
    static const struct {
        const wchar_t *name;
        size_t off;
    } values[] = {
        {L"ServerUrl", offsetof(struct reg_values, server_url)},
        {L"EnrollmentToken", offsetof(struct reg_values, token)},
        {L"CaFile", offsetof(struct reg_values, ca_file)},
        {L"Name", offsetof(struct reg_values, name)},
        {L"Labels", offsetof(struct reg_values, labels)},
    };
    memset(v, 0, sizeof(*v));
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        int r = reg_get(key, values[i].name, (char **)((char *)v + values[i].off));
        if (r < 0) {
            log_error("op=enrol-registry value=%ls error=%s", values[i].name, strerror(-r));
            reg_values_free(v);
            return r;
        }
    }
    return 0;
}

static void forget_token(HKEY key, const char *why)
{
    LSTATUS s = RegDeleteValueW(key, L"EnrollmentToken");
    if (s == ERROR_SUCCESS || s == ERROR_FILE_NOT_FOUND)
        log_info("op=enrol-registry token=deleted reason=%s", why);
    else
        log_error("op=enrol-registry token=kept reason=%s error=\"cannot delete the "
                  "EnrollmentToken value (%lu): delete it by hand\"",
                  why, (unsigned long)s);
}

int enrol_from_registry_at(HKEY root, const wchar_t *subkey, const struct agent_config *cfg,
                           enrol_fn enrol)
{
    HKEY key;
    LSTATUS s =
        RegOpenKeyExW(root, subkey, 0, KEY_QUERY_VALUE | KEY_SET_VALUE | KEY_WOW64_64KEY, &key);
    if (s == ERROR_FILE_NOT_FOUND)
        return 0;
    if (s != ERROR_SUCCESS) {
        log_error("op=enrol-registry key=%ls error=\"cannot open it (%lu)\"", subkey,
                  (unsigned long)s);
        return -EACCES;
    }
    struct reg_values v;
    int r = reg_read(key, &v);
    if (r < 0)
        goto out;
    if (!v.server_url || !v.token) {
        /* Nothing to enrol with: installed without SERVERURL and TOKEN, or already used. */
        if (v.token)
            log_warn("op=enrol-registry error=\"EnrollmentToken without ServerUrl: reinstall "
                     "with SERVERURL=, or run orch-agent register\"");
        goto out;
    }
    json_t *labels = json_object();
    if (!labels) {
        r = -ENOMEM;
        goto out;
    }
    if ((cfg->labels[0] && !cli_labels_add(labels, cfg->labels)) ||
        (v.labels && !cli_labels_add(labels, v.labels))) {
        log_error("op=enrol-registry error=\"the Labels value or the labels key is not "
                  "k=v,k2=v2\"");
        json_decref(labels);
        r = -EINVAL;
        goto out;
    }
    struct cli_enrolment e = {
        .server_url = v.server_url,
        .token = v.token,
        .name = v.name         ? v.name
                : cfg->name[0] ? cfg->name
                               : NULL,
        .ca_file = v.ca_file         ? v.ca_file
                   : cfg->ca_file[0] ? cfg->ca_file
                                     : NULL,
        .state_dir = cfg->state_dir,
        .slots = cfg->slots > 0 ? (int)cfg->slots : 1,
        .labels = labels,
    };
    char msg[1024] = "", q1[256], q2[1100];
    r = enrol(&e, cfg, msg, sizeof(msg));
    json_decref(labels);
    const char *server = log_quote(v.server_url, q1, sizeof(q1));
    const char *detail = log_quote(msg, q2, sizeof(q2));
    if (r == 0) {
        log_info("op=enrol-registry result=enrolled server=%s detail=%s", server, detail);
        forget_token(key, "used");
    } else if (r == -EEXIST) {
        log_info("op=enrol-registry result=already-enrolled detail=%s", detail);
        forget_token(key, "not-needed");
        r = 0;
    } else if (r == -EACCES || r == -EPROTONOSUPPORT) {
        log_error("op=enrol-registry result=refused server=%s detail=%s", server, detail);
        forget_token(key, "refused");
        r = -EACCES;
    } else {
        log_warn("op=enrol-registry result=retry server=%s detail=%s", server, detail);
    }
out:
    reg_values_free(&v);
    RegCloseKey(key);
    return r;
}

int enrol_from_registry(const struct agent_config *cfg)
{
    return enrol_from_registry_at(HKEY_LOCAL_MACHINE, ENROL_REGISTRY_KEY, cfg, cli_enrol);
}
