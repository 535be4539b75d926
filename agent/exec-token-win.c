/* exec-token-win.c: who a job runs as on Windows. The agent runs as LocalSystem; a job
 * must not. It runs with a restricted token made from the agent's own (the Chromium
 * sandbox's "restricting SIDs" scheme):
 *   - DISABLE_MAX_PRIVILEGE: every privilege but SeChangeNotifyPrivilege is removed
 *     (no SeDebug, SeImpersonate, SeBackup, SeTcb...);
 *   - the powerful groups (Administrators, Power Users, the operators' groups, "local
 *     account and member of Administrators") are deny-only;
 *   - restricting SIDs {Everyone, BUILTIN\Users, RESTRICTED, a random per-job SID}: every
 *     access check is made twice, once with the token's normal SIDs and once with the
 *     restricting SIDs, and both must grant. The user SID stays (SYSTEM passes the first
 *     check nearly everywhere), so what the job may touch is what Everyone, Users or its
 *     own SID may: system files and the registry for reading, world-writable places, and
 *     its workdir and result file, on which run() grants the per-job SID full control
 *     (inherited by what the job creates there) until the job is over. The state dir
 *     (SYSTEM + Administrators only) and other jobs' workdirs (another per-job SID) are
 *     closed to it. The owner's implicit rights do not help it either: in the second check
 *     they count only when the owner is a restricting SID;
 *   - a default DACL {the token's user, SYSTEM, the per-job SID}: the job can open the
 *     processes and objects it creates itself, other jobs cannot;
 *   - integrity level Medium when the agent's is higher: the agent's process (System) is
 *     out of the job's reach for writing and reading even if a DACL were to let it;
 *   - a desktop of the agent's own (window station orch-jobs-<agent pid>, desktop
 *     Default) that RESTRICTED may use: a restricted process cannot open the service's
 *     desktop, and any program that loads user32.dll would fail to start (0xC0000142)
 *     on it. Jobs share that desktop (they may see each other's windows, if they make
 *     any: CREATE_NO_WINDOW, a service's session 0, there are none to see). Made once;
 *     when it cannot be, jobs get the agent's desktop and a warning is logged.
 * A restricted version of the caller's own token needs no SeAssignPrimaryTokenPrivilege,
 * so a by-hand agent under an ordinary account works the same way. run() is fail-closed:
 * when the token or the grants cannot be made, it returns an error and starts nothing.
 *
 * Wine (8.0) enforces none of it: its CreateRestrictedToken keeps neither the restricting
 * SIDs nor the removal of privileges (IsTokenRestricted() is false in the job), its
 * SetNamedSecurityInfo keeps no DACL, and it checks no ACL on files. Under wine a job can
 * read the state dir; the fence holds on Windows only, and the tests assert it there (under
 * wine they check that every call succeeds and the job starts on the desktop).
 */
#include "agent/exec-win.h"

#include <aclapi.h>
#include <bcrypt.h>
#include <sddl.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "common/cleanup.h"
#include "common/log.h"

/* A random SID S-1-9-a-b-c-d (the resource-manager authority, which names no account):
 * 128 bits, so no other job's is the same. */
int exec_win_sid_new(PSID *ret)
{
    SID_IDENTIFIER_AUTHORITY auth = {SECURITY_RESOURCE_MANAGER_AUTHORITY};
    DWORD r[4];

    if (!BCRYPT_SUCCESS(
            BCryptGenRandom(NULL, (PUCHAR)r, sizeof(r), BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
        return -EIO;
    if (!AllocateAndInitializeSid(&auth, 4, r[0], r[1], r[2], r[3], 0, 0, 0, 0, ret))
        return -exec_win_errno(GetLastError());
    return 0;
}

static PSID well_known(WELL_KNOWN_SID_TYPE t, BYTE *buf)
{
    DWORD len = SECURITY_MAX_SID_SIZE;
    return CreateWellKnownSid(t, NULL, buf, &len) ? (PSID)buf : NULL;
}

/* The token object's own DACL is the agent's default one: the job could not even query its
 * own token (OpenProcessToken, which runtimes and GetUserProfileDirectory call), the second
 * check finding none of its restricting SIDs there. Let its SID read, duplicate and
 * impersonate it (ImpersonateSelf), not change it. A failure costs the job only that:
 * logged. */
static void token_let_job_read(HANDLE tok, PSID job_sid)
{
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL old = NULL, acl = NULL;
    DWORD e = GetSecurityInfo(tok, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &old,
                              NULL, &sd);
    if (e == ERROR_SUCCESS) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessPermissions = TOKEN_QUERY | TOKEN_QUERY_SOURCE | TOKEN_DUPLICATE |
                                    TOKEN_IMPERSONATE | READ_CONTROL,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)job_sid},
        };
        e = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (e == ERROR_SUCCESS)
        e = SetSecurityInfo(tok, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, acl,
                            NULL);
    if (e != ERROR_SUCCESS)
        log_debug("op=exec_token_dacl error=%lu", (unsigned long)e);
    if (acl)
        LocalFree(acl);
    if (sd)
        LocalFree(sd);
}

