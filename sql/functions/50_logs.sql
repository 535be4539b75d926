-- 50_logs: Job logs: appending an agent's chunks and expiring old ones.
-- Re-applied by `orchd migrate` on every run (see README.md): CREATE OR REPLACE only.

-- job_log_append: from 0009_job_logs.sql.
-- Store a chunk of stream strm of attempt (jid, ep), reported by agent at byte offset
-- off, in the caller's tenant scope. The caller has checked that off + length(chunk)
-- does not overflow. code says what happened:
--   ok        stored, or a retransmission identical to what is stored (next_offset is
--             off + length(chunk), as the first answer said)
--   missing   no such job (for this agent)  stale     not this agent's current attempt
--   gap       off is past the stream's end (next_offset: the end)
--   conflict  off is before the end and the bytes differ from those stored
-- first_offset is where the stored bytes of the stream now begin: the bytes before it
-- were dropped to keep the job within its tenant's max_job_log_bytes (oldest chunks
-- first, older attempts before newer ones), or by retention.
CREATE OR REPLACE FUNCTION job_log_append(jid uuid, ep bigint, agent uuid, strm text, off bigint,
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
    tick boolean;
BEGIN
    SELECT j.tenant_id INTO tid FROM jobs j
     WHERE j.id = jid AND j.epoch = ep AND j.agent_id = agent
       AND j.status IN ('assigned', 'running');
    IF NOT FOUND THEN
        -- 'stale' only for a job this agent held once: a pool agent, in the system scope,
        -- must not learn whether another tenant's job id exists.
        code := CASE WHEN EXISTS (SELECT 1 FROM job_attempts a
                                   WHERE a.job_id = jid AND a.agent_id = agent)
                     THEN 'stale' ELSE 'missing' END;
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
    -- The console's live log (97_events.sql): the stream's new end, at most once per
    -- 250 ms per stream (the first chunk of each interval; the row is locked above, so
    -- appends to one stream decide in turn). A NOTIFY serialises the commits of the
    -- transactions that send one: a chatty job must not send one per chunk. The page reads
    -- once more after each event, for what came later in its interval.
    tick := n > 0 AND (s.notified_at IS NULL
                       OR clock_timestamp() - s.notified_at >= interval '250 milliseconds');
    UPDATE job_log_streams ls
       SET end_offset = off + skip + n, stored_bytes = ls.stored_bytes + n,
           first_offset = CASE WHEN ls.stored_bytes = 0 THEN off + skip ELSE ls.first_offset END,
           updated_at = now(),
           notified_at = CASE WHEN tick THEN clock_timestamp() ELSE ls.notified_at END
     WHERE ls.job_id = jid AND ls.epoch = ep AND ls.stream = strm
    RETURNING ls.first_offset INTO first_offset;
    IF tick THEN
        PERFORM events_notify(tid, 'job.output',
                              jsonb_build_object('job_id', jid, 'epoch', ep, 'stream', strm,
                                                 'end_offset', off + skip + n));
    END IF;
    code := 'ok';
    next_offset := off + skip + n;
    RETURN NEXT;
END
$$;

-- job_logs_expire: from 0009_job_logs.sql.
-- Retention: delete the stored output of jobs that finished more than max_age_s ago, at
-- most max_rows chunks per call (oldest streams first), in the system scope. Their
-- streams keep their row, with nothing stored: readers see the bytes as dropped.
-- Returns the number of chunks deleted.
CREATE OR REPLACE FUNCTION job_logs_expire(max_age_s bigint, max_rows int) RETURNS int
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
