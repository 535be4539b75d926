/* exec-common.c: what every exec_ops implementation checks and computes (exec-impl.h). */
#include "agent/exec-impl.h"

#include <string.h>

static bool job_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > EXEC_JOB_ID_MAX || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool exec_spec_valid(const struct exec_spec *spec)
{
    return spec && spec->argv && spec->argv[0] && spec->argv[0][0] && job_id_valid(spec->job_id) &&
           spec->timeout_ms >= 0 && spec->grace_ms >= 0 && spec->drain_ms >= 0 &&
           spec->timeout_ms <= EXEC_MAX_MS && spec->grace_ms <= EXEC_MAX_MS &&
           spec->drain_ms <= EXEC_MAX_MS && spec->max_output_chunk <= EXEC_MAX_CHUNK;
}

int exec_ms_until(uint64_t now, uint64_t when, int cur)
{
    uint64_t ms;

    if (when <= now)
        return 0;
    ms = (when - now + 999999) / 1000000;
    return ms < (uint64_t)cur ? (int)ms : cur;
}
