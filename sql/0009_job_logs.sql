-- 0009_job_logs: job output that is bounded, contiguous, counted and expires.
--
-- Before this version a job could store any amount of output (one stored 34 MiB in
-- 1.3 s), chunks were keyed by their offset only (offset 0 "AAAA" then offset 2 "BBBB"
-- were both kept and read back as 8 bytes), output was not counted in the tenant's
-- storage, and nothing ever deleted it.
--
-- Now each stream of an attempt has a row in job_log_streams that says where it ends
-- (end_offset), where the bytes still stored begin (first_offset: everything before it
-- was dropped, by the job's log limit or by retention) and how many bytes are stored.
-- job_log_append() is the one place a chunk is stored: a chunk must start at the
-- stream's end; a retransmission of bytes already stored is accepted when identical;
-- over the job's limit the oldest chunks are dropped (the tail is kept).

-- The per-job limit: a tier default, overridable per tenant like the quotas
-- (NULL = the tier's).
ALTER TABLE tier_defaults
    ADD COLUMN max_job_log_bytes bigint NOT NULL DEFAULT 64::bigint << 20
        CHECK (max_job_log_bytes >= 0);
ALTER TABLE tenants ADD COLUMN max_job_log_bytes bigint CHECK (max_job_log_bytes >= 0);

CREATE OR REPLACE VIEW tenant_quotas WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, t.tier,
       coalesce(t.max_agents, d.max_agents) AS max_agents,
       coalesce(t.max_concurrent_jobs, d.max_concurrent_jobs) AS max_concurrent_jobs,
       coalesce(t.max_schedules, d.max_schedules) AS max_schedules,
       coalesce(t.max_queues, d.max_queues) AS max_queues,
       coalesce(t.max_storage_bytes, d.max_storage_bytes) AS max_storage_bytes,
       coalesce(t.max_api_calls_day, d.max_api_calls_day) AS max_api_calls_day,
       d.weight,
       coalesce(t.max_job_log_bytes, d.max_job_log_bytes) AS max_job_log_bytes
  FROM tenants t JOIN tier_defaults d ON d.tier = t.tier;

CREATE TABLE job_log_streams (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_id       uuid NOT NULL,
    epoch        bigint NOT NULL,
    stream       text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    end_offset   bigint NOT NULL DEFAULT 0 CHECK (end_offset >= 0),
    first_offset bigint NOT NULL DEFAULT 0 CHECK (first_offset BETWEEN 0 AND end_offset),
    stored_bytes bigint NOT NULL DEFAULT 0 CHECK (stored_bytes >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, epoch, stream),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, id) ON DELETE CASCADE
);
-- A tenant's stored output (its storage usage), and retention's oldest-first scan.
CREATE INDEX job_log_streams_tenant ON job_log_streams (tenant_id) INCLUDE (stored_bytes)
    WHERE stored_bytes > 0;
CREATE INDEX job_log_streams_expiry ON job_log_streams (updated_at) WHERE stored_bytes > 0;

ALTER TABLE job_log_streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_log_streams FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_log_streams FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON job_log_streams FOR ALL USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON job_log_streams TO orch_app;

-- The streams of output stored so far. The migration runs as the owner, whom FORCE ROW
-- LEVEL SECURITY binds too: lift it for the copy, inside this transaction only.
ALTER TABLE job_logs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE job_log_streams NO FORCE ROW LEVEL SECURITY;
INSERT INTO job_log_streams (tenant_id, job_id, epoch, stream, end_offset, first_offset,
                             stored_bytes, updated_at)
SELECT tenant_id, job_id, epoch, stream, max("offset" + length(data)), min("offset"),
       sum(length(data)), max(created_at)
  FROM job_logs GROUP BY tenant_id, job_id, epoch, stream;
ALTER TABLE job_logs FORCE ROW LEVEL SECURITY;
ALTER TABLE job_log_streams FORCE ROW LEVEL SECURITY;

-- Store a chunk of stream strm of attempt (jid, ep), reported by agent at byte offset
-- off, in the caller's tenant scope. The caller has checked that off + length(chunk)
-- does not overflow. code says what happened:
--   ok        stored, or a retransmission identical to what is stored (next_offset is
--             off + length(chunk), as the first answer said)
--   missing   no such job                 stale     not this agent's current attempt
--   gap       off is past the stream's end (next_offset: the end)
--   conflict  off is before the end and the bytes differ from those stored
-- first_offset is where the stored bytes of the stream now begin: the bytes before it
-- were dropped to keep the job within its tenant's max_job_log_bytes (oldest chunks
-- first, older attempts before newer ones), or by retention.
CREATE FUNCTION job_log_append(jid uuid, ep bigint, agent uuid, strm text, off bigint,
                               chunk bytea)
    RETURNS TABLE (code text, next_offset bigint, first_offset bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    tid uuid;
    s record;
    lim bigint;
    n bigint := length(chunk);
    cmp_from bigint;
    cmp_to bigint;
    stored bytea;
    skip bigint;
    total bigint;
    need bigint;
BEGIN
    SELECT j.tenant_id INTO tid FROM jobs j
     WHERE j.id = jid AND j.epoch = ep AND j.agent_id = agent
       AND j.status IN ('assigned', 'running');
    IF NOT FOUND THEN
        code := CASE WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.id = jid) THEN 'stale'
                     ELSE 'missing' END;
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO job_log_streams AS ls (tenant_id, job_id, epoch, stream)
    VALUES (tid, jid, ep, strm) ON CONFLICT DO NOTHING;
    SELECT * INTO s FROM job_log_streams ls
     WHERE ls.job_id = jid AND ls.epoch = ep AND ls.stream = strm FOR UPDATE;
    IF off > s.end_offset THEN
        code := 'gap';
        next_offset := s.end_offset;
        first_offset := s.first_offset;
        RETURN NEXT;
        RETURN;
    END IF;
    -- Bytes already stored: those that are still kept must be the same.
    cmp_from := greatest(off, s.first_offset);
    cmp_to := least(off + n, s.end_offset);
    IF cmp_from < cmp_to THEN
        SELECT substring(string_agg(l.data, ''::bytea ORDER BY l."offset")
                         FROM (cmp_from - min(l."offset") + 1)::int FOR (cmp_to - cmp_from)::int)
          INTO stored FROM job_logs l
         WHERE l.job_id = jid AND l.epoch = ep AND l.stream = strm
           AND l."offset" < cmp_to AND l."offset" + length(l.data) > cmp_from;
        IF stored IS DISTINCT FROM substring(chunk FROM (cmp_from - off + 1)::int
                                                  FOR (cmp_to - cmp_from)::int) THEN
            code := 'conflict';
            next_offset := s.end_offset;
            first_offset := s.first_offset;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF off + n <= s.end_offset THEN
        code := 'ok';
        next_offset := off + n;
        first_offset := s.first_offset;
        RETURN NEXT;
        RETURN;
    END IF;
    -- What is new starts at the stream's end.
    chunk := substring(chunk FROM (s.end_offset - off + 1)::int);
    off := s.end_offset;
    n := length(chunk);
    SELECT q.max_job_log_bytes INTO lim FROM tenant_quotas q WHERE q.tenant_id = tid;
    -- A chunk larger than the whole limit keeps its tail only.
    skip := greatest(n - coalesce(lim, n), 0);
    chunk := substring(chunk FROM (skip + 1)::int);
    n := n - skip;
    SELECT coalesce(sum(ls.stored_bytes), 0) INTO total FROM job_log_streams ls
     WHERE ls.job_id = jid;
    need := total + n - coalesce(lim, total + n);
    IF need > 0 THEN
        WITH c AS (
            SELECT l.epoch, l.stream, l."offset", length(l.data) AS len,
                   sum(length(l.data)) OVER (ORDER BY l.epoch, l.created_at, l."offset", l.stream
                                             ROWS UNBOUNDED PRECEDING) AS run
              FROM job_logs l WHERE l.job_id = jid),
        d AS (
            DELETE FROM job_logs l USING c
             WHERE l.job_id = jid AND l.epoch = c.epoch AND l.stream = c.stream
               AND l."offset" = c."offset" AND c.run - c.len < need
            RETURNING l.epoch, l.stream, l."offset" + length(l.data) AS chunk_end,
                      length(l.data) AS len)
        UPDATE job_log_streams ls
           SET stored_bytes = ls.stored_bytes - x.len,
               first_offset = CASE WHEN ls.stored_bytes = x.len THEN ls.end_offset
                                   ELSE greatest(ls.first_offset, x.last_end) END
          FROM (SELECT d.epoch, d.stream, sum(d.len) AS len, max(d.chunk_end) AS last_end
                  FROM d GROUP BY d.epoch, d.stream) x
         WHERE ls.job_id = jid AND ls.epoch = x.epoch AND ls.stream = x.stream;
        SELECT * INTO s FROM job_log_streams ls
         WHERE ls.job_id = jid AND ls.epoch = ep AND ls.stream = strm;
    END IF;
    IF n > 0 THEN
        INSERT INTO job_logs (tenant_id, job_id, epoch, stream, "offset", data)
        VALUES (tid, jid, ep, strm, off + skip, chunk);
    END IF;
    UPDATE job_log_streams ls
       SET end_offset = off + skip + n, stored_bytes = ls.stored_bytes + n,
           first_offset = CASE WHEN ls.stored_bytes = 0 THEN off + skip ELSE ls.first_offset END,
           updated_at = now()
     WHERE ls.job_id = jid AND ls.epoch = ep AND ls.stream = strm
    RETURNING ls.first_offset INTO first_offset;
    code := 'ok';
    next_offset := off + skip + n;
    RETURN NEXT;
