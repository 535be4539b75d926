#!/usr/bin/env bash
# tools/bench-scale.sh: every performance goal of DESIGN.md in one run, side by side with
# what this build measures, and what limits each figure now.
#
# It runs the benchmarks that exist, each in its own private services, and reads the
# `result: key=value ...` line each one ends with (their full output stays in the output
# directory):
#
#   part      runs                                      figures
#   api       tools/bench-api.sh                        REST req/s (best closed loop), p50/p99
#                                                       at an offered 5,000 req/s (open loop)
#   dispatch  tools/bench-dispatch.sh, twice            durable placements/s and lifecycle
#             (all jobs at once; then BENCH_RATE=1000)  jobs/s with simulated agents;
#                                                       submit->assign p50/p99 at 1,000 jobs/s
#   jobs      tools/bench-jobs.sh                       lifecycle jobs/s, 4 real agents x 4 slots
#   agents    tools/bench-agents.sh (when present)      agents held on one node, RSS per idle
#                                                       connection, heartbeats/s, PG writes
#   cluster   tools/cluster.sh up, scale, load-test SIM throughput with 1, 2 and 3 orchd nodes
#                                                       behind HAProxy (simulated agents)
#   faults    tools/cluster.sh fault-test               recovery after kill -9 of an orchd node
#                                                       and after a RabbitMQ node's stop
#
# then prints one table (figure | measured | goal | met? | what limits it now) and ends with
#   result: key=value ...   (every figure; "na" for a part not run)
#
# "What limits it now": with BENCH_PROFILE=1 the api, dispatch and jobs parts run
# `perf record -g` on orchd and PostgreSQL (and, for jobs, the agents and their jobs) while
# they measure (tools/bench-lib.sh), and the column shows each process's share of the
# samples and its top symbols (the full lists: *-top.txt in the output directory). For the
# cluster and fault parts it shows where the box's CPU went (orchd, PostgreSQL, RabbitMQ,
# HAProxy, from /proc), the commits and the CPU of PostgreSQL and orchd per job for each
# node count, and the parts of the recovery time.
#
# The defaults are modest (about 10 to 15 minutes on 2 cores); the knobs set full size:
#   BENCH_PARTS           "api dispatch jobs agents cluster faults"
#   BENCH_OUT             output directory (default .dev/bench-scale-<UTC time>)
#   BENCH_PROFILE=1       profile (needs perf; as root)
#   BENCH_API_SECONDS     per wrk cell (5)          BENCH_API_CONCURRENCY ("16 64")
#   BENCH_API_RATES       offered loads ("5000"; the last one is the goal's row)
#   BENCH_DISPATCH_AGENTS simulated agents (200)    BENCH_DISPATCH_JOBS jobs at once (4000)
#   BENCH_DISPATCH_RUN_MS each job's run (10)       BENCH_DISPATCH_RATE the fixed rate (1000)
#   BENCH_DISPATCH_RATE_JOBS jobs at that rate (5000)
#   BENCH_JOBS_N          no-op jobs for 4 real agents x 4 slots (1000)
#   BENCH_CLUSTER_NODES   ("1 2 3")  BENCH_CLUSTER_JOBS (2000)  BENCH_CLUSTER_SIM agents (20)
#   BENCH_CLUSTER_AGENTS  real agents in the cluster (2)  BENCH_FAULT_JOBS (600)
# and whatever tools/bench-agents.sh reads passes through. Full size, for instance:
#   BENCH_API_SECONDS=10 BENCH_API_RATES="1000 2000 5000" BENCH_DISPATCH_AGENTS=10000
#   BENCH_DISPATCH_JOBS=20000 BENCH_DISPATCH_RATE_JOBS=20000 BENCH_JOBS_N=10000
#   BENCH_CLUSTER_JOBS=10000 BENCH_CLUSTER_SIM=200 BENCH_FAULT_JOBS=2000
# Needs root (the cluster's service users, perf). ORCH_SKIP_APT=1 skips apt-get.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (the services' users, the cluster, perf)"
parts=" ${BENCH_PARTS:-api dispatch jobs agents cluster faults} "
out=${BENCH_OUT:-$ORCH_ROOT/.dev/bench-scale-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export BENCH_PROFILE_DIR=$out
cd "$ORCH_ROOT"
orch_install_deps
export ORCH_SKIP_APT=1 # once is enough
orch_build build-bench -Dwerror=true -Dtests=disabled -Dbuildtype=release

load() { cut -d' ' -f1 /proc/loadavg; }
load_seen=()

# run_part NAME CMD...: runs CMD (its output on stderr and in NAME.log), keeps its last
# `result:` line in NAME.result and a row for the parts table.
part_rows=()
run_part() {
    local name=$1 t0=$SECONDS l0 rc=0
    shift
    l0=$(load)
    say "part $name: $*"
    "$@" 2>&1 | tee "$out/$name.log" >&2 || rc=$?
    grep '^result: ' "$out/$name.log" | tail -1 >"$out/$name.result" || true
    load_seen+=("$l0" "$(load)")
    part_rows+=("$(printf '| %-15s | %7s | %13s | %s |' "$name" "$((SECONDS - t0))" "$l0 / $(load)" \
        "$([ "$rc" = 0 ] && echo ok || echo "failed ($rc): $out/$name.log")")")
}
# res NAME KEY: KEY's value in part NAME's result line ("na" without one)
res() {
    local v
    v=$(tr ' ' '\n' 2>/dev/null <"$out/$1.result" | sed -n "s/^$2=//p" | head -1)
    echo "${v:-na}"
}
# summary NAME: the profile's one-line summary, or how to get one
summary() {
    if [ -s "$out/$1-summary.txt" ]; then
        cat "$out/$1-summary.txt"
    else
        echo "(not profiled: BENCH_PROFILE=1)"
    fi
}

# ---- the parts ----------------------------------------------------------------------------

if [[ $parts = *" api "* ]]; then
    run_part api env BENCH_SECONDS="${BENCH_API_SECONDS:-5}" \
        BENCH_CONCURRENCY="${BENCH_API_CONCURRENCY:-16 64}" BENCH_RATES="${BENCH_API_RATES:-5000}" \
        BENCH_PROFILE_NAME=api tools/bench-api.sh
fi
if [[ $parts = *" dispatch "* ]]; then
    da=${BENCH_DISPATCH_AGENTS:-200}
    run_part dispatch env BENCH_CELLS="$da:${BENCH_DISPATCH_JOBS:-4000}" BENCH_RATE=0 \
        BENCH_RUN_MS="${BENCH_DISPATCH_RUN_MS:-10}" BENCH_PROFILE_NAME=dispatch tools/bench-dispatch.sh
    run_part dispatch-rate env BENCH_CELLS="$da:${BENCH_DISPATCH_RATE_JOBS:-5000}" \
        BENCH_RATE="${BENCH_DISPATCH_RATE:-1000}" BENCH_RUN_MS="${BENCH_DISPATCH_RUN_MS:-10}" \
        BENCH_PROFILE_NAME=dispatch-rate tools/bench-dispatch.sh
fi
if [[ $parts = *" jobs "* ]]; then
    run_part jobs env BENCH_JOBS="${BENCH_JOBS_N:-1000}" BENCH_AGENTS=4 BENCH_SLOTS=4 \
        BENCH_PROFILE_NAME=jobs tools/bench-jobs.sh
fi
agents_ran=
if [[ $parts = *" agents "* ]] && [ -x tools/bench-agents.sh ]; then
    run_part agents tools/bench-agents.sh
    agents_ran=1
fi

# The cluster and its faults: one deployment for both, in a directory of its own.
cdir=/tmp/orch-cluster-bench-$$
cluster() { ORCH_CLUSTER_DIR=$cdir ORCH_CLUSTER_BUILD=build-bench tools/cluster.sh "$@"; }
trap '[ -d "$cdir" ] && cluster down >/dev/null 2>&1; true' EXIT
trap 'exit 130' INT TERM

# cpu_ticks: "orchd postgres rabbitmq haproxy box" CPU clock ticks so far (box: every CPU of
# the machine, busy time), to say where the CPU went during a cluster run.
cpu_ticks() {
    local f pid pm orchd=0 pg=0 rmq=0 hap=0
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
    for f in "$cdir"/orchd-*.pid; do
        [ -f "$f" ] && orchd=$((orchd + $(ticks "$(cat "$f")")))
    done
    pm=$(head -1 "$cdir/pg/postmaster.pid" 2>/dev/null || true)
    for pid in ${pm:+$pm $(pgrep -P "$pm")}; do pg=$((pg + $(ticks "$pid"))); done
    for f in "$cdir"/rmq-*/rabbitmq.pid; do
        [ -f "$f" ] && rmq=$((rmq + $(ticks "$(cat "$f")")))
    done
    for pid in $(sort -u "$cdir/haproxy.pids" 2>/dev/null); do hap=$((hap + $(ticks "$pid"))); done
    echo "$orchd $pg $rmq $hap $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
}
# cpu_split BEFORE AFTER SECONDS: "orchd 40%, postgres 30%, ... of 2 cores; box busy 95%"
cpu_split() {
    python3 - "$1" "$2" "$3" "$(nproc)" "$(getconf CLK_TCK)" <<'PY'
import sys
a, b = [list(map(int, x.split())) for x in sys.argv[1:3]]
secs, cores, hz = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cap = max(secs, 0.001) * hz * cores / 100.0
names = ["orchd", "postgres", "rabbitmq", "haproxy"]
d = [y - x for x, y in zip(a, b)]
print(", ".join("%s %.0f%%" % (n, v / cap) for n, v in zip(names, d[:4])) +
      " of %d cores; box busy %.0f%%" % (cores, d[4] / cap))
PY
}

# cluster_figures SINCE: "jobs jobs_per_s p50_ms p99_ms" of the jobs created since SINCE, from
# PostgreSQL's timestamps (created_at -> finished_at), so that the figure does not depend on
# the load generator seeing every answer (under heavy load its requests time out).
cluster_figures() {
    psql -X -q -A -t -F ' ' "postgresql://postgres@127.0.0.1:$(cat "$cdir/pg.port")/orch" -c "
        SELECT count(*),
               round((count(*) / greatest(extract(epoch FROM max(finished_at) - min(created_at)), 0.001))::numeric, 1),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000)::numeric, 0),
               round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000)::numeric, 0)
          FROM jobs WHERE created_at >= '$1' AND status = 'succeeded'"
}
cluster_now() { psql -X -q -A -t "postgresql://postgres@127.0.0.1:$(cat "$cdir/pg.port")/orch" -c "SELECT now()"; }
# cluster_commits: the database's commits so far (every component's), to say how well the
# nodes' group commits batch as the agents spread over more of them.
cluster_commits() {
    psql -X -q -A -t "postgresql://postgres@127.0.0.1:$(cat "$cdir/pg.port")/orch" -c \
        "SELECT xact_commit FROM pg_stat_database WHERE datname = 'orch'"
}
# per_job BEFORE AFTER JOBS COMMITS: "commits/job, PostgreSQL and orchd CPU ms/job" of a run.
per_job() {
    python3 - "$1" "$2" "$3" "$4" "$(getconf CLK_TCK)" <<'PY'
import sys
a, b = [list(map(int, x.split())) for x in sys.argv[1:3]]
jobs, commits, hz = max(int(sys.argv[3] or 0), 1), int(sys.argv[4] or 0), int(sys.argv[5])
ms = lambda i: (b[i] - a[i]) * 1000.0 / hz / jobs
print("%.2f %.2f %.2f" % (commits / jobs, ms(1), ms(0)))
PY
}

