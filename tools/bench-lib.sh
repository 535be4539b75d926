# tools/bench-lib.sh: what the job benchmarks share (sourced after tools/lib.sh):
# a release build, private PostgreSQL and RabbitMQ, orchd over TLS, a tenant whose quotas
# and rate limit are lifted, its admin token, and real orch-agent daemons enrolled with
# the CLI. Everything started is stopped on exit; the state directory is removed unless
# BENCH_KEEP=1. With BENCH_PGSS=1, PostgreSQL loads pg_stat_statements and the exit prints
# the statements that took the most time (calls, total and mean ms, rows per call), before
# the services stop.

# bench_start NAME: build, services, orchd. Sets base, ca, token, dir, op (a platform
# token), tenant (the tenant's id) and key (its admin API key); defines api, field, psql_q.
bench_start() {
    orch_install_deps
    cd "$ORCH_ROOT"
    orch_build build-bench -Dwerror=true -Dtests=disabled -Dbuildtype=release
    [ -n "${BENCH_KEEP:-}" ] || ORCH_STATE_REMOVE=1 # BENCH_KEEP=1: keep logs and data
    [ "${BENCH_PGSS:-0}" != 1 ] || ORCH_PG_OPTIONS="${ORCH_PG_OPTIONS:-} -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    orch_services_start "$(orch_state_dir "$1-$$")"
    dir=$ORCH_STATE/orchd
    mkdir -p "$dir"
    ./tools/gen-certs.sh "$dir/tls"
    export ORCHD_DB_URL=$ORCH_PG_APP_URL ORCHD_DB_SYSTEM_URL=$ORCH_PG_SYSTEM_URL
    export ORCHD_AMQP_URL=$ORCH_AMQP_URL
    export ORCHD_AUTH_KEY_DIR=$dir/keys ORCHD_HTTP_CERT_FILE=$dir/tls/server.pem
    export ORCHD_HTTP_KEY_FILE=$dir/tls/server.key ORCHD_HTTP_PORT=$(orch_free_port)
    export ORCHD_LOG_LEVEL=${ORCHD_LOG_LEVEL:-warn}
    # The operators' metrics listener, for bench_metric.
    export ORCHD_METRICS_ADDRESS=127.0.0.1 ORCHD_METRICS_PORT=$(orch_free_port)
    ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL ./build-bench/server/orchd migrate >/dev/null
    ./build-bench/server/orchd admin gen-key >/dev/null
    local optoken
    optoken=$(./build-bench/server/orchd admin create-token bench 2>/dev/null)
    ./build-bench/server/orchd serve 2>"$dir/orchd.log" &
    bench_pids=($!)
    # kill and wait may fail (a process already gone, one that is not this shell's child):
    # under set -e that would end the trap before the services are stopped.
    trap 'kill "${bench_pids[@]}" 2>/dev/null || true; wait "${bench_pids[@]}" 2>/dev/null || true
          bench_pgss_report || true; orch_services_stop' EXIT
    [ "${BENCH_PGSS:-0}" != 1 ] || psql_q "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    base=https://127.0.0.1:$ORCHD_HTTP_PORT
    ca=$dir/tls/ca.pem
    orch_wait_for 30 curl -sf --cacert "$ca" "$base/healthz" || die "orchd did not start"
    op=$(api POST /api/v1/auth/token "" "{\"key\":\"$optoken\"}" | field access_token)
    tenant=$(api POST /api/v1/tenants "$op" "{\"slug\":\"bench\",\"display_name\":\"Bench\",
      \"tier\":\"enterprise\",\"quotas\":{\"api_calls_per_day\":100000000,\"rate_per_second\":1000000,
      \"rate_burst\":1000000,\"concurrent_jobs\":100000,\"agents\":1000}}" | field id)
    key=$(api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"bench","role":"admin"}' | field key)
    token=$(api POST /api/v1/auth/token "" "{\"key\":\"$key\"}" | field access_token)
}

# bench_pgss_report: with BENCH_PGSS=1, the 25 statements that took the most time, and the
# tables' row updates (how many were heap-only).
bench_pgss_report() {
    [ "${BENCH_PGSS:-0}" = 1 ] || return 0
    echo
    echo "PostgreSQL statements by total time (pg_stat_statements, track=all):"
    psql -X -q -P pager=off "postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch" -c "
        SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,
               round(mean_exec_time::numeric, 3) AS mean_ms,
               round(rows::numeric / greatest(calls, 1), 1) AS rows_per_call,
               left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
          FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%'
         ORDER BY total_exec_time DESC LIMIT 25"
    echo "Row updates by table (heap-only: no index entry written; docs/scaling.md, \"Indexes on jobs\"):"
    psql -X -q -P pager=off "postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch" -c "
        SELECT relname AS table, n_tup_ins AS inserts, n_tup_upd AS updates,
               n_tup_hot_upd AS heap_only,
               round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1), 1) AS heap_only_pct
          FROM pg_stat_user_tables WHERE n_tup_upd > 0 ORDER BY n_tup_upd DESC LIMIT 8"
}

