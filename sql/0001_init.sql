-- 0001_init: the first orch schema.
--
-- Applied by `orchd migrate` as the schema owner, inside one transaction, which records
-- the version in orch_schema_version. The server runs as the role orch_app: no
-- BYPASSRLS, not the owner of any table, and every tenant-owned table below forces
-- row-level security, so a transaction sees only the rows of the tenant it declared with
--     SELECT set_config('app.tenant_id', '<uuid>', true)
-- and nothing at all when it declared none. Work that spans tenants (the dispatcher,
-- the reaper, the operator API, the lookup of an API key before its tenant is known)
-- declares the system scope instead, with set_config('app.scope', 'system', true); the
-- store layer only does that from code paths named for it.

-- Scope helpers. They read transaction-local settings, so a pooled connection never
-- carries one request's tenant into the next. An empty or missing setting gives NULL,
-- which matches no row: the policies fail closed.
CREATE FUNCTION app_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION app_system() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.scope', true) = 'system', false) $$;

-- Tier defaults: the table in shared/DESIGN.md. Platform data, read by everyone.
CREATE TABLE tier_defaults (
    tier                text PRIMARY KEY CHECK (tier IN ('free', 'standard', 'professional', 'enterprise')),
    rank                int NOT NULL UNIQUE,
    max_agents          int NOT NULL CHECK (max_agents >= 0),
    max_concurrent_jobs int NOT NULL CHECK (max_concurrent_jobs >= 0),
    max_schedules       int NOT NULL CHECK (max_schedules >= 0),
    max_queues          int NOT NULL CHECK (max_queues >= 0),
    max_storage_bytes   bigint NOT NULL CHECK (max_storage_bytes >= 0),
    max_api_calls_day   int NOT NULL CHECK (max_api_calls_day >= 0),
    -- Fairness weight of the tier when tenants compete for shared agent capacity.
    weight              int NOT NULL CHECK (weight > 0)
);

INSERT INTO tier_defaults VALUES
    ('free',         0,   2,   5,   2,  2,   5::bigint << 30,   1000,  1),
    ('standard',     1,  10,  25,  10,  5,  20::bigint << 30,   5000,  2),
    ('professional', 2,  50, 100,  50, 20, 100::bigint << 30,  20000,  4),
    ('enterprise',   3, 250, 500, 100, 50, 500::bigint << 30, 100000,  8);

