/* log.c: leveled key=value logging, one write(2) per line. */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/compat.h"

#define LOG_LINE_MAX   8192
#define LOG_TRUNC_MARK "..."
#define LOG_FILE_MAX   (16 * 1024 * 1024) /* agent.log moves to agent.log.1 past this, at open */

static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic int log_fd = STDERR_FILENO;

/* This thread's context: " key=value" fields, NUL-terminated (see log_ctx_push()). Threads
 * are event loops or worker threads that set it on entry to a request or a job and pop it
 * before they take the next, so it never leaks from one unit of work into another. */
static _Thread_local struct {
    char text[LOG_CTX_MAX];
    size_t len;
} log_ctx;

/* Fields of the whole process (log_set_process_field()), written once before threads log. */
static struct {
    char text[128];
    size_t len;
} log_proc;

static const char *const level_names[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_ERROR] = "error",
};

void log_set_level(enum log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level);
}

int log_level_parse(const char *s, enum log_level *ret)
{
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *ret = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

int log_set_fd(int fd)
{
    return atomic_exchange(&log_fd, fd);
}

int log_open_file(const char *path, bool take_stderr)
{
    char old[4096];
    struct stat sb;
    int fd, prev;

    if (snprintf(old, sizeof(old), "%s.1", path) >= (int)sizeof(old))
        return -ENAMETOOLONG;
    for (int pass = 0; pass < 2; pass++) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return -errno;
        if (pass == 1 || fstat(fd, &sb) < 0 || sb.st_size < LOG_FILE_MAX)
            break;
        /* One old generation is kept: the file is moved aside at open, never mid-run. */
        close(fd);
        fd = -1;
        if (rename(path, old) < 0)
            return -errno;
    }
    if (take_stderr) {
        if (dup2(fd, STDERR_FILENO) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
        fd = STDERR_FILENO;
    }
    prev = atomic_exchange(&log_fd, fd);
    if (prev != STDERR_FILENO && prev != fd && prev >= 0)
        close(prev);
    return 0;
}

/* Whether pat (plen >= 1 bytes) occurs in s (n bytes): memmem(), which mingw lacks. */
static bool bytes_find(const char *s, size_t n, const char *pat, size_t plen)
{
    const char *end = s + n;

    while ((size_t)(end - s) >= plen) {
        const char *c = memchr(s, pat[0], (size_t)(end - s) - plen + 1);
        if (!c)
            return false;
        if (memcmp(c, pat, plen) == 0)
            return true;
        s = c + 1;
    }
    return false;
}

/* Does the caller's part of a line (s, n bytes) hold a field named key (klen bytes)? The
 * fields are walked as key=value with double-quoted values skipped whole, so text inside a
 * quoted value ("detail=\"req=x\"") is not taken for a field. */
static bool fields_have_key(const char *s, size_t n, const char *key, size_t klen)
{
    size_t i = 0;

    /* The common case, cheaply: "key=" is nowhere in the text. key is followed by its '='
     * where it comes from (a context field). */
    if (!bytes_find(s, n, key, klen + 1))
        return false;

    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < n && s[i] != '=' && s[i] != ' ')
            i++;
        if (i - start == klen && i < n && s[i] == '=' && memcmp(s + start, key, klen) == 0)
            return true;
        if (i < n && s[i] == '=')
            i++;
        if (i < n && s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            i++;
        }
        while (i < n && s[i] != ' ')
            i++;
    }
    return false;
}

/* Append the " key=value" fields of src (n_src bytes) to line (fields so far from head to
 * len) within cap bytes, leaving out any key the line already has or that a later field of
 * src repeats (an inner push wins). Returns the new length; cap means it was cut (the
 * caller marks it). */
static size_t ctx_append(char *line, size_t len, size_t head, size_t cap, const char *src,
                         size_t n_src)
{
    const char *c = src, *end = src + n_src;
    size_t caller = len;

    while (c < end) {
        /* c points at " key=value"; a value is quoted without spaces outside its quotes. */
        const char *k = c + 1, *eq = memchr(k, '=', (size_t)(end - k));
        const char *next = eq ? eq + 1 : end;
        if (next < end && *next == '"') {
            for (next++; next < end && *next != '"'; next++)
                if (*next == '\\')
                    next++;
            if (next < end)
                next++;
        }
        while (next < end && *next != ' ')
            next++;
        /* Inner pushes win over outer ones of the same key: only the last is kept. */
        if (eq && !fields_have_key(line + head, caller - head, k, (size_t)(eq - k)) &&
            !fields_have_key(next, (size_t)(end - next), k, (size_t)(eq - k))) {
            size_t n = (size_t)(next - c);
            if (len + n > cap) {
                memcpy(line + len, c, cap - len);
                return cap;
            }
            memcpy(line + len, c, n);
            len += n;
        }
        c = next;
    }
    return len;
}

static bool log_key_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

