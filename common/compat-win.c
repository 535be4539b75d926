/* compat-win.c: the POSIX calls of compat.h on Windows. compat.h says what each one
 * guarantees and where it is weaker than POSIX. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <windows.h>

#include "common/compat.h"

#undef open
#undef fopen
#undef fstat
#undef mkdir
#undef rename
#undef unlink
#undef rmdir

/* A long path's worth of UTF-16 units (the \\?\ form allows 32767). */
#define COMPAT_PATH_MAX 32768

int compat_errno_from_win32(unsigned long err)
{
    switch (err) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
    case ERROR_BAD_NET_NAME:
        return ENOENT;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS:
        return EEXIST;
    case ERROR_ACCESS_DENIED:
    case ERROR_PRIVILEGE_NOT_HELD:
    case ERROR_WRITE_PROTECT:
        return EACCES;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
    case ERROR_BUSY:
        return EBUSY;
    case ERROR_DIR_NOT_EMPTY:
        return ENOTEMPTY;
    case ERROR_DIRECTORY:
        return ENOTDIR;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        return ENOSPC;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        return ENOMEM;
    case ERROR_INVALID_HANDLE:
        return EBADF;
    case ERROR_INVALID_NAME:
    case ERROR_INVALID_PARAMETER:
    case ERROR_NO_UNICODE_TRANSLATION:
        return EINVAL;
    case ERROR_FILENAME_EXCED_RANGE:
        return ENAMETOOLONG;
    case ERROR_CANT_RESOLVE_FILENAME:
    case ERROR_CANT_ACCESS_FILE:
        return ELOOP;
    default:
        return EIO;
    }
}

static int fail_win32(void)
{
    errno = compat_errno_from_win32(GetLastError());
    return -1;
}

wchar_t *compat_utf8_to_wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    wchar_t *w;

    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    w = malloc((size_t)n * sizeof(*w));
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
    return w;
}

char *compat_wide_to_utf8(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, NULL, 0, NULL, NULL);
    char *s;

    if (n <= 0) {
        errno = EINVAL;
        return NULL;
    }
    s = malloc((size_t)n);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, s, n, NULL, NULL);
    return s;
}

static HANDLE fd_handle(int fd)
{
    HANDLE h = (HANDLE)_get_osfhandle(fd);

    if (h == INVALID_HANDLE_VALUE)
        errno = EBADF;
    return h;
}

