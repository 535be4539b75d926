/* cli.h: orch-agent's enrolment commands. Each takes the arguments after the command name
 * and the loaded configuration, prints what a person needs, and returns the exit status
 * (0 done, 1 failed, 2 bad usage, 3 not enrolled). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "agent/config.h"

int cli_register(int argc, char **argv, const struct agent_config *cfg);
int cli_status(int argc, char **argv, const struct agent_config *cfg);
int cli_unregister(int argc, char **argv, const struct agent_config *cfg);

/* What to enrol with; every pointer is borrowed. */
struct cli_enrolment {
    const char *server_url; /* https://host[:port] */
    const char *token;      /* the enrolment token: a secret, never logged or printed */
    const char *name;       /* NULL: the host name */
    const char *ca_file;    /* NULL: the system store */
    const char *state_dir;  /* where agent.json goes */
    int slots;              /* 1..1024 */
    json_t *labels;         /* object of k: v */
};

/* Enrol this host and write <state_dir>/agent.json: the core of `register`, which the
 * Windows service's first start shares (enrol-win.c). Prints nothing: msg gets what a
 * person needs (as what it enrolled, or why not), never the token. Returns 0 enrolled;
 * -EEXIST already enrolled (a valid agent.json; nothing sent); -EACCES the server refused
 * it with a 4xx other than 408 and 429 (an unknown, expired or used-up token, a taken
 * name...: asking again will not help); -EPROTONOSUPPORT the URL is not https://; else a
 * negative errno worth a retry or a fix on this host (-EAGAIN a 5xx, 408 or 429; -EPROTO TLS
 * verification failed; an unreachable server; a state file or directory in the way). */
int cli_enrol(const struct cli_enrolment *e, const struct agent_config *cfg, char *msg,
              size_t msglen);

/* Add "k=v,k2=v2" to labels. False (and a message on stderr) when an entry is not k=v. */
bool cli_labels_add(json_t *labels, const char *csv);
