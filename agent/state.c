/* state.c: the enrolled agent's state file (see state.h). */
#include "agent/state.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/jsonv.h"
#include "common/compat.h"

#define STATE_FILE "agent.json"

void agent_state_free(struct agent_state *st)
{
    if (st->credential)
        explicit_bzero(st->credential, strlen(st->credential));
    free(st->server_url);
    free(st->ca_file);
    free(st->agent_id);
    free(st->tenant_id);
    free(st->name);
    free(st->credential);
    free(st->pool_id);
    memset(st, 0, sizeof(*st));
}

int agent_state_load(const char *dir, struct agent_state *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    char path[4096];
    snprintf(path, sizeof(path), "%s/" STATE_FILE, dir);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? -ENOENT : -errno;
    struct stat s;
    if (fstat(fd, &s) < 0)
        return -errno;
    if (s.st_mode & 077) {
        snprintf(err, errlen, "%s is readable by others (mode %o): chmod 600 it", path,
                 (unsigned)(s.st_mode & 0777));
        return -EPERM;
    }
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 || (size_t)n == sizeof(buf)) {
        snprintf(err, errlen, "%s: cannot read it, or it is too large", path);
        return -EINVAL;
    }
    static const struct jsonv_field fields[] = {
        {"server_url", JSONV_STRING, JSONV_REQUIRED, 9, 2048},
        {"ca_file", JSONV_STRING, 0, 0, 4096},
        {"agent_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
        {"tenant_id", JSONV_UUID, JSONV_REQUIRED, 0, 0},
        {"name", JSONV_STRING, JSONV_REQUIRED, 1, 128},
        {"credential", JSONV_STRING, JSONV_REQUIRED, 64, 64},
        {"slots", JSONV_INT, 0, 1, 1024},
        {"pool_id", JSONV_UUID, 0, 0, 0},
    };
    json_t *doc = NULL;
    struct jsonv_error je;
    if (jsonv_parse(buf, (size_t)n, 4, &doc, &je) < 0 ||
        jsonv_check(doc, fields, ELEMENTSOF(fields), true, &je) < 0) {
        snprintf(err, errlen, "%s is damaged (%s%s%s): enrol again", path, je.field,
                 je.field[0] ? " " : "", je.detail);
        json_decref(doc);
        return -EINVAL;
    }
    const char *ca = json_string_value(json_object_get(doc, "ca_file"));
    st->server_url = strdup(json_string_value(json_object_get(doc, "server_url")));
    st->ca_file = strdup(ca ? ca : "");
    st->agent_id = strdup(json_string_value(json_object_get(doc, "agent_id")));
    st->tenant_id = strdup(json_string_value(json_object_get(doc, "tenant_id")));
    st->name = strdup(json_string_value(json_object_get(doc, "name")));
    st->credential = strdup(json_string_value(json_object_get(doc, "credential")));
    st->slots = (int)json_integer_value(json_object_get(doc, "slots"));
    const char *pool = json_string_value(json_object_get(doc, "pool_id"));
    st->pool_id = pool ? strdup(pool) : NULL;
    explicit_bzero(buf, sizeof(buf));
    json_decref(doc);
    if (!st->server_url || !st->ca_file || !st->agent_id || !st->tenant_id || !st->name ||
        !st->credential || (pool && !st->pool_id)) {
        agent_state_free(st);
        return -ENOMEM;
    }
    return 0;
}

int agent_state_save(const char *dir, const struct agent_state *st)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "server_url", st->server_url, "ca_file",
                  st->ca_file ? st->ca_file : "", "agent_id", st->agent_id, "tenant_id",
                  st->tenant_id, "name", st->name, "credential", st->credential);
    if (doc && st->slots > 0)
        json_object_set_new(doc, "slots", json_integer(st->slots));
    if (doc && st->pool_id)
        json_object_set_new(doc, "pool_id", json_string(st->pool_id));
    if (!doc)
        return -ENOMEM;
    char *text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof(tmp), "%s/." STATE_FILE ".tmp", dir);
    snprintf(path, sizeof(path), "%s/" STATE_FILE, dir);
    int r = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = -errno;
    } else {
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0)
            r = -EIO;
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
            r = -errno;
        if (r < 0)
            unlink(tmp);
    }
    explicit_bzero(text, strlen(text));
    free(text);
    if (r == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return r;
}

int agent_state_probe(const char *dir)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    char path[4096];
    snprintf(path, sizeof(path), "%s/.probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    close(fd);
    unlink(path);
    return 0;
}

int agent_state_remove(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/" STATE_FILE, dir);
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}
