/* main.c: the orchd command line. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch-config.h"
#include "common/log.h"
#include "server/config.h"
#include "server/migrate.h"

/* Exit statuses: 0 done, 1 the operation failed, 2 bad usage or configuration. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f, "usage: orchd [--config FILE] COMMAND\n"
               "\n"
               "commands:\n"
               "  migrate         bring the database schema to this version (as db.migrate_url)\n"
               "  check-config    load the configuration, report the first error, exit\n"
               "  config          list every configuration key with its default\n"
               "  version         print the version\n"
               "\n"
               "options:\n"
               "  -c, --config FILE   configuration file (default: $ORCHD_CONFIG, else none)\n"
               "  -h, --help          this text\n"
               "\n"
               "Every key can also be set in the environment: db.url is ORCHD_DB_URL.\n");
}

static int load_config(const char *path, struct orchd_config *cfg)
{
    struct conf_error err;
    int r = orchd_config_load(cfg, path, &err);
    if (r < 0) {
        fprintf(stderr, "orchd: %s\n", err.msg);
        return r;
    }
    log_set_level((enum log_level)cfg->log_level);
    return 0;
}

static int cmd_migrate(struct orchd_config *cfg)
{
    const char *url =
        cfg->db_migrate_url && cfg->db_migrate_url[0] ? cfg->db_migrate_url : cfg->db_url;
    struct migrate_report rep;
    char err[512] = "";
    int r = migrate_run(url, &rep, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "orchd: migrate: %s\n", err);
        return EXIT_FAIL;
    }
    if (rep.applied == 0)
        printf("schema is up to date at version %d\n", rep.to_version);
    else
        printf("schema migrated from version %d to %d (%d applied)\n", rep.from_version,
               rep.to_version, rep.applied);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = getenv("ORCHD_CONFIG");
    if (config_path && !*config_path)
        config_path = NULL;

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
    if (optind + 1 < argc) {
        fprintf(stderr, "orchd: %s: unexpected argument '%s'\n", cmd, argv[optind + 1]);
        return EXIT_USAGE;
    }

    if (strcmp(cmd, "version") == 0) {
        printf("orchd %s (schema version %d)\n", ORCH_VERSION, migrate_count);
        return EXIT_OK;
    }
    if (strcmp(cmd, "config") == 0) {
        conf_describe(orchd_config_fields, orchd_config_nfields, 1);
        return EXIT_OK;
    }

    struct orchd_config cfg;
    if (strcmp(cmd, "check-config") == 0 || strcmp(cmd, "migrate") == 0) {
        if (load_config(config_path, &cfg) < 0)
            return EXIT_USAGE;
        int rc = EXIT_OK;
        if (strcmp(cmd, "migrate") == 0)
            rc = cmd_migrate(&cfg);
        else
            printf("configuration is valid\n");
        orchd_config_free(&cfg);
        return rc;
    }

    fprintf(stderr, "orchd: unknown command '%s' (see orchd --help)\n", cmd);
    return EXIT_USAGE;
}
