/* config.c: the table of orch-agent's configuration keys. */
#include "agent/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/exec-uids.h"
#include "agent/host.h"
#include "agent/unpack.h"
#include "common/compat.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define F(field) offsetof(struct agent_config, field)

const struct conf_field agent_config_fields[] = {
    {"server.url", CONF_STRING, F(server_url), 0, 2048, "", NULL,
     "orchd base URL, https://host[:port] (the default of `register --server`)"},
    {"server.ca_file", CONF_STRING, F(ca_file), 0, 4096, "", NULL,
     "CA bundle to verify the server with (empty: the system store)"},
    {"server.proxy", CONF_STRING, F(proxy), 0, 2048, "", NULL,
     "HTTPS proxy, http://host:port (empty: HTTPS_PROXY / https_proxy / ALL_PROXY)"},
    {"server.no_proxy", CONF_STRING, F(no_proxy), 0, 4096, "", NULL,
     "comma-separated hosts reached without the proxy (empty: NO_PROXY / no_proxy)"},
    {"state_dir", CONF_STRING, F(state_dir), 1, 4096, AGENT_STATE_DIR_DEFAULT, NULL,
     "where the credential, the spool and the package cache live"},
    {"name", CONF_STRING, F(name), 0, 128, "", NULL, "agent name (empty: the host name)"},
    {"labels", CONF_STRING, F(labels), 0, 4096, "", NULL,
     "extra labels, comma-separated k=v pairs"},
    {"slots", CONF_INT, F(slots), 0, 1024, "0", NULL,
     "jobs the agent runs at once (0: as registered; register: 1)"},
    {"cache.max_bytes", CONF_SIZE, F(cache_max_bytes), 16 * 1024 * 1024, (int64_t)1 << 42, "10G",
     NULL, "package cache size: the least recently used archives go beyond it"},
    {"exec.user", CONF_STRING, F(exec_user), 0, 64, AGENT_EXEC_USER_DEFAULT, NULL,
     "unprivileged account jobs run as when the agent is root (not root: the agent's own; "
     "Windows: none, must stay empty)"},
    {"exec.allow_root", CONF_BOOL, F(exec_allow_root), 0, 0, "false", NULL,
     "let a root agent run jobs as root when exec.user is empty or missing (unsafe)"},
    {"exec.uid_range", CONF_STRING, F(exec_uid_range), 0, 32, "", NULL,
     "FIRST-LAST: each running job gets its own uid (and gid) from this range, for a root agent "
     "that runs several tenants' jobs (a shared pool's agent must have it)"},
    {"log.level", CONF_ENUM, F(log_level), 0, 0, "info", log_levels,
     "least severe level logged: debug, info, warn or error"},
    {"packages.max_unpacked_bytes", CONF_SIZE, F(packages_max_bytes), 1024 * 1024, (int64_t)1 << 42,
     UNPACK_MAX_BYTES_DEFAULT, NULL,
     "a package's unpacked size (bytes written, sparse holes included): a job whose package "
     "unpacks to more fails"},
    {"packages.max_files", CONF_INT, F(packages_max_files), 1, 10000000, UNPACK_MAX_FILES_DEFAULT,
     NULL, "entries (files, directories, links) in a package's archive"},
    {"packages.max_path_depth", CONF_INT, F(packages_max_depth), 1, 1024, UNPACK_MAX_DEPTH_DEFAULT,
     NULL, "directories deep an entry of a package's archive may be"},
    {"packages.max_path_bytes", CONF_INT, F(packages_max_path), 16, 4000, UNPACK_MAX_PATH_DEFAULT,
     NULL, "bytes of an entry's path in a package's archive"},
};

const size_t agent_config_nfields = sizeof(agent_config_fields) / sizeof(agent_config_fields[0]);

int agent_config_load(struct agent_config *cfg, const char *path, struct conf_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    char *default_path = host_expand(AGENT_CONFIG_DEFAULT_PATH);
    if (!default_path) {
        snprintf(err->msg, sizeof(err->msg), "config: out of memory");
        return -ENOMEM;
    }
    if (!path && access(default_path, F_OK) == 0)
        path = default_path;
    int r = conf_load(agent_config_fields, agent_config_nfields, cfg, path, "ORCH_AGENT", err);
    free(default_path);
    if (r < 0)
        return r;
    char *dir = host_expand(cfg->state_dir);
    if (!dir) {
        snprintf(err->msg, sizeof(err->msg), "config: out of memory");
        agent_config_free(cfg);
        return -ENOMEM;
    }
    free(cfg->state_dir);
    cfg->state_dir = dir;
    if (!cfg->exec_uid_range || !cfg->exec_uid_range[0])
        return 0;
    if (exec_uids_parse(cfg->exec_uid_range, &cfg->exec_uid_first, &cfg->exec_uid_last) < 0) {
        snprintf(err->msg, sizeof(err->msg),
                 "config: key 'exec.uid_range': expected FIRST-LAST, a range of at most %d uids "
                 "without 0, e.g. 200000-200999, got '%.32s'",
                 EXEC_UIDS_MAX, cfg->exec_uid_range);
        agent_config_free(cfg); /* as a failed conf_load() leaves nothing to free */
        return -EINVAL;
    }
    return 0;
}

void agent_config_free(struct agent_config *cfg)
{
    conf_free(agent_config_fields, agent_config_nfields, cfg);
}