-- Tenants. A NULL override means "the tier's default" (see tenant_quotas below).
CREATE TABLE tenants (
    id                  uuid PRIMARY KEY,
    slug                text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    display_name        text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    tier                text NOT NULL REFERENCES tier_defaults (tier),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    max_agents          int CHECK (max_agents >= 0),
    max_concurrent_jobs int CHECK (max_concurrent_jobs >= 0),
    max_schedules       int CHECK (max_schedules >= 0),
    max_queues          int CHECK (max_queues >= 0),
    max_storage_bytes   bigint CHECK (max_storage_bytes >= 0),
    max_api_calls_day   int CHECK (max_api_calls_day >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Effective quotas of each visible tenant: override, else tier default.
CREATE VIEW tenant_quotas WITH (security_invoker = true) AS
SELECT t.id AS tenant_id, t.tier,
       coalesce(t.max_agents, d.max_agents) AS max_agents,
       coalesce(t.max_concurrent_jobs, d.max_concurrent_jobs) AS max_concurrent_jobs,
       coalesce(t.max_schedules, d.max_schedules) AS max_schedules,
       coalesce(t.max_queues, d.max_queues) AS max_queues,
       coalesce(t.max_storage_bytes, d.max_storage_bytes) AS max_storage_bytes,
       coalesce(t.max_api_calls_day, d.max_api_calls_day) AS max_api_calls_day,
       d.weight
  FROM tenants t JOIN tier_defaults d ON d.tier = t.tier;

-- Platform operators' bootstrap and API credentials (`orchd admin create-token`).
-- Only the secret's SHA-256 is stored.
CREATE TABLE operator_tokens (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    last_used_at timestamptz,
    revoked_at  timestamptz
);

-- Tenant API keys, exchanged for short-lived JWTs. `prefix` is the public, indexed part
-- of the key that lets the server find the row before it checks the secret's hash.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL UNIQUE CHECK (length(prefix) BETWEEN 8 AND 64),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    UNIQUE (tenant_id, name)
);

-- Agents. Labels are what the tenant stamps (k=v); capabilities are what the agent
-- discovers (os, arch, cpus, memory, interpreters...). The credential's hash is stored,
-- never the credential.
CREATE TABLE agents (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    hostname              text CHECK (length(hostname) <= 255),
    os                    text CHECK (length(os) <= 32),
    arch                  text CHECK (length(arch) <= 32),
    version               text CHECK (length(version) <= 64),
    labels                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    capabilities          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(capabilities) = 'object'),
    slots                 int NOT NULL DEFAULT 1 CHECK (slots BETWEEN 1 AND 1024),
    status                text NOT NULL DEFAULT 'offline'
                          CHECK (status IN ('online', 'offline', 'draining', 'disabled')),
    credential_hash       bytea CHECK (length(credential_hash) = 32),
    credential_expires_at timestamptz,
    gateway_node          text,
    last_heartbeat_at     timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX agents_credential_hash ON agents (credential_hash) WHERE credential_hash IS NOT NULL;

-- Enrolment tokens: one token may enrol up to max_uses agents before expires_at.
CREATE TABLE enrollment_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    labels      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    max_uses    int NOT NULL DEFAULT 1 CHECK (max_uses BETWEEN 1 AND 100000),
    uses        int NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Named job queues; jobs submitted to one inherit its priority and label requirements.
CREATE TABLE queues (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    default_priority int NOT NULL DEFAULT 0 CHECK (default_priority BETWEEN -100 AND 100),
    requirements     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(requirements) = 'object'),
    paused           boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

-- Package blobs, content-addressed per tenant (a shared store would let one tenant probe
-- for another's content by hash). Bytes live in `data` until a blob store backend exists.
CREATE TABLE package_blobs (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sha256      bytea NOT NULL CHECK (length(sha256) = 32),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    data        bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE packages (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    version     text NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    sha256      bytea NOT NULL,
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    entrypoint  text CHECK (length(entrypoint) <= 1024),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name, version),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, sha256) REFERENCES package_blobs (tenant_id, sha256)
);

-- Jobs. `epoch` is the fencing token of the current assignment: it grows by one on each
-- assignment, and a report carrying another epoch is refused. `lease_expires_at` is when
-- the assigned agent loses the job if it has not renewed its lease.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    queue_id         uuid,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'assigned', 'running', 'succeeded', 'failed',
                                       'cancelled', 'dead')),
    priority         int NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    command          text CHECK (length(command) <= 65536),
    package_id       uuid,
    entrypoint       text CHECK (length(entrypoint) <= 1024),
    args             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(args) = 'array'),
    env              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    params           jsonb,
    requirements     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(requirements) = 'object'),
    timeout_ms       bigint NOT NULL DEFAULT 3600000 CHECK (timeout_ms BETWEEN 1000 AND 604800000),
    max_attempts     int NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    attempt          int NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    epoch            bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    agent_id         uuid,
    lease_expires_at timestamptz,
    not_before       timestamptz NOT NULL DEFAULT now(),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    exit_code        int,
    result           jsonb,
    error            text CHECK (length(error) <= 4096),
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CHECK (command IS NOT NULL OR package_id IS NOT NULL),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, queue_id) REFERENCES queues (tenant_id, id) ON DELETE SET NULL (queue_id),
    FOREIGN KEY (tenant_id, package_id) REFERENCES packages (tenant_id, id)
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The dispatcher's scan: waiting jobs by priority, then age.
CREATE INDEX jobs_waiting ON jobs (priority DESC, created_at, id) WHERE status = 'queued';
-- The reaper's scan: leases that may have expired.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status IN ('assigned', 'running');
CREATE INDEX jobs_tenant_list ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX jobs_agent ON jobs (agent_id) WHERE agent_id IS NOT NULL;

