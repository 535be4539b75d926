/* exec-cmdline-win.c: what CreateProcess is given for a job on Windows: its command line,
 * its environment block and the path of its program.
 *
 * Command line. argv is joined with the MSVCRT rules (what the C runtime's argv parser
 * undoes: quotes around an argument with blanks or quotes, backslashes doubled where they
 * precede a quote), except after cmd.exe's /c (or /k): the daemon runs argv = {"cmd.exe",
 * "/d", "/s", "/c", COMMAND, ARGS...}, and cmd /s takes everything between the first and
 * the last quote as one command line. So COMMAND and ARGS go inside one pair of quotes:
 * COMMAND as it is (the tenant's cmd syntax), each ARG quoted by the MSVCRT rules and then
 * with every cmd metacharacter ( ) % ! ^ " < > & | escaped with ^, so that cmd neither
 * interprets an argument nor expands %VAR% in it (escaped quotes keep cmd out of its
 * quoted state, where a ^ would be literal), and the program it runs gets it unchanged.
 * An ARG cannot carry a line break through cmd. Wine's cmd expands %VAR% before it drops
 * the carets; Windows' does not.
 *
 * Environment. Only the job's env, sorted as CreateProcess wants (by name, without case),
 * plus, when it lacks them, SystemRoot, SystemDrive, ComSpec and PATHEXT: many programs
 * (and Winsock) fail without SystemRoot, cmd.exe looks for ComSpec and PATHEXT. An entry
 * without '=' is dropped. (Wine adds its WINE* variables, and its own SystemRoot, to
 * every process it starts.)
 *
 * Program. argv[0] is looked up like exec.h says (the PATH of the job's env, default
 * %SystemRoot%\System32;%SystemRoot%, an empty or relative entry from the workdir; ".exe"
 * added to a name without an extension), not by CreateProcess's own search, which would
 * look in the agent's directories first.
 */
#include "agent/exec-win.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "common/buf.h"

#define DEFAULT_PATHEXT L".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC"

/* UTF-8 to a malloc'd UTF-16 string. Returns NULL (errno EINVAL: not UTF-8, or ENOMEM). */
wchar_t *exec_win_wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    wchar_t *w = malloc((size_t)n * sizeof(*w));
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

/* --- command line --------------------------------------------------------------------- */

/* One argument by the MSVCRT rules: bare when it has no blank and no quote (and force is
 * false), else in quotes with backslashes doubled where they precede a quote. */
static int quote_msvcrt(struct buf *b, const char *a, bool force)
{
    int r = 0;

    if (!force && *a && !strpbrk(a, " \t\n\v\""))
        return buf_append_str(b, a);
    r = buf_append(b, "\"", 1);
    for (const char *p = a; r >= 0; p++) {
        size_t bs = 0;
        while (*p == '\\') {
            bs++;
            p++;
        }
        /* Backslashes are literal unless a quote follows: before the closing quote (the
         * end) or an escaped one, each must be doubled. */
        size_t times = *p == '\0' ? 2 * bs : *p == '"' ? 2 * bs + 1 : bs;
        for (size_t i = 0; i < times && r >= 0; i++)
            r = buf_append(b, "\\", 1);
        if (r < 0 || *p == '\0')
            break;
        r = buf_append(b, p, 1);
    }
    return r < 0 ? r : buf_append(b, "\"", 1);
}

static bool is_cmd_exe(const char *argv0)
{
    const char *base = argv0;
    for (const char *p = argv0; *p; p++)
        if (*p == '\\' || *p == '/' || *p == ':')
            base = p + 1;
    return _stricmp(base, "cmd.exe") == 0 || _stricmp(base, "cmd") == 0;
}

