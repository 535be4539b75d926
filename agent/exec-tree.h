/* exec-tree.h: what exec-posix.c uses of exec-tree.c (see its opening comment); the public
 * part (exec_subreaper_enable, exec_tree_probe, exec_tree_kill) is in exec.h. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "agent/exec.h"

/* The leader registry: reserve room, fork with the lock held and add the child before
 * unlocking; remove it once it is reaped. reserve returns 0 or -ENOMEM; add cannot fail
 * after a reserve. */
void exec_tree_leaders_lock(void);
void exec_tree_leaders_unlock(void);
int exec_tree_leader_reserve_locked(void);
void exec_tree_leader_add_locked(pid_t pid);
void exec_tree_leader_remove(pid_t pid);

/* Read /proc/<pid>/stat: parent, process group, state letter, start time in clock ticks
 * since boot (each may be NULL). Returns 0, -ESRCH (no such process) or -errno. */
int exec_tree_stat(pid_t pid, pid_t *ppid, pid_t *pgrp, char *state, uint64_t *start_ticks);

/* After a job (tags its env_tags, may be NULL): kill and reap the children of this process
 * that are not leaders and whose environment holds all tags, and reap exited ones, until
 * none is left (bounded). Returns how many were killed, or -ETIMEDOUT. */
int exec_tree_sweep_orphans(const char *const *tags, const char *job_id);
