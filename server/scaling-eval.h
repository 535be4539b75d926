/* scaling-eval.h: the scaling policies' evaluator, beside cron-fire.c in the scheduler role
 * (node.roles "scheduler").
 *
 * Every scaling.interval a round takes its own advisory lock (pg_try_advisory_xact_lock,
 * key "orchscal", in a system-scope transaction held for the round): one node evaluates at
 * a time, and when it dies the lock goes with its connection. In that one transaction the
 * round reads every enabled policy's inputs (scaling_policy_inputs(),
 * sql/functions/97_scaling.sql), counts the evaluation on each policy, decides with
 * scaling_decide() and, for each decision, writes a history row, the policy's new desired
 * count and the scale.up or scale.down event (webhook_emit()): all of a round or none of
 * it. */
#pragma once

struct app;
struct scaling_eval;

/* Start the evaluator thread (app borrowed; it must outlive the evaluator). *ret is
 * untouched on failure. Returns 0 or -errno. */
int scaling_eval_start(struct app *app, struct scaling_eval **ret);
/* Stop the thread (a round under way finishes first) and free. Accepts NULL. */
void scaling_eval_stop(struct scaling_eval *e);
