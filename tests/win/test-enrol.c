/* test-enrol.c: the first-start enrolment from the registry (agent/enrol-win.c) on a key
 * of its own under HKCU, with a fake enrolment in place of cli_enrol(): which values it
 * reads, when the token is deleted and when it is kept, and that it is never logged. The
 * real enrolment against orchd is tests/packaging/test-msi.sh's. */
#define WTEST_MAIN
#include "tests/win/wtest.h"

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdarg.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <windows.h>

#include "agent/enrol-win.h"
#include "common/log.h"

#define TOKEN "orch_et_0123456789ab_SecretSecretSecretSecretSecretSecret-_x"

static wchar_t subkey[128];
static int fake_rc, fake_calls;
static char seen_server[256], seen_token[256], seen_name[256], seen_ca[256], seen_labels[256];

static int fake_enrol(const struct cli_enrolment *e, const struct agent_config *cfg, char *msg,
                      size_t msglen)
{
    fake_calls++;
    snprintf(seen_server, sizeof(seen_server), "%s", e->server_url);
    snprintf(seen_token, sizeof(seen_token), "%s", e->token);
    snprintf(seen_name, sizeof(seen_name), "%s", e->name ? e->name : "(null)");
    snprintf(seen_ca, sizeof(seen_ca), "%s", e->ca_file ? e->ca_file : "(null)");
    char *l = json_dumps(e->labels, JSON_SORT_KEYS | JSON_COMPACT);
    snprintf(seen_labels, sizeof(seen_labels), "%s", l ? l : "");
    free(l);
    snprintf(msg, msglen, "fake answer %d", fake_rc);
    return fake_rc;
}

static struct agent_config config(void)
{
    static char empty[] = "", dir[] = "C:\\orch-test-state", labels[] = "site=a,disk=ssd";
    return (struct agent_config){.server_url = empty,
                                 .ca_file = empty,
                                 .state_dir = dir,
                                 .name = empty,
                                 .labels = labels,
                                 .proxy = empty,
                                 .no_proxy = empty};
}

/* A fresh key for each test; values given as name, data pairs, NULL-terminated. */
static void key_with(const wchar_t *first, ...)
{
    swprintf(subkey, sizeof(subkey) / sizeof(subkey[0]), L"Software\\OrchTest\\enrol-%lu-%d",
             (unsigned long)GetCurrentProcessId(), wtest_count);
    RegDeleteTreeW(HKEY_CURRENT_USER, subkey);
    HKEY k;
    WT_ASSERT(RegCreateKeyExW(HKEY_CURRENT_USER, subkey, 0, NULL, 0,
                              KEY_SET_VALUE | KEY_WOW64_64KEY, NULL, &k, NULL) == ERROR_SUCCESS,
              "cannot create the test key");
    va_list ap;
    va_start(ap, first);
    for (const wchar_t *name = first; name; name = va_arg(ap, const wchar_t *)) {
        const wchar_t *data = va_arg(ap, const wchar_t *);
        RegSetValueExW(k, name, 0, REG_SZ, (const BYTE *)data,
                       (DWORD)((wcslen(data) + 1) * sizeof(wchar_t)));
    }
    va_end(ap);
    RegCloseKey(k);
    fake_calls = 0;
}

static bool has_value(const wchar_t *name)
{
    DWORD size = 0;
    return RegGetValueW(HKEY_CURRENT_USER, subkey, name, RRF_RT_REG_SZ, NULL, NULL, &size) ==
           ERROR_SUCCESS;
}

static void key_drop(void)
{
    RegDeleteTreeW(HKEY_CURRENT_USER, subkey);
}

static int run(int rc)
{
    fake_rc = rc;
    struct agent_config cfg = config();
    return enrol_from_registry_at(HKEY_CURRENT_USER, subkey, &cfg, fake_enrol);
}

#define ALL_VALUES                                                                                 \
    L"ServerUrl", L"https://orch.example:8443", L"EnrollmentToken", L"" TOKEN, L"CaFile",          \
        L"C:\\ca dir\\ca.pem", L"Name", L"build-\u00e9t\u00e9", L"Labels", L"site=b,os=win"

WTEST(enrol, no_key_is_nothing_to_do)
{
    swprintf(subkey, sizeof(subkey) / sizeof(subkey[0]), L"Software\\OrchTest\\absent-%lu",
             (unsigned long)GetCurrentProcessId());
    fake_calls = 0;
    WT_ASSERT(run(0) == 0, "an absent key is not an error");
    WT_ASSERT(fake_calls == 0, "nothing to enrol with, yet it enrolled");
}

