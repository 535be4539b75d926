-- 0017_scaling: a tenant's scaling policies and their decisions (server/api-scaling.c,
-- server/scaling-eval.c, docs/operations.md "Scaling policies").
--
-- A policy watches one scope of the tenant's work: the jobs of one queue, of one
-- requirement set, of both, or all of them, against the online agents that could run
-- them (the rules of sql/functions/60_scheduling.sql). The scheduler role evaluates every
-- enabled policy each scaling.interval and, when a trigger holds outside its cooldown,
-- records a decision here and emits scale.up or scale.down through webhook_emit(). The
-- bounds below repeat the API's (it names the field; these keep a hand-written row sane).

CREATE TABLE scaling_policies (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    queue_id     uuid REFERENCES queues (id) ON DELETE CASCADE,
    requirements jsonb CHECK (jsonb_typeof(requirements) = 'object'),
    -- Triggers; NULL: not used. Depth per agent is queued jobs / matching online agents
    -- (at least 1); utilisation is slots in use / slots of those agents, 0 to 1.
    up_depth_per_agent   numeric CHECK (up_depth_per_agent > 0 AND up_depth_per_agent <= 100000),
    up_utilisation       numeric CHECK (up_utilisation > 0 AND up_utilisation <= 1),
    down_depth_per_agent numeric CHECK (down_depth_per_agent >= 0
                                        AND down_depth_per_agent <= 100000),
    down_utilisation     numeric CHECK (down_utilisation >= 0 AND down_utilisation < 1),
    up_step         int NOT NULL CHECK (up_step BETWEEN 1 AND 1000),
    down_step       int NOT NULL CHECK (down_step BETWEEN 1 AND 1000),
    up_cooldown_s   int NOT NULL CHECK (up_cooldown_s BETWEEN 0 AND 86400),
    down_cooldown_s int NOT NULL CHECK (down_cooldown_s BETWEEN 0 AND 86400),
    min_agents   int NOT NULL CHECK (min_agents BETWEEN 0 AND 10000),
    max_agents   int NOT NULL CHECK (max_agents BETWEEN 1 AND 10000),
    enabled      boolean NOT NULL DEFAULT true,
    -- State the evaluator keeps: the agent count of the last decision (NULL before the
    -- first), when it last scaled each way, and its last evaluation's inputs.
    desired_agents    int,
    last_up_at        timestamptz,
    last_down_at      timestamptz,
    evaluations       bigint NOT NULL DEFAULT 0,
    last_evaluated_at timestamptz,
    last_depth        bigint,
    last_agents       bigint,
    last_utilisation  numeric,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    CHECK (min_agents <= max_agents),
    CHECK (up_depth_per_agent IS NOT NULL OR up_utilisation IS NOT NULL)
);
CREATE INDEX scaling_policies_due ON scaling_policies (last_evaluated_at NULLS FIRST) WHERE enabled;

-- One row per decision, newest kept (the evaluator prunes a policy's past
-- SCALING_HISTORY_KEEP in server/scaling-eval.c).
CREATE TABLE scaling_history (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    policy_id  uuid NOT NULL REFERENCES scaling_policies (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    direction  text NOT NULL CHECK (direction IN ('up', 'down')),
    previous_agents int NOT NULL,
    desired_agents  int NOT NULL,
    reason     text NOT NULL,
    data       jsonb NOT NULL
);
CREATE INDEX scaling_history_policy ON scaling_history (policy_id, id DESC);

ALTER TABLE scaling_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE scaling_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scaling_policies FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON scaling_policies FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON scaling_policies TO orch_app;

ALTER TABLE scaling_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE scaling_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON scaling_history FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON scaling_history FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON scaling_history TO orch_app;

-- The API's views (the same bodies are in sql/functions/98_scaling.sql, which the grants
-- need to exist first).
DROP VIEW IF EXISTS scaling_policy_view;
CREATE VIEW scaling_policy_view WITH (security_invoker = true) AS
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
    'created_at', p.created_at, 'updated_at', p.updated_at) AS doc
  FROM scaling_policies p;
GRANT SELECT ON scaling_policy_view TO orch_app;

DROP VIEW IF EXISTS scaling_history_view;
CREATE VIEW scaling_history_view WITH (security_invoker = true) AS
SELECT h.id, h.tenant_id, h.policy_id, json_build_object(
    'id', h.id, 'policy_id', h.policy_id, 'created_at', h.created_at,
    'type', 'scale.' || h.direction, 'previous_agents', h.previous_agents,
    'desired_agents', h.desired_agents, 'reason', h.reason, 'inputs', h.data) AS doc
  FROM scaling_history h;
GRANT SELECT ON scaling_history_view TO orch_app;
