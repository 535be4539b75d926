#!/usr/bin/env bash
# tools/bench-packages.sh: a package to many agents, printed as a table.
#
# Starts private PostgreSQL and RabbitMQ, orchd over TLS and BENCH_AGENTS real orch-agent
# daemons (one slot each), uploads a package of BENCH_PKG_MB MiB of incompressible data,
# then submits one job per agent naming it at once. Each agent fetches the archive over its
# connection, checks its SHA-256, caches it, unpacks it and runs the entrypoint. Reported:
#   submit -> start    per job (PostgreSQL's timestamps): the dispatch, the fetch of the
#                      whole archive, the check, the unpack, the start
#   all started        from the first submission to the last start: the package on every agent
# and a second round on the same agents, from their caches.
#
# Environment: BENCH_AGENTS (default 20), BENCH_PKG_MB (10), BENCH_KEEP=1, ORCH_SKIP_APT=1.
#
# BENCH_MODE=deploy: a deployment instead of jobs (docs/packages.md, "Deploying a version to
# agents"). BENCH_AGENTS (default 100) real agents labelled fleet=bench, heartbeating every
# second (ORCHD_AGENT_HEARTBEAT_INTERVAL=1s: an agent learns of its target in a heartbeat's
# answer); one deployment of a new BENCH_PKG_MB MiB version per row of BENCH_DEPLOY_ROWS
# ("max_parallel:spread_ms ...", default "100:0 20:2000"). Reported per row: the time from
# the deployment's creation to the last target cached, orchd's bytes written (all its
# sockets, TLS included: /proc/PID/io wchar) against the archive bytes the agents needed,
# and orchd's peak RSS (VmHWM). The load generator's simulated agents do not fetch
# packages, so these are real orch-agent daemons, all on this box.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

mode=${BENCH_MODE:-jobs}
nagents=${BENCH_AGENTS:-$([ "$mode" = deploy ] && echo 100 || echo 20)}
mb=${BENCH_PKG_MB:-10}
[ "$mode" = deploy ] && export ORCHD_AGENT_HEARTBEAT_INTERVAL=${ORCHD_AGENT_HEARTBEAT_INTERVAL:-1s}
bench_start bench-packages
say "starting $nagents agents"
if [ "$mode" = deploy ]; then
    bench_agents "$nagents" 1 '{"fleet":"bench"}'
else
    bench_agents "$nagents" 1
fi

