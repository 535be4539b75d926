#!/usr/bin/env bash
# tools/bench-api.sh: REST API latency and throughput, printed as a table.
#
# Starts private PostgreSQL and RabbitMQ, orchd over TLS, a tenant whose quotas and rate
# limit are lifted (so that the numbers measure the server, not the limiter), and drives
# it with wrk (keep-alive HTTPS connections) at increasing concurrency:
#   GET  /api/v1/queues/{id}    authenticated read: token check, admission, one query
#   POST /api/v1/auth/refresh   small authenticated POST: admission and an ES256 signature
# Each request also passes admission, which counts the call in PostgreSQL.
#
# The GET is also driven at fixed offered loads (BENCH_RATES, req/s) with h2load over
# BENCH_RATE_CONNS keep-alive HTTP/1.1 connections (default "16 64"): each connection sends
# rate/conns requests a second on its own clock (--rps), whatever the answers' latency, so
# the load is offered rather than a closed loop's; "req/s" is what was served, and p50/p99
# come from h2load's log of every request. (A connection has one request in flight: when
# the server falls behind, the served rate drops below the offered one, which the row
# shows.) The "max" rows are wrk's closed loop, the open throttle.
#
# Environment: BENCH_SECONDS (per cell, default 10), BENCH_CONCURRENCY ("1 4 16 64"),
# BENCH_RATES ("1000 2000 5000"), BENCH_RATE_CONNS ("16 64"; the result line holds the
# highest rate's row with the first),
# ORCH_SKIP_APT=1, ORCHD_HTTP_THREADS (default: one per core), BENCH_DEBUG=1 (print the
# first non-200 answers of a short run first), BENCH_PROFILE=1 (perf record on orchd and
# PostgreSQL during the cells: tools/bench-lib.sh).
# The last line: the highest offered rate's row (over the first of BENCH_RATE_CONNS), the
# best closed-loop GET and POST rows,
#   result: offered_rps=R offered_conns=N rps=X p50_ms=Y p99_ms=Z get_rps_max=A
#           get_rps_max_conns=C refresh_rps_max=B cpu_us_per_get=U
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

secs=${BENCH_SECONDS:-10}
conc=${BENCH_CONCURRENCY:-"1 4 16 64"}
export ORCHD_DB_POOL_SIZE=16 ORCHD_LOG_LEVEL=${ORCHD_LOG_LEVEL:-info}
bench_start bench-api
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
queue=$(api POST /api/v1/queues "$token" '{"name":"bench"}' | json '["id"]')

lua=$dir/post.lua
cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = ""
LUA

# "50%    1.23ms" -> milliseconds
to_ms() { awk '{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f", v}'; }