nodes_list=${BENCH_CLUSTER_NODES:-1 2 3}
declare -A cluster_rate cluster_cpu cluster_lat cluster_per_job
if [[ $parts = *" cluster "* ]] || [[ $parts = *" faults "* ]]; then
    first=${nodes_list%% *}
    [[ $parts = *" cluster "* ]] || first=2
    run_part cluster-up cluster up ORCHD="$first" AGENTS="${BENCH_CLUSTER_AGENTS:-2}" SLOTS=4
fi
if [[ $parts = *" cluster "* ]] && [ -f "$cdir/up" ]; then
    for n in $nodes_list; do
        cluster scale orchd="$n" >>"$out/cluster-up.log" 2>&1 || say "scale orchd=$n failed"
        c0=$(cpu_ticks)
        t0=$(date +%s.%N)
        since=$(cluster_now)
        x0=$(cluster_commits)
        run_part "cluster-$n" cluster load-test JOBS="${BENCH_CLUSTER_JOBS:-2000}" SIM="${BENCH_CLUSTER_SIM:-20}"
        c1=$(cpu_ticks)
        x1=$(cluster_commits)
        cluster_cpu[$n]=$(cpu_split "$c0" "$c1" "$(python3 -c "import time; print(time.time() - $t0)")")
        read -r cj cr c50 c99 <<<"$(cluster_figures "$since")"
        read -r cpj pgms orms <<<"$(per_job "$c0" "$c1" "$cj" "$((x1 - x0))")"
        cluster_per_job[$n]="$cpj/$pgms/$orms"
        cluster_rate[$n]=$cr
        cluster_lat[$n]="$c50/$c99"
        echo "result: jobs=$cj jobs_per_s=$cr submit_done_p50_ms=$c50 submit_done_p99_ms=$c99 commits_per_job=$cpj pg_cpu_ms_per_job=$pgms orchd_cpu_ms_per_job=$orms" >"$out/cluster-$n.db"
    done
