/* config.h: orch-agent's configuration, described by one table (config.c). Read from
 * AGENT_CONFIG_DEFAULT_PATH (or --config), then ORCH_AGENT_* environment variables. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/conf.h"

/* Per OS. On Windows, %VAR% in state_dir and in the default path is expanded at load
 * (%ProgramData% is C:\ProgramData), and there is no job user (exec.user is refused). */
#ifdef _WIN32
#define AGENT_CONFIG_DEFAULT_PATH "%ProgramData%\\Orch\\Agent\\agent.conf"
#define AGENT_STATE_DIR_DEFAULT   "%ProgramData%\\Orch\\Agent"
#define AGENT_EXEC_USER_DEFAULT   ""
#else
#define AGENT_CONFIG_DEFAULT_PATH "/etc/orch-agent/agent.conf"
#define AGENT_STATE_DIR_DEFAULT   "/var/lib/orch-agent"
#define AGENT_EXEC_USER_DEFAULT   "orch-job"
#endif

struct agent_config {
    char *server_url;        /* server.url: https://orch.example.com */
    char *ca_file;           /* server.ca_file: pinned CA bundle ("" = system store) */
    char *state_dir;         /* state_dir: credential, spool, package cache */
    char *name;              /* name: agent name ("" = host name) */
    char *labels;            /* labels: "k=v,k2=v2" added to enrolment labels */
    char *proxy;             /* server.proxy: http(s)://proxy:port ("" = HTTPS_PROXY etc.) */
    char *no_proxy;          /* server.no_proxy: hosts reached directly ("" = NO_PROXY) */
    int64_t slots;           /* slots: jobs run at once (0 = as registered, else 1) */
    int64_t cache_max_bytes; /* cache.max_bytes: package cache size */
    char *exec_user;         /* exec.user: the jobs' account when root ("orch-job") */
    bool exec_allow_root;    /* exec.allow_root: jobs may run as root without exec.user */
    char *exec_uid_range;    /* exec.uid_range: "FIRST-LAST", a uid per running job ("" = no) */
    unsigned exec_uid_first, exec_uid_last; /* exec.uid_range parsed (0, 0 when "") */
    int log_level;                          /* log.level */
    int64_t packages_max_bytes;             /* packages.max_unpacked_bytes */
    int64_t packages_max_files;             /* packages.max_files */
    int64_t packages_max_depth;             /* packages.max_path_depth */
    int64_t packages_max_path;              /* packages.max_path_bytes */
};

extern const struct conf_field agent_config_fields[];
extern const size_t agent_config_nfields;

/* Load defaults, path (NULL: the default path when it exists, else none) and the
 * environment. Returns 0 or a negative errno with err filled. */
int agent_config_load(struct agent_config *cfg, const char *path, struct conf_error *err);
void agent_config_free(struct agent_config *cfg);
