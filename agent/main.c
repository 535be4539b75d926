/* main.c: the orch-agent command line. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch-config.h"
#include "agent/cli.h"
#include "agent/config.h"
#include "agent/daemon.h"
#include "agent/service.h"
#ifdef _WIN32
#include "agent/enrol-win.h"
#endif
#include "common/log.h"
#include "proto/version.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: orch-agent [--config FILE] COMMAND\n"
            "\n"
            "commands:\n"
            "  register --server URL --token TOKEN [--name N] [--label k=v]... [--ca-file F]\n"
            "           [--slots N] [--state-dir D]\n"
            "                  enrol this host with an enrolment token\n"
            "  status [--state-dir D]\n"
            "                  enrolled? reachable? what the server knows of this agent\n"
            "  unregister [--force] [--state-dir D]\n"
            "                  remove this agent from the server and forget its credential\n"
            "  run [--state-dir D]\n"
            "                  run the agent: heartbeat, take jobs, run them, report\n"
#ifdef _WIN32
            "  service         run the agent as the OrchAgent Windows service (for the SCM)\n"
#endif
            "  check-config    load the configuration, report the first error, exit\n"
            "  config          list every configuration key with its default\n"
            "  version         print the version\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   configuration file (default: %s when present)\n"
            "  -h, --help          this text\n"
            "\n"
            "Every key can also be set in the environment: slots is ORCH_AGENT_SLOTS.\n",
            AGENT_CONFIG_DEFAULT_PATH);
}

#ifdef _WIN32
static const struct service_ops service_ops = {.run = daemon_run, .enrol = enrol_from_registry};
#else
static const struct service_ops service_ops = {.run = daemon_run};
#endif

/* `service` exists on Windows only: elsewhere it is an unknown command. */
static bool is_service(const char *cmd)
{
#ifdef _WIN32
    return strcmp(cmd, "service") == 0;
#else
    (void)cmd;
    return false;
#endif
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "version") == 0) {
        printf("orch-agent %s (protocol %d)\n", ORCH_VERSION, ORCH_PROTO_VERSION);
        return EXIT_OK;
    }
    if (strcmp(cmd, "config") == 0) {
        conf_describe(agent_config_fields, agent_config_nfields, 1);
        return EXIT_OK;
    }
    if (strcmp(cmd, "register") == 0 || strcmp(cmd, "status") == 0 ||
        strcmp(cmd, "unregister") == 0 || strcmp(cmd, "run") == 0 || is_service(cmd)) {
        struct agent_config cfg;
        struct conf_error err;
        if (agent_config_load(&cfg, config_path, &err) < 0) {
            fprintf(stderr, "orch-agent: %s\n", err.msg);
            return EXIT_USAGE;
        }
        int sub_argc = argc - optind;
        char **sub_argv = argv + optind;
        int rc = is_service(cmd)                ? service_run(&cfg, &service_ops)
                 : strcmp(cmd, "run") == 0      ? daemon_run(sub_argc, sub_argv, &cfg)
                 : strcmp(cmd, "register") == 0 ? cli_register(sub_argc, sub_argv, &cfg)
                 : strcmp(cmd, "status") == 0   ? cli_status(sub_argc, sub_argv, &cfg)
                                                : cli_unregister(sub_argc, sub_argv, &cfg);
        agent_config_free(&cfg);
        return rc;
    }
    if (strcmp(cmd, "check-config") == 0) {
        struct agent_config cfg;
        struct conf_error err;
        if (agent_config_load(&cfg, config_path, &err) < 0) {
            fprintf(stderr, "orch-agent: %s\n", err.msg);
            return EXIT_USAGE;
        }
        printf("configuration is valid\n");
        agent_config_free(&cfg);
        return EXIT_OK;
    }
    fprintf(stderr, "orch-agent: unknown command '%s' (see orch-agent --help)\n", cmd);
    return EXIT_USAGE;
}
