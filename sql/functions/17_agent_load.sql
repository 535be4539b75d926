-- Whether a host figure an agent reported moved far enough from the stored one to be
-- written: a sixteenth of the free memory or disk, ten points of CPU. Placement matches
-- requirements against these figures, and an idle agent's unchanged ones are not worth a
-- row write per heartbeat (server/api-agentproto.c writes them with an agent's first
-- heartbeat on a node, server/gw-liveness.c with its batched liveness). A figure not
-- reported (NULL) never moved; one reported where none is stored always did.

CREATE OR REPLACE FUNCTION agent_bytes_moved(stored bigint, reported bigint)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT reported IS NOT NULL AND (stored IS NULL OR abs(stored - reported) * 16 > stored)
$$;

CREATE OR REPLACE FUNCTION agent_cpu_moved(stored real, reported real)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT reported IS NOT NULL AND (stored IS NULL OR abs(stored - reported) >= 10)
$$;
