-- 0012_wait: the API side of scheduling: the tenant's weight and the queue's concurrency
-- limit in their documents, "why is my job waiting?" (GET /api/v1/jobs/{id}) and the
-- autoscaling signals (GET /api/v1/scaling/signals). docs/api.md describes both answers.
--
-- Both answers count agents the tenant cannot see: a pool agent belongs to the platform,
-- so row-level security hides it from the tenant's scope. The functions below are plain
-- (no SECURITY DEFINER: they widen nothing by themselves); they take the tenant as a
-- parameter and orchd calls them in the system scope (the orch_system role), and only
-- after a read in the tenant's own scope has proven that the job asked about is the
-- caller's. What they return about pool agents is counts; about other tenants, nothing
-- but the slots their jobs hold on the shared agents.
--
-- The rules are the placement engine's (server/placement.c, docs/scheduling.md): an agent
-- counts when it is online with a heartbeat within the online window and its credential
-- is not revoked; a requirement whose value is a string must equal the agent's label of
-- that name (its labels plus os and arch); min_free_memory_mb and min_free_disk_mb are
-- integers that must not exceed the agent's last reported free memory or disk in MiB (an
-- agent that has reported none fails them); within a tenant, jobs are placed by the
-- aging key created_at - priority * dispatch.aging, smallest first.

