/* cli.h: orch-agent's enrolment commands. Each takes the arguments after the command name
 * and the loaded configuration, prints what a person needs, and returns the exit status
 * (0 done, 1 failed, 2 bad usage, 3 not enrolled). */
#pragma once

#include "agent/config.h"

int cli_register(int argc, char **argv, const struct agent_config *cfg);
int cli_status(int argc, char **argv, const struct agent_config *cfg);
int cli_unregister(int argc, char **argv, const struct agent_config *cfg);
