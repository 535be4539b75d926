#!/usr/bin/env bash
# tools/bench-agents.sh: how many idle agents one orchd node holds, and what each costs it,
# printed as a table.
#
# Starts private PostgreSQL and RabbitMQ and a release orchd over TLS (tools/bench-lib.sh),
# lifts the bench tenant's agent quota, enrols BENCH_AGENTS simulated agents with
# tools/loadgen (orch-loadgen --jobs 0), reads orchd's VmRSS, then has the load generator
# hold them all (--hold): each agent on its own TLS connection, from loopback source
# addresses 127.0.0.2, 127.0.0.3, ... (one per 20,000 agents: an address has about 28,000
# ephemeral ports), keeps a sync exchange with `wait` open (the agent protocol's long-poll)
# and heartbeats at the interval orchd gives (agent.heartbeat_interval, 10 s unless
# BENCH_HEARTBEAT says otherwise), the heartbeat riding in the held exchange. Once every
# agent is online and BENCH_SETTLE_S have passed (the first heartbeats' writes, the
# batched flush), it measures over BENCH_HOLD_S seconds of idle holding:
#
#   held            orchd's own gauge of the long-polls it holds (orch_gateway_held_requests,
#                   sampled every second: the highest and lowest reading; an agent is out of
#                   it for the round trip of each heartbeat, and the agents that came online
#                   together heartbeat together), and its open connections
#                   (orch_http_connections)
#   RSS             orchd's VmRSS (/proc/PID/status) before the agents connected and at the
#                   end of the window; per agent = the difference / connections open
#   heartbeats/s    orchd's orch_agent_heartbeats_total over the window (each one is part of
#                   a committed group-commit transaction before its answer goes out), and the
#                   CPU orchd spent meanwhile (/proc/PID/stat)
#   PG row writes   pg_stat_database tup_inserted + tup_updated + tup_deleted over the window,
#                   per agent, scaled to 30 s; commits per second and WAL bytes per agent per
#                   30 s beside them. PostgreSQL publishes a backend's counts up to 10 s late
#                   (about 1 s for a busy one): in a steady state both ends lag alike, and a
#                   longer window (BENCH_HOLD_S) blurs its edges less
#
# The last line:
#   result: agents_held=N rss_per_idle_kib=X heartbeats_per_s=Y pg_writes_per_agent_30s=Z
# (agents_held: the highest reading of the gauge in the window) with more keys after.
#
# What the host needs for many agents: `ulimit -n` above the agent count for orchd and the
# load generator (this script raises it, which takes root past the hard limit), orchd's
# http.max_connections, http.max_connections_per_address and gateway.max_waiters above it
# (set here through ORCHD_*), and memory: the load generator's side of each TLS connection
# costs about as much as orchd's. docs/operations.md, "Holding many agents".
#
# Environment: BENCH_AGENTS (default 2000), BENCH_HOLD_S (the measuring window, default 120:
# an idle agent's row is written every 4th heartbeat at the defaults, 40 s, all agents in the
# same few seconds, so a window of a few such periods reads the steady rate),
# BENCH_SETTLE_S (default 15), BENCH_HEARTBEAT (seconds; orchd's agent.heartbeat_interval,
# with agent.online_window and agent.lease raised to match; default: orchd's own, 10 s),
# BENCH_CONNECT_TIMEOUT (seconds for every agent to come online, default 900),
# BENCH_CONNECT_PARALLEL (first exchanges in flight at once, default 256), BENCH_ENROL (api:
# through POST /api/v1/agents/register, the default up to 5,000 agents; sql: written
# straight into PostgreSQL with their credentials, the default above), BENCH_KEEP=1
# (keep the state directory), ORCH_SKIP_APT=1, ORCHD_* (orchd settings).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

nagents=${BENCH_AGENTS:-2000}
hold_s=${BENCH_HOLD_S:-120}
settle_s=${BENCH_SETTLE_S:-15}
connect_s=${BENCH_CONNECT_TIMEOUT:-900}
hb_s=${BENCH_HEARTBEAT:-}

# One descriptor per agent on both sides, and room for the rest (orchd's PostgreSQL pool,
# RabbitMQ, listeners, files: under 200).
need=$((nagents + 512))
[ "$(ulimit -Hn)" -ge "$need" ] || ulimit -Hn "$need" 2>/dev/null ||
    die "ulimit -n: $nagents agents need $need descriptors; the hard limit is $(ulimit -Hn)" \
        "and raising it takes CAP_SYS_RESOURCE (root outside a container, or a higher limit" \
        "from whoever starts this shell): at most $(($(ulimit -Hn) - 512)) agents here"
