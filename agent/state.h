/* state.h: what an enrolled agent keeps in its state directory: agent.json (mode 0600,
 * written atomically) with the server URL, the pinned CA, the agent's id, tenant and name,
 * and its credential. The credential is a secret: never logged, only in this file. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct agent_state {
    char *server_url;
    char *ca_file; /* "" = system store */
    char *agent_id;
    char *tenant_id;
    char *name;
    char *credential; /* orch_ag_... */
    int slots;        /* as registered; 0 = not recorded (an older state file) */
    char *pool_id;    /* the shared pool it serves (several tenants' jobs); NULL = none */
};

/* Read <dir>/agent.json. Returns 0, -ENOENT (not enrolled), -EINVAL (damaged: err says
 * why) or -EPERM (readable by others: refused). */
int agent_state_load(const char *dir, struct agent_state *st, char *err, size_t errlen);
/* Write it atomically (tmp file 0600, fsync, rename, fsync dir); creates dir 0700. */
int agent_state_save(const char *dir, const struct agent_state *st);
int agent_state_remove(const char *dir);
/* Check that dir can hold the state file (created 0700 when missing). */
int agent_state_probe(const char *dir);
void agent_state_free(struct agent_state *st);
