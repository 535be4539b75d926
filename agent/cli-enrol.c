/* cli-enrol.c: `orch-agent register`, `status` and `unregister` (see cli.h). */
#include "agent/cache.h"
#include "agent/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/facts.h"
#include "agent/host.h"
#include "agent/state.h"
#include "agent/transport.h"
#include "common/cleanup.h"
#include "proto/agent.h"
#include "common/compat.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NOT_ENROLLED = 3 };

/* `--state-dir D` and `--force` for status and unregister. Returns 0 or EXIT_USAGE. */
static int common_opts(int argc, char **argv, const char **state_dir, bool *force)
{
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'd') {
            *state_dir = optarg;
        } else if (c == 'f' && force) {
            *force = true;
        } else {
            fprintf(stderr, "usage: orch-agent %s [--state-dir DIR]%s\n", argv[0],
                    force ? " [--force]" : "");
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "orch-agent: %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return EXIT_USAGE;
    }
    return 0;
}

/* "k=v" into labels; false (and a message) when malformed. */
static bool add_label(json_t *labels, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || strlen(eq + 1) > 255 || (size_t)(eq - kv) > 63) {
        fprintf(stderr,
                "orch-agent: --label '%s': expected key=value (key 1-63, value up to 255 "
                "characters)\n",
                kv);
        return false;
    }
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
    json_object_set_new(labels, key, json_string(eq + 1));
    return true;
}

/* "k=v,k2=v2" into labels; false (and a message) when an entry is malformed. */
bool cli_labels_add(json_t *labels, const char *csv)
{
    _cleanup_free_ char *copy = strdup(csv);
    if (!copy)
        return false;
    for (char *save = NULL, *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save))
        if (!add_label(labels, p))
            return false;
    return true;
}

int cli_enrol(const struct cli_enrolment *e, const struct agent_config *cfg, char *msg,
              size_t msglen)
{
    struct agent_state old;
    char err[512] = "";
    int r = agent_state_load(e->state_dir, &old, err, sizeof(err));
    if (r == 0) {
        snprintf(msg, msglen,
                 "already enrolled as '%s' (agent %s) with %s; run `orch-agent unregister` "
                 "first",
                 old.name, old.agent_id, old.server_url);
        agent_state_free(&old);
        return -EEXIST;
    }
    if (r != -ENOENT) {
        /* Never overwrite a state file we cannot read: it may hold a live credential. */
        snprintf(msg, msglen,
                 "%s; fix it, or run `orch-agent unregister --force` to forget it, before "
                 "enrolling again",
                 err[0] ? err : strerror(-r));
        return r;
    }
    /* The credential comes back once: be sure it can be kept before asking for it, in a
     * directory only the agent may read (Windows: its protected DACL, before agent.json
     * exists; POSIX: the daemon checks the modes at start). */
    r = host_state_dir_init(e->state_dir);
    if (r == 0)
        r = agent_state_probe(e->state_dir);
    if (r < 0) {
        snprintf(msg, msglen, "cannot write to the state directory %s: %s", e->state_dir,
                 strerror(-r));
        return r;
    }

    json_t *facts = facts_collect();
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    const char *name = e->name ? e->name : host;
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:i}", "token", e->token, "name", name,
                  "hostname", host, "os", json_string_value(json_object_get(facts, "os")), "arch",
                  json_string_value(json_object_get(facts, "arch")), "version",
                  json_string_value(json_object_get(facts, "version")), "labels", e->labels,
                  "capabilities", facts, "slots", e->slots);
    json_decref(facts);
    if (!body) {
        snprintf(msg, msglen, "register: out of memory");
        return -ENOMEM;
    }
    struct transport *t = NULL;
    struct transport_options to = {.server_url = e->server_url,
                                   .ca_file = e->ca_file,
                                   .timeout_ms = 30000,
                                   .proxy = cfg->proxy,
                                   .no_proxy = cfg->no_proxy};
    if (transport_new(&to, &t) < 0) {
        snprintf(msg, msglen, "--server must be an https:// URL");
        json_decref(body);
        return -EPROTONOSUPPORT;
    }
    struct transport_reply rep;
    r = transport_request(t, "POST", PROTO_AGENT_PATH_REGISTER, body, &rep);
    json_decref(body);
    transport_free(t);
    if (r < 0) {
        if (r == -EPROTO)
            snprintf(msg, msglen,
                     "register: TLS verification of the server failed (%s); pass --ca-file "
                     "with the CA that signed its certificate",
                     rep.error);
        else
            snprintf(msg, msglen, "register: cannot reach the server: %s", rep.error);
        return r;
    }
    if (rep.status != 201) {
        snprintf(msg, msglen, "register: %s (HTTP %ld)", rep.error, rep.status);
        json_decref(rep.body);
        /* A 4xx is the server's answer to this token and request, which asking again will
         * not change; a 408 or 429 (and any 5xx) is its state of the moment. */
        bool refused =
            rep.status >= 400 && rep.status < 500 && rep.status != 408 && rep.status != 429;
        return refused ? -EACCES : -EAGAIN;
    }
    struct proto_agent_created ac = {0};
    struct jsonv_error je;
    r = proto_agent_created_decode(rep.body, &ac, &je);
    struct agent_state st = {
        .server_url = (char *)e->server_url,
        .ca_file = (char *)(e->ca_file ? e->ca_file : ""),
        .agent_id = (char *)ac.id,
        .tenant_id = (char *)ac.tenant_id,
        .name = (char *)ac.name,
        .credential = (char *)ac.credential,
        .slots = e->slots,
        .pool_id = (char *)json_string_value(json_object_get(rep.body, "pool_id")),
    };
    if (r < 0) {
        snprintf(msg, msglen, "register: the server's answer is not valid: %s %s", je.field,
                 je.detail);
        r = -EBADMSG;
    } else if ((r = agent_state_save(e->state_dir, &st)) < 0) {
        snprintf(msg, msglen, "register: cannot write %s/agent.json: %s", e->state_dir,
                 strerror(-r));
    } else {
        int n = snprintf(msg, msglen,
                         "enrolled as '%s' (agent %s, tenant %s); credential stored in "
                         "%s/agent.json",
                         st.name, st.agent_id, st.tenant_id, e->state_dir);
        if (st.pool_id && n >= 0 && (size_t)n < msglen)
            snprintf(msg + n, msglen - (size_t)n,
                     "\nthis agent serves the shared pool %s: it runs several tenants' jobs, "
                     "each under a uid of its own from exec.uid_range, which it needs to start",
                     st.pool_id);
    }
    json_decref(rep.body);
    return r;
}

