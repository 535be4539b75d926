-- 0003_agents: enrolment and agent credentials.

-- Enrolment tokens and agent credentials are found by their public prefix, like API keys
-- (server/auth-keys.h), and their SHA-256 compared in constant time.
ALTER TABLE enrollment_tokens ADD COLUMN prefix text UNIQUE CHECK (length(prefix) BETWEEN 8 AND 64);
ALTER TABLE agents ADD COLUMN credential_prefix text UNIQUE
    CHECK (length(credential_prefix) BETWEEN 8 AND 64);
ALTER TABLE agents ADD COLUMN credential_revoked_at timestamptz;
ALTER TABLE agents ADD COLUMN enrolled_with uuid;

CREATE VIEW agent_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'tenant_id', tenant_id, 'name', name, 'hostname', hostname, 'os', os, 'arch', arch,
    'version', version, 'labels', labels, 'capabilities', capabilities, 'slots', slots,
    'status', status, 'connected', gateway_node IS NOT NULL,
    'last_heartbeat_at', last_heartbeat_at,
    'credential_expires_at', credential_expires_at,
    'credential_revoked', credential_revoked_at IS NOT NULL,
    'created_at', created_at, 'updated_at', updated_at) AS doc
  FROM agents;

CREATE VIEW enrollment_token_view WITH (security_invoker = true) AS
SELECT id, tenant_id, json_build_object(
    'id', id, 'name', name, 'prefix', prefix, 'labels', labels, 'max_uses', max_uses,
    'uses', uses, 'expires_at', expires_at, 'revoked_at', revoked_at,
    'created_by', created_by, 'created_at', created_at) AS doc
  FROM enrollment_tokens;

GRANT SELECT ON agent_view, enrollment_token_view TO orch_app;