api() { # METHOD PATH TOKEN [BODY]
    local out code
    out=$(curl -s -w '\n%{http_code}' --cacert "$ca" -X "$1" "$base$2" \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' --data-binary "$4"})
    code=${out##*$'\n'}
    [ "${code:0:1}" = 2 ] || die "$1 $2: HTTP $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
psql_q() { psql -X -q -A -t "postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch" -c "$1"; }
# bench_commits: the database's commits so far (every component's, pg_stat_database).
# PostgreSQL 15 publishes a backend's counts within 10 s of its last transaction: the
# reading waits that long first.
bench_commits() {
    sleep 11
    psql_q "SELECT xact_commit FROM pg_stat_database WHERE datname = 'orch'"
}
# bench_metric NAME: a metric of orchd's without labels (0 when absent).
bench_metric() {
    curl -s "http://127.0.0.1:$ORCHD_METRICS_PORT/metrics" |
        awk -v n="$1" '$1 == n {v = $2} END {print v + 0}'
}
# bench_cpu_ms: "pg orchd", the CPU milliseconds (user + system) used so far by PostgreSQL
# (the postmaster and its processes now alive: the pool's backends live through a cell) and
# by orchd. CPU time, unlike a rate, does not move with what else the box runs.
bench_cpu_ms() {
    local pm
    pm=$(head -1 "$ORCH_STATE/pg/postmaster.pid")
    python3 - "$pm" "${bench_pids[0]}" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        return open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return None
def cpu(pid):
    f = stat(pid)
    return int(f[11]) + int(f[12]) if f else 0
pm, orchd = sys.argv[1], sys.argv[2]
pg = cpu(pm)
for p in os.listdir("/proc"):
    f = stat(p) if p.isdigit() else None
    if f and f[1] == pm:
        pg += int(f[11]) + int(f[12])
print("%d %d" % (pg * 1000 // hz, cpu(orchd) * 1000 // hz))
PY
}
# bench_cpu_ticks: "steal total" clock ticks of the whole box so far (/proc/stat);
# bench_steal_pct T0 T1: the share of the time between two readings that the hypervisor
# gave the box's virtual CPUs to others (steal): a run with much of it measured a slower box.
bench_cpu_ticks() {
    awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat
}
bench_steal_pct() {
    local s0 t0 s1 t1
    read -r s0 t0 <<<"$1"
    read -r s1 t1 <<<"$2"
    bench_per $((s0 * 100)) $((s1 * 100)) "$t0" "$t1"
}
# bench_per A0 A1 B0 B1: (A1 - A0) / (B1 - B0) to two decimals, "-" when B did not move.
bench_per() {
    python3 -c "import sys; a0, a1, b0, b1 = map(float, sys.argv[1:]); print(round((a1 - a0) / (b1 - b0), 2) if b1 != b0 else '-')" "$@"
}

# bench_agents N SLOTS [LABELS]: enrol and start N agents (with LABELS, a JSON object, when
# given), wait until all are online.
bench_agents() {
    local i adir etok
    for i in $(seq 1 "$1"); do
        adir=$ORCH_STATE/agent-$i
        etok=$(api POST /api/v1/enrollment-tokens "$token" "{\"name\":\"bench\"${3:+,\"labels\":$3}}" | field token)
        ORCH_AGENT_STATE_DIR=$adir ./build-bench/agent/orch-agent register --server "$base" \
            --token "$etok" --name "bench-$i" --ca-file "$ca" --slots "$2" >/dev/null
        ORCH_AGENT_STATE_DIR=$adir ORCH_AGENT_LOG_LEVEL=${BENCH_AGENT_LOG_LEVEL:-warn} \
            ./build-bench/agent/orch-agent run 2>"$adir.log" &
        bench_pids+=($!)
    done
    online() {
        [ "$(psql_q "SELECT count(*) FROM agents WHERE status = 'online'")" = "$1" ]
    }
    orch_wait_for 60 online "$1" || die "the agents did not come online"
}

# bench_stats EXPR: "p50 p99" of EXPR (milliseconds) over the attempts (a) of jobs (j).
bench_stats() {
    psql_q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::numeric, 2) || ' ' ||
                   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY v)::numeric, 2)
              FROM (SELECT $1 AS v FROM job_attempts a JOIN jobs j ON j.id = a.job_id) s"
}
bench_ms() { echo "extract(epoch FROM ($1)) * 1000"; }

# bench_profile_begin NAME [PID...]: with BENCH_PROFILE=1, `perf record -g` (BENCH_PROFILE_HZ
# samples a second, default 499) on orchd, on PostgreSQL (the postmaster, its processes, and
# the ones it starts later) and on the PIDs given (and what they start) until
# bench_profile_end, which writes what took the CPU to
# $BENCH_PROFILE_DIR (default build-bench/profile): NAME.perf.data, NAME-top.txt (the top
# symbols by process, self time) and NAME-summary.txt (one line: each process's share and
# its top symbols). BENCH_PROFILE_NAME overrides NAME. Without BENCH_PROFILE both do nothing.
bench_profile_begin() {
    [ "${BENCH_PROFILE:-0}" = 1 ] || return 0
    command -v perf >/dev/null || die "BENCH_PROFILE=1 needs perf (apt-get install linux-perf)"
    local pm pids
    profile_dir=${BENCH_PROFILE_DIR:-$ORCH_ROOT/build-bench/profile}
    profile_name=${BENCH_PROFILE_NAME:-$1}
    mkdir -p "$profile_dir"
    pm=$(head -1 "$ORCH_STATE/pg/postmaster.pid")
    shift
    pids=$(echo "${bench_pids[0]}" "$pm" $(pgrep -P "$pm") "$@" | tr ' ' ,)
    perf record -g -F "${BENCH_PROFILE_HZ:-499}" -p "$pids" -o "$profile_dir/$profile_name.perf.data" \
        >"$profile_dir/$profile_name.perf.log" 2>&1 &
    profile_pid=$!
    profile_t0=$(date +%s)
    bench_pids+=("$profile_pid")
}

bench_profile_end() {
    [ -n "${profile_pid:-}" ] || return 0
    kill -INT "$profile_pid" 2>/dev/null || true
    wait "$profile_pid" 2>/dev/null || true
    # Out of the list the exit trap waits for: bash's `wait` on a child that died of SIGINT
    # acts as if the shell had got it, and would cut the trap short.
    local p keep=()
    for p in "${bench_pids[@]}"; do [ "$p" = "$profile_pid" ] || keep+=("$p"); done
    bench_pids=("${keep[@]}")
    profile_pid=
    local data=$profile_dir/$profile_name.perf.data secs
    secs=$(($(date +%s) - profile_t0))
    perf report -i "$data" --stdio --no-children --sort comm,dso,sym -g none --percent-limit 0.3 \
        2>/dev/null | grep -E '^ +[0-9.]+%' | head -60 >"$profile_dir/$profile_name-top.txt" || true
    perf report -i "$data" --stdio --no-children --sort comm,dso -n -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' >"$profile_dir/$profile_name-dso.txt" || true
    # One line: "orchd 1.2 of 2 cores (libcrypto.so.3 31%, libc.so.6 25%, kernel 20%;
    # pthread_rwlock_rdlock 6%, malloc 3%); postgres 0.4 of 2 cores (...)", the shares being
    # of that process's samples.
    python3 - "$profile_dir/$profile_name-dso.txt" "$profile_dir/$profile_name-top.txt" \
        "${BENCH_PROFILE_HZ:-499}" "$secs" "$(nproc)" >"$profile_dir/$profile_name-summary.txt" <<'PY' || true
import collections, re, sys
dso_f, top_f, hz, secs, cores = sys.argv[1], sys.argv[2], float(sys.argv[3]), max(float(sys.argv[4]), 1), sys.argv[5]
short = lambda d: "kernel" if d.startswith("[kernel") else d
comm_n, comm_pct, dsos = collections.Counter(), collections.Counter(), collections.defaultdict(list)
for line in open(dso_f):
    pct, n, comm, dso = line.split(None, 3)
    comm_n[comm] += int(n)
    comm_pct[comm] += float(pct.rstrip("%"))
    dsos[comm].append((float(pct.rstrip("%")), short(dso.strip())))
syms = collections.defaultdict(list)
for line in open(top_f):
    t = line.split(None, 4)
    if len(t) == 5 and not t[4].strip().startswith("0x") and not t[2].startswith("[kernel"):
        syms[t[1]].append((float(t[0].rstrip("%")), re.sub(r"@.*", "", t[4].strip())))
parts = []
for comm, n in [c for c in comm_n.most_common() if not c[0].startswith(":")][:3]:
    tot = comm_pct[comm] or 1
    d = ", ".join("%s %.0f%%" % (name, 100 * p / tot) for p, name in sorted(dsos[comm], reverse=True)[:3])
    s = ", ".join("%s %.0f%%" % (name, 100 * p / tot) for p, name in syms[comm][:2])
    parts.append("%s %.2f of %s cores (%s; %s)" % (comm, n / hz / secs, cores, d, s))
print("; ".join(parts))
PY
    say "profile: $(cat "$profile_dir/$profile_name-summary.txt" 2>/dev/null)"
}