int exec_win_cmdline(const char *const *argv, char **ret)
{
    struct buf b = BUF_INIT;
    size_t cmd_at = 0; /* index of COMMAND after cmd.exe's /c or /k, 0 = none */
    int r;

    if (!argv || !argv[0] || !argv[0][0] || strchr(argv[0], '"'))
        return -EINVAL;
    if (is_cmd_exe(argv[0]))
        for (size_t i = 1; argv[i]; i++)
            if ((_stricmp(argv[i], "/c") == 0 || _stricmp(argv[i], "/k") == 0) && argv[i + 1]) {
                cmd_at = i + 1;
                break;
            }
    /* The program name is read up to the next quote (or blank) with no escapes at all. */
    r = strpbrk(argv[0], " \t") ? buf_printf(&b, "\"%s\"", argv[0]) : buf_append_str(&b, argv[0]);
    for (size_t i = 1; argv[i] && r >= 0 && (cmd_at == 0 || i < cmd_at); i++) {
        r = buf_append(&b, " ", 1);
        if (r >= 0)
            r = quote_msvcrt(&b, argv[i], false);
    }
    if (cmd_at && r >= 0) {
        r = buf_printf(&b, " \"%s", argv[cmd_at]);
        for (size_t i = cmd_at + 1; argv[i] && r >= 0; i++) {
            struct buf q = BUF_INIT;
            r = quote_msvcrt(&q, argv[i], true);
            if (r >= 0)
                r = buf_append(&b, " ", 1);
            for (size_t k = 0; r >= 0 && k < q.len; k++) {
                if (strchr("()%!^\"<>&|", q.data[k]))
                    r = buf_append(&b, "^", 1);
                if (r >= 0)
                    r = buf_append(&b, q.data + k, 1);
            }
            buf_free(&q);
        }
        if (r >= 0)
            r = buf_append(&b, "\"", 1);
    }
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    *ret = buf_steal(&b);
    return *ret ? 0 : -ENOMEM;
}

/* --- environment ---------------------------------------------------------------------- */

static int env_cmp(const void *a, const void *b)
{
    const struct exec_win_env_ent *x = a, *y = b;
    return CompareStringOrdinal(x->s, (int)x->name, y->s, (int)y->name, TRUE) - CSTR_EQUAL;
}

static bool env_has(const struct exec_win_env_ent *v, size_t n, const wchar_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (CompareStringOrdinal(v[i].s, (int)v[i].name, name, -1, TRUE) == CSTR_EQUAL)
            return true;
    return false;
}

static const wchar_t *env_get(const struct exec_win_env_ent *v, size_t n, const wchar_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (CompareStringOrdinal(v[i].s, (int)v[i].name, name, -1, TRUE) == CSTR_EQUAL)
            return v[i].s + v[i].name + 1;
    return NULL;
}

void exec_win_env_free(struct exec_win_env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].s);
    free(e->v);
    free(e->block);
}

static int env_add(struct exec_win_env *e, wchar_t *s)
{
    if (!s)
        return -ENOMEM;
    /* A name may begin with '=' ("=C:"), so the first '=' after the first character. */
    const wchar_t *eq = s[0] ? wcschr(s + 1, L'=') : NULL;
    if (!eq) {
        free(s);
        return 0; /* not K=V: nothing CreateProcess could pass */
    }
    e->v[e->n].s = s;
    e->v[e->n++].name = (size_t)(eq - s);
    return 0;
}

static wchar_t *wcat(const wchar_t *a, const wchar_t *b, const wchar_t *c)
{
    size_t la = wcslen(a), lb = wcslen(b), lc = c ? wcslen(c) : 0;
    wchar_t *s = malloc((la + lb + lc + 1) * sizeof(*s));
    if (!s)
        return NULL;
    memcpy(s, a, la * sizeof(*s));
    memcpy(s + la, b, lb * sizeof(*s));
    if (c)
        memcpy(s + la + lb, c, lc * sizeof(*s));
    s[la + lb + lc] = 0;
    return s;
}

/* The job's environment block (see the top of the file). Returns 0, -EINVAL (not UTF-8)
 * or -ENOMEM. */
