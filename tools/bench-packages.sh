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
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

nagents=${BENCH_AGENTS:-20}
mb=${BENCH_PKG_MB:-10}
bench_start bench-packages
say "starting $nagents agents"
bench_agents "$nagents" 1

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
