#!/usr/bin/env bash
# tests/cluster/test-cluster.sh: keeps tools/cluster.sh working (meson suite "cluster").
# Brings up 2 orchd nodes behind HAProxy, a 3-node RabbitMQ cluster, PostgreSQL and one
# real agent; runs jobs through HAProxy; kills one orchd node with SIGKILL and checks that
# the agent comes back through HAProxy and jobs still complete, with no job run twice at
# once; then `down`, which must leave nothing behind. Needs root and haproxy.
# Usage: test-cluster.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?build directory}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=$root/tools/cluster.sh
export ORCH_CLUSTER_BUILD=$build ORCH_SKIP_APT=1
export ORCH_CLUSTER_DIR=/tmp/orch-cluster-test-$$
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
command -v haproxy >/dev/null || { echo "SKIP: haproxy is not installed"; exit 77; }
trap '"$cluster" down >/dev/null 2>&1 || true' EXIT
fail() { echo "FAIL: $*"; "$cluster" status || true; exit 1; }
t0=$SECONDS

"$cluster" up ORCHD=2 AGENTS=1 SLOTS=2 || fail "up"
"$cluster" load-test JOBS=20 || fail "load-test before the kill"
pg() { psql -X -q -A -t "postgresql://postgres@127.0.0.1:$(cat "$ORCH_CLUSTER_DIR/pg.port")/orch" -c "$1"; }
node=$(pg "SELECT gateway_node FROM agents LIMIT 1")
[[ $node =~ ^orchd-([12])$ ]] || fail "the agent is on no node ($node)"
# The node that holds the agent's connection goes: the agent must come back on the other.
"$cluster" kill-orchd "${BASH_REMATCH[1]}" || fail "kill-orchd"
back() { [ "$(pg "SELECT count(*) FROM agents WHERE status = 'online' AND gateway_node IS NOT NULL AND gateway_node <> '$node'")" = 1 ]; }
deadline=$((SECONDS + 30))
until back; do
    [ $SECONDS -lt $deadline ] || fail "the agent did not reconnect through HAProxy within 30 s"
    sleep 0.2 # polling the agents table, bounded
done
"$cluster" load-test JOBS=20 || fail "load-test after the kill"
twice=$(pg "SELECT count(*) FROM job_attempts a JOIN job_attempts b ON a.job_id = b.job_id AND a.epoch < b.epoch
             WHERE b.started_at < coalesce(a.finished_at, now())")
[ "$twice" = 0 ] || fail "$twice jobs ran twice at once"
"$cluster" status
"$cluster" down || fail "down"
trap - EXIT
[ ! -e "$ORCH_CLUSTER_DIR" ] || fail "down left $ORCH_CLUSTER_DIR behind"
echo "PASS in $((SECONDS - t0)) s"