/* The job's token, see the top of the file. Returns 0 or -errno. */
int exec_win_token_make(PSID job_sid, HANDLE *ret)
{
    static const WELL_KNOWN_SID_TYPE disable[] = {
        WinBuiltinAdministratorsSid,  WinBuiltinPowerUsersSid,     WinBuiltinAccountOperatorsSid,
        WinBuiltinSystemOperatorsSid, WinBuiltinPrintOperatorsSid, WinBuiltinBackupOperatorsSid,
    };
    static const WELL_KNOWN_SID_TYPE restrict_to[] = {WinWorldSid, WinBuiltinUsersSid,
                                                      WinRestrictedCodeSid};
    BYTE dis_buf[ELEMENTSOF(disable) + 1][SECURITY_MAX_SID_SIZE];
    BYTE res_buf[ELEMENTSOF(restrict_to)][SECURITY_MAX_SID_SIZE];
    BYTE sys_buf[SECURITY_MAX_SID_SIZE], user_buf[256], il_buf[SECURITY_MAX_SID_SIZE];
    SID_AND_ATTRIBUTES dis[ELEMENTSOF(disable) + 1], res[ELEMENTSOF(restrict_to) + 1];
    DWORD ndis = 0, nres = 0, len;
    HANDLE own = NULL, tok = NULL;
    PACL dacl = NULL;
    PSID local_admin = NULL;
    int r = 0;

    /* The new token's handle gets this handle's rights: READ_CONTROL and WRITE_DAC for
     * token_let_job_read(), without which it is made all the same. */
    const DWORD need = TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY | TOKEN_ADJUST_DEFAULT;
    if (!OpenProcessToken(GetCurrentProcess(), need | READ_CONTROL | WRITE_DAC, &own) &&
        !OpenProcessToken(GetCurrentProcess(), need, &own))
        return -exec_win_errno(GetLastError());
    for (size_t i = 0; i < ELEMENTSOF(disable); i++) {
        PSID s = well_known(disable[i], dis_buf[ndis]);
        if (s)
            dis[ndis++] = (SID_AND_ATTRIBUTES){s, 0};
    }
    /* S-1-5-114, "local account and member of Administrators" (not in older SDKs' enum). */
    if (ConvertStringSidToSidW(L"S-1-5-114", &local_admin))
        dis[ndis++] = (SID_AND_ATTRIBUTES){local_admin, 0};
    for (size_t i = 0; i < ELEMENTSOF(restrict_to); i++) {
        PSID s = well_known(restrict_to[i], res_buf[nres]);
        if (!s) {
            r = -exec_win_errno(GetLastError());
            goto out;
        }
        res[nres++] = (SID_AND_ATTRIBUTES){s, 0};
    }
    res[nres++] = (SID_AND_ATTRIBUTES){job_sid, 0};
    /* Sids to disable that the token does not hold are ignored by Windows. */
    if (!CreateRestrictedToken(own, DISABLE_MAX_PRIVILEGE, ndis, dis, 0, NULL, nres, res, &tok)) {
        r = -exec_win_errno(GetLastError());
        goto out;
    }

    /* Default DACL: the user, SYSTEM, the job. */
    TOKEN_USER *user = (TOKEN_USER *)user_buf;
    PSID system = well_known(WinLocalSystemSid, sys_buf);
    if (!GetTokenInformation(tok, TokenUser, user_buf, sizeof(user_buf), &len) || !system) {
        r = -exec_win_errno(GetLastError());
        goto out;
    }
    EXPLICIT_ACCESS_W ea[3];
    PSID who[3] = {user->User.Sid, system, job_sid};
    for (int i = 0; i < 3; i++)
        ea[i] = (EXPLICIT_ACCESS_W){
            .grfAccessPermissions = GENERIC_ALL,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)who[i]},
        };
    DWORD e = SetEntriesInAclW(3, ea, NULL, &dacl);
    if (e != ERROR_SUCCESS) {
        r = -exec_win_errno(e);
        goto out;
    }
    TOKEN_DEFAULT_DACL dd = {dacl};
    if (!SetTokenInformation(tok, TokenDefaultDacl, &dd, sizeof(dd))) {
        r = -exec_win_errno(GetLastError());
        goto out;
    }
    token_let_job_read(tok, job_sid);

    /* Medium integrity, when ours is higher (a service's is System). */
    BYTE cur[64];
    TOKEN_MANDATORY_LABEL *cl = (TOKEN_MANDATORY_LABEL *)cur;
    if (GetTokenInformation(own, TokenIntegrityLevel, cur, sizeof(cur), &len) &&
        IsValidSid(cl->Label.Sid) && *GetSidSubAuthorityCount(cl->Label.Sid) > 0 &&
        *GetSidSubAuthority(cl->Label.Sid, *GetSidSubAuthorityCount(cl->Label.Sid) - 1) >
            SECURITY_MANDATORY_MEDIUM_RID) {
        PSID il = well_known(WinMediumLabelSid, il_buf);
        TOKEN_MANDATORY_LABEL tml = {{il, SE_GROUP_INTEGRITY}};
        if (!il ||
            !SetTokenInformation(tok, TokenIntegrityLevel, &tml, sizeof(tml) + GetLengthSid(il))) {
            r = -exec_win_errno(GetLastError());
            goto out;
        }
    }
    *ret = tok;
    tok = NULL;
