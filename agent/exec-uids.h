/* exec-uids.h: job users from a range of uids (exec.uid_range), for an agent whose jobs
 * belong to several tenants (an agent of a shared pool).
 *
 * Each running job gets a uid (and the gid of the same number) that no other running job of
 * this agent has, so that two tenants' jobs never share a user while they run: neither can
 * signal, ptrace or read the other's private files. The uids need no account (no passwd
 * entry): the agent, as root, switches to the number. A uid is taken round-robin (the one
 * after the last taken first), so that one freed is reused as late as possible.
 *
 * Thread-safe: the set has its own lock. */
#pragma once

#include <stddef.h>

#include "agent/exec.h"

/* The most uids a range may hold. */
#define EXEC_UIDS_MAX 65536

struct exec_uids;

/* Parse "FIRST-LAST" (decimal, FIRST <= LAST): a range without 0 (root) and without the
 * 32-bit "no uid" (4294967295), of at most EXEC_UIDS_MAX uids. Returns 0 with *first and
 * *last set, or -EINVAL (both untouched). */
int exec_uids_parse(const char *text, unsigned *first, unsigned *last);

/* A set of the uids first..last, none taken. Returns 0 with *ret set (free with
 * exec_uids_free()), -EINVAL for a range exec_uids_parse() would refuse, or -ENOMEM. */
int exec_uids_new(unsigned first, unsigned last, struct exec_uids **ret);
/* Accepts NULL. */
void exec_uids_free(struct exec_uids *u);

/* How many uids the set holds. */
size_t exec_uids_size(const struct exec_uids *u);

/* Take a uid no one holds: *ret = {uid, gid = uid}. Returns 0, or -EBUSY when every uid of
 * the range is taken (*ret untouched). */
int exec_uids_take(struct exec_uids *u, struct exec_user *ret);
/* Give back a uid taken with exec_uids_take(); one not taken, or outside the range, is
 * ignored. */
void exec_uids_put(struct exec_uids *u, unsigned uid);
