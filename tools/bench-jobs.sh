#!/usr/bin/env bash
# tools/bench-jobs.sh: the job path's latency and throughput, printed as a table.
#
# Starts private PostgreSQL and RabbitMQ, orchd over TLS, BENCH_AGENTS real orch-agent
# daemons (BENCH_SLOTS slots each) enrolled with the CLI, then submits BENCH_JOBS no-op
# jobs (`true`) in batches of 1,000 and waits until all have finished. The latencies come
# from PostgreSQL's own timestamps of each job:
#   submit -> assign   jobs.created_at      -> job_attempts.assigned_at (dispatcher)
#   assign -> start    job_attempts.assigned_at -> started_at (hand-off, process start)
#     of which assign -> delivered (jobs.delivered_at: the gateway handed it down)
#   start -> done      job_attempts.started_at -> finished_at (run, output, result)
#   result -> next     an attempt's finished_at -> the next assignment to the same agent
#                      (how long a freed slot waits for work while jobs are queued)
#   submit -> done     jobs.created_at      -> finished_at
# and the throughput is jobs finished per second over the whole run.
#
# Environment: BENCH_JOBS (default 2000), BENCH_AGENTS (4), BENCH_SLOTS (4),
# BENCH_KEEP=1 (keep the state directory: logs, database), BENCH_AGENT_LOG_LEVEL (warn),
# ORCH_SKIP_APT=1.
source "$(dirname "$0")/lib.sh"
orch_install_deps
cd "$ORCH_ROOT"
orch_build build-bench -Dwerror=true -Dtests=disabled -Dbuildtype=release
[ -n "${BENCH_KEEP:-}" ] || ORCH_STATE_REMOVE=1 # BENCH_KEEP=1: keep logs and data
orch_services_start "$(orch_state_dir "bench-jobs-$$")"

jobs=${BENCH_JOBS:-2000}
nagents=${BENCH_AGENTS:-4}
slots=${BENCH_SLOTS:-4}
dir=$ORCH_STATE/orchd
mkdir -p "$dir"
./tools/gen-certs.sh "$dir/tls"
export ORCHD_DB_URL=$ORCH_PG_APP_URL ORCHD_AMQP_URL=$ORCH_AMQP_URL
export ORCHD_AUTH_KEY_DIR=$dir/keys ORCHD_HTTP_CERT_FILE=$dir/tls/server.pem
export ORCHD_HTTP_KEY_FILE=$dir/tls/server.key ORCHD_HTTP_PORT=$(orch_free_port)
export ORCHD_LOG_LEVEL=warn
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL ./build-bench/server/orchd migrate >/dev/null
./build-bench/server/orchd admin gen-key >/dev/null
optoken=$(./build-bench/server/orchd admin create-token bench 2>/dev/null)
./build-bench/server/orchd serve 2>"$dir/orchd.log" &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; orch_services_stop' EXIT
base=https://127.0.0.1:$ORCHD_HTTP_PORT
ca=$dir/tls/ca.pem
orch_wait_for 30 curl -sf --cacert "$ca" "$base/healthz" || die "orchd did not start"

