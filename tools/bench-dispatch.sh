#!/usr/bin/env bash
# tools/bench-dispatch.sh: how fast orchd places jobs on many agents, printed as a table.
#
# Starts private PostgreSQL and RabbitMQ and orchd over TLS (tools/bench-lib.sh), lifts the
# bench tenant's quotas (agents 20,000, concurrent jobs 100,000) through the operator API,
# makes one enrolment token, then runs tools/loadgen (orch-loadgen: simulated agents in one
# process, speaking the real agent protocol over HTTPS, and a submitter) once per cell:
#
#   agents   jobs    (BENCH_CELLS, "AGENTS:JOBS ...")
#        1    200
#      100   1000
#     1000   2000
#    10000   2000
#
# (the whole bench stays near 10 minutes on 2 cores, enrolling 10,000 agents included).
# Each agent has BENCH_SLOTS slots (default 4); each job "runs" BENCH_RUN_MS (default 100)
# on its agent; the jobs are submitted at BENCH_RATE per second (default 0: all at once, in
# batches of 1,000, so placements/s is the dispatcher's capacity and the latencies include
# the time a job queues behind the others). The cells share one set of enrolled agents
# (each cell's agents are a superset of the last one's), so no job is ever placed on an
# agent of an earlier cell that went away.
#
# Agents heartbeat every BENCH_HEARTBEAT seconds (default 60; orchd's agent.heartbeat_interval,
# with agent.online_window and agent.lease raised to match) and hold each exchange up to
# 60 s, so that 10,000 idle agents cost the server about 170 exchanges a second rather than
# the 2,000 of orch-agent's defaults (10 s, 25 s, heartbeat apart): the table measures
# placement, not the upkeep of idle connections.
#
# Columns: placements/s = assignments received by the agents per second, from the first
# submission to the last assignment; submit->assign = from the submitting request's send
# to the agent's receipt of the assignment; lifecycle jobs/s = results accepted per second;
# commits/job = the database's commits during the cell (every component's, from
# pg_stat_database) per job; agent exchanges/commit = the agents' exchanges that shared one
# transaction of the group commit (orch_agent_commit_items, docs/scaling.md); PostgreSQL
# and orchd CPU ms/job = the CPU time (user + system) each spent during the cell, per job:
# on a shared box a steadier figure than the rates, which move with what else runs; steal %
# = the share of the box's CPU time the hypervisor gave to other guests meanwhile (a cell
# with much of it ran on a slower box).
# The last line is the largest cell:
#   result: agents=N placements_per_s=X submit_assign_p50_ms=Y submit_assign_p99_ms=Z
#           lifecycle_per_s=L jobs=J completed=C rate=R commits_per_job=.. ...
#           pg_cpu_ms_per_job=P orchd_cpu_ms_per_job=O steal_pct=S
#
# Environment: BENCH_CELLS, BENCH_SLOTS, BENCH_RUN_MS, BENCH_RATE, BENCH_HEARTBEAT,
# BENCH_CELL_TIMEOUT (seconds per phase of a cell, default 240),
# BENCH_KEEP=1 (keep the state directory), ORCH_SKIP_APT=1, BENCH_PROFILE=1 (perf record on
# orchd and PostgreSQL during the cells: tools/bench-lib.sh), BENCH_PGSS=1 (what each SQL
# statement cost, printed at the end: tools/bench-lib.sh). Needs about 10 minutes on 2
# cores.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

cells=${BENCH_CELLS:-"1:200 100:1000 1000:2000 10000:2000"}
hb_s=${BENCH_HEARTBEAT:-60}
slots=${BENCH_SLOTS:-4}
run_ms=${BENCH_RUN_MS:-100}
rate=${BENCH_RATE:-0}
duration=${BENCH_CELL_TIMEOUT:-240} # per phase of a cell: connecting, then the jobs
incomplete=
max_agents=0
for c in $cells; do
    a=${c%%:*}
    [ "$a" -gt "$max_agents" ] && max_agents=$a
done

# One connection per agent on both sides: orchd and the load generator need the file
# descriptors, and orchd's connection limits must let them in (127.0.0.x sources spread the
# ports).
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((max_agents + 512)) ] || die "ulimit -n $(ulimit -n) is too low for $max_agents agents"
export ORCHD_AGENT_HEARTBEAT_INTERVAL=${hb_s}s
export ORCHD_AGENT_ONLINE_WINDOW=$((hb_s * 5 / 2))s ORCHD_AGENT_LEASE=$((hb_s * 3))s
export ORCHD_HTTP_MAX_CONNECTIONS=$((max_agents + 1024))
export ORCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=$((max_agents + 1024))
srcs=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5

