/* service.h: how the running agent is told to stop, and, on Windows, running it as a
 * service of the Service Control Manager.
 *
 * POSIX (service-posix.c): SIGTERM and SIGINT, blocked in every thread and taken by the
 * thread that waits in service_stop_wait(). Windows (service-win.c): an event, set by the
 * service's control handler (SERVICE_CONTROL_STOP, SHUTDOWN) or, from a console, by Ctrl+C,
 * Ctrl+Break or closing the window. */
#pragma once

#include <stdint.h>

#include "agent/config.h"

/* Before any thread exists: prepare to be told to stop (POSIX: block SIGTERM and SIGINT,
 * ignore SIGPIPE). Returns 0 or -errno. */
int service_stop_init(void);

/* Wait up to ms for a request to stop. Returns 1 when one came (*why, when not NULL, names
 * it: "SIGTERM", "service-stop", "ctrl-c", ...; a static string), 0 when ms passed. Once
 * a request came, every later call returns 1 at once. */
int service_stop_wait(int64_t ms, const char **why);

/* Ask the agent to stop, from any thread. */
void service_stop_request(const char *why);

/* What the service runs, given by main.c (so that this file links without the daemon). */
struct service_ops {
    /* daemon_run(). */
    int (*run)(int argc, char **argv, const struct agent_config *cfg);
    /* enrol_from_registry() (enrol-win.h): 0 when enrolled or nothing to do, < 0 to retry
     * later. NULL: wait for `orch-agent register`. */
    int (*enrol)(const struct agent_config *cfg);
};

/* `orch-agent service` (Windows only; elsewhere it says so and returns 2): run as the OrchAgent
 * service under the SCM: report the service's states, set its failure actions, log to the state
 * directory's agent.log, enrol (ops->enrol) while not enrolled, and run the agent (ops->run) until
 * the SCM stops it. cfg and ops are borrowed. Returns the process exit status. */
int service_run(const struct agent_config *cfg, const struct service_ops *ops);