-- One row per assignment of a job to an agent.
CREATE TABLE job_attempts (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_id           uuid NOT NULL,
    attempt          int NOT NULL CHECK (attempt >= 1),
    epoch            bigint NOT NULL CHECK (epoch >= 1),
    agent_id         uuid,
    status           text NOT NULL CHECK (status IN ('assigned', 'running', 'succeeded', 'failed',
                                                     'cancelled', 'lost', 'timeout')),
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    exit_code        int,
    error            text CHECK (length(error) <= 4096),
    UNIQUE (job_id, epoch),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, id) ON DELETE CASCADE
);

-- Job output, in ordered chunks. (job_id, stream, offset) makes a resent chunk a no-op.
CREATE TABLE job_logs (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    job_id      uuid NOT NULL,
    epoch       bigint NOT NULL,
    stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    "offset"    bigint NOT NULL CHECK ("offset" >= 0),
    data        bytea NOT NULL CHECK (length(data) <= 1048576),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, epoch, stream, "offset"),
    FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, id) ON DELETE CASCADE
);

-- Cron schedules that submit jobs from a template.
CREATE TABLE schedules (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    cron         text NOT NULL CHECK (length(cron) BETWEEN 9 AND 128),
    timezone     text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) <= 64),
    queue_id     uuid,
    job_template jsonb NOT NULL CHECK (jsonb_typeof(job_template) = 'object'),
    enabled      boolean NOT NULL DEFAULT true,
    next_run_at  timestamptz,
    last_run_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    FOREIGN KEY (tenant_id, queue_id) REFERENCES queues (tenant_id, id) ON DELETE SET NULL (queue_id)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;

-- Daily usage counters (API calls), one row per tenant and UTC day, so that several
-- orchd nodes count into one place.
CREATE TABLE usage_counters (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day        date NOT NULL,
    api_calls  bigint NOT NULL DEFAULT 0 CHECK (api_calls >= 0),
    PRIMARY KEY (tenant_id, day)
);

-- Audit log of every state-changing request. tenant_id is NULL for platform-wide actions,
-- which only the system scope (operators) can see.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
    actor_type  text NOT NULL CHECK (actor_type IN ('operator', 'api_key', 'agent', 'system')),
    actor_id    text NOT NULL CHECK (length(actor_id) <= 200),
    action      text NOT NULL CHECK (length(action) <= 100),
    object_type text CHECK (length(object_type) <= 50),
    object_id   text CHECK (length(object_id) <= 200),
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, created_at DESC);

-- Row-level security. Every tenant-owned table gets the same two policies; FORCE makes
-- them hold for the owner too, so only a superuser could read across tenants.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'agents', 'enrollment_tokens', 'queues', 'package_blobs',
                             'packages', 'jobs', 'job_attempts', 'job_logs', 'schedules',
                             'usage_counters', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL'
                       ' USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
        EXECUTE format('CREATE POLICY system_scope ON %I FOR ALL'
                       ' USING (app_system()) WITH CHECK (app_system())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO orch_app', t);
    END LOOP;
END
$$;

-- A tenant sees its own row; the system scope sees them all.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON tenants FOR SELECT USING (id = app_tenant());
CREATE POLICY system_scope ON tenants FOR ALL USING (app_system()) WITH CHECK (app_system());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants TO orch_app;

ALTER TABLE operator_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE operator_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY system_scope ON operator_tokens FOR ALL USING (app_system()) WITH CHECK (app_system());
GRANT SELECT, INSERT, UPDATE, DELETE ON operator_tokens TO orch_app;

GRANT SELECT ON tier_defaults, tenant_quotas TO orch_app;
GRANT EXECUTE ON FUNCTION app_tenant(), app_system() TO orch_app;
