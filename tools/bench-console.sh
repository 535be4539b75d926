#!/usr/bin/env bash
# tools/bench-console.sh: how fast the admin console opens with 10,000 jobs in the database,
# printed as a table (docs/console.md "Performance").
#
# Starts private PostgreSQL and RabbitMQ and orchd over TLS (tools/bench-lib.sh, a release
# build with the console), makes a tenant with BENCH_JOBS jobs (default 10,000, through the
# batch API, 1,000 a request; no agent, so they stay queued), then drives Debian's Chromium
# headless (playwright-core, tools/bench-console.cjs) BENCH_RUNS times (default 7), each
# in a fresh browser context (a cold cache), and measures:
#   first contentful paint   of /console/ (the sign-in page), from navigation start
#   sign-in to list          from the "Sign in" click to the jobs list interactive: its
#                            first page (50 rows, newest first) rendered and a row's link
#                            clickable (key exchange, script start, GET /api/v1/jobs)
#   load to list             navigation start to the same point, the key typed at once
# and, with curl, GET /api/v1/jobs?limit=50 on its own (the server's share).
#
# Environment: BENCH_JOBS, BENCH_RUNS, ORCH_SKIP_APT=1, BENCH_KEEP=1 (keep logs and data).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

jobs=${BENCH_JOBS:-10000}
runs=${BENCH_RUNS:-7}
chromium=${ORCH_TEST_CHROMIUM:-/usr/lib/chromium/chromium}
[ -x "$chromium" ] || die "Chromium is missing: apt-get install chromium (tools/lib.sh does)"
orch_npm_deps
[ -d "$ORCH_ROOT/server/console/node_modules/playwright-core" ] ||
    die "server/console/node_modules is not installed (tools/lib.sh orch_npm_deps)"
bench_start bench-console
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "$base/console/")" = 200 ] ||
    die "this orchd was built without the console (server/console/node_modules missing?)"

say "seeding $jobs jobs through POST /api/v1/jobs/batch"
seed_start=$(date +%s.%N)
left=$jobs
while [ "$left" -gt 0 ]; do
    n=$((left < 1000 ? left : 1000))
    body=$(python3 -c "import json,sys; n=int(sys.argv[1]); print(json.dumps({'jobs': [
        {'command': 'make -j8 test TARGET=%d' % i, 'env': {'CI': '1'}} for i in range(n)]}))" "$n")
    api POST /api/v1/jobs/batch "$token" "$body" >/dev/null
    left=$((left - n))
done
seed_s=$(python3 -c "import sys,time; print('%.1f' % (time.time() - float(sys.argv[1])))" "$seed_start")
count=$(psql_q "SELECT count(*) FROM jobs")

# The server's share: GET /api/v1/jobs?limit=50 (the list's first page), 20 times.
api_ms=()
for _ in $(seq 1 20); do
    api_ms+=("$(curl -s -o /dev/null -w '%{time_total}' --cacert "$ca" \
        -H "Authorization: Bearer $token" "$base/api/v1/jobs?limit=50")")
done

say "driving Chromium ($runs runs)"
out=$(NODE_PATH="$ORCH_ROOT/server/console/node_modules" NODE_EXTRA_CA_CERTS=$ca \
    ORCH_TEST_CHROMIUM=$chromium node "$ORCH_ROOT/tools/bench-console.cjs" "$base" "$key" "$runs")

python3 - "$out" "$count" "$seed_s" "$(nproc)" "${api_ms[@]}" <<'PY'
import json, statistics, sys
res = json.loads(sys.argv[1])
count, seed_s, cores = sys.argv[2], sys.argv[3], sys.argv[4]
api = [float(x) * 1000 for x in sys.argv[5:]]
print()
print(f"Console with {int(count):,} jobs in the database (seeded in {seed_s} s), orchd over TLS "
      f"on loopback, {cores} cores, headless Chromium, {len(res['fcp'])} cold runs")
print()
print("| measure                                   | p50 (ms) | max (ms) | goal                      |")
print("|-------------------------------------------|----------|----------|---------------------------|")
rows = [("first contentful paint (sign-in page)", res["fcp"], "< 1000 (aim < 300)"),
        ("sign-in click to jobs list interactive", res["signin"], "< 1000 (aim < 300)"),
        ("navigation to jobs list interactive", res["total"], "< 1000 (aim < 300)"),
        ("  of which POST /api/v1/auth/token", res["token"], "in the page"),
        ("  of which GET /api/v1/jobs?limit=50", res["list"], "in the page"),
        ("GET /api/v1/jobs?limit=50 (curl)", api, "the server's share")]
for name, v, goal in rows:
    print(f"| {name:<41} | {statistics.median(v):8.0f} | {max(v):8.0f} | {goal:<25} |")
print()
print(f"rows on the first page: {res['rows']}; script {res['script_kb']:.1f} KB and style "
      f"{res['css_kb']:.1f} KB as sent (gzip)")
PY