END
$$;

-- Retention: delete the stored output of jobs that finished more than max_age_s ago, at
-- most max_rows chunks per call (oldest streams first), in the system scope. Their
-- streams keep their row, with nothing stored: readers see the bytes as dropped.
-- Returns the number of chunks deleted.
CREATE FUNCTION job_logs_expire(max_age_s bigint, max_rows int) RETURNS int
    LANGUAGE plpgsql AS $$
DECLARE
    s record;
    n int := 0;
    k int;
    b bigint;
    e bigint;
BEGIN
    FOR s IN
        SELECT ls.job_id, ls.epoch, ls.stream FROM job_log_streams ls JOIN jobs j ON j.id = ls.job_id
         WHERE ls.stored_bytes > 0
           AND ls.updated_at < now() - make_interval(secs => max_age_s)
           AND j.status IN ('succeeded', 'failed', 'cancelled', 'dead')
           AND j.finished_at < now() - make_interval(secs => max_age_s)
         ORDER BY ls.updated_at LIMIT max_rows
           FOR UPDATE OF ls SKIP LOCKED
    LOOP
        EXIT WHEN n >= max_rows;
        WITH d AS (
            DELETE FROM job_logs l
             WHERE l.job_id = s.job_id AND l.epoch = s.epoch AND l.stream = s.stream
               AND l."offset" IN (SELECT x."offset" FROM job_logs x
                                   WHERE x.job_id = s.job_id AND x.epoch = s.epoch
                                     AND x.stream = s.stream
                                   ORDER BY x."offset" LIMIT max_rows - n)
            RETURNING l."offset" + length(l.data) AS chunk_end, length(l.data) AS len)
        SELECT count(*), coalesce(sum(d.len), 0), max(d.chunk_end) INTO k, b, e FROM d;
        UPDATE job_log_streams ls
           SET stored_bytes = greatest(ls.stored_bytes - b, 0),
               first_offset = CASE WHEN ls.stored_bytes <= b THEN ls.end_offset
                                   ELSE greatest(ls.first_offset, least(e, ls.end_offset)) END
         WHERE ls.job_id = s.job_id AND ls.epoch = s.epoch AND ls.stream = s.stream;
        n := n + k;
    END LOOP;
    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION job_log_append(uuid, bigint, uuid, text, bigint, bytea),
    job_logs_expire(bigint, int) TO orch_app;