ulimit -n "$need"
srcs=$(seq -s, -f '127.0.0.%g' 2 $((nagents / 20000 + 2)))
export ORCHD_HTTP_MAX_CONNECTIONS=$need ORCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=$need
waiters=$((nagents + 1024))
export ORCHD_GATEWAY_MAX_WAITERS=$((waiters > 65536 ? waiters : 65536))
if [ -n "$hb_s" ]; then
    export ORCHD_AGENT_HEARTBEAT_INTERVAL=${hb_s}s
    export ORCHD_AGENT_ONLINE_WINDOW=$((hb_s * 5))s ORCHD_AGENT_LEASE=$((hb_s * 3))s
fi

bench_start bench-agents
orchd_pid=${bench_pids[0]}
loadgen=$ORCH_ROOT/build-bench/tools/loadgen/orch-loadgen
api PATCH "/api/v1/tenants/$tenant" "$op" "{\"quotas\":{\"agents\":$((nagents + 100))}}" >/dev/null
etok=$(api POST /api/v1/enrollment-tokens "$token" \
    "{\"name\":\"bench-agents\",\"max_uses\":$((nagents < 100000 ? nagents : 100000)),\"expires_in\":86400}" |
    field token)

# seed_agents: the agents written straight into PostgreSQL, as POST /api/v1/agents/register
# writes them (credential orch_ag_<12 hex>_<43 characters>, its SHA-256 stored), and their
# credentials into the load generator's --state file. The API enrols one agent per
# transaction behind the token's row lock (about 100 a second on this box): 100,000 would
# take longer than the measurement.
seed_agents() {
    psql_q "CREATE TEMP TABLE g AS
              SELECT 'lg-' || lpad(i::text, 6, '0') AS name,
                     'orch_ag_' || lpad(to_hex(i), 12, '0') || '_' ||
                     substr(encode(sha256(convert_to('$$-' || i || '-' || random(), 'UTF8')), 'hex'), 1, 43) AS cred
                FROM generate_series(0, $nagents - 1) i;
            INSERT INTO agents (id, tenant_id, name, hostname, os, arch, version, capabilities,
                                slots, status, credential_prefix, credential_hash,
                                credential_expires_at)
              SELECT gen_random_uuid(), '$tenant', name, name, 'linux', 'x86_64', 'orch-loadgen',
                     jsonb_build_object('os', 'linux', 'arch', 'x86_64', 'hostname', name),
                     1, 'offline', substr(cred, 1, 20), sha256(convert_to(cred, 'UTF8')),
                     now() + interval '90 days'
                FROM g;
            SELECT name || ' ' || cred FROM g ORDER BY name" |
        python3 -c '
import json, sys
agents = [dict(zip(("name", "credential"), l.split())) for l in sys.stdin if l.strip()]
json.dump({"url": sys.argv[1], "agents": agents}, open(sys.argv[2], "w"))
print(len(agents))' "$base" "$ORCH_STATE/loadgen.json"
}

enrol=${BENCH_ENROL:-$([ "$nagents" -le 5000 ] && echo api || echo sql)}
say "enrolling $nagents simulated agents ($enrol)"
t=$SECONDS
if [ "$enrol" = sql ]; then
    [ "$(seed_agents)" = "$nagents" ] || die "seeding the agents failed"
else
    "$loadgen" --url "$base" --ca "$ca" --api-key "$key" --enrol-token "$etok" \
        --state "$ORCH_STATE/loadgen.json" --agents "$nagents" --jobs 0 --source-addrs "$srcs" \
        --quiet >/dev/null || die "enrolment failed"
fi
enrol_s=$((SECONDS - t))

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$orchd_pid/status"; }
# cpu_s: orchd's user and system CPU time so far, seconds.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$orchd_pid/stat"; }
# pg_counts: "rows commits wal_bytes" of the database so far.
pg_counts() {
    psql_q "SELECT d.tup_inserted + d.tup_updated + d.tup_deleted, d.xact_commit,
                   pg_current_wal_lsn() - '0/0'::pg_lsn
              FROM pg_stat_database d WHERE d.datname = 'orch'" | tr '|' ' '
}
sleep 2
rss0=$(rss_kib)

say "holding $nagents agents from $srcs"
lg_out=$ORCH_STATE/loadgen-hold.json
lg_err=$ORCH_STATE/loadgen-hold.log
# The hold outlasts the measurements; the load generator is stopped (SIGTERM) after them.
"$loadgen" --url "$base" --ca "$ca" --api-key "$key" --state "$ORCH_STATE/loadgen.json" \
    --agents "$nagents" --source-addrs "$srcs" --poll-wait 60 --duration "$connect_s" \
    --connect-parallel "${BENCH_CONNECT_PARALLEL:-256}" \
    --hold $((settle_s + hold_s + 60)) --json >"$lg_out" 2>"$lg_err" &
