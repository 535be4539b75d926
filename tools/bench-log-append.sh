#!/usr/bin/env bash
# tools/bench-log-append.sh: what the job.output event costs the log-append path, printed as
# a table (docs/console.md "Live events").
#
# job_log_append() (sql/functions/50_logs.sql) sends a NOTIFY (events_notify(),
# sql/functions/97_events.sql) with every chunk it stores, for the console's live log. This
# runs job_log_append() with pgbench on private PostgreSQL, one running job per client and
# 64-byte chunks (the worst case: the notify's share is largest for the smallest chunk),
# once as it is and once with events_notify() replaced by a function that does nothing,
# and prints appends a second and the mean latency of both.
#
# Environment: BENCH_SECONDS (per cell, default 10), BENCH_CLIENTS ("1 4"), ORCH_SKIP_APT=1.
source "$(dirname "$0")/lib.sh"

secs=${BENCH_SECONDS:-10}
clients=${BENCH_CLIENTS:-"1 4"}
orch_install_deps
cd "$ORCH_ROOT"
orch_build build-bench -Dwerror=true -Dtests=disabled -Dbuildtype=release
ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir bench-log-append-$$)"
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL ./build-bench/server/orchd migrate >/dev/null
db="postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch"
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$db" -c "$1"; }

# A tenant without a log limit, an agent, and one running job per client (ids from the
# client number, so that pgbench's script can name its own).
tenant=00000000-0000-4000-8000-00000000b001
agent=00000000-0000-4000-8000-00000000b002
q "INSERT INTO tenants (id, slug, display_name, tier, max_job_log_bytes)
   VALUES ('$tenant', 'bench', 'Bench', 'enterprise', 1000000000000);
   INSERT INTO agents (id, tenant_id, name, status) VALUES ('$agent', '$tenant', 'a', 'online');
   INSERT INTO jobs (id, tenant_id, command, status, attempt, epoch, agent_id, started_at)
   SELECT format('00000000-0000-4000-8000-%s', lpad(c::text, 12, '0'))::uuid, '$tenant',
          'bench', 'running', 1, 1, '$agent', now() FROM generate_series(0, 63) c;"

script=$ORCH_STATE/append.sql
cat >"$script" <<SQL
SELECT code FROM job_log_append(format('00000000-0000-4000-8000-%s', lpad(:client_id::text, 12, '0'))::uuid,
    1, '$agent', 'stdout',
    coalesce((SELECT end_offset FROM job_log_streams
               WHERE job_id = format('00000000-0000-4000-8000-%s', lpad(:client_id::text, 12, '0'))::uuid
                 AND epoch = 1 AND stream = 'stdout'), 0),
    convert_to(repeat('x', 63) || E'\n', 'UTF8'));
SQL

rows=()
run() { # VARIANT CLIENTS
    local out tps lat
    out=$(pgbench -n -c "$2" -j "$2" -T "$secs" -f "$script" "$db" 2>&1)
    tps=$(awk '/^tps/ {printf "%.0f", $3}' <<<"$out")
    lat=$(awk '/latency average/ {print $4}' <<<"$out")
    rows+=("$(printf '| %-34s | %7s | %10s | %9s |' "$1" "$2" "$tps" "$lat")")
}
# A listening session, as each api node holds one (events-hub.c).
psql -X -q "$db" >/dev/null 2>&1 <<'SQL' &
LISTEN orch_events;
SELECT pg_sleep(86400);
SQL
listener=$!
trap 'kill $listener 2>/dev/null; orch_services_stop' EXIT
say "benchmarking (${secs}s per cell)"
for c in $clients; do run "with job.output (250 ms per stream)" "$c"; done
q "CREATE OR REPLACE FUNCTION events_notify(p_tenant uuid, p_type text, p_data jsonb)
   RETURNS void LANGUAGE sql AS \$\$ SELECT \$\$"
for c in $clients; do run "events_notify() a no-op" "$c"; done
echo
echo "job_log_append() of 64-byte chunks, one running job per client, PostgreSQL on $(nproc) cores"
echo
echo "| variant                            | clients |  appends/s | mean (ms) |"
echo "|------------------------------------|---------|------------|-----------|"
printf '%s\n' "${rows[@]}"