if [ "$mode" = deploy ]; then
    orchd_pid=${bench_pids[0]}
    wchar() { awk '/^wchar:/ {print $2}' "/proc/$orchd_pid/io"; }
    echo
    echo "A $mb MiB package to $nagents real orch-agent daemons through a deployment, on $(nproc) cores (orchd, PostgreSQL, RabbitMQ and the agents on one box, TLS, heartbeat ${ORCHD_AGENT_HEARTBEAT_INTERVAL})"
    echo
    echo "| max_parallel | spread_ms | agents cached | create -> all cached (ms) | first fetch started (ms) | orchd bytes written (MiB) | archive bytes needed (MiB) | orchd peak RSS (MiB) |"
    echo "|--------------|-----------|---------------|---------------------------|--------------------------|---------------------------|----------------------------|----------------------|"
    v=0
    for row in ${BENCH_DEPLOY_ROWS:-100:0 20:2000}; do
        par=${row%%:*} spread=${row##*:}
        v=$((v + 1))
        src=$ORCH_STATE/pkg-$v
        mkdir -p "$src"
        head -c $((mb * 1048576)) /dev/urandom >"$src/payload.bin"
        tar -cf "$ORCH_STATE/pkg-$v.tar" -C "$src" payload.bin
        curl -sf --cacert "$ca" -X POST -H "Authorization: Bearer $token" \
            -H 'Content-Type: application/x-tar' --data-binary @"$ORCH_STATE/pkg-$v.tar" \
            "$base/api/v1/packages?name=bench&version=1.0.$v" >/dev/null || die "upload failed"
        size=$(stat -c %s "$ORCH_STATE/pkg-$v.tar")
        w0=$(wchar)
        dep=$(api POST /api/v1/packages/deployments "$token" \
            "{\"package\":\"bench@1.0.$v\",\"labels\":{\"fleet\":\"bench\"},\"max_parallel\":$par,\"spread_ms\":$spread}" | field id)
        finished() {
            [ "$(psql_q "SELECT count(*) FROM package_deployment_targets WHERE deployment_id = '$dep' AND state IN ('pending', 'fetching')")" = 0 ]
        }
        orch_wait_for 600 finished || die "the deployment did not finish in 10 minutes"
        w1=$(wchar)
        read -r cached all first < <(psql_q "SELECT count(*) FILTER (WHERE t.state = 'cached'),
              round(extract(epoch FROM max(t.finished_at) - d.created_at) * 1000),
              round(extract(epoch FROM min(t.started_at) - d.created_at) * 1000)
              FROM package_deployment_targets t JOIN package_deployments d ON d.id = t.deployment_id
             WHERE d.id = '$dep' GROUP BY d.created_at" | tr '|' ' ')
        rss=$(awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$orchd_pid/status")
        printf '| %12s | %9s | %13s | %25s | %24s | %25s | %26s | %20s |\n' "$par" "$spread" \
            "$cached/$nagents" "$all" "$first" "$(( (w1 - w0) / 1048576 ))" \
            "$(( size * nagents / 1048576 ))" "$rss"
    done
    echo
    echo "The goal (shared/DESIGN.md): a 10 MB package to 100 agents in <= 3 s."
    exit 0
fi

say "uploading a package of $mb MiB"
src=$ORCH_STATE/pkg
mkdir -p "$src"
head -c $((mb * 1048576)) /dev/urandom >"$src/payload.bin"
printf '#!/bin/sh\nexec wc -c payload.bin\n' >"$src/run.sh"
chmod 755 "$src/run.sh"
tar -cf "$ORCH_STATE/pkg.tar" -C "$src" run.sh payload.bin
pkg=$(curl -sf --cacert "$ca" -X POST -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/x-tar' --data-binary @"$ORCH_STATE/pkg.tar" \
    "$base/api/v1/packages?name=bench&version=1.0.0&entrypoint=run.sh" | field id) || die "upload failed"
size=$(stat -c %s "$ORCH_STATE/pkg.tar")

round() { # ROUND: one job per agent, all at once; prints "p50 p99 all_ms"
    local body start
    body=$(python3 -c "import json,sys; print(json.dumps({'jobs':[{'package_id':sys.argv[1],'max_attempts':1}]*int(sys.argv[2])}))" "$pkg" "$nagents")
    psql_q "DELETE FROM job_attempts; DELETE FROM job_logs; DELETE FROM jobs" >/dev/null
    api POST /api/v1/jobs/batch "$token" "$body" >/dev/null
    done_count() { [ "$(psql_q "SELECT count(*) FROM jobs WHERE status IN ('succeeded','failed','dead')")" = "$nagents" ]; }
    orch_wait_for 600 done_count || die "the jobs did not finish in 10 minutes"
    [ "$(psql_q "SELECT count(*) FROM jobs WHERE status = 'succeeded'")" = "$nagents" ] ||
        die "some jobs failed: $(psql_q "SELECT error FROM jobs WHERE status <> 'succeeded' LIMIT 1")"
    read -r p50 p99 < <(bench_stats "$(bench_ms 'a.started_at - j.created_at')")
    all=$(psql_q "SELECT round(extract(epoch FROM (max(started_at) - min(created_at))) * 1000) FROM jobs")
    agents_used=$(psql_q "SELECT count(DISTINCT agent_id) FROM jobs")
    echo "$p50 $p99 $all $agents_used"
}
say "round 1: every agent fetches the package"
read -r f50 f99 fall fused < <(round)
say "round 2: from the agents' caches"
read -r c50 c99 call cused < <(round)

echo
echo "A $((size / 1048576)) MiB package to $nagents agents on $(nproc) cores (orchd, PostgreSQL, RabbitMQ and the agents on one box, TLS)"
echo
echo "| round                          | agents | submit -> start p50 (ms) | p99 (ms) | all started (ms) |"
echo "|--------------------------------|--------|--------------------------|----------|------------------|"
printf '| %-30s | %6s | %24s | %8s | %16s |\n' "1: fetch, verify, cache, unpack" "$fused" "$f50" "$f99" "$fall"
printf '| %-30s | %6s | %24s | %8s | %16s |\n' "2: from the cache, unpack" "$cused" "$c50" "$c99" "$call"
echo
python3 -c "import sys; s=int(sys.argv[1]); n=int(sys.argv[2]); t=float(sys.argv[3])/1000; print(f'round 1 moved {s*n/1048576:.0f} MiB in {t:.2f} s: {s*n/1048576/t:.0f} MiB/s')" "$size" "$fused" "$fall"
