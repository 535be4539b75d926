/* scaling-decide.h: what a scaling policy decides from one evaluation's numbers (pure: no
 * clock, no database; server/scaling-eval.c feeds it, tests/unit/server/test-scaling.c
 * checks it).
 *
 * The count a policy works from ("current") is the agent count of its last decision, the
 * agents it last asked for, which may not all be online yet; before its first decision,
 * the matching online agents. The triggers read the agents that are online:
 *   depth per agent = queued jobs / max(online agents, 1)
 *   utilisation     = slots in use / slots of the online agents (0 without agents)
 * In order, the first rule that applies decides:
 *   1. current < min_agents: up to min_agents (to current + up_step when an up trigger
 *      holds and that is more), whatever the cooldown: the bound is the operator's.
 *   2. current > max_agents: down to max_agents, likewise.
 *   3. an up trigger holds (depth per agent >= up_depth_per_agent, or utilisation >=
 *      up_utilisation; either set one suffices): up by up_step, at most to max_agents;
 *      held while at max_agents or within up_cooldown_s of the last scale-up.
 *   4. every set down trigger holds (depth per agent <= down_depth_per_agent and
 *      utilisation <= down_utilisation; none set: never): down by down_step, at least to
 *      min_agents; held while at min_agents or within down_cooldown_s of the last
 *      decision either way (so an agent just asked for is not taken back at once).
 *   5. otherwise hold. */
#pragma once

#include <stdint.h>

/* A policy's rule. A trigger < 0 is not set. */
struct scaling_rule {
    double up_depth_per_agent, up_utilisation;
    double down_depth_per_agent, down_utilisation;
    int64_t up_step, down_step;
    int64_t up_cooldown_s, down_cooldown_s;
    int64_t min_agents, max_agents;
};

/* One evaluation's numbers. */
struct scaling_input {
    int64_t depth;          /* queued jobs in the policy's scope */
    int64_t agents;         /* matching online agents */
    int64_t slots, in_use;  /* their slots, and those in use */
    int64_t desired;        /* the last decision's count; < 0: none yet */
    int64_t since_up_s;     /* seconds since the last scale-up; < 0: never */
    int64_t since_scaled_s; /* seconds since the last decision either way; < 0: never */
};

enum scaling_direction { SCALING_HOLD = 0, SCALING_UP = 1, SCALING_DOWN = -1 };

struct scaling_decision {
    enum scaling_direction direction;
    int64_t current, desired; /* desired == current when holding */
    double depth_per_agent, utilisation;
    const char *reason; /* static: up/down "below_min", "above_max", "queue_depth",
                         * "utilisation", "idle"; hold "cooldown", "at_max", "at_min",
                         * "no_trigger" */
};

/* Decide for rule r on input in. Total: every input gives a decision, desired always within
 * [min_agents, max_agents] when the direction is not HOLD. */
void scaling_decide(const struct scaling_rule *r, const struct scaling_input *in,
                    struct scaling_decision *out);
