/* main.c: the orchd command line. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orch-config.h"
#include "common/cleanup.h"
#include "common/id.h"
#include "common/log.h"
#include "server/api.h"
#include "server/app.h"
#include "server/auth-keys.h"
#include "server/config.h"
#include "server/dispatcher.h"
#include "server/auth-bus.h"
#include "server/events-hub.h"
#include "server/gateway.h"
#include "server/metrics-orch.h"
#include "server/migrate.h"
#include "server/reaper.h"
#include "server/report-batch.h"
#include "server/webhook-deliver.h"
#include "server/cron-fire.h"
#include "server/scaling-eval.h"

/* Exit statuses: 0 done, 1 the operation failed, 2 bad usage or configuration. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f, "usage: orchd [--config FILE] COMMAND\n"
               "\n"
               "commands:\n"
               "  serve           run the server until SIGTERM or SIGINT\n"
               "  migrate         bring the database schema to this version (as db.migrate_url)\n"
               "  admin gen-key   add a new token signing key to auth.key_dir (rotation)\n"
               "  admin create-token NAME\n"
               "                  create a platform operator token and print it once\n"
               "  routes          list every route of the REST API\n"
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
    printf("functions and views of sql/functions/ applied (%d of %d files changed)\n",
           rep.functions_changed, migrate_nfunctions);
    return EXIT_OK;
}

/* A node being served: what its roles started. */
struct node {
    struct app *app;
    const struct http_options *ho;
    struct http_server *srv;
    struct http_server *metrics_srv; /* the operators' /metrics listener, or NULL */
    struct dispatcher *dispatcher;
    struct reaper *reaper;
    struct webhook_deliver *webhooks;
    struct cron_fire *scheduler;
    struct scaling_eval *scaling;
    char err[512]; /* why a role did not start */
};

static int gateway_role_start(struct node *n)
{
    return gateway_start(n->app, &n->app->gw);
}

static void gateway_role_stop(struct node *n)
{
    gateway_stop(n->app->gw);
    n->app->gw = NULL;
}

static int dispatcher_role_start(struct node *n)
{
    int r = dispatcher_start(n->app, &n->dispatcher);
    if (r == 0)
        gateway_set_dispatcher(n->app->gw, n->dispatcher);
    return r;
}

/* The live events' listener kicks the dispatcher when a job leaves a slot, on any node
 * (events_hub_on_slot_freed()). */
static void dispatcher_kick_cb(void *arg)
{
    dispatcher_kick_soon(arg);
}

static void dispatcher_role_stop(struct node *n)
{
    events_hub_on_slot_freed(n->app->events, NULL, NULL);
    gateway_set_dispatcher(n->app->gw, NULL);
    dispatcher_stop(n->dispatcher);
    n->dispatcher = NULL;
}

static int reaper_role_start(struct node *n)
{
    return reaper_start(n->app, &n->reaper);
}

static void reaper_role_stop(struct node *n)
{
    reaper_stop(n->reaper);
    n->reaper = NULL;
}

static int webhooks_role_start(struct node *n)
{
    return webhook_deliver_start(n->app, &n->webhooks);
}

static void webhooks_role_stop(struct node *n)
{
    webhook_deliver_stop(n->webhooks);
    n->webhooks = NULL;
}

static int scheduler_role_start(struct node *n)
{
    int r = cron_fire_start(n->app, &n->scheduler);
    if (r < 0)
        return r;
    r = scaling_eval_start(n->app, &n->scaling);
    if (r < 0) {
        cron_fire_stop(n->scheduler);
        n->scheduler = NULL;
    }
    return r;
}

static void scheduler_role_stop(struct node *n)
{
    scaling_eval_stop(n->scaling);
    n->scaling = NULL;
    cron_fire_stop(n->scheduler);
    n->scheduler = NULL;
}

