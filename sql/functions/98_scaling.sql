-- 98_scaling: scaling policies' views and the inputs of their evaluation (tables in
-- sql/0017_scaling.sql; the evaluator is server/scaling-eval.c).

-- scaling_policy_view, scaling_history_view: from 0017_scaling.sql (with their grants).

-- A policy as the API shows it.
CREATE OR REPLACE VIEW scaling_policy_view WITH (security_invoker = true) AS
SELECT p.id, p.tenant_id, json_build_object(
    'id', p.id, 'name', p.name,
    'queue', (SELECT q.name FROM queues q WHERE q.id = p.queue_id),
    'requirements', p.requirements,
    'up_depth_per_agent', p.up_depth_per_agent, 'up_utilisation', p.up_utilisation,
    'up_step', p.up_step, 'up_cooldown_s', p.up_cooldown_s,
    'down_depth_per_agent', p.down_depth_per_agent, 'down_utilisation', p.down_utilisation,
    'down_step', p.down_step, 'down_cooldown_s', p.down_cooldown_s,
    'min_agents', p.min_agents, 'max_agents', p.max_agents, 'enabled', p.enabled,
    'desired_agents', p.desired_agents, 'last_up_at', p.last_up_at,
    'last_down_at', p.last_down_at, 'evaluations', p.evaluations,
    'last_evaluated_at', p.last_evaluated_at,
    'last_evaluation', CASE WHEN p.last_evaluated_at IS NULL THEN NULL ELSE json_build_object(
        'queue_depth', p.last_depth, 'agents', p.last_agents,
        'utilisation', p.last_utilisation) END,
    'created_at', p.created_at, 'updated_at', p.updated_at, 'pool', p.pool_id) AS doc
  FROM scaling_policies p;

CREATE OR REPLACE VIEW scaling_history_view WITH (security_invoker = true) AS
SELECT h.id, h.tenant_id, h.policy_id, json_build_object(
    'id', h.id, 'policy_id', h.policy_id, 'created_at', h.created_at,
    'type', 'scale.' || h.direction, 'previous_agents', h.previous_agents,
    'desired_agents', h.desired_agents, 'reason', h.reason, 'inputs', h.data) AS doc
  FROM scaling_history h;

