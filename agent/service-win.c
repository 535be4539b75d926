/* service-win.c: how the agent is told to stop on Windows, and `orch-agent service`, the
 * agent as the OrchAgent service of the Service Control Manager (see service.h).
 *
 * Stopping: one manual-reset event. The SCM's STOP and SHUTDOWN controls set it (through
 * the control handler), and so do Ctrl+C, Ctrl+Break and closing the console when the
 * agent runs by hand (`orch-agent run`). daemon_run() waits on it and then stops as it does
 * on SIGTERM: no new jobs, the running ones cancelled (their reports stay in the spool),
 * the spool flushed for a while.
 *
 * The service: the SCM starts `orch-agent.exe service` as SERVICE_WIN32_OWN_PROCESS.
 * ServiceMain reports START_PENDING, sets the service's own failure actions (restart after
 * 5, 10 and 30 s, the count reset after a day, also when the process exits with an error
 * rather than crashing), protects the state directory and sends the log there
 * (agent.log), reports RUNNING, enrols from the registry while not enrolled (what the MSI
 * left there: enrol_from_registry(), enrol-win.h, given by main.c), then runs the agent. STOPPED
 * carries the agent's exit status as a service-specific error when it is not 0, so that the failure
 * actions apply. */
#include "agent/service.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <io.h>
#include <unistd.h>

#include <windows.h>

#include "agent/host.h"
#include "agent/state.h"
#include "common/compat.h"
#include "common/log.h"

#define SERVICE_NAME       L"OrchAgent"
#define START_WAIT_HINT_MS 30000
/* Jobs get JOB_GRACE_MS (10 s) to end, then the spool FLUSH_MS (10 s) to drain. */
#define STOP_WAIT_HINT_MS  45000
#define ENROL_RETRY_MIN_MS 5000
#define ENROL_RETRY_MAX_MS 300000

static HANDLE stop_event;
static bool in_service; /* set by service_run() before anything else */
static INIT_ONCE stop_once = INIT_ONCE_STATIC_INIT;
static _Atomic(const char *) stop_why;

static BOOL WINAPI console_ctrl(DWORD type)
{
    switch (type) {
    case CTRL_C_EVENT:
        service_stop_request("ctrl-c");
        return TRUE;
    case CTRL_BREAK_EVENT:
        service_stop_request("ctrl-break");
        return TRUE;
    case CTRL_CLOSE_EVENT:
        service_stop_request("console-close");
        return TRUE;
    default:
        return FALSE;
    }
}

static BOOL CALLBACK stop_init_once(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    (void)once;
    (void)param;
    (void)ctx;
    stop_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!stop_event)
        return FALSE;
    /* By hand, Ctrl+C stops the agent cleanly. Not under the SCM: a service hears of a
     * shutdown from the SCM, and must not stop when a user logs off. */
    if (!in_service)
        SetConsoleCtrlHandler(console_ctrl, TRUE);
    return TRUE;
}

int service_stop_init(void)
{
    if (!InitOnceExecuteOnce(&stop_once, stop_init_once, NULL, NULL))
        return -ENOMEM;
    return 0;
}

int service_stop_wait(int64_t ms, const char **why)
{
    if (service_stop_init() < 0)
        return 0;
    if (ms < 0)
        ms = 0;
    if (WaitForSingleObject(stop_event, ms > 0x7ffffffe ? 0x7ffffffe : (DWORD)ms) != WAIT_OBJECT_0)
        return 0;
    if (why)
        *why = atomic_load(&stop_why) ? atomic_load(&stop_why) : "stop";
    return 1;
}

void service_stop_request(const char *why)
{
    const char *expected = NULL;

    if (service_stop_init() < 0)
        return;
    atomic_compare_exchange_strong(&stop_why, &expected, why);
    SetEvent(stop_event);
}

/* ---- the service ---- */

static SERVICE_STATUS_HANDLE status_handle;
static SERVICE_STATUS status = {.dwServiceType = SERVICE_WIN32_OWN_PROCESS};
static CRITICAL_SECTION status_lock;
static const struct agent_config *service_cfg;
static const struct service_ops *service_ops;
static int service_rc = 1;

static void report(DWORD state, DWORD exit_code, DWORD wait_hint)
{
    EnterCriticalSection(&status_lock);
    status.dwCurrentState = state;
    status.dwControlsAccepted =
        state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
    if (exit_code) {
        status.dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
        status.dwServiceSpecificExitCode = exit_code;
    } else {
        status.dwWin32ExitCode = NO_ERROR;
        status.dwServiceSpecificExitCode = 0;
    }
    status.dwWaitHint = wait_hint;
    status.dwCheckPoint =
        state == SERVICE_RUNNING || state == SERVICE_STOPPED ? 0 : status.dwCheckPoint + 1;
    SetServiceStatus(status_handle, &status);
    LeaveCriticalSection(&status_lock);
}

static DWORD WINAPI control(DWORD code, DWORD type, LPVOID data, LPVOID ctx)
{
    (void)type;
    (void)data;
    (void)ctx;
    switch (code) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN:
        report(SERVICE_STOP_PENDING, 0, STOP_WAIT_HINT_MS);
        service_stop_request(code == SERVICE_CONTROL_STOP ? "service-stop" : "system-shutdown");
        return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
    default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
}

/* Restart after 5, 10, 30 s; forget the failures after a day; count an exit with an error
 * as a failure too, not only a crash. Logged, not fatal: the service runs without. */
