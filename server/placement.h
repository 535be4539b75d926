/* placement.h: the placement engine: which queued job goes to which agent, in memory.
 *
 * A pure data structure: no database, no threads, no I/O, no clock of its own (the caller
 * passes `now`). The dispatcher (server/dispatcher.c) keeps it current from PostgreSQL and
 * the bus, asks it for proposals, commits them with assign_batch() and reports back which
 * were accepted and which refused. PostgreSQL decides every assignment; the engine only
 * proposes, so a stale index costs a refused proposal, never a wrong assignment.
 *
 * The algorithm, its fairness and its cost are written down in docs/scheduling.md.
 *
 * Not thread-safe: one owner calls everything. Strings passed in are copied; json_t
 * arguments are borrowed (the engine takes its own reference or copy). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/id.h"

/* A SHA-256 in hex, as agents report their cached packages. */
#define PLACEMENT_DIGEST_LEN 65

struct placement;

struct placement_config {
    int64_t aging_ms; /* one priority step per aging_ms waited (dispatch.aging_s) */
};

/* An agent as the dispatcher last saw it. Exactly one of tenant_id and pool_id is set. */
struct placement_agent {
    const char *id;
    const char *tenant_id; /* owner, for a tenant's own agent; else NULL */
    const char *pool_id;   /* the shared pool it serves; else NULL */
    const json_t *labels;  /* object of string values, or NULL (borrowed) */
    const char *os, *arch; /* labels "os" and "arch" (take precedence over labels), or NULL */
    int64_t memory_free_bytes, disk_free_bytes; /* -1: not reported */
    double cpu_percent;                         /* -1: not reported */
    int slots;                                  /* execution slots (>= 0) */
    int active;                                 /* jobs assigned or running on it */
    const char *const *packages;                /* cached package digests (hex) */
    size_t npackages;
    bool online;   /* online, not revoked, not draining, heartbeat fresh */
    int64_t stamp; /* the caller's stamp of the facts above but counts (compared by
                      placement_agent_update()) */
};

/* A queued job. */
struct placement_job {
    const char *id;
    const char *tenant_id;
    const char *queue_id; /* or NULL */
    int priority;         /* -100..100, higher first */
    int64_t created_ms;   /* Unix ms */
    int64_t not_before_ms;
    const json_t *requirements; /* object, or NULL for none (borrowed) */
    const char *package_digest; /* hex SHA-256 of its package, or NULL */
};

struct placement_proposal {
    char job_id[ID_STR_LEN];
    char agent_id[ID_STR_LEN];
    char tenant_id[ID_STR_LEN];
};

/* Why PostgreSQL refused a proposal, as far as the engine needs to know to correct itself. */
enum placement_refusal {
    PLACEMENT_JOB_GONE,    /* not queued any more (taken, cancelled): forget the job */
    PLACEMENT_JOB_LATER,   /* not before a later time, or else not placeable now: keep it */
    PLACEMENT_AGENT_FULL,  /* the agent has no free slot: count it full */
    PLACEMENT_AGENT_GONE,  /* offline, revoked, draining, stale, or no longer capable */
    PLACEMENT_QUEUE_FULL,  /* the queue is paused or at its limit */
    PLACEMENT_TENANT_FULL, /* the tenant is at its quota */
};

/* Statistics, for logs and the benchmark. */
struct placement_stats {
    size_t tenants, queues, pools, agents, shapes, jobs, delayed, proposed;
    int64_t free_slots;
};

/* New empty engine. Returns 0 or -ENOMEM; *ret untouched on failure. Free with
 * placement_free(). */
int placement_new(const struct placement_config *cfg, struct placement **ret);
/* Free pl and everything in it. Accepts NULL. */
void placement_free(struct placement *pl);

/* Add or update a tenant. tier: its tier name (for pool admission); weight >= 1; max_running:
 * its quota of assigned or running jobs; running: how many it has now (from PostgreSQL).
 * Returns 0, -EINVAL or -ENOMEM. A tenant named by a job before it is set here exists with
 * weight 1 and quota 0 (nothing placed) until it is. */
int placement_tenant_set(struct placement *pl, const char *id, const char *tier, int weight,
                         int max_running, int running);
/* Add or update a queue. max_running 0: no limit of its own. */
int placement_queue_set(struct placement *pl, const char *id, bool paused, int max_running,
                        int running);
/* Add or update a shared pool: the tiers it serves and the tenants it admits besides. */
int placement_pool_set(struct placement *pl, const char *id, const char *const *tiers,
                       size_t ntiers, const char *const *tenants, size_t ntenants);
/* Add or update an agent. Returns 0, -EINVAL or -ENOMEM. */
int placement_agent_set(struct placement *pl, const struct placement_agent *a);
/* Update only what changes between full refreshes: an agent's active jobs and whether it
 * is online. stamp: as placement_agent_set() was given it, for facts as they are now.
 * Returns 0, -ENOENT for an agent not set yet or -ESTALE for one whose stamp differs (then
 * set it whole; nothing was changed). */
int placement_agent_update(struct placement *pl, const char *id, int active, bool online,
                           int64_t stamp);
/* Forget an agent. Returns 0 or -ENOENT. */
int placement_agent_remove(struct placement *pl, const char *id);

/* Add a queued job. Returns 0, -EEXIST (already known: nothing changed), -EINVAL (bad id or
 * requirements not an object) or -ENOMEM. */
int placement_job_add(struct placement *pl, const struct placement_job *j);
/* Forget a job that is not proposed. Returns 0, -ENOENT, or -EBUSY (proposed: report it). */
int placement_job_remove(struct placement *pl, const char *id);
/* True when the engine holds the job (queued or proposed). */
bool placement_job_known(const struct placement *pl, const char *id);

/* Up to max proposals for time now_ms, in placement order. Each proposal counts against its
 * agent's slots, its tenant's quota and its queue's limit until reported with
 * placement_accepted() or placement_refused(); every proposal must be reported before the
 * next placement_plan() and before the counts are set again. Returns how many. */
size_t placement_plan(struct placement *pl, int64_t now_ms, struct placement_proposal *out,
                      size_t max);
/* The proposal for job_id was committed: the job leaves the engine, its counts stay (until
 * the next refresh sets them). Returns 0 or -ENOENT. */
int placement_accepted(struct placement *pl, const char *job_id);
/* The proposal for job_id was refused: its counts are undone, the engine corrects what the
 * reason names, and the job waits again (or is forgotten for PLACEMENT_JOB_GONE). */
int placement_refused(struct placement *pl, const char *job_id, enum placement_refusal why);

void placement_stats(const struct placement *pl, struct placement_stats *ret);