int cli_register(int argc, char **argv, const struct agent_config *cfg)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'},  {"token", required_argument, NULL, 't'},
        {"name", required_argument, NULL, 'n'},    {"label", required_argument, NULL, 'l'},
        {"ca-file", required_argument, NULL, 'c'}, {"state-dir", required_argument, NULL, 'd'},
        {"slots", required_argument, NULL, 'S'},   {NULL, 0, NULL, 0},
    };
    const char *server = cfg->server_url[0] ? cfg->server_url : NULL;
    const char *token = getenv("ORCH_AGENT_ENROLL_TOKEN");
    const char *name = cfg->name[0] ? cfg->name : NULL;
    const char *ca = cfg->ca_file[0] ? cfg->ca_file : NULL;
    const char *state_dir = cfg->state_dir;
    long slots = cfg->slots > 0 ? (long)cfg->slots : 1;
    json_t *labels = json_object();
    int rc = EXIT_USAGE;
    /* Labels from the configuration first; --label adds to or overrides them. */
    if (!labels || (cfg->labels[0] && !cli_labels_add(labels, cfg->labels)))
        goto done;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            server = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'l':
            if (!add_label(labels, optarg))
                goto done;
            break;
        case 'c':
            ca = optarg;
            break;
        case 'd':
            state_dir = optarg;
            break;
        case 'S': {
            char *end = NULL;
            slots = strtol(optarg, &end, 10);
            if (!end || *end || slots < 1 || slots > 1024) {
                fprintf(stderr, "orch-agent: --slots: expected an integer in [1, 1024]\n");
                goto done;
            }
            break;
        }
        default:
            goto done;
        }
    }
    if (!server || !token) {
        fprintf(stderr, "usage: orch-agent register --server https://HOST[:PORT] --token TOKEN "
                        "[--name NAME] [--label k=v ...] [--ca-file FILE] [--slots N] "
                        "[--state-dir DIR]\n"
                        "(the token may also come from $ORCH_AGENT_ENROLL_TOKEN)\n");
        goto done;
    }

    struct cli_enrolment e = {.server_url = server,
                              .token = token,
                              .name = name,
                              .ca_file = ca,
                              .state_dir = state_dir,
                              .slots = (int)slots,
                              .labels = labels};
    char msg[1024] = "";
    int r = cli_enrol(&e, cfg, msg, sizeof(msg));
    if (r == 0) {
        printf("%s\n", msg);
        rc = EXIT_OK;
    } else {
        fprintf(stderr, "orch-agent: %s\n", msg);
        rc = r == -EPROTONOSUPPORT ? EXIT_USAGE : EXIT_FAIL;
    }
done:
    json_decref(labels);
    return rc;
}