lg_pid=$!
bench_pids+=("$lg_pid")
t=$SECONDS
all_online() {
    grep -q 'agents online after' "$lg_err" || ! kill -0 "$lg_pid" 2>/dev/null
}
orch_wait_for $((connect_s + 60)) all_online || die "the agents did not come online: $lg_err"
kill -0 "$lg_pid" 2>/dev/null || die "the load generator stopped: $(tail -5 "$lg_err")"
online_s=$((SECONDS - t))
say "$(grep 'agents online after' "$lg_err" | tail -1)"
sleep "$settle_s"

# The window: the gauge every second, RSS at its end, counters at both ends.
hb0=$(bench_metric orch_agent_heartbeats_total)
cpu0=$(cpu_s)
read -r rows0 commits0 wal0 < <(pg_counts)
t0=$(date +%s.%N)
hmin= hmax=0
end=$((SECONDS + hold_s))
while [ "$SECONDS" -lt "$end" ]; do
    h=$(bench_metric orch_gateway_held_requests)
    [ -z "$hmin" ] || [ "$h" -lt "$hmin" ] && hmin=$h
    [ "$h" -gt "$hmax" ] && hmax=$h
    sleep 1
done
hb1=$(bench_metric orch_agent_heartbeats_total)
cpu1=$(cpu_s)
t1=$(date +%s.%N)
read -r rows1 commits1 wal1 < <(pg_counts)
rss1=$(rss_kib)
conns=$(bench_metric orch_http_connections)
kill -TERM "$lg_pid" 2>/dev/null
wait "$lg_pid" 2>/dev/null
lg=$(cat "$lg_out")

win=$(python3 -c "print($t1 - $t0)")
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }
per_agent=$(calc "round(($rss1 - $rss0) / max($conns, 1), 1)")
hb_rate=$(calc "round(($hb1 - $hb0) / $win, 1)")
writes=$(calc "round(($rows1 - $rows0) / max($hmax, 1) * 30 / $win, 3)")
commit_rate=$(calc "round(($commits1 - $commits0) / $win, 1)")
cpu=$(calc "round(($cpu1 - $cpu0) / $win, 2)")
wal=$(calc "round(($wal1 - $wal0) / max($hmax, 1) * 30 / $win)")
read -r lg_hb lg_rec lg_err_n < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["heartbeats_per_s"], r["reconnects"], r["errors"] + r["busy_503"])' "$lg") ||
    die "no report from the load generator: $(tail -5 "$lg_err")"

echo
echo "Idle agents on one orchd node, $(nproc) cores: orchd, PostgreSQL, RabbitMQ and orch-loadgen on one box, TLS;"
echo "heartbeat ${hb_s:-10} s (in the held exchange), ${hold_s} s window after ${settle_s} s settling;" \
    "enrolment ($enrol) ${enrol_s} s, all online after ${online_s} s"
echo
echo "| measure                                        |        value |"
echo "|------------------------------------------------|--------------|"
printf '| %-46s | %12s |\n' "agents (simulated, one TLS connection each)" "$nagents"
printf '| %-46s | %12s |\n' "long-polls held by orchd, lowest / highest" "$hmin / $hmax"
printf '| %-46s | %12s |\n' "connections open to orchd" "$conns"
printf '| %-46s | %12s |\n' "orchd VmRSS before / held (MiB)" "$((rss0 / 1024)) / $((rss1 / 1024))"
printf '| %-46s | %12s |\n' "orchd RSS per idle agent (KiB)" "$per_agent"
printf '| %-46s | %12s |\n' "heartbeats/s, orchd (loadgen sent)" "$hb_rate ($lg_hb)"
printf '| %-46s | %12s |\n' "orchd CPU (cores busy)" "$cpu"
printf '| %-46s | %12s |\n' "PostgreSQL row writes per agent per 30 s" "$writes"
printf '| %-46s | %12s |\n' "PostgreSQL commits/s" "$commit_rate"
printf '| %-46s | %12s |\n' "WAL bytes per agent per 30 s" "$wal"
printf '| %-46s | %12s |\n' "reconnects, errors during the hold (loadgen)" "$lg_rec, $lg_err_n"
echo
echo "result: agents_held=$hmax rss_per_idle_kib=$per_agent heartbeats_per_s=$hb_rate" \
    "pg_writes_per_agent_30s=$writes agents=$nagents held_min=$hmin connections=$conns" \
    "rss_before_kib=$rss0 rss_held_kib=$rss1 orchd_cpu_cores=$cpu commits_per_s=$commit_rate" \
    "wal_bytes_per_agent_30s=$wal reconnects=$lg_rec errors=$lg_err_n"