size_t log_ctx_push(const char *key, const char *value)
{
    size_t mark = log_ctx.len, klen, vlen;
    char q[LOG_CTX_MAX], *p;
    const char *v;

    if (!key || !value || !*value)
        return mark;
    klen = strlen(key);
    if (klen == 0)
        return mark;
    for (size_t i = 0; i < klen; i++)
        if (!log_key_char((unsigned char)key[i]))
            return mark;
    v = log_quote(value, q, sizeof(q));
    vlen = strlen(v);
    /* " key=value" and the NUL, whole or not at all. */
    if (mark + 1 + klen + 1 + vlen + 1 > sizeof(log_ctx.text))
        return mark;
    p = log_ctx.text + mark;
    *p++ = ' ';
    memcpy(p, key, klen);
    p += klen;
    *p++ = '=';
    memcpy(p, v, vlen);
    p[vlen] = '\0';
    log_ctx.len = mark + 1 + klen + 1 + vlen;
    return mark;
}

void log_ctx_pop(size_t mark)
{
    if (mark >= log_ctx.len)
        return;
    log_ctx.len = mark;
    log_ctx.text[mark] = '\0';
}

int log_set_process_field(const char *key, const char *value)
{
    char q[128];
    size_t klen = key ? strlen(key) : 0;
    int n;

    if (klen == 0 || !value || !*value)
        return -EINVAL;
    for (size_t i = 0; i < klen; i++)
        if (!log_key_char((unsigned char)key[i]))
            return -EINVAL;
    n = snprintf(log_proc.text + log_proc.len, sizeof(log_proc.text) - log_proc.len, " %s=%s", key,
                 log_quote(value, q, sizeof(q)));
    if (n < 0 || (size_t)n >= sizeof(log_proc.text) - log_proc.len) {
        log_proc.text[log_proc.len] = '\0';
        return -ENOSPC;
    }
    log_proc.len += (size_t)n;
    return 0;
}

const char *log_ctx_get(void)
{
    return log_ctx.text;
}

void log_emit(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_emitv(level, fmt, ap);
    va_end(ap);
}

void log_emitv(enum log_level level, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ts[CLOCK_RFC3339_LEN];
    size_t len, head;
    int saved_errno = errno, n, fd;

    if ((int)level < atomic_load(&log_level))
        return;

    if (clock_format_rfc3339(clock_real_ms(), ts, sizeof(ts)) < 0)
        ts[0] = '\0';
    n = snprintf(line, sizeof(line), "ts=%s level=%s ", ts, log_level_name(level));
    if (n < 0)
        goto out;
    head = (size_t)n;

    /* Leave room for the newline. */
    n = vsnprintf(line + head, sizeof(line) - head - 1, fmt, ap);
    if (n < 0)
        goto out;
    len = head + (size_t)n;
    if (len <= sizeof(line) - 2 && log_ctx.len > 0)
        len = ctx_append(line, len, head, sizeof(line) - 1, log_ctx.text, log_ctx.len);
    if (len <= sizeof(line) - 2 && log_proc.len > 0)
        len = ctx_append(line, len, head, sizeof(line) - 1, log_proc.text, log_proc.len);
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
        memcpy(line + len - strlen(LOG_TRUNC_MARK), LOG_TRUNC_MARK, strlen(LOG_TRUNC_MARK));
    }
    /* One event is one line: drop the caller's trailing newlines and flatten inner ones so
     * a value that slipped past log_quote() cannot forge a second event. */
    while (len > head && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    for (size_t i = head; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';

    fd = atomic_load(&log_fd);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, line + off, len - off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
out:
    errno = saved_errno;
}

static bool log_safe_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
}

/* Escape one byte into piece (at least 5 bytes); returns the escaped length. */
static size_t log_escape(unsigned char c, char *piece)
{
    static const char hex[] = "0123456789abcdef";

    switch (c) {
    case '"':
    case '\\':
        piece[0] = '\\';
        piece[1] = (char)c;
        return 2;
    case '\n':
        piece[0] = '\\';
        piece[1] = 'n';
        return 2;
    case '\t':
        piece[0] = '\\';
        piece[1] = 't';
        return 2;
    default:
        break;
    }
    /* Bytes outside printable ASCII (controls, DEL, and any non-ASCII byte) are escaped. */
    if (c < 0x20 || c >= 0x7f) {
        piece[0] = '\\';
        piece[1] = 'x';
        piece[2] = hex[c >> 4];
        piece[3] = hex[c & 0x0f];
        return 4;
    }
    piece[0] = (char)c;
    return 1;
}

const char *log_quote(const char *s, char *buf, size_t len)
{
    const unsigned char *p;
    size_t total = 0, o = 0;
    char piece[5];
    bool safe = true;

    if (!s)
        return "-";
    for (p = (const unsigned char *)s; *p; p++) {
        if (!log_safe_char(*p))
            safe = false;
        total += log_escape(*p, piece);
    }
    if (safe && total > 0)
        return s;

    /* Smallest useful truncated form is "\"...\"" plus NUL. */
    if (!buf || len < 6)
        return "\"...\"";

    buf[o++] = '"';
    if (total + 3 <= len) {
        for (p = (const unsigned char *)s; *p; p++) {
            size_t k = log_escape(*p, piece);
            memcpy(buf + o, piece, k);
            o += k;
        }
    } else {
        /* Keep whole escape sequences only, then the marker, quote and NUL. */
        for (p = (const unsigned char *)s; *p; p++) {
            size_t k = log_escape(*p, piece);
            if (o + k + 3 + 2 > len)
                break;
            memcpy(buf + o, piece, k);
            o += k;
        }
        memcpy(buf + o, LOG_TRUNC_MARK, 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
