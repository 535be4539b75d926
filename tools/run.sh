#!/usr/bin/env bash
# tools/run.sh: run orch on this machine, from a fresh Debian 12 machine (as root).
#
# Installs the packages, builds orch, starts a private PostgreSQL and RabbitMQ node in
# .dev/run (data kept between runs), applies the schema migrations, makes a development
# CA and server certificate and a token signing key, starts orchd over HTTPS, makes a
# platform operator token and a demo tenant with an admin API key, enrols a local agent
# with `orch-agent register` and starts it, submits a demo job and a demo package's job
# and prints their results and output, prints how to reach the API with curl, and keeps
# running until Ctrl-C, which stops everything it started. The admin console is at
# /console/ on the same port.
#
# Environment:
#   ORCH_SKIP_APT=1    do not run apt-get (packages already there)
#   ORCH_RUN_ONCE=1    stop right after the set-up instead of waiting for Ctrl-C
#   ORCH_HTTP_PORT     orchd's port (default 8443, or a free one when 8443 is taken)
source "$(dirname "$0")/lib.sh"

orch_install_deps
orch_job_user
orch_npm_deps # the admin console's packages (server/console), bundled into orchd

cd "$ORCH_ROOT"
say "building"
orch_build build -Dwerror=true -Dtests=enabled -Dbuildtype=debugoptimized -Dconsole=enabled

orch_services_start "$(orch_state_dir run)"
state=$ORCH_STATE
orchd=$ORCH_ROOT/build/server/orchd

say "applying migrations"
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL "$orchd" migrate

port=${ORCH_HTTP_PORT:-8443}
if ss -Htln "sport = :$port" | grep -q .; then
    port=$(orch_free_port)
