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
# and the throughput is jobs finished per second over the whole run. The last line:
#   result: agents=N slots=S jobs=J succeeded=K jobs_per_s=X submit_assign_p50_ms=..
#           submit_assign_p99_ms=.. assign_start_p50_ms=.. start_done_p50_ms=..
#           result_next_p50_ms=.. submit_done_p50_ms=.. submit_done_p99_ms=..
#
# Environment: BENCH_JOBS (default 2000), BENCH_AGENTS (4), BENCH_SLOTS (4),
# BENCH_KEEP=1 (keep the state directory: logs, database), BENCH_AGENT_LOG_LEVEL (warn),
# ORCHD_* (orchd settings, e.g. ORCHD_AGENT_COMMIT_THREADS=0 for no group commit),
# ORCH_SKIP_APT=1, BENCH_PROFILE=1 (perf record on orchd, PostgreSQL and the agents with their
# jobs while the jobs run: tools/bench-lib.sh).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

jobs=${BENCH_JOBS:-2000}
nagents=${BENCH_AGENTS:-4}
slots=${BENCH_SLOTS:-4}
bench_start bench-jobs
say "starting $nagents agents with $slots slots each"
bench_agents "$nagents" "$slots"

# Commits in the whole database (every component's) and the agents' group commit's
# transactions (orch_agent_commit_items), before and after the run.
x0=$(bench_commits) i0=$(bench_metric orch_agent_commit_items_sum)
c0=$(bench_metric orch_agent_commit_items_count)

say "submitting $jobs no-op jobs in batches of 1000"
bench_profile_begin jobs "${bench_pids[@]:1}"
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
bench_profile_end
x1=$(bench_commits) i1=$(bench_metric orch_agent_commit_items_sum)
c1=$(bench_metric orch_agent_commit_items_count)
per_job=$(bench_per "$x0" "$x1" 0 "$jobs")
per_commit=$(bench_per "$i0" "$i1" "$c0" "$c1")

read -r sa50 sa99 < <(bench_stats "$(bench_ms 'a.assigned_at - j.created_at')")
read -r as50 as99 < <(bench_stats "$(bench_ms 'a.started_at - a.assigned_at')")
read -r ad50 ad99 < <(bench_stats "$(bench_ms 'j.delivered_at - a.assigned_at')")
read -r st50 st99 < <(bench_stats "$(bench_ms 'a.finished_at - a.started_at')")
read -r rn50 rn99 < <(psql_q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::numeric, 2)
        || ' ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY v)::numeric, 2)
   FROM (SELECT extract(epoch FROM (n.assigned_at - a.finished_at)) * 1000 AS v
           FROM job_attempts a
           CROSS JOIN LATERAL (SELECT min(b.assigned_at) AS assigned_at FROM job_attempts b
                                WHERE b.agent_id = a.agent_id AND b.assigned_at >= a.finished_at) n
          WHERE n.assigned_at IS NOT NULL) s")
read -r sd50 sd99 < <(bench_stats "$(bench_ms 'j.finished_at - j.created_at')")
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
echo
echo "| commits                       |         count |"
echo "|-------------------------------|---------------|"
printf '| %-29s | %13s |\n' "per job (pg_stat_database)" "$per_job"
printf '| %-29s | %13s |\n' "agent exchanges per commit" "$per_commit"
echo "result: agents=$nagents slots=$slots jobs=$jobs succeeded=$ok jobs_per_s=$rate" \
    "submit_assign_p50_ms=$sa50 submit_assign_p99_ms=$sa99 assign_start_p50_ms=$as50" \
    "start_done_p50_ms=$st50 result_next_p50_ms=$rn50 submit_done_p50_ms=$sd50 submit_done_p99_ms=$sd99" \
    "commits_per_job=$per_job agent_exchanges_per_commit=$per_commit"
