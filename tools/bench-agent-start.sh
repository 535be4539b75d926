#!/usr/bin/env bash
# tools/bench-agent-start.sh: what a job start costs on the agent, printed as a table.
#
# Like tools/bench-jobs.sh (private PostgreSQL and RabbitMQ, orchd over TLS, BENCH_AGENTS
# real agents with BENCH_SLOTS slots, BENCH_JOBS no-op jobs `true`), but every agent runs
# under `perf stat`, which counts the system calls of the agent and of the jobs it starts
# (threads and processes inherit the counters). Per job it prints the fsync()s and
# fdatasync()s, the threads created (clone3: pthread_create), the processes created (clone:
# the job's leader and, isolated, its program), all system calls, and the CPU time of the
# agent's own threads (utime + stime in /proc/<pid>/stat, jobs excluded) and of the jobs;
# then the latencies from PostgreSQL's timestamps and the throughput.
#
# Environment: BENCH_JOBS (default 1000), BENCH_AGENTS (4), BENCH_SLOTS (4),
# BENCH_AGENT_BIN (the orch-agent to measure; default the release build's, for A/B runs),
# BENCH_PROFILE=1 (also sample the first agent's CPU with `perf record` and print where it
# goes), BENCH_KEEP=1, ORCH_SKIP_APT=1. Needs perf with the syscalls tracepoints (root).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

jobs=${BENCH_JOBS:-1000}
nagents=${BENCH_AGENTS:-4}
slots=${BENCH_SLOTS:-4}
command -v perf >/dev/null || die "perf is needed (apt-get install linux-perf)"
bench_start bench-agent-start
agent_bin=$(realpath "${BENCH_AGENT_BIN:-./build-bench/agent/orch-agent}")
events=syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_clone3
events=$events,syscalls:sys_enter_clone,syscalls:sys_enter_execve,raw_syscalls:sys_enter

say "starting $nagents agents with $slots slots each under perf stat ($agent_bin)"
perf_pids=()
for i in $(seq 1 "$nagents"); do
    adir=$ORCH_STATE/agent-$i
    etok=$(api POST /api/v1/enrollment-tokens "$token" '{"name":"bench"}' | field token)
    ORCH_AGENT_STATE_DIR=$adir "$agent_bin" register --server "$base" --token "$etok" \
        --name "bench-$i" --ca-file "$ca" --slots "$slots" >/dev/null
    ORCH_AGENT_STATE_DIR=$adir ORCH_AGENT_LOG_LEVEL=${BENCH_AGENT_LOG_LEVEL:-warn} \
        perf stat -x, -o "$adir.perf" -e "$events" -- "$agent_bin" run 2>"$adir.log" &
    perf_pids+=($!)
    bench_pids+=($!)
done
online() { [ "$(psql_q "SELECT count(*) FROM agents WHERE status = 'online'")" = "$nagents" ]; }
orch_wait_for 60 online || die "the agents did not come online"
agent_pids=()
for p in "${perf_pids[@]}"; do
    child() { pgrep -P "$p"; }
    orch_wait_for 10 child || die "no agent under perf $p"
    agent_pids+=("$(child)")
done
# Stopped by the exit trap too: perf stat does not end its workload when it is killed.
bench_pids+=("${agent_pids[@]}")
# utime + stime (own threads), cutime + cstime (reaped jobs), in clock ticks.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13, $14 + $15 }' "/proc/$1/stat"; }
own0=0 kids0=0
for p in "${agent_pids[@]}"; do
    read -r o k < <(cpu_ticks "$p")
    own0=$((own0 + o)) kids0=$((kids0 + k))
done

if [ -n "${BENCH_PROFILE:-}" ]; then
    perf record -q -F 499 -p "${agent_pids[0]}" -o "$ORCH_STATE/agent-1.data" 2>/dev/null &
    record_pid=$!
fi
say "submitting $jobs no-op jobs in batches of 1000"
load0=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
left=$jobs
while [ "$left" -gt 0 ]; do
    n=$((left < 1000 ? left : 1000))
    body=$(python3 -c "import json,sys; print(json.dumps({'jobs':[{'command':'true','max_attempts':1}]*int(sys.argv[1])}))" "$n")
    api POST /api/v1/jobs/batch "$token" "$body" >/dev/null
    left=$((left - n))
