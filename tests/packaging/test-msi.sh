#!/usr/bin/env bash
# tests/packaging/test-msi.sh: the Windows agent's .msi, end to end, under wine.
#
# Builds two .msi of the agent (packaging/msi/build.sh: the project's version and the next
# patch version), starts a private PostgreSQL and RabbitMQ (tools/lib.sh) and a real
# `orchd serve` over TLS on loopback, makes a tenant and an enrolment token through the
# API, and in a wine prefix of its own (fresh, under a temporary folder, removed at exit):
#   - `msiexec /i ... /qn SERVERURL= TOKEN= CAFILE=` installs; the OrchAgent service runs,
#     enrols itself from the registry, and shows online in the API;
#   - a `cmd /c` job's output and exit code come back through the API;
#   - a job that outlives its timeout is ended with the process it started;
#   - the token is neither in the registry nor in the installer's log nor the agent's;
#   - the next version installs over it: same agent id, the new version running;
#   - `msiexec /x` removes the service and the program folder, and keeps the state;
#   - a reinstall is the same agent (the state in ProgramData), and uninstalls cleanly.
# Waits are bounded polls of a condition. Prints the time of each step.
#
# Environment:
#   ORCH_BUILD_DIR      the Linux build with server/orchd (default build)
#   ORCH_MSI_BUILD_DIR  passed to packaging/msi/build.sh (default build-msi)
#   ORCH_SKIP_APT=1     as everywhere
#   ORCH_TEST_MSI_KEEP=1  keep the temporary folder (wine prefix, logs) for a post-mortem
source "$(dirname "$0")/../../tools/lib.sh"

t0=$SECONDS
step_t=$SECONDS
timings=()
passed=0
step() { # name of the step that just ended (each step is one test for tools/test.sh)
    timings+=("$(printf '%-42s %4ds' "$1" $((SECONDS - step_t)))")
    step_t=$SECONDS
    passed=$((passed + 1))
}
fail() {
    printf 'test-msi: FAIL: %s\n' "$*" >&2
    echo "result: $passed passed, 1 failed"
    if [ -n "${tmp:-}" ]; then
        [ -f "$tmp/orchd.log" ] && { echo "--- orchd.log (tail, without requests)"; grep -v " op=http " "$tmp/orchd.log" | tail -n 30; } >&2
        local alog="${WINEPREFIX:-/nonexistent}/drive_c/ProgramData/Orch/Agent/agent.log"
        [ -f "$alog" ] && { echo "--- agent.log (tail)"; tail -n 40 "$alog"; } >&2
    fi
    exit 1
}

for tool in wine wineserver wixl msibuild x86_64-w64-mingw32-gcc-posix; do
    command -v $tool >/dev/null || fail "$tool is missing"
done
build=$(realpath -m "${ORCH_BUILD_DIR:-$ORCH_ROOT/build}")
orchd=$build/server/orchd
[ -x "$orchd" ] || fail "no $orchd: build orch first (meson setup build && ninja -C build)"

tmp=$(mktemp -d /tmp/orch-test-msi.XXXXXX)
chmod 755 "$tmp"
export WINEPREFIX=$tmp/wine WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES=mscoree,mshtml= DISPLAY=
orchd_pid=
# orch_services_start() traps EXIT with orch_services_stop: that becomes this cleanup,
# which then stops the services, so that whatever exit tears everything down.
eval "lib_$(declare -f orch_services_stop)"
orch_services_stop() {
    # set -e holds here too: nothing may fail on the way out.
    if [ -n "$orchd_pid" ]; then
        kill "$orchd_pid" 2>/dev/null || true
        wait "$orchd_pid" 2>/dev/null || true
        orchd_pid=
    fi
    exec 8>&- # the session keeper's pipe
    # Only this prefix's wineserver (and every wine process of it: the service, its jobs).
    if [ -d "$WINEPREFIX" ]; then
        wineserver -k 2>/dev/null || true
        wineserver -w 2>/dev/null || true
    fi
    if [ "${ORCH_TEST_MSI_KEEP:-0}" = 1 ]; then
        echo "test-msi: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    lib_orch_services_stop
}
trap orch_services_stop EXIT
trap 'exit 130' INT TERM