-- Storage: packages and job output.
CREATE OR REPLACE FUNCTION quota_acquire(resource text, amount bigint DEFAULT 1) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    lim bigint;
    used bigint;
BEGIN
    IF app_tenant() IS NULL THEN
        RAISE EXCEPTION 'quota_acquire needs a tenant in scope' USING ERRCODE = '42501';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(app_tenant()::text || '/' || resource, 0));
    SELECT CASE resource
               WHEN 'queues' THEN max_queues
               WHEN 'agents' THEN max_agents
               WHEN 'schedules' THEN max_schedules
               WHEN 'storage_bytes' THEN max_storage_bytes
           END
      INTO lim FROM tenant_quotas WHERE tenant_id = app_tenant();
    used := CASE resource
                WHEN 'queues' THEN (SELECT count(*) FROM queues)
                WHEN 'agents' THEN (SELECT count(*) FROM agents)
                WHEN 'schedules' THEN (SELECT count(*) FROM schedules)
                WHEN 'storage_bytes' THEN
                    (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs)
                    + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams
                        WHERE stored_bytes > 0)
            END;
    IF lim IS NULL OR used IS NULL THEN
        RAISE EXCEPTION 'unknown quota resource %', resource USING ERRCODE = '22023';
    END IF;
    IF used + amount > lim THEN
        RAISE EXCEPTION 'the tenant''s % quota is exhausted (% of %)', resource, used, lim
            USING ERRCODE = 'OQ001',
                  DETAIL = json_build_object('quota', resource, 'limit', lim, 'used', used,
                                             'requested', amount)::text;
    END IF;
