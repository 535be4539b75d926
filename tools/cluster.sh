#!/usr/bin/env bash
# tools/cluster.sh: a multi-node orch deployment on this machine (as root), for scaling
# and fault work (docs/scaling.md):
#
#   HAProxy (http) ──TLS passthrough──> N orchd nodes ──> PostgreSQL
#                                              └──> HAProxy (amqp) ──> 3 RabbitMQ nodes (one cluster)
#
# Agents and clients reach orchd only through the HTTP HAProxy; orchd reaches RabbitMQ
# only through the AMQP HAProxy. Everything lives in $ORCH_CLUSTER_DIR (default
# /tmp/orch-cluster), on free ports picked at run time, so it never disturbs another run.
#
#   tools/cluster.sh up [ORCHD=2] [AGENTS=2] [SLOTS=4]   start everything
#   tools/cluster.sh scale orchd=N                       start or stop orchd nodes
#   tools/cluster.sh scale agents=N                      start or stop real orch-agent daemons
#   tools/cluster.sh status                              a table of what runs
#   tools/cluster.sh load-test JOBS=N [SIM=M]            N jobs through HAProxy: jobs/s, latency
#                                                        (SIM=M: to M simulated agents of
#                                                        tools/loadgen instead of the real ones)
#   tools/cluster.sh fault-test [JOBS=N]                 kill -9 an orchd node, then stop a
#                                                        RabbitMQ node, under load: recovery times
#   tools/cluster.sh kill-orchd I                        kill -9 orchd node I (left down)
#   tools/cluster.sh down                                stop and remove everything
#
# Environment: ORCH_CLUSTER_DIR, ORCH_CLUSTER_BUILD (a build directory with server/orchd and
# agent/orch-agent; default build), ORCH_SKIP_APT=1 (no apt-get).
source "$(dirname "$0")/lib.sh"

