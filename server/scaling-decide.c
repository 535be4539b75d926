/* scaling-decide.c: a scaling policy's decision (see scaling-decide.h for the rules). */
#include "server/scaling-decide.h"

#include <stdbool.h>

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void set(struct scaling_decision *out, enum scaling_direction d, int64_t desired,
                const char *reason)
{
    out->direction = d;
    out->desired = desired;
    out->reason = reason;
}

void scaling_decide(const struct scaling_rule *r, const struct scaling_input *in,
                    struct scaling_decision *out)
{
    int64_t current = in->desired >= 0 ? in->desired : in->agents;
    out->current = current;
    out->depth_per_agent = (double)in->depth / (double)(in->agents > 0 ? in->agents : 1);
    out->utilisation = in->slots > 0 ? (double)in->in_use / (double)in->slots : 0.0;
    bool up_depth = r->up_depth_per_agent > 0 && out->depth_per_agent >= r->up_depth_per_agent;
    bool up_util = r->up_utilisation > 0 && in->slots > 0 && out->utilisation >= r->up_utilisation;
    bool down_set = r->down_depth_per_agent >= 0 || r->down_utilisation >= 0;
    bool down = down_set &&
                (r->down_depth_per_agent < 0 || out->depth_per_agent <= r->down_depth_per_agent) &&
                (r->down_utilisation < 0 || out->utilisation <= r->down_utilisation);
    const char *up_reason = up_depth ? "queue_depth" : "utilisation";
    set(out, SCALING_HOLD, current, "no_trigger");

    if (current < r->min_agents) {
        int64_t want = r->min_agents;
        if ((up_depth || up_util) && current + r->up_step > want)
            want = current + r->up_step;
        set(out, SCALING_UP, clamp(want, r->min_agents, r->max_agents),
            want > r->min_agents ? up_reason : "below_min");
    } else if (current > r->max_agents) {
        set(out, SCALING_DOWN, r->max_agents, "above_max");
    } else if (up_depth || up_util) {
        if (current >= r->max_agents)
            set(out, SCALING_HOLD, current, "at_max");
        else if (in->since_up_s >= 0 && in->since_up_s < r->up_cooldown_s)
            set(out, SCALING_HOLD, current, "cooldown");
        else
            set(out, SCALING_UP, clamp(current + r->up_step, r->min_agents, r->max_agents),
                up_reason);
    } else if (down) {
        if (current <= r->min_agents)
            set(out, SCALING_HOLD, current, "at_min");
        else if (in->since_scaled_s >= 0 && in->since_scaled_s < r->down_cooldown_s)
            set(out, SCALING_HOLD, current, "cooldown");
        else
            set(out, SCALING_DOWN, clamp(current - r->down_step, r->min_agents, r->max_agents),
                "idle");
    }
}