END
$$;

CREATE OR REPLACE VIEW tenant_usage WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, json_build_object(
    'agents', (SELECT count(*) FROM agents a WHERE a.tenant_id = t.id),
    'concurrent_jobs', (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id
                          AND j.status IN ('assigned', 'running')),
    'schedules', (SELECT count(*) FROM schedules s WHERE s.tenant_id = t.id),
    'queues', (SELECT count(*) FROM queues q WHERE q.tenant_id = t.id),
    'storage_bytes', (SELECT coalesce(sum(size_bytes), 0) FROM package_blobs b
                       WHERE b.tenant_id = t.id)
                     + (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                         WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'job_log_bytes', (SELECT coalesce(sum(stored_bytes), 0) FROM job_log_streams ls
                       WHERE ls.tenant_id = t.id AND ls.stored_bytes > 0),
    'api_calls_today', coalesce((SELECT api_calls FROM usage_counters c WHERE c.tenant_id = t.id
                                   AND c.day = (now() AT TIME ZONE 'UTC')::date), 0)
  ) AS doc
  FROM tenants t;

CREATE OR REPLACE VIEW tenant_view WITH (security_invoker = true) AS
SELECT t.id, json_build_object(
    'id', t.id, 'slug', t.slug, 'display_name', t.display_name, 'tier', t.tier,
    'status', t.status,
    'quotas', json_build_object('agents', q.max_agents, 'concurrent_jobs', q.max_concurrent_jobs,
                                'schedules', q.max_schedules, 'queues', q.max_queues,
                                'storage_bytes', q.max_storage_bytes,
                                'api_calls_per_day', q.max_api_calls_day,
                                'job_log_bytes', q.max_job_log_bytes),
    'overrides', json_build_object('agents', t.max_agents, 'concurrent_jobs', t.max_concurrent_jobs,
                                   'schedules', t.max_schedules, 'queues', t.max_queues,
                                   'storage_bytes', t.max_storage_bytes,
                                   'api_calls_per_day', t.max_api_calls_day,
                                   'rate_per_second', t.rate_per_sec, 'rate_burst', t.rate_burst,
                                   'job_log_bytes', t.max_job_log_bytes),
    'rate_limit', json_build_object('per_second', coalesce(t.rate_per_sec, d.rate_per_sec),
                                    'burst', coalesce(t.rate_burst, d.rate_burst)),
    'usage', u.doc,
    'created_at', t.created_at, 'updated_at', t.updated_at) AS doc
  FROM tenants t
  JOIN tenant_quotas q ON q.tenant_id = t.id
  JOIN tier_defaults d ON d.tier = t.tier
  JOIN tenant_usage u ON u.tenant_id = t.id;