WTEST(enrol, reads_every_value_and_deletes_the_token_once_enrolled)
{
    key_with(ALL_VALUES, NULL);
    WT_ASSERT(run(0) == 0, "enrolled");
    WT_ASSERT(fake_calls == 1, "enrolled %d times", fake_calls);
    WT_ASSERT(strcmp(seen_server, "https://orch.example:8443") == 0, "server %s", seen_server);
    WT_ASSERT(strcmp(seen_token, TOKEN) == 0, "token differs");
    WT_ASSERT(strcmp(seen_ca, "C:\\ca dir\\ca.pem") == 0, "ca %s", seen_ca);
    WT_ASSERT(strcmp(seen_name, "build-\xc3\xa9t\xc3\xa9") == 0, "name not UTF-8: %s", seen_name);
    /* The configuration's labels, then the registry's, which win on the same key. */
    WT_ASSERT(strcmp(seen_labels, "{\"disk\":\"ssd\",\"os\":\"win\",\"site\":\"b\"}") == 0,
              "labels %s", seen_labels);
    WT_ASSERT(!has_value(L"EnrollmentToken"), "the used token is still in the registry");
    WT_ASSERT(has_value(L"ServerUrl"), "ServerUrl went too");
    key_drop();
}

WTEST(enrol, keeps_the_token_to_retry_when_the_server_is_unreachable)
{
    key_with(ALL_VALUES, NULL);
    WT_ASSERT(run(-ECONNREFUSED) == -ECONNREFUSED, "not a retry");
    WT_ASSERT(has_value(L"EnrollmentToken"), "the token went, but was not used");
    WT_ASSERT(run(-EAGAIN) == -EAGAIN, "a 5xx is not a retry");
    WT_ASSERT(has_value(L"EnrollmentToken"), "the token went on a 5xx");
    WT_ASSERT(run(0) == 0 && !has_value(L"EnrollmentToken"), "the retry did not enrol");
    key_drop();
}

WTEST(enrol, deletes_the_token_the_server_refused)
{
    key_with(ALL_VALUES, NULL);
    WT_ASSERT(run(-EACCES) == -EACCES, "a refusal is not reported");
    WT_ASSERT(!has_value(L"EnrollmentToken"), "the refused token is still there");
    /* Next start: nothing to do any more. */
    WT_ASSERT(run(0) == 0 && fake_calls == 1, "enrolled again without a token");
    key_drop();
}

WTEST(enrol, already_enrolled_deletes_the_unused_token)
{
    key_with(ALL_VALUES, NULL);
    WT_ASSERT(run(-EEXIST) == 0, "already enrolled is nothing to do");
    WT_ASSERT(!has_value(L"EnrollmentToken"), "the needless token is still there");
    key_drop();
}

WTEST(enrol, defaults_without_the_optional_values)
{
    key_with(L"ServerUrl", L"https://orch.example", L"EnrollmentToken", L"" TOKEN, NULL);
    WT_ASSERT(run(0) == 0, "enrolled");
    WT_ASSERT(strcmp(seen_name, "(null)") == 0, "name %s: should default to the host name",
              seen_name);
    WT_ASSERT(strcmp(seen_ca, "(null)") == 0, "ca %s: should be the system store", seen_ca);
    WT_ASSERT(strcmp(seen_labels, "{\"disk\":\"ssd\",\"site\":\"a\"}") == 0, "labels %s",
              seen_labels);
    key_drop();
}

WTEST(enrol, no_server_url_is_nothing_to_do_and_keeps_the_token)
{
    key_with(L"EnrollmentToken", L"" TOKEN, NULL);
    WT_ASSERT(run(0) == 0 && fake_calls == 0, "enrolled without a server");
    WT_ASSERT(has_value(L"EnrollmentToken"), "the unused token went");
    key_drop();
}

WTEST(enrol, malformed_labels_keep_the_token_and_enrol_nothing)
{
    key_with(L"ServerUrl", L"https://orch.example", L"EnrollmentToken", L"" TOKEN, L"Labels",
             L"novalue", NULL);
    WT_ASSERT(run(0) == -EINVAL, "malformed labels accepted");
    WT_ASSERT(fake_calls == 0, "enrolled with malformed labels");
    WT_ASSERT(has_value(L"EnrollmentToken"), "the unused token went");
    key_drop();
}

WTEST(enrol, never_logs_the_token)
{
    char path[MAX_PATH], dir[MAX_PATH];
    GetTempPathA(sizeof(dir), dir);
    WT_ASSERT(GetTempFileNameA(dir, "orl", 0, path) != 0, "no temp file");
    int fd = _open(path, _O_RDWR | _O_BINARY | _O_TRUNC);
    WT_ASSERT(fd >= 0, "cannot open %s", path);
    log_set_fd(fd);
    int rcs[] = {0, -EACCES, -ECONNREFUSED, -EEXIST};
    for (size_t i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++) {
        key_with(ALL_VALUES, NULL);
        run(rcs[i]);
    }
    log_set_fd(2);
    char buf[16384];
    _lseek(fd, 0, SEEK_SET);
    int n = _read(fd, buf, sizeof(buf) - 1);
    _close(fd);
    DeleteFileA(path);
    key_drop();
    WT_ASSERT(n > 0, "nothing logged");
    buf[n] = 0;
    WT_ASSERT(strstr(buf, "op=enrol-registry result=enrolled") != NULL, "log: %s", buf);
    WT_ASSERT(strstr(buf, "token=deleted") != NULL, "log: %s", buf);
    WT_ASSERT(strstr(buf, "SecretSecret") == NULL, "the token is in the log: %s", buf);
}

int main(int argc, char **argv)
{
    return wtest_main(argc, argv);
}