api() { # METHOD PATH TOKEN [BODY]
    local out code
    out=$(curl -s -w '\n%{http_code}' --cacert "$ca" -X "$1" "$base$2" \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' --data-binary "$4"})
    code=${out##*$'\n'}
    [ "${code:0:1}" = 2 ] || die "$1 $2: HTTP $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
op=$(api POST /api/v1/auth/token "" "{\"key\":\"$optoken\"}" | field access_token)
tenant=$(api POST /api/v1/tenants "$op" "{\"slug\":\"bench\",\"display_name\":\"Bench\",
  \"tier\":\"enterprise\",\"quotas\":{\"api_calls_per_day\":100000000,\"rate_per_second\":1000000,
  \"rate_burst\":1000000,\"concurrent_jobs\":100000,\"agents\":1000}}" | field id)
key=$(api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"bench","role":"admin"}' | field key)
token=$(api POST /api/v1/auth/token "" "{\"key\":\"$key\"}" | field access_token)

say "starting $nagents agents with $slots slots each"
for i in $(seq 1 "$nagents"); do
    adir=$ORCH_STATE/agent-$i
    etok=$(api POST /api/v1/enrollment-tokens "$token" '{"name":"bench"}' | field token)
    ORCH_AGENT_STATE_DIR=$adir ./build-bench/agent/orch-agent register --server "$base" \
        --token "$etok" --name "bench-$i" --ca-file "$ca" --slots "$slots" >/dev/null
    ORCH_AGENT_STATE_DIR=$adir ORCH_AGENT_LOG_LEVEL=${BENCH_AGENT_LOG_LEVEL:-warn} ./build-bench/agent/orch-agent run \
        2>"$adir.log" &
    pids+=($!)
done
online() { [ "$(api GET /api/v1/agents "$token" | python3 -c 'import json,sys; print(sum(1 for a in json.load(sys.stdin)["items"] if a["status"]=="online"))')" = "$nagents" ]; }
orch_wait_for 30 online || die "the agents did not come online"

psql_q() { psql -X -q -A -t "postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch" -c "$1"; }
say "submitting $jobs no-op jobs in batches of 1000"
start=$(date +%s.%N)
left=$jobs
while [ "$left" -gt 0 ]; do
    n=$((left < 1000 ? left : 1000))
    body=$(python3 -c "import json,sys; print(json.dumps({'jobs':[{'command':'true','max_attempts':1}]*int(sys.argv[1])}))" "$n")
    api POST /api/v1/jobs/batch "$token" "$body" >/dev/null
    left=$((left - n))
done
submitted=$(date +%s.%N)
done_count() { [ "$(psql_q "SELECT count(*) FROM jobs WHERE status IN ('succeeded','failed','dead')")" = "$jobs" ]; }
orch_wait_for 600 done_count || die "not all jobs finished in 10 minutes"
finished=$(date +%s.%N)

stats() { # SQL expression in ms over the attempts
    psql_q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::numeric, 2) || ' ' ||
                   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY v)::numeric, 2)
              FROM (SELECT $1 AS v FROM job_attempts a JOIN jobs j ON j.id = a.job_id) s"
}
ms() { echo "extract(epoch FROM ($1)) * 1000"; }
read -r sa50 sa99 < <(stats "$(ms 'a.assigned_at - j.created_at')")
read -r as50 as99 < <(stats "$(ms 'a.started_at - a.assigned_at')")
read -r ad50 ad99 < <(stats "$(ms 'j.delivered_at - a.assigned_at')")
read -r st50 st99 < <(stats "$(ms 'a.finished_at - a.started_at')")
read -r rn50 rn99 < <(psql_q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::numeric, 2)
        || ' ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY v)::numeric, 2)
   FROM (SELECT extract(epoch FROM (n.assigned_at - a.finished_at)) * 1000 AS v
           FROM job_attempts a
           CROSS JOIN LATERAL (SELECT min(b.assigned_at) AS assigned_at FROM job_attempts b
                                WHERE b.agent_id = a.agent_id AND b.assigned_at >= a.finished_at) n
          WHERE n.assigned_at IS NOT NULL) s")
read -r sd50 sd99 < <(stats "$(ms 'j.finished_at - j.created_at')")
ok=$(psql_q "SELECT count(*) FROM jobs WHERE status = 'succeeded'")
rate=$(python3 -c "print(round($jobs / ($finished - $start), 1))")
subrate=$(python3 -c "print(round($jobs / ($submitted - $start), 1))")

echo
echo "Job path on $(nproc) cores: orchd, PostgreSQL, RabbitMQ and $nagents agents x $slots slots on one box, TLS"
echo
echo "| measure                       |     p50 (ms) |     p99 (ms) |"
echo "|-------------------------------|--------------|--------------|"
printf '| %-29s | %12s | %12s |\n' "submit -> assign" "$sa50" "$sa99"
printf '| %-29s | %12s | %12s |\n' "assign -> start" "$as50" "$as99"
printf '| %-29s | %12s | %12s |\n' "  of which assign -> delivered" "$ad50" "$ad99"
printf '| %-29s | %12s | %12s |\n' "start -> done" "$st50" "$st99"
printf '| %-29s | %12s | %12s |\n' "result -> next assign (agent)" "$rn50" "$rn99"
printf '| %-29s | %12s | %12s |\n' "submit -> done" "$sd50" "$sd99"
echo
echo "| throughput                    |        jobs/s |"
echo "|-------------------------------|---------------|"
printf '| %-29s | %13s |\n' "submission (batches of 1000)" "$subrate"
printf '| %-29s | %13s |\n' "full lifecycle ($ok of $jobs ok)" "$rate"
