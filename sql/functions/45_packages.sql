-- 45_packages: package references (0020_package_refs.sql; docs/packages.md, "References
-- and channels"). Re-applied by `orchd migrate` on every run (see README.md).

-- package_semver_key: from 0020_package_refs.sql.
-- The bytes whose order is Semantic Versioning 2.0 precedence: major, minor and patch
-- compared as numbers; a pre-release before its release; pre-release identifiers compared
-- one by one, numbers as numbers and before words, words in ASCII order, and a shorter
-- list first when the other starts with it. Build metadata (+...) does not count. NULL
-- for a string that is not a semantic version (versions uploaded before 0020 may not be).
-- A number is written as its length in two digits then its digits (a version has at most
-- 64 bytes, and a semantic version no leading zeros); \x01 separates pre-release
-- identifiers and \x02 ends a release, so a release sorts after its pre-releases.
CREATE OR REPLACE FUNCTION package_semver_key(v text) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m text[];
    k text := '';
    part text;
BEGIN
    m := regexp_match(v, '^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)'
                         '(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?'
                         '(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$');
    IF m IS NULL OR length(v) > 64 THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..3 LOOP
        k := k || lpad(length(m[i])::text, 2, '0') || m[i];
    END LOOP;
    IF m[4] IS NULL THEN
        RETURN convert_to(k || chr(2), 'UTF8');
    END IF;
    FOREACH part IN ARRAY string_to_array(m[4], '.') LOOP
        IF part ~ '^[0-9]+$' THEN
            IF length(part) > 1 AND left(part, 1) = '0' THEN
                RETURN NULL;
            END IF;
            k := k || chr(1) || '0' || lpad(length(part)::text, 2, '0') || part;
        ELSE
            k := k || chr(1) || '1' || part;
        END IF;
    END LOOP;
    RETURN convert_to(k, 'UTF8');
END
$$;

-- package_resolve: from 0020_package_refs.sql.
-- The package a reference names, in the caller's scope (row-level security: another
-- tenant's packages and channels never resolve), or NULL. The reference was checked by
-- pkgref_parse() (server/pkgref.c) before it was stored or resolved: name@latest (the
-- highest release by precedence; pre-releases never are latest), name@sha256:<hex> (the
-- highest version of the name with these bytes), name@<version> (exactly), or
-- name@<channel>. A version starts with a digit and a channel with a letter.
CREATE OR REPLACE FUNCTION package_resolve(ref text) RETURNS uuid
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    n text := split_part(ref, '@', 1);
    s text := substr(ref, length(split_part(ref, '@', 1)) + 2);
    id uuid;
BEGIN
    IF s = 'latest' THEN
        SELECT p.id INTO id FROM packages p
         WHERE p.name = n AND package_semver_key(p.version) IS NOT NULL
           AND strpos(split_part(p.version, '+', 1), '-') = 0
         ORDER BY package_semver_key(p.version) DESC, p.version COLLATE "C" DESC LIMIT 1;
    ELSIF s ~ '^sha256:[0-9a-f]{64}$' THEN
        SELECT p.id INTO id FROM packages p
         WHERE p.name = n AND p.sha256 = decode(substr(s, 8), 'hex')
         ORDER BY package_semver_key(p.version) DESC NULLS LAST, p.version COLLATE "C" DESC
         LIMIT 1;
    ELSIF s ~ '^[0-9]' THEN
        SELECT p.id INTO id FROM packages p WHERE p.name = n AND p.version = s;
    ELSE
        SELECT c.package_id INTO id FROM package_channels c WHERE c.name = n AND c.channel = s;
    END IF;
    RETURN id;
END
$$;
