-- 0006_rotation: agent credential rotation with a grace period. Rotating moves the current
-- credential here for a short while (server/api-agents.c), so that an agent that lost the
-- rotation's answer, or whose other connections still hold the old credential, is not
-- locked out. Revoking the credential clears it.
ALTER TABLE agents ADD COLUMN prev_credential_prefix text UNIQUE
    CHECK (length(prev_credential_prefix) BETWEEN 8 AND 64);
ALTER TABLE agents ADD COLUMN prev_credential_hash bytea
    CHECK (length(prev_credential_hash) = 32);
ALTER TABLE agents ADD COLUMN prev_credential_valid_until timestamptz;
