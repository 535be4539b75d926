/* Tests for server/scaling-decide.c: a policy's decision from one evaluation's numbers. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/scaling-decide.h"

/* Up by 2 at 2 queued jobs per agent or 80 % busy slots, down by 1 when the queue is empty
 * and at most 30 % busy; 1 to 5 agents; cooldowns 60 s up, 300 s down. */
static const struct scaling_rule rule = {
    .up_depth_per_agent = 2,
    .up_utilisation = 0.8,
    .down_depth_per_agent = 0,
    .down_utilisation = 0.3,
    .up_step = 2,
    .down_step = 1,
    .up_cooldown_s = 60,
    .down_cooldown_s = 300,
    .min_agents = 1,
    .max_agents = 5,
};

static struct scaling_decision decide(const struct scaling_rule *r, struct scaling_input in)
{
    struct scaling_decision d;
    memset(&d, 0xa5, sizeof(d));
    scaling_decide(r, &in, &d);
    return d;
}

#define NEVER (-1)

Test(scaling_decide, depth_per_agent_at_the_threshold_scales_up_by_the_step)
{
    struct scaling_decision d = decide(&rule, (struct scaling_input){.depth = 4,
                                                                     .agents = 2,
                                                                     .slots = 2,
                                                                     .in_use = 2,
                                                                     .desired = NEVER,
                                                                     .since_up_s = NEVER,
                                                                     .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.current, 2);
    cr_assert_eq(d.desired, 4);
    cr_assert_str_eq(d.reason, "queue_depth");
    cr_assert_float_eq(d.depth_per_agent, 2.0, 1e-9);
    cr_assert_float_eq(d.utilisation, 1.0, 1e-9);
}

Test(scaling_decide, utilisation_alone_scales_up)
{
    struct scaling_decision d = decide(&rule, (struct scaling_input){.depth = 1,
                                                                     .agents = 2,
                                                                     .slots = 10,
                                                                     .in_use = 8,
                                                                     .desired = 2,
                                                                     .since_up_s = 600,
                                                                     .since_scaled_s = 600});
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.desired, 4);
    cr_assert_str_eq(d.reason, "utilisation");
}

