/* compat.h: the POSIX calls orch's portable code uses, on Windows (mingw-w64).
 *
 * On POSIX this header is empty: the real calls are used. On Windows it maps each call onto
 * a shim in compat-win.c, with function-like macros so that a struct member of the same name
 * is left alone. Include it last, after the system headers, in files that use those calls.
 *
 * What the shims guarantee, and where they are weaker than POSIX:
 * - Paths are UTF-8 and go through the W (UTF-16) APIs; '/' and '\' both separate.
 * - Every file is opened binary, shared for read, write and delete (so it can be renamed
 *   or deleted while open, as on POSIX), and not inherited by child processes when the
 *   flags hold O_CLOEXEC. The mode given on creation is ignored: a new file or directory
 *   takes its parent's ACL (the agent's state dir has a protected DACL, see daemon-win.c).
 * - O_NOFOLLOW refuses a reparse point (symlink, junction) with ELOOP.
 * - A directory "fd" (O_DIRECTORY) is a real CRT descriptor on a directory handle that
 *   carries the directory's absolute path; the *at() calls resolve names against it, and
 *   a rename through these shims moves the paths of the open directories it moves, so like
 *   a POSIX fd it follows its directory (renames by other processes are not seen).
 * - rename/renameat replace an existing target atomically (MoveFileExW with
 *   MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH), but fail with EACCES while the
 *   target is open. Windows refuses to rename a directory while a file below it is open
 *   (wine does not): callers rename directories before opening files in them, or cope.
 * - unlink of an open file succeeds; the name goes away when the last handle closes.
 * - fsync/fdatasync flush with FlushFileBuffers. On a directory they succeed without doing
 *   anything: NTFS journals its metadata and renames are written through.
 * - fstat/fstatat report S_IFREG or S_IFDIR with owner-only modes (0600/0700): access on
 *   Windows is the DACL's business, and code that refuses group/other bits must not trip.
 * - pread/pwrite read and write at the offset but, unlike POSIX, move the file position.
 * - flock is LockFileEx on the first byte (exclusive or shared, LOCK_NB = fail at once);
 *   it is mandatory locking of that byte, released when the handle closes.
 * - readdir lists "." and ".." like POSIX; the order is the file system's. */
#pragma once

#ifdef _WIN32

#include <fcntl.h>
#include <io.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Flags POSIX has and the C runtime lacks; O_DIRECTORY and O_NOFOLLOW use bits the
 * runtime does not (its flags end at 0x40000). */
#define O_CLOEXEC   _O_NOINHERIT
#define O_DIRECTORY 0x01000000
#define O_NOFOLLOW  0x02000000

#define AT_FDCWD            (-100)
#define AT_REMOVEDIR        0x200
#define AT_SYMLINK_NOFOLLOW 0x100

#define LOCK_SH 1
#define LOCK_EX 2
#define LOCK_NB 4
#define LOCK_UN 8

int compat_open(const char *path, int flags, ...);
int compat_openat(int dfd, const char *path, int flags, ...);
int compat_mkdir(const char *path, int mode);
int compat_mkdirat(int dfd, const char *path, int mode);
int compat_rename(const char *from, const char *to);
int compat_renameat(int fromfd, const char *from, int tofd, const char *to);
int compat_unlink(const char *path);
int compat_unlinkat(int dfd, const char *path, int flags);
int compat_rmdir(const char *path);
int compat_fstat(int fd, struct stat *st);
int compat_stat(const char *path, struct stat *st);
int compat_fstatat(int dfd, const char *path, struct stat *st, int flags);
int compat_fsync(int fd);
ssize_t compat_pread(int fd, void *buf, size_t len, int64_t off);
ssize_t compat_pwrite(int fd, const void *buf, size_t len, int64_t off);
int compat_flock(int fd, int op);
void compat_explicit_bzero(void *p, size_t len);
int compat_gethostname(char *name, size_t len);

#define open(...)              compat_open(__VA_ARGS__)
#define openat(...)            compat_openat(__VA_ARGS__)
#define mkdir(path, mode)      compat_mkdir(path, mode)
#define mkdirat(dfd, path, m)  compat_mkdirat(dfd, path, m)
#define rename(from, to)       compat_rename(from, to)
#define renameat(a, b, c, d)   compat_renameat(a, b, c, d)
#define unlink(path)           compat_unlink(path)
#define unlinkat(dfd, path, f) compat_unlinkat(dfd, path, f)
#define rmdir(path)            compat_rmdir(path)
#undef fstat
#define fstat(fd, st)          compat_fstat(fd, st)
#define fstatat(dfd, p, st, f) compat_fstatat(dfd, p, st, f)
#define fsync(fd)              compat_fsync(fd)
#define fdatasync(fd)          compat_fsync(fd)
#define pread(fd, b, n, off)   compat_pread(fd, b, n, off)
#define pwrite(fd, b, n, off)  compat_pwrite(fd, b, n, off)
#define flock(fd, op)          compat_flock(fd, op)
#define explicit_bzero(p, n)   compat_explicit_bzero(p, n)
#define gethostname(name, n)   compat_gethostname(name, n)

/* Directories: opendir/fdopendir/readdir/closedir/dirfd over FindFirstFileW. fdopendir
 * takes the descriptor over (closedir closes it); dirfd returns it. */
struct compat_dirent {
    char d_name[1024]; /* UTF-8; NTFS names are at most 255 UTF-16 units */
};
typedef struct compat_dir compat_DIR;
compat_DIR *compat_opendir(const char *path);
compat_DIR *compat_fdopendir(int fd);
struct compat_dirent *compat_readdir(compat_DIR *d);
int compat_closedir(compat_DIR *d);
int compat_dirfd(compat_DIR *d);

#define DIR           compat_DIR
#define dirent        compat_dirent
#define opendir(path) compat_opendir(path)
#define fdopendir(fd) compat_fdopendir(fd)
#define readdir(d)    compat_readdir(d)
#define closedir(d)   compat_closedir(d)
#define dirfd(d)      compat_dirfd(d)

/* getline(3): same contract (a line with its '\n', NUL-terminated, *buf grown with
 * realloc; -1 at end of file or on error with errno set). */
ssize_t compat_getline(char **buf, size_t *cap, FILE *f);
#define getline(buf, cap, f) compat_getline(buf, cap, f)

/* timegm(3): the C runtime's _mkgmtime, the same conversion (UTC, no time zone). */
#define timegm(tm) _mkgmtime(tm)

/* fopen(3) with a UTF-8 path (through _wfopen) and always binary ('b' added): a mode's
 * 'e' (close-on-exec) becomes 'N' (not inherited by child processes). */
FILE *compat_fopen(const char *path, const char *mode);
#define fopen(path, mode) compat_fopen(path, mode)

/* UTF-8 to a malloc'd UTF-16 string, and back; NULL with errno set (EINVAL when the text
 * is not valid UTF-8/UTF-16, ENOMEM). For the Windows-only code that calls W APIs. */
wchar_t *compat_utf8_to_wide(const char *s);
char *compat_wide_to_utf8(const wchar_t *w);
/* errno for a Windows error code (GetLastError()). */
int compat_errno_from_win32(unsigned long err);

#endif