static int api_role_start(struct node *n)
{
    int r = events_hub_start(n->app->cfg->db_url, &n->app->events);
    if (r < 0) {
        snprintf(n->err, sizeof(n->err), "cannot start the live events: %s", strerror(-r));
        return r;
    }
    r = auth_bus_start(n->app, &n->app->auth_bus);
    if (r < 0) {
        snprintf(n->err, sizeof(n->err), "cannot start the auth listener: %s", strerror(-r));
        events_hub_stop(n->app->events);
        n->app->events = NULL;
        return r;
    }
    const struct orchd_config *cfg = n->app->cfg;
    if (cfg->agent_commit_threads > 0) {
        struct report_batch_options ro = {.threads = (int)cfg->agent_commit_threads,
                                          .window_us = cfg->agent_batch_window_us,
                                          .max_items = (int)cfg->agent_batch_max};
        r = report_batch_start(n->app->store, n->app->metrics, &ro, &n->app->reports);
        if (r < 0)
            snprintf(n->err, sizeof(n->err), "cannot start the agents' committers: %s",
                     strerror(-r));
    }
    if (r >= 0)
        r = http_server_start(n->ho, &n->srv, n->err, sizeof(n->err));
    if (r < 0) {
        report_batch_free(n->app->reports);
        n->app->reports = NULL;
        auth_bus_stop(n->app->auth_bus);
        n->app->auth_bus = NULL;
        events_hub_stop(n->app->events);
        n->app->events = NULL;
    } else {
        metrics_orch_watch_api(n->app->metrics, n->srv);
        if (n->dispatcher)
            events_hub_on_slot_freed(n->app->events, dispatcher_kick_cb, n->dispatcher);
    }
    return r;
}

static void api_role_stop(struct node *n)
{
    metrics_orch_watch_api(n->app->metrics, NULL);
    /* The console's event streams end first: the loops they are held on stop next. */
    events_hub_shutdown(n->app->events, 5000);
    /* What the committers hold is committed and answered while the loops still run; what
     * comes after commits on its loop. */
    report_batch_stop(n->app->reports);
    http_server_stop(n->srv);
    n->srv = NULL;
    report_batch_free(n->app->reports);
    n->app->reports = NULL;
    /* No request runs now: give the unused calls of the reserved blocks back. */
    app_release_quota_blocks(n->app);
    auth_bus_stop(n->app->auth_bus);
    n->app->auth_bus = NULL;
    events_hub_stop(n->app->events);
    n->app->events = NULL;
}

static int metrics_role_start(struct node *n)
{
    return metrics_orch_listen(n->app, &n->metrics_srv, n->err, sizeof(n->err));
}

static void metrics_role_stop(struct node *n)
{
    http_server_stop(n->metrics_srv);
    n->metrics_srv = NULL;
}

/* The roles a node may run (node.roles), in the order they start. They stop in the
 * reverse order, but for those marked last. */
static const struct role {
    enum node_role role;
    int (*start)(struct node *n);
    void (*stop)(struct node *n);
    bool stop_last;
} roles[] = {
    /* First: the dispatcher wakes it (app->gw), the API hands it long-polls. */
    {NODE_ROLE_GATEWAY, gateway_role_start, gateway_role_stop, false},
    {NODE_ROLE_DISPATCHER, dispatcher_role_start, dispatcher_role_stop, false},
    {NODE_ROLE_REAPER, reaper_role_start, reaper_role_stop, false},
    {NODE_ROLE_WEBHOOKS, webhooks_role_start, webhooks_role_stop, false},
    {NODE_ROLE_SCHEDULER, scheduler_role_start, scheduler_role_stop, false},
    /* Started last, so that no request comes before what it hands work to runs; stopped
     * last too, since the gateway answers the long-polls it holds on the server's loops. */
    {NODE_ROLE_API, api_role_start, api_role_stop, true},
};

/* Stop the roles of the first started rows of roles[] that this node runs. */
static void node_stop(struct node *n, size_t started)
{
    const struct orchd_config *cfg = n->app->cfg;
    for (size_t i = started; i-- > 0;)
        if (!roles[i].stop_last && orchd_config_has_role(cfg, roles[i].role))
            roles[i].stop(n);
    for (size_t i = started; i-- > 0;)
        if (roles[i].stop_last && orchd_config_has_role(cfg, roles[i].role))
            roles[i].stop(n);
}

