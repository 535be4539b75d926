/* facts.h: what the agent discovers about its host: OS, architecture, CPU count, memory,
 * host name, agent version and the interpreters on PATH. Sent at enrolment and in
 * heartbeats; jobs' label requirements are matched against them. One implementation per
 * OS (facts-posix.c, facts-win.c). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/agent.h"

/* A new object {"os", "arch", "hostname", "cpus", "memory_bytes", "version",
 * "interpreters": [...]} (caller json_decref()s it), or NULL on ENOMEM. */
json_t *facts_collect(void);

/* CPU time since boot, busy and in all, in the OS's own unit: two samples give the share
 * of the CPU in use between them. */
struct facts_cpu {
    uint64_t busy, total;
};

/* Take a CPU sample. Returns false when the OS gives none. */
bool facts_cpu_sample(struct facts_cpu *c);

/* The host's load for a heartbeat: cpu_percent over the time since *prev (then *prev is
 * the new sample; cpu_percent is left as is when there is no earlier sample), memory in
 * use and available (-1 when unknown), and the free bytes of the file system that holds
 * dir (0 when unknown). */
void facts_load(const char *dir, struct facts_cpu *prev, struct proto_load *load);