fi
fault_cpu=
if [[ $parts = *" faults "* ]] && [ -f "$cdir/up" ]; then
    [ "$(cat "$cdir/orchd.count")" -ge 2 ] || cluster scale orchd=2 >>"$out/cluster-up.log" 2>&1
    c0=$(cpu_ticks)
    t0=$(date +%s.%N)
    run_part faults cluster fault-test JOBS="${BENCH_FAULT_JOBS:-600}"
    fault_cpu=$(cpu_split "$c0" "$(cpu_ticks)" "$(python3 -c "import time; print(time.time() - $t0)")")
fi
[ -d "$cdir" ] && { cluster down >/dev/null 2>&1 || true; }

# ---- the table ----------------------------------------------------------------------------
# The goals are DESIGN.md's "Performance goals" table (kept here in the same words).

rows=()
met_n=0
goal_n=0
# row FIGURE MEASURED GOAL MET LIMIT
row() {
    rows+=("| $1 | $2 | $3 | $4 | $5 |")
    case $4 in
    yes) met_n=$((met_n + 1)) goal_n=$((goal_n + 1)) ;;
    no) goal_n=$((goal_n + 1)) ;;
    esac
}
# ok EXPR: "yes"/"no" for a Python comparison, "—" when a figure is missing
ok() {
    case "$*" in *na*) echo "—"; return ;; esac
    python3 -c "import sys; print('yes' if ($*) else 'no')"
}