-- A tenant's queued jobs: the signals count them per queue, and a job's position is
-- counted over them, both from the index alone (its aging key's columns are included).
CREATE INDEX jobs_queued_tenant ON jobs (tenant_id, queue_id, not_before)
    INCLUDE (priority, created_at, id) WHERE status = 'queued';

-- Whether every requirement of req holds (an empty req holds everywhere) on an agent with
-- labels lab (os and arch merged in) and last reported free memory and disk mem, disk
-- (NULL: not reported, which fails a minimum): the labels by containment, the two
-- minimums in MiB. The rule of the placement engine (server/placement.c, agent_capable()),
-- as sql/0011_placement.sql's agent_meets() writes it. One expression without a subquery,
-- so that the planner inlines it: the signals match every requirement set against every
-- agent, and a call per pair cost ~20 us, 1 s for 20 sets and 1,250 agents.
CREATE FUNCTION requirements_hold(req jsonb, lab jsonb, mem bigint, disk bigint)
    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lab @> (req - ARRAY['min_free_memory_mb', 'min_free_disk_mb'])
       AND (NOT req ? 'min_free_memory_mb'
            OR (jsonb_typeof(req -> 'min_free_memory_mb') = 'number'
                AND coalesce(mem >= (req ->> 'min_free_memory_mb')::numeric * 1048576, false)))
       AND (NOT req ? 'min_free_disk_mb'
            OR (jsonb_typeof(req -> 'min_free_disk_mb') = 'number'
                AND coalesce(disk >= (req ->> 'min_free_disk_mb')::numeric * 1048576, false)))
$$;

-- Whether the one requirement k = wanted holds (for "which requirement fails where").
CREATE FUNCTION requirement_holds(k text, wanted jsonb, lab jsonb, mem bigint, disk bigint)
    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT requirements_hold(jsonb_build_object(k, wanted), lab, mem, disk)
$$;

-- Every agent that may be given a job now: online with a heartbeat within online_s, its
-- credential not revoked; in_use counts the jobs it holds, of every tenant (a pool
-- agent's slots are shared), in one pass over the active jobs' partial index.
CREATE FUNCTION online_agents(online_s int)
    RETURNS TABLE (agent_id uuid, tenant_id uuid, pool_id uuid, slots int, in_use int,
                   lab jsonb, mem bigint, disk bigint)
    LANGUAGE sql STABLE AS $$
    SELECT a.id, a.tenant_id, a.pool_id, a.slots, coalesce(r.n, 0)::int,
           a.labels || jsonb_build_object('os', a.os, 'arch', a.arch),
           a.memory_free_bytes, a.disk_free_bytes
      FROM agents a
      LEFT JOIN (SELECT j.agent_id, count(*) AS n FROM jobs j
                  WHERE j.status IN ('assigned', 'running') GROUP BY j.agent_id) r
             ON r.agent_id = a.id
     WHERE a.status = 'online' AND a.credential_revoked_at IS NULL
       AND a.last_heartbeat_at > now() - make_interval(secs => online_s)
$$;

-- The pools whose agents serve tenant tid: its tier is in the pool's tiers, or its id in
-- the pool's tenants.
CREATE FUNCTION admitting_pools(tid uuid) RETURNS SETOF uuid LANGUAGE sql STABLE AS $$
    SELECT p.id FROM pools p JOIN tenants t ON t.id = tid
     WHERE t.tier = ANY (p.tiers) OR tid = ANY (p.tenants)
$$;

-- The online agents that may run tenant tid's jobs: its own (outside pools) and those of
-- the pools that admit it. Needs the system scope to see pool agents. scaling_signals()
-- applies the same rule to many tenants at once.
CREATE FUNCTION serving_agents(tid uuid, online_s int)
    RETURNS TABLE (agent_id uuid, pooled boolean, slots int, in_use int, lab jsonb, mem bigint,
                   disk bigint)
    LANGUAGE sql STABLE AS $$
    SELECT o.agent_id, o.pool_id IS NOT NULL, o.slots, o.in_use, o.lab, o.mem, o.disk
      FROM online_agents(online_s) o
     WHERE (o.tenant_id = tid AND o.pool_id IS NULL)
        OR o.pool_id IN (SELECT admitting_pools(tid))
$$;

-- Why job jid of tenant tid is still queued: NULL when it is not (any more) a queued job
-- of that tenant, else the `waiting` object of docs/api.md. The reasons that hold are
-- listed in this precedence, and the first is the reason:
--   queue_paused       its queue is paused (nothing else matters until it is resumed)
--   no_matching_agent  no agent that serves the tenant satisfies its requirements
--   not_before         a retry's backoff has not run out
--   queue_limit        its queue has max_running jobs assigned or running
--   tenant_quota       the tenant has its max_concurrent_jobs assigned or running
--   agents_busy        every matching agent's slots are in use
--   behind_higher_priority  the tenant's eligible jobs before it in dispatch order take
--                      every place free now (min of quota room, queue room, free slots)
--   ready              nothing holds it: the next dispatch round places it
-- Hard holds come first (they outlast any capacity), then time, then capacity.
CREATE FUNCTION job_wait(tid uuid, jid uuid, online_s int, aging_ms int) RETURNS json
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    j record;
    q_name text;
    q_paused boolean := false;
    q_max int;
    q_running bigint := 0;
    quota bigint;
    t_running bigint;
    considered bigint;
    matching bigint;
    slots bigint;
    in_use bigint;
    free bigint;
    failing json;
    worst text;
    pos bigint;
    room bigint;
    why text[] := '{}';
    detail text;
    age interval := make_interval(secs => aging_ms / 1000.0);
BEGIN
    SELECT * INTO j FROM jobs WHERE id = jid AND tenant_id = tid AND status = 'queued';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF j.queue_id IS NOT NULL THEN
        SELECT name, paused, max_running INTO q_name, q_paused, q_max
          FROM queues WHERE id = j.queue_id;
        SELECT count(*) INTO q_running FROM jobs x
         WHERE x.queue_id = j.queue_id AND x.status IN ('assigned', 'running');
    END IF;
    SELECT max_concurrent_jobs INTO quota FROM tenant_quotas WHERE tenant_id = tid;
    SELECT count(*) INTO t_running FROM jobs x
     WHERE x.tenant_id = tid AND x.status IN ('assigned', 'running');

    WITH sa AS MATERIALIZED (SELECT * FROM serving_agents(tid, online_s)),
         m AS (SELECT sa.slots, sa.in_use FROM sa
                WHERE requirements_hold(j.requirements, sa.lab, sa.mem, sa.disk)),
         f AS (SELECT r.key, r.value,
                      (SELECT count(*) FROM sa
                        WHERE NOT requirement_holds(r.key, r.value, sa.lab, sa.mem, sa.disk)) AS n
                 FROM jsonb_each(j.requirements) r)
    SELECT (SELECT count(*) FROM sa), (SELECT count(*) FROM m),
           (SELECT coalesce(sum(m.slots), 0) FROM m),
           (SELECT coalesce(sum(least(m.in_use, m.slots)), 0) FROM m),
           (SELECT coalesce(sum(greatest(m.slots - m.in_use, 0)), 0) FROM m),
           (SELECT coalesce(json_agg(json_build_object('key', f.key, 'wanted', f.value,
                                                       'agents_failing', f.n)
                                     ORDER BY f.n DESC, f.key), '[]')
              FROM f WHERE f.n > 0),
           (SELECT format('%s=%s fails on %s of %s agents', f.key, f.value #>> '{}', f.n,
                          (SELECT count(*) FROM sa))
              FROM f WHERE f.n > 0 ORDER BY f.n DESC, f.key LIMIT 1)
      INTO considered, matching, slots, in_use, free, failing, worst;

    SELECT count(*) INTO pos
      FROM jobs x LEFT JOIN queues xq ON xq.id = x.queue_id
     WHERE x.tenant_id = tid AND x.status = 'queued' AND x.not_before <= now()
       AND NOT coalesce(xq.paused, false)
       AND (x.created_at - x.priority * age, x.id) < (j.created_at - j.priority * age, j.id);

    IF q_paused THEN
        why := array_append(why, 'queue_paused');
    END IF;
    IF matching = 0 THEN
        why := array_append(why, 'no_matching_agent');
    END IF;
    IF j.not_before > now() THEN
        why := array_append(why, 'not_before');
    END IF;
    IF q_max IS NOT NULL AND q_running >= q_max THEN
        why := array_append(why, 'queue_limit');
    END IF;
    IF t_running >= quota THEN
        why := array_append(why, 'tenant_quota');
    END IF;
    IF matching > 0 AND free = 0 THEN
        why := array_append(why, 'agents_busy');
    END IF;
    room := least(greatest(quota - t_running, 0), free,
                  CASE WHEN q_max IS NULL THEN free ELSE greatest(q_max - q_running, 0) END);
    IF cardinality(why) = 0 AND pos >= room THEN
        why := array_append(why, 'behind_higher_priority');
    END IF;

    detail := CASE coalesce(why[1], 'ready')
        WHEN 'queue_paused' THEN
            format('the queue %s is paused; its jobs wait until it is resumed', q_name)
        WHEN 'no_matching_agent' THEN
            CASE WHEN considered = 0
                 THEN 'no online agent serves this tenant (none of its own, and no shared '
                      'pool that admits it)'
                 ELSE format('no online agent satisfies every requirement: %s', worst) END
        WHEN 'not_before' THEN
            format('the job is retried after a backoff, not before %s',
                   to_char(j.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
        WHEN 'queue_limit' THEN
            format('the queue %s has %s of at most %s jobs running', q_name, q_running, q_max)
        WHEN 'tenant_quota' THEN
            format('the tenant has %s of its %s concurrent jobs running', t_running, quota)
        WHEN 'agents_busy' THEN
            format('all %s matching agents are busy (%s of %s slots in use)', matching, in_use,
                   slots)
        WHEN 'behind_higher_priority' THEN
            format('%s of the tenant''s jobs come before it in dispatch order (priority, then '
                   'age) for %s free place(s)', pos, room)
        ELSE 'nothing holds the job back: the next dispatch round places it'
    END;

    RETURN json_build_object(
        'reason', coalesce(why[1], 'ready'), 'detail', detail, 'blocked_by', to_json(why),
        'position', pos,
        'not_before', CASE WHEN j.not_before > now() THEN j.not_before END,
        'agents_considered', considered, 'agents_matching', matching,
        'slots', slots, 'slots_in_use', in_use, 'requirements', failing,
        'tenant', json_build_object('running', t_running, 'quota', quota),
        'queue', CASE WHEN j.queue_id IS NOT NULL THEN
                     json_build_object('id', j.queue_id, 'name', q_name, 'paused', q_paused,
                                       'running', q_running, 'max_running', q_max) END);
END
$$;

-- The autoscaling signals of tenant tid (NULL: every tenant), for an external autoscaler
-- (docs/api.md, "Autoscaling signals"): per queue, jobs queued (eligible now), delayed (a
-- retry's not_before ahead), running (assigned or running); per distinct requirement set
-- of the eligible jobs outside paused queues (at most max_sets per tenant, most waiting
-- first), how many wait, how long the oldest has, and the agents that match with their
-- free slots. Each count is one GROUP BY over a partial index (jobs_queued_tenant,
-- jobs_active_tenant); the agents are matched once per requirement set.
CREATE FUNCTION scaling_signals(tid uuid, online_s int, max_sets int) RETURNS json
    LANGUAGE sql STABLE AS $$
-- (The jobs are filtered by a join with ten, not by "tid IS NULL OR tenant_id = tid":
-- the function's plan is generic, and that test would make every scan a full one.)
WITH ten AS MATERIALIZED (SELECT tq.tenant_id, tq.max_concurrent_jobs FROM tenant_quotas tq
                           WHERE tid IS NULL OR tq.tenant_id = tid),
waiting AS (SELECT j.tenant_id, j.queue_id,
                   count(*) FILTER (WHERE j.not_before <= now()) AS queued,
                   count(*) FILTER (WHERE j.not_before > now()) AS delayed
              FROM jobs j WHERE j.status = 'queued' AND j.tenant_id IN (SELECT ten.tenant_id FROM ten)
             GROUP BY j.tenant_id, j.queue_id),
active AS (SELECT j.tenant_id, j.queue_id, count(*) AS running
             FROM jobs j WHERE j.status IN ('assigned', 'running')
              AND j.tenant_id IN (SELECT ten.tenant_id FROM ten)
            GROUP BY j.tenant_id, j.queue_id),
sets AS (SELECT j.tenant_id, j.requirements, count(*) AS waiting, min(j.not_before) AS since,
                row_number() OVER (PARTITION BY j.tenant_id
                                   ORDER BY count(*) DESC, min(j.not_before)) AS rank
           FROM jobs j LEFT JOIN queues q ON q.id = j.queue_id
          WHERE j.status = 'queued' AND j.not_before <= now() AND NOT coalesce(q.paused, false)
            AND j.tenant_id IN (SELECT ten.tenant_id FROM ten)
          GROUP BY j.tenant_id, j.requirements),
-- The agents once, and each tenant's admitting pools: serving_agents() per tenant would
-- count the shared pools' agents' jobs again for every tenant.
ag AS MATERIALIZED (SELECT * FROM online_agents(online_s) o
                     WHERE o.tenant_id IN (SELECT ten.tenant_id FROM ten) OR o.pool_id IS NOT NULL),
adm AS MATERIALIZED (SELECT t.tenant_id, p.pool_id FROM ten t
                      CROSS JOIN LATERAL admitting_pools(t.tenant_id) AS p(pool_id))
SELECT json_build_object('generated_at', now(), 'tenants', coalesce(json_agg(json_build_object(
    'tenant_id', t.tenant_id,
    'running', (SELECT coalesce(sum(a.running), 0) FROM active a WHERE a.tenant_id = t.tenant_id),
    'quota', t.max_concurrent_jobs,
    'queued', (SELECT coalesce(sum(w.queued), 0) FROM waiting w WHERE w.tenant_id = t.tenant_id),
    'delayed', (SELECT coalesce(sum(w.delayed), 0) FROM waiting w WHERE w.tenant_id = t.tenant_id),
    'queues', (SELECT coalesce(json_agg(json_build_object(
                   'queue_id', q.id, 'name', q.name, 'queued', coalesce(w.queued, 0),
                   'delayed', coalesce(w.delayed, 0), 'running', coalesce(a.running, 0),
                   'paused', q.paused, 'max_running', q.max_running) ORDER BY q.name), '[]')
                 FROM queues q
                 LEFT JOIN waiting w ON w.tenant_id = q.tenant_id AND w.queue_id = q.id
                 LEFT JOIN active a ON a.tenant_id = q.tenant_id AND a.queue_id = q.id
                WHERE q.tenant_id = t.tenant_id),
    'no_queue', json_build_object(
        'queued', (SELECT coalesce(sum(w.queued), 0) FROM waiting w
                    WHERE w.tenant_id = t.tenant_id AND w.queue_id IS NULL),
        'delayed', (SELECT coalesce(sum(w.delayed), 0) FROM waiting w
                     WHERE w.tenant_id = t.tenant_id AND w.queue_id IS NULL),
        'running', (SELECT coalesce(sum(a.running), 0) FROM active a
                     WHERE a.tenant_id = t.tenant_id AND a.queue_id IS NULL)),
    'requirement_sets', (SELECT coalesce(json_agg(json_build_object(
                             'requirements', s.requirements, 'waiting', s.waiting,
                             'oldest_wait_s', greatest(floor(extract(epoch FROM now() - s.since)), 0)::bigint,
                             'agents_matching', m.n, 'free_slots', m.free) ORDER BY s.rank), '[]')
                           FROM sets s
                           CROSS JOIN LATERAL (
                               SELECT count(*) AS n,
                                      coalesce(sum(greatest(ag.slots - ag.in_use, 0)), 0) AS free
                                 FROM ag
                                WHERE ((ag.tenant_id = t.tenant_id AND ag.pool_id IS NULL)
                                       OR ag.pool_id IN (SELECT adm.pool_id FROM adm
                                                          WHERE adm.tenant_id = t.tenant_id))
                                  AND requirements_hold(s.requirements, ag.lab, ag.mem, ag.disk)) m
                          WHERE s.tenant_id = t.tenant_id AND s.rank <= max_sets),
    'requirement_sets_truncated', (SELECT count(*) > max_sets FROM sets s
                                    WHERE s.tenant_id = t.tenant_id)
  ) ORDER BY t.tenant_id), '[]'))
  FROM ten t
$$;

GRANT EXECUTE ON FUNCTION requirement_holds(text, jsonb, jsonb, bigint, bigint),
    requirements_hold(jsonb, jsonb, bigint, bigint), online_agents(int), admitting_pools(uuid),
    serving_agents(uuid, int),
    job_wait(uuid, uuid, int, int), scaling_signals(uuid, int, int) TO orch_app;
