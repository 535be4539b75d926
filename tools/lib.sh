# tools/lib.sh: shared shell functions for tools/run.sh and tools/test.sh.
#
# Sourced, not executed. Starts a private PostgreSQL and a private RabbitMQ node in a
# directory of their own, on free ports picked at run time, and stops them again.
# Nothing here touches the system's own PostgreSQL or RabbitMQ instances.

set -euo pipefail

ORCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian 12 packages the build, the tests and the services need. prometheus is there for
# promtool (the metrics tests); policy-rc.d below keeps its server from starting. chromium:
# the console's browser tests drive it headless (tests/browser/). haproxy: the load balancer of
# tools/cluster.sh (in front of the orchd nodes and of the RabbitMQ cluster; docs/scaling.md).
# wrk and nghttp2-client (h2load): the REST benchmark's closed loops and offered loads.
ORCH_APT_PACKAGES=(
    build-essential meson ninja-build pkg-config clang python3 openssl ca-certificates
    libevent-dev libssl-dev libpq-dev librabbitmq-dev libjwt-dev libjansson-dev libarchive-dev
    libcriterion-dev libcurl4-openssl-dev python3-yaml wrk nghttp2-client clang-format
    postgresql postgresql-contrib rabbitmq-server
    curl procps iproute2 tzdata
    prometheus
    debhelper dpkg-dev fakeroot lintian debootstrap
    chromium
    haproxy
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Install what is missing. ORCH_SKIP_APT=1 skips this (for repeated local runs).
orch_install_deps() {
    [ "${ORCH_SKIP_APT:-0}" = 1 ] && return 0
    [ "$(id -u)" = 0 ] || die "run as root (apt-get and the service users need it)"
    local missing=()
    local p
    for p in "${ORCH_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    # node and npm run the test tooling from npm (orch_npm_deps). Looked for as commands, not
    # packages: a node of another origin that ships its own npm would conflict with Debian's
    # npm package. Debian 12's nodejs is 18.x, which that tooling is pinned to support.
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    say "apt-get update"
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing: ${missing[*]}"
        # policy-rc.d keeps Debian from starting the system-wide services on install:
        # we run our own instances.
        local prc=/usr/sbin/policy-rc.d created_prc=0
        if [ ! -e "$prc" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod +x "$prc" && created_prc=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
        [ $created_prc = 1 ] && rm -f "$prc"
    fi
    return 0
}

# What comes from npm, each folder installed with `npm ci` from its own lock file into its
# node_modules (not committed): tests/api/lint (the OpenAPI linter of the openapi-lint test)
# and server/console (the admin console's libraries, esbuild that bundles them into orchd,
# and playwright-core for the browser tests). A folder is skipped while its tree was
# installed from the same lock file by the same node; --prefer-offline takes packages from
# npm's cache when it has them, so a machine that has installed them once builds offline.
# A failed install leaves no tree, so the linter test says it is missing, and the console
# is built without (-Dconsole=auto) or the build stops (-Dconsole=enabled).
orch_npm_deps() {
    local dir stamp what
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        say "node or npm missing: no console, and the openapi-lint test will fail (run without ORCH_SKIP_APT)"
        return 0
    fi
    for dir in "$ORCH_ROOT/tests/api/lint" "$ORCH_ROOT/server/console"; do
        what=${dir#"$ORCH_ROOT"/}
        stamp="$(sha256sum "$dir/package-lock.json" | cut -c1-64) node-$(node --version)"
        [ "$(cat "$dir/node_modules/.orch-installed" 2>/dev/null)" = "$stamp" ] && continue
        say "npm ci ($what)"
        # Twice at most: a registry hiccup or a half-written node_modules left by an
        # interrupted run fails the first, which leaves nothing behind for the second.
        local try ok=0
        for try in 1 2; do
            if (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null); then
                echo "$stamp" >"$dir/node_modules/.orch-installed"
                ok=1
                break
            fi
            rm -rf "$dir/node_modules"
        done
        [ $ok = 1 ] || say "npm ci failed in $dir"
    done
    return 0
}

# The unprivileged account a root orch-agent runs jobs as (its exec.user default). The
# Debian package will create it; tests and run.sh need it before that. Needs root when
# missing; an agent that is not root runs jobs as itself and does not need it.
orch_job_user() {
    local user=${1:-orch-job}
    getent passwd "$user" >/dev/null && return 0
    [ "$(id -u)" = 0 ] || return 0
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
}

# Build into $1 with extra meson options after it. Reconfigures an existing build dir.
orch_build() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$ORCH_ROOT" "$@" >/dev/null
    fi
    ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

# The Windows agent (orch-agent.exe): cross-compiled with mingw-w64 (the -posix compilers:
# winpthreads), its unit tests run under wine, jansson built from Debian's source package
# by tools/win-deps.sh (which needs cmake and dpkg-dev's dpkg-source).
# wine: /usr/bin/wine and wineserver (wine64 alone, without its recommends, has neither);
# wixl and msitools (msibuild, msiinfo): the .msi (packaging/msi/build.sh); libz-mingw-w64-dev:
# the zlib tools/win-deps.sh builds libarchive with.
ORCH_APT_PACKAGES_WIN=(
    gcc-mingw-w64-x86-64-posix mingw-w64-tools wine64 wine cmake dpkg-dev wixl msitools
    libz-mingw-w64-dev
)

# Install the Windows toolchain when missing (ORCH_SKIP_APT=1 skips this), then jansson for
# mingw into build-win-deps (once; tools/win-deps.sh does nothing when it is there).
orch_win_deps() {
    if [ "${ORCH_SKIP_APT:-0}" != 1 ]; then
        local missing=() p
        for p in "${ORCH_APT_PACKAGES_WIN[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
                missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            [ "$(id -u)" = 0 ] || die "run as root (apt-get)"
            say "installing: ${missing[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        fi
    fi
    "$ORCH_ROOT/tools/win-deps.sh" "$ORCH_ROOT/build-win-deps"
}

# Build the Windows agent and its tests into $1 (default build-win), -Werror, through the
# cross file and the one tools/win-deps.sh wrote.
orch_win_build() {
    local dir=${1:-build-win}
    if [ ! -f "$ORCH_ROOT/$dir/build.ninja" ]; then
        meson setup "$ORCH_ROOT/$dir" "$ORCH_ROOT" \
            --cross-file "$ORCH_ROOT/packaging/win/mingw-w64-x86_64.ini" \
            --cross-file "$ORCH_ROOT/build-win-deps/deps.ini" -Dwerror=true >/dev/null
    fi
    ninja -C "$ORCH_ROOT/$dir" >/dev/null || ninja -C "$ORCH_ROOT/$dir"
}

# A directory the service users (postgres, rabbitmq) can reach. $1 names the instance.
orch_state_dir() {
    local name=$1 base
    if runuser -u postgres -- test -x "$ORCH_ROOT" 2>/dev/null; then
        base="$ORCH_ROOT/.dev"
    else
        base="/var/tmp/orch-dev-$(printf '%s' "$ORCH_ROOT" | sha256sum | cut -c1-12)"
    fi
    mkdir -p "$base"
    chmod 755 "$base"
    printf '%s/%s' "$base" "$name"
}

# Print a TCP port that nothing listens on. Ports come from 20000-32767, below Linux's
# ephemeral range (32768-60999): RabbitMQ's listener fails with eaddrinuse when its port
# is one that an outgoing connection of its own has just taken.
orch_free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12768))
        if ! ss -Htln "sport = :$p" | grep -q . &&
            ! grep -qx "$p" "${ORCH_PORTS_TAKEN:-/dev/null}" 2>/dev/null; then
            [ -n "${ORCH_PORTS_TAKEN:-}" ] && echo "$p" >>"$ORCH_PORTS_TAKEN"
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found in 20000-32767"
}