r_rate=$(res api offered_rps)
r_rps=$(res api rps)
r_p50=$(res api p50_ms)
r_p99=$(res api p99_ms)
r_max=$(res api get_rps_max)
row "REST API, GET req/s (best closed loop, $(res api get_rps_max_conns) conns)" "$r_max" "≥ 5,000 req/s" \
    "$(ok "$r_max >= 5000")" "$(summary api); orchd CPU $(res api cpu_us_per_get) µs per GET"
row "REST API at an offered ${r_rate} req/s (h2load, $(res api offered_conns) conns): served, p50 / p99" \
    "$r_rps req/s, $r_p50 / $r_p99 ms" \
    "p99 ≤ 5 ms at 5,000 req/s" "$(ok "$r_rate >= 5000 and $r_rps >= 0.95 * $r_rate and $r_p99 <= 5")" \
    "as above"

s50=$(res dispatch-rate submit_assign_p50_ms)
s99=$(res dispatch-rate submit_assign_p99_ms)
srate=$(res dispatch-rate rate)
row "submit → assign at $srate jobs/s ($(res dispatch-rate agents) simulated agents), p50 / p99" \
    "$s50 / $s99 ms" "p50 ≤ 1 ms, p99 ≤ 5 ms at 1,000 jobs/s" \
    "$(ok "$srate >= 1000 and $s50 <= 1 and $s99 <= 5")" "$(summary dispatch-rate)"
pl=$(res dispatch placements_per_s)
row "durable placements/s ($(res dispatch jobs) jobs at once, $(res dispatch agents) agents)" "$pl" \
    "≥ 20,000/s" "$(ok "$pl >= 20000")" "$(summary dispatch)"
ls_=$(res dispatch lifecycle_per_s)
row "full lifecycle, simulated agents, jobs/s" "$ls_" "≥ 10,000/s" "$(ok "$ls_ >= 10000")" "as above"
lr=$(res jobs jobs_per_s)
row "full lifecycle, 4 real agents × 4 slots, jobs/s ($(res jobs succeeded) of $(res jobs jobs) ok)" "$lr" \
    "≥ 1,000/s" "$(ok "$lr >= 1000")" \
    "per job: assign→start p50 $(res jobs assign_start_p50_ms) ms, start→done p50 $(res jobs start_done_p50_ms) ms, result→next assign p50 $(res jobs result_next_p50_ms) ms; $(summary jobs)"

if [ -n "$agents_ran" ]; then
    ah=$(res agents agents_held)
    rk=$(res agents rss_per_idle_kib)
    hb=$(res agents heartbeats_per_s)
    pw=$(res agents pg_writes_per_agent_30s)
    alim="see $out/agents.log"
else
    ah=na rk=na hb=na pw=na
    alim="not run (tools/bench-agents.sh $([ -x tools/bench-agents.sh ] && echo "not selected" || echo "absent"))"