rows=()
run() { # NAME CONNS wrk-args...
    local name=$1 c=$2
    shift 2
    local t=$((c < 2 ? 1 : 2))
    local out
    out=$(wrk -t"$t" -c"$c" -d"${secs}s" --latency "$@" 2>&1)
    local rps p50 p99 non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(grep -E '^ +50%' <<<"$out" | to_ms)
    p99=$(grep -E '^ +99%' <<<"$out" | to_ms)
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    rows+=("$(printf '| %-32s | %5s | %10s | %9s | %9s | %7s |' "$name" "$c" "$rps" "$p50" "$p99" "${non2xx:-0}")")
    last_row=("$rps" "$p50" "$p99")
}
# rate_run NAME CONNS RATE: the GET offered at RATE req/s over CONNS connections (h2load,
# each connection paced on its own clock); one row, from h2load's log of every request.
rate_run() {
    local name=$1 c=$2 rate=$3 log=$dir/h2load-$2-$3.tsv
    rm -f "$log"
    h2load --h1 -t 1 -c "$c" --rps "$(awk -v r="$rate" -v c="$c" 'BEGIN { printf "%.3f", r / c }')" \
        -D "$secs" --warm-up-time 1 -H "Authorization: Bearer $token" --log-file "$log" \
        "$base/api/v1/queues/$queue" >"$dir/h2load.out" 2>&1 ||
        die "h2load failed: $(tail -3 "$dir/h2load.out")"
    local rps p50 p99 non2xx
    # Served: the requests over the span of their start times (h2load's log holds only the
    # measured period, after the warm-up).
    read -r rps p50 p99 non2xx < <(sort -t$'\t' -k3,3n "$log" | awk -F'\t' '
        { d[NR] = $3; if ($2 !~ /^2/) bad++
          if (NR == 1 || $1 < t0) t0 = $1; if (NR == 1 || $1 > t1) t1 = $1 }
        END { if (NR < 2 || t1 <= t0) { print "0 na na 0"; exit }
              printf "%.2f %.3f %.3f %d\n", (NR - 1) / ((t1 - t0) / 1e6),
                     d[int((NR - 1) * 0.5) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000, bad }')
    rows+=("$(printf '| %-32s | %5s | %10s | %9s | %9s | %7s |' "$name" "$c" "$rps" "$p50" "$p99" "$non2xx")")
    last_row=("$rps" "$p50" "$p99")
}
# best_rps VAR CONNS: keep in VAR ("rps conns") the better of it and the last row
best_rps() {
    local cur=${!1:-"0 0"}
    awk -v a="${cur%% *}" -v b="${last_row[0]}" 'BEGIN { exit !(b + 0 > a + 0) }' &&
        printf -v "$1" '%s %s' "${last_row[0]}" "$2"
    return 0
}
say "benchmarking (${secs}s per cell)"
if [ -n "${BENCH_DEBUG:-}" ]; then
    cat >"$dir/dbg.lua" <<'LUA'
local shown = 0
response = function(status, headers, body)
  if status ~= 200 and shown < 3 then shown = shown + 1; io.write(status, " ", body, "\n") end
end
LUA
    wrk -t1 -c1 -d3s --latency "$base/api/v1/queues/$queue" -H "Authorization: Bearer $token" >/dev/null; wrk -t2 -c16 -d4s -s "$dir/dbg.lua" -H "Authorization: Bearer $token" "$base/api/v1/queues/$queue" | head -8
fi
# What PostgreSQL does for the GETs: commits and WAL bytes per request (load-independent).
pg_counters() {
    psql_q "SELECT xact_commit || ' ' || pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')
              FROM pg_stat_database WHERE datname = current_database()"
}
gets_done() { grep -c 'op=http method=GET route=/api/v1/queues/{id} status=200' "$dir/orchd.log" || true; }
# orchd's CPU time (user + system, clock ticks), to divide by the GETs: less sensitive to
# other load on the box than req/s.
cpu_ticks() { awk '{print $14 + $15}' "/proc/${bench_pids[0]}/stat"; }
read -r pg_c0 pg_w0 <<<"$(pg_counters)"
gets0=$(gets_done)
cpu0=$(cpu_ticks)
bench_profile_begin api
rate_res=
rate_conns=${BENCH_RATE_CONNS:-16 64}
for rate in ${BENCH_RATES-1000 2000 5000}; do
    for c in $rate_conns; do
        rate_run "GET /api/v1/queues/{id} @${rate}/s" "$c" "$rate"
        if [ "$c" = "${rate_conns%% *}" ]; then
            rate_res="offered_rps=$rate offered_conns=$c rps=${last_row[0]} p50_ms=${last_row[1]}"
            rate_res="$rate_res p99_ms=${last_row[2]}"
        fi
    done
done
get_best=
for c in $conc; do
    run "GET /api/v1/queues/{id}" "$c" -H "Authorization: Bearer $token" "$base/api/v1/queues/$queue"
    best_rps get_best "$c"
done
read -r pg_c1 pg_w1 <<<"$(pg_counters)"
gets1=$(gets_done)
cpu1=$(cpu_ticks)
refresh_best=
for c in $conc; do
    run "POST /api/v1/auth/refresh" "$c" -s "$lua" "$base/api/v1/auth/refresh"
    best_rps refresh_best "$c"
done
bench_profile_end
echo
echo "REST API on $(nproc) cores, orchd threads=${ORCHD_HTTP_THREADS:-$(nproc)}, TLS, keep-alive, PostgreSQL and RabbitMQ on the same box"
echo
echo "| request                          | conns |      req/s |  p50 (ms) |  p99 (ms) | non-2xx |"
echo "|----------------------------------|-------|------------|-----------|-----------|---------|"
printf '%s\n' "${rows[@]}"
echo
cpu_us=$(awk -v n="$((gets1 - gets0))" -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "na" }')
awk -v c="$((pg_c1 - pg_c0))" -v w="$((pg_w1 - pg_w0))" -v n="$((gets1 - gets0))" \
    -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    if (n > 0) printf "per GET: orchd CPU %.0f us; PostgreSQL %.2f commits, %.0f bytes of WAL (%d GETs)\n",
        t / hz * 1e6 / n, c / n, w / n, n }'
echo
echo "responses by status (from the access log):"
grep -o 'op=http method=[A-Z]* route=[^ ]* status=[0-9]*' "$dir/orchd.log" | sed 's/op=http //' |
    sort | uniq -c | sort -rn | head -10 || true
{ grep -E 'level=(warn|error)' "$dir/orchd.log" || true; } | sed 's/^ts=[^ ]* //' | sort | uniq -c |
    sort -rn | head -5 || true
read -r gb gbc <<<"${get_best:-na na}"
refresh_best=${refresh_best%% *}
echo "result: ${rate_res:-offered_rps=na offered_conns=na rps=na p50_ms=na p99_ms=na} get_rps_max=$gb get_rps_max_conns=$gbc refresh_rps_max=${refresh_best:-na} cpu_us_per_get=$cpu_us"