static bool path_is_absolute(const char *p)
{
    return p[0] == '/' || p[0] == '\\' ||
           (((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z') && p[1] == ':');
}

/* Directory descriptors carry their path. GetFinalPathNameByHandleW would give a
 * directory's current path on Windows, but wine keeps the name a handle was opened with, so
 * the path is kept here instead, and a rename moves the paths of the open directories it
 * moves. close() is not wrapped, so an entry may outlive its handle and the handle's value
 * be reused: an entry is only believed after checking that its path still leads to the
 * same directory (volume serial and file index) as the descriptor. Entries are found by
 * handle, then by that identity (another handle on the directory, e.g. a dup()); failing
 * both, GetFinalPathNameByHandleW. */
struct dirpath {
    HANDLE h;
    DWORD volume, index_hi, index_lo;
    wchar_t *path; /* absolute */
};

#define DIRPATHS_MAX 4096

static SRWLOCK dirpaths_lock = SRWLOCK_INIT;
static struct dirpath dirpaths[DIRPATHS_MAX];
static size_t ndirpaths;

/* Same volume and file index. Wine reports volume 0 through a handle whose directory was
 * renamed since it was opened: 0 matches any volume. */
static bool same_id(DWORD vol_a, DWORD hi_a, DWORD lo_a, const BY_HANDLE_FILE_INFORMATION *b)
{
    return (vol_a == b->dwVolumeSerialNumber || vol_a == 0 || b->dwVolumeSerialNumber == 0) &&
           hi_a == b->nFileIndexHigh && lo_a == b->nFileIndexLow;
}

static bool same_dir(const struct dirpath *d, const BY_HANDLE_FILE_INFORMATION *info)
{
    return same_id(d->volume, d->index_hi, d->index_lo, info);
}

static void dirpath_drop(size_t i)
{
    free(dirpaths[i].path);
    dirpaths[i] = dirpaths[--ndirpaths];
}

static void dirpath_register(HANDLE h, const BY_HANDLE_FILE_INFORMATION *info, const wchar_t *path)
{
    wchar_t *abs;
    DWORD n = GetFullPathNameW(path, 0, NULL, NULL);

    if (n == 0)
        return;
    abs = malloc((size_t)n * sizeof(*abs));
    if (!abs || GetFullPathNameW(path, n, abs, NULL) == 0 || !*abs) {
        free(abs);
        return;
    }
    /* No trailing separator, so "<path>\<name>" is always well formed. */
    n = (DWORD)wcslen(abs);
    if (n > 3 && abs[n - 1] == L'\\')
        abs[n - 1] = L'\0';
    AcquireSRWLockExclusive(&dirpaths_lock);
    /* This registration supersedes an older one of the handle value or of the directory. */
    for (size_t i = ndirpaths; i-- > 0;)
        if (dirpaths[i].h == h || same_dir(&dirpaths[i], info))
            dirpath_drop(i);
    /* Full: forget the oldest half; a forgotten directory falls back to the handle's name. */
    if (ndirpaths == DIRPATHS_MAX) {
        for (size_t i = 0; i < DIRPATHS_MAX / 2; i++)
            free(dirpaths[i].path);
        memmove(dirpaths, dirpaths + DIRPATHS_MAX / 2, (DIRPATHS_MAX / 2) * sizeof(*dirpaths));
        ndirpaths = DIRPATHS_MAX / 2;
    }
    dirpaths[ndirpaths++] = (struct dirpath){h, info->dwVolumeSerialNumber, info->nFileIndexHigh,
                                             info->nFileIndexLow, abs};
    ReleaseSRWLockExclusive(&dirpaths_lock);
}

/* After from was renamed to to: the open directories at or below from are below to now. */
static void dirpath_renamed(const wchar_t *from, const wchar_t *to)
{
    size_t flen = wcslen(from), tlen = wcslen(to);

    AcquireSRWLockExclusive(&dirpaths_lock);
    for (size_t i = 0; i < ndirpaths; i++) {
        wchar_t *p = dirpaths[i].path, *np;
        size_t plen = wcslen(p);

        if (plen < flen || _wcsnicmp(p, from, flen) != 0 || (p[flen] && p[flen] != L'\\'))
            continue;
        np = malloc((tlen + plen - flen + 1) * sizeof(*np));
        if (!np)
            continue;
        memcpy(np, to, tlen * sizeof(*np));
        memcpy(np + tlen, p + flen, (plen - flen + 1) * sizeof(*np));
        free(p);
        dirpaths[i].path = np;
    }
    ReleaseSRWLockExclusive(&dirpaths_lock);
}

/* Does path lead to the directory info describes? */
static bool path_is_dir(const wchar_t *path, const BY_HANDLE_FILE_INFORMATION *info)
{
    BY_HANDLE_FILE_INFORMATION other;
    HANDLE h = CreateFileW(path, FILE_READ_ATTRIBUTES,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    bool same;

    if (h == INVALID_HANDLE_VALUE)
        return false;
    same = GetFileInformationByHandle(h, &other) &&
           same_id(other.dwVolumeSerialNumber, other.nFileIndexHigh, other.nFileIndexLow, info);
    CloseHandle(h);
    return same;
}

/* The path of the directory open as dfd into out (COMPAT_PATH_MAX units). */
static int dirpath_of(int dfd, wchar_t *out)
{
    BY_HANDLE_FILE_INFORMATION info;
    HANDLE h = fd_handle(dfd);
    DWORD n;

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    if (!GetFileInformationByHandle(h, &info))
        return fail_win32();
    for (int pass = 0; pass < 2; pass++) {
        bool found = false;

        AcquireSRWLockShared(&dirpaths_lock);
        for (size_t i = ndirpaths; i-- > 0 && !found;) {
            size_t len = wcslen(dirpaths[i].path);

            if (!same_dir(&dirpaths[i], &info) || (pass == 0 && dirpaths[i].h != h) ||
                len >= COMPAT_PATH_MAX)
                continue;
            memcpy(out, dirpaths[i].path, (len + 1) * sizeof(*out));
            found = true;
        }
        ReleaseSRWLockShared(&dirpaths_lock);
        if (found && path_is_dir(out, &info))
            return 0;
    }
    n = GetFinalPathNameByHandleW(h, out, COMPAT_PATH_MAX, FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
    if (n == 0)
        return fail_win32();
    if (n >= COMPAT_PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The UTF-16 path of name relative to the directory open as dfd (or the current directory
 * for AT_FDCWD, or name itself when absolute), '/' turned into '\'. malloc'd; NULL with
 * errno set. */
static wchar_t *path_at(int dfd, const char *name)
{
    wchar_t *wname = compat_utf8_to_wide(name), *out;
    size_t dlen, nlen;

    if (!wname)
        return NULL;
    for (wchar_t *c = wname; *c; c++)
        if (*c == L'/')
            *c = L'\\';
    if (dfd == AT_FDCWD || path_is_absolute(name))
        return wname;
    out = malloc(COMPAT_PATH_MAX * sizeof(*out));
    if (!out) {
        free(wname);
        errno = ENOMEM;
        return NULL;
    }
    if (dirpath_of(dfd, out) < 0) {
        int e = errno;

        free(wname);
        free(out);
        errno = e;
        return NULL;
    }
    dlen = wcslen(out);
    nlen = wcslen(wname);
    if (dlen + 1 + nlen + 1 > COMPAT_PATH_MAX) {
        free(wname);
        free(out);
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (dlen > 0 && out[dlen - 1] != L'\\')
        out[dlen++] = L'\\';
    memcpy(out + dlen, wname, (nlen + 1) * sizeof(*out));
    free(wname);
    return out;
}

static int open_wide(const wchar_t *path, int flags)
{
    SECURITY_ATTRIBUTES sa = {sizeof(sa), NULL, !(flags & O_CLOEXEC)};
    DWORD access = 0, disposition, attrs = FILE_ATTRIBUTE_NORMAL;
    BY_HANDLE_FILE_INFORMATION info;
    int acc = flags & (O_RDONLY | O_WRONLY | O_RDWR), osflags = 0, fd;
    HANDLE h;

    if (flags & O_DIRECTORY) {
        access = FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES | SYNCHRONIZE;
        disposition = OPEN_EXISTING;
        attrs = FILE_FLAG_BACKUP_SEMANTICS;
        osflags = O_RDONLY;
    } else {
        access = acc == O_WRONLY ? GENERIC_WRITE
                 : acc == O_RDWR ? GENERIC_READ | GENERIC_WRITE
                                 : GENERIC_READ;
        if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL))
            disposition = CREATE_NEW;
        else if ((flags & (O_CREAT | O_TRUNC)) == (O_CREAT | O_TRUNC))
            disposition = CREATE_ALWAYS;
        else if (flags & O_CREAT)
            disposition = OPEN_ALWAYS;
        else if (flags & O_TRUNC)
            disposition = TRUNCATE_EXISTING;
        else
            disposition = OPEN_EXISTING;
        osflags = acc | (flags & O_APPEND);
    }
    if (flags & O_NOFOLLOW)
        attrs |= FILE_FLAG_OPEN_REPARSE_POINT;
    h = CreateFileW(path, access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa,
                    disposition, attrs, NULL);
    if (h == INVALID_HANDLE_VALUE)
        return fail_win32();
    if (!GetFileInformationByHandle(h, &info)) {
        fail_win32();
        CloseHandle(h);
        return -1;
    }
    if ((flags & O_NOFOLLOW) && (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT)) {
        CloseHandle(h);
        errno = ELOOP;
        return -1;
    }
    if ((flags & O_DIRECTORY) && !(info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        CloseHandle(h);
        errno = ENOTDIR;
        return -1;
    }
    fd = _open_osfhandle((intptr_t)h, osflags);
    if (fd < 0) {
        CloseHandle(h);
        errno = EMFILE;
        return -1;
    }
    if (flags & O_DIRECTORY)
        dirpath_register(h, &info, path);
    return fd;
}

int compat_openat(int dfd, const char *path, int flags, ...)
{
    wchar_t *w = path_at(dfd, path);
    int fd, e;

    if (!w)
        return -1;
    fd = open_wide(w, flags);
    e = errno;
    free(w);
    errno = e;
    return fd;
}

int compat_open(const char *path, int flags, ...)
{
    return compat_openat(AT_FDCWD, path, flags);
}

int compat_mkdirat(int dfd, const char *path, int mode)
{
    wchar_t *w = path_at(dfd, path);
    int r;

    (void)mode;
    if (!w)
        return -1;
    r = CreateDirectoryW(w, NULL) ? 0 : fail_win32();
    free(w);
    return r;
}

int compat_mkdir(const char *path, int mode)
{
    return compat_mkdirat(AT_FDCWD, path, mode);
}

int compat_renameat(int fromfd, const char *from, int tofd, const char *to)
{
    wchar_t *wf = path_at(fromfd, from), *wt = wf ? path_at(tofd, to) : NULL;
    int r = -1;

    if (wf && wt)
        r = MoveFileExW(wf, wt, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH) ? 0
                                                                                    : fail_win32();
    if (r == 0) {
        wchar_t *af = NULL, *at = NULL;
        DWORD nf = GetFullPathNameW(wf, 0, NULL, NULL), nt = GetFullPathNameW(wt, 0, NULL, NULL);

        if (nf && nt && (af = malloc(nf * sizeof(*af))) && (at = malloc(nt * sizeof(*at))) &&
            GetFullPathNameW(wf, nf, af, NULL) && GetFullPathNameW(wt, nt, at, NULL))
            dirpath_renamed(af, at);
        free(af);
        free(at);
    }
    free(wf);
    free(wt);
    return r;
}

int compat_rename(const char *from, const char *to)
{
    return compat_renameat(AT_FDCWD, from, AT_FDCWD, to);
}

int compat_unlinkat(int dfd, const char *path, int flags)
{
    wchar_t *w = path_at(dfd, path);
    int r;

    if (!w)
        return -1;
    if (flags & AT_REMOVEDIR)
        r = RemoveDirectoryW(w) ? 0 : fail_win32();
    else
        r = DeleteFileW(w) ? 0 : fail_win32();
    free(w);
    return r;
}

int compat_unlink(const char *path)
{
    return compat_unlinkat(AT_FDCWD, path, 0);
}

int compat_rmdir(const char *path)
{
    return compat_unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}

static int64_t filetime_to_unix(FILETIME ft)
{
    int64_t t = (int64_t)((uint64_t)ft.dwHighDateTime << 32 | ft.dwLowDateTime);

    /* 100 ns ticks since 1601-01-01 to seconds since 1970-01-01. */
    return t / 10000000 - INT64_C(11644473600);
}

int compat_fstat(int fd, struct stat *st)
{
    BY_HANDLE_FILE_INFORMATION info;
    HANDLE h = fd_handle(fd);

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    if (!GetFileInformationByHandle(h, &info))
        return fail_win32();
    memset(st, 0, sizeof(*st));
    if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
        st->st_mode = S_IFDIR | 0700;
    else
        st->st_mode = S_IFREG | 0600;
    st->st_nlink = (short)(info.nNumberOfLinks > 0x7fff ? 0x7fff : info.nNumberOfLinks);
    st->st_size = (int64_t)((uint64_t)info.nFileSizeHigh << 32 | info.nFileSizeLow);
    st->st_atime = filetime_to_unix(info.ftLastAccessTime);
    st->st_mtime = filetime_to_unix(info.ftLastWriteTime);
    st->st_ctime = filetime_to_unix(info.ftCreationTime);
    st->st_dev = info.dwVolumeSerialNumber;
    st->st_ino = (unsigned short)info.nFileIndexLow;
    return 0;
}

int compat_fstatat(int dfd, const char *path, struct stat *st, int flags)
{
    wchar_t *w = path_at(dfd, path);
    DWORD attrs = FILE_FLAG_BACKUP_SEMANTICS;
    int fd, r;
    HANDLE h;

    if (!w)
        return -1;
    if (flags & AT_SYMLINK_NOFOLLOW)
        attrs |= FILE_FLAG_OPEN_REPARSE_POINT;
    h = CreateFileW(w, FILE_READ_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                    NULL, OPEN_EXISTING, attrs, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return fail_win32();
    fd = _open_osfhandle((intptr_t)h, O_RDONLY);
    if (fd < 0) {
        CloseHandle(h);
        errno = EMFILE;
        return -1;
    }
    r = compat_fstat(fd, st);
    close(fd);
    return r;
}

int compat_stat(const char *path, struct stat *st)
{
    return compat_fstatat(AT_FDCWD, path, st, 0);
}

int compat_fsync(int fd)
{
    BY_HANDLE_FILE_INFORMATION info;
    HANDLE h = fd_handle(fd);

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    if (!GetFileInformationByHandle(h, &info))
        return fail_win32();
    if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
        return 0;
    return FlushFileBuffers(h) ? 0 : fail_win32();
}

/* ReadFile/WriteFile at an offset: on a handle opened for synchronous I/O the OVERLAPPED
 * offset is honoured and the call waits. Returns the handle with *ov set for off and *len
 * cut to what one call can move, or INVALID_HANDLE_VALUE with errno set. */
static HANDLE at_offset(int fd, int64_t off, OVERLAPPED *ov, size_t *len)
{
    HANDLE h = fd_handle(fd);

    if (h == INVALID_HANDLE_VALUE)
        return h;
    if (off < 0) {
        errno = EINVAL;
        return INVALID_HANDLE_VALUE;
    }
    memset(ov, 0, sizeof(*ov));
    ov->Offset = (DWORD)((uint64_t)off & 0xffffffffu);
    ov->OffsetHigh = (DWORD)((uint64_t)off >> 32);
    if (*len > 0x40000000)
        *len = 0x40000000;
    return h;
}

ssize_t compat_pread(int fd, void *buf, size_t len, int64_t off)
{
    OVERLAPPED ov;
    DWORD got = 0;
    HANDLE h = at_offset(fd, off, &ov, &len);

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    if (!ReadFile(h, buf, (DWORD)len, &got, &ov)) {
        if (GetLastError() == ERROR_HANDLE_EOF)
            return 0;
        return fail_win32();
    }
    return (ssize_t)got;
}

ssize_t compat_pwrite(int fd, const void *buf, size_t len, int64_t off)
{
    OVERLAPPED ov;
    DWORD put = 0;
    HANDLE h = at_offset(fd, off, &ov, &len);

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    if (!WriteFile(h, buf, (DWORD)len, &put, &ov))
        return fail_win32();
    return (ssize_t)put;
}

int compat_flock(int fd, int op)
{
    OVERLAPPED ov;
    HANDLE h = fd_handle(fd);
    DWORD flags = 0;

    if (h == INVALID_HANDLE_VALUE)
        return -1;
    memset(&ov, 0, sizeof(ov));
    if (op & LOCK_UN)
        return UnlockFileEx(h, 0, 1, 0, &ov) ? 0 : fail_win32();
    if (op & LOCK_EX)
        flags |= LOCKFILE_EXCLUSIVE_LOCK;
    if (op & LOCK_NB)
        flags |= LOCKFILE_FAIL_IMMEDIATELY;
    if (!LockFileEx(h, flags, 0, 1, 0, &ov)) {
        DWORD e = GetLastError();

        errno = e == ERROR_LOCK_VIOLATION || e == ERROR_IO_PENDING ? EWOULDBLOCK
                                                                   : compat_errno_from_win32(e);
        return -1;
    }
    return 0;
}

void compat_explicit_bzero(void *p, size_t len)
{
    SecureZeroMemory(p, len);
}

int compat_gethostname(char *name, size_t len)
{
    wchar_t w[256];
    DWORD n = sizeof(w) / sizeof(*w);
    char *s;
    size_t sl;

    if (!GetComputerNameExW(ComputerNameDnsHostname, w, &n))
        return fail_win32();
    s = compat_wide_to_utf8(w);
    if (!s)
        return -1;
    sl = strlen(s);
    if (sl + 1 > len) {
        free(s);
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(name, s, sl + 1);
    free(s);
    return 0;
}

/* ---- directories ---- */

struct compat_dir {
    int fd;
    HANDLE find;
    bool first, done;
    WIN32_FIND_DATAW data;
    struct compat_dirent ent;
};

compat_DIR *compat_fdopendir(int fd)
{
    wchar_t *pattern = path_at(fd, "*");
    struct compat_dir *d;

    if (!pattern)
        return NULL;
    d = calloc(1, sizeof(*d));
    if (!d) {
        free(pattern);
        errno = ENOMEM;
        return NULL;
    }
    d->fd = fd;
    d->find = FindFirstFileW(pattern, &d->data);
    free(pattern);
    if (d->find == INVALID_HANDLE_VALUE) {
        DWORD e = GetLastError();

        if (e != ERROR_FILE_NOT_FOUND && e != ERROR_NO_MORE_FILES) {
            free(d);
            errno = compat_errno_from_win32(e);
            return NULL;
        }
        d->done = true;
    }
    d->first = true;
    return d;
}

compat_DIR *compat_opendir(const char *path)
{
    int fd = compat_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    compat_DIR *d;

    if (fd < 0)
        return NULL;
    d = compat_fdopendir(fd);
    if (!d) {
        int e = errno;

        close(fd);
        errno = e;
    }
    return d;
}

struct compat_dirent *compat_readdir(compat_DIR *d)
{
    for (;;) {
        int n;

        if (d->done)
            return NULL;
        if (!d->first && !FindNextFileW(d->find, &d->data)) {
            d->done = true;
            return NULL;
        }
        d->first = false;
        n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, d->data.cFileName, -1, d->ent.d_name,
                                sizeof(d->ent.d_name), NULL, NULL);
        if (n > 0)
            return &d->ent;
        /* A name that is not valid UTF-16 cannot be one of ours: skip it. */
    }
}

int compat_closedir(compat_DIR *d)
{
    if (!d)
        return 0;
    if (d->find != INVALID_HANDLE_VALUE && d->find)
        FindClose(d->find);
    close(d->fd);
    free(d);
    return 0;
}

int compat_dirfd(compat_DIR *d)
{
    return d->fd;
}

/* ---- stdio ---- */

ssize_t compat_getline(char **buf, size_t *cap, FILE *f)
{
    size_t n = 0;
    int c;

    if (!buf || !cap || !f) {
        errno = EINVAL;
        return -1;
    }
    while ((c = getc(f)) != EOF) {
        if (n + 2 > *cap) {
            size_t ncap = *cap < 128 ? 128 : *cap * 2;
            char *p = realloc(*buf, ncap);

            if (!p) {
                errno = ENOMEM;
                return -1;
            }
            *buf = p;
            *cap = ncap;
        }
        (*buf)[n++] = (char)c;
        if (c == '\n')
            break;
    }
    if (n == 0)
        return -1;
    (*buf)[n] = '\0';
    return (ssize_t)n;
}

FILE *compat_fopen(const char *path, const char *mode)
{
    wchar_t wmode[16], *wpath;
    size_t o = 0;
    FILE *f;

    for (const char *m = mode; *m && o + 3 < sizeof(wmode) / sizeof(*wmode); m++) {
        if (*m == 'b')
            continue;
        wmode[o++] = *m == 'e' ? L'N' : (wchar_t)*m;
    }
    wmode[o++] = L'b';
    wmode[o] = L'\0';
    wpath = compat_utf8_to_wide(path);
    if (!wpath)
        return NULL;
    f = _wfopen(wpath, wmode);
    free(wpath);
    return f;
}