out:
    if (tok)
        CloseHandle(tok);
    if (dacl)
        LocalFree(dacl);
    if (local_admin)
        LocalFree(local_admin);
    CloseHandle(own);
    return r;
}

/* Give sid full control of path (inherited by what is created in it when inherit). */
int exec_win_grant(const char *path, PSID sid, bool inherit)
{
    _cleanup_free_ wchar_t *w = exec_win_wide(path);
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL old = NULL, acl = NULL;

    if (!w)
        return -errno;
    DWORD e = GetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &old,
                                    NULL, &sd);
    if (e == ERROR_SUCCESS) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessPermissions = FILE_ALL_ACCESS,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = inherit ? SUB_CONTAINERS_AND_OBJECTS_INHERIT : NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)sid},
        };
        e = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (e == ERROR_SUCCESS)
        e = SetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, acl,
                                  NULL);
    if (acl)
        LocalFree(acl);
    if (sd)
        LocalFree(sd);
    return e == ERROR_SUCCESS ? 0 : -exec_win_errno(e);
}

/* Take sid's ACE off path again, on path itself only: what the job made there keeps its
 * inherited copy (the daemon deletes it all), and no tree walk slows the job's end. */
void exec_win_revoke(const char *path, PSID sid)
{
    _cleanup_free_ wchar_t *w = exec_win_wide(path);
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL old = NULL, acl = NULL;
    HANDLE h = w ? CreateFileW(w, READ_CONTROL | WRITE_DAC,
                               FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                               OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL)
                 : INVALID_HANDLE_VALUE;

    if (h == INVALID_HANDLE_VALUE)
        return;
    DWORD e =
        GetSecurityInfo(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &old, NULL, &sd);
    if (e == ERROR_SUCCESS) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessMode = REVOKE_ACCESS,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)sid},
        };
        e = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (e == ERROR_SUCCESS)
        e = SetSecurityInfo(h, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, acl, NULL);
    if (e != ERROR_SUCCESS)
        log_debug("op=exec_revoke path=%s error=%lu", path, (unsigned long)e);
    if (acl)
        LocalFree(acl);
    if (sd)
        LocalFree(sd);
    CloseHandle(h);
}