Test(scaling_decide, the_step_stops_at_max_and_at_max_it_holds)
{
    struct scaling_decision d = decide(&rule, (struct scaling_input){.depth = 100,
                                                                     .agents = 4,
                                                                     .slots = 4,
                                                                     .in_use = 4,
                                                                     .desired = 4,
                                                                     .since_up_s = NEVER,
                                                                     .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.desired, 5);
    d = decide(
        &rule,
        (struct scaling_input){
            .depth = 100, .agents = 5, .desired = 5, .since_up_s = NEVER, .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_HOLD);
    cr_assert_eq(d.desired, 5);
    cr_assert_str_eq(d.reason, "at_max");
}

Test(scaling_decide, the_up_cooldown_holds_and_then_lets_go)
{
    struct scaling_input in = {
        .depth = 10, .agents = 1, .desired = 3, .since_up_s = 59, .since_scaled_s = 59};
    struct scaling_decision d = decide(&rule, in);
    cr_assert_eq(d.direction, SCALING_HOLD);
    cr_assert_str_eq(d.reason, "cooldown");
    cr_assert_eq(d.desired, 3);
    in.since_up_s = in.since_scaled_s = 60;
    d = decide(&rule, in);
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.current, 3, "the last decision's count, not the online agents");
    cr_assert_eq(d.desired, 5);
}

Test(scaling_decide, an_idle_scope_scales_down_to_no_less_than_min)
{
    struct scaling_rule r = rule;
    r.down_step = 10;
    struct scaling_decision d = decide(&r, (struct scaling_input){.depth = 0,
                                                                  .agents = 4,
                                                                  .slots = 4,
                                                                  .in_use = 1,
                                                                  .desired = 4,
                                                                  .since_up_s = 900,
                                                                  .since_scaled_s = 900});
    cr_assert_eq(d.direction, SCALING_DOWN);
    cr_assert_eq(d.desired, 1);
    cr_assert_str_eq(d.reason, "idle");
    d = decide(
        &r, (struct scaling_input){
                .depth = 0, .agents = 1, .desired = 1, .since_up_s = NEVER, .since_scaled_s = 900});
    cr_assert_eq(d.direction, SCALING_HOLD);
    cr_assert_str_eq(d.reason, "at_min");
}

Test(scaling_decide, down_waits_for_its_cooldown_after_any_decision)
{
    struct scaling_input in = {.depth = 0,
                               .agents = 3,
                               .slots = 3,
                               .desired = 3,
                               .since_up_s = 100,
                               .since_scaled_s = 100};
    cr_assert_str_eq(decide(&rule, in).reason, "cooldown");
    in.since_scaled_s = 300;
    cr_assert_eq(decide(&rule, in).direction, SCALING_DOWN);
}

Test(scaling_decide, every_set_down_trigger_must_hold)
{
    /* Queue empty but 50 % busy: above down_utilisation, so no scale-down. */
    struct scaling_decision d = decide(&rule, (struct scaling_input){.depth = 0,
                                                                     .agents = 2,
                                                                     .slots = 4,
                                                                     .in_use = 2,
                                                                     .desired = 2,
                                                                     .since_up_s = NEVER,
                                                                     .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_HOLD);
    cr_assert_str_eq(d.reason, "no_trigger");
    /* Without down triggers a policy never scales down on its own. */
    struct scaling_rule r = rule;
    r.down_depth_per_agent = r.down_utilisation = -1;
    d = decide(&r, (struct scaling_input){.depth = 0,
                                          .agents = 4,
                                          .slots = 4,
                                          .desired = 4,
                                          .since_up_s = NEVER,
                                          .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_HOLD);
}

Test(scaling_decide, the_bounds_apply_whatever_the_cooldown)
{
    /* No agent and an empty queue: up to min. */
    struct scaling_decision d = decide(
        &rule,
        (struct scaling_input){.depth = 0, .desired = NEVER, .since_up_s = 1, .since_scaled_s = 1});
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.desired, 1);
    cr_assert_str_eq(d.reason, "below_min");
    /* Below min with a trigger: the step, when it goes further. */
    d = decide(&rule, (struct scaling_input){
                          .depth = 9, .desired = 0, .since_up_s = NEVER, .since_scaled_s = NEVER});
    cr_assert_eq(d.desired, 2);
    cr_assert_str_eq(d.reason, "queue_depth");
    /* A max lowered under the last decision: down to it at once. */
    d = decide(&rule,
               (struct scaling_input){
                   .depth = 50, .agents = 8, .desired = 8, .since_up_s = 1, .since_scaled_s = 1});
    cr_assert_eq(d.direction, SCALING_DOWN);
    cr_assert_eq(d.desired, 5);
    cr_assert_str_eq(d.reason, "above_max");
}

Test(scaling_decide, no_agents_count_as_one_for_the_depth)
{
    struct scaling_rule r = rule;
    r.min_agents = 0;
    struct scaling_decision d =
        decide(&r, (struct scaling_input){
                       .depth = 2, .desired = NEVER, .since_up_s = NEVER, .since_scaled_s = NEVER});
    cr_assert_float_eq(d.depth_per_agent, 2.0, 1e-9);
    cr_assert_float_eq(d.utilisation, 0.0, 1e-9);
    cr_assert_eq(d.direction, SCALING_UP);
    cr_assert_eq(d.desired, 2);
    /* One job for no agent is under the threshold of 2: hold at 0. */
    d = decide(&r, (struct scaling_input){
                       .depth = 1, .desired = NEVER, .since_up_s = NEVER, .since_scaled_s = NEVER});
    cr_assert_eq(d.direction, SCALING_HOLD);
    cr_assert_eq(d.desired, 0);
}
