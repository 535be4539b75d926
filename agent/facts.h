/* facts.h: what the agent discovers about its host: OS, architecture, CPU count, memory,
 * host name, agent version and the interpreters on PATH. Sent at enrolment and in
 * heartbeats; jobs' label requirements are matched against them. One implementation per
 * OS (facts-posix.c). */
#pragma once

#include <jansson.h>

/* A new object {"os", "arch", "hostname", "cpus", "memory_bytes", "version",
 * "interpreters": [...]} (caller json_decref()s it), or NULL on ENOMEM. */
json_t *facts_collect(void);
