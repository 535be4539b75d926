/* daemon.h: `orch-agent run`, the long-running agent (docs/agent-protocol.md).
 *
 * Threads: a heartbeat thread, a poll thread (long-polls for assignments while a slot is
 * free), one worker thread per running job (exec_ops.run() with output into the spool) and
 * a sender thread that drains the spool to the server. Each network thread owns its own
 * transport (libcurl handles are not thread-safe). The calling thread waits for SIGTERM or
 * SIGINT with sigwait(); SIGCHLD stays at its default (exec reaps its own children). */
#pragma once

#include "agent/config.h"

/* Run the agent until SIGTERM or SIGINT. argc/argv are the arguments from the command name
 * on (argv[0] = "run"); cfg is borrowed for the whole call. Must be called before any other
 * thread exists (it blocks signals for every thread it creates). Returns the exit status:
 * 0 stopped by a signal, 1 could not start, 2 bad usage, 3 not enrolled. */
int daemon_run(int argc, char **argv, const struct agent_config *cfg);
