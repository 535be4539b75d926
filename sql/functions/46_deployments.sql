-- 46_deployments: package deployments (0025_package_deployments.sql; docs/packages.md,
-- "Deploying a version to agents"). Re-applied by `orchd migrate` on every run.

-- deployment_agent_step: from 0025_package_deployments.sql.
-- One heartbeat's worth of deployment work for agent ag, in the agent's tenant scope:
-- 1. its reports (a JSON array of {"deployment_id", "state": "cached"|"failed", "reason"})
--    end its targets that are pending or fetching;
-- 2. a pending target whose digest the agent already lists in its cache is cached at once;
-- 3. a target left fetching by an agent silent for more than stale_s (gone offline
--    mid-fetch) goes back to pending, or to failed after its third attempt;
-- 4. pending targets of this agent are handed out while their deployment has fewer than
--    max_parallel fetching (the deployment's row is locked, so two agents heartbeating at
--    once never both take the last place);
-- and returns the targets this agent has fetching (new or not yet reported), which the
-- heartbeat's answer lists. An agent with nothing open costs one index probe.
CREATE OR REPLACE FUNCTION deployment_agent_step(ag uuid, reports jsonb, stale_s int)
    RETURNS TABLE (deployment_id uuid, package_id uuid, sha256 text, size_bytes bigint,
                   spread_ms int)
    LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    IF reports IS NOT NULL AND jsonb_array_length(reports) > 0 THEN
        UPDATE package_deployment_targets pt
           SET state = r.state, reason = left(r.reason, 512), finished_at = now(),
               updated_at = now()
          FROM jsonb_to_recordset(reports) AS r(deployment_id uuid, state text, reason text)
         WHERE pt.agent_id = ag AND pt.deployment_id = r.deployment_id
           AND r.state IN ('cached', 'failed') AND pt.state IN ('pending', 'fetching');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM package_deployment_targets pt
                    WHERE pt.agent_id = ag AND pt.state IN ('pending', 'fetching')) THEN
        RETURN;
    END IF;
    -- Held already: nothing to fetch.
    UPDATE package_deployment_targets pt
       SET state = 'cached', reason = 'already in the agent''s cache', started_at = now(),
           finished_at = now(), updated_at = now()
      FROM package_deployments d, packages p, agents a
     WHERE pt.agent_id = ag AND pt.state = 'pending' AND d.id = pt.deployment_id
       AND d.cancelled_at IS NULL AND p.id = d.package_id AND a.id = ag
       AND encode(p.sha256, 'hex') = ANY (a.cached_packages);
    -- This agent is alive: its fetches in progress are not stale.
    UPDATE package_deployment_targets pt SET updated_at = now()
     WHERE pt.agent_id = ag AND pt.state = 'fetching' AND pt.updated_at < now() - interval '2 s';
    FOR t IN SELECT pt.deployment_id AS did, d.max_parallel
               FROM package_deployment_targets pt
               JOIN package_deployments d ON d.id = pt.deployment_id
              WHERE pt.agent_id = ag AND pt.state = 'pending' AND d.cancelled_at IS NULL
              ORDER BY d.created_at, d.id
    LOOP
        PERFORM 1 FROM package_deployments d WHERE d.id = t.did FOR UPDATE;
        UPDATE package_deployment_targets pt
           SET state = CASE WHEN pt.attempts >= 3 THEN 'failed' ELSE 'pending' END,
               reason = CASE WHEN pt.attempts >= 3
                             THEN 'the agent went offline during each of 3 fetches' END,
               finished_at = CASE WHEN pt.attempts >= 3 THEN now() END, updated_at = now()
         WHERE pt.deployment_id = t.did AND pt.state = 'fetching'
           AND pt.updated_at < now() - make_interval(secs => stale_s);
        IF (SELECT count(*) FROM package_deployment_targets pt
             WHERE pt.deployment_id = t.did AND pt.state = 'fetching') < t.max_parallel THEN
            UPDATE package_deployment_targets pt
               SET state = 'fetching', started_at = now(), attempts = pt.attempts + 1,
                   reason = NULL, updated_at = now()
             WHERE pt.deployment_id = t.did AND pt.agent_id = ag AND pt.state = 'pending';
        END IF;
    END LOOP;
    RETURN QUERY
        SELECT pt.deployment_id, d.package_id, encode(p.sha256, 'hex'), p.size_bytes, d.spread_ms
          FROM package_deployment_targets pt
          JOIN package_deployments d ON d.id = pt.deployment_id
          JOIN packages p ON p.id = d.package_id
         WHERE pt.agent_id = ag AND pt.state = 'fetching'
         ORDER BY pt.started_at
         LIMIT 16;
END
$$;
