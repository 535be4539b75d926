-- 0024_blob_store: package bytes in chunks, and uploads in parts (docs/packages.md,
-- "Storage and upload").
--
-- blob_chunks is the PostgreSQL blob store (server/blob-store-pg.c): a blob is a tenant's
-- key ('pkg/<sha256 hex>' for a package archive, 'upload/<session id>' for an upload being
-- received) and its bytes, in rows of at most 1 MiB each at their byte offset. Several
-- orchd nodes share packages through PostgreSQL with nothing else; a blob is read a window
-- at a time (a range of offsets), never whole. The bytes are stored as they come
-- (STORAGE EXTERNAL: archives are compressed already, so PostgreSQL does not try again).
CREATE TABLE blob_chunks (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    blob_key   text NOT NULL CHECK (length(blob_key) BETWEEN 1 AND 128),
    off        bigint NOT NULL CHECK (off >= 0),
    data       bytea NOT NULL CHECK (length(data) BETWEEN 1 AND 1048576),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, blob_key, off)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- An upload in parts: declared (name, version, entrypoint, size and SHA-256; the storage
-- quota counts size_bytes from here on), then received at increasing offsets into the
-- blob 'upload/<id>', then committed (the SHA-256 checked, the version published, the row
-- gone) or expired (removed with its bytes by the collector, server/blob-gc.c).
CREATE TABLE package_uploads (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    version     text NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    entrypoint  text CHECK (length(entrypoint) <= 1024),
    size_bytes  bigint NOT NULL CHECK (size_bytes > 0),
    sha256      bytea NOT NULL CHECK (length(sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX package_uploads_expiry ON package_uploads (expires_at);

ALTER TABLE blob_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE blob_chunks FORCE ROW LEVEL SECURITY;
ALTER TABLE package_uploads ENABLE ROW LEVEL SECURITY;
ALTER TABLE package_uploads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON blob_chunks FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON blob_chunks FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
CREATE POLICY tenant_isolation ON package_uploads FOR ALL
    USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant());
CREATE POLICY system_scope ON package_uploads FOR ALL
    USING ((SELECT app_system())) WITH CHECK ((SELECT app_system()));
GRANT SELECT, INSERT, UPDATE, DELETE ON blob_chunks TO orch_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON package_uploads TO orch_app;

-- The archives stored so far move into chunks. The migration runs as the owner, whom
-- FORCE ROW LEVEL SECURITY binds too: lift it for the copy, inside this transaction only.
ALTER TABLE package_blobs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE blob_chunks NO FORCE ROW LEVEL SECURITY;
INSERT INTO blob_chunks (tenant_id, blob_key, off, data, created_at)
SELECT b.tenant_id, 'pkg/' || encode(b.sha256, 'hex'), o.off,
       substring(b.data FROM (o.off + 1)::int FOR 1048576), b.created_at
  FROM package_blobs b,
       LATERAL generate_series(0, length(b.data) - 1, 1048576) AS o (off)
 WHERE b.data IS NOT NULL AND length(b.data) > 0;
ALTER TABLE package_blobs FORCE ROW LEVEL SECURITY;
ALTER TABLE blob_chunks FORCE ROW LEVEL SECURITY;
ALTER TABLE package_blobs DROP COLUMN data;