static int with_state(const struct agent_config *cfg, const char *state_dir, struct agent_state *st,
                      struct transport **t)
{
    char err[512] = "";
    int r = agent_state_load(state_dir, st, err, sizeof(err));
    if (r == -ENOENT) {
        printf("not enrolled (no %s/agent.json): run `orch-agent register`\n", state_dir);
        return EXIT_NOT_ENROLLED;
    }
    if (r < 0) {
        fprintf(stderr, "orch-agent: %s\n", err[0] ? err : strerror(-r));
        return EXIT_FAIL;
    }
    struct transport_options to = {.server_url = st->server_url,
                                   .ca_file = st->ca_file,
                                   .credential = st->credential,
                                   .timeout_ms = 15000,
                                   .proxy = cfg->proxy,
                                   .no_proxy = cfg->no_proxy};
    if (transport_new(&to, t) < 0) {
        agent_state_free(st);
        fprintf(stderr, "orch-agent: the stored server URL is not https://\n");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

int cli_status(int argc, char **argv, const struct agent_config *cfg)
{
    const char *state_dir = cfg->state_dir;
    if (common_opts(argc, argv, &state_dir, NULL) != 0)
        return EXIT_USAGE;
    struct agent_state st;
    struct transport *t = NULL;
    int rc = with_state(cfg, state_dir, &st, &t);
    if (rc != EXIT_OK)
        return rc;
    printf("enrolled:   yes, as '%s' (agent %s, tenant %s)\n", st.name, st.agent_id, st.tenant_id);
    printf("server:     %s\n", st.server_url);
    if (st.pool_id)
        printf("pool:       %s (several tenants' jobs, each under its own uid: exec.uid_range)\n",
               st.pool_id);
    struct transport_reply rep;
    int r = transport_request(t, "GET", PROTO_AGENT_PATH_SELF, NULL, &rep);
    if (r < 0) {
        printf("reachable:  no (%s%s)\n", r == -EPROTO ? "TLS verification failed: " : "",
               rep.error);
        rc = EXIT_FAIL;
    } else if (rep.status != 200) {
        printf("reachable:  yes, but the server refuses this agent: %s (HTTP %ld)\n", rep.error,
               rep.status);
        rc = EXIT_FAIL;
    } else {
        json_t *b = rep.body;
        printf("reachable:  yes\n");
        printf("status:     %s (%s)\n", json_string_value(json_object_get(b, "status")),
               json_is_true(json_object_get(b, "connected")) ? "connected" : "not connected");
        printf("slots:      %lld (%lld running)\n", json_integer_value(json_object_get(b, "slots")),
               json_integer_value(json_object_get(b, "running_jobs")));
        const char *exp = json_string_value(json_object_get(b, "credential_expires_at"));
        printf("credential: valid until %s\n", exp ? exp : "-");
    }
    json_decref(rep.body);
    char cache_dir[4200];
    snprintf(cache_dir, sizeof(cache_dir), "%s/cache", state_dir);
    int npkg = 0;
    int64_t bytes = cache_dir_bytes(cache_dir, &npkg);
    printf("cache:      %d package(s), %.1f MiB in %s\n", npkg, (double)bytes / 1048576.0,
           cache_dir);
    transport_free(t);
    agent_state_free(&st);
    return rc;
}

int cli_unregister(int argc, char **argv, const struct agent_config *cfg)
{
    const char *state_dir = cfg->state_dir;
    bool force = false;
    if (common_opts(argc, argv, &state_dir, &force) != 0)
        return EXIT_USAGE;
    struct agent_state st;
    struct transport *t = NULL;
    char err[512] = "";
    int lr = agent_state_load(state_dir, &st, err, sizeof(err));
    if (lr < 0 && lr != -ENOENT && force) {
        /* A damaged state file: --force forgets it. */
        int r = agent_state_remove(state_dir);
        printf("removed the unreadable %s/agent.json; delete the agent on the server too\n",
               state_dir);
        return r < 0 ? EXIT_FAIL : EXIT_OK;
    }
    if (lr == 0)
        agent_state_free(&st);
    int rc = with_state(cfg, state_dir, &st, &t);
    if (rc != EXIT_OK)
        return rc == EXIT_NOT_ENROLLED ? EXIT_OK : rc;
    struct transport_reply rep;
    int r = transport_request(t, "DELETE", PROTO_AGENT_PATH_SELF, NULL, &rep);
    json_decref(rep.body);
    transport_free(t);
    bool removed = r == 0 && (rep.status == 204 || rep.status == 404);
    if (!removed && !force) {
        fprintf(stderr,
                "orch-agent: unregister: the server did not remove the agent (%s%s); "
                "`orch-agent unregister --force` forgets it locally anyway\n",
                r < 0 ? "unreachable: " : "", rep.error);
        agent_state_free(&st);
        return EXIT_FAIL;
    }
    r = agent_state_remove(state_dir);
    printf("unregistered '%s' (agent %s)%s\n", st.name, st.agent_id,
           removed ? "" : "; the server still lists it: delete it there");
    agent_state_free(&st);
    return r < 0 ? EXIT_FAIL : EXIT_OK;
}