/* Start this node's roles in order; on a failure, stop those started. Returns 0 or -errno. */
static int node_start(struct node *n)
{
    const struct orchd_config *cfg = n->app->cfg;
    for (size_t i = 0; i < ELEMENTSOF(roles); i++) {
        if (!orchd_config_has_role(cfg, roles[i].role))
            continue;
        int r = roles[i].start(n);
        if (r < 0) {
            fprintf(stderr, "orchd: cannot start the %s role: %s\n", node_role_names[roles[i].role],
                    n->err[0] ? n->err : strerror(-r));
            node_stop(n, i);
            return r;
        }
    }
    return 0;
}

static int cmd_serve(struct orchd_config *cfg)
{
    /* Signals go to this thread only (sigwait below), never to the event loops. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Every line says which node wrote it: several nodes' logs end up in one place. Before
     * any thread starts. */
    if (log_set_process_field("node", cfg->node_name) < 0)
        log_warn("op=serve detail=\"node.name is not added to log lines\"");

    struct app app;
    char err[512] = "";
    int r = app_open(&app, cfg, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "orchd: %s\n", err);
        return EXIT_FAIL;
    }
    char db_err[512] = "";
    int v = migrate_db_version(cfg->db_url, db_err, sizeof(db_err));
    if (v != migrate_count) {
        if (v < 0)
            fprintf(stderr, "orchd: %s\n", db_err);
        else
            fprintf(stderr,
                    "orchd: the database schema is at version %d, this orchd needs %d: run "
                    "`orchd migrate`\n",
                    v, migrate_count);
        app_close(&app);
        return EXIT_FAIL;
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct http_options ho = {
        .address = cfg->http_address,
        .port = (int)cfg->http_port,
        .threads = cfg->http_threads > 0 ? (int)cfg->http_threads : (int)(cores > 0 ? cores : 1),
        .cert_file = cfg->http_cert_file[0] ? cfg->http_cert_file : NULL,
        .key_file = cfg->http_key_file[0] ? cfg->http_key_file : NULL,
        .max_header_bytes = (size_t)cfg->http_max_header_bytes,
        .max_body_bytes = (size_t)cfg->http_max_body_bytes,
        .timeout_ms = cfg->http_timeout_ms,
        .request_timeout_ms = cfg->http_request_timeout_ms,
        .max_connections = (int)cfg->http_max_connections,
        .max_connections_per_address = (int)cfg->http_max_connections_per_address,
        .routes = api_routes,
        .nroutes = api_nroutes,
        .hooks = {.app = &app, .authenticate = app_authenticate, .admit = app_admit},
    };
    if (!ho.cert_file)
        log_warn("op=serve tls=off msg=\"plain HTTP: for tests only, set http.cert_file\"");
    ho.hooks.observe = metrics_orch_http;
    struct node node = {.app = &app, .ho = &ho};
    if (node_start(&node) < 0) {
        app_close(&app);
        return EXIT_FAIL;
    }
    /* On every node, whatever its roles: each node's counters are its own. */
    if (metrics_role_start(&node) < 0) {
        fprintf(stderr, "orchd: cannot start the metrics listener: %s\n", node.err);
        node_stop(&node, ELEMENTSOF(roles));
        app_close(&app);
        return EXIT_FAIL;
    }
    char running[64] = "";
    for (int i = 0; i < NODE_ROLE__COUNT; i++)
        if (orchd_config_has_role(cfg, (enum node_role)i))
            snprintf(running + strlen(running), sizeof(running) - strlen(running), "%s%s",
                     running[0] ? "," : "", node_role_names[i]);
    /* The line tests and scripts wait for (port=0: no api role, no HTTP server). */
    log_info("op=serve state=ready address=%s port=%d threads=%d tls=%s node=%s roles=%s "
             "metrics_port=%d",
             cfg->http_address, node.srv ? http_server_port(node.srv) : 0, ho.threads,
             ho.cert_file ? "on" : "off", cfg->node_name, running,
             node.metrics_srv ? http_server_port(node.metrics_srv) : -1);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_info("op=serve msg=\"SIGHUP ignored: restart to reload keys and configuration\"");
            continue;
        }
        log_info("op=serve state=stopping signal=%d", sig);
        break;
    }
    metrics_role_stop(&node);
    /* Waiting long-polls get their answer first, then the loops stop. */
    node_stop(&node, ELEMENTSOF(roles));
    log_info("op=serve state=stopped");
    app_close(&app);
    return EXIT_OK;
}

