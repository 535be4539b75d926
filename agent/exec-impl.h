/* exec-impl.h: what the implementations of exec_ops (exec-posix.c, exec-win.c) share: the
 * checks of a spec and the arithmetic of their wait loops. Internal to the exec files. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent/exec.h"

#define EXEC_JOB_ID_MAX 64 /* exec_spec.job_id: [A-Za-z0-9._-]{1,64}, not "." or ".." */

/* spec within exec.h's bounds: argv[0] non-empty, a valid job_id, no negative or too long
 * *_ms, max_output_chunk at most EXEC_MAX_CHUNK. */
bool exec_spec_valid(const struct exec_spec *spec);

static inline uint64_t exec_ms_to_ns(int64_t ms)
{
    return (uint64_t)ms * UINT64_C(1000000);
}

/* Milliseconds from now until when (monotonic ns), rounded up, at most cur (the wait a
 * loop would make anyway); 0 when when has come. */
int exec_ms_until(uint64_t now, uint64_t when, int cur);
