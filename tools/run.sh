#!/usr/bin/env bash
# tools/run.sh: run orch on this machine, from a fresh Debian 12 machine (as root).
#
# Installs the packages, builds orch, starts a private PostgreSQL and RabbitMQ node in
# .dev/run (data kept between runs), applies the schema migrations with `orchd migrate`,
# prints how to reach everything, and keeps running until Ctrl-C, which stops all it
# started.
#
# Environment:
#   ORCH_SKIP_APT=1   do not run apt-get (packages already there)
#   ORCH_RUN_ONCE=1   stop right after the set-up instead of waiting for Ctrl-C
source "$(dirname "$0")/lib.sh"

orch_install_deps

cd "$ORCH_ROOT"
say "building"
orch_build build -Dwerror=true -Dtests=enabled

orch_services_start "$(orch_state_dir run)"

say "applying migrations"
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL ./build/server/orchd migrate

cat <<EOF2

orch is up:
  PostgreSQL   $ORCH_PG_APP_URL   (application role)
               $ORCH_PG_OWNER_URL (schema owner)
               psql "$ORCH_PG_APP_URL"
  RabbitMQ     $ORCH_AMQP_URL
  state        $ORCH_STATE
  orchd        ./build/server/orchd --help
  orch-agent   ./build/agent/orch-agent --help

EOF2

if [ "${ORCH_RUN_ONCE:-0}" = 1 ]; then
    exit 0
fi
say "running; press Ctrl-C to stop"
while :; do sleep 3600 & wait $! || true; done