static int cmd_gen_key(struct orchd_config *cfg)
{
    char kid[96], err[512] = "";
    if (jwt_keygen(cfg->auth_key_dir, kid, sizeof(kid), err, sizeof(err)) < 0) {
        fprintf(stderr, "orchd: admin gen-key: %s\n", err);
        return EXIT_FAIL;
    }
    printf("new signing key %s in %s (restart orchd to start signing with it)\n", kid,
           cfg->auth_key_dir);
    return EXIT_OK;
}

static int cmd_create_token(struct orchd_config *cfg, const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > 100) {
        fprintf(stderr, "orchd: admin create-token: NAME must be 1 to 100 characters\n");
        return EXIT_USAGE;
    }
    struct authkey k;
    char id[ID_STR_LEN];
    if (authkey_new(AUTHKEY_OPERATOR, &k) < 0 || id_uuid7_str(id) < 0) {
        fprintf(stderr, "orchd: admin create-token: no randomness available\n");
        return EXIT_FAIL;
    }
    static const struct store_stmt q =
        STORE_STMT("operator_token_insert",
                   "INSERT INTO operator_tokens (id, name, prefix, secret_hash) VALUES ($1, $2, $3,"
                   " decode($4, 'hex'))",
                   4);
    struct store_options so = {.url = cfg->db_url,
                               .system_url = cfg->db_system_url,
                               .pool_size = 1,
                               .connect_timeout_ms = cfg->db_connect_timeout_ms};
    struct store *st = NULL;
    char err[512] = "";
    if (orchd_config_require_system(cfg, err, sizeof(err)) < 0 ||
        store_open(&so, &st, err, sizeof(err)) < 0) {
        fprintf(stderr, "orchd: admin create-token: %s\n", err);
        return EXIT_FAIL;
    }
    const char *p[] = {id, name, k.prefix, k.hash_hex};
    int r = store_exec_once(st, NULL, &q, p, NULL);
    store_close(st);
    if (r < 0) {
        fprintf(stderr, "orchd: admin create-token: could not store the token (%s)\n",
                strerror(-r));
        return EXIT_FAIL;
    }
    log_info("op=admin.create-token id=%s name=%s prefix=%s", id, name, k.prefix);
    /* stdout carries the secret alone, so scripts can capture it. */
    printf("%s\n", k.key);
    return EXIT_OK;
}

static void print_routes(void)
{
    for (size_t i = 0; i < api_nroutes; i++)
        printf("%s %s\n", http_method_name(api_routes[i].method), api_routes[i].pattern);
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
    int nargs = argc - optind - 1;
    char *const *args = argv + optind + 1;
    bool is_admin = strcmp(cmd, "admin") == 0;
    if (!is_admin && nargs > 0) {
        fprintf(stderr, "orchd: %s: unexpected argument '%s'\n", cmd, args[0]);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "routes") == 0) {
        print_routes();
        return EXIT_OK;
    }
    if (is_admin) {
        bool gen = nargs == 1 && strcmp(args[0], "gen-key") == 0;
        bool tok = nargs == 2 && strcmp(args[0], "create-token") == 0;
        if (!gen && !tok) {
            fprintf(stderr, "usage: orchd admin gen-key | orchd admin create-token NAME\n");
            return EXIT_USAGE;
        }
        struct orchd_config cfg;
        if (load_config(config_path, &cfg) < 0)
            return EXIT_USAGE;
        int rc = gen ? cmd_gen_key(&cfg) : cmd_create_token(&cfg, args[1]);
        orchd_config_free(&cfg);
        return rc;
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
    if (strcmp(cmd, "check-config") == 0 || strcmp(cmd, "migrate") == 0 ||
        strcmp(cmd, "serve") == 0) {
        if (load_config(config_path, &cfg) < 0)
            return EXIT_USAGE;
        int rc = EXIT_OK;
        if (strcmp(cmd, "migrate") == 0)
            rc = cmd_migrate(&cfg);
        else if (strcmp(cmd, "serve") == 0)
            rc = cmd_serve(&cfg);
        else
            printf("configuration is valid\n");
        orchd_config_free(&cfg);
        return rc;
    }

    fprintf(stderr, "orchd: unknown command '%s' (see orchd --help)\n", cmd);
    return EXIT_USAGE;
}