int exec_win_env_build(const char *const *env, struct exec_win_env *e)
{
    wchar_t sysroot[MAX_PATH];
    size_t n = 0, len = 1;
    int r = 0;

    for (const char *const *p = env; p && *p; p++)
        n++;
    e->v = calloc(n + 4, sizeof(*e->v));
    if (!e->v)
        return -ENOMEM;
    for (size_t i = 0; i < n && r >= 0; i++) {
        wchar_t *w = exec_win_wide(env[i]);
        if (!w)
            return -errno;
        r = env_add(e, w);
    }
    UINT sl = GetSystemWindowsDirectoryW(sysroot, MAX_PATH);
    if (sl == 0 || sl >= MAX_PATH)
        wcscpy_s(sysroot, MAX_PATH, L"C:\\Windows");
    if (r >= 0 && !env_has(e->v, e->n, L"SystemRoot"))
        r = env_add(e, wcat(L"SystemRoot=", sysroot, NULL));
    if (r >= 0 && !env_has(e->v, e->n, L"SystemDrive")) {
        wchar_t drive[3] = {sysroot[0], L':', 0};
        r = env_add(e, wcat(L"SystemDrive=", drive, NULL));
    }
    if (r >= 0 && !env_has(e->v, e->n, L"ComSpec"))
        r = env_add(e, wcat(L"ComSpec=", sysroot, L"\\System32\\cmd.exe"));
    if (r >= 0 && !env_has(e->v, e->n, L"PATHEXT"))
        r = env_add(e, wcat(L"PATHEXT=", DEFAULT_PATHEXT, NULL));
    if (r < 0)
        return r;
    qsort(e->v, e->n, sizeof(*e->v), env_cmp);
    for (size_t i = 0; i < e->n; i++)
        len += wcslen(e->v[i].s) + 1;
    e->block = malloc((len + 1) * sizeof(wchar_t));
    if (!e->block)
        return -ENOMEM;
    wchar_t *w = e->block;
    for (size_t i = 0; i < e->n; i++) {
        size_t l = wcslen(e->v[i].s) + 1;
        memcpy(w, e->v[i].s, l * sizeof(*w));
        w += l;
    }
    *w++ = 0;
    *w = 0;
    return 0;
}

/* --- program lookup ------------------------------------------------------------------- */

static bool path_absolute(const wchar_t *p)
{
    return (p[0] && p[1] == L':') || p[0] == L'\\' || p[0] == L'/';
}

static bool is_file(const wchar_t *p)
{
    DWORD a = GetFileAttributesW(p);
    return a != INVALID_FILE_ATTRIBUTES && !(a & FILE_ATTRIBUTE_DIRECTORY);
}

/* dir\name (dir relative to workdir when not absolute), ".exe" added when name has no
 * extension; NULL on ENOMEM. */
static wchar_t *candidate(const wchar_t *workdir, const wchar_t *dir, size_t dlen,
                          const wchar_t *name)
{
    const wchar_t *base = name;
    for (const wchar_t *p = name; *p; p++)
        if (*p == L'\\' || *p == L'/' || *p == L':')
            base = p + 1;
    bool ext = wcschr(base, L'.') != NULL;
    size_t wl = workdir && (dlen == 0 || !path_absolute(dir)) ? wcslen(workdir) + 1 : 0;
    size_t len = wl + dlen + 1 + wcslen(name) + 5;
    wchar_t *s = malloc(len * sizeof(*s));
    if (!s)
        return NULL;
    s[0] = 0;
    if (wl)
        swprintf(s, len, L"%ls\\", workdir);
    size_t at = wcslen(s);
    if (dlen)
        swprintf(s + at, len - at, L"%.*ls\\", (int)dlen, dir);
    at = wcslen(s);
    swprintf(s + at, len - at, L"%ls%ls", name, ext ? L"" : L".exe");
    return s;
}

/* The file to run for argv0, or NULL with errno ENOENT or ENOMEM. */
wchar_t *exec_win_program_find(const wchar_t *argv0, const struct exec_win_env *e,
                               const wchar_t *workdir)
{
    wchar_t sysroot[MAX_PATH], def[2 * MAX_PATH + 16];
    wchar_t *c;

    if (wcspbrk(argv0, L"\\/:")) {
        c = path_absolute(argv0) ? candidate(NULL, L"", 0, argv0)
                                 : candidate(workdir, L"", 0, argv0);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
        if (is_file(c))
            return c;
        free(c);
        errno = ENOENT;
        return NULL;
    }
    const wchar_t *path = env_get(e->v, e->n, L"PATH");
    if (!path) {
        const wchar_t *sr = env_get(e->v, e->n, L"SystemRoot");
        swprintf(sysroot, MAX_PATH, L"%ls", sr ? sr : L"C:\\Windows");
        swprintf(def, sizeof(def) / sizeof(*def), L"%ls\\System32;%ls", sysroot, sysroot);
        path = def;
    }
    for (const wchar_t *p = path;;) {
        const wchar_t *end = wcschr(p, L';');
        size_t dlen = end ? (size_t)(end - p) : wcslen(p);
        /* An empty element means the workdir, as in execvpe. */
        c = candidate(workdir, p, dlen, argv0);
        if (!c) {
            errno = ENOMEM;
            return NULL;
        }
        if (is_file(c))
            return c;
        free(c);
        if (!end)
            break;
        p = end + 1;
    }
    errno = ENOENT;
    return NULL;
}