# --- the two packages ---------------------------------------------------------------
project_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$ORCH_ROOT/meson.build" | head -n1)
v1=$project_version
v2=${v1%.*}.$((${v1##*.} + 1))
say "building orch-agent-$v1.msi and orch-agent-$v2.msi"
msi1=$("$ORCH_ROOT/packaging/msi/build.sh" "$tmp/msi" "$v1" | tail -n1) || fail "build.sh $v1"
msi2=$("$ORCH_ROOT/packaging/msi/build.sh" "$tmp/msi" "$v2" | tail -n1) || fail "build.sh $v2"
step "build the two .msi"

# --- a fresh wine prefix, made while the services start -------------------------------
(wine wineboot --init >"$tmp/wineboot.log" 2>&1 && wineserver -w) &
wineboot_pid=$!

export ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir test-msi-$$)"

ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL "$orchd" migrate >"$tmp/migrate.log" 2>&1 ||
    fail "orchd migrate: $(tail -n 5 "$tmp/migrate.log")"
"$ORCH_ROOT/tools/gen-certs.sh" "$tmp/tls"
port=$(orch_free_port)
export ORCHD_DB_URL=$ORCH_PG_APP_URL ORCHD_DB_SYSTEM_URL=$ORCH_PG_SYSTEM_URL
export ORCHD_AMQP_URL=$ORCH_AMQP_URL ORCHD_AUTH_KEY_DIR=$tmp/keys ORCHD_HTTP_PORT=$port
export ORCHD_HTTP_ADDRESS=127.0.0.1
export ORCHD_HTTP_CERT_FILE=$tmp/tls/server.pem ORCHD_HTTP_KEY_FILE=$tmp/tls/server.key
"$orchd" admin gen-key >/dev/null 2>&1 || fail "orchd admin gen-key"
op_key=$("$orchd" admin create-token "test-msi operator" 2>/dev/null) || fail "orchd admin create-token"
"$orchd" serve 2>"$tmp/orchd.log" &
orchd_pid=$!
base=https://127.0.0.1:$port
ca=$tmp/tls/ca.pem
orch_wait_for 30 curl -sf --cacert "$ca" "$base/healthz" || fail "orchd did not start"

# API helper: prints the body, fails on an error status. api METHOD PATH TOKEN [BODY]
api() {
    local out code
    out=$(curl -s -m 30 -w '\n%{http_code}' --cacert "$ca" -X "$1" "$base$2" \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' -d "$4"})
    code=${out##*$'\n'}
    [ "${code:0:1}" = 2 ] || fail "$1 $2: HTTP $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
# json EXPR: evaluate a Python expression on the JSON document on stdin (as j).
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

op=$(api POST /api/v1/auth/token "" "{\"key\":\"$op_key\"}" | json 'j["access_token"]')
tenant=$(api POST /api/v1/tenants "$op" \
    '{"slug":"msi-test","display_name":"MSI test","tier":"standard"}' | json 'j["id"]')
key=$(api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"admin","role":"admin"}' |
    json 'j["key"]')
token=$(api POST /api/v1/auth/token "" "{\"key\":\"$key\"}" | json 'j["access_token"]')
etok=$(api POST /api/v1/enrollment-tokens "$token" '{"name":"msi test"}' | json 'j["token"]')
[[ $etok == orch_et_* ]] || fail "no enrolment token"
wait $wineboot_pid || fail "wineboot --init: $(tail -n 5 "$tmp/wineboot.log")"
# Wine ends a prefix's session, the services with it (a service's process counts as a
# system one), a few seconds after its last ordinary process has exited; the next wine
# command starts them all again. On Windows a service outlives every logon: here one
# ordinary process (cmd.exe waiting on a pipe nobody writes to) lasts the whole run.
mkfifo "$tmp/keep"
wine cmd.exe /q /k <"$tmp/keep" >/dev/null 2>&1 &
exec 8>"$tmp/keep"
step "services, orchd, tenant, wine prefix"

# --- install ------------------------------------------------------------------------
winpath() { printf 'Z:%s' "${1//\//\\}"; }
programdata=$WINEPREFIX/drive_c/ProgramData/Orch/Agent
progfiles="$WINEPREFIX/drive_c/Program Files/Orch/Agent"
agent_log=$programdata/agent.log
# msiexec's exit code comes through wine cut to 8 bits: the log says how it went.
msi_ok() { # LOG
    grep -aq 'INSTALL\. Return value 1\.' "$1" && ! grep -aq 'Return value 3\.' "$1"
}
service_running() { wine sc query OrchAgent 2>/dev/null | grep -aq 'STATE.*RUNNING'; }
service_stopped() { wine sc query OrchAgent 2>/dev/null | grep -aq 'STATE.*STOPPED'; }
# Stop the service and wait until it has, as Windows Installer does for a ServiceControl
# with Wait="yes" (up to 30 s); wine's msi sends the stop but does not wait, and then
# fails to start the new service over the old one still stopping. Prints the ms it took.
stop_service() {
    local t0_ns
    t0_ns=$(date +%s%N)
    wine sc stop OrchAgent >/dev/null 2>&1 || true
    orch_wait_for 30 service_stopped || fail "the service did not stop within 30 s"
    echo $((($(date +%s%N) - t0_ns) / 1000000))
}
# msiexec_ok /i|/x MSI NAME [PROPERTY=VALUE...]: silently, logged to $tmp/NAME.log.
msiexec_ok() {
    local action=$1 msi=$2 log=$tmp/$3.log rc=0 why
    shift 3
    wine msiexec "$action" "$(winpath "$msi")" /qn /l*v "$(winpath "$log")" "$@" \
        >"$log.out" 2>&1 || rc=$?
    msi_ok "$log" && return 0
    if [ -f "$log" ]; then
        why=$(grep -a 'Return value [03]\.' "$log" | head -n 3)
    else
        why="no log; $(tail -n 3 "$log.out")"
    fi
    fail "msiexec $action ${msi##*/} failed (exit code $rc, 8 bits of it): $why"
}

msiexec_ok /i "$msi1" install "SERVERURL=$base" "TOKEN=$etok" \
    "CAFILE=$(winpath "$ca")" NAME=wine-agent LABELS=test=msi
[ -f "$progfiles/orch-agent.exe" ] || fail "no orch-agent.exe in Program Files"
orch_wait_for 30 service_running || fail "the OrchAgent service is not running: $(wine sc query OrchAgent)"
step "msiexec /i, service running"

agent_field() { # EXPR on the tenant's only agent
    api GET /api/v1/agents "$token" | json "(lambda a: $1)(j['items'][0]) if j['items'] else ''"
}
agent_online() { [ "$(agent_field 'a["status"]')" = online ]; }
orch_wait_for 60 agent_online || fail "the agent did not come online: $(api GET /api/v1/agents "$token")"
agent_id=$(agent_field 'a["id"]')
[ "$(agent_field 'a["name"]')" = wine-agent ] || fail "the agent's name is not NAME's"
[ "$(agent_field 'a["labels"].get("test")')" = msi ] || fail "the agent's labels lack LABELS'"
[ "$(agent_field 'a["version"]')" = "$v1" ] || fail "the agent reports version $(agent_field 'a["version"]'), not $v1"
[ -f "$programdata/agent.json" ] || fail "no agent.json in ProgramData"
grep -q "$agent_id" "$programdata/agent.json" || fail "agent.json is not the enrolled agent's"
step "enrolled from the registry, online"

# --- the token is gone from the registry and from every log ---------------------------
token_in_registry() { wine reg query 'HKLM\SOFTWARE\Orch\Agent' /reg:64 2>/dev/null | grep -aq EnrollmentToken; }
token_gone() { ! token_in_registry; }
orch_wait_for 10 token_gone || fail "EnrollmentToken is still in the registry"
wine reg query 'HKLM\SOFTWARE\Orch\Agent' /reg:64 2>/dev/null | grep -aq ServerUrl ||
    fail "ServerUrl is not in the registry: the values were not written"
secret=${etok#orch_et_*_} # the random part (base64url, so it may hold '_' itself)
[ ${#secret} -ge 40 ] || fail "unexpected enrolment token format"
for f in "$tmp/install.log" "$agent_log" "$WINEPREFIX"/*.reg; do
    [ -f "$f" ] || continue
    ! grep -aqF "$secret" "$f" || fail "the enrolment token is in $f"
done
step "token in no registry, no log"

# --- jobs -----------------------------------------------------------------------------
job_wait() { # ID SECONDS: wait until the job is final; print it
    local deadline=$((SECONDS + $2)) j st
    while :; do
        j=$(api GET "/api/v1/jobs/$1" "$token")
        st=$(json 'j["status"]' <<<"$j")
        case $st in succeeded | failed | dead | cancelled) printf '%s\n' "$j"; return 0 ;; esac
        [ $SECONDS -lt $deadline ] || fail "job $1 still $st after $2 s"
        sleep 0.2 # polling the job's state, bounded by the deadline above
    done
}
job_log() { curl -s --cacert "$ca" -H "Authorization: Bearer $token" "$base/api/v1/jobs/$1/logs?stream=${2:-stdout}"; }

id=$(api POST /api/v1/jobs "$token" \
    '{"command":"cmd /c echo hello & exit /b 3","max_attempts":1,"timeout_ms":60000}' | json 'j["id"]')
j=$(job_wait "$id" 60)
[ "$(json 'j["exit_code"]' <<<"$j")" = 3 ] || fail "exit code $(json 'j["exit_code"]' <<<"$j"), not 3: $j"
[ "$(json 'j["status"]' <<<"$j")" != succeeded ] || fail "a job that exits 3 succeeded"
out=$(job_log "$id")
if [[ $out != hello* ]]; then
    # Which side lost it: output that shows up later was stored after the job ended (the
    # server's ordering); output that never does was not captured (the agent's).
    late() { [[ $(job_log "$id") == hello* ]]; }
    when=never
    orch_wait_for 5 late && when="later, not with the result"
    fail "job output '$out', not hello (it showed up: $when; stderr: '$(job_log "$id" stderr)')"
fi
step "cmd /c job: output, exit code 3"

# Windows exit codes are 32 bits, the wire's 0..255: the agent reports 255 and says the
# whole code in the job's stderr.
id=$(api POST /api/v1/jobs "$token" '{"command":"cmd /c exit /b 300","max_attempts":1,"timeout_ms":60000}' |
    json 'j["id"]')
j=$(job_wait "$id" 60)
[ "$(json 'j["exit_code"]' <<<"$j")" = 255 ] || fail "exit code $(json 'j["exit_code"]' <<<"$j"), not 255: $j"
job_log "$id" stderr | grep -q 'exited with code 300 (0x0000012C), reported as 255' ||
    fail "no note of the whole exit code in stderr: $(job_log "$id" stderr)"
step "exit code 300 reported as 255, whole code in stderr"

# A job whose process starts another (start /b) and outlives its 4 s timeout: the job
# object ends both, the service reports a timeout.
wine_pings() { wine wmic process get name 2>/dev/null | tr -d '\0\r' | grep -aci '^ping\.exe' || true; }
id=$(api POST /api/v1/jobs "$token" \
    '{"command":"cmd /c start /b ping -n 60 127.0.0.1 & ping -n 60 127.0.0.1","max_attempts":1,"timeout_ms":4000}' |
    json 'j["id"]')
pings_started() { [ "$(wine_pings)" -ge 2 ]; }
orch_wait_for 30 pings_started || fail "the timeout job's two ping.exe did not start (seen: $(wine_pings))"
j=$(job_wait "$id" 60)
[ "$(json 'j["status"]' <<<"$j")" != succeeded ] || fail "the timed-out job succeeded: $j"
json 'j["error"] or ""' <<<"$j" | grep -qi 'time' || fail "the job did not end by its timeout: $j"
pings_gone() { [ "$(wine_pings)" = 0 ]; }
orch_wait_for 10 pings_gone || fail "$(wine_pings) ping.exe of the timed-out job are still running"
step "timeout ends the job and its child"

# One service start so far: the agent neither crashed nor was restarted under the jobs.
starts=$(grep -c 'op=service-start ' "$agent_log" || true)
[ "$starts" = 1 ] || fail "the service started $starts times before the upgrade, not once"
step "one service start until now"

# --- upgrade --------------------------------------------------------------------------
stop_ms=$(stop_service)
msiexec_ok /i "$msi2" upgrade
orch_wait_for 30 service_running || fail "the service is not running after the upgrade"
grep -q "$agent_id" "$programdata/agent.json" || fail "the upgrade lost agent.json's enrolment"
agent_upgraded() { [ "$(agent_field 'a["version"]')" = "$v2" ] && agent_online; }
orch_wait_for 60 agent_upgraded ||
    fail "the agent does not report $v2 after the upgrade: $(agent_field '(a["version"], a["status"])')"
[ "$(api GET /api/v1/agents "$token" | json 'len(j["items"])')" = 1 ] || fail "the upgrade enrolled a second agent"
id=$(api POST /api/v1/jobs "$token" '{"command":"echo upgraded","max_attempts":1}' | json 'j["id"]')
j=$(job_wait "$id" 60)
[ "$(json 'j["status"]' <<<"$j")" = succeeded ] || fail "a job after the upgrade: $j"
installed=$(wine reg query 'HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall' /s /reg:64 2>/dev/null |
    tr -d '\r' | awk '/DisplayName.*Orch Agent/ {n++} END {print n+0}')
[ "$installed" = 1 ] || fail "$installed products 'Orch Agent' are installed after the upgrade, not 1"
# No downgrade check here: after an upgrade wine's msi has lost the upgrade code (removing
# the old product deletes the whole UpgradeCodes entry, the new product's with it), so it
# would let an older version in, where Windows refuses it (MajorUpgrade's launch condition).
step "upgrade keeps the enrolment (stop: ${stop_ms} ms)"

# --- uninstall ------------------------------------------------------------------------
msiexec_ok /x "$msi2" uninstall
! wine sc query OrchAgent >/dev/null 2>&1 || fail "the OrchAgent service is still there"
[ ! -e "$progfiles" ] || fail "$progfiles is still there: $(ls "$progfiles")"
[ -f "$programdata/agent.json" ] || fail "the uninstall removed the state in ProgramData"
left=$(wine reg query 'HKLM\SOFTWARE\Orch\Agent' /reg:64 2>/dev/null | grep -a REG_ || true)
[ -z "$left" ] || fail "the uninstall left registry values: $left"
step "msiexec /x removes service, files, values"

# --- reinstall: the state kept in ProgramData makes it the same agent -------------------
msiexec_ok /i "$msi2" reinstall "SERVERURL=$base" "CAFILE=$(winpath "$ca")" \
    NAME=wine-agent LABELS=test=msi
orch_wait_for 30 service_running || fail "the service is not running after the reinstall"
grep -q "$agent_id" "$programdata/agent.json" || fail "the reinstall is not the same agent"
orch_wait_for 60 agent_online || fail "the reinstalled agent did not come online"
[ "$(api GET /api/v1/agents "$token" | json 'len(j["items"])')" = 1 ] || fail "the reinstall enrolled a second agent"
msiexec_ok /x "$msi2" uninstall2
left=$(wine reg query 'HKLM\SOFTWARE\Orch\Agent' /reg:64 2>/dev/null | grep -a REG_ || true)
[ -z "$left" ] || fail "the uninstall left registry values: $left"
! wine sc query OrchAgent >/dev/null 2>&1 || fail "the OrchAgent service is still there"
step "reinstall is the same agent"

say "test-msi: OK in $((SECONDS - t0)) s"
printf '  %s\n' "${timings[@]}" >&2
echo "result: $passed passed, 0 failed"
