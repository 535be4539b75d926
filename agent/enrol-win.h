/* enrol-win.h: the Windows service's first start, enrolled from what the .msi wrote.
 *
 * `msiexec /i orch-agent.msi SERVERURL=... TOKEN=...` writes HKLM\SOFTWARE\Orch\Agent
 * (64-bit view): ServerUrl, EnrollmentToken and, when given, CaFile, Name, Labels (REG_SZ).
 * `orch-agent service`, not enrolled yet, calls enrol_from_registry(), which enrols through
 * the code of `orch-agent register` (cli_enrol()) and deletes EnrollmentToken once it was
 * used, so that the token does not stay in a registry every local user can read. */
#pragma once

#include <stddef.h>

#include "agent/cli.h"
#include "agent/config.h"

/* The key the .msi writes, under HKEY_LOCAL_MACHINE. */
#define ENROL_REGISTRY_KEY L"SOFTWARE\\Orch\\Agent"

/* When the registry holds ServerUrl and EnrollmentToken: enrol with them (CaFile, Name and
 * Labels from the registry when there, else from cfg; Labels add to cfg's labels) into
 * cfg->state_dir. EnrollmentToken is deleted once used: enrolled, refused by the server
 * (a 4xx), or found needless (already enrolled). Logs the outcome (op=enrol-registry),
 * never the token. Returns:
 *   0        enrolled, or nothing to do (no values; already enrolled);
 *   -EACCES  refused, by the server or for a ServerUrl that is not https://: the token is
 *            deleted; a new one is needed (reinstall with TOKEN=, or `orch-agent register`);
 *   < 0      else: try again later (server unreachable or failing, TLS, the state
 *            directory, malformed Labels); the token is kept. */
int enrol_from_registry(const struct agent_config *cfg);

#ifdef _WIN32
#include <windows.h>

typedef int (*enrol_fn)(const struct cli_enrolment *e, const struct agent_config *cfg, char *msg,
                        size_t msglen);

/* enrol_from_registry() on root\subkey (64-bit view), enrolling with enrol (cli_enrol() in
 * the agent; a fake in tests/win/test-enrol.c, on a key under HKCU). */
int enrol_from_registry_at(HKEY root, const wchar_t *subkey, const struct agent_config *cfg,
                           enrol_fn enrol);
#endif