done
done_count() { [ "$(psql_q "SELECT count(*) FROM jobs WHERE status IN ('succeeded','failed','dead')")" = "$jobs" ]; }
orch_wait_for 900 done_count || die "not all jobs finished in 15 minutes"
finished=$(date +%s.%N)
load1=$(cut -d' ' -f1 /proc/loadavg)
own1=0 kids1=0
for p in "${agent_pids[@]}"; do
    read -r o k < <(cpu_ticks "$p")
    own1=$((own1 + o)) kids1=$((kids1 + k))
done
if [ -n "${BENCH_PROFILE:-}" ]; then
    kill -INT "$record_pid"
    wait "$record_pid" 2>/dev/null || true
fi
# The counters are written when the agents exit (the idle time before and after adds a few
# heartbeats: negligible against the jobs).
kill -TERM "${agent_pids[@]}"
for p in "${perf_pids[@]}"; do wait "$p" 2>/dev/null || true; done

read -r as50 as99 < <(bench_stats "$(bench_ms 'a.started_at - a.assigned_at')")
read -r ad50 ad99 < <(bench_stats "$(bench_ms 'j.delivered_at - a.assigned_at')")
read -r st50 st99 < <(bench_stats "$(bench_ms 'a.finished_at - a.started_at')")
ok=$(psql_q "SELECT count(*) FROM jobs WHERE status = 'succeeded'")
count() { cat "$ORCH_STATE"/agent-*.perf | awk -F, -v e="$1" '$3 == e { s += $1 } END { print s + 0 }'; }
per_job() { python3 -c "print(round(($1) / $jobs, ${2:-2}))"; }
hz=$(getconf CLK_TCK)

echo
echo "Job start on the agent: $nagents agents x $slots slots, $jobs jobs \`true\`, $(nproc) cores," \
    "load average $load0 -> $load1"
echo
echo "| per job                              |        value |"
echo "|--------------------------------------|--------------|"
printf '| %-36s | %12s |\n' "fsync + fdatasync" "$(per_job "$(count syscalls:sys_enter_fsync) + $(count syscalls:sys_enter_fdatasync)")"
printf '| %-36s | %12s |\n' "threads created (clone3)" "$(per_job "$(count syscalls:sys_enter_clone3)")"
printf '| %-36s | %12s |\n' "processes created (clone)" "$(per_job "$(count syscalls:sys_enter_clone)")"
printf '| %-36s | %12s |\n' "system calls, agent and job" "$(per_job "$(count raw_syscalls:sys_enter)" 0)"
printf '| %-36s | %12s |\n' "agent CPU ms (own threads)" "$(per_job "($own1 - $own0) * 1000 / $hz")"
printf '| %-36s | %12s |\n' "job CPU ms (reaped processes)" "$(per_job "($kids1 - $kids0) * 1000 / $hz")"
echo
echo "| measure                       |     p50 (ms) |     p99 (ms) |"
echo "|-------------------------------|--------------|--------------|"
printf '| %-29s | %12s | %12s |\n' "assign -> start" "$as50" "$as99"
printf '| %-29s | %12s | %12s |\n' "  of which assign -> delivered" "$ad50" "$ad99"
printf '| %-29s | %12s | %12s |\n' "start -> done" "$st50" "$st99"
rate=$(python3 -c "print(round($jobs / ($finished - $start), 1))")
echo
printf '| %-29s | %13s |\n' "full lifecycle ($ok of $jobs ok)" "$rate jobs/s"
echo
echo "result: jobs=$jobs syncs_per_job=$(per_job "$(count syscalls:sys_enter_fsync) + $(count syscalls:sys_enter_fdatasync)")" \
    "threads_per_job=$(per_job "$(count syscalls:sys_enter_clone3)")" \
    "agent_cpu_ms_per_job=$(per_job "($own1 - $own0) * 1000 / $hz")" "jobs_per_s=$rate" \
    "load=$load0-$load1"
if [ -n "${BENCH_PROFILE:-}" ]; then
    echo
    echo "Where agent-1's CPU went (perf record, share of its samples):"
    perf report -q -i "$ORCH_STATE/agent-1.data" --no-children --sort dso,sym 2>/dev/null |
        grep -v '^$' | head -30
fi
