#!/usr/bin/env bash
# Run one integration test program ("$@") against a PostgreSQL and a RabbitMQ node of its
# own, started here on free ports and removed afterwards. The tests that stop, kill or
# restart those services (faults, restart) run this way, so the other tests, which share
# the suite's nodes, can run beside them instead of waiting for them.
set -euo pipefail
# shellcheck source=../../tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/lib.sh"
unset ORCH_PG_PORT ORCH_RMQ_PORT ORCH_RMQ_DIST_PORT ORCH_RMQ_EPMD_PORT
export ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir "own-$(basename "$1")-$$")"
rc=0
"$@" || rc=$?
exit "$rc"