fi
"$ORCH_ROOT/tools/gen-certs.sh" "$state/tls"
export ORCHD_DB_URL=$ORCH_PG_APP_URL ORCHD_DB_SYSTEM_URL=$ORCH_PG_SYSTEM_URL
export ORCHD_AMQP_URL=$ORCH_AMQP_URL
export ORCHD_AUTH_KEY_DIR=$state/keys ORCHD_HTTP_PORT=$port
export ORCHD_HTTP_CERT_FILE=$state/tls/server.pem ORCHD_HTTP_KEY_FILE=$state/tls/server.key
if ! ls "$state/keys"/*.pem >/dev/null 2>&1; then
    "$orchd" admin gen-key
fi

say "starting orchd on https://127.0.0.1:$port"
"$orchd" serve 2>>"$state/orchd.log" &
orchd_pid=$!
agent_pid=
trap 'kill $agent_pid 2>/dev/null; wait $agent_pid 2>/dev/null; kill $orchd_pid 2>/dev/null; wait $orchd_pid 2>/dev/null; orch_services_stop' EXIT
base=https://127.0.0.1:$port
ca=$state/tls/ca.pem
orch_wait_for 30 curl -sf --cacert "$ca" "$base/healthz" ||
    { tail -20 "$state/orchd.log"; die "orchd did not start"; }

# POST/GET helper: prints the body, fails loudly on an error status.
api() { # METHOD PATH TOKEN [BODY]
    local out code
    out=$(curl -s -w '\n%{http_code}' --cacert "$ca" -X "$1" "$base$2" \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' -d "$4"})
    code=${out##*$'\n'}
    [ "${code:0:1}" = 2 ] || die "$1 $2: HTTP $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# The operator token and the demo tenant's key are kept (mode 0600) across runs.
umask 077
if [ ! -s "$state/operator-token" ]; then
    "$orchd" admin create-token "local operator" 2>/dev/null >"$state/operator-token"
fi
op=$(api POST /api/v1/auth/token "" "{\"key\":\"$(cat "$state/operator-token")\"}" | field access_token)
if [ ! -s "$state/demo-admin-key" ]; then
    tenant=$(api POST /api/v1/tenants "$op" \
        '{"slug":"demo","display_name":"Demo tenant","tier":"standard"}' | field id)
    api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"demo-admin","role":"admin"}' |
        field key >"$state/demo-admin-key"
fi
umask 022
token=$(api POST /api/v1/auth/token "" "{\"key\":\"$(cat "$state/demo-admin-key")\"}" | field access_token)
# A local agent, enrolled with the CLI like any other host (kept across runs).
agent=$ORCH_ROOT/build/agent/orch-agent
export ORCH_AGENT_STATE_DIR=$state/agent
# Jobs run as the unprivileged job user (orch_job_user made it), never as root.
export ORCH_AGENT_EXEC_USER=orch-job
if ! "$agent" status >/dev/null 2>&1; then
    "$agent" unregister --force >/dev/null 2>&1 || true
    etok=$(api POST /api/v1/enrollment-tokens "$token" '{"name":"local agent"}' | field token)
    "$agent" register --server "$base" --token "$etok" --name "$(hostname)-local" \
        --label demo=yes --ca-file "$ca" --slots 2
fi
say "starting the local agent"
"$agent" run 2>>"$state/agent.log" &
agent_pid=$!

# Submit a job (JSON), wait (bounded) until it ends, print its status and output.
demo_job() {
    local job status=queued
    job=$(api POST /api/v1/jobs "$token" "$1" | field id)
    for _ in $(seq 1 300); do
        status=$(api GET "/api/v1/jobs/$job" "$token" | field status)
        case $status in succeeded | failed | dead | cancelled) break ;; esac
        sleep 0.1 # polling the job's state, bounded to 30 s
    done
    echo "$2 $job: $status"
    curl -s --cacert "$ca" "$base/api/v1/jobs/$job/logs" -H "Authorization: Bearer $token" | sed 's/^/  | /'
}

say "submitting a demo job"
demo_job '{"command":"echo \"hello from orch on $(hostname)\"; uname -srm","requirements":{"demo":"yes"}}' \
    "demo job"

say "uploading a demo package and running it"
pkgdir=$state/demo-package
rm -rf "$pkgdir" && mkdir -p "$pkgdir/src"
printf '#!/bin/sh\necho "hello from package demo-hello, args: $*"\n' >"$pkgdir/src/hello.sh"
chmod 755 "$pkgdir/src/hello.sh"
tar -czf "$pkgdir/hello.tgz" -C "$pkgdir/src" hello.sh
pkg=$(curl -s --cacert "$ca" "$base/api/v1/packages?name=demo-hello" -H "Authorization: Bearer $token" |
    python3 -c 'import json,sys; i=json.load(sys.stdin)["items"]; print(i[0]["id"] if i else "")')
if [ -z "$pkg" ]; then
    pkg=$(curl -sf --cacert "$ca" -X POST -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/gzip' --data-binary @"$pkgdir/hello.tgz" \
        "$base/api/v1/packages?name=demo-hello&version=1.0.0&entrypoint=hello.sh" | field id) ||
        die "the demo package upload failed"
fi
demo_job "{\"package_id\":\"$pkg\",\"args\":[\"a\",\"b\"],\"requirements\":{\"demo\":\"yes\"}}" \
    "demo package job"

# A queue to look at (409 on later runs: it is already there).
curl -s -o /dev/null --cacert "$ca" -X POST "$base/api/v1/queues" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name":"default"}' || true

cat <<EOF2

orch is up.

  API          $base   (TLS, development CA: $ca)
  console      $base/console/   (sign in with the key in $state/demo-admin-key; docs/console.md)
               (or, as the platform operator, with $state/operator-token: tenants and pools)
  log          $state/orchd.log
  PostgreSQL   $ORCH_PG_APP_URL (tenants), $ORCH_PG_SYSTEM_URL (system scope)
  RabbitMQ     $ORCH_AMQP_URL
  secrets      $state/operator-token (platform operator), $state/demo-admin-key (tenant "demo")

Try it (the token is valid for 15 minutes; exchange the key again for a new one):

  export ORCH=$base CA=$ca
  export TOKEN=\$(curl -s --cacert \$CA -X POST \$ORCH/api/v1/auth/token -H 'Content-Type: application/json' \\
      -d "{\"key\":\"\$(cat $state/demo-admin-key)\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s --cacert \$CA \$ORCH/api/v1/tenant -H "Authorization: Bearer \$TOKEN"
  curl -s --cacert \$CA \$ORCH/api/v1/queues -H "Authorization: Bearer \$TOKEN"
  curl -s --cacert \$CA \$ORCH/api/v1/jobs -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      -d '{"command":"echo hi from a job","requirements":{"demo":"yes"}}'
  curl -s --cacert \$CA "\$ORCH/api/v1/jobs/JOB_ID/logs" -H "Authorization: Bearer \$TOKEN"
  curl -s --cacert \$CA -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/gzip' \\
      --data-binary @$pkgdir/hello.tgz "\$ORCH/api/v1/packages?name=my-hello&version=1.0.0&entrypoint=hello.sh"
  curl -s --cacert \$CA \$ORCH/api/v1/jobs -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      -d '{"package_id":"PACKAGE_ID","args":["x"],"requirements":{"demo":"yes"}}'

  local agent: ORCH_AGENT_STATE_DIR=$state/agent ./build/agent/orch-agent status  (log: $state/agent.log)

The API guide is docs/api.md.

EOF2
api GET /api/v1/queues "$token" | python3 -m json.tool | head -20

if [ "${ORCH_RUN_ONCE:-0}" = 1 ]; then
    exit 0
fi
say "running; press Ctrl-C to stop"
while kill -0 $orchd_pid 2>/dev/null && kill -0 $agent_pid 2>/dev/null; do
    sleep 1 & wait $! || true
done
die "orchd or the local agent stopped; see $state/orchd.log and $state/agent.log"