# Wait until "$@" succeeds, at most $1 seconds (polling every 0.1 s).
orch_wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

orch_pg_bindir() {
    local v
    for v in 17 16 15; do
        [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && { echo "/usr/lib/postgresql/$v/bin"; return; }
    done
    die "PostgreSQL server binaries not found under /usr/lib/postgresql"
}

# Start PostgreSQL in $1/pg on a free port, with the roles orch needs:
#   orch_owner: owns the database and the schema, runs migrations, may create databases
#               (the integration tests make one per test file);
#   orch_app:   what orchd runs as for tenants: NOSUPERUSER, NOBYPASSRLS, owns nothing;
#   orch_system: what orchd runs as for cross-tenant work (the system scope of the RLS
#               policies, sql/0008_system_role.sql): a member of orch_app for its
#               privileges, NOSUPERUSER, NOBYPASSRLS, owns nothing.
# ORCH_PG_FSYNC (default on) sets fsync; ORCH_PG_OPTIONS adds server options (e.g.
# "-c shared_preload_libraries=pg_stat_statements" to see what a benchmark's statements cost).
# Exports ORCH_PG_PORT, ORCH_PG_HOST and the connection URLs.
orch_pg_start() {
    local dir=$1/pg bin
    bin=$(orch_pg_bindir)
    : "${ORCH_PG_PORT:=$(orch_free_port)}"
    ORCH_PG_HOST=$1/pgsock
    mkdir -p "$dir" "$ORCH_PG_HOST"
    touch "$1/postgres.log"
    chown postgres:postgres "$dir" "$ORCH_PG_HOST" "$1/postgres.log"
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        runuser -u postgres -- "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 \
            --no-locale >"$1/initdb.log" 2>&1 || { cat "$1/initdb.log"; die "initdb failed"; }
    fi
    rm -f "$dir/postmaster.pid"
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -l "$1/postgres.log" -w -t 60 \
        -o "-p $ORCH_PG_PORT -k $ORCH_PG_HOST -c listen_addresses=127.0.0.1 -c fsync=${ORCH_PG_FSYNC:-on} -c max_connections=200 ${ORCH_PG_OPTIONS:-}" \
        start >/dev/null || { tail -20 "$1/postgres.log"; die "PostgreSQL did not start"; }
    echo "$bin" >"$1/pg.bindir"
    local psql=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$ORCH_PG_PORT" -U postgres -d postgres)
    "${psql[@]}" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orch_owner') THEN
    CREATE ROLE orch_owner LOGIN CREATEDB PASSWORD 'orch_owner';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orch_app') THEN
    CREATE ROLE orch_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD 'orch_app';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orch_system') THEN
    CREATE ROLE orch_system LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT
      PASSWORD 'orch_system' IN ROLE orch_app;
  END IF;
END $$;
SELECT 'CREATE DATABASE orch OWNER orch_owner'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orch') \gexec
SQL
    orch_pg_env "$1"
}

orch_pg_env() {
    export ORCH_PG_HOST=$1/pgsock
    export ORCH_PG_PORT
    export ORCH_PG_SUPER_URL="postgresql://postgres@127.0.0.1:$ORCH_PG_PORT/postgres"
    export ORCH_PG_OWNER_URL="postgresql://orch_owner:orch_owner@127.0.0.1:$ORCH_PG_PORT/orch"
    export ORCH_PG_APP_URL="postgresql://orch_app:orch_app@127.0.0.1:$ORCH_PG_PORT/orch"
    export ORCH_PG_SYSTEM_URL="postgresql://orch_system:orch_system@127.0.0.1:$ORCH_PG_PORT/orch"
}

orch_pg_stop() {
    local dir=$1/pg
    [ -f "$dir/postmaster.pid" ] || return 0
    local bin
    bin=$(cat "$1/pg.bindir" 2>/dev/null || orch_pg_bindir)
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# The environment of our private RabbitMQ node; the Debian scripts read these.
orch_rmq_env() {
    local d=$1/rabbitmq
    cat <<EOF
export HOME=$d/home
export RABBITMQ_NODENAME=orch-$ORCH_RMQ_PORT@localhost
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$ORCH_RMQ_PORT
export RABBITMQ_DIST_PORT=$ORCH_RMQ_DIST_PORT
export ERL_EPMD_PORT=$ORCH_RMQ_EPMD_PORT
export RABBITMQ_MNESIA_BASE=$d/mnesia
export RABBITMQ_LOG_BASE=$d/log
export RABBITMQ_PID_FILE=$d/rabbitmq.pid
export RABBITMQ_CONFIG_FILE=$d/rabbitmq
export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
export RABBITMQ_ENABLED_PLUGINS=
EOF
}

# Start a private RabbitMQ node in $1/rabbitmq. The Debian scripts switch to the rabbitmq
# user, so everything there belongs to it. Exports ORCH_RMQ_PORT and ORCH_AMQP_URL.
orch_rmq_start() {
    local d=$1/rabbitmq
    : "${ORCH_RMQ_PORT:=$(orch_free_port)}"
    : "${ORCH_RMQ_DIST_PORT:=$(orch_free_port)}"
    : "${ORCH_RMQ_EPMD_PORT:=$(orch_free_port)}"
    rm -rf "$d"
    mkdir -p "$d/home" "$d/mnesia" "$d/log"
    echo '[].' >"$d/enabled_plugins"
    printf 'loopback_users = none\nlog.console = false\nlog.file.level = warning\n' >"$d/rabbitmq.conf"
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$d/home/.erlang.cookie"
    chmod 400 "$d/home/.erlang.cookie"
    orch_rmq_env "$1" >"$d/env.sh"
    chown -R rabbitmq:rabbitmq "$d"
    runuser -u rabbitmq -- sh -c ". '$d/env.sh'; exec /usr/lib/rabbitmq/bin/rabbitmq-server" \
        >"$d/log/console.log" 2>&1 &
    echo $! >"$d/launcher.pid"
    if ! runuser -u rabbitmq -- sh -c ". '$d/env.sh'; timeout 90 /usr/lib/rabbitmq/bin/rabbitmqctl -q wait '$d/rabbitmq.pid'" \
        >"$d/log/wait.log" 2>&1; then
        tail -30 "$d/log/console.log" >&2
        die "RabbitMQ did not start"
    fi
    runuser -u rabbitmq -- sh -c ". '$d/env.sh'
        /usr/lib/rabbitmq/bin/rabbitmqctl -q add_user orch orch >/dev/null 2>&1 || true
        /usr/lib/rabbitmq/bin/rabbitmqctl -q add_vhost orch >/dev/null 2>&1 || true
        /usr/lib/rabbitmq/bin/rabbitmqctl -q set_permissions -p orch orch '.*' '.*' '.*'" \
        >>"$d/log/wait.log" 2>&1 || die "RabbitMQ: could not create the orch user and vhost"
    export ORCH_RMQ_PORT ORCH_RMQ_DIST_PORT ORCH_RMQ_EPMD_PORT
    export ORCH_AMQP_URL="amqp://orch:orch@127.0.0.1:$ORCH_RMQ_PORT/orch"
}

orch_rmq_stop() {
    local d=$1/rabbitmq
    [ -f "$d/env.sh" ] || return 0
    local node
    node=$(cat "$d/rabbitmq.pid" 2>/dev/null || true)
    runuser -u rabbitmq -- sh -c ". '$d/env.sh'
        timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -q stop '$d/rabbitmq.pid' >/dev/null 2>&1 || true
        epmd -port \$ERL_EPMD_PORT -kill >/dev/null 2>&1 || true" || true
    # A node that would not stop in time is killed: nothing of it may outlive the run.
    if [ -n "$node" ] && kill -0 "$node" 2>/dev/null; then
        kill -9 "$node" 2>/dev/null || true
    fi
    local pid
    pid=$(cat "$d/launcher.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -f "$d/env.sh"
}

# Start both services under $1 and arrange for them to stop when the script exits.
orch_services_start() {
    export ORCH_STATE=$1
    mkdir -p "$ORCH_STATE"
    chmod 755 "$ORCH_STATE"
    export ORCH_PORTS_TAKEN=$ORCH_STATE/ports
    : >"$ORCH_PORTS_TAKEN"
    trap 'orch_services_stop' EXIT
    trap 'exit 130' INT TERM
    say "starting PostgreSQL and RabbitMQ in $ORCH_STATE"
    # Ports are chosen here, so that the PostgreSQL start-up can run in a subshell beside
    # RabbitMQ's (about 2 s saved) and both sides agree on them.
    ORCH_PG_PORT=$(orch_free_port)
    ORCH_RMQ_PORT=$(orch_free_port)
    ORCH_RMQ_DIST_PORT=$(orch_free_port)
    ORCH_RMQ_EPMD_PORT=$(orch_free_port)
    (orch_pg_start "$ORCH_STATE") &
    local pg_job=$!
    orch_rmq_start "$ORCH_STATE"
    wait $pg_job || die "PostgreSQL set-up failed"
    orch_pg_env "$ORCH_STATE"
}

orch_services_stop() {
    [ -n "${ORCH_STATE:-}" ] || return 0
    say "stopping PostgreSQL and RabbitMQ"
    orch_rmq_stop "$ORCH_STATE"
    orch_pg_stop "$ORCH_STATE"
    # Throw-away instances (the test suite's) leave nothing behind.
    if [ "${ORCH_STATE_REMOVE:-0}" = 1 ]; then
        rm -rf "$ORCH_STATE"
    fi
}