bench_start bench-dispatch
loadgen=$ORCH_ROOT/build-bench/tools/loadgen/orch-loadgen
api PATCH "/api/v1/tenants/$tenant" "$op" "{\"quotas\":{\"agents\":$((max_agents + 100)),
  \"concurrent_jobs\":100000,\"api_calls_per_day\":100000000,\"rate_per_second\":1000000,
  \"rate_burst\":1000000}}" >/dev/null
etok=$(api POST /api/v1/enrollment-tokens "$token" \
    "{\"name\":\"bench-dispatch\",\"max_uses\":$max_agents,\"expires_in\":86400}" | field token)

say "enrolling $max_agents simulated agents"
"$loadgen" --url "$base" --ca "$ca" --api-key "$key" --enrol-token "$etok" \
    --state "$ORCH_STATE/loadgen.json" --agents "$max_agents" --slots "$slots" --jobs 0 \
    --source-addrs "$srcs" --quiet >/dev/null || die "enrolment failed"

rows=()
last=
bench_profile_begin dispatch
for c in $cells; do
    a=${c%%:*}
    j=${c##*:}
    say "cell: $a agents x $slots slots, $j jobs of $run_ms ms"
    x0=$(bench_commits) i0=$(bench_metric orch_agent_commit_items_sum)
    c0=$(bench_metric orch_agent_commit_items_count)
    read -r pg0 od0 < <(bench_cpu_ms)
    st0=$(bench_cpu_ticks)
    # A cell that does not finish within --duration still reports what it measured (its
    # jobs not placed count with the time they waited): the table says how many completed.
    out=$("$loadgen" --url "$base" --ca "$ca" --api-key "$key" --state "$ORCH_STATE/loadgen.json" \
        --agents "$a" --slots "$slots" --jobs "$j" --run-ms "$run_ms" --rate "$rate" \
        --poll-wait 60 --source-addrs "$srcs" --duration "$duration" --json) ||
        say "not every job completed at $a agents within $duration s"
    row=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("%d %d %d %.1f %.1f %.1f %.1f" % (r["agents"], r["jobs"], r["completed"],
      r["placements_per_s"], r["submit_assign_p50_ms"], r["submit_assign_p99_ms"],
      r["completed_per_s"]))' "$out") || die "the load generator failed at $a agents: $out"
    x1=$(bench_commits) i1=$(bench_metric orch_agent_commit_items_sum)
    c1=$(bench_metric orch_agent_commit_items_count)
    read -r pg1 od1 < <(bench_cpu_ms)
    st1=$(bench_cpu_ticks)
    row="$row $(bench_per "$x0" "$x1" 0 "$j") $(bench_per "$i0" "$i1" "$c0" "$c1")"
    row="$row $(bench_per "$pg0" "$pg1" 0 "$j") $(bench_per "$od0" "$od1" 0 "$j") $(bench_steal_pct "$st0" "$st1")"
    read -r _ _ done_jobs _ <<<"$row"
    [ "$done_jobs" = "$j" ] || incomplete=1
    rows+=("$row")
    last=$row
done
bench_profile_end

echo
echo "Dispatch on $(nproc) cores: orchd, PostgreSQL, RabbitMQ and orch-loadgen on one box, TLS;"
how="all at once, in batches of 1,000"
[ "$rate" = 0 ] || how="at $rate jobs/s"
echo "$slots slots per agent, jobs of $run_ms ms, heartbeat ${hb_s} s, jobs submitted $how"
echo
echo "| agents |  jobs | completed | placements/s | submit->assign p50 ms |   p99 ms | lifecycle jobs/s | commits/job | agent exchanges/commit | PostgreSQL CPU ms/job | orchd CPU ms/job | steal % |"
echo "|--------|-------|-----------|--------------|-----------------------|----------|------------------|-------------|------------------------|-----------------------|------------------|---------|"
for row in "${rows[@]}"; do
    read -r a j c p p50 p99 l cj ec pgj odj st <<<"$row"
    printf '| %6s | %5s | %9s | %12s | %21s | %8s | %16s | %11s | %22s | %21s | %16s | %7s |\n' "$a" "$j" "$c" "$p" "$p50" "$p99" "$l" "$cj" "$ec" "$pgj" "$odj" "$st"
done
read -r a j c p p50 p99 l cj ec pgj odj st <<<"$last"
echo
[ -z "$incomplete" ] || echo "(a cell short of its jobs: its rates count the whole cell, and its latencies the jobs never placed with the time they waited)"
echo "result: agents=$a placements_per_s=$p submit_assign_p50_ms=$p50 submit_assign_p99_ms=$p99 lifecycle_per_s=$l jobs=$j completed=$c rate=$rate commits_per_job=$cj agent_exchanges_per_commit=$ec pg_cpu_ms_per_job=$pgj orchd_cpu_ms_per_job=$odj steal_pct=$st"
