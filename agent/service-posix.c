/* service-posix.c: how the agent is told to stop on POSIX: SIGTERM and SIGINT (see
 * service.h). */
#include "agent/service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static sigset_t stop_set;
static _Atomic(const char *) stop_why;

int service_stop_init(void)
{
    /* Before any thread exists, so that every thread inherits the mask; only the thread in
     * service_stop_wait() takes the signals. SIGCHLD stays at its default. */
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    int r = pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    if (r != 0)
        return -r;
    signal(SIGPIPE, SIG_IGN); /* a closed socket is an error to handle, not a death */
    return 0;
}

int service_stop_wait(int64_t ms, const char **why)
{
    const char *w = atomic_load(&stop_why);
    if (!w) {
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        int sig = sigtimedwait(&stop_set, NULL, &ts);
        if (sig < 0)
            return 0;
        const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
        const char *expected = NULL;
        atomic_compare_exchange_strong(&stop_why, &expected, name);
        w = atomic_load(&stop_why);
    }
    if (why)
        *why = w;
    return 1;
}

void service_stop_request(const char *why)
{
    const char *expected = NULL;
    atomic_compare_exchange_strong(&stop_why, &expected, why);
    /* Wakes the waiter: SIGTERM is blocked in every thread, so it stays pending for it. */
    kill(getpid(), SIGTERM);
}

int service_run(const struct agent_config *cfg, const struct service_ops *ops)
{
    (void)cfg;
    (void)ops;
    fprintf(stderr, "orch-agent: `service` exists on Windows only; use `orch-agent run`\n");
    return 2;
}
