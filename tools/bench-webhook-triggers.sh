#!/usr/bin/env bash
# tools/bench-webhook-triggers.sh: what the job webhook triggers (sql/functions/90_webhooks.sql)
# cost on the job path, printed as a table.
#
# The triggers are statement-level with transition tables, on every INSERT and UPDATE of
# jobs: the submissions, the dispatcher's assignments, the agents' starts, results and
# lease renewals all pay them. This measures, inside PostgreSQL (a PL/pgSQL loop, so no
# network or client time is counted), the time per statement of the job path's two shapes:
#
#   one-row:  UPDATE of one job's status (a start or a result), BENCH_ROWS statements
#   batch:    UPDATE of 100 jobs' lease (a batch of renewals), BENCH_ROWS / 100 statements
#
# in four cases: the triggers disabled (the floor); enabled with no subscription at all;
# enabled while another tenant subscribes to job events (the EXISTS short cut fails and
# the join runs, finding nobody); enabled while the jobs' own tenant subscribes to every
# job event (a delivery row per status change). A private PostgreSQL, migrated by orchd.
# Each figure is the median of three runs (the table is vacuumed between runs).
# Environment: BENCH_ROWS (default 20000), ORCH_SKIP_APT=1.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
orch_install_deps
cd "$ORCH_ROOT"
orch_build build-bench -Dwerror=true -Dtests=disabled -Dbuildtype=release
ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir bench-triggers-$$)"
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL ./build-bench/server/orchd migrate >/dev/null
rows=${BENCH_ROWS:-20000}
# Set-up as the superuser (past row-level security); the measures as the application
# role in tenant A's scope, as orchd's requests run.
su_url="postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/orch"
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$su_url" -c "$1"; }
app() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$ORCH_PG_APP_URL" -c "$1"; }

q "INSERT INTO tenants (id, slug, display_name, tier) VALUES
     ('00000000-0000-7000-8000-00000000000a', 'a', 'A', 'standard'),
     ('00000000-0000-7000-8000-00000000000b', 'b', 'B', 'standard');
   INSERT INTO jobs (id, tenant_id, command)
     SELECT gen_random_uuid(), '00000000-0000-7000-8000-00000000000a', 'true'
       FROM generate_series(1, $rows);
   ANALYZE jobs;"

# ms per statement of each shape, in the current trigger/subscription state.
measure() {
    app "SELECT set_config('app.tenant_id', '00000000-0000-7000-8000-00000000000a', false);
    DO \$\$
    DECLARE
        ids uuid[] := ARRAY(SELECT id FROM jobs ORDER BY id);
        t0 timestamptz; one float8; batch float8; n int := array_length(ids, 1);
    BEGIN
        t0 := clock_timestamp();
        FOR i IN 1..n LOOP
            UPDATE jobs SET status = CASE status WHEN 'queued' THEN 'running' ELSE 'queued' END
             WHERE id = ids[i];
        END LOOP;
        one := extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
        t0 := clock_timestamp();
        FOR i IN 0..(n / 100 - 1) LOOP
            UPDATE jobs SET lease_expires_at = now() + interval '1 minute'
             WHERE id = ANY (ids[i * 100 + 1 : i * 100 + 100]);
        END LOOP;
        batch := extract(epoch FROM clock_timestamp() - t0) * 1e6 / (n / 100);
        RAISE NOTICE 'result % %', round(one::numeric, 1), round(batch::numeric, 1);
    END \$\$;" 2>&1 | sed -n 's/.*result //p'
    q "VACUUM ANALYZE jobs" # the same table shape for every case
}

# The median of three measures, each column on its own.
measure3() {
    local a b c
    a=$(measure) b=$(measure) c=$(measure)
    for col in 1 2; do
        printf '%s\n' "$a" "$b" "$c" | cut -d' ' -f$col | sort -g | sed -n 2p
    done | paste -sd' '
}

subscribe() { # TENANT_LETTER
    q "INSERT INTO webhooks (id, tenant_id, url, events, secret_sealed, secret_prefix)
       VALUES (gen_random_uuid(), '00000000-0000-7000-8000-00000000000$1',
               'https://hooks.example.com/x',
               ARRAY['job.queued','job.assigned','job.running','job.succeeded','job.failed',
                     'job.cancelled','job.dead'], '\\x00', 'x')"
}

measure >/dev/null # warm-up: the first pass sets hint bits and fills the caches
q "ALTER TABLE jobs DISABLE TRIGGER webhook_jobs_updated; ALTER TABLE jobs DISABLE TRIGGER webhook_jobs_inserted"
off=$(measure3)
q "ALTER TABLE jobs ENABLE TRIGGER webhook_jobs_updated; ALTER TABLE jobs ENABLE TRIGGER webhook_jobs_inserted"
none=$(measure3)
subscribe b
other=$(measure3)
subscribe a
own=$(measure3)
deliveries=$(q "SELECT count(*) FROM webhook_deliveries")

printf '\nJob webhook triggers, inside PostgreSQL %s, %d jobs (µs per statement)\n\n' \
    "$(q 'SHOW server_version' | cut -d' ' -f1)" "$rows"
printf '| case                                  | one-row status UPDATE | 100-row lease UPDATE |\n'
printf '|---------------------------------------|-----------------------|----------------------|\n'
row() { printf '| %-37s | %21s | %20s |\n' "$1" "$(cut -d' ' -f1 <<<"$2")" "$(cut -d' ' -f2 <<<"$2")"; }
row "triggers disabled" "$off"
row "enabled, no subscription" "$none"
row "enabled, another tenant subscribes" "$other"
row "enabled, the jobs' tenant subscribes" "$own"
printf '\n(%s deliveries queued by the last case; each figure is the median of three runs)\n' "$deliveries"
printf 'result: off_one_us=%s none_one_us=%s other_one_us=%s own_one_us=%s off_batch_us=%s none_batch_us=%s other_batch_us=%s own_batch_us=%s\n' \
    "$(cut -d' ' -f1 <<<"$off")" "$(cut -d' ' -f1 <<<"$none")" "$(cut -d' ' -f1 <<<"$other")" \
    "$(cut -d' ' -f1 <<<"$own")" "$(cut -d' ' -f2 <<<"$off")" "$(cut -d' ' -f2 <<<"$none")" \
    "$(cut -d' ' -f2 <<<"$other")" "$(cut -d' ' -f2 <<<"$own")"
