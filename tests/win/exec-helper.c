/* exec-helper.c: the program tests/win/test-exec.c runs as a job (exec-helper.exe MODE ...):
 *   argv              print the command line, then each argument as [arg] on its own line
 *   env               print the environment, one NAME=value a line
 *   cwd               print the current directory
 *   exit N            exit with code N
 *   out N             write N bytes ('a' + i % 26) to stdout
 *   interleave N      write "o<i>\n" to stdout and "e<i>\n" to stderr, N times
 *   cat               copy stdin to stdout
 *   sleep MS          sleep, then exit 0
 *   spawn MS EXIT     start "exec-helper sleep MS" (it inherits our stdout when MS < 0:
 *                     then it sleeps -MS and writes "late" before it exits), print its
 *                     pid, exit with EXIT
 *   spawn-wait MS     like spawn, then sleep forever
 *   handle H          write "leak" to H (a handle value) when it is a pipe here
 *   desktop           print "<window station>\\<desktop> user32=<ok|failed>"
 *   token             print "restricted=<0|1> privileges=<n>"
 * Output goes through WriteFile on the std handles, unbuffered. */
#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

static void put(HANDLE h, const char *s, size_t n)
{
    DWORD w;
    while (n > 0 && WriteFile(h, s, (DWORD)n, &w, NULL) && w > 0) {
        s += w;
        n -= w;
    }
}

static void put_wide(HANDLE h, const wchar_t *w)
{
    char buf[32768];
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, buf, sizeof(buf), NULL, NULL);
    if (n > 0)
        put(h, buf, (size_t)n - 1);
}

static void outf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(GetStdHandle(STD_OUTPUT_HANDLE), buf,
            (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static DWORD spawn(const wchar_t *self, long ms, BOOL inherit)
{
    wchar_t cmd[1024];
    STARTUPINFOW si = {.cb = sizeof(si)};
    PROCESS_INFORMATION pi;
    if (inherit) {
        si.dwFlags = STARTF_USESTDHANDLES;
        si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
        si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
        si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    }
    swprintf(cmd, 1024, L"\"%ls\" %ls %ld", self, inherit ? L"late" : L"sleep", ms);
    if (!CreateProcessW(self, cmd, NULL, NULL, inherit, CREATE_NO_WINDOW, NULL, NULL, &si, &pi))
        return 0;
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    return pi.dwProcessId;
}

int wmain(int argc, wchar_t **argv); /* -municode: the entry point, with UTF-16 argv */

int wmain(int argc, wchar_t **argv)
{
    HANDLE out = GetStdHandle(STD_OUTPUT_HANDLE), err = GetStdHandle(STD_ERROR_HANDLE);
    wchar_t self[MAX_PATH];
    GetModuleFileNameW(NULL, self, MAX_PATH);
    if (argc < 2)
        return 2;
    const wchar_t *m = argv[1];
    long n = argc > 2 ? wcstol(argv[2], NULL, 0) : 0;
    if (!wcscmp(m, L"argv")) {
        put_wide(out, GetCommandLineW());
        put(out, "\n", 1);
        for (int i = 1; i < argc; i++) {
            put(out, "[", 1);
            put_wide(out, argv[i]);
            put(out, "]\n", 2);
        }
    } else if (!wcscmp(m, L"env")) {
        wchar_t *e = GetEnvironmentStringsW();
        for (wchar_t *p = e; *p; p += wcslen(p) + 1) {
            put_wide(out, p);
            put(out, "\n", 1);
        }
        FreeEnvironmentStringsW(e);
    } else if (!wcscmp(m, L"cwd")) {
        wchar_t d[MAX_PATH];
        GetCurrentDirectoryW(MAX_PATH, d);
        put_wide(out, d);
        put(out, "\n", 1);
    } else if (!wcscmp(m, L"exit")) {
        ExitProcess((UINT)wcstoul(argv[2], NULL, 0));
    } else if (!wcscmp(m, L"out")) {
        char buf[4096];
        for (long i = 0; i < n;) {
            size_t k = 0;
            for (; k < sizeof(buf) && i < n; k++, i++)
                buf[k] = (char)('a' + i % 26);
            put(out, buf, k);
        }
    } else if (!wcscmp(m, L"interleave")) {
        for (long i = 0; i < n; i++) {
            char b[32];
            int k = snprintf(b, sizeof(b), "o%ld\n", i);
            put(out, b, (size_t)k);
            k = snprintf(b, sizeof(b), "e%ld\n", i);
            put(err, b, (size_t)k);
        }
    } else if (!wcscmp(m, L"cat")) {
        char buf[4096];
        DWORD r;
        while (ReadFile(GetStdHandle(STD_INPUT_HANDLE), buf, sizeof(buf), &r, NULL) && r > 0)
            put(out, buf, r);
    } else if (!wcscmp(m, L"sleep")) {
        Sleep((DWORD)n);
    } else if (!wcscmp(m, L"late")) {
        Sleep((DWORD)n);
        put(out, "late\n", 5);
    } else if (!wcscmp(m, L"spawn") || !wcscmp(m, L"spawn-wait")) {
        DWORD pid = spawn(self, n < 0 ? -n : n, n < 0);
        outf("pid=%lu\n", (unsigned long)pid);
        if (!wcscmp(m, L"spawn-wait"))
            Sleep(INFINITE);
        return argc > 3 ? (int)wcstol(argv[3], NULL, 0) : 0;
    } else if (!wcscmp(m, L"handle")) {
        HANDLE h = (HANDLE)(ULONG_PTR)wcstoull(argv[2], NULL, 0);
        DWORD f;
        if (h != out && h != err && GetHandleInformation(h, &f) && GetFileType(h) == FILE_TYPE_PIPE)
            put(h, "leak", 4);
    } else if (!wcscmp(m, L"desktop")) {
        wchar_t ws[128] = L"?", dt[128] = L"?";
        GetUserObjectInformationW(GetProcessWindowStation(), UOI_NAME, ws, sizeof(ws), NULL);
        GetUserObjectInformationW(GetThreadDesktop(GetCurrentThreadId()), UOI_NAME, dt, sizeof(dt),
                                  NULL);
        put_wide(out, ws);
        put(out, "\\", 1);
        put_wide(out, dt);
        outf(" user32=%s\n", GetDesktopWindow() ? "ok" : "failed");
    } else if (!wcscmp(m, L"token")) {
        HANDLE t;
        BYTE pb[4096];
        DWORD len = 0, privs = 0;
        BOOL r = OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &t) && IsTokenRestricted(t);
        if (GetTokenInformation(t, TokenPrivileges, pb, sizeof(pb), &len))
            privs = ((TOKEN_PRIVILEGES *)pb)->PrivilegeCount;
        outf("restricted=%d privileges=%lu\n", r ? 1 : 0, (unsigned long)privs);
    } else {
        return 2;
    }
    return 0;
}