fi
row "agents held on one node" "${ah/na/not run}" "100,000 TLS connections" "$(ok "$ah >= 100000")" "$alim"
row "server RSS per idle agent connection" "${rk/na/not run} KiB" "≤ 16 KiB" "$(ok "$rk <= 16")" "$alim"
# DESIGN.md's heartbeat row holds two goals: each has its verdict.
row "heartbeat intake" "${hb/na/not run}/s" "≥ 50,000/s" "$(ok "$hb >= 50000")" \
    "what the agents held send (their number / the heartbeat interval); $alim"
row "PostgreSQL writes per idle agent per 30 s" "${pw/na/not run}" "≤ 1" "$(ok "$pw <= 1")" "$alim"

cl_vals=
cl_lats=
cl_per=
for n in $nodes_list; do
    cl_vals="$cl_vals${cl_vals:+ / }${cluster_rate[$n]:-na}"
    cl_lats="$cl_lats${cl_lats:+, }${cluster_lat[$n]:-na}"
    cl_per="$cl_per${cl_per:+, }${cluster_per_job[$n]:-na}"
done
cl_first=${cluster_rate[${nodes_list%% *}]:-na}
cl_last=${cluster_rate[${nodes_list##* }]:-na}
cl_lim="one box: every node shares its cores with PostgreSQL and 3 RabbitMQ nodes; during the ${nodes_list##* }-node run: ${cluster_cpu[${nodes_list##* }]:-not run}; submit→finish p50/p99 ms by node count: $cl_lats; commits / PostgreSQL CPU ms / orchd CPU ms per job by node count: $cl_per; load generator's wire errors: $(res "cluster-${nodes_list##* }" wire_errors)"
row "cluster throughput, ${nodes_list// / \/ } orchd nodes (jobs/s from PostgreSQL, $(res "cluster-${nodes_list%% *}" sim_agents) simulated agents)" \
    "$cl_vals" "rises with nodes (stateless, horizontal)" "$(ok "$cl_last > $cl_first")" "$cl_lim"
ka=$(res faults orchd_kill_agents_ms)
kr=$(res faults orchd_kill_recovery_ms)
ra=$(res faults rabbitmq_stop_agents_ms)
rr=$(res faults rabbitmq_stop_recovery_ms)
row "recovery after kill -9 of an orchd node (a job through; $(res faults lost) of $(res faults jobs) jobs lost)" \
    "$kr ms" "≤ 10 s, every job accounted for" "$(ok "$kr <= 10000 and '$(res faults lost)' == '0'")" \
    "agents back on live nodes after $ka ms (HAProxy check 2 × 0.5 s, agent backoff, first heartbeat); box: ${fault_cpu:-not run}"
row "recovery after a RabbitMQ node's stop (a job through)" "$rr ms" "≤ 10 s" "$(ok "$rr <= 10000")" \
    "agents back after $ra ms; the stop itself (rabbitmqctl stop) and orchd's reconnect through HAProxy"

echo
echo "orch against DESIGN.md's goals: $(nproc) cores, $(git -C "$ORCH_ROOT" rev-parse --short HEAD), release build;" \
    "load average (1 min) $(printf '%s\n' "${load_seen[@]:-na}" | sort -n | head -1) to $(printf '%s\n' "${load_seen[@]:-na}" | sort -n | tail -1) during the parts"
echo
echo "| part | seconds | load avg start / end | status |"
echo "|---|--:|---|---|"
printf '%s\n' "${part_rows[@]}"
echo
echo "| figure | measured | goal (DESIGN.md) | met? | what limits it now |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "(output, logs and profiles: $out)"
cl_keys=
for n in $nodes_list; do cl_keys="$cl_keys cluster_${n}_jobs_per_s=${cluster_rate[$n]:-na}"; done
lmax=$(printf '%s\n' "${load_seen[@]:-na}" | sort -n | tail -1)
echo "result: rest_rps_max=$r_max rest_offered_rps=$r_rate rest_rps=$r_rps rest_p50_ms=$r_p50" \
    "rest_p99_ms=$r_p99 submit_assign_rate=$srate submit_assign_p50_ms=$s50 submit_assign_p99_ms=$s99" \
    "placements_per_s=$pl lifecycle_sim_per_s=$ls_ lifecycle_real_per_s=$lr agents_held=$ah" \
    "rss_per_idle_kib=$rk heartbeats_per_s=$hb pg_writes_per_agent_30s=$pw$cl_keys" \
    "orchd_kill_recovery_ms=$kr rabbitmq_stop_recovery_ms=$rr goals_met=$met_n/$goal_n load_avg_max=$lmax"
