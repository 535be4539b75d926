/* exec-win.h: what exec-win.c exposes beyond exec.h, for its tests (tests/win/test-exec.c). */
#pragma once

#include <stddef.h>

/* argv (NULL-terminated, UTF-8) joined into one Windows command line, see exec-win.c's
 * "Command line". Returns 0 with *ret malloc'd, -EINVAL (argv[0] holds a '"', or is empty)
 * or -ENOMEM. */
int exec_win_cmdline(const char *const *argv, char **ret);