-- The inputs of up to max_policies enabled policies, those evaluated longest ago first:
-- per policy, its queued jobs (eligible now, outside paused queues; of its queue when it
-- names one, of exactly its requirement set when it names one: the sets of
-- scaling_signals()), and the online agents that may run them (the tenant's own and its
-- admitting pools', meeting the policy's requirements) with their slots and the slots in
-- use. A pool policy (a platform tenant's row naming pool_id, sql/0019_pool_scaling.sql)
-- counts instead the queued jobs of every tenant its pool admits, and only its pool's
-- online agents. Set-based, as scaling_signals() is: the agents are read once, the waiting
-- jobs grouped once, and each distinct (tenant, requirements) of the policies is matched
-- only against that tenant's own agents and its pools' (hash joins on the tenant and the
-- pool), never against every agent (a round of 1,000 policies over 1,000 agents of 50
-- tenants took 1.0 to 1.4 s when each policy scanned every agent, 0.4 to 0.5 s like this).
CREATE OR REPLACE FUNCTION scaling_policy_inputs(online_s int, max_policies int)
    RETURNS TABLE (policy_id uuid, depth bigint, agents bigint, slots bigint, in_use bigint)
    LANGUAGE sql STABLE AS $$
WITH p AS MATERIALIZED (SELECT sp.id, sp.tenant_id, sp.queue_id, sp.pool_id,
                               coalesce(sp.requirements, '{}') AS req,
                               sp.requirements IS NULL AS any_req
                          FROM scaling_policies sp WHERE sp.enabled
                         ORDER BY sp.last_evaluated_at NULLS FIRST LIMIT max_policies),
-- The tenants each pool of a pool policy admits (admitting_pools()'s rule, turned round).
pt AS MATERIALIZED (SELECT po.id AS pool_id, t.id AS tenant_id
                      FROM pools po JOIN tenants t
                        ON t.tier = ANY (po.tiers) OR t.id = ANY (po.tenants)
                     WHERE po.id IN (SELECT p.pool_id FROM p WHERE p.pool_id IS NOT NULL)),
ten AS MATERIALIZED (SELECT p.tenant_id FROM p WHERE p.pool_id IS NULL
                     UNION SELECT pt.tenant_id FROM pt),
w AS MATERIALIZED (SELECT j.tenant_id, j.queue_id, j.requirements, count(*) AS n
                     FROM jobs j LEFT JOIN queues q ON q.id = j.queue_id
                    WHERE j.status = 'queued' AND j.not_before <= now()
                      AND NOT coalesce(q.paused, false)
                      AND j.tenant_id IN (SELECT ten.tenant_id FROM ten)
                    GROUP BY j.tenant_id, j.queue_id, j.requirements),
ag AS MATERIALIZED (SELECT * FROM online_agents(online_s) o
                     WHERE o.tenant_id IN (SELECT ten.tenant_id FROM ten) OR o.pool_id IS NOT NULL),
adm AS MATERIALIZED (SELECT ten.tenant_id, a.pool_id FROM ten
                       CROSS JOIN LATERAL admitting_pools(ten.tenant_id) AS a(pool_id)),
pairs AS MATERIALIZED (SELECT DISTINCT p.tenant_id, p.req FROM p WHERE p.pool_id IS NULL),
m AS (SELECT x.tenant_id, x.req, count(*) AS n, sum(x.slots)::bigint AS slots,
             sum(least(x.in_use, x.slots))::bigint AS in_use
        FROM (SELECT pr.tenant_id, pr.req, ag.slots, ag.in_use, ag.lab, ag.mem, ag.disk
                FROM pairs pr JOIN ag ON ag.tenant_id = pr.tenant_id AND ag.pool_id IS NULL
              UNION ALL
              SELECT pr.tenant_id, pr.req, ag.slots, ag.in_use, ag.lab, ag.mem, ag.disk
                FROM pairs pr JOIN adm ON adm.tenant_id = pr.tenant_id
                JOIN ag ON ag.pool_id = adm.pool_id) x
       WHERE requirements_hold(x.req, x.lab, x.mem, x.disk)
       GROUP BY x.tenant_id, x.req),
pm AS (SELECT pp.pool_id, pp.req, count(*) AS n, sum(ag.slots)::bigint AS slots,
              sum(least(ag.in_use, ag.slots))::bigint AS in_use
         FROM (SELECT DISTINCT p.pool_id, p.req FROM p WHERE p.pool_id IS NOT NULL) pp
         JOIN ag ON ag.pool_id = pp.pool_id
        WHERE requirements_hold(pp.req, ag.lab, ag.mem, ag.disk)
        GROUP BY pp.pool_id, pp.req)
SELECT p.id,
       CASE WHEN p.pool_id IS NULL THEN
           (SELECT coalesce(sum(w.n), 0) FROM w
             WHERE w.tenant_id = p.tenant_id
               AND (p.queue_id IS NULL OR w.queue_id = p.queue_id)
               AND (p.any_req OR w.requirements = p.req))::bigint
       ELSE
           (SELECT coalesce(sum(w.n), 0) FROM w JOIN pt ON pt.tenant_id = w.tenant_id
             WHERE pt.pool_id = p.pool_id
               AND (p.any_req OR w.requirements = p.req))::bigint
       END,
       coalesce(m.n, pm.n, 0), coalesce(m.slots, pm.slots, 0), coalesce(m.in_use, pm.in_use, 0)
  FROM p LEFT JOIN m ON p.pool_id IS NULL AND m.tenant_id = p.tenant_id AND m.req = p.req
         LEFT JOIN pm ON pm.pool_id = p.pool_id AND pm.req = p.req
$$;