static void set_failure_actions(void)
{
    SC_ACTION actions[3] = {
        {SC_ACTION_RESTART, 5000},
        {SC_ACTION_RESTART, 10000},
        {SC_ACTION_RESTART, 30000},
    };
    SERVICE_FAILURE_ACTIONSW fa = {.dwResetPeriod = 86400, .cActions = 3, .lpsaActions = actions};
    SERVICE_FAILURE_ACTIONS_FLAG flag = {.fFailureActionsOnNonCrashFailures = TRUE};
    SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
    SC_HANDLE svc =
        scm ? OpenServiceW(scm, SERVICE_NAME, SERVICE_CHANGE_CONFIG | SERVICE_START) : NULL;

    if (!svc || !ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, &fa) ||
        !ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &flag))
        log_warn("op=service-config error=%lu detail=\"cannot set the failure actions\"",
                 GetLastError());
    if (svc)
        CloseServiceHandle(svc);
    if (scm)
        CloseServiceHandle(scm);
}

/* A CRT call on a descriptor that is not open (stderr, under the SCM) must fail with EBADF,
 * not end the process, which is what the default invalid-parameter handler does. */
static void ignore_invalid_parameter(const wchar_t *expr, const wchar_t *func, const wchar_t *file,
                                     unsigned line, uintptr_t reserved)
{
    (void)expr;
    (void)func;
    (void)file;
    (void)line;
    (void)reserved;
}

/* The state directory exists, is protected, and holds the log from now on (with the
 * agent's stderr, so that a refusal to start is there too). Without it, the log goes
 * nowhere (the SCM gave the service no stderr). */
static void prepare_state_dir(const char *dir)
{
    char path[4096];
    int r = host_state_dir_init(dir);

    snprintf(path, sizeof(path), "%s\\agent.log", dir);
    if (log_open_file(path, true) < 0)
        log_open_file("NUL", true);
    /* The C runtime gave the stderr stream no descriptor (a service has no console) and
     * will not freopen() such a stream, so the agent's own messages (why it cannot start)
     * would be lost: point the stream at descriptor 2, the log, now that it is one. */
    if (_fileno(stderr) < 0) {
        FILE *f = _fdopen(_dup(STDERR_FILENO), "a");
        if (f) {
            *stderr = *f;
            setvbuf(stderr, NULL, _IONBF, 0);
        }
    }
    if (r < 0)
        log_warn("op=service-start path=%s error=%d detail=\"cannot create or protect the "
                 "state directory\"",
                 dir, -r);
}

static bool enrolled(const char *dir)
{
    struct agent_state st;
    char err[256];
    int r = agent_state_load(dir, &st, err, sizeof(err));

    if (r == 0)
        agent_state_free(&st);
    return r != -ENOENT;
}

/* Until enrolled or stopped: enrol from the registry (what the MSI left there), or wait
 * for `orch-agent register`. Returns true when enrolled. */
static bool wait_enrolled(const struct agent_config *cfg)
{
    int64_t wait_ms = ENROL_RETRY_MIN_MS;

    while (!enrolled(cfg->state_dir)) {
        int r = service_ops->enrol ? service_ops->enrol(cfg) : 0;

        if (r == 0 && enrolled(cfg->state_dir))
            break;
        log_info("op=enrol state=waiting retry_ms=%lld result=%d detail=\"not enrolled: from "
                 "the registry (the MSI's SERVERURL and TOKEN) or orch-agent register\"",
                 (long long)wait_ms, r);
        if (service_stop_wait(wait_ms, NULL))
            return false;
        wait_ms = wait_ms * 2 > ENROL_RETRY_MAX_MS ? ENROL_RETRY_MAX_MS : wait_ms * 2;
    }
    return true;
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv)
{
    char *run_argv[] = {"run", NULL};

    (void)argc;
    (void)argv;
    status_handle = RegisterServiceCtrlHandlerExW(SERVICE_NAME, control, NULL);
    if (!status_handle)
        return;
    report(SERVICE_START_PENDING, 0, START_WAIT_HINT_MS);
    _set_invalid_parameter_handler(ignore_invalid_parameter);
    log_set_level((enum log_level)service_cfg->log_level);
    if (service_stop_init() < 0) {
        report(SERVICE_STOPPED, 1, 0);
        return;
    }
    prepare_state_dir(service_cfg->state_dir);
    set_failure_actions();
    report(SERVICE_RUNNING, 0, 0);
    log_info("op=service-start name=OrchAgent state_dir=%s", service_cfg->state_dir);
    if (!wait_enrolled(service_cfg)) {
        service_rc = 0;
        log_info("op=stop state=stopped detail=\"stopped before enrolment\"");
        report(SERVICE_STOPPED, 0, 0);
        return;
    }
    service_rc = service_ops->run(1, run_argv, service_cfg);
    report(SERVICE_STOPPED, (DWORD)service_rc, 0);
}

int service_run(const struct agent_config *cfg, const struct service_ops *ops)
{
    SERVICE_TABLE_ENTRYW table[] = {
        {(LPWSTR)SERVICE_NAME, service_main},
        {NULL, NULL},
    };

    InitializeCriticalSection(&status_lock);
    service_cfg = cfg;
    service_ops = ops;
    in_service = true;
    if (!StartServiceCtrlDispatcherW(table)) {
        DWORD e = GetLastError();

        if (e == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
            fprintf(stderr, "orch-agent: `service` is for the Service Control Manager; from a "
                            "console, use `orch-agent run`\n");
        else
            fprintf(stderr,
                    "orch-agent: cannot reach the Service Control Manager (error "
                    "%lu)\n",
                    e);
        return 1;
    }
    return service_rc;
}