/* The jobs' desktop, see the top of the file: "orch-jobs-<pid>\\Default", or NULL. */
static INIT_ONCE desktop_once = INIT_ONCE_STATIC_INIT;
static wchar_t desktop_name[64];
static bool desktop_ok;

static BOOL CALLBACK desktop_init(PINIT_ONCE once, PVOID arg, PVOID *ctx)
{
    BYTE sys[SECURITY_MAX_SID_SIZE], adm[SECURITY_MAX_SID_SIZE], rst[SECURITY_MAX_SID_SIZE];
    BYTE user_buf[256];
    TOKEN_USER *user = (TOKEN_USER *)user_buf;
    PSID who[4] = {well_known(WinLocalSystemSid, sys), well_known(WinBuiltinAdministratorsSid, adm),
                   well_known(WinRestrictedCodeSid, rst), NULL};
    HANDLE own = NULL;
    PACL dacl = NULL;
    DWORD len, e = ERROR_SUCCESS;
    wchar_t ws_name[32];

    (void)once;
    (void)arg;
    (void)ctx;
    /* Our own user too, for an agent that is not SYSTEM (run by hand). */
    if (OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &own) &&
        GetTokenInformation(own, TokenUser, user_buf, sizeof(user_buf), &len))
        who[3] = user->User.Sid;
    if (!who[0] || !who[1] || !who[2])
        e = GetLastError();
    EXPLICIT_ACCESS_W ea[4];
    DWORD n = 0;
    for (int i = 0; i < 4 && e == ERROR_SUCCESS; i++)
        if (who[i])
            ea[n++] = (EXPLICIT_ACCESS_W){
                /* The jobs may use it, not change who may. */
                .grfAccessPermissions =
                    i == 2 ? GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE : GENERIC_ALL,
                .grfAccessMode = GRANT_ACCESS,
                .grfInheritance = NO_INHERITANCE,
                .Trustee = {.TrusteeForm = TRUSTEE_IS_SID, .ptstrName = (LPWSTR)who[i]},
            };
    if (e == ERROR_SUCCESS)
        e = SetEntriesInAclW(n, ea, NULL, &dacl);
    SECURITY_DESCRIPTOR sd;
    SECURITY_ATTRIBUTES sa = {sizeof(sa), &sd, FALSE};
    if (e == ERROR_SUCCESS && (!InitializeSecurityDescriptor(&sd, SECURITY_DESCRIPTOR_REVISION) ||
                               !SetSecurityDescriptorDacl(&sd, TRUE, dacl, FALSE)))
        e = GetLastError();
    if (e == ERROR_SUCCESS) {
        swprintf(ws_name, 32, L"orch-jobs-%lu", (unsigned long)GetCurrentProcessId());
        /* Kept open for the agent's life: the last handle's close would destroy it. */
        HWINSTA ws = CreateWindowStationW(ws_name, 0, GENERIC_ALL, &sa);
        HWINSTA cur = GetProcessWindowStation();
        /* CreateDesktopW makes it in the process's window station: switched for that call
         * only (the agent has no window that would care). */
        HDESK d = ws && cur && SetProcessWindowStation(ws)
                      ? CreateDesktopW(L"Default", NULL, NULL, 0, GENERIC_ALL, &sa)
                      : NULL;
        if (!d)
            e = GetLastError();
        if (cur)
            SetProcessWindowStation(cur);
        if (d)
            swprintf(desktop_name, 64, L"%ls\\Default", ws_name);
        else if (ws)
            CloseWindowStation(ws);
    }
    if (e != ERROR_SUCCESS)
        log_warn("op=exec_desktop error=%lu detail=\"jobs that use user32 may not start\"",
                 (unsigned long)e);
    desktop_ok = e == ERROR_SUCCESS;
    if (dacl)
        LocalFree(dacl);
    if (own)
        CloseHandle(own);
    return TRUE;
}

wchar_t *exec_win_desktop(void)
{
    InitOnceExecuteOnce(&desktop_once, desktop_init, NULL, NULL);
    return desktop_ok ? desktop_name : NULL;
}