D=${ORCH_CLUSTER_DIR:-/tmp/orch-cluster}
BUILD=${ORCH_CLUSTER_BUILD:-$ORCH_ROOT/build}
[[ $BUILD = /* ]] || BUILD=$ORCH_ROOT/$BUILD
ORCHD=$BUILD/server/orchd
AGENT=$BUILD/agent/orch-agent
RMQ=/usr/lib/rabbitmq/bin
export ORCH_PORTS_TAKEN=$D/ports

# ---- small helpers ------------------------------------------------------------------------

st() { cat "$D/$1" 2>/dev/null || true; } # a value kept in the state directory
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
psql_q() { psql -X -q -A -t -F '|' "postgresql://postgres@127.0.0.1:$(st pg.port)/orch" -c "$1"; }
base() { echo "https://127.0.0.1:$(st lb.port)"; }
api() { # METHOD PATH TOKEN [BODY]: through HAProxy; the body on stdout, dies on an error
    local out code try
    # A connection cut (a node going away, HAProxy reloading): tried again, 5 times at most.
    for try in 1 2 3 4 5; do
        out=$(curl -s -w '\n%{http_code}' --cacert "$D/tls/ca.pem" -X "$1" "$(base)$2" \
            ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' --data-binary "$4"})
        code=${out##*$'\n'}
        [ "$code" != 000 ] && break
        sleep 0.2 # before the next attempt; bounded by the loop
    done
    [ "${code:0:1}" = 2 ] || die "$1 $2: HTTP $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
token() { api POST /api/v1/auth/token "" "{\"key\":\"$(st tenant.key)\"}" | field access_token; }
need_up() { [ -f "$D/up" ] || die "no cluster in $D (tools/cluster.sh up)"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# ---- RabbitMQ: three nodes, one cluster ----------------------------------------------------
# Each node has its own name, AMQP and distribution ports and RABBITMQ_* paths (owned by the
# rabbitmq user: the Debian scripts switch to it), the same Erlang cookie and one epmd of
# the cluster's own (a private port), through which the nodes find each other.

rmq_env() { # I
    local d=$D/rmq-$1
    cat <<EOF
export HOME=$d/home
export RABBITMQ_NODENAME=orch-c$(st rmq-$1.port)@localhost
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$(st rmq-$1.port)
export RABBITMQ_DIST_PORT=$(st rmq-$1.dist)
export ERL_EPMD_PORT=$(st rmq.epmd)
export RABBITMQ_MNESIA_BASE=$d/mnesia
export RABBITMQ_LOG_BASE=$d/log
export RABBITMQ_PID_FILE=$d/rabbitmq.pid
export RABBITMQ_CONFIG_FILE=$d/rabbitmq
export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
export RABBITMQ_ENABLED_PLUGINS=
EOF
}
rmqctl() { # I ARGS...: rabbitmqctl against node I, as the rabbitmq user
    local i=$1
    shift
    runuser -u rabbitmq -- sh -c ". '$D/rmq-$i/env.sh'; exec timeout 60 $RMQ/rabbitmqctl -q \"\$@\"" \
        rabbitmqctl "$@"
}
rmq_node() { echo "orch-c$(st rmq-$1.port)@localhost"; }

rmq_launch() { # I: start node I (its directory already made)
    local d=$D/rmq-$1
    runuser -u rabbitmq -- sh -c ". '$d/env.sh'; exec $RMQ/rabbitmq-server" \
        >>"$d/log/console.log" 2>&1 &
    echo $! >"$d/launcher.pid"
}
rmq_wait() { # I
    rmqctl "$1" wait "$D/rmq-$1/rabbitmq.pid" >>"$D/rmq-$1/log/wait.log" 2>&1 ||
        { tail -20 "$D/rmq-$1/log/console.log" >&2; die "RabbitMQ node $1 did not start"; }
}

rmq_up() {
    local i cookie
    orch_free_port >"$D/rmq.epmd"
    cookie=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    for i in 1 2 3; do
        local d=$D/rmq-$i
        orch_free_port >"$D/rmq-$i.port"
        orch_free_port >"$D/rmq-$i.dist"
        mkdir -p "$d/home" "$d/mnesia" "$d/log"
        echo '[].' >"$d/enabled_plugins"
        # pause_minority: a node cut off from the other two stops rather than diverge.
        printf 'loopback_users = none\nlog.console = false\nlog.file.level = warning\ncluster_partition_handling = pause_minority\n' \
            >"$d/rabbitmq.conf"
        printf '%s' "$cookie" >"$d/home/.erlang.cookie"
        chmod 400 "$d/home/.erlang.cookie"
        rmq_env "$i" >"$d/env.sh"
        chown -R rabbitmq:rabbitmq "$d"
        rmq_launch "$i"
    done
    for i in 1 2 3; do rmq_wait "$i"; done
    for i in 2 3; do
        rmqctl "$i" stop_app >/dev/null
        rmqctl "$i" join_cluster "$(rmq_node 1)" >/dev/null || die "RabbitMQ node $i could not join"
        rmqctl "$i" start_app >/dev/null
    done
    rmqctl 1 add_user orch orch >/dev/null 2>&1 || true
    rmqctl 1 add_vhost orch >/dev/null 2>&1 || true
    rmqctl 1 set_permissions -p orch orch '.*' '.*' '.*' >/dev/null
    local n
    n=$(rmqctl 1 cluster_status --formatter json |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')
    [ "$n" = 3 ] || die "RabbitMQ: $n of 3 nodes running in the cluster"
}

rmq_stop_node() { # I: stop node I for good (kill -9 when it will not stop)
    local d=$D/rmq-$1 pid
    [ -f "$d/env.sh" ] || return 0
    pid=$(cat "$d/rabbitmq.pid" 2>/dev/null || true)
    rmqctl "$1" stop "$d/rabbitmq.pid" >/dev/null 2>&1 || true
    alive "$pid" && kill -9 "$pid" 2>/dev/null
    pid=$(cat "$d/launcher.pid" 2>/dev/null || true)
    alive "$pid" && kill "$pid" 2>/dev/null
    return 0
}

# ---- HAProxy ----------------------------------------------------------------------------
# Two processes: "amqp" (orchd -> RabbitMQ, never reloaded, so that a scale does not cut
# the bus) and "http" (clients and agents -> orchd, reloaded by `scale orchd`).

hap_start() { # NAME: (re)load $D/haproxy-NAME.cfg; a reload hands over with -sf
    local cfg=$D/haproxy-$1.cfg pidf=$D/haproxy-$1.pid old
    haproxy -c -q -f "$cfg" || die "haproxy: $cfg is not valid"
    old=$(cat "$pidf" 2>/dev/null || true)
    haproxy -f "$cfg" -p "$pidf" -D ${old:+-sf $old}
    cat "$pidf" >>"$D/haproxy.pids"
}

hap_amqp_cfg() {
    cat <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    # AMQP connections live long; RabbitMQ's heartbeats (30 s) keep them busy.
    timeout client 1h
    timeout server 1h
frontend amqp
    bind 127.0.0.1:$(st amqp-lb.port)
    default_backend rabbitmq
backend rabbitmq
    balance leastconn
    # A connection refused (a dead node not marked down yet) is retried on another node at
    # once: plain `option redispatch` would first retry the same node, 1 s apart.
    option redispatch 1
    retries 2
    # A node that goes down: its connections are cut at once, and the clients reconnect to
    # another (a stopped node closes them anyway; a hung one would not).
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
EOF
    local i
    for i in 1 2 3; do
        echo "    server rmq-$i 127.0.0.1:$(st rmq-$i.port) check"
    done
}

hap_http_cfg() {
    cat <<EOF
global
    # Two descriptors a connection, within this process's hard limit (ulimit -Hn).
    maxconn $(( ($(ulimit -Hn) - 3000) / 2 ))
    # An old process after a reload serves its connections this long at most.
    hard-stop-after 30s
defaults
    mode tcp
    timeout connect 2s
    # Agents hold a long-poll (25 s by default) open: well within these.
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
frontend orchd
    # TLS passthrough: orchd terminates TLS itself, with the certificate every node shares.
    bind 127.0.0.1:$(st lb.port)
    default_backend orchd
backend orchd
    balance leastconn
    # A connection refused (a dead node not marked down yet) is retried on another node at
    # once: plain `option redispatch` would first retry the same node, 1 s apart.
    option redispatch 1
    retries 2
    # /readyz over TLS: 200 only while the node reaches PostgreSQL and RabbitMQ.
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check check-ssl verify none inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
EOF
    local i
    for i in $(seq 1 "$(st orchd.count)"); do
        echo "    server orchd-$i 127.0.0.1:$(st orchd-$i.port)"
    done
    cat <<EOF
listen stats
    mode http
    bind 127.0.0.1:$(st stats.port)
    timeout client 10s
    stats enable
    stats uri /stats
EOF
}

# ---- orchd nodes --------------------------------------------------------------------------

orchd_env() { # I: the environment of node I
    cat <<EOF
export ORCHD_DB_URL=postgresql://orch_app:orch_app@127.0.0.1:$(st pg.port)/orch
export ORCHD_DB_SYSTEM_URL=postgresql://orch_system:orch_system@127.0.0.1:$(st pg.port)/orch
export ORCHD_DB_POOL_SIZE=8
export ORCHD_AMQP_URL=amqp://orch:orch@127.0.0.1:$(st amqp-lb.port)/orch
export ORCHD_AUTH_KEY_DIR=$D/keys
export ORCHD_HTTP_CERT_FILE=$D/tls/server.pem
export ORCHD_HTTP_KEY_FILE=$D/tls/server.key
export ORCHD_HTTP_PORT=$(st orchd-$1.port)
export ORCHD_HTTP_THREADS=2
export ORCHD_HTTP_MAX_CONNECTIONS=100000
export ORCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS=100000
export ORCHD_NODE_NAME=orchd-$1
export ORCHD_LOG_LEVEL=${ORCHD_LOG_LEVEL:-warn}
EOF
}

orchd_start() { # I
    [ -f "$D/orchd-$1.port" ] || orch_free_port >"$D/orchd-$1.port"
    orchd_env "$1" >"$D/orchd-$1.env"
    (. "$D/orchd-$1.env" && exec "$ORCHD" serve) >>"$D/orchd-$1.log" 2>&1 </dev/null &
    echo $! >"$D/orchd-$1.pid"
}
orchd_ready() { curl -sf --cacert "$D/tls/ca.pem" "https://127.0.0.1:$(st orchd-$1.port)/readyz"; }
orchd_stop() { # I
    local pid
    pid=$(st orchd-$1.pid)
    if alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        orch_wait_for 15 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$D/orchd-$1.pid"
}

scale_orchd() { # N
    local n=$1 cur i
    cur=$(st orchd.count)
    cur=${cur:-0}
    [ "$n" -ge 1 ] && [ "$n" -le 32 ] || die "orchd=N: N from 1 to 32"
    for i in $(seq $((cur + 1)) "$n"); do orchd_start "$i"; done
    for i in $(seq $((cur + 1)) "$n"); do
        orch_wait_for 60 orchd_ready "$i" || { tail -20 "$D/orchd-$i.log"; die "orchd-$i is not ready"; }
    done
    echo "$n" >"$D/orchd.count"
    hap_http_cfg >"$D/haproxy-http.cfg"
    hap_start http
    # Nodes past N leave after HAProxy stopped sending them anything new.
    for i in $(seq $((n + 1)) "$cur"); do orchd_stop "$i"; rm -f "$D/orchd-$i.port"; done
    orch_wait_for 30 lb_ready || die "HAProxy does not reach orchd"
}
lb_ready() { curl -sf --cacert "$D/tls/ca.pem" "$(base)/readyz"; }

# ---- agents -------------------------------------------------------------------------------

agent_start() { # I: enrol (once) and run agent I, through HAProxy
    local a=$D/agent-$1 etok
    if [ ! -f "$a/.enrolled" ]; then
        etok=$(api POST /api/v1/enrollment-tokens "$(token)" '{"name":"cluster"}' | field token)
        ORCH_AGENT_STATE_DIR=$a "$AGENT" register --server "$(base)" --token "$etok" \
            --name "cluster-$1" --ca-file "$D/tls/ca.pem" --slots "$(st slots)" >/dev/null
        touch "$a/.enrolled"
    fi
    ORCH_AGENT_STATE_DIR=$a ORCH_AGENT_EXEC_USER=orch-job \
        ORCH_AGENT_LOG_LEVEL=${ORCH_AGENT_LOG_LEVEL:-warn} "$AGENT" run >>"$a.log" 2>&1 </dev/null &
    echo $! >"$D/agent-$1.pid"
}
agents_online() { [ "$(psql_q "SELECT count(*) FROM agents WHERE status = 'online' AND gateway_node IS NOT NULL")" -ge "$1" ]; }

scale_agents() { # N
    local n=$1 cur i pid
    cur=$(st agents.count)
    cur=${cur:-0}
    [ "$n" -ge 0 ] && [ "$n" -le 500 ] || die "agents=N: N from 0 to 500"
    for i in $(seq $((cur + 1)) "$n"); do agent_start "$i"; done
    for i in $(seq $((n + 1)) "$cur"); do
        pid=$(st agent-$i.pid)
        alive "$pid" && kill "$pid" 2>/dev/null
        rm -f "$D/agent-$i.pid"
    done
    echo "$n" >"$D/agents.count"
    [ "$n" -gt 0 ] && { orch_wait_for 60 agents_online "$n" || die "the agents did not come online"; }
    return 0
}

# ---- up / down ----------------------------------------------------------------------------

cmd_up() {
    local orchd=2 agents=2 slots=4 a
    for a in "$@"; do
        case $a in
        ORCHD=* | orchd=*) orchd=${a#*=} ;;
        AGENTS=* | agents=*) agents=${a#*=} ;;
        SLOTS=* | slots=*) slots=${a#*=} ;;
        *) die "up: unknown argument $a" ;;
        esac
    done
    [ -f "$D/up" ] && die "a cluster is already up in $D (tools/cluster.sh down first)"
    command -v haproxy >/dev/null || orch_install_deps # haproxy is in its list
    command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
    [ -x "$ORCHD" ] && [ -x "$AGENT" ] || die "no orchd or orch-agent in $BUILD (ninja -C build)"
    orch_job_user
    rm -rf "$D"
    mkdir -p "$D"
    chmod 755 "$D"
    : >"$ORCH_PORTS_TAKEN"
    touch "$D/up"
    echo "$slots" >"$D/slots"
    local t0=$SECONDS
    say "PostgreSQL and a 3-node RabbitMQ cluster in $D"
    orch_free_port >"$D/pg.port"
    (ORCH_PG_PORT=$(st pg.port) orch_pg_start "$D") >"$D/pg-start.log" 2>&1 &
    local pg_job=$!
    rmq_up
    wait $pg_job || { cat "$D/pg-start.log"; die "PostgreSQL did not start"; }
    orch_free_port >"$D/amqp-lb.port"
    hap_amqp_cfg >"$D/haproxy-amqp.cfg"
    hap_start amqp
    orch_free_port >"$D/lb.port"
    orch_free_port >"$D/stats.port"
    "$ORCH_ROOT/tools/gen-certs.sh" "$D/tls" >/dev/null
    mkdir -p "$D/keys"
    orch_free_port >"$D/orchd-1.port"
    (
        orchd_env 1 >"$D/orchd-1.env"
        . "$D/orchd-1.env"
        ORCHD_DB_MIGRATE_URL=postgresql://orch_owner:orch_owner@127.0.0.1:$(st pg.port)/orch \
            "$ORCHD" migrate >/dev/null
        "$ORCHD" admin gen-key >/dev/null
        umask 077
        "$ORCHD" admin create-token cluster 2>/dev/null >"$D/operator.key"
    ) || die "orchd migrate or key set-up failed"
    say "orchd x$orchd behind HAProxy on $(base)"
    scale_orchd "$orchd"
    local op tenant
    op=$(api POST /api/v1/auth/token "" "{\"key\":\"$(st operator.key)\"}" | field access_token)
    tenant=$(api POST /api/v1/tenants "$op" "{\"slug\":\"cluster\",\"display_name\":\"Cluster\",
      \"tier\":\"enterprise\",\"quotas\":{\"api_calls_per_day\":100000000,\"rate_per_second\":1000000,
      \"rate_burst\":1000000,\"concurrent_jobs\":100000,\"agents\":1000}}" | field id)
    (umask 077 && api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"cluster","role":"admin"}' |
        field key >"$D/tenant.key")
    say "$agents agents of $slots slots"
    scale_agents "$agents"
    say "up in $((SECONDS - t0)) s"
    cmd_status
}

cmd_down() {
    [ -d "$D" ] || return 0
    local f pid i
    for f in "$D"/agent-*.pid "$D"/orchd-*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        alive "$pid" && kill "$pid" 2>/dev/null
    done
    for f in "$D"/agent-*.pid "$D"/orchd-*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        orch_wait_for 15 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    done
    for pid in $(sort -u "$D/haproxy.pids" 2>/dev/null); do
        alive "$pid" && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = haproxy ] && kill "$pid" 2>/dev/null
    done
    for i in 3 2 1; do rmq_stop_node "$i"; done
    if [ -f "$D/rmq.epmd" ]; then
        ERL_EPMD_PORT=$(st rmq.epmd) epmd -kill >/dev/null 2>&1 || true
    fi
    orch_pg_stop "$D"
    rm -rf "$D"
    say "down: $D removed"
}

# ---- status -------------------------------------------------------------------------------

cmd_status() {
    need_up
    local i pid health stats
    stats=$(curl -s "http://127.0.0.1:$(st stats.port)/stats;csv" 2>/dev/null || true)
    hap_state() { printf '%s\n' "$stats" | awk -F, -v s="$1" '$1 == "orchd" && $2 == s { print $18 }'; }
    printf '%-10s %-8s %-7s %-22s %s\n' NODE PID PORT HEALTH DETAIL
    printf '%-10s %-8s %-7s %-22s %s\n' haproxy "$(st haproxy-http.pid)" "$(st lb.port)" \
        "$(alive "$(st haproxy-http.pid)" && echo up || echo DOWN)" "TLS passthrough to orchd; stats :$(st stats.port)"
    printf '%-10s %-8s %-7s %-22s %s\n' haproxy "$(st haproxy-amqp.pid)" "$(st amqp-lb.port)" \
        "$(alive "$(st haproxy-amqp.pid)" && echo up || echo DOWN)" "AMQP to the RabbitMQ nodes"
    for i in $(seq 1 "$(st orchd.count)"); do
        pid=$(st orchd-$i.pid)
        if alive "$pid"; then
            health=$(orchd_ready "$i" >/dev/null 2>&1 && echo ready || echo "not ready")
        else
            health=dead
        fi
        printf '%-10s %-8s %-7s %-22s %s\n' "orchd-$i" "${pid:--}" "$(st orchd-$i.port)" "$health" \
            "haproxy: $(hap_state "orchd-$i")"
    done
    for i in 1 2 3; do
        pid=$(cat "$D/rmq-$i/rabbitmq.pid" 2>/dev/null || true)
        printf '%-10s %-8s %-7s %-22s %s\n' "rabbit-$i" "${pid:--}" "$(st rmq-$i.port)" \
            "$(alive "$pid" && echo up || echo down)" "$(rmq_node "$i") dist :$(st rmq-$i.dist)"
    done
    printf '%-10s %-8s %-7s %-22s %s\n' postgres "$(head -1 "$D/pg/postmaster.pid" 2>/dev/null)" \
        "$(st pg.port)" "$(psql_q 'SELECT 1' >/dev/null 2>&1 && echo up || echo down)" "$D/pg"
    echo
    local q
    for i in 1 2 3; do
        q=$(rmqctl "$i" cluster_status --formatter json 2>/dev/null |
            python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))' 2>/dev/null) &&
            break
    done
    echo "RabbitMQ cluster members running: ${q:-none reachable}"
    for i in 1 2 3; do
        q=$(rmqctl "$i" list_queues -p orch name type leader members --formatter json 2>/dev/null) && break
    done
    printf '%s\n' "$q" | python3 -c '
import json, sys
try:
    qs = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for q in qs:
    if q.get("type") == "quorum":
        print("quorum queue %-20s leader %s, %d members" % (q["name"], q.get("leader"), len(q.get("members") or [])))
' || true
    echo
    echo "agents online by node:"
    psql_q "SELECT coalesce(gateway_node, '(none)'), count(*) FILTER (WHERE status = 'online'), count(*)
              FROM agents GROUP BY 1 ORDER BY 1" |
        awk -F'|' '{ printf "  %-10s %s online of %s\n", $1, $2, $3 }'
    echo "jobs by status:"
    psql_q "SELECT status, count(*) FROM jobs GROUP BY 1 ORDER BY 1" |
        awk -F'|' '{ printf "  %-10s %s\n", $1, $2 }'
}

# ---- load test ----------------------------------------------------------------------------
# N no-op jobs through HAProxy with the batch API (batches of up to 1000, two HTTPS
# connections), then waits for them all; figures from PostgreSQL's own timestamps:
# jobs/s = N / (last finish - first submit), latency = finished_at - created_at.

submit_jobs() { # N TOKEN TAG: prints the ids, one a line
    python3 - "$1" "$2" "$3" "$(st lb.port)" "$D/tls/ca.pem" <<'PY'
import http.client, json, ssl, sys, threading
n, token, tag, port, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
batches = [list(range(i, min(n, i + 1000))) for i in range(0, n, 1000)]
ids, lock, failed = [], threading.Lock(), []
def worker(mine):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    for b in mine:
        body = json.dumps({"jobs": [{"command": "true", "env": {"ORCH_CLUSTER_TAG": tag},
                                     "idempotency_key": "%s-%d" % (tag, i)} for i in b]})
        for attempt in range(20):  # a node killed under us: the same keys again
            try:
                conn.request("POST", "/api/v1/jobs/batch", body,
                             {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 201:
                    with lock:
                        ids.extend(j["id"] for j in json.loads(data)["items"])
                    break
            except (OSError, http.client.HTTPException):
                pass
            conn.close()
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
            threading.Event().wait(0.25)
        else:
            failed.append(b[0])
threads = [threading.Thread(target=worker, args=(batches[k::2],)) for k in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(ids))
sys.exit(1 if failed else 0)
PY
}

jobs_done() { # TAG N
    [ "$(psql_q "SELECT count(*) FROM jobs WHERE env->>'ORCH_CLUSTER_TAG' = '$1'
                   AND status IN ('succeeded', 'failed', 'dead', 'cancelled')")" -ge "$2" ]
}

# load_figures TAG: "n jobs_per_s p50_ms p99_ms succeeded"
load_figures() {
    psql_q "SELECT count(*),
                   round((count(*) / greatest(extract(epoch FROM max(finished_at) - min(created_at)), 0.001))::numeric, 1),
                   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000)::numeric, 1),
                   round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)) * 1000)::numeric, 1),
                   count(*) FILTER (WHERE status = 'succeeded')
              FROM jobs WHERE env->>'ORCH_CLUSTER_TAG' = '$1'" | tr '|' ' '
}

cmd_load_test() {
    need_up
    local n=1000 a tag tok sim=0
    for a in "$@"; do
        case $a in
        JOBS=* | jobs=*) n=${a#*=} ;;
        SIM=* | sim=*) sim=${a#*=} ;;
        *) die "load-test: unknown argument $a" ;;
        esac
    done
    [ "$sim" = 0 ] || { sim_load_test "$n" "$sim"; return; }
    [ "$(st agents.count)" -gt 0 ] 2>/dev/null || die "load-test: no agents (scale agents=N)"
    tag=lt-$(date +%s%N)
    tok=$(token)
    local t0
    t0=$(date +%s%N)
    submit_jobs "$n" "$tok" "$tag" >"$D/$tag.ids" || die "load-test: some batches were refused"
    local submit_ms
    submit_ms=$(ms_since "$t0")
    orch_wait_for $((60 + n / 20)) jobs_done "$tag" "$n" || die "load-test: not every job finished"
    local f
    read -r -a f <<<"$(load_figures "$tag")"
    printf '%-6s %-7s %-7s %-10s %-10s %-9s %-9s %s\n' orchd agents slots jobs submit_ms jobs/s p50_ms p99_ms
    printf '%-6s %-7s %-7s %-10s %-10s %-9s %-9s %s\n' "$(st orchd.count)" "$(st agents.count)" "$(st slots)" \
        "${f[0]}" "$submit_ms" "${f[1]}" "${f[2]}" "${f[3]}"
    echo "result: orchd=$(st orchd.count) agents=$(st agents.count) slots=$(st slots) jobs=${f[0]} succeeded=${f[4]} jobs_per_s=${f[1]} p50_ms=${f[2]} p99_ms=${f[3]}"
    rm -f "$D/$tag.ids"
    [ "${f[4]}" = "$n" ] || die "load-test: ${f[4]} of $n jobs succeeded"
}

# sim_load_test N M: N jobs to M simulated agents of tools/loadgen (orch-loadgen), which
# connect through HAProxy like real ones; the jobs require the label sim=1 that only they
# carry, so the real agents take none. Prints orch-loadgen's report, then
#   result: orchd=N sim_agents=M slots=S jobs=J completed=C placements_per_s=X
#           completed_per_s=Y submit_assign_p50_ms=P submit_assign_p99_ms=Q wire_errors=E
# (the rates as the load generator saw them: an answer cut or timed out counts as an error
# and its jobs are not counted as submitted)
sim_load_test() {
    local lg=$BUILD/tools/loadgen/orch-loadgen tok etok
    [ -x "$lg" ] || die "no $lg (ninja -C build)"
    tok=$(token)
    etok=$(api POST /api/v1/enrollment-tokens "$tok" \
        "{\"name\":\"sim\",\"max_uses\":$2,\"labels\":{\"sim\":\"1\"}}" | field token)
    ulimit -n "$(ulimit -Hn)"
    "$lg" --url "$(base)" --ca "$D/tls/ca.pem" --api-key "$(st tenant.key)" --enrol-token "$etok" \
        --state "$D/sim-agents.json" --agents "$2" --slots "$(st slots)" --jobs "$1" --quiet \
        --name-prefix sim --job '{"command":"true","max_attempts":1,"requirements":{"sim":"1"}}' |
        tee "$D/sim-report.txt"
    awk -v n="$(st orchd.count)" -v m="$2" -v s="$(st slots)" '
        /^jobs:/ { j = $9; c = $6 }
        /^placements\/s:/ { p = $2 }
        /^completed\/s:/ { r = $2 }
        /^submit->assign:/ { p50 = $3; p99 = $9 }
        /^wire:/ { e = $(NF - 1) }
        END { printf "result: orchd=%s sim_agents=%s slots=%s jobs=%s completed=%s placements_per_s=%s completed_per_s=%s submit_assign_p50_ms=%s submit_assign_p99_ms=%s wire_errors=%s\n", n, m, s, j, c, p, r, p50, p99, e }' \
        "$D/sim-report.txt"
}

# ---- faults -------------------------------------------------------------------------------

cmd_kill_orchd() { # I
    need_up
    local pid
    pid=$(st orchd-$1.pid)
    alive "$pid" || die "orchd-$1 is not running"
    kill -9 "$pid"
    rm -f "$D/orchd-$1.pid"
    echo "orchd-$1 (pid $pid) killed"
}

# Jobs run twice at once: two attempts of one job whose run intervals overlap; and jobs
# with more than one succeeded attempt.
overlaps() {
    psql_q "SELECT count(DISTINCT a.job_id) FROM job_attempts a JOIN job_attempts b
              ON a.job_id = b.job_id AND a.epoch < b.epoch
             WHERE a.started_at IS NOT NULL AND b.started_at IS NOT NULL
               AND b.started_at < coalesce(a.finished_at, now())"
}
double_success() {
    psql_q "SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE status = 'succeeded'
              GROUP BY job_id HAVING count(*) > 1) s"
}

# probe_ok: a probe job submitted now through HAProxy succeeds within 2 s (priority 100: it
# passes the load's backlog, as it measures the path, not the queue).
probe_ok() {
    local tok id s
    tok=$(token 2>/dev/null) || return 1
    id=$(api POST /api/v1/jobs "$tok" '{"command":"true","priority":100,"env":{"ORCH_CLUSTER_TAG":"probe"}}' 2>/dev/null | field id) ||
        return 1
    for _ in $(seq 1 20); do
        s=$(psql_q "SELECT status FROM jobs WHERE id = '$id'")
        [ "$s" = succeeded ] && return 0
        sleep 0.1 # polling the probe's state, bounded to 2 s
    done
    return 1
}
# every agent online again, each on a live node
agents_back() {
    local live="" i
    for i in $(seq 1 "$(st orchd.count)"); do
        alive "$(st orchd-$i.pid)" && live="$live,'orchd-$i'"
    done
    [ "$(psql_q "SELECT count(*) FROM agents WHERE status = 'online'
                   AND gateway_node IN (${live#,})")" -ge "$(st agents.count)" ]
}

# recover START_NS WHAT: waits for the agents, then for a probe job; prints "agents_ms job_ms"
# (both from START_NS).
recover() {
    local a
    orch_wait_for 60 agents_back || die "fault-test: the agents were not back within 60 s of $2"
    a=$(ms_since "$1")
    orch_wait_for 60 probe_ok || die "fault-test: no probe job succeeded within 60 s of $2"
    echo "$a $(ms_since "$1")"
}

cmd_fault_test() {
    need_up
    local n=2000 a
    for a in "$@"; do
        case $a in
        JOBS=* | jobs=*) n=${a#*=} ;;
        *) die "fault-test: unknown argument $a" ;;
        esac
    done
    [ "$(st orchd.count)" -ge 2 ] || die "fault-test: needs 2 orchd nodes at least"
    local tag tok t0 a1 r1 a2 r2
    tag=ft-$(date +%s%N)
    tok=$(token)
    # The load: N jobs submitted in the background through HAProxy, 1000 a batch.
    submit_jobs "$n" "$tok" "$tag" >"$D/$tag.ids" 2>"$D/$tag.err" &
    local sub=$!
    orch_wait_for 30 sh -c "[ \"\$(psql -X -q -A -t 'postgresql://postgres@127.0.0.1:$(st pg.port)/orch' \
        -c \"SELECT count(*) FROM jobs WHERE env->>'ORCH_CLUSTER_TAG' = '$tag' AND status = 'running'\")\" -gt 0 ]" ||
        say "no job of the load was running yet"
    say "kill -9 orchd-1 under load"
    t0=$(date +%s%N)
    cmd_kill_orchd 1 >/dev/null
    read -r a1 r1 <<<"$(recover "$t0" "the orchd kill")"
    [ -n "$r1" ] || exit 1
    say "agents back in $a1 ms, a job through in $r1 ms; restarting orchd-1"
    orchd_start 1
    orch_wait_for 60 orchd_ready 1 || die "orchd-1 did not come back"
    say "stop RabbitMQ node 1 under load"
    t0=$(date +%s%N)
    rmq_stop_node 1
    read -r a2 r2 <<<"$(recover "$t0" "the RabbitMQ stop")"
    [ -n "$r2" ] || exit 1
    say "agents back in $a2 ms, a job through in $r2 ms; restarting RabbitMQ node 1"
    rmq_launch 1
    rmq_wait 1
    wait $sub || die "fault-test: the load's submissions failed ($(cat "$D/$tag.err"))"
    orch_wait_for $((120 + n / 20)) jobs_done "$tag" "$n" || die "fault-test: not every job finished"
    local f lost twice dbl
    read -r -a f <<<"$(load_figures "$tag")"
    lost=$((n - f[4]))
    twice=$(overlaps)
    dbl=$(double_success)
    printf '%-22s %-16s %-16s %s\n' fault agents_back_ms job_through_ms goal_ms
    printf '%-22s %-16s %-16s %s\n' "kill -9 orchd-1" "$a1" "$r1" "<= 10000"
    printf '%-22s %-16s %-16s %s\n' "stop RabbitMQ node 1" "$a2" "$r2" "<= 10000"
    echo "jobs: $n submitted, ${f[4]} succeeded, $lost not succeeded, $twice run twice at once, $dbl succeeded twice"
    echo "result: orchd_kill_agents_ms=$a1 orchd_kill_recovery_ms=$r1 rabbitmq_stop_agents_ms=$a2 rabbitmq_stop_recovery_ms=$r2 jobs=$n lost=$lost run_twice_at_once=$twice succeeded_twice=$dbl"
    [ "$lost" = 0 ] && [ "$twice" = 0 ] && [ "$dbl" = 0 ] || die "fault-test: jobs lost or run twice"
}

# ---- main ---------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "run as root (the service users need it)"
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
up) cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
scale)
    need_up
    [ $# -ge 1 ] || die "scale orchd=N | agents=N"
    for a in "$@"; do
        case $a in
        orchd=* | ORCHD=*) scale_orchd "${a#*=}" ;;
        agents=* | AGENTS=*) scale_agents "${a#*=}" ;;
        *) die "scale: unknown argument $a" ;;
        esac
    done
    ;;
load-test) cmd_load_test "$@" ;;
fault-test) cmd_fault_test "$@" ;;
kill-orchd) cmd_kill_orchd "${1:?kill-orchd I}" ;;
*) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' && exit 2 ;;
esac
